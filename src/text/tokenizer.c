/* The BPE tokenizer: its tables (built by the loaders and the trainer
 * through the tmx_tok_* builder), encoding with a word cache, decoding,
 * special tokens and queries. */
#include <stdlib.h>
#include <string.h>

#include "text/bpe_internal.h"

#define CACHE_MAX_ENTRIES (1u << 17)
#define CACHE_MAX_WORD 128         /* longer words are not cached */
#define CACHE_MAX_KEY_BYTES (8u << 20)
#define SHORT_WORD 48              /* simple quadratic merge loop below this */

const char *tm_special_role_name(tm_special_role role)
{
    static const char *names[TM_SPECIAL_COUNT] = {"pad", "bos", "eos", "cls", "mask", "unk"};
    return (unsigned)role < TM_SPECIAL_COUNT ? names[role] : "?";
}

/* ------------------------------------------------------------ builder */

tm_status tmx_tok_new(tm_tokenizer **out)
{
    tm_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return tm_fail(TM_ERR_NOMEM, "out of memory creating a tokenizer");
    for (int r = 0; r < TM_SPECIAL_COUNT; r++) t->special[r] = -1;
    t->keep_gaps = 1;
    for (int i = 0; i < TMX_CACHE_SLOTS; i++) pthread_mutex_init(&t->cache[i].lock, NULL);
    *out = t;
    if (tmx_tok_set_pattern(t, tmx_gpt2_pattern)) {
        tm_tokenizer_free(t);
        *out = NULL;
        return tm_fail(TM_ERR_NOMEM, "out of memory creating a tokenizer");
    }
    return TM_OK;
}

tm_status tmx_tok_set_pattern(tm_tokenizer *t, const char *pattern)
{
    char *p = NULL;
    if (pattern && !(p = tmx_strdup(pattern))) return TM_ERR_NOMEM;
    free(t->pattern);
    t->pattern = p;
    return TM_OK;
}

tm_status tmx_tok_set_eow(tm_tokenizer *t, const char *suffix)
{
    char *p = NULL;
    if (suffix && *suffix && !(p = tmx_strdup(suffix))) return TM_ERR_NOMEM;
    free(t->eow);
    t->eow = p;
    t->eow_len = p ? strlen(p) : 0;
    return TM_OK;
}

static int grow_ids(tm_tokenizer *t, size_t need)
{
    if (need <= t->cap_ids) return 0;
    size_t cap = t->cap_ids ? t->cap_ids : 1024;
    while (cap < need) cap *= 2;
    uint32_t **arrs[4] = {&t->str_off, &t->str_len, &t->byte_off, &t->byte_len};
    for (int k = 0; k < 4; k++) {
        uint32_t *p = realloc(*arrs[k], cap * sizeof *p);
        if (!p) return -1;
        *arrs[k] = p;
    }
    uint8_t *f = realloc(t->flags, cap);
    if (!f) return -1;
    t->flags = f;
    memset(t->flags + t->cap_ids, 0, cap - t->cap_ids);
    t->cap_ids = cap;
    return 0;
}

static int rehash_strs(tm_tokenizer *t, uint32_t cap)
{
    int32_t *tab = malloc((size_t)cap * sizeof *tab);
    if (!tab) return -1;
    for (uint32_t i = 0; i < cap; i++) tab[i] = -1;
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (!(t->flags[id] & TMX_TOK_USED)) continue;
        uint64_t h = tmx_hash_bytes(t->strs.data + t->str_off[id], t->str_len[id]);
        uint32_t i = (uint32_t)h & (cap - 1);
        while (tab[i] >= 0) i = (i + 1) & (cap - 1);
        tab[i] = id;
    }
    free(t->str_table);
    t->str_table = tab;
    t->str_mask = cap - 1;
    return 0;
}

int32_t tmx_tok_find(const tm_tokenizer *t, const char *s, size_t n)
{
    if (!t->str_table) return -1;
    uint32_t i = (uint32_t)tmx_hash_bytes(s, n) & t->str_mask;
    for (;;) {
        int32_t id = t->str_table[i];
        if (id < 0) return -1;
        if (t->str_len[id] == n && !memcmp(t->strs.data + t->str_off[id], s, n)) return id;
        i = (i + 1) & t->str_mask;
    }
}

