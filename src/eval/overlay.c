/*
 * Colour maps and heat-map pictures: attention over an image, and a heat
 * strip over a log-mel spectrogram, as 8-bit RGB buffers.
 */
#include <math.h>
#include <string.h>

#include "eval_internal.h"

/* matplotlib's viridis and inferno sampled at 0, 0.1, ..., 1 and
 * interpolated linearly: within a few levels of the full tables. */
static const uint8_t viridis[11][3] = {{68, 1, 84},    {72, 36, 117},  {65, 68, 135},
                                       {53, 95, 141},  {42, 120, 142}, {33, 145, 140},
                                       {34, 168, 132}, {68, 190, 112}, {122, 209, 81},
                                       {189, 223, 38}, {253, 231, 37}};
static const uint8_t inferno[11][3] = {{0, 0, 4},      {22, 11, 57},   {66, 10, 104},
                                       {106, 23, 110}, {147, 38, 103}, {188, 55, 84},
                                       {221, 81, 58},  {243, 120, 25}, {252, 165, 10},
                                       {246, 215, 70}, {252, 255, 164}};

static uint8_t clamp_u8(double v)
{
    if (!(v > 0)) return 0;
    if (v >= 255) return 255;
    return (uint8_t)lround(v);
}

void tm_colormap_rgb(tm_colormap cmap, double t, uint8_t rgb[3])
{
    if (isnan(t)) {
        rgb[0] = rgb[1] = rgb[2] = 128;
        return;
    }
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    switch (cmap) {
    case TM_CMAP_GRAY: rgb[0] = rgb[1] = rgb[2] = clamp_u8(t * 255); return;
    case TM_CMAP_JET: {
        double r = 1.5 - fabs(4 * t - 3), g = 1.5 - fabs(4 * t - 2), b = 1.5 - fabs(4 * t - 1);
        rgb[0] = clamp_u8(255 * (r < 0 ? 0 : r > 1 ? 1 : r));
        rgb[1] = clamp_u8(255 * (g < 0 ? 0 : g > 1 ? 1 : g));
        rgb[2] = clamp_u8(255 * (b < 0 ? 0 : b > 1 ? 1 : b));
        return;
    }
    default: {
        const uint8_t(*tab)[3] = cmap == TM_CMAP_INFERNO ? inferno : viridis;
        double u = t * 10;
        int i = (int)u;
        if (i >= 10) i = 9;
        double f = u - i;
        for (int c = 0; c < 3; c++) rgb[c] = clamp_u8(tab[i][c] + f * (tab[i + 1][c] - tab[i][c]));
        return;
    }
    }
}

tm_heatmap_opts tm_heatmap_default_opts(void)
{
    tm_heatmap_opts o;
    memset(&o, 0, sizeof o);
    o.cmap = TM_CMAP_VIRIDIS;
    o.upsample = TM_UPSAMPLE_BILINEAR;
    o.alpha = 0.5f;
    return o;
}

static tm_status check_opts(const char *fn, const tm_heatmap_opts *o)
{
    if (o->cmap < TM_CMAP_VIRIDIS || o->cmap > TM_CMAP_GRAY)
        return tm_fail(TM_ERR_INVALID, "%s: unknown colour map %d", fn, (int)o->cmap);
    if (o->upsample != TM_UPSAMPLE_NEAREST && o->upsample != TM_UPSAMPLE_BILINEAR)
        return tm_fail(TM_ERR_INVALID, "%s: unknown upsampling %d", fn, (int)o->upsample);
    if (!(o->alpha >= 0 && o->alpha <= 1))
        return tm_fail(TM_ERR_INVALID, "%s: alpha = %g, must be in [0, 1]", fn, (double)o->alpha);
    if (!isfinite(o->vmin) || !isfinite(o->vmax) || o->vmin > o->vmax)
        return tm_fail(TM_ERR_INVALID, "%s: vmin = %g, vmax = %g: need finite vmin <= vmax", fn,
                       (double)o->vmin, (double)o->vmax);
    return TM_OK;
}

/* The colour range of n values under o: [lo, hi] with hi > lo, or
 * lo == hi for a constant (or empty) input. */
static void value_range(const float *v, int64_t n, const tm_heatmap_opts *o, double *lo, double *hi)
{
    if (o->vmin != o->vmax) {
        *lo = o->vmin;
        *hi = o->vmax;
        return;
    }
    double mn = INFINITY, mx = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i])) {
            if (v[i] < mn) mn = v[i];
            if (v[i] > mx) mx = v[i];
        }
    if (!(mn <= mx)) mn = mx = 0;
    *lo = mn;
    *hi = mx;
}

static double unit(double v, double lo, double hi)
{
    return hi > lo ? (v - lo) / (hi - lo) : 0.5;
}

/* Source coordinate of destination pixel i of n over m source cells,
 * centres aligned; split into cell i0, i1 and weight f of i1. */
static void src_coord(int i, int n, int m, tm_upsample mode, int *i0, int *i1, double *f)
{
    if (mode == TM_UPSAMPLE_NEAREST) {
        int k = (int)floor((i + 0.5) * m / n);
        if (k >= m) k = m - 1;
        *i0 = *i1 = k;
        *f = 0;
        return;
    }
    double s = (i + 0.5) * m / n - 0.5;
    if (s < 0) s = 0;
    if (s > m - 1) s = m - 1;
    int k = (int)floor(s);
    if (k > m - 2) k = m - 2 < 0 ? 0 : m - 2;
    *i0 = k;
    *i1 = m > 1 ? k + 1 : k;
    *f = m > 1 ? s - k : 0;
}

