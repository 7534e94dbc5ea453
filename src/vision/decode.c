/*
 * Image decoding: PNG, JPEG, BMP and GIF through stb_image (Debian's
 * libstb), binary PGM/PPM with our own reader.
 *
 * Why the checks before stb: stb trusts its input more than we can.
 *  - It picks a decoder by trying each in turn, and some (TGA) have no
 *    magic number, so we recognise the format ourselves from the first
 *    bytes and refuse anything that is not one of ours.
 *  - Its readers return zero bytes past the end of the buffer instead of
 *    failing, so a truncated JPEG, BMP or GIF "decodes" into a half-black
 *    picture. We walk each of those formats' structure first (JPEG
 *    markers up to the end-of-image marker, GIF blocks up to the end of
 *    the first frame, BMP's pixel array size) and call a short file what
 *    it is.
 *  - Its PNM reader ignores a short raster (leaving memory uninitialised),
 *    overflows on long numbers and rejects comments, so PNM is ours.
 *  - Dimensions come from stbi_info_from_memory (a header-only parse) and
 *    are checked against the limits before stb allocates anything.
 * stb's last-failure reason is thread-local in Debian's build, and we
 * reset its thread-local vertical-flip flag before each load, so another
 * user of libstb flipping images globally cannot affect us.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include "trimodal/io.h"
#include "vision_internal.h"

#define MEMORY_NAME "<memory>"
/* stb_image's STBI_MAX_DIMENSIONS: it refuses longer sides. */
#define STB_MAX_SIDE (1 << 24)

tm_image_limits tm_image_default_limits(void)
{
    tm_image_limits l = {TM_IMAGE_DEFAULT_MAX_PIXELS, TM_IMAGE_DEFAULT_MAX_BYTES};
    return l;
}

tm_image_decode_params tm_image_decode_default_params(void)
{
    tm_image_decode_params p;
    memset(&p, 0, sizeof p);
    p.limits = tm_image_default_limits();
    p.channels = 3;
    p.alpha = TM_ALPHA_DROP;
    p.background[0] = p.background[1] = p.background[2] = 255;
    return p;
}

const char *tm_image_format_name(tm_image_format f)
{
    switch (f) {
    case TM_IMAGE_FORMAT_PNG: return "png";
    case TM_IMAGE_FORMAT_JPEG: return "jpeg";
    case TM_IMAGE_FORMAT_BMP: return "bmp";
    case TM_IMAGE_FORMAT_GIF: return "gif";
    case TM_IMAGE_FORMAT_PNM: return "pnm";
    default: return "unknown";
    }
}

static const char *upper_name(tm_image_format f)
{
    switch (f) {
    case TM_IMAGE_FORMAT_PNG: return "PNG";
    case TM_IMAGE_FORMAT_JPEG: return "JPEG";
    case TM_IMAGE_FORMAT_BMP: return "BMP";
    case TM_IMAGE_FORMAT_GIF: return "GIF";
    case TM_IMAGE_FORMAT_PNM: return "PNM";
    default: return "image";
    }
}

/* ------------------------------------------------------------ tm_image */

tm_status tm_image_new(tm_image **out, int width, int height, int channels)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_image_new: out is NULL");
    *out = NULL;
    if (width <= 0 || height <= 0 || channels < 1 || channels > 4)
        return tm_fail(TM_ERR_INVALID, "tm_image_new: bad size %d x %d x %d", width, height,
                       channels);
    size_t n;
    if (!tm_mul_size((size_t)width, (size_t)height, &n) || !tm_mul_size(n, (size_t)channels, &n))
        return tm_fail(TM_ERR_NOMEM, "tm_image_new: %d x %d x %d overflows", width, height,
                       channels);
    tm_image *img = tm_calloc(1, sizeof *img);
    uint8_t *data = tm_calloc(n, 1);
    if (!img || !data) {
        tm_free(img);
        tm_free(data);
        return tm_fail(TM_ERR_NOMEM, "tm_image_new: out of memory for %zu bytes", n);
    }
    img->width = width;
    img->height = height;
    img->channels = channels;
    img->data = data;
    img->format = TM_IMAGE_FORMAT_UNKNOWN;
    img->file_channels = channels;
    *out = img;
    return TM_OK;
}

void tm_image_free(tm_image *img)
{
    if (!img) return;
    tm_free(img->data);
    tm_free(img);
}

/* Converts n pixels of src_c (1..4) channels to dst_c (1 or 3) channels:
 * alpha dropped or composited over bg, then gray <-> RGB. */
static void convert_pixels(uint8_t *dst, int dst_c, const uint8_t *src, int src_c, size_t n,
                           tm_alpha_mode alpha, const uint8_t bg[3])
{
    static const uint8_t white[3] = {255, 255, 255};
    if (!bg) bg = white;
    int has_alpha = src_c == 2 || src_c == 4;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *s = src + i * (size_t)src_c;
        unsigned r, g, b, a = 255;
        if (src_c <= 2) {
            r = g = b = s[0];
            if (has_alpha) a = s[1];
        } else {
            r = s[0], g = s[1], b = s[2];
            if (has_alpha) a = s[3];
        }
        if (has_alpha && alpha == TM_ALPHA_COMPOSITE) {
            r = (r * a + bg[0] * (255u - a) + 127u) / 255u;
            g = (g * a + bg[1] * (255u - a) + 127u) / 255u;
            b = (b * a + bg[2] * (255u - a) + 127u) / 255u;
        }
        uint8_t *d = dst + i * (size_t)dst_c;
        if (dst_c == 1) {
            d[0] = tmv_luma_u8(r, g, b);
        } else {
            d[0] = (uint8_t)r, d[1] = (uint8_t)g, d[2] = (uint8_t)b;
        }
    }
}

