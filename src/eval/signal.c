/*
 * Signal metrics: SNR and SI-SDR for audio; FID and KID between two sets
 * of embeddings.
 *
 * FID needs tr((C_a C_b)^(1/2)). C_a C_b is not symmetric, but it is
 * similar to C_a^(1/2) C_b C_a^(1/2), which is symmetric positive
 * semi-definite, so the trace is the sum of square roots of that matrix's
 * eigenvalues. With C_a = V^T diag(l) V (rows of V the eigenvectors) and
 * B = diag(sqrt(l)) V, C_a^(1/2) C_b C_a^(1/2) = V^T (B C_b B^T) V, whose
 * eigenvalues are those of B C_b B^T: one eigendecomposition with vectors,
 * two matrix products, one without vectors. Unlike scipy's sqrtm on the
 * product (pytorch-fid), this never leaves the reals and needs no
 * diagonal offset for singular covariances.
 */
#include <math.h>
#include <string.h>

#include "eval_internal.h"
#include "trimodal/ops.h"

static tm_status check_finite(const char *fn, const char *what, const float *x, int64_t n,
                              int64_t row_len)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            if (row_len > 1)
                return tm_fail(TM_ERR_INVALID, "%s: %s[%lld][%lld] is %g; values must be finite", fn,
                               what, (long long)(i / row_len), (long long)(i % row_len),
                               (double)x[i]);
            return tm_fail(TM_ERR_INVALID, "%s: %s[%lld] is %g; values must be finite", fn, what,
                           (long long)i, (double)x[i]);
        }
    return TM_OK;
}

tm_status tm_snr(const float *ref, const float *est, int64_t n, double *snr_db)
{
    static const char *fn = "tm_snr";
    if (!ref || !est || !snr_db)
        return tm_fail(TM_ERR_INVALID, "%s: ref, est and snr_db must not be NULL", fn);
    if (n <= 0) return tm_fail(TM_ERR_INVALID, "%s: n = %lld samples, must be > 0", fn, (long long)n);
    tm_status st;
    if ((st = check_finite(fn, "ref", ref, n, 1)) || (st = check_finite(fn, "est", est, n, 1)))
        return st;
    double sig = 0, noise = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = ref[i], d = (double)ref[i] - (double)est[i];
        sig += r * r;
        noise += d * d;
    }
    if (sig == 0)
        return tm_fail(TM_ERR_INVALID, "%s: the reference is silent (all zeros); SNR is undefined", fn);
    *snr_db = noise == 0 ? INFINITY : 10.0 * log10(sig / noise);
    return TM_OK;
}

tm_status tm_si_sdr(const float *ref, const float *est, int64_t n, int zero_mean,
                    double *si_sdr_db)
{
    static const char *fn = "tm_si_sdr";
    if (!ref || !est || !si_sdr_db)
        return tm_fail(TM_ERR_INVALID, "%s: ref, est and si_sdr_db must not be NULL", fn);
    if (n <= 0) return tm_fail(TM_ERR_INVALID, "%s: n = %lld samples, must be > 0", fn, (long long)n);
    tm_status st;
    if ((st = check_finite(fn, "ref", ref, n, 1)) || (st = check_finite(fn, "est", est, n, 1)))
        return st;
    double mr = 0, me = 0;
    if (zero_mean) {
        for (int64_t i = 0; i < n; i++) {
            mr += ref[i];
            me += est[i];
        }
        mr /= (double)n;
        me /= (double)n;
    }
    double rr = 0, er = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = ref[i] - mr, e = est[i] - me;
        rr += r * r;
        er += e * r;
    }
    if (rr == 0)
        return tm_fail(TM_ERR_INVALID, "%s: the reference is %s; SI-SDR is undefined", fn,
                       zero_mean ? "constant" : "silent (all zeros)");
    double a = er / rr, tt = 0, nn = 0;
    for (int64_t i = 0; i < n; i++) {
        double t = a * (ref[i] - mr), d = (est[i] - me) - t;
        tt += t * t;
        nn += d * d;
    }
    if (nn == 0) *si_sdr_db = INFINITY;
    else if (tt == 0) *si_sdr_db = -INFINITY;
    else *si_sdr_db = 10.0 * log10(tt / nn);
    return TM_OK;
}

/* ------------------------------------------------------------ statistics */

#define CHUNK 256 /* rows of x transposed at once for the covariance */

typedef struct {
    double *cov;       /* (d, d), upper triangle accumulated */
    const double *xt;  /* (d, rows) centred, transposed chunk */
    int64_t d, rows;
} syrk_ctx;

