#!/usr/bin/env bash
# "augment" in a run config, end to end through `trimodal train` on a tiny
# manifest (PGM images, WAV sounds, text; tests/eval/eval_fixture.sh): with
# the learning rate 0 the weights never change, so a step's loss differs
# only through what the loader fed. Augmentation changes the loss (each
# modality's on its own too); two runs with the same seed log the same
# losses, whatever the worker count; validation is never augmented; a
# stage's "augment" replaces the run's and null turns it off; the run.json
# the trainer writes runs again to the same losses, also when stopped and
# resumed; bad values fail with the key path. KEEP=1 keeps the temporary
# folder (for debugging). One kernel thread: these runs are tiny, and on a
# busy machine more threads only wait for each other.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
. "$src/tests/lib.sh"
. "$src/tests/eval/eval_fixture.sh"
tmp=$(mktemp -d); [ -n "${KEEP:-}" ] || trap 'rm -rf "$tmp"' EXIT
export TRIMODAL_THREADS=${TRIMODAL_THREADS:-1}

make_fixture "$tmp" || { echo "FAIL fixture"; exit 1; }
# rows 0-15 train, 16-23 val
awk '{ sub(/"split": "test"/, NR <= 16 ? "\"split\": \"train\"" : "\"split\": \"val\""); print }' \
  "$tmp/data/manifest.jsonl" >"$tmp/data/train.jsonl"

ALL='{"image": {"crop": {"scale": [0.5, 1]}, "flip": 0.5, "rotate": 15,
                "jitter": {"brightness": 0.3}, "erase": true},
      "audio": {"specaug": true, "wave": {"gain": true, "noise": {"snr_db": [5, 20]}}},
      "text": {"delete": 0.3}}'
