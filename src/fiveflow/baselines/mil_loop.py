"""One training loop shared by the attention-MIL baselines (abmil, clam_sb, dsmil, transmil).

A model's ``forward(x [N, D])`` returns a dict with at least ``logits`` (``[n_classes]``) and
``attention`` (``[N]``, per-instance weights for heatmaps), plus model-specific tensors. It may
also return ``probs`` (``[n_classes]``), used at prediction time instead of ``softmax(logits)``
(DSMIL averages its bag and max-instance probabilities).

Loss per bag = ``bag_weight * CE(logits, y) + (1 - bag_weight) * extra_loss(out, y)`` when
``extra_loss`` is given, else ``CE(logits, y)``. Adam, one bag per step, every instance used,
bag order reshuffled each epoch by ``np.random.default_rng(seed)``; ``torch.manual_seed(seed)``
makes initialisation and dropout deterministic on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..train.data import BagStore, feature_stats

ExtraLoss = Callable[[dict, torch.Tensor], torch.Tensor]

# Per-instance scores of the last prediction, for heatmaps: each baseline's ``fit_predict`` returns
# P(positive) only (its tested contract); inside :func:`collect_attention` it also appends its
# ``[attention [N_i] per test bag]`` here.
_ATTENTION_SINK: ContextVar[list | None] = ContextVar("fiveflow_attention_sink", default=None)


@contextmanager
def collect_attention() -> Iterator[list]:
    """``with collect_attention() as sink: prob = fit_predict(...)`` -> ``sink[-1]`` is the list of
    per-test-bag instance scores of that prediction (empty when the method posts none)."""
    sink: list = []
    token = _ATTENTION_SINK.set(sink)
    try:
        yield sink
    finally:
        _ATTENTION_SINK.reset(token)


def post_attention(attentions: list[np.ndarray]) -> None:
    """Hand per-test-bag instance scores to an enclosing :func:`collect_attention` (no-op outside one)."""
    sink = _ATTENTION_SINK.get()
    if sink is not None:
        sink.append([np.asarray(a, dtype=np.float32) for a in attentions])


def train_mil(
    model: nn.Module,
    store: BagStore,
    train_ids: Sequence[str],
    train_y: np.ndarray,
    seed: int,
    device,
    epochs: int,
    lr: float,
    weight_decay: float,
    extra_loss: ExtraLoss | None = None,
    bag_weight: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> nn.Module:
    """Train ``model`` in place on the bags ``train_ids`` with labels ``train_y``; return it (eval mode)."""
    device = torch.device(device or "cpu")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
    labels = [torch.tensor([int(v)], device=device) for v in np.asarray(train_y)]
    model.train()
    for _ in range(int(epochs)):
        for i in rng.permutation(len(train_ids)):
            out = model(store.get(train_ids[i]).features.to(device))
            loss = F.cross_entropy(out["logits"].unsqueeze(0), labels[i])
            if extra_loss is not None:
                loss = bag_weight * loss + (1.0 - bag_weight) * extra_loss(out, labels[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def predict_mil(
    model: nn.Module, store: BagStore, ids: Sequence[str], device=None, positive: int = 1
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(P(class positive) [len(ids)], [attention [N_i] per bag])`` with the model in eval mode."""
    device = torch.device(device or "cpu")
    model.eval()
    probs, attention = [], []
    for s in ids:
        out = model(store.get(s).features.to(device))
        p = out["probs"] if "probs" in out else torch.softmax(out["logits"], -1)
        probs.append(float(p[positive]))
        attention.append(out["attention"].detach().float().cpu().numpy())
    return np.array(probs, dtype=np.float64), attention


class Standardized(nn.Module):
    """``model((x - mean) / std)``: per-dimension z-scoring with the training bags' statistics,
    as the mean-pooling baseline and FiVE (``model.feature_norm``) do, so every method sees the
    same inputs (raw ReLU features share one dominant direction; DSMIL was at chance on them)."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> dict:
        return self.model((x - self.mean) / self.std)


def fit_predict_mil(
    build: Callable[[int], nn.Module],
    store: BagStore,
    train_ids: Sequence[str],
    train_y: np.ndarray,
    test_ids: Sequence[str],
    seed: int,
    device,
    epochs: int,
    lr: float,
    weight_decay: float,
    extra_loss: Callable[[nn.Module], ExtraLoss] | None = None,
    bag_weight: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    standardize: bool = True,
) -> np.ndarray:
    """Seed, build ``build(in_dim)``, :func:`train_mil`, and return P(positive) for ``test_ids``.

    ``extra_loss`` here is a factory ``model -> extra_loss(out, y)`` (e.g. a bound method).
    ``standardize`` z-scores features with the statistics of the draw's training bags.
    """
    torch.manual_seed(seed)
    inner = build(store.feature_dim(train_ids[0]))
    model = Standardized(inner, *feature_stats(store, train_ids)) if standardize else inner
    train_mil(
        model,
        store,
        train_ids,
        train_y,
        seed,
        device,
        epochs,
        lr,
        weight_decay,
        extra_loss(inner) if extra_loss is not None else None,
        bag_weight,
        betas,
    )
    probs, attention = predict_mil(model, store, test_ids, device)
    post_attention(attention)
    return probs
