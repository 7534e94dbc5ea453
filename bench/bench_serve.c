/* Load test of `trimodal serve` (and of PyTorch's twin,
 * scripts/bench_torch_serve.py) on loopback: keep-alive clients at each
 * concurrency level post the same classify request (a text, a PNG and a
 * WAV, base64 in JSON) until a request count or a time bound is reached,
 * and one JSON line per level and server reports latency percentiles,
 * throughput and the server's peak RSS (VmHWM of its pid).
 * bench/run_serve.sh starts the servers and runs this.
 *
 *   bench_serve --target LABEL:DTYPE:PORT[:PID] [--target ...]
 *               [--endpoint /v1/classify] [--levels 1,8,64]
 *               [--requests 200,400,1000] [--seconds 20] [--rounds 1]
 *               [--warmup 8] [--model NAME]
 *   bench_serve --port P [--server-pid PID] [--dtype D] ...   (one server,
 *               labelled "trimodal")
 *
 * Several targets are measured interleaved: in each round, at each level,
 * every target in turn (so all see the same machine load), and at the end
 * a table on stderr puts them side by side with the ratios of the
 * "trimodal" rows to the "torch" rows of the same dtype, level and round.
 */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tests/serve/http_client.h"
#include "trimodal/core.h"
#include "trimodal/io.h"
#include "trimodal/vision.h"

#define MAX_LEVELS 8

typedef struct {
    int port;
    const char *path;
    const char *body;
    size_t body_len;
    atomic_long next; /* requests handed out */
    long limit;
    double deadline;
    /* per thread results */
    double *lat;
    long n_lat;
    long errors;
} level_ctx;

typedef struct {
    level_ctx *L;
    double *lat;
    long n, cap;
    long errors;
} worker;

static void *run_worker(void *v)
{
    worker *w = v;
    level_ctx *L = w->L;
    int fd = hc_connect(L->port);
    for (;;) {
        if (atomic_fetch_add(&L->next, 1) >= L->limit || hc_now() >= L->deadline) break;
        if (fd < 0 && (fd = hc_connect(L->port)) < 0) {
            w->errors++;
            continue;
        }
        hc_response r;
        double t0 = hc_now();
        int rc = hc_request(fd, "POST", L->path, "Content-Type: application/json\r\n", L->body,
                            L->body_len, &r, 60);
        double dt = hc_now() - t0;
        if (rc || r.status != 200) {
            w->errors++;
            if (w->errors <= 3)
                fprintf(stderr, "bench_serve: request failed: status %d %.200s\n", r.status,
                        r.body ? r.body : "");
        } else if (w->n < w->cap) {
            w->lat[w->n++] = dt;
        }
        if (rc || r.closed) {
            close(fd);
            fd = -1;
        }
        hc_response_free(&r);
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, long n, double p)
{
    if (!n) return NAN;
    double pos = p / 100.0 * (double)(n - 1);
    long i = (long)pos;
    double f = pos - (double)i;
    return i + 1 < n ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

static double peak_rss_mb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    double kb = NAN;
    if (!f) return kb;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atof(line + 6);
    fclose(f);
    return kb / 1024.0;
}

/* CPU seconds (user + system) the process has used so far; NAN when
 * unknown. Unlike latency, this does not grow when other processes load the
 * machine, so it measures the server's own cost per request. */
static double cpu_seconds(int pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return NAN;
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
     */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double load_average(void)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double v = NAN;
    if (f) {
        if (fscanf(f, "%lf", &v) != 1) v = NAN;
        fclose(f);
    }
    return v;
}

/* A request body: a text, a 48 x 40 RGB PNG and a 1 s 16 kHz WAV. */
static char *make_body(size_t *len)
{
    char png_path[] = "/tmp/bench_serve_XXXXXX";
    int fd = mkstemp(png_path);
    if (fd < 0) return NULL;
    close(fd);
    tm_image *img = NULL;
    if (tm_image_new(&img, 48, 40, 3)) return NULL;
    for (int i = 0; i < 48 * 40 * 3; i++)
        img->data[i] = (uint8_t)((i * 37) ^ (i >> 5));
    char *png = NULL;
    size_t png_len = 0;
    tm_status st = tm_image_save_png(img, png_path);
    tm_image_free(img);
    if (!st) st = tm_read_file(png_path, 1 << 24, &png, &png_len);
    unlink(png_path);
    if (st) return NULL;
    enum { RATE = 16000, N = 16000 };
    unsigned char *wav = malloc(44 + 2 * N);
    uint32_t v32;
    uint16_t v16;
    memcpy(wav, "RIFF", 4);
    v32 = 36 + 2 * N, memcpy(wav + 4, &v32, 4);
    memcpy(wav + 8, "WAVEfmt ", 8);
    v32 = 16, memcpy(wav + 16, &v32, 4);
    v16 = 1, memcpy(wav + 20, &v16, 2);
    v16 = 1, memcpy(wav + 22, &v16, 2);
    v32 = RATE, memcpy(wav + 24, &v32, 4);
    v32 = 2 * RATE, memcpy(wav + 28, &v32, 4);
    v16 = 2, memcpy(wav + 32, &v16, 2);
    v16 = 16, memcpy(wav + 34, &v16, 2);
    memcpy(wav + 36, "data", 4);
    v32 = 2 * N, memcpy(wav + 40, &v32, 4);
    for (int i = 0; i < N; i++) {
        int16_t s = (int16_t)(8000 * sin(2 * M_PI * 440.0 * i / RATE) +
                              2000 * sin(2 * M_PI * 2900.0 * i / RATE));
        memcpy(wav + 44 + 2 * i, &s, 2);
    }
    char *b_png = hc_base64(png, png_len), *b_wav = hc_base64(wav, 44 + 2 * N);
    tm_free(png);
    free(wav);
    size_t n = strlen(b_png) + strlen(b_wav) + 200;
    char *body = malloc(n);
    *len = (size_t)snprintf(body, n,
                            "{\"text\": \"a red sneaker with white laces\", \"image\": \"%s\", "
                            "\"audio\": \"%s\"}",
                            b_png, b_wav);
    free(b_png);
    free(b_wav);
    return body;
}

static int parse_list(const char *s, long *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1) return 0;
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return 0;
    }
    return n;
}

