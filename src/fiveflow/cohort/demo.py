"""The embedded synthetic demo cohort: cases, slides, raw reports and tables.

Public API (the Snakemake rules and ``fiveflow demo`` call these):

- :func:`demo_cases` ``(n_slides, seed)``: the cohort, pure and fast (called at parse time);
- :func:`write_demo_slide`: one JPEG-tiled pyramidal BigTIFF, rendered tile by tile;
- :func:`demo_report_text`: the raw pathology report of the case's patient;
- :func:`write_demo_tables`: ``samples.csv``, ``reports.csv`` and ``truth.csv``.

Everything is a function of ``(n_slides, seed)``: the same arguments give the same cases, the
same report texts and byte-identical slides.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import random
import uuid
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING

from ..fileio import atomic_path
from .facts import draw_facts

if TYPE_CHECKING:  # pragma: no cover
    from .scene import Difficulty

LABELS = ("LUAD", "LUSC")
MIN_SLIDES = 8
TRUTH_COLUMNS = (
    "patient_id",
    "label",
    "differentiation",
    "stas",
    "vascular_invasion",
    "pleural_invasion",
    "adjacent_invasion",
    "margins",
)

# The six report facts of a patient are drawn jointly from the per-class distribution of real TCGA-lung answers
# (fiveflow/data/demo/report_facts.csv, fiveflow.cohort.facts); reports leave `unknown` facts unstated.
_SUBTYPE = {
    "LUAD": {
        "well": ("lepidic", "acinar", "papillary"),
        "moderate": ("acinar", "papillary", "acinar"),
        "moderate_to_poor": ("acinar", "solid", "micropapillary"),
        "poor": ("solid", "acinar", "micropapillary"),
        "unknown": ("acinar", "papillary"),
        "mixed": ("acinar", "solid", "papillary"),
        "undifferentiated": ("solid",),
    },
    "LUSC": {
        "well": ("keratinizing",),
        "moderate": ("keratinizing", "keratinizing", "non-keratinizing"),
        "moderate_to_poor": ("non-keratinizing", "keratinizing"),
        "poor": ("non-keratinizing", "basaloid"),
        "unknown": ("keratinizing", "non-keratinizing"),
        "mixed": ("keratinizing", "non-keratinizing"),
        "undifferentiated": ("basaloid",),
    },
}
_ADJ_SITES = ("chest wall", "pericardium", "diaphragm", "mediastinal fat", "rib")


@dataclass(frozen=True)
class DemoCase:
    """One slide of the demo cohort with its patient's (ground-truth) report facts."""

    index: int
    slide_id: str  # e.g. "DEMO-0007-01Z-00-DX1"
    patient_id: str  # e.g. "DEMO-0007"
    label: str  # "LUAD" | "LUSC"
    differentiation: str  # well | moderate | moderate_to_poor | poor | mixed | undifferentiated | unknown
    stas: str  # present | absent | unknown
    vascular_invasion: str  # present | absent | unknown
    pleural_invasion: str  # present | absent | unknown
    adjacent_invasion: str  # present | absent | unknown
    margins: str  # negative | positive | unknown
    seed: int  # per-slide seed (cohort seed, slide index): drives the pixels
    slide_number: int  # 1 or 2 (DX1 / DX2) within the patient
    patient_seed: int  # drives the report wording (shared by a patient's slides)
    report_uuid: str  # deterministic uuid4-style string of the patient's report
    subtype: str  # acinar, papillary, solid, ... | keratinizing, non-keratinizing, ...
    laterality: str  # left | right
    lobe: str  # upper | middle | lower
    procedure: str  # lobectomy | wedge resection | segmentectomy | pneumonectomy
    tumor_size_cm: float
    nodes_examined: int
    nodes_positive: int
    adjacent_site: str  # structure invaded or examined ("" when unknown)
    margin_site: str  # bronchial | parenchymal | vascular (the involved margin if positive)
    pt: str  # e.g. "pT2a"
    pn: str  # e.g. "pN0"
    stage: str  # e.g. "IB"
    age: int
    sex: str  # male | female


def _derive(*parts: object) -> int:
    """A stable 31-bit integer from the parts (independent of Python's hash randomisation)."""
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


