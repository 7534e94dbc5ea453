/*
 * GEMM with a pre-packed B (tm_sgemm_pack_b, tm_sgemm_packed) and the
 * small-M paths of tm_sgemm, under every ISA this CPU has:
 *
 * - tm_sgemm_packed gives exactly tm_sgemm's bits (every transpose, M from
 *   1 to 148 as in bench-small's batch-1 forward, odd K and N, alpha and
 *   beta, beta = 0 over NaN, padded leading dimensions), and tm_sgemm_ref's
 *   values to rounding;
 * - a B packed under one ISA keeps its kernel when the ISA is lowered;
 *   repacking new values; the same bits at 1 and 2 threads;
 * - each row of C depends only on its row of A, bit for bit, whatever M
 *   (the edge rows of a tile run the kernels' rows variants);
 * - bad arguments and failed allocations give clear errors.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/ops.h"

static float *rand_mat(int64_t n, uint64_t seed)
{
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    test_fill_uniform(x, n, seed, -1.0f, 1.0f);
    return x;
}

static double tol_for(int64_t K)
{
    return 2e-6 * sqrt((double)K + 1) * 8;
}

/* One product through tm_sgemm_packed, tm_sgemm and (when ref) tm_sgemm_ref. */
static void check_one(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                      int ref, const char *isa)
{
    int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 5;
    float *A = rand_mat((ta ? K : M) * lda, 100 + M + K);
    float *B = rand_mat((tb ? N : K) * ldb, 200 + N + K);
    float *C0 = rand_mat(M * ldc, 300 + M);
    float *C1 = malloc((size_t)(M * ldc) * sizeof(float));
    float *C2 = malloc((size_t)(M * ldc) * sizeof(float));
    if (beta == 0.0f)
        for (int64_t i = 0; i < M * ldc; i++)
            C0[i] = NAN;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = N; j < ldc; j++)
            C0[i * ldc + j] = 4321.0f; /* padding must survive */
    memcpy(C1, C0, (size_t)(M * ldc) * sizeof(float));
    memcpy(C2, C0, (size_t)(M * ldc) * sizeof(float));

    tm_packed_b *p = NULL;
    CHECK_OK(tm_sgemm_pack_b(&p, tb, K, N, B, ldb));
    CHECK(tm_packed_b_k(p) == K && tm_packed_b_n(p) == N);
    CHECK(tm_packed_b_bytes(p) >= (size_t)(K * N) * sizeof(float));
    tm_sgemm_packed(ta, M, alpha, A, lda, p, beta, C1, ldc);
    tm_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C2, ldc);
    char name[160];
    snprintf(name, sizeof name, "packed %s ta=%d tb=%d M=%lld N=%lld K=%lld a=%g b=%g", isa, ta, tb,
             (long long)M, (long long)N, (long long)K, alpha, beta);
    test_checks++;
    if (memcmp(C1, C2, (size_t)(M * ldc) * sizeof(float)) != 0) {
        test_failures++;
        fprintf(stderr, "NOT BITWISE EQUAL to tm_sgemm: %s\n", name);
    }
    if (ref) {
        float *R = malloc((size_t)(M * ldc) * sizeof(float));
        memcpy(R, C0, (size_t)(M * ldc) * sizeof(float));
        if (beta == 0.0f)
            for (int64_t i = 0; i < M * ldc; i++)
                if (isnan(R[i])) R[i] = 0.0f;
        tm_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
        check_close(name, C1, R, M * ldc, tol_for(K), 1e-5);
        free(R);
    }
    tm_packed_b_free(p);
    free(A), free(B), free(C0), free(C1), free(C2);
}

