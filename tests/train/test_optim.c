/* Optimizers and gradient clipping: golden vectors from PyTorch
 * (scripts/gen_optim_vectors.py -> tests/data/optim/{sgd,adamw,clip}.txt),
 * error statuses for bad settings, checkpoint round trips, weight-decay
 * masks, allocation failures and thread-count independence. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/optim.h"

/* Tolerances against torch: the updates are the same float operations in
 * the same order, but torch's vector kernels fuse multiply-adds, so the
 * results drift by an ulp or two per step. Measured over these 10 steps:
 * params within 2.4e-7 absolute (values of order 1), state within 1e-6
 * relative; the limits leave about a factor 4. */
#define PARAM_ATOL 1e-6
#define PARAM_RTOL 1e-6
#define STATE_ATOL 1e-9
#define STATE_RTOL 4e-6

/* ------------------------------------------------ vector file reader */

/* "name count v0 v1 ..." per line, '#' comment lines. */
typedef struct {
    char name[64];
    int64_t n;
    double *v; /* (n) */
} vec;

typedef struct {
    vec items[64];
    int count;
} vecfile;

static int vf_load(vecfile *f, const char *rel)
{
    memset(f, 0, sizeof *f);
    const char *path = test_data_path(rel);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "cannot open %s (set TM_SOURCE_DIR)\n", path);
        return 0;
    }
    int ok = 1;
    for (;;) {
        int c = fgetc(fp);
        if (c == EOF) break;
        if (c == '#' || c == '\n') {
            while (c != '\n' && c != EOF) c = fgetc(fp);
            continue;
        }
        ungetc(c, fp);
        if (f->count == 64) { ok = 0; break; }
        vec *v = &f->items[f->count];
        long long n;
        if (fscanf(fp, "%63s %lld", v->name, &n) != 2 || n < 0 || n > 1000000) { ok = 0; break; }
        v->n = n;
        v->v = calloc((size_t)n + 1, sizeof(double));
        for (int64_t i = 0; i < n; i++)
            if (fscanf(fp, "%lf", &v->v[i]) != 1) ok = 0;
        f->count++;
        if (!ok) break;
    }
    fclose(fp);
    if (!ok) fprintf(stderr, "%s: malformed\n", path);
    return ok;
}

static void vf_free(vecfile *f)
{
    for (int i = 0; i < f->count; i++) free(f->items[i].v);
    f->count = 0;
}

static const vec *vf_get(const vecfile *f, const char *name)
{
    for (int i = 0; i < f->count; i++)
        if (!strcmp(f->items[i].name, name)) return &f->items[i];
    fprintf(stderr, "missing array %s\n", name);
    test_checks++;
    test_failures++;
    return NULL;
}

/* A float copy of an array (the caller frees). */
static float *vf_f32(const vec *v)
{
    float *x = malloc(sizeof(float) * (size_t)(v->n + 1));
    for (int64_t i = 0; i < v->n; i++) x[i] = (float)v->v[i];
    return x;
}

/* --------------------------------------------------------- golden runs */

static void golden_case(const vecfile *f, const char *name)
{
    char key[96];
    const vec *p0 = vf_get(f, "p0"), *grads = vf_get(f, "grads");
    snprintf(key, sizeof key, "%s.config", name);
    const vec *cfg = vf_get(f, key);
    snprintf(key, sizeof key, "%s.lrs", name);
    const vec *lrs = vf_get(f, key);
    snprintf(key, sizeof key, "%s.trace", name);
    const vec *trace = vf_get(f, key);
    snprintf(key, sizeof key, "%s.state", name);
    const vec *state = vf_get(f, key);
    if (!p0 || !grads || !cfg || !lrs || !trace || !state || cfg->n != 9) return;
    const int64_t n = p0->n, steps = lrs->n;
    CHECK(grads->n == steps * n && trace->n == steps * n);
    if (grads->n != steps * n || trace->n != steps * n) return;

    tm_optim_params hp = tm_optim_default_params((tm_optim_kind)(int)cfg->v[0]);
    hp.weight_decay = (float)cfg->v[1];
    hp.momentum = (float)cfg->v[2];
    hp.dampening = (float)cfg->v[3];
    hp.nesterov = (int)cfg->v[4];
    hp.beta1 = cfg->v[5];
    hp.beta2 = cfg->v[6];
    hp.eps = (float)cfg->v[7];
    size_t nodecay_from = (size_t)cfg->v[8];

    tm_optim *opt = NULL;
    CHECK_OK(tm_optim_new(&opt, hp, (size_t)n));
    if (!opt) return;
    CHECK_OK(tm_optim_set_decay_range(opt, nodecay_from, (size_t)n, 0));

    float *p = vf_f32(p0), *g = vf_f32(grads), *want = vf_f32(trace);
    for (int64_t t = 0; t < steps; t++) {
        CHECK(tm_optim_step_count(opt) == t);
        CHECK_OK(tm_optim_step(opt, p, g + t * n, (float)lrs->v[t]));
        char what[128];
        snprintf(what, sizeof what, "%s params after step %lld", name, (long long)t + 1);
        check_close(what, p, want + t * n, n, PARAM_ATOL, PARAM_RTOL);
    }
    size_t count = 99;
    float *st = tm_optim_state(opt, &count);
    CHECK(count == (size_t)state->n);
    if (count == (size_t)state->n && count) {
        float *wst = vf_f32(state);
        snprintf(key, sizeof key, "%s state", name);
        check_close(key, st, wst, (int64_t)count, STATE_ATOL, STATE_RTOL);
        free(wst);
    }
    free(p);
    free(g);
    free(want);
    tm_optim_free(opt);
}

