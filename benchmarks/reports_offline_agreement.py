"""Offline rule-based report extractor vs. GPT-4's answers on 300 real TCGA lung reports.

Both sides are reduced to the categorical fields (fiveflow.reports.normalize); agreement is the
fraction of reports (those with a GPT-4 answer) where the two give the same value, "unknown"
included. Baseline: always predicting the field's most common GPT-4 value. Also reports the
extractor's throughput.

Usage: .venv/bin/python benchmarks/reports_offline_agreement.py [--show FIELD]
Last line: RESULT diff_agree=... vasc_agree=... pleural_agree=... margins_agree=... (and more)
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import pandas as pd

from fiveflow.reports import offline
from fiveflow.reports.normalize import FIELDS, normalize_answer

ROOT = Path(__file__).resolve().parents[1]
DEV_CSV = ROOT.parent / "shared" / "data" / "reports" / "tcga_lung_reports_dev.csv"
SHORT = {"differentiation": "diff", "stas": "stas", "vascular_invasion": "vasc", "pleural_invasion": "pleural",
         "adjacent_invasion": "adjacent", "margins": "margins"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=DEV_CSV, help="reports CSV with `text` and GPT-4 `answer` columns")
    ap.add_argument("--show", choices=FIELDS, help="print the disagreements for one field")
    args = ap.parse_args()
    if not args.csv.is_file():
        sys.exit(f"reports CSV not found: {args.csv} (the real data lives in ../shared/data)")
    df = pd.read_csv(args.csv)
    df = df[df["answer"].notna() & df["answer"].astype(str).str.strip().ne("")].reset_index(drop=True)

    t0 = time.perf_counter()
    ours = [offline.extract(t) for t in df["text"]]
    secs = time.perf_counter() - t0
    gpt = [normalize_answer(a).labels for a in df["answer"]]

    n = len(df)
    result: dict[str, float] = {}
    print(f"{n} reports with a GPT-4 answer ({args.csv.name}); offline extractor {offline.MODEL_NAME}")
    print(f"{'field':18s} {'agree':>6s} {'base':>6s} {'both_known':>10s} {'agree|known':>11s}")
    for f in FIELDS:
        pairs = [(g[f], o.labels[f]) for g, o in zip(gpt, ours)]
        agree = sum(a == b for a, b in pairs) / n
        majority = collections.Counter(a for a, _ in pairs).most_common(1)[0][0]
        base = sum(a == majority for a, _ in pairs) / n
        known = [(a, b) for a, b in pairs if a != "unknown" and b != "unknown"]
        agree_known = sum(a == b for a, b in known) / len(known) if known else float("nan")
        print(f"{f:18s} {agree:6.3f} {base:6.3f} {len(known):10d} {agree_known:11.3f}")
        result[f"{SHORT[f]}_agree"] = agree
        result[f"{SHORT[f]}_base"] = base
        if args.show == f:
            for i, (a, b) in enumerate(pairs):
                if a != b:
                    phrase = normalize_answer(df["answer"][i]).phrases[FIELDS.index(f)]
                    print(f"   {df['patient_id'][i]}: gpt={a} ours={b} | {phrase[:100]}")
    rate = n / secs if secs > 0 else float("inf")
    keys = ["diff_agree", "vasc_agree", "pleural_agree", "margins_agree", "stas_agree", "adjacent_agree",
            "diff_base", "vasc_base", "pleural_base", "margins_base"]
    print("RESULT " + " ".join(f"{k}={result[k]:.3f}" for k in keys) + f" reports_per_s={rate:.1f} n={n}")


if __name__ == "__main__":
    main()
