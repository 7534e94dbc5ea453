/* graph: finite-difference gradient checks of every op through the graph,
 * the memory plan, build errors, bad inputs at run time, thread-count
 * independence, dropout, gradient accumulation and frozen parameters, and
 * the TRIMODAL_PROFILE table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/graph.h"

#define MAXIN 4

typedef tm_node *(*build_fn)(tm_graph *g, tm_node **in);

typedef struct {
    const char *name;
    int nin;                     /* float inputs */
    int ndim[MAXIN];
    int64_t shape[MAXIN][TM_MAX_DIMS];
    build_fn build;
    float lo, hi;                /* input range */
    int nids;                    /* optional i32 input: count and values */
    int64_t ids_shape[2];
    int ids_ndim;
    int32_t ids[16];
    double tol;                  /* relative tolerance of the check */
} gcase;

static double loss_of(tm_graph *g, tm_node *loss)
{
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

/* loss = sum(op(inputs) * G); compares d loss / d input with central
 * differences (eps 1e-2 in f32 arithmetic; errors are O(eps^2) plus the
 * loss's rounding over eps, hence tolerances around 1e-2). */
static void gradcheck(const gcase *c)
{
    tm_graph *g = tm_graph_new();
    tm_node *in[MAXIN + 1];
    for (int i = 0; i < c->nin; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "x%d", i);
        in[i] = tm_requires_grad(g, tm_input(g, nm, TM_F32, c->ndim[i], c->shape[i]));
    }
    if (c->nids) in[c->nin] = tm_input(g, "ids", TM_I32, c->ids_ndim, c->ids_shape);
    tm_node *out = c->build(g, in);
    tm_node *G = out ? tm_input(g, "G", TM_F32, tm_node_ndim(out), tm_node_shape(out)) : NULL;
    tm_node *loss = tm_sum(g, tm_mul(g, out, G), 0, NULL, 0);
    tm_status st = tm_graph_compile(g, loss, TM_GRAPH_TRAIN);
    test_checks++;
    if (st != TM_OK) {
        test_failures++;
        fprintf(stderr, "gradcheck %s: compile failed: %s\n", c->name, tm_last_error());
        tm_graph_free(g);
        return;
    }
    for (int i = 0; i < c->nin; i++)
        test_fill_uniform(tm_node_data(g, in[i]), tm_node_numel(in[i]), 100 + i, c->lo, c->hi);
    if (c->nids) memcpy(tm_node_data(g, in[c->nin]), c->ids, (size_t)c->nids * sizeof(int32_t));
    test_fill_uniform(tm_node_data(g, G), tm_node_numel(G), 7, -1.0f, 1.0f);
    CHECK_OK(tm_graph_forward(g));
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

/* ------------------------------------------------------------ builders */
static tm_node *b_matmul(tm_graph *g, tm_node **x) { return tm_matmul(g, x[0], x[1], 0, 0); }
static tm_node *b_matmul_tt(tm_graph *g, tm_node **x) { return tm_matmul(g, x[0], x[1], 1, 1); }
static tm_node *b_matmul_tn(tm_graph *g, tm_node **x) { return tm_matmul(g, x[0], x[1], 1, 0); }
static tm_node *b_matmul_nt(tm_graph *g, tm_node **x) { return tm_matmul(g, x[0], x[1], 0, 1); }
static tm_node *b_linear(tm_graph *g, tm_node **x) { return tm_linear(g, x[0], x[1], x[2]); }
static tm_node *b_add(tm_graph *g, tm_node **x) { return tm_add(g, x[0], x[1]); }
static tm_node *b_sub(tm_graph *g, tm_node **x) { return tm_sub(g, x[0], x[1]); }
static tm_node *b_mul(tm_graph *g, tm_node **x) { return tm_mul(g, x[0], x[1]); }
static tm_node *b_div(tm_graph *g, tm_node **x) { return tm_div(g, x[0], x[1]); }
static tm_node *b_scale(tm_graph *g, tm_node **x) { return tm_scale(g, x[0], -1.5f, 0.25f); }
static tm_node *b_sum1(tm_graph *g, tm_node **x) { return tm_sum(g, x[0], 1, (int[]){1}, 0); }
static tm_node *b_mean02(tm_graph *g, tm_node **x) { return tm_mean(g, x[0], 2, (int[]){0, -1}, 1); }
static tm_node *b_exp(tm_graph *g, tm_node **x) { return tm_exp(g, x[0]); }
static tm_node *b_log(tm_graph *g, tm_node **x) { return tm_log(g, x[0]); }
static tm_node *b_sqrt(tm_graph *g, tm_node **x) { return tm_sqrt(g, x[0]); }
static tm_node *b_tanh(tm_graph *g, tm_node **x) { return tm_tanh(g, x[0]); }
static tm_node *b_sigmoid(tm_graph *g, tm_node **x) { return tm_sigmoid(g, x[0]); }
static tm_node *b_relu(tm_graph *g, tm_node **x) { return tm_relu(g, x[0]); }
static tm_node *b_gelu(tm_graph *g, tm_node **x) { return tm_gelu(g, x[0]); }
static tm_node *b_gelu_tanh(tm_graph *g, tm_node **x) { return tm_gelu_tanh(g, x[0]); }
static tm_node *b_silu(tm_graph *g, tm_node **x) { return tm_silu(g, x[0]); }
static tm_node *b_softmax(tm_graph *g, tm_node **x) { return tm_softmax(g, x[0]); }
static tm_node *b_log_softmax(tm_graph *g, tm_node **x) { return tm_log_softmax(g, x[0]); }
static tm_node *b_layernorm(tm_graph *g, tm_node **x) { return tm_layernorm(g, x[0], x[1], x[2], 1e-5f); }
static tm_node *b_layernorm_plain(tm_graph *g, tm_node **x) { return tm_layernorm(g, x[0], NULL, NULL, 1e-5f); }
static tm_node *b_rmsnorm(tm_graph *g, tm_node **x) { return tm_rmsnorm(g, x[0], x[1], 1e-6f); }
static tm_node *b_l2(tm_graph *g, tm_node **x) { return tm_l2_normalize(g, x[0], 1e-12f); }
static tm_node *b_cos(tm_graph *g, tm_node **x) { return tm_cosine_similarity(g, x[0], x[1], 1e-8f); }
static tm_node *b_embedding(tm_graph *g, tm_node **x) { return tm_embedding(g, x[0], x[1]); }
static tm_node *b_concat(tm_graph *g, tm_node **x) { return tm_concat(g, 3, x, 1); }
static tm_node *b_slice(tm_graph *g, tm_node **x) { return tm_slice(g, x[0], 1, 1, 6, 2); }
static tm_node *b_reshape(tm_graph *g, tm_node **x)
{
    return tm_exp(g, tm_reshape(g, x[0], 2, (int64_t[]){-1, 4}));
}
static tm_node *b_permute(tm_graph *g, tm_node **x) { return tm_permute(g, x[0], (int[]){2, 0, 1}); }
static tm_node *b_transpose(tm_graph *g, tm_node **x) { return tm_transpose(g, x[0], 0, 1); }
static tm_node *b_conv1d(tm_graph *g, tm_node **x) { return tm_conv1d(g, x[0], x[1], x[2], 2, 1); }
static tm_node *b_conv2d(tm_graph *g, tm_node **x) { return tm_conv2d(g, x[0], x[1], x[2], 2, 1, 1, 0); }
static tm_node *b_maxpool(tm_graph *g, tm_node **x) { return tm_maxpool2d(g, x[0], 2, 3, 2, 2, 1, 1); }
static tm_node *b_avgpool(tm_graph *g, tm_node **x) { return tm_avgpool2d(g, x[0], 3, 2, 1, 2, 1, 0); }
static tm_node *b_attention(tm_graph *g, tm_node **x) { return tm_attention(g, x[0], x[1], x[2], NULL, 0, 0); }
static tm_node *b_attention_causal(tm_graph *g, tm_node **x)
{
    return tm_attention(g, x[0], x[1], x[2], NULL, 0.3f, 1);
}
static tm_node *b_ce(tm_graph *g, tm_node **x) { return tm_cross_entropy(g, x[0], x[1], 0.1f, 2); }
/* x used twice: gradients from both uses add up */
static tm_node *b_reuse(tm_graph *g, tm_node **x) { return tm_mul(g, tm_tanh(g, x[0]), x[0]); }
static tm_node *b_split(tm_graph *g, tm_node **x)
{
    tm_node *parts[3];
    tm_split(g, x[0], 0, 3, (int64_t[]){1, 2, 1}, parts);
    return tm_add(g, tm_mul(g, parts[0], parts[2]), tm_sum(g, parts[1], 1, (int[]){0}, 1));
}

static void test_gradients(void)
{
    gcase cases[] = {
        {"matmul", 2, {2, 2}, {{3, 4}, {4, 5}}, b_matmul, -1, 1, .tol = 1e-2},
        {"matmul_batched", 2, {3, 3}, {{2, 3, 4}, {2, 4, 2}}, b_matmul, -1, 1, .tol = 1e-2},
        {"matmul_shared_b_tn", 2, {3, 2}, {{2, 4, 3}, {4, 2}}, b_matmul_tn, -1, 1, .tol = 1e-2},
        {"matmul_shared_a_tt", 2, {2, 3}, {{4, 3}, {2, 5, 4}}, b_matmul_tt, -1, 1, .tol = 1e-2},
        {"matmul_nt", 2, {3, 3}, {{2, 3, 4}, {2, 5, 4}}, b_matmul_nt, -1, 1, .tol = 1e-2},
        {"linear", 3, {3, 2, 1}, {{2, 3, 4}, {5, 4}, {5}}, b_linear, -1, 1, .tol = 1e-2},
        {"add_bcast", 2, {3, 2}, {{2, 3, 4}, {3, 1}}, b_add, -1, 1, .tol = 1e-2},
        {"sub_bcast", 2, {1, 3}, {{4}, {2, 1, 4}}, b_sub, -1, 1, .tol = 1e-2},
        {"mul_bcast", 2, {2, 2}, {{3, 1}, {1, 4}}, b_mul, -1, 1, .tol = 1e-2},
        {"div", 2, {2, 2}, {{3, 4}, {3, 4}}, b_div, 0.5, 2, .tol = 1e-2},
        {"scale", 1, {2}, {{3, 4}}, b_scale, -1, 1, .tol = 1e-2},
        {"sum_axis", 1, {3}, {{2, 3, 4}}, b_sum1, -1, 1, .tol = 1e-2},
        {"mean_axes_keepdim", 1, {3}, {{2, 3, 4}}, b_mean02, -1, 1, .tol = 1e-2},
        {"exp", 1, {2}, {{3, 4}}, b_exp, -1, 1, .tol = 1e-2},
        {"log", 1, {2}, {{3, 4}}, b_log, 0.5, 2, .tol = 1e-2},
        {"sqrt", 1, {2}, {{3, 4}}, b_sqrt, 0.5, 2, .tol = 1e-2},
        {"tanh", 1, {2}, {{3, 4}}, b_tanh, -2, 2, .tol = 1e-2},
        {"sigmoid", 1, {2}, {{3, 4}}, b_sigmoid, -3, 3, .tol = 1e-2},
        {"relu", 1, {2}, {{3, 4}}, b_relu, -1, 1, .tol = 2e-2},
        {"gelu", 1, {2}, {{3, 4}}, b_gelu, -3, 3, .tol = 1e-2},
        {"gelu_tanh", 1, {2}, {{3, 4}}, b_gelu_tanh, -3, 3, .tol = 1e-2},
        {"silu", 1, {2}, {{3, 4}}, b_silu, -3, 3, .tol = 1e-2},
        {"softmax", 1, {2}, {{3, 5}}, b_softmax, -2, 2, .tol = 1e-2},
        {"log_softmax", 1, {2}, {{3, 5}}, b_log_softmax, -2, 2, .tol = 1e-2},
        {"layernorm", 3, {3, 1, 1}, {{2, 3, 6}, {6}, {6}}, b_layernorm, -2, 2, .tol = 2e-2},
        {"layernorm_plain", 1, {2}, {{3, 6}}, b_layernorm_plain, -2, 2, .tol = 2e-2},
        {"rmsnorm", 2, {2, 1}, {{3, 6}, {6}}, b_rmsnorm, -2, 2, .tol = 2e-2},
        {"l2_normalize", 1, {2}, {{3, 5}}, b_l2, -2, 2, .tol = 2e-2},
        {"cosine_similarity", 2, {2, 2}, {{3, 5}, {1, 5}}, b_cos, -2, 2, .tol = 2e-2},
        {"embedding", 1, {2}, {{5, 3}}, b_embedding, -1, 1, 4, {4}, 1, {4, 0, 4, 2}, .tol = 1e-2},
        {"concat", 3, {3, 3, 3}, {{2, 1, 3}, {2, 2, 3}, {2, 3, 3}}, b_concat, -1, 1, .tol = 1e-2},
        {"slice_step", 1, {3}, {{2, 7, 2}}, b_slice, -1, 1, .tol = 1e-2},
        {"split", 1, {2}, {{4, 3}}, b_split, -1, 1, .tol = 1e-2},
        {"reshape", 1, {3}, {{2, 2, 3}}, b_reshape, -1, 1, .tol = 1e-2},
        {"permute", 1, {3}, {{2, 3, 4}}, b_permute, -1, 1, .tol = 1e-2},
        {"transpose", 1, {3}, {{2, 3, 4}}, b_transpose, -1, 1, .tol = 1e-2},
        {"conv1d", 3, {3, 3, 1}, {{2, 3, 7}, {4, 3, 3}, {4}}, b_conv1d, -1, 1, .tol = 2e-2},
        {"conv2d", 3, {4, 4, 1}, {{2, 2, 5, 4}, {3, 2, 3, 2}, {3}}, b_conv2d, -1, 1, .tol = 2e-2},
        {"maxpool2d", 1, {4}, {{2, 2, 5, 6}}, b_maxpool, -1, 1, .tol = 2e-2},
        {"avgpool2d", 1, {4}, {{2, 2, 5, 6}}, b_avgpool, -1, 1, .tol = 1e-2},
        {"attention", 3, {4, 4, 4}, {{2, 2, 3, 4}, {2, 2, 5, 4}, {2, 2, 5, 4}}, b_attention, -1, 1,
         .tol = 2e-2},
        {"attention_causal", 3, {4, 4, 4}, {{1, 2, 4, 3}, {1, 2, 4, 3}, {1, 2, 4, 3}},
         b_attention_causal, -1, 1, .tol = 2e-2},
        {"cross_entropy", 1, {2}, {{4, 5}}, b_ce, -2, 2, 4, {4}, 1, {1, 2, 4, 0}, .tol = 2e-2},
        {"reuse", 1, {2}, {{3, 4}}, b_reuse, -1, 1, .tol = 1e-2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) gradcheck(&cases[i]);
}

/* A chain of layers: the plan must reuse memory, and training must work. */
static void test_plan_and_threads(void)
{
    float results[2][3];
    for (int nt = 1; nt <= 2; nt++) {
        tm_set_num_threads(nt);
        tm_graph *g = tm_graph_new();
        tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){64, 32});
        tm_node *y = tm_input(g, "y", TM_I32, 1, (int64_t[]){64});
        tm_node *h = x;
        for (int l = 0; l < 6; l++) {
            char nm[32];
            snprintf(nm, sizeof nm, "l%d.weight", l);
            tm_node *w = tm_param(g, nm, 2, (int64_t[]){32, 32});
            snprintf(nm, sizeof nm, "l%d.bias", l);
            tm_node *b = tm_param(g, nm, 1, (int64_t[]){32});
            h = tm_gelu(g, tm_layernorm(g, tm_linear(g, h, w, b), NULL, NULL, 1e-5f));
        }
        tm_node *logits = tm_slice(g, h, 1, 0, 10, 1);
        tm_node *loss = tm_cross_entropy(g, logits, y, 0.0f, -100);
        CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
        CHECK(tm_graph_arena_bytes(g) < tm_graph_arena_bytes_unplanned(g));
        size_t np;
        float *p = tm_graph_params(g, &np);
        CHECK(np == 6 * (32 * 32 + 32));
        CHECK(tm_graph_param_count(g) == 12);
        CHECK(tm_graph_find_param(g, "l3.bias") == tm_graph_param_at(g, 7));
        tm_rng r = tm_rng_new(1, 0);
        tm_rng_fill_normal(&r, p, (int64_t)np, 0.0f, 0.2f);
        test_fill_uniform(tm_node_data(g, x), 64 * 32, 3, -1, 1);
        int32_t *yl = tm_node_data(g, y);
        for (int i = 0; i < 64; i++) yl[i] = i % 10;
        float first = 0, last = 0;
        for (int step = 0; step < 30; step++) {
            CHECK_OK(tm_graph_forward(g));
            CHECK_OK(tm_graph_backward(g));
            float *gr = tm_graph_grads(g, NULL);
            for (size_t i = 0; i < np; i++) p[i] -= 0.5f * gr[i];
            float l = *(float *)tm_node_data(g, loss);
            if (step == 0) first = l;
            last = l;
        }
        CHECK(last < first * 0.7f);
        results[nt - 1][0] = first;
        results[nt - 1][1] = last;
        results[nt - 1][2] = p[100];
        tm_graph_free(g);
    }
    CHECK(memcmp(results[0], results[1], sizeof results[0]) == 0);
}

