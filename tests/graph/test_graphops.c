/* graph: the ops added for the model work (rotary embedding, drop-path,
 * GroupNorm, attention probabilities), the public build-error recorder and
 * the graph's RNG counter.
 *
 * PyTorch reference values of rope, groupnorm and attention_probs are
 * checked by test_ops_torch.c; here: finite-difference gradients, the
 * properties that have no PyTorch twin (drop-path masks, probs @ v equals
 * attention, compile-time refusals, side outputs), build errors and
 * thread-count independence. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/graph.h"

#define MAXIN 3

typedef tm_node *(*build_fn)(tm_graph *g, tm_node **in);

typedef struct {
    const char *name;
    int nin;
    int ndim[MAXIN];
    int64_t shape[MAXIN][TM_MAX_DIMS];
    build_fn build;
    float lo, hi;
    double tol;
} gcase;

/* One forward pass with the RNG counter reset, so that a random op draws
 * the same mask for every perturbed input. */
static double loss_of(tm_graph *g, tm_node *loss)
{
    tm_graph_set_rng_counter(g, 5);
    if (tm_graph_forward(g) != TM_OK) return NAN;
    return *(float *)tm_node_data(g, loss);
}

typedef struct {
    tm_graph *g;
    tm_node *loss;
} fd_ctx;

static double fd_loss(void *ctx)
{
    fd_ctx *f = ctx;
    return loss_of(f->g, f->loss);
}

/* loss = sum(op(inputs) * G): analytic gradients against central
 * differences (eps 1e-2 in f32; tolerances as in test_graph.c). */
static void gradcheck(const gcase *c)
{
    tm_graph *g = tm_graph_new();
    tm_node *in[MAXIN];
    for (int i = 0; i < c->nin; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "x%d", i);
        in[i] = tm_requires_grad(g, tm_input(g, nm, TM_F32, c->ndim[i], c->shape[i]));
    }
    tm_node *out = c->build(g, in);
    tm_node *G = out ? tm_input(g, "G", TM_F32, tm_node_ndim(out), tm_node_shape(out)) : NULL;
    tm_node *loss = tm_sum(g, tm_mul(g, out, G), 0, NULL, 0);
    test_checks++;
    if (tm_graph_compile(g, loss, TM_GRAPH_TRAIN) != TM_OK) {
        test_failures++;
        fprintf(stderr, "gradcheck %s: compile failed: %s\n", c->name, tm_last_error());
        tm_graph_free(g);
        return;
    }
    for (int i = 0; i < c->nin; i++)
        test_fill_uniform(tm_node_data(g, in[i]), tm_node_numel(in[i]), 300 + i, c->lo, c->hi);
    test_fill_uniform(tm_node_data(g, G), tm_node_numel(G), 9, -1.0f, 1.0f);
    loss_of(g, loss);
    CHECK_OK(tm_graph_backward(g));
    fd_ctx fc = {g, loss};
    for (int i = 0; i < c->nin; i++) {
        char what[96];
        snprintf(what, sizeof what, "gradcheck %s d/dx%d", c->name, i);
        check_gradient_fd(what, tm_node_data(g, in[i]), tm_node_grad(g, in[i]),
                          tm_node_numel(in[i]), fd_loss, &fc, 1e-2f, c->tol);
    }
    tm_graph_free(g);
}

static tm_node *b_rope(tm_graph *g, tm_node **x)
{
    return tm_rope(g, x[0], 0, 10000.0f);
}
static tm_node *b_rope_off(tm_graph *g, tm_node **x)
{
    return tm_rope(g, x[0], 11, 100.0f);
}
static tm_node *b_gn(tm_graph *g, tm_node **x)
{
    return tm_groupnorm(g, x[0], 2, x[1], x[2], 1e-5f);
}
static tm_node *b_gn_plain(tm_graph *g, tm_node **x)
{
    return tm_groupnorm(g, x[0], 3, NULL, NULL, 1e-5f);
}
static tm_node *b_drop_path(tm_graph *g, tm_node **x)
{
    /* tanh first, so the gradient path is non-trivial */
    return tm_drop_path(g, tm_tanh(g, x[0]), 0.4f, 77);
}