static void test_shapes(const char *isa, int big)
{
    /* bench-small's batch-1 forward: M tokens, (K, N) of its Linears */
    static const int64_t Ms[] = {1, 2, 3, 5, 6, 7, 11, 13, 32, 50, 65, 100, 148};
    static const int64_t KN[][2] = {{256, 768}, {256, 256}, {256, 1024}, {1024, 256}};
    /* the plain C kernel (slow under ASan) takes the smaller ones */
    for (size_t m = 0; m < sizeof Ms / sizeof Ms[0] - (big ? 0 : 3); m++)
        for (int s = 0; s < (big ? 4 : 2); s++)
            check_one(0, 1, Ms[m], KN[s][1], KN[s][0], 1.0f, 0.0f, m % 4 == 0 && s < 2, isa);
    /* every transpose, odd sizes, alpha and beta, several K blocks */
    static const int64_t odd[][3] = {{1, 1, 1},    {7, 33, 17},  {17, 65, 100},
                                     {33, 3, 257}, {5, 70, 600}, {12, 31, 513}};
    static const float ab[][2] = {{1, 0}, {1.5f, 0}, {-0.5f, 0.75f}, {1, 1}};
    for (int t = 0; t < 4; t++)
        for (size_t s = 0; s < sizeof odd / sizeof odd[0]; s++)
            check_one(t & 1, t >> 1, odd[s][0], odd[s][1], odd[s][2], ab[(t + s) % 4][0],
                      ab[(t + s) % 4][1], 1, isa);
    /* empty products only scale C */
    check_one(0, 0, 3, 5, 0, 1.0f, 0.5f, 1, isa);
    check_one(0, 1, 4, 9, 8, 0.0f, 2.0f, 1, isa);
}

/* Row i of C from row i of A alone: the same bits for every M. */
static void test_row_prefix(const char *isa, int big)
{
    enum { MMAX = 26 };
    static const int64_t NK[][2] = {{40, 300}, {33, 7}, {768, 256}};
    for (int tb = 0; tb < 2; tb++)
        for (size_t s = 0; s < sizeof NK / sizeof NK[0] - !big; s++) {
            int64_t N = NK[s][0], K = NK[s][1];
            float *A = rand_mat(MMAX * K, 5 + s), *B = rand_mat(K * N, 6 + s);
            float *Cf = malloc((size_t)(MMAX * N) * sizeof(float));
            float *C = malloc((size_t)(MMAX * N) * sizeof(float));
            tm_sgemm(0, tb, MMAX, N, K, 1.25f, A, K, B, tb ? K : N, 0.0f, Cf, N);
            int same = 1;
            for (int64_t M = 1; M < MMAX; M++) {
                tm_sgemm(0, tb, M, N, K, 1.25f, A, K, B, tb ? K : N, 0.0f, C, N);
                same &= memcmp(C, Cf, (size_t)(M * N) * sizeof(float)) == 0;
                /* and with C accumulated (beta = 1) */
                memcpy(C, Cf, (size_t)(M * N) * sizeof(float));
                tm_sgemm(0, tb, M, N, K, 1.0f, A, K, B, tb ? K : N, 1.0f, C, N);
                float *D = malloc((size_t)(MMAX * N) * sizeof(float));
                memcpy(D, Cf, (size_t)(MMAX * N) * sizeof(float));
                tm_sgemm(0, tb, MMAX, N, K, 1.0f, A, K, B, tb ? K : N, 1.0f, D, N);
                same &= memcmp(C, D, (size_t)(M * N) * sizeof(float)) == 0;
                free(D);
            }
            if (!same)
                fprintf(stderr, "row prefix differs: %s tb=%d N=%lld K=%lld\n", isa, tb,
                        (long long)N, (long long)K);
            CHECK(same);
            free(A), free(B), free(Cf), free(C);
        }
}

