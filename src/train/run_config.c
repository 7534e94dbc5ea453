/*
 * Run configs: the strict parser (every key checked, messages naming the
 * key path), the canonical JSON form, the hash that ties a checkpoint to
 * its config, and the objective weight schedules.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "trimodal/io.h"
#include "trimodal/train.h"

static const char *const LOSS_NAMES[TM_LOSS_COUNT] = {"classification", "contrastive", "caption",
                                                      "masked"};
static const char *const WEIGHT_NAMES[TM_WEIGHT_KIND_COUNT] = {"constant", "linear", "cosine"};
static const char *const LR_NAMES[TM_LR_KIND_COUNT] = {"constant", "cosine", "step"};
static const char *const MODALITY_NAMES[4] = {"text", "vision", "audio", NULL};
static const char *const LOSS_KEYS[TM_LOSS_COUNT + 1] = {"classification", "contrastive",
                                                         "caption", "masked", NULL};

const char *tm_loss_name(tm_loss_kind k)
{
    return (unsigned)k < TM_LOSS_COUNT ? LOSS_NAMES[k] : NULL;
}

double tm_objective_weight_at(const tm_objective *o, int64_t t, int64_t stage_steps)
{
    if (!o || !o->enabled) return 0.0;
    if (o->schedule == TM_WEIGHT_CONSTANT) return o->weight;
    int64_t n = o->steps > 0 ? o->steps : stage_steps;
    double f = n > 0 ? (double)(t < 0 ? 0 : t) / (double)n : 1.0;
    if (f > 1.0) f = 1.0;
    double s;
    if (o->schedule == TM_WEIGHT_LINEAR) {
        s = o->from + (o->to - o->from) * f;
    } else {
        const double pi = 3.14159265358979323846;
        s = o->to + (o->from - o->to) * (1.0 + cos(pi * f)) * 0.5;
    }
    return o->weight * s;
}

/* ------------------------------------------------------------- parsing */

typedef struct {
    const char *origin;
} pctx;

/* "prefix.key" or "key" into buf. */
static const char *key_path(char *buf, size_t cap, const char *prefix, const char *key)
{
    if (prefix && *prefix) snprintf(buf, cap, "%s.%s", prefix, key);
    else snprintf(buf, cap, "%s", key);
    return buf;
}

static tm_status bad(const pctx *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static tm_status bad(const pctx *p, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tm_fail(TM_ERR_INVALID, "run config %s: %s", p->origin, msg);
}

static tm_status check_keys(const pctx *p, const cJSON *obj, const char *prefix,
                            const char *const *allowed)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        for (const cJSON *o = obj->child; o != it; o = o->next)
            if (it->string && o->string && !strcmp(o->string, it->string)) {
                char kp[256];
                return bad(p, "\"%s\" appears twice", key_path(kp, sizeof kp, prefix, it->string));
            }
        int ok = 0;
        for (int i = 0; allowed[i]; i++)
            if (it->string && !strcmp(it->string, allowed[i])) ok = 1;
        if (!ok) {
            char list[512] = "";
            for (int i = 0; allowed[i]; i++) {
                size_t l = strlen(list);
                snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", allowed[i]);
            }
            char kp[256];
            return bad(p, "unknown key \"%s\" (allowed here: %s)",
                       key_path(kp, sizeof kp, prefix, it->string ? it->string : "?"), list);
        }
    }
    return TM_OK;
}

