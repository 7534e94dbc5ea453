/* The server's metrics, rendered in Prometheus' text format (version
 * 0.0.4): request counts by endpoint and status code, request latency,
 * batch sizes and inference time histograms, queue depth and requests in
 * flight. Labels come from fixed tables, so no request can add a series. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "serve/serve_internal.h"

static const char *const ep_name[EP_COUNT] = {
    "/v1/embed", "/v1/classify", "/v1/caption", "/v1/search", "/healthz", "/metrics", "other"};
static const char *const kind_name[KIND_COUNT] = {"embed", "classify", "caption"};
static const int codes[MET_CODES] = {200, 400, 401, 404, 405, 413, 415, 500, 503, 504, 0};
static const double lat_le[MET_LAT_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25,  0.5,    1,     2.5,  5,     10,   30};
static const int batch_le[MET_BATCH_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

void met_init(metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
    m->start_time = tm_time_s();
}

void met_destroy(metrics *m)
{
    pthread_mutex_destroy(&m->lock);
}

static int lat_slot(double s)
{
    int i = 0;
    while (i < MET_LAT_BUCKETS && s > lat_le[i])
        i++;
    return i;
}

void met_request(metrics *m, int ep, int code, double seconds)
{
    int c = MET_CODES - 1; /* "other" codes */
    for (int i = 0; i < MET_CODES - 1; i++)
        if (codes[i] == code) c = i;
    if (ep < 0 || ep >= EP_COUNT) ep = EP_OTHER;
    pthread_mutex_lock(&m->lock);
    m->requests[ep][c]++;
    m->lat_bucket[ep][lat_slot(seconds)]++;
    m->lat_sum[ep] += seconds;
    m->lat_count[ep]++;
    pthread_mutex_unlock(&m->lock);
}

void met_batch(metrics *m, int kind, int size, double seconds)
{
    int b = 0;
    while (b < MET_BATCH_BUCKETS && size > batch_le[b])
        b++;
    pthread_mutex_lock(&m->lock);
    m->batch_bucket[kind][b]++;
    m->batch_sum[kind] += size;
    m->batch_count[kind]++;
    m->infer_bucket[kind][lat_slot(seconds)]++;
    m->infer_sum[kind] += seconds;
    m->infer_count[kind]++;
    pthread_mutex_unlock(&m->lock);
}

static void histogram(sbuf *b, const char *name, const char *label, const char *value,
                      const int64_t *bucket, int nb, const double *le_d, const int *le_i,
                      double sum, int64_t count)
{
    int64_t cum = 0;
    for (int i = 0; i < nb; i++) {
        cum += bucket[i];
        if (le_d)
            sb_printf(b, "%s_bucket{%s=\"%s\",le=\"%g\"} %lld\n", name, label, value, le_d[i],
                      (long long)cum);
        else
            sb_printf(b, "%s_bucket{%s=\"%s\",le=\"%d\"} %lld\n", name, label, value, le_i[i],
                      (long long)cum);
    }
    cum += bucket[nb];
    sb_printf(b, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %lld\n", name, label, value, (long long)cum);
    sb_printf(b, "%s_sum{%s=\"%s\"} %.6f\n", name, label, value, sum);
    sb_printf(b, "%s_count{%s=\"%s\"} %lld\n", name, label, value, (long long)count);
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (!f) return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    fclose(f);
    return rss * sysconf(_SC_PAGESIZE);
}

void met_render(metrics *m, sbuf *b, const char *model, int queue_depth, int queue_cap,
                int inflight, int draining)
{
    pthread_mutex_lock(&m->lock);
    sb_puts(b, "# HELP trimodal_requests_total Requests answered, by endpoint and HTTP status.\n"
               "# TYPE trimodal_requests_total counter\n");
    for (int e = 0; e < EP_COUNT; e++)
        for (int c = 0; c < MET_CODES; c++) {
            if (!m->requests[e][c] && c) continue; /* keep every endpoint's 200 line */
            if (codes[c])
                sb_printf(b, "trimodal_requests_total{endpoint=\"%s\",code=\"%d\"} %lld\n",
                          ep_name[e], codes[c], (long long)m->requests[e][c]);
            else
                sb_printf(b, "trimodal_requests_total{endpoint=\"%s\",code=\"other\"} %lld\n",
                          ep_name[e], (long long)m->requests[e][c]);
        }
    sb_puts(b, "# HELP trimodal_request_duration_seconds Time from a request's arrival to its "
               "answer.\n# TYPE trimodal_request_duration_seconds histogram\n");
    for (int e = 0; e < EP_COUNT; e++)
        histogram(b, "trimodal_request_duration_seconds", "endpoint", ep_name[e], m->lat_bucket[e],
                  MET_LAT_BUCKETS, lat_le, NULL, m->lat_sum[e], m->lat_count[e]);
    sb_puts(b, "# HELP trimodal_batch_size Examples per forward pass.\n"
               "# TYPE trimodal_batch_size histogram\n");
    for (int k = 0; k < KIND_COUNT; k++)
        histogram(b, "trimodal_batch_size", "kind", kind_name[k], m->batch_bucket[k],
                  MET_BATCH_BUCKETS, NULL, batch_le, m->batch_sum[k], m->batch_count[k]);
    sb_puts(b, "# HELP trimodal_inference_duration_seconds Time of one batched forward pass.\n"
               "# TYPE trimodal_inference_duration_seconds histogram\n");
    for (int k = 0; k < KIND_COUNT; k++)
        histogram(b, "trimodal_inference_duration_seconds", "kind", kind_name[k],
                  m->infer_bucket[k], MET_LAT_BUCKETS, lat_le, NULL, m->infer_sum[k],
                  m->infer_count[k]);
    double up = tm_time_s() - m->start_time;
    pthread_mutex_unlock(&m->lock);
    sb_printf(b,
              "# HELP trimodal_queue_depth Requests waiting for the model.\n"
              "# TYPE trimodal_queue_depth gauge\ntrimodal_queue_depth %d\n"
              "# HELP trimodal_queue_capacity Queue size beyond which requests get 503.\n"
              "# TYPE trimodal_queue_capacity gauge\ntrimodal_queue_capacity %d\n"
              "# HELP trimodal_inflight_requests Requests being handled.\n"
              "# TYPE trimodal_inflight_requests gauge\ntrimodal_inflight_requests %d\n"
              "# HELP trimodal_draining 1 while the server shuts down.\n"
              "# TYPE trimodal_draining gauge\ntrimodal_draining %d\n"
              "# HELP trimodal_uptime_seconds Seconds since the server started.\n"
              "# TYPE trimodal_uptime_seconds gauge\ntrimodal_uptime_seconds %.3f\n"
              "# HELP process_resident_memory_bytes Resident memory of the server.\n"
              "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %ld\n",
              queue_depth, queue_cap, inflight, draining, up, rss_bytes());
    sb_puts(b, "# HELP trimodal_model_info The model being served.\n"
               "# TYPE trimodal_model_info gauge\ntrimodal_model_info{model=");
    /* a label value: escape backslash, quote and newline */
    sb_puts(b, "\"");
    for (const char *c = model; *c; c++) {
        if (*c == '\\' || *c == '"')
            sb_printf(b, "\\%c", *c);
        else if (*c == '\n')
            sb_puts(b, "\\n");
        else
            sb_put(b, c, 1);
    }
    sb_puts(b, "\"} 1\n");
}
