/*
 * f32 GEMM: C = alpha * op(A) op(B) + beta * C, row-major (see ops.h).
 *
 * The Goto/BLIS structure. A task owns a block of rows and columns of C
 * and, for each column chunk of at most nc and each K block of depth kb,
 * packs op(B) into panels of nr columns (k-major, 64-byte aligned, kept in
 * L3), then for each chunk of mc rows packs op(A) into panels of mr rows
 * (kept in L2) and runs the microkernel over the mr x nr tiles, the B panel
 * staying in L1 while the A panels stream past it. When every task would
 * pack the same B (one matrix, or B shared by a batch, cut into several
 * row blocks), B is packed once by all threads first and shared.
 *
 * Tasks: about four per thread, so that a core busy with something else
 * does not hold back the others (the pool hands tasks out dynamically),
 * but fewer when that would make blocks so thin that re-reading A and B
 * from memory costs more than it balances (dW = dY^T X shapes).
 *
 * Why the result does not depend on the thread count: the K blocks depend
 * only on K and the kernel; inside a block every element is one fixed-order
 * FMA chain in the microkernel; blocks are folded into C in order (the
 * first applies beta, the others add); and edge tiles go through a scratch
 * tile so that they run the very same microkernel. How C is cut into tasks,
 * and whether B is shared, therefore changes nothing but speed.
 *
 * Pre-packed B (tm_sgemm_pack_b): the shared B of above, packed once by
 * the caller and kept, so inference with fixed weights skips that pass on
 * every call; the same kernel, blocking and bits as tm_sgemm.
 *
 * bf16 (tm_gemm_bf16): the same driver reading bf16 sources. Where the CPU
 * multiplies bf16 itself (AVX-512-BF16) the panels hold bf16 pairs for its
 * kernel; elsewhere the packing converts to f32 and the f32 kernel runs,
 * which gives exactly tm_sgemm's result on the inputs widened to f32.
 *
 * Rounded operands (tm_sgemm_batched_prec, ops/precision.h): the f32
 * driver with every packed panel rounded to bf16 (or f16) in place right
 * after it is packed, while it is in L1/L2: bitwise tm_sgemm of operands
 * rounded beforehand, without that pass or its buffer. The graph's bf16
 * matmuls use it where the CPU has no AVX-512-BF16.
 *
 * Edge rows: a tile with fewer than mr rows left runs the kernel's rows
 * variant when it has one (only the rows that exist; the same bits), so a
 * small M (a few tokens at inference) does not pay for mr rows.
 *
 * Scratch: one tm_alloc per task (and one for a shared B) per call. After
 * the first call glibc serves them from its free lists without system
 * calls or page faults (about 0.1 us each, against tens of microseconds
 * for the smallest GEMM worth threading), so nothing is kept between calls
 * and nothing can leak. If an allocation fails, the task falls back to
 * stack buffers of one panel each: slower, same bits.
 */
#include <stdalign.h>
#include <string.h>

#include "ops/gemm_internal.h"
#include "ops/precision.h"
#include "trimodal/ops.h"

/* ------------------------------------------------------------ reference */

void tm_sgemm_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                  int64_t ldc)
{
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            float acc = 0.0f;
            if (alpha != 0.0f) {
                for (int64_t p = 0; p < K; p++) {
                    float a = trans_a ? A[p * lda + i] : A[i * lda + p];
                    float b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
                    acc += a * b;
                }
            }
            float *c = &C[i * ldc + j];
            *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
        }
    }
}

/* ------------------------------------------------- plain C microkernel */

#define SCALAR_MR 4
#define SCALAR_NR 16

/* Written so that the compiler can keep the 4 x 16 accumulators in vector
 * registers of whatever baseline the library is built for (SSE2 on x86-64). */
static void ukr_scalar(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                       float alpha, float beta, int load_c)
{
    float acc[SCALAR_MR][SCALAR_NR] = {{0}};
    for (int64_t p = 0; p < kc; p++) {
        const float *ap = a + p * SCALAR_MR, *bp = b + p * SCALAR_NR;
        for (int i = 0; i < SCALAR_MR; i++)
            for (int j = 0; j < SCALAR_NR; j++)
                acc[i][j] += ap[i] * bp[j];
    }
    for (int i = 0; i < SCALAR_MR; i++) {
        float *cr = c + i * ldc;
        if (load_c)
            for (int j = 0; j < SCALAR_NR; j++)
                cr[j] = alpha * acc[i][j] + beta * cr[j];
        else
            for (int j = 0; j < SCALAR_NR; j++)
                cr[j] = alpha * acc[i][j];
    }
}

/* ------------------------------------------------------------- kernels */

/* Blocking: kc = 256 keeps one B micro-panel (kc x nr: 16 KB for AVX2,
 * 32 KB for AVX-512) in L1 while the A panels of an mc x kc block (144 KB,
 * 192 KB) stream from L2; a kc x nc block of B (2 MB) sits in L3. Measured
 * on Zen 3: kc 192-384 and mc 72-240 are all within noise of this. kc also
 * fixes the K blocking, hence the rounding: changing it changes results in
 * the last bits (never their dependence on the thread count). */
