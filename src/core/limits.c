/*
 * The process-wide table of limits that have no parameter struct of their
 * own (trimodal/core.h, docs/limits.md). Values are atomics, so readers on
 * any thread see a whole value; TRIMODAL_LIMITS is read once, on first use.
 * The defaults are the #defines of the owning layers' headers, which core
 * includes for their constants only.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/audio.h"
#include "trimodal/core.h"
#include "trimodal/data.h"
#include "trimodal/text.h"

typedef struct {
    const char *name;
    int64_t def, min, max;
} limit_info;

#define KIB ((int64_t)1 << 10)
#define MIB ((int64_t)1 << 20)
#define TIB ((int64_t)1 << 40)

/* In tm_limit order. */
static const limit_info infos[TM_LIMIT_COUNT] = {
    [TM_LIMIT_AUDIO_MIN_RATE] = {"audio_min_rate", TM_AUDIO_MIN_RATE, TM_AUDIO_MIN_RATE,
                                 TM_AUDIO_MAX_RATE},
    [TM_LIMIT_AUDIO_MAX_RATE] = {"audio_max_rate", TM_AUDIO_MAX_RATE, TM_AUDIO_MIN_RATE,
                                 TM_AUDIO_MAX_RATE},
    [TM_LIMIT_TOKENIZER_FILE_BYTES] = {"tokenizer_file_bytes",
                                       (int64_t)TM_TOKENIZER_MAX_FILE_BYTES, 1, TIB},
    [TM_LIMIT_TOKENIZER_JSON_DEPTH] = {"tokenizer_json_depth", TM_TOKENIZER_MAX_JSON_DEPTH, 1,
                                       1000 /* cJSON's own nesting limit */},
    [TM_LIMIT_TOKENIZER_VOCAB] = {"tokenizer_vocab", TM_TOKENIZER_MAX_VOCAB, 1,
                                  TM_TOKENIZER_MAX_VOCAB},
    [TM_LIMIT_TOKENIZER_TOKEN_BYTES] = {"tokenizer_token_bytes", TM_TOKENIZER_MAX_TOKEN_BYTES, 1,
                                        TM_TOKENIZER_MAX_TOKEN_BYTES},
    [TM_LIMIT_MANIFEST_WORDS] = {"manifest_words", TM_MANIFEST_MAX_WORDS, 1, MIB},
    [TM_LIMIT_DATASET_JSON_BYTES] = {"dataset_json_bytes", (int64_t)TM_DATASET_MAX_BYTES, 1,
                                     TIB},
    [TM_LIMIT_DATASET_CLASSES] = {"dataset_classes", TM_DATASET_MAX_CLASSES, 1, (int64_t)1 << 30},
    [TM_LIMIT_MODEL_CONFIG_BYTES] = {"model_config_bytes", 16 * MIB, 1, TIB},
    [TM_LIMIT_LABELS_JSON_BYTES] = {"labels_json_bytes", 16 * MIB, 1, TIB},
    [TM_LIMIT_TENSOR_ELEMENTS] = {"tensor_elements", (int64_t)1 << 40, 1, (int64_t)1 << 40},
    [TM_LIMIT_PREPROCESS_JSON_BYTES] = {"preprocess_json_bytes", MIB, 1, TIB},
    [TM_LIMIT_RUN_CONFIG_BYTES] = {"run_config_bytes", 4 * MIB, 1, TIB},
    [TM_LIMIT_MULTIPART_PARTS] = {"multipart_parts", 16, 1, 1024},
    [TM_LIMIT_CASCADE_JSON_BYTES] = {"cascade_json_bytes", MIB, 1, TIB},
    [TM_LIMIT_INDEX_MEDIA_BYTES] = {"index_media_bytes", 256 * MIB, 1, TIB},
    [TM_LIMIT_JSON_DEPTH] = {"json_depth", 1000, 1, 1000 /* cJSON's own nesting limit */},
};

static _Atomic int64_t values[TM_LIMIT_COUNT];
static atomic_int initialised; /* values[] hold the defaults */
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static tm_status env_status;
static char env_error[512];
static char hints[TM_LIMIT_COUNT][192];