tm_status tm_image_convert(tm_image **out, const tm_image *in, int channels)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_image_convert: out is NULL");
    *out = NULL;
    if (!in || !in->data) return tm_fail(TM_ERR_INVALID, "tm_image_convert: no image");
    if (channels != 1 && channels != 3)
        return tm_fail(TM_ERR_INVALID, "tm_image_convert: channels must be 1 or 3, not %d",
                       channels);
    if (in->channels < 1 || in->channels > 4)
        return tm_fail(TM_ERR_INVALID, "tm_image_convert: the image has %d channels", in->channels);
    tm_status s = tm_image_new(out, in->width, in->height, channels);
    if (s) return s;
    convert_pixels((*out)->data, channels, in->data, in->channels,
                   (size_t)in->width * (size_t)in->height, TM_ALPHA_DROP, NULL);
    (*out)->format = in->format;
    (*out)->file_channels = in->file_channels;
    return TM_OK;
}

/* ------------------------------------------------------ recognition */

static int starts(const uint8_t *d, size_t n, const char *magic, size_t m)
{
    return n >= m && memcmp(d, magic, m) == 0;
}

/* The format whose magic number starts with all n (>= 1) bytes of a
 * buffer too short to hold the whole magic number. */
static tm_image_format partial_magic(const uint8_t *d, size_t n)
{
    static const struct {
        const char *magic;
        size_t len;
        tm_image_format f;
    } m[] = {{"\x89PNG\r\n\x1a\n", 8, TM_IMAGE_FORMAT_PNG},
             {"\xff\xd8\xff", 3, TM_IMAGE_FORMAT_JPEG},
             {"GIF87a", 6, TM_IMAGE_FORMAT_GIF},
             {"GIF89a", 6, TM_IMAGE_FORMAT_GIF},
             {"BM", 2, TM_IMAGE_FORMAT_BMP},
             {"P5", 2, TM_IMAGE_FORMAT_PNM},
             {"P6", 2, TM_IMAGE_FORMAT_PNM}};
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        if (n < m[i].len && memcmp(d, m[i].magic, n) == 0) return m[i].f;
    return TM_IMAGE_FORMAT_UNKNOWN;
}

/* Our format, or UNKNOWN with *other naming a recognised foreign one. */
static tm_image_format sniff(const uint8_t *d, size_t n, const char **other)
{
    *other = NULL;
    if (starts(d, n, "\x89PNG\r\n\x1a\n", 8)) return TM_IMAGE_FORMAT_PNG;
    if (starts(d, n, "\xff\xd8\xff", 3)) return TM_IMAGE_FORMAT_JPEG;
    if (starts(d, n, "GIF87a", 6) || starts(d, n, "GIF89a", 6)) return TM_IMAGE_FORMAT_GIF;
    if (starts(d, n, "BM", 2)) return TM_IMAGE_FORMAT_BMP;
    if (n >= 2 && d[0] == 'P' && (d[1] == '5' || d[1] == '6')) return TM_IMAGE_FORMAT_PNM;
    if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '4')
        *other = "ASCII or 1-bit PNM (P1-P4; only binary P5/P6 are supported)";
    else if (n >= 2 && d[0] == 'P' && d[1] == '7')
        *other = "PAM (P7)";
    else if (starts(d, n, "II*\0", 4) || starts(d, n, "MM\0*", 4))
        *other = "TIFF";
    else if (n >= 12 && starts(d, n, "RIFF", 4) && memcmp(d + 8, "WEBP", 4) == 0)
        *other = "WebP";
    else if (n >= 12 && memcmp(d + 4, "ftyp", 4) == 0)
        *other = "HEIF/AVIF";
    else if (starts(d, n, "8BPS", 4))
        *other = "PSD";
    else if (starts(d, n, "#?RADIANCE", 10) || starts(d, n, "#?RGBE", 6))
        *other = "Radiance HDR";
    else if (starts(d, n, "\x1f\x8b", 2))
        *other = "gzip-compressed data";
    else if (n >= 4 && d[0] == 0 && d[1] == 0 && d[2] == 0x08 && (d[3] == 1 || d[3] == 3))
        *other = "IDX (use tm_idx_open)";
    else if (starts(d, n, "\xff\x0a", 2) || starts(d, n, "\0\0\0\x0cjXL ", 8))
        *other = "JPEG XL";
    else if (starts(d, n, "\0\0\0\x0cjP  ", 8))
        *other = "JPEG 2000";
    return TM_IMAGE_FORMAT_UNKNOWN;
}

/* -------------------------------------------------------------- PNM */

typedef struct {
    uint64_t width, height, maxval;
    int channels;
    size_t offset; /* of the raster */
} pnm_header;

static int pnm_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Skips whitespace and # comments (to the end of the line); returns 0
 * when no whitespace at all was there (the format needs some). */
