import os

import pytest

from fiveflow.io import atomic_path, sanitize_id, slide_id_from_path
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


@pytest.mark.parametrize("content, match", [
    ("patient_id,label\nP1,LUAD\n", "missing column"),
    ("patient_id,label,path\nP1,XYZ,s1.svs\n", "line 2: label 'XYZ'"),
    ("patient_id,label,path\nP1,LUAD,absent.svs\n", "not found"),
    ("slide_id,patient_id,label,path\na,P1,LUAD,s1.svs\na,P2,LUAD,s1.svs\n", "duplicate slide ids"),
])
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
