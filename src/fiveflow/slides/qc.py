"""QC thumbnail: the slide with its tissue mask outline and kept tiles drawn on top."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ..io import atomic_path


def write_qc_thumbnail(slide, mask: np.ndarray, coords: pd.DataFrame, meta, out_png: str | Path,
                       size: int) -> None:
    w0, h0 = slide.dimensions
    thumb = slide.get_thumbnail((size, size)).convert("RGB")
    sx = thumb.width / w0
    sy = thumb.height / h0
    # Shade non-tissue in blue so a mask that missed tissue is obvious at a glance.
    m = Image.fromarray((~mask).astype(np.uint8) * 255).resize(thumb.size, Image.NEAREST)
    overlay = Image.new("RGB", thumb.size, (70, 110, 220))
    thumb = Image.composite(Image.blend(thumb, overlay, 0.35), thumb, m)
    draw = ImageDraw.Draw(thumb)
    s = meta.patch_size_level0
    for x, y in zip(coords["x"].to_numpy(), coords["y"].to_numpy()):
        draw.rectangle([x * sx, y * sy, (x + s) * sx, (y + s) * sy], outline=(0, 160, 0))
    label = (f"{meta.slide_id}  {meta.n_tiles} tiles  {meta.patch_size_px}px@{meta.target_mpp}mpp  "
             f"mask={meta.mask_method}  tissue={meta.tissue_fraction:.0%}")
    draw.rectangle([0, 0, thumb.width, 14], fill=(255, 255, 255))
    draw.text((3, 1), label, fill=(0, 0, 0))
    with atomic_path(out_png) as tmp:
        thumb.save(tmp, format="PNG")
