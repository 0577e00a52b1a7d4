"""Small shared helpers for training: device choice, seeding, threads, log files."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

LOGGER_NAME = "fiveflow"


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


@contextlib.contextmanager
def log_to(log: str | os.PathLike | logging.Logger | None) -> Iterator[logging.Logger]:
    """Yield the package logger; when ``log`` is a path, also append its records to that file."""
    logger = log if isinstance(log, logging.Logger) else logging.getLogger(LOGGER_NAME)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    handler = None
    if isinstance(log, (str, os.PathLike)):
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    try:
        yield logger
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
