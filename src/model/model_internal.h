/* The model layer's internal types, shared by config.c (parsing and
 * validation), model.c (the weight table, init, save and load) and
 * build.c (graphs). */
#ifndef TM_MODEL_INTERNAL_H
#define TM_MODEL_INTERNAL_H

#include "trimodal/model.h"
#include "trimodal/nn.h"

#define TM_MODEL_MAX_ENC 4     /* encoders (modalities) in one model */
#define TM_MODEL_MAX_LAYERS 64 /* blocks per encoder or fusion stack */
#define TM_MODEL_MAX_STEM 4    /* conv layers of an audio stem */
#define TM_MODEL_MAX_PAIRS (TM_MODEL_MAX_ENC * (TM_MODEL_MAX_ENC - 1) / 2)
/* cross fusion keeps a block per (layer, stream) in one array */
#define TM_MODEL_MAX_CROSS_LAYERS (TM_MODEL_MAX_LAYERS / TM_MODEL_MAX_ENC)

typedef enum { ENC_TEXT = 0, ENC_VISION, ENC_AUDIO, ENC_KIND_COUNT } enc_kind;
typedef enum { POOL_FIRST = 0, POOL_MEAN, POOL_ATTENTION, POOL_KIND_COUNT } pool_kind;
typedef enum {
    FUSION_EARLY = 0,
    FUSION_LATE,
    FUSION_CROSS,
    FUSION_BOTTLENECK,
    FUSION_KIND_COUNT
} fusion_kind;
typedef enum { COMBINE_CONCAT = 0, COMBINE_SUM, COMBINE_GATED, COMBINE_KIND_COUNT } combine_kind;

typedef struct {
    int64_t kernel, stride, pad;
} stem_cfg;

#define TM_MODEL_MAX_STAGES 6 /* CNN backbone stages */

typedef struct {
    int64_t channels, blocks, pool;
} cnn_stage;

/* The caption decoder's context: the fused tokens, or one encoder's. */
#define CAPTION_CONTEXT_FUSION (-1)

typedef struct {
    enc_kind kind;
    int layers;
    tm_nn_pos_kind pos;
    pool_kind pool;
    int64_t tokens; /* sequence length through the blocks (derived) */
    int64_t grid_h, grid_w; /* patch grid (vision, audio patches; derived) */
    /* text */
    int64_t vocab, max_tokens;
    int32_t pad_id;
    int causal;       /* a causal (decoder-style) text encoder */
    double rope_base; /* "positions": "rotary" */
    /* vision */
    int64_t channels, image_h, image_w, patch;
    int cls_token;    /* vision, and audio patches */
    int cnn;          /* "backbone": "cnn" */
    int n_stages;
    cnn_stage stages[TM_MODEL_MAX_STAGES];
    int64_t norm_groups;
    /* audio */
    int64_t n_mels, n_frames;
    int n_stem;
    stem_cfg stem[TM_MODEL_MAX_STEM];
    tm_nn_act stem_act;
    int64_t apatch, astride; /* AST-style 2-D patches (apatch > 0) instead of the stem */
} enc_cfg;

typedef struct {
    char name[64];
    int64_t dim, heads, mlp_dim;
    tm_nn_act act;
    double eps, dropout, drop_path;
    int n_enc;
    enc_cfg enc[TM_MODEL_MAX_ENC];
    /* fusion */
    fusion_kind fusion;
    int fusion_layers;
    int fusion_cls, fusion_type_emb;  /* early */
    combine_kind combine;             /* late */
    int64_t fusion_hidden;            /* late: MLP hidden (0 = no MLP) */
    int64_t fusion_tokens;            /* early: length of the joint sequence (derived) */
    int64_t bottleneck;               /* bottleneck: number of shared fusion tokens */
    /* heads */
    int64_t num_classes;  /* 0 = no classifier */
    int64_t embed_dim;    /* 0 = no contrastive head */
    double logit_scale_init, logit_scale_max;
    /* caption decoder */
    int caption;
    int caption_layers, caption_context; /* encoder index or CAPTION_CONTEXT_FUSION */
    int64_t caption_tokens, caption_vocab;
    int32_t caption_bos, caption_eos, caption_pad;
    tm_nn_pos_kind caption_pos;
    double caption_rope;
    /* masked-token head over the text encoder */
    int masked;
    int32_t mask_id;
    double w_class, w_contrastive, w_caption, w_masked;
} model_cfg;

const char *tm_model_enc_name(enc_kind k);

/* Parses and validates a config; messages name origin and the key. */
tm_status tm_model_cfg_parse(model_cfg *c, const char *json, size_t len, const char *origin);
/* The config as canonical JSON (every key); tm_free the result. */
char *tm_model_cfg_to_json(const model_cfg *c);

