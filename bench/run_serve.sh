#!/usr/bin/env bash
# The HTTP server under load: a bench-small model folder (fresh weights,
# a tokenizer trained on the repository's docs, the default front-ends),
# `trimodal serve` on a loopback port, and build/bench/bench_serve posting
# classify requests (a text, a 48x40 PNG and a 1 s WAV) at concurrency 1, 8
# and 64, each bounded by a request count and a time limit; then the same
# for the folder quantized to int8 (`trimodal quantize --to int8`), and, for
# scale, PyTorch's batch-1 and batch-32 forward of the same model
# (scripts/bench_model_torch.py; skipped without torch).
#
# Usage: bench/run_serve.sh [BUILD_DIR] [CONFIG]   (defaults: $TM_BUILD or
#        build; configs/bench-small.json)
# Environment: SERVE_THREADS (kernel threads of the server, 2),
#   SERVE_MAX_BATCH (32), SERVE_MAX_WAIT_MS (2), SERVE_SECONDS (time bound
#   per level, 20), SERVE_REQUESTS (request bounds per level, 200,400,1000),
#   SERVE_DTYPES (f32,int8), SERVE_TORCH (1; 0 skips PyTorch).
# stdout: one JSON object per level and dtype: {"bench":"serve", "dtype",
# "concurrency", "requests", "errors", "latency_ms_p50/p95/p99",
# "req_per_s", "server_peak_rss_mb", "server_cpu_ms_per_req" (the server's
# CPU time per request: unlike latency it does not grow when other
# processes load the machine), "loadavg_1m"}, then PyTorch's
# {"bench":"infer","impl":"torch",...} lines; the server's log goes to
# stderr.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-${TM_BUILD:-build}}
CONFIG=${2:-$ROOT/configs/bench-small.json}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bin/trimodal"
CLIENT="$BUILD/bench/bench_serve"
THREADS=${SERVE_THREADS:-2}
for f in "$BIN" "$CLIENT"; do
  if [ ! -x "$f" ]; then
    echo "run_serve: $f is not built (cmake --build $BUILD)" >&2
    exit 1
  fi
done
tmp=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then kill -9 "$server" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$BIN" init --config "$CONFIG" -o "$tmp/f32" >&2 || exit 1
"$BIN" tokenizer train --vocab 8192 -o "$tmp/f32/tokenizer.json" "$ROOT"/README.md \
  "$ROOT"/docs/*.md >/dev/null 2>&1 || exit 1
name=$(basename "$CONFIG" .json)

rc=0
for dtype in $(tr , ' ' <<<"${SERVE_DTYPES:-f32,int8}"); do
  dir="$tmp/$dtype"
  if [ "$dtype" != f32 ]; then
    if ! "$BIN" quantize "$tmp/f32" --to "$dtype" -o "$dir" >/dev/null 2>"$tmp/q.log"; then
      echo "run_serve: no $dtype run: $(cat "$tmp/q.log")" >&2
      continue
    fi
  fi
  rm -f "$tmp/port"
  "$BIN" serve "$dir" --port 0 --port-file "$tmp/port" --quiet \
    --threads "$THREADS" --max-batch "${SERVE_MAX_BATCH:-32}" \
    --max-wait-ms "${SERVE_MAX_WAIT_MS:-2}" --max-queue 512 2> "$tmp/serve.log" &
  server=$!
  for _ in $(seq 1 600); do [ -s "$tmp/port" ] && break; sleep 0.05; done
  if [ ! -s "$tmp/port" ]; then
    echo "run_serve: the server did not start: $(cat "$tmp/serve.log")" >&2
    exit 1
  fi
  "$CLIENT" --port "$(cat "$tmp/port")" --server-pid "$server" --model "$name" --dtype "$dtype" \
    --levels 1,8,64 --requests "${SERVE_REQUESTS:-200,400,1000}" --seconds "${SERVE_SECONDS:-20}" \
    || rc=1
  kill -TERM "$server"
  wait "$server" || rc=1
  server=
  cat "$tmp/serve.log" >&2
done

# PyTorch's forward of the same model, batch 1 and 32, for scale
if [ "${SERVE_TORCH:-1}" != 0 ] && [ -x /usr/bin/python3 ]; then
  for b in 1 32; do
    reps=30; [ "$b" -gt 1 ] && reps=5
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=passive \
      /usr/bin/python3 "$ROOT/scripts/bench_model_torch.py" infer --config "$CONFIG" \
      --batch "$b" --threads "$THREADS" --reps "$reps" --warmup 2 --case serve || true
  done
fi
exit $rc
