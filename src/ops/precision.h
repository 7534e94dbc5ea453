/* Internal kernels of reduced-precision matmuls: round an f32 buffer to
 * what bf16 or f16 storage would hold, widened back to f32, or pack it as
 * bf16. A GEMM on the rounded operands with f32 accumulation is the
 * reference emulation of AVX-512-BF16 (vdpbf16ps) and of f16 tensor math. */
#ifndef TM_OPS_PRECISION_H
#define TM_OPS_PRECISION_H

#include "trimodal/core.h"

/* dst[i] = (float)(p)src[i] for p = TM_BF16 or TM_F16 (round to nearest
 * even; f16 overflow gives +-inf, subnormals as f16 stores them); any other
 * p copies. dst may equal src. */
void tm_round_precision(float *dst, const float *src, int64_t n, tm_dtype p);

/* dst[i] = tm_f32_to_bf16(src[i]). */
void tm_pack_bf16(tm_bf16 *dst, const float *src, int64_t n);

/* Both of the above run on the thread pool for large n, and with AVX2
 * where the CPU has it; these are their single-threaded AVX2 kernels
 * (call only when tm_cpu_isa() >= TM_ISA_AVX2; dst may equal src). */
void tm_round_bf16_avx2(float *dst, const float *src, int64_t n);
void tm_pack_bf16_avx2(tm_bf16 *dst, const float *src, int64_t n);

/* tm_sgemm_batched (trimodal/ops.h) with op(A) and op(B) rounded to
 * precision p (TM_BF16 or TM_F16; any other p: none) as they are packed:
 * the very bits of tm_sgemm_batched on tm_round_precision'd operands,
 * without the separate pass and buffer. */
void tm_sgemm_batched_prec(tm_dtype p, int trans_a, int trans_b, int64_t batch, int64_t M,
                           int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                           int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b,
                           float beta, float *C, int64_t ldc, int64_t stride_c);

/* 1 when tm_gemm_bf16 multiplies bf16 pairs itself (AVX-512-BF16), which
 * tm_sgemm_batched_prec does not emulate bit for bit. */
int tm_gemm_bf16_native(void);

#endif
