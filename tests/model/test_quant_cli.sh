#!/usr/bin/env bash
# trimodal quantize on the tiny model of tests/data/model: usage errors
# (exit 2), bad input (exit 1, a message naming the problem), int8 and bf16
# folders (sizes, JSON line, the folder loads: inspect, bench), and
# bench infer --dtype for every prepared-weight format.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
model=$src/tests/data/model/tiny
cfg=$src/tests/data/model/tiny.json
. "${TM_SOURCE_DIR:?}/tests/lib.sh" # pass, fail, check, contains
json_lines() { # every stdout line is a JSON object
  if /usr/bin/python3 -c 'import json,sys; [json.loads(l) for l in sys.stdin if l.strip()]' <<<"$out" 2>/dev/null
  then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $1: not JSON lines: $out"; fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

check help 0 "$bin" quantize --help;          contains help "--to int8|bf16"
check noargs 2 "$bin" quantize;               contains noargs "model folder"
check noto 2 "$bin" quantize "$model" -o "$tmp/q"; contains noto "--to"
check noout 2 "$bin" quantize "$model" --to int8;  contains noout "-o DIR"
check badto 2 "$bin" quantize "$model" --to int4 -o "$tmp/q"; contains badto "int4"
check badopt 2 "$bin" quantize "$model" --to int8 -o "$tmp/q" --fast
check extra 2 "$bin" quantize "$model" "$model" --to int8 -o "$tmp/q"
check novalue 2 "$bin" quantize "$model" --to
check missing 1 "$bin" quantize "$tmp/none" --to int8 -o "$tmp/q"; contains missing "none"
check same 1 "$bin" quantize "$model" --to int8 -o "$model";  contains same "input folder"
mkdir -p "$tmp/broken"; cp "$model/config.json" "$tmp/broken/"
head -c 100 "$model/model.safetensors" > "$tmp/broken/model.safetensors"
check broken 1 "$bin" quantize "$tmp/broken" --to int8 -o "$tmp/q"; contains broken "model.safetensors"
[ ! -e "$tmp/q/model.safetensors" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL broken: wrote output"; }

check int8 0 "$bin" quantize "$model" --to int8 -o "$tmp/q8"; contains int8 "MB ->"
contains int8 "smaller"
check int8-json 0 "$bin" quantize "$model" --to int8 -o "$tmp/q8" --json; json_lines int8-json
contains int8-json '"to":"int8"'
ratio=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["ratio"] > 2.5)' <<<"$out")
[ "$ratio" = True ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL int8 ratio: $out"; }
[ -f "$tmp/q8/config.json" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL int8: no config.json"; }
check bf16 0 "$bin" quantize "$model" --to bf16 -o "$tmp/q16" --json; json_lines bf16
contains bf16 '"to":"bf16"'
check inspect8 0 "$bin" inspect "$tmp/q8"
check inspect16 0 "$bin" inspect "$tmp/q16"
# a damaged quantized file is refused by every loader with a reason
printf 'x' | dd of="$tmp/q8/model.safetensors" bs=1 seek=3 conv=notrunc 2>/dev/null
check damaged 1 "$bin" quantize "$tmp/q8" --to bf16 -o "$tmp/q9"

for d in plain f32 bf16 int8; do
  check "bench-$d" 0 "$bin" bench infer --config "$cfg" --batch 2 --threads 1 --reps 2 --warmup 1 --dtype "$d" --json
  json_lines "bench-$d"; contains "bench-$d" "\"dtype\":\"$d\""
done
check bench-bad 2 "$bin" bench infer --config "$cfg" --dtype int4
echo "quantize cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
