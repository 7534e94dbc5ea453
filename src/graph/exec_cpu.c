/* The CPU backend: one switch for every op's forward and one for every op's
 * backward. All backward rules live here; kernels live in src/ops/. */
#include <math.h>
#include <string.h>

#include "graph_internal.h"
#include "ops/basic.h"
#include "ops/ops_extra.h"
#include "ops/precision.h"
#include "trimodal/ops.h"

#define F(n) ((float *)(n)->value)
#define G(n) ((n) && (n)->requires_grad ? (n)->grad : NULL)

static int64_t last_dim(const tm_node *n) { return n->ndim ? n->shape[n->ndim - 1] : 1; }
static int64_t rows(const tm_node *n) { return n->numel / (last_dim(n) ? last_dim(n) : 1); }

static tm_unary unary_of(tm_op op)
{
    switch (op) {
    case TM_OP_EXP: return TM_UNARY_EXP;
    case TM_OP_LOG: return TM_UNARY_LOG;
    case TM_OP_SQRT: return TM_UNARY_SQRT;
    case TM_OP_TANH: return TM_UNARY_TANH;
    case TM_OP_SIGMOID: return TM_UNARY_SIGMOID;
    case TM_OP_RELU: return TM_UNARY_RELU;
    case TM_OP_GELU: return TM_UNARY_GELU;
    case TM_OP_GELU_TANH: return TM_UNARY_GELU_TANH;
    case TM_OP_SILU: return TM_UNARY_SILU;
    default: return TM_UNARY_SCALE;
    }
}

static tm_binary binary_of(tm_op op)
{
    switch (op) {
    case TM_OP_ADD: return TM_BINARY_ADD;
    case TM_OP_SUB: return TM_BINARY_SUB;
    case TM_OP_MUL: return TM_BINARY_MUL;
    default: return TM_BINARY_DIV;
    }
}

static void reduce_mask(const tm_node *n, int *reduce)
{
    const tm_node *x = n->src[0];
    for (int i = 0; i < x->ndim; i++) reduce[i] = (n->ip[0] >> i) & 1;
}

/* ---------------------------------------------------------- matmul */

/* Sizes of a matmul node: batch count and the strides of each operand. */
typedef struct {
    int ta, tb, mode;
    int64_t M, N, K, batch, sa, sb, sc, lda, ldb;
} mm_dims;

static mm_dims mm_of(const tm_node *n)
{
    const tm_node *a = n->src[0], *b = n->src[1];
    mm_dims d = {n->ip[0], n->ip[1], n->ip[2], n->ip[3], n->ip[4], n->ip[5], 1, 0, 0, 0, 0, 0};
    int64_t mn = d.M * d.N;
    d.batch = mn > 0 ? n->numel / mn : 0;
    d.sa = d.mode == 2 ? 0 : a->shape[a->ndim - 1] * a->shape[a->ndim - 2];
    d.sb = d.mode == 1 ? 0 : b->shape[b->ndim - 1] * b->shape[b->ndim - 2];
    d.sc = d.M * d.N;
    d.lda = a->shape[a->ndim - 1];
    d.ldb = b->shape[b->ndim - 1];
    return d;
}

/* ------------------------------------------------ reduced precision */

/* Mixed precision (tm_graph_set_precision): GEMM operands are rounded into
 * g->prec_buf, which compile sized for the largest GEMM node's inputs plus
 * its output gradient; *off counts the floats used by the current node. */
static const float *prec_round(tm_graph *g, size_t *off, const float *x, int64_t n)
{
    float *d = g->prec_buf + *off;
    *off += (size_t)n;
    tm_round_precision(d, x, n, g->precision);
    return d;
}

/* C = op(A) op(B) + beta C for a plain (folded) GEMM, in the graph's
 * precision; A holds rows_a rows of lda floats, B rows_b of ldb. bf16 runs
 * on tm_gemm_bf16 where the CPU multiplies bf16 itself (vdpbf16ps), else on
 * the f32 GEMM of the operands rounded as they are packed
 * (tm_sgemm_batched_prec: no separate pass); f16 on tm_sgemm of operands
 * rounded first (its scalar conversion is too slow to redo per panel). */
