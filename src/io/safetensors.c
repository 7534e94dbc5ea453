/*
 * safetensors: reading (mmap, validated as hostile input) and writing
 * (streamed, atomic). The format and what the reader checks are described
 * in include/trimodal/io.h.
 *
 * Reading. The header is copied into a NUL-terminated buffer before cJSON
 * sees it, so the parser can never run past the end of the mapping, and
 * every number from it is checked before it becomes a size or an offset.
 * Open does all the checking; afterwards the tensors are plain views.
 *
 * Writing. The header is built by hand (cJSON would print large offsets in
 * floating point) and padded with spaces so the data starts at a multiple
 * of 8; data is laid out by decreasing element size so every tensor stays
 * aligned for zero-copy loading. Strided tensors are gathered through a
 * fixed-size buffer, so a write never holds the file in memory.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "io_internal.h"
#include "trimodal/io.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format is little-endian)"
#endif

/* Integers in the header from this up are rejected: doubles (what cJSON
 * keeps) hold every integer below 2^53 exactly (2^53 + 1 would read as
 * 2^53), and no real file needs more. */
#define MAX_JSON_INT 9007199254740992.0

/* --------------------------------------------------------------- dtypes */

typedef struct {
    const char *name;
    int bits;    /* per element; sub-byte types exist (F4, F6) */
    int dtype;   /* tm_dtype, or -1 when trimodal cannot read it */
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F64", 64, -1},     {"F32", 32, TM_F32},  {"F16", 16, TM_F16},   {"BF16", 16, TM_BF16},
    {"I64", 64, -1},     {"I32", 32, TM_I32},  {"I16", 16, -1},       {"I8", 8, TM_I8},
    {"U64", 64, -1},     {"U32", 32, -1},      {"U16", 16, -1},       {"U8", 8, -1},
    {"BOOL", 8, -1},     {"F8_E4M3", 8, -1},   {"F8_E5M2", 8, -1},    {"F8_E8M0", 8, -1},
    {"F6_E2M3", 6, -1},  {"F6_E3M2", 6, -1},   {"F4", 4, -1},         {"C64", 64, -1},
};
#define N_DTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

static const st_dtype *find_dtype(const char *name)
{
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(st_dtypes[i].name, name) == 0) return &st_dtypes[i];
    return NULL;
}

static const char *dtype_file_name(tm_dtype t)
{
    switch (t) {
    case TM_F32: return "F32";
    case TM_BF16: return "BF16";
    case TM_F16: return "F16";
    case TM_I32: return "I32";
    case TM_I8: return "I8";
    default: return NULL;
    }
}

/* --------------------------------------------------------------- UTF-8 */

/* Index of the first byte that breaks UTF-8 (or is NUL when no_nul), or
 * n when all is well. Rejects overlong forms, surrogates and code points
 * above U+10FFFF, as JSON parsers that check do. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n, int no_nul)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c == 0 && no_nul) return i;
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return i;
        }
        if (n - i < len) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
        i += len;
    }
    return n;
}

/* ============================================================= reading */

typedef struct {
    const char *name;
    const st_dtype *dt;
    int ndim;
    int64_t shape[TM_MAX_DIMS];
    size_t begin, end;      /* in the data section */
    _Atomic(void *) copy;   /* aligned copy made on first get, when needed */
} st_entry;

typedef struct {
    const char *key, *value;
} st_meta;

struct tm_safetensors {
    char *label;                 /* the path, or "<memory>", for messages */
    const unsigned char *base;   /* the whole file */
    size_t size;
    void *map;                   /* the mapping when opened from a file */
    size_t map_size;
    const unsigned char *data;   /* the data section */
    size_t data_size;
    int n;
    st_entry *entries;           /* header order */
    int *by_name;                /* indices sorted by name */
    int n_meta;
    st_meta *meta;               /* header order */
    st_meta **meta_by_key;       /* sorted by key */
    char *strings;               /* every name, key and value */
    const char *checksum;        /* the "__checksum__" metadata value, or NULL */
    char *plain;                 /* the decrypted file, when it was encrypted */
};

/* A TM_ERR_FORMAT (or other) status whose message starts with the file. */
static tm_status st_fail(const tm_safetensors *st, tm_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static tm_status st_fail(const tm_safetensors *st, tm_status s, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return tm_fail(s, "%s: %s", st->label ? st->label : "<safetensors>", buf);
}

/* 1 when j is an integral JSON number in [0, 2^53). */
static int json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0.0 && d < MAX_JSON_INT)) return 0; /* also NaN */
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return 0;
    *out = u;
    return 1;
}

