/*
 * Every graph op, forward and backward, against PyTorch.
 *
 * scripts/gen_op_vectors.py (and, for rope, groupnorm and attention_probs,
 * scripts/gen_graphops_vectors.py) writes tests/data/ops/<case>.safetensors: the
 * inputs in0, in1, ..., a fixed random G of the output's shape, the output
 * computed by PyTorch in float64, and grad_in<i> = d sum(out * G) / d in<i>
 * for each float input whose gradient is wanted. __metadata__ names the op
 * and its parameters. For each case this program builds the op in a graph,
 * loss = sum(out * G), runs forward and backward, and compares the output
 * and every gradient with the file, at the tolerances of TOLS below.
 *
 * The whole set runs at 1 thread, then at 2: the second run's outputs and
 * gradients must be bitwise identical to the first's (core.h promises
 * results independent of the thread count).
 */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/graph.h"
#include "trimodal/io.h"

/* |got - want| <= atol + rtol * |want|, for the output and every gradient.
 * The references are float64 results rounded to f32, so the error is the
 * engine's f32 rounding: a few ulps for elementwise ops, more where long
 * sums (matmul, conv, attention, reductions) or exp/log chains meet. */
typedef struct {
    const char *op;
    double atol, rtol;
} op_tol;

static const op_tol TOLS[] = {
    {"matmul", 2e-5, 2e-4},
    {"linear", 2e-5, 2e-4},
    {"add", 1e-6, 1e-6},
    {"sub", 1e-6, 1e-6},
    {"mul", 1e-6, 1e-5},
    {"div", 1e-5, 1e-5},
    {"scale", 1e-6, 1e-6},
    {"sum", 2e-5, 1e-4},
    {"mean", 1e-6, 1e-4},
    {"exp", 1e-6, 1e-5},
    {"log", 1e-6, 1e-5},
    {"sqrt", 1e-6, 1e-5},
    {"tanh", 1e-6, 1e-5},
    {"sigmoid", 1e-6, 1e-5},
    {"relu", 1e-6, 1e-6},
    {"gelu", 1e-5, 1e-4},
    {"gelu_tanh", 1e-5, 1e-4},
    {"silu", 1e-6, 1e-5},
    {"softmax", 1e-5, 1e-4},
    {"log_softmax", 1e-5, 1e-4},
    {"layernorm", 1e-5, 1e-4},
    {"rmsnorm", 1e-5, 1e-4},
    {"embedding", 1e-6, 1e-6},
    {"concat", 0, 0},
    {"slice", 0, 0},
    {"split", 0, 0},
    {"reshape", 0, 0},
    {"permute", 0, 0},
    {"transpose", 0, 0},
    {"conv1d", 5e-5, 5e-4},
    {"conv2d", 5e-5, 5e-4},
    {"maxpool2d", 1e-6, 1e-6}, /* overlapping windows sum into dx */
    {"avgpool2d", 1e-6, 1e-5},
    {"attention", 5e-5, 5e-4},
    {"cross_entropy", 1e-5, 1e-4},
    {"l2_normalize", 1e-5, 1e-4},
    {"cosine_similarity", 1e-5, 1e-4},
    {"rope", 1e-6, 1e-5},
    {"groupnorm", 1e-5, 1e-4},
    {"attention_probs", 1e-6, 1e-5},
};
#define NTOLS ((int)(sizeof TOLS / sizeof TOLS[0]))

