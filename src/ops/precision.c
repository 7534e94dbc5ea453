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

static void round_bf16_one(float *dst, const float *src, int64_t n)
{
    if (tm_cpu_isa() >= TM_ISA_AVX2) {
        tm_round_bf16_avx2(dst, src, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = float_of(bf16_round_bits(bits_of(src[i])));
}

static void pack_bf16_one(tm_bf16 *dst, const float *src, int64_t n)
{
    if (tm_cpu_isa() >= TM_ISA_AVX2) {
        tm_pack_bf16_avx2(dst, src, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        dst[i] = (tm_bf16)(bf16_round_bits(bits_of(src[i])) >> 16);
}

/* Large arrays are cut into pieces for the thread pool (element-wise:
 * the result does not depend on the cut). */
#define PAR_MIN (1 << 16)

typedef struct {
    void *dst;
    const float *src;
    int64_t n;
    int pack;
} conv_job;

static void conv_task(void *ctx, int64_t t, int64_t nt)
{
    const conv_job *j = ctx;
    int64_t b, e;
    tm_split_range(j->n, t, nt, &b, &e);
    if (b >= e) return;
    if (j->pack) pack_bf16_one((tm_bf16 *)j->dst + b, j->src + b, e - b);
    else round_bf16_one((float *)j->dst + b, j->src + b, e - b);
}

static void conv_bf16(void *dst, const float *src, int64_t n, int pack)
{
    if (n < PAR_MIN || tm_get_num_threads() <= 1) {
        if (pack) pack_bf16_one(dst, src, n);
        else round_bf16_one(dst, src, n);
        return;
    }
    conv_job j = {dst, src, n, pack};
    int64_t tasks = n / PAR_MIN < 4 * (int64_t)tm_get_num_threads() ? n / PAR_MIN
                                                                     : 4 * tm_get_num_threads();
    tm_parallel_for(tasks, conv_task, &j);
}

void tm_round_precision(float *dst, const float *src, int64_t n, tm_dtype p)
{
    if (p == TM_BF16) {
        conv_bf16(dst, src, n, 0);
    } else if (p == TM_F16) {
        for (int64_t i = 0; i < n; i++)
            dst[i] = tm_f16_to_f32(tm_f32_to_f16(src[i]));
    } else if (dst != src) {
        memcpy(dst, src, (size_t)n * sizeof(float));
    }
}

void tm_pack_bf16(tm_bf16 *dst, const float *src, int64_t n)
{
    conv_bf16(dst, src, n, 1);
}
