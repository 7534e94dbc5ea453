/* Tests of src/ops/conv.c: tm_conv_out_size, tm_conv2d_forward/backward.
 *
 * Oracle: a direct convolution in double precision and its gradients,
 * written from the definition (cross-correlation, zero padding). The float
 * kernels must match it within atol 1e-4 + rtol 1e-4 (inputs in [-1, 1],
 * K = Cin*KH*KW <= 768). A central finite difference (eps 1e-2) of the float
 * forward checks the float backward on tiny cases: the convolution is linear,
 * so the only error is float rounding of the loss, well under the stated
 * atol 2e-3 + rtol 1e-2. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/ops.h"

typedef struct {
    int64_t N, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw;
} shape;

static int64_t out_h(const shape *s)
{
    return tm_conv_out_size(s->H, s->KH, s->sh, s->ph);
}
static int64_t out_w(const shape *s)
{
    return tm_conv_out_size(s->W, s->KW, s->sw, s->pw);
}
static int64_t nx(const shape *s)
{
    return s->N * s->Cin * s->H * s->W;
}
static int64_t nw(const shape *s)
{
    return s->Cout * s->Cin * s->KH * s->KW;
}
static int64_t ny(const shape *s)
{
    return s->N * s->Cout * out_h(s) * out_w(s);
}

static float *falloc(int64_t n)
{
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!p) abort();
    return p;
}

static void ffill(float *p, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = v;
}

/* Work of the exact size, filled with NaN so that reading anything not
 * written first shows up in the results. */
static float *work_new(const shape *s)
{
    size_t n = tm_conv2d_work_floats(s->N, s->Cin, s->H, s->W, s->Cout, s->KH, s->KW, s->sh, s->sw,
                                     s->ph, s->pw);
    float *w = falloc((int64_t)n);
    ffill(w, (int64_t)n, NAN);
    return w;
}

/* ---------------------------------------------------------- reference */

/* Runs BODY for every (input ix, weight iw_, output iy) index triple that
 * meets in the convolution; padding taps are skipped. */
#define FOR_EACH_TAP(s, BODY)                                                                      \
    do {                                                                                           \
        int64_t Ho_ = out_h(s), Wo_ = out_w(s);                                                    \
        for (int64_t n = 0; n < (s)->N; n++)                                                       \
            for (int64_t co = 0; co < (s)->Cout; co++)                                             \
                for (int64_t oh = 0; oh < Ho_; oh++)                                               \
                    for (int64_t ow = 0; ow < Wo_; ow++) {                                         \
                        int64_t iy = ((n * (s)->Cout + co) * Ho_ + oh) * Wo_ + ow;                 \
                        for (int64_t ci = 0; ci < (s)->Cin; ci++)                                  \
                            for (int64_t kh = 0; kh < (s)->KH; kh++)                               \
                                for (int64_t kw = 0; kw < (s)->KW; kw++) {                         \
                                    int64_t ih = oh * (s)->sh - (s)->ph + kh;                      \
                                    int64_t iw = ow * (s)->sw - (s)->pw + kw;                      \
                                    if (ih < 0 || ih >= (s)->H || iw < 0 || iw >= (s)->W)          \
                                        continue;                                                  \
                                    int64_t ix =                                                   \
                                        ((n * (s)->Cin + ci) * (s)->H + ih) * (s)->W + iw;         \
                                    int64_t iw_ =                                                  \
                                        ((co * (s)->Cin + ci) * (s)->KH + kh) * (s)->KW + kw;      \
                                    BODY;                                                          \
                                }                                                                  \
                    }                                                                              \
    } while (0)

static void ref_forward(double *y, const float *x, const float *w, const float *b, const shape *s)
{
    int64_t Ho = out_h(s), Wo = out_w(s);
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t co = 0; co < s->Cout; co++)
            for (int64_t i = 0; i < Ho * Wo; i++)
                y[(n * s->Cout + co) * Ho * Wo + i] = b ? b[co] : 0.0;
    FOR_EACH_TAP(s, y[iy] += (double)x[ix] * w[iw_]);
}

