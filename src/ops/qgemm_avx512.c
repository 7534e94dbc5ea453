/* The AVX-512-VNNI int8 kernel of the prepared-weight GEMM (qgemm.h): one
 * vpdpbusd multiplies four u8 activations (q + 128) by four s8 weights of
 * each of the 16 columns of a panel and adds the sums into 16 i32 lanes; a
 * panel group of 64 bytes is exactly one zmm. The bias of 128 is removed
 * with the column sums. Compiled with -mavx512f... plus a target attribute
 * for VNNI; run only where tm_qkernel_available says so. Not yet timed on
 * such a machine; its results are checked against the plain C kernel by
 * tests/ops/test_qgemm.c wherever it runs. */
#include <immintrin.h>
#include <string.h>

#include "ops/qgemm.h"

#define NR TM_QGEMM_NR
#define KG TM_QGEMM_KG
#define MR 8

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

VNNI static inline void store_row512(float *C, __m512i acc, const int32_t *colsum, float sa,
                                     const float *scale, int64_t nn)
{
    acc = _mm512_sub_epi32(acc, _mm512_slli_epi32(_mm512_loadu_si512(colsum), 7));
    __m512 f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(sa)),
                             _mm512_loadu_ps(scale));
    _mm512_mask_storeu_ps(C, (__mmask16)((1u << nn) - 1u), f);
}

VNNI void tm_qgemm_block_avx512vnni(float *C, int64_t ldc, const int8_t *qa, const float *sa,
                                    int64_t m0, int64_t m1, const tm_qweights *w, int64_t p0,
                                    int64_t p1)
{
    const int64_t groups = w->kp / KG, kp = w->kp;
    for (int64_t p = p0; p < p1; p++) {
        const int8_t *panel = w->q + p * kp * NR;
        int64_t n0 = p * NR, nn = w->n - n0 < NR ? w->n - n0 : NR;
        for (int64_t m = m0; m < m1; m += MR) {
            int rows = m1 - m < MR ? (int)(m1 - m) : MR;
            const int8_t *a = qa + m * kp;
            __m512i acc[MR];
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++) acc[r] = _mm512_setzero_si512();
            if (rows == MR) {
                for (int64_t g = 0; g < groups; g++) {
                    __m512i y = _mm512_loadu_si512(panel + g * NR * KG);
#pragma GCC unroll 8
                    for (int r = 0; r < MR; r++) {
                        int32_t v;
                        memcpy(&v, a + r * kp + g * KG, sizeof v);
                        __m512i x = _mm512_set1_epi32(v ^ (int32_t)0x80808080u);
                        acc[r] = _mm512_dpbusd_epi32(acc[r], x, y);
                    }
                }
            } else for (int64_t g = 0; g < groups; g++) {
                __m512i y = _mm512_loadu_si512(panel + g * NR * KG);
                for (int r = 0; r < rows; r++) {
                    int32_t v;
                    memcpy(&v, a + r * kp + g * KG, sizeof v);
                    __m512i x = _mm512_set1_epi32(v ^ (int32_t)0x80808080u);
                    acc[r] = _mm512_dpbusd_epi32(acc[r], x, y);
                }
            }
            for (int r = 0; r < rows; r++)
                store_row512(C + (m + r) * ldc + n0, acc[r], w->colsum + n0, sa[m + r],
                             w->scale + n0, nn);
        }
    }
}
