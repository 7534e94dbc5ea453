/* Graph construction: every builder checks its inputs, infers the output
 * shape and records the op; nothing is computed until tm_graph_forward. */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "graph_internal.h"
#include "ops/basic.h"
#include "trimodal/ops.h"

#define MAX_NUMEL ((int64_t)1 << 40)

const tm_op_info tm_op_table[TM_OP_COUNT] = {
    [TM_OP_INPUT] = {"input", 0, 0},
    [TM_OP_PARAM] = {"param", 0, 0},
    [TM_OP_MATMUL] = {"matmul", 3, 0},
    [TM_OP_ADD] = {"add", 0, 0},
    [TM_OP_SUB] = {"sub", 0, 0},
    [TM_OP_MUL] = {"mul", 3, 0},
    [TM_OP_DIV] = {"div", 3, 0},
    [TM_OP_SCALE] = {"scale", 0, 0},
    [TM_OP_SUM] = {"sum", 0, 0},
    [TM_OP_MEAN] = {"mean", 0, 0},
    [TM_OP_EXP] = {"exp", 0, 1},
    [TM_OP_LOG] = {"log", 1, 0},
    [TM_OP_SQRT] = {"sqrt", 0, 1},
    [TM_OP_TANH] = {"tanh", 0, 1},
    [TM_OP_SIGMOID] = {"sigmoid", 0, 1},
    [TM_OP_RELU] = {"relu", 1, 0},
    [TM_OP_GELU] = {"gelu", 1, 0},
    [TM_OP_GELU_TANH] = {"gelu_tanh", 1, 0},
    [TM_OP_SILU] = {"silu", 1, 0},
    [TM_OP_SOFTMAX] = {"softmax", 0, 1},
    [TM_OP_LOG_SOFTMAX] = {"log_softmax", 0, 1},
    [TM_OP_LAYERNORM] = {"layernorm", 3, 0},
    [TM_OP_RMSNORM] = {"rmsnorm", 3, 0},
    [TM_OP_DROPOUT] = {"dropout", 0, 0},
    [TM_OP_EMBEDDING] = {"embedding", 2, 0},
    [TM_OP_CONCAT] = {"concat", 0, 0},
    [TM_OP_SLICE] = {"slice", 0, 0},
    [TM_OP_RESHAPE] = {"reshape", 0, 0},
    [TM_OP_PERMUTE] = {"permute", 0, 0},
    [TM_OP_CONV1D] = {"conv1d", 3, 0},
    [TM_OP_CONV2D] = {"conv2d", 3, 0},
    [TM_OP_MAXPOOL2D] = {"maxpool2d", 0, 0},
    [TM_OP_AVGPOOL2D] = {"avgpool2d", 0, 0},
    [TM_OP_ATTENTION] = {"attention", 15, 1},
    [TM_OP_CROSS_ENTROPY] = {"cross_entropy", 3, 0},
    [TM_OP_L2_NORMALIZE] = {"l2_normalize", 0, 1},
    [TM_OP_ROPE] = {"rope", 0, 0},
    [TM_OP_DROP_PATH] = {"drop_path", 0, 0},
    [TM_OP_GROUPNORM] = {"groupnorm", 3, 0},
    [TM_OP_ATTENTION_PROBS] = {"attention_probs", 0, 0},
    [TM_OP_ALLGATHER] = {"allgather", 0, 0},
};
_Static_assert(TM_OP_COUNT == 41, "add the new op to tm_op_table and both backend switches");

const char *tm_op_name(tm_op op)
{
    return (unsigned)op < TM_OP_COUNT ? tm_op_table[op].name : "invalid";
}

/* ------------------------------------------------------------ basics */

tm_graph *tm_graph_new(void)
{
    tm_graph *g = tm_calloc(1, sizeof *g);
    if (g) g->loss_scale = 1.0f;
    return g;
}

void tm_graph_free(tm_graph *g)
{
    if (!g) return;
    tm_prof_print(g);
    tm_free(g->prof);
    tm_prepared_free_all(g);
    for (int i = 0; i < g->n; i++) {
        tm_free(g->nodes[i]->name);
        tm_free(g->nodes[i]);
    }
    for (int i = 0; i < g->n_input_bufs; i++) tm_free(g->input_bufs[i]);
    tm_free(g->input_bufs);
    tm_free(g->nodes);
    if (!g->shared) {
        tm_free(g->params);
        tm_free(g->grads);
    }
    tm_free(g->arena);
    tm_free(g->grad_ready);
    tm_free(g->prec_buf);
    tm_free(g->segs);
    tm_free(g);
}

tm_status tm_graph_status(const tm_graph *g) { return g ? g->status : TM_ERR_INVALID; }

/* Records the first build error of the graph (and as this thread's error). */
tm_node *tm_graph_fail_v(tm_graph *g, tm_status s, const char *fmt, va_list ap)
{
    if (s == TM_OK) s = TM_ERR_INVALID; /* an error must be an error */
    if (!g) {
        char msg[512];
        vsnprintf(msg, sizeof msg, fmt, ap);
        tm_fail(s, "%s", msg);
        return NULL;
    }
    if (g->status == TM_OK) {
        vsnprintf(g->error, sizeof g->error, fmt, ap);
        g->status = s;
    }
    tm_fail(g->status, "%s", g->error);
    return NULL;
}

void tm_graph_fail(tm_graph *g, tm_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tm_graph_fail_v(g, s, fmt, ap);
    va_end(ap);
}

static tm_node *build_fail(tm_graph *g, tm_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tm_graph_fail_v(g, s, fmt, ap);
    va_end(ap);
    return NULL;
}

static void shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < size) snprintf(buf + k, size - k, ")");
}

#define SHAPE(n) shape_buf(n, (char[96]){0})
static const char *shape_buf(const tm_node *n, char *buf)
{
    shape_str(buf, 96, n->ndim, n->shape);
    return buf;
}

/* 1 when every listed (non-optional) input is present; otherwise records an
 * error unless an earlier one explains the NULL. */
