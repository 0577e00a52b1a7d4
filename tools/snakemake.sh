#!/usr/bin/env bash
# Run the project's Snakemake from .venv (call it from the project root, or pass -s/--directory).
# A run that was killed hard (SIGKILL, power loss) leaves a lock behind; when no Snakemake process
# is running in the working directory, that lock is stale and is removed, so a rerun needs no
# manual cleanup. Interrupted jobs are redone (--rerun-incomplete, set in
# profiles/default/config.yaml), and every stage writes its outputs atomically.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd -P)
export PATH="$root/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
workdir=$PWD
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    -d|--directory) workdir=${args[$((i + 1))]} ;;
    --directory=*) workdir=${args[$i]#--directory=} ;;
  esac
done
workdir=$(cd "$workdir" 2>/dev/null && pwd -P || echo "$workdir")
if compgen -G "$workdir/.snakemake/locks/*" >/dev/null; then
  live=0
  for pid in $(pgrep -f "bin/snakemake" || true); do
    [[ $pid == "$$" ]] && continue
    [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" == "$workdir" ]] && live=1
  done
  if [[ $live == 0 ]]; then
    echo "[fiveflow] removing a stale Snakemake lock left by an interrupted run in $workdir" >&2
    rm -f "$workdir"/.snakemake/locks/*
  fi
fi
exec "$root/.venv/bin/snakemake" "$@"