static void syrk_rows(void *vctx, int64_t begin, int64_t end)
{
    const syrk_ctx *c = vctx;
    const int64_t d = c->d, r = c->rows;
    double t[4];
    for (int64_t i = begin; i < end; i++) {
        const double *xi = c->xt + i * r;
        double *ci = c->cov + i * d;
        int64_t j = i;
        for (; j + 4 <= d; j += 4) {
            tme_dot4(xi, c->xt + j * r, r, r, t);
            ci[j] += t[0];
            ci[j + 1] += t[1];
            ci[j + 2] += t[2];
            ci[j + 3] += t[3];
        }
        for (; j < d; j++) ci[j] += tme_dot(xi, c->xt + j * r, r);
    }
}

static tm_status stats(const char *fn, const float *x, int64_t n, int64_t d, double *mean,
                       double *cov)
{
    memset(mean, 0, (size_t)d * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) mean[j] += x[i * d + j];
    for (int64_t j = 0; j < d; j++) mean[j] /= (double)n;
    int64_t chunk = n < CHUNK ? n : CHUNK;
    double *xt = tm_alloc((size_t)(d * chunk) * sizeof(double));
    if (!xt) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    memset(cov, 0, (size_t)(d * d) * sizeof(double));
    for (int64_t r0 = 0; r0 < n; r0 += chunk) {
        int64_t rows = n - r0 < chunk ? n - r0 : chunk;
        for (int64_t t = 0; t < rows; t++)
            for (int64_t j = 0; j < d; j++) xt[j * rows + t] = x[(r0 + t) * d + j] - mean[j];
        syrk_ctx c = {cov, xt, d, rows};
        tm_parallel_range(d, d * d * rows / 2 + 1, syrk_rows, &c);
    }
    tm_free(xt);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = i; j < d; j++) {
            double v = cov[i * d + j] / (double)(n - 1);
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    return TM_OK;
}

static tm_status check_set(const char *fn, const char *name, const float *x, int64_t n, int64_t d)
{
    if (!x) return tm_fail(TM_ERR_INVALID, "%s: %s must not be NULL", fn, name);
    if (n < 2)
        return tm_fail(TM_ERR_INVALID, "%s: %s has %lld rows; at least 2 are needed", fn, name,
                       (long long)n);
    size_t sz;
    if (!tm_mul_size((size_t)n, (size_t)d, &sz) || !tm_mul_size(sz, sizeof(double), &sz))
        return tm_fail(TM_ERR_NOMEM, "%s: %s of %lld x %lld is too large", fn, name, (long long)n,
                       (long long)d);
    return check_finite(fn, name, x, n * d, d);
}

static tm_status check_dim(const char *fn, int64_t d)
{
    size_t sz;
    if (d <= 0) return tm_fail(TM_ERR_INVALID, "%s: dim = %lld, must be > 0", fn, (long long)d);
    if (d > (1 << 16) || !tm_mul_size((size_t)d, (size_t)d, &sz) ||
        !tm_mul_size(sz, 4 * sizeof(double), &sz))
        return tm_fail(TM_ERR_LIMIT, "%s: dim = %lld is too large (at most 65536)", fn,
                       (long long)d);
    return TM_OK;
}

tm_status tm_embedding_stats(const float *x, int64_t n, int64_t dim, double *mean, double *cov)
{
    static const char *fn = "tm_embedding_stats";
    tm_status st;
    if ((st = check_dim(fn, dim)) || (st = check_set(fn, "x", x, n, dim))) return st;
    if (!mean || !cov) return tm_fail(TM_ERR_INVALID, "%s: mean and cov must not be NULL", fn);
    return stats(fn, x, n, dim, mean, cov);
}

