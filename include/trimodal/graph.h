/*
 * trimodal graph: build a computation once, then run forward and backward
 * on it many times.
 *
 *   tm_graph *g = tm_graph_new();
 *   tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){32, 784});
 *   tm_node *w = tm_param(g, "fc.weight", 2, (int64_t[]){10, 784});
 *   tm_node *b = tm_param(g, "fc.bias", 1, (int64_t[]){10});
 *   tm_node *y = tm_input(g, "y", TM_I32, 1, (int64_t[]){32});
 *   tm_node *loss = tm_cross_entropy(g, tm_linear(g, x, w, b), y, 0.0f, -100);
 *   if (tm_graph_compile(g, loss, TM_GRAPH_TRAIN) != TM_OK) ... tm_last_error()
 *   ... fill tm_node_data(g, x), tm_node_data(g, y) ...
 *   tm_graph_forward(g); tm_graph_backward(g);
 *   ... update tm_graph_params(g) from tm_graph_grads(g) ...
 *
 * Builders only record the op and infer its shape. A builder given a NULL
 * input or invalid shapes returns NULL and records the first error in the
 * graph; tm_graph_compile() then fails with that message, so a model can be
 * built without checking every call.
 *
 * Memory: parameters live in one contiguous f32 buffer and their gradients
 * in another, in creation order (so an optimizer is one flat loop and a
 * checkpoint one write). Activations, their gradients and scratch space are
 * placed by a memory plan into one arena sized once at compile time:
 * buffers whose lifetimes do not overlap share memory, and forward and
 * backward never allocate.
 *
 * Thread-safety: a graph is used by one thread at a time; kernels inside it
 * use the library's thread pool.
 */
#ifndef TRIMODAL_GRAPH_H
#define TRIMODAL_GRAPH_H

#include "trimodal/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tm_graph tm_graph;
typedef struct tm_node tm_node;

/* Every op of the graph; names in tm_op_name(). */
typedef enum {
    TM_OP_INPUT = 0,
    TM_OP_PARAM,
    TM_OP_MATMUL,
    TM_OP_ADD,
    TM_OP_SUB,
    TM_OP_MUL,
    TM_OP_DIV,
    TM_OP_SCALE,       /* a * x + b for scalars a, b */
    TM_OP_SUM,
    TM_OP_MEAN,
    TM_OP_EXP,
    TM_OP_LOG,
    TM_OP_SQRT,
    TM_OP_TANH,
    TM_OP_SIGMOID,
    TM_OP_RELU,
    TM_OP_GELU,        /* exact: x * Phi(x) */
    TM_OP_GELU_TANH,   /* tanh approximation */
    TM_OP_SILU,
    TM_OP_SOFTMAX,
    TM_OP_LOG_SOFTMAX,
    TM_OP_LAYERNORM,
    TM_OP_RMSNORM,
    TM_OP_DROPOUT,
    TM_OP_EMBEDDING,
    TM_OP_CONCAT,
    TM_OP_SLICE,
    TM_OP_RESHAPE,
    TM_OP_PERMUTE,
    TM_OP_CONV1D,
    TM_OP_CONV2D,
    TM_OP_MAXPOOL2D,
    TM_OP_AVGPOOL2D,
    TM_OP_ATTENTION,
    TM_OP_CROSS_ENTROPY,
    TM_OP_L2_NORMALIZE,
    TM_OP_ROPE,            /* rotary position embedding */
    TM_OP_DROP_PATH,       /* stochastic depth */
    TM_OP_GROUPNORM,
    TM_OP_ATTENTION_PROBS, /* forward only */
    TM_OP_ALLGATHER,       /* rows of every data-parallel rank */
    TM_OP_COUNT
} tm_op;

const char *tm_op_name(tm_op op);

/* ------------------------------------------------------------- lifetime */

tm_graph *tm_graph_new(void); /* NULL + tm_last_error() on failure */
void tm_graph_free(tm_graph *g);  /* NULL is harmless */

/* The first error recorded while building (TM_OK if none). */
tm_status tm_graph_status(const tm_graph *g);

/* Records a build error for builders outside the graph layer (layers,
 * models) exactly as the graph's own builders do: the first error of the
 * graph is kept (later calls do not replace it), it becomes this thread's
 * tm_last_error(), later builders pass NULL through, and tm_graph_compile
 * fails with it. A NULL graph only sets tm_last_error(); s == TM_OK is
 * recorded as TM_ERR_INVALID. */
