/* GroupNorm, forward and backward (PyTorch semantics).
 *
 * x is (N, C, S): S is the product of the spatial sizes, so the C/G
 * channels of group g of example n are one contiguous run of M = (C/G) * S
 * values. Each group is normalised like a LayerNorm row of M values (mean
 * and biased variance summed in double, four interleaved partial sums),
 * then each channel gets its own weight and bias:
 *     xhat = (x - mean) * rstd,  y = xhat * w[c] + b[c]
 * Backward, with gy = dy * w[c] and means over the group's M values:
 *     dx = rstd * (gy - mean(gy) - xhat * mean(gy * xhat))
 *     dw[c] = sum over n, s of dy * xhat,  db[c] = sum of dy
 * Forward and dx run one task per run of whole groups; dw and db one task
 * per run of channels, each channel summed over n then s in order, so
 * nothing depends on the thread count. */
#include "ops_extra.h"

#include <math.h>

enum { GN_WORK = 16384 }; /* values touched per task, roughly */

typedef struct {
    float *y, *mean_w, *rstd_w, *dx, *dw, *db;
    const float *x, *dy, *w, *b, *mean, *rstd;
    int64_t N, C, S, G, Cg, M, per;
    float eps;
} gn_ctx;

/* Sums in double with four accumulators (i mod 4), added in a fixed
 * order at the end: four independent chains instead of one, and the same
 * result for any thread count. */
static double dsum(const float *x, int64_t n)
{
    double a[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++)
            a[k] += x[i + k];
    for (; i < n; i++)
        a[i & 3] += x[i];
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* sum of (x - m)^2 in double, accumulated as dsum does */
static double dsumsq(const float *x, float m, int64_t n)
{
    double a[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++)
            a[k] += (double)(x[i + k] - m) * (x[i + k] - m);
    for (; i < n; i++)
        a[i & 3] += (double)(x[i] - m) * (x[i] - m);
    return (a[0] + a[1]) + (a[2] + a[3]);
}

static int64_t per_task(int64_t unit)
{
    int64_t p = unit > 0 ? GN_WORK / unit : 1;
    return p < 1 ? 1 : p;
}

static void gn_fwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    const gn_ctx *c = p;
    const int64_t lo = t * c->per, total = c->N * c->G;
    const int64_t hi = lo + c->per < total ? lo + c->per : total;
    for (int64_t ng = lo; ng < hi; ng++) {
        const int64_t g = ng % c->G;
        const float *x = c->x + ng * c->M;
        float *y = c->y + ng * c->M;
        const float m = (float)(dsum(x, c->M) / (double)c->M);
        const double v = dsumsq(x, m, c->M);
        const float rs = (float)(1.0 / sqrt(v / (double)c->M + c->eps));
        c->mean_w[ng] = m;
        c->rstd_w[ng] = rs;
        for (int64_t ch = 0; ch < c->Cg; ch++) {
            const int64_t cc = g * c->Cg + ch;
            const float w = c->w ? c->w[cc] : 1.0f, b = c->b ? c->b[cc] : 0.0f;
            const float *xc = x + ch * c->S;
            float *yc = y + ch * c->S;
            for (int64_t i = 0; i < c->S; i++)
                yc[i] = (xc[i] - m) * rs * w + b;
        }
    }
}

void tm_groupnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *weight,
                          const float *bias, int64_t N, int64_t C, int64_t S, int64_t G, float eps)
{
    if (N <= 0 || C <= 0 || G <= 0) return;
    gn_ctx c = {.y = y,
                .mean_w = mean,
                .rstd_w = rstd,
                .x = x,
                .w = weight,
                .b = bias,
                .N = N,
                .C = C,
                .S = S,
                .G = G,
                .Cg = C / G,
                .M = C / G * S,
                .eps = eps};
    c.per = per_task(c.M);
    tm_parallel_for((N * G + c.per - 1) / c.per, gn_fwd_task, &c);
}