static void ref_backward(double *dx, double *dw, double *db, const float *g, const float *x,
                         const float *w, const shape *s)
{
    memset(dx, 0, sizeof(double) * (size_t)nx(s));
    memset(dw, 0, sizeof(double) * (size_t)nw(s));
    memset(db, 0, sizeof(double) * (size_t)s->Cout);
    int64_t P = out_h(s) * out_w(s);
    for (int64_t n = 0; n < s->N; n++)
        for (int64_t co = 0; co < s->Cout; co++)
            for (int64_t i = 0; i < P; i++)
                db[co] += g[(n * s->Cout + co) * P + i];
    FOR_EACH_TAP(s, {
        dx[ix] += (double)g[iy] * w[iw_];
        dw[iw_] += (double)g[iy] * x[ix];
    });
}

/* want[i] = base + ref[i] as float. */
static float *to_float(const double *ref, int64_t n, float base)
{
    float *f = falloc(n);
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)(base + ref[i]);
    return f;
}

/* ------------------------------------------------------------ one case */

/* Forward with and without bias, then backward: all three gradients into
 * buffers pre-filled with ones (accumulation), then each gradient alone with
 * the others NULL. */
static void check_case(const shape *s, uint64_t seed, const char *name)
{
    char what[256];
    int64_t n_x = nx(s), n_w = nw(s), n_y = ny(s);
    float *x = falloc(n_x), *w = falloc(n_w), *b = falloc(s->Cout), *g = falloc(n_y);
    test_fill_uniform(x, n_x, seed, -1, 1);
    test_fill_uniform(w, n_w, seed + 1, -1, 1);
    test_fill_uniform(b, s->Cout, seed + 2, -1, 1);
    test_fill_uniform(g, n_y, seed + 3, -1, 1);
    float *work = work_new(s);
    double *yd = malloc(sizeof(double) * (size_t)n_y);

    for (int with_bias = 0; with_bias < 2; with_bias++) {
        const float *bp = with_bias ? b : NULL;
        float *y = falloc(n_y);
        ffill(y, n_y, NAN);
        tm_conv2d_forward(y, work, x, w, bp, s->N, s->Cin, s->H, s->W, s->Cout, s->KH, s->KW, s->sh,
                          s->sw, s->ph, s->pw);
        ref_forward(yd, x, w, bp, s);
        float *want = to_float(yd, n_y, 0);
        snprintf(what, sizeof what, "%s forward%s", name, with_bias ? "" : " (no bias)");
        check_close(what, y, want, n_y, 1e-4, 1e-4);
        free(want);
        free(y);
    }

    double *dxd = malloc(sizeof(double) * (size_t)n_x);
    double *dwd = malloc(sizeof(double) * (size_t)n_w);
    double *dbd = malloc(sizeof(double) * (size_t)s->Cout);
    ref_backward(dxd, dwd, dbd, g, x, w, s);
    float *wx = to_float(dxd, n_x, 1), *ww = to_float(dwd, n_w, 1);
    float *wb = to_float(dbd, s->Cout, 1);
    float *dx = falloc(n_x), *dw = falloc(n_w), *db = falloc(s->Cout);

    ffill(dx, n_x, 1), ffill(dw, n_w, 1), ffill(db, s->Cout, 1);
    tm_conv2d_backward(dx, dw, db, work, g, x, w, s->N, s->Cin, s->H, s->W, s->Cout, s->KH, s->KW,
                       s->sh, s->sw, s->ph, s->pw);
    snprintf(what, sizeof what, "%s dx", name);
    check_close(what, dx, wx, n_x, 1e-4, 1e-4);
    snprintf(what, sizeof what, "%s dw", name);
    check_close(what, dw, ww, n_w, 1e-4, 1e-4);
    snprintf(what, sizeof what, "%s dbias", name);
    check_close(what, db, wb, s->Cout, 1e-4, 1e-4);

    /* One gradient at a time; the others NULL. */
    ffill(dx, n_x, 1);
    ffill(work,
          (int64_t)tm_conv2d_work_floats(s->N, s->Cin, s->H, s->W, s->Cout, s->KH, s->KW, s->sh,
                                         s->sw, s->ph, s->pw),
          NAN);
    tm_conv2d_backward(dx, NULL, NULL, work, g, x, w, s->N, s->Cin, s->H, s->W, s->Cout, s->KH,
                       s->KW, s->sh, s->sw, s->ph, s->pw);
    snprintf(what, sizeof what, "%s dx only", name);
    check_close(what, dx, wx, n_x, 1e-4, 1e-4);
    ffill(dw, n_w, 1);
    tm_conv2d_backward(NULL, dw, NULL, work, g, x, w, s->N, s->Cin, s->H, s->W, s->Cout, s->KH,
                       s->KW, s->sh, s->sw, s->ph, s->pw);
    snprintf(what, sizeof what, "%s dw only", name);
    check_close(what, dw, ww, n_w, 1e-4, 1e-4);
    ffill(db, s->Cout, 1);
    tm_conv2d_backward(NULL, NULL, db, work, g, x, w, s->N, s->Cin, s->H, s->W, s->Cout, s->KH,
                       s->KW, s->sh, s->sw, s->ph, s->pw);
    snprintf(what, sizeof what, "%s dbias only", name);
    check_close(what, db, wb, s->Cout, 1e-4, 1e-4);

    free(dx), free(dw), free(db), free(wx), free(ww), free(wb);
    free(dxd), free(dwd), free(dbd), free(yd), free(work);
    free(x), free(w), free(b), free(g);
}

