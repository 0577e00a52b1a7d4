"""Gated-attention MIL (Ilse et al., 2018), trained from scratch on each few-shot draw.

Instances -> Linear(D, 256) + ReLU + dropout -> gated attention (tanh * sigmoid, 128 hidden)
-> attention-weighted mean -> Linear(256, 2). Trained with the shared loop
(:mod:`.mil_loop`): Adam, one bag per step, every instance used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..train.data import BagStore
from .mil_loop import fit_predict_mil

HIDDEN, ATTN_HIDDEN, DROPOUT = 256, 128, 0.25
EPOCHS, LR, WEIGHT_DECAY = 50, 2e-4, 1e-4


class GatedABMIL(nn.Module):
    def __init__(self, in_dim: int, n_classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_dim, HIDDEN), nn.ReLU(), nn.Dropout(DROPOUT))
        self.att_v = nn.Linear(HIDDEN, ATTN_HIDDEN)
        self.att_u = nn.Linear(HIDDEN, ATTN_HIDDEN)
        self.att_w = nn.Linear(ATTN_HIDDEN, 1)
        self.classifier = nn.Linear(HIDDEN, n_classes)

    def forward(self, x: torch.Tensor) -> dict:
        """``x [N, D]`` -> ``{logits [n_classes], attention [N] (softmax), embedding [HIDDEN]}``."""
        h = self.embed(x)
        a = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h))).squeeze(-1)
        a = torch.softmax(a, dim=0)
        m = a @ h
        return {"logits": self.classifier(m), "attention": a, "embedding": m}


def fit_predict(
    store: BagStore,
    train_ids: Sequence[str],
    train_y: np.ndarray,
    test_ids: Sequence[str],
    seed: int,
    device=None,
    epochs: int | None = None,
) -> np.ndarray:
    return fit_predict_mil(
        GatedABMIL,
        store,
        train_ids,
        train_y,
        test_ids,
        seed,
        device,
        EPOCHS if epochs is None else epochs,
        LR,
        WEIGHT_DECAY,
    )
