/*
 * Mixed precision (tm_graph_set_precision, tm_graph_set_loss_scale).
 *
 * 1. The rounding kernels equal the core conversions (tm_f32_to_bf16/f16).
 * 2. Exactness of the emulation: for matmul (the folded linear GEMM, a
 *    batched transposed matmul) and conv2d, a bf16 or f16 graph gives
 *    bitwise the outputs and gradients of the f32 graph fed with operands
 *    rounded to that type (within 1e-5 for the bf16 linear GEMM on a CPU
 *    with AVX-512-BF16, whose vdpbf16ps sums in another order).
 *    loss = sum(op(a, b) * c), so the incoming gradient dY is c, which the
 *    reference graph gets rounded too.
 * 3. A small MLP's loss, logits and parameter gradients in bf16 and f16
 *    against PyTorch with explicit rounding of every matmul operand
 *    (scripts/gen_precision_vectors.py), and they differ from the f32
 *    reference by far more than the tolerance (the test can fail).
 * 4. f16: magnitudes beyond 65504 overflow to inf, tiny gradients flush to
 *    zero, and a loss scale brings them back.
 * 5. Misuse gives errors.
 */
#include <stdlib.h>
#include <string.h>

#include "ops/precision.h"
#include "testutil.h"
#include "trimodal/graph.h"
#include "trimodal/io.h"

