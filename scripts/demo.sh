#!/usr/bin/env bash
# `make demo`: the whole job on the bundled tri-modal dataset.
#   1. builds FashionTri from Debian packages (or reuses it),
#   2. trains a BPE tokenizer on its written and spoken hints,
#   3. trains the demo model (configs/demo/) through a four-stage curriculum,
#   4. evaluates it on the test split (speakers never heard in training):
#      accuracy with each subset of modalities, retrieval between them, the
#      word error rate of the speech-recognition head, a bias audit by voice,
#      and an HTML report with plots and attention maps; then the same model
#      image-only on the plain Fashion-MNIST test images; one summary table,
#   5. prints where everything is.
# A second run reuses what the first built (dataset, tokenizer, a finished
# training run; an interrupted one resumes).
#
# Environment: DEMO_DIR (default BUILD/demo) holds everything; DEMO_QUICK=1
# builds a small subset and trains briefly (minutes, for a first look);
# DEMO_LIMIT="TRAIN TEST" and DEMO_STEPS="S1 S2 S3 S4" size a smoke run (a
# missing count repeats the last one);
# TRIMODAL_THREADS as everywhere.
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "$BUILD" && pwd)/bin/trimodal
DIR=${DEMO_DIR:-$(cd "$BUILD" && pwd)/demo}
QUICK=${DEMO_QUICK:-0}
mkdir -p "$DIR"

say() { printf '\n== %s\n' "$*" >&2; }
warm() { local w=$(( $1 / 20 )); [ "$w" -gt 50 ] && w=50; echo "$w"; } # warm-up: 5% of a stage, <= 50

if [ -n "${DEMO_LIMIT:-}" ]; then
  # a smoke run: DEMO_LIMIT="TRAIN TEST" images, DEMO_STEPS="S1 S2 S3 S4" steps
  read -r lt lx <<<"$DEMO_LIMIT"
  DATA=$DIR/fashion-tri-$lt-$lx
  LIMIT=(--limit-train "$lt" --limit-test "$lx")
  read -r -a STEPS <<<"${DEMO_STEPS:-20 10 10 20}"
  RUN=$DIR/run-$lt-$lx
elif [ "$QUICK" = 1 ]; then
  DATA=$DIR/fashion-tri-quick
  LIMIT=(--limit-train 4000 --limit-test 1000)
  STEPS=(200 50 25 100)
  RUN=$DIR/run-quick
else
  DATA=$DIR/fashion-tri
  LIMIT=()
  STEPS=(2400 200 50 400)
  RUN=$DIR/run
fi

say "1/5 FashionTri (Fashion-MNIST + WordNet hints + synthetic speech) in $DATA"
"$BIN" data build fashion-tri --out "$DATA" "${LIMIT[@]}"

say "2/5 tokenizer"
TOK=$DIR/tokenizer.json
if [ ! -s "$TOK" ] || [ "$TOK" -ot "$DATA/dataset.json" ]; then
  # the written hints and the transcripts of the spoken ones (training split)
  grep '"split":"train"' "$DATA/manifest.jsonl" |
    grep -o -e '"text":"[^"]*"' -e '"transcript":"[^"]*"' |
    sed -e 's/^"[a-z]*":"//' -e 's/"$//' > "$DIR/corpus.txt"
  "$BIN" tokenizer train --vocab 512 -o "$TOK" "$DIR/corpus.txt"
else
  echo "reusing $TOK" >&2
fi

