/* preprocess.json: reading, validating and writing a model's front-end
 * settings. Every key is optional; unknown keys are errors, so a typo never
 * silently falls back to a default. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "trimodal/data.h"
#include "trimodal/io.h"

tm_preprocess_config tm_preprocess_default_config(void)
{
    tm_preprocess_config c;
    c.text = tm_tokenizer_encode_default_params();
    c.text.max_length = 32;
    c.text.pad_to_max_length = 1;
    c.image = tm_image_default_params();
    c.audio = tm_audio_default_params();
    return c;
}

/* ------------------------------------------------------------ readers */

typedef struct {
    const char *section;
    tm_status status;
} ctx;

static tm_status bad(ctx *c, const cJSON *item, const char *what)
{
    c->status = tm_fail(TM_ERR_INVALID, "preprocess.json: %s.%s: %s", c->section,
                        item->string ? item->string : "?", what);
    return c->status;
}

static int get_bool(ctx *c, const cJSON *item, int *out)
{
    if (!cJSON_IsBool(item)) return bad(c, item, "must be true or false"), 0;
    *out = cJSON_IsTrue(item);
    return 1;
}

static int get_int(ctx *c, const cJSON *item, long long lo, long long hi, long long *out)
{
    if (!cJSON_IsNumber(item)) return bad(c, item, "must be a number"), 0;
    double v = item->valuedouble;
    if (v != floor(v) || v < (double)lo || v > (double)hi) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be a whole number in %lld..%lld", lo, hi);
        return bad(c, item, msg), 0;
    }
    *out = (long long)v;
    return 1;
}

static int get_intv(ctx *c, const cJSON *item, int lo, int hi, int *out)
{
    long long v;
    if (!get_int(c, item, lo, hi, &v)) return 0;
    *out = (int)v;
    return 1;
}

static int get_float(ctx *c, const cJSON *item, float *out)
{
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble))
        return bad(c, item, "must be a finite number"), 0;
    *out = (float)item->valuedouble;
    return 1;
}

/* An enum given by name: names[i] is value i. */
static int get_enum(ctx *c, const cJSON *item, const char *const *names, int n, int *out)
{
    if (cJSON_IsString(item))
        for (int i = 0; i < n; i++)
            if (names[i] && !strcmp(item->valuestring, names[i])) {
                *out = i;
                return 1;
            }
    char msg[256];
    size_t k = (size_t)snprintf(msg, sizeof msg, "must be one of");
    for (int i = 0; i < n && k < sizeof msg; i++)
        if (names[i]) k += (size_t)snprintf(msg + k, sizeof msg - k, " \"%s\"", names[i]);
    return bad(c, item, msg), 0;
}

static int get_floats(ctx *c, const cJSON *item, float *out, int max, int *count)
{
    if (!cJSON_IsArray(item)) return bad(c, item, "must be an array of numbers"), 0;
    int n = cJSON_GetArraySize(item);
    if (n < 1 || n > max) {
        char msg[64];
        snprintf(msg, sizeof msg, "must hold 1 to %d numbers", max);
        return bad(c, item, msg), 0;
    }
    int i = 0;
    for (const cJSON *e = item->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
            return bad(c, item, "must hold finite numbers only"), 0;
        out[i] = (float)e->valuedouble;
    }
    *count = n;
    return 1;
}

static const char *const RESIZE_MODES[] = {"shorter", "exact"};
static const char *const FILTERS[] = {"bilinear", "bicubic", "nearest"};
static const char *const WINDOWS[] = {"hann", "hamming", "rect"};
static const char *const PAD_MODES[] = {"reflect", "constant"};
static const char *const MEL_SCALES[] = {"htk", "slaney"};
static const char *const MEL_NORMS[] = {"none", "slaney"};
static const char *const LOGS[] = {"none", "ln", "log10", "db"};
static const char *const RESAMPLERS[] = {"sinc_best", "sinc_medium", "sinc_fastest",
                                         "zero_order_hold", "linear"};
_Static_assert(TM_FILTER_COUNT == 3 && TM_WINDOW_COUNT == 3 && TM_MEL_SCALE_COUNT == 2 &&
                   TM_MEL_NORM_COUNT == 2 && TM_LOG_COUNT == 4 && TM_RESAMPLE_COUNT == 5,
               "update the names in preprocess_config.c");
#define N(a) ((int)(sizeof(a) / sizeof *(a)))

