/*
 * tm_gemm_bf16: bf16 A and B, f32 sums and C.
 *
 * - Where the CPU has no AVX-512-BF16 (or a lower ISA is forced), the
 *   inputs are widened as they are packed and the f32 kernel runs: the
 *   result must be bitwise tm_sgemm's on the widened inputs, under every
 *   ISA, every transpose, odd sizes, alpha and beta, and for any thread
 *   count.
 * - The AVX-512-BF16 path's packing (bf16 pairs) and driver run here with
 *   a plain C kernel that does what vdpbf16ps does; it must match, bit for
 *   bit, a loop written here that sums the same pairs in the same order
 *   (the K blocks of the driver included), and the f32 product to rounding.
 * - On a CPU that has AVX-512-BF16, the real kernel against the f32
 *   product of the same inputs, to rounding.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/gemm_internal.h"
#include "testutil.h"
#include "trimodal/ops.h"

/* n bf16 values (from uniform f32 in [-1, 1)) and their f32 widening. */
static void rand_bf16(tm_bf16 *h, float *f, int64_t n, uint64_t seed)
{
    test_fill_uniform(f, n, seed, -1.0f, 1.0f);
    for (int64_t i = 0; i < n; i++) {
        h[i] = tm_f32_to_bf16(f[i]);
        f[i] = tm_bf16_to_f32(h[i]);
    }
}

typedef struct {
    int ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    tm_bf16 *A16, *B16;
    float *A, *B, *C0;
} problem;

static problem make(int ta, int tb, int64_t M, int64_t N, int64_t K, uint64_t seed)
{
    problem p = {.ta = ta,
                 .tb = tb,
                 .M = M,
                 .N = N,
                 .K = K,
                 .lda = (ta ? M : K) + 2,
                 .ldb = (tb ? K : N) + 3,
                 .ldc = N + 1};
    int64_t na = (ta ? K : M) * p.lda, nb = (tb ? N : K) * p.ldb;
    p.A16 = malloc((size_t)(na > 0 ? na : 1) * 2), p.A = malloc((size_t)(na > 0 ? na : 1) * 4);
    p.B16 = malloc((size_t)(nb > 0 ? nb : 1) * 2), p.B = malloc((size_t)(nb > 0 ? nb : 1) * 4);
    p.C0 = malloc((size_t)(M * p.ldc > 0 ? M * p.ldc : 1) * 4);
    rand_bf16(p.A16, p.A, na, seed);
    rand_bf16(p.B16, p.B, nb, seed + 1);
    test_fill_uniform(p.C0, M * p.ldc, seed + 2, -1, 1);
    return p;
}

static void release(problem *p)
{
    free(p->A16), free(p->A), free(p->B16), free(p->B), free(p->C0);
}

static float *copy_c(const problem *p)
{
    float *c = malloc((size_t)(p->M * p->ldc > 0 ? p->M * p->ldc : 1) * 4);
    memcpy(c, p->C0, (size_t)(p->M * p->ldc) * 4);
    return c;
}

/* The pairs kernel's arithmetic, written out: per K block of the driver
 * (depth kb from K and kc = 256, as gemm.c's k_block), per pair of depths
 * in it, acc += a(odd) b(odd) then acc += a(even) b(even) (0 past the
 * block); C = alpha acc + beta C for the first block, alpha acc + C after. */
