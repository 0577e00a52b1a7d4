"""GDC manifests: the TSV the GDC portal exports (``id filename md5 size state``), read and checked.

Ids must be UUIDs (:func:`is_gdc_file_id`): the downloader puts them into the data-endpoint URL, so a
crafted id such as ``../status`` must never get that far.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..delimited import TableError, read_delimited

REQUIRED_COLUMNS = ("id", "filename", "md5", "size")
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
GDC_ID_HINT = "GDC file ids are UUIDs (8-4-4-4-12 hex digits, e.g. c6e36f24-46f3-4e20-8154-970e749aa0ca)"


def is_gdc_file_id(file_id: object) -> bool:
    """``file_id`` is a canonical UUID (8-4-4-4-12 hex digits), the form of every GDC file id.

    Only such an id is put into a data-endpoint URL: anything else (``../``, ``/``, ``?``, ``%``)
    could make the request, with the user's token, address another path of the GDC host.
    """
    return isinstance(file_id, str) and _UUID.fullmatch(file_id) is not None


@dataclass(frozen=True)
class ManifestRow:
    """One GDC file: its UUID, the file name it is saved under, and what it must hash and weigh."""

    id: str
    filename: str
    md5: str
    size: int
    state: str = ""


def _check_filename(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..")
        and not name.startswith(".")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read a GDC manifest (tab-separated, header ``id filename md5 size [state ...]``).

    Read strictly (:func:`fiveflow.delimited.read_delimited`): a row with more or fewer tab-separated
    fields than the header is an error too. Raises ``ValueError`` naming the file, the line and the
    fix for a missing column, an empty or malformed id (not a UUID), md5, size or file name, or a
    duplicated id or file name (two rows would race for one file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GDC manifest not found: {path} (download it from the GDC portal cart: 'Download > Manifest')"
        )
    try:
        table = read_delimited(path, "\t", what="GDC manifest")
    except TableError as exc:
        raise TableError(f"GDC manifest {exc}") from None
    header = list(table.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"GDC manifest {path}: missing column(s) {', '.join(missing)} (found: "
            f"{', '.join(header) or 'no header'}); expected a tab-separated GDC manifest with "
            f"columns {' '.join(REQUIRED_COLUMNS)} state"
        )
    rows: list[ManifestRow] = []
    seen_ids: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for lineno, rec in zip(table.attrs["lines"], table.to_dict("records")):
        if not any(v.strip() for v in rec.values()):
            continue  # a row of empty fields
        vals = {k: (rec.get(k) or "").strip() for k in (*REQUIRED_COLUMNS, "state")}
        where = f"GDC manifest {path}, line {lineno}"
        if not vals["id"]:
            raise ValueError(f"{where}: empty id")
        if not is_gdc_file_id(vals["id"]):
            raise ValueError(
                f"{where}: id {vals['id']!r} is not a GDC file id; {GDC_ID_HINT}. Fix: export the "
                "manifest again from the GDC portal, or correct the id column"
            )
        if not _check_filename(vals["filename"]):
            raise ValueError(
                f"{where}: bad file name {vals['filename']!r} (must be a plain, non-hidden name without a folder)"
            )
        if not _MD5.match(vals["md5"]):
            raise ValueError(f"{where}: md5 {vals['md5']!r} of {vals['filename']} is not 32 hex digits")
        if not vals["size"].isdigit():
            raise ValueError(f"{where}: size {vals['size']!r} of {vals['filename']} is not a byte count")
        if vals["id"] in seen_ids:
            raise ValueError(f"{where}: id {vals['id']} repeats line {seen_ids[vals['id']]}; remove the duplicate")
        if vals["filename"] in seen_names:
            raise ValueError(
                f"{where}: file name {vals['filename']} repeats line {seen_names[vals['filename']]}; "
                "two files cannot be saved under one name"
            )
        seen_ids[vals["id"]] = seen_names[vals["filename"]] = lineno
        rows.append(ManifestRow(vals["id"], vals["filename"], vals["md5"].lower(), int(vals["size"]), vals["state"]))
    if not rows:
        raise ValueError(f"GDC manifest {path} lists no files")
    return rows