/* -------------------------------------------------------------- tests */

static void test_out_size(void)
{
    CHECK(tm_conv_out_size(32, 4, 4, 0) == 8);
    CHECK(tm_conv_out_size(100, 3, 1, 1) == 100);
    CHECK(tm_conv_out_size(100, 3, 2, 1) == 50);
    CHECK(tm_conv_out_size(5, 3, 2, 0) == 2);
    CHECK(tm_conv_out_size(6, 3, 2, 0) == 2);
    CHECK(tm_conv_out_size(7, 3, 2, 0) == 3);
    CHECK(tm_conv_out_size(1, 1, 1, 0) == 1);
    CHECK(tm_conv_out_size(2, 3, 1, 0) == -1);
    CHECK(tm_conv_out_size(2, 3, 1, 1) == 2);
    CHECK(tm_conv_out_size(1, 5, 3, 2) == 1);
    CHECK(tm_conv_out_size(0, 1, 1, 0) == -1);
}

static uint64_t rng_state = 12345;
static int64_t pick(int64_t lo, int64_t hi) /* inclusive */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (int64_t)(rng_state % (uint64_t)(hi - lo + 1));
}

static void test_random_cases(void)
{
    int done = 0;
    for (int t = 0; done < 150 && t < 10000; t++) {
        shape s;
        s.N = pick(1, 3), s.Cin = pick(1, 5), s.Cout = pick(1, 5);
        s.KH = pick(1, 5), s.KW = pick(1, 5), s.sh = pick(1, 3), s.sw = pick(1, 3);
        s.ph = pick(0, 2), s.pw = pick(0, 2), s.H = pick(1, 9), s.W = pick(1, 9);
        if (out_h(&s) < 1 || out_w(&s) < 1) continue;
        char name[160];
        snprintf(name, sizeof name,
                 "case N%lld C%lld->%lld %lldx%lld k%lldx%lld s%lld,%lld p%lld,%lld",
                 (long long)s.N, (long long)s.Cin, (long long)s.Cout, (long long)s.H,
                 (long long)s.W, (long long)s.KH, (long long)s.KW, (long long)s.sh, (long long)s.sw,
                 (long long)s.ph, (long long)s.pw);
        check_case(&s, 100 + (uint64_t)t, name);
        done++;
    }
    CHECK(done == 150);
}

