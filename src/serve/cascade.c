/* Cascades: answer a classification from a cheap unimodal path of the same
 * model when it is confident enough, else from the full fusion model.
 *
 * A stage is a sub-model built from the session's model: the same config
 * with only some encoders (and no caption decoder or contrastive heads),
 * whose weights are copied by name from the full model (fusion's type
 * embedding rows are picked per kept encoder). Its forward costs only the
 * kept encoders plus fusion over their tokens, and it computes exactly what
 * the full model computes for an example where only those modalities are
 * present (the missing modalities' tokens are masked keys there): the
 * tests check that equality.
 *
 * An example goes to the first stage that sees at least one of its present
 * modalities; the stage answers when its top softmax probability is at
 * least the stage's threshold; the rest go on to the next stage, and what
 * no stage answers runs on the full model (stage index n_stages). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "serve/serve_internal.h"
#include "trimodal/io.h"

#define CASCADE_MAX_STAGES 8
#define CASCADE_MAX_SIZES 11

typedef struct {
    unsigned bits;   /* TM_MODALITY_* of the kept encoders */
    double threshold;
    tm_model *model; /* the sub-model */
    int n_enc;
    int full_col[TM_MODEL_MAX_MODALITIES]; /* sub encoder i -> full model column */
    tm_model_graph *graphs[CASCADE_MAX_SIZES];
    char name[64]; /* "text", "text+vision" */
} stage;

struct tm_cascade {
    tm_session *s;
    int n;
    stage st[CASCADE_MAX_STAGES];
    int64_t C;
    pthread_mutex_t lock;
    int max_batch;
};

static unsigned modality_bit(const char *name)
{
    if (!strcmp(name, "text")) return TM_MODALITY_TEXT;
    if (!strcmp(name, "vision") || !strcmp(name, "image")) return TM_MODALITY_IMAGE;
    if (!strcmp(name, "audio")) return TM_MODALITY_AUDIO;
    return 0;
}

/* Builds the sub-model of stage t from the full model's config and weights. */
static tm_status build_stage(tm_cascade *c, stage *t, const char *origin)
{
    tm_model *full = tm_session_model(c->s);
    tm_model_info fi = tm_model_get_info(full);
    char *json = tm_model_config_json(full);
    if (!json) return tm_fail(TM_ERR_NOMEM, "cascade: out of memory");
    cJSON *root = cJSON_Parse(json);
    tm_free(json);
    if (!root) return tm_fail(TM_ERR_NOMEM, "cascade: cannot read the model's config");
    cJSON *encs = cJSON_GetObjectItemCaseSensitive(root, "encoders");
    int kept = 0, idx = 0;
    for (cJSON *e = encs ? encs->child : NULL; e; idx++) {
        cJSON *next = e->next;
        const cJSON *mod = cJSON_GetObjectItemCaseSensitive(e, "modality");
        unsigned bit = cJSON_IsString(mod) ? modality_bit(mod->valuestring) : 0;
        if (bit & t->bits) {
            t->full_col[kept++] = idx;
        } else {
            cJSON_Delete(cJSON_DetachItemViaPointer(encs, e));
        }
        e = next;
    }
    t->n_enc = kept;
    cJSON_DeleteItemFromObjectCaseSensitive(root, "caption");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "contrastive");
    cJSON_DeleteItemFromObjectCaseSensitive(root, "masked_token");
    cJSON *loss = cJSON_GetObjectItemCaseSensitive(root, "loss");
    if (loss) {
        cJSON_DeleteItemFromObjectCaseSensitive(loss, "caption");
        cJSON_DeleteItemFromObjectCaseSensitive(loss, "contrastive");
        cJSON_DeleteItemFromObjectCaseSensitive(loss, "masked");
    }
    char *sub_json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!sub_json) return tm_fail(TM_ERR_NOMEM, "cascade: out of memory");
    if (kept == 0) {
        free(sub_json);
        return tm_fail(TM_ERR_INVALID,
                       "%s: stage %s: the model '%s' has no encoder of these modalities", origin,
                       t->name, fi.name ? fi.name : "?");
    }
    tm_status st = tm_model_new_from_json(&t->model, sub_json, strlen(sub_json), origin);
    free(sub_json);
    if (st) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tm_last_error());
        return tm_fail(TM_ERR_INVALID,
                       "%s: stage %s: this model cannot run on these modalities alone: %s",
                       origin, t->name, msg);
    }
    /* the weights, by name */
    float *dst = tm_model_params(t->model, NULL);
    const float *src = tm_model_params(full, NULL);
    int n = tm_model_tensor_count(t->model);
    for (int i = 0; i < n; i++) {
        tm_model_tensor a, b;
        if ((st = tm_model_tensor_at(t->model, i, &a))) return st;
        int j = tm_model_find_tensor(full, a.name);
        if (j < 0 || (st = tm_model_tensor_at(full, j, &b)))
            return tm_fail(TM_ERR_INVALID,
                           "%s: stage %s: the sub-model's tensor '%s' is not in the model", origin,
                           t->name, a.name);
        if (!strcmp(a.name, "fusion.type_emb") && a.ndim == 2 && b.ndim == 2 &&
            a.shape[0] == t->n_enc + 1 && b.shape[0] == fi.n_modalities + 1 &&
            a.shape[1] == b.shape[1]) {
            /* row 0 is the fusion CLS token's type, row 1 + i encoder i's */
            int64_t C = a.shape[1];
            memcpy(dst + a.offset, src + b.offset, (size_t)C * sizeof(float));
            for (int k = 0; k < t->n_enc; k++)
                memcpy(dst + a.offset + (size_t)(1 + k) * (size_t)C,
                       src + b.offset + (size_t)(1 + t->full_col[k]) * (size_t)C,
                       (size_t)C * sizeof(float));
            continue;
        }
        int same = a.ndim == b.ndim && a.numel == b.numel;
        for (int d = 0; same && d < a.ndim; d++)
            same = a.shape[d] == b.shape[d];
        if (!same)
            return tm_fail(TM_ERR_INVALID,
                           "%s: stage %s: tensor '%s' has another shape in the sub-model; this "
                           "fusion cannot run on these modalities alone",
                           origin, t->name, a.name);
        memcpy(dst + a.offset, src + b.offset, a.numel * sizeof(float));
    }
    /* a quantized folder's stages run on the same prepared weights (int8
     * re-quantizes to exactly the stored values) */
    if ((st = tm_model_set_weights(t->model, tm_model_weights(full)))) return st;
    tm_model_info si = tm_model_get_info(t->model);
    if (si.num_classes != fi.num_classes)
        return tm_fail(TM_ERR_INVALID, "%s: stage %s: the sub-model has no classifier", origin,
                       t->name);
    return TM_OK;
}

