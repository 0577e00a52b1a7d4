"""The workflow on a real one-node SLURM cluster, through the project's SLURM profile.

``tests/slurm_cluster.py`` starts munge, slurmctld and slurmd on this machine (Debian
``slurm-wlm`` + ``munge``, as root; ``tools/system-deps.sh`` installs them). The tiny demo cohort
then runs to the feature bags of two slides and the structured reports with ``--executor slurm``
and ``profiles/slurm`` plus local overrides for this cluster (its partition, no account, no
accounting so ``squeue`` for the status, no GPUs, no conda), and the same targets run locally in
another folder: SLURM job ids must
appear in Snakemake's log, the per-job SLURM logs and the controller's log, and the outputs must
equal the local run's. Without the packages (or root) the cluster test skips locally and fails
in CI (``CI=true``). Every Snakemake call that submits runs under a hard timeout: without
accounting a misconfigured run would poll ``sacct`` forever.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import PROJECT_ROOT, workflow_cmd
from slurm_cluster import CONF, HEADER, ClusterError, SlurmCluster, missing_requirements
from test_workflow_e2e import tiny_config

pytestmark = pytest.mark.e2e

SLURM_PROFILE = PROJECT_ROOT / "profiles" / "slurm" / "config.yaml"
WORKSTATION_PROFILE = PROJECT_ROOT / "profiles" / "workstation" / "config.yaml"
GPU_RULES = ("embed", "pretrain", "pretrain_ablation", "zeroshot", "fewshot")
DRY_TARGETS = ("models/pretrain.pt", "splits/split.csv", "reports/labels.parquet")
N_SLIDES = 2  # slides taken to their feature bags on the cluster (of the tiny cohort's 8)
SUBMIT_TIMEOUT = 420  # seconds: a hard limit for the SLURM run (about 2.5 minutes here)


# --- the profiles (cheap) --------------------------------------------------------------------------
def test_profiles_have_the_documented_keys():
    slurm = yaml.safe_load(SLURM_PROFILE.read_text())
    assert slurm["executor"] == "slurm"
    assert slurm["software-deployment-method"] == "conda" and slurm["conda-prefix"]
    for key in ("jobs", "rerun-incomplete", "retries", "latency-wait", "slurm-logdir"):
        assert key in slurm, key
    defaults = slurm["default-resources"]
    for key in ("slurm_partition", "slurm_account", "mem_mb", "runtime"):
        assert key in defaults, key
    for rule in GPU_RULES:
        res = slurm["set-resources"][rule]
        assert res["gpu"] == 1 and res["slurm_partition"], (rule, res)
        assert "gres" not in res  # the plugin refuses gpu and gres together
    text = SLURM_PROFILE.read_text()
    assert "PLACEHOLDER" in text and "--slurm-no-account" in text

    ws = yaml.safe_load(WORKSTATION_PROFILE.read_text())
    assert ws["cores"] == "all" and "gpu=1" in ws["resources"]
    assert ws["software-deployment-method"] == "conda" and ws["conda-prefix"]
    assert "executor" not in ws


class _Resources(dict):
    __getattr__ = dict.__getitem__


def test_profile_gpu_resources_become_sbatch_gpus():
    """The plugin's own mapping: the profile's GPU rules ask sbatch for one GPU, the others for none."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.utils import set_gres_string

    slurm = yaml.safe_load(SLURM_PROFILE.read_text())
    for rule in GPU_RULES:
        res = _Resources(slurm["default-resources"], **slurm["set-resources"][rule])
        assert set_gres_string(SimpleNamespace(resources=res)).split() == ["--gpus=1"], rule
    cpu = _Resources(slurm["default-resources"], gpu=0)  # e.g. tile, or a GPU rule with device: cpu
    assert set_gres_string(SimpleNamespace(resources=cpu)) == ""


