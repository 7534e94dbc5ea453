#!/usr/bin/env bash
# f32 GEMM: trimodal's tm_sgemm beside OpenBLAS's cblas_sgemm and the FMA
# peak (build/bench/bench_gemm), at 1 and 2 threads, over square sizes and
# bench-small's transformer shapes; then PyTorch's torch.mm at 2 threads.
#
# OpenBLAS picks its kernels from the environment, so bench_gemm runs twice
# in this one script: once with the environment as it is (tagged
# "openblas_setup":"env"; e.g. OPENBLAS_CORETYPE=Haswell where a machine
# sets that), once with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for
# that command alone ("openblas_setup":"unset", OpenBLAS detects the CPU).
# Every line names the OpenBLAS core it got ("openblas_core"). The second
# core of a small machine is sometimes busy: each line interleaves both
# libraries rep by rep, and the two runs give two readings of each figure.
#
# Usage: bench/run_gemm.sh [BUILD_DIR] [bench_gemm options, e.g. --quick]
#        (BUILD_DIR defaults to $TM_BUILD, else build)
# stdout: JSON lines (see bench/bench_gemm.c and scripts/bench_gemm_torch.py)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-${TM_BUILD:-build}}
[ $# -gt 0 ] && shift
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bench/bench_gemm"
if [ ! -x "$BIN" ]; then
  echo "run_gemm: $BIN is not built (cmake --build $BUILD --target bench_gemm)" >&2
  exit 1
fi

echo "run_gemm: environment: $(env | grep '^OPENBLAS' | tr '\n' ' ')" >&2
rc=0
"$BIN" --setup env "$@" || { echo "run_gemm: bench_gemm (env) failed" >&2; rc=1; }
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$BIN" --setup unset "$@" ||
  { echo "run_gemm: bench_gemm (unset) failed" >&2; rc=1; }

if /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
  echo "run_gemm: PyTorch (torch.mm, 2 threads)" >&2
  "$BIN" --shapes | OMP_WAIT_POLICY=passive env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
    /usr/bin/python3 "$ROOT/scripts/bench_gemm_torch.py" --threads 2 --setup unset ||
    { echo "run_gemm: the PyTorch script failed" >&2; rc=1; }
else
  echo "run_gemm: /usr/bin/python3 cannot import torch; PyTorch part skipped" >&2
fi
exit $rc
