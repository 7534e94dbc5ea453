/* Multi-head attention with a fused QKV projection, and the pre-LayerNorm
 * transformer block built on it. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn_internal.h"

/* ---------------------------------------------------------- heads */

tm_node *tm_nn_split_heads(tm_graph *g, tm_node *x, int64_t heads)
{
    if (!x) return NULL;
    const int64_t *s = tm_node_shape(x);
    if (tm_node_ndim(x) != 3 || heads < 1 || s[2] % heads)
        return tm_nn_fail(g, "split_heads: input must be (B, T, C) with C divisible by %lld",
                          (long long)heads);
    int64_t B = s[0], T = s[1], D = s[2] / heads;
    x = tm_reshape(g, x, 4, (int64_t[]){B, T, heads, D});
    return tm_permute(g, x, (int[]){0, 2, 1, 3});
}

tm_node *tm_nn_merge_heads(tm_graph *g, tm_node *x)
{
    if (!x) return NULL;
    if (tm_node_ndim(x) != 4) return tm_nn_fail(g, "merge_heads: input must be (B, H, T, D)");
    const int64_t *s = tm_node_shape(x);
    int64_t B = s[0], H = s[1], T = s[2], D = s[3];
    x = tm_permute(g, x, (int[]){0, 2, 1, 3});
    return tm_reshape(g, x, 3, (int64_t[]){B, T, H * D});
}

/* (B, T, n*C) holding n groups of C columns, each `heads` contiguous heads
 * of D -> n nodes (B, H, T, D). One permute to (n, B, H, T, D), then a
 * slice per group. */
static void split_groups(tm_graph *g, tm_node *x, int n, int64_t heads, tm_node **outs)
{
    for (int i = 0; i < n; i++) outs[i] = NULL;
    if (!x) return;
    const int64_t *s = tm_node_shape(x);
    int64_t B = s[0], T = s[1], D = s[2] / n / heads;
    x = tm_reshape(g, x, 5, (int64_t[]){B, T, n, heads, D});
    x = tm_permute(g, x, (int[]){2, 0, 3, 1, 4});
    for (int i = 0; i < n; i++) {
        tm_node *p = tm_slice(g, x, 0, i, i + 1, 1);
        outs[i] = tm_reshape(g, p, 4, (int64_t[]){B, heads, T, D});
    }
}

/* ------------------------------------------------------------ attention */

tm_status tm_nn_attention_declare(tm_nn_attention *a, tm_graph *g, const char *name, int64_t C,
                                  int64_t heads)
{
    char sub[TM_NN_NAME_MAX];
    memset(a, 0, sizeof *a);
    a->C = C;
    a->heads = heads;
    if (heads < 1 || C < 1 || C % heads) {
        tm_nn_fail(g, "attention '%s': width %lld is not divisible by %lld heads", name,
                   (long long)C, (long long)heads);
        return tm_nn_status(g);
    }
    snprintf(sub, sizeof sub, "%s.qkv", name);
    tm_nn_linear_declare(&a->qkv, g, sub, C, 3 * C, 1);
    snprintf(sub, sizeof sub, "%s.out", name);
    tm_nn_linear_declare(&a->out, g, sub, C, C, 1);
    return tm_nn_status(g);
}

static int check_tokens(tm_graph *g, const char *what, tm_node *x, int64_t C)
{
    if (!x) return 0;
    if (tm_node_ndim(x) != 3 || tm_node_shape(x)[2] != C) {
        tm_nn_fail(g, "%s: input must be (B, T, %lld), got %d dimensions ending in %lld", what,
                   (long long)C, tm_node_ndim(x),
                   (long long)(tm_node_ndim(x) ? tm_node_shape(x)[tm_node_ndim(x) - 1] : 0));
        return 0;
    }
    return 1;
}

tm_node *tm_nn_attention_self(tm_graph *g, const tm_nn_attention *a, tm_node *x,
                              tm_node *key_bias)
{
    if (!check_tokens(g, "attention", x, a->C)) return NULL;
    tm_node *qkv = tm_nn_linear_forward(g, &a->qkv, x); /* (B, T, 3C) */
    tm_node *p[3];
    split_groups(g, qkv, 3, a->heads, p);
    if (a->rope_base > 0) {
        p[0] = tm_rope(g, p[0], 0, a->rope_base);
        p[1] = tm_rope(g, p[1], 0, a->rope_base);
    }
    if (a->probs) *a->probs = tm_attention_probs(g, p[0], p[1], key_bias, 0.0f, a->causal);
    tm_node *o = tm_attention(g, p[0], p[1], p[2], key_bias, 0.0f, a->causal); /* (B, H, T, D) */
    return tm_nn_linear_forward(g, &a->out, tm_nn_merge_heads(g, o));
}

