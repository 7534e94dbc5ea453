/* The AVX-512 GEMM microkernel: a 12 x 32 tile of C held in 24 zmm
 * accumulators (two vectors per row), leaving registers for the two B
 * vectors and the broadcast A value (GCC 12 compiles it without spills).
 * Each step of k does 24 FMAs for 2 vector loads and 12 broadcasts, enough
 * independent chains to cover the FMA latency on two 512-bit FMA ports.
 * Compiled with -mavx512f...; reached only through gemm.c's run-time
 * dispatch. Not yet timed on an AVX-512 machine: its blocking (kc 256,
 * mc 192) is a starting point; its results are checked by test_gemm. */
#include <immintrin.h>

#include "ops/gemm_internal.h"

#define MR TM_GEMM_AVX512_MR
#define NR TM_GEMM_AVX512_NR

/* One k step at offset p (in steps) from the current a and b pointers. */
#define STEP(p)                                                                                    \
    do {                                                                                           \
        __m512 b0 = _mm512_load_ps(b + (p)*NR);                                                    \
        __m512 b1 = _mm512_load_ps(b + (p)*NR + 16);                                               \
        __m512 ax;                                                                                 \
        ax = _mm512_set1_ps(a[(p)*MR + 0]);                                                        \
        c00 = _mm512_fmadd_ps(ax, b0, c00);                                                        \
        c01 = _mm512_fmadd_ps(ax, b1, c01);                                                        \
        ax = _mm512_set1_ps(a[(p)*MR + 1]);                                                        \
        c10 = _mm512_fmadd_ps(ax, b0, c10);                                                        \
        c11 = _mm512_fmadd_ps(ax, b1, c11);                                                        \
        ax = _mm512_set1_ps(a[(p)*MR + 2]);                                                        \
        c20 = _mm512_fmadd_ps(ax, b0, c20);                                                        \
        c21 = _mm512_fmadd_ps(ax, b1, c21);                                                        \
        ax = _mm512_set1_ps(a[(p)*MR + 3]);                                                        \
        c30 = _mm512_fmadd_ps(ax, b0, c30);                                                        \
        c31 = _mm512_fmadd_ps(ax, b1, c31);                                                        \
        ax = _mm512_set1_ps(a[(p)*MR + 4]);                                                        \
        c40 = _mm512_fmadd_ps(ax, b0, c40);                                                        \
        c41 = _mm512_fmadd_ps(ax, b1, c41);                                                        \
        ax = _mm512_set1_ps(a[(p)*MR + 5]);                                                        \
        c50 = _mm512_fmadd_ps(ax, b0, c50);                                                        \
        c51 = _mm512_fmadd_ps(ax, b1, c51);                                                        \
        ax = _mm512_set1_ps(a[(p)*MR + 6]);                                                        \
        c60 = _mm512_fmadd_ps(ax, b0, c60);                                                        \
        c61 = _mm512_fmadd_ps(ax, b1, c61);                                                        \
        ax = _mm512_set1_ps(a[(p)*MR + 7]);                                                        \
        c70 = _mm512_fmadd_ps(ax, b0, c70);                                                        \
        c71 = _mm512_fmadd_ps(ax, b1, c71);                                                        \
        ax = _mm512_set1_ps(a[(p)*MR + 8]);                                                        \
        c80 = _mm512_fmadd_ps(ax, b0, c80);                                                        \
        c81 = _mm512_fmadd_ps(ax, b1, c81);                                                        \
        ax = _mm512_set1_ps(a[(p)*MR + 9]);                                                        \
        c90 = _mm512_fmadd_ps(ax, b0, c90);                                                        \
        c91 = _mm512_fmadd_ps(ax, b1, c91);                                                        \
        ax = _mm512_set1_ps(a[(p)*MR + 10]);                                                       \
        c100 = _mm512_fmadd_ps(ax, b0, c100);                                                      \
        c101 = _mm512_fmadd_ps(ax, b1, c101);                                                      \
        ax = _mm512_set1_ps(a[(p)*MR + 11]);                                                       \
        c110 = _mm512_fmadd_ps(ax, b0, c110);                                                      \
        c111 = _mm512_fmadd_ps(ax, b1, c111);                                                      \
    } while (0)