/* Every file the generator writes; a missing one fails. */
static const char *const CASES[] = {
    "matmul_nn", "matmul_nt", "matmul_tn", "matmul_tt",
    "matmul_batch_nn", "matmul_batch_nt", "matmul_batch_tn", "matmul_batch_tt",
    "matmul_batch3d", "matmul_shared_b_nn", "matmul_shared_b_nt", "matmul_shared_b_tn",
    "linear", "linear_nobias",
    "add_same", "add_bcast_a", "add_bcast_b", "add_bcast_both", "add_bcast_scalar",
    "sub_same", "sub_bcast_a", "sub_bcast_b", "sub_bcast_both", "sub_bcast_scalar",
    "mul_same", "mul_bcast_a", "mul_bcast_b", "mul_bcast_both", "mul_bcast_scalar",
    "div_same", "div_bcast_a", "div_bcast_b", "div_bcast_both", "div_bcast_scalar",
    "scale",
    "sum_axis1", "sum_axis_neg1_keep", "sum_axes02_keep", "sum_axes13", "sum_all",
    "sum_all_keep",
    "mean_axis1", "mean_axis_neg1_keep", "mean_axes02_keep", "mean_axes13", "mean_all",
    "mean_all_keep",
    "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu", "gelu_tanh", "silu",
    "softmax", "log_softmax",
    "layernorm", "layernorm_noaffine", "layernorm_weight_only", "rmsnorm",
    "embedding",
    "concat_mid", "concat_last",
    "slice_step", "slice_first", "slice_last_step3",
    "split", "split_last",
    "reshape", "reshape_4d",
    "permute", "transpose_02", "transpose_last2",
    "conv1d", "conv1d_nobias", "conv2d", "conv2d_nobias", "conv2d_patch",
    "maxpool2d_k3s2p1", "maxpool2d_k2x3s2x1p0x1", "maxpool2d_1d",
    "avgpool2d_k3s2p1", "avgpool2d_k2x3s2x1p0x1", "avgpool2d_1d",
    "attention", "attention_scale", "attention_mask", "attention_causal",
    "attention_causal_mask", "attention_cross", "attention_cross_causal",
    "attention_bias",
    "cross_entropy", "cross_entropy_smooth",
    "l2_normalize", "cosine_similarity", "cosine_similarity_bcast",
    "rope", "rope_offset", "rope_d2", "rope_long",
    "groupnorm", "groupnorm_1d", "groupnorm_one_group", "groupnorm_per_channel",
    "attention_probs", "attention_probs_scale_causal", "attention_probs_mask",
    "attention_probs_cross_causal", "attention_probs_bias",
};
#define NCASES ((int)(sizeof CASES / sizeof CASES[0]))

#define MAX_IN 8
#define MAX_OUT 4

/* What one run of a case produced: its outputs then the gradients, end to
 * end, for the comparison between thread counts. */
typedef struct {
    float *vals;
    int64_t n;
} result;

static void fail_case(const char *name, const char *what, const char *detail)
{
    test_checks++;
    test_failures++;
    fprintf(stderr, "FAIL %s: %s%s%s\n", name, what, detail ? ": " : "", detail ? detail : "");
}

/* ------------------------------------------------------------ metadata */

static const char *meta_str(const tm_safetensors *st, const char *key)
{
    const char *v = tm_safetensors_metadata(st, key);
    return v ? v : "";
}

static int meta_int(const tm_safetensors *st, const char *key, int dflt)
{
    const char *v = tm_safetensors_metadata(st, key);
    return v && *v ? (int)strtol(v, NULL, 10) : dflt;
}

static float meta_float(const tm_safetensors *st, const char *key, float dflt)
{
    const char *v = tm_safetensors_metadata(st, key);
    return v && *v ? strtof(v, NULL) : dflt;
}

/* A comma-separated list of integers ("" is empty); returns the count. */
static int meta_list(const tm_safetensors *st, const char *key, int64_t *out, int max)
{
    const char *p = meta_str(st, key);
    int n = 0;
    while (*p && n < max) {
        char *end;
        out[n++] = strtoll(p, &end, 10);
        p = *end == ',' ? end + 1 : end;
        if (end == p && *p) break; /* not a number: stop */
    }
    return n;
}

static const op_tol *find_tol(const char *op)
{
    for (int i = 0; i < NTOLS; i++)
        if (strcmp(TOLS[i].op, op) == 0) return &TOLS[i];
    return NULL;
}

/* ------------------------------------------------------------ the ops */

typedef tm_node *(*unary_fn)(tm_graph *, tm_node *);

static unary_fn find_unary(const char *op)
{
    static const struct {
        const char *name;
        unary_fn fn;
    } table[] = {
        {"exp", tm_exp},         {"log", tm_log},         {"sqrt", tm_sqrt},
        {"tanh", tm_tanh},       {"sigmoid", tm_sigmoid}, {"relu", tm_relu},
        {"gelu", tm_gelu},       {"gelu_tanh", tm_gelu_tanh}, {"silu", tm_silu},
        {"softmax", tm_softmax}, {"log_softmax", tm_log_softmax},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, op) == 0) return table[i].fn;
    return NULL;
}