static void test_golden(void)
{
    vecfile f;
    static const char *sgd[] = {"sgd_plain", "sgd_momentum", "sgd_nesterov", "sgd_masked"};
    static const char *adamw[] = {"adamw_default", "adamw_custom", "adamw_masked"};
    CHECK(vf_load(&f, "optim/sgd.txt"));
    for (size_t i = 0; i < sizeof sgd / sizeof *sgd; i++) golden_case(&f, sgd[i]);
    vf_free(&f);
    CHECK(vf_load(&f, "optim/adamw.txt"));
    for (size_t i = 0; i < sizeof adamw / sizeof *adamw; i++) golden_case(&f, adamw[i]);
    vf_free(&f);

    CHECK(vf_load(&f, "optim/clip.txt"));
    static const char *clip[] = {"clip_big", "clip_small"};
    for (int c = 0; c < 2; c++) {
        char key[64];
        snprintf(key, sizeof key, "%s.max_norm", clip[c]);
        const vec *mx = vf_get(&f, key);
        snprintf(key, sizeof key, "%s.in", clip[c]);
        const vec *in = vf_get(&f, key);
        snprintf(key, sizeof key, "%s.norm", clip[c]);
        const vec *nm = vf_get(&f, key);
        snprintf(key, sizeof key, "%s.out", clip[c]);
        const vec *out = vf_get(&f, key);
        if (!mx || !in || !nm || !out || in->n != out->n) continue;
        float *g = vf_f32(in), *want = vf_f32(out), norm = -1;
        CHECK_OK(tm_clip_grad_norm(g, (size_t)in->n, (float)mx->v[0], &norm));
        CHECK_NEAR(norm, nm->v[0], 0, 1e-6);
        check_close(clip[c], g, want, in->n, 1e-8, 1e-6);
        free(g);
        free(want);
    }
    vf_free(&f);
}

/* ------------------------------------------------------- bad settings */

static void expect_bad_params(tm_optim_params hp, const char *what)
{
    tm_optim *opt = (tm_optim *)&hp; /* must come back NULL */
    tm_clear_error();
    tm_status s = tm_optim_new(&opt, hp, 4);
    test_checks++;
    if (s != TM_ERR_INVALID || opt != NULL || !tm_last_error()[0]) {
        test_failures++;
        fprintf(stderr, "bad params %s: status %s, opt %p, message '%s'\n", what,
                tm_status_name(s), (void *)opt, tm_last_error());
    }
    CHECK_STATUS(tm_optim_params_check(&hp), TM_ERR_INVALID);
}

