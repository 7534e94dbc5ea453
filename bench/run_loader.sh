#!/usr/bin/env bash
# Loader throughput (build/bench/bench_loader): a synthetic dataset of 2000
# rows (28 x 28 PNG, 1.5 s WAV, text) read into bench-small's inputs, at 1
# and 2 workers, first epoch (decoding) and second (cache), then with
# augmentations. One JSON object per line on stdout; progress on stderr.
#
# Usage: bench/run_loader.sh [BUILD_DIR]   (default $TM_BUILD, else build)
set -uo pipefail
BUILD=${1:-${TM_BUILD:-build}}
BIN="$BUILD/bench/bench_loader"
if [ ! -x "$BIN" ]; then
  echo "run_loader: $BIN is not built (cmake --build $BUILD --target bench_loader)" >&2
  exit 1
fi
"$BIN" --rows 2000 --workers 1,2 || exit 1
"$BIN" --rows 2000 --workers 2 --augment || exit 1
