/* Training a byte-level BPE vocabulary.
 *
 * 1. Count words: the GPT-2 pre-tokens of the text (pieces of at most
 *    MAX_TRAIN_WORD bytes), in a hash map of word -> count. Files are read
 *    in blocks cut just after a newline followed by a printable ASCII
 *    byte, where no pre-token and no UTF-8 character can straddle the cut,
 *    so the counts do not depend on the block size.
 * 2. Merge: every distinct word is an array of symbol ids. For each pair
 *    we keep its count (weighted by word counts) and the list of words it
 *    occurs in; a max-heap orders pairs by (count desc, left id, right id).
 *    Entries go stale as counts change: a popped entry whose count differs
 *    from the pair's current one is pushed again with the current count.
 *    Only pairs that take the new symbol can gain count in a step, and
 *    those are pushed afresh after it, so the top entry with an up-to-date
 *    count is the true maximum (ties to the smaller pair). Merging a pair
 *    re-counts only the words that hold it: their old pairs are taken out
 *    and their new ones put in, the same as counting from scratch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "trimodal/io.h"

#include "text/bpe_internal.h"

#define MAX_TRAIN_WORD 256
#define READ_BLOCK ((size_t)4 << 20)
#define MAX_BLOCK ((size_t)256 << 20)

tm_tokenizer_train_params tm_tokenizer_train_default_params(void)
{
    tm_tokenizer_train_params p;
    memset(&p, 0, sizeof p);
    p.vocab_size = 8192;
    p.min_frequency = 2;
    static const char *const defaults[TM_SPECIAL_COUNT] = {"<pad>", "<s>", "</s>",
                                                           "<cls>", "<mask>", "<unk>"};
    for (int r = 0; r < TM_SPECIAL_COUNT; r++) p.special_tokens[r] = defaults[r];
    return p;
}

/* ------------------------------------------------------------ word counts */

typedef struct {
    uint64_t *hash; /* 0 empty */
    uint32_t *idx;
    uint32_t cap, n;
    tmx_pool keys;
    uint32_t *off, *len; /* (n) */
    int64_t *count;
    size_t n_cap;
} word_map;

static int wm_grow(word_map *m)
{
    uint32_t cap = m->cap ? m->cap * 2 : 1u << 14;
    uint64_t *h = calloc(cap, sizeof *h);
    uint32_t *ix = malloc(cap * sizeof *ix);
    if (!h || !ix) {
        free(h), free(ix);
        return -1;
    }
    for (uint32_t i = 0; i < m->cap; i++) {
        if (!m->hash[i]) continue;
        uint32_t j = (uint32_t)m->hash[i] & (cap - 1);
        while (h[j]) j = (j + 1) & (cap - 1);
        h[j] = m->hash[i];
        ix[j] = m->idx[i];
    }
    free(m->hash), free(m->idx);
    m->hash = h, m->idx = ix, m->cap = cap;
    return 0;
}

static tm_status wm_add(word_map *m, const uint8_t *w, size_t n)
{
    if ((m->n + 1) * 2 > m->cap && wm_grow(m)) return tm_fail(TM_ERR_NOMEM, "train: out of memory counting words");
    uint64_t h = tmx_hash_bytes(w, n) | 1;
    uint32_t i = (uint32_t)h & (m->cap - 1);
    while (m->hash[i]) {
        if (m->hash[i] == h) {
            uint32_t k = m->idx[i];
            if (m->len[k] == n && !memcmp(m->keys.data + m->off[k], w, n)) {
                m->count[k]++;
                return TM_OK;
            }
        }
        i = (i + 1) & (m->cap - 1);
    }
    if (m->n == m->n_cap) {
        size_t c = m->n_cap ? m->n_cap * 2 : 4096;
        uint32_t *o = realloc(m->off, c * sizeof *o);
        if (o) m->off = o;
        uint32_t *l = realloc(m->len, c * sizeof *l);
        if (l) m->len = l;
        int64_t *k = realloc(m->count, c * sizeof *k);
        if (k) m->count = k;
        if (!o || !l || !k) return tm_fail(TM_ERR_NOMEM, "train: out of memory counting words");
        m->n_cap = c;
    }
    size_t off = tmx_pool_add(&m->keys, w, n);
    if (off == SIZE_MAX || off > UINT32_MAX - MAX_TRAIN_WORD || m->n >= INT32_MAX / 2)
        return tm_fail(TM_ERR_LIMIT, "train: too many distinct words (over 4 GiB of them)");
    m->off[m->n] = (uint32_t)off;
    m->len[m->n] = (uint32_t)n;
    m->count[m->n] = 1;
    m->hash[i] = h;
    m->idx[i] = m->n++;
    return TM_OK;
}

