/*
 * 2-D max and average pooling over (N, C, H, W), PyTorch semantics
 * (floor mode; padding counts as -inf for max and as zeros in the divisor
 * for average, count_include_pad=True).
 *
 * Every kernel runs over (n, c) planes in parallel: a plane's outputs and
 * gradients depend on that plane alone and are computed in a fixed order,
 * so results do not depend on the thread count.
 */
#include <math.h>

#include "trimodal/ops.h"

/* Each loop body works on a local copy of this: the library builds with
 * -fno-strict-aliasing, so fields read through a pointer would be reloaded
 * after every store to a float. */
typedef struct {
    float *out;          /* (N*C, Ho, Wo) forward; dx (N*C, H, W) backward */
    int32_t *argmax;     /* (N*C, Ho, Wo) */
    const float *in;     /* x (N*C, H, W) forward; dout (N*C, Ho, Wo) backward */
    const int32_t *amax; /* maxpool backward */
    int64_t H, W, Ho, Wo, KH, KW, sh, sw, ph, pw;
} pool_ctx;

/* Output o's window along one axis, clipped to the image: [*a, *b). */
static void clip(int64_t o, int64_t s, int64_t p, int64_t k, int64_t n, int64_t *a, int64_t *b)
{
    int64_t lo = o * s - p, hi = lo + k;
    *a = lo < 0 ? 0 : lo;
    *b = hi > n ? n : hi;
}

/* ------------------------------------------------------------ max pool */

/* The common 2x2 window, stride 2, no padding: the same rules as the
 * general loop below (strictly greater wins, ties keep the first cell in
 * row-major order, the first NaN wins), without its clipping. */
static void maxpool2x2_plane(const float *x, float *o, int32_t *am, int64_t W, int64_t Ho,
                             int64_t Wo)
{
    for (int64_t oh = 0; oh < Ho; oh++) {
        const float *r0 = x + 2 * oh * W, *r1 = r0 + W;
        for (int64_t ow = 0; ow < Wo; ow++) {
            const int64_t j = 2 * ow;
            const float v[4] = {r0[j], r0[j + 1], r1[j], r1[j + 1]}; /* row-major */
            int b = 0;
            if (v[0] == v[0])
                for (int q = 1; q < 4; q++) {
                    if (v[q] != v[q]) {
                        b = q;
                        break;
                    }
                    if (v[q] > v[b]) b = q;
                }
            o[oh * Wo + ow] = v[b];
            am[oh * Wo + ow] = (int32_t)((2 * oh + (b >> 1)) * W + j + (b & 1));
        }
    }
}

static void maxpool_fwd_range(void *p, int64_t begin, int64_t end)
{
    const pool_ctx c = *(const pool_ctx *)p;
    if (c.KH == 2 && c.KW == 2 && c.sh == 2 && c.sw == 2 && c.ph == 0 && c.pw == 0) {
        for (int64_t pl = begin; pl < end; pl++)
            maxpool2x2_plane(c.in + pl * c.H * c.W, c.out + pl * c.Ho * c.Wo,
                             c.argmax + pl * c.Ho * c.Wo, c.W, c.Ho, c.Wo);
        return;
    }
    for (int64_t pl = begin; pl < end; pl++) {
        const float *x = c.in + pl * c.H * c.W;
        float *o = c.out + pl * c.Ho * c.Wo;
        int32_t *am = c.argmax + pl * c.Ho * c.Wo;
        for (int64_t oh = 0; oh < c.Ho; oh++) {
            int64_t h0, h1;
            clip(oh, c.sh, c.ph, c.KH, c.H, &h0, &h1);
            for (int64_t ow = 0; ow < c.Wo; ow++) {
                int64_t w0, w1;
                clip(ow, c.sw, c.pw, c.KW, c.W, &w0, &w1);
                /* Strictly greater wins, so ties keep the first index in
                 * row-major order; the first NaN wins and stays. A window of
                 * all -inf reports its first cell. A window wholly in the
                 * padding (impossible for pad <= k/2) gives -inf, index -1. */
                float best = -INFINITY;
                int64_t bi = (h0 < h1 && w0 < w1) ? h0 * c.W + w0 : -1;
                for (int64_t h = h0; h < h1 && best == best; h++) {
                    for (int64_t w = w0; w < w1; w++) {
                        float v = x[h * c.W + w];
                        if (v > best || v != v) {
                            best = v;
                            bi = h * c.W + w;
                            if (v != v) break;
                        }
                    }
                }
                o[oh * c.Wo + ow] = best;
                am[oh * c.Wo + ow] = (int32_t)bi;
            }
        }
    }
}

