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
    best = max(sorted(set(P)), key=lambda t: (((P >= t) & (Y == 1)).sum() / 5 - ((P >= t) & (Y == 0)).sum() / 5))
    assert thr == pytest.approx(best) == pytest.approx(0.45)
    m = compute_metrics(Y, P)
    assert m["threshold_opt"] == pytest.approx(0.45)
    assert m["f1_opt"] == pytest.approx(f1_score(Y, (P >= 0.45).astype(int), average="macro"))
    assert m["f1_opt"] >= m["f1"]


def test_threshold_half_counts_as_positive_and_single_class():
    assert compute_metrics([1, 0], [0.5, 0.49])["acc"] == 1.0
    m = compute_metrics([1, 1, 1], [0.9, 0.2, 0.7])
    assert np.isnan(m["auc"]) and np.isnan(m["f1_opt"]) and m["acc"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0.1])


def _pred(method, shots, run, y, p):
    lab = np.where(np.asarray(y) == 1, "LUSC", "LUAD")
    return pd.DataFrame({"method": method, "shots": shots, "run": run, "slide_id": [f"s{i}" for i in range(len(y))],
                         "patient_id": [f"p{i}" for i in range(len(y))], "label": lab, "prob": p,
                         "pred": np.where(np.asarray(p) >= 0.5, "LUSC", "LUAD")})


def test_summarize_per_run_then_mean_std():
    rng = np.random.default_rng(0)
    frames, accs = [], []
    for run in range(3):
        p = rng.random(10)
        frames.append(_pred("FiVE", 4, run, Y, p))
        accs.append(compute_metrics(Y, p)["acc"])
    frames.append(_pred("meanpool", 4, 0, Y, P))
    table = summarize(pd.concat(frames, ignore_index=True))  # positive class inferred from pred/prob
    assert list(table.columns) == ["method", "shots", "n_runs", "acc_mean", "acc_std", "auc_mean", "auc_std",
                                   "f1_mean", "f1_std", "f1opt_mean", "f1opt_std"]
    five = table[table.method == "FiVE"].iloc[0]
    assert five.n_runs == 3 and five.acc_mean == pytest.approx(np.mean(accs)) and five.acc_std == pytest.approx(np.std(accs))
    mp = table[table.method == "meanpool"].iloc[0]
    assert mp.auc_mean == pytest.approx(roc_auc_score(Y, P)) and mp.auc_std == 0
    same = summarize(pd.concat(frames, ignore_index=True), classes=["LUAD", "LUSC"])
    pd.testing.assert_frame_equal(table, same)
