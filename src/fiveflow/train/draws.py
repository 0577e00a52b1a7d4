"""One driver for every few-shot method (FiVE and the MIL baselines): same bags, split and draws."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..logs import logging_to
from .common import resolve_device, seed_everything, set_threads
from .data import BagStore
from .predictions import class_names_texts, draws_for, prediction_frame, read_split, test_rows, write_predictions

# fit_predict(store, train_ids, train_y, test_ids, seed, device) -> P(positive) for test_ids, or
# (P(positive), [per-instance scores [N_i] of each test bag]) for heatmaps
FitPredict = Callable[
    [BagStore, Sequence[str], np.ndarray, Sequence[str], int, object],
    "np.ndarray | tuple[np.ndarray, list[np.ndarray]]",
]


def run_draws(
    method: str,
    fit_predict: FitPredict,
    split_csv: str | Path,
    draws_csv: str | Path,
    bag_paths: dict[str, str],
    cfg: dict,
    shots: int,
    out_parquet: str | Path | None,
    threads: int = 1,
    log=None,
    position: str = "coords",
    attention_dir: str | Path | None = None,
    attention_runs: Sequence[int] = (0,),
    attention_kind: str = "attention",
) -> pd.DataFrame:
    """Train ``fit_predict`` on every draw of ``shots`` (seeded by the draw) and predict the test split.

    ``position`` is how bags expose instance positions (``coords`` or ``index``). When ``fit_predict``
    returns ``(prob, attentions)`` and ``attention_dir`` is given, the per-instance scores of the runs
    in ``attention_runs`` are written to ``attention_dir/{slide}.parquet`` (the last such run wins
    when several are listed), tagged ``attention_kind``; the predictions are the same either way.
    """
    with logging_to(log) as logger:
        set_threads(threads)
        device = resolve_device(cfg["train"]["device"])
        names, _ = class_names_texts(cfg)
        split = read_split(split_csv, names)
        test = test_rows(split)
        label_of = dict(zip(split["slide_id"], split["label"]))
        store = BagStore(bag_paths, position)
        frames = []
        for run, (seed, slide_ids) in draws_for(draws_csv, shots, split).items():
            seed_everything(seed)
            y = np.array([names.index(label_of[s]) for s in slide_ids], dtype=np.int64)
            test_ids = test["slide_id"].tolist()
            prob = fit_predict(store, slide_ids, y, test_ids, seed, device)
            attentions = None
            if isinstance(prob, tuple):
                prob, attentions = prob
            if attention_dir is not None and run in set(attention_runs):
                if attentions is None:
                    raise ValueError(f"{method}: attention_dir given, but its fit_predict returns no attention")
                from ..evaluate.attention import save_run_attention

                n = len(
                    save_run_attention(
                        attention_dir,
                        bag_paths,
                        test_ids,
                        attentions,
                        prob,
                        method,
                        attention_kind,
                        logger,
                        labels=label_of,
                        shots=int(shots),
                        run=int(run),
                        seed=int(seed),
                    )
                )
                logger.info(
                    "%s %d-shot run %d: attention of %d/%d test slides -> %s",
                    method,
                    shots,
                    run,
                    n,
                    len(test_ids),
                    attention_dir,
                )
            frames.append(prediction_frame(method, shots, run, test, prob, names))
            logger.info("%s %d-shot run %d done", method, shots, run)
        if attention_dir is not None:
            Path(attention_dir).mkdir(parents=True, exist_ok=True)  # a directory() output, even if empty
        return write_predictions(frames, out_parquet)
