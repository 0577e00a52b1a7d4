"""The fixed development/locked split of the dev reports (issue 19): patient-level, order-free, stable."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from conftest import shared_path
from fiveflow.reports.devsplit import LOCKED_SHARE, SALT, is_locked, locked_score, split_development


def test_the_split_is_a_pure_function_of_the_patient_id():
    ids = [f"TCGA-{i:02d}-{j:04d}" for i in range(10) for j in range(60)]
    df = pd.DataFrame({"patient_id": ids, "x": range(len(ids))})
    dev, locked = split_development(df)
    assert set(dev.index) | set(locked.index) == set(df.index) and not set(dev.index) & set(locked.index)
    shuffled = df.sample(frac=1.0, random_state=3)
    dev2, locked2 = split_development(shuffled)
    assert set(locked2["patient_id"]) == set(locked["patient_id"])  # order does not matter
    assert set(split_development(df.iloc[::7])[1]["patient_id"]) <= set(locked["patient_id"])  # nor other rows
    assert is_locked("tcga-05-4244 ") == is_locked("TCGA-05-4244")  # case and spaces of the id
    # the documented rule, recomputed independently
    for pid in ids[:50]:
        h = int(hashlib.sha256(f"{SALT}:{pid}".encode()).hexdigest()[:13], 16) / 16**13
        assert locked_score(pid) == h and is_locked(pid) == (h < LOCKED_SHARE)
    assert 0.28 < len(locked) / len(df) < 0.39  # ~1/3 of 600 ids
    with pytest.raises(KeyError, match="patient_id"):
        split_development(pd.DataFrame({"id": ids}))


def test_the_dev_reports_split_keeps_both_classes_in_both_parts():
    df = pd.read_csv(shared_path("reports/tcga_lung_reports_dev.csv"))
    dev, locked = split_development(df)
    assert 0.25 < len(locked) / len(df) < 0.42
    assert not set(dev["patient_id"]) & set(locked["patient_id"])
    label = next(c for c in ("cancer_type", "label", "project") if c in df.columns)
    for part in (dev, locked):
        counts = part[label].value_counts()
        assert len(counts) == 2 and counts.min() >= 30, counts
