/*
 * Geometric and value transforms on float CHW images: conversion from
 * 8-bit, crops, padding, normalisation, patchify, flip, rotation, box fill.
 * Each follows torchvision 0.14's tensor implementation; the comments say
 * where the details (rounding, borders) come from.
 */
#include <math.h>
#include <string.h>

#include "vision_internal.h"

tm_status tmv_check_chw(const char *fn, int c, int h, int w, size_t *numel)
{
    if (c <= 0 || h <= 0 || w <= 0)
        return tm_fail(TM_ERR_INVALID, "%s: bad image size %d x %d x %d (c x h x w)", fn, c, h, w);
    size_t n;
    if (!tm_mul_size((size_t)c, (size_t)h, &n) || !tm_mul_size(n, (size_t)w, &n) ||
        n > SIZE_MAX / sizeof(float) / 2)
        return tm_fail(TM_ERR_NOMEM, "%s: image size %d x %d x %d overflows", fn, c, h, w);
    if (numel) *numel = n;
    return TM_OK;
}

tm_status tmv_check_io(const char *fn, const float *out, const float *in, int c, int h, int w,
                       size_t *numel)
{
    if (!out || !in) return tm_fail(TM_ERR_INVALID, "%s: NULL buffer", fn);
    return tmv_check_chw(fn, c, h, w, numel);
}

tm_status tm_image_to_float(float *out, const tm_image *img)
{
    if (!out || !img || !img->data)
        return tm_fail(TM_ERR_INVALID, "tm_image_to_float: NULL argument");
    int c = img->channels, h = img->height, w = img->width;
    tm_status s = tmv_check_chw("tm_image_to_float", c, h, w, NULL);
    if (s) return s;
    size_t hw = (size_t)h * w;
    for (int ch = 0; ch < c; ch++) {
        float *o = out + (size_t)ch * hw;
        const uint8_t *p = img->data + ch;
        /* v / 255 in single precision, as torch's div(255) */
        for (size_t i = 0; i < hw; i++)
            o[i] = (float)p[i * (size_t)c] / 255.0f;
    }
    return TM_OK;
}

/* Python's round(d / 2) for d >= 0: halves go to the even neighbour. */
static int half_round_even(int d)
{
    int q = d / 2;
    if (d % 2 == 0) return q;
    return (q % 2 == 0) ? q : q + 1;
}

tm_status tm_image_center_crop(float *out, const float *in, int c, int h, int w, int out_h,
                               int out_w)
{
    size_t n;
    tm_status s = tmv_check_io("tm_image_center_crop", out, in, c, h, w, &n);
    if (!s) s = tmv_check_chw("tm_image_center_crop", c, out_h, out_w, &n);
    if (s) return s;
    /* torchvision pads first when the window is larger (left/top get the
     * smaller half), then crops the padded image at the rounded centre */
    int pl = out_w > w ? (out_w - w) / 2 : 0, pr = out_w > w ? (out_w - w + 1) / 2 : 0;
    int pt = out_h > h ? (out_h - h) / 2 : 0, pb = out_h > h ? (out_h - h + 1) / 2 : 0;
    int ph = h + pt + pb, pw = w + pl + pr;
    int top = half_round_even(ph - out_h) - pt, left = half_round_even(pw - out_w) - pl;
    for (int ch = 0; ch < c; ch++) {
        const float *src = in + (size_t)ch * h * w;
        float *dst = out + (size_t)ch * out_h * out_w;
        for (int y = 0; y < out_h; y++) {
            int sy = y + top;
            float *o = dst + (size_t)y * out_w;
            if (sy < 0 || sy >= h) {
                memset(o, 0, (size_t)out_w * sizeof *o);
                continue;
            }
            for (int x = 0; x < out_w; x++) {
                int sx = x + left;
                o[x] = (sx < 0 || sx >= w) ? 0.0f : src[(size_t)sy * w + sx];
            }
        }
    }
    return TM_OK;
}

