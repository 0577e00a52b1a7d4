"""Feature bags: reading h5 files and keeping them in memory across epochs and runs."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..embed.bags import read_usable_bag, row_index_coords

log = logging.getLogger(__name__)


def load_bag(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one bag: features float32 ``[N, D]`` and coords int ``[N, 2]`` (any CLAM/TRIDENT-style h5).

    A bag without ``coords`` gets its row index as x (and 0 as y), with a warning. An incomplete bag
    (``complete`` attribute false: its writer was killed) or NaN/inf features raise
    :class:`fiveflow.embed.bags.BagError` naming the file and the fix.
    """
    feats, coords, _ = read_usable_bag(path)
    if feats.shape[0] == 0:
        raise ValueError(f"{path}: expected a non-empty [N, D] feature matrix, got shape {feats.shape}")
    if coords is None:
        log.warning("%s has no 'coords': using the row index as position", path)
        coords = row_index_coords(len(feats))
    return feats, coords


def relative_positions(coords: np.ndarray, mode: str) -> np.ndarray:
    """Positions in [0, 1], ``[N, 2]`` float32.

    ``coords``: level-0 coordinates minus the bag's minimum, divided by the larger of the two
    extents (aspect ratio kept). ``index``: ``(row / N, 0)``, the authors' encoding.
    """
    n = len(coords)
    if mode == "index":
        return np.stack([np.arange(n) / max(n, 1), np.zeros(n)], axis=1).astype(np.float32)
    if mode != "coords":
        raise ValueError(f"model.position must be coords or index, got {mode!r}")
    c = coords.astype(np.float64)
    c = c - c.min(0)
    extent = float(c.max()) if n else 0.0
    return (c / extent if extent > 0 else np.zeros_like(c)).astype(np.float32)


@dataclass
class Bag:
    features: torch.Tensor  # [N, D] float32, CPU
    pos: torch.Tensor  # [N, 2] float32, CPU

    @property
    def n(self) -> int:
        return int(self.features.shape[0])


class BagStore:
    """Slide id -> :class:`Bag`, loaded lazily and kept in memory up to ``max_bytes`` (LRU)."""

    def __init__(self, bag_paths: dict[str, str], position: str = "coords", max_bytes: float = 4e9) -> None:
        self.bag_paths = {str(k): str(v) for k, v in bag_paths.items()}
        self.position = position
        self.max_bytes = max_bytes
        self._bags: OrderedDict[str, Bag] = OrderedDict()
        self._bytes = 0

    def path(self, slide_id: str) -> str:
        try:
            return self.bag_paths[str(slide_id)]
        except KeyError:
            raise KeyError(
                f"no feature bag for slide {slide_id!r} (bag_paths has {len(self.bag_paths)} slides)"
            ) from None

    def get(self, slide_id: str) -> Bag:
        sid = str(slide_id)
        if sid in self._bags:
            self._bags.move_to_end(sid)
            return self._bags[sid]
        feats, coords = load_bag(self.path(sid))
        bag = Bag(torch.from_numpy(feats), torch.from_numpy(relative_positions(coords, self.position)))
        self._bags[sid] = bag
        self._bytes += feats.nbytes
        while self._bytes > self.max_bytes and len(self._bags) > 1:
            _, old = self._bags.popitem(last=False)
            self._bytes -= old.features.numel() * 4
        return bag

    def feature_stats(self, slide_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std over every instance of ``slide_ids`` (see :func:`feature_stats`)."""
        return feature_stats(self, slide_ids)

    def feature_dim(self, slide_id: str) -> int:
        return int(self.get(slide_id).features.shape[1])


def feature_stats(store, slide_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std over every instance of ``slide_ids`` (each slide once; float64
    sums, one bag at a time). ``store`` is anything with ``get(slide_id) -> Bag``."""
    total, sq, n = None, None, 0
    for sid in dict.fromkeys(slide_ids):
        f = store.get(sid).features.double()
        total = f.sum(0) if total is None else total + f.sum(0)
        sq = (f * f).sum(0) if sq is None else sq + (f * f).sum(0)
        n += f.shape[0]
    if not n:
        raise ValueError("feature_stats: no instances")
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(0).sqrt()
    return mean.float(), std.float()
