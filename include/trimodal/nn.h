/*
 * trimodal nn: neural-network layers as graph builders.
 *
 * Each layer is a small struct of parameter nodes plus its settings. Two
 * calls make it work:
 *
 *   tm_nn_linear fc;
 *   tm_nn_linear_declare(&fc, g, "mlp.fc1", 256, 1024, 1); // creates the params
 *   tm_node *y = tm_nn_linear_forward(g, &fc, x);           // records the ops
 *
 * `_declare` creates the layer's parameters (tm_param, zero-initialised,
 * named "<name>.weight", "<name>.bias", ...) and nothing else, so the order
 * of the declare calls fixes the layout of the flat parameter buffer; a
 * model declares everything first and records ops after, and two graphs
 * built by the same code (say a training graph at batch 32 and an inference
 * graph at batch 1) share one weight buffer through tm_graph_share_params.
 * `_forward` records ops on inputs of any batch size. Both follow the
 * graph's error rule: a failure is recorded in the graph (and readable with
 * tm_last_error()), later builders pass NULL through, and tm_graph_compile
 * reports the first message; `_declare` also returns the graph's status.
 *
 * Layouts are PyTorch's: a Linear weight is (out, in), a Conv weight (out,
 * in, k...), activations are (batch, tokens, channels) row-major. Names
 * are those of bench-small (see docs/models.md).
 *
 * Masks. Attention takes a key-padding mask as an additive f32 (B, Tk)
 * bias: 0 keeps a key, -INFINITY masks it (a query whose keys are all
 * masked gets a zero output). The bias is a graph input filled by the
 * caller (tm_nn_key_bias_from_ids helps); it never gets a gradient.
 *
 * Fixed tables (sinusoidal positions) are parameters frozen with
 * tm_param_freeze: they live in the parameter buffer, so a checkpoint holds
 * them, but get no gradient. Fill them with the tm_nn_*_fill functions.
 *
 * Thread-safety: as tm_graph (one thread per graph). The fill helpers are
 * pure.
 */
#ifndef TRIMODAL_NN_H
#define TRIMODAL_NN_H

#include "trimodal/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------ linear */

/* y = x W^T + b; x (..., in) -> (..., out). weight (out, in), bias (out). */
typedef struct {
    tm_node *weight; /* (out, in) */
    tm_node *bias;   /* (out) or NULL */
    int64_t in, out;
} tm_nn_linear;

tm_status tm_nn_linear_declare(tm_nn_linear *l, tm_graph *g, const char *name, int64_t in,
                               int64_t out, int bias);
tm_node *tm_nn_linear_forward(tm_graph *g, const tm_nn_linear *l, tm_node *x);

/* --------------------------------------------------------- layernorm */

/* Over the last axis, with "<name>.weight" and "<name>.bias" (C) (PyTorch
 * initialises them to 1 and 0; the model layer's init does the same).
 * affine = 0 declares no parameters. */
typedef struct {
    tm_node *weight, *bias; /* (C) each, or NULL */
    int64_t C;
    float eps;
} tm_nn_layernorm;

tm_status tm_nn_layernorm_declare(tm_nn_layernorm *ln, tm_graph *g, const char *name, int64_t C,
                                  int affine, float eps);
tm_node *tm_nn_layernorm_forward(tm_graph *g, const tm_nn_layernorm *ln, tm_node *x);

/* -------------------------------------------------------- activations */

typedef enum {
    TM_NN_GELU = 0,  /* exact: x Phi(x) (PyTorch's default GELU) */
    TM_NN_GELU_TANH, /* the tanh approximation (GELU(approximate="tanh")) */
    TM_NN_RELU,
    TM_NN_SILU,
    TM_NN_ACT_COUNT
} tm_nn_act;

tm_node *tm_nn_act_forward(tm_graph *g, tm_nn_act act, tm_node *x);
/* "gelu", "gelu_tanh", "relu", "silu"; and back (-1 when unknown). */
const char *tm_nn_act_name(tm_nn_act act);
int tm_nn_act_from_name(const char *name);

/* Inverted dropout when p > 0 (active in training graphs only); x when
 * p == 0, recording nothing. seed makes each site's mask distinct. */
