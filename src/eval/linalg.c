/*
 * Double-precision dense kernels for FID: dot products, C = A B^T and a symmetric
 * eigen-solver (Householder tridiagonalisation, implicit QL with Wilkinson
 * shifts, as in EISPACK's tred2/tql2), written for row-major storage.
 *
 * The library links no LAPACK, so these are ours. Every parallel loop
 * splits independent outputs (rows, or columns of a row update), never a
 * sum, so results are bitwise the same for any thread count.
 *
 * Layout choice: eigenvectors are kept as ROWS of a matrix W (W = V^T), so
 * each Givens rotation of the QL sweep mixes two contiguous rows. A sweep's
 * rotations are recorded first and then applied to W in parallel over
 * column ranges (each column sees the rotations in sweep order).
 */
#include <math.h>
#include <string.h>

#include "eval_internal.h"

/* ------------------------------------------------------------ kernels */

/* The inner loops, in plain C and (chosen at run time by tm_cpu_isa())
 * AVX2+FMA. Each fixes its own summation order, so results do not depend
 * on the thread count; the two variants differ by rounding only. */

static double dot_c(const double *a, const double *b, int64_t n)
{
    double s0 = 0, s1 = 0;
    int64_t t = 0;
    for (; t + 2 <= n; t += 2) {
        s0 += a[t] * b[t];
        s1 += a[t + 1] * b[t + 1];
    }
    if (t < n) s0 += a[t] * b[t];
    return s0 + s1;
}

static void dot4_c(const double *a, const double *b, int64_t ldb, int64_t n, double *out)
{
    const double *b0 = b, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t t = 0; t < n; t++) {
        double av = a[t];
        s0 += av * b0[t];
        s1 += av * b1[t];
        s2 += av * b2[t];
        s3 += av * b3[t];
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* y += alpha x */
static void axpy_c(double *y, double alpha, const double *x, int64_t n)
{
    for (int64_t j = 0; j < n; j++) y[j] += alpha * x[j];
}

/* y -= a x1 + b x2 */
static void rank2_c(double *y, double a, const double *x1, double b, const double *x2, int64_t n)
{
    for (int64_t j = 0; j < n; j++) y[j] -= a * x1[j] + b * x2[j];
}

/* (x, y) <- (c x - s y, s x + c y) */
static void rot_c(double *x, double *y, double c, double s, int64_t n)
{
    for (int64_t k = 0; k < n; k++) {
        double h = y[k];
        y[k] = s * x[k] + c * h;
        x[k] = c * x[k] - s * h;
    }
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TGT __attribute__((target("avx2,fma")))

TGT static double hsum(__m256d v)
{
    __m128d lo = _mm256_castpd256_pd128(v), hi = _mm256_extractf128_pd(v, 1);
    lo = _mm_add_pd(lo, hi);
    return _mm_cvtsd_f64(lo) + _mm_cvtsd_f64(_mm_unpackhi_pd(lo, lo));
}

TGT static double dot_avx2(const double *a, const double *b, int64_t n)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) {
        s0 = _mm256_fmadd_pd(_mm256_loadu_pd(a + t), _mm256_loadu_pd(b + t), s0);
        s1 = _mm256_fmadd_pd(_mm256_loadu_pd(a + t + 4), _mm256_loadu_pd(b + t + 4), s1);
    }
    double s = hsum(_mm256_add_pd(s0, s1));
    for (; t < n; t++) s += a[t] * b[t];
    return s;
}

TGT static void dot4_avx2(const double *a, const double *b, int64_t ldb, int64_t n, double *out)
{
    const double *b0 = b, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd(), s2 = _mm256_setzero_pd(),
            s3 = _mm256_setzero_pd();
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
        __m256d av = _mm256_loadu_pd(a + t);
        s0 = _mm256_fmadd_pd(av, _mm256_loadu_pd(b0 + t), s0);
        s1 = _mm256_fmadd_pd(av, _mm256_loadu_pd(b1 + t), s1);
        s2 = _mm256_fmadd_pd(av, _mm256_loadu_pd(b2 + t), s2);
        s3 = _mm256_fmadd_pd(av, _mm256_loadu_pd(b3 + t), s3);
    }
    double r0 = hsum(s0), r1 = hsum(s1), r2 = hsum(s2), r3 = hsum(s3);
    for (; t < n; t++) {
        r0 += a[t] * b0[t];
        r1 += a[t] * b1[t];
        r2 += a[t] * b2[t];
        r3 += a[t] * b3[t];
    }
    out[0] = r0;
    out[1] = r1;
    out[2] = r2;
    out[3] = r3;
}