static void test_gradients(void)
{
    gcase cases[] = {
        {"rope", 1, {4}, {{2, 2, 3, 6}}, b_rope, -1, 1, 1e-2},
        {"rope_offset", 1, {4}, {{1, 3, 4, 4}}, b_rope_off, -1, 1, 1e-2},
        {"groupnorm", 3, {4, 1, 1}, {{2, 4, 3, 2}, {4}, {4}}, b_gn, -2, 2, 2e-2},
        {"groupnorm_1d", 1, {3}, {{2, 6, 5}}, b_gn_plain, -2, 2, 2e-2},
        {"drop_path", 1, {3}, {{8, 2, 3}}, b_drop_path, -1, 1, 1e-2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        gradcheck(&cases[i]);
}

/* ------------------------------------------------------------ drop-path */

/* Runs a drop-path graph at the given thread count; returns the kept
 * output and the input gradient (2 * N * inner floats, caller frees). */
static float *drop_path_run(int nt, int64_t N, int64_t inner, float p, uint64_t seed,
                            tm_graph_mode mode)
{
    tm_set_num_threads(nt);
    tm_graph *g = tm_graph_new();
    tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){N, inner});
    if (mode == TM_GRAPH_TRAIN) tm_requires_grad(g, x);
    tm_node *G = tm_input(g, "G", TM_F32, 2, (int64_t[]){N, inner});
    tm_node *y = tm_drop_path(g, x, p, seed);
    tm_graph_keep(g, y);
    tm_node *loss = tm_sum(g, tm_mul(g, y, G), 0, NULL, 0);
    CHECK_OK(tm_graph_compile(g, mode == TM_GRAPH_TRAIN ? loss : y, mode));
    test_fill_uniform(tm_node_data(g, x), N * inner, 1, 0.5f, 1.5f); /* never 0 */
    test_fill_uniform(tm_node_data(g, G), N * inner, 2, -1, 1);
    float *res = calloc((size_t)(2 * N * inner), sizeof *res);
    CHECK_OK(tm_graph_forward(g));
    memcpy(res, tm_node_data(g, y), (size_t)(N * inner) * sizeof *res);
    if (mode == TM_GRAPH_TRAIN) {
        CHECK_OK(tm_graph_backward(g));
        memcpy(res + N * inner, tm_node_grad(g, x), (size_t)(N * inner) * sizeof *res);
    }
    tm_graph_free(g);
    return res;
}