tm_node *tm_nn_dropout(tm_graph *g, tm_node *x, float p, uint64_t seed);

/* --------------------------------------------------------------- MLP */

/* fc2(act(fc1(x))): "<name>.fc1" (hidden, C), "<name>.fc2" (C, hidden). */
typedef struct {
    tm_nn_linear fc1, fc2;
    tm_nn_act act;
} tm_nn_mlp;

tm_status tm_nn_mlp_declare(tm_nn_mlp *m, tm_graph *g, const char *name, int64_t C,
                            int64_t hidden, tm_nn_act act);
tm_node *tm_nn_mlp_forward(tm_graph *g, const tm_nn_mlp *m, tm_node *x);

/* --------------------------------------------------------- attention */

/* Multi-head attention with a fused QKV projection: "<name>.qkv" is
 * Linear(C, 3C) whose output columns are [q | k | v], each C wide and split
 * into `heads` contiguous heads of C / heads (a view of (B, T, 3, H, D));
 * "<name>.out" is Linear(C, C). Scores are q k^T / sqrt(D) plus the key
 * bias; softmax over keys; times v; then the output projection.
 *
 * Self-attention: q, k and v from x (B, T, C). Cross-attention: q from x
 * (B, Tq, C), k and v from ctx (B, Tk, C) through the same fused weight
 * (rows [0, C) project the queries, rows [C, 3C) the keys and values), so a
 * checkpoint has the same names either way. key_bias is (B, Tk) or NULL. */
typedef struct {
    tm_nn_linear qkv, out;
    int64_t C, heads;
    /* Set after _declare (all 0 by default): */
    int causal;        /* self-attention: query t sees keys <= t */
    float rope_base;   /* > 0: rotary positions (tm_rope) on q and k of self-attention */
    tm_node **probs;   /* non-NULL: _forward stores the (B, H, Tq, Tk) attention
                        * probabilities here (tm_attention_probs; no gradient) */
} tm_nn_attention;

tm_status tm_nn_attention_declare(tm_nn_attention *a, tm_graph *g, const char *name, int64_t C,
                                  int64_t heads);
tm_node *tm_nn_attention_self(tm_graph *g, const tm_nn_attention *a, tm_node *x,
                              tm_node *key_bias);
tm_node *tm_nn_attention_cross(tm_graph *g, const tm_nn_attention *a, tm_node *x,
                               tm_node *ctx, tm_node *key_bias);

/* (B, T, H*D) -> (B, H, T, D) and back: the head split used above. */
tm_node *tm_nn_split_heads(tm_graph *g, tm_node *x, int64_t heads);
tm_node *tm_nn_merge_heads(tm_graph *g, tm_node *x);

/* ----------------------------------------------------------- blocks */

/* Pre-LayerNorm transformer block:
 *   x = x + drop(Attn(LN1(x), key_bias));  x = x + drop(MLP(LN2(x)))
 * names "<name>.ln1", "<name>.attn", "<name>.ln2", "<name>.mlp". A cross
 * block (cross = 1) attends from x to a context instead of to itself:
 *   x = x + drop(Attn(LN1(x), LN_ctx(ctx), key_bias)); x = x + drop(MLP(LN2(x)))
 * with one more LayerNorm, "<name>.ln_ctx", over the context. */
typedef struct {
    float dropout;   /* on the attention and MLP outputs; 0 = none */
    uint64_t seed;   /* of the dropout and drop-path masks */
    float drop_path; /* stochastic depth: each residual branch dropped per
                      * example with this probability (training graphs) */
    int causal;      /* causal self-attention */
    float rope_base; /* > 0: rotary positions in self-attention */
} tm_nn_block_params;

tm_nn_block_params tm_nn_block_default_params(void);

typedef struct {
    tm_nn_layernorm ln1, ln2, ln_ctx;
    tm_nn_attention attn;
    tm_nn_mlp mlp;
    int cross;
    tm_nn_block_params p;
} tm_nn_block;

tm_status tm_nn_block_declare(tm_nn_block *b, tm_graph *g, const char *name, int64_t C,
                              int64_t heads, int64_t hidden, tm_nn_act act, float eps, int cross,
                              tm_nn_block_params p);