static float bits_f(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static void test_round_kernels(void)
{
    enum { N = 4096 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    tm_bf16 *h = malloc(N * sizeof(tm_bf16));
    uint64_t s = 12345;
    for (int i = 0; i < N; i++) { /* random bit patterns: every exponent, NaNs, infs */
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = bits_f((uint32_t)(s >> 32));
    }
    x[0] = bits_f(0x3f808000u); /* a tie, rounds down to even */
    x[1] = bits_f(0x3f818000u); /* a tie, rounds up to even */
    x[2] = 65504.0f;
    x[3] = 65520.0f; /* rounds to inf in f16 */
    x[4] = 1e-8f;    /* below the smallest f16 subnormal */
    tm_round_precision(y, x, N, TM_BF16);
    tm_pack_bf16(h, x, N);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        float want = tm_bf16_to_f32(tm_f32_to_bf16(x[i]));
        if (memcmp(&y[i], &want, 4) != 0 && !(want != want && y[i] != y[i])) bad++;
        if (h[i] != tm_f32_to_bf16(x[i])) bad++;
    }
    CHECK(bad == 0);
    CHECK(y[0] == 1.0f && y[1] == bits_f(0x3f820000u));
    tm_round_precision(y, x, N, TM_F16);
    bad = 0;
    for (int i = 0; i < N; i++) {
        float want = tm_f16_to_f32(tm_f32_to_f16(x[i]));
        if (memcmp(&y[i], &want, 4) != 0 && !(want != want && y[i] != y[i])) bad++;
    }
    CHECK(bad == 0);
    CHECK(y[2] == 65504.0f && isinf(y[3]) && y[4] == 0.0f);
    free(x);
    free(y);
    free(h);
}

/* ------------------------------------------------- exact emulation */

enum { K_LINEAR, K_BMM_T, K_CONV, K_COUNT };

typedef struct {
    int64_t na, nb, nout;
} case_sizes;

/* Builds loss = sum(op(a, b) * c); a and b are params (a first). */
static tm_node *build_case(tm_graph *g, int kind, tm_node **out, tm_node **c)
{
    tm_node *a, *b, *y;
    switch (kind) {
    case K_LINEAR: /* (37, 70) x (45, 70)^T: the folded GEMM of tm_linear */
        a = tm_param(g, "a", 2, (int64_t[]){37, 70});
        b = tm_param(g, "b", 2, (int64_t[]){45, 70});
        y = tm_linear(g, a, b, NULL);
        break;
    case K_BMM_T: /* a^T b per batch: (3, 20, 9)^T x (3, 20, 11) */
        a = tm_param(g, "a", 3, (int64_t[]){3, 20, 9});
        b = tm_param(g, "b", 3, (int64_t[]){3, 20, 11});
        y = tm_matmul(g, a, b, 1, 0);
        break;
    default: /* conv2d (2, 3, 9, 9) * (5, 3, 3, 3), stride 1, pad 1 */
        a = tm_param(g, "a", 4, (int64_t[]){2, 3, 9, 9});
        b = tm_param(g, "b", 4, (int64_t[]){5, 3, 3, 3});
        y = tm_conv2d(g, a, b, NULL, 1, 1, 1, 1);
        break;
    }
    if (!y) return NULL;
    *out = y;
    *c = tm_input(g, "c", TM_F32, tm_node_ndim(y), tm_node_shape(y));
    return tm_sum(g, tm_mul(g, y, *c), 0, NULL, 0);
}

/* Runs the case in precision p on operands a0, b0 and upstream gradient c
 * (all rounded to `pre` first when pre != TM_F32); writes the output and
 * the parameter gradients. */
static int run_case(int kind, tm_dtype p, tm_dtype pre, const float *a0, const float *b0,
                    float *out, float *grads, size_t *n_out, size_t *n_par)
{
    tm_graph *g = tm_graph_new();
    tm_node *y = NULL, *c = NULL;
    tm_node *loss = build_case(g, kind, &y, &c);
    int ok = loss != NULL;
    if (ok) CHECK_OK(tm_graph_set_precision(g, p));
    if (ok) CHECK_OK(tm_graph_keep(g, y));
    if (ok && tm_graph_compile(g, loss, TM_GRAPH_TRAIN) != TM_OK) {
        fprintf(stderr, "compile: %s\n", tm_last_error());
        ok = 0;
    }
    if (ok) {
        size_t np = 0;
        float *par = tm_graph_params(g, &np);
        size_t na = (size_t)tm_node_numel(tm_graph_find_param(g, "a"));
        memcpy(par, a0, na * sizeof(float));
        memcpy(par + na, b0, (np - na) * sizeof(float));
        tm_round_precision(par, par, (int64_t)np, pre);
        float *cv = tm_node_data(g, c);
        int64_t nc = tm_node_numel(c);
        test_fill_uniform(cv, nc, 13, -1.0f, 1.0f);
        tm_round_precision(cv, cv, nc, pre); /* = the rounding of dY the GEMMs do */
        CHECK_OK(tm_graph_forward(g));
        CHECK_OK(tm_graph_backward(g));
        memcpy(out, tm_node_data(g, y), (size_t)nc * sizeof(float));
        memcpy(grads, tm_graph_grads(g, NULL), np * sizeof(float));
        *n_out = (size_t)nc;
        *n_par = np;
    }
    tm_graph_free(g);
    return ok;
}

static void test_exact(void)
{
    enum { MAXN = 8192 };
    float *a0 = malloc(MAXN * sizeof(float)), *b0 = malloc(MAXN * sizeof(float));
    float *o1 = malloc(MAXN * sizeof(float)), *o2 = malloc(MAXN * sizeof(float));
    float *g1 = malloc(2 * MAXN * sizeof(float)), *g2 = malloc(2 * MAXN * sizeof(float));
    test_fill_uniform(a0, MAXN, 11, -2.0f, 2.0f);
    test_fill_uniform(b0, MAXN, 12, -1.0f, 1.0f);
    const tm_dtype ps[2] = {TM_BF16, TM_F16};
    for (int kind = 0; kind < K_COUNT; kind++) {
        for (int pi = 0; pi < 2; pi++) {
            size_t no = 0, np = 0, no2 = 0, np2 = 0;
            int ok = run_case(kind, ps[pi], TM_F32, a0, b0, o1, g1, &no, &np);
            ok = ok && run_case(kind, TM_F32, ps[pi], a0, b0, o2, g2, &no2, &np2);
            CHECK(ok && no == no2 && np == np2);
            if (!ok) continue;
            int same_out = memcmp(o1, o2, no * sizeof(float)) == 0;
            int same_grad = memcmp(g1, g2, np * sizeof(float)) == 0;
            if (kind == K_LINEAR && ps[pi] == TM_BF16 && tm_cpu_has_avx512bf16()) {
                /* vdpbf16ps: the same products, another summation order */
                same_out = check_close("linear bf16 out", o1, o2, (int64_t)no, 1e-5, 1e-5);
                same_grad = check_close("linear bf16 grads", g1, g2, (int64_t)np, 1e-5, 1e-5);
            }
            if (!same_out || !same_grad)
                fprintf(stderr, "kind %d %s: output %s, gradients %s\n", kind,
                        tm_dtype_name(ps[pi]), same_out ? "same" : "DIFFER",
                        same_grad ? "same" : "DIFFER");
            CHECK(same_out && same_grad);
            /* and the rounding did something: the plain f32 graph differs */
            run_case(kind, TM_F32, TM_F32, a0, b0, o2, g2, &no2, &np2);
            CHECK(memcmp(o1, o2, no * sizeof(float)) != 0);
        }
    }
    free(a0);
    free(b0);
    free(o1);
    free(o2);
    free(g1);
    free(g2);
}

/* --------------------------------------------------- MLP vs PyTorch */

static const float *st_f32(tm_safetensors *st, const char *name, int64_t want)
{
    tm_tensor t;
    if (tm_safetensors_get(st, name, &t) != TM_OK) {
        fprintf(stderr, "%s: %s\n", name, tm_last_error());
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < t.ndim; i++)
        n *= t.shape[i];
    if (t.dtype != TM_F32 || n != want) {
        fprintf(stderr, "%s: %lld elements, want %lld f32\n", name, (long long)n, (long long)want);
        return NULL;
    }
    return t.data;
}

static void test_mlp_torch(void)
{
    tm_safetensors *st = NULL;
    CHECK_OK(tm_safetensors_open(&st, test_data_path("graph/precision_mlp.safetensors")));
    if (!st) return;
    const char *pnames[4] = {"w1", "b1", "w2", "b2"};
    const int64_t psize[4] = {16 * 12, 16, 5 * 16, 5};
    const char *prec[3] = {"bf16", "f16", "f32"};
    const tm_dtype pd[3] = {TM_BF16, TM_F16, TM_F32};
    float *grads_bf16 = malloc(512 * sizeof(float));
    for (int pi = 0; pi < 3; pi++) {
        tm_graph *g = tm_graph_new();
        tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){8, 12});
        tm_node *y = tm_input(g, "y", TM_I32, 1, (int64_t[]){8});
        tm_node *w1 = tm_param(g, "w1", 2, (int64_t[]){16, 12});
        tm_node *b1 = tm_param(g, "b1", 1, (int64_t[]){16});
        tm_node *w2 = tm_param(g, "w2", 2, (int64_t[]){5, 16});
        tm_node *b2 = tm_param(g, "b2", 1, (int64_t[]){5});
        tm_node *logits = tm_linear(g, tm_relu(g, tm_linear(g, x, w1, b1)), w2, b2);
        tm_node *loss = tm_cross_entropy(g, logits, y, 0.0f, -100);
        CHECK_OK(tm_graph_set_precision(g, pd[pi]));
        CHECK_OK(tm_graph_keep(g, logits));
        CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
        const float *xs = st_f32(st, "x", 96), *ys = st_f32(st, "y", 8);
        CHECK(xs && ys);
        if (!xs || !ys) {
            tm_graph_free(g);
            continue;
        }
        memcpy(tm_node_data(g, x), xs, 96 * sizeof(float));
        int32_t *yi = tm_node_data(g, y);
        for (int i = 0; i < 8; i++)
            yi[i] = (int32_t)ys[i];
        float *par = tm_graph_params(g, NULL);
        for (int k = 0, off = 0; k < 4; off += (int)psize[k], k++) {
            const float *v = st_f32(st, pnames[k], psize[k]);
            CHECK(v != NULL);
            if (v) memcpy(par + off, v, (size_t)psize[k] * sizeof(float));
        }
        CHECK_OK(tm_graph_forward(g));
        CHECK_OK(tm_graph_backward(g));
        char name[64];
        snprintf(name, sizeof name, "loss_%s", prec[pi]);
        const float *want = st_f32(st, name, 1);
        if (want) CHECK_NEAR(*(float *)tm_node_data(g, loss), want[0], 1e-6, 1e-5);
        snprintf(name, sizeof name, "logits_%s", prec[pi]);
        want = st_f32(st, name, 40);
        if (want) check_close(name, tm_node_data(g, logits), want, 40, 1e-6, 1e-5);
        const float *gr = tm_graph_grads(g, NULL);
        for (int k = 0, off = 0; k < 4; off += (int)psize[k], k++) {
            snprintf(name, sizeof name, "grad_%s_%s", pnames[k], prec[pi]);
            want = st_f32(st, name, psize[k]);
            if (want) check_close(name, gr + off, want, psize[k], 1e-6, 1e-4);
            if (pi == 0) memcpy(grads_bf16 + off, gr + off, (size_t)psize[k] * sizeof(float));
        }
        tm_graph_free(g);
    }
    /* bf16 rounding is visible: the bf16 gradients are far from f32's */
    const float *w1_f32 = st_f32(st, "grad_w1_f32", 192);
    if (w1_f32) {
        double worst = 0;
        for (int i = 0; i < 192; i++) {
            double d = fabs(grads_bf16[i] - w1_f32[i]);
            if (d > worst) worst = d;
        }
        CHECK(worst > 1e-4);
    }
    free(grads_bf16);
    tm_safetensors_close(st);
}

