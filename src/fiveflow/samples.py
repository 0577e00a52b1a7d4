"""Read and check a samples sheet: one row per slide with ``slide_id, patient_id, label, path``.

``slide_id`` may be omitted (derived from the file name). An optional ``mpp`` column gives a slide's
level-0 microns per pixel when its metadata lacks it or is wrong (empty cells: use the metadata). Relative paths are resolved against the
sheet's own folder. Every problem is reported with the sheet's path, the line and the fix.

The sheet is read strictly (:func:`fiveflow.delimited.read_delimited`: CSV, or TSV for ``.tsv``/``.tab``;
a row with more or fewer fields than the header is an error, so quote cells that contain a comma).
Slide and patient ids are cleaned by the one id policy (:func:`fiveflow.ids.clean_ids`): ``José 01``
becomes ``Jose_01``, as in the reports; two different ids that clean to the same one are an error.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .delimited import TableError, read_delimited
from .ids import IdError, clean_ids, slide_stem

REQUIRED = ("patient_id", "label", "path")


class SamplesError(ValueError):
    pass


def read_samples(path: str | Path, classes: list[str] | None = None, check_files: bool = True) -> pd.DataFrame:
    path = Path(path)
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        df = read_delimited(path, sep, what="samples sheet")
    except FileNotFoundError:
        raise SamplesError(f"samples sheet not found: {path}. Fix: set `cohort.samples` to an existing file.") from None
    except TableError as exc:
        raise SamplesError(str(exc)) from None
    lines = df.attrs["lines"]  # physical line of each row (header = line 1)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise SamplesError(
            f"{path}: missing column(s) {missing}; found {list(df.columns)}. "
            f"Fix: the sheet needs columns slide_id (optional), {', '.join(REQUIRED)}."
        )
    if df.empty:
        raise SamplesError(f"{path}: no rows. Fix: add one row per slide.")
    base = path.parent
    df["path"] = [str(p if Path(p).is_absolute() else (base / p)) for p in df["path"]]
    given = df["slide_id"] if "slide_id" in df.columns else [""] * len(df)
    raw_slides = [s if s.strip() else slide_stem(p) for s, p in zip(given, df["path"])]  # empty: from the file name
    try:
        df["slide_id"] = clean_ids(raw_slides, "slide", path, lines=lines)
        df["patient_id"] = clean_ids(df["patient_id"], "patient", path, lines=lines)
    except IdError as exc:
        raise SamplesError(str(exc)) from None
    dup = df["slide_id"][df["slide_id"].duplicated()].tolist()
    if dup:
        raise SamplesError(f"{path}: duplicate slide ids {dup[:5]}. Fix: give each slide a unique slide_id.")
    if classes is not None:
        bad = df.loc[~df["label"].isin(classes)]
        if len(bad):
            row = lines[df.index.get_loc(bad.index[0])]
            raise SamplesError(
                f"{path}: line {row}: label {bad['label'].iloc[0]!r} is not one of {classes}. "
                "Fix: correct the label or the `classes` names in the config."
            )
    if check_files:
        absent = [p for p in df["path"] if not Path(p).is_file()]
        if absent:
            raise SamplesError(
                f"{path}: {len(absent)} slide file(s) not found, e.g. {absent[0]}. "
                "Fix: correct the paths (relative paths are from the sheet's folder) or drop the rows."
            )
    df["mpp"] = pd.Series(_mpp_column(df, path, lines), index=df.index, dtype=object)  # None, not NaN (NaN != NaN)
    return df[["slide_id", "patient_id", "label", "path", "mpp"]].reset_index(drop=True)


def _mpp_column(df: pd.DataFrame, path: Path, lines: list[int]) -> list[float | None]:
    if "mpp" not in df.columns:
        return [None] * len(df)
    out: list[float | None] = []
    for i, v in enumerate(df["mpp"]):
        v = str(v).strip()
        if not v:
            out.append(None)
            continue
        try:
            mpp = float(v)
        except ValueError:
            mpp = float("nan")
        if not 0.01 < mpp < 100:
            raise SamplesError(
                f"{path}: line {lines[i]}: mpp {v!r} is not a scan resolution in microns per pixel. "
                "Fix: write e.g. 0.25 (40x) or 0.5 (20x), or leave the cell empty to use the slide's metadata."
            )
        out.append(mpp)
    return out