tm_status tm_cascade_new(tm_cascade **out, tm_session *s, const char *json, size_t len,
                         const char *origin)
{
    *out = NULL;
    if (!origin) origin = "cascade";
    if (!s) return tm_fail(TM_ERR_INVALID, "%s: NULL session", origin);
    if (!tm_session_can_classify(s))
        return tm_fail(TM_ERR_INVALID, "%s: the model has no classifier; a cascade classifies",
                       origin);
    tm_status ds = tm_json_check_depth(json, len, origin);
    if (ds) return ds;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root)
        return tm_fail(TM_ERR_FORMAT,
                       "%s: not valid JSON; expected {\"stages\": [{\"modalities\": [\"text\"], "
                       "\"threshold\": 0.9}, ...]}",
                       origin);
    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(root, "stages");
    tm_status st = TM_OK;
    int n = cJSON_IsArray(stages) ? cJSON_GetArraySize(stages) : -1;
    if (!cJSON_IsObject(root) || n < 1 || n > CASCADE_MAX_STAGES) {
        cJSON_Delete(root);
        return tm_fail(TM_ERR_FORMAT,
                       "%s: expected an object with \"stages\": an array of 1 to %d stages, "
                       "each {\"modalities\": [\"text\"|\"vision\"|\"audio\", ...], "
                       "\"threshold\": 0..1}; the full model answers the rest",
                       origin, CASCADE_MAX_STAGES);
    }
    for (const cJSON *k = root->child; k; k = k->next)
        if (strcmp(k->string, "stages")) {
            st = tm_fail(TM_ERR_FORMAT, "%s: unknown key \"%s\" (only \"stages\")", origin,
                         k->string);
            cJSON_Delete(root);
            return st;
        }
    tm_cascade *c = calloc(1, sizeof *c);
    if (!c) {
        cJSON_Delete(root);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", origin);
    }
    pthread_mutex_init(&c->lock, NULL);
    c->s = s;
    c->C = tm_session_info(s).num_classes;
    c->max_batch = tm_session_get_params(s).max_batch;
    unsigned have = tm_session_modalities(s);
    int i = 0;
    for (const cJSON *e = stages->child; e && !st; e = e->next, i++) {
        stage *t = &c->st[i];
        c->n = i + 1;
        const cJSON *mods = cJSON_GetObjectItemCaseSensitive(e, "modalities");
        const cJSON *thr = cJSON_GetObjectItemCaseSensitive(e, "threshold");
        if (!cJSON_IsObject(e) || !cJSON_IsArray(mods) || cJSON_GetArraySize(mods) < 1 ||
            !cJSON_IsNumber(thr) || !(thr->valuedouble >= 0 && thr->valuedouble <= 1)) {
            st = tm_fail(TM_ERR_FORMAT,
                         "%s: stage %d: expected {\"modalities\": [\"text\"|\"vision\"|"
                         "\"audio\", ...], \"threshold\": a number in [0, 1]}",
                         origin, i);
            break;
        }
        for (const cJSON *k = e->child; k && !st; k = k->next)
            if (strcmp(k->string, "modalities") && strcmp(k->string, "threshold"))
                st = tm_fail(TM_ERR_FORMAT, "%s: stage %d: unknown key \"%s\"", origin, i,
                             k->string);
        t->threshold = thr->valuedouble;
        for (const cJSON *m = mods->child; m && !st; m = m->next) {
            unsigned bit = cJSON_IsString(m) ? modality_bit(m->valuestring) : 0;
            if (!bit)
                st = tm_fail(TM_ERR_FORMAT,
                             "%s: stage %d: unknown modality (give \"text\", \"vision\" or "
                             "\"audio\")",
                             origin, i);
            else if (!(bit & have))
                st = tm_fail(TM_ERR_INVALID, "%s: stage %d: the model has no %s encoder",
                             origin, i, m->valuestring);
            else if (!(t->bits & bit)) {
                size_t l = strlen(t->name);
                snprintf(t->name + l, sizeof t->name - l, "%s%s", l ? "+" : "",
                         m->valuestring);
                t->bits |= bit;
            }
        }
        if (!st && t->bits == have)
            st = tm_fail(TM_ERR_INVALID,
                         "%s: stage %d uses every modality of the model: that is the full "
                         "model, which always comes last on its own",
                         origin, i);
        if (!st) st = build_stage(c, t, origin);
    }
    cJSON_Delete(root);
    if (st) {
        tm_cascade_free(c);
        return st;
    }
    *out = c;
    return TM_OK;
}