tm_status tmx_tok_set(tm_tokenizer *t, int32_t id, const char *str, size_t n, int flags,
                      const char *where)
{
    int64_t max_vocab = tm_limit_get(TM_LIMIT_TOKENIZER_VOCAB);
    int64_t max_bytes = tm_limit_get(TM_LIMIT_TOKENIZER_TOKEN_BYTES);
    if (id < 0 || id >= max_vocab)
        return tm_fail(id < 0 ? TM_ERR_FORMAT : TM_ERR_LIMIT,
                       "%s: token id %ld is outside 0..%lld (limit %s)", where, (long)id,
                       (long long)max_vocab - 1, tm_limit_hint(TM_LIMIT_TOKENIZER_VOCAB));
    if (n == 0) return tm_fail(TM_ERR_FORMAT, "%s: an empty token (id %ld)", where, (long)id);
    if (n > (size_t)max_bytes)
        return tm_fail(TM_ERR_LIMIT, "%s: token id %ld is %zu bytes, over the %lld-byte limit (limit %s)",
                       where, (long)id, n, (long long)max_bytes,
                       tm_limit_hint(TM_LIMIT_TOKENIZER_TOKEN_BYTES));
    if (tmx_utf8_valid_prefix((const uint8_t *)str, n) != n || memchr(str, 0, n))
        return tm_fail(TM_ERR_FORMAT, "%s: token id %ld is not valid UTF-8 text", where, (long)id);
    int32_t old = tmx_tok_find(t, str, n);
    if (old >= 0 && old != id)
        return tm_fail(TM_ERR_FORMAT, "%s: duplicate token '%.*s' (ids %ld and %ld)", where,
                       (int)(n > 60 ? 60 : n), str, (long)old, (long)id);
    if (old == id) {
        t->flags[id] |= (uint8_t)flags;
        return TM_OK;
    }
    if (grow_ids(t, (size_t)id + 1)) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
    if (id < t->n_ids && (t->flags[id] & TMX_TOK_USED))
        return tm_fail(TM_ERR_FORMAT, "%s: duplicate id %ld (tokens '%s' and '%.*s')", where,
                       (long)id, t->strs.data + t->str_off[id], (int)(n > 60 ? 60 : n), str);
    size_t off = tmx_pool_add(&t->strs, str, n);
    if (off == SIZE_MAX || off > UINT32_MAX) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
    t->strs.len++; /* keep the NUL: vocabulary strings are C strings too */
    if (id >= t->n_ids) t->n_ids = id + 1;
    t->str_off[id] = (uint32_t)off;
    t->str_len[id] = (uint32_t)n;
    t->flags[id] = (uint8_t)(flags | TMX_TOK_USED);
    t->n_strs++;
    if ((uint64_t)t->n_strs * 2 > (uint64_t)t->str_mask + 1 || !t->str_table) {
        uint32_t cap = t->str_table ? (t->str_mask + 1) * 2 : 2048;
        while ((uint64_t)cap < (uint64_t)t->n_strs * 2) cap *= 2;
        if (rehash_strs(t, cap)) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
    } else {
        uint32_t i = (uint32_t)tmx_hash_bytes(str, n) & t->str_mask;
        while (t->str_table[i] >= 0) i = (i + 1) & t->str_mask;
        t->str_table[i] = id;
    }
    return TM_OK;
}

static int merge_slot(const tm_tokenizer *t, uint64_t key, uint32_t *slot)
{
    uint32_t i = (uint32_t)tmx_hash_u64(key) & t->mmask;
    for (;;) {
        if (t->mkey[i] == key) {
            *slot = i;
            return 1;
        }
        if (t->mkey[i] == UINT64_MAX) {
            *slot = i;
            return 0;
        }
        i = (i + 1) & t->mmask;
    }
}

static int grow_merges(tm_tokenizer *t)
{
    uint32_t cap = t->mkey ? (t->mmask + 1) * 2 : 1024;
    uint64_t *k = malloc((size_t)cap * sizeof *k);
    int32_t *r = malloc((size_t)cap * sizeof *r), *s = malloc((size_t)cap * sizeof *s);
    if (!k || !r || !s) {
        free(k), free(r), free(s);
        return -1;
    }
    for (uint32_t i = 0; i < cap; i++) k[i] = UINT64_MAX;
    uint64_t *ok = t->mkey;
    int32_t *orank = t->mrank, *ores = t->mres;
    uint32_t ocap = t->mkey ? t->mmask + 1 : 0;
    t->mkey = k, t->mrank = r, t->mres = s, t->mmask = cap - 1;
    for (uint32_t i = 0; i < ocap; i++) {
        if (ok[i] == UINT64_MAX) continue;
        uint32_t slot;
        merge_slot(t, ok[i], &slot);
        t->mkey[slot] = ok[i], t->mrank[slot] = orank[i], t->mres[slot] = ores[i];
    }
    free(ok), free(orank), free(ores);
    return 0;
}

tm_status tmx_tok_add_merge(tm_tokenizer *t, const char *a, size_t an, const char *b, size_t bn,
                            const char *where)
{
    int32_t ia = tmx_tok_find(t, a, an), ib = tmx_tok_find(t, b, bn);
    if (ia < 0 || ib < 0) {
        const char *s = ia < 0 ? a : b;
        size_t sn = ia < 0 ? an : bn;
        return tm_fail(TM_ERR_FORMAT, "%s: merge %zu ('%.*s %.*s') uses '%.*s', which is not in the vocabulary",
                       where, t->merge_a.n + 1, (int)(an > 60 ? 60 : an), a, (int)(bn > 60 ? 60 : bn),
                       b, (int)(sn > 60 ? 60 : sn), s);
    }
    if (an + bn > (size_t)tm_limit_get(TM_LIMIT_TOKENIZER_TOKEN_BYTES))
        return tm_fail(TM_ERR_LIMIT, "%s: merge %zu makes a token over %lld bytes (limit %s)",
                       where, t->merge_a.n + 1,
                       (long long)tm_limit_get(TM_LIMIT_TOKENIZER_TOKEN_BYTES),
                       tm_limit_hint(TM_LIMIT_TOKENIZER_TOKEN_BYTES));
    char buf[TM_TOKENIZER_MAX_TOKEN_BYTES];
    /* with an end-of-word suffix, only the right part may carry it */
    memcpy(buf, a, an);
    memcpy(buf + an, b, bn);
    int32_t ir = tmx_tok_find(t, buf, an + bn);
    if (ir < 0)
        return tm_fail(TM_ERR_FORMAT, "%s: merge %zu ('%.*s %.*s') gives '%.*s', which is not in the vocabulary",
                       where, t->merge_a.n + 1, (int)(an > 60 ? 60 : an), a,
                       (int)(bn > 60 ? 60 : bn), b, (int)(an + bn > 120 ? 120 : an + bn), buf);
    if (t->merge_a.n >= (size_t)INT32_MAX - 1)
        return tm_fail(TM_ERR_LIMIT, "%s: too many merges", where);
    if ((uint64_t)(t->n_mkeys + 1) * 2 > (uint64_t)(t->mkey ? t->mmask + 1 : 0) && grow_merges(t))
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
    uint64_t key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    uint32_t slot;
    int32_t rank = (int32_t)t->merge_a.n;
    /* a pair listed twice keeps its later rank, as GPT-2 and HF do */
    if (!merge_slot(t, key, &slot)) t->n_mkeys++;
    t->mkey[slot] = key, t->mrank[slot] = rank, t->mres[slot] = ir;
    if (tmx_ivec_push(&t->merge_a, ia) || tmx_ivec_push(&t->merge_b, ib))
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
    return TM_OK;
}

