"""Attention heatmaps over slide thumbnails, from stored attention and tile coordinates only.

A MIL model's per-tile attention (``predict_mil`` returns one array per bag, aligned with the bag's
rows, i.e. with ``coords/{slide}.parquet``) is saved once per (method, slide) with
:func:`save_attention`; :func:`attention_grid` paints it onto the thumbnail's pixel grid and
:func:`render_heatmap` overlays it on the slide thumbnail. Nothing here needs the model again.

Geometry: ``coords`` are level-0 top-left corners, a tile covers ``tile_size_level0`` level-0 px
(``patch_size_level0`` in the tiling metadata and bag attrs), and the thumbnail of a
``slide_wh = (W0, H0)`` slide is ``thumb_wh = (W, H)`` px, scaled independently along each axis
(``W / W0``, ``H / H0``), as the QC thumbnails are (``read_thumbnail``: longest edge = ``size``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path
from .figures import pyplot, save_figure

ATTENTION_META_KEY = b"fiveflow_attention"


# Scores whose spread is below this fraction of their magnitude carry no signal (float32 round-off):
# e.g. a DSMIL whose query layer collapsed gives exactly 1/N to every tile.
FLAT_RTOL = 1e-5


def is_flat(attention: np.ndarray) -> bool:
    """True when the scores are all equal up to round-off (``FLAT_RTOL`` of their magnitude): rank
    normalisation would otherwise paint that noise as a map."""
    a = np.asarray(attention, dtype=np.float64).ravel()
    if a.size == 0:
        return True
    lo, hi = float(a.min()), float(a.max())
    return hi - lo <= FLAT_RTOL * max(abs(hi), abs(lo))


def normalise_attention(attention: np.ndarray, method: str = "rank") -> np.ndarray:
    """Attention scaled to [0, 1]: ``rank`` (percentile of each score among the slide's tiles, ties
    averaged, as CLAM's heatmaps do) or ``minmax``. A constant attention map (:func:`is_flat`: equal
    up to round-off) gives 0.5 everywhere."""
    a = np.asarray(attention, dtype=np.float64).ravel()
    if a.size == 0:
        return a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError("attention contains NaN or inf")
    lo, hi = a.min(), a.max()
    if is_flat(a):
        return np.full(a.shape, 0.5, dtype=np.float32)
    if method == "rank":
        from scipy.stats import rankdata

        return ((rankdata(a, method="average") - 1.0) / (a.size - 1)).astype(np.float32)
    if method == "minmax":
        return ((a - lo) / (hi - lo)).astype(np.float32)
    raise ValueError(f"normalise must be 'rank' or 'minmax', not {method!r}")


def tile_footprints(
    coords: np.ndarray, tile_size_level0: float, slide_wh: tuple[int, int], thumb_wh: tuple[int, int]
) -> np.ndarray:
    """``[N, 4]`` int64 ``x0, y0, x1, y1`` (end-exclusive) of each tile in thumbnail pixels, clipped
    to the thumbnail. Edges are rounded, so tiles that touch at level 0 touch in the thumbnail;
    every tile inside the slide covers at least one pixel."""
    c = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    (w0, h0), (w, h) = slide_wh, thumb_wh
    if min(w0, h0, w, h) <= 0:
        raise ValueError(f"slide_wh {slide_wh} and thumb_wh {thumb_wh} must be positive")
    sx, sy = w / w0, h / h0
    x0 = np.rint(c[:, 0] * sx).astype(np.int64)
    y0 = np.rint(c[:, 1] * sy).astype(np.int64)
    x1 = np.maximum(np.rint((c[:, 0] + tile_size_level0) * sx).astype(np.int64), x0 + 1)
    y1 = np.maximum(np.rint((c[:, 1] + tile_size_level0) * sy).astype(np.int64), y0 + 1)
    return np.stack([np.clip(x0, 0, w), np.clip(y0, 0, h), np.clip(x1, 0, w), np.clip(y1, 0, h)], axis=1)


def attention_grid(
    coords: np.ndarray,
    attention: np.ndarray,
    tile_size_level0: float,
    slide_wh: tuple[int, int],
    thumb_wh: tuple[int, int],
    normalise: str = "rank",
) -> np.ndarray:
    """``[H, W]`` float32 map in thumbnail pixels: each tile's normalised attention (see
    :func:`normalise_attention`) over its footprint, the mean where footprints overlap, NaN where
    there is no tile.

    Vectorised for any layout (regular grid, overlapping or irregular tiles): each rectangle adds
    its value and a count of one at its corners of a 2-D difference array, and two cumulative
    sums turn the corners into filled rectangles -- O(N + H * W), no loop over tiles.
    """
    coords = np.asarray(coords).reshape(-1, 2)
    attention = np.asarray(attention).ravel()
    if len(coords) != len(attention):
        raise ValueError(f"{len(coords)} coordinates but {len(attention)} attention scores")
    w, h = int(thumb_wh[0]), int(thumb_wh[1])
    if len(coords) == 0:
        return np.full((h, w), np.nan, dtype=np.float32)
    v = normalise_attention(attention, normalise).astype(np.float64)
    fp = tile_footprints(coords, tile_size_level0, slide_wh, (w, h))
    keep = (fp[:, 2] > fp[:, 0]) & (fp[:, 3] > fp[:, 1])  # tiles wholly outside the thumbnail
    x0, y0, x1, y1 = fp[keep].T
    v = v[keep]
    total = np.zeros((h + 1, w + 1), dtype=np.float64)
    count = np.zeros((h + 1, w + 1), dtype=np.int64)
    for ys, xs, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
        np.add.at(total, (ys, xs), sign * v)
        np.add.at(count, (ys, xs), sign)
    total = total.cumsum(0).cumsum(1)[:h, :w]
    count = count.cumsum(0).cumsum(1)[:h, :w]
    out = np.full((h, w), np.nan, dtype=np.float32)
    covered = count > 0
    out[covered] = np.clip(total[covered] / count[covered], 0.0, 1.0)  # clip: float cancellation
    return out


def _resize_nearest(grid: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    if grid.shape == (h, w):
        return grid
    rows = np.minimum((np.arange(h) + 0.5) * grid.shape[0] / h, grid.shape[0] - 1).astype(np.int64)
    cols = np.minimum((np.arange(w) + 0.5) * grid.shape[1] / w, grid.shape[1] - 1).astype(np.int64)
    return grid[rows[:, None], cols[None, :]]


def overlay(thumbnail_rgb: np.ndarray, grid: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """``[H, W, 3]`` uint8: the thumbnail blended with ``cmap(grid)`` where the grid is not NaN
    (the grid is resized to the thumbnail by nearest neighbour if their sizes differ)."""
    from matplotlib import colormaps

    rgb = np.asarray(thumbnail_rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb = rgb[..., :3].astype(np.float32)
    if rgb.max(initial=0) <= 1.0 and np.asarray(thumbnail_rgb).dtype.kind == "f":
        rgb = rgb * 255.0
    g = _resize_nearest(np.asarray(grid, dtype=np.float32), rgb.shape[:2])
    valid = np.isfinite(g)
    colours = colormaps[cmap](np.where(valid, g, 0.0))[..., :3].astype(np.float32) * 255.0
    out = rgb.copy()
    out[valid] = (1.0 - alpha) * rgb[valid] + alpha * colours[valid]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_heatmap(
    thumbnail_rgb: np.ndarray,
    grid: np.ndarray,
    out_png: str | Path,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write the thumbnail with the attention ``grid`` overlaid (tiles only; the rest is the plain
    thumbnail) and a colour bar, at the thumbnail's own resolution, atomically."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    img = overlay(thumbnail_rgb, grid, alpha, cmap)
    h, w = img.shape[:2]
    bar_in, title_in = 0.9, (0.2 + 0.16 * (title.count("\n") + 1) if title else 0.05)
    fig = pyplot().figure(figsize=(w / dpi + bar_in, h / dpi + title_in), dpi=dpi)
    try:
        fw, fh = fig.get_size_inches()
        ax = fig.add_axes((0.0, 0.0, (w / dpi) / fw, (h / dpi) / fh))
        ax.imshow(img, interpolation="nearest")
        ax.set_axis_off()
        cax = fig.add_axes(((w / dpi + 0.15) / fw, 0.1, 0.18 / fw, 0.8 * (h / dpi) / fh))
        bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap=cmap), cax=cax)
        bar.set_label("tile score (normalised)")
        if title:
            fig.text(0.01, 1.0 - 0.05 / fh, title, ha="left", va="top", fontsize=9)
    except BaseException:
        pyplot().close(fig)
        raise
    save_figure(fig, out_png, dpi=dpi)
    return Path(out_png)


def save_attention(
    path: str | Path, slide_id: str, coords: np.ndarray, attention: np.ndarray, method: str, **meta: Any
) -> Path:
    """A parquet of ``x, y`` (int64 level-0) and raw ``attention`` (float32) for one (method, slide),
    with key-value metadata ``fiveflow_attention`` = JSON of ``slide_id``, ``method``, ``n_tiles`` and
    any extra ``meta`` (e.g. ``tile_size_level0``, ``slide_wh``, ``fold``), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    coords = np.asarray(coords).reshape(-1, 2)
    attention = np.asarray(attention, dtype=np.float32).ravel()
    if len(coords) != len(attention):
        raise ValueError(f"{slide_id}: {len(coords)} coordinates but {len(attention)} attention scores")
    table = pa.table(
        {
            "x": pa.array(coords[:, 0].astype(np.int64)),
            "y": pa.array(coords[:, 1].astype(np.int64)),
            "attention": pa.array(attention),
        }
    )
    info = {"slide_id": str(slide_id), "method": str(method), "n_tiles": int(len(attention)), **meta}
    table = table.replace_schema_metadata({ATTENTION_META_KEY: json.dumps(info, default=_jsonable).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def load_attention(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(coords [N, 2] int64, attention [N] float32, metadata)`` as written by :func:`save_attention`."""
    import pyarrow.parquet as pq

    from ..errors import reading

    with reading(
        path, "attention parquet", "point at a file training wrote (results/attention/METHOD_SHOTS/SLIDE.parquet)"
    ):
        table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(ATTENTION_META_KEY)
    if raw is None:
        raise ValueError(f"{path}: not an attention file (no {ATTENTION_META_KEY.decode()} metadata)")
    coords = np.stack([table.column("x").to_numpy(), table.column("y").to_numpy()], axis=1).astype(np.int64)
    return coords.reshape(-1, 2), table.column("attention").to_numpy().astype(np.float32), json.loads(raw)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


# ---------------------------------------------------------------- storing a run's attention

# attention: attention weights (MIL baselines, FiVE's cross-attention); instance_logit: meanpool's probe
# on each tile; instance_cosine: MI-Zero's tile-to-class-text cosine; instance_evidence: FiVE's logit
# margin of each tile alone for the slide's predicted class.
ATTENTION_KINDS = ("attention", "instance_logit", "instance_cosine", "instance_evidence")


def bag_geometry(bag_path: str | Path) -> tuple[np.ndarray, tuple[int, int], float] | None:
    """``(coords [N, 2] level-0, slide_wh, tile_size_level0)`` of a feature bag, or None when the bag
    lacks what a heatmap needs (no ``coords``, or no ``slide_width``/``slide_height``/``patch_size_level0``
    attributes, as bags imported from other tools may)."""
    import h5py

    from ..embed.bags import COORDS, COORDS_KIND, COORDS_ROW_INDEX
    from ..errors import reading

    with reading(bag_path, "HDF5 feature bag", "delete it and embed (or import) that slide again"):
        fh = h5py.File(bag_path, "r")
    with fh:
        if COORDS not in fh:
            return None
        attrs = dict(fh.attrs)
        cattrs = dict(fh[COORDS].attrs)
        if str(cattrs.get(COORDS_KIND, attrs.get(COORDS_KIND, ""))) == COORDS_ROW_INDEX:
            return None
        coords = np.asarray(fh[COORDS][()])
    tile = attrs.get("patch_size_level0", cattrs.get("patch_size_level0"))
    w, h = attrs.get("slide_width"), attrs.get("slide_height")
    if tile is None or w is None or h is None:
        return None
    if coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    return coords.reshape(-1, 2).astype(np.int64), (int(w), int(h)), float(tile)


def save_run_attention(
    attention_dir: str | Path,
    bag_paths: dict[str, str],
    slide_ids: list[str],
    attentions: list[np.ndarray],
    probs: np.ndarray,
    method: str,
    kind: str,
    logger=None,
    labels: dict[str, str] | None = None,
    **meta: Any,
) -> list[Path]:
    """Write ``attention_dir/{slide}.parquet`` (:func:`save_attention`) for each test slide of one run,
    with ``kind``, ``slide_wh``, ``tile_size_level0``, ``prob`` (P(positive)), ``label`` and ``meta``
    (``shots``, ``run``, ``seed``). A bag without the geometry a heatmap needs is logged and skipped."""
    import logging

    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}, not {kind!r}")
    if len(attentions) != len(slide_ids):
        raise ValueError(f"{method}: {len(attentions)} attention maps for {len(slide_ids)} test slides")
    logger = logger or logging.getLogger(__name__)
    out_dir = Path(attention_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for sid, att, p in zip(slide_ids, attentions, np.asarray(probs, dtype=np.float64)):
        geo = bag_geometry(bag_paths[sid])
        if geo is None:
            logger.warning(
                "%s: bag %s has no level-0 coords/slide size/tile size attributes (imported?): no %s heatmap for it",
                sid,
                bag_paths[sid],
                method,
            )
            continue
        coords, slide_wh, tile = geo
        att = np.asarray(att, dtype=np.float32).ravel()
        if len(att) != len(coords):
            raise ValueError(f"{sid}: {len(att)} attention scores but {len(coords)} rows in {bag_paths[sid]}")
        extra = {"label": labels[sid]} if labels and sid in labels else {}
        written.append(
            save_attention(
                out_dir / f"{sid}.parquet",
                sid,
                coords,
                att,
                method,
                kind=kind,
                slide_wh=list(slide_wh),
                tile_size_level0=tile,
                prob=float(p),
                **extra,
                **meta,
            )
        )
    return written
