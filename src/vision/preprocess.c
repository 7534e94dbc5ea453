/*
 * The standard image pipeline (what a model sees) and PNG pictures of
 * float tensors (what `trimodal preprocess` shows a user).
 */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "vision_internal.h"

tm_image_params tm_image_default_params(void)
{
    tm_image_params p;
    memset(&p, 0, sizeof p);
    p.mode = TM_RESIZE_SHORTER;
    p.size = 32;
    p.height = 32;
    p.width = 32;
    p.filter = TM_FILTER_BILINEAR;
    p.antialias = 1;
    p.channels = 1;
    for (int i = 0; i < 3; i++)
        p.mean[i] = 0.5f, p.std[i] = 0.5f;
    p.patch = 0;
    return p;
}

static tm_status check_params(const tm_image_params *p, const char *fn)
{
    if (p->mode != TM_RESIZE_SHORTER && p->mode != TM_RESIZE_EXACT)
        return tm_fail(TM_ERR_INVALID, "%s: unknown resize mode %d", fn, (int)p->mode);
    if ((unsigned)p->filter >= TM_FILTER_COUNT)
        return tm_fail(TM_ERR_INVALID, "%s: unknown resize filter %d", fn, (int)p->filter);
    if (p->channels != 1 && p->channels != 3)
        return tm_fail(TM_ERR_INVALID, "%s: channels must be 1 or 3, not %d", fn, p->channels);
    if (p->height <= 0 || p->width <= 0)
        return tm_fail(TM_ERR_INVALID, "%s: bad output size %d x %d", fn, p->height, p->width);
    if (p->mode == TM_RESIZE_SHORTER && p->size < 0)
        return tm_fail(TM_ERR_INVALID, "%s: bad resize size %d", fn, p->size);
    for (int i = 0; i < p->channels; i++)
        if (!(p->std[i] != 0.0f) || !isfinite(p->std[i]) || !isfinite(p->mean[i]))
            return tm_fail(TM_ERR_INVALID, "%s: bad mean %g / std %g for channel %d", fn,
                           (double)p->mean[i], (double)p->std[i], i);
    if (p->patch < 0 || (p->patch > 0 && (p->height % p->patch || p->width % p->patch)))
        return tm_fail(TM_ERR_INVALID, "%s: %d x %d is not a multiple of patch %d", fn, p->height,
                       p->width, p->patch);
    size_t n;
    return tmv_check_chw(fn, p->channels, p->height, p->width, &n);
}

tm_status tm_image_preprocess_shape(int *ndim, int64_t shape[3], tm_image_params p)
{
    if (!ndim || !shape) return tm_fail(TM_ERR_INVALID, "tm_image_preprocess_shape: NULL output");
    tm_status s = check_params(&p, "tm_image_preprocess_shape");
    if (s) return s;
    if (p.patch > 0) {
        *ndim = 2;
        shape[0] = (int64_t)(p.height / p.patch) * (p.width / p.patch);
        shape[1] = (int64_t)p.channels * p.patch * p.patch;
        shape[2] = 0;
    } else {
        *ndim = 3;
        shape[0] = p.channels;
        shape[1] = p.height;
        shape[2] = p.width;
    }
    return TM_OK;
}

