/* tm_sgemm beside OpenBLAS's cblas_sgemm and the machine's FMA peak, all
 * measured in the same process, interleaved rep by rep so that a core
 * that is busy for a moment slows both sides alike.
 *
 * Usage: bench_gemm [--setup TAG] [--threads 1,2] [--quick] [--only SUBSTR] [--shapes]
 *   --setup   tag written into every line as "openblas_setup" (run_gemm.sh
 *             runs the bench once per OpenBLAS environment)
 *   --quick   fewer shapes and repetitions (a smoke test)
 *   --only    only the shapes whose name contains SUBSTR
 *   --shapes  print the shape list (one JSON object per line) and exit; the
 *             PyTorch script reads it so that both time the same problems
 * Output: one JSON object per line on stdout, progress on stderr. GFLOP/s
 * counts 2*M*N*K; "best" is the fastest repetition, "median" the median.
 * Peak: every thread runs a loop of independent FMAs of the widest vector
 * the CPU has (AVX-512 or AVX2) at once, for a fixed time, measured per
 * thread count just before that thread count's GEMMs; the peak is the sum
 * over threads of each one's best chunk. */
#include <cblas.h>
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/ops.h"

typedef struct {
    const char *name;
    int ta, tb;
    int64_t M, N, K;
} shape;

/* bench-small at batch 32: fusion has 148 tokens per sample, vision 65. A
 * Linear(in, out) is Y (T, out) = X (T, in) W^T with W (out, in); its
 * backward is dW (out, in) = dY^T X and dX (T, in) = dY W. */
