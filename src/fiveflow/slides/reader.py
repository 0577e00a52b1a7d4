"""Open whole-slide images with OpenSlide and resolve their physical resolution (mpp).

Every OpenSlide format is read the same way (Aperio SVS incl. JPEG 2000, Hamamatsu NDPI/VMS,
MIRAX, Leica SCN, Philips TIFF, Ventana BIF, generic tiled TIFF, ...). A tiling job opens each slide once and
reads the mask level (and the QC thumbnail level) through that one handle.
Problems with a slide raise :class:`SlideError` whose message names the file, the reason and the fix.
"""

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
    mpp_source: str  # "override" (samples sheet / --mpp), "metadata", or "fallback" (tiling.assume_mpp)
    level_downsamples: tuple[float, ...]
    level_dimensions: tuple[tuple[int, int], ...]
    vendor: str

    def level_mpp(self, level: int) -> float:
        return self.mpp * self.level_downsamples[level]


def _permission_denied(path: Path, detail: str = "") -> SlideError:
    return SlideError(
        f"{path}: cannot read the slide: permission denied{detail}. Fix: check the permissions of the "
        f"file (ls -l {path}) and of any companion files or folder of its format: the user running "
        "fiveflow needs read access (chmod a+r, or ask the owner)."
    )


def open_slide(path: str | Path) -> openslide.OpenSlide:
    """Open ``path`` with OpenSlide, or raise :class:`SlideError` naming the file, the reason and the fix."""
    path = Path(path)
    if not path.is_file():
        raise SlideError(
            f"{path}: slide file not found. Fix: check the path (the samples sheet's `path` column, or "
            "`fiveflow tile --slide`; relative sheet paths are from the sheet's folder)."
        )
    if path.stat().st_size == 0:
        raise SlideError(
            f"{path}: the file is empty (0 bytes). Fix: re-download it and check its md5 against the manifest."
        )
    try:  # OpenSlide reports an unreadable file as an unknown format: tell a permission problem apart first
        with open(path, "rb"):
            pass
    except PermissionError:
        raise _permission_denied(path) from None
    except OSError as exc:
        raise SlideError(
            f"{path}: cannot read the slide ({exc.strerror or exc}). Fix: check the file and the disk "
            "or network file system it is on, then run again."
        ) from None
    try:
        slide = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError:
        raise SlideError(
            f"{path}: OpenSlide does not recognise this file as a whole-slide image (truncated download, "
            "wrong extension, or an unsupported format). Fix: re-download the file (check its md5 against "
            "the manifest) or remove it from the samples sheet."
        ) from None
    except (openslide.OpenSlideError, OSError) as exc:
        if "permission denied" in str(exc).lower():  # e.g. a MIRAX slide's data folder
            raise _permission_denied(path, f" ({exc})") from None
        raise SlideError(
            f"{path}: OpenSlide cannot read this slide ({exc}). Fix: re-download the file (check its md5 "
            "against the manifest) or remove it from the samples sheet."
        ) from None
    if not slide.level_count or min(slide.dimensions) < 1:
        slide.close()
        raise SlideError(
            f"{path}: the slide has no image levels. Fix: re-download it or remove it from the samples sheet."
        )
    return slide


def _metadata_mpp(props) -> float | None:
    """Level-0 mpp from OpenSlide's normalised property, vendor properties, or TIFF resolution tags."""
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
                continue  # "none" or no unit: a pixel aspect ratio, not a resolution
            mpp = factor / mpp
        if 0.01 < mpp < 100:  # outside this range it is a placeholder (e.g. 72 dpi), not a scan resolution
            return mpp
    return None


def resolve_mpp(
    slide: openslide.OpenSlide, path: str | Path, override: float | None = None, fallback: float | None = None
) -> tuple[float, str]:
    """Level-0 microns per pixel and where it came from.

    A per-slide ``override`` (samples sheet ``mpp`` column, ``fiveflow tile --mpp``) wins over the
    metadata; the global ``fallback`` (``tiling.assume_mpp``) only fills in for slides without it.
    A slide with neither is an error: tiles are never cut at a guessed physical size.
    """
    if override is not None and _present(override):
        mpp = float(override)
        if not 0.01 < mpp < 100:
            raise SlideError(
                f"{path}: mpp override {mpp} is not a plausible scan resolution. "
                "Fix: give microns per pixel, e.g. 0.25 (40x) or 0.5 (20x)."
            )
        return mpp, "override"
    mpp = _metadata_mpp(slide.properties)
    if mpp is not None:
        return mpp, "metadata"
    if fallback is not None and _present(fallback):
        return float(fallback), "fallback"
    power = slide.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
    hint = (
        f" The file says it was scanned at {power}x (often {10 / float(power):.3g} mpp, but scanners differ)."
        if power and _is_number(power) and float(power) > 0
        else ""
    )
    raise SlideError(
        f"{path}: no microns-per-pixel in the slide's metadata, so tiles cannot be cut at a physical size.{hint} "
        "Fix: give the slide's scan resolution in the samples sheet's `mpp` column (workflow) or with "
        "`fiveflow tile --mpp`, or set `tiling.assume_mpp` for every slide without metadata."
    )


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _present(v) -> bool:
    return v is not None and not (isinstance(v, str) and not v.strip()) and not (isinstance(v, float) and np.isnan(v))


def slide_info(
    slide: openslide.OpenSlide, path: str | Path, override: float | None = None, fallback: float | None = None
) -> SlideInfo:
    mpp, source = resolve_mpp(slide, path, override, fallback)
    w, h = slide.dimensions
    return SlideInfo(
        path=str(path),
        width=w,
        height=h,
        mpp=mpp,
        mpp_source=source,
        level_downsamples=tuple(float(d) for d in slide.level_downsamples),
        level_dimensions=tuple(tuple(d) for d in slide.level_dimensions),
        vendor=slide.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown"),
    )


def best_level(downsamples: tuple[float, ...], wanted: float, tol: float = 0.01) -> int:
    """The coarsest level whose downsample does not exceed ``wanted`` (within ``tol``): never upsample."""
    best = 0
    for i, ds in enumerate(downsamples):
        if ds <= wanted * (1 + tol) and ds >= downsamples[best]:
            best = i
    return best


def read_level_region(
    slide: openslide.OpenSlide, path: str | Path, level: int, origin: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """RGB uint8 array of ``size`` pixels of ``level`` at level-0 ``origin``; transparent areas read as white."""
    try:
        rgba = slide.read_region(origin, level, size)
    except openslide.OpenSlideError as exc:
        raise SlideError(
            f"{path}: reading level {level} failed ({exc}): the file is probably truncated or corrupt. "
            "Fix: re-download it (check its md5 against the manifest)."
        ) from None
    import cv2

    arr = np.asarray(rgba)
    alpha = arr[..., 3]
    rgb = cv2.cvtColor(arr, cv2.COLOR_RGBA2RGB)
    if alpha.min() < 255:  # outside the scanned area (e.g. MIRAX, NDPI): OpenSlide gives transparent black
        rgb[alpha == 0] = 255
    return rgb
