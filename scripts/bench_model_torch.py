#!/usr/bin/python3
"""PyTorch side of `trimodal bench`: the twin of scripts/bench_small_twin.py
timed on random inputs of the config's shapes, on the CPU, in float32 or
(--dtype bf16) under torch.autocast("cpu", dtype=torch.bfloat16): matmuls,
linears and convs in bf16, master weights and the optimizer in float32, the
counterpart of `trimodal bench --dtype bf16`.

  infer: the classification forward under torch.no_grad(), the model in
         eval mode; one JSON line with latency_ms_p50/p95/p99 and
         samples_per_s.
  train: forward, loss, backward and an AdamW step (lr 1e-3, betas 0.9,
         0.999, eps 1e-8, weight decay 0.01), as bench-small.md says; one
         JSON line with step_ms_median/p95 and samples_per_s.

Both print the same keys as `trimodal bench ... --json` plus "impl":
"torch". Run it as bench/run_model.sh does: torch.set_num_threads(T) here,
OMP_WAIT_POLICY=passive and without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE in
its environment. Exits 0 without output (and a note on stderr) when torch
cannot be imported.

Usage: bench_model_torch.py infer|train --config C --batch B --threads T
       [--dtype f32|bf16] [--reps N] [--warmup N] [--case LABEL]
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time


def percentile(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["infer", "train"])
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--case", default=None, help="a label copied into the line")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                    help="bf16: forward (and loss) under torch.autocast('cpu', bfloat16)")
    args = ap.parse_args()
    try:
        import torch
    except Exception as e:
        print("bench_model_torch: torch not importable (%s); skipped" % e, file=sys.stderr)
        return 0
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_small_twin as twin

    torch.set_num_threads(args.threads)
    cfg = twin.load_config(args.config)
    torch.manual_seed(0)
    model = twin.TwinModel(cfg)
    gen = torch.Generator().manual_seed(1)
    inputs = twin.make_inputs(cfg, args.batch, gen)
    params = sum(p.numel() for p in model.parameters())
    times = []
    bf16 = args.dtype == "bf16"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    if args.mode == "infer":
        model.eval()
        with torch.no_grad():
            for i in range(args.warmup + args.reps):
                t0 = time.perf_counter()
                with autocast():
                    model(inputs, need_loss=False)
                if i >= args.warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=0.01)
        for i in range(args.warmup + args.reps):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=False)
            with autocast():
                r = model(inputs)
            r["loss"].float().backward()
            opt.step()
            if i >= args.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    med = statistics.median(times)
    line = {"bench": args.mode, "impl": "torch", "torch": torch.__version__,
            **({"case": args.case} if args.case else {}),
            "batch": args.batch, "threads": args.threads, "dtype": args.dtype, "params": params}
    if args.mode == "infer":
        line.update({"latency_ms_p50": round(med, 3),
                     "latency_ms_p95": round(percentile(times, 0.95), 3),
                     "latency_ms_p99": round(percentile(times, 0.99), 3)})
    else:
        line.update({"step_ms_median": round(med, 3),
                     "step_ms_p95": round(percentile(times, 0.95), 3)})
    line.update({"samples_per_s": round(args.batch / med * 1e3, 2),
                 "peak_rss_mb": round(rss, 1), "reps": len(times)})
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