#define MAX_TARGETS 8
#define MAX_ROWS 256

typedef struct {
    char label[32], dtype[16];
    int port, pid;
} target;

typedef struct {
    int round, target, concurrency;
    long n, errors;
    double p50, p95, p99, rps, rss, cpu_ms, load;
} row;

static void usage(void)
{
    fprintf(stderr, "usage: bench_serve --target LABEL:DTYPE:PORT[:PID] [--target ...] "
                    "[--levels 1,8,64] [--requests 200,400,1000] [--seconds S] [--rounds R] "
                    "[--warmup N] [--endpoint PATH] [--model NAME]\n"
                    "       bench_serve --port P [--server-pid PID] [--dtype D] [same options]\n");
}

/* "LABEL:DTYPE:PORT[:PID]" */
static int parse_target(const char *s, target *t)
{
    memset(t, 0, sizeof *t);
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL, *a = strtok_r(buf, ":", &save), *b = strtok_r(NULL, ":", &save),
         *c = strtok_r(NULL, ":", &save), *d = strtok_r(NULL, ":", &save);
    if (!a || !b || !c || strlen(a) >= sizeof t->label || strlen(b) >= sizeof t->dtype) return 0;
    snprintf(t->label, sizeof t->label, "%s", a);
    snprintf(t->dtype, sizeof t->dtype, "%s", b);
    t->port = atoi(c);
    t->pid = d ? atoi(d) : 0;
    return t->port > 0 && t->port < 65536;
}

static void fmt_num(char *out, size_t n, const char *f, double v)
{
    if (isfinite(v))
        snprintf(out, n, f, v);
    else
        snprintf(out, n, "null");
}

