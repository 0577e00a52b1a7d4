"""A single page with every slide's QC thumbnail, and a per-slide tiling summary."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from ..io import atomic_path
from .tiling import read_coords


def tiling_summary(coords_files: list[str]) -> pd.DataFrame:
    rows = []
    for f in coords_files:
        _, meta = read_coords(f)
        rows.append({k: meta[k] for k in ("slide_id", "n_tiles", "tissue_fraction", "slide_mpp", "mpp_source",
                                          "target_mpp", "patch_size_px", "patch_size_level0", "read_level",
                                          "mask_method", "slide_width", "slide_height")})
    return pd.DataFrame(rows)


def write_montage(qc_files: list[str], coords_files: list[str], out_png: str | Path, out_csv: str | Path,
                  cell: int = 256) -> None:
    summary = tiling_summary(coords_files)
    with atomic_path(out_csv) as tmp:
        summary.to_csv(tmp, index=False)
    n = max(len(qc_files), 1)
    cols = min(8, n)
    rows = math.ceil(n / cols)
    page = Image.new("RGB", (cols * cell, rows * (cell + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    empty = set(summary.loc[summary["n_tiles"] == 0, "slide_id"])
    for i, f in enumerate(qc_files):
        img = Image.open(f).convert("RGB")
        img.thumbnail((cell, cell))
        x, y = (i % cols) * cell, (i // cols) * (cell + 14)
        page.paste(img, (x, y + 14))
        sid = Path(f).stem
        draw.text((x + 2, y + 1), sid + ("  NO TILES" if sid in empty else ""), fill=(200, 0, 0) if sid in empty else (0, 0, 0))
    with atomic_path(out_png) as tmp:
        page.save(tmp, format="PNG")
