"""Prediction tables (CONTRACTS.md ``predictions/{method}_{shots}.parquet``) and split helpers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..fileio import atomic_path

PRED_COLUMNS = ["method", "shots", "run", "slide_id", "patient_id", "label", "prob", "pred"]


def class_names_texts(cfg: dict) -> tuple[list[str], list[str]]:
    """Class names and texts from ``cfg['classes']``; the second class is the positive one."""
    classes = cfg["classes"]
    return [str(c["name"]) for c in classes], [str(c["text"]) for c in classes]


def read_split(split_csv: str | Path, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    split = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    missing = {"slide_id", "patient_id", "label", "split"} - set(split.columns)
    if missing:
        raise KeyError(f"{split_csv}: missing columns {sorted(missing)}")
    if class_names is not None:
        bad = sorted(set(split["label"]) - set(class_names))
        if bad:
            raise ValueError(
                f"{split_csv}: labels {bad} are not among the configured classes {list(class_names)}. "
                "Fix: make `classes[*].name` match the sample sheet's labels."
            )
    return split


def test_rows(split: pd.DataFrame) -> pd.DataFrame:
    test = split[split["split"] == "test"].reset_index(drop=True)
    if test.empty:
        raise ValueError("the split has no test slides")
    return test


def prediction_frame(
    method: str, shots: int, run: int, rows: pd.DataFrame, prob: np.ndarray, class_names: Sequence[str]
) -> pd.DataFrame:
    """One row per slide of ``rows``; ``pred`` = positive class when ``prob >= 0.5``."""
    prob = np.asarray(prob, dtype=np.float64)
    return pd.DataFrame(
        {
            "method": method,
            "shots": np.full(len(rows), int(shots), dtype=np.int64),
            "run": np.full(len(rows), int(run), dtype=np.int64),
            "slide_id": rows["slide_id"].astype(str).to_numpy(),
            "patient_id": rows["patient_id"].astype(str).to_numpy(),
            "label": rows["label"].astype(str).to_numpy(),
            "prob": prob,
            "pred": np.where(prob >= 0.5, class_names[1], class_names[0]),
        }
    )[PRED_COLUMNS]


def write_predictions(
    frames: Sequence[pd.DataFrame], out_parquet: str | Path | None, metadata: dict | None = None
) -> pd.DataFrame:
    """Concatenate ``frames`` and write them atomically; ``metadata`` (key -> JSON-able value) goes into
    the parquet file's key-value metadata (e.g. ``fiveflow_selection``, the epoch a row was chosen at)."""
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PRED_COLUMNS)
    if out_parquet is not None:
        with atomic_path(out_parquet) as tmp:
            if metadata:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(df, preserve_index=False)
                meta = {
                    **(table.schema.metadata or {}),
                    **{str(k).encode(): json.dumps(v, sort_keys=True).encode() for k, v in metadata.items()},
                }
                pq.write_table(table.replace_schema_metadata(meta), tmp)
            else:
                df.to_parquet(tmp, index=False)
    return df


def draws_for(draws_csv: str | Path, shots: int, split: pd.DataFrame) -> dict[int, tuple[int, list[str]]]:
    """``run -> (seed, slide ids)`` for one shot count; checks the slides are training slides."""
    draws = pd.read_csv(draws_csv, dtype={"slide_id": str})
    d = draws[draws["shots"] == int(shots)]
    if d.empty:
        raise ValueError(f"{draws_csv}: no draws with {shots} shots")
    train_ids = set(split.loc[split["split"] == "train", "slide_id"])
    outside = sorted(set(d["slide_id"]) - train_ids)
    if outside:
        raise ValueError(f"{draws_csv}: drawn slides not in the training split: {outside[:10]}")
    return {int(r): (int(g["seed"].iloc[0]), g["slide_id"].tolist()) for r, g in d.groupby("run", sort=True)}
