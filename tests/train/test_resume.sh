#!/usr/bin/env bash
# trimodal train through the CLI: a run killed with SIGKILL (at a chosen
# step, from outside at a random moment, and in the middle of writing a
# checkpoint) and resumed with --resume logs exactly the losses of the
# uninterrupted run; a crash while writing leaves the last good checkpoint
# loadable; usage errors, config changes, NaN stops, plots and --json.
# Skips (passes) while 'trimodal train' is not wired into the CLI.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
. "$src/tests/lib.sh"
ok() { # ok NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $name"; fi
}
if ! "$bin" train --help 2>/dev/null | grep -q -- --resume; then
  echo "train cli: 'trimodal train' is not wired into the CLI yet; skipped"
  exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export TRIMODAL_THREADS=${TRIMODAL_THREADS:-2}

# A tiny model with dropout (so the graph's random masks matter), two
# stages, checkpoints every 5 steps, validation every 10.
write_config() { # write_config FILE OUT LR
  cat >"$1" <<EOF
{"model": {"dim": 16, "heads": 2, "mlp_dim": 32, "dropout": 0.1,
   "encoders": [{"modality": "text", "layers": 1, "vocab_size": 48, "max_tokens": 6},
                {"modality": "vision", "layers": 1, "channels": 1, "image_size": 8, "patch_size": 4},
                {"modality": "audio", "layers": 1, "n_mels": 6, "n_frames": 8,
                 "stem": [{"kernel": 3, "padding": 1}]}],
   "fusion": {"type": "early", "layers": 1},
   "classifier": {"num_classes": 4}, "contrastive": {"dim": 8}},
 "out": "$2", "seed": 11, "batch_size": 8, "log_every": 1,
 "checkpoint": {"every": 5, "keep": 3},
 "validation": {"every": 10, "metric": "accuracy"},
 "data": {"synthetic": {"examples": 96, "val_examples": 24, "missing": 0.1},
          "modality_dropout": {"text": 0.1, "vision": 0.1, "audio": 0.1}},
 "stages": [
  {"name": "pre", "steps": 25, "objectives": {"classification": 1},
   "data": {"modalities": ["text", "vision"]}, "freeze": ["audio."],
   "optimizer": {"lr": $3, "warmup": 3, "schedule": "cosine"}},
  {"name": "joint", "steps": 25,
   "objectives": {"classification": 1, "contrastive": {"weight": 1, "schedule": "linear", "steps": 10}},
   "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "clip_grad_norm": 1}}]}
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

# --- usage and bad input
check help 0 "$bin" train --help;            contains help "--resume"; contains help "--max-steps"
check noargs 2 "$bin" train
check badopt 2 "$bin" train --config x.json --frobnicate
check badprogress 2 "$bin" train --config x.json --progress loud
check badsteps 2 "$bin" train --config x.json --max-steps 0
check missing 1 "$bin" train --config "$tmp/none.json"
printf '{"model": "m.json", "out": "o", "batch_size": 4, "data": {"synthetic": {}},\n "stages": [{"name": "a", "steps": 3, "objectives": {"classification": 1}, "optimizer": {"lr": "fast"}}]}' >"$tmp/bad.json"
check badconfig 1 "$bin" train --config "$tmp/bad.json"; contains badconfig '"stages\[0\].optimizer.lr" must be a number'

# --- the uninterrupted run
write_config "$tmp/run.json" "$tmp/full" 0.003
check full 0 "$bin" train --config "$tmp/run.json" --progress lines
contains full "finished after 50/50 steps"; contains full "validation at step 10"
contains full "step 50/50"
ok full-plots test -s "$tmp/full/plots/loss.svg" -a -s "$tmp/full/plots/lr.svg" -a -s "$tmp/full/plots/validation.svg"
ok full-svg grep -q "<svg" "$tmp/full/plots/loss.svg"
ok full-final test -s "$tmp/full/final/model.safetensors" -a -s "$tmp/full/best/model.safetensors"
ok full-latest grep -qx "step-000050" "$tmp/full/checkpoints/latest"
ok full-keep test "$(ls -d "$tmp"/full/checkpoints/step-* | wc -l)" -eq 3
check inspect-ckpt 0 "$bin" inspect "$tmp/full/checkpoints/step-000050"

# --- killed at step 23 (SIGKILL from inside, deterministic), resumed
write_config "$tmp/k1.json" "$tmp/k1" 0.003
check kill-23 137 env TM_TRAIN_DEBUG_KILL_AT_STEP=23 "$bin" train --config "$tmp/k1.json" --progress none
ok kill-23-latest grep -qx "step-000020" "$tmp/k1/checkpoints/latest"
ok kill-23-logged-past test "$(grep -c '"type":"train"' "$tmp/k1/metrics.jsonl")" -ge 23
check resume-23 0 "$bin" train --config "$tmp/k1.json" --resume --progress lines
contains resume-23 "resuming from"; contains resume-23 "step-000020"
same_losses resume-23 "$tmp/full" "$tmp/k1"

# --- killed from outside at whatever moment it is, resumed
write_config "$tmp/k2.json" "$tmp/k2" 0.003
TM_TRAIN_DEBUG_STEP_SLEEP_MS=15 "$bin" train --config "$tmp/k2.json" --progress none >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 400); do
  [ -f "$tmp/k2/checkpoints/latest" ] && grep -q "step-0000[1-9]" "$tmp/k2/checkpoints/latest" && break
  sleep 0.025
done
kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
ok kill-ext-before-end test ! -d "$tmp/k2/final"
check resume-ext 0 "$bin" train --config "$tmp/k2.json" --resume --progress none
same_losses resume-ext "$tmp/full" "$tmp/k2"

# --- killed while writing the third checkpoint (step 15): step 10 stays good
write_config "$tmp/k3.json" "$tmp/k3" 0.003
check crash-ckpt 137 env TM_TRAIN_DEBUG_CRASH_IN_CHECKPOINT=3 "$bin" train --config "$tmp/k3.json" --progress none
ok crash-latest grep -qx "step-000010" "$tmp/k3/checkpoints/latest"
ok crash-partial test -d "$tmp/k3/checkpoints/.tmp-step-000015" -a ! -d "$tmp/k3/checkpoints/step-000015"
check crash-loadable 0 "$bin" inspect "$tmp/k3/checkpoints/step-000010"
check resume-crash 0 "$bin" train --config "$tmp/k3.json" --resume --progress none
ok crash-cleaned test ! -d "$tmp/k3/checkpoints/.tmp-step-000015"
same_losses resume-crash "$tmp/full" "$tmp/k3"

# --- --max-steps, then --resume; --json summaries
write_config "$tmp/m.json" "$tmp/m" 0.003
check max-steps 0 "$bin" train --config "$tmp/m.json" --max-steps 7 --progress none --json
contains max-steps '"status":"interrupted"'; contains max-steps '"steps":7'
check max-resume 0 "$bin" train --config "$tmp/m.json" --resume --progress none --json
contains max-resume '"status":"finished"'; contains max-resume '"steps":50'
ok max-json /usr/bin/python3 -c 'import json,sys; json.loads(sys.argv[1])' "$out"
same_losses max-steps "$tmp/full" "$tmp/m"

# --- a changed config is refused on resume, unless forced; a fresh run
# does not overwrite checkpoints
write_config "$tmp/m.json" "$tmp/m" 0.004
check changed 1 "$bin" train --config "$tmp/m.json" --resume --progress none
contains changed "different run config"
check changed-force 0 "$bin" train --config "$tmp/m.json" --resume --force --progress none
check fresh-over 1 "$bin" train --config "$tmp/m.json" --progress none
contains fresh-over "pass --resume"

# --- the progress bar
write_config "$tmp/b.json" "$tmp/b" 0.003
check bar 0 "$bin" train --config "$tmp/b.json" --progress bar --max-steps 3 --no-plots
contains bar "ETA"; contains bar "samples/s"
ok bar-cr grep -q $'\r' <<<"$out"
ok no-plots test ! -d "$tmp/b/plots"

# --- a diverging run: NaN inputs from step 4 on stop it with a message
cat >"$tmp/nan.json" <<EOF
{"model": {"dim": 16, "heads": 2, "encoders": [{"modality": "vision", "layers": 1, "channels": 1,
   "image_size": 8, "patch_size": 4}], "fusion": {"type": "early", "layers": 1},
   "classifier": {"num_classes": 3}},
 "out": "$tmp/nan", "batch_size": 8,
 "data": {"synthetic": {"examples": 64, "nan_after": 24}},
 "stages": [{"name": "s", "steps": 10, "objectives": {"classification": 1}}]}
EOF
check nan 1 "$bin" train --config "$tmp/nan.json" --progress none
contains nan "step 4 (stage 's')"; contains nan "NaN"; contains nan "step-000003"
contains nan "diverged after 3/10 steps"
check nan-saved 0 "$bin" inspect "$tmp/nan/checkpoints/step-000003"

# --- a dataset manifest through the loader (the data layer's fixture: 2
# training rows, 1 validation row), killed and resumed
fix=$src/tests/data/data/manifest.jsonl tok=$src/tests/data/text/trained_tokenizer.json
if [ -f "$fix" ] && [ -f "$tok" ]; then
  cat >"$tmp/pre.json" <<EOF
{"text": {"max_length": 8}, "image": {"size": 8, "height": 8, "width": 8, "channels": 1,
 "mean": [0.5], "std": [0.5]}, "audio": {"n_mels": 8, "frames": 12}}
EOF
  write_manifest_config() { # FILE OUT
    cat >"$1" <<EOF
{"model": {"dim": 16, "heads": 2, "dropout": 0.1,
   "encoders": [{"modality": "text", "layers": 1, "vocab_size": 512, "max_tokens": 8},
                {"modality": "vision", "layers": 1, "channels": 1, "image_size": 8, "patch_size": 4},
                {"modality": "audio", "layers": 1, "n_mels": 8, "n_frames": 12,
                 "stem": [{"kernel": 3, "padding": 1}]}],
   "fusion": {"type": "early", "layers": 1}, "classifier": {"num_classes": 3},
   "contrastive": {"dim": 8}},
 "out": "$2", "batch_size": 2, "checkpoint": {"every": 2}, "validation": {"every": 3},
 "data": {"manifest": "$fix", "tokenizer": "$tok", "preprocess": "$tmp/pre.json"},
 "stages": [{"name": "s", "steps": 8, "objectives": {"classification": 1, "contrastive": 1}}]}
EOF
  }
  write_manifest_config "$tmp/mf1.json" "$tmp/mf1"
  write_manifest_config "$tmp/mf2.json" "$tmp/mf2"
  check manifest 0 "$bin" train --config "$tmp/mf1.json" --progress none
  contains manifest "finished after 8/8 steps"
  ok manifest-folder test -s "$tmp/mf1/final/tokenizer.json" -a -s "$tmp/mf1/final/preprocess.json"
  check manifest-kill 137 env TM_TRAIN_DEBUG_KILL_AT_STEP=5 "$bin" train --config "$tmp/mf2.json" --progress none
  check manifest-resume 0 "$bin" train --config "$tmp/mf2.json" --resume --progress none
  same_losses manifest-resume "$tmp/mf1" "$tmp/mf2"
  # captions (from "transcript") and BERT-style masked tokens from the manifest;
  # a resumed run repeats the masks; a caption vocabulary too small is refused
  write_caption_config() { # FILE OUT CAPTION_EXTRA
    cat >"$1" <<EOF
{"model": {"dim": 16, "heads": 2,
   "encoders": [{"modality": "text", "layers": 1, "vocab_size": 512, "max_tokens": 8},
                {"modality": "vision", "layers": 1, "channels": 1, "image_size": 8, "patch_size": 4},
                {"modality": "audio", "layers": 1, "n_mels": 8, "n_frames": 12,
                 "stem": [{"kernel": 3, "padding": 1}]}],
   "fusion": {"type": "early", "layers": 1}, "classifier": {"num_classes": 3},
   "caption": {"layers": 1, "max_tokens": 8, "bos_id": 1, "eos_id": 2, "pad_id": 0$3},
   "masked_token": {"mask_id": 3}},
 "out": "$2", "batch_size": 2, "checkpoint": {"every": 2},
 "data": {"manifest": "$fix", "tokenizer": "$tok", "preprocess": "$tmp/pre.json"},
 "stages": [{"name": "s", "steps": 5, "objectives": {"classification": 1, "caption": 1, "masked": 1}}]}
EOF
  }
  write_caption_config "$tmp/c1.json" "$tmp/c1" ""
  write_caption_config "$tmp/c2.json" "$tmp/c2" ""
  write_caption_config "$tmp/c3.json" "$tmp/c3" ', "vocab_size": 5'
  check caption 0 "$bin" train --config "$tmp/c1.json" --progress none --no-plots
  ok caption-finite grep -q '"caption":[0-9]' "$tmp/c1/metrics.jsonl"
  ok masked-finite grep -q '"masked":[0-9]' "$tmp/c1/metrics.jsonl"
  check caption-stop 0 "$bin" train --config "$tmp/c2.json" --progress none --no-plots --max-steps 3
  check caption-resume 0 "$bin" train --config "$tmp/c2.json" --progress none --no-plots --resume
  same_losses caption-resume "$tmp/c1" "$tmp/c2"
  check caption-vocab 1 "$bin" train --config "$tmp/c3.json" --progress none --no-plots
  contains caption-vocab 'outside the caption vocabulary (5 ids'
else
  echo "train cli: the data fixture is missing; manifest runs skipped"
fi

echo "train cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