static int pnm_skip(const uint8_t *d, size_t n, size_t *pos)
{
    size_t p = *pos, start = p;
    for (;;) {
        while (p < n && pnm_space(d[p]))
            p++;
        if (p < n && d[p] == '#') {
            while (p < n && d[p] != '\n' && d[p] != '\r')
                p++;
            continue;
        }
        break;
    }
    *pos = p;
    return p > start;
}

/* A decimal number, saturating at 2^32 (big enough to fail every check). */
static int pnm_number(const uint8_t *d, size_t n, size_t *pos, uint64_t *v)
{
    size_t p = *pos;
    uint64_t x = 0;
    if (p >= n || d[p] < '0' || d[p] > '9') return 0;
    while (p < n && d[p] >= '0' && d[p] <= '9') {
        x = x * 10 + (uint64_t)(d[p] - '0');
        if (x > ((uint64_t)1 << 32)) x = (uint64_t)1 << 32;
        p++;
    }
    *pos = p;
    *v = x;
    return 1;
}

static tm_status pnm_parse(pnm_header *h, const uint8_t *d, size_t n, const char *name)
{
    memset(h, 0, sizeof *h);
    h->channels = d[1] == '6' ? 3 : 1;
    size_t p = 2;
    uint64_t *fields[3] = {&h->width, &h->height, &h->maxval};
    static const char *what[3] = {"width", "height", "maximum value"};
    for (int i = 0; i < 3; i++) {
        int sp = pnm_skip(d, n, &p);
        if (p >= n) return tm_fail(TM_ERR_FORMAT, "%s: truncated PNM header", name);
        if (!sp || !pnm_number(d, n, &p, fields[i]))
            return tm_fail(TM_ERR_FORMAT, "%s: corrupt PNM header: bad %s", name, what[i]);
    }
    /* exactly one whitespace byte separates the header from the raster */
    if (p >= n) return tm_fail(TM_ERR_FORMAT, "%s: truncated PNM header", name);
    if (!pnm_space(d[p]))
        return tm_fail(TM_ERR_FORMAT, "%s: corrupt PNM header after the maximum value", name);
    p++;
    if (h->width == 0 || h->height == 0)
        return tm_fail(TM_ERR_FORMAT, "%s: PNM with zero width or height (%llu x %llu)", name,
                       (unsigned long long)h->width, (unsigned long long)h->height);
    if (h->maxval == 0 || h->maxval > 65535)
        return tm_fail(TM_ERR_FORMAT, "%s: PNM maximum value %llu is not in 1..65535", name,
                       (unsigned long long)h->maxval);
    h->offset = p;
    return TM_OK;
}

/* Raster bytes (overflow-checked); 0 on overflow. */
static size_t pnm_raster_bytes(const pnm_header *h)
{
    size_t n;
    size_t bps = h->maxval > 255 ? 2 : 1;
    if (h->width > SIZE_MAX || h->height > SIZE_MAX) return 0;
    if (!tm_mul_size((size_t)h->width, (size_t)h->height, &n) ||
        !tm_mul_size(n, (size_t)h->channels * bps, &n))
        return 0;
    return n;
}

static tm_status pnm_check(const pnm_header *h, size_t n, const char *name)
{
    size_t need = pnm_raster_bytes(h);
    size_t have = n - h->offset;
    if (need == 0) return tm_fail(TM_ERR_LIMIT, "%s: PNM raster size overflows", name);
    if (need > have)
        return tm_fail(TM_ERR_FORMAT,
                       "%s: truncated PNM: the header promises %zu bytes of pixels, %zu are there",
                       name, need, have);
    return TM_OK;
}

/* Samples scaled to 0..255; pnm_check() passed. Extra bytes after the
 * raster (a second image) are ignored. */
static void pnm_decode(uint8_t *dst, const pnm_header *h, const uint8_t *d)
{
    const uint8_t *s = d + h->offset;
    size_t count = (size_t)h->width * (size_t)h->height * (size_t)h->channels;
    uint32_t maxv = (uint32_t)h->maxval;
    if (maxv == 255) {
        memcpy(dst, s, count);
    } else if (maxv < 256) {
        for (size_t i = 0; i < count; i++) {
            uint32_t v = s[i] > maxv ? maxv : s[i];
            dst[i] = (uint8_t)((v * 255u + maxv / 2) / maxv);
        }
    } else {
        for (size_t i = 0; i < count; i++) {
            uint32_t v = (uint32_t)s[2 * i] << 8 | s[2 * i + 1];
            if (v > maxv) v = maxv;
            dst[i] = (uint8_t)((v * 255u + maxv / 2) / maxv);
        }
    }
}

/* ------------------------------------------------ structure checks */

/* JPEG: walks the markers from SOI to EOI, skipping each segment by its
 * length and each scan's entropy-coded data up to the next marker; notes
 * the first frame header's size and whether EOI came before the end. */
typedef struct {
    int has_sof, has_eoi, bad_length;
    uint32_t width, height;
} jpeg_scan;

