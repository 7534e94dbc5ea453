#!/usr/bin/env bash
# The inference forward of bench-small (or another config) in every weight
# form, beside PyTorch's twin in the same run: `trimodal bench infer
# --dtype plain|f32|int8|bf16` and scripts/bench_model_torch.py infer, at
# batch 1 and 32, 1 and 2 threads, the cases interleaved (trimodal's four
# forms, then PyTorch, for each batch and thread count), the whole round
# twice: on a shared machine compare the two rounds before trusting a
# figure.
#
# PyTorch runs in its best setup: torch.set_num_threads(T),
# OMP_WAIT_POLICY=passive, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for
# that command only, /usr/bin/python3.
#
# Usage: bench/run_infer.sh [BUILD_DIR] [CONFIG]   (defaults: $TM_BUILD or
#        build; configs/bench-small.json)
# Environment: INFER_BATCHES ("1 32"), INFER_THREADS ("1 2"), INFER_ROUNDS
#   (2), INFER_REPS1 (30: timed forwards at batch 1), INFER_REPS32 (5),
#   INFER_TORCH (1; 0 skips PyTorch).
# stdout: one JSON object per run: trimodal's `bench infer --json` line
# (latency_ms_p50, p95, p99, samples_per_s, peak_rss_mb) or PyTorch's, with
# "round", "impl" and "loadavg_1m" added, and for trimodal "vs_torch" =
# its p50 / PyTorch's p50 of the same batch, threads and round (below 1:
# trimodal is faster; null without PyTorch).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-${TM_BUILD:-build}}
CONFIG=${2:-$ROOT/configs/bench-small.json}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
CLI="$BUILD/bin/trimodal"
BATCHES=${INFER_BATCHES:-1 32}
THREADS=${INFER_THREADS:-1 2}
ROUNDS=${INFER_ROUNDS:-2}
if [ ! -x "$CLI" ]; then
  echo "run_infer: $CLI is not built (cmake --build $BUILD --target trimodal)" >&2
  exit 1
fi
have_torch=0
if [ "${INFER_TORCH:-1}" = 1 ] && /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
  have_torch=1
else
  echo "run_infer: PyTorch skipped" >&2
fi
load() { cut -d' ' -f1 /proc/loadavg; }
p50() { sed -n 's/.*"latency_ms_p50": *\([0-9.]*\).*/\1/p'; }

for round in $(seq 1 "$ROUNDS"); do
  for b in $BATCHES; do
    for t in $THREADS; do
      reps=${INFER_REPS32:-5}
      [ "$b" -le 4 ] && reps=${INFER_REPS1:-30}
      tl=""
      if [ $have_torch = 1 ]; then
        tl=$(OMP_WAIT_POLICY=passive env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
          timeout 600 /usr/bin/python3 "$ROOT/scripts/bench_model_torch.py" infer \
          --config "$CONFIG" --batch "$b" --threads "$t" --reps "$reps" 2>/dev/null | tail -1)
        [ -n "$tl" ] && echo "$tl" | sed "s/^{/{\"round\":$round,\"loadavg_1m\":$(load),/"
      fi
      tp=$(printf '%s' "$tl" | p50)
      for d in plain f32 int8 bf16; do
        l=$(timeout 600 "$CLI" bench infer --config "$CONFIG" --batch "$b" --threads "$t" \
          --dtype "$d" --reps "$reps" --json) || { echo "run_infer: $d failed" >&2; continue; }
        mp=$(printf '%s' "$l" | p50)
        ratio=null
        [ -n "$tp" ] && ratio=$(awk -v a="$mp" -v b="$tp" 'BEGIN { printf "%.3f", a / b }')
        echo "$l" | sed "s/^{/{\"round\":$round,\"impl\":\"trimodal\",\"loadavg_1m\":$(load),\"vs_torch\":$ratio,/"
      done
    done
  done
done
