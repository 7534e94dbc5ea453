/* Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2,
 * 3", SC 2011): a counter-based generator whose output for (key, counter)
 * is a pure function, so any thread can draw element i without the others. */
#include "trimodal/core.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void tm_philox(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32);
    uint32_t c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

tm_rng tm_rng_new(uint64_t seed, uint64_t stream)
{
    tm_rng r = {seed, stream, 0};
    return r;
}

uint32_t tm_rng_u32(tm_rng *r)
{
    /* one word per counter value keeps the mapping simple: word i of the
     * stream is word (i & 3) of block i >> 2 */
    uint32_t out[4];
    tm_philox(r->seed, r->stream, r->counter >> 2, out);
    uint32_t v = out[r->counter & 3];
    r->counter++;
    return v;
}

static float u32_to_unit(uint32_t v) { return (float)(v >> 8) * (1.0f / 16777216.0f); }

float tm_rng_uniform(tm_rng *r) { return u32_to_unit(tm_rng_u32(r)); }

float tm_rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint32_t out[4];
    tm_philox(seed, stream, index >> 2, out);
    return u32_to_unit(out[index & 3]);
}

/* Normal draw i uses the two uniforms 2i and 2i+1 (Box-Muller, cosine
 * branch), so it is also a pure function of its index. */
float tm_rng_normal_at(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint32_t out[4];
    tm_philox(seed, stream, index >> 1, out);
    int half = (int)(index & 1) * 2;
    double u1 = ((double)(out[half] >> 8) + 1.0) / 16777217.0; /* (0, 1] */
    double u2 = (double)(out[half + 1] >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

float tm_rng_normal(tm_rng *r)
{
    float v = tm_rng_normal_at(r->seed, r->stream, r->counter);
    r->counter++;
    return v;
}

typedef struct {
    uint64_t seed, stream, base;
    float *x;
    int64_t n;
    float a, b;
    int normal;
} fill_ctx;

static void fill_task(void *p, int64_t i, int64_t n)
{
    fill_ctx *c = p;
    int64_t lo, hi;
    tm_split_range(c->n, i, n, &lo, &hi);
    for (int64_t j = lo; j < hi; j++) {
        if (c->normal)
            c->x[j] = c->a + c->b * tm_rng_normal_at(c->seed, c->stream, c->base + (uint64_t)j);
        else
            c->x[j] = c->a + c->b * tm_rng_uniform_at(c->seed, c->stream, c->base + (uint64_t)j);
    }
}

static void fill(tm_rng *r, float *x, int64_t n, float a, float b, int normal)
{
    fill_ctx c = {r->seed, r->stream, r->counter, x, n, a, b, normal};
    int64_t tasks = n / 16384 + 1;
    tm_parallel_for(tasks, fill_task, &c);
    r->counter += (uint64_t)n;
}

void tm_rng_fill_uniform(tm_rng *r, float *x, int64_t n, float lo, float hi)
{
    fill(r, x, n, lo, hi - lo, 0);
}

void tm_rng_fill_normal(tm_rng *r, float *x, int64_t n, float mean, float std)
{
    fill(r, x, n, mean, std, 1);
}
