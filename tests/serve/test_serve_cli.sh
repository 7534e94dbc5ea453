#!/usr/bin/env bash
# trimodal embed, classify, caption, search (build, info, query) and serve on
# the model folder of tests/data/serve: exit codes, messages, JSON against
# the PyTorch vectors, and the server process: API key, SIGTERM while a
# request is in flight (it finishes; exit 0). Python's standard library
# plays the HTTP client.
set -uo pipefail
bin=${TM_BUILD_DIR:?}/bin/trimodal
src=${TM_SOURCE_DIR:?}
d=$src/tests/data/serve
m=$d/model
py=/usr/bin/python3
. "${TM_SOURCE_DIR:?}/tests/lib.sh" # pass, fail, check, contains
pycheck() { # pycheck NAME SCRIPT: the script reads $out on stdin, exits 0 when right
  if $py -c "$2" <<<"$out" 2>/tmp/tm_pycheck.$$; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL $1: $(cat /tmp/tm_pycheck.$$): $out"; fi
  rm -f /tmp/tm_pycheck.$$
}
tmp=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill -9 "$server" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# a reader of vectors.safetensors without numpy or torch
cat > "$tmp/vec.py" <<'EOF'
import json, struct, sys
def vectors(path):
    d = open(path, 'rb').read(); n = struct.unpack('<Q', d[:8])[0]; h = json.loads(d[8:8 + n])
    out = {}
    for k, e in h.items():
        if k == '__metadata__': continue
        a, b = e['data_offsets']; raw = d[8 + n + a:8 + n + b]
        out[k] = list(struct.unpack('<%d%s' % (len(raw) // 4, 'f' if e['dtype'] == 'F32' else 'i'), raw))
    return out
V = vectors(sys.argv[1])
EOF
vec() { echo "import sys; sys.argv=['', '$d/vectors.safetensors']; exec(open('$tmp/vec.py').read())"; }

# ------------------------------------------------------------ inference
check embed-help 0 "$bin" embed --help;        contains embed-help "--image"
check classify-help 0 "$bin" classify --help;  contains classify-help "labels.json"
check caption-help 0 "$bin" caption --help;    contains caption-help "--beam"
check embed-noargs 2 "$bin" embed
check embed-noinput 2 "$bin" embed --model "$m"
check classify-dtype 2 "$bin" classify --model "$m" --text x --dtype bf16
check classify-badopt 2 "$bin" classify --model "$m" --text x --frobnicate
check classify-nomodel 1 "$bin" classify --model "$tmp/none" --text x
check classify-noimage 1 "$bin" classify --model "$m" --image "$tmp/none.png"; contains classify-noimage "none.png"
printf 'not an image' > "$tmp/bad.png"
check classify-badimage 1 "$bin" classify --model "$m" --image "$tmp/bad.png"; contains classify-badimage "image:"

check classify-0 0 "$bin" classify --model "$m" --text "red boot" --image "$d/image_a.png" --audio "$d/sound_a.wav" --json
pycheck classify-0 "$(vec)
r = json.loads(sys.stdin.read()); p = V['probs.0']
assert all(abs(a - b) < 5e-5 for a, b in zip(r['probs'], p)), (r['probs'], p)
assert r['label'] == ['sneaker', 'boot', 'sandal', 'shirt'][max(range(4), key=lambda i: p[i])]"
check classify-human 0 "$bin" classify --model "$m" --image "$d/image_b.png" --top-k 2
contains classify-human "2\. "
check embed-3 0 "$bin" embed --model "$m" --audio "$d/sound_a.wav" --json
pycheck embed-3 "$(vec)
r = json.loads(sys.stdin.read()); e = r['embeddings']
assert list(e) == ['audio'] and r['dim'] == 8
assert all(abs(a - b) < 5e-5 for a, b in zip(e['audio'], V['emb.3'][16:24]))"
printf 'a shirt\n' > "$tmp/t.txt"
check embed-6 0 "$bin" embed --model "$m" --text-file "$tmp/t.txt" --audio "$d/sound_b.wav"
contains embed-6 "similarity text-audio"
check caption-2 0 "$bin" caption --model "$m" --image "$d/image_a.png" --json
pycheck caption-2 "$(vec)
r = json.loads(sys.stdin.read()); n = V['caption_len.2'][0]
assert r['ids'] == V['caption.2'][:n], (r['ids'], V['caption.2'])"
check caption-beam 0 "$bin" caption --model "$m" --image "$d/image_a.png" --beam 3 --json

# --------------------------------------------------------------- search
{
  echo '{"id": "a", "text": "red boot", "image": "image_a.png", "audio": "sound_a.wav"}'
  echo '{"id": "b", "image": "image_b.png", "audio": "sound_b.wav"}'
  echo '{"id": "c", "text": "a shirt", "audio": "sound_b.wav"}'
  echo '{"id": "d", "text": "sandal", "image": "image_a.png"}'
} > "$tmp/manifest.jsonl"
for f in image_a.png image_b.png sound_a.wav sound_b.wav; do cp "$d/$f" "$tmp/"; done
check search-help 0 "$bin" search --help;  contains search-help "search build"
check build 0 "$bin" search build --model "$m" --data "$tmp/manifest.jsonl" -o "$tmp/idx.tmi" --json
pycheck build "r = __import__('json').loads(open(0).read()); assert r['items'] == 4 and r['rows'] == {'text': 3, 'image': 3, 'audio': 3}, r"
check build-nodata 1 "$bin" search build --model "$m" --data "$tmp/none.jsonl" -o "$tmp/x.tmi"
check build-usage 2 "$bin" search build --model "$m" -o "$tmp/x.tmi"
check info 0 "$bin" search info "$tmp/idx.tmi";  contains info "4 items"
check query 0 "$bin" search --index "$tmp/idx.tmi" --model "$m" --text "red boot" -k 3 --json
pycheck query "r = __import__('json').loads(open(0).read()); res = r['results']
assert len(res) == 3 and all(x['modality'] != 'text' for x in res), res
assert res[0]['score'] >= res[1]['score'] >= res[2]['score']"
check query-all 0 "$bin" search --index "$tmp/idx.tmi" --model "$m" --image "$tmp/image_b.png" --modality all -k 10
contains query-all "rank"
check query-two 2 "$bin" search --index "$tmp/idx.tmi" --model "$m" --text a --image "$tmp/image_b.png"
check query-mod 2 "$bin" search --index "$tmp/idx.tmi" --model "$m" --text a --modality smell
check query-badidx 1 "$bin" search --index "$tmp/manifest.jsonl" --model "$m" --text a
# an index of another model is refused
mkdir -p "$tmp/other"
"$bin" init --config "$m/config.json" -o "$tmp/other" --seed 3 >/dev/null 2>&1
cp "$m/tokenizer.json" "$m/preprocess.json" "$tmp/other/"
check query-othermodel 1 "$bin" search --index "$tmp/idx.tmi" --model "$tmp/other" --text a
contains query-othermodel "another model"

# ---------------------------------------------------------------- serve
check serve-help 0 "$bin" serve --help;  contains serve-help "SIGTERM"
check serve-noargs 2 "$bin" serve
check serve-badport 2 "$bin" serve "$m" --port 70000
check serve-nomodel 1 "$bin" serve "$tmp/none" --port 0
printf 'k3y-for-tests\n' > "$tmp/key"
"$bin" serve "$m" --port 0 --port-file "$tmp/port" --index "$tmp/idx.tmi" --api-key-file "$tmp/key" \
  --max-wait-ms 600 2> "$tmp/serve.log" &
server=$!
for _ in $(seq 1 200); do [ -s "$tmp/port" ] && break; sleep 0.05; done
port=$(cat "$tmp/port" 2>/dev/null)
if [ -z "$port" ]; then
  fail=$((fail+1)); echo "FAIL serve: no port file; log: $(cat "$tmp/serve.log")"
else
  cat > "$tmp/client.py" <<'EOF'
import http.client, json, socket, sys, time
port, what = int(sys.argv[1]), sys.argv[2]
def req(method, path, body=None, headers={}):
    c = http.client.HTTPConnection('127.0.0.1', port, timeout=20)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse(); d = r.read(); c.close()
    return r.status, d
key = {'Authorization': 'Bearer k3y-for-tests', 'Content-Type': 'application/json'}
if what == 'basic':
    s, d = req('GET', '/healthz'); assert s == 200 and b'/v1/search' in d, (s, d)
    s, d = req('POST', '/v1/classify', json.dumps({'text': 'red boot'}), {'Content-Type': 'application/json'})
    assert s == 401 and json.loads(d)['error']['code'] == 'unauthorized', (s, d)
    s, d = req('POST', '/v1/classify', json.dumps({'text': 'red boot'}), key); assert s == 200, (s, d)
    s, d = req('POST', '/v1/search', json.dumps({'text': 'red boot', 'k': 2}), key)
    assert s == 200 and len(json.loads(d)['results']) == 2, (s, d)
    s, d = req('POST', '/v1/embed', '{"text": ', key); assert s == 400, (s, d)
    s, d = req('GET', '/metrics'); assert s == 200 and b'trimodal_queue_depth' in d, (s, d)
    print('basic ok')
elif what == 'slow':
    # a request whose body arrives in two parts, a second apart: the server
    # gets SIGTERM in between and must still answer it
    body = json.dumps({'text': 'a shirt'}).encode()
    sk = socket.create_connection(('127.0.0.1', port), timeout=20)
    sk.sendall(b'POST /v1/classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k3y-for-tests\r\n'
               b'Content-Type: application/json\r\nContent-Length: %d\r\n\r\n' % len(body) + body[:4])
    open(sys.argv[3], 'w').write('sent\n')
    time.sleep(1.0)
    sk.sendall(body[4:])
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = sk.recv(65536)
        if not chunk: break
        data += chunk
    print(data.split(b'\r\n')[0].decode())
EOF
  check serve-basic 0 $py "$tmp/client.py" "$port" basic; contains serve-basic "basic ok"
  $py "$tmp/client.py" "$port" slow "$tmp/sent" > "$tmp/slow.out" 2>&1 &
  client=$!
  for _ in $(seq 1 100); do [ -s "$tmp/sent" ] && break; sleep 0.05; done
  sleep 0.2
  kill -TERM "$server"
  wait "$client"
  out=$(cat "$tmp/slow.out"); contains serve-inflight "HTTP/1.1 200"
  wait "$server"; rc=$?
  server=
  if [ "$rc" -eq 0 ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL serve-exit: $rc; $(cat "$tmp/serve.log")"; fi
  out=$(cat "$tmp/serve.log"); contains serve-log "SIGTERM: stopping"; contains serve-log "stopped"
fi
echo "serve cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
