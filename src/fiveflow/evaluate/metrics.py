"""Slide-level metrics, each computed once over all predictions of a run (FIVE_METHOD.md 5).

The authors average metrics of running prefixes of the prediction list; that is a bug and is
not reproduced. Two F1 scores are reported side by side: ``f1`` is ours, macro F1 (the mean of
both classes' F1) at probability 0.5; ``f1_authors`` is the authors' (DSMIL's convention), the
binary F1 of the positive class (the second class) at the ROC-optimal threshold, the threshold on
the ROC curve that minimises ``fpr - tpr`` (Youden's J).

Confidence intervals (:func:`bootstrap_ci`): the test slides of a (method, shots) group are
resampled with replacement, stratified by class (each class keeps its size, so every resample has
both classes when the test set has), ``n_boot`` times from ``np.random.default_rng(seed)``. The
same resample is applied to every run of the group, each run's metric is recomputed on it and
averaged over runs; the interval is the percentile interval of those averages. Groups with the same
test slides get the same resamples (paired). Resamples with a single class (only possible with
``stratify=False`` or a single-class test set) have no AUC / f1_authors: they are skipped for those
metrics and counted in ``auc_boot_skipped``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from .optimistic import optimistic_note

METRIC_KEYS = ("acc", "bacc", "auc", "f1", "f1_authors")
# (key in compute_metrics / per-run table, column stem in the summary)
SUMMARY_METRICS = (("acc", "acc"), ("bacc", "bacc"), ("auc", "auc"), ("f1", "f1"), ("f1_authors", "f1auth"))
BASE_COLUMNS = [
    "method",
    "shots",
    "n_runs",
    "acc_mean",
    "acc_std",
    "auc_mean",
    "auc_std",
    "f1_mean",
    "f1_std",
    "f1auth_mean",
    "f1auth_std",
]
CI_COLUMNS = [f"{c}_ci_{s}" for _, c in SUMMARY_METRICS for s in ("low", "high")]
# the historical columns first (readers index them by name or position), new ones appended; ``note``:
# why a row is not comparable with the others ("" for most; fiveflow.evaluate.optimistic)
SUMMARY_COLUMNS = (
    BASE_COLUMNS + ["bacc_mean", "bacc_std"] + CI_COLUMNS + ["n_slides", "n_boot", "auc_boot_skipped", "note"]
)


def roc_optimal_threshold(y_true: np.ndarray, prob: np.ndarray) -> float:
    """DSMIL's ``optimal_thresh`` with p = 0: argmin of ``fpr - tpr`` over the ROC thresholds."""
    fpr, tpr, thr = roc_curve(y_true, prob)
    return float(thr[int(np.argmin(fpr - tpr))])


