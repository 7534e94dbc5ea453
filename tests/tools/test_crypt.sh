#!/usr/bin/env bash
# trimodal encrypt / decrypt end to end: key files, usage errors, round
# trips, a whole encrypted model folder and encrypted dataset (manifest,
# images, sounds) read directly by `trimodal classify` and `trimodal eval`
# with the same answers as the plain ones, and clear errors for a missing
# key, a wrong key, a truncated and a tampered file.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
. "$src/tests/lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
unset TRIMODAL_KEY TRIMODAL_KEY_FILE
. "$src/tests/eval/eval_fixture.sh"
make_fixture "$tmp" || { echo "FAIL fixture"; exit 1; }
m="$tmp/model" d="$tmp/data/manifest.jsonl"

# help and usage
check help-enc 0 "$bin" encrypt --help;   contains help-enc "--gen-key F"
check help-dec 0 "$bin" decrypt --help;   contains help-dec "--in-place"
check key-arg 2 "$bin" encrypt --key 00 -o "$tmp/x" "$d"; contains key-arg "never taken from the command line"
check no-key 2 "$bin" encrypt -o "$tmp/x" "$d";           contains no-key "TRIMODAL_KEY_FILE"
check no-out 2 "$bin" encrypt --key-file "$tmp/k" "$d";   contains no-out "-o OUT or --in-place"

# keys
check gen-key 0 "$bin" encrypt --gen-key "$tmp/k"
same key-mode "$(stat -c %a "$tmp/k")" 600
same key-size "$(stat -c %s "$tmp/k")" 65
check gen-again 1 "$bin" encrypt --gen-key "$tmp/k"; contains gen-again "never overwritten"
"$bin" encrypt --gen-key "$tmp/k2" >/dev/null
check bad-key 1 "$bin" encrypt --key-file "$d" -o "$tmp/x" "$d"; contains bad-key "neither 32 raw bytes nor 64 hex"

# a file, with the key file given, then from the environment
check enc-file 0 "$bin" encrypt --key-file "$tmp/k" -o "$tmp/m.enc" "$d"
same enc-magic "$(head -c 5 "$tmp/m.enc")" TMENC
check dec-file 0 env TRIMODAL_KEY_FILE="$tmp/k" "$bin" decrypt -o "$tmp/m.dec" "$tmp/m.enc"
check round-trip 0 cmp "$d" "$tmp/m.dec"
check dec-hex 0 env TRIMODAL_KEY="$(cat "$tmp/k")" "$bin" decrypt --json -o "$tmp/m.dec2" "$tmp/m.enc"
contains dec-hex '"decrypted": 1'
check wrong-key 1 "$bin" decrypt --key-file "$tmp/k2" -o "$tmp/m.bad" "$tmp/m.enc"; contains wrong-key "wrong key"
same wrong-key-nothing "$(ls "$tmp/m.bad" 2>/dev/null)" ""
size=$(stat -c %s "$tmp/m.enc")
head -c $((size - 5)) "$tmp/m.enc" > "$tmp/cut.enc"
check truncated 1 "$bin" decrypt --key-file "$tmp/k" -o "$tmp/cut.dec" "$tmp/cut.enc"; contains truncated "cut.enc"
same truncated-nothing "$(ls "$tmp/cut.dec" 2>/dev/null)" ""
cp "$tmp/m.enc" "$tmp/flip.enc"
printf '\x5a' | dd of="$tmp/flip.enc" bs=1 seek=100 conv=notrunc 2>/dev/null
check tampered 1 "$bin" decrypt --key-file "$tmp/k" -o "$tmp/flip.dec" "$tmp/flip.enc"; contains tampered "authentication"

# a whole model folder, and the dataset (manifest, images, sounds)
want_cls=$("$bin" classify --model "$m" --text "a red cat" --image "$tmp/data/img/3.pgm" --audio "$tmp/data/wav/3.wav" --json 2>&1)
want_eval=$("$bin" eval --model "$m" --data "$d" --json --quiet 2>&1)
check enc-model 0 "$bin" encrypt --key-file "$tmp/k" -o "$tmp/model.enc" "$m"
for f in config.json model.safetensors tokenizer.json preprocess.json; do
  same "enc-$f" "$(head -c 5 "$tmp/model.enc/$f")" TMENC
