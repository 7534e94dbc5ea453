/* Text augmentations: token masking (MLM), random deletion of tokens and
 * of words, synonym replacement from a table. Every random draw comes from
 * Philox block (seed, stream, i) for the i-th position or word, so the
 * result is a pure function of the input and (seed, stream). */
#include <stdlib.h>
#include <string.h>

#include "text/bpe_internal.h"
#include "trimodal/io.h"

static float unit(uint32_t v) { return (float)(v >> 8) * (1.0f / 16777216.0f); }

tm_token_mask_params tm_token_mask_default_params(void)
{
    tm_token_mask_params p;
    memset(&p, 0, sizeof p);
    p.prob = 0.15f;
    p.mask_frac = 1.0f;
    p.random_frac = 0.0f;
    p.ignore_label = -100;
    return p;
}

static int bad_prob(float p) { return !(p >= 0.0f && p <= 1.0f); }

tm_status tm_text_mask_tokens(const tm_tokenizer *tok, int32_t *ids, int32_t *labels,
                              int64_t n, const tm_token_mask_params *params, int64_t *n_masked)
{
    if (n_masked) *n_masked = 0;
    tm_token_mask_params p = params ? *params : tm_token_mask_default_params();
    if (!tok || n < 0 || (n && !ids)) return tm_fail(TM_ERR_INVALID, "mask_tokens: bad arguments");
    if (bad_prob(p.prob) || bad_prob(p.mask_frac) || bad_prob(p.random_frac) ||
        p.mask_frac + p.random_frac > 1.0f + 1e-6f)
        return tm_fail(TM_ERR_INVALID, "mask_tokens: prob %g, mask_frac %g, random_frac %g must be in [0, 1] "
                       "with mask_frac + random_frac <= 1", p.prob, p.mask_frac, p.random_frac);
    int32_t mask = tok->special[TM_SPECIAL_MASK];
    if (p.mask_frac > 0 && mask < 0)
        return tm_fail(TM_ERR_INVALID, "mask_tokens: the tokenizer has no mask token");
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok->n_ids)
            return tm_fail(TM_ERR_INVALID, "mask_tokens: id %ld at position %lld is out of range",
                           (long)ids[i], (long long)i);
    /* random replacements are drawn among the ordinary tokens */
    int32_t n_plain = 0;
    for (int32_t id = 0; id < tok->n_ids; id++)
        n_plain += (tok->flags[id] & TMX_TOK_USED) && !(tok->flags[id] & TMX_TOK_SPECIAL);
    int64_t count = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (labels) labels[i] = p.ignore_label;
        if (tok->flags[id] & TMX_TOK_SPECIAL) continue;
        uint32_t r[4];
        tm_philox(p.seed, p.stream, (uint64_t)i, r);
        if (unit(r[0]) >= p.prob) continue;
        count++;
        if (labels) labels[i] = id;
        float u = unit(r[1]);
        if (u < p.mask_frac) {
            ids[i] = mask;
        } else if (u < p.mask_frac + p.random_frac && n_plain > 0) {
            /* the k-th ordinary token: a walk, but only for the rare random case */
            int32_t k = (int32_t)(r[2] % (uint32_t)n_plain);
            for (int32_t c = 0; c < tok->n_ids; c++) {
                if (!(tok->flags[c] & TMX_TOK_USED) || (tok->flags[c] & TMX_TOK_SPECIAL)) continue;
                if (k-- == 0) {
                    ids[i] = c;
                    break;
                }
            }
        }
    }
    if (n_masked) *n_masked = count;
    return TM_OK;
}

