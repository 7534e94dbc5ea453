/*
 * The nn layers: against PyTorch vectors (tests/data/model/nn_layers.safetensors,
 * written by scripts/bench_small_twin.py nn-vectors): Whisper's sinusoids,
 * MAE's 2-D sin-cos table, a pre-LN self-attention block and a cross-attention
 * block with key masks (outputs, and gradients of every parameter and
 * input for loss = sum(y * G)). Then properties checked in C alone: the
 * first-tokens block equals the full block's first rows; expand_rows,
 * min_scalar and the key-bias helper; parameter names and the declare
 * order; build errors that name the layer. At 1 and 2 threads.
 */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/nn.h"

static tm_safetensors *st;

static const float *vec(const char *name, int64_t numel)
{
    tm_tensor t;
    if (tm_safetensors_get(st, name, &t) != TM_OK || t.dtype != TM_F32 ||
        (numel >= 0 && tm_tensor_numel(&t) != numel)) {
        fprintf(stderr, "nn vectors: bad or missing %s\n", name);
        test_checks++, test_failures++;
        return NULL;
    }
    return t.data;
}

static void test_positions(void)
{
    float tab[7 * 12], t2[7 * 8];
    tm_nn_sinusoid_1d_fill(tab, 7, 12);
    const float *want = vec("sinusoid", 7 * 12);
    if (want) check_close("sinusoid", tab, want, 7 * 12, 1e-6, 1e-6);

    /* through the position layer: 1 CLS row + a 2x3 grid */
    tm_graph *g = tm_graph_new();
    tm_nn_position p;
    CHECK_OK(tm_nn_position_declare(&p, g, "vision.pos_emb", TM_NN_POS_SINCOS_2D, 7, 8, 2, 3));
    CHECK(p.extra == 1);
    CHECK_OK(tm_nn_position_fill(&p, t2));
    want = vec("sincos2d", 7 * 8);
    if (want) check_close("sincos2d", t2, want, 7 * 8, 1e-6, 1e-6);
    /* learned tables cannot be filled; a bad width is refused */
    tm_nn_position q;
    CHECK_OK(tm_nn_position_declare(&q, g, "text.pos_emb", TM_NN_POS_LEARNED, 4, 8, 0, 0));
    CHECK_STATUS(tm_nn_position_fill(&q, t2), TM_ERR_INVALID);
    tm_graph_free(g);

    g = tm_graph_new();
    CHECK_STATUS(tm_nn_position_declare(&q, g, "a.pos", TM_NN_POS_SINUSOID, 4, 6 + 1, 0, 0),
                 TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "a.pos") != NULL);
    tm_graph_free(g);

    CHECK(tm_nn_pos_from_name("sincos2d") == TM_NN_POS_SINCOS_2D);
    CHECK(tm_nn_pos_from_name("rotary") == -1);
    CHECK(tm_nn_act_from_name("gelu_tanh") == TM_NN_GELU_TANH);
    CHECK(!strcmp(tm_nn_act_name(TM_NN_SILU), "silu"));
}

/* Copies the twin's parameter values into the graph's parameters, by
 * name ("<kind>.param.<name>" -> "blk.<name>"). */
static int load_params(tm_graph *g, const char *kind)
{
    int n = tm_graph_param_count(g), ok = 1;
    for (int i = 0; i < n; i++) {
        tm_node *p = tm_graph_param_at(g, i);
        char key[200];
        snprintf(key, sizeof key, "%s.param.%s", kind, tm_node_name(p) + 4);
        const float *v = vec(key, tm_node_numel(p));
        if (!v) ok = 0;
        else memcpy(tm_node_data(g, p), v, (size_t)tm_node_numel(p) * 4);
    }
    return ok;
}

/* A self or cross block against PyTorch; returns outputs + gradients for
 * the thread comparison. */
