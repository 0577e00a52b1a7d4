"""Tissue masks from a low-resolution image of the slide, via tiatoolbox maskers."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np


def _tissuemask_module():
    """``tiatoolbox.tools.tissuemask`` without running ``tiatoolbox/tools/__init__``.

    That ``__init__`` imports registration and graph tools (umap, SAM, torchvision): ~9 s per
    process, paid by every tiling job. The maskers need none of it, so when the package is not
    imported yet we register a bare ``tiatoolbox.tools`` package object (same search path) and import
    only the submodule (~3 s). Falls back to the plain import if anything about that fails.
    """
    if "tiatoolbox.tools" not in sys.modules:
        try:
            spec = importlib.util.find_spec("tiatoolbox")
            pkg = types.ModuleType("tiatoolbox.tools")
            pkg.__path__ = [f"{spec.submodule_search_locations[0]}/tools"]
            pkg.__package__ = "tiatoolbox.tools"
            sys.modules["tiatoolbox.tools"] = pkg
            return importlib.import_module("tiatoolbox.tools.tissuemask")
        except Exception:  # pragma: no cover - depends on tiatoolbox's layout
            sys.modules.pop("tiatoolbox.tools", None)
    from tiatoolbox.tools import tissuemask

    return tissuemask


def tissue_mask(rgb: np.ndarray, method: str, mpp: float) -> np.ndarray:
    """Boolean tissue mask for ``rgb`` (H x W x 3 uint8) whose pixels are ``mpp`` microns wide."""
    tissuemask = _tissuemask_module()
    if method == "otsu":
        masker = tissuemask.OtsuTissueMasker()
    elif method == "morphological":
        masker = tissuemask.MorphologicalMasker(mpp=mpp)
    else:  # the config schema already restricts this
        raise ValueError(f"unknown tissue mask method {method!r}: use otsu or morphological")
    mask = masker.fit_transform([rgb])[0]
    return np.asarray(mask, dtype=bool)


def tile_fractions(mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, size: float, scale: float) -> np.ndarray:
    """Fraction of tissue under each tile, from an integral image of ``mask``.

    ``xs``/``ys``: level-0 top-left corners; ``size``: tile edge at level 0; ``scale``: mask pixels
    per level-0 pixel.
    """
    integral = np.pad(mask.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    h, w = mask.shape
    x0 = np.clip(np.floor(xs * scale).astype(int), 0, w)
    y0 = np.clip(np.floor(ys * scale).astype(int), 0, h)
    x1 = np.clip(np.ceil((xs + size) * scale).astype(int), 0, w)
    y1 = np.clip(np.ceil((ys + size) * scale).astype(int), 0, h)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return total / area
