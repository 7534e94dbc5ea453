/* Graphs of a model: encoders, fusion, heads and losses recorded on a
 * tm_graph for one batch size and mode, sharing the model's weights, and
 * the masks derived from the inputs before each forward pass. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model_internal.h"

struct tm_model_graph {
    tm_model *m;
    tm_graph *g;
    model_layers *L;
    int64_t B;
    tm_model_mode mode;
    /* inputs written by the caller */
    tm_node *tokens, *image, *mel, *labels;
    uint8_t *present; /* (B, n_enc) */
    /* inputs derived from them before each forward pass */
    tm_node *text_bias;   /* (B, T) key bias of the text encoder */
    tm_node *text_pool;   /* (B, 1, T) weights of the text's masked mean */
    tm_node *fusion_bias; /* (B, Tf) key bias of early fusion */
    tm_node *type_ids;    /* (Tf) constant */
    tm_node *mod_weight;  /* (B, M, 1): late/cross combination weights per modality */
    tm_node *gate_bias;   /* (B, M): late gated fusion, 0 or -1e30 */
    tm_node *cross_bias[TM_MODEL_MAX_ENC]; /* (B, sum of the other streams' tokens) */
    int n_pairs;
    int pa[TM_MODEL_MAX_PAIRS], pb[TM_MODEL_MAX_PAIRS];
    tm_node *pair_labels[TM_MODEL_MAX_PAIRS]; /* (B) i32: b or -100 */
    tm_node *pair_bias[TM_MODEL_MAX_PAIRS];   /* (B) f32: 0 or PAIR_MASKED per column */
    tm_node *pair_weight[TM_MODEL_MAX_PAIRS]; /* () f32 */
    /* outputs */
    tm_node *logits, *emb[TM_MODEL_MAX_ENC], *loss, *loss_class, *loss_con, *root;
    int text_enc; /* index of the text encoder, -1 if none */
};

#define IGNORE_LABEL (-100)
/* The column bias of an example outside a contrastive pair. Finite on
 * purpose: cross_entropy's smoothing term multiplies the sum of the logits
 * by 0, and 0 * -inf would be NaN; exp(-1e30 - max) is exactly 0 anyway. */
#define PAIR_MASKED (-1e30f)

/* ------------------------------------------------------------ encoders */

typedef struct {
    tm_node *tokens; /* (B, T, C) after the final LayerNorm */
    tm_node *pooled; /* (B, C) */
} enc_out;

/* Encoder i's pooling of its tokens x (B, T, C) -> (B, C): the first
 * token, the mean (over real tokens for text), or a learned query's
 * attention over them (the key mask of text included). */
static tm_node *pool_tokens(tm_model_graph *mg, int i, tm_node *x)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    const enc_cfg *e = &c->enc[i];
    const enc_layers *E = &mg->L->enc[i];
    int64_t B = mg->B;
    if (e->pool == POOL_FIRST) return tm_nn_take_token(g, x, 0);
    if (e->pool == POOL_ATTENTION) {
        tm_node *q = tm_nn_expand_rows(g, E->pool_query, B); /* (B, 1, C) */
        tm_node *o = tm_nn_attention_subset(g, &E->pool_attn, q, x,
                                            e->kind == ENC_TEXT ? mg->text_bias : NULL);
        return tm_reshape(g, o, 2, (int64_t[]){B, c->dim});
    }
    if (e->kind == ENC_TEXT) {
        /* mean over the real tokens: weights 1/count on them, 0 on padding */
        if (!mg->text_pool)
            mg->text_pool = tm_input(g, "text_pool", TM_F32, 3, (int64_t[]){B, 1, e->max_tokens});
        return tm_reshape(g, tm_matmul(g, mg->text_pool, x, 0, 0), 2, (int64_t[]){B, c->dim});
    }
    return tm_nn_mean_tokens(g, x);
}