static int cmp_entry_name(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_entry_offsets(const void *a, const void *b)
{
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_meta_key(const void *a, const void *b)
{
    const st_meta *x = *(const st_meta *const *)a, *y = *(const st_meta *const *)b;
    return strcmp(x->key, y->key);
}

static char *put_string(char **cursor, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = *cursor;
    memcpy(p, s, n);
    *cursor += n;
    return p;
}

/* Checks one tensor's header entry and fills e (name already set). */
static tm_status parse_entry(tm_safetensors *st, const cJSON *j, st_entry *e)
{
    const char *nm = e->name;
    if (!cJSON_IsObject(j))
        return st_fail(st, TM_ERR_FORMAT, "tensor \"%.200s\" is not a JSON object", nm);

    /* cJSON keeps repeated keys and finds the first: refuse them. */
    int seen[3] = {0, 0, 0};
    for (const cJSON *x = j->child; x; x = x->next) {
        int k = strcmp(x->string, "dtype") == 0          ? 0
                : strcmp(x->string, "shape") == 0        ? 1
                : strcmp(x->string, "data_offsets") == 0 ? 2
                                                         : -1;
        if (k >= 0 && seen[k]++)
            return st_fail(st, TM_ERR_FORMAT, "tensor \"%.200s\": \"%s\" appears twice", nm,
                           x->string);
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    if (!cJSON_IsString(dt))
        return st_fail(st, TM_ERR_FORMAT, "tensor \"%.200s\": \"dtype\" is %s", nm,
                       dt ? "not a string" : "missing");
    e->dt = find_dtype(dt->valuestring);
    if (!e->dt)
        return st_fail(st, TM_ERR_FORMAT, "tensor \"%.200s\": unknown dtype \"%.40s\"", nm,
                       dt->valuestring);

    if (!cJSON_IsArray(shape))
        return st_fail(st, TM_ERR_FORMAT, "tensor \"%.200s\": \"shape\" is %s", nm,
                       shape ? "not an array" : "missing");
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > TM_MAX_DIMS)
        return st_fail(st, TM_ERR_UNSUPPORTED, "tensor \"%.200s\" has %d dimensions; at most %d",
                       nm, ndim, TM_MAX_DIMS);
    e->ndim = ndim;
    size_t numel = 1;
    int overflow = 0, d = 0;
    for (const cJSON *x = shape->child; x; x = x->next, d++) {
        uint64_t v;
        if (!json_uint(x, &v))
            return st_fail(st, TM_ERR_FORMAT,
                           "tensor \"%.200s\": shape[%d] is not a non-negative integer", nm, d);
        e->shape[d] = (int64_t)v;
        if (!overflow && !tm_mul_size(numel, (size_t)v, &numel)) overflow = 1;
    }
    /* A 0 anywhere makes the tensor empty, even after an overflow. */
    for (d = 0; d < ndim; d++)
        if (e->shape[d] == 0) numel = 0, overflow = 0;
    size_t nbits;
    if (overflow || !tm_mul_size(numel, (size_t)e->dt->bits, &nbits))
        return st_fail(st, TM_ERR_FORMAT, "tensor \"%.200s\": its shape's byte size overflows", nm);
    if (nbits % 8 != 0)
        return st_fail(st, TM_ERR_FORMAT,
                       "tensor \"%.200s\": %zu elements of %s do not fill whole bytes", nm, numel,
                       e->dt->name);
    size_t nbytes = nbits / 8;

    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return st_fail(st, TM_ERR_FORMAT, "tensor \"%.200s\": \"data_offsets\" is %s", nm,
                       !offs ? "missing" : "not an array of two integers");
    uint64_t b, en;
    if (!json_uint(offs->child, &b) || !json_uint(offs->child->next, &en))
        return st_fail(st, TM_ERR_FORMAT,
                       "tensor \"%.200s\": \"data_offsets\" are not non-negative integers", nm);
    if (b > en)
        return st_fail(st, TM_ERR_FORMAT,
                       "tensor \"%.200s\": data_offsets [%llu, %llu] end before they begin", nm,
                       (unsigned long long)b, (unsigned long long)en);
    if (en - b != nbytes)
        return st_fail(st, TM_ERR_FORMAT,
                       "tensor \"%.200s\": data_offsets [%llu, %llu] hold %llu bytes but its "
                       "shape and dtype %s need %zu",
                       nm, (unsigned long long)b, (unsigned long long)en,
                       (unsigned long long)(en - b), e->dt->name, nbytes);
    if (en > st->data_size)
        return st_fail(st, TM_ERR_FORMAT,
                       "tensor \"%.200s\": data_offsets [%llu, %llu] run past the data section "
                       "(%zu bytes)",
                       nm, (unsigned long long)b, (unsigned long long)en, st->data_size);
    e->begin = (size_t)b;
    e->end = (size_t)en;
    return TM_OK;
}

/* Checks __metadata__; counts its entries and their string bytes. */
static tm_status check_metadata(tm_safetensors *st, const cJSON *m, int *count, size_t *bytes)
{
    if (!cJSON_IsObject(m)) return st_fail(st, TM_ERR_FORMAT, "__metadata__ is not an object");
    for (const cJSON *x = m->child; x; x = x->next) {
        if (!cJSON_IsString(x))
            return st_fail(st, TM_ERR_FORMAT, "__metadata__ \"%.200s\" is not a string",
                           x->string);
        if (*count == INT_MAX) return st_fail(st, TM_ERR_LIMIT, "too many __metadata__ entries");
        (*count)++;
        *bytes += strlen(x->string) + strlen(x->valuestring) + 2;
    }
    return TM_OK;
}

/* Validates the bytes at st->base and builds the index. On failure the
 * caller frees st. */
static tm_status parse(tm_safetensors *st)
{
    const unsigned char *b = st->base;
    if (st->size < 8)
        return st_fail(st, TM_ERR_FORMAT, "%zu bytes, shorter than the 8-byte header length",
                       st->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
    if (n > st->size - 8)
        return st_fail(st, TM_ERR_FORMAT,
                       "header length %llu is larger than the rest of the file (%zu bytes)",
                       (unsigned long long)n, st->size - 8);
    if (n > TM_SAFETENSORS_MAX_HEADER)
        return st_fail(st, TM_ERR_LIMIT, "header length %llu is over the limit of %zu bytes",
                       (unsigned long long)n, (size_t)TM_SAFETENSORS_MAX_HEADER);
    size_t hn = (size_t)n;
    const unsigned char *h = b + 8;
    st->data = h + hn;
    st->data_size = st->size - 8 - hn;
    if (hn == 0 || h[0] != '{')
        return st_fail(st, TM_ERR_FORMAT, "header does not start with '{'");
    size_t bad = utf8_invalid_at(h, hn, 1);
    if (bad < hn)
        return st_fail(st, TM_ERR_FORMAT, "header byte %zu is %s", bad,
                       h[bad] ? "not valid UTF-8" : "a NUL");

    /* A private NUL-terminated copy: cJSON then cannot read past it. */
    char *text = tm_alloc(hn + 1);
    if (!text) return st_fail(st, TM_ERR_NOMEM, "out of memory for the %zu-byte header", hn);
    memcpy(text, h, hn);
    text[hn] = 0;
    const char *end = NULL;
    tm_status s = tm_json_check_depth(text, hn, "header");
    cJSON *root = s ? NULL : cJSON_ParseWithLengthOpts(text, hn, &end, 0);
    if (s) {
        s = st_fail(st, TM_ERR_LIMIT, "%s", tm_last_error());
        goto done;
    }
    if (!root) {
        size_t at = end && end >= text && end <= text + hn ? (size_t)(end - text) : 0;
        s = st_fail(st, TM_ERR_FORMAT, "header is not valid JSON (near byte %zu)", at);
        goto done;
    }
    for (const char *p = end; p < text + hn; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            s = st_fail(st, TM_ERR_FORMAT, "header has bytes after its JSON object (byte %zu)",
                        (size_t)(p - text));
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        s = st_fail(st, TM_ERR_FORMAT, "header is not a JSON object");
        goto done;
    }

    /* Pass 1: count, size the strings, check the metadata. */
    int n_tensors = 0, n_meta = 0;
    size_t str_bytes = 0;
    const cJSON *meta = NULL;
    for (const cJSON *x = root->child; x; x = x->next) {
        if (strcmp(x->string, "__metadata__") == 0) {
            if (meta) {
                s = st_fail(st, TM_ERR_FORMAT, "__metadata__ appears twice");
                goto done;
            }
            meta = x;
            if ((s = check_metadata(st, x, &n_meta, &str_bytes))) goto done;
            continue;
        }
        if (n_tensors == INT_MAX) {
            s = st_fail(st, TM_ERR_LIMIT, "too many tensors");
            goto done;
        }
        n_tensors++;
        str_bytes += strlen(x->string) + 1;
    }

    st->n = n_tensors;
    st->n_meta = n_meta;
    st->entries = tm_calloc((size_t)n_tensors + 1, sizeof *st->entries);
    st->by_name = tm_calloc((size_t)n_tensors + 1, sizeof *st->by_name);
    st->meta = tm_calloc((size_t)n_meta + 1, sizeof *st->meta);
    st->meta_by_key = tm_calloc((size_t)n_meta + 1, sizeof *st->meta_by_key);
    st->strings = tm_alloc(str_bytes + 1);
    st_entry **order = tm_calloc((size_t)n_tensors + 1, sizeof *order);
    if (!st->entries || !st->by_name || !st->meta || !st->meta_by_key || !st->strings || !order) {
        tm_free(order);
        s = st_fail(st, TM_ERR_NOMEM, "out of memory for the index of %d tensors", n_tensors);
        goto done;
    }

    /* Pass 2: the tensors, in header order. */
    char *cursor = st->strings;
    int i = 0;
    for (const cJSON *x = root->child; x; x = x->next) {
        if (x == meta) continue;
        st_entry *e = &st->entries[i];
        atomic_init(&e->copy, NULL);
        e->name = put_string(&cursor, x->string);
        if ((s = parse_entry(st, x, e))) goto done_order;
        order[i] = e;
        i++;
    }
    if (meta) {
        i = 0;
        for (const cJSON *x = meta->child; x; x = x->next, i++) {
            st->meta[i].key = put_string(&cursor, x->string);
            st->meta[i].value = put_string(&cursor, x->valuestring);
            st->meta_by_key[i] = &st->meta[i];
        }
        qsort(st->meta_by_key, (size_t)n_meta, sizeof *st->meta_by_key, cmp_meta_key);
        for (i = 1; i < n_meta; i++) {
            if (strcmp(st->meta_by_key[i - 1]->key, st->meta_by_key[i]->key) == 0) {
                s = st_fail(st, TM_ERR_FORMAT, "__metadata__ key \"%.200s\" appears twice",
                            st->meta_by_key[i]->key);
                goto done_order;
            }
        }
        /* A checksum under another key is a damaged "__checksum__" key,
         * which must not turn the check off. */
        for (i = 0; i < n_meta; i++) {
            if (strcmp(st->meta[i].key, TM_ST_CHECKSUM_KEY) != 0 &&
                !strncmp(st->meta[i].value, TM_ST_CHECKSUM_PREFIX, strlen(TM_ST_CHECKSUM_PREFIX))) {
                s = st_fail(st, TM_ERR_FORMAT, "is corrupt: __metadata__ \"%.100s\" holds a "
                                               "checksum but is not called " TM_ST_CHECKSUM_KEY,
                            st->meta[i].key);
                goto done_order;
            }
        }
        /* The checksum is kept apart from the metadata callers list. */
        for (i = 0; i < n_meta; i++) {
            if (strcmp(st->meta[i].key, TM_ST_CHECKSUM_KEY) != 0) continue;
            st->checksum = st->meta[i].value;
            memmove(&st->meta[i], &st->meta[i + 1], (size_t)(n_meta - i - 1) * sizeof *st->meta);
            n_meta = --st->n_meta;
            for (int k = 0; k < n_meta; k++) st->meta_by_key[k] = &st->meta[k];
            qsort(st->meta_by_key, (size_t)n_meta, sizeof *st->meta_by_key, cmp_meta_key);
            break;
        }
    }

    /* Names unique. */
    qsort(order, (size_t)n_tensors, sizeof *order, cmp_entry_name);
    for (i = 0; i < n_tensors; i++) {
        if (i > 0 && strcmp(order[i - 1]->name, order[i]->name) == 0) {
            s = st_fail(st, TM_ERR_FORMAT, "tensor \"%.200s\" appears twice", order[i]->name);
            goto done_order;
        }
        st->by_name[i] = (int)(order[i] - st->entries);
    }

    /* Ranges: sorted by offset, each must start where the last ended.
     * An empty tensor sits at that point too; one inside another's bytes
     * counts as an overlap, as in the reference implementation. */
    qsort(order, (size_t)n_tensors, sizeof *order, cmp_entry_offsets);
    size_t at = 0;
    const st_entry *prev = NULL;
    for (i = 0; i < n_tensors; i++) {
        const st_entry *e = order[i];
        if (e->begin < at) {
            s = st_fail(st, TM_ERR_FORMAT,
                        "tensors \"%.200s\" [%zu, %zu] and \"%.200s\" [%zu, %zu] overlap",
                        prev->name, prev->begin, prev->end, e->name, e->begin, e->end);
            goto done_order;
        }
        if (e->begin > at) {
            s = st_fail(st, TM_ERR_FORMAT,
                        "data bytes [%zu, %zu) before tensor \"%.200s\" belong to no tensor", at,
                        e->begin, e->name);
            goto done_order;
        }
        at = e->end;
        prev = e;
    }
    if (at != st->data_size)
        s = st_fail(st, TM_ERR_FORMAT,
                    "data bytes [%zu, %zu) after the last tensor belong to no tensor", at,
                    st->data_size);
done_order:
    tm_free(order);
done:
    cJSON_Delete(root);
    tm_free(text);
    return s;
}

void tm_safetensors_close(tm_safetensors *st)
{
    if (!st) return;
    if (st->entries)
        for (int i = 0; i < st->n; i++) tm_free(atomic_load(&st->entries[i].copy));
    if (st->map) munmap(st->map, st->map_size);
    tm_free(st->entries);
    tm_free(st->by_name);
    tm_free(st->meta);
    tm_free(st->meta_by_key);
    tm_free(st->strings);
    tm_free(st->plain);
    tm_free(st->label);
    tm_free(st);
}

/* An encrypted file: decrypt it into memory owned by st (tm_alloc aligns
 * it, so tensors still load without copies) and drop the mapping. */
static tm_status decrypt_mapping(tm_safetensors *st, const char *path)
{
    tm_key key;
    tm_status s = tm_crypto_process_key(&key, path);
    size_t n = 0;
    if (!s) s = tm_decrypt_buffer(&key, path, st->base, st->size, SIZE_MAX - 1, &st->plain, &n);
    sodium_memzero(&key, sizeof key);
    if (st->map) munmap(st->map, st->map_size);
    st->map = NULL;
    st->map_size = 0;
    if (s) {
        static const unsigned char none[8];
        st->base = none;
        st->size = 0;
        return s;
    }
    st->base = (const unsigned char *)st->plain;
    st->size = n;
    return TM_OK;
}

/* Checks the "__checksum__" metadata when the file has one: BLAKE2b-256 of
 * the whole file with the 64 hex digits of the value read as '0'. */
static tm_status verify_checksum(const tm_safetensors *st)
{
    if (!st->checksum) return TM_OK;
    const char *v = st->checksum;
    size_t plen = strlen(TM_ST_CHECKSUM_PREFIX);
    int ok = strncmp(v, TM_ST_CHECKSUM_PREFIX, plen) == 0 && strlen(v) == plen + 64;
    for (size_t i = plen; ok && i < plen + 64; i++)
        ok = (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f');
    if (!ok)
        return st_fail(st, TM_ERR_FORMAT,
                       "__checksum__ is not \"" TM_ST_CHECKSUM_PREFIX "\" and 64 lowercase hex "
                       "digits; the file is corrupt or was written by another tool");
    const char *hex = v + plen;
    /* where the digits sit in the raw header */
    size_t hn = (size_t)(st->data - st->base) - 8;
    const unsigned char *h = st->base + 8, *at = NULL;
    for (size_t i = 0; i + 64 <= hn; i++) {
        if (h[i] == (unsigned char)hex[0] && memcmp(h + i, hex, 64) == 0) {
            at = h + i;
            break;
        }
    }
    if (!at)
        return st_fail(st, TM_ERR_FORMAT, "the __checksum__ digits are escaped in the header; "
                                          "the file is corrupt");
    static const char zeros[64] = "0000000000000000000000000000000000000000000000000000000000000000";
    crypto_generichash_state hs;
    unsigned char d[TM_HASH_BYTES];
    crypto_generichash_init(&hs, NULL, 0, sizeof d);
    crypto_generichash_update(&hs, st->base, (unsigned long long)(at - st->base));
    crypto_generichash_update(&hs, (const unsigned char *)zeros, 64);
    size_t after = (size_t)(at - st->base) + 64;
    crypto_generichash_update(&hs, st->base + after, (unsigned long long)(st->size - after));
    crypto_generichash_final(&hs, d, sizeof d);
    char got[2 * TM_HASH_BYTES + 1];
    sodium_bin2hex(got, sizeof got, d, sizeof d);
    if (memcmp(got, hex, 64) != 0)
        return st_fail(st, TM_ERR_FORMAT,
                       "is corrupt: its BLAKE2b checksum is %.16s..., the header records "
                       "%.16s... (a damaged copy or disk; restore it from a good copy)",
                       got, hex);
    return TM_OK;
}

const char *tm_safetensors_checksum(const tm_safetensors *st)
{
    return st ? st->checksum : NULL;
}

static tm_safetensors *new_st(const char *label)
{
    tm_safetensors *st = tm_calloc(1, sizeof *st);
    if (!st) return NULL;
    size_t n = strlen(label) + 1;
    st->label = tm_alloc(n);
    if (!st->label) {
        tm_free(st);
        return NULL;
    }
    memcpy(st->label, label, n);
    return st;
}

tm_status tm_safetensors_open_memory(tm_safetensors **out, const void *data, size_t size)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_safetensors_open_memory: out is NULL");
    *out = NULL;
    if (!data && size) return tm_fail(TM_ERR_INVALID, "tm_safetensors_open_memory: data is NULL");
    tm_safetensors *st = new_st("<memory>");
    if (!st) return tm_fail(TM_ERR_NOMEM, "<memory>: out of memory");
    st->base = data;
    st->size = size;
    tm_status s = parse(st);
    if (!s) s = verify_checksum(st);
    if (s) {
        tm_safetensors_close(st);
        return s;
    }
    *out = st;
    return TM_OK;
}

tm_status tm_safetensors_open(tm_safetensors **out, const char *path)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_safetensors_open: out is NULL");
    *out = NULL;
    if (!path) return tm_fail(TM_ERR_INVALID, "tm_safetensors_open: path is NULL");
    /* O_NONBLOCK: a FIFO at path would otherwise block the open until a
     * writer appears; it is refused below as not a regular file. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return tm_fail(TM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return tm_fail(TM_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return tm_fail(TM_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return tm_fail(TM_ERR_LIMIT, "%s: too large to map", path);
    }
    tm_safetensors *st = new_st(path);
    if (!st) {
        close(fd);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", path);
    }
    st->size = (size_t)sb.st_size;
    if (st->size >= 8) { /* shorter files fail in parse(); mmap refuses 0 bytes */
        void *m = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            tm_safetensors_close(st);
            return tm_fail(TM_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
        st->map = m;
        st->map_size = st->size;
        st->base = m;
    } else {
        static const unsigned char none[8];
        st->base = none;
    }
    close(fd);
    tm_status s = TM_OK;
    if (tm_is_encrypted(st->base, st->size)) s = decrypt_mapping(st, path);
    if (!s) s = parse(st);
    if (!s) s = verify_checksum(st);
    if (s) {
        tm_safetensors_close(st);
        return s;
    }
    *out = st;
    return TM_OK;
}

int tm_safetensors_count(const tm_safetensors *st)
{
    return st ? st->n : 0;
}

const char *tm_safetensors_name(const tm_safetensors *st, int i)
{
    if (!st || i < 0 || i >= st->n) return NULL;
    return st->entries[i].name;
}

int tm_safetensors_find(const tm_safetensors *st, const char *name)
{
    if (!st || !name) return -1;
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->entries[st->by_name[mid]].name);
        if (c == 0) return st->by_name[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

tm_status tm_safetensors_info(const tm_safetensors *st, int i, tm_safetensors_entry *out)
{
    if (!st || !out) return tm_fail(TM_ERR_INVALID, "tm_safetensors_info: NULL argument");
    if (i < 0 || i >= st->n)
        return st_fail(st, TM_ERR_INVALID, "tensor index %d out of range (%d tensors)", i, st->n);
    const st_entry *e = &st->entries[i];
    memset(out, 0, sizeof *out);
    out->name = e->name;
    out->dtype_name = e->dt->name;
    out->supported = e->dt->dtype >= 0;
    out->dtype = out->supported ? (tm_dtype)e->dt->dtype : TM_F32;
    out->ndim = e->ndim;
    for (int d = 0; d < e->ndim; d++) out->shape[d] = e->shape[d];
    out->offset = (size_t)(st->data - st->base) + e->begin;
    out->nbytes = e->end - e->begin;
    return TM_OK;
}

tm_status tm_safetensors_get_at(const tm_safetensors *st, int i, tm_tensor *out)
{
    if (!st || !out) return tm_fail(TM_ERR_INVALID, "tm_safetensors_get: NULL argument");
    if (i < 0 || i >= st->n)
        return st_fail(st, TM_ERR_INVALID, "tensor index %d out of range (%d tensors)", i, st->n);
    st_entry *e = &st->entries[i];
    if (e->dt->dtype < 0)
        return st_fail(st, TM_ERR_UNSUPPORTED,
                       "tensor \"%.200s\" has dtype %s; trimodal reads F32, BF16, F16, I32 and "
                       "I8 only",
                       e->name, e->dt->name);
    tm_dtype dt = (tm_dtype)e->dt->dtype;
    size_t esz = tm_dtype_size(dt);
    size_t nbytes = e->end - e->begin;
    const unsigned char *p = st->data + e->begin;
    void *data;
    if (nbytes == 0) {
        /* Never read; any aligned address will do. */
        static const double empty[1];
        data = (void *)(uintptr_t)empty;
    } else if ((uintptr_t)p % esz == 0) {
        data = (void *)(uintptr_t)p;
    } else {
        data = atomic_load(&e->copy);
        if (!data) {
            void *c = tm_alloc(nbytes);
            if (!c)
                return st_fail(st, TM_ERR_NOMEM, "out of memory copying tensor \"%.200s\"",
                               e->name);
            memcpy(c, p, nbytes);
            void *expected = NULL;
            if (atomic_compare_exchange_strong(&e->copy, &expected, c)) {
                data = c;
            } else { /* another thread was first: use its copy */
                tm_free(c);
                data = expected;
            }
        }
    }
    memset(out, 0, sizeof *out);
    out->dtype = dt;
    out->ndim = e->ndim;
    int64_t stride = 1;
    for (int d = e->ndim - 1; d >= 0; d--) {
        out->shape[d] = e->shape[d];
        out->stride[d] = stride;
        stride *= e->shape[d]; /* as tm_tensor_new does, so is_contiguous agrees */
    }
    out->data = data;
    out->owns_data = 0;
    return TM_OK;
}

tm_status tm_safetensors_get(const tm_safetensors *st, const char *name, tm_tensor *out)
{
    if (!st || !name || !out) return tm_fail(TM_ERR_INVALID, "tm_safetensors_get: NULL argument");
    int i = tm_safetensors_find(st, name);
    if (i < 0) return st_fail(st, TM_ERR_INVALID, "no tensor named \"%.200s\"", name);
    return tm_safetensors_get_at(st, i, out);
}

const char *tm_safetensors_metadata(const tm_safetensors *st, const char *key)
{
    if (!st || !key) return NULL;
    int lo = 0, hi = st->n_meta - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(key, st->meta_by_key[mid]->key);
        if (c == 0) return st->meta_by_key[mid]->value;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

int tm_safetensors_metadata_count(const tm_safetensors *st)
{
    return st ? st->n_meta : 0;
}

const char *tm_safetensors_metadata_key(const tm_safetensors *st, int i)
{
    if (!st || i < 0 || i >= st->n_meta) return NULL;
    return st->meta[i].key;
}

/* ============================================================= writing */

/* Strided tensors are gathered through a buffer of this size. */
#define GATHER_BYTES ((size_t)1 << 20)

typedef struct {
    int index; /* into the caller's array */
    tm_dtype dtype;
    int ndim;
    int64_t shape[TM_MAX_DIMS];
    size_t begin, end;
} wr_entry;

struct tm_safetensors_writer {
    tm_atomic_file *file;
    char *path;
    int n;
    wr_entry *e;       /* data order */
    int pos;           /* next entry in data order */
    size_t written, total;
    tm_status failed;  /* sticky */
    unsigned char *buf; /* gather buffer, made on first use */
    size_t buf_used;
    crypto_generichash_state hash; /* of every byte written, the digits as '0' */
    size_t checksum_at;            /* file offset of the checksum's hex digits */
};

/* Every byte of the file goes through here, to be hashed. */
static tm_status wr_put(tm_safetensors_writer *w, const void *data, size_t size)
{
    crypto_generichash_update(&w->hash, data, (unsigned long long)size);
    return tm_atomic_file_write(w->file, data, size);
}

/* A growing string in library memory. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    size_t need;
    if (!tm_add_size(b->len, n + 1, &need)) {
        b->oom = 1;
        return;
    }
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need) {
            if (cap > SIZE_MAX / 2) {
                cap = need;
                break;
            }
            cap *= 2;
        }
        char *p = tm_alloc(cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        if (b->len) memcpy(p, b->p, b->len);
        tm_free(b->p);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(strbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_u64(strbuf *b, uint64_t v)
{
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)k);
}

/* A JSON string literal; s is valid UTF-8 (checked by the caller). */
static void sb_json_string(strbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    const char *run = s;
    for (const char *p = s;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c != 0 && c != '"' && c != '\\' && c >= 0x20) continue;
        sb_put(b, run, (size_t)(p - run));
        if (c == 0) break;
        char esc[8];
        switch (c) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        }
        run = p + 1;
    }
    sb_put(b, "\"", 1);
}

static int is_utf8(const char *s)
{
    size_t n = strlen(s);
    return utf8_invalid_at((const unsigned char *)s, n, 0) == n;
}

static int cmp_cstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Index of the first repeated string in v[0..n) (sorting a copy), -1 if
 * none, -2 when out of memory. */
static int find_duplicate(const char *const *v, int n, const char **dup)
{
    if (n < 2) return -1;
    const char **c = tm_alloc((size_t)n * sizeof *c);
    if (!c) return -2;
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_cstr);
    int r = -1;
    for (int i = 1; i < n; i++) {
        if (strcmp(c[i - 1], c[i]) == 0) {
            *dup = c[i];
            r = i;
            break;
        }
    }
    tm_free(c);
    return r;
}

static void free_writer(tm_safetensors_writer *w)
{
    tm_free(w->e);
    tm_free(w->path);
    tm_free(w->buf);
    tm_free(w);
}

void tm_safetensors_writer_abort(tm_safetensors_writer *w)
{
    if (!w) return;
    tm_atomic_file_abort(w->file);
    free_writer(w);
}

/* Checks the arguments of a write and builds the header; fills w->e. */
static tm_status build_header(tm_safetensors_writer *w, strbuf *hb, const char *path,
                              const tm_named_tensor *tensors, int n,
                              const char *const *meta_keys, const char *const *meta_values,
                              int n_meta)
{
    if (n < 0 || n_meta < 0 || (n > 0 && !tensors) || (n_meta > 0 && (!meta_keys || !meta_values)))
        return tm_fail(TM_ERR_INVALID, "%s: bad tensor or metadata arrays", path);
    const char **names = tm_alloc(((size_t)n + 1) * sizeof *names);
    if (!names) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", path);
    tm_status s = TM_OK;
    for (int i = 0; i < n && !s; i++) {
        const char *nm = tensors[i].name;
        const tm_tensor *t = tensors[i].tensor;
        names[i] = nm;
        if (!nm || !*nm)
            s = tm_fail(TM_ERR_INVALID, "%s: tensor %d has an empty name", path, i);
        else if (!is_utf8(nm))
            s = tm_fail(TM_ERR_INVALID, "%s: tensor %d's name is not valid UTF-8", path, i);
        else if (strcmp(nm, "__metadata__") == 0)
            s = tm_fail(TM_ERR_INVALID, "%s: a tensor may not be called __metadata__", path);
        else if (!t)
            s = tm_fail(TM_ERR_INVALID, "%s: tensor \"%.200s\" is NULL", path, nm);
        else if ((unsigned)t->dtype >= TM_DTYPE_COUNT || !dtype_file_name(t->dtype))
            s = tm_fail(TM_ERR_INVALID, "%s: tensor \"%.200s\" has an invalid dtype", path, nm);
        else if (t->ndim < 0 || t->ndim > TM_MAX_DIMS)
            s = tm_fail(TM_ERR_INVALID, "%s: tensor \"%.200s\" has %d dimensions", path, nm,
                        t->ndim);
        for (int d = 0; !s && d < t->ndim; d++)
            if (t->shape[d] < 0)
                s = tm_fail(TM_ERR_INVALID, "%s: tensor \"%.200s\" has a negative size", path, nm);
    }
    const char *dup = NULL;
    int r;
    if (!s && (r = find_duplicate(names, n, &dup)) != -1)
        s = r == -2 ? tm_fail(TM_ERR_NOMEM, "%s: out of memory", path)
                    : tm_fail(TM_ERR_INVALID, "%s: tensor name \"%.200s\" appears twice", path, dup);
    tm_free(names);
    if (s) return s;
    for (int i = 0; i < n_meta; i++) {
        if (!meta_keys[i] || !meta_values[i])
            return tm_fail(TM_ERR_INVALID, "%s: metadata entry %d is NULL", path, i);
        if (!is_utf8(meta_keys[i]) || !is_utf8(meta_values[i]))
            return tm_fail(TM_ERR_INVALID, "%s: metadata entry %d is not valid UTF-8", path, i);
    }
    for (int i = 0; i < n_meta; i++)
        if (strcmp(meta_keys[i], TM_ST_CHECKSUM_KEY) == 0)
            return tm_fail(TM_ERR_INVALID, "%s: the metadata key " TM_ST_CHECKSUM_KEY
                                           " is reserved (the writer adds it)", path);
    if ((r = find_duplicate((const char *const *)meta_keys, n_meta, &dup)) != -1)
        return r == -2 ? tm_fail(TM_ERR_NOMEM, "%s: out of memory", path)
                       : tm_fail(TM_ERR_INVALID, "%s: metadata key \"%.200s\" appears twice", path,
                                 dup);

    /* Data order: by decreasing element size, stable. */
    w->e = tm_calloc((size_t)n + 1, sizeof *w->e);
    if (!w->e) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", path);
    int k = 0;
    for (size_t esz = 8; esz >= 1; esz /= 2) {
        for (int i = 0; i < n; i++) {
            const tm_tensor *t = tensors[i].tensor;
            if (tm_dtype_size(t->dtype) != esz) continue;
            wr_entry *e = &w->e[k++];
            e->index = i;
            e->dtype = t->dtype;
            e->ndim = t->ndim;
            size_t bytes = esz;
            for (int d = 0; d < t->ndim; d++) {
                e->shape[d] = t->shape[d];
                if (!tm_mul_size(bytes, (size_t)t->shape[d], &bytes))
                    return tm_fail(TM_ERR_INVALID, "%s: tensor \"%.200s\" is too large", path,
                                   tensors[i].name);
            }
            e->begin = w->total;
            if (!tm_add_size(w->total, bytes, &w->total))
                return tm_fail(TM_ERR_INVALID, "%s: the tensors are too large", path);
            e->end = w->total;
        }
    }
    TM_ASSERT(k == n);
    w->n = n;

    /* The header, in the given order. */
    int *where = tm_alloc(((size_t)n + 1) * sizeof *where); /* caller index -> data order */
    if (!where) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", path);
    for (int j = 0; j < n; j++) where[w->e[j].index] = j;
    sb_put(hb, "{", 1);
    sb_str(hb, "\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
        sb_json_string(hb, meta_keys[i]);
        sb_put(hb, ":", 1);
        sb_json_string(hb, meta_values[i]);
        sb_put(hb, ",", 1);
    }
    /* the checksum's digits are written as '0' and filled in by _finish */
    sb_str(hb, "\"" TM_ST_CHECKSUM_KEY "\":\"" TM_ST_CHECKSUM_PREFIX);
    w->checksum_at = 8 + hb->len;
    sb_str(hb, "0000000000000000000000000000000000000000000000000000000000000000\"}");
    for (int i = 0; i < n; i++) {
        const wr_entry *e = &w->e[where[i]];
        sb_put(hb, ",", 1);
        sb_json_string(hb, tensors[i].name);
        sb_str(hb, ":{\"dtype\":\"");
        sb_str(hb, dtype_file_name(e->dtype));
        sb_str(hb, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) sb_put(hb, ",", 1);
            sb_u64(hb, (uint64_t)e->shape[d]);
        }
        sb_str(hb, "],\"data_offsets\":[");
        sb_u64(hb, e->begin);
        sb_put(hb, ",", 1);
        sb_u64(hb, e->end);
        sb_str(hb, "]}");
    }
    sb_put(hb, "}", 1);
    tm_free(where);
    while (!hb->oom && (8 + hb->len) % 8 != 0) sb_put(hb, " ", 1);
    if (hb->oom) return tm_fail(TM_ERR_NOMEM, "%s: out of memory for the header", path);
    if (hb->len > TM_SAFETENSORS_MAX_HEADER)
        return tm_fail(TM_ERR_LIMIT, "%s: the header would be %zu bytes, over the limit of %zu",
                       path, hb->len, (size_t)TM_SAFETENSORS_MAX_HEADER);
    return TM_OK;
}

