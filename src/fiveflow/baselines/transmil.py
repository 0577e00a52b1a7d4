"""TransMIL (Shao et al., 2021, "TransMIL: Transformer based correlated multiple instance learning
for whole slide image classification"), small, trained from scratch on each few-shot draw.

Instances -> Linear(D, 512) + ReLU -> square padding (the first instances repeated up to the
next square number H*H) -> class token prepended -> transformer layer -> PPEG (depthwise
convs 7/5/3 on the H x H grid, plus identity) -> transformer layer -> LayerNorm ->
Linear(512, n_classes) on the class token. Layers are pre-LN multi-head self-attention with a
residual (8 heads of 64, dropout 0.1), as in the original TransLayer.

Differences from the original: exact attention via
``torch.nn.functional.scaled_dot_product_attention`` instead of Nystrom attention (exact and
fine for bags up to a few thousand instances; memory grows as N^2), no Nystrom value-conv
residual, and Adam (lr 2e-4, weight decay 1e-5) instead of RAdam + Lookahead.

Heatmap attention: the class token's attention in the last layer, averaged over heads, over
the instance tokens; attention on padding copies is added back to the instance it repeats and
the result renormalised, so it has length N and sums to 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..train.data import BagStore
from .mil_loop import fit_predict_mil

DIM, HEADS, DROPOUT = 512, 8, 0.1
EPOCHS, LR, WEIGHT_DECAY = 50, 2e-4, 1e-5


class TransLayer(nn.Module):
    def __init__(self, dim: int = DIM, heads: int = HEADS, dropout: float = DROPOUT) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, return_cls_attention: bool = False):
        """``x [B, T, dim]`` -> ``x + attn(norm(x))`` (and the class token's attention ``[B, T]``)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = x + self.out(o.transpose(1, 2).reshape(b, t, d))
        if not return_cls_attention:
            return y
        cls_att = torch.softmax(q[:, :, :1] @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        return y, cls_att[:, :, 0].mean(1)  # [B, T], averaged over heads


class PPEG(nn.Module):
    def __init__(self, dim: int = DIM) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 7, 1, 7 // 2, groups=dim)
        self.proj1 = nn.Conv2d(dim, dim, 5, 1, 5 // 2, groups=dim)
        self.proj2 = nn.Conv2d(dim, dim, 3, 1, 3 // 2, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        cls_token, feat = x[:, :1], x[:, 1:]
        cnn = feat.transpose(1, 2).reshape(b, c, h, w)
        y = self.proj(cnn) + cnn + self.proj1(cnn) + self.proj2(cnn)
        return torch.cat([cls_token, y.flatten(2).transpose(1, 2)], dim=1)


class TransMIL(nn.Module):
    def __init__(self, in_dim: int, n_classes: int = 2, dim: int = DIM, heads: int = HEADS) -> None:
        super().__init__()
        self.fc1 = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.layer1 = TransLayer(dim, heads)
        self.pos_layer = PPEG(dim)
        self.layer2 = TransLayer(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.fc2 = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> dict:
        """``x [N, D]`` -> ``{logits [C], attention [N] (sums to 1), embedding [dim], side (H)}``."""
        n = x.shape[0]
        side = math.isqrt(n - 1) + 1 if n > 1 else 1  # ceil(sqrt(n))
        idx = torch.arange(side * side, device=x.device) % n  # square padding by repetition
        h = self.fc1(x)[idx].unsqueeze(0)  # [1, side^2, dim]
        h = torch.cat([self.cls_token.expand(1, -1, -1), h], dim=1)
        h = self.pos_layer(self.layer1(h), side, side)
        h, cls_att = self.layer2(h, return_cls_attention=True)
        emb = self.norm(h)[0, 0]
        att = torch.zeros(n, dtype=cls_att.dtype, device=x.device).index_add_(0, idx, cls_att[0, 1:])
        att = att / att.sum()
        return {"logits": self.fc2(emb), "attention": att, "embedding": emb, "side": side}


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
        TransMIL,
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
