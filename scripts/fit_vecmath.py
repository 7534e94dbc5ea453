#!/usr/bin/python3
"""Fits the polynomial coefficients of the vectorised exp and erf in
src/ops/basic_avx2.c (and of their plain C twins in src/ops/basic.c).

Near-minimax fits by iteratively reweighted least squares (Lawson's
algorithm) on Chebyshev nodes, with mpmath (50 digits) as the reference:

  exp:  e^r = 1 + r + r^2 * Q(r) on |r| <= ln(2)/2, relative error.
  erf:  erf(t) = t + t * Q(t^2) on 0 <= t <= T0, relative error (Q is
        erf(t)/t - 1: the final FMA t * Q + t rounds once, to about half
        an ulp, where t * P(t^2) would round twice).
  erfc: erfc(t) = exp(-t^2 + G(v)) * u / sqrt(pi), u = 1/t, for
        U_MIN <= u <= 1/T0 (t from T0 to 1/U_MIN; beyond, u is clamped
        to U_MIN: erfc is then below 1e-11 and only its order matters);
        G is a polynomial in v = u * GS + GO, which maps the range of u
        to [-1, 1] so that the coefficients (and the f32 rounding of
        Horner's rule) stay small.

Prints the coefficients as C initialisers (float literals, lowest power
first) with the worst error of the fit in double. The C tests measure the
real error of the f32 code (tests/ops/test_basic_math.c).

Usage: scripts/fit_vecmath.py [--t0 1.0] [--umin 0.1]
"""
import argparse

import mpmath as mp
import numpy as np

mp.mp.dps = 50


def lawson(f, lo, hi, powers, rel, n=3000, iters=80):
    """Coefficients c of sum c_k x^k over `powers` near-minimising the max
    (relative if rel) error of f on [lo, hi]."""
    xs = np.cos(np.linspace(0.0, np.pi, n)) * (hi - lo) / 2 + (hi + lo) / 2
    ys = np.array([float(f(mp.mpf(float(x)))) for x in xs])
    wt = 1.0 / np.abs(ys) if rel else np.ones(n)
    V = np.stack([xs ** p for p in powers], 1)
    lw = np.full(n, 1.0 / n)
    for _ in range(iters):
        sw = np.sqrt(lw) * wt
        c, *_ = np.linalg.lstsq(V * sw[:, None], ys * sw, rcond=None)
        err = np.abs(V @ c - ys) * wt
        lw = lw * err
        lw /= lw.sum()
    return c, float((np.abs(V @ c - ys) * wt).max())


def c_array(name, coefs, err, note):
    body = ", ".join("%.9gf" % np.float32(c) for c in coefs)
    return "/* %s: max error %.2g (%s) */\nstatic const float %s[%d] = {%s};" % (
        name, err, note, name, len(coefs), body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--t0", type=float, default=1.0)
    ap.add_argument("--umin", type=float, default=0.1)
    ap.add_argument("--exp-degree", type=int, default=4)
    ap.add_argument("--erf-degree", type=int, default=6)
    ap.add_argument("--erfc-degree", type=int, default=10)
    a = ap.parse_args()

    def q_exp(r):
        return (mp.exp(r) - 1 - r) / (r * r) if r != 0 else mp.mpf(0.5)

    # Q is fitted so that 1 + r + r^2 Q(r) has a small relative error: the
    # weight of Q's error is r^2 / e^r.
    half = float(mp.log(2) / 2)

    c, _ = lawson(q_exp, -half, half, range(a.exp_degree + 1), rel=False)
    xs = np.linspace(-half, half, 20001)
    approx = 1 + xs + xs * xs * sum(ck * xs ** k for k, ck in enumerate(c))
    err = float(np.max(np.abs(approx / np.exp(xs) - 1)))
    print(c_array("EXP_Q", c, err, "relative, of 1 + r + r^2 Q(r)"))

    def erf_over_t(s):
        t = mp.sqrt(s)
        return mp.erf(t) / t if s > 0 else 2 / mp.sqrt(mp.pi)
    c, err = lawson(erf_over_t, 0.0, a.t0 * a.t0, range(a.erf_degree + 1), rel=True)
    c[0] -= 1.0
    print(c_array("ERF_Q", c, err, "relative, in t^2 on [0, %g]" % (a.t0 * a.t0)))

    ulo, uhi = a.umin, 1.0 / a.t0
    gs, go = 2 / (uhi - ulo), -(uhi + ulo) / (uhi - ulo)

    def g(v):
        t = 1 / ((v - go) / gs)
        return mp.log(mp.erfc(t) * t * mp.sqrt(mp.pi)) + t * t
    c, err = lawson(g, -1.0, 1.0, range(a.erfc_degree + 1), rel=False)
    print("static const float ERFC_GS = %.9gf, ERFC_GO = %.9gf; /* v = u * GS + GO */" %
          (gs, go))
    print(c_array("ERFC_G", c, err, "absolute, of the exponent, u on [%g, %g]" % (ulo, uhi)))


if __name__ == "__main__":
    main()