static void test_drop_path(void)
{
    enum { N = 400, INNER = 100 }; /* 40000 elements: several tasks */
    const float p = 0.3f, scale = 1.0f / (1.0f - p);
    float *a = drop_path_run(1, N, INNER, p, 42, TM_GRAPH_TRAIN);
    float *b = drop_path_run(2, N, INNER, p, 42, TM_GRAPH_TRAIN);
    CHECK(memcmp(a, b, 2 * N * INNER * sizeof *a) == 0); /* 1 and 2 threads agree */
    /* whole examples are kept (scaled) or dropped, and the gradient follows */
    float x[N * INNER], G[N * INNER];
    test_fill_uniform(x, N * INNER, 1, 0.5f, 1.5f);
    test_fill_uniform(G, N * INNER, 2, -1, 1);
    int dropped = 0, consistent = 1;
    for (int n = 0; n < N; n++) {
        int kept = a[n * INNER] != 0.0f;
        dropped += !kept;
        for (int i = 0; i < INNER; i++) {
            int k = n * INNER + i;
            float want = kept ? x[k] * scale : 0.0f, dwant = kept ? G[k] * scale : 0.0f;
            if (a[k] != want || a[N * INNER + k] != dwant) consistent = 0;
        }
    }
    CHECK(consistent);
    CHECK(dropped > 80 && dropped < 160); /* 120 expected; 5 sigma is about 46 */
    /* another seed draws another mask */
    float *c = drop_path_run(1, N, INNER, p, 43, TM_GRAPH_TRAIN);
    CHECK(memcmp(a, c, N * INNER * sizeof *a) != 0);
    /* an inference graph is the identity */
    float *d = drop_path_run(2, N, INNER, p, 42, TM_GRAPH_INFER);
    CHECK(memcmp(d, x, sizeof x) == 0);
    free(a);
    free(b);
    free(c);
    free(d);

    /* p == 0 is the identity without a node; bad p is refused */
    tm_graph *g = tm_graph_new();
    tm_node *xi = tm_input(g, "x", TM_F32, 2, (int64_t[]){3, 4});
    CHECK(tm_drop_path(g, xi, 0.0f, 1) == xi);
    CHECK(tm_drop_path(g, xi, 1.0f, 1) == NULL);
    CHECK(strstr(tm_last_error(), "drop_path: p must be in [0, 1)") != NULL);
    tm_graph_free(g);
}

/* ------------------------------------------------------ rng counter */

/* Dropout and drop-path masks of a graph run `runs` times from counter
 * `start`; returns them (caller frees). */
static float *masks_after(int set, uint64_t start, int runs, uint64_t *counter_after)
{
    tm_graph *g = tm_graph_new();
    tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){16, 64});
    tm_node *d = tm_dropout(g, x, 0.5f, 9);
    tm_node *dp = tm_drop_path(g, x, 0.5f, 9);
    tm_node *loss = tm_sum(g, tm_add(g, d, dp), 0, NULL, 0);
    tm_graph_keep(g, d);
    tm_graph_keep(g, dp);
    CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
    float *xv = tm_node_data(g, x);
    for (int i = 0; i < 16 * 64; i++)
        xv[i] = 1.0f;
    if (set) tm_graph_set_rng_counter(g, start);
    for (int r = 0; r < runs; r++)
        CHECK_OK(tm_graph_forward(g));
    float *res = malloc(2 * 16 * 64 * sizeof *res);
    memcpy(res, tm_node_data(g, d), 16 * 64 * sizeof *res);
    memcpy(res + 16 * 64, tm_node_data(g, dp), 16 * 64 * sizeof *res);
    *counter_after = tm_graph_rng_counter(g);
    tm_graph_free(g);
    return res;
}

static void test_rng_counter(void)
{
    uint64_t c1, c2, c3;
    CHECK(tm_graph_rng_counter(NULL) == 0);
    tm_graph_set_rng_counter(NULL, 3); /* harmless */
    /* a graph run 7 times, and a fresh one set to 6 and run once, draw the
     * same masks in their last pass (as a resumed training run would) */
    float *a = masks_after(0, 0, 7, &c1);
    float *b = masks_after(1, 6, 1, &c2);
    float *c = masks_after(1, 5, 1, &c3);
    CHECK(c1 == 7 && c2 == 7 && c3 == 6);
    CHECK(memcmp(a, b, 2 * 16 * 64 * sizeof *a) == 0);
    CHECK(memcmp(a, c, 16 * 64 * sizeof *a) != 0);
    /* drop-path's draw is not dropout's with the same seed: the first
     * elements of dropout's mask and drop-path's per-example mask differ */
    int same = 1;
    for (int n = 0; n < 16; n++)
        same &= (a[n] == 0.0f) == (a[16 * 64 + n * 64] == 0.0f);
    CHECK(!same);
    free(a);
    free(b);
    free(c);
}

/* ------------------------------------------------- attention probs */

