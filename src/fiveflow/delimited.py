"""The one strict reader for the delimited tables users give fiveflow (CSV/TSV).

Samples sheets, report tables, precomputed answers, GDC manifests and clinical tables are all read
by :func:`read_delimited`, with the :mod:`csv` module (quoting respected: a field may hold the
delimiter or line breaks when it is quoted). Unlike ``pandas.read_csv`` it never guesses: a row
with more or fewer fields than the header is an error naming the file, the line and the fix (an
unquoted comma in a report text would otherwise shift the columns, or silently turn the first
column into the index), and so are a duplicate or empty column name, an unclosed quote, binary
content and an empty file. Blank lines are skipped. Every value is a ``str`` ("" when empty).

Text is decoded as UTF-8 (a byte-order mark is dropped), else as cp1252 (Windows-1252) with a
warning. Line numbers are physical lines of the file, 1-based, the header being line 1; a row
whose quoted field spans lines is numbered by its first line. The line of each data row is kept in
``df.attrs["lines"]``.

A ``.zip`` archive holding one CSV/TSV (TCGA-Reports ships as ``TCGA_Reports.csv.zip``) is read from
its single table member, without unpacking it to disk; messages name ``archive.zip:member``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import unicodedata
import zipfile
from pathlib import Path

import pandas as pd

LOG = logging.getLogger("fiveflow.delimited")
TAB_SUFFIXES = (".tsv", ".tab")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # control characters no text table has (tab, CR, LF, FF do)
QUOTE_FIX = 'quote fields that contain the delimiter, e.g. "a, b"'


class TableError(ValueError):
    """A table that cannot be read unambiguously; the message names the file, the line and the fix."""


def delimiter_for(path: str | os.PathLike) -> str:
    """Tab for ``.tsv``/``.tab``, comma otherwise."""
    return "\t" if Path(path).suffix.lower() in TAB_SUFFIXES else ","


def _name(delimiter: str) -> str:
    return {",": "comma", "\t": "tab", ";": "semicolon"}.get(delimiter, repr(delimiter))


def decode_table(data: bytes, path: str | os.PathLike, what: str = "table") -> str:
    """Bytes of a text table -> str: UTF-8 (BOM dropped), else cp1252 with a warning; binary is an error."""
    if b"\x00" in data:
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
        raise TableError(
            f"{path}: binary content (NUL bytes), not a text {what}"
            f"{' (it looks UTF-16 encoded)' if utf16 else ''}. Fix: save it as a UTF-8 CSV/TSV text file"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise TableError(
            f"{path}: cannot decode the {what} (not UTF-8 or cp1252; bad byte at offset {exc.start}). "
            "Fix: re-save it as UTF-8"
        ) from None
    odd = _CONTROL.search(text)
    if odd:  # neither UTF-8 nor a Windows text file: control bytes say it is binary
        raise TableError(
            f"{path}: binary content (control byte {odd.group()!r} at offset {odd.start()}), not a text "
            f"{what}. Fix: save it as a UTF-8 CSV/TSV text file"
        )
    LOG.warning("%s: not UTF-8; read as cp1252 (Windows-1252)", path)
    return text


def read_delimited(path: str | os.PathLike, delimiter: str | None = None, *, what: str = "table") -> pd.DataFrame:
    """A delimited text table -> DataFrame of ``str``, columns from the header line, no index column.

    ``delimiter``: default from the extension (:func:`delimiter_for`). ``what`` names the table in
    messages (e.g. ``"samples sheet"``). Raises ``FileNotFoundError`` for a missing file and
    :class:`TableError` (a ``ValueError``) for an empty or binary file, an undecodable one, a bad
    header, an unclosed quote, or a row whose field count differs from the header's. A file with
    only a header gives an empty DataFrame with those columns. ``df.attrs["lines"]`` holds each
    row's (first) physical line number.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".zip":
            data, member = _zip_member(path, what)
            delimiter = delimiter or delimiter_for(member)
            path = Path(f"{path}:{member}")  # named so in every message below
        else:
            data = path.read_bytes()
            delimiter = delimiter or delimiter_for(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise TableError(f"{path}: a folder, not a {what} file. Fix: give the path of the table file") from None
    except OSError as exc:
        raise TableError(
            f"{path}: cannot read the {what} ({exc.strerror or exc}). Fix: check its permissions"
        ) from None
    text = decode_table(data, path, what)
    if not text.strip():
        raise TableError(
            f"{path}: the file is empty. Fix: the {what} needs a header line with its column names "
            f"({_name(delimiter)}-separated) and one line per row"
        )

    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, 1 << 30))  # long report texts: the default cap is 128 KiB a field
    try:
        return _parse(text, path, delimiter, what)
    finally:
        csv.field_size_limit(old_limit)


