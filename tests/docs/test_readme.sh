#!/usr/bin/env bash
# Compiles and runs the C example in README.md, so the README stays true.
set -euo pipefail
src=${TM_SOURCE_DIR:?}
build=${TM_BUILD_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk '/^```c$/{on=1; next} /^```$/{on=0} on' "$src/README.md" > "$tmp/readme.c"
[ -s "$tmp/readme.c" ] || { echo "README.md has no C example"; exit 1; }
cc -std=c11 ${TM_CFLAGS:-} -Wall -Wextra -Werror -I"$src/include" "$tmp/readme.c" "$build/lib/libtrimodal.a" \
   $(pkg-config --libs libcjson stb sndfile samplerate fftw3f libpcre2-8) -lpthread -lm -o "$tmp/readme"
out=$("$tmp/readme")
echo "$out"
# the loss must have dropped well below ln(3) = 1.0986
awk '{ if ($NF + 0 < 0.05) ok = 1 } END { exit ok ? 0 : 1 }' <<<"$out"
echo "readme: 1 passed, 0 failed"