static void wm_free(word_map *m)
{
    free(m->hash), free(m->idx), free(m->off), free(m->len), free(m->count);
    tmx_pool_free(&m->keys);
}

static tm_status count_word(void *ctx, const uint8_t *w, size_t n)
{
    word_map *m = ctx;
    for (size_t k = 0; k < n; k += MAX_TRAIN_WORD) {
        tm_status rc = wm_add(m, w + k, n - k < MAX_TRAIN_WORD ? n - k : MAX_TRAIN_WORD);
        if (rc) return rc;
    }
    return TM_OK;
}

/* ------------------------------------------------------------ pairs */

typedef struct {
    uint64_t *key; /* UINT64_MAX empty */
    uint32_t *idx;
    uint32_t cap, n;
    int64_t *count;  /* (n) */
    uint64_t *pkey;  /* (n) the pair of each index */
    int32_t *stamp;  /* (n) last step that queued the pair */
    tmx_ivec *words; /* (n) words holding the pair (may repeat) */
    size_t n_cap;
} pair_map;

static int pm_grow(pair_map *m)
{
    uint32_t cap = m->cap ? m->cap * 2 : 1u << 14;
    uint64_t *k = malloc(cap * sizeof *k);
    uint32_t *ix = malloc(cap * sizeof *ix);
    if (!k || !ix) {
        free(k), free(ix);
        return -1;
    }
    for (uint32_t i = 0; i < cap; i++) k[i] = UINT64_MAX;
    for (uint32_t i = 0; i < m->cap; i++) {
        if (m->key[i] == UINT64_MAX) continue;
        uint32_t j = (uint32_t)tmx_hash_u64(m->key[i]) & (cap - 1);
        while (k[j] != UINT64_MAX) j = (j + 1) & (cap - 1);
        k[j] = m->key[i];
        ix[j] = m->idx[i];
    }
    free(m->key), free(m->idx);
    m->key = k, m->idx = ix, m->cap = cap;
    return 0;
}

