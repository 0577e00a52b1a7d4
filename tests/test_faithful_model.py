"""The authors' aggregator, one quirk per flag, each pinned to the method description (FIVE_METHOD.md
section 3): padding every bag to max_instances (pads at M/N, masked in cross-attention and g, attended in
self-attention only with attend_to_padding), no residual in the cross-attention block (cross_residual:
none), the fixed sinusoid position encoding, and the position encoding added again to the cross-attention
keys. Each test fails if its flag did nothing. Plus a training smoke test with every flag on and old
checkpoints (boolean cross_residual) loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fiveflow.model import FIVE_QUESTIONS, build_model, load_checkpoint, save_checkpoint
from fiveflow.model.aggregator import SinusoidPositionEncoding, TFSAggregator
from fiveflow.model.layers import CrossAttentionBlock
from fiveflow.train.data import Bag, relative_positions
from fiveflow.train.loop import predict_probs, slide_embedding, slides_embedding
from test_model import MODEL_CFG

FEAT, D = 48, 32
FAITHFUL = {
    "position": "index",
    "pad_to_max_instances": True,
    "attend_to_padding": True,
    "cross_residual": "none",
    "position_encoding": "sinusoid",
    "position_in_cross_keys": True,
}


def _model(**flags):
    torch.manual_seed(0)
    return build_model(dict(MODEL_CFG, **flags), feature_dim=FEAT, questions=FIVE_QUESTIONS, device="cpu").eval()


def _index_bag(n: int, seed: int = 0) -> Bag:
    g = torch.Generator().manual_seed(seed)
    return Bag(torch.randn(n, FEAT, generator=g), torch.from_numpy(relative_positions(np.zeros((n, 2)), "index")))


class _Capture:
    """Records the positional inputs ``(x, pos, bank, mask)`` of every aggregator forward."""

    def __init__(self, module: nn.Module) -> None:
        self.calls: list[tuple] = []
        self.handle = module.register_forward_pre_hook(lambda mod, args: self.calls.append(args))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# -- 1. pad_to_max_instances ---------------------------------------------------------------------
@torch.no_grad()
@pytest.mark.parametrize("attend", [False, True])
def test_every_bag_is_padded_to_max_instances_with_pads_at_m_over_n(attend):
    """Section 3 "Padding": every bag padded to the fixed length with ONE learned pad vector at relative
    position M/N; pads masked in cross-attention and excluded from g; attended as self-attention keys
    exactly when attend_to_padding is on."""
    m = _model(**dict(FAITHFUL, attend_to_padding=attend))
    with torch.no_grad():
        m.pad_token.copy_(torch.randn(D, generator=torch.Generator().manual_seed(5)))
    bag, bank = _index_bag(40), m.prompt_bank(None)
    with _Capture(m.aggregator) as cap:
        out = slide_embedding(m, bag, bank, 0.25, 16, False, None)  # M = 10 real instances of N = 40, padded to 16
    x, pos, _, mask = cap.calls[-1]
    assert x.shape == (1, 16, D) and pos.shape == (1, 16, 2)
    torch.testing.assert_close(x[0, 10:], m.pad_token.expand(6, -1))  # the one learned pad vector
    assert torch.all(pos[0, 10:, 0] == 10 / 40) and torch.all(pos[0, 10:, 1] == 0)  # pads at M / N
    assert torch.equal(pos[0, :10, 0], bag.pos[1::4, 0])  # real rows keep their row / N (segment centres)
    assert mask.tolist() == [[True] * 10 + [False] * 6]

    # by hand: pads enter the self-attention (as keys iff attend), then drop out of g and of the cross-attention
    agg, blk = m.aggregator, m.aggregator.cross_block
    pe = agg.pos(pos)
    tokens = x + agg.self_block(x + pe, None if attend else mask)
    q = bank.unsqueeze(0)
    w = blk.attn.weights(blk.ln_q(q), blk.ln_kv(tokens), mask, blk.ln_kv(tokens) + pe)
    assert float(w[..., 10:].abs().max()) == 0.0  # no cross-attention weight on a pad, exactly
    g = tokens[:, :10].mean(1)  # mean of the real tokens only
    c = blk(q, tokens[:, :10], None, pe[:, :10]).mean(1)  # the cross-attention over the real tokens only
    torch.testing.assert_close(out, F.normalize(agg.head(torch.cat([c, g], -1)), dim=-1), atol=1e-5, rtol=1e-5)

    # the pad vector's value matters iff pads are attended in the self-attention
    unpadded = m.aggregator(m.project_features(bag.features[1::4][None]), bag.pos[1::4][None], bank)
    with torch.no_grad():
        m.pad_token.mul_(-3.0)
    changed = slide_embedding(m, bag, bank, 0.25, 16, False, None)
    if attend:
        assert not torch.allclose(changed, out, atol=1e-4)
        assert not torch.allclose(out, unpadded, atol=1e-4)  # the quirk changes the slide
    else:
        torch.testing.assert_close(changed, out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out, unpadded, atol=1e-5, rtol=1e-5)  # masked pads change nothing


@torch.no_grad()
def test_without_the_flag_nothing_is_padded_and_batches_match():
    for flag in (False, True):
        m = _model(**dict(FAITHFUL, pad_to_max_instances=flag, attend_to_padding=flag))
        bank = m.prompt_bank(None)
        bags = [_index_bag(n, seed=n) for n in (40, 13, 27)]
        with _Capture(m.aggregator) as cap:
            single = torch.cat([slide_embedding(m, b, bank, 0.5, 16, False, None) for b in bags])
        lengths = [c[0].shape[1] for c in cap.calls]
        assert lengths == ([16, 16, 16] if flag else [16, 6, 13])
        if not flag:
            assert all(c[3] is None for c in cap.calls)
        # batched: every bag padded to max_instances with its own M_i / N_i
        with _Capture(m.aggregator) as cap:
            batched = slides_embedding(m, bags, bank, 0.5, 16, False, None)
        x, pos, _, mask = cap.calls[-1]
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
        if flag:
            assert x.shape[1] == 16 and mask.sum(1).tolist() == [16, 6, 13]
            assert torch.all(pos[1, 6:, 0] == 6 / 13) and torch.all(pos[2, 13:, 0] == 13 / 27)
    # prediction pads too (zero-shot and few-shot go through predict_probs)
    m = _model(**FAITHFUL)
    store = type("S", (), {"get": lambda self, sid: _index_bag(30)})()
    with _Capture(m.aggregator) as cap:
        predict_probs(m, store, ["a"], ["x", "y"], 0.25, 20)
    assert cap.calls[-1][0].shape[1] == 20


# -- 2. cross_residual: none ----------------------------------------------------------------------
@torch.no_grad()
def test_cross_residual_none_is_mlp_of_ln_of_attention():
    """Section 3 "Aggregator" 3: no residual anywhere in the cross-attention block, MLP included:
    out = MLP(LN(attention(LN(q), LN(kv))))."""
    torch.manual_seed(0)
    blocks = {mode: CrossAttentionBlock(D, 4, residual=mode).eval() for mode in ("none", "mlp", "full")}
    for mode in ("mlp", "full"):  # identical weights: only the residuals differ
        blocks[mode].load_state_dict(blocks["none"].state_dict())
    blk = blocks["none"]
    q, kv = torch.randn(2, 5, D), torch.randn(2, 9, D)
    mask = torch.tensor([[True] * 9, [True] * 6 + [False] * 3])
    # attention by hand from the block's submodules: softmax(QK^T / sqrt(dh)) V, heads merged, out-projection
    h, dh = 4, D // 4
    heads = lambda t: t.view(2, -1, h, dh).transpose(1, 2)  # noqa: E731
    qq = heads(blk.attn.q(blk.ln_q(q)))
    kk, vv = (heads(t) for t in blk.attn.kv(blk.ln_kv(kv)).split(D, dim=-1))
    scores = (qq @ kk.transpose(-2, -1) / math.sqrt(dh)).masked_fill(~mask[:, None, None, :], float("-inf"))
    attn = blk.attn.out((scores.softmax(-1) @ vv).transpose(1, 2).reshape(2, 5, D))
    torch.testing.assert_close(blk(q, kv, mask), blk.mlp(blk.ln_2(attn)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(blocks["mlp"](q, kv, mask), attn + blk.mlp(blk.ln_2(attn)), atol=1e-5, rtol=1e-5)
    y = q + attn
    torch.testing.assert_close(blocks["full"](q, kv, mask), y + blk.mlp(blk.ln_2(y)), atol=1e-5, rtol=1e-5)
    outs = {k: b(q, kv, mask) for k, b in blocks.items()}
    assert not torch.allclose(outs["none"], outs["mlp"], atol=1e-3)
    assert not torch.allclose(outs["none"], outs["full"], atol=1e-3)
    # wired through build_model into the slide embedding
    x, pos = torch.randn(1, 12, FEAT), torch.rand(1, 12, 2)
    a, b = _model(cross_residual="none"), _model(cross_residual="mlp")
    assert a.aggregator.cross_block.residual == "none"
    assert not torch.allclose(
        a.encode_slide(x, pos, a.prompt_bank(None)), b.encode_slide(x, pos, b.prompt_bank(None)), atol=1e-4
    )


# -- 3. position_encoding: sinusoid ---------------------------------------------------------------
@torch.no_grad()
def test_sinusoid_position_encoding_is_the_fixed_formula_without_parameters():
    """Section 3 "Aggregator" 1: a fixed, parameter-free sinusoid of p = row index / N: dimension 2i gets
    sin(p w_i), 2i + 1 gets cos(p w_i), w_i = 1 / 10000^(2i / d); p is the first position column."""
    pos = torch.tensor([[[0.0, 0.0], [0.25, 0.0], [0.5, 0.7], [0.99, 0.3]]])  # column 2 is ignored
    enc = SinusoidPositionEncoding(D)
    by_hand = torch.zeros(1, 4, D, dtype=torch.float64)
    for r in range(4):
        p = float(pos[0, r, 0])
        for i in range(D // 2):
            w = 1.0 / 10000.0 ** (2 * i / D)
            by_hand[0, r, 2 * i], by_hand[0, r, 2 * i + 1] = math.sin(p * w), math.cos(p * w)
    torch.testing.assert_close(enc(pos).double(), by_hand, atol=1e-6, rtol=1e-6)
    assert list(enc.parameters()) == [] and enc.state_dict() == {}
    assert SinusoidPositionEncoding(7)(pos).shape == (1, 4, 7)  # odd d: the last dimension is a sine
    # in the model: no position parameters, the same encoding whatever the seed, and it is what is added
    m = _model(position="index", position_encoding="sinusoid")
    torch.manual_seed(123)
    other = build_model(dict(MODEL_CFG, position="index", position_encoding="sinusoid"), FEAT, FIVE_QUESTIONS, "cpu")
    assert not [k for k in m.state_dict() if k.startswith("aggregator.pos.")]
    assert not [k for k, _ in m.named_parameters() if k.startswith("aggregator.pos.")]
    assert [k for k in _model().state_dict() if k.startswith("aggregator.pos.")]  # the Fourier one has some
    torch.testing.assert_close(m.aggregator.pos(pos), other.aggregator.pos(pos), atol=0, rtol=0)
    seen = []
    handle = m.aggregator.self_block.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.randn(1, 4, D)
    m.aggregator(x, pos, m.prompt_bank(None))
    handle.remove()
    torch.testing.assert_close((seen[0] - x).double(), by_hand, atol=1e-5, rtol=1e-5)  # h = x + PE(p)


def test_sinusoid_with_coordinates_is_refused_with_the_fix():
    import copy

    import yaml

    from conftest import PROJECT_ROOT
    from fiveflow.config import ConfigError, validate_config

    with pytest.raises(ValueError, match="position: index"):
        _model(position="coords", position_encoding="sinusoid")
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    bad = copy.deepcopy(cfg)
    bad["model"].update(position="coords", position_encoding="sinusoid")
    with pytest.raises(ConfigError, match="model.position: index"):
        validate_config(bad)


# -- 4. position_in_cross_keys ------------------------------------------------------------------
class _Zero(nn.Module):
    def forward(self, x, mask=None):
        return torch.zeros_like(x)


@torch.no_grad()
@pytest.mark.parametrize("encoding", ["fourier", "sinusoid"])
def test_position_is_added_again_to_the_cross_attention_keys_only(encoding):
    """Section 3 "Aggregator" 1: the position encoding is added a second time to the cross-attention
    KEYS: keys = LN_kv(tokens) + PE(pos), values = LN_kv(tokens)."""
    torch.manual_seed(0)
    aggs = {
        flag: TFSAggregator(D, 4, cross_residual="none", position_encoding=encoding, position_in_cross_keys=flag).eval()
        for flag in (False, True)
    }
    aggs[True].load_state_dict(aggs[False].state_dict())
    for agg in aggs.values():
        agg.self_block = _Zero()  # bypass the self-attention: tokens = x, the first PE has no path to the output
    x, bank = torch.randn(2, 9, D), torch.randn(5, D)
    pos_a = torch.stack([torch.arange(9) / 9, torch.zeros(9)], -1).expand(2, -1, -1)
    pos_b = pos_a.flip(1)  # the same rows at other positions
    off, on = aggs[False], aggs[True]
    torch.testing.assert_close(off(x, pos_a, bank), off(x, pos_b, bank), atol=0, rtol=0)  # off: no dependence
    assert not torch.allclose(on(x, pos_a, bank), on(x, pos_b, bank), atol=1e-4)
    # by hand: keys from LN(x) + PE, values from LN(x); the fused kv projection's first d rows are the keys
    blk, pe = on.cross_block, on.pos(pos_a)
    wk, bk = blk.attn.kv.weight[:D], blk.attn.kv.bias[:D]
    wv, bv = blk.attn.kv.weight[D:], blk.attn.kv.bias[D:]
    heads = lambda t: t.view(2, -1, 4, D // 4).transpose(1, 2)  # noqa: E731
    qq = heads(blk.attn.q(blk.ln_q(bank).expand(2, -1, -1)))
    kk = heads((blk.ln_kv(x) + pe) @ wk.t() + bk)
    vv = heads(blk.ln_kv(x) @ wv.t() + bv)
    att = blk.attn.out(
        ((qq @ kk.transpose(-2, -1) / math.sqrt(D // 4)).softmax(-1) @ vv).transpose(1, 2).reshape(2, 5, D)
    )
    c = blk.mlp(blk.ln_2(att)).mean(1)
    expected = F.normalize(on.head(torch.cat([c, x.mean(1)], -1)), dim=-1)
    torch.testing.assert_close(on(x, pos_a, bank), expected, atol=1e-5, rtol=1e-5)
    # a zero key position is the plain block (the split key/value projection equals the fused one)
    torch.testing.assert_close(
        blk(bank.expand(2, -1, -1), x, None, torch.zeros_like(x)), blk(bank.expand(2, -1, -1), x), atol=1e-5, rtol=1e-5
    )
    # heatmap weights use the same keys
    w = on.instance_attention(x, pos_a, bank)
    manual = (qq @ kk.transpose(-2, -1) / math.sqrt(D // 4)).softmax(-1).mean(dim=(1, 2))
    torch.testing.assert_close(w, manual, atol=1e-5, rtol=1e-5)
    assert _model(position_in_cross_keys=True).aggregator.position_in_cross_keys


# -- every flag on: training, checkpoints -----------------------------------------------------------
def test_all_flags_train_and_round_trip(tmp_path):
    from fiveflow.train.loop import fit

    cfg = dict(MODEL_CFG, **FAITHFUL)
    torch.manual_seed(0)
    m = build_model(cfg, FEAT, FIVE_QUESTIONS, "cpu")
    bags = {f"s{i}": _index_bag(n, seed=i) for i, n in enumerate((30, 18, 44, 25))}
    store = type("S", (), {"get": lambda self, sid: bags[sid]})()
    texts = [
        "Well differentiated; STAS present; Unknown; No pleural invasion; Unknown; R0",
        "Poorly differentiated; Unknown; Vascular invasion present; Unknown; Adjacent present; R1",
    ]
    optim = {
        "epochs": 2,
        "lr": 1e-3,
        "aggregator_lr_mult": 10.0,
        "weight_decay": 1e-3,
        "warmup_epochs": 1,
        "min_lr": 1e-6,
        "accumulate": 2,
        "instance_ratio": 0.5,
        "max_instances": 24,
    }
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with _Capture(m.aggregator) as cap:
        res = fit(m, store, [(s, i % 2) for i, s in enumerate(bags)], texts, optim, seed=0)
    assert res["n_updates"] > 0 and np.isfinite(res["final_loss"])
    assert cap.calls and all(c[0].shape[1] == 24 and c[3] is not None for c in cap.calls)  # training pads
    assert not torch.equal(m.pad_token, before["pad_token"])  # attended pads: the pad vector is learned
    assert not torch.equal(m.aggregator.cross_block.attn.kv.weight, before["aggregator.cross_block.attn.kv.weight"])
    save_checkpoint(m, cfg, [], FEAT, tmp_path / "f.pt")
    back, _ = load_checkpoint(tmp_path / "f.pt")
    assert back.pad_to_max_instances and back.aggregator.cross_block.residual == "none"
    assert back.aggregator.position_encoding == "sinusoid" and back.aggregator.position_in_cross_keys
    with torch.no_grad():
        bank = m.prompt_bank(None)
        torch.testing.assert_close(
            slide_embedding(m.eval(), bags["s0"], bank, 0.5, 24, False, None),
            slide_embedding(back, bags["s0"], back.prompt_bank(None), 0.5, 24, False, None),
        )


@pytest.mark.parametrize("legacy,mode", [(False, "mlp"), (True, "full")])
def test_checkpoint_with_boolean_cross_residual_loads(tmp_path, legacy, mode):
    """Checkpoints written when cross_residual was a boolean (and before the other flags existed) load
    with the behaviour they were trained with: False -> mlp, True -> full."""
    old_cfg = dict(MODEL_CFG, cross_residual=legacy)
    torch.manual_seed(0)
    m = build_model(old_cfg, FEAT, FIVE_QUESTIONS, "cpu").eval()
    assert m.aggregator.cross_block.residual == mode
    save_checkpoint(m, old_cfg, [], FEAT, tmp_path / "old.pt")
    back, payload = load_checkpoint(tmp_path / "old.pt")
    assert payload["model_cfg"]["cross_residual"] is legacy and back.aggregator.cross_block.residual == mode
    assert not back.pad_to_max_instances and back.aggregator.position_encoding == "fourier"
    x, p = torch.randn(1, 7, FEAT), torch.rand(1, 7, 2)
    with torch.no_grad():
        torch.testing.assert_close(
            back.encode_slide(x, p, back.prompt_bank(None), max_instances=16), m.encode_slide(x, p, m.prompt_bank(None))
        )
