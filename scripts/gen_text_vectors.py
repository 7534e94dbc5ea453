#!/usr/bin/python3
"""Writes the tokenizer test vectors under tests/data/text/ with the plain
Python reference (scripts/bpe_reference.py):

  corpus.txt               a made-up corpus (seeded; English, accents, CJK, emoji)
  trained_tokenizer.json   BPE trained on it (vocab 400, min frequency 2, the six
                           default specials), HF tokenizer.json format
  gpt2_vocab.json, gpt2_merges.txt   a small GPT-2 style pair (+ <|endoftext|>)
  clip_vocab.json, clip_merges.txt   a small CLIP style pair ("</w>", lowercase)
  hf_tokenizer.json        the GPT-2 vocabulary as an HF tokenizer.json with merges
                           as pairs, add_prefix_space and two added tokens
  vectors.json             inputs (hex) and the ids each tokenizer must give
  synonyms.tsv             a synonym table for the augmentation tests

Run: /usr/bin/python3 scripts/gen_text_vectors.py [--out tests/data/text]
     /usr/bin/python3 scripts/gen_text_vectors.py --lower-table src/text/unicode_lower.h
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe_reference as ref  # noqa: E402

SPECIALS = ["<pad>", "<s>", "</s>", "<cls>", "<mask>", "<unk>"]
ROLES = dict(zip(["pad", "bos", "eos", "cls", "mask", "unk"], SPECIALS))

WORDS = """the a an of to and in is was it for on with as by at from that this these
those he she they we you I his her their our your my cat dog bird fish horse tree river
mountain city road house window door table chair book letter number picture sound voice
music song light dark water fire earth wind stone glass paper model train test sample
image audio text token vector matrix layer weight gradient batch epoch loss value small
large quick slow bright quiet loud happy sad early late running walked jumps spoke sings
reading writing learned trained tested measured encoded decoded quickly slowly carefully
naïve café façade über Zürich résumé piñata smörgåsbord crème brûlée São Paulo Ærø
東京 日本語 中文 学习 模型 数据 图像 声音 한국어 데이터 Привет мир данные модель
""".split()
PUNCT = [".", ",", "!", "?", ";", ":", " -", " (see above)", "...", "\"", "'"]
CONTRACTIONS = ["don't", "it's", "we've", "you'll", "I'm", "they're", "she'd", "can't"]
EMOJI = ["🎉", "🚀", "👍🏽", "👨‍👩‍👧", "❤️", "🙂"]


def make_corpus(seed=1234, n_sentences=1400):
    rng = random.Random(seed)
    lines = []
    for _ in range(n_sentences):
        n = rng.randint(3, 14)
        ws = []
        for _ in range(n):
            r = rng.random()
            if r < 0.06:
                ws.append(rng.choice(CONTRACTIONS))
            elif r < 0.09:
                ws.append(str(rng.randint(0, 99999)))
            elif r < 0.11:
                ws.append(rng.choice(EMOJI))
            else:
                ws.append(rng.choice(WORDS))
        s = " ".join(ws)
        s = s[0].upper() + s[1:] + rng.choice(PUNCT)
        if rng.random() < 0.05:
            s = "    " + s  # indentation
        if rng.random() < 0.05:
            s += "\t" + rng.choice(WORDS)
        lines.append(s)
        if rng.random() < 0.08:
            lines.append("")
    return ("\n".join(lines) + "\n").encode("utf-8")


def inputs():
    """The encode vectors' inputs: bytes, ASCII to invalid UTF-8."""
    rng = random.Random(99)
    out = [
        b"", b" ", b"a", b"Hello world", b"Hello, world!", b"  leading and trailing  ",
        b"tabs\tand\nnewlines\n\n\nand runs   of    spaces", b"line\r\nbreaks\r\n",
        b"don't you'll we've I'm they're she'd it's 's 'S", b"The quick brown fox.",
        "naïve café façade über Zürich résumé".encode(),
        "ÜNÏCÖDÉ CAPITALS ÀÉÎÕÜ".encode(), "東京 日本語のテキスト".encode(),
        "中文分词测试，标点。".encode(), "한국어 데이터".encode(), "Привет мир".encode(),
        "emoji 🎉🚀 family 👨‍👩‍👧 thumbs 👍🏽".encode(), b"numbers 12345 3.14159 1e10 007",
        b"punctuation!!! ??? ... --- ((()))", "no\u00a0break\u3000ideographic\u2028sep".encode(),
        b"a" * 300, b"ab" * 200 + b" end", b"x" * 1000,
        b"\xff\xfe", b"abc\x80def", b"\xe2\x82", b"\xc0\xaf overlong", b"\xed\xa0\x80 surrogate",
        b"\xf4\x90\x80\x80 too big", b"mixed \xe2\x82\xac euro \xe2\x82 cut",
        b"nul\x00byte\x00\x00", b"\x00", b"ctl\x01\x02\x1b[0m", b"trailing space ",
        b"   ", b"\n", b"word\n", b"  \n  x", b"<|endoftext|>", b"a<|endoftext|>b <|endoftext|> c",
        b"[NEW] token [NEW]x", b"<s>hi</s>",
    ]
    vocab = sorted(ref.gpt2_words([make_corpus()]).keys())
    for _ in range(20):
        out.append(b"".join(rng.choice(vocab) for _ in range(rng.randint(1, 12))))
    for _ in range(10):
        out.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))))
    return out


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")


