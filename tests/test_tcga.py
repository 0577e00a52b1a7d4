"""TCGA-lung from GDC manifests (issue 8): the cohort table, config/tcga_lung.yaml, the full DAG."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import PROJECT_ROOT, job_stats, shared_path
from fiveflow.cohort.gdc import gdc_table, patient_of

HEADER = "id\tfilename\tmd5\tsize\tstate\n"


def _uid(name: str) -> str:
    """A GDC-style file id (a UUID; manifests must hold UUIDs) standing for ``name``."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def _manifest(path: Path, rows) -> Path:
    path.write_text(HEADER + "".join(f"{_uid(i)}\t{f}\t{m * 32}\t{s}\treleased\n" for i, f, m, s in rows))
    return path


def test_releases_merge_on_file_name_and_the_last_wins(tmp_path):
    old = _manifest(
        tmp_path / "old.txt",
        [("id1", "TCGA-AA-0001-01Z-00-DX1.u1.svs", "a", 10), ("id2", "TCGA-AA-0002-01Z-00-DX1.u2.svs", "b", 20)],
    )
    new = _manifest(
        tmp_path / "new.txt",
        [
            ("id9", "TCGA-AA-0001-01Z-00-DX1.u1.svs", "c", 10),  # new id + md5
            ("id3", "TCGA-AA-0001-01Z-00-DX2.u3.svs", "d", 30),
        ],
    )
    sq = _manifest(tmp_path / "sq.txt", [("id4", "TCGA-BB-0004-01Z-00-DX1.u4.svs", "e", 40)])
    gdc = {"manifests": {"LUAD": [str(old), str(new)], "LUSC": str(sq)}, "slide_dir": "slides"}
    t = gdc_table(gdc, ["LUAD", "LUSC"], tmp_path)
    assert t["slide_id"].tolist() == [
        "TCGA-AA-0001-01Z-00-DX1",
        "TCGA-AA-0001-01Z-00-DX2",
        "TCGA-AA-0002-01Z-00-DX1",
        "TCGA-BB-0004-01Z-00-DX1",
    ]
    first = t.iloc[0]
    assert (first.file_id, first.md5, first.manifest) == (_uid("id9"), "c" * 32, str(new))  # the later release
    assert t["patient_id"].tolist() == ["TCGA-AA-0001", "TCGA-AA-0001", "TCGA-AA-0002", "TCGA-BB-0004"]
    assert t["label"].tolist() == ["LUAD", "LUAD", "LUAD", "LUSC"]
    assert t["path"].iloc[3] == str(tmp_path / "slides" / "TCGA-BB-0004-01Z-00-DX1.u4.svs")


def test_labels_table_overrides_and_conflicts_are_errors(tmp_path):
    a = _manifest(
        tmp_path / "a.txt",
        [("id1", "TCGA-AA-0001-01Z-00-DX1.u1.svs", "a", 10), ("id2", "TCGA-AA-0002-01Z-00-DX1.u2.svs", "b", 20)],
    )
    b = _manifest(tmp_path / "b.txt", [("id3", "TCGA-AA-0001-01Z-00-DX1.u1.svs", "a", 10)])
    with pytest.raises(
        ValueError, match=r"TCGA-AA-0001-01Z-00-DX1.u1.svs is listed under class LUAD .* and under LUSC"
    ):
        gdc_table({"manifests": {"LUAD": str(a), "LUSC": str(b)}, "slide_dir": "s"}, ["LUAD", "LUSC"], tmp_path)
    with pytest.raises(ValueError, match="not in `classes`"):
        gdc_table({"manifests": {"KIRC": str(a)}, "slide_dir": "s"}, ["LUAD", "LUSC"], tmp_path)
    lab = tmp_path / "clinical.csv"
    pd.DataFrame({"slide_file_name": ["TCGA-AA-0002-01Z-00-DX1.u2.svs"], "cancer_type": ["LUSC"]}).to_csv(
        lab, index=False
    )
    t = gdc_table({"manifests": {"LUAD": str(a)}, "labels": str(lab), "slide_dir": "s"}, ["LUAD", "LUSC"], tmp_path)
    assert t.set_index("slide_id")["label"].to_dict() == {
        "TCGA-AA-0001-01Z-00-DX1": "LUAD",
        "TCGA-AA-0002-01Z-00-DX1": "LUSC",
    }
    pd.DataFrame({"file": ["x"], "cancer_type": ["LUSC"]}).to_csv(lab, index=False)
    with pytest.raises(ValueError, match=r"clinical.csv: missing column\(s\) \['slide_file_name'\]"):
        gdc_table({"manifests": {"LUAD": str(a)}, "labels": str(lab), "slide_dir": "s"}, ["LUAD", "LUSC"], tmp_path)


