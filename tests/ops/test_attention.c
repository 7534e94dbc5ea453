/*
 * Tests of tm_attention_forward / tm_attention_backward against a naive
 * double-precision reference that holds the full score matrix; finite
 * differences of the float kernel; bitwise equality across thread counts;
 * NULL gradients; accumulation into existing gradients; fully masked rows.
 * Every case runs on each kernel path the CPU has (AVX2 and plain C).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/ops.h"

typedef struct {
    const char *name;
    int64_t B, H, Tq, Tk, D;
    int causal;
    int mask;        /* 0 none; 1 padding-style -inf keys; 2 also finite biases;
                        3 batch 0 sees no key before 70 (a whole first block masked) */
    int all_masked;  /* batch 1 has every key masked */
    float scale_mul; /* scale = scale_mul / sqrt(D) */
} acase;

static const acase cases[] = {
    {"self_pad_148", 2, 3, 148, 148, 64, 0, 1, 0, 1.0f},
    {"causal_130_d24", 1, 2, 130, 130, 24, 1, 0, 0, 1.0f},
    {"causal_pad_bias_77_d17", 2, 1, 77, 77, 17, 1, 2, 0, 2.0f},
    {"cross_5_130", 1, 2, 5, 130, 64, 0, 1, 0, 1.0f},
    {"cross_5_130_causal", 1, 2, 5, 130, 24, 1, 1, 0, 1.0f},
    {"cross_1_64", 2, 1, 1, 64, 64, 0, 1, 0, 1.0f},
    {"cross_1_64_causal", 1, 1, 1, 64, 17, 1, 0, 0, 1.0f},
    {"cross_200_7_causal", 1, 2, 200, 7, 17, 1, 1, 0, 1.0f},
    {"cross_200_7", 1, 1, 200, 7, 24, 0, 2, 0, 1.0f},
    {"all_masked_9_70", 3, 1, 9, 70, 24, 0, 1, 1, 1.0f},
    {"odd_65_129_d5", 1, 2, 65, 129, 5, 0, 2, 0, 3.0f},
    {"peaky_148_causal", 1, 1, 148, 148, 64, 1, 1, 0, 4.0f},
    {"late_keys_40_130", 2, 1, 40, 130, 24, 0, 3, 0, 2.0f},
    {"wide_d80_70_33", 1, 2, 70, 33, 80, 0, 1, 0, 1.0f},
    {"wide_d130_causal", 1, 1, 20, 66, 130, 1, 2, 0, 1.0f},
};

