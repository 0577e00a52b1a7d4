"""``fiveflow doctor`` finds the tools of its own environment even when that environment is not on PATH
(run as ``/path/.venv/bin/fiveflow doctor`` from cron, a job script or another shell)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from fiveflow import doctor


def test_find_tool_looks_next_to_python_first(tmp_path, monkeypatch):
    venv_bin, other = tmp_path / "venv" / "bin", tmp_path / "other"
    for d in (venv_bin, other):
        d.mkdir(parents=True)
        exe = d / "snakemake"
        exe.write_text("#!/bin/sh\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(other))
    assert doctor.find_tool("snakemake") == (str(venv_bin / "snakemake"), "next to this Python")
    (venv_bin / "snakemake").unlink()
    assert doctor.find_tool("snakemake") == (str(other / "snakemake"), "on PATH")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert doctor.find_tool("snakemake") is None
    with pytest.raises(FileNotFoundError, match="tools/setup.sh"):
        doctor._tool("snakemake")


def test_doctor_without_the_venv_on_path():
    """With PATH=/usr/bin:/bin the snakemake check failed (`snakemake on PATH: not found`), so doctor exited 1."""
    if not (Path(sys.executable).parent / "snakemake").exists():
        pytest.skip("no snakemake next to this Python (not the project's .venv)")
    env = {**os.environ, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_ROOT / "src")}
    r = subprocess.run(
        [sys.executable, "-m", "fiveflow.cli", "doctor", "--config", str(PROJECT_ROOT / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=PROJECT_ROOT,
    )
    line = next(ln for ln in r.stdout.splitlines() if "snakemake" in ln)
    assert line.split()[0] == "ok" and "next to this Python" in line, r.stdout
    failed = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("FAIL")]
    assert r.returncode == (1 if failed else 0) and not any("snakemake" in ln for ln in failed), r.stdout