static void set_defaults(void)
{
    for (int i = 0; i < TM_LIMIT_COUNT; i++) atomic_store(&values[i], infos[i].def);
}

static int valid(tm_limit l)
{
    return (int)l >= 0 && l < TM_LIMIT_COUNT;
}

/* "123", "64k", "16m", "1g" (binary multiples). 0 on success. */
static int parse_value(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 30) return -1;
    char buf[32];
    memcpy(buf, s, n);
    buf[n] = 0;
    int64_t mul = 1;
    char last = buf[n - 1];
    if (last == 'k' || last == 'K') mul = KIB;
    if (last == 'm' || last == 'M') mul = MIB;
    if (last == 'g' || last == 'G') mul = (int64_t)1 << 30;
    if (mul > 1) buf[--n] = 0;
    if (n == 0 || buf[0] < '0' || buf[0] > '9') return -1;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || v < 0 || v > INT64_MAX / mul) return -1;
    *out = (int64_t)v * mul;
    return 0;
}

static tm_status apply(const char *spec, const char *source, int64_t *vals)
{
    const char *p = spec;
    while (*p) {
        const char *item = p;
        size_t len = strcspn(p, ",");
        p += len;
        if (*p == ',') p++;
        while (len && (*item == ' ' || *item == '\t')) item++, len--;
        while (len && (item[len - 1] == ' ' || item[len - 1] == '\t')) len--;
        if (len == 0) continue;
        const char *eq = memchr(item, '=', len);
        if (!eq)
            return tm_fail(TM_ERR_INVALID, "%s: '%.*s' is not name=value (example: %s=1048576)",
                           source, (int)len, item, infos[TM_LIMIT_TOKENIZER_FILE_BYTES].name);
        size_t nlen = (size_t)(eq - item);
        int which = -1;
        for (int i = 0; i < TM_LIMIT_COUNT; i++)
            if (strlen(infos[i].name) == nlen && !memcmp(infos[i].name, item, nlen)) which = i;
        if (which < 0) {
            char names[1024];
            size_t at = 0;
            for (int i = 0; i < TM_LIMIT_COUNT && at < sizeof names; i++)
                at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", i ? ", " : "",
                                       infos[i].name);
            return tm_fail(TM_ERR_INVALID, "%s: unknown limit '%.*s'; the limits are: %s", source,
                           (int)nlen, item, names);
        }
        int64_t v;
        const limit_info *in = &infos[which];
        if (parse_value(eq + 1, len - nlen - 1, &v) || v < in->min || v > in->max)
            return tm_fail(TM_ERR_INVALID,
                           "%s: %s=%.*s: give an integer (k, m, g suffixes allowed) in %lld..%lld",
                           source, in->name, (int)(len - nlen - 1), eq + 1, (long long)in->min,
                           (long long)in->max);
        vals[which] = v;
    }
    return TM_OK;
}

/* Fills the table: the defaults, then TRIMODAL_LIMITS. A bad variable
 * leaves the defaults; its message is kept for tm_limits_init(), and the
 * caller's own last error is left as it was. */
static void ensure_init(void)
{
    if (atomic_load_explicit(&initialised, memory_order_acquire)) return;
    pthread_mutex_lock(&init_lock);
    if (!atomic_load_explicit(&initialised, memory_order_relaxed)) {
        set_defaults();
        for (int i = 0; i < TM_LIMIT_COUNT; i++)
            snprintf(hints[i], sizeof hints[i],
                     "%s; change it with TRIMODAL_LIMITS=%s=N or trimodal --limits %s=N",
                     infos[i].name, infos[i].name, infos[i].name);
        const char *e = getenv("TRIMODAL_LIMITS");
        if (e && *e) {
            char saved[1024];
            snprintf(saved, sizeof saved, "%s", tm_last_error());
            int64_t vals[TM_LIMIT_COUNT];
            for (int i = 0; i < TM_LIMIT_COUNT; i++) vals[i] = infos[i].def;
            env_status = apply(e, "TRIMODAL_LIMITS", vals);
            if (env_status)
                snprintf(env_error, sizeof env_error, "%s", tm_last_error());
            else
                for (int i = 0; i < TM_LIMIT_COUNT; i++) atomic_store(&values[i], vals[i]);
            if (saved[0])
                tm_fail(TM_ERR_INVALID, "%s", saved);
            else
                tm_clear_error();
        }
        atomic_store_explicit(&initialised, 1, memory_order_release);
    }
    pthread_mutex_unlock(&init_lock);
}

