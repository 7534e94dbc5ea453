/* Compiling a graph: which nodes the root needs, which need gradients, and
 * a memory plan that places every activation, gradient, saved tensor and
 * scratch buffer into one arena.
 *
 * The timeline has one step per needed node for the forward pass (its
 * position among the needed nodes, in creation order), then the backward
 * region: the nodes in reverse order, one step each, where the first node
 * met of each gradient-checkpoint segment is preceded by one step per
 * recomputed node of that segment (in forward order). Each buffer lives
 * over one interval of steps, or two for the value, saved tensor and
 * scratch of a recomputed node (its forward life, then its life from its
 * recompute to its backward); buffers whose intervals do not overlap may
 * share bytes. Offsets are chosen greedily, largest buffer first, at the
 * lowest offset that does not collide with an already placed buffer alive
 * at the same time.
 *
 * Which copy a read uses: a node reading a recomputed value of its own
 * segment during the recompute or the backward pass reads the recomputed
 * copy; every other read (the forward pass, and readers outside the
 * segment, whose backward runs before the segment's recompute) keeps the
 * forward copy alive. */
#include <stdlib.h>
#include <string.h>

#include "graph_internal.h"

#define ALIGN 64

typedef struct {
    size_t size, offset;
    int start, end;   /* inclusive steps */
    int start2, end2; /* a second interval (a recomputed node's), or -1, -1 */
    void **where;     /* the pointer to set once placed */
} buffer;

typedef struct {
    buffer *b;
    int n, cap;
} buffers;

static int push2(buffers *bs, size_t bytes, int start, int end, int start2, int end2,
                 void **where)
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
    if (start2 >= 0 && start2 <= end + 1 && end2 >= start - 1) { /* touching: one interval */
        start = start < start2 ? start : start2;
        end = end > end2 ? end : end2;
        start2 = end2 = -1;
    }
    bs->b[bs->n++] = (buffer){size, 0, start, end, start2, end2, where};
    return 1;
}

