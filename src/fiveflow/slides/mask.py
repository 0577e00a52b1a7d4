"""Tissue masks at a low-resolution pyramid level, via tiatoolbox maskers, with clean-up in physical units.

Steps (each optional except the masker), all at the mask level chosen from the pyramid:

1. tiatoolbox ``OtsuTissueMasker`` or ``MorphologicalMasker`` (``mask.method``);
2. near-white rejection: pixels whose R, G and B all exceed ``mask.white_threshold`` are glass;
3. pen-mark rejection (``mask.reject_pen``: colours among green, blue, black, red);
4. components smaller than ``mask.min_component_mm2`` are dropped (dust, debris);
5. holes smaller than ``mask.fill_holes_mm2`` are filled (alveolar spaces, vessel lumens, fat).

Only cv2/numpy on the mask-level image: the cost stays below the cost of reading that image.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np

# An Otsu split of a blank slide separates JPEG noise: if the "tissue" side is not at least this much
# darker (grey levels) than the background, there is no tissue.
MIN_CONTRAST = 12.0


def _tissuemask_module():
    """``tiatoolbox.tools.tissuemask`` without importing the rest of tiatoolbox.

    ``tiatoolbox.tools.__init__`` imports registration and graph tools (umap, SAM, torchvision) and
    ``tiatoolbox.utils.__init__`` imports torch, dask and matplotlib: ~9 s per process, paid by every
    tiling job, none of it used by the maskers. When those packages are not imported yet, we
    register bare package objects (same search paths) and a ``tiatoolbox.utils.misc`` that holds the
    one function ``tissuemask`` imports from it, then import only the masker module (~0.2 s).
    Falls back to the plain import if anything about that fails.
    """
    if "tiatoolbox.tools.tissuemask" in sys.modules:
        return sys.modules["tiatoolbox.tools.tissuemask"]
    added: list[str] = []
    try:
        spec = importlib.util.find_spec("tiatoolbox")
        root = spec.submodule_search_locations[0]
        for name, sub in (("tiatoolbox.tools", "tools"), ("tiatoolbox.utils", "utils")):
            if name not in sys.modules:
                pkg = types.ModuleType(name)
                pkg.__path__ = [f"{root}/{sub}"]
                pkg.__package__ = name
                sys.modules[name] = pkg
                added.append(name)
        if "tiatoolbox.utils.misc" not in sys.modules:
            misc = types.ModuleType("tiatoolbox.utils.misc")
            misc.objective_power2mpp = _objective_power2mpp
            sys.modules["tiatoolbox.utils.misc"] = misc
            added.append("tiatoolbox.utils.misc")
        module = importlib.import_module("tiatoolbox.tools.tissuemask")
    except Exception:  # pragma: no cover - depends on tiatoolbox's layout
        for name in added:
            sys.modules.pop(name, None)
        from tiatoolbox.tools import tissuemask as module

        return module
    # Leave no stand-ins behind: a later ``import tiatoolbox.utils`` gets the real package.
    for name in added:
        sys.modules.pop(name, None)
    return module


def _objective_power2mpp(power):
    """Same as tiatoolbox.utils.misc.objective_power2mpp (10 / power); only for MorphologicalMasker(power=)."""
    return 10.0 / np.asarray(power, dtype=float)


def masker(method: str, mpp: float):
    """The tiatoolbox masker for ``method`` at a mask resolution of ``mpp`` microns per pixel."""
    tm = _tissuemask_module()
    if method == "otsu":
        return _FastOtsuTissueMasker(tm.OtsuTissueMasker)()
    if method == "morphological":
        return _FastMorphologicalMasker(tm.MorphologicalMasker)(mpp=mpp)
    raise ValueError(f"unknown tissue mask method {method!r}: use otsu or morphological")


def _otsu_threshold(gray_images) -> float:
    """skimage's ``threshold_otsu`` of all pixels, from a cv2 histogram instead of a concatenated copy."""
    import cv2
    from skimage.filters import threshold_otsu

    hist = np.zeros(256, np.int64)
    for g in gray_images:
        hist += (
            cv2.calcHist([g], [0], None, [256], [0, 256]).reshape(-1).astype(np.int64)
        )  # (256, 1) or (256,) by OpenCV version
    present = np.flatnonzero(hist)
    if len(present) == 0:
        return 0.0
    if len(present) == 1:
        return float(present[0])  # skimage returns the single value for a constant image
    lo, hi = present[0], present[-1] + 1
    # skimage histograms integer images over [min, max] with one bin per value
    return float(threshold_otsu(hist=(hist[lo:hi], np.arange(lo, hi))))


