#!/usr/bin/env python
"""Estimate the demo's report-fact table (src/fiveflow/data/demo/report_facts.csv) from real answers.

    python tools/estimate_report_facts.py ANSWERS.csv [--out src/fiveflow/data/demo/report_facts.csv]

ANSWERS: a table with one row per patient, the class in `cancer_type` and the six FiVE answers in
`answer` (';'-joined), e.g. TCGA-Reports patients with the FiVE authors' GPT-4 answers. Each answer
is normalised to the six categorical facts (fiveflow.reports.normalize; an empty answer: all
unknown), and the table counts each combination per class (fiveflow.cohort.facts). Run once; the
demo generator draws from the result, a file packaged with fiveflow (the default --out, in this checkout);
src/fiveflow/data/demo/README.md records how the shipped table was made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from fiveflow.cohort.facts import FACTS_NAME, FIELDS, estimate_fact_table, fact_table_csv  # noqa: E402
from fiveflow.fileio import atomic_write_text  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("answers", help="answers table (CSV/TSV/Parquet/Excel)")
    ap.add_argument("--out", default=str(SRC / "fiveflow" / "data" / FACTS_NAME), help="(default: %(default)s)")
    ap.add_argument("--label-column", default="cancer_type")
    ap.add_argument("--answer-column", default="answer")
    args = ap.parse_args(argv)
    rows = estimate_fact_table(args.answers, args.label_column, args.answer_column)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, fact_table_csv(rows))
    for label in sorted({r["label"] for r in rows}):
        mine = [r for r in rows if r["label"] == label]
        n = sum(r["count"] for r in mine)
        unknown = {f: round(sum(r["count"] for r in mine if r[f] == "unknown") / n, 3) for f in FIELDS}
        print(f"{label}: {n} patients, {len(mine)} combinations; unknown share {unknown}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
