"""MIL baselines on the same bags and few-shot draws as FiVE: ``meanpool``, ``abmil``, ``clam_sb``, ``dsmil``,
``transmil`` (the attention-MIL ones share the training loop in :mod:`.mil_loop`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..train.draws import run_draws
from . import abmil, clam_sb, dsmil, meanpool, transmil
from .mil_loop import collect_attention

BASELINES = {
    "meanpool": meanpool.fit_predict,
    "abmil": abmil.fit_predict,
    "clam_sb": clam_sb.fit_predict,
    "dsmil": dsmil.fit_predict,
    "transmil": transmil.fit_predict,
}
#: what each baseline's per-instance scores are (meanpool: the linear probe's logit of each instance)
ATTENTION_KIND = {
    "meanpool": "instance_logit",
    "abmil": "attention",
    "clam_sb": "attention",
    "dsmil": "attention",
    "transmil": "attention",
}


def with_attention(fit_predict):
    """``fit_predict`` returning ``(P(positive), [instance scores [N_i] per test bag])`` for :func:`run_draws`."""

    def fp(*args, **kwargs):
        with collect_attention() as sink:
            prob = fit_predict(*args, **kwargs)
        if not sink:
            raise RuntimeError(f"{getattr(fit_predict, '__module__', fit_predict)}: posted no instance scores")
        return prob, sink[-1]

    return fp


def run_baseline(
    name: str,
    split_csv: str | Path,
    draws_csv: str | Path,
    bag_paths: dict[str, str],
    cfg: dict,
    shots: int,
    out_parquet: str | Path | None,
    threads: int = 1,
    log=None,
    attention_dir: str | Path | None = None,
    attention_runs=(0,),
) -> pd.DataFrame:
    """Run baseline ``name`` on every draw of ``shots``; method column = ``name``. With ``attention_dir``,
    the instance scores of the runs ``attention_runs`` go to ``attention_dir/{slide}.parquet``."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    fit_predict = BASELINES[name] if attention_dir is None else with_attention(BASELINES[name])
    return run_draws(
        name,
        fit_predict,
        split_csv,
        draws_csv,
        bag_paths,
        cfg,
        shots,
        out_parquet,
        threads,
        log,
        attention_dir=attention_dir,
        attention_runs=attention_runs,
        attention_kind=ATTENTION_KIND[name],
    )
