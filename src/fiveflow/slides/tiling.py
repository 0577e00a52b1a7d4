"""Tile a slide by physical size: a grid of ``patch_size`` px tiles at ``target_mpp``, kept where tissue is.

Writes ``coords/{slide}.parquet`` (level-0 top-left ``x``, ``y`` and ``tissue`` fraction) with the
file metadata listed in docs/CONTRACTS.md, so any encoder can reuse the same coordinates; plus, on
request, a QC thumbnail and the tissue outline as GeoJSON.

Every slide ends in one of three statuses, recorded in the coordinates file's metadata:
``ok`` (tiles found), ``no_tissue`` (readable, but nothing to tile) or ``failed`` (unusable: unreadable
file, no mpp...). ``on_error="record"`` writes a ``failed`` record with the reason instead of raising,
so one bad slide does not stop a cohort; downstream stages exclude every slide that is not ``ok``.

Kept free of pandas and torch: a tiling process imports in well under a second.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import reading
from ..fileio import atomic_path
from ..settings import defaults, with_defaults
from .reader import SlideError, SlideInfo, best_level, open_slide, read_level_region, slide_info

META_KEY = b"fiveflow"
#: what to do about a coordinates file that cannot be read
COORDS_FIX = "delete it and tile the slide again (`fiveflow tile` or the workflow)"
# method and mpp: config.yaml's (required keys, see default_tiling); the optional keys: the schema's defaults
DEFAULT_MASK = {"method": "otsu", "mpp": 8.0, **defaults("tiling.mask")}
# Level-0 pixels read per strip when a level must be reduced on the fly (bounded memory).
_STRIP_BYTES = 64 * 2**20


@dataclass
class TilingMeta:
    slide_id: str
    slide_path: str
    status: str = "failed"  # ok | no_tissue | failed
    message: str = ""  # why, when status is not ok
    slide_width: int = 0
    slide_height: int = 0
    slide_mpp: float = 0.0
    mpp_source: str = ""  # override | metadata | fallback
    vendor: str = ""
    level_count: int = 0
    target_mpp: float = 0.0
    patch_size_px: int = 0  # at target_mpp
    overlap_px: int = 0  # at target_mpp
    patch_size_level0: int = 0  # the same tile measured in level-0 pixels
    stride_level0: int = 0  # distance between neighbouring tiles in level-0 pixels
    read_level: int = 0  # pyramid level to read tiles from (closest at or above target resolution)
    read_size: int = 0  # tile edge in pixels at read_level (resize to patch_size_px)
    mask_method: str = ""
    mask_mpp: float = 0.0  # effective resolution of the mask
    mask_level: int = 0  # pyramid level the mask image was read from
    mask_factor: int = 1  # extra integer reduction applied while reading mask_level
    mask_params: dict = field(default_factory=dict)
    min_tissue: float = 0.0
    n_grid: int = 0  # grid positions inside the slide
    n_tiles: int = 0  # kept tiles
    tissue_fraction: float = 0.0  # of the slide area, from the mask
    tissue_area_mm2: float = 0.0
    fiveflow_version: str = __version__


def default_tiling() -> dict:
    """The ``tiling`` section of the shipped config.yaml (kept equal by a test), for use without a config."""
    return dict(
        target_mpp=1.0,
        patch_size=224,
        overlap=0,
        min_tissue=0.5,
        thumbnail_size=1024,
        assume_mpp=None,
        mask={**DEFAULT_MASK, "reject_pen": list(DEFAULT_MASK["reject_pen"])},
    )


def mask_settings(cfg: dict) -> dict:
    """The ``tiling.mask`` section with defaults filled in."""
    m = {**DEFAULT_MASK, **(cfg.get("mask") or {})}
    pen = m.get("reject_pen")
    if pen is True:
        pen = DEFAULT_MASK["reject_pen"]
    m["reject_pen"] = list(pen or [])
    return m


def plan_grid(width: int, height: int, size0: int, stride0: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners of a grid of ``size0`` tiles every ``stride0`` px, each fully inside the slide."""
    stride0 = stride0 or size0
    xs = np.arange(0, max(width - size0, -1) + 1, stride0, dtype=np.int64)
    ys = np.arange(0, max(height - size0, -1) + 1, stride0, dtype=np.int64)
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel(), gy.ravel()


