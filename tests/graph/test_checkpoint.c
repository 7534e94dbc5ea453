/* graph: gradient checkpointing (issue 5).
 *
 * A stack of transformer-like blocks built from graph ops (LayerNorm,
 * linear, rotary embedding, attention with a key mask, GELU MLP, dropout,
 * drop-path, residuals) is run with and without a checkpoint segment per
 * block: the loss, the parameter gradients and the input gradient must be
 * bitwise the same (the kernels are deterministic and the recompute
 * redraws the same dropout masks), over several steps (each with new
 * masks), with gradient accumulation, at 1 and 2 threads, and the planned
 * arena must shrink. Also: a value kept inside a segment survives the
 * backward pass, a skip connection across segments, an INFER graph with
 * segments, and the arena sizes of a bench-small-like stack (printed). */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/graph.h"

typedef struct {
    int64_t B, T, C, H, F; /* batch, tokens, width, heads, MLP width */
    int L;                 /* blocks */
    float drop, drop_path;
    int rope;
    int skip; /* the last block also adds the first block's output */
} cfg;

typedef struct {
    tm_graph *g;
    tm_node *x, *mask, *G, *loss, *out, *kept;
} net;

static tm_node *param(tm_graph *g, int l, const char *what, int ndim, const int64_t *shape)
{
    char name[64];
    snprintf(name, sizeof name, "l%d.%s", l, what);
    return tm_param(g, name, ndim, shape);
}

/* Pre-LN block: x + drop(attn(LN1 x)), then + drop_path(MLP(LN2 x)). */
static tm_node *block(tm_graph *g, tm_node *x, tm_node *mask, const cfg *c, int l, tm_node **kept)
{
    const int64_t B = c->B, T = c->T, C = c->C, H = c->H, D = C / H;
    tm_node *ln1w = param(g, l, "ln1.weight", 1, &C), *ln1b = param(g, l, "ln1.bias", 1, &C);
    tm_node *wqkv = param(g, l, "qkv.weight", 2, (int64_t[]){3 * C, C});
    tm_node *bqkv = param(g, l, "qkv.bias", 1, (int64_t[]){3 * C});
    tm_node *wo = param(g, l, "out.weight", 2, (int64_t[]){C, C}),
            *bo = param(g, l, "out.bias", 1, &C);
    tm_node *ln2w = param(g, l, "ln2.weight", 1, &C), *ln2b = param(g, l, "ln2.bias", 1, &C);
    tm_node *w1 = param(g, l, "fc1.weight", 2, (int64_t[]){c->F, C});
    tm_node *b1 = param(g, l, "fc1.bias", 1, &c->F);
    tm_node *w2 = param(g, l, "fc2.weight", 2, (int64_t[]){C, c->F}),
            *b2 = param(g, l, "fc2.bias", 1, &C);

    tm_node *h = tm_layernorm(g, x, ln1w, ln1b, 1e-5f);
    tm_node *qkv = tm_linear(g, h, wqkv, bqkv); /* (B, T, 3C) */
    qkv = tm_reshape(g, qkv, 5, (int64_t[]){B, T, 3, H, D});
    qkv = tm_permute(g, qkv, (int[]){2, 0, 3, 1, 4}); /* (3, B, H, T, D) */
    tm_node *parts[3];
    tm_split(g, qkv, 0, 3, (int64_t[]){1, 1, 1}, parts);
    for (int i = 0; i < 3; i++)
        parts[i] = tm_reshape(g, parts[i], 4, (int64_t[]){B, H, T, D});
    if (c->rope) {
        parts[0] = tm_rope(g, parts[0], 0, 10000.0f);
        parts[1] = tm_rope(g, parts[1], 0, 10000.0f);
    }
    tm_node *a = tm_attention(g, parts[0], parts[1], parts[2], mask, 0, 0); /* (B, H, T, D) */
    if (kept && l == 0) *kept = a;
    a = tm_reshape(g, tm_permute(g, a, (int[]){0, 2, 1, 3}), 3, (int64_t[]){B, T, C});
    a = tm_dropout(g, tm_linear(g, a, wo, bo), c->drop, 100 + 2 * (uint64_t)l);
    x = tm_add(g, x, a);
    h = tm_layernorm(g, x, ln2w, ln2b, 1e-5f);
    h = tm_linear(g, tm_gelu(g, tm_linear(g, h, w1, b1)), w2, b2);
    h = tm_drop_path(g, h, c->drop_path, 101 + 2 * (uint64_t)l);
    return tm_add(g, x, h);
}

