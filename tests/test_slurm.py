"""The whole tiny demo workflow on a real one-node SLURM cluster, through the project's SLURM profile.

``tests/slurm_cluster.py`` starts munge, slurmctld and slurmd on this machine (Debian
``slurm-wlm`` + ``munge``, as root; ``tools/system-deps.sh`` installs them). The tiny demo cohort
(8 slides, the minimum) with the least work per stage (``small_config``: one 1-shot draw, one
epoch of pre-training and of fine-tuning, no ablations, the meanpool baseline only, no bootstrap,
CPU) then runs to ``rule all`` (tables, plots, heatmaps, labels, QC montage) with ``--executor
slurm`` and ``profiles/slurm`` plus local overrides for this cluster (its partition, no account,
no accounting so ``squeue`` for the status, no GPUs, no conda): 35 jobs, every one through
``sbatch`` (only ``all`` runs locally). The same configuration runs locally (``--cores 2``) in
another folder. Every Snakemake job must have a SLURM job id, and the ids must appear in the
per-job SLURM logs and the controller's log (submitted and completed); every output (bags, coords,
labels, splits, predictions, attention scores, tables, the checkpoint's state dict) must equal the
local run's exactly (training is deterministic on the CPU).

Time on two cores: about 250-270 s through SLURM, 100 s locally (6.5 min for the module). A job
costs 9-11 s on the node for 3-4 s of work (the batch script starts Snakemake, which starts it
again through ``srun``), the plugin sleeps 5 s before each ``sbatch`` (two submitting threads) and
Snakemake notices finished jobs only at its next status check. Of the settings the plugin offers,
only ``slurm-init-seconds-before-status-checks`` matters here: it is the interval after a round in
which a job finished (the plugin's default, 40 s, would add up to 40 s to each of the ~13 rounds:
estimated from its code, not measured); it grows by 10 s for each round without one. ``seconds-between-status-checks`` is replaced by the
plugin's own interval after the first round, ``latency-wait`` only counts when an output is
missing, and ``jobs`` (50) never limits 2 CPUs. 1 s and 2 s measured the same within the noise
(272 s and 249 s, one run each). Without the packages (or root) the cluster test skips locally and
fails in CI (``CI=true``). The SLURM run has a hard timeout (``SUBMIT_TIMEOUT``, about 2x the
measured time): without accounting a misconfigured run would poll forever; the cluster is stopped
when the run fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import PROJECT_ROOT, job_stats, workflow_cmd
from slurm_cluster import CONF, HEADER, ClusterError, SlurmCluster, missing_requirements, original_conf
from test_workflow_e2e import tiny_config

pytestmark = pytest.mark.e2e

SLURM_PROFILE = PROJECT_ROOT / "profiles" / "slurm" / "config.yaml"
WORKSTATION_PROFILE = PROJECT_ROOT / "profiles" / "workstation" / "config.yaml"
GPU_RULES = ("embed", "pretrain", "pretrain_ablation", "zeroshot", "fewshot")
DRY_TARGETS = ("models/pretrain.pt", "splits/split.csv", "reports/labels.parquet")
SUBMIT_TIMEOUT = 600  # seconds: a hard limit for the SLURM run (250-270 s measured here)
# Rules of the small configuration below; every job of them goes through sbatch (only `all` is local).
CLUSTER_RULES = {
    "demo_tables",
    "demo_slide",
    "tile",
    "embed",
    "reports",
    "qc_montage",
    "split",
    "pretrain",
    "fewshot",
    "baseline",
    "zeroshot",
    "evaluate",
    "heatmaps",
}
FINAL_OUTPUTS = (
    "tables/fewshot.csv",
    "tables/fewshot.md",
    "plots/fewshot.png",
    "plots/roc.png",
    "heatmaps/FiVE.png",
    "heatmaps/meanpool.png",
    "reports/labels.parquet",
    "qc/*.png",
)
# Status polling: a check 1 s after each round in which a job finished (the plugin's default is 40 s).
FAST_POLLING = {"slurm-init-seconds-before-status-checks": 1}


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
    return subprocess.run(
        workflow_cmd(work, *args, "--sdm", "env-modules", "-n", *[str(work / "results" / t) for t in DRY_TARGETS]),
        capture_output=True,
        text=True,
        timeout=300,
    )


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
    # The configuration from before any test cluster: a machine image taken while a test run had its
    # cluster up carries that run's slurm.conf, which the next start must also clean up (CI, stop 13).
    had_conf = original_conf()
    code = (
        f"import sys, time; sys.path.insert(0, {str(Path(__file__).parent)!r}); from pathlib import Path; "
        f"from slurm_cluster import SlurmCluster; SlurmCluster(Path({str(tmp_path / 'killed')!r})).start(); "
        "print('up', flush=True); time.sleep(600)"
    )
    (tmp_path / "killed").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
    finally:
        proc.kill()  # SIGKILL: no atexit, no teardown
        proc.wait(timeout=30)
    assert CONF.read_text().startswith(HEADER)
    assert subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0
    c = SlurmCluster(tmp_path / "next")
    try:
        c.start()
        assert subprocess.run(["sbatch", "--wrap", "true", "-o", "/dev/null"], capture_output=True).returncode == 0
    finally:
        c.stop()
    for daemon in ("slurmctld", "slurmd"):
        assert subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode == 1, daemon
    assert subprocess.run(["pgrep", "-f", "^munged -F --force"], capture_output=True).returncode == 1
    assert (CONF.read_bytes() if CONF.exists() else None) == had_conf


@pytest.mark.parametrize("backup", ["none", "original"])
def test_stale_conf_from_a_machine_image_is_replaced_by_its_backup(tmp_path, backup):
    """A slurm.conf of this module's, left by a run whose machine image was taken with its cluster up
    (its work folder and daemons gone, or its backup kept), is restored to the backup or removed."""
    require_cluster_support()
    saved = CONF.read_bytes() if CONF.exists() else None
    old = tmp_path / "old_run"
    (old / "state").mkdir(parents=True)
    original = b"# a site's own slurm.conf\nClusterName=site\n"
    if backup == "original":
        (old / "slurm.conf.orig").write_bytes(original)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    try:
        CONF.write_text(HEADER + f"\nStateSaveLocation={old / 'state'}\nSlurmdPidFile={old / 'slurmd.pid'}\n")
        assert original_conf() == (original if backup == "original" else None)
        c = SlurmCluster(tmp_path / "new")
        try:
            c.start()
            assert CONF.read_text().startswith(HEADER) and str(tmp_path / "new") in CONF.read_text()
        finally:
            c.stop()
        assert (CONF.read_bytes() if CONF.exists() else None) == (original if backup == "original" else None)
    finally:
        if saved is None:
            CONF.unlink(missing_ok=True)
        else:
            CONF.write_bytes(saved)


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
    prof.update(
        {
            "slurm-no-account": True,  # no accounting database
            "slurm-status-command": "squeue",  # sacct needs accounting; squeue knows jobs for MinJobAge
            "slurm-keep-successful-logs": True,  # the per-job logs are evidence below
            "retries": 0,
            **FAST_POLLING,
        }
    )
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dest


def small_config(results: Path) -> dict:
    """The tiny cohort (8 slides, the minimum) with the least work per stage, on the CPU."""
    cfg = tiny_config(results)
    cfg["embedding"]["device"] = "cpu"
    cfg["train"]["device"] = "cpu"
    cfg["fewshot"].update(shots=[1], runs=1)
    cfg["train"]["pretrain"]["epochs"] = 1
    cfg["train"]["finetune"]["epochs"] = 1
    cfg["ablations"] = []
    cfg["baselines"] = ["meanpool"]
    cfg["evaluate"]["n_boot"] = 0
    return cfg


def run_workflow_to_end(work: Path, *args: str, timeout: int) -> str:
    """The whole workflow (``rule all``) in ``work``; Snakemake's log."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(small_config(work / "results")))
    cmd = ["timeout", "-k", "20", str(timeout), *workflow_cmd(work, *args, "--nocolor")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60)
    log = r.stdout + r.stderr
    assert r.returncode == 0, (
        f"exit {r.returncode} ({'timed out' if r.returncode == 124 else 'failed'}):\n{log[-6000:]}"
    )
    return log