tm_status tm_text_delete_tokens(const tm_tokenizer *tok, const int32_t *ids, int64_t n,
                                float prob, uint64_t seed, uint64_t stream, int32_t *out,
                                int64_t *n_out)
{
    if (n_out) *n_out = 0;
    if (!tok || n < 0 || (n && (!ids || !out)) || !n_out || bad_prob(prob))
        return tm_fail(TM_ERR_INVALID, "delete_tokens: bad arguments (prob %g)", prob);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok->n_ids)
            return tm_fail(TM_ERR_INVALID, "delete_tokens: id %ld at position %lld is out of range",
                           (long)ids[i], (long long)i);
    /* first pass: would every ordinary token go? then keep the smallest draw */
    int64_t keep_anyway = -1, plain = 0, kept = 0;
    float smallest = 2.0f;
    for (int64_t i = 0; i < n; i++) {
        if (tok->flags[ids[i]] & TMX_TOK_SPECIAL) continue;
        plain++;
        float u = tm_rng_uniform_at(seed, stream, (uint64_t)i * 4);
        if (u >= prob) kept++;
        if (u < smallest) smallest = u, keep_anyway = i;
    }
    if (kept > 0 || plain == 0) keep_anyway = -1;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        int keep = (tok->flags[id] & TMX_TOK_SPECIAL) || i == keep_anyway ||
                   tm_rng_uniform_at(seed, stream, (uint64_t)i * 4) >= prob;
        if (keep) out[k++] = id;
    }
    *n_out = k;
    return TM_OK;
}

/* ------------------------------------------------------------ words */

static int is_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13); }

typedef struct {
    size_t start, end; /* the word */
} word_span;

/* The words of text; *n of them, malloc'd array (NULL when none). */
static tm_status split_words(const unsigned char *s, size_t len, word_span **out, size_t *n)
{
    size_t cap = 0, k = 0;
    word_span *w = NULL;
    for (size_t i = 0; i < len;) {
        while (i < len && is_space(s[i])) i++;
        if (i >= len) break;
        size_t b = i;
        while (i < len && !is_space(s[i])) i++;
        if (k == cap) {
            cap = cap ? cap * 2 : 32;
            word_span *nw = realloc(w, cap * sizeof *nw);
            if (!nw) {
                free(w);
                return tm_fail(TM_ERR_NOMEM, "out of memory splitting words");
            }
            w = nw;
        }
        w[k].start = b;
        w[k].end = i;
        k++;
    }
    *out = w;
    *n = k;
    return TM_OK;
}

static tm_status out_alloc(size_t cap, char **out)
{
    *out = tm_alloc(cap + 1);
    return *out ? TM_OK : tm_fail(TM_ERR_NOMEM, "out of memory for %zu bytes", cap);
}

tm_status tm_text_delete_words(const void *text, size_t len, float prob, uint64_t seed,
                               uint64_t stream, char **out, size_t *out_len)
{
    if (!out || !out_len || (!text && len) || bad_prob(prob))
        return tm_fail(TM_ERR_INVALID, "delete_words: bad arguments (prob %g)", prob);
    *out = NULL;
    *out_len = 0;
    const unsigned char *s = text ? text : (const unsigned char *)"";
    word_span *w;
    size_t n;
    tm_status rc = split_words(s, len, &w, &n);
    if (rc) return rc;
    char *o;
    if ((rc = out_alloc(len, &o))) {
        free(w);
        return rc;
    }
    uint8_t *del = calloc(n ? n : 1, 1);
    if (!del) {
        free(w);
        tm_free(o);
        return tm_fail(TM_ERR_NOMEM, "delete_words: out of memory");
    }
    size_t kept = 0, smallest_at = 0;
    float smallest = 2.0f;
    for (size_t i = 0; i < n; i++) {
        float u = tm_rng_uniform_at(seed, stream, (uint64_t)i * 4);
        del[i] = u < prob;
        kept += !del[i];
        if (u < smallest) smallest = u, smallest_at = i;
    }
    if (n && !kept) del[smallest_at] = 0;
    /* copy: the text's leading white space, then each kept word preceded
     * by the white space just before it in the text (none for the first
     * kept word), then the trailing white space */
    size_t k = 0;
    if (n == 0) {
        memcpy(o, s, len);
        k = len;
    } else {
        memcpy(o, s, w[0].start);
        k = w[0].start;
        int emitted = 0;
        for (size_t i = 0; i < n; i++) {
            if (del[i]) continue;
            size_t from = emitted ? w[i - 1].end : w[i].start;
            memcpy(o + k, s + from, w[i].end - from);
            k += w[i].end - from;
            emitted = 1;
        }
        memcpy(o + k, s + w[n - 1].end, len - w[n - 1].end);
        k += len - w[n - 1].end;
    }
    o[k] = 0;
    free(w);
    free(del);
    *out = o;
    *out_len = k;
    return TM_OK;
}