static void test_fixed_cases(void)
{
    static const struct {
        const char *name;
        shape s;
    } cases[] = {
        /* 1-D: H = KH = 1 */
        {"conv1d k3 p1", {2, 3, 1, 11, 4, 1, 3, 1, 1, 0, 1}},
        {"conv1d k3 s2 p1", {3, 2, 1, 10, 3, 1, 3, 1, 2, 0, 1}},
        {"conv1d k5 s3 p2", {1, 4, 1, 13, 2, 1, 5, 1, 3, 0, 2}},
        {"conv1d k1", {2, 5, 1, 7, 5, 1, 1, 1, 1, 0, 0}},
        {"conv1d kernel = width", {2, 2, 1, 4, 3, 1, 4, 1, 1, 0, 0}},
        /* 2-D specials */
        {"1x1", {2, 3, 4, 5, 2, 1, 1, 1, 1, 0, 0}},
        {"1x1 strided", {2, 3, 5, 5, 2, 1, 1, 2, 2, 0, 0}},
        {"patches k2 s2", {2, 1, 6, 8, 3, 2, 2, 2, 2, 0, 0}},
        {"patches not tiling", {1, 2, 7, 9, 3, 2, 3, 2, 3, 0, 0}},
        {"kernel larger than image", {1, 2, 2, 3, 2, 4, 5, 1, 1, 2, 2}},
        {"1x1 image", {3, 2, 1, 1, 2, 3, 3, 1, 1, 1, 1}},
        /* bench-small's shapes at small batch */
        {"vision patch Conv2d(1,256,k4,s4)", {2, 1, 32, 32, 256, 4, 4, 4, 4, 0, 0}},
        {"audio Conv1d(64,256,k3,p1)", {1, 64, 1, 100, 256, 1, 3, 1, 1, 0, 1}},
        {"audio Conv1d(256,256,k3,s2,p1)", {1, 256, 1, 100, 256, 1, 3, 1, 2, 0, 1}},
        /* Big enough per image that the batch splits into chunks of 2, 1:
         * with K <= P (GEMMs per image) and K > P (one GEMM, then scatter). */
        {"chunked batch, K <= P", {3, 1, 128, 128, 91, 1, 1, 1, 1, 1, 1}},
        {"chunked batch, K > P", {3, 512, 1, 1024, 2, 1, 3, 1, 1, 0, 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i].s, 7000 + i, cases[i].name);
}

/* Loss L = sum(y * g) in double from the float forward. */
static double loss(const float *x, const float *w, const float *b, const float *g, float *y,
                   float *work, const shape *s)
{
    tm_conv2d_forward(y, work, x, w, b, s->N, s->Cin, s->H, s->W, s->Cout, s->KH, s->KW, s->sh,
                      s->sw, s->ph, s->pw);
    double l = 0;
    for (int64_t i = 0; i < ny(s); i++)
        l += (double)y[i] * g[i];
    return l;
}

/* Central differences of every input, weight and bias on tiny shapes. */
static void test_finite_differences(void)
{
    static const shape shapes[] = {
        {2, 2, 4, 5, 2, 3, 2, 2, 1, 1, 0},
        {1, 3, 1, 7, 2, 1, 3, 1, 2, 0, 1},
        {2, 1, 5, 5, 3, 2, 2, 2, 2, 0, 0},
    };
    const float eps = 1e-2f;
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        const shape *s = &shapes[c];
        int64_t n_x = nx(s), n_w = nw(s), n_y = ny(s);
        float *x = falloc(n_x), *w = falloc(n_w), *b = falloc(s->Cout), *g = falloc(n_y);
        float *y = falloc(n_y), *work = work_new(s);
        test_fill_uniform(x, n_x, 40 + c, -1, 1);
        test_fill_uniform(w, n_w, 50 + c, -1, 1);
        test_fill_uniform(b, s->Cout, 60 + c, -1, 1);
        test_fill_uniform(g, n_y, 70 + c, -1, 1);
        float *dx = falloc(n_x), *dw = falloc(n_w), *db = falloc(s->Cout);
        ffill(dx, n_x, 0), ffill(dw, n_w, 0), ffill(db, s->Cout, 0);
        tm_conv2d_backward(dx, dw, db, work, g, x, w, s->N, s->Cin, s->H, s->W, s->Cout, s->KH,
                           s->KW, s->sh, s->sw, s->ph, s->pw);
        float *fx = falloc(n_x), *fw = falloc(n_w), *fb = falloc(s->Cout);
        struct {
            float *p, *fd;
            int64_t n;
        } params[] = {{x, fx, n_x}, {w, fw, n_w}, {b, fb, s->Cout}};
        for (int k = 0; k < 3; k++) {
            for (int64_t i = 0; i < params[k].n; i++) {
                float keep = params[k].p[i];
                params[k].p[i] = keep + eps;
                double lp = loss(x, w, b, g, y, work, s);
                params[k].p[i] = keep - eps;
                double lm = loss(x, w, b, g, y, work, s);
                params[k].p[i] = keep;
                params[k].fd[i] = (float)((lp - lm) / (2.0 * eps));
            }
        }
        check_close("finite differences dx", dx, fx, n_x, 2e-3, 1e-2);
        check_close("finite differences dw", dw, fw, n_w, 2e-3, 1e-2);
        check_close("finite differences dbias", db, fb, s->Cout, 2e-3, 1e-2);
        free(x), free(w), free(b), free(g), free(y), free(work);
        free(dx), free(dw), free(db), free(fx), free(fw), free(fb);
    }
}

