#!/usr/bin/python3
"""Reference vectors for the vectorised simple-op kernels (src/ops/basic*.c),
from PyTorch in float64, stored as F32:

    /usr/bin/python3 scripts/gen_basic_vectors.py [outdir]

writes, under tests/data/ops/ (read by tests/ops/test_basic_math.c and
tests/ops/test_basic_rows.c):

  basic_gelu_wide.safetensors   x: 3072 points over [-12, 12] (a dense
      grid, the points where the erf approximation switches form, and
      random values); G: random; gelu, gelu_grad (d sum(gelu(x) G)/dx),
      gelu_tanh, gelu_tanh_grad.
  basic_rows.safetensors        rows longer than a vector, with tails:
      LayerNorm over C = 259 (x (5, 259), w, b, G, out, dx, dw, db),
      softmax and log-softmax over C = 1003 (x (2, 1003), G, each's out
      and dx), a bias add (a (2, 5, 203) + b (203)) and a broadcast
      multiply (a (2, 5, 203) * m (2, 1, 203)) with out and both grads.

Inputs come from a generator seeded per file, so the bytes are
reproducible. Needs torch; uses gen_op_vectors.write_safetensors.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_op_vectors import write_safetensors  # noqa: E402

OUTDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "ops")


def f32(t):
    return t.to(torch.float32)


def grads(fn, inputs, G):
    """fn(*inputs) and d sum(fn * G) / d input, all in float64."""
    xs = [x.detach().to(torch.float64).requires_grad_(True) for x in inputs]
    out = fn(*xs)
    (out * G.to(torch.float64)).sum().backward()
    return out.detach(), [x.grad for x in xs]


def gelu_wide(outdir):
    gen = torch.Generator().manual_seed(101)
    grid = torch.linspace(-12.0, 12.0, 2049, dtype=torch.float64)
    # x / sqrt(2) = +-1 is where erf changes form; also the neighbours
    edge = math.sqrt(2.0)
    special = torch.tensor([0.0, -0.0, edge, -edge, 1e-8, -1e-8, 1e-30, 5.0, -5.0, -8.5, 8.5],
                           dtype=torch.float64)
    near = edge + torch.linspace(-1e-3, 1e-3, 21, dtype=torch.float64)
    rand = (torch.rand(3072 - 2049 - 11 - 42, generator=gen, dtype=torch.float64) - 0.5) * 14
    x = f32(torch.cat([grid, special, near, -near, rand]))
    G = f32(torch.randn(x.shape, generator=gen, dtype=torch.float64))
    g, (dg,) = grads(lambda t: F.gelu(t), [x], G)
    gt, (dgt,) = grads(lambda t: F.gelu(t, approximate="tanh"), [x], G)
    write_safetensors(os.path.join(outdir, "basic_gelu_wide.safetensors"),
                      [("x", x), ("G", G), ("gelu", f32(g)), ("gelu_grad", f32(dg)),
                       ("gelu_tanh", f32(gt)), ("gelu_tanh_grad", f32(dgt))],
                      {"generator": "scripts/gen_basic_vectors.py"})


def rows(outdir):
    gen = torch.Generator().manual_seed(202)

    def randn(*shape, scale=1.0):
        return f32(torch.randn(*shape, generator=gen, dtype=torch.float64) * scale)

    t = []
    # LayerNorm, C = 259: 32 vectors of 8 (16 of 16) and a tail of 3
    x, w, b, G = randn(5, 259, scale=2.0) + 0.5, randn(259), randn(259), randn(5, 259)
    out, (dx, dw, db) = grads(lambda x, w, b: F.layer_norm(x, (259,), w, b, 1e-5), [x, w, b], G)
    t += [("ln_x", x), ("ln_w", w), ("ln_b", b), ("ln_G", G), ("ln_out", f32(out)),
          ("ln_dx", f32(dx)), ("ln_dw", f32(dw)), ("ln_db", f32(db))]
    # softmax and log-softmax, C = 1003 (tails of 3 and 11)
    x, G = randn(2, 1003, scale=3.0), randn(2, 1003)
    out, (dx,) = grads(lambda x: torch.softmax(x, -1), [x], G)
    lout, (ldx,) = grads(lambda x: torch.log_softmax(x, -1), [x], G)
    t += [("sm_x", x), ("sm_G", G), ("sm_out", f32(out)), ("sm_dx", f32(dx)),
          ("lsm_out", f32(lout)), ("lsm_dx", f32(ldx))]
    # bias add and a broadcast multiply
    a, bias, m, G = randn(2, 5, 203), randn(203), randn(2, 1, 203), randn(2, 5, 203)
    out, (da, dbias) = grads(lambda a, b: a + b, [a, bias], G)
    mout, (mda, dm) = grads(lambda a, m: a * m, [a, m], G)
    t += [("bin_a", a), ("bin_bias", bias), ("bin_m", m), ("bin_G", G), ("add_out", f32(out)),
          ("add_da", f32(da)), ("add_dbias", f32(dbias)), ("mul_out", f32(mout)),
          ("mul_da", f32(mda)), ("mul_dm", f32(dm))]
    write_safetensors(os.path.join(outdir, "basic_rows.safetensors"), t,
                      {"generator": "scripts/gen_basic_vectors.py", "ln_eps": "1e-05"})


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else OUTDIR
    os.makedirs(outdir, exist_ok=True)
    gelu_wide(outdir)
    rows(outdir)


if __name__ == "__main__":
    main()