#define KC_MAX 256 /* the largest kc of any kernel: bounds the stack fallback */

static const tm_gemm_kernel kernel_scalar = {
    .ukr = ukr_scalar,
    .mr = SCALAR_MR,
    .nr = SCALAR_NR,
    .kc = 256,
    .mc = 64,
    .nc = 1024,
    .name = "scalar 4x16",
};
static const tm_gemm_kernel kernel_avx2 = {
    .ukr = tm_gemm_ukr_avx2,
    .ukr_rows = tm_gemm_ukr_rows_avx2,
    .pack_at = tm_gemm_pack_at_avx2,
    .pack_bt = tm_gemm_pack_bt_avx2,
    .pack_at16 = tm_gemm_pack_at16_avx2,
    .pack_bt16 = tm_gemm_pack_bt16_avx2,
    .mr = TM_GEMM_AVX2_MR,
    .nr = TM_GEMM_AVX2_NR,
    .kc = 256,
    .mc = 144,
    .nc = 2048,
    .name = "avx2 6x16",
};
static const tm_gemm_kernel kernel_avx512 = {
    .ukr = tm_gemm_ukr_avx512,
    .ukr_rows = tm_gemm_ukr_rows_avx512,
    .pack_at = tm_gemm_pack_at_avx512,
    .pack_bt = tm_gemm_pack_bt_avx512,
    .pack_at16 = tm_gemm_pack_at16_avx512,
    .pack_bt16 = tm_gemm_pack_bt16_avx512,
    .mr = TM_GEMM_AVX512_MR,
    .nr = TM_GEMM_AVX512_NR,
    .kc = 256,
    .mc = 192,
    .nc = 2048,
    .name = "avx512 12x32",
};

/* vdpbf16ps on the f32 kernel's 12 x 32 tile; its packing is plain C (a
 * cost next to the multiply that the f32 path's SIMD transposes avoid;
 * not yet timed on an AVX-512-BF16 machine). */
static const tm_gemm_kernel kernel_avx512_bf16 = {
    .ukr = tm_gemm_ukr_avx512_bf16,
    .mr = TM_GEMM_AVX512_MR,
    .nr = TM_GEMM_AVX512_NR,
    .kc = 256,
    .mc = 192,
    .nc = 2048,
    .bf16_pairs = 1,
    .name = "avx512-bf16 12x32",
};

const tm_gemm_kernel *tm_gemm_kernel_for(int isa)
{
    if (isa >= TM_ISA_AVX512) return &kernel_avx512;
    if (isa == TM_ISA_AVX2) return &kernel_avx2;
    return &kernel_scalar;
}

const tm_gemm_kernel *tm_gemm_kernel_bf16(void)
{
    if (tm_cpu_has_avx512bf16()) return &kernel_avx512_bf16;
    return tm_gemm_kernel_for(tm_cpu_isa());
}

/* The pairs kernel in plain C (see gemm_internal.h): what vdpbf16ps does,
 * lane by lane: acc += a(2q+1) b(2q+1), then acc += a(2q) b(2q), each
 * product exact in f32 (8-bit significands) and each sum rounded once. */
static void ukr_pairs_c(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                        float alpha, float beta, int load_c)
{
    const uint32_t *aw = (const uint32_t *)a, *bw = (const uint32_t *)b;
    float acc[SCALAR_MR][SCALAR_NR] = {{0}};
    for (int64_t q = 0; q < (kc + 1) / 2; q++)
        for (int i = 0; i < SCALAR_MR; i++) {
            uint32_t x = aw[q * SCALAR_MR + i];
            float a0 = tm_gemm_bf16_f32((uint16_t)x), a1 = tm_gemm_bf16_f32((uint16_t)(x >> 16));
            for (int j = 0; j < SCALAR_NR; j++) {
                uint32_t y = bw[q * SCALAR_NR + j];
                float b0 = tm_gemm_bf16_f32((uint16_t)y);
                float b1 = tm_gemm_bf16_f32((uint16_t)(y >> 16));
                volatile float p1 = a1 * b1, p0 = a0 * b0; /* no contraction into FMAs */
                acc[i][j] += p1;
                acc[i][j] += p0;
            }
        }
    for (int i = 0; i < SCALAR_MR; i++)
        for (int j = 0; j < SCALAR_NR; j++)
            c[i * ldc + j] = load_c ? alpha * acc[i][j] + beta * c[i * ldc + j] : alpha * acc[i][j];
}

const tm_gemm_kernel tm_gemm_kernel_bf16_pairs_c = {
    .ukr = ukr_pairs_c,
    .mr = SCALAR_MR,
    .nr = SCALAR_NR,
    .kc = 256,
    .mc = 64,
    .nc = 1024,
    .bf16_pairs = 1,
    .name = "bf16 pairs, plain C",
};

/* -------------------------------------------------------------- packing */

/* The problem of one batch entry: f32 sources, or bf16 ones (a16, b16). */
typedef struct {
    const float *a, *b;
    const uint16_t *a16, *b16;
    float *c;
    int64_t lda, ldb, ldc;
    int ta, tb;
    int bf16;
} gemm_mats;