/* Forward and all gradients at 1, 2 and 3 threads: bitwise identical. */
static void test_thread_identity(void)
{
    static const shape shapes[] = {
        {4, 1, 32, 32, 256, 4, 4, 4, 4, 0, 0},
        {3, 64, 1, 100, 256, 1, 3, 1, 1, 0, 1},
        {2, 256, 1, 100, 256, 1, 3, 1, 2, 0, 1},
        {3, 3, 17, 19, 5, 3, 3, 2, 1, 1, 1},
    };
    int saved = tm_get_num_threads();
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        const shape *s = &shapes[c];
        int64_t n_x = nx(s), n_w = nw(s), n_y = ny(s);
        int64_t total = n_y + n_x + n_w + s->Cout;
        float *x = falloc(n_x), *w = falloc(n_w), *b = falloc(s->Cout), *g = falloc(n_y);
        float *work = work_new(s);
        test_fill_uniform(x, n_x, 80 + c, -1, 1);
        test_fill_uniform(w, n_w, 90 + c, -1, 1);
        test_fill_uniform(b, s->Cout, 100 + c, -1, 1);
        test_fill_uniform(g, n_y, 110 + c, -1, 1);
        float *res[3];
        for (int t = 0; t < 3; t++) {
            CHECK_OK(tm_set_num_threads(t + 1));
            float *r = res[t] = falloc(total);
            float *y = r, *dx = r + n_y, *dw = dx + n_x, *db = dw + n_w;
            ffill(r, total, 0.5f);
            tm_conv2d_forward(y, work, x, w, b, s->N, s->Cin, s->H, s->W, s->Cout, s->KH, s->KW,
                              s->sh, s->sw, s->ph, s->pw);
            tm_conv2d_backward(dx, dw, db, work, g, x, w, s->N, s->Cin, s->H, s->W, s->Cout, s->KH,
                               s->KW, s->sh, s->sw, s->ph, s->pw);
        }
        CHECK(memcmp(res[0], res[1], sizeof(float) * (size_t)total) == 0);
        CHECK(memcmp(res[0], res[2], sizeof(float) * (size_t)total) == 0);
        for (int t = 0; t < 3; t++)
            free(res[t]);
        free(x), free(w), free(b), free(g), free(work);
    }
    CHECK_OK(tm_set_num_threads(saved));
}

/* The work size covers the larger of forward and backward and grows with
 * the batch only up to the chunk size. */
static void test_work_size(void)
{
    /* Audio Conv1d(256,256,k3,s2,p1), batch 32: 51,200 floats an image,
     * four chunks of eight images under the 2^19-float target. */
    CHECK(tm_conv2d_work_floats(32, 256, 1, 100, 256, 1, 3, 1, 2, 0, 1) ==
          (size_t)8 * 50 * (768 + 256));
    /* One image over the target is a chunk of its own. */
    CHECK(tm_conv2d_work_floats(3, 256, 64, 64, 256, 3, 3, 1, 1, 1, 1) ==
          (size_t)64 * 64 * (2304 + 256));
    CHECK(tm_conv2d_work_floats(1, 1, 32, 32, 256, 4, 4, 4, 4, 0, 0) == (size_t)64 * 272);
    /* Empty output: no work. */
    CHECK(tm_conv2d_work_floats(1, 1, 2, 2, 1, 3, 3, 1, 1, 0, 0) == 0);
    /* A huge batch is chunked: the work is bounded. */
    size_t big = tm_conv2d_work_floats(100000, 3, 32, 32, 16, 3, 3, 1, 1, 1, 1);
    CHECK(big > 0 && big < ((size_t)1 << 24));
}

int main(void)
{
    test_out_size();
    test_work_size();
    test_fixed_cases();
    test_random_cases();
    test_finite_differences();
    test_thread_identity();
    return test_finish("ops/conv");
}
