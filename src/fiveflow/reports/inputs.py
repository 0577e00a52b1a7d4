"""Report inputs of any common shape -> one table ``patient_id, text, source, status, reason``.

Accepted inputs (:func:`read_report_inputs`):

* a table: CSV, TSV (``.tsv``/``.tab``), a zip archive of one CSV/TSV, Parquet or Excel, with a patient id column and a text
  column. Ids: ``--id-column``, else ``patient_id``, else ``patient_filename`` cut at its first '.'
  (the TCGA-Reports naming ``TCGA-XX-XXXX.<uuid>``). Text: ``--text-column``, else ``text``, else
  ``ocr_text``. CSV/TSV are read strictly (:func:`fiveflow.delimited.read_delimited`): a row with more
  or fewer fields than the header is an error naming the line, so a text with commas must be quoted
  (``"Adenocarcinoma, grade 2"``), as spreadsheet programs and pandas write it.
* a folder of report files (``.txt`` and/or ``.pdf``, not searched recursively), or one such file.
  The patient id comes from the file name: its ``TCGA-XX-XXXX`` prefix when it has one (so
  ``TCGA-05-4244.3a84....txt`` and ``TCGA-05-4244-01Z-00-DX1.pdf`` are both ``TCGA-05-4244``),
  else the file name stem. PDFs are read through their text layer with ``pypdf``; scanned PDFs
  need OCR first.

Patient ids, from a table or from file names, are cleaned by the same policy as the samples sheet's
(:func:`fiveflow.ids.clean_ids`: ``José 01`` -> ``Jose_01``), so reports and slides meet; two
different ids that clean to the same one (``A B`` and ``A_B``) are an error.

One bad report never stops the batch: it is kept as a row whose ``status`` says what is wrong
(``empty``: no text; ``no_text``: a PDF without a text layer; ``unreadable``: a file that could not
be read or decoded) and whose ``reason`` says why and what to do. ``status`` is ``ok`` otherwise.
Problems with the input as a whole (missing path, missing columns, an unparsable table) raise
``FileNotFoundError``/``ValueError`` naming the file, what was found and the fix.

A patient with several reports gets one row: the texts of their readable reports joined by a blank
line in input order, ``source`` the reports' sources joined by ``; ``, ``status`` ``ok`` if any
report was ok (else the first report's status), and ``reason`` the reasons of the reports that
were not ok.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pandas as pd

from ..delimited import TableError, read_delimited
from ..ids import clean_id, clean_ids

LOG = logging.getLogger("fiveflow.reports")

COLUMNS = ["patient_id", "text", "source", "status", "reason"]
STATUSES = ("ok", "empty", "no_text", "unreadable")
TABLE_SUFFIXES = {
    ".csv": ",",
    ".tsv": "\t",
    ".tab": "\t",
    ".parquet": None,
    ".pq": None,
    ".xlsx": "excel",
    ".xls": "excel",
    ".zip": "zip",
}
FILE_SUFFIXES = (".txt", ".pdf")
ID_COLUMNS = ("patient_id", "patient_filename")
TEXT_COLUMNS = ("text", "ocr_text")
_TCGA = re.compile(r"^(TCGA-[A-Za-z0-9]{2}-[A-Za-z0-9]{4})(?![A-Za-z0-9])", re.I)


# ----------------------------------------------------------------------------- ids


def patient_ids(df: pd.DataFrame, path: Path, id_column: str | None = None, kind: str = "report patient") -> pd.Series:
    """Cleaned patient ids of a table: ``id_column``, else ``patient_id``, else ``patient_filename`` before its first '.'.

    Cleaned by :func:`fiveflow.ids.clean_ids` (``kind`` names them in errors): two different ids
    that clean to the same one are an error naming both and their lines.
    """
    if id_column is not None:
        if id_column not in df.columns:
            raise ValueError(
                f"{path}: no column {id_column!r} (given as the patient id column); "
                f"found columns: {list(df.columns)}. Fix: pass the name of the column holding patient ids"
            )
        ids = df[id_column]
        if id_column == "patient_filename":
            ids = ids.astype(str).str.split(".", n=1).str[0]
    elif "patient_id" in df.columns:
        ids = df["patient_id"]
    elif "patient_filename" in df.columns:
        ids = df["patient_filename"].astype(str).str.split(".", n=1).str[0]
    else:
        raise ValueError(
            f"{path}: needs a `patient_id` column or a `patient_filename` column "
            f"(TCGA-XX-XXXX.<uuid>); found columns: {list(df.columns)}. "
            f"Fix: rename the id column, or name it with --id-column"
        )
    ids = ids.astype("string").str.strip()
    bad = ids.isna() | (ids == "")
    if bad.any():
        raise ValueError(
            f"{path}: {int(bad.sum())} row(s) have an empty patient id (first at "
            f"{_where(df, int(bad.to_numpy().argmax()))}). Fix: fill in or drop those rows"
        )
    lines = [_where(df, i) for i in range(len(df))]
    return pd.Series(clean_ids(ids.astype(str), kind, path, lines=lines), index=df.index, dtype=object)


def _where(df: pd.DataFrame, i: int) -> str:
    """Where row ``i`` of a table is: its line (CSV/TSV, from :func:`read_table`), else its data row."""
    lines = df.attrs.get("lines")
    return f"line {lines[i]}" if lines is not None and len(lines) == len(df) else f"data row {i + 1}"


def raw_patient_id_from_filename(path: str | os.PathLike) -> str:
    """``TCGA-XX-XXXX`` when the file name starts with one, else the file name stem (not cleaned)."""
    name = Path(path).name
    m = _TCGA.match(name)
    if m:
        return m.group(1).upper()
    return Path(name).stem


def patient_id_from_filename(path: str | os.PathLike) -> str:
    """``TCGA-XX-XXXX`` when the file name starts with one, else the cleaned file name stem."""
    return clean_id(raw_patient_id_from_filename(path))


# ----------------------------------------------------------------------------- single files


def read_text_file(path: Path) -> tuple[str, str, str]:
    """(text, status, reason) of a plain-text report; never raises."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return "", "unreadable", f"cannot read the file ({exc.strerror or exc}); check its permissions"
    if b"\x00" in data:
        return "", "unreadable", "binary content (NUL bytes), not a text file; export the report as UTF-8 text"
    reason = ""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
            reason = "not UTF-8: decoded as cp1252 (Windows-1252)"
        except UnicodeDecodeError as exc:
            return (
                "",
                "unreadable",
                (
                    f"cannot decode the text (not UTF-8 or cp1252; bad byte at offset {exc.start}); "
                    "re-save the report as UTF-8"
                ),
            )
    if not text.strip():
        return "", "empty", "the report file is empty"
    return text, "ok", reason