/* Packing into panels of w (mr or nr) along the "wide" dimension x (rows of
 * op(A), columns of op(B)) and kc along the depth p: panel q holds element
 * (p, q*w + j) at [q*w*kc + p*w + j]; x past the end is zero. Two layouts
 * of the source: the depth-major one, where each p is a contiguous run of
 * x (op(A) = A^T, op(B) = B), is a copy; the x-major one, where each x is
 * a contiguous run of p (op(A) = A, op(B) = B^T), is a transpose. */

#define PREFETCH_ROWS 4

/* Element i of a source: f32, or bf16 widened (exactly) to f32. `bf16` is
 * a constant wherever these are inlined, so each copy loop is specialised. */
static inline __attribute__((always_inline)) float src_at(const void *src, int64_t i,
                                                          const int bf16)
{
    return bf16 ? tm_gemm_bf16_f32(((const uint16_t *)src)[i]) : ((const float *)src)[i];
}

static inline __attribute__((always_inline)) const void *src_add(const void *src, int64_t i,
                                                                const int bf16)
{
    if (bf16) return (const uint16_t *)src + i;
    return (const float *)src + i;
}

/* Depth-major source: element (p, x) at src[p*ld + x]. Walks src row by
 * row, one stream the prefetcher follows, scattering w-float pieces. */
static inline __attribute__((always_inline)) void pack_copy_w(float *restrict dst, const void *src,
                                                              int64_t ld, int64_t width, int64_t kc,
                                                              const int w, const int bf16)
{
    int64_t full = width / w * w, rest = width - full;
    for (int64_t p = 0; p < kc; p++) {
        const void *s = src_add(src, p * ld, bf16);
        float *restrict d = dst + p * w;
        /* rows are far apart (ld): fetch a few rows ahead, or every row
         * starts with a cache miss that the hardware does not foresee */
        if (p + PREFETCH_ROWS < kc)
            for (int64_t x = 0; x < width; x += 16)
                __builtin_prefetch(src_add(s, PREFETCH_ROWS * ld + x, bf16));
        for (int64_t x = 0; x < full; x += w, d += w * kc)
#pragma GCC unroll 32
            for (int j = 0; j < w; j++)
                d[j] = src_at(s, x + j, bf16);
        if (rest) {
            int j = 0;
            for (; j < rest; j++)
                d[j] = src_at(s, full + j, bf16);
            for (; j < w; j++)
                d[j] = 0.0f;
        }
    }
}

/* x-major source: element (p, x) at src[x*ld + p]. Full panels go to the
 * kernel's SIMD transpose when it has one for the source type. */
static inline __attribute__((always_inline)) void
pack_trans_w(float *restrict dst, const void *src, int64_t ld, int64_t width, int64_t kc,
             const int w, const int bf16, tm_gemm_pack_fn simd, tm_gemm_pack16_fn simd16)
{
    for (int64_t x = 0; x < width; x += w, dst += w * kc, src = src_add(src, w * ld, bf16)) {
        int64_t n = width - x < w ? width - x : w;
        if (n == w && !bf16 && simd) {
            simd(dst, src, ld, kc);
            continue;
        }
        if (n == w && bf16 && simd16) {
            simd16(dst, src, ld, kc);
            continue;
        }
        /* blocks of 8 p, so that each source line is used while it is hot */
        for (int64_t p = 0; p < kc; p += 8) {
            int64_t pe = p + 8 < kc ? p + 8 : kc;
            for (int64_t j = 0; j < n; j++)
                for (int64_t pp = p; pp < pe; pp++)
                    dst[pp * w + j] = src_at(src, j * ld + pp, bf16);
            for (int64_t j = n; j < w; j++)
                for (int64_t pp = p; pp < pe; pp++)
                    dst[pp * w + j] = 0.0f;
        }
    }
}

/* The bf16_pairs layout (gemm_internal.h) from a bf16 source, depth-major
 * (element (p, x) at src[p*ld + x]) or not (at src[x*ld + p]): plain C. */
static void pack_pairs(float *dst, const uint16_t *src, int64_t ld, int depth_major, int64_t width,
                       int64_t kc, int w)
{
    for (int64_t x0 = 0; x0 < width; x0 += w, dst += w * kc) {
        uint32_t *d = (uint32_t *)dst;
        for (int64_t q = 0; q < (kc + 1) / 2; q++)
            for (int j = 0; j < w; j++) {
                int64_t x = x0 + j, p = 2 * q;
                uint32_t lo = 0, hi = 0;
                if (x < width) {
                    lo = depth_major ? src[p * ld + x] : src[x * ld + p];
                    if (p + 1 < kc) hi = depth_major ? src[(p + 1) * ld + x] : src[x * ld + p + 1];
                }
                d[q * w + j] = lo | hi << 16;
            }
    }
}

/* Rows [i0, i0+mc) x depth [p0, p0+kc) of op(A), in panels of mr rows.
 * Dispatches on mr (and the source type) so that each copy loop is
 * unrolled for its width. */