tm_status tm_safetensors_writer_open(tm_safetensors_writer **out, const char *path,
                                     const tm_named_tensor *tensors, int n,
                                     const char *const *meta_keys,
                                     const char *const *meta_values, int n_meta)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_safetensors_writer_open: out is NULL");
    *out = NULL;
    if (!path || !*path) return tm_fail(TM_ERR_INVALID, "tm_safetensors_writer_open: empty path");
    tm_safetensors_writer *w = tm_calloc(1, sizeof *w);
    size_t plen = strlen(path) + 1;
    if (!w || !(w->path = tm_alloc(plen))) {
        tm_free(w);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(w->path, path, plen);
    strbuf hb = {0};
    tm_status s = build_header(w, &hb, path, tensors, n, meta_keys, meta_values, n_meta);
    if (!s) s = tm_atomic_file_open(&w->file, path);
    if (!s) {
        unsigned char len8[8];
        uint64_t hl = hb.len;
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
        crypto_generichash_init(&w->hash, NULL, 0, TM_HASH_BYTES);
        s = wr_put(w, len8, 8);
        if (!s) s = wr_put(w, hb.p, hb.len);
    }
    tm_free(hb.p);
    if (s) {
        tm_safetensors_writer_abort(w);
        return s;
    }
    *out = w;
    return TM_OK;
}