static void test_build_errors(void)
{
    tm_graph *g = tm_graph_new();
    tm_node *a = tm_input(g, "a", TM_F32, 2, (int64_t[]){3, 4});
    tm_node *b = tm_input(g, "b", TM_F32, 2, (int64_t[]){5, 6});
    CHECK(tm_matmul(g, a, b, 0, 0) == NULL);
    CHECK(tm_graph_status(g) == TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "inner sizes") != NULL);
    /* later builders propagate NULL and keep the first message */
    tm_node *c = tm_relu(g, tm_add(g, a, NULL));
    CHECK(c == NULL);
    CHECK_STATUS(tm_graph_compile(g, a, TM_GRAPH_INFER), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "inner sizes") != NULL);
    tm_graph_free(g);

    g = tm_graph_new();
    a = tm_input(g, "a", TM_F32, 2, (int64_t[]){3, 4});
    b = tm_input(g, "b", TM_F32, 2, (int64_t[]){2, 4});
    tm_node *ids = tm_input(g, "ids", TM_I32, 1, (int64_t[]){3});
    CHECK(tm_add(g, a, b) == NULL); /* (3,4)+(2,4) */
    tm_graph_free(g);

    /* a few more, each on a fresh graph */
    tm_node *r;
#define FRESH() (g = tm_graph_new(), a = tm_input(g, "a", TM_F32, 2, (int64_t[]){3, 4}), \
                 ids = tm_input(g, "ids", TM_I32, 1, (int64_t[]){3}))
    FRESH();
    r = tm_reshape(g, a, 2, (int64_t[]){5, -1});
    CHECK(r == NULL && tm_graph_status(g) == TM_ERR_INVALID);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_slice(g, a, 1, 2, 9, 1) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_sum(g, a, 1, (int[]){2}, 0) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_embedding(g, a, a) == NULL); /* ids must be i32 */
    tm_graph_free(g);
    FRESH();
    CHECK(tm_cross_entropy(g, a, tm_input(g, "y", TM_I32, 1, (int64_t[]){4}), 0, -100) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_conv2d(g, a, a, NULL, 1, 1, 0, 0) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_permute(g, a, (int[]){0, 0}) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_param(g, "p", 1, (int64_t[]){-3}) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK(tm_input(g, "huge", TM_F32, 3, (int64_t[]){1 << 20, 1 << 20, 1 << 20}) == NULL);
    CHECK(tm_graph_status(g) == TM_ERR_LIMIT);
    tm_graph_free(g);
    FRESH();
    tm_param(g, "w", 1, (int64_t[]){3});
    CHECK(tm_param(g, "w", 1, (int64_t[]){3}) == NULL); /* duplicate name */
    tm_graph_free(g);
    FRESH();
    CHECK(tm_attention(g, a, a, a, NULL, 0, 0) == NULL);
    tm_graph_free(g);
    FRESH();
    CHECK_STATUS(tm_graph_compile(g, a, TM_GRAPH_TRAIN), TM_ERR_INVALID); /* not a scalar */
    tm_graph_free(g);
    FRESH();
    CHECK_STATUS(tm_graph_forward(g), TM_ERR_INVALID); /* not compiled */
    tm_graph_free(g);
    tm_graph_free(NULL);
    (void)ids;
}