static void pack_a(float *dst, const gemm_mats *m, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                   const tm_gemm_kernel *k)
{
    if (k->bf16_pairs) {
        const uint16_t *s = m->ta ? m->a16 + p0 * m->lda + i0 : m->a16 + i0 * m->lda + p0;
        pack_pairs(dst, s, m->lda, m->ta, mc, kc, k->mr);
        return;
    }
#define PACK_A(W, BF, SRC)                                                                         \
    (m->ta ? pack_copy_w(dst, SRC + p0 * m->lda + i0, m->lda, mc, kc, W, BF)                       \
           : pack_trans_w(dst, SRC + i0 * m->lda + p0, m->lda, mc, kc, W, BF, k->pack_at,          \
                          k->pack_at16))
#define PACK_A_ANY(W) (m->bf16 ? PACK_A(W, 1, m->a16) : PACK_A(W, 0, m->a))
    switch (k->mr) {
    case SCALAR_MR: PACK_A_ANY(SCALAR_MR); break;
    case TM_GEMM_AVX2_MR: PACK_A_ANY(TM_GEMM_AVX2_MR); break;
    case TM_GEMM_AVX512_MR: PACK_A_ANY(TM_GEMM_AVX512_MR); break;
    default: TM_ASSERT(!"unknown gemm mr");
    }
#undef PACK_A_ANY
#undef PACK_A
}

_Static_assert(SCALAR_NR == TM_GEMM_AVX2_NR, "pack_b below has one case for both");

/* Depth [p0, p0+kc) x columns [j0, j0+nc) of op(B), in panels of nr. */
static void pack_b(float *dst, const gemm_mats *m, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
                   const tm_gemm_kernel *k)
{
    if (k->bf16_pairs) {
        const uint16_t *s = m->tb ? m->b16 + j0 * m->ldb + p0 : m->b16 + p0 * m->ldb + j0;
        pack_pairs(dst, s, m->ldb, !m->tb, nc, kc, k->nr);
        return;
    }
#define PACK_B(W, BF, SRC)                                                                         \
    (m->tb ? pack_trans_w(dst, SRC + j0 * m->ldb + p0, m->ldb, nc, kc, W, BF, k->pack_bt,          \
                          k->pack_bt16)                                                            \
           : pack_copy_w(dst, SRC + p0 * m->ldb + j0, m->ldb, nc, kc, W, BF))
#define PACK_B_ANY(W) (m->bf16 ? PACK_B(W, 1, m->b16) : PACK_B(W, 0, m->b))
    switch (k->nr) {
    case SCALAR_NR: PACK_B_ANY(SCALAR_NR); break; /* also TM_GEMM_AVX2_NR */
    case TM_GEMM_AVX512_NR: PACK_B_ANY(TM_GEMM_AVX512_NR); break;
    default: TM_ASSERT(!"unknown gemm nr");
    }
#undef PACK_B_ANY
#undef PACK_B
}

/* ---------------------------------------------------------------- driver */

typedef struct {
    const tm_gemm_kernel *kern;
    int64_t M, N, K, kb; /* kb: depth of every K block but maybe the last */
    float alpha, beta;
    const float *A, *B;
    const uint16_t *A16, *B16; /* bf16 sources instead, when bf16 */
    int bf16;
    float *C;
    int64_t lda, ldb, ldc;
    int ta, tb;
    int64_t stride_a, stride_b, stride_c;
    int64_t mt, nt; /* each matrix is cut into mt x nt blocks of C */
    int64_t units;  /* batch * mt * nt */
    int64_t ntasks; /* units are dealt to tasks in contiguous ranges */
    /* op(B) packed once for every task when all use the same B, or NULL:
     * K block pc starts at bpacked + pc * n_pad, its panels side by side */
    float *bpacked;
    int64_t n_pad; /* N rounded up to nr */
    /* TM_BF16 or TM_F16: packed panels are rounded to that precision
     * (tm_sgemm_batched_prec); anything else: not */
    tm_dtype round;
} gemm_job;

/* Rounds n packed floats in place when the job asks for it: the panel
 * was just written, so this pass runs in L1/L2. Zero padding stays zero. */
