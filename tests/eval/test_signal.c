/* Signal metrics: SNR and SI-SDR against numpy; FID against numpy/scipy
 * (scripts/gen_eval_vectors.py: the symmetric formulation, cross-checked
 * there with scipy.linalg.sqrtm) including a singular case; FID of
 * commuting covariances in 96 dimensions against the closed form
 * sum (sqrt(a_i) - sqrt(b_i))^2 (an independent check of the eigen-solver);
 * KID against numpy's unbiased MMD^2; KID subsets; errors. */
#include "eval_test.h"

static void test_snr(const cJSON *j)
{
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, jget(j, "snr"))
    {
        int n;
        float *ref = jfloats(jget(c, "ref"), &n), *est = jfloats(jget(c, "est"), NULL);
        double v;
        CHECK_OK(tm_snr(ref, est, n, &v));
        CHECK_NEAR(v, jnum(c, "snr"), 1e-10, 1e-12);
        CHECK_OK(tm_si_sdr(ref, est, n, 0, &v));
        CHECK_NEAR(v, jnum(c, "si_sdr"), 1e-10, 1e-12);
        CHECK_OK(tm_si_sdr(ref, est, n, 1, &v));
        CHECK_NEAR(v, jnum(c, "si_sdr_zero_mean"), 1e-10, 1e-12);
        /* scale invariance: est * 4 gives the same SI-SDR */
        for (int i = 0; i < n; i++) est[i] *= 4.0f; /* exact in float */
        double v2;
        CHECK_OK(tm_si_sdr(ref, est, n, 1, &v2));
        CHECK_NEAR(v2, v, 1e-9, 0);
        free(ref);
        free(est);
        cases++;
    }
    CHECK(cases == 3);
    float r[4] = {1, -1, 2, 0}, e[4] = {1, -1, 2, 0}, z[4] = {0, 0, 0, 0};
    double v;
    CHECK_OK(tm_snr(r, e, 4, &v));
    CHECK(isinf(v) && v > 0);
    CHECK_OK(tm_si_sdr(r, e, 4, 0, &v));
    CHECK(isinf(v) && v > 0);
    CHECK_STATUS(tm_snr(z, e, 4, &v), TM_ERR_INVALID);
    CHECK_STATUS(tm_si_sdr(z, e, 4, 0, &v), TM_ERR_INVALID);
    float k[4] = {2, 2, 2, 2};
    CHECK_STATUS(tm_si_sdr(k, e, 4, 1, &v), TM_ERR_INVALID); /* constant after mean removal */
    CHECK(strstr(tm_last_error(), "constant") != NULL);
    CHECK_OK(tm_si_sdr(k, e, 4, 0, &v));
    CHECK_STATUS(tm_snr(r, e, 0, &v), TM_ERR_INVALID);
    e[2] = NAN;
    CHECK_STATUS(tm_snr(r, e, 4, &v), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "est[2]") != NULL);
}

static void test_fid_kid(const cJSON *j)
{
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, jget(j, "fid"))
    {
        int na = (int)jnum(c, "na"), nb = (int)jnum(c, "nb"), d = (int)jnum(c, "d");
        float *a = jfloats(jget(c, "a"), NULL), *b = jfloats(jget(c, "b"), NULL);
        double fid, want = jnum(c, "fid");
        CHECK_OK(tm_fid(a, na, b, nb, d, &fid));
        /* double precision all through; the reference differs only in
         * summation order and LAPACK's eigen-solver. With a singular
         * covariance, eigenvalues that are 0 come out as +-1e-16 and their
         * square roots as 1e-8: the trace is good to about sqrt(eps). */
        double tol = strcmp(jstr(c, "name"), "singular") ? 1e-9 : 1e-7;
        CHECK_NEAR(fid, want, tol, tol);
        if (fabs(fid - want) > tol + tol * fabs(want))
            fprintf(stderr, "FID %s: %.15g want %.15g\n", jstr(c, "name"), fid, want);
        double kid, sd;
        tm_kid_params kp = tm_kid_default_params();
        kp.n_subsets = 0;
        CHECK_OK(tm_kid(a, na, b, nb, d, &kp, &kid, &sd));
        /* kernel values from the f32 GEMM: ~1e-7 relative each */
        CHECK_NEAR(kid, jnum(c, "kid"), 2e-5, 1e-4);
        CHECK(sd == 0);
        /* subsets of the full size are permutations: the same estimate */
        if (na == nb) {
            kp.n_subsets = 3;
            kp.subset_size = na;
            double k2;
            CHECK_OK(tm_kid(a, na, b, nb, d, &kp, &k2, &sd));
            CHECK_NEAR(k2, kid, 1e-6, 1e-5);
            CHECK(sd < 1e-6);
        }
        free(a);
        free(b);
        cases++;
    }
    CHECK(cases == 4);
}

