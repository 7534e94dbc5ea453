/* The growing string buffer of the SVG and HTML writers, with XML
 * escaping, base64 and checked number formats. */
#include <stdio.h>
#include <string.h>

#include "eval_internal.h"

static int reserve(tme_buf *b, size_t extra)
{
    if (b->failed) return 0;
    size_t need;
    if (!tm_add_size(b->len, extra, &need) || !tm_add_size(need, 1, &need)) {
        b->failed = 1;
        return 0;
    }
    if (need <= b->cap) return 1;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need) {
        if (!tm_mul_size(cap, 2, &cap)) {
            b->failed = 1;
            return 0;
        }
    }
    char *p = tm_alloc(cap);
    if (!p) {
        b->failed = 1;
        return 0;
    }
    if (b->len) memcpy(p, b->data, b->len);
    tm_free(b->data);
    b->data = p;
    b->cap = cap;
    return 1;
}

void tme_buf_put(tme_buf *b, const char *s, size_t n)
{
    if (!reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void tme_buf_puts(tme_buf *b, const char *s)
{
    if (s) tme_buf_put(b, s, strlen(s));
}

void tme_buf_printf(tme_buf *b, const char *fmt, ...)
{
    if (b->failed) return;
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        tme_buf_put(b, small, (size_t)n);
        return;
    }
    if (!reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (1..4), 0 if invalid. */
static int utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0; /* surrogates */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;
        if (c == 0xF4 && s[1] >= 0x90) return 0;
        return 4;
    }
    return 0;
}

void tme_buf_escape(tme_buf *b, const char *s)
{
    if (!s) return;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        switch (c) {
        case '&': tme_buf_puts(b, "&amp;"); p++; continue;
        case '<': tme_buf_puts(b, "&lt;"); p++; continue;
        case '>': tme_buf_puts(b, "&gt;"); p++; continue;
        case '"': tme_buf_puts(b, "&quot;"); p++; continue;
        case '\'': tme_buf_puts(b, "&#39;"); p++; continue;
        default: break;
        }
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            tme_buf_puts(b, "\xEF\xBF\xBD");
            p++;
            continue;
        }
        /* utf8_len reads at most up to the first NUL: a NUL is not a
         * continuation byte, so the checks stop there */
        int n = utf8_len(p);
        if (!n) {
            tme_buf_puts(b, "\xEF\xBF\xBD");
            p++;
            continue;
        }
        tme_buf_put(b, (const char *)p, (size_t)n);
        p += n;
    }
}

void tme_buf_base64(tme_buf *b, const void *data, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t out;
    if (!tm_add_size(n, 2, &out) || !tm_mul_size(out / 3, 4, &out) || !reserve(b, out)) {
        b->failed = 1;
        return;
    }
    const unsigned char *s = data;
    char *d = b->data + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        *d++ = tab[v >> 18];
        *d++ = tab[(v >> 12) & 63];
        *d++ = tab[(v >> 6) & 63];
        *d++ = tab[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        *d++ = tab[v >> 18];
        *d++ = tab[(v >> 12) & 63];
        *d++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *d++ = '=';
    }
    b->len = (size_t)(d - b->data);
    b->data[b->len] = 0;
}

int tme_check_format(const char *fmt)
{
    if (!fmt) return 0;
    int conversions = 0;
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') continue;
        p++;
        if (*p == '%') continue;
        while (*p && strchr("-+ #0", *p)) p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (++digits > 2) return 0;
            p++;
        }
        if (*p == '.') {
            p++;
            digits = 0;
            while (*p >= '0' && *p <= '9') {
                if (++digits > 2) return 0;
                p++;
            }
        }
        if (!*p || !strchr("feEgGF", *p)) return 0;
        conversions++;
    }
    return conversions == 1;
}

void tme_buf_number(tme_buf *b, const char *fmt, double v)
{
    if (b->failed) return;
    int n = snprintf(NULL, 0, fmt, v);
    if (n < 0 || !reserve(b, (size_t)n)) {
        b->failed = 1;
        return;
    }
    snprintf(b->data + b->len, (size_t)n + 1, fmt, v);
    b->len += (size_t)n;
}

char *tme_buf_take(tme_buf *b)
{
    if (b->failed) return NULL;
    if (!b->data && !reserve(b, 0)) return NULL;
    b->data[b->len] = 0;
    char *s = b->data;
    memset(b, 0, sizeof *b);
    return s;
}

void tme_buf_free(tme_buf *b)
{
    tm_free(b->data);
    memset(b, 0, sizeof *b);
}
