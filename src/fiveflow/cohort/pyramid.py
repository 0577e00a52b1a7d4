"""Write a tiled pyramidal BigTIFF from a tile function, in memory bounded by a few tiles.

Level 0 comes from ``tile_fn(ox, oy)``; every further level is the 2x2 box average of the one
above. TIFF pages are written one after the other, so each reduced level is staged in an
anonymous temporary file next to the output, laid out tile by tile (each tile as four
contiguous quadrants), while the level above is being written: one ``pwrite`` per source tile,
one ``pread`` per reduced tile. Peak memory does not depend on the slide's size; the staging
files take about a third of the raw level-0 size on disk and vanish when done.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


def level_sizes(width: int, height: int, min_side: int = 512) -> list[tuple[int, int]]:
    """Level 0, then halved (rounding up) until the longest side is <= ``min_side`` (>= 2 levels)."""
    sizes = [(int(width), int(height))]
    while max(sizes[-1]) > min_side or len(sizes) < 2:
        w, h = sizes[-1]
        if max(w, h) < 2:
            break
        sizes.append(((w + 1) // 2, (h + 1) // 2))
    return sizes


def _half(t: np.ndarray) -> np.ndarray:
    """2x2 box average of an (H, W, 3) uint8 tile (H, W even), rounded."""
    s = t[0::2, 0::2].astype(np.uint16)
    s += t[1::2, 0::2]
    s += t[0::2, 1::2]
    s += t[1::2, 1::2]
    s += 2
    s >>= 2
    return s.astype(np.uint8)


class _Staging:
    """One reduced level on disk: tile (tx, ty) = four contiguous quadrants of (T/2)^2 * 3 bytes."""

    def __init__(self, directory: Path, tiles_x: int, tile: int):
        self.fh = tempfile.TemporaryFile(dir=directory, prefix=".pyramid.")
        self.fd = self.fh.fileno()
        self.tiles_x = tiles_x
        self.tile = tile
        self.q = (tile // 2) * (tile // 2) * 3

    def put_quadrant(self, src_tx: int, src_ty: int, half: np.ndarray) -> None:
        tx, ty, q = src_tx // 2, src_ty // 2, (src_ty % 2) * 2 + (src_tx % 2)
        off = ((ty * self.tiles_x + tx) * 4 + q) * self.q
        os.pwrite(self.fd, np.ascontiguousarray(half).tobytes(), off)

    def get_tile(self, tx: int, ty: int) -> np.ndarray:
        h = self.tile // 2
        off = (ty * self.tiles_x + tx) * 4 * self.q
        raw = os.pread(self.fd, 4 * self.q, off)
        buf = np.zeros(4 * self.q, np.uint8)  # unwritten quadrants (beyond the image) stay black
        buf[: len(raw)] = np.frombuffer(raw, np.uint8)
        q = buf.reshape(2, 2, h, h, 3)
        return np.concatenate([np.concatenate([q[0, 0], q[0, 1]], 1), np.concatenate([q[1, 0], q[1, 1]], 1)], 0)

    def close(self) -> None:
        self.fh.close()


def write_pyramid(
    path: str | os.PathLike,
    tile_fn: Callable[[int, int], np.ndarray],
    width: int,
    height: int,
    mpp: float,
    tile: int = 256,
    quality: int = 90,
    description: str | None = None,
    min_side: int = 512,
) -> None:
    """Write a JPEG-compressed tiled pyramidal BigTIFF (resolution tags in pixels per centimetre).

    ``tile_fn(ox, oy)`` returns the level-0 RGB uint8 tile whose top-left pixel is (ox, oy),
    shape (tile, tile, 3) (content beyond the image edge is cropped by readers).
    """
    import tifffile

    path = Path(path)
    sizes = level_sizes(width, height, min_side)
    ntiles = [(-(-w // tile), -(-h // tile)) for w, h in sizes]
    stages: list[_Staging] = []
    try:
        for k in range(1, len(sizes)):
            stages.append(_Staging(path.parent, ntiles[k][0], tile))

        def tiles(level: int) -> Iterator[np.ndarray]:
            nx, ny = ntiles[level]
            nxt = stages[level] if level < len(stages) else None
            for ty in range(ny):
                for tx in range(nx):
                    t = tile_fn(tx * tile, ty * tile) if level == 0 else stages[level - 1].get_tile(tx, ty)
                    if nxt is not None:
                        nxt.put_quadrant(tx, ty, _half(t))
                    yield t

        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            for level, (w, h) in enumerate(sizes):
                res = 1e4 / (mpp * width / w)  # pixels per centimetre at this level
                tw.write(
                    tiles(level),
                    shape=(h, w, 3),
                    dtype=np.uint8,
                    tile=(tile, tile),
                    photometric="rgb",
                    compression="jpeg",
                    compressionargs={"level": quality},
                    subfiletype=0 if level == 0 else 1,
                    resolution=(res, res),
                    resolutionunit="CENTIMETER",
                    description=description if level == 0 else None,
                    software="fiveflow",
                    metadata=None,
                    maxworkers=1,
                )
    finally:
        for s in stages:
            s.close()
