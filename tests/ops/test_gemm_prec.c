/*
 * Reduced-precision GEMM operands rounded while packing
 * (tm_sgemm_batched_prec) and the rounding kernels (tm_round_precision,
 * tm_pack_bf16) on their AVX2 and threaded paths.
 *
 * - tm_sgemm_batched_prec(p, ...) must give bitwise tm_sgemm_batched on
 *   operands rounded first with the scalar core conversions
 *   (tm_f32_to_bf16 / tm_f32_to_f16), for bf16 and f16, every transpose,
 *   odd sizes (edge tiles, K tails, several K blocks), batches with and
 *   without a shared B (the shared B is packed once: another code path),
 *   alpha and beta, under every ISA the CPU has and at 1 and 2 threads.
 *   And it must differ from the f32 product (the rounding happens).
 * - tm_round_precision(TM_BF16) and tm_pack_bf16 equal the core
 *   conversion element by element (NaNs quiet, ties to even) for every
 *   length 0..40 (vector tails) and a length long enough to be split
 *   over the thread pool, in place too.
 */
#include <stdlib.h>
#include <string.h>

#include "ops/precision.h"
#include "testutil.h"
#include "trimodal/ops.h"

static float round_ref(float x, tm_dtype p)
{
    return p == TM_BF16 ? tm_bf16_to_f32(tm_f32_to_bf16(x)) : tm_f16_to_f32(tm_f32_to_f16(x));
}