static void pairs_ref(const problem *p, float alpha, float beta, float *C)
{
    int64_t nkb = (p->K + 255) / 256, kb = (p->K + nkb - 1) / nkb;
    for (int64_t i = 0; i < p->M; i++)
        for (int64_t j = 0; j < p->N; j++) {
            float *c = &C[i * p->ldc + j];
            for (int64_t p0 = 0; p0 < p->K; p0 += kb) {
                int64_t pe = p0 + kb < p->K ? p0 + kb : p->K;
                float acc = 0.0f;
                for (int64_t q = p0; q < pe; q += 2) {
                    float a0 = p->ta ? p->A[q * p->lda + i] : p->A[i * p->lda + q];
                    float b0 = p->tb ? p->B[j * p->ldb + q] : p->B[q * p->ldb + j];
                    float a1 = 0.0f, b1 = 0.0f;
                    if (q + 1 < pe) {
                        a1 = p->ta ? p->A[(q + 1) * p->lda + i] : p->A[i * p->lda + q + 1];
                        b1 = p->tb ? p->B[j * p->ldb + q + 1] : p->B[(q + 1) * p->ldb + j];
                    }
                    volatile float p1 = a1 * b1, pp0 = a0 * b0;
                    acc += p1;
                    acc += pp0;
                }
                int first = p0 == 0;
                if (first && beta == 0.0f)
                    *c = alpha * acc;
                else
                    *c = alpha * acc + (first ? beta : 1.0f) * *c;
            }
        }
}

static const int64_t SHAPES[][3] = {
    {1, 1, 1},     {3, 7, 2},    {7, 33, 17},   {17, 65, 100},   {6, 16, 255},
    {13, 31, 513}, {65, 48, 64}, {1, 768, 256}, {300, 200, 300}, /* the last: a shared B */
};
#define NSHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))
static const float AB[][2] = {{1, 0}, {1.5f, 0}, {-0.5f, 0.75f}, {1, 1}};

/* The emulated path: bitwise tm_sgemm on the widened inputs. */
static void test_emulated(const char *isa)
{
    for (int t = 0; t < 4; t++)
        for (int s = 0; s < NSHAPES; s++) {
            problem p = make(t & 1, t >> 1, SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], 10 + s);
            float alpha = AB[(t + s) % 4][0], beta = AB[(t + s) % 4][1];
            float *C1 = copy_c(&p), *C2 = copy_c(&p);
            if (beta == 0.0f) /* C's old values must not matter, even NaN */
                for (int64_t i = 0; i < p.M * p.ldc; i++)
                    C1[i] = C2[i] = NAN;
            tm_gemm_bf16(p.ta, p.tb, p.M, p.N, p.K, alpha, p.A16, p.lda, p.B16, p.ldb, beta, C1,
                         p.ldc);
            tm_sgemm(p.ta, p.tb, p.M, p.N, p.K, alpha, p.A, p.lda, p.B, p.ldb, beta, C2, p.ldc);
            test_checks++;
            if (memcmp(C1, C2, (size_t)(p.M * p.ldc) * 4) != 0) {
                test_failures++;
                fprintf(stderr, "bf16 %s ta=%d tb=%d M=%lld N=%lld K=%lld: not tm_sgemm's bits\n",
                        isa, p.ta, p.tb, (long long)p.M, (long long)p.N, (long long)p.K);
            }
            free(C1), free(C2);
            release(&p);
        }
}

/* The bf16-pairs packing and driver with the plain C pairs kernel. */
static void test_pairs(void)
{
    for (int t = 0; t < 4; t++)
        for (int s = 0; s < NSHAPES; s++) {
            if (s == NSHAPES - 1 && t != 1) continue; /* the big one once (plain C is slow) */
            problem p = make(t & 1, t >> 1, SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], 40 + s);
            float alpha = AB[(t + s) % 4][0], beta = AB[(t + s) % 4][1];
            float *C1 = copy_c(&p), *C2 = copy_c(&p), *C3 = copy_c(&p);
            tm_gemm_bf16_with(&tm_gemm_kernel_bf16_pairs_c, p.ta, p.tb, p.M, p.N, p.K, alpha, p.A16,
                              p.lda, p.B16, p.ldb, beta, C1, p.ldc);
            pairs_ref(&p, alpha, beta, C2);
            tm_sgemm_ref(p.ta, p.tb, p.M, p.N, p.K, alpha, p.A, p.lda, p.B, p.ldb, beta, C3, p.ldc);
            char name[128];
            snprintf(name, sizeof name, "bf16 pairs ta=%d tb=%d M=%lld N=%lld K=%lld", p.ta, p.tb,
                     (long long)p.M, (long long)p.N, (long long)p.K);
            check_close(name, C1, C2, p.M * p.ldc, 0, 0);
            check_close(name, C1, C3, p.M * p.ldc, 2e-6 * sqrt((double)p.K + 1) * 8, 1e-5);
            free(C1), free(C2), free(C3);
            release(&p);
        }
}

