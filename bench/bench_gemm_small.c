/* GEMM at inference shapes and in bf16, beside OpenBLAS, interleaved rep by
 * rep in one process so that a busy moment of the machine slows all sides.
 *
 * "gemm_small": bench-small's Linears at batch 1, Y (M, N) = X (M, K) W^T
 * with W (N, K), M the tokens of one sample (1 to 148): tm_sgemm (which
 * packs W on every call), tm_sgemm_packed (W packed once, as a graph can
 * keep it) and cblas_sgemm.
 * "gemm_bf16": tm_gemm_bf16 beside tm_sgemm on bench-small's training
 * shapes (batch 32), with the kernel it ran ("avx512-bf16" or the
 * emulation that widens to f32 while packing).
 *
 * Usage: bench_gemm_small [--threads 1,2] [--quick] [--only SUBSTR] [--shapes]
 *   --shapes  print the gemm_small shapes as JSON lines and exit (for
 *             scripts/bench_gemm_torch.py, which times torch.mm on them)
 * stdout: one JSON object per shape and thread count. Times are the best
 * repetition (microseconds); GFLOP/s count 2*M*N*K. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/gemm_internal.h"
#include "trimodal/ops.h"

typedef struct {
    int64_t M, K, N;
} small_shape;

static const int64_t TOKENS[] = {1, 4, 16, 32, 50, 65, 100, 148};
static const int64_t KN[][2] = {{256, 768}, {256, 256}, {256, 1024}, {1024, 256}};
#define NTOK ((int)(sizeof TOKENS / sizeof TOKENS[0]))
#define NKN ((int)(sizeof KN / sizeof KN[0]))

typedef struct {
    const char *name;
    int ta, tb;
    int64_t M, N, K;
} big_shape;

static const big_shape BF16_SHAPES[] = {
    {"fusion.qkv.fwd", 0, 1, 32 * 148, 768, 256}, {"fusion.fc2.fwd", 0, 1, 32 * 148, 256, 1024},
    {"fusion.fc1.dW", 1, 0, 1024, 256, 32 * 148}, {"fusion.fc1.dX", 0, 0, 32 * 148, 256, 1024},
    {"square1024", 0, 0, 1024, 1024, 1024},
};
#define NBF16 ((int)(sizeof BF16_SHAPES / sizeof BF16_SHAPES[0]))

static float *rand_buf(int64_t n, uint64_t seed)
{
    float *p = tm_alloc((size_t)n * sizeof(float));
    tm_rng r = tm_rng_new(seed, 0);
    tm_rng_fill_uniform(&r, p, n, -1.0f, 1.0f);
    return p;
}

static void name_of(char *buf, size_t n, int64_t M, int64_t K, int64_t N)
{
    snprintf(buf, n, "b1.M%lld.K%lld.N%lld", (long long)M, (long long)K, (long long)N);
}

static void bench_small(int64_t M, int64_t K, int64_t N, int threads, int quick)
{
    float *X = rand_buf(M * K, 1), *W = rand_buf(N * K, 2);
    float *Y = tm_alloc((size_t)(M * N) * sizeof(float));
    tm_packed_b *p = NULL;
    if (tm_sgemm_pack_b(&p, 1, K, N, W, K) != TM_OK) {
        fprintf(stderr, "bench_gemm_small: %s\n", tm_last_error());
        exit(1);
    }
    double flops = 2.0 * (double)M * (double)N * (double)K;
    /* enough repetitions for about 0.2 s per side, at least 20 */
    int reps = (int)(0.2 / (flops / 50e9 + 2e-6));
    if (quick) reps /= 10;
    if (reps < 20) reps = 20;
    if (reps > 5000) reps = 5000;
    double best[3] = {1e30, 1e30, 1e30};
    for (int r = 0; r < reps + 2; r++) {
        double t0 = tm_time_s();
        tm_sgemm(0, 1, M, N, K, 1.0f, X, K, W, K, 0.0f, Y, N);
        double t1 = tm_time_s();
        tm_sgemm_packed(0, M, 1.0f, X, K, p, 0.0f, Y, N);
        double t2 = tm_time_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, X,
                    (int)K, W, (int)K, 0.0f, Y, (int)N);
        double t3 = tm_time_s();
        if (r < 2) continue;
        double t[3] = {t1 - t0, t2 - t1, t3 - t2};
        for (int i = 0; i < 3; i++)
            if (t[i] < best[i]) best[i] = t[i];
    }
    char name[64];
    name_of(name, sizeof name, M, K, N);
    printf("{\"bench\":\"gemm_small\",\"shape\":\"%s\",\"M\":%lld,\"N\":%lld,\"K\":%lld,"
           "\"threads\":%d,\"isa\":\"%s\",\"reps\":%d,\"sgemm_us\":%.2f,\"packed_us\":%.2f,"
           "\"openblas_us\":%.2f,\"sgemm_gflops\":%.1f,\"packed_gflops\":%.1f,"
           "\"openblas_gflops\":%.1f,\"packed_speedup\":%.2f,\"packed_vs_openblas\":%.2f}\n",
           name, (long long)M, (long long)N, (long long)K, threads, tm_isa_name(tm_cpu_isa()), reps,
           best[0] * 1e6, best[1] * 1e6, best[2] * 1e6, flops / best[0] / 1e9,
           flops / best[1] / 1e9, flops / best[2] / 1e9, best[0] / best[1], best[2] / best[1]);
    fflush(stdout);
    tm_packed_b_free(p);
    tm_free(X), tm_free(W), tm_free(Y);
}

