/* A model's weights: the parameter table built from the config, fresh
 * initialisation, and the model folder (config.json + model.safetensors). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_internal.h"
#include "trimodal/io.h"

/* ------------------------------------------------------------ declare */

/* Block l of a stack of n: stochastic depth grows linearly from 0 at the
 * first block to the config's drop_path at the last (as in DeiT/timm). */
static tm_nn_block_params stack_params(const model_cfg *c, int l, int n, uint64_t seed)
{
    tm_nn_block_params bp = tm_nn_block_default_params();
    bp.dropout = (float)c->dropout;
    bp.seed = seed;
    bp.drop_path = n > 1 ? (float)(c->drop_path * l / (n - 1)) : (float)c->drop_path;
    return bp;
}

static void declare_encoder(const model_cfg *c, int i, tm_graph *g, enc_layers *E)
{
    const enc_cfg *e = &c->enc[i];
    const char *nm = tm_model_enc_name(e->kind);
    char name[256];
    int64_t C = c->dim;
    if (e->kind == ENC_TEXT) {
        snprintf(name, sizeof name, "%s.tok_emb", nm);
        tm_nn_embedding_declare(&E->tok, g, name, e->vocab, C);
    } else if (e->kind == ENC_VISION || e->apatch) {
        if (e->cnn) {
            int64_t cin = e->channels;
            int k = 0;
            for (int st = 0; st < e->n_stages; st++)
                for (int b = 0; b < e->stages[st].blocks; b++, k++) {
                    int64_t ch = e->stages[st].channels;
                    snprintf(name, sizeof name, "%s.cnn.%d.%d.conv", nm, st, b);
                    tm_nn_conv_declare(&E->cnn[k].conv, g, name, 2, cin, ch, 3, 1, 1, 1);
                    snprintf(name, sizeof name, "%s.cnn.%d.%d.norm", nm, st, b);
                    tm_nn_groupnorm_declare(&E->cnn[k].norm, g, name, ch, (int)e->norm_groups,
                                            (float)c->eps);
                    cin = ch;
                }
            snprintf(name, sizeof name, "%s.cnn.proj", nm);
            tm_nn_linear_declare(&E->cnn_proj, g, name, cin, C, 1);
        } else if (e->apatch) {
            snprintf(name, sizeof name, "%s.patch", nm);
            tm_nn_conv_declare(&E->patch, g, name, 2, 1, C, e->apatch, (int)e->astride, 0, 1);
        } else {
            snprintf(name, sizeof name, "%s.patch", nm);
            tm_nn_conv_declare(&E->patch, g, name, 2, e->channels, C, e->patch, (int)e->patch, 0,
                               1);
        }
        if (e->cls_token) {
            snprintf(name, sizeof name, "%s.cls", nm);
            E->cls = tm_param(g, name, 2, (int64_t[]){1, C});
        }
    } else {
        for (int k = 0; k < e->n_stem; k++) {
            snprintf(name, sizeof name, "%s.conv%d", nm, k + 1);
            tm_nn_conv_declare(&E->stem[k], g, name, 1, k ? C : e->n_mels, C, e->stem[k].kernel,
                               (int)e->stem[k].stride, (int)e->stem[k].pad, 1);
        }
    }
    if (e->pos == TM_NN_POS_LEARNED) {
        snprintf(name, sizeof name, "%s.pos_emb", nm);
        tm_nn_position_declare(&E->pos, g, name, TM_NN_POS_LEARNED, e->tokens, C, 0, 0);
    }
    for (int l = 0; l < e->layers; l++) {
        snprintf(name, sizeof name, "%s.layers.%d", nm, l);
        tm_nn_block_params bp = stack_params(c, l, e->layers, (uint64_t)(i + 1) * 1000 + (uint64_t)l);
        bp.causal = e->causal;
        bp.rope_base = (float)e->rope_base;
        tm_nn_block_declare(&E->blocks[l], g, name, C, c->heads, c->mlp_dim, c->act,
                            (float)c->eps, 0, bp);
    }
    snprintf(name, sizeof name, "%s.ln", nm);
    tm_nn_layernorm_declare(&E->ln, g, name, C, 1, (float)c->eps);
    if (e->pool == POOL_ATTENTION) {
        snprintf(name, sizeof name, "%s.pool.query", nm);
        E->pool_query = tm_param(g, name, 2, (int64_t[]){1, C});
        snprintf(name, sizeof name, "%s.pool.attn", nm);
        tm_nn_attention_declare(&E->pool_attn, g, name, C, c->heads);
    }
}

