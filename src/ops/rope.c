/* Rotary position embedding, "rotate half" convention (GPT-NeoX, Hugging
 * Face LLaMA): the pairs (i, i + D/2) of each head vector at position p
 * are rotated by the angle p * base^(-2i/D). The rotation is orthogonal, so
 * the backward pass is the rotation by the opposite angle. The angles are
 * tabulated once per call, in double, so no row repeats the trigonometry. */
#include "ops_extra.h"

#include <math.h>

enum { ROPE_ROWS = 64 }; /* (t) rows of D values per task */

void tm_rope_table(float *cs, int64_t T, int64_t D, int64_t pos_offset, float base)
{
    const int64_t half = D / 2;
    float *sn = cs + T * half;
    for (int64_t i = 0; i < half; i++) {
        double theta = pow((double)base, -2.0 * (double)i / (double)D);
        for (int64_t t = 0; t < T; t++) {
            double a = (double)(t + pos_offset) * theta;
            cs[t * half + i] = (float)cos(a);
            sn[t * half + i] = (float)sin(a);
        }
    }
}

typedef struct {
    float *out;
    const float *in, *cs;
    int64_t rows, T, D;
    float sign; /* +1 forward, -1 backward (the inverse rotation) */
    int accumulate;
} rope_ctx;

static void rope_task(void *p, int64_t task, int64_t ntasks)
{
    (void)ntasks;
    const rope_ctx *c = p;
    const int64_t half = c->D / 2;
    const float *sn = c->cs + c->T * half;
    int64_t lo = task * ROPE_ROWS, hi = lo + ROPE_ROWS < c->rows ? lo + ROPE_ROWS : c->rows;
    for (int64_t r = lo; r < hi; r++) {
        const int64_t t = r % c->T;
        const float *co = c->cs + t * half, *si = sn + t * half;
        const float *x = c->in + r * c->D;
        float *y = c->out + r * c->D;
        for (int64_t i = 0; i < half; i++) {
            float a = x[i], b = x[i + half], s = c->sign * si[i];
            float ya = a * co[i] - b * s, yb = b * co[i] + a * s;
            if (c->accumulate) {
                y[i] += ya;
                y[i + half] += yb;
            } else {
                y[i] = ya;
                y[i + half] = yb;
            }
        }
    }
}

void tm_rope_forward(float *y, const float *x, const float *cs, int64_t BH, int64_t T, int64_t D)
{
    rope_ctx c = {y, x, cs, BH * T, T, D, 1.0f, 0};
    tm_parallel_for((c.rows + ROPE_ROWS - 1) / ROPE_ROWS, rope_task, &c);
}

void tm_rope_backward(float *dx, const float *dy, const float *cs, int64_t BH, int64_t T, int64_t D)
{
    rope_ctx c = {dx, dy, cs, BH * T, T, D, -1.0f, 1};
    tm_parallel_for((c.rows + ROPE_ROWS - 1) / ROPE_ROWS, rope_task, &c);
}
