/*
 * Scaled dot-product attention, forward and backward, computed block by
 * block with an online softmax (the FlashAttention scheme): a thread never
 * holds more than one BLK x BLK block of scores (two in the backward pass:
 * the probabilities and their gradient), whatever Tq and Tk.
 *
 * Forward: one task per (batch*head, query block). The task walks the key
 * blocks in order, keeping a running row max m and row sum l, and uses its
 * slice of `out` as the accumulator:
 *     S = scale * Q_i K_j^T + bias_j (causal / padding masked to -inf)
 *     m' = max(m, rowmax S);  P = exp(S - m');  l = l e^(m-m') + rowsum P
 *     O = O e^(m-m') + P V_j
 * and finishes with out = O / l, lse = m + log l (0 and -inf when every key
 * of the row is masked).
 *
 * Backward: with Delta_i = rowsum(dO_i * O_i) (saved in `work`), each
 * block pair (i, j) recomputes P = exp(S - lse) and
 *     dV_j += P^T dO_i
 *     dS    = P * (dO_i V_j^T - Delta_i)
 *     dK_j += scale * dS^T Q_i,   dQ_i += scale * dS K_j
 * Each block of dK/dV receives its contributions in increasing query block
 * order and each block of dQ in increasing key block order, in both of the
 * two schedules used (one task per batch*head doing every pair, or, when
 * there are too few heads to keep the pool busy, one task per key block for
 * dK/dV and then one per query block for dQ). All of a pair's arithmetic
 * lives in one function, so the two schedules give the same bits and the
 * result never depends on the thread count.
 *
 * The block products and the exponentials go through a small table of
 * kernels: plain C (the reference, always kept) and an AVX2+FMA version
 * chosen at run time by tm_cpu_isa(). Block sizes are small (at most
 * 64 x 64 x D), so these are register-tiled loops without packing.
 */
#include <math.h>
#include <string.h>

#include "trimodal/ops.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define TM_ATTN_AVX2 1
#include <immintrin.h>
#endif

enum { BLK = 64 }; /* queries and keys per block */

/* Full unrolling of the short constant-count loops of the register tiles
 * (without it the tiles' accumulators live on the stack). */
#if defined(__clang__)
#define ATTN_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define ATTN_UNROLL _Pragma("GCC unroll 8")
#else
#define ATTN_UNROLL
#endif

#if defined(__GNUC__) || defined(__clang__)
#define ATTN_NOINLINE __attribute__((noinline))
#else
#define ATTN_NOINLINE
#endif

/* ------------------------------------------------------------ kernels */

typedef struct {
    /* c (m, ldc) = alpha * a b^T; a (m, lda >= d), b (n <= BLK, ldb >= d). */
    void (*dot_nt)(float *c, int64_t ldc, const float *a, int64_t lda, const float *b,
                   int64_t ldb, int64_t m, int64_t n, int64_t d, float alpha);
    /* c (m, ldc) += alpha * A b, where A[i][p] = a[i*a_rs + p*a_cs] is (m, k)
     * and b is (k, ldb >= n). */
    void (*mul_acc)(float *c, int64_t ldc, const float *a, int64_t a_rs, int64_t a_cs,
                    const float *b, int64_t ldb, int64_t m, int64_t n, int64_t k, float alpha);
    /* One row of scores: x[j] += bias[j] (bias may be NULL), x[j] = -inf
     * for nvis <= j < n; returns max(x[0..n)). */
    float (*mask_row)(float *x, const float *bias, int64_t n, int64_t nvis);
    /* x[j] = exp(x[j] - shift) for j < n (exp(-inf) = 0); returns the sum. */
    float (*exp_row)(float *x, int64_t n, float shift);
    /* x[j] *= a for j < n. */
    void (*scale_row)(float *x, int64_t n, float a);
    /* ds[j] = p[j] * (ds[j] - delta) for j < n. */
    void (*ds_row)(float *ds, const float *p, int64_t n, float delta);
} attn_kernels;

static void dot_nt_c(float *c, int64_t ldc, const float *a, int64_t lda, const float *b,
                     int64_t ldb, int64_t m, int64_t n, int64_t d, float alpha)
{
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            const float *ai = a + i * lda, *bj = b + j * ldb;
            float s = 0.0f;
            for (int64_t p = 0; p < d; p++) s += ai[p] * bj[p];
            c[i * ldc + j] = alpha * s;
        }
    }
}

