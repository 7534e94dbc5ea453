/* The attention probabilities of tm_attention, materialised for attention
 * maps: one (Tq, Tk) matrix per batch entry and head. Plain C, row by row:
 * maps are asked for at serving time on a few requests, where the
 * (B, H, Tq, Tk) output dominates, not the arithmetic. The masking rules
 * are attention.c's, written out again here: a key whose bias is -inf or
 * that is causally hidden (key j of query i when j > i + Tk - Tq) is
 * exactly 0, and a row with no visible key is all zeros. */
#include "ops_extra.h"

#include <math.h>
#include <string.h>

typedef struct {
    float *probs;
    const float *q, *k, *bias;
    int64_t H, Tq, Tk, D, rows, per;
    float scale;
    int causal;
} probs_ctx;

static void probs_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    const probs_ctx *c = p;
    const int64_t lo = t * c->per, hi = lo + c->per < c->rows ? lo + c->per : c->rows;
    for (int64_t r = lo; r < hi; r++) {
        const int64_t bh = r / c->Tq, i = r % c->Tq;
        const float *qi = c->q + r * c->D, *kb = c->k + bh * c->Tk * c->D;
        const float *bias = c->bias ? c->bias + (bh / c->H) * c->Tk : NULL;
        float *pr = c->probs + r * c->Tk;
        int64_t nvis = c->Tk; /* keys j < nvis are not causally hidden */
        if (c->causal) {
            nvis = i + (c->Tk - c->Tq) + 1;
            nvis = nvis < 0 ? 0 : nvis > c->Tk ? c->Tk : nvis;
        }
        float mx = -INFINITY;
        for (int64_t j = 0; j < nvis; j++) {
            const float *kj = kb + j * c->D;
            float s = 0.0f;
            for (int64_t d = 0; d < c->D; d++)
                s += qi[d] * kj[d];
            s = c->scale * s + (bias ? bias[j] : 0.0f);
            pr[j] = s;
            mx = s > mx ? s : mx;
        }
        if (mx == -INFINITY) { /* every key masked (or NaN scores): a row of zeros */
            memset(pr, 0, (size_t)c->Tk * sizeof *pr);
            continue;
        }
        double sum = 0;
        for (int64_t j = 0; j < nvis; j++) {
            pr[j] = expf(pr[j] - mx); /* exp(-inf) = 0 for keys masked by their bias */
            sum += pr[j];
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < nvis; j++)
            pr[j] *= inv;
        for (int64_t j = nvis; j < c->Tk; j++)
            pr[j] = 0.0f;
    }
}

void tm_attention_probs_forward(float *probs, const float *q, const float *k, const float *key_bias,
                                int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D,
                                float scale, int causal)
{
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0) return;
    probs_ctx c = {probs, q, k, key_bias, H, Tq, Tk, D, B * H * Tq, 1, scale, causal};
    int64_t work = Tk * (D + 4);
    c.per = work >= 16384 ? 1 : 16384 / work + 1;
    tm_parallel_for((c.rows + c.per - 1) / c.per, probs_task, &c);
}