tm_node *tm_nn_attention_cross(tm_graph *g, const tm_nn_attention *a, tm_node *x,
                               tm_node *ctx, tm_node *key_bias)
{
    return tm_nn_attention_subset(g, a, x, ctx, key_bias);
}

tm_node *tm_nn_attention_subset(tm_graph *g, const tm_nn_attention *a, tm_node *x,
                                tm_node *ctx, tm_node *key_bias)
{
    if (!check_tokens(g, "cross-attention", x, a->C) ||
        !check_tokens(g, "cross-attention context", ctx, a->C))
        return NULL;
    if (a->causal)
        return tm_nn_fail(g, "attention over a subset of queries or a context cannot be causal");
    int64_t C = a->C;
    /* rows [0, C) of the fused weight project queries, [C, 3C) keys and
     * values; slicing the (small) weight keeps one set of names */
    tm_node *wq = tm_slice(g, a->qkv.weight, 0, 0, C, 1);
    tm_node *wkv = tm_slice(g, a->qkv.weight, 0, C, 3 * C, 1);
    tm_node *bq = a->qkv.bias ? tm_slice(g, a->qkv.bias, 0, 0, C, 1) : NULL;
    tm_node *bkv = a->qkv.bias ? tm_slice(g, a->qkv.bias, 0, C, 3 * C, 1) : NULL;
    tm_node *q = tm_nn_split_heads(g, tm_linear(g, x, wq, bq), a->heads);
    tm_node *kv[2];
    split_groups(g, tm_linear(g, ctx, wkv, bkv), 2, a->heads, kv);
    if (a->rope_base > 0) {
        /* the queries are the first tokens of the keys' sequence (a
         * subset of a self-attention), so both start at position 0 */
        q = tm_rope(g, q, 0, a->rope_base);
        kv[0] = tm_rope(g, kv[0], 0, a->rope_base);
    }
    if (a->probs) *a->probs = tm_attention_probs(g, q, kv[0], key_bias, 0.0f, 0);
    tm_node *o = tm_attention(g, q, kv[0], kv[1], key_bias, 0.0f, 0);
    return tm_nn_linear_forward(g, &a->out, tm_nn_merge_heads(g, o));
}

/* -------------------------------------------------------------- blocks */

tm_nn_block_params tm_nn_block_default_params(void)
{
    tm_nn_block_params p;
    memset(&p, 0, sizeof p);
    return p;
}

static int check_params(tm_graph *g, const char *name, tm_nn_block_params p)
{
    if (!(p.dropout >= 0.0f && p.dropout < 1.0f)) {
        tm_nn_fail(g, "block '%s': dropout must be in [0, 1)", name);
        return 0;
    }
    if (!(p.drop_path >= 0.0f && p.drop_path < 1.0f)) {
        tm_nn_fail(g, "block '%s': drop_path must be in [0, 1)", name);
        return 0;
    }
    if (!(p.rope_base >= 0.0f) || isinf(p.rope_base)) {
        tm_nn_fail(g, "block '%s': rope_base must be 0 (off) or positive", name);
        return 0;
    }
    return 1;
}

/* x + drop_path(dropout(h)): a residual branch with its regularisers;
 * k tells the branches of one block apart. */
static tm_node *residual(tm_graph *g, tm_node *x, tm_node *h, const tm_nn_block_params *p, int k)
{
    h = tm_nn_dropout(g, h, p->dropout, p->seed * 4 + (uint64_t)k);
    if (p->drop_path > 0) h = tm_drop_path(g, h, p->drop_path, p->seed * 4 + 3 + ((uint64_t)k << 32));
    return tm_add(g, x, h);
}

tm_status tm_nn_block_declare(tm_nn_block *b, tm_graph *g, const char *name, int64_t C,
                              int64_t heads, int64_t hidden, tm_nn_act act, float eps, int cross,
                              tm_nn_block_params p)
{
    char sub[TM_NN_NAME_MAX];
    memset(b, 0, sizeof *b);
    b->cross = cross != 0;
    b->p = p;
    if (!check_params(g, name, p)) return tm_nn_status(g);
    if (b->cross && (p.causal || p.rope_base > 0)) {
        tm_nn_fail(g, "block '%s': a cross-attention block takes no causal mask or rotary "
                      "positions", name);
        return tm_nn_status(g);
    }
    snprintf(sub, sizeof sub, "%s.ln1", name);
    tm_nn_layernorm_declare(&b->ln1, g, sub, C, 1, eps);
    snprintf(sub, sizeof sub, "%s.attn", name);
    tm_nn_attention_declare(&b->attn, g, sub, C, heads);
    b->attn.causal = p.causal;
    b->attn.rope_base = p.rope_base;
    if (b->cross) {
        snprintf(sub, sizeof sub, "%s.ln_ctx", name);
        tm_nn_layernorm_declare(&b->ln_ctx, g, sub, C, 1, eps);
    }
    snprintf(sub, sizeof sub, "%s.ln2", name);
    tm_nn_layernorm_declare(&b->ln2, g, sub, C, 1, eps);
    snprintf(sub, sizeof sub, "%s.mlp", name);
    tm_nn_mlp_declare(&b->mlp, g, sub, C, hidden, act);
    return tm_nn_status(g);
}

