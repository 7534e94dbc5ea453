#!/usr/bin/env bash
# GEMM at inference shapes and in bf16 (build/bench/bench_gemm_small):
# bench-small's Linears at batch 1 (M = 1 to 148 tokens) through tm_sgemm,
# tm_sgemm_packed (the weight packed once) and OpenBLAS, interleaved; and
# tm_gemm_bf16 beside tm_sgemm at the batch-32 training shapes. Then
# PyTorch's torch.mm on the batch-1 shapes (scripts/bench_gemm_torch.py,
# OMP_WAIT_POLICY=passive, OpenBLAS variables unset for that command).
# Runs the C bench twice, since the second core is sometimes busy.
#
# Usage: bench/run_gemm_small.sh [BUILD_DIR] [bench_gemm_small options]
#        (BUILD_DIR defaults to $TM_BUILD, else build)
# stdout: JSON lines (the C bench's with "run" added, then PyTorch's).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-${TM_BUILD:-build}}
[ $# -gt 0 ] && shift
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bench/bench_gemm_small"
if [ ! -x "$BIN" ]; then
  echo "run_gemm_small: $BIN is not built (cmake --build $BUILD --target bench_gemm_small)" >&2
  exit 1
fi
rc=0
for run in 1 2; do
  echo "run_gemm_small: run $run" >&2
  out=$("$BIN" "$@") || { echo "run_gemm_small: bench_gemm_small failed" >&2; exit 1; }
  while IFS= read -r line; do
    [ -n "$line" ] && echo "{\"run\":$run,${line#\{}"
  done <<<"$out"
done
if /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
  echo "run_gemm_small: PyTorch (torch.mm, 1 and 2 threads)" >&2
  "$BIN" --shapes | OMP_WAIT_POLICY=passive env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
    /usr/bin/python3 "$ROOT/scripts/bench_gemm_torch.py" --threads 1,2 --seconds 0.3 ||
    { echo "run_gemm_small: the PyTorch script failed" >&2; rc=1; }
else
  echo "run_gemm_small: /usr/bin/python3 cannot import torch; PyTorch part skipped" >&2
fi
exit $rc