@pytest.fixture(scope="module")
def slurm_and_local(cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm_run")
    profile = overlay_profile(base / "profile", cluster.partition)
    start = time.monotonic()
    try:
        slurm_log = run_workflow_to_end(
            base / "slurm", "--profile", str(profile), "--executor", "slurm", timeout=SUBMIT_TIMEOUT
        )
    except AssertionError as err:
        raise AssertionError(f"{err}\n--- cluster logs\n{cluster.logs()}") from None
    middle = time.monotonic()
    local_log = run_workflow_to_end(base / "local", "--cores", "2", timeout=600)
    print(f"\nwhole tiny workflow: {middle - start:.0f} s through SLURM, {time.monotonic() - middle:.0f} s locally")
    return base / "slurm", base / "local", slurm_log, local_log, cluster.controller_log()


def test_jobs_went_through_sbatch(slurm_and_local):
    slurm_dir, _, log, _, ctld = slurm_and_local
    stats = job_stats(log)
    assert set(stats) == CLUSTER_RULES | {"all"}, set(stats) ^ (CLUSTER_RULES | {"all"})
    # (demo_slide, tile, embed) x 8 slides, heatmaps x 2 methods, the other 9 rules once: 35 sbatch jobs
    assert sum(stats.values()) - stats["all"] == 3 * 8 + 2 + 9, stats
    finished = dict(re.findall(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$", log, re.M))
    assert sorted(finished.values()) == sorted(r for r, n in stats.items() for _ in range(n)), finished
    assert set(re.findall(r"^localrule (\w+):", log, re.M)) == {"all"}  # nothing else ran outside SLURM
    submitted = {
        job: (slurm_id, Path(path))
        for job, slurm_id, path in re.findall(
            r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.$", log, re.M
        )
    }
    remote = {job for job, rule in finished.items() if rule != "all"}
    assert set(submitted) == remote, (remote ^ set(submitted), log[-4000:])
    for job, (slurm_id, path) in submitted.items():  # .snakemake/slurm_logs/rule_<rule>/[<wildcards>/]<id>.log
        assert path.stem == slurm_id and f"rule_{finished[job]}" in path.parts, (job, finished[job], path)
    ids = {slurm_id for slurm_id, _ in submitted.values()}
    assert len(ids) == len(remote)
    # the controller accepted every one of them as a batch job ...
    accepted = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", ctld))
    assert ids <= accepted, (ids - accepted, ctld[-3000:])
    # ... and they completed on the node
    done = set(re.findall(r"_job_complete: JobId=(\d+) done", ctld))
    assert ids <= done, (ids - done, ctld[-3000:])
    # one SLURM log per job, named by its SLURM job id, from the jobstep executor inside the job
    logs = {p.stem: p for p in (slurm_dir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert ids <= set(logs), (ids - set(logs), sorted(logs))
    for rule in ("embed", "pretrain", "evaluate"):
        text = next(p for p in logs.values() if f"rule_{rule}" in p.parts).read_text(errors="replace")
        assert "--executor slurm-jobstep" in text and "Finished jobid" in text, (rule, text[-3000:])


def result_files(results: Path) -> set[Path]:
    """Every output file under ``results`` but the per-job logs and benchmarks (they hold times and hosts)."""
    return {
        p.relative_to(results)
        for p in results.rglob("*")
        if p.is_file() and p.relative_to(results).parts[0] not in ("logs", "benchmarks")
    }


def read_table(work: Path, rel: Path) -> pd.DataFrame:
    """A CSV/Parquet output with the run's own folder in its paths (e.g. qc's slide_path) replaced by <work>."""
    df = (pd.read_parquet if rel.suffix == ".parquet" else pd.read_csv)(work / "results" / rel)
    for col in df.columns[df.dtypes == "object"]:
        df[col] = df[col].map(lambda v: v.replace(str(work), "<work>") if isinstance(v, str) else v)
    return df


def test_slurm_outputs_equal_local(slurm_and_local):
    import torch

    from fiveflow.embed.bags import read_bag

    slurm_dir, local_dir, _, _, _ = slurm_and_local
    s_res, l_res = slurm_dir / "results", local_dir / "results"
    files = result_files(s_res)
    assert files == result_files(l_res), files ^ result_files(l_res)
    for final in FINAL_OUTPUTS:  # rule all's targets are there
        assert any(f.match(final) for f in files), (final, sorted(map(str, files)))
    bags = sorted(f for f in files if f.parts[0] == "features")
    assert len(bags) == 8, bags
    for rel in bags:
        fs, cs, _ = read_bag(s_res / rel)
        fl, cl, _ = read_bag(l_res / rel)
        np.testing.assert_array_equal(fs, fl, err_msg=str(rel))
        np.testing.assert_array_equal(cs, cl, err_msg=str(rel))
    tables = sorted(
        f
        for f in files
        if f.suffix in (".csv", ".parquet")
        and f.parts[0] in ("attention", "coords", "demo", "qc", "reports", "splits", "predictions", "tables")
    )
    for rel in (
        "reports/labels.parquet",
        "splits/split.csv",
        "splits/fewshot_draws.csv",
        "tables/fewshot.csv",
        "predictions/FiVE_1.parquet",
        "predictions/meanpool_1.parquet",
    ):
        assert Path(rel) in tables, rel
    for rel in tables:
        pd.testing.assert_frame_equal(
            read_table(slurm_dir, rel), read_table(local_dir, rel), check_exact=True, obj=str(rel)
        )
    checkpoints = sorted(f for f in files if f.suffix == ".pt")
    assert Path("models/pretrain.pt") in checkpoints, checkpoints
    for rel in checkpoints:
        s = torch.load(s_res / rel, map_location="cpu", weights_only=False)["state_dict"]
        loc = torch.load(l_res / rel, map_location="cpu", weights_only=False)["state_dict"]
        assert s.keys() == loc.keys(), rel
        for k in s:
            assert torch.equal(s[k], loc[k]), (rel, k)
