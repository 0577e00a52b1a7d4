"""The authors' training quirks behind flags (FIVE_METHOD.md sections 3-4), each pinned to the text:

- ``sampling: integer_interval``: "Their training draw uses an integer interval N // M, so for
  max < N < 2*max only the first `max` rows are ever sampled";
- ``label_smoothing``: "label-smoothed cross-entropy (0.1)";
- ``lr_floor: absolute``: "an absolute floor of 3e-8 for every group";
- ``drop_last_group``: "an incomplete accumulation group at the end of an epoch is discarded, not
  stepped (so a GPU that sees fewer than 8 slides per epoch never steps: a quirk)";
- ``text_grad_candidates``: "with LoRA, each step back-propagates through only 96 randomly chosen
  candidate texts; the other candidates are encoded without gradients".

Each test fails when its flag does nothing. CPU, offline (the packaged MiniLM text encoder).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from fiveflow.model.five import build_model
from fiveflow.train import loop
from fiveflow.train.data import Bag
from fiveflow.train.sampling import sample_instances
from fiveflow.train.schedule import build_optimizer, set_lr

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [f"question {q}?" for q in range(6)]
# six answers each, different in every answer: question dropping never merges two of them
TEXTS = ["; ".join(f"finding {q} grade {t}" for q in range(6)) for t in range(3)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matmuls: one thread is faster on a busy CPU


def _model_cfg(**over) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())["model"]
    cfg.update({"dim": 16, "heads": 2, "n_prompts": 2, "text_max_tokens": 32, "feature_norm": "none", **over})
    return cfg


def _optim(**over) -> dict:
    base = dict(yaml.safe_load((ROOT / "config.yaml").read_text())["train"]["finetune"])
    base.update(epochs=2, warmup_epochs=1, accumulate=2, instance_ratio=1.0, max_instances=64, lr=1e-3, min_lr=1e-5)
    base.update(over)
    return base


class Store:
    """In-memory bags: ``get(slide_id) -> Bag``."""

    def __init__(self, n_slides: int, n_rows: int = 12, dim: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.bags = {
            f"s{i}": Bag(torch.randn(n_rows, dim, generator=g), torch.rand(n_rows, 2, generator=g))
            for i in range(n_slides)
        }

    def get(self, sid: str) -> Bag:
        return self.bags[sid]


def _frozen_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(_model_cfg(), 8, QUESTIONS, "cpu")


def _items(n: int) -> list[tuple[str, int]]:
    return [(f"s{i}", i % len(TEXTS)) for i in range(n)]


# -- sampling: integer_interval ------------------------------------------------------------------
def test_integer_interval_never_reaches_the_tail_between_max_and_2max():
    cap, n = 64, 96  # N = 1.5 max: k = N // M = 1
    rng = np.random.default_rng(0)
    integer = np.concatenate([sample_instances(n, 1.0, cap, True, rng, "integer_interval") for _ in range(300)])
    segments = np.concatenate([sample_instances(n, 1.0, cap, True, rng, "segments") for _ in range(300)])
    assert integer.max() == cap - 1 and set(integer) == set(range(cap))  # only the first max rows, every draw
    assert segments.max() == n - 1 and set(segments) == set(range(n))  # ours reaches the tail
    # evaluation: the centre of each integer interval (k = 1: the row itself)
    assert np.array_equal(sample_instances(n, 1.0, cap, False, None, "integer_interval"), np.arange(cap))


def test_integer_interval_and_segments_cover_a_large_bag_alike():
    cap, n = 64, 200  # N >= 2 max: k = 3, the last N - 3M = 8 rows unreachable
    rng = np.random.default_rng(1)
    draws = {
        m: np.stack([sample_instances(n, 1.0, cap, True, rng, m) for _ in range(400)])
        for m in ("integer_interval", "segments")
    }
    for m, d in draws.items():
        assert d.shape == (400, cap) and (np.diff(d, axis=1) > 0).all(), m  # M sorted distinct rows
        assert len(set(d.ravel())) / n >= 0.96, m
    assert abs(draws["integer_interval"].mean() - draws["segments"].mean()) / n < 0.03
    # segments of exactly k = 3 rows: one random row in each [3i, 3i + 3); evaluation takes 3i + 1
    d = draws["integer_interval"]
    assert ((d // 3) == np.arange(cap)).all()
    assert np.array_equal(sample_instances(n, 1.0, cap, False, None, "integer_interval"), np.arange(cap) * 3 + 1)
    with pytest.raises(ValueError, match="sampling"):
        sample_instances(n, 1.0, cap, True, rng, "nope")


def test_sampling_mode_reaches_training_and_evaluation(monkeypatch):
    modes = []
    real = loop.sample_instances

    def spy(n, ratio, cap, train, rng=None, mode="segments"):
        modes.append((train, mode))
        return real(n, ratio, cap, train, rng, mode)

    monkeypatch.setattr(loop, "sample_instances", spy)
    store = Store(4)
    model = _frozen_model()
    loop.fit(model, store, _items(4), TEXTS, _optim(epochs=1, sampling="integer_interval"), seed=0)
    loop.predict_probs(model, store, ["s0"], TEXTS[:2], 1.0, 64, sampling="integer_interval")
    assert modes and {m for _, m in modes} == {"integer_interval"} and {t for t, _ in modes} == {True, False}
    with pytest.raises(ValueError, match="sampling"):
        loop.fit(model, store, _items(4), TEXTS, _optim(epochs=1, sampling="blocks"), seed=0)


# -- label smoothing -----------------------------------------------------------------------------
def _one_step_loss(model, store, eps: float) -> float:
    losses: list[float] = []
    summary = {"n_empty": 0, "n_empty_skipped": 0, "n_forward": 0}
    loop.train_group(
        model,
        store,
        [("s0", 1)],
        TEXTS,
        6,
        1.0,
        64,
        np.random.default_rng(3),
        np.random.default_rng(4),
        False,
        summary,
        losses,
        label_smoothing=eps,
    )
    assert summary["n_forward"] == 1
    return losses[0]


def test_label_smoothing_loss_equals_hand_computed_smoothed_ce(monkeypatch):
    monkeypatch.setattr(loop, "draw_dropped_questions", lambda n, rng: [])  # all 3 candidates, full bank
    model = _frozen_model().eval()  # eval: no dropout, so the same forward twice
    store = Store(1)
    got = _one_step_loss(model, store, 0.1)
    plain = _one_step_loss(model, store, 0.0)
    # by hand, with the same streams: the candidates are the 3 texts shuffled, the target is text 1
    text_rng, rng = np.random.default_rng(3), np.random.default_rng(4)
    cand, remap = loop.perturb_descriptions(TEXTS, [], text_rng)
    with torch.no_grad():
        slide = loop.slide_embedding(model, store.get("s0"), model.prompt_bank(None), 1.0, 64, True, rng)
        logp = torch.log_softmax(model.logits(slide, model.encode_texts(cand)).double()[0], 0)
    c, t = len(cand), remap[1]
    smoothed = -(0.9 * logp[t] + 0.1 / c * logp.sum())
    assert got == pytest.approx(float(smoothed), rel=1e-4, abs=1e-4)
    assert plain == pytest.approx(float(-logp[t]), rel=1e-4, abs=1e-4)
    assert abs(got - plain) > 1e-3  # the flag changes the number


def test_label_smoothing_in_the_symmetric_loss_smooths_image_to_text_only():
    logits = torch.tensor([[5.0, 0.0, 1.0], [0.0, 5.0, 0.0], [0.0, 4.0, 2.0]])
    targets = torch.tensor([0, 1, 1])
    logp = torch.log_softmax(logits, 1)
    i2t = -(0.9 * logp[torch.arange(3), targets] + 0.1 / 3 * logp.sum(1)).mean()
    t2i = loop._symmetric_loss(logits, targets) * 2 - F.cross_entropy(logits, targets)
    assert torch.allclose(loop._symmetric_loss(logits, targets, 0.1), 0.5 * (i2t + t2i), atol=1e-6)


def test_label_smoothing_reaches_fit():
    store = Store(4)
    a = loop.fit(_frozen_model(), store, _items(4), TEXTS, _optim(epochs=1), seed=0)
    b = loop.fit(_frozen_model(), store, _items(4), TEXTS, _optim(epochs=1, label_smoothing=0.1), seed=0)
    assert a["n_forward"] == b["n_forward"] and a["epoch_loss"] != b["epoch_loss"]


# -- lr floor ------------------------------------------------------------------------------------
@pytest.mark.parametrize("floor", ["scaled", "absolute"])
def test_lr_floor_after_the_schedule(floor):
    model = _frozen_model()
    opt = build_optimizer(model, _optim(lr_floor=floor, aggregator_lr_mult=10.0))
    set_lr(opt, 100, 100, 10)  # past the end of the cosine
    prompts = [g for g in opt.param_groups if any(p is model.prompts for p in g["params"])]
    agg = [g for g in opt.param_groups if any(p is q for q in model.aggregator.parameters() for p in g["params"])]
    assert len(prompts) == 1 and prompts[0]["base_lr"] == 1e-3  # the prompts train at the base (text) rate
    assert agg and all(g["base_lr"] == pytest.approx(1e-2) for g in agg)
    if floor == "absolute":
        assert all(g["lr"] == pytest.approx(1e-5) for g in opt.param_groups)
    else:
        assert all(g["lr"] == pytest.approx(1e-4) for g in agg) and prompts[0]["lr"] == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="lr_floor"):
        build_optimizer(model, _optim(lr_floor="relative"))


# -- drop_last_group -----------------------------------------------------------------------------
@pytest.mark.parametrize("n,acc", [(5, 2), (7, 3)])
def test_drop_last_group_updates_per_epoch(monkeypatch, n, acc):
    totals = []
    real = loop.set_lr
    monkeypatch.setattr(
        loop, "set_lr", lambda opt, step, total, warm: totals.append(total) or real(opt, step, total, warm)
    )
    store = Store(n)
    res = {}
    for drop in (False, True):
        totals.clear()
        res[drop] = loop.fit(
            _frozen_model(), store, _items(n), TEXTS, _optim(epochs=2, accumulate=acc, drop_last_group=drop), seed=0
        )
        res[drop]["totals"] = set(totals)
    off, on = res[False], res[True]
    assert off["n_updates"] == 2 * math.ceil(n / acc) and off["n_forward"] == 2 * n and off["n_discarded_slides"] == 0
    assert on["n_updates"] == 2 * (n // acc) and on["n_forward"] == 2 * (n // acc) * acc
    assert on["n_discarded_groups"] == 2 and on["n_discarded_slides"] == 2 * (n % acc)
    # the schedule counts the steps that run: floor on, ceil off
    assert on["steps_per_epoch"] == n // acc and on["totals"] == {2 * (n // acc)}
    assert off["totals"] == {2 * math.ceil(n / acc)}


def test_drop_last_group_with_fewer_slides_than_accumulate_never_steps(caplog):
    store = Store(3)
    model = _frozen_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="fiveflow.train"):
        res = loop.fit(
            model, store, _items(3), TEXTS, _optim(epochs=3, accumulate=8, drop_last_group=True), seed=0, label="1-shot"
        )
    assert res["n_updates"] == 0 and res["n_forward"] == 0 and res["n_discarded_slides"] == 9
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    msg = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "1-shot" in msg and "0 optimiser updates" in msg and "accumulate" in msg and "drop_last_group: false" in msg
    # off: the same run steps once per epoch (a partial group is stepped)
    off = loop.fit(_frozen_model(), store, _items(3), TEXTS, _optim(epochs=3, accumulate=8), seed=0)
    assert off["n_updates"] == 3


# -- text_grad_candidates (LoRA) -----------------------------------------------------------------
CANDS = [f"tumour grade {i} with pattern {chr(97 + i)}" for i in range(10)]


@pytest.fixture(scope="module")
def lora_model():
    torch.manual_seed(0)
    return build_model(_model_cfg(text_lora_r=8, text_max_tokens=16), 8, QUESTIONS, "cpu")


def _spy_encode(monkeypatch, enc):
    calls = []
    real = enc.encode

    def spy(texts):
        calls.append((list(texts), torch.is_grad_enabled()))
        return real(texts)

    monkeypatch.setattr(enc, "encode", spy)
    return calls


def _lora_grads(model) -> torch.Tensor:
    return torch.cat(
        [
            p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
            for n, p in model.named_parameters()
            if "lora_" in n
        ]
    )


def test_grad_subset_encodes_k_texts_with_gradients_and_the_rest_without(lora_model, monkeypatch):
    model = lora_model.eval()  # no dropout: values comparable across calls
    calls = _spy_encode(monkeypatch, model.text_lora)
    vec = model.text_vectors(CANDS, 3, np.random.default_rng(0))
    assert vec.shape == (10, model.text_lora.hidden_size)
    # the no-grad part first (its batches' buffers are gone before the subset's graph is built)
    assert [(len(t), g) for t, g in calls] == [(7, False), (3, True)]
    sub = {CANDS.index(t) for t in calls[1][0]}
    assert set(calls[0][0]) | set(calls[1][0]) == set(CANDS)
    # only the subset's rows reach the LoRA tensors (lora_B; lora_A's gradient is 0 while B is 0 at init)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for i in range(10):
        grads = torch.autograd.grad(vec[i].sum(), params, retain_graph=True, allow_unused=True)
        reach = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert reach == (i in sub), i
    # the no-grad rows equal what the encoder gives with gradients (same weights, same values)
    with torch.no_grad():
        full = model.text_lora.encode(CANDS)
    torch.testing.assert_close(vec.detach(), full, atol=1e-5, rtol=0)


def test_grad_subset_all_or_none_and_frozen(lora_model, monkeypatch):
    model = lora_model.eval()
    calls = _spy_encode(monkeypatch, model.text_lora)
    rng = np.random.default_rng(0)
    state = dict(rng.bit_generator.state)
    for k in (0, None, 10, 96):  # 0 / None = all; k >= n = all
        calls.clear()
        model.text_vectors(CANDS, k, rng)
        assert [(len(t), g) for t, g in calls] == [(10, True)], k
    with torch.no_grad():  # evaluation: no subset either
        calls.clear()
        model.encode_texts(CANDS, 3, rng)
        assert [(len(t), g) for t, g in calls] == [(10, False)]
    assert rng.bit_generator.state == state  # never drawn from
    frozen = _frozen_model()  # cached encoder: the flag has no effect and draws nothing
    torch.testing.assert_close(frozen.encode_texts(CANDS, 3, rng), frozen.encode_texts(CANDS))
    assert rng.bit_generator.state == state
    with pytest.raises(ValueError, match="rng"):
        model.text_vectors(CANDS, 3, None)


def test_grad_subset_changes_between_steps_and_changes_gradients(lora_model, monkeypatch):
    model = lora_model.eval()
    calls = _spy_encode(monkeypatch, model.text_lora)
    rng = np.random.default_rng(7)
    subsets = []
    for _ in range(6):
        calls.clear()
        model.text_vectors(CANDS, 4, rng)
        subsets.append(frozenset(t for texts, g in calls if g for t in texts))
    assert len(set(subsets)) > 1 and all(len(s) == 4 for s in subsets)
    # the first text's gradient through the encoder: all candidates vs a subset without it
    slide = F.normalize(torch.randn(1, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    grads = {}
    for k, seed in ((0, 0), (1, None)):
        if seed is None:  # a one-text subset that is not the target (text 0)
            seed = next(
                s for s in range(100) if int(np.random.default_rng(s).choice(10, size=1, replace=False)[0]) != 0
            )
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(
            model.logits(slide, model.encode_texts(CANDS, k, np.random.default_rng(seed))), torch.tensor([0])
        )
        loss.backward()
        grads[k] = _lora_grads(model)
    model.zero_grad(set_to_none=True)
    assert grads[0].abs().sum() > 0 and not torch.allclose(grads[0], grads[1])


def test_training_step_uses_the_subset(lora_model, monkeypatch):
    model = lora_model.train()
    calls = _spy_encode(monkeypatch, model.text_lora)
    texts = [f"finding {q} grade {t}" for t in range(5) for q in range(1)]  # 5 single-answer candidates
    monkeypatch.setattr(loop, "draw_dropped_questions", lambda n, rng: [])
    summary = {"n_empty": 0, "n_empty_skipped": 0, "n_forward": 0}
    loop.train_group(
        model,
        Store(1),
        [("s0", 2)],
        texts,
        6,
        1.0,
        64,
        np.random.default_rng(0),
        np.random.default_rng(1),
        False,
        summary,
        [],
        grad_candidates=2,
        cand_rng=np.random.default_rng(2),
    )
    cand_calls = [(len(t), g) for t, g in calls if not set(t) & set(QUESTIONS)]
    assert cand_calls == [(3, False), (2, True)]
    model.zero_grad(set_to_none=True)
    model.eval()


def test_lora_fit_with_grad_subset_resumes_identically(tmp_path):
    class Stop(Exception):
        pass

    def make():
        torch.manual_seed(0)
        return build_model(_model_cfg(text_lora_r=4, text_max_tokens=16), 8, QUESTIONS, "cpu")

    store = Store(4)
    optim = _optim(epochs=2, accumulate=2, text_grad_candidates=2)
    ref = make()
    s_ref = loop.fit(ref, store, _items(4), TEXTS, optim, seed=3)
    state = tmp_path / "lora.resume"

    def stop(epoch):
        raise Stop

    with pytest.raises(Stop):
        loop.fit(make(), store, _items(4), TEXTS, optim, seed=3, resume=state, run_key="k", on_epoch=stop)
    assert len(torch.load(state, weights_only=False)["numpy_rngs"]) == 4  # the subset stream is saved
    resumed = make()
    s_res = loop.fit(resumed, store, _items(4), TEXTS, optim, seed=3, resume=state, run_key="k")
    assert s_res["epoch_loss"] == s_ref["epoch_loss"] and s_res["n_updates"] == s_ref["n_updates"] == 4
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    # the subset matters: all candidates with gradients train to other weights
    other = make()
    loop.fit(other, store, _items(4), TEXTS, dict(optim, text_grad_candidates=0), seed=3)
    lora = [k for k in ref.state_dict() if "lora_B" in k]
    assert any(not torch.equal(ref.state_dict()[k], other.state_dict()[k]) for k in lora)