static enc_out build_encoder(tm_model_graph *mg, int i)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    const enc_cfg *e = &c->enc[i];
    const enc_layers *E = &mg->L->enc[i];
    int64_t B = mg->B;
    tm_node *x = NULL, *bias = NULL;
    enc_out o = {NULL, NULL};
    if (e->kind == ENC_TEXT) {
        mg->tokens = tm_input(g, "tokens", TM_I32, 2, (int64_t[]){B, e->max_tokens});
        mg->text_bias = tm_input(g, "text_key_bias", TM_F32, 2, (int64_t[]){B, e->max_tokens});
        bias = mg->text_bias;
        x = tm_nn_embedding_forward(g, &E->tok, mg->tokens); /* (B, T, C) */
    } else if (e->kind == ENC_VISION) {
        mg->image = tm_input(g, "image", TM_F32, 4,
                             (int64_t[]){B, e->channels, e->image_h, e->image_w});
        x = tm_nn_to_tokens(g, tm_nn_conv_forward(g, &E->patch, mg->image)); /* (B, N, C) */
        if (E->cls) x = tm_concat(g, 2, (tm_node *[]){tm_nn_expand_rows(g, E->cls, B), x}, 1);
    } else {
        mg->mel = tm_input(g, "mel", TM_F32, 3, (int64_t[]){B, e->n_mels, e->n_frames});
        x = mg->mel;
        for (int k = 0; k < e->n_stem; k++)
            x = tm_nn_act_forward(g, e->stem_act, tm_nn_conv_forward(g, &E->stem[k], x));
        x = tm_nn_to_tokens(g, x); /* (B, L, C) */
    }
    x = tm_nn_position_forward(g, &E->pos, x);
    for (int l = 0; l < e->layers; l++) x = tm_nn_block_forward(g, &E->blocks[l], x, NULL, bias);
    x = tm_nn_layernorm_forward(g, &E->ln, x);
    o.tokens = x;
    o.pooled = pool_tokens(mg, i, x);
    return o;
}

/* ------------------------------------------------------------- fusion */

static tm_node *build_early_fusion(tm_model_graph *mg, const enc_out *eo)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    const model_layers *L = mg->L;
    int64_t B = mg->B, Tf = c->fusion_tokens;
    tm_node *parts[TM_MODEL_MAX_ENC + 1];
    int np = 0;
    if (L->fusion_cls) parts[np++] = tm_nn_expand_rows(g, L->fusion_cls, B);
    for (int i = 0; i < c->n_enc; i++) parts[np++] = eo[i].tokens;
    tm_node *x = np == 1 ? parts[0] : tm_concat(g, np, parts, 1); /* (B, Tf, C) */
    if (L->type_emb) {
        mg->type_ids = tm_input(g, "fusion_type_ids", TM_I32, 1, (int64_t[]){Tf});
        x = tm_add(g, x, tm_embedding(g, L->type_emb, mg->type_ids)); /* + (Tf, C) */
    }
    mg->fusion_bias = tm_input(g, "fusion_key_bias", TM_F32, 2, (int64_t[]){B, Tf});
    /* Only the CLS output is read, so the last block computes just that
     * token's row (its keys and values still come from every token). */
    for (int l = 0; l + 1 < c->fusion_layers; l++)
        x = tm_nn_block_forward(g, &L->fblocks[l], x, NULL, mg->fusion_bias);
    if (c->fusion_layers > 0)
        x = tm_nn_block_forward_first(g, &L->fblocks[c->fusion_layers - 1], x, mg->fusion_bias, 1);
    x = tm_nn_layernorm_forward(g, &L->fln, x);
    return c->num_classes ? tm_nn_linear_forward(g, &L->head, tm_nn_take_token(g, x, 0)) : NULL;
}

/* (B, M, C) from M pooled vectors (B, C). */
static tm_node *stack_pooled(tm_model_graph *mg, tm_node *const *pooled, int M)
{
    tm_node *parts[TM_MODEL_MAX_ENC];
    for (int i = 0; i < M; i++)
        parts[i] = tm_reshape(mg->g, pooled[i], 3, (int64_t[]){mg->B, 1, mg->m->cfg.dim});
    return M == 1 ? parts[0] : tm_concat(mg->g, M, parts, 1);
}

/* Late fusion: the pooled vectors of the present modalities combined by
 * concatenation (absent ones zeroed), their mean, or a softmax gate over
 * them; then an optional hidden layer and the classifier. */