def test_two_files_of_one_barcode_keep_their_full_names(tmp_path):
    a = _manifest(
        tmp_path / "a.txt",
        [("id1", "TCGA-AA-0001-01Z-00-DX1.u1.svs", "a", 10), ("id2", "TCGA-AA-0001-01Z-00-DX1.u2.svs", "b", 20)],
    )
    t = gdc_table({"manifests": {"LUAD": str(a)}, "slide_dir": "s"}, ["LUAD", "LUSC"], tmp_path)
    assert t["slide_id"].tolist() == ["TCGA-AA-0001-01Z-00-DX1.u1", "TCGA-AA-0001-01Z-00-DX1.u2"]
    assert set(t["patient_id"]) == {"TCGA-AA-0001"} and patient_of("slide-7") == "slide-7"


def test_dsmil_csvs_named_by_gdc_file_match_the_slide_barcodes(tmp_path):
    from fiveflow.cohort_index import precomputed_sources

    for name in ("TCGA-AA-0001-01Z-00-DX1.u1", "TCGA-AA-0002-01Z-00-DX1"):
        pd.DataFrame([[0.1, 0.2], [0.3, 0.4]]).to_csv(tmp_path / f"{name}.csv", index=False)
    got = precomputed_sources(tmp_path, ["TCGA-AA-0001-01Z-00-DX1", "TCGA-AA-0002-01Z-00-DX1"])
    assert Path(got["TCGA-AA-0001-01Z-00-DX1"]).name == "TCGA-AA-0001-01Z-00-DX1.u1.csv"
    with pytest.raises(ValueError, match="no features for 1 of 1"):
        precomputed_sources(tmp_path, ["TCGA-AA-0003-01Z-00-DX1"])


def _tcga_config() -> dict:
    shared_path("manifests/gdc_manifest.2023-10-03-TCGA-LUAD.txt")
    return yaml.safe_load((PROJECT_ROOT / "config" / "tcga_lung.yaml").read_text())


def test_real_manifests_give_the_tcga_lung_cohort():
    cfg = _tcga_config()
    t = gdc_table(cfg["cohort"]["gdc"], ["LUAD", "LUSC"], PROJECT_ROOT)
    assert len(t) == 1053 and t["slide_id"].is_unique  # 2020 and 2023 releases merged: 1,042 shared + 11 new
    assert t["label"].value_counts().to_dict() == {"LUAD": 541, "LUSC": 512}
    assert t["patient_id"].nunique() == 956 and t["patient_id"].str.fullmatch(r"TCGA-\w\w-\w{4}").all()
    new = pd.read_csv(shared_path("manifests/gdc_manifest.2023-10-03-TCGA-LUAD.txt"), sep="\t")
    row = t.set_index("filename").loc[new["filename"].iloc[0]]
    assert (row.file_id, row.md5) == (new["id"].iloc[0], new["md5"].iloc[0])  # the 2023 ids win
    # reports are keyed by the same patient barcodes
    rep = pd.read_csv(shared_path("reports/tcga_lung_reports_dev.csv"))
    assert rep["patient_id"].isin(t["patient_id"]).mean() > 0.85  # 0.897: some reported patients have no DX slide


