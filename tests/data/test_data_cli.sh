#!/usr/bin/env bash
# trimodal data check: a valid dataset (tables and JSON), a broken one (each
# problem listed with its line, exit 1), --media decoding, bad usage.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
. "$src/tests/lib.sh"
lacks() {
  if grep -q -- "$2" <<<"$out"; then fail=$((fail+1)); echo "FAIL $1: unexpected '$2' in: $out"; else pass=$((pass+1)); fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
d=$src/tests/data/data

check help 0 "$bin" data --help;            contains help "data check MANIFEST"
check help2 0 "$bin" data check --help;     contains help2 "\-\-media"
check no-sub 2 "$bin" data
check bad-sub 2 "$bin" data frob
check no-manifest 2 "$bin" data check
check bad-opt 2 "$bin" data check "$d/manifest.jsonl" --frob
check bad-threads 2 "$bin" data check "$d/manifest.jsonl" --threads 0
check two 2 "$bin" data check a.jsonl b.jsonl

# the fixture is valid
check valid 0 "$bin" data check "$d/manifest.jsonl"
contains valid "5 rows, valid"
contains valid "dataset   fixture"
contains valid "^train  *2  *2"
contains valid "^test  *1  *2  *(count differs from dataset.json)"
contains valid "holdout.*(unknown split name)"
contains valid "^0  *sneaker  *2"
contains valid "^-  *(no label)  *1"
contains valid "^image  *3  *2  *0"
contains valid "^audio  *3  *2  *0"
contains valid "transcript 1, words 1, region 1"
contains valid "fields  *voice"
contains valid "run with --media"

check media 0 "$bin" data check "$d/manifest.jsonl" --media --threads 2
contains media "audio      3 files, 0.750 s min, 1.000 s mean, 1.500 s max"
contains media "images     3 files, width 28..40, height 20..28; most common: 28x28 (2) 40x20 (1)"

check json 0 "$bin" data check "$d/manifest.jsonl" --media --json
contains json '"valid":true,"rows":5,"problems":0,"media_failures":0'
contains json '{"name":"test","rows":1,"expected":2,"known":true}'
contains json '{"index":1,"name":"boot","rows":1,"per_split":{"train":1,"val":0,"test":0,"holdout":0}}'
contains json '"audio":{"present":3,"missing":2,"bad_files":0}'
contains json '"audio_seconds":{"min":0.7500,"mean":1.0000,"max":1.5000,"n":3}'
if /usr/bin/python3 -c 'import json,sys; json.loads(sys.stdin.read())' <<<"$out"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL json: not one JSON object"; fi

# a broken manifest: every problem, with its line
check bad 1 "$bin" data check "$d/bad.jsonl" --media
contains bad "6 rows, INVALID\|INVALID"
contains bad "bad.jsonl:2: not valid JSON"
contains bad "bad.jsonl:3: duplicate id \"b1\" (first on line 1)"
contains bad "bad.jsonl:4: \"label\" 7 is out of range: dataset.json lists 3 classes"
contains bad "bad.jsonl:5: image \"img/missing.png\""
contains bad "bad.jsonl:6: image \"img/broken.png\""
contains bad "bad.jsonl:7: image \"img/b.png\": \"region\" \[0, 0, 50, 10\] reaches outside the 40 x 20 image"
check bad-few 1 "$bin" data check "$d/bad.jsonl" --max-problems 1
contains bad-few "bad.jsonl:2: not valid JSON"
lacks bad-few "bad.jsonl:3:"
check bad-nomedia 1 "$bin" data check "$d/bad.jsonl"
lacks bad-nomedia "broken.png"   # exists; only --media decodes it
check bad-json 1 "$bin" data check "$d/bad.jsonl" --json
contains bad-json '"valid":false'

# files that cannot be read at all
check missing 1 "$bin" data check "$tmp/none.jsonl";  contains missing "none.jsonl"
mkfifo "$tmp/fifo.jsonl"
check fifo 1 timeout 10 "$bin" data check "$tmp/fifo.jsonl";  contains fifo "not a regular file"
cp "$d/manifest.jsonl" "$tmp/m.jsonl"; echo '{"classes": 3}' > "$tmp/dataset.json"
check bad-dataset 1 "$bin" data check "$tmp/m.jsonl";  contains bad-dataset "dataset.json"
# a long line is a problem, not a hang
rm "$tmp/dataset.json"
{ printf '{"id": 1, "text": "'; head -c 1100000 /dev/zero | tr '\0' x; printf '"}\n{"id": 2}\n'; } > "$tmp/long.jsonl"
check long 1 timeout 20 "$bin" data check "$tmp/long.jsonl";  contains long "long.jsonl:1: the line is longer than 1048576 bytes"

# data build goes to the builder
out=$("$bin" data build --help 2>&1); st=$?
if [ $st -ne 0 ] && [ $st -ne 2 ] && [ $st -ne 1 ]; then fail=$((fail+1)); echo "FAIL build: exit $st"; else pass=$((pass+1)); fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