done
cp -r "$tmp/data" "$tmp/data.enc"
check enc-data 0 "$bin" encrypt --key-file "$tmp/k" --in-place "$tmp/data.enc"
same enc-img "$(head -c 5 "$tmp/data.enc/img/3.pgm")" TMENC
same enc-wav "$(head -c 5 "$tmp/data.enc/wav/3.wav")" TMENC
check cls-nokey 1 "$bin" classify --model "$tmp/model.enc" --text "a red cat" --json
contains cls-nokey "is encrypted; set TRIMODAL_KEY_FILE"
export TRIMODAL_KEY_FILE="$tmp/k"
check cls-enc 0 "$bin" classify --model "$tmp/model.enc" --text "a red cat" --image "$tmp/data.enc/img/3.pgm" --audio "$tmp/data.enc/wav/3.wav" --json
same cls-same "$out" "$want_cls"
check eval-enc 0 "$bin" eval --model "$tmp/model.enc" --data "$tmp/data.enc/manifest.jsonl" --json --quiet
same eval-same "$(sed 's#"manifest":"[^"]*"##' <<<"$out")" "$(sed 's#"manifest":"[^"]*"##' <<<"$want_eval")"
TRIMODAL_KEY_FILE="$tmp/k2" check cls-wrong 1 "$bin" classify --model "$tmp/model.enc" --text "a red cat" --json
contains cls-wrong "wrong key"
# a tampered weight file: an error naming it, never an answer
cp -r "$tmp/model.enc" "$tmp/model.bad"
printf '\x01' | dd of="$tmp/model.bad/model.safetensors" bs=1 seek=5000 conv=notrunc 2>/dev/null
check cls-tampered 1 "$bin" classify --model "$tmp/model.bad" --text "a red cat" --json
contains cls-tampered "model.safetensors"
# decrypted back in place: identical to the original folder
check dec-model 0 "$bin" decrypt --in-place "$tmp/model.enc"
check dec-same 0 diff -r "$m" "$tmp/model.enc"
unset TRIMODAL_KEY_FILE

# a plain model whose weights are damaged: the embedded checksum names it
cp -r "$m" "$tmp/model.flip"
printf '\x01' | dd of="$tmp/model.flip/model.safetensors" bs=1 seek=3000 conv=notrunc 2>/dev/null
check cls-corrupt 1 "$bin" classify --model "$tmp/model.flip" --text "a red cat" --json
contains cls-corrupt "corrupt"

# a training run resumed from an encrypted checkpoint logs the losses of
# the uninterrupted run
if "$bin" train --help 2>/dev/null | grep -q -- --resume; then
  write_config() { # write_config FILE OUT
    cat >"$1" <<EOF
{"model": {"dim": 16, "heads": 2, "mlp_dim": 32,
   "encoders": [{"modality": "text", "layers": 1, "vocab_size": 48, "max_tokens": 6},
                {"modality": "vision", "layers": 1, "channels": 1, "image_size": 8, "patch_size": 4}],
   "fusion": {"type": "early", "layers": 1}, "classifier": {"num_classes": 4}},
 "out": "$2", "seed": 5, "batch_size": 8, "log_every": 1, "checkpoint": {"every": 4, "keep": 2},
 "data": {"synthetic": {"examples": 64, "val_examples": 8}},
 "stages": [{"name": "s", "steps": 10, "objectives": {"classification": 1},
             "optimizer": {"lr": 0.003}}]}
EOF
  }
  losses() { sed 's/,"samples_per_s".*$//' "$1/metrics.jsonl"; }
  write_config "$tmp/full.json" "$tmp/full"
  write_config "$tmp/k.json" "$tmp/run"
  check train-full 0 "$bin" train --config "$tmp/full.json" --progress none
  check train-kill 137 env TM_TRAIN_DEBUG_KILL_AT_STEP=7 "$bin" train --config "$tmp/k.json" --progress none
  check enc-ckpt 0 "$bin" encrypt --key-file "$tmp/k" --in-place "$tmp/run/checkpoints"
  same enc-ckpt-state "$(head -c 5 "$tmp/run/checkpoints/step-000004/model.safetensors")" TMENC
  check resume-nokey 1 "$bin" train --config "$tmp/k.json" --resume --progress none
  contains resume-nokey "TRIMODAL_KEY_FILE"
  check resume-enc 0 env TRIMODAL_KEY_FILE="$tmp/k" "$bin" train --config "$tmp/k.json" --resume --progress lines
  contains resume-enc "step-000004"
  same resume-losses "$(losses "$tmp/full")" "$(losses "$tmp/run")"
fi

echo "crypt: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
