"""Fix the benchmark's difficulty by a rule stated before any method comparison (issue 18).

The rule: walk the LADDER below, easiest level first, on config/benchmark.yaml's cohort, split and draws,
training ONLY the mean-pool baseline; the benchmark uses the first level whose mean-pool accuracy at 8 shots
(mean over the draws) lies in [0.70, 0.85]. If the ladder steps over the band (one level above 0.85, the next
below 0.70), the level closer to 0.775 is used. FiVE and the other methods play no part, and the level is not
changed after seeing their numbers.

Each level renders, tiles and embeds every slide in-process (the package's own write_demo_slide, tile_slide,
embed_slide with the benchmark's tiling and encoder; no Snakemake job overhead), splits them with make_split
and make_fewshot_draws, and runs the mean-pool baseline through run_baseline: the workflow's code path.

Usage: .venv/bin/python benchmarks/calibrate_difficulty.py [--workers 2] [--levels 0 1 2 ...] [--keep DIR]
Prints one line per level and ``RESULT level=... overlap=... stain_jitter=... meanpool_acc_8=...``.

Measured (2026-12-04, 2 cores, 120 slides of seed 1, 30 test slides, 8 shots x 5 draws):
  level 0 (the demo's setting): 0.9400 (draws 0.933 0.967 0.933 0.900 0.967), 282 s
  level 1 (overlap 0-0.2, stain_jitter 1.5): 0.7533 (draws 0.700 0.733 0.767 0.800 0.767), 232 s  -> in band: used
  (an earlier ladder that raised normal_lung instead of overlap was stopped after its level 0, the same setting:
  raising the normal-lung share barely changes the tiles, see LADDER)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_run import ROOT, merge  # noqa: E402

BAND = (0.70, 0.85)
SHOTS = 8
# (overlap range, stain_jitter), easiest first; level 0 is the demo's setting. normal_lung stays the demo's
# 15-30%: raising it barely changes the tiles (alveolar lung falls out of the tissue mask; measured on a 60-80%
# layout: median tile 92% tumour), so the ladder moves the classes' morphologies and the stain instead.
LADDER = [((0.0, 0.0), 1.0), ((0.0, 0.2), 1.5), ((0.1, 0.3), 2.0), ((0.2, 0.4), 2.0), ((0.3, 0.5), 2.5)]


def _one_slide(job):
    import torch

    from fiveflow.cohort.demo import write_demo_slide
    from fiveflow.embed.encoders import build_encoder
    from fiveflow.embed.extract import embed_slide
    from fiveflow.slides.tiling import tile_slide

    case, out, demo, difficulty, tiling, emb = job
    torch.set_num_threads(1)
    slide = out / f"{case.slide_id}.tif"
    write_demo_slide(case, slide, int(demo["width"]), int(demo["height"]), float(demo["mpp"]), difficulty=difficulty)
    meta = tile_slide(slide, case.slide_id, tiling, out / f"{case.slide_id}.parquet")
    if meta.status != "ok":
        slide.unlink()
        return case.slide_id, None
    enc = build_encoder(emb["encoder"], emb["weights"], int(emb["seed"]))
    embed_slide(slide, out / f"{case.slide_id}.parquet", enc, out / f"{case.slide_id}.h5", progress=False, device="cpu")
    slide.unlink()  # only the bag is needed
    return case.slide_id, str(out / f"{case.slide_id}.h5")


def level_accuracy(cfg: dict, difficulty: dict, out: Path, workers: int) -> tuple[float, list[float], int]:
    import pandas as pd

    from fiveflow.baselines import run_baseline
    from fiveflow.cohort.demo import demo_cases
    from fiveflow.evaluate.metrics import per_run_metrics
    from fiveflow.train.splits import make_fewshot_draws, make_split

    demo = cfg["cohort"]["demo"]
    cases = demo_cases(int(demo["n_slides"]), int(demo["seed"]))
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(c, out, demo, difficulty, cfg["tiling"], cfg["embedding"]) for c in cases]
    with mp.get_context("spawn").Pool(workers) as pool:
        bags = dict(r for r in pool.imap_unordered(_one_slide, jobs) if r[1])
    samples = pd.DataFrame(
        [{"slide_id": c.slide_id, "patient_id": c.patient_id, "label": c.label} for c in cases if c.slide_id in bags]
    )
    split = make_split(samples, float(cfg["split"]["test_fraction"]), int(cfg["split"]["seed"]), out / "split.csv")
    fs = cfg["fewshot"]
    make_fewshot_draws(split, [SHOTS], int(fs["runs"]), int(fs["seed"]), out / "draws.csv")
    pred = run_baseline("meanpool", out / "split.csv", out / "draws.csv", bags, cfg, SHOTS, None, threads=workers)
    accs = per_run_metrics(pred, [c["name"] for c in cfg["classes"]])["acc"].tolist()
    return float(sum(accs) / len(accs)), accs, int((split["split"] == "test").sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--levels", type=int, nargs="*", default=list(range(len(LADDER))))
    ap.add_argument("--keep", help="keep the bags of each level under this folder")
    args = ap.parse_args()
    cfg = merge(
        yaml.safe_load((ROOT / "config.yaml").read_text()),
        yaml.safe_load((ROOT / "config" / "benchmark.yaml").read_text()),
    )
    del cfg["cohort"]["demo"]["difficulty"]  # the ladder sets it
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fiveflow-calib-"))
    measured = []
    try:
        for level in args.levels:
            overlap, jitter = LADDER[level]
            difficulty = {"overlap": list(overlap), "stain_jitter": jitter}
            t0 = time.perf_counter()
            acc, accs, n_test = level_accuracy(cfg, difficulty, base / f"level{level}", args.workers)
            measured.append((level, acc))
            print(
                f"level {level}: overlap={list(overlap)} stain_jitter={jitter}: meanpool {SHOTS}-shot acc "
                f"{acc:.4f} (draws {[round(a, 3) for a in accs]}, {n_test} test slides, "
                f"{time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
            if acc <= BAND[1]:  # in the band, or stepped over it: harder levels only go lower
                break
        inside = [m for m in measured if BAND[0] <= m[1] <= BAND[1]]
        chosen = inside[0] if inside else min(measured, key=lambda m: abs(m[1] - sum(BAND) / 2))
        overlap, jitter = LADDER[chosen[0]]
        print(
            f"RESULT level={chosen[0]} overlap={list(overlap)} stain_jitter={jitter} "
            f"meanpool_acc_{SHOTS}={chosen[1]:.4f} in_band={int(bool(inside))}"
        )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
