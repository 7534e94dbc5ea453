/* Tests of src/ops/pool.c: max and average pooling, forward and backward.
 *
 * Oracle: direct pooling from the definition in double precision. Max
 * pooling must match exactly (values and argmax); average pooling within
 * atol 1e-6 + rtol 1e-5. Central finite differences (eps 1e-2) of the float
 * forward check the backward on tiny cases; inputs for max pooling are a
 * shuffled grid spaced 0.05 apart, so a step of eps never changes a window's
 * winner and the difference is exact up to float rounding (atol 1e-3). */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/ops.h"

typedef struct {
    int64_t N, C, H, W, KH, KW, sh, sw, ph, pw;
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
    return s->N * s->C * s->H * s->W;
}
static int64_t ny(const shape *s)
{
    return s->N * s->C * out_h(s) * out_w(s);
}

static void *xalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

static void ffill(float *p, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = v;
}

/* ---------------------------------------------------------- reference */

static void ref_max(float *y, int32_t *am, const float *x, const shape *s)
{
    int64_t Ho = out_h(s), Wo = out_w(s);
    for (int64_t pl = 0; pl < s->N * s->C; pl++)
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                double best = -INFINITY;
                int32_t bi = -1;
                for (int64_t kh = 0; kh < s->KH; kh++)
                    for (int64_t kw = 0; kw < s->KW; kw++) {
                        int64_t h = oh * s->sh - s->ph + kh, w = ow * s->sw - s->pw + kw;
                        if (h < 0 || h >= s->H || w < 0 || w >= s->W) continue;
                        double v = x[(pl * s->H + h) * s->W + w];
                        if (bi < 0 || v > best) best = v, bi = (int32_t)(h * s->W + w);
                    }
                y[(pl * Ho + oh) * Wo + ow] = (float)best;
                am[(pl * Ho + oh) * Wo + ow] = bi;
            }
}

/* Average: y = sum of the window / (KH*KW); dx += g / (KH*KW) per window. */
static void ref_avg(double *y, double *dx, const float *x, const float *g, const shape *s)
{
    int64_t Ho = out_h(s), Wo = out_w(s);
    memset(dx, 0, sizeof(double) * (size_t)nx(s));
    for (int64_t pl = 0; pl < s->N * s->C; pl++)
        for (int64_t oh = 0; oh < Ho; oh++)
            for (int64_t ow = 0; ow < Wo; ow++) {
                int64_t iy = (pl * Ho + oh) * Wo + ow;
                double sum = 0;
                for (int64_t kh = 0; kh < s->KH; kh++)
                    for (int64_t kw = 0; kw < s->KW; kw++) {
                        int64_t h = oh * s->sh - s->ph + kh, w = ow * s->sw - s->pw + kw;
                        if (h < 0 || h >= s->H || w < 0 || w >= s->W) continue;
                        int64_t ix = (pl * s->H + h) * s->W + w;
                        sum += x[ix];
                        dx[ix] += (double)g[iy] / (double)(s->KH * s->KW);
                    }
                y[iy] = sum / (double)(s->KH * s->KW);
            }
}

/* ------------------------------------------------------------ one case */