/* Writes one row of the tile: alpha*acc (+ beta*c). */
#define STORE_ROW(r, lo, hi)                                                                       \
    do {                                                                                           \
        float *cr = c + (r)*ldc;                                                                   \
        if (load_c) {                                                                              \
            _mm512_storeu_ps(cr, _mm512_fmadd_ps(va, lo, _mm512_mul_ps(vb, _mm512_loadu_ps(cr)))); \
            _mm512_storeu_ps(                                                                      \
                cr + 16, _mm512_fmadd_ps(va, hi, _mm512_mul_ps(vb, _mm512_loadu_ps(cr + 16))));    \
        } else {                                                                                   \
            _mm512_storeu_ps(cr, _mm512_mul_ps(va, lo));                                           \
            _mm512_storeu_ps(cr + 16, _mm512_mul_ps(va, hi));                                      \
        }                                                                                          \
    } while (0)

void tm_gemm_ukr_avx512(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                        float alpha, float beta, int load_c)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps();
    __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps();
    __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps();
    __m512 c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
    __m512 c80 = _mm512_setzero_ps(), c81 = _mm512_setzero_ps();
    __m512 c90 = _mm512_setzero_ps(), c91 = _mm512_setzero_ps();
    __m512 c100 = _mm512_setzero_ps(), c101 = _mm512_setzero_ps();
    __m512 c110 = _mm512_setzero_ps(), c111 = _mm512_setzero_ps();

    for (int r = 0; r < MR; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + NR - 1), _MM_HINT_T0);
    }

    int64_t p = 0;
    for (; p + 4 <= kc; p += 4) {
        STEP(0);
        STEP(1);
        STEP(2);
        STEP(3);
        a += 4 * MR;
        b += 4 * NR;
    }
    for (; p < kc; p++) {
        STEP(0);
        a += MR;
        b += NR;
    }

    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    STORE_ROW(0, c00, c01);
    STORE_ROW(1, c10, c11);
    STORE_ROW(2, c20, c21);
    STORE_ROW(3, c30, c31);
    STORE_ROW(4, c40, c41);
    STORE_ROW(5, c50, c51);
    STORE_ROW(6, c60, c61);
    STORE_ROW(7, c70, c71);
    STORE_ROW(8, c80, c81);
    STORE_ROW(9, c90, c91);
    STORE_ROW(10, c100, c101);
    STORE_ROW(11, c110, c111);
}

/* op(A) = A: 12 rows of A, each contiguous along k, become k-major groups
 * of 12: per block of 8 k, a transpose of rows 0-7 and one of rows 8-11. */
void tm_gemm_pack_at_avx512(float *dst, const float *src, int64_t ld, int64_t kc)
{
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        __m256 r[8], s[8];
        tm_gemm_load8x8(r, src, ld, 8, p);
        tm_gemm_load8x8(s, src + 8 * ld, ld, MR - 8, p);
        float *d = dst + p * MR;
        for (int k = 0; k < 8; k++) {
            _mm256_storeu_ps(d + k * MR, r[k]);
            _mm_storeu_ps(d + k * MR + 8, _mm256_castps256_ps128(s[k]));
        }
    }
    for (; p < kc; p++)
        for (int i = 0; i < MR; i++)
            dst[p * MR + i] = src[i * ld + p];
}

/* op(B) = B^T: 32 rows of B become k-major groups of 32: four 8x8
 * transposes per block of 8 k. */
void tm_gemm_pack_bt_avx512(float *dst, const float *src, int64_t ld, int64_t kc)
{
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        for (int h = 0; h < NR / 8; h++) {
            __m256 r[8];
            tm_gemm_load8x8(r, src + h * 8 * ld, ld, 8, p);
            for (int k = 0; k < 8; k++)
                _mm256_storeu_ps(dst + (p + k) * NR + h * 8, r[k]);
        }
    }
    for (; p < kc; p++)
        for (int j = 0; j < NR; j++)
            dst[p * NR + j] = src[j * ld + p];
}

