/* The search index's types side by side: build time, single-query latency
 * (p50, p95) and recall@10 against exact f32 search, on synthetic
 * clustered unit vectors (the embedding size of configs/bench-small.json,
 * 128, by default; sizes 10^4, 10^5, 10^6).
 *
 * Usage: bench_index [--sizes N,N,...] [--dim D] [--queries Q]
 *                    [--types exact,exact-int8,ivf,hnsw] [--quick]
 *                    [--hnsw-m M] [--ef-construction C,C,...]
 *                    [--ef-search E,E,...] [--nprobe P,P,...]
 * --quick: sizes 10000,30000 and 50 queries (a CI-sized run).
 * --hnsw-m: HNSW's links a node (default 32). --ef-construction: one hnsw
 * build per value, in order (default: the library's 40).
 * --ef-search / --nprobe: query-time settings to sweep on each built hnsw
 * / ivf index (tm_index_set_search), one line each, in order (repeat a
 * value to measure it twice); default: the index's own.
 * stdout: one JSON object per size, type and setting: {"bench":"index",
 * "type", "items", "dim", "data":"synthetic-clustered", "build_s",
 * "query_ms_p50", "query_ms_p95", "recall_at_10", "recall_at_10_score",
 * "nlist", "nprobe", "hnsw_m", "ef_search", "ef_construction", "threads",
 * "peak_rss_mb"}. recall_at_10: the share of the exact index's 10 best
 * items found; recall_at_10_score: the share of returned items scoring at
 * least the exact 10th best score minus 1e-5 (the same unless scores tie).
 * Memory: the vectors (items x dim floats) plus one index at a time. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "trimodal/serve.h"

#define K 10
#define CLUSTERS 1000

static uint64_t rng;
static double rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
static float gauss(void)
{
    double u = rnd() + 1e-12, v = rnd();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}
static void unit(float *x, int dim)
{
    double s = 0;
    for (int d = 0; d < dim; d++)
        s += (double)x[d] * x[d];
    float inv = (float)(1.0 / sqrt(s));
    for (int d = 0; d < dim; d++)
        x[d] *= inv;
}

/* n unit vectors, each a random centre of CLUSTERS plus noise: clusters
 * overlap enough that the 10 nearest neighbours are not trivial. */