TGT static void axpy_avx2(double *y, double alpha, const double *x, int64_t n)
{
    __m256d va = _mm256_set1_pd(alpha);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4)
        _mm256_storeu_pd(y + j, _mm256_fmadd_pd(va, _mm256_loadu_pd(x + j), _mm256_loadu_pd(y + j)));
    for (; j < n; j++) y[j] += alpha * x[j];
}

TGT static void rank2_avx2(double *y, double a, const double *x1, double b, const double *x2,
                           int64_t n)
{
    __m256d va = _mm256_set1_pd(a), vb = _mm256_set1_pd(b);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        __m256d t = _mm256_mul_pd(vb, _mm256_loadu_pd(x2 + j));
        t = _mm256_fmadd_pd(va, _mm256_loadu_pd(x1 + j), t);
        _mm256_storeu_pd(y + j, _mm256_sub_pd(_mm256_loadu_pd(y + j), t));
    }
    for (; j < n; j++) y[j] -= a * x1[j] + b * x2[j];
}

TGT static void rot_avx2(double *x, double *y, double c, double s, int64_t n)
{
    __m256d vc = _mm256_set1_pd(c), vs = _mm256_set1_pd(s);
    int64_t k = 0;
    for (; k + 4 <= n; k += 4) {
        __m256d xv = _mm256_loadu_pd(x + k), yv = _mm256_loadu_pd(y + k);
        _mm256_storeu_pd(y + k, _mm256_fmadd_pd(vs, xv, _mm256_mul_pd(vc, yv)));
        _mm256_storeu_pd(x + k, _mm256_fmsub_pd(vc, xv, _mm256_mul_pd(vs, yv)));
    }
    for (; k < n; k++) {
        double h = y[k];
        y[k] = s * x[k] + c * h;
        x[k] = c * x[k] - s * h;
    }
}
#define HAVE_AVX2 1
#endif

static int avx2(void)
{
#ifdef HAVE_AVX2
    return tm_cpu_isa() >= TM_ISA_AVX2;
#else
    return 0;
#endif
}

double tme_dot(const double *a, const double *b, int64_t n)
{
#ifdef HAVE_AVX2
    if (avx2()) return dot_avx2(a, b, n);
#endif
    return dot_c(a, b, n);
}

void tme_dot4(const double *a, const double *b, int64_t ldb, int64_t n, double *out)
{
#ifdef HAVE_AVX2
    if (avx2()) {
        dot4_avx2(a, b, ldb, n, out);
        return;
    }
#endif
    dot4_c(a, b, ldb, n, out);
}

static void axpy(double *y, double alpha, const double *x, int64_t n)
{
#ifdef HAVE_AVX2
    if (avx2()) {
        axpy_avx2(y, alpha, x, n);
        return;
    }
#endif
    axpy_c(y, alpha, x, n);
}

static void rank2(double *y, double a, const double *x1, double b, const double *x2, int64_t n)
{
#ifdef HAVE_AVX2
    if (avx2()) {
        rank2_avx2(y, a, x1, b, x2, n);
        return;
    }
#endif
    rank2_c(y, a, x1, b, x2, n);
}

static void rot(double *x, double *y, double c, double s, int64_t n)
{
#ifdef HAVE_AVX2
    if (avx2()) {
        rot_avx2(x, y, c, s, n);
        return;
    }
#endif
    rot_c(x, y, c, s, n);
}

/* ------------------------------------------------------------ C = A B^T */

typedef struct {
    double *c;
    const double *a, *b;
    int64_t n, m, k;
} nt_ctx;

static void nt_rows(void *vctx, int64_t begin, int64_t end)
{
    const nt_ctx *x = vctx;
    const int64_t m = x->m, k = x->k;
    for (int64_t i = begin; i < end; i++) {
        const double *ai = x->a + i * k;
        double *ci = x->c + i * m;
        int64_t j = 0;
        for (; j + 4 <= m; j += 4) tme_dot4(ai, x->b + j * k, k, k, ci + j);
        for (; j < m; j++) ci[j] = tme_dot(ai, x->b + j * k, k);
    }
}

/* c (n, m) = a (n, k) * b (m, k)^T */
static void dgemm_nt(double *c, const double *a, const double *b, int64_t n, int64_t m,
                     int64_t k)
{
    nt_ctx x = {c, a, b, n, m, k};
    tm_parallel_range(n, n * m * k / 8 + 1, nt_rows, &x);
}