static int parse_text(ctx *c, const cJSON *obj, tm_tokenizer_encode_params *t)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        const char *k = it->string;
        long long v;
        if (!strcmp(k, "max_length")) {
            if (!get_intv(c, it, 0, 1 << 20, &t->max_length)) return 0;
        } else if (!strcmp(k, "add_bos")) {
            if (!get_bool(c, it, &t->add_bos)) return 0;
        } else if (!strcmp(k, "add_eos")) {
            if (!get_bool(c, it, &t->add_eos)) return 0;
        } else if (!strcmp(k, "parse_special")) {
            if (!get_bool(c, it, &t->parse_special)) return 0;
        } else if (!strcmp(k, "pad_to_max_length")) {
            if (!get_bool(c, it, &t->pad_to_max_length)) return 0;
        } else if (!strcmp(k, "max_text_bytes")) {
            if (!get_int(c, it, 1, 1LL << 40, &v)) return 0;
            t->max_text_bytes = (size_t)v;
        } else {
            return bad(c, it, "unknown key"), 0;
        }
    }
    if (t->pad_to_max_length && t->max_length < 1) {
        c->status = tm_fail(TM_ERR_INVALID,
                            "preprocess.json: text.pad_to_max_length needs max_length >= 1");
        return 0;
    }
    return 1;
}

static int parse_image(ctx *c, const cJSON *obj, tm_image_params *p)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        const char *k = it->string;
        int e, n;
        if (!strcmp(k, "mode")) {
            if (!get_enum(c, it, RESIZE_MODES, N(RESIZE_MODES), &e)) return 0;
            p->mode = (tm_resize_mode)e;
        } else if (!strcmp(k, "size")) {
            if (!get_intv(c, it, 0, 1 << 16, &p->size)) return 0;
        } else if (!strcmp(k, "height")) {
            if (!get_intv(c, it, 1, 1 << 16, &p->height)) return 0;
        } else if (!strcmp(k, "width")) {
            if (!get_intv(c, it, 1, 1 << 16, &p->width)) return 0;
        } else if (!strcmp(k, "filter")) {
            if (!get_enum(c, it, FILTERS, N(FILTERS), &e)) return 0;
            p->filter = (tm_resize_filter)e;
        } else if (!strcmp(k, "antialias")) {
            if (!get_bool(c, it, &p->antialias)) return 0;
        } else if (!strcmp(k, "channels")) {
            if (!get_intv(c, it, 1, 3, &p->channels) || p->channels == 2)
                return bad(c, it, "must be 1 or 3"), 0;
        } else if (!strcmp(k, "mean") || !strcmp(k, "std")) {
            float v[3];
            if (!get_floats(c, it, v, 3, &n)) return 0;
            float *dst = !strcmp(k, "mean") ? p->mean : p->std;
            for (int i = 0; i < 3; i++) dst[i] = v[n == 1 ? 0 : (i < n ? i : n - 1)];
        } else if (!strcmp(k, "patch")) {
            if (!get_intv(c, it, 0, 1 << 12, &p->patch)) return 0;
        } else {
            return bad(c, it, "unknown key"), 0;
        }
    }
    int ndim;
    int64_t shape[3];
    if (tm_image_preprocess_shape(&ndim, shape, *p) != TM_OK) {
        c->status = tm_fail(TM_ERR_INVALID, "preprocess.json: image: %s", tm_last_error());
        return 0;
    }
    return 1;
}