static void round_packed(const gemm_job *job, float *buf, int64_t n)
{
    if (job->round == TM_BF16 && tm_cpu_isa() >= TM_ISA_AVX2)
        tm_round_bf16_avx2(buf, buf, n);
    else if (job->round == TM_BF16 || job->round == TM_F16)
        tm_round_precision(buf, buf, n, job->round);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Runs the microkernel over a packed mc x nc block of C at c. */
static void macro_kernel(const tm_gemm_kernel *k, int64_t mc, int64_t nc, int64_t kc,
                         const float *ap, const float *bp, float *c, int64_t ldc, float alpha,
                         float beta, int load_c)
{
    const int mr = k->mr, nr = k->nr;
    for (int64_t j = 0; j < nc; j += nr) {
        int64_t cols = nc - j < nr ? nc - j : nr;
        const float *bpanel = bp + (j / nr) * nr * kc;
        for (int64_t i = 0; i < mc; i += mr) {
            int64_t rows = mc - i < mr ? mc - i : mr;
            const float *apanel = ap + (i / mr) * mr * kc;
            float *ct = c + i * ldc + j;
            if (rows == mr && cols == nr) {
                k->ukr(kc, apanel, bpanel, ct, ldc, alpha, beta, load_c);
                continue;
            }
            if (cols == nr && k->ukr_rows) { /* the rows that exist, straight into C */
                k->ukr_rows(rows, kc, apanel, bpanel, ct, ldc, alpha, beta, load_c);
                continue;
            }
            /* an edge tile: same microkernel on a scratch tile */
            alignas(64) float tile[TM_GEMM_MAX_MR * TM_GEMM_MAX_NR];
            if (load_c) {
                memset(tile, 0, sizeof tile);
                for (int64_t r = 0; r < rows; r++)
                    memcpy(tile + r * nr, ct + r * ldc, (size_t)cols * sizeof(float));
            }
            if (rows < mr && k->ukr_rows)
                k->ukr_rows(rows, kc, apanel, bpanel, tile, nr, alpha, beta, load_c);
            else
                k->ukr(kc, apanel, bpanel, tile, nr, alpha, beta, load_c);
            for (int64_t r = 0; r < rows; r++)
                memcpy(ct + r * ldc, tile + r * nr, (size_t)cols * sizeof(float));
        }
    }
}

/* C rows [i0, i1) x columns [j0, j1) of one matrix, over all of K, with
 * block sizes mc x nc and buffers abuf (mc*kb floats) and bbuf (kb*nc). */
static void gemm_block(const gemm_job *job, const gemm_mats *m, int64_t i0, int64_t i1, int64_t j0,
                       int64_t j1, int64_t mc, int64_t nc, float *abuf, float *bbuf)
{
    const tm_gemm_kernel *k = job->kern;
    const int64_t K = job->K, kb = job->kb;
    for (int64_t jc = j0; jc < j1; jc += nc) {
        int64_t ncur = j1 - jc < nc ? j1 - jc : nc;
        for (int64_t pc = 0; pc < K; pc += kb) {
            int64_t kc = K - pc < kb ? K - pc : kb;
            int first = pc == 0;
            int load_c = !first || job->beta != 0.0f;
            float beta = first ? job->beta : 1.0f;
            const float *bp = bbuf;
            if (job->bpacked)
                bp = job->bpacked + pc * job->n_pad + jc * kc; /* jc is a multiple of nr */
            else {
                pack_b(bbuf, m, pc, kc, jc, ncur, k);
                if (job->round) round_packed(job, bbuf, (ncur + k->nr - 1) / k->nr * k->nr * kc);
            }
            for (int64_t ic = i0; ic < i1; ic += mc) {
                int64_t mcur = i1 - ic < mc ? i1 - ic : mc;
                pack_a(abuf, m, ic, mcur, pc, kc, k);
                if (job->round) round_packed(job, abuf, (mcur + k->mr - 1) / k->mr * k->mr * kc);
                macro_kernel(k, mcur, ncur, kc, abuf, bp, m->c + ic * m->ldc + jc, m->ldc,
                             job->alpha, beta, load_c);
            }
        }
    }
}

/* Finds the C block and matrices of unit u. */
static void unit_block(const gemm_job *job, int64_t u, gemm_mats *m, int64_t *i0, int64_t *i1,
                       int64_t *j0, int64_t *j1)
{
    const tm_gemm_kernel *k = job->kern;
    int64_t per = job->mt * job->nt, b = u / per, r = u % per;
    m->bf16 = job->bf16;
    m->a = job->bf16 ? NULL : job->A + b * job->stride_a;
    m->b = job->bf16 ? NULL : job->B + b * job->stride_b;
    m->a16 = job->bf16 ? job->A16 + b * job->stride_a : NULL;
    m->b16 = job->bf16 ? job->B16 + b * job->stride_b : NULL;
    m->c = job->C + b * job->stride_c;
    m->lda = job->lda;
    m->ldb = job->ldb;
    m->ldc = job->ldc;
    m->ta = job->ta;
    m->tb = job->tb;
    int64_t pb, pe;
    tm_split_range((job->M + k->mr - 1) / k->mr, r / job->nt, job->mt, &pb, &pe);
    *i0 = pb * k->mr;
    *i1 = min64(pe * k->mr, job->M);
    tm_split_range((job->N + k->nr - 1) / k->nr, r % job->nt, job->nt, &pb, &pe);
    *j0 = pb * k->nr;
    *j1 = min64(pe * k->nr, job->N);
}

/* Without heap scratch: one panel of each, from the stack. Kept out of
 * line so that the normal path does not reserve this stack. */
static __attribute__((noinline)) void gemm_units_stack(const gemm_job *job, int64_t ub, int64_t ue)
{
    alignas(64) float abuf[TM_GEMM_MAX_MR * KC_MAX];
    alignas(64) float bbuf[KC_MAX * TM_GEMM_MAX_NR];
    for (int64_t u = ub; u < ue; u++) {
        gemm_mats m;
        int64_t i0, i1, j0, j1;
        unit_block(job, u, &m, &i0, &i1, &j0, &j1);
        if (i0 < i1 && j0 < j1)
            gemm_block(job, &m, i0, i1, j0, j1, job->kern->mr, job->kern->nr, abuf, bbuf);
    }
}

static void gemm_task(void *ctx, int64_t t, int64_t n)
{
    const gemm_job *job = ctx;
    const tm_gemm_kernel *k = job->kern;
    int64_t ub, ue;
    tm_split_range(job->units, t, n, &ub, &ue);
    if (ub >= ue) return;

    /* block sizes: the kernel's, shrunk to this task's largest unit */
    int64_t mp = (job->M + k->mr - 1) / k->mr, np = (job->N + k->nr - 1) / k->nr;
    int64_t mc = min64(k->mc, (mp + job->mt - 1) / job->mt * k->mr);
    int64_t nc = min64(k->nc, (np + job->nt - 1) / job->nt * k->nr);
    if (job->bpacked) nc = 0; /* no B buffer of its own */
    float *buf = tm_alloc((size_t)((nc + mc) * job->kb) * sizeof(float));
    if (!buf) {
        gemm_units_stack(job, ub, ue);
        return;
    }
    float *bbuf = buf, *abuf = buf + nc * job->kb; /* bbuf first: 64-byte aligned */
    if (job->bpacked) nc = k->nc;
    for (int64_t u = ub; u < ue; u++) {
        gemm_mats m;
        int64_t i0, i1, j0, j1;
        unit_block(job, u, &m, &i0, &i1, &j0, &j1);
        if (i0 < i1 && j0 < j1) gemm_block(job, &m, i0, i1, j0, j1, mc, nc, abuf, bbuf);
    }
    tm_free(buf);
}

/* Packs task t of n's share of the nr-column panels of op(B), for every K
 * block, into job->bpacked. */
static void pack_b_task(void *ctx, int64_t t, int64_t n)
{
    const gemm_job *job = ctx;
    const tm_gemm_kernel *k = job->kern;
    gemm_mats m = {.b = job->B, .b16 = job->B16, .ldb = job->ldb, .tb = job->tb, .bf16 = job->bf16};
    int64_t qb, qe;
    tm_split_range(job->n_pad / k->nr, t, n, &qb, &qe);
    int64_t j0 = qb * k->nr, j1 = min64(qe * k->nr, job->N);
    if (j0 >= j1) return;
    for (int64_t pc = 0; pc < job->K; pc += job->kb) {
        int64_t kc = min64(job->kb, job->K - pc);
        float *dst = job->bpacked + pc * job->n_pad + j0 * kc;
        pack_b(dst, &m, pc, kc, j0, j1 - j0, k);
        if (job->round) round_packed(job, dst, (j1 - j0 + k->nr - 1) / k->nr * k->nr * kc);
    }
}

/* Largest op(B) packed once and shared by all tasks (it is read from L3
 * by each of them), and the least work for which the extra pass pays. */
#define SHARED_B_MAX_BYTES (8 << 20)
#define SHARED_B_MIN_FMAS (1 << 23)

/* C = beta * C, for alpha == 0 or K == 0 (op(A) and op(B) are not read). */
static void scale_c(int64_t batch, int64_t M, int64_t N, float beta, float *C, int64_t ldc,
                    int64_t stride_c)
{
    if (beta == 1.0f) return;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t i = 0; i < M; i++) {
            float *c = C + b * stride_c + i * ldc;
            if (beta == 0.0f)
                memset(c, 0, (size_t)N * sizeof(float));
            else
                for (int64_t j = 0; j < N; j++)
                    c[j] *= beta;
        }
}

