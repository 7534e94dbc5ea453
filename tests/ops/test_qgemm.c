/*
 * The prepared-weight GEMMs (src/ops/qgemm.h) against plain references
 * written here:
 * - per-row int8 quantisation of activations and per-channel quantisation
 *   of weights (both layouts) give exactly rint(x * 127 / max|row|), |q| <=
 *   127, the column sums, zero padding; zero rows, NaN rows, NaN weights;
 * - every int8 kernel this CPU has (scalar, AVX2, AVX-VNNI, AVX512-VNNI)
 *   gives bit for bit the reference ((float)sum_k qa qw * sa) * sw, over
 *   odd and edge sizes (M 1..65, N 1..49, K 1..259: row tails, partial
 *   panels, depth tails), at 1 and 2 threads, and with TRIMODAL_ISA forced
 *   to scalar; i32 sums at the extremes (all +-127, K = 4099) do not
 *   saturate;
 * - int8 results are within 2% (relative Frobenius) of the f32 product;
 * - the bf16 kernels match a double reference on bf16-rounded weights to
 *   f32 rounding, scalar and AVX2.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/qgemm.h"
#include "testutil.h"
#include "trimodal/ops.h"

static float *rnd(int64_t n, uint64_t seed, float lo, float hi)
{
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    test_fill_uniform(x, n, seed, lo, hi);
    return x;
}

/* Reference quantisation of one row (stride st). */
static float ref_quant(int8_t *q, const float *x, int64_t K, int64_t st)
{
    float mx = 0;
    for (int64_t k = 0; k < K; k++) mx = fmaxf(mx, fabsf(x[k * st]));
    if (mx == 0) {
        for (int64_t k = 0; k < K; k++) q[k] = 0;
        return 0;
    }
    float inv = 127.0f / mx;
    for (int64_t k = 0; k < K; k++) {
        float v = rintf(x[k * st] * inv);
        q[k] = (int8_t)fmaxf(-127.0f, fminf(127.0f, v));
    }
    return mx / 127.0f;
}

static int8_t packed_q(const tm_qweights *w, int64_t n, int64_t k)
{
    int64_t p = n / TM_QGEMM_NR, c = n % TM_QGEMM_NR;
    return w->q[p * w->kp * TM_QGEMM_NR + (k / TM_QGEMM_KG) * TM_QGEMM_NR * TM_QGEMM_KG +
                c * TM_QGEMM_KG + k % TM_QGEMM_KG];
}

static void test_quantize(int64_t K)
{
    int64_t rows = 5, kp = K + 3;
    float *x = rnd(rows * K, 1 + K, -3, 3);
    for (int64_t k = 0; k < K; k++) x[2 * K + k] = 0; /* a zero row */
    x[3 * K + K / 2] = NAN;                                 /* a NaN row */
    x[4 * K + 7] = 1.5f * (x[4 * K + 7] > 0 ? 1 : -1) * 100; /* one large value */
    x[1 * K + 3] = 0.5f;  /* ties: 0.5 * 127 / max lands between integers often enough */
    int8_t q[5 * 300], r[300];
    float s[5];
    memset(q, 0x55, sizeof q);
    tm_quantize_rows_s8(q, s, x, rows, K, K, kp);
    for (int64_t i = 0; i < rows; i++) {
        if (i == 3) {
            CHECK(isnan(s[i]));
            for (int64_t k = 0; k < kp; k++) CHECK(q[i * kp + k] == 0);
            continue;
        }
        float rs = ref_quant(r, x + i * K, K, 1);
        CHECK(s[i] == rs);
        int same = 1, bounded = 1;
        for (int64_t k = 0; k < K; k++) {
            same &= q[i * kp + k] == r[k];
            bounded &= q[i * kp + k] != -128;
            if (rs > 0) bounded &= fabsf(x[i * K + k] - q[i * kp + k] * rs) <= 0.5001f * rs;
        }
        for (int64_t k = K; k < kp; k++) same &= q[i * kp + k] == 0;
        CHECK(same);
        CHECK(bounded);
    }
    CHECK(s[2] == 0);
    free(x);
}

