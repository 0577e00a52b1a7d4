"""Files that ship inside the package, under ``fiveflow/data/`` (pyproject.toml: package-data ``data/**/*``).

What the package reads by itself (the default FiVE questions, the demo cohort's report facts, the config
schema) lives next to its code, so a checkout, an editable install and an installed wheel read the same
bytes, whatever the working directory. Files a workflow config names by path (``resources/``) are not here.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"


def package_file(name: str) -> Path:
    """The path of the packaged file ``data/<name>`` (``/``-separated, e.g. ``questions/five-v1.yaml``).

    Raises FileNotFoundError when the installation lacks it (a wheel built without its package data)."""
    path = DATA_DIR.joinpath(*name.split("/"))
    if not path.is_file():
        raise FileNotFoundError(
            f"fiveflow's packaged file data/{name} is missing ({path}). Fix: reinstall fiveflow "
            "(pip install <checkout>); the file ships as package data"
        )
    return path
