"""Few-shot tables (csv / Markdown / LaTeX), per-run metrics and the accuracy-vs-shots plot."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import atomic_path, atomic_write_text
from .figures import pyplot, save_figure
from .metrics import per_run_metrics, summarize

METRICS = ("acc", "auc", "f1")
# row order of the paper tables: FiVE, its ablations (``FiVE-*``, alphabetical), the baselines in
# this order, then any other method alphabetically
BASELINE_ORDER = ("meanpool", "abmil", "clam_sb", "dsmil", "transmil")
BLOCKS = (("acc", "Accuracy (%)"), ("auc", "ROC AUC (%)"))
MD_TITLES = {"acc": "accuracy, %", "auc": "ROC AUC, %"}


def load_predictions(files: list[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(f) for f in files]
    if not frames:
        raise ValueError("no prediction files to evaluate")
    return pd.concat(frames, ignore_index=True)


def _fmt(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if not pd.isna(std) else f"{100 * mean:.2f}"


def method_order(methods) -> list[str]:
    def key(m):
        m = str(m)
        if m == "FiVE":
            return (0, 0, m)
        if m.startswith("FiVE-"):
            return (1, 0, m)
        if m in BASELINE_ORDER:
            return (2, BASELINE_ORDER.index(m), m)
        return (3, 0, m)

    return sorted({str(m) for m in methods}, key=key)


def shot_label(shots: int) -> str:
    return "zero-shot" if int(shots) == 0 else f"{int(shots)}-shot"


def _grid(table: pd.DataFrame, metric: str):
    """methods, shots, {(method, shots): (mean, std)} and the set of bold cells (best displayed
    mean per shots column; ties all bold)."""
    methods = method_order(table["method"])
    shots = sorted({int(s) for s in table["shots"]})
    cells = {(str(r["method"]), int(r["shots"])): (r[f"{metric}_mean"], r[f"{metric}_std"])
             for _, r in table.iterrows()}
    bold = set()
    for s in shots:
        vals = {m: round(100 * cells[(m, s)][0], 2) for m in methods
                if (m, s) in cells and not pd.isna(cells[(m, s)][0])}
        if vals:
            best = max(vals.values())
            bold |= {(m, s) for m, v in vals.items() if v == best}
    return methods, shots, cells, bold


def to_markdown(table: pd.DataFrame) -> str:
    """Paper layout: one table per metric (accuracy, AUC; named in the first header cell, tables
    separated by a blank line), methods as rows, shots as columns,
    cells "mean ± std" in %, "-" where a method has no such shots, best mean per column in bold."""
    parts = []
    for metric, title in BLOCKS:
        methods, shots, cells, bold = _grid(table, metric)
        lines = [f"| Method ({MD_TITLES[metric]}) | " + " | ".join(shot_label(s) for s in shots) + " |",
                 "|---|" + "---:|" * len(shots)]
        for m in methods:
            row = []
            for s in shots:
                if (m, s) not in cells:
                    row.append("-")
                    continue
                txt = _fmt(*cells[(m, s)])
                row.append(f"**{txt}**" if (m, s) in bold else txt)
            lines.append(f"| {m} | " + " | ".join(row) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def to_latex(table: pd.DataFrame) -> str:
    """The :func:`to_markdown` layout as a booktabs tabular (best per column in ``\\textbf{}``)."""
    shots = sorted({int(s) for s in table["shots"]})
    lines = [r"\begin{tabular}{l" + "c" * len(shots) + "}", r"\toprule",
             "Method & " + " & ".join(shot_label(s) for s in shots) + r" \\"]
    for metric, title in BLOCKS:
        methods, _, cells, bold = _grid(table, metric)
        lines += [r"\midrule", rf"\multicolumn{{{len(shots) + 1}}}{{l}}{{\textit{{{_tex_escape(title)}}}}} \\",
                  r"\midrule"]
        prev = None
        for m in methods:
            group = "five" if m == "FiVE" or m.startswith("FiVE-") else "other"
            if prev == "five" and group == "other":
                lines.append(r"\midrule")
            prev = group
            row = []
            for s in shots:
                if (m, s) not in cells:
                    row.append("-")
                    continue
                txt = _fmt(*cells[(m, s)]).replace("±", r"$\pm$")
                row.append(rf"\textbf{{{txt}}}" if (m, s) in bold else txt)
            lines.append(_tex_escape(m) + " & " + " & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def ablation_table(table: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long format: one row per (row, shots) with ``acc_mean, acc_std, n_runs``; rows are FiVE, every
    ``FiVE-*`` method and ``difference (FiVE - <ablation>)``. A difference's mean is the difference
    of the mean accuracies; its std is the std (ddof 0) of the per-run paired differences when both
    methods have the same runs (the runs share their few-shot draws), else NaN."""
    cols = ["row", "shots", "n_runs", "acc_mean", "acc_std"]
    methods = [m for m in method_order(table["method"]) if m == "FiVE" or m.startswith("FiVE-")]
    t = table[table["method"].astype(str).isin(methods)]
    rows = [{"row": str(r["method"]), "shots": int(r["shots"]), "n_runs": int(r["n_runs"]),
             "acc_mean": r["acc_mean"], "acc_std": r["acc_std"]} for _, r in t.iterrows()]
    five = {int(r["shots"]): r for _, r in t[t["method"] == "FiVE"].iterrows()}
    for abl in (m for m in methods if m != "FiVE"):
        for _, r in t[t["method"] == abl].iterrows():
            s = int(r["shots"])
            if s not in five:
                continue
            std = float("nan")
            if runs is not None:
                a = runs[(runs["method"] == "FiVE") & (runs["shots"] == s)].set_index("run")["acc"]
                b = runs[(runs["method"] == abl) & (runs["shots"] == s)].set_index("run")["acc"]
                if len(a) and set(a.index) == set(b.index):
                    std = float((a - b.loc[a.index]).std(ddof=0))
            rows.append({"row": f"difference (FiVE - {abl})", "shots": s, "n_runs": int(r["n_runs"]),
                         "acc_mean": five[s]["acc_mean"] - r["acc_mean"], "acc_std": std})
    return pd.DataFrame(rows, columns=cols)