def choose_mask_level(info: SlideInfo, mask_mpp: float) -> tuple[int, int]:
    """(pyramid level, integer reduction) giving a mask at about ``mask_mpp``, from the pyramid.

    The coarsest level not much coarser than ``mask_mpp`` (within 25%) is read; when that level is
    still much finer (a slide without a deep pyramid), it is reduced by an integer factor while
    being read in strips, so memory stays bounded.
    """
    level = 0
    for i in range(len(info.level_downsamples)):
        if info.level_mpp(i) <= mask_mpp * 1.25 and info.level_downsamples[i] >= info.level_downsamples[level]:
            level = i
    factor = max(1, int(math.floor(mask_mpp / info.level_mpp(level) + 1e-6)))
    return level, factor


def read_reduced(slide, path, info: SlideInfo, level: int, factor: int) -> np.ndarray:
    """The whole of ``level`` as RGB, box-averaged by ``factor`` (>= 1), read in bounded strips."""
    lw, lh = info.level_dimensions[level]
    ds = info.level_downsamples[level]
    if factor == 1:
        return read_level_region(slide, path, level, (0, 0), (lw, lh))
    import cv2

    ow, oh = max(1, lw // factor), max(1, lh // factor)
    out = np.empty((oh, ow, 3), np.uint8)
    rows = max(factor, (_STRIP_BYTES // max(1, lw * 4)) // factor * factor)
    for y in range(0, oh * factor, rows):
        n = min(rows, oh * factor - y)
        strip = read_level_region(slide, path, level, (0, int(round(y * ds))), (ow * factor, n))
        out[y // factor : (y + n) // factor] = cv2.resize(strip, (ow, n // factor), interpolation=cv2.INTER_AREA)
    return out


def read_thumbnail(slide, path, info: SlideInfo, size: int, have: np.ndarray | None = None) -> np.ndarray:
    """RGB thumbnail whose longest edge is ``size`` px (reusing ``have`` when it is large enough)."""
    import cv2

    scale = size / max(info.width, info.height)
    if have is None or max(have.shape[:2]) < size:
        wanted_ds = 1 / scale
        level = best_level(info.level_downsamples, wanted_ds)
        factor = max(1, int(wanted_ds / info.level_downsamples[level]))
        have = read_reduced(slide, path, info, level, factor)
    tw, th = max(1, round(info.width * scale)), max(1, round(info.height * scale))
    return cv2.resize(have, (tw, th), interpolation=cv2.INTER_AREA)


def tile_slide(
    slide_path: str | Path,
    slide_id: str,
    cfg: dict,
    out_parquet: str | Path,
    out_qc: str | Path | None = None,
    out_geojson: str | Path | None = None,
    mpp_override: float | None = None,
    on_error: str = "raise",
) -> TilingMeta:
    """Mask and tile one slide. ``cfg`` is the ``tiling`` section of the config.

    ``mpp_override`` (samples sheet ``mpp`` column) replaces the slide's metadata; ``cfg["assume_mpp"]``
    only fills in where metadata is missing. ``on_error``: ``raise`` a :class:`SlideError` (nothing is
    written), or ``record`` it as a ``failed`` slide (empty coordinates, QC card, empty GeoJSON).
    """
    meta = TilingMeta(slide_id=slide_id, slide_path=str(slide_path))
    try:
        slide = open_slide(slide_path)
    except SlideError as exc:
        return _fail(meta, exc, on_error, out_parquet, out_qc, out_geojson)
    try:
        return _tile_open_slide(slide, meta, cfg, out_parquet, out_qc, out_geojson, mpp_override)
    except SlideError as exc:
        return _fail(meta, exc, on_error, out_parquet, out_qc, out_geojson)
    finally:
        slide.close()


def _fail(meta: TilingMeta, exc: SlideError, on_error: str, out_parquet, out_qc, out_geojson) -> TilingMeta:
    if on_error != "record":
        raise exc
    meta.status, meta.message = "failed", str(exc)
    if out_qc is not None:
        from .qc import write_error_card

        write_error_card(meta, out_qc)
    if out_geojson is not None:
        write_geojson([], meta, out_geojson)
    write_coords(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32), meta, out_parquet)
    return meta


def _tile_open_slide(slide, meta: TilingMeta, cfg: dict, out_parquet, out_qc, out_geojson, mpp_override) -> TilingMeta:
    from .mask import mask_contours, tile_fractions, tissue_mask

    path = meta.slide_path
    cfg = with_defaults(cfg, "tiling")
    info = slide_info(slide, path, mpp_override, cfg["assume_mpp"])
    target_mpp = float(cfg["target_mpp"])
    patch = int(cfg["patch_size"])
    overlap = int(cfg["overlap"] or 0)
    if not 0 <= overlap < patch:
        fix = "lower `tiling.overlap`" if overlap >= patch else "set `tiling.overlap` to 0 or more"
        raise SlideError(
            f"{path}: tiling.overlap {overlap} must be >= 0 and smaller than patch_size {patch}. Fix: {fix}."
        )
    size0 = int(round(patch * target_mpp / info.mpp))
    stride0 = max(1, int(round((patch - overlap) * target_mpp / info.mpp)))
    if size0 < 1:  # finer than one level-0 pixel: the tile must cover more of the slide
        raise SlideError(
            f"{path}: a {patch} px tile at {target_mpp} mpp is {size0} level-0 px (less than one pixel of the "
            f"slide, scanned at {info.mpp:.3f} mpp). Fix: raise `tiling.target_mpp` (microns per pixel of the "
            "tiles: e.g. 0.5 for 20x, 1.0 for 10x) or `tiling.patch_size` (`fiveflow tile`: --target-mpp, "
            "--patch-px), or correct the slide's mpp if it is wrong."
        )
    if size0 > min(info.width, info.height):  # larger than the slide: the tile must cover less of it
        raise SlideError(
            f"{path}: a {patch} px tile at {target_mpp} mpp is {size0} level-0 px, "
            f"but the slide is {info.width}x{info.height} px at {info.mpp:.3f} mpp. "
            "Fix: lower `tiling.patch_size` or `tiling.target_mpp` (`fiveflow tile`: --patch-px, --target-mpp)."
        )
    mcfg = mask_settings(cfg)
    mask_mpp_wanted = max(float(mcfg["mpp"]), info.mpp)
    mask_level, factor = choose_mask_level(info, mask_mpp_wanted)
    image = read_reduced(slide, path, info, mask_level, factor)
    mask_mpp = info.level_mpp(mask_level) * factor
    mask = tissue_mask(
        image,
        mcfg["method"],
        mask_mpp,
        white_threshold=mcfg["white_threshold"],
        reject_pen=mcfg["reject_pen"],
        min_component_mm2=float(mcfg["min_component_mm2"]),
        fill_holes_mm2=float(mcfg["fill_holes_mm2"]),
    )
    xs, ys = plan_grid(info.width, info.height, size0, stride0)
    scale_x, scale_y = mask.shape[1] / info.width, mask.shape[0] / info.height
    # non-square rounding of level sizes is tiny; use the mean scale for the square tiles
    frac = tile_fractions(mask, xs, ys, size0, (scale_x + scale_y) / 2)
    keep = frac >= float(cfg["min_tissue"])
    level = best_level(info.level_downsamples, target_mpp / info.mpp)
    tissue_area = float(mask.sum()) * (mask_mpp / 1000.0) ** 2
    meta.__dict__.update(
        slide_width=info.width,
        slide_height=info.height,
        slide_mpp=info.mpp,
        mpp_source=info.mpp_source,
        vendor=info.vendor,
        level_count=len(info.level_downsamples),
        target_mpp=target_mpp,
        patch_size_px=patch,
        overlap_px=overlap,
        patch_size_level0=size0,
        stride_level0=stride0,
        read_level=level,
        read_size=int(round(size0 / info.level_downsamples[level])),
        mask_method=mcfg["method"],
        mask_mpp=mask_mpp,
        mask_level=mask_level,
        mask_factor=factor,
        mask_params={k: mcfg[k] for k in ("white_threshold", "reject_pen", "fill_holes_mm2", "min_component_mm2")},
        min_tissue=float(cfg["min_tissue"]),
        n_grid=int(len(xs)),
        n_tiles=int(keep.sum()),
        tissue_fraction=float(mask.mean()),
        tissue_area_mm2=tissue_area,
    )
    if meta.n_tiles:
        meta.status = "ok"
    elif not mask.any():
        meta.status, meta.message = (
            "no_tissue",
            (
                f"{path}: no tissue found by the {mcfg['method']} mask at {mask_mpp:.3g} mpp (blank or out-of-focus "
                "slide?). Check the QC thumbnail; if the tissue is faint, raise `tiling.mask.white_threshold` (or set "
                "it to null) or try `tiling.mask.method: morphological`."
            ),
        )
    else:
        meta.status, meta.message = (
            "no_tissue",
            (
                f"{path}: {tissue_area:.2f} mm2 of tissue, but no {patch} px tile at {target_mpp} mpp is at least "
                f"{meta.min_tissue:.0%} tissue. Fix: lower `tiling.min_tissue` or `tiling.patch_size`."
            ),
        )
    contours = None
    if out_geojson is not None:
        contours = mask_contours(mask, info.width / mask.shape[1], info.height / mask.shape[0])
        write_geojson(contours, meta, out_geojson)
    if out_qc is not None:
        from .qc import write_qc_thumbnail

        thumb = read_thumbnail(slide, path, info, int(cfg["thumbnail_size"]), have=image)
        write_qc_thumbnail(thumb, mask, xs[keep], ys[keep], meta, out_qc)
    write_coords(xs[keep], ys[keep], frac[keep].astype(np.float32), meta, out_parquet)
    return meta


def write_coords(xs: np.ndarray, ys: np.ndarray, tissue: np.ndarray, meta: TilingMeta, out_parquet: str | Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column(values, np_type, pa_type):  # zero-copy, and unlike pa.array() it does not import pandas
        arr = np.ascontiguousarray(values, dtype=np_type)
        return pa.Array.from_buffers(pa_type, len(arr), [None, pa.py_buffer(arr)])

    table = pa.Table.from_arrays(
        [column(xs, np.int64, pa.int64()), column(ys, np.int64, pa.int64()), column(tissue, np.float32, pa.float32())],
        names=["x", "y", "tissue"],
    )
    table = table.replace_schema_metadata({META_KEY: json.dumps(asdict(meta)).encode()})
    with atomic_path(out_parquet) as tmp:
        pq.write_table(table, tmp)


def write_geojson(contours, meta: TilingMeta, out: str | Path) -> None:
    """Tissue outlines as a GeoJSON FeatureCollection in level-0 pixels (File > Import objects in QuPath)."""
    features = []
    for rings in contours:
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [np.round(r, 1).tolist() for r in rings]},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tissue", "color": [0, 160, 0]},
                    "name": meta.slide_id,
                },
            }
        )
    doc = {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "slide_id": meta.slide_id,
            "status": meta.status,
            "units": "level-0 pixels",
            "mask_mpp": meta.mask_mpp,
            "fiveflow_version": meta.fiveflow_version,
        },
    }
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(doc))


def read_coords(path: str | Path):
    """Coordinates table (pandas) and its tiling metadata (a dict of :class:`TilingMeta` fields)."""
    import pyarrow.parquet as pq

    with reading(path, "coordinates parquet", COORDS_FIX):
        table = pq.read_table(path)
    return table.to_pandas(), read_meta(path, table)


def read_meta(path: str | Path, table=None) -> dict:
    """Only the tiling metadata of a coordinates file (cheap: reads the parquet footer)."""
    import pyarrow.parquet as pq

    if table is not None:
        schema = table.schema
    else:
        with reading(path, "coordinates parquet", COORDS_FIX):
            schema = pq.read_schema(path)
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{path}: no fiveflow tiling metadata; regenerate it with `fiveflow tile`.")
    md = json.loads(raw)
    # files written before statuses existed: a slide with tiles was fine
    md.setdefault("status", "ok" if md.get("n_tiles", 0) else "no_tissue")
    md.setdefault("message", "")
    return md


def expected_tiles(width: int, height: int, mpp: float, target_mpp: float, patch: int) -> int:
    size0 = round(patch * target_mpp / mpp)
    return math.floor(width / size0) * math.floor(height / size0)
