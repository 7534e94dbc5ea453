#!/usr/bin/env bash
# data: `trimodal data build fashion-tri` from the command line: help, usage
# errors (exit 2), a tiny build with its JSON summary, the up-to-date no-op,
# the refusal of another recipe (exit 1) and a folder `data check` accepts.
# The library side (determinism, splits, probabilities, media) is
# tests/data/test_fashiontri.c. Without the text-to-speech packages the
# build part is skipped with a notice (scripts/deps.sh installs them).
set -euo pipefail
src=${TM_SOURCE_DIR:-$(pwd)}
bin=${TM_BUILD_DIR:-$src/build}/bin/trimodal
tmp=$(mktemp -d /tmp/tm-fashiontri-cli-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd "$src"
fail() { echo "FAIL: $*" >&2; exit 1; }

# help and usage
"$bin" data build --help | grep -q "fashion-tri --out DIR" || fail "data build --help"
"$bin" data build fashion-tri --help | grep -q -- "--limit-train N" || fail "fashion-tri --help"
for args in "" "nonesuch --out $tmp/x" "fashion-tri" "fashion-tri --out" \
            "fashion-tri --out $tmp/x --seed -3" "fashion-tri --out $tmp/x --limit-train 0" \
            "fashion-tri --out $tmp/x --limit-test 10001" "fashion-tri --out $tmp/x --jobs 0" \
            "fashion-tri --out $tmp/x --bogus 1"; do
  set +e
  # shellcheck disable=SC2086
  "$bin" data build $args >/dev/null 2>"$tmp/err"
  rc=$?
  set -e
  [ $rc -eq 2 ] || fail "'data build $args' exited $rc, want 2"
  grep -q "trimodal:" "$tmp/err" || fail "'data build $args' printed no message"
done

if ! "$bin" data build fashion-tri --check >"$tmp/check" 2>&1; then
  echo "SKIP the build part: $(cat "$tmp/check")"
  exit 0
fi

# a tiny build, its summary, then the same again: up to date
"$bin" data build fashion-tri --out "$tmp/ds" --limit-train 24 --limit-test 12 --jobs 2 \
  --json >"$tmp/out.json" 2>"$tmp/progress"
grep -q '"up_to_date":false' "$tmp/out.json" || fail "first build: $(cat "$tmp/out.json")"
grep -q '"train":24,"val":0,"test":12' "$tmp/out.json" || fail "split counts: $(cat "$tmp/out.json")"
grep -q "fashion-tri: examples 36/36" "$tmp/progress" || fail "no progress line: $(cat "$tmp/progress")"
[ "$(wc -l <"$tmp/ds/manifest.jsonl")" -eq 36 ] || fail "manifest rows"
"$bin" data build fashion-tri --out "$tmp/ds" --limit-train 24 --limit-test 12 >"$tmp/again"
grep -q "is up to date" "$tmp/again" || fail "second build: $(cat "$tmp/again")"

# another recipe into the same folder: refused with a reason
set +e
"$bin" data build fashion-tri --out "$tmp/ds" --limit-train 24 --limit-test 12 --seed 9 \
  >/dev/null 2>"$tmp/err"
rc=$?
set -e
[ $rc -eq 1 ] || fail "another recipe exited $rc, want 1"
grep -q "another recipe" "$tmp/err" || fail "refusal message: $(cat "$tmp/err")"

# the data layer's checker reads it, media included
"$bin" data check "$tmp/ds/manifest.jsonl" --media >"$tmp/checked" 2>&1 ||
  fail "data check: $(cat "$tmp/checked")"
echo "ok"
