#!/usr/bin/env bash
# The limits table from the command line (docs/limits.md): TRIMODAL_LIMITS
# and the global --limits option change a limit (the reader's message then
# names the limit and the setting); a bad name or value stops the command
# at start-up with exit status 2 and a clear message; the serve limit flags
# check their values.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
. "$src/tests/lib.sh"
unset TRIMODAL_LIMITS
tok="$src/tests/data/serve/model/tokenizer.json"
size=$(stat -c %s "$tok")

check help 0 "$bin" --help;                           contains help "--limits L"
contains help "TRIMODAL_LIMITS"
check info-ok 0 "$bin" tokenizer info --tokenizer "$tok"
# exactly the file's size passes, one byte less fails naming the limit
check at-limit 0 "$bin" --limits "tokenizer_file_bytes=$size" tokenizer info --tokenizer "$tok"
check over-limit 1 "$bin" tokenizer info --tokenizer "$tok" --limits "tokenizer_file_bytes=$((size - 1))"
contains over-limit "tokenizer_file_bytes"
contains over-limit "TRIMODAL_LIMITS=tokenizer_file_bytes=N"
check env-over 1 env TRIMODAL_LIMITS="manifest_words=9, tokenizer_file_bytes=$((size - 1))" "$bin" tokenizer info --tokenizer "$tok"
contains env-over "tokenizer_file_bytes"
# --limits wins over the environment
check cli-wins 0 env TRIMODAL_LIMITS="tokenizer_file_bytes=10" "$bin" --limits=tokenizer_file_bytes=1m tokenizer info --tokenizer "$tok"
# bad names and values: exit 2 at start-up, whatever the command
check bad-name 2 "$bin" --limits no_such=1 info;            contains bad-name "unknown limit 'no_such'"
contains bad-name "tokenizer_vocab"
check bad-value 2 "$bin" --limits tokenizer_vocab=0 info;   contains bad-value "tokenizer_vocab=0"
contains bad-value "1..2097152"
check bad-form 2 "$bin" --limits tokenizer_vocab info;      contains bad-form "not name=value"
check no-value 2 "$bin" info --limits;                      contains no-value "--limits needs"
check env-bad 2 env TRIMODAL_LIMITS=json_width=3 "$bin" info; contains env-bad "TRIMODAL_LIMITS: unknown limit 'json_width'"
# the limits moved into the table (preprocess.json, run configs, multipart
# parts, cascade files, indexed media): their names are known, their ranges
# checked, and a run config over run_config_bytes names the setting
check new-names 0 "$bin" --limits preprocess_json_bytes=1m,run_config_bytes=4m,multipart_parts=16,cascade_json_bytes=1m,index_media_bytes=256m info
check parts-range 2 "$bin" --limits multipart_parts=1025 info; contains parts-range "1..1024"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '{"model": "nowhere"}' > "$tmp/run.json"
rsize=$(stat -c %s "$tmp/run.json")
check run-over 1 "$bin" --limits "run_config_bytes=$((rsize - 1))" train --config "$tmp/run.json"
contains run-over "run_config_bytes"; contains run-over "TRIMODAL_LIMITS=run_config_bytes=N"
check run-at 1 "$bin" --limits "run_config_bytes=$rsize" train --config "$tmp/run.json"
if grep -q "run_config_bytes" <<<"$out"; then fail=$((fail+1)); echo "FAIL run-at: $out"; else pass=$((pass+1)); fi
# serve's limit flags
check serve-help 0 "$bin" serve --help;                      contains serve-help "--max-search-k K"
contains serve-help "--max-image-pixels N"; contains serve-help "--max-audio-seconds S"
check serve-k 2 "$bin" serve --max-search-k 0 "$src/tests/data/serve/model"; contains serve-k "1..1000000"
check serve-px 2 "$bin" serve --max-image-pixels x "$src/tests/data/serve/model"; contains serve-px "--max-image-pixels needs"
check serve-s 2 "$bin" serve --max-audio-seconds 0 "$src/tests/data/serve/model"; contains serve-s "--max-audio-seconds needs"

echo "limits_cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
