/* Inference GEMMs against prepared weights (see qgemm.h): weight packing,
 * activation quantisation, the plain C kernels (the reference the SIMD
 * ones are tested against) and the run-time dispatch. */
#include "ops/qgemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ dispatch */

const char *tm_qkernel_name(tm_qkernel k)
{
    switch (k) {
    case TM_QKERNEL_AVX2: return "avx2";
    case TM_QKERNEL_AVX2UBS: return "avx2-maddubs";
    case TM_QKERNEL_AVXVNNI: return "avx-vnni";
    case TM_QKERNEL_AVX512VNNI: return "avx512-vnni";
    default: return "scalar";
    }
}

int tm_qkernel_available(tm_qkernel k)
{
    tm_isa isa = tm_cpu_isa();
    switch (k) {
    case TM_QKERNEL_SCALAR: return 1;
    case TM_QKERNEL_AVX2:
    case TM_QKERNEL_AVX2UBS: return isa >= TM_ISA_AVX2;
#if defined(__x86_64__) && defined(__GNUC__) && __GNUC__ >= 11
    case TM_QKERNEL_AVXVNNI:
        __builtin_cpu_init();
        return isa >= TM_ISA_AVX2 && __builtin_cpu_supports("avxvnni");
    case TM_QKERNEL_AVX512VNNI:
        __builtin_cpu_init();
        return isa == TM_ISA_AVX512 && __builtin_cpu_supports("avx512vnni");
#endif
    default: return 0;
    }
}

/* TRIMODAL_QKERNEL=<a kernel name> chooses that kernel where it is
 * available (to compare them on a whole model; all give the same bits);
 * -1 when unset or unknown. Read once. */
static int env_kernel(void)
{
    static int cached = -2; /* not read yet */
    int k = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (k != -2) return k;
    const char *e = getenv("TRIMODAL_QKERNEL");
    k = -1;
    for (int i = 0; e && i < TM_QKERNEL_COUNT; i++)
        if (!strcmp(e, tm_qkernel_name((tm_qkernel)i))) k = i;
    __atomic_store_n(&cached, k, __ATOMIC_RELAXED);
    return k;
}

tm_qkernel tm_qkernel_best(void)
{
    int e = env_kernel();
    if (e >= 0 && tm_qkernel_available((tm_qkernel)e)) return (tm_qkernel)e;
    if (tm_qkernel_available(TM_QKERNEL_AVX512VNNI)) return TM_QKERNEL_AVX512VNNI;
    if (tm_qkernel_available(TM_QKERNEL_AVXVNNI)) return TM_QKERNEL_AVXVNNI;
    /* vpmaddubsw: 15-17% faster than vpmaddwd on bench-small's shapes on
     * Zen 3 (bench/bench_qgemm.c, docs/quantization.md) */
    if (tm_qkernel_available(TM_QKERNEL_AVX2UBS)) return TM_QKERNEL_AVX2UBS;
    if (tm_qkernel_available(TM_QKERNEL_AVX2)) return TM_QKERNEL_AVX2;
    return TM_QKERNEL_SCALAR;
}

/* ------------------------------------------------------------- weights */

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

