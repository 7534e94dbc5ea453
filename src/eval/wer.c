/*
 * Word and character error rates: a Levenshtein alignment of each
 * reference-hypothesis pair, with the edit counts of one optimal path.
 *
 * Several alignments can share the least cost with different mixes of
 * substitutions, deletions and insertions. The path counted is fixed:
 * tracing back from the end, a diagonal step (hit or substitution) is
 * preferred, then a deletion (a reference unit missing from the
 * hypothesis), then an insertion. The direction of every cell is stored
 * (one byte each) and the costs kept in two rows.
 */
#include <string.h>

#include "eval_internal.h"

/* pairs longer than this product of lengths are refused (a 64 MiB
 * direction table) */
#define MAX_CELLS ((int64_t)64 << 20)

enum { DIAG = 0, DEL = 1, INS = 2 };

typedef struct {
    int64_t hits, sub, del, ins;
} counts;

static tm_status align(const int32_t *ref, int64_t lr, const int32_t *hyp, int64_t lh,
                       uint8_t **dirs, int64_t *dcap, int64_t **rows, int64_t *rcap, counts *out)
{
    int64_t cells = (lr + 1) * (lh + 1);
    if (lr > MAX_CELLS || lh > MAX_CELLS || cells > MAX_CELLS)
        return tm_fail(TM_ERR_LIMIT,
                       "edit distance: %lld x %lld units is too long to align (at most %lld "
                       "cells); split the text",
                       (long long)lr, (long long)lh, (long long)MAX_CELLS);
    if (cells > *dcap) {
        tm_free(*dirs);
        *dirs = tm_alloc((size_t)cells);
        *dcap = *dirs ? cells : 0;
        if (!*dirs) return tm_fail(TM_ERR_NOMEM, "edit distance: out of memory");
    }
    if (2 * (lh + 1) > *rcap) {
        tm_free(*rows);
        *rows = tm_alloc((size_t)(2 * (lh + 1)) * sizeof(int64_t));
        *rcap = *rows ? 2 * (lh + 1) : 0;
        if (!*rows) return tm_fail(TM_ERR_NOMEM, "edit distance: out of memory");
    }
    uint8_t *d = *dirs;
    int64_t *prev = *rows, *cur = prev + lh + 1;
    const int64_t w = lh + 1;
    for (int64_t j = 0; j <= lh; j++) {
        prev[j] = j;
        d[j] = INS;
    }
    for (int64_t i = 1; i <= lr; i++) {
        cur[0] = i;
        d[i * w] = DEL;
        for (int64_t j = 1; j <= lh; j++) {
            int64_t diag = prev[j - 1] + (ref[i - 1] != hyp[j - 1]);
            int64_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            int64_t best = diag;
            uint8_t dir = DIAG;
            if (del < best) {
                best = del;
                dir = DEL;
            }
            if (ins < best) {
                best = ins;
                dir = INS;
            }
            cur[j] = best;
            d[i * w + j] = dir;
        }
        int64_t *t = prev;
        prev = cur;
        cur = t;
    }
    counts c = {0, 0, 0, 0};
    int64_t i = lr, j = lh;
    while (i > 0 || j > 0) {
        uint8_t dir = d[i * w + j];
        if (dir == DIAG) {
            if (ref[i - 1] == hyp[j - 1]) c.hits++;
            else c.sub++;
            i--;
            j--;
        } else if (dir == DEL) {
            c.del++;
            i--;
        } else {
            c.ins++;
            j--;
        }
    }
    *out = c;
    return TM_OK;
}

/* Code points of the tokens of text joined by single spaces; invalid
 * UTF-8 bytes map to 0x110000 + byte so they stay distinct. */