static void bench_bf16(const big_shape *s, int threads, int quick)
{
    int64_t na = s->M * s->K, nb = s->K * s->N;
    float *A = rand_buf(na, 3), *B = rand_buf(nb, 4), *C = tm_alloc((size_t)(s->M * s->N) * 4);
    tm_bf16 *A16 = tm_alloc((size_t)na * 2), *B16 = tm_alloc((size_t)nb * 2);
    for (int64_t i = 0; i < na; i++)
        A16[i] = tm_f32_to_bf16(A[i]);
    for (int64_t i = 0; i < nb; i++)
        B16[i] = tm_f32_to_bf16(B[i]);
    int64_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K, b32 = 1e30, b16 = 1e30;
    for (int r = 0; r < (quick ? 3 : 8); r++) {
        double t0 = tm_time_s();
        tm_sgemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C, s->N);
        double t1 = tm_time_s();
        tm_gemm_bf16(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A16, lda, B16, ldb, 0.0f, C, s->N);
        double t2 = tm_time_s();
        if (r == 0) continue;
        if (t1 - t0 < b32) b32 = t1 - t0;
        if (t2 - t1 < b16) b16 = t2 - t1;
    }
    printf("{\"bench\":\"gemm_bf16\",\"shape\":\"%s\",\"trans_a\":%d,\"trans_b\":%d,\"M\":%lld,"
           "\"N\":%lld,\"K\":%lld,\"threads\":%d,\"bf16_kernel\":\"%s\",\"f32_gflops\":%.1f,"
           "\"bf16_gflops\":%.1f,\"bf16_vs_f32\":%.2f}\n",
           s->name, s->ta, s->tb, (long long)s->M, (long long)s->N, (long long)s->K, threads,
           tm_gemm_kernel_bf16()->name, flops / b32 / 1e9, flops / b16 / 1e9, b32 / b16);
    fflush(stdout);
    tm_free(A), tm_free(B), tm_free(C), tm_free(A16), tm_free(B16);
}

int main(int argc, char **argv)
{
    const char *thread_list = "1,2", *only = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            thread_list = argv[++i];
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--shapes")) {
            for (int k = 0; k < NKN; k++)
                for (int t = 0; t < NTOK; t++) {
                    char name[64];
                    name_of(name, sizeof name, TOKENS[t], KN[k][0], KN[k][1]);
                    printf("{\"shape\":\"%s\",\"trans_a\":0,\"trans_b\":1,\"M\":%lld,"
                           "\"N\":%lld,\"K\":%lld}\n",
                           name, (long long)TOKENS[t], (long long)KN[k][1], (long long)KN[k][0]);
                }
            return 0;
        } else {
            fprintf(stderr, "usage: %s [--threads 1,2] [--quick] [--only SUBSTR] [--shapes]\n",
                    argv[0]);
            return 2;
        }
    }
    fprintf(stderr, "bench_gemm_small: trimodal isa %s, bf16 kernel %s, OpenBLAS %s\n",
            tm_isa_name(tm_cpu_isa()), tm_gemm_kernel_bf16()->name, openblas_get_corename());
    for (const char *p = thread_list; *p;) {
        int threads = atoi(p);
        if (threads < 1 || tm_set_num_threads(threads) != TM_OK) {
            fprintf(stderr, "bench_gemm_small: bad thread count in %s\n", thread_list);
            return 2;
        }
        openblas_set_num_threads(threads);
        for (int k = 0; k < NKN; k++)
            for (int t = 0; t < NTOK; t++) {
                char name[64];
                name_of(name, sizeof name, TOKENS[t], KN[k][0], KN[k][1]);
                if (only && !strstr(name, only)) continue;
                if (quick && t % 2) continue;
                bench_small(TOKENS[t], KN[k][0], KN[k][1], threads, quick);
            }
        for (int s = 0; s < NBF16; s++)
            if (!only || strstr(BF16_SHAPES[s].name, only))
                bench_bf16(&BF16_SHAPES[s], threads, quick);
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    return 0;
}
