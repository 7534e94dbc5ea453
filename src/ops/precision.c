/* Rounding kernels for mixed precision (see precision.h). The bf16 path is
 * the bit trick of tm_f32_to_bf16 inlined so the loop vectorises; the f16
 * path goes through the core conversions (it is rarer and has subnormals
 * and overflow to handle). */
#include "ops/precision.h"

#include <string.h>

static inline uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static inline float float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* The f32 whose top 16 bits are tm_f32_to_bf16(x) and low 16 bits zero. */
static inline uint32_t bf16_round_bits(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u | 0x00400000u) & 0xffff0000u; /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return u & 0xffff0000u;
}

void tm_round_precision(float *dst, const float *src, int64_t n, tm_dtype p)
{
    if (p == TM_BF16) {
        for (int64_t i = 0; i < n; i++)
            dst[i] = float_of(bf16_round_bits(bits_of(src[i])));
    } else if (p == TM_F16) {
        for (int64_t i = 0; i < n; i++)
            dst[i] = tm_f16_to_f32(tm_f32_to_f16(src[i]));
    } else if (dst != src) {
        memcpy(dst, src, (size_t)n * sizeof(float));
    }
}

void tm_pack_bf16(tm_bf16 *dst, const float *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = (tm_bf16)(bf16_round_bits(bits_of(src[i])) >> 16);
}
