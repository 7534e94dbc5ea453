/*
 * Dropout kernels (tm_dropout_forward / tm_dropout_backward): element i is
 * kept, scaled by 1 / (1 - p), exactly when tm_rng_uniform_at(seed,
 * stream, i) >= p, else it is 0; the backward adds the same mask times dy
 * into dx. Checked element by element against that definition, for sizes
 * that are not multiples of the 4 words of a Philox block nor of a task,
 * several p, seeds and streams, at 1 and 2 threads, under every ISA the
 * CPU has (the AVX2 path draws eight Philox blocks at once).
 */
#include <stdlib.h>
#include <string.h>

#include "ops/basic.h"
#include "ops/ops_extra.h"
#include "testutil.h"

static void one(int64_t n, float p, uint64_t seed, uint64_t stream)
{
    float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
    float *dx = malloc((size_t)n * sizeof(float)), *y2 = malloc((size_t)n * sizeof(float));
    test_fill_uniform(x, n, seed + 7, -3.0f, 3.0f);
    for (int64_t i = 0; i < n; i++) dx[i] = 0.5f;
    tm_dropout_forward(y, x, n, p, seed, stream);
    tm_dropout_backward(dx, x, n, p, seed, stream);
    int threads = tm_get_num_threads();
    tm_set_num_threads(threads == 1 ? 2 : 1);
    tm_dropout_forward(y2, x, n, p, seed, stream);
    tm_set_num_threads(threads);
    float keep = 1.0f / (1.0f - p);
    int64_t bad = 0, kept = 0;
    for (int64_t i = 0; i < n; i++) {
        int k = tm_rng_uniform_at(seed, stream, (uint64_t)i) >= p;
        float want = k ? x[i] * keep : 0.0f;
        kept += k;
        if (memcmp(&y[i], &want, 4) != 0) bad++;
        float wd = 0.5f + want;
        if (memcmp(&dx[i], &wd, 4) != 0) bad++;
    }
    if (memcmp(y, y2, (size_t)n * sizeof(float)) != 0) bad++;
    if (bad) fprintf(stderr, "dropout n=%lld p=%g: %lld mismatches\n", (long long)n, p, (long long)bad);
    CHECK(bad == 0);
    if (n > 10000) CHECK(kept > (int64_t)(0.9 * (1 - p) * n) && kept < (int64_t)(1.1 * (1 - p) * n));
    free(x), free(y), free(dx), free(y2);
}

/* A shard at offset off draws the elements off .. of the whole tensor:
 * forward and backward equal the slice of the unsharded ones, for offsets
 * inside a Philox block and on one; drop-path's rows likewise. */
static void sharded(int64_t n, uint64_t off, float p)
{
    int64_t total = (int64_t)off + n;
    float *x = malloc((size_t)total * sizeof(float)), *y = malloc((size_t)total * sizeof(float));
    float *dx = calloc((size_t)total, sizeof(float)), *ys = malloc((size_t)n * sizeof(float));
    float *dxs = calloc((size_t)n, sizeof(float));
    test_fill_uniform(x, total, off + 3, -2.0f, 2.0f);
    tm_dropout_forward(y, x, total, p, 9, 5);
    tm_dropout_backward(dx, x, total, p, 9, 5);
    tm_dropout_forward_at(ys, x + off, n, p, 9, 5, off);
    tm_dropout_backward_at(dxs, x + off, n, p, 9, 5, off);
    CHECK(!memcmp(ys, y + off, (size_t)n * sizeof(float)));
    CHECK(!memcmp(dxs, dx + off, (size_t)n * sizeof(float)));
    free(x), free(y), free(dx), free(ys), free(dxs);
    /* drop-path: rows first .. of a batch of first + 6 rows of 5 */
    int64_t first = (int64_t)(off % 7), N = 6, inner = 5, rows = first + N;
    float *a = malloc((size_t)(rows * inner) * sizeof(float));
    float *b = malloc((size_t)(rows * inner) * sizeof(float)), *c = malloc((size_t)(N * inner) * sizeof(float));
    test_fill_uniform(a, rows * inner, 11, -1.0f, 1.0f);
    tm_drop_path_forward(b, a, rows, inner, 0.5f, 4, 2);
    tm_drop_path_forward_at(c, a + first * inner, N, inner, 0.5f, 4, 2, first);
    CHECK(!memcmp(c, b + first * inner, (size_t)(N * inner) * sizeof(float)));
    free(a), free(b), free(c);
}

int main(void)
{
    const int64_t sizes[] = {1, 2, 3, 5, 7, 31, 32, 33, 63, 100, 16383, 16385, 50001};
    for (int isa = TM_ISA_SCALAR; isa <= (int)tm_cpu_isa(); isa++) {
        tm_force_isa(isa);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            one(sizes[s], 0.1f, 42, 0);
            one(sizes[s], 0.5f, 7, 3);
            one(sizes[s], 0.9f, 0xfeedbeefcafeull, 1ull << 40);
        }
        for (uint64_t off = 0; off < 9; off++) {
            sharded(37, off, 0.3f);
            sharded(16390, off * 1001, 0.6f);
        }
    }
    tm_force_isa(-1);
    return test_finish("test_dropout");
}
