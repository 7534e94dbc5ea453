/* Model configs: parsing and validating config.json, and writing it back
 * in canonical form. Every message names the config (its origin) and the
 * key, as a path ("encoders[1].patch_size"). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "model_internal.h"
#include "trimodal/ops.h"

static const char *const ENC_NAMES[ENC_KIND_COUNT] = {"text", "vision", "audio"};
static const char *const POOL_NAMES[POOL_KIND_COUNT] = {"first", "mean", "attention"};
static const char *const FUSION_NAMES[FUSION_KIND_COUNT] = {"early", "late", "cross",
                                                             "bottleneck"};
static const char *const COMBINE_NAMES[COMBINE_KIND_COUNT] = {"concat", "sum", "gated"};

const char *tm_model_enc_name(enc_kind k)
{
    return (unsigned)k < ENC_KIND_COUNT ? ENC_NAMES[k] : "invalid";
}

/* ------------------------------------------------------------ helpers */

typedef struct {
    const char *origin;
    tm_status status; /* the first error */
} ctx;

static tm_status bad(ctx *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static tm_status bad(ctx *c, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->status == TM_OK) {
        c->status = TM_ERR_INVALID;
        tm_fail(TM_ERR_INVALID, "config %s: %s", c->origin, msg);
    }
    return c->status;
}

/* "prefix.key" or "key" */
static void key_path(char *buf, size_t size, const char *prefix, const char *key)
{
    if (prefix && *prefix) snprintf(buf, size, "%s.%s", prefix, key);
    else snprintf(buf, size, "%s", key);
}

/* A short rendering of a JSON value for messages. */
static void value_str(char *buf, size_t size, const cJSON *v)
{
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        snprintf(buf, size, "?");
        return;
    }
    if (strlen(s) > 40) snprintf(buf, size, "%.37s...", s);
    else snprintf(buf, size, "%s", s);
    cJSON_free(s);
}

/* Fails on any key of obj that is not in allowed (NULL-terminated). */
static int only_keys(ctx *c, const cJSON *obj, const char *prefix, const char *const *allowed)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            if (it->string && !strcmp(it->string, allowed[i])) ok = 1;
        if (!ok) {
            char p[160], list[300];
            size_t k = 0;
            list[0] = 0;
            for (int i = 0; allowed[i] && k < sizeof list; i++)
                k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", i ? ", " : "", allowed[i]);
            key_path(p, sizeof p, prefix, it->string ? it->string : "?");
            bad(c, "unknown key \"%s\" (known here: %s)", p, list);
            return 0;
        }
    }
    return 1;
}

static int is_object(const cJSON *v) { return v && cJSON_IsObject(v); }

/* An integer in [lo, hi]; absent: dflt, or an error when required. */
static int get_int(ctx *c, const cJSON *obj, const char *prefix, const char *key, int64_t lo,
                   int64_t hi, int required, int64_t dflt, int64_t *out)
{
    char p[160], v[64];
    key_path(p, sizeof p, prefix, key);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) {
        if (required) return bad(c, "missing key \"%s\" (an integer)", p), 0;
        *out = dflt;
        return 1;
    }
    double d = it->valuedouble;
    if (!cJSON_IsNumber(it) || d != floor(d) || d < (double)lo || d > (double)hi) {
        value_str(v, sizeof v, it);
        return bad(c, "\"%s\" must be an integer in %lld..%lld, got %s", p, (long long)lo,
                   (long long)hi, v), 0;
    }
    *out = (int64_t)d;
    return 1;
}

static int get_float(ctx *c, const cJSON *obj, const char *prefix, const char *key, double lo,
                     double hi, int lo_open, double dflt, double *out)
{
    char p[160], v[64];
    key_path(p, sizeof p, prefix, key);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) {
        *out = dflt;
        return 1;
    }
    double d = it->valuedouble;
    if (!cJSON_IsNumber(it) || !isfinite(d) || d < lo || (lo_open && d == lo) || d > hi) {
        value_str(v, sizeof v, it);
        return bad(c, "\"%s\" must be a number in %s%g, %g], got %s", p, lo_open ? "(" : "[", lo,
                   hi, v), 0;
    }
    *out = d;
    return 1;
}

static int get_bool(ctx *c, const cJSON *obj, const char *prefix, const char *key, int dflt,
                    int *out)
{
    char p[160], v[64];
    key_path(p, sizeof p, prefix, key);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) {
        *out = dflt;
        return 1;
    }
    if (!cJSON_IsBool(it)) {
        value_str(v, sizeof v, it);
        return bad(c, "\"%s\" must be true or false, got %s", p, v), 0;
    }
    *out = cJSON_IsTrue(it);
    return 1;
}

/* One of names[0..n); absent: dflt (or an error when dflt < 0). */
static int get_enum(ctx *c, const cJSON *obj, const char *prefix, const char *key,
                    const char *const *names, int n, int dflt, int *out)
{
    char p[160], v[64], list[200];
    key_path(p, sizeof p, prefix, key);
    size_t k = 0;
    list[0] = 0;
    for (int i = 0; i < n && k < sizeof list; i++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s\"%s\"", i ? ", " : "", names[i]);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) {
        if (dflt < 0) return bad(c, "missing key \"%s\" (one of %s)", p, list), 0;
        *out = dflt;
        return 1;
    }
    if (cJSON_IsString(it))
        for (int i = 0; i < n; i++)
            if (!strcmp(it->valuestring, names[i])) {
                *out = i;
                return 1;
            }
    value_str(v, sizeof v, it);
    return bad(c, "\"%s\" must be one of %s, got %s", p, list, v), 0;
}

