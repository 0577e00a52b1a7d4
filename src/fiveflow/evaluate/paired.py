"""Paired differences: FiVE minus every other method, on the same draws and the same test slides.

Two methods at the same shot count are compared run by run: run ``r`` of every few-shot method is
trained on the same recorded draw (``splits/fewshot_draws.csv``) and predicts the same held-out test
slides, so the difference of run ``r`` is ``metric(FiVE, r) - metric(method, r)`` on the test slides
both predicted, and the point estimate is its mean over the runs both have. Its 95% interval is a
paired bootstrap over test slides: each resample (stratified by class, as
:func:`fiveflow.evaluate.metrics.bootstrap_counts`; the same ``seed`` as the table's intervals)
reweights the slides of both methods and of every run alike, the run differences are recomputed on
it (:func:`~fiveflow.evaluate.metrics.weighted_metrics`) and averaged over runs; the interval is the
percentile interval of those averages. ``significant`` says the interval excludes 0. Resamples on
which a metric is undefined (AUC with one class) are left out and counted in ``n_boot_skipped``.

The reference is FiVE (``FiVE+histotype`` when only that ran); optimistic rows
(:mod:`fiveflow.evaluate.optimistic`) are neither reference nor compared. Zero-shot rows (0 shots)
are compared with the other zero-shot methods (FiVE's ablations, MI-Zero).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .metrics import _positive, bootstrap_counts, weighted_metrics
from .optimistic import is_optimistic

COLUMNS = [
    "reference",
    "method",
    "shots",
    "metric",
    "n_runs",
    "n_slides",
    "diff",
    "ci_low",
    "ci_high",
    "significant",
    "n_boot",
    "n_boot_skipped",
]
MARK = "*"


def reference_method(methods, bases: tuple[str, ...] = ("FiVE", "FiVE+histotype")) -> str | None:
    """The row every other method is compared with: the first of ``bases`` present in ``methods``."""
    present = {str(m) for m in methods}
    return next((b for b in bases if b in present), None)


def _pair(
    ref: pd.DataFrame,
    other: pd.DataFrame,
    positive: str,
    metrics: tuple[str, ...],
    n_boot: int,
    seed: int,
    ci: float,
    stratify: bool,
) -> dict | None:
    runs = sorted(set(ref["run"]) & set(other["run"]))
    if not runs:
        return None
    ref, other = ref[ref["run"].isin(runs)], other[other["run"].isin(runs)]
    slides = np.array(sorted(set(ref["slide_id"]) & set(other["slide_id"])))
    if not len(slides):
        return None
    labels = ref.drop_duplicates("slide_id").set_index("slide_id")["label"].astype(str)
    y = (labels.loc[slides] == positive).to_numpy()
    weights = np.vstack([np.ones(len(slides), dtype=np.int64), bootstrap_counts(y, n_boot, seed, stratify)])
    diffs = {k: np.zeros((len(runs), len(weights))) for k in metrics}
    for i, r in enumerate(runs):
        vals = []
        for g in (ref, other):
            g = g[(g["run"] == r) & g["slide_id"].isin(slides)].drop_duplicates("slide_id")
            pos = np.searchsorted(slides, g["slide_id"].to_numpy())
            w = weights[:, pos]
            vals.append(weighted_metrics((g["label"].astype(str) == positive).to_numpy(), g["prob"].to_numpy(), w))
        for k in metrics:
            diffs[k][i] = vals[0][k] - vals[1][k]
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    out = {}
    for k in metrics:
        per_resample = diffs[k].mean(axis=0)  # NaN when the metric is undefined on a resample (every run alike)
        point, boot = per_resample[0], per_resample[1:]
        ok = boot[~np.isnan(boot)]
        low, high = (float(np.percentile(ok, lo)), float(np.percentile(ok, hi))) if len(ok) else (np.nan, np.nan)
        out[k] = {
            "n_runs": len(runs),
            "n_slides": len(slides),
            "diff": float(point),
            "ci_low": low,
            "ci_high": high,
            "significant": bool(len(ok)) and (low > 0 or high < 0),
            "n_boot": int(n_boot),
            "n_boot_skipped": int(len(boot) - len(ok)),
        }
    return out


def paired_differences(
    pred: pd.DataFrame,
    classes: list[str] | None = None,
    positive: str | None = None,
    *,
    reference: str | None = None,
    metrics: tuple[str, ...] = ("acc", "auc"),
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    stratify: bool = True,
) -> pd.DataFrame:
    """Reference (FiVE) minus each other method, per shot count and metric (module doc): one row per
    (method, shots, metric) with :data:`COLUMNS`. ``pred`` is the long predictions table
    (``method, shots, run, slide_id, label, prob``); ``n_boot=0`` gives the differences without
    intervals. Pairs without a common run or test slide are left out."""
    if pred.empty:
        return pd.DataFrame(columns=COLUMNS)
    positive = _positive(pred, classes, positive)
    honest = [m for m in pred["method"].astype(str).unique() if not is_optimistic(m)]
    reference = reference or reference_method(honest)
    if reference is None:
        return pd.DataFrame(columns=COLUMNS)
    groups = {(str(m), int(s)): g for (m, s), g in pred.groupby(["method", "shots"], sort=True)}
    rows = []
    for (m, s), g in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if m == reference or m not in honest or (reference, s) not in groups:
            continue
        res = _pair(groups[(reference, s)], g, positive, tuple(metrics), int(n_boot), seed, ci, stratify)
        if res is None:
            continue
        rows += [{"reference": reference, "method": m, "shots": s, "metric": k, **v} for k, v in res.items()]
    return pd.DataFrame(rows, columns=COLUMNS)


def diff_text(row, digits: int = 2) -> str:
    """``+3.12 [-1.05, +7.40]*``: the difference and its interval in percentage points, ``*`` when the
    interval excludes 0 (``n/a`` for an undefined difference)."""
    if pd.isna(row["diff"]):
        return "n/a"
    text = f"{100 * row['diff']:+.{digits}f}"
    if not pd.isna(row["ci_low"]):
        text += f" [{100 * row['ci_low']:+.{digits}f}, {100 * row['ci_high']:+.{digits}f}]"
    return text + (MARK if bool(row["significant"]) else "")


def paired_note(paired: pd.DataFrame) -> str:
    """The sentence under a paired-difference table saying what the numbers are."""
    n_boot = int(paired["n_boot"].max()) if len(paired) else 0
    ci = f"paired bootstrap 95% CI over the test slides ({n_boot} resamples, the same for both methods and every run)"
    return (
        f"Differences in percentage points, reference minus method, mean over the draws both ran on the same "
        f"test slides; [ ] {ci if n_boot else 'not computed (evaluate.n_boot: 0)'}; {MARK} the CI excludes 0."
    )


def paired_grid(
    paired: pd.DataFrame, metric: str = "acc", shots: list[int] | None = None
) -> tuple[list[int], list[tuple[str, list[str]]]]:
    """``(shots, [(row name "FiVE − method", cell texts)])`` of one metric, methods in table order;
    ``shots``: the columns (default: the shot counts compared), "-" where a pair has none."""
    from .tables import method_order

    p = paired[paired["metric"] == metric]
    shots = sorted({int(s) for s in p["shots"]}) if shots is None else list(shots)
    cells = {(str(r["method"]), int(r["shots"])): diff_text(r) for _, r in p.iterrows()}
    rows = []
    for m in method_order(p["method"]):
        ref = str(p.loc[p["method"] == m, "reference"].iloc[0])
        rows.append((f"{ref} − {m}", [cells.get((m, s), "-") for s in shots]))
    return shots, rows
