#!/usr/bin/env bash
# trimodal tokenizer: train, encode, decode, info, their --help, usage
# errors (exit 2) and bad input (exit 1). Skipped (exit 0) while the
# command is not wired into the CLI.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
if [ ! -x "$bin" ] || ! "$bin" tokenizer --help >/dev/null 2>&1; then
  echo "tokenizer cli: skipped (no 'trimodal tokenizer' in $bin)"
  exit 0
fi
pass=0 fail=0
check() { # check NAME EXPECTED_STATUS COMMAND... (stdout+stderr in $out)
  local name=$1 want=$2; shift 2
  out=$("$@" 2>&1); local got=$?
  if [ "$got" -eq "$want" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $name: exit $got, want $want: $out"; fi
}
contains() { # contains NAME TEXT
  if grep -q -- "$2" <<<"$out"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL $1: no '$2' in: $out"; fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
corpus="$src/tests/data/text/corpus.txt"

check help 0 "$bin" tokenizer --help;                 contains help "encode"
for sub in train encode decode info; do check "$sub-help" 0 "$bin" tokenizer $sub --help; done
check no-sub 2 "$bin" tokenizer
check bad-sub 2 "$bin" tokenizer frob
check train-noout 2 "$bin" tokenizer train "$corpus"
check train-badvocab 2 "$bin" tokenizer train --vocab x -o "$tmp/t.json" "$corpus"
check train-missing 1 "$bin" tokenizer train -o "$tmp/t.json" "$tmp/nope.txt"; contains train-missing "nope.txt"
check train 0 "$bin" tokenizer train --vocab 400 -o "$tmp/t.json" "$corpus"; contains train "400 tokens"
check train-json 0 "$bin" tokenizer train --vocab 300 -o "$tmp/t2.json" --json "$corpus"; contains train-json '"vocab":300'
check encode 0 "$bin" tokenizer encode --tokenizer "$tmp/t.json" --text "The quick dog" --bos --eos
ids=$out
contains encode "^1 "
check decode 0 "$bin" tokenizer decode --tokenizer "$tmp/t.json" --skip-special $ids; contains decode "^The quick dog$"
check decode-stdin 0 bash -c "echo '[1, 2, 3]' | '$bin' tokenizer decode --tokenizer '$tmp/t.json' --json"; contains decode-stdin '"ids":3'
check encode-json 0 "$bin" tokenizer encode --tokenizer "$tmp/t.json" --text "hi" --max-length 8 --pad --json
contains encode-json '"attention_mask":\[1,1,0,0,0,0,0,0\]'
check encode-lines 0 bash -c "printf 'a\nb\n' | '$bin' tokenizer encode --tokenizer '$tmp/t.json' --lines"
[ "$(wc -l <<<"$out")" -eq 2 ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL encode-lines: $out"; }
check encode-pad-nomax 2 "$bin" tokenizer encode --tokenizer "$tmp/t.json" --text x --pad
check encode-notok 2 "$bin" tokenizer encode --text x
check decode-badid 1 "$bin" tokenizer decode --tokenizer "$tmp/t.json" 99999; contains decode-badid "position 0"
check info-pair 0 "$bin" tokenizer info --tokenizer "$src/tests/data/text/clip_vocab.json" --merges "$src/tests/data/text/clip_merges.txt"
contains info-pair "clip style"
echo '{"model":{"type":"WordPiece","vocab":{}}}' > "$tmp/wp.json"
check wordpiece 1 "$bin" tokenizer info --tokenizer "$tmp/wp.json"; contains wordpiece "WordPiece"
echo 'not json' > "$tmp/bad.json"
check notjson 1 "$bin" tokenizer encode --tokenizer "$tmp/bad.json" --text x; contains notjson "not valid JSON"
echo "tokenizer cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