static inline int lookup_merge(const tm_tokenizer *t, int32_t a, int32_t b, int32_t *rank,
                               int32_t *res)
{
    if (!t->mkey) return 0;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t i = (uint32_t)tmx_hash_u64(key) & t->mmask;
    for (;;) {
        uint64_t k = t->mkey[i];
        if (k == key) {
            *rank = t->mrank[i];
            *res = t->mres[i];
            return 1;
        }
        if (k == UINT64_MAX) return 0;
        i = (i + 1) & t->mmask;
    }
}

/* Decoded bytes of a vocabulary string: byte-level characters back to
 * bytes (the suffix, when it ends the string, becomes a space); a string
 * with any other character stands for its own UTF-8, as HF decodes it. */
static size_t decode_token(const tm_tokenizer *t, const char *s, size_t n, int added, uint8_t *out,
                           int *eow)
{
    *eow = 0;
    if (added) {
        memcpy(out, s, n);
        return n;
    }
    size_t body = n;
    if (t->eow && n >= t->eow_len && !memcmp(s + n - t->eow_len, t->eow, t->eow_len)) {
        body = n - t->eow_len;
        *eow = 1;
    }
    size_t k = 0;
    for (size_t i = 0; i < body;) {
        int l = tmx_utf8_len((const uint8_t *)s + i, body - i);
        int b = l ? tmx_char_byte(tmx_utf8_get((const uint8_t *)s + i, l)) : -1;
        if (b < 0) {
            memcpy(out, s, n);
            *eow = 0;
            return n;
        }
        out[k++] = (uint8_t)b;
        i += (size_t)l;
    }
    if (*eow) out[k++] = ' ';
    return k;
}

static int cmp_added(const void *x, const void *y, void *ctx);

tm_status tmx_tok_index_added(tm_tokenizer *t)
{
    t->added.n = 0;
    t->has_nonspecial_added = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        if ((t->flags[id] & TMX_TOK_USED) && (t->flags[id] & (TMX_TOK_ADDED | TMX_TOK_SPECIAL))) {
            t->flags[id] |= TMX_TOK_ADDED;
            if (tmx_ivec_push(&t->added, id)) return tm_fail(TM_ERR_NOMEM, "out of memory");
            if (!(t->flags[id] & TMX_TOK_SPECIAL)) t->has_nonspecial_added = 1;
        }
    }
    /* counting sort by first byte, then longest first inside a bucket */
    int32_t *by = malloc((t->added.n + 1) * sizeof *by);
    if (!by) return tm_fail(TM_ERR_NOMEM, "out of memory");
    memset(t->added_first, 0, sizeof t->added_first);
    for (size_t i = 0; i < t->added.n; i++) {
        int32_t id = t->added.v[i];
        t->added_first[(uint8_t)t->strs.data[t->str_off[id]] + 1]++;
    }
    for (int b = 0; b < 256; b++) t->added_first[b + 1] += t->added_first[b];
    int32_t fill[256];
    memcpy(fill, t->added_first, sizeof fill);
    for (size_t i = 0; i < t->added.n; i++) {
        int32_t id = t->added.v[i];
        by[fill[(uint8_t)t->strs.data[t->str_off[id]]]++] = id;
    }
    for (int b = 0; b < 256; b++) { /* insertion sort: buckets are tiny */
        for (int32_t i = t->added_first[b] + 1; i < t->added_first[b + 1]; i++) {
            int32_t x = by[i], j = i - 1;
            while (j >= t->added_first[b] && cmp_added(&by[j], &x, t) > 0) {
                by[j + 1] = by[j];
                j--;
            }
            by[j + 1] = x;
        }
    }
    free(t->added_by_first);
    t->added_by_first = by;
    return TM_OK;
}

static int cmp_added(const void *x, const void *y, void *ctx)
{
    const tm_tokenizer *t = ctx;
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    if (t->str_len[a] != t->str_len[b]) return t->str_len[a] > t->str_len[b] ? -1 : 1;
    return a < b ? -1 : a > b;
}