/* ------------------------------------------------------------ encoders */

static const char *const TEXT_KEYS[] = {"modality", "layers", "vocab_size", "max_tokens",
                                        "pad_id", "positions", "pool", "causal", "rope_base",
                                        NULL};
static const char *const VISION_KEYS[] = {"modality", "layers", "channels", "image_size",
                                          "patch_size", "cls_token", "positions", "pool",
                                          "backbone", "stages", "norm_groups", NULL};
static const char *const AUDIO_KEYS[] = {"modality", "layers", "n_mels", "n_frames", "stem",
                                         "stem_activation", "positions", "pool", "patch_size",
                                         "patch_stride", "cls_token", NULL};
static const char *const STAGE_KEYS[] = {"channels", "blocks", "pool", NULL};
static const char *const STEM_KEYS[] = {"kernel", "stride", "padding", NULL};

#define BIG ((int64_t)1 << 24)

static int parse_text(ctx *c, const cJSON *o, const char *p, enc_cfg *e)
{
    int64_t pad;
    int pos, pool;
    if (!only_keys(c, o, p, TEXT_KEYS) ||
        !get_int(c, o, p, "vocab_size", 1, BIG, 1, 0, &e->vocab) ||
        !get_int(c, o, p, "max_tokens", 1, 65536, 1, 0, &e->max_tokens) ||
        !get_int(c, o, p, "pad_id", 0, BIG, 0, 0, &pad) ||
        !get_enum(c, o, p, "positions",
                  (const char *const[]){"learned", "sinusoidal", "none", "rotary"}, 4, 0, &pos) ||
        !get_enum(c, o, p, "pool", POOL_NAMES, POOL_KIND_COUNT, POOL_FIRST, &pool) ||
        !get_bool(c, o, p, "causal", 0, &e->causal) ||
        !get_float(c, o, p, "rope_base", 1, 1e9, 1, 10000.0, &e->rope_base))
        return 0;
    e->pad_id = (int32_t)pad;
    e->pos = pos == 0 ? TM_NN_POS_LEARNED : pos == 1 ? TM_NN_POS_SINUSOID : TM_NN_POS_NONE;
    if (pos != 3) e->rope_base = 0;
    else if (cJSON_GetObjectItemCaseSensitive(o, "rope_base") == NULL) e->rope_base = 10000.0;
    if (pos != 3 && cJSON_GetObjectItemCaseSensitive(o, "rope_base"))
        return bad(c, "\"%s.rope_base\" belongs to \"positions\": \"rotary\"", p), 0;
    e->pool = (pool_kind)pool;
    if (e->causal && e->pool == POOL_FIRST)
        return bad(c, "\"%s\": a causal text encoder's first token sees only itself; pool "
                      "\"mean\" or \"attention\"", p), 0;
    if (e->pad_id >= e->vocab)
        return bad(c, "\"%s.pad_id\" %d is outside the vocabulary (vocab_size %lld)", p,
                   (int)e->pad_id, (long long)e->vocab), 0;
    e->tokens = e->max_tokens;
    return 1;
}

/* "image_size": 32 or [H, W] */
static int get_size2(ctx *c, const cJSON *o, const char *p, const char *key, int64_t *h,
                     int64_t *w)
{
    char path[160], v[64];
    key_path(path, sizeof path, p, key);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it) return bad(c, "missing key \"%s\" (an integer or [height, width])", path), 0;
    if (cJSON_IsNumber(it)) return get_int(c, o, p, key, 1, 65536, 1, 0, h) && (*w = *h, 1);
    if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2) {
        const cJSON *a = cJSON_GetArrayItem(it, 0), *b = cJSON_GetArrayItem(it, 1);
        if (cJSON_IsNumber(a) && cJSON_IsNumber(b) && a->valuedouble == floor(a->valuedouble) &&
            b->valuedouble == floor(b->valuedouble) && a->valuedouble >= 1 &&
            b->valuedouble >= 1 && a->valuedouble <= 65536 && b->valuedouble <= 65536) {
            *h = (int64_t)a->valuedouble;
            *w = (int64_t)b->valuedouble;
            return 1;
        }
    }
    value_str(v, sizeof v, it);
    return bad(c, "\"%s\" must be an integer or [height, width] in 1..65536, got %s", path, v), 0;
}

/* The CNN backbone: "stages": [{"channels", "blocks", "pool"}, ...]; each
 * block a 3x3 conv, GroupNorm and the activation, then a max-pool. */
static int parse_stages(ctx *c, const cJSON *o, const char *p, enc_cfg *e)
{
    char sp[160];
    key_path(sp, sizeof sp, p, "stages");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "stages");
    if (!st) return bad(c, "missing key \"%s\" (a list of {channels, blocks, pool})", sp), 0;
    int n = cJSON_IsArray(st) ? cJSON_GetArraySize(st) : -1;
    if (n < 1 || n > TM_MODEL_MAX_STAGES)
        return bad(c, "\"%s\" must be a list of 1 to %d stages", sp, TM_MODEL_MAX_STAGES), 0;
    e->n_stages = n;
    int64_t h = e->image_h, w = e->image_w;
    for (int i = 0; i < n; i++) {
        char lp[sizeof sp + 16];
        snprintf(lp, sizeof lp, "%s[%d]", sp, i);
        const cJSON *l = cJSON_GetArrayItem(st, i);
        if (!is_object(l)) return bad(c, "\"%s\" must be an object", lp), 0;
        cnn_stage *s = &e->stages[i];
        if (!only_keys(c, l, lp, STAGE_KEYS) ||
            !get_int(c, l, lp, "channels", 1, 65536, 1, 0, &s->channels) ||
            !get_int(c, l, lp, "blocks", 1, TM_MODEL_MAX_CNN / TM_MODEL_MAX_STAGES, 0, 1,
                     &s->blocks) ||
            !get_int(c, l, lp, "pool", 1, 64, 0, 2, &s->pool))
            return 0;
        if (s->channels % e->norm_groups)
            return bad(c, "\"%s.channels\" %lld is not divisible by \"%s.norm_groups\" %lld", lp,
                       (long long)s->channels, p, (long long)e->norm_groups), 0;
        if (h % s->pool || w % s->pool)
            return bad(c, "\"%s.pool\" %lld does not divide the %lldx%lld feature map", lp,
                       (long long)s->pool, (long long)h, (long long)w), 0;
        h /= s->pool;
        w /= s->pool;
    }
    e->grid_h = h;
    e->grid_w = w;
    return 1;
}

