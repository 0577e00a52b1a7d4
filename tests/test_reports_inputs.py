"""read_report_inputs: tables (CSV/TSV/Parquet, TCGA names), folders of .txt/.pdf, bad reports kept as rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import shared_path
from fiveflow.reports.inputs import COLUMNS, patient_id_from_filename, read_report_inputs
from fiveflow.reports.structure import COLUMNS as LABEL_COLUMNS
from fiveflow.reports.structure import structure_reports

REPORT = "Adenocarcinoma, well differentiated. Lymphovascular invasion: present. Margins: negative."


def write_pdf(path: Path, lines: list[str] | None) -> Path:
    """A minimal one-page PDF; with ``lines`` a Helvetica text layer, without it only a drawn rectangle."""
    if lines:
        ops = ["BT", "/F1 12 Tf", "72 720 Td", "14 TL"]
        for ln in lines:
            ops.append("(" + ln.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*")
        ops.append("ET")
    else:
        ops = ["0.5 g", "72 600 200 100 re f"]
    stream = "\n".join(ops).encode("latin-1")
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def test_csv_tsv_parquet_with_default_and_named_columns(tmp_path):
    df = pd.DataFrame({"patient_id": ["P1", "P2"], "text": [REPORT, "Squamous cell carcinoma."]})
    df.to_csv(tmp_path / "r.csv", index=False)
    df.to_csv(tmp_path / "r.tsv", sep="\t", index=False)
    df.to_parquet(tmp_path / "r.parquet")
    for name in ("r.csv", "r.tsv", "r.parquet"):
        got = read_report_inputs(tmp_path / name)
        assert list(got.columns) == COLUMNS
        assert got["patient_id"].tolist() == ["P1", "P2"] and got["text"].tolist() == df["text"].tolist(), name
        assert got["status"].eq("ok").all()
    assert read_report_inputs(tmp_path / "r.csv")["source"].tolist() == ["r.csv:2", "r.csv:3"]
    other = pd.DataFrame({"case": ["C1"], "ocr_text": ["x"], "body": [REPORT]})
    other.to_csv(tmp_path / "o.csv", index=False)
    got = read_report_inputs(tmp_path / "o.csv", id_column="case", text_column="body")
    assert got[["patient_id", "text"]].values.tolist() == [["C1", REPORT]]
    got = read_report_inputs(tmp_path / "o.csv", id_column="case")  # ocr_text is the fallback text column
    assert got["text"].tolist() == ["x"]


def test_tcga_filenames_join_several_reports_and_keep_empty_rows(tmp_path):
    pd.DataFrame(
        {
            "patient_filename": ["TCGA-AA-0001.1111-aaaa", "TCGA-AA-0002.2222", "TCGA-AA-0001.3333", "TCGA-AA-0003.4"],
            "text": [REPORT, "   ", "Addendum.", ""],
        }
    ).to_csv(tmp_path / "tcga.csv", index=False)
    got = read_report_inputs(tmp_path / "tcga.csv")
    assert got["patient_id"].tolist() == ["TCGA-AA-0001", "TCGA-AA-0002", "TCGA-AA-0003"]
    assert got["text"].iloc[0] == REPORT + "\n\nAddendum."
    assert got["source"].iloc[0] == "tcga.csv:2; tcga.csv:4"
    assert got["status"].tolist() == ["ok", "empty", "empty"] and got["reason"].iloc[1] == "empty `text`"


def test_folder_of_txt_and_pdf_with_bad_files_recorded(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    (d / "TCGA-05-4244.3a84-uuid.txt").write_text(REPORT, encoding="utf-8")
    write_pdf(d / "TCGA-05-4244-01Z-00-DX1.pdf", ["Pathology report (page 1)", "Visceral pleural invasion: present."])
    write_pdf(d / "case 7.pdf", ["Squamous cell carcinoma, poorly differentiated."])
    write_pdf(d / "scan.pdf", None)  # no text layer
    (d / "blank.txt").write_text("  \n", encoding="utf-8")
    (d / "binary.txt").write_bytes(b"\x00\x01\x02garbage")
    (d / "latin.txt").write_bytes("Résection: carcinome".encode("cp1252"))
    (d / "undecodable.txt").write_bytes(b"\x81\x8d\x8f\x90\x9d")
    (d / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf")
    (d / "notes.md").write_text("ignored")
    got = read_report_inputs(d).set_index("patient_id")
    assert set(got.index) == {"TCGA-05-4244", "case_7", "scan", "blank", "binary", "latin", "undecodable", "broken"}
    tcga = got.loc["TCGA-05-4244"]
    assert tcga.status == "ok" and "Pleural invasion" not in tcga.text and "pleural invasion: present" in tcga.text
    assert tcga.text.startswith("Pathology report") and REPORT in tcga.text  # sorted file order: .pdf before .txt
    assert got.loc["case_7", "text"] == "Squamous cell carcinoma, poorly differentiated."
    assert got.loc["scan", "status"] == "no_text" and "OCR" in got.loc["scan", "reason"]
    assert got.loc["blank", "status"] == "empty"
    assert got.loc["binary", "status"] == "unreadable" and "binary" in got.loc["binary", "reason"]
    assert got.loc["latin", "status"] == "ok" and got.loc["latin", "text"] == "Résection: carcinome"
    assert got.loc["undecodable", "status"] == "unreadable" and "UTF-8" in got.loc["undecodable", "reason"]
    assert got.loc["broken", "status"] == "unreadable" and "PDF" in got.loc["broken", "reason"]
    # a single report file works too
    assert read_report_inputs(d / "case 7.pdf")["patient_id"].tolist() == ["case_7"]


def test_unusable_reports_are_recorded_in_the_labels(tmp_path):
    d = tmp_path / "reports"
    d.mkdir()
    (d / "P1.txt").write_text(REPORT)
    write_pdf(d / "P2.pdf", None)
    (d / "P3.txt").write_bytes(b"\x81\x8d\x8f\x90\x9d")
    (d / "P4.txt").write_text("")
    df = structure_reports(d, tmp_path / "labels.parquet", {"backend": "offline"})
    assert list(df.columns) == LABEL_COLUMNS and df["patient_id"].tolist() == ["P1", "P2", "P3", "P4"]
    assert df["status"].tolist() == ["ok", "no_text", "unreadable", "empty"]
    assert df["flag"].tolist() == ["", "no_text", "unreadable", "empty_report"]
    assert df.loc[0, "differentiation"] == "well" and df.loc[0, "vascular_invasion"] == "present"
    for i in (1, 2, 3):
        assert (df.loc[i, ["differentiation", "stas", "margins"]] == "unknown").all() and df.loc[i, "reason"]


def test_patient_id_from_filename():
    assert patient_id_from_filename("TCGA-05-4244.3a844132.txt") == "TCGA-05-4244"
    assert patient_id_from_filename("tcga-05-4244-01Z-00-DX1.pdf") == "TCGA-05-4244"
    assert patient_id_from_filename("TCGA-05-42445.txt") == "TCGA-05-42445"  # not a TCGA barcode prefix
    assert patient_id_from_filename("my report (1).txt") == "my_report_1_"


def test_bad_inputs_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv.*Fix"):
        read_report_inputs(tmp_path / "nope.csv")
    pd.DataFrame({"id": ["P1"], "text": ["x"]}).to_csv(tmp_path / "noid.csv", index=False)
    with pytest.raises(ValueError, match=r"noid\.csv.*patient_id.*found columns.*'id'.*--id-column"):
        read_report_inputs(tmp_path / "noid.csv")
    with pytest.raises(ValueError, match=r"noid\.csv.*'case'.*found columns"):
        read_report_inputs(tmp_path / "noid.csv", id_column="case")
    pd.DataFrame({"patient_id": ["P1"], "report": ["x"]}).to_csv(tmp_path / "notext.csv", index=False)
    with pytest.raises(ValueError, match=r"notext\.csv.*`text`.*found columns.*--text-column"):
        read_report_inputs(tmp_path / "notext.csv")
    assert read_report_inputs(tmp_path / "notext.csv", need_text=False)["status"].tolist() == ["ok"]
    (tmp_path / "r.xlsx").write_bytes(b"PK")  # truncated: not a readable workbook
    with pytest.raises(ValueError, match=r"r\.xlsx.*cannot be read as Excel.*Fix"):
        read_report_inputs(tmp_path / "r.xlsx")
    (tmp_path / "r.docx").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"r\.docx.*unsupported"):
        read_report_inputs(tmp_path / "r.docx")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet.*Parquet"):
        read_report_inputs(tmp_path / "bad.parquet")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv.*empty"):
        read_report_inputs(tmp_path / "empty.csv")
    d = tmp_path / "folder"
    d.mkdir()
    (d / "a.docx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"folder.*no \.txt or \.pdf.*\.docx"):
        read_report_inputs(d)


@pytest.mark.shared_data
def test_real_ocr_csv_via_text_column():
    got = read_report_inputs(shared_path("reports/tcga_lung_100_ocr.csv"), id_column="pdf_file_name_path")
    assert len(got) == 100 and got["text"].str.len().median() > 200
    assert got["status"].value_counts().to_dict() == {"ok": 83, "empty": 17}  # 17 OCR texts are blank


# ----------------------------------------------------------------------------- issue 16: hostile inputs

UNQUOTED = (
    "patient_id,text\nTCGA-AA-0001,Adenocarcinoma, grade 2, pleura free\n"
    "TCGA-AA-0002,Squamous cell carcinoma, grade 3, pleura invaded\n"
)


def test_unquoted_commas_in_a_reports_csv_are_an_error_not_an_index(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(UNQUOTED)  # pandas made the ids the index and the text fragments the ids
    with pytest.raises(ValueError, match=r"bad\.csv: line 2: 4 comma-separated field\(s\).*quote fields"):
        read_report_inputs(bad)
    bad.write_text("patient_id,text\nP1,fine,\n")  # a trailing comma
    with pytest.raises(ValueError, match=r"bad\.csv: line 2: 3 .*trailing comma"):
        read_report_inputs(bad)


def test_cli_reports_extract_of_a_ragged_csv_exits_2_and_writes_nothing(tmp_path, capsys):
    from fiveflow.cli import main

    bad, out = tmp_path / "bad.csv", tmp_path / "out" / "labels.parquet"
    bad.write_text(UNQUOTED)
    assert main(["reports", "extract", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv: line 2:" in err[0] and "quote" in err[0], err
    assert not out.exists() and not out.parent.exists()


def test_quoted_csv_with_commas_and_line_breaks_keeps_the_source_lines(tmp_path):
    (tmp_path / "q.csv").write_text('patient_id,text\n\nP1,"Adenocarcinoma, grade 2\nPleura free."\nP2,x\n')
    got = read_report_inputs(tmp_path / "q.csv")
    assert got["text"].tolist() == ["Adenocarcinoma, grade 2\nPleura free.", "x"]
    assert got["source"].tolist() == ["q.csv:3", "q.csv:5"]  # physical lines of the file


def test_report_patient_ids_follow_the_samples_id_policy(tmp_path):
    from fiveflow.samples import read_samples

    (tmp_path / "s1.svs").write_bytes(b"x")
    (tmp_path / "samples.csv").write_text("patient_id,label,path\nJosé 01,LUAD,s1.svs\n")
    sample_pid = read_samples(tmp_path / "samples.csv")["patient_id"].tolist()
    pd.DataFrame({"patient_id": ["José 01"], "text": [REPORT]}).to_csv(tmp_path / "r.csv", index=False)
    assert read_report_inputs(tmp_path / "r.csv")["patient_id"].tolist() == sample_pid == ["Jose_01"]
    d = tmp_path / "reports"
    d.mkdir()
    (d / "José 01.txt").write_text(REPORT)
    assert read_report_inputs(d)["patient_id"].tolist() == sample_pid
    labels = structure_reports(tmp_path / "r.csv", tmp_path / "labels.parquet", {"backend": "offline"})
    assert labels["patient_id"].tolist() == sample_pid and labels.loc[0, "differentiation"] == "well"


def test_report_ids_that_collide_once_cleaned_are_an_error(tmp_path):
    pd.DataFrame({"patient_id": ["A B", "A B", "A_B"], "text": ["x", "y", "z"]}).to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(
        ValueError,
        match=r"r\.csv: report patient ids 'A B' \(line 2\) and 'A_B' \(line 4\) "
        r"both become 'A_B'",
    ):
        read_report_inputs(tmp_path / "r.csv")
    d = tmp_path / "reports"
    d.mkdir()
    (d / "José.txt").write_text("x")
    (d / "Jose.txt").write_text("y")
    with pytest.raises(
        ValueError,
        match=r"reports: report patient ids 'Jose' \(Jose\.txt\) and 'José' "
        r"\(José\.txt\) both become 'Jose'",
    ):
        read_report_inputs(d)
    (d / "Jose.txt").unlink()
    (d / "TCGA-05-4244.a.txt").write_text("one")  # one patient, several reports: not a collision
    (d / "tcga-05-4244-01Z-00-DX1.txt").write_text("two")
    got = read_report_inputs(d).set_index("patient_id")
    assert got.loc["TCGA-05-4244", "text"] == "one\n\ntwo" and got.loc["Jose", "text"] == "x"


def test_precomputed_answers_match_reports_by_the_cleaned_id(tmp_path):
    pd.DataFrame({"patient_id": ["José 01", "P2"], "text": [REPORT, REPORT]}).to_csv(tmp_path / "r.csv", index=False)
    answers = tmp_path / "answers.csv"
    answers.write_text(
        "patient_id,answer\nJose\u0301 01,well differentiated;no STAS;absent;absent;absent;negative\n"
        "P2,poorly differentiated;STAS;present;present;present;positive\n"
    )
    df = structure_reports(
        tmp_path / "r.csv", tmp_path / "l.parquet", {"backend": "precomputed", "precomputed": str(answers)}
    )
    assert df["patient_id"].tolist() == ["Jose_01", "P2"] and df["flag"].tolist() == ["", ""]
    assert df["differentiation"].tolist() == ["well", "poor"]
    answers.write_text("patient_id,answer\nP2,well, no STAS\n")
    with pytest.raises(ValueError, match=r"answers\.csv: line 2: 3 comma"):
        structure_reports(
            tmp_path / "r.csv", tmp_path / "l2.parquet", {"backend": "precomputed", "precomputed": str(answers)}
        )
    assert not (tmp_path / "l2.parquet").exists()