#define FUSION_T (32 * 148)
#define VISION_T (32 * 65)
static const shape shapes[] = {
    {"square256", 0, 0, 256, 256, 256},
    {"square512", 0, 0, 512, 512, 512},
    {"square1024", 0, 0, 1024, 1024, 1024},
    {"square2048", 0, 0, 2048, 2048, 2048},
    {"fusion.qkv.fwd", 0, 1, FUSION_T, 768, 256},
    {"fusion.out.fwd", 0, 1, FUSION_T, 256, 256},
    {"fusion.fc1.fwd", 0, 1, FUSION_T, 1024, 256},
    {"fusion.fc2.fwd", 0, 1, FUSION_T, 256, 1024},
    {"fusion.qkv.dW", 1, 0, 768, 256, FUSION_T},
    {"fusion.out.dW", 1, 0, 256, 256, FUSION_T},
    {"fusion.fc1.dW", 1, 0, 1024, 256, FUSION_T},
    {"fusion.fc2.dW", 1, 0, 256, 1024, FUSION_T},
    {"fusion.qkv.dX", 0, 0, FUSION_T, 256, 768},
    {"fusion.out.dX", 0, 0, FUSION_T, 256, 256},
    {"fusion.fc1.dX", 0, 0, FUSION_T, 256, 1024},
    {"fusion.fc2.dX", 0, 0, FUSION_T, 1024, 256},
    {"vision.qkv.fwd", 0, 1, VISION_T, 768, 256},
    {"vision.out.fwd", 0, 1, VISION_T, 256, 256},
    {"vision.fc1.fwd", 0, 1, VISION_T, 1024, 256},
    {"vision.fc2.fwd", 0, 1, VISION_T, 256, 1024},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

/* ------------------------------------------------------------- FMA peak */

#define PEAK_ITERS 20000L /* iterations per chunk: about 0.1-0.2 ms */

/* Each loop runs chunks of PEAK_ITERS iterations for `seconds` and returns
 * the best chunk's rate: on a shared machine the best is what the core can
 * do, the rest is time spent waiting for it. */

/* 12 independent chains: more than latency (4-5) x FMA ports (2) needs. */
__attribute__((target("avx2,fma"))) static double fma_loop_avx2(double seconds)
{
    __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    /* distinct starting values, or the compiler merges identical chains */
    __m256 a0 = _mm256_set1_ps(0), a1 = _mm256_set1_ps(1), a2 = _mm256_set1_ps(2),
           a3 = _mm256_set1_ps(3), a4 = _mm256_set1_ps(4), a5 = _mm256_set1_ps(5),
           a6 = _mm256_set1_ps(6), a7 = _mm256_set1_ps(7), a8 = _mm256_set1_ps(8),
           a9 = _mm256_set1_ps(9), a10 = _mm256_set1_ps(10), a11 = _mm256_set1_ps(11);
    double start = tm_time_s(), best = 0, t0 = start, t1;
    do {
        for (long i = 0; i < PEAK_ITERS; i++) {
            a0 = _mm256_fmadd_ps(a0, x, y);
            a1 = _mm256_fmadd_ps(a1, x, y);
            a2 = _mm256_fmadd_ps(a2, x, y);
            a3 = _mm256_fmadd_ps(a3, x, y);
            a4 = _mm256_fmadd_ps(a4, x, y);
            a5 = _mm256_fmadd_ps(a5, x, y);
            a6 = _mm256_fmadd_ps(a6, x, y);
            a7 = _mm256_fmadd_ps(a7, x, y);
            a8 = _mm256_fmadd_ps(a8, x, y);
            a9 = _mm256_fmadd_ps(a9, x, y);
            a10 = _mm256_fmadd_ps(a10, x, y);
            a11 = _mm256_fmadd_ps(a11, x, y);
        }
        t1 = tm_time_s();
        double rate = (double)PEAK_ITERS * 12 * 8 * 2 / (t1 - t0);
        if (rate > best) best = rate;
        t0 = t1;
    } while (t1 - start < seconds);
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    volatile float sink = _mm256_cvtss_f32(s);
    (void)sink;
    return best;
}

/* 24 chains: room for two 512-bit FMA ports of latency 4. */
__attribute__((target("avx512f"))) static double fma_loop_avx512(double seconds)
{
    __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    __m512 a[24];
    for (int j = 0; j < 24; j++)
        a[j] = _mm512_set1_ps((float)j);
    double start = tm_time_s(), best = 0, t0 = start, t1;
    do {
        for (long i = 0; i < PEAK_ITERS; i++) {
#pragma GCC unroll 24
            for (int j = 0; j < 24; j++)
                a[j] = _mm512_fmadd_ps(a[j], x, y);
        }
        t1 = tm_time_s();
        double rate = (double)PEAK_ITERS * 24 * 16 * 2 / (t1 - t0);
        if (rate > best) best = rate;
        t0 = t1;
    } while (t1 - start < seconds);
    __m512 s = a[0];
    for (int j = 1; j < 24; j++)
        s = _mm512_add_ps(s, a[j]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return best;
}

typedef struct {
    pthread_barrier_t *start;
    double seconds, flops_per_s;
} peak_arg;

static void *peak_thread(void *p)
{
    peak_arg *a = p;
    pthread_barrier_wait(a->start);
    a->flops_per_s =
        __builtin_cpu_supports("avx512f") ? fma_loop_avx512(a->seconds) : fma_loop_avx2(a->seconds);
    return NULL;
}

/* GFLOP/s of `threads` threads each running the FMA loop at once. */
static double fma_peak(int threads, double seconds)
{
    pthread_t tid[64];
    peak_arg args[64];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (int i = 0; i < threads; i++) {
        args[i] = (peak_arg){&start, seconds, 0};
        if (i > 0) pthread_create(&tid[i], NULL, peak_thread, &args[i]);
    }
    peak_thread(&args[0]);
    double total = args[0].flops_per_s;
    for (int i = 1; i < threads; i++) {
        pthread_join(tid[i], NULL);
        total += args[i].flops_per_s;
    }
    pthread_barrier_destroy(&start);
    return total / 1e9;
}

/* ---------------------------------------------------------------- GEMMs */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run_tm(const shape *s, const float *A, const float *B, float *C)
{
    tm_sgemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, s->ta ? s->M : s->K, B, s->tb ? s->K : s->N,
             0.0f, C, s->N);
}

static void run_blas(const shape *s, const float *A, const float *B, float *C)
{
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans,
                (int)s->M, (int)s->N, (int)s->K, 1.0f, A, (int)(s->ta ? s->M : s->K), B,
                (int)(s->tb ? s->K : s->N), 0.0f, C, (int)s->N);
}

