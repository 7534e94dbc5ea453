/* Dataset manifests: JSON Lines read in pieces with a cap on each line, every
 * row validated with a message naming the file and line, and dataset.json
 * (classes, splits, provenance) read from the same folder.
 *
 * Strings live in a bump pool owned by the manifest, so a row is a few
 * pointers and a loaded manifest is read-only: any number of threads may
 * read it. Ids, split names, extra keys and class names go through one
 * small open-addressing hash map, so nothing here is quadratic in the
 * number of rows or of keys in a line. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trimodal/data.h"
#include "trimodal/io.h"

/* ------------------------------------------------------------ string pool */

typedef struct pool_block {
    struct pool_block *next;
    size_t used, size;
    char data[];
} pool_block;

typedef struct {
    pool_block *head;
} pool;

static void *pool_alloc(pool *p, size_t n, size_t align)
{
    pool_block *b = p->head;
    if (b) {
        size_t at = (b->used + align - 1) & ~(align - 1);
        if (at <= b->size && n <= b->size - at) {
            b->used = at + n;
            return b->data + at;
        }
    }
    size_t size = n + align > ((size_t)1 << 20) ? n + align : ((size_t)1 << 20);
    pool_block *nb = malloc(sizeof *nb + size);
    if (!nb) return NULL;
    nb->next = p->head;
    nb->size = size;
    p->head = nb;
    size_t at = ((uintptr_t)nb->data + align - 1) / align * align - (uintptr_t)nb->data;
    nb->used = at + n;
    return nb->data + at;
}

static char *pool_strndup(pool *p, const char *s, size_t n)
{
    char *d = pool_alloc(p, n + 1, 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void pool_free(pool *p)
{
    for (pool_block *b = p->head, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    p->head = NULL;
}

/* ----------------------------------------------------- string -> int map */

typedef struct {
    const char **keys; /* pooled strings; NULL: empty slot */
    int64_t *vals;
    size_t cap, count;
} strmap;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int64_t strmap_get(const strmap *m, const char *key)
{
    if (!m->cap) return -1;
    for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i]) return -1;
        if (!strcmp(m->keys[i], key)) return m->vals[i];
    }
}

/* Inserts key (which must be absent, and must stay alive) -> val. */
static int strmap_put(strmap *m, const char *key, int64_t val)
{
    if ((m->count + 1) * 2 > m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 64;
        const char **nk = calloc(ncap, sizeof *nk);
        int64_t *nv = malloc(ncap * sizeof *nv);
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return 0;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->keys[i]) continue;
            size_t j = hash_str(m->keys[i]) & (ncap - 1);
            while (nk[j])
                j = (j + 1) & (ncap - 1);
            nk[j] = m->keys[i];
            nv[j] = m->vals[i];
        }
        free(m->keys);
        free(m->vals);
        m->keys = nk;
        m->vals = nv;
        m->cap = ncap;
    }
    size_t i = hash_str(key) & (m->cap - 1);
    while (m->keys[i])
        i = (i + 1) & (m->cap - 1);
    m->keys[i] = key;
    m->vals[i] = val;
    m->count++;
    return 1;
}

static void strmap_free(strmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* ------------------------------------------------------------- manifest */

typedef struct {
    int32_t key;
    const char *value;
} extra_field;

typedef struct {
    int64_t extra_begin;
    int32_t extra_count;
    const char *label_name; /* as written, or NULL */
} row_ext;

struct tm_manifest {
    char *path, *dir;
    pool strings;
    tm_manifest_row *rows;
    row_ext *ext;
    int64_t n_rows, cap_rows;
    extra_field *extras;
    int64_t n_extras, cap_extras;
    strmap ids;
    /* extra keys */
    strmap keys;
    const char **key_names;
    int64_t *key_last_row; /* the row that last used key k: finds repeats */
    int n_keys, cap_keys;
    /* splits */
    strmap splits;
    const char **split_names;
    int64_t *split_sizes;
    int n_splits, cap_splits;
    /* classes */
    int32_t n_classes;
    const char **class_names; /* n_classes entries or NULL */
    strmap class_ids;
    int label_kind; /* 0 none yet, 1 numbers, 2 names */
    /* dataset.json */
    char *dataset_path;
    cJSON *dataset;
    const char *dataset_name;
    strmap dataset_splits; /* name -> expected rows */
    char **dataset_values;
    int n_dataset_values;
    char **label_texts; /* decimal text of each class index, for tm_manifest_field */
    /* problems */
    int64_t n_problems;
    char **problems;
    int64_t *problem_lines;
    int max_problems, keep_going;
};

static const char *const standard_splits[] = {"train", "val", "validation", "test", "dev"};

static tm_status nomem(void)
{
    return tm_fail(TM_ERR_NOMEM, "manifest: out of memory");
}

/* A row-level problem: fails the load, or with keep_going records it. The
 * message is "FILE:LINE: ...". Returns the status to propagate: TM_OK when
 * recorded (the caller then drops the row). */
static tm_status problem(tm_manifest *m, int64_t line, tm_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static tm_status problem(tm_manifest *m, int64_t line, tm_status s, const char *fmt, ...)
{
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!m->keep_going) return tm_fail(s, "%s:%lld: %s", m->path, (long long)line, msg);
    if (m->n_problems < m->max_problems) {
        size_t n = strlen(m->path) + strlen(msg) + 32;
        char *p = malloc(n);
        if (!p) return nomem();
        snprintf(p, n, "%s:%lld: %s", m->path, (long long)line, msg);
        m->problems[m->n_problems] = p;
        m->problem_lines[m->n_problems] = line;
    }
    m->n_problems++;
    return TM_OK;
}

/* -------------------------------------------------------- row building */

/* Result of checking one row: OK (keep), DROP (recorded problem), or a
 * failure status to return. */
#define ROW_DROP (-1)

static int is_integral(double v)
{
    return isfinite(v) && v == floor(v) && fabs(v) < 9007199254740992.0;
}

static const char *type_name(const cJSON *v)
{
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "invalid";
}

static char *resolve(tm_manifest *m, const char *p)
{
    if (p[0] == '/' || !strcmp(m->dir, ".")) return pool_strndup(&m->strings, p, strlen(p));
    size_t a = strlen(m->dir), b = strlen(p);
    char *d = pool_alloc(&m->strings, a + b + 2, 1);
    if (!d) return NULL;
    memcpy(d, m->dir, a);
    d[a] = '/';
    memcpy(d + a + 1, p, b + 1);
    return d;
}

static int ascii_ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z') x += 32;
        if (y >= 'A' && y <= 'Z') y += 32;
        if (x != y) return 0;
    }
    return 1;
}