/* One level against one target: a JSON line on stdout, the figures in *r. */
static void run_level(const target *t, const char *path, const char *model, const char *body,
                      size_t body_len, int c, long limit, double seconds, int round, row *r)
{
    level_ctx L = {t->port, path, body, body_len, 0, limit, 0, NULL, 0, 0};
    worker *ws = calloc((size_t)c, sizeof *ws);
    pthread_t *th = calloc((size_t)c, sizeof *th);
    double t0 = hc_now(), cpu0 = t->pid ? cpu_seconds(t->pid) : NAN;
    L.deadline = t0 + seconds;
    for (int i = 0; i < c; i++) {
        ws[i] = (worker){&L, calloc((size_t)limit, sizeof(double)), 0, limit, 0};
        pthread_create(&th[i], NULL, run_worker, &ws[i]);
    }
    long n = 0, errors = 0;
    for (int i = 0; i < c; i++)
        pthread_join(th[i], NULL);
    double wall = hc_now() - t0;
    double cpu = (t->pid ? cpu_seconds(t->pid) : NAN) - cpu0;
    double *all = calloc((size_t)limit + 1, sizeof(double));
    for (int i = 0; i < c; i++) {
        memcpy(all + n, ws[i].lat, (size_t)ws[i].n * sizeof(double));
        n += ws[i].n;
        errors += ws[i].errors;
        free(ws[i].lat);
    }
    qsort(all, (size_t)n, sizeof *all, cmp_double);
    *r = (row){round, 0, c, n, errors, NAN, NAN, NAN, n / wall, NAN, NAN, load_average()};
    if (n) {
        r->p50 = 1e3 * pct(all, n, 50);
        r->p95 = 1e3 * pct(all, n, 95);
        r->p99 = 1e3 * pct(all, n, 99);
        if (isfinite(cpu)) r->cpu_ms = 1e3 * cpu / (double)n;
    }
    r->rss = t->pid ? peak_rss_mb(t->pid) : NAN;
    char p50[32], p95[32], p99[32], rss[32], cpu_ms[32], load[32];
    fmt_num(p50, sizeof p50, "%.2f", r->p50);
    fmt_num(p95, sizeof p95, "%.2f", r->p95);
    fmt_num(p99, sizeof p99, "%.2f", r->p99);
    fmt_num(rss, sizeof rss, "%.1f", r->rss);
    fmt_num(cpu_ms, sizeof cpu_ms, "%.2f", r->cpu_ms);
    fmt_num(load, sizeof load, "%.2f", r->load);
    printf("{\"bench\":\"serve\",\"server\":\"%s\",\"model\":\"%s\",\"endpoint\":\"%s\","
           "\"dtype\":\"%s\",\"round\":%d,\"concurrency\":%d,\"requests\":%ld,\"errors\":%ld,"
           "\"latency_ms_p50\":%s,\"latency_ms_p95\":%s,\"latency_ms_p99\":%s,"
           "\"req_per_s\":%.1f,\"seconds\":%.2f,\"server_peak_rss_mb\":%s,"
           "\"server_cpu_ms_per_req\":%s,\"loadavg_1m\":%s}\n",
           t->label, model, path, t->dtype, round, c, n, errors, p50, p95, p99, r->rps, wall, rss,
           cpu_ms, load);
    fflush(stdout);
    free(all);
    free(ws);
    free(th);
}

/* Waits (at most max_s) until every target process is idle: under 5% of
 * a core over 0.3 s. A server still working through the queue of the last
 * level would otherwise take CPU from the next one measured. */
static void quiesce(const target *ts, int n, double max_s)
{
    double end = hc_now() + max_s;
    while (hc_now() < end) {
        double before[MAX_TARGETS], t0 = hc_now();
        for (int i = 0; i < n; i++)
            before[i] = ts[i].pid ? cpu_seconds(ts[i].pid) : NAN;
        usleep(300000);
        double dt = hc_now() - t0, most = 0;
        for (int i = 0; i < n; i++) {
            double u = ts[i].pid ? (cpu_seconds(ts[i].pid) - before[i]) / dt : 0;
            if (isfinite(u) && u > most) most = u;
        }
        if (most < 0.05) return;
    }
    fprintf(stderr, "bench_serve: a server was still busy after %.0f s\n", max_s);
}

static void print_table(const target *ts, const row *rows, int n_rows)
{
    fprintf(stderr, "\n%-9s %-5s %5s %3s %6s %9s %9s %9s %8s %8s %8s %5s\n", "server", "dtype",
            "round", "c", "n", "p50 ms", "p95 ms", "p99 ms", "req/s", "RSS MB", "cpu ms", "load");
    for (int i = 0; i < n_rows; i++) {
        const row *r = &rows[i];
        const target *t = &ts[r->target];
        fprintf(stderr, "%-9s %-5s %5d %3d %6ld %9.2f %9.2f %9.2f %8.1f %8.1f %8.2f %5.2f%s\n",
                t->label, t->dtype, r->round, r->concurrency, r->n, r->p50, r->p95, r->p99, r->rps,
                r->rss, r->cpu_ms, r->load, r->errors ? "  (errors)" : "");
    }
    int header = 0;
    for (int i = 0; i < n_rows; i++) {
        const row *a = &rows[i];
        if (strcmp(ts[a->target].label, "trimodal")) continue;
        for (int j = 0; j < n_rows; j++) {
            const row *b = &rows[j];
            if (strcmp(ts[b->target].label, "torch") || b->round != a->round ||
                b->concurrency != a->concurrency ||
                strcmp(ts[b->target].dtype, ts[a->target].dtype))
                continue;
            if (!header++)
                fprintf(stderr,
                        "\nratios trimodal / torch (latency and RSS: below 1 is better; "
                        "req/s: above 1 is better)\n%-5s %5s %3s %7s %7s %7s %7s %7s\n",
                        "dtype", "round", "c", "p50", "p95", "p99", "req/s", "RSS");
            if (!a->n || !b->n) {
                fprintf(stderr, "%-5s %5d %3d   (no answered request on one side)\n",
                        ts[a->target].dtype, a->round, a->concurrency);
                continue;
            }
            fprintf(stderr, "%-5s %5d %3d %7.2f %7.2f %7.2f %7.2f %7.2f%s\n", ts[a->target].dtype,
                    a->round, a->concurrency, a->p50 / b->p50, a->p95 / b->p95, a->p99 / b->p99,
                    a->rps / b->rps, a->rss / b->rss,
                    a->errors || b->errors ? "  (errors: timeouts)" : "");
        }
    }
    fprintf(stderr, "(RSS: the process's peak so far, VmHWM; cpu ms: the server's CPU time per "
                    "request; load: the 1-minute load average)\n");
}