void tm_graph_fail(tm_graph *g, tm_status s, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---------------------------------------------------------- leaves */

/* An input filled by the caller before each forward pass: TM_F32, or TM_I32
 * for indices and labels. Its memory is never reused by the plan. */
tm_node *tm_input(tm_graph *g, const char *name, tm_dtype dtype, int ndim,
                  const int64_t *shape);
/* Asks for the gradient of an f32 input (read with tm_node_grad). */
tm_node *tm_requires_grad(tm_graph *g, tm_node *input);
/* A trainable f32 parameter, zero-initialised, stored in the parameter
 * buffer. Names must be unique. */
tm_node *tm_param(tm_graph *g, const char *name, int ndim, const int64_t *shape);
/* A parameter frozen in place: used in forward, never given a gradient. */
tm_status tm_param_freeze(tm_graph *g, tm_node *param, int frozen);

/* ------------------------------------------------------------ ops */

/* a (..., M, K) x b (..., K, N) -> (..., M, N); trans_a/trans_b use the
 * last two axes transposed. b may be 2-D (shared by every batch entry), or
 * both have the same leading batch axes. */
tm_node *tm_matmul(tm_graph *g, tm_node *a, tm_node *b, int trans_a, int trans_b);
/* x (..., in) w (out, in) b (out) or NULL -> (..., out), as torch Linear. */
tm_node *tm_linear(tm_graph *g, tm_node *x, tm_node *w, tm_node *b);

/* Elementwise with NumPy broadcasting. */
tm_node *tm_add(tm_graph *g, tm_node *a, tm_node *b);
tm_node *tm_sub(tm_graph *g, tm_node *a, tm_node *b);
tm_node *tm_mul(tm_graph *g, tm_node *a, tm_node *b);
tm_node *tm_div(tm_graph *g, tm_node *a, tm_node *b);
tm_node *tm_scale(tm_graph *g, tm_node *x, float a, float b); /* a*x + b */

/* Reductions over a set of axes (negative axes count from the end);
 * naxes == 0 reduces over every axis. keepdim keeps reduced axes as 1. */
tm_node *tm_sum(tm_graph *g, tm_node *x, int naxes, const int *axes, int keepdim);
tm_node *tm_mean(tm_graph *g, tm_node *x, int naxes, const int *axes, int keepdim);

tm_node *tm_exp(tm_graph *g, tm_node *x);
tm_node *tm_log(tm_graph *g, tm_node *x);
tm_node *tm_sqrt(tm_graph *g, tm_node *x);
tm_node *tm_tanh(tm_graph *g, tm_node *x);
tm_node *tm_sigmoid(tm_graph *g, tm_node *x);
tm_node *tm_relu(tm_graph *g, tm_node *x);
tm_node *tm_gelu(tm_graph *g, tm_node *x);      /* erf form */
tm_node *tm_gelu_tanh(tm_graph *g, tm_node *x); /* tanh form */
tm_node *tm_silu(tm_graph *g, tm_node *x);

/* Over the last axis. */
tm_node *tm_softmax(tm_graph *g, tm_node *x);
tm_node *tm_log_softmax(tm_graph *g, tm_node *x);
/* Over the last axis; weight and bias (C) may be NULL. */
tm_node *tm_layernorm(tm_graph *g, tm_node *x, tm_node *weight, tm_node *bias, float eps);
tm_node *tm_rmsnorm(tm_graph *g, tm_node *x, tm_node *weight, float eps);

/* Inverted dropout with probability p, active only in a graph compiled
 * with TM_GRAPH_TRAIN. The mask is a pure function of (seed, call number,
 * element index): reproducible whatever the thread count. The call number
 * is the graph's RNG counter (tm_graph_rng_counter) at the forward pass. */
tm_node *tm_dropout(tm_graph *g, tm_node *x, float p, uint64_t seed);
/* Drop-path (stochastic depth) on x (N, ...): in a TRAIN graph each example
 * n (axis 0) is kept with probability 1 - p and scaled by 1 / (1 - p), or
 * zeroed. The identity in an INFER graph; p == 0 returns x itself. The
 * mask is a pure function of (seed, call number, example), like dropout's
 * (a different draw from a dropout with the same seed). p in [0, 1). */
tm_node *tm_drop_path(tm_graph *g, tm_node *x, float p, uint64_t seed);

/* GroupNorm over x (N, C, ...) (e.g. (N, C, H, W) or (N, C, L)), PyTorch
 * semantics: the C channels form `groups` groups of C / groups channels;
 * each example's group is normalised over its channels and positions
 * (biased variance, eps inside the square root), then weight and bias (C),
 * either may be NULL, scale and shift each channel. An example's output
 * never depends on the rest of the batch. */
tm_node *tm_groupnorm(tm_graph *g, tm_node *x, int groups, tm_node *weight, tm_node *bias,
                      float eps);

/* Rotary position embedding on x (B, H, T, D), D even, in the "rotate half"
 * convention of GPT-NeoX and Hugging Face LLaMA: element pairs (i, i + D/2)
 * for i < D/2 are rotated by the angle (t + pos_offset) * base^(-2i/D),
 *   y[i]       = x[i] cos - x[i + D/2] sin
 *   y[i + D/2] = x[i + D/2] cos + x[i] sin,
 * where t is the position along axis 2. base is usually 10000. The
 * angles are computed in double precision. */
tm_node *tm_rope(tm_graph *g, tm_node *x, int64_t pos_offset, float base);

/* table (V, C), ids (...) i32 -> (..., C). An id outside [0, V) makes the
 * forward pass fail with TM_ERR_INVALID. */
tm_node *tm_embedding(tm_graph *g, tm_node *table, tm_node *ids);

tm_node *tm_concat(tm_graph *g, int n, tm_node *const *xs, int axis);
/* Elements start, start+step, ... < stop along axis (step >= 1). */
tm_node *tm_slice(tm_graph *g, tm_node *x, int axis, int64_t start, int64_t stop,
                  int64_t step);
/* Splits x along axis into n parts of the given sizes (sum = the axis). */
tm_status tm_split(tm_graph *g, tm_node *x, int axis, int n, const int64_t *sizes,
                   tm_node **outs);
/* One size may be -1 (inferred). Shares memory with x. */
tm_node *tm_reshape(tm_graph *g, tm_node *x, int ndim, const int64_t *shape);
tm_node *tm_permute(tm_graph *g, tm_node *x, const int *perm);
tm_node *tm_transpose(tm_graph *g, tm_node *x, int axis0, int axis1);

/* x (N, Cin, L), w (Cout, Cin, K), b (Cout) or NULL -> (N, Cout, Lout). */
tm_node *tm_conv1d(tm_graph *g, tm_node *x, tm_node *w, tm_node *b, int stride, int pad);
/* x (N, Cin, H, W), w (Cout, Cin, KH, KW), b (Cout) or NULL. */
tm_node *tm_conv2d(tm_graph *g, tm_node *x, tm_node *w, tm_node *b, int stride_h,
                   int stride_w, int pad_h, int pad_w);
/* x (N, C, H, W) or (N, C, L) for 1-D pooling (then kh = 1, sh = 1, ph = 0). */
tm_node *tm_maxpool2d(tm_graph *g, tm_node *x, int kh, int kw, int sh, int sw, int ph,
                      int pw);
tm_node *tm_avgpool2d(tm_graph *g, tm_node *x, int kh, int kw, int sh, int sw, int ph,
                      int pw);

/* q (B, H, Tq, D), k and v (B, H, Tk, D), key_bias (B, Tk) or NULL (0 keep,
 * -inf mask) -> (B, H, Tq, D). scale <= 0 means 1/sqrt(D). key_bias is a
 * mask: it gets no gradient (compiling a graph that asks for one fails with
 * TM_ERR_UNSUPPORTED). */
tm_node *tm_attention(tm_graph *g, tm_node *q, tm_node *k, tm_node *v, tm_node *key_bias,
                      float scale, int causal);

/* The attention probabilities softmax(scale * q k^T + key_bias) of
 * tm_attention with the same arguments: q (B, H, Tq, D), k (B, H, Tk, D),
 * key_bias (B, Tk) or NULL -> (B, H, Tq, Tk), under exactly tm_attention's
 * masking rules: a key with bias -inf or hidden by `causal` (query i sees
 * key j when j <= i + Tk - Tq) gets probability exactly 0, and a query
 * whose keys are all masked gets a row of zeros (tm_attention's output for
 * it is 0 too). So probs @ v equals tm_attention(q, k, v, ...). scale <= 0
 * means 1/sqrt(D). For interpretation (attention maps): forward only;
 * compiling a TRAIN graph whose loss needs its gradient fails with
 * TM_ERR_UNSUPPORTED. Use tm_graph_add_output to compute it beside a root
 * that does not depend on it. */
tm_node *tm_attention_probs(tm_graph *g, tm_node *q, tm_node *k, tm_node *key_bias,
                            float scale, int causal);

/* logits (N, C), labels (N) i32 -> scalar mean loss over the labels that are
 * not ignore_index, with label smoothing eps (PyTorch semantics). */
tm_node *tm_cross_entropy(tm_graph *g, tm_node *logits, tm_node *labels,
                          float label_smoothing, int ignore_index);
/* x / max(||x||_2, eps) over the last axis. */
tm_node *tm_l2_normalize(tm_graph *g, tm_node *x, float eps);
/* (a / max(||a||, eps)) . (b / max(||b||, eps)) over the last axis (the
 * leading axes broadcast); built from l2_normalize, mul and sum. */
tm_node *tm_cosine_similarity(tm_graph *g, tm_node *a, tm_node *b, float eps);

/* Data parallelism: fills `all` with every rank's `bytes` bytes in rank
 * order (this rank's are `mine`), like MPI_Allgather. */
typedef tm_status (*tm_allgather_fn)(void *ctx, const void *mine, void *all, size_t bytes);

/* x (B, ...) -> (world * B, ...): every rank's x stacked in rank order, by
 * gather(ctx, ...) in the forward pass. The backward hands x this rank's
 * rows of the output gradient, unchanged: it assumes that every rank
 * computes the same loss from the gathered rows, so the gradient of rank
 * r's rows is taken on rank r and the ranks' parameter gradients add up
 * to the gradient of that loss. world 1 (gather may then be NULL) is a
 * copy. */
tm_node *tm_allgather_rows(tm_graph *g, tm_node *x, int world, int rank, tm_allgather_fn gather,
                           void *ctx);

/* ------------------------------------------------------ compile and run */

typedef enum {
    TM_GRAPH_INFER = 0, /* forward only; dropout off; activations reused early */
    TM_GRAPH_TRAIN = 1  /* forward and backward from a scalar loss */
} tm_graph_mode;

/* Keeps a node's value readable after forward (outputs are otherwise
 * overwritten by the memory plan). The compiled root is always kept. A
 * kept node that the root does not depend on is not computed at all: see
 * tm_graph_add_output. */
tm_status tm_graph_keep(tm_graph *g, tm_node *node);
/* Computes `node` in every forward pass even when the root does not depend
 * on it, and keeps its value (e.g. attention maps beside the logits, or a
 * metric beside the loss). A side output gets no gradient and costs only
 * the ops it needs beyond the root's. Call before tm_graph_compile. */
tm_status tm_graph_add_output(tm_graph *g, tm_node *node);

/* ------------------------------------------------ gradient checkpointing
 *
 * Marks a segment of the graph (typically one transformer block) whose
 * activations are not kept for the backward pass: every node built
 * between tm_graph_checkpoint_begin and tm_graph_checkpoint_end is
 * recomputed during backward, just before the segment's own backward
 * steps, from the values the segment reads from outside (its input, the
 * parameters, masks). Values read by later parts of the graph (the
 * segment's output) are kept as usual. The memory plan frees the
 * segment's interior activations and saved tensors after the forward pass
 * and places the recomputed ones in memory that the rest of the backward
 * pass does not use, so a stack of L checkpointed blocks holds the block
 * boundaries plus one block's interior at a time instead of all L
 * interiors (see tm_graph_arena_bytes). The price is one more forward
 * pass of each segment per backward pass.
 *
 * Gradients are bitwise those of the same graph without checkpoints: the
 * kernels are deterministic, and dropout and drop-path masks are redrawn
 * from the call number of the forward pass they belong to.
 *
 *   for (int l = 0; l < L; l++) {
 *       x = tm_graph_checkpoint_begin(g, x);
 *       x = block(g, x, l);
 *       x = tm_graph_checkpoint_end(g, x);
 *   }
 *
 * Segments cannot nest. begin returns x (NULL after an earlier build
 * error) and end returns y, so they chain like builders; misuse (end
 * without begin, begin twice, y built before the segment) is a build
 * error. Segments matter only in TRAIN graphs (an INFER graph keeps
 * nothing for backward anyway); a node kept with tm_graph_keep or the
 * root is never recomputed. */
tm_node *tm_graph_checkpoint_begin(tm_graph *g, tm_node *x);
tm_node *tm_graph_checkpoint_end(tm_graph *g, tm_node *y);

/* ------------------------------------------------------- randomness
 *
 * Dropout and drop-path masks are functions of (seed, call number,
 * element). The call number is the graph's RNG counter: 0 for a new graph,
 * used by a forward pass and then incremented by each successful forward
 * pass (backward reuses the number of the forward pass it follows). A
 * trainer that saves the counter with its checkpoint and restores it into
 * the graph of the resumed process draws exactly the masks that an
 * uninterrupted run would have drawn. */
uint64_t tm_graph_rng_counter(const tm_graph *g);   /* 0 for NULL */
void tm_graph_set_rng_counter(tm_graph *g, uint64_t counter); /* NULL is harmless */
/* Data parallelism: this graph holds rank `rank`'s rows of a global batch
 * whose ranks each hold B rows (B: the leading axis of every tensor that
 * a dropout or drop-path masks), so rank r's rows are r * B ... Masks are
 * then drawn at their global positions: the ranks together draw exactly
 * the masks of one graph over the whole batch. Default 0; NULL or a
 * negative rank is ignored. */
void tm_graph_set_shard(tm_graph *g, int rank);

/* Mixed precision: the precision in which matmul, linear and conv
 * (im2col GEMM) multiply, forward and backward. TM_F32 (the default) is
 * plain f32. With TM_BF16 or TM_F16 every GEMM operand (activations,
 * weights and, in backward, the incoming gradient) is rounded to that type
 * (round to nearest even; in f16, magnitudes beyond 65504 become inf and
 * tiny ones flush to subnormals or zero, exactly as f16 storage would) and
 * the products are summed in f32. Everything else (norms, softmax,
 * attention, losses, the parameter buffer = the f32 master weights, the
 * gradient buffer, optimizers) stays f32. On a CPU with AVX-512-BF16 the
 * bf16 linear GEMMs run on tm_gemm_bf16 (vdpbf16ps: equal up to summation
 * order); elsewhere the emulation computes exactly tm_sgemm of the rounded
 * operands. Costs a scratch buffer of the largest GEMM's operands, sized at
 * compile time. Call before tm_graph_compile; TM_ERR_INVALID otherwise or
 * for another dtype. f16 training needs loss scaling (see tm_loss_scaler in
 * trimodal/optim.h): small gradients underflow in f16. */
tm_status tm_graph_set_precision(tm_graph *g, tm_dtype precision);
tm_dtype tm_graph_precision(const tm_graph *g); /* TM_F32 for NULL */

/* Loss scaling: tm_graph_backward seeds d root = scale instead of 1, so
 * every gradient (parameter buffer included) comes out multiplied by it;
 * divide it out before the optimizer step (tm_loss_scaler_unscale). Keeps
 * small f16 gradients from underflowing. Any time, also after compile;
 * finite and > 0 (TM_ERR_INVALID otherwise). Default 1. */
tm_status tm_graph_set_loss_scale(tm_graph *g, float scale);
float tm_graph_loss_scale(const tm_graph *g); /* 1 for NULL */

/* ------------------------------------------------ prepared weights
 *
 * An inference graph can prepare its weights once, so that each forward
 * pass reads them in the form its GEMM kernel wants instead of converting
 * them at every product (docs/quantization.md). Prepared: every matmul
 * (and so every tm_linear) whose second operand is a 2-D parameter and
 * whose first is not transposed; convolutions, attention and embeddings
 * keep reading the f32 parameters.
 *   TM_WEIGHTS_PLAIN  nothing prepared (the default): every product reads
 *                     the parameter buffer as it is at that moment.
 *   TM_WEIGHTS_F32    op(W) packed into the f32 GEMM's panels
 *                     (tm_sgemm_pack_b): results bitwise the same as plain.
 *   TM_WEIGHTS_BF16   W rounded to bf16 (half the bytes); activations stay
 *                     f32, products summed in f32.
 *   TM_WEIGHTS_I8     W quantised per output channel, symmetric:
 *                     scale_n = max|W_n| / 127, q = rint(W / scale_n) in
 *                     [-127, 127]; at each product the activations are
 *                     quantised per row the same way, the i8 x i8 products
 *                     summed exactly in i32 (AVX512-VNNI, AVX-VNNI, AVX2 or
 *                     plain C, chosen at run time, all bitwise equal) and
 *                     scaled back to f32.
 * A prepared graph no longer sees later changes to those parameters: make
 * it after the weights are final, or call this again (which re-prepares
 * from the current values). Fails with TM_ERR_INVALID for a graph that is
 * not compiled, not TM_GRAPH_INFER, or has a GEMM precision other than
 * TM_F32 (tm_graph_set_precision) while fmt is not TM_WEIGHTS_PLAIN; for a
 * weight holding a NaN or inf with TM_WEIGHTS_I8; TM_ERR_NOMEM. On failure
 * the graph is left with nothing prepared. */
typedef enum {
    TM_WEIGHTS_PLAIN = 0,
    TM_WEIGHTS_F32,
    TM_WEIGHTS_BF16,
    TM_WEIGHTS_I8,
    TM_WEIGHTS_COUNT
} tm_weights;

tm_status tm_graph_prepare_weights(tm_graph *g, tm_weights fmt);
tm_weights tm_graph_weights(const tm_graph *g); /* TM_WEIGHTS_PLAIN for NULL */
/* Matmuls prepared, and the bytes their prepared weights and scratch hold
 * (weights shared with other graphs included). */
int tm_graph_prepared_count(const tm_graph *g);
size_t tm_graph_prepared_bytes(const tm_graph *g);
/* Prepared weights are shared: graphs that prepare the same parameter
 * buffer with the same contents, shape and format (a model's graphs at
 * several batch sizes, a session's classify and embed graphs) hold one
 * copy, freed with the last graph that uses it. Process-wide: the bytes
 * and the number of distinct prepared weights held now, each counted
 * once (thread-safe). */
size_t tm_prepared_total_bytes(void);
int tm_prepared_total_count(void);
/* "plain", "f32", "bf16", "int8"; and back (-1 for an unknown name). */
const char *tm_weights_name(tm_weights fmt);
int tm_weights_from_name(const char *name);

/* Plans memory for the nodes that `root` depends on. In TM_GRAPH_TRAIN mode
 * root must be a scalar. Fails with the first build error, if any. */
tm_status tm_graph_compile(tm_graph *g, tm_node *root, tm_graph_mode mode);

tm_status tm_graph_forward(tm_graph *g);
/* Zeroes every parameter gradient, then back-propagates d root = 1. */
tm_status tm_graph_backward(tm_graph *g);
/* The same, adding to the gradients already there (gradient accumulation). */
tm_status tm_graph_backward_accumulate(tm_graph *g);

/* -------------------------------------------------------------- access */

/* The node's value (f32 or i32 per its dtype); valid after compile for
 * inputs and parameters, after forward for kept nodes. */
void *tm_node_data(tm_graph *g, tm_node *node);
/* The gradient of a parameter or of a tm_requires_grad input after
 * backward; NULL otherwise. */
float *tm_node_grad(tm_graph *g, tm_node *node);
/* A tensor view of the node's value (does not own data). */
tm_status tm_node_tensor(tm_graph *g, tm_node *node, tm_tensor *out);
int tm_node_ndim(const tm_node *node);
const int64_t *tm_node_shape(const tm_node *node);
int64_t tm_node_numel(const tm_node *node);
tm_op tm_node_op(const tm_node *node);
const char *tm_node_name(const tm_node *node);

/* Makes the graph use caller-owned parameter and gradient buffers of
 * `count` floats (grads may be NULL for an inference graph) instead of its
 * own: graphs of one model built for different batch sizes or modes then
 * share one set of weights. Parameters are laid out in creation order, so
 * graphs built by the same code agree. Call before tm_graph_compile, which
 * fails if count differs from the graph's parameter count. The buffers
 * must outlive the graph; the graph never frees them. */
tm_status tm_graph_share_params(tm_graph *g, float *params, float *grads, size_t count);

/* Parameters (and their gradients) as one flat buffer each. */
float *tm_graph_params(tm_graph *g, size_t *count);
float *tm_graph_grads(tm_graph *g, size_t *count);
int tm_graph_param_count(const tm_graph *g);      /* number of param nodes */
tm_node *tm_graph_param_at(tm_graph *g, int i);   /* in creation order */
tm_node *tm_graph_find_param(tm_graph *g, const char *name);
/* Bytes of the activation arena, and what it would have been without
 * reuse (the sum of every planned buffer). */
size_t tm_graph_arena_bytes(const tm_graph *g);
size_t tm_graph_arena_bytes_unplanned(const tm_graph *g);

#ifdef __cplusplus
}
#endif
#endif