/* The words' byte ranges in the text: each found left to right after the
 * previous match, ASCII case-insensitively; -1 when absent. */
static void locate_words(tm_manifest_word *w, int n, const char *text, size_t len)
{
    size_t from = 0;
    for (int i = 0; i < n; i++) {
        w[i].text_begin = w[i].text_end = -1;
        size_t wl = strlen(w[i].w);
        if (!text || !wl || wl > len) continue;
        for (size_t at = from; at + wl <= len; at++)
            if (ascii_ieq(text + at, w[i].w, wl)) {
                w[i].text_begin = (int64_t)at;
                w[i].text_end = (int64_t)(at + wl);
                from = at + wl;
                break;
            }
    }
}

static int split_known(const tm_manifest *m, const char *s)
{
    if (strmap_get(&m->dataset_splits, s) >= 0) return 1;
    for (size_t i = 0; i < sizeof standard_splits / sizeof *standard_splits; i++)
        if (!strcmp(standard_splits[i], s)) return 1;
    return 0;
}

static tm_status add_split(tm_manifest *m, const char *name, const char **out)
{
    int64_t k = strmap_get(&m->splits, name);
    if (k < 0) {
        if (m->n_splits == m->cap_splits) {
            int nc = m->cap_splits ? m->cap_splits * 2 : 8;
            const char **nn = realloc(m->split_names, (size_t)nc * sizeof *nn);
            if (!nn) return nomem();
            m->split_names = nn;
            int64_t *ns = realloc(m->split_sizes, (size_t)nc * sizeof *ns);
            if (!ns) return nomem();
            m->split_sizes = ns;
            m->cap_splits = nc;
        }
        char *d = pool_strndup(&m->strings, name, strlen(name));
        if (!d) return nomem();
        k = m->n_splits++;
        m->split_names[k] = d;
        m->split_sizes[k] = 0;
        if (!strmap_put(&m->splits, d, k)) return nomem();
    }
    *out = m->split_names[k];
    return TM_OK;
}

static tm_status add_extra(tm_manifest *m, int64_t line, const char *key, const cJSON *v,
                           int *dropped)
{
    int64_t k = strmap_get(&m->keys, key);
    if (k < 0) {
        if (m->n_keys == m->cap_keys) {
            int nc = m->cap_keys ? m->cap_keys * 2 : 16;
            const char **nn = realloc(m->key_names, (size_t)nc * sizeof *nn);
            if (!nn) return nomem();
            m->key_names = nn;
            int64_t *nl = realloc(m->key_last_row, (size_t)nc * sizeof *nl);
            if (!nl) return nomem();
            m->key_last_row = nl;
            m->cap_keys = nc;
        }
        char *d = pool_strndup(&m->strings, key, strlen(key));
        if (!d) return nomem();
        k = m->n_keys++;
        m->key_names[k] = d;
        m->key_last_row[k] = -1;
        if (!strmap_put(&m->keys, d, k)) return nomem();
    }
    if (m->key_last_row[k] == line) {
        *dropped = 1;
        return problem(m, line, TM_ERR_INVALID, "the key \"%s\" appears twice; keep one", key);
    }
    m->key_last_row[k] = line;
    const char *value;
    if (cJSON_IsString(v)) {
        value = pool_strndup(&m->strings, v->valuestring, strlen(v->valuestring));
    } else {
        char *js = cJSON_PrintUnformatted(v);
        if (!js) return nomem();
        value = pool_strndup(&m->strings, js, strlen(js));
        cJSON_free(js);
    }
    if (!value) return nomem();
    if (m->n_extras == m->cap_extras) {
        int64_t nc = m->cap_extras ? m->cap_extras * 2 : 256;
        extra_field *ne = realloc(m->extras, (size_t)nc * sizeof *ne);
        if (!ne) return nomem();
        m->extras = ne;
        m->cap_extras = nc;
    }
    m->extras[m->n_extras].key = (int32_t)k;
    m->extras[m->n_extras].value = value;
    m->n_extras++;
    return TM_OK;
}

#define DROP(...)                                                                                  \
    do {                                                                                           \
        tm_status s_ = problem(m, line, __VA_ARGS__);                                              \
        return s_ ? (int)s_ : ROW_DROP;                                                            \
    } while (0)