IMAGE='{"image": {"rotate": 30, "crop": {"scale": [0.3, 0.6]}}}'
AUDIO='{"audio": {"specaug": {"n_time_masks": 2, "time_param": 6}}}'
TEXT='{"text": {"delete": 0.5}}'
WAVE='{"audio": {"wave": {"gain": {"p": 1, "db": [-12, -6]}, "noise": {"p": 1, "snr_db": [5, 10]}}}}'
# config NAME WORKERS AUGMENT [DATA_A ... DATA_E]: $tmp/NAME.json, out
# $tmp/NAME (AUGMENT "" leaves the key out); stages a to e of one step
# each, lr 0, with those "data" objects
config() {
  local aug=""
  [ -n "$3" ] && aug=", \"augment\": $3"
  cat >"$tmp/$1.json" <<EOF
{"model": "$tmp/model", "out": "$tmp/$1", "seed": 5, "batch_size": 8, "log_every": 1,
 "data": {"manifest": "$tmp/data/train.jsonl", "workers": $2$aug},
 "stages": [
  {"name": "a", "steps": 1, "objectives": {"classification": 1}, "optimizer": {"lr": 0}, "data": ${4:-{\}}},
  {"name": "b", "steps": 1, "objectives": {"classification": 1}, "optimizer": {"lr": 0}, "data": ${5:-{\}}},
  {"name": "c", "steps": 1, "objectives": {"classification": 1}, "optimizer": {"lr": 0}, "data": ${6:-{\}}},
  {"name": "d", "steps": 1, "objectives": {"classification": 1}, "optimizer": {"lr": 0}, "data": ${7:-{\}}},
  {"name": "e", "steps": 1, "objectives": {"classification": 1}, "optimizer": {"lr": 0}, "data": ${8:-{\}}}]}
EOF
}
train() { # train NAME WORKERS AUGMENT [DATA_A ...]
  config "$@"
  check "train-$1" 0 "$bin" train --config "$tmp/$1.json" --progress none --no-plots
}
# loss STEP NAME: the training loss logged at STEP (stage a is step 1, ...)
loss() { grep "\"type\":\"train\",\"step\":$1," "$tmp/$2/metrics.jsonl" | grep -o '"loss":[^,]*'; }
val() { grep '"type":"val"' "$tmp/$1/metrics.jsonl" | grep -o '"loss":[^,]*' | tr '\n' ' '; }
train_losses() {
  grep '"type":"train"' "$tmp/$1/metrics.jsonl" | grep -o '"step":[0-9]*\|"loss":[^,]*' | tr '\n' ' '
}
same_nonempty() { # same_nonempty NAME A B: A is not empty and equals B
  if [ -n "$2" ] && [ "$2" = "$3" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $1: '$2' != '$3'"; fi
}
differ() { # differ NAME A B
  if [ -n "$2" ] && [ -n "$3" ] && [ "$2" != "$3" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $1: '$2' vs '$3'"; fi
}

train off 2 ""
train on 2 "$ALL"
train on-w1 1 "$ALL"
differ on-vs-off "$(loss 1 on)" "$(loss 1 off)"
# the same seed: the same losses, with 1 worker or 2
same_nonempty same-seed "$(train_losses on)" "$(train_losses on-w1)"
# validation (rows 16-23, after each stage) is never augmented: the same
# weights, the same losses
same_nonempty val-not-augmented "$(val on)" "$(val off)"
# a stage's object replaces the run's; null turns augmentation off. Each
# modality's augmentation on its own changes what the model sees.
train mix 2 "$ALL" "{\"augment\": $IMAGE}" "{\"augment\": $AUDIO}" "{\"augment\": $TEXT}" \
  '{"augment": null}' "{\"augment\": $WAVE}"
differ image-only "$(loss 1 mix)" "$(loss 1 off)"
differ image-only-not-all "$(loss 1 mix)" "$(loss 1 on)"
differ audio-only "$(loss 2 mix)" "$(loss 2 off)"
differ audio-only-not-all "$(loss 2 mix)" "$(loss 2 on)"
differ text-only "$(loss 3 mix)" "$(loss 3 off)"
differ text-only-not-all "$(loss 3 mix)" "$(loss 3 on)"
same_nonempty stage-null "$(loss 4 mix)" "$(loss 4 off)"
differ stage-null-not-all "$(loss 4 mix)" "$(loss 4 on)"
differ wave-only "$(loss 5 mix)" "$(loss 5 off)"
differ wave-only-not-all "$(loss 5 mix)" "$(loss 5 on)"
# the run.json the trainer wrote keeps all of it; run again from it,
# stopped after step 3 and resumed: the losses of the uninterrupted run
ok=0; grep -q '"augment":.null' "$tmp/mix/run.json" && grep -q '"specaug":' "$tmp/mix/run.json" &&
  grep -q '"snr_db":' "$tmp/mix/run.json" && ok=1
if [ $ok -eq 1 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL run.json lacks augment"; fi
check rerun 0 "$bin" train --config "$tmp/mix/run.json" --out "$tmp/rerun" --progress none --no-plots \
  --max-steps 3
check resume 0 "$bin" train --config "$tmp/mix/run.json" --out "$tmp/rerun" --progress none --no-plots \
  --resume
same_nonempty rerun-losses "$(train_losses mix)" "$(train_losses rerun)"

# bad values fail before training, naming the key
config bad1 2 '{"image": {"flip": 2}}'
check bad-flip 1 "$bin" train --config "$tmp/bad1.json" --progress none
contains bad-flip '"data.augment.image.flip" is 2; it must be in \[0, 1\]'
config bad2 2 '{"image": {"crop": true}}' '{}' '{"augment": {"audio": {"specaug": {"masks": 2}}}}'
check bad-stage 1 "$bin" train --config "$tmp/bad2.json" --progress none
contains bad-stage 'unknown key "stages\[1\].data.augment.audio.specaug.masks"'
sed 's/"workers": 2/"workers": 2, "val_split": "train"/' "$tmp/on.json" >"$tmp/bad3.json"
check bad-val 1 "$bin" train --config "$tmp/bad3.json" --progress none
contains bad-val 'would augment validation'

echo "augment cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
