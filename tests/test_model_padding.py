"""Batched slides: learned pad vector, padding masks (and the authors' unmasked-pad quirk),
the cross-attention residual flag, batched slide embedding, the faithful preset, old checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml

from conftest import PROJECT_ROOT
from fiveflow.config import validate_config
from fiveflow.model import FIVE_QUESTIONS, build_model, load_checkpoint, save_checkpoint
from fiveflow.model.aggregator import TFSAggregator
from fiveflow.train.data import Bag
from fiveflow.train.loop import slide_embedding, slides_embedding
from test_model import MODEL_CFG

FEAT = 48


def _model(**flags):
    torch.manual_seed(0)
    m = build_model(dict(MODEL_CFG, **flags), feature_dim=FEAT, questions=FIVE_QUESTIONS, device="cpu").eval()
    return m


@pytest.fixture(scope="module")
def models():
    return {flag: _model(attend_to_padding=flag) for flag in (False, True)}


@pytest.fixture(scope="module")
def bags():
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(6, FEAT, generator=g), torch.rand(6, 2, generator=g)),
        (torch.randn(11, FEAT, generator=g), torch.rand(11, 2, generator=g)),
    ]


@pytest.fixture(scope="module")
def bank(models):
    with torch.no_grad():
        return models[False].prompt_bank(None)


def _alone(m, f, p, bank):
    return m.encode_slide(f.unsqueeze(0), p.unsqueeze(0), bank)[0]


@torch.no_grad()
def test_padding_invariance_and_authors_quirk(models, bags, bank):
    (f0, p0), (f1, p1) = bags
    masked, quirk = models[False], models[True]
    # same weights (same seed, flags change no parameter), so the only difference is the flag
    assert all(torch.equal(a, b) for a, b in zip(masked.state_dict().values(), quirk.state_dict().values()))
    with torch.no_grad():
        quirk.pad_token.normal_()  # authors' pad vector is learned; a non-zero one makes the quirk visible
    try:
        out = masked.encode_slides([f0, f1], [p0, p1], bank)
        assert out.shape == (2, 32) and torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
        assert torch.allclose(out[0], _alone(masked, f0, p0, bank), atol=1e-5)  # padded bag unchanged
        assert torch.allclose(out[1], _alone(masked, f1, p1, bank), atol=1e-5)  # longest bag unchanged
        q = quirk.encode_slides([f0, f1], [p0, p1], bank)
        assert not torch.allclose(q[0], _alone(quirk, f0, p0, bank), atol=1e-3)  # pads leak in: the quirk is real
        assert torch.allclose(q[1], _alone(quirk, f1, p1, bank), atol=1e-5)  # the unpadded bag is unaffected
        # equal lengths: no padding, identical with either flag
        g = torch.Generator().manual_seed(2)
        fs = [torch.randn(9, FEAT, generator=g) for _ in range(2)]
        ps = [torch.rand(9, 2, generator=g) for _ in range(2)]
        assert torch.equal(masked.encode_slides(fs, ps, bank), quirk.encode_slides(fs, ps, bank))
    finally:
        quirk.pad_token.zero_()


@torch.no_grad()
def test_zero_pad_token_still_differs_with_quirk(models, bags, bank):
    """Even the initial (zero) pad vector gets a positional encoding and attention weight."""
    (f0, p0), (f1, p1) = bags
    quirk = models[True]
    q = quirk.encode_slides([f0, f1], [p0, p1], bank)
    assert not torch.allclose(q[0], _alone(quirk, f0, p0, bank), atol=1e-4)


@torch.no_grad()
def test_pad_token_value_is_irrelevant_when_masked(models, bags, bank):
    (f0, p0), (f1, p1) = bags
    m = models[False]
    before = m.encode_slides([f0, f1], [p0, p1], bank)
    try:
        m.pad_token.copy_(1e3 * torch.randn(32))
        after = m.encode_slides([f0, f1], [p0, p1], bank)
    finally:
        m.pad_token.zero_()
    assert torch.allclose(before, after, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("flag", [False, True])
def test_encode_slides_single_bag_equals_encode_slide(models, bags, bank, flag):
    m = models[flag]
    for f, p in bags:
        assert torch.equal(m.encode_slides([f], [p], bank), m.encode_slide(f.unsqueeze(0), p.unsqueeze(0), bank))


def test_encode_slides_rejects_mismatched_lists(models, bags, bank):
    with pytest.raises(ValueError):
        models[False].encode_slides([bags[0][0]], [], bank)


@torch.no_grad()
def test_cross_residual_flag():
    torch.manual_seed(0)
    default = TFSAggregator(dim=32, heads=4).eval()
    torch.manual_seed(0)
    no_res = TFSAggregator(dim=32, heads=4, cross_residual="mlp").eval()
    torch.manual_seed(0)
    res = TFSAggregator(dim=32, heads=4, cross_residual="full").eval()
    torch.manual_seed(0)
    legacy = TFSAggregator(dim=32, heads=4, cross_residual=True).eval()  # old boolean: True -> full
    x, pos, bank = torch.randn(2, 7, 32), torch.rand(2, 7, 2), torch.randn(5, 32)
    assert torch.equal(default(x, pos, bank), no_res(x, pos, bank))
    assert torch.equal(legacy(x, pos, bank), res(x, pos, bank))
    assert not torch.allclose(res(x, pos, bank), no_res(x, pos, bank), atol=1e-3)
    # the residual is exactly q + attn(...) before the MLP sub-block
    blk = res.cross_block
    q = bank.unsqueeze(0).expand(2, -1, -1)
    y = q + blk.attn(blk.ln_q(q), blk.ln_kv(x), None)
    assert torch.allclose(blk(q, x), y + blk.mlp(blk.ln_2(y)), atol=1e-6)
    # build_model wires the flag (default mlp) and maps the legacy booleans of old configs
    assert _model().aggregator.cross_block.residual == "mlp"
    assert _model(cross_residual=False).aggregator.cross_block.residual == "mlp"
    assert _model(cross_residual=True).aggregator.cross_block.residual == "full"
    assert _model(cross_residual="none").aggregator.cross_block.residual == "none"
    with pytest.raises(ValueError, match="cross_residual"):
        _model(cross_residual="query")


@torch.no_grad()
def test_slides_embedding_matches_per_bag(models, bank):
    m = models[False]
    g = torch.Generator().manual_seed(3)
    bag_list = [Bag(torch.randn(n, FEAT, generator=g), torch.rand(n, 2, generator=g)) for n in (40, 13, 27)]
    batched = slides_embedding(m, bag_list, bank, 0.5, 16, False, None)
    single = torch.cat([slide_embedding(m, b, bank, 0.5, 16, False, None) for b in bag_list])
    assert batched.shape == (3, 32) and batched.dtype == torch.float32
    assert torch.allclose(batched, single, atol=1e-5)
    # train=True: same rng draws in the same order as per-bag calls
    a = slides_embedding(m, bag_list, bank, 0.5, 16, True, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    b = torch.cat([slide_embedding(m, bb, bank, 0.5, 16, True, rng) for bb in bag_list])
    assert torch.allclose(a, b, atol=1e-5)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def test_faithful_preset_validates_and_sets_authors_values():
    base = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    preset = yaml.safe_load((PROJECT_ROOT / "config" / "presets" / "five_faithful.yaml").read_text())
    cfg = validate_config(_deep_merge(base, preset), source="config.yaml + five_faithful.yaml")
    assert (PROJECT_ROOT / "config" / "presets" / "README.md").is_file()
    expected_model = {
        "prompt_mode": "sequence",
        "logit_scale": 300,
        "learn_logit_scale": False,
        "position": "index",
        "text_encoder": "emilyalsentzer/Bio_ClinicalBERT",
        "text_max_tokens": 308,
        "text_mask_padding": False,
        "text_lora_r": 8,
        "text_lora_alpha": 32,
        "text_lora_dropout": 0.05,
        "text_lora_targets": ["query", "key", "value", "dense"],
        "attend_to_padding": True,
        "cross_residual": "none",
        "pad_to_max_instances": True,
        "position_encoding": "sinusoid",
        "position_in_cross_keys": True,
        "feature_norm": "none",
        "n_prompts": 16,
        "dim": 512,
        "heads": 8,
    }
    for k, v in expected_model.items():
        assert cfg["model"][k] == v, f"model.{k}"
    optim = {
        "epochs": 100,
        "lr": 3.0e-6,
        "aggregator_lr_mult": 10,
        "weight_decay": 1e-3,
        "warmup_epochs": 5,
        "min_lr": 3e-8,
        "accumulate": 16,
    }
    quirks = {
        "sampling": "integer_interval",
        "label_smoothing": 0.1,
        "lr_floor": "absolute",
        "drop_last_group": True,
        "text_grad_candidates": 96,
    }
    # merge_shuffled false: the authors merge identical descriptions first, then shuffle (FIVE_METHOD.md section 4)
    pre = dict(optim, **quirks, instance_ratio=1.0, max_instances=16384, symmetric_loss=False, merge_shuffled=False)
    fine = dict(optim, **quirks, instance_ratio=0.25, faithful_empty_steps=True)
    for section, expected in (("pretrain", pre), ("finetune", fine)):
        for k, v in expected.items():
            assert cfg["train"][section][k] == v, f"train.{section}.{k}"
    assert cfg["train"]["zeroshot_epoch"] == "best_on_test" and cfg["reports"]["name_histotype"] is False
    # every preset value line says which FIVE_METHOD.md section it comes from
    for line in (PROJECT_ROOT / "config" / "presets" / "five_faithful.yaml").read_text().splitlines():
        s = line.strip()
        if s and not s.startswith("#") and not s.endswith(":"):
            assert "# section" in line, line


def test_default_config_keeps_our_defaults():
    base = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    m = base["model"]
    assert m["attend_to_padding"] is False and m["cross_residual"] == "mlp" and m["pad_to_max_instances"] is False
    assert m["position_encoding"] == "fourier" and m["position_in_cross_keys"] is False


def test_old_checkpoint_without_pad_token_loads(tmp_path):
    m = _model()
    old_cfg = {k: v for k, v in MODEL_CFG.items() if k not in ("attend_to_padding", "cross_residual")}
    save_checkpoint(m, old_cfg, [{"name": "A", "text": "a"}], FEAT, tmp_path / "old.pt")
    payload = torch.load(tmp_path / "old.pt", weights_only=False)
    del payload["state_dict"]["pad_token"]  # as written before the pad vector existed
    torch.save(payload, tmp_path / "old.pt")
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    assert torch.equal(loaded.pad_token, torch.zeros(32))
    assert not loaded.aggregator.attend_to_padding and loaded.aggregator.cross_block.residual == "mlp"
    assert not loaded.pad_to_max_instances and loaded.aggregator.position_encoding == "fourier"
    assert not loaded.aggregator.position_in_cross_keys
    x, p = torch.randn(1, 7, FEAT), torch.rand(1, 7, 2)
    with torch.no_grad():
        assert torch.allclose(
            m.encode_slide(x, p, m.prompt_bank(None)), loaded.encode_slide(x, p, loaded.prompt_bank(None)), atol=1e-6
        )
    # a learned pad vector round-trips; any other missing tensor is still an error (strict load)
    with torch.no_grad():
        m.pad_token.fill_(0.5)
    save_checkpoint(m, MODEL_CFG, [], FEAT, tmp_path / "new.pt")
    assert torch.equal(load_checkpoint(tmp_path / "new.pt")[0].pad_token, torch.full((32,), 0.5))
    del payload["state_dict"]["head.weight" if "head.weight" in payload["state_dict"] else "text_proj.weight"]
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError):
        load_checkpoint(tmp_path / "broken.pt")


# -- feature standardisation (model.feature_norm) ----------------------------------------------
def test_feature_stats_match_numpy(tmp_path):
    import h5py

    from fiveflow.train.data import BagStore

    rng = np.random.default_rng(0)
    paths, arrays = {}, []
    for i, n in enumerate((7, 30, 12)):
        f = (rng.normal(3.0, 2.0, (n, FEAT)) * rng.uniform(0.1, 5, FEAT)).astype(np.float32)
        arrays.append(f)
        paths[f"s{i}"] = str(tmp_path / f"s{i}.h5")
        with h5py.File(paths[f"s{i}"], "w") as h:
            h["features"] = f
            h["coords"] = np.stack([np.arange(n), np.zeros(n)], 1).astype(np.int64)
    mean, std = BagStore(paths).feature_stats(["s0", "s1", "s2", "s1"])  # duplicates count once
    allf = np.concatenate(arrays).astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), allf.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), allf.std(0), rtol=1e-4)


def test_standardized_model_ignores_per_dimension_offset_and_scale(tmp_path):
    """With feature_norm=standardize and statistics fitted on the same bags, a per-dimension affine
    change of the features (another encoder's offsets and scales) leaves the slide embedding as is."""
    torch.manual_seed(1)
    feats = torch.randn(40, FEAT)
    pos = torch.rand(40, 2)
    a, b = torch.rand(FEAT) * 10 + 0.1, torch.randn(FEAT) * 50
    outs = []
    for x in (feats, feats * a + b):
        m = _model(feature_norm="standardize")
        m.set_feature_stats(x.mean(0), x.std(0, unbiased=False))
        with torch.no_grad():
            outs.append(m.encode_slide(x[None], pos[None], m.prompt_bank(None)))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4)
    raw = _model(feature_norm="none")
    with torch.no_grad():
        r = [raw.encode_slide(x[None], pos[None], raw.prompt_bank(None)) for x in (feats, feats * a + b)]
    assert not torch.allclose(r[0], r[1], atol=1e-3)  # without it the offsets change the slide
    # the statistics travel in the checkpoint
    m = _model(feature_norm="standardize")
    m.set_feature_stats(feats.mean(0) + 1, feats.std(0) + 1)
    save_checkpoint(m, dict(MODEL_CFG, feature_norm="standardize"), [], FEAT, tmp_path / "m.pt")
    back, _ = load_checkpoint(tmp_path / "m.pt")
    assert back.feature_norm == "standardize" and torch.equal(back.feature_mean, m.feature_mean)
    with pytest.raises(ValueError, match="feature_norm"):
        _model(feature_norm="zscore")
