/* Dropout's mask on AVX2: eight Philox 4x32-10 blocks at once, one per
 * 32-bit lane, giving the 32 draws of 32 consecutive elements. Bit for bit
 * the scalar path of basic.c (tm_philox of src/core/rng.c, the same
 * conversion to [0, 1), the same multiply and add). Compiled with -mavx2:
 * reached only through basic.c's run-time dispatch. */
#include <immintrin.h>

#include "ops/basic.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* Low and high 32 bits of the 64-bit products a[i] * m, lane by lane. */
static inline void mul_lohi(__m256i a, __m256i m, __m256i *lo, __m256i *hi)
{
    __m256i e = _mm256_mul_epu32(a, m);                         /* lanes 0, 2, 4, 6 */
    __m256i o = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m); /* lanes 1, 3, 5, 7 */
    *lo = _mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0xAA);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(e, 32), o, 0xAA);
}

/* The 32 draws of blocks b0 .. b0+7, in element order, in w[0..3]. */
static inline void philox8(uint64_t seed, uint64_t stream, uint64_t b0, __m256i w[4])
{
    uint32_t lo[8], hi[8];
    for (int l = 0; l < 8; l++) {
        uint64_t b = b0 + (uint64_t)l;
        lo[l] = (uint32_t)b;
        hi[l] = (uint32_t)(b >> 32);
    }
    __m256i c0 = _mm256_loadu_si256((const __m256i *)lo);
    __m256i c1 = _mm256_loadu_si256((const __m256i *)hi);
    __m256i c2 = _mm256_set1_epi32((int)(uint32_t)stream);
    __m256i c3 = _mm256_set1_epi32((int)(uint32_t)(stream >> 32));
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        __m256i p0lo, p0hi, p1lo, p1hi;
        mul_lohi(c0, m0, &p0lo, &p0hi);
        mul_lohi(c2, m1, &p1lo, &p1hi);
        __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(p1hi, c1), _mm256_set1_epi32((int)k0));
        __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(p0hi, c3), _mm256_set1_epi32((int)k1));
        c0 = n0, c1 = p1lo, c2 = n2, c3 = p0lo;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    /* lane l of cj is word j of block l; element 4l + j wants it */
    __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpacklo_epi32(c2, c3);
    __m256i t2 = _mm256_unpackhi_epi32(c0, c1), t3 = _mm256_unpackhi_epi32(c2, c3);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t1); /* blocks 0 | 4 */
    __m256i u1 = _mm256_unpackhi_epi64(t0, t1); /* blocks 1 | 5 */
    __m256i u2 = _mm256_unpacklo_epi64(t2, t3); /* blocks 2 | 6 */
    __m256i u3 = _mm256_unpackhi_epi64(t2, t3); /* blocks 3 | 7 */
    w[0] = _mm256_permute2x128_si256(u0, u1, 0x20);
    w[1] = _mm256_permute2x128_si256(u2, u3, 0x20);
    w[2] = _mm256_permute2x128_si256(u0, u1, 0x31);
    w[3] = _mm256_permute2x128_si256(u2, u3, 0x31);
}

int64_t tm_dropout_range_avx2(float *y, const float *x, int64_t lo, int64_t hi, float p,
                              float keep, uint64_t seed, uint64_t stream, int accumulate,
                              uint64_t off)
{
    const __m256 vp = _mm256_set1_ps(p), vk = _mm256_set1_ps(keep);
    const __m256 unit = _mm256_set1_ps(1.0f / 16777216.0f);
    int64_t i = lo;
    for (; i + 32 <= hi; i += 32) {
        __m256i w[4];
        philox8(seed, stream, ((uint64_t)i + off) >> 2, w);
        for (int q = 0; q < 4; q++) {
            __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(w[q], 8)), unit);
            __m256 m = _mm256_cmp_ps(u, vp, _CMP_GE_OQ);
            __m256 v = _mm256_and_ps(m, _mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * q), vk));
            if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(y + i + 8 * q), v);
            _mm256_storeu_ps(y + i + 8 * q, v);
        }
    }
    return i;
}
