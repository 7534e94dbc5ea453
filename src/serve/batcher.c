/* Micro-batching: request threads queue prepared examples; one batcher
 * thread takes the oldest job's kind, waits a bounded time (max_wait) for
 * more jobs of that kind while other requests are still being parsed, and
 * runs them as one batched forward pass. The queue is bounded (a full
 * queue is the caller's 503), and a requester that stops waiting (its
 * timeout) leaves its job to be dropped or freed by the batcher. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve/serve_internal.h"

static struct timespec to_ts(double t)
{
    struct timespec ts;
    if (t < 0) t = 0;
    if (t > 1e12) t = 1e12;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    return ts;
}

/* tm_time_s() is CLOCK_MONOTONIC: the conditions wait on that clock */
static void cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

job *job_new(int kind, tm_example *ex)
{
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->kind = kind;
    j->ex = ex;
    cond_init_mono(&j->done);
    return j;
}

void job_free(job *j)
{
    if (!j) return;
    tm_example_free(j->ex);
    free(j->out);
    tm_caption_result_clear(&j->caption);
    pthread_cond_destroy(&j->done);
    free(j);
}

static void unlink_job(batcher *b, job *j)
{
    job *prev = NULL;
    for (job *q = b->head; q; prev = q, q = q->next)
        if (q == j) {
            if (prev)
                prev->next = q->next;
            else
                b->head = q->next;
            if (b->tail == q) b->tail = prev;
            q->next = NULL;
            b->depth--;
            return;
        }
}

static void finish(job *j, tm_status st, const char *msg)
{
    j->status = st;
    if (msg) snprintf(j->message, sizeof j->message, "%s", msg);
    j->state = JOB_DONE;
    if (j->abandoned)
        job_free(j);
    else
        pthread_cond_signal(&j->done);
}

static int count_kind(const batcher *b, int kind, int cap)
{
    int n = 0;
    for (const job *q = b->head; q && n < cap; q = q->next)
        n += q->kind == kind;
    return n;
}

static void run_batch(batcher *b, job **batch, int n, int kind, float *scratch, tm_example **ex,
                      tm_caption_result *caps)
{
    for (int i = 0; i < n; i++)
        ex[i] = batch[i]->ex;
    double t0 = tm_time_s();
    tm_status st;
    int stages[1024];
    if (kind == KIND_CLASSIFY && b->cascade)
        st = tm_cascade_classify(b->cascade, ex, n, scratch, stages);
    else if (kind == KIND_CLASSIFY)
        st = tm_session_classify(b->session, ex, n, scratch);
    else if (kind == KIND_EMBED)
        st = tm_session_embed(b->session, ex, n, scratch);
    else
        st = tm_session_caption(b->session, ex, n, caps);
    double dt = tm_time_s() - t0;
    char msg[512];
    msg[0] = 0;
    if (st)
        snprintf(msg, sizeof msg, "%s", tm_last_error());
    else
        met_batch(b->met, kind, n, dt);
    size_t nf = b->out_floats[kind];
    /* copy results out before taking the lock: abandoned jobs are freed under it */
    for (int i = 0; !st && i < n; i++) {
        if (kind == KIND_CAPTION) continue;
        batch[i]->out = malloc(nf * sizeof(float));
        if (batch[i]->out) memcpy(batch[i]->out, scratch + (size_t)i * nf, nf * sizeof(float));
    }
    pthread_mutex_lock(&b->lock);
    for (int i = 0; i < n; i++) {
        job *j = batch[i];
        if (!st && kind == KIND_CAPTION) j->caption = caps[i];
        j->stage = !st && kind == KIND_CLASSIFY && b->cascade ? stages[i] : -1;
        if (!st && kind != KIND_CAPTION && !j->out)
            finish(j, TM_ERR_NOMEM, "out of memory");
        else
            finish(j, st, st ? msg : NULL);
    }
    pthread_mutex_unlock(&b->lock);
}