static void gemm_prec(tm_graph *g, int ta, int tb, int64_t M, int64_t N, int64_t K,
                      const float *A, int64_t lda, int64_t rows_a, const float *B, int64_t ldb,
                      int64_t rows_b, float beta, float *C, int64_t ldc)
{
    if (g->precision == TM_F32) {
        tm_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    } else if (g->precision == TM_BF16 && tm_gemm_bf16_native()) {
        tm_bf16 *a16 = (tm_bf16 *)g->prec_buf;
        tm_bf16 *b16 = a16 + rows_a * lda;
        tm_pack_bf16(a16, A, rows_a * lda);
        tm_pack_bf16(b16, B, rows_b * ldb);
        tm_gemm_bf16(ta, tb, M, N, K, 1.0f, a16, lda, b16, ldb, beta, C, ldc);
    } else if (g->precision == TM_BF16) {
        tm_sgemm_batched_prec(TM_BF16, ta, tb, 1, M, N, K, 1.0f, A, lda, 0, B, ldb, 0, beta, C,
                              ldc, 0);
    } else {
        size_t off = 0;
        const float *ra = prec_round(g, &off, A, rows_a * lda);
        const float *rb = prec_round(g, &off, B, rows_b * ldb);
        tm_sgemm(ta, tb, M, N, K, 1.0f, ra, lda, rb, ldb, beta, C, ldc);
    }
}

static void matmul_forward(tm_graph *g, tm_node *n)
{
    if (n->prepared) { /* inference: a packed, int8 or bf16 weight */
        tm_prepared_matmul(g, n);
        return;
    }
    mm_dims d = mm_of(n);
    const float *A = F(n->src[0]), *B = F(n->src[1]);
    if (d.mode == 1 && !d.ta) { /* one big GEMM: fold the batch into M */
        gemm_prec(g, 0, d.tb, d.batch * d.M, d.N, d.K, A, d.lda, d.batch * d.M, B, d.ldb,
                  n->src[1]->numel / d.ldb, 0.0f, F(n), d.N);
        return;
    }
    tm_dtype p = g->precision;
    if (p == TM_F16) { /* rounded first (see gemm_prec) */
        size_t off = 0;
        A = prec_round(g, &off, A, n->src[0]->numel);
        B = prec_round(g, &off, B, n->src[1]->numel);
        p = TM_F32;
    }
    tm_sgemm_batched_prec(p, d.ta, d.tb, d.batch, d.M, d.N, d.K, 1.0f, A, d.lda, d.sa, B, d.ldb,
                          d.sb, 0.0f, F(n), d.N, d.sc);
}

/* One operand's gradient, operands rounded to precision p as they are
 * packed; a shared (stride 0) operand sums over the batch in batch order. */
static void mm_grad(tm_dtype p, int ta, int tb, int64_t batch, int64_t M, int64_t N, int64_t K,
                    const float *X, int64_t ldx, int64_t sx, const float *Y, int64_t ldy,
                    int64_t sy, float *D, int64_t ldd, int64_t sd)
{
    if (sd != 0) {
        tm_sgemm_batched_prec(p, ta, tb, batch, M, N, K, 1.0f, X, ldx, sx, Y, ldy, sy, 1.0f, D,
                              ldd, sd);
        return;
    }
    for (int64_t i = 0; i < batch; i++)
        tm_sgemm_batched_prec(p, ta, tb, 1, M, N, K, 1.0f, X + i * sx, ldx, 0, Y + i * sy, ldy, 0,
                              1.0f, D, ldd, 0);
}