tm_status tm_model_declare(const model_cfg *c, tm_graph *g, model_layers *L)
{
    char name[256];
    int64_t C = c->dim;
    memset(L, 0, sizeof *L);
    for (int i = 0; i < c->n_enc; i++) declare_encoder(c, i, g, &L->enc[i]);

    tm_nn_block_params bp;
    if (c->fusion == FUSION_EARLY) {
        if (c->fusion_cls) L->fusion_cls = tm_param(g, "fusion.cls", 2, (int64_t[]){1, C});
        if (c->fusion_type_emb)
            L->type_emb = tm_param(g, "fusion.type_emb", 2, (int64_t[]){c->n_enc + 1, C});
        for (int l = 0; l < c->fusion_layers; l++) {
            snprintf(name, sizeof name, "fusion.layers.%d", l);
            bp = stack_params(c, l, c->fusion_layers, 9000 + (uint64_t)l);
            tm_nn_block_declare(&L->fblocks[l], g, name, C, c->heads, c->mlp_dim, c->act,
                                (float)c->eps, 0, bp);
        }
        tm_nn_layernorm_declare(&L->fln, g, "fusion.ln", C, 1, (float)c->eps);
        if (c->num_classes) tm_nn_linear_declare(&L->head, g, "fusion.head", C, c->num_classes, 1);
    } else if (c->fusion == FUSION_LATE) {
        int64_t in = c->combine == COMBINE_CONCAT ? C * c->n_enc : C;
        if (c->combine == COMBINE_GATED) tm_nn_linear_declare(&L->gate, g, "fusion.gate", C, 1, 1);
        if (c->fusion_hidden) {
            tm_nn_linear_declare(&L->fusion_fc1, g, "fusion.mlp.fc1", in, c->fusion_hidden, 1);
            in = c->fusion_hidden;
        }
        if (c->num_classes) tm_nn_linear_declare(&L->head, g, "fusion.head", in, c->num_classes, 1);
    } else {
        /* cross-attention fusion: each stream's layer l attends to the
         * other streams' tokens; bottleneck fusion: each stream's layer l
         * attends to itself and the shared bottleneck tokens */
        int cross = c->fusion == FUSION_CROSS;
        if (!cross)
            L->bottleneck = tm_param(g, "fusion.bottleneck", 2, (int64_t[]){c->bottleneck, C});
        for (int i = 0; i < c->n_enc; i++) {
            const char *sn = tm_model_enc_name(c->enc[i].kind);
            for (int l = 0; l < c->fusion_layers; l++) {
                snprintf(name, sizeof name, "fusion.%s.layers.%d", sn, l);
                bp = stack_params(c, l, c->fusion_layers,
                                  9000 + (uint64_t)(l * TM_MODEL_MAX_ENC + i));
                tm_nn_block_declare(&L->fblocks[l * TM_MODEL_MAX_ENC + i], g, name, C, c->heads,
                                    c->mlp_dim, c->act, (float)c->eps, cross, bp);
            }
            snprintf(name, sizeof name, "fusion.%s.ln", sn);
            tm_nn_layernorm_declare(&L->stream_ln[i], g, name, C, 1, (float)c->eps);
        }
        if (c->num_classes)
            tm_nn_linear_declare(&L->head, g, "fusion.head", C * c->n_enc, c->num_classes, 1);
    }
    if (c->embed_dim) {
        for (int i = 0; i < c->n_enc; i++) {
            snprintf(name, sizeof name, "proj_%s", tm_model_enc_name(c->enc[i].kind));
            tm_nn_linear_declare(&L->enc[i].proj, g, name, C, c->embed_dim, 0);
        }
        L->logit_scale = tm_param(g, "logit_scale", 0, NULL);
    }
    for (int i = 0; c->masked && i < c->n_enc; i++)
        if (c->enc[i].kind == ENC_TEXT)
            tm_nn_linear_declare(&L->enc[i].mlm, g, "mlm.head", C, c->enc[i].vocab, 1);
    if (c->caption) {
        tm_nn_embedding_declare(&L->cap_tok, g, "caption.tok_emb", c->caption_vocab, C);
        if (c->caption_pos == TM_NN_POS_LEARNED)
            tm_nn_position_declare(&L->cap_pos, g, "caption.pos_emb", TM_NN_POS_LEARNED,
                                   c->caption_tokens, C, 0, 0);
        for (int l = 0; l < c->caption_layers; l++) {
            snprintf(name, sizeof name, "caption.layers.%d", l);
            bp = stack_params(c, l, c->caption_layers, 8000 + (uint64_t)l);
            bp.rope_base = (float)c->caption_rope;
            tm_nn_decoder_block_declare(&L->cap_blocks[l], g, name, C, c->heads, c->mlp_dim,
                                        c->act, (float)c->eps, bp);
        }
        tm_nn_layernorm_declare(&L->cap_ln, g, "caption.ln", C, 1, (float)c->eps);
        tm_nn_linear_declare(&L->cap_head, g, "caption.head", C, c->caption_vocab, 1);
    }
    /* fixed tables last, so the trainable parameters are one prefix */
    for (int i = 0; i < c->n_enc; i++) {
        const enc_cfg *e = &c->enc[i];
        if (e->pos == TM_NN_POS_LEARNED || e->pos == TM_NN_POS_NONE) continue;
        snprintf(name, sizeof name, "%s.pos_emb", tm_model_enc_name(e->kind));
        tm_nn_position_declare(&L->enc[i].pos, g, name, e->pos, e->tokens, C, e->grid_h,
                               e->grid_w);
    }
    if (c->caption && c->caption_pos == TM_NN_POS_SINUSOID)
        tm_nn_position_declare(&L->cap_pos, g, "caption.pos_emb", TM_NN_POS_SINUSOID,
                               c->caption_tokens, C, 0, 0);
    return tm_graph_status(g) ? tm_fail(tm_graph_status(g), "%s", tm_last_error()) : TM_OK;
}

