/* Drop-path (stochastic depth): a whole example is kept, scaled by
 * 1 / (1 - p), or zeroed. Its mask is a pure function of (seed, stream,
 * example), like dropout's is of (seed, stream, element), so the backward
 * pass and a checkpoint recompute redraw it instead of storing it. */
#include "ops_extra.h"

#include <string.h>

enum { DP_CHUNK = 16384 }; /* elements per task */

/* Keeps drop-path's draws apart from a dropout's with the same seed. */
static const uint64_t DROP_PATH_SALT = 0xd709a7b5c3e1f24bull;

int tm_drop_path_keep(uint64_t seed, uint64_t stream, int64_t example, float p)
{
    return tm_rng_uniform_at(seed ^ DROP_PATH_SALT, stream, (uint64_t)example) >= p;
}

typedef struct {
    float *out;
    const float *in;
    int64_t N, inner;
    float p;
    uint64_t seed, stream;
    int accumulate;
    int64_t first; /* row n is example first + n */
} dp_ctx;

static void dp_task(void *q, int64_t t, int64_t nt)
{
    (void)nt;
    const dp_ctx *c = q;
    const int64_t total = c->N * c->inner;
    const int64_t lo = t * DP_CHUNK, hi = lo + DP_CHUNK < total ? lo + DP_CHUNK : total;
    const float scale = 1.0f / (1.0f - c->p);
    for (int64_t i = lo; i < hi;) {
        const int64_t n = i / c->inner;
        const int64_t end = (n + 1) * c->inner < hi ? (n + 1) * c->inner : hi;
        /* a dropped example is exactly 0, even where x is inf or NaN */
        if (tm_drop_path_keep(c->seed, c->stream, c->first + n, c->p)) {
            if (c->accumulate)
                for (; i < end; i++)
                    c->out[i] += c->in[i] * scale;
            else
                for (; i < end; i++)
                    c->out[i] = c->in[i] * scale;
        } else {
            if (!c->accumulate) memset(c->out + i, 0, (size_t)(end - i) * sizeof *c->out);
            i = end;
        }
    }
}

void tm_drop_path_forward(float *y, const float *x, int64_t N, int64_t inner, float p,
                          uint64_t seed, uint64_t stream)
{
    tm_drop_path_forward_at(y, x, N, inner, p, seed, stream, 0);
}

void tm_drop_path_backward(float *dx, const float *dy, int64_t N, int64_t inner, float p,
                           uint64_t seed, uint64_t stream)
{
    tm_drop_path_backward_at(dx, dy, N, inner, p, seed, stream, 0);
}

void tm_drop_path_forward_at(float *y, const float *x, int64_t N, int64_t inner, float p,
                             uint64_t seed, uint64_t stream, int64_t first)
{
    dp_ctx c = {y, x, N, inner, p, seed, stream, 0, first};
    int64_t total = N * inner;
    tm_parallel_for((total + DP_CHUNK - 1) / DP_CHUNK, dp_task, &c);
}

void tm_drop_path_backward_at(float *dx, const float *dy, int64_t N, int64_t inner, float p,
                              uint64_t seed, uint64_t stream, int64_t first)
{
    dp_ctx c = {dx, dy, N, inner, p, seed, stream, 1, first};
    int64_t total = N * inner;
    tm_parallel_for((total + DP_CHUNK - 1) / DP_CHUNK, dp_task, &c);
}