static tm_node *build_late_fusion(tm_model_graph *mg, const enc_out *eo)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    const model_layers *L = mg->L;
    int M = c->n_enc;
    int64_t B = mg->B;
    tm_node *pooled[TM_MODEL_MAX_ENC];
    for (int i = 0; i < M; i++) pooled[i] = eo[i].pooled;
    tm_node *P = stack_pooled(mg, pooled, M), *y; /* (B, M, C) */
    if (c->combine == COMBINE_GATED) {
        mg->gate_bias = tm_input(g, "fusion_gate_bias", TM_F32, 2, (int64_t[]){B, M});
        tm_node *s = tm_reshape(g, tm_nn_linear_forward(g, &L->gate, P), 2, (int64_t[]){B, M});
        s = tm_softmax(g, tm_add(g, s, mg->gate_bias));
        y = tm_sum(g, tm_mul(g, P, tm_reshape(g, s, 3, (int64_t[]){B, M, 1})), 1, (int[]){1}, 0);
    } else {
        mg->mod_weight = tm_input(g, "fusion_weights", TM_F32, 3, (int64_t[]){B, M, 1});
        y = tm_mul(g, P, mg->mod_weight);
        y = c->combine == COMBINE_CONCAT ? tm_reshape(g, y, 2, (int64_t[]){B, M * c->dim})
                                         : tm_sum(g, y, 1, (int[]){1}, 0);
    }
    if (c->fusion_hidden) y = tm_nn_act_forward(g, c->act, tm_nn_linear_forward(g, &L->fusion_fc1, y));
    return c->num_classes ? tm_nn_linear_forward(g, &L->head, y) : NULL;
}

/* Cross-attention fusion: the modality streams exchange information
 * through cross-attention blocks (in layer l every stream attends to the
 * others' tokens from layer l - 1, absent modalities and padding masked);
 * each stream then gets a LayerNorm and its encoder's pooling, and the
 * classifier reads the concatenation (absent modalities zeroed). */
static tm_node *build_cross_fusion(tm_model_graph *mg, const enc_out *eo)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    const model_layers *L = mg->L;
    int M = c->n_enc;
    int64_t B = mg->B;
    tm_node *x[TM_MODEL_MAX_ENC], *nx[TM_MODEL_MAX_ENC], *pooled[TM_MODEL_MAX_ENC];
    char name[64];
    for (int i = 0; i < M; i++) {
        x[i] = eo[i].tokens;
        int64_t Tc = 0;
        for (int j = 0; j < M; j++) Tc += j == i ? 0 : c->enc[j].tokens;
        snprintf(name, sizeof name, "cross_bias%d", i);
        mg->cross_bias[i] = tm_input(g, name, TM_F32, 2, (int64_t[]){B, Tc});
    }
    for (int l = 0; l < c->fusion_layers; l++) {
        for (int i = 0; i < M; i++) {
            tm_node *others[TM_MODEL_MAX_ENC];
            int n = 0;
            for (int j = 0; j < M; j++)
                if (j != i) others[n++] = x[j];
            tm_node *ctx = n == 1 ? others[0] : tm_concat(g, n, others, 1);
            nx[i] = tm_nn_block_forward(g, &L->fblocks[l * TM_MODEL_MAX_ENC + i], x[i], ctx,
                                        mg->cross_bias[i]);
        }
        for (int i = 0; i < M; i++) x[i] = nx[i];
    }
    for (int i = 0; i < M; i++)
        pooled[i] = pool_tokens(mg, i, tm_nn_layernorm_forward(g, &L->stream_ln[i], x[i]));
    mg->mod_weight = tm_input(g, "fusion_weights", TM_F32, 3, (int64_t[]){B, M, 1});
    tm_node *y = tm_mul(g, stack_pooled(mg, pooled, M), mg->mod_weight);
    y = tm_reshape(g, y, 2, (int64_t[]){B, M * c->dim});
    return c->num_classes ? tm_nn_linear_forward(g, &L->head, y) : NULL;
}

/* --------------------------------------------------------------- losses */