static void check_case(const shape *s, uint64_t seed, const char *name)
{
    char what[256];
    int64_t n_x = nx(s), n_y = ny(s), Ho = out_h(s), Wo = out_w(s);
    float *x = xalloc(sizeof(float) * (size_t)n_x), *g = xalloc(sizeof(float) * (size_t)n_y);
    float *y = xalloc(sizeof(float) * (size_t)n_y), *yr = xalloc(sizeof(float) * (size_t)n_y);
    int32_t *am = xalloc(sizeof(int32_t) * (size_t)n_y);
    int32_t *amr = xalloc(sizeof(int32_t) * (size_t)n_y);
    float *dx = xalloc(sizeof(float) * (size_t)n_x), *want = xalloc(sizeof(float) * (size_t)n_x);
    double *yd = xalloc(sizeof(double) * (size_t)n_y), *dxd = xalloc(sizeof(double) * (size_t)n_x);
    test_fill_uniform(x, n_x, seed, -1, 1);
    /* Round to a coarse grid so windows often hold ties. */
    for (int64_t i = 0; i < n_x; i++)
        x[i] = roundf(x[i] * 4) / 4;
    test_fill_uniform(g, n_y, seed + 1, -1, 1);

    /* Max pooling. */
    ffill(y, n_y, NAN);
    tm_maxpool2d_forward(y, am, x, s->N, s->C, s->H, s->W, s->KH, s->KW, s->sh, s->sw, s->ph,
                         s->pw);
    ref_max(yr, amr, x, s);
    snprintf(what, sizeof what, "%s max forward", name);
    check_close(what, y, yr, n_y, 0, 0);
    CHECK(memcmp(am, amr, sizeof(int32_t) * (size_t)n_y) == 0);
    ffill(dx, n_x, 1);
    ffill(want, n_x, 1);
    for (int64_t pl = 0; pl < s->N * s->C; pl++)
        for (int64_t i = 0; i < Ho * Wo; i++)
            want[pl * s->H * s->W + amr[pl * Ho * Wo + i]] += g[pl * Ho * Wo + i];
    tm_maxpool2d_backward(dx, g, am, s->N, s->C, s->H, s->W, Ho, Wo);
    snprintf(what, sizeof what, "%s max backward", name);
    check_close(what, dx, want, n_x, 1e-6, 1e-6);

    /* Average pooling. */
    ffill(y, n_y, NAN);
    tm_avgpool2d_forward(y, x, s->N, s->C, s->H, s->W, s->KH, s->KW, s->sh, s->sw, s->ph, s->pw);
    ref_avg(yd, dxd, x, g, s);
    for (int64_t i = 0; i < n_y; i++)
        yr[i] = (float)yd[i];
    snprintf(what, sizeof what, "%s avg forward", name);
    check_close(what, y, yr, n_y, 1e-6, 1e-5);
    ffill(dx, n_x, 1);
    for (int64_t i = 0; i < n_x; i++)
        want[i] = (float)(1.0 + dxd[i]);
    tm_avgpool2d_backward(dx, g, s->N, s->C, s->H, s->W, s->KH, s->KW, s->sh, s->sw, s->ph, s->pw);
    snprintf(what, sizeof what, "%s avg backward", name);
    check_close(what, dx, want, n_x, 1e-6, 1e-5);

    free(x), free(g), free(y), free(yr), free(am), free(amr), free(dx), free(want);
    free(yd), free(dxd);
}

/* -------------------------------------------------------------- tests */

static uint64_t rng_state = 987654321;
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
    for (int t = 0; done < 200 && t < 10000; t++) {
        shape s;
        s.N = pick(1, 3), s.C = pick(1, 4), s.H = pick(1, 10), s.W = pick(1, 10);
        s.KH = pick(1, 5), s.KW = pick(1, 5), s.sh = pick(1, 3), s.sw = pick(1, 3);
        /* PyTorch allows padding up to half the kernel. */
        s.ph = pick(0, s.KH / 2), s.pw = pick(0, s.KW / 2);
        if (out_h(&s) < 1 || out_w(&s) < 1) continue;
        char name[160];
        snprintf(name, sizeof name, "case N%lld C%lld %lldx%lld k%lldx%lld s%lld,%lld p%lld,%lld",
                 (long long)s.N, (long long)s.C, (long long)s.H, (long long)s.W, (long long)s.KH,
                 (long long)s.KW, (long long)s.sh, (long long)s.sw, (long long)s.ph,
                 (long long)s.pw);
        check_case(&s, 300 + (uint64_t)t, name);
        done++;
    }
    CHECK(done == 200);
    /* Larger planes, enough to go through the thread pool. */
    shape big = {4, 16, 32, 32, 3, 3, 2, 2, 1, 1};
    check_case(&big, 17, "big 3x3 s2 p1");
    shape oned = {3, 8, 1, 100, 1, 3, 1, 2, 0, 1};
    check_case(&oned, 18, "1-D k3 s2 p1");
}

