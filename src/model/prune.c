/* Magnitude pruning of a model's weights, in place.
 *
 * Unstructured: in every linear weight (a 2-D tensor whose name ends in
 * ".weight"; embeddings, convolutions and norms are left alone) the
 * floor(sparsity * numel) entries of smallest |w| become 0. Ties at the
 * threshold are broken by position (the earlier entry goes first), so the
 * count is exact and the result deterministic.
 *
 * Per-head structured: in every attention projection (".attn.qkv.weight"
 * (3D, D) with its ".out.weight" (D, D); ".xattn." likewise) a head h owns
 * rows [h*dh, (h+1)*dh) of each of q, k and v (and those bias entries) and
 * columns [h*dh, (h+1)*dh) of the output projection. A head's score is the
 * L2 norm of all of them; the round(sparsity * heads) heads of lowest score
 * in each attention (at most heads - 1) are zeroed, so their output is
 * exactly zero (their attention weights become uniform over a zero value). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "trimodal/model.h"

tm_prune_params tm_prune_default_params(void)
{
    tm_prune_params p;
    memset(&p, 0, sizeof p);
    p.sparsity = 0.5;
    p.mode = TM_PRUNE_UNSTRUCTURED;
    return p;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Zeroes the k entries of w[0..n) of smallest |w|; *zeros counts the
 * entries that are 0 afterwards. */
static tm_status prune_tensor(float *w, size_t n, size_t k, size_t *zeros)
{
    if (k > 0) {
        float *a = malloc(n * sizeof *a);
        if (!a) return tm_fail(TM_ERR_NOMEM, "prune: out of memory (%zu floats)", n);
        for (size_t i = 0; i < n; i++)
            a[i] = fabsf(w[i]);
        qsort(a, n, sizeof *a, cmp_float);
        float thr = a[k - 1];
        size_t below = 0;
        for (size_t i = 0; i < n; i++)
            below += fabsf(w[i]) < thr;
        size_t at_thr = k - below; /* entries equal to thr still to zero, first ones first */
        for (size_t i = 0; i < n; i++) {
            float m = fabsf(w[i]);
            if (m < thr)
                w[i] = 0.0f;
            else if (m == thr && at_thr > 0) {
                w[i] = 0.0f;
                at_thr--;
            }
        }
        free(a);
    }
    size_t z = 0;
    for (size_t i = 0; i < n; i++)
        z += w[i] == 0.0f;
    *zeros += z;
    return TM_OK;
}

static int64_t config_heads(const tm_model *m)
{
    char *json = tm_model_config_json(m);
    if (!json) return -1;
    cJSON *root = cJSON_Parse(json);
    tm_free(json);
    const cJSON *h = root ? cJSON_GetObjectItemCaseSensitive(root, "heads") : NULL;
    int64_t heads = cJSON_IsNumber(h) ? (int64_t)h->valuedouble : -1;
    cJSON_Delete(root);
    return heads;
}

typedef struct {
    int i;
    double score;
} head_score;

static int cmp_head(const void *a, const void *b)
{
    const head_score *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? -1 : 1;
    return x->i - y->i;
}

/* One attention: qkv (3D, D) [+ bias (3D)], out (D, D). */
static tm_status prune_heads(float *params, const tm_model_tensor *qkv, const tm_model_tensor *qb,
                             const tm_model_tensor *out, int64_t H, double sparsity,
                             tm_prune_report *rep)
{
    int64_t D = out->shape[0], dh = D / H;
    float *wq = params + qkv->offset, *bq = qb ? params + qb->offset : NULL;
    float *wo = params + out->offset;
    head_score hs[4096];
    for (int64_t h = 0; h < H; h++) {
        double s = 0;
        for (int part = 0; part < 3; part++)
            for (int64_t r = part * D + h * dh; r < part * D + (h + 1) * dh; r++) {
                for (int64_t c = 0; c < D; c++)
                    s += (double)wq[r * D + c] * wq[r * D + c];
                if (bq) s += (double)bq[r] * bq[r];
            }
        for (int64_t r = 0; r < D; r++)
            for (int64_t c = h * dh; c < (h + 1) * dh; c++)
                s += (double)wo[r * D + c] * wo[r * D + c];
        hs[h].i = (int)h;
        hs[h].score = sqrt(s);
    }
    qsort(hs, (size_t)H, sizeof hs[0], cmp_head);
    int64_t k = (int64_t)floor(sparsity * (double)H + 0.5);
    if (k > H - 1) k = H - 1;
    for (int64_t j = 0; j < k; j++) {
        int64_t h = hs[j].i;
        for (int part = 0; part < 3; part++)
            for (int64_t r = part * D + h * dh; r < part * D + (h + 1) * dh; r++) {
                memset(wq + r * D, 0, (size_t)D * sizeof(float));
                if (bq) bq[r] = 0.0f;
            }
        for (int64_t r = 0; r < D; r++)
            memset(wo + r * D + h * dh, 0, (size_t)dh * sizeof(float));
    }
    rep->heads_total += H;
    rep->heads_pruned += k;
    rep->attentions++;
    return TM_OK;
}

