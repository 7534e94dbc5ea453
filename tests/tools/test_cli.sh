#!/usr/bin/env bash
# The trimodal command: help, usage errors (exit 2), bad input (exit 1),
# and inspect on a real safetensors file.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
. "$src/tests/lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

check help 0 "$bin" --help;                    contains help "inspect PATH"
check no-args 2 "$bin"
check unknown 2 "$bin" frobnicate;             contains unknown "unknown command 'frobnicate'"
check version 0 "$bin" --version;              contains version "trimodal 0"
check info 0 "$bin" info;                      contains info "kernels:"
check info-json 0 "$bin" info --json;          contains info-json '"isa":'
check inspect-help 0 "$bin" inspect --help
check inspect-noarg 2 "$bin" inspect
check inspect-missing 1 "$bin" inspect "$tmp/nope.safetensors"; contains inspect-missing "nope.safetensors"
printf 'garbage that is not a safetensors file' > "$tmp/bad.safetensors"
check inspect-corrupt 1 "$bin" inspect "$tmp/bad.safetensors"
f=$(ls "$src"/tests/data/io/*.safetensors 2>/dev/null | head -1)
if [ -n "$f" ]; then
  check inspect-file 0 "$bin" inspect "$f";     contains inspect-file "tensors,"
  check inspect-json 0 "$bin" inspect "$f" --json; contains inspect-json '"tensors":'
  mkdir "$tmp/model" && cp "$f" "$tmp/model/model.safetensors"
  check inspect-dir 0 "$bin" inspect "$tmp/model"
fi
echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