static tm_status check_box(const char *fn, tm_image_box b, int h, int w)
{
    if (b.height <= 0 || b.width <= 0 || b.top < 0 || b.left < 0 || b.top > h - b.height ||
        b.left > w - b.width)
        return tm_fail(TM_ERR_INVALID,
                       "%s: box (top %d, left %d, %d x %d) is not inside the %d x %d image", fn,
                       b.top, b.left, b.height, b.width, h, w);
    return TM_OK;
}

tm_status tm_image_crop(float *out, const float *in, int c, int h, int w, tm_image_box box)
{
    size_t n;
    tm_status s = tmv_check_io("tm_image_crop", out, in, c, h, w, &n);
    if (!s) s = check_box("tm_image_crop", box, h, w);
    if (s) return s;
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < box.height; y++)
            memcpy(out + ((size_t)ch * box.height + y) * box.width,
                   in + ((size_t)ch * h + box.top + y) * w + box.left,
                   (size_t)box.width * sizeof *out);
    return TM_OK;
}

tm_status tm_image_resized_crop(float *out, const float *in, int c, int h, int w, tm_image_box box,
                                int out_h, int out_w, tm_resize_filter filter, int antialias)
{
    size_t n;
    tm_status s = tmv_check_io("tm_image_resized_crop", out, in, c, h, w, &n);
    if (!s) s = check_box("tm_image_resized_crop", box, h, w);
    if (!s) s = tmv_check_chw("tm_image_resized_crop", c, out_h, out_w, &n);
    if (!s && (unsigned)filter >= TM_FILTER_COUNT)
        s = tm_fail(TM_ERR_INVALID, "tm_image_resized_crop: unknown filter %d", (int)filter);
    if (!s) s = tmv_check_chw("tm_image_resized_crop", c, box.height, out_w, &n);
    if (s) return s;
    float *tmp = tm_alloc((size_t)c * box.height * box.width * sizeof *tmp);
    if (!tmp) return tm_fail(TM_ERR_NOMEM, "tm_image_resized_crop: out of memory");
    tm_image_crop(tmp, in, c, h, w, box);
    s = tmv_resize(out, tmp, c, box.height, box.width, out_h, out_w, filter, antialias);
    tm_free(tmp);
    return s;
}

/* Maps i in [-pad, n + pad) to a source index for the mirror modes;
 * periodic, so any pad works. */
static int mirror_index(int64_t i, int n, tm_image_pad_mode mode)
{
    if (i >= 0 && i < n) return (int)i;
    if (mode == TM_IMAGE_PAD_EDGE) return i < 0 ? 0 : n - 1;
    if (mode == TM_IMAGE_PAD_REFLECT) {
        if (n == 1) return 0;
        int64_t period = 2 * (int64_t)n - 2;
        int64_t m = i % period;
        if (m < 0) m += period;
        return (int)(m < n ? m : period - m);
    }
    int64_t period = 2 * (int64_t)n; /* symmetric */
    int64_t m = i % period;
    if (m < 0) m += period;
    return (int)(m < n ? m : period - 1 - m);
}

