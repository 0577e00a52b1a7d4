"""Offline rule-based report extractor vs. GPT-4's answers on 300 real TCGA lung reports.

Both sides are reduced to the categorical fields (fiveflow.reports.normalize); agreement is the
fraction of reports (those with a GPT-4 answer) where the two give the same value, "unknown"
included. Baseline: always predicting the field's most common GPT-4 value. Also reports the
extractor's throughput. Scored on all reports, then on the development and the locked part of
``fiveflow.reports.devsplit`` (patient-level, fixed): rules are developed on the development part
only; the locked part's agreement is the estimate for unseen reports, ``gap`` the difference of the
means. ``--show FIELD`` prints the development part's disagreements only.

Usage: .venv/bin/python benchmarks/reports_offline_agreement.py [--show FIELD]
Last line: RESULT diff_agree=... (all) ... diff_locked=... (locked part) ... dev_mean=... locked_mean=... gap=...
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import pandas as pd

from fiveflow.reports import offline
from fiveflow.reports.devsplit import split_development
from fiveflow.reports.normalize import FIELDS, normalize_answer

ROOT = Path(__file__).resolve().parents[1]
DEV_CSV = ROOT.parent / "shared" / "data" / "reports" / "tcga_lung_reports_dev.csv"
SHORT = {
    "differentiation": "diff",
    "stas": "stas",
    "vascular_invasion": "vasc",
    "pleural_invasion": "pleural",
    "adjacent_invasion": "adjacent",
    "margins": "margins",
}


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
    print(f"{n} reports with a GPT-4 answer ({args.csv.name}); offline extractor {offline.MODEL_NAME}")
    dev, locked = split_development(df)
    parts = {"all": df.index, "development": dev.index, "locked": locked.index}
    scores, mean = {}, {}
    for name, idx in parts.items():
        print(
            f"\n{name} part: {len(idx)} reports"
            + (" (scored only: rules are developed on the other part)" if name == "locked" else "")
        )
        print(f"{'field':18s} {'agree':>6s} {'base':>6s} {'both_known':>10s} {'agree|known':>11s}")
        scores[name] = {}
        for f in FIELDS:
            pairs = [(gpt[i][f], ours[i].labels[f]) for i in idx]
            agree = sum(a == b for a, b in pairs) / len(pairs)
            majority = collections.Counter(a for a, _ in pairs).most_common(1)[0][0]
            base = sum(a == majority for a, _ in pairs) / len(pairs)
            known = [(a, b) for a, b in pairs if a != "unknown" and b != "unknown"]
            agree_known = sum(a == b for a, b in known) / len(known) if known else float("nan")
            print(f"{f:18s} {agree:6.3f} {base:6.3f} {len(known):10d} {agree_known:11.3f}")
            scores[name][f] = (agree, base)
        mean[name] = sum(v[0] for v in scores[name].values()) / len(FIELDS)
        print(f"{'mean':18s} {mean[name]:6.3f}")
    if args.show:
        for i in df.index:
            a, b = gpt[i][args.show], ours[i].labels[args.show]
            if a != b and i in parts["development"]:  # the locked part's disagreements are not for reading
                phrase = normalize_answer(df["answer"][i]).phrases[FIELDS.index(args.show)]
                print(f"   {df['patient_id'][i]}: gpt={a} ours={b} | {phrase[:100]}")
    rate = n / secs if secs > 0 else float("inf")
    out = {f"{SHORT[f]}_agree": scores["all"][f][0] for f in FIELDS}
    out.update({f"{SHORT[f]}_base": scores["all"][f][1] for f in FIELDS[:4] + FIELDS[5:]})
    out.update({f"{SHORT[f]}_locked": scores["locked"][f][0] for f in FIELDS})
    out.update(dev_mean=mean["development"], locked_mean=mean["locked"], gap=mean["development"] - mean["locked"])
    print(
        "RESULT "
        + " ".join(f"{k}={v:.3f}" for k, v in out.items())
        + f" reports_per_s={rate:.1f} n={n} n_dev={len(dev)} n_locked={len(locked)}"
    )


if __name__ == "__main__":
    main()
