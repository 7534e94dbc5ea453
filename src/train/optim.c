/*
 * Optimizers (SGD, AdamW) and global-norm gradient clipping over flat
 * parameter and gradient buffers.
 *
 * The updates are elementwise, so splitting them over the thread pool in
 * any way gives bit-identical results. The gradient norm is a reduction:
 * its chunking depends only on n (never on the thread count) and the chunk
 * sums are added in a fixed order, so it is reproducible too.
 *
 * The arithmetic mirrors torch's single-tensor implementations step by
 * step (same operation order, scalars rounded to float where torch rounds
 * them) so that golden vectors from PyTorch match to a few ulps.
 */
#include "trimodal/optim.h"

#include <math.h>
#include <string.h>

struct tm_optim {
    tm_optim_params p;
    size_t n;           /* parameters */
    int64_t step;       /* updates done */
    float *state;       /* SGD: momentum (n) | AdamW: m (n), v (n) | NULL */
    size_t state_count; /* floats in state */
    uint8_t *decay_mask; /* n bytes, or NULL: everything decays */
    uint8_t *update_mask; /* n bytes, or NULL: everything is updated */
};

/* Elements per task of the update loop: big enough that the pool's
 * overhead is small, small enough to balance a few threads. */
#define TM_OPTIM_CHUNK ((size_t)16384)

static int finite_f(float x) { return isfinite(x) != 0; }

tm_optim_params tm_optim_default_params(tm_optim_kind kind)
{
    tm_optim_params p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    p.lr = 1e-3f;
    p.weight_decay = kind == TM_OPTIM_ADAMW ? 1e-2f : 0.0f;
    p.momentum = 0.0f;
    p.dampening = 0.0f;
    p.nesterov = 0;
    p.beta1 = 0.9;
    p.beta2 = 0.999;
    p.eps = 1e-8f;
    return p;
}

tm_status tm_optim_params_check(const tm_optim_params *p)
{
    if (!p) return tm_fail(TM_ERR_INVALID, "optim: params is NULL");
    if ((int)p->kind < 0 || p->kind >= TM_OPTIM_KIND_COUNT)
        return tm_fail(TM_ERR_INVALID, "optim: unknown kind %d", (int)p->kind);
    if (!finite_f(p->lr) || p->lr < 0)
        return tm_fail(TM_ERR_INVALID, "optim: lr must be finite and >= 0 (got %g)", p->lr);
    if (!finite_f(p->weight_decay) || p->weight_decay < 0)
        return tm_fail(TM_ERR_INVALID, "optim: weight_decay must be finite and >= 0 (got %g)",
                       p->weight_decay);
    if (p->kind == TM_OPTIM_SGD) {
        if (!finite_f(p->momentum) || p->momentum < 0)
            return tm_fail(TM_ERR_INVALID, "optim: SGD momentum must be finite and >= 0 (got %g)",
                           p->momentum);
        if (!(p->dampening >= 0 && p->dampening <= 1))
            return tm_fail(TM_ERR_INVALID, "optim: SGD dampening must be in [0, 1] (got %g)",
                           p->dampening);
        if (p->nesterov && (p->momentum <= 0 || p->dampening != 0))
            return tm_fail(TM_ERR_INVALID,
                           "optim: SGD nesterov needs momentum > 0 and dampening 0 "
                           "(got momentum %g, dampening %g)",
                           p->momentum, p->dampening);
    } else {
        if (!(p->beta1 >= 0 && p->beta1 < 1))
            return tm_fail(TM_ERR_INVALID, "optim: AdamW beta1 must be in [0, 1) (got %g)",
                           p->beta1);
        if (!(p->beta2 >= 0 && p->beta2 < 1))
            return tm_fail(TM_ERR_INVALID, "optim: AdamW beta2 must be in [0, 1) (got %g)",
                           p->beta2);
        if (!finite_f(p->eps) || p->eps <= 0)
            return tm_fail(TM_ERR_INVALID, "optim: AdamW eps must be finite and > 0 (got %g)",
                           p->eps);
    }
    return TM_OK;
}