tm_status tmx_tok_finish(tm_tokenizer *t, const char *where)
{
    tm_status rc;
    if (t->n_ids == 0) return tm_fail(TM_ERR_FORMAT, "%s: the vocabulary is empty", where);
    t->bytes.len = 0;
    uint8_t buf[TM_TOKENIZER_MAX_TOKEN_BYTES + 1];
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (!(t->flags[id] & TMX_TOK_USED)) continue;
        int eow;
        int added = (t->flags[id] & TMX_TOK_ADDED) && !(t->flags[id] & TMX_TOK_VOCAB);
        size_t n = decode_token(t, t->strs.data + t->str_off[id], t->str_len[id], added, buf, &eow);
        size_t off = tmx_pool_add(&t->bytes, buf, n);
        if (off == SIZE_MAX || off > UINT32_MAX) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", where);
        t->byte_off[id] = (uint32_t)off;
        t->byte_len[id] = (uint32_t)n;
        if (eow) t->flags[id] |= TMX_TOK_EOW;
    }
    t->bytes_complete = 1;
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t n = tmx_bytes_to_chars((const uint8_t *)&(uint8_t){(uint8_t)b}, 1, s);
        t->byte_id[b] = tmx_tok_find(t, s, n);
        t->byte_eow_id[b] = -1;
        if (t->eow) {
            char e[8 + 64];
            if (t->eow_len <= 64) {
                memcpy(e, s, n);
                memcpy(e + n, t->eow, t->eow_len);
                t->byte_eow_id[b] = tmx_tok_find(t, e, n + t->eow_len);
            }
            if (t->byte_eow_id[b] < 0) t->bytes_complete = 0;
        }
        if (t->byte_id[b] < 0) t->bytes_complete = 0;
    }
    for (int r = 0; r < TM_SPECIAL_COUNT; r++)
        if (t->special[r] >= 0) t->flags[t->special[r]] |= TMX_TOK_SPECIAL | TMX_TOK_ADDED;
    if ((rc = tmx_tok_index_added(t))) return rc;
    return tmx_compile_pattern(t, where);
}

/* ------------------------------------------------------------ lifetime */

static void cache_release(tmx_cache *c)
{
    free(c->hash);
    free(c->entry);
    free(c->key_off);
    free(c->key_len);
    free(c->ids_off);
    free(c->ids_len);
    tmx_pool_free(&c->keys);
    tmx_ivec_free(&c->ids);
    if (c->md) pcre2_match_data_free(c->md);
    c->hash = NULL, c->entry = NULL, c->key_off = c->key_len = c->ids_off = c->ids_len = NULL;
    c->md = NULL;
    c->ready = 0;
    c->count = 0;
}

void tm_tokenizer_free(tm_tokenizer *t)
{
    if (!t) return;
    for (int i = 0; i < TMX_CACHE_SLOTS; i++) {
        cache_release(&t->cache[i]);
        pthread_mutex_destroy(&t->cache[i].lock);
    }
    tmx_pool_free(&t->strs);
    tmx_pool_free(&t->bytes);
    free(t->str_off), free(t->str_len), free(t->byte_off), free(t->byte_len), free(t->flags);
    free(t->str_table);
    free(t->mkey), free(t->mrank), free(t->mres);
    tmx_ivec_free(&t->merge_a);
    tmx_ivec_free(&t->merge_b);
    tmx_ivec_free(&t->added);
    free(t->added_by_first);
    free(t->pattern), free(t->eow), free(t->unk_token);
    if (t->re) pcre2_code_free(t->re);
    free(t);
}

/* ------------------------------------------------------------ queries */

int32_t tm_tokenizer_vocab_size(const tm_tokenizer *t) { return t ? t->n_ids : 0; }
int32_t tm_tokenizer_merge_count(const tm_tokenizer *t) { return t ? (int32_t)t->merge_a.n : 0; }

tm_bpe_style tm_tokenizer_style(const tm_tokenizer *t)
{
    return t && (t->eow || t->lowercase) ? TM_BPE_CLIP : TM_BPE_GPT2;
}

int32_t tm_tokenizer_token_id(const tm_tokenizer *t, const char *token)
{
    return t && token ? tmx_tok_find(t, token, strlen(token)) : -1;
}

const char *tm_tokenizer_token(const tm_tokenizer *t, int32_t id)
{
    if (!t || id < 0 || id >= t->n_ids || !(t->flags[id] & TMX_TOK_USED)) return NULL;
    return t->strs.data + t->str_off[id];
}

const char *tm_tokenizer_token_bytes(const tm_tokenizer *t, int32_t id, size_t *len)
{
    if (!t || id < 0 || id >= t->n_ids || !(t->flags[id] & TMX_TOK_USED)) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->byte_len[id];
    return t->bytes.data + t->byte_off[id];
}

int32_t tm_tokenizer_special_id(const tm_tokenizer *t, tm_special_role role)
{
    return t && (unsigned)role < TM_SPECIAL_COUNT ? t->special[role] : -1;
}

int tm_tokenizer_is_special(const tm_tokenizer *t, int32_t id)
{
    return t && id >= 0 && id < t->n_ids && (t->flags[id] & TMX_TOK_SPECIAL) != 0;
}

