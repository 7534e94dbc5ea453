/*
 * Seeded image augmentations. Each draw is the Philox generator's word at
 * (seed, stream = example index, counter = tag << 40 | k): tag separates
 * the augmentations, k numbers the draws inside one (fixed positions, so a
 * draw never depends on how many came before it). The result is a pure
 * function of (input, params, seed, index): any thread, any order.
 *
 * The sampling procedures are torchvision's (RandomResizedCrop.get_params,
 * RandomErasing.get_params, ColorJitter.get_params); only the generator
 * differs, so the same seed does not give torchvision's numbers.
 */
#include <math.h>
#include <string.h>

#include "vision_internal.h"

enum { TAG_CROP = 1, TAG_FLIP, TAG_ROTATE, TAG_JITTER, TAG_ERASE, TAG_ERASE_NOISE };

static uint32_t draw_u32(uint64_t seed, uint64_t index, uint64_t tag, uint64_t k)
{
    uint64_t ctr = tag << 40 | k;
    uint32_t o[4];
    tm_philox(seed, index, ctr >> 2, o);
    return o[ctr & 3];
}

/* Uniform in [0, 1) with 32 random bits. */
static double draw_unit(uint64_t seed, uint64_t index, uint64_t tag, uint64_t k)
{
    return draw_u32(seed, index, tag, k) * (1.0 / 4294967296.0);
}

static double draw_uniform(uint64_t seed, uint64_t index, uint64_t tag, uint64_t k, double lo,
                           double hi)
{
    return lo + (hi - lo) * draw_unit(seed, index, tag, k);
}

/* Uniform integer in [0, n), n >= 1 (multiply-shift: bias below 2^-32 * n). */
static int draw_int(uint64_t seed, uint64_t index, uint64_t tag, uint64_t k, int n)
{
    return (int)(((uint64_t)draw_u32(seed, index, tag, k) * (uint64_t)n) >> 32);
}

/* Python's round() to an int: halves to even. */
static int64_t round_even(double x)
{
    return (int64_t)nearbyint(x);
}

tm_image_aug_params tm_image_aug_default_params(void)
{
    tm_image_aug_params p;
    memset(&p, 0, sizeof p);
    p.crop_scale[0] = 0.08f, p.crop_scale[1] = 1.0f;
    p.crop_ratio[0] = 3.0f / 4.0f, p.crop_ratio[1] = 4.0f / 3.0f;
    p.crop_filter = TM_FILTER_BILINEAR;
    p.crop_antialias = 1;
    p.flip_p = 0.5f;
    p.rotate_degrees = 10.0f;
    p.rotate_fill = 0.0f;
    p.brightness = p.contrast = p.saturation = 0.4f;
    p.hue = 0.0f;
    p.erase_p = 0.5f;
    p.erase_scale[0] = 0.02f, p.erase_scale[1] = 0.33f;
    p.erase_ratio[0] = 0.3f, p.erase_ratio[1] = 3.3f;
    p.erase_noise = 0;
    p.erase_value = 0.0f;
    return p;
}

static int good_range(const float r[2], int positive)
{
    return isfinite(r[0]) && isfinite(r[1]) && r[0] <= r[1] && (positive ? r[0] > 0 : r[0] >= 0);
}

static int good_p(float p)
{
    return p >= 0.0f && p <= 1.0f;
}

static tm_status check_in(const char *fn, const float *in, int c, int h, int w)
{
    if (!in) return tm_fail(TM_ERR_INVALID, "%s: NULL input", fn);
    size_t n;
    return tmv_check_chw(fn, c, h, w, &n);
}

static void copy_if(float *out, const float *in, size_t n)
{
    if (out && out != in) memcpy(out, in, n * sizeof *out);
}

/* ------------------------------------------------- random resized crop */

static tm_image_box rrc_box(int h, int w, const tm_image_aug_params *p, uint64_t seed,
                            uint64_t index)
{
    double area = (double)h * w;
    double lr0 = log((double)p->crop_ratio[0]), lr1 = log((double)p->crop_ratio[1]);
    for (int t = 0; t < 10; t++) {
        uint64_t k = 4 * (uint64_t)t;
        double target =
            area * draw_uniform(seed, index, TAG_CROP, k, p->crop_scale[0], p->crop_scale[1]);
        double aspect = exp(draw_uniform(seed, index, TAG_CROP, k + 1, lr0, lr1));
        int64_t cw = round_even(sqrt(target * aspect));
        int64_t ch = round_even(sqrt(target / aspect));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            tm_image_box b;
            b.height = (int)ch;
            b.width = (int)cw;
            b.top = draw_int(seed, index, TAG_CROP, k + 2, h - b.height + 1);
            b.left = draw_int(seed, index, TAG_CROP, k + 3, w - b.width + 1);
            return b;
        }
    }
    /* the centred box of the nearest allowed aspect ratio */
    double in_ratio = (double)w / h;
    int64_t cw = w, ch = h;
    if (in_ratio < p->crop_ratio[0])
        ch = round_even(w / (double)p->crop_ratio[0]);
    else if (in_ratio > p->crop_ratio[1])
        cw = round_even(h * (double)p->crop_ratio[1]);
    if (ch < 1) ch = 1;
    if (ch > h) ch = h;
    if (cw < 1) cw = 1;
    if (cw > w) cw = w;
    tm_image_box b = {(int)((h - ch) / 2), (int)((w - cw) / 2), (int)ch, (int)cw};
    return b;
}

