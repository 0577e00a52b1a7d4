"""Open whole-slide images with OpenSlide and resolve their physical resolution (mpp)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide


class SlideError(ValueError):
    """A slide that cannot be used, with a message naming the file and the fix."""


@dataclass
class SlideInfo:
    path: str
    width: int
    height: int
    mpp: float
    mpp_source: str  # "metadata" or "assumed"
    level_downsamples: tuple[float, ...]
    level_dimensions: tuple[tuple[int, int], ...]


def open_slide(path: str | Path) -> openslide.OpenSlide:
    path = Path(path)
    if not path.is_file():
        raise SlideError(f"{path}: slide file not found. Fix: check the path in your samples sheet.")
    try:
        return openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError) as exc:
        raise SlideError(
            f"{path}: not a readable whole-slide image ({exc}). Fix: re-download the file "
            "(check its md5 against the manifest) or remove it from the samples sheet."
        ) from None


def slide_mpp(slide: openslide.OpenSlide, path: str | Path, assume_mpp: float | None = None) -> tuple[float, str]:
    """Level-0 microns per pixel from metadata, else ``assume_mpp``, else a clear error."""
    props = slide.properties
    for key in (openslide.PROPERTY_NAME_MPP_X, "aperio.MPP", "tiff.XResolution"):
        val = props.get(key)
        if val is None:
            continue
        try:
            mpp = float(val)
        except ValueError:
            continue
        if key == "tiff.XResolution":
            unit = props.get("tiff.ResolutionUnit", "").lower()
            factor = {"centimeter": 1e4, "inch": 25400.0}.get(unit)
            if not factor or mpp <= 0:
                continue
            mpp = factor / mpp
        if 0.01 < mpp < 100:
            return mpp, "metadata"
    if assume_mpp:
        return float(assume_mpp), "assumed"
    raise SlideError(
        f"{path}: no microns-per-pixel metadata, so tiles cannot be cut at a physical size. "
        "Fix: set `tiling.assume_mpp` in the config (e.g. 0.25 for 40x, 0.5 for 20x) if you know the scan resolution."
    )


def slide_info(slide: openslide.OpenSlide, path: str | Path, assume_mpp: float | None = None) -> SlideInfo:
    mpp, source = slide_mpp(slide, path, assume_mpp)
    w, h = slide.dimensions
    return SlideInfo(
        path=str(path), width=w, height=h, mpp=mpp, mpp_source=source,
        level_downsamples=tuple(float(d) for d in slide.level_downsamples),
        level_dimensions=tuple(tuple(d) for d in slide.level_dimensions),
    )


def best_level(downsamples: tuple[float, ...], wanted: float, tol: float = 0.01) -> int:
    """The coarsest level whose downsample does not exceed ``wanted`` (within ``tol``)."""
    best = 0
    for i, ds in enumerate(downsamples):
        if ds <= wanted * (1 + tol):
            best = i
    return best


def read_downsampled(slide: openslide.OpenSlide, downsample: float) -> np.ndarray:
    """Whole slide as RGB at ``downsample`` (>= 1) relative to level 0, read from the best pyramid level."""
    from PIL import Image

    w0, h0 = slide.dimensions
    level = best_level(tuple(slide.level_downsamples), downsample)
    lw, lh = slide.level_dimensions[level]
    img = slide.read_region((0, 0), level, (lw, lh)).convert("RGB")
    out_w, out_h = max(1, round(w0 / downsample)), max(1, round(h0 / downsample))
    if (lw, lh) != (out_w, out_h):
        img = img.resize((out_w, out_h), Image.BILINEAR)
    return np.asarray(img)