static char *dup_str(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

/* Each getter leaves *out alone when the key is absent. */
static tm_status get_number(const pctx *p, const cJSON *obj, const char *prefix, const char *key,
                            double lo, double hi, int lo_open, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return TM_OK;
    char kp[256];
    key_path(kp, sizeof kp, prefix, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return bad(p, "\"%s\" must be a number", kp);
    double x = v->valuedouble;
    if ((lo_open ? !(x > lo) : !(x >= lo)) || !(x <= hi))
        return bad(p, "\"%s\" is %g; it must be in %s%g, %g]", kp, x, lo_open ? "(" : "[", lo, hi);
    *out = x;
    return TM_OK;
}

static tm_status get_float(const pctx *p, const cJSON *obj, const char *prefix, const char *key,
                           double lo, double hi, int lo_open, float *out)
{
    double d = *out;
    tm_status s = get_number(p, obj, prefix, key, lo, hi, lo_open, &d);
    if (!s) *out = (float)d;
    return s;
}

static tm_status get_int(const pctx *p, const cJSON *obj, const char *prefix, const char *key,
                         int64_t lo, int64_t hi, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return TM_OK;
    char kp[256];
    key_path(kp, sizeof kp, prefix, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        !(fabs(v->valuedouble) < 9007199254740992.0))
        return bad(p, "\"%s\" must be an integer", kp);
    double x = v->valuedouble;
    if (x < (double)lo || x > (double)hi)
        return bad(p, "\"%s\" is %.0f; it must be in [%lld, %lld]", kp, x, (long long)lo,
                   (long long)hi);
    *out = (int64_t)x;
    return TM_OK;
}

static tm_status get_bool(const pctx *p, const cJSON *obj, const char *prefix, const char *key,
                          int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return TM_OK;
    char kp[256];
    if (!cJSON_IsBool(v))
        return bad(p, "\"%s\" must be true or false", key_path(kp, sizeof kp, prefix, key));
    *out = cJSON_IsTrue(v);
    return TM_OK;
}

/* A string; replaces *out (freeing the old one). allow_null: JSON null
 * gives NULL. */
static tm_status get_string(const pctx *p, const cJSON *obj, const char *prefix, const char *key,
                            int allow_null, char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return TM_OK;
    char kp[256];
    key_path(kp, sizeof kp, prefix, key);
    if (allow_null && cJSON_IsNull(v)) {
        free(*out);
        *out = NULL;
        return TM_OK;
    }
    if (!cJSON_IsString(v) || !v->valuestring)
        return bad(p, "\"%s\" must be a string%s", kp, allow_null ? " or null" : "");
    char *d = dup_str(v->valuestring);
    if (!d) return tm_fail(TM_ERR_NOMEM, "run config: out of memory");
    free(*out);
    *out = d;
    return TM_OK;
}

/* One of names[0..n); the index into *out. */
static tm_status get_enum(const pctx *p, const cJSON *obj, const char *prefix, const char *key,
                          const char *const *names, int n, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return TM_OK;
    char kp[256], list[256] = "";
    key_path(kp, sizeof kp, prefix, key);
    for (int i = 0; i < n; i++) {
        if (cJSON_IsString(v) && !strcmp(v->valuestring, names[i])) {
            *out = i;
            return TM_OK;
        }
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", names[i]);
    }
    if (!cJSON_IsString(v)) return bad(p, "\"%s\" must be a string (one of %s)", kp, list);
    return bad(p, "\"%s\" is \"%s\"; it must be one of %s", kp, v->valuestring, list);
}

/* An array of up to max strings, replacing names[0..*n). */
static tm_status get_names(const pctx *p, const cJSON *obj, const char *prefix, const char *key,
                           int max, char **names, int *n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return TM_OK;
    char kp[256];
    key_path(kp, sizeof kp, prefix, key);
    if (!cJSON_IsArray(v)) return bad(p, "\"%s\" must be an array of strings", kp);
    int count = cJSON_GetArraySize(v);
    if (count > max) return bad(p, "\"%s\" has %d entries; at most %d", kp, count, max);
    int i = 0;
    for (const cJSON *it = v->child; it; it = it->next, i++)
        if (!cJSON_IsString(it) || !it->valuestring || !it->valuestring[0])
            return bad(p, "\"%s[%d]\" must be a non-empty string", kp, i);
    for (int k = 0; k < *n; k++) {
        free(names[k]);
        names[k] = NULL;
    }
    *n = 0;
    for (const cJSON *it = v->child; it; it = it->next) {
        names[*n] = dup_str(it->valuestring);
        if (!names[*n]) return tm_fail(TM_ERR_NOMEM, "run config: out of memory");
        (*n)++;
    }
    return TM_OK;
}

static tm_status get_object(const pctx *p, const cJSON *obj, const char *prefix, const char *key,
                            const cJSON **out)
{
    *out = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (*out && !cJSON_IsObject(*out)) {
        char kp[256];
        return bad(p, "\"%s\" must be an object", key_path(kp, sizeof kp, prefix, key));
    }
    return TM_OK;
}

#define TRY(x)                                                                           \
    do {                                                                                 \
        tm_status s_ = (x);                                                              \
        if (s_) return s_;                                                               \
    } while (0)

/* ---------------------------------------------------------------- data */

static void data_defaults(tm_train_data *d)
{
    memset(d, 0, sizeof *d);
    d->n_modalities = -1;
    d->synth_examples = 256;
    d->synth_val = 64;
    d->synth_noise = 0.5;
    d->synth_seed = 1;
    d->aug = tm_loader_aug_default();
}

static void data_free(tm_train_data *d)
{
    free(d->manifest);
    free(d->tokenizer);
    free(d->preprocess);
    free(d->train_split);
    free(d->val_split);
    for (int i = 0; i < TM_MODEL_MAX_MODALITIES; i++) free(d->modalities[i]);
    memset(d, 0, sizeof *d);
}

static tm_status data_copy(tm_train_data *dst, const tm_train_data *src)
{
    *dst = *src;
    dst->manifest = dup_str(src->manifest);
    dst->tokenizer = dup_str(src->tokenizer);
    dst->preprocess = dup_str(src->preprocess);
    dst->train_split = dup_str(src->train_split);
    dst->val_split = dup_str(src->val_split);
    int oom = (src->manifest && !dst->manifest) || (src->train_split && !dst->train_split) ||
              (src->val_split && !dst->val_split) || (src->tokenizer && !dst->tokenizer) ||
              (src->preprocess && !dst->preprocess);
    for (int i = 0; i < TM_MODEL_MAX_MODALITIES; i++) {
        dst->modalities[i] = dup_str(src->modalities[i]);
        if (src->modalities[i] && !dst->modalities[i]) oom = 1;
    }
    if (oom) {
        data_free(dst);
        return tm_fail(TM_ERR_NOMEM, "run config: out of memory");
    }
    return TM_OK;
}

static const char *const DATA_KEYS[] = {"manifest", "tokenizer", "preprocess", "train_split",
                                        "val_split", "workers",
                                        "modalities", "modality_dropout", "synthetic",
                                        "augment", NULL};
static const char *const SYNTH_KEYS[] = {"examples", "val_examples", "noise", "missing", "seed",
                                         "nan_after", NULL};

/* ------------------------------------------------------- augmentations */

static const char *const AUG_KEYS[] = {"image", "audio", "text", NULL};
static const char *const AUG_IMAGE_KEYS[] = {"crop", "flip", "rotate", "jitter", "erase", NULL};
static const char *const AUG_CROP_KEYS[] = {"scale", "ratio", NULL};
static const char *const AUG_ROTATE_KEYS[] = {"degrees", "fill", NULL};
static const char *const AUG_JITTER_KEYS[] = {"brightness", "contrast", "saturation", "hue",
                                              NULL};
static const char *const AUG_ERASE_KEYS[] = {"p", "scale", "ratio", "value", "noise", NULL};
static const char *const AUG_AUDIO_KEYS[] = {"specaug", "wave", NULL};
static const char *const AUG_WAVE_KEYS[] = {"stretch", "pitch", "shift", "reverb", "gain",
                                            "noise", NULL};
/* each step's keys: "p", then its settings */
static const char *const AUG_STEP_KEYS[6][4] = {
    {"p", "rate", NULL}, {"p", "semitones", NULL}, {"p", "max_s", "wrap", NULL},
    {"p", "rt60", "wet", NULL}, {"p", "db", NULL}, {"p", "snr_db", NULL}};
static const char *const AUG_SPEC_KEYS[] = {"n_freq_masks", "freq_param", "n_time_masks",
                                            "time_param", "time_max_frac", "fill_mean",
                                            "fill_value", NULL};
static const char *const AUG_TEXT_KEYS[] = {"delete", NULL};

/* "key": [low, high], two numbers in [min, max] ((min, max] with lo_open),
 * low <= high. */
static tm_status get_range(const pctx *p, const cJSON *obj, const char *prefix, const char *key,
                           double min, double max, int lo_open, float out[2])
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return TM_OK;
    char kp[256];
    key_path(kp, sizeof kp, prefix, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2 || !cJSON_IsNumber(v->child) ||
        !cJSON_IsNumber(v->child->next))
        return bad(p, "\"%s\" must be an array of two numbers [low, high]", kp);
    double x[2] = {v->child->valuedouble, v->child->next->valuedouble};
    for (int k = 0; k < 2; k++)
        if (!isfinite(x[k]) || (lo_open ? !(x[k] > min) : !(x[k] >= min)) || !(x[k] <= max))
            return bad(p, "\"%s[%d]\" is %g; it must be in %s%g, %g]", kp, k, x[k],
                       lo_open ? "(" : "[", min, max);
    if (x[0] > x[1])
        return bad(p, "\"%s\" is [%g, %g]; the low end must not exceed the high end", kp, x[0],
                   x[1]);
    out[0] = (float)x[0];
    out[1] = (float)x[1];
    return TM_OK;
}

enum { SW_OFF, SW_DEFAULT, SW_OBJECT, SW_NUMBER };

/* One augmentation's value: absent or false (SW_OFF), true (SW_DEFAULT: the
 * front-end's defaults), an object (SW_OBJECT, when objects are allowed)
 * or a number (SW_NUMBER, when numbers are allowed); `what` says what else
 * it may be, for the message. */
static tm_status aug_switch(const pctx *p, const cJSON *obj, const char *prefix, const char *key,
                            int allow_obj, int allow_num, const char *what, int *kind)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *kind = SW_OFF;
    if (!v || cJSON_IsFalse(v)) return TM_OK;
    if (cJSON_IsTrue(v)) *kind = SW_DEFAULT;
    else if (allow_obj && cJSON_IsObject(v)) *kind = SW_OBJECT;
    else if (allow_num && cJSON_IsNumber(v)) *kind = SW_NUMBER;
    else {
        char kp[256];
        return bad(p, "\"%s\" must be true, false or %s", key_path(kp, sizeof kp, prefix, key),
                   what);
    }
    return TM_OK;
}

static tm_status parse_aug_image(const pctx *p, const cJSON *im, const char *kp, tm_loader_aug *a)
{
    char sub[320];
    int k;
    tm_image_aug_params *q = &a->image;
    TRY(check_keys(p, im, kp, AUG_IMAGE_KEYS));

    TRY(aug_switch(p, im, kp, "crop", 1, 0, "an object {\"scale\": [lo, hi], \"ratio\": [lo, hi]}",
                   &k));
    a->image_crop = k != SW_OFF;
    if (k == SW_OBJECT) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(im, "crop");
        key_path(sub, sizeof sub, kp, "crop");
        TRY(check_keys(p, o, sub, AUG_CROP_KEYS));
        TRY(get_range(p, o, sub, "scale", 0, 1, 1, q->crop_scale));
        TRY(get_range(p, o, sub, "ratio", 0, 100, 1, q->crop_ratio));
    }

    TRY(aug_switch(p, im, kp, "flip", 0, 1, "a probability in [0, 1]", &k));
    a->image_flip = k != SW_OFF;
    if (k == SW_NUMBER) TRY(get_float(p, im, kp, "flip", 0, 1, 0, &q->flip_p));

    TRY(aug_switch(p, im, kp, "rotate", 1, 1,
                   "a number of degrees in (0, 180] or {\"degrees\": d, \"fill\": f}", &k));
    a->image_rotate = k != SW_OFF;
    if (k == SW_NUMBER) TRY(get_float(p, im, kp, "rotate", 0, 180, 1, &q->rotate_degrees));
    if (k == SW_OBJECT) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(im, "rotate");
        key_path(sub, sizeof sub, kp, "rotate");
        TRY(check_keys(p, o, sub, AUG_ROTATE_KEYS));
        TRY(get_float(p, o, sub, "degrees", 0, 180, 1, &q->rotate_degrees));
        TRY(get_float(p, o, sub, "fill", 0, 1, 0, &q->rotate_fill));
    }

    TRY(aug_switch(p, im, kp, "jitter", 1, 0,
                   "an object {\"brightness\", \"contrast\", \"saturation\", \"hue\"}", &k));
    a->image_jitter = k != SW_OFF;
    if (k == SW_OBJECT) {
        /* the object form names the adjustments wanted; the others are off */
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(im, "jitter");
        key_path(sub, sizeof sub, kp, "jitter");
        TRY(check_keys(p, o, sub, AUG_JITTER_KEYS));
        q->brightness = q->contrast = q->saturation = q->hue = 0;
        TRY(get_float(p, o, sub, "brightness", 0, 100, 0, &q->brightness));
        TRY(get_float(p, o, sub, "contrast", 0, 100, 0, &q->contrast));
        TRY(get_float(p, o, sub, "saturation", 0, 100, 0, &q->saturation));
        TRY(get_float(p, o, sub, "hue", 0, 0.5, 0, &q->hue));
        if (!(q->brightness > 0 || q->contrast > 0 || q->saturation > 0 || q->hue > 0))
            return bad(p, "\"%s\" changes nothing: give brightness, contrast, saturation or hue "
                          "above 0 (or remove it)", sub);
    }

    TRY(aug_switch(p, im, kp, "erase", 1, 0,
                   "an object {\"p\", \"scale\", \"ratio\", \"value\", \"noise\"}", &k));
    a->image_erase = k != SW_OFF;
    if (k == SW_OBJECT) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(im, "erase");
        key_path(sub, sizeof sub, kp, "erase");
        TRY(check_keys(p, o, sub, AUG_ERASE_KEYS));
        TRY(get_float(p, o, sub, "p", 0, 1, 0, &q->erase_p));
        TRY(get_range(p, o, sub, "scale", 0, 1, 1, q->erase_scale));
        if (!(q->erase_scale[0] < 1))
            return bad(p, "\"%s.scale\" must allow an area below the whole image (low end < 1)",
                       sub);
        TRY(get_range(p, o, sub, "ratio", 0, 100, 1, q->erase_ratio));
        TRY(get_float(p, o, sub, "value", -1e6, 1e6, 0, &q->erase_value));
        TRY(get_bool(p, o, sub, "noise", &q->erase_noise));
        if (q->erase_noise && cJSON_GetObjectItemCaseSensitive(o, "value"))
            return bad(p, "\"%s\": give \"value\" or \"noise\": true, not both", sub);
    }
    return TM_OK;
}