static int parse_vision(ctx *c, const cJSON *o, const char *p, enc_cfg *e)
{
    int pos, pool, backbone;
    if (!only_keys(c, o, p, VISION_KEYS) ||
        !get_int(c, o, p, "channels", 1, 4096, 0, 3, &e->channels) ||
        !get_size2(c, o, p, "image_size", &e->image_h, &e->image_w) ||
        !get_enum(c, o, p, "backbone", (const char *const[]){"vit", "cnn"}, 2, 0, &backbone) ||
        !get_bool(c, o, p, "cls_token", 1, &e->cls_token) ||
        !get_enum(c, o, p, "positions", (const char *const[]){"learned", "sincos2d", "none"}, 3,
                  0, &pos) ||
        !get_enum(c, o, p, "pool", POOL_NAMES, POOL_KIND_COUNT, POOL_FIRST, &pool))
        return 0;
    e->cnn = backbone == 1;
    e->pos = pos == 0 ? TM_NN_POS_LEARNED : pos == 1 ? TM_NN_POS_SINCOS_2D : TM_NN_POS_NONE;
    e->pool = (pool_kind)pool;
    if (e->cnn) {
        if (cJSON_GetObjectItemCaseSensitive(o, "patch_size"))
            return bad(c, "\"%s.patch_size\" belongs to the \"vit\" backbone; the CNN's "
                          "\"stages\" set its grid", p), 0;
        if (!get_int(c, o, p, "norm_groups", 1, 4096, 0, 8, &e->norm_groups) ||
            !parse_stages(c, o, p, e))
            return 0;
    } else {
        if (cJSON_GetObjectItemCaseSensitive(o, "stages") ||
            cJSON_GetObjectItemCaseSensitive(o, "norm_groups"))
            return bad(c, "\"%s.stages\" and \"norm_groups\" belong to \"backbone\": \"cnn\"",
                       p), 0;
        if (!get_int(c, o, p, "patch_size", 1, 65536, 1, 0, &e->patch)) return 0;
        if (e->image_h % e->patch || e->image_w % e->patch)
            return bad(c, "\"%s.patch_size\" %lld does not divide \"%s.image_size\" %lldx%lld",
                       p, (long long)e->patch, p, (long long)e->image_h, (long long)e->image_w), 0;
        e->grid_h = e->image_h / e->patch;
        e->grid_w = e->image_w / e->patch;
    }
    if (e->pool == POOL_FIRST && !e->cls_token)
        return bad(c, "\"%s.pool\" \"first\" pools the CLS token; set \"cls_token\": true or "
                      "pool \"mean\"", p), 0;
    e->tokens = e->grid_h * e->grid_w + (e->cls_token ? 1 : 0);
    return 1;
}

