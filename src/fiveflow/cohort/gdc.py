"""A cohort from GDC manifests: slides per class, merged across manifest releases, labels, patients.

``cohort.source: gdc`` reads ``cohort.gdc.manifests`` (class name -> one or more GDC manifests,
``id filename md5 size state``). Releases of one manifest give the same slides new file ids and
md5s but keep file names and sizes, so rows are matched on **file name**; the manifest listed last
wins (its id and md5 are the ones downloaded and verified). A file listed under two classes is an
error. An optional clinical table (``cohort.gdc.labels``) overrides the class of the slides it
lists (matched on file name too); it is read strictly (:func:`fiveflow.delimited.read_delimited`: CSV,
or TSV for ``.tsv``/``.tab``).

Slide id: the file name up to its first dot (the TCGA slide barcode, e.g.
``TCGA-49-4506-01Z-00-DX3``), the full stem when two files share a barcode, cleaned by the one id
policy (:func:`fiveflow.ids.clean_ids`; two file names that clean to one id are an error). Patient id: the first
three barcode fields (``TCGA-49-4506``), which is what TCGA reports are keyed by. Slides live at
``cohort.gdc.slide_dir/{file name}``; missing ones are downloaded by rule ``gdc_download``.

Kept light (pandas only): Snakemake builds this table at parse time for 1,000+ slides.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..delimited import read_delimited
from ..ids import clean_ids
from ..settings import with_defaults

_TCGA_PATIENT = re.compile(r"^(TCGA-[A-Za-z0-9]{2}-[A-Za-z0-9]{4})")
COLUMNS = ["slide_id", "patient_id", "label", "path", "file_id", "filename", "md5", "size", "manifest"]


def _as_list(v) -> list[str]:
    return [v] if isinstance(v, (str, Path)) else list(v or [])


def patient_of(slide_id: str) -> str:
    """TCGA patient barcode of a slide barcode; other ids are their own patient."""
    m = _TCGA_PATIENT.match(slide_id)
    return m.group(1) if m else slide_id


def gdc_table(gdc: dict, classes: list[str], root: str | Path) -> pd.DataFrame:
    """One row per slide (:data:`COLUMNS`), from ``cohort.gdc`` of the config.

    Raises ``ValueError`` naming the manifest/table and the fix for an unknown class, a file under
    two classes, a clinical table without its columns, or an empty cohort.
    """
    from ..config import resolve_path
    from ..download.manifest import read_manifest

    root = Path(root)
    manifests = gdc.get("manifests") or {}
    unknown = [c for c in manifests if c not in classes]
    if unknown:
        raise ValueError(
            f"`cohort.gdc.manifests` has class(es) {unknown} that are not in `classes` {classes}. "
            "Fix: key each manifest list by a class name from `classes`."
        )
    rows: dict[str, dict] = {}
    for label, files in manifests.items():
        for f in _as_list(files):
            path = resolve_path(f, root)
            for r in read_manifest(path):
                prev = rows.get(r.filename)
                if prev is not None and prev["label"] != label:
                    raise ValueError(
                        f"{r.filename} is listed under class {prev['label']} ({prev['manifest']}) and "
                        f"under {label} ({path}). Fix: remove it from one of the manifests."
                    )
                rows[r.filename] = {
                    "label": label,
                    "file_id": r.id,
                    "filename": r.filename,
                    "md5": r.md5,
                    "size": int(r.size),
                    "manifest": str(path),
                }  # later releases win
    if not rows:
        raise ValueError(
            "`cohort.gdc.manifests` lists no slides. Fix: add GDC manifests per class "
            "(GDC portal: cart > Download > Manifest)."
        )
    df = pd.DataFrame(list(rows.values()))
    labels = gdc.get("labels")
    if labels:
        table = resolve_path(labels, root)
        gdc = with_defaults(gdc, "cohort.gdc")
        fcol, lcol = gdc["labels_file_column"], gdc["labels_column"]
        lab = read_delimited(table, what="clinical table (`cohort.gdc.labels`)")
        missing = [c for c in (fcol, lcol) if c not in lab.columns]
        if missing:
            raise ValueError(
                f"{table}: missing column(s) {missing}; found {list(lab.columns)}. Fix: set "
                "`cohort.gdc.labels_file_column` / `labels_column` to the file-name and label columns."
            )
        bad = sorted(set(lab[lcol]) - set(classes))
        if bad:
            raise ValueError(
                f"{table}: labels {bad[:5]} in column {lcol!r} are not in `classes` {classes}. "
                "Fix: correct the table or the class names."
            )
        override = dict(zip(lab[fcol], lab[lcol]))
        df["label"] = [override.get(f, lab0) for f, lab0 in zip(df["filename"], df["label"])]
    short = df["filename"].str.split(".").str[0]
    dup = short.duplicated(keep=False)
    stem = df["filename"].map(lambda n: Path(n).stem)
    df["slide_id"] = clean_ids(
        short.where(~dup, stem),
        "slide",
        "`cohort.gdc.manifests`",
        lines=[f"{m}: {f}" for m, f in zip(df["manifest"], df["filename"])],
    )
    twice = df.loc[df["slide_id"].duplicated(keep=False)]
    if len(twice):
        raise ValueError(
            f"files {twice['filename'].tolist()[:4]} would all be slide {twice['slide_id'].iloc[0]!r} "
            "(the same name up to the extension). Fix: keep one of them in the manifests."
        )
    df["patient_id"] = [patient_of(s) for s in df["slide_id"]]
    slide_dir = resolve_path(gdc.get("slide_dir") or "data/gdc/slides", root)
    df["path"] = [str(slide_dir / f) for f in df["filename"]]
    return df.sort_values("slide_id", kind="stable")[COLUMNS].reset_index(drop=True)


def write_samples(table: pd.DataFrame, out_csv: str | Path) -> None:
    """The samples sheet (``slide_id, patient_id, label, path`` + GDC columns) the later stages read."""
    from ..fileio import atomic_path

    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)


CLASS_TABLE_COLUMNS = [
    "slide_file_name",
    "slide_id_short",
    "slide_id_hash",
    "case_id",
    "patient_id",
    "slide_md5sum",
    "cancer_type",
]


def class_table_from_manifests(manifests: dict[str, str | Path]) -> str:
    """The per-slide class table (``classes_extended_info.csv`` of the TCGA-lung work) from one GDC manifest per class.

    One row per manifest file: the file name, its barcode (before the first '.') and hash (between the first '.'
    and ``.svs``), case (first 15 characters) and patient (first 12) barcodes, the manifest md5 and the class;
    sorted by class then barcode; CSV text with '\\n' line ends. Rebuilds the shipped
    ``resources/tcga_lung/classes_extended_info.csv`` byte for byte from the two 2023-10-03 manifests, so a
    newer GDC export can be given its table the same way.
    """
    import csv
    import io

    from ..download.manifest import read_manifest

    rows = []
    for label, path in manifests.items():
        for r in read_manifest(path):
            short, _, rest = r.filename.partition(".")
            rows.append(
                [
                    r.filename,
                    short,
                    rest[: -len(".svs")] if rest.endswith(".svs") else rest,
                    r.filename[:15],
                    r.filename[:12],
                    r.md5,
                    label,
                ]
            )
    rows.sort(key=lambda row: (row[6], row[1]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CLASS_TABLE_COLUMNS)
    w.writerows(rows)
    return buf.getvalue()
