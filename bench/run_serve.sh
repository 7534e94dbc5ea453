#!/usr/bin/env bash
# The HTTP server under load: a bench-small model folder (fresh weights,
# a tokenizer trained on the repository's docs, the default front-ends),
# `trimodal serve` on a loopback port, and build/bench/bench_serve posting
# classify requests (a text, a 48x40 PNG and a 1 s WAV) at concurrency 1, 8
# and 64, each bounded by a request count and a time limit.
#
# Usage: bench/run_serve.sh [BUILD_DIR] [CONFIG]   (defaults: $TM_BUILD or
#        build; configs/bench-small.json)
# Environment: SERVE_THREADS (kernel threads of the server, 2),
#   SERVE_MAX_BATCH (32), SERVE_MAX_WAIT_MS (2), SERVE_SECONDS (time bound
#   per level, 20), SERVE_REQUESTS (request bounds per level, 200,400,1000).
# stdout: one JSON object per level: {"bench":"serve", "concurrency",
# "requests", "errors", "latency_ms_p50/p95/p99", "req_per_s",
# "server_peak_rss_mb", ...}; the server's log goes to stderr.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-${TM_BUILD:-build}}
CONFIG=${2:-$ROOT/configs/bench-small.json}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bin/trimodal"
CLIENT="$BUILD/bench/bench_serve"
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

"$BIN" init --config "$CONFIG" -o "$tmp/model" >&2 || exit 1
"$BIN" tokenizer train --vocab 8192 -o "$tmp/model/tokenizer.json" "$ROOT"/README.md \
  "$ROOT"/docs/*.md >/dev/null 2>&1 || exit 1
name=$(basename "$CONFIG" .json)

"$BIN" serve "$tmp/model" --port 0 --port-file "$tmp/port" --quiet \
  --threads "${SERVE_THREADS:-2}" --max-batch "${SERVE_MAX_BATCH:-32}" \
  --max-wait-ms "${SERVE_MAX_WAIT_MS:-2}" --max-queue 512 2> "$tmp/serve.log" &
server=$!
for _ in $(seq 1 600); do [ -s "$tmp/port" ] && break; sleep 0.05; done
if [ ! -s "$tmp/port" ]; then
  echo "run_serve: the server did not start: $(cat "$tmp/serve.log")" >&2
  exit 1
fi
"$CLIENT" --port "$(cat "$tmp/port")" --server-pid "$server" --model "$name" \
  --levels 1,8,64 --requests "${SERVE_REQUESTS:-200,400,1000}" --seconds "${SERVE_SECONDS:-20}"
rc=$?
kill -TERM "$server"
wait "$server" || rc=1
server=
cat "$tmp/serve.log" >&2
exit $rc
