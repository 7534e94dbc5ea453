/*
 * Prepared weights in an inference graph (tm_graph_prepare_weights):
 * - which matmuls are prepared (a 2-D parameter as second operand, both
 *   transpositions; not a product of two activations);
 * - TM_WEIGHTS_F32 gives the plain graph's output bit for bit;
 * - TM_WEIGHTS_BF16 equals a plain graph whose weights were rounded to
 *   bf16 (to f32 rounding), and the f32 graph within bf16 error;
 * - TM_WEIGHTS_I8 equals a reference computed here from the definition
 *   (per-row activation and per-channel weight quantisation, exact integer
 *   sums), and the f32 graph within 3% (relative Frobenius);
 * - a prepared graph keeps its weights until prepared again; plain undoes;
 * - graphs on one parameter buffer share each prepared weight (one copy,
 *   freed with the last graph; changed values get a fresh copy);
 * - errors: not compiled, a training graph, a bf16-precision graph, a NaN
 *   weight for int8 (then nothing stays prepared), a bad format.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/graph.h"

enum { B = 3, T = 5, K = 37, N1 = 20, N2 = 9 };

typedef struct {
    tm_graph *g;
    tm_node *x, *w1, *b1, *w2, *out;
} net;

/* out = gelu(x w1^T + b1) @ w2 (w2 (N1, N2), not transposed) + (x x^T)
 * summed in: x (B, T, K). */
static net build_shared(tm_graph_mode mode, int bf16_precision, float *share, size_t count);

static net build(tm_graph_mode mode, int bf16_precision)
{
    return build_shared(mode, bf16_precision, NULL, 0);
}

/* build, on a caller's parameter buffer when share is not NULL. */
static net build_shared(tm_graph_mode mode, int bf16_precision, float *share, size_t count)
{
    net n;
    n.g = tm_graph_new();
    n.x = tm_input(n.g, "x", TM_F32, 3, (int64_t[]){B, T, K});
    n.w1 = tm_param(n.g, "w1", 2, (int64_t[]){N1, K});
    n.b1 = tm_param(n.g, "b1", 1, (int64_t[]){N1});
    n.w2 = tm_param(n.g, "w2", 2, (int64_t[]){N1, N2});
    tm_node *h = tm_gelu(n.g, tm_linear(n.g, n.x, n.w1, n.b1));
    tm_node *y = tm_matmul(n.g, h, n.w2, 0, 0);             /* (B, T, N2) */
    tm_node *xx = tm_matmul(n.g, n.x, n.x, 0, 1);           /* (B, T, T): not prepared */
    tm_node *s = tm_sum(n.g, xx, 1, (int[]){-1}, 1);        /* (B, T, 1) */
    n.out = tm_add(n.g, y, s);
    if (bf16_precision) tm_graph_set_precision(n.g, TM_BF16);
    if (mode == TM_GRAPH_TRAIN) n.out = tm_sum(n.g, n.out, 0, NULL, 0);
    if (share) CHECK_OK(tm_graph_share_params(n.g, share, NULL, count));
    CHECK_OK(tm_graph_compile(n.g, n.out, mode));
    test_fill_uniform(tm_node_data(n.g, n.x), B * T * K, 1, -1, 1);
    test_fill_uniform(tm_node_data(n.g, n.w1), N1 * K, 2, -0.3f, 0.3f);
    test_fill_uniform(tm_node_data(n.g, n.b1), N1, 3, -0.1f, 0.1f);
    test_fill_uniform(tm_node_data(n.g, n.w2), N1 * N2, 4, -0.3f, 0.3f);
    return n;
}

static float *run(net *n)
{
    CHECK_OK(tm_graph_forward(n->g));
    float *o = malloc(B * T * N2 * sizeof(float));
    memcpy(o, tm_node_data(n->g, n->out), B * T * N2 * sizeof(float));
    return o;
}

static double rel_err(const float *a, const float *b, int64_t n)
{
    double e = 0, f = 0;
    for (int64_t i = 0; i < n; i++) {
        e += (a[i] - b[i]) * (double)(a[i] - b[i]);
        f += b[i] * (double)b[i];
    }
    return sqrt(e / f);
}

