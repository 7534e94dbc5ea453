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
#include <string.h>

/* A bf16 value as f32 (exact: a bf16 is the top half of an f32). */
static inline float tm_gemm_bf16_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* One MR x NR tile:
 *   acc[i][j] = sum over p = 0..kc-1, in that order, of a[p*MR + i] * b[p*NR + j]
 *   c[i*ldc + j] = load_c ? alpha * acc + beta * c : alpha * acc
 * a: packed A panel (kc, MR); b: packed B panel (kc, NR), 64-byte aligned;
 * c: the tile of C, row stride ldc. kc >= 1. When load_c is 0, c is only
 * written (it may hold NaN). */
typedef void (*tm_gemm_ukr_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                               float alpha, float beta, int load_c);

/* The same for the first m < mr rows of a tile only (the packed A panel
 * still has mr rows; rows m.. are neither read nor written): every element
 * it computes has the very bits the full-tile kernel gives it, so the
 * driver may use either. */
typedef void (*tm_gemm_ukr_rows_fn)(int64_t m, int64_t kc, const float *a, const float *b,
                                    float *c, int64_t ldc, float alpha, float beta, int load_c);

/* Packs one full panel of w (the kernel's mr or nr) along x from a source
 * whose w rows are each contiguous along the depth: element (p, x) at
 * src[x*ld + p], to dst[p*w + x] for p < kc (a transpose; see gemm.c). */
typedef void (*tm_gemm_pack_fn)(float *dst, const float *src, int64_t ld, int64_t kc);
/* The same from bf16 (uint16_t) sources, converting to f32. */
typedef void (*tm_gemm_pack16_fn)(float *dst, const uint16_t *src, int64_t ld, int64_t kc);

/* A microkernel with the blocking it was tuned for (in elements):
 * kc: depth of a packed block; mc: rows of A packed at once (multiple of
 * mr, kept in L2); nc: columns of B packed at once (multiple of nr).
 *
 * bf16_pairs: the kernel multiplies bf16 pairs itself (vdpbf16ps): its
 * packed panels hold, instead of floats, 32-bit words of two bf16 values
 * at depths 2q and 2q+1 (the low half the even one; 0 past the depth),
 * word (q, x) at [q*w + x] of a panel that still spans w*kc floats; such
 * a kernel only takes bf16 sources. */
typedef struct {
    tm_gemm_ukr_fn ukr;
    tm_gemm_ukr_rows_fn ukr_rows;         /* or NULL: edge rows go through a scratch tile */
    tm_gemm_pack_fn pack_at, pack_bt;     /* op(A) = A and op(B) = B^T panels, or NULL */
    tm_gemm_pack16_fn pack_at16, pack_bt16; /* the same from bf16, or NULL */
    int mr, nr;
    int kc, mc, nc;
    int bf16_pairs;
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
void tm_gemm_ukr_rows_avx2(int64_t m, int64_t kc, const float *a, const float *b, float *c,
                           int64_t ldc, float alpha, float beta, int load_c);
void tm_gemm_pack_at_avx2(float *dst, const float *src, int64_t ld, int64_t kc); /* w = MR */
void tm_gemm_pack_bt_avx2(float *dst, const float *src, int64_t ld, int64_t kc); /* w = NR */
void tm_gemm_pack_at16_avx2(float *dst, const uint16_t *src, int64_t ld, int64_t kc);
void tm_gemm_pack_bt16_avx2(float *dst, const uint16_t *src, int64_t ld, int64_t kc);

/* Compiled with -mavx512f...: call only when tm_cpu_isa() == TM_ISA_AVX512. */
#define TM_GEMM_AVX512_MR 12
#define TM_GEMM_AVX512_NR 32
void tm_gemm_ukr_avx512(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                        float alpha, float beta, int load_c);
void tm_gemm_ukr_rows_avx512(int64_t m, int64_t kc, const float *a, const float *b, float *c,
                             int64_t ldc, float alpha, float beta, int load_c);
void tm_gemm_pack_at_avx512(float *dst, const float *src, int64_t ld, int64_t kc);
void tm_gemm_pack_bt_avx512(float *dst, const float *src, int64_t ld, int64_t kc);
void tm_gemm_pack_at16_avx512(float *dst, const uint16_t *src, int64_t ld, int64_t kc);
void tm_gemm_pack_bt16_avx512(float *dst, const uint16_t *src, int64_t ld, int64_t kc);

/* The AVX-512-BF16 kernel (bf16_pairs, vdpbf16ps), 12 x 32; compiled with a
 * target attribute in gemm_avx512.c: call only when tm_cpu_has_avx512bf16(). */
void tm_gemm_ukr_avx512_bf16(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                             float alpha, float beta, int load_c);

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

/* Eight bf16 values as eight floats (exact: a bf16 is the top half of an f32). */
static inline __m256 tm_gemm_bf16x8(const uint16_t *p)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/* tm_gemm_load8x8 from bf16 rows. */
static inline void tm_gemm_load8x8_bf16(__m256 r[8], const uint16_t *src, int64_t ld, int n,
                                        int64_t p)
{
    for (int i = 0; i < 8; i++)
        r[i] = i < n ? tm_gemm_bf16x8(src + i * ld + p) : _mm256_setzero_ps();
    tm_gemm_transpose8(r);
}
#endif

/* The bf16 kernel tm_gemm_bf16 uses: AVX-512-BF16 when the CPU has it (and
 * the ISA in force is AVX-512), else the f32 kernel of the ISA, fed by
 * packing routines that convert bf16 to f32. */
const tm_gemm_kernel *tm_gemm_kernel_bf16(void);

/* A plain C kernel with the bf16_pairs layout that does, in f32, what
 * vdpbf16ps does (per pair: the odd product, then the even one, each added
 * with one rounding): the packing and driver of the AVX-512-BF16 path,
 * checked on any machine (tests/ops/test_gemm_bf16.c). */
extern const tm_gemm_kernel tm_gemm_kernel_bf16_pairs_c;

/* tm_gemm_bf16 with a given kernel (one with bf16_pairs, or any f32 kernel
 * with pack_*16 or NULL ones: the plain C converting packers stand in). */
void tm_gemm_bf16_with(const tm_gemm_kernel *k, int trans_a, int trans_b, int64_t M, int64_t N,
                       int64_t K, float alpha, const uint16_t *A, int64_t lda, const uint16_t *B,
                       int64_t ldb, float beta, float *C, int64_t ldc);

/* The kernel tm_sgemm uses for an ISA (the plain C one for TM_ISA_SCALAR). */
const tm_gemm_kernel *tm_gemm_kernel_for(int isa);

#endif