static int parse_audio(ctx *c, const cJSON *obj, tm_audio_params *p)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        const char *k = it->string;
        int e;
        if (!strcmp(k, "sample_rate")) {
            if (!get_intv(c, it, 1, 768000, &p->sample_rate)) return 0;
        } else if (!strcmp(k, "n_fft")) {
            if (!get_intv(c, it, 2, 65536, &p->n_fft)) return 0;
        } else if (!strcmp(k, "win_length")) {
            if (!get_intv(c, it, 0, 65536, &p->win_length)) return 0;
        } else if (!strcmp(k, "hop")) {
            if (!get_intv(c, it, 1, 65536, &p->hop)) return 0;
        } else if (!strcmp(k, "window")) {
            if (!get_enum(c, it, WINDOWS, N(WINDOWS), &e)) return 0;
            p->window = (tm_window)e;
        } else if (!strcmp(k, "center")) {
            if (!get_bool(c, it, &p->center)) return 0;
        } else if (!strcmp(k, "pad_mode")) {
            if (!get_enum(c, it, PAD_MODES, N(PAD_MODES), &e)) return 0;
            p->pad_mode = (tm_stft_pad)e;
        } else if (!strcmp(k, "power")) {
            if (!get_float(c, it, &p->power)) return 0;
        } else if (!strcmp(k, "n_mels")) {
            if (!get_intv(c, it, 1, 4096, &p->n_mels)) return 0;
        } else if (!strcmp(k, "f_min")) {
            if (!get_float(c, it, &p->f_min)) return 0;
        } else if (!strcmp(k, "f_max")) {
            if (!get_float(c, it, &p->f_max)) return 0;
        } else if (!strcmp(k, "mel_scale")) {
            if (!get_enum(c, it, MEL_SCALES, N(MEL_SCALES), &e)) return 0;
            p->mel_scale = (tm_mel_scale)e;
        } else if (!strcmp(k, "mel_norm")) {
            if (!get_enum(c, it, MEL_NORMS, N(MEL_NORMS), &e)) return 0;
            p->mel_norm = (tm_mel_norm)e;
        } else if (!strcmp(k, "log")) {
            if (!get_enum(c, it, LOGS, N(LOGS), &e)) return 0;
            p->log = (tm_log_kind)e;
        } else if (!strcmp(k, "log_floor")) {
            if (!get_float(c, it, &p->log_floor)) return 0;
        } else if (!strcmp(k, "top_db")) {
            if (!get_float(c, it, &p->top_db)) return 0;
        } else if (!strcmp(k, "whisper_norm")) {
            if (!get_bool(c, it, &p->whisper_norm)) return 0;
        } else if (!strcmp(k, "frames")) {
            if (!get_intv(c, it, 0, 1 << 24, &p->target_frames)) return 0;
        } else if (!strcmp(k, "resampler")) {
            if (!get_enum(c, it, RESAMPLERS, N(RESAMPLERS), &e)) return 0;
            p->resampler = (tm_resampler)e;
        } else {
            return bad(c, it, "unknown key"), 0;
        }
    }
    if (tm_audio_params_check(p) != TM_OK) {
        c->status = tm_fail(TM_ERR_INVALID, "preprocess.json: audio: %s", tm_last_error());
        return 0;
    }
    return 1;
}

tm_status tm_preprocess_config_parse(tm_preprocess_config *out, const char *json, size_t len)
{
    if (!out || (!json && len)) return tm_fail(TM_ERR_INVALID, "preprocess_config_parse: NULL");
    size_t max_bytes = (size_t)tm_limit_get(TM_LIMIT_PREPROCESS_JSON_BYTES);
    if (len > max_bytes)
        return tm_fail(TM_ERR_LIMIT,
                       "preprocess.json: %zu bytes is over the limit of %zu bytes (limit %s)", len,
                       max_bytes, tm_limit_hint(TM_LIMIT_PREPROCESS_JSON_BYTES));
    tm_status ds = tm_json_check_depth(json, len, "preprocess.json");
    if (ds) return ds;
    cJSON *root = cJSON_ParseWithLength(json ? json : "", len);
    if (!root) return tm_fail(TM_ERR_FORMAT, "preprocess.json: not valid JSON");
    tm_preprocess_config c = tm_preprocess_default_config();
    ctx cx = {"", TM_OK};
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return tm_fail(TM_ERR_INVALID, "preprocess.json: the top level must be an object");
    }
    for (const cJSON *sec = root->child; sec && !cx.status; sec = sec->next) {
        cx.section = sec->string;
        if (strcmp(sec->string, "text") && strcmp(sec->string, "image") &&
            strcmp(sec->string, "audio")) {
            cx.status = tm_fail(TM_ERR_INVALID,
                                "preprocess.json: unknown section \"%s\" (expected text, image, "
                                "audio)", sec->string);
            break;
        }
        if (!cJSON_IsObject(sec)) {
            cx.status = tm_fail(TM_ERR_INVALID, "preprocess.json: %s must be an object", sec->string);
            break;
        }
        if (!strcmp(sec->string, "text")) parse_text(&cx, sec, &c.text);
        else if (!strcmp(sec->string, "image")) parse_image(&cx, sec, &c.image);
        else parse_audio(&cx, sec, &c.audio);
    }
    cJSON_Delete(root);
    if (cx.status) return cx.status;
    *out = c;
    return TM_OK;
}

