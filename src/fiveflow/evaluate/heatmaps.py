"""Heatmaps of one method's stored attention: one PNG per test slide and a montage for the report.

The only slide access is the thumbnail (:func:`fiveflow.slides.tiling.read_thumbnail`, longest edge
``tiling.thumbnail_size``); tile positions, slide size, tile size, label and P(positive) come from the
attention files that training wrote (:func:`fiveflow.evaluate.attention.save_run_attention`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from .attention import attention_grid, is_flat, load_attention, overlay, render_heatmap
from .figures import pyplot, save_figure

log = logging.getLogger(__name__)

#: montage panels per row
MONTAGE_COLS = 4


def slide_thumbnail(slide_path: str | Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """``(RGB thumbnail [H, W, 3] uint8 with longest edge size, level-0 (W0, H0))`` of a slide file."""
    from ..slides.reader import open_slide, slide_info
    from ..slides.tiling import read_thumbnail

    slide = open_slide(slide_path)
    try:
        info = slide_info(slide, slide_path, fallback=1.0)  # mpp is irrelevant to a thumbnail
        thumb = read_thumbnail(slide, slide_path, info, int(size))
    finally:
        slide.close()
    return thumb, (int(info.width), int(info.height))


def heatmap_title(meta: dict, positive: str | None = None) -> str:
    """``slide  true LABEL  P(positive)=0.87  method  k-shot (run r)``, plus ``(tile evidence)`` for FiVE's
    evidence scores (:meth:`FiVEModel.instance_evidence`)."""
    shots = int(meta.get("shots", 0) or 0)
    parts = [str(meta["slide_id"])]
    if meta.get("label") is not None:
        parts.append(f"true {meta['label']}")
    if meta.get("prob") is not None:
        parts.append(f"P({positive or 'positive'})={float(meta['prob']):.2f}")
    parts.append(str(meta.get("method", "")))
    parts.append(f"{shots}-shot run {int(meta.get('run', 0) or 0)}" if shots else "zero-shot")
    if meta.get("kind") == "instance_evidence":
        parts.append("(tile evidence)")
    if meta.get("flat"):
        parts.append("FLAT: all tiles scored the same")
    return "  ".join(parts)


def slide_heatmap(
    attention_file: str | Path, slide_path: str | Path, thumbnail_size: int = 1024, normalise: str = "rank"
) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(thumbnail, grid [H, W] in thumbnail px, attention metadata)`` for one stored attention file."""
    coords, attention, meta = load_attention(attention_file)
    thumb, slide_wh = slide_thumbnail(slide_path, thumbnail_size)
    stored = tuple(int(v) for v in meta.get("slide_wh") or ())
    if stored and stored != slide_wh:
        raise ValueError(
            f"{attention_file}: attention of a {stored[0]}x{stored[1]} slide, but {slide_path} is "
            f"{slide_wh[0]}x{slide_wh[1]}. Fix: point at the slide the bag was made from."
        )
    if meta.get("tile_size_level0") is None:
        raise ValueError(
            f"{attention_file}: no tile_size_level0 in its metadata. Fix: re-run the training rule "
            "that wrote it (fiveflow writes it from the bag attributes)."
        )
    grid = attention_grid(
        coords, attention, float(meta["tile_size_level0"]), slide_wh, (thumb.shape[1], thumb.shape[0]), normalise
    )
    meta = {**meta, "flat": is_flat(attention)}
    return thumb, grid, meta


def render_slide(
    attention_file: str | Path,
    slide_path: str | Path,
    out_png: str | Path,
    thumbnail_size: int = 1024,
    normalise: str = "rank",
    alpha: float = 0.5,
    positive: str | None = None,
) -> dict:
    """Write one slide's heatmap PNG (title: slide, true label, P(positive), method, shots); return its metadata."""
    thumb, grid, meta = slide_heatmap(attention_file, slide_path, thumbnail_size, normalise)
    render_heatmap(thumb, grid, out_png, alpha=alpha, title=_wrapped(heatmap_title(meta, positive), thumb.shape[1]))
    return meta


