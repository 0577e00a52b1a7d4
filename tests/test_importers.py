"""Importing DSMIL CSVs and CLAM/STAMP-style h5 files as feature bags, and exporting them back."""

import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import PROJECT_ROOT, shared_path
from fiveflow.embed.bags import (
    COORDS_KIND,
    COORDS_LEVEL0_PX,
    COORDS_ROW_INDEX,
    BagError,
    bag_attrs,
    is_complete,
    read_bag,
    write_bag,
)
from fiveflow.embed.importers import (
    export_clam_h5,
    export_dsmil_csv,
    import_dsmil_csv,
    import_folder,
    import_h5_bag,
    infer_slide_id,
)
from fiveflow.train.data import load_bag

REAL_BAG = "features/TCGA-AD-6964-01Z-00-DX1/features.h5"


def dsmil_csv(path, n=40, d=16, seed=0):
    """A per-slide CSV written exactly as DSMIL's compute_feats.py writes it (float32 features)."""
    feats = (np.random.default_rng(seed).standard_normal((n, d)) * 2).astype(np.float32)
    feats[0, 0] = -1e-6  # DSMIL writes this as -0.0000
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(list(feats)).to_csv(path, index=False, float_format="%.4f")
    return feats


def test_dsmil_csv_roundtrip_is_byte_identical(tmp_path):
    src = tmp_path / "datasets" / "lung" / "LUAD" / "slide-1.csv"
    feats = dsmil_csv(src)
    bag = import_dsmil_csv(src, tmp_path / "bags" / "slide-1.h5")
    got, coords, attrs = read_bag(bag)
    np.testing.assert_allclose(got, feats, atol=5e-5 + 1e-6)  # equal to 4 decimals
    np.testing.assert_array_equal(coords, np.stack([np.arange(40), np.zeros(40)], axis=1))
    assert attrs[COORDS_KIND] == COORDS_ROW_INDEX and attrs["source_format"] == "dsmil_csv"
    assert attrs["slide_id"] == "slide-1" and attrs["encoder"] == "dsmil-resnet18" and attrs["feature_dim"] == 16
    assert attrs["complete"] and len(attrs["source_sha256"]) == 64
    out = export_dsmil_csv(bag, tmp_path / "export" / "slide-1.csv")
    assert out.read_bytes() == src.read_bytes()


@pytest.mark.shared_data
def test_real_h5_bag_roundtrip(tmp_path):
    src = shared_path(REAL_BAG)
    bag = import_h5_bag(src, tmp_path / "bag.h5")
    attrs = bag_attrs(bag)
    assert attrs["slide_id"] == "TCGA-AD-6964-01Z-00-DX1" and attrs[COORDS_KIND] == COORDS_LEVEL0_PX
    out = export_clam_h5(bag, tmp_path / "export.h5", feature_name="feats")
    with h5py.File(src, "r") as a, h5py.File(out, "r") as b:
        assert set(b.keys()) == {"feats", "coords"}
        assert b["feats"].dtype == a["feats"].dtype and b["coords"].dtype == a["coords"].dtype
        np.testing.assert_array_equal(b["feats"][()], a["feats"][()])
        np.testing.assert_array_equal(b["coords"][()], a["coords"][()])
    feats, coords = load_bag(bag)  # the trainer reads it
    assert feats.shape == (777, 512) and coords.shape == (777, 2)


def test_clam_h5_keeps_coords_and_patch_attrs(tmp_path):
    feats = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
    coords = np.array([[0, 0], [256, 0], [512, 0], [0, 256], [256, 256]], dtype=np.int64)
    src = tmp_path / "h5_files" / "slide_a.h5"
    src.parent.mkdir()
    with h5py.File(src, "w") as fh:
        fh["features"] = feats[None]  # [1, N, D], as some tools write
        fh["coords"] = np.hstack([coords, np.ones((5, 1), np.int64)]).astype(np.float64)
        fh["coords"].attrs.update(patch_level=0, patch_size=256)
    bag = import_h5_bag(src, tmp_path / "bag.h5", encoder="uni")
    got, got_coords, attrs = read_bag(bag)
    np.testing.assert_array_equal(got, feats)
    np.testing.assert_array_equal(got_coords, coords)
    assert attrs["slide_id"] == "slide_a" and attrs["encoder"] == "uni"
    assert attrs["source_patch_level"] == 0 and attrs["source_patch_size"] == 256
    with h5py.File(export_clam_h5(bag, tmp_path / "clam.h5"), "r") as fh:
        assert fh["coords"].attrs["patch_size"] == 256 and fh["features"].shape == (5, 8)


