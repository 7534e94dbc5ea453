#!/usr/bin/env bash
# bench-small (or another config) end to end: the training step at batch 32
# (forward, backward, AdamW), the classification forward at batch 32 and at
# batch 1, at 2 threads: trimodal (build/bench/bench_model) beside its
# PyTorch twin (scripts/bench_model_torch.py) in the same run, twice, one
# side after the other, since the second core is sometimes busy: compare the
# two runs before trusting a figure.
#
# Mixed precision: train32_bf16 times `trimodal bench train --dtype bf16`
# (bf16 GEMM operands, f32 accumulation and master weights) beside PyTorch's
# training step under torch.autocast("cpu", dtype=torch.bfloat16), and
# train32 f32 of the CLI in the same run, so the bf16/f32 ratio of each side
# comes from one run: trimodal_bf16_vs_f32 and torch_bf16_vs_f32 are the
# speed-ups of bf16 (f32 step ms / bf16 step ms; above 1: bf16 is faster).
#
# PyTorch runs in its best setup here: torch.set_num_threads(2),
# OMP_WAIT_POLICY=passive, and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset
# for that command only.
#
# Usage: bench/run_model.sh [BUILD_DIR] [CONFIG]   (defaults: $TM_BUILD or
#        build; configs/bench-small.json)
# stdout: one JSON object per run and case: trimodal_ms and torch_ms (the
# step median for train32, the latency p50 for infer32 and infer1), and
# ratio = trimodal_ms / torch_ms (below 1: trimodal is faster); torch_ms and
# ratio are null when torch cannot be imported. Raw lines go to stderr.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-${TM_BUILD:-build}}
CONFIG=${2:-$ROOT/configs/bench-small.json}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bench/bench_model"
CLI="$BUILD/bin/trimodal"
THREADS=2
if [ ! -x "$BIN" ]; then
  echo "run_model: $BIN is not built (cmake --build $BUILD --target bench_model)" >&2
  exit 1
fi
have_torch=0
if /usr/bin/python3 -c 'import torch' >/dev/null 2>&1; then
  have_torch=1
else
  echo "run_model: torch cannot be imported by /usr/bin/python3; PyTorch part skipped" >&2
fi

torch_run() { # MODE BATCH REPS CASE [DTYPE]
  OMP_WAIT_POLICY=passive env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
    /usr/bin/python3 "$ROOT/scripts/bench_model_torch.py" "$1" --config "$CONFIG" \
    --batch "$2" --threads $THREADS --reps "$3" --case "$4" --dtype "${5:-f32}"
}

# trimodal's CLI training step in DTYPE, tagged with CASE (one JSON line)
cli_run() { # DTYPE CASE
  timeout 1200 "$CLI" bench train --config "$CONFIG" --batch 32 --threads $THREADS \
    --reps 4 --warmup 1 --dtype "$1" --json | sed "s/^{/{\"case\":\"$2\",/"
}

for run in 1 2; do
  echo "run_model: run $run: trimodal" >&2
  # (a time limit, so a stuck run cannot hold `make bench` forever)
  tm=$(timeout 1200 "$BIN" --config "$CONFIG" --threads $THREADS) ||
    { echo "run_model: bench_model failed or timed out" >&2; exit 1; }
  echo "$tm" >&2
  if [ -x "$CLI" ]; then
    echo "run_model: run $run: trimodal bench train f32 / bf16" >&2
    mp=$(cli_run f32 cli_train32 && cli_run bf16 train32_bf16) ||
      { echo "run_model: trimodal bench --dtype failed" >&2; mp=""; }
    echo "$mp" >&2
    tm="$tm"$'\n'"$mp"
  else
    echo "run_model: $CLI is not built; bf16 case skipped" >&2
  fi
  th=""
  if [ $have_torch = 1 ]; then
    echo "run_model: run $run: PyTorch" >&2
    th=$(torch_run train 32 4 train32 && torch_run infer 32 4 infer32 &&
         torch_run infer 1 30 infer1 && torch_run train 32 4 cli_train32 &&
         torch_run train 32 4 train32_bf16 bf16) ||
      echo "run_model: the PyTorch script failed" >&2
    echo "$th" >&2
  fi
  /usr/bin/python3 - "$run" "$tm" "$th" <<'EOF'
import json, sys
run, tm, th = int(sys.argv[1]), sys.argv[2], sys.argv[3]
parse = lambda s: {d["case"]: d for d in map(json.loads, filter(None, s.splitlines()))}
tm, th = parse(tm), parse(th)
key = lambda d: d.get("step_ms_median", d.get("latency_ms_p50"))
for case in ("train32", "infer32", "infer1", "train32_bf16"):
    a, b = tm.get(case), th.get(case)
    if not a:
        continue
    line = {"bench": "model_vs_torch", "run": run, "case": case, "batch": a["batch"],
            "threads": a["threads"], "params": a["params"], "trimodal_ms": key(a),
            "torch_ms": key(b) if b else None,
            "ratio": round(key(a) / key(b), 3) if b else None,
            "trimodal_rss_mb": a["peak_rss_mb"], "torch_rss_mb": b["peak_rss_mb"] if b else None}
    if case == "train32":
        line.update({"trimodal_fwd_ms": a["fwd_ms"], "trimodal_bwd_ms": a["bwd_ms"],
                     "trimodal_opt_ms": a["opt_ms"]})
    if case == "train32_bf16":
        # bf16 over f32 of each side, f32 timed by the same program in this run
        a32, b32 = tm.get("cli_train32"), th.get("cli_train32")
        line.update({"dtype": "bf16", "trimodal_samples_per_s": a["samples_per_s"],
                     "torch_samples_per_s": b["samples_per_s"] if b else None,
                     "trimodal_bf16_vs_f32": round(key(a32) / key(a), 3) if a32 else None,
                     "torch_bf16_vs_f32": round(key(b32) / key(b), 3) if b and b32 else None})
    print(json.dumps(line), flush=True)
EOF
done