/* Symmetric per-row int8 of x (rows, len), row stride rs, element stride es. */
static void quant(float *deq_scale, int8_t *q, const float *x, int64_t rows, int64_t len, int64_t rs,
                  int64_t es)
{
    for (int64_t r = 0; r < rows; r++) {
        float mx = 0;
        for (int64_t k = 0; k < len; k++) mx = fmaxf(mx, fabsf(x[r * rs + k * es]));
        deq_scale[r] = mx / 127.0f;
        for (int64_t k = 0; k < len; k++)
            q[r * len + k] = mx > 0 ? (int8_t)rintf(x[r * rs + k * es] * (127.0f / mx)) : 0;
    }
}

/* C (M, N) = int8 product of A (M, Kd) and W given as W[n][k] = w[n*rs + k*es]. */
static void ref_int8(float *C, const float *A, int64_t M, int64_t Kd, const float *w, int64_t N,
                     int64_t rs, int64_t es)
{
    int8_t *qa = malloc((size_t)(M * Kd)), *qw = malloc((size_t)(N * Kd));
    float *sa = malloc((size_t)M * sizeof(float)), *sw = malloc((size_t)N * sizeof(float));
    quant(sa, qa, A, M, Kd, Kd, 1);
    quant(sw, qw, w, N, Kd, rs, es);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            int32_t acc = 0;
            for (int64_t k = 0; k < Kd; k++) acc += qa[m * Kd + k] * qw[n * Kd + k];
            C[m * N + n] = ((float)acc * sa[m]) * sw[n];
        }
    free(qa);
    free(qw);
    free(sa);
    free(sw);
}

static float gelu(float x) { return 0.5f * x * (1.0f + erff(x / sqrtf(2.0f))); }

