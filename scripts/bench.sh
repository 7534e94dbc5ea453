#!/usr/bin/env bash
# `make bench`: runs every bench/run_*.sh in turn. Each prints one JSON
# object per line on stdout (progress on stderr), putting trimodal beside
# OpenBLAS and PyTorch in the same run.
set -uo pipefail
BUILD=${1:-build}
export TM_BUILD=$BUILD
rc=0
for s in "$(dirname "$0")"/../bench/run_*.sh; do
  [ -e "$s" ] || continue
  echo "bench: $(basename "$s")" >&2
  bash "$s" "$BUILD" || { echo "bench: $(basename "$s") failed" >&2; rc=1; }
done
exit $rc
