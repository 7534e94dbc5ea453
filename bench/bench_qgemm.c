/* The int8 kernels of the prepared-weight GEMM (src/ops/qgemm.h) side by
 * side on bench-small's linear shapes: every kernel this CPU has, rounds
 * interleaved so that a busy core slows all of them alike. Prints one JSON
 * line per shape and kernel: the best-of-rounds ms per call and GOP/s
 * (2 * M * N * K), and the ratio to the vpmaddwd AVX2 kernel; then the
 * bf16 GEMM (tm_bgemm) on the same shapes, for scale.
 *
 * Usage: bench_qgemm [--threads T] [--rounds R] [--cpu]   (defaults 1, 7;
 * --cpu times the process's CPU time instead of wall time: steadier on a
 * shared machine at one thread, where time spent preempted is not counted) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ops/qgemm.h"
#include "trimodal/core.h"

static int cpu_clock; /* --cpu: CPU time of the process, not wall time */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(cpu_clock ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    int threads = 1, rounds = 7;
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--cpu")) {
            cpu_clock = 1;
            i--;
        } else if (i + 1 >= argc) {
            fprintf(stderr, "usage: bench_qgemm [--threads T] [--rounds R] [--cpu]\n");
            return 2;
        } else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_qgemm [--threads T] [--rounds R] [--cpu]\n");
            return 2;
        }
    }
    if (threads < 1 || rounds < 1) return 2;
    tm_set_num_threads(threads);
    static const int64_t shapes[][3] = {/* M, N, K */
                                        {32, 768, 256},   {32, 1024, 256},  {32, 256, 1024},
                                        {148, 768, 256},  {148, 1024, 256}, {148, 256, 1024},
                                        {2048, 768, 256}, {2048, 256, 1024}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *W = malloc((size_t)(N * K) * sizeof(float)), *A = malloc((size_t)(M * K) * sizeof(float));
        float *C = malloc((size_t)(M * N) * sizeof(float));
        uint64_t r = 12345;
        for (int64_t i = 0; i < N * K; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            W[i] = (float)((int64_t)(r >> 40) - (1 << 23)) / (float)(1 << 23);
        }
        for (int64_t i = 0; i < M * K; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            A[i] = (float)((int64_t)(r >> 40) - (1 << 23)) / (float)(1 << 23);
        }
        tm_qweights qw;
        if (tm_qweights_init(&qw, W, N, K, K, 1)) return 1;
        int8_t *qa = tm_alloc((size_t)(M * qw.kp));
        float *sa = malloc((size_t)M * sizeof(float));
        tm_quantize_rows_s8(qa, sa, A, M, K, K, qw.kp);
        int reps = (int)(2e8 / (double)(M * N * K)) + 1;
        double best[TM_QKERNEL_COUNT];
        for (int k = 0; k < TM_QKERNEL_COUNT; k++) best[k] = 1e30;
        for (int round = 0; round < rounds; round++)
            for (int k = 0; k < TM_QKERNEL_COUNT; k++) {
                if (!tm_qkernel_available((tm_qkernel)k)) continue;
                if (k == TM_QKERNEL_SCALAR && (M > 64 || round > 0)) continue; /* slow */
                double t0 = now_ms();
                for (int i = 0; i < reps; i++) tm_qgemm_s8((tm_qkernel)k, C, N, qa, sa, M, &qw);
                double t = (now_ms() - t0) / reps;
                if (t < best[k]) best[k] = t;
            }
        /* bf16 weights (tm_bgemm), for scale */
        tm_bweights bw;
        if (tm_bweights_init(&bw, W, N, K, K, 1)) return 1;
        double bbest = 1e30;
        for (int round = 0; round < rounds; round++) {
            double t0 = now_ms();
            for (int i = 0; i < reps; i++) tm_bgemm(C, N, A, K, M, &bw, 0);
            double t = (now_ms() - t0) / reps;
            if (t < bbest) bbest = t;
        }
        tm_bweights_free(&bw);
        printf("{\"M\":%lld,\"N\":%lld,\"K\":%lld,\"threads\":%d,\"kernel\":\"bf16\",\"ms\":%.4f,"
               "\"gops\":%.1f,\"vs_avx2\":%.3f}\n",
               (long long)M, (long long)N, (long long)K, threads, bbest, 2e-6 * M * N * K / bbest,
               bbest / best[TM_QKERNEL_AVX2]);
        for (int k = 0; k < TM_QKERNEL_COUNT; k++) {
            if (!tm_qkernel_available((tm_qkernel)k) || best[k] >= 1e30) continue;
            printf("{\"M\":%lld,\"N\":%lld,\"K\":%lld,\"threads\":%d,\"kernel\":\"%s\",\"ms\":%.4f,"
                   "\"gops\":%.1f,\"vs_avx2\":%.3f}\n",
                   (long long)M, (long long)N, (long long)K, threads,
                   tm_qkernel_name((tm_qkernel)k), best[k], 2e-6 * M * N * K / best[k],
                   best[k] / best[TM_QKERNEL_AVX2]);
        }
        tm_qweights_free(&qw);
        tm_free(qa);
        free(sa);
        free(W);
        free(A);
        free(C);
    }
    return 0;
}