def _dry_run(work: Path, *args: str) -> subprocess.CompletedProcess:
    # env-modules instead of conda: no conda here, and no rule has an envmodules directive, so the
    # dry run checks everything else of the profile. Targets after a flag without a value (-n):
    # --configfile and --sdm take several values.
    return subprocess.run(workflow_cmd(work, *args, "--sdm", "env-modules", "-n",
                                       *[str(work / "results" / t) for t in DRY_TARGETS]),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("slurm_dry")
    (work / "config.yaml").write_text(yaml.safe_dump(tiny_config(work / "results")))
    return work


@pytest.mark.parametrize("profile", ["slurm", "workstation"])
def test_profile_parses_in_snakemake(tiny_work, profile):
    r = _dry_run(tiny_work, "--profile", str(PROJECT_ROOT / "profiles" / profile))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert re.search(r"^pretrain\s+1$", out, re.M), out[-3000:]


# --- the real cluster ------------------------------------------------------------------------------
def require_cluster_support() -> None:
    why = missing_requirements()
    if why:
        msg = "no local SLURM cluster: " + "; ".join(why)
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI=true requires it; run tools/system-deps.sh as root)")
        pytest.skip(msg)


def test_cluster_left_by_a_killed_run_is_cleaned_up(tmp_path):
    """A test session killed hard leaves its daemons and slurm.conf: the next start stops and restores them."""
    require_cluster_support()
    had_conf = CONF.read_bytes() if CONF.exists() else None
    code = (f"import sys, time; sys.path.insert(0, {str(Path(__file__).parent)!r}); from pathlib import Path; "
            f"from slurm_cluster import SlurmCluster; SlurmCluster(Path({str(tmp_path / 'killed')!r})).start(); "
            "print('up', flush=True); time.sleep(600)")
    (tmp_path / "killed").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
    finally:
        proc.kill()  # SIGKILL: no atexit, no teardown
        proc.wait(timeout=30)
    assert CONF.read_text().startswith(HEADER)
    assert subprocess.run(["pgrep", "-x", "slurmctld"]).returncode == 0
    c = SlurmCluster(tmp_path / "next")
    try:
        c.start()
        assert subprocess.run(["sbatch", "--wrap", "true", "-o", "/dev/null"], capture_output=True).returncode == 0
    finally:
        c.stop()
    assert subprocess.run(["pgrep", "-x", "slurmctld|slurmd"]).returncode == 1
    assert subprocess.run(["pgrep", "-f", "^munged -F --force"], capture_output=True).returncode == 1
    assert (CONF.read_bytes() if CONF.exists() else None) == had_conf


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_cluster_support()
    c = SlurmCluster(tmp_path_factory.mktemp("slurm_cluster"))
    try:
        c.start()
    except ClusterError as err:
        pytest.fail(str(err))
    yield c
    c.stop()


def overlay_profile(dest: Path, partition: str) -> Path:
    """profiles/slurm with the overrides this test cluster needs, written to ``dest/config.yaml``."""
    prof = yaml.safe_load(SLURM_PROFILE.read_text())
    prof.pop("software-deployment-method")  # no conda here: the rules run in .venv
    prof.pop("conda-prefix")
    prof["default-resources"]["slurm_partition"] = partition
    prof["default-resources"].pop("slurm_account")
    for res in prof["set-resources"].values():
        res["slurm_partition"] = partition
        res["gpu"] = 0  # no GPUs on this node (the test config also sets device: cpu)
    prof.update({
        "slurm-no-account": True,  # no accounting database
        "slurm-status-command": "squeue",  # sacct needs accounting; squeue knows jobs for MinJobAge
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,  # the per-job logs are evidence below
        "retries": 0,
        "latency-wait": 5,
    })
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dest


def cpu_config(results: Path) -> dict:
    cfg = tiny_config(results)
    cfg["embedding"]["device"] = "cpu"
    cfg["train"]["device"] = "cpu"
    return cfg


