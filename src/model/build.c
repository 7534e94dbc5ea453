/* Graphs of a model: encoders, fusion, heads and losses recorded on a
 * tm_graph for one batch size and mode, sharing the model's weights, and
 * the masks derived from the inputs before each forward pass. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model_internal.h"

enum { LOSS_CLASS = 0, LOSS_CONTRASTIVE, LOSS_CAPTION, LOSS_MASKED, LOSS_COUNT };
static const char *const LOSS_NAMES[LOSS_COUNT] = {"classification", "contrastive", "caption",
                                                   "masked"};

#define MODE_CONTEXT TM_MODEL_MODE_CONTEXT
#define MODE_DECODE TM_MODEL_MODE_DECODE

struct tm_model_graph {
    tm_model *m;
    tm_graph *g;
    model_layers *L;
    int64_t B;
    tm_model_mode mode;
    /* inputs written by the caller */
    tm_node *tokens, *image, *mel, *labels;
    uint8_t *present; /* (B, n_enc) */
    uint8_t *present_all; /* (world * B, n_enc): every rank's (opts.world > 1) */
    tm_node *zeros[2 * TM_MODEL_MAX_ENC]; /* skipped encoders' outputs: always 0 */
    int64_t Bc;           /* rows of the contrastive loss: world * B */
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
    tm_node *pair_labels[TM_MODEL_MAX_PAIRS]; /* (Bc) i32: b or -100 */
    tm_node *pair_bias[TM_MODEL_MAX_PAIRS];   /* (Bc) f32: 0 or PAIR_MASKED per column */
    tm_node *pair_weight[TM_MODEL_MAX_PAIRS]; /* () f32 */
    /* loss weights: scalar inputs, so a trainer can change them per step */
    tm_node *w_node[LOSS_COUNT];
    float weight[LOSS_COUNT];
    int live[LOSS_COUNT]; /* the loss had at least one label in the last pass */
    /* caption decoder (teacher forcing) and masked-token head */
    int32_t *caption;        /* (B, Tc) written by the caller */
    tm_node *dec_in;         /* (B, Tc - 1) i32: caption[:, :-1] */
    tm_node *dec_labels;     /* (B * (Tc - 1)) i32: caption[:, 1:], -100 unscored */
    tm_node *mem_bias;       /* (B, Tm) key bias of the caption context */
    tm_node *mlm_labels;     /* (B * T) i32: mlm_user, or a dummy when it has no label */
    int32_t *mlm_user;       /* (B, T) written by the caller */
    tm_node *mem;            /* EMBED-less captioner context graph: (B, Tm, C) */
    /* bottleneck fusion: weights of each stream's copy of the tokens */
    tm_node *bneck_weight;   /* (B, M, 1, 1) */
    /* outputs */
    tm_node *logits, *emb[TM_MODEL_MAX_ENC], *loss, *root;
    tm_node *loss_part[LOSS_COUNT];
    tm_node *cap_logits, *mlm_logits;
    int text_enc; /* index of the text encoder, -1 if none */
    /* attention maps (opts.attention_maps) */
    int keep_probs;
    tm_model_graph_opts opts;
    tm_node *enc_probs[TM_MODEL_MAX_ENC][TM_MODEL_MAX_LAYERS];
    tm_node *pool_probs[TM_MODEL_MAX_ENC];
    tm_node *fusion_probs[TM_MODEL_MAX_LAYERS];
    tm_node *cap_probs[TM_MODEL_MAX_LAYERS], *cap_xprobs[TM_MODEL_MAX_LAYERS];
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
        mg->L->enc[i].pool_attn.probs = mg->keep_probs ? &mg->pool_probs[i] : NULL;
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

/* Gradient checkpointing per block (opts.checkpoint_blocks, training
 * graphs): a segment from the block's input to its output. */
static tm_node *block_begin(tm_model_graph *mg, tm_node *x)
{
    if (!mg->opts.checkpoint_blocks || mg->mode != TM_MODEL_TRAIN) return x;
    return tm_graph_checkpoint_begin(mg->g, x);
}

static tm_node *block_end(tm_model_graph *mg, tm_node *y)
{
    if (!mg->opts.checkpoint_blocks || mg->mode != TM_MODEL_TRAIN) return y;
    return tm_graph_checkpoint_end(mg->g, y);
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
        if (e->cnn) {
            /* stages of (3x3 conv, GroupNorm, activation) x blocks, max-pool */
            x = mg->image;
            int k = 0;
            for (int st = 0; st < e->n_stages; st++) {
                for (int b = 0; b < e->stages[st].blocks; b++, k++) {
                    x = tm_nn_conv_forward(g, &E->cnn[k].conv, x);
                    x = tm_nn_act_forward(g, c->act, tm_nn_groupnorm_forward(g, &E->cnn[k].norm, x));
                }
                int p = (int)e->stages[st].pool;
                if (p > 1) x = tm_maxpool2d(g, x, p, p, p, p, 0, 0);
            }
            x = tm_nn_linear_forward(g, &E->cnn_proj, tm_nn_to_tokens(g, x)); /* (B, N, C) */
        } else {
            x = tm_nn_to_tokens(g, tm_nn_conv_forward(g, &E->patch, mg->image)); /* (B, N, C) */
        }
        if (E->cls) x = tm_concat(g, 2, (tm_node *[]){tm_nn_expand_rows(g, E->cls, B), x}, 1);
    } else {
        mg->mel = tm_input(g, "mel", TM_F32, 3, (int64_t[]){B, e->n_mels, e->n_frames});
        x = mg->mel;
        if (e->apatch) {
            /* AST-style: 2-D patches of the (mels, frames) picture */
            x = tm_reshape(g, x, 4, (int64_t[]){B, 1, e->n_mels, e->n_frames});
            x = tm_nn_to_tokens(g, tm_nn_conv_forward(g, &E->patch, x)); /* (B, N, C) */
            if (E->cls) x = tm_concat(g, 2, (tm_node *[]){tm_nn_expand_rows(g, E->cls, B), x}, 1);
        } else {
            for (int k = 0; k < e->n_stem; k++)
                x = tm_nn_act_forward(g, e->stem_act, tm_nn_conv_forward(g, &E->stem[k], x));
            x = tm_nn_to_tokens(g, x); /* (B, L, C) */
        }
    }
    x = tm_nn_position_forward(g, &E->pos, x);
    for (int l = 0; l < e->layers; l++) {
        mg->L->enc[i].blocks[l].attn.probs = mg->keep_probs ? &mg->enc_probs[i][l] : NULL;
        x = block_begin(mg, x);
        x = block_end(mg, tm_nn_block_forward(g, &E->blocks[l], x, NULL, bias));
    }
    x = tm_nn_layernorm_forward(g, &E->ln, x);
    o.tokens = x;
    o.pooled = pool_tokens(mg, i, x);
    return o;
}