/* ------------------------------------------------------------ the table */

int tm_model_entry_find(const tm_model *m, const char *name)
{
    for (int i = 0; m && name && i < m->n_t; i++)
        if (!strcmp(m->t[i].name, name)) return i;
    return -1;
}

typedef struct {
    tm_model *m;
    int ok;
} marker;

static void mark(marker *mk, tm_node *p, init_kind kind, double arg)
{
    if (!p) return;
    int i = tm_model_entry_find(mk->m, tm_node_name(p));
    if (i < 0) {
        mk->ok = 0;
        return;
    }
    mk->m->t[i].init = kind;
    mk->m->t[i].arg = arg;
}

static void mark_linear(marker *mk, const tm_nn_linear *l)
{
    mark(mk, l->weight, INIT_UNIFORM_FAN_IN, (double)l->in);
    mark(mk, l->bias, INIT_UNIFORM_FAN_IN, (double)l->in);
}

static void mark_ln(marker *mk, const tm_nn_layernorm *ln)
{
    mark(mk, ln->weight, INIT_ONE, 0);
    mark(mk, ln->bias, INIT_ZERO, 0);
}

static void mark_block(marker *mk, const tm_nn_block *b)
{
    mark_ln(mk, &b->ln1);
    mark_ln(mk, &b->ln2);
    if (b->cross) mark_ln(mk, &b->ln_ctx);
    mark_linear(mk, &b->attn.qkv);
    mark_linear(mk, &b->attn.out);
    mark_linear(mk, &b->mlp.fc1);
    mark_linear(mk, &b->mlp.fc2);
}

static void mark_decoder(marker *mk, const tm_nn_decoder_block *b)
{
    mark_ln(mk, &b->ln1);
    mark_ln(mk, &b->ln2);
    mark_ln(mk, &b->ln3);
    mark_linear(mk, &b->attn.qkv);
    mark_linear(mk, &b->attn.out);
    mark_linear(mk, &b->xattn.qkv);
    mark_linear(mk, &b->xattn.out);
    mark_linear(mk, &b->mlp.fc1);
    mark_linear(mk, &b->mlp.fc2);
}

/* A fixed table: frozen, filled from its recipe. */
static void mark_position(marker *mk, const tm_nn_position *pos)
{
    if (pos->kind == TM_NN_POS_LEARNED) {
        mark(mk, pos->table, INIT_NORMAL, 0.02);
    } else if (pos->table) {
        mark(mk, pos->table, INIT_FIXED, 0);
        int k = tm_model_entry_find(mk->m, tm_node_name(pos->table));
        if (k >= 0) {
            mk->m->t[k].frozen = 1;
            mk->m->t[k].pos = *pos;
            mk->m->t[k].pos.table = NULL;
        }
    }
}

static void mark_conv(marker *mk, const tm_nn_conv *c)
{
    double fan = (double)c->cin * (double)c->kernel * (c->dims == 2 ? (double)c->kernel : 1.0);
    mark(mk, c->weight, INIT_UNIFORM_FAN_IN, fan);
    mark(mk, c->bias, INIT_UNIFORM_FAN_IN, fan);
}