def _zip_member(path: Path, what: str) -> tuple[bytes, str]:
    """(bytes, name) of the one CSV/TSV member of a zip archive; anything else is a :class:`TableError`."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [
                i.filename
                for i in zf.infolist()
                if not i.is_dir()
                and not i.filename.startswith("__MACOSX/")
                and Path(i.filename).suffix.lower() in (".csv", *TAB_SUFFIXES)
            ]
            if len(names) != 1:
                raise TableError(
                    f"{path}: a zip archive with {len(names)} CSV/TSV members "
                    f"({', '.join(names[:5]) or 'none'}), where one {what} was expected. Fix: give the "
                    "table itself, or an archive holding only it"
                )
            return zf.read(names[0]), names[0]
    except zipfile.BadZipFile as exc:
        raise TableError(
            f"{path}: not a readable zip archive ({exc}). Fix: download it again (it may be truncated), "
            "or give the unpacked table"
        ) from None


def _parse(text: str, path: Path, delimiter: str, what: str) -> pd.DataFrame:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    end = 0  # physical lines consumed so far
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise TableError(
                f"{path}: line {start}: cannot parse the {what} ({exc}); often a quote that is "
                "never closed, or text after a closing quote. Fix: quote whole fields, write a quote "
                'inside a quoted field as "", e.g. "5"" lesion"'
            ) from None
        end = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if header is None:
            header, header_line = [h.strip() for h in row], start
            _check_header(header, path, start, delimiter, what)
            continue
        if len(row) != len(header):
            more = len(row) > len(header)
            hint = QUOTE_FIX if more else "add the missing fields (empty ones too)"
            if more and not any(row[len(header) :]):
                hint = f"remove the trailing {_name(delimiter)}(s) at the end of the line, or {QUOTE_FIX}"
            raise TableError(
                f"{path}: line {start}: {len(row)} {_name(delimiter)}-separated field(s) where the header "
                f"(line {header_line}) has {len(header)} "
                f"({', '.join(header[:8])}{', ...' if len(header) > 8 else ''}). Fix: {hint}"
            )
        rows.append(row)
        lines.append(start)
    if header is None:  # only blank lines (cannot happen: text.strip() was checked), kept for safety
        raise TableError(f"{path}: the file is empty. Fix: add a header line with the column names")
    df = pd.DataFrame(rows, columns=header, dtype=object)  # csv gives str fields: every value is a str
    df.attrs["lines"] = lines
    return df


def _check_header(header: list[str], path: Path, line: int, delimiter: str, what: str) -> None:
    if len(header) == 1 and delimiter == "," and "\t" in header[0]:
        raise TableError(
            f"{path}: line {line}: the header has tabs but no commas: a tab-separated {what} named "
            f"{path.name}. Fix: name it .tsv, or separate the columns with commas"
        )
    odd = [h for h in header if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in h)]
    if odd:
        raise TableError(
            f"{path}: line {line}: column name {odd[0]!r} has control characters: not a text {what}, "
            "or a damaged header. Fix: save it as a UTF-8 CSV/TSV text file with one name per column"
        )
    empty = [i + 1 for i, h in enumerate(header) if not h]
    if empty:
        fix = "name every column"
        if empty == [len(header)] and len(header) > 1:
            fix = f"remove the trailing {_name(delimiter)} at the end of the header line (and of the rows)"
        raise TableError(
            f"{path}: line {line}: the header has an empty column name (column {empty[0]} of {len(header)}). Fix: {fix}"
        )
    seen: set[str] = set()
    dup = [h for h in header if h in seen or seen.add(h)]
    if dup:
        raise TableError(
            f"{path}: line {line}: column name(s) {sorted(set(dup))} appear more than once in the header. "
            "Fix: give every column its own name"
        )