/* "wave": {"stretch": ..., "pitch": ..., ...}: each step true (p 0.5 and
 * tm_audio_aug_default_params()'s amounts) or an object; at least one. */
static tm_status parse_aug_wave(const pctx *p, const cJSON *w, const char *kp, tm_loader_aug *a)
{
    char sub[360];
    tm_audio_aug_params *q = &a->audio;
    if (!cJSON_IsObject(w))
        return bad(p, "\"%s\" must be an object naming its steps, e.g. {\"gain\": true, "
                      "\"noise\": {\"p\": 0.5, \"snr_db\": [10, 40]}}", kp);
    TRY(check_keys(p, w, kp, AUG_WAVE_KEYS));
    float *probs[6] = {&q->p_stretch, &q->p_pitch, &q->p_shift, &q->p_reverb, &q->p_gain,
                       &q->p_noise};
    float *lo[6] = {&q->stretch_min, &q->pitch_min, NULL, &q->rt60_min, &q->gain_min_db,
                    &q->snr_min_db};
    float *hi[6] = {&q->stretch_max, &q->pitch_max, NULL, &q->rt60_max, &q->gain_max_db,
                    &q->snr_max_db};
    const double rmin[6] = {0.25, -24, 0, 0.001, -100, -100}, rmax[6] = {4, 24, 0, 10, 100, 200};
    int any = 0;
    for (int i = 0; i < 6; i++) {
        int k;
        const char *name = AUG_WAVE_KEYS[i];
        TRY(aug_switch(p, w, kp, name, 1, 0, "an object {\"p\", ...}", &k));
        if (k == SW_OFF) continue;
        any = 1;
        *probs[i] = 0.5f;
        if (k != SW_OBJECT) continue;
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(w, name);
        key_path(sub, sizeof sub, kp, name);
        TRY(check_keys(p, o, sub, AUG_STEP_KEYS[i]));
        TRY(get_float(p, o, sub, "p", 0, 1, 1, probs[i]));
        if (lo[i]) {
            float r[2] = {*lo[i], *hi[i]};
            TRY(get_range(p, o, sub, AUG_STEP_KEYS[i][1], rmin[i], rmax[i], 0, r));
            *lo[i] = r[0];
            *hi[i] = r[1];
        }
    }
    if (!any) return bad(p, "\"%s\" names no step (stretch, pitch, shift, reverb, gain, noise)", kp);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(w, "shift");
    if (cJSON_IsObject(o)) {
        key_path(sub, sizeof sub, kp, "shift");
        TRY(get_float(p, o, sub, "max_s", 0, 3600, 0, &q->shift_max_s));
        TRY(get_bool(p, o, sub, "wrap", &q->shift_wrap));
    }
    o = cJSON_GetObjectItemCaseSensitive(w, "reverb");
    if (cJSON_IsObject(o))
        TRY(get_float(p, o, key_path(sub, sizeof sub, kp, "reverb"), "wet", 0, 1, 0,
                      &q->reverb_wet));
    a->audio_wave = 1;
    return TM_OK;
}

static tm_status parse_aug_audio(const pctx *p, const cJSON *au, const char *kp, tm_loader_aug *a)
{
    char sub[320];
    int k;
    TRY(check_keys(p, au, kp, AUG_AUDIO_KEYS));
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(au, "wave");
    if (w) TRY(parse_aug_wave(p, w, key_path(sub, sizeof sub, kp, "wave"), a));
    TRY(aug_switch(p, au, kp, "specaug", 1, 0,
                   "an object {\"n_freq_masks\", \"freq_param\", \"n_time_masks\", "
                   "\"time_param\", \"time_max_frac\", \"fill_mean\", \"fill_value\"}", &k));
    a->specaug = k != SW_OFF;
    if (k == SW_OBJECT) {
        tm_specaug_params *q = &a->spec;
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(au, "specaug");
        key_path(sub, sizeof sub, kp, "specaug");
        TRY(check_keys(p, o, sub, AUG_SPEC_KEYS));
        int64_t nf = q->n_freq_masks, fp = q->freq_param, nt = q->n_time_masks,
                tp = q->time_param;
        TRY(get_int(p, o, sub, "n_freq_masks", 0, TM_SPECAUG_MAX_MASKS, &nf));
        TRY(get_int(p, o, sub, "freq_param", 0, 100000, &fp));
        TRY(get_int(p, o, sub, "n_time_masks", 0, TM_SPECAUG_MAX_MASKS, &nt));
        TRY(get_int(p, o, sub, "time_param", 0, 1000000, &tp));
        q->n_freq_masks = (int)nf, q->freq_param = (int)fp;
        q->n_time_masks = (int)nt, q->time_param = (int)tp;
        TRY(get_float(p, o, sub, "time_max_frac", 0, 1, 1, &q->time_max_frac));
        /* a fill value means a constant fill unless fill_mean says otherwise */
        const cJSON *fv = cJSON_GetObjectItemCaseSensitive(o, "fill_value");
        const cJSON *fm = cJSON_GetObjectItemCaseSensitive(o, "fill_mean");
        if (fv && !fm) q->fill_mean = 0;
        TRY(get_bool(p, o, sub, "fill_mean", &q->fill_mean));
        if (fv && q->fill_mean)
            return bad(p, "\"%s\": \"fill_value\" needs \"fill_mean\": false", sub);
        TRY(get_float(p, o, sub, "fill_value", -1e6, 1e6, 0, &q->fill_value));
    }
    return TM_OK;
}

/* "augment": null (everything off) or an object, which replaces the
 * augmentations d had (a stage's replaces the run's whole object). */
static tm_status parse_augment(const pctx *p, const cJSON *v, const char *kp, tm_train_data *d)
{
    tm_loader_aug a = tm_loader_aug_default();
    if (cJSON_IsNull(v)) {
        d->augment = 0;
        d->aug = a;
        return TM_OK;
    }
    if (!cJSON_IsObject(v))
        return bad(p, "\"%s\" must be an object {\"image\": ..., \"audio\": ..., \"text\": ...} or "
                      "null", kp);
    TRY(check_keys(p, v, kp, AUG_KEYS));
    char sub[288];
    const cJSON *o;
    TRY(get_object(p, v, kp, "image", &o));
    if (o) TRY(parse_aug_image(p, o, key_path(sub, sizeof sub, kp, "image"), &a));
    TRY(get_object(p, v, kp, "audio", &o));
    if (o) TRY(parse_aug_audio(p, o, key_path(sub, sizeof sub, kp, "audio"), &a));
    TRY(get_object(p, v, kp, "text", &o));
    if (o) {
        int k;
        key_path(sub, sizeof sub, kp, "text");
        TRY(check_keys(p, o, sub, AUG_TEXT_KEYS));
        TRY(aug_switch(p, o, sub, "delete", 0, 1, "a probability in [0, 1] (0.1 for true)", &k));
        if (k == SW_DEFAULT) a.text_delete_prob = 0.1f;
        if (k == SW_NUMBER) TRY(get_float(p, o, sub, "delete", 0, 1, 0, &a.text_delete_prob));
    }
    d->augment = 1;
    d->aug = a;
    return TM_OK;
}

/* Applies the keys present in obj to d (the run's data or a stage's
 * override on a copy of it). */