/* A skipped encoder (opts.skip_encoders): zero tokens and pooled vector,
 * inputs that tm_model_graph_new clears once. Its modality is missing in
 * every example, so the fusion's masks hide these tokens. */
static enc_out skipped_encoder(tm_model_graph *mg, int i)
{
    const model_cfg *c = &mg->m->cfg;
    char name[48];
    enc_out o;
    snprintf(name, sizeof name, "skipped%d_tokens", i);
    o.tokens = tm_input(mg->g, name, TM_F32, 3, (int64_t[]){mg->B, c->enc[i].tokens, c->dim});
    snprintf(name, sizeof name, "skipped%d_pooled", i);
    o.pooled = tm_input(mg->g, name, TM_F32, 2, (int64_t[]){mg->B, c->dim});
    mg->zeros[2 * i] = o.tokens;
    mg->zeros[2 * i + 1] = o.pooled;
    return o;
}

/* ------------------------------------------------------------- fusion */

static tm_node *build_early_fusion(tm_model_graph *mg, const enc_out *eo, tm_node **ctx)
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
    /* Unless a caption decoder reads every fused token, only the CLS
     * output is read, so the last block computes just that token's row
     * (its keys and values still come from every token). */
    for (int l = 0; l < c->fusion_layers; l++) {
        mg->L->fblocks[l].attn.probs = mg->keep_probs ? &mg->fusion_probs[l] : NULL;
        if (l + 1 < c->fusion_layers || ctx)
            x = block_end(mg, tm_nn_block_forward(g, &L->fblocks[l], block_begin(mg, x), NULL,
                                                  mg->fusion_bias));
        else
            x = tm_nn_block_forward_first(g, &L->fblocks[l], x, mg->fusion_bias, 1);
    }
    x = tm_nn_layernorm_forward(g, &L->fln, x);
    if (ctx) *ctx = x;
    return c->num_classes && L->fusion_cls
               ? tm_nn_linear_forward(g, &L->head, tm_nn_take_token(g, x, 0))
               : NULL;
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
static tm_node *build_late_fusion(tm_model_graph *mg, const enc_out *eo, tm_node **ctx)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    const model_layers *L = mg->L;
    int M = c->n_enc;
    int64_t B = mg->B;
    if (ctx) {
        tm_node *parts[TM_MODEL_MAX_ENC];
        for (int i = 0; i < M; i++) parts[i] = eo[i].tokens;
        *ctx = M == 1 ? parts[0] : tm_concat(g, M, parts, 1);
    }
    if (!c->num_classes) return NULL;
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
/* The end of cross and bottleneck fusion: each stream's final LayerNorm
 * and pooling; the classifier reads the concatenation (absent modalities
 * zeroed). The caption context is the streams' tokens. */
static tm_node *streams_head(tm_model_graph *mg, tm_node *const *x, tm_node **ctx)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    const model_layers *L = mg->L;
    int M = c->n_enc;
    int64_t B = mg->B;
    tm_node *pooled[TM_MODEL_MAX_ENC], *normed[TM_MODEL_MAX_ENC];
    for (int i = 0; i < M; i++) {
        normed[i] = tm_nn_layernorm_forward(g, &L->stream_ln[i], x[i]);
        pooled[i] = c->num_classes ? pool_tokens(mg, i, normed[i]) : NULL;
    }
    if (ctx) *ctx = tm_concat(g, M, normed, 1);
    if (!c->num_classes) return NULL;
    mg->mod_weight = tm_input(g, "fusion_weights", TM_F32, 3, (int64_t[]){B, M, 1});
    tm_node *y = tm_mul(g, stack_pooled(mg, pooled, M), mg->mod_weight);
    y = tm_reshape(g, y, 2, (int64_t[]){B, M * c->dim});
    return tm_nn_linear_forward(g, &L->head, y);
}

static tm_node *build_cross_fusion(tm_model_graph *mg, const enc_out *eo, tm_node **ctx_out)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    const model_layers *L = mg->L;
    int M = c->n_enc;
    int64_t B = mg->B;
    tm_node *x[TM_MODEL_MAX_ENC], *nx[TM_MODEL_MAX_ENC];
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
            int k = l * TM_MODEL_MAX_ENC + i;
            mg->L->fblocks[k].attn.probs = mg->keep_probs ? &mg->fusion_probs[k] : NULL;
            nx[i] = tm_nn_block_forward(g, &L->fblocks[k], x[i], ctx, mg->cross_bias[i]);
        }
        for (int i = 0; i < M; i++) x[i] = nx[i];
    }
    return streams_head(mg, x, ctx_out);
}

/* Bottleneck fusion (Nagrani et al., 2021): each stream runs its own
 * blocks over [its tokens; n shared bottleneck tokens]; after every layer
 * the bottleneck is the mean of the streams' updated copies over the
 * modalities present in that example, so modalities only exchange
 * information through those few tokens. */
