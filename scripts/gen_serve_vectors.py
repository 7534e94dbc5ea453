#!/usr/bin/python3
"""Reference vectors for tests/serve/: a small model folder and what the
inference session must answer for raw inputs, computed independently.

Run with Debian's python3 (python3-torch 1.13, torchvision 0.14,
torchaudio 0.13, python3-regex):

    /usr/bin/python3 scripts/gen_serve_vectors.py [tests/data/serve]

It writes, under the output folder:
  model/config.json, model/model.safetensors   a small model of bench-small's
      family with a classifier, contrastive heads and a caption decoder,
      random weights from the PyTorch twin (scripts/bench_small_twin.py)
  model/tokenizer.json   a byte-level BPE trained by scripts/bpe_reference.py
  model/preprocess.json  the front-ends (8x8 gray images, 8 mel bins x 12 frames)
  model/labels.json      the class names
  image_a.png (RGB 20x14), image_b.png (gray 9x12), sound_a.wav (16 kHz,
      500 samples), sound_b.wav (16 kHz, 300 samples): the raw inputs
  cases.json             which inputs each case gives
  vectors.safetensors    per case k: tokens.k, image.k, mel.k (the model's
      inputs, by torchvision / torchaudio / the BPE reference), present.k,
      probs.k (softmax of the logits), emb.k (M, E) (zero rows for absent
      modalities), caption.k (greedy ids, padded), caption_len.k,
      caption_score.k
The model runs in float64 from the float32 inputs (the truth); the C test
measures trimodal's own rounding. The greedy captions are checked here to
have no near-tie (a margin of at least 1e-3 between the two best tokens).
"""
import json
import math
import os
import struct
import sys
import wave
import zlib

import torch
import torch.nn.functional as F
import torchaudio
import torchvision.transforms.functional as TF

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_small_twin as twin  # noqa: E402
import bpe_reference as ref  # noqa: E402

SPECIALS = ["<pad>", "<s>", "</s>", "<cls>", "<mask>", "<unk>"]
ROLES = dict(zip(["pad", "bos", "eos", "cls", "mask", "unk"], SPECIALS))
LABELS = ["sneaker", "boot", "sandal", "shirt"]

CONFIG = {
    "architecture": "trimodal",
    "name": "serve-tiny",
    "dim": 16, "heads": 2, "mlp_dim": 32, "activation": "gelu", "norm_eps": 1e-05,
    "encoders": [
        {"modality": "text", "layers": 1, "vocab_size": 280, "max_tokens": 8, "pad_id": 0,
         "positions": "learned", "pool": "first"},
        {"modality": "vision", "layers": 1, "channels": 1, "image_size": 8, "patch_size": 4,
         "cls_token": True, "positions": "learned", "pool": "first"},
        {"modality": "audio", "layers": 1, "n_mels": 8, "n_frames": 12,
         "stem": [{"kernel": 3, "stride": 1, "padding": 1},
                  {"kernel": 3, "stride": 2, "padding": 1}],
         "stem_activation": "gelu", "positions": "sinusoidal", "pool": "mean"},
    ],
    "fusion": {"type": "early", "layers": 1, "cls_token": True, "type_embedding": True},
    "classifier": {"num_classes": len(LABELS)},
    "contrastive": {"dim": 8, "logit_scale_init": 2.659260036932778,
                    "logit_scale_max": 4.605170185988092},
    "caption": {"layers": 1, "max_tokens": 6, "vocab_size": 280, "bos_id": 1, "eos_id": 2,
                "pad_id": 0, "context": "fusion", "positions": "learned"},
    "loss": {"classification": 1, "contrastive": 1, "caption": 1},
}

PREPROCESS = {
    "text": {"max_length": 8},
    "image": {"mode": "shorter", "size": 8, "height": 8, "width": 8, "filter": "bilinear",
              "antialias": True, "channels": 1, "mean": [0.5], "std": [0.5]},
    "audio": {"sample_rate": 16000, "n_fft": 64, "win_length": 64, "hop": 32, "n_mels": 8,
              "f_min": 0, "f_max": 8000, "mel_scale": "slaney", "mel_norm": "slaney",
              "log": "log10", "log_floor": 1e-10, "top_db": 8, "whisper_norm": True,
              "frames": 12},
}

