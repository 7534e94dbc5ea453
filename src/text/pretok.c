/* Pre-tokenisation: cutting a piece of text into the words that BPE
 * merges inside. Valid UTF-8 stretches are normalised (lowercase, white
 * space collapsed, when the tokenizer asks) and split by the regex; each
 * run of bytes that starts no valid UTF-8 character is one word (the byte
 * mode), so any byte string is covered exactly once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/bpe_internal.h"

const char tmx_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char tmx_clip_pattern[] = "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|"
                                "[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";

/* Unicode's White_Space property as a class body. PCRE2's own \s (with
 * UCP) also takes U+180E, which Unicode dropped in 6.3 and which Python's
 * regex and Oniguruma (used by Hugging Face) do not count. */
#define WS_CLASS "\\t-\\r\\x20\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

static int is_white_space(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Rewrites \s and \S (outside classes) into WS_CLASS, leaving the rest,
 * \Q...\E quotes and escaped backslashes included, as written. */
static char *rewrite_ws(const char *p)
{
    size_t n = strlen(p), cap = n * 8 + sizeof WS_CLASS * 4 + 16;
    char *o = malloc(cap), *q = o;
    if (!o) return NULL;
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        if ((size_t)(q - o) + sizeof WS_CLASS + 8 > cap) {
            size_t at = (size_t)(q - o);
            cap *= 2;
            char *no = realloc(o, cap);
            if (!no) {
                free(o);
                return NULL;
            }
            o = no;
            q = o + at;
        }
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            if (d == 'Q') { /* quoted: copy through \E */
                const char *e = strstr(p + i + 2, "\\E");
                size_t end = e ? (size_t)(e - p) + 2 : n;
                size_t len = end - i;
                if ((size_t)(q - o) + len + 1 > cap) {
                    size_t at = (size_t)(q - o);
                    cap = at + len + cap;
                    char *no = realloc(o, cap);
                    if (!no) {
                        free(o);
                        return NULL;
                    }
                    o = no;
                    q = o + at;
                }
                memcpy(q, p + i, len);
                q += len;
                i = end - 1;
                continue;
            }
            if (d == 's') {
                q += sprintf(q, in_class ? "%s" : "[%s]", WS_CLASS);
            } else if (d == 'S' && !in_class) {
                q += sprintf(q, "[^%s]", WS_CLASS);
            } else {
                *q++ = c;
                *q++ = d;
            }
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            *q++ = c;
            if (i + 1 < n && p[i + 1] == '^') *q++ = p[++i];
            if (i + 1 < n && p[i + 1] == ']') *q++ = p[++i]; /* a leading ] is literal */
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') { /* [:alpha:] */
            const char *e = strstr(p + i + 2, ":]");
            size_t end = e ? (size_t)(e - p) + 2 : i + 1;
            while (i < end) *q++ = p[i++];
            i--;
            continue;
        }
        if (in_class && c == ']') in_class = 0;
        *q++ = c;
    }
    *q = 0;
    return o;
}

tm_status tmx_compile_pattern(tm_tokenizer *t, const char *where)
{
    if (t->re) pcre2_code_free(t->re);
    t->re = NULL;
    t->jit = 0;
    if (!t->pattern) return TM_OK;
    char *pat = rewrite_ws(t->pattern);
    if (!pat) return tm_fail(TM_ERR_NOMEM, "%s: out of memory compiling the regex", where);
    int err;
    PCRE2_SIZE off;
    t->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off,
                          NULL);
    free(pat);
    if (!t->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return tm_fail(TM_ERR_FORMAT, "%s: the pre-tokenizer regex does not compile: %s", where,
                       (const char *)msg);
    }
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    return TM_OK;
}

typedef struct {
    const tm_tokenizer *t;
    pcre2_match_data *md;
    tmx_word_fn fn;
    void *ctx;
    uint8_t *buf; /* normalised text */
    size_t cap;
} pretok_state;