static int parse_words(tm_manifest *m, int64_t line, const cJSON *arr, tm_manifest_row *r)
{
    if (!cJSON_IsArray(arr))
        DROP(TM_ERR_INVALID, "\"words\" must be an array of {\"w\", \"start\", \"end\"}, not %s",
             type_name(arr));
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (++n > tm_limit_get(TM_LIMIT_MANIFEST_WORDS))
            DROP(TM_ERR_LIMIT, "\"words\" has more than %lld entries (limit %s)",
                 (long long)tm_limit_get(TM_LIMIT_MANIFEST_WORDS),
                 tm_limit_hint(TM_LIMIT_MANIFEST_WORDS));
    }
    if (!n) return TM_OK;
    tm_manifest_word *w = pool_alloc(&m->strings, (size_t)n * sizeof *w, 8);
    if (!w) return nomem();
    int i = 0;
    double prev = 0;
    cJSON_ArrayForEach(it, arr)
    {
        const cJSON *ww = cJSON_GetObjectItemCaseSensitive(it, "w");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "start");
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(it, "end");
        if (!cJSON_IsObject(it) || !cJSON_IsString(ww) || !cJSON_IsNumber(st) ||
            !cJSON_IsNumber(en))
            DROP(TM_ERR_INVALID,
                 "\"words\"[%d] must be an object {\"w\": string, \"start\": seconds, \"end\": "
                 "seconds}",
                 i);
        double a = st->valuedouble, b = en->valuedouble;
        if (!isfinite(a) || !isfinite(b) || a < 0 || b < a)
            DROP(TM_ERR_INVALID, "\"words\"[%d] (\"%.40s\"): need 0 <= start <= end, got %g .. %g",
                 i, ww->valuestring, a, b);
        if (a < prev)
            DROP(TM_ERR_INVALID,
                 "\"words\"[%d] (\"%.40s\") starts at %g s, before the previous word (%g s); "
                 "list words in time order",
                 i, ww->valuestring, a, prev);
        prev = a;
        w[i].w = pool_strndup(&m->strings, ww->valuestring, strlen(ww->valuestring));
        if (!w[i].w) return nomem();
        w[i].start = a;
        w[i].end = b;
        i++;
    }
    r->words = w;
    r->n_words = n;
    return TM_OK;
}

static int parse_region(tm_manifest *m, int64_t line, const cJSON *arr, tm_manifest_row *r)
{
    double v[4];
    int n = 0;
    const cJSON *it;
    if (cJSON_IsArray(arr)) cJSON_ArrayForEach(it, arr)
        {
            if (n == 4 || !cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
                n = -1;
                break;
            }
            v[n++] = it->valuedouble;
        }
    if (n != 4) DROP(TM_ERR_INVALID, "\"region\" must be [x0, y0, x1, y1], four numbers in pixels");
    if (v[0] < 0 || v[1] < 0 || v[2] <= v[0] || v[3] <= v[1] || v[2] > 1e9 || v[3] > 1e9)
        DROP(TM_ERR_INVALID, "\"region\" [%g, %g, %g, %g]: need 0 <= x0 < x1 and 0 <= y0 < y1",
             v[0], v[1], v[2], v[3]);
    r->has_region = 1;
    for (int i = 0; i < 4; i++)
        r->region[i] = (float)v[i];
    return TM_OK;
}

static int get_media(tm_manifest *m, int64_t line, const cJSON *v, const char *key,
                     const char **as_written, const char **path)
{
    if (!v || cJSON_IsNull(v)) return TM_OK;
    if (!cJSON_IsString(v))
        DROP(TM_ERR_INVALID, "\"%s\" must be a path (a string) or null, not %s", key, type_name(v));
    if (!v->valuestring[0])
        DROP(TM_ERR_INVALID, "\"%s\" is an empty path; use null or leave it out", key);
    *as_written = pool_strndup(&m->strings, v->valuestring, strlen(v->valuestring));
    *path = *as_written ? resolve(m, v->valuestring) : NULL;
    if (!*as_written || !*path) return nomem();
    return TM_OK;
}

static int get_string(tm_manifest *m, int64_t line, const cJSON *v, const char *key,
                      const char **out, size_t *len)
{
    if (!v || cJSON_IsNull(v)) return TM_OK;
    if (!cJSON_IsString(v))
        DROP(TM_ERR_INVALID, "\"%s\" must be a string or null, not %s", key, type_name(v));
    size_t n = strlen(v->valuestring);
    *out = pool_strndup(&m->strings, v->valuestring, n);
    if (!*out) return nomem();
    if (len) *len = n;
    return TM_OK;
}

static const char *const known_keys[] = {"id",    "text",       "image", "audio", "label",
                                         "split", "transcript", "words", "region"};
#define N_KNOWN ((int)(sizeof known_keys / sizeof *known_keys))

