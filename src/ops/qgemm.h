/* Inference GEMMs against a weight prepared once: int8 (per output channel
 * symmetric scales, i8 x i8 products summed exactly in i32) and bf16
 * (bf16 weights, f32 activations, f32 sums). Both compute
 *   C (M, N) = A (M, K) W^T, W (N, K) = the weight, one row per output
 * and run on the library's thread pool; results do not depend on the
 * thread count. Internal to the library (src/graph/prepared.c uses it). */
#ifndef TM_OPS_QGEMM_H
#define TM_OPS_QGEMM_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/core.h"

/* Columns per packed panel, and depth per group (a 32-bit lane of VNNI). */
#define TM_QGEMM_NR 16
#define TM_QGEMM_KG 4

/* --------------------------------------------------------------- int8 */

/* Weights quantised per output channel n (a row of W):
 *   scale[n] = max_k |W[n, k]| / 127,  q[n, k] = rint(W[n, k] * (127 / max)),
 * so q is in [-127, 127] (never -128) and W ~ q * scale. A row of zeros has
 * scale 0. Stored in panels of TM_QGEMM_NR columns; inside a panel, groups of
 * TM_QGEMM_KG depths: byte (g, c, j) = q[panel*NR + c, g*KG + j] at
 * q[(panel * kp/KG + g) * NR*KG + c*KG + j]; columns past N and depths past
 * K are 0. */
typedef struct {
    int64_t n, k, kp;   /* kp: K rounded up to TM_QGEMM_KG */
    int64_t panels;     /* ceil(N / NR) */
    int8_t *q;          /* panels * kp * NR bytes */
    float *scale;       /* (panels * NR), 0 past N */
    int32_t *colsum;    /* (panels * NR): sum over k of q (for u8 activations) */
} tm_qweights;

/* Quantises W (N, K) into *w: W row n is w_src[n * ld_n + k * ld_k] (so
 * a (K, N) matrix is quantised per column with ld_n = 1, ld_k = N).
 * Fails with TM_ERR_NOMEM, or TM_ERR_INVALID for a weight that is not
 * finite. */
tm_status tm_qweights_init(tm_qweights *w, const float *w_src, int64_t N, int64_t K,
                           int64_t ld_n, int64_t ld_k);
void tm_qweights_free(tm_qweights *w); /* zeroes it; NULL is harmless */
size_t tm_qweights_bytes(const tm_qweights *w);

/* Per-row symmetric quantisation of activations: for each row r of x (rows,
 * K), row stride ldx,
 *   scale[r] = max |x[r, :]| / 127, q[r, k] = rint(x[r, k] * (127 / max))
 * (round half to even), q's row stride kp (>= K; zero past K). A row of
 * zeros gets scale 0; a row holding a NaN or inf gets q = 0 and scale NaN
 * (its outputs are NaN). */
void tm_quantize_rows_s8(int8_t *q, float *scale, const float *x, int64_t rows, int64_t K,
                         int64_t ldx, int64_t kp);

/* The int8 kernels. Every one computes, for m < M and n < N,
 *   acc = sum_k qa[m, k] * q[n, k]   (exactly, in i32)
 *   C[m * ldc + n] = ((float)acc * sa[m]) * scale[n]
 * so all give bit-identical results. */
typedef enum {
    TM_QKERNEL_SCALAR = 0,  /* plain C */
    TM_QKERNEL_AVX2,        /* i8 widened to i16, vpmaddwd */
    TM_QKERNEL_AVX2UBS,     /* |w| u8 x a*sgn(w) s8 vpmaddubsw, then vpmaddwd */
    TM_QKERNEL_AVXVNNI,     /* u8 x s8 vpdpbusd on ymm (Alder Lake and later) */
    TM_QKERNEL_AVX512VNNI,  /* u8 x s8 vpdpbusd on zmm (Cascade Lake, Zen 4) */
    TM_QKERNEL_COUNT
} tm_qkernel;