tm_status tm_cascade_load(tm_cascade **out, tm_session *s, const char *path)
{
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    tm_status st =
        tm_read_file(path, (size_t)tm_limit_get(TM_LIMIT_CASCADE_JSON_BYTES), &text, &len);
    if (st == TM_ERR_LIMIT)
        return tm_fail(st, "%s (limit %s)", tm_last_error(),
                       tm_limit_hint(TM_LIMIT_CASCADE_JSON_BYTES));
    if (st) return st;
    st = tm_cascade_new(out, s, text, len, path);
    tm_free(text);
    return st;
}

void tm_cascade_free(tm_cascade *c)
{
    if (!c) return;
    for (int i = 0; i < c->n; i++) {
        for (int k = 0; k < CASCADE_MAX_SIZES; k++)
            tm_model_graph_free(c->st[i].graphs[k]);
        tm_model_free(c->st[i].model);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

int tm_cascade_stage_count(const tm_cascade *c)
{
    return c ? c->n : 0;
}

const char *tm_cascade_stage_name(const tm_cascade *c, int i)
{
    if (!c || i < 0 || i > c->n) return NULL;
    return i == c->n ? "full" : c->st[i].name;
}

tm_status tm_cascade_set_threshold(tm_cascade *c, int i, double threshold)
{
    if (!c || i < 0 || i >= c->n)
        return tm_fail(TM_ERR_INVALID, "cascade: no stage %d", i);
    if (!(threshold >= 0 && threshold <= 1))
        return tm_fail(TM_ERR_INVALID, "cascade: threshold %g is not in [0, 1]", threshold);
    pthread_mutex_lock(&c->lock);
    c->st[i].threshold = threshold;
    pthread_mutex_unlock(&c->lock);
    return TM_OK;
}

double tm_cascade_threshold(const tm_cascade *c, int i)
{
    return c && i >= 0 && i < c->n ? c->st[i].threshold : NAN;
}

static int log2i(int v)
{
    int k = 0;
    while ((1 << (k + 1)) <= v)
        k++;
    return k;
}

static void softmax_row(const float *x, float *y, int64_t C)
{
    double mx = -INFINITY, sum = 0;
    for (int64_t k = 0; k < C; k++)
        mx = x[k] > mx ? x[k] : mx;
    for (int64_t k = 0; k < C; k++)
        sum += exp((double)x[k] - mx);
    for (int64_t k = 0; k < C; k++)
        y[k] = (float)(exp((double)x[k] - mx) / sum);
}

/* size (a power of two) examples on stage t; probs (size, C). */
static tm_status stage_chunk(tm_cascade *c, stage *t, tm_example *const *ex, int size, float *probs)
{
    tm_model_graph **g = &t->graphs[log2i(size)];
    tm_status st = TM_OK;
    if (!*g && (st = tm_model_graph_new(g, t->model, size, TM_MODEL_CLASSIFY))) return st;
    tm_model_inputs in = tm_model_graph_inputs(*g);
    tm_model_info si = tm_model_get_info(t->model);
    int64_t T = si.text_tokens, CHW = si.image_channels * si.image_h * si.image_w,
            MF = si.n_mels * si.n_frames;
    for (int b = 0; b < size; b++) {
        const tm_example *e = ex[b];
        unsigned pres = tm_example_present(e);
        const int32_t *tok = tm_example_tokens(e);
        const float *img = tm_example_image(e), *mel = tm_example_mel(e);
        if (in.tokens && tok) memcpy(in.tokens + b * T, tok, (size_t)T * sizeof(int32_t));
        if (in.image && img) memcpy(in.image + b * CHW, img, (size_t)CHW * sizeof(float));
        if (in.mel && mel) memcpy(in.mel + b * MF, mel, (size_t)MF * sizeof(float));
        for (int m = 0; m < t->n_enc; m++)
            in.present[b * t->n_enc + m] = (pres & modality_bit(si.modality[m])) != 0;
    }
    if ((st = tm_model_graph_forward(*g))) return st;
    const float *lg = tm_model_graph_logits(*g);
    for (int b = 0; b < size; b++)
        softmax_row(lg + (int64_t)b * c->C, probs + (int64_t)b * c->C, c->C);
    return TM_OK;
}

static tm_status stage_run(tm_cascade *c, stage *t, tm_example *const *ex, int n, float *probs)
{
    int top = 1 << log2i(c->max_batch > 0 ? c->max_batch : 1);
    tm_status st = TM_OK;
    for (int done = 0; !st && done < n;) {
        int size = top;
        while (size > n - done)
            size >>= 1;
        st = stage_chunk(c, t, ex + done, size, probs + (int64_t)done * c->C);
        done += size;
    }
    return st;
}

tm_status tm_cascade_classify(tm_cascade *c, tm_example *const *ex, int n, float *probs,
                              int *stage_used)
{
    if (!c || n < 1 || !ex || !probs)
        return tm_fail(TM_ERR_INVALID, "cascade: no cascade, examples or output");
    for (int i = 0; i < n; i++)
        if (!ex[i]) return tm_fail(TM_ERR_INVALID, "cascade: example %d is NULL", i);
    int64_t C = c->C;
    int *left = malloc((size_t)n * sizeof *left); /* indexes still unanswered */
    int *pick = malloc((size_t)n * sizeof *pick);
    tm_example **sub = malloc((size_t)n * sizeof *sub);
    float *p = malloc((size_t)n * (size_t)C * sizeof *p);
    if (!left || !pick || !sub || !p) {
        free(left), free(pick), free(sub), free(p);
        return tm_fail(TM_ERR_NOMEM, "cascade: out of memory (%d examples)", n);
    }
    int n_left = n;
    for (int i = 0; i < n; i++)
        left[i] = i;
    tm_status st = TM_OK;
    pthread_mutex_lock(&c->lock);
    for (int si = 0; !st && si < c->n && n_left > 0; si++) {
        stage *t = &c->st[si];
        int m = 0;
        for (int j = 0; j < n_left; j++)
            if (tm_example_present(ex[left[j]]) & t->bits) pick[m] = left[j], sub[m++] = ex[left[j]];
        if (!m) continue;
        if ((st = stage_run(c, t, sub, m, p))) break;
        /* answered ones leave `left` */
        int k = 0, q = 0;
        for (int j = 0; j < n_left; j++) {
            int i = left[j];
            if (q < m && pick[q] == i) {
                const float *row = p + (int64_t)q * C;
                float best = 0;
                for (int64_t cc = 0; cc < C; cc++)
                    best = row[cc] > best ? row[cc] : best;
                q++;
                if ((double)best >= t->threshold) {
                    memcpy(probs + (int64_t)i * C, row, (size_t)C * sizeof(float));
                    if (stage_used) stage_used[i] = si;
                    continue;
                }
            }
            left[k++] = i;
        }
        n_left = k;
    }
    pthread_mutex_unlock(&c->lock);
    if (!st && n_left > 0) {
        for (int j = 0; j < n_left; j++)
            sub[j] = ex[left[j]];
        st = tm_session_classify(c->s, sub, n_left, p);
        for (int j = 0; !st && j < n_left; j++) {
            memcpy(probs + (int64_t)left[j] * C, p + (int64_t)j * C, (size_t)C * sizeof(float));
            if (stage_used) stage_used[left[j]] = c->n;
        }
    }
    free(left), free(pick), free(sub), free(p);
    return st;
}
