/* Basic layers as graph builders: linear, layernorm, activations, MLP,
 * embeddings, conv stems and small shape helpers. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "nn_internal.h"

/* ------------------------------------------------------------ helpers */

tm_node *tm_nn_fail(tm_graph *g, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    tm_graph_fail(g, TM_ERR_INVALID, "%s", msg);
    return NULL;
}

/* The graph's first build error; tm_graph_fail made it tm_last_error(). */
tm_status tm_nn_status(tm_graph *g) { return tm_graph_status(g); }

tm_node *tm_nn_param(tm_graph *g, const char *prefix, const char *suffix, int ndim,
                     const int64_t *shape)
{
    char name[TM_NN_NAME_MAX];
    int n = suffix ? snprintf(name, sizeof name, "%s.%s", prefix, suffix)
                   : snprintf(name, sizeof name, "%s", prefix);
    if (n < 0 || (size_t)n >= sizeof name)
        return tm_nn_fail(g, "nn: parameter name '%s.%s' is longer than %d bytes", prefix,
                          suffix ? suffix : "", TM_NN_NAME_MAX - 1);
    return tm_param(g, name, ndim, shape);
}

/* 1 when x is non-NULL with the wanted number of dimensions; otherwise
 * records why (a NULL input already has its reason in the graph). */