static void test_ties_and_specials(void)
{
    /* 2x2 windows, stride 2: [1 3 | 0 0], [3 2 | 0 0] -> max 3 at index 1
     * (the first 3 in row-major order), and 0 at index 2 (first of four). */
    const float x[8] = {1, 3, 0, 0, 3, 2, 0, 0};
    float y[2];
    int32_t am[2];
    tm_maxpool2d_forward(y, am, x, 1, 1, 2, 4, 2, 2, 2, 2, 0, 0);
    CHECK(y[0] == 3 && am[0] == 1);
    CHECK(y[1] == 0 && am[1] == 2);

    /* Padding is -inf, never a winner: all-negative input with padding. */
    const float neg[4] = {-5, -7, -9, -6};
    float yn[9];
    int32_t an[9];
    tm_maxpool2d_forward(yn, an, neg, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1);
    /* Windows (3x3 outputs) over the padded 4x4 image. */
    const float wy[9] = {-5, -5, -7, -5, -5, -6, -9, -6, -6};
    const int32_t wa[9] = {0, 0, 1, 0, 0, 3, 2, 3, 3};
    for (int i = 0; i < 9; i++)
        CHECK(yn[i] == wy[i] && an[i] == wa[i]);

    /* A window of all -inf reports -inf at its first cell. */
    const float ninf[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    float yi;
    int32_t ai;
    tm_maxpool2d_forward(&yi, &ai, ninf, 1, 1, 2, 2, 2, 2, 1, 1, 0, 0);
    CHECK(isinf(yi) && yi < 0 && ai == 0);

    /* NaN propagates. */
    const float nan4[4] = {1, NAN, 5, 2};
    tm_maxpool2d_forward(&yi, &ai, nan4, 1, 1, 2, 2, 2, 2, 1, 1, 0, 0);
    CHECK(isnan(yi) && ai == 1);

    /* The same rules in the 2x2, stride-2 fast path: -inf windows report
     * their first cell, the first NaN wins wherever it is, ties keep the
     * first cell, and a 5x5 input drops its last row and column. */
    const float sp[16] = {-INFINITY, -INFINITY, NAN, 1,  -INFINITY, -INFINITY, 2,   NAN,
                          4,         4,         0,   7,  NAN,       4,         7,   7};
    float ys[4];
    int32_t as[4];
    tm_maxpool2d_forward(ys, as, sp, 1, 1, 4, 4, 2, 2, 2, 2, 0, 0);
    CHECK(isinf(ys[0]) && ys[0] < 0 && as[0] == 0);
    CHECK(isnan(ys[1]) && as[1] == 2);
    CHECK(isnan(ys[2]) && as[2] == 12);
    CHECK(ys[3] == 7 && as[3] == 11);
    float x5[25], y5[4];
    int32_t a5[4];
    for (int i = 0; i < 25; i++) x5[i] = (i % 5 == 4 || i >= 20) ? 100.0f : (float)(i % 3);
    tm_maxpool2d_forward(y5, a5, x5, 1, 1, 5, 5, 2, 2, 2, 2, 0, 0);
    const float w5[4] = {2, 2, 2, 2};
    const int32_t wa5[4] = {5, 2, 11, 17};
    for (int i = 0; i < 4; i++)
        CHECK(y5[i] == w5[i] && a5[i] == wa5[i]);

    /* Overlapping windows (stride 1) sharing a winner: its gradient is the
     * sum of both; dx starts at ones. */
    const float x3[3] = {0, 9, 1};
    float y3[2], g3[2] = {0.25f, 0.5f}, dx3[3] = {1, 1, 1};
    int32_t a3[2];
    tm_maxpool2d_forward(y3, a3, x3, 1, 1, 1, 3, 1, 2, 1, 1, 0, 0);
    CHECK(y3[0] == 9 && y3[1] == 9 && a3[0] == 1 && a3[1] == 1);
    tm_maxpool2d_backward(dx3, g3, a3, 1, 1, 1, 3, 1, 2);
    CHECK(dx3[0] == 1 && dx3[1] == 1.75f && dx3[2] == 1);

    /* Average pooling counts padded cells in the divisor. */
    const float ones[4] = {1, 1, 1, 1};
    float ya[9];
    tm_avgpool2d_forward(ya, ones, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1);
    CHECK(ya[0] == 0.25f && ya[1] == 0.5f && ya[4] == 1.0f);
    float da[4] = {1, 1, 1, 1}, ga[9];
    ffill(ga, 9, 4);
    tm_avgpool2d_backward(da, ga, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1);
    for (int i = 0; i < 4; i++)
        CHECK(da[i] == 5); /* each cell in 4 windows */

    /* NULL gradients are harmless. */
    tm_maxpool2d_backward(NULL, g3, a3, 1, 1, 1, 3, 1, 2);
    tm_avgpool2d_backward(NULL, ga, 1, 1, 2, 2, 2, 2, 1, 1, 1, 1);
}

/* Central differences on tiny shapes. */
static void test_finite_differences(void)
{
    static const shape shapes[] = {
        {2, 2, 5, 6, 3, 2, 2, 2, 1, 1},
        {1, 3, 1, 9, 1, 3, 1, 2, 0, 1},
        {1, 2, 4, 4, 2, 2, 2, 2, 0, 0},
    };
    const float eps = 1e-2f;
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        const shape *s = &shapes[c];
        int64_t n_x = nx(s), n_y = ny(s), Ho = out_h(s), Wo = out_w(s);
        float *x = xalloc(sizeof(float) * (size_t)n_x), *g = xalloc(sizeof(float) * (size_t)n_y);
        float *y = xalloc(sizeof(float) * (size_t)n_y);
        int32_t *am = xalloc(sizeof(int32_t) * (size_t)n_y);
        float *dmax = xalloc(sizeof(float) * (size_t)n_x),
              *davg = xalloc(sizeof(float) * (size_t)n_x);
        float *fmax = xalloc(sizeof(float) * (size_t)n_x),
              *favg = xalloc(sizeof(float) * (size_t)n_x);
        /* A permutation of 0.05 * i, centred: distinct values 0.05 apart. */
        for (int64_t i = 0; i < n_x; i++)
            x[i] = 0.05f * (float)(i - n_x / 2);
        for (int64_t i = n_x - 1; i > 0; i--) {
            int64_t j = (int64_t)((uint64_t)(i * 2654435761u + c) % (uint64_t)(i + 1));
            float t = x[i];
            x[i] = x[j], x[j] = t;
        }
        test_fill_uniform(g, n_y, 500 + c, -1, 1);
        ffill(dmax, n_x, 0), ffill(davg, n_x, 0);
        tm_maxpool2d_forward(y, am, x, s->N, s->C, s->H, s->W, s->KH, s->KW, s->sh, s->sw, s->ph,
                             s->pw);
        tm_maxpool2d_backward(dmax, g, am, s->N, s->C, s->H, s->W, Ho, Wo);
        tm_avgpool2d_backward(davg, g, s->N, s->C, s->H, s->W, s->KH, s->KW, s->sh, s->sw, s->ph,
                              s->pw);
        for (int64_t i = 0; i < n_x; i++) {
            float keep = x[i];
            double l[2][2]; /* [max, avg][+, -] */
            for (int sgn = 0; sgn < 2; sgn++) {
                x[i] = keep + (sgn ? -eps : eps);
                tm_maxpool2d_forward(y, am, x, s->N, s->C, s->H, s->W, s->KH, s->KW, s->sh, s->sw,
                                     s->ph, s->pw);
                l[0][sgn] = 0;
                for (int64_t k = 0; k < n_y; k++)
                    l[0][sgn] += (double)y[k] * g[k];
                tm_avgpool2d_forward(y, x, s->N, s->C, s->H, s->W, s->KH, s->KW, s->sh, s->sw,
                                     s->ph, s->pw);
                l[1][sgn] = 0;
                for (int64_t k = 0; k < n_y; k++)
                    l[1][sgn] += (double)y[k] * g[k];
            }
            x[i] = keep;
            fmax[i] = (float)((l[0][0] - l[0][1]) / (2.0 * eps));
            favg[i] = (float)((l[1][0] - l[1][1]) / (2.0 * eps));
        }
        check_close("finite differences maxpool dx", dmax, fmax, n_x, 1e-3, 1e-3);
        check_close("finite differences avgpool dx", davg, favg, n_x, 1e-3, 1e-3);
        free(x), free(g), free(y), free(am), free(dmax), free(davg), free(fmax), free(favg);
    }
}