/* Sets every entry's init recipe and frozen flag from the layers. */
static int mark_all(tm_model *m, const model_layers *L)
{
    const model_cfg *c = &m->cfg;
    marker mk = {m, 1};
    for (int i = 0; i < m->n_t; i++) m->t[i].init = (init_kind)-1;
    for (int i = 0; i < c->n_enc; i++) {
        const enc_layers *E = &L->enc[i];
        mark(&mk, E->tok.weight, INIT_NORMAL, 1.0);
        mark_conv(&mk, &E->patch);
        mark(&mk, E->cls, INIT_NORMAL, 0.02);
        for (int k = 0; k < c->enc[i].n_stem; k++) mark_conv(&mk, &E->stem[k]);
        for (int k = 0; k < TM_MODEL_MAX_CNN; k++) {
            mark_conv(&mk, &E->cnn[k].conv);
            mark(&mk, E->cnn[k].norm.weight, INIT_ONE, 0);
            mark(&mk, E->cnn[k].norm.bias, INIT_ZERO, 0);
        }
        mark_linear(&mk, &E->cnn_proj);
        mark_linear(&mk, &E->mlm);
        mark_position(&mk, &E->pos);
        for (int l = 0; l < c->enc[i].layers; l++) mark_block(&mk, &E->blocks[l]);
        mark_ln(&mk, &E->ln);
        mark(&mk, E->pool_query, INIT_NORMAL, 0.02);
        mark_linear(&mk, &E->pool_attn.qkv);
        mark_linear(&mk, &E->pool_attn.out);
        mark_linear(&mk, &E->proj);
    }
    mark(&mk, L->fusion_cls, INIT_NORMAL, 0.02);
    mark(&mk, L->type_emb, INIT_NORMAL, 0.02);
    int nb = c->fusion == FUSION_CROSS || c->fusion == FUSION_BOTTLENECK
                 ? c->fusion_layers * TM_MODEL_MAX_ENC
                 : c->fusion_layers;
    for (int l = 0; l < nb; l++)
        if (L->fblocks[l].attn.qkv.weight) mark_block(&mk, &L->fblocks[l]);
    mark_ln(&mk, &L->fln);
    for (int i = 0; i < c->n_enc; i++) mark_ln(&mk, &L->stream_ln[i]);
    mark_linear(&mk, &L->fusion_fc1);
    mark_linear(&mk, &L->gate);
    mark_linear(&mk, &L->head);
    mark(&mk, L->logit_scale, INIT_CONST, c->logit_scale_init);
    mark(&mk, L->bottleneck, INIT_NORMAL, 0.02);
    mark(&mk, L->cap_tok.weight, INIT_NORMAL, 0.02);
    mark_position(&mk, &L->cap_pos);
    for (int l = 0; l < c->caption_layers; l++) mark_decoder(&mk, &L->cap_blocks[l]);
    mark_ln(&mk, &L->cap_ln);
    mark_linear(&mk, &L->cap_head);
    for (int i = 0; i < m->n_t; i++)
        if ((int)m->t[i].init < 0) mk.ok = 0;
    return mk.ok;
}

void tm_model_fill_fixed(tm_model *m)
{
    for (int i = 0; i < m->n_t; i++)
        if (m->t[i].init == INIT_FIXED) tm_nn_position_fill(&m->t[i].pos, m->params + m->t[i].offset);
}