static size_t state_floats(const tm_optim_params *p, size_t n, int *overflow)
{
    size_t k = 0, out = 0;
    if (p->kind == TM_OPTIM_ADAMW) k = 2;
    else if (p->momentum != 0) k = 1;
    *overflow = !tm_mul_size(n, k, &out);
    return out;
}

tm_status tm_optim_new(tm_optim **out, tm_optim_params params, size_t n_params)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "optim: out is NULL");
    *out = NULL;
    tm_status s = tm_optim_params_check(&params);
    if (s != TM_OK) return s;

    int overflow = 0;
    size_t count = state_floats(&params, n_params, &overflow);
    size_t bytes = 0;
    if (overflow || !tm_mul_size(count, sizeof(float), &bytes))
        return tm_fail(TM_ERR_NOMEM, "optim: state for %zu parameters overflows", n_params);

    tm_optim *o = tm_calloc(1, sizeof *o);
    if (!o) return tm_fail(TM_ERR_NOMEM, "optim: out of memory");
    o->p = params;
    o->n = n_params;
    o->state_count = count;
    if (count) {
        o->state = tm_calloc(count, sizeof(float));
        if (!o->state) {
            tm_free(o);
            return tm_fail(TM_ERR_NOMEM, "optim: out of memory for %zu floats of state", count);
        }
    }
    *out = o;
    return TM_OK;
}

void tm_optim_free(tm_optim *opt)
{
    if (!opt) return;
    tm_free(opt->state);
    tm_free(opt->decay_mask);
    tm_free(opt->update_mask);
    tm_free(opt);
}

float *tm_optim_state(tm_optim *opt, size_t *count)
{
    if (count) *count = opt ? opt->state_count : 0;
    return opt ? opt->state : NULL;
}

int64_t tm_optim_step_count(const tm_optim *opt) { return opt ? opt->step : 0; }

tm_status tm_optim_set_step_count(tm_optim *opt, int64_t step)
{
    if (!opt) return tm_fail(TM_ERR_INVALID, "optim: opt is NULL");
    if (step < 0) return tm_fail(TM_ERR_INVALID, "optim: step count must be >= 0 (got %lld)",
                                 (long long)step);
    opt->step = step;
    return TM_OK;
}

void tm_optim_reset(tm_optim *opt)
{
    if (!opt) return;
    if (opt->state) memset(opt->state, 0, opt->state_count * sizeof(float));
    opt->step = 0;
}

tm_optim_params tm_optim_get_params(const tm_optim *opt)
{
    if (!opt) return tm_optim_default_params(TM_OPTIM_SGD);
    return opt->p;
}

size_t tm_optim_num_params(const tm_optim *opt) { return opt ? opt->n : 0; }

/* Shared by the decay and update masks: copies mask into *dst (allocating
 * it), or frees it for NULL. */
static tm_status set_mask(tm_optim *opt, uint8_t **dst, const uint8_t *mask, const char *what)
{
    if (!opt) return tm_fail(TM_ERR_INVALID, "optim: opt is NULL");
    if (!mask) {
        tm_free(*dst);
        *dst = NULL;
        return TM_OK;
    }
    if (!*dst && opt->n) {
        *dst = tm_alloc(opt->n);
        if (!*dst) return tm_fail(TM_ERR_NOMEM, "optim: out of memory for the %s mask", what);
    }
    if (opt->n) memcpy(*dst, mask, opt->n);
    return TM_OK;
}