/* Builds the op of the file on inputs in[0..nin). Returns the number of
 * outputs (written to outs), 0 when the op is unknown or a builder failed. */
static int build_op(tm_graph *g, const tm_safetensors *st, const char *op, tm_node **in,
                    int nin, tm_node **outs)
{
    tm_node *x = in[0], *y = nin > 1 ? in[1] : NULL, *z = nin > 2 ? in[2] : NULL;
    unary_fn un = find_unary(op);
    if (un) {
        outs[0] = un(g, x);
    } else if (!strcmp(op, "matmul")) {
        outs[0] = tm_matmul(g, x, y, meta_int(st, "trans_a", 0), meta_int(st, "trans_b", 0));
    } else if (!strcmp(op, "linear")) {
        outs[0] = tm_linear(g, x, y, z);
    } else if (!strcmp(op, "add")) {
        outs[0] = tm_add(g, x, y);
    } else if (!strcmp(op, "sub")) {
        outs[0] = tm_sub(g, x, y);
    } else if (!strcmp(op, "mul")) {
        outs[0] = tm_mul(g, x, y);
    } else if (!strcmp(op, "div")) {
        outs[0] = tm_div(g, x, y);
    } else if (!strcmp(op, "scale")) {
        outs[0] = tm_scale(g, x, meta_float(st, "a", 1), meta_float(st, "b", 0));
    } else if (!strcmp(op, "sum") || !strcmp(op, "mean")) {
        int64_t ax[TM_MAX_DIMS];
        int axes[TM_MAX_DIMS];
        int n = meta_list(st, "axes", ax, TM_MAX_DIMS);
        for (int i = 0; i < n; i++) axes[i] = (int)ax[i];
        int keep = meta_int(st, "keepdim", 0);
        outs[0] = op[1] == 'u' ? tm_sum(g, x, n, axes, keep) : tm_mean(g, x, n, axes, keep);
    } else if (!strcmp(op, "layernorm")) {
        int hw = meta_int(st, "has_weight", 0), hb = meta_int(st, "has_bias", 0);
        tm_node *w = hw ? in[1] : NULL, *b = hb ? in[1 + hw] : NULL;
        outs[0] = tm_layernorm(g, x, w, b, meta_float(st, "eps", 1e-5f));
    } else if (!strcmp(op, "rmsnorm")) {
        outs[0] = tm_rmsnorm(g, x, y, meta_float(st, "eps", 1e-6f));
    } else if (!strcmp(op, "embedding")) {
        outs[0] = tm_embedding(g, x, y);
    } else if (!strcmp(op, "concat")) {
        outs[0] = tm_concat(g, nin, in, meta_int(st, "axis", 0));
    } else if (!strcmp(op, "slice")) {
        outs[0] = tm_slice(g, x, meta_int(st, "axis", 0), meta_int(st, "start", 0),
                           meta_int(st, "stop", 0), meta_int(st, "step", 1));
    } else if (!strcmp(op, "split")) {
        int64_t sizes[MAX_OUT];
        int n = meta_list(st, "sizes", sizes, MAX_OUT);
        if (tm_split(g, x, meta_int(st, "axis", 0), n, sizes, outs) != TM_OK) return 0;
        return n;
    } else if (!strcmp(op, "reshape")) {
        int64_t shape[TM_MAX_DIMS];
        int n = meta_list(st, "shape", shape, TM_MAX_DIMS);
        outs[0] = tm_reshape(g, x, n, shape);
    } else if (!strcmp(op, "permute")) {
        int64_t p[TM_MAX_DIMS];
        int perm[TM_MAX_DIMS];
        int n = meta_list(st, "perm", p, TM_MAX_DIMS);
        for (int i = 0; i < n; i++) perm[i] = (int)p[i];
        outs[0] = tm_permute(g, x, perm);
    } else if (!strcmp(op, "transpose")) {
        outs[0] = tm_transpose(g, x, meta_int(st, "axis0", 0), meta_int(st, "axis1", 1));
    } else if (!strcmp(op, "conv1d")) {
        outs[0] = tm_conv1d(g, x, y, z, meta_int(st, "stride", 1), meta_int(st, "pad", 0));
    } else if (!strcmp(op, "conv2d")) {
        outs[0] = tm_conv2d(g, x, y, z, meta_int(st, "stride_h", 1), meta_int(st, "stride_w", 1),
                            meta_int(st, "pad_h", 0), meta_int(st, "pad_w", 0));
    } else if (!strcmp(op, "maxpool2d") || !strcmp(op, "avgpool2d")) {
        int kh = meta_int(st, "kh", 1), kw = meta_int(st, "kw", 1);
        int sh = meta_int(st, "sh", 1), sw = meta_int(st, "sw", 1);
        int ph = meta_int(st, "ph", 0), pw = meta_int(st, "pw", 0);
        outs[0] = op[0] == 'm' ? tm_maxpool2d(g, x, kh, kw, sh, sw, ph, pw)
                               : tm_avgpool2d(g, x, kh, kw, sh, sw, ph, pw);
    } else if (!strcmp(op, "attention")) {
        tm_node *bias = meta_int(st, "key_bias", 0) ? in[3] : NULL;
        outs[0] = tm_attention(g, x, y, z, bias, meta_float(st, "scale", 0),
                               meta_int(st, "causal", 0));
    } else if (!strcmp(op, "cross_entropy")) {
        outs[0] = tm_cross_entropy(g, x, y, meta_float(st, "label_smoothing", 0),
                                   meta_int(st, "ignore_index", -100));
    } else if (!strcmp(op, "l2_normalize")) {
        outs[0] = tm_l2_normalize(g, x, meta_float(st, "eps", 1e-12f));
    } else if (!strcmp(op, "cosine_similarity")) {
        outs[0] = tm_cosine_similarity(g, x, y, meta_float(st, "eps", 1e-8f));
    } else if (!strcmp(op, "rope")) {
        outs[0] = tm_rope(g, x, meta_int(st, "pos_offset", 0), meta_float(st, "base", 10000.0f));
    } else if (!strcmp(op, "groupnorm")) {
        int hw = meta_int(st, "has_weight", 0), hb = meta_int(st, "has_bias", 0);
        tm_node *w = hw ? in[1] : NULL, *b = hb ? in[1 + hw] : NULL;
        outs[0] = tm_groupnorm(g, x, meta_int(st, "groups", 1), w, b, meta_float(st, "eps", 1e-5f));
    } else if (!strcmp(op, "attention_probs")) {
        tm_node *bias = meta_int(st, "key_bias", 0) ? z : NULL;
        outs[0] = tm_attention_probs(g, x, y, bias, meta_float(st, "scale", 0),
                                     meta_int(st, "causal", 0));
    } else {
        return 0;
    }
    return outs[0] ? 1 : 0;
}

