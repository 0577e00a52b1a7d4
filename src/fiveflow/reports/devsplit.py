"""A fixed, patient-level split of a development reports table into a *development* part and a *locked* part.

Rules of the offline extractor (and anything learned for it) are developed on the development part only;
the locked part is scored, never read for ideas, so its agreement predicts how the extractor does on
reports nobody tuned it on (issue 19). The split is a pure function of each patient id: a salted
sha256 of the id, read as a number in [0, 1), below :data:`LOCKED_SHARE` means locked. It does not
depend on the table's order, on the other patients, or on a stored list (no patient ids are kept in
the repository), and a new version of the split needs a new salt.
"""

from __future__ import annotations

import hashlib

import pandas as pd

SALT = "fiveflow-reports-locked-v1"
LOCKED_SHARE = 1 / 3


def locked_score(patient_id: str) -> float:
    """The patient's position in [0, 1) under :data:`SALT` (uniform over ids)."""
    digest = hashlib.sha256(f"{SALT}:{str(patient_id).strip().upper()}".encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def is_locked(patient_id: str) -> bool:
    return locked_score(patient_id) < LOCKED_SHARE


def split_development(df: pd.DataFrame, id_column: str = "patient_id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(development, locked)`` rows of ``df`` (index kept); every row of a patient lands in the same part."""
    if id_column not in df.columns:
        raise KeyError(f"split_development: no {id_column!r} column (columns: {list(df.columns)})")
    locked = df[id_column].map(is_locked).astype(bool)
    return df[~locked], df[locked]