static void test_runtime_errors(void)
{
    tm_graph *g = tm_graph_new();
    tm_node *t = tm_param(g, "emb", 2, (int64_t[]){4, 3});
    tm_node *ids = tm_input(g, "ids", TM_I32, 1, (int64_t[]){2});
    tm_node *out = tm_embedding(g, t, ids);
    CHECK_OK(tm_graph_compile(g, out, TM_GRAPH_INFER));
    int32_t *id = tm_node_data(g, ids);
    id[0] = 1;
    id[1] = 4;
    CHECK_STATUS(tm_graph_forward(g), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "outside 0..3") != NULL);
    id[1] = -1;
    CHECK_STATUS(tm_graph_forward(g), TM_ERR_INVALID);
    id[1] = 3;
    CHECK_OK(tm_graph_forward(g));
    CHECK_STATUS(tm_graph_backward(g), TM_ERR_INVALID); /* inference graph */
    tm_graph_free(g);

    g = tm_graph_new();
    tm_node *l = tm_input(g, "logits", TM_F32, 2, (int64_t[]){2, 3});
    tm_node *y = tm_input(g, "y", TM_I32, 1, (int64_t[]){2});
    CHECK_OK(tm_graph_compile(g, tm_cross_entropy(g, l, y, 0, -100), TM_GRAPH_INFER));
    ((int32_t *)tm_node_data(g, y))[1] = 3;
    CHECK_STATUS(tm_graph_forward(g), TM_ERR_INVALID);
    tm_graph_free(g);

    /* the key-padding bias of attention is a mask: asking for its gradient
     * is refused at compile time, not silently answered with zeros */
    g = tm_graph_new();
    int64_t qs[4] = {1, 1, 2, 4};
    tm_node *q = tm_requires_grad(g, tm_input(g, "q", TM_F32, 4, qs));
    tm_node *kb = tm_requires_grad(g, tm_input(g, "kb", TM_F32, 2, (int64_t[]){1, 2}));
    tm_node *att = tm_attention(g, q, q, q, kb, 0, 0);
    CHECK_STATUS(tm_graph_compile(g, tm_sum(g, att, 0, NULL, 0), TM_GRAPH_TRAIN), TM_ERR_UNSUPPORTED);
    tm_graph_free(g);
}

