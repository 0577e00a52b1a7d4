"""Time `snakemake -n` for the full TCGA-lung DAG (config/tcga_lung.yaml, 1,053 slides) against the demo's.

Usage: .venv/bin/python benchmarks/bench_dag.py
Prints the jobs per rule and `RESULT tcga_dag_s=... demo_dag_s=... ratio=... tcga_jobs=...` (wall seconds
of the whole dry run, Python start-up included; issue 8 asks for under 60 s). The manifests ship in resources/tcga_lung/.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*args: str) -> tuple[float, dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = subprocess.run(
            ["bash", "tools/snakemake.sh", "-n", "--quiet", "rules", *args, "--config", f"results_dir={tmp}/results"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - t0
    if out.returncode:
        sys.exit(out.stdout[-2000:] + out.stderr[-2000:])
    text = out.stdout + out.stderr
    return seconds, {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", text, re.M)}


def main() -> None:
    demo_s, _ = dry_run()
    tcga_s, counts = dry_run("--configfile", "config/tcga_lung.yaml")
    for rule, n in counts.items():
        print(f"{rule:20s} {n}")
    print(
        f"RESULT tcga_dag_s={tcga_s:.1f} demo_dag_s={demo_s:.1f} ratio={tcga_s / demo_s:.2f} "
        f"tcga_jobs={counts.get('total', 0)}"
    )


if __name__ == "__main__":
    main()
