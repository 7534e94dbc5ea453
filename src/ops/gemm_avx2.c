/* The AVX2 + FMA GEMM microkernel: a 6 x 16 tile of C held in 12 ymm
 * accumulators. Each step of k loads one row of the packed B panel (two
 * vectors), broadcasts the 6 values of the packed A panel and issues 12
 * FMAs, which keeps both FMA pipes of a Haswell or Zen core busy while the
 * 4-cycle FMA latency is hidden by the 12 independent chains. Compiled
 * with -mavx2 -mfma; reached only through gemm.c's run-time dispatch. */
#include <immintrin.h>

#include "ops/gemm_internal.h"

#define MR TM_GEMM_AVX2_MR
#define NR TM_GEMM_AVX2_NR

/* One k step at offset p (in steps) from the current a and b pointers. */
#define STEP(p)                                                                                    \
    do {                                                                                           \
        __m256 b0 = _mm256_load_ps(b + (p)*NR);                                                    \
        __m256 b1 = _mm256_load_ps(b + (p)*NR + 8);                                                \
        __m256 ax = _mm256_broadcast_ss(a + (p)*MR + 0);                                           \
        c00 = _mm256_fmadd_ps(ax, b0, c00);                                                        \
        c01 = _mm256_fmadd_ps(ax, b1, c01);                                                        \
        ax = _mm256_broadcast_ss(a + (p)*MR + 1);                                                  \
        c10 = _mm256_fmadd_ps(ax, b0, c10);                                                        \
        c11 = _mm256_fmadd_ps(ax, b1, c11);                                                        \
        ax = _mm256_broadcast_ss(a + (p)*MR + 2);                                                  \
        c20 = _mm256_fmadd_ps(ax, b0, c20);                                                        \
        c21 = _mm256_fmadd_ps(ax, b1, c21);                                                        \
        ax = _mm256_broadcast_ss(a + (p)*MR + 3);                                                  \
        c30 = _mm256_fmadd_ps(ax, b0, c30);                                                        \
        c31 = _mm256_fmadd_ps(ax, b1, c31);                                                        \
        ax = _mm256_broadcast_ss(a + (p)*MR + 4);                                                  \
        c40 = _mm256_fmadd_ps(ax, b0, c40);                                                        \
        c41 = _mm256_fmadd_ps(ax, b1, c41);                                                        \
        ax = _mm256_broadcast_ss(a + (p)*MR + 5);                                                  \
        c50 = _mm256_fmadd_ps(ax, b0, c50);                                                        \
        c51 = _mm256_fmadd_ps(ax, b1, c51);                                                        \
    } while (0)

/* Writes one row of the tile: alpha*acc (+ beta*c). */
#define STORE_ROW(r, lo, hi)                                                                       \
    do {                                                                                           \
        float *cr = c + (r)*ldc;                                                                   \
        if (load_c) {                                                                              \
            _mm256_storeu_ps(cr, _mm256_fmadd_ps(va, lo, _mm256_mul_ps(vb, _mm256_loadu_ps(cr)))); \
            _mm256_storeu_ps(cr + 8,                                                               \
                             _mm256_fmadd_ps(va, hi, _mm256_mul_ps(vb, _mm256_loadu_ps(cr + 8)))); \
        } else {                                                                                   \
            _mm256_storeu_ps(cr, _mm256_mul_ps(va, lo));                                           \
            _mm256_storeu_ps(cr + 8, _mm256_mul_ps(va, hi));                                       \
        }                                                                                          \
    } while (0)

void tm_gemm_ukr_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                      float alpha, float beta, int load_c)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();

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

    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    STORE_ROW(0, c00, c01);
    STORE_ROW(1, c10, c11);
    STORE_ROW(2, c20, c21);
    STORE_ROW(3, c30, c31);
    STORE_ROW(4, c40, c41);
    STORE_ROW(5, c50, c51);
}

