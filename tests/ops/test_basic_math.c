/*
 * The elementwise maths of src/ops/basic.c and its vectorised kernels
 * (basic_avx2.c, built for AVX2 and AVX-512), under every ISA this CPU has:
 *
 * - erf (TM_UNARY_ERF, the erf inside GELU) against double-precision erf:
 *   every float in [0.5, 2) (where the approximation changes form), a grid
 *   over [-9, 9] and special values; the max absolute error must stay
 *   below 1e-7;
 * - exp against double exp over its whole range, down to the subnormals;
 * - GELU (erf and tanh forms), forward and backward, against PyTorch in
 *   float64 (tests/data/ops/gelu.safetensors and, over [-12, 12],
 *   basic_gelu_wide.safetensors from scripts/gen_basic_vectors.py) and
 *   against a double formula;
 * - every unary op, forward and backward, against the plain C reference;
 *   NaN and infinities; bitwise equality across thread counts.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/basic.h"
#include "testutil.h"
#include "trimodal/io.h"

static void run_unary(int isa, tm_unary op, float *y, const float *x, int64_t n, float a, float b)
{
    tm_force_isa(isa);
    tm_unary_forward(op, y, x, n, a, b);
    tm_force_isa(-1);
}

static void run_unary_bwd(int isa, tm_unary op, float *dx, const float *dy, const float *x,
                          const float *y, int64_t n, float a)
{
    tm_force_isa(isa);
    tm_unary_backward(op, dx, dy, x, y, n, a);
    tm_force_isa(-1);
}

/* -------------------------------------------------------------- erf */

#define BLOCK (1 << 20)

typedef struct {
    double max_err, at;
} worst;

static void note(worst *w, double err, double x)
{
    if (!(err <= w->max_err)) { /* NaN counts as the worst */
        w->max_err = isnan(err) ? INFINITY : err;
        w->at = x;
    }
}

/* erf of n floats under isa (and through tm_erf_approx for the scalar
 * ISA) against double erf. */
static void erf_block(int isa, const float *x, float *y, int64_t n, worst *w)
{
    run_unary(isa, TM_UNARY_ERF, y, x, n, 0, 0);
    for (int64_t i = 0; i < n; i++) {
        double want = erf((double)x[i]);
        note(w, fabs((double)y[i] - want), x[i]);
        if (isa == TM_ISA_SCALAR) note(w, fabs((double)tm_erf_approx(x[i]) - want), x[i]);
    }
}

static void test_erf(int isa)
{
    float *x = malloc(BLOCK * sizeof *x), *y = malloc(BLOCK * sizeof *y);
    worst w = {0, 0};
    /* every float in [0.5, 2): 2^24 of them, in blocks */
    uint32_t lo, hi;
    float f = 0.5f;
    memcpy(&lo, &f, 4);
    f = 2.0f;
    memcpy(&hi, &f, 4);
    for (uint32_t u = lo; u < hi;) {
        int64_t n = 0;
        for (; n < BLOCK && u < hi; n++, u++)
            memcpy(&x[n], &u, 4);
        erf_block(isa, x, y, n, &w);
    }
    /* a grid of step 2^-14 over [-9, 9], both signs */
    int64_t n = 0;
    for (double v = -9.0; v <= 9.0; v += 1.0 / 16384)
        x[n++] = (float)v;
    erf_block(isa, x, y, n, &w);
    printf("  erf %-6s max abs error %.3g at %.9g\n", tm_isa_name((tm_isa)isa), w.max_err, w.at);
    CHECK(w.max_err < 1e-7);

    /* special values */
    float sx[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -1e-40f, 1e30f, -1e30f, 1e-30f};
    float sy[10];
    run_unary(isa, TM_UNARY_ERF, sy, sx, 10, 0, 0);
    CHECK(sy[0] == 0.0f && !signbit(sy[0]));
    CHECK(sy[1] == 0.0f && signbit(sy[1]));
    CHECK(sy[2] == 1.0f && sy[3] == -1.0f);
    CHECK(isnan(sy[4]));
    CHECK(fabs(sy[5] - 1.1283791670955126 * 1e-40) < 1e-44);
    CHECK(sy[7] == 1.0f && sy[8] == -1.0f);
    CHECK(fabs(sy[9] / 1e-30 - 1.1283791670955126) < 1e-6);
    free(x);
    free(y);
}

