#!/usr/bin/env bash
# The HTML report of `trimodal eval` in headless Chromium: it loads, its DOM
# holds every section and picture, each picture decodes (naturalWidth > 0),
# and the page reports no error. Skips (exit 0, with a message) when no
# chromium is installed (Debian: apt-get install chromium).
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$chrome" ]; then
  echo "SKIP: chromium is not installed (apt-get install chromium); the report was not rendered"
  exit 0
fi
pass=0 fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL $*"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
. "$src/tests/eval/eval_fixture.sh"
make_fixture "$tmp" >/dev/null 2>&1 || { echo "FAIL fixture"; exit 1; }
"$bin" eval --model "$tmp/model" --data "$tmp/data/manifest.jsonl" --group-by voice \
  --examples 2 --report "$tmp/report.html" --quiet >/dev/null || { echo "FAIL eval"; exit 1; }
# A copy with a script that writes, once the page has loaded, how many
# pictures decoded and any error into the DOM (the report itself has no script).
{ sed 's#</body>#<script>window.onerror=function(m){document.title="JSERROR "+m};window.addEventListener("load",function(){var im=document.images,ok=0;for(var i=0;i<im.length;i++)if(im[i].complete\&\&im[i].naturalWidth>0)ok++;var d=document.createElement("div");d.id="tmcheck";d.textContent="images "+im.length+" decoded "+ok;document.body.appendChild(d);});</script></body>#' "$tmp/report.html"; } > "$tmp/probe.html"
flags=(--headless --disable-gpu --no-sandbox --no-first-run --disable-dev-shm-usage
       --user-data-dir="$tmp/profile" --virtual-time-budget=2000)
dom=$(timeout 60 "$chrome" "${flags[@]}" --dump-dom "file://$tmp/probe.html" 2>"$tmp/stderr")
rc=$?
[ $rc -eq 0 ] && ok || bad "chromium exit $rc: $(tail -5 "$tmp/stderr")"
for h in "Classification" "Modality ablation" "Retrieval" "Bias audit" "Examples: attention"; do
  grep -q "<h2>$h" <<<"$dom" && ok || bad "no section '$h' in the rendered DOM"
done
n=$(grep -o 'id="tmcheck">images [0-9]* decoded [0-9]*' <<<"$dom" | head -1)
total=$(sed 's/.*images \([0-9]*\).*/\1/' <<<"$n"); decoded=$(sed 's/.*decoded \([0-9]*\)/\1/' <<<"$n")
if [ -n "$n" ] && [ "$total" -ge 8 ] && [ "$total" = "$decoded" ]; then ok; else bad "pictures: '$n' (want >= 8, all decoded)"; fi
grep -q "<title>JSERROR" <<<"$dom" && bad "page error: $(grep -o '<title>JSERROR[^<]*' <<<"$dom")" || ok
echo "report chromium: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
