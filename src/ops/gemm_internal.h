/* Internals of the f32 GEMM shared by gemm.c and its SIMD microkernels.
 *
 * The driver (gemm.c) packs op(A) into panels of MR rows and op(B) into
 * panels of NR columns, both k-major, and calls a microkernel for every
 * MR x NR tile of C. The microkernel only ever sees full tiles; the driver
 * sends edge tiles through a small scratch tile, so a given element of C is
 * computed by the same instructions wherever its tile sits. That, with a K
 * blocking that depends only on K and the ISA, makes the result independent
 * of how C is split into tasks, hence of the thread count. */
#ifndef TM_OPS_GEMM_INTERNAL_H
#define TM_OPS_GEMM_INTERNAL_H

#include <stdint.h>

/* One MR x NR tile:
 *   acc[i][j] = sum over p = 0..kc-1, in that order, of a[p*MR + i] * b[p*NR + j]
 *   c[i*ldc + j] = load_c ? alpha * acc + beta * c : alpha * acc
 * a: packed A panel (kc, MR); b: packed B panel (kc, NR), 64-byte aligned;
 * c: the tile of C, row stride ldc. kc >= 1. When load_c is 0, c is only
 * written (it may hold NaN). */
typedef void (*tm_gemm_ukr_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                               float alpha, float beta, int load_c);

/* Packs one full panel of w (the kernel's mr or nr) along x from a source
 * whose w rows are each contiguous along the depth: element (p, x) at
 * src[x*ld + p], to dst[p*w + x] for p < kc (a transpose; see gemm.c). */
typedef void (*tm_gemm_pack_fn)(float *dst, const float *src, int64_t ld, int64_t kc);

/* A microkernel with the blocking it was tuned for (in elements):
 * kc: depth of a packed block; mc: rows of A packed at once (multiple of
 * mr, kept in L2); nc: columns of B packed at once (multiple of nr). */
typedef struct {
    tm_gemm_ukr_fn ukr;
    tm_gemm_pack_fn pack_at, pack_bt; /* op(A) = A and op(B) = B^T panels, or NULL */
    int mr, nr;
    int kc, mc, nc;
    const char *name;
} tm_gemm_kernel;

/* The largest tile of any kernel, for the driver's scratch tile. */
#define TM_GEMM_MAX_MR 16
#define TM_GEMM_MAX_NR 32

/* Compiled with -mavx2 -mfma: call only when tm_cpu_isa() >= TM_ISA_AVX2. */
#define TM_GEMM_AVX2_MR 6
#define TM_GEMM_AVX2_NR 16
void tm_gemm_ukr_avx2(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                      float alpha, float beta, int load_c);
void tm_gemm_pack_at_avx2(float *dst, const float *src, int64_t ld, int64_t kc); /* w = MR */
void tm_gemm_pack_bt_avx2(float *dst, const float *src, int64_t ld, int64_t kc); /* w = NR */

/* Compiled with -mavx512f...: call only when tm_cpu_isa() == TM_ISA_AVX512. */
#define TM_GEMM_AVX512_MR 12
#define TM_GEMM_AVX512_NR 32
void tm_gemm_ukr_avx512(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                        float alpha, float beta, int load_c);
void tm_gemm_pack_at_avx512(float *dst, const float *src, int64_t ld, int64_t kc);
void tm_gemm_pack_bt_avx512(float *dst, const float *src, int64_t ld, int64_t kc);

#if defined(__AVX2__)
#include <immintrin.h>

/* In-register transpose of 8 rows of 8 floats: afterwards r[k] holds what
 * was column k. For the SIMD packing routines of the AVX2 and AVX-512
 * files (both compiled with AVX2 enabled). */
static inline void tm_gemm_transpose8(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Transposes rows [0, n) (n <= 8) of src (stride ld) at depth [p, p+8)
 * into r[0..7]; rows n..7 are zero. */
static inline void tm_gemm_load8x8(__m256 r[8], const float *src, int64_t ld, int n, int64_t p)
{
    for (int i = 0; i < 8; i++)
        r[i] = i < n ? _mm256_loadu_ps(src + i * ld + p) : _mm256_setzero_ps();
    tm_gemm_transpose8(r);
}
#endif

/* The kernel tm_sgemm uses for an ISA (the plain C one for TM_ISA_SCALAR). */
const tm_gemm_kernel *tm_gemm_kernel_for(int isa);

#endif