static tm_status parse_data(const pctx *p, const cJSON *obj, const char *prefix, tm_train_data *d)
{
    char kp[256];
    TRY(check_keys(p, obj, prefix, DATA_KEYS));
    TRY(get_string(p, obj, prefix, "manifest", 1, &d->manifest));
    TRY(get_string(p, obj, prefix, "tokenizer", 1, &d->tokenizer));
    TRY(get_string(p, obj, prefix, "preprocess", 1, &d->preprocess));
    TRY(get_string(p, obj, prefix, "train_split", 0, &d->train_split));
    TRY(get_string(p, obj, prefix, "val_split", 1, &d->val_split));
    int64_t w = d->workers;
    TRY(get_int(p, obj, prefix, "workers", 0, 256, &w));
    d->workers = (int)w;
    if (cJSON_GetObjectItemCaseSensitive(obj, "modalities")) {
        char *names[TM_MODEL_MAX_MODALITIES] = {0};
        int n = 0;
        tm_status s = get_names(p, obj, prefix, "modalities", TM_MODEL_MAX_MODALITIES, names, &n);
        /* Names are checked against the model's encoders when the run starts. */
        for (int i = 0; !s && i < n; i++)
            for (int k = 0; k < i; k++)
                if (!s && !strcmp(names[i], names[k]))
                    s = bad(p, "\"%s[%d]\" repeats \"%s\"",
                            key_path(kp, sizeof kp, prefix, "modalities"), i, names[i]);
        if (!s && n == 0)
            s = bad(p, "\"%s\" is empty; name at least one modality",
                    key_path(kp, sizeof kp, prefix, "modalities"));
        if (s) {
            for (int i = 0; i < n; i++) free(names[i]);
            return s;
        }
        for (int i = 0; i < TM_MODEL_MAX_MODALITIES; i++) {
            free(d->modalities[i]);
            d->modalities[i] = names[i];
        }
        d->n_modalities = n;
    }
    const cJSON *md;
    TRY(get_object(p, obj, prefix, "modality_dropout", &md));
    if (md) {
        key_path(kp, sizeof kp, prefix, "modality_dropout");
        TRY(check_keys(p, md, kp, MODALITY_NAMES));
        for (int k = 0; k < 3; k++)
            TRY(get_float(p, md, kp, MODALITY_NAMES[k], 0, 0.999, 0, &d->modality_dropout[k]));
    }
    const cJSON *sy = cJSON_GetObjectItemCaseSensitive(obj, "synthetic");
    if (sy && cJSON_IsNull(sy)) {
        d->synthetic = 0;
    } else if (sy) {
        key_path(kp, sizeof kp, prefix, "synthetic");
        if (!cJSON_IsObject(sy)) return bad(p, "\"%s\" must be an object or null", kp);
        TRY(check_keys(p, sy, kp, SYNTH_KEYS));
        d->synthetic = 1;
        int64_t seed = (int64_t)(d->synth_seed & 0x1fffffffffffffull);
        TRY(get_int(p, sy, kp, "examples", 1, (int64_t)1 << 40, &d->synth_examples));
        TRY(get_int(p, sy, kp, "val_examples", 0, (int64_t)1 << 40, &d->synth_val));
        TRY(get_number(p, sy, kp, "noise", 0, 100, 0, &d->synth_noise));
        TRY(get_number(p, sy, kp, "missing", 0, 0.9, 0, &d->synth_missing));
        TRY(get_int(p, sy, kp, "seed", 0, ((int64_t)1 << 53) - 1, &seed));
        TRY(get_int(p, sy, kp, "nan_after", 0, (int64_t)1 << 50, &d->synth_nan_after));
        d->synth_seed = (uint64_t)seed;
    }
    const cJSON *au = cJSON_GetObjectItemCaseSensitive(obj, "augment");
    if (au) TRY(parse_augment(p, au, key_path(kp, sizeof kp, prefix, "augment"), d));
    return TM_OK;
}

/* ----------------------------------------------------------- a stage */

static const char *const STAGE_KEYS[] = {"name", "description", "data", "steps", "epochs",
                                         "objectives", "freeze", "optimizer", "dtype", NULL};
/* "dtype" values, in the order of PRECISIONS */
static const char *const DTYPE_NAMES[] = {"f32", "bf16", "f16", NULL};
static const tm_dtype PRECISIONS[] = {TM_F32, TM_BF16, TM_F16};

static const char *dtype_name(tm_dtype d)
{
    return d == TM_BF16 ? "bf16" : d == TM_F16 ? "f16" : "f32";
}
static const char *const OBJ_KEYS[] = {"weight", "schedule", "from", "to", "steps",
                                       "label_smoothing", NULL};
static const char *const OPT_KEYS[] = {"type", "lr", "betas", "eps", "weight_decay", "momentum",
                                       "dampening", "nesterov", "warmup", "warmup_start_factor",
                                       "schedule", "min_lr", "step_size", "gamma",
                                       "clip_grad_norm", "no_decay", NULL};

static tm_status parse_objective(const pctx *p, const cJSON *v, const char *kp, int loss,
                                 tm_objective *o)
{
    memset(o, 0, sizeof *o);
    o->enabled = 1;
    o->weight = 1.0;
    o->schedule = TM_WEIGHT_CONSTANT;
    o->from = 0.0;
    o->to = 1.0;
    if (cJSON_IsNumber(v)) {
        if (!isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > 1e6)
            return bad(p, "\"%s\" is %g; a weight must be in [0, 1e6]", kp, v->valuedouble);
        o->weight = v->valuedouble;
        return TM_OK;
    }
    if (!cJSON_IsObject(v))
        return bad(p, "\"%s\" must be a weight (a number) or an object {weight, schedule, from, "
                      "to, steps}", kp);
    TRY(check_keys(p, v, kp, OBJ_KEYS));
    TRY(get_number(p, v, kp, "weight", 0, 1e6, 0, &o->weight));
    int sk = 0;
    TRY(get_enum(p, v, kp, "schedule", WEIGHT_NAMES, TM_WEIGHT_KIND_COUNT, &sk));
    o->schedule = (tm_weight_kind)sk;
    int has_ramp = cJSON_GetObjectItemCaseSensitive(v, "from") ||
                   cJSON_GetObjectItemCaseSensitive(v, "to") ||
                   cJSON_GetObjectItemCaseSensitive(v, "steps");
    if (o->schedule == TM_WEIGHT_CONSTANT && has_ramp)
        return bad(p, "\"%s\": \"from\", \"to\" and \"steps\" need \"schedule\": \"linear\" or "
                      "\"cosine\"", kp);
    TRY(get_number(p, v, kp, "from", 0, 1e6, 0, &o->from));
    TRY(get_number(p, v, kp, "to", 0, 1e6, 0, &o->to));
    TRY(get_int(p, v, kp, "steps", 0, (int64_t)1 << 40, &o->steps));
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(v, "label_smoothing");
    if (ls && loss != TM_LOSS_CLASSIFICATION)
        return bad(p, "\"%s.label_smoothing\": only the classification objective has one", kp);
    double lsv = 0;
    TRY(get_number(p, v, kp, "label_smoothing", 0, 0.999, 0, &lsv));
    o->label_smoothing = (float)lsv;
    return TM_OK;
}

