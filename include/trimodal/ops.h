/*
 * trimodal ops: the numeric kernels behind every graph op, usable on their
 * own on raw row-major f32 buffers (llm.c style: outputs first, then
 * inputs, then sizes; a shape comment on every buffer).
 *
 * Conventions
 * - Every buffer is contiguous row-major f32 unless stated.
 * - Backward kernels ACCUMULATE (+=) into the gradients of their inputs, so
 *   a value used twice simply receives both contributions. Any d-pointer may
 *   be NULL when that gradient is not wanted.
 * - Kernels run on the library's thread pool (tm_parallel_for) and split
 *   work so that results do not depend on the thread count: a reduction is
 *   never split across threads.
 * - Kernels that need scratch memory take a `work` buffer whose size comes
 *   from the matching *_work_floats() function, so a training step never
 *   allocates.
 * - Each kernel keeps a plain C reference path; SIMD paths (AVX2, AVX-512)
 *   are chosen at run time by tm_cpu_isa() and are tested against it.
 * - Sizes are validated by the graph layer; kernels assume valid sizes.
 *
 * Thread-safety: kernels are reentrant.
 */
#ifndef TRIMODAL_OPS_H
#define TRIMODAL_OPS_H

#include "trimodal/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ GEMM */

/* C = alpha * op(A) * op(B) + beta * C, row-major.
 * op(A) is (M, K): A is (M, lda>=K) if !trans_a, else (K, lda>=M).
 * op(B) is (K, N): B is (K, ldb>=N) if !trans_b, else (N, ldb>=K).
 * C is (M, ldc>=N). beta == 0 ignores C's old contents (even NaN).
 * Parallel over blocks of C; the order of the K sum is fixed, so results
 * are identical for every thread count. */
void tm_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc);

/* `batch` independent GEMMs; matrix i starts at A + i*stride_a and so on.
 * A stride of 0 reuses one matrix for every batch entry (for A or B only). */
void tm_sgemm_batched(int trans_a, int trans_b, int64_t batch, int64_t M, int64_t N,
                      int64_t K, float alpha, const float *A, int64_t lda, int64_t stride_a,
                      const float *B, int64_t ldb, int64_t stride_b, float beta, float *C,
                      int64_t ldc, int64_t stride_c);

/* The plain C reference GEMM (single thread, no blocking): the oracle of
 * the SIMD kernels' tests. */
void tm_sgemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                  float *C, int64_t ldc);

/* ------------------------------------------------------------- attention */

/* Scaled dot-product attention, multi-head, computed block by block
 * (online softmax): no more than one block of scores per thread is ever
 * held, whatever Tq and Tk.
 *   out      (B, H, Tq, D)
 *   lse      (B, H, Tq)   log-sum-exp of each query's scaled scores, saved
 *                         for the backward pass (-inf for a row whose keys
 *                         are all masked; such a row's output is 0)
 *   q        (B, H, Tq, D)
 *   k, v     (B, H, Tk, D)
 *   key_bias (B, Tk) or NULL: added to every score of that key (0 keeps the
 *            key, -INFINITY masks it: a key-padding mask)
 *   causal   query i sees key j only when j <= i + (Tk - Tq)
 * scores = scale * q k^T + key_bias; out = softmax(scores) v. */
void tm_attention_forward(float *out, float *lse, const float *q, const float *k,
                          const float *v, const float *key_bias, int64_t B, int64_t H,
                          int64_t Tq, int64_t Tk, int64_t D, float scale, int causal);

/* Gradients of the above; accumulates into dq (B,H,Tq,D), dk and dv
 * (B,H,Tk,D). dout, out and lse are those of the forward pass. `work` holds
 * tm_attention_work_floats(...) floats. */
size_t tm_attention_work_floats(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D);
void tm_attention_backward(float *dq, float *dk, float *dv, float *work, const float *dout,
                           const float *out, const float *lse, const float *q,
                           const float *k, const float *v, const float *key_bias, int64_t B,
                           int64_t H, int64_t Tq, int64_t Tk, int64_t D, float scale,
                           int causal);

/* ------------------------------------------------------- convolution */

/* Output length of a convolution or pooling window along one axis:
 * (in + 2*pad - k) / stride + 1, or -1 if it would be < 1. */
int64_t tm_conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad);

/* 2-D convolution (cross-correlation, as PyTorch), zero padding.
 *   out  (N, Cout, Ho, Wo)   x (N, Cin, H, W)
 *   w    (Cout, Cin, KH, KW) bias (Cout) or NULL
 * 1-D convolution is the same with H = KH = 1, sh = 1, ph = 0. */
size_t tm_conv2d_work_floats(int64_t N, int64_t Cin, int64_t H, int64_t W, int64_t Cout,
                             int64_t KH, int64_t KW, int64_t sh, int64_t sw, int64_t ph,
                             int64_t pw);
void tm_conv2d_forward(float *out, float *work, const float *x, const float *w,
                       const float *bias, int64_t N, int64_t Cin, int64_t H, int64_t W,
                       int64_t Cout, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                       int64_t ph, int64_t pw);
void tm_conv2d_backward(float *dx, float *dw, float *dbias, float *work, const float *dout,
                        const float *x, const float *w, int64_t N, int64_t Cin, int64_t H,
                        int64_t W, int64_t Cout, int64_t KH, int64_t KW, int64_t sh,
                        int64_t sw, int64_t ph, int64_t pw);

/* --------------------------------------------------------------- pooling */

/* Max pooling over (N, C, H, W) with padding by -inf (PyTorch semantics);
 * argmax (N, C, Ho, Wo) stores the flat h*W+w index that won, for backward.
 * Ties go to the first index in row-major order. */
void tm_maxpool2d_forward(float *out, int32_t *argmax, const float *x, int64_t N, int64_t C,
                          int64_t H, int64_t W, int64_t KH, int64_t KW, int64_t sh,
                          int64_t sw, int64_t ph, int64_t pw);
void tm_maxpool2d_backward(float *dx, const float *dout, const int32_t *argmax, int64_t N,
                           int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo);
/* Average pooling; padded cells count in the divisor (PyTorch's default
 * count_include_pad=True). */
void tm_avgpool2d_forward(float *out, const float *x, int64_t N, int64_t C, int64_t H,
                          int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                          int64_t ph, int64_t pw);
void tm_avgpool2d_backward(float *dx, const float *dout, int64_t N, int64_t C, int64_t H,
                           int64_t W, int64_t KH, int64_t KW, int64_t sh, int64_t sw,
                           int64_t ph, int64_t pw);

#ifdef __cplusplus
}
#endif
#endif