/* A packed B keeps its kernel; repacking; threads; nested in a task. */
static void test_lifecycle(int best)
{
    int64_t M = 40, N = 100, K = 300;
    float *A = rand_mat(M * K, 1), *B = rand_mat(N * K, 2), *B2 = rand_mat(N * K, 3);
    float *C1 = malloc((size_t)(M * N) * 4), *C2 = malloc((size_t)(M * N) * 4);
    tm_force_isa(best);
    tm_packed_b *p = NULL;
    CHECK_OK(tm_sgemm_pack_b(&p, 1, K, N, B, K));
    tm_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C2, N);
    tm_force_isa(TM_ISA_SCALAR); /* lowered after packing: p keeps its kernel */
    tm_sgemm_packed(0, M, 1.0f, A, K, p, 0.0f, C1, N);
    CHECK(memcmp(C1, C2, (size_t)(M * N) * 4) == 0);
    tm_force_isa(best);
    tm_sgemm_repack_b(p, B2, K);
    tm_sgemm_packed(0, M, 1.0f, A, K, p, 0.0f, C1, N);
    tm_sgemm(0, 1, M, N, K, 1.0f, A, K, B2, K, 0.0f, C2, N);
    CHECK(memcmp(C1, C2, (size_t)(M * N) * 4) == 0);
    int threads = tm_get_num_threads();
    for (int nt = 1; nt <= 2; nt++) {
        CHECK_OK(tm_set_num_threads(nt));
        memset(C1, 0, (size_t)(M * N) * 4);
        tm_sgemm_packed(0, M, 1.0f, A, K, p, 0.0f, C1, N);
        CHECK(memcmp(C1, C2, (size_t)(M * N) * 4) == 0);
        /* a larger M, cut into several tasks */
        int64_t M2 = 300;
        float *A2 = rand_mat(M2 * K, 9), *D1 = malloc((size_t)(M2 * N) * 4);
        float *D2 = malloc((size_t)(M2 * N) * 4);
        tm_sgemm_packed(0, M2, 1.0f, A2, K, p, 0.0f, D1, N);
        tm_sgemm(0, 1, M2, N, K, 1.0f, A2, K, B2, K, 0.0f, D2, N);
        CHECK(memcmp(D1, D2, (size_t)(M2 * N) * 4) == 0);
        free(A2), free(D1), free(D2);
    }
    tm_set_num_threads(threads);
    tm_packed_b_free(p);
    tm_packed_b_free(NULL);
    tm_force_isa(-1);
    free(A), free(B), free(B2), free(C1), free(C2);
}

static void test_errors(void)
{
    float B[12] = {0};
    tm_packed_b *p = (tm_packed_b *)1;
    CHECK_STATUS(tm_sgemm_pack_b(&p, 0, -1, 4, B, 4), TM_ERR_INVALID);
    CHECK(p == NULL);
    CHECK(strstr(tm_last_error(), "K=-1") != NULL);
    CHECK_STATUS(tm_sgemm_pack_b(&p, 0, 3, 4, B, 3), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "ldb=3") != NULL);
    CHECK_STATUS(tm_sgemm_pack_b(&p, 1, 3, 4, B, 2), TM_ERR_INVALID);
    CHECK_STATUS(tm_sgemm_pack_b(&p, 0, 3, 4, NULL, 4), TM_ERR_INVALID);
    CHECK_STATUS(tm_sgemm_pack_b(NULL, 0, 3, 4, B, 4), TM_ERR_INVALID);
    CHECK_STATUS(tm_sgemm_pack_b(&p, 0, (int64_t)1 << 40, (int64_t)1 << 40, B, (int64_t)1 << 40),
                 TM_ERR_NOMEM);
    for (long fail = 1; fail <= 2; fail++) {
        tm_alloc_fail_after(fail);
        tm_status st = tm_sgemm_pack_b(&p, 0, 3, 4, B, 4);
        tm_alloc_fail_after(0);
        CHECK(st == TM_ERR_NOMEM && p == NULL);
    }
    /* an empty B is valid: the product only scales C */
    CHECK_OK(tm_sgemm_pack_b(&p, 0, 0, 4, NULL, 4));
    float C[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    tm_sgemm_packed(0, 2, 1.0f, B, 1, p, 0.5f, C, 4);
    CHECK(C[0] == 0.5f && C[7] == 4.0f);
    tm_packed_b_free(p);
}

int main(void)
{
    int threads = tm_get_num_threads();
    tm_isa best = tm_cpu_isa();
    for (int isa = TM_ISA_SCALAR; isa <= (int)best; isa++) {
        tm_force_isa(isa);
        const char *name = tm_isa_name((tm_isa)isa);
        printf("isa %s\n", name);
        test_shapes(name, isa == (int)best);
        test_row_prefix(name, isa == (int)best);
        tm_set_num_threads(threads);
    }
    tm_force_isa(-1);
    test_lifecycle(best);
    test_errors();
    return test_finish("test_gemm_packed");
}
