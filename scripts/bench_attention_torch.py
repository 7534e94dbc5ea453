#!/usr/bin/env python3
"""PyTorch side of bench/bench_attention.c: scaled dot-product attention
forward + backward at bench-small's fusion shape (B=32, H=4, T=148, D=64)
with the same additive key padding mask, in float32 on the CPU.

Uses torch.nn.functional.scaled_dot_product_attention when this PyTorch has
it (2.0 and later); PyTorch 1.13 only has the private
F._scaled_dot_product_attention, used in its place; failing both, the plain
softmax(q k^T * scale + mask) v. The line says which ("sdpa").

One JSON object per line per thread count on stdout; exits 0 without
output (and a note on stderr) when torch cannot be imported.

Usage: bench_attention_torch.py [--threads 1,2] [--reps N]
"""
import argparse
import json
import math
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # no torch: nothing to compare with
        print(f"bench_attention_torch: torch not importable ({e}); skipped", file=sys.stderr)
        return 0

    B, H, T, D, TEXT_LEN = 32, 4, 148, 64, 32
    scale = 1.0 / math.sqrt(D)
    if hasattr(F, "scaled_dot_product_attention"):
        sdpa_name = "scaled_dot_product_attention"

        def sdpa(q, k, v, mask):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    elif hasattr(F, "_scaled_dot_product_attention"):
        sdpa_name = "_scaled_dot_product_attention"

        def sdpa(q, k, v, mask):
            return F._scaled_dot_product_attention(q, k, v, mask, 0.0, False, False)[0]
    else:
        sdpa_name = "math"

        def sdpa(q, k, v, mask):
            return torch.softmax(q @ k.transpose(-2, -1) * scale + mask, dim=-1) @ v

    g = torch.Generator().manual_seed(1234)
    q, k, v, dout = (torch.randn(B, H, T, D, generator=g) for _ in range(4))
    for t in (q, k, v):
        t.requires_grad_(True)
    # The fusion's key padding mask: sample b has 8..32 real text tokens at
    # positions 1..32; the rest of those positions are -inf (as bench_attention.c).
    mask = torch.zeros(B, 1, 1, T)
    for b in range(B):
        n = 8 + (b * 7) % (TEXT_LEN - 7)
        mask[b, 0, 0, n + 1:TEXT_LEN + 1] = float("-inf")

    for nt in [int(x) for x in args.threads.split(",") if x]:
        torch.set_num_threads(nt)
        times, tf, tb = [], [], []
        for r in range(-2, args.reps):
            for t in (q, k, v):
                t.grad = None
            t0 = time.perf_counter()
            out = sdpa(q, k, v, mask)
            t1 = time.perf_counter()
            out.backward(dout)
            t2 = time.perf_counter()
            if r >= 0:
                times.append(1e3 * (t2 - t0))
                tf.append(1e3 * (t1 - t0))
                tb.append(1e3 * (t2 - t1))
        print(json.dumps({
            "bench": "attention", "impl": "torch", "torch": torch.__version__, "sdpa": sdpa_name,
            "B": B, "H": H, "T": T, "D": D, "mask": "key_padding", "threads": nt,
            "reps": args.reps, "ms": round(statistics.median(times), 3),
            "best_ms": round(min(times), 3), "fwd_ms": round(statistics.median(tf), 3),
            "bwd_ms": round(statistics.median(tb), 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