/* ------------------------------------------------------------ synonyms */

struct tm_synonyms {
    tmx_pool text;   /* words and synonyms, NUL-terminated */
    uint64_t *hash;  /* (cap) 0 empty */
    uint32_t *entry; /* (cap) */
    uint32_t cap;
    int64_t n;       /* entries */
    uint32_t *word_off, *word_len, *first, *count; /* (n) into syn_ptr */
    const char **syn_ptr;
    size_t n_syn;
    size_t *syn_off; /* offsets until the pool stops moving */
};

void tm_synonyms_free(tm_synonyms *s)
{
    if (!s) return;
    tmx_pool_free(&s->text);
    free(s->hash), free(s->entry), free(s->word_off), free(s->word_len), free(s->first), free(s->count);
    free(s->syn_ptr), free(s->syn_off);
    free(s);
}

int64_t tm_synonyms_count(const tm_synonyms *s) { return s ? s->n : 0; }

static int64_t syn_find(const tm_synonyms *s, const char *w, size_t n)
{
    if (!s->cap) return -1;
    uint64_t h = tmx_hash_bytes(w, n) | 1;
    uint32_t i = (uint32_t)h & (s->cap - 1);
    while (s->hash[i]) {
        uint32_t e = s->entry[i];
        if (s->hash[i] == h && s->word_len[e] == n && !memcmp(s->text.data + s->word_off[e], w, n)) return e;
        i = (i + 1) & (s->cap - 1);
    }
    return -1;
}

const char *const *tm_synonyms_lookup(const tm_synonyms *s, const char *word, size_t n, int *count)
{
    if (count) *count = 0;
    if (!s || !word) return NULL;
    int64_t e = syn_find(s, word, n);
    if (e < 0) return NULL;
    if (count) *count = (int)s->count[e];
    return s->syn_ptr + s->first[e];
}

static void trim(const char **b, const char **e)
{
    while (*b < *e && (**b == ' ' || **b == '\r')) (*b)++;
    while (*e > *b && ((*e)[-1] == ' ' || (*e)[-1] == '\r')) (*e)--;
}

