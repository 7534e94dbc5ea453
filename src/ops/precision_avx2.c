/* AVX2 versions of the bf16 rounding kernels of precision.c (the same
 * bits, NaN included). Compiled with -mavx2: reached only through
 * precision.c's run-time dispatch. */
#include <immintrin.h>

#include "ops/precision.h"

/* Eight floats' bits rounded to bf16 (round to nearest even), in the top
 * halves, low halves zero; a NaN becomes the quiet NaN tm_f32_to_bf16
 * gives. */
static inline __m256i round8(__m256i u)
{
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(bias, odd));
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    __m256i q = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));
    return _mm256_and_si256(_mm256_blendv_epi8(r, q, nan), hi);
}

void tm_round_bf16_avx2(float *dst, const float *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), round8(u));
    }
    if (i < n) {
        int64_t rest = n - i;
        __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)rest), idx);
        __m256i u = _mm256_maskload_epi32((const int *)(src + i), mask);
        _mm256_maskstore_epi32((int *)(dst + i), mask, round8(u));
    }
}

void tm_pack_bf16_avx2(tm_bf16 *dst, const float *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = round8(_mm256_loadu_si256((const __m256i *)(src + i)));
        __m256i b = round8(_mm256_loadu_si256((const __m256i *)(src + i + 8)));
        /* top halves to 16 bits: packus works per 128-bit lane, so fix the
         * lane order afterwards */
        __m256i p = _mm256_packus_epi32(_mm256_srli_epi32(a, 16), _mm256_srli_epi32(b, 16));
        p = _mm256_permute4x64_epi64(p, 0xD8);
        _mm256_storeu_si256((__m256i *)(dst + i), p);
    }
    for (; i < n; i++) {
        float f = src[i];
        __m256i u = _mm256_castps_si256(_mm256_set1_ps(f));
        dst[i] = (tm_bf16)((uint32_t)_mm256_extract_epi32(round8(u), 0) >> 16);
    }
}