tm_status tm_image_pad(float *out, const float *in, int c, int h, int w, int left, int top,
                       int right, int bottom, tm_image_pad_mode mode, float fill)
{
    size_t n;
    tm_status s = tmv_check_io("tm_image_pad", out, in, c, h, w, &n);
    if (s) return s;
    if (left < 0 || top < 0 || right < 0 || bottom < 0)
        return tm_fail(TM_ERR_INVALID, "tm_image_pad: negative padding (%d, %d, %d, %d)", left, top,
                       right, bottom);
    if ((unsigned)mode >= TM_IMAGE_PAD_COUNT)
        return tm_fail(TM_ERR_INVALID, "tm_image_pad: unknown mode %d", (int)mode);
    int64_t oh64 = (int64_t)h + top + bottom, ow64 = (int64_t)w + left + right;
    if (oh64 > INT32_MAX || ow64 > INT32_MAX)
        return tm_fail(TM_ERR_INVALID, "tm_image_pad: padded size overflows");
    int oh = (int)oh64, ow = (int)ow64;
    if ((s = tmv_check_chw("tm_image_pad", c, oh, ow, &n))) return s;
    for (int ch = 0; ch < c; ch++) {
        const float *src = in + (size_t)ch * h * w;
        float *dst = out + (size_t)ch * oh * ow;
        for (int y = 0; y < oh; y++) {
            int64_t sy = (int64_t)y - top;
            float *o = dst + (size_t)y * ow;
            int inside_y = sy >= 0 && sy < h;
            if (mode == TM_IMAGE_PAD_CONSTANT && !inside_y) {
                for (int x = 0; x < ow; x++)
                    o[x] = fill;
                continue;
            }
            const float *row = src + (size_t)mirror_index(sy, h, mode) * w;
            for (int x = 0; x < ow; x++) {
                int64_t sx = (int64_t)x - left;
                if (sx >= 0 && sx < w)
                    o[x] = row[sx];
                else if (mode == TM_IMAGE_PAD_CONSTANT)
                    o[x] = fill;
                else
                    o[x] = row[mirror_index(sx, w, mode)];
            }
        }
    }
    return TM_OK;
}

tm_status tm_image_normalize(float *out, const float *in, int c, int h, int w, const float *mean,
                             const float *std)
{
    size_t n;
    tm_status s = tmv_check_io("tm_image_normalize", out, in, c, h, w, &n);
    if (s) return s;
    if (!mean || !std) return tm_fail(TM_ERR_INVALID, "tm_image_normalize: NULL mean or std");
    for (int ch = 0; ch < c; ch++)
        if (std[ch] == 0.0f || !isfinite(std[ch]) || !isfinite(mean[ch]))
            return tm_fail(TM_ERR_INVALID,
                           "tm_image_normalize: bad mean %g / std %g for channel %d",
                           (double)mean[ch], (double)std[ch], ch);
    size_t hw = (size_t)h * w;
    for (int ch = 0; ch < c; ch++) {
        float m = mean[ch], sd = std[ch];
        const float *x = in + ch * hw;
        float *y = out + ch * hw;
        /* sub then div in single precision, as torchvision's normalize */
        for (size_t i = 0; i < hw; i++)
            y[i] = (x[i] - m) / sd;
    }
    return TM_OK;
}

tm_status tm_image_patchify(float *out, const float *in, int c, int h, int w, int patch)
{
    size_t n;
    tm_status s = tmv_check_io("tm_image_patchify", out, in, c, h, w, &n);
    if (s) return s;
    if (patch <= 0 || h % patch || w % patch)
        return tm_fail(TM_ERR_INVALID, "tm_image_patchify: %d x %d is not a multiple of patch %d",
                       h, w, patch);
    int gh = h / patch, gw = w / patch;
    size_t row = (size_t)c * patch * patch;
    for (int py = 0; py < gh; py++)
        for (int px = 0; px < gw; px++) {
            float *o = out + ((size_t)py * gw + px) * row;
            for (int ch = 0; ch < c; ch++)
                for (int ky = 0; ky < patch; ky++) {
                    const float *src =
                        in + ((size_t)ch * h + (size_t)py * patch + ky) * w + (size_t)px * patch;
                    memcpy(o + ((size_t)ch * patch + ky) * patch, src, (size_t)patch * sizeof *o);
                }
        }
    return TM_OK;
}

tm_status tm_image_hflip(float *out, const float *in, int c, int h, int w)
{
    size_t n;
    tm_status s = tmv_check_io("tm_image_hflip", out, in, c, h, w, &n);
    if (s) return s;
    for (size_t r = 0; r < (size_t)c * h; r++) {
        const float *src = in + r * w;
        float *dst = out + r * w;
        if (src == dst) {
            for (int x = 0; x < w / 2; x++) {
                float t = dst[x];
                dst[x] = dst[w - 1 - x];
                dst[w - 1 - x] = t;
            }
        } else {
            for (int x = 0; x < w; x++)
                dst[x] = src[w - 1 - x];
        }
    }
    return TM_OK;
}

