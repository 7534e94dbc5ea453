#!/usr/bin/env bash
# f16 training through the CLI: a run whose loss scaler is busy (a high
# initial scale backs off, then grows every 4 good steps and overflows
# again) is killed with SIGKILL between checkpoints and resumed with
# --resume; the resumed log (losses, loss scales, skipped steps) equals the
# uninterrupted run's bit for bit, so the scaler's state (scale, good steps
# since the last change, skipped counts) survived in the checkpoint. Also a
# bf16 run through the CLI, and the progress line showing the scale.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
. "${TM_SOURCE_DIR:?}/tests/lib.sh" # pass, fail, check, contains
ok() { # ok NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $name"; fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export TRIMODAL_THREADS=${TRIMODAL_THREADS:-2}

write_config() { # write_config FILE OUT DTYPE
  cat >"$1" <<EOF
{"model": {"dim": 16, "heads": 2, "mlp_dim": 32, "dropout": 0.1,
   "encoders": [{"modality": "text", "layers": 1, "vocab_size": 48, "max_tokens": 6},
                {"modality": "vision", "layers": 1, "channels": 1, "image_size": 8, "patch_size": 4}],
   "fusion": {"type": "early", "layers": 1},
   "classifier": {"num_classes": 4}, "contrastive": {"dim": 8}},
 "out": "$2", "seed": 7, "batch_size": 8, "log_every": 1, "dtype": "$3",
 "loss_scale": {"init": 16777216, "growth_interval": 4},
 "checkpoint": {"every": 7, "keep": 2},
 "validation": {"every": 10, "metric": "accuracy"},
 "data": {"synthetic": {"examples": 96, "val_examples": 16}},
 "stages": [
  {"name": "a", "steps": 14, "objectives": {"classification": 1},
   "optimizer": {"lr": 0.003, "warmup": 2}},
  {"name": "b", "steps": 16, "objectives": {"classification": 1, "contrastive": 0.5},
   "optimizer": {"lr": 0.002}}]}
EOF
}
losses() { sed 's/,"samples_per_s".*$//' "$1/metrics.jsonl"; }
same_losses() { # same_losses NAME DIR_A DIR_B
  if diff <(losses "$2") <(losses "$3") >"$tmp/diff" 2>&1 && [ -s "$2/metrics.jsonl" ]; then
    pass=$((pass+1))
  else
    fail=$((fail+1)); echo "FAIL $1: logs differ:"; head -20 "$tmp/diff"
  fi
}

# --- the uninterrupted f16 run
write_config "$tmp/full.json" "$tmp/full" f16
check full 0 "$bin" train --config "$tmp/full.json" --progress lines --json
contains full '"status":"finished"'; contains full '"skipped_steps":'
contains full 'scale '; contains full ' skipped'
# the scaler is busy on both sides of the kill below: steps skipped before
# the kills (the initial back-off) and after it (overflow after growth)
n_before=$(head -n 14 "$tmp/full/metrics.jsonl" | grep -c '"skipped":true')
n_after=$(tail -n +15 "$tmp/full/metrics.jsonl" | grep -c '"skipped":true')
ok busy-before test "$n_before" -ge 1
ok busy-after test "$n_after" -ge 1
ok dtype-logged grep -q '"dtype":"f16"' "$tmp/full/metrics.jsonl"
ok scaler-saved grep -q '"loss_scaler"' "$tmp/full/checkpoints/step-000030/trainer.json"

# --- killed at step 24 (after the checkpoint at 21, inside stage b, where
# the scaler is counting good steps towards its next growth), resumed
write_config "$tmp/k.json" "$tmp/k" f16
check kill 137 env TM_TRAIN_DEBUG_KILL_AT_STEP=24 "$bin" train --config "$tmp/k.json" --progress none
ok kill-latest grep -qx "step-000021" "$tmp/k/checkpoints/latest"
ok kill-counting bash -c "! grep -q '\"good_steps\":.0,' '$tmp/k/checkpoints/step-000021/trainer.json'"
check resume 0 "$bin" train --config "$tmp/k.json" --resume --progress none
same_losses resume-f16 "$tmp/full" "$tmp/k"

# --- killed in stage a (after the checkpoint at 7, while backing off), resumed
write_config "$tmp/k2.json" "$tmp/k2" f16
check kill2 137 env TM_TRAIN_DEBUG_KILL_AT_STEP=9 "$bin" train --config "$tmp/k2.json" --progress none
check resume2 0 "$bin" train --config "$tmp/k2.json" --resume --progress none
same_losses resume-f16-a "$tmp/full" "$tmp/k2"

# --- bf16 through the CLI: no scaler, no skipped steps, losses near f32's
write_config "$tmp/b.json" "$tmp/b" bf16
check bf16 0 "$bin" train --config "$tmp/b.json" --progress none --json
ok bf16-no-scale bash -c "! grep -q '\"loss_scale\"' '$tmp/b/metrics.jsonl'"
ok bf16-dtype grep -q '"dtype":"bf16"' "$tmp/b/metrics.jsonl"

echo "train precision cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
