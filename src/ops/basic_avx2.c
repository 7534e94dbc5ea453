/*
 * Vectorised kernels of the simple ops (the tm_basic_simd table of
 * basic.h): elementwise maths with a vector exp and erf, broadcasting
 * binary ops and their gradients, LayerNorm and softmax rows.
 *
 * One source, two instruction sets. Compiled on its own (CMake gives this
 * file -mavx2 -mfma) it builds tm_basic_simd_avx2 on 8-float vectors;
 * basic_avx512.c defines TM_BASIC_AVX512 and includes this file to build
 * tm_basic_simd_avx512 on 16-float vectors. Everything below the thin
 * layer of vector primitives is written once for both.
 *
 * Every element goes through the same instructions wherever it sits in a
 * range: the last partial vector is loaded and stored with masks instead
 * of a scalar loop, so a caller's choice of task boundaries never changes
 * a result. The accuracy of exp and erf: see basic.h and
 * tests/ops/test_basic_math.c.
 */
#include <immintrin.h>
#include <math.h>

#include "ops/basic.h"

#define INLINE static inline __attribute__((always_inline))

/* ------------------------------------------------- vector primitives */

// clang-format off

#ifdef TM_BASIC_AVX512

#define VW 16
#define FN(name) name##_avx512
typedef __m512 vf;
typedef __m512i vi;
typedef __mmask16 vm;