static void clustered(float *x, int64_t n, int dim, uint64_t seed)
{
    rng = seed * 0x9E3779B97F4A7C15ull + 7;
    float *c = malloc((size_t)CLUSTERS * (size_t)dim * sizeof *c);
    for (int64_t i = 0; i < (int64_t)CLUSTERS * dim; i++)
        c[i] = gauss();
    for (int j = 0; j < CLUSTERS; j++)
        unit(c + (int64_t)j * dim, dim);
    float sd = 0.6f / sqrtf((float)dim);
    for (int64_t i = 0; i < n; i++) {
        const float *cc = c + (int64_t)(rnd() * CLUSTERS) * dim;
        for (int d = 0; d < dim; d++)
            x[i * dim + d] = cc[d] + sd * gauss();
        unit(x + i * dim, dim);
    }
    free(c);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double peak_rss_mb(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss / 1024.0;
}

int main(int argc, char **argv)
{
    const char *sizes = "10000,100000,1000000", *types = "exact,exact-int8,ivf,hnsw";
    const char *ef_list = "", *nprobe_list = "", *efc_list = "0";
    int dim = 128, nq = 200, hnsw_m = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            sizes = "10000,30000";
            nq = 50;
        } else if (i + 1 < argc && !strcmp(argv[i], "--sizes"))
            sizes = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--types"))
            types = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--dim"))
            dim = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--queries"))
            nq = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--hnsw-m"))
            hnsw_m = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--ef-search"))
            ef_list = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--ef-construction"))
            efc_list = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--nprobe"))
            nprobe_list = argv[++i];
        else {
            fprintf(stderr, "usage: bench_index [--sizes N,N] [--dim D] [--queries Q] "
                            "[--types exact,exact-int8,ivf,hnsw] [--quick] [--hnsw-m M] "
                            "[--ef-construction C,C] [--ef-search E,E] [--nprobe P,P]\n");
            return 2;
        }
    }
    if (dim < 1 || dim > 4096 || nq < 1 || nq > 100000 || hnsw_m < 0 || hnsw_m > 256) {
        fprintf(stderr, "bench_index: --dim 1..4096, --queries 1..100000, --hnsw-m 2..256\n");
        return 2;
    }
    char sizes_buf[256];
    snprintf(sizes_buf, sizeof sizes_buf, "%s", sizes);
    int rc = 0;
    for (char *sv = strtok(sizes_buf, ","); sv; sv = strtok(NULL, ",")) {
        int64_t n = atoll(sv);
        if (n < K) continue;
        float *x = malloc((size_t)n * (size_t)dim * sizeof *x);
        float *q = malloc((size_t)nq * (size_t)dim * sizeof *q);
        int64_t *truth = malloc((size_t)nq * K * sizeof *truth);
        float *truth10 = malloc((size_t)nq * sizeof *truth10); /* exact 10th best score */
        double *lat = malloc((size_t)nq * sizeof *lat);
        if (!x || !q || !truth || !truth10 || !lat) {
            fprintf(stderr, "bench_index: out of memory for %lld items\n", (long long)n);
            return 1;
        }
        fprintf(stderr, "bench_index: %lld synthetic vectors of %d\n", (long long)n, dim);
        clustered(x, n, dim, 1);
        /* queries: random rows moved a little (their cluster is populated) */
        rng = 99;
        for (int i = 0; i < nq; i++) {
            const float *r = x + (int64_t)(rnd() * (double)n) * dim;
            for (int d = 0; d < dim; d++)
                q[i * dim + d] = r[d] + 0.3f / sqrtf((float)dim) * gauss();
            unit(q + (int64_t)i * dim, dim);
        }
        char types_buf[128];
        snprintf(types_buf, sizeof types_buf, "exact,%s", types); /* exact first: the truth */
        int did_exact = 0;
        for (char *save = NULL, *tv = strtok_r(types_buf, ",", &save); tv;
             tv = strtok_r(NULL, ",", &save)) {
            tm_index_type t;
            if (tm_index_type_from_name(tv, &t)) {
                fprintf(stderr, "bench_index: %s\n", tm_last_error());
                return 2;
            }
            if (t == TM_INDEX_EXACT && did_exact++) continue;
            if (!tm_index_type_available(t)) {
                fprintf(stderr, "bench_index: %s skipped (built without FAISS)\n", tv);
                continue;
            }
            /* hnsw: one build per ef_construction; other types: one build */
            char efcs[256];
            snprintf(efcs, sizeof efcs, "%s", t == TM_INDEX_HNSW ? efc_list : "0");
            for (char *save3 = NULL, *cv = strtok_r(efcs, ",", &save3); cv;
                 cv = strtok_r(NULL, ",", &save3)) {
                tm_index_build_params p = tm_index_build_default_params();
                p.type = t;
                if (t == TM_INDEX_HNSW && hnsw_m) p.hnsw_m = hnsw_m;
                if (t == TM_INDEX_HNSW) p.ef_construction = atoi(cv);
                tm_index *idx = NULL;
                double t0 = tm_time_s();
                if (tm_index_from_vectors(&idx, x, n, dim, TM_MODALITY_IMAGE, &p)) {
                    fprintf(stderr, "bench_index: %s at %lld: %s\n", tv, (long long)n,
                            tm_last_error());
                    rc = 1;
                    continue;
                }
                double build_s = tm_time_s() - t0;
                /* the query-time settings to try on this index: 0 = its own */
                char sweep[256];
                snprintf(sweep, sizeof sweep, "%s",
                         t == TM_INDEX_HNSW  ? ef_list
                         : t == TM_INDEX_IVF ? nprobe_list
                                             : "");
                if (!sweep[0]) snprintf(sweep, sizeof sweep, "0");
                for (char *save2 = NULL, *sv2 = strtok_r(sweep, ",", &save2); sv2;
                     sv2 = strtok_r(NULL, ",", &save2)) {
                    int setting = atoi(sv2);
                    if (setting > 0 && tm_index_set_search(idx, t == TM_INDEX_IVF ? setting : 0,
                                                           t == TM_INDEX_HNSW ? setting : 0)) {
                        fprintf(stderr, "bench_index: %s\n", tm_last_error());
                        return 2;
                    }
                    int64_t found = 0, found_score = 0;
                    for (int i = 0; i < nq; i++) {
                        tm_search_hit h[K];
                        int nh = 0;
                        double a = tm_time_s();
                        if (tm_index_search(idx, q + (int64_t)i * dim, 0, K, h, &nh)) {
                            fprintf(stderr, "bench_index: %s\n", tm_last_error());
                            return 1;
                        }
                        lat[i] = (tm_time_s() - a) * 1e3;
                        if (t == TM_INDEX_EXACT) truth10[i] = nh > 0 ? h[nh - 1].score : -2.0f;
                        for (int j = 0; j < nh; j++) {
                            if (h[j].score >= truth10[i] - 1e-5f) found_score++;
                            if (t == TM_INDEX_EXACT) {
                                truth[i * K + j] = h[j].item;
                                found++;
                                continue;
                            }
                            for (int r = 0; r < K; r++)
                                if (truth[i * K + r] == h[j].item) {
                                    found++;
                                    break;
                                }
                        }
                    }
                    qsort(lat, (size_t)nq, sizeof *lat, cmp_double);
                    tm_index_build_params ip = tm_index_params(idx);
                    printf("{\"bench\":\"index\",\"type\":\"%s\",\"items\":%lld,\"dim\":%d,"
                           "\"data\":\"synthetic-clustered\",\"queries\":%d,\"build_s\":%.3f,"
                           "\"query_ms_p50\":%.4f,\"query_ms_p95\":%.4f,\"recall_at_10\":%.4f,"
                           "\"recall_at_10_score\":%.4f,"
                           "\"nlist\":%d,\"nprobe\":%d,\"hnsw_m\":%d,\"ef_search\":%d,"
                           "\"ef_construction\":%d,\"threads\":%d,\"peak_rss_mb\":%.0f}\n",
                           tv, (long long)n, dim, nq, build_s, lat[nq / 2],
                           lat[(int)(0.95 * (nq - 1))], (double)found / ((double)nq * K),
                           (double)found_score / ((double)nq * K), ip.nlist, ip.nprobe, ip.hnsw_m,
                           ip.ef_search, ip.ef_construction, tm_get_num_threads(), peak_rss_mb());
                    fflush(stdout);
                }
                tm_index_free(idx);
            }
        }
        free(x);
        free(q);
        free(truth);
        free(truth10);
        free(lat);
    }
    return rc;
}