/* ------------------------------------------------ f16 range, scaling */

/* y = x w^T for one element; returns y and, via dw, d(c*y)/dw. */
static void one_mul(tm_dtype p, float x0, float w0, float c0, float scale, float *y0, float *dw)
{
    tm_graph *g = tm_graph_new();
    tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){1, 1});
    tm_node *w = tm_param(g, "w", 2, (int64_t[]){1, 1});
    tm_node *c = tm_input(g, "c", TM_F32, 2, (int64_t[]){1, 1});
    tm_node *y = tm_linear(g, x, w, NULL);
    tm_node *loss = tm_sum(g, tm_mul(g, y, c), 0, NULL, 0);
    CHECK_OK(tm_graph_set_precision(g, p));
    CHECK_OK(tm_graph_keep(g, y));
    CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
    CHECK_OK(tm_graph_set_loss_scale(g, scale));
    CHECK(tm_graph_loss_scale(g) == scale);
    *(float *)tm_node_data(g, x) = x0;
    *(float *)tm_node_data(g, c) = c0;
    tm_graph_params(g, NULL)[0] = w0;
    CHECK_OK(tm_graph_forward(g));
    CHECK_OK(tm_graph_backward(g));
    *y0 = *(float *)tm_node_data(g, y);
    *dw = tm_graph_grads(g, NULL)[0] / scale;
    tm_graph_free(g);
}