static void test_attention_probs(void)
{
    enum { B = 2, H = 3, TQ = 70, TK = 67, D = 16 }; /* more than one 64-block */
    for (int causal = 0; causal <= 1; causal++) {
        tm_graph *g = tm_graph_new();
        tm_node *q = tm_input(g, "q", TM_F32, 4, (int64_t[]){B, H, TQ, D});
        tm_node *k = tm_input(g, "k", TM_F32, 4, (int64_t[]){B, H, TK, D});
        tm_node *v = tm_input(g, "v", TM_F32, 4, (int64_t[]){B, H, TK, D});
        tm_node *kb = tm_input(g, "kb", TM_F32, 2, (int64_t[]){B, TK});
        tm_node *att = tm_attention(g, q, k, v, kb, 0, causal);
        tm_node *probs = tm_attention_probs(g, q, k, kb, 0, causal);
        tm_node *pv = tm_matmul(g, probs, v, 0, 0);
        tm_graph_keep(g, probs);
        tm_graph_keep(g, att);
        CHECK_OK(tm_graph_add_output(g, att));
        CHECK_OK(tm_graph_compile(g, pv, TM_GRAPH_INFER));
        test_fill_uniform(tm_node_data(g, q), B * H * TQ * D, 11, -2, 2);
        test_fill_uniform(tm_node_data(g, k), B * H * TK * D, 12, -2, 2);
        test_fill_uniform(tm_node_data(g, v), B * H * TK * D, 13, -1, 1);
        float *bias = tm_node_data(g, kb);
        for (int j = 0; j < TK; j++) {
            bias[j] = (j % 5 == 3) ? -INFINITY : 0.1f * (float)(j % 3); /* example 0: some masked */
            bias[TK + j] = -INFINITY;                                   /* example 1: all masked */
        }
        CHECK_OK(tm_graph_forward(g));
        /* probs @ v is attention's output (zeros for the dead example) */
        check_close(causal ? "probs @ v vs attention (causal)" : "probs @ v vs attention",
                    tm_node_data(g, pv), tm_node_data(g, att), B * H * TQ * D, 2e-6, 2e-5);
        const float *p = tm_node_data(g, probs);
        int masked_zero = 1, rows_ok = 1, dead_zero = 1;
        for (int h = 0; h < H; h++)
            for (int i = 0; i < TQ; i++) {
                const float *row = p + ((int64_t)h * TQ + i) * TK; /* example 0 */
                double s = 0;
                int any = 0;
                for (int j = 0; j < TK; j++) {
                    int hidden = j % 5 == 3 || (causal && j > i + (TK - TQ));
                    if (hidden && row[j] != 0.0f) masked_zero = 0;
                    if (!hidden) any = 1;
                    s += row[j];
                }
                if (any ? fabs(s - 1.0) > 1e-5 : s != 0.0) rows_ok = 0;
                const float *dead = p + ((int64_t)(H + h) * TQ + i) * TK; /* example 1 */
                for (int j = 0; j < TK; j++)
                    dead_zero &= dead[j] == 0.0f;
            }
        CHECK(masked_zero);
        CHECK(rows_ok);
        CHECK(dead_zero);
        tm_graph_free(g);
    }

    /* forward only: a loss that needs its gradient is refused at compile
     * time; as a side output of a training graph it is computed, without
     * gradient */
    tm_graph *g = tm_graph_new();
    tm_node *q = tm_requires_grad(g, tm_input(g, "q", TM_F32, 4, (int64_t[]){1, 1, 3, 4}));
    tm_node *pr = tm_attention_probs(g, q, q, NULL, 0, 0);
    CHECK_STATUS(tm_graph_compile(g, tm_sum(g, pr, 0, NULL, 0), TM_GRAPH_TRAIN),
                 TM_ERR_UNSUPPORTED);
    CHECK(strstr(tm_last_error(), "forward only") != NULL);
    tm_graph_free(g);

    g = tm_graph_new();
    q = tm_requires_grad(g, tm_input(g, "q", TM_F32, 4, (int64_t[]){1, 2, 3, 4}));
    pr = tm_attention_probs(g, q, q, NULL, 0, 1);
    tm_node *loss = tm_sum(g, tm_attention(g, q, q, q, NULL, 0, 1), 0, NULL, 0);
    CHECK_OK(tm_graph_add_output(g, pr));
    CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
    test_fill_uniform(tm_node_data(g, q), 24, 5, -1, 1);
    CHECK_OK(tm_graph_forward(g));
    CHECK_OK(tm_graph_backward(g));
    const float *pp = tm_node_data(g, pr);
    CHECK(pp[0] == 1.0f && pp[1] == 0.0f && fabsf(pp[3] + pp[4] - 1.0f) < 1e-6f); /* causal rows */
    CHECK(tm_node_grad(g, q) != NULL);
    tm_graph_free(g);

    /* a side output of an INFER graph, apart from the root */
    g = tm_graph_new();
    q = tm_input(g, "q", TM_F32, 4, (int64_t[]){1, 1, 2, 4});
    tm_node *root = tm_scale(g, q, 2.0f, 0.0f);
    pr = tm_attention_probs(g, q, q, NULL, 0, 0);
    tm_node *unused = tm_exp(g, q); /* neither root nor output: never computed */
    tm_graph_keep(g, unused);
    CHECK_OK(tm_graph_add_output(g, pr));
    CHECK_OK(tm_graph_compile(g, root, TM_GRAPH_INFER));
    float *qv = tm_node_data(g, q);
    for (int i = 0; i < 8; i++)
        qv[i] = i < 4 ? 1.0f : 0.0f;
    CHECK_OK(tm_graph_forward(g));
    pp = tm_node_data(g, pr);
    /* scores: q0.q0 = 4 * 0.5, q0.q1 = 0; q1 row all 0 scores */
    CHECK_NEAR(pp[0], 1.0 / (1.0 + exp(-2.0)), 1e-6, 1e-6);
    CHECK_NEAR(pp[2], 0.5, 1e-7, 0);
    CHECK_STATUS(tm_graph_add_output(g, pr), TM_ERR_INVALID); /* after compile */
    tm_graph_free(g);
}

