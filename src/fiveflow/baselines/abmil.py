"""Gated-attention MIL (Ilse et al., 2018), trained from scratch on each few-shot draw.

Instances -> Linear(D, 256) + ReLU + dropout -> gated attention (tanh * sigmoid, 128 hidden)
-> attention-weighted mean -> Linear(256, 2). Adam, one bag per step, every instance used.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..train.data import BagStore

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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, D]`` -> (logits ``[n_classes]``, attention ``[N]``)."""
        h = self.embed(x)
        a = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h))).squeeze(-1)
        a = torch.softmax(a, dim=0)
        return self.classifier(a @ h), a


def fit_predict(store: BagStore, train_ids: Sequence[str], train_y: np.ndarray, test_ids: Sequence[str],
                seed: int, device=None) -> np.ndarray:
    device = torch.device(device or "cpu")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = GatedABMIL(store.feature_dim(train_ids[0])).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    model.train()
    for _ in range(EPOCHS):
        for i in rng.permutation(len(train_ids)):
            logits, _ = model(store.get(train_ids[i]).features.to(device))
            loss = F.cross_entropy(logits.unsqueeze(0), torch.tensor([int(train_y[i])], device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return np.array([float(torch.softmax(model(store.get(s).features.to(device))[0], -1)[1]) for s in test_ids])
