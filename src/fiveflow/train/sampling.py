"""Instance sampling (FIVE_METHOD.md section 3): one instance per segment of the bag.

Two ways to cut the bag (``train.*.sampling``):

- ``segments`` (default): ``M`` contiguous segments of (almost) equal size that cover all ``N``
  rows; training draws one random row per segment, evaluation takes each segment's centre row.
- ``integer_interval`` (the authors' quirk): segments of the integer length ``k = N // M``,
  segment i = rows ``[i*k, (i+1)*k)``; training draws one random row in each, evaluation takes
  ``i*k + k // 2`` (the centre of the same interval, by analogy with ``segments``: the authors'
  evaluation draw is not specified). The last ``N - M*k`` rows are never sampled, so for
  ``max < N < 2*max`` (``k = 1``) only the first ``max`` rows are ever used.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLING_MODES = ("segments", "integer_interval")


def n_sampled(n: int, ratio: float, max_instances: int) -> int:
    """``M = min(floor(N * ratio), max_instances)``, at least 1 (for a non-empty bag)."""
    if n <= 0:
        raise ValueError("cannot sample instances from an empty bag")
    return max(1, min(int(math.floor(n * ratio)), int(max_instances), n))


def sample_instances(
    n: int,
    ratio: float,
    max_instances: int,
    train: bool,
    rng: np.random.Generator | None = None,
    mode: str = "segments",
) -> np.ndarray:
    """Row indices (sorted) of the sampled instances, ``M`` of them (see the module docstring).

    ``mode="segments"``: the bag's rows are cut into ``M`` contiguous segments of (almost) equal
    size; training draws one random row per segment, evaluation takes each segment's centre row.
    ``mode="integer_interval"``: the authors' segments of ``N // M`` rows from the start of the bag.
    """
    m = n_sampled(n, ratio, max_instances)
    if mode == "segments":
        bounds = (np.arange(m + 1) * n) // m  # every segment is non-empty because m <= n
        start, end = bounds[:-1], bounds[1:]
    elif mode == "integer_interval":
        k = n // m  # >= 1 because m <= n
        start = np.arange(m, dtype=np.int64) * k
        end = start + k
    else:
        raise ValueError(f"train sampling must be one of {SAMPLING_MODES}, got {mode!r}")
    if train:
        if rng is None:
            raise ValueError("training-time sampling needs an rng")
        return start + (rng.random(m) * (end - start)).astype(np.int64)
    return (start + end - 1) // 2 if mode == "segments" else start + (end - start) // 2
