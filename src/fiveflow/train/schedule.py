"""AdamW with two learning rates and a warm-up + cosine schedule (FIVE_METHOD.md section 4).

Text side (text projection, learnable prompts, LoRA adapters, logit scale if learnt) trains at ``lr``; the
image side (feature projection, pad vector and TFS aggregator) at ``lr * aggregator_lr_mult``. The
learnable prompts are text side: they train at the base rate, as in the authors' code. The cosine
floor follows ``lr_floor``: ``scaled`` (default) = ``min_lr`` times the group's multiplier, so both
groups follow the same curve; ``absolute`` (authors) = ``min_lr`` for every group, so the image
side ends at the same rate as the text side. Weight decay applies to matrices (``ndim >= 2``),
not to biases, LayerNorm gains or the scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..settings import with_defaults

BETAS = (0.9, 0.98)
EPS = 1e-8
LR_FLOORS = ("scaled", "absolute")


def build_optimizer(model: nn.Module, optim_cfg: dict) -> torch.optim.AdamW:
    lr = float(optim_cfg["lr"])
    mult = float(optim_cfg["aggregator_lr_mult"])
    wd = float(optim_cfg["weight_decay"])
    min_lr = float(optim_cfg["min_lr"])
    floor = str(with_defaults(optim_cfg, "train.pretrain")["lr_floor"])  # older configs lack the key
    if floor not in LR_FLOORS:
        raise ValueError(f"lr_floor must be one of {LR_FLOORS}, got {floor!r}")
    image_prefixes = ("feature_proj.", "aggregator.", "pad_token")
    buckets: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith(image_prefixes), p.ndim >= 2)
        buckets.setdefault(key, []).append(p)
    groups = []
    for (image, decay), params in sorted(buckets.items()):
        m = mult if image else 1.0
        groups.append(
            {
                "params": params,
                "lr": lr * m,
                "base_lr": lr * m,
                "min_lr": min_lr * m if floor == "scaled" else min_lr,
                "weight_decay": wd if decay else 0.0,
            }
        )
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, eps=EPS)


def lr_factor(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Learning rate at optimiser step ``step`` (0-based): linear warm-up, then cosine to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    rest = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / rest, 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, warmup_steps: int) -> float:
    """Apply the schedule to every group; returns the smallest group rate (the text side) for logging."""
    out = None
    for g in optimizer.param_groups:
        g["lr"] = lr_factor(step, total_steps, warmup_steps, g["base_lr"], g["min_lr"])
        out = g["lr"] if out is None or g["lr"] < out else out
    return float(out or 0.0)