static void jpeg_walk(jpeg_scan *js, const uint8_t *d, size_t n)
{
    memset(js, 0, sizeof *js);
    size_t p = 2;
    for (;;) {
        while (p < n && d[p] != 0xFF)
            p++; /* junk between segments, as libjpeg */
        while (p < n && d[p] == 0xFF)
            p++; /* fill bytes */
        if (p >= n) return;
        uint8_t m = d[p++];
        if (m == 0xD9) {
            js->has_eoi = 1;
            return;
        }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7) || m == 0x00) continue;
        if (n - p < 2) return;
        size_t len = (size_t)d[p] << 8 | d[p + 1];
        if (len < 2) {
            js->bad_length = 1;
            return;
        }
        if (len > n - p) return;
        int sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if (sof && !js->has_sof && len >= 7) {
            js->has_sof = 1;
            js->height = (uint32_t)d[p + 3] << 8 | d[p + 4];
            js->width = (uint32_t)d[p + 5] << 8 | d[p + 6];
        }
        p += len;
        if (m == 0xDA) {
            /* entropy-coded data: FF 00 is a stuffed byte, FF D0..D7 a
             * restart marker; any other FF xx ends it */
            for (;;) {
                while (p < n && d[p] != 0xFF)
                    p++;
                if (p + 1 >= n) return;
                uint8_t x = d[p + 1];
                if (x == 0x00 || (x >= 0xD0 && x <= 0xD7))
                    p += 2;
                else if (x == 0xFF)
                    p++;
                else
                    break;
            }
        }
    }
}

/* Skips GIF data sub-blocks (length byte, bytes; a 0 length ends them). */
static int gif_skip_blocks(const uint8_t *d, size_t n, size_t *pos)
{
    size_t p = *pos;
    for (;;) {
        if (p >= n) return 0;
        size_t len = d[p++];
        if (len == 0) break;
        if (len > n - p) return 0;
        p += len;
    }
    *pos = p;
    return 1;
}

/* GIF: header, screen descriptor, colour table, then blocks until the
 * first image's data is complete. */
static tm_status gif_check(const uint8_t *d, size_t n, const char *name)
{
    const char *trunc = "%s: truncated GIF: the data ends before the first frame is complete";
    if (n < 13) return tm_fail(TM_ERR_FORMAT, trunc, name);
    size_t p = 13;
    if (d[10] & 0x80) p += (size_t)3 << ((d[10] & 7) + 1);
    for (;;) {
        if (p >= n) return tm_fail(TM_ERR_FORMAT, trunc, name);
        uint8_t b = d[p++];
        if (b == 0x21) { /* extension: label, sub-blocks */
            if (p >= n) return tm_fail(TM_ERR_FORMAT, trunc, name);
            p++;
            if (!gif_skip_blocks(d, n, &p)) return tm_fail(TM_ERR_FORMAT, trunc, name);
        } else if (b == 0x2C) { /* image: descriptor, colour table, LZW size, data */
            if (n - p < 9) return tm_fail(TM_ERR_FORMAT, trunc, name);
            uint8_t flags = d[p + 8];
            p += 9;
            if (flags & 0x80) {
                size_t lct = (size_t)3 << ((flags & 7) + 1);
                if (lct > n - p) return tm_fail(TM_ERR_FORMAT, trunc, name);
                p += lct;
            }
            if (p >= n) return tm_fail(TM_ERR_FORMAT, trunc, name);
            p++;
            if (!gif_skip_blocks(d, n, &p)) return tm_fail(TM_ERR_FORMAT, trunc, name);
            return TM_OK;
        } else if (b == 0x3B) {
            return tm_fail(TM_ERR_FORMAT, "%s: corrupt GIF: no image before the trailer", name);
        } else {
            return tm_fail(TM_ERR_FORMAT, "%s: corrupt GIF: unknown block 0x%02X at byte %zu", name,
                           b, p - 1);
        }
    }
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint32_t le16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* BMP: the pixel array that the header describes must be in the file
 * (uncompressed and bit-field BMPs; stb refuses the others itself). */
static tm_status bmp_check(const uint8_t *d, size_t n, const char *name)
{
    if (n < 26) return tm_fail(TM_ERR_FORMAT, "%s: truncated BMP header", name);
    uint64_t offset = le32(d + 10), hsz = le32(d + 14), w, h, bpp, comp = 0;
    if (hsz == 12) {
        w = le16(d + 18);
        h = le16(d + 20);
        bpp = le16(d + 24);
    } else {
        if (n < 34) return tm_fail(TM_ERR_FORMAT, "%s: truncated BMP header", name);
        w = le32(d + 18);
        int32_t sh = (int32_t)le32(d + 22);
        h = sh < 0 ? (uint64_t)(-(int64_t)sh) : (uint64_t)sh;
        bpp = le16(d + 28);
        comp = le32(d + 30);
    }
    if ((comp != 0 && comp != 3) || w > ((uint64_t)1 << 24) || h > ((uint64_t)1 << 24))
        return TM_OK; /* stb reports these */
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32) return TM_OK;
    uint64_t stride = (w * bpp + 31) / 32 * 4;
    uint64_t need = offset + stride * h;
    if (need > n)
        return tm_fail(TM_ERR_FORMAT,
                       "%s: truncated BMP: the header describes %llu bytes up to the end of the "
                       "pixels, the file has %zu",
                       name, (unsigned long long)need, n);
    return TM_OK;
}

/* PNG: walks the chunks, then inflates the image data into a buffer of the
 * size the header implies (plus a little slack). stb would instead grow
 * its buffer for as long as the stream produces bytes -- up to 4 GB from a
 * few megabytes of a crafted stream -- so this bounds the memory a PNG can
 * take by its header's (limited) size. It costs one extra inflate. */