INLINE vf vload(const float *p) { return _mm512_loadu_ps(p); }
INLINE void vstore(float *p, vf v) { _mm512_storeu_ps(p, v); }
INLINE __mmask16 tail_mask(int64_t n) { return (__mmask16)((1u << n) - 1u); }
/* the first n (< VW) lanes from p, the rest `fill` */
INLINE vf vload_n(const float *p, int64_t n, float fill)
{
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), tail_mask(n), p);
}
INLINE void vstore_n(float *p, vf v, int64_t n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
INLINE vf vset1(float x) { return _mm512_set1_ps(x); }
INLINE vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
INLINE vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
INLINE vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
INLINE vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
INLINE vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); } /* a*b + c */
INLINE vf vfnma(vf a, vf b, vf c) { return _mm512_fnmadd_ps(a, b, c); } /* c - a*b */
INLINE vf vfms(vf a, vf b, vf c) { return _mm512_fmsub_ps(a, b, c); } /* a*b - c */
/* max and min return their second operand when either is NaN */
INLINE vf vmax(vf a, vf b) { return _mm512_max_ps(a, b); }
INLINE vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
INLINE vf vsqrt(vf a) { return _mm512_sqrt_ps(a); }
INLINE vf vabs(vf a) { return _mm512_abs_ps(a); }
INLINE vf vsignbit(vf a) { return _mm512_and_ps(a, _mm512_set1_ps(-0.0f)); }
INLINE vf vxor(vf a, vf b) { return _mm512_xor_ps(a, b); }
INLINE vm vlt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
INLINE vm vle(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
INLINE vm vgt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
INLINE vf vblend(vm m, vf a, vf b) { return _mm512_mask_blend_ps(m, a, b); } /* m ? b : a */
INLINE vf vround(vf x)
{
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
/* 2^n for integral n in [-126, 127] held in a float vector */
INLINE vf vpow2(vf n)
{
    vi e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_castsi512_ps(e);
}
INLINE float vhsum(vf v)
{
    __m256 s = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}
INLINE float vhmax(vf v)
{
    __m256 s = _mm256_max_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

#else /* AVX2 + FMA */

#define VW 8
#define FN(name) name##_avx2
typedef __m256 vf;
typedef __m256i vi;
typedef __m256 vm;

static const int32_t TAIL_MASK[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

INLINE vf vload(const float *p) { return _mm256_loadu_ps(p); }
INLINE void vstore(float *p, vf v) { _mm256_storeu_ps(p, v); }
INLINE __m256i tail_mask(int64_t n)
{
    return _mm256_loadu_si256((const __m256i *)(TAIL_MASK + 8 - n));
}
INLINE vf vload_n(const float *p, int64_t n, float fill)
{
    __m256i m = tail_mask(n);
    __m256 x = _mm256_maskload_ps(p, m);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), x, _mm256_castsi256_ps(m));
}
INLINE void vstore_n(float *p, vf v, int64_t n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
INLINE vf vset1(float x) { return _mm256_set1_ps(x); }
INLINE vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
INLINE vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
INLINE vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
INLINE vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
INLINE vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
INLINE vf vfnma(vf a, vf b, vf c) { return _mm256_fnmadd_ps(a, b, c); }
INLINE vf vfms(vf a, vf b, vf c) { return _mm256_fmsub_ps(a, b, c); }
INLINE vf vmax(vf a, vf b) { return _mm256_max_ps(a, b); }
INLINE vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
INLINE vf vsqrt(vf a) { return _mm256_sqrt_ps(a); }
INLINE vf vabs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
INLINE vf vsignbit(vf a) { return _mm256_and_ps(a, _mm256_set1_ps(-0.0f)); }
INLINE vf vxor(vf a, vf b) { return _mm256_xor_ps(a, b); }
INLINE vm vlt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
INLINE vm vle(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
INLINE vm vgt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
INLINE vf vblend(vm m, vf a, vf b) { return _mm256_blendv_ps(a, b, m); }
INLINE vf vround(vf x)
{
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
INLINE vf vpow2(vf n)
{
    vi e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_castsi256_ps(e);
}
INLINE float vhsum(vf v)
{
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}
INLINE float vhmax(vf v)
{
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    q = _mm_max_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

#endif

INLINE vf vzero(void) { return vset1(0.0f); }
// clang-format on

/* Horner's rule with FMAs: c[0] + x c[1] + ... + x^(n-1) c[n-1]. */
INLINE vf vpoly(vf x, const float *c, int n)
{
    vf r = vset1(c[n - 1]);
#pragma GCC unroll 16
    for (int k = n - 2; k >= 0; k--)
        r = vfma(r, x, vset1(c[k]));
    return r;
}

/* ------------------------------------------------------------ maths */

/* e^x within about 1 ulp: x = n ln2 + r with |r| <= ln2/2 (ln2 split in
 * two, the high part exact in n * hi), e^r by the polynomial of basic.h,
 * and 2^n applied as two factors 2^(n/2) so that results down to the
 * subnormals and up to the overflow threshold come out right. x is first
 * clamped to [-104, 88.8]: e^-104 rounds to 0, e^88.8 overflows to inf;
 * the clamps keep a NaN (see vmax/vmin), which then flows through. */
INLINE vf vexp(vf x)
{
    x = vmin(vset1(88.8f), vmax(vset1(-104.0f), x));
    vf n = vround(vmul(x, vset1(1.44269504089f)));
    vf r = vfnma(n, vset1(0.693145751953125f), x);
    r = vfnma(n, vset1(1.42860682030941723e-6f), r);
    vf s = vfma(vmul(r, r), vpoly(r, TM_EXP_Q, 5), r); /* e^r - 1 */
    vf p = vadd(s, vset1(1.0f));
    vf h = vround(vmul(n, vset1(0.5f)));
    /* h = round(n/2) may be one past n/2; n - h is still within range */
    return vmul(vmul(p, vpow2(h)), vpow2(vsub(n, h)));
}

/* e^(a + b) for a + b in [-170, 0] and |b| < 1, with a + b never
 * rounded: n comes from the rounded sum, but r = a - n ln2 + b adds b to
 * the small reduced argument, where its rounding costs an ulp of r, not
 * of a. For e^(-x^2) with x^2 = a + b split exactly by an FMA, this keeps
 * the relative error at about an ulp where e^(fl(-x^2)) would lose up to
 * x^2 ulps. */
INLINE vf vexp_sum(vf a, vf b)
{
    vf n = vround(vmul(vadd(a, b), vset1(1.44269504089f)));
    vf r = vfnma(n, vset1(0.693145751953125f), a);
    r = vadd(vfnma(n, vset1(1.42860682030941723e-6f), r), b);
    vf s = vfma(vmul(r, r), vpoly(r, TM_EXP_Q, 5), r);
    vf p = vadd(s, vset1(1.0f));
    vf h = vround(vmul(n, vset1(0.5f)));
    return vmul(vmul(p, vpow2(h)), vpow2(vsub(n, h)));
}

/* e^(-c x^2), c = 1 or 0.5, with x^2 split into hi + lo exactly; |x| is
 * clamped to xmax first (e^(-c xmax^2) already rounds to 0; a NaN stays). */
INLINE vf vexp_negsq(vf x, float c, float xmax)
{
    x = vmin(vset1(xmax), vabs(x));
    vf hi = vmul(x, x), lo = vfms(x, x, hi); /* x^2 = hi + lo exactly */
    return vexp_sum(vmul(vset1(-c), hi), vmul(vset1(-c), lo));
}

/* The pieces of erf at t = |x|: `small` = erf(t) = t + t Q(t^2), valid
 * where `in_a` (t <= T0); e = erfc(t), valid elsewhere (NaN flows into e). */
INLINE void verf_parts(vf t, vf *small, vf *e, vm *in_a)
{
    *small = vfma(t, vpoly(vmul(t, t), TM_ERF_Q, 7), t);
    vf tb = vmin(vset1(10.1f), t); /* erfc(10.1) rounds to 0 */
    vf u = vdiv(vset1(1.0f), tb);
    u = vmin(vset1(1.0f / TM_ERF_T0), vmax(vset1(TM_ERFC_UMIN), u));
    vf g = vpoly(vfma(u, vset1(TM_ERFC_GS), vset1(TM_ERFC_GO)), TM_ERFC_G, 11);
    vf hi = vmul(tb, tb), lo = vfms(tb, tb, hi);
    vf ex = vexp_sum(vsub(vzero(), hi), vsub(g, lo)); /* e^(g - t^2) */
    *e = vmul(vmul(ex, u), vset1(0.564189583547756287f));
    *in_a = vle(t, vset1(TM_ERF_T0));
}

INLINE vf verf(vf x)
{
    vf small, e;
    vm in_a;
    verf_parts(vabs(x), &small, &e, &in_a);
    vf r = vblend(in_a, vsub(vset1(1.0f), e), small);
    return vxor(r, vsignbit(x));
}

/* 1 + erf(x), without cancellation for x far below 0. */
INLINE vf verf1p(vf x)
{
    vf small, e;
    vm in_a;
    verf_parts(vabs(x), &small, &e, &in_a);
    vf b = vblend(vlt(x, vzero()), vsub(vset1(2.0f), e), e);
    return vblend(in_a, b, vadd(vset1(1.0f), vxor(small, vsignbit(x))));
}

#define SQRT1_2 0.707106781186547524f
#define INV_SQRT_2PI 0.398942280401432678f
#define SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_C 0.044715f

INLINE vf vgelu(vf x)
{
    return vmul(vmul(vset1(0.5f), x), verf1p(vmul(x, vset1(SQRT1_2))));
}

INLINE vf vgelu_grad(vf x)
{
    vf cdf = vmul(vset1(0.5f), verf1p(vmul(x, vset1(SQRT1_2))));
    vf pdf = vmul(vset1(INV_SQRT_2PI), vexp_negsq(x, 0.5f, 14.5f));
    return vfma(x, pdf, cdf);
}

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u) = x / (1 + e^(-2u)),
 * u = sqrt(2/pi) (x + c x^3): no cancellation for either sign of x. */
INLINE vf vgelu_tanh_arg(vf x)
{
    vf u = vmul(vset1(SQRT_2_OVER_PI), vfma(vmul(vset1(GELU_C), vmul(x, x)), x, x));
    return vmul(vset1(-2.0f), u);
}

INLINE vf vgelu_tanh(vf x)
{
    return vdiv(x, vadd(vset1(1.0f), vexp(vgelu_tanh_arg(x))));
}

/* With s = sigmoid(2u) and 1 - s = e s (e = e^(-2u), clamped finite so
 * that e s stays 1 where s underflows): s + 2 x s (1 - s) du/dx. */
INLINE vf vgelu_tanh_grad(vf x)
{
    vf e = vexp(vmin(vset1(88.0f), vgelu_tanh_arg(x)));
    vf s = vdiv(vset1(1.0f), vadd(vset1(1.0f), e));
    vf du = vmul(vset1(SQRT_2_OVER_PI), vfma(vset1(3.0f * GELU_C), vmul(x, x), vset1(1.0f)));
    vf t = vmul(vmul(vmul(vset1(2.0f), x), s), vmul(vmul(e, s), du));
    return vadd(s, t);
}

INLINE vf vsigmoid(vf x)
{
    return vdiv(vset1(1.0f), vadd(vset1(1.0f), vexp(vsub(vzero(), x))));
}

/* --------------------------------------------------------- unary ops */

/* Applies EXPR (of x) to n floats: full vectors, then one masked one. */
#define MAP1(EXPR)                                                                                 \
    do {                                                                                           \
        int64_t i = 0;                                                                             \
        for (; i + VW <= n; i += VW) {                                                             \
            vf x = vload(xp + i);                                                                  \
            vstore(y + i, (EXPR));                                                                 \
        }                                                                                          \
        if (i < n) {                                                                               \
            vf x = vload_n(xp + i, n - i, 0.0f);                                                   \
            vstore_n(y + i, (EXPR), n - i);                                                        \
        }                                                                                          \
    } while (0)

static int FN(unary_fwd)(tm_unary op, float *y, const float *xp, int64_t n, float a, float b)
{
    switch (op) {
    case TM_UNARY_EXP: MAP1(vexp(x)); return 1;
    case TM_UNARY_SQRT: MAP1(vsqrt(x)); return 1;
    case TM_UNARY_SIGMOID: MAP1(vsigmoid(x)); return 1;
    case TM_UNARY_RELU: MAP1(vmax(x, vzero())); return 1; /* NaN gives 0, as the C loop */
    case TM_UNARY_GELU: MAP1(vgelu(x)); return 1;
    case TM_UNARY_GELU_TANH: MAP1(vgelu_tanh(x)); return 1;
    case TM_UNARY_SILU: MAP1(vmul(x, vsigmoid(x))); return 1;
    case TM_UNARY_ERF: MAP1(verf(x)); return 1;
    case TM_UNARY_SCALE: {
        vf va = vset1(a), vb = vset1(b);
        MAP1(vfma(va, x, vb));
        return 1;
    }
    case TM_UNARY_LOG:
    case TM_UNARY_TANH: return 0;
    }
    return 0;
}

/* dx[i] += dy[i] * DERIV, DERIV an expression of x (x[i]) and y (y[i]);
 * the pointers px and py are only read when the expression names x or y. */
#define MAP_BWD(LOADX, LOADY, DERIV)                                                               \
    do {                                                                                           \
        int64_t i = 0;                                                                             \
        for (; i + VW <= n; i += VW) {                                                             \
            vf x = LOADX ? vload(px + i) : vzero(), y = LOADY ? vload(py + i) : vzero();           \
            (void)x, (void)y;                                                                      \
            vstore(dx + i, vfma(vload(dy + i), (DERIV), vload(dx + i)));                           \
        }                                                                                          \
        if (i < n) {                                                                               \
            int64_t r = n - i;                                                                     \
            vf x = LOADX ? vload_n(px + i, r, 1.0f) : vzero();                                     \
            vf y = LOADY ? vload_n(py + i, r, 1.0f) : vzero();                                     \
            (void)x, (void)y;                                                                      \
            vstore_n(dx + i, vfma(vload_n(dy + i, r, 0.0f), (DERIV), vload_n(dx + i, r, 0.0f)),    \
                     r);                                                                           \
        }                                                                                          \
    } while (0)

static int FN(unary_bwd)(tm_unary op, float *dx, const float *dy, const float *px, const float *py,
                         int64_t n, float a)
{
    const vf one = vset1(1.0f);
    switch (op) {
    case TM_UNARY_EXP: MAP_BWD(0, 1, y); return 1;
    case TM_UNARY_LOG: MAP_BWD(1, 0, vdiv(one, x)); return 1;
    case TM_UNARY_SQRT: MAP_BWD(0, 1, vdiv(vset1(0.5f), y)); return 1;
    case TM_UNARY_TANH: MAP_BWD(0, 1, vfnma(y, y, one)); return 1;
    case TM_UNARY_SIGMOID: MAP_BWD(0, 1, vmul(y, vsub(one, y))); return 1;
    case TM_UNARY_RELU: {
        /* a blend, not a product: dy = inf or NaN where x <= 0 adds nothing */
        int64_t i = 0;
        for (; i < n; i += VW) {
            int64_t r = n - i;
            vf x = r >= VW ? vload(px + i) : vload_n(px + i, r, 0.0f);
            vf g = r >= VW ? vload(dy + i) : vload_n(dy + i, r, 0.0f);
            vf d = r >= VW ? vload(dx + i) : vload_n(dx + i, r, 0.0f);
            d = vadd(d, vblend(vgt(x, vzero()), vzero(), g));
            if (r >= VW)
                vstore(dx + i, d);
            else
                vstore_n(dx + i, d, r);
        }
        return 1;
    }
    case TM_UNARY_GELU: MAP_BWD(1, 0, vgelu_grad(x)); return 1;
    case TM_UNARY_GELU_TANH: MAP_BWD(1, 0, vgelu_tanh_grad(x)); return 1;
    case TM_UNARY_SILU: {
        /* s (1 + x (1 - s)) */
        MAP_BWD(1, 0, vmul(vsigmoid(x), vfma(x, vsub(one, vsigmoid(x)), one)));
        return 1;
    }
    case TM_UNARY_SCALE: MAP_BWD(0, 0, vset1(a)); return 1;
    case TM_UNARY_ERF:
        MAP_BWD(1, 0, vmul(vset1(1.12837916709551257f), vexp_negsq(x, 1.0f, 10.3f)));
        return 1;
    }
    return 0;
}

/* -------------------------------------------------------- binary ops */

/* out[i] = a[i*sa] OP b[i*sb]: sa and sb (0 or 1) chosen outside the loop. */
#define BIN_ROW(OPV)                                                                               \
    do {                                                                                           \
        int64_t i = 0;                                                                             \
        vf ca = vset1(a[0]), cb = vset1(b[0]);                                                     \
        for (; i + VW <= n; i += VW) {                                                             \
            vf va = sa ? vload(a + i) : ca, vb = sb ? vload(b + i) : cb;                           \
            vstore(out + i, OPV(va, vb));                                                          \
        }                                                                                          \
        if (i < n) {                                                                               \
            vf va = sa ? vload_n(a + i, n - i, 1.0f) : ca,                                         \
               vb = sb ? vload_n(b + i, n - i, 1.0f) : cb;                                         \
            vstore_n(out + i, OPV(va, vb), n - i);                                                 \
        }                                                                                          \
    } while (0)

static void FN(binary_row)(tm_binary op, float *out, const float *a, int64_t sa, const float *b,
                           int64_t sb, int64_t n)
{
    if (n <= 0) return;
    switch (op) {
    case TM_BINARY_ADD: BIN_ROW(vadd); break;
    case TM_BINARY_SUB: BIN_ROW(vsub); break;
    case TM_BINARY_MUL: BIN_ROW(vmul); break;
    case TM_BINARY_DIV: BIN_ROW(vdiv); break;
    }
}

/* d[i] += EXPR(g, va, vb) over one row; a and b as in BIN_ROW. */
#define BIN_BWD_ROW(EXPR)                                                                          \
    do {                                                                                           \
        int64_t i = 0;                                                                             \
        vf ca = vset1(a[0]), cb = vset1(b[0]);                                                     \
        for (; i + VW <= n; i += VW) {                                                             \
            vf g = vload(gp + i);                                                                  \
            vf va = sa ? vload(a + i) : ca, vb = sb ? vload(b + i) : cb;                           \
            (void)va, (void)vb;                                                                    \
            vstore(d + i, vadd(vload(d + i), (EXPR)));                                             \
        }                                                                                          \
        if (i < n) {                                                                               \
            int64_t r = n - i;                                                                     \
            vf g = vload_n(gp + i, r, 0.0f);                                                       \
            vf va = sa ? vload_n(a + i, r, 1.0f) : ca, vb = sb ? vload_n(b + i, r, 1.0f) : cb;     \
            (void)va, (void)vb;                                                                    \
            vstore_n(d + i, vadd(vload_n(d + i, r, 0.0f), (EXPR)), r);                             \
        }                                                                                          \
    } while (0)

/* The same formulas as basic.c's dgrad, in the same order of operations. */
static void FN(binary_bwd_row)(tm_binary op, int which, float *d, const float *gp, const float *a,
                               int64_t sa, const float *b, int64_t sb, int64_t n)
{
    if (n <= 0) return;
    switch (op) {
    case TM_BINARY_ADD: BIN_BWD_ROW(g); break;
    case TM_BINARY_SUB:
        if (which)
            BIN_BWD_ROW(vsub(vzero(), g));
        else
            BIN_BWD_ROW(g);
        break;
    case TM_BINARY_MUL:
        if (which)
            BIN_BWD_ROW(vmul(g, va));
        else
            BIN_BWD_ROW(vmul(g, vb));
        break;
    case TM_BINARY_DIV:
        if (which)
            BIN_BWD_ROW(vdiv(vmul(vsub(vzero(), g), va), vmul(vb, vb)));
        else
            BIN_BWD_ROW(vdiv(g, vb));
        break;
    }
}

/* ------------------------------------------------------------ rows */

/* Sum of n floats in VW lanes and two accumulators (a fixed order). */
INLINE float row_sum(const float *x, int64_t n)
{
    vf s0 = vzero(), s1 = vzero();
    int64_t i = 0;
    for (; i + 2 * VW <= n; i += 2 * VW) {
        s0 = vadd(s0, vload(x + i));
        s1 = vadd(s1, vload(x + i + VW));
    }
    for (; i + VW <= n; i += VW)
        s0 = vadd(s0, vload(x + i));
    if (i < n) s1 = vadd(s1, vload_n(x + i, n - i, 0.0f));
    return vhsum(vadd(s0, s1));
}

/* Sum of (x - m)^2, the same way. */
INLINE float row_sqdev(const float *x, float m, int64_t n)
{
    vf s0 = vzero(), s1 = vzero(), vm_ = vset1(m);
    int64_t i = 0;
    for (; i + 2 * VW <= n; i += 2 * VW) {
        vf d0 = vsub(vload(x + i), vm_), d1 = vsub(vload(x + i + VW), vm_);
        s0 = vfma(d0, d0, s0);
        s1 = vfma(d1, d1, s1);
    }
    for (; i + VW <= n; i += VW) {
        vf d = vsub(vload(x + i), vm_);
        s0 = vfma(d, d, s0);
    }
    if (i < n) {
        vf d = vsub(vload_n(x + i, n - i, m), vm_); /* the fill makes d 0 */
        s1 = vfma(d, d, s1);
    }
    return vhsum(vadd(s0, s1));
}

static void FN(layernorm_row)(float *y, float *mp, float *rsp, const float *x, const float *w,
                              const float *b, int64_t C, float eps)
{
    float m = row_sum(x, C) / (float)C;
    float var = row_sqdev(x, m, C) / (float)C;
    float rs = (float)(1.0 / sqrt((double)var + (double)eps));
    *mp = m;
    *rsp = rs;
    vf vmn = vset1(m), vrs = vset1(rs);
    for (int64_t i = 0; i < C; i += VW) {
        int64_t r = C - i;
        vf nv = vmul(vsub(r >= VW ? vload(x + i) : vload_n(x + i, r, m), vmn), vrs);
        if (w) nv = vmul(nv, r >= VW ? vload(w + i) : vload_n(w + i, r, 1.0f));
        if (b) nv = vadd(nv, r >= VW ? vload(b + i) : vload_n(b + i, r, 0.0f));
        if (r >= VW)
            vstore(y + i, nv);
        else
            vstore_n(y + i, nv, r);
    }
}

static void FN(layernorm_bwd_row)(float *dx, const float *dy, const float *x, const float *w,
                                  float m, float rs, int64_t C)
{
    vf vmn = vset1(m), vrs = vset1(rs);
    vf sg = vzero(), sgn = vzero();
    int64_t i = 0;
    /* g = dy * w, n = (x - m) * rs; sums of g and g * n */
    for (; i + VW <= C; i += VW) {
        vf g = vload(dy + i);
        if (w) g = vmul(g, vload(w + i));
        vf nv = vmul(vsub(vload(x + i), vmn), vrs);
        sg = vadd(sg, g);
        sgn = vfma(g, nv, sgn);
    }
    if (i < C) {
        vf g = vload_n(dy + i, C - i, 0.0f);
        if (w) g = vmul(g, vload_n(w + i, C - i, 0.0f));
        vf nv = vmul(vsub(vload_n(x + i, C - i, m), vmn), vrs);
        sg = vadd(sg, g);
        sgn = vfma(g, nv, sgn);
    }
    vf mg = vset1(vhsum(sg) / (float)C), mgn = vset1(vhsum(sgn) / (float)C);
    for (i = 0; i < C; i += VW) {
        int64_t r = C - i;
        vf g = r >= VW ? vload(dy + i) : vload_n(dy + i, r, 0.0f);
        if (w) g = vmul(g, r >= VW ? vload(w + i) : vload_n(w + i, r, 0.0f));
        vf nv = vmul(vsub(r >= VW ? vload(x + i) : vload_n(x + i, r, m), vmn), vrs);
        vf d = r >= VW ? vload(dx + i) : vload_n(dx + i, r, 0.0f);
        d = vfma(vrs, vsub(vsub(g, mg), vmul(nv, mgn)), d);
        if (r >= VW)
            vstore(dx + i, d);
        else
            vstore_n(dx + i, d, r);
    }
}

/* Column sums run over all rows with the sums in registers, a block of
 * COLS columns at a time: the same additions, in the same row order, as
 * adding each row into memory, without a load and store of d per row.
 * A block reads a few cache lines from each row, ld floats apart: the
 * hardware prefetcher does not follow such a pattern, hence the software
 * prefetch a few rows ahead. */
#define COLS (4 * VW)
#define PREFETCH_ROWS 6

INLINE void prefetch_row(const float *p, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16)
        _mm_prefetch((const char *)(p + i), _MM_HINT_T0);
}

static void FN(norm_param_grad)(float *dw, float *db, const float *dy, const float *x,
                                const float *mean, const float *rstd, int64_t rows, int64_t ld,
                                int64_t n)
{
    for (int64_t i0 = 0; i0 < n; i0 += COLS) {
        int64_t w = n - i0 < COLS ? n - i0 : COLS;
        vf aw[4], ab[4];
        for (int k = 0; k < 4; k++) {
            int64_t r = w - k * VW;
            aw[k] = !dw || r <= 0 ? vzero()
                    : r >= VW     ? vload(dw + i0 + k * VW)
                                  : vload_n(dw + i0 + k * VW, r, 0.0f);
            ab[k] = !db || r <= 0 ? vzero()
                    : r >= VW     ? vload(db + i0 + k * VW)
                                  : vload_n(db + i0 + k * VW, r, 0.0f);
        }
        for (int64_t row = 0; row < rows; row++) {
            const float *g = dy + row * ld + i0, *xr = x + row * ld + i0;
            if (row + PREFETCH_ROWS < rows) {
                prefetch_row(g + PREFETCH_ROWS * ld, w);
                if (dw) prefetch_row(xr + PREFETCH_ROWS * ld, w);
            }
            vf vm_ = vset1(mean ? mean[row] : 0.0f), vrs = vset1(rstd[row]);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                int64_t r = w - k * VW;
                if (r <= 0) break;
                vf gv = r >= VW ? vload(g + k * VW) : vload_n(g + k * VW, r, 0.0f);
                if (dw) {
                    vf xv = r >= VW ? vload(xr + k * VW) : vload_n(xr + k * VW, r, 0.0f);
                    aw[k] = vfma(vmul(gv, vsub(xv, vm_)), vrs, aw[k]);
                }
                if (db) ab[k] = vadd(ab[k], gv);
            }
        }
        for (int k = 0; k < 4; k++) {
            int64_t r = w - k * VW;
            if (r <= 0) break;
            if (dw) {
                if (r >= VW)
                    vstore(dw + i0 + k * VW, aw[k]);
                else
                    vstore_n(dw + i0 + k * VW, aw[k], r);
            }
            if (db) {
                if (r >= VW)
                    vstore(db + i0 + k * VW, ab[k]);
                else
                    vstore_n(db + i0 + k * VW, ab[k], r);
            }
        }
    }
}

static void FN(column_sum)(float *d, const float *gp, int64_t rows, int64_t ld, int64_t n,
                           float sign)
{
    for (int64_t i0 = 0; i0 < n; i0 += COLS) {
        int64_t w = n - i0 < COLS ? n - i0 : COLS;
        vf acc[4];
        for (int k = 0; k < 4; k++) {
            int64_t r = w - k * VW;
            acc[k] = r <= 0    ? vzero()
                     : r >= VW ? vload(d + i0 + k * VW)
                               : vload_n(d + i0 + k * VW, r, 0.0f);
        }
        for (int64_t row = 0; row < rows; row++) {
            const float *g = gp + row * ld + i0;
            if (row + PREFETCH_ROWS < rows) prefetch_row(g + PREFETCH_ROWS * ld, w);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                int64_t r = w - k * VW;
                if (r <= 0) break;
                vf gv = r >= VW ? vload(g + k * VW) : vload_n(g + k * VW, r, 0.0f);
                acc[k] = sign < 0 ? vsub(acc[k], gv) : vadd(acc[k], gv);
            }
        }
        for (int k = 0; k < 4; k++) {
            int64_t r = w - k * VW;
            if (r <= 0) break;
            if (r >= VW)
                vstore(d + i0 + k * VW, acc[k]);
            else
                vstore_n(d + i0 + k * VW, acc[k], r);
        }
    }
}

static void FN(softmax_row)(float *y, const float *x, int64_t C, int log)
{
    vf mx = vset1(-INFINITY);
    int64_t i = 0;
    for (; i + VW <= C; i += VW)
        mx = vmax(mx, vload(x + i));
    if (i < C) mx = vmax(mx, vload_n(x + i, C - i, -INFINITY));
    float m = vhmax(mx);
    vf vmn = vset1(m), s = vzero();
    /* e^(x - m), kept in y for the plain softmax */
    for (i = 0; i < C; i += VW) {
        int64_t r = C - i;
        vf e = vexp(vsub(r >= VW ? vload(x + i) : vload_n(x + i, r, -INFINITY), vmn));
        s = vadd(s, e);
        if (!log) {
            if (r >= VW)
                vstore(y + i, e);
            else
                vstore_n(y + i, e, r);
        }
    }
    float sum = vhsum(s);
    if (log) {
        vf lse = vset1(m + logf(sum));
        for (i = 0; i < C; i += VW) {
            int64_t r = C - i;
            if (r >= VW)
                vstore(y + i, vsub(vload(x + i), lse));
            else
                vstore_n(y + i, vsub(vload_n(x + i, r, 0.0f), lse), r);
        }
    } else {
        vf inv = vset1(1.0f / sum);
        for (i = 0; i < C; i += VW) {
            int64_t r = C - i;
            if (r >= VW)
                vstore(y + i, vmul(vload(y + i), inv));
            else
                vstore_n(y + i, vmul(vload_n(y + i, r, 0.0f), inv), r);
        }
    }
}

static void FN(softmax_bwd_row)(float *dx, const float *dy, const float *y, int64_t C, int log)
{
    vf s = vzero();
    for (int64_t i = 0; i < C; i += VW) {
        int64_t r = C - i;
        vf g = r >= VW ? vload(dy + i) : vload_n(dy + i, r, 0.0f);
        if (log)
            s = vadd(s, g);
        else
            s = vfma(g, r >= VW ? vload(y + i) : vload_n(y + i, r, 0.0f), s);
    }
    vf vs = vset1(vhsum(s));
    for (int64_t i = 0; i < C; i += VW) {
        int64_t r = C - i;
        vf g = r >= VW ? vload(dy + i) : vload_n(dy + i, r, 0.0f);
        vf yv = r >= VW ? vload(y + i) : vload_n(y + i, r, 0.0f);
        vf d = r >= VW ? vload(dx + i) : vload_n(dx + i, r, 0.0f);
        /* log: dy - e^y s; plain: y (dy - s) */
        d = log ? vadd(d, vfnma(vexp(yv), vs, g)) : vfma(yv, vsub(g, vs), d);
        if (r >= VW)
            vstore(dx + i, d);
        else
            vstore_n(dx + i, d, r);
    }
}

const tm_basic_simd FN(tm_basic_simd) = {
    .unary_fwd = FN(unary_fwd),
    .unary_bwd = FN(unary_bwd),
    .binary_row = FN(binary_row),
    .binary_bwd_row = FN(binary_bwd_row),
    .layernorm_row = FN(layernorm_row),
    .layernorm_bwd_row = FN(layernorm_bwd_row),
    .norm_param_grad = FN(norm_param_grad),
    .column_sum = FN(column_sum),
    .softmax_row = FN(softmax_row),
    .softmax_bwd_row = FN(softmax_bwd_row),
};