int tm_safetensors_writer_next(const tm_safetensors_writer *w)
{
    if (!w || w->failed || w->pos >= w->n) return -1;
    return w->e[w->pos].index;
}

static tm_status writer_spoil(tm_safetensors_writer *w, tm_status s)
{
    if (!w->failed) w->failed = s;
    return s;
}

tm_status tm_safetensors_writer_write(tm_safetensors_writer *w, const void *data, size_t size)
{
    if (!w) return tm_fail(TM_ERR_INVALID, "tm_safetensors_writer_write: writer is NULL");
    if (w->failed) return tm_fail(w->failed, "%s: the writer failed earlier", w->path);
    if (size > w->total - w->written)
        return writer_spoil(w, tm_fail(TM_ERR_INVALID,
                                       "%s: %zu more bytes than the %zu the tensors declare",
                                       w->path, size - (w->total - w->written), w->total));
    tm_status s = wr_put(w, data, size);
    if (s) return writer_spoil(w, s);
    w->written += size;
    while (w->pos < w->n && w->e[w->pos].begin < w->written) w->pos++;
    return TM_OK;
}

/* Appends to the gather buffer, flushing it when full. */
static tm_status gather(tm_safetensors_writer *w, const unsigned char *src, size_t n)
{
    while (n > 0) {
        size_t k = GATHER_BYTES - w->buf_used;
        if (k > n) k = n;
        memcpy(w->buf + w->buf_used, src, k);
        w->buf_used += k;
        src += k;
        n -= k;
        if (w->buf_used == GATHER_BYTES) {
            tm_status s = wr_put(w, w->buf, w->buf_used);
            w->buf_used = 0;
            if (s) return s;
        }
    }
    return TM_OK;
}