/* ctx must be NULL for a self-attention block, and given for a cross one. */
tm_node *tm_nn_block_forward(tm_graph *g, const tm_nn_block *b, tm_node *x, tm_node *ctx,
                             tm_node *key_bias);

/* Decoder block (a caption decoder's layer), pre-LayerNorm:
 *   x = x + Attn(LN1(x), causal); x = x + XAttn(LN2(x), ctx, key_bias);
 *   x = x + MLP(LN3(x))
 * names "<name>.ln1", "<name>.attn", "<name>.ln2", "<name>.xattn",
 * "<name>.ln3", "<name>.mlp". The context is used as given (already
 * normalised by the encoder that made it). */
typedef struct {
    tm_nn_layernorm ln1, ln2, ln3;
    tm_nn_attention attn, xattn;
    tm_nn_mlp mlp;
    tm_nn_block_params p;
} tm_nn_decoder_block;

tm_status tm_nn_decoder_block_declare(tm_nn_decoder_block *b, tm_graph *g, const char *name,
                                      int64_t C, int64_t heads, int64_t hidden, tm_nn_act act,
                                      float eps, tm_nn_block_params p);
tm_node *tm_nn_decoder_block_forward(tm_graph *g, const tm_nn_decoder_block *b, tm_node *x,
                                     tm_node *ctx, tm_node *ctx_bias);

/* The first n_out tokens of tm_nn_block_forward's output, (B, n_out, C),
 * computing only what they need: their queries (every token still gives
 * keys and values) and their MLP rows. A self-attention block only. For a
 * last layer read only at a CLS token this skips most of its work; the
 * values equal the full block's up to rounding. */
tm_node *tm_nn_block_forward_first(tm_graph *g, const tm_nn_block *b, tm_node *x,
                                   tm_node *key_bias, int64_t n_out);

/* Attention of the queries of xq (B, Tq, C) over the keys and values of xkv
 * (B, Tk, C), both projected by the self-attention weights of a (so xq =
 * the first tokens of xkv gives those tokens' self-attention output). */
tm_node *tm_nn_attention_subset(tm_graph *g, const tm_nn_attention *a, tm_node *xq,
                                tm_node *xkv, tm_node *key_bias);

/* -------------------------------------------------------- embeddings */

/* "<name>.weight" (V, C); ids (...) i32 -> (..., C). */
typedef struct {
    tm_node *weight;
    int64_t V, C;
} tm_nn_embedding;

tm_status tm_nn_embedding_declare(tm_nn_embedding *e, tm_graph *g, const char *name, int64_t V,
                                  int64_t C);
tm_node *tm_nn_embedding_forward(tm_graph *g, const tm_nn_embedding *e, tm_node *ids);

/* A (1, C) or (C) row repeated for each of `batch` examples: (batch, 1, C).
 * Used for CLS tokens; gradients of every copy add up in the row. Records
 * a constant i32 input of zeros (never written by the caller). */
tm_node *tm_nn_expand_rows(tm_graph *g, tm_node *row, int64_t batch);

/* ------------------------------------------------ positional encodings */

typedef enum {
    TM_NN_POS_NONE = 0,
    TM_NN_POS_LEARNED,    /* a trained (T, C) table */
    TM_NN_POS_SINUSOID,   /* fixed, 1-D, Whisper's layout (sin half, cos half) */
    TM_NN_POS_SINCOS_2D,  /* fixed, 2-D sin-cos over a (grid_h, grid_w) grid (MAE) */
    TM_NN_POS_COUNT
} tm_nn_pos_kind;

const char *tm_nn_pos_name(tm_nn_pos_kind k); /* "none", "learned", "sinusoidal", "sincos2d" */
int tm_nn_pos_from_name(const char *name);     /* -1 when unknown */

/* A positional table "<name>" of shape (T, C) added to x (B, T, C). Fixed
 * kinds declare a frozen parameter, to be filled by tm_nn_position_fill
 * (the model layer does it when it creates or loads weights). For
 * TM_NN_POS_SINCOS_2D, T = grid_h * grid_w + extra, where the first `extra`
 * rows (CLS tokens) are zero. */
