#!/usr/bin/env bash
# trimodal prune and classify --cascade on the model folder of
# tests/data/serve: usage errors (exit 2), bad input (exit 1), the pruned
# folder's sparsity read back from its safetensors (Python's standard
# library), that it still loads and classifies, a cascade's stage in
# classify's answer, and a cascade sweep over a small manifest.
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
trap 'rm -rf "$tmp"' EXIT

# ---- prune: usage
check "prune help" 0 "$bin" prune --help
contains "prune help" "--structured heads"
check "prune no sparsity" 2 "$bin" prune "$m" -o "$tmp/x"
check "prune bad sparsity" 2 "$bin" prune "$m" --sparsity 1 -o "$tmp/x"
contains "prune bad sparsity" "\[0, 1)"
check "prune bad structure" 2 "$bin" prune "$m" --sparsity 0.5 --structured rows -o "$tmp/x"
check "prune no out" 2 "$bin" prune "$m" --sparsity 0.5
check "prune same out" 2 "$bin" prune "$m" --sparsity 0.5 -o "$m"
check "prune missing model" 1 "$bin" prune "$tmp/none" --sparsity 0.5 -o "$tmp/x"

# ---- prune: unstructured 0.6, counted independently from the written file
check "prune 0.6" 0 "$bin" prune "$m" --sparsity 0.6 -o "$tmp/p60" --json
pycheck "prune 0.6 json" "import json,sys; o=json.loads(sys.stdin.read()); assert o['prune']=='unstructured' and abs(o['zero_fraction']-0.6)<0.01, o"
for f in config.json tokenizer.json preprocess.json labels.json; do
  if cmp -s "$m/$f" "$tmp/p60/$f" || [ "$f" = config.json ]; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL prune copied $f"; fi
done
cat > "$tmp/sparsity.py" <<'PYEOF'
import json, struct, sys, math
def tensors(path):
    d = open(path, 'rb').read(); n = struct.unpack('<Q', d[:8])[0]; h = json.loads(d[8:8 + n])
    for k, e in h.items():
        if k == '__metadata__': continue
        a, b = e['data_offsets']; raw = d[8 + n + a:8 + n + b]
        yield k, e['shape'], struct.unpack('<%df' % (len(raw) // 4), raw)
orig = dict((k, (s, v)) for k, s, v in tensors(sys.argv[1]))
S = float(sys.argv[3])
for k, s, v in tensors(sys.argv[2]):
    o = orig[k][1]
    if len(s) == 2 and k.endswith('.weight'):
        zeros = [i for i in range(len(v)) if v[i] == 0.0]
        assert len(zeros) == math.floor(S * len(v)), (k, len(zeros), len(v))
        kept = [abs(o[i]) for i in range(len(v)) if v[i] != 0.0]
        assert max(abs(o[i]) for i in zeros) <= min(kept), k
        assert all(v[i] == o[i] for i in range(len(v)) if v[i] != 0.0), k
    else:
        assert v == o, k
print('ok')
PYEOF
check "prune 0.6 file" 0 $py "$tmp/sparsity.py" "$m/model.safetensors" "$tmp/p60/model.safetensors" 0.6
check "pruned classify" 0 "$bin" classify --model "$tmp/p60" --text "red boot" --json
pycheck "pruned classify" "import json,sys; o=json.loads(sys.stdin.read()); assert abs(sum(o['probs'])-1)<1e-4"

# ---- prune: heads
check "prune heads" 0 "$bin" prune "$m" --sparsity 0.5 --structured heads -o "$tmp/h50" --json
pycheck "prune heads json" "import json,sys; o=json.loads(sys.stdin.read()); assert o['prune']=='heads' and o['heads_pruned']*2==o['heads'] and o['attentions']>=4, o"
check "heads classify" 0 "$bin" classify --model "$tmp/h50" --image "$d/image_a.png"

# ---- cascades
echo '{"stages": [{"modalities": ["text"], "threshold": 0}]}' > "$tmp/c0.json"
echo '{"stages": [{"modalities": ["text"], "threshold": 1}]}' > "$tmp/c1.json"
echo '{"stages": [{"modalities": ["smell"], "threshold": 0.5}]}' > "$tmp/bad.json"
check "cascade text" 0 "$bin" classify --model "$m" --cascade "$tmp/c0.json" --text "red boot" --image "$d/image_a.png" --json
pycheck "cascade text" "import json,sys; o=json.loads(sys.stdin.read()); assert o['stage']=='text', o"
check "cascade full" 0 "$bin" classify --model "$m" --cascade "$tmp/c1.json" --text "red boot" --json
pycheck "cascade full" "import json,sys; o=json.loads(sys.stdin.read()); assert o['stage']=='full', o"
check "cascade bad" 1 "$bin" classify --model "$m" --cascade "$tmp/bad.json" --text "red boot"
contains "cascade bad" "unknown modality"
check "cascade missing" 1 "$bin" classify --model "$m" --cascade "$tmp/none.json" --text "x"
check "sweep needs cascade" 2 "$bin" classify --model "$m" --data "$tmp/m.jsonl"
check "thresholds need data" 2 "$bin" classify --model "$m" --text x --thresholds 0.5

# a manifest of 6 labelled rows
for i in 0 1 2 3 4 5; do
  img=image_a.png; [ $((i % 2)) -eq 1 ] && img=image_b.png
  cp "$d/$img" "$tmp/i$i.png"
  echo "{\"id\": \"$i\", \"text\": \"a red boot number $i\", \"image\": \"i$i.png\", \"label\": $((i % 4)), \"split\": \"test\"}"
done > "$tmp/m.jsonl"
echo "{\"id\": \"9\", \"text\": \"train row\", \"label\": 0, \"split\": \"train\"}" >> "$tmp/m.jsonl"
check "sweep" 0 "$bin" classify --model "$m" --cascade "$tmp/c0.json" --data "$tmp/m.jsonl" --thresholds 0,1 --json
pycheck "sweep" "
import json,sys
rows=[json.loads(l) for l in sys.stdin.read().splitlines() if l.startswith('{')]
assert len(rows)==3, rows
full,t0,t1=rows
assert full['threshold'] is None and full['examples']==6 and full['answered']['full']==1
assert t0['answered']['text']==1 and t1['answered']['full']==1, rows
assert t1['accuracy']==full['accuracy'], rows
"
check "sweep bad thresholds" 2 "$bin" classify --model "$m" --cascade "$tmp/c0.json" --data "$tmp/m.jsonl" --thresholds 0,2
check "sweep empty split" 1 "$bin" classify --model "$m" --cascade "$tmp/c0.json" --data "$tmp/m.jsonl" --split val

echo "prune_cascade cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
