"""Agreement between two labels tables on the six categorical FiVE fields.

Either side may be a labels Parquet/CSV/TSV (``patient_id`` + the six fields, as written by
:func:`fiveflow.reports.structure.structure_reports`) or an answers CSV/TSV (``patient_id`` or
``patient_filename`` + ``answer``, six phrases joined by ';', e.g. GPT-4's answers in the
TCGA-Reports dev file), whose answers go through :func:`fiveflow.reports.normalize.normalize_answer`.

Patients without an answer are left out of the comparison and counted (``excluded``): a labels row
whose ``flag`` says there was no answer or no usable report (``empty``, ``missing_answer``,
``empty_report``, ``no_text``, ``unreadable``), or an answers row with an empty ``answer``.
Agreement is over the patients in both tables; ``agreement_known`` over those where both sides
gave a definite (non-``unknown``) category; ``kappa`` is Cohen's kappa.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .inputs import patient_ids, read_table
from .normalize import ALLOWED, FIELDS, normalize_answer

LOG = logging.getLogger("fiveflow.reports")
NO_ANSWER_FLAGS = frozenset({"empty", "missing_answer", "empty_report", "no_text", "unreadable"})


@dataclass
class Agreement:
    """What :func:`agreement` found. Tables are plain DataFrames, ready to print or save."""

    per_field: pd.DataFrame  # field, n, agree, agreement, n_known, agree_known, agreement_known, kappa
    confusion: dict[str, pd.DataFrame]  # field -> counts, rows = pred category, columns = ref category
    disagreements: pd.DataFrame  # patient_id, field, pred, ref
    n_both: int
    only_pred: list[str] = field(default_factory=list)  # in pred only (not merely left out of ref)
    only_ref: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)  # side -> patients left out (no answer)


def read_labels(path: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """A labels table or an answers CSV -> (DataFrame(patient_id, *FIELDS), ids left out for lack of an answer).

    The first row per patient wins. Categories are compared lower-cased and stripped.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"labels file not found: {path}. Fix: give a labels parquet from "
            f"`fiveflow reports extract`, or an answers CSV"
        )
    df = read_table(path)
    ids = patient_ids(df, path, kind="labels patient")
    missing = [f for f in FIELDS if f not in df.columns]
    if not missing:
        out = pd.DataFrame(
            {"patient_id": ids.to_numpy(), **{f: df[f].astype(str).str.strip().str.lower().to_numpy() for f in FIELDS}}
        )
        no_answer = df["flag"].isin(NO_ANSWER_FLAGS).to_numpy() if "flag" in df.columns else None
    elif "answer" in df.columns:
        labels = [normalize_answer(a).labels for a in df["answer"]]
        out = pd.DataFrame({"patient_id": ids.to_numpy(), **{f: [lab[f] for lab in labels] for f in FIELDS}})
        no_answer = df["answer"].astype(str).str.strip().eq("").to_numpy()
    else:
        raise ValueError(
            f"{path}: neither a labels table (missing columns {missing}) nor an answers table "
            f"(no `answer` column); found columns: {list(df.columns)}. Fix: give the labels parquet "
            f"of `fiveflow reports extract`, or a CSV with patient_id/patient_filename and answer"
        )
    dup = out["patient_id"].duplicated().to_numpy()
    if dup.any():
        LOG.warning("%s: %d duplicate patient(s); keeping each patient's first row", path, int(dup.sum()))
    keep = ~dup
    excluded: list[str] = []
    if no_answer is not None:
        excluded = out.loc[no_answer & keep, "patient_id"].tolist()
        keep &= ~no_answer
    return out[keep].reset_index(drop=True), excluded


def _order(field_name: str, values) -> list[str]:
    known = list(ALLOWED.get(field_name, ()))
    return [v for v in known if v in set(values)] + sorted(set(values) - set(known))