typedef struct {
    tm_nn_pos_kind kind;
    tm_node *table; /* (T, C), or NULL for TM_NN_POS_NONE */
    int64_t T, C, grid_h, grid_w, extra;
} tm_nn_position;

tm_status tm_nn_position_declare(tm_nn_position *p, tm_graph *g, const char *name,
                                 tm_nn_pos_kind kind, int64_t T, int64_t C, int64_t grid_h,
                                 int64_t grid_w);
tm_node *tm_nn_position_forward(tm_graph *g, const tm_nn_position *p, tm_node *x);
/* Writes a fixed table into out (T * C floats); TM_ERR_INVALID for kinds
 * that are not fixed or sizes they cannot fill. */
tm_status tm_nn_position_fill(const tm_nn_position *p, float *out);

/* Whisper's sinusoids: row t = [sin(t * f_0..f_{C/2-1}), cos(t * f_0...)],
 * f_i = exp(-i * ln(10000) / (C/2 - 1)). C even, >= 4. out (T, C). */
void tm_nn_sinusoid_1d_fill(float *out, int64_t T, int64_t C);
/* MAE's 2-D sin-cos (get_2d_sincos_pos_embed): row h * gw + w of out
 * (gh * gw, C) holds [enc(w), enc(h)], each C/2 wide, enc(p) = [sin(p *
 * o_i), cos(p * o_i)] for o_i = 10000^(-i / (C/4)), i < C/4. The column
 * coordinate comes first, as in MAE's code (its meshgrid lists w first).
 * C divisible by 4. */
void tm_nn_sincos_2d_fill(float *out, int64_t grid_h, int64_t grid_w, int64_t C);

/* ---------------------------------------------------------- conv stems */

/* Conv1d (dims = 1; x (B, Cin, L)) or Conv2d (dims = 2; x (B, Cin, H, W))
 * with "<name>.weight" (Cout, Cin, k[, k]) and "<name>.bias" (Cout). */
typedef struct {
    tm_node *weight, *bias;
    int dims;
    int64_t cin, cout, kernel;
    int stride, pad;
} tm_nn_conv;

tm_status tm_nn_conv_declare(tm_nn_conv *c, tm_graph *g, const char *name, int dims,
                             int64_t cin, int64_t cout, int64_t kernel, int stride, int pad,
                             int bias);
tm_node *tm_nn_conv_forward(tm_graph *g, const tm_nn_conv *c, tm_node *x);

/* (B, C, L) or (B, C, H, W) -> (B, L or H*W, C): channels-first feature
 * maps to a token sequence. */
tm_node *tm_nn_to_tokens(tm_graph *g, tm_node *x);

/* ---------------------------------------------------------- group norm */

/* GroupNorm over (N, C, ...) with "<name>.weight" and "<name>.bias" (C):
 * a batch-independent norm for the CNN backbone. */
typedef struct {
    tm_node *weight, *bias;
    int64_t C;
    int groups;
    float eps;
} tm_nn_groupnorm;

tm_status tm_nn_groupnorm_declare(tm_nn_groupnorm *n, tm_graph *g, const char *name, int64_t C,
                                  int groups, float eps);
tm_node *tm_nn_groupnorm_forward(tm_graph *g, const tm_nn_groupnorm *n, tm_node *x);

/* ------------------------------------------------------------- masks */

/* Fills a key bias (n floats) from token ids: 0 where ids[i] != pad_id,
 * -INFINITY where ids[i] == pad_id. */
void tm_nn_key_bias_from_ids(float *bias, const int32_t *ids, int64_t n, int32_t pad_id);

/* ------------------------------------------------------------- misc */

/* min(x, c), built as c - relu(c - x): the gradient is 1 where x < c and 0
 * where x >= c (PyTorch's clamp passes it at x == c too). */
tm_node *tm_nn_min_scalar(tm_graph *g, tm_node *x, float c);
/* Mean over axis 1 of (B, T, C) -> (B, C). */
tm_node *tm_nn_mean_tokens(tm_graph *g, tm_node *x);
/* Token t of (B, T, C) -> (B, C). */
tm_node *tm_nn_take_token(tm_graph *g, tm_node *x, int64_t t);

#ifdef __cplusplus
}
#endif
#endif
