/* Compiling and running a graph: the backend-independent loops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "graph_internal.h"

/* The backend table: CPU now; a CUDA backend fills the same slots. */
typedef struct {
    const char *name;
    tm_status (*forward)(tm_graph *g, tm_node *n);
    tm_status (*backward)(tm_graph *g, tm_node *n);
} tm_backend;

static const tm_backend cpu_backend = {"cpu", tm_cpu_forward, tm_cpu_backward};

/* ------------------------------------------------------------ profile */

/* TRIMODAL_PROFILE (any value but "0" or empty) times every op of every
 * pass, a checkpoint segment's recomputed forward steps included (they
 * count as forward runs); tm_graph_free prints the table. Off, it costs a
 * branch or two per node. */
static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void prof_add(tm_graph *g, int row, int bwd, double t0)
{
    tm_prof_row *r = &g->prof[row];
    double dt = now_s() - t0;
    if (bwd) r->bwd_s += dt, r->bwd_n++;
    else r->fwd_s += dt, r->fwd_n++;
}

/* One node's forward (bwd = 0; the pass itself or a checkpoint segment's
 * recompute) or backward step, timed when profiling. */
static tm_status run_step(tm_graph *g, const tm_backend *be, tm_node *n, int bwd)
{
    if (!g->prof) return bwd ? be->backward(g, n) : be->forward(g, n);
    double t0 = now_s();
    tm_status s = bwd ? be->backward(g, n) : be->forward(g, n);
    prof_add(g, n->op, bwd, t0);
    return s;
}

static int prof_cmp(const void *a, const void *b)
{
    const tm_prof_row *x = *(tm_prof_row *const *)a, *y = *(tm_prof_row *const *)b;
    double dx = x->fwd_s + x->bwd_s, dy = y->fwd_s + y->bwd_s;
    return dx < dy ? 1 : dx > dy ? -1 : 0;
}

void tm_prof_print(const tm_graph *g)
{
    if (!g->prof) return;
    tm_prof_row *order[TM_OP_COUNT + 1];
    double total = 0;
    int n = 0;
    for (int i = 0; i <= TM_OP_COUNT; i++) {
        double t = g->prof[i].fwd_s + g->prof[i].bwd_s;
        if (t > 0) order[n++] = &g->prof[i], total += t;
    }
    if (!n) return;
    qsort(order, (size_t)n, sizeof *order, prof_cmp);
    fprintf(stderr, "profile of a %s graph (%d nodes, %.3f s in ops):\n",
            g->mode == TM_GRAPH_TRAIN ? "training" : "inference", g->n, total);
    fprintf(stderr, "  %-16s %10s %10s %7s %9s %9s\n", "op", "forward s", "backward s", "share",
            "fwd runs", "bwd runs");
    for (int i = 0; i < n; i++) {
        const tm_prof_row *r = order[i];
        int op = (int)(r - g->prof);
        fprintf(stderr, "  %-16s %10.3f %10.3f %6.1f%% %9lld %9lld\n",
                op == TM_OP_COUNT ? "(grad zeroing)" : tm_op_name((tm_op)op), r->fwd_s, r->bwd_s,
                100.0 * (r->fwd_s + r->bwd_s) / total, (long long)r->fwd_n, (long long)r->bwd_n);
    }
}

tm_status tm_graph_set_precision(tm_graph *g, tm_dtype precision)
{
    if (!g) return tm_fail(TM_ERR_INVALID, "graph_set_precision: NULL graph");
    if (g->compiled)
        return tm_fail(TM_ERR_INVALID, "graph_set_precision: call it before tm_graph_compile");
    if (precision != TM_F32 && precision != TM_BF16 && precision != TM_F16)
        return tm_fail(TM_ERR_INVALID,
                       "graph_set_precision: matmul precision must be f32, bf16 or f16, got %s",
                       tm_dtype_name(precision));
    g->precision = precision;
    return TM_OK;
}

tm_dtype tm_graph_precision(const tm_graph *g) { return g ? g->precision : TM_F32; }

tm_status tm_graph_set_loss_scale(tm_graph *g, float scale)
{
    if (!g) return tm_fail(TM_ERR_INVALID, "graph_set_loss_scale: NULL graph");
    if (!(scale > 0.0f) || isinf(scale))
        return tm_fail(TM_ERR_INVALID,
                       "graph_set_loss_scale: the scale must be finite and > 0, got %g",
                       (double)scale);
    g->loss_scale = scale;
    return TM_OK;
}

