#!/usr/bin/env bash
# The HTTP server under load, beside PyTorch serving the same model: a
# bench-small model folder (fresh weights, a tokenizer trained on the
# repository's docs, the default front-ends), `trimodal serve` on a loopback
# port for it in f32 and quantized to int8 (`trimodal quantize --to int8`),
# and PyTorch's serving twin of the same folder (scripts/bench_torch_serve.py:
# the same /v1/classify JSON API, micro-batching, torch 2 threads, f32 and
# dynamic int8) on other ports. build/bench/bench_serve then posts classify
# requests (a text, a 48x40 PNG and a 1 s WAV) to all of them interleaved:
# in each round, at concurrency 1, 8 and 64, every server in turn, each
# level bounded by a request count and a time limit; it ends with a table
# and the ratios trimodal / torch of the same round (on stderr).
#
# Usage: bench/run_serve.sh [BUILD_DIR] [CONFIG]   (defaults: $TM_BUILD or
#        build; configs/bench-small.json)
# Environment: SERVE_THREADS (kernel threads of each server, 2),
#   SERVE_MAX_BATCH (32), SERVE_MAX_WAIT_MS (2), SERVE_SECONDS (time bound
#   per level and server, 5), SERVE_REQUESTS (request bounds per level,
#   100,200,400), SERVE_ROUNDS (2), SERVE_LEVELS (1,8,64), SERVE_DTYPES
#   (f32,int8), SERVE_TORCH (1; 0 leaves PyTorch out; it is left out with a
#   note when /usr/bin/python3 lacks torch), SERVE_TORCH_FORWARD (0; 1 adds
#   PyTorch's bare batch-1 and batch-32 forward, scripts/bench_model_torch.py),
#   SERVE_PYTHON (the Python with torch for PyTorch's side, /usr/bin/python3).
#   With the defaults the whole script takes about 2 to 3 minutes.
# stdout: one JSON object per round, level and server: {"bench":"serve",
# "server" (trimodal or torch), "dtype", "round", "concurrency", "requests",
# "errors", "latency_ms_p50/p95/p99", "req_per_s", "server_peak_rss_mb",
# "server_cpu_ms_per_req" (the server's CPU time per request: unlike
# latency it does not grow when other processes load the machine),
# "loadavg_1m"}; the servers' logs go to stderr.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-${TM_BUILD:-build}}
CONFIG=${2:-$ROOT/configs/bench-small.json}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bin/trimodal"
CLIENT="$BUILD/bench/bench_serve"
PY=${SERVE_PYTHON:-/usr/bin/python3}
THREADS=${SERVE_THREADS:-2}
for f in "$BIN" "$CLIENT"; do
  if [ ! -x "$f" ]; then
    echo "run_serve: $f is not built (cmake --build $BUILD)" >&2
    exit 1
  fi
done
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

"$BIN" init --config "$CONFIG" -o "$tmp/f32" >&2 || exit 1
"$BIN" tokenizer train --vocab 8192 -o "$tmp/f32/tokenizer.json" "$ROOT"/README.md \
  "$ROOT"/docs/*.md >/dev/null 2>&1 || exit 1
name=$(basename "$CONFIG" .json)

torch=${SERVE_TORCH:-1}
if [ "$torch" != 0 ]; then
  if [ ! -x "$PY" ] || ! "$PY" -c 'import torch, torchvision, torchaudio, PIL' 2>/dev/null; then
    echo "run_serve: note: $PY cannot import torch, torchvision, torchaudio and PIL;" \
      "the PyTorch side of the load test is skipped" >&2
    torch=0
  fi
fi

# wait_port FILE PID LOG: the port a server wrote, once it listens
wait_port() {
  for _ in $(seq 1 1200); do
    [ -s "$1" ] && { cat "$1"; return 0; }
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  echo "run_serve: a server did not start: $(tail -5 "$3")" >&2
  return 1
}

targets=()
for dtype in $(tr , ' ' <<<"${SERVE_DTYPES:-f32,int8}"); do
  dir="$tmp/$dtype"
  if [ "$dtype" != f32 ]; then
    if ! "$BIN" quantize "$tmp/f32" --to "$dtype" -o "$dir" >/dev/null 2>"$tmp/q.log"; then
      echo "run_serve: no $dtype run: $(cat "$tmp/q.log")" >&2
      continue
    fi
  fi
  "$BIN" serve "$dir" --port 0 --port-file "$tmp/port.$dtype" --quiet \
    --threads "$THREADS" --max-batch "${SERVE_MAX_BATCH:-32}" \
    --max-wait-ms "${SERVE_MAX_WAIT_MS:-2}" --max-queue 512 2> "$tmp/serve.$dtype.log" &
  pids+=($!)
  port=$(wait_port "$tmp/port.$dtype" $! "$tmp/serve.$dtype.log") || exit 1
  targets+=(--target "trimodal:$dtype:$port:${pids[-1]}")
  if [ "$torch" != 0 ] && { [ "$dtype" = f32 ] || [ "$dtype" = int8 ]; }; then
    # PyTorch's best setup: its own thread count, passive OpenMP waits,
    # without the OpenBLAS core overrides of this shell
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=passive \
      "$PY" "$ROOT/scripts/bench_torch_serve.py" "$tmp/f32" --dtype "$dtype" --port 0 \
      --port-file "$tmp/tport.$dtype" --threads "$THREADS" --max-batch "${SERVE_MAX_BATCH:-32}" \
      --max-wait-ms "${SERVE_MAX_WAIT_MS:-2}" --quiet 2> "$tmp/torch.$dtype.log" &
    pids+=($!)
    port=$(wait_port "$tmp/tport.$dtype" $! "$tmp/torch.$dtype.log") || exit 1
    targets+=(--target "torch:$dtype:$port:${pids[-1]}")
  fi
done
[ ${#targets[@]} -gt 0 ] || exit 1

rc=0
"$CLIENT" "${targets[@]}" --model "$name" --levels "${SERVE_LEVELS:-1,8,64}" \
  --requests "${SERVE_REQUESTS:-100,200,400}" --seconds "${SERVE_SECONDS:-5}" \
  --rounds "${SERVE_ROUNDS:-2}" || rc=1
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
pids=()
for f in "$tmp"/serve.*.log "$tmp"/torch.*.log; do
  [ -s "$f" ] && { echo "run_serve: $(basename "$f"):" >&2; cat "$f" >&2; }
done

# PyTorch's bare forward of the same model, batch 1 and 32, for scale
if [ "$torch" != 0 ] && [ "${SERVE_TORCH_FORWARD:-0}" = 1 ]; then
  for b in 1 32; do
    reps=30; [ "$b" -gt 1 ] && reps=5
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=passive \
      "$PY" "$ROOT/scripts/bench_model_torch.py" infer --config "$CONFIG" \
      --batch "$b" --threads "$THREADS" --reps "$reps" --warmup 2 --case serve || true
  done
fi
exit $rc