static void matmul_backward(tm_graph *g, tm_node *n)
{
    mm_dims d = mm_of(n);
    tm_node *a = n->src[0], *b = n->src[1];
    const float *A = F(a), *B = F(b), *dC = n->grad;
    float *dA = G(a), *dB = G(b);
    int64_t M = d.M, N = d.N, K = d.K;
    if (d.mode == 1 && !d.ta) {
        /* A is (batch*M, K) */
        int64_t BM = d.batch * M, rows_b = b->numel / d.ldb;
        if (dA) gemm_prec(g, 0, !d.tb, BM, K, N, dC, N, BM, B, d.ldb, rows_b, 1.0f, dA, K);
        if (dB) {
            if (!d.tb) gemm_prec(g, 1, 0, K, N, BM, A, K, BM, dC, N, BM, 1.0f, dB, N);
            else gemm_prec(g, 1, 0, N, K, BM, dC, N, BM, A, K, BM, 1.0f, dB, K);
        }
        return;
    }
    tm_dtype p = g->precision;
    if (p == TM_F16) { /* rounded first (see gemm_prec) */
        size_t off = 0;
        A = prec_round(g, &off, A, a->numel);
        B = prec_round(g, &off, B, b->numel);
        dC = prec_round(g, &off, dC, n->numel);
        p = TM_F32;
    }
    if (dA) {
        if (!d.ta) /* dA (M,K) = dC (M,N) op(B)^T */
            mm_grad(p, 0, !d.tb, d.batch, M, K, N, dC, N, d.sc, B, d.ldb, d.sb, dA, K, d.sa);
        else /* A is (K,M): dA = op(B) dC^T */
            mm_grad(p, d.tb, 1, d.batch, K, M, N, B, d.ldb, d.sb, dC, N, d.sc, dA, M, d.sa);
    }
    if (dB) {
        if (!d.tb) /* dB (K,N) = op(A)^T dC */
            mm_grad(p, !d.ta, 0, d.batch, K, N, M, A, d.lda, d.sa, dC, N, d.sc, dB, N, d.sb);
        else /* B is (N,K): dB = dC^T op(A) */
            mm_grad(p, 1, d.ta, d.batch, N, K, M, dC, N, d.sc, A, d.lda, d.sa, dB, K, d.sb);
    }
}

/* ------------------------------------------------------- forward */