def _kappa(cm: pd.DataFrame) -> float:
    n = cm.to_numpy().sum()
    if n == 0:
        return float("nan")
    cats = cm.index.union(cm.columns)
    m = cm.reindex(index=cats, columns=cats, fill_value=0).to_numpy(dtype=float)
    po = m.trace() / n
    pe = float((m.sum(1) * m.sum(0)).sum()) / n**2
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def agreement(pred, ref) -> Agreement:
    """Compare two labels tables (paths, or DataFrames with patient_id + the six fields) field by field."""
    excluded: dict[str, int] = {}
    tables, left_out = [], []
    for side, x in (("pred", pred), ("ref", ref)):
        if isinstance(x, pd.DataFrame):
            df, gone = x[["patient_id", *FIELDS]].drop_duplicates("patient_id").reset_index(drop=True), []
        else:
            df, gone = read_labels(x)
        excluded[side] = len(gone)
        tables.append(df.set_index("patient_id"))
        left_out.append(set(gone))
    p, r = tables
    both = [i for i in p.index if i in r.index]
    # A patient the other side left out (no answer) is not "only in" this side.
    only_pred = [i for i in p.index if i not in r.index and i not in left_out[1]]
    only_ref = [i for i in r.index if i not in p.index and i not in left_out[0]]
    p, r = p.loc[both], r.loc[both]
    rows, confusion, dis = [], {}, []
    for f in FIELDS:
        a, b = p[f].astype(str), r[f].astype(str)
        same = a.eq(b)
        known = a.ne("unknown") & b.ne("unknown")
        cm = pd.crosstab(a.rename("pred"), b.rename("ref"))
        cats = _order(f, set(a) | set(b))
        cm = cm.reindex(index=cats, columns=cats, fill_value=0).rename_axis(index=None, columns="pred \\ ref")
        confusion[f] = cm
        rows.append(
            {
                "field": f,
                "n": len(both),
                "agree": int(same.sum()),
                "agreement": same.mean() if both else float("nan"),
                "n_known": int(known.sum()),
                "agree_known": int((same & known).sum()),
                "agreement_known": (same & known).sum() / known.sum() if known.any() else float("nan"),
                "kappa": _kappa(cm),
            }
        )
        dis += [{"patient_id": pid, "field": f, "pred": x, "ref": y} for pid, x, y in zip(both, a, b) if x != y]
    return Agreement(
        per_field=pd.DataFrame(rows),
        confusion=confusion,
        disagreements=pd.DataFrame.from_records(dis, columns=["patient_id", "field", "pred", "ref"]),
        n_both=len(both),
        only_pred=only_pred,
        only_ref=only_ref,
        excluded=excluded,
    )


def format_agreement(res: Agreement, show: int = 20) -> str:
    """Human-readable report: counts, the per-question table, each field's confusions, up to ``show`` disagreements."""
    lines = [
        f"patients compared: {res.n_both}; only in pred: {len(res.only_pred)}; only in ref: {len(res.only_ref)}; "
        f"left out without an answer: pred {res.excluded.get('pred', 0)}, ref {res.excluded.get('ref', 0)}",
        "",
    ]
    t = res.per_field.copy()
    for c in ("agreement", "agreement_known", "kappa"):
        t[c] = t[c].map(lambda v: "-" if pd.isna(v) else f"{v:.3f}")
    lines += [t.to_string(index=False), ""]
    for f, cm in res.confusion.items():
        lines.append(f"{f}: confusions (rows: pred, columns: ref)")
        lines += ["  " + ln for ln in cm.to_string().splitlines()]
        lines.append("")
    d = res.disagreements
    if show and len(d):
        lines.append(
            f"disagreements: {len(d)} (patient, field) pair(s) over "
            f"{d['patient_id'].nunique()} patient(s); first {min(show, len(d))}:"
        )
        lines += ["  " + ln for ln in d.head(show).to_string(index=False).splitlines()]
    elif not len(d):
        lines.append("no disagreements")
    else:
        lines.append(f"disagreements: {len(d)} (patient, field) pair(s) over {d['patient_id'].nunique()} patient(s)")
    return "\n".join(lines)
