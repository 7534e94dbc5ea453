/* core: status messages, dtype conversions, tensors and views, arenas, the
 * thread pool and the Philox RNG. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static void test_status(void)
{
    CHECK(tm_fail(TM_ERR_INVALID, "bad %s %d", "thing", 3) == TM_ERR_INVALID);
    CHECK(strcmp(tm_last_error(), "bad thing 3") == 0);
    tm_clear_error();
    CHECK(tm_last_error()[0] == '\0');
    CHECK(strcmp(tm_status_name(TM_ERR_FORMAT), "bad format") == 0);
    CHECK(strcmp(tm_status_name((tm_status)99), "unknown status") == 0);
}

static float bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_bf16(void)
{
    /* exact values survive */
    CHECK(tm_bf16_to_f32(tm_f32_to_bf16(1.0f)) == 1.0f);
    CHECK(tm_bf16_to_f32(tm_f32_to_bf16(-2.5f)) == -2.5f);
    /* ties go to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 */
    CHECK(tm_f32_to_bf16(bits(0x3f808000u)) == 0x3f80);
    /* 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even) */
    CHECK(tm_f32_to_bf16(bits(0x3f818000u)) == 0x3f82);
    /* above the tie rounds up, below rounds down */
    CHECK(tm_f32_to_bf16(bits(0x3f808001u)) == 0x3f81);
    CHECK(tm_f32_to_bf16(bits(0x3f807fffu)) == 0x3f80);
    /* overflow to inf, NaN stays NaN, -0 keeps its sign */
    CHECK(tm_f32_to_bf16(bits(0x7f7fffffu)) == 0x7f80);
    CHECK(isnan(tm_bf16_to_f32(tm_f32_to_bf16(NAN))));
    CHECK(tm_f32_to_bf16(-0.0f) == 0x8000);
    /* every bf16 value round-trips exactly */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = tm_bf16_to_f32((tm_bf16)h);
        if (isnan(f)) continue;
        if (tm_f32_to_bf16(f) != h) bad++;
    }
    CHECK(bad == 0);
}

