#!/usr/bin/python3
"""Reference gradients of a small MLP trained in mixed precision.

Writes tests/data/graph/precision_mlp.safetensors, read by
tests/graph/test_precision.c. The model is

    h = relu(x W1^T + b1);  logits = h W2^T + b2;  loss = cross_entropy(logits, y)

and for each precision p in (bf16, f16) every matmul rounds its operands to
p first (forward: x, W; backward: the incoming gradient dY and the other
operand), exactly what tm_graph_set_precision promises; products and sums
then run in float64 here (the engine sums in f32, so the tolerance is f32
summation error, far below one bf16 ulp). Everything else is float64.

Tensors: x (8, 12), y (8) as f32 labels, w1 (16, 12), b1 (16), w2 (5, 16),
b2 (5), then for p in bf16, f16, f32: loss_<p> (1), logits_<p> (8, 5), and
grad_<name>_<p> for each parameter. f32 rounds nothing (a control).
"""
import json
import os
import struct
import sys

import numpy as np
import torch

ROUND = {
    "bf16": lambda t: t.float().to(torch.bfloat16).double(),
    "f16": lambda t: t.float().to(torch.float16).double(),
    "f32": lambda t: t.float().double(),
}


def make_linear(rnd):
    class RoundedLinear(torch.autograd.Function):
        """y = rnd(x) rnd(w)^T in float64; backward rounds dY and the operand."""

        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return rnd(x) @ rnd(w).t()

        @staticmethod
        def backward(ctx, dy):
            x, w = ctx.saved_tensors
            rdy = rnd(dy)
            return rdy @ rnd(w), rdy.t() @ rnd(x)

    return RoundedLinear.apply


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    header["__metadata__"] = {"generator": "scripts/gen_precision_vectors.py"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = os.path.join(root, "tests", "data", "graph", "precision_mlp.safetensors")
    g = torch.Generator().manual_seed(5)
    # values with more mantissa bits than bf16 keeps, so rounding matters
    x = (torch.rand(8, 12, generator=g) * 4 - 2).float()
    y = torch.randint(0, 5, (8,), generator=g)
    w1 = (torch.rand(16, 12, generator=g) - 0.5).float()
    b1 = (torch.rand(16, generator=g) * 0.2 - 0.1).float()
    w2 = (torch.rand(5, 16, generator=g) - 0.5).float()
    b2 = (torch.rand(5, generator=g) * 0.2 - 0.1).float()
    t = {"x": x.numpy(), "y": y.float().numpy(), "w1": w1.numpy(), "b1": b1.numpy(),
         "w2": w2.numpy(), "b2": b2.numpy()}
    for p, rnd in ROUND.items():
        lin = make_linear(rnd)
        P = {k: v.double().clone().requires_grad_(True)
             for k, v in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))}
        h = torch.relu(lin(x.double(), P["w1"]) + P["b1"])
        logits = lin(h, P["w2"]) + P["b2"]
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        t["loss_" + p] = np.array([loss.item()])
        t["logits_" + p] = logits.detach().numpy()
        for k in P:
            t["grad_%s_%s" % (k, p)] = P[k].grad.numpy()
    write_safetensors(out, t)
    print("wrote", out, os.path.getsize(out), "bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