tm_status tm_tokenizer_set_special(tm_tokenizer *t, tm_special_role role, const char *content)
{
    if (!t || (unsigned)role >= TM_SPECIAL_COUNT)
        return tm_fail(TM_ERR_INVALID, "tm_tokenizer_set_special: bad tokenizer or role");
    int32_t old = t->special[role];
    if (!content) {
        t->special[role] = -1;
    } else {
        size_t n = strlen(content);
        size_t max_bytes = (size_t)tm_limit_get(TM_LIMIT_TOKENIZER_TOKEN_BYTES);
        if (n == 0 || n > max_bytes || tmx_utf8_valid_prefix((const uint8_t *)content, n) != n)
            return tm_fail(n > max_bytes ? TM_ERR_LIMIT : TM_ERR_INVALID,
                           "special token for %s: must be 1 to %zu bytes of valid UTF-8 (limit %s)",
                           tm_special_role_name(role), max_bytes,
                           tm_limit_hint(TM_LIMIT_TOKENIZER_TOKEN_BYTES));
        int32_t id = tmx_tok_find(t, content, n);
        if (id < 0) {
            if (t->n_ids >= tm_limit_get(TM_LIMIT_TOKENIZER_VOCAB))
                return tm_fail(TM_ERR_LIMIT, "special token %s: the vocabulary is full (limit %s)",
                               content, tm_limit_hint(TM_LIMIT_TOKENIZER_VOCAB));
            id = t->n_ids;
            tm_status rc = tmx_tok_set(t, id, content, n, TMX_TOK_ADDED | TMX_TOK_SPECIAL,
                                       "special token");
            if (rc) return rc;
            size_t off = tmx_pool_add(&t->bytes, content, n);
            if (off == SIZE_MAX || off > UINT32_MAX) return tm_fail(TM_ERR_NOMEM, "out of memory");
            t->byte_off[id] = (uint32_t)off;
            t->byte_len[id] = (uint32_t)n;
        }
        t->flags[id] |= TMX_TOK_SPECIAL | TMX_TOK_ADDED;
        t->special[role] = id;
    }
    /* a token that lost its last role stays special only if the file said so;
     * we cannot tell any more, so it stays special: safer for skip_special */
    (void)old;
    return tmx_tok_index_added(t);
}

/* ------------------------------------------------------------ BPE */

typedef struct {
    tmx_ivec *out;
    const tm_tokenizer *t;
    tmx_cache *cache;
    tmx_ivec work; /* scratch for long words */
    tmx_pool scratch;
} enc_state;

static tm_status push_id(tmx_ivec *v, int32_t id)
{
    return tmx_ivec_push(v, id) ? tm_fail(TM_ERR_NOMEM, "out of memory encoding") : TM_OK;
}

/* Initial symbols of a word: its byte tokens, the last one with the
 * end-of-word suffix; a byte without a token becomes unk, or is dropped
 * when there is no unk (as HF does). */
static size_t initial_symbols(const tm_tokenizer *t, const uint8_t *w, size_t n, int32_t *sym)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = (t->eow && i == n - 1) ? t->byte_eow_id[w[i]] : t->byte_id[w[i]];
        if (id < 0) id = t->special[TM_SPECIAL_UNK];
        if (id >= 0) sym[k++] = id;
    }
    return k;
}

/* Short words: repeatedly merge the lowest-ranked pair, leftmost first. */
static size_t merge_short(const tm_tokenizer *t, int32_t *sym, size_t n)
{
    while (n > 1) {
        int32_t best = INT32_MAX, res = -1;
        size_t at = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            int32_t r, s;
            if (lookup_merge(t, sym[i], sym[i + 1], &r, &s) && r < best) best = r, res = s, at = i;
        }
        if (res < 0) break;
        sym[at] = res;
        memmove(sym + at + 1, sym + at + 2, (n - at - 2) * sizeof *sym);
        n--;
    }
    return n;
}

/* Long words: a doubly linked list of symbols and a binary heap of
 * candidate merges ordered by (rank, position); entries whose symbols
 * changed since they were pushed are skipped when popped. O(n log n). */
typedef struct {
    int32_t rank, pos, a, b;
} cand;

static int cand_less(const cand *x, const cand *y)
{
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(cand *h, size_t *n, cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, size_t *n)
{
    cand top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand *mv = &last;
        if (l < *n && cand_less(&h[l], mv)) m = l, mv = &h[l];
        if (r < *n && cand_less(&h[r], mv)) m = r;
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    if (*n) h[i] = last;
    return top;
}

static tm_status merge_long(const tm_tokenizer *t, int32_t *sym, size_t *np)
{
    size_t n = *np;
    int32_t *prev = malloc(n * sizeof *prev), *next = malloc(n * sizeof *next);
    cand *heap = malloc(2 * n * sizeof *heap); /* each merge pushes at most 2 */
    if (!prev || !next || !heap) {
        free(prev), free(next), free(heap);
        return tm_fail(TM_ERR_NOMEM, "out of memory encoding a %zu-byte word", n);
    }
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t r, s;
        if (lookup_merge(t, sym[i], sym[i + 1], &r, &s))
            heap_push(heap, &hn, (cand){r, (int32_t)i, sym[i], sym[i + 1]});
    }
    while (hn) {
        cand c = heap_pop(heap, &hn);
        int32_t i = c.pos, j = next[i];
        if (sym[i] != c.a || j < 0 || sym[j] != c.b) continue; /* stale */
        int32_t r = 0, s = 0;
        lookup_merge(t, c.a, c.b, &r, &s);
        sym[i] = s;
        sym[j] = -1;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        int32_t r2, s2;
        if (prev[i] >= 0 && lookup_merge(t, sym[prev[i]], sym[i], &r2, &s2))
            heap_push(heap, &hn, (cand){r2, prev[i], sym[prev[i]], sym[i]});
        if (next[i] >= 0 && lookup_merge(t, sym[i], sym[next[i]], &r2, &s2))
            heap_push(heap, &hn, (cand){r2, i, sym[i], sym[next[i]]});
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) sym[k++] = sym[i];
    *np = k;
    free(prev), free(next), free(heap);
    return TM_OK;
}

