/*
 * The broadcasting binary ops, LayerNorm, softmax and the copies of
 * src/ops/basic.c, under every ISA this CPU has (the vectorised kernels of
 * basic_avx2.c and the plain C ones):
 *
 * - against PyTorch in float64 on rows longer than a vector, with tails
 *   (tests/data/ops/basic_rows.safetensors, scripts/gen_basic_vectors.py);
 * - against double-precision loops written here for many broadcast
 *   layouts and row lengths (1 to 1031), forward and backward;
 * - bitwise equality across thread counts on problems cut into many
 *   tasks, including the bias gradient summed by column ranges.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/basic.h"
#include "testutil.h"
#include "trimodal/io.h"

static float *fvec(int64_t n, uint64_t seed, float lo, float hi)
{
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    test_fill_uniform(x, n, seed, lo, hi);
    return x;
}

static const float *get(const tm_safetensors *st, const char *name)
{
    tm_tensor t;
    if (tm_safetensors_get(st, name, &t) != TM_OK) {
        CHECK(!"tensor missing");
        fprintf(stderr, "  %s: %s\n", name, tm_last_error());
        return NULL;
    }
    return t.data;
}

/* ---------------------------------------------------- PyTorch vectors */

static void test_torch(int isa)
{
    tm_safetensors *st = NULL;
    CHECK_OK(tm_safetensors_open(&st, test_data_path("ops/basic_rows.safetensors")));
    if (!st) return;
    tm_force_isa(isa);
    char what[80];
    const char *in = tm_isa_name((tm_isa)isa);

    /* LayerNorm (5, 259) */
    const float *x = get(st, "ln_x"), *w = get(st, "ln_w"), *b = get(st, "ln_b");
    const float *G = get(st, "ln_G"), *out = get(st, "ln_out"), *dx = get(st, "ln_dx");
    const float *dw = get(st, "ln_dw"), *db = get(st, "ln_db");
    if (x && w && b && G && out && dx && dw && db) {
        enum { R = 5, C = 259 };
        float y[R * C], mean[R], rstd[R], gx[R * C] = {0}, gw[C] = {0}, gb[C] = {0};
        tm_layernorm_forward(y, mean, rstd, x, w, b, R, C, 1e-5f);
        tm_layernorm_backward(gx, gw, gb, G, x, w, mean, rstd, R, C);
        snprintf(what, sizeof what, "layernorm %s out", in);
        check_close(what, y, out, R * C, 1e-5, 1e-5);
        snprintf(what, sizeof what, "layernorm %s dx", in);
        check_close(what, gx, dx, R * C, 1e-5, 1e-4);
        snprintf(what, sizeof what, "layernorm %s dw", in);
        check_close(what, gw, dw, C, 1e-5, 1e-4);
        snprintf(what, sizeof what, "layernorm %s db", in);
        check_close(what, gb, db, C, 1e-5, 1e-5);
    }
    /* softmax and log-softmax (2, 1003) */
    x = get(st, "sm_x"), G = get(st, "sm_G");
    const float *so = get(st, "sm_out"), *sd = get(st, "sm_dx");
    const float *lo = get(st, "lsm_out"), *ld = get(st, "lsm_dx");
    if (x && G && so && sd && lo && ld) {
        enum { R = 2, C = 1003 };
        static float y[R * C], g[R * C];
        for (int log = 0; log < 2; log++) {
            memset(g, 0, sizeof g);
            tm_softmax_forward(y, x, R, C, log);
            tm_softmax_backward(g, G, y, R, C, log);
            snprintf(what, sizeof what, "%s %s out", log ? "log_softmax" : "softmax", in);
            check_close(what, y, log ? lo : so, R * C, 1e-6, 1e-5);
            snprintf(what, sizeof what, "%s %s dx", log ? "log_softmax" : "softmax", in);
            check_close(what, g, log ? ld : sd, R * C, 1e-6, 1e-5);
        }
    }
    /* a (2, 5, 203) + bias (203); a * m (2, 1, 203) */
    const float *a = get(st, "bin_a"), *bias = get(st, "bin_bias"), *m = get(st, "bin_m");
    G = get(st, "bin_G");
    const float *ao = get(st, "add_out"), *ada = get(st, "add_da"), *adb = get(st, "add_dbias");
    const float *mo = get(st, "mul_out"), *mda = get(st, "mul_da"), *mdm = get(st, "mul_dm");
    if (a && bias && m && G && ao && ada && adb && mo && mda && mdm) {
        enum { N = 2 * 5 * 203 };
        float y[N], ga[N] = {0}, gb[203] = {0}, gm[2 * 203] = {0}, gma[N] = {0};
        tm_bcast bc;
        CHECK(tm_bcast_init(&bc, 3, (int64_t[]){2, 5, 203}, 1, (int64_t[]){203}));
        tm_binary_forward(TM_BINARY_ADD, y, a, bias, &bc);
        tm_binary_backward(TM_BINARY_ADD, ga, gb, G, a, bias, &bc, N, 203);
        snprintf(what, sizeof what, "bias add %s", in);
        check_close(what, y, ao, N, 0, 1e-6);
        check_close(what, ga, ada, N, 0, 0);
        check_close(what, gb, adb, 203, 1e-6, 1e-5);
        CHECK(tm_bcast_init(&bc, 3, (int64_t[]){2, 5, 203}, 3, (int64_t[]){2, 1, 203}));
        tm_binary_forward(TM_BINARY_MUL, y, a, m, &bc);
        tm_binary_backward(TM_BINARY_MUL, gma, gm, G, a, m, &bc, N, 2 * 203);
        snprintf(what, sizeof what, "broadcast mul %s", in);
        check_close(what, y, mo, N, 0, 1e-6);
        check_close(what, gma, mda, N, 0, 1e-6);
        check_close(what, gm, mdm, 2 * 203, 1e-6, 1e-5);
    }
    tm_force_isa(-1);
    tm_safetensors_close(st);
}