/* Multiply-adds per task below which splitting further costs more than
 * it gains (waking a thread, repacking a panel). */
#define MIN_TASK_FMAS (1 << 20)

/* Multiply-adds per float of A and B that a block of C should reach when
 * A and B do not fit in cache: a rows x cols block reads (rows + cols) * K
 * floats for rows * cols * K multiply-adds, and below about this ratio
 * (dW = dY^T X, with K in the thousands and M, N a few hundred, cut into
 * many small blocks) two threads wait on memory instead of computing. */
#define MIN_BLOCK_INTENSITY 128.0
#define CACHED_BYTES (4 << 20) /* A and B smaller than this stay in L2/L3 */

/* Cuts each matrix into mt x nt blocks, about `per` of them, trading
 * repacks of B (one per row block) against repacks of A (one per column
 * block); returns the blocks' multiply-adds per float read. */
static double cut(gemm_job *job, int64_t per)
{
    const tm_gemm_kernel *k = job->kern;
    int64_t mp = (job->M + k->mr - 1) / k->mr, np = (job->N + k->nr - 1) / k->nr;
    double best = -1;
    job->mt = job->nt = 1;
    for (int64_t mt = 1; mt <= per && mt <= mp; mt++) {
        int64_t nt = min64((per + mt - 1) / mt, np);
        double cost = (double)mt * (double)job->N + (double)nt * (double)job->M;
        if (mt * nt < min64(per, mp * np)) cost *= 4; /* too few blocks */
        if (best < 0 || cost < best) {
            best = cost;
            job->mt = mt;
            job->nt = nt;
        }
    }
    double rows = (double)job->M / (double)job->mt, cols = (double)job->N / (double)job->nt;
    return rows * cols / (rows + cols);
}

