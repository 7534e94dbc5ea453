#!/usr/bin/env python3
"""PyTorch side of bench/bench_logmel.c: log-mel of one hour of 16 kHz audio
with torchaudio.transforms.MelSpectrogram (n_fft 400, hop 160, Hann, center,
reflect, power 2, 64 mel bins, Slaney scale and norm) followed by the same
log steps as trimodal's default front-end (log10 of max(x, 1e-10), clamp to
max - 8, (x + 4) / 4), on the same signal as bench_logmel.c, in float32 on
the CPU.

One JSON object per line per thread count on stdout; exits 0 without
output (and a note on stderr) when torch or torchaudio cannot be imported.

Usage: bench_logmel_torch.py [--threads 1,2] [--seconds S] [--reps N]
"""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    try:
        import numpy as np
        import torch
        import torchaudio
    except Exception as e:  # nothing to compare with
        print(f"bench_logmel_torch: torch/torchaudio not importable ({e}); skipped",
              file=sys.stderr)
        return 0

    sr = 16000
    n = int(args.seconds * sr)
    # bench_logmel.c's signal, in double then float32.
    d = np.arange(n, dtype=np.float64)
    x = (0.5 * np.sin(0.1234567 * d) + 0.25 * np.sin(1.7654321 * d)
         + 0.05 * np.sin(np.fmod(0.0007 * d * d, 2 * np.pi))).astype(np.float32)
    x = torch.from_numpy(x)
    del d
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=sr, n_fft=400, hop_length=160, n_mels=64, power=2.0, norm="slaney",
        mel_scale="slaney")

    def logmel(x):
        m = mel(x)
        m = torch.clamp(m, min=1e-10).log10()
        m = torch.maximum(m, m.max() - 8.0)
        return (m + 4.0) / 4.0

    for nt in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(nt)
        print(f"bench_logmel_torch: {args.seconds:.0f} s, {nt} thread(s), {args.reps} reps",
              file=sys.stderr)
        times = []
        with torch.inference_mode():
            for _ in range(args.reps):
                t0 = time.perf_counter()
                out = logmel(x)
                times.append((time.perf_counter() - t0) * 1e3)
        ms = statistics.median(times)
        print(json.dumps({
            "bench": "logmel_torch", "threads": nt, "audio_s": args.seconds,
            "frames": out.shape[-1], "ms": round(ms, 1), "best_ms": round(min(times), 1),
            "x_realtime": round(args.seconds * 1e3 / ms), "torch": torch.__version__,
            "torchaudio": torchaudio.__version__}), flush=True)
        del out
    return 0


if __name__ == "__main__":
    sys.exit(main())
