/*
 * Resizing float CHW images the way torch.nn.functional.interpolate does
 * for torchvision's resize (align_corners=False), as two separable passes:
 * along each row first, then along each column (torch's order for the
 * antialiased kernels). Each pass is a table of taps per output index --
 * source indices and weights -- so every filter shares one loop.
 *
 * Antialiased (PIL's method, torch's _upsample_*_aa): output i covers the
 * source interval centred at c = scale * (i + 0.5), scale = in / out; the
 * filter is stretched by scale when shrinking (support = r * scale, r = 1
 * for the triangle, 2 for the cubic) and the taps are the source pixels j
 * in [int(c - support + 0.5), int(c + support + 0.5)), weighted by
 * filter((j - c + 0.5) / max(scale, 1)) and normalised to sum to 1, which
 * also handles the borders.
 *
 * Plain (torch's upsample_bilinear2d / upsample_bicubic2d): the source
 * coordinate is x = (i + 0.5) * scale - 0.5; bilinear clamps x at 0 and
 * uses the two neighbours; bicubic uses the four neighbours floor(x) - 1 ..
 * floor(x) + 2 with Keys' cubic (a = -0.75), indices clamped to the image.
 * Nearest: floor(i * scale) computed in single precision, as torch does.
 *
 * Weights are computed in double, sums are accumulated in double and each
 * pass stores floats, so results are within a few float ulps of torch's
 * float64 results (docs/vision.md gives the measured errors).
 */
#include <math.h>
#include <string.h>

#include "vision_internal.h"

typedef struct {
    int taps;   /* per output index */
    int *index; /* (out, taps) source indices, always valid */
    double *wt; /* (out, taps) weights */
} axis_table;