static tm_status syn_parse(tm_synonyms *s, const char *d, size_t size, const char *where)
{
    size_t line = 0, cap_n = 0, cap_syn = 0;
    for (size_t i = 0; i < size;) {
        const char *b = d + i, *nl = memchr(b, '\n', size - i), *e = nl ? nl : d + size;
        i = (size_t)(e - d) + 1;
        line++;
        if (tmx_utf8_valid_prefix((const uint8_t *)b, (size_t)(e - b)) != (size_t)(e - b) ||
            memchr(b, 0, (size_t)(e - b)))
            return tm_fail(TM_ERR_FORMAT, "%s: line %zu is not valid UTF-8 text", where, line);
        const char *tb = b, *te = e;
        trim(&tb, &te);
        if (tb == te || *tb == '#') continue;
        const char *tab = memchr(b, '\t', (size_t)(e - b));
        if (!tab) return tm_fail(TM_ERR_FORMAT, "%s: line %zu: no tab between the word and its synonyms", where, line);
        const char *wb = b, *we = tab;
        trim(&wb, &we);
        if (wb == we) return tm_fail(TM_ERR_FORMAT, "%s: line %zu: an empty word", where, line);
        if (syn_find(s, wb, (size_t)(we - wb)) >= 0)
            return tm_fail(TM_ERR_FORMAT, "%s: line %zu: '%.*s' was listed before", where, line,
                           (int)(we - wb > 60 ? 60 : we - wb), wb);
        if ((uint64_t)s->n == cap_n) {
            cap_n = cap_n ? cap_n * 2 : 64;
            uint32_t **arr[4] = {&s->word_off, &s->word_len, &s->first, &s->count};
            for (int k = 0; k < 4; k++) {
                uint32_t *p = realloc(*arr[k], cap_n * sizeof *p);
                if (!p) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
                *arr[k] = p;
            }
        }
        if ((uint64_t)(s->n + 1) * 2 > s->cap) {
            uint32_t cap = s->cap ? s->cap * 2 : 128;
            uint64_t *h = calloc(cap, sizeof *h);
            uint32_t *en = malloc(cap * sizeof *en);
            if (!h || !en) {
                free(h), free(en);
                return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
            }
            for (uint32_t q = 0; q < s->cap; q++) {
                if (!s->hash[q]) continue;
                uint32_t j = (uint32_t)s->hash[q] & (cap - 1);
                while (h[j]) j = (j + 1) & (cap - 1);
                h[j] = s->hash[q], en[j] = s->entry[q];
            }
            free(s->hash), free(s->entry);
            s->hash = h, s->entry = en, s->cap = cap;
        }
        size_t woff = tmx_pool_add(&s->text, wb, (size_t)(we - wb));
        if (woff == SIZE_MAX || woff > UINT32_MAX) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
        s->text.len++;
        int64_t entry = s->n;
        s->word_off[entry] = (uint32_t)woff;
        s->word_len[entry] = (uint32_t)(we - wb);
        s->first[entry] = (uint32_t)s->n_syn;
        s->count[entry] = 0;
        for (const char *p = tab + 1; p <= e;) {
            const char *c = memchr(p, ',', (size_t)(e - p)), *se = c ? c : e;
            const char *sb = p;
            trim(&sb, &se);
            if (sb == se || memchr(sb, '\t', (size_t)(se - sb)))
                return tm_fail(TM_ERR_FORMAT, "%s: line %zu: an empty synonym or a second tab", where, line);
            if (s->n_syn == cap_syn) {
                cap_syn = cap_syn ? cap_syn * 2 : 128;
                size_t *p2 = realloc(s->syn_off, cap_syn * sizeof *p2);
                if (!p2) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
                s->syn_off = p2;
            }
            size_t off = tmx_pool_add(&s->text, sb, (size_t)(se - sb));
            if (off == SIZE_MAX) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
            s->text.len++;
            s->syn_off[s->n_syn++] = off;
            s->count[entry]++;
            if (!c) break;
            p = c + 1;
        }
        uint64_t h = tmx_hash_bytes(wb, (size_t)(we - wb)) | 1;
        uint32_t j = (uint32_t)h & (s->cap - 1);
        while (s->hash[j]) j = (j + 1) & (s->cap - 1);
        s->hash[j] = h;
        s->entry[j] = (uint32_t)entry;
        s->n++;
    }
    s->syn_ptr = malloc((s->n_syn ? s->n_syn : 1) * sizeof *s->syn_ptr);
    if (!s->syn_ptr) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
    for (size_t k = 0; k < s->n_syn; k++) s->syn_ptr[k] = s->text.data + s->syn_off[k];
    return TM_OK;
}

static tm_status syn_load(tm_synonyms **out, const char *d, size_t size, const char *where)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "synonyms: out is NULL");
    *out = NULL;
    if (size > (size_t)tm_limit_get(TM_LIMIT_TOKENIZER_FILE_BYTES))
        return tm_fail(TM_ERR_LIMIT, "%s: over the %lld-byte limit (limit %s)", where,
                       (long long)tm_limit_get(TM_LIMIT_TOKENIZER_FILE_BYTES),
                       tm_limit_hint(TM_LIMIT_TOKENIZER_FILE_BYTES));
    tm_synonyms *s = calloc(1, sizeof *s);
    if (!s) return tm_fail(TM_ERR_NOMEM, "synonyms: out of memory");
    tm_status rc = syn_parse(s, d ? d : "", size, where);
    if (rc) {
        tm_synonyms_free(s);
        return rc;
    }
    *out = s;
    return TM_OK;
}

