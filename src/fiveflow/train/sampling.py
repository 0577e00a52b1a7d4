"""Instance sampling (FIVE_METHOD.md section 3): one instance per equal segment of the bag."""
from __future__ import annotations

import math

import numpy as np


def n_sampled(n: int, ratio: float, max_instances: int) -> int:
    """``M = min(floor(N * ratio), max_instances)``, at least 1 (for a non-empty bag)."""
    if n <= 0:
        raise ValueError("cannot sample instances from an empty bag")
    return max(1, min(int(math.floor(n * ratio)), int(max_instances), n))


def sample_instances(n: int, ratio: float, max_instances: int, train: bool,
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """Row indices (sorted) of the sampled instances.

    The bag's rows are cut into ``M`` contiguous segments of (almost) equal size; training
    draws one random row per segment, evaluation takes each segment's centre row.
    """
    m = n_sampled(n, ratio, max_instances)
    bounds = (np.arange(m + 1) * n) // m  # every segment is non-empty because m <= n
    start, end = bounds[:-1], bounds[1:]
    if train:
        if rng is None:
            raise ValueError("training-time sampling needs an rng")
        return start + (rng.random(m) * (end - start)).astype(np.int64)
    return (start + end - 1) // 2