static tm_node *build_bottleneck_fusion(tm_model_graph *mg, const enc_out *eo, tm_node **ctx)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    const model_layers *L = mg->L;
    int M = c->n_enc;
    int64_t B = mg->B, C = c->dim, n = c->bottleneck;
    tm_node *x[TM_MODEL_MAX_ENC], *zs[TM_MODEL_MAX_ENC];
    char name[64];
    for (int i = 0; i < M; i++) {
        x[i] = eo[i].tokens;
        snprintf(name, sizeof name, "bottleneck_bias%d", i);
        mg->cross_bias[i] = tm_input(g, name, TM_F32, 2, (int64_t[]){B, c->enc[i].tokens + n});
    }
    mg->bneck_weight = tm_input(g, "bottleneck_weights", TM_F32, 4, (int64_t[]){B, M, 1, 1});
    tm_node *z = tm_nn_expand_rows(g, tm_reshape(g, L->bottleneck, 2, (int64_t[]){1, n * C}), B);
    z = tm_reshape(g, z, 3, (int64_t[]){B, n, C});
    for (int l = 0; l < c->fusion_layers; l++) {
        for (int i = 0; i < M; i++) {
            int64_t T = c->enc[i].tokens;
            int k = l * TM_MODEL_MAX_ENC + i;
            mg->L->fblocks[k].attn.probs = mg->keep_probs ? &mg->fusion_probs[k] : NULL;
            tm_node *h = tm_concat(g, 2, (tm_node *[]){x[i], z}, 1);
            h = tm_nn_block_forward(g, &L->fblocks[k], h, NULL, mg->cross_bias[i]);
            x[i] = tm_slice(g, h, 1, 0, T, 1);
            zs[i] = tm_reshape(g, tm_slice(g, h, 1, T, T + n, 1), 4, (int64_t[]){B, 1, n, C});
        }
        tm_node *all = M == 1 ? zs[0] : tm_concat(g, M, zs, 1); /* (B, M, n, C) */
        z = tm_sum(g, tm_mul(g, all, mg->bneck_weight), 1, (int[]){1}, 0);
    }
    return streams_head(mg, x, ctx);
}

/* --------------------------------------------------------------- losses */

static tm_node *build_contrastive(tm_model_graph *mg)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    int64_t B = mg->Bc;
    tm_node *ls = mg->L->logit_scale;
    if (mg->opts.world > 1 && ls) {
        /* every rank computes the whole loss, so each must take 1/world of
         * the temperature's gradient: the mean of the ranks' (equal)
         * copies has that backward and the same value */
        int world = mg->opts.world;
        tm_node *all = tm_allgather_rows(g, tm_reshape(g, ls, 1, (int64_t[]){1}), world,
                                         mg->opts.rank, mg->opts.gather, mg->opts.gather_ctx);
        ls = tm_mean(g, all, 1, (int[]){0}, 0); /* a scalar, as logit_scale */
    }
    /* scale = exp(min(logit_scale, max)) */
    tm_node *scale = tm_exp(g, tm_nn_min_scalar(g, ls, (float)c->logit_scale_max));
    tm_node *total = NULL;
    char name[64];
    /* data parallelism: every rank's embeddings, in rank order */
    tm_node *emb[TM_MODEL_MAX_ENC];
    for (int i = 0; i < c->n_enc; i++)
        emb[i] = mg->opts.world > 1 ? tm_allgather_rows(g, mg->emb[i], mg->opts.world, mg->opts.rank,
                                                        mg->opts.gather, mg->opts.gather_ctx)
                                    : mg->emb[i];
    for (int p = 0; p < mg->n_pairs; p++) {
        tm_node *a = emb[mg->pa[p]], *b = emb[mg->pb[p]];
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

/* --------------------------------------------------------------- decoder */

/* The caption decoder over ids (B', T') i32 attending to ctx (B', Tm, C)
 * with ctx_bias (B', Tm): next-token logits (B', T', V). */
static tm_node *build_decoder(tm_model_graph *mg, tm_node *ids, tm_node *ctx, tm_node *ctx_bias)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    model_layers *L = mg->L;
    if (!ids) return NULL; /* an earlier op failed (out of memory): the graph reports it */
    int64_t T = tm_node_shape(ids)[1];
    tm_node *x = tm_nn_embedding_forward(g, &L->cap_tok, ids); /* (B', T', C) */
    if (L->cap_pos.table) x = tm_add(g, x, tm_slice(g, L->cap_pos.table, 0, 0, T, 1));
    for (int l = 0; l < c->caption_layers; l++) {
        L->cap_blocks[l].attn.probs = mg->keep_probs ? &mg->cap_probs[l] : NULL;
        L->cap_blocks[l].xattn.probs = mg->keep_probs ? &mg->cap_xprobs[l] : NULL;
        x = tm_nn_decoder_block_forward(g, &L->cap_blocks[l], x, ctx, ctx_bias);
    }
    return tm_nn_linear_forward(g, &L->cap_head, tm_nn_layernorm_forward(g, &L->cap_ln, x));
}

/* Tokens in the caption context: one encoder's, or the fused sequence. */
static int64_t context_tokens(const model_cfg *c)
{
    if (c->caption_context >= 0) return c->enc[c->caption_context].tokens;
    if (c->fusion == FUSION_EARLY) return c->fusion_tokens;
    int64_t n = 0;
    for (int i = 0; i < c->n_enc; i++) n += c->enc[i].tokens;
    return n;
}

