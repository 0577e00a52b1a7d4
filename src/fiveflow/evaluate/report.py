"""Few-shot tables (csv / Markdown / LaTeX), per-run metrics and the accuracy-vs-shots plot."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import atomic_path, atomic_write_text
from .metrics import per_run_metrics, summarize

METRICS = ("acc", "auc", "f1")


def load_predictions(files: list[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(f) for f in files]
    if not frames:
        raise ValueError("no prediction files to evaluate")
    return pd.concat(frames, ignore_index=True)


def _fmt(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if not pd.isna(std) else f"{100 * mean:.2f}"


def to_markdown(table: pd.DataFrame) -> str:
    head = "| Method | Shots | Runs | Accuracy (%) | AUC (%) | Macro F1 (%) |\n|---|---:|---:|---:|---:|---:|\n"
    body = "".join(
        f"| {r.method} | {r.shots} | {r.n_runs} | {_fmt(r.acc_mean, r.acc_std)} | {_fmt(r.auc_mean, r.auc_std)} "
        f"| {_fmt(r.f1_mean, r.f1_std)} |\n" for r in table.itertuples()
    )
    return head + body


def to_latex(table: pd.DataFrame) -> str:
    lines = [r"\begin{tabular}{lrrccc}", r"\toprule",
             r"Method & Shots & Runs & Accuracy (\%) & AUC (\%) & Macro F1 (\%) \\", r"\midrule"]
    for r in table.itertuples():
        cells = [_fmt(getattr(r, f"{m}_mean"), getattr(r, f"{m}_std")).replace("±", r"$\pm$") for m in METRICS]
        lines.append(f"{r.method} & {r.shots} & {r.n_runs} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def plot_fewshot(table: pd.DataFrame, out_png: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in zip(axes, ("acc", "auc"), ("Accuracy", "ROC AUC")):
        for method, g in table.groupby("method"):
            few = g[g["shots"] > 0].sort_values("shots")
            if len(few):
                ax.errorbar(few["shots"], few[f"{metric}_mean"], yerr=few[f"{metric}_std"].fillna(0),
                            marker="o", capsize=3, label=method)
            zero = g[g["shots"] == 0]
            if len(zero):
                ax.axhline(zero[f"{metric}_mean"].iloc[0], ls="--", lw=1, color="grey", label=f"{method} zero-shot")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("shots (slides per class)")
        ax.set_ylabel(title)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{title} on held-out patients")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def evaluate_predictions(files: list[str], out, classes: list[str]) -> pd.DataFrame:
    """``out`` has attributes csv, md, tex, runs, plot (the Snakemake output object works)."""
    pred = load_predictions(files)
    runs = per_run_metrics(pred, classes=classes)
    table = summarize(pred, classes=classes, runs=runs)
    table = table.sort_values(["method", "shots"]).reset_index(drop=True)
    with atomic_path(out.csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    atomic_write_text(out.md, to_markdown(table))
    atomic_write_text(out.tex, to_latex(table))
    with atomic_path(out.runs) as tmp:
        runs.to_csv(tmp, index=False, float_format="%.4f")
    plot_fewshot(table, out.plot)
    return table
