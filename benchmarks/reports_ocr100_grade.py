"""The offline extractor's differentiation against a separate LLM extraction, on 100 other TCGA lung reports.

A second check beside ``reports_offline_agreement.py``, against another labeller: 100 TCGA lung OCR reports
with no GPT-4 FiVE answers but a grade (and site, stage, ...) that another LLM pipeline extracted from the same
text (75 patients are not among the 300 development reports; 25 are, in another OCR). Only the grade is
comparable to a FiVE question. The
reference's bare Roman numerals (II, III) are read as AJCC grades; reports whose OCR text is empty are counted
apart (the reference names a grade for some of them all the same). Disagreements are printed with whether the
text contains any grade word at all, so an invented reference grade is told from a missed one.

Usage: .venv/bin/python benchmarks/reports_ocr100_grade.py [--csv PATH]
Last line: RESULT n=... agree=... agree_rate=... empty_text=... reference_without_grade_in_text=...
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from fiveflow.reports import offline
from fiveflow.reports.normalize import normalize_phrase

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT.parent / "shared" / "data" / "reports" / "tcga_lung_100_ocr.csv"
BARE_ROMAN = re.compile(r"I{1,3}|IV")
GRADE_WORD = re.compile(r"differentiat|\bgrade\b|\bG\s?[1-4X]\b|\bhigh[\s-]grade|\blow[\s-]grade", re.I)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, default=CSV, help="CSV with `ocr_text` and `grade` columns")
    args = ap.parse_args()
    if not args.csv.is_file():
        sys.exit(f"reports CSV not found: {args.csv} (the real data lives in ../shared/data)")
    df = pd.read_csv(args.csv)
    n = agree = empty = invented = 0
    for i, row in df.iterrows():
        if pd.isna(row["grade"]):
            continue
        text = "" if pd.isna(row["ocr_text"]) else str(row["ocr_text"])
        if len(text.strip()) < 50:
            empty += 1
            continue
        grade = str(row["grade"]).strip()
        # a bare Roman numeral is an AJCC grade: read as the project reads "Grade II"
        ref = normalize_phrase("differentiation", f"grade {grade}" if BARE_ROMAN.fullmatch(grade) else grade)
        ours = offline.extract(text).labels["differentiation"]
        n += 1
        if ours == ref:
            agree += 1
            continue
        in_text = bool(GRADE_WORD.search(text))
        invented += not in_text
        print(f"  row {i}: reference={ref} ({grade[:40]!r}) ours={ours}; grade words in the text: {in_text}")
    print(f"{n} reports with text and a reference grade; {empty} more with an empty OCR text")
    print(
        f"RESULT n={n} agree={agree} agree_rate={agree / max(n, 1):.3f} empty_text={empty} "
        f"reference_without_grade_in_text={invented}"
    )


if __name__ == "__main__":
    main()