/* A scalar loss weight, an input of the graph. */
static tm_node *weighted(tm_model_graph *mg, int k, tm_node *loss)
{
    static const char *const names[LOSS_COUNT] = {"w_classification", "w_contrastive",
                                                  "w_caption", "w_masked"};
    mg->loss_part[k] = loss;
    mg->w_node[k] = tm_input(mg->g, names[k], TM_F32, 0, NULL);
    return tm_mul(mg->g, loss, mg->w_node[k]);
}

static tm_status build(tm_model_graph *mg)
{
    tm_graph *g = mg->g;
    const model_cfg *c = &mg->m->cfg;
    enc_out eo[TM_MODEL_MAX_ENC];
    int64_t B = mg->B;
    for (int i = 0; i < c->n_enc && mg->mode != MODE_DECODE; i++)
        eo[i] = mg->opts.skip_encoders >> i & 1 ? skipped_encoder(mg, i) : build_encoder(mg, i);

    int train = mg->mode == TM_MODEL_TRAIN;
    int need_class = (mg->mode == TM_MODEL_CLASSIFY || train) && c->num_classes;
    unsigned skip = train ? mg->opts.skip_losses : 0;
    int need_emb = (mg->mode == TM_MODEL_EMBED || train) && c->embed_dim &&
                   !(skip >> LOSS_CONTRASTIVE & 1);
    int need_cap = c->caption && !(skip >> LOSS_CAPTION & 1);
    int need_ctx = ((train && need_cap) || mg->mode == MODE_CONTEXT) && c->caption;
    int fuse_ctx = need_ctx && c->caption_context == CAPTION_CONTEXT_FUSION;
    tm_node *ctx = NULL;
    if (mg->mode == MODE_DECODE) need_class = need_emb = need_ctx = fuse_ctx = 0;
    if (need_class || fuse_ctx) {
        tm_node **cp = fuse_ctx ? &ctx : NULL;
        tm_node *lg = c->fusion == FUSION_EARLY  ? build_early_fusion(mg, eo, cp)
                      : c->fusion == FUSION_LATE ? build_late_fusion(mg, eo, cp)
                      : c->fusion == FUSION_CROSS ? build_cross_fusion(mg, eo, cp)
                                                  : build_bottleneck_fusion(mg, eo, cp);
        if (need_class) mg->logits = lg;
    }
    if (need_ctx && !fuse_ctx) ctx = eo[c->caption_context].tokens;
    if (need_ctx)
        mg->mem_bias = tm_input(g, "caption_context_bias", TM_F32, 2,
                                (int64_t[]){B, context_tokens(c)});
    if (need_emb)
        for (int i = 0; i < c->n_enc; i++)
            mg->emb[i] = tm_l2_normalize(g, tm_nn_linear_forward(g, &mg->L->enc[i].proj, eo[i].pooled),
                                         1e-12f);

    switch ((int)mg->mode) {
    case TM_MODEL_CLASSIFY:
        mg->root = mg->logits;
        break;
    case TM_MODEL_EMBED: {
        tm_node *parts[TM_MODEL_MAX_ENC];
        for (int i = 0; i < c->n_enc; i++)
            parts[i] = tm_reshape(g, mg->emb[i], 3, (int64_t[]){B, 1, c->embed_dim});
        mg->root = tm_concat(g, c->n_enc, parts, 1);
        break;
    }
    case MODE_CONTEXT:
        mg->mem = mg->root = ctx;
        break;
    case MODE_DECODE: {
        /* the decoder alone: ids, context and its bias are inputs */
        int64_t Tm = context_tokens(c);
        mg->dec_in = tm_input(g, "caption_ids", TM_I32, 2, (int64_t[]){B, c->caption_tokens});
        mg->mem = tm_input(g, "caption_context", TM_F32, 3, (int64_t[]){B, Tm, c->dim});
        mg->mem_bias = tm_input(g, "caption_context_bias", TM_F32, 2, (int64_t[]){B, Tm});
        mg->cap_logits = mg->root = build_decoder(mg, mg->dec_in, mg->mem, mg->mem_bias);
        break;
    }
    default: {
        tm_node *loss = NULL, *w;
        if (need_class) {
            mg->labels = tm_input(g, "labels", TM_I32, 1, (int64_t[]){B});
            loss = weighted(mg, LOSS_CLASS, tm_cross_entropy(g, mg->logits, mg->labels,
                                                             mg->opts.label_smoothing, IGNORE_LABEL));
        }
        if (need_emb) {
            for (int i = 0; i < c->n_enc; i++)
                for (int j = i + 1; j < c->n_enc; j++) {
                    mg->pa[mg->n_pairs] = i;
                    mg->pb[mg->n_pairs++] = j;
                }
            w = weighted(mg, LOSS_CONTRASTIVE, build_contrastive(mg));
            loss = loss ? tm_add(g, loss, w) : w;
        }
        if (need_cap) {
            int64_t Tc = c->caption_tokens;
            mg->dec_in = tm_input(g, "caption_in", TM_I32, 2, (int64_t[]){B, Tc - 1});
            mg->dec_labels = tm_input(g, "caption_labels", TM_I32, 1, (int64_t[]){B * (Tc - 1)});
            mg->cap_logits = build_decoder(mg, mg->dec_in, ctx, mg->mem_bias);
            tm_node *flat = tm_reshape(g, mg->cap_logits, 2, (int64_t[]){B * (Tc - 1), c->caption_vocab});
            w = weighted(mg, LOSS_CAPTION,
                         tm_cross_entropy(g, flat, mg->dec_labels, 0.0f, IGNORE_LABEL));
            loss = loss ? tm_add(g, loss, w) : w;
        }
        if (c->masked && !(skip >> LOSS_MASKED & 1)) {
            const enc_cfg *te = &c->enc[mg->text_enc];
            int64_t T = te->max_tokens;
            mg->mlm_labels = tm_input(g, "mlm_labels", TM_I32, 1, (int64_t[]){B * T});
            mg->mlm_logits = tm_nn_linear_forward(g, &mg->L->enc[mg->text_enc].mlm,
                                                  eo[mg->text_enc].tokens); /* (B, T, V) */
            tm_node *flat = tm_reshape(g, mg->mlm_logits, 2, (int64_t[]){B * T, te->vocab});
            w = weighted(mg, LOSS_MASKED,
                         tm_cross_entropy(g, flat, mg->mlm_labels, 0.0f, IGNORE_LABEL));
            loss = loss ? tm_add(g, loss, w) : w;
        }
        mg->loss = mg->root = loss;
    }
    }
    if (mg->logits) tm_graph_keep(g, mg->logits);
    for (int i = 0; i < c->n_enc; i++)
        if (mg->emb[i]) tm_graph_keep(g, mg->emb[i]);
    for (int k = 0; k < LOSS_COUNT; k++)
        if (mg->loss_part[k]) tm_graph_keep(g, mg->loss_part[k]);
    if (mg->cap_logits) tm_graph_keep(g, mg->cap_logits);
    if (mg->mlm_logits) tm_graph_keep(g, mg->mlm_logits);
    if (mg->keep_probs) {
        tm_node **all[] = {&mg->enc_probs[0][0], mg->pool_probs, mg->fusion_probs, mg->cap_probs,
                           mg->cap_xprobs};
        int counts[] = {TM_MODEL_MAX_ENC * TM_MODEL_MAX_LAYERS, TM_MODEL_MAX_ENC,
                        TM_MODEL_MAX_LAYERS, TM_MODEL_MAX_LAYERS, TM_MODEL_MAX_LAYERS};
        for (int a = 0; a < 5; a++)
            for (int k = 0; k < counts[a]; k++)
                if (all[a][k]) tm_graph_add_output(g, all[a][k]);
    }
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

static tm_status graph_new(tm_model_graph **out, tm_model *m, int64_t batch, tm_model_mode mode,
                           const tm_model_graph_opts *opts);

tm_status tm_model_graph_new(tm_model_graph **out, tm_model *m, int64_t batch, tm_model_mode mode)
{
    return tm_model_graph_new_opts(out, m, batch, mode, NULL);
}

tm_status tm_model_graph_new_internal(tm_model_graph **out, tm_model *m, int64_t batch,
                                      tm_model_mode mode, const tm_model_graph_opts *opts)
{
    if (m && !m->cfg.caption && (mode == MODE_CONTEXT || mode == MODE_DECODE)) {
        if (out) *out = NULL;
        return tm_fail(TM_ERR_INVALID, "the model has no caption head (a \"caption\" section)");
    }
    return graph_new(out, m, batch, mode, opts);
}

tm_model_caption_io tm_model_graph_caption_io(tm_model_graph *mg)
{
    tm_model_caption_io io;
    memset(&io, 0, sizeof io);
    if (mg->mem) io.ctx = tm_node_data(mg->g, mg->mem);
    if (mg->mem_bias) io.ctx_bias = tm_node_data(mg->g, mg->mem_bias);
    if (mg->mode == MODE_DECODE) {
        io.ids = tm_node_data(mg->g, mg->dec_in);
        io.logits = tm_node_data(mg->g, mg->cap_logits);
    }
    if (mg->mem_bias) io.ctx_tokens = tm_node_shape(mg->mem_bias)[1];
    return io;
}

tm_status tm_model_graph_new_opts(tm_model_graph **out, tm_model *m, int64_t batch,
                                  tm_model_mode mode, const tm_model_graph_opts *opts)
{
    if ((unsigned)mode >= TM_MODEL_MODE_COUNT) {
        if (out) *out = NULL;
        return tm_fail(TM_ERR_INVALID, "model_graph_new: unknown mode %d", (int)mode);
    }
    return graph_new(out, m, batch, mode, opts);
}

static tm_status graph_new(tm_model_graph **out, tm_model *m, int64_t batch, tm_model_mode mode,
                           const tm_model_graph_opts *opts)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "model_graph_new: NULL out");
    *out = NULL;
    if (!m) return tm_fail(TM_ERR_INVALID, "model_graph_new: NULL model");
    if (batch < 1 || batch > (1 << 20))
        return tm_fail(TM_ERR_INVALID, "model_graph_new: batch %lld outside 1..%d", (long long)batch,
                       1 << 20);
    const model_cfg *c = &m->cfg;
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
    mg->keep_probs = opts && opts->attention_maps;
    if (opts) mg->opts = *opts;
    if (!(mg->opts.label_smoothing >= 0.0f && mg->opts.label_smoothing < 1.0f)) {
        double eps = mg->opts.label_smoothing;
        tm_free(mg);
        return tm_fail(TM_ERR_INVALID, "model_graph_new: label_smoothing %g outside [0, 1)", eps);
    }
    if (mg->opts.skip_losses & ~(unsigned)(2 | 4 | 8)) {
        unsigned bits = mg->opts.skip_losses;
        tm_free(mg);
        return tm_fail(TM_ERR_INVALID, "model_graph_new: skip_losses 0x%x: only the contrastive "
                       "(0x2), caption (0x4) and masked (0x8) losses can be left out", bits);
    }
    unsigned all_enc = (1u << c->n_enc) - 1;
    if ((mg->opts.skip_encoders & ~all_enc) || (mg->opts.skip_encoders & all_enc) == all_enc) {
        unsigned bits = mg->opts.skip_encoders;
        tm_free(mg);
        return tm_fail(TM_ERR_INVALID, "model_graph_new: skip_encoders 0x%x %s (the model has %d "
                       "encoders)", bits, bits & ~all_enc ? "names encoders it does not have"
                                                          : "leaves no encoder", c->n_enc);
    }
    mg->text_enc = -1;
    for (int i = 0; i < c->n_enc; i++)
        if (c->enc[i].kind == ENC_TEXT) mg->text_enc = i;
    mg->weight[LOSS_CLASS] = (float)c->w_class;
    mg->weight[LOSS_CONTRASTIVE] = (float)c->w_contrastive;
    mg->weight[LOSS_CAPTION] = (float)c->w_caption;
    mg->weight[LOSS_MASKED] = (float)c->w_masked;
    mg->g = tm_graph_new();
    mg->L = tm_calloc(1, sizeof *mg->L);
    mg->present = tm_alloc((size_t)batch * (size_t)c->n_enc);
    mg->Bc = batch;
    if (mode == TM_MODEL_TRAIN && mg->opts.world > 1) {
        if (mg->opts.rank < 0 || mg->opts.rank >= mg->opts.world || !mg->opts.gather ||
            batch > (1 << 20) / mg->opts.world) {
            s = tm_fail(TM_ERR_INVALID, "model_graph_new: rank %d of %d%s", mg->opts.rank,
                        mg->opts.world, mg->opts.gather ? "" : " without a gather function");
            goto fail;
        }
        mg->Bc = batch * mg->opts.world;
        tm_graph_set_shard(mg->g, mg->opts.rank); /* one graph's dropout masks */
        mg->present_all = tm_alloc((size_t)mg->Bc * (size_t)c->n_enc);
        if (!mg->present_all) {
            s = tm_fail(TM_ERR_NOMEM, "model_graph_new: out of memory");
            goto fail;
        }
    } else {
        mg->opts.world = 1;
        mg->opts.rank = 0;
    }
    int need_cap = mode == TM_MODEL_TRAIN && c->caption;
    int need_mlm = mode == TM_MODEL_TRAIN && c->masked;
    if (need_cap) mg->caption = tm_calloc((size_t)(batch * c->caption_tokens), sizeof(int32_t));
    if (need_mlm)
        mg->mlm_user = tm_alloc((size_t)(batch * c->enc[mg->text_enc].max_tokens) * sizeof(int32_t));
    if (!mg->g || !mg->L || !mg->present || (need_cap && !mg->caption) ||
        (need_mlm && !mg->mlm_user)) {
        s = tm_fail(TM_ERR_NOMEM, "model_graph_new: out of memory");
        goto fail;
    }
    s = tm_graph_set_precision(mg->g, (tm_dtype)mg->opts.precision); /* GEMM precision */
    if (s) goto fail;
    memset(mg->present, 1, (size_t)batch * (size_t)c->n_enc);
    if (need_cap)
        for (int64_t k = 0; k < batch * c->caption_tokens; k++) mg->caption[k] = c->caption_pad;
    if (need_mlm)
        for (int64_t k = 0; k < batch * c->enc[mg->text_enc].max_tokens; k++)
            mg->mlm_user[k] = IGNORE_LABEL;
    if (mg->opts.deterministic) {
        /* the same parameters, without the random layers */
        model_cfg quiet = *c;
        quiet.dropout = 0;
        quiet.drop_path = 0;
        s = tm_model_declare(&quiet, mg->g, mg->L);
    } else {
        s = tm_model_declare(c, mg->g, mg->L);
    }
    if (s) goto fail;
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
    for (int k = 0; k < 2 * TM_MODEL_MAX_ENC; k++)
        if (mg->zeros[k])
            memset(tm_node_data(mg->g, mg->zeros[k]), 0,
                   (size_t)tm_node_numel(mg->zeros[k]) * sizeof(float));
    /* inference: weights prepared as the model says (tm_model_set_weights) */
    if (mode != TM_MODEL_TRAIN && mg->opts.precision == TM_F32 && m->weights &&
        (s = tm_graph_prepare_weights(mg->g, (tm_weights)m->weights)))
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
    tm_free(mg->present_all);
    tm_free(mg->caption);
    tm_free(mg->mlm_user);
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
    in.caption = mg->mode == TM_MODEL_TRAIN ? mg->caption : NULL;
    in.mlm_labels = mg->mlm_user;
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
    const enc_cfg *te = mg->text_enc >= 0 && tok ? &c->enc[mg->text_enc] : NULL;
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
    for (int i = 0; i < M && mg->cross_bias[0] && c->fusion == FUSION_BOTTLENECK; i++) {
        /* stream i: its own tokens (text padding masked), then the
         * bottleneck tokens, always visible */
        float *cb = tm_node_data(mg->g, mg->cross_bias[i]);
        const enc_cfg *e = &c->enc[i];
        int64_t Tb = e->tokens + c->bottleneck;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < Tb; t++)
                cb[b * Tb + t] = t < e->tokens && e->kind == ENC_TEXT && tok &&
                                         tok[b * e->tokens + t] == e->pad_id
                                     ? -INFINITY
                                     : 0.0f;
    }
    if (mg->bneck_weight) {
        float *w = tm_node_data(mg->g, mg->bneck_weight);
        for (int64_t b = 0; b < B; b++) {
            int n = 0;
            for (int i = 0; i < M; i++) n += pres[b * M + i] != 0;
            for (int i = 0; i < M; i++) w[b * M + i] = pres[b * M + i] ? 1.0f / (float)n : 0.0f;
        }
    }
    for (int i = 0; i < M && mg->cross_bias[0] && c->fusion == FUSION_CROSS; i++) {
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
    if (mg->present_all) { /* the global batch's (gathered by tm_model_graph_forward) */
        pres = mg->present_all;
        B = mg->Bc;
    }
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

/* 1 when token t of encoder j is a key for example b: the modality is
 * present and (for text) the token is not padding. */
static int token_visible(const tm_model_graph *mg, int64_t b, int j, int64_t t)
{
    const model_cfg *c = &mg->m->cfg;
    const enc_cfg *e = &c->enc[j];
    if (!mg->present[b * c->n_enc + j]) return 0;
    if (e->kind != ENC_TEXT) return 1;
    const int32_t *tok = tm_node_data(mg->g, mg->tokens);
    return tok[b * e->tokens + t] != e->pad_id;
}

/* The caption context's key bias, and whether an example has a context. */
static void derive_caption(tm_model_graph *mg)
{
    const model_cfg *c = &mg->m->cfg;
    int64_t B = mg->B, M = c->n_enc, Tm = tm_node_shape(mg->mem_bias)[1];
    float *mb = tm_node_data(mg->g, mg->mem_bias);
    for (int64_t b = 0; b < B; b++) {
        float *row = mb + b * Tm;
        int64_t at = 0;
        if (c->caption_context >= 0) {
            int j = c->caption_context;
            for (int64_t t = 0; t < c->enc[j].tokens; t++)
                row[at++] = token_visible(mg, b, j, t) ? 0.0f : -INFINITY;
            continue;
        }
        int any = 0;
        for (int j = 0; j < M; j++) any |= mg->present[b * M + j] != 0;
        if (c->fusion == FUSION_EARLY && mg->L->fusion_cls) row[at++] = any ? 0.0f : -INFINITY;
        for (int j = 0; j < M; j++)
            for (int64_t t = 0; t < c->enc[j].tokens; t++)
                row[at++] = token_visible(mg, b, j, t) ? 0.0f : -INFINITY;
    }
}

static int context_present(const tm_model_graph *mg, int64_t b)
{
    const model_cfg *c = &mg->m->cfg;
    if (c->caption_context >= 0) return mg->present[b * c->n_enc + c->caption_context] != 0;
    for (int j = 0; j < c->n_enc; j++)
        if (mg->present[b * c->n_enc + j]) return 1;
    return 0;
}

/* Copies the caller's labels into a loss's label input; a loss without
 * any label gets a dummy one (so cross-entropy stays finite) and weight 0. */
static float fill_labels(int32_t *dst, const int32_t *src, int64_t n)
{
    int64_t live = 0;
    for (int64_t k = 0; k < n; k++) {
        dst[k] = src[k];
        live += src[k] != IGNORE_LABEL;
    }
    if (live) return 1.0f;
    dst[0] = 0;
    return 0.0f;
}

/* The training inputs of the caption and masked-token losses and every
 * loss weight. */
static void derive_losses(tm_model_graph *mg)
{
    const model_cfg *c = &mg->m->cfg;
    int64_t B = mg->B;
    float on[LOSS_COUNT] = {1.0f, 1.0f, 1.0f, 1.0f};
    if (mg->labels) {
        int32_t *lab = tm_node_data(mg->g, mg->labels);
        int64_t live = 0;
        for (int64_t b = 0; b < B; b++) live += lab[b] != IGNORE_LABEL;
        if (!live) on[LOSS_CLASS] = 0.0f; /* the caller's buffer: see tm_model_graph_forward */
    }
    if (mg->dec_labels) {
        int64_t Tc = c->caption_tokens;
        int32_t *in = tm_node_data(mg->g, mg->dec_in), *lab = tm_node_data(mg->g, mg->dec_labels);
        int64_t live = 0;
        for (int64_t b = 0; b < B; b++) {
            int scored = context_present(mg, b);
            for (int64_t t = 0; t + 1 < Tc; t++) {
                int32_t next = mg->caption[b * Tc + t + 1];
                in[b * (Tc - 1) + t] = mg->caption[b * Tc + t];
                lab[b * (Tc - 1) + t] = scored && next != c->caption_pad ? next : IGNORE_LABEL;
                live += lab[b * (Tc - 1) + t] != IGNORE_LABEL;
            }
        }
        if (!live) {
            lab[0] = 0;
            on[LOSS_CAPTION] = 0.0f;
        }
    }
    if (mg->mlm_labels) {
        /* an example whose text is absent has no masked-token loss */
        int64_t T = c->enc[mg->text_enc].max_tokens, M = c->n_enc;
        int32_t *lab = tm_node_data(mg->g, mg->mlm_labels);
        on[LOSS_MASKED] = fill_labels(lab, mg->mlm_user, B * T);
        int64_t live = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++) {
                if (!mg->present[b * M + mg->text_enc]) lab[b * T + t] = IGNORE_LABEL;
                live += lab[b * T + t] != IGNORE_LABEL;
            }
        if (!live) {
            lab[0] = 0;
            on[LOSS_MASKED] = 0.0f;
        }
    }
    for (int k = 0; k < LOSS_COUNT; k++) {
        mg->live[k] = on[k] != 0.0f;
        if (mg->w_node[k]) *(float *)tm_node_data(mg->g, mg->w_node[k]) = mg->weight[k] * on[k];
    }
}