tm_status tm_limits_init(void)
{
    ensure_init();
    if (env_status) return tm_fail(env_status, "%s", env_error);
    return TM_OK;
}

int64_t tm_limit_get(tm_limit l)
{
    if (!valid(l)) return 0;
    if (!atomic_load_explicit(&initialised, memory_order_acquire)) ensure_init();
    return atomic_load_explicit(&values[l], memory_order_relaxed);
}

tm_status tm_limit_set(tm_limit l, int64_t v)
{
    if (!valid(l)) return tm_fail(TM_ERR_INVALID, "tm_limit_set: %d is not a limit", (int)l);
    const limit_info *in = &infos[l];
    if (v < in->min || v > in->max)
        return tm_fail(TM_ERR_INVALID, "limit %s: %lld is outside %lld..%lld", in->name,
                       (long long)v, (long long)in->min, (long long)in->max);
    if (!atomic_load_explicit(&initialised, memory_order_acquire)) ensure_init();
    atomic_store(&values[l], v);
    return TM_OK;
}

int64_t tm_limit_default(tm_limit l)
{
    return valid(l) ? infos[l].def : 0;
}

void tm_limit_range(tm_limit l, int64_t *min, int64_t *max)
{
    if (min) *min = valid(l) ? infos[l].min : 0;
    if (max) *max = valid(l) ? infos[l].max : 0;
}

const char *tm_limit_hint(tm_limit l)
{
    if (!valid(l)) return "";
    ensure_init();
    return hints[l];
}

const char *tm_limit_name(tm_limit l)
{
    return valid(l) ? infos[l].name : NULL;
}

int tm_limit_from_name(const char *name)
{
    if (name)
        for (int i = 0; i < TM_LIMIT_COUNT; i++)
            if (!strcmp(infos[i].name, name)) return i;
    char names[1024];
    size_t at = 0;
    for (int i = 0; i < TM_LIMIT_COUNT && at < sizeof names; i++)
        at += (size_t)snprintf(names + at, sizeof names - at, "%s%s", i ? ", " : "", infos[i].name);
    tm_fail(TM_ERR_INVALID, "unknown limit '%s'; the limits are: %s", name ? name : "(null)", names);
    return -1;
}

tm_status tm_limits_parse(const char *spec, const char *source)
{
    if (!spec) return tm_fail(TM_ERR_INVALID, "tm_limits_parse: spec is NULL");
    if (!source) source = "limits";
    if (!atomic_load_explicit(&initialised, memory_order_acquire)) ensure_init();
    int64_t vals[TM_LIMIT_COUNT];
    for (int i = 0; i < TM_LIMIT_COUNT; i++) vals[i] = atomic_load(&values[i]);
    tm_status s = apply(spec, source, vals);
    if (s) return s;
    for (int i = 0; i < TM_LIMIT_COUNT; i++) atomic_store(&values[i], vals[i]);
    return TM_OK;
}

void tm_limits_reset(void)
{
    if (!atomic_load_explicit(&initialised, memory_order_acquire)) ensure_init();
    set_defaults();
}

tm_status tm_json_check_depth(const char *text, size_t len, const char *what)
{
    if (!text) return TM_OK;
    int64_t limit = tm_limit_get(TM_LIMIT_JSON_DEPTH), depth = 0;
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\') i++; /* the escaped character */
            else if (c == '"') in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > limit)
                return tm_fail(TM_ERR_LIMIT,
                               "%s: JSON nested deeper than %lld levels (at byte %zu; limit %s)",
                               what ? what : "JSON", (long long)limit, i,
                               tm_limit_hint(TM_LIMIT_JSON_DEPTH));
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return TM_OK;
}