static void test_dropout_accumulate_freeze(void)
{
    tm_graph *g = tm_graph_new();
    tm_node *w = tm_param(g, "w", 1, (int64_t[]){1000});
    tm_node *f = tm_param(g, "frozen", 1, (int64_t[]){1000});
    CHECK_OK(tm_param_freeze(g, f, 1));
    tm_node *d = tm_dropout(g, tm_mul(g, w, f), 0.25f, 1234);
    tm_graph_keep(g, d);
    tm_node *loss = tm_sum(g, d, 0, NULL, 0);
    CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
    float *p = tm_graph_params(g, NULL);
    for (int i = 0; i < 2000; i++) p[i] = 1.0f;
    CHECK_OK(tm_graph_forward(g));
    float *dv = tm_node_data(g, d);
    int zeros = 0, scaled = 0;
    for (int i = 0; i < 1000; i++) {
        zeros += dv[i] == 0.0f;
        scaled += fabsf(dv[i] - 1.0f / 0.75f) < 1e-6f;
    }
    CHECK(zeros + scaled == 1000);
    CHECK(zeros > 180 && zeros < 320);
    CHECK_OK(tm_graph_backward(g));
    float *gr = tm_graph_grads(g, NULL);
    int agree = 1;
    for (int i = 0; i < 1000; i++) agree &= (dv[i] == 0.0f) == (gr[i] == 0.0f);
    CHECK(agree);
    CHECK(tm_node_grad(g, f) == NULL);
    float g0 = gr[0] + gr[1] + gr[2];
    /* each backward needs its own forward (the plan reuses activations for
     * gradients); replaying the call number replays the mask */
    CHECK_STATUS(tm_graph_backward_accumulate(g), TM_ERR_INVALID);
    tm_graph_set_rng_counter(g, tm_graph_rng_counter(g) - 1);
    CHECK_OK(tm_graph_forward(g));
    CHECK_OK(tm_graph_backward_accumulate(g));
    CHECK_NEAR(gr[0] + gr[1] + gr[2], 2 * g0, 1e-6, 0);
    /* a new forward call draws a new mask */
    float before[1000];
    memcpy(before, dv, sizeof before);
    CHECK_OK(tm_graph_forward(g));
    CHECK(memcmp(before, dv, sizeof before) != 0);
    tm_graph_free(g);
}

