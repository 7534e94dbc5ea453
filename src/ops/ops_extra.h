/* Internal kernels of the ops added for the model work: rotary position
 * embedding (rope.c), GroupNorm (norm.c), drop-path (droppath.c) and the
 * attention probabilities for attention maps (attention_probs.c).
 *
 * Same conventions as include/trimodal/ops.h and src/ops/basic.h: outputs
 * first, then inputs, then sizes; backward kernels ACCUMULATE (+=) into
 * the gradients (any of which may be NULL when not wanted); work is split
 * over the thread pool in tasks whose bounds depend only on the sizes and
 * no sum is split across tasks, so results are bitwise the same for any
 * thread count. Sizes are validated by the graph layer. */
#ifndef TM_OPS_EXTRA_H
#define TM_OPS_EXTRA_H

#include "trimodal/core.h"

/* ------------------------------------------------------------- rope */

/* cs (2, T, D/2): cs[t][i] = cos((t + pos_offset) * base^(-2i/D)) and,
 * after T * D/2 floats, the sines; computed in double, rounded to f32. */
void tm_rope_table(float *cs, int64_t T, int64_t D, int64_t pos_offset, float base);
/* y, x (BH, T, D) with cs from tm_rope_table: "rotate half" rotary
 * embedding of pairs (i, i + D/2). y may not alias x. */
void tm_rope_forward(float *y, const float *x, const float *cs, int64_t BH, int64_t T, int64_t D);
/* dx (BH, T, D) += the inverse rotation of dy. */
void tm_rope_backward(float *dx, const float *dy, const float *cs, int64_t BH, int64_t T,
                      int64_t D);

/* -------------------------------------------------------- groupnorm */

/* x, y (N, C, S) with S the product of the spatial sizes; G groups of C/G
 * channels; mean, rstd (N, G) saved for backward; weight, bias (C) or NULL.
 * Statistics are summed in double, the variance is biased (PyTorch). */
void tm_groupnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *weight,
                          const float *bias, int64_t N, int64_t C, int64_t S, int64_t G, float eps);
void tm_groupnorm_backward(float *dx, float *dweight, float *dbias, const float *dy, const float *x,
                           const float *weight, const float *mean, const float *rstd, int64_t N,
                           int64_t C, int64_t S, int64_t G);

/* -------------------------------------------------------- drop-path */

/* Whether example n is kept: uniform(seed', stream, n) >= p, where seed'
 * is seed mixed with a constant, so that a drop-path and a dropout given
 * the same seed draw unrelated numbers. */
int tm_drop_path_keep(uint64_t seed, uint64_t stream, int64_t example, float p);
/* y, x (N, inner): y[n] = x[n] / (1 - p) for kept examples, else 0. */
void tm_drop_path_forward(float *y, const float *x, int64_t N, int64_t inner, float p,
                          uint64_t seed, uint64_t stream);
/* dx (N, inner) += the same mask and scale applied to dy. */
void tm_drop_path_backward(float *dx, const float *dy, int64_t N, int64_t inner, float p,
                           uint64_t seed, uint64_t stream);
/* The same for examples first .. first + N - 1 of a larger batch (a data-
 * parallel shard): row n draws example first + n's mask. */
void tm_drop_path_forward_at(float *y, const float *x, int64_t N, int64_t inner, float p,
                             uint64_t seed, uint64_t stream, int64_t first);
void tm_drop_path_backward_at(float *dx, const float *dy, int64_t N, int64_t inner, float p,
                              uint64_t seed, uint64_t stream, int64_t first);

/* ------------------------------------------------- attention probs */

/* probs (B, H, Tq, Tk) = softmax(scale * q k^T + key_bias) with
 * tm_attention_forward's masking: key_bias (B, Tk) or NULL is added to each
 * key's score (-inf masks it); with `causal`, query i sees key j only when
 * j <= i + (Tk - Tq). Masked keys get exactly 0 and a query with every key
 * masked gets a row of zeros. q (B, H, Tq, D), k (B, H, Tk, D). */
void tm_attention_probs_forward(float *probs, const float *q, const float *k, const float *key_bias,
                                int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D,
                                float scale, int causal);

#endif
