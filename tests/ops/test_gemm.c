/* tm_sgemm and tm_sgemm_batched against tm_sgemm_ref, which is itself
 * checked against a double-precision triple loop: every transpose, odd
 * sizes, padded leading dimensions, alpha/beta (beta = 0 over NaN), every
 * ISA the CPU has, and bitwise equality across thread counts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/ops.h"

static const int64_t sizes[] = {1, 2, 3, 7, 15, 17, 31, 33, 63, 65, 100, 257};
#define NSIZES ((int)(sizeof sizes / sizeof sizes[0]))

/* A buffer of rows x ld floats in [-1, 1), padding included. */
static float *rand_mat(int64_t rows, int64_t ld, uint64_t seed)
{
    float *x = malloc((size_t)(rows * ld) * sizeof(float) + 1);
    test_fill_uniform(x, rows * ld, seed, -1.0f, 1.0f);
    return x;
}

/* The oracle of the oracle: sums in double, one rounding at the end. */
static void gemm_f64(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t p = 0; p < K; p++)
                acc += (double)(ta ? A[p * lda + i] : A[i * lda + p]) *
                       (double)(tb ? B[j * ldb + p] : B[p * ldb + j]);
            double c = beta == 0.0f ? 0.0 : (double)beta * C[i * ldc + j];
            C[i * ldc + j] = (float)(alpha * acc + c);
        }
}

/* Sum-of-magnitudes scaled tolerance for inputs in [-1, 1). */
static double tol_for(int64_t K)
{
    return 2e-6 * sqrt((double)K + 1) * 8;
}

static const float alphas[] = {1.0f, 1.5f, -0.5f, 1.0f};
static const float betas[] = {0.0f, 0.0f, 0.75f, 1.0f};

/* One GEMM through tm_sgemm and tm_sgemm_ref, with padded leading
 * dimensions; beta == 0 puts NaN into tm_sgemm's C. */
static void check_one(int ta, int tb, int64_t M, int64_t N, int64_t K, int variant,
                      const char *what)
{
    float alpha = alphas[variant % 4], beta = betas[variant % 4];
    int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 7;
    float *A = rand_mat(ta ? K : M, lda, 11 + M * 7 + K);
    float *B = rand_mat(tb ? N : K, ldb, 23 + N * 5 + K);
    float *C = rand_mat(M, ldc, 37 + M + N);
    float *R = malloc((size_t)(M * ldc) * sizeof(float));
    memcpy(R, C, (size_t)(M * ldc) * sizeof(float));
    if (beta == 0.0f)
        for (int64_t i = 0; i < M * ldc; i++)
            C[i] = NAN;
    /* the padding of C must survive: mark it */
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = N; j < ldc; j++)
            C[i * ldc + j] = R[i * ldc + j] = 12345.0f;

    tm_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    tm_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);

    char name[160];
    snprintf(name, sizeof name, "%s ta=%d tb=%d M=%lld N=%lld K=%lld alpha=%g beta=%g", what, ta,
             tb, (long long)M, (long long)N, (long long)K, alpha, beta);
    check_close(name, C, R, M * ldc, tol_for(K), 1e-5);
    free(A);
    free(B);
    free(C);
    free(R);
}

/* tm_sgemm_ref against the double loop. */
static void test_ref(void)
{
    static const int64_t shapes[][3] = {{1, 1, 1},    {3, 7, 2},      {17, 15, 33},
                                        {33, 65, 31}, {100, 63, 257}, {2, 257, 100}};
    for (int t = 0; t < 4; t++)
        for (int s = 0; s < 6; s++) {
            int ta = t & 1, tb = t >> 1;
            int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            float alpha = alphas[s % 4], beta = betas[(s + t) % 4];
            int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
            float *A = rand_mat(ta ? K : M, lda, 1 + s);
            float *B = rand_mat(tb ? N : K, ldb, 2 + s);
            float *C = rand_mat(M, ldc, 3 + s);
            float *D = malloc((size_t)(M * ldc) * sizeof(float));
            memcpy(D, C, (size_t)(M * ldc) * sizeof(float));
            tm_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
            gemm_f64(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, D, ldc);
            check_close("ref vs f64", C, D, M * ldc, tol_for(K), 1e-5);
            free(A);
            free(B);
            free(C);
            free(D);
        }
}