def read_pdf(path: Path) -> tuple[str, str, str]:
    """(text, status, reason) of a PDF report from its text layer; never raises."""
    try:
        import pypdf
    except ImportError:
        return "", "unreadable", "pypdf is not installed; `pip install pypdf` to read PDF reports"
    pdf_log = logging.getLogger("pypdf")
    level = pdf_log.level
    pdf_log.setLevel(logging.ERROR)  # pypdf warns about every harmless quirk of a PDF
    try:
        reader = pypdf.PdfReader(str(path))
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except Exception as exc:  # noqa: BLE001 - pypdf raises several types here
                ok = 0
                LOG.debug("%s: decrypt failed: %s", path, exc)
            if not ok:
                return "", "unreadable", "the PDF is password-protected; save an unprotected copy"
        pages = [(page.extract_text() or "") for page in reader.pages]
    except PermissionError as exc:  # not a broken PDF: re-downloading would not help
        return "", "unreadable", f"cannot read the file ({exc.strerror or exc}); check its permissions"
    except Exception as exc:  # noqa: BLE001 - a broken PDF may fail anywhere inside pypdf
        return "", "unreadable", f"not a readable PDF ({type(exc).__name__}: {exc}); re-export or re-download it"
    finally:
        pdf_log.setLevel(level)
    text = "\n".join(p.strip() for p in pages if p.strip())
    if not text.strip():
        return (
            "",
            "no_text",
            (
                f"the PDF has no text layer ({len(pages)} page(s), probably a scan); "
                "OCR it first (e.g. `ocrmypdf --force-ocr in.pdf out.pdf`) or give the text as .txt"
            ),
        )
    return text, "ok", ""


def _read_file(path: Path) -> tuple[str, str, str]:
    return read_pdf(path) if path.suffix.lower() == ".pdf" else read_text_file(path)


# ----------------------------------------------------------------------------- tables


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV/TSV/Parquet/Excel table as strings ("" for missing); the format comes from the extension.

    CSV/TSV go through the strict :func:`fiveflow.delimited.read_delimited` (a ragged row is a
    ``TableError`` naming the line; ``df.attrs["lines"]`` holds each row's line number).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported table {suffix or '(no extension)'!r}. Fix: give a {'/'.join(TABLE_SUFFIXES)} file"
        )
    sep = TABLE_SUFFIXES[suffix]
    kind = {None: "Parquet", "excel": "Excel", "\t": "TSV", "zip": "zipped CSV/TSV"}.get(sep, "CSV")
    try:
        if sep is None or sep == "excel":
            df = pd.read_parquet(path) if sep is None else pd.read_excel(path, dtype=str)
            return df.astype(object).where(df.notna(), "").astype(str)
        return read_delimited(path, None if sep == "zip" else sep, what=f"{kind} table")
    except TableError:
        raise  # names the file, the line and the fix already
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{path}: the file is empty; expected a header line with patient id and text columns"
        ) from None
    except ImportError as exc:  # pandas' Excel reader needs openpyxl
        raise ValueError(f"{path}: reading {kind} needs {exc.name or 'openpyxl'}. Fix: pip install openpyxl") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise ValueError(
            f"{path}: cannot be read as {kind} ({type(exc).__name__}: {exc}). Fix: check the file "
            f"is {'an' if kind == 'Excel' else 'a'} {kind} file (the format is taken from the extension)"
        ) from None


