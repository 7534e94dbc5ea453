#!/usr/bin/python3
"""Reference vectors for the graph ops added for the model work (issue 4):
rotary position embedding, GroupNorm and the attention probabilities.

Run with Debian's python3 (which has python3-torch):

    /usr/bin/python3 scripts/gen_graphops_vectors.py [outdir]

Writes tests/data/ops/<case>.safetensors in the format of
scripts/gen_op_vectors.py (whose safetensors writer and seeded input
generator it imports), read by tests/graph/test_ops_torch.c:
  in0, in1, ...   the op's inputs
  G               a fixed random tensor of the output's shape
  out             the op's output, computed by PyTorch in float64, as F32
  grad_in<i>      d sum(out * G) / d in<i> for each input whose gradient is
                  wanted (absent for attention_probs, which is forward only)
and __metadata__ {"op": ..., "case": ..., parameters as strings}.

The references are written independently of the C kernels: RoPE as the
Hugging Face LLaMA code does it (cat of the angles, rotate_half), GroupNorm
by torch.nn.functional.group_norm, the probabilities by a masked softmax.
"""

import os
import sys
import zlib

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_op_vectors import Case, write_safetensors  # noqa: E402

OUTDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "ops")

CASES = []


def case(name, op, inputs, fn, params, grad):
    CASES.append((name, op, inputs, fn, params, grad))


def run_case(outdir, name, op, inputs, fn, params, grad):
    ref = []
    for t, g in zip(inputs, grad):
        r = t.double().clone()
        r.requires_grad_(bool(g))
        ref.append(r)
    out = fn(*ref)
    gen = torch.Generator().manual_seed(zlib.crc32((name + "/G").encode()))
    G = torch.randn(tuple(out.shape), generator=gen, dtype=torch.float32)
    wanted = [r for r, g in zip(ref, grad) if g]
    grads = torch.autograd.grad((out * G.double()).sum(), wanted) if wanted else []
    tensors = [("in%d" % i, t) for i, t in enumerate(inputs)]
    tensors += [("G", G), ("out", out.detach().float())]
    gi = iter(grads)
    for i, g in enumerate(grad):
        if g:
            tensors.append(("grad_in%d" % i, next(gi).float()))
    meta = {"op": op, "case": name}
    meta.update(params)
    for n, t in tensors:
        assert torch.isfinite(t).all() or n.startswith("in"), (name, n)
    write_safetensors(os.path.join(outdir, name + ".safetensors"), tensors, meta)
    return sum(t.numel() * 4 for _, t in tensors)


# ------------------------------------------------------------------ rope


