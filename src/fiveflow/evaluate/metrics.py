"""Slide-level metrics, each computed once over all predictions of a run (FIVE_METHOD.md 5).

The authors average metrics of running prefixes of the prediction list; that is a bug and is
not reproduced. ``f1_opt`` follows DSMIL: the threshold on the ROC curve that minimises
``fpr - tpr`` (Youden's J), then macro F1 at that threshold.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

METRIC_KEYS = ("acc", "auc", "f1", "f1_opt")
SUMMARY_COLUMNS = ["method", "shots", "n_runs", "acc_mean", "acc_std", "auc_mean", "auc_std", "f1_mean", "f1_std",
                   "f1opt_mean", "f1opt_std"]


def roc_optimal_threshold(y_true: np.ndarray, prob: np.ndarray) -> float:
    """DSMIL's ``optimal_thresh`` with p = 0: argmin of ``fpr - tpr`` over the ROC thresholds."""
    fpr, tpr, thr = roc_curve(y_true, prob)
    return float(thr[int(np.argmin(fpr - tpr))])


def compute_metrics(y_true, prob) -> dict:
    """``acc`` (prob >= 0.5, i.e. argmax), ``auc``, ``f1`` (macro, at 0.5), ``f1_opt`` (macro, at
    the ROC-optimal threshold), plus ``threshold_opt`` and ``n``. AUC and f1_opt are NaN when
    only one class is present."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y_true and prob must be 1-D of equal length, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("no predictions")
    hard = (p >= 0.5).astype(int)
    out = {"n": int(len(y)), "acc": float((hard == y).mean()),
           "f1": float(f1_score(y, hard, average="macro", labels=[0, 1], zero_division=0))}
    if len(np.unique(y)) == 2:
        thr = roc_optimal_threshold(y, p)
        out.update(auc=float(roc_auc_score(y, p)), threshold_opt=thr,
                   f1_opt=float(f1_score(y, (p >= thr).astype(int), average="macro", labels=[0, 1], zero_division=0)))
    else:
        out.update(auc=float("nan"), threshold_opt=float("nan"), f1_opt=float("nan"))
    return out


def infer_positive(pred: pd.DataFrame) -> str:
    """The positive class of a prediction table: the ``pred`` value of rows with ``prob >= 0.5``
    (or the label that is not the ``pred`` of rows below 0.5)."""
    hi = pred.loc[pred["prob"] >= 0.5, "pred"].unique()
    if len(hi) == 1:
        return str(hi[0])
    lo = pred.loc[pred["prob"] < 0.5, "pred"].unique()
    names = sorted(set(pred["label"].astype(str)) | set(pred["pred"].astype(str)))
    if len(lo) == 1:
        others = [n for n in names if n != lo[0]]
        if len(others) == 1:
            return others[0]
    if len(hi) > 1 or len(names) != 2:
        raise ValueError(f"cannot tell the positive class from pred/prob (classes {names}); pass positive=")
    return names[1]


def per_run_metrics(pred: pd.DataFrame, classes: list[str] | None = None, positive: str | None = None) -> pd.DataFrame:
    """One row per (method, shots, run) with every metric of :func:`compute_metrics`.

    The positive class is ``positive``, else ``classes[1]``, else inferred from ``pred``/``prob``.
    """
    positive = positive or (str(classes[1]) if classes else None) or infer_positive(pred)
    rows = []
    for (method, shots, run), g in pred.groupby(["method", "shots", "run"], sort=True):
        m = compute_metrics((g["label"].astype(str) == positive).to_numpy(), g["prob"].to_numpy())
        rows.append({"method": method, "shots": int(shots), "run": int(run), **m})
    return pd.DataFrame(rows)


def summarize(pred: pd.DataFrame, classes: list[str] | None = None, positive: str | None = None,
              runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (method, shots): metrics per run, then mean and std (population, ddof=0) over runs.

    ``runs`` (the output of :func:`per_run_metrics`) may be passed to avoid computing it twice.
    """
    if pred.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    runs = per_run_metrics(pred, classes, positive) if runs is None else runs
    rows = []
    for (method, shots), g in runs.groupby(["method", "shots"], sort=True):
        row = {"method": method, "shots": int(shots), "n_runs": len(g)}
        for key, col in (("acc", "acc"), ("auc", "auc"), ("f1", "f1"), ("f1_opt", "f1opt")):
            vals = g[key].to_numpy(dtype=np.float64)
            ok = vals[~np.isnan(vals)]
            row[f"{col}_mean"] = float(ok.mean()) if len(ok) else float("nan")
            row[f"{col}_std"] = float(ok.std()) if len(ok) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