#define PNG_SLACK 4096

static tm_status png_check(const uint8_t *d, size_t n, const char *name)
{
    static const char *trunc = "%s: truncated PNG: the data ends inside a chunk";
    size_t p = 8, idat_total = 0;
    int has_ihdr = 0, has_iend = 0, cgbi = 0;
    uint32_t w = 0, h = 0;
    uint8_t depth = 0, ctype = 0, interlace = 0;
    while (!has_iend) {
        if (n - p < 12) return tm_fail(TM_ERR_FORMAT, trunc, name);
        size_t len = be32(d + p);
        const uint8_t *type = d + p + 4;
        if (len > n - p - 12) return tm_fail(TM_ERR_FORMAT, trunc, name);
        const uint8_t *body = d + p + 8;
        if (!memcmp(type, "CgBI", 4)) cgbi = 1;
        if (!memcmp(type, "IHDR", 4) && len >= 13 && !has_ihdr) {
            has_ihdr = 1;
            w = be32(body), h = be32(body + 4);
            depth = body[8], ctype = body[9], interlace = body[12];
        }
        if (!memcmp(type, "IDAT", 4)) idat_total += len; /* <= n: no overflow */
        if (!memcmp(type, "IEND", 4)) has_iend = 1;
        p += 12 + len;
    }
    if (!has_ihdr) return tm_fail(TM_ERR_FORMAT, "%s: corrupt PNG: no IHDR chunk", name);
    if (idat_total == 0) return tm_fail(TM_ERR_FORMAT, "%s: corrupt PNG: no image data", name);
    int spp = ctype == 0   ? 1
              : ctype == 2 ? 3
              : ctype == 3 ? 1
              : ctype == 4 ? 2
              : ctype == 6 ? 4
                           : 0;
    if (!spp || !(depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16))
        return tm_fail(TM_ERR_FORMAT, "%s: corrupt PNG: colour type %d with bit depth %d", name,
                       ctype, depth);
    /* raw (filtered) size: rows of a filter byte and ceil(width * bits / 8)
     * bytes, for the whole image or each of Adam7's seven passes */
    static const int xo[7] = {0, 4, 0, 2, 0, 1, 0}, yo[7] = {0, 0, 4, 0, 2, 0, 1};
    static const int xs[7] = {8, 8, 4, 4, 2, 2, 1}, ys[7] = {8, 8, 8, 4, 4, 2, 2};
    uint64_t bits = (uint64_t)depth * spp, raw = 0;
    for (int pass = 0; pass < (interlace ? 7 : 1); pass++) {
        uint64_t pw = w, ph = h;
        if (interlace) {
            pw = w > (uint32_t)xo[pass] ? (w - xo[pass] + xs[pass] - 1) / xs[pass] : 0;
            ph = h > (uint32_t)yo[pass] ? (h - yo[pass] + ys[pass] - 1) / ys[pass] : 0;
        }
        if (pw && ph) raw += ph * (1 + (pw * bits + 7) / 8);
    }
    if (raw + PNG_SLACK > (uint64_t)INT_MAX || idat_total > (size_t)INT_MAX)
        return tm_fail(TM_ERR_LIMIT, "%s: PNG too large to decode", name);
    uint8_t *idat = tm_alloc(idat_total), *out = tm_alloc((size_t)raw + PNG_SLACK);
    tm_status s = TM_OK;
    if (!idat || !out) {
        s = tm_fail(TM_ERR_NOMEM, "%s: out of memory checking PNG data", name);
        goto done;
    }
    size_t k = 0;
    for (p = 8;;) {
        size_t len = be32(d + p);
        if (!memcmp(d + p + 4, "IDAT", 4)) {
            memcpy(idat + k, d + p + 8, len);
            k += len;
        }
        if (!memcmp(d + p + 4, "IEND", 4)) break;
        p += 12 + len;
    }
    int got = cgbi ? stbi_zlib_decode_noheader_buffer((char *)out, (int)(raw + PNG_SLACK),
                                                      (const char *)idat, (int)idat_total)
                   : stbi_zlib_decode_buffer((char *)out, (int)(raw + PNG_SLACK),
                                             (const char *)idat, (int)idat_total);
    if (got < 0) {
        const char *why = stbi_failure_reason();
        if (why && !strcmp(why, "output buffer limit"))
            s = tm_fail(TM_ERR_FORMAT,
                        "%s: corrupt PNG: the image data inflates to more than the %llu bytes "
                        "its header implies",
                        name, (unsigned long long)raw);
        else
            s = tm_fail(TM_ERR_FORMAT, "%s: corrupt PNG image data (%s)", name,
                        why ? why : "inflate failed");
    } else if ((uint64_t)got < raw) {
        s = tm_fail(TM_ERR_FORMAT,
                    "%s: truncated PNG image data: %d of the %llu bytes the header implies", name,
                    got, (unsigned long long)raw);
    }
done:
    tm_free(idat);
    tm_free(out);
    return s;
}

/* ------------------------------------------------------------ decoding */

typedef struct {
    tm_image_format format;
    int width, height, channels;
    pnm_header pnm;
    jpeg_scan jpeg;
} header_info;