static tm_node *build_contrastive(tm_model_graph *mg)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    int64_t B = mg->B;
    /* scale = exp(min(logit_scale, max)) */
    tm_node *scale = tm_exp(g, tm_nn_min_scalar(g, mg->L->logit_scale, (float)c->logit_scale_max));
    tm_node *total = NULL;
    char name[64];
    for (int p = 0; p < mg->n_pairs; p++) {
        tm_node *a = mg->emb[mg->pa[p]], *b = mg->emb[mg->pb[p]];
        tm_node *logits = tm_mul(g, tm_matmul(g, a, b, 0, 1), scale); /* (B, B) */
        snprintf(name, sizeof name, "pair%d_labels", p);
        mg->pair_labels[p] = tm_input(g, name, TM_I32, 1, (int64_t[]){B});
        snprintf(name, sizeof name, "pair%d_bias", p);
        mg->pair_bias[p] = tm_input(g, name, TM_F32, 1, (int64_t[]){B});
        snprintf(name, sizeof name, "pair%d_weight", p);
        mg->pair_weight[p] = tm_input(g, name, TM_F32, 0, NULL);
        tm_node *l1 = tm_cross_entropy(g, tm_add(g, logits, mg->pair_bias[p]), mg->pair_labels[p],
                                       0.0f, IGNORE_LABEL);
        tm_node *l2 = tm_cross_entropy(g, tm_add(g, tm_transpose(g, logits, 0, 1), mg->pair_bias[p]),
                                       mg->pair_labels[p], 0.0f, IGNORE_LABEL);
        tm_node *lp = tm_mul(g, tm_scale(g, tm_add(g, l1, l2), 0.5f, 0.0f), mg->pair_weight[p]);
        total = total ? tm_add(g, total, lp) : lp;
    }
    return total;
}

static tm_status build(tm_model_graph *mg)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    enc_out eo[TM_MODEL_MAX_ENC];
    for (int i = 0; i < c->n_enc; i++) eo[i] = build_encoder(mg, i);

    int need_class = mg->mode != TM_MODEL_EMBED && c->num_classes;
    int need_emb = mg->mode != TM_MODEL_CLASSIFY && c->embed_dim;
    if (need_class)
        mg->logits = c->fusion == FUSION_EARLY  ? build_early_fusion(mg, eo)
                     : c->fusion == FUSION_LATE ? build_late_fusion(mg, eo)
                                                : build_cross_fusion(mg, eo);
    if (need_emb)
        for (int i = 0; i < c->n_enc; i++)
            mg->emb[i] = tm_l2_normalize(g, tm_nn_linear_forward(g, &mg->L->enc[i].proj, eo[i].pooled),
                                         1e-12f);

    switch (mg->mode) {
    case TM_MODEL_CLASSIFY:
        mg->root = mg->logits;
        break;
    case TM_MODEL_EMBED: {
        tm_node *parts[TM_MODEL_MAX_ENC];
        for (int i = 0; i < c->n_enc; i++)
            parts[i] = tm_reshape(g, mg->emb[i], 3, (int64_t[]){mg->B, 1, c->embed_dim});
        mg->root = tm_concat(g, c->n_enc, parts, 1);
        break;
    }
    default: {
        tm_node *loss = NULL;
        if (need_class) {
            mg->labels = tm_input(g, "labels", TM_I32, 1, (int64_t[]){mg->B});
            mg->loss_class = tm_cross_entropy(g, mg->logits, mg->labels, 0.0f, IGNORE_LABEL);
            loss = tm_scale(g, mg->loss_class, (float)c->w_class, 0.0f);
        }
        if (need_emb) {
            for (int i = 0; i < c->n_enc; i++)
                for (int j = i + 1; j < c->n_enc; j++) {
                    mg->pa[mg->n_pairs] = i;
                    mg->pb[mg->n_pairs++] = j;
                }
            mg->loss_con = build_contrastive(mg);
            tm_node *w = tm_scale(g, mg->loss_con, (float)c->w_contrastive, 0.0f);
            loss = loss ? tm_add(g, loss, w) : w;
        }
        mg->loss = mg->root = loss;
    }
    }
    if (mg->logits) tm_graph_keep(g, mg->logits);
    for (int i = 0; i < c->n_enc; i++)
        if (mg->emb[i]) tm_graph_keep(g, mg->emb[i]);
    if (mg->loss_class) tm_graph_keep(g, mg->loss_class);
    if (mg->loss_con) tm_graph_keep(g, mg->loss_con);
    return tm_graph_status(g) ? tm_fail(tm_graph_status(g), "%s", tm_last_error()) : TM_OK;
}