static float *falloc(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* key_bias (B, Tk) for a case, or NULL. */
static float *make_bias(const acase *c)
{
    if (!c->mask && !c->all_masked) return NULL;
    float *kb = falloc(c->B * c->Tk);
    for (int64_t b = 0; b < c->B; b++) {
        for (int64_t j = 0; j < c->Tk; j++) {
            float x = c->mask == 2 ? 0.4f * sinf((float)(3 * j + b)) : 0.0f;
            if ((c->mask == 1 || c->mask == 2) && ((j + 3 * b) % 7 == 3 || j >= c->Tk - 5 * b))
                x = -INFINITY;
            if (c->mask == 3 && b == 0 && j < 70) x = -INFINITY;
            if (c->all_masked && b == 1) x = -INFINITY;
            kb[b * c->Tk + j] = x;
        }
    }
    return kb;
}

/* The reference in double with the whole (Tq, Tk) score matrix of a head:
 * out, lse and the gradients (added to dq, dk, dv, which hold float
 * copies of the kernel's starting values). */
static void reference(float *out, float *lse, float *dq, float *dk, float *dv, const float *q,
                      const float *k, const float *v, const float *kb, const float *dout,
                      const acase *c, float scale)
{
    const int64_t Tq = c->Tq, Tk = c->Tk, D = c->D;
    double *p = malloc((size_t)(Tq * Tk) * sizeof(double));
    double *gq = malloc((size_t)(Tq * D) * sizeof(double));
    double *gk = malloc((size_t)(Tk * D) * sizeof(double));
    double *gv = malloc((size_t)(Tk * D) * sizeof(double));
    for (int64_t bh = 0; bh < c->B * c->H; bh++) {
        const float *qh = q + bh * Tq * D, *kh = k + bh * Tk * D, *vh = v + bh * Tk * D;
        const float *goh = dout + bh * Tq * D;
        const float *bias = kb ? kb + (bh / c->H) * Tk : NULL;
        memset(gq, 0, (size_t)(Tq * D) * sizeof(double));
        memset(gk, 0, (size_t)(Tk * D) * sizeof(double));
        memset(gv, 0, (size_t)(Tk * D) * sizeof(double));
        for (int64_t i = 0; i < Tq; i++) {
            double *pi = p + i * Tk, mx = -INFINITY;
            for (int64_t j = 0; j < Tk; j++) {
                double s = 0;
                for (int64_t d = 0; d < D; d++) s += (double)qh[i * D + d] * kh[j * D + d];
                s = s * scale + (bias ? bias[j] : 0.0);
                if (c->causal && j > i + Tk - Tq) s = -INFINITY;
                pi[j] = s;
                if (s > mx) mx = s;
            }
            double sum = 0;
            for (int64_t j = 0; j < Tk; j++) {
                pi[j] = mx == -INFINITY ? 0.0 : exp(pi[j] - mx);
                sum += pi[j];
            }
            lse[bh * Tq + i] = sum > 0 ? (float)(mx + log(sum)) : -INFINITY;
            for (int64_t j = 0; j < Tk; j++) pi[j] = sum > 0 ? pi[j] / sum : 0.0;
            for (int64_t d = 0; d < D; d++) {
                double o = 0;
                for (int64_t j = 0; j < Tk; j++) o += pi[j] * vh[j * D + d];
                out[(bh * Tq + i) * D + d] = (float)o;
            }
            /* backward of row i */
            double dp_dot_p = 0;
            double *dp = malloc((size_t)Tk * sizeof(double));
            for (int64_t j = 0; j < Tk; j++) {
                double t = 0;
                for (int64_t d = 0; d < D; d++) t += (double)goh[i * D + d] * vh[j * D + d];
                dp[j] = t;
                dp_dot_p += pi[j] * t;
            }
            for (int64_t j = 0; j < Tk; j++) {
                double ds = pi[j] * (dp[j] - dp_dot_p) * scale;
                for (int64_t d = 0; d < D; d++) {
                    gq[i * D + d] += ds * kh[j * D + d];
                    gk[j * D + d] += ds * qh[i * D + d];
                    gv[j * D + d] += pi[j] * goh[i * D + d];
                }
            }
            free(dp);
        }
        for (int64_t x = 0; x < Tq * D; x++) dq[bh * Tq * D + x] += (float)gq[x];
        for (int64_t x = 0; x < Tk * D; x++) {
            dk[bh * Tk * D + x] += (float)gk[x];
            dv[bh * Tk * D + x] += (float)gv[x];
        }
    }
    free(p);
    free(gq);
    free(gk);
    free(gv);
}

typedef struct {
    float *q, *k, *v, *kb, *dout, *out, *lse, *dq, *dk, *dv, *work, *base_q, *base_kv;
    float scale;
} bufs;

static void bufs_new(bufs *t, const acase *c)
{
    const int64_t nq = c->B * c->H * c->Tq * c->D, nk = c->B * c->H * c->Tk * c->D;
    uint64_t seed = (uint64_t)(c->Tq * 1000 + c->Tk * 10 + c->D);
    t->q = falloc(nq);
    t->k = falloc(nk);
    t->v = falloc(nk);
    t->dout = falloc(nq);
    t->out = falloc(nq);
    t->lse = falloc(c->B * c->H * c->Tq);
    t->dq = falloc(nq);
    t->dk = falloc(nk);
    t->dv = falloc(nk);
    t->base_q = falloc(nq);
    t->base_kv = falloc(nk);
    t->work = falloc((int64_t)tm_attention_work_floats(c->B, c->H, c->Tq, c->Tk, c->D));
    t->kb = make_bias(c);
    test_fill_uniform(t->q, nq, seed + 1, -2.0f, 2.0f);
    test_fill_uniform(t->k, nk, seed + 2, -2.0f, 2.0f);
    test_fill_uniform(t->v, nk, seed + 3, -1.0f, 1.0f);
    test_fill_uniform(t->dout, nq, seed + 4, -1.0f, 1.0f);
    test_fill_uniform(t->base_q, nq, seed + 5, -0.5f, 0.5f);
    test_fill_uniform(t->base_kv, nk, seed + 6, -0.5f, 0.5f);
    t->scale = c->scale_mul / sqrtf((float)c->D);
}

static void bufs_free(bufs *t)
{
    float *all[] = {t->q,  t->k,  t->v,      t->kb,     t->dout, t->out, t->lse,
                    t->dq, t->dk, t->dv,     t->work,   t->base_q, t->base_kv};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
}

/* Forward, then backward into gradients that start at the base values. */
static void run_kernels(bufs *t, const acase *c, int want_q, int want_k, int want_v)
{
    const int64_t nq = c->B * c->H * c->Tq * c->D, nk = c->B * c->H * c->Tk * c->D;
    tm_attention_forward(t->out, t->lse, t->q, t->k, t->v, t->kb, c->B, c->H, c->Tq, c->Tk,
                         c->D, t->scale, c->causal);
    memcpy(t->dq, t->base_q, (size_t)nq * sizeof(float));
    memcpy(t->dk, t->base_kv, (size_t)nk * sizeof(float));
    memcpy(t->dv, t->base_kv, (size_t)nk * sizeof(float));
    tm_attention_backward(want_q ? t->dq : NULL, want_k ? t->dk : NULL, want_v ? t->dv : NULL,
                          t->work, t->dout, t->out, t->lse, t->q, t->k, t->v, t->kb, c->B,
                          c->H, c->Tq, c->Tk, c->D, t->scale, c->causal);
}

static void check_case(const acase *c, const char *isa)
{
    const int64_t nq = c->B * c->H * c->Tq * c->D, nk = c->B * c->H * c->Tk * c->D;
    const int64_t nrow = c->B * c->H * c->Tq;
    char what[160];
    bufs t;
    bufs_new(&t, c);
    run_kernels(&t, c, 1, 1, 1);

    float *rout = falloc(nq), *rlse = falloc(nrow), *rdq = falloc(nq), *rdk = falloc(nk),
          *rdv = falloc(nk);
    memcpy(rdq, t.base_q, (size_t)nq * sizeof(float));
    memcpy(rdk, t.base_kv, (size_t)nk * sizeof(float));
    memcpy(rdv, t.base_kv, (size_t)nk * sizeof(float));
    reference(rout, rlse, rdq, rdk, rdv, t.q, t.k, t.v, t.kb, t.dout, c, t.scale);

    /* Float accumulation over D and over Tk terms, and a ~2 ulp exp. */
    snprintf(what, sizeof what, "%s/%s out", c->name, isa);
    check_close(what, t.out, rout, nq, 1e-5, 1e-4);
    snprintf(what, sizeof what, "%s/%s lse", c->name, isa);
    check_close(what, t.lse, rlse, nrow, 1e-5, 1e-5);
    snprintf(what, sizeof what, "%s/%s dq", c->name, isa);
    check_close(what, t.dq, rdq, nq, 5e-5, 1e-4);
    snprintf(what, sizeof what, "%s/%s dk", c->name, isa);
    check_close(what, t.dk, rdk, nk, 5e-5, 1e-4);
    snprintf(what, sizeof what, "%s/%s dv", c->name, isa);
    check_close(what, t.dv, rdv, nk, 5e-5, 1e-4);

    /* A fully masked row: output exactly 0, lse -inf, dq untouched. */
    int64_t masked_rows = 0, masked_ok = 0;
    for (int64_t r = 0; r < nrow; r++) {
        if (rlse[r] != -INFINITY) continue;
        masked_rows++;
        int ok = t.lse[r] == -INFINITY;
        for (int64_t d = 0; d < c->D; d++) {
            ok &= t.out[r * c->D + d] == 0.0f;
            ok &= t.dq[r * c->D + d] == t.base_q[r * c->D + d];
        }
        masked_ok += ok;
    }
    CHECK(masked_ok == masked_rows);
    if (c->all_masked || (c->causal && c->Tq > c->Tk)) CHECK(masked_rows > 0);

    /* Each gradient alone gives the same bits as all three together. */
    float *fq = falloc(nq), *fk = falloc(nk), *fv = falloc(nk);
    memcpy(fq, t.dq, (size_t)nq * sizeof(float));
    memcpy(fk, t.dk, (size_t)nk * sizeof(float));
    memcpy(fv, t.dv, (size_t)nk * sizeof(float));
    run_kernels(&t, c, 1, 0, 0);
    CHECK(memcmp(fq, t.dq, (size_t)nq * sizeof(float)) == 0);
    CHECK(memcmp(t.base_kv, t.dk, (size_t)nk * sizeof(float)) == 0);
    CHECK(memcmp(t.base_kv, t.dv, (size_t)nk * sizeof(float)) == 0);
    run_kernels(&t, c, 0, 1, 0);
    CHECK(memcmp(fk, t.dk, (size_t)nk * sizeof(float)) == 0);
    CHECK(memcmp(t.base_q, t.dq, (size_t)nq * sizeof(float)) == 0);
    run_kernels(&t, c, 0, 0, 1);
    CHECK(memcmp(fv, t.dv, (size_t)nk * sizeof(float)) == 0);

    free(fq);
    free(fk);
    free(fv);
    free(rout);
    free(rlse);
    free(rdq);
    free(rdk);
    free(rdv);
    bufs_free(&t);
}

/* Same bits for 1, 2 and 3 threads (with B*H = 6 one thread runs a task per
 * head and more threads split the backward into key and query passes). */
static void check_threads(const acase *c)
{
    const int64_t nq = c->B * c->H * c->Tq * c->D, nk = c->B * c->H * c->Tk * c->D;
    const int64_t nrow = c->B * c->H * c->Tq;
    const int saved = tm_get_num_threads();
    bufs t;
    bufs_new(&t, c);
    float *o1 = falloc(nq), *l1 = falloc(nrow), *q1 = falloc(nq), *k1 = falloc(nk),
          *v1 = falloc(nk);
    for (int nt = 1; nt <= 3; nt++) {
        CHECK_OK(tm_set_num_threads(nt));
        run_kernels(&t, c, 1, 1, 1);
        if (nt == 1) {
            memcpy(o1, t.out, (size_t)nq * sizeof(float));
            memcpy(l1, t.lse, (size_t)nrow * sizeof(float));
            memcpy(q1, t.dq, (size_t)nq * sizeof(float));
            memcpy(k1, t.dk, (size_t)nk * sizeof(float));
            memcpy(v1, t.dv, (size_t)nk * sizeof(float));
            continue;
        }
        int same = memcmp(o1, t.out, (size_t)nq * sizeof(float)) == 0 &&
                   memcmp(l1, t.lse, (size_t)nrow * sizeof(float)) == 0 &&
                   memcmp(q1, t.dq, (size_t)nq * sizeof(float)) == 0 &&
                   memcmp(k1, t.dk, (size_t)nk * sizeof(float)) == 0 &&
                   memcmp(v1, t.dv, (size_t)nk * sizeof(float)) == 0;
        if (!same) fprintf(stderr, "%s: %d threads differ from 1 thread\n", c->name, nt);
        CHECK(same);
    }
    CHECK_OK(tm_set_num_threads(saved));
    free(o1);
    free(l1);
    free(q1);
    free(k1);
    free(v1);
    bufs_free(&t);
}

/* sum(dout * out) of the float kernel, summed in double. */
static double loss(bufs *t, const acase *c)
{
    const int64_t nq = c->B * c->H * c->Tq * c->D;
    tm_attention_forward(t->out, t->lse, t->q, t->k, t->v, t->kb, c->B, c->H, c->Tq, c->Tk,
                         c->D, t->scale, c->causal);
    double s = 0;
    for (int64_t i = 0; i < nq; i++) s += (double)t->dout[i] * t->out[i];
    return s;
}

/* Central differences with eps = 1e-2 on every input element. The step
 * error (eps^2 f''' / 6) and the float rounding of the loss (~1e-6 / 2eps)
 * are both around 1e-5 here (3e-5 at most seen); tolerance
 * |fd - g| <= 2e-4 + 2e-3 |g|. */
static void check_finite_differences(const acase *c)
{
    const int64_t nq = c->B * c->H * c->Tq * c->D, nk = c->B * c->H * c->Tk * c->D;
    bufs t;
    bufs_new(&t, c);
    memset(t.base_q, 0, (size_t)nq * sizeof(float));
    memset(t.base_kv, 0, (size_t)nk * sizeof(float));
    run_kernels(&t, c, 1, 1, 1);
    float *xs[3] = {t.q, t.k, t.v};
    const float *gs[3] = {t.dq, t.dk, t.dv};
    const int64_t ns[3] = {nq, nk, nk};
    const char *names[3] = {"dq", "dk", "dv"};
    for (int w = 0; w < 3; w++) {
        float *fd = falloc(ns[w]);
        for (int64_t i = 0; i < ns[w]; i++) {
            const float x0 = xs[w][i];
            xs[w][i] = x0 + 1e-2f;
            const double hp = (double)xs[w][i] - x0, lp = loss(&t, c);
            xs[w][i] = x0 - 1e-2f;
            const double hm = (double)x0 - xs[w][i], lm = loss(&t, c);
            xs[w][i] = x0;
            fd[i] = (float)((lp - lm) / (hp + hm));
        }
        char what[96];
        snprintf(what, sizeof what, "%s finite differences %s", c->name, names[w]);
        check_close(what, gs[w], fd, ns[w], 2e-4, 2e-3);
        free(fd);
    }
    bufs_free(&t);
}

int main(void)
{
    const int ncases = (int)(sizeof cases / sizeof *cases);
    const tm_isa isa = tm_cpu_isa();
    for (int i = 0; i < ncases; i++) check_case(&cases[i], tm_isa_name(isa));
    if (isa != TM_ISA_SCALAR) { /* the plain C path as well */
        tm_force_isa(TM_ISA_SCALAR);
        for (int i = 0; i < ncases; i++) check_case(&cases[i], "scalar");
        tm_force_isa(-1);
    }

    check_threads(&cases[0]); /* B*H = 6: the schedule changes with threads */
    check_threads(&cases[2]);
    check_threads(&cases[7]);

    const acase fd_cases[] = {
        {"fd_pad_bias", 1, 2, 3, 5, 4, 0, 2, 0, 2.0f},
        {"fd_causal_cross", 2, 1, 4, 3, 3, 1, 0, 0, 2.0f},
    };
    for (size_t i = 0; i < sizeof fd_cases / sizeof *fd_cases; i++)
        check_finite_differences(&fd_cases[i]);

    return test_finish("test_attention");
}