/* Checks one parsed line and appends it as a row. */
static int add_row(tm_manifest *m, int64_t line, const cJSON *obj)
{
    if (!cJSON_IsObject(obj))
        DROP(TM_ERR_FORMAT, "a line must be one JSON object {\"id\": ..., ...}, not %s",
             type_name(obj));
    const cJSON *known[N_KNOWN] = {0};
    const cJSON *it;
    int64_t row = m->n_rows;
    int64_t extra_begin = m->n_extras;
    int dropped = 0;
    /* first pass: known keys, and repeats of them */
    cJSON_ArrayForEach(it, obj)
    {
        for (int k = 0; k < N_KNOWN; k++)
            if (!strcmp(it->string, known_keys[k])) {
                if (known[k])
                    DROP(TM_ERR_INVALID, "the key \"%s\" appears twice; keep one", it->string);
                known[k] = it;
            }
    }
    tm_manifest_row r;
    memset(&r, 0, sizeof r);
    r.line = line;
    r.label = TM_LABEL_NONE;
    const char *label_name = NULL;
    int rc;

    /* id */
    const cJSON *id = known[0];
    char idbuf[32];
    if (!id || cJSON_IsNull(id)) DROP(TM_ERR_INVALID, "no \"id\"; every row needs a unique id");
    if (cJSON_IsString(id)) {
        if (!id->valuestring[0]) DROP(TM_ERR_INVALID, "\"id\" is empty");
        r.id = id->valuestring;
    } else if (cJSON_IsNumber(id) && is_integral(id->valuedouble)) {
        snprintf(idbuf, sizeof idbuf, "%lld", (long long)id->valuedouble);
        r.id = idbuf;
    } else {
        DROP(TM_ERR_INVALID, "\"id\" must be a string or an integer, not %s", type_name(id));
    }
    int64_t prev = strmap_get(&m->ids, r.id);
    if (prev >= 0)
        DROP(TM_ERR_INVALID, "duplicate id \"%.200s\" (first on line %lld); ids must be unique",
             r.id, (long long)m->rows[prev].line);

    if ((rc = get_string(m, line, known[1], "text", &r.text, &r.text_len))) return rc;
    if ((rc = get_media(m, line, known[2], "image", &r.image, &r.image_path))) return rc;
    if ((rc = get_media(m, line, known[3], "audio", &r.audio, &r.audio_path))) return rc;
    if (r.text) r.present |= TM_MODALITY_TEXT;
    if (r.image) r.present |= TM_MODALITY_IMAGE;
    if (r.audio) r.present |= TM_MODALITY_AUDIO;

    /* label: a number or a name; names resolve after the whole file */
    const cJSON *lab = known[4];
    if (lab && !cJSON_IsNull(lab)) {
        int kind;
        if (cJSON_IsNumber(lab)) {
            double v = lab->valuedouble;
            if (!is_integral(v) || v < 0)
                DROP(TM_ERR_INVALID, "\"label\" %g is not a class index (an integer >= 0)", v);
            if (m->class_names && v >= m->n_classes)
                DROP(TM_ERR_INVALID,
                     "\"label\" %lld is out of range: dataset.json lists %d classes (0..%d)",
                     (long long)v, m->n_classes, m->n_classes - 1);
            if (v >= tm_limit_get(TM_LIMIT_DATASET_CLASSES))
                DROP(TM_ERR_INVALID, "\"label\" %lld is over the limit of %lld classes (limit %s)",
                     (long long)v, (long long)tm_limit_get(TM_LIMIT_DATASET_CLASSES),
                     tm_limit_hint(TM_LIMIT_DATASET_CLASSES));
            r.label = (int32_t)v;
            kind = 1;
        } else if (cJSON_IsString(lab) && lab->valuestring[0]) {
            if (m->class_names) {
                int64_t c = strmap_get(&m->class_ids, lab->valuestring);
                if (c < 0)
                    DROP(TM_ERR_INVALID,
                         "\"label\" \"%.100s\" is not one of the %d classes in dataset.json",
                         lab->valuestring, m->n_classes);
                r.label = (int32_t)c;
            }
            label_name = lab->valuestring;
            kind = 2;
        } else {
            DROP(TM_ERR_INVALID, "\"label\" must be a class index, a class name or null, not %s",
                 cJSON_IsString(lab) ? "an empty string" : type_name(lab));
        }
        if (!m->class_names) {
            if (m->label_kind && m->label_kind != kind)
                DROP(TM_ERR_INVALID,
                     "\"label\" is a %s but earlier rows use %s; without dataset.json "
                     "\"classes\" a file must use one kind",
                     kind == 1 ? "number" : "name", kind == 1 ? "names" : "numbers");
            m->label_kind = kind;
        }
    }

    const cJSON *sp = known[5];
    if (sp && !cJSON_IsNull(sp)) {
        if (!cJSON_IsString(sp) || !sp->valuestring[0])
            DROP(TM_ERR_INVALID, "\"split\" must be a non-empty string such as \"train\", not %s",
                 cJSON_IsString(sp) ? "an empty string" : type_name(sp));
    }
    if ((rc = get_string(m, line, known[6], "transcript", &r.transcript, NULL))) return rc;
    if (known[7] && !cJSON_IsNull(known[7])) {
        if (!r.audio)
            DROP(TM_ERR_INVALID, "\"words\" gives audio timings but the row has no \"audio\"");
        if ((rc = parse_words(m, line, known[7], &r))) return rc;
        locate_words((tm_manifest_word *)r.words, r.n_words, r.text ? r.text : r.transcript,
                     r.text ? r.text_len : (r.transcript ? strlen(r.transcript) : 0));
    }
    if (known[8] && !cJSON_IsNull(known[8])) {
        if (!r.image)
            DROP(TM_ERR_INVALID, "\"region\" is a part of the image but the row has no \"image\"");
        if ((rc = parse_region(m, line, known[8], &r))) return rc;
    }

    /* extra fields */
    cJSON_ArrayForEach(it, obj)
    {
        int k;
        for (k = 0; k < N_KNOWN; k++)
            if (!strcmp(it->string, known_keys[k])) break;
        if (k < N_KNOWN) continue;
        tm_status s = add_extra(m, line, it->string, it, &dropped);
        if (s) return s;
        if (dropped) {
            m->n_extras = extra_begin;
            return ROW_DROP;
        }
    }

    /* everything checked: commit */
    r.id = pool_strndup(&m->strings, r.id, strlen(r.id));
    if (!r.id) return nomem();
    if (sp && cJSON_IsString(sp)) {
        tm_status s = add_split(m, sp->valuestring, &r.split);
        if (s) return s;
        m->split_sizes[strmap_get(&m->splits, r.split)]++;
    }
    if (label_name) {
        label_name = pool_strndup(&m->strings, label_name, strlen(label_name));
        if (!label_name) return nomem();
    }
    if (m->n_rows == m->cap_rows) {
        int64_t nc = m->cap_rows ? m->cap_rows * 2 : 1024;
        tm_manifest_row *nr = realloc(m->rows, (size_t)nc * sizeof *nr);
        if (!nr) return nomem();
        m->rows = nr;
        row_ext *ne = realloc(m->ext, (size_t)nc * sizeof *ne);
        if (!ne) return nomem();
        m->ext = ne;
        m->cap_rows = nc;
    }
    m->rows[row] = r;
    m->ext[row].extra_begin = extra_begin;
    m->ext[row].extra_count = (int32_t)(m->n_extras - extra_begin);
    m->ext[row].label_name = label_name;
    if (!strmap_put(&m->ids, r.id, row)) return nomem();
    m->n_rows++;
    return TM_OK;
}

/* ------------------------------------------------------------ lines */

typedef struct {
    tm_manifest *m;
    const tm_manifest_params *p;
    char *carry; /* a line that spans chunks */
    size_t carry_len;
    int skipping; /* inside a line over the cap */
    int64_t line; /* number of the line being read */
    size_t total; /* bytes read */
} reader;