static void test_f16(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = tm_f16_to_f32((tm_f16)h);
        if (isnan(f)) continue;
        if (tm_f32_to_f16(f) != h) bad++;
    }
    CHECK(bad == 0);
    CHECK(tm_f16_to_f32(0x3c00) == 1.0f);
    CHECK(tm_f16_to_f32(0x0001) == 5.9604644775390625e-08f); /* smallest subnormal */
    CHECK(tm_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(tm_f32_to_f16(65520.0f) == 0x7c00);   /* halfway to 2^16 rounds to inf */
    CHECK(tm_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(tm_f32_to_f16(2.9802322e-08f) == 0x0000); /* 2^-25: tie to even (0) */
    CHECK(tm_f32_to_f16(4.4703484e-08f) == 0x0001); /* 1.5 * 2^-25 rounds up */
    CHECK(tm_f32_to_f16(8.940697e-08f) == 0x0002);  /* 1.5 * 2^-24: tie to even (2) */
    /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: to even */
    CHECK(tm_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00);
    CHECK(tm_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);
    /* compare every float on a grid against the nearest f16 found by search */
    int worse = 0;
    for (int i = 0; i < 20000; i++) {
        float x = ldexpf((float)(i % 997) / 997.0f + 1.0f, (i % 40) - 26) * (i & 1 ? -1 : 1);
        tm_f16 h = tm_f32_to_f16(x);
        double err = fabs((double)tm_f16_to_f32(h) - x);
        double e1 = fabs((double)tm_f16_to_f32((tm_f16)(h + 1)) - x);
        double e0 = (h & 0x7fff) ? fabs((double)tm_f16_to_f32((tm_f16)(h - 1)) - x) : INFINITY;
        if (err > e1 || err > e0) worse++;
    }
    CHECK(worse == 0);
}

static void test_tensor(void)
{
    tm_tensor *t;
    int64_t shape[3] = {2, 3, 4};
    CHECK_OK(tm_tensor_new(&t, TM_F32, 3, shape));
    CHECK(tm_tensor_numel(t) == 24);
    CHECK(tm_tensor_is_contiguous(t));
    float *d = t->data;
    for (int i = 0; i < 24; i++) d[i] = (float)i;

    tm_tensor p;
    CHECK_OK(tm_tensor_view_permute(&p, t, (int[]){2, 0, 1}));
    CHECK(p.shape[0] == 4 && p.shape[1] == 2 && p.shape[2] == 3);
    CHECK(!tm_tensor_is_contiguous(&p));
    CHECK(tm_tensor_get(&p, (int64_t[]){3, 1, 2}) == 1 * 12 + 2 * 4 + 3);

    tm_tensor s;
    CHECK_OK(tm_tensor_view_slice(&s, t, 2, 1, 4, 2)); /* columns 1 and 3 */
    CHECK(s.shape[2] == 2);
    CHECK(tm_tensor_get(&s, (int64_t[]){1, 2, 1}) == 12 + 8 + 3);
    CHECK_STATUS(tm_tensor_view_slice(&s, t, 2, 3, 9, 1), TM_ERR_INVALID);
    CHECK_STATUS(tm_tensor_view_slice(&s, t, 5, 0, 1, 1), TM_ERR_INVALID);
    CHECK_STATUS(tm_tensor_view_permute(&s, t, (int[]){0, 0, 1}), TM_ERR_INVALID);

    /* copy a permuted view into a contiguous bf16 tensor and back */
    tm_tensor *c, *back;
    CHECK_OK(tm_tensor_new(&c, TM_BF16, 3, p.shape));
    CHECK_OK(tm_tensor_copy(c, &p));
    CHECK_OK(tm_tensor_new(&back, TM_F32, 3, p.shape));
    CHECK_OK(tm_tensor_copy(back, c));
    CHECK(tm_tensor_get(back, (int64_t[]){3, 1, 2}) == 23);
    tm_tensor r;
    CHECK_OK(tm_tensor_view_reshape(&r, back, 2, (int64_t[]){8, 3}));
    CHECK_STATUS(tm_tensor_view_reshape(&r, &p, 2, (int64_t[]){8, 3}), TM_ERR_INVALID);
    CHECK_STATUS(tm_tensor_view_reshape(&r, back, 2, (int64_t[]){5, 5}), TM_ERR_INVALID);
    CHECK_STATUS(tm_tensor_copy(back, t), TM_ERR_INVALID); /* shape mismatch */

    /* integers saturate and round */
    tm_tensor *i8;
    CHECK_OK(tm_tensor_new(&i8, TM_I8, 1, (int64_t[]){3}));
    float src[3] = {300.0f, -2.5f, -1000.0f};
    tm_tensor *fs;
    CHECK_OK(tm_tensor_wrap(&fs, src, TM_F32, 1, (int64_t[]){3}));
    CHECK_OK(tm_tensor_copy(i8, fs));
    CHECK(((int8_t *)i8->data)[0] == 127 && ((int8_t *)i8->data)[1] == -2 &&
          ((int8_t *)i8->data)[2] == -128);

    /* bad shapes */
    tm_tensor *bad = NULL;
    CHECK_STATUS(tm_tensor_new(&bad, TM_F32, 6, (int64_t[]){1, 1, 1, 1, 1, 1}), TM_ERR_INVALID);
    CHECK_STATUS(tm_tensor_new(&bad, TM_F32, 1, (int64_t[]){-1}), TM_ERR_INVALID);
    CHECK_STATUS(tm_tensor_new(&bad, TM_F32, 3, (int64_t[]){1LL << 40, 1LL << 40, 1LL << 40}),
                 TM_ERR_NOMEM);
    CHECK(bad == NULL);
    tm_tensor_free(NULL);
    tm_tensor_free(t);
    tm_tensor_free(c);
    tm_tensor_free(back);
    tm_tensor_free(i8);
    tm_tensor_free(fs);
}

static void test_arena(void)
{
    tm_arena *a = tm_arena_new(1024);
    CHECK(a != NULL);
    char *p1 = tm_arena_alloc(a, 10);
    char *p2 = tm_arena_alloc(a, 5000); /* larger than a block */
    char *p3 = tm_arena_alloc(a, 1);
    CHECK(p1 && p2 && p3);
    CHECK(((uintptr_t)p1 & 63) == 0 && ((uintptr_t)p2 & 63) == 0 && ((uintptr_t)p3 & 63) == 0);
    memset(p2, 1, 5000);
    CHECK(tm_arena_used(a) >= 5011);
    CHECK(tm_arena_alloc(a, SIZE_MAX) == NULL);
    tm_arena_reset(a);
    CHECK(tm_arena_used(a) == 0);
    CHECK(tm_arena_alloc(a, 100) != NULL);
    tm_arena_free(a);
    tm_arena_free(NULL);

    /* fault injection */
    tm_alloc_fail_after(2);
    void *x = tm_alloc(8), *y = tm_alloc(8);
    CHECK(x != NULL && y == NULL);
    CHECK(tm_alloc_fail_after(0) == 2);
    tm_free(x);
    size_t out;
    CHECK(!tm_mul_size(SIZE_MAX / 2, 3, &out));
    CHECK(tm_mul_size(6, 7, &out) && out == 42);
    CHECK(!tm_add_size(SIZE_MAX, 1, &out));
}

typedef struct {
    int64_t *hits;
} hit_ctx;

static void leaf_task(void *p, int64_t i, int64_t n)
{
    ((int64_t *)p)[i] += 1 + n - n;
}

static void hit_task(void *p, int64_t i, int64_t n)
{
    hit_ctx *c = p;
    c->hits[i] += 1 + n - n;
    /* a nested loop runs serially inside a task */
    int64_t inner[3] = {0};
    tm_parallel_for(3, leaf_task, inner);
    if (inner[0] != 1 || inner[1] != 1 || inner[2] != 1) c->hits[i] += 100;
}


static void test_threads(void)
{
    int orig = tm_get_num_threads();
    CHECK(orig >= 1);
    for (int nt = 1; nt <= 3; nt++) {
        CHECK_OK(tm_set_num_threads(nt));
        CHECK(tm_get_num_threads() == nt);
        int64_t hits[1000] = {0};
        tm_parallel_for(1000, leaf_task, hits);
        int ok = 1;
        for (int i = 0; i < 1000; i++) ok &= hits[i] == 1;
        CHECK(ok);
        int64_t h2[50] = {0};
        hit_ctx c = {h2};
        tm_parallel_for(50, hit_task, &c);
        ok = 1;
        for (int i = 0; i < 50; i++) ok &= h2[i] == 1;
        CHECK(ok);
    }
    /* many short jobs back to back, of changing sizes: a worker still
     * finishing one job must never take (or lose) a task of the next */
    CHECK_OK(tm_set_num_threads(2));
    int bad_jobs = 0;
    for (int job = 0; job < 20000; job++) {
        int64_t hits[8] = {0};
        int64_t n = 2 + job % 6;
        tm_parallel_for(n, leaf_task, hits);
        for (int i = 0; i < 8; i++) bad_jobs += hits[i] != (i < n);
    }
    CHECK(bad_jobs == 0);
    CHECK_STATUS(tm_set_num_threads(0), TM_ERR_INVALID);
    int64_t b, e, total = 0;
    for (int i = 0; i < 7; i++) {
        tm_split_range(100, i, 7, &b, &e);
        total += e - b;
        CHECK(e - b == 14 || e - b == 15);
    }
    CHECK(total == 100);
    CHECK_OK(tm_set_num_threads(orig));
}

static void test_rng(void)
{
    /* Known-answer test from the Philox paper's reference implementation
     * (Random123 kat_vectors): philox4x32-10, counter 0, key 0. */
    uint32_t out[4];
    tm_philox(0, 0, 0, out);
    CHECK(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du && out[2] == 0xbc57ac4cu &&
          out[3] == 0x9b00dbd8u);
    /* counter all ones, key all ones */
    tm_philox(~0ull, ~0ull, ~0ull, out);
    CHECK(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u &&
          out[3] == 0x6d5451fdu);

    /* a fill is identical for any thread count, and matches the stateless draw */
    enum { N = 100000 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    for (int nt = 1; nt <= 2; nt++) {
        tm_set_num_threads(nt);
        tm_rng r = tm_rng_new(42, 7);
        tm_rng_fill_normal(&r, nt == 1 ? a : b, N, 0.0f, 1.0f);
        CHECK(r.counter == N);
    }
    CHECK(memcmp(a, b, N * sizeof *a) == 0);
    CHECK(a[123] == tm_rng_normal_at(42, 7, 123));
    double mean = 0, var = 0;
    for (int i = 0; i < N; i++) mean += a[i];
    mean /= N;
    for (int i = 0; i < N; i++) var += (a[i] - mean) * (a[i] - mean);
    var /= N;
    CHECK_NEAR(mean, 0.0, 0.02, 0);
    CHECK_NEAR(var, 1.0, 0.02, 0);
    tm_rng r = tm_rng_new(1, 0);
    tm_rng_fill_uniform(&r, a, N, -1.0f, 3.0f);
    float lo = 10, hi = -10;
    for (int i = 0; i < N; i++) {
        lo = a[i] < lo ? a[i] : lo;
        hi = a[i] > hi ? a[i] : hi;
    }
    CHECK(lo >= -1.0f && hi < 3.0f && lo < -0.99f && hi > 2.99f);
    /* different streams differ */
    CHECK(tm_rng_uniform_at(1, 0, 5) != tm_rng_uniform_at(1, 1, 5));
    free(a);
    free(b);
}

int main(void)
{
    test_status();
    test_bf16();
    test_f16();
    test_tensor();
    test_arena();
    test_threads();
    test_rng();
    printf("isa: %s\n", tm_isa_name(tm_cpu_isa()));
    return test_finish("core");
}