def render_method(
    attention_dir: str | Path,
    slide_paths: dict[str, str],
    out_dir: str | Path,
    montage_png: str | Path,
    thumbnail_size: int = 1024,
    max_slides: int = 12,
    normalise: str = "rank",
    alpha: float = 0.5,
    positive: str | None = None,
    logger: logging.Logger | None = None,
) -> list[Path]:
    """One PNG per attention file of ``attention_dir`` into ``out_dir`` (``{slide}.png``) and a montage of
    the first ``max_slides`` (by slide id) into ``montage_png``. A method without any attention file
    (every bag lacked its geometry) gets an empty ``out_dir`` and a montage saying so."""
    logger = logger or log
    files = sorted(Path(attention_dir).glob("*.parquet"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, panels, flat = [], [], 0
    for f in files:
        sid = f.stem
        if sid not in slide_paths:
            raise KeyError(
                f"{f}: slide {sid!r} is not in the cohort's slide list. Fix: delete {attention_dir} "
                "and re-run the rule that wrote it."
            )
        thumb, grid, meta = slide_heatmap(f, slide_paths[sid], thumbnail_size, normalise)
        flat += bool(meta["flat"])
        title = heatmap_title(meta, positive)
        written.append(
            render_heatmap(thumb, grid, out_dir / f"{sid}.png", alpha=alpha, title=_wrapped(title, thumb.shape[1]))
        )
        if len(panels) < max_slides:
            panels.append((overlay(thumb, grid, alpha), title))
    logger.info("%s: %d heatmaps -> %s", attention_dir, len(written), out_dir)
    if flat:
        logger.warning(
            "%s: %d of %d slides have flat scores (every tile the same): their heatmaps show no "
            "signal (e.g. a MIL model whose attention collapsed to uniform; try another run or shot "
            "count via heatmaps.shots)",
            attention_dir,
            flat,
            len(written),
        )
    write_heatmap_montage(panels, montage_png, Path(attention_dir).name)
    return written


# A montage panel is 3.6 in wide: about 40 characters of a 7-pt title fit; longer titles overlap the neighbours'.
MONTAGE_TITLE_CHARS = 40


def wrap_title(title: str, max_chars: int) -> str:
    """The title's parts (separated by two spaces) on as few lines as keep each within ``max_chars``
    (a part longer than that gets its own line)."""
    lines: list[str] = []
    for part in title.split("  "):
        if lines and len(lines[-1]) + 2 + len(part) <= max_chars:
            lines[-1] += "  " + part
        else:
            lines.append(part)
    return "\n".join(lines)


def _wrapped(title: str, width_px: int) -> str:
    """The title on two lines (before ``P(``) when the image is too narrow for one (~6 px a character)."""
    return title.replace("  P(", "\nP(") if len(title) * 6 > width_px + 90 else title


def write_heatmap_montage(panels: list[tuple[np.ndarray, str]], out_png: str | Path, name: str = "") -> Path:
    """Grid of ``(overlay image, title)`` panels, ``MONTAGE_COLS`` per row, with one colour bar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    plt = pyplot()
    if not panels:
        fig = plt.figure(figsize=(6, 1.5))
        fig.text(
            0.5,
            0.5,
            f"{name}: no heatmaps (no bag had level-0 coordinates, slide and tile size)",
            ha="center",
            va="center",
            fontsize=9,
        )
        save_figure(fig, out_png)
        return Path(out_png)
    cols = min(MONTAGE_COLS, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols + 0.6, 3.2 * rows), squeeze=False)
    try:
        for ax in axes.ravel():
            ax.set_axis_off()
        for ax, (img, title) in zip(axes.ravel(), panels):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(wrap_title(title, MONTAGE_TITLE_CHARS), fontsize=7)
        fig.colorbar(
            ScalarMappable(Normalize(0.0, 1.0), cmap="jet"),
            ax=axes.ravel().tolist(),
            shrink=0.6,
            label="tile score (normalised within slide)",
        )
    except BaseException:
        plt.close(fig)
        raise
    save_figure(fig, out_png)
    return Path(out_png)
