"""MIL baselines on the same bags and few-shot draws as FiVE: ``meanpool``, ``abmil``, ``clam_sb``, ``dsmil``,
``transmil`` (the attention-MIL ones share the training loop in :mod:`.mil_loop`)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import abmil, clam_sb, dsmil, meanpool, transmil
from ..train.draws import run_draws

BASELINES = {"meanpool": meanpool.fit_predict, "abmil": abmil.fit_predict, "clam_sb": clam_sb.fit_predict,
             "dsmil": dsmil.fit_predict, "transmil": transmil.fit_predict}


def run_baseline(name: str, split_csv: str | Path, draws_csv: str | Path, bag_paths: dict[str, str], cfg: dict,
                 shots: int, out_parquet: str | Path | None, threads: int = 1, log=None) -> pd.DataFrame:
    """Run baseline ``name`` on every draw of ``shots``; method column = ``name``."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return run_draws(name, BASELINES[name], split_csv, draws_csv, bag_paths, cfg, shots, out_parquet, threads, log)