tm_status tm_model_graph_forward(tm_model_graph *mg)
{
    if (!mg) return tm_fail(TM_ERR_INVALID, "model_graph_forward: NULL graph");
    if (mg->mode == MODE_DECODE) return tm_graph_forward(mg->g); /* inputs given whole */
    if (mg->opts.skip_encoders) { /* a skipped encoder's modality is missing */
        int64_t M = mg->m->cfg.n_enc;
        for (int64_t b = 0; b < mg->B; b++)
            for (int64_t i = 0; i < M; i++)
                if (mg->opts.skip_encoders >> i & 1) mg->present[b * M + i] = 0;
    }
    if (mg->present_all && mg->n_pairs) { /* the contrastive loss's global masks */
        const model_cfg *c = &mg->m->cfg;
        tm_status gs = mg->opts.gather(mg->opts.gather_ctx, mg->present, mg->present_all,
                                       (size_t)mg->B * (size_t)c->n_enc);
        if (gs) return gs;
    }
    derive_inputs(mg);
    if (mg->mem_bias) derive_caption(mg);
    int32_t saved = 0, *lab = NULL;
    if (mg->mode == TM_MODEL_TRAIN) {
        derive_losses(mg);
        /* classification without any label: a dummy label keeps the
         * cross-entropy finite (its weight is 0), restored after the pass */
        if (mg->labels && !mg->live[LOSS_CLASS]) {
            lab = tm_node_data(mg->g, mg->labels);
            int64_t live = 0;
            for (int64_t b = 0; b < mg->B; b++) live += lab[b] != IGNORE_LABEL;
            if (!live) {
                saved = lab[0];
                lab[0] = 0;
            } else {
                lab = NULL;
            }
        }
    }
    tm_status s = tm_graph_forward(mg->g);
    if (lab) lab[0] = saved;
    return s;
}