/* Q = H1 H2 H3 (Householder reflections): a random orthogonal matrix. */
static void orthogonal(double *q, int d, uint64_t seed)
{
    float *v = malloc(d * sizeof *v);
    double *t = malloc((size_t)d * d * sizeof *t);
    for (int i = 0; i < d * d; i++) q[i] = i % (d + 1) == 0;
    for (int r = 0; r < 3; r++) {
        test_fill_uniform(v, d, seed + r, -1, 1);
        double vv = 0;
        for (int i = 0; i < d; i++) vv += (double)v[i] * v[i];
        /* q = q (I - 2 v v^T / vv) */
        for (int i = 0; i < d; i++) {
            double s = 0;
            for (int k = 0; k < d; k++) s += q[i * d + k] * v[k];
            for (int k = 0; k < d; k++) t[i * d + k] = q[i * d + k] - 2 * s * v[k] / vv;
        }
        memcpy(q, t, (size_t)d * d * sizeof *q);
    }
    free(v);
    free(t);
}

static void test_fid_closed_form(void)
{
    const int d = 96;
    double *q = malloc((size_t)d * d * sizeof *q), *ca = malloc((size_t)d * d * sizeof *ca),
           *cb = malloc((size_t)d * d * sizeof *cb), *ma = calloc(d, sizeof *ma),
           *mb = calloc(d, sizeof *mb);
    float ea[96], eb[96];
    test_fill_uniform(ea, d, 11, 0, 2);
    test_fill_uniform(eb, d, 12, 0, 2);
    ea[5] = 0;  /* singular: a zero eigenvalue */
    eb[17] = 0;
    orthogonal(q, d, 5);
    double want = 0;
    for (int i = 0; i < d; i++) {
        double s = sqrt((double)ea[i]) - sqrt((double)eb[i]);
        want += s * s;
    }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double sa = 0, sb = 0;
            for (int k = 0; k < d; k++) {
                sa += q[i * d + k] * ea[k] * q[j * d + k];
                sb += q[i * d + k] * eb[k] * q[j * d + k];
            }
            ca[i * d + j] = sa;
            cb[i * d + j] = sb;
        }
    mb[3] = 2; /* |mu_a - mu_b|^2 = 4 */
    double fid;
    CHECK_OK(tm_fid_from_stats(ma, ca, mb, cb, d, &fid));
    CHECK_NEAR(fid, want + 4, 1e-9, 1e-7); /* zero eigenvalues: sqrt(eps), see above */
    CHECK_OK(tm_fid_from_stats(ma, ca, ma, ca, d, &fid));
    CHECK_NEAR(fid, 0, 1e-6, 0);
    /* bitwise the same at 1 and 2 threads */
    int saved = tm_get_num_threads();
    double f1, f2;
    tm_set_num_threads(1);
    CHECK_OK(tm_fid_from_stats(ma, ca, mb, cb, d, &f1));
    tm_set_num_threads(2);
    CHECK_OK(tm_fid_from_stats(ma, ca, mb, cb, d, &f2));
    tm_set_num_threads(saved);
    CHECK(f1 == f2);
    free(q);
    free(ca);
    free(cb);
    free(ma);
    free(mb);
}