def _stage(size: float, pleura: str, adj: str, adj_site: str, pos: int, rng: random.Random) -> tuple[str, str, str]:
    """pT / pN / stage consistent with the facts (AJCC 8th, simplified)."""
    if size <= 1:
        t = "pT1a"
    elif size <= 2:
        t = "pT1b"
    elif size <= 3:
        t = "pT1c"
    elif size <= 4:
        t = "pT2a"
    elif size <= 5:
        t = "pT2b"
    elif size <= 7:
        t = "pT3"
    else:
        t = "pT4"
    if pleura == "present" and t.startswith("pT1"):
        t = "pT2a"
    if adj == "present":
        t = "pT4" if adj_site in ("diaphragm", "mediastinal fat") else max(t, "pT3")
    n = "pN0" if pos == 0 else rng.choice(("pN1", "pN1", "pN2"))
    tn = t[1:3]
    table = {
        ("T1", "pN0"): "IA",
        ("T2", "pN0"): "IB",
        ("T3", "pN0"): "IIB",
        ("T4", "pN0"): "IIIA",
        ("T1", "pN1"): "IIB",
        ("T2", "pN1"): "IIB",
        ("T3", "pN1"): "IIIA",
        ("T4", "pN1"): "IIIA",
        ("T1", "pN2"): "IIIA",
        ("T2", "pN2"): "IIIA",
        ("T3", "pN2"): "IIIB",
        ("T4", "pN2"): "IIIB",
    }
    stage = table[(tn, n)]
    if t == "pT2b" and n == "pN0":
        stage = "IIA"
    return t, n, stage


def _patient_facts(seed: int, number: int, label: str) -> dict:
    rng = random.Random(f"fiveflow-demo-patient:{seed}:{number}")
    six = draw_facts(rng, label)  # jointly, from the real answers' per-class distribution
    diff, pleura, adj = six["differentiation"], six["pleural_invasion"], six["adjacent_invasion"]
    adj_site = rng.choice(_ADJ_SITES) if adj != "unknown" else ""
    size = round(rng.uniform(1.0, 3.5) if rng.random() < 0.6 else rng.uniform(3.5, 8.0), 1)
    examined = rng.randint(3, 22)
    positive = 0 if rng.random() < 0.65 else rng.randint(1, min(5, examined))
    t, n, stage = _stage(size, pleura, adj, adj_site, positive, rng)
    laterality = rng.choice(("left", "right"))
    lobe = rng.choice(("upper", "lower") if laterality == "left" else ("upper", "middle", "lower"))
    return dict(
        **six,
        patient_seed=_derive("report", seed, number),
        report_uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        subtype=rng.choice(_SUBTYPE[label][diff]),
        laterality=laterality,
        lobe=lobe,
        procedure=rng.choices(("lobectomy", "wedge resection", "segmentectomy", "pneumonectomy"), (70, 12, 8, 10))[0],
        tumor_size_cm=size,
        nodes_examined=examined,
        nodes_positive=positive,
        adjacent_site=adj_site,
        margin_site=rng.choice(("bronchial", "parenchymal", "vascular")),
        pt=t,
        pn=n,
        stage=stage,
        age=rng.randint(45, 84),
        sex=rng.choice(("male", "female")),
    )