static tm_status parse_optimizer(const pctx *p, const cJSON *v, const char *kp, tm_train_stage *st)
{
    int kind = TM_OPTIM_ADAMW;
    if (v) {
        TRY(check_keys(p, v, kp, OPT_KEYS));
        TRY(get_enum(p, v, kp, "type", (const char *const[]){"sgd", "adamw"}, 2, &kind));
    }
    tm_optim_params op = tm_optim_default_params((tm_optim_kind)kind);
    tm_lr_schedule lr = tm_lr_schedule_default_params(TM_LR_CONSTANT);
    st->clip_grad_norm = 0;
    if (v) {
        TRY(get_float(p, v, kp, "lr", 0, 1e9, 0, &op.lr));
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(v, "betas");
        if (b) {
            if (kind != TM_OPTIM_ADAMW)
                return bad(p, "\"%s.betas\": only adamw has betas", kp);
            if (!cJSON_IsArray(b) || cJSON_GetArraySize(b) != 2 ||
                !cJSON_IsNumber(b->child) || !cJSON_IsNumber(b->child->next))
                return bad(p, "\"%s.betas\" must be an array of two numbers, e.g. [0.9, 0.999]",
                           kp);
            double b1 = b->child->valuedouble, b2 = b->child->next->valuedouble;
            if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1))
                return bad(p, "\"%s.betas\" must each be in [0, 1) (got %g, %g)", kp, b1, b2);
            op.beta1 = b1;
            op.beta2 = b2;
        }
        if (kind != TM_OPTIM_ADAMW && cJSON_GetObjectItemCaseSensitive(v, "eps"))
            return bad(p, "\"%s.eps\": only adamw has eps", kp);
        if (kind != TM_OPTIM_SGD && (cJSON_GetObjectItemCaseSensitive(v, "momentum") ||
                                     cJSON_GetObjectItemCaseSensitive(v, "dampening") ||
                                     cJSON_GetObjectItemCaseSensitive(v, "nesterov")))
            return bad(p, "\"%s\": momentum, dampening and nesterov are sgd settings", kp);
        TRY(get_float(p, v, kp, "eps", 0, 1, 1, &op.eps));
        TRY(get_float(p, v, kp, "weight_decay", 0, 1e6, 0, &op.weight_decay));
        TRY(get_float(p, v, kp, "momentum", 0, 1e6, 0, &op.momentum));
        TRY(get_float(p, v, kp, "dampening", 0, 1, 0, &op.dampening));
        TRY(get_bool(p, v, kp, "nesterov", &op.nesterov));
        TRY(get_int(p, v, kp, "warmup", 0, (int64_t)1 << 40, &lr.warmup_steps));
        TRY(get_float(p, v, kp, "warmup_start_factor", 0, 1, 0, &lr.warmup_start_factor));
        int sk = TM_LR_CONSTANT;
        TRY(get_enum(p, v, kp, "schedule", LR_NAMES, TM_LR_KIND_COUNT, &sk));
        lr.kind = (tm_lr_kind)sk;
        TRY(get_float(p, v, kp, "min_lr", 0, 1e9, 0, &lr.min_lr));
        TRY(get_int(p, v, kp, "step_size", 1, (int64_t)1 << 40, &lr.step_size));
        TRY(get_float(p, v, kp, "gamma", 0, 1, 1, &lr.gamma));
        TRY(get_float(p, v, kp, "clip_grad_norm", 0, 1e9, 0, &st->clip_grad_norm));
        TRY(get_names(p, v, kp, "no_decay", TM_TRAIN_MAX_NAMES, st->no_decay, &st->n_no_decay));
    }
    if (op.nesterov && (op.momentum <= 0 || op.dampening != 0))
        return bad(p, "\"%s.nesterov\" needs momentum > 0 and dampening 0", kp);
    if (lr.kind == TM_LR_COSINE && lr.min_lr > op.lr)
        return bad(p, "\"%s.min_lr\" (%g) must not exceed \"lr\" (%g)", kp, lr.min_lr, op.lr);
    if (lr.kind != TM_LR_COSINE && v && cJSON_GetObjectItemCaseSensitive(v, "min_lr"))
        return bad(p, "\"%s.min_lr\" needs \"schedule\": \"cosine\"", kp);
    if (lr.kind != TM_LR_STEP && v &&
        (cJSON_GetObjectItemCaseSensitive(v, "step_size") ||
         cJSON_GetObjectItemCaseSensitive(v, "gamma")))
        return bad(p, "\"%s\": step_size and gamma need \"schedule\": \"step\"", kp);
    lr.base_lr = op.lr;
    if (tm_optim_params_check(&op)) return bad(p, "\"%s\": %s", kp, tm_last_error());
    st->optim = op;
    st->lr = lr;
    return TM_OK;
}

static int valid_name(const char *s)
{
    if (!*s || strlen(s) > 64) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.') return 0;
    return 1;
}

static tm_status parse_stage(const pctx *p, const cJSON *v, int i, const tm_train_data *run_data,
                             tm_train_stage *st)
{
    char kp[64], sub[128];
    snprintf(kp, sizeof kp, "stages[%d]", i);
    if (!cJSON_IsObject(v)) return bad(p, "\"%s\" must be an object", kp);
    TRY(check_keys(p, v, kp, STAGE_KEYS));
    TRY(data_copy(&st->data, run_data));
    TRY(get_string(p, v, kp, "name", 0, &st->name));
    if (!st->name) return bad(p, "\"%s.name\" is required (a short name like \"align\")", kp);
    if (!valid_name(st->name))
        return bad(p, "\"%s.name\" \"%s\" must be 1 to 64 letters, digits, '_', '-' or '.'", kp,
                   st->name);
    const cJSON *d;
    TRY(get_object(p, v, kp, "data", &d));
    if (d) TRY(parse_data(p, d, key_path(sub, sizeof sub, kp, "data"), &st->data));
    TRY(get_int(p, v, kp, "steps", 1, (int64_t)1 << 40, &st->steps));
    TRY(get_int(p, v, kp, "epochs", 1, 1 << 20, &st->epochs));
    if ((st->steps > 0) == (st->epochs > 0))
        return bad(p, "\"%s\" needs exactly one of \"steps\" and \"epochs\"", kp);
    const cJSON *ob;
    TRY(get_object(p, v, kp, "objectives", &ob));
    if (!ob || !ob->child)
        return bad(p, "\"%s.objectives\" is required: e.g. {\"classification\": 1, "
                      "\"contrastive\": 0.5}", kp);
    key_path(sub, sizeof sub, kp, "objectives");
    TRY(check_keys(p, ob, sub, LOSS_KEYS));
    for (int k = 0; k < TM_LOSS_COUNT; k++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(ob, LOSS_NAMES[k]);
        char okp[160];
        snprintf(okp, sizeof okp, "%s.%s", sub, LOSS_NAMES[k]);
        if (o) TRY(parse_objective(p, o, okp, k, &st->objectives[k]));
    }
    TRY(get_names(p, v, kp, "freeze", TM_TRAIN_MAX_NAMES, st->freeze, &st->n_freeze));
    int dk = st->precision == TM_BF16 ? 1 : st->precision == TM_F16 ? 2 : 0;
    TRY(get_enum(p, v, kp, "dtype", DTYPE_NAMES, 3, &dk));
    st->precision = PRECISIONS[dk];
    const cJSON *opt;
    TRY(get_object(p, v, kp, "optimizer", &opt));
    TRY(parse_optimizer(p, opt, key_path(sub, sizeof sub, kp, "optimizer"), st));
    if (st->steps > 0 && st->lr.warmup_steps > st->steps)
        return bad(p, "\"%s.optimizer.warmup\" (%lld) is longer than the stage (%lld steps)", kp,
                   (long long)st->lr.warmup_steps, (long long)st->steps);
    return TM_OK;
}

/* ----------------------------------------------------------- the whole */

static const char *const TOP_KEYS[] = {"model", "init_seed", "data", "out", "seed", "batch_size",
                                       "threads", "dtype", "log_every", "checkpoint",
                                       "validation", "stages", "description",
                                       "checkpoint_blocks", "allreduce_bucket_mb", "loss_scale",
                                       NULL};
static const char *const SCALE_KEYS[] = {"init", "growth_factor", "backoff_factor",
                                         "growth_interval", "min", "max", NULL};
static const char *const CKPT_KEYS[] = {"every", "keep", NULL};
static const char *const VAL_KEYS[] = {"every", "batch_size", "max_batches", "metric", "mode",
                                       "patience", "min_delta", NULL};
static const char *const METRICS[] = {"loss", "accuracy", "recall_at_1", "classification",
                                      "contrastive", "caption", "masked", NULL};

void tm_run_config_free(tm_run_config *c)
{
    if (!c) return;
    free(c->origin);
    free(c->model);
    free(c->model_json);
    free(c->out);
    free(c->dtype);
    free(c->val_metric);
    data_free(&c->data);
    for (int i = 0; i < TM_TRAIN_MAX_STAGES; i++) {
        tm_train_stage *st = &c->stages[i];
        free(st->name);
        data_free(&st->data);
        for (int k = 0; k < TM_TRAIN_MAX_NAMES; k++) {
            free(st->freeze[k]);
            free(st->no_decay[k]);
        }
    }
    free(c);
}