/* ------------------------------------------------ binary, double loops */

/* A layout: a's and b's shapes (padded on the left to out's rank). */
typedef struct {
    int nda, ndb;
    int64_t sa[4], sb[4];
} layout;

/* out (and both gradients) in double, by walking out's indices. */
static void binary_ref(tm_binary op, const tm_bcast *bc, const float *a, const float *b,
                       const float *g, double *out, double *da, double *db, int64_t na, int64_t nb)
{
    int64_t n = 1, idx[TM_MAX_DIMS] = {0};
    for (int i = 0; i < bc->ndim; i++)
        n *= bc->shape[i];
    for (int64_t i = 0; i < na; i++)
        da[i] = 0;
    for (int64_t i = 0; i < nb; i++)
        db[i] = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t oa = 0, ob = 0;
        for (int i = 0; i < bc->ndim; i++)
            oa += idx[i] * bc->sa[i], ob += idx[i] * bc->sb[i];
        double x = a[oa], y = b[ob], gg = g[k];
        switch (op) {
        case TM_BINARY_ADD: out[k] = x + y, da[oa] += gg, db[ob] += gg; break;
        case TM_BINARY_SUB: out[k] = x - y, da[oa] += gg, db[ob] -= gg; break;
        case TM_BINARY_MUL: out[k] = x * y, da[oa] += gg * y, db[ob] += gg * x; break;
        case TM_BINARY_DIV: out[k] = x / y, da[oa] += gg / y, db[ob] -= gg * x / (y * y); break;
        }
        for (int i = bc->ndim - 1; i >= 0; i--) {
            if (++idx[i] < bc->shape[i]) break;
            idx[i] = 0;
        }
    }
}

static void compare_d(const char *what, const float *got, const double *want, int64_t n,
                      double atol, double rtol)
{
    float *w = malloc((size_t)n * sizeof *w);
    for (int64_t i = 0; i < n; i++)
        w[i] = (float)want[i];
    check_close(what, got, w, n, atol, rtol);
    free(w);
}

