#!/usr/bin/env python3
"""Reference values of the trainer's objective weight schedules.

Writes tests/data/train/weights.txt: one line per (schedule, step) with the
weight the run config's formula gives, computed here independently of the
C code (plain Python floats, i.e. IEEE double):

    constant: weight
    linear:   weight * (from + (to - from) * min(t / steps, 1))
    cosine:   weight * (to + (from - to) * (1 + cos(pi * min(t / steps, 1))) / 2)

with steps = the stage's length when the objective's "steps" is 0.
Columns: kind weight from to steps stage_steps t expected
Run: /usr/bin/python3 scripts/gen_train_vectors.py
"""
import math
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "train", "weights.txt")


def weight(kind, w, a, b, steps, stage_steps, t):
    n = steps if steps > 0 else stage_steps
    f = min(max(t, 0) / n, 1.0) if n > 0 else 1.0
    if kind == "constant":
        return w
    if kind == "linear":
        return w * (a + (b - a) * f)
    return w * (b + (a - b) * (1.0 + math.cos(math.pi * f)) / 2.0)


CASES = [
    ("constant", 0.7, 0.0, 1.0, 0, 50),
    ("linear", 1.0, 0.0, 1.0, 20, 50),
    ("linear", 2.5, 1.0, 0.2, 0, 37),
    ("linear", 0.5, 0.3, 0.3, 10, 10),
    ("cosine", 1.0, 1.0, 0.0, 30, 60),
    ("cosine", 3.0, 0.0, 1.0, 0, 25),
    ("cosine", 0.25, 2.0, 0.5, 7, 100),
]

with open(OUT, "w") as f:
    f.write("# kind weight from to steps stage_steps t expected (scripts/gen_train_vectors.py)\n")
    for kind, w, a, b, steps, stage_steps in CASES:
        n = steps if steps > 0 else stage_steps
        for t in sorted(set([0, 1, 2, n // 3, n // 2, n - 1, n, n + 5, stage_steps - 1])):
            f.write("%s %.17g %.17g %.17g %d %d %d %.17g\n" % (
                kind, w, a, b, steps, stage_steps, t, weight(kind, w, a, b, steps, stage_steps, t)))
print("wrote", OUT)