/* Index of an existing pair, -1 if none. */
static int64_t pm_find(const pair_map *m, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    if (!m->cap) return -1;
    uint32_t i = (uint32_t)tmx_hash_u64(key) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == key) return m->idx[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

/* Index of the pair, created with count 0 when new; -1 out of memory. */
static int64_t pm_get(pair_map *m, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    int64_t have = pm_find(m, a, b);
    if (have >= 0) return have;
    if ((m->n + 1) * 2 > m->cap && pm_grow(m)) return -1;
    uint32_t i = (uint32_t)tmx_hash_u64(key) & (m->cap - 1);
    while (m->key[i] != UINT64_MAX) {
        if (m->key[i] == key) return m->idx[i];
        i = (i + 1) & (m->cap - 1);
    }
    if (m->n == m->n_cap) {
        size_t c = m->n_cap ? m->n_cap * 2 : 4096;
        int64_t *cn = realloc(m->count, c * sizeof *cn);
        if (cn) m->count = cn;
        tmx_ivec *w = realloc(m->words, c * sizeof *w);
        if (w) m->words = w;
        uint64_t *pk = realloc(m->pkey, c * sizeof *pk);
        if (pk) m->pkey = pk;
        int32_t *st = realloc(m->stamp, c * sizeof *st);
        if (st) m->stamp = st;
        if (!cn || !w || !pk || !st) return -1;
        m->n_cap = c;
    }
    m->count[m->n] = 0;
    m->pkey[m->n] = key;
    m->stamp[m->n] = -1;
    memset(&m->words[m->n], 0, sizeof m->words[m->n]);
    m->key[i] = key;
    m->idx[i] = m->n;
    return m->n++;
}

static void pm_free(pair_map *m)
{
    for (uint32_t i = 0; i < m->n; i++) tmx_ivec_free(&m->words[i]);
    free(m->key), free(m->idx), free(m->count), free(m->words), free(m->pkey), free(m->stamp);
}

/* max-heap by (count desc, a asc, b asc) */
typedef struct {
    int64_t count;
    int32_t a, b;
} entry;

static int entry_before(const entry *x, const entry *y)
{
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

typedef struct {
    entry *v;
    size_t n, cap;
} heap;

static int heap_push(heap *h, entry e)
{
    if (h->n == h->cap) {
        size_t c = h->cap ? h->cap * 2 : 4096;
        entry *v = realloc(h->v, c * sizeof *v);
        if (!v) return -1;
        h->v = v, h->cap = c;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!entry_before(&e, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = e;
    return 0;
}

static entry heap_pop(heap *h)
{
    entry top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const entry *mv = &last;
        if (l < h->n && entry_before(&h->v[l], mv)) m = l, mv = &h->v[l];
        if (r < h->n && entry_before(&h->v[r], mv)) m = r;
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n) h->v[i] = last;
    return top;
}

/* ------------------------------------------------------------ trainer */

typedef struct {
    const tm_tokenizer_train_params *p;
    word_map words;
    int64_t bytes_done, bytes_total;
} trainer;

static void progress(const trainer *tr, const char *stage, int64_t done, int64_t total)
{
    if (tr->p->progress) tr->p->progress(tr->p->progress_ctx, stage, done, total);
}

static tm_status count_text(trainer *tr, const tm_tokenizer *pre, pcre2_match_data *md,
                            const uint8_t *s, size_t n)
{
    return tmx_pretokenize(pre, md, s, n, count_word, &tr->words);
}

/* Where a block may end: just after a '\n' that a printable ASCII byte
 * follows (searching backwards from the end); 0 if nowhere. */
static size_t cut_point(const uint8_t *s, size_t n)
{
    for (size_t i = n; i >= 2; i--)
        if (s[i - 2] == '\n' && s[i - 1] > 0x20 && s[i - 1] < 0x7F) return i - 1;
    return 0;
}

/* A corpus already in memory (an encrypted file, decrypted), cut into
 * blocks where count_file would cut it, so both count the same words. */
static tm_status count_plain(trainer *tr, const tm_tokenizer *pre, pcre2_match_data *md,
                             const char *path, const uint8_t *s, size_t n)
{
    tm_status rc = TM_OK;
    size_t pos = 0;
    while (!rc && pos < n) {
        size_t win = READ_BLOCK, cut;
        for (;;) {
            size_t len = n - pos < win ? n - pos : win;
            if (pos + len == n) {
                cut = len;
                break;
            }
            cut = cut_point(s + pos, len);
            if (cut) break;
            if (win >= MAX_BLOCK)
                return tm_fail(TM_ERR_LIMIT, "train: %s: over %zu MiB without a line break", path,
                               MAX_BLOCK >> 20);
            win *= 2;
        }
        rc = count_text(tr, pre, md, s + pos, cut);
        tr->bytes_done += (int64_t)cut;
        progress(tr, "count", tr->bytes_done, tr->bytes_total);
        pos += cut;
    }
    return rc;
}

static tm_status count_file(trainer *tr, const tm_tokenizer *pre, pcre2_match_data *md,
                            const char *path)
{
    if (tm_file_is_encrypted(path)) {
        /* encrypted at rest (docs/security.md): decrypted in memory; the
         * plain content is smaller than the file */
        struct stat sb;
        if (stat(path, &sb) != 0) return tm_fail(TM_ERR_IO, "train: %s: %s", path, strerror(errno));
        char *plain = NULL;
        size_t plen = 0;
        tm_status rc = tm_read_file(path, (size_t)sb.st_size, &plain, &plen);
        if (rc) return rc;
        rc = count_plain(tr, pre, md, path, (const uint8_t *)plain, plen);
        volatile char *v = plain; /* wipe the plain text before freeing */
        for (size_t i = 0; i < plen; i++) v[i] = 0;
        tm_free(plain);
        return rc;
    }
    FILE *f = fopen(path, "rb");
    if (!f) return tm_fail(TM_ERR_IO, "train: %s: %s", path, strerror(errno));
    size_t cap = READ_BLOCK, len = 0;
    uint8_t *buf = malloc(cap);
    tm_status rc = TM_OK;
    if (!buf) rc = tm_fail(TM_ERR_NOMEM, "train: out of memory reading %s", path);
    int eof = 0;
    while (!rc && !(eof && len == 0)) {
        if (!eof && len < cap) {
            size_t got = fread(buf + len, 1, cap - len, f);
            len += got;
            if (got == 0) {
                if (ferror(f)) {
                    rc = tm_fail(TM_ERR_IO, "train: %s: read error", path);
                    break;
                }
                eof = 1;
            }
            if (len < cap && !eof) continue;
        }
        size_t cut = eof ? len : cut_point(buf, len);
        if (cut == 0) { /* no safe cut in the block: read more */
            if (cap >= MAX_BLOCK) {
                rc = tm_fail(TM_ERR_LIMIT, "train: %s: over %zu MiB without a line break", path,
                             MAX_BLOCK >> 20);
                break;
            }
            uint8_t *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = tm_fail(TM_ERR_NOMEM, "train: out of memory reading %s", path);
                break;
            }
            buf = nb;
            cap *= 2;
            continue;
        }
        rc = count_text(tr, pre, md, buf, cut);
        tr->bytes_done += (int64_t)cut;
        progress(tr, "count", tr->bytes_done, tr->bytes_total);
        memmove(buf, buf + cut, len - cut);
        len -= cut;
    }
    free(buf);
    fclose(f);
    return rc;
}

/* Symbols of every distinct word, concatenated; words merge in place. */
typedef struct {
    int32_t *sym;
    size_t *start;
    uint32_t *len;
    int64_t *count;
    int32_t *seen; /* last step that visited the word */
    uint32_t n;
} corpus;

#define NOMEM_IF(cond)                                                                   \
    do {                                                                                 \
        if (cond) {                                                                      \
            rc = tm_fail(TM_ERR_NOMEM, "train: out of memory");                          \
            goto done;                                                                   \
        }                                                                                \
    } while (0)

/* The merge loop. t holds the specials and the 256 byte tokens (ids
 * nspecial..nspecial+255 in character order); merges and new tokens are
 * added to it. New token strings are the concatenated strings of the pair,
 * so a string already in the vocabulary keeps its id (as HF's trainer). */
static tm_status merge_all(trainer *tr, tm_tokenizer *t, int32_t nspecial)
{
    const tm_tokenizer_train_params *p = tr->p;
    word_map *wm = &tr->words;
    corpus c = {0};
    pair_map pm = {0};
    heap h = {0};
    tmx_ivec gained = {0};
    tm_status rc = TM_OK;
    size_t total = 0;
    for (uint32_t w = 0; w < wm->n; w++) total += wm->len[w];
    c.n = wm->n;
    c.sym = malloc((total ? total : 1) * sizeof *c.sym);
    c.start = malloc((c.n + 1) * sizeof *c.start);
    c.len = malloc((c.n + 1) * sizeof *c.len);
    c.count = malloc((c.n + 1) * sizeof *c.count);
    c.seen = malloc((c.n + 1) * sizeof *c.seen);
    NOMEM_IF(!c.sym || !c.start || !c.len || !c.count || !c.seen);
    int32_t byte_tok[256];
    for (int b = 0; b < 256; b++) byte_tok[b] = t->byte_id[b];
    size_t at = 0;
    for (uint32_t w = 0; w < c.n; w++) {
        c.start[w] = at;
        c.len[w] = wm->len[w];
        c.count[w] = wm->count[w];
        c.seen[w] = -1;
        const uint8_t *s = (const uint8_t *)wm->keys.data + wm->off[w];
        for (uint32_t i = 0; i < wm->len[w]; i++) c.sym[at++] = byte_tok[s[i]];
    }
    for (uint32_t w = 0; w < c.n; w++) {
        const int32_t *s = c.sym + c.start[w];
        for (uint32_t i = 0; i + 1 < c.len[w]; i++) {
            int64_t k = pm_get(&pm, s[i], s[i + 1]);
            NOMEM_IF(k < 0);
            if (!pm.words[k].n || pm.words[k].v[pm.words[k].n - 1] != (int32_t)w)
                NOMEM_IF(tmx_ivec_push(&pm.words[k], (int32_t)w));
            pm.count[k] += c.count[w];
        }
    }
    for (uint32_t k = 0; k < pm.n; k++) {
        entry e = {pm.count[k], (int32_t)(pm.pkey[k] >> 32), (int32_t)(uint32_t)pm.pkey[k]};
        NOMEM_IF(heap_push(&h, e));
    }
    int32_t n_tokens = t->n_ids;
    int64_t max_merges = p->vocab_size - n_tokens, merges = 0;
    int32_t step = 0;
    (void)nspecial;
    while (n_tokens < p->vocab_size && h.n) {
        entry e = heap_pop(&h);
        int64_t k = pm_find(&pm, e.a, e.b);
        if (k < 0) continue;
        if (pm.count[k] != e.count) { /* stale: requeue with the current count */
            if (pm.count[k] > 0) {
                e.count = pm.count[k];
                NOMEM_IF(heap_push(&h, e));
            }
            continue;
        }
        if (e.count <= 0 || e.count < p->min_frequency) break;
        /* the new token: the two strings joined */
        size_t la = t->str_len[e.a], lb = t->str_len[e.b];
        char ns[2 * TM_TOKENIZER_MAX_TOKEN_BYTES];
        memcpy(ns, t->strs.data + t->str_off[e.a], la);
        memcpy(ns + la, t->strs.data + t->str_off[e.b], lb);
        if (la + lb > TM_TOKENIZER_MAX_TOKEN_BYTES) { /* words are short: cannot happen */
            pm.count[k] = 0;
            continue;
        }
        int32_t nid = tmx_tok_find(t, ns, la + lb);
        if (nid < 0) {
            nid = n_tokens++;
            if ((rc = tmx_tok_set(t, nid, ns, la + lb, TMX_TOK_VOCAB, "train"))) goto done;
        }
        /* the strings live in t->strs, which tmx_tok_set may move: copy */
        char sa[TM_TOKENIZER_MAX_TOKEN_BYTES], sb[TM_TOKENIZER_MAX_TOKEN_BYTES];
        memcpy(sa, ns, la);
        memcpy(sb, ns + la, lb);
        if ((rc = tmx_tok_add_merge(t, sa, la, sb, lb, "train"))) goto done;
        merges++;
        /* apply it to every word that holds the pair */
        tmx_ivec wl = pm.words[k];
        memset(&pm.words[k], 0, sizeof pm.words[k]);
        gained.n = 0;
        for (size_t q = 0; q < wl.n; q++) {
            int32_t w = wl.v[q];
            if (c.seen[w] == step) continue;
            c.seen[w] = step;
            int32_t *s = c.sym + c.start[w];
            uint32_t n = c.len[w];
            int has = 0;
            for (uint32_t i = 0; i + 1 < n && !has; i++) has = s[i] == e.a && s[i + 1] == e.b;
            if (!has) continue;
            int64_t cnt = c.count[w];
            for (uint32_t i = 0; i + 1 < n; i++) pm.count[pm_find(&pm, s[i], s[i + 1])] -= cnt;
            uint32_t o = 0;
            for (uint32_t i = 0; i < n; i++) {
                if (i + 1 < n && s[i] == e.a && s[i + 1] == e.b) {
                    s[o++] = nid;
                    i++;
                } else {
                    s[o++] = s[i];
                }
            }
            c.len[w] = n = o;
            for (uint32_t i = 0; i + 1 < n; i++) {
                int64_t pk = pm_get(&pm, s[i], s[i + 1]);
                if (pk < 0) {
                    tmx_ivec_free(&wl);
                    NOMEM_IF(1);
                }
                pm.count[pk] += cnt;
                if (s[i] != nid && s[i + 1] != nid) continue;
                tmx_ivec *pw = &pm.words[pk];
                if (!pw->n || pw->v[pw->n - 1] != w) {
                    if (tmx_ivec_push(pw, w)) {
                        tmx_ivec_free(&wl);
                        NOMEM_IF(1);
                    }
                }
                if (pm.stamp[pk] != step) {
                    pm.stamp[pk] = step;
                    if (tmx_ivec_push(&gained, (int32_t)pk)) {
                        tmx_ivec_free(&wl);
                        NOMEM_IF(1);
                    }
                }
            }
        }
        tmx_ivec_free(&wl);
        pm.count[k] = 0;
        /* pairs with the new token may have gained: queue their final counts */
        for (size_t q = 0; q < gained.n; q++) {
            int32_t pk = gained.v[q];
            if (pm.count[pk] <= 0) continue;
            entry ne = {pm.count[pk], (int32_t)(pm.pkey[pk] >> 32), (int32_t)(uint32_t)pm.pkey[pk]};
            NOMEM_IF(heap_push(&h, ne));
        }
        step++;
        if (merges % 64 == 0) progress(tr, "merge", merges, max_merges);
    }
    progress(tr, "merge", merges, max_merges);
done:
    free(c.sym), free(c.start), free(c.len), free(c.count), free(c.seen);
    pm_free(&pm);
    free(h.v);
    tmx_ivec_free(&gained);
    return rc;
}

static tm_status train(tm_tokenizer **out, const tm_tokenizer_train_params *params,
                       const char *const *paths, int n_paths, const char *const *texts,
                       const size_t *lens, int n_texts)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "train: out is NULL");
    *out = NULL;
    tm_tokenizer_train_params p = params ? *params : tm_tokenizer_train_default_params();
    int32_t nspecial = 0;
    for (int r = 0; r < TM_SPECIAL_COUNT; r++) {
        const char *s = p.special_tokens[r];
        if (!s) continue;
        int dup = 0;
        for (int q = 0; q < r; q++) dup |= p.special_tokens[q] && !strcmp(p.special_tokens[q], s);
        nspecial += !dup;
        size_t n = strlen(s);
        int64_t max_bytes = tm_limit_get(TM_LIMIT_TOKENIZER_TOKEN_BYTES);
        if (n == 0 || n > (size_t)max_bytes || tmx_utf8_valid_prefix((const uint8_t *)s, n) != n)
            return tm_fail(TM_ERR_INVALID,
                           "train: the %s token must be 1 to %lld bytes of valid UTF-8 (limit %s)",
                           tm_special_role_name((tm_special_role)r), (long long)max_bytes,
                           tm_limit_hint(TM_LIMIT_TOKENIZER_TOKEN_BYTES));
        char one[8];
        for (int b = 0; b < 256; b++) {
            size_t k = tmx_bytes_to_chars((const uint8_t *)&(uint8_t){(uint8_t)b}, 1, one);
            if (k == n && !memcmp(one, s, n))
                return tm_fail(TM_ERR_INVALID, "train: the %s token '%s' is also a byte token",
                               tm_special_role_name((tm_special_role)r), s);
        }
    }
    if (p.vocab_size < nspecial + 256 || p.vocab_size > tm_limit_get(TM_LIMIT_TOKENIZER_VOCAB))
        return tm_fail(TM_ERR_INVALID,
                       "train: vocab_size %d must be in %d..%lld (256 bytes + %d specials; limit %s)",
                       p.vocab_size, nspecial + 256,
                       (long long)tm_limit_get(TM_LIMIT_TOKENIZER_VOCAB), nspecial,
                       tm_limit_hint(TM_LIMIT_TOKENIZER_VOCAB));
    if (n_paths < 0 || n_texts < 0 || (n_paths && !paths) || (n_texts && (!texts || !lens)))
        return tm_fail(TM_ERR_INVALID, "train: bad list of inputs");
    tm_tokenizer *t;
    tm_status rc = tmx_tok_new(&t);
    if (rc) return rc;
    trainer tr;
    memset(&tr, 0, sizeof tr);
    tr.p = &p;
    pcre2_match_data *md = NULL;
    int32_t id = 0;
    for (int r = 0; r < TM_SPECIAL_COUNT && !rc; r++) {
        const char *s = p.special_tokens[r];
        if (!s) continue;
        int32_t have = tmx_tok_find(t, s, strlen(s));
        if (have >= 0) {
            t->special[r] = have;
            continue;
        }
        rc = tmx_tok_set(t, id, s, strlen(s), TMX_TOK_VOCAB | TMX_TOK_ADDED | TMX_TOK_SPECIAL, "train");
        t->special[r] = id++;
    }
    for (uint32_t cp = 0; cp < 512 && !rc; cp++) {
        int b = tmx_char_byte(cp);
        if (b < 0) continue;
        char s[8];
        size_t n = tmx_bytes_to_chars((const uint8_t *)&(uint8_t){(uint8_t)b}, 1, s);
        t->byte_id[b] = id;
        rc = tmx_tok_set(t, id++, s, n, TMX_TOK_VOCAB, "train");
    }
    if (!rc) rc = tmx_compile_pattern(t, "train");
    if (!rc && !(md = pcre2_match_data_create_from_pattern(t->re, NULL)))
        rc = tm_fail(TM_ERR_NOMEM, "train: out of memory");
    for (int i = 0; i < n_texts; i++) tr.bytes_total += (int64_t)lens[i];
    for (int i = 0; i < n_paths && !rc; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (!f) {
            rc = tm_fail(TM_ERR_IO, "train: %s: %s", paths[i], strerror(errno));
            break;
        }
        if (fseek(f, 0, SEEK_END) == 0) tr.bytes_total += ftell(f);
        fclose(f);
    }
    for (int i = 0; i < n_texts && !rc; i++) {
        if (!texts[i] && lens[i]) {
            rc = tm_fail(TM_ERR_INVALID, "train: text %d is NULL", i);
            break;
        }
        rc = count_text(&tr, t, md, (const uint8_t *)texts[i], lens[i]);
        tr.bytes_done += (int64_t)lens[i];
        progress(&tr, "count", tr.bytes_done, tr.bytes_total);
    }
    for (int i = 0; i < n_paths && !rc; i++) rc = count_file(&tr, t, md, paths[i]);
    if (md) pcre2_match_data_free(md);
    if (!rc) rc = merge_all(&tr, t, id - 256);
    if (!rc) rc = tmx_tok_finish(t, "train");
    wm_free(&tr.words);
    if (rc) {
        tm_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return TM_OK;
}

tm_status tm_tokenizer_train_files(tm_tokenizer **out, const char *const *paths, int n_paths,
                                   const tm_tokenizer_train_params *params)
{
    return train(out, params, paths, n_paths, NULL, NULL, 0);
}

tm_status tm_tokenizer_train_memory(tm_tokenizer **out, const char *const *texts,
                                    const size_t *lens, int n, const tm_tokenizer_train_params *params)
{
    return train(out, params, NULL, 0, texts, lens, n);
}