tm_status tm_qweights_init(tm_qweights *w, const float *src, int64_t N, int64_t K, int64_t ld_n,
                           int64_t ld_k)
{
    memset(w, 0, sizeof *w);
    if (N < 1 || K < 1 || N > ((int64_t)1 << 31) || K > ((int64_t)1 << 31))
        return tm_fail(TM_ERR_INVALID, "int8 weights: bad size %lld x %lld", (long long)N,
                       (long long)K);
    w->n = N;
    w->k = K;
    w->kp = round_up(K, TM_QGEMM_KG);
    w->panels = (N + TM_QGEMM_NR - 1) / TM_QGEMM_NR;
    int64_t cols = w->panels * TM_QGEMM_NR;
    w->q = tm_calloc((size_t)(cols * w->kp), 1);
    w->scale = tm_calloc((size_t)cols, sizeof(float));
    w->colsum = tm_calloc((size_t)cols, sizeof(int32_t));
    if (!w->q || !w->scale || !w->colsum) {
        tm_qweights_free(w);
        return tm_fail(TM_ERR_NOMEM, "int8 weights: out of memory for %lld x %lld", (long long)N,
                       (long long)K);
    }
    for (int64_t n = 0; n < N; n++) {
        const float *row = src + n * ld_n;
        float mx = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            float v = fabsf(row[k * ld_k]);
            if (!isfinite(v)) {
                tm_qweights_free(w);
                return tm_fail(TM_ERR_INVALID,
                               "int8 weights: output channel %lld holds a NaN or inf at %lld",
                               (long long)n, (long long)k);
            }
            if (v > mx) mx = v;
        }
        if (mx == 0.0f) continue; /* scale 0, q 0 */
        float inv = 127.0f / mx;
        w->scale[n] = mx / 127.0f;
        int64_t p = n / TM_QGEMM_NR, c = n % TM_QGEMM_NR;
        int8_t *panel = w->q + p * w->kp * TM_QGEMM_NR;
        int32_t sum = 0;
        for (int64_t k = 0; k < K; k++) {
            float v = nearbyintf(row[k * ld_k] * inv);
            if (v > 127.0f) v = 127.0f;
            if (v < -127.0f) v = -127.0f;
            int8_t q = (int8_t)v;
            panel[(k / TM_QGEMM_KG) * TM_QGEMM_NR * TM_QGEMM_KG + c * TM_QGEMM_KG + k % TM_QGEMM_KG] =
                q;
            sum += q;
        }
        w->colsum[n] = sum;
    }
    return TM_OK;
}

void tm_qweights_free(tm_qweights *w)
{
    if (!w) return;
    tm_free(w->q);
    tm_free(w->scale);
    tm_free(w->colsum);
    memset(w, 0, sizeof *w);
}

size_t tm_qweights_bytes(const tm_qweights *w)
{
    if (!w || !w->q) return 0;
    size_t cols = (size_t)(w->panels * TM_QGEMM_NR);
    return cols * (size_t)w->kp + cols * (sizeof(float) + sizeof(int32_t));
}

/* --------------------------------------------------------- activations */

static void quantize_rows_scalar(int8_t *q, float *scale, const float *x, int64_t rows, int64_t K,
                                 int64_t ldx, int64_t kp);

void tm_quantize_rows_s8(int8_t *q, float *scale, const float *x, int64_t rows, int64_t K,
                         int64_t ldx, int64_t kp)
{
    if (tm_cpu_isa() >= TM_ISA_AVX2)
        tm_quantize_rows_s8_avx2(q, scale, x, rows, K, ldx, kp);
    else
        quantize_rows_scalar(q, scale, x, rows, K, ldx, kp);
}

/* The plain C quantiser (the reference of the AVX2 one). */
static void quantize_rows_scalar(int8_t *q, float *scale, const float *x, int64_t rows, int64_t K,
                                 int64_t ldx, int64_t kp)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        int8_t *qr = q + r * kp;
        float mx = 0.0f;
        int finite = 1;
        for (int64_t k = 0; k < K; k++) {
            float v = fabsf(xr[k]);
            if (!(v <= 3.40282347e38f)) finite = 0; /* NaN or inf */
            mx = v > mx ? v : mx;
        }
        memset(qr, 0, (size_t)kp);
        if (!finite) {
            scale[r] = NAN;
            continue;
        }
        if (mx == 0.0f) {
            scale[r] = 0.0f;
            continue;
        }
        float inv = 127.0f / mx;
        scale[r] = mx / 127.0f;
        for (int64_t k = 0; k < K; k++) {
            float v = nearbyintf(xr[k] * inv);
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            qr[k] = (int8_t)v;
        }
    }
}

/* ------------------------------------------------------------- kernels */