static float *run_block(const char *kind, int check, int64_t *len)
{
    int cross = !strcmp(kind, "cross");
    int64_t B = 2, Tq = cross ? 3 : 5, Tk = 5, C = 16;
    char key[128];
    tm_graph *g = tm_graph_new();
    tm_nn_block blk;
    CHECK_OK(tm_nn_block_declare(&blk, g, "blk", C, 2, 24, TM_NN_GELU_TANH, 1e-5f, cross,
                                 tm_nn_block_default_params()));
    tm_node *x = tm_requires_grad(g, tm_input(g, "x", TM_F32, 3, (int64_t[]){B, Tq, C}));
    tm_node *ctx = cross ? tm_requires_grad(g, tm_input(g, "ctx", TM_F32, 3, (int64_t[]){B, Tk, C}))
                         : NULL;
    tm_node *mask = tm_input(g, "mask", TM_F32, 2, (int64_t[]){B, Tk});
    tm_node *G = tm_input(g, "G", TM_F32, 3, (int64_t[]){B, Tq, C});
    tm_node *y = tm_nn_block_forward(g, &blk, x, ctx, mask);
    tm_graph_keep(g, y);
    tm_node *loss = tm_sum(g, tm_mul(g, y, G), 0, NULL, 0);
    CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
    float *res = NULL;
    *len = 0;
    if (tm_graph_status(g) || !load_params(g, kind)) goto done;
    const char *names[] = {"x", "mask", "G", "ctx"};
    tm_node *nodes[] = {x, mask, G, ctx};
    for (int i = 0; i < 4; i++) {
        if (!nodes[i]) continue;
        snprintf(key, sizeof key, "%s.%s", kind, names[i]);
        const float *v = vec(key, tm_node_numel(nodes[i]));
        if (!v) goto done;
        memcpy(tm_node_data(g, nodes[i]), v, (size_t)tm_node_numel(nodes[i]) * 4);
    }
    CHECK_OK(tm_graph_forward(g));
    CHECK_OK(tm_graph_backward(g));
    size_t np;
    tm_graph_grads(g, &np);
    int64_t n = tm_node_numel(y) + tm_node_numel(x) + (ctx ? tm_node_numel(ctx) : 0) + (int64_t)np;
    res = malloc((size_t)n * 4);
    int64_t at = 0;
    snprintf(key, sizeof key, "%s.y", kind);
    const float *want = vec(key, tm_node_numel(y));
    if (want && check) check_close(key, tm_node_data(g, y), want, tm_node_numel(y), 1e-5, 1e-4);
    memcpy(res + at, tm_node_data(g, y), (size_t)tm_node_numel(y) * 4), at += tm_node_numel(y);
    snprintf(key, sizeof key, "%s.grad_x", kind);
    want = vec(key, tm_node_numel(x));
    if (want && check) check_close(key, tm_node_grad(g, x), want, tm_node_numel(x), 1e-5, 1e-3);
    memcpy(res + at, tm_node_grad(g, x), (size_t)tm_node_numel(x) * 4), at += tm_node_numel(x);
    if (ctx) {
        snprintf(key, sizeof key, "%s.grad_ctx", kind);
        want = vec(key, tm_node_numel(ctx));
        if (want && check) check_close(key, tm_node_grad(g, ctx), want, tm_node_numel(ctx), 1e-5, 1e-3);
        memcpy(res + at, tm_node_grad(g, ctx), (size_t)tm_node_numel(ctx) * 4), at += tm_node_numel(ctx);
    }
    for (int i = 0; i < tm_graph_param_count(g); i++) {
        tm_node *p = tm_graph_param_at(g, i);
        snprintf(key, sizeof key, "%s.grad.%s", kind, tm_node_name(p) + 4);
        want = vec(key, tm_node_numel(p));
        if (want && check) check_close(key, tm_node_grad(g, p), want, tm_node_numel(p), 1e-5, 1e-3);
        memcpy(res + at, tm_node_grad(g, p), (size_t)tm_node_numel(p) * 4), at += tm_node_numel(p);
    }
    *len = at;
done:
    tm_graph_free(g);
    return res;
}