static tm_status model_from_cfg(tm_model **out, const model_cfg *cfg)
{
    *out = NULL;
    tm_model *m = tm_calloc(1, sizeof *m);
    model_layers *L = tm_calloc(1, sizeof *L);
    tm_graph *g = tm_graph_new();
    tm_status s = TM_OK;
    if (!m || !L || !g) {
        s = tm_fail(TM_ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    m->cfg = *cfg;
    if ((s = tm_model_declare(cfg, g, L))) goto fail;
    int n = tm_graph_param_count(g);
    m->t = tm_calloc((size_t)(n ? n : 1), sizeof *m->t);
    if (!m->t) {
        s = tm_fail(TM_ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    /* creation order is the buffer's layout (as tm_graph_share_params) */
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        tm_node *p = tm_graph_param_at(g, i);
        tensor_entry *e = &m->t[m->n_t++];
        const char *nm = tm_node_name(p);
        e->name = tm_alloc(strlen(nm) + 1);
        if (!e->name) {
            s = tm_fail(TM_ERR_NOMEM, "model: out of memory");
            goto fail;
        }
        strcpy(e->name, nm);
        e->ndim = tm_node_ndim(p);
        for (int d = 0; d < e->ndim; d++) e->shape[d] = tm_node_shape(p)[d];
        e->numel = (size_t)tm_node_numel(p);
        e->offset = off;
        off += e->numel;
    }
    m->n_params = off;
    if (!mark_all(m, L)) {
        s = tm_fail(TM_ERR_INTERNAL, "model: a parameter has no initialisation recipe");
        goto fail;
    }
    m->n_trainable = m->n_params;
    for (int i = 0; i < m->n_t; i++)
        if (m->t[i].frozen) {
            m->n_trainable = m->t[i].offset;
            break;
        }
    for (int i = 0; i < m->n_t; i++)
        if (!m->t[i].frozen && m->t[i].offset >= m->n_trainable) {
            s = tm_fail(TM_ERR_INTERNAL, "model: a trainable tensor follows a fixed one");
            goto fail;
        }
    m->params = tm_calloc(m->n_params ? m->n_params : 1, sizeof(float));
    if (!m->params) {
        s = tm_fail(TM_ERR_NOMEM, "model: out of memory for %zu parameters", m->n_params);
        goto fail;
    }
    tm_model_fill_fixed(m);
    tm_graph_free(g);
    tm_free(L);
    *out = m;
    return TM_OK;
fail:
    tm_graph_free(g);
    tm_free(L);
    tm_model_free(m);
    return s;
}

/* ------------------------------------------------------------ lifetime */

tm_status tm_model_new_from_json(tm_model **out, const char *json, size_t len, const char *origin)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "model_new: NULL out");
    *out = NULL;
    if (!json) return tm_fail(TM_ERR_INVALID, "model_new: NULL config text");
    model_cfg cfg;
    tm_status s = tm_model_cfg_parse(&cfg, json, len, origin);
    if (s) return s;
    return model_from_cfg(out, &cfg);
}

tm_status tm_model_new_from_config(tm_model **out, const char *path)
{
    if (!out || !path) return tm_fail(TM_ERR_INVALID, "model_new_from_config: NULL argument");
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    /* a config is small */
    tm_status s = tm_read_file(path, (size_t)tm_limit_get(TM_LIMIT_MODEL_CONFIG_BYTES), &text, &len);
    if (s == TM_ERR_LIMIT)
        return tm_fail(s, "%s (limit %s)", tm_last_error(),
                       tm_limit_hint(TM_LIMIT_MODEL_CONFIG_BYTES));
    if (s) return s;
    s = tm_model_new_from_json(out, text, len, path);
    tm_free(text);
    return s;
}

void tm_model_free(tm_model *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_t; i++) tm_free(m->t[i].name);
    tm_free(m->t);
    tm_free(m->params);
    tm_free(m->grads);
    tm_free(m);
}

/* ------------------------------------------------------------ weights */

tm_status tm_model_init_weights(tm_model *m, uint64_t seed)
{
    if (!m) return tm_fail(TM_ERR_INVALID, "model_init_weights: NULL model");
    for (int i = 0; i < m->n_t; i++) {
        tensor_entry *e = &m->t[i];
        float *p = m->params + e->offset;
        tm_rng r = tm_rng_new(seed, (uint64_t)i);
        switch (e->init) {
        case INIT_ZERO: memset(p, 0, e->numel * sizeof *p); break;
        case INIT_ONE:
            for (size_t k = 0; k < e->numel; k++) p[k] = 1.0f;
            break;
        case INIT_UNIFORM_FAN_IN: {
            float b = (float)(1.0 / sqrt(e->arg));
            tm_rng_fill_uniform(&r, p, (int64_t)e->numel, -b, b);
            break;
        }
        case INIT_NORMAL: tm_rng_fill_normal(&r, p, (int64_t)e->numel, 0.0f, (float)e->arg); break;
        case INIT_CONST:
            for (size_t k = 0; k < e->numel; k++) p[k] = (float)e->arg;
            break;
        case INIT_FIXED: tm_nn_position_fill(&e->pos, p); break;
        }
    }
    return TM_OK;
}

float *tm_model_params(tm_model *m, size_t *count)
{
    if (count) *count = m ? m->n_params : 0;
    return m ? m->params : NULL;
}

float *tm_model_grads(tm_model *m, size_t *count)
{
    if (count) *count = m ? m->n_params : 0;
    return m ? m->grads : NULL;
}

size_t tm_model_trainable_count(const tm_model *m) { return m ? m->n_trainable : 0; }

int tm_model_tensor_count(const tm_model *m) { return m ? m->n_t : 0; }

