"""The offline extractor against the synthetic demo cohort's ground truth.

The demo reports (fiveflow.cohort.report_text) state each fact of the case in one of several layouts
and phrasings, and never state an ``unknown`` fact; so for the extractor the truth value
``unknown`` means "the report does not say". Agreement is measured per field over the distinct
patients of two demo cohorts (400 slides each); every field must clear its floor.
"""

from __future__ import annotations

import pytest

from fiveflow.cohort.demo import demo_cases, demo_report_text
from fiveflow.reports import offline
from fiveflow.reports.normalize import FIELDS

SEEDS = (0, 1)
N_SLIDES = 400
# Measured on seeds (0, 1), 700 patients (rules-v6, rules-v7 and rules-v8 alike): 1.000 for every field but adjacent
# invasion, 0.9986 (one bare synoptic "TUMOR EXTENSION: Not identified", read as unknown by the reference
# labeller's convention, where the demo's truth is absent). Before the negated-STAS and "free of tumour" /
# "no extension beyond the lung" fixes: stas 0.986, adjacent 0.889.
# The floors leave room for a handful of misses should the demo phrasings grow.
FLOORS = {
    "differentiation": 0.99,
    "stas": 0.99,
    "vascular_invasion": 0.99,
    "pleural_invasion": 0.99,
    "adjacent_invasion": 0.99,
    "margins": 0.99,
}


@pytest.fixture(scope="module")
def demo_results():
    """[(case, report text, extracted labels)] for each distinct patient of the two cohorts."""
    out = []
    for seed in SEEDS:
        seen: set[str] = set()
        for c in demo_cases(n_slides=N_SLIDES, seed=seed):
            if c.patient_id in seen:  # a patient's two slides share one report
                continue
            seen.add(c.patient_id)
            text = demo_report_text(c)
            out.append((c, text, offline.extract(text).labels))
    return out


def test_demo_cohort_is_large_and_covers_every_value(demo_results):
    assert len(demo_results) >= 600
    for f in FIELDS:
        truth = {getattr(c, f) for c, _, _ in demo_results}
        assert "unknown" in truth, f
        assert len(truth - {"unknown"}) >= 2, (f, truth)  # both polarities (several grades) occur


@pytest.mark.parametrize("field", FIELDS)
def test_demo_agreement_per_field(demo_results, field):
    wrong = [(getattr(c, field), lab[field], text) for c, text, lab in demo_results if lab[field] != getattr(c, field)]
    agree = 1 - len(wrong) / len(demo_results)
    detail = "\n".join(f"truth={t} ours={o}: {txt[:300]!r}" for t, o, txt in wrong[:3])
    assert agree >= FLOORS[field], f"{field}: agreement {agree:.4f} < {FLOORS[field]}\n{detail}"


# ----------------------------------------------------------------------------- phrasings


def labels(text: str) -> dict[str, str]:
    return offline.extract(text).labels


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Tumor spread through air spaces (STAS): Not identified.", "absent"),  # was read as present
        ("Tumor spread through air spaces (STAS): Absent.", "absent"),
        ("Spread through air spaces (STAS): Negative.", "absent"),
        ("Tumor spread through air spaces (STAS): - Not identified.", "absent"),  # OCR bullet dash
        ("No spread through air spaces (STAS) is identified.", "absent"),
        ("Tumor spread through air spaces (STAS): Present.", "present"),
        ("STAS: Absent.", "absent"),
        ("STAS: Identified.", "present"),
        ("Tumour cell clusters are seen within air spaces beyond the tumour edge (STAS).", "present"),
        ("Spread through air spaces (STAS): Cannot be assessed.", "unknown"),
    ],
)
def test_stas_phrasings(text, expected):
    assert labels(text)["stas"] == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("No direct extension beyond the lung is seen.", "absent"),
        ("Squamous cell carcinoma, no extension beyond the lung.", "absent"),
        ("CHEST WALL FREE OF TUMOR", "absent"),
        ("PERICARDIUM FREE OF TUMOR", "absent"),
        ("The attached diaphragm is free of tumour.", "absent"),
        ("The attached mediastinal fat is free of carcinoma.", "absent"),
        ("The rib is negative for tumor.", "absent"),
        ("The chest wall is not involved.", "absent"),
        ("Adenocarcinoma without infiltration of neighbouring structures.", "absent"),
        ("There is no extension into adjacent structures.", "absent"),
        ("Chest wall invasion: Not identified.", "absent"),
        ("Adjacent organ invasion: Absent.", "absent"),
        ("Direct extension of tumor: None identified.", "absent"),
        ("Chest wall invasion: Present.", "present"),
        ("The rib is not free of tumour.", "present"),
        ("The chest wall is involved by carcinoma.", "present"),
        ("The carcinoma directly invades the attached diaphragm.", "present"),
        ("It is unclear whether the chest wall is free of tumour.", "unknown"),
        ("The chest wall margin is free of tumor.", "unknown"),  # a margin: question 6
        ("Mediastinal lymph nodes are free of tumor.", "unknown"),  # lymph nodes are ignored
        ("The pleura is free of tumor.", "unknown"),  # visceral pleura: question 4
    ],
)
def test_adjacent_phrasings(text, expected):
    assert labels(text)["adjacent_invasion"] == expected


def test_chest_wall_free_of_tumour_is_not_a_margin_statement():
    lab = labels("CHEST WALL FREE OF TUMOR. SURGICAL MARGINS NEGATIVE.")
    assert lab["adjacent_invasion"] == "absent"
    assert lab["margins"] == "negative"
