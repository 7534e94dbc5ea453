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

/* ------------------------------------------------- GEMM, pre-packed B */

/* op(B) packed once into the layout the GEMM kernel reads, for a B that
 * stays fixed over many products (a weight matrix at inference): each
 * tm_sgemm_packed then skips the packing pass that tm_sgemm makes on every
 * call (a fifth of a batch-1 forward of bench-small). Opaque; immutable
 * after packing except through tm_sgemm_repack_b, so one packed B may
 * serve any number of threads at once. */
typedef struct tm_packed_b tm_packed_b;

/* Packs op(B), which is (K, N): B is (K, ldb>=N) if !trans_b, else
 * (N, ldb>=K), row-major. The layout belongs to the kernel of the ISA in
 * force (tm_cpu_isa()) at this call, and tm_sgemm_packed runs that kernel
 * whatever the ISA later. Uses about K * N * 4 bytes (N rounded up to the
 * kernel's panel width, 16 or 32). Fails with TM_ERR_INVALID for negative
 * sizes, an ldb below a row of B or a NULL B (K * N > 0), TM_ERR_NOMEM. */
tm_status tm_sgemm_pack_b(tm_packed_b **out, int trans_b, int64_t K, int64_t N, const float *B,
                          int64_t ldb);

/* Packs new values of a B of the same shape and layout into p (after an
 * optimizer step, say), without allocating. */
void tm_sgemm_repack_b(tm_packed_b *p, const float *B, int64_t ldb);

/* C = alpha * op(A) * op(B) + beta * C with op(B) packed, op(A) (M, K):
 * A is (M, lda>=K) if !trans_a, else (K, lda>=M); C is (M, ldc>=N).
 * Bitwise the same as tm_sgemm(trans_a, trans_b, M, N, K, ...) under the
 * ISA B was packed for, and as it, independent of the thread count. */
void tm_sgemm_packed(int trans_a, int64_t M, float alpha, const float *A, int64_t lda,
                     const tm_packed_b *B, float beta, float *C, int64_t ldc);

/* K, N and the bytes held (0 for NULL). */
int64_t tm_packed_b_k(const tm_packed_b *p);
int64_t tm_packed_b_n(const tm_packed_b *p);
size_t tm_packed_b_bytes(const tm_packed_b *p);
void tm_packed_b_free(tm_packed_b *p); /* NULL is harmless */

/* ------------------------------------------------------------ GEMM, bf16 */

/* C = alpha * op(A) * op(B) + beta * C with A and B in bf16 (tm_bf16,
 * the top 16 bits of an f32; see tm_f32_to_bf16), products summed in f32,
 * C in f32; layouts as tm_sgemm. On a CPU with AVX-512-BF16 (and the
 * AVX-512 ISA in force) the kernel multiplies bf16 pairs (vdpbf16ps): the
 * result then agrees with the f32 path to rounding, not bit for bit
 * (another summation order; that instruction flushes denormals).
 * Elsewhere the inputs are widened to f32 as they are packed and the f32
 * kernel runs: the result is exactly tm_sgemm's on the widened inputs.
 * Independent of the thread count either way. */
void tm_gemm_bf16(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const tm_bf16 *A, int64_t lda, const tm_bf16 *B, int64_t ldb, float beta,
                  float *C, int64_t ldc);

#ifdef __cplusplus
}
#endif
#endif