def test_h5_without_coords_gets_row_index(tmp_path):
    src = tmp_path / "s.h5"
    with h5py.File(src, "w") as fh:
        fh["feats"] = np.ones((3, 4), np.float32)
    _, coords, attrs = read_bag(import_h5_bag(src, tmp_path / "bag.h5"))
    assert attrs[COORDS_KIND] == COORDS_ROW_INDEX and attrs["encoder"] == "unknown"
    np.testing.assert_array_equal(coords[:, 0], [0, 1, 2])


def test_slide_id_inference(tmp_path):
    assert infer_slide_id(tmp_path / "LUAD" / "TCGA-1.csv") == "TCGA-1"
    assert infer_slide_id(tmp_path / "TCGA 2" / "features.h5") == "TCGA_2"
    assert infer_slide_id(tmp_path / "TCGA-3" / "feats.h5") == "TCGA-3"


@pytest.mark.parametrize(
    "text, match",
    [
        ("a,b\n0.1,0.2\n", r"expected the header 0,1,\.\.\.,1"),
        ("0,1,label\n0.1,0.2,1\n", "found 0,1,label"),
        ("0,1\n", "no feature rows"),
        ("", "empty file"),
        ("0,1\n0.1,nan\n", "NaN/inf"),
        ("0,1\n0.1,inf\n", "NaN/inf"),
        ("0,1\n0.1,abc\n", "non-numeric"),
    ],
)
def test_bad_csv_is_a_clear_error(tmp_path, text, match):
    src = tmp_path / "bad.csv"
    src.write_text(text)
    with pytest.raises(BagError, match=match) as exc:
        import_dsmil_csv(src, tmp_path / "bag.h5")
    assert str(src) in str(exc.value) and "Fix:" in str(exc.value)
    assert not (tmp_path / "bag.h5").exists()


def _clam_h5(path, feats, **attrs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        fh["features"] = feats
        fh["coords"] = np.stack([np.arange(len(feats)) * 256, np.zeros(len(feats))], axis=1).astype(np.int64)
        fh.attrs.update(attrs)
    return path


@pytest.mark.parametrize("kind", ["clam", "fiveflow"])
def test_incomplete_source_h5_is_refused(tmp_path, kind):
    """A source bag whose writer was killed (``complete`` False) is not imported as if it were whole (issue 16)."""
    feats = np.ones((6, 4), np.float32)
    if kind == "clam":  # TRIDENT-style writers mark progress the same way
        src = _clam_h5(tmp_path / "h5_files" / "s1.h5", feats, complete=False)
    else:  # a fiveflow bag from another results folder, its attribute flipped as a killed writer leaves it
        src = write_bag(tmp_path / "other" / "s1.h5", feats, np.zeros((6, 2)), {"encoder": "uni"})
        with h5py.File(src, "a") as fh:
            fh.attrs["complete"] = False
    with pytest.raises(BagError, match="incomplete") as exc:
        import_h5_bag(src, tmp_path / "bags" / "s1.h5")
    msg = str(exc.value)
    assert str(src) in msg and "Fix: re-run the extraction that wrote it" in msg
    assert not (tmp_path / "bags" / "s1.h5").exists()
    with pytest.raises(BagError, match="incomplete"):  # the folder import too
        import_folder(src.parent, tmp_path / "bags")


def test_h5_with_nonfinite_rows_is_refused(tmp_path):
    feats = np.ones((6, 4), np.float32)
    feats[2, 1], feats[4, 0] = np.nan, -np.inf
    src = _clam_h5(tmp_path / "s1.h5", feats)
    with pytest.raises(BagError, match=r"2 row\(s\) with NaN/inf values \(first: row 2\)") as exc:
        import_h5_bag(src, tmp_path / "bags" / "s1.h5")
    assert str(src) in str(exc.value) and "Fix:" in str(exc.value)
    assert not (tmp_path / "bags" / "s1.h5").exists()


def test_folder_import_skips_dsmil_bag_lists_and_resumes(tmp_path):
    ds = tmp_path / "datasets" / "lung"
    dsmil_csv(ds / "LUAD" / "s1.csv", seed=1)
    dsmil_csv(ds / "LUSC" / "s2.csv", seed=2)
    for name in ("LUAD.csv", "LUSC.csv", "lung.csv"):  # DSMIL's bag lists next to the class folders
        pd.DataFrame({0: [str(ds / "LUAD" / "s1.csv")], "label": [0]}).to_csv(ds / name, index=False)
    out = tmp_path / "bags"
    first = import_folder(ds, out)
    assert list(first["slide_id"]) == ["s1", "s2"] and set(first["status"]) == {"imported"}
    assert list(first["n_tiles"]) == [40, 40] and list(first["feature_dim"]) == [16, 16]
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = import_folder(ds, out)
    assert set(again["status"]) == {"skipped"}
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    dsmil_csv(ds / "LUSC" / "s2.csv", seed=3)  # changed source: re-imported
    assert list(import_folder(ds, out)["status"]) == ["skipped", "imported"]
    for bag in out.iterdir():
        feats, coords = load_bag(bag)  # the trainer reads them
        assert feats.shape == (40, 16) and coords.shape == (40, 2) and is_complete(bag)


def test_duplicate_slide_ids_are_an_error(tmp_path):
    dsmil_csv(tmp_path / "src" / "A" / "s1.csv")
    write_bag(tmp_path / "src" / "B" / "s1.h5", np.ones((2, 3)), np.zeros((2, 2)))
    with pytest.raises(BagError, match="two files") as exc:
        import_folder(tmp_path / "src", tmp_path / "out")
    assert "A/s1.csv" in str(exc.value) and "B/s1.h5" in str(exc.value)
    assert not (tmp_path / "out").exists()


def _cli(*args):
    exe = PROJECT_ROOT / ".venv" / "bin" / "fiveflow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fiveflow.cli"]
    return subprocess.run(
        [*cmd, "import-bags", *map(str, args)], check=False, capture_output=True, text=True, timeout=120
    )