/* ids of one word appended to out */
static tm_status bpe_word(enc_state *st, const uint8_t *w, size_t n)
{
    const tm_tokenizer *t = st->t;
    tmx_ivec *out = st->out;
    if (t->ignore_merges) {
        size_t need = 2 * n + t->eow_len;
        if (need <= TM_TOKENIZER_MAX_TOKEN_BYTES) {
            char buf[TM_TOKENIZER_MAX_TOKEN_BYTES];
            size_t k = tmx_bytes_to_chars(w, n, buf);
            if (t->eow) memcpy(buf + k, t->eow, t->eow_len), k += t->eow_len;
            int32_t id = tmx_tok_find(t, buf, k);
            if (id >= 0 && !(t->flags[id] & TMX_TOK_ADDED && !(t->flags[id] & TMX_TOK_VOCAB)))
                return push_id(out, id);
        }
    }
    if (tmx_ivec_reserve(out, out->n + n)) return tm_fail(TM_ERR_NOMEM, "out of memory encoding");
    int32_t *sym = out->v + out->n;
    size_t k = initial_symbols(t, w, n, sym);
    if (k < SHORT_WORD) {
        k = merge_short(t, sym, k);
    } else {
        tm_status rc = merge_long(t, sym, &k);
        if (rc) return rc;
    }
    out->n += k;
    return TM_OK;
}

/* ------------------------------------------------------------ cache */

static int cache_init(tmx_cache *c, const tm_tokenizer *t)
{
    uint32_t cap = 4096;
    c->hash = calloc(cap, sizeof *c->hash);
    c->entry = malloc(cap * sizeof *c->entry);
    c->key_off = malloc(cap / 2 * sizeof *c->key_off);
    c->key_len = malloc(cap / 2 * sizeof *c->key_len);
    c->ids_off = malloc(cap / 2 * sizeof *c->ids_off);
    c->ids_len = malloc(cap / 2 * sizeof *c->ids_len);
    if (t->re && !c->md) c->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!c->hash || !c->entry || !c->key_off || !c->key_len || !c->ids_off || !c->ids_len ||
        (t->re && !c->md)) {
        cache_release(c);
        return -1;
    }
    c->cap = cap;
    c->count = 0;
    c->ready = 1;
    return 0;
}

static void cache_clear(tmx_cache *c)
{
    memset(c->hash, 0, c->cap * sizeof *c->hash);
    c->count = 0;
    c->keys.len = 0;
    c->ids.n = 0;
}

static int cache_grow(tmx_cache *c)
{
    uint32_t cap = c->cap * 2;
    uint64_t *h = calloc(cap, sizeof *h);
    uint32_t *e = malloc(cap * sizeof *e);
    uint32_t *arr[4] = {NULL, NULL, NULL, NULL};
    uint32_t **old[4] = {&c->key_off, &c->key_len, &c->ids_off, &c->ids_len};
    int ok = h && e;
    for (int k = 0; k < 4 && ok; k++) {
        arr[k] = realloc(*old[k], cap / 2 * sizeof **old[k]);
        if (arr[k]) *old[k] = arr[k];
        else ok = 0;
    }
    if (!ok) {
        free(h), free(e);
        return -1;
    }
    for (uint32_t i = 0; i < c->cap; i++) {
        if (!c->hash[i]) continue;
        uint32_t j = (uint32_t)c->hash[i] & (cap - 1);
        while (h[j]) j = (j + 1) & (cap - 1);
        h[j] = c->hash[i];
        e[j] = c->entry[i];
    }
    free(c->hash), free(c->entry);
    c->hash = h, c->entry = e, c->cap = cap;
    return 0;
}

static tm_status word_cached(void *ctx, const uint8_t *w, size_t n)
{
    enc_state *st = ctx;
    tmx_cache *c = st->cache;
    if (!c || n > CACHE_MAX_WORD) return bpe_word(st, w, n);
    uint64_t h = tmx_hash_bytes(w, n) | 1; /* 0 marks an empty slot */
    uint32_t i = (uint32_t)h & (c->cap - 1);
    while (c->hash[i]) {
        if (c->hash[i] == h) {
            uint32_t e = c->entry[i];
            if (c->key_len[e] == n && !memcmp(c->keys.data + c->key_off[e], w, n)) {
                uint32_t m = c->ids_len[e];
                if (m == 0) return TM_OK; /* every byte dropped */
                if (tmx_ivec_reserve(st->out, st->out->n + m))
                    return tm_fail(TM_ERR_NOMEM, "out of memory encoding");
                memcpy(st->out->v + st->out->n, c->ids.v + c->ids_off[e], m * sizeof(int32_t));
                st->out->n += m;
                return TM_OK;
            }
        }
        i = (i + 1) & (c->cap - 1);
    }
    size_t before = st->out->n;
    tm_status rc = bpe_word(st, w, n);
    if (rc) return rc;
    size_t m = st->out->n - before;
    /* remember it; a full cache starts over (bounded memory) */
    if (c->count >= CACHE_MAX_ENTRIES || c->keys.len + n > CACHE_MAX_KEY_BYTES) {
        cache_clear(c);
        i = (uint32_t)h & (c->cap - 1);
    } else if ((c->count + 1) * 2 > c->cap) {
        if (cache_grow(c)) return TM_OK; /* no room: fine, just not cached */
        i = (uint32_t)h & (c->cap - 1);
    }
    while (c->hash[i]) i = (i + 1) & (c->cap - 1);
    size_t koff = tmx_pool_add(&c->keys, w, n);
    size_t ioff = c->ids.n;
    if (koff == SIZE_MAX || tmx_ivec_reserve(&c->ids, ioff + m + 1)) return TM_OK;
    if (m) memcpy(c->ids.v + ioff, st->out->v + before, m * sizeof(int32_t));
    c->ids.n += m;
    uint32_t e = c->count++;
    c->key_off[e] = (uint32_t)koff, c->key_len[e] = (uint32_t)n;
    c->ids_off[e] = (uint32_t)ioff, c->ids_len[e] = (uint32_t)m;
    c->hash[i] = h;
    c->entry[i] = e;
    return TM_OK;
}