tm_status tm_preprocess_config_load(tm_preprocess_config *out, const char *path)
{
    char *buf;
    size_t n;
    tm_status s =
        tm_read_file(path, (size_t)tm_limit_get(TM_LIMIT_PREPROCESS_JSON_BYTES), &buf, &n);
    if (s == TM_ERR_LIMIT)
        return tm_fail(s, "%s (limit %s)", tm_last_error(),
                       tm_limit_hint(TM_LIMIT_PREPROCESS_JSON_BYTES));
    if (s) return s;
    s = tm_preprocess_config_parse(out, buf, n);
    if (s) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tm_last_error());
        tm_fail(s, "%s: %s", path, msg);
    }
    tm_free(buf);
    return s;
}

tm_status tm_preprocess_config_to_json(const tm_preprocess_config *c, char **out)
{
    *out = NULL;
    const tm_tokenizer_encode_params *t = &c->text;
    const tm_image_params *im = &c->image;
    const tm_audio_params *a = &c->audio;
    int nc = im->channels == 3 ? 3 : 1;
    char mean[96], std[96];
    if (nc == 3) {
        snprintf(mean, sizeof mean, "[%.9g, %.9g, %.9g]", im->mean[0], im->mean[1], im->mean[2]);
        snprintf(std, sizeof std, "[%.9g, %.9g, %.9g]", im->std[0], im->std[1], im->std[2]);
    } else {
        snprintf(mean, sizeof mean, "[%.9g]", im->mean[0]);
        snprintf(std, sizeof std, "[%.9g]", im->std[0]);
    }
    size_t cap = 4096;
    char *s = tm_alloc(cap);
    if (!s) return TM_ERR_NOMEM;
    int n = snprintf(
        s, cap,
        "{\n"
        "  \"text\": {\"max_length\": %d, \"add_bos\": %s, \"add_eos\": %s, "
        "\"parse_special\": %s, \"pad_to_max_length\": %s, \"max_text_bytes\": %zu},\n"
        "  \"image\": {\"mode\": \"%s\", \"size\": %d, \"height\": %d, \"width\": %d, "
        "\"filter\": \"%s\", \"antialias\": %s, \"channels\": %d, \"mean\": %s, \"std\": %s, "
        "\"patch\": %d},\n"
        "  \"audio\": {\"sample_rate\": %d, \"n_fft\": %d, \"win_length\": %d, \"hop\": %d, "
        "\"window\": \"%s\", \"center\": %s, \"pad_mode\": \"%s\", \"power\": %.9g, "
        "\"n_mels\": %d, \"f_min\": %.9g, \"f_max\": %.9g, \"mel_scale\": \"%s\", "
        "\"mel_norm\": \"%s\", \"log\": \"%s\", \"log_floor\": %.9g, \"top_db\": %.9g, "
        "\"whisper_norm\": %s, \"frames\": %d, \"resampler\": \"%s\"}\n"
        "}\n",
        t->max_length, t->add_bos ? "true" : "false", t->add_eos ? "true" : "false",
        t->parse_special ? "true" : "false", t->pad_to_max_length ? "true" : "false",
        t->max_text_bytes, RESIZE_MODES[im->mode], im->size, im->height, im->width,
        FILTERS[im->filter], im->antialias ? "true" : "false", im->channels, mean, std, im->patch,
        a->sample_rate, a->n_fft, a->win_length, a->hop, WINDOWS[a->window],
        a->center ? "true" : "false", PAD_MODES[a->pad_mode], a->power, a->n_mels, a->f_min,
        a->f_max, MEL_SCALES[a->mel_scale], MEL_NORMS[a->mel_norm], LOGS[a->log], a->log_floor,
        a->top_db, a->whisper_norm ? "true" : "false", a->target_frames,
        RESAMPLERS[a->resampler]);
    if (n < 0 || (size_t)n >= cap) {
        tm_free(s);
        return tm_fail(TM_ERR_INTERNAL, "preprocess_config_to_json: buffer too small");
    }
    *out = s;
    return TM_OK;
}

tm_status tm_preprocess_config_save(const tm_preprocess_config *c, const char *path)
{
    char *json;
    tm_status s = tm_preprocess_config_to_json(c, &json);
    if (s) return s;
    s = tm_write_file_atomic(path, json, strlen(json));
    tm_free(json);
    return s;
}