/* ------------------------------------------------------------ lifetime */

/* The graph declares the model's parameters in the same order as the
 * table: check it, so a layout mismatch can never pass silently. */
static tm_status check_layout(tm_model *m, tm_graph *g)
{
    int n = tm_graph_param_count(g);
    if (n != m->n_t)
        return tm_fail(TM_ERR_INTERNAL, "model graph: %d parameters, the table has %d", n, m->n_t);
    for (int i = 0; i < n; i++) {
        tm_node *p = tm_graph_param_at(g, i);
        if (strcmp(tm_node_name(p), m->t[i].name) || (size_t)tm_node_numel(p) != m->t[i].numel)
            return tm_fail(TM_ERR_INTERNAL, "model graph: parameter %d is '%s', the table says '%s'",
                           i, tm_node_name(p), m->t[i].name);
    }
    return TM_OK;
}

tm_status tm_model_graph_new(tm_model_graph **out, tm_model *m, int64_t batch, tm_model_mode mode)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "model_graph_new: NULL out");
    *out = NULL;
    if (!m) return tm_fail(TM_ERR_INVALID, "model_graph_new: NULL model");
    if (batch < 1 || batch > (1 << 20))
        return tm_fail(TM_ERR_INVALID, "model_graph_new: batch %lld outside 1..%d", (long long)batch,
                       1 << 20);
    const model_cfg *c = &m->cfg;
    if ((unsigned)mode >= TM_MODEL_MODE_COUNT)
        return tm_fail(TM_ERR_INVALID, "model_graph_new: unknown mode %d", (int)mode);
    if (mode == TM_MODEL_CLASSIFY && !c->num_classes)
        return tm_fail(TM_ERR_INVALID, "model_graph_new: the model has no classifier");
    if (mode == TM_MODEL_EMBED && !c->embed_dim)
        return tm_fail(TM_ERR_INVALID, "model_graph_new: the model has no contrastive heads");
    if (mode == TM_MODEL_TRAIN && !m->grads) {
        m->grads = tm_calloc(m->n_params ? m->n_params : 1, sizeof(float));
        if (!m->grads) return tm_fail(TM_ERR_NOMEM, "model: out of memory for the gradients");
    }
    tm_model_graph *mg = tm_calloc(1, sizeof *mg);
    tm_status s = TM_ERR_NOMEM;
    if (!mg) return tm_fail(TM_ERR_NOMEM, "model_graph_new: out of memory");
    mg->m = m;
    mg->B = batch;
    mg->mode = mode;
    mg->text_enc = -1;
    for (int i = 0; i < c->n_enc; i++)
        if (c->enc[i].kind == ENC_TEXT) mg->text_enc = i;
    mg->g = tm_graph_new();
    mg->L = tm_calloc(1, sizeof *mg->L);
    mg->present = tm_alloc((size_t)batch * (size_t)c->n_enc);
    if (!mg->g || !mg->L || !mg->present) {
        s = tm_fail(TM_ERR_NOMEM, "model_graph_new: out of memory");
        goto fail;
    }
    memset(mg->present, 1, (size_t)batch * (size_t)c->n_enc);
    if ((s = tm_model_declare(c, mg->g, mg->L))) goto fail;
    if ((s = check_layout(m, mg->g))) goto fail;
    for (int i = 0; i < m->n_t; i++)
        if (m->t[i].frozen && (s = tm_param_freeze(mg->g, tm_graph_param_at(mg->g, i), 1))) goto fail;
    if ((s = tm_graph_share_params(mg->g, m->params, mode == TM_MODEL_TRAIN ? m->grads : NULL,
                                   m->n_params)))
        goto fail;
    if ((s = build(mg))) goto fail;
    if ((s = tm_graph_compile(mg->g, mg->root,
                              mode == TM_MODEL_TRAIN ? TM_GRAPH_TRAIN : TM_GRAPH_INFER)))
        goto fail;
    if (mg->type_ids) {
        /* 0 for the fusion CLS token, 1 + i for encoder i's tokens */
        int32_t *ids = tm_node_data(mg->g, mg->type_ids);
        int64_t at = 0;
        if (mg->L->fusion_cls) ids[at++] = 0;
        for (int i = 0; i < c->n_enc; i++)
            for (int64_t t = 0; t < c->enc[i].tokens; t++) ids[at++] = 1 + i;
    }
    *out = mg;
    return TM_OK;