def rope_reference(x, pos_offset, base):
    """Hugging Face LLaMA's rotary embedding, in float64."""
    D = x.shape[-1]
    T = x.shape[-2]
    inv_freq = 1.0 / (base ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    t = torch.arange(T, dtype=torch.float64) + pos_offset
    freqs = torch.outer(t, inv_freq)            # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)     # (T, D)
    cos, sin = emb.cos(), emb.sin()

    def rotate_half(v):
        v1, v2 = v[..., : D // 2], v[..., D // 2:]
        return torch.cat((-v2, v1), dim=-1)

    return x * cos + rotate_half(x) * sin


def rope_cases():
    for name, shape, off, base in (
        ("rope", (2, 3, 5, 8), 0, 10000.0),
        ("rope_offset", (1, 2, 4, 6), 7, 500.0),
        ("rope_d2", (2, 1, 3, 2), 3, 10000.0),
        ("rope_long", (1, 2, 70, 16), 1000, 10000.0),  # more than one task of rows
    ):
        c = Case(name)
        x = c.randn(*shape)
        case(name, "rope", [x], lambda v, o=off, b=base: rope_reference(v, o, b),
             {"pos_offset": off, "base": repr(base)}, [1])


# ------------------------------------------------------------- groupnorm


def groupnorm_cases():
    specs = (
        # name, shape, groups, weight, bias
        ("groupnorm", (2, 6, 3, 4), 3, True, True),
        ("groupnorm_1d", (3, 4, 7), 2, False, False),
        ("groupnorm_one_group", (2, 4, 3, 3), 1, True, False),
        ("groupnorm_per_channel", (2, 4, 5), 4, True, True),
    )
    for name, shape, groups, hw, hb in specs:
        c = Case(name)
        x = 2.0 * c.randn(*shape) + 0.5
        ins = [x]
        C = shape[1]
        if hw:
            ins.append(1.0 + 0.3 * c.randn(C))
        if hb:
            ins.append(0.3 * c.randn(C))

        def fn(x, *wb, g=groups, hw=hw, hb=hb):
            w = wb[0] if hw else None
            b = wb[1 if hw else 0] if hb else None
            return F.group_norm(x, g, w, b, eps=1e-5)

        case(name, "groupnorm", ins, fn,
             {"groups": groups, "eps": "1e-05", "has_weight": int(hw), "has_bias": int(hb)},
             [1] * len(ins))


# ------------------------------------------------------- attention_probs


def probs_reference(scale, causal, with_bias):
    def f(q, k, bias=None):
        D = q.shape[-1]
        s = scale if scale > 0 else 1.0 / (D ** 0.5)
        scores = torch.matmul(q, k.transpose(-1, -2)) * s
        if with_bias:
            scores = scores + bias[:, None, None, :]
        if causal:
            Tq, Tk = q.shape[-2], k.shape[-2]
            i = torch.arange(Tq)[:, None]
            j = torch.arange(Tk)[None, :]
            scores = scores.masked_fill(j > i + (Tk - Tq), float("-inf"))
        dead = torch.isneginf(scores).all(dim=-1, keepdim=True)
        p = torch.softmax(scores.masked_fill(dead, 0.0), dim=-1)
        return p.masked_fill(dead | torch.isneginf(scores), 0.0)
    return f


def key_mask(c, B, Tk, dead_row=None):
    m = torch.zeros(B, Tk)
    keep = c.uniform(0.0, 1.0, B, Tk) < 0.7
    keep[:, 0] = True
    if dead_row is not None:
        keep[dead_row, :] = False  # every key of this example masked
    m[~keep] = float("-inf")
    return m


def probs_cases():
    c = Case("attention_probs")
    case(c.name, "attention_probs", [c.randn(2, 2, 5, 8), c.randn(2, 2, 5, 8)],
         probs_reference(0, 0, False), {"scale": "0", "causal": 0, "key_bias": 0}, [0, 0])
    c = Case("attention_probs_scale_causal")
    case(c.name, "attention_probs", [c.randn(1, 3, 6, 4), c.randn(1, 3, 6, 4)],
         probs_reference(0.7, 1, False), {"scale": "0.7", "causal": 1, "key_bias": 0}, [0, 0])
    c = Case("attention_probs_mask")
    case(c.name, "attention_probs",
         [c.randn(3, 2, 4, 8), c.randn(3, 2, 6, 8), key_mask(c, 3, 6, dead_row=1)],
         probs_reference(0, 0, True), {"scale": "0", "causal": 0, "key_bias": 1}, [0, 0, 0])
    c = Case("attention_probs_cross_causal")  # Tq > Tk: the first queries see no key
    case(c.name, "attention_probs",
         [c.randn(2, 2, 5, 8), c.randn(2, 2, 3, 8), key_mask(c, 2, 3)],
         probs_reference(0, 1, True), {"scale": "0", "causal": 1, "key_bias": 1}, [0, 0, 0])
    c = Case("attention_probs_bias")  # a finite additive bias
    case(c.name, "attention_probs", [c.randn(2, 2, 4, 8), c.randn(2, 2, 5, 8), c.randn(2, 5)],
         probs_reference(0, 0, True), {"scale": "0", "causal": 0, "key_bias": 1}, [0, 0, 0])


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else OUTDIR
    os.makedirs(outdir, exist_ok=True)
    torch.set_grad_enabled(True)
    rope_cases()
    groupnorm_cases()
    probs_cases()
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    total = 0
    for c in CASES:
        total += run_case(outdir, *c)
    print("wrote %d cases to %s (%.1f KiB of tensor data)" % (len(CASES), outdir, total / 1024))


if __name__ == "__main__":
    main()