static tm_status do_line(reader *rd, const char *s, size_t n)
{
    tm_manifest *m = rd->m;
    int64_t line = rd->line;
    if (line == 1 && n >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) s += 3, n -= 3;
    while (n && (s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (i == n) return TM_OK; /* blank */
    if (m->n_rows >= rd->p->max_rows)
        return tm_fail(TM_ERR_LIMIT,
                       "%s:%lld: more than %lld rows (tm_manifest_params.max_rows); split the "
                       "manifest or raise the limit",
                       m->path, (long long)line, (long long)rd->p->max_rows);
    const char *nul = memchr(s, 0, n);
    if (nul)
        return problem(m, line, TM_ERR_FORMAT, "a NUL byte at column %ld; a manifest is UTF-8 text",
                       (long)(nul - s) + 1);
    const char *end = NULL;
    if (tm_json_check_depth(s, n, "this row"))
        return problem(m, line, TM_ERR_LIMIT, "%s", tm_last_error());
    cJSON *obj = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!obj) {
        long col = end && end >= s ? (long)(end - s) + 1 : 1;
        tm_status st = problem(m, line, TM_ERR_FORMAT,
                               "not valid JSON (near column %ld); each line must be one JSON "
                               "object",
                               col);
        return st;
    }
    while (end && end < s + n && (*end == ' ' || *end == '\t' || *end == '\r'))
        end++;
    int rc;
    if (end && end < s + n)
        rc = problem(m, line, TM_ERR_FORMAT,
                     "text after the JSON object (column %ld); put one object on each line",
                     (long)(end - s) + 1);
    else
        rc = add_row(m, line, obj);
    cJSON_Delete(obj);
    return rc > 0 ? (tm_status)rc : TM_OK;
}

static tm_status too_long(reader *rd)
{
    return problem(rd->m, rd->line, TM_ERR_LIMIT,
                   "the line is longer than %zu bytes (tm_manifest_params.max_line_bytes); "
                   "keep long data in files the row points to",
                   rd->p->max_line_bytes);
}

/* Feeds a chunk; complete lines are parsed in place when they do not span
 * chunks. */
static tm_status feed(reader *rd, const char *buf, size_t n)
{
    size_t cap = rd->p->max_line_bytes;
    while (n) {
        const char *nl = memchr(buf, '\n', n);
        size_t take = nl ? (size_t)(nl - buf) : n;
        tm_status s = TM_OK;
        if (rd->skipping) {
            /* nothing: the rest of an overlong line */
        } else if (rd->carry_len + take > cap) {
            s = too_long(rd);
            rd->skipping = 1;
            rd->carry_len = 0;
        } else if (nl && !rd->carry_len) {
            s = do_line(rd, buf, take);
        } else {
            memcpy(rd->carry + rd->carry_len, buf, take);
            rd->carry_len += take;
            if (nl) {
                s = do_line(rd, rd->carry, rd->carry_len);
                rd->carry_len = 0;
            }
        }
        if (s) return s;
        if (!nl) break;
        rd->skipping = 0;
        rd->line++;
        buf = nl + 1;
        n -= take + 1;
    }
    return TM_OK;
}

static tm_status finish_lines(reader *rd)
{
    tm_status s = TM_OK;
    if (!rd->skipping && rd->carry_len) s = do_line(rd, rd->carry, rd->carry_len);
    rd->carry_len = 0;
    return s;
}

/* ----------------------------------------------------------- dataset.json */

static tm_status ds_fail(const char *path, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static tm_status ds_fail(const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tm_fail(TM_ERR_FORMAT, "%s: %s (docs/data.md describes dataset.json)", path, msg);
}

static tm_status load_dataset(tm_manifest *m, const char *path)
{
    char *data;
    size_t size;
    tm_status s = tm_read_file(path, (size_t)tm_limit_get(TM_LIMIT_DATASET_JSON_BYTES), &data, &size);
    if (s == TM_ERR_LIMIT)
        return tm_fail(s, "%s (limit %s)", tm_last_error(),
                       tm_limit_hint(TM_LIMIT_DATASET_JSON_BYTES));
    if (s) return s;
    s = tm_json_check_depth(data, size, path);
    cJSON *root = s ? NULL : cJSON_ParseWithLength(data, size);
    tm_free(data);
    if (s) return s;
    if (!root) return ds_fail(path, "not valid JSON");
    m->dataset = root;
    m->dataset_path = strdup(path);
    if (!m->dataset_path) return nomem();
    if (!cJSON_IsObject(root)) return ds_fail(path, "must be a JSON object");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (!cJSON_IsString(name) || !name->valuestring[0])
        return ds_fail(path, "\"name\" (a non-empty string) is required");
    m->dataset_name = name->valuestring;
    /* every top-level value as text, made once so the manifest stays read-only */
    int nv = cJSON_GetArraySize(root), iv = 0;
    m->dataset_values = calloc((size_t)nv + 1, sizeof *m->dataset_values);
    if (!m->dataset_values) return nomem();
    m->n_dataset_values = nv;
    const cJSON *val;
    cJSON_ArrayForEach(val, root)
    {
        m->dataset_values[iv] =
            cJSON_IsString(val) ? strdup(val->valuestring) : cJSON_PrintUnformatted(val);
        if (!m->dataset_values[iv]) return nomem();
        iv++;
    }
    static const char *const strings[] = {"version", "description", "license", "manifest"};
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, strings[i]);
        if (v && !cJSON_IsString(v)) return ds_fail(path, "\"%s\" must be a string", strings[i]);
    }
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(root, "modalities"), *it;
    if (mods) {
        if (!cJSON_IsArray(mods)) return ds_fail(path, "\"modalities\" must be an array of names");
        cJSON_ArrayForEach(it, mods)
        {
            if (!cJSON_IsString(it) || !tm_modality_from_name(it->valuestring))
                return ds_fail(path,
                               "\"modalities\" entries must be \"text\", \"image\" or \"audio\"");
        }
    }
    const cJSON *classes = cJSON_GetObjectItemCaseSensitive(root, "classes");
    if (classes && !cJSON_IsNull(classes)) {
        if (!cJSON_IsArray(classes)) return ds_fail(path, "\"classes\" must be an array of names");
        int n = cJSON_GetArraySize(classes);
        if (n > tm_limit_get(TM_LIMIT_DATASET_CLASSES))
            return ds_fail(path, "\"classes\" lists %d names, over the limit of %lld (limit %s)", n,
                           (long long)tm_limit_get(TM_LIMIT_DATASET_CLASSES),
                           tm_limit_hint(TM_LIMIT_DATASET_CLASSES));
        m->class_names = calloc((size_t)(n ? n : 1), sizeof *m->class_names);
        if (!m->class_names) return nomem();
        int i = 0;
        cJSON_ArrayForEach(it, classes)
        {
            if (!cJSON_IsString(it) || !it->valuestring[0])
                return ds_fail(path, "\"classes\"[%d] must be a non-empty string", i);
            if (strmap_get(&m->class_ids, it->valuestring) >= 0)
                return ds_fail(path, "\"classes\"[%d] \"%.100s\" appears twice", i,
                               it->valuestring);
            m->class_names[i] = it->valuestring;
            if (!strmap_put(&m->class_ids, it->valuestring, i)) return nomem();
            i++;
        }
        m->n_classes = n;
    }
    const cJSON *splits = cJSON_GetObjectItemCaseSensitive(root, "splits");
    if (splits && !cJSON_IsNull(splits)) {
        if (!cJSON_IsObject(splits))
            return ds_fail(path, "\"splits\" must be an object of name -> row count");
        cJSON_ArrayForEach(it, splits)
        {
            if (!cJSON_IsNumber(it) || !is_integral(it->valuedouble) || it->valuedouble < 0)
                return ds_fail(path, "\"splits\".\"%.100s\" must be a row count (an integer >= 0)",
                               it->string);
            if (strmap_get(&m->dataset_splits, it->string) >= 0)
                return ds_fail(path, "\"splits\".\"%.100s\" appears twice", it->string);
            if (!strmap_put(&m->dataset_splits, it->string, (int64_t)it->valuedouble))
                return nomem();
        }
    }
    return TM_OK;
}