static int parse_audio(ctx *c, const cJSON *o, const char *p, enc_cfg *e)
{
    int pos, pool, act;
    char sp[160];
    if (!only_keys(c, o, p, AUDIO_KEYS) ||
        !get_int(c, o, p, "n_mels", 1, 4096, 1, 0, &e->n_mels) ||
        !get_int(c, o, p, "n_frames", 1, 1 << 20, 1, 0, &e->n_frames) ||
        !get_enum(c, o, p, "stem_activation", (const char *const[]){"gelu", "gelu_tanh", "relu",
                                                                     "silu"},
                  4, 0, &act) ||
        !get_enum(c, o, p, "positions",
                  (const char *const[]){"sinusoidal", "learned", "none", "sincos2d"}, 4, 0, &pos) ||
        !get_enum(c, o, p, "pool", POOL_NAMES, POOL_KIND_COUNT, POOL_MEAN, &pool))
        return 0;
    e->stem_act = (tm_nn_act)act;
    e->pos = pos == 0   ? TM_NN_POS_SINUSOID
             : pos == 1 ? TM_NN_POS_LEARNED
             : pos == 3 ? TM_NN_POS_SINCOS_2D
                        : TM_NN_POS_NONE;
    e->pool = (pool_kind)pool;
    if (cJSON_GetObjectItemCaseSensitive(o, "patch_size")) {
        /* AST-style: square patches over the (n_mels, n_frames) spectrogram */
        if (cJSON_GetObjectItemCaseSensitive(o, "stem"))
            return bad(c, "\"%s\": give either \"stem\" (conv1d over frames) or \"patch_size\" "
                          "(2-D patches), not both", p), 0;
        if (!get_int(c, o, p, "patch_size", 1, 4096, 1, 0, &e->apatch) ||
            !get_int(c, o, p, "patch_stride", 1, 4096, 0, e->apatch, &e->astride) ||
            !get_bool(c, o, p, "cls_token", 0, &e->cls_token))
            return 0;
        if (e->apatch > e->n_mels || e->apatch > e->n_frames)
            return bad(c, "\"%s.patch_size\" %lld is larger than the %lldx%lld spectrogram", p,
                       (long long)e->apatch, (long long)e->n_mels, (long long)e->n_frames), 0;
        e->grid_h = (e->n_mels - e->apatch) / e->astride + 1;
        e->grid_w = (e->n_frames - e->apatch) / e->astride + 1;
        e->tokens = e->grid_h * e->grid_w + (e->cls_token ? 1 : 0);
        if (e->pool == POOL_FIRST && !e->cls_token)
            return bad(c, "\"%s.pool\" \"first\" pools the CLS token; set \"cls_token\": true",
                       p), 0;
        return 1;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "patch_stride") ||
        cJSON_GetObjectItemCaseSensitive(o, "cls_token"))
        return bad(c, "\"%s.patch_stride\" and \"cls_token\" belong to 2-D patches "
                      "(\"patch_size\")", p), 0;
    if (e->pos == TM_NN_POS_SINCOS_2D)
        return bad(c, "\"%s.positions\" \"sincos2d\" needs 2-D patches (\"patch_size\")", p), 0;
    const cJSON *stem = cJSON_GetObjectItemCaseSensitive(o, "stem");
    key_path(sp, sizeof sp, p, "stem");
    if (!stem) return bad(c, "missing key \"%s\" (a list of {kernel, stride, padding})", sp), 0;
    int n = cJSON_IsArray(stem) ? cJSON_GetArraySize(stem) : -1;
    if (n < 1 || n > TM_MODEL_MAX_STEM)
        return bad(c, "\"%s\" must be a list of 1 to %d conv layers", sp, TM_MODEL_MAX_STEM), 0;
    e->n_stem = n;
    int64_t L = e->n_frames;
    for (int i = 0; i < n; i++) {
        char lp[sizeof sp + 16];
        snprintf(lp, sizeof lp, "%s[%d]", sp, i);
        const cJSON *l = cJSON_GetArrayItem(stem, i);
        if (!is_object(l)) return bad(c, "\"%s\" must be an object", lp), 0;
        stem_cfg *s = &e->stem[i];
        if (!only_keys(c, l, lp, STEM_KEYS) || !get_int(c, l, lp, "kernel", 1, 4096, 1, 0, &s->kernel) ||
            !get_int(c, l, lp, "stride", 1, 4096, 0, 1, &s->stride) ||
            !get_int(c, l, lp, "padding", 0, 4096, 0, 0, &s->pad))
            return 0;
        int64_t next = tm_conv_out_size(L, s->kernel, s->stride, s->pad);
        if (next < 1)
            return bad(c, "\"%s\": kernel %lld does not fit %lld frames", lp, (long long)s->kernel,
                       (long long)L), 0;
        L = next;
    }
    e->tokens = L;
    return 1;
}

/* --------------------------------------------------------------- top */

static const char *const TOP_KEYS[] = {"architecture", "name", "dim", "heads", "mlp_dim",
                                       "activation", "norm_eps", "dropout", "drop_path",
                                       "encoders", "fusion", "classifier", "contrastive",
                                       "caption", "masked_token", "loss", NULL};
static const char *const FUSION_KEYS[] = {"type", "layers", "cls_token", "type_embedding",
                                          "combine", "hidden", "tokens", NULL};
static const char *const CAPTION_KEYS[] = {"layers", "max_tokens", "vocab_size", "bos_id",
                                           "eos_id", "pad_id", "context", "positions", NULL};
static const char *const MASKED_KEYS[] = {"mask_id", NULL};
static const char *const CLASSIFIER_KEYS[] = {"num_classes", NULL};
static const char *const CONTRASTIVE_KEYS[] = {"dim", "logit_scale_init", "logit_scale_max", NULL};
static const char *const LOSS_KEYS[] = {"classification", "contrastive", "caption", "masked",
                                        NULL};

static int find_enc(const model_cfg *m, enc_kind k)
{
    for (int i = 0; i < m->n_enc; i++)
        if (m->enc[i].kind == k) return i;
    return -1;
}