/* ------------------------------------------------------------ encode */

tm_tokenizer_encode_params tm_tokenizer_encode_default_params(void)
{
    tm_tokenizer_encode_params p;
    memset(&p, 0, sizeof p);
    p.max_text_bytes = TM_TOKENIZER_DEFAULT_MAX_TEXT;
    return p;
}

/* Length of the added token matching at s[0..n) (its id in *id), 0 if none. */
static size_t match_added(const tm_tokenizer *t, const uint8_t *s, size_t n, int parse_special,
                          int32_t *id)
{
    for (int32_t k = t->added_first[s[0]]; k < t->added_first[s[0] + 1]; k++) {
        int32_t a = t->added_by_first[k];
        if (!parse_special && (t->flags[a] & TMX_TOK_SPECIAL)) continue;
        size_t len = t->str_len[a];
        if (len <= n && !memcmp(t->strs.data + t->str_off[a], s, len)) {
            *id = a;
            return len;
        }
    }
    return 0;
}

static tm_status encode_text(const tm_tokenizer *t, const uint8_t *s, size_t n, int parse_special,
                             tmx_ivec *out)
{
    enc_state st;
    memset(&st, 0, sizeof st);
    st.t = t;
    st.out = out;
    /* take the first free cache slot; never wait for one */
    tmx_cache *c = NULL;
    tm_tokenizer *mt = (tm_tokenizer *)t; /* the caches are the only mutable part */
    for (int i = 0; i < TMX_CACHE_SLOTS && !c; i++) {
        if (pthread_mutex_trylock(&mt->cache[i].lock) == 0) {
            if (mt->cache[i].ready || cache_init(&mt->cache[i], t) == 0) c = &mt->cache[i];
            else pthread_mutex_unlock(&mt->cache[i].lock);
        }
    }
    pcre2_match_data *md = c ? c->md : NULL, *own_md = NULL;
    if (!md && t->re) {
        md = own_md = pcre2_match_data_create_from_pattern(t->re, NULL);
        if (!md) return tm_fail(TM_ERR_NOMEM, "out of memory encoding");
    }
    st.cache = c;
    tm_status rc = TM_OK;
    int any_added = t->added.n > 0 && (parse_special || t->has_nonspecial_added);
    size_t start = 0;
    if (any_added) {
        for (size_t i = 0; i < n && !rc;) {
            int32_t id;
            size_t len;
            if (t->added_first[s[i]] != t->added_first[s[i] + 1] &&
                (len = match_added(t, s + i, n - i, parse_special, &id))) {
                if (i > start) rc = tmx_pretokenize(t, md, s + start, i - start, word_cached, &st);
                if (!rc) rc = push_id(out, id);
                i += len;
                start = i;
            } else {
                i++;
            }
        }
    }
    if (!rc && start < n) rc = tmx_pretokenize(t, md, s + start, n - start, word_cached, &st);
    if (c) pthread_mutex_unlock(&c->lock);
    if (own_md) pcre2_match_data_free(own_md);
    return rc;
}

/* Shared by encode and encode_into: the full id sequence (bos, text,
 * eos, truncated and padded) in out, with counts. */
static tm_status encode_all(const tm_tokenizer *t, const void *text, size_t len,
                            const tm_tokenizer_encode_params *p, tmx_ivec *out, int32_t *n_tokens,
                            int32_t *n_truncated)
{
    if (!t) return tm_fail(TM_ERR_INVALID, "encode: no tokenizer");
    if (!text && len) return tm_fail(TM_ERR_INVALID, "encode: text is NULL but len is %zu", len);
    if (len > p->max_text_bytes)
        return tm_fail(TM_ERR_LIMIT, "encode: the text is %zu bytes, over the limit of %zu (max_text_bytes)",
                       len, p->max_text_bytes);
    if (p->max_length < 0) return tm_fail(TM_ERR_INVALID, "encode: max_length %d is negative", p->max_length);
    if (p->pad_to_max_length && p->max_length == 0)
        return tm_fail(TM_ERR_INVALID, "encode: pad_to_max_length needs max_length > 0");
    int32_t bos = t->special[TM_SPECIAL_BOS], eos = t->special[TM_SPECIAL_EOS],
            pad = t->special[TM_SPECIAL_PAD];
    if (p->add_bos && bos < 0) return tm_fail(TM_ERR_INVALID, "encode: add_bos, but the tokenizer has no bos token");
    if (p->add_eos && eos < 0) return tm_fail(TM_ERR_INVALID, "encode: add_eos, but the tokenizer has no eos token");
    if (p->pad_to_max_length && pad < 0)
        return tm_fail(TM_ERR_INVALID, "encode: pad_to_max_length, but the tokenizer has no pad token");
    int nspec = (p->add_bos != 0) + (p->add_eos != 0);
    if (p->max_length > 0 && p->max_length < nspec)
        return tm_fail(TM_ERR_INVALID, "encode: max_length %d leaves no room for bos/eos", p->max_length);
    tm_status rc;
    /* about one id per 4 bytes of English: one allocation for most texts */
    if (tmx_ivec_reserve(out, len / 3 + 8 + (p->pad_to_max_length ? (size_t)p->max_length : 0)))
        return tm_fail(TM_ERR_NOMEM, "encode: out of memory");
    if (p->add_bos && (rc = push_id(out, bos))) return rc;
    if ((rc = encode_text(t, text, len, p->parse_special, out))) return rc;
    size_t ntext = out->n - (size_t)(p->add_bos != 0);
    if (ntext > (size_t)INT32_MAX - 4) return tm_fail(TM_ERR_LIMIT, "encode: too many tokens");
    *n_truncated = 0;
    if (p->max_length > 0 && ntext + (size_t)nspec > (size_t)p->max_length) {
        size_t keep = (size_t)(p->max_length - nspec);
        *n_truncated = (int32_t)(ntext - keep);
        out->n = (size_t)(p->add_bos != 0) + keep;
    }
    if (p->add_eos && (rc = push_id(out, eos))) return rc;
    *n_tokens = (int32_t)out->n;
    if (p->pad_to_max_length)
        while (out->n < (size_t)p->max_length)
            if ((rc = push_id(out, pad))) return rc;
    return TM_OK;
}

