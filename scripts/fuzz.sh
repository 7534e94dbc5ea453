#!/usr/bin/env bash
# Runs each libFuzzer harness built under BUILD_DIR/fuzz/ for SECONDS.
# Usage: scripts/fuzz.sh BUILD_DIR [SECONDS]   (make fuzz calls it)
#
# Harness fuzz_NAME starts from a copy of fuzz/corpus/NAME/ in a scratch
# folder under BUILD_DIR/fuzz-work/NAME/, so the committed seeds never grow,
# and uses fuzz/fuzz_NAME.dict when there is one. Crashing inputs land in
# BUILD_DIR/fuzz-work/NAME/artifacts/. Prints one line per harness with its
# executions, and exits non-zero if any harness crashed, leaked, hung or
# could not run.
set -euo pipefail

build=${1:?usage: scripts/fuzz.sh BUILD_DIR [SECONDS]}
secs=${2:-30}
root=$(cd "$(dirname "$0")/.." && pwd)

shopt -s nullglob
bins=()
for b in "$build"/fuzz/fuzz_*; do
  [ -f "$b" ] && [ -x "$b" ] && bins+=("$b")
done
if [ ${#bins[@]} -eq 0 ]; then
  echo "fuzz: no harnesses under $build/fuzz (configure with -DTM_FUZZ=ON)" >&2
  exit 1
fi

status=0
for bin in "${bins[@]}"; do
  name=$(basename "$bin")
  short=${name#fuzz_}
  work="$build/fuzz-work/$short"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  if [ -d "$root/fuzz/corpus/$short" ]; then
    cp -R "$root/fuzz/corpus/$short/." "$work/corpus/"
  fi
  args=(-max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048
        -use_value_profile=1 -print_final_stats=1 -artifact_prefix="$work/artifacts/")
  if [ -f "$root/fuzz/$name.dict" ]; then
    args+=(-dict="$root/fuzz/$name.dict")
  fi
  log="$work/log.txt"
  set +e
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    "$bin" "${args[@]}" "$work/corpus" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
  found=$(find "$work/artifacts" -type f | wc -l)
  echo "fuzz: $name: ${execs:-?} executions in ${secs}s, corpus $(find "$work/corpus" -type f | wc -l) inputs, exit $rc, $found crash artifacts"
  if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
    status=1
    echo "fuzz: $name FAILED; inputs in $work/artifacts/, log $log" >&2
    tail -n 60 "$log" >&2
  fi
done
exit $status