/* The first m < MR rows of a tile: the full kernel's FMA chains and
 * stores, row for row (see tm_gemm_ukr_rows_fn). */
static inline __attribute__((always_inline)) void ukr_rows(const int m, int64_t kc, const float *a,
                                                           const float *b, float *c, int64_t ldc,
                                                           float alpha, float beta, int load_c)
{
    __m512 lo[MR], hi[MR];
#pragma GCC unroll 12
    for (int i = 0; i < m; i++)
        lo[i] = hi[i] = _mm512_setzero_ps();
    for (int64_t p = 0; p < kc; p++, a += MR, b += NR) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
        for (int i = 0; i < m; i++) {
            __m512 ax = _mm512_set1_ps(a[i]);
            lo[i] = _mm512_fmadd_ps(ax, b0, lo[i]);
            hi[i] = _mm512_fmadd_ps(ax, b1, hi[i]);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int i = 0; i < m; i++)
        STORE_ROW(i, lo[i], hi[i]);
}

void tm_gemm_ukr_rows_avx512(int64_t m, int64_t kc, const float *a, const float *b, float *c,
                             int64_t ldc, float alpha, float beta, int load_c)
{
    switch (m) {
    case 1: ukr_rows(1, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 2: ukr_rows(2, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 3: ukr_rows(3, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 4: ukr_rows(4, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 5: ukr_rows(5, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 6: ukr_rows(6, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 7: ukr_rows(7, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 8: ukr_rows(8, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 9: ukr_rows(9, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 10: ukr_rows(10, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 11: ukr_rows(11, kc, a, b, c, ldc, alpha, beta, load_c); break;
    default: tm_gemm_ukr_avx512(kc, a, b, c, ldc, alpha, beta, load_c); break;
    }
}

/* tm_gemm_pack_at_avx512 and tm_gemm_pack_bt_avx512 from bf16 sources. */
void tm_gemm_pack_at16_avx512(float *dst, const uint16_t *src, int64_t ld, int64_t kc)
{
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        __m256 r[8], s[8];
        tm_gemm_load8x8_bf16(r, src, ld, 8, p);
        tm_gemm_load8x8_bf16(s, src + 8 * ld, ld, MR - 8, p);
        float *d = dst + p * MR;
        for (int k = 0; k < 8; k++) {
            _mm256_storeu_ps(d + k * MR, r[k]);
            _mm_storeu_ps(d + k * MR + 8, _mm256_castps256_ps128(s[k]));
        }
    }
    for (; p < kc; p++)
        for (int i = 0; i < MR; i++)
            dst[p * MR + i] = tm_gemm_bf16_f32(src[i * ld + p]);
}

void tm_gemm_pack_bt16_avx512(float *dst, const uint16_t *src, int64_t ld, int64_t kc)
{
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        for (int h = 0; h < NR / 8; h++) {
            __m256 r[8];
            tm_gemm_load8x8_bf16(r, src + h * 8 * ld, ld, 8, p);
            for (int k = 0; k < 8; k++)
                _mm256_storeu_ps(dst + (p + k) * NR + h * 8, r[k]);
        }
    }
    for (; p < kc; p++)
        for (int j = 0; j < NR; j++)
            dst[p * NR + j] = tm_gemm_bf16_f32(src[j * ld + p]);
}

/* ---------------------------------------------------- AVX-512-BF16 */

/* C (12 x 32) from bf16 pairs (the bf16_pairs layout of gemm_internal.h):
 * per pair step, two vectors of 16 words of B (columns 0-15 and 16-31, each
 * word the pair at depths 2q and 2q+1 of one column), the word of each of
 * the 12 rows of A broadcast, and 24 vdpbf16ps: acc[j] += a(2q) b(2q, j) +
 * a(2q+1) b(2q+1, j) in f32. The same registers, tile and store as the
 * f32 kernel. Selected only when the CPU reports avx512_bf16. Summation
 * order and denormal handling (vdpbf16ps flushes them) differ from the f32
 * path, so its results agree with it to rounding, not bit for bit. */
#define BSTEP(q)                                                                                   \
    do {                                                                                           \
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(bw + (q)*NR));                   \
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(bw + (q)*NR + 16));               \
        __m512bh ax;                                                                               \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 0]);                                     \
        c00 = _mm512_dpbf16_ps(c00, ax, b0);                                                       \
        c01 = _mm512_dpbf16_ps(c01, ax, b1);                                                       \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 1]);                                     \
        c10 = _mm512_dpbf16_ps(c10, ax, b0);                                                       \
        c11 = _mm512_dpbf16_ps(c11, ax, b1);                                                       \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 2]);                                     \
        c20 = _mm512_dpbf16_ps(c20, ax, b0);                                                       \
        c21 = _mm512_dpbf16_ps(c21, ax, b1);                                                       \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 3]);                                     \
        c30 = _mm512_dpbf16_ps(c30, ax, b0);                                                       \
        c31 = _mm512_dpbf16_ps(c31, ax, b1);                                                       \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 4]);                                     \
        c40 = _mm512_dpbf16_ps(c40, ax, b0);                                                       \
        c41 = _mm512_dpbf16_ps(c41, ax, b1);                                                       \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 5]);                                     \
        c50 = _mm512_dpbf16_ps(c50, ax, b0);                                                       \
        c51 = _mm512_dpbf16_ps(c51, ax, b1);                                                       \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 6]);                                     \
        c60 = _mm512_dpbf16_ps(c60, ax, b0);                                                       \
        c61 = _mm512_dpbf16_ps(c61, ax, b1);                                                       \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 7]);                                     \
        c70 = _mm512_dpbf16_ps(c70, ax, b0);                                                       \
        c71 = _mm512_dpbf16_ps(c71, ax, b1);                                                       \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 8]);                                     \
        c80 = _mm512_dpbf16_ps(c80, ax, b0);                                                       \
        c81 = _mm512_dpbf16_ps(c81, ax, b1);                                                       \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 9]);                                     \
        c90 = _mm512_dpbf16_ps(c90, ax, b0);                                                       \
        c91 = _mm512_dpbf16_ps(c91, ax, b1);                                                       \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 10]);                                    \
        c100 = _mm512_dpbf16_ps(c100, ax, b0);                                                     \
        c101 = _mm512_dpbf16_ps(c101, ax, b1);                                                     \
        ax = (__m512bh)_mm512_set1_epi32((int)aw[(q)*MR + 11]);                                    \
        c110 = _mm512_dpbf16_ps(c110, ax, b0);                                                     \
        c111 = _mm512_dpbf16_ps(c111, ax, b1);                                                     \
    } while (0)

