#!/usr/bin/python3
"""Golden vectors for the optimizers, gradient clipping and LR schedules.

Runs torch.optim.SGD / torch.optim.AdamW (single-tensor code paths),
torch.nn.utils.clip_grad_norm_ and torch.optim.lr_scheduler on small inputs
and writes them to tests/data/optim/*.txt for tests/train/test_optim.c and
tests/train/test_schedule.c.

File format (read without any library): one array per line,
    name count v0 v1 ... v(count-1)
with every value printed by '%.9g' (exact for float32); '#' lines are
comments. Run with /usr/bin/python3 (Debian's python3-torch):
    /usr/bin/python3 scripts/gen_optim_vectors.py
"""
import math
import os
import sys
import warnings

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "optim")

N = 37     # parameters: odd, so no kernel can assume a multiple of 4
T = 10     # optimizer steps

SGD, ADAMW = 0, 1                       # tm_optim_kind
LR_CONSTANT, LR_COSINE, LR_STEP = 0, 1, 2  # tm_lr_kind


class Writer:
    def __init__(self, path, header):
        self.path = path
        self.lines = ["# " + line for line in header]

    def put(self, name, values):
        vals = [float(v) for v in values]
        self.lines.append(name + " " + str(len(vals)) + "".join(" %.9g" % v for v in vals))

    def close(self):
        with open(self.path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        print("wrote %s (%d bytes)" % (self.path, os.path.getsize(self.path)))


def flat(t):
    return t.detach().reshape(-1).tolist()


# ------------------------------------------------------------- optimizers

def run_optim(kind, cfg, p0, grads, lrs, nodecay_from):
    """Runs T steps on a parameter vector split into a decaying part
    [0, nodecay_from) and a non-decaying part [nodecay_from, N) (two param
    groups, as a per-element decay mask does in C). Returns the parameters
    after every step and the final state in trimodal's layout."""
    parts = [p0[:nodecay_from].clone(), p0[nodecay_from:].clone()]
    parts = [torch.nn.Parameter(x) for x in parts if x.numel() > 0]
    groups = [{"params": [parts[0]], "weight_decay": cfg["weight_decay"]}]
    if len(parts) > 1:
        groups.append({"params": [parts[1]], "weight_decay": 0.0})
    if kind == SGD:
        opt = torch.optim.SGD(groups, lr=lrs[0], momentum=cfg["momentum"],
                              dampening=cfg["dampening"], nesterov=bool(cfg["nesterov"]),
                              foreach=False)
    else:
        opt = torch.optim.AdamW(groups, lr=lrs[0], betas=(cfg["beta1"], cfg["beta2"]),
                                eps=cfg["eps"], foreach=False)
    trace = []
    for t in range(T):
        g = grads[t]
        off = 0
        for x in parts:
            x.grad = g[off:off + x.numel()].clone()
            off += x.numel()
        for grp in opt.param_groups:
            grp["lr"] = lrs[t]
        opt.step()
        trace += flat(torch.cat([x.detach() for x in parts]))
    if kind == SGD:
        if cfg["momentum"] == 0:
            state = []
        else:
            state = flat(torch.cat([opt.state[x]["momentum_buffer"] for x in parts]))
    else:
        state = (flat(torch.cat([opt.state[x]["exp_avg"] for x in parts])) +
                 flat(torch.cat([opt.state[x]["exp_avg_sq"] for x in parts])))
    return trace, state


def gen_optim():
    gen = torch.Generator().manual_seed(1234)
    p0 = torch.randn(N, generator=gen)
    # Gradients of varying scale, some tiny, so AdamW's eps matters somewhere.
    scales = torch.tensor([1.0, 0.5, 2.0, 1e-3, 1.0, 0.1, 3.0, 1.0, 1e-4, 0.7])
    grads = torch.randn(T, N, generator=gen) * scales[:, None]
    grads[:, 5] *= 1e-4

    header = [
        "Golden vectors for tests/train/test_optim.c, made by scripts/gen_optim_vectors.py",
        "torch %s; torch.optim.SGD / AdamW (foreach=False)" % torch.__version__,
        "p0: initial parameters (N); grads: the gradient of each step (T x N)",
        "<case>.config: kind weight_decay momentum dampening nesterov beta1 beta2 eps nodecay_from",
        "<case>.lrs: lr of each step; <case>.trace: parameters after each step (T x N);",
        "<case>.state: final optimizer state in trimodal's layout",
    ]
    writers = {}
    for kind, fname in ((SGD, "sgd.txt"), (ADAMW, "adamw.txt")):
        writers[kind] = Writer(os.path.join(OUT, fname), header)
        writers[kind].put("p0", flat(p0))
        writers[kind].put("grads", flat(grads))

    base = dict(weight_decay=0.0, momentum=0.0, dampening=0.0, nesterov=0,
                beta1=0.9, beta2=0.999, eps=1e-8)
    cases = [
        ("sgd_plain", SGD, dict(), N, [0.1] * T),
        ("sgd_momentum", SGD, dict(momentum=0.9, dampening=0.1, weight_decay=0.01), N,
         [0.05 * (1 - 0.05 * t) for t in range(T)]),
        ("sgd_nesterov", SGD, dict(momentum=0.9, nesterov=1, weight_decay=1e-3), N,
         [0.02] * T),
        ("sgd_masked", SGD, dict(momentum=0.5, weight_decay=0.1), 20, [0.1] * T),
        ("adamw_default", ADAMW, dict(weight_decay=0.01), N, [1e-2] * T),
        ("adamw_custom", ADAMW, dict(beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.1), N,
         [3e-2 * (t + 1) / T for t in range(T)]),
        ("adamw_masked", ADAMW, dict(weight_decay=0.5), 25, [5e-2] * T),
    ]
    for name, kind, over, nodecay_from, lrs in cases:
        cfg = dict(base)
        cfg.update(over)
        trace, state = run_optim(kind, cfg, p0, grads, lrs, nodecay_from)
        w = writers[kind]
        w.put(name + ".config", [kind, cfg["weight_decay"], cfg["momentum"], cfg["dampening"],
                                 cfg["nesterov"], cfg["beta1"], cfg["beta2"], cfg["eps"],
                                 nodecay_from])
        w.put(name + ".lrs", lrs)
        w.put(name + ".trace", trace)
        w.put(name + ".state", state)

    for w in writers.values():
        w.close()

    # clip_grad_norm_: one vector over the limit (clipped), one under it.
    w = Writer(os.path.join(OUT, "clip.txt"), [
        "Golden vectors for tests/train/test_optim.c, made by scripts/gen_optim_vectors.py",
        "torch %s; torch.nn.utils.clip_grad_norm_ (norm_type 2)" % torch.__version__,
        "<case>.in: gradients; <case>.norm: the returned norm; <case>.out: clipped gradients",
    ])
    for name, scale, max_norm in (("clip_big", 1.0, 2.5), ("clip_small", 0.01, 2.5)):
        g = torch.randn(301, generator=gen) * scale
        x = torch.nn.Parameter(torch.zeros(301))
        x.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_([x], max_norm)
        w.put(name + ".max_norm", [max_norm])
        w.put(name + ".in", flat(g))
        w.put(name + ".norm", [float(norm)])
        w.put(name + ".out", flat(x.grad))
    w.close()


# -------------------------------------------------------------- schedules

def torch_lrs(base, make, steps):
    """The lr before each of `steps` optimizer steps under the scheduler
    that make(optimizer) builds."""
    x = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([x], lr=base)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def formula_lr(kind, base, warmup, f, min_lr, total, step_size, gamma, step):
    """The documented formulas, for cases that torch has no scheduler for
    (a warm-up that starts at 0)."""
    if step < warmup:
        return base * (f + (1 - f) * step / warmup)
    k = step - warmup
    if kind == LR_CONSTANT:
        return base
    if kind == LR_COSINE:
        d = total - warmup
        return min_lr if k >= d else min_lr + (base - min_lr) * (1 + math.cos(math.pi * k / d)) / 2
    return base * gamma ** (k // step_size)


def gen_schedule():
    sch = torch.optim.lr_scheduler
    w = Writer(os.path.join(OUT, "schedule.txt"), [
        "Golden vectors for tests/train/test_schedule.c, made by scripts/gen_optim_vectors.py",
        "torch %s; torch.optim.lr_scheduler (LinearLR, CosineAnnealingLR, StepLR," % torch.__version__,
        "SequentialLR) and, for warm-ups from 0, the formulas of include/trimodal/optim.h",
        "<case>.config: kind base_lr warmup_steps warmup_start_factor min_lr total_steps step_size gamma",
        "<case>.lr: the lr at steps 0, 1, ...",
    ])
    # (name, kind, base, warmup, f, min_lr, total, step_size, gamma, steps, torch builder or None)
    cases = [
        ("constant_warmup_linearlr", LR_CONSTANT, 0.1, 5, 0.1, 0, 0, 1, 1, 12,
         lambda o: sch.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=5)),
        ("constant_warmup_zero", LR_CONSTANT, 0.1, 5, 0.0, 0, 0, 1, 1, 12, None),
        ("cosine", LR_COSINE, 0.05, 0, 0.0, 1e-4, 30, 1, 1, 31,
         lambda o: sch.CosineAnnealingLR(o, T_max=30, eta_min=1e-4)),
        ("cosine_warmup", LR_COSINE, 3e-4, 10, 0.1, 1e-5, 50, 1, 1, 51,
         lambda o: sch.SequentialLR(o, [
             sch.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10),
             sch.CosineAnnealingLR(o, T_max=40, eta_min=1e-5)], milestones=[10])),
        ("cosine_warmup_zero", LR_COSINE, 1e-3, 8, 0.0, 0.0, 40, 1, 1, 45, None),
        ("step", LR_STEP, 0.2, 0, 0.0, 0, 0, 7, 0.5, 30,
         lambda o: sch.StepLR(o, step_size=7, gamma=0.5)),
        ("step_warmup", LR_STEP, 0.1, 4, 0.25, 0, 0, 5, 0.3, 25,
         lambda o: sch.SequentialLR(o, [
             sch.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=4),
             sch.StepLR(o, step_size=5, gamma=0.3)], milestones=[4])),
    ]
    for name, kind, base, warm, f, min_lr, total, step_size, gamma, steps, make in cases:
        if make is not None:
            lrs = torch_lrs(base, make, steps)
            # The formulas must agree with torch, or the header is wrong.
            for s, lr in enumerate(lrs):
                want = formula_lr(kind, base, warm, f, min_lr, total, step_size, gamma, s)
                if abs(lr - want) > 1e-9 * max(1.0, abs(want)):
                    sys.exit("%s step %d: torch %.17g, formula %.17g" % (name, s, lr, want))
        else:
            lrs = [formula_lr(kind, base, warm, f, min_lr, total, step_size, gamma, s)
                   for s in range(steps)]
        w.put(name + ".config", [kind, base, warm, f, min_lr, total, step_size, gamma])
        w.put(name + ".lr", lrs)
    w.close()


def main():
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    gen_optim()
    gen_schedule()


if __name__ == "__main__":
    main()