static void test_formats(void)
{
    net n = build(TM_GRAPH_INFER, 0);
    float *plain = run(&n);
    CHECK(tm_graph_weights(n.g) == TM_WEIGHTS_PLAIN && tm_graph_prepared_count(n.g) == 0);

    CHECK_OK(tm_graph_prepare_weights(n.g, TM_WEIGHTS_F32));
    CHECK(tm_graph_prepared_count(n.g) == 2); /* w1 (transposed) and w2; not x x^T */
    CHECK(tm_graph_prepared_bytes(n.g) >= (N1 * K + N1 * N2) * sizeof(float));
    float *f32 = run(&n);
    CHECK(!memcmp(f32, plain, B * T * N2 * sizeof(float)));

    CHECK_OK(tm_graph_prepare_weights(n.g, TM_WEIGHTS_BF16));
    CHECK(tm_graph_weights(n.g) == TM_WEIGHTS_BF16 && tm_graph_prepared_count(n.g) == 2);
    float *bf = run(&n);
    /* the same graph, plain, with the weights rounded to bf16 */
    net r = build(TM_GRAPH_INFER, 0);
    float *w1 = tm_node_data(r.g, r.w1), *w2 = tm_node_data(r.g, r.w2);
    for (int i = 0; i < N1 * K; i++) w1[i] = tm_bf16_to_f32(tm_f32_to_bf16(w1[i]));
    for (int i = 0; i < N1 * N2; i++) w2[i] = tm_bf16_to_f32(tm_f32_to_bf16(w2[i]));
    float *bf_ref = run(&r);
    CHECK(check_close("bf16 vs rounded weights", bf, bf_ref, B * T * N2, 1e-5, 1e-5));
    printf("bf16 vs f32: relative error %.5f\n", rel_err(bf, plain, B * T * N2));
    CHECK(rel_err(bf, plain, B * T * N2) < 0.01);

    CHECK_OK(tm_graph_prepare_weights(n.g, TM_WEIGHTS_I8));
    float *i8 = run(&n);
    /* the reference: int8 linear, bias, gelu, int8 matmul, + sum of x x^T */
    const float *x = tm_node_data(n.g, n.x), *b1 = tm_node_data(n.g, n.b1);
    float h[B * T * N1], y[B * T * N2], want[B * T * N2];
    ref_int8(h, x, B * T, K, tm_node_data(n.g, n.w1), N1, K, 1);
    for (int i = 0; i < B * T * N1; i++) h[i] = gelu(h[i] + b1[i % N1]);
    ref_int8(y, h, B * T, N1, tm_node_data(n.g, n.w2), N2, 1, N2);
    for (int bt = 0; bt < B * T; bt++) {
        int b = bt / T;
        float s = 0;
        for (int u = 0; u < T; u++) {
            float d = 0;
            for (int k = 0; k < K; k++) d += x[bt * K + k] * x[(b * T + u) * K + k];
            s += d;
        }
        for (int j = 0; j < N2; j++) want[bt * N2 + j] = y[bt * N2 + j] + s;
    }
    CHECK(check_close("int8 vs reference", i8, want, B * T * N2, 1e-4, 1e-4));
    printf("int8 vs f32: relative error %.5f\n", rel_err(i8, plain, B * T * N2));
    CHECK(rel_err(i8, plain, B * T * N2) < 0.03);

    /* prepared weights do not follow later changes until prepared again */
    float *w1n = tm_node_data(n.g, n.w1);
    for (int i = 0; i < N1 * K; i++) w1n[i] *= 0.5f;
    CHECK_OK(tm_graph_prepare_weights(n.g, TM_WEIGHTS_F32));
    float *halved = run(&n);
    CHECK_OK(tm_graph_prepare_weights(n.g, TM_WEIGHTS_PLAIN));
    CHECK(tm_graph_prepared_count(n.g) == 0 && tm_graph_prepared_bytes(n.g) == 0);
    float *halved_plain = run(&n);
    CHECK(!memcmp(halved, halved_plain, B * T * N2 * sizeof(float)));
    CHECK(memcmp(halved, plain, B * T * N2 * sizeof(float)) != 0);

    /* a NaN weight: int8 refuses, and leaves nothing prepared */
    CHECK_OK(tm_graph_prepare_weights(n.g, TM_WEIGHTS_BF16));
    w1n[3] = NAN;
    CHECK_STATUS(tm_graph_prepare_weights(n.g, TM_WEIGHTS_I8), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "w1") != NULL);
    CHECK(tm_graph_prepared_count(n.g) == 0 && tm_graph_weights(n.g) == TM_WEIGHTS_PLAIN);
    CHECK_STATUS(tm_graph_prepare_weights(n.g, (tm_weights)9), TM_ERR_INVALID);

    free(plain);
    free(f32);
    free(bf);
    free(bf_ref);
    free(i8);
    free(halved);
    free(halved_plain);
    tm_graph_free(r.g);
    tm_graph_free(n.g);
}

/* Two graphs on one parameter buffer hold one copy of each prepared
 * weight (tm_prepared_total_*), freed with the last graph; a weight whose
 * values changed is prepared anew while the other graph keeps its copy. */