/* "caption": a causal decoder with cross-attention to a context. */
static int parse_caption(ctx *c, const cJSON *root, model_cfg *m)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, "caption");
    m->caption = 0;
    if (!o) return 1;
    if (!is_object(o)) return bad(c, "\"caption\" must be an object"), 0;
    const char *p = "caption";
    int ti = find_enc(m, ENC_TEXT), ctxk, pos;
    int64_t v, bos, eos, pad;
    int64_t dflt_vocab = ti >= 0 ? m->enc[ti].vocab : 0;
    if (!only_keys(c, o, p, CAPTION_KEYS) ||
        !get_int(c, o, p, "layers", 1, TM_MODEL_MAX_LAYERS, 1, 0, &v) ||
        !get_int(c, o, p, "max_tokens", 2, 4096, 1, 0, &m->caption_tokens) ||
        !get_int(c, o, p, "vocab_size", 1, BIG, dflt_vocab == 0, dflt_vocab, &m->caption_vocab) ||
        !get_int(c, o, p, "bos_id", 0, BIG, 1, 0, &bos) ||
        !get_int(c, o, p, "eos_id", 0, BIG, 1, 0, &eos) ||
        !get_int(c, o, p, "pad_id", 0, BIG, 0, ti >= 0 ? m->enc[ti].pad_id : 0, &pad) ||
        !get_enum(c, o, p, "context", (const char *const[]){"fusion", "text", "vision", "audio"},
                  4, 0, &ctxk) ||
        !get_enum(c, o, p, "positions", (const char *const[]){"learned", "sinusoidal", "rotary"},
                  3, 0, &pos))
        return 0;
    m->caption = 1;
    m->caption_layers = (int)v;
    m->caption_bos = (int32_t)bos;
    m->caption_eos = (int32_t)eos;
    m->caption_pad = (int32_t)pad;
    m->caption_pos = pos == 0 ? TM_NN_POS_LEARNED : pos == 1 ? TM_NN_POS_SINUSOID : TM_NN_POS_NONE;
    m->caption_rope = pos == 2 ? 10000.0 : 0.0;
    if (bos >= m->caption_vocab || eos >= m->caption_vocab || pad >= m->caption_vocab)
        return bad(c, "\"caption\": bos_id, eos_id and pad_id must be below vocab_size %lld",
                   (long long)m->caption_vocab), 0;
    if (pad == eos || pad == bos)
        return bad(c, "\"caption.pad_id\" must differ from bos_id and eos_id"), 0;
    if (pos == 1 && (m->dim % 2 || m->dim < 4))
        return bad(c, "\"caption.positions\": sinusoidal positions need an even \"dim\" >= 4"), 0;
    if (ctxk == 0) {
        m->caption_context = CAPTION_CONTEXT_FUSION;
    } else {
        enc_kind k = ctxk == 1 ? ENC_TEXT : ctxk == 2 ? ENC_VISION : ENC_AUDIO;
        m->caption_context = find_enc(m, k);
        if (m->caption_context < 0)
            return bad(c, "\"caption.context\" \"%s\": the model has no %s encoder",
                       ENC_NAMES[k], ENC_NAMES[k]), 0;
    }
    return 1;
}

/* "masked_token": a vocabulary head over the text encoder's tokens. */
static int parse_masked(ctx *c, const cJSON *root, model_cfg *m)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, "masked_token");
    m->masked = 0;
    if (!o) return 1;
    if (!is_object(o)) return bad(c, "\"masked_token\" must be an object"), 0;
    int ti = find_enc(m, ENC_TEXT);
    if (ti < 0) return bad(c, "\"masked_token\" needs a text encoder"), 0;
    int64_t id;
    if (!only_keys(c, o, "masked_token", MASKED_KEYS) ||
        !get_int(c, o, "masked_token", "mask_id", 0, BIG, 1, 0, &id))
        return 0;
    if (id >= m->enc[ti].vocab || id == m->enc[ti].pad_id)
        return bad(c, "\"masked_token.mask_id\" %lld must be in the vocabulary and differ from "
                      "the pad id", (long long)id), 0;
    m->masked = 1;
    m->mask_id = (int32_t)id;
    return 1;
}