/* stb's short failure reasons that mean "valid, but not handled". */
static int stb_unsupported(const char *why)
{
    static const char *const r[] = {
        "BMP RLE",          "BMP JPEG/PNG",        "unknown BMP",         "only 8-bit",
        "no header height", "1/2/4/8/16-bit only", "bad bits_per_channel"};
    for (size_t i = 0; why && i < sizeof r / sizeof *r; i++)
        if (!strcmp(why, r[i])) return 1;
    return 0;
}

/* Width and height from the header, read by us so that limits are checked
 * on the file's own numbers, before stb sees them. */
static tm_status header_dims(header_info *hi, const uint8_t *d, size_t n, uint64_t *w, uint64_t *h,
                             const char *name)
{
    const char *fmt = upper_name(hi->format);
    switch (hi->format) {
    case TM_IMAGE_FORMAT_PNG:
        if (n < 33) return tm_fail(TM_ERR_FORMAT, "%s: truncated PNG header", name);
        if (memcmp(d + 12, "IHDR", 4) != 0)
            return tm_fail(TM_ERR_FORMAT, "%s: corrupt PNG: the first chunk is not IHDR", name);
        *w = be32(d + 16), *h = be32(d + 20);
        return TM_OK;
    case TM_IMAGE_FORMAT_GIF:
        if (n < 10) return tm_fail(TM_ERR_FORMAT, "%s: truncated GIF header", name);
        *w = le16(d + 6), *h = le16(d + 8);
        return TM_OK;
    case TM_IMAGE_FORMAT_BMP:
        if (n < 26) return tm_fail(TM_ERR_FORMAT, "%s: truncated BMP header", name);
        if (le32(d + 14) == 12) {
            *w = le16(d + 18), *h = le16(d + 20);
        } else {
            if (n < 30) return tm_fail(TM_ERR_FORMAT, "%s: truncated BMP header", name);
            int32_t sw = (int32_t)le32(d + 18), sh = (int32_t)le32(d + 22);
            *w = sw < 0 ? (uint64_t)(-(int64_t)sw) : (uint64_t)sw;
            *h = sh < 0 ? (uint64_t)(-(int64_t)sh) : (uint64_t)sh; /* negative: top-down */
        }
        return TM_OK;
    case TM_IMAGE_FORMAT_JPEG:
        jpeg_walk(&hi->jpeg, d, n);
        if (!hi->jpeg.has_sof) {
            if (hi->jpeg.bad_length)
                return tm_fail(TM_ERR_FORMAT, "%s: corrupt JPEG: a segment length below 2", name);
            return tm_fail(TM_ERR_FORMAT, "%s: %s JPEG: no frame header (SOF)", name,
                           hi->jpeg.has_eoi ? "corrupt" : "truncated");
        }
        *w = hi->jpeg.width, *h = hi->jpeg.height;
        return TM_OK;
    case TM_IMAGE_FORMAT_PNM: {
        tm_status s = pnm_parse(&hi->pnm, d, n, name);
        if (s) return s;
        *w = hi->pnm.width, *h = hi->pnm.height;
        return TM_OK;
    }
    default: return tm_fail(TM_ERR_INTERNAL, "%s: %s has no header reader", name, fmt);
    }
}

/* Recognises the format and reads the header; checks the pixel count
 * against max_pixels unless it is 0. */
static tm_status read_header(header_info *hi, const uint8_t *d, size_t n, const char *name,
                             size_t max_pixels)
{
    memset(hi, 0, sizeof *hi);
    if (n == 0) return tm_fail(TM_ERR_FORMAT, "%s: empty image (0 bytes)", name);
    const char *other;
    hi->format = sniff(d, n, &other);
    if (hi->format == TM_IMAGE_FORMAT_UNKNOWN) {
        tm_image_format part = partial_magic(d, n);
        if (part != TM_IMAGE_FORMAT_UNKNOWN)
            return tm_fail(TM_ERR_FORMAT, "%s: truncated %s (%zu bytes)", name, upper_name(part),
                           n);
        if (other)
            return tm_fail(TM_ERR_UNSUPPORTED, "%s: unsupported image format: %s", name, other);
        return tm_fail(TM_ERR_UNSUPPORTED,
                       "%s: unsupported or unrecognised image format (not PNG, JPEG, BMP, GIF, "
                       "PGM or PPM)",
                       name);
    }
    const char *fmt = upper_name(hi->format);
    uint64_t w = 0, h = 0;
    tm_status s = header_dims(hi, d, n, &w, &h, name);
    if (s) return s;
    if (w == 0 || h == 0)
        return tm_fail(TM_ERR_FORMAT, "%s: %s with zero width or height (%llu x %llu)", name, fmt,
                       (unsigned long long)w, (unsigned long long)h);
    /* w, h < 2^33 (PNM numbers saturate at 2^32): the product fits */
    if (max_pixels && w * h > max_pixels)
        return tm_fail(TM_ERR_LIMIT, "%s: %s of %llu x %llu pixels is over the limit of %zu", name,
                       fmt, (unsigned long long)w, (unsigned long long)h, max_pixels);
    if (w > STB_MAX_SIDE || h > STB_MAX_SIDE)
        return tm_fail(TM_ERR_LIMIT, "%s: %s of %llu x %llu pixels: a side is over %d", name, fmt,
                       (unsigned long long)w, (unsigned long long)h, STB_MAX_SIDE);
    hi->width = (int)w;
    hi->height = (int)h;
    if (hi->format == TM_IMAGE_FORMAT_PNM) {
        hi->channels = hi->pnm.channels;
        return TM_OK;
    }
    if (n > INT_MAX)
        return tm_fail(TM_ERR_LIMIT, "%s: %zu bytes is more than the decoder accepts", name, n);
    return TM_OK;
}