static int push(buffers *bs, size_t bytes, int start, int end, void **where)
{
    return push2(bs, bytes, start, end, -1, -1, where);
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

/* Whether intervals [s1, e1] and [s2, e2] share a step (a start of -1 is
 * no interval). */
static int meets(int s1, int e1, int s2, int e2)
{
    return s1 >= 0 && s2 >= 0 && s1 <= e2 && s2 <= e1;
}

static int overlap(const buffer *a, const buffer *b)
{
    return meets(a->start, a->end, b->start, b->end) ||
           meets(a->start, a->end, b->start2, b->end2) ||
           meets(a->start2, a->end2, b->start, b->end) ||
           meets(a->start2, a->end2, b->start2, b->end2);
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
            if (overlap(&b[j], &b[i])) live[nl++] = &b[j];
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

/* Which nodes are computed (in_plan) and which get gradients: the
 * ancestors of the root, and those of side outputs (which get none). */
static tm_status mark_nodes(tm_graph *g)
{
    int N = g->n;
    tm_node **nodes = g->nodes;
    int train = g->mode == TM_GRAPH_TRAIN;
    for (int i = 0; i < N; i++) nodes[i]->in_plan = nodes[i]->on_loss = 0;
    g->root->on_loss = 1;
    for (int i = g->root->id; i >= 0; i--) {
        tm_node *n = nodes[i];
        if (!n->on_loss) continue;
        for (int s = 0; s < n->nsrc; s++)
            if (n->src[s]) n->src[s]->on_loss = 1;
    }
    for (int i = N - 1; i >= 0; i--) {
        tm_node *n = nodes[i];
        if (n->on_loss || n->output) n->in_plan = 1;
        if (!n->in_plan) continue;
        for (int s = 0; s < n->nsrc; s++)
            if (n->src[s]) n->src[s]->in_plan = 1;
    }
    for (int i = 0; i < N; i++) {
        tm_node *n = nodes[i];
        int rg = 0;
        if (train) {
            if (n->op == TM_OP_PARAM) rg = !n->frozen;
            else if (n->op == TM_OP_INPUT) rg = n->requires_grad;
            else if (n->on_loss)
                for (int s = 0; s < n->nsrc; s++)
                    if (n->src[s] && n->src[s]->requires_grad) rg = 1;
            if (n->dtype != TM_F32) rg = 0;
        }
        n->requires_grad = rg;
        if (rg && n->op == TM_OP_ATTENTION && n->src[3] && n->src[3]->requires_grad)
            return tm_fail(TM_ERR_UNSUPPORTED,
                           "attention: key_bias is a mask and gets no gradient; build it from "
                           "inputs that do not require one");
        if (rg && n->op == TM_OP_ATTENTION_PROBS)
            return tm_fail(TM_ERR_UNSUPPORTED,
                           "attention_probs: it is forward only (for attention maps), but the "
                           "loss needs its gradient; train with tm_attention, and compute maps "
                           "in an inference graph or as a side output (tm_graph_add_output)");
    }
    return TM_OK;
}

/* Which segments recompute, and which nodes. A segment is active when it
 * holds a node that needs a gradient. Its recomputed nodes are the fewest
 * that its backward pass needs: walking the segment backwards, a node is
 * needed when a backward step of the segment reads its value (bwd_src,
 * bwd_out) or its saved tensor, or when a needed node's forward reads it;
 * values from outside the segment, parameters, and the root and kept
 * nodes (pinned: their value survives the whole pass) are never
 * recomputed. So the tail of a block that only feeds the next block (a
 * last projection, its dropout, the residual add) is not run again. */
static tm_status mark_recompute(tm_graph *g)
{
    int N = g->n;
    tm_node **nodes = g->nodes;
    int train = g->mode == TM_GRAPH_TRAIN;
    unsigned char *pinned = tm_calloc((size_t)N + 1, 2);
    if (!pinned) return tm_fail(TM_ERR_NOMEM, "graph compile: out of memory");
    unsigned char *needed = pinned + N + 1;
    for (int k = 0; k < g->n_segs; k++) {
        g->segs[k].top = -1;
        g->segs[k].active = 0;
    }
    for (int i = 0; i < N; i++) {
        tm_node *n = nodes[i];
        n->recompute = 0;
        if (!n->in_plan) continue;
        if (n->keep || n == g->root) pinned[n->storage->id] = 1;
        if (n->seg < 0) continue;
        tm_segment *s = &g->segs[n->seg];
        s->top = i;
        if (train && n->requires_grad && !is_leaf(n)) s->active = 1;
    }
    for (int i = N - 1; i >= 0; i--) {
        tm_node *n = nodes[i];
        if (!n->in_plan || !n->on_loss || n->seg < 0 || !g->segs[n->seg].active || is_leaf(n))
            continue;
        /* (only the segment's own values: others' are kept, or recomputed
         * for their own segment's backward) */
#define NEED(x) (needed[(x)->storage->id] |= (x)->storage->seg == n->seg)
        if (n->requires_grad) { /* what its backward step reads */
            unsigned need = tm_op_table[n->op].bwd_src;
            for (int s = 0; s < n->nsrc; s++)
                if (n->src[s] && (need & (1u << s) || need == 15u)) NEED(n->src[s]);
            if (tm_op_table[n->op].bwd_out || n->aux_bytes) NEED(n);
        }
        if (n->storage != n || !needed[i] || pinned[i]) continue;
        n->recompute = 1; /* and its forward reads its sources */
        for (int s = 0; s < n->nsrc; s++)
            if (n->src[s]) NEED(n->src[s]);
#undef NEED
    }
    tm_free(pinned);
    return TM_OK;
}

tm_status tm_plan(tm_graph *g)
{
    int N = g->n;
    tm_node **nodes = g->nodes;

    tm_status st = mark_nodes(g);
    if (st) return st;
    st = mark_recompute(g);
    if (st) return st;

    /* positions: forward f, recompute r (or -1), backward b */
    int *pos = tm_alloc((size_t)(N ? N : 1) * 3 * sizeof *pos);
    int *iv = tm_alloc((size_t)(N ? N : 1) * 6 * sizeof *iv);
    buffers bs = {0};
    if (!pos || !iv) goto nomem;
    int *fpos = pos, *rpos = pos + N, *bpos = pos + 2 * N;
    int T = 0;
    for (int i = 0; i < N; i++) {
        fpos[i] = nodes[i]->in_plan ? T++ : -1;
        rpos[i] = bpos[i] = -1;
    }
    int p = T;
    for (int i = N - 1; i >= 0; i--) {
        if (!nodes[i]->in_plan) continue;
        int k = nodes[i]->seg;
        if (k >= 0 && g->segs[k].active && g->segs[k].top == i)
            for (int j = g->segs[k].first; j <= g->segs[k].last; j++)
                if (nodes[j]->recompute) rpos[j] = p++;
        bpos[i] = p++;
    }
    int END = p; /* past the last step: alive until the graph is freed */

    /* lifetimes, per storage (a reshape shares its source's storage):
     * v the forward copy (the only one of a node not recomputed), w the
     * recomputed copy, gr the gradient */
    int *vs = iv, *ve = iv + N, *ws = iv + 2 * N, *we = iv + 3 * N, *gs = iv + 4 * N,
        *ge = iv + 5 * N;
    for (int i = 0; i < N; i++) {
        vs[i] = ws[i] = gs[i] = END;
        ve[i] = we[i] = ge[i] = -1;
    }
#define EXTEND(arr_s, arr_e, k, a, b)                                                          \
    do {                                                                                       \
        if ((a) < arr_s[k]) arr_s[k] = (a);                                                    \
        if ((b) > arr_e[k]) arr_e[k] = (b);                                                    \
    } while (0)
/* reader m reads storage s at step at; late: in a recompute or backward step */
#define USE(s, m, at, late)                                                                    \
    do {                                                                                       \
        if ((late) && (s)->recompute && (m)->seg == (s)->seg)                                  \
            EXTEND(ws, we, (s)->id, at, at);                                                   \
        else                                                                                   \
            EXTEND(vs, ve, (s)->id, at, at);                                                   \
    } while (0)
    for (int i = 0; i < N; i++) {
        tm_node *n = nodes[i];
        if (!n->in_plan) continue;
        int t = fpos[i], r = rpos[i], b = bpos[i];
        tm_node *sto = n->storage;
        EXTEND(vs, ve, sto->id, t, t); /* the value exists from the producer's forward step */
        if (n->recompute) EXTEND(ws, we, i, r, r);
        if (n->keep || n == g->root) EXTEND(vs, ve, sto->id, t, END);
        if (n->requires_grad && tm_op_table[n->op].bwd_out) USE(sto, n, b, 1);
        if (n->requires_grad) EXTEND(gs, ge, sto->id, b, b); /* n reads its own gradient */
        for (int s = 0; s < n->nsrc; s++) {
            tm_node *src = n->src[s];
            if (!src) continue;
            tm_node *ss = src->storage;
            if (n->op != TM_OP_RESHAPE) {
                USE(ss, n, t, 0);
                if (n->recompute) USE(ss, n, r, 1);
            }
            unsigned need = tm_op_table[n->op].bwd_src;
            if (n->requires_grad && (need & (1u << s) || need == 15u)) USE(ss, n, b, 1);
            if (n->requires_grad && src->requires_grad) EXTEND(gs, ge, ss->id, b, b);
        }
    }
    if (g->mode == TM_GRAPH_TRAIN)
        EXTEND(gs, ge, g->root->storage->id, bpos[g->root->id], bpos[g->root->id]);
#undef USE

    /* buffers: activations and gradients of non-leaf storages, saved
     * tensors, scratch */
    for (int i = 0; i < N; i++) {
        tm_node *n = nodes[i];
        if (!n->in_plan) continue;
        int t = fpos[i], r = rpos[i], b = bpos[i], rc = n->recompute;
        if (n->storage == n && !is_leaf(n)) {
            size_t bytes = (size_t)n->numel * tm_dtype_size(n->dtype);
            if (!push2(&bs, bytes ? bytes : 1, vs[i], ve[i], rc ? ws[i] : -1, rc ? we[i] : -1,
                       &n->value))
                goto nomem;
            if (n->requires_grad && ge[i] >= 0)
                if (!push(&bs, (size_t)n->numel * sizeof(float), gs[i], ge[i], (void **)&n->grad))
                    goto nomem;
        }
        if (n->aux_bytes) {
            int ok = rc ? push2(&bs, n->aux_bytes, t, t, r, n->requires_grad ? b : r, &n->aux)
                        : push(&bs, n->aux_bytes, t, n->requires_grad ? b : t, &n->aux);
            if (!ok) goto nomem;
        }
        if (n->fwd_work &&
            !push2(&bs, n->fwd_work * sizeof(float), t, t, rc ? r : -1, rc ? r : -1,
                   (void **)&n->work))
            goto nomem;
        if (n->requires_grad && n->bwd_work &&
            !push(&bs, n->bwd_work * sizeof(float), b, b, (void **)&n->bwork))
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
    tm_free(pos);
    tm_free(iv);
    return st;
}
