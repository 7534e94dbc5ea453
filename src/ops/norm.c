/* GroupNorm, forward and backward (PyTorch semantics).
 *
 * x is (N, C, S): S is the product of the spatial sizes, so the C/G
 * channels of group g of example n are one contiguous run of M = (C/G) * S
 * values. Each group is normalised like a LayerNorm row of M values (mean
 * and biased variance summed in double), then each channel gets its own
 * weight and bias:
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
        double s = 0, v = 0;
        for (int64_t i = 0; i < c->M; i++)
            s += x[i];
        const float m = (float)(s / (double)c->M);
        for (int64_t i = 0; i < c->M; i++)
            v += (double)(x[i] - m) * (x[i] - m);
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
        double sg = 0, sgn = 0;
        for (int64_t ch = 0; ch < c->Cg; ch++) {
            const float w = c->w ? c->w[g * c->Cg + ch] : 1.0f;
            for (int64_t i = ch * c->S; i < (ch + 1) * c->S; i++) {
                float gy = dy[i] * w;
                sg += gy;
                sgn += (double)gy * ((x[i] - m) * rs);
            }
        }
        const float mg = (float)(sg / (double)c->M), mgn = (float)(sgn / (double)c->M);
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
        double sw = 0, sb = 0;
        for (int64_t n = 0; n < c->N; n++) {
            const float m = c->mean[n * c->G + g], rs = c->rstd[n * c->G + g];
            const float *x = c->x + (n * c->C + cc) * c->S, *dy = c->dy + (n * c->C + cc) * c->S;
            for (int64_t i = 0; i < c->S; i++) {
                sw += (double)dy[i] * ((x[i] - m) * rs);
                sb += dy[i];
            }
        }
        if (c->dw) c->dw[cc] += (float)sw;
        if (c->db) c->db[cc] += (float)sb;
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