int main(int argc, char **argv)
{
    int port = 0, pid = 0, warmup = 8, rounds = 1, n_targets = 0;
    target ts[MAX_TARGETS];
    const char *path = "/v1/classify", *model = "bench-small", *dtype = "f32";
    long levels[MAX_LEVELS] = {1, 8, 64}, limits[MAX_LEVELS] = {200, 400, 1000};
    int n_levels = 3, n_limits = 3;
    double seconds = 20;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        if (!v) {
            fprintf(stderr, "bench_serve: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--port"))
            port = atoi(v);
        else if (!strcmp(a, "--server-pid"))
            pid = atoi(v);
        else if (!strcmp(a, "--target")) {
            if (n_targets == MAX_TARGETS || !parse_target(v, &ts[n_targets])) {
                fprintf(stderr,
                        "bench_serve: bad --target %s (LABEL:DTYPE:PORT[:PID], at most %d)\n", v,
                        MAX_TARGETS);
                return 2;
            }
            n_targets++;
        } else if (!strcmp(a, "--endpoint"))
            path = v;
        else if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--dtype"))
            dtype = v;
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atoi(v);
        else if (!strcmp(a, "--rounds"))
            rounds = atoi(v);
        else if (!strcmp(a, "--levels"))
            n_levels = parse_list(v, levels, MAX_LEVELS);
        else if (!strcmp(a, "--requests"))
            n_limits = parse_list(v, limits, MAX_LEVELS);
        else {
            fprintf(stderr, "bench_serve: unknown option %s\n", a);
            usage();
            return 2;
        }
    }
    if (port > 0 && n_targets < MAX_TARGETS) {
        ts[n_targets] = (target){"trimodal", "", port, pid};
        snprintf(ts[n_targets].dtype, sizeof ts[n_targets].dtype, "%s", dtype);
        n_targets++;
    }
    if (n_targets < 1 || n_levels < 1 || n_limits < 1 || !(seconds > 0) || rounds < 1 ||
        rounds > 16 || warmup < 0 || n_targets * n_levels * rounds > MAX_ROWS) {
        usage();
        return 2;
    }
    size_t body_len = 0;
    char *body = make_body(&body_len);
    if (!body) {
        fprintf(stderr, "bench_serve: cannot make the request: %s\n", tm_last_error());
        return 1;
    }
    /* warm-up: graphs are made on first use at each batch size */
    for (int ti = 0; ti < n_targets && warmup > 0; ti++) {
        level_ctx W = {ts[ti].port, path, body, body_len, 0, warmup, hc_now() + 60, NULL, 0, 0};
        worker ww = {&W, calloc((size_t)warmup + 1, sizeof(double)), 0, warmup, 0};
        run_worker(&ww);
        free(ww.lat);
        if (ww.errors) {
            fprintf(stderr, "bench_serve: %s (port %d) does not answer %s\n", ts[ti].label,
                    ts[ti].port, path);
            free(body);
            return 1;
        }
    }
    int rc = 0, n_rows = 0;
    row *rows = calloc(MAX_ROWS, sizeof *rows);
    for (int r = 1; r <= rounds; r++)
        for (int li = 0; li < n_levels; li++)
            for (int ti = 0; ti < n_targets; ti++) {
                int c = (int)levels[li];
                long limit = limits[li < n_limits ? li : n_limits - 1];
                row *w = &rows[n_rows++];
                quiesce(ts, n_targets, 60);
                fprintf(stderr, "bench_serve: round %d, %s %s, concurrency %d\n", r, ts[ti].label,
                        ts[ti].dtype, c);
                run_level(&ts[ti], path, model, body, body_len, c, limit, seconds, r, w);
                w->target = ti;
                if (w->errors) rc = 1;
            }
    print_table(ts, rows, n_rows);
    free(rows);
    free(body);
    return rc;
}