tm_status tm_model_tensor_at(const tm_model *m, int i, tm_model_tensor *out)
{
    if (!m || !out || i < 0 || i >= m->n_t)
        return tm_fail(TM_ERR_INVALID, "model_tensor_at: index %d out of range", i);
    const tensor_entry *e = &m->t[i];
    memset(out, 0, sizeof *out);
    out->name = e->name;
    out->ndim = e->ndim;
    for (int d = 0; d < e->ndim; d++) out->shape[d] = e->shape[d];
    out->offset = e->offset;
    out->numel = e->numel;
    out->frozen = e->frozen;
    return TM_OK;
}

int tm_model_find_tensor(const tm_model *m, const char *name) { return tm_model_entry_find(m, name); }

static const char *const FUSION_STR[FUSION_KIND_COUNT] = {"early", "late", "cross", "bottleneck"};

tm_model_info tm_model_get_info(const tm_model *m)
{
    tm_model_info in;
    memset(&in, 0, sizeof in);
    if (!m) return in;
    const model_cfg *c = &m->cfg;
    in.name = c->name;
    in.n_modalities = c->n_enc;
    for (int i = 0; i < c->n_enc; i++) {
        const enc_cfg *e = &c->enc[i];
        in.modality[i] = tm_model_enc_name(e->kind);
        if (e->kind == ENC_TEXT) {
            in.text_tokens = e->max_tokens;
            in.vocab_size = e->vocab;
            in.pad_id = e->pad_id;
        } else if (e->kind == ENC_VISION) {
            in.image_channels = e->channels;
            in.image_h = e->image_h;
            in.image_w = e->image_w;
        } else {
            in.n_mels = e->n_mels;
            in.n_frames = e->n_frames;
        }
    }
    in.num_classes = c->num_classes;
    in.embed_dim = c->embed_dim;
    in.dim = c->dim;
    in.fusion = FUSION_STR[c->fusion];
    in.mask_id = c->masked ? c->mask_id : -1;
    if (c->caption) {
        in.caption_tokens = c->caption_tokens;
        in.caption_vocab = c->caption_vocab;
        in.caption_bos = c->caption_bos;
        in.caption_eos = c->caption_eos;
        in.caption_pad = c->caption_pad;
        in.caption_context = c->caption_context < 0 ? "fusion"
                                                    : tm_model_enc_name(c->enc[c->caption_context].kind);
    }
    return in;
}

char *tm_model_config_json(const tm_model *m) { return m ? tm_model_cfg_to_json(&m->cfg) : NULL; }

/* ------------------------------------------------------------ folders */

static tm_status join(char *buf, size_t size, const char *dir, const char *file)
{
    int n = snprintf(buf, size, "%s/%s", dir, file);
    if (n < 0 || (size_t)n >= size) return tm_fail(TM_ERR_INVALID, "model: path '%s' too long", dir);
    return TM_OK;
}

tm_status tm_model_save(const tm_model *m, const char *dir)
{
    if (!m || !dir) return tm_fail(TM_ERR_INVALID, "model_save: NULL argument");
    char path[4096];
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return tm_fail(TM_ERR_IO, "%s: cannot create the folder: %s", dir, strerror(errno));
    char *cfg = tm_model_cfg_to_json(&m->cfg);
    if (!cfg) return tm_fail(TM_ERR_NOMEM, "model_save: out of memory");
    tm_status s = join(path, sizeof path, dir, "config.json");
    if (!s) s = tm_write_file_atomic(path, cfg, strlen(cfg));
    tm_free(cfg);
    if (s) return s;

    tm_tensor *ts = tm_calloc((size_t)m->n_t + 1, sizeof *ts);
    tm_named_tensor *nt = tm_calloc((size_t)m->n_t + 1, sizeof *nt);
    if (!ts || !nt) {
        tm_free(ts);
        tm_free(nt);
        return tm_fail(TM_ERR_NOMEM, "model_save: out of memory");
    }
    for (int i = 0; i < m->n_t; i++) {
        const tensor_entry *e = &m->t[i];
        tm_tensor *t = &ts[i];
        t->dtype = TM_F32;
        t->ndim = e->ndim;
        int64_t st = 1;
        for (int d = e->ndim - 1; d >= 0; d--) {
            t->shape[d] = e->shape[d];
            t->stride[d] = st;
            st *= e->shape[d];
        }
        t->data = m->params + e->offset;
        nt[i].name = e->name;
        nt[i].tensor = t;
    }
    const char *keys[] = {"format", "producer"};
    const char *vals[] = {"pt", "trimodal"};
    s = join(path, sizeof path, dir, "model.safetensors");
    if (!s) s = tm_safetensors_write(path, nt, m->n_t, keys, vals, 2);
    tm_free(ts);
    tm_free(nt);
    return s;
}

