"""Bring existing feature bags into fiveflow, and hand ours back to DSMIL/CLAM code.

Imports (one ``{slide}.h5`` bag each, written atomically through :func:`bags.write_bag`):

* DSMIL per-slide CSVs (``compute_feats.py``: header ``0,1,...,D-1``, one row per patch, ``%.4f``,
  no coordinates): coords become ``(row index, 0)`` and the bag says ``coords_kind="row_index"``.
* CLAM / TRIDENT / STAMP-style h5 (``features`` or ``feats``, ``[N, D]`` or ``[1, N, D]``, ``coords``):
  coords are kept (``coords_kind="level0_px"``); CLAM's ``coords`` attributes are recorded.

Every imported bag records where it came from (``source_format``, ``source_file``, ``source_sha256``),
so :func:`import_folder` can skip bags already imported from the same bytes.
Exports write exactly what DSMIL and CLAM read, so imports round-trip.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from .. import __version__
from ..fileio import atomic_path, file_sha256, sanitize_id
from .bags import (
    COORDS,
    COORDS_KIND,
    COORDS_LEVEL0_PX,
    COORDS_ROW_INDEX,
    FEATURES,
    BagError,
    check_complete,
    check_finite,
    is_complete,
    read_bag,
    read_usable_bag,
    row_index_coords,
    write_bag,
)

log = logging.getLogger(__name__)

#: values of the ``source_format`` file attribute (and of ``--format``)
SOURCE_DSMIL_CSV = "dsmil_csv"
SOURCE_H5 = "h5"
FORMATS = ("auto", SOURCE_DSMIL_CSV, SOURCE_H5)
DSMIL_ENCODER = "dsmil-resnet18"
#: encoder name when neither the caller nor the source file names one
UNKNOWN_ENCODER = "unknown"
#: file stems that name the content, not the slide: the slide id is then the parent folder
GENERIC_STEMS = frozenset({"features", "feats", "feature", "embeddings", "bag"})
#: CLAM ``coords`` attributes (and TRIDENT's) copied into the imported bag's file attributes
_SOURCE_COORDS_ATTRS = (
    "patch_level",
    "patch_size",
    "patch_size_level0",
    "level0_magnification",
    "target_magnification",
)
#: header of the bag lists DSMIL's compute_feats.py writes next to the class folders
_DSMIL_BAG_LIST_HEADER = "0,label"
_DSMIL_FLOAT_FORMAT = "%.4f"


def infer_slide_id(path: str | os.PathLike) -> str:
    """``TCGA-XX.csv`` -> ``TCGA-XX``; ``TCGA-XX/features.h5`` -> ``TCGA-XX`` (generic stem: the folder)."""
    path = Path(path)
    stem = path.stem
    if stem.lower() in GENERIC_STEMS:
        stem = path.resolve().parent.name
    return sanitize_id(stem)


def _check_features(path: Path, feats: np.ndarray) -> None:
    if feats.ndim != 2 or feats.shape[0] == 0 or feats.shape[1] == 0:
        raise BagError(
            f"{path}: no feature rows (shape {feats.shape}). Fix: re-extract features for this slide or leave it out."
        )
    check_finite(path, feats, "Fix: re-extract features for this slide.")


def _source_attrs(path: Path, fmt: str, slide_id: str, encoder: str, feats: np.ndarray, coords_kind: str) -> dict:
    return {
        "slide_id": slide_id,
        "encoder": encoder,
        "feature_dim": int(feats.shape[1]),
        COORDS_KIND: coords_kind,
        "source_format": fmt,
        "source_file": str(path.resolve()),
        "source_sha256": file_sha256(path),
        "fiveflow_version": __version__,
    }


def read_dsmil_csv(csv_path: str | os.PathLike) -> np.ndarray:
    """The ``[N, D]`` float32 features of a DSMIL per-slide CSV, validated."""
    path = Path(csv_path)
    try:
        df = pd.read_csv(path, float_precision="round_trip")
    except pd.errors.EmptyDataError:
        raise BagError(f"{path}: empty file. Fix: re-extract features for this slide or leave it out.") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        why = " ".join(str(exc).split())  # pandas' tokenizer message ends in a newline
        raise BagError(
            f"{path}: not a readable CSV ({why}). Fix: every row needs one value per header column, "
            "as DSMIL's compute_feats.py writes them; re-extract features for this slide."
        ) from None
    if not isinstance(df.index, pd.RangeIndex):  # pandas made the extra leading field(s) of every row an index
        raise BagError(
            f"{path}: the rows have {df.shape[1] + df.index.nlevels} fields but the header names "
            f"{df.shape[1]} (a trailing comma, or a column without a name). "
            "Fix: write one header name per feature column (0,1,...), or re-extract features."
        )
    expected = [str(i) for i in range(df.shape[1])]
    if list(df.columns) != expected:
        found = ",".join(map(str, df.columns[:8])) + (",..." if df.shape[1] > 8 else "")
        raise BagError(
            f"{path}: not a DSMIL feature CSV: expected the header 0,1,...,{df.shape[1] - 1} "
            f"(DSMIL compute_feats.py output), found {found}. "
            "Fix: drop the non-feature columns (labels, names, coordinates), "
            "or move the file out of the folder."
        )
    try:
        feats = df.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise BagError(
            f"{path}: non-numeric values in the feature columns. Fix: re-extract features for this slide."
        ) from None
    _check_features(path, feats)
    return feats.astype(np.float32)


def import_dsmil_csv(
    csv_path: str | os.PathLike,
    out_h5: str | os.PathLike,
    slide_id: str | None = None,
    encoder: str = DSMIL_ENCODER,
    **attrs: Any,
) -> Path:
    """One DSMIL per-slide CSV -> one bag; coords are ``(row index, 0)`` (``coords_kind="row_index"``)."""
    path = Path(csv_path)
    feats = read_dsmil_csv(path)
    coords = row_index_coords(len(feats))
    meta = _source_attrs(path, SOURCE_DSMIL_CSV, slide_id or infer_slide_id(path), encoder, feats, COORDS_ROW_INDEX)
    return write_bag(out_h5, feats, coords, {**meta, **attrs})


def import_h5_bag(
    h5_path: str | os.PathLike,
    out_h5: str | os.PathLike,
    slide_id: str | None = None,
    encoder: str | None = None,
    **attrs: Any,
) -> Path:
    """One CLAM/TRIDENT/STAMP-style h5 -> one bag, coords kept.

    ``encoder`` defaults to the source's ``encoder`` attribute, else ``"unknown"``. A source without
    ``coords`` gets ``(row index, 0)`` and ``coords_kind="row_index"``.
    """
    path = Path(h5_path)
    feats, coords, src = read_bag(path)
    # a writer that marks progress (fiveflow, TRIDENT-style) and was killed: rows may be missing or zero
    check_complete(path, src, "Fix: re-run the extraction that wrote it (or leave this slide out).")
    _check_features(path, feats)
    kind = str(src.get(COORDS_KIND, COORDS_LEVEL0_PX))
    if coords is None:
        coords, kind = row_index_coords(len(feats)), COORDS_ROW_INDEX
    encoder = encoder or str(src.get("encoder") or UNKNOWN_ENCODER)
    meta = _source_attrs(path, SOURCE_H5, slide_id or infer_slide_id(path), encoder, feats, kind)
    meta.update({f"source_{k}": src[f"coords.{k}"] for k in _SOURCE_COORDS_ATTRS if f"coords.{k}" in src})
    coords_attrs = {}
    if int(src.get("coords.patch_level", -1)) == 0 and "coords.patch_size" in src:  # level-0 tile edge
        coords_attrs = {"patch_level": 0, "patch_size": src["coords.patch_size"]}
    return write_bag(out_h5, feats, coords, {**meta, **attrs}, coords_attrs)


def export_dsmil_csv(bag_h5: str | os.PathLike, out_csv: str | os.PathLike) -> Path:
    """A bag -> DSMIL's per-slide CSV: header ``0..D-1``, ``%.4f``, no index (what DSMIL's loaders read).
    An incomplete bag or one with NaN/inf features is refused (:class:`BagError`), not passed on."""
    feats, _, _ = read_usable_bag(bag_h5)
    with atomic_path(out_csv) as tmp:
        pd.DataFrame(feats).to_csv(tmp, index=False, float_format=_DSMIL_FLOAT_FORMAT)
    return Path(out_csv)


def export_clam_h5(bag_h5: str | os.PathLike, out_h5: str | os.PathLike, feature_name: str = FEATURES) -> Path:
    """A bag -> CLAM's h5 layout (``features`` and ``coords``); ``feature_name="feats"`` for STAMP/mopadi.
    An incomplete bag or one with NaN/inf features is refused (:class:`BagError`), not passed on."""
    if feature_name not in (FEATURES, "feats"):
        raise ValueError(f"feature_name must be 'features' (CLAM, TRIDENT) or 'feats' (STAMP), got {feature_name!r}")
    feats, coords, attrs = read_usable_bag(bag_h5)
    if coords is None:
        coords = row_index_coords(len(feats))
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset(feature_name, data=feats)
        c = fh.create_dataset(COORDS, data=coords)
        for k in ("patch_level", "patch_size"):
            if f"coords.{k}" in attrs:
                c.attrs[k] = attrs[f"coords.{k}"]
        if attrs.get(COORDS_KIND) == COORDS_ROW_INDEX:  # so a re-import does not take them for pixels
            fh.attrs[COORDS_KIND] = COORDS_ROW_INDEX
    return Path(out_h5)


def _is_dsmil_bag_list(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.readline().strip() == _DSMIL_BAG_LIST_HEADER


def find_sources(
    src: str | os.PathLike, fmt: str = "auto", exclude: str | os.PathLike | None = None
) -> list[tuple[Path, str]]:
    """``(file, format)`` for every ``*.csv`` / ``*.h5`` under ``src`` (recursive), sorted.

    DSMIL's bag lists (header ``0,label``), hidden files and anything under ``exclude`` are left out.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder. Fix: point at the folder of feature files.")
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    skip = Path(exclude).resolve() if exclude is not None else None
    found = []
    for p in files:
        kind = {".csv": SOURCE_DSMIL_CSV, ".h5": SOURCE_H5}.get(p.suffix.lower())
        if kind is None or fmt not in ("auto", kind) or p.name.startswith("."):
            continue
        if skip is not None and skip in p.resolve().parents:
            continue
        if kind == SOURCE_DSMIL_CSV and _is_dsmil_bag_list(p):
            log.info("%s: DSMIL bag list (0,label), not features: skipped", p)
            continue
        found.append((p, kind))
    if not found:
        want = {"auto": "*.csv or *.h5", SOURCE_DSMIL_CSV: "*.csv", SOURCE_H5: "*.h5"}[fmt]
        raise FileNotFoundError(
            f"{src}: no {want} feature files found. Fix: point at the folder holding them "
            "(DSMIL: datasets/<dataset>; CLAM: the h5_files folder)."
        )
    return found


