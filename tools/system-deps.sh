#!/usr/bin/env bash
# Debian packages the test suite needs: a one-node SLURM cluster (slurm-wlm, munge) for
# tests/test_slurm.py and chromium for the HTML report tests. Idempotent and quiet: does nothing
# when all are installed. As root, installs the missing ones with apt-get; otherwise prints what
# is missing and the command to install it, and exits 0 (the tests that need them then skip
# locally, and fail in CI where CI=true). A failed apt-get exits 1 only when CI=true.
set -euo pipefail
pkgs=(slurm-wlm munge chromium)
missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} == 0 ]] && exit 0
if [[ $(id -u) != 0 ]]; then
  echo "[fiveflow] missing Debian packages: ${missing[*]}; install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  echo "[fiveflow] (tests that need them are skipped locally, and fail in CI)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "[fiveflow] missing packages ${missing[*]} and no apt-get here: install them with your package manager" >&2
  exit 0
fi
echo "[fiveflow] installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! { apt-get update -qq -o DPkg::Lock::Timeout=600 && apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  echo "[fiveflow] apt-get install of ${missing[*]} failed:" >&2
  tail -n 30 "$log" >&2
  rm -f "$log"
  # CI needs them (the tests fail without): stop here. Locally the tests that need them skip.
  [[ ${CI:-} == true ]] && exit 1
  exit 0
fi
rm -f "$log"