/* Parameter names and order: what a checkpoint relies on. */
static void test_names(void)
{
    tm_graph *g = tm_graph_new();
    tm_nn_block b;
    CHECK_OK(tm_nn_block_declare(&b, g, "text.layers.0", 8, 2, 16, TM_NN_GELU, 1e-5f, 0,
                                 tm_nn_block_default_params()));
    const char *want[] = {"ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias",
                          "attn.out.weight", "attn.out.bias", "ln2.weight", "ln2.bias",
                          "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};
    CHECK(tm_graph_param_count(g) == 12);
    for (int i = 0; i < 12 && i < tm_graph_param_count(g); i++) {
        char full[64];
        snprintf(full, sizeof full, "text.layers.0.%s", want[i]);
        CHECK(!strcmp(tm_node_name(tm_graph_param_at(g, i)), full));
    }
    CHECK(tm_node_shape(b.attn.qkv.weight)[0] == 24 && tm_node_shape(b.attn.qkv.weight)[1] == 8);
    tm_graph_free(g);

    /* heads must divide the width: the message names the layer */
    g = tm_graph_new();
    CHECK_STATUS(tm_nn_block_declare(&b, g, "fusion.layers.1", 10, 4, 16, TM_NN_GELU, 1e-5f, 0,
                                     tm_nn_block_default_params()),
                 TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "fusion.layers.1.attn") != NULL);
    tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){2, 3});
    CHECK(tm_graph_compile(g, x, TM_GRAPH_INFER) == TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "divisible") != NULL);
    tm_graph_free(g);

    /* a wrong input shape is a build error naming the layer */
    g = tm_graph_new();
    tm_nn_attention a;
    CHECK_OK(tm_nn_attention_declare(&a, g, "attn", 8, 2));
    x = tm_input(g, "x", TM_F32, 3, (int64_t[]){2, 3, 6});
    CHECK(tm_nn_attention_self(g, &a, x, NULL) == NULL);
    CHECK(tm_graph_status(g) == TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "attention") != NULL);
    tm_graph_free(g);
}

/* block_forward_first == the full block's first rows; gradients close. */
static void test_first_tokens(void)
{
    int64_t B = 3, T = 6, C = 8;
    tm_graph *g = tm_graph_new();
    tm_nn_block b;
    CHECK_OK(tm_nn_block_declare(&b, g, "b", C, 2, 12, TM_NN_GELU, 1e-5f, 0,
                                 tm_nn_block_default_params()));
    tm_node *x = tm_input(g, "x", TM_F32, 3, (int64_t[]){B, T, C});
    tm_node *mask = tm_input(g, "m", TM_F32, 2, (int64_t[]){B, T});
    tm_node *full = tm_nn_block_forward(g, &b, x, NULL, mask);
    tm_node *first = tm_nn_block_forward_first(g, &b, x, mask, 2);
    tm_node *rows = tm_slice(g, full, 1, 0, 2, 1);
    tm_graph_keep(g, rows);
    tm_graph_keep(g, first);
    tm_node *root = tm_add(g, tm_sum(g, rows, 0, NULL, 0), tm_sum(g, first, 0, NULL, 0));
    CHECK_OK(tm_graph_compile(g, root, TM_GRAPH_INFER));
    size_t np;
    float *params = tm_graph_params(g, &np);
    test_fill_uniform(params, (int64_t)np, 7, -0.5f, 0.5f);
    test_fill_uniform(tm_node_data(g, x), B * T * C, 8, -1, 1);
    float *m = tm_node_data(g, mask);
    for (int64_t i = 0; i < B * T; i++) m[i] = (i % 5 == 3) ? -INFINITY : 0.0f;
    CHECK_OK(tm_graph_forward(g));
    check_close("first tokens", tm_node_data(g, first), tm_node_data(g, rows), B * 2 * C, 1e-6, 1e-5);
    CHECK(tm_nn_block_forward_first(g, &b, x, mask, 0) == NULL);
    tm_graph_free(g);
}