/* ---------------------------------------------------- build errors */

static void test_errors(void)
{
    tm_graph *g;
    tm_node *x;
#define FRESH() (g = tm_graph_new(), x = tm_input(g, "x", TM_F32, 4, (int64_t[]){2, 3, 4, 6}))
    FRESH();
    CHECK(tm_rope(g, tm_input(g, "odd", TM_F32, 4, (int64_t[]){1, 1, 2, 5}), 0, 1e4f) == NULL);
    CHECK(strstr(tm_last_error(), "even head size") != NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_rope(g, x, -1, 1e4f) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_rope(g, x, 0, 0.0f) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_groupnorm(g, x, 2, NULL, NULL, 1e-5f) == NULL); /* 3 channels */
    CHECK(strstr(tm_last_error(), "do not divide") != NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_groupnorm(g, x, 3, tm_param(g, "w", 1, (int64_t[]){4}), NULL, 1e-5f) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_groupnorm(g, tm_input(g, "v", TM_F32, 1, (int64_t[]){4}), 1, NULL, NULL, 1e-5f) ==
          NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_groupnorm(g, x, 3, NULL, NULL, 0.0f) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_attention_probs(g, x, tm_input(g, "k", TM_F32, 4, (int64_t[]){2, 3, 5, 7}), NULL, 0,
                             0) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_attention_probs(g, x, x, tm_input(g, "kb", TM_F32, 2, (int64_t[]){2, 5}), 0, 0) ==
          NULL);
    tm_graph_free(g);

    /* tm_graph_fail: the first error wins, later builders pass NULL, and
     * compile reports it */
    FRESH();
    tm_graph_fail(g, TM_ERR_LIMIT, "layer %s: too wide (%d)", "fc", 7);
    CHECK(tm_graph_status(g) == TM_ERR_LIMIT);
    CHECK(strcmp(tm_last_error(), "layer fc: too wide (7)") == 0);
    tm_graph_fail(g, TM_ERR_INVALID, "second");
    CHECK(tm_graph_status(g) == TM_ERR_LIMIT);
    CHECK(strcmp(tm_last_error(), "layer fc: too wide (7)") == 0);
    CHECK(tm_rope(g, x, 0, 1e4f) == NULL);
    CHECK_STATUS(tm_graph_compile(g, x, TM_GRAPH_INFER), TM_ERR_LIMIT);
    CHECK(strcmp(tm_last_error(), "layer fc: too wide (7)") == 0);
    tm_graph_free(g);
    tm_graph_fail(NULL, TM_ERR_INVALID, "no graph %d", 1);
    CHECK(strcmp(tm_last_error(), "no graph 1") == 0);

    /* checkpoint misuse */
    FRESH();
    CHECK(tm_graph_checkpoint_end(g, x) == NULL);
    CHECK(strstr(tm_last_error(), "no segment is open") != NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_graph_checkpoint_begin(g, x) == x);
    CHECK(tm_graph_checkpoint_begin(g, x) == NULL);
    CHECK(strstr(tm_last_error(), "cannot nest") != NULL);
    tm_graph_free(g);
    FRESH();
    tm_graph_checkpoint_begin(g, x);
    tm_node *y = tm_exp(g, x);
    CHECK_STATUS(tm_graph_compile(g, tm_sum(g, y, 0, NULL, 0), TM_GRAPH_INFER), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "still open") != NULL);
    tm_graph_free(g);
    FRESH();
    tm_graph_checkpoint_begin(g, x);
    tm_exp(g, x);
    CHECK(tm_graph_checkpoint_end(g, x) == NULL); /* x was built before the segment */
    tm_graph_free(g);
    FRESH();
    tm_graph_checkpoint_begin(g, x); /* an empty segment is fine */
    CHECK(tm_graph_checkpoint_end(g, x) == x);
    CHECK_OK(tm_graph_compile(g, tm_sum(g, x, 0, NULL, 0), TM_GRAPH_INFER));
    tm_graph_free(g);
