#!/usr/bin/env bash
# Encrypted inputs read directly by the trainer, the evaluator and the
# tokenizer trainer (issue 9, docs/security.md): a dataset folder (manifest,
# images, sounds, tokenizer.json, preprocess.json) and a model folder are
# encrypted with `trimodal encrypt`; training a few steps from the encrypted
# copies logs the same losses as from the plain ones, the trained models
# evaluate to the same numbers, a tokenizer trained from an encrypted corpus
# is the same file, and a missing or wrong key fails with a clear message.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
. "$src/tests/lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
unset TRIMODAL_KEY TRIMODAL_KEY_FILE TRIMODAL_LIMITS
. "$src/tests/eval/eval_fixture.sh"
make_fixture "$tmp/plain" || { echo "FAIL fixture"; exit 1; }
cp "$tmp/plain/model/tokenizer.json" "$tmp/plain/model/preprocess.json" "$tmp/plain/data/"
"$bin" encrypt --gen-key "$tmp/k" >/dev/null
"$bin" encrypt --gen-key "$tmp/k2" >/dev/null

write_run() { # write_run FILE ROOT OUT: a 4-step run over ROOT/model and ROOT/data
  cat >"$1" <<EOF
{"model": "$2/model", "out": "$3", "seed": 5, "batch_size": 8, "log_every": 1,
 "data": {"manifest": "$2/data/manifest.jsonl", "train_split": "test", "val_split": "test",
          "tokenizer": "$2/data/tokenizer.json", "preprocess": "$2/data/preprocess.json",
          "workers": 1},
 "stages": [{"name": "s", "steps": 4, "objectives": {"classification": 1},
             "optimizer": {"lr": 0.003}}]}
EOF
}
# the losses and metrics of a run, without timings and paths
losses() { sed -e 's/,"samples_per_s".*$//' -e 's/"time_s":[^,}]*//' "$1/metrics.jsonl"; }

# encrypted copies of the model folder and of the whole dataset folder
mkdir -p "$tmp/enc"
check enc-model 0 "$bin" encrypt --key-file "$tmp/k" -o "$tmp/enc/model" "$tmp/plain/model"
check enc-data 0 "$bin" encrypt --key-file "$tmp/k" -o "$tmp/enc/data" "$tmp/plain/data"
for f in model/config.json model/model.safetensors data/manifest.jsonl data/tokenizer.json \
         data/preprocess.json data/img/3.pgm data/wav/3.wav; do
  same "encrypted-$f" "$(head -c 5 "$tmp/enc/$f")" TMENC
done

# training: the same losses from the plain and the encrypted inputs
write_run "$tmp/plain.json" "$tmp/plain" "$tmp/run-plain"
write_run "$tmp/enc.json" "$tmp/enc" "$tmp/run-enc"
check train-plain 0 "$bin" train --config "$tmp/plain.json" --progress none
check train-nokey 1 "$bin" train --config "$tmp/enc.json" --progress none
contains train-nokey "is encrypted; set TRIMODAL_KEY_FILE"
TRIMODAL_KEY_FILE="$tmp/k2" check train-wrong 1 "$bin" train --config "$tmp/enc.json" --progress none
contains train-wrong "wrong key"
rm -rf "$tmp/run-enc"
TRIMODAL_KEY_FILE="$tmp/k" check train-enc 0 "$bin" train --config "$tmp/enc.json" --progress none
same train-steps "$(grep -c '"type":"train"' "$tmp/run-enc/metrics.jsonl")" 4
same train-losses "$(losses "$tmp/run-enc")" "$(losses "$tmp/run-plain")"
# both runs' final weights are the same
check final-same 0 cmp "$tmp/run-plain/final/model.safetensors" "$tmp/run-enc/final/model.safetensors"

# evaluation of the trained model on the plain and on the encrypted data
strip() { sed 's#"manifest":"[^"]*"##'; }
check eval-plain 0 "$bin" eval --model "$tmp/run-plain/final" --data "$tmp/plain/data/manifest.jsonl" --json --quiet
want=$(strip <<<"$out")
contains eval-plain '"accuracy"'
check encrypt-final 0 "$bin" encrypt --key-file "$tmp/k" --in-place "$tmp/run-enc/final"
TRIMODAL_KEY_FILE="$tmp/k" check eval-enc 0 "$bin" eval --model "$tmp/run-enc/final" --data "$tmp/enc/data/manifest.jsonl" --json --quiet
same eval-same "$(strip <<<"$out")" "$want"
TRIMODAL_KEY_FILE="$tmp/k2" check eval-wrong 1 "$bin" eval --model "$tmp/run-enc/final" --data "$tmp/enc/data/manifest.jsonl" --json --quiet
contains eval-wrong "wrong key"

# a tokenizer trained from an encrypted corpus is the same file
check tok-plain 0 "$bin" tokenizer train --vocab 300 -o "$tmp/tok-plain.json" "$tmp/plain/corpus.txt"
check enc-corpus 0 "$bin" encrypt --key-file "$tmp/k" -o "$tmp/corpus.enc" "$tmp/plain/corpus.txt"
check tok-nokey 1 "$bin" tokenizer train --vocab 300 -o "$tmp/tok-x.json" "$tmp/corpus.enc"
contains tok-nokey "is encrypted; set TRIMODAL_KEY_FILE"
TRIMODAL_KEY_FILE="$tmp/k" check tok-enc 0 "$bin" tokenizer train --vocab 300 -o "$tmp/tok-enc.json" "$tmp/corpus.enc"
check tok-same 0 cmp "$tmp/tok-plain.json" "$tmp/tok-enc.json"

echo "crypt_train: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
