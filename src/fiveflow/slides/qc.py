"""QC images: the slide with its tissue outline and kept tiles drawn on top, or a card saying why it failed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..fileio import atomic_path

TISSUE_OUTLINE = (255, 200, 0)
TILE_OUTLINE = (0, 160, 0)
BACKGROUND_TINT = (70, 110, 220)


def write_qc_thumbnail(
    thumb: np.ndarray, mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, meta, out_png: str | Path
) -> None:
    """``thumb``: RGB thumbnail of the whole slide; ``mask``: the tissue mask (any resolution);
    ``xs``/``ys``: level-0 corners of the kept tiles; ``meta``: the slide's TilingMeta."""
    import cv2

    h, w = thumb.shape[:2]
    img = thumb.copy()
    m = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    # Tint the background blue so a mask that missed tissue is obvious at a glance.
    bg = m == 0
    img[bg] = (0.65 * img[bg] + 0.35 * np.array(BACKGROUND_TINT)).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, TISSUE_OUTLINE, max(1, round(max(w, h) / 600)))
    sx, sy = w / meta.slide_width, h / meta.slide_height
    s = meta.patch_size_level0
    for x, y in zip(xs.tolist(), ys.tolist()):
        cv2.rectangle(img, (int(x * sx), int(y * sy)), (int((x + s) * sx), int((y + s) * sy)), TILE_OUTLINE, 1)
    pil = Image.fromarray(img)
    status = "" if meta.status == "ok" else f"  {meta.status.upper().replace('_', ' ')}"
    label = (
        f"{meta.slide_id}  {meta.n_tiles} tiles  {meta.patch_size_px}px@{meta.target_mpp:g}mpp  "
        f"{meta.slide_mpp:.3g}mpp ({meta.mpp_source})  tissue {meta.tissue_area_mm2:.1f} mm2{status}"
    )
    pil = _with_banner(pil, label, bad=meta.status != "ok")
    with atomic_path(out_png) as tmp:
        pil.save(tmp, format="PNG", compress_level=1)  # QC images: fast over small


def write_error_card(meta, out_png: str | Path, size: int = 512) -> None:
    """A QC image for a slide that could not be tiled: its id, status and the reason."""
    img = Image.new("RGB", (size, size // 2), (235, 235, 235))
    draw = ImageDraw.Draw(img)
    draw.text((8, 24), f"{meta.slide_id}: {meta.status.upper()}", fill=(200, 0, 0))
    for i, line in enumerate(textwrap.wrap(meta.message, width=size // 7)[:14]):
        draw.text((8, 44 + 14 * i), line, fill=(0, 0, 0))
    img = _with_banner(img, f"{meta.slide_id}  FAILED", bad=True)
    with atomic_path(out_png) as tmp:
        img.save(tmp, format="PNG")


def _with_banner(img: Image.Image, text: str, bad: bool) -> Image.Image:
    out = Image.new("RGB", (img.width, img.height + 16), (255, 255, 255))
    out.paste(img, (0, 16))
    ImageDraw.Draw(out).text((3, 2), text, fill=(200, 0, 0) if bad else (0, 0, 0))
    return out