static net build(const cfg *c, int ckpt, int keep_inner, tm_graph_mode mode)
{
    net n = {0};
    tm_graph *g = n.g = tm_graph_new();
    n.x = tm_input(g, "x", TM_F32, 3, (int64_t[]){c->B, c->T, c->C});
    if (mode == TM_GRAPH_TRAIN) tm_requires_grad(g, n.x);
    n.mask = tm_input(g, "mask", TM_F32, 2, (int64_t[]){c->B, c->T});
    n.G = tm_input(g, "G", TM_F32, 3, (int64_t[]){c->B, c->T, c->C});
    tm_node *h = n.x, *first = NULL;
    for (int l = 0; l < c->L; l++) {
        if (ckpt) h = tm_graph_checkpoint_begin(g, h);
        if (c->skip && l == c->L - 1) h = tm_add(g, h, first);
        h = block(g, h, n.mask, c, l, keep_inner ? &n.kept : NULL);
        if (ckpt) h = tm_graph_checkpoint_end(g, h);
        if (l == 0) first = h;
    }
    n.out = h;
    n.loss = tm_mean(g, tm_mul(g, h, n.G), 0, NULL, 0);
    if (n.kept) tm_graph_keep(g, n.kept);
    CHECK_OK(tm_graph_compile(g, mode == TM_GRAPH_TRAIN ? n.loss : n.out, mode));
    return n;
}

static void fill(net *n, const cfg *c, uint64_t seed)
{
    size_t np;
    float *p = tm_graph_params(n->g, &np);
    tm_rng r = tm_rng_new(seed, 0);
    tm_rng_fill_normal(&r, p, (int64_t)np, 0.0f, 0.15f);
    int64_t nx = c->B * c->T * c->C;
    test_fill_uniform(tm_node_data(n->g, n->x), nx, seed + 1, -1, 1);
    test_fill_uniform(tm_node_data(n->g, n->G), nx, seed + 2, -1, 1);
    float *m = tm_node_data(n->g, n->mask);
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t t = 0; t < c->T; t++) /* example b has its last 3b tokens padded */
            m[b * c->T + t] = t >= c->T - 3 * b ? -INFINITY : 0.0f;
}

/* Loss, parameter gradients and input gradient of `steps` training steps
 * (each a forward and a backward), then the last step replayed (same
 * call number) with backward_accumulate, end to end in one array (caller
 * frees). */
static float *train_run(const cfg *c, int ckpt, int steps, size_t *count, size_t *arena)
{
    net n = build(c, ckpt, 0, TM_GRAPH_TRAIN);
    fill(&n, c, 7);
    size_t np;
    tm_graph_params(n.g, &np);
    int64_t nx = c->B * c->T * c->C;
    size_t per = 1 + np + (size_t)nx;
    *count = per * (size_t)(steps + 1);
    float *res = calloc(*count, sizeof *res), *at = res;
    for (int s = 0; s <= steps; s++) {
        if (s < steps) {
            CHECK_OK(tm_graph_forward(n.g));
            CHECK_OK(tm_graph_backward(n.g));
        } else { /* the last step again, with its masks: twice its gradients */
            tm_graph_set_rng_counter(n.g, tm_graph_rng_counter(n.g) - 1);
            CHECK_OK(tm_graph_forward(n.g));
            CHECK_OK(tm_graph_backward_accumulate(n.g));
        }
        *at++ = *(float *)tm_node_data(n.g, n.loss);
        memcpy(at, tm_graph_grads(n.g, NULL), np * sizeof *at);
        at += np;
        memcpy(at, tm_node_grad(n.g, n.x), (size_t)nx * sizeof *at);
        at += nx;
    }
    *arena = tm_graph_arena_bytes(n.g);
    tm_graph_free(n.g);
    return res;
}