tm_status tm_heatmap_overlay(uint8_t *out, const uint8_t *image, int width, int height,
                             int channels, const float *grid, int grid_w, int grid_h,
                             const tm_heatmap_opts *opts)
{
    static const char *fn = "tm_heatmap_overlay";
    tm_heatmap_opts o = opts ? *opts : tm_heatmap_default_opts();
    tm_status st = check_opts(fn, &o);
    if (st) return st;
    if (!out || !image || !grid)
        return tm_fail(TM_ERR_INVALID, "%s: out, image and grid must not be NULL", fn);
    if (width < 1 || height < 1 || width > (1 << 15) || height > (1 << 15))
        return tm_fail(TM_ERR_INVALID, "%s: picture %d x %d, each side must be 1..32768", fn, width,
                       height);
    if (channels != 1 && channels != 3 && channels != 4)
        return tm_fail(TM_ERR_INVALID, "%s: %d channels, must be 1, 3 or 4", fn, channels);
    if (grid_w < 1 || grid_h < 1 || grid_w > 4096 || grid_h > 4096)
        return tm_fail(TM_ERR_INVALID, "%s: grid %d x %d, each side must be 1..4096", fn, grid_w,
                       grid_h);
    double lo, hi;
    value_range(grid, (int64_t)grid_w * grid_h, &o, &lo, &hi);
    for (int y = 0; y < height; y++) {
        int y0, y1;
        double fy;
        src_coord(y, height, grid_h, o.upsample, &y0, &y1, &fy);
        for (int x = 0; x < width; x++) {
            int x0, x1;
            double fx;
            src_coord(x, width, grid_w, o.upsample, &x0, &x1, &fx);
            const uint8_t *px = image + ((size_t)y * width + x) * channels;
            uint8_t *q = out + ((size_t)y * width + x) * 3;
            uint8_t base[3] = {px[0], channels >= 3 ? px[1] : px[0], channels >= 3 ? px[2] : px[0]};
            double a = grid[y0 * grid_w + x0], b = grid[y0 * grid_w + x1];
            double c = grid[y1 * grid_w + x0], d = grid[y1 * grid_w + x1];
            double v = (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy;
            if (!isfinite(v)) {
                memcpy(q, base, 3);
                continue;
            }
            uint8_t col[3];
            tm_colormap_rgb(o.cmap, unit(v, lo, hi), col);
            for (int k = 0; k < 3; k++) q[k] = clamp_u8((1 - o.alpha) * base[k] + o.alpha * col[k]);
        }
    }
    return TM_OK;
}

tm_status tm_spectrogram_heatstrip(uint8_t *out, const float *mel, int n_mels, int n_frames,
                                   const float *weights, int n_weights, int strip_height,
                                   const tm_heatmap_opts *opts)
{
    static const char *fn = "tm_spectrogram_heatstrip";
    tm_heatmap_opts o = opts ? *opts : tm_heatmap_default_opts();
    tm_status st = check_opts(fn, &o);
    if (st) return st;
    if (!out || !mel || !weights)
        return tm_fail(TM_ERR_INVALID, "%s: out, mel and weights must not be NULL", fn);
    if (n_mels < 1 || n_frames < 1 || n_mels > 4096 || n_frames > (1 << 20))
        return tm_fail(TM_ERR_INVALID, "%s: %d mels x %d frames: need 1..4096 x 1..1048576", fn,
                       n_mels, n_frames);
    if (n_weights < 1 || n_weights > (1 << 20) || strip_height < 1 || strip_height > 1024)
        return tm_fail(TM_ERR_INVALID, "%s: %d weights, strip height %d: need 1..1048576 and 1..1024",
                       fn, n_weights, strip_height);
    double mlo, mhi;
    tm_heatmap_opts auto_range = o;
    auto_range.vmin = auto_range.vmax = 0;
    value_range(mel, (int64_t)n_mels * n_frames, &auto_range, &mlo, &mhi);
    double wlo, whi;
    value_range(weights, n_weights, &o, &wlo, &whi);
    const size_t row = (size_t)n_frames * 3;
    for (int f = 0; f < n_frames; f++) {
        int i0, i1;
        double fr;
        src_coord(f, n_frames, n_weights, o.upsample, &i0, &i1, &fr);
        double w = weights[i0] * (1 - fr) + weights[i1] * fr;
        int has = isfinite(w);
        uint8_t col[3] = {128, 128, 128};
        if (has) tm_colormap_rgb(o.cmap, unit(w, wlo, whi), col);
        for (int y = 0; y < strip_height; y++) memcpy(out + y * row + (size_t)f * 3, col, 3);
        for (int m = 0; m < n_mels; m++) {
            double v = mel[(size_t)m * n_frames + f];
            double g = isfinite(v) ? 255.0 * unit(v, mlo, mhi) : 0;
            if (mhi == mlo) g = 0;
            uint8_t *q = out + (size_t)(strip_height + n_mels - 1 - m) * row + (size_t)f * 3;
            for (int k = 0; k < 3; k++)
                q[k] = has ? clamp_u8((1 - o.alpha) * g + o.alpha * col[k]) : clamp_u8(g);
        }
    }
    return TM_OK;
}