CORPUS = (b"a red sneaker with white laces. an ankle boot in black leather. "
          b"a sandal for the beach. a shirt with long sleeves. the red boot and the "
          b"black sneaker. leather sandal, cotton shirt, rubber boot. ") * 4

CASES = [
    {"text": "red boot", "image": "image_a.png", "audio": "sound_a.wav"},
    {"text": "the black leather ankle boot with a very long description of laces"},
    {"image": "image_a.png"},
    {"audio": "sound_a.wav"},
    {"image": "image_b.png", "audio": "sound_b.wav"},
    {"text": "caf\u00e9 sandal \u2615", "image": "image_b.png"},
    {"text": "a shirt", "audio": "sound_b.wav"},
    {"image": "image_a.png", "audio": "sound_b.wav"},
]


def write_png(path, pixels, w, h, channels):
    """pixels: h rows of w * channels bytes."""
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    color = {1: 0, 3: 2}[channels]
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(data)


def write_wav(path, samples, rate):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", s) for s in samples))


def make_media(out):
    # image_a: RGB 20 x 14 (width x height), a smooth pattern with an edge
    wa, ha = 20, 14
    rows_a = []
    for y in range(ha):
        row = []
        for x in range(wa):
            r = (x * 12 + y * 3) % 256
            g = (y * 17 + 40) % 256
            b = 230 if x > 11 else (x * y * 5) % 256
            row += [r, g, b]
        rows_a.append(row)
    write_png(os.path.join(out, "image_a.png"), rows_a, wa, ha, 3)
    gray_a = [[(19595 * row[3 * x] + 38470 * row[3 * x + 1] + 7471 * row[3 * x + 2] + 32768) >> 16
               for x in range(wa)] for row in rows_a]
    # image_b: gray 9 x 12
    wb, hb = 9, 12
    rows_b = [[(x * 29 + y * y * 3) % 256 for x in range(wb)] for y in range(hb)]
    write_png(os.path.join(out, "image_b.png"), rows_b, wb, hb, 1)
    # sounds: 16 kHz mono, 16-bit
    sa = [int(9000 * math.sin(2 * math.pi * 440 * i / 16000) + 3000 * math.sin(2 * math.pi * 3100 * i / 16000))
          for i in range(500)]
    sb = [int(12000 * math.sin(2 * math.pi * (200 + i) * i / 16000)) for i in range(300)]
    write_wav(os.path.join(out, "sound_a.wav"), sa, 16000)
    write_wav(os.path.join(out, "sound_b.wav"), sb, 16000)
    return {"image_a.png": gray_a, "image_b.png": rows_b,
            "sound_a.wav": sa, "sound_b.wav": sb}