/* ------------------------------------------------------------ loading */

tm_manifest_params tm_manifest_default_params(void)
{
    tm_manifest_params p;
    memset(&p, 0, sizeof p);
    p.max_line_bytes = TM_MANIFEST_DEFAULT_MAX_LINE;
    p.max_bytes = TM_MANIFEST_DEFAULT_MAX_BYTES;
    p.max_rows = TM_MANIFEST_DEFAULT_MAX_ROWS;
    p.max_problems = 100;
    return p;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Labels given as names without dataset.json: number the distinct names in
 * sorted order. */
static tm_status number_names(tm_manifest *m)
{
    if (m->class_names) return TM_OK;
    if (m->label_kind == 1) {
        int32_t mx = -1;
        for (int64_t i = 0; i < m->n_rows; i++)
            if (m->rows[i].label > mx) mx = m->rows[i].label;
        m->n_classes = mx + 1;
        return TM_OK;
    }
    if (m->label_kind != 2) return TM_OK;
    strmap seen = {0};
    const char **names = NULL;
    int64_t n = 0, cap = 0;
    tm_status s = TM_OK;
    for (int64_t i = 0; i < m->n_rows && !s; i++) {
        const char *nm = m->ext[i].label_name;
        if (!nm || strmap_get(&seen, nm) >= 0) continue;
        if (n >= tm_limit_get(TM_LIMIT_DATASET_CLASSES)) {
            s = tm_fail(TM_ERR_LIMIT, "%s: more than %lld distinct label names (limit %s)", m->path,
                        (long long)tm_limit_get(TM_LIMIT_DATASET_CLASSES),
                        tm_limit_hint(TM_LIMIT_DATASET_CLASSES));
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            const char **nn = realloc(names, (size_t)cap * sizeof *nn);
            if (!nn) {
                s = nomem();
                break;
            }
            names = nn;
        }
        names[n++] = nm;
        if (!strmap_put(&seen, nm, 0)) s = nomem();
    }
    strmap_free(&seen);
    if (s) {
        free(names);
        return s;
    }
    if (n > 1) qsort(names, (size_t)n, sizeof *names, cmp_str); /* names may be NULL when n == 0 */
    m->class_names = names;
    m->n_classes = (int32_t)n;
    for (int64_t i = 0; i < n; i++)
        if (!strmap_put(&m->class_ids, names[i], i)) return nomem();
    for (int64_t i = 0; i < m->n_rows; i++)
        if (m->ext[i].label_name)
            m->rows[i].label = (int32_t)strmap_get(&m->class_ids, m->ext[i].label_name);
    return TM_OK;
}

static tm_status begin(tm_manifest **out, const char *name, const char *dir,
                       const tm_manifest_params *p)
{
    tm_manifest *m = calloc(1, sizeof *m);
    if (!m) return nomem();
    m->path = strdup(name);
    m->dir = strdup(dir && dir[0] ? dir : ".");
    m->keep_going = p->keep_going;
    m->max_problems = p->max_problems > 0 ? p->max_problems : 0;
    m->problems = calloc((size_t)m->max_problems + 1, sizeof *m->problems);
    m->problem_lines = calloc((size_t)m->max_problems + 1, sizeof *m->problem_lines);
    if (!m->path || !m->dir || !m->problems || !m->problem_lines) {
        tm_manifest_free(m);
        return nomem();
    }
    *out = m;
    return TM_OK;
}

static tm_status check_params(const tm_manifest_params *p)
{
    if (!p->max_line_bytes || !p->max_bytes || p->max_rows <= 0 || p->max_problems < 0)
        return tm_fail(TM_ERR_INVALID,
                       "manifest: max_line_bytes, max_bytes and max_rows must be > 0, "
                       "max_problems >= 0");
    return TM_OK;
}

/* Reads data through the line reader: from fd in chunks, or from memory. */
static tm_status read_lines(tm_manifest *m, const tm_manifest_params *p, int fd, const char *data,
                            size_t len)
{
    reader rd = {m, p, NULL, 0, 0, 1, 0};
    rd.carry = malloc(p->max_line_bytes + 1);
    if (!rd.carry) return nomem();
    tm_status s = TM_OK;
    if (fd < 0) {
        s = feed(&rd, data, len);
    } else {
        size_t chunk = (size_t)1 << 20;
        char *buf = malloc(chunk);
        if (!buf) s = nomem();
        while (!s) {
            ssize_t got = read(fd, buf, chunk);
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) {
                s = tm_fail(TM_ERR_IO, "%s: read failed: %s", m->path, strerror(errno));
                break;
            }
            if (got == 0) break;
            rd.total += (size_t)got;
            if (rd.total > p->max_bytes) {
                s = tm_fail(TM_ERR_LIMIT,
                            "%s: larger than %zu bytes (tm_manifest_params.max_bytes); split it",
                            m->path, p->max_bytes);
                break;
            }
            s = feed(&rd, buf, (size_t)got);
        }
        free(buf);
    }
    if (!s) s = finish_lines(&rd);
    free(rd.carry);
    return s;
}