/* Two graphs of one model (a training graph at batch 4, an inference graph
 * at batch 1) share one set of weights. */
static tm_node *tiny_model(tm_graph *g, tm_node *x)
{
    tm_node *w = tm_param(g, "w", 2, (int64_t[]){2, 3});
    tm_node *b = tm_param(g, "b", 1, (int64_t[]){2});
    return tm_linear(g, x, w, b);
}

static void test_shared_params(void)
{
    float params[8] = {0}, grads[8] = {0};
    tm_graph *tg = tm_graph_new(), *ig = tm_graph_new();
    tm_node *tx = tm_input(tg, "x", TM_F32, 2, (int64_t[]){4, 3});
    tm_node *ty = tm_input(tg, "y", TM_I32, 1, (int64_t[]){4});
    tm_node *loss = tm_cross_entropy(tg, tiny_model(tg, tx), ty, 0, -100);
    CHECK_OK(tm_graph_share_params(tg, params, grads, 8));
    CHECK_OK(tm_graph_compile(tg, loss, TM_GRAPH_TRAIN));
    CHECK(tm_graph_params(tg, NULL) == params && tm_graph_grads(tg, NULL) == grads);
    tm_node *ix = tm_input(ig, "x", TM_F32, 2, (int64_t[]){1, 3});
    tm_node *out = tiny_model(ig, ix);
    CHECK_OK(tm_graph_share_params(ig, params, NULL, 8));
    CHECK_OK(tm_graph_compile(ig, out, TM_GRAPH_INFER));
    float *x = tm_node_data(tg, tx);
    for (int i = 0; i < 12; i++) x[i] = (float)(i % 5) - 2.0f;
    int32_t *y = tm_node_data(tg, ty);
    for (int i = 0; i < 4; i++) y[i] = i % 2;
    CHECK_OK(tm_graph_forward(tg));
    CHECK_OK(tm_graph_backward(tg));
    for (int i = 0; i < 8; i++) params[i] -= grads[i];
    float *ixv = tm_node_data(ig, ix);
    ixv[0] = 1, ixv[1] = 2, ixv[2] = 3;
    CHECK_OK(tm_graph_forward(ig));
    float *o = tm_node_data(ig, out);
    CHECK_NEAR(o[0], params[0] * 1 + params[1] * 2 + params[2] * 3 + params[6], 1e-6, 1e-6);
    tm_graph_free(tg);
    tm_graph_free(ig);
    CHECK(params[0] != 0.0f || params[1] != 0.0f); /* the buffers outlive the graphs */

    /* a buffer of the wrong size is refused */
    tm_graph *g = tm_graph_new();
    tiny_model(g, tm_input(g, "x", TM_F32, 2, (int64_t[]){1, 3}));
    CHECK_OK(tm_graph_share_params(g, params, NULL, 7));
    CHECK_STATUS(tm_graph_compile(g, tm_graph_param_at(g, 0), TM_GRAPH_INFER), TM_ERR_INVALID);
    tm_graph_free(g);
}

