#!/usr/bin/env bash
# Tokenizer throughput on one core: train a vocabulary on the GPL-3 text,
# encode that text repeated to 20 MB (whole, and one call per line) and
# decode it back (build/bench/bench_tokenizer). Runs twice, since the second
# core is sometimes busy; compare the runs before trusting a figure. The
# issue's bar is encode >= 20 MB/s.
#
# Usage: bench/run_tokenizer.sh [BUILD_DIR]   (default $TM_BUILD, else build)
# stdout: one JSON object per line, the bench's lines with "run" added.
set -uo pipefail
BUILD=${1:-${TM_BUILD:-build}}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bench/bench_tokenizer"
if [ ! -x "$BIN" ]; then
  echo "run_tokenizer: $BIN is not built (cmake --build $BUILD --target bench_tokenizer)" >&2
  exit 1
fi
for run in 1 2; do
  echo "run_tokenizer: run $run" >&2
  out=$(TRIMODAL_THREADS=1 "$BIN" --mb 20 --vocab 8192 --reps 3) ||
    { echo "run_tokenizer: bench_tokenizer failed" >&2; exit 1; }
  while IFS= read -r line; do
    [ -n "$line" ] && echo "{\"run\":$run,${line#\{}"
  done <<<"$out"
done