static void test_f16_range(void)
{
    float y, dw;
    one_mul(TM_F16, 70000.0f, 1.0f, 1.0f, 1.0f, &y, &dw);
    CHECK(isinf(y) && y > 0); /* 70000 does not fit f16 */
    one_mul(TM_BF16, 70000.0f, 1.0f, 1.0f, 1.0f, &y, &dw);
    CHECK(y == 70144.0f); /* bf16 keeps f32's range, rounds to 8 bits */
    one_mul(TM_F16, 60000.0f, 2.0f, 1.0f, 1.0f, &y, &dw);
    CHECK(y == 120000.0f); /* f32 accumulation: the product may exceed f16 */
    /* a gradient of 1e-8 is below f16's smallest subnormal (6e-8) */
    one_mul(TM_F16, 1.0f, 1.0f, 1e-8f, 1.0f, &y, &dw);
    CHECK(dw == 0.0f);
    one_mul(TM_F16, 1.0f, 1.0f, 1e-8f, 65536.0f, &y, &dw);
    CHECK_NEAR(dw, 1e-8, 0, 1e-3); /* loss scaling keeps it */
    one_mul(TM_F32, 1.0f, 1.0f, 1e-8f, 65536.0f, &y, &dw);
    CHECK(dw == 1e-8f); /* power-of-two scale: exact in f32 */
}

static void test_errors(void)
{
    tm_graph *g = tm_graph_new();
    CHECK_STATUS(tm_graph_set_precision(g, TM_I32), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "bf16") != NULL);
    CHECK_STATUS(tm_graph_set_precision(NULL, TM_BF16), TM_ERR_INVALID);
    CHECK_STATUS(tm_graph_set_loss_scale(g, 0.0f), TM_ERR_INVALID);
    CHECK_STATUS(tm_graph_set_loss_scale(g, INFINITY), TM_ERR_INVALID);
    CHECK_STATUS(tm_graph_set_loss_scale(g, NAN), TM_ERR_INVALID);
    CHECK(tm_graph_loss_scale(g) == 1.0f);
    CHECK(tm_graph_precision(g) == TM_F32 && tm_graph_precision(NULL) == TM_F32);
    tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){2, 3});
    tm_node *w = tm_param(g, "w", 2, (int64_t[]){4, 3});
    CHECK_OK(tm_graph_set_precision(g, TM_BF16));
    CHECK(tm_graph_precision(g) == TM_BF16);
    CHECK_OK(tm_graph_compile(g, tm_linear(g, x, w, NULL), TM_GRAPH_INFER));
    CHECK_STATUS(tm_graph_set_precision(g, TM_F16), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "before tm_graph_compile") != NULL);
    tm_graph_free(g);
}

int main(void)
{
    test_round_kernels();
    test_exact();
    test_mlp_torch();
    test_f16_range();
    test_errors();
    return test_finish("test_precision");
}
