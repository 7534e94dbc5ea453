#define _GNU_SOURCE
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int test_checks, test_failures;

int check_close(const char *what, const float *got, const float *want, int64_t n,
                double atol, double rtol)
{
    int64_t worst = -1, bad = 0;
    double worst_excess = 0, max_abs = 0, max_rel = 0;
    for (int64_t i = 0; i < n; i++) {
        double g = got[i], w = want[i], d = fabs(g - w);
        double tol = atol + rtol * fabs(w);
        if (d > max_abs) max_abs = d;
        if (fabs(w) > 0 && d / fabs(w) > max_rel) max_rel = d / fabs(w);
        int ok = d <= tol;
        if (isnan(g) != isnan(w)) ok = 0;
        if (isnan(g) && isnan(w)) ok = 1;
        if (isinf(w) && g == w) ok = 1;
        if (!ok) {
            bad++;
            double excess = isnan(d) ? INFINITY : d - tol;
            if (worst < 0 || excess > worst_excess) {
                worst = i;
                worst_excess = excess;
            }
        }
    }
    test_checks++;
    if (bad) {
        test_failures++;
        fprintf(stderr,
                "MISMATCH %s: %lld of %lld elements; worst [%lld] got %.9g want %.9g; "
                "max abs err %.3g, max rel err %.3g (atol %g, rtol %g)\n",
                what, (long long)bad, (long long)n, (long long)worst, got[worst], want[worst],
                max_abs, max_rel, atol, rtol);
        return 0;
    }
    return 1;
}

int test_finish(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, test_checks - test_failures, test_failures);
    return test_failures ? 1 : 0;
}

const char *test_data_path(const char *rel)
{
    static char buf[4096];
    const char *root = getenv("TM_SOURCE_DIR");
    snprintf(buf, sizeof buf, "%s/tests/data/%s", root && *root ? root : ".", rel);
    return buf;
}

void test_fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
}

int check_gradient_fd(const char *what, float *x, const float *ana, int64_t n,
                      double (*loss)(void *ctx), void *ctx, float eps, double tol)
{
    float *want = malloc((size_t)n * sizeof *want), *num = malloc((size_t)n * sizeof *num);
    if (!want || !num) {
        free(want);
        free(num);
        test_checks++;
        test_failures++;
        fprintf(stderr, "%s: out of memory\n", what);
        return 0;
    }
    memcpy(want, ana, (size_t)n * sizeof *want);
    for (int64_t j = 0; j < n; j++) {
        float x0 = x[j];
        x[j] = x0 + eps;
        double lp = loss(ctx);
        x[j] = x0 - eps;
        double lm = loss(ctx);
        x[j] = x0;
        num[j] = (float)((lp - lm) / (2 * eps));
    }
    /* scale the absolute tolerance to the gradient's size */
    double mx = 0;
    for (int64_t j = 0; j < n; j++) mx = fabs(num[j]) > mx ? fabs(num[j]) : mx;
    int ok = check_close(what, want, num, n, tol * (mx + 1e-3), tol);
    free(want);
    free(num);
    return ok;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb, (void)flag, (void)f;
    return remove(p);
}

void test_rm_tree(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