static tm_status finish_load(tm_manifest *m)
{
    tm_status s = number_names(m);
    if (s) return s;
    if (m->n_classes > 0) {
        m->label_texts = calloc((size_t)m->n_classes, sizeof *m->label_texts);
        if (!m->label_texts) return nomem();
        for (int32_t i = 0; i < m->n_classes; i++) {
            char buf[16];
            snprintf(buf, sizeof buf, "%d", i);
            m->label_texts[i] = pool_strndup(&m->strings, buf, strlen(buf));
            if (!m->label_texts[i]) return nomem();
        }
    }
    return TM_OK;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

tm_status tm_manifest_load(tm_manifest **out, const char *path, const tm_manifest_params *params)
{
    *out = NULL;
    tm_manifest_params p = params ? *params : tm_manifest_default_params();
    if (!path) return tm_fail(TM_ERR_INVALID, "manifest: NULL path");
    tm_status s = check_params(&p);
    if (s) return s;
    char *dir = dir_of(path);
    if (!dir) return nomem();
    tm_manifest *m;
    s = begin(&m, path, dir, &p);
    if (s) {
        free(dir);
        return s;
    }
    /* dataset.json first: it defines the classes the rows are checked against */
    char *ds = NULL;
    if (!p.dataset_json) {
        size_t n = strlen(dir) + 16;
        ds = malloc(n);
        if (!ds)
            s = nomem();
        else {
            snprintf(ds, n, "%s/dataset.json", dir);
            struct stat sb;
            if (stat(ds, &sb) != 0) {
                free(ds);
                ds = NULL;
            }
        }
    } else if (p.dataset_json[0]) {
        ds = strdup(p.dataset_json);
        if (!ds) s = nomem();
    }
    free(dir);
    if (!s && ds) s = load_dataset(m, ds);
    free(ds);
    int fd = -1;
    if (!s) {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        struct stat sb;
        if (fd < 0)
            s = tm_fail(TM_ERR_IO, "%s: cannot open the manifest: %s", path, strerror(errno));
        else if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
            s = tm_fail(TM_ERR_IO, "%s: not a regular file; give the manifest's .jsonl file", path);
        else if ((uint64_t)sb.st_size > p.max_bytes)
            s = tm_fail(TM_ERR_LIMIT,
                        "%s: %lld bytes, larger than %zu (tm_manifest_params.max_bytes); split it",
                        path, (long long)sb.st_size, p.max_bytes);
        else {
            int fl = fcntl(fd, F_GETFL);
            if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
        }
    }
    if (!s && fd >= 0 && tm_file_is_encrypted(path)) {
        /* encrypted at rest (docs/security.md): decrypted in memory */
        close(fd);
        fd = -1;
        char *plain = NULL;
        size_t plen = 0;
        s = tm_read_file(path, p.max_bytes, &plain, &plen);
        if (!s) s = read_lines(m, &p, -1, plain, plen);
        tm_free(plain);
    } else if (!s) {
        s = read_lines(m, &p, fd, NULL, 0);
    }
    if (fd >= 0) close(fd);
    if (!s) s = finish_load(m);
    if (s) {
        tm_manifest_free(m);
        return s;
    }
    *out = m;
    return TM_OK;
}

tm_status tm_manifest_parse(tm_manifest **out, const char *data, size_t len, const char *name,
                            const char *dir, const tm_manifest_params *params)
{
    *out = NULL;
    tm_manifest_params p = params ? *params : tm_manifest_default_params();
    if (!data && len) return tm_fail(TM_ERR_INVALID, "manifest: NULL data");
    tm_status s = check_params(&p);
    if (s) return s;
    if (len > p.max_bytes)
        return tm_fail(TM_ERR_LIMIT, "%s: larger than %zu bytes (tm_manifest_params.max_bytes)",
                       name ? name : "<memory>", p.max_bytes);
    tm_manifest *m;
    s = begin(&m, name ? name : "<memory>", dir, &p);
    if (s) return s;
    if (p.dataset_json && p.dataset_json[0]) s = load_dataset(m, p.dataset_json);
    if (!s) s = read_lines(m, &p, -1, data ? data : "", len);
    if (!s) s = finish_load(m);
    if (s) {
        tm_manifest_free(m);
        return s;
    }
    *out = m;
    return TM_OK;
}

void tm_manifest_free(tm_manifest *m)
{
    if (!m) return;
    free(m->path);
    free(m->dir);
    pool_free(&m->strings);
    free(m->rows);
    free(m->ext);
    free(m->extras);
    strmap_free(&m->ids);
    strmap_free(&m->keys);
    free(m->key_names);
    free(m->key_last_row);
    strmap_free(&m->splits);
    free(m->split_names);
    free(m->split_sizes);
    free(m->class_names);
    strmap_free(&m->class_ids);
    free(m->dataset_path);
    strmap_free(&m->dataset_splits);
    if (m->dataset_values)
        for (int i = 0; i < m->n_dataset_values; i++)
            free(m->dataset_values[i]);
    free(m->dataset_values);
    free(m->label_texts);
    cJSON_Delete(m->dataset);
    if (m->problems)
        for (int64_t i = 0; i < m->n_problems && i < m->max_problems; i++)
            free(m->problems[i]);
    free(m->problems);
    free(m->problem_lines);
    free(m);
}

/* ------------------------------------------------------------ queries */

int64_t tm_manifest_count(const tm_manifest *m)
{
    return m ? m->n_rows : 0;
}

const tm_manifest_row *tm_manifest_row_at(const tm_manifest *m, int64_t i)
{
    return m && i >= 0 && i < m->n_rows ? &m->rows[i] : NULL;
}

int64_t tm_manifest_find(const tm_manifest *m, const char *id)
{
    return m && id ? strmap_get(&m->ids, id) : -1;
}

const char *tm_manifest_field(const tm_manifest *m, int64_t i, const char *key)
{
    const tm_manifest_row *r = tm_manifest_row_at(m, i);
    if (!r || !key) return NULL;
    if (!strcmp(key, "id")) return r->id;
    if (!strcmp(key, "text")) return r->text;
    if (!strcmp(key, "image")) return r->image;
    if (!strcmp(key, "audio")) return r->audio;
    if (!strcmp(key, "split")) return r->split;
    if (!strcmp(key, "transcript")) return r->transcript;
    if (!strcmp(key, "label")) {
        if (r->label == TM_LABEL_NONE) return NULL;
        const char *nm = tm_manifest_class_name(m, r->label);
        if (nm) return nm;
        return r->label >= 0 && r->label < m->n_classes ? m->label_texts[r->label] : NULL;
    }
    int64_t k = strmap_get(&m->keys, key);
    if (k < 0) return NULL;
    const row_ext *e = &m->ext[i];
    for (int32_t j = 0; j < e->extra_count; j++)
        if (m->extras[e->extra_begin + j].key == k) return m->extras[e->extra_begin + j].value;
    return NULL;
}

int tm_manifest_field_count(const tm_manifest *m)
{
    return m ? m->n_keys : 0;
}

const char *tm_manifest_field_name(const tm_manifest *m, int i)
{
    return m && i >= 0 && i < m->n_keys ? m->key_names[i] : NULL;
}

const char *tm_manifest_path(const tm_manifest *m)
{
    return m ? m->path : NULL;
}
const char *tm_manifest_dir(const tm_manifest *m)
{
    return m ? m->dir : NULL;
}

int32_t tm_manifest_num_classes(const tm_manifest *m)
{
    return m ? m->n_classes : 0;
}

const char *tm_manifest_class_name(const tm_manifest *m, int32_t i)
{
    if (!m || !m->class_names || i < 0 || i >= m->n_classes) return NULL;
    return m->class_names[i];
}

int tm_manifest_split_count(const tm_manifest *m)
{
    return m ? m->n_splits : 0;
}

const char *tm_manifest_split_name(const tm_manifest *m, int i)
{
    return m && i >= 0 && i < m->n_splits ? m->split_names[i] : NULL;
}

int64_t tm_manifest_split_size(const tm_manifest *m, const char *split)
{
    if (!m || !split) return 0;
    int64_t k = strmap_get(&m->splits, split);
    return k < 0 ? 0 : m->split_sizes[k];
}

int tm_manifest_split_known(const tm_manifest *m, const char *split)
{
    return m && split ? split_known(m, split) : 0;
}

tm_status tm_manifest_split_rows(const tm_manifest *m, const char *split, int64_t **rows,
                                 int64_t *n)
{
    *rows = NULL;
    *n = 0;
    if (!m) return tm_fail(TM_ERR_INVALID, "manifest: NULL manifest");
    int64_t count = split ? tm_manifest_split_size(m, split) : m->n_rows;
    if (!count) return TM_OK;
    int64_t *r = tm_alloc((size_t)count * sizeof *r);
    if (!r) return nomem();
    int64_t k = 0;
    for (int64_t i = 0; i < m->n_rows; i++)
        if (!split || (m->rows[i].split && !strcmp(m->rows[i].split, split))) r[k++] = i;
    *rows = r;
    *n = k;
    return TM_OK;
}

const char *tm_manifest_dataset_path(const tm_manifest *m)
{
    return m ? m->dataset_path : NULL;
}
const char *tm_manifest_dataset_name(const tm_manifest *m)
{
    return m ? m->dataset_name : NULL;
}

int64_t tm_manifest_split_expected(const tm_manifest *m, const char *split)
{
    return m && split ? strmap_get(&m->dataset_splits, split) : -1;
}

const char *tm_manifest_dataset_value(const tm_manifest *m, const char *key)
{
    if (!m || !m->dataset || !key) return NULL;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, m->dataset)
    {
        if (!strcmp(it->string, key)) return m->dataset_values[i];
        i++;
    }
    return NULL;
}

int64_t tm_manifest_problem_count(const tm_manifest *m)
{
    return m ? m->n_problems : 0;
}

const char *tm_manifest_problem(const tm_manifest *m, int64_t i, int64_t *line)
{
    if (!m || i < 0 || i >= m->n_problems || i >= m->max_problems) return NULL;
    if (line) *line = m->problem_lines[i];
    return m->problems[i];
}

unsigned tm_modality_from_name(const char *name)
{
    if (!name) return 0;
    if (!strcmp(name, "text")) return TM_MODALITY_TEXT;
    if (!strcmp(name, "image") || !strcmp(name, "vision")) return TM_MODALITY_IMAGE;
    if (!strcmp(name, "audio")) return TM_MODALITY_AUDIO;
    return 0;
}