__attribute__((target("avx512f,avx512bf16"))) void
tm_gemm_ukr_avx512_bf16(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                        float alpha, float beta, int load_c)
{
    const uint32_t *aw = (const uint32_t *)a, *bw = (const uint32_t *)b;
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps();
    __m512 c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps();
    __m512 c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps();
    __m512 c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
    __m512 c80 = _mm512_setzero_ps(), c81 = _mm512_setzero_ps();
    __m512 c90 = _mm512_setzero_ps(), c91 = _mm512_setzero_ps();
    __m512 c100 = _mm512_setzero_ps(), c101 = _mm512_setzero_ps();
    __m512 c110 = _mm512_setzero_ps(), c111 = _mm512_setzero_ps();
    int64_t pairs = (kc + 1) / 2, q = 0;
    for (; q + 2 <= pairs; q += 2) {
        BSTEP(0);
        BSTEP(1);
        aw += 2 * MR;
        bw += 2 * NR;
    }
    for (; q < pairs; q++) {
        BSTEP(0);
        aw += MR;
        bw += NR;
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    STORE_ROW(0, c00, c01);
    STORE_ROW(1, c10, c11);
    STORE_ROW(2, c20, c21);
    STORE_ROW(3, c30, c31);
    STORE_ROW(4, c40, c41);
    STORE_ROW(5, c50, c51);
    STORE_ROW(6, c60, c61);
    STORE_ROW(7, c70, c71);
    STORE_ROW(8, c80, c81);
    STORE_ROW(9, c90, c91);
    STORE_ROW(10, c100, c101);
    STORE_ROW(11, c110, c111);
}