/* Bilinear sampling at (sx, sy) in pixel coordinates (pixel centres at
 * integers), as grid_sample(align_corners=False, padding "zeros"), with
 * torchvision's fill blending. */
tm_status tm_image_rotate(float *out, const float *in, int c, int h, int w, float angle,
                          const float *fill)
{
    size_t n;
    tm_status s = tmv_check_io("tm_image_rotate", out, in, c, h, w, &n);
    if (s) return s;
    if (!isfinite(angle)) return tm_fail(TM_ERR_INVALID, "tm_image_rotate: angle is not finite");
    if (out == in) return tm_fail(TM_ERR_INVALID, "tm_image_rotate: out must not be in");
    double t = (double)angle * (3.14159265358979323846 / 180.0);
    double ct = cos(t), st = sin(t);
    /* exact values for multiples of 90 degrees, so that 0 is the identity
     * and 90 a transposition */
    double a = fmod((double)angle, 360.0);
    if (a < 0) a += 360.0;
    if (a == 0.0)
        ct = 1, st = 0;
    else if (a == 90.0)
        ct = 0, st = 1;
    else if (a == 180.0)
        ct = -1, st = 0;
    else if (a == 270.0)
        ct = 0, st = -1;
    double hw = 0.5 * w, hh = 0.5 * h;
    size_t plane = (size_t)h * w;
    for (int y = 0; y < h; y++) {
        double v = y - hh + 0.5;
        for (int x = 0; x < w; x++) {
            double u = x - hw + 0.5;
            double sx = ct * u - st * v + hw - 0.5;
            double sy = st * u + ct * v + hh - 0.5;
            double fx = floor(sx), fy = floor(sy);
            int64_t x0 = (int64_t)fx, y0 = (int64_t)fy;
            double ax = sx - fx, ay = sy - fy;
            double wts[4] = {(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay};
            int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1}, ys[4] = {y0, y0, y0 + 1, y0 + 1};
            double inside = 0.0;
            size_t off[4];
            int ok[4];
            for (int k = 0; k < 4; k++) {
                ok[k] = xs[k] >= 0 && xs[k] < w && ys[k] >= 0 && ys[k] < h && wts[k] != 0.0;
                off[k] = ok[k] ? (size_t)ys[k] * w + (size_t)xs[k] : 0;
                if (ok[k]) inside += wts[k];
            }
            for (int ch = 0; ch < c; ch++) {
                const float *p = in + ch * plane;
                double acc = 0.0;
                for (int k = 0; k < 4; k++)
                    if (ok[k]) acc += wts[k] * p[off[k]];
                /* torchvision samples a ones channel along and blends
                 * sample * mask + (1 - mask) * fill: the sample is
                 * weighted by the mask a second time */
                if (fill) acc = acc * inside + (1.0 - inside) * fill[ch];
                out[ch * plane + (size_t)y * w + x] = (float)acc;
            }
        }
    }
    return TM_OK;
}

tm_status tm_image_fill_box(float *img, int c, int h, int w, tm_image_box box, const float *value)
{
    size_t n;
    tm_status s = tmv_check_io("tm_image_fill_box", img, img, c, h, w, &n);
    if (s) return s;
    int64_t y0 = box.top, x0 = box.left;
    int64_t y1 = y0 + (box.height > 0 ? box.height : 0), x1 = x0 + (box.width > 0 ? box.width : 0);
    if (y0 < 0) y0 = 0;
    if (x0 < 0) x0 = 0;
    if (y1 > h) y1 = h;
    if (x1 > w) x1 = w;
    for (int ch = 0; ch < c; ch++) {
        float v = value ? value[ch] : 0.0f;
        for (int64_t y = y0; y < y1; y++)
            for (int64_t x = x0; x < x1; x++)
                img[((size_t)ch * h + (size_t)y) * w + (size_t)x] = v;
    }
    return TM_OK;
}