static void test_errors_and_kid_subsets(void)
{
    enum { N = 64, D = 6 };
    float a[N * D], b[N * D];
    test_fill_uniform(a, N * D, 1, -1, 1);
    test_fill_uniform(b, N * D, 2, -1, 1.5f);
    double v, s1, s2, s3, sd;
    tm_kid_params p = tm_kid_default_params();
    p.n_subsets = 10;
    p.subset_size = 20;
    p.seed = 9;
    CHECK_OK(tm_kid(a, N, b, N, D, &p, &s1, &sd));
    CHECK(sd > 0);
    CHECK_OK(tm_kid(a, N, b, N, D, &p, &s2, NULL));
    CHECK(s1 == s2); /* the seed fixes the subsets */
    p.seed = 10;
    CHECK_OK(tm_kid(a, N, b, N, D, &p, &s3, NULL));
    CHECK(s3 != s1);
    p.subset_size = 1;
    CHECK_STATUS(tm_kid(a, N, b, N, D, &p, &v, NULL), TM_ERR_INVALID);
    p.n_subsets = -1;
    CHECK_STATUS(tm_kid(a, N, b, N, D, &p, &v, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_kid(a, 1, b, N, D, NULL, &v, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_fid(a, 1, b, N, D, &v), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "at least 2") != NULL);
    CHECK_STATUS(tm_fid(a, N, b, N, 0, &v), TM_ERR_INVALID);
    CHECK_STATUS(tm_fid(a, N, b, N, 100000, &v), TM_ERR_LIMIT);
    b[7] = NAN;
    CHECK_STATUS(tm_fid(a, N, b, N, D, &v), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "b[1][1]") != NULL);
    CHECK_STATUS(tm_kid(a, N, b, N, D, NULL, &v, NULL), TM_ERR_INVALID);
    b[7] = 0;
    CHECK_OK(tm_fid(a, N, a, N, D, &v));
    CHECK_NEAR(v, 0, 1e-12, 0);
    /* stats + from_stats == tm_fid */
    double ma[D], mb[D], ca[D * D], cb[D * D], f;
    CHECK_OK(tm_embedding_stats(a, N, D, ma, ca));
    CHECK_OK(tm_embedding_stats(b, N, D, mb, cb));
    CHECK_OK(tm_fid_from_stats(ma, ca, mb, cb, D, &f));
    CHECK_OK(tm_fid(a, N, b, N, D, &v));
    CHECK(f == v);
    ca[3] = NAN;
    CHECK_STATUS(tm_fid_from_stats(ma, ca, mb, cb, D, &f), TM_ERR_INVALID);
    for (long n = 1; n <= 6; n++) {
        tm_alloc_fail_after(n);
        tm_status s = tm_fid(a, N, b, N, D, &v);
        tm_alloc_fail_after(0);
        CHECK(s == TM_ERR_NOMEM || s == TM_OK);
    }
}

static void test_timing(void)
{
    /* FID on 1000 x 128 embeddings: prints the time */
    const int n = 1000, d = 128;
    float *a = malloc((size_t)n * d * sizeof *a), *b = malloc((size_t)n * d * sizeof *b);
    test_fill_uniform(a, (int64_t)n * d, 21, -1, 1);
    test_fill_uniform(b, (int64_t)n * d, 22, -1, 1);
    double fid, t0 = tm_time_s();
    CHECK_OK(tm_fid(a, n, b, n, d, &fid));
    double t1 = tm_time_s();
    double kid;
    tm_kid_params p = tm_kid_default_params();
    p.n_subsets = 5;
    p.subset_size = 500;
    CHECK_OK(tm_kid(a, n, b, n, d, &p, &kid, NULL));
    double t2 = tm_time_s();
    printf("FID %d x %d: %.0f ms (%.4f); KID 5 subsets of 500: %.0f ms (%.2e)\n", n, d,
           (t1 - t0) * 1e3, fid, (t2 - t1) * 1e3, kid);
    free(a);
    free(b);
}

int main(void)
{
    cJSON *j = load_json("eval/signal.json");
    CHECK(j != NULL);
    if (j) {
        test_snr(j);
        test_fid_kid(j);
        cJSON_Delete(j);
    }
    test_fid_closed_form();
    test_errors_and_kid_subsets();
    test_timing();
    return test_finish("test_signal");
}