def _gray(image):
    import cv2

    if image.ndim == 3 and image.shape[-1] == 3:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return image if image.ndim == 2 else image[..., 0]


def _FastOtsuTissueMasker(base):
    """tiatoolbox's OtsuTissueMasker with the threshold found from a histogram (same value, tested)
    instead of a flattened copy of every pixel: a few ms instead of ~40 ms per megapixel."""

    class FastOtsuTissueMasker(base):
        def fit(self, images, masks=None):
            if np.ndim(images) != 4:
                raise ValueError(
                    f"Expected 4 dimensional input shape (N, height, width, 3) but received shape "
                    f"of {np.shape(images)}."
                )
            self.threshold = _otsu_threshold([_gray(im) for im in images])
            self.fitted = True

        def transform(self, images):
            if not self.fitted:
                raise SyntaxError("Fit must be called before transform.")
            return np.array([_gray(im) < self.threshold for im in images])

    return FastOtsuTissueMasker


def _FastMorphologicalMasker(base):
    """tiatoolbox's MorphologicalMasker with its per-component Python loop replaced by one table lookup.

    Same output (tested against the original); the original costs one full-image pass per small
    component, i.e. minutes on a noisy slide.
    """
    import cv2

    class FastMorphologicalMasker(base):
        def fit(self, images, masks=None):
            self.threshold = _otsu_threshold([_gray(im) for im in images])
            self.fitted = True

        def transform(self, images):
            if not self.fitted:
                raise SyntaxError("Fit must be called before transform.")
            out = []
            for image in images:
                gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 and image.shape[-1] == 3 else image
                mask = (gray < self.threshold).astype(np.uint8)
                n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
                keep = stats[:, cv2.CC_STAT_AREA] >= self.min_region_size
                keep[0] = False
                mask = keep[labels].astype(np.uint8)
                mask = cv2.morphologyEx(mask, cv2.MORPH_DILATE, self.kernel)
                out.append(mask.astype(bool))
            return np.array(out)

    return FastMorphologicalMasker


def pen_mask(rgb: np.ndarray, colours=("green", "blue", "black")) -> np.ndarray:
    """Pixels that look like marker ink rather than H&E.

    H&E never has green as its strongest channel, and its purples have red above green; blue and
    green inks invert that. Black ink is darker than any stained tissue at mask resolution. Red ink
    resembles erythrocytes (R high, B close to G), so ``red`` is opt-in.
    """
    import cv2

    r, g, b = cv2.split(rgb)
    out = np.zeros(rgb.shape[:2], np.uint8)

    def over(a, c, k):  # a > c + k, saturating uint8 arithmetic (cv2: no int16 copies)
        return cv2.compare(cv2.subtract(a, c), k, cv2.CMP_GT)

    if "green" in colours:
        out |= over(g, r, 15) & cv2.compare(g, b, cv2.CMP_GT)
    if "blue" in colours:
        out |= over(b, r, 40) & over(g, r, 5)
    if "black" in colours:
        out |= cv2.compare(cv2.max(cv2.max(r, g), b), 60, cv2.CMP_LT)
    if "red" in colours:
        # b < g + 10  <=>  not (b - g >= 10)
        out |= over(r, g, 50) & cv2.compare(cv2.subtract(b, g), 10, cv2.CMP_LT) & cv2.compare(r, 235, cv2.CMP_LT)
    return out.astype(bool)
    return out


def _pixel_area(contour) -> float:
    """Pixel count enclosed by a cv2 contour (its polygon area runs through pixel centres: add half the
    perimeter and the corners back)."""
    import cv2

    return cv2.contourArea(contour) + cv2.arcLength(contour, True) / 2 + 1


