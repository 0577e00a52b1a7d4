"""The demo's report facts, drawn from the per-class joint distribution of real TCGA-lung answers.

The packaged ``fiveflow/data/demo/report_facts.csv`` has one row per combination of the six FiVE facts seen in a
class: ``label``, the six fields of :data:`fiveflow.reports.normalize.FIELDS` (their categorical
values) and ``count``, the number of real patients of that class whose answers normalise to that
combination. It was estimated once, by ``tools/estimate_report_facts.py``, from the 300 development
TCGA-lung reports (150 LUAD, 150 LUSC) with the FiVE authors' GPT-4 answers; an empty answer counts
as all six facts unknown (``README.md`` beside it says how it was made, and a test re-estimates
it from the development copy when present).

A demo patient's six facts are one draw of a row of its class, weighted by ``count``
(:func:`draw_facts`), so the Unknown rates, the class differences and the dependence between facts
are the real answers' (e.g. STAS is unknown for ~96% of patients, and invasion facts go together).
Reading the table needs only the csv module: the Snakefile calls the demo cohort at parse time.
"""

from __future__ import annotations

import csv
import io
import os
import random
from functools import lru_cache
from pathlib import Path

from ..package_data import package_file
from ..reports.normalize import ALLOWED, FIELDS

#: the shipped table, a packaged file (fiveflow/data/demo/report_facts.csv)
FACTS_NAME = "demo/report_facts.csv"
COLUMNS = ("label", *FIELDS, "count")


def estimate_fact_table(
    answers: str | os.PathLike, label_column: str = "cancer_type", answer_column: str = "answer"
) -> list[dict]:
    """Rows (:data:`COLUMNS`) of the per-class joint fact distribution of an answers table (one answer per
    patient: ``label_column`` the class, ``answer_column`` the six ';'-joined answers), each answer normalised
    by :func:`fiveflow.reports.normalize.normalize_answer` (an empty answer: all unknown). Sorted by label,
    then descending count, then the facts."""
    from ..reports.inputs import read_table
    from ..reports.normalize import normalize_answer

    df = read_table(answers)
    missing = [c for c in (label_column, answer_column) if c not in df.columns]
    if missing:
        raise ValueError(
            f"{answers}: no column(s) {missing}; found {list(df.columns)}. Fix: name the class and "
            "answer columns (--label-column, --answer-column)"
        )
    counts: dict[tuple, int] = {}
    for label, answer in zip(df[label_column], df[answer_column]):
        labels = normalize_answer(answer if answer.strip() else None).labels
        key = (str(label), *(labels[f] for f in FIELDS))
        counts[key] = counts.get(key, 0) + 1
    rows = [dict(zip(COLUMNS, (*k, n))) for k, n in counts.items()]
    return sorted(rows, key=lambda r: (r["label"], -r["count"], *(r[f] for f in FIELDS)))


def fact_table_csv(rows: list[dict]) -> str:
    """The table as CSV text ('\\n' line ends), as shipped."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


@lru_cache(maxsize=8)
def load_fact_table(path: str | os.PathLike | None = None) -> dict[str, tuple[tuple[dict, ...], tuple[int, ...]]]:
    """label -> (fact rows, counts) of the shipped table (or ``path``); checks every value is a known category."""
    path = Path(path) if path is not None else package_file(FACTS_NAME)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"demo report facts not found: {path}. Fix: give an existing table, or leave the path out "
            f"for the packaged one (data/{FACTS_NAME})"
        ) from None
    out: dict[str, tuple[list, list]] = {}
    for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        if tuple(row) != COLUMNS:
            raise ValueError(f"{path}: line {line}: expected columns {list(COLUMNS)}, found {list(row)}")
        bad = [f for f in FIELDS if row[f] not in ALLOWED[f]]
        if bad or not row["count"].isdigit() or int(row["count"]) < 1:
            raise ValueError(
                f"{path}: line {line}: bad value(s) in {bad or ['count']}. Fix: regenerate the table "
                "with tools/estimate_report_facts.py"
            )
        facts, weights = out.setdefault(row["label"], ([], []))
        facts.append({f: row[f] for f in FIELDS})
        weights.append(int(row["count"]))
    return {label: (tuple(f), tuple(w)) for label, (f, w) in out.items()}


def draw_facts(rng: random.Random, label: str, path: str | os.PathLike | None = None) -> dict[str, str]:
    """The six facts of one patient of class ``label``: a row of that class drawn with weight ``count``."""
    table = load_fact_table(path)
    if label not in table:
        raise ValueError(f"demo report facts: no rows for class {label!r} (classes: {sorted(table)})")
    facts, weights = table[label]
    return dict(rng.choices(facts, weights=weights)[0])