/* Every transpose, every size of the list in M and N, K cycling through
 * it too, alpha/beta cycling; under the ISA in force. */
static void test_shapes(const char *isa)
{
    for (int t = 0; t < 4; t++)
        for (int im = 0; im < NSIZES; im++)
            for (int in = 0; in < NSIZES; in++) {
                int64_t K = sizes[(im * 5 + in * 7 + t * 3) % NSIZES];
                /* keep the largest cubes rare: the reference is slow */
                if (sizes[im] * sizes[in] * K > 257 * 100 * 33) K = 17;
                check_one(t & 1, t >> 1, sizes[im], sizes[in], K, im + in + t, isa);
            }
    /* several K blocks, several column chunks, blocks of rows */
    check_one(0, 1, 70, 40, 600, 2, isa);
    check_one(1, 0, 7, 2100, 33, 3, isa);
    check_one(1, 1, 257, 65, 257, 1, isa);
    check_one(0, 0, 200, 33, 513, 0, isa);
}

/* alpha == 0 and K == 0 only scale C; beta == 0 clears even NaN. */
static void test_degenerate(void)
{
    float A[7] = {NAN, 1, 2, 3, 4, 5, 6}, B[6] = {1, 2, 3, 4, 5, INFINITY};
    float C[4] = {1, 2, 3, 4};
    tm_sgemm(0, 0, 2, 2, 3, 0.0f, A, 3, B, 2, 2.0f, C, 2);
    CHECK(C[0] == 2 && C[1] == 4 && C[2] == 6 && C[3] == 8);
    float D[4] = {NAN, NAN, NAN, NAN};
    tm_sgemm(0, 0, 2, 2, 0, 1.0f, A, 3, B, 2, 0.0f, D, 2);
    CHECK(D[0] == 0 && D[1] == 0 && D[2] == 0 && D[3] == 0);
    tm_sgemm(0, 0, 0, 2, 3, 1.0f, A, 3, B, 2, 0.0f, NULL, 2); /* M = 0: no-op */
    /* beta = 0 over NaN with a real product */
    float E[4] = {NAN, NAN, NAN, NAN};
    float R[4] = {NAN, NAN, NAN, NAN};
    tm_sgemm(0, 0, 2, 2, 3, 1.0f, A + 1, 3, B, 2, 0.0f, E, 2);
    tm_sgemm_ref(0, 0, 2, 2, 3, 1.0f, A + 1, 3, B, 2, 0.0f, R, 2);
    check_close("beta=0 over NaN", E, R, 4, 1e-6, 1e-6);
}

/* Batched: shared A (stride 0), shared B, many small matrices. */
static void test_batched(int big)
{
    static const int64_t cases[][5] = {
        /* batch, M, N, K, which operand is shared (0 none, 1 A, 2 B) */
        {3, 33, 65, 17, 1}, {4, 65, 31, 100, 2},   {40, 17, 15, 33, 0}, {2, 257, 100, 63, 0},
        {1, 7, 3, 2, 1},    {4, 200, 100, 110, 2}, /* large enough to share one packed B */
    };
    for (int c = 0; c < (big ? 6 : 5); c++)
        for (int t = 0; t < 4; t++) {
            int ta = t & 1, tb = t >> 1;
            int64_t batch = cases[c][0], M = cases[c][1], N = cases[c][2], K = cases[c][3];
            int shared = (int)cases[c][4];
            int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 3, ldc = N + 2;
            int64_t sa = shared == 1 ? 0 : (ta ? K : M) * lda + 5;
            int64_t sb = shared == 2 ? 0 : (tb ? N : K) * ldb + 3;
            int64_t sc = M * ldc + 1;
            float alpha = alphas[(c + t) % 4], beta = betas[(c + t) % 4];
            float *A = rand_mat(1, sa ? sa * batch : (ta ? K : M) * lda, 100 + c);
            float *B = rand_mat(1, sb ? sb * batch : (tb ? N : K) * ldb, 200 + c);
            float *C = rand_mat(1, sc * batch, 300 + c);
            float *R = malloc((size_t)(sc * batch) * sizeof(float));
            memcpy(R, C, (size_t)(sc * batch) * sizeof(float));
            tm_sgemm_batched(ta, tb, batch, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc,
                             sc);
            for (int64_t b = 0; b < batch; b++)
                tm_sgemm_ref(ta, tb, M, N, K, alpha, A + b * sa, lda, B + b * sb, ldb, beta,
                             R + b * sc, ldc);
            check_close("batched", C, R, sc * batch, tol_for(K), 1e-5);
            free(A);
            free(B);
            free(C);
            free(R);
        }
}