static void compare_runs(const char *what, const cfg *c)
{
    size_t n0, n1, a0, a1;
    float *plain = train_run(c, 0, 2, &n0, &a0);
    float *ck = train_run(c, 1, 2, &n1, &a1);
    test_checks++;
    if (n0 != n1 || memcmp(plain, ck, n0 * sizeof *plain) != 0) {
        test_failures++;
        size_t at = 0;
        while (at < n0 && at < n1 && !memcmp(&plain[at], &ck[at], sizeof *ck))
            at++;
        fprintf(stderr, "%s: checkpointed gradients differ from the plain run at %zu of %zu\n",
                what, at, n0);
        if (n0 == n1) check_close(what, ck, plain, (int64_t)n0, 1e-7, 1e-6);
    }
    CHECK(plain[0] != plain[n0 / 3]); /* the steps drew different masks... */
    /* the replayed step added its own parameter gradients again (up to the
     * rounding of adding each contribution to what is there; an input's
     * gradient is never accumulated) */
    size_t per = n0 / 3, np = per - 1 - (size_t)(c->B * c->T * c->C);
    float *twice = malloc(np * sizeof *twice);
    for (size_t i = 0; i < np; i++)
        twice[i] = 2.0f * ck[per + 1 + i];
    check_close("accumulated gradients", ck + 2 * per + 1, twice, (int64_t)np, 1e-9, 1e-5);
    CHECK(ck[2 * per] == ck[per]);
    free(twice);
    CHECK(a1 < a0); /* ...and the plan shrank */
    printf("%s: arena %.1f KiB plain, %.1f KiB checkpointed\n", what, a0 / 1024.0, a1 / 1024.0);
    free(plain);
    free(ck);
}

static void test_gradients_equal(void)
{
    cfg c = {2, 70, 32, 2, 64, 4, 0.2f, 0.3f, 1, 0}; /* 70 tokens: two attention blocks */
    compare_runs("4 blocks", &c);
    cfg s = {3, 9, 16, 2, 32, 3, 0.1f, 0.5f, 0, 1};
    compare_runs("3 blocks with a skip", &s);

    /* and at 2 threads the checkpointed run is bitwise the 1-thread run */
    size_t n1, n2, a;
    tm_set_num_threads(1);
    float *r1 = train_run(&c, 1, 1, &n1, &a);
    tm_set_num_threads(2);
    float *r2 = train_run(&c, 1, 1, &n2, &a);
    CHECK(n1 == n2 && memcmp(r1, r2, n1 * sizeof *r1) == 0);
    free(r1);
    free(r2);
}

/* A value kept inside a segment is not recomputed over: it still holds the
 * forward pass's value after backward. An INFER graph with segments gives
 * the plain output. */