def _text_column(df: pd.DataFrame, path: Path, text_column: str | None, need_text: bool) -> str | None:
    if text_column is not None:
        if text_column not in df.columns:
            raise ValueError(
                f"{path}: no column {text_column!r} (given as the report text column); "
                f"found columns: {list(df.columns)}. Fix: pass the name of the column holding the text"
            )
        return text_column
    for c in TEXT_COLUMNS:
        if c in df.columns:
            return c
    if need_text:
        raise ValueError(
            f"{path}: needs a `text` column with the report text (or `ocr_text`); found columns: "
            f"{list(df.columns)}. Fix: rename the text column, or name it with --text-column"
        )
    return None


def _table_rows(path: Path, id_column: str | None, text_column: str | None, need_text: bool) -> pd.DataFrame:
    df = read_table(path)
    ids = patient_ids(df, path, id_column)
    col = _text_column(df, path, text_column, need_text)
    text = df[col].astype(str) if col else pd.Series([""] * len(df), index=df.index, dtype=object)
    # CSV/TSV: the physical line of each row (header = 1); Excel: the sheet row; Parquet: the row index
    first = 2 if TABLE_SUFFIXES[path.suffix.lower()] == "excel" else 0
    where = df.attrs.get("lines") if "lines" in df.attrs else [i + first for i in range(len(df))]
    blank = text.str.strip().eq("")
    out = pd.DataFrame(
        {
            "patient_id": ids.to_numpy(),
            "text": text.where(~blank, "").to_numpy(),
            "source": [f"{path.name}:{w}" for w in where],
            "status": "ok",
            "reason": "",
        }
    )
    if col:
        out.loc[blank.to_numpy(), ["status", "reason"]] = ["empty", f"empty `{col}`"]
    return out


# ----------------------------------------------------------------------------- folders


def _file_rows(files: list[Path], where: Path) -> pd.DataFrame:
    pids = clean_ids(
        [raw_patient_id_from_filename(f) for f in files], "report patient", where, lines=[f.name for f in files]
    )
    rows = []
    for f, pid in zip(files, pids):
        text, status, reason = _read_file(f)
        if status != "ok":
            LOG.warning("%s: %s (%s)", f, status, reason)
        rows.append({"patient_id": pid, "text": text, "source": f.name, "status": status, "reason": reason})
    return pd.DataFrame.from_records(rows, columns=COLUMNS)


def _join(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    dup = df["patient_id"].duplicated()
    if not dup.any():
        return df.reset_index(drop=True)
    LOG.warning("%s: %d extra report(s) for patients with several reports: texts joined", path, int(dup.sum()))

    def one(g: pd.DataFrame) -> pd.Series:
        ok = g["status"].eq("ok")
        reasons = [f"{s}: {st}: {r}" for s, st, r in zip(g["source"], g["status"], g["reason"]) if r]
        return pd.Series(
            {
                "text": "\n\n".join(t for t in g["text"] if t),
                "source": "; ".join(g["source"]),
                "status": "ok" if ok.any() else g["status"].iloc[0],
                "reason": "; ".join(reasons) if len(g) > 1 else g["reason"].iloc[0],
            }
        )

    rows = [{"patient_id": pid, **one(g).to_dict()} for pid, g in df.groupby("patient_id", sort=False)]
    return pd.DataFrame.from_records(rows, columns=COLUMNS)


def read_report_inputs(
    path: str | os.PathLike,
    id_column: str | None = None,
    text_column: str | None = None,
    *,
    need_text: bool = True,
) -> pd.DataFrame:
    """Reports (a table, a folder of .txt/.pdf, or one such file) -> ``patient_id, text, source, status, reason``.

    One row per patient, in input order (files: sorted by name). ``need_text=False`` lets a table
    without a text column through (every text empty, status ``ok``): for backends that do not read it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"reports input not found: {path}. Fix: give a CSV/TSV/Parquet table of reports, "
            f"or a folder of .txt/.pdf reports"
        )
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)
        if not files:
            seen = sorted({p.suffix.lower() or "(no extension)" for p in path.iterdir() if not p.name.startswith(".")})
            raise ValueError(
                f"{path}: a folder with no .txt or .pdf report files (found: "
                f"{', '.join(seen) if seen else 'nothing'}). Fix: put one report per patient in "
                f".txt or .pdf files named by patient id, or give a table of reports instead"
            )
        df = _file_rows(files, path)
    else:
        suffix = path.suffix.lower()
        if suffix in TABLE_SUFFIXES:
            df = _table_rows(path, id_column, text_column, need_text)
        elif suffix in FILE_SUFFIXES:
            df = _file_rows([path], path.parent)
        else:
            raise ValueError(
                f"{path}: unsupported report input {suffix or '(no extension)'!r}. Fix: give a "
                f"table ({', '.join(TABLE_SUFFIXES)}), a .txt/.pdf report, or a folder of them"
            )
    out = _join(df, path)
    bad = out["status"].ne("ok")
    if bad.any():
        LOG.warning(
            "%s: %d of %d patient(s) have no usable report text: %s",
            path,
            int(bad.sum()),
            len(out),
            out.loc[bad, "status"].value_counts().to_dict(),
        )
    return out
