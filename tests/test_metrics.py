"""Metrics: each computed once over all predictions; DSMIL's ROC-optimal threshold; summaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from fiveflow.evaluate.metrics import compute_metrics, roc_optimal_threshold, summarize

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.45, 0.9, 0.3, 0.6, 0.2])


def test_metrics_match_sklearn():
    m = compute_metrics(Y, P)
    hard = (P >= 0.5).astype(int)
    assert m["acc"] == pytest.approx(accuracy_score(Y, hard))
    assert m["auc"] == pytest.approx(roc_auc_score(Y, P))
    assert m["f1"] == pytest.approx(f1_score(Y, hard, average="macro"))
    assert m["n"] == 10


def test_roc_optimal_threshold_is_youden():
    thr = roc_optimal_threshold(Y, P)
    # brute force over the observed scores: maximise tpr - fpr
    best = max(sorted(set(P)), key=lambda t: ((P >= t) & (Y == 1)).sum() / 5 - ((P >= t) & (Y == 0)).sum() / 5)
    assert thr == pytest.approx(best) == pytest.approx(0.45)
    m = compute_metrics(Y, P)
    assert m["threshold_opt"] == pytest.approx(0.45)
    # the authors' F1: binary F1 of the positive class at that threshold (not macro)
    assert m["f1_authors"] == pytest.approx(f1_score(Y, (P >= 0.45).astype(int), average="binary"))


def test_threshold_half_counts_as_positive_and_single_class():
    assert compute_metrics([1, 0], [0.5, 0.49])["acc"] == 1.0
    m = compute_metrics([1, 1, 1], [0.9, 0.2, 0.7])
    assert np.isnan(m["auc"]) and np.isnan(m["f1_authors"]) and m["acc"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0.1])


def _pred(method, shots, run, y, p):
    lab = np.where(np.asarray(y) == 1, "LUSC", "LUAD")
    return pd.DataFrame(
        {
            "method": method,
            "shots": shots,
            "run": run,
            "slide_id": [f"s{i}" for i in range(len(y))],
            "patient_id": [f"p{i}" for i in range(len(y))],
            "label": lab,
            "prob": p,
            "pred": np.where(np.asarray(p) >= 0.5, "LUSC", "LUAD"),
        }
    )


def test_summarize_per_run_then_mean_std():
    rng = np.random.default_rng(0)
    frames, accs = [], []
    for run in range(3):
        p = rng.random(10)
        frames.append(_pred("FiVE", 4, run, Y, p))
        accs.append(compute_metrics(Y, p)["acc"])
    frames.append(_pred("meanpool", 4, 0, Y, P))
    table = summarize(pd.concat(frames, ignore_index=True))  # positive class inferred from pred/prob
    assert list(table.columns)[:11] == [
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
    five = table[table.method == "FiVE"].iloc[0]
    assert (
        five.n_runs == 3
        and five.acc_mean == pytest.approx(np.mean(accs))
        and five.acc_std == pytest.approx(np.std(accs))
    )
    mp = table[table.method == "meanpool"].iloc[0]
    assert mp.auc_mean == pytest.approx(roc_auc_score(Y, P)) and mp.auc_std == 0
    same = summarize(pd.concat(frames, ignore_index=True), classes=["LUAD", "LUSC"])
    pd.testing.assert_frame_equal(table, same)


# --- issue 7: balanced accuracy, bootstrap CIs, per-run (not prefix) metrics ---------------------

from sklearn.metrics import balanced_accuracy_score  # noqa: E402

from fiveflow.evaluate.metrics import (  # noqa: E402
    CI_COLUMNS,
    METRIC_KEYS,
    SUMMARY_COLUMNS,
    bootstrap_ci,
    bootstrap_counts,
    per_run_metrics,
    weighted_metrics,
)

Y2 = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1])  # unbalanced enough for bacc != acc
P2 = np.array([0.1, 0.6, 0.35, 0.8, 0.7, 0.45, 0.9, 0.3, 0.6, 0.2, 0.55, 0.52])


def test_every_metric_matches_sklearn():
    for y, p in ((Y, P), (Y2, P2)):
        m = compute_metrics(y, p)
        hard = (p >= 0.5).astype(int)
        thr = roc_optimal_threshold(y, p)
        assert m["acc"] == pytest.approx(accuracy_score(y, hard))
        assert m["bacc"] == pytest.approx(balanced_accuracy_score(y, hard))
        assert m["auc"] == pytest.approx(roc_auc_score(y, p))
        assert m["f1"] == pytest.approx(f1_score(y, hard, average="macro"))
        assert m["f1_authors"] == pytest.approx(f1_score(y, (p >= thr).astype(int), average="binary"))
    m = compute_metrics(Y2, P2)
    assert m["bacc"] != pytest.approx(m["acc"])  # the case discriminates


def test_weighted_metrics_equal_metrics_on_repeated_data():
    """The vectorised bootstrap kernel equals compute_metrics on the resampled data (ties included)."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(2, 12))
        y, p = rng.integers(0, 2, n), np.round(rng.random(n), 1)
        w = rng.integers(0, 3, (3, n))
        got = weighted_metrics(y, p, w)
        for b in range(3):
            if w[b].sum() == 0:
                continue
            ref = compute_metrics(np.repeat(y, w[b]), np.repeat(p, w[b]))
            for k in METRIC_KEYS:
                assert got[k][b] == pytest.approx(ref[k], nan_ok=True), k