say "3/5 training (curriculum: vision, hints, align, finetune) into $RUN"
SUBST=(-e "s|@ROOT@|$ROOT|g" -e "s|@OUT@|$RUN|g" -e "s|@OUT_PARENT@|$DIR|g" -e "s|@DATA@|$DATA|g")
for i in 1 2 3 4; do
  n=${STEPS[$((i - 1))]:-${STEPS[${#STEPS[@]}-1]}}
  SUBST+=(-e "s|@STEPS$i@|$n|" -e "s|@W$i@|$(warm "$n")|")
done
sed "${SUBST[@]}" "$ROOT/configs/demo/run.json" > "$DIR/run.json"
if [ -f "$RUN/final/model.safetensors" ] && [ "$RUN/final/model.safetensors" -nt "$DIR/run.json" ]; then
  echo "reusing the finished run in $RUN" >&2
else
  "$BIN" train --config "$DIR/run.json" --resume --force
fi
MODEL=$RUN/best
[ -f "$MODEL/model.safetensors" ] || MODEL=$RUN/final

say "4/5 evaluation on the test split (unseen voices)"
REPORT=$DIR/report.html
"$BIN" eval --model "$MODEL" --data "$DATA/manifest.jsonl" --split test \
  --group-by voice --examples 4 --report "$REPORT" | tee "$DIR/eval.txt"

# The same model on the plain Fashion-MNIST test images (no hints, no
# degradation): image-only accuracy, comparable with image classifiers.
FMNIST=$DIR/fashion-mnist
"$BIN" data build fashion-mnist --out "$FMNIST" --quiet >&2
"$BIN" eval --model "$MODEL" --data "$FMNIST/manifest.jsonl" --split test > "$DIR/eval-fashion-mnist.txt"

# One table from the two evaluations.
summary() {
  awk -v plain="$(awk '/^classification/ { c = 1 } c && $1 == "accuracy" { print $2; exit }' \
                   "$DIR/eval-fashion-mnist.txt")" '
    /^classification/ { sec = "cls" } /^modality ablation/ { sec = "abl" }
    /^retrieval/ { sec = "ret" } /^captions/ { sec = "cap" } /^bias audit/ { sec = "" }
    sec == "cls" && $1 == "accuracy" && given == "" { given = $2 }
    sec == "abl" && $1 ~ /^(text|vision|audio)(\+(text|vision|audio))*$/ { acc[$1] = $3; rows[$1] = $2 }
    sec == "ret" && $2 == "(class)" { r1[$1] = $4; r5[$1] = $5 }
    sec == "cap" && /WER/ { for (i = 1; i < NF; i++) if ($i == "WER") wer = $(i + 1) }
    END {
      printf "FashionTri test split (voices never heard in training)\n"
      printf "  %-22s %6s %9s\n", "modalities given", "rows", "accuracy"
      n = split("text vision audio text+vision text+audio vision+audio text+vision+audio", m, " ")
      best1 = 0
      for (i = 1; i <= n; i++) {
        printf "  %-22s %6s %9s\n", m[i], rows[m[i]], acc[m[i]]
        if (i <= 3 && acc[m[i]] > best1) best1 = acc[m[i]]
      }
      printf "  %-22s %6s %9s\n", "as given (any missing)", "", given
      printf "  fusion of all three beats every single modality: %s\n",
             (acc["text+vision+audio"] > best1 ? "yes" : "NO")
      printf "\nplain Fashion-MNIST test set, image only:     %s\n", plain
      printf "\nretrieval between modalities (class level: a hit is any item of the query'"'"'s class;\n"
      printf "instance level is near chance here, since hints name a kind, not an item)\n"
      printf "  %-18s %7s %7s\n", "query->candidates", "R@1", "R@5"
      for (q in r1) printf "  %-18s %7s %7s\n", q, r1[q], r5[q]
      if (wer != "") printf "\nspeech recognition on the spoken hints: WER %s\n", wer
    }' "$DIR/eval.txt"
}
summary | tee "$DIR/summary.txt"

say "5/5 artefacts (results above, in $DIR/summary.txt)"
cat <<EOF
dataset        $DATA  (manifest.jsonl, dataset.json)
tokenizer      $TOK
run            $RUN  (metrics.jsonl, plots/*.svg, checkpoints/)
model          $MODEL  (config.json, model.safetensors, tokenizer.json, preprocess.json)
evaluation     $DIR/eval.txt, $DIR/eval-fashion-mnist.txt, $DIR/summary.txt
report         $REPORT
EOF