def compute_metrics(y_true, prob) -> dict:
    """``acc`` (prob >= 0.5, i.e. argmax), ``bacc`` (balanced accuracy: mean recall over the classes
    present), ``auc``, ``f1`` (ours: macro, at 0.5), ``f1_authors`` (the authors': binary F1 of the
    positive class at the ROC-optimal threshold ``threshold_opt``), plus ``threshold_opt`` and ``n``.
    AUC, threshold_opt and f1_authors are NaN when only one class is present."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y_true and prob must be 1-D of equal length, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("no predictions")
    hard = (p >= 0.5).astype(int)
    recalls = [float((hard[y == c] == c).mean()) for c in (0, 1) if (y == c).any()]
    out = {
        "n": int(len(y)),
        "acc": float((hard == y).mean()),
        "bacc": float(np.mean(recalls)),
        "f1": float(f1_score(y, hard, average="macro", labels=[0, 1], zero_division=0)),
    }
    if len(np.unique(y)) == 2:
        thr = roc_optimal_threshold(y, p)
        out.update(
            auc=float(roc_auc_score(y, p)),
            threshold_opt=thr,
            f1_authors=float(f1_score(y, (p >= thr).astype(int), average="binary", pos_label=1, zero_division=0)),
        )
    else:
        out.update(auc=float("nan"), threshold_opt=float("nan"), f1_authors=float("nan"))
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


def _positive(pred: pd.DataFrame, classes, positive) -> str:
    return positive or (str(classes[1]) if classes else None) or infer_positive(pred)


def per_run_metrics(pred: pd.DataFrame, classes: list[str] | None = None, positive: str | None = None) -> pd.DataFrame:
    """One row per (method, shots, run) with every metric of :func:`compute_metrics`.

    The positive class is ``positive``, else ``classes[1]``, else inferred from ``pred``/``prob``.
    """
    positive = _positive(pred, classes, positive)
    rows = []
    for (method, shots, run), g in pred.groupby(["method", "shots", "run"], sort=True):
        m = compute_metrics((g["label"].astype(str) == positive).to_numpy(), g["prob"].to_numpy())
        rows.append({"method": method, "shots": int(shots), "run": int(run), **m})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# bootstrap


def bootstrap_counts(y: np.ndarray, n_boot: int, seed: int, stratify: bool = True) -> np.ndarray:
    """``(n_boot, len(y))`` int matrix: how often each slide is drawn in each resample."""
    y = np.asarray(y)
    n = len(y)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(n)]
    counts = np.zeros(n_boot * n, dtype=np.int64)
    base = (np.arange(n_boot) * n)[:, None]
    for idx in groups:
        draws = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]
        counts += np.bincount((base + draws).ravel(), minlength=n_boot * n)
    return counts.reshape(n_boot, n)


def weighted_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of :func:`compute_metrics` for each row of the weight matrix ``w`` (B x n):
    identical to :func:`compute_metrics` on the data with slide i repeated ``w[b, i]`` times."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    wp, wn = w[:, y], w[:, ~y]
    pp, pn = p[y], p[~y]
    npos, nneg = wp.sum(1), wn.sum(1)
    ntot = npos + nneg
    with np.errstate(divide="ignore", invalid="ignore"):

        def f1_positive(tp, fp):  # binary F1 of the positive class (0 when it is undefined, as sklearn)
            d = 2 * tp + fp + (npos - tp)
            return np.where(d > 0, 2 * tp / np.where(d > 0, d, 1), 0.0)

        def f1_macro(tp, fp):
            fn, tn = npos - tp, nneg - fp
            d0 = 2 * tn + fn + fp
            f1n = np.where(d0 > 0, 2 * tn / np.where(d0 > 0, d0, 1), 0.0)
            return (f1_positive(tp, fp) + f1n) / 2

        tp = wp @ (pp >= 0.5).astype(np.float64)
        fp = wn @ (pn >= 0.5).astype(np.float64)
        tn = nneg - fp
        acc = (tp + tn) / ntot
        nrec = (npos > 0).astype(np.float64) + (nneg > 0)
        bacc = (np.where(npos > 0, tp / npos, 0.0) + np.where(nneg > 0, tn / nneg, 0.0)) / np.where(
            nrec > 0, nrec, np.nan
        )
        f1 = f1_macro(tp, fp)
        two = (npos > 0) & (nneg > 0)
        # AUC = weighted Mann-Whitney statistic, ties count 1/2
        k = (pp[:, None] > pn[None, :]) + 0.5 * (pp[:, None] == pn[None, :])
        auc = np.where(two, ((wp @ k) * wn).sum(1) / (npos * nneg), np.nan)
        # ROC-optimal threshold: first (highest) threshold minimising fpr - tpr, thresholds = +inf
        # followed by the distinct scores in decreasing order (as sklearn's roc_curve)
        thr = np.concatenate([[np.inf], np.unique(p)[::-1]])
        tps = wp @ (pp[:, None] >= thr[None, :]).astype(np.float64)
        fps = wn @ (pn[:, None] >= thr[None, :]).astype(np.float64)
        j = np.argmin(fps / nneg[:, None] - tps / npos[:, None], axis=1)
        rows = np.arange(len(w))
        f1_authors = np.where(two, f1_positive(tps[rows, j], fps[rows, j]), np.nan)
    return {"acc": acc, "bacc": bacc, "auc": auc, "f1": f1, "f1_authors": f1_authors}


def bootstrap_ci(
    group: pd.DataFrame, positive: str, n_boot: int = 1000, seed: int = 0, ci: float = 0.95, stratify: bool = True
) -> dict:
    """Bootstrap percentile intervals for one (method, shots) group of predictions (module doc).

    Returns ``{<col>_ci_low, <col>_ci_high}`` for acc, bacc, auc, f1, f1auth plus ``n_slides``,
    ``n_boot`` and ``auc_boot_skipped`` (resamples without both classes)."""
    slides = group.drop_duplicates("slide_id").sort_values("slide_id", kind="stable")
    ids = slides["slide_id"].to_numpy()
    y_all = (slides["label"].astype(str) == positive).to_numpy()
    counts = bootstrap_counts(y_all, n_boot, seed, stratify)
    sums = {k: np.zeros(n_boot) for k in METRIC_KEYS}
    nvalid = {k: np.zeros(n_boot) for k in METRIC_KEYS}
    for _, g in group.groupby("run", sort=True):
        pos = np.searchsorted(ids, g["slide_id"].to_numpy())
        m = weighted_metrics((g["label"].astype(str) == positive).to_numpy(), g["prob"].to_numpy(), counts[:, pos])
        for k, v in m.items():
            ok = ~np.isnan(v)
            sums[k] += np.where(ok, v, 0.0)
            nvalid[k] += ok
    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    out = {}
    for key, col in SUMMARY_METRICS:
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where(nvalid[key] > 0, sums[key] / nvalid[key], np.nan)
        avg = avg[~np.isnan(avg)]
        out[f"{col}_ci_low"], out[f"{col}_ci_high"] = (
            (float(np.percentile(avg, lo)), float(np.percentile(avg, hi))) if len(avg) else (float("nan"),) * 2
        )
    out.update(n_slides=len(ids), n_boot=int(n_boot), auc_boot_skipped=int((nvalid["auc"] == 0).sum()))
    return out


def summarize(
    pred: pd.DataFrame,
    classes: list[str] | None = None,
    positive: str | None = None,
    runs: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    stratify: bool = True,
) -> pd.DataFrame:
    """Per (method, shots): metrics per run, then mean and std (population, ddof=0) over runs, and
    bootstrap percentile intervals over test slides (:func:`bootstrap_ci`; ``n_boot=0`` skips them);
    ``note`` is the optimistic-row note of :mod:`fiveflow.evaluate.optimistic` ("" for honest rows).

    ``runs`` (the output of :func:`per_run_metrics`) may be passed to avoid computing it twice.
    """
    if pred.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    positive = _positive(pred, classes, positive)
    runs = per_run_metrics(pred, positive=positive) if runs is None else runs
    groups = dict(iter(pred.groupby(["method", "shots"], sort=True)))
    rows = []
    for (method, shots), g in runs.groupby(["method", "shots"], sort=True):
        row = {"method": method, "shots": int(shots), "n_runs": len(g)}
        for key, col in SUMMARY_METRICS:
            vals = g[key].to_numpy(dtype=np.float64)
            ok = vals[~np.isnan(vals)]
            row[f"{col}_mean"] = float(ok.mean()) if len(ok) else float("nan")
            row[f"{col}_std"] = float(ok.std()) if len(ok) else float("nan")
        if n_boot > 0:
            row.update(bootstrap_ci(groups[(method, shots)], positive, n_boot, seed, ci, stratify))
        row["note"] = optimistic_note(method)
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