tm_status tm_cpu_forward(tm_graph *g, tm_node *n)
{
    tm_node *x = n->src[0];
    switch (n->op) {
    case TM_OP_INPUT:
    case TM_OP_PARAM:
    case TM_OP_RESHAPE:
        return TM_OK;
    case TM_OP_MATMUL: matmul_forward(g, n); return TM_OK;
    case TM_OP_ADD:
    case TM_OP_SUB:
    case TM_OP_MUL:
    case TM_OP_DIV: {
        tm_bcast bc;
        tm_bcast_init(&bc, x->ndim, x->shape, n->src[1]->ndim, n->src[1]->shape);
        tm_binary_forward(binary_of(n->op), F(n), F(x), F(n->src[1]), &bc);
        return TM_OK;
    }
    case TM_OP_SCALE:
    case TM_OP_EXP:
    case TM_OP_LOG:
    case TM_OP_SQRT:
    case TM_OP_TANH:
    case TM_OP_SIGMOID:
    case TM_OP_RELU:
    case TM_OP_GELU:
    case TM_OP_GELU_TANH:
    case TM_OP_SILU:
        tm_unary_forward(unary_of(n->op), F(n), F(x), n->numel, n->fp[0], n->fp[1]);
        return TM_OK;
    case TM_OP_SUM:
    case TM_OP_MEAN: {
        int red[TM_MAX_DIMS];
        reduce_mask(n, red);
        tm_reduce_sum_forward(F(n), (double *)n->work, F(x), x->ndim, x->shape, red, n->fp[0]);
        return TM_OK;
    }
    case TM_OP_SOFTMAX:
    case TM_OP_LOG_SOFTMAX:
        tm_softmax_forward(F(n), F(x), rows(x), last_dim(x), n->op == TM_OP_LOG_SOFTMAX);
        return TM_OK;
    case TM_OP_LAYERNORM: {
        float *aux = n->aux;
        tm_layernorm_forward(F(n), aux, aux + rows(x), F(x), n->src[1] ? F(n->src[1]) : NULL,
                             n->src[2] ? F(n->src[2]) : NULL, rows(x), last_dim(x), n->fp[0]);
        return TM_OK;
    }
    case TM_OP_RMSNORM:
        tm_rmsnorm_forward(F(n), n->aux, F(x), n->src[1] ? F(n->src[1]) : NULL, rows(x),
                           last_dim(x), n->fp[0]);
        return TM_OK;
    case TM_OP_L2_NORMALIZE:
        tm_l2norm_forward(F(n), n->aux, F(x), rows(x), last_dim(x), n->fp[0]);
        return TM_OK;
    case TM_OP_DROPOUT:
        if (!g->recomputing) n->dropout_stream = g->rng_counter; /* a recompute redraws */
        if (g->mode == TM_GRAPH_TRAIN && n->fp[0] > 0)
            tm_dropout_forward_at(F(n), F(x), n->numel, n->fp[0], n->seed, n->dropout_stream,
                                  (uint64_t)g->shard * (uint64_t)n->numel);
        else
            memcpy(F(n), F(x), (size_t)n->numel * sizeof(float));
        return TM_OK;
    case TM_OP_EMBEDDING:
        return tm_embedding_forward(F(n), F(x), (const int32_t *)n->src[1]->value,
                                    n->src[1]->numel, x->shape[0], x->shape[1]);
    case TM_OP_CONCAT: {
        int a = n->ip[0];
        int64_t outer = 1, inner = 1, at = 0;
        for (int i = 0; i < a; i++) outer *= n->shape[i];
        for (int i = a + 1; i < n->ndim; i++) inner *= n->shape[i];
        for (int s = 0; s < n->nsrc; s++) {
            int64_t len = n->src[s]->shape[a];
            tm_block_copy(F(n), n->shape[a] * inner, 1, at, F(n->src[s]), len * inner, 1, 0, outer,
                          len, inner, 0);
            at += len;
        }
        return TM_OK;
    }
    case TM_OP_SLICE: {
        int a = n->ip[0];
        int64_t outer = 1, inner = 1;
        for (int i = 0; i < a; i++) outer *= n->shape[i];
        for (int i = a + 1; i < n->ndim; i++) inner *= n->shape[i];
        tm_block_copy(F(n), n->shape[a] * inner, 1, 0, F(x), x->shape[a] * inner, n->ip[2],
                      n->ip[1], outer, n->shape[a], inner, 0);
        return TM_OK;
    }
    case TM_OP_PERMUTE:
        tm_permute_copy(F(n), F(x), x->ndim, x->shape, n->ip, 0);
        return TM_OK;
    case TM_OP_ALLGATHER: {
        size_t bytes = (size_t)x->numel * sizeof(float);
        if (n->ip[0] == 1) {
            memcpy(F(n), F(x), bytes);
            return TM_OK;
        }
        return n->gather(n->gather_ctx, F(x), F(n), bytes);
    }
    case TM_OP_CONV1D:
    case TM_OP_CONV2D: {
        const int *p = n->ip;
        const float *cx = F(x), *cw = F(n->src[1]);
        if (g->precision != TM_F32) { /* im2col of rounded x = rounded im2col */
            size_t off = 0;
            cx = prec_round(g, &off, cx, x->numel);
            cw = prec_round(g, &off, cw, n->src[1]->numel);
        }
        tm_conv2d_forward(F(n), n->work, cx, cw, n->src[2] ? F(n->src[2]) : NULL, p[0],
                          p[1], p[2], p[3], p[4], p[5], p[6], (int64_t)n->fp[0], (int64_t)n->fp[1],
                          (int64_t)n->fp[2], (int64_t)n->fp[3]);
        return TM_OK;
    }
    case TM_OP_MAXPOOL2D:
    case TM_OP_AVGPOOL2D: {
        const int *p = n->ip;
        if (n->op == TM_OP_MAXPOOL2D)
            tm_maxpool2d_forward(F(n), n->aux, F(x), x->shape[0], x->shape[1], p[6], p[7], p[0],
                                 p[1], p[2], p[3], p[4], p[5]);
        else
            tm_avgpool2d_forward(F(n), F(x), x->shape[0], x->shape[1], p[6], p[7], p[0], p[1],
                                 p[2], p[3], p[4], p[5]);
        return TM_OK;
    }
    case TM_OP_ATTENTION: {
        tm_node *k = n->src[1];
        tm_attention_forward(F(n), n->aux, F(x), F(k), F(n->src[2]),
                             n->src[3] ? F(n->src[3]) : NULL, x->shape[0], x->shape[1],
                             x->shape[2], k->shape[2], x->shape[3], n->fp[0], n->ip[0]);
        return TM_OK;
    }
    case TM_OP_CROSS_ENTROPY:
        return tm_cross_entropy_forward(F(n), F(x), (const int32_t *)n->src[1]->value,
                                        x->shape[0], x->shape[1], n->fp[0], n->ip[0]);
    case TM_OP_ROPE: {
        const int64_t T = x->shape[2], D = x->shape[3];
        tm_rope_table(n->aux, T, D, n->lparam, n->fp[0]);
        tm_rope_forward(F(n), F(x), n->aux, x->shape[0] * x->shape[1], T, D);
        return TM_OK;
    }
    case TM_OP_DROP_PATH: {
        if (!g->recomputing) n->dropout_stream = g->rng_counter;
        const int64_t N = x->shape[0], inner = N ? x->numel / N : 0;
        if (g->mode == TM_GRAPH_TRAIN)
            tm_drop_path_forward_at(F(n), F(x), N, inner, n->fp[0], n->seed, n->dropout_stream,
                                    (int64_t)g->shard * N);
        else
            memcpy(F(n), F(x), (size_t)n->numel * sizeof(float));
        return TM_OK;
    }
    case TM_OP_GROUPNORM: {
        const int64_t N = x->shape[0], C = x->shape[1], S = N && C ? x->numel / (N * C) : 0;
        float *aux = n->aux;
        tm_groupnorm_forward(F(n), aux, aux + N * n->ip[0], F(x), n->src[1] ? F(n->src[1]) : NULL,
                             n->src[2] ? F(n->src[2]) : NULL, N, C, S, n->ip[0], n->fp[0]);
        return TM_OK;
    }
    case TM_OP_ATTENTION_PROBS: {
        tm_node *k = n->src[1];
        tm_attention_probs_forward(F(n), F(x), F(k), n->src[2] ? F(n->src[2]) : NULL,
                                   x->shape[0], x->shape[1], x->shape[2], k->shape[2],
                                   x->shape[3], n->fp[0], n->ip[0]);
        return TM_OK;
    }
    case TM_OP_COUNT: break;
    }
    return tm_fail(TM_ERR_INTERNAL, "forward: op %d has no CPU kernel", (int)n->op);
}