static tm_status set_range(tm_optim *opt, uint8_t **dst, size_t begin, size_t end, int on,
                           const char *what)
{
    if (!opt) return tm_fail(TM_ERR_INVALID, "optim: opt is NULL");
    if (begin > end || end > opt->n)
        return tm_fail(TM_ERR_INVALID, "optim: %s range [%zu, %zu) outside [0, %zu)", what, begin,
                       end, opt->n);
    if (begin == end) return TM_OK;
    if (!*dst) {
        *dst = tm_alloc(opt->n);
        if (!*dst) return tm_fail(TM_ERR_NOMEM, "optim: out of memory for the %s mask", what);
        memset(*dst, 1, opt->n);
    }
    memset(*dst + begin, on ? 1 : 0, end - begin);
    return TM_OK;
}

tm_status tm_optim_set_decay_mask(tm_optim *opt, const uint8_t *mask)
{
    return set_mask(opt, opt ? &opt->decay_mask : NULL, mask, "decay");
}

tm_status tm_optim_set_decay_range(tm_optim *opt, size_t begin, size_t end, int decay)
{
    return set_range(opt, opt ? &opt->decay_mask : NULL, begin, end, decay, "decay");
}

tm_status tm_optim_set_update_mask(tm_optim *opt, const uint8_t *mask)
{
    return set_mask(opt, opt ? &opt->update_mask : NULL, mask, "update");
}

tm_status tm_optim_set_update_range(tm_optim *opt, size_t begin, size_t end, int update)
{
    return set_range(opt, opt ? &opt->update_mask : NULL, begin, end, update, "update");
}

size_t tm_optim_update_count(const tm_optim *opt)
{
    if (!opt) return 0;
    if (!opt->update_mask) return opt->n;
    size_t k = 0;
    for (size_t i = 0; i < opt->n; i++) k += opt->update_mask[i] != 0;
    return k;
}

/* ------------------------------------------------------------- updates */

typedef struct {
    const tm_optim *opt;
    float *p;       /* (n) */
    const float *g; /* (n) */
    size_t n;
    int64_t ntasks;
    int first;           /* SGD: the step that initialises momentum */
    float neg_lr;        /* SGD */
    float one_minus_damp; /* SGD */
    float decay_mul;     /* AdamW: 1 - lr * wd */
    float one_minus_b1, one_minus_b2; /* AdamW */
    float neg_step_size; /* AdamW: -lr / (1 - beta1^t) */
    float bc2_sqrt;      /* AdamW: sqrt(1 - beta2^t) */
} step_ctx;

static void task_range(const step_ctx *c, int64_t i, size_t *b, size_t *e)
{
    int64_t lo, hi;
    tm_split_range((int64_t)c->n, i, c->ntasks, &lo, &hi);
    *b = (size_t)lo;
    *e = (size_t)hi;
}

/* torch.optim.SGD: d = g + wd p; buf = d (first step) or mom buf + (1 -
 * damp) d; d = d + mom buf (Nesterov) or buf; p -= lr d. */
static void sgd_task(void *ctx, int64_t i, int64_t n)
{
    const step_ctx *c = ctx;
    const tm_optim_params *hp = &c->opt->p;
    const uint8_t *mask = c->opt->decay_mask;
    const uint8_t *upd = c->opt->update_mask;
    float *buf = c->opt->state; /* (n) or NULL without momentum */
    float *p = c->p;
    const float *g = c->g;
    const float wd = hp->weight_decay, mom = hp->momentum;
    size_t b, e;
    (void)n;
    task_range(c, i, &b, &e);
    for (size_t j = b; j < e; j++) {
        if (upd && !upd[j]) continue; /* frozen: no update, no state change */
        float d = g[j];
        if (wd != 0 && (!mask || mask[j])) d = d + wd * p[j];
        if (buf) {
            if (c->first) buf[j] = d;
            else buf[j] = buf[j] * mom + c->one_minus_damp * d;
            d = hp->nesterov ? d + mom * buf[j] : buf[j];
        }
        p[j] = p[j] + c->neg_lr * d;
    }
}

/* torch.optim.AdamW: p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v +
 * (1 - b2) g g; p += -(lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps). */