static int parse_root(ctx *c, const cJSON *root, model_cfg *m)
{
    int act;
    int64_t v;
    if (!is_object(root)) return bad(c, "the config must be a JSON object"), 0;
    if (!only_keys(c, root, "", TOP_KEYS)) return 0;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architecture");
    if (arch && !(cJSON_IsString(arch) && !strcmp(arch->valuestring, "trimodal")))
        return bad(c, "\"architecture\" must be \"trimodal\""), 0;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (name && (!cJSON_IsString(name) || strlen(name->valuestring) >= sizeof m->name))
        return bad(c, "\"name\" must be a string of at most %d bytes", (int)sizeof m->name - 1), 0;
    snprintf(m->name, sizeof m->name, "%s", name ? name->valuestring : "");
    if (!get_int(c, root, "", "dim", 1, 65536, 1, 0, &m->dim) ||
        !get_int(c, root, "", "heads", 1, 4096, 1, 0, &m->heads) ||
        !get_int(c, root, "", "mlp_dim", 1, 1 << 20, 0, 4 * m->dim, &m->mlp_dim) ||
        !get_enum(c, root, "", "activation", (const char *const[]){"gelu", "gelu_tanh", "relu",
                                                                    "silu"},
                  4, 0, &act) ||
        !get_float(c, root, "", "norm_eps", 0, 1, 1, 1e-5, &m->eps) ||
        !get_float(c, root, "", "dropout", 0, 0.999, 0, 0.0, &m->dropout) ||
        !get_float(c, root, "", "drop_path", 0, 0.999, 0, 0.0, &m->drop_path))
        return 0;
    m->act = (tm_nn_act)act;
    if (m->dim % m->heads)
        return bad(c, "\"heads\" %lld does not divide \"dim\" %lld", (long long)m->heads,
                   (long long)m->dim), 0;

    /* encoders: a list, one per modality, in the order of the present mask */
    const cJSON *encs = cJSON_GetObjectItemCaseSensitive(root, "encoders");
    if (!encs) return bad(c, "missing key \"encoders\" (a list of encoder objects)"), 0;
    int n = cJSON_IsArray(encs) ? cJSON_GetArraySize(encs) : -1;
    if (n < 1 || n > TM_MODEL_MAX_ENC)
        return bad(c, "\"encoders\" must be a list of 1 to %d encoders", TM_MODEL_MAX_ENC), 0;
    m->n_enc = n;
    int seen = 0;
    for (int i = 0; i < n; i++) {
        char p[64];
        snprintf(p, sizeof p, "encoders[%d]", i);
        const cJSON *o = cJSON_GetArrayItem(encs, i);
        if (!is_object(o)) return bad(c, "\"%s\" must be an object", p), 0;
        enc_cfg *e = &m->enc[i];
        int kind;
        if (!get_enum(c, o, p, "modality", ENC_NAMES, ENC_KIND_COUNT, -1, &kind)) return 0;
        e->kind = (enc_kind)kind;
        if (seen & (1 << kind))
            return bad(c, "\"%s.modality\": a second \"%s\" encoder", p, ENC_NAMES[kind]), 0;
        seen |= 1 << kind;
        if (!get_int(c, o, p, "layers", 0, TM_MODEL_MAX_LAYERS, 1, 0, &v)) return 0;
        e->layers = (int)v;
        int ok = kind == ENC_TEXT ? parse_text(c, o, p, e)
                 : kind == ENC_VISION ? parse_vision(c, o, p, e) : parse_audio(c, o, p, e);
        if (!ok) return 0;
        if (e->pos == TM_NN_POS_SINUSOID && (m->dim % 2 || m->dim < 4))
            return bad(c, "\"%s.positions\": sinusoidal positions need an even \"dim\" >= 4", p), 0;
        if (e->rope_base > 0 && (m->dim / m->heads) % 2)
            return bad(c, "\"%s.positions\": rotary positions need an even head width "
                          "(dim / heads)", p), 0;
        if (e->pos == TM_NN_POS_SINCOS_2D && m->dim % 4)
            return bad(c, "\"%s.positions\": 2-D sin-cos positions need \"dim\" divisible by 4",
                       p), 0;
    }

    /* fusion */
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, "fusion");
    if (!is_object(f)) return bad(c, "missing object \"fusion\""), 0;
    int type, comb;
    if (!only_keys(c, f, "fusion", FUSION_KEYS) ||
        !get_enum(c, f, "fusion", "type", FUSION_NAMES, FUSION_KIND_COUNT, -1, &type))
        return 0;
    m->fusion = (fusion_kind)type;
    if (m->fusion == FUSION_EARLY) {
        if (!get_int(c, f, "fusion", "layers", 0, TM_MODEL_MAX_LAYERS, 1, 0, &v) ||
            !get_bool(c, f, "fusion", "cls_token", 1, &m->fusion_cls) ||
            !get_bool(c, f, "fusion", "type_embedding", 1, &m->fusion_type_emb))
            return 0;
        m->fusion_layers = (int)v;
        m->fusion_tokens = m->fusion_cls ? 1 : 0;
        for (int i = 0; i < n; i++) m->fusion_tokens += m->enc[i].tokens;
        if (cJSON_GetObjectItemCaseSensitive(f, "combine") ||
            cJSON_GetObjectItemCaseSensitive(f, "hidden"))
            return bad(c, "\"fusion.combine\" and \"fusion.hidden\" belong to late fusion"), 0;
    } else if (m->fusion == FUSION_LATE) {
        if (!get_enum(c, f, "fusion", "combine", COMBINE_NAMES, COMBINE_KIND_COUNT, COMBINE_CONCAT,
                      &comb) ||
            !get_int(c, f, "fusion", "hidden", 0, 1 << 20, 0, 0, &m->fusion_hidden))
            return 0;
        m->combine = (combine_kind)comb;
        if (cJSON_GetObjectItemCaseSensitive(f, "layers") ||
            cJSON_GetObjectItemCaseSensitive(f, "cls_token") ||
            cJSON_GetObjectItemCaseSensitive(f, "type_embedding"))
            return bad(c, "late fusion has no \"layers\", \"cls_token\" or \"type_embedding\""), 0;
    } else {
        const char *what = m->fusion == FUSION_CROSS ? "cross-attention" : "bottleneck";
        if (!get_int(c, f, "fusion", "layers", 1, TM_MODEL_MAX_CROSS_LAYERS, 1, 0, &v)) return 0;
        m->fusion_layers = (int)v;
        if (n < 2) return bad(c, "%s fusion needs at least two encoders", what), 0;
        if (cJSON_GetObjectItemCaseSensitive(f, "combine") ||
            cJSON_GetObjectItemCaseSensitive(f, "hidden") ||
            cJSON_GetObjectItemCaseSensitive(f, "cls_token") ||
            cJSON_GetObjectItemCaseSensitive(f, "type_embedding"))
            return bad(c, "%s fusion takes only \"type\", \"layers\"%s", what,
                       m->fusion == FUSION_BOTTLENECK ? " and \"tokens\"" : ""), 0;
        if (m->fusion == FUSION_CROSS && cJSON_GetObjectItemCaseSensitive(f, "tokens"))
            return bad(c, "\"fusion.tokens\" belongs to bottleneck fusion"), 0;
        if (m->fusion == FUSION_BOTTLENECK &&
            !get_int(c, f, "fusion", "tokens", 1, 4096, 0, 4, &m->bottleneck))
            return 0;
    }
    if (m->fusion == FUSION_EARLY && cJSON_GetObjectItemCaseSensitive(f, "tokens"))
        return bad(c, "\"fusion.tokens\" belongs to bottleneck fusion"), 0;

    /* heads */
    const cJSON *cl = cJSON_GetObjectItemCaseSensitive(root, "classifier");
    m->num_classes = 0;
    if (cl) {
        if (!is_object(cl)) return bad(c, "\"classifier\" must be an object"), 0;
        if (!only_keys(c, cl, "classifier", CLASSIFIER_KEYS) ||
            !get_int(c, cl, "classifier", "num_classes", 1, 1 << 20, 1, 0, &m->num_classes))
            return 0;
        if (m->fusion == FUSION_EARLY && !m->fusion_cls)
            return bad(c, "\"classifier\" reads the fusion CLS token: set \"fusion.cls_token\": "
                          "true"), 0;
    }
    const cJSON *co = cJSON_GetObjectItemCaseSensitive(root, "contrastive");
    m->embed_dim = 0;
    m->logit_scale_init = log(1.0 / 0.07);
    m->logit_scale_max = log(100.0);
    if (co) {
        if (!is_object(co)) return bad(c, "\"contrastive\" must be an object"), 0;
        if (!only_keys(c, co, "contrastive", CONTRASTIVE_KEYS) ||
            !get_int(c, co, "contrastive", "dim", 1, 65536, 1, 0, &m->embed_dim) ||
            !get_float(c, co, "contrastive", "logit_scale_init", -100, 100, 0,
                       m->logit_scale_init, &m->logit_scale_init) ||
            !get_float(c, co, "contrastive", "logit_scale_max", -100, 100, 0, m->logit_scale_max,
                       &m->logit_scale_max))
            return 0;
        if (n < 2) return bad(c, "\"contrastive\" needs at least two encoders"), 0;
    }
    if (!parse_caption(c, root, m) || !parse_masked(c, root, m)) return 0;
    if (!m->num_classes && !m->embed_dim && !m->caption && !m->masked)
        return bad(c, "the model has no head: give \"classifier\", \"contrastive\", "
                      "\"caption\" or \"masked_token\""), 0;

    const cJSON *lo = cJSON_GetObjectItemCaseSensitive(root, "loss");
    m->w_class = m->w_contrastive = m->w_caption = m->w_masked = 1.0;
    if (lo) {
        if (!is_object(lo)) return bad(c, "\"loss\" must be an object"), 0;
        if (!only_keys(c, lo, "loss", LOSS_KEYS) ||
            !get_float(c, lo, "loss", "classification", 0, 1e6, 0, 1.0, &m->w_class) ||
            !get_float(c, lo, "loss", "contrastive", 0, 1e6, 0, 1.0, &m->w_contrastive) ||
            !get_float(c, lo, "loss", "caption", 0, 1e6, 0, 1.0, &m->w_caption) ||
            !get_float(c, lo, "loss", "masked", 0, 1e6, 0, 1.0, &m->w_masked))
            return 0;
    }
    return 1;
}