tm_status tm_model_graph_set_loss_weight(tm_model_graph *mg, const char *loss, float weight)
{
    if (!mg || !loss) return tm_fail(TM_ERR_INVALID, "set_loss_weight: NULL argument");
    if (!(weight >= 0.0f) || isinf(weight))
        return tm_fail(TM_ERR_INVALID, "set_loss_weight: weight %g for '%s' must be finite and >= 0",
                       (double)weight, loss);
    for (int k = 0; k < LOSS_COUNT; k++)
        if (!strcmp(loss, LOSS_NAMES[k])) {
            if (!mg->w_node[k] && mg->mode == TM_MODEL_TRAIN && (mg->opts.skip_losses >> k & 1)) {
                if (weight == 0.0f) return TM_OK;
                return tm_fail(TM_ERR_INVALID, "set_loss_weight: this graph was built without "
                               "the '%s' loss (skip_losses): its weight must stay 0", loss);
            }
            if (!mg->w_node[k])
                return tm_fail(TM_ERR_INVALID, "set_loss_weight: the %s has no '%s' loss",
                               mg->mode == TM_MODEL_TRAIN ? "model" : "graph (not a training one)",
                               loss);
            mg->weight[k] = weight;
            return TM_OK;
        }
    return tm_fail(TM_ERR_INVALID,
                   "set_loss_weight: unknown loss '%s' (classification, contrastive, caption, "
                   "masked)", loss);
}