static void test_binary_layouts(int isa)
{
    static const int64_t lens[] = {1, 3, 8, 13, 16, 17, 64, 203, 1031};
    static const char *names[] = {"add", "sub", "mul", "div"};
    tm_force_isa(isa);
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
        int64_t C = lens[l];
        /* out (3, 4, C): b as (C), (3, 1, C), (3, 4, 1), (1), the same
         * shape, and a broadcast instead: a (4, C) with b (3, 4, C) */
        const layout L[] = {
            {3, 1, {3, 4, C}, {C}},       {3, 3, {3, 4, C}, {3, 1, C}},
            {3, 3, {3, 4, C}, {3, 4, 1}}, {3, 1, {3, 4, C}, {1}},
            {3, 3, {3, 4, C}, {3, 4, C}}, {2, 3, {4, C}, {3, 4, C}},
            {3, 3, {3, 1, C}, {1, 4, 1}},
        };
        for (size_t k = 0; k < sizeof L / sizeof L[0]; k++)
            for (int op = 0; op < 4; op++) {
                tm_bcast bc;
                CHECK(tm_bcast_init(&bc, L[k].nda, L[k].sa, L[k].ndb, L[k].sb));
                int64_t n = 1, na = 1, nb = 1;
                for (int i = 0; i < bc.ndim; i++)
                    n *= bc.shape[i];
                for (int i = 0; i < L[k].nda; i++)
                    na *= L[k].sa[i];
                for (int i = 0; i < L[k].ndb; i++)
                    nb *= L[k].sb[i];
                float *a = fvec(na, 1 + k, -2, 2), *b = fvec(nb, 2 + k, 0.5f, 2);
                float *g = fvec(n, 3 + k, -1, 1), *y = fvec(n, 4, 0, 1);
                float *da = calloc((size_t)na, sizeof *da), *db = calloc((size_t)nb, sizeof *db);
                double *ry = malloc((size_t)n * sizeof *ry);
                double *rda = malloc((size_t)na * sizeof *rda),
                       *rdb = malloc((size_t)nb * sizeof *rdb);
                tm_binary_forward((tm_binary)op, y, a, b, &bc);
                tm_binary_backward((tm_binary)op, da, db, g, a, b, &bc, na, nb);
                binary_ref((tm_binary)op, &bc, a, b, g, ry, rda, rdb, na, nb);
                char what[96];
                snprintf(what, sizeof what, "%s %s layout %zu C=%lld", names[op],
                         tm_isa_name((tm_isa)isa), k, (long long)C);
                compare_d(what, y, ry, n, 1e-7, 1e-6);
                compare_d(what, da, rda, na, 1e-5, 1e-5);
                compare_d(what, db, rdb, nb, 1e-5, 1e-5);
                free(a), free(b), free(g), free(y), free(da), free(db), free(ry), free(rda),
                    free(rdb);
            }
    }
    tm_force_isa(-1);
}

/* --------------------------------------------- rows, double references */

static void test_rows(int isa)
{
    static const int64_t lens[] = {1, 5, 8, 16, 33, 259, 1024, 1031};
    tm_force_isa(isa);
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
        int64_t C = lens[l], R = 7, n = R * C;
        float *x = fvec(n, 10 + l, -3, 4), *w = fvec(C, 11, 0.5f, 1.5f), *b = fvec(C, 12, -1, 1);
        float *G = fvec(n, 13, -1, 1), *y = fvec(n, 0, 0, 1), *dx = calloc((size_t)n, sizeof *dx);
        float *dw = calloc((size_t)C, sizeof *dw), *db = calloc((size_t)C, sizeof *db);
        float mean[7], rstd[7];
        double *ry = malloc((size_t)n * sizeof *ry), *rdx = malloc((size_t)n * sizeof *rdx);
        double *rdw = calloc((size_t)C, sizeof *rdw), *rdb = calloc((size_t)C, sizeof *rdb);
        tm_layernorm_forward(y, mean, rstd, x, w, b, R, C, 1e-5f);
        tm_layernorm_backward(dx, dw, db, G, x, w, mean, rstd, R, C);
        for (int64_t r = 0; r < R; r++) {
            const float *xr = x + r * C, *gr = G + r * C;
            double m = 0, v = 0, sg = 0, sgn = 0;
            for (int64_t i = 0; i < C; i++)
                m += xr[i];
            m /= C;
            for (int64_t i = 0; i < C; i++)
                v += (xr[i] - m) * (xr[i] - m);
            double rs = 1 / sqrt(v / C + 1e-5);
            for (int64_t i = 0; i < C; i++) {
                double nn = (xr[i] - m) * rs;
                ry[r * C + i] = nn * w[i] + b[i];
                sg += gr[i] * w[i];
                sgn += gr[i] * w[i] * nn;
                rdw[i] += gr[i] * nn;
                rdb[i] += gr[i];
            }
            for (int64_t i = 0; i < C; i++)
                rdx[r * C + i] = rs * (gr[i] * w[i] - sg / C - (xr[i] - m) * rs * sgn / C);
        }
        char what[80];
        snprintf(what, sizeof what, "layernorm %s C=%lld", tm_isa_name((tm_isa)isa), (long long)C);
        compare_d(what, y, ry, n, 2e-6, 2e-5);
        compare_d(what, dx, rdx, n, C == 1 ? 1e-2 : 2e-5, 1e-4); /* C = 1: rstd is 1/sqrt(eps) */
        compare_d(what, dw, rdw, C, 1e-5, 1e-5);
        compare_d(what, db, rdb, C, 1e-5, 1e-5);

        /* softmax / log-softmax of the same rows */
        for (int lg = 0; lg < 2; lg++) {
            memset(dx, 0, (size_t)n * sizeof *dx);
            tm_softmax_forward(y, x, R, C, lg);
            tm_softmax_backward(dx, G, y, R, C, lg);
            for (int64_t r = 0; r < R; r++) {
                const float *xr = x + r * C, *gr = G + r * C;
                double mx = -INFINITY, s = 0, dot = 0, sg = 0;
                for (int64_t i = 0; i < C; i++)
                    mx = fmax(mx, xr[i]);
                for (int64_t i = 0; i < C; i++)
                    s += exp(xr[i] - mx);
                for (int64_t i = 0; i < C; i++) {
                    double p = exp(xr[i] - mx) / s;
                    ry[r * C + i] = lg ? xr[i] - mx - log(s) : p;
                    dot += gr[i] * p;
                    sg += gr[i];
                }
                for (int64_t i = 0; i < C; i++) {
                    double p = exp(xr[i] - mx) / s;
                    rdx[r * C + i] = lg ? gr[i] - p * sg : p * (gr[i] - dot);
                }
            }
            snprintf(what, sizeof what, "%s %s C=%lld", lg ? "log_softmax" : "softmax",
                     tm_isa_name((tm_isa)isa), (long long)C);
            compare_d(what, y, ry, n, 1e-6, 1e-5);
            compare_d(what, dx, rdx, n, 1e-6, 1e-5);
        }
        free(x), free(w), free(b), free(G), free(y), free(dx), free(dw), free(db);
        free(ry), free(rdx), free(rdw), free(rdb);
    }
    /* a row of -inf but one: softmax 1 there, 0 elsewhere */
    float x[19], y[19];
    for (int i = 0; i < 19; i++)
        x[i] = -INFINITY;
    x[17] = 3.0f;
    tm_softmax_forward(y, x, 1, 19, 0);
    for (int i = 0; i < 19; i++)
        CHECK(y[i] == (i == 17 ? 1.0f : 0.0f));
    tm_force_isa(-1);
}