static void qgemm_block_scalar(float *C, int64_t ldc, const int8_t *qa, const float *sa,
                               int64_t m0, int64_t m1, const tm_qweights *w, int64_t p0,
                               int64_t p1)
{
    const int64_t groups = w->kp / TM_QGEMM_KG;
    for (int64_t p = p0; p < p1; p++) {
        const int8_t *panel = w->q + p * w->kp * TM_QGEMM_NR;
        int64_t n0 = p * TM_QGEMM_NR;
        int64_t nn = w->n - n0 < TM_QGEMM_NR ? w->n - n0 : TM_QGEMM_NR;
        for (int64_t m = m0; m < m1; m++) {
            const int8_t *a = qa + m * w->kp;
            int32_t acc[TM_QGEMM_NR] = {0};
            for (int64_t g = 0; g < groups; g++) {
                const int8_t *b = panel + g * TM_QGEMM_NR * TM_QGEMM_KG;
                const int8_t *ag = a + g * TM_QGEMM_KG;
                for (int c = 0; c < TM_QGEMM_NR; c++)
                    for (int j = 0; j < TM_QGEMM_KG; j++)
                        acc[c] += (int32_t)ag[j] * (int32_t)b[c * TM_QGEMM_KG + j];
            }
            tm_qgemm_store(C + m * ldc + n0, acc, sa[m], w->scale + n0, nn);
        }
    }
}

typedef void (*qblock_fn)(float *C, int64_t ldc, const int8_t *qa, const float *sa, int64_t m0,
                          int64_t m1, const tm_qweights *w, int64_t p0, int64_t p1);

static qblock_fn qblock_of(tm_qkernel k)
{
    switch (k) {
    case TM_QKERNEL_AVX2: return tm_qgemm_block_avx2;
    case TM_QKERNEL_AVX2UBS: return tm_qgemm_block_avx2ubs;
    case TM_QKERNEL_AVXVNNI: return tm_qgemm_block_avxvnni;
    case TM_QKERNEL_AVX512VNNI: return tm_qgemm_block_avx512vnni;
    default: return qgemm_block_scalar;
    }
}

/* Work items: (block of ROWS rows, panel), row-major: a thread's
 * contiguous range reuses its rows' activations across panels from L1,
 * and the weights (bench-small's largest, 256 KB of int8, fit in L2) are
 * read from L2 by every row block. Panel-major order (rows inner) re-read
 * every activation row for each panel instead, from L3 when M * K is
 * large: up to 26% slower at M = 2048 (bench/bench_qgemm.c). */
#define ROWS 24

typedef struct {
    qblock_fn fn;
    float *C;
    int64_t ldc, M, row_blocks;
    const int8_t *qa;
    const float *sa;
    const tm_qweights *w;
} qtask;

static void qtask_run(void *ctx, int64_t begin, int64_t end)
{
    const qtask *t = ctx;
    for (int64_t i = begin; i < end; i++) {
        int64_t r = i / t->w->panels, p = i % t->w->panels;
        int64_t m0 = r * ROWS, m1 = m0 + ROWS < t->M ? m0 + ROWS : t->M;
        t->fn(t->C, t->ldc, t->qa, t->sa, m0, m1, t->w, p, p + 1);
    }
}

void tm_qgemm_s8(tm_qkernel k, float *C, int64_t ldc, const int8_t *qa, const float *sa,
                 int64_t M, const tm_qweights *w)
{
    if (M <= 0 || w->n <= 0) return;
    if (!tm_qkernel_available(k)) k = TM_QKERNEL_SCALAR;
    qtask t = {qblock_of(k), C, ldc, M, (M + ROWS - 1) / ROWS, qa, sa, w};
    int64_t items = t.row_blocks * w->panels;
    tm_parallel_range(items, M * w->kp * w->panels * TM_QGEMM_NR / 16, qtask_run, &t);
}

size_t tm_qgemm_work_bytes(int64_t M, int64_t K)
{
    int64_t kp = round_up(K, TM_QGEMM_KG);
    return (size_t)round_up(M * kp, 64) + (size_t)M * sizeof(float) + 64;
}

void tm_qgemm(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M, const tm_qweights *w,
              void *work)
{
    int8_t *qa = work;
    float *sa = (float *)((char *)work + round_up(M * w->kp, 64));
    tm_quantize_rows_s8(qa, sa, A, M, w->k, lda, w->kp);
    tm_qgemm_s8(tm_qkernel_best(), C, ldc, qa, sa, M, w);
}

