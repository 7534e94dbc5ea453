/* Compiling a graph: which nodes the root needs, which need gradients, and
 * a memory plan that places every activation, gradient, saved tensor and
 * scratch buffer into one arena.
 *
 * The timeline has one step per node for the forward pass (its position t
 * among the needed nodes) and one per node for the backward pass (step
 * 2T-1-t, running the nodes in reverse). Each buffer lives over an interval
 * of steps; buffers whose intervals do not overlap may share bytes. Offsets
 * are chosen greedily, largest buffer first, at the lowest offset that does
 * not collide with an already placed buffer alive at the same time. */
#include <stdlib.h>
#include <string.h>

#include "graph_internal.h"

#define ALIGN 64

typedef struct {
    size_t size, offset;
    int start, end; /* inclusive steps */
    void **where;   /* the pointer to set once placed */
} buffer;

typedef struct {
    buffer *b;
    int n, cap;
} buffers;

static int push(buffers *bs, size_t bytes, int start, int end, void **where)
{
    if (bytes == 0) return 1;
    if (bs->n == bs->cap) {
        int cap = bs->cap ? bs->cap * 2 : 256;
        buffer *nb = tm_alloc((size_t)cap * sizeof *nb);
        if (!nb) return 0;
        if (bs->n) memcpy(nb, bs->b, (size_t)bs->n * sizeof *nb);
        tm_free(bs->b);
        bs->b = nb;
        bs->cap = cap;
    }
    size_t size = (bytes + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    bs->b[bs->n++] = (buffer){size, 0, start, end, where};
    return 1;
}

static int by_size_desc(const void *pa, const void *pb)
{
    const buffer *a = pa, *b = pb;
    if (a->size != b->size) return a->size < b->size ? 1 : -1;
    return a->start - b->start;
}

static int by_offset(const void *pa, const void *pb)
{
    const buffer *a = *(buffer *const *)pa, *b = *(buffer *const *)pb;
    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

/* Places every buffer; returns the arena size. */
static size_t place(buffer *b, int n)
{
    qsort(b, (size_t)n, sizeof *b, by_size_desc);
    buffer **live = tm_alloc((size_t)(n ? n : 1) * sizeof *live);
    if (!live) return SIZE_MAX;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int nl = 0;
        for (int j = 0; j < i; j++)
            if (b[j].start <= b[i].end && b[i].start <= b[j].end) live[nl++] = &b[j];
        qsort(live, (size_t)nl, sizeof *live, by_offset);
        size_t off = 0;
        for (int j = 0; j < nl; j++) {
            if (live[j]->offset >= off + b[i].size) break; /* fits in the gap before it */
            size_t e = live[j]->offset + live[j]->size;
            if (e > off) off = e;
        }
        b[i].offset = off;
        if (off + b[i].size > total) total = off + b[i].size;
    }
    tm_free(live);
    return total;
}

static int is_leaf(const tm_node *n) { return n->op == TM_OP_INPUT || n->op == TM_OP_PARAM; }

tm_status tm_plan(tm_graph *g)
{
    int N = g->n;
    tm_node **nodes = g->nodes;
    int train = g->mode == TM_GRAPH_TRAIN;

    /* 1. the nodes the root needs (creation order is topological) */
    for (int i = 0; i < N; i++) nodes[i]->in_plan = 0;
    g->root->in_plan = 1;
    for (int i = g->root->id; i >= 0; i--) {
        tm_node *n = nodes[i];
        if (!n->in_plan) continue;
        for (int s = 0; s < n->nsrc; s++)
            if (n->src[s]) n->src[s]->in_plan = 1;
    }
    int *step = tm_alloc((size_t)N * sizeof *step);
    if (!step) return TM_ERR_NOMEM;
    int T = 0;
    for (int i = 0; i < N; i++) step[i] = nodes[i]->in_plan ? T++ : -1;
    int END = 2 * T; /* past the last step: alive until the graph is freed */

    /* 2. which nodes need gradients */
    for (int i = 0; i < N; i++) {
        tm_node *n = nodes[i];
        int rg = 0;
        if (train) {
            if (n->op == TM_OP_PARAM) rg = !n->frozen;
            else if (n->op == TM_OP_INPUT) rg = n->requires_grad;
            else
                for (int s = 0; s < n->nsrc; s++)
                    if (n->src[s] && n->src[s]->requires_grad) rg = 1;
            if (n->dtype != TM_F32) rg = 0;
        }
        n->requires_grad = rg;
        if (n->op == TM_OP_ATTENTION && n->src[3] && n->src[3]->requires_grad) {
            tm_free(step);
            return tm_fail(TM_ERR_UNSUPPORTED,
                           "attention: key_bias is a mask and gets no gradient; build it from "
                           "inputs that do not require one");
        }
    }

    /* 3. lifetimes, per storage (a reshape shares its source's storage) */
    int *vstart = tm_alloc((size_t)N * sizeof(int)), *vend = tm_alloc((size_t)N * sizeof(int));
    int *gstart = tm_alloc((size_t)N * sizeof(int)), *gend = tm_alloc((size_t)N * sizeof(int));
    buffers bs = {0};
    tm_status st = TM_OK;
    if (!vstart || !vend || !gstart || !gend) {
        st = TM_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < N; i++) {
        vstart[i] = gstart[i] = END;
        vend[i] = gend[i] = -1;
    }
#define BWD(t) (2 * T - 1 - (t))
#define EXTEND(arr_s, arr_e, k, a, b)                                                          \
    do {                                                                                       \
        if ((a) < arr_s[k]) arr_s[k] = (a);                                                    \
        if ((b) > arr_e[k]) arr_e[k] = (b);                                                    \
    } while (0)
    for (int i = 0; i < N; i++) {
        tm_node *n = nodes[i];
        if (!n->in_plan) continue;
        int t = step[i], root = n->storage->id;
        /* the value exists from the producer's forward step */
        EXTEND(vstart, vend, root, t, t);
        if (n->keep || n == g->root) EXTEND(vstart, vend, root, t, END);
        if (n->requires_grad && tm_op_table[n->op].bwd_out) EXTEND(vstart, vend, root, t, BWD(t));
        if (n->requires_grad) {
            /* n reads its own gradient in its backward step */
            EXTEND(gstart, gend, root, BWD(t), BWD(t));
        }
        for (int s = 0; s < n->nsrc; s++) {
            tm_node *src = n->src[s];
            if (!src) continue;
            int sr = src->storage->id;
            if (n->op != TM_OP_RESHAPE) EXTEND(vstart, vend, sr, t, t);
            unsigned need = tm_op_table[n->op].bwd_src;
            if (n->requires_grad && (need & (1u << s) || need == 15u))
                EXTEND(vstart, vend, sr, t, BWD(t));
            if (n->requires_grad && src->requires_grad) EXTEND(gstart, gend, sr, BWD(t), BWD(t));
        }
    }
    if (train) EXTEND(gstart, gend, g->root->storage->id, BWD(step[g->root->id]), BWD(step[g->root->id]));

    /* 4. buffers: activations and gradients of non-leaf storages, saved
     * tensors, scratch */
    for (int i = 0; i < N; i++) {
        tm_node *n = nodes[i];
        if (!n->in_plan) continue;
        int t = step[i];
        if (n->storage == n && !is_leaf(n)) {
            size_t bytes = (size_t)n->numel * tm_dtype_size(n->dtype);
            if (!push(&bs, bytes ? bytes : 1, vstart[i], vend[i], &n->value)) goto nomem;
            if (n->requires_grad && gend[i] >= 0)
                if (!push(&bs, (size_t)n->numel * sizeof(float), gstart[i], gend[i], (void **)&n->grad))
                    goto nomem;
        }
        if (n->aux_bytes && !push(&bs, n->aux_bytes, t, n->requires_grad ? BWD(t) : t, &n->aux))
            goto nomem;
        if (n->fwd_work && !push(&bs, n->fwd_work * sizeof(float), t, t, (void **)&n->work))
            goto nomem;
        if (n->requires_grad && n->bwd_work &&
            !push(&bs, n->bwd_work * sizeof(float), BWD(t), BWD(t), (void **)&n->bwork))
            goto nomem;
    }
    g->unplanned_bytes = 0;
    for (int i = 0; i < bs.n; i++) g->unplanned_bytes += bs.b[i].size;
    size_t total = place(bs.b, bs.n);
    if (total == SIZE_MAX) goto nomem;
    g->arena = tm_alloc(total ? total : ALIGN);
    if (!g->arena) goto nomem;
    g->arena_bytes = total;
    for (int i = 0; i < bs.n; i++) *bs.b[i].where = g->arena + bs.b[i].offset;

    /* 5. leaves: parameters in the flat buffers, inputs in their own */
    for (int i = 0; i < N; i++) {
        tm_node *n = nodes[i];
        if (n->op == TM_OP_PARAM) {
            n->value = g->params + n->param_off;
            n->grad = n->requires_grad ? g->grads + n->param_off : NULL;
        } else if (n->op == TM_OP_INPUT) {
            size_t bytes = (size_t)n->numel * tm_dtype_size(n->dtype);
            n->value = tm_calloc(1, bytes ? bytes : 1);
            if (!n->value) goto nomem;
            g->input_bufs[g->n_input_bufs++] = n->value;
            if (n->requires_grad) {
                n->grad = tm_calloc(1, bytes ? bytes : 1);
                if (!n->grad) goto nomem;
                g->input_bufs[g->n_input_bufs++] = n->grad;
            }
        }
    }
    /* 6. views take their storage's pointers */
    for (int i = 0; i < N; i++) {
        tm_node *n = nodes[i];
        if (n->storage != n) {
            n->value = n->storage->value;
            n->grad = n->requires_grad ? n->storage->grad : NULL;
        }
    }
    goto done;
nomem:
    st = tm_fail(TM_ERR_NOMEM, "graph compile: out of memory planning %d nodes", N);
done:
    tm_free(bs.b);
    tm_free(step);
    tm_free(vstart);
    tm_free(vend);
    tm_free(gstart);
    tm_free(gend);
    return st;
}