static void test_keep_and_infer(void)
{
    cfg c = {2, 8, 16, 2, 32, 2, 0.2f, 0.2f, 1, 0};
    net p = build(&c, 0, 1, TM_GRAPH_TRAIN), k = build(&c, 1, 1, TM_GRAPH_TRAIN);
    fill(&p, &c, 3);
    fill(&k, &c, 3);
    int64_t na = tm_node_numel(k.kept);
    CHECK_OK(tm_graph_forward(p.g));
    CHECK_OK(tm_graph_forward(k.g));
    float *before = malloc((size_t)na * sizeof *before);
    memcpy(before, tm_node_data(k.g, k.kept), (size_t)na * sizeof *before);
    CHECK_OK(tm_graph_backward(p.g));
    CHECK_OK(tm_graph_backward(k.g));
    CHECK(memcmp(before, tm_node_data(k.g, k.kept), (size_t)na * sizeof *before) == 0);
    CHECK(memcmp(before, tm_node_data(p.g, p.kept), (size_t)na * sizeof *before) == 0);
    size_t np;
    tm_graph_grads(p.g, &np);
    CHECK(memcmp(tm_graph_grads(p.g, NULL), tm_graph_grads(k.g, NULL), np * sizeof(float)) == 0);
    free(before);
    tm_graph_free(p.g);
    tm_graph_free(k.g);

    net pi = build(&c, 0, 0, TM_GRAPH_INFER), ki = build(&c, 1, 0, TM_GRAPH_INFER);
    fill(&pi, &c, 4);
    fill(&ki, &c, 4);
    CHECK_OK(tm_graph_forward(pi.g));
    CHECK_OK(tm_graph_forward(ki.g));
    CHECK(memcmp(tm_node_data(pi.g, pi.out), tm_node_data(ki.g, ki.out),
                 (size_t)(c.B * c.T * c.C) * sizeof(float)) == 0);
    CHECK(tm_graph_arena_bytes(ki.g) == tm_graph_arena_bytes(pi.g)); /* nothing to save */
    tm_graph_free(pi.g);
    tm_graph_free(ki.g);
}

/* An irregular graph: reads across segments (skip connections, a segment
 * reading an earlier segment's interior), a kept node inside a segment, a
 * view of the input, concat, softmax and layernorm, a node that needs no
 * gradient, dropout: plain and checkpointed gradients are bitwise equal. */
static float *irregular(int ckpt, size_t *count)
{
    tm_graph *g = tm_graph_new();
    tm_node *x = tm_requires_grad(g, tm_input(g, "x", TM_F32, 2, (int64_t[]){4, 6}));
    tm_node *mask = tm_input(g, "mask", TM_F32, 2, (int64_t[]){4, 6});
    tm_node *w0 = tm_param(g, "w0", 2, (int64_t[]){6, 6});
    tm_node *w1 = tm_param(g, "w1", 2, (int64_t[]){6, 12});
    tm_node *lw = tm_param(g, "lw", 1, (int64_t[]){6});
    if (ckpt) tm_graph_checkpoint_begin(g, x);
    tm_node *h1 = tm_tanh(g, tm_linear(g, x, w0, NULL));
    tm_node *k1 = tm_exp(g, tm_scale(g, h1, 0.1f, 0.0f));
    tm_graph_keep(g, k1);
    tm_node *gate = tm_sigmoid(g, mask); /* needs no gradient */
    tm_node *h1b = tm_mul(g, tm_mul(g, h1, k1), gate);
    if (ckpt) tm_graph_checkpoint_end(g, h1b);
    if (ckpt) tm_graph_checkpoint_begin(g, h1b);
    tm_node *xv = tm_reshape(g, tm_reshape(g, x, 1, (int64_t[]){24}), 2, (int64_t[]){4, 6});
    tm_node *h2 = tm_concat(g, 2, (tm_node *[]){h1b, xv}, 1);
    tm_node *h4 = tm_add(g, tm_softmax(g, tm_linear(g, h2, w1, NULL)), k1);
    if (ckpt) tm_graph_checkpoint_end(g, h4);
    if (ckpt) tm_graph_checkpoint_begin(g, h4);
    tm_node *h5 = tm_layernorm(g, h4, lw, NULL, 1e-5f);
    tm_node *h6 = tm_dropout(g, tm_mul(g, h5, h1), 0.3f, 5); /* h1: seg 0's interior */
    if (ckpt) tm_graph_checkpoint_end(g, h6);
    tm_node *loss = tm_mean(g, tm_mul(g, h6, h6), 0, NULL, 0);
    CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
    size_t np;
    float *p = tm_graph_params(g, &np);
    test_fill_uniform(p, (int64_t)np, 1, -0.8f, 0.8f);
    test_fill_uniform(tm_node_data(g, x), 24, 2, -1, 1);
    test_fill_uniform(tm_node_data(g, mask), 24, 3, -2, 2);
    *count = 1 + np + 24 + 24;
    float *res = malloc(*count * sizeof *res);
    CHECK_OK(tm_graph_forward(g));
    CHECK_OK(tm_graph_backward(g));
    res[0] = *(float *)tm_node_data(g, loss);
    memcpy(res + 1, tm_graph_grads(g, NULL), np * sizeof *res);
    memcpy(res + 1 + np, tm_node_grad(g, x), 24 * sizeof *res);
    memcpy(res + 1 + np + 24, tm_node_data(g, k1), 24 * sizeof *res);
    tm_graph_free(g);
    return res;
}

