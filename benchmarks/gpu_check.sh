#!/usr/bin/env bash
# One prepared GPU check (issue 20), under 8 minutes on one GPU: run it once where a CUDA GPU is available.
#   1. the embedding benchmark on CUDA (bf16, channels_last, pinned memory, reading workers), against the
#      model alone and the naive loop: RESULT io_efficiency=... speedup_vs_naive=...
#   2. benchmarks/gpu_check.py: feature determinism on CUDA, one FiVE pre-training step in bf16 with and
#      without LoRA, and the resume state with the CUDA RNG: one RESULT line per check.
# Without CUDA (CI) it still runs: the CUDA-only parts are reported as SKIP lines and every other check runs
# on the CPU as a smoke test. Exit status: non-zero when any check failed.
# Usage: bash benchmarks/gpu_check.sh   (from the project root; uses .venv/bin/python when it exists)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd -P)
py="$root/.venv/bin/python"
[[ -x $py ]] || py=python3
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cd "$root"
if "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "== 1/2 embedding benchmark on CUDA"
  timeout 300 "$py" benchmarks/bench_embed.py --device cuda --synthetic 20000x15000 --batch-size 256 --workers 8 \
    --naive-tiles 200 --repeats 2 | sed 's/^RESULT /RESULT check=embed_bench /'
else
  echo "SKIP check=embed_bench: no CUDA device (the CPU figures come from benchmarks/bench_embed.py)"
fi
echo "== 2/2 determinism, FiVE step (bf16, LoRA), resume RNG"
timeout 300 "$py" benchmarks/gpu_check.py  # its last line: RESULT check=all ok=... (the script's last line too)