float tm_graph_loss_scale(const tm_graph *g) { return g ? g->loss_scale : 1.0f; }

/* The scratch for rounded GEMM operands: the largest GEMM node's inputs,
 * plus its output gradient when training (see exec_cpu.c). */
static tm_status prec_alloc(tm_graph *g)
{
    if (g->precision == TM_F32) return TM_OK;
    size_t need = 0;
    for (int i = 0; i < g->n; i++) {
        const tm_node *n = g->nodes[i];
        if (n->op != TM_OP_MATMUL && n->op != TM_OP_CONV1D && n->op != TM_OP_CONV2D) continue;
        size_t k = (size_t)n->src[0]->numel + (size_t)n->src[1]->numel;
        if (g->mode == TM_GRAPH_TRAIN) k += (size_t)n->numel;
        if (k > need) need = k;
    }
    if (!need) return TM_OK;
    g->prec_buf = tm_alloc(need * sizeof(float));
    if (!g->prec_buf)
        return tm_fail(TM_ERR_NOMEM,
                       "graph_compile: out of memory for %zu floats of %s GEMM operands", need,
                       tm_dtype_name(g->precision));
    g->prec_floats = need;
    return TM_OK;
}

tm_status tm_graph_compile(tm_graph *g, tm_node *root, tm_graph_mode mode)
{
    if (!g) return tm_fail(TM_ERR_INVALID, "graph_compile: NULL graph");
    if (g->status) return tm_fail(g->status, "%s", g->error);
    if (g->compiled) return tm_fail(TM_ERR_INVALID, "graph_compile: the graph is already compiled");
    if (!root) return tm_fail(TM_ERR_INVALID, "graph_compile: NULL root");
    if (g->seg_open)
        return tm_fail(TM_ERR_INVALID,
                       "graph_compile: checkpoint segment %d is still open; close it with "
                       "tm_graph_checkpoint_end", g->n_segs - 1);
    if (mode != TM_GRAPH_INFER && mode != TM_GRAPH_TRAIN)
        return tm_fail(TM_ERR_INVALID, "graph_compile: unknown mode %d", (int)mode);
    if (mode == TM_GRAPH_TRAIN && (root->numel != 1 || root->dtype != TM_F32))
        return tm_fail(TM_ERR_INVALID,
                       "graph_compile: training needs a scalar f32 loss as the root, got %lld "
                       "elements", (long long)root->numel);
    g->mode = mode;
    g->root = root;
    if (g->shared) {
        if (g->ext_count != g->n_params)
            return tm_fail(TM_ERR_INVALID,
                           "graph_compile: the shared parameter buffer holds %zu floats, the graph "
                           "has %zu", g->ext_count, g->n_params);
        if (mode == TM_GRAPH_TRAIN && !g->ext_grads)
            return tm_fail(TM_ERR_INVALID, "graph_compile: training needs a shared gradient buffer");
        g->params = g->ext_params;
        g->grads = g->ext_grads;
    } else {
        g->params = tm_calloc(g->n_params ? g->n_params : 1, sizeof(float));
        g->grads = tm_calloc(g->n_params ? g->n_params : 1, sizeof(float));
    }
    g->input_bufs = tm_calloc((size_t)g->n * 2 + 1, sizeof(void *));
    g->grad_ready = tm_calloc((size_t)g->n + 1, 1);
    if (!g->params || (!g->grads && mode == TM_GRAPH_TRAIN) || !g->input_bufs || !g->grad_ready)
        return tm_fail(TM_ERR_NOMEM, "graph_compile: out of memory for %zu parameters",
                       g->n_params);
    tm_status s = tm_plan(g);
    if (s) return s;
    s = prec_alloc(g);
    if (s) return s;
    const char *prof = getenv("TRIMODAL_PROFILE");
    if (prof && *prof && strcmp(prof, "0") != 0) {
        g->prof = tm_calloc(TM_OP_COUNT + 1, sizeof *g->prof);
        if (!g->prof) return tm_fail(TM_ERR_NOMEM, "graph_compile: out of memory for the profile");
    }
    g->compiled = 1;
    return TM_OK;
}

