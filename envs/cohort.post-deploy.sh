#!/usr/bin/env bash
# Run by Snakemake (--use-conda / --sdm conda) inside this env right after creating it: installs the fiveflow
# package from the project checkout, without dependencies (the env file pins those). FIVEFLOW_ROOT is set by
# workflow/rules/common.smk to the project root (a relative `-e ../` in the env file would resolve against
# Snakemake's copy of the file under .snakemake/conda/, not against envs/).
set -euo pipefail
python -m pip install --no-deps --disable-pip-version-check -q -e "${FIVEFLOW_ROOT:?set by workflow/rules/common.smk}"
