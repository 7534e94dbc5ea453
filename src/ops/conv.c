/*
 * Convolution: 2-D cross-correlation with zero padding (PyTorch semantics),
 * 1-D being the case H = KH = 1. Lowered to one GEMM per chunk of images
 * through im2col.
 *
 * Images go in chunks of `nc`, a function of the sizes only (never of the
 * thread count) and a target size (CONV_CHUNK_FLOATS). With K = Cin*KH*KW
 * and P = Ho*Wo, a chunk's col matrix is
 * (K, nc*P): column j*P + p holds the receptive field of output pixel p of
 * the chunk's image j. Then
 *   forward   y (Cout, nc*P)  = w (Cout, K) col        -> out (+ bias)
 *   backward  dw (Cout, K)   += g (Cout, nc*P) col^T    (beta = 1)
 *             dcol (K, nc*P)  = w^T g                  -> col2im into dx
 * where g is the chunk's dout regathered as (Cout, nc*P). One GEMM per
 * chunk instead of one per image: for bench-small's Conv1d on 100 frames
 * at batch 32 that is four GEMMs 400 wide instead of 32 GEMMs 100 wide (w
 * packed 4 times, not 32), and dw's reduction over a chunk's images happens
 * inside the GEMM's fixed-order K loop. When w is small next to an image's columns
 * (K <= P, as for the 4x4 patch embedding), the forward instead runs one
 * batched GEMM per image straight into out, saving the scatter of y.
 *
 * Work layout (floats): [0, K*nc*P) col, later reused for dcol;
 * [K*nc*P, (K+Cout)*nc*P) y or g. The second region is not touched when
 * out and dout can be used in place (nc == 1, or the forward's per-image
 * GEMMs, chosen when K <= P).
 *
 * Determinism: every parallel loop here writes disjoint outputs (rows of
 * col, planes of dx, channels of out/dbias) and each output is computed in
 * a fixed order; the reductions over images live in tm_sgemm (fixed K
 * order) or in one task per output channel (dbias).
 */
#include <string.h>

#include "trimodal/ops.h"

/* Target size of one chunk's work, in floats (2 MiB): small enough that
 * the col matrix a chunk's GEMM streams through stays in the caches. Cut
 * from 16 MiB, the demo CNN's 3x3 convolutions at batch 128 run 1.15-1.4x
 * faster forward and 1.03-1.24x backward (docs/performance.md). */
#define CONV_CHUNK_FLOATS ((int64_t)1 << 19)
/* ------------------------------------------------------------- geometry */

typedef struct {
    int64_t N, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw;
    int64_t Ho, Wo, P, K; /* P = Ho*Wo, K = Cin*KH*KW */
    int64_t nc;           /* images per chunk */
} conv_geom;

int64_t tm_conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad)
{
    if (stride < 1 || k < 1 || in < 0 || pad < 0) return -1;
    int64_t span = in + 2 * pad - k;
    if (span < 0) return -1;
    return span / stride + 1;
}

/* Fills g; returns 0 when the output would be empty (nothing to do). */
static int conv_geom_init(conv_geom *g, int64_t N, int64_t Cin, int64_t H, int64_t W, int64_t Cout,
                          int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw)
{
    g->N = N, g->Cin = Cin, g->H = H, g->W = W, g->Cout = Cout;
    g->KH = KH, g->KW = KW, g->sh = sh, g->sw = sw, g->ph = ph, g->pw = pw;
    g->Ho = tm_conv_out_size(H, KH, sh, ph);
    g->Wo = tm_conv_out_size(W, KW, sw, pw);
    g->P = g->Ho * g->Wo;
    g->K = Cin * KH * KW;
    g->nc = 0;
    if (N < 1 || Cin < 1 || Cout < 1 || g->Ho < 1 || g->Wo < 1) return 0;
    /* Split the batch into the fewest chunks under the target size, then
     * balance them; a chunk holds at least one image. */
    int64_t per_image = (g->K + Cout) * g->P;
    int64_t chunks = (N * per_image + CONV_CHUNK_FLOATS - 1) / CONV_CHUNK_FLOATS;
    if (chunks < 1) chunks = 1;
    if (chunks > N) chunks = N;
    g->nc = (N + chunks - 1) / chunks;
    return 1;
}