def _group(n_slides, n_runs=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n_slides) % 2
    return pd.concat(
        [_pred("FiVE", 4, r, y, np.clip(0.3 + 0.4 * y + rng.normal(0, 0.25, n_slides), 0, 1)) for r in range(n_runs)],
        ignore_index=True,
    )


def test_bootstrap_ci_contains_estimate_narrows_and_is_reproducible():
    widths = {}
    for n in (20, 200):
        g = _group(n)
        table = summarize(g, classes=["LUAD", "LUSC"], n_boot=500, seed=1)
        r = table.iloc[0]
        assert list(table.columns) == SUMMARY_COLUMNS and set(CI_COLUMNS) <= set(table.columns)
        for col in ("acc", "bacc", "auc", "f1", "f1auth"):
            assert r[f"{col}_ci_low"] <= r[f"{col}_mean"] <= r[f"{col}_ci_high"], col
        assert r.n_slides == n and r.n_boot == 500 and r.auc_boot_skipped == 0
        widths[n] = {c: r[f"{c}_ci_high"] - r[f"{c}_ci_low"] for c in ("acc", "auc", "f1")}
    assert all(widths[200][c] < widths[20][c] for c in widths[20])
    g = _group(20)
    a = bootstrap_ci(g, "LUSC", n_boot=200, seed=7)
    assert a == bootstrap_ci(g, "LUSC", n_boot=200, seed=7)
    assert a != bootstrap_ci(g, "LUSC", n_boot=200, seed=8)


def test_bootstrap_stratified_keeps_class_sizes_and_unstratified_skips_single_class():
    y = np.array([0, 0, 0, 1])
    c = bootstrap_counts(y, 300, seed=0)
    assert (c[:, y == 1].sum(1) == 1).all() and (c.sum(1) == 4).all()
    g = _pred("FiVE", 1, 0, y, np.array([0.1, 0.2, 0.6, 0.9]))
    out = bootstrap_ci(g, "LUSC", n_boot=300, seed=0, stratify=False)
    # P(no positive drawn) = (3/4)^4 ~ 0.32: those resamples have no AUC and are counted
    assert 50 < out["auc_boot_skipped"] < 150 and not np.isnan(out["auc_ci_low"])


def test_per_run_metric_is_not_a_prefix_average():
    y = np.array([1, 0, 0, 1])
    p = np.array([0.9, 0.6, 0.4, 0.2])  # correct, wrong, correct, wrong -> acc 0.5
    prefix_avg = np.mean(
        [np.mean((p[:k] >= 0.5) == y[:k]) for k in range(1, 5)]
    )  # the authors' bug: (1 + 1/2 + 2/3 + 1/2) / 4
    assert prefix_avg == pytest.approx(2 / 3)
    runs = per_run_metrics(_pred("FiVE", 1, 0, y, p), classes=["LUAD", "LUSC"])
    assert runs["acc"].item() == pytest.approx(0.5) == pytest.approx(accuracy_score(y, p >= 0.5))
    assert runs["acc"].item() != pytest.approx(prefix_avg)
    assert summarize(_pred("FiVE", 1, 0, y, p), classes=["LUAD", "LUSC"], n_boot=0).acc_mean.item() == 0.5


def test_weighted_authors_f1_is_sklearn_binary_f1_at_the_roc_optimal_threshold():
    """The bootstrap kernel's f1_authors on each resample = sklearn's binary F1 of the positive class at
    that resample's own ROC-optimal threshold (not macro F1, not F1 at 0.5)."""
    rng = np.random.default_rng(11)
    y, p = rng.integers(0, 2, 40), np.round(rng.random(40), 2)
    w = bootstrap_counts(y, 25, seed=4)
    got = weighted_metrics(y, p, w)["f1_authors"]
    differs = 0
    for b in range(len(w)):
        yb, pb = np.repeat(y, w[b]), np.repeat(p, w[b])
        thr = roc_optimal_threshold(yb, pb)
        ref = f1_score(yb, (pb >= thr).astype(int), average="binary", pos_label=1)
        assert got[b] == pytest.approx(ref), b
        differs += ref != pytest.approx(f1_score(yb, (pb >= thr).astype(int), average="macro"))
    assert differs > 20  # the case tells binary from macro F1


def test_summary_notes_optimistic_rows_only():
    pred = pd.concat([_pred("FiVE", 0, 0, Y, P), _pred("FiVE-bestepoch", 0, 0, Y, P)], ignore_index=True)
    table = summarize(pred, classes=["LUAD", "LUSC"], n_boot=0).set_index("method")
    assert table.loc["FiVE", "note"] == ""
    assert table.loc["FiVE-bestepoch", "note"] == "epoch chosen on the test set: optimistic"
    assert list(table.reset_index().columns) == SUMMARY_COLUMNS and SUMMARY_COLUMNS[-1] == "note"
