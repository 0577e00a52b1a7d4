"""End-to-end: the real workflow on a samples-sheet cohort with bad slides, up to the split.

A corrupt file, a blank slide and a slide without mpp must not stop the run: each is recorded in
qc/tiling_summary.csv with its status and reason, left out of the split, and named at the end of
the run. Adding an `mpp` for one slide in the sheet re-tiles that slide only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import PROJECT_ROOT, run_workflow, tissue_image, write_pyramid_tiff

pytestmark = pytest.mark.e2e


def write_cohort(work: Path, nompp_override: str = "") -> None:
    slides = work / "slides"
    slides.mkdir(exist_ok=True)
    rows = []
    for i in range(6):
        label = ["LUAD", "LUSC"][i % 2]
        p = slides / f"good{i}.tif"
        if not p.exists():
            write_pyramid_tiff(p, tissue_image(1024, 768, seed=i), mpp=0.5)
        rows.append((f"P{i}", label, p.name, ""))
    if not (slides / "blank.tif").exists():
        write_pyramid_tiff(slides / "blank.tif", tissue_image(1024, 768, tissue_box=None), mpp=0.5)
        write_pyramid_tiff(slides / "nompp.tif", tissue_image(1024, 768, seed=9), mpp=None)
        (slides / "broken.svs").write_bytes(b"II*\x00" + b"\x00" * 400)
    rows += [
        ("P6", "LUAD", "blank.tif", ""),
        ("P7", "LUSC", "nompp.tif", nompp_override),
        ("P8", "LUAD", "broken.svs", ""),
    ]
    df = pd.DataFrame(rows, columns=["patient_id", "label", "path", "mpp"])
    df["path"] = "slides/" + df["path"]
    df.to_csv(work / "samples.csv", index=False)
    pd.DataFrame({"patient_id": [f"P{i}" for i in range(9)], "text": ["Adenocarcinoma."] * 9}).to_csv(
        work / "reports.csv", index=False
    )
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg["results_dir"] = str(work / "results")
    cfg["cohort"].update(source="samples", samples=str(work / "samples.csv"), reports=str(work / "reports.csv"))
    cfg["tiling"].update(patch_size=128, thumbnail_size=256)
    cfg["fewshot"].update(shots=[1], runs=1)
    cfg["split"]["test_fraction"] = 0.34
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))


def targets(work: Path) -> list[str]:
    return [str(work / "results" / "splits" / "split.csv"), str(work / "results" / "qc" / "montage.png")]


@pytest.fixture(scope="module")
def qc_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("slideqc")
    write_cohort(work)
    r = run_workflow(work, "--cores", "2", *targets(work))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return work, r


def test_bad_slides_are_recorded_and_excluded(qc_run):
    work, r = qc_run
    qc = pd.read_csv(work / "results" / "qc" / "tiling_summary.csv", keep_default_na=False).set_index("slide_id")
    assert qc.loc["broken", "status"] == "failed" and "broken.svs" in qc.loc["broken", "message"]
    assert qc.loc["nompp", "status"] == "failed" and "`mpp` column" in qc.loc["nompp", "message"]
    assert qc.loc["blank", "status"] == "no_tissue" and qc.loc["blank", "n_tiles"] == 0
    good = [f"good{i}" for i in range(6)]
    assert (qc.loc[good, "status"] == "ok").all() and (qc.loc[good, "n_tiles"] > 0).all()
    assert qc.index[:3].tolist() == ["broken", "nompp", "blank"]  # failures first
    split = pd.read_csv(work / "results" / "splits" / "split.csv")
    assert set(split["slide_id"]) == set(good)
    assert (work / "results" / "qc" / "tissue" / "good0.geojson").exists()
    notice = r.stdout + r.stderr
    assert "3 slide(s) excluded by the slide QC" in notice and "broken: failed" in notice


def test_mpp_in_the_sheet_retiles_only_that_slide(qc_run):
    work, _ = qc_run
    r = run_workflow(work, "-n", *targets(work))
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr
    write_cohort(work, nompp_override="0.5")
    r = run_workflow(work, "--cores", "2", *targets(work))
    assert r.returncode == 0, r.stderr[-4000:]
    tile_logs = (r.stdout + r.stderr).count("rule tile:")
    assert tile_logs == 1, r.stdout[-3000:]
    qc = pd.read_csv(work / "results" / "qc" / "tiling_summary.csv", keep_default_na=False).set_index("slide_id")
    assert qc.loc["nompp", "status"] == "ok" and qc.loc["nompp", "mpp_source"] == "override"
    assert "nompp" in set(pd.read_csv(work / "results" / "splits" / "split.csv")["slide_id"])