/* Chooses how to cut each matrix and how many tasks to run. */
static void plan(gemm_job *job, int64_t batch)
{
    int64_t threads = tm_get_num_threads();
    double fmas = (double)batch * (double)job->M * (double)job->N * (double)job->K;
    /* a few tasks per thread so that a busy core does not hold back the
     * rest, unless that makes blocks so small that memory becomes the limit */
    int64_t want = threads <= 1 ? 1 : 4 * threads;
    if (fmas / MIN_TASK_FMAS < (double)want) want = (int64_t)(fmas / MIN_TASK_FMAS);
    if (want < 1) want = 1;
    double bytes = (double)(job->M + job->N) * (double)job->K * sizeof(float);
    job->mt = job->nt = 1;
    while (batch < want) {
        double intensity = cut(job, (want + batch - 1) / batch);
        if (bytes < CACHED_BYTES || intensity >= MIN_BLOCK_INTENSITY || want <= threads) break;
        want = want / 2 > threads ? want / 2 : threads;
    }
    job->units = batch * job->mt * job->nt;
    job->ntasks = min64(job->units, want);
}

/* K blocks of equal depth (at most the kernel's kc): a function of K and
 * the kernel alone, which the results depend on. */
static int64_t k_block(const tm_gemm_kernel *k, int64_t K)
{
    int64_t nkb = (K + k->kc - 1) / k->kc;
    return (K + nkb - 1) / nkb;
}

/* Plans and runs a job (kern, sizes, operands and strides filled in) over
 * `batch` matrices. Unless B comes packed already, every block row of
 * every matrix packs the same B when there is one B: then it is packed
 * once, in parallel, and shared. Same bits either way. */
static void run_job(gemm_job *job, int64_t batch)
{
    const tm_gemm_kernel *k = job->kern;
    job->kb = k_block(k, job->K);
    job->n_pad = (job->N + k->nr - 1) / k->nr * k->nr;
    plan(job, batch);
    float *own = NULL;
    double fmas = (double)batch * (double)job->M * (double)job->N * (double)job->K;
    if (!job->bpacked && (batch == 1 || job->stride_b == 0) && job->ntasks > 1 &&
        batch * job->mt > 1 && fmas >= SHARED_B_MIN_FMAS &&
        (double)job->K * (double)job->n_pad * sizeof(float) <= SHARED_B_MAX_BYTES) {
        own = tm_alloc((size_t)(job->K * job->n_pad) * sizeof(float));
        job->bpacked = own;
        if (own) tm_parallel_for(min64(job->ntasks, job->n_pad / k->nr), pack_b_task, job);
    }
    tm_parallel_for(job->ntasks, gemm_task, job);
    tm_free(own);
}

void tm_sgemm_batched(int trans_a, int trans_b, int64_t batch, int64_t M, int64_t N, int64_t K,
                      float alpha, const float *A, int64_t lda, int64_t stride_a, const float *B,
                      int64_t ldb, int64_t stride_b, float beta, float *C, int64_t ldc,
                      int64_t stride_c)
{
    tm_sgemm_batched_prec(TM_F32, trans_a, trans_b, batch, M, N, K, alpha, A, lda, stride_a, B,
                          ldb, stride_b, beta, C, ldc, stride_c);
}

void tm_sgemm_batched_prec(tm_dtype p, int trans_a, int trans_b, int64_t batch, int64_t M,
                           int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                           int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b,
                           float beta, float *C, int64_t ldc, int64_t stride_c)
{
    if (batch <= 0 || M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(batch, M, N, beta, C, ldc, stride_c);
        return;
    }
    gemm_job job = {
        .kern = tm_gemm_kernel_for(tm_cpu_isa()),
        .M = M,
        .N = N,
        .K = K,
        .alpha = alpha,
        .beta = beta,
        .A = A,
        .B = B,
        .C = C,
        .lda = lda,
        .ldb = ldb,
        .ldc = ldc,
        .ta = trans_a != 0,
        .tb = trans_b != 0,
        .stride_a = stride_a,
        .stride_b = stride_b,
        .stride_c = stride_c,
        .round = p == TM_BF16 || p == TM_F16 ? p : TM_F32,
    };
    run_job(&job, batch);
}

void tm_sgemm(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
              int64_t ldc)
{
    tm_sgemm_batched(trans_a, trans_b, 1, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0);
}

/* ------------------------------------------------------ pre-packed B */

struct tm_packed_b {
    const tm_gemm_kernel *kern; /* the kernel whose layout data has */
    int64_t K, N, kb, n_pad;
    int trans_b;
    float *data; /* K * n_pad floats: K block pc at data + pc * n_pad */
};

