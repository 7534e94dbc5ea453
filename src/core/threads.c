/* The process-wide thread pool behind tm_parallel_for.
 *
 * One job runs at a time: the caller publishes (fn, ctx, n), bumps the
 * generation counter and wakes the workers; everyone, the caller included,
 * takes task indices from an atomic counter until none are left, and the
 * caller waits for the count of finished tasks to reach n. Which thread runs
 * a task changes from run to run, but kernels split their work into tasks
 * that do not depend on the thread count, so results are reproducible.
 * A second caller arriving while a job runs (another application thread, or
 * a task calling tm_parallel_for) runs its loop serially instead of waiting. */
#include "trimodal/core.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 256
#define SPIN_ITERS 20000

typedef struct {
    pthread_mutex_t lock;      /* guards sleeping and resizing */
    pthread_cond_t wake;
    pthread_mutex_t job_lock;  /* held by the caller for the whole job */
    pthread_t workers[MAX_THREADS];
    int nthreads;              /* including the caller */
    atomic_uint generation;    /* the current job's number */
    atomic_int quit;
    /* the current job */
    _Atomic(tm_task_fn) fn;
    _Atomic(void *) ctx;
    atomic_llong ntasks;
    /* (job number << 32) | next task index: a worker still looping on an
     * old job sees another job number and cannot take the new job's tasks */
    atomic_ullong ticket;
    atomic_llong done;
} pool_t;

static pool_t pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .job_lock = PTHREAD_MUTEX_INITIALIZER,
};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static _Thread_local int in_task;
static _Thread_local int serial_thread; /* tm_thread_set_serial */

static void run_tasks(unsigned job)
{
    tm_task_fn fn = atomic_load(&pool.fn);
    void *ctx = atomic_load(&pool.ctx);
    int64_t n = atomic_load(&pool.ntasks);
    for (;;) {
        unsigned long long cur = atomic_load(&pool.ticket);
        if ((unsigned)(cur >> 32) != job) break; /* that job is over */
        int64_t i = (int64_t)(cur & 0xffffffffull);
        if (i >= n) break;
        if (!atomic_compare_exchange_weak(&pool.ticket, &cur, cur + 1)) continue;
        /* a claim with this job's number means no later job has begun to
         * publish (see tm_parallel_for), so fn, ctx and n read above are
         * this job's */
        fn(ctx, i, n);
        atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
    }
}

static void *worker_main(void *arg)
{
    (void)arg;
    in_task = 1; /* a task that calls tm_parallel_for runs it serially */
    unsigned seen = atomic_load(&pool.generation);
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen &&
               !atomic_load(&pool.quit)) {
            if (++spins < SPIN_ITERS) continue;
            pthread_mutex_lock(&pool.lock);
            while (atomic_load(&pool.generation) == seen && !atomic_load(&pool.quit))
                pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        if (atomic_load(&pool.quit)) return NULL;
        seen = gen;
        run_tasks(gen);
    }
}

static void stop_workers(void)
{
    pthread_mutex_lock(&pool.lock);
    atomic_store(&pool.quit, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 1; i < pool.nthreads; i++) pthread_join(pool.workers[i], NULL);
    atomic_store(&pool.quit, 0);
    pool.nthreads = 1;
}

static int start_workers(int n)
{
    pool.nthreads = 1;
    for (int i = 1; i < n; i++) {
        if (pthread_create(&pool.workers[i], NULL, worker_main, NULL) != 0) break;
        pool.nthreads = i + 1;
    }
    return pool.nthreads;
}

static int default_threads(void)
{
    const char *env = getenv("TRIMODAL_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v >= 1 && v <= MAX_THREADS) return (int)v;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    return (int)n;
}

static void pool_init(void)
{
    start_workers(default_threads());
    atexit(stop_workers);
}

tm_status tm_set_num_threads(int n)
{
    if (n < 1 || n > MAX_THREADS)
        return tm_fail(TM_ERR_INVALID, "thread count %d is outside 1..%d", n, MAX_THREADS);
    pthread_once(&pool_once, pool_init);
    pthread_mutex_lock(&pool.job_lock);
    if (n != pool.nthreads) {
        stop_workers();
        start_workers(n);
    }
    pthread_mutex_unlock(&pool.job_lock);
    if (pool.nthreads != n)
        return tm_fail(TM_ERR_NOMEM, "could only start %d of %d threads", pool.nthreads, n);
    return TM_OK;
}

int tm_get_num_threads(void)
{
    pthread_once(&pool_once, pool_init);
    return pool.nthreads;
}

void tm_parallel_for(int64_t n, tm_task_fn fn, void *ctx)
{
    if (n <= 0) return;
    pthread_once(&pool_once, pool_init);
    if (n == 1 || n > INT32_MAX || in_task || serial_thread || pool.nthreads == 1 ||
        pthread_mutex_trylock(&pool.job_lock) != 0) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i, n);
        return;
    }
    unsigned job = atomic_load(&pool.generation) + 1;
    /* Close the ticket under the new job number before touching fn, ctx
     * and n: a worker still in the previous job may have read some of the
     * new values already, but its claim (a compare-exchange on the old
     * job's ticket) then fails, because in the single order of these
     * sequentially consistent operations the close comes before those
     * stores. Without it, a late worker could pair the old ticket with the
     * new n, run a task of the new job twice and miscount `done`. */
    atomic_store(&pool.ticket, ((unsigned long long)job << 32) | 0xffffffffull);
    atomic_store(&pool.fn, fn);
    atomic_store(&pool.ctx, ctx);
    atomic_store(&pool.ntasks, n);
    atomic_store(&pool.done, 0);
    atomic_store(&pool.ticket, (unsigned long long)job << 32);
    pthread_mutex_lock(&pool.lock);
    atomic_store_explicit(&pool.generation, job, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);

    in_task = 1;
    run_tasks(job);
    in_task = 0;
    while (atomic_load_explicit(&pool.done, memory_order_acquire) < n) {
        /* the other tasks are running on workers; spin briefly, then yield */
        sched_yield();
    }
    pthread_mutex_unlock(&pool.job_lock);
}

void tm_split_range(int64_t total, int64_t i, int64_t n, int64_t *begin, int64_t *end)
{
    int64_t base = total / n, rem = total % n;
    *begin = i * base + (i < rem ? i : rem);
    *end = *begin + base + (i < rem ? 1 : 0);
}

typedef struct {
    tm_range_fn fn;
    void *ctx;
    int64_t items;
} range_ctx;

static void range_task(void *p, int64_t i, int64_t n)
{
    const range_ctx *c = p;
    int64_t b, e;
    tm_split_range(c->items, i, n, &b, &e);
    if (b < e) c->fn(c->ctx, b, e);
}

void tm_parallel_range(int64_t items, int64_t work, tm_range_fn fn, void *ctx)
{
    if (items <= 0) return;
    int64_t nt = tm_get_num_threads();
    if (nt <= 1 || items == 1 || work < ((int64_t)1 << 14)) {
        fn(ctx, 0, items);
        return;
    }
    range_ctx c = {fn, ctx, items};
    tm_parallel_for(4 * nt < items ? 4 * nt : items, range_task, &c);
}

void tm_thread_set_serial(int on) { serial_thread = on != 0; }