tm_status tm_fid_from_stats(const double *mu_a, const double *cov_a, const double *mu_b,
                            const double *cov_b, int64_t dim, double *fid)
{
    static const char *fn = "tm_fid_from_stats";
    tm_status st;
    if ((st = check_dim(fn, dim))) return st;
    if (!mu_a || !cov_a || !mu_b || !cov_b || !fid)
        return tm_fail(TM_ERR_INVALID, "%s: arguments must not be NULL", fn);
    const int64_t d = dim;
    const size_t dd = (size_t)(d * d);
    for (size_t i = 0; i < dd; i++)
        if (!isfinite(cov_a[i]) || !isfinite(cov_b[i]))
            return tm_fail(TM_ERR_INVALID, "%s: covariance entry %zu is not finite", fn, i);
    double dist = 0, tr_a = 0, tr_b = 0;
    for (int64_t j = 0; j < d; j++) {
        if (!isfinite(mu_a[j]) || !isfinite(mu_b[j]))
            return tm_fail(TM_ERR_INVALID, "%s: mean entry %lld is not finite", fn, (long long)j);
        double t = mu_a[j] - mu_b[j];
        dist += t * t;
        tr_a += cov_a[j * d + j];
        tr_b += cov_b[j * d + j];
    }
    double *m = tm_alloc(3 * dd * sizeof(double) + (size_t)d * sizeof(double));
    if (!m) return tm_fail(TM_ERR_NOMEM, "%s: out of memory for dim %lld", fn, (long long)d);
    double *v = m + dd, *t = v + dd, *w = t + dd;
    /* symmetrise a: tiny asymmetries from the caller's arithmetic */
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) m[i * d + j] = 0.5 * (cov_a[i * d + j] + cov_a[j * d + i]);
    if ((st = tme_sym_eig(m, d, w, v))) goto done;
    /* B = diag(sqrt(max(l, 0))) V, in place in v */
    for (int64_t i = 0; i < d; i++) {
        double s = w[i] > 0 ? sqrt(w[i]) : 0;
        for (int64_t j = 0; j < d; j++) v[i * d + j] *= s;
    }
    /* t = B C_b (= B C_b^T, C_b symmetric), m = B t^T = B C_b B^T */
    tme_dgemm_nt(t, v, cov_b, d, d, d);
    tme_dgemm_nt(m, v, t, d, d, d);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = i + 1; j < d; j++) {
            double s = 0.5 * (m[i * d + j] + m[j * d + i]);
            m[i * d + j] = m[j * d + i] = s;
        }
    if ((st = tme_sym_eig(m, d, w, NULL))) goto done;
    double tr_sqrt = 0;
    for (int64_t i = 0; i < d; i++)
        if (w[i] > 0) tr_sqrt += sqrt(w[i]);
    *fid = dist + tr_a + tr_b - 2.0 * tr_sqrt;
done:
    tm_free(m);
    return st;
}

tm_status tm_fid(const float *a, int64_t na, const float *b, int64_t nb, int64_t dim, double *fid)
{
    static const char *fn = "tm_fid";
    tm_status st;
    if ((st = check_dim(fn, dim)) || (st = check_set(fn, "a", a, na, dim)) ||
        (st = check_set(fn, "b", b, nb, dim)))
        return st;
    if (!fid) return tm_fail(TM_ERR_INVALID, "%s: fid must not be NULL", fn);
    const size_t dd = (size_t)(dim * dim);
    double *buf = tm_alloc((2 * dd + 2 * (size_t)dim) * sizeof(double));
    if (!buf) return tm_fail(TM_ERR_NOMEM, "%s: out of memory for dim %lld", fn, (long long)dim);
    double *ca = buf, *cb = ca + dd, *ma = cb + dd, *mb = ma + dim;
    if (!(st = stats(fn, a, na, dim, ma, ca)) && !(st = stats(fn, b, nb, dim, mb, cb)))
        st = tm_fid_from_stats(ma, ca, mb, cb, dim, fid);
    tm_free(buf);
    return st;
}

/* ------------------------------------------------------------------ KID */

tm_kid_params tm_kid_default_params(void)
{
    tm_kid_params p;
    memset(&p, 0, sizeof p);
    p.n_subsets = 100;
    p.subset_size = 1000;
    p.seed = 0;
    return p;
}

/* Sum of (x.y / d + 1)^3 over K = X Y^T, without the diagonal when
 * same (X == Y). */
static double kernel_sum(float *k, const float *x, int64_t nx, const float *y, int64_t ny,
                         int64_t d, int same)
{
    tm_sgemm(0, 1, nx, ny, d, 1.0f / (float)d, x, d, y, d, 0.0f, k, ny);
    double s = 0;
    for (int64_t i = 0; i < nx; i++)
        for (int64_t j = 0; j < ny; j++) {
            if (same && i == j) continue;
            double v = (double)k[i * ny + j] + 1.0;
            s += v * v * v;
        }
    return s;
}

static double mmd2(float *k, const float *x, int64_t m, const float *y, int64_t n, int64_t d)
{
    double kxx = kernel_sum(k, x, m, x, m, d, 1);
    double kyy = kernel_sum(k, y, n, y, n, d, 1);
    double kxy = kernel_sum(k, x, m, y, n, d, 0);
    return kxx / ((double)m * (double)(m - 1)) + kyy / ((double)n * (double)(n - 1)) -
           2.0 * kxy / ((double)m * (double)n);
}