def _fresh_clone(dest: Path) -> Path:
    """The repository's files as a clone has them (tracked, plus new files not ignored), without .venv or ../shared."""
    import shutil

    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = PROJECT_ROOT / rel
        if src.is_file():  # a tracked file deleted in the work tree is not copied
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_full_dag_from_a_fresh_clone_without_shared(tmp_path):
    """Issue 17: a clone with no ../shared beside it plans the whole TCGA-lung cohort (1,053 slides: download,
    tile, embed) and the downloads of the report corpus and the authors' answers, with no error (the time is
    measured by benchmarks/bench_dag.py, not asserted here)."""
    clone = _fresh_clone(tmp_path / "fiveflow")
    assert not (tmp_path / "shared").exists() and not (clone / ".venv").exists()
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}  # the clone's package, not the checkout's
    out = subprocess.run(
        [
            str(PROJECT_ROOT / ".venv" / "bin" / "python"),
            "-m",
            "snakemake",
            "-n",
            "--quiet",
            "rules",
            "--configfile",
            "config/tcga_lung.yaml",
            "--cores",
            "1",
        ],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    counts = job_stats(text)
    assert counts["gdc_download"] == counts["tile"] == 1053, counts
    # embedding.shard_size 32: 33 shard jobs (32 x 32 + 29 slides), one rule each, instead of 1,053 embed jobs
    shards = {k: v for k, v in counts.items() if k.startswith("embed_shard_")}
    assert "embed" not in counts and len(shards) == 33 and set(shards.values()) == {1}, counts
    assert counts["pretrain"] == 1 and counts["fewshot"] == 4 * 5 and counts["baseline"] == 5 * 5, counts
    assert counts["fetch_tcga_reports"] == counts["fetch_five_answers_luad"] == counts["fetch_five_answers_lusc"] == 1
    assert counts["reports"] == 1 and "shared/" not in text
    cfg = yaml.safe_load((clone / "config" / "tcga_lung.yaml").read_text())
    assert cfg["fewshot"]["shots"] == [1, 2, 4, 8, 16]


def test_the_product_never_names_the_shared_folder():
    """`git grep "shared/"` over what a user's clone has finds nothing (tests and benchmarks may use it)."""
    out = subprocess.run(
        [
            "git",
            "grep",
            "-n",
            "shared/",
            "--",
            "config",
            "workflow",
            "src",
            "README.md",
            "docs",
            "resources",
            "Snakefile",
            "envs",
            "profiles",
            "tools",
            "config.yaml",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and not out.stdout, out.stdout  # 1: no match


def test_shipped_tcga_inputs_match_their_checksums_and_origins():
    """resources/tcga_lung: every file is listed in SHA256SUMS and its README with that checksum, is byte-identical
    to the development copy, and the class table is rebuilt byte for byte from the two 2023 manifests."""
    import hashlib

    from fiveflow.cohort.gdc import class_table_from_manifests

    res = PROJECT_ROOT / "resources" / "tcga_lung"
    sums = dict(reversed(line.split("  ", 1)) for line in (res / "SHA256SUMS").read_text().splitlines())
    data = sorted(p.name for p in res.iterdir() if p.name not in ("SHA256SUMS", "README.md"))
    assert sorted(sums) == data and len(data) == 5
    readme = (res / "README.md").read_text()
    for name, digest in sums.items():
        body = (res / name).read_bytes()
        assert hashlib.sha256(body).hexdigest() == digest, name
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}`"))
        assert hashlib.md5(body).hexdigest() in row and f"{len(body):,}" in row, name
        assert "github.com/" in row and re.search(r"@[0-9a-f]{7}", row), name  # a pinned public origin
        assert body == shared_path(f"manifests/{name}").read_bytes(), name
    cfg = _tcga_config()
    listed = [f for fs in cfg["cohort"]["gdc"]["manifests"].values() for f in fs] + [cfg["cohort"]["gdc"]["labels"]]
    assert sorted(Path(f).name for f in listed) == data and all(f.startswith("resources/tcga_lung/") for f in listed)
    table = class_table_from_manifests({c: res / f"gdc_manifest.2023-10-03-TCGA-{c}.txt" for c in ("LUAD", "LUSC")})
    assert table == (res / "classes_extended_info.csv").read_text()


def test_cohort_level_files_are_never_taken_for_slides(tmp_path):
    """The slide wildcard is a generic id pattern (an alternation of 1,000+ ids was quadratic), so it must
    still refuse the cohort-level files next to the per-slide ones (qc/montage.png, qc/tiling_summary.csv)."""
    out = subprocess.run(
        ["bash", "tools/snakemake.sh", "-n", "--config", f"results_dir={tmp_path}/results"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "InputFunctionException" not in text and "slide=montage" not in text, text[-3000:]
    pattern = re.compile(r"(?!(?:montage|tiling_summary)(?:[.]|$))[A-Za-z0-9_-][A-Za-z0-9._-]*")
    common = (PROJECT_ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert pattern.pattern in common  # the constraint tested here is the workflow's
    for name in ("montage", "tiling_summary"):
        assert not pattern.fullmatch(name)
    for sid in ("TCGA-49-4506-01Z-00-DX3", "DEMO-0001-01Z-00-DX1", "slide_7.b", "montage2"):
        assert pattern.fullmatch(sid)


def _uuid(i: int) -> str:
    return f"{i:08x}-46f3-4e20-8154-970e749aa0ca"


def test_clinical_table_is_read_strictly(tmp_path):
    a = _manifest(tmp_path / "a.txt", [(_uuid(1), "TCGA-AA-0001-01Z-00-DX1.u1.svs", "a", 10)])
    lab = tmp_path / "clinical.csv"
    lab.write_text("slide_file_name,cancer_type,note\nTCGA-AA-0001-01Z-00-DX1.u1.svs,LUSC,big, central\n")
    with pytest.raises(ValueError, match=r"clinical\.csv: line 2: 4 comma-separated field\(s\).*quote fields"):
        gdc_table({"manifests": {"LUAD": str(a)}, "labels": str(lab), "slide_dir": "s"}, ["LUAD", "LUSC"], tmp_path)
    lab.write_text('slide_file_name,cancer_type,note\nTCGA-AA-0001-01Z-00-DX1.u1.svs,LUSC,"big, central"\n')
    t = gdc_table({"manifests": {"LUAD": str(a)}, "labels": str(lab), "slide_dir": "s"}, ["LUAD", "LUSC"], tmp_path)
    assert t["label"].tolist() == ["LUSC"]


def test_file_names_that_clean_to_one_slide_id_are_an_error(tmp_path):
    a = _manifest(tmp_path / "a.txt", [(_uuid(1), "slide 1.svs", "a", 10), (_uuid(2), "slide_1.svs", "b", 20)])
    with pytest.raises(
        ValueError,
        match=r"slide ids 'slide 1' \(.*a\.txt: slide 1\.svs\) and 'slide_1' "
        r"\(.*a\.txt: slide_1\.svs\) both become 'slide_1'",
    ):
        gdc_table({"manifests": {"LUAD": str(a)}, "slide_dir": "s"}, ["LUAD", "LUSC"], tmp_path)
    a = _manifest(tmp_path / "a.txt", [(_uuid(1), "x.svs", "a", 10), (_uuid(2), "x.tif", "b", 20)])
    with pytest.raises(ValueError, match=r"files \['x.svs', 'x.tif'\] would all be slide 'x'"):
        gdc_table({"manifests": {"LUAD": str(a)}, "slide_dir": "s"}, ["LUAD", "LUSC"], tmp_path)