def image_input(gray):
    """u8 gray rows -> the model's (1, 8, 8) input, as torchvision on tensors."""
    t = torch.tensor(gray, dtype=torch.float32)[None] / 255.0
    t = TF.resize(t, [8], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    t = TF.center_crop(t, [8, 8])
    return TF.normalize(t, [0.5], [0.5])


def mel_input(samples):
    """int16 samples -> the (8, 12) log-mel, as torchaudio with Whisper's recipe."""
    a = PREPROCESS["audio"]
    x = torch.tensor(samples, dtype=torch.float64) / 32768.0
    n = a["frames"] * a["hop"]  # pad or trim to frames * hop samples (center)
    x = F.pad(x, (0, n - len(x))) if len(x) < n else x[:n]
    spec = torchaudio.transforms.MelSpectrogram(
        sample_rate=a["sample_rate"], n_fft=a["n_fft"], win_length=a["win_length"],
        hop_length=a["hop"], f_min=a["f_min"], f_max=a["f_max"], n_mels=a["n_mels"],
        window_fn=torch.hann_window, power=2.0, center=True, pad_mode="reflect",
        norm="slaney", mel_scale="slaney").double()(x)[:, :a["frames"]]
    lm = torch.log10(torch.clamp(spec, min=a["log_floor"]))
    lm = torch.maximum(lm, lm.max() - a["top_db"])
    return ((lm + 4.0) / 4.0).float()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "tests", "data", "serve")
    mdir = os.path.join(out, "model")
    os.makedirs(mdir, exist_ok=True)
    media = make_media(out)

    # tokenizer
    vocab, merges = ref.train([CORPUS], CONFIG["encoders"][0]["vocab_size"], 2, SPECIALS)
    added = [(s, vocab[s], True) for s in SPECIALS]
    with open(os.path.join(mdir, "tokenizer.json"), "w") as f:
        json.dump(ref.hf_json(vocab, merges, added, roles=ROLES), f, ensure_ascii=False)
    tok = ref.Tokenizer(vocab, merges, added)
    assert max(vocab.values()) < CONFIG["encoders"][0]["vocab_size"]

    for name, obj in (("preprocess.json", PREPROCESS), ("labels.json", LABELS),
                      ("config.json", CONFIG)):
        with open(os.path.join(mdir, name), "w") as f:
            json.dump(obj, f, indent=1)
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(CASES, f, indent=1, ensure_ascii=False)

    cfg = twin.load_config(os.path.join(mdir, "config.json"))
    model = twin.build(cfg, 11)
    with torch.no_grad():  # a nudge so that greedy captions stop at varied lengths
        model.caption.head.bias[cfg["caption"]["eos_id"]] += 0.4
    twin.write_safetensors(os.path.join(mdir, "model.safetensors"),
                           [(k, v.float()) for k, v in model.state_dict().items()],
                           {"format": "pt"})

    # inputs
    B, T = len(CASES), CONFIG["encoders"][0]["max_tokens"]
    tokens = torch.zeros(B, T, dtype=torch.long)
    image = torch.zeros(B, 1, 8, 8)
    mel = torch.zeros(B, 8, 12)
    present = torch.zeros(B, 3, dtype=torch.bool)
    for b, c in enumerate(CASES):
        if "text" in c:
            ids = tok.encode(c["text"].encode())[:T]
            tokens[b, :len(ids)] = torch.tensor(ids)
            present[b, 0] = True
        if "image" in c:
            image[b] = image_input(media[c["image"]])
            present[b, 1] = True
        if "audio" in c:
            mel[b] = mel_input(media[c["audio"]])
            present[b, 2] = True
    Tc = CONFIG["caption"]["max_tokens"]
    inputs = {"tokens": tokens, "image": image.double(), "mel": mel.double(),
              "caption": torch.zeros(B, Tc, dtype=torch.long)}
    m64 = model.double()
    with torch.no_grad():
        r = m64(inputs, present, need_loss=False)
    probs = torch.softmax(r["logits"], dim=-1).float()
    emb = torch.stack(r["emb"], dim=1).float() * present[:, :, None].float()
    cap, lens, scores, margins = twin.greedy_captions(m64, cfg, *r["caption_context"])
    assert float(margins.min()) > 1e-3, margins

    tensors = []
    for b in range(B):
        tensors += [("tokens.%d" % b, tokens[b].to(torch.int32)), ("image.%d" % b, image[b]),
                    ("mel.%d" % b, mel[b]), ("present.%d" % b, present[b].to(torch.int32)),
                    ("probs.%d" % b, probs[b]), ("emb.%d" % b, emb[b]),
                    ("caption.%d" % b, cap[b]), ("caption_len.%d" % b, lens[b:b + 1]),
                    ("caption_score.%d" % b, scores[b:b + 1].float())]
    twin.write_safetensors(os.path.join(out, "vectors.safetensors"), tensors)
    print("wrote %s: %d cases; caption lengths %s" % (out, B, lens.tolist()))


if __name__ == "__main__":
    main()
