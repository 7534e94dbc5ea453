/* The serve layer's small helpers: a growable buffer with JSON writers,
 * base64 decoding (libsodium) and the multipart/form-data parser. Every
 * parser here takes untrusted bytes and never reads outside them. */
#define _GNU_SOURCE
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "serve/serve_internal.h"

/* ------------------------------------------------------------ buffers */

static int sb_reserve(sbuf *b, size_t extra)
{
    if (b->failed) return 0;
    size_t need;
    if (!tm_add_size(b->len, extra, &need) || !tm_add_size(need, 1, &need)) {
        b->failed = 1;
        return 0;
    }
    if (need <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > ((size_t)-1) / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return 0;
    }
    b->data = p;
    b->cap = cap;
    return 1;
}

void sb_put(sbuf *b, const void *p, size_t n)
{
    if (!sb_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    if (!sb_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t k;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF)
        k = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        k = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        k = 4, min = 0x10000;
    else
        return 0;
    if (n < k) return 0;
    unsigned v = c & (0x7F >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    return k;
}

void sb_json_str(sbuf *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    sb_put(b, "\"", 1);
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t k = utf8_len(p + i, n - i);
        if (k && c >= 0x20 && c != '"' && c != '\\') {
            i += k;
            run += k;
            continue;
        }
        sb_put(b, p + i - run, run);
        run = 0;
        if (!k)
            sb_puts(b, "\\ufffd");
        else if (c == '"')
            sb_puts(b, "\\\"");
        else if (c == '\\')
            sb_puts(b, "\\\\");
        else if (c == '\n')
            sb_puts(b, "\\n");
        else if (c == '\t')
            sb_puts(b, "\\t");
        else if (c == '\r')
            sb_puts(b, "\\r");
        else
            sb_printf(b, "\\u%04x", c);
        i++;
    }
    sb_put(b, p + i - run, run);
    sb_put(b, "\"", 1);
}

void sb_json_float(sbuf *b, double v)
{
    if (!isfinite(v))
        sb_puts(b, "null");
    else
        sb_printf(b, "%.9g", v);
}

void sb_free(sbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ------------------------------------------------------------- base64 */

tm_status b64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (n >= 5 && !strncmp(s, "data:", 5)) {
        size_t lim = n < 512 ? n : 512;
        const char *comma = memchr(s, ',', lim);
        if (!comma || comma - s < 12 || strncmp(comma - 7, ";base64", 7))
            return tm_fail(TM_ERR_FORMAT, "a data: URL must carry base64 (data:TYPE;base64,...)");
        n -= (size_t)(comma + 1 - s);
        s = comma + 1;
    }
    size_t max = n / 4 * 3 + 3;
    unsigned char *buf = malloc(max ? max : 1);
    if (!buf) return tm_fail(TM_ERR_NOMEM, "out of memory decoding base64");
    static const int variants[2] = {sodium_base64_VARIANT_ORIGINAL,
                                    sodium_base64_VARIANT_ORIGINAL_NO_PADDING};
    for (int v = 0; v < 2; v++) {
        size_t len = 0;
        const char *end = NULL;
        if (sodium_base642bin(buf, max, s, n, " \t\r\n", &len, &end, variants[v]) == 0 &&
            end == s + n) {
            if (!len) break;
            *out = buf;
            *out_len = len;
            return TM_OK;
        }
    }
    free(buf);
    /* say where it goes wrong, for people fixing their client */
    size_t bad = 0;
    while (bad < n && (isalnum((unsigned char)s[bad]) || s[bad] == '+' || s[bad] == '/' ||
                       s[bad] == '=' || isspace((unsigned char)s[bad])))
        bad++;
    if (!n) return tm_fail(TM_ERR_FORMAT, "the base64 string is empty");
    if (bad < n)
        return tm_fail(TM_ERR_FORMAT,
                       "not base64: byte %zu is 0x%02x (standard base64 uses A-Z a-z 0-9 + / =)",
                       bad, (unsigned char)s[bad]);
    return tm_fail(TM_ERR_FORMAT,
                   "not valid base64 (%zu characters): check its length and '=' padding", n);
}

/* ---------------------------------------------------------- multipart */

static int ci_prefix(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    if (n < k) return 0;
    for (size_t i = 0; i < k; i++)
        if (tolower((unsigned char)s[i]) != prefix[i]) return 0;
    return 1;
}

int mp_boundary(const char *ct, char *out, size_t out_size)
{
    if (!ct || !ci_prefix(ct, strlen(ct), "multipart/form-data")) return 0;
    const char *p = ct + strlen("multipart/form-data");
    while (*p) {
        while (*p == ';' || *p == ' ' || *p == '\t')
            p++;
        if (ci_prefix(p, strlen(p), "boundary=")) {
            p += 9;
            const char *v = p, *e;
            if (*v == '"') {
                v++;
                e = strchr(v, '"');
                if (!e) return 0;
            } else {
                e = v;
                while (*e && *e != ';' && *e != ' ' && *e != '\t')
                    e++;
            }
            size_t n = (size_t)(e - v);
            if (n < 1 || n > 70 || n + 1 > out_size) return 0;
            memcpy(out, v, n);
            out[n] = 0;
            return 1;
        }
        while (*p && *p != ';')
            p++;
    }
    return 0;
}

/* Finds param="value" (or param=value) in a header value of n bytes. */
static int header_param(const char *h, size_t n, const char *param, const char **v, size_t *vn)
{
    size_t pl = strlen(param);
    for (size_t i = 0; i + pl + 1 <= n; i++) {
        if ((i == 0 || h[i - 1] == ';' || h[i - 1] == ' ' || h[i - 1] == '\t') &&
            ci_prefix(h + i, n - i, param) && h[i + pl] == '=') {
            size_t j = i + pl + 1;
            if (j < n && h[j] == '"') {
                j++;
                size_t k = j;
                while (k < n && h[k] != '"')
                    k++;
                if (k >= n) return 0;
                *v = h + j;
                *vn = k - j;
            } else {
                size_t k = j;
                while (k < n && h[k] != ';' && h[k] != ' ' && h[k] != '\t')
                    k++;
                *v = h + j;
                *vn = k - j;
            }
            return 1;
        }
    }
    return 0;
}

/* The next CRLF--boundary at or after `from` that really is a delimiter:
 * followed by "--" or by optional blanks and a CRLF (one followed by other
 * bytes is data, like "--BOUNDARYfoo"). NULL when none. */
static const char *next_delim(const char *body, size_t len, size_t from, const char *delim,
                              size_t dl)
{
    char d2[84] = "\r\n";
    memcpy(d2 + 2, delim, dl);
    while (from <= len) {
        const char *f = memmem(body + from, len - from, d2, dl + 2);
        if (!f) return NULL;
        size_t at = (size_t)(f - body) + dl + 2;
        if (at + 2 <= len && body[at] == '-' && body[at + 1] == '-') return f;
        while (at < len && (body[at] == ' ' || body[at] == '\t'))
            at++;
        if (at + 2 <= len && body[at] == '\r' && body[at + 1] == '\n') return f;
        if (at >= len || (at + 1 == len && body[at] == '\r') || (at + 1 == len && body[at] == '-'))
            return NULL; /* cut short right after a delimiter */
        from = (size_t)(f - body) + 1;
    }
    return NULL;
}

tm_status mp_parse(const char *body, size_t len, const char *boundary, mp_part *parts, int max,
                   int *n)
{
    *n = 0;
    char delim[80];
    size_t bl = strlen(boundary);
    if (bl < 1 || bl > 70) return tm_fail(TM_ERR_FORMAT, "multipart: bad boundary");
    delim[0] = delim[1] = '-';
    memcpy(delim + 2, boundary, bl);
    size_t dl = bl + 2;
    /* the first delimiter: at the start or after a CRLF (a preamble) */
    size_t pos;
    if (len >= dl && !memcmp(body, delim, dl)) {
        pos = dl;
    } else {
        char d2[84] = "\r\n";
        memcpy(d2 + 2, delim, dl);
        const char *f = memmem(body, len, d2, dl + 2);
        if (!f)
            return tm_fail(TM_ERR_FORMAT,
                           "multipart: the body never has the boundary that Content-Type names");
        pos = (size_t)(f - body) + dl + 2;
    }
    for (;;) {
        if (pos + 2 <= len && body[pos] == '-' && body[pos + 1] == '-') return TM_OK;
        while (pos < len && (body[pos] == ' ' || body[pos] == '\t'))
            pos++;
        if (pos + 2 > len || body[pos] != '\r' || body[pos + 1] != '\n')
            return tm_fail(TM_ERR_FORMAT, "multipart: the body ends before its closing "
                                          "boundary (--BOUNDARY--)");
        pos += 2;
        size_t hstart = pos, hend, dstart;
        if (pos + 2 <= len && body[pos] == '\r' && body[pos + 1] == '\n') {
            hend = pos;
            dstart = pos + 2;
        } else {
            const char *f = memmem(body + pos, len - pos, "\r\n\r\n", 4);
            if (!f) return tm_fail(TM_ERR_FORMAT, "multipart: a part's headers are cut short");
            hend = (size_t)(f - body);
            dstart = hend + 4;
        }
        mp_part p = {0};
        for (size_t ls = hstart; ls < hend;) {
            const char *le = memmem(body + ls, hend - ls, "\r\n", 2);
            size_t lend = le ? (size_t)(le - body) : hend;
            if (ci_prefix(body + ls, lend - ls, "content-disposition:")) {
                const char *h = body + ls + 20;
                size_t hn = lend - ls - 20;
                header_param(h, hn, "name", &p.name, &p.name_len);
                header_param(h, hn, "filename", &p.filename, &p.filename_len);
            }
            ls = lend + 2;
        }
        const char *f = next_delim(body, len, dstart, delim, dl);
        if (!f)
            return tm_fail(TM_ERR_FORMAT, "multipart: the body ends before its closing "
                                          "boundary (--BOUNDARY--)");
        if (!p.name || !p.name_len)
            return tm_fail(TM_ERR_FORMAT, "multipart: part %d has no Content-Disposition name",
                           *n + 1);
        if (*n >= max) return tm_fail(TM_ERR_FORMAT, "multipart: more than %d parts", max);
        p.data = body + dstart;
        p.len = (size_t)(f - body) - dstart;
        parts[(*n)++] = p;
        pos = (size_t)(f - body) + dl + 2;
    }
}