tm_status tm_model_prune(tm_model *m, const tm_prune_params *params, tm_prune_report *report)
{
    tm_prune_params p = params ? *params : tm_prune_default_params();
    tm_prune_report rep;
    memset(&rep, 0, sizeof rep);
    if (report) *report = rep;
    if (!m) return tm_fail(TM_ERR_INVALID, "prune: NULL model");
    if (!(p.sparsity >= 0.0 && p.sparsity < 1.0))
        return tm_fail(TM_ERR_INVALID,
                       "prune: sparsity %g is out of range; give a fraction in [0, 1) "
                       "(0.5 zeroes half of each weight)",
                       p.sparsity);
    if (p.mode != TM_PRUNE_UNSTRUCTURED && p.mode != TM_PRUNE_HEADS)
        return tm_fail(TM_ERR_INVALID, "prune: unknown mode %d (unstructured or heads)", p.mode);
    float *params_buf = tm_model_params(m, NULL);
    int n = tm_model_tensor_count(m);
    int64_t H = 0;
    if (p.mode == TM_PRUNE_HEADS) {
        H = config_heads(m);
        if (H < 1 || H > 4096)
            return tm_fail(TM_ERR_INVALID, "prune: the model's config has no usable \"heads\"");
    }
    for (int i = 0; i < n; i++) {
        tm_model_tensor t;
        tm_status st = tm_model_tensor_at(m, i, &t);
        if (st) return st;
        if (t.frozen || t.ndim != 2 || !ends_with(t.name, ".weight")) continue;
        if (p.mode == TM_PRUNE_UNSTRUCTURED) {
            size_t k = (size_t)floor(p.sparsity * (double)t.numel);
            rep.tensors++;
            rep.weights_total += (int64_t)t.numel;
            size_t zeros = 0;
            if ((st = prune_tensor(params_buf + t.offset, t.numel, k, &zeros))) return st;
            rep.weights_zero += (int64_t)zeros;
            continue;
        }
        if (!ends_with(t.name, "attn.qkv.weight")) continue;
        /* "<prefix>.qkv.weight" -> "<prefix>.qkv.bias", "<prefix>.out.weight" */
        char name[512];
        size_t plen = strlen(t.name) - strlen("qkv.weight");
        if (plen + 16 > sizeof name) continue;
        memcpy(name, t.name, plen);
        strcpy(name + plen, "out.weight");
        int io = tm_model_find_tensor(m, name);
        strcpy(name + plen, "qkv.bias");
        int ib = tm_model_find_tensor(m, name);
        tm_model_tensor out, qb;
        if (io < 0 || tm_model_tensor_at(m, io, &out)) continue;
        int have_b = ib >= 0 && !tm_model_tensor_at(m, ib, &qb) && qb.numel == (size_t)t.shape[0];
        int64_t D = out.shape[1];
        if (out.ndim != 2 || out.shape[0] != D || t.shape[0] != 3 * D || t.shape[1] != D ||
            D % H)
            return tm_fail(TM_ERR_INVALID,
                           "prune: attention '%s' is (%lld, %lld) with an output (%lld, %lld); "
                           "per-head pruning needs (3*D, D) and (D, D) with D divisible by "
                           "heads %lld",
                           t.name, (long long)t.shape[0], (long long)t.shape[1],
                           (long long)out.shape[0], (long long)out.shape[1], (long long)H);
        if ((st = prune_heads(params_buf, &t, have_b ? &qb : NULL, &out, H, p.sparsity, &rep)))
            return st;
    }
    if (p.mode == TM_PRUNE_HEADS && rep.attentions == 0)
        return tm_fail(TM_ERR_INVALID,
                       "prune: the model has no attention layers (\".attn.qkv.weight\"); "
                       "use unstructured pruning");
    /* overall sparsity of the linear weights, after either mode */
    if (p.mode == TM_PRUNE_HEADS)
        for (int i = 0; i < n; i++) {
            tm_model_tensor t;
            if (tm_model_tensor_at(m, i, &t) || t.frozen || t.ndim != 2 ||
                !ends_with(t.name, ".weight"))
                continue;
            rep.tensors++;
            rep.weights_total += (int64_t)t.numel;
            const float *w = params_buf + t.offset;
            for (size_t j = 0; j < t.numel; j++)
                rep.weights_zero += w[j] == 0.0f;
        }
    if (report) *report = rep;
    return TM_OK;
}