tm_status tm_sgemm_pack_b(tm_packed_b **out, int trans_b, int64_t K, int64_t N, const float *B,
                          int64_t ldb)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "sgemm_pack_b: out is NULL");
    *out = NULL;
    if (K < 0 || N < 0)
        return tm_fail(TM_ERR_INVALID, "sgemm_pack_b: sizes K=%lld N=%lld must be >= 0",
                       (long long)K, (long long)N);
    int64_t row = trans_b ? K : N;
    if (ldb < (row > 1 ? row : 1))
        return tm_fail(TM_ERR_INVALID,
                       "sgemm_pack_b: ldb=%lld is smaller than a row of B (%lld floats, %s)",
                       (long long)ldb, (long long)row, trans_b ? "B is (N, K)" : "B is (K, N)");
    if (!B && K > 0 && N > 0) return tm_fail(TM_ERR_INVALID, "sgemm_pack_b: B is NULL");
    const tm_gemm_kernel *k = tm_gemm_kernel_for(tm_cpu_isa());
    int64_t n_pad = (N + k->nr - 1) / k->nr * k->nr;
    size_t bytes;
    if (!tm_mul_size((size_t)K, (size_t)n_pad, &bytes) ||
        !tm_mul_size(bytes, sizeof(float), &bytes))
        return tm_fail(TM_ERR_NOMEM, "sgemm_pack_b: K=%lld x N=%lld overflows a size",
                       (long long)K, (long long)N);
    tm_packed_b *p = tm_calloc(1, sizeof *p);
    if (!p) return tm_fail(TM_ERR_NOMEM, "sgemm_pack_b: out of memory");
    p->kern = k;
    p->K = K;
    p->N = N;
    p->kb = K > 0 ? k_block(k, K) : 1;
    p->n_pad = n_pad;
    p->trans_b = trans_b != 0;
    p->data = tm_alloc(bytes ? bytes : 64);
    if (!p->data) {
        tm_free(p);
        return tm_fail(TM_ERR_NOMEM, "sgemm_pack_b: out of memory for %zu bytes of packed B",
                       bytes);
    }
    tm_sgemm_repack_b(p, B, ldb);
    *out = p;
    return TM_OK;
}

void tm_sgemm_repack_b(tm_packed_b *p, const float *B, int64_t ldb)
{
    if (!p || p->K == 0 || p->N == 0) return;
    gemm_job job = {.kern = p->kern, .K = p->K, .N = p->N, .kb = p->kb, .n_pad = p->n_pad,
                    .B = B, .ldb = ldb, .tb = p->trans_b, .bpacked = p->data};
    int64_t panels = p->n_pad / p->kern->nr;
    /* a few panels per task, and no threads for a small matrix */
    int64_t tasks = (double)p->K * (double)p->n_pad < 65536 ? 1 : min64(panels, 16);
    tm_parallel_for(tasks, pack_b_task, &job);
}

void tm_sgemm_packed(int trans_a, int64_t M, float alpha, const float *A, int64_t lda,
                     const tm_packed_b *B, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || B->N <= 0) return;
    if (B->K <= 0 || alpha == 0.0f) {
        scale_c(1, M, B->N, beta, C, ldc, 0);
        return;
    }
    gemm_job job = {
        .kern = B->kern,
        .M = M,
        .N = B->N,
        .K = B->K,
        .alpha = alpha,
        .beta = beta,
        .A = A,
        .C = C,
        .lda = lda,
        .ldc = ldc,
        .ta = trans_a != 0,
        .tb = B->trans_b,
        .bpacked = B->data,
    };
    run_job(&job, 1);
}

int64_t tm_packed_b_k(const tm_packed_b *p) { return p ? p->K : 0; }
int64_t tm_packed_b_n(const tm_packed_b *p) { return p ? p->N : 0; }

size_t tm_packed_b_bytes(const tm_packed_b *p)
{
    return p ? sizeof *p + (size_t)(p->K * p->n_pad) * sizeof(float) : 0;
}

void tm_packed_b_free(tm_packed_b *p)
{
    if (!p) return;
    tm_free(p->data);
    tm_free(p);
}

/* -------------------------------------------------------------- bf16 */

void tm_gemm_bf16_with(const tm_gemm_kernel *k, int trans_a, int trans_b, int64_t M, int64_t N,
                       int64_t K, float alpha, const uint16_t *A, int64_t lda, const uint16_t *B,
                       int64_t ldb, float beta, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(1, M, N, beta, C, ldc, 0);
        return;
    }
    gemm_job job = {
        .kern = k,
        .M = M,
        .N = N,
        .K = K,
        .alpha = alpha,
        .beta = beta,
        .A16 = A,
        .B16 = B,
        .bf16 = 1,
        .C = C,
        .lda = lda,
        .ldb = ldb,
        .ldc = ldc,
        .ta = trans_a != 0,
        .tb = trans_b != 0,
    };
    run_job(&job, 1);
}

int tm_gemm_bf16_native(void) { return tm_gemm_kernel_bf16()->bf16_pairs; }

void tm_gemm_bf16(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb, float beta,
                  float *C, int64_t ldc)
{
    tm_gemm_bf16_with(tm_gemm_kernel_bf16(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb,
                      beta, C, ldc);
}