/* ---------------------------------------------------------------- bf16 */

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

tm_status tm_bweights_init(tm_bweights *w, const float *src, int64_t N, int64_t K, int64_t ld_n,
                           int64_t ld_k)
{
    memset(w, 0, sizeof *w);
    if (N < 1 || K < 1 || N > ((int64_t)1 << 31) || K > ((int64_t)1 << 31))
        return tm_fail(TM_ERR_INVALID, "bf16 weights: bad size %lld x %lld", (long long)N,
                       (long long)K);
    w->n = N;
    w->k = K;
    w->panels = (N + TM_QGEMM_NR - 1) / TM_QGEMM_NR;
    w->h = tm_calloc((size_t)(w->panels * TM_QGEMM_NR * K), sizeof(uint16_t));
    if (!w->h)
        return tm_fail(TM_ERR_NOMEM, "bf16 weights: out of memory for %lld x %lld", (long long)N,
                       (long long)K);
    for (int64_t n = 0; n < N; n++) {
        int64_t p = n / TM_QGEMM_NR, c = n % TM_QGEMM_NR;
        for (int64_t k = 0; k < K; k++)
            w->h[(p * K + k) * TM_QGEMM_NR + c] = to_bf16(src[n * ld_n + k * ld_k]);
    }
    return TM_OK;
}

void tm_bweights_free(tm_bweights *w)
{
    if (!w) return;
    tm_free(w->h);
    memset(w, 0, sizeof *w);
}

size_t tm_bweights_bytes(const tm_bweights *w)
{
    return w && w->h ? (size_t)(w->panels * TM_QGEMM_NR * w->k) * sizeof(uint16_t) : 0;
}

static void bgemm_block_scalar(float *C, int64_t ldc, const float *A, int64_t lda, int64_t m0,
                               int64_t m1, const tm_bweights *w, int64_t p0, int64_t p1)
{
    for (int64_t p = p0; p < p1; p++) {
        const uint16_t *panel = w->h + p * w->k * TM_QGEMM_NR;
        int64_t n0 = p * TM_QGEMM_NR;
        int64_t nn = w->n - n0 < TM_QGEMM_NR ? w->n - n0 : TM_QGEMM_NR;
        for (int64_t m = m0; m < m1; m++) {
            const float *a = A + m * lda;
            float acc[TM_QGEMM_NR] = {0};
            for (int64_t k = 0; k < w->k; k++)
                for (int c = 0; c < TM_QGEMM_NR; c++)
                    acc[c] += a[k] * from_bf16(panel[k * TM_QGEMM_NR + c]);
            memcpy(C + m * ldc + n0, acc, (size_t)nn * sizeof(float));
        }
    }
}

typedef struct {
    void (*fn)(float *, int64_t, const float *, int64_t, int64_t, int64_t, const tm_bweights *,
               int64_t, int64_t);
    float *C;
    int64_t ldc, M, row_blocks, lda;
    const float *A;
    const tm_bweights *w;
} btask;

static void btask_run(void *ctx, int64_t begin, int64_t end)
{
    const btask *t = ctx;
    for (int64_t i = begin; i < end; i++) {
        int64_t r = i / t->w->panels, p = i % t->w->panels; /* row-major, as qtask */
        int64_t m0 = r * ROWS, m1 = m0 + ROWS < t->M ? m0 + ROWS : t->M;
        t->fn(t->C, t->ldc, t->A, t->lda, m0, m1, t->w, p, p + 1);
    }
}

void tm_bgemm(float *C, int64_t ldc, const float *A, int64_t lda, int64_t M, const tm_bweights *w,
              int scalar)
{
    if (M <= 0 || w->n <= 0) return;
    btask t = {tm_cpu_isa() >= TM_ISA_AVX2 && !scalar ? tm_bgemm_block_avx2 : bgemm_block_scalar,
               C, ldc, M, (M + ROWS - 1) / ROWS, lda, A, w};
    tm_parallel_range(t.row_blocks * w->panels, M * w->k * w->panels * TM_QGEMM_NR / 8, btask_run,
                      &t);
}