#undef FRESH
}

/* ------------------------------------------------------------ allgather */

/* A simulated group: every rank's rows live in `rows` (world * n floats);
 * the gather copies this rank's rows in and hands out all of them. */
typedef struct {
    float *rows;
    int rank, calls;
    size_t bytes;
} fake_group;

static tm_status fake_gather(void *ctx, const void *mine, void *all, size_t bytes)
{
    fake_group *f = ctx;
    f->calls++;
    f->bytes = bytes;
    memcpy((char *)f->rows + (size_t)f->rank * bytes, mine, bytes);
    memcpy(all, f->rows, bytes * 3);
    return TM_OK;
}

/* Three ranks each gather (2, 3) rows and compute the same loss
 * sum(tanh(all) * G) over the (6, 3) stack: every rank's loss equals the
 * single-graph loss, and rank r's input gradient is rows 2r..2r+1 of the
 * single graph's; world 1 is a copy; bad settings fail when building. */
static void test_allgather(void)
{
    enum { W = 3, N = 2, E = 3 };
    float X[W * N * E], Gw[W * N * E];
    test_fill_uniform(X, W * N * E, 5, -1.5f, 1.5f);
    test_fill_uniform(Gw, W * N * E, 6, -1, 1);
    /* the reference: one graph over all the rows */
    tm_graph *ref = tm_graph_new();
    tm_node *xr = tm_requires_grad(ref, tm_input(ref, "x", TM_F32, 2, (int64_t[]){W * N, E}));
    tm_node *gr = tm_input(ref, "G", TM_F32, 2, (int64_t[]){W * N, E});
    tm_node *lr = tm_sum(ref, tm_mul(ref, tm_tanh(ref, xr), gr), 0, NULL, 0);
    CHECK_OK(tm_graph_compile(ref, lr, TM_GRAPH_TRAIN));
    memcpy(tm_node_data(ref, xr), X, sizeof X);
    memcpy(tm_node_data(ref, gr), Gw, sizeof Gw);
    CHECK_OK(tm_graph_forward(ref));
    CHECK_OK(tm_graph_backward(ref));
    float want_loss = *(float *)tm_node_data(ref, lr);
    for (int r = 0; r < W; r++) {
        float rows[W * N * E];
        memcpy(rows, X, sizeof rows);
        for (int k = 0; k < N * E; k++) rows[r * N * E + k] = 99.0f; /* must come from x */
        fake_group f = {rows, r, 0, 0};
        tm_graph *g = tm_graph_new();
        tm_node *x = tm_requires_grad(g, tm_input(g, "x", TM_F32, 2, (int64_t[]){N, E}));
        tm_node *G = tm_input(g, "G", TM_F32, 2, (int64_t[]){W * N, E});
        tm_node *all = tm_allgather_rows(g, x, W, r, fake_gather, &f);
        CHECK(all && tm_node_shape(all)[0] == W * N && tm_node_shape(all)[1] == E);
        tm_node *l = tm_sum(g, tm_mul(g, tm_tanh(g, all), G), 0, NULL, 0);
        CHECK_OK(tm_graph_compile(g, l, TM_GRAPH_TRAIN));
        memcpy(tm_node_data(g, x), X + r * N * E, sizeof(float) * N * E);
        memcpy(tm_node_data(g, G), Gw, sizeof Gw);
        CHECK_OK(tm_graph_forward(g));
        CHECK(f.calls == 1 && f.bytes == sizeof(float) * N * E);
        CHECK_NEAR(*(float *)tm_node_data(g, l), want_loss, 1e-6, 1e-6);
        CHECK_OK(tm_graph_backward(g));
        check_close("allgather grad", tm_node_grad(g, x), tm_node_grad(ref, xr) + r * N * E, N * E,
                    1e-7, 1e-6);
        tm_graph_free(g);
    }
    tm_graph_free(ref);
    /* world 1: a copy, no gather needed */
    tm_graph *g = tm_graph_new();
    tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){N, E});
    tm_node *y = tm_allgather_rows(g, x, 1, 0, NULL, NULL);
    CHECK_OK(tm_graph_compile(g, y, TM_GRAPH_INFER));
    memcpy(tm_node_data(g, x), X, sizeof(float) * N * E);
    CHECK_OK(tm_graph_forward(g));
    check_close("allgather world 1", tm_node_data(g, y), X, N * E, 0, 0);
    tm_graph_free(g);
    /* bad settings */
    int bad[][2] = {{2, 2}, {2, -1}, {0, 0}};
    for (int i = 0; i < 3; i++) {
        g = tm_graph_new();
        x = tm_input(g, "x", TM_F32, 2, (int64_t[]){N, E});
        CHECK(!tm_allgather_rows(g, x, bad[i][0], bad[i][1], fake_gather, NULL));
        CHECK(tm_graph_status(g) == TM_ERR_INVALID);
        tm_graph_free(g);
    }
    g = tm_graph_new();
    x = tm_input(g, "x", TM_F32, 2, (int64_t[]){N, E});
    CHECK(!tm_allgather_rows(g, x, 2, 0, NULL, NULL));
    CHECK(strstr(tm_last_error(), "without a gather function") != NULL);
    tm_graph_free(g);
}

int main(void)
{
    test_gradients();
    test_drop_path();
    test_rng_counter();
    test_attention_probs();
    test_errors();
    test_allgather();
    return test_finish("graphops");
}