static int inputs_ok(tm_graph *g, const char *op, int n, tm_node *const *xs)
{
    if (!g) return 0;
    if (g->status) return 0;
    if (g->compiled) {
        build_fail(g, TM_ERR_INVALID, "%s: the graph is already compiled", op);
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (!xs[i]) {
            build_fail(g, TM_ERR_INVALID, "%s: input %d is NULL", op, i);
            return 0;
        }
    return 1;
}

static tm_node *new_node(tm_graph *g, tm_op op, tm_dtype dtype, int ndim, const int64_t *shape)
{
    if (ndim < 0 || ndim > TM_MAX_DIMS)
        return build_fail(g, TM_ERR_INVALID, "%s: result would have %d dimensions (at most %d)",
                          tm_op_name(op), ndim, TM_MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return build_fail(g, TM_ERR_INVALID, "%s: dimension %d has negative size %lld",
                              tm_op_name(op), i, (long long)shape[i]);
        if (shape[i] && numel > tm_limit_get(TM_LIMIT_TENSOR_ELEMENTS) / shape[i])
            return build_fail(g, TM_ERR_LIMIT, "%s: result has more than %lld elements (limit %s)",
                              tm_op_name(op), (long long)tm_limit_get(TM_LIMIT_TENSOR_ELEMENTS),
                              tm_limit_hint(TM_LIMIT_TENSOR_ELEMENTS));
        numel *= shape[i];
    }
    if (g->n == g->cap) {
        int cap = g->cap ? g->cap * 2 : 64;
        tm_node **nodes = tm_alloc((size_t)cap * sizeof *nodes);
        if (!nodes) return build_fail(g, TM_ERR_NOMEM, "graph: out of memory");
        if (g->n) memcpy(nodes, g->nodes, (size_t)g->n * sizeof *nodes);
        tm_free(g->nodes);
        g->nodes = nodes;
        g->cap = cap;
    }
    tm_node *n = tm_calloc(1, sizeof *n);
    if (!n) return build_fail(g, TM_ERR_NOMEM, "graph: out of memory");
    n->id = g->n;
    n->op = op;
    n->dtype = dtype;
    n->ndim = ndim;
    if (ndim) memcpy(n->shape, shape, (size_t)ndim * sizeof *shape);
    n->numel = numel;
    n->storage = n;
    n->seg = g->seg_open ? g->n_segs - 1 : -1;
    g->nodes[g->n++] = n;
    return n;
}

static void add_src(tm_node *n, tm_node *s) { n->src[n->nsrc++] = s; }

static int need_f32(tm_graph *g, const char *op, tm_node *x)
{
    if (x->dtype == TM_F32) return 1;
    build_fail(g, TM_ERR_INVALID, "%s: needs an f32 input, got %s", op, tm_dtype_name(x->dtype));
    return 0;
}

static int norm_axis(tm_graph *g, const char *op, int axis, int ndim)
{
    int a = axis < 0 ? axis + ndim : axis;
    if (a < 0 || a >= ndim) {
        build_fail(g, TM_ERR_INVALID, "%s: axis %d is out of range for %d dimensions", op, axis,
                   ndim);
        return -1;
    }
    return a;
}

static char *dup_name(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = tm_alloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ------------------------------------------------------------ leaves */

tm_node *tm_input(tm_graph *g, const char *name, tm_dtype dtype, int ndim, const int64_t *shape)
{
    if (!inputs_ok(g, "input", 0, NULL)) return NULL;
    if (dtype != TM_F32 && dtype != TM_I32)
        return build_fail(g, TM_ERR_UNSUPPORTED, "input '%s': dtype %s; graph inputs are f32 or i32",
                          name ? name : "", tm_dtype_name(dtype));
    tm_node *n = new_node(g, TM_OP_INPUT, dtype, ndim, shape);
    if (!n) return NULL;
    n->name = dup_name(name ? name : "input");
    if (!n->name) return build_fail(g, TM_ERR_NOMEM, "graph: out of memory");
    return n;
}

tm_node *tm_requires_grad(tm_graph *g, tm_node *x)
{
    if (!inputs_ok(g, "requires_grad", 1, &x)) return NULL;
    if (x->op != TM_OP_INPUT || x->dtype != TM_F32)
        return build_fail(g, TM_ERR_INVALID, "requires_grad: only f32 inputs can ask for a gradient");
    x->requires_grad = 1;
    return x;
}

tm_node *tm_param(tm_graph *g, const char *name, int ndim, const int64_t *shape)
{
    if (!inputs_ok(g, "param", 0, NULL)) return NULL;
    if (!name || !*name) return build_fail(g, TM_ERR_INVALID, "param: a parameter needs a name");
    if (tm_graph_find_param(g, name))
        return build_fail(g, TM_ERR_INVALID, "param: the name '%s' is already used", name);
    tm_node *n = new_node(g, TM_OP_PARAM, TM_F32, ndim, shape);
    if (!n) return NULL;
    n->name = dup_name(name);
    if (!n->name) return build_fail(g, TM_ERR_NOMEM, "graph: out of memory");
    n->param_off = g->n_params;
    g->n_params += (size_t)n->numel;
    return n;
}

tm_status tm_graph_share_params(tm_graph *g, float *params, float *grads, size_t count)
{
    if (!g || !params) return tm_fail(TM_ERR_INVALID, "graph_share_params: NULL graph or buffer");
    if (g->compiled)
        return tm_fail(TM_ERR_INVALID, "graph_share_params: call it before tm_graph_compile");
    g->ext_params = params;
    g->ext_grads = grads;
    g->ext_count = count;
    g->shared = 1;
    return TM_OK;
}

tm_status tm_param_freeze(tm_graph *g, tm_node *p, int frozen)
{
    if (!g || !p || p->op != TM_OP_PARAM)
        return tm_fail(TM_ERR_INVALID, "param_freeze: not a parameter");
    if (g->compiled)
        return tm_fail(TM_ERR_INVALID, "param_freeze: freeze before tm_graph_compile");
    p->frozen = frozen != 0;
    return TM_OK;
}

/* ------------------------------------------------------------ matmul */

tm_node *tm_matmul(tm_graph *g, tm_node *a, tm_node *b, int trans_a, int trans_b)
{
    tm_node *in[2] = {a, b};
    if (!inputs_ok(g, "matmul", 2, in) || !need_f32(g, "matmul", a) || !need_f32(g, "matmul", b))
        return NULL;
    if (a->ndim < 2 || b->ndim < 2)
        return build_fail(g, TM_ERR_INVALID, "matmul: inputs need at least 2 dimensions, got %s and %s",
                          SHAPE(a), SHAPE(b));
    int64_t M = trans_a ? a->shape[a->ndim - 1] : a->shape[a->ndim - 2];
    int64_t K = trans_a ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    int64_t Kb = trans_b ? b->shape[b->ndim - 1] : b->shape[b->ndim - 2];
    int64_t N = trans_b ? b->shape[b->ndim - 2] : b->shape[b->ndim - 1];
    if (K != Kb)
        return build_fail(g, TM_ERR_INVALID,
                          "matmul: inner sizes differ: %s%s x %s%s (%lld vs %lld)", SHAPE(a),
                          trans_a ? "^T" : "", SHAPE(b), trans_b ? "^T" : "", (long long)K,
                          (long long)Kb);
    int mode; /* 0: same batch, 1: b shared, 2: a shared */
    const tm_node *batched;
    if (b->ndim == 2) {
        mode = 1;
        batched = a;
    } else if (a->ndim == 2) {
        mode = 2;
        batched = b;
    } else {
        mode = 0;
        batched = a;
        if (a->ndim != b->ndim || memcmp(a->shape, b->shape, (size_t)(a->ndim - 2) * sizeof(int64_t)))
            return build_fail(g, TM_ERR_INVALID,
                              "matmul: batch dimensions of %s and %s differ (they must match, or "
                              "one side must be 2-D)", SHAPE(a), SHAPE(b));
    }
    int64_t shape[TM_MAX_DIMS];
    int nd = batched->ndim;
    memcpy(shape, batched->shape, (size_t)(nd - 2) * sizeof *shape);
    shape[nd - 2] = M;
    shape[nd - 1] = N;
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return build_fail(g, TM_ERR_LIMIT, "matmul: a matrix side exceeds 2^31");
    tm_node *n = new_node(g, TM_OP_MATMUL, TM_F32, nd, shape);
    if (!n) return NULL;
    add_src(n, a);
    add_src(n, b);
    n->ip[0] = trans_a != 0;
    n->ip[1] = trans_b != 0;
    n->ip[2] = mode;
    n->ip[3] = (int)M;
    n->ip[4] = (int)N;
    n->ip[5] = (int)K;
    return n;
}

tm_node *tm_linear(tm_graph *g, tm_node *x, tm_node *w, tm_node *b)
{
    tm_node *in[2] = {x, w};
    if (!inputs_ok(g, "linear", 2, in)) return NULL;
    if (w->ndim != 2)
        return build_fail(g, TM_ERR_INVALID, "linear: weight must be (out, in), got %s", SHAPE(w));
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        return build_fail(g, TM_ERR_INVALID, "linear: input %s does not end in %lld (weight %s)",
                          SHAPE(x), (long long)w->shape[1], SHAPE(w));
    tm_node *x2 = x;
    if (x->ndim == 1) x2 = tm_reshape(g, x, 2, (int64_t[]){1, x->shape[0]});
    tm_node *y = tm_matmul(g, x2, w, 0, 1);
    if (x->ndim == 1) y = tm_reshape(g, y, 1, (int64_t[]){w->shape[0]});
    if (b) {
        if (b->ndim != 1 || b->shape[0] != w->shape[0])
            return build_fail(g, TM_ERR_INVALID, "linear: bias must be (%lld), got %s",
                              (long long)w->shape[0], SHAPE(b));
        y = tm_add(g, y, b);
    }
    return y;
}

/* -------------------------------------------------------- elementwise */

static tm_node *binary(tm_graph *g, tm_op op, tm_node *a, tm_node *b)
{
    tm_node *in[2] = {a, b};
    const char *name = tm_op_name(op);
    if (!inputs_ok(g, name, 2, in) || !need_f32(g, name, a) || !need_f32(g, name, b)) return NULL;
    tm_bcast bc;
    if (!tm_bcast_init(&bc, a->ndim, a->shape, b->ndim, b->shape))
        return build_fail(g, TM_ERR_INVALID, "%s: shapes %s and %s do not broadcast", name,
                          SHAPE(a), SHAPE(b));
    tm_node *n = new_node(g, op, TM_F32, bc.ndim, bc.shape);
    if (!n) return NULL;
    add_src(n, a);
    add_src(n, b);
    return n;
}

tm_node *tm_add(tm_graph *g, tm_node *a, tm_node *b) { return binary(g, TM_OP_ADD, a, b); }
tm_node *tm_sub(tm_graph *g, tm_node *a, tm_node *b) { return binary(g, TM_OP_SUB, a, b); }
tm_node *tm_mul(tm_graph *g, tm_node *a, tm_node *b) { return binary(g, TM_OP_MUL, a, b); }
tm_node *tm_div(tm_graph *g, tm_node *a, tm_node *b) { return binary(g, TM_OP_DIV, a, b); }

static tm_node *unary(tm_graph *g, tm_op op, tm_node *x)
{
    if (!inputs_ok(g, tm_op_name(op), 1, &x) || !need_f32(g, tm_op_name(op), x)) return NULL;
    tm_node *n = new_node(g, op, TM_F32, x->ndim, x->shape);
    if (n) add_src(n, x);
    return n;
}

tm_node *tm_scale(tm_graph *g, tm_node *x, float a, float b)
{
    tm_node *n = unary(g, TM_OP_SCALE, x);
    if (n) {
        n->fp[0] = a;
        n->fp[1] = b;
    }
    return n;
}

tm_node *tm_exp(tm_graph *g, tm_node *x) { return unary(g, TM_OP_EXP, x); }
tm_node *tm_log(tm_graph *g, tm_node *x) { return unary(g, TM_OP_LOG, x); }
tm_node *tm_sqrt(tm_graph *g, tm_node *x) { return unary(g, TM_OP_SQRT, x); }
tm_node *tm_tanh(tm_graph *g, tm_node *x) { return unary(g, TM_OP_TANH, x); }
tm_node *tm_sigmoid(tm_graph *g, tm_node *x) { return unary(g, TM_OP_SIGMOID, x); }
tm_node *tm_relu(tm_graph *g, tm_node *x) { return unary(g, TM_OP_RELU, x); }
tm_node *tm_gelu(tm_graph *g, tm_node *x) { return unary(g, TM_OP_GELU, x); }
tm_node *tm_gelu_tanh(tm_graph *g, tm_node *x) { return unary(g, TM_OP_GELU_TANH, x); }
tm_node *tm_silu(tm_graph *g, tm_node *x) { return unary(g, TM_OP_SILU, x); }

/* -------------------------------------------------------- reductions */

static tm_node *reduce(tm_graph *g, tm_op op, tm_node *x, int naxes, const int *axes, int keepdim)
{
    const char *name = tm_op_name(op);
    if (!inputs_ok(g, name, 1, &x) || !need_f32(g, name, x)) return NULL;
    int mask = 0;
    if (naxes == 0) mask = (1 << x->ndim) - 1;
    for (int i = 0; i < naxes; i++) {
        int a = norm_axis(g, name, axes[i], x->ndim);
        if (a < 0) return NULL;
        if (mask & (1 << a)) return build_fail(g, TM_ERR_INVALID, "%s: axis %d listed twice", name, axes[i]);
        mask |= 1 << a;
    }
    int64_t shape[TM_MAX_DIMS], count = 1;
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (mask & (1 << i)) {
            count *= x->shape[i];
            if (keepdim) shape[nd++] = 1;
        } else {
            shape[nd++] = x->shape[i];
        }
    }
    tm_node *n = new_node(g, op, TM_F32, nd, shape);
    if (!n) return NULL;
    add_src(n, x);
    n->ip[0] = mask;
    n->ip[1] = keepdim != 0;
    n->fp[0] = op == TM_OP_MEAN ? (count ? 1.0f / (float)count : NAN) : 1.0f;
    n->fwd_work = 2 * (size_t)n->numel; /* doubles */
    return n;
}

tm_node *tm_sum(tm_graph *g, tm_node *x, int naxes, const int *axes, int keepdim)
{
    return reduce(g, TM_OP_SUM, x, naxes, axes, keepdim);
}

tm_node *tm_mean(tm_graph *g, tm_node *x, int naxes, const int *axes, int keepdim)
{
    return reduce(g, TM_OP_MEAN, x, naxes, axes, keepdim);
}

/* ---------------------------------------------------------- row ops */

static tm_node *row_op(tm_graph *g, tm_op op, tm_node *x)
{
    tm_node *n = unary(g, op, x);
    if (n && x->ndim < 1) {
        return build_fail(g, TM_ERR_INVALID, "%s: needs at least 1 dimension", tm_op_name(op));
    }
    return n;
}

tm_node *tm_softmax(tm_graph *g, tm_node *x) { return row_op(g, TM_OP_SOFTMAX, x); }
tm_node *tm_log_softmax(tm_graph *g, tm_node *x) { return row_op(g, TM_OP_LOG_SOFTMAX, x); }

static int check_vec(tm_graph *g, const char *op, const char *what, tm_node *v, int64_t C)
{
    if (!v) return 1;
    if (v->dtype != TM_F32 || v->ndim != 1 || v->shape[0] != C) {
        build_fail(g, TM_ERR_INVALID, "%s: %s must be f32 (%lld), got %s", op, what, (long long)C,
                   SHAPE(v));
        return 0;
    }
    return 1;
}

static int64_t rows_of(const tm_node *x) { return x->ndim ? x->numel / x->shape[x->ndim - 1] : 1; }

tm_node *tm_layernorm(tm_graph *g, tm_node *x, tm_node *w, tm_node *b, float eps)
{
    tm_node *n = row_op(g, TM_OP_LAYERNORM, x);
    if (!n) return NULL;
    int64_t C = x->shape[x->ndim - 1];
    if (!check_vec(g, "layernorm", "weight", w, C) || !check_vec(g, "layernorm", "bias", b, C))
        return NULL;
    if (!(eps > 0)) return build_fail(g, TM_ERR_INVALID, "layernorm: eps must be > 0");
    add_src(n, w);
    add_src(n, b);
    n->fp[0] = eps;
    n->aux_bytes = 2 * (size_t)rows_of(x) * sizeof(float);
    return n;
}

tm_node *tm_rmsnorm(tm_graph *g, tm_node *x, tm_node *w, float eps)
{
    tm_node *n = row_op(g, TM_OP_RMSNORM, x);
    if (!n) return NULL;
    if (!check_vec(g, "rmsnorm", "weight", w, x->shape[x->ndim - 1])) return NULL;
    if (!(eps > 0)) return build_fail(g, TM_ERR_INVALID, "rmsnorm: eps must be > 0");
    add_src(n, w);
    n->fp[0] = eps;
    n->aux_bytes = (size_t)rows_of(x) * sizeof(float);
    return n;
}

tm_node *tm_l2_normalize(tm_graph *g, tm_node *x, float eps)
{
    tm_node *n = row_op(g, TM_OP_L2_NORMALIZE, x);
    if (!n) return NULL;
    if (!(eps > 0)) return build_fail(g, TM_ERR_INVALID, "l2_normalize: eps must be > 0");
    n->fp[0] = eps;
    n->aux_bytes = (size_t)rows_of(x) * sizeof(float);
    return n;
}

tm_node *tm_cosine_similarity(tm_graph *g, tm_node *a, tm_node *b, float eps)
{
    tm_node *in[2] = {a, b};
    if (!inputs_ok(g, "cosine_similarity", 2, in)) return NULL;
    if (a->ndim < 1 || b->ndim < 1 || a->shape[a->ndim - 1] != b->shape[b->ndim - 1])
        return build_fail(g, TM_ERR_INVALID, "cosine_similarity: last axes differ: %s and %s",
                          SHAPE(a), SHAPE(b));
    int last = -1;
    return tm_sum(g, tm_mul(g, tm_l2_normalize(g, a, eps), tm_l2_normalize(g, b, eps)), 1, &last, 0);
}

tm_node *tm_dropout(tm_graph *g, tm_node *x, float p, uint64_t seed)
{
    tm_node *n = unary(g, TM_OP_DROPOUT, x);
    if (!n) return NULL;
    if (!(p >= 0.0f && p < 1.0f))
        return build_fail(g, TM_ERR_INVALID, "dropout: p must be in [0, 1), got %g", (double)p);
    n->fp[0] = p;
    n->seed = seed;
    return n;
}

tm_node *tm_drop_path(tm_graph *g, tm_node *x, float p, uint64_t seed)
{
    if (!inputs_ok(g, "drop_path", 1, &x) || !need_f32(g, "drop_path", x)) return NULL;
    if (!(p >= 0.0f && p < 1.0f))
        return build_fail(g, TM_ERR_INVALID, "drop_path: p must be in [0, 1), got %g", (double)p);
    if (x->ndim < 1)
        return build_fail(g, TM_ERR_INVALID,
                          "drop_path: needs an input with an example axis (N, ...), got a scalar");
    if (p == 0.0f) return x; /* the identity: no node, no copy */
    tm_node *n = unary(g, TM_OP_DROP_PATH, x);
    if (!n) return NULL;
    n->fp[0] = p;
    n->seed = seed;
    return n;
}

tm_node *tm_groupnorm(tm_graph *g, tm_node *x, int groups, tm_node *w, tm_node *b, float eps)
{
    if (!inputs_ok(g, "groupnorm", 1, &x) || !need_f32(g, "groupnorm", x)) return NULL;
    if (x->ndim < 2)
        return build_fail(g, TM_ERR_INVALID,
                          "groupnorm: input must be (N, C, ...) such as (N, C, H, W) or (N, C, L), "
                          "got %s", SHAPE(x));
    int64_t C = x->shape[1];
    if (groups < 1 || C % groups != 0)
        return build_fail(g, TM_ERR_INVALID,
                          "groupnorm: %d groups do not divide the %lld channels of %s; choose a "
                          "divisor of the channel count", groups, (long long)C, SHAPE(x));
    if (!check_vec(g, "groupnorm", "weight", w, C) || !check_vec(g, "groupnorm", "bias", b, C))
        return NULL;
    if (!(eps > 0)) return build_fail(g, TM_ERR_INVALID, "groupnorm: eps must be > 0");
    tm_node *n = unary(g, TM_OP_GROUPNORM, x);
    if (!n) return NULL;
    add_src(n, w);
    add_src(n, b);
    n->ip[0] = groups;
    n->fp[0] = eps;
    n->aux_bytes = 2 * (size_t)x->shape[0] * (size_t)groups * sizeof(float); /* mean, rstd */
    return n;
}

tm_node *tm_rope(tm_graph *g, tm_node *x, int64_t pos_offset, float base)
{
    if (!inputs_ok(g, "rope", 1, &x) || !need_f32(g, "rope", x)) return NULL;
    if (x->ndim != 4 || x->shape[3] % 2 != 0 || x->shape[3] < 2)
        return build_fail(g, TM_ERR_INVALID,
                          "rope: input must be (B, H, T, D) with an even head size D, got %s",
                          SHAPE(x));
    if (!(base > 0.0f) || isinf(base))
        return build_fail(g, TM_ERR_INVALID, "rope: base must be a positive number (usually "
                                             "10000), got %g", (double)base);
    if (pos_offset < 0 || pos_offset > ((int64_t)1 << 40))
        return build_fail(g, TM_ERR_INVALID, "rope: position offset %lld is outside [0, 2^40]",
                          (long long)pos_offset);
    tm_node *n = unary(g, TM_OP_ROPE, x);
    if (!n) return NULL;
    n->lparam = pos_offset;
    n->fp[0] = base;
    n->aux_bytes = (size_t)(x->shape[2] * x->shape[3]) * sizeof(float); /* cos and sin (T, D/2) */
    return n;
}

/* ------------------------------------------------------------ shapes */

tm_node *tm_embedding(tm_graph *g, tm_node *table, tm_node *ids)
{
    tm_node *in[2] = {table, ids};
    if (!inputs_ok(g, "embedding", 2, in) || !need_f32(g, "embedding", table)) return NULL;
    if (table->ndim != 2)
        return build_fail(g, TM_ERR_INVALID, "embedding: table must be (V, C), got %s", SHAPE(table));
    if (ids->dtype != TM_I32)
        return build_fail(g, TM_ERR_INVALID, "embedding: ids must be i32, got %s",
                          tm_dtype_name(ids->dtype));
    if (ids->ndim >= TM_MAX_DIMS)
        return build_fail(g, TM_ERR_INVALID, "embedding: ids have too many dimensions");
    int64_t shape[TM_MAX_DIMS];
    memcpy(shape, ids->shape, (size_t)ids->ndim * sizeof *shape);
    shape[ids->ndim] = table->shape[1];
    tm_node *n = new_node(g, TM_OP_EMBEDDING, TM_F32, ids->ndim + 1, shape);
    if (!n) return NULL;
    add_src(n, table);
    add_src(n, ids);
    return n;
}

tm_node *tm_concat(tm_graph *g, int count, tm_node *const *xs, int axis)
{
    if (!g) return NULL;
    if (count < 1 || count > TM_MAX_SRC)
        return build_fail(g, TM_ERR_INVALID, "concat: %d inputs; 1 to %d are supported", count,
                          TM_MAX_SRC);
    if (!inputs_ok(g, "concat", count, xs)) return NULL;
    int a = norm_axis(g, "concat", axis, xs[0]->ndim);
    if (a < 0) return NULL;
    int64_t shape[TM_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    shape[a] = 0;
    for (int i = 0; i < count; i++) {
        if (!need_f32(g, "concat", xs[i])) return NULL;
        int same = xs[i]->ndim == xs[0]->ndim;
        for (int d = 0; same && d < xs[0]->ndim; d++)
            if (d != a && xs[i]->shape[d] != xs[0]->shape[d]) same = 0;
        if (!same)
            return build_fail(g, TM_ERR_INVALID,
                              "concat: input %d has shape %s, which differs from %s off axis %d",
                              i, SHAPE(xs[i]), SHAPE(xs[0]), axis);
        shape[a] += xs[i]->shape[a];
    }
    tm_node *n = new_node(g, TM_OP_CONCAT, TM_F32, xs[0]->ndim, shape);
    if (!n) return NULL;
    for (int i = 0; i < count; i++) add_src(n, xs[i]);
    n->ip[0] = a;
    return n;
}

tm_node *tm_slice(tm_graph *g, tm_node *x, int axis, int64_t start, int64_t stop, int64_t step)
{
    if (!inputs_ok(g, "slice", 1, &x) || !need_f32(g, "slice", x)) return NULL;
    int a = norm_axis(g, "slice", axis, x->ndim);
    if (a < 0) return NULL;
    int64_t len = x->shape[a];
    if (step < 1 || start < 0 || stop < start || stop > len || len > INT_MAX)
        return build_fail(g, TM_ERR_INVALID,
                          "slice: [%lld:%lld:%lld] is not within axis %d of size %lld",
                          (long long)start, (long long)stop, (long long)step, axis, (long long)len);
    int64_t shape[TM_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[a] = (stop - start + step - 1) / step;
    tm_node *n = new_node(g, TM_OP_SLICE, TM_F32, x->ndim, shape);
    if (!n) return NULL;
    add_src(n, x);
    n->ip[0] = a;
    n->ip[1] = (int)start;
    n->ip[2] = (int)step;
    return n;
}

tm_node *tm_allgather_rows(tm_graph *g, tm_node *x, int world, int rank, tm_allgather_fn gather,
                           void *ctx)
{
    if (!inputs_ok(g, "allgather_rows", 1, &x) || !need_f32(g, "allgather_rows", x)) return NULL;
    if (world < 1 || rank < 0 || rank >= world || (world > 1 && !gather) || x->ndim < 1)
        return build_fail(g, TM_ERR_INVALID,
                          "allgather_rows: rank %d of %d%s on a tensor of %d axes", rank, world,
                          world > 1 && !gather ? " without a gather function" : "", x->ndim);
    int64_t shape[TM_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    if (x->shape[0] > MAX_NUMEL / world || x->numel > MAX_NUMEL / world)
        return build_fail(g, TM_ERR_INVALID, "allgather_rows: %d x %s is too large", world,
                          SHAPE(x));
    shape[0] *= world;
    tm_node *n = new_node(g, TM_OP_ALLGATHER, TM_F32, x->ndim, shape);
    if (!n) return NULL;
    add_src(n, x);
    n->ip[0] = world;
    n->ip[1] = rank;
    n->gather = gather;
    n->gather_ctx = ctx;
    return n;
}

tm_status tm_split(tm_graph *g, tm_node *x, int axis, int count, const int64_t *sizes,
                   tm_node **outs)
{
    if (!inputs_ok(g, "split", 1, &x)) return g ? g->status ? g->status : TM_ERR_INVALID : TM_ERR_INVALID;
    int a = norm_axis(g, "split", axis, x->ndim);
    if (a < 0) return g->status;
    int64_t total = 0;
    for (int i = 0; i < count; i++) total += sizes[i] < 0 ? 0 : sizes[i];
    if (count < 1 || total != x->shape[a]) {
        build_fail(g, TM_ERR_INVALID, "split: sizes add up to %lld, but axis %d has %lld",
                   (long long)total, axis, (long long)x->shape[a]);
        return g->status;
    }
    int64_t at = 0;
    for (int i = 0; i < count; i++) {
        outs[i] = tm_slice(g, x, a, at, at + sizes[i], 1);
        at += sizes[i];
    }
    return g->status;
}

tm_node *tm_reshape(tm_graph *g, tm_node *x, int ndim, const int64_t *shape)
{
    if (!inputs_ok(g, "reshape", 1, &x)) return NULL;
    if (ndim < 0 || ndim > TM_MAX_DIMS)
        return build_fail(g, TM_ERR_INVALID, "reshape: %d dimensions (at most %d)", ndim, TM_MAX_DIMS);
    int64_t s[TM_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1) {
            if (infer >= 0) return build_fail(g, TM_ERR_INVALID, "reshape: more than one -1");
            infer = i;
        } else if (s[i] < 0) {
            return build_fail(g, TM_ERR_INVALID, "reshape: negative size %lld", (long long)s[i]);
        } else {
            known *= s[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || x->numel % known)
            return build_fail(g, TM_ERR_INVALID, "reshape: cannot infer -1 for %s from %lld elements",
                              SHAPE(x), (long long)x->numel);
        s[infer] = x->numel / known;
        known *= s[infer];
    }
    if (known != x->numel) {
        char buf[96];
        shape_str(buf, sizeof buf, ndim, s);
        return build_fail(g, TM_ERR_INVALID, "reshape: %s has %lld elements; %s has %lld", SHAPE(x),
                          (long long)x->numel, buf, (long long)known);
    }
    tm_node *n = new_node(g, TM_OP_RESHAPE, x->dtype, ndim, s);
    if (!n) return NULL;
    add_src(n, x);
    n->storage = x->storage;
    return n;
}

tm_node *tm_permute(tm_graph *g, tm_node *x, const int *perm)
{
    if (!inputs_ok(g, "permute", 1, &x) || !need_f32(g, "permute", x)) return NULL;
    int seen = 0;
    int64_t shape[TM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= x->ndim || (seen & (1 << perm[i])))
            return build_fail(g, TM_ERR_INVALID, "permute: not a permutation of 0..%d", x->ndim - 1);
        seen |= 1 << perm[i];
        shape[i] = x->shape[perm[i]];
    }
    tm_node *n = new_node(g, TM_OP_PERMUTE, TM_F32, x->ndim, shape);
    if (!n) return NULL;
    add_src(n, x);
    for (int i = 0; i < x->ndim; i++) n->ip[i] = perm[i];
    return n;
}

tm_node *tm_transpose(tm_graph *g, tm_node *x, int a0, int a1)
{
    if (!inputs_ok(g, "transpose", 1, &x)) return NULL;
    int a = norm_axis(g, "transpose", a0, x->ndim), b = norm_axis(g, "transpose", a1, x->ndim);
    if (a < 0 || b < 0) return NULL;
    int perm[TM_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) perm[i] = i;
    perm[a] = b;
    perm[b] = a;
    return tm_permute(g, x, perm);
}

/* -------------------------------------------------- conv and pooling */

/* ip: 0 N, 1 Cin, 2 H, 3 W, 4 Cout, 5 KH, 6 KW; and 7 packs nothing: the
 * strides and paddings go to fp as exact small integers. */
static tm_node *conv(tm_graph *g, tm_op op, tm_node *x, tm_node *w, tm_node *b, int sh, int sw,
                     int ph, int pw)
{
    const char *name = tm_op_name(op);
    tm_node *in[2] = {x, w};
    if (!inputs_ok(g, name, 2, in) || !need_f32(g, name, x) || !need_f32(g, name, w)) return NULL;
    int two = op == TM_OP_CONV2D;
    int nd = two ? 4 : 3;
    if (x->ndim != nd || w->ndim != nd)
        return build_fail(g, TM_ERR_INVALID, "%s: input must be %s and weight %s; got %s and %s",
                          name, two ? "(N, Cin, H, W)" : "(N, Cin, L)",
                          two ? "(Cout, Cin, KH, KW)" : "(Cout, Cin, K)", SHAPE(x), SHAPE(w));
    if (w->shape[1] != x->shape[1])
        return build_fail(g, TM_ERR_INVALID, "%s: input has %lld channels, weight expects %lld",
                          name, (long long)x->shape[1], (long long)w->shape[1]);
    if (sh < 1 || sw < 1 || ph < 0 || pw < 0)
        return build_fail(g, TM_ERR_INVALID, "%s: strides must be >= 1 and padding >= 0", name);
    int64_t N = x->shape[0], Cin = x->shape[1], H = two ? x->shape[2] : 1, W = x->shape[nd - 1];
    int64_t Cout = w->shape[0], KH = two ? w->shape[2] : 1, KW = w->shape[nd - 1];
    int64_t Ho = tm_conv_out_size(H, KH, sh, ph), Wo = tm_conv_out_size(W, KW, sw, pw);
    if (Ho < 1 || Wo < 1)
        return build_fail(g, TM_ERR_INVALID, "%s: kernel %s does not fit input %s", name, SHAPE(w),
                          SHAPE(x));
    if (!check_vec(g, name, "bias", b, Cout)) return NULL;
    int64_t shape[4] = {N, Cout, two ? Ho : Wo, Wo};
    tm_node *n = new_node(g, op, TM_F32, nd, shape);
    if (!n) return NULL;
    add_src(n, x);
    add_src(n, w);
    add_src(n, b);
    int64_t dims[7] = {N, Cin, H, W, Cout, KH, KW};
    for (int i = 0; i < 7; i++) {
        if (dims[i] > INT_MAX) return build_fail(g, TM_ERR_LIMIT, "%s: a size exceeds 2^31", name);
        n->ip[i] = (int)dims[i];
    }
    n->fp[0] = (float)sh, n->fp[1] = (float)sw, n->fp[2] = (float)ph, n->fp[3] = (float)pw;
    n->fwd_work = n->bwd_work = tm_conv2d_work_floats(N, Cin, H, W, Cout, KH, KW, sh, sw, ph, pw);
    return n;
}

tm_node *tm_conv1d(tm_graph *g, tm_node *x, tm_node *w, tm_node *b, int stride, int pad)
{
    return conv(g, TM_OP_CONV1D, x, w, b, 1, stride, 0, pad);
}

tm_node *tm_conv2d(tm_graph *g, tm_node *x, tm_node *w, tm_node *b, int sh, int sw, int ph, int pw)
{
    return conv(g, TM_OP_CONV2D, x, w, b, sh, sw, ph, pw);
}

static tm_node *pool(tm_graph *g, tm_op op, tm_node *x, int kh, int kw, int sh, int sw, int ph,
                     int pw)
{
    const char *name = tm_op_name(op);
    if (!inputs_ok(g, name, 1, &x) || !need_f32(g, name, x)) return NULL;
    if (x->ndim != 3 && x->ndim != 4)
        return build_fail(g, TM_ERR_INVALID, "%s: input must be (N, C, H, W) or (N, C, L), got %s",
                          name, SHAPE(x));
    int two = x->ndim == 4;
    if (!two && (kh != 1 || sh != 1 || ph != 0))
        return build_fail(g, TM_ERR_INVALID, "%s: 1-D pooling needs kh = 1, sh = 1, ph = 0", name);
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw)
        return build_fail(g, TM_ERR_INVALID,
                          "%s: kernel and stride must be >= 1, padding at most half the kernel", name);
    int64_t H = two ? x->shape[2] : 1, W = x->shape[x->ndim - 1];
    int64_t Ho = tm_conv_out_size(H, kh, sh, ph), Wo = tm_conv_out_size(W, kw, sw, pw);
    if (Ho < 1 || Wo < 1)
        return build_fail(g, TM_ERR_INVALID, "%s: window %dx%d does not fit input %s", name, kh, kw,
                          SHAPE(x));
    int64_t shape[4] = {x->shape[0], x->shape[1], two ? Ho : Wo, Wo};
    tm_node *n = new_node(g, op, TM_F32, x->ndim, shape);
    if (!n) return NULL;
    add_src(n, x);
    n->ip[0] = kh, n->ip[1] = kw, n->ip[2] = sh, n->ip[3] = sw, n->ip[4] = ph, n->ip[5] = pw;
    if (H > INT_MAX || W > INT_MAX) return build_fail(g, TM_ERR_LIMIT, "%s: input too large", name);
    n->ip[6] = (int)H;
    n->ip[7] = (int)W;
    if (op == TM_OP_MAXPOOL2D) n->aux_bytes = (size_t)n->numel * sizeof(int32_t);
    return n;
}

tm_node *tm_maxpool2d(tm_graph *g, tm_node *x, int kh, int kw, int sh, int sw, int ph, int pw)
{
    return pool(g, TM_OP_MAXPOOL2D, x, kh, kw, sh, sw, ph, pw);
}

tm_node *tm_avgpool2d(tm_graph *g, tm_node *x, int kh, int kw, int sh, int sw, int ph, int pw)
{
    return pool(g, TM_OP_AVGPOOL2D, x, kh, kw, sh, sw, ph, pw);
}

/* --------------------------------------------------------- attention */

tm_node *tm_attention(tm_graph *g, tm_node *q, tm_node *k, tm_node *v, tm_node *key_bias,
                      float scale, int causal)
{
    tm_node *in[3] = {q, k, v};
    if (!inputs_ok(g, "attention", 3, in)) return NULL;
    for (int i = 0; i < 3; i++)
        if (!need_f32(g, "attention", in[i])) return NULL;
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
        return build_fail(g, TM_ERR_INVALID, "attention: q, k, v must be (B, H, T, D); got %s, %s, %s",
                          SHAPE(q), SHAPE(k), SHAPE(v));
    int64_t B = q->shape[0], H = q->shape[1], Tq = q->shape[2], D = q->shape[3], Tk = k->shape[2];
    if (k->shape[0] != B || k->shape[1] != H || k->shape[3] != D ||
        memcmp(k->shape, v->shape, sizeof k->shape))
        return build_fail(g, TM_ERR_INVALID,
                          "attention: k %s and v %s must be (%lld, %lld, Tk, %lld) for q %s",
                          SHAPE(k), SHAPE(v), (long long)B, (long long)H, (long long)D, SHAPE(q));
    if (key_bias && (key_bias->dtype != TM_F32 || key_bias->ndim != 2 || key_bias->shape[0] != B ||
                     key_bias->shape[1] != Tk))
        return build_fail(g, TM_ERR_INVALID, "attention: key_bias must be f32 (%lld, %lld), got %s",
                          (long long)B, (long long)Tk, SHAPE(key_bias));
    if (D < 1 || Tk < 1)
        return build_fail(g, TM_ERR_INVALID, "attention: empty keys or head dimension");
    tm_node *n = new_node(g, TM_OP_ATTENTION, TM_F32, 4, q->shape);
    if (!n) return NULL;
    add_src(n, q);
    add_src(n, k);
    add_src(n, v);
    add_src(n, key_bias);
    n->ip[0] = causal != 0;
    n->fp[0] = scale > 0 ? scale : 1.0f / sqrtf((float)D);
    n->aux_bytes = (size_t)(B * H * Tq) * sizeof(float);
    n->bwd_work = tm_attention_work_floats(B, H, Tq, Tk, D);
    return n;
}

tm_node *tm_attention_probs(tm_graph *g, tm_node *q, tm_node *k, tm_node *key_bias,
                            float scale, int causal)
{
    tm_node *in[2] = {q, k};
    if (!inputs_ok(g, "attention_probs", 2, in) || !need_f32(g, "attention_probs", q) ||
        !need_f32(g, "attention_probs", k))
        return NULL;
    if (q->ndim != 4 || k->ndim != 4)
        return build_fail(g, TM_ERR_INVALID,
                          "attention_probs: q and k must be (B, H, T, D); got %s and %s", SHAPE(q),
                          SHAPE(k));
    int64_t B = q->shape[0], H = q->shape[1], Tq = q->shape[2], D = q->shape[3], Tk = k->shape[2];
    if (k->shape[0] != B || k->shape[1] != H || k->shape[3] != D)
        return build_fail(g, TM_ERR_INVALID,
                          "attention_probs: k %s must be (%lld, %lld, Tk, %lld) for q %s", SHAPE(k),
                          (long long)B, (long long)H, (long long)D, SHAPE(q));
    if (key_bias && (key_bias->dtype != TM_F32 || key_bias->ndim != 2 || key_bias->shape[0] != B ||
                     key_bias->shape[1] != Tk))
        return build_fail(g, TM_ERR_INVALID,
                          "attention_probs: key_bias must be f32 (%lld, %lld), got %s",
                          (long long)B, (long long)Tk, SHAPE(key_bias));
    if (D < 1 || Tk < 1)
        return build_fail(g, TM_ERR_INVALID, "attention_probs: empty keys or head dimension");
    tm_node *n = new_node(g, TM_OP_ATTENTION_PROBS, TM_F32, 4, (int64_t[]){B, H, Tq, Tk});
    if (!n) return NULL;
    add_src(n, q);
    add_src(n, k);
    add_src(n, key_bias);
    n->ip[0] = causal != 0;
    n->fp[0] = scale > 0 ? scale : 1.0f / sqrtf((float)D);
    return n;
}

/* -------------------------------------------------------------- loss */

tm_node *tm_cross_entropy(tm_graph *g, tm_node *logits, tm_node *labels, float smoothing,
                          int ignore_index)
{
    tm_node *in[2] = {logits, labels};
    if (!inputs_ok(g, "cross_entropy", 2, in) || !need_f32(g, "cross_entropy", logits)) return NULL;
    if (logits->ndim != 2)
        return build_fail(g, TM_ERR_INVALID, "cross_entropy: logits must be (N, C), got %s",
                          SHAPE(logits));
    if (labels->dtype != TM_I32 || labels->ndim != 1 || labels->shape[0] != logits->shape[0])
        return build_fail(g, TM_ERR_INVALID, "cross_entropy: labels must be i32 (%lld), got %s %s",
                          (long long)logits->shape[0], tm_dtype_name(labels->dtype), SHAPE(labels));
    if (!(smoothing >= 0.0f && smoothing <= 1.0f))
        return build_fail(g, TM_ERR_INVALID, "cross_entropy: label smoothing must be in [0, 1]");
    tm_node *n = new_node(g, TM_OP_CROSS_ENTROPY, TM_F32, 0, NULL);
    if (!n) return NULL;
    add_src(n, logits);
    add_src(n, labels);
    n->fp[0] = smoothing;
    n->ip[0] = ignore_index;
    return n;
}

/* ------------------------------------------------------------ access */

tm_status tm_graph_keep(tm_graph *g, tm_node *node)
{
    if (!g || !node) return tm_fail(TM_ERR_INVALID, "graph_keep: NULL node");
    if (g->compiled) return tm_fail(TM_ERR_INVALID, "graph_keep: call it before tm_graph_compile");
    node->keep = 1;
    return TM_OK;
}

tm_status tm_graph_add_output(tm_graph *g, tm_node *node)
{
    if (!g || !node) return tm_fail(TM_ERR_INVALID, "graph_add_output: NULL graph or node");
    if (g->compiled)
        return tm_fail(TM_ERR_INVALID, "graph_add_output: call it before tm_graph_compile");
    node->output = 1;
    node->keep = 1;
    return TM_OK;
}

tm_node *tm_graph_checkpoint_begin(tm_graph *g, tm_node *x)
{
    if (!inputs_ok(g, "checkpoint_begin", 1, &x)) return NULL;
    if (g->seg_open)
        return build_fail(g, TM_ERR_INVALID,
                          "checkpoint_begin: segment %d is still open (segments cannot nest; "
                          "close it with tm_graph_checkpoint_end first)", g->n_segs - 1);
    if (g->n_segs == g->cap_segs) {
        int cap = g->cap_segs ? 2 * g->cap_segs : 16;
        tm_segment *s = tm_alloc((size_t)cap * sizeof *s);
        if (!s) return build_fail(g, TM_ERR_NOMEM, "graph: out of memory");
        if (g->n_segs) memcpy(s, g->segs, (size_t)g->n_segs * sizeof *s);
        tm_free(g->segs);
        g->segs = s;
        g->cap_segs = cap;
    }
    g->segs[g->n_segs++] = (tm_segment){g->n, -1, -1, 0};
    g->seg_open = 1;
    return x;
}

tm_node *tm_graph_checkpoint_end(tm_graph *g, tm_node *y)
{
    if (!inputs_ok(g, "checkpoint_end", 1, &y)) return NULL;
    if (!g->seg_open)
        return build_fail(g, TM_ERR_INVALID,
                          "checkpoint_end: no segment is open (call tm_graph_checkpoint_begin "
                          "before the segment's ops)");
    tm_segment *s = &g->segs[g->n_segs - 1];
    g->seg_open = 0;
    if (g->n > s->first && y->id < s->first)
        return build_fail(g, TM_ERR_INVALID,
                          "checkpoint_end: the output was built before the segment began (node "
                          "%d, the segment starts at node %d); pass the segment's last result",
                          y->id, s->first);
    s->last = g->n - 1;
    return y;
}

uint64_t tm_graph_rng_counter(const tm_graph *g) { return g ? g->rng_counter : 0; }

void tm_graph_set_shard(tm_graph *g, int rank)
{
    if (g && rank >= 0) g->shard = rank;
}

void tm_graph_set_rng_counter(tm_graph *g, uint64_t counter)
{
    if (g) g->rng_counter = counter;
}

void *tm_node_data(tm_graph *g, tm_node *n)
{
    (void)g;
    return n ? n->value : NULL;
}

float *tm_node_grad(tm_graph *g, tm_node *n)
{
    (void)g;
    if (!n || !n->requires_grad) return NULL;
    if (n->op != TM_OP_PARAM && n->op != TM_OP_INPUT) return NULL;
    return n->grad;
}

tm_status tm_node_tensor(tm_graph *g, tm_node *n, tm_tensor *out)
{
    if (!n || !n->value)
        return tm_fail(TM_ERR_INVALID, "node_tensor: the node has no memory (compile first, and "
                                       "keep it with tm_graph_keep)");
    (void)g;
    memset(out, 0, sizeof *out);
    out->dtype = n->dtype;
    out->ndim = n->ndim;
    int64_t s = 1;
    for (int i = n->ndim - 1; i >= 0; i--) {
        out->shape[i] = n->shape[i];
        out->stride[i] = s;
        s *= n->shape[i];
    }
    out->data = n->value;
    return TM_OK;
}

int tm_node_ndim(const tm_node *n) { return n ? n->ndim : -1; }
const int64_t *tm_node_shape(const tm_node *n) { return n ? n->shape : NULL; }
int64_t tm_node_numel(const tm_node *n) { return n ? n->numel : 0; }
tm_op tm_node_op(const tm_node *n) { return n ? n->op : TM_OP_COUNT; }
const char *tm_node_name(const tm_node *n) { return n && n->name ? n->name : ""; }

float *tm_graph_params(tm_graph *g, size_t *count)
{
    if (count) *count = g ? g->n_params : 0;
    return g ? g->params : NULL;
}

float *tm_graph_grads(tm_graph *g, size_t *count)
{
    if (count) *count = g ? g->n_params : 0;
    return g ? g->grads : NULL;
}

int tm_graph_param_count(const tm_graph *g)
{
    int c = 0;
    for (int i = 0; g && i < g->n; i++) c += g->nodes[i]->op == TM_OP_PARAM;
    return c;
}

tm_node *tm_graph_param_at(tm_graph *g, int idx)
{
    for (int i = 0; g && i < g->n; i++)
        if (g->nodes[i]->op == TM_OP_PARAM && idx-- == 0) return g->nodes[i];
    return NULL;
}

tm_node *tm_graph_find_param(tm_graph *g, const char *name)
{
    for (int i = 0; g && name && i < g->n; i++)
        if (g->nodes[i]->op == TM_OP_PARAM && !strcmp(g->nodes[i]->name, name)) return g->nodes[i];
    return NULL;
}

size_t tm_graph_arena_bytes(const tm_graph *g) { return g ? g->arena_bytes : 0; }
size_t tm_graph_arena_bytes_unplanned(const tm_graph *g) { return g ? g->unplanned_bytes : 0; }
