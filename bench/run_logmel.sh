#!/usr/bin/env bash
# Log-mel of one hour of 16 kHz audio (the default front-end: Whisper's
# recipe at 64 mel bins): trimodal (build/bench/bench_logmel) beside
# torchaudio's MelSpectrogram plus the same log steps
# (scripts/bench_logmel_torch.py), on the same signal, at 1 and 2 threads.
# Both run twice, one after the other, since the second core is sometimes
# busy; compare the runs before trusting a figure. The goal is under 5 s
# on one core.
#
# Usage: bench/run_logmel.sh [BUILD_DIR]   (default $TM_BUILD, else build)
# stdout: one JSON object per run and thread count with trimodal_ms and
# torch_ms (medians of the repetitions) and ratio = trimodal_ms / torch_ms
# (below 1: trimodal is faster); torch_ms and ratio are null when torch
# cannot be imported. The raw lines of both sides go to stderr.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-${TM_BUILD:-build}}
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
BIN="$BUILD/bench/bench_logmel"
if [ ! -x "$BIN" ]; then
  echo "run_logmel: $BIN is not built (cmake --build $BUILD --target bench_logmel)" >&2
  exit 1
fi
have_torch=0
if /usr/bin/python3 -c 'import torch, torchaudio' >/dev/null 2>&1; then
  have_torch=1
else
  echo "run_logmel: torch/torchaudio cannot be imported by /usr/bin/python3; PyTorch part skipped" >&2
fi

for run in 1 2; do
  echo "run_logmel: run $run: trimodal" >&2
  tm=$("$BIN" --threads 1,2 --reps 3) || { echo "run_logmel: bench_logmel failed" >&2; exit 1; }
  echo "$tm" >&2
  th=""
  if [ $have_torch = 1 ]; then
    echo "run_logmel: run $run: torchaudio" >&2
    th=$(OMP_WAIT_POLICY=passive env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
         /usr/bin/python3 "$ROOT/scripts/bench_logmel_torch.py" --threads 1,2 --reps 2) ||
      echo "run_logmel: the PyTorch script failed" >&2
    echo "$th" >&2
  fi
  /usr/bin/python3 - "$run" "$tm" "$th" <<'PY'
import json, sys
run, tm, th = int(sys.argv[1]), sys.argv[2], sys.argv[3]
parse = lambda s: {d["threads"]: d for d in map(json.loads, filter(None, s.splitlines()))}
tm, th = parse(tm), parse(th)
for nt in sorted(tm):
    a, b = tm[nt], th.get(nt)
    print(json.dumps({
        "bench": "logmel_vs_torch", "run": run, "threads": nt, "audio_s": a["audio_s"],
        "n_mels": a["n_mels"], "n_fft": a["n_fft"], "hop": a["hop"], "frames": a["frames"],
        "trimodal_ms": a["ms"], "trimodal_x_realtime": a["x_realtime"],
        "under_5s": a["ms"] < 5000 if nt == 1 else None,
        "torch_ms": b["ms"] if b else None,
        "ratio": round(a["ms"] / b["ms"], 3) if b else None}), flush=True)
PY
done