/* stb's view of the header (the channel count), which must agree with
 * ours. When it fails, stbi_info's reason is the last format it tried, not
 * this one's; with explain set (after the structure checks, so that it is
 * bounded), the loader, which goes straight to the format's decoder, is run
 * to say what is wrong. */
static tm_status stb_header(header_info *hi, const uint8_t *d, size_t n, const char *name,
                            int explain)
{
    const char *fmt = upper_name(hi->format);
    if (hi->format == TM_IMAGE_FORMAT_PNM) {
        hi->channels = hi->pnm.channels;
        return TM_OK;
    }
    int sw = 0, sh = 0, comp = 0;
    if (!stbi_info_from_memory(d, (int)n, &sw, &sh, &comp)) {
        const char *why = stbi_failure_reason();
        if (explain) {
            stbi_set_flip_vertically_on_load_thread(0);
            stbi_uc *pix = stbi_load_from_memory(d, (int)n, &sw, &sh, &comp, 0);
            if (pix) stbi_image_free(pix);
            why = pix ? "the header reader and the decoder disagree" : stbi_failure_reason();
        }
        if (stb_unsupported(why))
            return tm_fail(TM_ERR_UNSUPPORTED, "%s: unsupported %s variant (%s)", name, fmt, why);
        return tm_fail(TM_ERR_FORMAT, "%s: corrupt or truncated %s header (%s)", name, fmt,
                       why ? why : "unknown reason");
    }
    if (sw != hi->width || sh != hi->height || comp < 1 || comp > 4)
        return tm_fail(TM_ERR_FORMAT, "%s: corrupt %s header (%d x %d x %d, expected %d x %d)",
                       name, fmt, sw, sh, comp, hi->width, hi->height);
    hi->channels = comp;
    return TM_OK;
}

tm_status tm_image_probe(const void *data, size_t size, tm_image_format *format, int *width,
                         int *height, int *channels)
{
    if (!data && size) return tm_fail(TM_ERR_INVALID, "tm_image_probe: data is NULL");
    header_info hi;
    tm_status s = read_header(&hi, data, size, MEMORY_NAME, 0);
    if (!s) s = stb_header(&hi, data, size, MEMORY_NAME, 0);
    if (format) *format = s ? TM_IMAGE_FORMAT_UNKNOWN : hi.format;
    if (s) return s;
    if (width) *width = hi.width;
    if (height) *height = hi.height;
    if (channels) *channels = hi.channels;
    return TM_OK;
}

static tm_status check_params(const tm_image_decode_params *p, const char *fn)
{
    if (p->channels != 0 && p->channels != 1 && p->channels != 3)
        return tm_fail(TM_ERR_INVALID, "%s: channels must be 0, 1 or 3, not %d", fn, p->channels);
    if (p->alpha != TM_ALPHA_DROP && p->alpha != TM_ALPHA_COMPOSITE)
        return tm_fail(TM_ERR_INVALID, "%s: unknown alpha mode %d", fn, (int)p->alpha);
    return TM_OK;
}

static size_t max_bytes_of(tm_image_limits l)
{
    size_t m = l.max_bytes ? l.max_bytes : TM_IMAGE_DEFAULT_MAX_BYTES;
    return m > (size_t)INT_MAX ? (size_t)INT_MAX : m;
}

static size_t max_pixels_of(tm_image_limits l)
{
    return l.max_pixels ? l.max_pixels : TM_IMAGE_DEFAULT_MAX_PIXELS;
}

