/* A log-mel as a PNG picture (stb_image_write). */
#include <math.h>
#include <stb/stb_image_write.h>
#include <string.h>

#include "audio/audio_internal.h"
#include "trimodal/io.h"

#define PNG_MAX_SIDE 16384

/* viridis (matplotlib's default colour map) at 0, 1/9, ..., 1: dark blue
 * through green to yellow, perceptually uniform and readable in grey. */
static const unsigned char viridis[10][3] = {
    {68, 1, 84},    {72, 40, 120},  {62, 73, 137},  {49, 104, 142}, {38, 130, 142},
    {31, 158, 137}, {53, 183, 121}, {110, 206, 88}, {181, 222, 43}, {253, 231, 37},
};

static void colour(float t, unsigned char rgb[3])
{
    if (!(t >= 0)) t = 0; /* also NaN */
    if (t > 1) t = 1;
    float s = t * 9.0f;
    int i = (int)s;
    if (i > 8) i = 8;
    float f = s - (float)i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (unsigned char)lrintf((1 - f) * viridis[i][c] + f * viridis[i + 1][c]);
}

/* The encoded PNG, collected in memory by stb's write callback. */
typedef struct {
    unsigned char *data;
    size_t len, cap;
    int failed;
} png_buf;

static void png_put(void *ctx, void *data, int size)
{
    png_buf *b = ctx;
    if (b->failed || size <= 0) return;
    if (b->len + (size_t)size > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->len + (size_t)size) cap *= 2;
        unsigned char *d = tm_alloc(cap);
        if (!d) {
            b->failed = 1;
            return;
        }
        if (b->len) memcpy(d, b->data, b->len);
        tm_free(b->data);
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, (size_t)size);
    b->len += (size_t)size;
}

tm_status tm_logmel_write_png(const char *path, const float *mel, int n_mels, int64_t frames,
                              int scale)
{
    if (!path || !mel) return tm_fail(TM_ERR_INVALID, "log-mel PNG: NULL argument");
    if (n_mels < 1 || frames < 1)
        return tm_fail(TM_ERR_INVALID, "log-mel PNG: empty picture (%d x %lld)", n_mels,
                       (long long)frames);
    if (scale < 1 || scale > 64)
        return tm_fail(TM_ERR_INVALID, "log-mel PNG: scale %d outside [1, 64]", scale);
    if (frames > PNG_MAX_SIDE / scale || n_mels > PNG_MAX_SIDE / scale)
        return tm_fail(TM_ERR_LIMIT,
                       "log-mel PNG: %lld x %d values at scale %d exceed %d pixels a side",
                       (long long)frames, n_mels, scale, PNG_MAX_SIDE);
    int w = (int)frames * scale, h = n_mels * scale;
    size_t count = (size_t)n_mels * (size_t)frames;
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < count; i++) {
        float v = mel[i];
        if (!isfinite(v)) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    float range = hi > lo ? hi - lo : 0.0f;
    unsigned char *img = tm_alloc((size_t)w * (size_t)h * 3);
    if (!img) return tm_fail(TM_ERR_NOMEM, "log-mel PNG: out of memory");
    for (int m = 0; m < n_mels; m++) {
        /* Mel bin 0 (the lowest frequencies) is the bottom row. */
        int y0 = (n_mels - 1 - m) * scale;
        unsigned char *row = img + (size_t)y0 * w * 3;
        for (int64_t t = 0; t < frames; t++) {
            float v = mel[(size_t)m * frames + t];
            unsigned char rgb[3] = {0, 0, 0};
            if (isfinite(v)) colour(range > 0 ? (v - lo) / range : 0.5f, rgb);
            for (int k = 0; k < scale; k++) memcpy(row + ((size_t)t * scale + k) * 3, rgb, 3);
        }
        for (int k = 1; k < scale; k++) memcpy(row + (size_t)k * w * 3, row, (size_t)w * 3);
    }
    /* encoded in memory, then written atomically: a reader never sees half
     * a picture and a failed write leaves the old file */
    png_buf b = {0};
    int ok = stbi_write_png_to_func(png_put, &b, w, h, 3, img, w * 3);
    tm_free(img);
    tm_status st = TM_OK;
    if (!ok || b.failed || !b.len)
        st = tm_fail(TM_ERR_NOMEM, "log-mel PNG: out of memory encoding %s", path);
    else
        st = tm_write_file_atomic(path, b.data, b.len);
    tm_free(b.data);
    return st;
}