tm_status tm_model_cfg_parse(model_cfg *m, const char *json, size_t len, const char *origin)
{
    ctx c = {origin && *origin ? origin : "<memory>", TM_OK};
    memset(m, 0, sizeof *m);
    const char *end = NULL;
    tm_status ds = tm_json_check_depth(json, len, c.origin);
    if (ds) return ds;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        int line = 1;
        for (size_t i = 0; i < at && i < len; i++) line += json[i] == '\n';
        return bad(&c, "not valid JSON (near byte %zu, line %d)", at, line);
    }
    parse_root(&c, root, m);
    cJSON_Delete(root);
    return c.status;
}

/* ------------------------------------------------------------ writing */

static cJSON *enc_json(const enc_cfg *e)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "modality", ENC_NAMES[e->kind]);
    cJSON_AddNumberToObject(o, "layers", e->layers);
    if (e->kind == ENC_TEXT) {
        cJSON_AddNumberToObject(o, "vocab_size", (double)e->vocab);
        cJSON_AddNumberToObject(o, "max_tokens", (double)e->max_tokens);
        cJSON_AddNumberToObject(o, "pad_id", e->pad_id);
        cJSON_AddBoolToObject(o, "causal", e->causal);
        if (e->rope_base > 0) cJSON_AddNumberToObject(o, "rope_base", e->rope_base);
    } else if (e->kind == ENC_VISION) {
        cJSON_AddNumberToObject(o, "channels", (double)e->channels);
        if (e->image_h == e->image_w) {
            cJSON_AddNumberToObject(o, "image_size", (double)e->image_h);
        } else {
            cJSON *a = cJSON_CreateArray();
            cJSON_AddItemToArray(a, cJSON_CreateNumber((double)e->image_h));
            cJSON_AddItemToArray(a, cJSON_CreateNumber((double)e->image_w));
            cJSON_AddItemToObject(o, "image_size", a);
        }
        cJSON_AddStringToObject(o, "backbone", e->cnn ? "cnn" : "vit");
        if (e->cnn) {
            cJSON_AddNumberToObject(o, "norm_groups", (double)e->norm_groups);
            cJSON *st = cJSON_AddArrayToObject(o, "stages");
            for (int i = 0; st && i < e->n_stages; i++) {
                cJSON *l = cJSON_CreateObject();
                cJSON_AddNumberToObject(l, "channels", (double)e->stages[i].channels);
                cJSON_AddNumberToObject(l, "blocks", (double)e->stages[i].blocks);
                cJSON_AddNumberToObject(l, "pool", (double)e->stages[i].pool);
                cJSON_AddItemToArray(st, l);
            }
        } else {
            cJSON_AddNumberToObject(o, "patch_size", (double)e->patch);
        }
        cJSON_AddBoolToObject(o, "cls_token", e->cls_token);
    } else if (e->apatch) {
        cJSON_AddNumberToObject(o, "n_mels", (double)e->n_mels);
        cJSON_AddNumberToObject(o, "n_frames", (double)e->n_frames);
        cJSON_AddNumberToObject(o, "patch_size", (double)e->apatch);
        cJSON_AddNumberToObject(o, "patch_stride", (double)e->astride);
        cJSON_AddBoolToObject(o, "cls_token", e->cls_token);
    } else {
        cJSON_AddNumberToObject(o, "n_mels", (double)e->n_mels);
        cJSON_AddNumberToObject(o, "n_frames", (double)e->n_frames);
        cJSON *st = cJSON_AddArrayToObject(o, "stem");
        for (int i = 0; st && i < e->n_stem; i++) {
            cJSON *l = cJSON_CreateObject();
            cJSON_AddNumberToObject(l, "kernel", (double)e->stem[i].kernel);
            cJSON_AddNumberToObject(l, "stride", (double)e->stem[i].stride);
            cJSON_AddNumberToObject(l, "padding", (double)e->stem[i].pad);
            cJSON_AddItemToArray(st, l);
        }
        cJSON_AddStringToObject(o, "stem_activation", tm_nn_act_name(e->stem_act));
    }
    cJSON_AddStringToObject(o, "positions", e->rope_base > 0 ? "rotary" : tm_nn_pos_name(e->pos));
    cJSON_AddStringToObject(o, "pool", POOL_NAMES[e->pool]);
    return o;
}