static void shape_text(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < size) snprintf(buf + k, size - k, ")");
}

/* Appends a name to a comma-separated list, up to a limit. */
static void list_add(char *list, size_t size, int *count, const char *name)
{
    size_t k = strlen(list);
    if (*count < 6 && k + strlen(name) + 3 < size)
        snprintf(list + k, size - k, "%s%s", *count ? ", " : "", name);
    else if (*count == 6 && k + 5 < size)
        snprintf(list + k, size - k, ", ...");
    (*count)++;
}

/* An int8 folder (docs/quantization.md): the scales of tensor `name` are
 * "<name>.qscale", F32 (shape[0]); checks them. */
#define QSCALE ".qscale"

static int is_qscale(const char *name)
{
    size_t n = strlen(name), k = strlen(QSCALE);
    return n > k && !strcmp(name + n - k, QSCALE);
}

static tm_status check_qscale(const tm_safetensors *st, const char *path, const tm_model *m,
                              const char *sname)
{
    char base[512];
    size_t len = strlen(sname) - strlen(QSCALE);
    if (len >= sizeof base) return tm_fail(TM_ERR_FORMAT, "%s: tensor name '%s' too long", path, sname);
    memcpy(base, sname, len);
    base[len] = 0;
    int k = tm_model_entry_find(m, base), i = tm_safetensors_find(st, base);
    tm_safetensors_entry fe, qe;
    if (k < 0 || i < 0 || tm_safetensors_info(st, i, &qe) || qe.dtype != TM_I8 || !qe.supported)
        return tm_fail(TM_ERR_FORMAT, "%s: scales '%s' belong to no I8 weight '%s'", path, sname,
                       base);
    if (tm_safetensors_info(st, tm_safetensors_find(st, sname), &fe) || !fe.supported ||
        fe.dtype != TM_F32 || fe.ndim != 1 || fe.shape[0] != m->t[k].shape[0])
        return tm_fail(TM_ERR_FORMAT, "%s: scales '%s' must be F32 of shape (%lld)", path, sname,
                       (long long)m->t[k].shape[0]);
    return TM_OK;
}

/* dst (numel) = q * scale[row], rows along axis 0. */
static tm_status dequantize(float *dst, const tm_tensor *q, const tm_tensor *scale, size_t numel,
                            const char *path, const char *name)
{
    int64_t rows = scale->shape[0];
    size_t inner = rows > 0 ? numel / (size_t)rows : 0;
    const int8_t *qd = q->data;
    const float *sd = scale->data;
    for (int64_t r = 0; r < rows; r++) {
        if (!isfinite(sd[r]) || sd[r] < 0)
            return tm_fail(TM_ERR_FORMAT, "%s: scale %lld of '%s' is %g; scales must be finite "
                           "and >= 0 (re-run trimodal quantize)", path, (long long)r, name,
                           (double)sd[r]);
        for (size_t j = 0; j < inner; j++)
            dst[(size_t)r * inner + j] = (float)qd[(size_t)r * inner + j] * sd[r];
    }
    return TM_OK;
}