/* m distinct indices of 0..n-1 into sel (partial Fisher-Yates over perm). */
static void draw_subset(int64_t *perm, int64_t n, int64_t m, tm_rng *r)
{
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = 0; i < m; i++) {
        uint64_t u = ((uint64_t)tm_rng_u32(r) << 32) | tm_rng_u32(r);
        int64_t j = i + (int64_t)(u % (uint64_t)(n - i));
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

tm_status tm_kid(const float *a, int64_t na, const float *b, int64_t nb, int64_t dim,
                 const tm_kid_params *params, double *mean, double *std)
{
    static const char *fn = "tm_kid";
    tm_kid_params p = params ? *params : tm_kid_default_params();
    tm_status st;
    if (dim <= 0) return tm_fail(TM_ERR_INVALID, "%s: dim = %lld, must be > 0", fn, (long long)dim);
    if ((st = check_set(fn, "a", a, na, dim)) || (st = check_set(fn, "b", b, nb, dim))) return st;
    if (!mean) return tm_fail(TM_ERR_INVALID, "%s: mean must not be NULL", fn);
    if (p.n_subsets < 0 || (p.n_subsets > 0 && p.subset_size < 2))
        return tm_fail(TM_ERR_INVALID,
                       "%s: n_subsets = %d, subset_size = %lld: need n_subsets >= 0 and, with "
                       "subsets, subset_size >= 2",
                       fn, p.n_subsets, (long long)p.subset_size);
    if (p.n_subsets == 0) {
        int64_t mx = na > nb ? na : nb;
        size_t kb;
        if (!tm_mul_size((size_t)mx, (size_t)mx, &kb) || !tm_mul_size(kb, sizeof(float), &kb))
            return tm_fail(TM_ERR_NOMEM, "%s: %lld rows are too many for one kernel matrix", fn,
                           (long long)mx);
        float *k = tm_alloc(kb);
        if (!k) return tm_fail(TM_ERR_NOMEM, "%s: out of memory (%zu bytes of kernel)", fn, kb);
        *mean = mmd2(k, a, na, b, nb, dim);
        if (std) *std = 0;
        tm_free(k);
        return TM_OK;
    }
    int64_t m = p.subset_size;
    if (m > na) m = na;
    if (m > nb) m = nb;
    size_t kb, xb, pb;
    if (!tm_mul_size((size_t)m, (size_t)m, &kb) || !tm_mul_size(kb, sizeof(float), &kb) ||
        !tm_mul_size((size_t)m, (size_t)dim * sizeof(float), &xb) ||
        !tm_mul_size((size_t)(na > nb ? na : nb), sizeof(int64_t), &pb))
        return tm_fail(TM_ERR_NOMEM, "%s: subset of %lld is too large", fn, (long long)m);
    float *k = tm_alloc(kb), *x = tm_alloc(xb), *y = tm_alloc(xb);
    int64_t *perm = tm_alloc(pb);
    double *vals = tm_alloc((size_t)p.n_subsets * sizeof(double));
    if (!k || !x || !y || !perm || !vals) {
        st = tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
        goto done;
    }
    double sum = 0;
    for (int s = 0; s < p.n_subsets; s++) {
        tm_rng ra = tm_rng_new(p.seed, 2 * (uint64_t)s), rb = tm_rng_new(p.seed, 2 * (uint64_t)s + 1);
        draw_subset(perm, na, m, &ra);
        for (int64_t i = 0; i < m; i++) memcpy(x + i * dim, a + perm[i] * dim, (size_t)dim * sizeof(float));
        draw_subset(perm, nb, m, &rb);
        for (int64_t i = 0; i < m; i++) memcpy(y + i * dim, b + perm[i] * dim, (size_t)dim * sizeof(float));
        vals[s] = mmd2(k, x, m, y, m, dim);
        sum += vals[s];
    }
    double mu = sum / p.n_subsets, var = 0;
    for (int s = 0; s < p.n_subsets; s++) var += (vals[s] - mu) * (vals[s] - mu);
    *mean = mu;
    if (std) *std = sqrt(var / p.n_subsets);
    st = TM_OK;
done:
    tm_free(k);
    tm_free(x);
    tm_free(y);
    tm_free(perm);
    tm_free(vals);
    return st;
}
