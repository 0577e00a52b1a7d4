import os

import pytest

from fiveflow.fileio import atomic_path, sanitize_id, slide_id_from_path
from fiveflow.samples import SamplesError, read_samples


def test_sanitize_blocks_traversal():
    assert sanitize_id("../../etc/passwd") == "_.._etc_passwd"
    assert "/" not in sanitize_id("a/b")
    with pytest.raises(ValueError):
        sanitize_id("..")
    with pytest.raises(ValueError):
        sanitize_id("...")
    assert slide_id_from_path("/x/TCGA-AA-1234-01Z-00-DX1.ABC.svs") == "TCGA-AA-1234-01Z-00-DX1.ABC"
    assert slide_id_from_path("a b.ome.tiff") == "a_b"


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_read_samples(tmp_path):
    (tmp_path / "s1.svs").write_bytes(b"x")
    (tmp_path / "s2.svs").write_bytes(b"x")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("patient_id\tlabel\tpath\nP1\tLUAD\ts1.svs\nP2\tLUSC\ts2.svs\n")
    df = read_samples(sheet, classes=["LUAD", "LUSC"])
    assert df["slide_id"].tolist() == ["s1", "s2"]
    assert df["path"].iloc[0] == str(tmp_path / "s1.svs")
    assert df["mpp"].tolist() == [None, None]


def test_samples_mpp_column_overrides_per_slide(tmp_path):
    for n in ("s1", "s2"):
        (tmp_path / f"{n}.svs").write_bytes(b"x")
    sheet = tmp_path / "samples.csv"
    sheet.write_text("patient_id,label,path,mpp\nP1,LUAD,s1.svs,0.25\nP2,LUSC,s2.svs,\n")
    assert read_samples(sheet)["mpp"].tolist() == [0.25, None]
    sheet.write_text("patient_id,label,path,mpp\nP1,LUAD,s1.svs,40x\n")
    with pytest.raises(SamplesError, match=r"line 2: mpp '40x'.*0.25 \(40x\)"):
        read_samples(sheet)


@pytest.mark.parametrize(
    "content, match",
    [
        ("patient_id,label\nP1,LUAD\n", "missing column"),
        ("patient_id,label,path\nP1,XYZ,s1.svs\n", "line 2: label 'XYZ'"),
        ("patient_id,label,path\nP1,LUAD,absent.svs\n", "not found"),
        ("slide_id,patient_id,label,path\na,P1,LUAD,s1.svs\na,P2,LUAD,s1.svs\n", "duplicate slide ids"),
    ],
)
def test_read_samples_errors(tmp_path, content, match):
    (tmp_path / "s1.svs").write_bytes(b"x")
    sheet = tmp_path / "samples.csv"
    sheet.write_text(content)
    with pytest.raises(SamplesError, match=match):
        read_samples(sheet, classes=["LUAD", "LUSC"])


def test_leftovers_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    import socket
    import subprocess
    import sys

    dest = tmp_path / "bag.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = tmp_path / f".bag.h5.{host}.{int(dead.stdout)}.abc.h5.tmp"
    live = tmp_path / f".bag.h5.{host}.{os.getpid()}.def.h5.tmp"  # a writer still running
    remote = tmp_path / f".bag.h5.other-node.{int(dead.stdout)}.ghi.h5.tmp"  # another host's: cannot tell
    for p in (stale, live, remote):
        p.write_bytes(b"partial")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"done")
    assert dest.read_bytes() == b"done"
    assert not stale.exists() and live.exists() and remote.exists()


# ----------------------------------------------------------------------------- issue 16: hostile inputs


@pytest.mark.parametrize(
    "content, match",
    [
        # a trailing comma on every row: pandas took the first column as the index (then a TypeError)
        ("patient_id,label,path\nP1,LUAD,s1.svs,\nP2,LUAD,s1.svs,\n", r"samples\.csv: line 2: 4 .*trailing comma"),
        # an unquoted comma in a cell shifted the columns
        ("slide_id,patient_id,label,path\na,Doe, J,LUAD,s1.svs\n", r"samples\.csv: line 2: 5 .*quote fields"),
    ],
)
def test_read_samples_rejects_ragged_rows_naming_the_line(tmp_path, content, match):
    (tmp_path / "s1.svs").write_bytes(b"x")
    sheet = tmp_path / "samples.csv"
    sheet.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_samples(sheet, classes=["LUAD", "LUSC"])


def test_read_samples_ids_fold_accents_and_refuse_collisions(tmp_path):
    for n in ("s1", "s2", "s3"):
        (tmp_path / f"{n}.svs").write_bytes(b"x")
    sheet = tmp_path / "samples.csv"
    sheet.write_text("patient_id,label,path\nJosé 01,LUAD,s1.svs\nJosé 01,LUAD,s2.svs\nP2,LUSC,s3.svs\n")
    df = read_samples(sheet)
    assert df["patient_id"].tolist() == ["Jose_01", "Jose_01", "P2"]  # several slides per patient are fine
    sheet.write_text("patient_id,label,path\nA B,LUAD,s1.svs\nA_B,LUSC,s2.svs\n")
    with pytest.raises(
        ValueError,
        match=r"samples\.csv: patient ids 'A B' \(line 2\) and 'A_B' \(line 3\) "
        r"both become 'A_B'",
    ):
        read_samples(sheet)
    sheet.write_text("slide_id,patient_id,label,path\nx y,P1,LUAD,s1.svs\nx_y,P2,LUSC,s2.svs\n")
    with pytest.raises(ValueError, match=r"slide ids 'x y' \(line 2\) and 'x_y' \(line 3\) both become 'x_y'"):
        read_samples(sheet)
    (tmp_path / "a b.svs").write_bytes(b"x")
    (tmp_path / "a_b.svs").write_bytes(b"x")
    sheet.write_text("patient_id,label,path\nP1,LUAD,a b.svs\nP2,LUSC,a_b.svs\n")  # slide ids from file names
    with pytest.raises(ValueError, match=r"slide ids 'a b' \(line 2\) and 'a_b' \(line 3\) both become 'a_b'"):
        read_samples(sheet)


def test_read_samples_line_numbers_count_blank_and_multiline_rows(tmp_path):
    for n in ("s1", "s2"):
        (tmp_path / f"{n}.svs").write_bytes(b"x")
    sheet = tmp_path / "samples.csv"
    sheet.write_text('patient_id,label,path,note\n\nP1,LUAD,s1.svs,"two\nlines"\nP2,XYZ,s2.svs,\n')
    with pytest.raises(SamplesError, match="line 5: label 'XYZ'"):
        read_samples(sheet, classes=["LUAD", "LUSC"])


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "0", "-0.25"])
def test_samples_mpp_column_refuses_non_finite_and_non_positive(tmp_path, value):
    sheet = tmp_path / "s.csv"
    sheet.write_text(f"patient_id,label,path,mpp\nP1,LUAD,s1.svs,{value}\n")
    with pytest.raises(SamplesError, match=rf"line 2: mpp '{value}' is not a scan resolution.*Fix: "):
        read_samples(sheet, check_files=False)
