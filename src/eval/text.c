/*
 * Text plumbing for the generation metrics: tokenisation (documented in
 * eval.h: ASCII lowercasing, whitespace and ASCII punctuation), interning
 * tokens into integer ids, and a small open-addressing map of n-grams.
 */
#include <string.h>

#include "eval_internal.h"

/* ---------------------------------------------------------- tokenising */

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int is_punct(unsigned char c)
{
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
}

tm_status tme_tokenize(const char *text, const tm_text_norm *norm, tme_token_fn fn, void *ctx)
{
    tm_text_norm nm = norm ? *norm : (tm_text_norm){0, TM_PUNCT_REMOVE};
    size_t len = strlen(text);
    char *buf = tm_alloc(len + 1);
    if (!buf) return tm_fail(TM_ERR_NOMEM, "tokenizer: out of memory for %zu bytes of text", len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        buf[i] = (char)(!nm.keep_case && c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    buf[len] = 0;
    tm_status st = TM_OK;
    size_t i = 0;
    while (i < len && !st) {
        unsigned char c = (unsigned char)buf[i];
        if (is_space(c)) {
            i++;
            continue;
        }
        if (nm.punct != TM_PUNCT_KEEP && is_punct(c)) {
            if (nm.punct == TM_PUNCT_SPLIT) st = fn(ctx, buf + i, 1);
            i++;
            continue;
        }
        size_t j = i;
        while (j < len) {
            unsigned char d = (unsigned char)buf[j];
            if (is_space(d) || (nm.punct != TM_PUNCT_KEEP && is_punct(d))) break;
            j++;
        }
        st = fn(ctx, buf + i, j - i);
        i = j;
    }
    tm_free(buf);
    return st;
}

typedef struct {
    tme_buf out;
    int64_t n;
} collect_ctx;

static tm_status collect(void *vctx, const char *tok, size_t len)
{
    collect_ctx *c = vctx;
    tme_buf_put(&c->out, tok, len);
    tme_buf_put(&c->out, "", 1); /* the separating NUL */
    c->n++;
    return c->out.failed ? tm_fail(TM_ERR_NOMEM, "tm_text_tokenize: out of memory") : TM_OK;
}

tm_status tm_text_tokenize(const char *text, const tm_text_norm *norm, char **tokens,
                           int64_t *n_tokens)
{
    if (!text || !tokens || !n_tokens)
        return tm_fail(TM_ERR_INVALID, "tm_text_tokenize: text, tokens and n_tokens must not be NULL");
    if (norm && (norm->punct < TM_PUNCT_REMOVE || norm->punct > TM_PUNCT_KEEP))
        return tm_fail(TM_ERR_INVALID, "tm_text_tokenize: unknown punctuation mode %d",
                       (int)norm->punct);
    collect_ctx c = {{0}, 0};
    tm_status st = tme_tokenize(text, norm, collect, &c);
    if (st) {
        tme_buf_free(&c.out);
        return st;
    }
    *n_tokens = c.n;
    *tokens = c.n ? tme_buf_take(&c.out) : NULL;
    tme_buf_free(&c.out);
    return TM_OK;
}

/* --------------------------------------------------------------- vocab */

struct tme_vocab {
    int32_t *slots; /* hash slots: id + 1, 0 empty */
    size_t n_slots;
    size_t *offsets; /* (count) into chars */
    uint64_t *hashes;
    int32_t count, cap;
    char *chars;
    size_t chars_len, chars_cap;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

tme_vocab *tme_vocab_new(void)
{
    tme_vocab *v = tm_calloc(1, sizeof *v);
    if (!v) return NULL;
    v->n_slots = 1024;
    v->slots = tm_calloc(v->n_slots, sizeof *v->slots);
    if (!v->slots) {
        tm_free(v);
        return NULL;
    }
    return v;
}

void tme_vocab_free(tme_vocab *v)
{
    if (!v) return;
    tm_free(v->slots);
    tm_free(v->offsets);
    tm_free(v->hashes);
    tm_free(v->chars);
    tm_free(v);
}

const char *tme_vocab_word(const tme_vocab *v, int32_t id)
{
    return v->chars + v->offsets[id];
}

static int grow_slots(tme_vocab *v)
{
    size_t n = v->n_slots * 2;
    int32_t *s = tm_calloc(n, sizeof *s);
    if (!s) return 0;
    for (int32_t id = 0; id < v->count; id++) {
        size_t k = (size_t)v->hashes[id] & (n - 1);
        while (s[k]) k = (k + 1) & (n - 1);
        s[k] = id + 1;
    }
    tm_free(v->slots);
    v->slots = s;
    v->n_slots = n;
    return 1;
}

int32_t tme_vocab_intern(tme_vocab *v, const char *tok, size_t len)
{
    uint64_t h = hash_bytes(tok, len);
    size_t k = (size_t)h & (v->n_slots - 1);
    while (v->slots[k]) {
        int32_t id = v->slots[k] - 1;
        const char *w = v->chars + v->offsets[id];
        if (v->hashes[id] == h && strlen(w) == len && !memcmp(w, tok, len)) return id;
        k = (k + 1) & (v->n_slots - 1);
    }
    if (v->count == INT32_MAX - 1) return -1;
    if ((size_t)(v->count + 1) * 2 > v->n_slots) {
        if (!grow_slots(v)) return -1;
        return tme_vocab_intern(v, tok, len);
    }
    if (v->count == v->cap) {
        int32_t cap = v->cap ? v->cap * 2 : 256;
        size_t *o = tm_alloc((size_t)cap * sizeof *o);
        uint64_t *hs = tm_alloc((size_t)cap * sizeof *hs);
        if (!o || !hs) {
            tm_free(o);
            tm_free(hs);
            return -1;
        }
        if (v->count) {
            memcpy(o, v->offsets, (size_t)v->count * sizeof *o);
            memcpy(hs, v->hashes, (size_t)v->count * sizeof *hs);
        }
        tm_free(v->offsets);
        tm_free(v->hashes);
        v->offsets = o;
        v->hashes = hs;
        v->cap = cap;
    }
    if (v->chars_len + len + 1 > v->chars_cap) {
        size_t cap = v->chars_cap ? v->chars_cap : 4096;
        while (cap < v->chars_len + len + 1) cap *= 2;
        char *c = tm_alloc(cap);
        if (!c) return -1;
        if (v->chars_len) memcpy(c, v->chars, v->chars_len);
        tm_free(v->chars);
        v->chars = c;
        v->chars_cap = cap;
    }
    int32_t id = v->count++;
    v->offsets[id] = v->chars_len;
    v->hashes[id] = h;
    memcpy(v->chars + v->chars_len, tok, len);
    v->chars[v->chars_len + len] = 0;
    v->chars_len += len + 1;
    v->slots[k] = id + 1;
    return id;
}

typedef struct {
    tme_vocab *v;
    int32_t **ids;
    int64_t *cap, n;
} ids_ctx;

static tm_status add_id(void *vctx, const char *tok, size_t len)
{
    ids_ctx *c = vctx;
    int32_t id = tme_vocab_intern(c->v, tok, len);
    if (id < 0) return tm_fail(TM_ERR_NOMEM, "tokenizer: out of memory for the vocabulary");
    if (c->n == *c->cap) {
        int64_t cap = *c->cap ? *c->cap * 2 : 64;
        int32_t *p = tm_alloc((size_t)cap * sizeof *p);
        if (!p) return tm_fail(TM_ERR_NOMEM, "tokenizer: out of memory");
        if (c->n) memcpy(p, *c->ids, (size_t)c->n * sizeof *p);
        tm_free(*c->ids);
        *c->ids = p;
        *c->cap = cap;
    }
    (*c->ids)[c->n++] = id;
    return TM_OK;
}

tm_status tme_tokenize_ids(tme_vocab *v, const char *text, const tm_text_norm *norm,
                           int32_t **ids, int64_t *cap, int64_t *n)
{
    ids_ctx c = {v, ids, cap, 0};
    tm_status st = tme_tokenize(text, norm, add_id, &c);
    *n = c.n;
    return st;
}

tm_status tme_check_samples(const char *fn, const tm_caption_sample *s, int64_t n)
{
    if (!s) return tm_fail(TM_ERR_INVALID, "%s: samples must not be NULL", fn);
    if (n <= 0) return tm_fail(TM_ERR_INVALID, "%s: n = %lld samples, must be > 0", fn, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        if (!s[i].hypothesis)
            return tm_fail(TM_ERR_INVALID, "%s: sample %lld has no hypothesis (NULL)", fn,
                           (long long)i);
        if (s[i].n_references < 1 || !s[i].references)
            return tm_fail(TM_ERR_INVALID, "%s: sample %lld has %d references; at least 1 is needed",
                           fn, (long long)i, s[i].n_references);
        for (int r = 0; r < s[i].n_references; r++)
            if (!s[i].references[r])
                return tm_fail(TM_ERR_INVALID, "%s: reference %d of sample %lld is NULL", fn, r,
                               (long long)i);
    }
    return TM_OK;
}

/* ------------------------------------------------------------ n-grams */

static uint64_t ng_hash(const int32_t *ids, int n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t)(uint32_t)ids[i];
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
    }
    return h;
}

void tme_ng_init(tme_ng_map *m)
{
    memset(m, 0, sizeof *m);
}

void tme_ng_free(tme_ng_map *m)
{
    tm_free(m->slots);
    tm_free(m->e);
    memset(m, 0, sizeof *m);
}

void tme_ng_clear(tme_ng_map *m)
{
    if (m->slots) memset(m->slots, 0, m->n_slots * sizeof *m->slots);
    m->count = 0;
}

static int ng_rehash(tme_ng_map *m, size_t n_slots)
{
    int32_t *s = tm_calloc(n_slots, sizeof *s);
    if (!s) return 0;
    for (size_t i = 0; i < m->count; i++) {
        size_t k = (size_t)m->e[i].h & (n_slots - 1);
        while (s[k]) k = (k + 1) & (n_slots - 1);
        s[k] = (int32_t)i + 1;
    }
    tm_free(m->slots);
    m->slots = s;
    m->n_slots = n_slots;
    return 1;
}

tme_ng_entry *tme_ng_get(tme_ng_map *m, const int32_t *ids, int n, int create)
{
    uint64_t h = ng_hash(ids, n);
    if (m->n_slots) {
        size_t k = (size_t)h & (m->n_slots - 1);
        while (m->slots[k]) {
            tme_ng_entry *e = &m->e[m->slots[k] - 1];
            if (e->h == h && e->n == n && !memcmp(e->ids, ids, (size_t)n * sizeof *ids)) return e;
            k = (k + 1) & (m->n_slots - 1);
        }
    }
    if (!create) return NULL;
    if (m->count >= (size_t)INT32_MAX - 1) return NULL;
    if ((m->count + 1) * 2 > m->n_slots) {
        if (!ng_rehash(m, m->n_slots ? m->n_slots * 2 : 64)) return NULL;
    }
    if (m->count == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 32;
        tme_ng_entry *e = tm_alloc(cap * sizeof *e);
        if (!e) return NULL;
        if (m->count) memcpy(e, m->e, m->count * sizeof *e);
        tm_free(m->e);
        m->e = e;
        m->cap = cap;
    }
    size_t k = (size_t)h & (m->n_slots - 1);
    while (m->slots[k]) k = (k + 1) & (m->n_slots - 1);
    tme_ng_entry *e = &m->e[m->count];
    memset(e, 0, sizeof *e);
    e->h = h;
    e->n = n;
    memcpy(e->ids, ids, (size_t)n * sizeof *ids);
    m->slots[k] = (int32_t)m->count + 1;
    m->count++;
    return e;
}