/* ------------------------------------------------- Householder steps */

typedef struct {
    double *a; /* (n, n) */
    int64_t n, off, len; /* trailing block [off, off + len) */
    const double *v;     /* (len) */
    double *p;           /* (len) */
    const double *w;     /* (len) */
    double beta;
} hh_ctx;

/* p = beta * A22 v, row by row */
static void hh_matvec(void *vctx, int64_t begin, int64_t end)
{
    const hh_ctx *x = vctx;
    for (int64_t i = begin; i < end; i++)
        x->p[i] = x->beta * tme_dot(x->a + (x->off + i) * x->n + x->off, x->v, x->len);
}

/* A22 -= v w^T + w v^T */
static void hh_update(void *vctx, int64_t begin, int64_t end)
{
    const hh_ctx *x = vctx;
    for (int64_t i = begin; i < end; i++)
        rank2(x->a + (x->off + i) * x->n + x->off, x->v[i], x->w, x->w[i], x->v, x->len);
}

/* Q block update for back-accumulation: u = v^T Q22 over column ranges,
 * then Q22 -= beta v u^T over rows. */
typedef struct {
    double *q;
    int64_t n, off, len;
    const double *v;
    double *u;
    double beta;
} acc_ctx;

static void acc_u(void *vctx, int64_t begin, int64_t end)
{
    const acc_ctx *x = vctx;
    for (int64_t j = begin; j < end; j++) x->u[j] = 0;
    for (int64_t i = 0; i < x->len; i++)
        axpy(x->u + begin, x->v[i], x->q + (x->off + i) * x->n + x->off + begin, end - begin);
}

static void acc_update(void *vctx, int64_t begin, int64_t end)
{
    const acc_ctx *x = vctx;
    for (int64_t i = begin; i < end; i++)
        axpy(x->q + (x->off + i) * x->n + x->off, -x->beta * x->v[i], x->u, x->len);
}

/* ----------------------------------------------------- QL rotations */

typedef struct {
    double *w; /* (n, n) eigenvector rows */
    int64_t n, lo, hi; /* rotations for i = hi - 1 down to lo */
    const double *c, *s; /* indexed by i */
} rot_ctx;

static void rot_apply(void *vctx, int64_t begin, int64_t end)
{
    const rot_ctx *x = vctx;
    for (int64_t i = x->hi - 1; i >= x->lo; i--) {
        double *ri = x->w + i * x->n;
        rot(ri + begin, ri + x->n + begin, x->c[i], x->s[i], end - begin);
    }
}

