/* Small helpers shared by every test program. A test program counts its
 * checks, prints each failure with file and line, and ends with
 * `return test_finish("name");`, which prints "N passed, N failed" and
 * returns non-zero when anything failed. */
#ifndef TM_TESTUTIL_H
#define TM_TESTUTIL_H

#include <math.h>
#include <stdio.h>
#include "trimodal/core.h"

extern int test_checks, test_failures;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        test_checks++;                                                                   \
        if (!(cond)) {                                                                   \
            test_failures++;                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
        }                                                                                \
    } while (0)

/* Checks a status and prints tm_last_error() when it differs. */
#define CHECK_STATUS(expr, want)                                                         \
    do {                                                                                 \
        tm_status s_ = (expr);                                                           \
        test_checks++;                                                                   \
        if (s_ != (want)) {                                                              \
            test_failures++;                                                             \
            fprintf(stderr, "%s:%d: %s returned %s, want %s (%s)\n", __FILE__, __LINE__,  \
                    #expr, tm_status_name(s_), tm_status_name(want), tm_last_error());   \
        }                                                                                \
    } while (0)
#define CHECK_OK(expr) CHECK_STATUS(expr, TM_OK)

#define CHECK_NEAR(got, want, atol, rtol)                                                \
    do {                                                                                 \
        double g_ = (got), w_ = (want);                                                  \
        test_checks++;                                                                   \
        if (!(fabs(g_ - w_) <= (atol) + (rtol) * fabs(w_))) {                            \
            test_failures++;                                                             \
            fprintf(stderr, "%s:%d: %s = %.9g, want %.9g (atol %g, rtol %g)\n",          \
                    __FILE__, __LINE__, #got, g_, w_, (double)(atol), (double)(rtol));   \
        }                                                                                \
    } while (0)

/* Compares n floats: every |got - want| <= atol + rtol * |want|. Prints the
 * worst element and the max abs/rel errors on failure; counts one check.
 * Returns 1 when they match. NaN never matches. */
int check_close(const char *what, const float *got, const float *want, int64_t n,
                double atol, double rtol);

/* Finite-difference gradient check: the analytic gradient `ana` of a scalar
 * loss with respect to the n floats at x (copied first: evaluating the loss
 * may overwrite it) against central differences of loss(ctx) with step eps;
 * every element within tol * (max |numeric| + 1e-3) absolute or tol
 * relative. x is restored. Counts one check; returns 1 when they match. */
int check_gradient_fd(const char *what, float *x, const float *ana, int64_t n,
                      double (*loss)(void *ctx), void *ctx, float eps, double tol);

/* Prints the summary line and returns the process exit status. */
int test_finish(const char *name);

/* Path of a file under the source tree's tests/data/ (uses TM_SOURCE_DIR
 * when set, else the working directory). Returns a static buffer. */
const char *test_data_path(const char *rel);

/* rm -r: removes dir and everything under it (symbolic links are removed,
 * not followed); a missing dir is harmless. */
void test_rm_tree(const char *dir);

/* Deterministic pseudo-random fill in [lo, hi) for test inputs. */
void test_fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi);

#endif