/* -------------------------------------------------------------- exp */

static void test_exp(int isa)
{
    int64_t n = 0;
    float *x = malloc(BLOCK * sizeof *x), *y = malloc(BLOCK * sizeof *y);
    for (double v = -103.0; v < 88.72; v += 1.0 / 4096)
        x[n++] = (float)v;
    run_unary(isa, TM_UNARY_EXP, y, x, n, 0, 0);
    double max_rel = 0, at = 0;
    int sub_ok = 1;
    for (int64_t i = 0; i < n; i++) {
        double want = exp((double)x[i]);
        if (want < 1.1754943508222875e-38) { /* subnormal results: absolute */
            if (fabs(y[i] - want) > 2.0 * 1.4e-45) sub_ok = 0;
            continue;
        }
        double rel = fabs(y[i] - want) / want;
        if (!(rel <= max_rel)) {
            max_rel = isnan(rel) ? INFINITY : rel;
            at = x[i];
        }
    }
    printf("  exp %-6s max rel error %.3g at %.9g\n", tm_isa_name((tm_isa)isa), max_rel, at);
    CHECK(max_rel < 1.5e-7); /* about 1 ulp (the plain C path is libm's expf) */
    CHECK(sub_ok);
    float sx[] = {-INFINITY, INFINITY, NAN, 88.8f, -104.0f, -200.0f, 0.0f, 1.0f};
    float sy[8];
    run_unary(isa, TM_UNARY_EXP, sy, sx, 8, 0, 0);
    CHECK(sy[0] == 0.0f && sy[1] == INFINITY && isnan(sy[2]) && sy[3] == INFINITY);
    CHECK(sy[4] == 0.0f && sy[5] == 0.0f && sy[6] == 1.0f);
    CHECK(fabs(sy[7] - 2.718281828459045) < 3e-7);
    free(x);
    free(y);
}

/* ------------------------------------------------------------- GELU */

/* GELU and its derivative against a double formula: a relative error
 * bound where the value is not tiny, an absolute one elsewhere. */
static void test_gelu_formula(int isa)
{
    int64_t n = 0;
    enum { MAXN = 41000 };
    static float x[MAXN], y[MAXN], dx[MAXN], ones[MAXN];
    for (double v = -10.0; v <= 10.0 && n < MAXN; v += 1.0 / 2048) {
        x[n] = (float)v;
        ones[n] = 1.0f;
        dx[n++] = 0.0f;
    }
    run_unary(isa, TM_UNARY_GELU, y, x, n, 0, 0);
    run_unary_bwd(isa, TM_UNARY_GELU, dx, ones, x, y, n, 0);
    double worst_f = 0, worst_b = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i], cdf = 0.5 * erfc(-v / sqrt(2.0));
        double want = v * cdf, dwant = cdf + v * exp(-0.5 * v * v) / sqrt(2 * M_PI);
        /* relative; in the left tail scaled down by the conditioning of
         * erfc(x / sqrt 2) to the rounding of x / sqrt 2 (about x^2 ulps,
         * as in any f32 GELU); near the root of GELU' (x = -0.75, where
         * two terms of 0.23 cancel) relative to 0.05 */
        double ef = v == 0 ? fabs(y[i]) : fabs(y[i] - want) / fabs(want) / (1 + 0.03 * v * v);
        double eb = fabs(dx[i] - dwant) / (v < -3 ? fabs(dwant) : fmax(fabs(dwant), 0.05));
        if (!(ef <= worst_f)) worst_f = isnan(ef) ? INFINITY : ef;
        if (!(eb <= worst_b)) worst_b = isnan(eb) ? INFINITY : eb;
    }
    printf("  gelu %-6s max rel error fwd %.3g bwd %.3g\n", tm_isa_name((tm_isa)isa), worst_f,
           worst_b);
    CHECK(worst_f < 2e-6);
    CHECK(worst_b < 2e-6);
}