static tm_status decode_named(tm_image **out, const uint8_t *d, size_t n, tm_image_decode_params p,
                              const char *name)
{
    size_t max_bytes = max_bytes_of(p.limits), max_pixels = max_pixels_of(p.limits);
    if (n > max_bytes)
        return tm_fail(TM_ERR_LIMIT, "%s: %zu bytes is over the limit of %zu bytes", name, n,
                       max_bytes);
    header_info hi;
    tm_status s = read_header(&hi, d, n, name, max_pixels);
    if (s) return s;
    const char *fmt = upper_name(hi.format);
    size_t pixels = (size_t)hi.width * (size_t)hi.height;
    switch (hi.format) {
    case TM_IMAGE_FORMAT_JPEG:
        if (!hi.jpeg.has_eoi)
            s = tm_fail(TM_ERR_FORMAT,
                        "%s: truncated JPEG: the data ends before the end-of-image marker", name);
        break;
    case TM_IMAGE_FORMAT_PNG: s = png_check(d, n, name); break;
    case TM_IMAGE_FORMAT_GIF: s = gif_check(d, n, name); break;
    case TM_IMAGE_FORMAT_BMP: s = bmp_check(d, n, name); break;
    case TM_IMAGE_FORMAT_PNM: s = pnm_check(&hi.pnm, n, name); break;
    default: break;
    }
    if (!s) s = stb_header(&hi, d, n, name, 1);
    if (s) return s;

    uint8_t *pix = NULL; /* file_c channels per pixel */
    int file_c;
    int from_stb = 0;
    if (hi.format == TM_IMAGE_FORMAT_PNM) {
        file_c = hi.channels;
        pix = tm_alloc(pixels * (size_t)file_c);
        if (!pix) return tm_fail(TM_ERR_NOMEM, "%s: out of memory decoding PNM", name);
        pnm_decode(pix, &hi.pnm, d);
    } else {
        int w = 0, h = 0;
        file_c = 0;
        stbi_set_flip_vertically_on_load_thread(0);
        pix = stbi_load_from_memory(d, (int)n, &w, &h, &file_c, 0);
        if (!pix) {
            const char *why = stbi_failure_reason();
            if (why && strcmp(why, "outofmem") == 0)
                return tm_fail(TM_ERR_NOMEM, "%s: out of memory decoding %s", name, fmt);
            if (stb_unsupported(why))
                return tm_fail(TM_ERR_UNSUPPORTED, "%s: unsupported %s variant (%s)", name, fmt,
                               why);
            return tm_fail(TM_ERR_FORMAT, "%s: corrupt or truncated %s (%s)", name, fmt,
                           why ? why : "unknown reason");
        }
        if (w != hi.width || h != hi.height || file_c < 1 || file_c > 4) {
            stbi_image_free(pix);
            return tm_fail(TM_ERR_FORMAT,
                           "%s: corrupt %s: the header says %d x %d, the data %d x %d", name, fmt,
                           hi.width, hi.height, w, h);
        }
        from_stb = 1;
    }

    int want = p.channels;
    if (want == 0) want = file_c <= 2 ? 1 : 3;
    tm_image *img = NULL;
    s = tm_image_new(&img, hi.width, hi.height, want);
    if (s == TM_OK) {
        convert_pixels(img->data, want, pix, file_c, pixels, p.alpha, p.background);
        img->format = hi.format;
        img->file_channels = file_c;
        *out = img;
    } else {
        s = tm_fail(TM_ERR_NOMEM, "%s: out of memory for a %d x %d image", name, hi.width,
                    hi.height);
    }
    if (from_stb)
        stbi_image_free(pix);
    else
        tm_free(pix);
    return s;
}

tm_status tm_image_decode(tm_image **out, const void *data, size_t size,
                          tm_image_decode_params params)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_image_decode: out is NULL");
    *out = NULL;
    if (!data && size) return tm_fail(TM_ERR_INVALID, "tm_image_decode: data is NULL");
    tm_status s = check_params(&params, "tm_image_decode");
    if (s) return s;
    return decode_named(out, data, size, params, MEMORY_NAME);
}

tm_status tm_image_load(tm_image **out, const char *path, tm_image_decode_params params)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_image_load: out is NULL");
    *out = NULL;
    if (!path || !*path) return tm_fail(TM_ERR_INVALID, "tm_image_load: empty path");
    tm_status s = check_params(&params, "tm_image_load");
    if (s) return s;
    char *buf;
    size_t got;
    s = tm_read_file(path, max_bytes_of(params.limits), &buf, &got);
    if (s) return s;
    s = decode_named(out, (const uint8_t *)buf, got, params, path);
    tm_free(buf);
    return s;
}

/* --------------------------------------------------------- PNG writing */

typedef struct {
    uint8_t *data;
    size_t size, cap;
    int failed;
} mem_sink;

static void sink_write(void *ctx, void *data, int size)
{
    mem_sink *m = ctx;
    if (m->failed || size <= 0) return;
    size_t need;
    if (!tm_add_size(m->size, (size_t)size, &need)) {
        m->failed = 1;
        return;
    }
    if (need > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < need) {
            if (!tm_mul_size(cap, 2, &cap)) {
                m->failed = 1;
                return;
            }
        }
        uint8_t *p = tm_alloc(cap);
        if (!p) {
            m->failed = 1;
            return;
        }
        if (m->size) memcpy(p, m->data, m->size);
        tm_free(m->data);
        m->data = p;
        m->cap = cap;
    }
    memcpy(m->data + m->size, data, (size_t)size);
    m->size = need;
}

tm_status tmv_write_png_u8(const char *path, const uint8_t *pixels, int w, int h, int comp)
{
    size_t stride;
    if (!tm_mul_size((size_t)w, (size_t)comp, &stride) || stride > (size_t)INT_MAX)
        return tm_fail(TM_ERR_LIMIT, "%s: image too wide for PNG writing", path);
    mem_sink m = {NULL, 0, 0, 0};
    int ok = stbi_write_png_to_func(sink_write, &m, w, h, comp, pixels, (int)stride);
    tm_status s;
    if (!ok || m.failed)
        s = tm_fail(TM_ERR_NOMEM, "%s: out of memory encoding PNG", path);
    else
        s = tm_write_file_atomic(path, m.data, m.size);
    tm_free(m.data);
    return s;
}

tm_status tm_image_save_png(const tm_image *img, const char *path)
{
    if (!img || !img->data) return tm_fail(TM_ERR_INVALID, "tm_image_save_png: no image");
    if (!path || !*path) return tm_fail(TM_ERR_INVALID, "tm_image_save_png: empty path");
    if (img->width <= 0 || img->height <= 0 || img->channels < 1 || img->channels > 4)
        return tm_fail(TM_ERR_INVALID, "tm_image_save_png: bad image %d x %d x %d", img->width,
                       img->height, img->channels);
    return tmv_write_png_u8(path, img->data, img->width, img->height, img->channels);
}