static void test_irregular(void)
{
    size_t n0, n1;
    float *a = irregular(0, &n0), *b = irregular(1, &n1);
    CHECK(n0 == n1 && memcmp(a, b, n0 * sizeof *a) == 0);
    int nonzero = 0;
    for (size_t i = 1; i < n0; i++)
        nonzero += a[i] != 0.0f;
    CHECK(nonzero > (int)n0 / 2); /* the gradients are not trivially zero */
    free(a);
    free(b);
}

/* Every allocation of compiling a checkpointed graph failing in turn: a
 * clean TM_ERR_NOMEM (and no leak under the sanitizers), never a crash. */
static void test_compile_nomem(void)
{
    cfg c = {2, 4, 8, 2, 16, 2, 0.1f, 0.1f, 1, 0};
    int nomem = 0, ok = 0;
    for (long k = 1; k < 400 && !ok; k++) {
        tm_graph *g = tm_graph_new();
        tm_node *h = tm_input(g, "x", TM_F32, 3, (int64_t[]){c.B, c.T, c.C});
        tm_node *mask = tm_input(g, "mask", TM_F32, 2, (int64_t[]){c.B, c.T});
        for (int l = 0; l < c.L; l++)
            h = tm_graph_checkpoint_end(
                g, block(g, tm_graph_checkpoint_begin(g, h), mask, &c, l, NULL));
        tm_node *loss = tm_mean(g, h, 0, NULL, 0);
        CHECK(loss != NULL);
        tm_alloc_fail_after(k);
        tm_status st = tm_graph_compile(g, loss, TM_GRAPH_TRAIN);
        tm_alloc_fail_after(0);
        if (st == TM_ERR_NOMEM)
            nomem++;
        else if (st == TM_OK)
            ok = 1;
        else
            CHECK_OK(st);
        tm_graph_free(g);
    }
    CHECK(ok && nomem >= 5);
}

/* The plan of a bench-small-like stack (compiled, not run): B 32, T 100,
 * C 256, 4 heads, MLP 1024, 4 blocks, dropout 0.1. */
static void test_bench_small_arena(void)
{
    cfg c = {32, 100, 256, 4, 1024, 4, 0.1f, 0.0f, 0, 0};
    net p = build(&c, 0, 0, TM_GRAPH_TRAIN), k = build(&c, 1, 0, TM_GRAPH_TRAIN);
    size_t a0 = tm_graph_arena_bytes(p.g), a1 = tm_graph_arena_bytes(k.g);
    printf("bench-small-like stack (B 32, T 100, C 256, 4 blocks): arena %.1f MiB plain, "
           "%.1f MiB checkpointed (%.0f%% less); unplanned %.1f MiB and %.1f MiB\n",
           a0 / 1048576.0, a1 / 1048576.0, 100.0 * (1.0 - (double)a1 / (double)a0),
           tm_graph_arena_bytes_unplanned(p.g) / 1048576.0,
           tm_graph_arena_bytes_unplanned(k.g) / 1048576.0);
    CHECK(a1 < a0 * 0.6);
    tm_graph_free(p.g);
    tm_graph_free(k.g);
}

int main(void)
{
    test_gradients_equal();
    test_keep_and_infer();
    test_irregular();
    test_compile_nomem();
    test_bench_small_arena();
    return test_finish("checkpoint");
}
