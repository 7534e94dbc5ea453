/* Internal kernels of the simpler ops (elementwise, reductions, norms,
 * shapes, losses). Same conventions as include/trimodal/ops.h: outputs
 * first, backward kernels accumulate, results independent of the thread
 * count. Shapes are validated by the graph layer before these run. */
#ifndef TM_OPS_BASIC_H
#define TM_OPS_BASIC_H

#include "trimodal/core.h"

/* ----------------------------------------------------- elementwise */

typedef enum {
    TM_UNARY_EXP,
    TM_UNARY_LOG,
    TM_UNARY_SQRT,
    TM_UNARY_TANH,
    TM_UNARY_SIGMOID,
    TM_UNARY_RELU,
    TM_UNARY_GELU,
    TM_UNARY_GELU_TANH,
    TM_UNARY_SILU,
    TM_UNARY_SCALE, /* a * x + b */
} tm_unary;

void tm_unary_forward(tm_unary op, float *y, const float *x, int64_t n, float a, float b);
/* dx += dy * f'(x); y is the forward output (some derivatives use it). */
void tm_unary_backward(tm_unary op, float *dx, const float *dy, const float *x,
                       const float *y, int64_t n, float a);

typedef enum { TM_BINARY_ADD, TM_BINARY_SUB, TM_BINARY_MUL, TM_BINARY_DIV } tm_binary;

/* Broadcast layout: out has `ndim` dims; sa and sb are the element strides
 * of a and b over out's dims (0 along broadcast dims). */
typedef struct {
    int ndim;
    int64_t shape[TM_MAX_DIMS];
    int64_t sa[TM_MAX_DIMS], sb[TM_MAX_DIMS];
} tm_bcast;

/* Fills the layout for a (nda dims) and b (ndb dims); 0 if incompatible. */
int tm_bcast_init(tm_bcast *bc, int nda, const int64_t *sha, int ndb, const int64_t *shb);
void tm_binary_forward(tm_binary op, float *out, const float *a, const float *b,
                       const tm_bcast *bc);
void tm_binary_backward(tm_binary op, float *da, float *db, const float *dout, const float *a,
                        const float *b, const tm_bcast *bc, int64_t na, int64_t nb);

/* ------------------------------------------------------ reductions */

/* x has `ndim` dims; reduce[i] marks reduced axes. out has x's shape with
 * reduced axes of size 1. `work` holds numel(out) doubles. scale multiplies
 * the sum (1 for sum, 1/count for mean). */
void tm_reduce_sum_forward(float *out, double *work, const float *x, int ndim,
                           const int64_t *shape, const int *reduce, double scale);
void tm_reduce_sum_backward(float *dx, const float *dout, int ndim, const int64_t *shape,
                            const int *reduce, float scale);

/* ------------------------------------------------- rows (last axis) */

void tm_softmax_forward(float *y, const float *x, int64_t rows, int64_t C, int log);
void tm_softmax_backward(float *dx, const float *dy, const float *y, int64_t rows, int64_t C,
                         int log);
/* mean, rstd: (rows) saved for backward. weight, bias: (C) or NULL. */
void tm_layernorm_forward(float *y, float *mean, float *rstd, const float *x,
                          const float *weight, const float *bias, int64_t rows, int64_t C,
                          float eps);
void tm_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dy,
                           const float *x, const float *weight, const float *mean,
                           const float *rstd, int64_t rows, int64_t C);
void tm_rmsnorm_forward(float *y, float *rstd, const float *x, const float *weight,
                        int64_t rows, int64_t C, float eps);
void tm_rmsnorm_backward(float *dx, float *dweight, const float *dy, const float *x,
                         const float *weight, const float *rstd, int64_t rows, int64_t C);
/* norm: (rows) saved for backward (max(||x||, eps)). */
void tm_l2norm_forward(float *y, float *norm, const float *x, int64_t rows, int64_t C,
                       float eps);
void tm_l2norm_backward(float *dx, const float *dy, const float *y, const float *norm,
                        int64_t rows, int64_t C, float eps);

/* Cross-entropy over logits (N, C) with labels (N): mean over labels that
 * are not ignore_index. Returns TM_ERR_INVALID for a label outside [0, C). */
tm_status tm_cross_entropy_forward(float *loss, const float *logits, const int32_t *labels,
                                   int64_t N, int64_t C, float smoothing, int ignore_index);
void tm_cross_entropy_backward(float *dlogits, float dloss, const float *logits,
                               const int32_t *labels, int64_t N, int64_t C, float smoothing,
                               int ignore_index);

/* ---------------------------------------------------------- misc */

/* Inverted dropout: element i is kept when uniform(seed, stream, i) >= p. */
void tm_dropout_forward(float *y, const float *x, int64_t n, float p, uint64_t seed,
                        uint64_t stream);
void tm_dropout_backward(float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                         uint64_t stream);

tm_status tm_embedding_forward(float *out, const float *table, const int32_t *ids, int64_t n,
                               int64_t V, int64_t C);
void tm_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int64_t n,
                           int64_t C);

/* Copies blocks: dst[o, j*dst_step + dst_off + i] from src[o, j*src_step +
 * src_off + i] for o < outer, j < count, i < inner; accumulate adds instead.
 * Concat, slice and their gradients are all this one copy. */
void tm_block_copy(float *dst, int64_t dst_outer_stride, int64_t dst_step, int64_t dst_off,
                   const float *src, int64_t src_outer_stride, int64_t src_step,
                   int64_t src_off, int64_t outer, int64_t count, int64_t inner,
                   int accumulate);

/* out = x permuted (out dim i is x dim perm[i]); accumulate adds. The
 * backward is the same call with the inverse permutation. */
void tm_permute_copy(float *out, const float *x, int ndim, const int64_t *xshape,
                     const int *perm, int accumulate);

#endif