char *tm_model_cfg_to_json(const model_cfg *m)
{
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    cJSON_AddStringToObject(r, "architecture", "trimodal");
    if (m->name[0]) cJSON_AddStringToObject(r, "name", m->name);
    cJSON_AddNumberToObject(r, "dim", (double)m->dim);
    cJSON_AddNumberToObject(r, "heads", (double)m->heads);
    cJSON_AddNumberToObject(r, "mlp_dim", (double)m->mlp_dim);
    cJSON_AddStringToObject(r, "activation", tm_nn_act_name(m->act));
    cJSON_AddNumberToObject(r, "norm_eps", m->eps);
    cJSON_AddNumberToObject(r, "dropout", m->dropout);
    cJSON_AddNumberToObject(r, "drop_path", m->drop_path);
    cJSON *encs = cJSON_AddArrayToObject(r, "encoders");
    for (int i = 0; encs && i < m->n_enc; i++) cJSON_AddItemToArray(encs, enc_json(&m->enc[i]));
    cJSON *f = cJSON_AddObjectToObject(r, "fusion");
    if (f) {
        cJSON_AddStringToObject(f, "type", FUSION_NAMES[m->fusion]);
        if (m->fusion == FUSION_EARLY) {
            cJSON_AddNumberToObject(f, "layers", m->fusion_layers);
            cJSON_AddBoolToObject(f, "cls_token", m->fusion_cls);
            cJSON_AddBoolToObject(f, "type_embedding", m->fusion_type_emb);
        } else if (m->fusion == FUSION_LATE) {
            cJSON_AddStringToObject(f, "combine", COMBINE_NAMES[m->combine]);
            cJSON_AddNumberToObject(f, "hidden", (double)m->fusion_hidden);
        } else {
            cJSON_AddNumberToObject(f, "layers", m->fusion_layers);
            if (m->fusion == FUSION_BOTTLENECK)
                cJSON_AddNumberToObject(f, "tokens", (double)m->bottleneck);
        }
    }
    if (m->num_classes) {
        cJSON *cl = cJSON_AddObjectToObject(r, "classifier");
        if (cl) cJSON_AddNumberToObject(cl, "num_classes", (double)m->num_classes);
    }
    if (m->embed_dim) {
        cJSON *co = cJSON_AddObjectToObject(r, "contrastive");
        if (co) {
            cJSON_AddNumberToObject(co, "dim", (double)m->embed_dim);
            cJSON_AddNumberToObject(co, "logit_scale_init", m->logit_scale_init);
            cJSON_AddNumberToObject(co, "logit_scale_max", m->logit_scale_max);
        }
    }
    if (m->caption) {
        cJSON *cp = cJSON_AddObjectToObject(r, "caption");
        if (cp) {
            cJSON_AddNumberToObject(cp, "layers", m->caption_layers);
            cJSON_AddNumberToObject(cp, "max_tokens", (double)m->caption_tokens);
            cJSON_AddNumberToObject(cp, "vocab_size", (double)m->caption_vocab);
            cJSON_AddNumberToObject(cp, "bos_id", m->caption_bos);
            cJSON_AddNumberToObject(cp, "eos_id", m->caption_eos);
            cJSON_AddNumberToObject(cp, "pad_id", m->caption_pad);
            cJSON_AddStringToObject(cp, "context", m->caption_context == CAPTION_CONTEXT_FUSION
                                                       ? "fusion"
                                                       : ENC_NAMES[m->enc[m->caption_context].kind]);
            cJSON_AddStringToObject(cp, "positions", m->caption_rope > 0 ? "rotary"
                                                     : tm_nn_pos_name(m->caption_pos));
        }
    }
    if (m->masked) {
        cJSON *mk = cJSON_AddObjectToObject(r, "masked_token");
        if (mk) cJSON_AddNumberToObject(mk, "mask_id", m->mask_id);
    }
    cJSON *lo = cJSON_AddObjectToObject(r, "loss");
    if (lo) {
        cJSON_AddNumberToObject(lo, "classification", m->w_class);
        cJSON_AddNumberToObject(lo, "contrastive", m->w_contrastive);
        if (m->caption) cJSON_AddNumberToObject(lo, "caption", m->w_caption);
        if (m->masked) cJSON_AddNumberToObject(lo, "masked", m->w_masked);
    }
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    if (!s) return NULL;
    size_t n = strlen(s);
    char *out = tm_alloc(n + 2);
    if (out) {
        memcpy(out, s, n);
        out[n] = '\n';
        out[n + 1] = 0;
    }
    cJSON_free(s);
    return out;
}
