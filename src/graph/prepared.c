/* Weights prepared for inference (tm_graph_prepare_weights): packed f32
 * panels, bf16 panels or int8 per output channel. A prepared matmul node
 * holds its weight in n->prepared and exec_cpu.c's matmul_forward hands it
 * to tm_prepared_matmul. */
#include <string.h>

#include "graph_internal.h"
#include "ops/qgemm.h"
#include "trimodal/ops.h"

typedef struct {
    tm_weights fmt;
    int64_t K, N;
    tm_packed_b *pb; /* TM_WEIGHTS_F32 */
    tm_bweights bw;  /* TM_WEIGHTS_BF16 */
    tm_qweights qw;  /* TM_WEIGHTS_I8 */
} prepared;

static const char *const names[TM_WEIGHTS_COUNT] = {"plain", "f32", "bf16", "int8"};

const char *tm_weights_name(tm_weights fmt)
{
    return (unsigned)fmt < TM_WEIGHTS_COUNT ? names[fmt] : "unknown";
}

int tm_weights_from_name(const char *name)
{
    if (!name) return -1;
    for (int i = 0; i < TM_WEIGHTS_COUNT; i++)
        if (!strcmp(name, names[i])) return i;
    if (!strcmp(name, "i8")) return TM_WEIGHTS_I8;
    return -1;
}

/* Whether n is a matmul that can take a prepared weight: the second
 * operand a 2-D parameter (shared by every batch entry), the first not
 * transposed (its rows are then the rows of the product). */
static int preparable(const tm_node *n)
{
    return n->op == TM_OP_MATMUL && n->in_plan && n->ip[2] == 1 && !n->ip[0] &&
           n->src[1]->op == TM_OP_PARAM && n->src[1]->ndim == 2;
}

static void prepared_free(prepared *p)
{
    if (!p) return;
    tm_packed_b_free(p->pb);
    tm_bweights_free(&p->bw);
    tm_qweights_free(&p->qw);
    tm_free(p);
}

void tm_prepared_free_all(tm_graph *g)
{
    for (int i = 0; i < g->n; i++) {
        prepared_free(g->nodes[i]->prepared);
        g->nodes[i]->prepared = NULL;
    }
    tm_free(g->prep_work);
    g->prep_work = NULL;
    g->n_prepared = 0;
    g->prepared_bytes = 0;
    g->weights = TM_WEIGHTS_PLAIN;
}

/* op(B) of node n as W (N, K) with W[n][k] = w[n * ld_n + k * ld_k]. */
static tm_status prepare_one(tm_node *n, tm_weights fmt, prepared **out, size_t *bytes)
{
    const tm_node *b = n->src[1];
    int tb = n->ip[1];
    int64_t K = n->ip[5], N = n->ip[4];
    const float *w = b->value;
    int64_t ld_n = tb ? K : 1, ld_k = tb ? 1 : N;
    prepared *p = tm_calloc(1, sizeof *p);
    if (!p) return tm_fail(TM_ERR_NOMEM, "prepare_weights: out of memory");
    p->fmt = fmt;
    p->K = K;
    p->N = N;
    tm_status s = TM_OK;
    if (fmt == TM_WEIGHTS_F32) {
        s = tm_sgemm_pack_b(&p->pb, tb, K, N, w, b->shape[1]);
        *bytes += tm_packed_b_bytes(p->pb);
    } else if (fmt == TM_WEIGHTS_BF16) {
        s = tm_bweights_init(&p->bw, w, N, K, ld_n, ld_k);
        *bytes += tm_bweights_bytes(&p->bw);
    } else {
        s = tm_qweights_init(&p->qw, w, N, K, ld_n, ld_k);
        if (s) s = tm_fail(s, "prepare_weights: '%s': %s", b->name ? b->name : "?", tm_last_error());
        *bytes += tm_qweights_bytes(&p->qw);
    }
    if (s) {
        prepared_free(p);
        return s;
    }
    *out = p;
    return TM_OK;
}

tm_status tm_graph_prepare_weights(tm_graph *g, tm_weights fmt)
{
    if (!g) return tm_fail(TM_ERR_INVALID, "prepare_weights: NULL graph");
    if ((unsigned)fmt >= TM_WEIGHTS_COUNT)
        return tm_fail(TM_ERR_INVALID, "prepare_weights: unknown format %d", (int)fmt);
    if (!g->compiled || g->mode != TM_GRAPH_INFER)
        return tm_fail(TM_ERR_INVALID, "prepare_weights: the graph must be compiled in "
                                       "TM_GRAPH_INFER mode first");
    tm_prepared_free_all(g);
    if (fmt == TM_WEIGHTS_PLAIN) return TM_OK;
    if (g->precision != TM_F32)
        return tm_fail(TM_ERR_INVALID,
                       "prepare_weights: the graph multiplies in %s (tm_graph_set_precision); "
                       "prepared %s weights need an f32 graph",
                       tm_dtype_name(g->precision), tm_weights_name(fmt));
    size_t bytes = 0, work = 0;
    for (int i = 0; i < g->n; i++) {
        tm_node *n = g->nodes[i];
        if (!preparable(n)) continue;
        prepared *p = NULL;
        tm_status s = prepare_one(n, fmt, &p, &bytes);
        if (s) {
            tm_prepared_free_all(g);
            return s;
        }
        n->prepared = p;
        g->n_prepared++;
        if (fmt == TM_WEIGHTS_I8) {
            size_t wb = tm_qgemm_work_bytes(n->numel / p->N, p->K);
            work = wb > work ? wb : work;
        }
    }
    if (work) {
        g->prep_work = tm_alloc(work);
        if (!g->prep_work) {
            tm_prepared_free_all(g);
            return tm_fail(TM_ERR_NOMEM, "prepare_weights: out of memory for %zu bytes", work);
        }
    }
    g->weights = fmt;
    g->prepared_bytes = bytes + work;
    return TM_OK;
}

tm_weights tm_graph_weights(const tm_graph *g) { return g ? g->weights : TM_WEIGHTS_PLAIN; }
int tm_graph_prepared_count(const tm_graph *g) { return g ? g->n_prepared : 0; }
size_t tm_graph_prepared_bytes(const tm_graph *g) { return g ? g->prepared_bytes : 0; }

void tm_prepared_matmul(tm_graph *g, tm_node *n)
{
    const prepared *p = n->prepared;
    const float *A = n->src[0]->value;
    float *C = n->value;
    int64_t rows = n->numel / p->N;
    switch (p->fmt) {
    case TM_WEIGHTS_F32: tm_sgemm_packed(0, rows, 1.0f, A, p->K, p->pb, 0.0f, C, p->N); break;
    case TM_WEIGHTS_BF16: tm_bgemm(C, p->N, A, p->K, rows, &p->bw, 0); break;
    default: tm_qgemm(C, p->N, A, p->K, rows, &p->qw, g->prep_work); break;
    }
}