size_t tm_conv2d_work_floats(int64_t N, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t KH,
                             int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw)
{
    conv_geom g;
    if (!conv_geom_init(&g, N, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw)) return 0;
    return (size_t)((g.K + g.Cout) * g.nc * g.P);
}

/* The output columns [*lo, *hi) whose input column ow*sw - pw + kw lies in
 * [0, W); the others read padding. Same for rows with (Ho, sh, ph, kh, H). */
static void valid_range(int64_t Wo, int64_t sw, int64_t pw, int64_t kw, int64_t W, int64_t *lo,
                        int64_t *hi)
{
    int64_t a = pw - kw;     /* need ow*sw >= a */
    int64_t b = W + pw - kw; /* need ow*sw < b */
    int64_t l = a <= 0 ? 0 : (a + sw - 1) / sw;
    int64_t h = b <= 0 ? 0 : (b + sw - 1) / sw;
    if (h > Wo) h = Wo;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* --------------------------------------------------------------- im2col */

typedef struct {
    const conv_geom *g;
    float *col;     /* (K, nc*P) */
    const float *x; /* the chunk's first image, (nc, Cin, H, W) */
} im2col_ctx;

/* Items are (image j of the chunk, input channel ci) pairs. The library
 * builds with -fno-strict-aliasing, so the geometry is copied into locals:
 * read through g, it would be reloaded after every store to a float. */
static void im2col_range(void *p, int64_t begin, int64_t end)
{
    const im2col_ctx *c = p;
    const conv_geom *g = c->g;
    const int64_t Cin = g->Cin, H = g->H, W = g->W, KH = g->KH, KW = g->KW;
    const int64_t Ho = g->Ho, Wo = g->Wo, P = g->P, sh = g->sh, sw = g->sw;
    const int64_t ph = g->ph, pw = g->pw, ldc = g->nc * g->P;
    for (int64_t it = begin; it < end; it++) {
        int64_t j = it / Cin, ci = it % Cin;
        const float *xp = c->x + (j * Cin + ci) * H * W;
        for (int64_t kh = 0; kh < KH; kh++) {
            int64_t oh_lo, oh_hi;
            valid_range(Ho, sh, ph, kh, H, &oh_lo, &oh_hi);
            for (int64_t kw = 0; kw < KW; kw++) {
                int64_t ow_lo, ow_hi;
                valid_range(Wo, sw, pw, kw, W, &ow_lo, &ow_hi);
                float *restrict dst = c->col + ((ci * KH + kh) * KW + kw) * ldc + j * P;
                if (oh_lo > 0) memset(dst, 0, sizeof(float) * (size_t)(oh_lo * Wo));
                for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                    float *restrict d = dst + oh * Wo;
                    const float *restrict s = xp + (oh * sh - ph + kh) * W - pw + kw;
                    for (int64_t ow = 0; ow < ow_lo; ow++)
                        d[ow] = 0.0f;
                    if (sw == 1) {
                        memcpy(d + ow_lo, s + ow_lo, sizeof(float) * (size_t)(ow_hi - ow_lo));
                    } else {
                        for (int64_t ow = ow_lo; ow < ow_hi; ow++)
                            d[ow] = s[ow * sw];
                    }
                    for (int64_t ow = ow_hi; ow < Wo; ow++)
                        d[ow] = 0.0f;
                }
                if (oh_hi < Ho)
                    memset(dst + oh_hi * Wo, 0, sizeof(float) * (size_t)((Ho - oh_hi) * Wo));
            }
        }
    }
}

static void im2col(const conv_geom *g, float *col, const float *x, int64_t nimg)
{
    im2col_ctx c = {g, col, x};
    tm_parallel_range(nimg * g->Cin, nimg * g->K * g->P, im2col_range, &c);
}

/* --------------------------------------------------------------- col2im */

typedef struct {
    const conv_geom *g;
    float *dx;         /* the chunk's first image, (nc, Cin, H, W) */
    const float *dcol; /* (K, nc*P) */
} col2im_ctx;

/* Items are (image, input channel) planes of dx: each plane gathers only
 * from its own rows of dcol, in the fixed order (kh, kw, oh, ow). */