/* ------------------------------------------------ the layers of a model */

typedef struct {
    tm_nn_conv conv;
    tm_nn_groupnorm norm;
} cnn_layer;

#define TM_MODEL_MAX_CNN (TM_MODEL_MAX_STAGES * 4) /* conv layers of a CNN backbone */

typedef struct {
    /* text */
    tm_nn_embedding tok;
    tm_nn_linear mlm;            /* masked-token head */
    /* vision (and audio patches) */
    tm_nn_conv patch;
    tm_node *cls;
    cnn_layer cnn[TM_MODEL_MAX_CNN];
    tm_nn_linear cnn_proj;
    /* audio */
    tm_nn_conv stem[TM_MODEL_MAX_STEM];
    /* every encoder */
    tm_nn_position pos;
    tm_nn_block blocks[TM_MODEL_MAX_LAYERS];
    tm_nn_layernorm ln;
    tm_node *pool_query;         /* attention pooling: a learned query (1, C) */
    tm_nn_attention pool_attn;   /* ... attending over the tokens */
    tm_nn_linear proj;           /* contrastive projection */
} enc_layers;

typedef struct {
    enc_layers enc[TM_MODEL_MAX_ENC];
    tm_node *fusion_cls, *type_emb;
    tm_nn_block fblocks[TM_MODEL_MAX_LAYERS];
    tm_nn_layernorm fln;
    tm_nn_layernorm stream_ln[TM_MODEL_MAX_ENC]; /* cross: each stream's final LN */
    tm_nn_linear fusion_fc1;             /* late: MLP hidden layer over the combined vector */
    tm_nn_linear gate;                   /* late, gated: one score per modality */
    tm_nn_linear head;
    tm_node *logit_scale;
    tm_node *bottleneck;                 /* bottleneck fusion tokens (n, C) */
    /* caption decoder */
    tm_nn_embedding cap_tok;
    tm_nn_position cap_pos;
    tm_nn_decoder_block cap_blocks[TM_MODEL_MAX_LAYERS];
    tm_nn_layernorm cap_ln;
    tm_nn_linear cap_head;
} model_layers;

/* Declares every parameter of the model in the canonical order (trainable
 * ones first, fixed tables last). Returns the graph's status. */
tm_status tm_model_declare(const model_cfg *c, tm_graph *g, model_layers *L);

/* ------------------------------------------------------------- the model */

typedef enum {
    INIT_ZERO = 0,
    INIT_ONE,
    INIT_UNIFORM_FAN_IN, /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    INIT_NORMAL,         /* N(0, arg) */
    INIT_CONST,          /* arg */
    INIT_FIXED,          /* a fixed positional table */
} init_kind;

typedef struct {
    char *name;
    int ndim;
    int64_t shape[TM_MAX_DIMS];
    size_t offset, numel;
    int frozen;
    init_kind init;
    double arg;          /* fan_in, std or the constant */
    tm_nn_position pos;  /* INIT_FIXED: how to fill it (its node is stale) */
} tensor_entry;

struct tm_model {
    model_cfg cfg;
    tensor_entry *t;
    int n_t;
    size_t n_params, n_trainable;
    float *params;
    float *grads; /* allocated with the first training graph */
    int weights;  /* tm_weights of its inference graphs (quant.c) */
    int quant;    /* how its folder stored it: TM_WEIGHTS_PLAIN (f32), _I8, _BF16 */
};

/* Index of the entry called name, or -1. */
int tm_model_entry_find(const tm_model *m, const char *name);
/* Fills every fixed table from its recipe. */
void tm_model_fill_fixed(tm_model *m);

/* ------------------------------------------------- private graph modes */

/* The captioner's graphs: the caption context of the inputs (root (B, Tm,
 * C); its key bias derived from the inputs), and the decoder alone
 * (inputs: ids (B, caption_tokens), context and its bias; root: logits
 * (B, caption_tokens, V)). */
#define TM_MODEL_MODE_CONTEXT ((tm_model_mode)(TM_MODEL_MODE_COUNT + 1))
#define TM_MODEL_MODE_DECODE ((tm_model_mode)(TM_MODEL_MODE_COUNT + 2))

tm_status tm_model_graph_new_internal(tm_model_graph **out, tm_model *m, int64_t batch,
                                      tm_model_mode mode, const tm_model_graph_opts *opts);

typedef struct {
    float *ctx, *ctx_bias; /* (B, Tm, C), (B, Tm) */
    int32_t *ids;          /* decoder: (B, caption_tokens) */
    const float *logits;   /* decoder: (B, caption_tokens, V) */
    int64_t ctx_tokens;    /* Tm */
} tm_model_caption_io;

tm_model_caption_io tm_model_graph_caption_io(tm_model_graph *mg);

#endif