/* Outputs and gradients at 1, 2 and 3 threads: bitwise identical. */
static void test_thread_identity(void)
{
    const shape s = {3, 20, 30, 30, 3, 3, 2, 2, 1, 1};
    int64_t n_x = nx(&s), n_y = ny(&s), Ho = out_h(&s), Wo = out_w(&s);
    float *x = xalloc(sizeof(float) * (size_t)n_x), *g = xalloc(sizeof(float) * (size_t)n_y);
    test_fill_uniform(x, n_x, 77, -1, 1);
    test_fill_uniform(g, n_y, 78, -1, 1);
    int saved = tm_get_num_threads();
    int64_t total = 2 * n_y + 2 * n_x;
    float *res[3];
    int32_t *ams[3];
    for (int t = 0; t < 3; t++) {
        CHECK_OK(tm_set_num_threads(t + 1));
        float *r = res[t] = xalloc(sizeof(float) * (size_t)total);
        int32_t *am = ams[t] = xalloc(sizeof(int32_t) * (size_t)n_y);
        float *ymax = r, *yavg = r + n_y, *dmax = yavg + n_y, *davg = dmax + n_x;
        ffill(r, total, 0.5f);
        tm_maxpool2d_forward(ymax, am, x, s.N, s.C, s.H, s.W, s.KH, s.KW, s.sh, s.sw, s.ph, s.pw);
        tm_maxpool2d_backward(dmax, g, am, s.N, s.C, s.H, s.W, Ho, Wo);
        tm_avgpool2d_forward(yavg, x, s.N, s.C, s.H, s.W, s.KH, s.KW, s.sh, s.sw, s.ph, s.pw);
        tm_avgpool2d_backward(davg, g, s.N, s.C, s.H, s.W, s.KH, s.KW, s.sh, s.sw, s.ph, s.pw);
    }
    for (int t = 1; t < 3; t++) {
        CHECK(memcmp(res[0], res[t], sizeof(float) * (size_t)total) == 0);
        CHECK(memcmp(ams[0], ams[t], sizeof(int32_t) * (size_t)n_y) == 0);
    }
    for (int t = 0; t < 3; t++)
        free(res[t]), free(ams[t]);
    free(x), free(g);
    CHECK_OK(tm_set_num_threads(saved));
}

int main(void)
{
    test_ties_and_specials();
    test_random_cases();
    test_finite_differences();
    test_thread_identity();
    return test_finish("ops/pool");
}