static tm_status parse_root(const pctx *p, const cJSON *root, tm_run_config *c)
{
    if (!cJSON_IsObject(root)) return bad(p, "the top level must be a JSON object");
    TRY(check_keys(p, root, "", TOP_KEYS));
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!m)
        return bad(p, "\"model\" is required: a model config file, a model folder, or an "
                      "inline config object");
    if (cJSON_IsString(m) && m->valuestring && m->valuestring[0]) {
        c->model = dup_str(m->valuestring);
    } else if (cJSON_IsObject(m)) {
        c->model_json = cJSON_PrintUnformatted(m);
        if (c->model_json) { /* cJSON's allocation; move it into ours */
            char *d = dup_str(c->model_json);
            cJSON_free(c->model_json);
            c->model_json = d;
        }
    } else {
        return bad(p, "\"model\" must be a path (string) or an inline model config (object)");
    }
    if (!c->model && !c->model_json) return tm_fail(TM_ERR_NOMEM, "run config: out of memory");
    int64_t seed = 0, init_seed = -1, threads = 0;
    TRY(get_int(p, root, "", "seed", 0, ((int64_t)1 << 53) - 1, &seed));
    TRY(get_int(p, root, "", "init_seed", 0, ((int64_t)1 << 53) - 1, &init_seed));
    c->seed = (uint64_t)seed;
    c->init_seed = init_seed < 0 ? c->seed : (uint64_t)init_seed;
    TRY(get_string(p, root, "", "out", 0, &c->out));
    if (!c->out || !c->out[0]) return bad(p, "\"out\" is required: the output folder of the run");
    TRY(get_int(p, root, "", "batch_size", 1, 1 << 20, &c->batch_size));
    if (!c->batch_size) return bad(p, "\"batch_size\" is required (examples per step)");
    TRY(get_int(p, root, "", "threads", 0, 256, &threads));
    c->threads = (int)threads;
    int dk = 0;
    TRY(get_enum(p, root, "", "dtype", DTYPE_NAMES, 3, &dk));
    if (!(c->dtype = dup_str(DTYPE_NAMES[dk])))
        return tm_fail(TM_ERR_NOMEM, "run config: out of memory");
    /* the dynamic loss scaler of f16 stages */
    c->loss_scale = tm_loss_scaler_default_params();
    const cJSON *ls;
    TRY(get_object(p, root, "", "loss_scale", &ls));
    if (ls) {
        tm_loss_scaler_params *q = &c->loss_scale;
        TRY(check_keys(p, ls, "loss_scale", SCALE_KEYS));
        TRY(get_float(p, ls, "loss_scale", "init", 0, 3e38, 1, &q->init_scale));
        TRY(get_float(p, ls, "loss_scale", "growth_factor", 1, 1e6, 1, &q->growth_factor));
        TRY(get_float(p, ls, "loss_scale", "backoff_factor", 0, 1, 1, &q->backoff_factor));
        if (!(q->backoff_factor < 1))
            return bad(p, "\"loss_scale.backoff_factor\" must be below 1 (0.5 halves the scale "
                          "on overflow)");
        TRY(get_int(p, ls, "loss_scale", "growth_interval", 1, (int64_t)1 << 40,
                    &q->growth_interval));
        TRY(get_float(p, ls, "loss_scale", "min", 0, 3e38, 1, &q->min_scale));
        TRY(get_float(p, ls, "loss_scale", "max", 0, 3e38, 1, &q->max_scale));
        /* an "init" beyond the default bounds widens them, rather than
         * failing: {"init": 1e12} means what it says */
        if (!cJSON_GetObjectItemCaseSensitive(ls, "max") && q->init_scale > q->max_scale)
            q->max_scale = q->init_scale;
        if (!cJSON_GetObjectItemCaseSensitive(ls, "min") && q->init_scale < q->min_scale)
            q->min_scale = q->init_scale;
        tm_loss_scaler probe;
        if (tm_loss_scaler_init(&probe, *q))
            return bad(p, "\"loss_scale\": %s", tm_last_error());
    }
    TRY(get_int(p, root, "", "log_every", 1, (int64_t)1 << 40, &c->log_every));
    TRY(get_bool(p, root, "", "checkpoint_blocks", &c->checkpoint_blocks));
    c->allreduce_bucket_mb = 4;
    TRY(get_number(p, root, "", "allreduce_bucket_mb", 0.0001, 4096, 0,
                   &c->allreduce_bucket_mb));

    const cJSON *ck;
    TRY(get_object(p, root, "", "checkpoint", &ck));
    if (ck) {
        TRY(check_keys(p, ck, "checkpoint", CKPT_KEYS));
        TRY(get_int(p, ck, "checkpoint", "every", 0, (int64_t)1 << 40, &c->ckpt_every));
        TRY(get_int(p, ck, "checkpoint", "keep", 1, 1000000, &c->ckpt_keep));
    }
    const cJSON *va;
    TRY(get_object(p, root, "", "validation", &va));
    int mode = -1;
    if (va) {
        TRY(check_keys(p, va, "validation", VAL_KEYS));
        TRY(get_int(p, va, "validation", "every", 0, (int64_t)1 << 40, &c->val_every));
        TRY(get_int(p, va, "validation", "batch_size", 1, 1 << 20, &c->val_batch_size));
        TRY(get_int(p, va, "validation", "max_batches", 0, (int64_t)1 << 40,
                    &c->val_max_batches));
        int mi = 0;
        TRY(get_enum(p, va, "validation", "metric", METRICS, 7, &mi));
        free(c->val_metric);
        if (!(c->val_metric = dup_str(METRICS[mi])))
            return tm_fail(TM_ERR_NOMEM, "run config: out of memory");
        TRY(get_enum(p, va, "validation", "mode", (const char *const[]){"min", "max"}, 2, &mode));
        TRY(get_int(p, va, "validation", "patience", 0, 1 << 30, &c->patience));
        TRY(get_number(p, va, "validation", "min_delta", 0, 1e30, 0, &c->min_delta));
    }
    if (!c->val_batch_size) c->val_batch_size = c->batch_size;
    int max_metric = !strcmp(c->val_metric, "accuracy") || !strcmp(c->val_metric, "recall_at_1");
    if (mode < 0) mode = max_metric;
    c->val_maximize = mode;

    const cJSON *d;
    TRY(get_object(p, root, "", "data", &d));
    if (!d)
        return bad(p, "\"data\" is required: {\"manifest\": ..., \"train_split\": ...} or "
                      "{\"synthetic\": {...}}");
    TRY(parse_data(p, d, "data", &c->data));

    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(root, "stages");
    if (!stages || !cJSON_IsArray(stages) || cJSON_GetArraySize(stages) < 1)
        return bad(p, "\"stages\" is required: an array of 1 to %d stages", TM_TRAIN_MAX_STAGES);
    if (cJSON_GetArraySize(stages) > TM_TRAIN_MAX_STAGES)
        return bad(p, "\"stages\" has %d stages; at most %d", cJSON_GetArraySize(stages),
                   TM_TRAIN_MAX_STAGES);
    int i = 0;
    for (const cJSON *it = stages->child; it; it = it->next, i++) {
        c->stages[i].precision = PRECISIONS[dk]; /* the run's unless the stage says */
        TRY(parse_stage(p, it, i, &c->data, &c->stages[i]));
        c->n_stages = i + 1;
        for (int k = 0; k < i; k++)
            if (!strcmp(c->stages[k].name, c->stages[i].name))
                return bad(p, "\"stages[%d].name\" \"%s\" repeats stages[%d]'s", i,
                           c->stages[i].name, k);
        const tm_train_data *sd = &c->stages[i].data;
        if (!sd->synthetic && !sd->manifest)
            return bad(p, "\"stages[%d]\" has no data: give \"data.manifest\" or "
                          "\"data.synthetic\"", i);
        /* augmentations act on a manifest's media, in training only */
        if (sd->augment && sd->synthetic)
            return bad(p, "\"stages[%d]\": \"data.augment\" needs manifest data (the synthetic "
                          "source has no media to augment); remove \"augment\", or give the "
                          "stage \"data\": {\"augment\": null}", i);
        if (sd->augment && sd->val_split && sd->train_split &&
            !strcmp(sd->val_split, sd->train_split))
            return bad(p, "\"stages[%d]\": \"data.augment\" with \"val_split\" equal to "
                          "\"train_split\" (\"%s\") would augment validation; validate on "
                          "another split, or set \"val_split\" to null", i, sd->train_split);
    }
    return TM_OK;
}

tm_status tm_run_config_parse(tm_run_config **out, const char *json, size_t len,
                              const char *origin)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "run_config_parse: out is NULL");
    *out = NULL;
    pctx p = {origin ? origin : "<memory>"};
    if (!json) return tm_fail(TM_ERR_INVALID, "run_config_parse: json is NULL");
    size_t max_bytes = (size_t)tm_limit_get(TM_LIMIT_RUN_CONFIG_BYTES);
    if (len > max_bytes)
        return tm_fail(TM_ERR_LIMIT,
                       "run config %s: %zu bytes is over the limit of %zu bytes (limit %s)",
                       p.origin, len, max_bytes, tm_limit_hint(TM_LIMIT_RUN_CONFIG_BYTES));
    const char *end = NULL;
    tm_status ds = tm_json_check_depth(json, len, p.origin);
    if (ds) return ds;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        int line = 1;
        for (size_t k = 0; k < at && k < len; k++) line += json[k] == '\n';
        return tm_fail(TM_ERR_FORMAT, "run config %s: malformed JSON near line %d (byte %zu)",
                       p.origin, line, at);
    }
    /* Only whitespace may follow the document. */
    for (const char *q = end; q && q < json + len; q++)
        if (!isspace((unsigned char)*q) && *q) {
            cJSON_Delete(root);
            return tm_fail(TM_ERR_FORMAT, "run config %s: text after the JSON object", p.origin);
        }
    tm_run_config *c = calloc(1, sizeof *c);
    if (!c) {
        cJSON_Delete(root);
        return tm_fail(TM_ERR_NOMEM, "run config: out of memory");
    }
    c->origin = dup_str(p.origin);
    c->log_every = 1;
    c->ckpt_every = 1000;
    c->ckpt_keep = 3;
    c->val_metric = dup_str("loss");
    data_defaults(&c->data);
    c->data.train_split = dup_str("train");
    c->data.val_split = dup_str("val");
    tm_status s = TM_OK;
    if (!c->origin || !c->val_metric || !c->data.train_split || !c->data.val_split)
        s = tm_fail(TM_ERR_NOMEM, "run config: out of memory");
    if (!s) s = parse_root(&p, root, c);
    cJSON_Delete(root);
    if (s) {
        tm_run_config_free(c);
        return s;
    }
    *out = c;
    return TM_OK;
}

