"""The method comparison (issue 18): run the workflow with config/benchmark.yaml from clean in a scratch folder,
print its few-shot table with 95% CIs and FiVE's paired differences, then one RESULT line.

Usage: .venv/bin/python benchmarks/bench_methods.py [--cores 2] [--keep DIR] [--shots 8]
Last line: RESULT five_acc_8=... best_baseline=... best_baseline_acc_8=... ablation_gap_8=... ablation_ci_low_8=...
ablation_ci_high_8=... ci_low_8=... ci_high_8=... max_acc_1=... max_acc_1_method=... wall_s=...

- ``five_acc_8``: FiVE's accuracy at 8 shots (mean of the draws); ``best_baseline_acc_8``: the best MIL baseline's.
- ``ablation_gap_8``: FiVE minus FiVE-classtexts (FiVE without fine-grained pre-training) at 8 shots, with its
  paired bootstrap 95% CI (``ablation_ci_*``); ``ci_low_8``/``ci_high_8``: the paired 95% CI of FiVE minus the
  best baseline at 8 shots (``tables/paired.csv``: same draws, same test slides).
- ``max_acc_1``: the highest accuracy of any method at 1 shot (below 0.95: no method at ceiling).
Optimistic rows (``fiveflow.evaluate.optimistic``, e.g. FiVE-bestepoch) are left out of every number.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_run import ROOT, run_workflow  # noqa: E402

BASELINES = ("meanpool", "abmil", "clam_sb", "dsmil", "transmil")


def summarise(tables: Path, shots: int = 8) -> dict:
    """The RESULT numbers from a finished run's ``tables/fewshot.csv`` and ``tables/paired.csv``."""
    from fiveflow.evaluate.optimistic import is_optimistic

    table = pd.read_csv(tables / "fewshot.csv")
    table = table[~table["method"].map(is_optimistic)]  # rows selected on the test set never count
    paired = pd.read_csv(tables / "paired.csv")
    at = table[table["shots"] == shots].set_index("method")
    base = at[at.index.isin(BASELINES)]
    if "FiVE" not in at.index or base.empty:
        raise SystemExit(f"{tables / 'fewshot.csv'}: no FiVE or baseline rows at {shots} shots")
    best = str(base["acc_mean"].idxmax())
    acc = paired[(paired["metric"] == "acc") & (paired["shots"] == shots) & (paired["reference"] == "FiVE")]
    acc = acc.set_index("method")
    one = table[table["shots"] == 1]
    res = {
        "five_acc": float(at.loc["FiVE", "acc_mean"]),
        "best_baseline": best,
        "best_baseline_acc": float(base.loc[best, "acc_mean"]),
        "ci_low": float(acc.loc[best, "ci_low"]),
        "ci_high": float(acc.loc[best, "ci_high"]),
        "max_acc_1": float(one["acc_mean"].max()),
        "max_acc_1_method": str(one.loc[one["acc_mean"].idxmax(), "method"]),
    }
    if "FiVE-classtexts" in acc.index:
        res.update(
            ablation_gap=float(acc.loc["FiVE-classtexts", "diff"]),
            ablation_ci_low=float(acc.loc["FiVE-classtexts", "ci_low"]),
            ablation_ci_high=float(acc.loc["FiVE-classtexts", "ci_high"]),
        )
    return res


def ci_table(tables: Path, metric: str = "acc") -> str:
    """Markdown: methods x shots, ``mean [95% CI]`` in percent (the CI: bootstrap over test slides pooled over
    the draws, ``tables/fewshot.csv``), then FiVE minus each method with its paired 95% CI (``*``: excludes 0;
    cells as :func:`fiveflow.evaluate.paired.diff_text` writes them)."""
    from fiveflow.evaluate.optimistic import is_optimistic
    from fiveflow.evaluate.paired import diff_text

    t = pd.read_csv(tables / "fewshot.csv")
    t = t[~t["method"].map(is_optimistic)]
    shots = sorted(t["shots"].unique())

    def grid(first: str, cells: dict, methods) -> list[str]:
        lines = [
            f"| {first} | " + " | ".join("zero-shot" if k == 0 else f"{k}-shot" for k in shots) + " |",
            "|---|" + "---:|" * len(shots),
        ]
        return lines + [f"| {m} | " + " | ".join(cells.get((m, k), "-") for k in shots) + " |" for m in methods]

    means = {
        (r["method"], r["shots"]): f"{100 * r[f'{metric}_mean']:.1f} [{100 * r[f'{metric}_ci_low']:.1f}, "
        f"{100 * r[f'{metric}_ci_high']:.1f}]"
        for _, r in t.iterrows()
    }
    p = pd.read_csv(tables / "paired.csv")
    p = p[(p["metric"] == metric) & (p["reference"] == "FiVE")]
    diffs = {(r["method"], r["shots"]): diff_text(r, digits=1) for _, r in p.iterrows()}
    return "\n".join(
        grid("method", means, dict.fromkeys(t["method"])) + [""] + grid("FiVE minus", diffs, dict.fromkeys(p["method"]))
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", help="run in this folder and keep it (default: a temp folder, removed)")
    ap.add_argument("--shots", type=int, default=8)
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fiveflow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    run = run_workflow(work, [ROOT / "config" / "benchmark.yaml"], cores=args.cores)
    tables = work / "results" / "tables"
    print((tables / "fewshot.md").read_text())
    print(ci_table(tables))
    res = summarise(tables, args.shots)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    k = args.shots
    print(
        f"RESULT five_acc_{k}={res['five_acc']:.4f} best_baseline={res['best_baseline']} "
        f"best_baseline_acc_{k}={res['best_baseline_acc']:.4f} "
        f"ablation_gap_{k}={res.get('ablation_gap', float('nan')):+.4f} "
        f"ablation_ci_low_{k}={res.get('ablation_ci_low', float('nan')):+.4f} "
        f"ablation_ci_high_{k}={res.get('ablation_ci_high', float('nan')):+.4f} "
        f"ci_low_{k}={res['ci_low']:+.4f} ci_high_{k}={res['ci_high']:+.4f} "
        f"max_acc_1={res['max_acc_1']:.4f} max_acc_1_method={res['max_acc_1_method']} wall_s={run['wall_s']:.1f}"
    )


if __name__ == "__main__":
    main()