/* A large bias add: the bias gradient (a column sum, split over column
 * ranges) is right and bitwise the same at 1 and 2 threads. */
static void test_bias_gradient(void)
{
    enum { R = 300, C = 128 };
    float db[2][C];
    for (int nt = 1; nt <= 2; nt++) {
        tm_set_num_threads(nt);
        tm_graph *g = tm_graph_new();
        tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){R, C});
        tm_node *G = tm_input(g, "G", TM_F32, 2, (int64_t[]){R, C});
        tm_node *b = tm_param(g, "b", 1, (int64_t[]){C});
        tm_node *loss = tm_sum(g, tm_mul(g, tm_add(g, x, b), G), 0, NULL, 0);
        CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
        test_fill_uniform(tm_node_data(g, G), R * C, 5, -1, 1);
        CHECK_OK(tm_graph_forward(g));
        CHECK_OK(tm_graph_backward(g));
        memcpy(db[nt - 1], tm_node_grad(g, b), sizeof db[0]);
        float want[C];
        const float *gv = tm_node_data(g, G);
        for (int j = 0; j < C; j++) {
            double s = 0;
            for (int i = 0; i < R; i++) s += gv[i * C + j];
            want[j] = (float)s;
        }
        check_close("bias gradient", db[nt - 1], want, C, 1e-4, 1e-5);
        tm_graph_free(g);
    }
    CHECK(memcmp(db[0], db[1], sizeof db[0]) == 0);
}