static tm_status chars_of(tme_vocab *v, const char *text, const tm_text_norm *norm, int32_t **ids,
                          int64_t *cap, int64_t *n)
{
    int32_t *tok = NULL;
    int64_t tcap = 0, nt = 0;
    tm_status st = tme_tokenize_ids(v, text, norm, &tok, &tcap, &nt);
    *n = 0;
    for (int64_t t = 0; t < nt && !st; t++) {
        const unsigned char *s = (const unsigned char *)tme_vocab_word(v, tok[t]);
        size_t len = strlen((const char *)s);
        /* room for the token's bytes and a space */
        if (*n + (int64_t)len + 1 > *cap) {
            int64_t nc = *cap ? *cap : 256;
            while (nc < *n + (int64_t)len + 1) nc *= 2;
            int32_t *p = tm_alloc((size_t)nc * sizeof *p);
            if (!p) {
                st = tm_fail(TM_ERR_NOMEM, "CER: out of memory");
                break;
            }
            if (*n) memcpy(p, *ids, (size_t)*n * sizeof *p);
            tm_free(*ids);
            *ids = p;
            *cap = nc;
        }
        if (t) (*ids)[(*n)++] = ' ';
        for (size_t i = 0; i < len;) {
            unsigned c = s[i];
            int k = 0;
            uint32_t cp = 0;
            if (c < 0x80) { k = 1; cp = c; }
            else if (c >= 0xC2 && c <= 0xDF) { k = 2; cp = c & 0x1F; }
            else if (c >= 0xE0 && c <= 0xEF) { k = 3; cp = c & 0x0F; }
            else if (c >= 0xF0 && c <= 0xF4) { k = 4; cp = c & 0x07; }
            int ok = k > 0 && i + (size_t)k <= len;
            for (int q = 1; ok && q < k; q++) {
                if ((s[i + q] & 0xC0) != 0x80) ok = 0;
                else cp = cp << 6 | (s[i + q] & 0x3F);
            }
            if (ok && ((k == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
                       (k == 4 && (cp < 0x10000 || cp > 0x10FFFF))))
                ok = 0;
            if (!ok) {
                (*ids)[(*n)++] = (int32_t)(0x110000 + c);
                i++;
            } else {
                (*ids)[(*n)++] = (int32_t)cp;
                i += (size_t)k;
            }
        }
    }
    tm_free(tok);
    return st;
}

static tm_status edit_rate(const char *fn, int chars, const char *const *hyps,
                           const char *const *refs, int64_t n, const tm_text_norm *norm,
                           tm_edit_result *out)
{
    if (!hyps || !refs || !out)
        return tm_fail(TM_ERR_INVALID, "%s: hypotheses, references and out must not be NULL", fn);
    if (n <= 0) return tm_fail(TM_ERR_INVALID, "%s: n = %lld pairs, must be > 0", fn, (long long)n);
    if (norm && (norm->punct < TM_PUNCT_REMOVE || norm->punct > TM_PUNCT_KEEP))
        return tm_fail(TM_ERR_INVALID, "%s: unknown punctuation mode %d", fn, (int)norm->punct);
    for (int64_t i = 0; i < n; i++)
        if (!hyps[i] || !refs[i])
            return tm_fail(TM_ERR_INVALID, "%s: pair %lld has a NULL text", fn, (long long)i);
    tme_vocab *v = tme_vocab_new();
    if (!v) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    int32_t *r = NULL, *h = NULL;
    int64_t rcap = 0, hcap = 0, lr = 0, lh = 0, dcap = 0, rowcap = 0;
    uint8_t *dirs = NULL;
    int64_t *rows = NULL;
    tm_edit_result res;
    memset(&res, 0, sizeof res);
    tm_status st = TM_OK;
    for (int64_t i = 0; i < n && !st; i++) {
        if (chars) {
            if ((st = chars_of(v, refs[i], norm, &r, &rcap, &lr))) break;
            if ((st = chars_of(v, hyps[i], norm, &h, &hcap, &lh))) break;
        } else {
            if ((st = tme_tokenize_ids(v, refs[i], norm, &r, &rcap, &lr))) break;
            if ((st = tme_tokenize_ids(v, hyps[i], norm, &h, &hcap, &lh))) break;
        }
        counts c = {0, 0, 0, 0};
        if ((st = align(r, lr, h, lh, &dirs, &dcap, &rows, &rowcap, &c))) break;
        res.hits += c.hits;
        res.substitutions += c.sub;
        res.deletions += c.del;
        res.insertions += c.ins;
        res.ref_len += lr;
        res.hyp_len += lh;
    }
    tme_vocab_free(v);
    tm_free(r);
    tm_free(h);
    tm_free(dirs);
    tm_free(rows);
    if (st) return st;
    if (res.ref_len == 0)
        return tm_fail(TM_ERR_INVALID, "%s: the references hold no %s; the rate is undefined", fn,
                       chars ? "character" : "word");
    res.rate = (double)(res.substitutions + res.deletions + res.insertions) / (double)res.ref_len;
    *out = res;
    return TM_OK;
}

tm_status tm_wer(const char *const *hypotheses, const char *const *references, int64_t n,
                 const tm_text_norm *norm, tm_edit_result *out)
{
    return edit_rate("tm_wer", 0, hypotheses, references, n, norm, out);
}

tm_status tm_cer(const char *const *hypotheses, const char *const *references, int64_t n,
                 const tm_text_norm *norm, tm_edit_result *out)
{
    return edit_rate("tm_cer", 1, hypotheses, references, n, norm, out);
}
