#!/bin/bash
# Data-parallel training: `mpirun -np 2 trimodal train` with the same global
# batch gives the losses of one process (1e-5 relative) for the
# classification, contrastive (over the whole global batch, with missing
# modalities), caption and masked objectives, with dropout and drop-path
# (each rank draws the masks of its rows of the global batch); a 2-process
# run resumes exactly; a run moves between 1 and 2 processes at a
# checkpoint; a batch that does not split over the processes is refused.
# Skips (exit 0, with a message) when mpirun or python3 is absent or the
# build has no MPI.
set -u
bin="$TM_BUILD_DIR/bin/trimodal"
cmp="$TM_SOURCE_DIR/tests/train/compare_metrics.py"
if ! command -v mpirun >/dev/null 2>&1; then
  echo "SKIP: mpirun not found (apt-get install openmpi-bin libopenmpi-dev, then rebuild)"
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "SKIP: python3 not found (the metrics comparison needs it)"
  exit 0
fi
if ! ldd "$bin" 2>/dev/null | grep -q 'libmpi'; then
  echo "SKIP: this build has no MPI (TM_MPI off, or MPI not found by CMake)"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# a container without network interfaces: shared memory only, no launcher ssh
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_plm=isolated OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_pml=ob1
export TRIMODAL_THREADS=1
# (under AddressSanitizer, OpenMPI's own allocations kept until exit would
# be reported as leaks: leak checking is off for the mpirun runs only)
mpi() {
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    timeout 120 mpirun -np 2 --oversubscribe --bind-to none -x ASAN_OPTIONS -x TRIMODAL_THREADS "$@"
}
fail=0
pass=0
ok() { pass=$((pass+1)); }
bad() { echo "FAIL: $*"; fail=$((fail+1)); }

cat >"$tmp/run.json" <<JSON
{"model": {"dim": 16, "heads": 2, "mlp_dim": 32, "dropout": 0.1, "drop_path": 0.2,
   "encoders": [{"modality": "text", "layers": 1, "vocab_size": 48, "max_tokens": 6},
                {"modality": "vision", "layers": 1, "channels": 1, "image_size": 8, "patch_size": 4}],
   "fusion": {"type": "early", "layers": 1},
   "classifier": {"num_classes": 4}, "contrastive": {"dim": 8},
   "caption": {"layers": 1, "max_tokens": 7, "bos_id": 2, "eos_id": 3, "pad_id": 0},
   "masked_token": {"mask_id": 1}},
 "out": "$tmp/one", "seed": 11, "batch_size": 8, "log_every": 1, "allreduce_bucket_mb": 0.002,
 "checkpoint": {"every": 4, "keep": 2},
 "validation": {"every": 6, "metric": "loss"},
 "data": {"synthetic": {"examples": 40, "val_examples": 20}},
 "stages": [{"name": "a", "steps": 8, "objectives": {"classification": 1, "contrastive": 0.8, "caption": 0.5, "masked": 0.7},
             "optimizer": {"lr": 0.01}},
            {"name": "b", "steps": 6, "objectives": {"classification": 1, "contrastive": 1},
             "data": {"modality_dropout": {"text": 0.3, "vision": 0.3}},
             "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "clip_grad_norm": 1}}]}
JSON

"$bin" train --config "$tmp/run.json" --progress none --no-plots >"$tmp/one.log" 2>&1 \
  && ok || { bad "one process"; cat "$tmp/one.log"; }
mpi "$bin" train --config "$tmp/run.json" --out "$tmp/two" --progress none --no-plots \
  >"$tmp/two.log" 2>&1 && ok || { bad "mpirun -np 2"; cat "$tmp/two.log"; }
if python3 "$cmp" "$tmp/one/metrics.jsonl" "$tmp/two/metrics.jsonl" 1e-5; then ok
else bad "losses of 2 processes differ from 1 process"; fi
grep -q '"world":2,"local_batch":4' "$tmp/two/metrics.jsonl" && ok || bad "the log does not show 2 processes"
# rank 0 alone reports: one summary
[ "$(grep -c '^trimodal train: finished' "$tmp/two.log")" = 1 ] && ok || { bad "summaries"; cat "$tmp/two.log"; }

# resume with the same world size: stop at step 5, continue, compare
mpi "$bin" train --config "$tmp/run.json" --out "$tmp/res" --progress none --no-plots \
  --max-steps 5 >"$tmp/r1.log" 2>&1 && ok || { bad "mpirun --max-steps"; cat "$tmp/r1.log"; }
mpi "$bin" train --config "$tmp/run.json" --out "$tmp/res" --progress none --no-plots \
  --resume >"$tmp/r2.log" 2>&1 && ok || { bad "mpirun --resume"; cat "$tmp/r2.log"; }
if python3 "$cmp" "$tmp/two/metrics.jsonl" "$tmp/res/metrics.jsonl" 0; then ok
else bad "the resumed 2-process run differs"; fi

# a one-process run resumed on two processes (and back): the same losses
"$bin" train --config "$tmp/run.json" --out "$tmp/mix" --progress none --no-plots \
  --max-steps 5 >"$tmp/m1.log" 2>&1 && ok || { bad "one process --max-steps"; cat "$tmp/m1.log"; }
mpi "$bin" train --config "$tmp/run.json" --out "$tmp/mix" --progress none --no-plots \
  --max-steps 10 --resume >"$tmp/m2.log" 2>&1 && ok || { bad "resume on 2"; cat "$tmp/m2.log"; }
"$bin" train --config "$tmp/run.json" --out "$tmp/mix" --progress none --no-plots \
  --resume >"$tmp/m3.log" 2>&1 && ok || { bad "resume on 1"; cat "$tmp/m3.log"; }
if python3 "$cmp" "$tmp/one/metrics.jsonl" "$tmp/mix/metrics.jsonl" 1e-5; then ok
else bad "a run moved between 1 and 2 processes differs from one process"; fi

# a global batch that does not split evenly
sed 's/"batch_size": 8/"batch_size": 7/' "$tmp/run.json" >"$tmp/odd.json"
mpi "$bin" train --config "$tmp/odd.json" --out "$tmp/odd" --progress none >"$tmp/odd.log" 2>&1
[ $? -ne 0 ] && grep -q 'does not split evenly over 2 processes' "$tmp/odd.log" && ok \
  || { bad "odd batch not refused clearly"; cat "$tmp/odd.log"; }

echo "test_mpi: $pass passed, $fail failed"
[ $fail -eq 0 ]
