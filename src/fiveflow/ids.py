"""The one id policy: how a slide or patient id from a user's file becomes the id fiveflow uses.

:func:`clean_id` is the rule (``fiveflow.fileio.sanitize_id`` is the same function): surrounding
white space dropped, accents folded to ASCII (Unicode NFKD: ``José`` -> ``Jose``), anything else
outside ``[A-Za-z0-9._-]`` becomes ``_``, leading dots are stripped (an id can never be ``.``/``..``,
hidden, or escape its output folder). An id left empty is an error.

:func:`clean_ids` cleans every id of one kind from one file (slide ids, patient ids of a samples
sheet, patient ids of the reports...) and refuses two *different* ids that clean to the same one
(``A B`` and ``A_B``): they would silently become one slide or patient. The same id repeated is
not a collision (several slides or reports per patient); whether repeats are allowed is the
caller's rule. Every table and report input goes through it, so a report for ``José 01`` and the
slides of sample ``José 01`` meet under ``Jose_01``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
RULE = "ids keep only A-Z a-z 0-9 . _ - (accents are dropped, other characters become '_')"


class IdError(ValueError):
    """An id that cannot be used: empty once cleaned, or two different ids that clean to the same one."""


def _fold(raw: str) -> str:
    decomposed = unicodedata.normalize("NFKD", raw)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def clean_id(raw: object) -> str:
    """Turn a file name stem, a sheet cell or a manifest id into a safe slide/patient id.

    White space around it is dropped, accents are folded to ASCII (``José`` -> ``Jose``), anything
    outside ``[A-Za-z0-9._-]`` becomes ``_``, and leading dots are stripped so an id can never be
    ``.``/``..`` or hidden, and so it can never escape its output folder. Raises :class:`IdError`
    (a ``ValueError``) when nothing usable is left. Cleaning a clean id changes nothing.
    """
    s = _SAFE_ID.sub("_", _fold(str(raw).strip())).lstrip(".")
    if not s:
        raise IdError(f"cannot derive a usable id from {raw!r}: rename the file")
    return s


def slide_stem(path: str | os.PathLike) -> str:
    """A slide file's name without its (last) extension (``.ome.tif``/``.ome.tiff`` as one), not cleaned."""
    name = Path(path).name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def _original(raw: object) -> str:
    """What counts as "the same id" before cleaning: the text, trimmed, in one Unicode form."""
    return unicodedata.normalize("NFC", str(raw).strip())


def clean_ids(
    raw: Iterable[object],
    kind: str,
    source: str | os.PathLike | None = None,
    *,
    lines: Sequence[int | str] | None = None,
) -> list[str]:
    """Clean every id of one ``kind`` (e.g. ``"slide"``, ``"patient"``, ``"report patient"``) of one file.

    Returns the cleaned ids in input order. Raises :class:`IdError` naming ``source``, the kind,
    where each id came from (``lines[i]``: a line number, or a label such as a file name) and the fix
    when an id is empty once cleaned, or when two *different* ids clean to the same one (both
    originals and the cleaned id are named). The same id repeated is allowed here.
    """
    raw = list(raw)
    where_file = f"{source}: " if source is not None else ""

    def at(i: int) -> str:
        if lines is None or i >= len(lines):
            return ""
        return f" (line {lines[i]})" if isinstance(lines[i], int) else f" ({lines[i]})"

    out: list[str] = []
    first: dict[str, tuple[str, int]] = {}  # cleaned id -> (original, index)
    for i, r in enumerate(raw):
        try:
            cid = clean_id(r)
        except IdError:
            raise IdError(
                f"{where_file}{kind} id {str(r)!r}{at(i)} is empty or has no usable character once "
                f"cleaned ({RULE}). Fix: give it a non-empty id with letters or digits"
            ) from None
        orig = _original(r)
        seen = first.setdefault(cid, (orig, i))
        if seen[0] != orig:
            raise IdError(
                f"{where_file}{kind} ids {seen[0]!r}{at(seen[1])} and {orig!r}{at(i)} both become "
                f"{cid!r} once cleaned ({RULE}). Fix: rename one of them so the two stay distinct, "
                "or write them identically if they are the same"
            )
        out.append(cid)
    return out
