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
. "$src/tests/lib.sh"
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
# --file reads through tm_read_file: an encrypted file is decrypted in memory
# with the key of TRIMODAL_KEY_FILE and encodes to the same ids as the plain one
unset TRIMODAL_KEY TRIMODAL_KEY_FILE
printf 'The quick dog\nsat down\n' > "$tmp/plain.txt"
check file-plain 0 "$bin" tokenizer encode --tokenizer "$tmp/t.json" --file "$tmp/plain.txt" --lines
plain_ids=$out
check gen-key 0 "$bin" encrypt --gen-key "$tmp/key"
check encrypt 0 "$bin" encrypt --key-file "$tmp/key" -o "$tmp/enc.txt" "$tmp/plain.txt"
check file-enc 0 env TRIMODAL_KEY_FILE="$tmp/key" "$bin" tokenizer encode --tokenizer "$tmp/t.json" --file "$tmp/enc.txt" --lines
[ -n "$plain_ids" ] && [ "$out" == "$plain_ids" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL file-enc: '$out' != '$plain_ids'"; }
check file-nokey 1 "$bin" tokenizer encode --tokenizer "$tmp/t.json" --file "$tmp/enc.txt"; contains file-nokey "is encrypted"
check file-missing 1 "$bin" tokenizer encode --tokenizer "$tmp/t.json" --file "$tmp/nope.txt"; contains file-missing "nope.txt"
echo "tokenizer cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
