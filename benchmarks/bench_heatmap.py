"""Attention heatmap speed: ``attention_grid`` + ``render_heatmap`` for one realistic slide.

Synthetic case: a 100000 x 80000 level-0 px slide, 20000 tiles of 512 level-0 px on a regular
grid (a random tissue-like blob of the 195 x 156 grid), attention from a smooth field plus noise,
and a 1024-px (longest edge) thumbnail, 1024 x 819, as the QC thumbnails are sized. Timed: the
grid (rank normalisation) plus the PNG render with colour bar, median of ``--repeats`` runs after
one untimed warm-up (imports, font cache). Issue 7 target: under 5 s per slide.

Second case, end to end on one real demo slide (``--demo-slide``, on by default): a demo slide is
generated once (``cohort.demo`` defaults: 6144 x 4608 px at 0.5 mpp, untimed), its tile grid is
planned at the shipped tiling (224 px at 1.0 mpp = 448 level-0 px, the tiles inside the slide),
and random attention is stored with ``save_attention``; timed is what the ``heatmaps`` rule does per
slide: load the attention file, read the 1024-px thumbnail from the slide file, grid, render, save.

Usage: ``.venv/bin/python benchmarks/bench_heatmap.py [--repeats 3] [--out /tmp/fiveflow-bench-heatmap]``
Lines: ``RESULT heatmap_s=... grid_s=... render_s=...`` and ``RESULT demo_slide_heatmap_s=...``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from fiveflow.evaluate.attention import attention_grid, render_heatmap

SLIDE_WH, TILE, N_TILES, THUMB = (100_000, 80_000), 512, 20_000, 1024


def synthetic_case(seed: int = 0):
    rng = np.random.default_rng(seed)
    gw, gh = SLIDE_WH[0] // TILE, SLIDE_WH[1] // TILE
    gx, gy = np.meshgrid(np.arange(gw), np.arange(gh))
    # tissue: the N_TILES grid cells nearest a wobbly centre line, so the tiled area is one blob
    d = ((gx - gw / 2) / gw) ** 2 + ((gy - gh / 2) / gh) ** 2 + 0.02 * np.sin(gx / 7.0) * np.cos(gy / 5.0)
    order = np.argsort(d.ravel() + 1e-3 * rng.random(d.size))[:N_TILES]
    coords = np.stack([gx.ravel()[order], gy.ravel()[order]], 1).astype(np.int64) * TILE
    dx, dy = (coords[:, 0] - 0.6 * SLIDE_WH[0]) / 8000.0, (coords[:, 1] - 0.4 * SLIDE_WH[1]) / 6000.0
    field = np.exp(-(dx**2 + dy**2))  # one hot region
    attention = (field + 0.1 * rng.random(N_TILES)).astype(np.float32)
    attention /= attention.sum()
    scale = THUMB / max(SLIDE_WH)
    tw, th = round(SLIDE_WH[0] * scale), round(SLIDE_WH[1] * scale)
    thumb = np.full((th, tw, 3), 238, np.uint8)
    fy = (coords[:, 1] * th // SLIDE_WH[1]).clip(0, th - 1)
    fx = (coords[:, 0] * tw // SLIDE_WH[0]).clip(0, tw - 1)
    thumb[fy, fx] = (205, 130, 180)  # tissue specks: enough for the overlay to have something under it
    return coords, attention, thumb, (tw, th)


def demo_slide_case(out: Path):
    """A generated demo slide and a stored attention file for its tile grid (cached in ``out``)."""
    from fiveflow.cohort.demo import demo_cases, write_demo_slide
    from fiveflow.evaluate.attention import save_attention
    from fiveflow.slides.tiling import plan_grid

    w, h, mpp, tile = 6144, 4608, 0.5, 448
    case = demo_cases(8, 0)[0]
    slide = out / f"{case.slide_id}.tif"
    if not slide.exists():
        write_demo_slide(case, slide, w, h, mpp)
    xs, ys = plan_grid(w, h, tile)
    coords = np.stack([xs, ys], 1)  # every grid tile (plan_grid returns the flattened grid)
    att = save_attention(
        out / f"{case.slide_id}.parquet",
        case.slide_id,
        coords,
        np.random.default_rng(0).random(len(coords)),
        "abmil",
        kind="attention",
        slide_wh=[w, h],
        tile_size_level0=tile,
        prob=0.5,
        label=case.label,
        shots=8,
        run=0,
    )
    return slide, att, len(coords)


def bench_demo_slide(out: Path, repeats: int) -> float:
    from fiveflow.evaluate.heatmaps import render_slide

    slide, att, n = demo_slide_case(out)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        render_slide(att, slide, out / "demo_slide.png", thumbnail_size=THUMB)
        if i:
            times.append(time.perf_counter() - t0)
    print(
        f"demo slide {slide.name}: {n} tiles, thumbnail {THUMB} px; total s: median "
        f"{statistics.median(times):.3f}  min {min(times):.3f}"
    )
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="/tmp/fiveflow-bench-heatmap")
    ap.add_argument(
        "--no-demo-slide",
        dest="demo_slide",
        action="store_false",
        help="skip the end-to-end case on a generated demo slide",
    )
    args = ap.parse_args()
    coords, attention, thumb, thumb_wh = synthetic_case()
    out = Path(args.out) / "slide.png"
    print(f"slide {SLIDE_WH[0]}x{SLIDE_WH[1]}  tiles {len(coords)} x {TILE}px  thumbnail {thumb_wh[0]}x{thumb_wh[1]}")
    grid_t, render_t, total_t = [], [], []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        grid = attention_grid(coords, attention, TILE, SLIDE_WH, thumb_wh)
        t1 = time.perf_counter()
        render_heatmap(thumb, grid, out, title="synthetic  abmil")
        t2 = time.perf_counter()
        if i:  # first run is the warm-up
            grid_t.append(t1 - t0)
            render_t.append(t2 - t1)
            total_t.append(t2 - t0)
    print(f"covered px {int(np.isfinite(grid).sum())}  png {out} ({out.stat().st_size // 1024} KiB)")
    print(f"total s: median {statistics.median(total_t):.3f}  min {min(total_t):.3f}")
    print(
        f"RESULT heatmap_s={statistics.median(total_t):.3f} grid_s={statistics.median(grid_t):.3f} "
        f"render_s={statistics.median(render_t):.3f}"
    )
    if args.demo_slide:
        print(f"RESULT demo_slide_heatmap_s={bench_demo_slide(Path(args.out), args.repeats):.3f}")


if __name__ == "__main__":
    main()