static tm_status load_weights(tm_model *m, const char *path)
{
    tm_safetensors *st;
    tm_status s = tm_safetensors_open(&st, path);
    if (s) return s;
    char missing[600] = "", unexpected[600] = "";
    int n_missing = 0, n_unexpected = 0;
    int n = tm_safetensors_count(st);
    const char *qname = tm_safetensors_metadata(st, "quantization");
    int quant = TM_WEIGHTS_PLAIN;
    if (qname && !strcmp(qname, "int8")) {
        quant = TM_WEIGHTS_I8;
    } else if (qname && !strcmp(qname, "bf16")) {
        quant = TM_WEIGHTS_BF16;
    } else if (qname) {
        s = tm_fail(TM_ERR_FORMAT, "%s: unknown \"quantization\": \"%.40s\" in the metadata; this "
                    "build reads \"int8\" and \"bf16\"", path, qname);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        tm_safetensors_entry fe;
        if ((s = tm_safetensors_info(st, i, &fe))) goto done;
        if (quant == TM_WEIGHTS_I8 && is_qscale(fe.name)) {
            if ((s = check_qscale(st, path, m, fe.name))) goto done;
            continue;
        }
        int k = tm_model_entry_find(m, fe.name);
        if (k < 0) {
            list_add(unexpected, sizeof unexpected, &n_unexpected, fe.name);
            continue;
        }
        const tensor_entry *e = &m->t[k];
        int same = fe.ndim == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = fe.shape[d] == e->shape[d];
        if (!same) {
            char a[96], b[96];
            shape_text(a, sizeof a, fe.ndim, fe.shape);
            shape_text(b, sizeof b, e->ndim, e->shape);
            s = tm_fail(TM_ERR_FORMAT, "%s: tensor '%s' has shape %s; the config implies %s", path,
                        fe.name, a, b);
            goto done;
        }
        if (fe.supported && fe.dtype == TM_I8) {
            char sname[512];
            snprintf(sname, sizeof sname, "%s" QSCALE, fe.name);
            if (quant != TM_WEIGHTS_I8 || tm_safetensors_find(st, sname) < 0) {
                s = tm_fail(TM_ERR_FORMAT, "%s: tensor '%s' is I8 but %s; an int8 model needs "
                            "both (write it with trimodal quantize)", path, fe.name,
                            quant != TM_WEIGHTS_I8 ? "the metadata has no \"quantization\": "
                                                     "\"int8\"" : "its scales '<name>.qscale' "
                                                     "are missing");
                goto done;
            }
            continue;
        }
        if (!fe.supported || !(fe.dtype == TM_F32 || fe.dtype == TM_BF16 || fe.dtype == TM_F16)) {
            s = tm_fail(TM_ERR_FORMAT, "%s: tensor '%s' is %s; weights must be F32, BF16 or F16",
                        path, fe.name, fe.dtype_name);
            goto done;
        }
    }
    for (int k = 0; k < m->n_t; k++)
        if (tm_safetensors_find(st, m->t[k].name) < 0 && !m->t[k].frozen)
            list_add(missing, sizeof missing, &n_missing, m->t[k].name);
    if (n_missing || n_unexpected) {
        s = tm_fail(TM_ERR_FORMAT, "%s: %d tensor(s) missing%s%s%s, %d unexpected%s%s%s", path,
                    n_missing, n_missing ? " (" : "", missing, n_missing ? ")" : "", n_unexpected,
                    n_unexpected ? " (" : "", unexpected, n_unexpected ? ")" : "");
        goto done;
    }
    tm_model_fill_fixed(m); /* a file may omit the fixed tables */
    for (int k = 0; k < m->n_t; k++) {
        const tensor_entry *e = &m->t[k];
        if (tm_safetensors_find(st, e->name) < 0) continue;
        tm_tensor src, *dst = NULL;
        if ((s = tm_safetensors_get(st, e->name, &src))) goto done;
        if (src.dtype == TM_I8) {
            char sname[512];
            tm_tensor sc;
            snprintf(sname, sizeof sname, "%s" QSCALE, e->name);
            if ((s = tm_safetensors_get(st, sname, &sc))) goto done;
            if ((s = dequantize(m->params + e->offset, &src, &sc, e->numel, path, e->name)))
                goto done;
            continue;
        }
        if ((s = tm_tensor_wrap(&dst, m->params + e->offset, TM_F32, e->ndim, e->shape))) goto done;
        s = tm_tensor_copy(dst, &src);
        tm_tensor_free(dst);
        if (s) goto done;
    }
    m->quant = quant;
    m->weights = quant;
done:
    tm_safetensors_close(st);
    return s;
}

tm_status tm_model_load(tm_model **out, const char *dir)
{
    if (!out || !dir) return tm_fail(TM_ERR_INVALID, "model_load: NULL argument");
    *out = NULL;
    char path[4096];
    /* a folder with checksums.json is verified first (docs/security.md);
     * model.safetensors checks its own embedded checksum when opened */
    tm_status s = tm_dir_checksums_verify(dir, TM_VERIFY_SKIP_SAFETENSORS, NULL);
    if (!s) s = join(path, sizeof path, dir, "config.json");
    tm_model *m = NULL;
    if (!s) s = tm_model_new_from_config(&m, path);
    if (!s) s = join(path, sizeof path, dir, "model.safetensors");
    if (!s) s = load_weights(m, path);
    if (!s && getenv("TRIMODAL_WEIGHTS")) { /* docs/quantization.md */
        int w = tm_weights_from_name(getenv("TRIMODAL_WEIGHTS"));
        if (w < 0)
            s = tm_fail(TM_ERR_INVALID, "TRIMODAL_WEIGHTS=%.40s: use plain, f32, bf16 or int8",
                        getenv("TRIMODAL_WEIGHTS"));
        else
            m->weights = w;
    }
    if (s) {
        tm_model_free(m);
        return s;
    }
    *out = m;
    return TM_OK;
}
