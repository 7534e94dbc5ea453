#!/usr/bin/env bash
# trimodal preprocess: pictures and tensors from real files; every config
# section changes what it writes; bad input and bad usage.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
. "$src/tests/lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
img=$src/tests/data/vision/img/rgb.png
wav=$src/tests/data/audio/pcm16_mono.wav
tok=$src/tests/data/text/trained_tokenizer.json

check help 0 "$bin" preprocess --help;          contains help "inputs.safetensors"
check all 0 "$bin" preprocess --image "$img" --audio "$wav" --text "a red sneaker" --tokenizer "$tok" --out "$tmp/a"
contains all "image.pixels .*(1, 32, 32)"
contains all "audio.logmel .*(64, 100)"
contains all "text.ids .*(32)"
for f in image.png logmel.png inputs.safetensors; do
  if [ -s "$tmp/a/$f" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $f not written"; fi
done
check inspect 0 "$bin" inspect "$tmp/a/inputs.safetensors"
contains inspect "audio.logmel"
contains inspect "text.attention_mask"

# each section of preprocess.json changes the output
cat > "$tmp/pp.json" <<'JSON'
{"text": {"max_length": 8}, "image": {"channels": 3, "height": 16, "width": 16, "size": 16,
 "mean": [0.5, 0.5, 0.5], "std": [0.25]}, "audio": {"n_mels": 32, "frames": 50}}
JSON
check config 0 "$bin" preprocess --image "$img" --audio "$wav" --text "a red sneaker" --tokenizer "$tok" --config "$tmp/pp.json" --out "$tmp/b" --json
contains config '"tensor":"image.pixels","dtype":"f32","shape":\[3,16,16\]'
contains config '"tensor":"audio.logmel","dtype":"f32","shape":\[32,50\]'
contains config '"tensor":"text.ids","dtype":"i32","shape":\[8\]'

# a model folder supplies preprocess.json and tokenizer.json
mkdir "$tmp/model" && cp "$tmp/pp.json" "$tmp/model/preprocess.json" && cp "$tok" "$tmp/model/tokenizer.json"
check model 0 "$bin" preprocess --text "shoe" --model "$tmp/model" --out "$tmp/c" --json
contains model '"shape":\[8\]'

# bad usage (2) and bad input (1)
check no-input 2 "$bin" preprocess --out "$tmp/d"
check no-out 2 "$bin" preprocess --image "$img"
check text-no-tok 2 "$bin" preprocess --text "hi" --out "$tmp/d"
check unknown-opt 2 "$bin" preprocess --frobnicate --out "$tmp/d"
check missing-img 1 "$bin" preprocess --image "$tmp/none.png" --out "$tmp/d";  contains missing-img "none.png"
head -c 100 "$img" > "$tmp/trunc.png"
check trunc-img 1 "$bin" preprocess --image "$tmp/trunc.png" --out "$tmp/d"
printf 'RIFF\x10\x00\x00\x00WAVEjunk' > "$tmp/bad.wav"
check bad-wav 1 "$bin" preprocess --audio "$tmp/bad.wav" --out "$tmp/d"
echo '{"audio": {"mel_scale": "bark"}}' > "$tmp/bad.json"
check bad-config 1 "$bin" preprocess --audio "$wav" --config "$tmp/bad.json" --out "$tmp/d"
contains bad-config "audio.mel_scale"
echo "preprocess cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
