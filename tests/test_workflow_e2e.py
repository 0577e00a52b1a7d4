"""End-to-end: the real Snakemake workflow on a tiny demo cohort, killed midway and resumed.

One run of a few minutes covers: the whole chain from slide generation to tables and the HTML
report, a hard kill (SIGKILL of the whole process group) in the middle, a rerun through
tools/snakemake.sh that finishes without manual cleanup, and a final dry run with nothing to do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import PROJECT_ROOT, run_workflow, workflow_cmd

pytestmark = pytest.mark.e2e


def tiny_config(results: Path) -> dict:
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg["results_dir"] = str(results)
    cfg["cohort"]["demo"].update(n_slides=8, width=2048, height=1536, seed=1)
    cfg["tiling"].update(patch_size=128, thumbnail_size=256)
    cfg["embedding"].update(batch_size=32)
    cfg["fewshot"].update(shots=[1, 2], runs=2)
    cfg["split"]["test_fraction"] = 0.375
    cfg["train"]["pretrain"].update(epochs=3)
    cfg["train"]["finetune"].update(epochs=3)
    cfg["baselines"] = ["meanpool"]
    return cfg


def smk(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run_workflow(workdir, *args, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    results = work / "results"
    (work / "config.yaml").write_text(yaml.safe_dump(tiny_config(results)))
    # 1) start, and kill the whole process tree hard once the first feature bags exist
    cmd = workflow_cmd(work, "--cores", "2")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if list((results / "features").rglob("*.h5")):
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.5)
    proc.wait(timeout=60)
    first_log = proc.stdout.read().decode(errors="replace")
    assert killed, f"the first run ended before it could be killed:\n{first_log[-3000:]}"
    # 2) rerun: no manual cleanup (stale lock, incomplete jobs) and finish; one "GPU" as on a workstation
    r = smk(work, "--cores", "2", "--resources", "gpu=1", timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-6000:]
    return work, results, r


def max_concurrent(snakemake_log: str, rule: str) -> tuple[int, int]:
    """(most jobs of ``rule`` running at once, how many ran) from Snakemake's own log."""
    running, peak, total, pending = set(), 0, 0, False
    for line in snakemake_log.splitlines():
        line = line.strip()
        if line.startswith("rule ") or line.startswith("localrule "):
            pending = line.rstrip(":").split()[-1] == rule
        elif pending and line.startswith("jobid:"):
            running.add(line.split()[-1])
            total += 1
            peak = max(peak, len(running))
            pending = False
        elif line.startswith("Finished jobid:"):
            running.discard(line.split()[2])
    return peak, total


def test_one_gpu_runs_one_embedding_job_at_a_time(finished_run):
    """The embed rule declares gpu=1, so `--resources gpu=1` (the workstation profile) serialises it on 2 cores."""
    _, _, r = finished_run
    peak, total = max_concurrent(r.stdout + r.stderr, "embed")
    assert total >= 3 and peak == 1, (peak, total)
    profile = yaml.safe_load((PROJECT_ROOT / "profiles" / "workstation" / "config.yaml").read_text())
    assert "gpu=1" in profile["resources"]


def test_outputs_complete(finished_run):
    work, results, _ = finished_run
    table = pd.read_csv(results / "tables" / "fewshot.csv")
    for col in ["method", "shots", "n_runs", "acc_mean", "acc_std", "auc_mean", "auc_std", "f1_mean", "f1_std"]:
        assert col in table.columns
    assert set(table["method"]) >= {"FiVE", "meanpool"}
    assert set(table.loc[table["method"] == "FiVE", "shots"]) == {0, 1, 2}
    # the ablation without fine-grained pre-training (ablations: [class_texts]) has the same rows
    assert set(table.loc[table["method"] == "FiVE-classtexts", "shots"]) == {0, 1, 2}
    assert table["acc_mean"].between(0, 1).all()
    assert (results / "tables" / "fewshot.md").read_text().startswith("| Method")
    assert "tabular" in (results / "tables" / "fewshot.tex").read_text()
    assert len(list((results / "qc").glob("DEMO-*.png"))) == 8
    labels = pd.read_parquet(results / "reports" / "labels.parquet")
    assert {"patient_id", "differentiation", "margins", "description", "backend", "prompt_version"} <= set(
        labels.columns
    )
    split = pd.read_csv(results / "splits" / "split.csv")
    assert split.groupby("patient_id")["split"].nunique().max() == 1  # patient-level
    # attention of run 0 per test slide, and heatmaps at the largest shot count (one PNG per test slide)
    n_test = int((split["split"] == "test").sum())
    for method in ("FiVE", "FiVE-classtexts", "meanpool"):
        assert len(list((results / "attention" / f"{method}_2").glob("*.parquet"))) == n_test
        assert len(list((results / "heatmaps" / method).glob("*.png"))) == n_test
        assert (results / "heatmaps" / f"{method}.png").stat().st_size > 1000
    assert len(list((results / "attention" / "FiVE_0").glob("*.parquet"))) == n_test
    # no temp files left behind by the killed run
    assert not [p for p in results.rglob("*.tmp")]


def test_second_run_does_nothing(finished_run):
    work, _, _ = finished_run
    r = smk(work, "-n", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Nothing to be done" in r.stdout + r.stderr


def test_html_report(finished_run):
    work, results, _ = finished_run
    out = results / "report.html"
    r = smk(work, "--cores", "1", "--report", str(out), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    html = out.read_text(errors="replace")
    assert out.stat().st_size > 10_000 and "fewshot" in html
    # grouped by stage, every result captioned; headless Chromium shows the table and the plots
    from test_report_html import assert_report_renders, report_results  # report_results: tools/screenshot_report.py

    entries, categories = report_results(out)
    assert {"1. Slides", "2. Reports", "3. Results"} <= set(categories)  # the menu sorts them: pipeline order
    assert all(e["caption"].strip() and "{{" not in e["caption"] for e in entries.values())
    assert_report_renders(
        out, results / "report_screenshots", table="fewshot.html", plots=("fewshot.png", "roc.png", "confusion.png")
    )