/* The real AVX-512-BF16 kernel, where there is one. */
static void test_native(void)
{
    if (!tm_cpu_has_avx512bf16()) {
        printf("no AVX-512-BF16 on this CPU: the vdpbf16ps kernel was not run\n");
        return;
    }
    printf("AVX-512-BF16: checking the vdpbf16ps kernel\n");
    for (int t = 0; t < 4; t++)
        for (int s = 0; s < NSHAPES; s++) {
            problem p = make(t & 1, t >> 1, SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], 70 + s);
            float alpha = AB[(t + s) % 4][0], beta = AB[(t + s) % 4][1];
            float *C1 = copy_c(&p), *C2 = copy_c(&p);
            tm_gemm_bf16(p.ta, p.tb, p.M, p.N, p.K, alpha, p.A16, p.lda, p.B16, p.ldb, beta, C1,
                         p.ldc);
            tm_sgemm_ref(p.ta, p.tb, p.M, p.N, p.K, alpha, p.A, p.lda, p.B, p.ldb, beta, C2, p.ldc);
            check_close("bf16 native", C1, C2, p.M * p.ldc, 2e-6 * sqrt((double)p.K + 1) * 8, 1e-5);
            free(C1), free(C2);
            release(&p);
        }
}

/* The same bits at 1 and 2 threads, on both paths. */
static void test_threads(void)
{
    int threads = tm_get_num_threads();
    problem p = make(0, 1, 300, 200, 300, 99);
    float *C1 = copy_c(&p), *C2 = copy_c(&p), *C3 = copy_c(&p), *C4 = copy_c(&p);
    tm_set_num_threads(1);
    tm_gemm_bf16(0, 1, p.M, p.N, p.K, 1.0f, p.A16, p.lda, p.B16, p.ldb, 0.0f, C1, p.ldc);
    tm_gemm_bf16_with(&tm_gemm_kernel_bf16_pairs_c, 0, 1, p.M, p.N, p.K, 1.0f, p.A16, p.lda, p.B16,
                      p.ldb, 0.0f, C3, p.ldc);
    CHECK_OK(tm_set_num_threads(2));
    tm_gemm_bf16(0, 1, p.M, p.N, p.K, 1.0f, p.A16, p.lda, p.B16, p.ldb, 0.0f, C2, p.ldc);
    tm_gemm_bf16_with(&tm_gemm_kernel_bf16_pairs_c, 0, 1, p.M, p.N, p.K, 1.0f, p.A16, p.lda, p.B16,
                      p.ldb, 0.0f, C4, p.ldc);
    tm_set_num_threads(threads);
    CHECK(memcmp(C1, C2, (size_t)(p.M * p.ldc) * 4) == 0);
    CHECK(memcmp(C3, C4, (size_t)(p.M * p.ldc) * 4) == 0);
    free(C1), free(C2), free(C3), free(C4);
    release(&p);
}

int main(void)
{
    tm_isa best = tm_cpu_isa();
    int native = tm_cpu_has_avx512bf16();
    for (int isa = TM_ISA_SCALAR; isa <= (int)best; isa++) {
        tm_force_isa(isa);
        if (native && isa == TM_ISA_AVX512) continue; /* that ISA runs the native kernel */
        printf("isa %s (emulated bf16)\n", tm_isa_name((tm_isa)isa));
        test_emulated(tm_isa_name((tm_isa)isa));
    }
    tm_force_isa(-1);
    test_pairs();
    test_native();
    test_threads();
    return test_finish("test_gemm_bf16");
}