static void *batcher_main(void *arg)
{
    batcher *b = arg;
    size_t nf = b->out_floats[0];
    for (int k = 1; k < KIND_COUNT; k++)
        nf = b->out_floats[k] > nf ? b->out_floats[k] : nf;
    float *scratch = malloc((size_t)b->max_batch * (nf ? nf : 1) * sizeof *scratch);
    tm_example **ex = malloc((size_t)b->max_batch * sizeof *ex);
    job **batch = malloc((size_t)b->max_batch * sizeof *batch);
    tm_caption_result *caps = calloc((size_t)b->max_batch, sizeof *caps);
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (!b->head && !b->stop)
            pthread_cond_wait(&b->wake, &b->lock);
        if (!b->head) break;
        if (!scratch || !ex || !batch || !caps) { /* cannot run anything: fail the job */
            job *j = b->head;
            unlink_job(b, j);
            finish(j, TM_ERR_NOMEM, "the batcher is out of memory");
            continue;
        }
        int kind = b->head->kind;
        double deadline = b->head->enqueued + b->max_wait_s;
        for (;;) {
            if (b->stop || count_kind(b, kind, b->max_batch) >= b->max_batch) break;
            double now = tm_time_s();
            /* wait only while another request is on its way to the queue */
            if (now >= deadline || b->preparing <= 0) break;
            struct timespec ts = to_ts(deadline);
            pthread_cond_timedwait(&b->wake, &b->lock, &ts);
            if (!b->head) break;
        }
        if (!b->head) continue;
        kind = b->head->kind;
        int n = 0;
        for (job *q = b->head; q && n < b->max_batch;) {
            job *next = q->next;
            if (q->kind == kind) {
                unlink_job(b, q);
                q->state = JOB_RUNNING;
                batch[n++] = q;
            }
            q = next;
        }
        pthread_mutex_unlock(&b->lock);
        run_batch(b, batch, n, kind, scratch, ex, caps);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    free(scratch);
    free(ex);
    free(batch);
    free(caps);
    return NULL;
}

tm_status bat_start(batcher *b, tm_session *s, metrics *met, int max_batch, double max_wait_ms,
                    int cap)
{
    tm_cascade *cascade = b->cascade; /* the one field a caller sets before */
    memset(b, 0, sizeof *b);
    b->cascade = cascade;
    pthread_mutex_init(&b->lock, NULL);
    cond_init_mono(&b->wake);
    b->session = s;
    b->met = met;
    b->max_batch = max_batch;
    b->max_wait_s = max_wait_ms / 1000.0;
    b->cap = cap;
    tm_model_info in = tm_session_info(s);
    b->out_floats[KIND_CLASSIFY] = (size_t)(in.num_classes > 0 ? in.num_classes : 0);
    b->out_floats[KIND_EMBED] = (size_t)(in.embed_dim > 0 ? in.n_modalities * in.embed_dim : 0);
    b->out_floats[KIND_CAPTION] = 0;
    if (pthread_create(&b->thread, NULL, batcher_main, b)) {
        pthread_cond_destroy(&b->wake);
        pthread_mutex_destroy(&b->lock);
        return tm_fail(TM_ERR_NOMEM, "server: cannot start the batcher thread");
    }
    b->started = 1;
    return TM_OK;
}

void bat_stop(batcher *b, int now)
{
    if (!b->started) return;
    pthread_mutex_lock(&b->lock);
    b->stop = 1;
    if (now)
        while (b->head) {
            job *j = b->head;
            unlink_job(b, j);
            finish(j, TM_ERR_LIMIT, "the server is shutting down");
        }
    pthread_cond_broadcast(&b->wake);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL);
    b->started = 0;
}

void bat_destroy(batcher *b)
{
    bat_stop(b, 1);
    pthread_cond_destroy(&b->wake);
    pthread_mutex_destroy(&b->lock);
}

int bat_run(batcher *b, job *j, double deadline)
{
    pthread_mutex_lock(&b->lock);
    b->preparing--;                                       /* this request is no longer on its way */
    if (b->preparing <= 0) pthread_cond_signal(&b->wake); /* nobody left to wait for */
    if (b->stop) {
        pthread_mutex_unlock(&b->lock);
        return 3;
    }
    if (b->depth >= b->cap) {
        pthread_mutex_unlock(&b->lock);
        return 1;
    }
    if (tm_time_s() >= deadline) { /* out of time already: spend no model time on it */
        pthread_mutex_unlock(&b->lock);
        job_free(j);
        return 2;
    }
    j->enqueued = tm_time_s();
    j->state = JOB_QUEUED;
    j->next = NULL;
    if (b->tail)
        b->tail->next = j;
    else
        b->head = j;
    b->tail = j;
    b->depth++;
    pthread_cond_signal(&b->wake);
    struct timespec ts = to_ts(deadline);
    while (j->state != JOB_DONE) {
        int rc = pthread_cond_timedwait(&j->done, &b->lock, &ts);
        if (rc == ETIMEDOUT && j->state != JOB_DONE) {
            if (j->state == JOB_QUEUED) {
                unlink_job(b, j);
                pthread_mutex_unlock(&b->lock);
                job_free(j);
            } else {
                j->abandoned = 1; /* the batcher frees it when the batch ends */
                pthread_mutex_unlock(&b->lock);
            }
            return 2;
        }
    }
    pthread_mutex_unlock(&b->lock);
    return 0;
}

void bat_preparing(batcher *b, int delta)
{
    pthread_mutex_lock(&b->lock);
    b->preparing += delta;
    if (delta < 0) pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
}

int bat_depth(batcher *b)
{
    pthread_mutex_lock(&b->lock);
    int d = b->depth;
    pthread_mutex_unlock(&b->lock);
    return d;
}