tm_status tm_image_random_resized_crop(float *out, tm_image_box *box, const float *in, int c, int h,
                                       int w, int out_h, int out_w, tm_image_aug_params p,
                                       uint64_t seed, uint64_t index)
{
    const char *fn = "tm_image_random_resized_crop";
    tm_status s = check_in(fn, in, c, h, w);
    if (s) return s;
    if (!good_range(p.crop_scale, 1) || !good_range(p.crop_ratio, 1))
        return tm_fail(TM_ERR_INVALID, "%s: bad scale (%g, %g) or ratio (%g, %g)", fn,
                       (double)p.crop_scale[0], (double)p.crop_scale[1], (double)p.crop_ratio[0],
                       (double)p.crop_ratio[1]);
    size_t n;
    if ((s = tmv_check_chw(fn, c, out_h, out_w, &n))) return s;
    tm_image_box b = rrc_box(h, w, &p, seed, index);
    if (box) *box = b;
    if (!out) return TM_OK;
    return tm_image_resized_crop(out, in, c, h, w, b, out_h, out_w, p.crop_filter,
                                 p.crop_antialias);
}

/* ----------------------------------------------------------------- flip */

tm_status tm_image_random_hflip(float *out, int *flipped, const float *in, int c, int h, int w,
                                tm_image_aug_params p, uint64_t seed, uint64_t index)
{
    const char *fn = "tm_image_random_hflip";
    tm_status s = check_in(fn, in, c, h, w);
    if (s) return s;
    if (!good_p(p.flip_p))
        return tm_fail(TM_ERR_INVALID, "%s: bad probability %g", fn, (double)p.flip_p);
    int f = draw_unit(seed, index, TAG_FLIP, 0) < p.flip_p;
    if (flipped) *flipped = f;
    if (!out) return TM_OK;
    if (f) return tm_image_hflip(out, in, c, h, w);
    copy_if(out, in, (size_t)c * h * w);
    return TM_OK;
}

/* ------------------------------------------------------------- rotation */

tm_status tm_image_random_rotate(float *out, float *angle, const float *in, int c, int h, int w,
                                 tm_image_aug_params p, uint64_t seed, uint64_t index)
{
    const char *fn = "tm_image_random_rotate";
    tm_status s = check_in(fn, in, c, h, w);
    if (s) return s;
    if (!(p.rotate_degrees >= 0.0f) || !isfinite(p.rotate_degrees) || !isfinite(p.rotate_fill))
        return tm_fail(TM_ERR_INVALID, "%s: bad degrees %g or fill %g", fn,
                       (double)p.rotate_degrees, (double)p.rotate_fill);
    float a = (float)draw_uniform(seed, index, TAG_ROTATE, 0, -(double)p.rotate_degrees,
                                  (double)p.rotate_degrees);
    if (angle) *angle = a;
    if (!out) return TM_OK;
    float *fill = tm_alloc((size_t)c * sizeof *fill);
    if (!fill) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    for (int i = 0; i < c; i++)
        fill[i] = p.rotate_fill;
    s = tm_image_rotate(out, in, c, h, w, a, fill);
    tm_free(fill);
    return s;
}

/* --------------------------------------------------------- colour jitter */

