#!/usr/bin/env python3
"""Writes the safetensors files that tests/io/test_safetensors.c reads, and
the seed inputs of fuzz/fuzz_safetensors.c.

The files are written here with struct and json only (no numpy, torch or
safetensors package), following the format's specification: an 8-byte
little-endian header length, a JSON header, then the data. They copy the
reference writer's habits, which differ from trimodal's own writer: header
keys sorted by name, data ordered by decreasing alignment then by name (so
data order differs from header order), header padded with spaces to a
multiple of 8. One file is deliberately left unpadded so that its f32 data
is misaligned, as MLX writes them.

Usage: python3 scripts/gen_safetensors_vectors.py   (from the repository root)
The values are spelled out in the C test; change both together.
"""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "io")
CORPUS = os.path.join(ROOT, "fuzz", "corpus", "safetensors")


def bf16_bits(x):
    """Round-to-nearest-even f32 -> bf16 (the values used are exact)."""
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


PACK = {
    "F32": lambda v: struct.pack("<%df" % len(v), *v),
    "F16": lambda v: struct.pack("<%de" % len(v), *v),
    "BF16": lambda v: struct.pack("<%dH" % len(v), *[bf16_bits(x) for x in v]),
    "I32": lambda v: struct.pack("<%di" % len(v), *v),
    "I8": lambda v: struct.pack("<%db" % len(v), *v),
    "I64": lambda v: struct.pack("<%dq" % len(v), *v),
    "U8": lambda v: struct.pack("<%dB" % len(v), *v),
}
ALIGN = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I8": 1, "I64": 8, "U8": 1}


def serialize(tensors, metadata=None, pad=True):
    """tensors: {name: (dtype, shape, values)}. Returns the file's bytes."""
    order = sorted(tensors, key=lambda k: (-ALIGN[tensors[k][0]], k))
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name in order:
        dtype, shape, values = tensors[name]
        blob = PACK[dtype](values)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    keys = (["__metadata__"] if metadata is not None else []) + sorted(tensors)
    text = json.dumps({k: header[k] for k in keys}, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


BASIC = {
    "f32": ("F32", [2, 3], [-1.5, 0.0, 1.0, 2.25, 3.5, -0.125]),
    "bf16": ("BF16", [4], [1.0, -2.0, 0.5, 3.140625]),
    "f16": ("F16", [2, 2], [1.0, -0.5, 65504.0, 2.0 ** -14]),
    "i32": ("I32", [3], [-7, 0, 2147483647]),
    "i8": ("I8", [5], [-128, -1, 0, 1, 127]),
    "scalar": ("F32", [], [42.0]),
    "empty": ("F32", [0, 3], []),
    "five_d": ("F32", [1, 2, 1, 2, 1], [1.0, 2.0, 3.0, 4.0]),
    "position_ids": ("I64", [2], [0, 1]),
}
BASIC_META = {"format": "pt", "note": "written by gen_safetensors_vectors.py"}

# f32 after an odd-length i8 tensor, no padding: misaligned on purpose.
UNALIGNED = {
    "a_bytes": ("I8", [3], [1, 2, 3]),
    "b_f32": ("F32", [2], [0.25, -8.0]),
}


def unaligned_file():
    header = {"a_bytes": {"dtype": "I8", "shape": [3], "data_offsets": [0, 3]},
              "b_f32": {"dtype": "F32", "shape": [2], "data_offsets": [3, 11]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    while (8 + len(text) + 3) % 4 != 1:  # b_f32 starts 1 byte past a multiple of 4
        text += b" "
    return (struct.pack("<Q", len(text)) + text + PACK["I8"]([1, 2, 3])
            + PACK["F32"]([0.25, -8.0]))


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    print("wrote %s (%d bytes)" % (os.path.relpath(path, ROOT), len(data)))


def main():
    basic = serialize(BASIC, BASIC_META)
    unaligned = unaligned_file()
    write(os.path.join(DATA, "py_basic.safetensors"), basic)
    write(os.path.join(DATA, "py_unaligned.safetensors"), unaligned)

    seeds = {
        "basic.safetensors": basic,
        "unaligned.safetensors": unaligned,
        "empty_header.safetensors": serialize({}),
        "metadata_only.safetensors": serialize({}, {"k": "v", "x": "\u00e9\\\"q"}),
        "scalar_and_empty.safetensors": serialize(
            {"s": ("F32", [], [1.0]), "e": ("BF16", [3, 0], [])}),
        "u8.safetensors": serialize({"m": ("U8", [2, 2], [0, 1, 2, 255])}),
        "overlap.safetensors": (lambda t: struct.pack("<Q", len(t)) + t + b"\0" * 8)(
            b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
            b'"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'),
    }
    for name, data in seeds.items():
        write(os.path.join(CORPUS, name), data)


if __name__ == "__main__":
    main()
