#!/usr/bin/env python3
"""Compares two trainer metrics.jsonl files line by line: the same lines and
keys, every number within a relative tolerance (default 1e-5). Timing and
layout fields (samples_per_s, time_s, data_wait_s, world, local_batch, arena_bytes*) are
skipped. Exit status 0 when they agree, 1 (with the first difference) when
they do not. Used by test_mpi.sh (one process against mpirun -np 2)."""
import json
import sys

SKIP = {"samples_per_s", "time_s", "data_wait_s", "world", "local_batch", "arena_bytes",
        "arena_bytes_without_checkpointing"}


def main():
    a_path, b_path = sys.argv[1], sys.argv[2]
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-5
    a = [json.loads(x) for x in open(a_path) if x.strip()]
    b = [json.loads(x) for x in open(b_path) if x.strip()]
    if len(a) != len(b):
        print(f"{len(a)} lines in {a_path}, {len(b)} in {b_path}")
        return 1
    worst = 0.0
    numbers = 0
    for i, (x, y) in enumerate(zip(a, b)):
        kx = set(x) - SKIP
        ky = set(y) - SKIP
        if kx != ky:
            print(f"line {i + 1}: keys differ: {sorted(kx ^ ky)}")
            return 1
        for k in sorted(kx):
            u, v = x[k], y[k]
            if isinstance(u, (int, float)) and not isinstance(u, bool) and \
                    isinstance(v, (int, float)) and not isinstance(v, bool):
                d = abs(u - v)
                rel = d / max(abs(u), abs(v), 1e-30)
                numbers += 1
                if d > tol * max(abs(u), abs(v)) + 1e-7:
                    print(f"line {i + 1} ({x.get('type')} step {x.get('step')}): {k} "
                          f"{u!r} vs {v!r} (relative {rel:.3g} > {tol})")
                    return 1
                if d > 1e-7:
                    worst = max(worst, rel)
            elif u != v:
                print(f"line {i + 1}: {k} {u!r} vs {v!r}")
                return 1
    print(f"{len(a)} lines, {numbers} numbers agree; worst relative difference {worst:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
