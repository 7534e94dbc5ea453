/* trimodal serve: the HTTP server over a model folder (and optionally a
 * search index) until SIGTERM or SIGINT, which stop it gracefully: no new
 * connections, requests in flight finish (up to --drain-s), exit 0. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "trimodal/io.h"
#include "trimodal/serve.h"

static const char *serve_help =
    "usage: trimodal serve MODEL_DIR [--port 8080] [--host 127.0.0.1] [--index INDEX]\n"
    "                      [--api-key-file FILE] [options]\n"
    "\n"
    "Serves the model folder over HTTP (docs/serving.md, docs/openapi.yaml):\n"
    "  POST /v1/embed, /v1/classify, /v1/caption   JSON {\"text\", \"image\", \"audio\"}\n"
    "       (image and audio as base64) or multipart/form-data uploads\n"
    "  POST /v1/search    a text, image or sound against --index (top k items)\n"
    "  GET  /healthz      liveness and the endpoints offered\n"
    "  GET  /metrics      Prometheus text: requests, latencies, batch sizes, queue depth\n"
    "Concurrent requests are batched (up to --max-batch, waiting at most\n"
    "--max-wait-ms for company). SIGTERM or SIGINT stops accepting connections,\n"
    "finishes the requests in flight and exits 0.\n"
    "\n"
    "options:\n"
    "  --port N              TCP port (default 8080; 0 picks a free one)\n"
    "  --host ADDR           address to listen on (default 127.0.0.1; 0.0.0.0 for all)\n"
    "  --port-file FILE      write the port listened on to FILE once ready\n"
    "  --index INDEX         a search index (trimodal search build) for /v1/search\n"
    "  --cascade FILE        answer /v1/classify through a cascade (JSON: cheap\n"
    "                        unimodal stages with confidence thresholds, then the\n"
    "                        full model; docs/serving.md, \"Cascades\")\n"
    "  --api-key-file FILE   require this key (the file's first line) on /v1/: sent as\n"
    "                        'Authorization: Bearer KEY' or 'X-API-Key: KEY'; the\n"
    "                        TRIMODAL_API_KEY environment variable works too\n"
    "  --max-batch N         examples per forward pass (default 32)\n"
    "  --max-wait-ms X       how long a request waits for others to batch with (2)\n"
    "  --max-queue N         requests waiting for the model; beyond: 503 (256)\n"
    "  --max-body-mb X       largest request body; beyond: 413 (16)\n"
    "  --timeout-ms X        a request unanswered after X ms gets 504 (30000)\n"
    "  --max-connections N   open connections at most (512)\n"
    "  --top-k K             classes listed by /v1/classify (5)\n"
    "  --max-search-k K      most results a /v1/search request may ask; beyond: 400 (1000)\n"
    "  --max-image-pixels N  largest input image, width x height; beyond: 413 (16777216)\n"
    "  --max-audio-seconds S longest input sound; beyond: 413 (600)\n"
    "  --beam N              caption beam width (1: greedy)\n"
    "  --threads N           threads for the kernels (default: TRIMODAL_THREADS or all CPUs)\n"
    "  --drain-s X           on SIGTERM, wait at most X s for requests in flight (30)\n"
    "  --quiet               no access log on stderr\n";

static int fail(void)
{
    fprintf(stderr, "trimodal serve: %s\n", tm_last_error());
    return 1;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi)) return 0;
    *out = v;
    return 1;
}

static void log_line(void *ctx, const char *line)
{
    (void)ctx;
    time_t t = time(NULL);
    struct tm tmv;
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", localtime_r(&t, &tmv));
    fprintf(stderr, "%s %s\n", ts, line);
}

int cmd_serve(int argc, char **argv, int json)
{
    (void)json;
    const char *model = NULL, *index = NULL, *key_file = NULL, *port_file = NULL;
    const char *cascade_file = NULL;
    tm_server_params p = tm_server_default_params();
    tm_session_params sp = tm_session_default_params();
    double drain = 30;
    long threads = 0;
    int quiet = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        long iv;
        double dv;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(serve_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (a[0] != '-') {
            if (model) return cli_usage("serve: one MODEL_DIR only ('%s')", a);
            model = a;
            continue;
        }
        if (i + 1 >= argc) return cli_usage("serve: unknown option '%s' or it needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--port")) {
            if (!parse_int(v, 0, 65535, &iv)) return cli_usage("serve: --port needs 0..65535");
            p.port = (int)iv;
        } else if (!strcmp(a, "--host"))
            p.host = v;
        else if (!strcmp(a, "--port-file"))
            port_file = v;
        else if (!strcmp(a, "--index"))
            index = v;
        else if (!strcmp(a, "--cascade"))
            cascade_file = v;
        else if (!strcmp(a, "--api-key-file"))
            key_file = v;
        else if (!strcmp(a, "--max-batch")) {
            if (!parse_int(v, 1, 1024, &iv)) return cli_usage("serve: --max-batch needs 1..1024");
            p.max_batch = sp.max_batch = (int)iv;
        } else if (!strcmp(a, "--max-wait-ms")) {
            if (!parse_num(v, 0, 10000, &dv))
                return cli_usage("serve: --max-wait-ms needs 0..10000");
            p.max_wait_ms = dv;
        } else if (!strcmp(a, "--max-queue")) {
            if (!parse_int(v, 1, 1000000, &iv))
                return cli_usage("serve: --max-queue needs 1..1000000");
            p.max_queue = (int)iv;
        } else if (!strcmp(a, "--max-body-mb")) {
            if (!parse_num(v, 0.001, 4096, &dv))
                return cli_usage("serve: --max-body-mb needs 0.001..4096");
            p.max_body_bytes = (size_t)(dv * 1048576.0);
        } else if (!strcmp(a, "--timeout-ms")) {
            if (!parse_num(v, 1, 3.6e6, &dv))
                return cli_usage("serve: --timeout-ms needs 1..3600000");
            p.timeout_ms = dv;
        } else if (!strcmp(a, "--max-connections")) {
            if (!parse_int(v, 1, 100000, &iv))
                return cli_usage("serve: --max-connections needs 1..100000");
            p.max_connections = (int)iv;
        } else if (!strcmp(a, "--top-k")) {
            if (!parse_int(v, 1, 1000000, &iv))
                return cli_usage("serve: --top-k needs a positive integer");
            p.top_k = (int)iv;
        } else if (!strcmp(a, "--max-search-k")) {
            if (!parse_int(v, 1, 1000000, &iv))
                return cli_usage("serve: --max-search-k needs 1..1000000");
            p.max_search_k = (int)iv;
        } else if (!strcmp(a, "--max-image-pixels")) {
            if (!parse_int(v, 1, (long)1 << 40, &iv))
                return cli_usage("serve: --max-image-pixels needs 1..2^40");
            sp.max_image_pixels = (size_t)iv;
        } else if (!strcmp(a, "--max-audio-seconds")) {
            if (!parse_num(v, 0.001, 86400, &dv))
                return cli_usage("serve: --max-audio-seconds needs 0.001..86400");
            sp.max_audio_seconds = dv;
        } else if (!strcmp(a, "--beam")) {
            if (!parse_int(v, 1, 64, &iv)) return cli_usage("serve: --beam needs 1..64");
            sp.caption.beam = (int)iv;
        } else if (!strcmp(a, "--threads")) {
            if (!parse_int(v, 1, 256, &threads)) return cli_usage("serve: --threads needs 1..256");
        } else if (!strcmp(a, "--drain-s")) {
            if (!parse_num(v, 0, 86400, &drain))
                return cli_usage("serve: --drain-s needs 0..86400");
        } else {
            return cli_usage("serve: unknown option '%s'", a);
        }
    }
    if (!model) return cli_usage("serve: give MODEL_DIR");
    /* the API key: a file (never on the command line, where ps shows it) or the environment */
    char *key = NULL;
    if (key_file) {
        size_t n = 0;
        if (tm_read_file(key_file, 1 << 16, &key, &n)) return fail();
        char *nl = strpbrk(key, "\r\n");
        if (nl) *nl = 0;
        if (!key[0]) {
            tm_free(key);
            fprintf(stderr, "trimodal serve: %s holds no key on its first line\n", key_file);
            return 1;
        }
    } else if (getenv("TRIMODAL_API_KEY") && getenv("TRIMODAL_API_KEY")[0]) {
        const char *e = getenv("TRIMODAL_API_KEY");
        key = tm_alloc(strlen(e) + 1);
        if (!key) return fail();
        strcpy(key, e);
    }
    p.api_key = key;
    if (threads && tm_set_num_threads((int)threads)) {
        tm_free(key);
        return fail();
    }
    if (!quiet) {
        p.log = log_line;
    }
    /* every thread started from here on inherits the blocked signals, so
     * only sigwait below sees SIGTERM and SIGINT */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    tm_session *s = NULL;
    tm_index *idx = NULL;
    tm_server *srv = NULL;
    tm_cascade *cascade = NULL;
    double t0 = tm_time_s();
    if (tm_session_open(&s, model, &sp)) {
        tm_free(key);
        return fail();
    }
    for (const char *n = tm_session_notes(s); *n;) {
        const char *e = strchr(n, '\n');
        int len = e ? (int)(e - n) : (int)strlen(n);
        fprintf(stderr, "trimodal serve: note: %.*s\n", len, n);
        n += len + (e != NULL);
    }
    int rc = 0;
    if (cascade_file && tm_cascade_load(&cascade, s, cascade_file)) {
        tm_session_free(s);
        tm_free(key);
        return fail();
    }
    p.cascade = cascade;
    if ((index && tm_index_load(&idx, index)) || tm_server_start(&srv, s, idx, &p)) {
        rc = fail();
    } else {
        char host[128];
        snprintf(host, sizeof host, "%s", p.host && p.host[0] ? p.host : "127.0.0.1");
        fprintf(stderr,
                "trimodal serve: model %s%s%s ready in %.1f s; listening on http://%s:%d "
                "(max batch %d, wait %.1f ms, queue %d%s)\n",
                tm_session_name(s), idx ? ", index " : "", idx ? index : "", tm_time_s() - t0, host,
                tm_server_port(srv), p.max_batch ? p.max_batch : sp.max_batch, p.max_wait_ms,
                p.max_queue, key ? ", API key required" : "");
        if (port_file) {
            char buf[16];
            int n = snprintf(buf, sizeof buf, "%d\n", tm_server_port(srv));
            if (tm_write_file_atomic(port_file, buf, (size_t)n)) {
                fprintf(stderr, "trimodal serve: %s\n", tm_last_error());
                rc = 1;
            }
        }
        int sig = 0;
        while (!rc && sigwait(&set, &sig) != 0) {
        }
        if (!rc)
            fprintf(stderr, "trimodal serve: %s: stopping; finishing the requests in flight\n",
                    sig == SIGINT ? "SIGINT" : "SIGTERM");
        int left = tm_server_shutdown(srv, drain);
        if (left) {
            fprintf(stderr, "trimodal serve: %d requests were still unfinished after %.0f s\n",
                    left, drain);
            rc = 1;
        } else if (!rc) {
            fprintf(stderr, "trimodal serve: stopped\n");
        }
    }
    tm_server_free(srv);
    tm_cascade_free(cascade);
    tm_index_free(idx);
    tm_session_free(s);
    tm_free(key);
    return rc;
}
