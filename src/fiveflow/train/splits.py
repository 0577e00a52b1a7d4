"""Patient-level train/test split and few-shot draws, persisted to CSV (CONTRACTS.md)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..fileio import atomic_path

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ["slide_id", "patient_id", "label", "split"]
DRAW_COLUMNS = ["shots", "run", "seed", "slide_id"]


def _patient_labels(samples: pd.DataFrame) -> pd.Series:
    """One label per patient: the most frequent among its slides (ties: alphabetical)."""
    counts = samples.groupby(["patient_id", "label"]).size().reset_index(name="n")
    mixed = counts["patient_id"].duplicated(keep=False)
    if mixed.any():
        log.warning(
            "patients with slides of different labels (stratified by majority): %s",
            sorted(counts.loc[mixed, "patient_id"].unique())[:10],
        )
    counts = counts.sort_values(["patient_id", "n", "label"], ascending=[True, False, True])
    return counts.drop_duplicates("patient_id").set_index("patient_id")["label"]


def make_split(samples: pd.DataFrame, test_fraction: float, seed: int, out_csv: str | Path | None) -> pd.DataFrame:
    """Stratified, patient-level, deterministic split into ``train`` / ``test``.

    Per label, ``round(n_patients * test_fraction)`` patients go to test (at least one, and at
    least one stays in train, when the label has two or more patients). The result depends
    only on the set of (slide, patient, label) rows and the seed, not on their order.
    """
    missing = {"slide_id", "patient_id", "label"} - set(samples.columns)
    if missing:
        raise KeyError(f"samples lack columns {sorted(missing)}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"split.test_fraction must be in (0, 1), got {test_fraction}")
    df = samples[["slide_id", "patient_id", "label"]].astype(str).drop_duplicates()
    if df["slide_id"].duplicated().any():
        raise ValueError(
            f"slides listed twice with different patient/label: {sorted(df.loc[df.slide_id.duplicated(), 'slide_id'])[:10]}"
        )
    plabel = _patient_labels(df)
    rng = np.random.default_rng(seed)
    test_patients: set[str] = set()
    for label in sorted(plabel.unique()):
        patients = np.array(sorted(plabel.index[plabel == label]))
        n = len(patients)
        n_test = int(np.floor(n * test_fraction + 0.5))
        n_test = min(max(n_test, 1), n - 1) if n >= 2 else 0
        if n < 2:
            log.warning("label %r has %d patient(s): all kept in train", label, n)
        test_patients.update(rng.permutation(patients)[:n_test].tolist())
    df["split"] = np.where(df["patient_id"].isin(test_patients), "test", "train")
    df = df.sort_values("slide_id").reset_index(drop=True)[SPLIT_COLUMNS]
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            df.to_csv(tmp, index=False)
    return df


def draw_seed(seed: int, shots: int, run: int) -> int:
    """The recorded seed of one draw (also seeds its fine-tuning), derived from the config seed."""
    return int(np.random.SeedSequence([int(seed), int(shots), int(run)]).generate_state(1)[0])


def _draw_class(slides: pd.DataFrame, shots: int, rng: np.random.Generator) -> list[str]:
    """``shots`` slides of one class, from distinct patients while patients last."""
    by_patient = {p: sorted(g["slide_id"]) for p, g in slides.groupby("patient_id")}
    patients = sorted(by_patient)
    chosen = [by_patient[p][int(rng.integers(len(by_patient[p])))] for p in rng.permutation(patients)[:shots]]
    if len(chosen) < shots:  # fewer patients than shots: fill with further slides
        rest = sorted(set(slides["slide_id"]) - set(chosen))
        chosen += [rest[i] for i in rng.permutation(len(rest))[: shots - len(chosen)]]
    return chosen


def check_shots(train: pd.DataFrame, shots) -> None:
    """Refuse shot counts the training split cannot supply: a draw takes ``shots`` distinct training
    slides of every class, so each class needs at least ``max(shots)`` training slides. The error
    names every class that falls short, its training slides (and patients), and the fix."""
    if not len(shots):
        return
    k = max(int(s) for s in shots)
    short = []
    for c, g in train.groupby("label", sort=True):
        if len(g) < k:
            short.append(f"class {c!r} has {len(g)} training slide(s) (from {g['patient_id'].nunique()} patient(s))")
    if short:
        raise ValueError(
            f"fewshot.shots asks for {k} slides per class, but "
            + "; ".join(short)
            + f". Fix: lower fewshot.shots to at most {min(train.groupby('label').size())}, or enlarge "
            "the training split (a smaller split.test_fraction, or more slides of that class)."
        )


def make_fewshot_draws(
    split: pd.DataFrame, shots: list[int], runs: int, seed: int, out_csv: str | Path | None
) -> pd.DataFrame:
    """For each (shots, run): ``shots`` training slides per class, with the draw's seed recorded.

    Slides of one class come from distinct patients while patients last (a class with fewer training
    patients than shots also gets further slides of the same patients, with a warning); a shot count
    above a class's number of training slides is refused (:func:`check_shots`)."""
    train = split[split["split"] == "train"].astype({"slide_id": str, "patient_id": str, "label": str})
    labels = sorted(train["label"].unique())
    if len(labels) < 2:
        raise ValueError(f"the training split holds {len(labels)} class(es); few-shot needs two")
    check_shots(train, shots)
    for c, g in train.groupby("label", sort=True):
        few = [int(k) for k in shots if g["patient_id"].nunique() < int(k)]
        if few:
            log.warning(
                "class %r has %d training patients: draws of %s shots repeat patients",
                c,
                g["patient_id"].nunique(),
                few,
            )
    rows = []
    for k in shots:
        for run in range(int(runs)):
            s = draw_seed(seed, k, run)
            rng = np.random.default_rng(s)
            for c in labels:
                for sid in _draw_class(train[train["label"] == c], int(k), rng):
                    rows.append((int(k), run, s, sid))
    draws = pd.DataFrame(rows, columns=DRAW_COLUMNS)
    if out_csv is not None:
        with atomic_path(out_csv) as tmp:
            draws.to_csv(tmp, index=False)
    return draws