/* ------------------------------------------------------------ one case */

static int same_shape(const tm_node *n, const tm_tensor *t)
{
    if (tm_node_ndim(n) != t->ndim) return 0;
    for (int i = 0; i < t->ndim; i++)
        if (tm_node_shape(n)[i] != t->shape[i]) return 0;
    return 1;
}

static void shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < size) snprintf(buf + k, size - k, ")");
}

/* Appends n floats to r. */
static void result_add(result *r, const float *x, int64_t n)
{
    float *p = realloc(r->vals, (size_t)(r->n + n) * sizeof(float) + 1);
    if (!p) return;
    r->vals = p;
    memcpy(r->vals + r->n, x, (size_t)n * sizeof(float));
    r->n += n;
}

/* Runs one case; compares with the file when `check`. Fills *res with the
 * outputs and gradients it produced (empty when the case failed to run). */
static void run_case(const char *name, int check, result *res)
{
    char path[256], key[32], gkey[32], msg[512];
    snprintf(path, sizeof path, "ops/%s.safetensors", name);
    res->vals = NULL;
    res->n = 0;

    tm_safetensors *st = NULL;
    if (tm_safetensors_open(&st, test_data_path(path)) != TM_OK) {
        fail_case(name, "cannot open vectors", tm_last_error());
        return;
    }
    const char *op = meta_str(st, "op");
    const op_tol *tol = find_tol(op);
    if (!tol) {
        fail_case(name, "no tolerance for op", op);
        tm_safetensors_close(st);
        return;
    }

    tm_graph *g = tm_graph_new();
    tm_node *in[MAX_IN] = {0}, *outs[MAX_OUT] = {0}, *gs[MAX_OUT] = {0};
    tm_tensor tin[MAX_IN], tg[MAX_OUT], tout[MAX_OUT];
    int want_grad[MAX_IN] = {0};
    int nin = 0, nout = 0, ok = g != NULL;

    /* Inputs in0, in1, ...: a gradient is wanted when grad_in<i> exists. */
    for (; ok && nin < MAX_IN; nin++) {
        snprintf(key, sizeof key, "in%d", nin);
        if (tm_safetensors_find(st, key) < 0) break;
        if (tm_safetensors_get(st, key, &tin[nin]) != TM_OK) {
            fail_case(name, "cannot read input", tm_last_error());
            ok = 0;
            break;
        }
        in[nin] = tm_input(g, key, tin[nin].dtype, tin[nin].ndim, tin[nin].shape);
        snprintf(key, sizeof key, "grad_in%d", nin);
        want_grad[nin] = tm_safetensors_find(st, key) >= 0;
        if (want_grad[nin]) in[nin] = tm_requires_grad(g, in[nin]);
    }

    if (ok) {
        nout = build_op(g, st, op, in, nin, outs);
        if (nout == 0) {
            snprintf(msg, sizeof msg, "op %s: %s", op,
                     tm_graph_status(g) != TM_OK ? tm_last_error() : "unknown op");
            fail_case(name, "build failed", msg);
            ok = 0;
        }
    }

    /* loss = sum over outputs of sum(out * G); a scalar G scales instead. */
    tm_node *loss = NULL;
    int multi = tm_safetensors_metadata(st, "outputs") != NULL;
    for (int j = 0; ok && j < nout; j++) {
        const char *gname = multi ? (snprintf(gkey, sizeof gkey, "G%d", j), gkey) : "G";
        if (tm_safetensors_get(st, gname, &tg[j]) != TM_OK) {
            fail_case(name, "cannot read G", tm_last_error());
            ok = 0;
            break;
        }
        const char *oname = multi ? (snprintf(key, sizeof key, "out%d", j), key) : "out";
        if (tm_safetensors_get(st, oname, &tout[j]) != TM_OK) {
            fail_case(name, "cannot read out", tm_last_error());
            ok = 0;
            break;
        }
        tm_node *term;
        if (tg[j].ndim == 0) {
            term = tm_scale(g, outs[j], ((const float *)tg[j].data)[0], 0.0f);
        } else {
            gs[j] = tm_input(g, gname, TM_F32, tg[j].ndim, tg[j].shape);
            term = tm_mul(g, outs[j], gs[j]);
        }
        term = tm_sum(g, term, 0, NULL, 0);
        loss = loss ? tm_add(g, loss, term) : term;
        tm_graph_keep(g, outs[j]);
    }

    if (ok && tm_graph_compile(g, loss, TM_GRAPH_TRAIN) != TM_OK) {
        fail_case(name, "compile failed", tm_last_error());
        ok = 0;
    }
    for (int i = 0; ok && i < nin; i++) {
        void *dst = tm_node_data(g, in[i]);
        if (!dst) {
            fail_case(name, "no data for input", NULL);
            ok = 0;
            break;
        }
        memcpy(dst, tin[i].data, (size_t)tm_tensor_numel(&tin[i]) * 4);
    }
    for (int j = 0; ok && j < nout; j++) {
        if (!gs[j]) continue;
        void *dst = tm_node_data(g, gs[j]);
        if (!dst) {
            fail_case(name, "no data for G", NULL);
            ok = 0;
            break;
        }
        memcpy(dst, tg[j].data, (size_t)tm_tensor_numel(&tg[j]) * 4);
    }
    if (ok && tm_graph_forward(g) != TM_OK) {
        fail_case(name, "forward failed", tm_last_error());
        ok = 0;
    }
    if (ok && tm_graph_backward(g) != TM_OK) {
        fail_case(name, "backward failed", tm_last_error());
        ok = 0;
    }

    /* Outputs: shape, then values (copied out, in case a kept node is a
     * strided view). */
    for (int j = 0; ok && j < nout; j++) {
        char what[96], a[64], b[64];
        snprintf(what, sizeof what, "%s out%d", name, j);
        int64_t n = tm_tensor_numel(&tout[j]);
        if (check && !same_shape(outs[j], &tout[j])) {
            shape_str(a, sizeof a, tm_node_ndim(outs[j]), tm_node_shape(outs[j]));
            shape_str(b, sizeof b, tout[j].ndim, tout[j].shape);
            snprintf(msg, sizeof msg, "got %s, want %s", a, b);
            fail_case(what, "output shape", msg);
        }
        if (tm_node_numel(outs[j]) != n) {
            ok = 0;
            break;
        }
        float *buf = malloc((size_t)n * sizeof(float) + 1);
        tm_tensor view;
        tm_tensor *wrapped = NULL;
        int got = buf && tm_node_tensor(g, outs[j], &view) == TM_OK &&
                  tm_tensor_wrap(&wrapped, buf, TM_F32, view.ndim, view.shape) == TM_OK &&
                  tm_tensor_copy(wrapped, &view) == TM_OK;
        if (!got) {
            fail_case(what, "cannot read output", tm_last_error());
        } else {
            if (check) check_close(what, buf, (const float *)tout[j].data, n, tol->atol, tol->rtol);
            result_add(res, buf, n);
        }
        tm_tensor_free(wrapped);
        free(buf);
    }

    /* Gradients of the inputs that asked for one. */
    for (int i = 0; ok && i < nin; i++) {
        if (!want_grad[i]) continue;
        char what[96];
        tm_tensor want;
        snprintf(key, sizeof key, "grad_in%d", i);
        snprintf(what, sizeof what, "%s %s", name, key);
        if (tm_safetensors_get(st, key, &want) != TM_OK) {
            fail_case(what, "cannot read", tm_last_error());
            continue;
        }
        const float *got = tm_node_grad(g, in[i]);
        if (!got) {
            fail_case(what, "no gradient", NULL);
            continue;
        }
        int64_t n = tm_tensor_numel(&want);
        if (check) check_close(what, got, (const float *)want.data, n, tol->atol, tol->rtol);
        result_add(res, got, n);
    }

    tm_graph_free(g);
    tm_safetensors_close(st);
}

