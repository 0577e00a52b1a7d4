"""The one registry of optimistic result rows: methods whose numbers were selected on the test set itself.

A method whose name ends in a registered suffix is optimistic. Every table labels such a row from
here (``tables/fewshot.csv``'s ``note`` column; a dagger after the method name and a footnote in the
md / tex / html tables; the plot legends), and such a row never takes the bold best-per-column cell.
No table hard-codes a method name.

- ``-bestepoch`` (``FiVE-bestepoch``, ``train.zeroshot_epoch: best_on_test``): FiVE's zero-shot
  predictions at the pre-training epoch with the best accuracy on the test split, the authors'
  model selection (they keep the best epoch on the file they report on). The honest ``FiVE``
  zero-shot row (the final epoch) stays beside it.

This module imports nothing: the workflow reads it while Snakemake parses the rules.
"""

from __future__ import annotations

#: method-name suffix of the zero-shot row whose epoch was chosen on the test split
BESTEPOCH = "-bestepoch"
#: suffix -> the note every table prints for rows of that kind
OPTIMISTIC = {BESTEPOCH: "epoch chosen on the test set: optimistic"}
#: the mark after an optimistic method's name in the md / tex / html tables and the plot legends
DAGGER = "†"
#: parquet key-value metadata of a selected row's prediction file: JSON with at least ``method``, ``epoch``
#: and ``n_epochs`` (the chosen epoch goes into that row's note)
SELECTION_KEY = "fiveflow_selection"


def bestepoch_method(five: str = "FiVE") -> str:
    """The method name of ``five``'s best-epoch zero-shot row, e.g. ``FiVE-bestepoch``."""
    return f"{five}{BESTEPOCH}"


def _suffix(method) -> str | None:
    m = str(method)
    return next((s for s in OPTIMISTIC if m.endswith(s) and len(m) > len(s)), None)


def is_optimistic(method) -> bool:
    return _suffix(method) is not None


def optimistic_note(method) -> str:
    """The registry's note for ``method`` ("" for an honest method)."""
    s = _suffix(method)
    return OPTIMISTIC[s] if s else ""


def base_method(method) -> str:
    """``method`` without its optimistic suffix (``FiVE-bestepoch`` -> ``FiVE``); honest methods unchanged."""
    s = _suffix(method)
    return str(method)[: -len(s)] if s else str(method)


def selection_detail(selection: dict) -> str:
    """The chosen epoch of a selection record (:data:`SELECTION_KEY`) as the note's suffix."""
    if selection.get("epoch") is None:
        return ""
    of = f" of {selection['n_epochs']}" if selection.get("n_epochs") is not None else ""
    return f"epoch {selection['epoch']}{of}"


def display_name(method) -> str:
    """The row label of the md / tex / html tables and the plots: the name, plus a dagger when optimistic."""
    return f"{method} {DAGGER}" if is_optimistic(method) else str(method)