static void col2im_range(void *p, int64_t begin, int64_t end)
{
    const col2im_ctx *c = p;
    const conv_geom *g = c->g;
    const int64_t Cin = g->Cin, H = g->H, W = g->W, KH = g->KH, KW = g->KW;
    const int64_t Ho = g->Ho, Wo = g->Wo, P = g->P, sh = g->sh, sw = g->sw;
    const int64_t ph = g->ph, pw = g->pw, ldc = g->nc * g->P;
    for (int64_t it = begin; it < end; it++) {
        int64_t j = it / Cin, ci = it % Cin;
        float *dxp = c->dx + (j * Cin + ci) * H * W;
        for (int64_t kh = 0; kh < KH; kh++) {
            int64_t oh_lo, oh_hi;
            valid_range(Ho, sh, ph, kh, H, &oh_lo, &oh_hi);
            for (int64_t kw = 0; kw < KW; kw++) {
                int64_t ow_lo, ow_hi;
                valid_range(Wo, sw, pw, kw, W, &ow_lo, &ow_hi);
                const float *src = c->dcol + ((ci * KH + kh) * KW + kw) * ldc + j * P;
                for (int64_t oh = oh_lo; oh < oh_hi; oh++) {
                    const float *restrict s = src + oh * Wo;
                    float *restrict d = dxp + (oh * sh - ph + kh) * W - pw + kw;
                    if (sw == 1) {
                        for (int64_t ow = ow_lo; ow < ow_hi; ow++)
                            d[ow] += s[ow];
                    } else {
                        for (int64_t ow = ow_lo; ow < ow_hi; ow++)
                            d[ow * sw] += s[ow];
                    }
                }
            }
        }
    }
}

static void col2im(const conv_geom *g, float *dx, const float *dcol, int64_t nimg)
{
    col2im_ctx c = {g, dx, dcol};
    tm_parallel_range(nimg * g->Cin, nimg * g->K * g->P, col2im_range, &c);
}

/* ------------------------------------------- (nc, Cout, P) <-> (Cout, nc*P) */

typedef struct {
    const conv_geom *g;
    float *dst;
    const float *src;
    const float *bias; /* scatter only; may be NULL */
    int64_t nimg;
} regather_ctx;

/* Items are output channels. Gather: src (nimg, Cout, P) -> dst (Cout, nc*P). */
static void gather_range(void *p, int64_t begin, int64_t end)
{
    const regather_ctx *c = p;
    const int64_t Cout = c->g->Cout, P = c->g->P, ld = c->g->nc * c->g->P, nimg = c->nimg;
    for (int64_t co = begin; co < end; co++)
        for (int64_t j = 0; j < nimg; j++)
            memcpy(c->dst + co * ld + j * P, c->src + (j * Cout + co) * P,
                   sizeof(float) * (size_t)P);
}

/* Scatter: src (Cout, nc*P) -> dst (nimg, Cout, P), adding bias. */
static void scatter_range(void *p, int64_t begin, int64_t end)
{
    const regather_ctx *c = p;
    const int64_t Cout = c->g->Cout, P = c->g->P, ld = c->g->nc * c->g->P, nimg = c->nimg;
    for (int64_t co = begin; co < end; co++) {
        for (int64_t j = 0; j < nimg; j++) {
            float *restrict d = c->dst + (j * Cout + co) * P;
            const float *restrict s = c->src + co * ld + j * P;
            if (c->bias) {
                const float b = c->bias[co];
                for (int64_t i = 0; i < P; i++)
                    d[i] = s[i] + b;
            } else {
                memcpy(d, s, sizeof(float) * (size_t)P);
            }
        }
    }
}

/* Fills dst (nimg, Cout, P) with the bias. Items are output channels. */
static void bias_fill_range(void *p, int64_t begin, int64_t end)
{
    const regather_ctx *c = p;
    const int64_t Cout = c->g->Cout, P = c->g->P, nimg = c->nimg;
    for (int64_t co = begin; co < end; co++) {
        const float b = c->bias[co];
        for (int64_t j = 0; j < nimg; j++) {
            float *restrict d = c->dst + (j * Cout + co) * P;
            for (int64_t i = 0; i < P; i++)
                d[i] = b;
        }
    }
}

/* -------------------------------------------------------------- forward */