def _bag_shape(bag: Path) -> tuple[int, int]:
    with h5py.File(bag, "r") as fh:
        n, d = fh[FEATURES].shape
    return int(n), int(d)


def sources_by_slide(
    src: str | os.PathLike, fmt: str = "auto", exclude: str | os.PathLike | None = None
) -> dict[str, tuple[Path, str]]:
    """slide id -> ``(file, format)`` for the feature files under ``src``; two files for one slide is an error."""
    by_id: dict[str, tuple[Path, str]] = {}
    for path, kind in find_sources(src, fmt, exclude=exclude):
        sid = infer_slide_id(path)
        if sid in by_id:
            raise BagError(
                f"slide id {sid!r} comes from two files: {by_id[sid][0]} and {path}. "
                "Fix: rename one, or import the folders separately into different --out folders."
            )
        by_id[sid] = (path, kind)
    return by_id


def import_feature_file(
    path: str | os.PathLike,
    out_h5: str | os.PathLike,
    slide_id: str | None = None,
    encoder: str | None = None,
    kind: str | None = None,
) -> Path:
    """One feature file (DSMIL ``.csv`` or CLAM/TRIDENT ``.h5``, told apart by suffix) -> one bag."""
    kind = kind or (SOURCE_DSMIL_CSV if Path(path).suffix.lower() == ".csv" else SOURCE_H5)
    if kind == SOURCE_DSMIL_CSV:
        return import_dsmil_csv(path, out_h5, slide_id, encoder or DSMIL_ENCODER)
    return import_h5_bag(path, out_h5, slide_id, encoder)