tm_status tm_synonyms_load_memory(tm_synonyms **out, const void *data, size_t size)
{
    if (!data && size) return tm_fail(TM_ERR_INVALID, "synonyms: data is NULL");
    return syn_load(out, data, size, "<memory>");
}

tm_status tm_synonyms_load(tm_synonyms **out, const char *path)
{
    if (!out || !path) return tm_fail(TM_ERR_INVALID, "synonyms: NULL argument");
    *out = NULL;
    char *buf;
    size_t n;
    tm_status rc = tm_read_file(path, (size_t)tm_limit_get(TM_LIMIT_TOKENIZER_FILE_BYTES), &buf, &n);
    if (rc == TM_ERR_LIMIT)
        return tm_fail(rc, "%s (limit %s)", tm_last_error(),
                       tm_limit_hint(TM_LIMIT_TOKENIZER_FILE_BYTES));
    if (rc) return rc;
    rc = syn_load(out, buf, n, path);
    free(buf);
    return rc;
}

static int is_punct(unsigned char c)
{
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
           (c >= 0x7B && c <= 0x7E);
}

tm_status tm_text_replace_synonyms(const tm_synonyms *syn, const void *text, size_t len,
                                   float prob, uint64_t seed, uint64_t stream, char **out,
                                   size_t *out_len, int64_t *n_replaced)
{
    if (n_replaced) *n_replaced = 0;
    if (!syn || !out || !out_len || (!text && len) || bad_prob(prob))
        return tm_fail(TM_ERR_INVALID, "replace_synonyms: bad arguments (prob %g)", prob);
    *out = NULL;
    *out_len = 0;
    const unsigned char *s = text ? text : (const unsigned char *)"";
    word_span *w;
    size_t n;
    tm_status rc = split_words(s, len, &w, &n);
    if (rc) return rc;
    /* first pass: the output size */
    size_t cap = len;
    for (size_t pass = 0; pass < 2; pass++) {
        char *o = NULL;
        if (pass == 1 && (rc = out_alloc(cap, &o))) break;
        size_t k = 0, prev = 0;
        int64_t count = 0;
        for (size_t i = 0; i < n; i++) {
            size_t b = w[i].start, e = w[i].end;
            while (b < e && is_punct(s[b])) b++;
            while (e > b && is_punct(s[e - 1])) e--;
            const char *rep = NULL;
            int nsyn = 0, cap1 = 0;
            if (e > b) {
                const char *const *list = tm_synonyms_lookup(syn, (const char *)s + b, e - b, &nsyn);
                if (!list && e - b <= 256) { /* ASCII lowercase */
                    char low[256];
                    for (size_t q = b; q < e; q++)
                        low[q - b] = (char)(s[q] >= 'A' && s[q] <= 'Z' ? s[q] + 32 : s[q]);
                    list = tm_synonyms_lookup(syn, low, e - b, &nsyn);
                    cap1 = list && s[b] >= 'A' && s[b] <= 'Z';
                }
                uint32_t r[4];
                tm_philox(seed, stream, (uint64_t)i, r);
                if (list && unit(r[0]) < prob) rep = list[r[1] % (uint32_t)nsyn];
            }
            size_t replen = rep ? strlen(rep) : 0;
            if (pass == 0) {
                if (rep) cap += replen;
                continue;
            }
            memcpy(o + k, s + prev, (rep ? b : w[i].end) - prev);
            k += (rep ? b : w[i].end) - prev;
            if (rep) {
                memcpy(o + k, rep, replen);
                if (cap1 && o[k] >= 'a' && o[k] <= 'z') o[k] = (char)(o[k] - 32);
                k += replen;
                memcpy(o + k, s + e, w[i].end - e);
                k += w[i].end - e;
                count++;
            }
            prev = w[i].end;
        }
        if (pass == 1) {
            memcpy(o + k, s + prev, len - prev);
            k += len - prev;
            o[k] = 0;
            *out = o;
            *out_len = k;
            if (n_replaced) *n_replaced = count;
        }
    }
    free(w);
    return rc;
}