static void test_weights(void)
{
    int64_t N = 21, K = 13;
    float *w = rnd(N * K, 2, -1, 1);
    for (int tr = 0; tr < 2; tr++) {
        tm_qweights qw;
        /* tr = 0: W (N, K) row-major; tr = 1: the same values stored (K, N) */
        float *src = w;
        float *t = NULL;
        if (tr) {
            t = malloc((size_t)(N * K) * sizeof *t);
            for (int64_t n = 0; n < N; n++)
                for (int64_t k = 0; k < K; k++) t[k * N + n] = w[n * K + k];
            src = t;
        }
        CHECK_OK(tm_qweights_init(&qw, src, N, K, tr ? 1 : K, tr ? N : 1));
        CHECK(qw.kp == 16 && qw.panels == 2);
        int ok = 1;
        for (int64_t n = 0; n < qw.panels * TM_QGEMM_NR; n++) {
            int8_t r[16];
            float rs = n < N ? ref_quant(r, w + n * K, K, 1) : 0;
            int32_t sum = 0;
            for (int64_t k = 0; k < qw.kp; k++) {
                int8_t got = packed_q(&qw, n, k);
                int8_t want = n < N && k < K ? r[k] : 0;
                ok &= got == want;
                sum += got;
            }
            ok &= qw.scale[n] == rs && qw.colsum[n] == sum;
        }
        CHECK(ok);
        CHECK(tm_qweights_bytes(&qw) > 0);
        tm_qweights_free(&qw);
        CHECK(qw.q == NULL && tm_qweights_bytes(&qw) == 0);
        free(t);
    }
    w[7] = INFINITY;
    tm_qweights qw;
    CHECK_STATUS(tm_qweights_init(&qw, w, N, K, K, 1), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "NaN or inf") != NULL);
    CHECK_STATUS(tm_qweights_init(&qw, w, 0, K, K, 1), TM_ERR_INVALID);
    tm_qweights_free(NULL);
    free(w);
}

/* The reference int8 product from unpacked q. */
static void ref_qgemm(float *C, const int8_t *qa, const float *sa, int64_t kp, const tm_qweights *w,
                      int64_t M)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < w->n; n++) {
            int64_t acc = 0;
            for (int64_t k = 0; k < w->k; k++) acc += (int64_t)qa[m * kp + k] * packed_q(w, n, k);
            C[m * w->n + n] = ((float)(int32_t)acc * sa[m]) * w->scale[n];
        }
}

static int check_kernels(int64_t M, int64_t N, int64_t K, uint64_t seed)
{
    float *A = rnd(M * K, seed, -2, 2), *W = rnd(N * K, seed + 7, -0.5f, 0.5f);
    tm_qweights qw;
    int ok = 1;
    if (tm_qweights_init(&qw, W, N, K, K, 1)) return 0;
    int8_t *qa = malloc((size_t)(M * qw.kp));
    float *sa = malloc((size_t)M * sizeof *sa);
    float *want = malloc((size_t)(M * N) * sizeof(float)), *got = malloc((size_t)(M * N) * sizeof(float));
    tm_quantize_rows_s8(qa, sa, A, M, K, K, qw.kp);
    ref_qgemm(want, qa, sa, qw.kp, &qw, M);
    for (int k = 0; k < TM_QKERNEL_COUNT; k++) {
        if (!tm_qkernel_available((tm_qkernel)k)) continue;
        memset(got, 0xff, (size_t)(M * N) * sizeof(float));
        tm_qgemm_s8((tm_qkernel)k, got, N, qa, sa, M, &qw);
        if (memcmp(got, want, (size_t)(M * N) * sizeof(float))) {
            fprintf(stderr, "kernel %s differs at M %lld N %lld K %lld\n",
                    tm_qkernel_name((tm_qkernel)k), (long long)M, (long long)N, (long long)K);
            ok = 0;
        }
    }
    /* the whole call (quantise + best kernel) */
    void *work = tm_alloc(tm_qgemm_work_bytes(M, K));
    tm_qgemm(got, N, A, K, M, &qw, work);
    ok &= !memcmp(got, want, (size_t)(M * N) * sizeof(float));
    tm_free(work);
    tm_qweights_free(&qw);
    free(A);
    free(W);
    free(qa);
    free(sa);
    free(want);
    free(got);
    return ok;
}

static void test_kernels(void)
{
    static const int64_t Ms[] = {1, 2, 3, 4, 5, 7, 9, 24, 25, 65};
    static const int64_t Ns[] = {1, 10, 16, 17, 33, 49};
    static const int64_t Ks[] = {1, 3, 4, 5, 64, 67, 259};
    int ok = 1;
    uint64_t seed = 10;
    for (size_t i = 0; i < sizeof Ms / sizeof *Ms; i++)
        for (size_t j = 0; j < sizeof Ns / sizeof *Ns; j++)
            for (size_t l = 0; l < sizeof Ks / sizeof *Ks; l++)
                ok &= check_kernels(Ms[i], Ns[j], Ks[l], seed++);
    CHECK(ok);
    CHECK(check_kernels(148, 256, 256, 3)); /* a bench-small shape */
}

