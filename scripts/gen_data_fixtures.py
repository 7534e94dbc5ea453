#!/usr/bin/env python3
"""Writes the small dataset under tests/data/data/ that the data-layer shell
test (tests/data/test_data_cli.sh) checks with `trimodal data check`:
tiny PNGs and WAVs made with the standard library only (zlib, wave), a
manifest.jsonl with every field, a dataset.json, and a broken manifest
(bad.jsonl) with one problem of each kind on known lines.

Run: /usr/bin/python3 scripts/gen_data_fixtures.py
"""
import json
import math
import os
import struct
import wave
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "data")


def png(path, w, h, seed):
    rows = b""
    for y in range(h):
        rows += b"\x00" + bytes(((x * 37 + y * 11 + seed * 5) % 256) for x in range(w * 3))
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def wav(path, rate, seconds, freq):
    n = int(rate * seconds)
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / rate)))
                               for i in range(n)))


def main():
    os.makedirs(os.path.join(OUT, "img"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "wav"), exist_ok=True)
    png(os.path.join(OUT, "img", "a.png"), 28, 28, 1)
    png(os.path.join(OUT, "img", "b.png"), 40, 20, 2)
    wav(os.path.join(OUT, "wav", "a.wav"), 16000, 1.5, 440)
    wav(os.path.join(OUT, "wav", "b.wav"), 8000, 0.75, 660)
    with open(os.path.join(OUT, "img", "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nnot really a png")
    rows = [
        {"id": "s1", "text": "a red sneaker", "image": "img/a.png", "audio": "wav/a.wav",
         "label": "sneaker", "split": "train", "transcript": "a red sneaker",
         "words": [{"w": "red", "start": 0.2, "end": 0.5}, {"w": "sneaker", "start": 0.6, "end": 1.2}],
         "region": [2, 2, 26, 26], "voice": "f1"},
        {"id": "s2", "text": "a brown boot", "image": "img/b.png", "audio": "wav/b.wav",
         "label": "boot", "split": "train", "voice": "m1"},
        {"id": "s3", "text": "just a hat", "label": "hat", "split": "val", "voice": "f1"},
        {"id": 4, "image": "img/a.png", "label": 0, "split": "test"},
        {"id": "s5", "audio": "wav/b.wav", "split": "holdout"},
    ]
    with open(os.path.join(OUT, "manifest.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    ds = {"name": "fixture", "version": "1", "description": "the data layer's test fixture",
          "classes": ["sneaker", "boot", "hat"], "splits": {"train": 2, "val": 1, "test": 2},
          "manifest": "manifest.jsonl", "modalities": ["text", "image", "audio"],
          "recipe": {"script": "scripts/gen_data_fixtures.py"}, "license": "CC0-1.0"}
    with open(os.path.join(OUT, "dataset.json"), "w") as f:
        json.dump(ds, f, indent=2)
        f.write("\n")
    bad = [
        '{"id": "b1", "text": "fine", "image": "img/a.png", "label": "boot", "split": "train"}',
        '{"id": "b2", "text": "broken json",',
        '{"id": "b1", "text": "duplicate id"}',
        '{"id": "b4", "label": 7}',
        '{"id": "b5", "image": "img/missing.png"}',
        '{"id": "b6", "image": "img/broken.png"}',
        '{"id": "b7", "image": "img/b.png", "region": [0, 0, 50, 10]}',
    ]
    with open(os.path.join(OUT, "bad.jsonl"), "w") as f:
        f.write("\n".join(bad) + "\n")


if __name__ == "__main__":
    main()