int main(void)
{
    result first[NCASES];
    int ops_seen[NTOLS] = {0};

    /* Every op of the table has at least one case. */
    for (int c = 0; c < NCASES; c++) {
        for (int t = 0; t < NTOLS; t++) {
            size_t k = strlen(TOLS[t].op);
            if (!strncmp(CASES[c], TOLS[t].op, k) &&
                (CASES[c][k] == 0 || CASES[c][k] == '_'))
                ops_seen[t] = 1;
        }
    }
    for (int t = 0; t < NTOLS; t++) {
        if (!ops_seen[t]) fail_case(TOLS[t].op, "no case for op", NULL);
    }

    CHECK_OK(tm_set_num_threads(1));
    for (int c = 0; c < NCASES; c++) run_case(CASES[c], 1, &first[c]);

    /* The same at 2 threads: bitwise identical results. */
    CHECK_OK(tm_set_num_threads(2));
    for (int c = 0; c < NCASES; c++) {
        result again;
        int before = test_failures;
        run_case(CASES[c], 0, &again);
        if (test_failures != before) {
            /* already reported */
        } else if (again.n != first[c].n ||
                   (again.n && memcmp(again.vals, first[c].vals,
                                      (size_t)again.n * sizeof(float)) != 0)) {
            int64_t at = -1;
            for (int64_t i = 0; i < again.n && i < first[c].n && at < 0; i++)
                if (memcmp(&again.vals[i], &first[c].vals[i], sizeof(float))) at = i;
            char msg[160];
            snprintf(msg, sizeof msg, "%lld vs %lld values, first difference at %lld",
                     (long long)first[c].n, (long long)again.n, (long long)at);
            fail_case(CASES[c], "results differ between 1 and 2 threads", msg);
        } else {
            test_checks++;
        }
        free(again.vals);
        free(first[c].vals);
    }
    return test_finish("test_ops_torch");
}
