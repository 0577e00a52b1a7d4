"""Feature bags on disk: ``{slide}.h5`` with ``features`` (N x D float32) and ``coords`` (N x 2 int64).

The layout is the one CLAM and TRIDENT read: datasets ``features`` and ``coords`` (level-0 pixels,
top-left), ``coords`` attributes ``patch_level`` (0) and ``patch_size`` (the tile edge in level-0
px), plus file attributes naming the encoder, its weights' checksum, the target mpp and patch size.
A bag is written through :class:`BagWriter`, which streams rows into a temporary file and renames
it only when every row is in and ``complete`` is set, so a killed job never leaves a bag that looks
finished.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..fileio import atomic_path

FEATURES = "features"
COORDS = "coords"
#: bags written by other tools name the feature matrix differently
FEATURE_NAMES = (FEATURES, "feats")
#: the file attribute saying what ``coords`` holds
COORDS_KIND = "coords_kind"
#: level-0 pixel positions (top-left), as tiling writes them
COORDS_LEVEL0_PX = "level0_px"
#: row numbers standing in for positions (DSMIL CSVs carry none): fine for training, not for heatmaps
COORDS_ROW_INDEX = "row_index"
#: rows per HDF5 chunk are chosen so one chunk is about this many bytes
_CHUNK_BYTES = 1 << 20


class BagError(ValueError):
    """A bag file that cannot be used; the message names the file and the fix."""


def _attr(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, Path):
        return str(v)
    return v


class BagWriter:
    """Stream ``n`` feature rows of width ``dim`` into ``out``; rename into place on success.

    Usage::

        with BagWriter(out, n, dim, coords, attrs) as bag:
            bag.write(rows)          # in order, any batch size
    """

    def __init__(
        self,
        out: str | os.PathLike,
        n: int,
        dim: int,
        coords: np.ndarray,
        attrs: dict[str, Any] | None = None,
        coords_attrs: dict[str, Any] | None = None,
    ) -> None:
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        if len(coords) != n:
            raise ValueError(f"{out}: {len(coords)} coordinates for {n} feature rows")
        self.out, self.n, self.dim = Path(out), int(n), int(dim)
        self.coords, self.attrs, self.coords_attrs = coords, dict(attrs or {}), dict(coords_attrs or {})
        self.filled = 0
        self._ctx = None
        self._fh: h5py.File | None = None

    def __enter__(self) -> BagWriter:
        self._ctx = atomic_path(self.out)
        tmp = self._ctx.__enter__()
        self._fh = h5py.File(tmp, "w")
        rows = max(1, min(self.n, _CHUNK_BYTES // max(4 * self.dim, 1)))
        self._feats = self._fh.create_dataset(
            FEATURES, shape=(self.n, self.dim), dtype="float32", chunks=(rows, self.dim) if self.n else None
        )
        c = self._fh.create_dataset(COORDS, data=self.coords)
        for k, v in self.coords_attrs.items():
            c.attrs[k] = _attr(v)
        for k, v in self.attrs.items():
            self._fh.attrs[k] = _attr(v)
        self._fh.attrs["complete"] = False
        return self

    def write(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ValueError(f"{self.out}: expected rows of width {self.dim}, got shape {rows.shape}")
        end = self.filled + len(rows)
        if end > self.n:
            raise ValueError(f"{self.out}: more rows than the {self.n} tiles announced")
        self._feats[self.filled : end] = rows
        self.filled = end

    def __exit__(self, exc_type, exc, tb) -> None:
        fh, self._fh = self._fh, None
        try:
            if exc_type is None:
                if self.filled != self.n:
                    raise ValueError(f"{self.out}: {self.filled} of {self.n} rows written")
                fh.attrs["complete"] = True
        finally:
            fh.close()
            ok = exc_type is None and self.filled == self.n
            self._ctx.__exit__(None if ok else (exc_type or ValueError), exc, tb)


def row_index_coords(n: int) -> np.ndarray:
    """``(row, 0)`` int64 coordinates standing in for positions a bag's source did not record."""
    return np.stack([np.arange(n), np.zeros(n, np.int64)], axis=1).astype(np.int64)


