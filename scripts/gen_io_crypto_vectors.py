#!/usr/bin/env python3
"""Reference vectors for tests/io/test_crypto.c and test_checksum.c, made
with independent implementations (hashlib's BLAKE2b, PyNaCl's libsodium
bindings for the secretstream), not with trimodal.

Writes under tests/data/io/:
  checksum.safetensors  a safetensors file with "__checksum__" in its
                        metadata, laid out as trimodal's writer lays it out
  enc_small.bin         1000 bytes of the pattern, encrypted
  enc_2chunks.bin       131072 bytes (exactly two 64 KiB chunks), encrypted
The pattern byte i is (i * 31 + (i >> 8)) & 255; the key is bytes 0..31.

Run: /usr/bin/python3 scripts/gen_io_crypto_vectors.py   (needs python3-nacl)
"""
import hashlib
import json
import os
import struct

import nacl.bindings as nb

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "io")
KEY = bytes(range(32))


def pattern(n):
    return bytes(((i * 31 + (i >> 8)) & 255) for i in range(n))


def checksum_safetensors():
    a = struct.pack("<6f", 1.0, -2.5, 3.25, 0.0, 1e-3, 7.0)
    b = struct.pack("<4i", 1, -2, 3, 2**31 - 1)
    # trimodal's layout: metadata first with __checksum__ last, no spaces,
    # the tensors in the given order, padded with spaces to a multiple of 8
    zeros = "0" * 64

    def header(digest):
        h = ('{"__metadata__":{"format":"pt","__checksum__":"blake2b-256:%s"},'
             '"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},'
             '"b":{"dtype":"I32","shape":[4],"data_offsets":[24,40]}}') % digest
        while (8 + len(h)) % 8:
            h += " "
        return h.encode()

    h0 = header(zeros)
    body = struct.pack("<Q", len(h0)) + h0 + a + b
    digest = hashlib.blake2b(body, digest_size=32).hexdigest()
    h = header(digest)
    data = struct.pack("<Q", len(h)) + h + a + b
    # a plain safetensors reader's view: valid JSON, string metadata
    meta = json.loads(h)["__metadata__"]
    assert all(isinstance(v, str) for v in meta.values())
    with open(os.path.join(OUT, "checksum.safetensors"), "wb") as f:
        f.write(data)


def encrypt(plain, chunk_log2=16):
    state = nb.crypto_secretstream_xchacha20poly1305_state()
    sh = nb.crypto_secretstream_xchacha20poly1305_init_push(state, KEY)
    prefix = b"TMENC\0" + bytes([1, chunk_log2])
    check = hashlib.blake2b(prefix + sh, digest_size=16, key=KEY).digest()
    out = [prefix, sh, check]
    chunk = 1 << chunk_log2
    n = max(1, (len(plain) + chunk - 1) // chunk)
    for c in range(n):
        part = plain[c * chunk:(c + 1) * chunk]
        tag = (nb.crypto_secretstream_xchacha20poly1305_TAG_FINAL if c == n - 1
               else nb.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE)
        out.append(nb.crypto_secretstream_xchacha20poly1305_push(state, part, prefix, tag))
    return b"".join(out)


def main():
    os.makedirs(OUT, exist_ok=True)
    checksum_safetensors()
    with open(os.path.join(OUT, "enc_small.bin"), "wb") as f:
        f.write(encrypt(pattern(1000)))
    with open(os.path.join(OUT, "enc_2chunks.bin"), "wb") as f:
        f.write(encrypt(pattern(131072)))


if __name__ == "__main__":
    main()