/* -------------------------------------------------------------- copies */

static void test_copies(int isa)
{
    tm_force_isa(isa);
    /* permute (2, 3, 37) -> (3, 2, 37), accumulating: the last axis stays */
    enum { A = 2, B = 3, C = 37, N = A * B * C };
    float *x = fvec(N, 20, -1, 1), *o = fvec(N, 21, -1, 1), *want = malloc(N * sizeof *want);
    for (int i = 0; i < A; i++)
        for (int j = 0; j < B; j++)
            for (int k = 0; k < C; k++)
                want[(j * A + i) * C + k] = o[(j * A + i) * C + k] + x[(i * B + j) * C + k];
    tm_permute_copy(o, x, 3, (int64_t[]){A, B, C}, (int[]){1, 0, 2}, 1);
    check_close("permute accumulate", o, want, N, 0, 0);
    tm_permute_copy(o, x, 3, (int64_t[]){A, B, C}, (int[]){1, 0, 2}, 0);
    for (int i = 0; i < A; i++)
        for (int j = 0; j < B; j++)
            for (int k = 0; k < C; k++)
                want[(j * A + i) * C + k] = x[(i * B + j) * C + k];
    check_close("permute copy", o, want, N, 0, 0);
    /* block copy, accumulating: dst[o, j*2 + 1, :] += src[o, j, :] */
    float *d = fvec(2 * 6 * 11, 22, -1, 1), *s = fvec(2 * 3 * 11, 23, -1, 1);
    float *dw = malloc(2 * 6 * 11 * sizeof *dw);
    memcpy(dw, d, 2 * 6 * 11 * sizeof *dw);
    for (int oo = 0; oo < 2; oo++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 11; i++)
                dw[oo * 66 + (j * 2 + 1) * 11 + i] += s[oo * 33 + j * 11 + i];
    tm_block_copy(d, 66, 2, 1, s, 33, 1, 0, 2, 3, 11, 1);
    check_close("block copy accumulate", d, dw, 2 * 6 * 11, 0, 0);
    /* embedding backward: repeated ids add up */
    float table[5 * 19] = {0}, tw[5 * 19] = {0}, *g = fvec(4 * 19, 24, -1, 1);
    int32_t ids[4] = {3, 1, 3, 0};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 19; j++)
            tw[ids[i] * 19 + j] += g[i * 19 + j];
    tm_embedding_backward(table, g, ids, 4, 19);
    check_close("embedding backward", table, tw, 5 * 19, 0, 0);
    free(x), free(o), free(want), free(d), free(s), free(dw), free(g);
    tm_force_isa(-1);
}