static void adamw_task(void *ctx, int64_t i, int64_t n)
{
    const step_ctx *c = ctx;
    const tm_optim_params *hp = &c->opt->p;
    const uint8_t *mask = c->opt->decay_mask;
    const uint8_t *upd = c->opt->update_mask;
    float *m = c->opt->state;          /* (n) */
    float *v = c->opt->state + c->n;   /* (n) */
    float *p = c->p;
    const float *g = c->g;
    const int decay = hp->weight_decay != 0;
    const float b1 = (float)hp->beta1, b2 = (float)hp->beta2, eps = hp->eps;
    size_t b, e;
    (void)n;
    task_range(c, i, &b, &e);
    for (size_t j = b; j < e; j++) {
        if (upd && !upd[j]) continue; /* frozen: no update, no state change */
        float pj = p[j];
        if (decay && (!mask || mask[j])) pj = pj * c->decay_mul;
        float mj = m[j] * b1 + c->one_minus_b1 * g[j];
        float vj = v[j] * b2 + c->one_minus_b2 * g[j] * g[j];
        float denom = sqrtf(vj) / c->bc2_sqrt + eps;
        m[j] = mj;
        v[j] = vj;
        p[j] = pj + c->neg_step_size * mj / denom;
    }
}

tm_status tm_optim_step(tm_optim *opt, float *params, const float *grads, float lr)
{
    if (!opt) return tm_fail(TM_ERR_INVALID, "optim: opt is NULL");
    if (lr == TM_OPTIM_LR_DEFAULT) lr = opt->p.lr;
    if (!finite_f(lr) || lr < 0)
        return tm_fail(TM_ERR_INVALID, "optim: step lr must be finite and >= 0 (got %g)", lr);
    if (opt->n && (!params || !grads))
        return tm_fail(TM_ERR_INVALID, "optim: params or grads is NULL");
    if (opt->step == INT64_MAX) return tm_fail(TM_ERR_LIMIT, "optim: step count overflow");

    step_ctx c;
    memset(&c, 0, sizeof c);
    c.opt = opt;
    c.p = params;
    c.g = grads;
    c.n = opt->n;
    c.ntasks = (int64_t)((opt->n + TM_OPTIM_CHUNK - 1) / TM_OPTIM_CHUNK);

    const tm_optim_params *hp = &opt->p;
    if (hp->kind == TM_OPTIM_SGD) {
        c.first = opt->step == 0;
        c.neg_lr = -lr;
        c.one_minus_damp = (float)(1.0 - (double)hp->dampening);
        if (c.ntasks) tm_parallel_for(c.ntasks, sgd_task, &c);
    } else {
        /* Bias corrections in double from the 1-based step, as torch does
         * them on Python floats, then rounded once to float. */
        double t = (double)(opt->step + 1);
        double bc1 = 1.0 - pow(hp->beta1, t);
        double bc2 = 1.0 - pow(hp->beta2, t);
        c.decay_mul = (float)(1.0 - (double)lr * (double)hp->weight_decay);
        c.one_minus_b1 = (float)(1.0 - hp->beta1);
        c.one_minus_b2 = (float)(1.0 - hp->beta2);
        c.neg_step_size = (float)(-(double)lr / bc1);
        c.bc2_sqrt = (float)sqrt(bc2);
        if (c.ntasks) tm_parallel_for(c.ntasks, adamw_task, &c);
    }
    opt->step++;
    return TM_OK;
}

/* ------------------------------------------------------------ clipping */

/* The norm is summed over at most TM_NORM_MAX_CHUNKS chunks of at least
 * TM_NORM_MIN_CHUNK elements: the split depends on n alone, the partial sums
 * live on the stack (no allocation in a training step) and are added in
 * index order. */
#define TM_NORM_MIN_CHUNK ((size_t)8192)
#define TM_NORM_MAX_CHUNKS 1024

typedef struct {
    const float *g;
    float *gw; /* the same buffer, writable, for scaling */
    size_t n, chunk;
    double *partial; /* (nchunks) */
    float coef;
} norm_ctx;