tm_status tm_graph_forward(tm_graph *g)
{
    if (!g || !g->compiled) return tm_fail(TM_ERR_INVALID, "graph_forward: compile the graph first");
    const tm_backend *be = &cpu_backend;
    g->recomputing = 0;
    g->forwarded = 0; /* a failed pass leaves nothing for backward */
    for (int i = 0; i < g->n; i++) {
        tm_node *n = g->nodes[i];
        if (!n->in_plan) continue;
        tm_status s = run_step(g, be, n, 0);
        if (s) return s;
    }
    g->rng_counter++;
    g->forwarded = 1;
    return TM_OK;
}

/* Runs the forward steps of a segment's recomputed nodes again. Dropout
 * and drop-path keep the call number of the forward pass they belong to. */
static tm_status recompute(tm_graph *g, const tm_backend *be, const tm_segment *seg)
{
    g->recomputing = 1;
    tm_status s = TM_OK;
    for (int j = seg->first; j <= seg->last && !s; j++)
        if (g->nodes[j]->recompute) s = run_step(g, be, g->nodes[j], 0);
    g->recomputing = 0;
    return s;
}

static void zero_range(void *p, int64_t begin, int64_t end)
{
    memset((float *)p + begin, 0, (size_t)(end - begin) * sizeof(float));
}

/* Zeroes n floats on the pool: a training step zeroes tens of megabytes
 * of activation gradients (the demo CNN: 88 MB at batch 128). */
static void zero_floats(float *p, int64_t n) { tm_parallel_range(n, n, zero_range, p); }

static tm_status backward(tm_graph *g, int accumulate)
{
    if (!g || !g->compiled) return tm_fail(TM_ERR_INVALID, "graph_backward: compile the graph first");
    if (g->mode != TM_GRAPH_TRAIN)
        return tm_fail(TM_ERR_INVALID, "graph_backward: the graph was compiled for inference");
    if (!g->forwarded)
        return tm_fail(TM_ERR_INVALID,
                       "graph_backward: run forward first (each backward pass needs a forward "
                       "pass of its own: the memory plan reuses activations for gradients)");
    g->forwarded = 0;
    const tm_backend *be = &cpu_backend;
    memset(g->grad_ready, 0, (size_t)g->n);
    if (!accumulate) memset(g->grads, 0, g->n_params * sizeof(float));
    /* gradients of frozen parameters stay as they are: nothing writes them */
    for (int i = 0; i < g->n; i++) {
        tm_node *n = g->nodes[i];
        if (n->op == TM_OP_PARAM) g->grad_ready[i] = 1;
        if (n->op == TM_OP_INPUT && n->requires_grad) {
            memset(n->grad, 0, (size_t)n->numel * sizeof(float));
            g->grad_ready[i] = 1;
        }
    }
    tm_node *root = g->root;
    if (!root->requires_grad) return TM_OK; /* nothing trainable reaches the loss */
    root->grad[0] = g->loss_scale;
    g->grad_ready[root->storage->id] = 1;
    for (int i = g->n - 1; i >= 0; i--) {
        tm_node *n = g->nodes[i];
        if (!n->in_plan) continue;
        /* the planner put a segment's recompute just before the backward
         * step of its last computed node */
        if (n->seg >= 0 && g->segs[n->seg].active && g->segs[n->seg].top == i) {
            tm_status s = recompute(g, be, &g->segs[n->seg]);
            if (s) return s;
        }
        if (!n->requires_grad) continue;
        /* a gradient buffer is zeroed when its first contribution arrives */
        double t0 = g->prof ? now_s() : 0;
        for (int s = 0; s < n->nsrc; s++) {
            tm_node *src = n->src[s];
            if (!src || !src->requires_grad) continue;
            tm_node *st = src->storage;
            if (!g->grad_ready[st->id]) {
                zero_floats(st->grad, st->numel);
                g->grad_ready[st->id] = 1;
            }
        }
        if (g->prof) prof_add(g, TM_OP_COUNT, 1, t0);
        tm_status s = run_step(g, be, n, 1);
        if (s) return s;
    }
    return TM_OK;
}

tm_status tm_graph_backward(tm_graph *g) { return backward(g, 0); }
tm_status tm_graph_backward_accumulate(tm_graph *g) { return backward(g, 1); }
