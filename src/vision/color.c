/*
 * Colour adjustments on float images, following torchvision 0.14's tensor
 * code operation by operation in single precision (the blend
 * f * x + (1 - f) * y clamped to [0, 1]; gray = 0.2989 r + 0.587 g +
 * 0.114 b; hue through its RGB <-> HSV formulas), so results agree to a
 * few float ulps. Every function works pixel by pixel (contrast after
 * one pass for the mean), so out may equal in.
 */
#include <math.h>
#include <string.h>

#include "vision_internal.h"

static float clamp01(float x)
{
    return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x;
}

static tm_status check_color(const char *fn, float *out, const float *in, int c, int h, int w,
                             float factor, int signed_factor)
{
    size_t n;
    tm_status s = tmv_check_io(fn, out, in, c, h, w, &n);
    if (s) return s;
    if (c != 1 && c != 3)
        return tm_fail(TM_ERR_INVALID, "%s: needs 1 or 3 channels, not %d", fn, c);
    if (!isfinite(factor) || (signed_factor ? fabsf(factor) > 0.5f : factor < 0.0f))
        return tm_fail(TM_ERR_INVALID, "%s: factor %g is out of range (%s)", fn, (double)factor,
                       signed_factor ? "-0.5..0.5" : ">= 0");
    return TM_OK;
}

/* out = clamp(f * x + (1 - f) * other, 0, 1) for other per pixel (NULL:
 * the scalar o). */
static void blend(float *out, const float *in, size_t n, float f, const float *other, float o)
{
    float g = 1.0f - f;
    for (size_t i = 0; i < n; i++)
        out[i] = clamp01(f * in[i] + g * (other ? other[i] : o));
}

tm_status tm_image_adjust_brightness(float *out, const float *in, int c, int h, int w, float factor)
{
    tm_status s = check_color("tm_image_adjust_brightness", out, in, c, h, w, factor, 0);
    if (s) return s;
    blend(out, in, (size_t)c * h * w, factor, NULL, 0.0f);
    return TM_OK;
}

tm_status tm_image_adjust_contrast(float *out, const float *in, int c, int h, int w, float factor)
{
    tm_status s = check_color("tm_image_adjust_contrast", out, in, c, h, w, factor, 0);
    if (s) return s;
    size_t hw = (size_t)h * w;
    double sum = 0.0;
    if (c == 1) {
        for (size_t i = 0; i < hw; i++)
            sum += in[i];
    } else {
        for (size_t i = 0; i < hw; i++)
            sum += tmv_luma_f32(in[i], in[hw + i], in[2 * hw + i]);
    }
    float mean = (float)(sum / (double)hw);
    blend(out, in, (size_t)c * hw, factor, NULL, mean);
    return TM_OK;
}

tm_status tm_image_adjust_saturation(float *out, const float *in, int c, int h, int w, float factor)
{
    tm_status s = check_color("tm_image_adjust_saturation", out, in, c, h, w, factor, 0);
    if (s) return s;
    size_t hw = (size_t)h * w;
    if (c == 1) {
        if (out != in) memcpy(out, in, hw * sizeof *out);
        return TM_OK;
    }
    float g = 1.0f - factor;
    for (size_t i = 0; i < hw; i++) {
        float r = in[i], gr = in[hw + i], b = in[2 * hw + i];
        float y = tmv_luma_f32(r, gr, b);
        out[i] = clamp01(factor * r + g * y);
        out[hw + i] = clamp01(factor * gr + g * y);
        out[2 * hw + i] = clamp01(factor * b + g * y);
    }
    return TM_OK;
}

tm_status tm_image_adjust_hue(float *out, const float *in, int c, int h, int w, float factor)
{
    tm_status s = check_color("tm_image_adjust_hue", out, in, c, h, w, factor, 1);
    if (s) return s;
    size_t hw = (size_t)h * w;
    if (c == 1) {
        if (out != in) memcpy(out, in, hw * sizeof *out);
        return TM_OK;
    }
    for (size_t i = 0; i < hw; i++) {
        float r = in[i], g = in[hw + i], b = in[2 * hw + i];
        /* RGB -> HSV (torchvision's _rgb2hsv) */
        float maxc = fmaxf(r, fmaxf(g, b)), minc = fminf(r, fminf(g, b));
        int eqc = maxc == minc;
        float cr = maxc - minc;
        float sat = cr / (eqc ? 1.0f : maxc);
        float crd = eqc ? 1.0f : cr;
        float rc = (maxc - r) / crd, gc = (maxc - g) / crd, bc = (maxc - b) / crd;
        float hr = maxc == r ? bc - gc : 0.0f;
        float hg = (maxc == g && maxc != r) ? 2.0f + rc - bc : 0.0f;
        float hb = (maxc != g && maxc != r) ? 4.0f + gc - rc : 0.0f;
        float hue = fmodf((hr + hg + hb) / 6.0f + 1.0f, 1.0f);
        float v = maxc;
        /* shift, wrapping into [0, 1) as Python's % */
        hue = hue + factor;
        hue = hue - floorf(hue);
        /* HSV -> RGB (torchvision's _hsv2rgb) */
        float fi = floorf(hue * 6.0f);
        float f = hue * 6.0f - fi;
        int sector = ((int)fi % 6 + 6) % 6;
        float p = clamp01(v * (1.0f - sat));
        float q = clamp01(v * (1.0f - sat * f));
        float t = clamp01(v * (1.0f - sat * (1.0f - f)));
        float o[3];
        switch (sector) {
        case 0: o[0] = v, o[1] = t, o[2] = p; break;
        case 1: o[0] = q, o[1] = v, o[2] = p; break;
        case 2: o[0] = p, o[1] = v, o[2] = t; break;
        case 3: o[0] = p, o[1] = q, o[2] = v; break;
        case 4: o[0] = t, o[1] = p, o[2] = v; break;
        default: o[0] = v, o[1] = p, o[2] = q; break;
        }
        out[i] = o[0];
        out[hw + i] = o[1];
        out[2 * hw + i] = o[2];
    }
    return TM_OK;
}