def write_bag(
    out: str | os.PathLike,
    features: np.ndarray,
    coords: np.ndarray,
    attrs: dict[str, Any] | None = None,
    coords_attrs: dict[str, Any] | None = None,
) -> Path:
    """Write a whole bag at once (importers, tests)."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"{out}: features must be [N, D], got shape {features.shape}")
    with BagWriter(out, len(features), features.shape[1], coords, attrs, coords_attrs) as w:
        w.write(features)
    return Path(out)


def bag_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """File attributes of a bag (empty dict when the file is missing or unreadable)."""
    try:
        with h5py.File(path, "r") as fh:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in fh.attrs.items()}
    except (OSError, KeyError):
        return {}


def is_complete(path: str | os.PathLike, **expect: Any) -> bool:
    """True when ``path`` is a finished bag whose attributes equal ``expect`` (e.g. weights_sha256=...)."""
    attrs = bag_attrs(path)
    if not attrs.get("complete", False):
        return False
    return all(str(attrs.get(k)) == str(v) for k, v in expect.items())


#: the fix named when a bag fiveflow reads for training or evaluation is unusable
REMAKE_FIX = (
    "Fix: delete {path} and make it again: re-run `fiveflow embed` (or the workflow) for that slide, "
    "or re-import it (`fiveflow import-bags`) when it came from another tool."
)


def check_complete(path: str | os.PathLike, attrs: dict[str, Any], fix: str) -> None:
    """Refuse a bag whose ``complete`` attribute is present and false (its writer was killed).

    Files of tools that do not record it (CLAM, DSMIL) pass; fiveflow's bags always carry it.
    """
    if "complete" in attrs and not bool(attrs["complete"]):
        raise BagError(
            f"{path}: incomplete feature bag (attribute complete=False: the job writing it was "
            f"interrupted, so rows may be missing or zero). {fix}"
        )


def check_finite(path: str | os.PathLike, feats: np.ndarray, fix: str) -> None:
    """Refuse features with NaN/inf, naming how many rows and the first.

    One float64 sum over the array (exact: a float32 matrix cannot overflow it, NaN/inf propagate);
    the per-row scan runs only when that sum is not finite.
    """
    if feats.size and np.isfinite(np.sum(feats, dtype=np.float64)):
        return
    rows = np.flatnonzero(~np.isfinite(feats).all(axis=1))
    if len(rows):
        raise BagError(f"{path}: {len(rows)} row(s) with NaN/inf values (first: row {rows[0]}). {fix}")


def read_usable_bag(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """:func:`read_bag` for training and evaluation: also refuses an incomplete bag and NaN/inf features."""
    feats, coords, attrs = read_bag(path)
    fix = REMAKE_FIX.format(path=path)
    check_complete(path, attrs, fix)
    check_finite(path, feats, fix)
    return feats, coords, attrs


def read_bag(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """``(features [N, D] float32, coords [N, 2] int64 or None, attrs)`` of any CLAM/TRIDENT-style h5.

    Accepts ``features`` or ``feats``, and the ``[1, N, D]`` shape some tools write.
    """
    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except PermissionError:
        raise BagError(
            f"{path}: cannot read the feature bag: permission denied. Fix: check its permissions "
            f"(ls -l {path}): the user running fiveflow needs read access (chmod a+r, or ask the owner)."
        ) from None
    except OSError as exc:
        raise BagError(f"{path}: not a readable HDF5 feature bag ({exc}). Fix: re-create or re-import it.") from None
    with fh:
        name = next((n for n in FEATURE_NAMES if n in fh), None)
        if name is None:
            raise BagError(
                f"{path}: no 'features' (or 'feats') dataset; found {sorted(fh.keys())}. "
                "Fix: point the importer at a feature bag, not a coordinates file."
            )
        feats = np.asarray(fh[name][()], dtype=np.float32)
        coords = np.asarray(fh[COORDS][()]) if COORDS in fh else None
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in fh.attrs.items()}
        if coords is not None:
            attrs.update({f"coords.{k}": v for k, v in fh[COORDS].attrs.items()})
    if feats.ndim == 3 and feats.shape[0] == 1:
        feats = feats[0]
    if coords is not None and coords.ndim == 3 and coords.shape[0] == 1:
        coords = coords[0]
    if feats.ndim != 2:
        raise BagError(f"{path}: expected a [N, D] feature matrix, got shape {feats.shape}")
    if coords is not None:
        if coords.ndim != 2 or coords.shape[1] < 2 or len(coords) != len(feats):
            raise BagError(f"{path}: coords shape {coords.shape} does not match features {feats.shape}")
        coords = np.rint(coords[:, :2]).astype(np.int64)
    return feats, coords, attrs