fail:
    tm_model_graph_free(mg);
    return s;
}

void tm_model_graph_free(tm_model_graph *mg)
{
    if (!mg) return;
    tm_graph_free(mg->g);
    tm_free(mg->L);
    tm_free(mg->present);
    tm_free(mg);
}

tm_model_inputs tm_model_graph_inputs(tm_model_graph *mg)
{
    tm_model_inputs in;
    memset(&in, 0, sizeof in);
    if (!mg) return in;
    in.tokens = mg->tokens ? tm_node_data(mg->g, mg->tokens) : NULL;
    in.image = mg->image ? tm_node_data(mg->g, mg->image) : NULL;
    in.mel = mg->mel ? tm_node_data(mg->g, mg->mel) : NULL;
    in.labels = mg->labels ? tm_node_data(mg->g, mg->labels) : NULL;
    in.present = mg->present;
    return in;
}

/* ------------------------------------------------------------- running */

/* The masks of one forward pass, from the tokens and the present mask. */
static void derive_inputs(tm_model_graph *mg)
{
    const model_cfg *c = &mg->m->cfg;
    int64_t B = mg->B, M = c->n_enc;
    const uint8_t *pres = mg->present;
    const int32_t *tok = mg->tokens ? tm_node_data(mg->g, mg->tokens) : NULL;
    const enc_cfg *te = mg->text_enc >= 0 ? &c->enc[mg->text_enc] : NULL;
    if (te) {
        int64_t T = te->max_tokens;
        tm_nn_key_bias_from_ids(tm_node_data(mg->g, mg->text_bias), tok, B * T, te->pad_id);
        if (mg->text_pool) {
            float *w = tm_node_data(mg->g, mg->text_pool);
            for (int64_t b = 0; b < B; b++) {
                int64_t n = 0;
                for (int64_t t = 0; t < T; t++) n += tok[b * T + t] != te->pad_id;
                for (int64_t t = 0; t < T; t++)
                    w[b * T + t] = n && tok[b * T + t] != te->pad_id ? 1.0f / (float)n : 0.0f;
            }
        }
    }
    if (mg->fusion_bias) {
        float *fb = tm_node_data(mg->g, mg->fusion_bias);
        int64_t Tf = c->fusion_tokens;
        for (int64_t b = 0; b < B; b++) {
            float *row = fb + b * Tf;
            int64_t at = 0;
            if (mg->L->fusion_cls) row[at++] = 0.0f;
            for (int i = 0; i < M; i++) {
                const enc_cfg *e = &c->enc[i];
                int here = pres[b * M + i] != 0;
                for (int64_t t = 0; t < e->tokens; t++, at++) {
                    int keep = here;
                    if (keep && e->kind == ENC_TEXT) keep = tok[b * e->tokens + t] != e->pad_id;
                    row[at] = keep ? 0.0f : -INFINITY;
                }
            }
        }
    }
    if (mg->mod_weight) {
        /* late concat and cross: 1 or 0 per modality; late sum: the mean
         * over the present ones */
        float *w = tm_node_data(mg->g, mg->mod_weight);
        for (int64_t b = 0; b < B; b++) {
            int n = 0;
            for (int i = 0; i < M; i++) n += pres[b * M + i] != 0;
            float on = c->fusion == FUSION_LATE && c->combine == COMBINE_SUM ? 1.0f / (float)(n ? n : 1)
                                                                              : 1.0f;
            for (int i = 0; i < M; i++) w[b * M + i] = pres[b * M + i] ? on : 0.0f;
        }
    }
    if (mg->gate_bias) {
        float *gb = tm_node_data(mg->g, mg->gate_bias);
        for (int64_t k = 0; k < B * M; k++) gb[k] = pres[k] ? 0.0f : PAIR_MASKED;
    }
    for (int i = 0; i < M && mg->cross_bias[0]; i++) {
        /* stream i's context: the other streams' tokens, in encoder order */
        float *cb = tm_node_data(mg->g, mg->cross_bias[i]);
        int64_t Tc = tm_node_shape(mg->cross_bias[i])[1];
        for (int64_t b = 0; b < B; b++) {
            int64_t at = 0;
            for (int j = 0; j < M; j++) {
                if (j == i) continue;
                const enc_cfg *e = &c->enc[j];
                int here = pres[b * M + j] != 0;
                for (int64_t t = 0; t < e->tokens; t++, at++) {
                    int keep = here;
                    if (keep && e->kind == ENC_TEXT) keep = tok[b * e->tokens + t] != e->pad_id;
                    cb[b * Tc + at] = keep ? 0.0f : -INFINITY;
                }
            }
        }
    }
    /* contrastive pairs: only examples with both modalities take part;
     * the loss is the mean over the pairs that have any */
    int live = 0;
    int64_t counts[TM_MODEL_MAX_PAIRS];
    for (int p = 0; p < mg->n_pairs; p++) {
        counts[p] = 0;
        for (int64_t b = 0; b < B; b++) counts[p] += pres[b * M + mg->pa[p]] && pres[b * M + mg->pb[p]];
        live += counts[p] > 0;
    }
    for (int p = 0; p < mg->n_pairs; p++) {
        int32_t *lab = tm_node_data(mg->g, mg->pair_labels[p]);
        float *bias = tm_node_data(mg->g, mg->pair_bias[p]);
        float *w = tm_node_data(mg->g, mg->pair_weight[p]);
        for (int64_t b = 0; b < B; b++) {
            int both = pres[b * M + mg->pa[p]] && pres[b * M + mg->pb[p]];
            lab[b] = both ? (int32_t)b : IGNORE_LABEL;
            bias[b] = both ? 0.0f : PAIR_MASKED;
        }
        if (counts[p] == 0) {
            /* an empty pair still computes a finite loss (on example 0,
             * unmasked) that weighs nothing, so no NaN reaches the sum */
            lab[0] = 0;
            for (int64_t b = 0; b < B; b++) bias[b] = 0.0f;
        }
        w[0] = counts[p] ? 1.0f / (float)live : 0.0f;
    }
}