tm_node *tm_nn_block_forward(tm_graph *g, const tm_nn_block *b, tm_node *x, tm_node *ctx,
                             tm_node *key_bias)
{
    if (b->cross != (ctx != NULL))
        return tm_nn_fail(g, "block: a %s block %s a context", b->cross ? "cross" : "self",
                          b->cross ? "needs" : "takes no");
    tm_node *h = tm_nn_layernorm_forward(g, &b->ln1, x);
    if (b->cross)
        h = tm_nn_attention_cross(g, &b->attn, h, tm_nn_layernorm_forward(g, &b->ln_ctx, ctx),
                                  key_bias);
    else
        h = tm_nn_attention_self(g, &b->attn, h, key_bias);
    x = residual(g, x, h, &b->p, 0);
    h = tm_nn_mlp_forward(g, &b->mlp, tm_nn_layernorm_forward(g, &b->ln2, x));
    return residual(g, x, h, &b->p, 1);
}

tm_node *tm_nn_block_forward_first(tm_graph *g, const tm_nn_block *b, tm_node *x,
                                   tm_node *key_bias, int64_t n_out)
{
    if (b->cross) return tm_nn_fail(g, "block_forward_first: a self-attention block only");
    if (!check_tokens(g, "block", x, b->attn.C)) return NULL;
    int64_t T = tm_node_shape(x)[1];
    if (n_out < 1 || n_out > T)
        return tm_nn_fail(g, "block_forward_first: %lld of %lld tokens", (long long)n_out,
                          (long long)T);
    if (n_out == T) return tm_nn_block_forward(g, b, x, NULL, key_bias);
    tm_node *h = tm_nn_layernorm_forward(g, &b->ln1, x);
    tm_node *hq = tm_slice(g, h, 1, 0, n_out, 1);
    h = tm_nn_attention_subset(g, &b->attn, hq, h, key_bias);
    x = residual(g, tm_slice(g, x, 1, 0, n_out, 1), h, &b->p, 0);
    h = tm_nn_mlp_forward(g, &b->mlp, tm_nn_layernorm_forward(g, &b->ln2, x));
    return residual(g, x, h, &b->p, 1);
}

/* ------------------------------------------------------ decoder blocks */

tm_status tm_nn_decoder_block_declare(tm_nn_decoder_block *b, tm_graph *g, const char *name,
                                      int64_t C, int64_t heads, int64_t hidden, tm_nn_act act,
                                      float eps, tm_nn_block_params p)
{
    char sub[TM_NN_NAME_MAX];
    memset(b, 0, sizeof *b);
    b->p = p;
    if (!check_params(g, name, p)) return tm_nn_status(g);
    snprintf(sub, sizeof sub, "%s.ln1", name);
    tm_nn_layernorm_declare(&b->ln1, g, sub, C, 1, eps);
    snprintf(sub, sizeof sub, "%s.attn", name);
    tm_nn_attention_declare(&b->attn, g, sub, C, heads);
    b->attn.causal = 1;
    b->attn.rope_base = p.rope_base;
    snprintf(sub, sizeof sub, "%s.ln2", name);
    tm_nn_layernorm_declare(&b->ln2, g, sub, C, 1, eps);
    snprintf(sub, sizeof sub, "%s.xattn", name);
    tm_nn_attention_declare(&b->xattn, g, sub, C, heads);
    snprintf(sub, sizeof sub, "%s.ln3", name);
    tm_nn_layernorm_declare(&b->ln3, g, sub, C, 1, eps);
    snprintf(sub, sizeof sub, "%s.mlp", name);
    tm_nn_mlp_declare(&b->mlp, g, sub, C, hidden, act);
    return tm_nn_status(g);
}

tm_node *tm_nn_decoder_block_forward(tm_graph *g, const tm_nn_decoder_block *b, tm_node *x,
                                     tm_node *ctx, tm_node *ctx_bias)
{
    if (!ctx) return tm_nn_fail(g, "decoder block: a context is needed");
    tm_node *h = tm_nn_attention_self(g, &b->attn, tm_nn_layernorm_forward(g, &b->ln1, x), NULL);
    x = residual(g, x, h, &b->p, 0);
    h = tm_nn_attention_cross(g, &b->xattn, tm_nn_layernorm_forward(g, &b->ln2, x), ctx, ctx_bias);
    x = residual(g, x, h, &b->p, 1);
    h = tm_nn_mlp_forward(g, &b->mlp, tm_nn_layernorm_forward(g, &b->ln3, x));
    return residual(g, x, h, &b->p, 2);
}