def import_folder(
    src: str | os.PathLike, out_dir: str | os.PathLike, fmt: str = "auto", encoder: str | None = None
) -> pd.DataFrame:
    """Import every feature file under ``src`` into ``out_dir/{slide}.h5``; resumable.

    A bag already complete with the same ``source_sha256`` (and ``encoder``, when given) is skipped.
    Two files giving the same slide id are an error naming both. Returns one row per slide:
    slide_id, status (imported/skipped), n_tiles, feature_dim, source, bag.
    """
    out_dir = Path(out_dir)
    by_id = sources_by_slide(src, fmt, exclude=out_dir)
    rows = []
    for sid, (path, kind) in by_id.items():
        bag = out_dir / f"{sid}.h5"
        expect = {"source_sha256": file_sha256(path), **({"encoder": encoder} if encoder else {})}
        status = "skipped"
        if not is_complete(bag, **expect):
            import_feature_file(path, bag, sid, encoder, kind)
            status = "imported"
        n, d = _bag_shape(bag)
        rows.append(
            {"slide_id": sid, "status": status, "n_tiles": n, "feature_dim": d, "source": str(path), "bag": str(bag)}
        )
    return pd.DataFrame(rows, columns=["slide_id", "status", "n_tiles", "feature_dim", "source", "bag"])