/* Builds loss = sum(gelu(x W) * G), runs `passes` forward and backward
 * passes, frees the graph with stderr going to a file; returns what was
 * printed (malloc'd) and W's gradient in dw. */
static char *profiled_run(const char *env, int passes, int checkpoint, float *dw)
{
    if (env) setenv("TRIMODAL_PROFILE", env, 1);
    else unsetenv("TRIMODAL_PROFILE");
    tm_graph *g = tm_graph_new();
    tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){8, 6});
    tm_node *G = tm_input(g, "G", TM_F32, 2, (int64_t[]){8, 5});
    tm_node *w = tm_param(g, "w", 2, (int64_t[]){6, 5});
    tm_node *h = tm_matmul(g, x, w, 0, 0);
    if (checkpoint) h = tm_graph_checkpoint_begin(g, h);
    h = tm_gelu(g, tm_scale(g, h, 2.0f, 0.0f));
    if (checkpoint) h = tm_graph_checkpoint_end(g, h);
    tm_node *loss = tm_sum(g, tm_mul(g, h, G), 0, NULL, 0);
    CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
    test_fill_uniform(tm_node_data(g, x), 48, 1, -1, 1);
    test_fill_uniform(tm_node_data(g, G), 40, 2, -1, 1);
    test_fill_uniform(tm_node_data(g, w), 30, 3, -1, 1);
    for (int i = 0; i < passes; i++) {
        CHECK_OK(tm_graph_forward(g));
        CHECK_OK(tm_graph_backward(g));
    }
    memcpy(dw, tm_node_grad(g, w), 30 * sizeof(float));
    char path[] = "/tmp/tm_test_profile_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    tm_graph_free(g);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *text = calloc(1, 4096);
    ssize_t got = pread(fd, text, 4095, 0);
    CHECK(got >= 0);
    close(fd);
    unlink(path);
    unsetenv("TRIMODAL_PROFILE");
    return text;
}

/* The forward and backward run counts of op's row of a profile table;
 * 0 when the row is missing or malformed. */
static int row_counts(const char *table, const char *op, long long *nf, long long *nb)
{
    /* "\n  op  fwd_s  bwd_s  share%  fwd_runs  bwd_runs" */
    char key[32], name[32];
    snprintf(key, sizeof key, "\n  %s ", op);
    const char *row = strstr(table, key);
    double f, b, share;
    return row && sscanf(row, "%31s %lf %lf %lf%% %lld %lld", name, &f, &b, &share, nf, nb) == 6;
}

/* TRIMODAL_PROFILE=1: a table with each op kind that ran, its pass
 * counts and the gradient zeroing; a checkpoint segment's recomputed
 * steps count as forward runs; unset or "0": nothing. Profiling does not
 * change any result. */
