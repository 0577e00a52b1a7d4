"""Tile a slide by physical size: a grid of ``patch_size`` px tiles at ``target_mpp``, kept where tissue is.

Writes ``coords/{slide}.parquet`` (level-0 top-left ``x``, ``y`` and ``tissue`` fraction) with the
file metadata listed in docs/CONTRACTS.md, so any encoder can reuse the same coordinates.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..io import atomic_path
from .mask import tissue_mask, tile_fractions
from .reader import SlideError, best_level, open_slide, read_downsampled, slide_info

META_KEY = b"fiveflow"


@dataclass
class TilingMeta:
    slide_id: str
    slide_path: str
    slide_width: int
    slide_height: int
    slide_mpp: float
    mpp_source: str
    target_mpp: float
    patch_size_px: int          # at target_mpp
    patch_size_level0: int      # the same tile measured in level-0 pixels
    read_level: int             # pyramid level to read tiles from
    read_size: int              # tile edge in pixels at read_level (resize to patch_size_px)
    mask_method: str
    mask_mpp: float
    min_tissue: float
    n_tiles: int
    tissue_fraction: float      # of the slide area, from the mask
    fiveflow_version: str = __version__


def plan_grid(width: int, height: int, size0: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of a non-overlapping grid of ``size0`` tiles fully inside the slide."""
    xs = np.arange(0, max(width - size0, -1) + 1, size0)
    ys = np.arange(0, max(height - size0, -1) + 1, size0)
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel(), gy.ravel()


def tile_slide(slide_path: str | Path, slide_id: str, cfg: dict, out_parquet: str | Path,
               out_qc: str | Path | None = None) -> TilingMeta:
    """Mask and tile one slide. ``cfg`` is the ``tiling`` section of the config."""
    slide = open_slide(slide_path)
    try:
        info = slide_info(slide, slide_path, cfg.get("assume_mpp"))
        target_mpp = float(cfg["target_mpp"])
        patch = int(cfg["patch_size"])
        size0 = int(round(patch * target_mpp / info.mpp))
        if size0 < 1 or size0 > min(info.width, info.height):
            raise SlideError(
                f"{slide_path}: a {patch} px tile at {target_mpp} mpp is {size0} level-0 px, "
                f"but the slide is {info.width}x{info.height} px at {info.mpp:.3f} mpp. "
                "Fix: lower `tiling.patch_size` or `tiling.target_mpp`."
            )
        mask_mpp = max(float(cfg["mask_mpp"]), info.mpp)
        mask_ds = mask_mpp / info.mpp
        thumb = read_downsampled(slide, mask_ds)
        mask = tissue_mask(thumb, cfg["mask_method"], mask_mpp)
        xs, ys = plan_grid(info.width, info.height, size0)
        scale = mask.shape[1] / info.width
        frac = tile_fractions(mask, xs, ys, size0, scale)
        keep = frac >= float(cfg["min_tissue"])
        level = best_level(info.level_downsamples, size0 / patch)
        read_size = int(round(size0 / info.level_downsamples[level]))
        meta = TilingMeta(
            slide_id=slide_id, slide_path=str(slide_path), slide_width=info.width,
            slide_height=info.height, slide_mpp=info.mpp, mpp_source=info.mpp_source,
            target_mpp=target_mpp, patch_size_px=patch, patch_size_level0=size0,
            read_level=level, read_size=read_size, mask_method=cfg["mask_method"],
            mask_mpp=mask_mpp, min_tissue=float(cfg["min_tissue"]), n_tiles=int(keep.sum()),
            tissue_fraction=float(mask.mean()),
        )
        coords = pd.DataFrame({"x": xs[keep].astype(np.int64), "y": ys[keep].astype(np.int64),
                               "tissue": frac[keep].astype(np.float32)})
        write_coords(coords, meta, out_parquet)
        if out_qc is not None:
            from .qc import write_qc_thumbnail

            write_qc_thumbnail(slide, mask, coords, meta, out_qc, int(cfg["thumbnail_size"]))
        return meta
    finally:
        slide.close()


def write_coords(coords: pd.DataFrame, meta: TilingMeta, out_parquet: str | Path) -> None:
    table = pa.Table.from_pandas(coords, preserve_index=False)
    md = dict(table.schema.metadata or {})
    md[META_KEY] = json.dumps(asdict(meta)).encode()
    table = table.replace_schema_metadata(md)
    with atomic_path(out_parquet) as tmp:
        pq.write_table(table, tmp)


def read_coords(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Coordinates table and its tiling metadata (a dict of :class:`TilingMeta` fields)."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{path}: no fiveflow tiling metadata; regenerate it with `fiveflow tile`.")
    return table.to_pandas(), json.loads(raw)


def expected_tiles(width: int, height: int, mpp: float, target_mpp: float, patch: int) -> int:
    size0 = round(patch * target_mpp / mpp)
    return math.floor(width / size0) * math.floor(height / size0)