static void test_helpers(void)
{
    tm_graph *g = tm_graph_new();
    tm_node *row = tm_param(g, "cls", 2, (int64_t[]){1, 3});
    tm_node *e = tm_nn_expand_rows(g, row, 4); /* (4, 1, 3) */
    CHECK(e && tm_node_ndim(e) == 3 && tm_node_shape(e)[0] == 4 && tm_node_shape(e)[2] == 3);
    tm_node *x = tm_requires_grad(g, tm_input(g, "x", TM_F32, 1, (int64_t[]){4}));
    tm_node *mn = tm_nn_min_scalar(g, x, 1.0f);
    tm_graph_keep(g, mn);
    tm_node *loss = tm_add(g, tm_sum(g, e, 0, NULL, 0), tm_sum(g, mn, 0, NULL, 0));
    CHECK_OK(tm_graph_compile(g, loss, TM_GRAPH_TRAIN));
    float *xv = tm_node_data(g, x);
    xv[0] = -2, xv[1] = 0.5f, xv[2] = 1.0f, xv[3] = 3;
    CHECK_OK(tm_graph_forward(g));
    CHECK_OK(tm_graph_backward(g));
    const float *mv = tm_node_data(g, mn), *dx = tm_node_grad(g, x), *dr = tm_node_grad(g, row);
    CHECK(mv[0] == -2 && mv[1] == 0.5f && mv[2] == 1.0f && mv[3] == 1.0f);
    CHECK(dx[0] == 1 && dx[1] == 1 && dx[2] == 0 && dx[3] == 0);
    CHECK(dr[0] == 4 && dr[1] == 4 && dr[2] == 4); /* four copies */
    tm_graph_free(g);

    int32_t ids[5] = {5, 0, 7, 0, 1};
    float bias[5];
    tm_nn_key_bias_from_ids(bias, ids, 5, 0);
    CHECK(bias[0] == 0 && isinf(bias[1]) && bias[1] < 0 && bias[2] == 0 && isinf(bias[3]) &&
          bias[4] == 0);

    /* conv stems and to_tokens */
    g = tm_graph_new();
    tm_nn_conv c1, c2;
    CHECK_OK(tm_nn_conv_declare(&c1, g, "audio.conv1", 1, 4, 8, 3, 1, 1, 1));
    CHECK_OK(tm_nn_conv_declare(&c2, g, "vision.patch", 2, 1, 8, 4, 4, 0, 1));
    tm_node *mel = tm_input(g, "mel", TM_F32, 3, (int64_t[]){2, 4, 10});
    tm_node *img = tm_input(g, "img", TM_F32, 4, (int64_t[]){2, 1, 8, 12});
    tm_node *a = tm_nn_to_tokens(g, tm_nn_conv_forward(g, &c1, mel));
    tm_node *v = tm_nn_to_tokens(g, tm_nn_conv_forward(g, &c2, img));
    CHECK(a && tm_node_shape(a)[1] == 10 && tm_node_shape(a)[2] == 8);
    CHECK(v && tm_node_shape(v)[1] == 6 && tm_node_shape(v)[2] == 8);
    CHECK(tm_node_ndim(c2.weight) == 4 && tm_node_shape(c2.weight)[3] == 4);
    tm_graph_free(g);
}

int main(void)
{
    CHECK_OK(tm_safetensors_open(&st, test_data_path("model/nn_layers.safetensors")));
    if (!st) return test_finish("nn");
    test_positions();
    test_names();
    test_first_tokens();
    test_helpers();
    const char *kinds[] = {"self", "cross"};
    for (int k = 0; k < 2; k++) {
        int64_t n1, n2;
        CHECK_OK(tm_set_num_threads(1));
        float *r1 = run_block(kinds[k], 1, &n1);
        CHECK_OK(tm_set_num_threads(2));
        float *r2 = run_block(kinds[k], 0, &n2);
        CHECK(r1 && r2 && n1 == n2 && !memcmp(r1, r2, (size_t)n1 * 4));
        free(r1);
        free(r2);
    }
    tm_safetensors_close(st);
    return test_finish("nn");
}
