/* FFTW plans for the audio layer (see audio_internal.h). */
#include <pthread.h>

#include "audio/audio_internal.h"

/* FFTW's planner is one process-wide structure inside FFTW, and not
 * thread-safe; the lock serialises every use of it by trimodal. Plans are
 * kept, one per (size, direction), for the life of the process: a data
 * loader calling tm_audio_preprocess() per example then plans once, not
 * once per example, and a plan shared between threads is safe with the
 * new-array execute functions. The table is bounded; sizes beyond it get
 * plans of their own, destroyed on release. */
#define PLAN_CACHE_SIZE 64

static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int n, inverse;
    fftwf_plan plan;
} plan_cache[PLAN_CACHE_SIZE];
static int plan_cached;

static fftwf_plan make_plan(int n, int inverse)
{
    if (n < 1) return NULL;
    fftwf_plan plan = NULL;
    pthread_mutex_lock(&plan_lock);
    for (int i = 0; i < plan_cached; i++) {
        if (plan_cache[i].n == n && plan_cache[i].inverse == inverse) {
            plan = plan_cache[i].plan;
            break;
        }
    }
    if (!plan) {
        /* FFTW_ESTIMATE never touches the arrays; their alignment (that of
         * fftwf_malloc) is what later executions must match. */
        float *r = fftwf_malloc(sizeof(float) * (size_t)n);
        fftwf_complex *c = fftwf_malloc(sizeof(fftwf_complex) * (size_t)(n / 2 + 1));
        if (r && c)
            plan = inverse ? fftwf_plan_dft_c2r_1d(n, c, r, FFTW_ESTIMATE)
                           : fftwf_plan_dft_r2c_1d(n, r, c, FFTW_ESTIMATE);
        fftwf_free(r);
        fftwf_free(c);
        if (plan && plan_cached < PLAN_CACHE_SIZE) {
            plan_cache[plan_cached].n = n;
            plan_cache[plan_cached].inverse = inverse;
            plan_cache[plan_cached].plan = plan;
            plan_cached++;
        }
    }
    pthread_mutex_unlock(&plan_lock);
    return plan;
}

fftwf_plan tm_audio_plan_r2c(int n) { return make_plan(n, 0); }
fftwf_plan tm_audio_plan_c2r(int n) { return make_plan(n, 1); }

void tm_audio_plan_free(fftwf_plan plan)
{
    if (!plan) return;
    pthread_mutex_lock(&plan_lock);
    int cached = 0;
    for (int i = 0; i < plan_cached && !cached; i++) cached = plan_cache[i].plan == plan;
    if (!cached) fftwf_destroy_plan(plan);
    pthread_mutex_unlock(&plan_lock);
}