def _ablation_grid(abl: pd.DataFrame) -> tuple[list[int], list[tuple[str, list[str]]]]:
    """``(shots, [(row name, cell texts)])`` of :func:`ablation_table`: accuracy (%) "mean ± std" for
    methods, a signed "+d ± sd" for differences, "-" where missing."""
    shots = sorted({int(s) for s in abl["shots"]})
    cells = {(r["row"], int(r["shots"])): r for _, r in abl.iterrows()}
    rows = []
    for name in dict.fromkeys(abl["row"]):
        row = []
        for s in shots:
            r = cells.get((name, s))
            if r is None:
                row.append("-")
            elif name.startswith("difference"):
                row.append(f"{100 * r['acc_mean']:+.2f}"
                           + (f" ± {100 * r['acc_std']:.2f}" if not pd.isna(r["acc_std"]) else ""))
            else:
                row.append(_fmt(r["acc_mean"], r["acc_std"]))
        rows.append((name, row))
    return shots, rows


def ablation_markdown(abl: pd.DataFrame) -> str:
    """Rows as in :func:`ablation_table`, shots as columns, accuracy (%) mean ± std ("-": missing)."""
    shots, rows = _ablation_grid(abl)
    lines = ["**Accuracy (%), FiVE and its ablations**", "",
             "| | " + " | ".join(shot_label(s) for s in shots) + " |", "|---|" + "---:|" * len(shots)]
    lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in rows]
    return "\n".join(lines) + "\n"


