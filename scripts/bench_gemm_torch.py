#!/usr/bin/env python3
"""PyTorch side of bench/bench_gemm.c: torch.mm in float32 on the CPU over
the same shapes, which it reads as JSON lines (from `bench_gemm --shapes`)
on stdin: {"shape", "trans_a", "trans_b", "M", "N", "K"}. A transposed
operand is stored as bench_gemm stores it and passed as a .t() view, so
PyTorch sees the same memory layout as cblas_sgemm does.

One JSON object per shape and thread count on stdout: torch_gflops (the
fastest repetition, 2*M*N*K per second) and torch_gflops_median. Exits 0
without output (a note on stderr) when torch cannot be imported.

Usage: bench_gemm --shapes | bench_gemm_torch.py [--threads 2] [--seconds S]
"""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="2")
    ap.add_argument("--seconds", type=float, default=0.6, help="time budget per shape")
    ap.add_argument("--setup", default="unset", help="tag for the OpenBLAS environment")
    args = ap.parse_args()
    try:
        import torch
    except Exception as e:  # no torch: nothing to compare with
        print(f"bench_gemm_torch: torch not importable ({e}); skipped", file=sys.stderr)
        return 0

    shapes = [json.loads(line) for line in sys.stdin if line.strip()]
    gen = torch.Generator().manual_seed(42)
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for s in shapes:
            M, N, K, ta, tb = s["M"], s["N"], s["K"], s["trans_a"], s["trans_b"]
            a = torch.rand((K, M) if ta else (M, K), generator=gen) * 2 - 1
            b = torch.rand((N, K) if tb else (K, N), generator=gen) * 2 - 1
            opa = a.t() if ta else a
            opb = b.t() if tb else b
            out = torch.empty(M, N)
            torch.mm(opa, opb, out=out)  # warm-up
            times = []
            spent = 0.0
            while len(times) < 5 or (spent < args.seconds and len(times) < 200):
                t0 = time.perf_counter()
                torch.mm(opa, opb, out=out)
                dt = time.perf_counter() - t0
                times.append(dt)
                spent += dt
            flops = 2.0 * M * N * K
            print(json.dumps({
                "bench": "gemm", "impl": "torch", "torch_version": torch.__version__,
                "openblas_setup": args.setup, "shape": s["shape"], "trans_a": ta,
                "trans_b": tb, "M": M, "N": N, "K": K, "threads": threads,
                "reps": len(times),
                "torch_gflops": round(flops / min(times) / 1e9, 1),
                "torch_gflops_median": round(flops / statistics.median(times) / 1e9, 1),
            }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
