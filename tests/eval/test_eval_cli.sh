#!/usr/bin/env bash
# trimodal eval end to end on a tiny fresh model: help, usage errors (exit
# 2), bad input (exit 1, naming the row), the table, --json and --report.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
. "$src/tests/lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
. "$src/tests/eval/eval_fixture.sh"
make_fixture "$tmp" || { echo "FAIL fixture"; exit 1; }
m="$tmp/model" d="$tmp/data/manifest.jsonl"

check help 0 "$bin" eval --help;            contains help "--group-by FIELD"
check no-model 2 "$bin" eval --data "$d";   contains no-model "--model DIR is required"
check no-data 2 "$bin" eval --model "$m";   contains no-data "--data MANIFEST is required"
check bad-opt 2 "$bin" eval --model "$m" --data "$d" --frobnicate
check bad-examples 2 "$bin" eval --model "$m" --data "$d" --examples 999
check missing-model 1 "$bin" eval --model "$tmp/nope" --data "$d"; contains missing-model "nope"

check table 0 "$bin" eval --model "$m" --data "$d" --split test --group-by voice --examples 2 \
  --report "$tmp/r.html" --quiet
contains table "modality ablation"; contains table "text+vision+audio"; contains table "vision->audio (instance)"
contains table "bias audit by voice"; contains table "ex0 "
if [ -s "$tmp/r.html" ] && [ "$(grep -o '<img' "$tmp/r.html" | wc -l)" -ge 8 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL report: missing or without 8 pictures"; fi

check json 0 "$bin" eval --model "$m" --data "$d" --json --quiet
contains json '"classification":{"n":24'; contains json '"ablation":\['; contains json '"retrieval":\['
contains json '"level":"class"'

# bad input: a label the model does not know, an unlabelled row, an empty split
# the model names its classes (labels.json); a manifest class it lacks is refused
cp -r "$m" "$tmp/model2" && echo '["bird", "cat", "dog"]' > "$tmp/model2/labels.json"
check named 0 "$bin" eval --model "$tmp/model2" --data "$d" --quiet --no-retrieval
cp "$d" "$tmp/data/bad1.jsonl"
echo '{"id": "x1", "text": "a cat", "label": "zebra"}' >> "$tmp/data/bad1.jsonl"
check bad-label 1 "$bin" eval --model "$tmp/model2" --data "$tmp/data/bad1.jsonl" --quiet
contains bad-label "bad1.jsonl:25: row 'x1' has label 'zebra', which is not one of the model's 3 classes"
cp "$d" "$tmp/data/bad2.jsonl"
echo '{"id": "x2", "text": "a cat", "split": "test"}' >> "$tmp/data/bad2.jsonl"
check unlabelled 1 "$bin" eval --model "$m" --data "$tmp/data/bad2.jsonl" --quiet
contains unlabelled "bad2.jsonl:25: row 'x2' has no \"label\""
check empty-split 1 "$bin" eval --model "$m" --data "$d" --split train --quiet
contains empty-split "no rows in split 'train'"
check bad-group 1 "$bin" eval --model "$m" --data "$d" --group-by accent --quiet
contains bad-group 'no row of .* has the field "accent"'
# speech recognition: a caption head over audio with "transcript" fields
make_asr "$tmp" || { echo "FAIL asr fixture"; exit 1; }
check asr 0 "$bin" eval --model "$tmp/asr" --data "$tmp/data/asr.jsonl" --quiet --report "$tmp/asr.html"
contains asr "captions (23 rows, references: transcript)"; contains asr "WER"
check asr-json 0 "$bin" eval --model "$tmp/asr" --data "$tmp/data/asr.jsonl" --quiet --json
contains asr-json '"captions":{"references":"transcript","n":23,"bleu":'
grep -q "<h2>Speech recognition" "$tmp/asr.html" && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL asr report"; }
echo "eval cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
