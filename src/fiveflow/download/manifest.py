"""GDC manifests: the TSV the GDC portal exports (``id filename md5 size state``), read and checked."""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path

REQUIRED_COLUMNS = ("id", "filename", "md5", "size")
_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class ManifestRow:
    """One GDC file: its UUID, the file name it is saved under, and what it must hash and weigh."""

    id: str
    filename: str
    md5: str
    size: int
    state: str = ""


def _check_filename(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not name.startswith(".") and "/" not in name \
        and "\\" not in name and "\0" not in name


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read a GDC manifest (tab-separated, header ``id filename md5 size [state ...]``).

    Raises ``ValueError`` naming the file, the line and the fix for a missing column, an empty or
    malformed md5/size/file name, or a duplicated id or file name (two rows would race for one file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GDC manifest not found: {path} (download it from the GDC portal cart: "
                                "'Download > Manifest')")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"GDC manifest {path}: missing column(s) {', '.join(missing)} (found: "
                             f"{', '.join(header) or 'no header'}); expected a tab-separated GDC manifest with "
                             f"columns {' '.join(REQUIRED_COLUMNS)} state")
        reader.fieldnames = header
        rows: list[ManifestRow] = []
        seen_ids: dict[str, int] = {}
        seen_names: dict[str, int] = {}
        for lineno, rec in enumerate(reader, start=2):
            if not any((v or "").strip() for v in rec.values() if isinstance(v, str)):
                continue  # blank line
            vals = {k: (rec.get(k) or "").strip() for k in (*REQUIRED_COLUMNS, "state")}
            where = f"GDC manifest {path}, line {lineno}"
            if not vals["id"]:
                raise ValueError(f"{where}: empty id")
            if not _check_filename(vals["filename"]):
                raise ValueError(f"{where}: bad file name {vals['filename']!r} (must be a plain, non-hidden name "
                                 "without a folder)")
            if not _MD5.match(vals["md5"]):
                raise ValueError(f"{where}: md5 {vals['md5']!r} of {vals['filename']} is not 32 hex digits")
            if not vals["size"].isdigit():
                raise ValueError(f"{where}: size {vals['size']!r} of {vals['filename']} is not a byte count")
            if vals["id"] in seen_ids:
                raise ValueError(f"{where}: id {vals['id']} repeats line {seen_ids[vals['id']]}; remove the duplicate")
            if vals["filename"] in seen_names:
                raise ValueError(f"{where}: file name {vals['filename']} repeats line {seen_names[vals['filename']]}; "
                                 "two files cannot be saved under one name")
            seen_ids[vals["id"]] = seen_names[vals["filename"]] = lineno
            rows.append(ManifestRow(vals["id"], vals["filename"], vals["md5"].lower(), int(vals["size"]), vals["state"]))
    if not rows:
        raise ValueError(f"GDC manifest {path} lists no files")
    return rows
