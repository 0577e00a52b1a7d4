"""End-to-end: the paper's setting, features made by another tool (DSMIL CSVs, CLAM h5) and no slides.

With `embedding.precomputed` the workflow imports one bag per slide instead of tiling and embedding:
the slide files need not exist, the split uses every slide, and training reads the imported bags.
A slide without a feature file stops the run before any job starts, naming the slide and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import PROJECT_ROOT, run_workflow, shared_path
from fiveflow.embed.bags import COORDS_KIND, COORDS_LEVEL0_PX, COORDS_ROW_INDEX, bag_attrs, read_bag

pytestmark = pytest.mark.e2e


def write_cohort(work: Path, real_h5: Path) -> None:
    """Eight patients; DSMIL CSVs in class folders (as compute_feats.py writes them) plus one real h5 bag."""
    rng = np.random.default_rng(0)
    feats = work / "dsmil" / "tcga-lung"
    rows = []
    for i in range(8):
        label = ["LUAD", "LUSC"][i % 2]
        sid = f"TCGA-{i:02d}"
        if i == 7:  # the real TCGA bag from shared data, in its own folder as features.h5
            sid = real_h5.parent.name
            (feats / sid).mkdir(parents=True)
            (feats / sid / "features.h5").symlink_to(real_h5)
        else:
            x = rng.normal(0.3 * (i % 2), 1.0, (40 + i, 512))
            (feats / label).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(x).to_csv(feats / label / f"{sid}.csv", index=False, float_format="%.4f")
        rows.append((f"P{i}", sid, label, f"slides/{sid}.svs"))  # slide files do not exist
    pd.DataFrame(rows, columns=["patient_id", "slide_id", "label", "path"]).to_csv(work / "samples.csv", index=False)
    grades = [
        "Well differentiated.",
        "Poorly differentiated. Visceral pleural invasion present.",
        "Moderately differentiated. Lymphovascular invasion identified.",
        "Margins positive.",
    ]
    pd.DataFrame(
        {"patient_id": [f"P{i}" for i in range(8)], "text": [f"Carcinoma. {grades[i % 4]}" for i in range(8)]}
    ).to_csv(work / "reports.csv", index=False)
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg["results_dir"] = str(work / "results")
    cfg["cohort"].update(source="samples", samples=str(work / "samples.csv"), reports=str(work / "reports.csv"))
    cfg["embedding"].update(encoder="dsmil-resnet18", precomputed=str(feats))
    cfg["fewshot"].update(shots=[1], runs=1)
    cfg["split"]["test_fraction"] = 0.5
    cfg["train"]["pretrain"].update(epochs=2)
    cfg["train"]["finetune"].update(epochs=2)
    cfg["baselines"] = ["meanpool"]
    cfg["ablations"] = []
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    real = shared_path("features/TCGA-AD-6964-01Z-00-DX1/features.h5")
    work = tmp_path_factory.mktemp("precomputed")
    write_cohort(work, real)
    r = run_workflow(work, "--cores", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return work, real, r


def test_imported_bags_feed_the_whole_chain(run):
    work, real, r = run
    res = work / "results"
    bags = sorted((res / "features" / "dsmil-resnet18").glob("*.h5"))
    assert len(bags) == 8
    assert not (res / "coords").exists() and not (res / "qc").exists()  # nothing was tiled
    split = pd.read_csv(res / "splits" / "split.csv")
    assert len(split) == 8  # no slide QC to exclude anything
    table = pd.read_csv(res / "tables" / "fewshot.csv")
    assert {"FiVE", "meanpool"} <= set(table["method"])


def test_imported_bags_keep_features_and_say_what_coords_are(run):
    work, real, _ = run
    bags = work / "results" / "features" / "dsmil-resnet18"
    csv = pd.read_csv(work / "dsmil" / "tcga-lung" / "LUSC" / "TCGA-01.csv").to_numpy(np.float32)
    feats, coords, attrs = read_bag(bags / "TCGA-01.h5")
    np.testing.assert_array_equal(feats, csv)
    assert attrs[COORDS_KIND] == COORDS_ROW_INDEX and attrs["encoder"] == "dsmil-resnet18"
    import h5py

    with h5py.File(real) as fh:
        want, want_xy = fh["feats"][()], fh["coords"][()]
    feats, coords, _ = read_bag(bags / f"{real.parent.name}.h5")
    np.testing.assert_array_equal(feats, want)
    np.testing.assert_array_equal(coords, want_xy)
    assert bag_attrs(bags / f"{real.parent.name}.h5")[COORDS_KIND] == COORDS_LEVEL0_PX


def test_a_slide_without_features_stops_the_run_with_the_fix(run, tmp_path):
    work, real, _ = run
    sheet = pd.read_csv(work / "samples.csv")
    sheet.loc[len(sheet)] = ["P9", "TCGA-99", "LUAD", "slides/TCGA-99.svs"]
    sheet.to_csv(tmp_path / "samples.csv", index=False)
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["cohort"]["samples"] = str(tmp_path / "samples.csv")
    cfg["results_dir"] = str(tmp_path / "results")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run_workflow(tmp_path, "--cores", "1", "-n")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "TCGA-99" in out and "embedding.precomputed" in out and "Fix:" in out
