/* Pieces of the serve layer shared between its files: a growable string
 * buffer with JSON writers, the multipart/form-data parser, base64
 * decoding, the metrics registry and the request batcher. Not part of the
 * public API. */
#ifndef TM_SERVE_INTERNAL_H
#define TM_SERVE_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "trimodal/serve.h"

/* ------------------------------------------------------------ buffers */

/* A growable byte buffer (malloc'ed, so a server response can take it
 * with free()). A failed allocation sets `failed` and later appends do
 * nothing: check once at the end. */
typedef struct {
    char *data;
    size_t len, cap;
    int failed;
} sbuf;

void sb_put(sbuf *b, const void *p, size_t n);
void sb_puts(sbuf *b, const char *s);
void sb_printf(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* A JSON string literal of n bytes (invalid UTF-8 becomes U+FFFD). */
void sb_json_str(sbuf *b, const char *s, size_t n);
/* A float as JSON: shortest %.9g form; NaN and infinities as null. */
void sb_json_float(sbuf *b, double v);
void sb_free(sbuf *b);

/* ---------------------------------------------------------- multipart */

typedef struct {
    const char *name; /* the form field's name (not NUL-terminated) */
    size_t name_len;
    const char *filename; /* NULL when none */
    size_t filename_len;
    const char *data;
    size_t len;
} mp_part;

#define MP_MAX_PARTS 16

/* The boundary of a Content-Type "multipart/form-data; boundary=..."
 * (quoted or not), copied into out (at most 70 bytes + NUL). 0 when the
 * header is not multipart/form-data or has no valid boundary. */
int mp_boundary(const char *content_type, char *out, size_t out_size);

/* Parses a multipart/form-data body. Parts point into body. Returns TM_OK,
 * or TM_ERR_FORMAT with a message for a body without the boundary, a part
 * without headers or a name, a body that ends before the closing boundary,
 * more than max parts. */
tm_status mp_parse(const char *body, size_t len, const char *boundary, mp_part *parts, int max,
                   int *n);

/* Decodes standard base64 (padding optional; whitespace ignored; a
 * "data:...;base64," prefix skipped) into a new malloc'ed buffer.
 * TM_ERR_FORMAT naming what is wrong. */
tm_status b64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len);

/* ------------------------------------------------------------ metrics */

enum { EP_EMBED, EP_CLASSIFY, EP_CAPTION, EP_SEARCH, EP_HEALTHZ, EP_METRICS, EP_OTHER, EP_COUNT };
enum { KIND_EMBED, KIND_CLASSIFY, KIND_CAPTION, KIND_COUNT };

#define MET_CODES 11
#define MET_LAT_BUCKETS 14
#define MET_BATCH_BUCKETS 11

typedef struct {
    pthread_mutex_t lock;
    int64_t requests[EP_COUNT][MET_CODES];
    int64_t lat_bucket[EP_COUNT][MET_LAT_BUCKETS + 1]; /* cumulative at render */
    double lat_sum[EP_COUNT];
    int64_t lat_count[EP_COUNT];
    int64_t batch_bucket[KIND_COUNT][MET_BATCH_BUCKETS + 1];
    double batch_sum[KIND_COUNT];
    int64_t batch_count[KIND_COUNT];
    double infer_sum[KIND_COUNT];
    int64_t infer_bucket[KIND_COUNT][MET_LAT_BUCKETS + 1];
    int64_t infer_count[KIND_COUNT];
    double start_time;
} metrics;

void met_init(metrics *m);
void met_destroy(metrics *m);
void met_request(metrics *m, int ep, int code, double seconds);
void met_batch(metrics *m, int kind, int size, double seconds);
/* Appends the Prometheus text; the gauges are passed in. */
void met_render(metrics *m, sbuf *b, const char *model, int queue_depth, int queue_cap,
                int inflight, int draining);

/* ------------------------------------------------------------ batcher */

typedef enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE } job_state;

typedef struct job {
    struct job *next;
    int kind;
    tm_example *ex;
    double enqueued;
    job_state state;
    int abandoned; /* the requester gave up (timeout): the batcher frees it */
    pthread_cond_t done;
    /* results */
    tm_status status;
    char message[512];
    float *out; /* classify: num_classes; embed: M * E */
    int stage;  /* classify through a cascade: the stage that answered */
    tm_caption_result caption;
} job;

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    job *head, *tail;
    int depth, cap;
    int max_batch;
    double max_wait_s;
    int preparing; /* requests between arrival and enqueue: worth waiting for */
    int stop;
    pthread_t thread;
    int started;
    tm_session *session;
    tm_cascade *cascade; /* NULL: classify on the full model */
    metrics *met;
    size_t out_floats[KIND_COUNT];
} batcher;

/* b->cascade may be set before (the rest is initialised here). */
tm_status bat_start(batcher *b, tm_session *s, metrics *met, int max_batch, double max_wait_ms,
                    int cap);
/* Stops the thread after the queue is empty (jobs still queued when
 * `now` is set fail with 503-like status TM_ERR_LIMIT). */
void bat_stop(batcher *b, int now);
void bat_destroy(batcher *b);

/* Runs one job to completion or until deadline (absolute tm_time_s()).
 * The caller counted itself with bat_preparing(b, 1) when the request
 * arrived; bat_run takes that count back (bat_preparing(b, -1) does it for
 * a request that never gets here).
 * Returns 0 done (j->status tells), 1 queue full (j untouched, caller keeps
 * ownership), 2 timed out (ownership passed to the batcher or freed), 3
 * stopping. On 0 the caller owns j and frees it with job_free. */
int bat_run(batcher *b, job *j, double deadline);
job *job_new(int kind, tm_example *ex);
void job_free(job *j);
void bat_preparing(batcher *b, int delta);
int bat_depth(batcher *b);

#endif
