"""Small shared helpers for training: device choice, seeding, threads."""

from __future__ import annotations

import random

import numpy as np
import torch


def resolve_device(name: str = "auto", key: str = "train.device") -> torch.device:
    """``auto`` -> cuda when a GPU is visible, else cpu; ``cuda`` without a GPU is an error naming ``key``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{key} is cuda but no GPU is visible. Fix: set {key}: auto or cpu.")
    return torch.device(name)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return a fresh numpy Generator for the caller's draws."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def set_threads(threads: int | None) -> None:
    if threads and threads > 0:
        torch.set_num_threads(int(threads))