/* *p = dir/(*p) when *p is a relative path and dir is not "" */
static tm_status resolve_one(char **p, const char *dir)
{
    if (!*p || !(*p)[0] || (*p)[0] == '/' || !dir[0]) return TM_OK;
    size_t a = strlen(dir), b = strlen(*p);
    char *r = malloc(a + b + 2);
    if (!r) return tm_fail(TM_ERR_NOMEM, "run config: out of memory");
    memcpy(r, dir, a);
    r[a] = '/';
    memcpy(r + a + 1, *p, b + 1);
    free(*p);
    *p = r;
    return TM_OK;
}

static tm_status resolve_data(tm_train_data *d, const char *dir)
{
    tm_status s = resolve_one(&d->manifest, dir);
    if (!s) s = resolve_one(&d->tokenizer, dir);
    if (!s) s = resolve_one(&d->preprocess, dir);
    return s;
}

/* Input paths relative to the config file's folder ("out" excepted). */
static tm_status resolve_paths(tm_run_config *c, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return TM_OK; /* a config in the working directory */
    size_t n = (size_t)(slash - path);
    char *dir = malloc(n + 2);
    if (!dir) return tm_fail(TM_ERR_NOMEM, "run config: out of memory");
    if (n == 0) n = 1; /* "/run.json": the folder is "/" */
    memcpy(dir, path, n);
    dir[n] = 0;
    const char *d = dir;
    tm_status s = resolve_one(&c->model, d);
    if (!s) s = resolve_data(&c->data, d);
    for (int i = 0; !s && i < c->n_stages; i++) s = resolve_data(&c->stages[i].data, d);
    free(dir);
    return s;
}

tm_status tm_run_config_load(tm_run_config **out, const char *path)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "run_config_load: out is NULL");
    *out = NULL;
    if (!path) return tm_fail(TM_ERR_INVALID, "run_config_load: path is NULL");
    char *text = NULL;
    size_t n = 0;
    tm_status s =
        tm_read_file(path, (size_t)tm_limit_get(TM_LIMIT_RUN_CONFIG_BYTES), &text, &n);
    if (s == TM_ERR_LIMIT)
        return tm_fail(s, "%s (limit %s)", tm_last_error(),
                       tm_limit_hint(TM_LIMIT_RUN_CONFIG_BYTES));
    if (s) return s;
    s = tm_run_config_parse(out, text, n, path);
    tm_free(text);
    if (!s && (s = resolve_paths(*out, path))) {
        tm_run_config_free(*out);
        *out = NULL;
    }
    return s;
}

/* ------------------------------------------------------ canonical JSON */

static void add_str(cJSON *o, const char *k, const char *v)
{
    if (v) cJSON_AddStringToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

/* A float as the shortest decimal that reads back as the same float, so
 * that 0.3f is written 0.3 rather than 0.300000011920929. */
static double fnum(float x)
{
    char buf[32];
    for (int prec = 6; prec < 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        double d = strtod(buf, NULL);
        if ((float)d == x) return d;
    }
    return (double)x;
}

static void add_range(cJSON *o, const char *k, const float r[2])
{
    cJSON *a = cJSON_AddArrayToObject(o, k);
    for (int i = 0; a && i < 2; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(fnum(r[i])));
}

/* The augmentations switched on, each with every parameter written. */
static cJSON *aug_json(const tm_loader_aug *a)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    const tm_image_aug_params *q = &a->image;
    if (a->image_crop || a->image_flip || a->image_rotate || a->image_jitter || a->image_erase) {
        cJSON *im = cJSON_AddObjectToObject(o, "image"), *x;
        if (im && a->image_crop && (x = cJSON_AddObjectToObject(im, "crop"))) {
            add_range(x, "scale", q->crop_scale);
            add_range(x, "ratio", q->crop_ratio);
        }
        if (im && a->image_flip) cJSON_AddNumberToObject(im, "flip", fnum(q->flip_p));
        if (im && a->image_rotate && (x = cJSON_AddObjectToObject(im, "rotate"))) {
            cJSON_AddNumberToObject(x, "degrees", fnum(q->rotate_degrees));
            cJSON_AddNumberToObject(x, "fill", fnum(q->rotate_fill));
        }
        if (im && a->image_jitter && (x = cJSON_AddObjectToObject(im, "jitter"))) {
            cJSON_AddNumberToObject(x, "brightness", fnum(q->brightness));
            cJSON_AddNumberToObject(x, "contrast", fnum(q->contrast));
            cJSON_AddNumberToObject(x, "saturation", fnum(q->saturation));
            cJSON_AddNumberToObject(x, "hue", fnum(q->hue));
        }
        if (im && a->image_erase && (x = cJSON_AddObjectToObject(im, "erase"))) {
            cJSON_AddNumberToObject(x, "p", fnum(q->erase_p));
            add_range(x, "scale", q->erase_scale);
            add_range(x, "ratio", q->erase_ratio);
            if (q->erase_noise) cJSON_AddBoolToObject(x, "noise", 1);
            else cJSON_AddNumberToObject(x, "value", fnum(q->erase_value));
        }
    }
    cJSON *au = a->specaug || a->audio_wave ? cJSON_AddObjectToObject(o, "audio") : NULL, *x;
    if (au && a->audio_wave && (x = cJSON_AddObjectToObject(au, "wave"))) {
        const tm_audio_aug_params *w = &a->audio;
        const float probs[6] = {w->p_stretch, w->p_pitch, w->p_shift, w->p_reverb, w->p_gain,
                                w->p_noise};
        const float ranges[6][2] = {{w->stretch_min, w->stretch_max}, {w->pitch_min, w->pitch_max},
                                    {0, 0}, {w->rt60_min, w->rt60_max},
                                    {w->gain_min_db, w->gain_max_db},
                                    {w->snr_min_db, w->snr_max_db}};
        for (int i = 0; i < 6; i++) {
            cJSON *st;
            if (!(probs[i] > 0) || !(st = cJSON_AddObjectToObject(x, AUG_WAVE_KEYS[i]))) continue;
            cJSON_AddNumberToObject(st, "p", fnum(probs[i]));
            if (i != 2) add_range(st, AUG_STEP_KEYS[i][1], ranges[i]);
            if (i == 2) {
                cJSON_AddNumberToObject(st, "max_s", fnum(w->shift_max_s));
                cJSON_AddBoolToObject(st, "wrap", w->shift_wrap);
            }
            if (i == 3) cJSON_AddNumberToObject(st, "wet", fnum(w->reverb_wet));
        }
    }
    if (au && a->specaug && (x = cJSON_AddObjectToObject(au, "specaug"))) {
        const tm_specaug_params *s = &a->spec;
        cJSON_AddNumberToObject(x, "n_freq_masks", s->n_freq_masks);
        cJSON_AddNumberToObject(x, "freq_param", s->freq_param);
        cJSON_AddNumberToObject(x, "n_time_masks", s->n_time_masks);
        cJSON_AddNumberToObject(x, "time_param", s->time_param);
        cJSON_AddNumberToObject(x, "time_max_frac", fnum(s->time_max_frac));
        cJSON_AddBoolToObject(x, "fill_mean", s->fill_mean);
        if (!s->fill_mean) cJSON_AddNumberToObject(x, "fill_value", fnum(s->fill_value));
    }
    cJSON *tx;
    if (a->text_delete_prob > 0 && (tx = cJSON_AddObjectToObject(o, "text")))
        cJSON_AddNumberToObject(tx, "delete", fnum(a->text_delete_prob));
    return o;
}

/* base: the run's data when d is a stage's (a stage that turns the run's
 * augmentations off says "augment": null, so the text parses back the
 * same); NULL for the run's own. Data without augmentations writes no
 * "augment", so the hashes of older configs stay the same. */
static cJSON *data_json(const tm_train_data *d, const tm_train_data *base)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    add_str(o, "manifest", d->manifest);
    add_str(o, "tokenizer", d->tokenizer);
    add_str(o, "preprocess", d->preprocess);
    add_str(o, "train_split", d->train_split);
    add_str(o, "val_split", d->val_split);
    cJSON_AddNumberToObject(o, "workers", d->workers);
    if (d->n_modalities >= 0) {
        cJSON *a = cJSON_AddArrayToObject(o, "modalities");
        for (int i = 0; a && i < d->n_modalities; i++)
            cJSON_AddItemToArray(a, cJSON_CreateString(d->modalities[i]));
    }
    cJSON *md = cJSON_AddObjectToObject(o, "modality_dropout");
    for (int k = 0; md && k < 3; k++)
        cJSON_AddNumberToObject(md, MODALITY_NAMES[k], d->modality_dropout[k]);
    if (d->synthetic) {
        cJSON *s = cJSON_AddObjectToObject(o, "synthetic");
        if (s) {
            cJSON_AddNumberToObject(s, "examples", (double)d->synth_examples);
            cJSON_AddNumberToObject(s, "val_examples", (double)d->synth_val);
            cJSON_AddNumberToObject(s, "noise", d->synth_noise);
            cJSON_AddNumberToObject(s, "missing", d->synth_missing);
            cJSON_AddNumberToObject(s, "seed", (double)d->synth_seed);
            cJSON_AddNumberToObject(s, "nan_after", (double)d->synth_nan_after);
        }
    }
    if (d->augment) cJSON_AddItemToObject(o, "augment", aug_json(&d->aug));
    else if (base && base->augment) cJSON_AddNullToObject(o, "augment");
    return o;
}

