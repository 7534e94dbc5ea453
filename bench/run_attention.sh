#!/usr/bin/env bash
# Attention forward + backward at bench-small's fusion shape (B=32, H=4,
# T=148, D=64, key padding mask): trimodal (build/bench/bench_attention)
# beside PyTorch (scripts/bench_attention_torch.py), at 1 and 2 threads.
# Both run twice, one after the other, since the second core is sometimes
# busy; compare the runs before trusting a figure.
#
# Usage: bench/run_attention.sh [BUILD_DIR]   (default $TM_BUILD, else build)
# stdout: one JSON object per run and thread count with trimodal_ms and
# torch_ms (medians of the repetitions) and ratio = trimodal_ms / torch_ms
# (below 1: trimodal is faster); torch_ms and ratio are null when torch
# cannot be imported. The raw lines of both sides go to stderr.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-${TM_BUILD:-build}}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bench/bench_attention"
if [ ! -x "$BIN" ]; then
  echo "run_attention: $BIN is not built (cmake --build $BUILD --target bench_attention)" >&2
  exit 1
fi
have_torch=0
if /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
  have_torch=1
else
  echo "run_attention: torch cannot be imported by /usr/bin/python3; PyTorch part skipped" >&2
fi

for run in 1 2; do
  echo "run_attention: run $run: trimodal" >&2
  tm=$("$BIN" --threads 1,2) || { echo "run_attention: bench_attention failed" >&2; exit 1; }
  echo "$tm" >&2
  th=""
  if [ $have_torch = 1 ]; then
    echo "run_attention: run $run: PyTorch" >&2
    th=$(OMP_WAIT_POLICY=passive env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
         /usr/bin/python3 "$ROOT/scripts/bench_attention_torch.py" --threads 1,2) ||
      echo "run_attention: the PyTorch script failed" >&2
    echo "$th" >&2
  fi
  /usr/bin/python3 - "$run" "$tm" "$th" <<'EOF'
import json, sys
run, tm, th = int(sys.argv[1]), sys.argv[2], sys.argv[3]
parse = lambda s: {d["threads"]: d for d in map(json.loads, filter(None, s.splitlines()))}
tm, th = parse(tm), parse(th)
for nt in sorted(tm):
    a, b = tm[nt], th.get(nt)
    print(json.dumps({
        "bench": "attention_vs_torch", "run": run, "threads": nt,
        "shape": {"B": a["B"], "H": a["H"], "T": a["T"], "D": a["D"]}, "mask": a["mask"],
        "trimodal_ms": a["ms"], "trimodal_fwd_ms": a["fwd_ms"],
        "trimodal_bwd_ms": a["bwd_ms"], "isa": a["isa"],
        "torch_ms": b["ms"] if b else None, "torch_sdpa": b["sdpa"] if b else None,
        "ratio": round(a["ms"] / b["ms"], 3) if b else None}), flush=True)
EOF
done