static double tri(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static double keys_cubic(double x, double a)
{
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

static void table_free(axis_table *t)
{
    tm_free(t->index);
    tm_free(t->wt);
    t->index = NULL;
    t->wt = NULL;
}

static tm_status table_alloc(axis_table *t, int out, int taps)
{
    size_t n;
    t->taps = taps;
    t->index = NULL;
    t->wt = NULL;
    if (!tm_mul_size((size_t)out, (size_t)taps, &n))
        return tm_fail(TM_ERR_NOMEM, "tm_image_resize: weight table overflows");
    t->index = tm_alloc(n * sizeof *t->index);
    t->wt = tm_alloc(n * sizeof *t->wt);
    if (!t->index || !t->wt) {
        table_free(t);
        return tm_fail(TM_ERR_NOMEM, "tm_image_resize: out of memory for the weight table");
    }
    return TM_OK;
}

static tm_status table_antialias(axis_table *t, int in, int out, tm_resize_filter filter)
{
    double scale = (double)in / (double)out;
    double radius = filter == TM_FILTER_BICUBIC ? 2.0 : 1.0;
    double support = scale >= 1.0 ? radius * scale : radius;
    double inv = scale >= 1.0 ? 1.0 / scale : 1.0;
    double taps_d = ceil(support) * 2.0 + 1.0;
    if (taps_d > (double)in + 2.0) taps_d = (double)in + 2.0; /* no more taps than pixels */
    tm_status s = table_alloc(t, out, (int)taps_d);
    if (s) return s;
    for (int i = 0; i < out; i++) {
        double center = scale * (i + 0.5);
        /* truncation toward zero, then clamping, as torch */
        int64_t lo = (int64_t)(center - support + 0.5);
        int64_t hi = (int64_t)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in) hi = in;
        int64_t n = hi - lo;
        if (n < 1) n = 1, lo = lo < in ? lo : in - 1; /* cannot happen; keeps indices valid */
        if (n > t->taps) n = t->taps;
        int *ix = t->index + (size_t)i * t->taps;
        double *wt = t->wt + (size_t)i * t->taps;
        double total = 0.0;
        for (int64_t j = 0; j < n; j++) {
            double x = ((double)(j + lo) - center + 0.5) * inv;
            double v = filter == TM_FILTER_BICUBIC ? keys_cubic(x, -0.5) : tri(x);
            ix[j] = (int)(lo + j);
            wt[j] = v;
            total += v;
        }
        for (int64_t j = 0; j < n; j++)
            if (total != 0.0) wt[j] /= total;
        for (int64_t j = n; j < t->taps; j++) {
            ix[j] = (int)lo;
            wt[j] = 0.0;
        }
    }
    return TM_OK;
}

static int clampi(int64_t v, int n)
{
    return v < 0 ? 0 : v >= n ? n - 1 : (int)v;
}

static tm_status table_plain(axis_table *t, int in, int out, tm_resize_filter filter)
{
    int taps = filter == TM_FILTER_BICUBIC ? 4 : filter == TM_FILTER_BILINEAR ? 2 : 1;
    tm_status s = table_alloc(t, out, taps);
    if (s) return s;
    double scale = (double)in / (double)out;
    float scale_f = (float)in / (float)out;
    for (int i = 0; i < out; i++) {
        int *ix = t->index + (size_t)i * taps;
        double *wt = t->wt + (size_t)i * taps;
        if (filter == TM_FILTER_NEAREST) {
            int64_t j = (int64_t)floorf((float)i * scale_f);
            if (in == out) j = i;
            ix[0] = clampi(j, in);
            wt[0] = 1.0;
        } else if (filter == TM_FILTER_BILINEAR) {
            double x = (i + 0.5) * scale - 0.5;
            if (x < 0) x = 0;
            int64_t j = (int64_t)x;
            double l = x - (double)j;
            ix[0] = clampi(j, in);
            ix[1] = clampi(j + (j < in - 1 ? 1 : 0), in);
            wt[0] = 1.0 - l;
            wt[1] = l;
        } else {
            double x = (i + 0.5) * scale - 0.5;
            double f = floor(x);
            double tt = x - f;
            int64_t j = (int64_t)f;
            for (int k = 0; k < 4; k++) {
                ix[k] = clampi(j - 1 + k, in);
                wt[k] = keys_cubic(tt - (k - 1), -0.75);
            }
        }
    }
    return TM_OK;
}

static tm_status make_table(axis_table *t, int in, int out, tm_resize_filter filter, int aa)
{
    if (aa && filter != TM_FILTER_NEAREST) return table_antialias(t, in, out, filter);
    return table_plain(t, in, out, filter);
}

/* out (c, h, ow) from in (c, h, w) along rows. */
static void pass_rows(float *out, const float *in, int c, int h, int w, int ow, const axis_table *t)
{
    for (size_t r = 0; r < (size_t)c * (size_t)h; r++) {
        const float *src = in + r * (size_t)w;
        float *dst = out + r * (size_t)ow;
        for (int i = 0; i < ow; i++) {
            const int *ix = t->index + (size_t)i * t->taps;
            const double *wt = t->wt + (size_t)i * t->taps;
            double acc = 0.0;
            for (int k = 0; k < t->taps; k++)
                acc += wt[k] * src[ix[k]];
            dst[i] = (float)acc;
        }
    }
}

/* out (c, oh, w) from in (c, h, w) along columns; acc holds w doubles. */
static void pass_cols(float *out, const float *in, int c, int h, int w, int oh, const axis_table *t,
                      double *acc)
{
    for (int ch = 0; ch < c; ch++) {
        const float *src = in + (size_t)ch * h * w;
        float *dst = out + (size_t)ch * oh * w;
        for (int i = 0; i < oh; i++) {
            const int *ix = t->index + (size_t)i * t->taps;
            const double *wt = t->wt + (size_t)i * t->taps;
            for (int x = 0; x < w; x++)
                acc[x] = 0.0;
            for (int k = 0; k < t->taps; k++) {
                if (wt[k] == 0.0) continue;
                const float *row = src + (size_t)ix[k] * w;
                double q = wt[k];
                for (int x = 0; x < w; x++)
                    acc[x] += q * row[x];
            }
            float *o = dst + (size_t)i * w;
            for (int x = 0; x < w; x++)
                o[x] = (float)acc[x];
        }
    }
}

tm_status tmv_resize(float *out, const float *in, int c, int h, int w, int out_h, int out_w,
                     tm_resize_filter filter, int antialias)
{
    size_t n_out = (size_t)c * out_h * out_w;
    if (h == out_h && w == out_w) {
        memcpy(out, in, n_out * sizeof *out);
        return TM_OK;
    }
    axis_table tx = {0, NULL, NULL}, ty = {0, NULL, NULL};
    float *tmp = NULL;
    double *acc = NULL;
    tm_status s = TM_OK;
    if (w != out_w) s = make_table(&tx, w, out_w, filter, antialias);
    if (!s && h != out_h) s = make_table(&ty, h, out_h, filter, antialias);
    if (s) goto done;
    if (w == out_w) {
        acc = tm_alloc((size_t)w * sizeof *acc);
        if (!acc) goto nomem;
        pass_cols(out, in, c, h, w, out_h, &ty, acc);
    } else if (h == out_h) {
        pass_rows(out, in, c, h, w, out_w, &tx);
    } else {
        tmp = tm_alloc((size_t)c * h * out_w * sizeof *tmp);
        acc = tm_alloc((size_t)out_w * sizeof *acc);
        if (!tmp || !acc) goto nomem;
        pass_rows(tmp, in, c, h, w, out_w, &tx);
        pass_cols(out, tmp, c, h, out_w, out_h, &ty, acc);
    }
    goto done;
nomem:
    s = tm_fail(TM_ERR_NOMEM, "tm_image_resize: out of memory");
done:
    table_free(&tx);
    table_free(&ty);
    tm_free(tmp);
    tm_free(acc);
    return s;
}

tm_status tm_image_resize(float *out, const float *in, int c, int h, int w, int out_h, int out_w,
                          tm_resize_filter filter, int antialias)
{
    size_t n;
    tm_status s = tmv_check_io("tm_image_resize", out, in, c, h, w, &n);
    if (s) return s;
    if ((s = tmv_check_chw("tm_image_resize", c, out_h, out_w, &n))) return s;
    if ((unsigned)filter >= TM_FILTER_COUNT)
        return tm_fail(TM_ERR_INVALID, "tm_image_resize: unknown filter %d", (int)filter);
    /* the intermediate (c, h, out_w) must fit too */
    if ((s = tmv_check_chw("tm_image_resize", c, h, out_w, &n))) return s;
    return tmv_resize(out, in, c, h, w, out_h, out_w, filter, antialias);
}

tm_status tm_image_resize_shorter_size(int *out_h, int *out_w, int h, int w, int size)
{
    if (!out_h || !out_w)
        return tm_fail(TM_ERR_INVALID, "tm_image_resize_shorter_size: NULL output");
    if (h <= 0 || w <= 0 || size <= 0)
        return tm_fail(TM_ERR_INVALID, "tm_image_resize_shorter_size: bad sizes %d x %d -> %d", h,
                       w, size);
    int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    /* Python's int(size * long / short): an exact product, a correctly
     * rounded division, truncation */
    double nl = (double)((int64_t)size * longer) / (double)shorter;
    if (nl >= 2147483648.0)
        return tm_fail(TM_ERR_INVALID, "tm_image_resize_shorter_size: %d x %d -> %d overflows", h,
                       w, size);
    int new_long = (int)nl;
    if (w <= h)
        *out_w = size, *out_h = new_long;
    else
        *out_h = size, *out_w = new_long;
    return TM_OK;
}