static int want_ndim(tm_graph *g, const char *what, tm_node *x, int ndim)
{
    if (!x) {
        if (g && tm_graph_status(g) == TM_OK) tm_nn_fail(g, "%s: input is NULL", what);
        return 0;
    }
    if (tm_node_ndim(x) != ndim) {
        tm_nn_fail(g, "%s: input must have %d dimensions, got %d", what, ndim, tm_node_ndim(x));
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------ linear */

tm_status tm_nn_linear_declare(tm_nn_linear *l, tm_graph *g, const char *name, int64_t in,
                               int64_t out, int bias)
{
    memset(l, 0, sizeof *l);
    l->in = in;
    l->out = out;
    if (in < 1 || out < 1) {
        tm_nn_fail(g, "linear '%s': sizes must be >= 1, got in %lld out %lld", name,
                   (long long)in, (long long)out);
        return tm_nn_status(g);
    }
    l->weight = tm_nn_param(g, name, "weight", 2, (int64_t[]){out, in});
    if (bias) l->bias = tm_nn_param(g, name, "bias", 1, (int64_t[]){out});
    return tm_nn_status(g);
}

tm_node *tm_nn_linear_forward(tm_graph *g, const tm_nn_linear *l, tm_node *x)
{
    return tm_linear(g, x, l->weight, l->bias);
}

/* --------------------------------------------------------- layernorm */

tm_status tm_nn_layernorm_declare(tm_nn_layernorm *ln, tm_graph *g, const char *name, int64_t C,
                                  int affine, float eps)
{
    memset(ln, 0, sizeof *ln);
    ln->C = C;
    ln->eps = eps;
    if (C < 1 || !(eps > 0)) {
        tm_nn_fail(g, "layernorm '%s': needs C >= 1 and eps > 0", name);
        return tm_nn_status(g);
    }
    if (affine) {
        ln->weight = tm_nn_param(g, name, "weight", 1, (int64_t[]){C});
        ln->bias = tm_nn_param(g, name, "bias", 1, (int64_t[]){C});
    }
    return tm_nn_status(g);
}

tm_node *tm_nn_layernorm_forward(tm_graph *g, const tm_nn_layernorm *ln, tm_node *x)
{
    return tm_layernorm(g, x, ln->weight, ln->bias, ln->eps);
}

/* --------------------------------------------------------- group norm */

tm_status tm_nn_groupnorm_declare(tm_nn_groupnorm *n, tm_graph *g, const char *name, int64_t C,
                                  int groups, float eps)
{
    memset(n, 0, sizeof *n);
    n->C = C;
    n->groups = groups;
    n->eps = eps;
    if (C < 1 || groups < 1 || C % groups) {
        tm_nn_fail(g, "groupnorm '%s': %d groups do not divide %lld channels", name, groups,
                   (long long)C);
        return tm_nn_status(g);
    }
    n->weight = tm_nn_param(g, name, "weight", 1, (int64_t[]){C});
    n->bias = tm_nn_param(g, name, "bias", 1, (int64_t[]){C});
    return tm_nn_status(g);
}

tm_node *tm_nn_groupnorm_forward(tm_graph *g, const tm_nn_groupnorm *n, tm_node *x)
{
    return tm_groupnorm(g, x, n->groups, n->weight, n->bias, n->eps);
}

/* -------------------------------------------------------- activations */

static const char *const ACT_NAMES[TM_NN_ACT_COUNT] = {"gelu", "gelu_tanh", "relu", "silu"};

const char *tm_nn_act_name(tm_nn_act act)
{
    return (unsigned)act < TM_NN_ACT_COUNT ? ACT_NAMES[act] : "invalid";
}

int tm_nn_act_from_name(const char *name)
{
    for (int i = 0; name && i < TM_NN_ACT_COUNT; i++)
        if (!strcmp(name, ACT_NAMES[i])) return i;
    return -1;
}

tm_node *tm_nn_act_forward(tm_graph *g, tm_nn_act act, tm_node *x)
{
    switch (act) {
    case TM_NN_GELU: return tm_gelu(g, x);
    case TM_NN_GELU_TANH: return tm_gelu_tanh(g, x);
    case TM_NN_RELU: return tm_relu(g, x);
    case TM_NN_SILU: return tm_silu(g, x);
    default: return tm_nn_fail(g, "activation: unknown kind %d", (int)act);
    }
}

tm_node *tm_nn_dropout(tm_graph *g, tm_node *x, float p, uint64_t seed)
{
    if (p == 0.0f) return x;
    return tm_dropout(g, x, p, seed);
}

/* --------------------------------------------------------------- MLP */

tm_status tm_nn_mlp_declare(tm_nn_mlp *m, tm_graph *g, const char *name, int64_t C,
                            int64_t hidden, tm_nn_act act)
{
    char sub[TM_NN_NAME_MAX];
    memset(m, 0, sizeof *m);
    m->act = act;
    if ((unsigned)act >= TM_NN_ACT_COUNT) {
        tm_nn_fail(g, "mlp '%s': unknown activation %d", name, (int)act);
        return tm_nn_status(g);
    }
    snprintf(sub, sizeof sub, "%s.fc1", name);
    tm_nn_linear_declare(&m->fc1, g, sub, C, hidden, 1);
    snprintf(sub, sizeof sub, "%s.fc2", name);
    tm_nn_linear_declare(&m->fc2, g, sub, hidden, C, 1);
    return tm_nn_status(g);
}

tm_node *tm_nn_mlp_forward(tm_graph *g, const tm_nn_mlp *m, tm_node *x)
{
    tm_node *h = tm_nn_linear_forward(g, &m->fc1, x);
    h = tm_nn_act_forward(g, m->act, h);
    return tm_nn_linear_forward(g, &m->fc2, h);
}

/* -------------------------------------------------------- embeddings */

tm_status tm_nn_embedding_declare(tm_nn_embedding *e, tm_graph *g, const char *name, int64_t V,
                                  int64_t C)
{
    memset(e, 0, sizeof *e);
    e->V = V;
    e->C = C;
    if (V < 1 || C < 1) {
        tm_nn_fail(g, "embedding '%s': sizes must be >= 1", name);
        return tm_nn_status(g);
    }
    e->weight = tm_nn_param(g, name, "weight", 2, (int64_t[]){V, C});
    return tm_nn_status(g);
}

tm_node *tm_nn_embedding_forward(tm_graph *g, const tm_nn_embedding *e, tm_node *ids)
{
    return tm_embedding(g, e->weight, ids);
}

tm_node *tm_nn_expand_rows(tm_graph *g, tm_node *row, int64_t batch)
{
    if (!row) return want_ndim(g, "expand_rows", row, 2), NULL;
    int nd = tm_node_ndim(row);
    const int64_t *s = tm_node_shape(row);
    if (!(nd == 1 || (nd == 2 && s[0] == 1)))
        return tm_nn_fail(g, "expand_rows: the row must be (C) or (1, C)");
    int64_t C = s[nd - 1];
    tm_node *table = nd == 1 ? tm_reshape(g, row, 2, (int64_t[]){1, C}) : row;
    /* A gather of row 0 for every example: the gradient of each copy adds
     * into the row. The ids stay zero: inputs start zeroed and nobody
     * writes this one. */
    tm_node *zeros = tm_input(g, "nn.zero_ids", TM_I32, 2, (int64_t[]){batch, 1});
    return tm_embedding(g, table, zeros);
}

/* ---------------------------------------------------------- conv stems */

tm_status tm_nn_conv_declare(tm_nn_conv *c, tm_graph *g, const char *name, int dims,
                             int64_t cin, int64_t cout, int64_t kernel, int stride, int pad,
                             int bias)
{
    memset(c, 0, sizeof *c);
    c->dims = dims;
    c->cin = cin;
    c->cout = cout;
    c->kernel = kernel;
    c->stride = stride;
    c->pad = pad;
    if ((dims != 1 && dims != 2) || cin < 1 || cout < 1 || kernel < 1 || stride < 1 || pad < 0) {
        tm_nn_fail(g, "conv '%s': needs dims 1 or 2, channels and kernel >= 1, stride >= 1, "
                      "padding >= 0", name);
        return tm_nn_status(g);
    }
    if (dims == 1)
        c->weight = tm_nn_param(g, name, "weight", 3, (int64_t[]){cout, cin, kernel});
    else
        c->weight = tm_nn_param(g, name, "weight", 4, (int64_t[]){cout, cin, kernel, kernel});
    if (bias) c->bias = tm_nn_param(g, name, "bias", 1, (int64_t[]){cout});
    return tm_nn_status(g);
}

tm_node *tm_nn_conv_forward(tm_graph *g, const tm_nn_conv *c, tm_node *x)
{
    if (c->dims == 1) return tm_conv1d(g, x, c->weight, c->bias, c->stride, c->pad);
    return tm_conv2d(g, x, c->weight, c->bias, c->stride, c->stride, c->pad, c->pad);
}

tm_node *tm_nn_to_tokens(tm_graph *g, tm_node *x)
{
    if (!x) return want_ndim(g, "to_tokens", x, 3), NULL;
    int nd = tm_node_ndim(x);
    const int64_t *s = tm_node_shape(x);
    if (nd == 4) x = tm_reshape(g, x, 3, (int64_t[]){s[0], s[1], s[2] * s[3]});
    else if (nd != 3) return tm_nn_fail(g, "to_tokens: input must be (B, C, L) or (B, C, H, W)");
    return tm_permute(g, x, (int[]){0, 2, 1});
}

/* ------------------------------------------------------------- masks */

void tm_nn_key_bias_from_ids(float *bias, const int32_t *ids, int64_t n, int32_t pad_id)
{
    for (int64_t i = 0; i < n; i++) bias[i] = ids[i] == pad_id ? -INFINITY : 0.0f;
}

/* ------------------------------------------------------------- misc */

tm_node *tm_nn_min_scalar(tm_graph *g, tm_node *x, float c)
{
    /* min(x, c) = c - relu(c - x) */
    return tm_scale(g, tm_relu(g, tm_scale(g, x, -1.0f, c)), -1.0f, c);
}

tm_node *tm_nn_mean_tokens(tm_graph *g, tm_node *x)
{
    if (!want_ndim(g, "mean_tokens", x, 3)) return NULL;
    return tm_mean(g, x, 1, (int[]){1}, 0);
}

tm_node *tm_nn_take_token(tm_graph *g, tm_node *x, int64_t t)
{
    if (!want_ndim(g, "take_token", x, 3)) return NULL;
    const int64_t *s = tm_node_shape(x);
    if (t < 0 || t >= s[1])
        return tm_nn_fail(g, "take_token: token %lld of %lld", (long long)t, (long long)s[1]);
    int64_t B = s[0], C = s[2];
    return tm_reshape(g, tm_slice(g, x, 1, t, t + 1, 1), 2, (int64_t[]){B, C});
}
