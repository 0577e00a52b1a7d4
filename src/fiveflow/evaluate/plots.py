"""Result plots beyond accuracy-vs-shots: ROC curves and confusion matrices.

Both pool the predictions of all runs (few-shot draws) of a (method, shots) group: ROC curves are
computed on the concatenated ``(label, prob)`` of every run (each test slide appears once per run),
confusion matrices are counts summed over runs. The positive class is ``classes[1]`` (``prob`` =
P(second class)); the confusion matrix uses the hard ``pred`` column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .figures import pyplot, save_figure
from .optimistic import display_name
from .tables import method_order, shot_label


def _shot_list(pred: pd.DataFrame, shots) -> list[int]:
    if shots is None:
        return sorted({int(s) for s in pred["shots"]})
    if np.isscalar(shots):
        return [int(shots)]
    return [int(s) for s in shots]


def confusion_counts(pred: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """``(k, k)`` int matrix, rows = true class (``label``), columns = predicted class (``pred``),
    in the order of ``classes``; counts summed over every row of ``pred`` (all runs). Rows whose
    label or prediction is not in ``classes`` are ignored (as ``sklearn.metrics.confusion_matrix``
    with ``labels=classes``)."""
    idx = {str(c): i for i, c in enumerate(classes)}
    k = len(classes)
    t = pred["label"].astype(str).map(idx)
    p = pred["pred"].astype(str).map(idx)
    ok = t.notna() & p.notna()
    flat = t[ok].astype(int).to_numpy() * k + p[ok].astype(int).to_numpy()
    return np.bincount(flat, minlength=k * k).reshape(k, k).astype(np.int64)


def plot_roc(pred: pd.DataFrame, classes: list[str], out_png: str | Path, shots=None) -> None:
    """One panel per shot count (all, or only ``shots``), one ROC curve per method, computed on the
    predictions of all that method's runs pooled; AUC (of the pooled predictions) in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = pyplot()
    positive = str(classes[1])
    shot_list = _shot_list(pred, shots)
    n = max(len(shot_list), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.4), squeeze=False)
    for ax, s in zip(axes[0], shot_list):
        g = pred[pred["shots"].astype(int) == s]
        for method in method_order(g["method"]):
            gm = g[g["method"].astype(str) == method]
            y = (gm["label"].astype(str) == positive).to_numpy().astype(int)
            if len(np.unique(y)) < 2:
                continue  # ROC undefined with one class
            p = gm["prob"].to_numpy(dtype=np.float64)
            fpr, tpr, _ = roc_curve(y, p)
            n_runs = gm["run"].nunique() if "run" in gm else 1
            ax.plot(
                fpr,
                tpr,
                lw=1.5,
                label=f"{display_name(method)} (AUC {roc_auc_score(y, p):.3f}, {n_runs} run{'s' * (n_runs != 1)})",
            )
        ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.0)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel(f"true positive rate ({positive} positive)")
        ax.set_title(shot_label(s))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("ROC curves on held-out patients (predictions of all runs pooled)")
    fig.tight_layout()
    save_figure(fig, out_png)


def default_confusion_shots(pred: pd.DataFrame) -> list[int]:
    """Zero-shot (if present) and the largest shot count."""
    all_shots = sorted({int(s) for s in pred["shots"]})
    if not all_shots:
        return []
    out = [0] if 0 in all_shots else []
    if all_shots[-1] != 0:
        out.append(all_shots[-1])
    return out


def plot_confusion(pred: pd.DataFrame, classes: list[str], out_png: str | Path, shots=None) -> None:
    """Grid of confusion matrices: rows = methods, columns = shot counts (default: zero-shot if
    present and the largest shot count). Cells: counts summed over runs and the row-normalised %
    (share of the true class); empty panel where a method lacks those shots."""
    plt = pyplot()
    shot_list = default_confusion_shots(pred) if shots is None else _shot_list(pred, shots)
    methods = method_order(pred["method"])
    nr, nc = max(len(methods), 1), max(len(shot_list), 1)
    k = len(classes)
    size = 1.0 + 0.9 * k
    fig, axes = plt.subplots(nr, nc, figsize=(size * nc + 1.0, size * nr + 0.8), squeeze=False)
    names = [str(c) for c in classes]
    for i, method in enumerate(methods):
        for j, s in enumerate(shot_list):
            ax = axes[i][j]
            g = pred[(pred["method"].astype(str) == method) & (pred["shots"].astype(int) == s)]
            if g.empty:
                ax.axis("off")
                ax.set_title(f"{display_name(method)}, {shot_label(s)}: none", fontsize=9)
                continue
            cm = confusion_counts(g, classes)
            rows = cm.sum(axis=1, keepdims=True)
            frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
            ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
            for a in range(k):
                for b in range(k):
                    ax.text(
                        b,
                        a,
                        f"{cm[a, b]}\n{100 * frac[a, b]:.0f}%",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if frac[a, b] > 0.6 else "black",
                    )
            ax.set_xticks(range(k), names, fontsize=8)
            ax.set_yticks(range(k), names, fontsize=8)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("true", fontsize=8)
            n_runs = g["run"].nunique() if "run" in g else 1
            ax.set_title(f"{display_name(method)}, {shot_label(s)} ({n_runs} run{'s' * (n_runs != 1)})", fontsize=9)
    fig.suptitle("Confusion matrices (counts summed over runs, % of true class)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_png)