tm_status tme_sym_eig(double *a, int64_t n, double *wout, double *vecs)
{
    if (n <= 0) return TM_OK;
    if (n == 1) {
        wout[0] = a[0];
        if (vecs) vecs[0] = 1;
        return TM_OK;
    }
    size_t nn = (size_t)n;
    /* scratch: d, e, v, p, w, c, s (n each) and the Householder betas */
    double *scratch = tm_alloc(8 * nn * sizeof(double));
    if (!scratch) return tm_fail(TM_ERR_NOMEM, "eigen-solver: out of memory (n = %lld)", (long long)n);
    double *d = scratch, *e = d + nn, *v = e + nn, *p = v + nn, *w = p + nn, *cs = w + nn,
           *sn = cs + nn, *betas = sn + nn;

    /* Householder: reflect column k below the subdiagonal; v is stored in
     * row k of a, columns k+1.. (the upper triangle is no longer needed
     * there: the update only touches the trailing block). */
    for (int64_t k = 0; k + 2 < n; k++) {
        int64_t off = k + 1, len = n - off;
        double *x = a + k * n + off; /* row k, trailing part = column k below (symmetric) */
        double norm2 = 0;
        for (int64_t i = 1; i < len; i++) norm2 += x[i] * x[i];
        d[k] = a[k * n + k];
        if (norm2 == 0) {
            e[k] = x[0];
            betas[k] = 0;
            continue;
        }
        double norm = sqrt(norm2 + x[0] * x[0]);
        double alpha = x[0] > 0 ? -norm : norm;
        for (int64_t i = 0; i < len; i++) v[i] = x[i];
        v[0] -= alpha;
        double vv = v[0] * v[0] + norm2;
        double beta = 2.0 / vv;
        hh_ctx hc = {a, n, off, len, v, p, w, beta};
        tm_parallel_range(len, len * len, hh_matvec, &hc);
        double pv = 0;
        for (int64_t i = 0; i < len; i++) pv += p[i] * v[i];
        double kk = 0.5 * beta * pv;
        for (int64_t i = 0; i < len; i++) w[i] = p[i] - kk * v[i];
        tm_parallel_range(len, len * len, hh_update, &hc);
        e[k] = alpha;
        betas[k] = beta;
        for (int64_t i = 0; i < len; i++) x[i] = v[i];
    }
    d[n - 2] = a[(n - 2) * n + n - 2];
    d[n - 1] = a[(n - 1) * n + n - 1];
    e[n - 2] = a[(n - 1) * n + n - 2];
    e[n - 1] = 0;

    /* Q = H_0 ... H_{n-3}, accumulated backwards into vecs, then
     * transposed in place so its rows are Q's columns. */
    if (vecs) {
        memset(vecs, 0, nn * nn * sizeof(double));
        for (int64_t i = 0; i < n; i++) vecs[i * n + i] = 1;
        for (int64_t k = n - 3; k >= 0; k--) {
            if (betas[k] == 0) continue;
            int64_t off = k + 1, len = n - off;
            acc_ctx ac = {vecs, n, off, len, a + k * n + off, p, betas[k]};
            tm_parallel_range(len, len * len, acc_u, &ac);
            tm_parallel_range(len, len * len, acc_update, &ac);
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i + 1; j < n; j++) {
                double t = vecs[i * n + j];
                vecs[i * n + j] = vecs[j * n + i];
                vecs[j * n + i] = t;
            }
    }

    /* Implicit QL on the tridiagonal (d, e): e[i] couples i and i+1. */
    const double eps = 0x1p-52;
    double f = 0, tst1 = 0;
    tm_status st = TM_OK;
    for (int64_t l = 0; l < n; l++) {
        double t = fabs(d[l]) + fabs(e[l]);
        if (t > tst1) tst1 = t;
        int64_t m = l;
        while (m < n - 1 && fabs(e[m]) > eps * tst1) m++;
        if (m > l) {
            int iter = 0;
            do {
                if (++iter > 60) {
                    st = tm_fail(TM_ERR_INTERNAL,
                                 "eigen-solver: no convergence at eigenvalue %lld of %lld",
                                 (long long)l, (long long)n);
                    goto done;
                }
                double g = d[l];
                double pp = (d[l + 1] - g) / (2.0 * e[l]);
                double r = hypot(pp, 1.0);
                if (pp < 0) r = -r;
                d[l] = e[l] / (pp + r);
                d[l + 1] = e[l] * (pp + r);
                double dl1 = d[l + 1];
                double h = g - d[l];
                for (int64_t i = l + 2; i < n; i++) d[i] -= h;
                f += h;
                pp = d[m];
                double c = 1, c2 = 1, c3 = 1, el1 = e[l + 1], s = 0, s2 = 0;
                for (int64_t i = m - 1; i >= l; i--) {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * pp;
                    r = hypot(pp, e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = pp / r;
                    pp = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    cs[i] = c;
                    sn[i] = s;
                }
                if (vecs) {
                    rot_ctx rc = {vecs, n, l, m, cs, sn};
                    tm_parallel_range(n, n * (m - l) * 4, rot_apply, &rc);
                }
                pp = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * pp;
                d[l] = c * pp;
            } while (fabs(e[l]) > eps * tst1);
        }
        d[l] += f;
        e[l] = 0;
    }
    /* ascending order, vectors (rows) along */
    for (int64_t i = 0; i < n - 1; i++) {
        int64_t kmin = i;
        for (int64_t j = i + 1; j < n; j++)
            if (d[j] < d[kmin]) kmin = j;
        if (kmin != i) {
            double t = d[i];
            d[i] = d[kmin];
            d[kmin] = t;
            if (vecs)
                for (int64_t j = 0; j < n; j++) {
                    t = vecs[i * n + j];
                    vecs[i * n + j] = vecs[kmin * n + j];
                    vecs[kmin * n + j] = t;
                }
        }
    }
    memcpy(wout, d, nn * sizeof(double));
done:
    tm_free(scratch);
    return st;
}

void tme_dgemm_nt(double *c, const double *a, const double *b, int64_t n, int64_t m, int64_t k)
{
    dgemm_nt(c, a, b, n, m, k);
}
