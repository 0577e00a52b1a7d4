"""Run the full demo workflow in a scratch folder; measure wall time and peak memory of the whole
process tree (Snakemake plus every job running at once), then a second, no-op invocation.

Usage: .venv/bin/python benchmarks/demo_run.py [--cores 2] [--keep DIR]
Last line: RESULT wall_s=... peak_rss_gb=... noop_s=... fewshot_acc_max_shots=...
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_workflow(work: Path, overlays: list[Path] = (), cores: int = 2) -> dict:
    """Run the workflow (config.yaml + ``overlays``) with results under ``work``; then a dry run.
    Returns wall_s, peak tree RSS, noop_s and whether the dry run had nothing to do."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for overlay in overlays:  # Snakemake merges --configfile files into the config the same way, key by key
        cfg = merge(cfg, yaml.safe_load(Path(overlay).read_text()))
    cfg["results_dir"] = str(work / "results")
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [
        str(ROOT / "tools" / "snakemake.sh"),
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(work / "config.yaml"),
        "--cores",
        str(cores),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=open(work / "run.log", "w"), stderr=subprocess.STDOUT)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(ps))
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"workflow run failed (see {work / 'run.log'})")
    t1 = time.perf_counter()
    dry = subprocess.run(cmd + ["-n"], capture_output=True, text=True)
    noop = time.perf_counter() - t1
    return {
        "wall_s": wall,
        "peak_rss_gb": peak / 2**30,
        "noop_s": noop,
        "nothing_to_do": "Nothing to be done" in dry.stdout + dry.stderr,
    }


def merge(base: dict, over: dict) -> dict:
    """``over`` on ``base``: nested dicts merged key by key, anything else replaced (as Snakemake's --configfile)."""
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", help="run in this folder and keep it (default: a temp folder, removed)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fiveflow-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    run = run_workflow(work, cores=args.cores)
    table = pd.read_csv(work / "results" / "tables" / "fewshot.csv")
    five = table[table["method"] == "FiVE"].sort_values("shots")
    print(table.to_string(index=False))
    acc = float(five["acc_mean"].iloc[-1])
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"RESULT wall_s={run['wall_s']:.1f} peak_rss_gb={run['peak_rss_gb']:.2f} noop_s={run['noop_s']:.1f} "
        f"nothing_to_do={int(run['nothing_to_do'])} fewshot_acc_max_shots={acc:.4f}"
    )


if __name__ == "__main__":
    main()