const float *tm_model_graph_caption_logits(tm_model_graph *mg)
{
    return mg && mg->cap_logits && mg->mode == TM_MODEL_TRAIN ? tm_node_data(mg->g, mg->cap_logits)
                                                              : NULL;
}

const float *tm_model_graph_mlm_logits(tm_model_graph *mg)
{
    return mg && mg->mlm_logits ? tm_node_data(mg->g, mg->mlm_logits) : NULL;
}

const float *tm_model_graph_attention(tm_model_graph *mg, const char *stack, int layer,
                                      int64_t shape[4])
{
    if (!mg || !stack) {
        tm_fail(TM_ERR_INVALID, "graph_attention: NULL argument");
        return NULL;
    }
    if (!mg->keep_probs) {
        tm_fail(TM_ERR_INVALID, "graph_attention: the graph was made without attention_maps");
        return NULL;
    }
    const model_cfg *c = &mg->m->cfg;
    tm_node *n = NULL;
    int ok_layer = layer >= 0 && layer < TM_MODEL_MAX_LAYERS;
    for (int i = 0; ok_layer && i < c->n_enc; i++) {
        const char *nm = tm_model_enc_name(c->enc[i].kind);
        char buf[64];
        if (!strcmp(stack, nm)) n = mg->enc_probs[i][layer];
        snprintf(buf, sizeof buf, "fusion.%s", nm);
        if (!strcmp(stack, buf) && layer < TM_MODEL_MAX_CROSS_LAYERS)
            n = mg->fusion_probs[layer * TM_MODEL_MAX_ENC + i];
        snprintf(buf, sizeof buf, "pool.%s", nm);
        if (!strcmp(stack, buf) && layer == 0) n = mg->pool_probs[i];
    }
    if (ok_layer && !strcmp(stack, "fusion") && c->fusion == FUSION_EARLY) n = mg->fusion_probs[layer];
    if (ok_layer && !strcmp(stack, "caption")) n = mg->cap_probs[layer];
    if (ok_layer && !strcmp(stack, "caption.cross")) n = mg->cap_xprobs[layer];
    if (!n) {
        tm_fail(TM_ERR_INVALID, "graph_attention: no attention layer '%s' %d in this graph", stack,
                layer);
        return NULL;
    }
    if (shape)
        for (int d = 0; d < 4; d++) shape[d] = tm_node_shape(n)[d];
    return tm_node_data(mg->g, n);
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
    tm_model_loss l = {NAN, NAN, NAN, NAN, NAN};
    if (!mg || !mg->loss) return l;
    l.total = *(const float *)tm_node_data(mg->g, mg->loss);
    float part[LOSS_COUNT];
    for (int k = 0; k < LOSS_COUNT; k++) {
        part[k] = NAN;
        /* a loss without any label in the batch is absent (NaN) */
        if (mg->loss_part[k] && mg->live[k])
            part[k] = *(const float *)tm_node_data(mg->g, mg->loss_part[k]);
    }
    l.classification = part[LOSS_CLASS];
    l.contrastive = part[LOSS_CONTRASTIVE];
    l.caption = part[LOSS_CAPTION];
    l.masked = part[LOSS_MASKED];
    return l;
}

int64_t tm_model_graph_batch(const tm_model_graph *mg) { return mg ? mg->B : 0; }
tm_model_mode tm_model_graph_mode(const tm_model_graph *mg) { return mg ? mg->mode : TM_MODEL_MODE_COUNT; }
tm_graph *tm_model_graph_graph(tm_model_graph *mg) { return mg ? mg->g : NULL; }

tm_model_graph_opts tm_model_graph_default_opts(void)
{
    tm_model_graph_opts o;
    memset(&o, 0, sizeof o);
    return o;
}
