"""The cohort-wide slide QC: one table (slide, mpp, tissue area, tiles, status, message) and one montage page."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from ..fileio import atomic_path
from .tiling import read_meta

SUMMARY_COLUMNS = (
    "slide_id",
    "status",
    "message",
    "slide_mpp",
    "mpp_source",
    "tissue_area_mm2",
    "n_tiles",
    "n_grid",
    "tissue_fraction",
    "target_mpp",
    "patch_size_px",
    "overlap_px",
    "patch_size_level0",
    "read_level",
    "mask_method",
    "mask_mpp",
    "mask_level",
    "slide_width",
    "slide_height",
    "level_count",
    "vendor",
    "slide_path",
)


def tiling_summary(coords_files: list[str]) -> pd.DataFrame:
    """One row per slide from the coordinates files' metadata, failures first."""
    rows = []
    for f in coords_files:
        meta = read_meta(f)
        rows.append({k: meta.get(k) for k in SUMMARY_COLUMNS})
    df = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    order = {"failed": 0, "no_tissue": 1, "ok": 2}
    return df.sort_values(
        ["status", "slide_id"], key=lambda s: s.map(order) if s.name == "status" else s, kind="stable"
    ).reset_index(drop=True)


def usable_slides(summary_csv: str | Path) -> tuple[set[str], pd.DataFrame]:
    """Slide ids whose status is ``ok``, and the rows of the others (for the record)."""
    df = pd.read_csv(summary_csv, dtype={"slide_id": str}, keep_default_na=False)
    ok = df["status"] == "ok"
    return set(df.loc[ok, "slide_id"]), df.loc[~ok, ["slide_id", "status", "message"]]


def failure_lines(summary: pd.DataFrame) -> list[str]:
    bad = summary[summary["status"] != "ok"]
    return [f"{r.slide_id}: {r.status}: {r.message}" for r in bad.itertuples()]


def qc_notice(summary_csv: str | Path, limit: int = 10) -> str:
    """A few lines naming the slides excluded by the slide QC, or "" when there are none (or no table yet)."""
    import csv

    try:
        with open(summary_csv, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("status") != "ok"]
    except OSError:
        return ""
    if not rows:
        return ""
    lines = [f"fiveflow: {len(rows)} slide(s) excluded by the slide QC (see {summary_csv}):"]
    lines += [f"  {r['slide_id']}: {r['status']}: {r['message']}" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"  ... and {len(rows) - limit} more")
    return "\n".join(lines) + "\n"


def write_montage(
    qc_files: list[str], coords_files: list[str], out_png: str | Path, out_csv: str | Path, cell: int = 256
) -> pd.DataFrame:
    summary = tiling_summary(coords_files)
    with atomic_path(out_csv) as tmp:
        summary.to_csv(tmp, index=False)
    status = dict(zip(summary["slide_id"], summary["status"]))
    n = max(len(qc_files), 1)
    cols = min(8, n)
    rows = math.ceil(n / cols)
    page = Image.new("RGB", (cols * cell, rows * (cell + 14)), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    # slides that need a look first, then the rest in sheet order
    qc_sorted = sorted(qc_files, key=lambda f: status.get(Path(f).stem, "ok") == "ok")
    for i, f in enumerate(qc_sorted):
        img = Image.open(f).convert("RGB")
        img.thumbnail((cell, cell))
        x, y = (i % cols) * cell, (i // cols) * (cell + 14)
        page.paste(img, (x, y + 14))
        sid = Path(f).stem
        st = status.get(sid, "ok")
        bad = st != "ok"
        draw.text((x + 2, y + 1), sid + (f"  {st.upper()}" if bad else ""), fill=(200, 0, 0) if bad else (0, 0, 0))
    with atomic_path(out_png) as tmp:
        page.save(tmp, format="PNG")
    return summary