/* Lowercases and/or collapses white space of a valid stretch into st->buf. */
static tm_status normalise(pretok_state *st, const uint8_t *s, size_t n, size_t *out_n)
{
    size_t need = n * 2 + 8;
    if (need > st->cap) {
        uint8_t *b = realloc(st->buf, need);
        if (!b) return tm_fail(TM_ERR_NOMEM, "out of memory normalising text");
        st->buf = b;
        st->cap = need;
    }
    size_t k = 0;
    int in_ws = 0;
    for (size_t i = 0; i < n;) {
        int l = tmx_utf8_len(s + i, n - i);
        uint32_t c = tmx_utf8_get(s + i, l);
        i += (size_t)l;
        if (st->t->collapse_ws && is_white_space(c)) {
            if (!in_ws) st->buf[k++] = ' ';
            in_ws = 1;
            continue;
        }
        in_ws = 0;
        if (st->t->lowercase) k += (size_t)tmx_lower_utf8(c, st->buf + k);
        else k += (size_t)tmx_utf8_put(c, st->buf + k);
    }
    *out_n = k;
    return TM_OK;
}

static tm_status split_valid(pretok_state *st, const uint8_t *s, size_t n)
{
    const tm_tokenizer *t = st->t;
    tm_status rc;
    if (t->lowercase || t->collapse_ws) {
        if ((rc = normalise(st, s, n, &n))) return rc;
        s = st->buf;
    }
    if (!t->re) return n ? st->fn(st->ctx, s, n) : TM_OK;
    size_t pos = 0, gap = 0;
    while (pos < n) {
        int m = t->jit ? pcre2_jit_match(t->re, s, n, pos, PCRE2_NO_UTF_CHECK, st->md, NULL)
                       : pcre2_match(t->re, s, n, pos, PCRE2_NO_UTF_CHECK, st->md, NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            /* A resource limit inside the engine: the rest is one word, so
             * the text is still covered exactly once. */
            pos = n;
            if (!t->keep_gaps && gap < n && (rc = st->fn(st->ctx, s + gap, n - gap))) return rc;
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
        size_t a = ov[0], b = ov[1];
        if (b <= a) { /* an empty match: step over one character */
            pos = a < n ? a + (size_t)tmx_utf8_len(s + a, n - a) : n;
            continue;
        }
        if (t->keep_gaps && a > gap && (rc = st->fn(st->ctx, s + gap, a - gap))) return rc;
        if ((rc = st->fn(st->ctx, s + a, b - a))) return rc;
        pos = gap = b;
    }
    if (t->keep_gaps && gap < n && (rc = st->fn(st->ctx, s + gap, n - gap))) return rc;
    return TM_OK;
}

tm_status tmx_pretokenize(const tm_tokenizer *t, pcre2_match_data *md, const uint8_t *text,
                          size_t n, tmx_word_fn fn, void *ctx)
{
    pretok_state st = {t, md, fn, ctx, NULL, 0};
    uint8_t *prefixed = NULL;
    tm_status rc = TM_OK;
    if (n == 0) return TM_OK;
    if (t->add_prefix_space && text[0] != ' ') {
        prefixed = malloc(n + 1);
        if (!prefixed) return tm_fail(TM_ERR_NOMEM, "out of memory pre-tokenising");
        prefixed[0] = ' ';
        memcpy(prefixed + 1, text, n);
        text = prefixed;
        n++;
    }
    for (size_t i = 0; i < n && !rc;) {
        size_t v = tmx_utf8_valid_prefix(text + i, n - i);
        if (v) {
            rc = split_valid(&st, text + i, v);
            i += v;
        }
        if (i < n && !rc) {
            size_t j = i + 1;
            while (j < n && !tmx_utf8_len(text + j, n - j)) j++;
            rc = fn(ctx, text + i, j - i);
            i = j;
        }
    }
    free(st.buf);
    free(prefixed);
    return rc;
}