/* All |q| = 127 of one sign over a long depth: sums of 66 M, no saturation. */
static void test_extremes(void)
{
    int64_t M = 3, N = 17, K = 4099;
    float *A = malloc((size_t)(M * K) * sizeof(float)), *W = malloc((size_t)(N * K) * sizeof(float));
    for (int64_t i = 0; i < M * K; i++) A[i] = (i / K) % 2 ? -1.0f : 1.0f;
    for (int64_t i = 0; i < N * K; i++) W[i] = (i / K) % 3 ? 2.0f : -2.0f;
    tm_qweights qw;
    CHECK_OK(tm_qweights_init(&qw, W, N, K, K, 1));
    int8_t *qa = malloc((size_t)(M * qw.kp));
    float sa[3], C[3 * 17];
    tm_quantize_rows_s8(qa, sa, A, M, K, K, qw.kp);
    for (int k = 0; k < TM_QKERNEL_COUNT; k++) {
        if (!tm_qkernel_available((tm_qkernel)k)) continue;
        tm_qgemm_s8((tm_qkernel)k, C, N, qa, sa, M, &qw);
        int ok = 1;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double want = (double)A[m * K] * W[n * K] * (double)K;
                ok &= fabs(C[m * N + n] - want) <= 1e-5 * fabs(want);
            }
        if (!ok) fprintf(stderr, "kernel %s saturates\n", tm_qkernel_name((tm_qkernel)k));
        CHECK(ok);
    }
    tm_qweights_free(&qw);
    free(A);
    free(W);
    free(qa);
}

/* The worst case of vpmaddubsw (u8 x s8 pairs summed in s16 with
 * saturation): every |q| = 127, the signs of activations and weights
 * arranged so that adjacent products share a sign (pair sums of +-32258)
 * or alternate; rows in blocks of four and a tail. Every kernel equals the
 * exact i64 reference bit for bit. */
static void test_pair_extremes(void)
{
    int64_t M = 11, N = 35, K = 131;
    float *A = malloc((size_t)(M * K) * sizeof(float)), *W = malloc((size_t)(N * K) * sizeof(float));
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++)
            A[m * K + k] = m % 3 == 0 ? 1.0f : m % 3 == 1 ? -1.0f : ((k / 2 + m) % 2 ? 1.0f : -1.0f);
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            W[n * K + k] = n % 4 == 0   ? 3.0f
                           : n % 4 == 1 ? -3.0f
                           : n % 4 == 2 ? ((k / 2) % 2 ? 3.0f : -3.0f)
                                        : (k % 2 ? 3.0f : -3.0f);
    tm_qweights qw;
    CHECK_OK(tm_qweights_init(&qw, W, N, K, K, 1));
    int8_t *qa = malloc((size_t)(M * qw.kp));
    float *sa = malloc((size_t)M * sizeof *sa);
    float *want = malloc((size_t)(M * N) * sizeof(float)), *got = malloc((size_t)(M * N) * sizeof(float));
    tm_quantize_rows_s8(qa, sa, A, M, K, K, qw.kp);
    ref_qgemm(want, qa, sa, qw.kp, &qw, M);
    CHECK(fabsf(want[0] - 3.0f * (float)K) <= 1e-4f * 3.0f * (float)K); /* row 0, col 0: all +1 * +3 */
    for (int k = 0; k < TM_QKERNEL_COUNT; k++) {
        if (!tm_qkernel_available((tm_qkernel)k)) continue;
        memset(got, 0xff, (size_t)(M * N) * sizeof(float));
        tm_qgemm_s8((tm_qkernel)k, got, N, qa, sa, M, &qw);
        int ok = !memcmp(got, want, (size_t)(M * N) * sizeof(float));
        if (!ok) fprintf(stderr, "kernel %s: pair extremes differ\n", tm_qkernel_name((tm_qkernel)k));
        CHECK(ok);
    }
    tm_qweights_free(&qw);
    free(A);
    free(W);
    free(qa);
    free(sa);
    free(want);
    free(got);
}