/* Loads a tensor of a safetensors file; NULL (and a failed check) when absent. */
static const float *get(const tm_safetensors *st, const char *name, int64_t *n)
{
    tm_tensor t;
    if (tm_safetensors_get(st, name, &t) != TM_OK) {
        CHECK(!"tensor missing");
        fprintf(stderr, "  %s\n", tm_last_error());
        return NULL;
    }
    *n = tm_tensor_numel(&t);
    return t.data;
}

/* y = f(x) and dx = f'(x) G under isa against PyTorch's out and grad. */
static void check_torch(int isa, tm_unary op, const float *x, const float *G, const float *out,
                        const float *grad, int64_t n, double atol, double rtol, const char *what)
{
    float *y = malloc((size_t)n * sizeof *y), *dx = calloc((size_t)n, sizeof *dx);
    run_unary(isa, op, y, x, n, 0, 0);
    run_unary_bwd(isa, op, dx, G, x, y, n, 0);
    char name[96];
    snprintf(name, sizeof name, "%s %s forward", what, tm_isa_name((tm_isa)isa));
    check_close(name, y, out, n, atol, rtol);
    snprintf(name, sizeof name, "%s %s backward", what, tm_isa_name((tm_isa)isa));
    check_close(name, dx, grad, n, atol, rtol);
    free(y);
    free(dx);
}

static void test_gelu_torch(int isa)
{
    tm_safetensors *st = NULL;
    CHECK_OK(tm_safetensors_open(&st, test_data_path("ops/basic_gelu_wide.safetensors")));
    if (st) {
        int64_t n = 0, m = 0;
        const float *x = get(st, "x", &n), *G = get(st, "G", &m);
        const float *g = get(st, "gelu", &m), *dg = get(st, "gelu_grad", &m);
        const float *gt = get(st, "gelu_tanh", &m), *dgt = get(st, "gelu_tanh_grad", &m);
        CHECK(n == 3072);
        if (x && G && g && dg && gt && dgt) {
            check_torch(isa, TM_UNARY_GELU, x, G, g, dg, n, 1e-7, 2e-6, "gelu wide");
            check_torch(isa, TM_UNARY_GELU_TANH, x, G, gt, dgt, n, 1e-7, 2e-6, "gelu_tanh wide");
        }
        tm_safetensors_close(st);
    }
    /* the vectors the graph test uses too */
    static const struct {
        const char *file;
        tm_unary op;
        double atol, rtol;
    } cases[] = {
        {"ops/gelu.safetensors", TM_UNARY_GELU, 1e-7, 2e-6},
        {"ops/gelu_tanh.safetensors", TM_UNARY_GELU_TANH, 1e-7, 2e-6},
        {"ops/exp.safetensors", TM_UNARY_EXP, 1e-7, 1e-6},
        {"ops/sigmoid.safetensors", TM_UNARY_SIGMOID, 1e-7, 1e-6},
        {"ops/silu.safetensors", TM_UNARY_SILU, 1e-7, 1e-6},
        {"ops/relu.safetensors", TM_UNARY_RELU, 0, 0},
        {"ops/sqrt.safetensors", TM_UNARY_SQRT, 1e-7, 1e-6},
        {"ops/tanh.safetensors", TM_UNARY_TANH, 1e-6, 1e-5}, /* 1 - y^2 cancels */
        {"ops/log.safetensors", TM_UNARY_LOG, 1e-7, 1e-6},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        st = NULL;
        CHECK_OK(tm_safetensors_open(&st, test_data_path(cases[c].file)));
        if (!st) continue;
        int64_t n = 0, m = 0;
        const float *x = get(st, "in0", &n), *G = get(st, "G", &m);
        const float *out = get(st, "out", &m), *grad = get(st, "grad_in0", &m);
        if (x && G && out && grad)
            check_torch(isa, cases[c].op, x, G, out, grad, n, cases[c].atol, cases[c].rtol,
                        cases[c].file);
        tm_safetensors_close(st);
    }
}

