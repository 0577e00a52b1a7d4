"""CLAM-SB (Lu et al., 2021, "Data-efficient and weakly supervised computational pathology on
whole-slide images"), single attention branch, trained from scratch on each few-shot draw.

Instances -> Linear(D, 512) + ReLU + dropout -> gated attention (tanh * sigmoid, 256 hidden,
one branch) -> attention-weighted sum -> Linear(512, n_classes). Instance-level clustering:
for the bag's class, the ``k = min(8, N // 2)`` (at least 1) highest-attention instances are
positive and the ``k`` lowest negative evidence for that class's instance classifier
(Linear(512, 2)); with ``SUBTYPING`` (CLAM's setting for subtyping tasks such as LUAD/LUSC)
the other classes' classifiers also see the top-``k`` instances as negatives, and the summed
instance loss is divided by the number of classes, as in CLAM_SB.forward.

Instance loss: cross-entropy (CLAM's default is SmoothTop1SVM; CE is its documented alternative
and needs no extra dependency). Total loss = 0.7 * bag CE + 0.3 * instance loss (CLAM's
``bag_weight``). Optimiser: Adam, lr 2e-4, weight decay 1e-5 (CLAM's defaults).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..train.data import BagStore
from .mil_loop import fit_predict_mil

HIDDEN, ATTN_HIDDEN, DROPOUT = 512, 256, 0.25
K_SAMPLE, BAG_WEIGHT, SUBTYPING = 8, 0.7, True
EPOCHS, LR, WEIGHT_DECAY = 50, 2e-4, 1e-5


class CLAMSB(nn.Module):
    def __init__(self, in_dim: int, n_classes: int = 2, k_sample: int = K_SAMPLE, subtyping: bool = SUBTYPING) -> None:
        super().__init__()
        self.n_classes, self.k_sample, self.subtyping = n_classes, k_sample, subtyping
        self.fc = nn.Sequential(nn.Linear(in_dim, HIDDEN), nn.ReLU(), nn.Dropout(DROPOUT))
        self.att_a = nn.Sequential(nn.Linear(HIDDEN, ATTN_HIDDEN), nn.Tanh(), nn.Dropout(DROPOUT))
        self.att_b = nn.Sequential(nn.Linear(HIDDEN, ATTN_HIDDEN), nn.Sigmoid(), nn.Dropout(DROPOUT))
        self.att_c = nn.Linear(ATTN_HIDDEN, 1)
        self.classifier = nn.Linear(HIDDEN, n_classes)
        self.instance_classifiers = nn.ModuleList(nn.Linear(HIDDEN, 2) for _ in range(n_classes))

    def forward(self, x: torch.Tensor) -> dict:
        """``x [N, D]`` -> ``{logits [C], attention [N] (softmax), h [N, HIDDEN], embedding [HIDDEN]}``."""
        h = self.fc(x)
        a = torch.softmax(self.att_c(self.att_a(h) * self.att_b(h)).squeeze(-1), dim=0)
        m = a @ h
        return {"logits": self.classifier(m), "attention": a, "h": h, "embedding": m}

    def n_instances(self, n: int) -> int:
        return max(1, min(self.k_sample, n // 2))

    def instance_loss(self, out: dict, y: torch.Tensor) -> torch.Tensor:
        """CLAM's instance clustering loss (cross-entropy) for a bag of class ``y``."""
        h, a = out["h"], out["attention"]
        k = self.n_instances(h.shape[0])
        top = h[torch.topk(a, k).indices]
        bottom = h[torch.topk(-a, k).indices]
        label = int(y.reshape(-1)[0])
        total = h.new_zeros(())
        for c, clf in enumerate(self.instance_classifiers):
            if c == label:  # in-class: top-k positive, bottom-k negative
                inst = torch.cat([top, bottom])
                target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(h.device)
            elif self.subtyping:  # out-of-class: top-k negative
                inst, target = top, torch.zeros(k, dtype=torch.long, device=h.device)
            else:
                continue
            total = total + F.cross_entropy(clf(inst), target)
        return total / len(self.instance_classifiers) if self.subtyping else total


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
        CLAMSB,
        store,
        train_ids,
        train_y,
        test_ids,
        seed,
        device,
        EPOCHS if epochs is None else epochs,
        LR,
        WEIGHT_DECAY,
        extra_loss=lambda m: m.instance_loss,
        bag_weight=BAG_WEIGHT,
    )