/* ------------------------------------------------------------ threads */

typedef struct {
    float *y, *da, *db, *ln, *mean, *rstd, *dx, *dw, *dbias, *sm, *dsm;
} outputs;

enum { TR = 300, TC = 256, TN = TR * TC };

static void run_all(const float *x, const float *bias, const float *g, outputs *o)
{
    tm_bcast bc;
    tm_bcast_init(&bc, 2, (int64_t[]){TR, TC}, 1, (int64_t[]){TC});
    tm_binary_forward(TM_BINARY_MUL, o->y, x, bias, &bc);
    memset(o->da, 0, TN * sizeof(float));
    memset(o->db, 0, TC * sizeof(float));
    tm_binary_backward(TM_BINARY_MUL, o->da, o->db, g, x, bias, &bc, TN, TC);
    tm_layernorm_forward(o->ln, o->mean, o->rstd, x, bias, bias, TR, TC, 1e-5f);
    memset(o->dx, 0, TN * sizeof(float));
    memset(o->dw, 0, TC * sizeof(float));
    memset(o->dbias, 0, TC * sizeof(float));
    tm_layernorm_backward(o->dx, o->dw, o->dbias, g, x, bias, o->mean, o->rstd, TR, TC);
    tm_softmax_forward(o->sm, x, TR, TC, 0);
    memset(o->dsm, 0, TN * sizeof(float));
    tm_softmax_backward(o->dsm, g, o->sm, TR, TC, 0);
}

static outputs alloc_outputs(void)
{
    outputs o = {
        malloc(TN * 4), malloc(TN * 4), malloc(TC * 4), malloc(TN * 4),
        malloc(TR * 4), malloc(TR * 4), malloc(TN * 4), malloc(TC * 4),
        malloc(TC * 4), malloc(TN * 4), malloc(TN * 4),
    };
    return o;
}

static void free_outputs(outputs *o)
{
    free(o->y), free(o->da), free(o->db), free(o->ln), free(o->mean), free(o->rstd);
    free(o->dx), free(o->dw), free(o->dbias), free(o->sm), free(o->dsm);
}

static void test_threads(int isa)
{
    int threads = tm_get_num_threads();
    float *x = fvec(TN, 30, -2, 2), *bias = fvec(TC, 31, 0.5f, 1.5f), *g = fvec(TN, 32, -1, 1);
    outputs a = alloc_outputs(), b = alloc_outputs();
    tm_force_isa(isa);
    tm_set_num_threads(1);
    run_all(x, bias, g, &a);
    CHECK_OK(tm_set_num_threads(2));
    run_all(x, bias, g, &b);
    tm_set_num_threads(threads);
    tm_force_isa(-1);
    CHECK(memcmp(a.y, b.y, TN * 4) == 0);
    CHECK(memcmp(a.da, b.da, TN * 4) == 0);
    CHECK(memcmp(a.db, b.db, TC * 4) == 0);
    CHECK(memcmp(a.ln, b.ln, TN * 4) == 0);
    CHECK(memcmp(a.mean, b.mean, TR * 4) == 0 && memcmp(a.rstd, b.rstd, TR * 4) == 0);
    CHECK(memcmp(a.dx, b.dx, TN * 4) == 0);
    CHECK(memcmp(a.dw, b.dw, TC * 4) == 0 && memcmp(a.dbias, b.dbias, TC * 4) == 0);
    CHECK(memcmp(a.sm, b.sm, TN * 4) == 0 && memcmp(a.dsm, b.dsm, TN * 4) == 0);
    free_outputs(&a);
    free_outputs(&b);
    free(x), free(bias), free(g);
}

int main(void)
{
    tm_isa best = tm_cpu_isa();
    for (int isa = TM_ISA_SCALAR; isa <= (int)best; isa++) {
        printf("isa %s\n", tm_isa_name((tm_isa)isa));
        test_torch(isa);
        test_binary_layouts(isa);
        test_rows(isa);
        test_copies(isa);
        test_threads(isa);
    }
    return test_finish("test_basic_rows");
}
