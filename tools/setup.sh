#!/usr/bin/env bash
# Create (or reuse) the project virtual environment at .venv with everything fiveflow needs.
# Idempotent: a stamp keyed on the requirement files skips the work when nothing changed.
# Recipe (see docs/install.md, "Installation details"): torch/torchvision pinned pair first, then our packages
# together with tiatoolbox's own dependency list under its version caps, then tiatoolbox --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
key=$(cat tools/setup.sh tools/constraints.txt tools/requirements*.txt pyproject.toml | sha256sum | cut -c1-16)
stamp="$VENV/.fiveflow-setup-$key"
if [[ -f "$stamp" ]]; then
  exit 0
fi
echo "[setup] building $VENV (a few minutes the first time)" >&2
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pipi() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }
pipi "torch==2.14.1" "torchvision==0.29.1"
pipi -c tools/constraints.txt -r tools/requirements-tiatoolbox.txt -r tools/requirements.txt
pipi --no-deps "tiatoolbox==2.1.3"
pipi --no-deps -e .
rm -f "$VENV"/.fiveflow-setup-*
touch "$stamp"
echo "[setup] done: $VENV" >&2