static void test_bad_settings(void)
{
    tm_optim_params sgd = tm_optim_default_params(TM_OPTIM_SGD), hp;
    tm_optim_params adam = tm_optim_default_params(TM_OPTIM_ADAMW);
    CHECK_OK(tm_optim_params_check(&sgd));
    CHECK_OK(tm_optim_params_check(&adam));

    hp = sgd; hp.lr = -0.1f; expect_bad_params(hp, "negative lr");
    hp = sgd; hp.lr = NAN; expect_bad_params(hp, "NaN lr");
    hp = adam; hp.lr = INFINITY; expect_bad_params(hp, "inf lr");
    hp = sgd; hp.weight_decay = -1e-4f; expect_bad_params(hp, "negative weight decay");
    hp = sgd; hp.momentum = -0.5f; expect_bad_params(hp, "negative momentum");
    hp = sgd; hp.momentum = 0.9f; hp.dampening = 1.5f; expect_bad_params(hp, "dampening > 1");
    hp = sgd; hp.nesterov = 1; expect_bad_params(hp, "nesterov without momentum");
    hp = sgd; hp.nesterov = 1; hp.momentum = 0.9f; hp.dampening = 0.1f;
    expect_bad_params(hp, "nesterov with dampening");
    hp = adam; hp.beta1 = 1.0; expect_bad_params(hp, "beta1 = 1");
    hp = adam; hp.beta1 = -0.1; expect_bad_params(hp, "beta1 < 0");
    hp = adam; hp.beta2 = 1.5; expect_bad_params(hp, "beta2 > 1");
    hp = adam; hp.beta2 = NAN; expect_bad_params(hp, "beta2 NaN");
    hp = adam; hp.eps = 0.0f; expect_bad_params(hp, "eps = 0");
    hp = adam; hp.kind = (tm_optim_kind)7; expect_bad_params(hp, "unknown kind");
    /* AdamW ignores the SGD-only fields and the reverse. */
    hp = adam; hp.nesterov = 1;
    CHECK_OK(tm_optim_params_check(&hp));
    CHECK_STATUS(tm_optim_new(NULL, sgd, 4), TM_ERR_INVALID);

    tm_optim *opt = NULL;
    float p[4] = {1, 2, 3, 4}, g[4] = {1, 1, 1, 1}, keep[4];
    memcpy(keep, p, sizeof p);
    CHECK_OK(tm_optim_new(&opt, adam, 4));
    CHECK_STATUS(tm_optim_step(opt, p, g, -0.5f), TM_ERR_INVALID);
    CHECK_STATUS(tm_optim_step(opt, p, g, NAN), TM_ERR_INVALID);
    CHECK_STATUS(tm_optim_step(opt, p, g, INFINITY), TM_ERR_INVALID);
    CHECK_STATUS(tm_optim_step(opt, NULL, g, 0.1f), TM_ERR_INVALID);
    CHECK_STATUS(tm_optim_step(opt, p, NULL, 0.1f), TM_ERR_INVALID);
    CHECK_STATUS(tm_optim_step(NULL, p, g, 0.1f), TM_ERR_INVALID);
    CHECK(tm_optim_step_count(opt) == 0 && !memcmp(p, keep, sizeof p));
    CHECK_STATUS(tm_optim_set_step_count(opt, -1), TM_ERR_INVALID);
    CHECK_STATUS(tm_optim_set_decay_range(opt, 3, 2, 0), TM_ERR_INVALID);
    CHECK_STATUS(tm_optim_set_decay_range(opt, 0, 5, 0), TM_ERR_INVALID);
    CHECK_OK(tm_optim_set_decay_range(opt, 4, 4, 0));
    tm_optim_free(opt);
    tm_optim_free(NULL);

    CHECK_STATUS(tm_clip_grad_norm(g, 4, 0.0f, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_clip_grad_norm(g, 4, -1.0f, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_clip_grad_norm(g, 4, NAN, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_clip_grad_norm(NULL, 4, 1.0f, NULL), TM_ERR_INVALID);
    double dn;
    CHECK_STATUS(tm_grad_norm(NULL, 4, &dn), TM_ERR_INVALID);
    CHECK_STATUS(tm_grad_norm(g, 4, NULL), TM_ERR_INVALID);
}

/* ------------------------------------------------- state and features */

static void test_state_layout(void)
{
    tm_optim *opt = NULL;
    size_t count = 99;
    tm_optim_params hp = tm_optim_default_params(TM_OPTIM_SGD);
    CHECK_OK(tm_optim_new(&opt, hp, 10));
    CHECK(tm_optim_state(opt, &count) == NULL && count == 0);
    CHECK(tm_optim_num_params(opt) == 10);
    tm_optim_free(opt);

    hp.momentum = 0.9f;
    CHECK_OK(tm_optim_new(&opt, hp, 10));
    CHECK(tm_optim_state(opt, &count) != NULL && count == 10);
    CHECK(tm_optim_get_params(opt).momentum == 0.9f);
    tm_optim_free(opt);

    hp = tm_optim_default_params(TM_OPTIM_ADAMW);
    CHECK_OK(tm_optim_new(&opt, hp, 10));
    CHECK(tm_optim_state(opt, &count) != NULL && count == 20);
    tm_optim_free(opt);

    /* An empty buffer is valid: steps do nothing but count. */
    CHECK_OK(tm_optim_new(&opt, hp, 0));
    CHECK_OK(tm_optim_step(opt, NULL, NULL, 0.1f));
    CHECK(tm_optim_step_count(opt) == 1);
    tm_optim_free(opt);
}

/* Values of SGD's first step by hand: p - lr (g + wd p), and AdamW's first
 * step moves every element by about lr (m_hat / sqrt(v_hat) = sign g). */
static void test_by_hand(void)
{
    tm_optim *opt = NULL;
    tm_optim_params hp = tm_optim_default_params(TM_OPTIM_SGD);
    hp.weight_decay = 0.5f;
    hp.lr = 0.25f;
    float p[3] = {1.0f, -2.0f, 0.5f}, g[3] = {0.5f, 1.0f, -1.0f};
    CHECK_OK(tm_optim_new(&opt, hp, 3));
    CHECK_OK(tm_optim_step(opt, p, g, TM_OPTIM_LR_DEFAULT));
    CHECK(p[0] == 1.0f - 0.25f * (0.5f + 0.5f));
    CHECK(p[1] == -2.0f - 0.25f * (1.0f - 1.0f));
    CHECK(p[2] == 0.5f - 0.25f * (-1.0f + 0.25f));
    tm_optim_free(opt);

    hp = tm_optim_default_params(TM_OPTIM_ADAMW);
    hp.weight_decay = 0;
    float q[3] = {1.0f, -2.0f, 0.5f}, h[3] = {3.0f, -0.01f, 100.0f};
    CHECK_OK(tm_optim_new(&opt, hp, 3));
    CHECK_OK(tm_optim_step(opt, q, h, 0.1f));
    CHECK_NEAR(q[0], 0.9, 1e-6, 0);
    CHECK_NEAR(q[1], -1.9, 1e-5, 0);
    CHECK_NEAR(q[2], 0.4, 1e-6, 0);
    tm_optim_free(opt);
}

static void fill(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    test_fill_uniform(x, (int64_t)n, seed, lo, hi);
}

/* Five steps, a checkpoint (state + step count) into a fresh optimizer,
 * five more: bit-identical to ten straight steps. */
static void test_checkpoint(tm_optim_params hp)
{
    const size_t n = 1000;
    float *pa = malloc(n * 4), *pb = malloc(n * 4), *g = malloc(10 * n * 4);
    fill(pa, n, 1, -1, 1);
    memcpy(pb, pa, n * 4);
    fill(g, 10 * n, 2, -1, 1);
    tm_optim *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(tm_optim_new(&a, hp, n));
    CHECK_OK(tm_optim_new(&b, hp, n));
    CHECK_OK(tm_optim_new(&c, hp, n));
    for (int t = 0; t < 10; t++) CHECK_OK(tm_optim_step(a, pa, g + t * n, 0.01f));
    for (int t = 0; t < 5; t++) CHECK_OK(tm_optim_step(b, pb, g + t * n, 0.01f));
    size_t cb, cc;
    float *sb = tm_optim_state(b, &cb), *sc = tm_optim_state(c, &cc);
    CHECK(cb == cc);
    if (cb) memcpy(sc, sb, cb * 4);
    CHECK_OK(tm_optim_set_step_count(c, tm_optim_step_count(b)));
    for (int t = 5; t < 10; t++) CHECK_OK(tm_optim_step(c, pb, g + t * n, 0.01f));
    CHECK(!memcmp(pa, pb, n * 4));
    CHECK(tm_optim_step_count(c) == 10);

    /* reset gives a fresh optimizer. */
    tm_optim_reset(a);
    CHECK(tm_optim_step_count(a) == 0);
    size_t ca;
    float *sa = tm_optim_state(a, &ca);
    for (size_t i = 0; i < ca; i++) CHECK(sa[i] == 0.0f);
    tm_optim_free(a);
    tm_optim_free(b);
    tm_optim_free(c);
    free(pa);
    free(pb);
    free(g);
}

/* A byte mask and decay ranges give the same result; a mask of all ones
 * is the same as none. */
static void test_decay_mask(void)
{
    const size_t n = 300;
    float p0[300], g[300], a[300], b[300], c[300];
    uint8_t mask[300];
    fill(p0, n, 3, -1, 1);
    fill(g, n, 4, -1, 1);
    for (size_t i = 0; i < n; i++) mask[i] = (i < 100 || i >= 250);
    tm_optim_params hp = tm_optim_default_params(TM_OPTIM_ADAMW);
    hp.weight_decay = 0.3f;
    tm_optim *oa = NULL, *ob = NULL, *oc = NULL;
    CHECK_OK(tm_optim_new(&oa, hp, n));
    CHECK_OK(tm_optim_new(&ob, hp, n));
    CHECK_OK(tm_optim_new(&oc, hp, n));
    CHECK_OK(tm_optim_set_decay_mask(oa, mask));
    CHECK_OK(tm_optim_set_decay_range(ob, 100, 250, 0));
    CHECK_OK(tm_optim_set_decay_range(oc, 0, n, 0));
    CHECK_OK(tm_optim_set_decay_mask(oc, NULL)); /* back to decaying everything */
    memcpy(a, p0, sizeof a);
    memcpy(b, p0, sizeof b);
    memcpy(c, p0, sizeof c);
    for (int t = 0; t < 3; t++) {
        CHECK_OK(tm_optim_step(oa, a, g, 0.1f));
        CHECK_OK(tm_optim_step(ob, b, g, 0.1f));
        CHECK_OK(tm_optim_step(oc, c, g, 0.1f));
    }
    CHECK(!memcmp(a, b, sizeof a));
    /* Masked elements differ from the fully decayed run, others do not. */
    int same_out = 1, differ_in = 1;
    for (size_t i = 0; i < n; i++) {
        if (mask[i] && a[i] != c[i]) same_out = 0;
        if (!mask[i] && a[i] == c[i]) differ_in = 0;
    }
    CHECK(same_out && differ_in);
    tm_optim_free(oa);
    tm_optim_free(ob);
    tm_optim_free(oc);
}

static void test_clip_edges(void)
{
    float g[2] = {3.0f, 4.0f}, norm = 0;
    CHECK_OK(tm_clip_grad_norm(g, 2, 1.0f, &norm));
    CHECK(norm == 5.0f);
    CHECK_NEAR(g[0], 0.6, 1e-6, 0);
    CHECK_NEAR(g[1], 0.8, 1e-6, 0);

    /* Under the limit, or an infinite limit: untouched. */
    float h[2] = {3.0f, 4.0f};
    CHECK_OK(tm_clip_grad_norm(h, 2, 10.0f, &norm));
    CHECK(h[0] == 3.0f && h[1] == 4.0f && norm == 5.0f);
    CHECK_OK(tm_clip_grad_norm(h, 2, INFINITY, NULL));
    CHECK(h[0] == 3.0f && h[1] == 4.0f);

    /* Non-finite gradients: reported, left alone, status OK. */
    float bad[3] = {1.0f, INFINITY, 2.0f};
    CHECK_OK(tm_clip_grad_norm(bad, 3, 1.0f, &norm));
    CHECK(isinf(norm) && bad[0] == 1.0f && bad[2] == 2.0f);
    float nan3[3] = {1.0f, NAN, 2.0f};
    CHECK_OK(tm_clip_grad_norm(nan3, 3, 1.0f, &norm));
    CHECK(isnan(norm) && nan3[0] == 1.0f);

    /* Empty and all-zero. */
    CHECK_OK(tm_clip_grad_norm(NULL, 0, 1.0f, &norm));
    CHECK(norm == 0.0f);
    float z[4] = {0};
    CHECK_OK(tm_clip_grad_norm(z, 4, 1.0f, &norm));
    CHECK(norm == 0.0f && z[0] == 0.0f);

    /* The double norm against a long double sum on a big vector. */
    const size_t n = 3000001;
    float *x = malloc(n * 4);
    fill(x, n, 5, -2, 2);
    long double s = 0;
    for (size_t i = 0; i < n; i++) s += (long double)x[i] * x[i];
    double dn = 0;
    CHECK_OK(tm_grad_norm(x, n, &dn));
    CHECK_NEAR(dn, (double)sqrtl(s), 0, 1e-12);
    free(x);
}

/* Allocation failures come back as TM_ERR_NOMEM with nothing leaked. */
static void test_alloc_failures(void)
{
    tm_optim_params hp = tm_optim_default_params(TM_OPTIM_ADAMW);
    for (long k = 1; k <= 2; k++) {
        tm_optim *opt = (tm_optim *)&hp;
        tm_alloc_fail_after(k);
        tm_status s = tm_optim_new(&opt, hp, 100);
        tm_alloc_fail_after(0);
        CHECK(s == TM_ERR_NOMEM && opt == NULL);
    }
    tm_optim *opt = NULL;
    CHECK_OK(tm_optim_new(&opt, hp, 100));
    tm_alloc_fail_after(1);
    tm_status s = tm_optim_set_decay_range(opt, 0, 10, 0);
    tm_alloc_fail_after(0);
    CHECK(s == TM_ERR_NOMEM);
    tm_optim_free(opt);
    CHECK_STATUS(tm_optim_new(&opt, hp, SIZE_MAX / 2), TM_ERR_NOMEM);
}

/* --------------------------------------------- thread-count independence */

static void run_steps(tm_optim_params hp, float *p, const float *g, size_t n, float *state_out)
{
    tm_optim *opt = NULL;
    CHECK_OK(tm_optim_new(&opt, hp, n));
    if (!opt) return;
    CHECK_OK(tm_optim_set_decay_range(opt, n / 3, n / 2, 0));
    for (int t = 0; t < 3; t++) CHECK_OK(tm_optim_step(opt, p, g + (size_t)t * n, 0.01f));
    size_t count;
    float *st = tm_optim_state(opt, &count);
    memcpy(state_out, st, count * 4);
    tm_optim_free(opt);
}

static void test_threads(void)
{
    const int saved = tm_get_num_threads();
    static const int threads[] = {1, 2, 3, 7};
    const size_t n = 100003; /* several update chunks, ragged end */
    const size_t nc = (1u << 20) + 5; /* many norm chunks */
    float *p0 = malloc(n * 4), *g = malloc(3 * n * 4);
    float *gc = malloc(nc * 4), *gc_ref = malloc(nc * 4), *gc_run = malloc(nc * 4);
    float *ref[2], *ref_state[2], *p = malloc(n * 4), *st = malloc(2 * n * 4);
    fill(p0, n, 6, -1, 1);
    fill(g, 3 * n, 7, -1, 1);
    fill(gc, nc, 8, -1, 1);
    tm_optim_params hp[2];
    hp[0] = tm_optim_default_params(TM_OPTIM_ADAMW);
    hp[1] = tm_optim_default_params(TM_OPTIM_SGD);
    hp[1].momentum = 0.9f;
    hp[1].nesterov = 1;
    hp[1].weight_decay = 0.01f;
    float norm_ref = 0;
    for (size_t ti = 0; ti < sizeof threads / sizeof *threads; ti++) {
        CHECK_OK(tm_set_num_threads(threads[ti]));
        for (int k = 0; k < 2; k++) {
            memcpy(p, p0, n * 4);
            run_steps(hp[k], p, g, n, st);
            if (ti == 0) {
                ref[k] = malloc(n * 4);
                ref_state[k] = malloc(2 * n * 4);
                memcpy(ref[k], p, n * 4);
                memcpy(ref_state[k], st, 2 * n * 4);
            } else {
                size_t sn = k == 0 ? 2 * n : n;
                CHECK(!memcmp(ref[k], p, n * 4));
                CHECK(!memcmp(ref_state[k], st, sn * 4));
            }
        }
        float norm = 0;
        memcpy(gc_run, gc, nc * 4);
        CHECK_OK(tm_clip_grad_norm(gc_run, nc, 10.0f, &norm));
        if (ti == 0) {
            norm_ref = norm;
            memcpy(gc_ref, gc_run, nc * 4);
            CHECK(norm > 10.0f); /* so the scaling path runs too */
        } else {
            CHECK(norm == norm_ref);
            CHECK(!memcmp(gc_ref, gc_run, nc * 4));
        }
    }
    CHECK_OK(tm_set_num_threads(saved));
    for (int k = 0; k < 2; k++) {
        free(ref[k]);
        free(ref_state[k]);
    }
    free(p0);
    free(g);
    free(gc);
    free(gc_ref);
    free(gc_run);
    free(p);
    free(st);
}

int main(void)
{
    test_golden();
    test_bad_settings();
    test_state_layout();
    test_by_hand();
    tm_optim_params hp = tm_optim_default_params(TM_OPTIM_ADAMW);
    test_checkpoint(hp);
    hp = tm_optim_default_params(TM_OPTIM_SGD);
    hp.momentum = 0.9f;
    hp.dampening = 0.2f;
    hp.weight_decay = 1e-3f;
    test_checkpoint(hp);
    test_decay_mask();
    test_clip_edges();
    test_alloc_failures();
    test_threads();
    return test_finish("test_optim");
}
