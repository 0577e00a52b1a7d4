"""Few-shot tables (csv / Markdown / LaTeX / HTML), per-run metrics and the accuracy-vs-shots plot.

Optimistic rows (:mod:`fiveflow.evaluate.optimistic`, e.g. ``FiVE-bestepoch``) carry a dagger after
their name and a footnote with the registry's note under the tables (``note`` in the csv); they never
take the bold best-per-column cell.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..fileio import atomic_path, atomic_write_text
from ..layout import EvaluateOutputs
from ..train.ablations import BASE, HISTOTYPE, is_five
from .figures import pyplot, save_figure
from .metrics import per_run_metrics, summarize
from .optimistic import (
    DAGGER,
    SELECTION_KEY,
    base_method,
    display_name,
    is_optimistic,
    optimistic_note,
    selection_detail,
)
from .paired import MARK, paired_differences, paired_grid, paired_note

METRICS = ("acc", "auc", "f1auth", "f1")
# row order of the paper tables: FiVE, its ablations (``FiVE-*``, alphabetical), the baselines in
# this order, then any other method alphabetically; an optimistic row right after its honest one
# FiVE's own rows first: FiVE, then FiVE+histotype (descriptions naming the type: reports.name_histotype)
FIVE_BASES = (BASE, BASE + HISTOTYPE)
BASELINE_ORDER = ("meanpool", "abmil", "clam_sb", "dsmil", "transmil")
# one table per metric (a metric whose ``<stem>_mean`` column the summary lacks is left out): the
# authors' F1 (binary, positive class, ROC-optimal threshold) beside ours (macro at 0.5)
BLOCKS = (
    ("acc", "Accuracy (%)"),
    ("auc", "ROC AUC (%)"),
    ("f1auth", "F1, authors' definition (%): positive class at the ROC-optimal threshold"),
    ("f1", "F1, ours (%): macro F1 at probability 0.5"),
)
PAIRED_TITLE = "accuracy, percentage points, paired 95% CI"
MD_TITLES = {
    "acc": "accuracy, %",
    "auc": "ROC AUC, %",
    "f1auth": "authors' F1: positive class, ROC-optimal threshold, %",
    "f1": "our F1: macro at 0.5, %",
}


def _blocks(table: pd.DataFrame) -> list[tuple[str, str]]:
    return [(m, t) for m, t in BLOCKS if f"{m}_mean" in table.columns]


def footnotes(table: pd.DataFrame) -> list[str]:
    """``† <method>: <note>`` for every optimistic method of ``table`` (its ``note`` column, else the
    registry's note), in table order."""
    notes = {}
    for _, r in table.iterrows():
        m = str(r["method"])
        if is_optimistic(m):
            note = r.get("note")
            notes.setdefault(m, note if isinstance(note, str) and note else optimistic_note(m))
    return [f"{DAGGER} {m}: {notes[m]}" for m in method_order(notes)]


def protocol_note(table: pd.DataFrame) -> str | None:
    """The line under every table that says which protocol FiVE's rows ran under (``protocol`` column,
    :mod:`fiveflow.protocol`): the authors' settings, or fiveflow's with the deviating keys named."""
    if "protocol" not in table.columns:
        return None
    five = table[[is_five(str(m)) for m in table["method"]]]
    labels = sorted({str(x) for x in five["protocol"].dropna() if str(x)})
    if not labels:
        return None
    keys = sorted({k for x in five.get("deviations", pd.Series(dtype=str)).dropna() for k in str(x).split() if k})
    text = f"FiVE rows: protocol {', '.join(labels)}"
    if keys:
        text += " from the authors' settings (config/presets/five_faithful.yaml restores them): " + ", ".join(keys)
    return text


def with_protocol(table: pd.DataFrame, protocol: dict | None) -> pd.DataFrame:
    """Add ``protocol`` (label) and ``deviations`` (space-separated config keys) columns: FiVE's rows carry
    ``protocol`` (:func:`fiveflow.protocol.protocol_label`), the baselines ``baseline`` (their own recipes)."""
    if protocol is None:
        return table
    table = table.copy()
    five = [is_five(str(m)) for m in table["method"]]
    table["protocol"] = [protocol["label"] if f else "baseline" for f in five]
    table["deviations"] = [" ".join(protocol.get("deviations", [])) if f else "" for f in five]
    return table


_REMAKE = (
    "point at the prediction files training wrote (results/predictions/METHOD_SHOTS.parquet), or make this one again"
)


def _shown(v) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def check_predictions(df: pd.DataFrame, f: str) -> pd.DataFrame:
    """The predictions contract (CONTRACTS.md): every column there, ``shots``/``run`` whole numbers >= 0,
    ``prob`` a probability, ids and labels present; a ``ValueError`` naming the file, the column and
    the first bad row otherwise (a hand-made or truncated file must not end in a KeyError deep inside
    the metrics). Returns the table with ``shots``/``run`` as int64 and ``prob`` as float64."""
    from ..train.predictions import PRED_COLUMNS

    missing = [c for c in PRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{f}: not a predictions table: missing column(s) {missing} (found {list(df.columns)[:10]}). Fix: {_REMAKE}"
        )
    if df.empty:
        raise ValueError(f"{f}: a predictions table with no rows. Fix: {_REMAKE}")
    df = df.copy()
    for col in ("shots", "run"):
        num = pd.to_numeric(df[col], errors="coerce")
        bad = num.isna() | (num.abs() == float("inf")) | (num < 0) | (num != num.round())
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise ValueError(
                f"{f}: row {i}: `{col}` is {_shown(df[col].iloc[i])}, not a whole number >= 0. Fix: {_REMAKE}"
            )
        df[col] = num.astype("int64")
    prob = pd.to_numeric(df["prob"], errors="coerce")
    bad = prob.isna() | (prob < 0) | (prob > 1)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise ValueError(
            f"{f}: row {i}: `prob` is {_shown(df['prob'].iloc[i])}, not a probability in [0, 1] "
            f"({int(bad.sum())} such row(s)). Fix: {_REMAKE}"
        )
    df["prob"] = prob.astype("float64")
    for col in ("method", "slide_id", "label"):
        empty = df[col].isna() | df[col].astype(str).str.strip().eq("")
        if empty.any():
            raise ValueError(f"{f}: row {int(empty.to_numpy().argmax())}: empty `{col}`. Fix: {_REMAKE}")
        df[col] = df[col].astype(str)
    return df


def _read_predictions(f: str) -> pd.DataFrame:
    from ..errors import reading

    with reading(f, "predictions parquet", _REMAKE):
        df = pd.read_parquet(f)
    return check_predictions(df, f)


def load_predictions(files: list[str]) -> pd.DataFrame:
    frames = [_read_predictions(f) for f in files]
    if not frames:
        raise ValueError("no prediction files to evaluate")
    return pd.concat(frames, ignore_index=True)


def selections(files: list[str]) -> dict[str, dict]:
    """``method -> selection record`` of the prediction files that carry one (:data:`SELECTION_KEY`
    metadata, e.g. the epoch ``FiVE-bestepoch`` was chosen at)."""
    import pyarrow.parquet as pq

    out = {}
    for f in files:
        meta = pq.read_schema(f).metadata or {}
        raw = meta.get(SELECTION_KEY.encode())
        if raw:
            rec = json.loads(raw)
            out[str(rec.get("method"))] = rec
    return out


def add_selection_notes(table: pd.DataFrame, files: list[str]) -> pd.DataFrame:
    """Append the chosen epoch of each selected method (:func:`selections`) to its ``note``."""
    sel = selections(files)
    if not sel or "note" not in table.columns:
        return table
    table = table.copy()
    for i, m in table["method"].astype(str).items():
        detail = selection_detail(sel.get(m, {}))
        if detail:
            note = table.at[i, "note"] or optimistic_note(m)
            table.at[i, "note"] = f"{note} ({detail})" if note else detail
    return table


def _fmt(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if not pd.isna(std) else f"{100 * mean:.2f}"


def method_order(methods) -> list[str]:
    def honest_key(m):
        if m in FIVE_BASES:
            return (0, FIVE_BASES.index(m), m)
        if is_five(m):
            return (1, 0, m)
        if m in BASELINE_ORDER:
            return (2, BASELINE_ORDER.index(m), m)
        return (3, 0, m)

    def key(m):
        m = str(m)
        return (*honest_key(base_method(m)), is_optimistic(m), m)

    return sorted({str(m) for m in methods}, key=key)


def shot_label(shots: int) -> str:
    return "zero-shot" if int(shots) == 0 else f"{int(shots)}-shot"


def _grid(table: pd.DataFrame, metric: str):
    """methods, shots, {(method, shots): (mean, std)} and the set of bold cells (best displayed
    mean per shots column among the honest rows; ties all bold)."""
    methods = method_order(table["method"])
    shots = sorted({int(s) for s in table["shots"]})
    cells = {
        (str(r["method"]), int(r["shots"])): (r[f"{metric}_mean"], r[f"{metric}_std"]) for _, r in table.iterrows()
    }
    bold = set()
    for s in shots:
        vals = {
            m: round(100 * cells[(m, s)][0], 2)
            for m in methods
            if (m, s) in cells and not pd.isna(cells[(m, s)][0]) and not is_optimistic(m)
        }
        if vals:
            best = max(vals.values())
            bold |= {(m, s) for m, v in vals.items() if v == best}
    return methods, shots, cells, bold


def to_markdown(table: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """Paper layout: one table per metric (accuracy, AUC, the authors' F1, our F1; named in the first
    header cell, tables separated by a blank line), methods as rows, shots as columns,
    cells "mean ± std" in %, "-" where a method has no such shots, best mean per column in bold;
    optimistic rows marked with a dagger, explained under the last table. ``paired``
    (:func:`fiveflow.evaluate.paired.paired_differences`) adds the table of FiVE's paired accuracy
    differences with their bootstrap CIs, ``*`` where the CI excludes 0."""
    parts = []
    for metric, _title in _blocks(table):
        methods, shots, cells, bold = _grid(table, metric)
        lines = [
            f"| Method ({MD_TITLES[metric]}) | " + " | ".join(shot_label(s) for s in shots) + " |",
            "|---|" + "---:|" * len(shots),
        ]
        for m in methods:
            row = []
            for s in shots:
                if (m, s) not in cells:
                    row.append("-")
                    continue
                txt = _fmt(*cells[(m, s)])
                row.append(f"**{txt}**" if (m, s) in bold else txt)
            lines.append(f"| {display_name(m)} | " + " | ".join(row) + " |")
        parts.append("\n".join(lines) + "\n")
    if paired is not None and len(paired):
        shots, rows = paired_grid(paired, "acc", sorted({int(s) for s in table["shots"]}))
        lines = [
            f"| Paired difference ({PAIRED_TITLE}) | " + " | ".join(shot_label(s) for s in shots) + " |",
            "|---|" + "---:|" * len(shots),
        ]
        lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in rows]
        parts.append("\n".join(lines) + "\n")
    notes = footnotes(table) + [n for n in [protocol_note(table)] if n]
    if paired is not None and len(paired):
        notes.append(paired_note(paired))
    if notes:
        parts.append("\n\n".join(notes) + "\n")
    return "\n".join(parts)


def _tex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def to_latex(table: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """The :func:`to_markdown` layout as a booktabs tabular (best per column in ``\\textbf{}``, an
    optimistic row's name followed by ``$^\\dagger$``, its footnote as the tabular's last row; the
    paired differences, when given, as the last block)."""
    shots = sorted({int(s) for s in table["shots"]})
    lines = [
        r"\begin{tabular}{l" + "c" * len(shots) + "}",
        r"\toprule",
        "Method & " + " & ".join(shot_label(s) for s in shots) + r" \\",
    ]
    for metric, title in _blocks(table):
        methods, _, cells, bold = _grid(table, metric)
        lines += [
            r"\midrule",
            rf"\multicolumn{{{len(shots) + 1}}}{{l}}{{\textit{{{_tex_escape(title)}}}}} \\",
            r"\midrule",
        ]
        prev = None
        for m in methods:
            group = "five" if is_five(m) else "other"
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
            name = _tex_escape(m) + (r"$^\dagger$" if is_optimistic(m) else "")
            lines.append(name + " & " + " & ".join(row) + r" \\")
    if paired is not None and len(paired):
        _, rows = paired_grid(paired, "acc", shots)
        lines += [
            r"\midrule",
            rf"\multicolumn{{{len(shots) + 1}}}{{l}}{{\textit{{Paired difference, "
            rf"{_tex_escape(PAIRED_TITLE)}}}}} \\",
            r"\midrule",
        ]
        lines += [
            _tex_escape(name).replace("−", "$-$") + " & " + " & ".join(c.replace("*", "$^*$") for c in row) + r" \\"
            for name, row in rows
        ]
    lines.append(r"\bottomrule")
    for note in footnotes(table):
        text = _tex_escape(note[len(DAGGER) :].strip())
        lines.append(rf"\multicolumn{{{len(shots) + 1}}}{{l}}{{\footnotesize $^\dagger$ {text}}} \\")
    proto = protocol_note(table)
    if proto:
        lines.append(
            rf"\multicolumn{{{len(shots) + 1}}}{{p{{0.9\linewidth}}}}{{\footnotesize {_tex_escape(proto)}}} \\"
        )
    if paired is not None and len(paired):
        text = _tex_escape(paired_note(paired)).replace("*", "$^*$")
        lines.append(rf"\multicolumn{{{len(shots) + 1}}}{{p{{0.9\linewidth}}}}{{\footnotesize {text}}} \\")
    lines += [r"\end{tabular}", ""]
    return "\n".join(lines)


def ablation_table(table: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long format: one row per (row, shots) with ``acc_mean, acc_std, n_runs``; rows are FiVE, every
    ``FiVE-*`` method (ablations; not the optimistic rows, which are no ablation) and
    ``difference (FiVE - <ablation>)``. A difference's mean is the difference
    of the mean accuracies; its std is the std (ddof 0) of the per-run paired differences when both
    methods have the same runs (the runs share their few-shot draws), else NaN."""
    cols = ["row", "shots", "n_runs", "acc_mean", "acc_std"]
    methods = [m for m in method_order(table["method"]) if is_five(m) and not is_optimistic(m)]
    # the reference row: FiVE, or FiVE+histotype when the descriptions named the type (reports.name_histotype)
    base = next((m for m in methods if m in FIVE_BASES), FIVE_BASES[0])
    t = table[table["method"].astype(str).isin(methods)]
    rows = [
        {
            "row": str(r["method"]),
            "shots": int(r["shots"]),
            "n_runs": int(r["n_runs"]),
            "acc_mean": r["acc_mean"],
            "acc_std": r["acc_std"],
        }
        for _, r in t.iterrows()
    ]
    five = {int(r["shots"]): r for _, r in t[t["method"] == base].iterrows()}
    for abl in (m for m in methods if m != base):
        for _, r in t[t["method"] == abl].iterrows():
            s = int(r["shots"])
            if s not in five:
                continue
            std = float("nan")
            if runs is not None:
                a = runs[(runs["method"] == base) & (runs["shots"] == s)].set_index("run")["acc"]
                b = runs[(runs["method"] == abl) & (runs["shots"] == s)].set_index("run")["acc"]
                if len(a) and set(a.index) == set(b.index):
                    std = float((a - b.loc[a.index]).std(ddof=0))
            rows.append(
                {
                    "row": f"difference ({base} - {abl})",
                    "shots": s,
                    "n_runs": int(r["n_runs"]),
                    "acc_mean": five[s]["acc_mean"] - r["acc_mean"],
                    "acc_std": std,
                }
            )
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
                row.append(
                    f"{100 * r['acc_mean']:+.2f}"
                    + (f" ± {100 * r['acc_std']:.2f}" if not pd.isna(r["acc_std"]) else "")
                )
            else:
                row.append(_fmt(r["acc_mean"], r["acc_std"]))
        rows.append((name, row))
    return shots, rows


def ablation_markdown(abl: pd.DataFrame) -> str:
    """Rows as in :func:`ablation_table`, shots as columns, accuracy (%) mean ± std ("-": missing)."""
    shots, rows = _ablation_grid(abl)
    lines = [
        "**Accuracy (%), FiVE and its ablations**",
        "",
        "| | " + " | ".join(shot_label(s) for s in shots) + " |",
        "|---|" + "---:|" * len(shots),
    ]
    lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in rows]
    return "\n".join(lines) + "\n"


def ablation_latex(abl: pd.DataFrame) -> str:
    """The :func:`ablation_markdown` table as a booktabs tabular, the difference rows under a rule."""
    shots, rows = _ablation_grid(abl)
    lines = [
        r"\begin{tabular}{l" + "c" * len(shots) + "}",
        r"\toprule",
        r"Accuracy (\%) & " + " & ".join(shot_label(s) for s in shots) + r" \\",
        r"\midrule",
    ]
    ruled = False
    for name, row in rows:
        if name.startswith("difference") and not ruled:
            lines.append(r"\midrule")
            ruled = True
        cells = [c.replace("±", r"$\pm$") for c in row]
        lines.append(_tex_escape(name) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


HTML_STYLE = (
    "body{font-family:sans-serif;margin:1em;color:#111}"
    "table{border-collapse:collapse;margin:0 0 1.5em 0}"
    "caption{text-align:left;font-weight:bold;padding:4px 0}"
    "th,td{border:1px solid #999;padding:4px 10px}td{text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    "thead th{background:#dbe7f3}tbody tr:nth-child(even){background:#f3f3f3}"
)


def _html_page(
    title: str, tables: list[tuple[str, list[str], list[list[tuple[str, bool]]]]], notes: list[str] = ()
) -> str:
    """A small stand-alone HTML page (the Snakemake report shows .html results inline, not .md/.csv).
    ``tables``: (caption, header, rows of (text, bold) cells); ``notes``: footnote paragraphs after them."""
    from html import escape

    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
        f"<style>{HTML_STYLE}</style></head><body>",
    ]
    for caption, header, rows in tables:
        parts.append(
            f"<table><caption>{escape(caption)}</caption><thead><tr>"
            + "".join(f"<th>{escape(h)}</th>" for h in header)
            + "</tr></thead><tbody>"
        )
        for row in rows:
            parts.append(
                "<tr>"
                + "".join(f"<td><b>{escape(t)}</b></td>" if b else f"<td>{escape(t)}</td>" for t, b in row)
                + "</tr>"
            )
        parts.append("</tbody></table>")
    parts += [f"<p class='note'>{escape(n)}</p>" for n in notes]
    parts.append("</body></html>\n")
    return "".join(parts)


def to_html(table: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """The :func:`to_markdown` layout (one table per metric, best per column in bold, optimistic rows
    with a dagger and their footnote under the tables, then the paired differences) as HTML."""
    tables = []
    for metric, title in _blocks(table):
        methods, shots, cells, bold = _grid(table, metric)
        rows = [
            [(display_name(m), False)]
            + [("-", False) if (m, s) not in cells else (_fmt(*cells[(m, s)]), (m, s) in bold) for s in shots]
            for m in methods
        ]
        tables.append(
            (
                f"Few-shot {title}, held-out patients (mean ± std over draws)",
                ["Method"] + [shot_label(s) for s in shots],
                rows,
            )
        )
    notes = footnotes(table) + [n for n in [protocol_note(table)] if n]
    if paired is not None and len(paired):
        shots = sorted({int(s) for s in table["shots"]})
        _, prow = paired_grid(paired, "acc", shots)
        tables.append(
            (
                f"Paired difference, {PAIRED_TITLE}",
                ["Pair"] + [shot_label(s) for s in shots],
                [[(name, False)] + [(c, c.endswith(MARK)) for c in row] for name, row in prow],
            )
        )
        notes.append(paired_note(paired))
    return _html_page("Few-shot results", tables, notes)


def ablation_html(abl: pd.DataFrame) -> str:
    """The :func:`ablation_markdown` table as HTML."""
    shots, rows = _ablation_grid(abl)
    header = [""] + [shot_label(s) for s in shots]
    return _html_page(
        "Ablation",
        [
            (
                "Accuracy (%), FiVE and its ablations",
                header,
                [[(name, False)] + [(c, False) for c in row] for name, row in rows],
            )
        ],
    )


def plot_fewshot(table: pd.DataFrame, out_png: str | Path) -> None:
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in zip(axes, ("acc", "auc"), ("Accuracy", "ROC AUC")):
        for method, g in table.groupby("method"):
            few = g[g["shots"] > 0].sort_values("shots")
            if len(few):
                ax.errorbar(
                    few["shots"],
                    few[f"{metric}_mean"],
                    yerr=few[f"{metric}_std"].fillna(0),
                    marker="o",
                    capsize=3,
                    label=display_name(method),
                )
            zero = g[g["shots"] == 0]
            if len(zero):
                optimistic = is_optimistic(method)
                ax.axhline(
                    zero[f"{metric}_mean"].iloc[0],
                    ls=":" if optimistic else "--",
                    lw=1,
                    color="grey",
                    label=f"{display_name(method)} zero-shot" + (" (optimistic)" if optimistic else ""),
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("shots (slides per class)")
        ax.set_ylabel(title)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{title} on held-out patients")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out_png)


def evaluate_predictions(
    files: list[str], out, classes: list[str], n_boot: int = 1000, seed: int = 0, protocol: dict | None = None
) -> pd.DataFrame:
    """Write the evaluation files ``out`` names: a :class:`fiveflow.layout.EvaluateOutputs`, or any object with
    its attributes (Snakemake's ``output``): csv, md, tex, runs, plot and optionally html, paired (FiVE's paired
    differences, :mod:`fiveflow.evaluate.paired`), ablation_csv, ablation_md, ablation_html, ablation_tex, roc,
    confusion. md, tex and html show the paired accuracy differences too. ``n_boot`` resamples with ``seed`` for
    the bootstrap CIs. ``protocol`` (``{"label": ..., "deviations": [keys]}``, :mod:`fiveflow.protocol`) labels
    FiVE's rows with the settings they ran under (columns ``protocol``, ``deviations`` and a note under each table)."""
    out = EvaluateOutputs.of(out)
    pred = load_predictions(files)
    runs = per_run_metrics(pred, classes=classes)
    table = summarize(pred, classes=classes, runs=runs, n_boot=n_boot, seed=seed)
    table = add_selection_notes(table.sort_values(["method", "shots"]).reset_index(drop=True), files)
    table = with_protocol(table, protocol)
    paired = paired_differences(pred, classes=classes, n_boot=n_boot, seed=seed)
    with atomic_path(out.csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    if out.paired is not None:
        with atomic_path(out.paired) as tmp:
            paired.to_csv(tmp, index=False, float_format="%.4f")
    atomic_write_text(out.md, to_markdown(table, paired))
    atomic_write_text(out.tex, to_latex(table, paired))
    if out.html is not None:
        atomic_write_text(out.html, to_html(table, paired))
    with atomic_path(out.runs) as tmp:
        runs.to_csv(tmp, index=False, float_format="%.4f")
    plot_fewshot(table, out.plot)
    if out.roc is not None or out.confusion is not None:
        from .plots import plot_confusion, plot_roc  # plots imports this module

        if out.roc is not None:
            plot_roc(pred, classes, out.roc)
        if out.confusion is not None:
            plot_confusion(pred, classes, out.confusion)
    ablation_files = (out.ablation_csv, out.ablation_md, out.ablation_html, out.ablation_tex)
    if any(f is not None for f in ablation_files):
        abl = ablation_table(table, runs)
        if out.ablation_csv is not None:
            with atomic_path(out.ablation_csv) as tmp:
                abl.to_csv(tmp, index=False, float_format="%.4f")
        if out.ablation_md is not None:
            atomic_write_text(out.ablation_md, ablation_markdown(abl))
        if out.ablation_html is not None:
            atomic_write_text(out.ablation_html, ablation_html(abl))
        if out.ablation_tex is not None:
            atomic_write_text(out.ablation_tex, ablation_latex(abl))
    return table
