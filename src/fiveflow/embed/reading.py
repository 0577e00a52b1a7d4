"""Reading tiles for the encoder: a DataLoader whose workers each hold their own slide handle.

Each batch is read by one worker as a whole (``__getitems__``), in coordinate order, as a uint8
``[B, S, S, 3]`` tensor: four times smaller than float to pass between processes and to pin, and
normalised later on the device. Tiles are resized straight from the level they are read at to the
encoder's input size (one resize, area-averaged when shrinking) and centre-cropped if the encoder's
model card says so. Memory is bounded by ``num_workers * prefetch`` batches, whatever the slide size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .encoders.base import Preprocess

_CV2_UP = {"bilinear": 1, "bicubic": 2}  # cv2.INTER_LINEAR, cv2.INTER_CUBIC
_CV2_AREA = 3  # cv2.INTER_AREA


def fit_tile(rgb: np.ndarray, resize_to: int, crop: int | None, interpolation: str) -> np.ndarray:
    """Resize a square tile to ``resize_to`` px (area when shrinking) and centre-crop to ``crop`` px."""
    import cv2

    h, w = rgb.shape[:2]
    if (h, w) != (resize_to, resize_to):
        flag = _CV2_AREA if resize_to < min(h, w) else _CV2_UP[interpolation]
        rgb = cv2.resize(rgb, (resize_to, resize_to), interpolation=flag)
    if crop and crop < resize_to:
        o = (resize_to - crop) // 2
        rgb = rgb[o : o + crop, o : o + crop]
    return rgb


class TileBatches(Dataset):
    """Tiles of one slide as uint8 ``[B, S, S, 3]`` batches (``S`` = the encoder's input size)."""

    def __init__(
        self,
        slide_path: str | Path,
        coords: np.ndarray,
        level: int,
        read_size: int,
        tile_px: int,
        preprocess: Preprocess,
    ) -> None:
        self.slide_path = str(slide_path)
        self.coords = np.ascontiguousarray(coords, dtype=np.int64)
        self.level, self.read_size = int(level), int(read_size)
        self.resize_to = preprocess.resize_to(tile_px)
        self.crop = preprocess.crop
        self.size = preprocess.input_size(tile_px)
        self.interpolation = preprocess.interpolation
        self._slide = None

    def __getstate__(self) -> dict:  # workers open their own handle
        return {**self.__dict__, "_slide": None}

    def __len__(self) -> int:
        return len(self.coords)

    def _handle(self):
        if self._slide is None:
            from ..slides.reader import open_slide

            self._slide = open_slide(self.slide_path)
        return self._slide

    def tile(self, i: int) -> np.ndarray:
        from ..slides.reader import read_level_region

        x, y = (int(v) for v in self.coords[i])
        rgb = read_level_region(self._handle(), self.slide_path, self.level, (x, y), (self.read_size, self.read_size))
        return fit_tile(rgb, self.resize_to, self.crop, self.interpolation)

    def __getitems__(self, idx: list[int]) -> torch.Tensor:
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        for j, i in enumerate(idx):
            out[j] = self.tile(int(i))
        return torch.from_numpy(out)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]


def _as_is(batch):
    return batch


def tile_loader(ds: TileBatches, batch_size: int, num_workers: int, pin_memory: bool, prefetch: int = 2) -> DataLoader:
    """Batches in coordinate order (no shuffling); the same batches whatever ``num_workers`` is."""
    # DataLoader workers run torch single-threaded; cv2 must not be reconfigured in a forked worker (it hangs)
    kw = {"prefetch_factor": prefetch} if num_workers > 0 else {}
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_as_is,
        pin_memory=pin_memory,
        drop_last=False,
        **kw,
    )