static void mul_acc_c(float *c, int64_t ldc, const float *a, int64_t a_rs, int64_t a_cs,
                      const float *b, int64_t ldb, int64_t m, int64_t n, int64_t k, float alpha)
{
    for (int64_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        for (int64_t p = 0; p < k; p++) {
            float aip = alpha * a[i * a_rs + p * a_cs];
            if (aip == 0.0f) continue; /* masked probabilities are exact zeros */
            const float *bp = b + p * ldb;
            for (int64_t j = 0; j < n; j++) ci[j] += aip * bp[j];
        }
    }
}

static float mask_row_c(float *x, const float *bias, int64_t n, int64_t nvis)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        float v = j < nvis ? x[j] + (bias ? bias[j] : 0.0f) : -INFINITY;
        x[j] = v;
        mx = v > mx ? v : mx;
    }
    return mx;
}

static float exp_row_c(float *x, int64_t n, float shift)
{
    float sum = 0.0f;
    for (int64_t j = 0; j < n; j++) {
        x[j] = expf(x[j] - shift);
        sum += x[j];
    }
    return sum;
}

static void scale_row_c(float *x, int64_t n, float a)
{
    for (int64_t j = 0; j < n; j++) x[j] *= a;
}

static void ds_row_c(float *ds, const float *p, int64_t n, float delta)
{
    for (int64_t j = 0; j < n; j++) ds[j] = p[j] * (ds[j] - delta);
}

static const attn_kernels kernels_c = {dot_nt_c, mul_acc_c, mask_row_c,
                                       exp_row_c, scale_row_c, ds_row_c};

#ifdef TM_ATTN_AVX2
#define TGT __attribute__((target("avx2,fma")))
#define TGT_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

/* Lanes [0, n) on, for 0 < n <= 8. */
TGT_INLINE __m256i lane_mask(int64_t n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* exp(x) to about 2 ulp for x <= 88.3; 0 below -87.3 (so exp(-inf) = 0)
 * and for NaN. x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an
 * exact n ln2), e^r by its degree-6 Taylor polynomial, 2^n built in the
 * exponent bits. Lanes below -87.3 compute garbage that `keep` clears. */
TGT_INLINE __m256 exp8(__m256 x)
{
    __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_GE_OQ);
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                   _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep);
}

TGT static float exp_row_avx2(float *x, int64_t n, float shift)
{
    __m256 s = _mm256_set1_ps(shift), acc = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), s));
        _mm256_storeu_ps(x + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (j < n) {
        __m256i m = lane_mask(n - j);
        __m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(x + j, m), s));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
        _mm256_maskstore_ps(x + j, m, e);
        acc = _mm256_add_ps(acc, e);
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* An R x (8*NV) tile of c += alpha * A b (R <= 6, NV <= 4, R * NV <= 12),
 * vectorised along the columns of b; with `masked`, only the lanes in `m`
 * of the last vector. R, NV and masked are constants at every call, so the
 * tests on them fold away; the accumulators are named variables rather
 * than an array so that every compiler keeps them in registers. */
#define MM_ACC(r) __m256 acc##r##0 = zero, acc##r##1 = zero, acc##r##2 = zero, acc##r##3 = zero
#define MM_LOADB(v) \
    (NV <= v ? zero : masked && NV == v + 1 ? _mm256_maskload_ps(bp + 8 * v, m) \
                                             : _mm256_loadu_ps(bp + 8 * v))
#define MM_FMA(r)                                                                         \
    if (R > r) {                                                                          \
        const __m256 av = _mm256_broadcast_ss(ap + r * a_rs);                             \
        acc##r##0 = _mm256_fmadd_ps(av, b0, acc##r##0);                                   \
        if (NV > 1) acc##r##1 = _mm256_fmadd_ps(av, b1, acc##r##1);                       \
        if (NV > 2) acc##r##2 = _mm256_fmadd_ps(av, b2, acc##r##2);                       \
        if (NV > 3) acc##r##3 = _mm256_fmadd_ps(av, b3, acc##r##3);                       \
    }
