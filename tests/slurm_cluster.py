"""A real one-node SLURM cluster on this machine, for tests (Debian ``slurm-wlm`` + ``munge``, run as root).

``SlurmCluster(workdir).start()`` writes ``/etc/slurm/slurm.conf`` (srun inside jobs reads only the
default path; a pre-existing file is backed up and restored by ``stop()``) for one node sized from
this machine, starts munged (as user munge, unless one already answers), slurmctld and slurmd in the
foreground as child processes, and waits until ``sinfo`` shows the node idle. ``stop()`` cancels
any jobs, stops the daemons it started and restores the configuration; it is safe to call twice
and is also registered with ``atexit``. State, spool, pid and log files live under ``workdir``.
The cluster of a test run that was killed hard (the configuration still carries this module's
header) is stopped and its backed-up configuration restored before a new one starts.

What works here (see ../shared/docs/ENVIRONMENT.md, "Snakemake"): NodeAddr=127.0.0.1,
select/cons_tres, proctrack/linuxproc, task/none, no accounting and MinJobAge=600, so that
``squeue`` still knows finished jobs (Snakemake then polls with ``--slurm-status-command squeue``).
A file lock (``/run/fiveflow-slurm.lock``) keeps two test sessions on one machine from fighting
over /etc/slurm/slurm.conf and the daemon ports.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

CONF = Path("/etc/slurm/slurm.conf")
LOCK = Path("/run/fiveflow-slurm.lock")
PARTITION = "debug"
HEADER = "# written by tests/slurm_cluster.py for a one-node test cluster; restored on stop"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")


class ClusterError(RuntimeError):
    pass


def missing_requirements() -> list[str]:
    """Why a local cluster cannot be started here (empty when it can)."""
    why = [
        f"{b} not found (Debian packages slurm-wlm and munge; tools/system-deps.sh installs them)"
        for b in DAEMONS
        if not shutil.which(b) and not Path("/usr/sbin", b).exists()
    ]
    if os.geteuid() != 0:
        why.append("not root (slurmd and munged must be started as root)")
    if not Path("/etc/munge/munge.key").exists():
        why.append("/etc/munge/munge.key is missing (reinstall the munge package)")
    return why


def node_size(headroom_mb: int = 1024) -> tuple[int, int]:
    """(CPUs, RealMemory in MB) of this machine, keeping ``headroom_mb`` for the OS and the daemons."""
    cpus = os.cpu_count() or 1
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            total_mb = int(line.split()[1]) // 1024
            break
    else:  # pragma: no cover - every Linux has MemTotal
        raise ClusterError("no MemTotal in /proc/meminfo")
    return cpus, max(total_mb - headroom_mb, 256)


def slurm_conf(work: Path, node: str, cpus: int, mem_mb: int, partition: str = PARTITION) -> str:
    return "\n".join(
        [
            HEADER,
            "ClusterName=fiveflow-test",
            f"SlurmctldHost={node}(127.0.0.1)",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "MinJobAge=600",
            "ReturnToService=2",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            f"StateSaveLocation={work / 'state'}",
            f"SlurmdSpoolDir={work / 'spool'}",
            f"SlurmctldPidFile={work / 'slurmctld.pid'}",
            f"SlurmdPidFile={work / 'slurmd.pid'}",
            f"SlurmctldLogFile={work / 'slurmctld.log'}",
            f"SlurmdLogFile={work / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
            f"PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _stale_conf() -> dict[str, str] | None:
    """The settings of a configuration this module wrote and a killed run left behind (else None)."""
    text = CONF.read_text(errors="replace") if CONF.exists() else ""
    if not text.startswith(HEADER):
        return None
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and " " not in line)


def _backup_of(conf: dict[str, str]) -> Path | None:
    """The original configuration the run that wrote ``conf`` backed up (None: there was none)."""
    backup = Path(conf.get("StateSaveLocation", "/nonexistent")).parent / "slurm.conf.orig"
    return backup if backup.exists() else None


def original_conf() -> bytes | None:
    """What /etc/slurm/slurm.conf holds once every test cluster, live or left by a killed run, is stopped."""
    conf = _stale_conf()
    if conf is None:
        return CONF.read_bytes() if CONF.exists() else None
    backup = _backup_of(conf)
    return backup.read_bytes() if backup is not None else None


class SlurmCluster:
    def __init__(self, work: Path, partition: str = PARTITION, ready_timeout: float = 60, lock_timeout: float = 900):
        self.work = Path(work)
        self.lock_timeout = lock_timeout
        self.partition = partition
        self.ready_timeout = ready_timeout
        self.node = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self._backup: Path | None = None
        self._conf_written = False
        self._lock = None

    # --- start ------------------------------------------------------------------------------------
    def start(self) -> SlurmCluster:
        why = missing_requirements()
        if why:
            raise ClusterError("cannot start a local SLURM cluster: " + "; ".join(why))
        self._lock = open(LOCK, "w")
        deadline = time.monotonic() + self.lock_timeout
        while True:  # another test session on this machine holds the cluster: wait for it
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._lock.close()
                    self._lock = None
                    raise ClusterError(
                        f"{LOCK} is still held after {self.lock_timeout:.0f} s by another test session's SLURM cluster"
                    ) from None
                time.sleep(1)
        atexit.register(self.stop)
        try:
            self._clean_stale()
            if subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True).returncode == 0:
                raise ClusterError(
                    "a slurmctld is already running on this machine; stop it first "
                    "(this test starts its own one-node cluster)"
                )
            for d in ("state", "spool"):
                (self.work / d).mkdir(parents=True, exist_ok=True)
            self._write_conf()
            self._start_munge()
            self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(CONF)])
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(CONF)])
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def _clean_stale(self) -> None:
        """A test run killed hard (SIGKILL) left its cluster behind: stop its daemons, take its backup."""
        conf = _stale_conf()
        if conf is None:
            return
        old_work = Path(conf.get("StateSaveLocation", "/nonexistent")).parent
        for pidfile in (conf.get("SlurmdPidFile"), conf.get("SlurmctldPidFile"), old_work / "munged.pid"):
            try:
                pid = int(Path(pidfile).read_text().split()[0])
                if Path(f"/proc/{pid}/comm").read_text().strip() in ("slurmd", "slurmctld", "munged"):
                    os.kill(pid, 15)
                    for _ in range(100):
                        if not Path(f"/proc/{pid}").exists():
                            break
                        time.sleep(0.1)
            except (TypeError, OSError, ValueError, IndexError):
                pass
        old_backup = _backup_of(conf)
        if old_backup is not None:
            shutil.copy2(old_backup, CONF)
        else:
            CONF.unlink()

    def _write_conf(self) -> None:
        if CONF.exists():
            self._backup = self.work / "slurm.conf.orig"
            shutil.copy2(CONF, self._backup)
        CONF.parent.mkdir(parents=True, exist_ok=True)
        cpus, mem = node_size()
        tmp = CONF.with_name(CONF.name + ".fiveflow-tmp")
        tmp.write_text(slurm_conf(self.work, self.node, cpus, mem, self.partition))
        os.replace(tmp, CONF)
        self._conf_written = True

    def _munge_ok(self) -> bool:
        try:
            cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
            return (
                cred.returncode == 0
                and subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10).returncode == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _start_munge(self) -> None:
        if self._munge_ok():
            return  # a munged is already running (system service): use it, leave it alone
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        self._spawn("munged", ["munged", "-F", "--force"], user="munge", group="munge")
        (self.work / "munged.pid").write_text(f"{self.procs['munged'].pid}\n")  # for _clean_stale
        deadline = time.monotonic() + 15
        while not self._munge_ok():
            if time.monotonic() > deadline or self.procs["munged"].poll() is not None:
                raise ClusterError("munged did not start:\n" + self.logs())
            time.sleep(0.2)

    def _spawn(self, name: str, cmd: list[str], **kw) -> None:
        out = open(self.work / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kw
        )
        out.close()

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        state = ""
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise ClusterError(f"{name} exited with code {p.returncode} during start-up:\n" + self.logs())
            r = subprocess.run(["sinfo", "-h", "-N", "-n", self.node, "-o", "%T"], capture_output=True, text=True)
            state = r.stdout.strip()
            if r.returncode == 0 and state == "idle":
                return
            time.sleep(0.5)
        raise ClusterError(
            f"node {self.node} not idle within {self.ready_timeout:.0f} s "
            f"(sinfo state: {state or 'none'}):\n" + self.logs()
        )

    # --- inspection -------------------------------------------------------------------------------
    def logs(self, tail: int = 40) -> str:
        parts = []
        for f in sorted(self.work.glob("*.log")) + sorted(self.work.glob("*.out")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {f} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(parts) or "(no daemon logs)"

    def controller_log(self) -> str:
        f = self.work / "slurmctld.log"
        return f.read_text(errors="replace") if f.exists() else ""

    # --- stop -------------------------------------------------------------------------------------
    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "-p", self.partition], capture_output=True, timeout=30)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                q = subprocess.run(
                    ["squeue", "-h", "-t", "PD,R,CG", "-o", "%i"], capture_output=True, text=True, timeout=30
                )
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None:
                continue
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, 9)
                    p.wait(timeout=10)
        if self._conf_written:
            if self._backup is not None:
                shutil.copy2(self._backup, CONF)
            else:
                CONF.unlink(missing_ok=True)
            self._conf_written = False
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None