const char *tm_qkernel_name(tm_qkernel k);
/* Whether this CPU (and the ISA in force, tm_cpu_isa()) can run k. */
int tm_qkernel_available(tm_qkernel k);
/* The fastest available kernel, or the one TRIMODAL_QKERNEL names
 * (tm_qkernel_name) where it is available. */
tm_qkernel tm_qkernel_best(void);

/* Scratch bytes tm_qgemm needs for M rows of depth K. */
size_t tm_qgemm_work_bytes(int64_t M, int64_t K);

/* C (M, ldc) = quantise_rows(A (M, lda)) x w^T with the best kernel;
 * work: tm_qgemm_work_bytes(M, w->k) bytes, 64-byte aligned. */
void tm_qgemm(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M, const tm_qweights *w,
              void *work);

/* The kernel step alone, on activations already quantised by
 * tm_quantize_rows_s8 with row stride w->kp (qa (M, kp), sa (M)), with a
 * given kernel (it must be available). */
void tm_qgemm_s8(tm_qkernel k, float *C, int64_t ldc, const int8_t *qa, const float *sa,
                 int64_t M, const tm_qweights *w);

/* --------------------------------------------------------------- bf16 */

/* W rounded to bf16 (nearest even), in panels of TM_QGEMM_NR columns,
 * k-major: element (k, c) of panel p at h[(p * K + k) * NR + c]; columns
 * past N are 0. */
typedef struct {
    int64_t n, k, panels;
    uint16_t *h;
} tm_bweights;

tm_status tm_bweights_init(tm_bweights *w, const float *w_src, int64_t N, int64_t K, int64_t ld_n,
                           int64_t ld_k);
void tm_bweights_free(tm_bweights *w);
size_t tm_bweights_bytes(const tm_bweights *w);

/* C (M, ldc) = A (M, lda) x bf16(W)^T: products of f32 activations and
 * widened bf16 weights summed in f32 in k order (the AVX2 kernel with FMA,
 * the plain C one may round each product: they agree to rounding).
 * scalar != 0 forces the plain C kernel. */
void tm_bgemm(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M, const tm_bweights *w,
              int scalar);

/* ------------------------------------------- kernels in the ISA files */

/* Rows [m0, m1) and panels [p0, p1) of C. */
void tm_qgemm_block_avx2(float *C, int64_t ldc, const int8_t *qa, const float *sa, int64_t m0,
                         int64_t m1, const tm_qweights *w, int64_t p0, int64_t p1);
void tm_qgemm_block_avx2ubs(float *C, int64_t ldc, const int8_t *qa, const float *sa, int64_t m0,
                            int64_t m1, const tm_qweights *w, int64_t p0, int64_t p1);
void tm_qgemm_block_avxvnni(float *C, int64_t ldc, const int8_t *qa, const float *sa, int64_t m0,
                            int64_t m1, const tm_qweights *w, int64_t p0, int64_t p1);
void tm_qgemm_block_avx512vnni(float *C, int64_t ldc, const int8_t *qa, const float *sa,
                               int64_t m0, int64_t m1, const tm_qweights *w, int64_t p0,
                               int64_t p1);
void tm_quantize_rows_s8_avx2(int8_t *q, float *scale, const float *x, int64_t rows, int64_t K,
                              int64_t ldx, int64_t kp);
void tm_bgemm_block_avx2(float *C, int64_t ldc, const float *A, int64_t lda, int64_t m0, int64_t m1,
                         const tm_bweights *w, int64_t p0, int64_t p1);

/* Stores the first n (<= 16) values of a panel row: C[j] = ((float)acc[j] *
 * sa) * scale[j]; shared by every kernel so the epilogue is the same. */
static inline void tm_qgemm_store(float *C, const int32_t *acc, float sa, const float *scale,
                                  int64_t n)
{
    for (int64_t j = 0; j < n; j++) C[j] = ((float)acc[j] * sa) * scale[j];
}

#endif
