/* Small pieces the tokenizer files share: a byte pool, int vectors, a
 * hash, UTF-8 decoding and validation, GPT-2's byte <-> character table,
 * Unicode lowercase and reading a file with a size cap. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/bpe_internal.h"

#include "text/unicode_lower.h"

size_t tmx_pool_add(tmx_pool *p, const void *s, size_t n)
{
    if (n + 1 > p->cap - p->len || !p->data) {
        size_t need;
        if (!tm_add_size(p->len, n + 1, &need)) return SIZE_MAX;
        size_t cap = p->cap ? p->cap : 256;
        while (cap < need) {
            if (cap > SIZE_MAX / 2) return SIZE_MAX;
            cap *= 2;
        }
        char *d = realloc(p->data, cap);
        if (!d) return SIZE_MAX;
        p->data = d;
        p->cap = cap;
    }
    size_t off = p->len;
    if (n) memcpy(p->data + off, s, n);
    p->data[off + n] = 0;
    p->len += n;
    return off;
}

void tmx_pool_free(tmx_pool *p)
{
    free(p->data);
    memset(p, 0, sizeof *p);
}

int tmx_ivec_reserve(tmx_ivec *v, size_t n)
{
    if (n <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 16;
    while (cap < n) {
        if (cap > SIZE_MAX / 8) return -1;
        cap *= 2;
    }
    int32_t *p = realloc(v->v, cap * sizeof *p);
    if (!p) return -1;
    v->v = p;
    v->cap = cap;
    return 0;
}

int tmx_ivec_push(tmx_ivec *v, int32_t x)
{
    if (v->n == v->cap && tmx_ivec_reserve(v, v->n + 1)) return -1;
    v->v[v->n++] = x;
    return 0;
}

void tmx_ivec_free(tmx_ivec *v)
{
    free(v->v);
    memset(v, 0, sizeof *v);
}

/* Eight bytes at a time, each word mixed by a multiply and a rotate; the
 * tail is read with memcpy so nothing past n is touched. */
uint64_t tmx_hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)n * 0xD6E8FEB86659FD93ULL);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ (v * 0xA0761D6478BD642FULL)) * 0xE7037ED1A0B428DBULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = 0;
        memcpy(&v, s, n);
        h = (h ^ (v * 0xA0761D6478BD642FULL)) * 0xE7037ED1A0B428DBULL;
    }
    return tmx_hash_u64(h);
}

int tmx_utf8_len(const uint8_t *s, size_t n)
{
    uint8_t b = s[0];
    if (b < 0x80) return 1;
    if (b < 0xC2) return 0;
    if (b < 0xE0) return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (b < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (b == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
        if (b == 0xED && s[1] > 0x9F) return 0; /* surrogate */
        return 3;
    }
    if (b > 0xF4 || n < 4) return 0;
    if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
    if (b == 0xF0 && s[1] < 0x90) return 0; /* overlong */
    if (b == 0xF4 && s[1] > 0x8F) return 0; /* past U+10FFFF */
    return 4;
}

size_t tmx_utf8_valid_prefix(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII eight bytes at a time */
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, s + i, 8);
            if (v & 0x8080808080808080ULL) break;
            i += 8;
        }
        if (i >= n) break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int l = tmx_utf8_len(s + i, n - i);
        if (!l) break;
        i += (size_t)l;
    }
    return i;
}

int tmx_utf8_put(uint32_t cp, uint8_t *o)
{
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 63));
        o[2] = (uint8_t)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 63));
    o[3] = (uint8_t)(0x80 | (cp & 63));
    return 4;
}

uint32_t tmx_utf8_get(const uint8_t *s, int len)
{
    switch (len) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

/* GPT-2 keeps '!'..'~', 0xA1..0xAC and 0xAE..0xFF as themselves and gives
 * the other 68 bytes the code points 256, 257, ... in byte order: 0x00..0x20
 * become 256..288, 0x7F..0xA0 become 289..322 and 0xAD becomes 323. */
uint32_t tmx_byte_char(uint8_t b)
{
    if (b <= 0x20) return 256u + b;
    if (b >= 0x7F && b <= 0xA0) return b + 162u;
    if (b == 0xAD) return 323;
    return b;
}

int tmx_char_byte(uint32_t cp)
{
    if (cp < 256) return tmx_byte_char((uint8_t)cp) == cp ? (int)cp : -1;
    if (cp <= 288) return (int)(cp - 256);
    if (cp <= 322) return (int)(cp - 162);
    if (cp == 323) return 0xAD;
    return -1;
}

size_t tmx_bytes_to_chars(const uint8_t *bytes, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = bytes[i];
        if (b > 0x20 && b < 0x7F) {
            out[k++] = (char)b;
            continue;
        }
        uint32_t cp = tmx_byte_char(b); /* 0x80..0x143: two UTF-8 bytes */
        out[k++] = (char)(0xC0 | (cp >> 6));
        out[k++] = (char)(0x80 | (cp & 63));
    }
    return k;
}

/* Binary search in the generated ranges; ASCII first since it is most of
 * the text. */
int tmx_lower_utf8(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
        return 1;
    }
    if (cp == 0x130) { /* capital I with dot above: "i" + combining dot above */
        out[0] = 'i';
        out[1] = 0xCC;
        out[2] = 0x87;
        return 3;
    }
    size_t lo = 0, hi = sizeof tm_lower_ranges / sizeof tm_lower_ranges[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < tm_lower_ranges[mid].first) hi = mid;
        else if (cp > tm_lower_ranges[mid].last) lo = mid + 1;
        else {
            if ((cp - tm_lower_ranges[mid].first) % tm_lower_ranges[mid].stride == 0)
                cp = (uint32_t)((int32_t)cp + tm_lower_ranges[mid].delta);
            break;
        }
    }
    return tmx_utf8_put(cp, out);
}

char *tmx_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}
