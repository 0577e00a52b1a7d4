"""structure_reports (CSV in, labels Parquet out) and the offline-vs-GPT-4 agreement on real reports."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import shared_path
from fiveflow.reports import offline
from fiveflow.reports.normalize import ALLOWED, FIELDS, normalize_answer
from fiveflow.reports.structure import COLUMNS, read_reports, structure_reports

DEV_CSV = "reports/tcga_lung_reports_dev.csv"
OCR_CSV = "reports/tcga_lung_100_ocr.csv"

# Measured with benchmarks/reports_offline_agreement.py (rules-v1, 287 reports with an answer):
# diff 0.965, stas 0.962, vascular 0.889, pleural 0.920, adjacent 0.679, margins 0.944.
# Floors leave a few points for rule edits; adjacent invasion is loosely answered by GPT-4
# (lymph nodes, bronchi, other lobes), so its floor is only a sanity check.
# Issue 5's bar for the rules backend: every question >= 0.75 and the mean >= 0.85 (regression floors, a
# little under what rules-v3 to rules-v5 (same fields; v4 appended the histologic type to the description, v5 names
# it only with reports.name_histotype) reach: 0.965 0.962 0.889 0.920 0.756 0.944).
AGREEMENT_FLOOR = {
    "differentiation": 0.93,
    "stas": 0.93,
    "vascular_invasion": 0.85,
    "pleural_invasion": 0.88,
    "adjacent_invasion": 0.75,
    "margins": 0.91,
}
CONTRACT = ["patient_id", *FIELDS, "description", "backend", "model", "prompt_version"]


def check_contract(df: pd.DataFrame) -> None:
    assert list(df.columns) == COLUMNS and COLUMNS[: len(CONTRACT)] == CONTRACT
    assert df["patient_id"].is_unique
    for f in FIELDS:
        assert set(df[f]) <= set(ALLOWED[f]), f
    for desc, *labels in df[["description", *FIELDS]].itertuples(index=False):
        parts = desc.split("; ")
        assert len(parts) == 6
        for part, f, lab in zip(parts, FIELDS, labels):
            assert (part == "Unknown") == (lab == "unknown"), (f, part, lab)


# ----------------------------------------------------------------------------- synthetic inputs


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


REPORT_A = (
    "FINAL DIAGNOSIS: Lung, right upper lobe, lobectomy: squamous cell carcinoma, poorly differentiated. "
    "Lymphovascular invasion: present. Visceral pleural invasion: not identified. Margins: negative."
)
REPORT_B = "Adenocarcinoma, well differentiated. TNM: pT1b pN0 V0 R0."


def test_offline_backend_writes_the_contract(tmp_path):
    src = write_csv(
        tmp_path / "reports.csv",
        [
            {"patient_filename": "TCGA-AA-0001.1111-aaaa", "text": REPORT_A},
            {"patient_filename": "TCGA-AA-0002.2222-bbbb", "text": REPORT_B},
            {"patient_filename": "TCGA-AA-0003.3333-cccc", "text": ""},
            {"patient_filename": "TCGA-AA-0001.4444-dddd", "text": "Addendum: no further findings."},
        ],
    )
    out = tmp_path / "out" / "labels.parquet"
    df = structure_reports(src, out, {"backend": "offline", "precomputed": None})
    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(df, back)
    check_contract(back)
    assert back["patient_id"].tolist() == ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"]
    a, b, c = (back.iloc[i] for i in range(3))
    assert (a.differentiation, a.vascular_invasion, a.pleural_invasion, a.margins) == (
        "poor",
        "present",
        "absent",
        "negative",
    )
    assert (b.differentiation, b.vascular_invasion, b.margins) == ("well", "absent", "negative")
    assert c.flag == "empty_report" and c.description == "; ".join(["Unknown"] * 6)
    assert set(back["backend"]) == {"offline"} and set(back["model"]) == {offline.MODEL_NAME}
    assert set(back["prompt_version"]) == {"five-v1"}
    meta = json.loads(pq.read_schema(out).metadata[b"fiveflow.reports"])
    assert meta["backend"] == "offline" and meta["n_patients"] == 3
    assert not list(out.parent.glob(".*tmp"))  # the atomic write left no temp file


def test_patient_id_column_wins_and_missing_columns_are_named(tmp_path):
    src = write_csv(tmp_path / "r.csv", [{"patient_id": "P1", "patient_filename": "X.1", "text": REPORT_B}])
    assert read_reports(src)["patient_id"].tolist() == ["P1"]
    bad = write_csv(tmp_path / "bad.csv", [{"id": "P1", "text": "x"}])
    with pytest.raises(ValueError, match=r"bad\.csv.*patient_id.*patient_filename"):
        structure_reports(bad, tmp_path / "l.parquet", {"backend": "offline"})
    notext = write_csv(tmp_path / "notext.csv", [{"patient_id": "P1", "report": "x"}])
    with pytest.raises(ValueError, match=r"notext\.csv.*`text`"):
        structure_reports(notext, tmp_path / "l.parquet", {"backend": "offline"})
    with pytest.raises(ValueError, match="reports.backend"):
        structure_reports(src, tmp_path / "l.parquet", {"backend": "gpt"})


def test_precomputed_backend(tmp_path, caplog):
    src = write_csv(
        tmp_path / "reports.csv",
        [
            {"patient_id": "P1", "text": REPORT_A},
            {"patient_id": "P2", "text": REPORT_B},
            {"patient_id": "P3", "text": REPORT_B},
        ],
    )
    answers = write_csv(
        tmp_path / "answers.csv",
        [
            {
                "patient_filename": "P1.abc",
                "answer": " Moderately differentiated; Unknown; Vascular invasion is absent; "
                "Pleural invasion by the lesion is present; Unknown; Margins clear (R0).",
            },
            {"patient_filename": "P2.def", "answer": "Poorly differentiated; Unknown"},
            {"patient_filename": "P9.xyz", "answer": "a; b; c; d; e; f"},
        ],
    )
    with caplog.at_level(logging.INFO, logger="fiveflow.reports"):
        df = structure_reports(src, tmp_path / "l.parquet", {"backend": "precomputed", "precomputed": str(answers)})
    check_contract(df)
    p1, p2, p3 = (df.iloc[i] for i in range(3))
    assert (p1.differentiation, p1.vascular_invasion, p1.pleural_invasion, p1.margins) == (
        "moderate",
        "absent",
        "present",
        "negative",
    )
    assert p1.description.startswith("Moderately differentiated; Unknown; Vascular invasion is absent;")
    assert p2.flag == "padded:2" and p2.differentiation == "poor"
    assert p3.flag == "missing_answer" and p3.description == "; ".join(["Unknown"] * 6)
    assert df["model"].eq("precomputed").all() and df["prompt_version"].str.startswith("external:").all()
    assert "no answer for 1 of 3" in caplog.text
    with pytest.raises(ValueError, match="reports.precomputed"):
        structure_reports(src, tmp_path / "l.parquet", {"backend": "precomputed", "precomputed": None})


def test_log_may_be_a_file_path(tmp_path):
    src = write_csv(tmp_path / "reports.csv", [{"patient_id": "P1", "text": REPORT_A}])
    log = tmp_path / "reports.log"
    structure_reports(src, tmp_path / "l.parquet", {"backend": "offline"}, log=log)
    assert "1 patient(s) via offline" in log.read_text()


# ----------------------------------------------------------------------------- real reports


@pytest.fixture(scope="module")
def dev():
    df = pd.read_csv(shared_path(DEV_CSV))
    df = df[df["answer"].notna()].reset_index(drop=True)
    return df, [offline.extract(t).labels for t in df["text"]]


@pytest.mark.shared_data
def test_offline_agrees_with_gpt4_on_real_reports(dev):
    df, ours = dev
    gpt = [normalize_answer(a).labels for a in df["answer"]]
    agree = {f: sum(g[f] == o[f] for g, o in zip(gpt, ours)) / len(df) for f in FIELDS}
    print("offline vs GPT-4 agreement:", {f: round(v, 3) for f, v in agree.items()})
    for f, floor in AGREEMENT_FLOOR.items():
        assert agree[f] >= floor, (f, agree[f])
    assert sum(agree.values()) / len(agree) >= 0.85
    # Where both give a definite answer they rarely contradict each other.
    for f in ("differentiation", "vascular_invasion", "pleural_invasion", "margins"):
        known = [(g[f], o[f]) for g, o in zip(gpt, ours) if "unknown" not in (g[f], o[f])]
        assert sum(a == b for a, b in known) / len(known) >= 0.94, f


@pytest.mark.shared_data
def test_structure_real_csv_both_backends(tmp_path):
    src = shared_path(DEV_CSV)
    off = structure_reports(src, tmp_path / "offline.parquet", {"backend": "offline"})
    pre = structure_reports(src, tmp_path / "pre.parquet", {"backend": "precomputed", "precomputed": str(src)})
    for df in (off, pre):
        check_contract(df)
        assert len(df) == 300
    assert (pre["flag"] == "empty").sum() == 13  # the dev file has 13 patients without an answer
    # Offline descriptions are short canonical phrases: far fewer distinct training classes.
    assert off["description"].nunique() < pre["description"].nunique()
    assert off["description"].str.len().max() < 250


@pytest.mark.shared_data
def test_raw_ocr_reports_do_not_break_the_rules():
    df = pd.read_csv(shared_path(OCR_CSV))
    graded = 0
    for text, _grade in zip(df["ocr_text"].fillna(""), df["grade"]):
        lab = offline.extract(text).labels
        for f in FIELDS:
            assert lab[f] in ALLOWED[f]
        graded += lab["differentiation"] != "unknown"
    assert graded >= 60  # most of these noisy OCR reports state a grade the rules can read


def test_every_row_carries_the_prompt_version_and_hash(tmp_path):
    from fiveflow.reports.prompts import DEFAULT_QUESTIONS, load_prompt

    reports = tmp_path / "r.csv"
    pd.DataFrame({"patient_id": ["P1", "P2"], "text": ["Poorly differentiated.", "No pleural invasion."]}).to_csv(
        reports, index=False
    )
    df = structure_reports(reports, tmp_path / "l.parquet", {"backend": "offline"})
    prompt = load_prompt()
    assert (df["prompt_version"] == prompt.version).all() and (df["prompt_sha256"] == prompt.sha256).all()
    assert DEFAULT_QUESTIONS.stem == prompt.version  # questions/<prompt_version>.yaml
    edited = tmp_path / "questions" / f"{prompt.version}-edited.yaml"
    edited.parent.mkdir()
    edited.write_text(DEFAULT_QUESTIONS.read_text())
    with pytest.raises(ValueError, match="new prompt version is a new file"):
        load_prompt(edited)  # an edited prompt must get its own version, not reuse the old one's name


def test_import_backend_reads_an_excel_column(tmp_path):
    """Precomputed answers may sit in any column of an Excel sheet (e.g. a spreadsheet of GPT-4 answers)."""
    reports = tmp_path / "r.csv"
    pd.DataFrame({"patient_id": ["P1", "P2"], "text": ["x", "y"]}).to_csv(reports, index=False)
    answers = tmp_path / "answers.xlsx"
    pd.DataFrame(
        {
            "patient_id": ["P1", "P2"],
            "gpt4": [
                "Poorly differentiated; Unknown; No vascular invasion; Unknown; Unknown; Margins clear (R0)",
                "Well differentiated; Unknown; Unknown; Pleural invasion present; Unknown; Unknown",
            ],
        }
    ).to_excel(answers, index=False)
    df = structure_reports(
        reports, tmp_path / "l.parquet", {"backend": "import", "precomputed": str(answers), "answer_column": "gpt4"}
    )
    df = df.set_index("patient_id")
    assert df.loc["P1", "differentiation"] == "poor" and df.loc["P1", "margins"] == "negative"
    assert df.loc["P2", "pleural_invasion"] == "present" and (df["backend"] == "precomputed").all()
    with pytest.raises(ValueError, match="answer_column"):
        structure_reports(reports, tmp_path / "m.parquet", {"backend": "import", "precomputed": str(answers)})


def test_answers_from_several_files_and_only_the_cohort_patients(tmp_path, caplog):
    """Issue 17: the authors' answers come as two workbooks (reports.precomputed is a list, the first file wins for
    a patient answered twice), and a corpus of every TCGA project is cut to the cohort's patients."""
    src = write_csv(
        tmp_path / "reports.csv",
        [
            {"patient_id": "P1", "text": REPORT_A},
            {"patient_id": "P2", "text": REPORT_B},
            {"patient_id": "OTHER", "text": REPORT_B},
        ],
    )
    a = write_csv(tmp_path / "a.csv", [{"patient_id": "P1", "answer": "Poorly differentiated; a; b; c; d; e"}])
    b = write_csv(
        tmp_path / "b.csv",
        [
            {"patient_id": "P1", "answer": "Well differentiated; a; b; c; d; e"},
            {"patient_id": "P2", "answer": "Moderately differentiated; a; b; c; d; e"},
        ],
    )
    cfg = {"backend": "import", "precomputed": [str(a), str(b)]}
    with caplog.at_level(logging.INFO, logger="fiveflow.reports"):
        df = structure_reports(src, tmp_path / "l.parquet", cfg, patients={"P1", "P2", "P7"})
    check_contract(df)
    assert df["patient_id"].tolist() == ["P1", "P2"]
    assert df["differentiation"].tolist() == ["poor", "moderate"]
    assert "2 of 3 patient(s) are in the cohort" in caplog.text and "answered in more than one file" in caplog.text
    meta = pq.read_schema(tmp_path / "l.parquet").metadata
    assert b"a.csv, b.csv" in meta[b"fiveflow.reports"]
    again = structure_reports(src, tmp_path / "l2.parquet", {"backend": "import", "precomputed": [str(b), str(a)]})
    assert again["prompt_sha256"].iloc[0] != df["prompt_sha256"].iloc[0]  # the files, in order, identify the answers
    with pytest.raises(ValueError, match=r"none of its 3 patient id\(s\) is a patient of the cohort"):
        structure_reports(src, tmp_path / "l3.parquet", {"backend": "offline"}, patients={"X1"})


def test_reports_are_read_from_a_zip_archive(tmp_path):
    """TCGA-Reports ships as TCGA_Reports.csv.zip: read from its one CSV member, never unpacked to disk."""
    import zipfile

    csv_text = 'patient_filename,text\nTCGA-05-4244.3a84,"' + REPORT_A.replace('"', '""') + '"\n'
    with zipfile.ZipFile(tmp_path / "TCGA_Reports.csv.zip", "w") as zf:
        zf.writestr("TCGA_Reports.csv", csv_text)
    df = structure_reports(tmp_path / "TCGA_Reports.csv.zip", tmp_path / "l.parquet", {"backend": "offline"})
    assert df["patient_id"].tolist() == ["TCGA-05-4244"] and df["status"].eq("ok").all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["TCGA_Reports.csv.zip", "l.parquet"]
