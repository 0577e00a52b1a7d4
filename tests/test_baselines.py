"""Attention-MIL baselines (abmil, clam_sb, dsmil, transmil) on the shared loop: shapes, attention,
determinism, learning a tiny separable task, CLAM's instance loss, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fiveflow.baselines import BASELINES, abmil, clam_sb, dsmil, mil_loop, transmil
from fiveflow.train.data import Bag

DIM = 16
MODELS = {
    "abmil": (abmil, abmil.GatedABMIL),
    "clam_sb": (clam_sb, clam_sb.CLAMSB),
    "dsmil": (dsmil, dsmil.DSMIL),
    "transmil": (transmil, transmil.TransMIL),
}
# (epochs, lr) for the tiny task: a larger lr than the papers' 2e-4 (except TransMIL) keeps it to a few epochs
FAST = {"abmil": (10, 1e-3), "clam_sb": (10, 1e-3), "dsmil": (20, 1e-3), "transmil": (5, 2e-4)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run much faster single-threaded on shared cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


class DictStore:
    """Minimal in-memory stand-in for ``BagStore`` (``get`` and ``feature_dim``)."""

    def __init__(self, bags: dict[str, np.ndarray]) -> None:
        self.bags = {k: Bag(torch.from_numpy(v), torch.zeros(len(v), 2)) for k, v in bags.items()}

    def get(self, slide_id: str) -> Bag:
        return self.bags[slide_id]

    def feature_dim(self, slide_id: str) -> int:
        return int(self.bags[slide_id].features.shape[1])


@pytest.fixture(scope="module")
def task():
    """8 train + 8 test bags of 10-30 instances; positive bags have 30 % instances shifted along ``u``."""
    rng = np.random.default_rng(0)
    u = rng.standard_normal(DIM)
    u /= np.linalg.norm(u)
    bags, labels = {}, {}
    for i in range(16):
        y = i % 2
        n = int(rng.integers(10, 31))
        x = rng.standard_normal((n, DIM))
        if y:
            x[rng.choice(n, max(1, int(0.3 * n)), replace=False)] += 4.0 * u
        bags[f"b{i}"], labels[f"b{i}"] = x.astype(np.float32), y
    ids = sorted(bags, key=lambda s: int(s[1:]))
    return (
        DictStore(bags),
        ids[:8],
        np.array([labels[s] for s in ids[:8]]),
        ids[8:],
        np.array([labels[s] for s in ids[8:]]),
    )


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("n", [1, 2, 3, 10, 17])
def test_forward_shapes_and_attention(name, n):
    torch.manual_seed(0)
    model = MODELS[name][1](DIM).eval()
    with torch.no_grad():
        out = model(torch.randn(n, DIM))
    assert out["logits"].shape == (2,)
    assert out["attention"].shape == (n,)
    assert torch.all(out["attention"] >= 0)
    assert float(out["attention"].sum()) == pytest.approx(1.0, abs=1e-5)  # softmax (TransMIL: folded + renormalised)
    if name == "dsmil":
        assert out["instance_logits"].shape == (n, 2) and out["attention_per_class"].shape == (n, 2)
        assert torch.allclose(out["attention_per_class"].sum(0), torch.ones(2), atol=1e-5)
        assert float(out["probs"].sum()) == pytest.approx(1.0, abs=1e-5)
    if name == "transmil":
        assert out["side"] ** 2 >= n > (out["side"] - 1) ** 2


def test_transmil_padding_repeats_instances():
    """Attention mass on the padding copies goes back to the instances they repeat."""
    torch.manual_seed(0)
    model = transmil.TransMIL(DIM).eval()
    x = torch.randn(3, DIM)  # padded to 4 tokens: instance 0 repeated
    with torch.no_grad():
        out = model(x)
    assert out["side"] == 2 and out["attention"].shape == (3,)


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_and_learns(name, task, monkeypatch):
    store, tr, ytr, te, yte = task
    mod = MODELS[name][0]
    epochs, lr = FAST[name]
    monkeypatch.setattr(mod, "LR", lr)
    p1 = mod.fit_predict(store, tr, ytr, te, seed=0, device="cpu", epochs=epochs)
    p2 = mod.fit_predict(store, tr, ytr, te, seed=0, device="cpu", epochs=epochs)
    np.testing.assert_array_equal(p1, p2)  # same seed -> identical probabilities
    assert p1.shape == (len(te),) and np.all((p1 >= 0) & (p1 <= 1))
    acc = float(((p1 >= 0.5) == yte).mean())
    print(f"{name}: test accuracy {acc:.3f}")
    assert acc >= 0.8


def test_predict_mil_returns_attention(task):
    store, tr, ytr, te, _ = task
    torch.manual_seed(0)
    model = mil_loop.train_mil(abmil.GatedABMIL(DIM), store, tr, ytr, 0, "cpu", epochs=1, lr=1e-3, weight_decay=0.0)
    probs, att = mil_loop.predict_mil(model, store, te, "cpu")
    assert probs.shape == (len(te),) and len(att) == len(te)
    assert [a.shape[0] for a in att] == [store.get(s).features.shape[0] for s in te]


@pytest.mark.parametrize("n,k", [(1, 1), (3, 1), (10, 5), (40, 8)])
def test_clam_instance_loss_positive_with_gradient(n, k):
    torch.manual_seed(0)
    model = clam_sb.CLAMSB(DIM)
    assert model.n_instances(n) == k
    out = model(torch.randn(n, DIM))
    loss = model.instance_loss(out, torch.tensor([1]))
    assert float(loss.detach()) > 0
    loss.backward()
    for clf in model.instance_classifiers:  # subtyping: both class-specific classifiers get gradient
        assert clf.weight.grad is not None and float(clf.weight.grad.abs().sum()) > 0
    assert float(model.fc[0].weight.grad.abs().sum()) > 0
    assert model.classifier.weight.grad is None  # bag classifier untouched by the instance loss


def test_dsmil_losses_and_prediction():
    torch.manual_seed(0)
    model = dsmil.DSMIL(DIM).eval()
    x = torch.randn(7, DIM)
    out = model(x)
    assert torch.allclose(out["max_logits"], out["instance_logits"].max(0).values)
    expected = 0.5 * (torch.softmax(out["logits"], -1) + torch.softmax(out["max_logits"], -1))
    assert torch.allclose(out["probs"], expected)
    assert float(dsmil.max_instance_loss(out, torch.tensor([0])).detach()) > 0


def test_registry_lists_all():
    assert set(BASELINES) == {"meanpool", "abmil", "clam_sb", "dsmil", "transmil"}
    assert BASELINES["transmil"] is transmil.fit_predict


def test_standardization_removes_per_dimension_offsets_and_scales(task, monkeypatch):
    """Features are z-scored with the draw's training statistics: an encoder whose features are a
    per-dimension affine map of these gives the same predictions (up to float rounding)."""
    from fiveflow.baselines import dsmil

    store, tr, ytr, te, _ = task
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.2, 20, DIM).astype(np.float32), rng.normal(0, 100, DIM).astype(np.float32)
    shifted = DictStore({k: v.features.numpy() * a + b for k, v in store.bags.items()})
    monkeypatch.setattr(dsmil, "EPOCHS", 5)
    p1 = dsmil.fit_predict(store, tr, ytr, te, seed=0)
    p2 = dsmil.fit_predict(shifted, tr, ytr, te, seed=0)
    np.testing.assert_allclose(p1, p2, atol=1e-3)