void tm_maxpool2d_forward(float *out, int32_t *argmax, const float *x, int64_t N, int64_t C,
                          int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                          int64_t ph, int64_t pw)
{
    int64_t Ho = tm_conv_out_size(H, KH, sh, ph), Wo = tm_conv_out_size(W, KW, sw, pw);
    if (N < 1 || C < 1 || Ho < 1 || Wo < 1) return;
    pool_ctx c = {out, argmax, x, NULL, H, W, Ho, Wo, KH, KW, sh, sw, ph, pw};
    tm_parallel_range(N * C, N * C * (H * W + Ho * Wo), maxpool_fwd_range, &c);
}

static void maxpool_bwd_range(void *p, int64_t begin, int64_t end)
{
    const pool_ctx c = *(const pool_ctx *)p;
    for (int64_t pl = begin; pl < end; pl++) {
        float *dx = c.out + pl * c.H * c.W;
        const float *g = c.in + pl * c.Ho * c.Wo;
        const int32_t *am = c.amax + pl * c.Ho * c.Wo;
        for (int64_t i = 0; i < c.Ho * c.Wo; i++)
            if (am[i] >= 0) dx[am[i]] += g[i];
    }
}

void tm_maxpool2d_backward(float *dx, const float *dout, const int32_t *argmax, int64_t N,
                           int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo)
{
    if (!dx || N < 1 || C < 1 || Ho < 1 || Wo < 1) return;
    pool_ctx c = {dx, NULL, dout, argmax, H, W, Ho, Wo, 0, 0, 0, 0, 0, 0};
    tm_parallel_range(N * C, N * C * (H * W + Ho * Wo), maxpool_bwd_range, &c);
}

/* ------------------------------------------------------------ avg pool */

static void avgpool_fwd_range(void *p, int64_t begin, int64_t end)
{
    const pool_ctx c = *(const pool_ctx *)p;
    /* Floor mode keeps every window inside the padded image, so the
     * divisor of count_include_pad is always the full window (divided,
     * not multiplied by the inverse, as PyTorch does). */
    const float div = (float)(c.KH * c.KW);
    for (int64_t pl = begin; pl < end; pl++) {
        const float *x = c.in + pl * c.H * c.W;
        float *o = c.out + pl * c.Ho * c.Wo;
        for (int64_t oh = 0; oh < c.Ho; oh++) {
            int64_t h0, h1;
            clip(oh, c.sh, c.ph, c.KH, c.H, &h0, &h1);
            for (int64_t ow = 0; ow < c.Wo; ow++) {
                int64_t w0, w1;
                clip(ow, c.sw, c.pw, c.KW, c.W, &w0, &w1);
                float s = 0.0f;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++)
                        s += x[h * c.W + w];
                o[oh * c.Wo + ow] = s / div;
            }
        }
    }
}

void tm_avgpool2d_forward(float *out, const float *x, int64_t N, int64_t C, int64_t H, int64_t W,
                          int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw)
{
    int64_t Ho = tm_conv_out_size(H, KH, sh, ph), Wo = tm_conv_out_size(W, KW, sw, pw);
    if (N < 1 || C < 1 || Ho < 1 || Wo < 1) return;
    pool_ctx c = {out, NULL, x, NULL, H, W, Ho, Wo, KH, KW, sh, sw, ph, pw};
    tm_parallel_range(N * C, N * C * (H * W + Ho * Wo), avgpool_fwd_range, &c);
}

static void avgpool_bwd_range(void *p, int64_t begin, int64_t end)
{
    const pool_ctx c = *(const pool_ctx *)p;
    const float div = (float)(c.KH * c.KW);
    for (int64_t pl = begin; pl < end; pl++) {
        float *dx = c.out + pl * c.H * c.W;
        const float *g = c.in + pl * c.Ho * c.Wo;
        for (int64_t oh = 0; oh < c.Ho; oh++) {
            int64_t h0, h1;
            clip(oh, c.sh, c.ph, c.KH, c.H, &h0, &h1);
            for (int64_t ow = 0; ow < c.Wo; ow++) {
                int64_t w0, w1;
                clip(ow, c.sw, c.pw, c.KW, c.W, &w0, &w1);
                float v = g[oh * c.Wo + ow] / div;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++)
                        dx[h * c.W + w] += v;
            }
        }
    }
}

void tm_avgpool2d_backward(float *dx, const float *dout, int64_t N, int64_t C, int64_t H, int64_t W,
                           int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw)
{
    int64_t Ho = tm_conv_out_size(H, KH, sh, ph), Wo = tm_conv_out_size(W, KW, sw, pw);
    if (!dx || N < 1 || C < 1 || Ho < 1 || Wo < 1) return;
    pool_ctx c = {dx, NULL, dout, NULL, H, W, Ho, Wo, KH, KW, sh, sw, ph, pw};
    tm_parallel_range(N * C, N * C * (H * W + Ho * Wo), avgpool_bwd_range, &c);
}
