/* tm_attention_forward + tm_attention_backward at bench-small's fusion
 * shape: B=32, H=4, T=148, D=64, with the fusion's key padding mask (the
 * text tokens 1..32 past each sample's length are -inf). The PyTorch side
 * of the same problem is scripts/bench_attention_torch.py; run_attention.sh
 * runs both and prints the ratio.
 *
 * Usage: bench_attention [--threads 1,2] [--reps N] [--quick]
 * Output: one JSON object per line on stdout (one per thread count),
 * progress on stderr. A repetition is forward, zeroing dq/dk/dv (the
 * backward accumulates) and backward; "ms" is the median repetition,
 * "best_ms" the fastest, fwd_ms and bwd_ms the medians of the two halves. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/ops.h"

enum { B = 32, H = 4, T = 148, D = 64, TEXT_LEN = 32 };

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static float *alloc_floats(size_t n)
{
    float *p = tm_alloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_attention: out of memory\n");
        exit(1);
    }
    return p;
}

int main(int argc, char **argv)
{
    const char *threads = "1,2";
    int reps = 15;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = argv[++i];
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--quick")) {
            reps = 3;
        } else {
            fprintf(stderr, "usage: %s [--threads 1,2] [--reps N] [--quick]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 1000) reps = 15;

    const size_t n = (size_t)B * H * T * D;
    float *q = alloc_floats(n), *k = alloc_floats(n), *v = alloc_floats(n);
    float *dout = alloc_floats(n), *out = alloc_floats(n), *lse = alloc_floats((size_t)B * H * T);
    float *dq = alloc_floats(n), *dk = alloc_floats(n), *dv = alloc_floats(n);
    float *work = alloc_floats(tm_attention_work_floats(B, H, T, T, D));
    float *key_bias = alloc_floats((size_t)B * T); /* (B, T) */
    tm_rng rng = tm_rng_new(1234, 0);
    tm_rng_fill_normal(&rng, q, (int64_t)n, 0.0f, 1.0f);
    tm_rng_fill_normal(&rng, k, (int64_t)n, 0.0f, 1.0f);
    tm_rng_fill_normal(&rng, v, (int64_t)n, 0.0f, 1.0f);
    tm_rng_fill_normal(&rng, dout, (int64_t)n, 0.0f, 1.0f);
    /* Fusion tokens: [cls] + text (32) + vision (65) + audio (50); sample b
     * has 8..32 real text tokens. */
    for (int b = 0; b < B; b++) {
        int len = 8 + (b * 7) % (TEXT_LEN - 7);
        for (int j = 0; j < T; j++)
            key_bias[b * T + j] = (j > len && j <= TEXT_LEN) ? -INFINITY : 0.0f;
    }
    const float scale = 1.0f / sqrtf((float)D);

    double *t_all = malloc((size_t)reps * sizeof(double));
    double *t_fwd = malloc((size_t)reps * sizeof(double));
    double *t_bwd = malloc((size_t)reps * sizeof(double));
    if (!t_all || !t_fwd || !t_bwd) return 1;

    for (const char *p = threads; *p;) {
        int nt = atoi(p);
        if (nt >= 1 && tm_set_num_threads(nt) == TM_OK) {
            fprintf(stderr, "bench_attention: %d thread(s), %d reps\n", nt, reps);
            for (int r = -2; r < reps; r++) { /* two warm-up repetitions */
                double t0 = tm_time_s();
                tm_attention_forward(out, lse, q, k, v, key_bias, B, H, T, T, D, scale, 0);
                double t1 = tm_time_s();
                memset(dq, 0, n * sizeof *dq);
                memset(dk, 0, n * sizeof *dk);
                memset(dv, 0, n * sizeof *dv);
                tm_attention_backward(dq, dk, dv, work, dout, out, lse, q, k, v, key_bias, B, H,
                                      T, T, D, scale, 0);
                double t2 = tm_time_s();
                if (r < 0) continue;
                t_fwd[r] = 1e3 * (t1 - t0);
                t_bwd[r] = 1e3 * (t2 - t1);
                t_all[r] = 1e3 * (t2 - t0);
            }
            double best = t_all[0];
            for (int r = 1; r < reps; r++) best = t_all[r] < best ? t_all[r] : best;
            /* checksum so that a broken kernel shows in the figures */
            double cs = 0;
            for (size_t i = 0; i < n; i += 97) cs += out[i] + dq[i] + dk[i] + dv[i];
            printf("{\"bench\": \"attention\", \"impl\": \"trimodal\", \"B\": %d, \"H\": %d, "
                   "\"T\": %d, \"D\": %d, \"mask\": \"key_padding\", \"threads\": %d, "
                   "\"isa\": \"%s\", \"reps\": %d, \"ms\": %.3f, \"best_ms\": %.3f, "
                   "\"fwd_ms\": %.3f, \"bwd_ms\": %.3f, \"checksum\": %.6g}\n",
                   B, H, T, D, nt, tm_isa_name(tm_cpu_isa()), reps, median(t_all, reps), best,
                   median(t_fwd, reps), median(t_bwd, reps), cs);
            fflush(stdout);
        }
        while (*p && *p != ',') p++;
        if (*p == ',') p++;
    }

    free(t_all);
    free(t_fwd);
    free(t_bwd);
    float *bufs[] = {q, k, v, dout, out, lse, dq, dk, dv, work, key_bias};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) tm_free(bufs[i]);
    return 0;
}