def test_cli_help(capsys):
    from fiveflow.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["import-bags", "--help"])
    assert exc.value.code == 0 and "usage: fiveflow import-bags" in capsys.readouterr().out


def test_cli_end_to_end(tmp_path):
    dsmil_csv(tmp_path / "src" / "A" / "s1.csv")
    dsmil_csv(tmp_path / "src" / "B" / "s2.csv")
    r = _cli(tmp_path / "src", "--out", tmp_path / "bags", "--encoder", "simclr-r18")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("s1\timported\t40 tiles\t16 dims") and lines[1].startswith("s2\timported")
    assert lines[-1].startswith("2 slides") and "2 imported" in lines[-1]
    assert bag_attrs(tmp_path / "bags" / "s1.h5")["encoder"] == "simclr-r18"
    r = _cli(tmp_path / "src", "--out", tmp_path / "bags", "--encoder", "simclr-r18")
    assert r.returncode == 0 and "0 imported, 2 already up to date" in r.stdout
    (tmp_path / "src" / "A" / "bad.csv").write_text("0,1,label\n0.1,0.2,1\n")
    r = _cli(tmp_path / "src", "--out", tmp_path / "bags")
    assert r.returncode == 2 and "bad.csv" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli(tmp_path / "missing", "--out", tmp_path / "bags")
    assert r.returncode == 2 and "no such file or folder" in r.stderr


def test_dsmil_csv_with_more_fields_than_header_names_is_refused(tmp_path):
    """pandas took the first field of every row for an index: one feature silently dropped (issue 16)."""
    src = tmp_path / "slide-1.csv"
    src.write_text("0,1\n1.0,2.0,3.0\n4.0,5.0,6.0\n")
    with pytest.raises(BagError, match=r"slide-1\.csv: the rows have 3 fields but the header names 2"):
        import_dsmil_csv(src, tmp_path / "bag.h5")
    assert not (tmp_path / "bag.h5").exists()


@pytest.mark.parametrize("defect", ["incomplete", "nan"])
@pytest.mark.parametrize("export", ["dsmil", "clam"])
def test_export_refuses_a_bag_it_would_pass_on_broken(tmp_path, defect, export):
    """Exporting to DSMIL/CLAM reads the bag as training does: a half-written bag (``complete`` False) or one
    with NaN features fails naming the file and the fix, and writes nothing (issue 16)."""
    feats = np.ones((6, 4), np.float32)
    if defect == "nan":
        feats[3, 1] = np.nan
    src = _clam_h5(tmp_path / "s1.h5", feats, **({"complete": False} if defect == "incomplete" else {}))
    out = tmp_path / "out" / ("s1.csv" if export == "dsmil" else "s1.h5")
    out.parent.mkdir()
    fn = export_dsmil_csv if export == "dsmil" else export_clam_h5
    with pytest.raises(BagError, match=("incomplete" if defect == "incomplete" else "NaN") + ".*Fix"):
        fn(src, out)
    assert list(out.parent.iterdir()) == []
    ok = _clam_h5(tmp_path / "s2.h5", np.ones((6, 4), np.float32))
    assert fn(ok, out).exists()
