#!/usr/bin/env bash
# Run the project's Snakemake from .venv. If a previous run was killed (SIGKILL, power loss) it
# leaves a lock behind; when no Snakemake process is running in this folder the lock is stale
# and is removed, so a rerun needs no manual cleanup. Incomplete outputs are redone
# (--rerun-incomplete, set in workflow/profiles/default/config.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
here=$(pwd -P)
if compgen -G ".snakemake/locks/*" >/dev/null; then
  live=0
  for pid in $(pgrep -f "snakemake" || true); do
    [[ $pid == $$ ]] && continue
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null || true)
    if [[ "$cwd" == "$here" ]] && grep -qa "bin/snakemake" "/proc/$pid/cmdline" 2>/dev/null; then live=1; fi
  done
  if [[ $live == 0 ]]; then
    echo "[fiveflow] removing a stale Snakemake lock left by an interrupted run" >&2
    rm -f .snakemake/locks/*
  fi
fi
exec snakemake "$@"