static void chunk_bounds(const norm_ctx *c, int64_t i, size_t *b, size_t *e)
{
    *b = (size_t)i * c->chunk;
    *e = *b + c->chunk < c->n ? *b + c->chunk : c->n;
}

static void sumsq_task(void *ctx, int64_t i, int64_t n)
{
    norm_ctx *c = ctx;
    size_t b, e, j;
    (void)n;
    chunk_bounds(c, i, &b, &e);
    /* Four independent accumulators (a fixed pattern) for speed. */
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (j = b; j + 4 <= e; j += 4) {
        double x0 = c->g[j], x1 = c->g[j + 1], x2 = c->g[j + 2], x3 = c->g[j + 3];
        s0 += x0 * x0;
        s1 += x1 * x1;
        s2 += x2 * x2;
        s3 += x3 * x3;
    }
    for (; j < e; j++) {
        double x = c->g[j];
        s0 += x * x;
    }
    c->partial[i] = (s0 + s1) + (s2 + s3);
}

static void scale_task(void *ctx, int64_t i, int64_t n)
{
    norm_ctx *c = ctx;
    size_t b, e;
    (void)n;
    chunk_bounds(c, i, &b, &e);
    for (size_t j = b; j < e; j++) c->gw[j] *= c->coef;
}

static int64_t norm_setup(norm_ctx *c, const float *g, size_t n, double *partial)
{
    memset(c, 0, sizeof *c);
    c->g = g;
    c->n = n;
    c->partial = partial;
    size_t chunk = (n + TM_NORM_MAX_CHUNKS - 1) / TM_NORM_MAX_CHUNKS;
    if (chunk < TM_NORM_MIN_CHUNK) chunk = TM_NORM_MIN_CHUNK;
    c->chunk = chunk;
    return (int64_t)((n + chunk - 1) / chunk);
}

static double norm_run(norm_ctx *c, int64_t nchunks)
{
    if (nchunks == 0) return 0.0;
    if (nchunks == 1) sumsq_task(c, 0, 1);
    else tm_parallel_for(nchunks, sumsq_task, c);
    double s = 0;
    for (int64_t i = 0; i < nchunks; i++) s += c->partial[i];
    return sqrt(s);
}

tm_status tm_grad_norm(const float *grads, size_t n, double *norm_out)
{
    if (!norm_out) return tm_fail(TM_ERR_INVALID, "grad_norm: norm_out is NULL");
    if (n && !grads) return tm_fail(TM_ERR_INVALID, "grad_norm: grads is NULL");
    double partial[TM_NORM_MAX_CHUNKS];
    norm_ctx c;
    int64_t nchunks = norm_setup(&c, grads, n, partial);
    *norm_out = norm_run(&c, nchunks);
    return TM_OK;
}

tm_status tm_clip_grad_norm(float *grads, size_t n, float max_norm, float *total_norm_out)
{
    if (!(max_norm > 0))
        return tm_fail(TM_ERR_INVALID, "clip_grad_norm: max_norm must be > 0 (got %g)", max_norm);
    if (n && !grads) return tm_fail(TM_ERR_INVALID, "clip_grad_norm: grads is NULL");
    double partial[TM_NORM_MAX_CHUNKS];
    norm_ctx c;
    int64_t nchunks = norm_setup(&c, grads, n, partial);
    double norm = norm_run(&c, nchunks);
    if (total_norm_out) *total_norm_out = (float)norm;
    if (!isfinite(norm)) return TM_OK; /* the caller skips the step */

    /* torch: coef = max_norm / (norm + 1e-6), clamped to at most 1, with
     * the norm held as a float. */
    double coef = (double)max_norm / ((double)(float)norm + 1e-6);
    if (!(coef < 1.0)) return TM_OK;
    c.gw = grads;
    c.coef = (float)coef;
    if (nchunks == 1) scale_task(&c, 0, 1);
    else tm_parallel_for(nchunks, scale_task, &c);
    return TM_OK;
}