static void test_sharing(void)
{
    CHECK(tm_prepared_total_count() == 0 && tm_prepared_total_bytes() == 0);
    /* one caller-owned parameter buffer, so that either graph may go first */
    net t = build(TM_GRAPH_INFER, 0);
    size_t count = 0;
    tm_graph_params(t.g, &count);
    tm_graph_free(t.g);
    float *params = malloc(count * sizeof(float));
    net a = build_shared(TM_GRAPH_INFER, 0, params, count);
    net b = build_shared(TM_GRAPH_INFER, 0, params, count);
    float *plain = run(&b);

    CHECK_OK(tm_graph_prepare_weights(a.g, TM_WEIGHTS_F32));
    size_t one = tm_prepared_total_bytes();
    CHECK(tm_prepared_total_count() == 2 && one >= (N1 * K + N1 * N2) * sizeof(float));
    CHECK_OK(tm_graph_prepare_weights(b.g, TM_WEIGHTS_F32));
    CHECK(tm_prepared_total_count() == 2 && tm_prepared_total_bytes() == one); /* shared */
    CHECK(tm_graph_prepared_bytes(b.g) == one);
    float *fa = run(&a), *fb = run(&b);
    CHECK(!memcmp(fa, plain, B * T * N2 * sizeof(float)));
    CHECK(!memcmp(fb, plain, B * T * N2 * sizeof(float)));

    /* another format is another copy */
    CHECK_OK(tm_graph_prepare_weights(b.g, TM_WEIGHTS_I8));
    CHECK(tm_prepared_total_count() == 4 && tm_prepared_total_bytes() > one);

    /* w1 changes: b prepares a new w1 (w2 still shared); a keeps the old */
    float *w1 = tm_node_data(b.g, b.w1);
    for (int i = 0; i < N1 * K; i++) w1[i] *= 0.5f;
    CHECK_OK(tm_graph_prepare_weights(b.g, TM_WEIGHTS_F32));
    CHECK(tm_prepared_total_count() == 3);
    float *fa2 = run(&a), *fb2 = run(&b);
    CHECK(!memcmp(fa2, plain, B * T * N2 * sizeof(float)));
    CHECK(memcmp(fb2, plain, B * T * N2 * sizeof(float)) != 0);
    CHECK_OK(tm_graph_prepare_weights(b.g, TM_WEIGHTS_PLAIN));
    float *pb2 = run(&b);
    CHECK(!memcmp(fb2, pb2, B * T * N2 * sizeof(float)));
    CHECK(tm_prepared_total_count() == 2 && tm_prepared_total_bytes() == one);

    CHECK_OK(tm_graph_prepare_weights(b.g, TM_WEIGHTS_F32)); /* new w1, shared w2 */
    CHECK(tm_prepared_total_count() == 3);
    tm_graph_free(a.g); /* a's w1 goes; b's two stay */
    CHECK(tm_prepared_total_count() == 2);
    float *fb3 = run(&b);
    CHECK(!memcmp(fb3, pb2, B * T * N2 * sizeof(float)));
    tm_graph_free(b.g);
    CHECK(tm_prepared_total_count() == 0 && tm_prepared_total_bytes() == 0);
    free(params);
    free(plain);
    free(fa);
    free(fb);
    free(fa2);
    free(fb2);
    free(pb2);
    free(fb3);
}

static void test_errors(void)
{
    CHECK_STATUS(tm_graph_prepare_weights(NULL, TM_WEIGHTS_F32), TM_ERR_INVALID);
    tm_graph *g = tm_graph_new();
    tm_node *x = tm_input(g, "x", TM_F32, 2, (int64_t[]){2, 4});
    tm_node *w = tm_param(g, "w", 2, (int64_t[]){3, 4});
    tm_node *y = tm_linear(g, x, w, NULL);
    CHECK_STATUS(tm_graph_prepare_weights(g, TM_WEIGHTS_I8), TM_ERR_INVALID); /* not compiled */
    CHECK(strstr(tm_last_error(), "compiled") != NULL);
    CHECK_OK(tm_graph_compile(g, tm_sum(g, y, 0, NULL, 0), TM_GRAPH_TRAIN));
    CHECK_STATUS(tm_graph_prepare_weights(g, TM_WEIGHTS_I8), TM_ERR_INVALID); /* training */
    tm_graph_free(g);

    net n = build(TM_GRAPH_INFER, 1);
    CHECK_STATUS(tm_graph_prepare_weights(n.g, TM_WEIGHTS_I8), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "bf16") != NULL);
    CHECK_OK(tm_graph_prepare_weights(n.g, TM_WEIGHTS_PLAIN));
    tm_graph_free(n.g);

    CHECK(!strcmp(tm_weights_name(TM_WEIGHTS_I8), "int8"));
    CHECK(tm_weights_from_name("bf16") == TM_WEIGHTS_BF16);
    CHECK(tm_weights_from_name("f32") == TM_WEIGHTS_F32);
    CHECK(tm_weights_from_name("q4") == -1 && tm_weights_from_name(NULL) == -1);
    CHECK(tm_graph_prepared_count(NULL) == 0 && tm_graph_weights(NULL) == TM_WEIGHTS_PLAIN);
}

int main(void)
{
    test_formats();
    test_sharing();
    test_errors();
    return test_finish("prepared");
}