#define MM_STORE1(r, v)                                                                   \
    if (NV > v) {                                                                         \
        float *cv = c + r * ldc + 8 * v;                                                  \
        if (masked && NV == v + 1)                                                        \
            _mm256_maskstore_ps(cv, m, _mm256_fmadd_ps(al, acc##r##v,                     \
                                                       _mm256_maskload_ps(cv, m)));       \
        else                                                                              \
            _mm256_storeu_ps(cv, _mm256_fmadd_ps(al, acc##r##v, _mm256_loadu_ps(cv)));    \
    }
#define MM_STORE(r)                                                                       \
    if (R > r) {                                                                          \
        MM_STORE1(r, 0)                                                                   \
        MM_STORE1(r, 1)                                                                   \
        MM_STORE1(r, 2)                                                                   \
        MM_STORE1(r, 3)                                                                   \
    }

TGT_INLINE void mm_tile(int R, int NV, int masked, __m256i m, float *c, int64_t ldc,
                        const float *a, int64_t a_rs, int64_t a_cs, const float *b,
                        int64_t ldb, int64_t k, float alpha)
{
    const __m256 zero = _mm256_setzero_ps();
    MM_ACC(0);
    MM_ACC(1);
    MM_ACC(2);
    MM_ACC(3);
    MM_ACC(4);
    MM_ACC(5);
    for (int64_t p = 0; p < k; p++) {
        const float *bp = b + p * ldb, *ap = a + p * a_cs;
        const __m256 b0 = MM_LOADB(0), b1 = MM_LOADB(1), b2 = MM_LOADB(2), b3 = MM_LOADB(3);
        MM_FMA(0)
        MM_FMA(1)
        MM_FMA(2)
        MM_FMA(3)
        MM_FMA(4)
        MM_FMA(5)
    }
    const __m256 al = _mm256_set1_ps(alpha);
    MM_STORE(0)
    MM_STORE(1)
    MM_STORE(2)
    MM_STORE(3)
    MM_STORE(4)
    MM_STORE(5)
}

/* Tiles of RMAX rows (and a shorter last one) over all m rows of the
 * column group at bb (uses mul_acc_avx2's names). */
#define MM_TILE(R, NV, MASKED, mk) \
    mm_tile(R, NV, MASKED, mk, cc, ldc, aa, a_rs, a_cs, bb, ldb, k, alpha)
#define MM_ROWS(RMAX, NV, MASKED, mk)                                                     \
    for (int64_t i = 0; i < m; i += RMAX) {                                               \
        float *cc = c + i * ldc + j;                                                      \
        const float *aa = a + i * a_rs;                                                   \
        switch (m - i < RMAX ? (int)(m - i) : RMAX) {                                     \
        case 1: MM_TILE(1, NV, MASKED, mk); break;                                        \
        case 2: MM_TILE(2, NV, MASKED, mk); break;                                        \
        case 3: MM_TILE(3, NV, MASKED, mk); break;                                        \
        case 4: if (RMAX >= 4) MM_TILE(4, NV, MASKED, mk); break;                         \
        case 5: if (RMAX >= 5) MM_TILE(5, NV, MASKED, mk); break;                         \
        default: MM_TILE(RMAX, NV, MASKED, mk); break;                                    \
        }                                                                                 \
    }

TGT static void mul_acc_avx2(float *c, int64_t ldc, const float *a, int64_t a_rs,
                             int64_t a_cs, const float *b, int64_t ldb, int64_t m, int64_t n,
                             int64_t k, float alpha)
{
    /* 4 x 24 tiles: 3 loads and 4 broadcasts per 12 FMAs, and 16 registers
     * in all; then one narrower group for the last n % 24 columns. */
    const __m256i all = _mm256_set1_epi32(-1);
    int64_t j = 0;
    for (; j + 24 <= n; j += 24) {
        const float *bb = b + j;
        MM_ROWS(4, 3, 0, all)
    }
    const int64_t left = n - j;
    if (left > 0) {
        const float *bb = b + j;
        const __m256i mk = left % 8 ? lane_mask(left % 8) : all;
        switch ((left + 7) / 8 * 2 + (left % 8 != 0)) {
        case 2: MM_ROWS(6, 1, 0, mk) break;
        case 3: MM_ROWS(6, 1, 1, mk) break;
        case 4: MM_ROWS(6, 2, 0, mk) break;
        case 5: MM_ROWS(6, 2, 1, mk) break;
        case 6: MM_ROWS(4, 3, 0, mk) break;
        default: MM_ROWS(4, 3, 1, mk) break;
        }
    }
}

/* dst (8 rows, ld dst_ld) = the transpose of src (8 rows, ld src_ld). */
TGT_INLINE void transpose8(float *dst, int64_t dst_ld, const float *src, int64_t src_ld)
{
    __m256 r[8], t[8], u[8];
ATTN_UNROLL
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * src_ld);
ATTN_UNROLL
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
ATTN_UNROLL
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
ATTN_UNROLL
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(dst + i * dst_ld, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
        _mm256_storeu_ps(dst + (i + 4) * dst_ld, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
    }
}

/* a b^T as a (b^T): b is transposed 64 columns at a time into a BLK x BLK
 * buffer, so that the product runs on mul_acc's broadcast tiles instead of
 * dot products that each end in a horizontal sum. */
TGT static void dot_nt_avx2(float *c, int64_t ldc, const float *a, int64_t lda,
                            const float *b, int64_t ldb, int64_t m, int64_t n, int64_t d,
                            float alpha)
{
    _Alignas(64) float bt[BLK * BLK]; /* (dc, n) with ld BLK */
    TM_ASSERT(n <= BLK);
    for (int64_t i = 0; i < m; i++) memset(c + i * ldc, 0, (size_t)n * sizeof *c);
    for (int64_t d0 = 0; d0 < d; d0 += BLK) {
        const int64_t dc = d - d0 < BLK ? d - d0 : BLK;
        const float *bd = b + d0;
        int64_t j = 0;
        for (; j + 8 <= n; j += 8) {
            int64_t p = 0;
            for (; p + 8 <= dc; p += 8) transpose8(bt + p * BLK + j, BLK, bd + j * ldb + p, ldb);
            for (; p < dc; p++)
                for (int64_t jj = j; jj < j + 8; jj++) bt[p * BLK + jj] = bd[jj * ldb + p];
        }
        for (; j < n; j++)
            for (int64_t p = 0; p < dc; p++) bt[p * BLK + j] = bd[j * ldb + p];
        mul_acc_avx2(c, ldc, a + d0, lda, 1, bt, BLK, m, n, dc, alpha);
    }
}

TGT_INLINE float hmax8(__m256 v)
{
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

TGT static float mask_row_avx2(float *x, const float *bias, int64_t n, int64_t nvis)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 mx = ninf;
    int64_t j = 0;
    for (; j + 8 <= nvis; j += 8) {
        __m256 v = _mm256_loadu_ps(x + j);
        if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
        _mm256_storeu_ps(x + j, v);
        mx = _mm256_max_ps(mx, v);
    }
    float m = hmax8(mx);
    for (; j < n; j++) {
        float v = j < nvis ? x[j] + (bias ? bias[j] : 0.0f) : -INFINITY;
        x[j] = v;
        m = v > m ? v : m;
    }
    return m;
}

TGT static void scale_row_avx2(float *x, int64_t n, float a)
{
    const __m256 av = _mm256_set1_ps(a);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(av, _mm256_loadu_ps(x + j)));
    for (; j < n; j++) x[j] *= a;
}

TGT static void ds_row_avx2(float *ds, const float *p, int64_t n, float delta)
{
    const __m256 dv = _mm256_set1_ps(delta);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(ds + j, _mm256_mul_ps(_mm256_loadu_ps(p + j),
                                               _mm256_sub_ps(_mm256_loadu_ps(ds + j), dv)));
    for (; j < n; j++) ds[j] = p[j] * (ds[j] - delta);
}

static const attn_kernels kernels_avx2 = {dot_nt_avx2,  mul_acc_avx2,   mask_row_avx2,
                                          exp_row_avx2, scale_row_avx2, ds_row_avx2};
#endif /* TM_ATTN_AVX2 */

static const attn_kernels *pick_kernels(void)
{
#ifdef TM_ATTN_AVX2
    if (tm_cpu_isa() >= TM_ISA_AVX2) return &kernels_avx2;
#endif
    return &kernels_c;
}

/* ------------------------------------------------------------ context */

typedef struct {
    const attn_kernels *kern;
    float *out_w, *lse_w;               /* forward outputs */
    float *dq, *dk, *dv, *delta;        /* backward outputs; delta (B*H, Tq) */
    const float *out, *lse, *dout, *q, *k, *v, *key_bias;
    int64_t H, Tq, Tk, D, nqb, nkb, off; /* off = Tk - Tq, the causal diagonal */
    float scale;
    int causal;
} attn_ctx;

static attn_ctx make_ctx(const float *q, const float *k, const float *v,
                         const float *key_bias, int64_t H, int64_t Tq, int64_t Tk, int64_t D,
                         float scale, int causal)
{
    attn_ctx c;
    memset(&c, 0, sizeof c);
    c.kern = pick_kernels();
    c.q = q;
    c.k = k;
    c.v = v;
    c.key_bias = key_bias;
    c.H = H;
    c.Tq = Tq;
    c.Tk = Tk;
    c.D = D;
    c.nqb = (Tq + BLK - 1) / BLK;
    c.nkb = (Tk + BLK - 1) / BLK;
    c.off = Tk - Tq;
    c.scale = scale;
    c.causal = causal;
    return c;
}

/* Number of keys of query block [i0, i0+mq) that any of its queries sees. */
static int64_t visible_keys(const attn_ctx *c, int64_t i0, int64_t mq)
{
    if (!c->causal) return c->Tk;
    int64_t last = i0 + mq - 1 + c->off; /* the last key the last query sees */
    if (last < 0) return 0;
    return last + 1 < c->Tk ? last + 1 : c->Tk;
}

/* s (mq, BLK) = scale * Q_i K_j^T + bias, with -inf where a key is hidden;
 * rmax (mq) gets each row's max. */
static void block_scores(const attn_ctx *c, float *s, float *rmax, int64_t bh, int64_t i0,
                         int64_t mq, int64_t j0, int64_t nk)
{
    const int64_t D = c->D;
    const float *bias = c->key_bias ? c->key_bias + (bh / c->H) * c->Tk + j0 : NULL;
    c->kern->dot_nt(s, BLK, c->q + (bh * c->Tq + i0) * D, D, c->k + (bh * c->Tk + j0) * D, D,
                    mq, nk, D, c->scale);
    for (int64_t r = 0; r < mq; r++) {
        int64_t nvis = nk; /* keys j0 + j with j < nvis are not causally hidden */
        if (c->causal) {
            nvis = i0 + r + c->off + 1 - j0;
            nvis = nvis < 0 ? 0 : nvis > nk ? nk : nvis;
        }
        rmax[r] = c->kern->mask_row(s + r * BLK, bias, nk, nvis);
    }
}

/* ------------------------------------------------------------ forward */

static void fwd_task(void *vctx, int64_t t, int64_t n)
{
    (void)n;
    const attn_ctx *c = vctx;
    const int64_t D = c->D;
    const int64_t bh = t / c->nqb, i0 = (t % c->nqb) * BLK;
    const int64_t mq = c->Tq - i0 < BLK ? c->Tq - i0 : BLK;
    float *o = c->out_w + (bh * c->Tq + i0) * D; /* (mq, D): the accumulator */
    float *lse = c->lse_w + bh * c->Tq + i0;     /* (mq) */
    const float *v = c->v + bh * c->Tk * D;      /* (Tk, D) */
    _Alignas(64) float s[BLK * BLK];             /* (mq, BLK) scores, then probabilities */
    float m[BLK], l[BLK], bmax[BLK];             /* running row max and sum; block max */

    memset(o, 0, (size_t)(mq * D) * sizeof *o);
    for (int64_t r = 0; r < mq; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    const int64_t kend = visible_keys(c, i0, mq);
    for (int64_t j0 = 0; j0 < kend; j0 += BLK) {
        const int64_t nk = kend - j0 < BLK ? kend - j0 : BLK;
        block_scores(c, s, bmax, bh, i0, mq, j0, nk);
        for (int64_t r = 0; r < mq; r++) {
            float *sr = s + r * BLK;
            const float mx = bmax[r] > m[r] ? bmax[r] : m[r];
            if (mx == -INFINITY) { /* nothing visible yet: this block adds 0 */
                memset(sr, 0, (size_t)nk * sizeof *sr);
                continue;
            }
            const float alpha = expf(m[r] - mx); /* 0 when m[r] is -inf */
            l[r] = l[r] * alpha + c->kern->exp_row(sr, nk, mx);
            m[r] = mx;
            if (alpha != 1.0f) c->kern->scale_row(o + r * D, D, alpha);
        }
        c->kern->mul_acc(o, D, s, BLK, 1, v + j0 * D, D, mq, D, nk, 1.0f);
    }
    for (int64_t r = 0; r < mq; r++) {
        float *orow = o + r * D;
        if (l[r] > 0.0f) {
            c->kern->scale_row(orow, D, 1.0f / l[r]);
            lse[r] = m[r] + logf(l[r]);
        } else { /* every key masked */
            memset(orow, 0, (size_t)D * sizeof *orow);
            lse[r] = -INFINITY;
        }
    }
}

void tm_attention_forward(float *out, float *lse, const float *q, const float *k,
                          const float *v, const float *key_bias, int64_t B, int64_t H,
                          int64_t Tq, int64_t Tk, int64_t D, float scale, int causal)
{
    if (B <= 0 || H <= 0 || Tq <= 0 || D <= 0) return;
    if (Tk <= 0) { /* no keys at all: every row is fully masked */
        memset(out, 0, (size_t)(B * H * Tq * D) * sizeof *out);
        for (int64_t i = 0; i < B * H * Tq; i++) lse[i] = -INFINITY;
        return;
    }
    attn_ctx c = make_ctx(q, k, v, key_bias, H, Tq, Tk, D, scale, causal);
    c.out_w = out;
    c.lse_w = lse;
    tm_parallel_for(B * H * c.nqb, fwd_task, &c);
}

/* ------------------------------------------------------------ backward */

size_t tm_attention_work_floats(int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D)
{
    (void)Tk;
    (void)D;
    return (size_t)(B * H * Tq); /* Delta = rowsum(dout * out) per query */
}

static void delta_task(void *vctx, int64_t bh, int64_t n)
{
    (void)n;
    const attn_ctx *c = vctx;
    const int64_t D = c->D;
    for (int64_t i = bh * c->Tq; i < (bh + 1) * c->Tq; i++) {
        const float *go = c->dout + i * D, *o = c->out + i * D;
        float s = 0.0f;
        for (int64_t d = 0; d < D; d++) s += go[d] * o[d];
        c->delta[i] = s;
    }
}

/* The whole of block pair (query block qb, key block kb) of head bh:
 * adds its share to dK_j and dV_j when do_kv, to dQ_i when do_q. Both
 * schedules call this one function, so a pair gives the same bits in both.
 * s and ds are (BLK, BLK) scratch. */
static ATTN_NOINLINE void bwd_pair(const attn_ctx *c, float *s, float *ds, int64_t bh,
                                   int64_t qb, int64_t kb, int do_q, int do_kv)
{
    const int64_t D = c->D, i0 = qb * BLK, j0 = kb * BLK;
    const int64_t mq = c->Tq - i0 < BLK ? c->Tq - i0 : BLK;
    const int64_t nk = c->Tk - j0 < BLK ? c->Tk - j0 : BLK;
    const attn_kernels *kern = c->kern;
    const float *lse = c->lse + bh * c->Tq + i0, *delta = c->delta + bh * c->Tq + i0;
    const int64_t qoff = (bh * c->Tq + i0) * D, koff = (bh * c->Tk + j0) * D;

    float rmax[BLK];
    block_scores(c, s, rmax, bh, i0, mq, j0, nk);
    for (int64_t r = 0; r < mq; r++) { /* P = exp(S - lse) */
        if (lse[r] == -INFINITY) /* a fully masked row has no gradient */
            memset(s + r * BLK, 0, (size_t)nk * sizeof *s);
        else
            kern->exp_row(s + r * BLK, nk, lse[r]);
    }
    if (do_kv && c->dv) /* dV_j += P^T dO_i */
        kern->mul_acc(c->dv + koff, D, s, 1, BLK, c->dout + qoff, D, nk, D, mq, 1.0f);
    if (!(do_q && c->dq) && !(do_kv && c->dk)) return;
    kern->dot_nt(ds, BLK, c->dout + qoff, D, c->v + koff, D, mq, nk, D, 1.0f);
    for (int64_t r = 0; r < mq; r++) /* dS = P * (dP - Delta) */
        kern->ds_row(ds + r * BLK, s + r * BLK, nk, delta[r]);
    if (do_kv && c->dk) /* dK_j += scale dS^T Q_i */
        kern->mul_acc(c->dk + koff, D, ds, 1, BLK, c->q + qoff, D, nk, D, mq, c->scale);
    if (do_q && c->dq) /* dQ_i += scale dS K_j */
        kern->mul_acc(c->dq + qoff, D, ds, BLK, 1, c->k + koff, D, mq, D, nk, c->scale);
}

/* Whether any query of block qb sees any key of block kb. */
static int pair_visible(const attn_ctx *c, int64_t qb, int64_t kb)
{
    const int64_t i0 = qb * BLK, mq = c->Tq - i0 < BLK ? c->Tq - i0 : BLK;
    return kb * BLK < visible_keys(c, i0, mq);
}

static void bwd_head_task(void *vctx, int64_t bh, int64_t n)
{
    (void)n;
    const attn_ctx *c = vctx;
    _Alignas(64) float s[BLK * BLK], ds[BLK * BLK];
    for (int64_t kb = 0; kb < c->nkb; kb++)
        for (int64_t qb = 0; qb < c->nqb; qb++)
            if (pair_visible(c, qb, kb)) bwd_pair(c, s, ds, bh, qb, kb, 1, 1);
}

static void bwd_kv_task(void *vctx, int64_t t, int64_t n)
{
    (void)n;
    const attn_ctx *c = vctx;
    const int64_t bh = t / c->nkb, kb = t % c->nkb;
    _Alignas(64) float s[BLK * BLK], ds[BLK * BLK];
    for (int64_t qb = 0; qb < c->nqb; qb++)
        if (pair_visible(c, qb, kb)) bwd_pair(c, s, ds, bh, qb, kb, 0, 1);
}

static void bwd_q_task(void *vctx, int64_t t, int64_t n)
{
    (void)n;
    const attn_ctx *c = vctx;
    const int64_t bh = t / c->nqb, qb = t % c->nqb;
    _Alignas(64) float s[BLK * BLK], ds[BLK * BLK];
    for (int64_t kb = 0; kb < c->nkb; kb++)
        if (pair_visible(c, qb, kb)) bwd_pair(c, s, ds, bh, qb, kb, 1, 0);
}

void tm_attention_backward(float *dq, float *dk, float *dv, float *work, const float *dout,
                           const float *out, const float *lse, const float *q,
                           const float *k, const float *v, const float *key_bias, int64_t B,
                           int64_t H, int64_t Tq, int64_t Tk, int64_t D, float scale,
                           int causal)
{
    if (!dq && !dk && !dv) return;
    if (B <= 0 || H <= 0 || Tq <= 0 || Tk <= 0 || D <= 0) return;
    attn_ctx c = make_ctx(q, k, v, key_bias, H, Tq, Tk, D, scale, causal);
    c.out = out;
    c.lse = lse;
    c.dout = dout;
    c.dq = dq;
    c.dk = dk;
    c.dv = dv;
    c.delta = work;
    const int64_t BH = B * H;
    tm_parallel_for(BH, delta_task, &c);
    /* One task per head when there are enough heads to share out; else split
     * dK/dV (by key block) from dQ (by query block) at the price of computing
     * each pair's probabilities twice. The bits are the same either way. */
    if (BH >= 4 * (int64_t)tm_get_num_threads()) {
        tm_parallel_for(BH, bwd_head_task, &c);
    } else {
        if (dk || dv) tm_parallel_for(BH * c.nkb, bwd_kv_task, &c);
        if (dq) tm_parallel_for(BH * c.nqb, bwd_q_task, &c);
    }
}