/* ------------------------------------------- every op, SIMD vs plain C */

static const struct {
    tm_unary op;
    const char *name;
    float lo, hi; /* input range */
    double tol;   /* relative to max(|value|, 1e-3 scale) */
} OPS[] = {
    {TM_UNARY_EXP, "exp", -20, 20, 3e-7},         {TM_UNARY_LOG, "log", 0.01f, 50, 3e-7},
    {TM_UNARY_SQRT, "sqrt", 0.01f, 50, 3e-7},     {TM_UNARY_TANH, "tanh", -6, 6, 3e-7},
    {TM_UNARY_SIGMOID, "sigmoid", -30, 30, 5e-7}, {TM_UNARY_RELU, "relu", -3, 3, 0},
    {TM_UNARY_GELU, "gelu", -9, 9, 1e-6},         {TM_UNARY_GELU_TANH, "gelu_tanh", -9, 9, 1e-6},
    {TM_UNARY_SILU, "silu", -30, 30, 5e-7},       {TM_UNARY_SCALE, "scale", -5, 5, 3e-7},
    {TM_UNARY_ERF, "erf", -5, 5, 3e-7},
};
#define NOPS ((int)(sizeof OPS / sizeof OPS[0]))

static void test_vs_plain_c(int isa)
{
    /* odd lengths: full vectors and every tail; offsets: unaligned starts */
    static const int64_t lens[] = {1, 3, 7, 8, 9, 15, 16, 17, 33, 1000, 40001};
    enum { MAXN = 40001 + 3 };
    float *x = malloc(MAXN * sizeof *x), *dy = malloc(MAXN * sizeof *dy);
    float *y0 = malloc(MAXN * sizeof *y0), *y1 = malloc(MAXN * sizeof *y1);
    float *d0 = malloc(MAXN * sizeof *d0), *d1 = malloc(MAXN * sizeof *d1);
    for (int o = 0; o < NOPS; o++)
        for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
            int64_t n = lens[l], off = (int64_t)(l % 3);
            test_fill_uniform(x, MAXN, 7 + (uint64_t)o, OPS[o].lo, OPS[o].hi);
            test_fill_uniform(dy, MAXN, 8 + (uint64_t)o, -1, 1);
            test_fill_uniform(d0, MAXN, 9, -1, 1);
            memcpy(d1, d0, MAXN * sizeof *d1);
            /* guard values past the end must survive */
            y0[off + n] = y1[off + n] = 777.0f;
            run_unary(TM_ISA_SCALAR, OPS[o].op, y0 + off, x + off, n, 1.5f, -0.25f);
            run_unary(isa, OPS[o].op, y1 + off, x + off, n, 1.5f, -0.25f);
            run_unary_bwd(TM_ISA_SCALAR, OPS[o].op, d0 + off, dy + off, x + off, y0 + off, n, 1.5f);
            run_unary_bwd(isa, OPS[o].op, d1 + off, dy + off, x + off, y0 + off, n, 1.5f);
            char name[96];
            snprintf(name, sizeof name, "%s %s n=%lld forward", OPS[o].name,
                     tm_isa_name((tm_isa)isa), (long long)n);
            check_close(name, y1 + off, y0 + off, n, OPS[o].tol * 1e-2, OPS[o].tol);
            snprintf(name, sizeof name, "%s %s n=%lld backward", OPS[o].name,
                     tm_isa_name((tm_isa)isa), (long long)n);
            check_close(name, d1, d0, MAXN, OPS[o].tol * 10, OPS[o].tol * 10);
            CHECK(y1[off + n] == 777.0f);
        }
    free(x), free(dy), free(y0), free(y1), free(d0), free(d1);
}