static void test_profile(void)
{
    float dw[4][30];
    char *on = profiled_run("1", 3, 0, dw[0]);
    char *off = profiled_run(NULL, 3, 0, dw[1]);
    char *zero = profiled_run("0", 3, 0, dw[2]);
    char *ckpt = profiled_run("1", 3, 1, dw[3]);
    CHECK(strstr(on, "profile of a training graph") != NULL);
    CHECK(strstr(on, "(grad zeroing)") != NULL);
    const char *ops[] = {"matmul", "scale", "gelu", "mul", "sum"};
    for (int i = 0; i < 5; i++) {
        long long nf = 0, nb = 0;
        CHECK(row_counts(on, ops[i], &nf, &nb));
        CHECK(nf == 3 && nb == 3); /* three passes each way */
    }
    /* the segment keeps its output (gelu) and recomputes scale before
     * the backward pass */
    long long nf = 0, nb = 0;
    CHECK(row_counts(ckpt, "scale", &nf, &nb) && nf == 6 && nb == 3);
    CHECK(row_counts(ckpt, "gelu", &nf, &nb) && nf == 3 && nb == 3);
    CHECK(row_counts(ckpt, "matmul", &nf, &nb) && nf == 3 && nb == 3);
    CHECK(off[0] == 0);
    CHECK(zero[0] == 0);
    CHECK(memcmp(dw[0], dw[1], sizeof dw[0]) == 0);
    CHECK(memcmp(dw[0], dw[2], sizeof dw[0]) == 0);
    CHECK(memcmp(dw[0], dw[3], sizeof dw[0]) == 0);
    free(on), free(off), free(zero), free(ckpt);
}

/* Gradient buffers are reused from pass to pass and zeroed (on the pool)
 * when their first contribution arrives: x -> scale -> gelu -> groupnorm
 * -> relu -> maxpool -> sum(. * G), with x also feeding a second branch
 * so that its own gradient accumulates. Every pass must give the same
 * bits and match central differences; a buffer left unzeroed would add
 * the last pass's values in. */
static void test_repeated_gradients(void)
{
    tm_graph *g = tm_graph_new();
    tm_node *x = tm_input(g, "x", TM_F32, 4, (int64_t[]){2, 4, 6, 6});
    tm_node *G = tm_input(g, "G", TM_F32, 4, (int64_t[]){2, 4, 3, 3});
    tm_node *w = tm_param(g, "w", 1, (int64_t[]){4});
    tm_node *b = tm_param(g, "b", 1, (int64_t[]){4});
    x = tm_requires_grad(g, x);
    tm_node *h = tm_gelu(g, tm_scale(g, x, 1.5f, 0.1f));
    h = tm_relu(g, tm_groupnorm(g, h, 2, w, b, 1e-5f));
    h = tm_maxpool2d(g, h, 2, 2, 2, 2, 0, 0);
    tm_node *loss = tm_add(g, tm_sum(g, tm_mul(g, h, G), 0, NULL, 0),
                           tm_sum(g, tm_mul(g, x, x), 0, NULL, 0));
    CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
    test_fill_uniform(tm_node_data(g, x), 288, 11, -2, 2);
    test_fill_uniform(tm_node_data(g, G), 72, 12, -1, 1);
    test_fill_uniform(tm_node_data(g, w), 4, 13, 0.5f, 1.5f);
    test_fill_uniform(tm_node_data(g, b), 4, 14, -0.5f, 0.5f);
    float dx[3][288], dw[3][4];
    for (int pass = 0; pass < 3; pass++) {
        CHECK_OK(tm_graph_forward(g));
        CHECK_OK(tm_graph_backward(g));
        memcpy(dx[pass], tm_node_grad(g, x), sizeof dx[0]);
        memcpy(dw[pass], tm_node_grad(g, w), sizeof dw[0]);
    }
    CHECK(memcmp(dx[0], dx[1], sizeof dx[0]) == 0 && memcmp(dx[0], dx[2], sizeof dx[0]) == 0);
    CHECK(memcmp(dw[0], dw[1], sizeof dw[0]) == 0 && memcmp(dw[0], dw[2], sizeof dw[0]) == 0);
    /* central differences on a few entries of x */
    float *xv = tm_node_data(g, x);
    int idx[] = {0, 37, 101, 200, 287};
    for (int k = 0; k < 5; k++) {
        int i = idx[k];
        const float eps = 1e-2f, keep = xv[i];
        xv[i] = keep + eps;
        CHECK_OK(tm_graph_forward(g));
        double lp = *(float *)tm_node_data(g, loss);
        xv[i] = keep - eps;
        CHECK_OK(tm_graph_forward(g));
        double lm = *(float *)tm_node_data(g, loss);
        xv[i] = keep;
        double fd = (lp - lm) / (2.0 * eps);
        CHECK(fabs(fd - dx[0][i]) <= 2e-2 * (1.0 + fabs(fd)));
    }
    tm_graph_free(g);
}

int main(void)
{
    test_repeated_gradients();
    test_profile();
    test_bias_gradient();
    test_shared_params();
    test_gradients();
    test_plan_and_threads();
    test_build_errors();
    test_runtime_errors();
    test_dropout_accumulate_freeze();
    return test_finish("graph");
}