static int same_bits(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

/* One problem: batch matrices (B shared when shared_b), compared bitwise. */
static void one_case(tm_dtype p, int ta, int tb, int64_t batch, int64_t M, int64_t N, int64_t K,
                     int shared_b, float alpha, float beta, uint64_t seed)
{
    int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
    int64_t sa = (ta ? K : M) * lda, sb = shared_b ? 0 : (tb ? N : K) * ldb, sc = M * ldc;
    int64_t na = batch * sa, nb = shared_b ? (tb ? N : K) * ldb : batch * sb, nc = batch * sc;
    float *A = malloc((size_t)na * sizeof(float)), *B = malloc((size_t)nb * sizeof(float));
    float *rA = malloc((size_t)na * sizeof(float)), *rB = malloc((size_t)nb * sizeof(float));
    float *C0 = malloc((size_t)nc * sizeof(float)), *C1 = malloc((size_t)nc * sizeof(float));
    float *C2 = malloc((size_t)nc * sizeof(float)), *C3 = malloc((size_t)nc * sizeof(float));
    test_fill_uniform(A, na, seed, -2.0f, 2.0f);
    test_fill_uniform(B, nb, seed + 1, -2.0f, 2.0f);
    test_fill_uniform(C0, nc, seed + 2, -1.0f, 1.0f);
    for (int64_t i = 0; i < na; i++) rA[i] = round_ref(A[i], p);
    for (int64_t i = 0; i < nb; i++) rB[i] = round_ref(B[i], p);
    memcpy(C1, C0, (size_t)nc * sizeof(float));
    memcpy(C2, C0, (size_t)nc * sizeof(float));
    memcpy(C3, C0, (size_t)nc * sizeof(float));
    tm_sgemm_batched(ta, tb, batch, M, N, K, alpha, rA, lda, sa, rB, ldb, sb, beta, C0, ldc, sc);
    tm_sgemm_batched_prec(p, ta, tb, batch, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C1, ldc,
                          sc);
    tm_sgemm_batched(ta, tb, batch, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C3, ldc, sc);
    int threads = tm_get_num_threads();
    tm_set_num_threads(threads == 1 ? 2 : 1);
    tm_sgemm_batched_prec(p, ta, tb, batch, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C2, ldc,
                          sc);
    tm_set_num_threads(threads);
    int ok = same_bits(C0, C1, nc) && same_bits(C0, C2, nc);
    if (!ok)
        fprintf(stderr, "gemm_prec %s ta=%d tb=%d batch=%lld M=%lld N=%lld K=%lld shared=%d\n",
                tm_dtype_name(p), ta, tb, (long long)batch, (long long)M, (long long)N,
                (long long)K, shared_b);
    CHECK(ok);
    CHECK(!same_bits(C0, C3, nc)); /* the operands were rounded */
    free(A), free(B), free(rA), free(rB), free(C0), free(C1), free(C2), free(C3);
}

static void test_gemm(void)
{
    static const int64_t sizes[][3] = {{1, 1, 1},   {5, 17, 3},    {6, 16, 8},  {13, 33, 300},
                                       {37, 50, 9}, {70, 130, 521}, {97, 40, 64}};
    uint64_t seed = 100;
    for (tm_dtype p = TM_BF16; ; p = TM_F16) {
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
                    one_case(p, ta, tb, 1, sizes[s][0], sizes[s][1], sizes[s][2], 0, 1.0f, 0.0f,
                             seed++);
        one_case(p, 0, 1, 3, 29, 45, 70, 0, 0.5f, 1.0f, seed++);
        one_case(p, 1, 0, 4, 30, 20, 19, 1, 1.0f, -0.5f, seed++);
        /* large enough for B to be packed once and shared by all tasks */
        one_case(p, 0, 0, 1, 300, 96, 400, 1, 1.0f, 0.0f, seed++);
        one_case(p, 0, 1, 1, 250, 100, 333, 1, 1.0f, 1.0f, seed++);
        if (p == TM_F16) break;
    }
}

static void test_round(void)
{
    enum { BIG = 300007 };
    float *x = malloc(BIG * sizeof(float)), *y = malloc(BIG * sizeof(float));
    tm_bf16 *h = malloc(BIG * sizeof(tm_bf16));
    uint64_t s = 99;
    for (int i = 0; i < BIG; i++) { /* random bit patterns: NaNs, infs, subnormals */
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t u = (uint32_t)(s >> 32);
        memcpy(&x[i], &u, 4);
    }
    const uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x7f800001u, 0xff800000u,
                                0x7f7fffffu, 0x00000001u, 0x80000000u, 0x7fffffffu};
    for (int i = 0; i < 8; i++) memcpy(&x[i * 3], &special[i], 4);
    int bad = 0;
    for (int64_t n = 0; n <= 40; n++) {
        y[n] = 123.0f; /* a guard past the end */
        h[n] = 77;
        tm_round_precision(y, x + 1, n, TM_BF16);
        tm_pack_bf16(h, x + 1, n);
        for (int64_t i = 0; i < n; i++) {
            tm_bf16 want = tm_f32_to_bf16(x[1 + i]);
            float wf = tm_bf16_to_f32(want);
            if (h[i] != want) bad++;
            if (memcmp(&y[i], &wf, 4) != 0) bad++;
        }
        if (y[n] != 123.0f || h[n] != 77) bad++;
    }
    tm_round_precision(y, x, BIG, TM_BF16);
    tm_pack_bf16(h, x, BIG);
    for (int64_t i = 0; i < BIG; i++) {
        tm_bf16 want = tm_f32_to_bf16(x[i]);
        float wf = tm_bf16_to_f32(want);
        if (h[i] != want || memcmp(&y[i], &wf, 4) != 0) bad++;
    }
    memcpy(y, x, BIG * sizeof(float));
    tm_round_precision(y, y, BIG, TM_BF16); /* in place */
    for (int64_t i = 0; i < BIG; i++) {
        float wf = tm_bf16_to_f32(tm_f32_to_bf16(x[i]));
        if (memcmp(&y[i], &wf, 4) != 0) bad++;
    }
    if (bad) fprintf(stderr, "round kernels: %d mismatches\n", bad);
    CHECK(bad == 0);
    free(x), free(y), free(h);
}

int main(void)
{
    tm_isa best = tm_cpu_isa();
    for (int isa = TM_ISA_SCALAR; isa <= (int)best; isa++) {
        tm_force_isa(isa);
        printf("isa %s\n", tm_isa_name((tm_isa)isa));
        test_gemm();
        test_round();
    }
    tm_force_isa(-1);
    return test_finish("test_gemm_prec");
}