void tm_conv2d_forward(float *out, float *work, const float *x, const float *w, const float *bias,
                       int64_t N, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t KH,
                       int64_t KW, int64_t sh, int64_t sw, int64_t ph, int64_t pw)
{
    conv_geom g;
    if (!conv_geom_init(&g, N, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw)) return;
    const int64_t ld = g.nc * g.P;
    float *col = work;          /* (K, nc*P) */
    float *y = work + g.K * ld; /* (Cout, nc*P) */
    /* Either one GEMM per image straight into out, which repacks w for
     * every image, or one GEMM for the chunk into y and a pass that scatters
     * y into out: the first when w is small next to an image's columns
     * (K <= P, as for bench-small's patch embedding). The choice depends on
     * the sizes alone, like the GEMM's order of summation. */
    int direct = g.nc == 1 || g.K <= g.P;
    for (int64_t n0 = 0; n0 < N; n0 += g.nc) {
        int64_t nimg = N - n0 < g.nc ? N - n0 : g.nc;
        float *outc = out + n0 * Cout * g.P; /* (nimg, Cout, P) */
        im2col(&g, col, x + n0 * Cin * H * W, nimg);
        if (direct) {
            if (bias) {
                regather_ctx c = {&g, outc, NULL, bias, nimg};
                tm_parallel_range(Cout, Cout * nimg * g.P, bias_fill_range, &c);
            }
            /* out[j] (Cout, P) (+)= w (Cout, K) col[:, j*P : (j+1)*P] */
            tm_sgemm_batched(0, 0, nimg, Cout, g.P, g.K, 1.0f, w, g.K, 0, col, ld, g.P,
                             bias ? 1.0f : 0.0f, outc, g.P, Cout * g.P);
        } else {
            /* Only nimg*P columns of col and y are used in a short last chunk. */
            tm_sgemm(0, 0, Cout, nimg * g.P, g.K, 1.0f, w, g.K, col, ld, 0.0f, y, ld);
            regather_ctx c = {&g, outc, y, bias, nimg};
            tm_parallel_range(Cout, Cout * nimg * g.P, scatter_range, &c);
        }
    }
}

/* ------------------------------------------------------------- backward */

typedef struct {
    const conv_geom *g;
    float *dbias;
    const float *dout;
} dbias_ctx;

/* Items are output channels; each sums over images and pixels in order. */
static void dbias_range(void *p, int64_t begin, int64_t end)
{
    const dbias_ctx *c = p;
    const int64_t N = c->g->N, Cout = c->g->Cout, P = c->g->P;
    for (int64_t co = begin; co < end; co++) {
        double s = 0.0;
        for (int64_t n = 0; n < N; n++) {
            const float *d = c->dout + (n * Cout + co) * P;
            for (int64_t i = 0; i < P; i++)
                s += d[i];
        }
        c->dbias[co] += (float)s;
    }
}

void tm_conv2d_backward(float *dx, float *dw, float *dbias, float *work, const float *dout,
                        const float *x, const float *w, int64_t N, int64_t Cin, int64_t H,
                        int64_t W, int64_t Cout, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                        int64_t ph, int64_t pw)
{
    conv_geom g;
    if (!conv_geom_init(&g, N, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw)) return;
    if (dbias) {
        dbias_ctx c = {&g, dbias, dout};
        tm_parallel_range(Cout, N * Cout * g.P, dbias_range, &c);
    }
    if (!dx && !dw) return;
    const int64_t ld = g.nc * g.P;
    float *col = work;             /* (K, nc*P): col of x, then dcol */
    float *gbuf = work + g.K * ld; /* (Cout, nc*P), only when nc > 1 */
    for (int64_t n0 = 0; n0 < N; n0 += g.nc) {
        int64_t nimg = N - n0 < g.nc ? N - n0 : g.nc;
        int64_t width = nimg * g.P;
        const float *doutc = dout + n0 * Cout * g.P; /* (nimg, Cout, P) */
        const float *gm = doutc;                     /* (Cout, width), ld gld */
        int64_t gld = g.P;
        if (g.nc > 1) {
            regather_ctx c = {&g, gbuf, doutc, NULL, nimg};
            tm_parallel_range(Cout, Cout * width, gather_range, &c);
            gm = gbuf;
            gld = ld;
        }
        if (dw) {
            im2col(&g, col, x + n0 * Cin * H * W, nimg);
            tm_sgemm(0, 1, Cout, g.K, width, 1.0f, gm, gld, col, ld, 1.0f, dw, g.K);
        }
        if (dx) {
            tm_sgemm(1, 0, g.K, width, Cout, 1.0f, w, g.K, gm, gld, 0.0f, col, ld);
            col2im(&g, dx + n0 * Cin * H * W, col, nimg);
        }
    }
}