/* ------------------------------------------------------ backward */

tm_status tm_cpu_backward(tm_graph *g, tm_node *n)
{
    tm_node *x = n->src[0];
    const float *dy = n->grad;
    switch (n->op) {
    case TM_OP_INPUT:
    case TM_OP_PARAM:
    case TM_OP_RESHAPE: /* shares its gradient with its source */
        return TM_OK;
    case TM_OP_MATMUL: matmul_backward(g, n); return TM_OK;
    case TM_OP_ADD:
    case TM_OP_SUB:
    case TM_OP_MUL:
    case TM_OP_DIV: {
        tm_node *b = n->src[1];
        tm_bcast bc;
        tm_bcast_init(&bc, x->ndim, x->shape, b->ndim, b->shape);
        tm_binary_backward(binary_of(n->op), G(x), G(b), dy, F(x), F(b), &bc, x->numel, b->numel);
        return TM_OK;
    }
    case TM_OP_SCALE:
    case TM_OP_EXP:
    case TM_OP_LOG:
    case TM_OP_SQRT:
    case TM_OP_TANH:
    case TM_OP_SIGMOID:
    case TM_OP_RELU:
    case TM_OP_GELU:
    case TM_OP_GELU_TANH:
    case TM_OP_SILU:
        if (G(x)) tm_unary_backward(unary_of(n->op), G(x), dy, F(x), F(n), n->numel, n->fp[0]);
        return TM_OK;
    case TM_OP_SUM:
    case TM_OP_MEAN: {
        int red[TM_MAX_DIMS];
        reduce_mask(n, red);
        if (G(x)) tm_reduce_sum_backward(G(x), dy, x->ndim, x->shape, red, n->fp[0]);
        return TM_OK;
    }
    case TM_OP_SOFTMAX:
    case TM_OP_LOG_SOFTMAX:
        if (G(x))
            tm_softmax_backward(G(x), dy, F(n), rows(x), last_dim(x), n->op == TM_OP_LOG_SOFTMAX);
        return TM_OK;
    case TM_OP_LAYERNORM: {
        float *aux = n->aux;
        tm_layernorm_backward(G(x), G(n->src[1]), G(n->src[2]), dy, F(x),
                              n->src[1] ? F(n->src[1]) : NULL, aux, aux + rows(x), rows(x),
                              last_dim(x));
        return TM_OK;
    }
    case TM_OP_RMSNORM:
        tm_rmsnorm_backward(G(x), G(n->src[1]), dy, F(x), n->src[1] ? F(n->src[1]) : NULL, n->aux,
                            rows(x), last_dim(x));
        return TM_OK;
    case TM_OP_L2_NORMALIZE:
        if (G(x)) tm_l2norm_backward(G(x), dy, F(n), n->aux, rows(x), last_dim(x), n->fp[0]);
        return TM_OK;
    case TM_OP_DROPOUT:
        if (!G(x)) return TM_OK;
        if (n->fp[0] > 0)
            tm_dropout_backward_at(G(x), dy, n->numel, n->fp[0], n->seed, n->dropout_stream,
                                   (uint64_t)g->shard * (uint64_t)n->numel);
        else
            tm_unary_backward(TM_UNARY_SCALE, G(x), dy, NULL, NULL, n->numel, 1.0f);
        return TM_OK;
    case TM_OP_EMBEDDING:
        if (G(x))
            tm_embedding_backward(G(x), dy, (const int32_t *)n->src[1]->value, n->src[1]->numel,
                                  x->shape[1]);
        return TM_OK;
    case TM_OP_CONCAT: {
        int a = n->ip[0];
        int64_t outer = 1, inner = 1, at = 0;
        for (int i = 0; i < a; i++) outer *= n->shape[i];
        for (int i = a + 1; i < n->ndim; i++) inner *= n->shape[i];
        for (int s = 0; s < n->nsrc; s++) {
            int64_t len = n->src[s]->shape[a];
            if (G(n->src[s]))
                tm_block_copy(G(n->src[s]), len * inner, 1, 0, dy, n->shape[a] * inner, 1, at,
                              outer, len, inner, 1);
            at += len;
        }
        return TM_OK;
    }
    case TM_OP_SLICE: {
        if (!G(x)) return TM_OK;
        int a = n->ip[0];
        int64_t outer = 1, inner = 1;
        for (int i = 0; i < a; i++) outer *= n->shape[i];
        for (int i = a + 1; i < n->ndim; i++) inner *= n->shape[i];
        /* scatter back: element j of the slice came from start + j*step */
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < n->shape[a]; j++) {
                float *d = G(x) + (o * x->shape[a] + n->ip[1] + j * n->ip[2]) * inner;
                const float *s = dy + (o * n->shape[a] + j) * inner;
                for (int64_t i = 0; i < inner; i++) d[i] += s[i];
            }
        return TM_OK;
    }
    case TM_OP_ALLGATHER: /* this rank's rows: every rank computed the same loss */
        if (G(x))
            tm_unary_backward(TM_UNARY_SCALE, G(x), dy + (size_t)n->ip[1] * (size_t)x->numel, NULL,
                              NULL, x->numel, 1.0f);
        return TM_OK;
    case TM_OP_PERMUTE: {
        if (!G(x)) return TM_OK;
        int inv[TM_MAX_DIMS];
        for (int i = 0; i < n->ndim; i++) inv[n->ip[i]] = i;
        tm_permute_copy(G(x), dy, n->ndim, n->shape, inv, 1);
        return TM_OK;
    }
    case TM_OP_CONV1D:
    case TM_OP_CONV2D: {
        const int *p = n->ip;
        const float *cx = F(x), *cw = F(n->src[1]), *cdy = dy;
        if (g->precision != TM_F32) {
            size_t off = 0;
            cx = prec_round(g, &off, cx, x->numel);
            cw = prec_round(g, &off, cw, n->src[1]->numel);
            cdy = prec_round(g, &off, cdy, n->numel);
        }
        tm_conv2d_backward(G(x), G(n->src[1]), G(n->src[2]), n->bwork, cdy, cx, cw,
                           p[0], p[1], p[2], p[3], p[4], p[5], p[6], (int64_t)n->fp[0],
                           (int64_t)n->fp[1], (int64_t)n->fp[2], (int64_t)n->fp[3]);
        return TM_OK;
    }
    case TM_OP_MAXPOOL2D:
    case TM_OP_AVGPOOL2D: {
        if (!G(x)) return TM_OK;
        const int *p = n->ip;
        int64_t Ho = n->ndim == 4 ? n->shape[2] : 1, Wo = n->shape[n->ndim - 1];
        if (n->op == TM_OP_MAXPOOL2D)
            tm_maxpool2d_backward(G(x), dy, n->aux, x->shape[0], x->shape[1], p[6], p[7], Ho, Wo);
        else
            tm_avgpool2d_backward(G(x), dy, x->shape[0], x->shape[1], p[6], p[7], p[0], p[1], p[2],
                                  p[3], p[4], p[5]);
        return TM_OK;
    }
    case TM_OP_ATTENTION: {
        tm_node *k = n->src[1], *v = n->src[2];
        tm_attention_backward(G(x), G(k), G(v), n->bwork, dy, F(n), n->aux, F(x), F(k), F(v),
                              n->src[3] ? F(n->src[3]) : NULL, x->shape[0], x->shape[1],
                              x->shape[2], k->shape[2], x->shape[3], n->fp[0], n->ip[0]);
        return TM_OK;
    }
    case TM_OP_CROSS_ENTROPY:
        if (G(x))
            tm_cross_entropy_backward(G(x), dy[0], F(x), (const int32_t *)n->src[1]->value,
                                      x->shape[0], x->shape[1], n->fp[0], n->ip[0]);
        return TM_OK;
    case TM_OP_ROPE:
        if (G(x))
            tm_rope_backward(G(x), dy, n->aux, x->shape[0] * x->shape[1], x->shape[2],
                             x->shape[3]);
        return TM_OK;
    case TM_OP_DROP_PATH: {
        if (!G(x)) return TM_OK;
        const int64_t N = x->shape[0], inner = N ? x->numel / N : 0;
        tm_drop_path_backward_at(G(x), dy, N, inner, n->fp[0], n->seed, n->dropout_stream,
                                 (int64_t)g->shard * N);
        return TM_OK;
    }
    case TM_OP_GROUPNORM: {
        const int64_t N = x->shape[0], C = x->shape[1], S = N && C ? x->numel / (N * C) : 0;
        const float *aux = n->aux;
        tm_groupnorm_backward(G(x), G(n->src[1]), G(n->src[2]), dy, F(x),
                              n->src[1] ? F(n->src[1]) : NULL, aux, aux + N * n->ip[0], N, C, S,
                              n->ip[0]);
        return TM_OK;
    }
    case TM_OP_ATTENTION_PROBS: /* refused at compile time */
        return tm_fail(TM_ERR_UNSUPPORTED, "attention_probs: has no backward pass");
    case TM_OP_COUNT: break;
    }
    return tm_fail(TM_ERR_INTERNAL, "backward: op %d has no CPU kernel", (int)n->op);
}