tm_status tm_tokenizer_encode(const tm_tokenizer *t, const void *text, size_t len,
                              const tm_tokenizer_encode_params *params, tm_text_encoding **out)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "encode: out is NULL");
    *out = NULL;
    tm_tokenizer_encode_params p = params ? *params : tm_tokenizer_encode_default_params();
    tmx_ivec ids = {0};
    int32_t ntok = 0, ntrunc = 0;
    tm_status rc = encode_all(t, text, len, &p, &ids, &ntok, &ntrunc);
    if (rc) {
        tmx_ivec_free(&ids);
        return rc;
    }
    tm_text_encoding *e = tm_calloc(1, sizeof *e);
    size_t n = ids.n ? ids.n : 1;
    if (e) e->ids = tm_alloc(n * sizeof(int32_t)), e->attention_mask = tm_alloc(n * sizeof(int32_t));
    if (!e || !e->ids || !e->attention_mask) {
        tmx_ivec_free(&ids);
        tm_text_encoding_free(e);
        return tm_fail(TM_ERR_NOMEM, "encode: out of memory");
    }
    if (ids.n) memcpy(e->ids, ids.v, ids.n * sizeof(int32_t));
    for (size_t i = 0; i < ids.n; i++) e->attention_mask[i] = i < (size_t)ntok;
    e->length = (int32_t)ids.n;
    e->n_tokens = ntok;
    e->n_truncated = ntrunc;
    tmx_ivec_free(&ids);
    *out = e;
    return TM_OK;
}

tm_status tm_tokenizer_encode_into(const tm_tokenizer *t, const void *text, size_t len,
                                   const tm_tokenizer_encode_params *params, int32_t *ids,
                                   int32_t *mask, int32_t capacity, int32_t *length)
{
    if (length) *length = 0;
    if (!params || !ids || !length || params->max_length <= 0 || params->max_length > capacity)
        return tm_fail(TM_ERR_INVALID, "encode_into: params->max_length must be in 1..capacity (%d)",
                       capacity);
    tmx_ivec v = {0};
    int32_t ntok = 0, ntrunc = 0;
    tm_status rc = encode_all(t, text, len, params, &v, &ntok, &ntrunc);
    if (rc) {
        tmx_ivec_free(&v);
        return rc;
    }
    if (v.n) memcpy(ids, v.v, v.n * sizeof(int32_t));
    if (mask)
        for (size_t i = 0; i < v.n; i++) mask[i] = i < (size_t)ntok;
    *length = (int32_t)v.n;
    tmx_ivec_free(&v);
    return TM_OK;
}

void tm_text_encoding_free(tm_text_encoding *e)
{
    if (!e) return;
    tm_free(e->ids);
    tm_free(e->attention_mask);
    tm_free(e);
}

/* ------------------------------------------------------------ decode */

tm_status tm_tokenizer_decode(const tm_tokenizer *t, const int32_t *ids, int64_t n,
                              int skip_special, char **out, size_t *len)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "decode: out is NULL");
    *out = NULL;
    if (len) *len = 0;
    if (!t || n < 0 || (!ids && n)) return tm_fail(TM_ERR_INVALID, "decode: bad arguments");
    size_t total = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->flags[id] & TMX_TOK_USED))
            return tm_fail(TM_ERR_INVALID, "decode: id %ld at position %lld is not in the vocabulary (size %d)",
                           (long)id, (long long)i, t->n_ids);
        if (skip_special && (t->flags[id] & TMX_TOK_SPECIAL)) continue;
        total += t->byte_len[id];
    }
    char *buf = tm_alloc(total + 1);
    if (!buf) return tm_fail(TM_ERR_NOMEM, "decode: out of memory for %zu bytes", total);
    size_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special && (t->flags[id] & TMX_TOK_SPECIAL)) continue;
        memcpy(buf + k, t->bytes.data + t->byte_off[id], t->byte_len[id]);
        k += t->byte_len[id];
    }
    size_t begin = 0;
    if (t->eow) { /* CLIP: "</w>" became spaces; strip both ends as CLIP does */
        while (k > 0 && buf[k - 1] == ' ') k--;
        while (begin < k && buf[begin] == ' ') begin++;
        memmove(buf, buf + begin, k - begin);
        k -= begin;
    }
    buf[k] = 0;
    *out = buf;
    if (len) *len = k;
    return TM_OK;
}
