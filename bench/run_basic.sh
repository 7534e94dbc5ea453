#!/usr/bin/env bash
# The simple ops' kernels (elementwise, bias add and its gradient, GELU in
# both forms, LayerNorm, softmax, the attention's head permute) at
# bench-small's batch-32 shapes: the vectorised kernels beside the plain C
# ones in one process (build/bench/bench_basic), at 1 and 2 threads. Runs
# twice, since the second core is sometimes busy; compare the runs before
# trusting a figure.
#
# Usage: bench/run_basic.sh [BUILD_DIR] [bench_basic options, e.g. --quick]
#        (BUILD_DIR defaults to $TM_BUILD, else build)
# stdout: one JSON object per line, the bench's lines with "run" added.
set -uo pipefail
BUILD=${1:-${TM_BUILD:-build}}
[ $# -gt 0 ] && shift
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bench/bench_basic"
if [ ! -x "$BIN" ]; then
  echo "run_basic: $BIN is not built (cmake --build $BUILD --target bench_basic)" >&2
  exit 1
fi
for run in 1 2; do
  echo "run_basic: run $run" >&2
  out=$("$BIN" "$@") || { echo "run_basic: bench_basic failed" >&2; exit 1; }
  while IFS= read -r line; do
    [ -n "$line" ] && echo "{\"run\":$run,${line#\{}"
  done <<<"$out"
done
