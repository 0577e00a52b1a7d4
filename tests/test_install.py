"""The package boundary: fiveflow installs (not editable) into a fresh virtual environment and runs from outside
the checkout, reading only what ships inside it (package data under ``fiveflow/data/``, found by
:func:`fiveflow.package_data.package_file`).

The fresh environment gets the heavy dependencies (torch, tiatoolbox, ...) from the project's .venv through one
plain path line in a ``.pth`` file: that puts .venv's site-packages on ``sys.path`` without running the ``.pth``
files inside it, so the editable install of the checkout (``__editable__.fiveflow-*.pth``) is not seen there
(the test checks that ``import fiveflow`` fails before the install). pip builds from a copy of the files git
would ship (tracked and new, not ignored), so the checkout gets no ``build/`` or ``*.egg-info`` from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

#: what the package reads by itself, by packaged name (fiveflow/data/<name>)
PACKAGED = ("config.schema.yaml", "questions/five-v1.yaml", "demo/report_facts.csv")


def test_package_file_finds_the_packaged_data_and_names_a_missing_file():
    from fiveflow.package_data import DATA_DIR, package_file

    for name in PACKAGED:
        assert package_file(name) == DATA_DIR / name and package_file(name).is_file()
    assert DATA_DIR == PROJECT_ROOT / "src" / "fiveflow" / "data"
    with pytest.raises(FileNotFoundError, match=r"packaged file data/questions/nope\.yaml is missing.*reinstall"):
        package_file("questions/nope.yaml")


def test_the_configs_questions_path_is_the_packaged_file_not_a_copy():
    """config.yaml and the reports rule name resources/questions/five-v1.yaml by path: a relative link to the
    packaged file, so the workflow and the package read one file (a copy could drift from it)."""
    from fiveflow.reports.prompts import DEFAULT_QUESTIONS, load_prompt

    named = PROJECT_ROOT / "resources" / "questions" / "five-v1.yaml"
    assert named.is_symlink() and not Path(os.readlink(named)).is_absolute()
    assert named.resolve() == DEFAULT_QUESTIONS.resolve()
    assert load_prompt(named).sha256 == load_prompt().sha256


def _shipped_copy(dest: Path) -> Path:
    """The files a build reads (src/, pyproject.toml, README.md, LICENSE) as git would ship them: tracked and new
    files that are not ignored (no __pycache__, no egg-info), read through links."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "src", "pyproject.toml"]
        + ["README.md", "LICENSE"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in sorted(set(filter(None, listed.split("\0")))):
        src = PROJECT_ROOT / rel
        if src.is_file():  # a tracked file deleted in the work tree is not copied
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _run(cmd: list, cwd: Path, env: dict, timeout: int = 180) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.e2e
@pytest.mark.shared_data
def test_non_editable_install_runs_the_cli_outside_the_checkout(tmp_path, cmu_slide):
    """pip install (not -e) into a fresh venv, then, from a folder outside the checkout: the installed package is
    the one imported, its data ships inside it and reads the same as the checkout's, and `fiveflow --help` and
    `fiveflow tile` on a real slide (CMU-1-Small-Region.svs, no config.yaml there: the default tiling) work."""
    litter = [PROJECT_ROOT / "build", PROJECT_ROOT / "dist"]
    before = [p.exists() for p in litter]
    venv, outside = tmp_path / "venv", tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # sys.executable is .venv's python; a venv made from it runs the same base interpreter
    _run([sys.executable, "-m", "venv", "--without-pip", venv], outside, env)
    py = venv / "bin" / "python"
    site = Path(
        _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], outside, env).stdout.strip()
    )
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}  # .venv's (this process's)
    (site / "fiveflow_test_deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    hidden = subprocess.run([py, "-c", "import fiveflow"], cwd=outside, env=env, capture_output=True, text=True)
    assert hidden.returncode != 0 and "No module named 'fiveflow'" in hidden.stderr, (
        "the checkout's editable fiveflow leaks into the fresh venv: " + hidden.stderr[-500:]
    )

    src = _shipped_copy(tmp_path / "checkout-copy")
    _run(
        [py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed", "-q"]
        + [src],
        outside,
        env,
        timeout=300,
    )
    shutil.rmtree(src)  # nothing may still read the sources: the installed package stands alone

    probe = _run(
        [
            py,
            "-c",
            "import importlib.resources as r, fiveflow\n"
            "from fiveflow.cohort.facts import load_fact_table\n"
            "from fiveflow.model.questions import load_questions\n"
            "from fiveflow.reports.prompts import load_prompt\n"
            "print(fiveflow.__file__)\n"
            f"print(all(r.files('fiveflow').joinpath('data', n).is_file() for n in {PACKAGED!r}))\n"
            "print(load_prompt().sha256)\n"
            "print(len(load_questions()), load_questions()[0])\n"
            "print(sorted((k, sum(v[1])) for k, v in load_fact_table().items()))\n"
            "from fiveflow.config import PROJECT_ROOT\n"
            "print(PROJECT_ROOT)\n",
        ],
        outside,
        env,
    ).stdout.splitlines()
    installed = Path(probe[0]).resolve()
    assert installed.is_relative_to(site.resolve()) and not installed.is_relative_to(PROJECT_ROOT), installed
    assert probe[1] == "True"  # the schema, the default questions and the demo facts ship as package data
    # the installed package reads the same bytes as the checkout: prompt hash, prompt-bank texts, demo facts
    from fiveflow.cohort.facts import load_fact_table
    from fiveflow.model.questions import load_questions
    from fiveflow.reports.prompts import load_prompt

    assert probe[2] == load_prompt().sha256
    assert probe[3] == f"{len(load_questions())} {load_questions()[0]}"
    assert probe[4] == str(sorted((k, sum(v[1])) for k, v in load_fact_table().items()))
    # relative config paths of an installed package resolve from where it runs, not from site-packages
    assert Path(probe[5]).resolve() == outside.resolve()

    fiveflow = venv / "bin" / "fiveflow"
    assert "tile" in _run([fiveflow, "--help"], outside, env).stdout
    out = outside / "tiled"
    tiled = _run([fiveflow, "tile", "--slide", cmu_slide, "--out", out], outside, env)
    assert "CMU-1-Small-Region\tok\t" in tiled.stdout, tiled.stdout
    coords = out / "coords" / "CMU-1-Small-Region.parquet"
    import pandas as pd

    assert coords.is_file() and len(pd.read_parquet(coords)) > 0
    assert [p.exists() for p in litter] == before  # the build ran in the copy, not in the checkout
