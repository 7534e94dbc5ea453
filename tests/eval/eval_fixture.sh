# Sourced by the eval shell tests: make_fixture DIR writes a tiny model
# folder DIR/model (config, fresh weights, tokenizer.json, preprocess.json)
# and a manifest DIR/data/manifest.jsonl of 24 rows with PGM images, WAV
# sounds, labels (3 classes) and a "voice" field. Needs $bin.
wav() { # wav FILE SEED: 0.2 s of 16 kHz mono PCM16 noise-like bytes
  { printf 'RIFF\x24\x19\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00data\x00\x19\x00\x00'
    seq "$2" 9000 | tr -d '\n' | head -c 6400; } > "$1"
}
pgm() { # pgm FILE VALUE: an 8x8 grey picture with a bright square
  { printf 'P5\n8 8\n255\n'
    for y in 0 1 2 3 4 5 6 7; do for x in 0 1 2 3 4 5 6 7; do
      if [ $x -ge 2 ] && [ $x -le 5 ] && [ $y -ge "$(( $2 % 4 ))" ] && [ $y -le 5 ]; then printf '\xf0'; else printf '\x20'; fi
    done; done; } > "$1"
}
make_fixture() {
  local d=$1
  mkdir -p "$d/model" "$d/data/img" "$d/data/wav"
  cat > "$d/tiny.json" <<'JSON'
{"architecture": "trimodal", "name": "eval-tiny", "dim": 16, "heads": 2, "mlp_dim": 32,
 "encoders": [
  {"modality": "text", "layers": 1, "vocab_size": 320, "max_tokens": 8, "pad_id": 0,
   "positions": "learned", "pool": "first"},
  {"modality": "vision", "layers": 1, "channels": 1, "image_size": 8, "patch_size": 4,
   "cls_token": true, "positions": "learned", "pool": "first"},
  {"modality": "audio", "layers": 1, "n_mels": 8, "n_frames": 12,
   "stem": [{"kernel": 3, "stride": 1, "padding": 1}, {"kernel": 3, "stride": 2, "padding": 1}],
   "positions": "sinusoidal", "pool": "mean"}],
 "fusion": {"type": "early", "layers": 1, "cls_token": true, "type_embedding": true},
 "classifier": {"num_classes": 3},
 "contrastive": {"dim": 8},
 "loss": {"classification": 1, "contrastive": 1}}
JSON
  "$bin" init --config "$d/tiny.json" -o "$d/model" --seed 3 >/dev/null || return 1
  printf '{"text": {"max_length": 8}, "image": {"size": 8, "height": 8, "width": 8, "channels": 1, "mean": [0.5], "std": [0.5]}, "audio": {"n_mels": 8, "frames": 12}}\n' > "$d/model/preprocess.json"
  local words=(red blue green boot shoe hat) colors=(cat dog bird)
  : > "$d/corpus.txt"
  for i in $(seq 1 40); do echo "a ${words[$((i % 6))]} ${colors[$((i % 3))]} on the mat" >> "$d/corpus.txt"; done
  "$bin" tokenizer train --vocab 300 -o "$d/model/tokenizer.json" "$d/corpus.txt" >/dev/null || return 1
  : > "$d/data/manifest.jsonl"
  for i in $(seq 0 23); do
    local c=$((i % 3)) v=$((i % 2)) audio
    pgm "$d/data/img/$i.pgm" $((i + c))
    wav "$d/data/wav/$i.wav" $((i * 7 + 1))
    audio="\"wav/$i.wav\""
    [ $i -eq 5 ] && audio=null
    printf '{"id": "ex%d", "text": "a %s %s", "image": "img/%d.pgm", "audio": %s, "label": "%s", "split": "test", "voice": "v%d"}\n' \
      $i "${words[$((i % 6))]}" "${colors[$c]}" $i "$audio" "${colors[$c]}" $v >> "$d/data/manifest.jsonl"
  done
}
# make_asr DIR (after make_fixture DIR): DIR/asr, a text+audio model with a
# caption decoder over audio, and DIR/data/asr.jsonl whose rows have
# "transcript" fields (speech recognition).
make_asr() {
  local d=$1
  mkdir -p "$d/asr"
  cat > "$d/asr.json" <<'JSON'
{"architecture": "trimodal", "name": "eval-asr", "dim": 16, "heads": 2, "mlp_dim": 32,
 "encoders": [
  {"modality": "text", "layers": 1, "vocab_size": 320, "max_tokens": 8, "pool": "first"},
  {"modality": "audio", "layers": 1, "n_mels": 8, "n_frames": 12,
   "stem": [{"kernel": 3, "padding": 1}, {"kernel": 3, "stride": 2, "padding": 1}],
   "positions": "learned", "pool": "mean"}],
 "fusion": {"type": "late", "combine": "concat"},
 "classifier": {"num_classes": 3},
 "caption": {"layers": 1, "max_tokens": 6, "vocab_size": 256, "bos_id": 1, "eos_id": 2,
             "pad_id": 0, "context": "audio", "positions": "learned"},
 "loss": {"classification": 1, "caption": 1}}
JSON
  "$bin" init --config "$d/asr.json" -o "$d/asr" --seed 5 >/dev/null || return 1
  cp "$d/model/tokenizer.json" "$d/asr/"
  printf '{"text": {"max_length": 8}, "audio": {"n_mels": 8, "frames": 12}}\n' > "$d/asr/preprocess.json"
  sed 's/"split": "test"/"transcript": "a red cat", "split": "test"/' "$d/data/manifest.jsonl" > "$d/data/asr.jsonl"
}
