"""tools/snakemake.sh and Snakemake's directory lock: a live run keeps its lock, however it was started;
a run killed hard leaves a stale lock that the next run through the script removes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, kill_group

WRAPPER = str(PROJECT_ROOT / "tools" / "snakemake.sh")
PYTHON = str(PROJECT_ROOT / ".venv" / "bin" / "python")
SNAKEFILE = """\
rule all:
    output: "done.txt"
    shell: "touch started; while [ ! -e go ]; do sleep 0.1; done; touch {output}"
"""

pytestmark = pytest.mark.skipif(
    not Path(PYTHON).exists() or sys.platform != "linux", reason="needs the project's .venv and Linux /proc"
)


@pytest.fixture
def work(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    return tmp_path


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:  # never leave a waiting Snakemake behind
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def locks(work: Path) -> list[str]:
    d = work / ".snakemake" / "locks"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def default_signals() -> None:
    """Start the script as a shell would from a terminal: INT and TERM at their defaults. A test run launched in
    the background (`cmd &`, nohup) inherits SIGINT ignored, and bash can neither trap nor restore a signal
    ignored when it starts, so the script could not forward Ctrl-C (CI runs started that way failed here)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def start(procs, cmd, work) -> subprocess.Popen:
    """Start ``cmd`` in ``work`` (output in ``p.log``) and wait until Snakemake has taken its lock."""
    log = work.parent / f"{work.name}-run{len(procs)}.log"
    with open(log, "wb") as out:
        p = subprocess.Popen(
            cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=default_signals
        )
    p.log = log
    procs.append(p)
    deadline = time.time() + 60
    while not locks(work):
        assert p.poll() is None, log.read_text(errors="replace")
        assert time.time() < deadline, "Snakemake took no lock within 60 s"
        time.sleep(0.1)
    return p


def wrapper(work: Path, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    cmd = [WRAPPER, "-s", str(work / "Snakefile"), "--directory", str(work), "--cores", "1", *args]
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, start_new_session=True
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the script, its Snakemake and the job: nothing keeps waiting
        p.communicate()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def test_a_live_run_started_as_python_m_snakemake_keeps_its_lock(work, procs):
    first = start(procs, [PYTHON, "-m", "snakemake", "--cores", "1"], work)
    held = locks(work)
    dry = wrapper(work, "-n")  # a dry run takes no lock of its own, but used to delete the live run's
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert locks(work) == held and "removing a stale" not in dry.stderr
    assert f"a Snakemake lock exists in {work}" in dry.stderr and "tools/snakemake.sh --unlock" in dry.stderr
    second = wrapper(work)  # the same target: Snakemake itself refuses to start
    assert second.returncode != 0 and "lock" in second.stderr.lower(), second.stderr[-2000:]
    assert locks(work) == held and first.poll() is None
    (work / "go").touch()
    assert first.wait(timeout=60) == 0 and (work / "done.txt").exists() and locks(work) == []


def test_a_run_killed_hard_leaves_a_lock_that_the_next_run_removes(work, procs):
    run = start(procs, [WRAPPER, "-s", str(work / "Snakefile"), "--cores", "1"], work)
    owner = work / ".snakemake" / "fiveflow-lock-owner"
    host = socket.gethostname()
    recorded = owner.read_text().split("\n")
    assert recorded[0].startswith(f"{host} {run.pid} ") and len(recorded) == 3  # the script, its Snakemake
    kill_group(run)
    assert locks(work)
    (work / "go").touch()
    again = wrapper(work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "removing a stale Snakemake lock left by an interrupted run" in again.stderr
    assert (work / "done.txt").exists() and locks(work) == [] and not owner.exists()


@pytest.mark.parametrize(
    "sig, says",
    [
        (signal.SIGINT, "Terminating processes on user request"),
        (signal.SIGTERM, "Will exit after finishing currently running jobs"),
    ],
)
def test_int_and_term_sent_to_the_script_reach_snakemake(work, procs, sig, says):
    run = start(procs, [WRAPPER, "-s", str(work / "Snakefile"), "--cores", "1"], work)
    deadline = time.time() + 30
    while not (work / "started").exists():  # the job runs, the scheduler waits (Snakemake 9's TERM handler can
        assert time.time() < deadline, run.log.read_text(errors="replace")  # deadlock when TERM comes earlier)
        time.sleep(0.1)
    os.kill(run.pid, sig)  # to the script only, as `kill` or a batch system would (a terminal signals both)
    deadline = time.time() + 30
    while says not in run.log.read_text(errors="replace"):
        assert time.time() < deadline and run.poll() is None, run.log.read_text(errors="replace")
        time.sleep(0.1)
    (work / "go").touch()  # Snakemake lets its running job finish (as without the script), then stops
    run.wait(timeout=60)
    assert locks(work) == [] and not (work / ".snakemake" / "fiveflow-lock-owner").exists()


def test_a_lock_not_made_through_the_script_stays_until_unlocked(work, procs):
    other = start(procs, [PYTHON, "-m", "snakemake", "--cores", "1"], work)
    kill_group(other)
    held = locks(work)
    refused = wrapper(work)
    assert refused.returncode != 0 and locks(work) == held
    assert "not made by a run of tools/snakemake.sh" in refused.stderr and "--unlock" in refused.stderr
    unlocked = wrapper(work, "--unlock")
    assert unlocked.returncode == 0 and locks(work) == [], unlocked.stderr[-2000:]
    assert "a Snakemake lock exists" not in unlocked.stderr
    (work / "go").touch()
    assert wrapper(work).returncode == 0 and (work / "done.txt").exists()


def test_the_owner_record_tells_a_reused_pid_from_a_live_run(work, procs):
    (work / ".snakemake" / "locks").mkdir(parents=True)
    owner = work / ".snakemake" / "fiveflow-lock-owner"
    live = subprocess.Popen(["sleep", "60"], start_new_session=True)
    procs.append(live)
    stat = Path(f"/proc/{live.pid}/stat").read_text()
    start_time = stat.rsplit(")", 1)[1].split()[19]
    host = socket.gethostname()
    for record, stale in [
        (f"{host} {live.pid} {start_time}", False),  # that very process: live
        (f"{host} {live.pid} {int(start_time) - 1}", True),  # same PID, another process
        (f"other-host.example {live.pid} 1", False),  # cannot be checked from here
    ]:
        (work / ".snakemake" / "locks" / "0.output.lock").write_text("x")
        owner.write_text(record + "\n")
        r = wrapper(work, "--version")
        assert r.returncode == 0, r.stderr
        assert ("removing a stale" in r.stderr) is stale and (locks(work) == []) is stale, (record, r.stderr)