static void gn_bwd_dx_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    const gn_ctx *c = p;
    const int64_t lo = t * c->per, total = c->N * c->G;
    const int64_t hi = lo + c->per < total ? lo + c->per : total;
    for (int64_t ng = lo; ng < hi; ng++) {
        const int64_t g = ng % c->G;
        const float *x = c->x + ng * c->M, *dy = c->dy + ng * c->M;
        float *dx = c->dx + ng * c->M;
        const float m = c->mean[ng], rs = c->rstd[ng];
        double sg[4] = {0, 0, 0, 0}, sgn[4] = {0, 0, 0, 0}; /* by i mod 4, as dsum */
        for (int64_t ch = 0; ch < c->Cg; ch++) {
            const float w = c->w ? c->w[g * c->Cg + ch] : 1.0f;
            int64_t i = ch * c->S;
            const int64_t e = (ch + 1) * c->S;
            for (; i + 4 <= e; i += 4)
                for (int k = 0; k < 4; k++) {
                    float gy = dy[i + k] * w;
                    sg[k] += gy;
                    sgn[k] += (double)gy * ((x[i + k] - m) * rs);
                }
            for (; i < e; i++) {
                float gy = dy[i] * w;
                sg[i & 3] += gy;
                sgn[i & 3] += (double)gy * ((x[i] - m) * rs);
            }
        }
        const double tg = (sg[0] + sg[1]) + (sg[2] + sg[3]);
        const double tgn = (sgn[0] + sgn[1]) + (sgn[2] + sgn[3]);
        const float mg = (float)(tg / (double)c->M), mgn = (float)(tgn / (double)c->M);
        for (int64_t ch = 0; ch < c->Cg; ch++) {
            const float w = c->w ? c->w[g * c->Cg + ch] : 1.0f;
            for (int64_t i = ch * c->S; i < (ch + 1) * c->S; i++) {
                float xhat = (x[i] - m) * rs;
                dx[i] += rs * (dy[i] * w - mg - xhat * mgn);
            }
        }
    }
}

static void gn_bwd_dw_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    const gn_ctx *c = p;
    const int64_t lo = t * c->per, hi = lo + c->per < c->C ? lo + c->per : c->C;
    for (int64_t cc = lo; cc < hi; cc++) {
        const int64_t g = cc / c->Cg;
        double sw[4] = {0, 0, 0, 0}, sb[4] = {0, 0, 0, 0}; /* by i mod 4, as dsum */
        for (int64_t n = 0; n < c->N; n++) {
            const float m = c->mean[n * c->G + g], rs = c->rstd[n * c->G + g];
            const float *x = c->x + (n * c->C + cc) * c->S, *dy = c->dy + (n * c->C + cc) * c->S;
            int64_t i = 0;
            for (; i + 4 <= c->S; i += 4)
                for (int k = 0; k < 4; k++) {
                    sw[k] += (double)dy[i + k] * ((x[i + k] - m) * rs);
                    sb[k] += dy[i + k];
                }
            for (; i < c->S; i++) {
                sw[i & 3] += (double)dy[i] * ((x[i] - m) * rs);
                sb[i & 3] += dy[i];
            }
        }
        if (c->dw) c->dw[cc] += (float)((sw[0] + sw[1]) + (sw[2] + sw[3]));
        if (c->db) c->db[cc] += (float)((sb[0] + sb[1]) + (sb[2] + sb[3]));
    }
}

void tm_groupnorm_backward(float *dx, float *dweight, float *dbias, const float *dy, const float *x,
                           const float *weight, const float *mean, const float *rstd, int64_t N,
                           int64_t C, int64_t S, int64_t G)
{
    if (N <= 0 || C <= 0 || G <= 0) return;
    gn_ctx c = {.dx = dx,
                .dw = dweight,
                .db = dbias,
                .dy = dy,
                .x = x,
                .w = weight,
                .mean = mean,
                .rstd = rstd,
                .N = N,
                .C = C,
                .S = S,
                .G = G,
                .Cg = C / G,
                .M = C / G * S};
    if (dx) {
        c.per = per_task(c.M);
        tm_parallel_for((N * G + c.per - 1) / c.per, gn_bwd_dx_task, &c);
    }
    if (dweight || dbias) {
        c.per = per_task(N * S);
        tm_parallel_for((C + c.per - 1) / c.per, gn_bwd_dw_task, &c);
    }
}
