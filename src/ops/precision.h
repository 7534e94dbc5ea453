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

#endif
