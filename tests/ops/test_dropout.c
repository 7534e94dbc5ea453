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
    }
    tm_force_isa(-1);
    return test_finish("test_dropout");
}