static void bench_shape(const shape *s, int threads, double peak, const char *setup, int quick)
{
    size_t na = (size_t)(s->M * s->K), nb = (size_t)(s->K * s->N), nc = (size_t)(s->M * s->N);
    float *A = tm_alloc(na * sizeof(float)), *B = tm_alloc(nb * sizeof(float));
    float *C1 = tm_alloc(nc * sizeof(float)), *C2 = tm_alloc(nc * sizeof(float));
    tm_rng r = tm_rng_new(42, 0);
    tm_rng_fill_uniform(&r, A, (int64_t)na, -1.0f, 1.0f);
    tm_rng_fill_uniform(&r, B, (int64_t)nb, -1.0f, 1.0f);

    /* warm up both (page faults, thread start), then check they agree */
    run_tm(s, A, B, C1);
    run_blas(s, A, B, C2);
    double max_diff = 0;
    for (size_t i = 0; i < nc; i++) {
        double d = fabs((double)C1[i] - C2[i]);
        if (d > max_diff) max_diff = d;
    }

    double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
    double budget = quick ? 0.1 : 0.6; /* seconds per library */
    int min_reps = quick ? 2 : 5, max_reps = 200, reps = 0;
    double t_tm[200], t_blas[200], spent = 0;
    while (reps < max_reps && (reps < min_reps || spent < 2 * budget)) {
        double t0 = tm_time_s();
        run_tm(s, A, B, C1);
        double t1 = tm_time_s();
        run_blas(s, A, B, C2);
        double t2 = tm_time_s();
        t_tm[reps] = t1 - t0;
        t_blas[reps] = t2 - t1;
        spent += t2 - t0;
        reps++;
    }
    qsort(t_tm, (size_t)reps, sizeof(double), cmp_double);
    qsort(t_blas, (size_t)reps, sizeof(double), cmp_double);
    double tm_best = flops / t_tm[0] / 1e9, tm_med = flops / t_tm[reps / 2] / 1e9;
    double bl_best = flops / t_blas[0] / 1e9, bl_med = flops / t_blas[reps / 2] / 1e9;
    printf("{\"bench\":\"gemm\",\"openblas_setup\":\"%s\",\"openblas_core\":\"%s\","
           "\"shape\":\"%s\",\"trans_a\":%d,\"trans_b\":%d,\"M\":%lld,\"N\":%lld,\"K\":%lld,"
           "\"threads\":%d,\"trimodal_isa\":\"%s\",\"reps\":%d,"
           "\"trimodal_gflops\":%.1f,\"trimodal_gflops_median\":%.1f,"
           "\"openblas_gflops\":%.1f,\"openblas_gflops_median\":%.1f,\"peak_gflops\":%.1f,"
           "\"trimodal_frac_peak\":%.3f,\"openblas_frac_peak\":%.3f,"
           "\"trimodal_vs_openblas\":%.3f,\"max_abs_diff\":%.2e}\n",
           setup, openblas_get_corename(), s->name, s->ta, s->tb, (long long)s->M, (long long)s->N,
           (long long)s->K, threads, tm_isa_name(tm_cpu_isa()), reps, tm_best, tm_med, bl_best,
           bl_med, peak, tm_best / peak, bl_best / peak, tm_best / bl_best, max_diff);
    fflush(stdout);
    tm_free(A);
    tm_free(B);
    tm_free(C1);
    tm_free(C2);
}

int main(int argc, char **argv)
{
    const char *setup = "env";
    const char *thread_list = "1,2";
    const char *only = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--setup") && i + 1 < argc) {
            setup = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            thread_list = argv[++i];
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--shapes")) {
            for (int j = 0; j < NSHAPES; j++)
                printf("{\"shape\":\"%s\",\"trans_a\":%d,\"trans_b\":%d,\"M\":%lld,\"N\":%lld,"
                       "\"K\":%lld}\n",
                       shapes[j].name, shapes[j].ta, shapes[j].tb, (long long)shapes[j].M,
                       (long long)shapes[j].N, (long long)shapes[j].K);
            return 0;
        } else {
            fprintf(
                stderr,
                "usage: %s [--setup TAG] [--threads 1,2] [--quick] [--only SUBSTR] [--shapes]\n",
                argv[0]);
            return 2;
        }
    }
    fprintf(stderr, "bench_gemm: %s, OpenBLAS core %s, trimodal isa %s\n", openblas_get_config(),
            openblas_get_corename(), tm_isa_name(tm_cpu_isa()));

    for (const char *p = thread_list; *p;) {
        int threads = atoi(p);
        if (threads < 1 || threads > 64) break;
        if (tm_set_num_threads(threads) != TM_OK) {
            fprintf(stderr, "bench_gemm: %s\n", tm_last_error());
            return 1;
        }
        openblas_set_num_threads(threads);
        double peak = fma_peak(threads, quick ? 0.1 : 0.5);
        fprintf(stderr, "bench_gemm: %d thread(s), FMA peak %.1f GFLOP/s\n", threads, peak);
        for (int j = 0; j < NSHAPES; j++) {
            if (quick && j % 4 != 1) continue;
            if (only && !strstr(shapes[j].name, only)) continue;
            bench_shape(&shapes[j], threads, peak, setup, quick);
        }
        p = strchr(p, ',');
        if (!p) break;
        p++;
    }
    return 0;
}
