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
    TM_UNARY_ERF,   /* erf(x), as GELU computes it (no graph op uses it yet) */
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
/* The same with the draws of elements off .. off + n - 1 (element i draws
 * uniform(seed, stream, off + i)): a shard of a larger tensor gets that
 * tensor's mask (data parallelism). */
void tm_dropout_forward_at(float *y, const float *x, int64_t n, float p, uint64_t seed,
                           uint64_t stream, uint64_t off);
void tm_dropout_backward_at(float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                            uint64_t stream, uint64_t off);

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

/* ------------------------------------------------- SIMD kernels */

/* The vectorised kernels behind the functions above, one table per
 * instruction set: basic_avx2.c (AVX2 + FMA) and basic_avx512.c (the same
 * source compiled for AVX-512). basic.c picks a table with tm_cpu_isa()
 * and keeps its plain C loops as the reference and the fallback. Each
 * function covers one contiguous range and computes every element with the
 * same instructions wherever it falls (tails use masked loads and stores,
 * not a scalar loop), so how a caller cuts the work into tasks never
 * changes a result. Functions returning int return 0, having done
 * nothing, for an op they do not vectorise. */
typedef struct {
    /* y[i] = f(x[i]) for i < n. */
    int (*unary_fwd)(tm_unary op, float *y, const float *x, int64_t n, float a, float b);
    /* dx[i] += dy[i] * f'(x[i]) (y: the forward output). */
    int (*unary_bwd)(tm_unary op, float *dx, const float *dy, const float *x, const float *y,
                     int64_t n, float a);
    /* One row of a binary op: out[i] = a[i*sa] op b[i*sb], with sa, sb in
     * {0, 1} (0: one value broadcast along the row). */
    void (*binary_row)(tm_binary op, float *out, const float *a, int64_t sa, const float *b,
                       int64_t sb, int64_t n);
    /* One row of an operand's gradient, d[i] += dgrad(g[i], a[i*sa], b[i*sb])
     * for which = 0 (d is a's) or 1 (b's); d varies along the row. */
    void (*binary_bwd_row)(tm_binary op, int which, float *d, const float *g, const float *a,
                           int64_t sa, const float *b, int64_t sb, int64_t n);
    /* LayerNorm of one row of C: returns mean and rstd through m, rs. */
    void (*layernorm_row)(float *y, float *m, float *rs, const float *x, const float *w,
                          const float *b, int64_t C, float eps);
    /* dx += rstd * (g - mean(g) - n * mean(g * n)), g = dy * w, n = (x - m) * rs. */
    void (*layernorm_bwd_row)(float *dx, const float *dy, const float *x, const float *w,
                              float m, float rs, int64_t C);
    /* Columns [0, n) of a norm's weight and bias gradients (either may be
     * NULL), summed over `rows` rows of stride ld in row order:
     * dw[i] += dy[r,i] * (x[r,i] - mean[r]) * rstd[r]; db[i] += dy[r,i].
     * mean NULL means 0 (RMSNorm). */
    void (*norm_param_grad)(float *dw, float *db, const float *dy, const float *x,
                            const float *mean, const float *rstd, int64_t rows, int64_t ld,
                            int64_t n);
    /* Columns [0, n) of a bias gradient: d[i] += sign * g[r*ld + i] for
     * r = 0, 1, ..., rows-1 in that order (sign is 1 or -1). */
    void (*column_sum)(float *d, const float *g, int64_t rows, int64_t ld, int64_t n, float sign);
    /* Softmax (or log-softmax) of one row, and its backward. */
    void (*softmax_row)(float *y, const float *x, int64_t C, int log);
    void (*softmax_bwd_row)(float *dx, const float *dy, const float *y, int64_t C, int log);
} tm_basic_simd;

/* Coefficients of the exp and erf approximations, lowest power first,
 * fitted by scripts/fit_vecmath.py (near-minimax, errors in its output):
 *   exp(r)  = 1 + r + r^2 Q(r) on |r| <= ln(2)/2 (relative error 1.1e-8);
 *   erf(t)  = t + t Q(t^2) for 0 <= t <= 1 (relative error 1.2e-9);
 *   erfc(t) = exp(G(v) - t^2) u / sqrt(pi) for t > 1, u = 1/t clamped to
 *             [0.1, 1], v = u GS + GO in [-1, 1] (G's error 2.7e-8; past
 *             t = 10, where the clamp acts, erfc is below 2e-45).
 * The f32 code built on them is checked against double precision by
 * tests/ops/test_basic_math.c (max error of erf below 1e-7). */
static const float TM_EXP_Q[5] = {0.5f, 0.166665763f, 0.0416663736f, 0.00836317521f,
                                  0.0013941112f};
static const float TM_ERF_Q[7] = {0.128379166f,   -0.37612626f,   0.112835854f,
                                  -0.0268538129f, 0.00518832775f, -0.000801019312f,
                                  7.85385928e-05f};
static const float TM_ERFC_G[11] = {-0.116086416f,   -0.152314425f,   -0.0198095087f,
                                    0.0154082514f,   -0.00555134658f, 0.00116013142f,
                                    0.000131004781f, -0.000369521382f, 0.000250584562f,
                                    -3.52507413e-05f, -2.40927075e-05f};
#define TM_ERF_T0 1.0f           /* below: t + t Q(t^2); above: erfc's form */
#define TM_ERFC_UMIN 0.1f        /* u = 1/t is clamped to [UMIN, 1/T0] */
#define TM_ERFC_GS 2.22222222f   /* v = u * GS + GO maps [UMIN, 1/T0] to [-1, 1] */
#define TM_ERFC_GO (-1.22222222f)

/* Dropout over elements [lo, hi) (lo a multiple of 4) in whole groups of
 * 32, as tm_dropout_forward (accumulate 0) or _backward (1) does them;
 * returns where it stopped (the caller does the rest). AVX2 (dropout_avx2.c):
 * call only when tm_cpu_isa() >= TM_ISA_AVX2. */
int64_t tm_dropout_range_avx2(float *y, const float *x, int64_t lo, int64_t hi, float p,
                              float keep, uint64_t seed, uint64_t stream, int accumulate,
                              uint64_t off); /* draws at off + i; off a multiple of 4 */

/* NULL when the CPU (or a forced ISA) does not allow the set. */
const tm_basic_simd *tm_basic_simd_for(int isa);
extern const tm_basic_simd tm_basic_simd_avx2;   /* basic_avx2.c */
extern const tm_basic_simd tm_basic_simd_avx512; /* basic_avx512.c */

/* The plain C erf of TM_UNARY_ERF and GELU (the same approximation as the
 * SIMD kernels: max error about 1e-7 against double precision), and
 * 1 + erf(x), which keeps its relative accuracy for x far below 0. */
float tm_erf_approx(float x);
float tm_erf1p_approx(float x);

#endif