def clean_components(mask: np.ndarray, min_component_px: float, max_hole_px: float) -> np.ndarray:
    """Drop 8-connected tissue pieces under ``min_component_px`` pixels, then fill holes (4-connected
    background enclosed by kept tissue) under ``max_hole_px`` pixels.

    One ``findContours`` pass (outer boundaries and their holes) and a few filled polygons: a few ms
    per megapixel, where labelling every pixel and looking the labels up costs several times that.
    """
    import cv2

    out = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, hierarchy = cv2.findContours(out, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return out.view(bool)
    hierarchy = hierarchy[0]
    drop, fill = [], []
    for i, (_, _, child, parent) in enumerate(hierarchy):
        if parent != -1:
            continue
        if min_component_px and _pixel_area(contours[i]) < min_component_px:
            drop.append(contours[i])
            continue
        j = child
        while j != -1:
            # a hole's contour runs along the tissue pixels around it: its polygon area minus half the
            # perimeter is the background pixel count inside
            if max_hole_px and cv2.contourArea(contours[j]) - cv2.arcLength(contours[j], True) / 2 + 1 < max_hole_px:
                fill.append(contours[j])
            j = hierarchy[j][0]
    if drop:
        cv2.drawContours(out, drop, -1, 0, thickness=cv2.FILLED)
    if fill:
        cv2.drawContours(out, fill, -1, 1, thickness=cv2.FILLED)
    return out.view(bool)


def tissue_mask(
    rgb: np.ndarray,
    method: str,
    mpp: float,
    white_threshold: float | None = None,
    reject_pen=(),
    min_component_mm2: float = 0.0,
    fill_holes_mm2: float = 0.0,
) -> np.ndarray:
    """Boolean tissue mask for ``rgb`` (H x W x 3 uint8) whose pixels are ``mpp`` microns wide."""
    import cv2

    rgb = np.ascontiguousarray(rgb[..., :3])
    gray = _gray(rgb)
    m = masker(method, mpp)
    mask = np.asarray(m.fit_transform(rgb[None])[0], dtype=bool)
    mask8 = mask.view(np.uint8)
    if mask.any() and not mask.all():
        fg = cv2.mean(gray, mask=mask8)[0]
        bg = cv2.mean(gray, mask=cv2.compare(mask8, 0, cv2.CMP_EQ))[0]
        if bg - fg < MIN_CONTRAST:
            mask[:] = False  # a blank slide: the threshold only split the background's noise
    if white_threshold is not None and mask.any():
        r, g, b = cv2.split(rgb)
        glass = cv2.compare(cv2.min(cv2.min(r, g), b), float(white_threshold), cv2.CMP_GT)
        mask &= glass == 0
    colours = tuple(reject_pen or ())
    if colours and mask.any():
        ink = pen_mask(rgb, colours)
        if ink.any():  # ink edges blend into the glass and tissue: grow by one mask pixel
            ink = cv2.dilate(ink.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
            mask &= ~ink
    px_mm2 = (mpp / 1000.0) ** 2
    if (min_component_mm2 or fill_holes_mm2) and mask.any():
        mask = clean_components(mask, min_component_mm2 / px_mm2, fill_holes_mm2 / px_mm2)
    return mask


def tile_fractions(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, size: float, scale: float) -> np.ndarray:
    """Fraction of tissue under each tile, from an integral image of ``mask``.

    ``xs``/``ys``: level-0 top-left corners; ``size``: tile edge at level 0; ``scale``: mask pixels
    per level-0 pixel. Tiles are measured on the mask pixels they overlap (rounded outwards).
    """
    import cv2

    integral = (
        cv2.integral(mask.astype(np.uint8), sdepth=cv2.CV_32S)
        if mask.size < 2**31
        else np.pad(mask.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    )
    h, w = mask.shape
    x0 = np.clip(np.floor(xs * scale).astype(np.int64), 0, w)
    y0 = np.clip(np.floor(ys * scale).astype(np.int64), 0, h)
    x1 = np.clip(np.ceil((xs + size) * scale).astype(np.int64), 0, w)
    y1 = np.clip(np.ceil((ys + size) * scale).astype(np.int64), 0, h)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    total = (integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]).astype(np.float64)
    return total / area


def mask_contours(mask: np.ndarray, scale_x: float, scale_y: float, simplify_px: float = 1.0) -> list[list[np.ndarray]]:
    """Tissue outlines as polygons with holes, in level-0 pixels.

    Returns one list per tissue component: ``[exterior, hole, hole, ...]``, each an (N, 2) float array
    of (x, y) vertices (closed: first == last). ``scale_*``: level-0 pixels per mask pixel.
    """
    import cv2

    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    polys: list[list[np.ndarray]] = []

    def ring(c):
        if simplify_px > 0:
            c = cv2.approxPolyDP(c, simplify_px, True)
        pts = c.reshape(-1, 2).astype(np.float64)
        if len(pts) < 3:
            return None
        pts = pts * [scale_x, scale_y]
        return np.vstack([pts, pts[:1]])

    for i, (_nxt, _prev, child, parent) in enumerate(hierarchy):
        if parent != -1:
            continue  # holes are added to their parent
        ext = ring(contours[i])
        if ext is None:
            continue
        rings = [ext]
        j = child
        while j != -1:
            hole = ring(contours[j])
            if hole is not None:
                rings.append(hole)
            j = hierarchy[j][0]
        polys.append(rings)
    return polys