/* NaN in, NaN out; the infinities where the function has a limit. */
static void test_specials(int isa)
{
    float x[4] = {NAN, INFINITY, -INFINITY, -1e30f}, y[4];
    tm_unary ops[] = {TM_UNARY_EXP,       TM_UNARY_SIGMOID, TM_UNARY_GELU,
                      TM_UNARY_GELU_TANH, TM_UNARY_SILU,    TM_UNARY_ERF};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        run_unary(isa, ops[i], y, x, 4, 1, 0);
        CHECK(isnan(y[0]));
    }
    run_unary(isa, TM_UNARY_SIGMOID, y, x, 4, 1, 0);
    CHECK(y[1] == 1.0f && y[2] == 0.0f && y[3] == 0.0f);
    run_unary(isa, TM_UNARY_GELU, y, x, 4, 1, 0);
    CHECK(y[1] == INFINITY && y[3] == 0.0f);
    run_unary(isa, TM_UNARY_GELU_TANH, y, x, 4, 1, 0);
    CHECK(y[1] == INFINITY && y[3] == 0.0f);
    /* GELU's backward far out: 1 on the right, 0 on the left */
    float gx[2] = {40.0f, -40.0f}, gy[2] = {0, 0}, ones[2] = {1, 1}, gd[2] = {0, 0},
          gd2[2] = {0, 0};
    run_unary_bwd(isa, TM_UNARY_GELU, gd, ones, gx, gy, 2, 0);
    CHECK(gd[0] == 1.0f && gd[1] == 0.0f);
    run_unary_bwd(isa, TM_UNARY_GELU_TANH, gd2, ones, gx, gy, 2, 0);
    CHECK(gd2[0] == 1.0f && fabsf(gd2[1]) < 1e-30f);
}

/* The same bits at 1 and 2 threads (several tasks of CHUNK elements). */
static void test_threads(int isa)
{
    enum { N = 3 * 16384 + 77 };
    static float x[N], y1[N], y2[N], d1[N], d2[N], dy[N];
    test_fill_uniform(x, N, 3, -5, 5);
    test_fill_uniform(dy, N, 4, -1, 1);
    int threads = tm_get_num_threads();
    for (int o = 0; o < NOPS; o++) {
        const float *xs = x;
        static float xpos[N];
        if (OPS[o].op == TM_UNARY_LOG || OPS[o].op == TM_UNARY_SQRT) {
            for (int i = 0; i < N; i++)
                xpos[i] = fabsf(x[i]) + 0.1f;
            xs = xpos;
        }
        memset(d1, 0, sizeof d1);
        memset(d2, 0, sizeof d2);
        tm_set_num_threads(1);
        run_unary(isa, OPS[o].op, y1, xs, N, 0.5f, 1);
        run_unary_bwd(isa, OPS[o].op, d1, dy, xs, y1, N, 0.5f);
        CHECK_OK(tm_set_num_threads(2));
        run_unary(isa, OPS[o].op, y2, xs, N, 0.5f, 1);
        run_unary_bwd(isa, OPS[o].op, d2, dy, xs, y1, N, 0.5f);
        CHECK(memcmp(y1, y2, sizeof y1) == 0);
        CHECK(memcmp(d1, d2, sizeof d1) == 0);
    }
    tm_set_num_threads(threads);
}

int main(void)
{
    tm_isa best = tm_cpu_isa();
    for (int isa = TM_ISA_SCALAR; isa <= (int)best; isa++) {
        printf("isa %s\n", tm_isa_name((tm_isa)isa));
        test_erf(isa);
        test_exp(isa);
        test_gelu_formula(isa);
        test_gelu_torch(isa);
        if (isa != TM_ISA_SCALAR) test_vs_plain_c(isa);
        test_specials(isa);
        test_threads(isa);
    }
    return test_finish("test_basic_math");
}