def lower_table(path):
    """The 1:1 lowercase mappings of Python's str.lower() (Unicode of this
    Python) as ranges {first, last, delta, stride} for src/text/."""
    pairs = []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        lo = chr(cp).lower()
        if len(lo) == 1 and lo != chr(cp):
            pairs.append((cp, ord(lo) - cp))
    ranges = []
    for cp, d in pairs:
        if ranges:
            f, last, dd, stride = ranges[-1]
            if dd == d and (cp - last == stride or (last == f and cp - last in (1, 2))):
                ranges[-1] = (f, cp, d, cp - last if last == f else stride)
                continue
        ranges.append((cp, cp, d, 1))
    import unicodedata
    with open(path, "w") as f:
        f.write("/* Generated by scripts/gen_text_vectors.py --lower-table from Python's\n"
                f" * str.lower() (Unicode {unicodedata.unidata_version}): the one-to-one lowercase\n"
                " * mappings as ranges; first..last step stride map to cp + delta. U+0130\n"
                " * (lowercase 'i' + U+0307) and final sigma are handled in the code. */\n")
        f.write("static const struct { uint32_t first, last; int32_t delta; uint8_t stride; }\n"
                "    tm_lower_ranges[] = {\n")
        for r in ranges:
            f.write("    {0x%04X, 0x%04X, %d, %d},\n" % r)
        f.write("};\n")
    print(f"{path}: {len(ranges)} ranges from {len(pairs)} mappings")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                   "data", "text"))
    ap.add_argument("--lower-table")
    args = ap.parse_args()
    if args.lower_table:
        lower_table(args.lower_table)
        return
    out = args.out
    os.makedirs(out, exist_ok=True)
    corpus = make_corpus()
    with open(os.path.join(out, "corpus.txt"), "wb") as f:
        f.write(corpus)
    cases = inputs()
    sets = []

    def add_set(name, load, tok, parse_special=False):
        vec = []
        for data in cases:
            ids = tok.encode(data, parse_special)
            if not tok.clip and not tok.add_prefix_space:
                assert tok.decode(ids) == data, (name, data)
            vec.append({"hex": data.hex(), "ids": ids})
        sets.append({"name": name, "load": load, "parse_special": parse_special,
                     "cases": vec})

    # 1. trained on the corpus, HF format, with the default specials.
    vocab, merges = ref.train([corpus], 400, 2, SPECIALS)
    added = [(s, vocab[s], True) for s in SPECIALS]
    write_json(os.path.join(out, "trained_tokenizer.json"),
               ref.hf_json(vocab, merges, added, roles=ROLES))
    tok = ref.Tokenizer(vocab, merges, added)
    add_set("trained", {"json": "text/trained_tokenizer.json"}, tok)
    add_set("trained_special", {"json": "text/trained_tokenizer.json"}, tok, True)

    # 2. GPT-2 style vocab.json + merges.txt from half the corpus.
    half = corpus[:len(corpus) // 2]
    gv, gm = ref.train([half], 350, 2)
    gv["<|endoftext|>"] = len(gv)
    write_json(os.path.join(out, "gpt2_vocab.json"), gv)
    with open(os.path.join(out, "gpt2_merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in gm))
    eot = [("<|endoftext|>", gv["<|endoftext|>"], True)]
    tok = ref.Tokenizer(gv, gm, eot)
    load = {"vocab": "text/gpt2_vocab.json", "merges": "text/gpt2_merges.txt", "style": "gpt2"}
    add_set("gpt2", load, tok)
    add_set("gpt2_special", load, tok, True)

    # 3. CLIP style.
    cv, cm = ref.train([corpus], 512 + 160, 2, clip=True)
    for s in ["<|startoftext|>", "<|endoftext|>"]:
        cv[s] = len(cv)
    write_json(os.path.join(out, "clip_vocab.json"), cv)
    with open(os.path.join(out, "clip_merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in cm))
    clip_added = [("<|startoftext|>", cv["<|startoftext|>"], True),
                  ("<|endoftext|>", cv["<|endoftext|>"], True)]
    tok = ref.Tokenizer(cv, cm, clip_added, clip=True)
    add_set("clip", {"vocab": "text/clip_vocab.json", "merges": "text/clip_merges.txt",
                     "style": "clip"}, tok)

    # 4. HF tokenizer.json: merges as pairs, add_prefix_space, an extra added token.
    hf_added = eot + [("[NEW]", len(gv), False)]
    write_json(os.path.join(out, "hf_tokenizer.json"),
               ref.hf_json(gv, gm, hf_added, merges_as_pairs=True, add_prefix_space=True))
    tok = ref.Tokenizer(gv, gm, hf_added, add_prefix_space=True)
    add_set("hf", {"json": "text/hf_tokenizer.json"}, tok)
    add_set("hf_special", {"json": "text/hf_tokenizer.json"}, tok, True)

    write_json(os.path.join(out, "vectors.json"), {"sets": sets})
    with open(os.path.join(out, "synonyms.tsv"), "w", encoding="utf-8") as f:
        f.write("# word<TAB>synonym,synonym,...\n"
                "quick\tfast,rapid,speedy\n"
                "happy\tglad,cheerful\n"
                "dog\thound\n"
                "large\tbig,huge,enormous\n"
                "ice\tfrozen water\n"
                "\n"
                "café\tcoffee shop,bistro\n")
    total = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    print(f"{out}: {len(sets)} sets of {len(cases)} cases, {total} bytes")


if __name__ == "__main__":
    main()