typedef struct {
    int ta, tb;
    int64_t M, N, K, lda, ldb;
    const float *A, *B;
    float *C;
} nested_ctx;

static void nested_task(void *ctx, int64_t i, int64_t n)
{
    nested_ctx *c = ctx;
    (void)n;
    if (i == 0)
        tm_sgemm(c->ta, c->tb, c->M, c->N, c->K, 0.75f, c->A, c->lda, c->B, c->ldb, 0.0f, c->C,
                 c->N);
}

/* The same bits for 1 and 2 threads, from inside a pool task, and when
 * the scratch allocation fails. */
static void test_threads(int big)
{
    /* the first is large enough for B to be packed once and shared */
    static const int64_t shapes[][3] = {{400, 100, 300}, {31, 700, 100}, {600, 40, 77}};
    for (int s = big ? 0 : 1; s < 3; s++)
        for (int t = 0; t < 4; t++) {
            int ta = t & 1, tb = t >> 1;
            int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            int64_t lda = ta ? M : K, ldb = tb ? K : N;
            float *A = rand_mat(ta ? K : M, lda, 5 + s);
            float *B = rand_mat(tb ? N : K, ldb, 6 + s);
            float *C1 = malloc((size_t)(M * N) * sizeof(float));
            float *C2 = malloc((size_t)(M * N) * sizeof(float));
            tm_set_num_threads(1);
            tm_sgemm(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.0f, C1, N);
            CHECK_OK(tm_set_num_threads(2));
            tm_sgemm(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.0f, C2, N);
            CHECK(memcmp(C1, C2, (size_t)(M * N) * sizeof(float)) == 0);

            memset(C2, 0, (size_t)(M * N) * sizeof(float));
            nested_ctx nc = {ta, tb, M, N, K, lda, ldb, A, B, C2};
            tm_parallel_for(2, nested_task, &nc);
            CHECK(memcmp(C1, C2, (size_t)(M * N) * sizeof(float)) == 0);

            /* every allocation failing, then all but the first (the shared B) */
            for (long fail = 1; fail <= 2; fail++) {
                memset(C2, 0, (size_t)(M * N) * sizeof(float));
                tm_alloc_fail_after(fail);
                tm_sgemm(ta, tb, M, N, K, 0.75f, A, lda, B, ldb, 0.0f, C2, N);
                tm_alloc_fail_after(0);
                CHECK(memcmp(C1, C2, (size_t)(M * N) * sizeof(float)) == 0);
            }
            free(A);
            free(B);
            free(C1);
            free(C2);
        }
}

int main(void)
{
    int threads = tm_get_num_threads();
    test_ref();
    test_degenerate();
    tm_force_isa(-1);
    tm_isa best = tm_cpu_isa();
    for (int isa = TM_ISA_SCALAR; isa <= (int)best; isa++) {
        tm_force_isa(isa);
        CHECK(tm_cpu_isa() == (tm_isa)isa);
        printf("isa %s\n", tm_isa_name((tm_isa)isa));
        test_shapes(tm_isa_name((tm_isa)isa));
        /* the shared-B path is the same for every ISA: its larger cases run
         * once, under the best one (the plain C kernel is slow under ASan) */
        test_batched(isa == (int)best);
        test_threads(isa == (int)best);
        tm_set_num_threads(threads);
    }
    tm_force_isa(-1);
    return test_finish("test_gemm");
}