tm_status tm_model_graph_forward(tm_model_graph *mg)
{
    if (!mg) return tm_fail(TM_ERR_INVALID, "model_graph_forward: NULL graph");
    derive_inputs(mg);
    return tm_graph_forward(mg->g);
}

tm_status tm_model_graph_backward(tm_model_graph *mg)
{
    if (!mg) return tm_fail(TM_ERR_INVALID, "model_graph_backward: NULL graph");
    if (mg->mode != TM_MODEL_TRAIN)
        return tm_fail(TM_ERR_INVALID, "model_graph_backward: not a training graph");
    return tm_graph_backward(mg->g);
}

const float *tm_model_graph_logits(tm_model_graph *mg)
{
    return mg && mg->logits ? tm_node_data(mg->g, mg->logits) : NULL;
}

const float *tm_model_graph_embeddings(tm_model_graph *mg, int i)
{
    if (!mg || i < 0 || i >= mg->m->cfg.n_enc || !mg->emb[i]) return NULL;
    return tm_node_data(mg->g, mg->emb[i]);
}

tm_model_loss tm_model_graph_loss(tm_model_graph *mg)
{
    tm_model_loss l = {NAN, NAN, NAN};
    if (!mg || !mg->loss) return l;
    l.total = *(const float *)tm_node_data(mg->g, mg->loss);
    if (mg->loss_class) l.classification = *(const float *)tm_node_data(mg->g, mg->loss_class);
    if (mg->loss_con) l.contrastive = *(const float *)tm_node_data(mg->g, mg->loss_con);
    return l;
}

int64_t tm_model_graph_batch(const tm_model_graph *mg) { return mg ? mg->B : 0; }
tm_model_mode tm_model_graph_mode(const tm_model_graph *mg) { return mg ? mg->mode : TM_MODEL_MODE_COUNT; }
tm_graph *tm_model_graph_graph(tm_model_graph *mg) { return mg ? mg->g : NULL; }