tm_status tm_image_preprocess(float *out, size_t out_len, const tm_image *img, tm_image_params p)
{
    const char *fn = "tm_image_preprocess";
    if (!out || !img || !img->data) return tm_fail(TM_ERR_INVALID, "%s: NULL argument", fn);
    tm_status s = check_params(&p, fn);
    if (s) return s;
    size_t need = (size_t)p.channels * p.height * p.width;
    if (out_len < need)
        return tm_fail(TM_ERR_INVALID, "%s: the output holds %zu floats, %zu are needed", fn,
                       out_len, need);
    if (img->channels < 1 || img->channels > 4)
        return tm_fail(TM_ERR_INVALID, "%s: the image has %d channels", fn, img->channels);
    int c = p.channels, h = img->height, w = img->width;
    size_t n;
    if ((s = tmv_check_chw(fn, c, h, w, &n))) return s;

    tm_image *conv = NULL;
    const tm_image *src = img;
    if (img->channels != c) {
        if ((s = tm_image_convert(&conv, img, c))) return s;
        src = conv;
    }
    float *a = tm_alloc(n * sizeof *a), *b = NULL, *t = NULL;
    if (!a) {
        s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
        goto done;
    }
    tm_image_to_float(a, src);

    /* resize; a holds the current image (c, h, w) */
    int rh = p.height, rw = p.width;
    if (p.mode == TM_RESIZE_SHORTER) {
        if (p.size > 0) {
            if ((s = tm_image_resize_shorter_size(&rh, &rw, h, w, p.size))) goto done;
        } else {
            rh = h, rw = w;
        }
    }
    if (rh != h || rw != w) {
        size_t m;
        if ((s = tmv_check_chw(fn, c, rh, rw, &m))) goto done;
        if ((s = tmv_check_chw(fn, c, h, rw, &m))) goto done;
        b = tm_alloc((size_t)c * rh * rw * sizeof *b);
        if (!b) {
            s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
            goto done;
        }
        if ((s = tmv_resize(b, a, c, h, w, rh, rw, p.filter, p.antialias))) goto done;
        tm_free(a);
        a = b;
        b = NULL;
        h = rh, w = rw;
    }
    /* crop into the final (c, height, width) */
    float *dst = out;
    if (p.patch > 0) {
        t = tm_alloc(need * sizeof *t);
        if (!t) {
            s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
            goto done;
        }
        dst = t;
    }
    if (h == p.height && w == p.width)
        memcpy(dst, a, need * sizeof *dst);
    else
        tm_image_center_crop(dst, a, c, h, w, p.height, p.width);
    tm_image_normalize(dst, dst, c, p.height, p.width, p.mean, p.std);
    if (p.patch > 0) tm_image_patchify(out, dst, c, p.height, p.width, p.patch);
    s = TM_OK;
done:
    tm_free(a);
    tm_free(b);
    tm_free(t);
    tm_image_free(conv);
    return s;
}

tm_status tm_image_write_png(const char *path, const float *in, int c, int h, int w,
                             tm_png_scaling scaling, int upscale)
{
    const char *fn = "tm_image_write_png";
    if (!path || !*path || !in) return tm_fail(TM_ERR_INVALID, "%s: NULL argument", fn);
    size_t n;
    tm_status s = tmv_check_chw(fn, c, h, w, &n);
    if (s) return s;
    if (c != 1 && c != 3)
        return tm_fail(TM_ERR_INVALID, "%s: needs 1 (gray) or 3 (RGB) channels, not %d", fn, c);
    if (upscale < 1) return tm_fail(TM_ERR_INVALID, "%s: upscale %d < 1", fn, upscale);
    if (scaling != TM_PNG_SCALE_UNIT && scaling != TM_PNG_SCALE_MINMAX)
        return tm_fail(TM_ERR_INVALID, "%s: unknown scaling %d", fn, (int)scaling);
    int64_t oh = (int64_t)h * upscale, ow = (int64_t)w * upscale;
    if (oh > INT_MAX || ow > INT_MAX || oh * ow > ((int64_t)1 << 28))
        return tm_fail(TM_ERR_LIMIT, "%s: %lld x %lld pixels is over the limit of 2^28", fn,
                       (long long)oh, (long long)ow);
    double lo = 0.0, hi = 1.0;
    if (scaling == TM_PNG_SCALE_MINMAX) {
        lo = INFINITY, hi = -INFINITY;
        for (size_t i = 0; i < n; i++)
            if (isfinite(in[i])) {
                if (in[i] < lo) lo = in[i];
                if (in[i] > hi) hi = in[i];
            }
        if (!(hi > lo)) lo = 0.0, hi = INFINITY; /* constant or no finite value: black */
    }
    double scale = isinf(hi) ? 0.0 : 255.0 / (hi - lo);
    uint8_t *pix = tm_alloc((size_t)oh * (size_t)ow * (size_t)c);
    if (!pix) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    size_t hw = (size_t)h * w;
    for (int64_t y = 0; y < oh; y++) {
        int64_t sy = y / upscale;
        for (int64_t x = 0; x < ow; x++) {
            int64_t sx = x / upscale;
            for (int ch = 0; ch < c; ch++) {
                double v = in[ch * hw + (size_t)sy * w + (size_t)sx];
                double t = isnan(v) ? 0.0 : (v - lo) * scale;
                if (!(t > 0.0)) t = 0.0;
                if (t > 255.0) t = 255.0;
                pix[((size_t)y * (size_t)ow + (size_t)x) * c + ch] = (uint8_t)(t + 0.5);
            }
        }
    }
    s = tmv_write_png_u8(path, pix, (int)ow, (int)oh, c);
    tm_free(pix);
    return s;
}