def cluster_targets(cfg: dict) -> list[str]:
    """Feature bags of the first slides and the structured reports: 8 jobs (cohort tables, per slide
    synthesis, tiling and embedding, reports). Each SLURM job starts Snakemake twice (batch script,
    then srun), 10-20 s on two cores, so the whole cohort to pre-training (29 jobs) would take 7 min."""
    from fiveflow.workflow import Cohort

    slides = Cohort.from_config(cfg, PROJECT_ROOT).slide_ids[:N_SLIDES]
    enc = cfg["embedding"]["encoder"]
    return [f"features/{enc}/{s}.h5" for s in slides] + ["reports/labels.parquet"]


def run_to_targets(work: Path, *args: str, timeout: int) -> str:
    work.mkdir(parents=True, exist_ok=True)
    cfg = cpu_config(work / "results")
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = ["timeout", "-k", "20", str(timeout),
           *workflow_cmd(work, *args, "--nocolor", *[str(work / "results" / t) for t in cluster_targets(cfg)])]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"exit {r.returncode} ({'timed out' if r.returncode == 124 else 'failed'}):\n{log[-6000:]}"
    return log


@pytest.fixture(scope="module")
def slurm_and_local(cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm_run")
    profile = overlay_profile(base / "profile", cluster.partition)
    try:
        slurm_log = run_to_targets(base / "slurm", "--profile", str(profile), "--executor", "slurm",
                                   timeout=SUBMIT_TIMEOUT)
    except AssertionError as err:
        raise AssertionError(f"{err}\n--- cluster logs\n{cluster.logs()}") from None
    local_log = run_to_targets(base / "local", "--cores", "2", timeout=600)
    return base / "slurm", base / "local", slurm_log, local_log, cluster.controller_log()


def test_jobs_went_through_sbatch(slurm_and_local):
    slurm_dir, _, log, _, ctld = slurm_and_local
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    assert len(submitted) == 3 * N_SLIDES + 2, log[-4000:]  # (demo_slide, tile, embed) per slide + tables, reports
    ids = set(submitted.values())
    # the controller accepted every one of them as a batch job ...
    accepted = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", ctld))
    assert ids <= accepted, (ids - accepted, ctld[-3000:])
    # ... and they completed on the node
    done = set(re.findall(r"_job_complete: JobId=(\d+) done", ctld))
    assert ids <= done, (ids - done, ctld[-3000:])
    # one SLURM log per job, named by its SLURM job id, from the jobstep executor inside the job
    logs = {p.stem: p for p in (slurm_dir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert ids <= set(logs), (ids - set(logs), sorted(logs))
    embed_log = next(p for p in logs.values() if "rule_embed" in p.parts).read_text(errors="replace")
    assert "--executor slurm-jobstep" in embed_log and "Finished jobid" in embed_log, embed_log[-3000:]


def test_slurm_outputs_equal_local(slurm_and_local):
    from fiveflow.embed.bags import read_bag

    slurm_dir, local_dir, _, _, _ = slurm_and_local
    s_res, l_res = slurm_dir / "results", local_dir / "results"
    bags = sorted(p.relative_to(s_res) for p in (s_res / "features").rglob("*.h5"))
    assert len(bags) == N_SLIDES and bags == sorted(p.relative_to(l_res) for p in (l_res / "features").rglob("*.h5"))
    for rel in bags:
        fs, cs, _ = read_bag(s_res / rel)
        fl, cl, _ = read_bag(l_res / rel)
        np.testing.assert_array_equal(fs, fl, err_msg=str(rel))
        np.testing.assert_array_equal(cs, cl, err_msg=str(rel))
        coords = Path("coords", rel.name).with_suffix(".parquet")
        pd.testing.assert_frame_equal(pd.read_parquet(s_res / coords), pd.read_parquet(l_res / coords))
    for rel in ("demo/samples.csv", "demo/reports.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(s_res / rel), pd.read_csv(l_res / rel))
    pd.testing.assert_frame_equal(pd.read_parquet(s_res / "reports/labels.parquet"),
                                  pd.read_parquet(l_res / "reports/labels.parquet"))