/* Writes a non-contiguous tensor row by row along its last axis. */
static tm_status write_strided(tm_safetensors_writer *w, const tm_tensor *t, size_t esz)
{
    if (!w->buf && !(w->buf = tm_alloc(GATHER_BYTES)))
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory for the gather buffer", w->path);
    w->buf_used = 0;
    const unsigned char *base = t->data;
    int nd = t->ndim;
    int64_t inner = t->shape[nd - 1], istride = t->stride[nd - 1];
    int64_t idx[TM_MAX_DIMS] = {0};
    tm_status s = TM_OK;
    for (;;) {
        int64_t off = 0;
        for (int d = 0; d < nd - 1; d++) off += idx[d] * t->stride[d];
        const unsigned char *row = base + (size_t)off * esz;
        if (istride == 1) {
            s = gather(w, row, (size_t)inner * esz);
        } else {
            for (int64_t j = 0; j < inner && !s; j++)
                s = gather(w, row + (size_t)(j * istride) * esz, esz);
        }
        if (s) return s;
        int d = nd - 2;
        for (; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
        if (d < 0) break;
    }
    if (w->buf_used) s = wr_put(w, w->buf, w->buf_used);
    w->buf_used = 0;
    return s;
}

tm_status tm_safetensors_writer_write_tensor(tm_safetensors_writer *w, const tm_tensor *t)
{
    if (!w || !t) return tm_fail(TM_ERR_INVALID, "tm_safetensors_writer_write_tensor: NULL argument");
    if (w->failed) return tm_fail(w->failed, "%s: the writer failed earlier", w->path);
    if (w->pos >= w->n)
        return writer_spoil(w, tm_fail(TM_ERR_INVALID, "%s: every tensor is written already",
                                       w->path));
    const wr_entry *e = &w->e[w->pos];
    if (w->written != e->begin)
        return writer_spoil(w, tm_fail(TM_ERR_INVALID,
                                       "%s: a raw write ended inside a tensor, %zu bytes before "
                                       "tensor %d",
                                       w->path, e->begin - w->written, e->index));
    int same = t->dtype == e->dtype && t->ndim == e->ndim;
    for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
    if (!same)
        return writer_spoil(w, tm_fail(TM_ERR_INVALID,
                                       "%s: tensor %d's dtype or shape differs from the one "
                                       "declared",
                                       w->path, e->index));
    size_t nbytes = e->end - e->begin;
    tm_status s = TM_OK;
    if (nbytes > 0) {
        if (!t->data)
            return writer_spoil(w, tm_fail(TM_ERR_INVALID, "%s: tensor %d has no data", w->path,
                                           e->index));
        if (tm_tensor_is_contiguous(t) || t->ndim == 0)
            s = wr_put(w, t->data, nbytes);
        else
            s = write_strided(w, t, tm_dtype_size(t->dtype));
    }
    if (s) return writer_spoil(w, s);
    w->written += nbytes;
    w->pos++;
    return TM_OK;
}

tm_status tm_safetensors_writer_finish(tm_safetensors_writer *w)
{
    if (!w) return tm_fail(TM_ERR_INVALID, "tm_safetensors_writer_finish: writer is NULL");
    tm_status s;
    if (w->failed) {
        s = tm_fail(w->failed, "%s: not written, the writer failed earlier", w->path);
    } else if (w->written != w->total) {
        s = tm_fail(TM_ERR_INVALID, "%s: not written, %zu of %zu data bytes arrived", w->path,
                    w->written, w->total);
    } else {
        unsigned char d[TM_HASH_BYTES];
        char hex[2 * TM_HASH_BYTES + 1];
        crypto_generichash_final(&w->hash, d, sizeof d);
        sodium_bin2hex(hex, sizeof hex, d, sizeof d);
        s = tm_atomic_file_patch(w->file, w->checksum_at, hex, 64);
        if (!s) {
            s = tm_atomic_file_commit(w->file);
            w->file = NULL;
        }
    }
    tm_safetensors_writer_abort(w); /* removes the temporary file if still there */
    return s;
}

tm_status tm_safetensors_write(const char *path, const tm_named_tensor *tensors, int n,
                               const char *const *meta_keys, const char *const *meta_values,
                               int n_meta)
{
    tm_safetensors_writer *w;
    tm_status s = tm_safetensors_writer_open(&w, path, tensors, n, meta_keys, meta_values, n_meta);
    if (s) return s;
    for (int i; (i = tm_safetensors_writer_next(w)) >= 0;) {
        s = tm_safetensors_writer_write_tensor(w, tensors[i].tensor);
        if (s) {
            tm_safetensors_writer_abort(w);
            return s;
        }
    }
    return tm_safetensors_writer_finish(w);
}