/* for_hash: an f32 stage leaves its dtype out, so the hashes of configs
 * from before mixed precision stay the same. */
static cJSON *stage_json(const tm_train_stage *st, const tm_train_data *run_data, int for_hash)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "name", st->name);
    cJSON_AddItemToObject(o, "data", data_json(&st->data, run_data));
    if (st->steps) cJSON_AddNumberToObject(o, "steps", (double)st->steps);
    else cJSON_AddNumberToObject(o, "epochs", (double)st->epochs);
    cJSON *ob = cJSON_AddObjectToObject(o, "objectives");
    for (int k = 0; ob && k < TM_LOSS_COUNT; k++) {
        const tm_objective *x = &st->objectives[k];
        if (!x->enabled) continue;
        cJSON *e = cJSON_AddObjectToObject(ob, LOSS_NAMES[k]);
        if (!e) continue;
        cJSON_AddNumberToObject(e, "weight", x->weight);
        cJSON_AddStringToObject(e, "schedule", WEIGHT_NAMES[x->schedule]);
        if (x->schedule != TM_WEIGHT_CONSTANT) {
            cJSON_AddNumberToObject(e, "from", x->from);
            cJSON_AddNumberToObject(e, "to", x->to);
            cJSON_AddNumberToObject(e, "steps", (double)x->steps);
        }
        if (k == TM_LOSS_CLASSIFICATION)
            cJSON_AddNumberToObject(e, "label_smoothing", x->label_smoothing);
    }
    if (!for_hash || st->precision != TM_F32)
        cJSON_AddStringToObject(o, "dtype", dtype_name(st->precision));
    cJSON *fr = cJSON_AddArrayToObject(o, "freeze");
    for (int i = 0; fr && i < st->n_freeze; i++)
        cJSON_AddItemToArray(fr, cJSON_CreateString(st->freeze[i]));
    cJSON *op = cJSON_AddObjectToObject(o, "optimizer");
    if (op) {
        const tm_optim_params *q = &st->optim;
        int adam = q->kind == TM_OPTIM_ADAMW;
        cJSON_AddStringToObject(op, "type", adam ? "adamw" : "sgd");
        cJSON_AddNumberToObject(op, "lr", q->lr);
        if (adam) {
            cJSON *b = cJSON_AddArrayToObject(op, "betas");
            if (b) {
                cJSON_AddItemToArray(b, cJSON_CreateNumber(q->beta1));
                cJSON_AddItemToArray(b, cJSON_CreateNumber(q->beta2));
            }
            cJSON_AddNumberToObject(op, "eps", q->eps);
        } else {
            cJSON_AddNumberToObject(op, "momentum", q->momentum);
            cJSON_AddNumberToObject(op, "dampening", q->dampening);
            cJSON_AddBoolToObject(op, "nesterov", q->nesterov);
        }
        cJSON_AddNumberToObject(op, "weight_decay", q->weight_decay);
        cJSON_AddNumberToObject(op, "warmup", (double)st->lr.warmup_steps);
        cJSON_AddNumberToObject(op, "warmup_start_factor", st->lr.warmup_start_factor);
        cJSON_AddStringToObject(op, "schedule", LR_NAMES[st->lr.kind]);
        if (st->lr.kind == TM_LR_COSINE) cJSON_AddNumberToObject(op, "min_lr", st->lr.min_lr);
        if (st->lr.kind == TM_LR_STEP) {
            cJSON_AddNumberToObject(op, "step_size", (double)st->lr.step_size);
            cJSON_AddNumberToObject(op, "gamma", st->lr.gamma);
        }
        cJSON_AddNumberToObject(op, "clip_grad_norm", st->clip_grad_norm);
        cJSON *nd = cJSON_AddArrayToObject(op, "no_decay");
        for (int i = 0; nd && i < st->n_no_decay; i++)
            cJSON_AddItemToArray(nd, cJSON_CreateString(st->no_decay[i]));
    }
    return o;
}

/* for_hash: leave out what does not change the numbers. */
static cJSON *config_json(const tm_run_config *c, int for_hash)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    if (c->model_json) {
        cJSON *m = cJSON_Parse(c->model_json);
        if (m) cJSON_AddItemToObject(o, "model", m);
        else cJSON_AddNullToObject(o, "model");
    } else {
        add_str(o, "model", c->model);
    }
    cJSON_AddNumberToObject(o, "init_seed", (double)c->init_seed);
    if (!for_hash) add_str(o, "out", c->out);
    cJSON_AddNumberToObject(o, "seed", (double)c->seed);
    cJSON_AddNumberToObject(o, "batch_size", (double)c->batch_size);
    if (!for_hash) cJSON_AddNumberToObject(o, "threads", c->threads);
    add_str(o, "dtype", c->dtype);
    if (!for_hash) {
        cJSON_AddBoolToObject(o, "checkpoint_blocks", c->checkpoint_blocks);
        cJSON_AddNumberToObject(o, "allreduce_bucket_mb", c->allreduce_bucket_mb);
        cJSON_AddNumberToObject(o, "log_every", (double)c->log_every);
        cJSON *ck = cJSON_AddObjectToObject(o, "checkpoint");
        if (ck) {
            cJSON_AddNumberToObject(ck, "every", (double)c->ckpt_every);
            cJSON_AddNumberToObject(ck, "keep", (double)c->ckpt_keep);
        }
    }
    cJSON *va = cJSON_AddObjectToObject(o, "validation");
    if (va) {
        cJSON_AddNumberToObject(va, "every", (double)c->val_every);
        cJSON_AddNumberToObject(va, "batch_size", (double)c->val_batch_size);
        cJSON_AddNumberToObject(va, "max_batches", (double)c->val_max_batches);
        add_str(va, "metric", c->val_metric);
        cJSON_AddStringToObject(va, "mode", c->val_maximize ? "max" : "min");
        cJSON_AddNumberToObject(va, "patience", (double)c->patience);
        cJSON_AddNumberToObject(va, "min_delta", c->min_delta);
    }
    int f16 = 0;
    for (int i = 0; i < c->n_stages; i++) f16 |= c->stages[i].precision == TM_F16;
    if (f16 || !for_hash) {
        const tm_loss_scaler_params *q = &c->loss_scale;
        cJSON *ls = cJSON_AddObjectToObject(o, "loss_scale");
        if (ls) {
            cJSON_AddNumberToObject(ls, "init", q->init_scale);
            cJSON_AddNumberToObject(ls, "growth_factor", q->growth_factor);
            cJSON_AddNumberToObject(ls, "backoff_factor", q->backoff_factor);
            cJSON_AddNumberToObject(ls, "growth_interval", (double)q->growth_interval);
            cJSON_AddNumberToObject(ls, "min", q->min_scale);
            cJSON_AddNumberToObject(ls, "max", q->max_scale);
        }
    }
    cJSON_AddItemToObject(o, "data", data_json(&c->data, NULL));
    cJSON *st = cJSON_AddArrayToObject(o, "stages");
    for (int i = 0; st && i < c->n_stages; i++) cJSON_AddItemToArray(st, stage_json(&c->stages[i], &c->data, for_hash));
    return o;
}

char *tm_run_config_to_json(const tm_run_config *c)
{
    if (!c) return NULL;
    cJSON *o = config_json(c, 0);
    if (!o) return NULL;
    char *txt = cJSON_Print(o);
    cJSON_Delete(o);
    if (!txt) return NULL;
    size_t n = strlen(txt);
    char *r = tm_alloc(n + 2);
    if (r) {
        memcpy(r, txt, n);
        r[n] = '\n';
        r[n + 1] = 0;
    }
    cJSON_free(txt);
    return r;
}

uint64_t tm_run_config_hash(const tm_run_config *c)
{
    if (!c) return 0;
    cJSON *o = config_json(c, 1);
    char *txt = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!txt) return 0;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *q = (const unsigned char *)txt; *q; q++) {
        h ^= *q;
        h *= 1099511628211ull;
    }
    cJSON_free(txt);
    return h;
}