def ablation_latex(abl: pd.DataFrame) -> str:
    """The :func:`ablation_markdown` table as a booktabs tabular, the difference rows under a rule."""
    shots, rows = _ablation_grid(abl)
    lines = [r"\begin{tabular}{l" + "c" * len(shots) + "}", r"\toprule",
             r"Accuracy (\%) & " + " & ".join(shot_label(s) for s in shots) + r" \\", r"\midrule"]
    ruled = False
    for name, row in rows:
        if name.startswith("difference") and not ruled:
            lines.append(r"\midrule")
            ruled = True
        cells = [c.replace("±", r"$\pm$") for c in row]
        lines.append(_tex_escape(name) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


HTML_STYLE = ("body{font-family:sans-serif;margin:1em;color:#111}"
              "table{border-collapse:collapse;margin:0 0 1.5em 0}"
              "caption{text-align:left;font-weight:bold;padding:4px 0}"
              "th,td{border:1px solid #999;padding:4px 10px}td{text-align:right}"
              "td:first-child,th:first-child{text-align:left}"
              "thead th{background:#dbe7f3}tbody tr:nth-child(even){background:#f3f3f3}")


def _html_page(title: str, tables: list[tuple[str, list[str], list[list[tuple[str, bool]]]]]) -> str:
    """A small stand-alone HTML page (the Snakemake report shows .html results inline, not .md/.csv).
    ``tables``: (caption, header, rows of (text, bold) cells)."""
    from html import escape

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             f"<style>{HTML_STYLE}</style></head><body>"]
    for caption, header, rows in tables:
        parts.append(f"<table><caption>{escape(caption)}</caption><thead><tr>"
                     + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td><b>{escape(t)}</b></td>" if b else f"<td>{escape(t)}</td>"
                                          for t, b in row) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def to_html(table: pd.DataFrame) -> str:
    """The :func:`to_markdown` layout (accuracy and ROC AUC tables, best per column in bold) as HTML."""
    tables = []
    for metric, title in BLOCKS:
        methods, shots, cells, bold = _grid(table, metric)
        rows = [[(m, False)] + [("-", False) if (m, s) not in cells else (_fmt(*cells[(m, s)]), (m, s) in bold)
                                for s in shots] for m in methods]
        tables.append((f"Few-shot {title}, held-out patients (mean ± std over draws)",
                       ["Method"] + [shot_label(s) for s in shots], rows))
    return _html_page("Few-shot results", tables)


def ablation_html(abl: pd.DataFrame) -> str:
    """The :func:`ablation_markdown` table as HTML."""
    shots, rows = _ablation_grid(abl)
    header = [""] + [shot_label(s) for s in shots]
    return _html_page("Ablation", [("Accuracy (%), FiVE and its ablations", header,
                                    [[(name, False)] + [(c, False) for c in row] for name, row in rows])])


def plot_fewshot(table: pd.DataFrame, out_png: str | Path) -> None:
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 4))
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
    save_figure(fig, out_png)


def evaluate_predictions(files: list[str], out, classes: list[str], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """``out`` has attributes csv, md, tex, runs, plot and optionally html, ablation_csv, ablation_md,
    ablation_html, ablation_tex, roc, confusion (the Snakemake output object works). ``n_boot`` resamples with ``seed`` for the
    bootstrap CIs."""
    pred = load_predictions(files)
    runs = per_run_metrics(pred, classes=classes)
    table = summarize(pred, classes=classes, runs=runs, n_boot=n_boot, seed=seed)
    table = table.sort_values(["method", "shots"]).reset_index(drop=True)
    with atomic_path(out.csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    atomic_write_text(out.md, to_markdown(table))
    atomic_write_text(out.tex, to_latex(table))
    if getattr(out, "html", None) is not None:
        atomic_write_text(out.html, to_html(table))
    with atomic_path(out.runs) as tmp:
        runs.to_csv(tmp, index=False, float_format="%.4f")
    plot_fewshot(table, out.plot)
    roc_png, confusion_png = getattr(out, "roc", None), getattr(out, "confusion", None)
    if roc_png is not None or confusion_png is not None:
        from .plots import plot_confusion, plot_roc  # plots imports this module

        if roc_png is not None:
            plot_roc(pred, classes, roc_png)
        if confusion_png is not None:
            plot_confusion(pred, classes, confusion_png)
    abl_csv, abl_md = getattr(out, "ablation_csv", None), getattr(out, "ablation_md", None)
    abl_html, abl_tex = getattr(out, "ablation_html", None), getattr(out, "ablation_tex", None)
    if any(f is not None for f in (abl_csv, abl_md, abl_html, abl_tex)):
        abl = ablation_table(table, runs)
        if abl_csv is not None:
            with atomic_path(abl_csv) as tmp:
                abl.to_csv(tmp, index=False, float_format="%.4f")
        if abl_md is not None:
            atomic_write_text(abl_md, ablation_markdown(abl))
        if abl_html is not None:
            atomic_write_text(abl_html, ablation_html(abl))
        if abl_tex is not None:
            atomic_write_text(abl_tex, ablation_latex(abl))
    return table