def demo_cases(n_slides: int, seed: int) -> list[DemoCase]:
    """The demo cohort: ``n_slides`` slides (>= 8), classes balanced, a few patients with two slides.

    Slides are split as evenly as possible between LUAD and LUSC; in each class about one
    patient in eight has two slides (DX1, DX2), so patient-level splits matter. Patients
    alternate between the classes. Fast: no numpy; the only file read is the small fact table
    (:mod:`fiveflow.cohort.facts`, read once).
    """
    if isinstance(n_slides, bool) or not isinstance(n_slides, int) or n_slides < MIN_SLIDES:
        raise ValueError(
            f"demo cohort: n_slides must be an integer >= {MIN_SLIDES} (got {n_slides!r}); "
            f"fewer slides cannot give both classes a train and a test split. "
            f"Fix: set cohort.demo.n_slides to {MIN_SLIDES} or more."
        )
    seed = int(seed)
    rng = random.Random(f"fiveflow-demo-cohort:{seed}:{n_slides}")
    per_class: dict[str, list[int]] = {}
    for k, label in enumerate(LABELS):
        n_c = (n_slides + 1 - k) // 2  # LUAD gets the odd slide
        doubles = max(1, n_c // 8)
        n_pat = n_c - doubles
        two = set(rng.sample(range(n_pat), doubles))
        per_class[label] = [2 if i in two else 1 for i in range(n_pat)]
    cases: list[DemoCase] = []
    number = 0
    for pair in zip_longest(*(per_class[lab] for lab in LABELS)):
        for label, n_sl in zip(LABELS, pair):
            if n_sl is None:
                continue
            number += 1
            pid = f"DEMO-{number:04d}"
            facts = _patient_facts(seed, number, label)
            for s in range(1, n_sl + 1):
                idx = len(cases)
                cases.append(
                    DemoCase(
                        index=idx,
                        slide_id=f"{pid}-01Z-00-DX{s}",
                        patient_id=pid,
                        label=label,
                        seed=_derive("slide", seed, idx),
                        slide_number=s,
                        **facts,
                    )
                )
    return cases


def write_demo_slide(
    case: DemoCase,
    path: str | os.PathLike,
    width: int,
    height: int,
    mpp: float,
    tile: int = 256,
    difficulty: Difficulty | dict | None = None,
) -> None:
    """Write the case's slide as a JPEG-compressed, tiled, pyramidal BigTIFF at ``path``.

    Level 0 is ``width`` x ``height`` pixels of ``mpp`` microns, rendered tile by tile from a
    fixed per-slide seed (byte-identical for the same case and size); each further level is
    the 2x2 average of the one above (``subfiletype=1``), down to a longest side of at most
    512 px. Resolution tags are in pixels per centimetre, so OpenSlide and tiatoolbox report
    ``mpp``. ``difficulty`` (a :class:`~fiveflow.cohort.scene.Difficulty` or the config's
    ``cohort.demo.difficulty`` dict; None = the demo's) sets how much class signal the pixels carry. Memory does not grow with the slide area (:mod:`fiveflow.cohort.pyramid`). The
    file appears atomically: nothing is left at ``path`` if writing fails.
    """
    from .pyramid import write_pyramid
    from .render import TileRenderer
    from .scene import Scene

    width, height, tile = int(width), int(height), int(tile)
    if tile <= 0 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16 (got {tile})")
    if width < tile or height < tile:
        raise ValueError(f"demo slide {case.slide_id}: {width}x{height} px is smaller than one {tile} px tile")
    if not float(mpp) > 0:
        raise ValueError(f"mpp must be > 0 (got {mpp!r})")
    mpp = float(mpp)
    renderer = TileRenderer(Scene(case, width, height, mpp, difficulty), tile=tile)
    with atomic_path(path) as tmp, _single_thread_blas():
        write_pyramid(
            tmp,
            lambda ox, oy: renderer.render(0, ox, oy),
            width,
            height,
            mpp,
            tile=tile,
            description=f"fiveflow synthetic demo slide {case.slide_id}; mpp={mpp}",
        )


def _single_thread_blas():
    """Limit BLAS to one thread while rendering (tiny matrix products; threads only contend)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        return contextlib.nullcontext()
    return threadpool_limits(1)


def demo_report_text(case: DemoCase) -> str:
    """The raw pathology report of the case's patient (same text for all of the patient's slides)."""
    from .report_text import report_text

    return report_text(case)


def write_demo_tables(
    cases: list[DemoCase],
    slide_paths: dict[str, str],
    samples_csv: str | os.PathLike,
    reports_csv: str | os.PathLike,
    truth_csv: str | os.PathLike,
) -> None:
    """Write ``samples.csv`` (one row per slide), ``reports.csv`` and ``truth.csv`` (one row per patient).

    ``slide_paths`` maps every slide id to the path written in ``samples.csv``.
    """
    missing = [c.slide_id for c in cases if c.slide_id not in slide_paths]
    if missing:
        raise KeyError(f"write_demo_tables: no path for slides {missing[:5]}")
    patients: dict[str, DemoCase] = {}
    for c in cases:
        patients.setdefault(c.patient_id, c)
    _write_csv(
        samples_csv,
        ("slide_id", "patient_id", "label", "path"),
        [(c.slide_id, c.patient_id, c.label, str(slide_paths[c.slide_id])) for c in cases],
    )
    _write_csv(
        reports_csv,
        ("patient_filename", "patient_id", "text"),
        [(f"{p.patient_id}.{p.report_uuid}", p.patient_id, demo_report_text(p)) for p in patients.values()],
    )
    _write_csv(truth_csv, TRUTH_COLUMNS, [tuple(getattr(p, k) for k in TRUTH_COLUMNS) for p in patients.values()])


def _write_csv(dest: str | os.PathLike, header: tuple[str, ...], rows: list[tuple]) -> None:
    with atomic_path(Path(dest)) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