tm_status tm_image_color_jitter(float *out, tm_color_jitter *drawn, const float *in, int c, int h,
                                int w, tm_image_aug_params p, uint64_t seed, uint64_t index)
{
    const char *fn = "tm_image_color_jitter";
    tm_status s = check_in(fn, in, c, h, w);
    if (s) return s;
    if (c != 1 && c != 3)
        return tm_fail(TM_ERR_INVALID, "%s: needs 1 or 3 channels, not %d", fn, c);
    if (!(p.brightness >= 0) || !(p.contrast >= 0) || !(p.saturation >= 0) || !(p.hue >= 0) ||
        p.hue > 0.5f || !isfinite(p.brightness) || !isfinite(p.contrast) || !isfinite(p.saturation))
        return tm_fail(TM_ERR_INVALID, "%s: bad strengths b %g c %g s %g h %g", fn,
                       (double)p.brightness, (double)p.contrast, (double)p.saturation,
                       (double)p.hue);
    tm_color_jitter j;
    /* the order: Fisher-Yates over draws 0..2 */
    for (int i = 0; i < 4; i++)
        j.order[i] = i;
    for (int i = 3; i > 0; i--) {
        int r = draw_int(seed, index, TAG_JITTER, (uint64_t)(3 - i), i + 1);
        int t = j.order[i];
        j.order[i] = j.order[r];
        j.order[r] = t;
    }
    float strength[3] = {p.brightness, p.contrast, p.saturation};
    float *factor[3] = {&j.brightness, &j.contrast, &j.saturation};
    for (int i = 0; i < 3; i++) {
        double lo = 1.0 - strength[i] > 0.0 ? 1.0 - strength[i] : 0.0, hi = 1.0 + strength[i];
        double u = draw_uniform(seed, index, TAG_JITTER, 3 + (uint64_t)i, lo, hi);
        *factor[i] = strength[i] > 0 ? (float)u : 1.0f;
    }
    double u = draw_uniform(seed, index, TAG_JITTER, 6, -(double)p.hue, (double)p.hue);
    j.hue = p.hue > 0 ? (float)u : 0.0f;
    if (drawn) *drawn = j;
    if (!out) return TM_OK;
    copy_if(out, in, (size_t)c * h * w);
    for (int k = 0; k < 4; k++) {
        switch (j.order[k]) {
        case 0:
            if (p.brightness > 0) s = tm_image_adjust_brightness(out, out, c, h, w, j.brightness);
            break;
        case 1:
            if (p.contrast > 0) s = tm_image_adjust_contrast(out, out, c, h, w, j.contrast);
            break;
        case 2:
            if (p.saturation > 0) s = tm_image_adjust_saturation(out, out, c, h, w, j.saturation);
            break;
        default:
            if (p.hue > 0) s = tm_image_adjust_hue(out, out, c, h, w, j.hue);
            break;
        }
        if (s) return s;
    }
    return TM_OK;
}

/* ------------------------------------------------------- random erasing */

tm_status tm_image_random_erase(float *out, tm_image_box *box, const float *in, int c, int h, int w,
                                tm_image_aug_params p, uint64_t seed, uint64_t index)
{
    const char *fn = "tm_image_random_erase";
    tm_status s = check_in(fn, in, c, h, w);
    if (s) return s;
    if (!good_p(p.erase_p) || !good_range(p.erase_scale, 1) || !good_range(p.erase_ratio, 1) ||
        !isfinite(p.erase_value))
        return tm_fail(TM_ERR_INVALID, "%s: bad p %g, scale (%g, %g) or ratio (%g, %g)", fn,
                       (double)p.erase_p, (double)p.erase_scale[0], (double)p.erase_scale[1],
                       (double)p.erase_ratio[0], (double)p.erase_ratio[1]);
    tm_image_box b = {0, 0, 0, 0};
    if (draw_unit(seed, index, TAG_ERASE, 0) < p.erase_p) {
        double area = (double)h * w;
        double lr0 = log((double)p.erase_ratio[0]), lr1 = log((double)p.erase_ratio[1]);
        for (int t = 0; t < 10; t++) {
            uint64_t k = 1 + 4 * (uint64_t)t;
            double ea =
                area * draw_uniform(seed, index, TAG_ERASE, k, p.erase_scale[0], p.erase_scale[1]);
            double aspect = exp(draw_uniform(seed, index, TAG_ERASE, k + 1, lr0, lr1));
            int64_t eh = round_even(sqrt(ea * aspect));
            int64_t ew = round_even(sqrt(ea / aspect));
            if (!(eh < h && ew < w)) continue;
            /* torchvision accepts an empty box here: nothing is erased */
            if (eh > 0 && ew > 0) {
                b.height = (int)eh;
                b.width = (int)ew;
                b.top = draw_int(seed, index, TAG_ERASE, k + 2, h - b.height + 1);
                b.left = draw_int(seed, index, TAG_ERASE, k + 3, w - b.width + 1);
            }
            break;
        }
    }
    if (box) *box = b;
    if (!out) return TM_OK;
    copy_if(out, in, (size_t)c * h * w);
    if (b.height == 0) return TM_OK;
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < b.height; y++) {
            float *row = out + ((size_t)ch * h + (size_t)(b.top + y)) * w + b.left;
            for (int x = 0; x < b.width; x++) {
                uint64_t k = ((uint64_t)ch * b.height + (uint64_t)y) * b.width + (uint64_t)x;
                row[x] = p.erase_noise
                             ? tm_rng_normal_at(seed, index, (uint64_t)TAG_ERASE_NOISE << 40 | k)
                             : p.erase_value;
            }
        }
    return TM_OK;
}
