/* Weights prepared for inference (tm_graph_prepare_weights): packed f32
 * panels, bf16 panels or int8 per output channel. A prepared matmul node
 * holds its weight in n->prepared and exec_cpu.c's matmul_forward hands it
 * to tm_prepared_matmul.
 *
 * Prepared weights are shared: every graph that prepares the same weight
 * (the same parameter buffer, shape, transpose, format, contents and ISA: the
 * graphs of one model at several batch sizes, a session's classify, embed
 * and caption graphs) holds a reference to one copy in a process-wide
 * registry, freed with its last reference. The contents are part of the
 * key (a 64-bit hash of the f32 values), so a graph prepared after the
 * weights changed gets a fresh copy while older graphs keep theirs. */
#include <pthread.h>
#include <string.h>

#include "graph_internal.h"
#include "ops/qgemm.h"
#include "trimodal/ops.h"

typedef struct prepared {
    struct prepared *next; /* the registry's list */
    int refs;              /* graphs' nodes holding it; guarded by reg_lock */
    /* key */
    const float *data;
    int tb;
    int64_t rows, cols; /* the parameter's shape */
    uint64_t hash;
    tm_weights fmt;
    int isa; /* tm_cpu_isa() when made: the f32 panels follow its kernel */
    /* payload */
    int64_t K, N;
    size_t bytes;
    tm_packed_b *pb; /* TM_WEIGHTS_F32 */
    tm_bweights bw;  /* TM_WEIGHTS_BF16 */
    tm_qweights qw;  /* TM_WEIGHTS_I8 */
} prepared;

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static prepared *reg_head;
static size_t reg_bytes; /* held by every entry, each counted once */
static int reg_count;

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

/* Drops one reference; the last one unlinks and frees the entry. */
static void prepared_release(prepared *p)
{
    if (!p) return;
    pthread_mutex_lock(&reg_lock);
    int last = --p->refs == 0;
    if (last) {
        for (prepared **q = &reg_head; *q; q = &(*q)->next)
            if (*q == p) {
                *q = p->next;
                break;
            }
        reg_bytes -= p->bytes;
        reg_count--;
    }
    pthread_mutex_unlock(&reg_lock);
    if (last) prepared_free(p);
}

/* A 64-bit hash of n floats' bits (four independent multiply-xor lanes,
 * a few GB/s: small beside packing or quantising the same values). */
static uint64_t hash_floats(const float *x, int64_t n)
{
    const uint64_t m = 0x9E3779B97F4A7C15ull;
    uint64_t h[4] = {1, 2, 3, 4};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v[4];
        memcpy(v, x + i, sizeof v);
        for (int j = 0; j < 4; j++) {
            h[j] ^= v[j];
            h[j] *= m;
            h[j] ^= h[j] >> 29;
        }
    }
    uint64_t r = (uint64_t)n * m;
    for (; i < n; i++) {
        uint32_t v;
        memcpy(&v, x + i, sizeof v);
        r = (r ^ v) * m;
    }
    for (int j = 0; j < 4; j++) r = (r ^ h[j] ^ (h[j] >> 31)) * m;
    return r ^ (r >> 32);
}

void tm_prepared_free_all(tm_graph *g)
{
    for (int i = 0; i < g->n; i++) {
        prepared_release(g->nodes[i]->prepared);
        g->nodes[i]->prepared = NULL;
    }
    tm_free(g->prep_work);
    g->prep_work = NULL;
    g->n_prepared = 0;
    g->prepared_bytes = 0;
    g->weights = TM_WEIGHTS_PLAIN;
}

/* Finds the registry's entry with this key and takes a reference, or
 * returns NULL. Caller holds reg_lock. */
static prepared *find_locked(const float *data, int tb, int64_t rows, int64_t cols,
                             uint64_t hash, tm_weights fmt, int64_t K, int64_t N)
{
    int isa = (int)tm_cpu_isa();
    for (prepared *p = reg_head; p; p = p->next)
        if (p->data == data && p->tb == tb && p->rows == rows && p->cols == cols &&
            p->hash == hash && p->fmt == fmt && p->K == K && p->N == N && p->isa == isa) {
            p->refs++;
            return p;
        }
    return NULL;
}

/* op(B) of node n as W (N, K) with W[n][k] = w[n * ld_n + k * ld_k]:
 * a reference to the registry's copy, made first if there is none. */
static tm_status prepare_one(tm_node *n, tm_weights fmt, prepared **out)
{
    const tm_node *b = n->src[1];
    int tb = n->ip[1];
    int64_t K = n->ip[5], N = n->ip[4];
    const float *w = b->value;
    int64_t ld_n = tb ? K : 1, ld_k = tb ? 1 : N;
    uint64_t hash = hash_floats(w, b->shape[0] * b->shape[1]);
    pthread_mutex_lock(&reg_lock);
    prepared *p = find_locked(w, tb, b->shape[0], b->shape[1], hash, fmt, K, N);
    pthread_mutex_unlock(&reg_lock);
    if (p) {
        *out = p;
        return TM_OK;
    }
    p = tm_calloc(1, sizeof *p);
    if (!p) return tm_fail(TM_ERR_NOMEM, "prepare_weights: out of memory");
    p->data = w;
    p->tb = tb;
    p->rows = b->shape[0];
    p->cols = b->shape[1];
    p->hash = hash;
    p->fmt = fmt;
    p->isa = (int)tm_cpu_isa();
    p->K = K;
    p->N = N;
    p->refs = 1;
    tm_status s = TM_OK;
    if (fmt == TM_WEIGHTS_F32) {
        s = tm_sgemm_pack_b(&p->pb, tb, K, N, w, b->shape[1]);
        p->bytes = tm_packed_b_bytes(p->pb);
    } else if (fmt == TM_WEIGHTS_BF16) {
        s = tm_bweights_init(&p->bw, w, N, K, ld_n, ld_k);
        p->bytes = tm_bweights_bytes(&p->bw);
    } else {
        s = tm_qweights_init(&p->qw, w, N, K, ld_n, ld_k);
        if (s) s = tm_fail(s, "prepare_weights: '%s': %s", b->name ? b->name : "?", tm_last_error());
        p->bytes = tm_qweights_bytes(&p->qw);
    }
    if (s) {
        prepared_free(p);
        return s;
    }
    /* another thread may have made the same entry meanwhile: use the
     * first one (the two are equal) */
    pthread_mutex_lock(&reg_lock);
    prepared *q = find_locked(w, tb, p->rows, p->cols, hash, fmt, K, N);
    if (!q) {
        p->next = reg_head;
        reg_head = p;
        reg_bytes += p->bytes;
        reg_count++;
    }
    pthread_mutex_unlock(&reg_lock);
    if (q) {
        prepared_free(p);
        p = q;
    }
    *out = p;
    return TM_OK;
}

size_t tm_prepared_total_bytes(void)
{
    pthread_mutex_lock(&reg_lock);
    size_t b = reg_bytes;
    pthread_mutex_unlock(&reg_lock);
    return b;
}

int tm_prepared_total_count(void)
{
    pthread_mutex_lock(&reg_lock);
    int c = reg_count;
    pthread_mutex_unlock(&reg_lock);
    return c;
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
        tm_status s = prepare_one(n, fmt, &p);
        if (s) {
            tm_prepared_free_all(g);
            return s;
        }
        n->prepared = p;
        bytes += p->bytes;
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