/* op(A) = A: 6 rows of A, each contiguous along k, become k-major groups of
 * 6. Per block of 8 k: one 8x8 transpose (2 rows zero) and 8 stores, each
 * store overlapping the next group by 2 floats that the next one rewrites;
 * the last is split so that nothing past the block is touched. */
void tm_gemm_pack_at_avx2(float *dst, const float *src, int64_t ld, int64_t kc)
{
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        __m256 r[8];
        tm_gemm_load8x8(r, src, ld, MR, p);
        float *d = dst + p * MR;
        for (int k = 0; k < 7; k++)
            _mm256_storeu_ps(d + k * MR, r[k]);
        _mm_storeu_ps(d + 7 * MR, _mm256_castps256_ps128(r[7]));
        _mm_storel_pi((__m64 *)(d + 7 * MR + 4), _mm256_extractf128_ps(r[7], 1));
    }
    for (; p < kc; p++)
        for (int i = 0; i < MR; i++)
            dst[p * MR + i] = src[i * ld + p];
}

/* op(B) = B^T: 16 rows of B, each contiguous along k, become k-major
 * groups of 16: two 8x8 transposes per block of 8 k. */
void tm_gemm_pack_bt_avx2(float *dst, const float *src, int64_t ld, int64_t kc)
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

/* The first m < MR rows of a tile (see tm_gemm_ukr_rows_fn): for each row
 * the same FMA chain and the same store as the full kernel, so the bits
 * match. Instantiated for m = 1..MR-1 below, each with its accumulators in
 * registers. */
static inline __attribute__((always_inline)) void ukr_rows(const int m, int64_t kc, const float *a,
                                                           const float *b, float *c, int64_t ldc,
                                                           float alpha, float beta, int load_c)
{
    __m256 lo[MR], hi[MR];
#pragma GCC unroll 8
    for (int i = 0; i < m; i++)
        lo[i] = hi[i] = _mm256_setzero_ps();
    for (int64_t p = 0; p < kc; p++, a += MR, b += NR) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 8
        for (int i = 0; i < m; i++) {
            __m256 ax = _mm256_broadcast_ss(a + i);
            lo[i] = _mm256_fmadd_ps(ax, b0, lo[i]);
            hi[i] = _mm256_fmadd_ps(ax, b1, hi[i]);
        }
    }
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 8
    for (int i = 0; i < m; i++)
        STORE_ROW(i, lo[i], hi[i]);
}

void tm_gemm_ukr_rows_avx2(int64_t m, int64_t kc, const float *a, const float *b, float *c,
                           int64_t ldc, float alpha, float beta, int load_c)
{
    switch (m) {
    case 1: ukr_rows(1, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 2: ukr_rows(2, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 3: ukr_rows(3, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 4: ukr_rows(4, kc, a, b, c, ldc, alpha, beta, load_c); break;
    case 5: ukr_rows(5, kc, a, b, c, ldc, alpha, beta, load_c); break;
    default: tm_gemm_ukr_avx2(kc, a, b, c, ldc, alpha, beta, load_c); break;
    }
}

/* tm_gemm_pack_at_avx2 and tm_gemm_pack_bt_avx2 from bf16 sources. */
void tm_gemm_pack_at16_avx2(float *dst, const uint16_t *src, int64_t ld, int64_t kc)
{
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        __m256 r[8];
        tm_gemm_load8x8_bf16(r, src, ld, MR, p);
        float *d = dst + p * MR;
        for (int k = 0; k < 7; k++)
            _mm256_storeu_ps(d + k * MR, r[k]);
        _mm_storeu_ps(d + 7 * MR, _mm256_castps256_ps128(r[7]));
        _mm_storel_pi((__m64 *)(d + 7 * MR + 4), _mm256_extractf128_ps(r[7], 1));
    }
    for (; p < kc; p++)
        for (int i = 0; i < MR; i++)
            dst[p * MR + i] = tm_gemm_bf16_f32(src[i * ld + p]);
}

void tm_gemm_pack_bt16_avx2(float *dst, const uint16_t *src, int64_t ld, int64_t kc)
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
