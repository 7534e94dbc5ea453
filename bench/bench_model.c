/*
 * Whole-model timings for bench/run_model.sh: a config's training step at
 * batch 32 (forward, backward, AdamW; the median of each part too), its
 * classification forward at batch 32 and at batch 1, on random inputs and
 * fresh weights, as `trimodal bench` times them.
 *
 * Usage: bench_model [--config configs/bench-small.json] [--threads 2]
 *                    [--reps N] [--cases train32,infer32,infer1]
 * stdout: one JSON object per case:
 *   {"bench":"train","case":"train32","batch":32,"threads":2,"dtype":"f32",
 *    "params":...,"step_ms_median":...,"step_ms_p95":...,"fwd_ms":...,
 *    "bwd_ms":...,"opt_ms":...,"samples_per_s":...,"peak_rss_mb":...}
 *   {"bench":"infer","case":"infer1",...,"latency_ms_p50":...,"latency_ms_p95":...,
 *    "latency_ms_p99":...,"samples_per_s":...,"peak_rss_mb":...}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "trimodal/model.h"
#include "trimodal/optim.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    double k = (n - 1) * q;
    int lo = (int)k, hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (k - lo);
}

static void fill(tm_model_graph *g, const tm_model_info *in)
{
    tm_model_inputs x = tm_model_graph_inputs(g);
    int64_t B = tm_model_graph_batch(g);
    tm_rng r = tm_rng_new(1, 0);
    for (int64_t b = 0; x.tokens && b < B; b++) {
        int64_t T = in->text_tokens, real = T - (b * 5) % (T / 2 + 1);
        for (int64_t t = 0; t < T; t++)
            x.tokens[b * T + t] =
                t < real ? (int32_t)(1 + tm_rng_u32(&r) % (uint32_t)(in->vocab_size - 1)) : in->pad_id;
    }
    if (x.image)
        tm_rng_fill_normal(&r, x.image, B * in->image_channels * in->image_h * in->image_w, 0, 1);
    if (x.mel) tm_rng_fill_normal(&r, x.mel, B * in->n_mels * in->n_frames, 0, 1);
    for (int64_t b = 0; x.labels && b < B; b++)
        x.labels[b] = (int32_t)(tm_rng_u32(&r) % (uint32_t)in->num_classes);
}

static double rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static int run(tm_model *m, const char *cas, int64_t B, int train, int reps)
{
    tm_model_info in = tm_model_get_info(m);
    tm_model_graph *g = NULL;
    tm_optim *opt = NULL;
    if (tm_model_graph_new(&g, m, B, train ? TM_MODEL_TRAIN : TM_MODEL_CLASSIFY)) return 1;
    fill(g, &in);
    size_t n = tm_model_trainable_count(m);
    if (train) {
        tm_optim_params p = tm_optim_default_params(TM_OPTIM_ADAMW);
        p.lr = 1e-3f;
        p.weight_decay = 0.01f;
        if (tm_optim_new(&opt, p, n)) return 1;
    }
    double *tot = calloc((size_t)reps, sizeof(double)), *fw = calloc((size_t)reps, sizeof(double));
    double *bw = calloc((size_t)reps, sizeof(double)), *op = calloc((size_t)reps, sizeof(double));
    int warm = 2, rc = 1;
    for (int i = 0; i < warm + reps; i++) {
        double t0 = tm_time_s();
        if (tm_model_graph_forward(g)) goto done;
        double t1 = tm_time_s();
        if (train && tm_model_graph_backward(g)) goto done;
        double t2 = tm_time_s();
        if (train && tm_optim_step(opt, tm_model_params(m, NULL), tm_model_grads(m, NULL),
                                   TM_OPTIM_LR_DEFAULT))
            goto done;
        double t3 = tm_time_s();
        if (i >= warm) {
            int k = i - warm;
            tot[k] = (t3 - t0) * 1e3, fw[k] = (t1 - t0) * 1e3, bw[k] = (t2 - t1) * 1e3,
            op[k] = (t3 - t2) * 1e3;
        }
    }
    printf("{\"bench\":\"%s\",\"case\":\"%s\",\"batch\":%lld,\"threads\":%d,\"dtype\":\"f32\","
           "\"params\":%zu,",
           train ? "train" : "infer", cas, (long long)B, tm_get_num_threads(), n);
    double med = pct(tot, reps, 0.5);
    if (train)
        printf("\"step_ms_median\":%.3f,\"step_ms_p95\":%.3f,\"fwd_ms\":%.3f,\"bwd_ms\":%.3f,"
               "\"opt_ms\":%.3f,",
               med, pct(tot, reps, 0.95), pct(fw, reps, 0.5), pct(bw, reps, 0.5),
               pct(op, reps, 0.5));
    else
        printf("\"latency_ms_p50\":%.3f,\"latency_ms_p95\":%.3f,\"latency_ms_p99\":%.3f,", med,
               pct(tot, reps, 0.95), pct(tot, reps, 0.99));
    printf("\"samples_per_s\":%.2f,\"peak_rss_mb\":%.1f,\"reps\":%d}\n", (double)B * 1e3 / med,
           rss_mb(), reps);
    fflush(stdout);
    rc = 0;
done:
    free(tot), free(fw), free(bw), free(op);
    tm_optim_free(opt);
    tm_model_graph_free(g);
    return rc;
}

int main(int argc, char **argv)
{
    const char *config = "configs/bench-small.json", *cases = "train32,infer32,infer1";
    int threads = 2, reps = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--config")) config = argv[i + 1];
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--cases")) cases = argv[i + 1];
        else {
            fprintf(stderr, "bench_model: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    tm_model *m = NULL;
    if (tm_set_num_threads(threads) || tm_model_new_from_config(&m, config) ||
        tm_model_init_weights(m, 0)) {
        fprintf(stderr, "bench_model: %s\n", tm_last_error());
        return 1;
    }
    int rc = 0;
    if (strstr(cases, "train32")) rc |= run(m, "train32", 32, 1, reps ? reps : 6);
    if (strstr(cases, "infer32")) rc |= run(m, "infer32", 32, 0, reps ? reps : 6);
    if (strstr(cases, "infer1")) rc |= run(m, "infer1", 1, 0, reps ? reps * 5 : 40);
    if (rc) fprintf(stderr, "bench_model: %s\n", tm_last_error());
    tm_model_free(m);
    return rc;
}
