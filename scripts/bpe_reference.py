#!/usr/bin/python3
"""A small byte-level BPE reference, written from the published algorithm
(GPT-2's encoder: bytes mapped to printable characters, a pre-tokenising
regex, merges applied lowest rank first; CLIP's variant: lowercase, its own
regex, '</w>' on the last symbol of a word). Plain Python plus the `regex`
module (Debian's python3-regex) for \\p{L} and \\p{N}.

It defines what trimodal's C tokenizer (src/text/) must produce:
scripts/gen_text_vectors.py runs it to write tests/data/text/. Choices that
the published tokenizers never had to make, because their input is always
valid Unicode, are trimodal's and are stated here too:
  * input is bytes; it is cut into maximal stretches of valid UTF-8 and runs
    of bytes that start no valid UTF-8 character; each such run is one
    pre-token (the "byte mode"), valid stretches go through the regex;
  * training counts the pre-tokens of the GPT-2 regex, pieces of at most
    MAX_TRAIN_WORD bytes, and merges the most frequent pair, ties going to
    the smaller (left id, right id).
"""
import json

import regex

GPT2_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                r"""|\s+(?!\S)|\s+""")
CLIP_PATTERN = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
                r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")
MAX_TRAIN_WORD = 256
EOW = "</w>"


def bytes_to_unicode():
    """GPT-2's table: printable bytes stand for themselves, the others for
    the code points from 256 up, in byte order."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1))
            + list(range(0xAE, 0xFF + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_ENC = bytes_to_unicode()
BYTE_DEC = {c: b for b, c in BYTE_ENC.items()}


def to_chars(data: bytes) -> str:
    return "".join(BYTE_ENC[b] for b in data)


def from_chars(s: str) -> bytes:
    return bytes(BYTE_DEC[c] for c in s)


def utf8_char_len(data: bytes, i: int) -> int:
    """Length of the valid UTF-8 character starting at data[i], 0 if none
    (overlong forms, surrogates and code points past U+10FFFF are invalid,
    as in Python's strict decoder)."""
    b = data[i]
    n = 1 if b < 0x80 else 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF \
        else 4 if 0xF0 <= b <= 0xF4 else 0
    if n == 0 or i + n > len(data):
        return 0
    try:
        data[i:i + n].decode("utf-8")
    except UnicodeDecodeError:
        return 0
    return n


def utf8_stretches(data: bytes):
    """[(valid, bytes)]: maximal valid stretches and invalid runs, in order."""
    out, i, start, cur = [], 0, 0, None
    while i < len(data):
        n = utf8_char_len(data, i)
        valid = n > 0
        if cur is not None and valid != cur:
            out.append((cur, data[start:i]))
            start = i
        cur = valid
        i += n if n else 1
    if cur is not None:
        out.append((cur, data[start:]))
    return out


class Tokenizer:
    """vocab: token string -> id; merges: [(a, b)] by rank; added:
    [(content, id, special)]. clip=True: lowercase, CLIP regex (only its
    matches are kept), '</w>' on each word's last symbol."""

    def __init__(self, vocab, merges, added=(), clip=False, add_prefix_space=False,
                 ignore_merges=False, unk=None):
        self.vocab = dict(vocab)
        self.ranks = {tuple(m): r for r, m in enumerate(merges)}
        self.added = sorted(added, key=lambda t: -len(t[0].encode()))
        self.clip = clip
        self.pattern = regex.compile(CLIP_PATTERN if clip else GPT2_PATTERN,
                                     regex.IGNORECASE if clip else 0)
        self.add_prefix_space = add_prefix_space
        self.ignore_merges = ignore_merges
        self.unk = unk
        self.cache = {}

    def bpe(self, word: bytes):
        """The published loop: merge every occurrence of the lowest-ranked
        adjacent pair, left to right, until no pair has a rank."""
        key = word
        if key in self.cache:
            return self.cache[key]
        syms = list(to_chars(word))
        if self.clip:
            syms[-1] += EOW
        if self.ignore_merges and "".join(syms) in self.vocab:
            ids = [self.vocab["".join(syms)]]
            self.cache[key] = ids
            return ids
        while len(syms) > 1:
            pairs = {(syms[i], syms[i + 1]) for i in range(len(syms) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(syms):
                if i < len(syms) - 1 and (syms[i], syms[i + 1]) == best:
                    merged.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    merged.append(syms[i])
                    i += 1
            syms = merged
        ids = []
        for s in syms:
            if s in self.vocab:
                ids.append(self.vocab[s])
            elif self.unk is not None:
                ids.append(self.unk)
        self.cache[key] = ids
        return ids

    def pretokenize(self, data: bytes):
        """The pre-tokens (bytes) of one piece of text without added tokens."""
        if self.add_prefix_space and not data.startswith(b" "):
            data = b" " + data
        words = []
        for valid, chunk in utf8_stretches(data):
            if not valid:
                words.append(chunk)
                continue
            text = chunk.decode("utf-8")
            if self.clip:
                text = text.lower()
            words.extend(m.group(0).encode("utf-8") for m in self.pattern.finditer(text))
        return words

    def split_added(self, data: bytes, parse_special: bool):
        """[(is_added_id or None, bytes)]: leftmost-longest added tokens."""
        cands = [(c.encode(), i) for c, i, special in self.added if parse_special or not special]
        out, i, start = [], 0, 0
        while i < len(data):
            hit = next(((c, tid) for c, tid in cands if data.startswith(c, i)), None)
            if hit:
                if start < i:
                    out.append((None, data[start:i]))
                out.append((hit[1], hit[0]))
                i += len(hit[0])
                start = i
            else:
                i += 1
        if start < len(data):
            out.append((None, data[start:]))
        return out

    def encode(self, data: bytes, parse_special=False):
        ids = []
        for tid, piece in self.split_added(data, parse_special):
            if tid is not None:
                ids.append(tid)
                continue
            for w in self.pretokenize(piece):
                ids.extend(self.bpe(w))
        return ids

    def decode(self, ids):
        inv = {i: s for s, i in self.vocab.items()}
        added = {i: c for c, i, _ in self.added}
        out = b""
        for i in ids:
            if i in added:
                out += added[i].encode()
                continue
            s = inv[i]
            if self.clip and s.endswith(EOW):
                out += from_chars(s[:-len(EOW)]) + b" "
            else:
                out += from_chars(s)
        return out.strip(b" ") if self.clip else out


def gpt2_words(texts, clip=False):
    """Word counts for training: {word bytes: count}; for CLIP the words are
    its lowercased regex matches."""
    tok = Tokenizer({}, [], clip=clip)
    counts = {}
    for data in texts:
        for w in tok.pretokenize(data):
            for k in range(0, len(w), MAX_TRAIN_WORD):
                piece = w[k:k + MAX_TRAIN_WORD]
                counts[piece] = counts.get(piece, 0) + 1
    return counts


def byte_order():
    """The 256 bytes ordered by their GPT-2 character (HF's trainer order)."""
    return sorted(range(256), key=lambda b: ord(BYTE_ENC[b]))


def train(texts, vocab_size, min_frequency=2, specials=(), clip=False):
    """Returns (vocab {token: id}, merges [(a, b)]), specials first.
    Pair counts are recomputed from scratch each step: slow but plain."""
    tokens = []  # id -> token string
    for s in specials:
        if s not in tokens:
            tokens.append(s)
    base = len(tokens)
    tokens += [BYTE_ENC[b] for b in byte_order()]
    if clip:
        tokens += [BYTE_ENC[b] + EOW for b in byte_order()]
    index = {t: i for i, t in enumerate(tokens)}
    words = []
    for w, c in gpt2_words(texts, clip).items():
        syms = [index[BYTE_ENC[b]] for b in w]
        if clip:
            syms[-1] = index[BYTE_ENC[w[-1]] + EOW]
        words.append((syms, c))
    words.sort(key=lambda wc: wc[0])
    merges = []
    while len(tokens) < vocab_size:
        counts = {}
        for syms, c in words:
            for i in range(len(syms) - 1):
                p = (syms[i], syms[i + 1])
                counts[p] = counts.get(p, 0) + c
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < min_frequency:
            break
        a, b = best
        new = tokens[a] + tokens[b]
        if new in index:
            nid = index[new]
        else:
            nid = len(tokens)
            tokens.append(new)
            index[new] = nid
        merges.append((tokens[a], tokens[b]))
        for syms, _ in words:
            i = 0
            while i < len(syms) - 1:
                if syms[i] == a and syms[i + 1] == b:
                    syms[i:i + 2] = [nid]
                i += 1
    del base
    return index, merges


def hf_json(vocab, merges, added=(), roles=None, merges_as_pairs=False,
            add_prefix_space=False, ignore_merges=False):
    """A Hugging Face tokenizer.json for a byte-level BPE."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": sp}
                         for c, i, sp in added],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": add_prefix_space,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                  "vocab": dict(sorted(vocab.items(), key=lambda kv: kv[1])),
                  "merges": [list(m) if merges_as_pairs else f"{m[0]} {m[1]}"
                             for m in merges]},
        **({"trimodal": {"special_tokens": roles}} if roles else {}),
    }


if __name__ == "__main__":
    import sys
    data = sys.stdin.buffer.read()
    vocab, merges = train([data], 300)
    tok = Tokenizer(vocab, merges)
    ids = tok.encode(data)
    assert tok.decode(ids) == data
    print(json.dumps({"vocab": len(vocab), "merges": len(merges), "tokens": len(ids)}))