static void test_accuracy(void)
{
    int64_t M = 65, N = 96, K = 256;
    float *A = rnd(M * K, 5, -1, 1), *W = rnd(N * K, 6, -0.1f, 0.1f);
    float *C = malloc((size_t)(M * N) * sizeof(float)), *F = malloc((size_t)(M * N) * sizeof(float));
    tm_sgemm_ref(0, 1, M, N, K, 1.0f, A, K, W, K, 0.0f, F, N);
    tm_qweights qw;
    CHECK_OK(tm_qweights_init(&qw, W, N, K, K, 1));
    void *work = tm_alloc(tm_qgemm_work_bytes(M, K));
    tm_qgemm(C, N, A, K, M, &qw, work);
    double e = 0, f = 0;
    for (int64_t i = 0; i < M * N; i++) {
        e += (C[i] - F[i]) * (double)(C[i] - F[i]);
        f += F[i] * (double)F[i];
    }
    printf("int8 vs f32: relative error %.4f\n", sqrt(e / f));
    CHECK(sqrt(e / f) < 0.02);
    tm_free(work);
    tm_qweights_free(&qw);
    free(A);
    free(W);
    free(C);
    free(F);
}

static void test_bf16(void)
{
    static const int64_t shapes[][3] = {{1, 1, 1}, {5, 17, 3}, {6, 16, 64}, {13, 33, 67}, {65, 48, 256}};
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        int64_t M = shapes[i][0], N = shapes[i][1], K = shapes[i][2];
        float *A = rnd(M * K, 20 + i, -1, 1), *W = rnd(N * K, 30 + i, -1, 1);
        float *C = malloc((size_t)(M * N) * sizeof(float));
        double *R = malloc((size_t)(M * N) * sizeof(double));
        double *absr = malloc((size_t)(M * N) * sizeof(double));
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double acc = 0, ab = 0;
                for (int64_t k = 0; k < K; k++) {
                    double w = tm_bf16_to_f32(tm_f32_to_bf16(W[n * K + k]));
                    acc += A[m * K + k] * w;
                    ab += fabs(A[m * K + k] * w);
                }
                R[m * N + n] = acc;
                absr[m * N + n] = ab;
            }
        for (int tr = 0; tr < 2; tr++) {
            tm_bweights bw;
            float *src = W, *t = NULL;
            if (tr) { /* the same weights stored (K, N) */
                t = malloc((size_t)(N * K) * sizeof *t);
                for (int64_t n = 0; n < N; n++)
                    for (int64_t k = 0; k < K; k++) t[k * N + n] = W[n * K + k];
                src = t;
            }
            CHECK_OK(tm_bweights_init(&bw, src, N, K, tr ? 1 : K, tr ? N : 1));
            for (int scalar = 0; scalar < 2; scalar++) {
                tm_bgemm(C, N, A, K, M, &bw, scalar);
                int ok = 1;
                for (int64_t j = 0; j < M * N; j++)
                    ok &= fabs(C[j] - R[j]) <= 1e-6 * absr[j] + 1e-30;
                if (!ok) fprintf(stderr, "bf16 %s M %lld N %lld K %lld\n", scalar ? "scalar" : "simd",
                                 (long long)M, (long long)N, (long long)K);
                CHECK(ok);
            }
            tm_bweights_free(&bw);
            free(t);
        }
        free(A);
        free(W);
        free(C);
        free(R);
        free(absr);
    }
}

int main(void)
{
    printf("best int8 kernel: %s\n", tm_qkernel_name(tm_qkernel_best()));
    for (int k = 0; k < TM_QKERNEL_COUNT; k++)
        printf("  %s: %s\n", tm_qkernel_name((tm_qkernel)k),
               tm_qkernel_available((tm_qkernel)k) ? "available" : "not on this CPU");
    for (int64_t K = 8; K <= 296; K += 29) test_quantize(K);
    test_weights();
    int threads = tm_get_num_threads();
    for (int t = 1; t <= 2; t++) {
        tm_set_num_threads(t);
        test_kernels();
    }
    tm_set_num_threads(threads);
    test_extremes();
    test_pair_extremes();
    test_accuracy();
    test_bf16();
    /* the plain C path alone, as TRIMODAL_ISA=scalar gives it */
    tm_force_isa(TM_ISA_SCALAR);
    CHECK(tm_qkernel_best() == TM_QKERNEL_SCALAR);
    CHECK(!tm_qkernel_available(TM_QKERNEL_AVX2));
    CHECK(check_kernels(25, 33, 67, 99));
    for (int64_t K = 8; K <= 296; K += 29) test_quantize(K);
    tm_force_isa(-1);
    return test_finish("qgemm");
}
