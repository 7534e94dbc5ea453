/*
 * SVG charts: lines, grouped bars, heat maps. Each returns one standalone
 * SVG document as a string.
 *
 * Layout: a plot rectangle inside margins that leave room for the title
 * (top), tick labels and axis labels (left, bottom) and the legend or the
 * colour bar (right). Ticks are "nice" numbers (1, 2 or 5 times a power of
 * ten, about six of them); a log axis ticks whole decades. Every piece of
 * text goes through tme_buf_escape, so labels cannot break the XML.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "eval_internal.h"

#define DEFAULT_W 640
#define DEFAULT_H 400
#define FONT_W 7.0 /* rough width of one character at 12 px, for layout */

/* matplotlib's tab10: distinguishable series colours */
static const char *const palette[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

typedef struct {
    int w, h;
    double left, right, top, bottom; /* margins */
    const char *fmt;
} frame;

typedef struct {
    double lo, hi;   /* axis range (log10 units on a log axis) */
    double step;     /* tick spacing in those units */
    int log;
} axis;

static tm_status setup(const char *fn, const tm_plot_opts *o, tm_plot_opts *out)
{
    tm_plot_opts d;
    memset(&d, 0, sizeof d);
    if (o) d = *o;
    if (d.width == 0) d.width = DEFAULT_W;
    if (d.height == 0) d.height = DEFAULT_H;
    if (d.width < 160 || d.height < 120 || d.width > 20000 || d.height > 20000)
        return tm_fail(TM_ERR_INVALID, "%s: size %d x %d, must be 160..20000 x 120..20000 pixels",
                       fn, d.width, d.height);
    if (!d.value_format) d.value_format = "%.3g";
    if (!tme_check_format(d.value_format))
        return tm_fail(TM_ERR_INVALID,
                       "%s: value_format \"%s\" must hold exactly one %%f, %%e or %%g conversion "
                       "(width and precision of at most 2 digits)",
                       fn, d.value_format);
    *out = d;
    return TM_OK;
}

/* A nice step for about `target` intervals over span > 0. */
static double nice_step(double span, int target)
{
    double raw = span / target;
    double mag = pow(10.0, floor(log10(raw)));
    double r = raw / mag;
    double m = r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10;
    return m * mag;
}

/* Axis over finite [mn, mx] (mn > mx when there is no data). */
static axis make_axis(double mn, double mx, int log_axis, int include_zero)
{
    axis a;
    a.log = log_axis;
    if (log_axis) {
        if (!(mn <= mx)) {
            mn = 1;
            mx = 10;
        }
        a.lo = floor(log10(mn));
        a.hi = ceil(log10(mx));
        if (a.hi <= a.lo) a.hi = a.lo + 1;
        double dec = a.hi - a.lo;
        a.step = dec <= 8 ? 1 : ceil(dec / 8);
        return a;
    }
    if (!(mn <= mx)) {
        mn = 0;
        mx = 1;
    }
    if (include_zero) {
        if (mn > 0) mn = 0;
        if (mx < 0) mx = 0;
    }
    if (mx == mn) {
        double d = mn == 0 ? 1 : fabs(mn) * 0.1;
        mn -= d;
        mx += d;
    }
    a.step = nice_step(mx - mn, 6);
    a.lo = floor(mn / a.step) * a.step;
    a.hi = ceil(mx / a.step) * a.step;
    if (a.hi <= a.lo) a.hi = a.lo + a.step;
    return a;
}

/* Position of value v (data units) along [p0, p1] pixels. */
static double to_px(const axis *a, double v, double p0, double p1)
{
    double u = a->log ? log10(v) : v;
    return p0 + (u - a->lo) / (a->hi - a->lo) * (p1 - p0);
}

static void tick_label(tme_buf *b, const axis *a, double u)
{
    if (a->log) {
        int e = (int)lround(u);
        if (e >= -3 && e <= 4) tme_buf_number(b, "%g", pow(10.0, e));
        else tme_buf_printf(b, "1e%d", e);
    } else {
        /* u is k * step: round away the binary noise of 0.1 * 3 */
        double v = fabs(u) < a->step * 1e-9 ? 0.0 : u;
        tme_buf_number(b, "%.6g", v);
    }
}

static void svg_open(tme_buf *b, const frame *f, const char *title)
{
    tme_buf_printf(b,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                   "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
                   f->w, f->h, f->w, f->h);
    tme_buf_printf(b, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", f->w, f->h);
    if (title && *title) {
        tme_buf_printf(b, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" "
                          "font-weight=\"bold\">",
                       f->w / 2.0);
        tme_buf_escape(b, title);
        tme_buf_puts(b, "</text>\n");
    }
}

/* Frame lines, grid, y ticks and axis labels of the plot rectangle. */
static void draw_y_axis(tme_buf *b, const frame *f, const axis *ya, const char *ylabel)
{
    double x0 = f->left, x1 = f->w - f->right, y0 = f->h - f->bottom, y1 = f->top;
    int n = 0;
    for (double u = ya->lo; u <= ya->hi + ya->step * 1e-6 && n < 200; u += ya->step, n++) {
        double uu = ya->lo + n * ya->step;
        double y = y0 + (uu - ya->lo) / (ya->hi - ya->lo) * (y1 - y0);
        tme_buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n",
                       x0, y, x1, y);
        tme_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", x0 - 6, y + 4);
        tick_label(b, ya, uu);
        tme_buf_puts(b, "</text>\n");
    }
    tme_buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", x0,
                   y0, x0, y1);
    tme_buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", x0,
                   y0, x1, y0);
    if (ylabel && *ylabel) {
        double cy = (y0 + y1) / 2;
        tme_buf_printf(b, "<text x=\"16\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 16 %.1f)\">",
                       cy, cy);
        tme_buf_escape(b, ylabel);
        tme_buf_puts(b, "</text>\n");
    }
}

static void draw_xlabel(tme_buf *b, const frame *f, const char *xlabel)
{
    if (!xlabel || !*xlabel) return;
    tme_buf_printf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">",
                   (f->left + f->w - f->right) / 2, f->h - 8);
    tme_buf_escape(b, xlabel);
    tme_buf_puts(b, "</text>\n");
}

static double legend_width(const char *const *names, int n)
{
    size_t longest = 0;
    for (int i = 0; i < n; i++) {
        size_t l = names && names[i] ? strlen(names[i]) : 0;
        if (l > longest) longest = l;
    }
    if (longest > 40) longest = 40;
    return longest ? 48 + longest * FONT_W : 0;
}

static void draw_legend(tme_buf *b, const frame *f, const char *const *names, int n, int lines)
{
    double x = f->w - f->right + 12, y = f->top + 8;
    for (int i = 0; i < n; i++) {
        const char *name = names ? names[i] : NULL;
        if (!name || !*name) continue;
        const char *col = palette[i % 10];
        if (lines)
            tme_buf_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n",
                           x, y, x + 18, y, col);
        else
            tme_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"10\" fill=\"%s\"/>\n", x,
                           y - 5, col);
        tme_buf_printf(b, "<text x=\"%.1f\" y=\"%.1f\">", x + 24, y + 4);
        tme_buf_escape(b, name);
        tme_buf_puts(b, "</text>\n");
        y += 18;
    }
}

static char *finish(tme_buf *b, const char *fn)
{
    tme_buf_puts(b, "</svg>\n");
    char *s = tme_buf_take(b);
    if (!s) {
        tme_buf_free(b);
        tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    }
    return s;
}

/* ---------------------------------------------------------------- lines */

static int point_ok(const tm_plot_series *s, size_t i, int log_y)
{
    double x = s->x ? s->x[i] : (double)i, y = s->y[i];
    return isfinite(x) && isfinite(y) && (!log_y || y > 0);
}

char *tm_plot_lines_svg(const tm_plot_series *series, int n_series, const tm_plot_opts *opts)
{
    static const char *fn = "tm_plot_lines_svg";
    tm_plot_opts o;
    if (setup(fn, opts, &o)) return NULL;
    if (!series || n_series < 1 || n_series > 1000) {
        tm_fail(TM_ERR_INVALID, "%s: n_series = %d, must be 1..1000", fn, n_series);
        return NULL;
    }
    double xmn = INFINITY, xmx = -INFINITY, ymn = INFINITY, ymx = -INFINITY;
    const char *names[1000];
    for (int k = 0; k < n_series; k++) {
        const tm_plot_series *s = &series[k];
        names[k] = s->name;
        if (s->n && !s->y) {
            tm_fail(TM_ERR_INVALID, "%s: series %d has %zu points but y is NULL", fn, k, s->n);
            return NULL;
        }
        for (size_t i = 0; i < s->n; i++) {
            if (!point_ok(s, i, o.log_y)) continue;
            double x = s->x ? s->x[i] : (double)i, y = s->y[i];
            if (x < xmn) xmn = x;
            if (x > xmx) xmx = x;
            if (y < ymn) ymn = y;
            if (y > ymx) ymx = y;
        }
    }
    frame f = {o.width, o.height, 64, 16, o.title && *o.title ? 36 : 16, 46, o.value_format};
    double lw = legend_width(names, n_series);
    if (lw > 0) f.right = lw > o.width / 3.0 ? o.width / 3.0 : lw;
    axis xa = make_axis(xmn, xmx, 0, 0), ya = make_axis(ymn, ymx, o.log_y, 0);
    tme_buf b = {0};
    svg_open(&b, &f, o.title);
    draw_y_axis(&b, &f, &ya, o.ylabel);
    double x0 = f.left, x1 = f.w - f.right, y0 = f.h - f.bottom, y1 = f.top;
    for (int n = 0; n <= 200; n++) {
        double u = xa.lo + n * xa.step;
        if (u > xa.hi + xa.step * 1e-6) break;
        double x = to_px(&xa, u, x0, x1);
        tme_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n",
                       x, y0, x, y0 + 4);
        tme_buf_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", x, y0 + 17);
        tick_label(&b, &xa, u);
        tme_buf_puts(&b, "</text>\n");
    }
    draw_xlabel(&b, &f, o.xlabel);
    for (int k = 0; k < n_series; k++) {
        const tm_plot_series *s = &series[k];
        const char *col = palette[k % 10];
        size_t i = 0;
        while (i < s->n) {
            while (i < s->n && !point_ok(s, i, o.log_y)) i++;
            size_t j = i;
            while (j < s->n && point_ok(s, j, o.log_y)) j++;
            if (j == i) break;
            if (j - i == 1) {
                double x = s->x ? s->x[i] : (double)i;
                tme_buf_printf(&b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\"/>\n",
                               to_px(&xa, x, x0, x1), to_px(&ya, s->y[i], y0, y1), col);
            } else {
                tme_buf_printf(&b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" points=\"", col);
                for (size_t q = i; q < j; q++) {
                    double x = s->x ? s->x[q] : (double)q;
                    tme_buf_printf(&b, "%s%.2f,%.2f", q > i ? " " : "", to_px(&xa, x, x0, x1),
                                   to_px(&ya, s->y[q], y0, y1));
                }
                tme_buf_puts(&b, "\"/>\n");
            }
            i = j;
        }
    }
    draw_legend(&b, &f, names, n_series, 1);
    return finish(&b, fn);
}

/* ----------------------------------------------------------------- bars */

char *tm_plot_bars_svg(const char *const *group_names, int n_groups,
                       const char *const *series_names, int n_series, const double *values,
                       const tm_plot_opts *opts)
{
    static const char *fn = "tm_plot_bars_svg";
    tm_plot_opts o;
    if (setup(fn, opts, &o)) return NULL;
    if (n_groups < 1 || n_series < 1 || n_groups > 10000 || n_series > 1000 || !values) {
        tm_fail(TM_ERR_INVALID, "%s: %d groups x %d series (values %s): need 1..10000 x 1..1000",
                fn, n_groups, n_series, values ? "given" : "NULL");
        return NULL;
    }
    if (n_series > 1 && !series_names) {
        tm_fail(TM_ERR_INVALID, "%s: %d series need series_names for the legend", fn, n_series);
        return NULL;
    }
    double mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < n_groups * n_series; i++) {
        double v = values[i];
        if (!isfinite(v) || (o.log_y && v <= 0)) continue;
        if (v < mn) mn = v;
        if (v > mx) mx = v;
    }
    size_t longest = 0;
    for (int g = 0; g < n_groups && group_names; g++)
        if (group_names[g] && strlen(group_names[g]) > longest) longest = strlen(group_names[g]);
    frame f = {o.width, o.height, 64, 16, o.title && *o.title ? 36 : 16, 46, o.value_format};
    axis ya = make_axis(mn, mx, o.log_y, 1);
    double x0 = f.left, x1 = f.w - f.right;
    double gw0 = (x1 - x0) / n_groups;
    int rotate = longest * FONT_W > gw0 * 0.95;
    if (rotate) {
        double extra = (longest > 30 ? 30 : longest) * FONT_W * 0.7;
        f.bottom += extra;
    }
    if (n_series > 1) {
        double lw = legend_width(series_names, n_series);
        f.right = lw > o.width / 3.0 ? o.width / 3.0 : lw;
    }
    x1 = f.w - f.right;
    double y0 = f.h - f.bottom, y1 = f.top;
    double gw = (x1 - x0) / n_groups, bw = gw * 0.8 / n_series;
    tme_buf b = {0};
    svg_open(&b, &f, o.title);
    draw_y_axis(&b, &f, &ya, o.ylabel);
    double base = o.log_y ? y0 : to_px(&ya, 0.0, y0, y1);
    for (int g = 0; g < n_groups; g++) {
        double gx = x0 + g * gw + gw * 0.1;
        for (int s = 0; s < n_series; s++) {
            double v = values[g * n_series + s];
            if (!isfinite(v) || (o.log_y && v <= 0)) continue;
            double y = to_px(&ya, v, y0, y1);
            double top = y < base ? y : base, hgt = fabs(base - y);
            tme_buf_printf(&b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"><title>",
                           gx + s * bw, top, bw * 0.92, hgt, palette[s % 10]);
            tme_buf_number(&b, o.value_format, v);
            tme_buf_puts(&b, "</title></rect>\n");
            if (o.annotate) {
                tme_buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"10\">",
                               gx + s * bw + bw * 0.46, v >= 0 || o.log_y ? top - 3 : top + hgt + 11);
                tme_buf_number(&b, o.value_format, v);
                tme_buf_puts(&b, "</text>\n");
            }
        }
        const char *name = group_names ? group_names[g] : NULL;
        double cx = x0 + g * gw + gw / 2;
        if (rotate)
            tme_buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\" transform=\"rotate(-35 %.2f %.2f)\">",
                           cx, y0 + 14, cx, y0 + 14);
        else
            tme_buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">", cx, y0 + 17);
        if (name) tme_buf_escape(&b, name);
        else tme_buf_printf(&b, "%d", g);
        tme_buf_puts(&b, "</text>\n");
    }
    if (!o.log_y)
        tme_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.2f\" x2=\"%.1f\" y2=\"%.2f\" stroke=\"black\"/>\n",
                       x0, base, x1, base);
    draw_xlabel(&b, &f, o.xlabel);
    if (n_series > 1) draw_legend(&b, &f, series_names, n_series, 0);
    return finish(&b, fn);
}

/* ------------------------------------------------------------- heat map */

char *tm_plot_heatmap_svg(const double *values, int rows, int cols,
                          const char *const *row_labels, const char *const *col_labels,
                          const tm_plot_opts *opts)
{
    static const char *fn = "tm_plot_heatmap_svg";
    tm_plot_opts o;
    if (setup(fn, opts, &o)) return NULL;
    if (!values || rows < 1 || cols < 1 || rows > 2000 || cols > 2000) {
        tm_fail(TM_ERR_INVALID, "%s: %d x %d cells (values %s): need 1..2000 each", fn, rows, cols,
                values ? "given" : "NULL");
        return NULL;
    }
    double mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < rows * cols; i++)
        if (isfinite(values[i])) {
            if (values[i] < mn) mn = values[i];
            if (values[i] > mx) mx = values[i];
        }
    size_t lrow = 0, lcol = 0;
    char num[32];
    for (int r = 0; r < rows; r++) {
        size_t l = row_labels && row_labels[r] ? strlen(row_labels[r])
                                               : (size_t)snprintf(num, sizeof num, "%d", r);
        if (l > lrow) lrow = l;
    }
    for (int c = 0; c < cols; c++) {
        size_t l = col_labels && col_labels[c] ? strlen(col_labels[c])
                                               : (size_t)snprintf(num, sizeof num, "%d", c);
        if (l > lcol) lcol = l;
    }
    if (lrow > 30) lrow = 30;
    if (lcol > 30) lcol = 30;
    frame f = {o.width, o.height, 0, 90, o.title && *o.title ? 36 : 16, 0, o.value_format};
    f.left = 14 + lrow * FONT_W + (o.ylabel && *o.ylabel ? 22 : 0);
    f.bottom = 24 + lcol * FONT_W * 0.75 + (o.xlabel && *o.xlabel ? 18 : 0);
    if (f.left > o.width / 3.0) f.left = o.width / 3.0;
    if (f.bottom > o.height / 3.0) f.bottom = o.height / 3.0;
    double x0 = f.left, x1 = f.w - f.right, y0 = f.top, y1 = f.h - f.bottom;
    double cw = (x1 - x0) / cols, ch = (y1 - y0) / rows;
    tme_buf b = {0};
    svg_open(&b, &f, o.title);
    int fs = ch < cw ? (int)(ch * 0.4) : (int)(cw * 0.3);
    if (fs > 12) fs = 12;
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            double v = values[r * cols + c];
            uint8_t rgb[3] = {200, 200, 200};
            double t = 0.5;
            if (isfinite(v)) {
                t = mx > mn ? (v - mn) / (mx - mn) : 0.5;
                tm_colormap_rgb(TM_CMAP_VIRIDIS, t, rgb);
            }
            tme_buf_printf(&b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#%02x%02x%02x\"><title>",
                           x0 + c * cw, y0 + r * ch, cw + 0.3, ch + 0.3, rgb[0], rgb[1], rgb[2]);
            tme_buf_number(&b, o.value_format, v);
            tme_buf_puts(&b, "</title></rect>\n");
            if (o.annotate && fs >= 5) {
                double lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
                tme_buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"%d\" fill=\"%s\">",
                               x0 + (c + 0.5) * cw, y0 + (r + 0.5) * ch + fs * 0.35, fs,
                               lum < 128 ? "white" : "black");
                tme_buf_number(&b, o.value_format, v);
                tme_buf_puts(&b, "</text>\n");
            }
        }
    }
    int lfs = ch < 12 ? (ch < 6 ? 0 : (int)ch) : 12;
    for (int r = 0; r < rows && lfs; r++) {
        tme_buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\" font-size=\"%d\">", x0 - 5,
                       y0 + (r + 0.5) * ch + lfs * 0.35, lfs);
        if (row_labels && row_labels[r]) tme_buf_escape(&b, row_labels[r]);
        else tme_buf_printf(&b, "%d", r);
        tme_buf_puts(&b, "</text>\n");
    }
    int cfs = cw < 12 ? (cw < 6 ? 0 : (int)cw) : 12;
    for (int c = 0; c < cols && cfs; c++) {
        double cx = x0 + (c + 0.5) * cw;
        tme_buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\" font-size=\"%d\" transform=\"rotate(-45 %.2f %.2f)\">",
                       cx, y1 + 12, cfs, cx, y1 + 12);
        if (col_labels && col_labels[c]) tme_buf_escape(&b, col_labels[c]);
        else tme_buf_printf(&b, "%d", c);
        tme_buf_puts(&b, "</text>\n");
    }
    if (o.ylabel && *o.ylabel) {
        double cy = (y0 + y1) / 2;
        tme_buf_printf(&b, "<text x=\"14\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 14 %.1f)\">",
                       cy, cy);
        tme_buf_escape(&b, o.ylabel);
        tme_buf_puts(&b, "</text>\n");
    }
    if (o.xlabel && *o.xlabel) {
        tme_buf_printf(&b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", (x0 + x1) / 2, f.h - 6);
        tme_buf_escape(&b, o.xlabel);
        tme_buf_puts(&b, "</text>\n");
    }
    /* colour bar: a vertical gradient, max at the top */
    double bx = x1 + 18, bwid = 16;
    tme_buf_puts(&b, "<defs><linearGradient id=\"cbar\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">");
    for (int k = 0; k <= 10; k++) {
        uint8_t rgb[3];
        tm_colormap_rgb(TM_CMAP_VIRIDIS, k / 10.0, rgb);
        tme_buf_printf(&b, "<stop offset=\"%d%%\" stop-color=\"#%02x%02x%02x\"/>", k * 10, rgb[0], rgb[1],
                       rgb[2]);
    }
    tme_buf_puts(&b, "</linearGradient></defs>\n");
    tme_buf_printf(&b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"url(#cbar)\" stroke=\"black\" stroke-width=\"0.5\"/>\n",
                   bx, y0, bwid, y1 - y0);
    if (mn <= mx) {
        for (int k = 0; k <= 4; k++) {
            double v = mn + (mx - mn) * k / 4.0, y = y1 - (y1 - y0) * k / 4.0;
            if (mx == mn && k) break;
            tme_buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"10\">", bx + bwid + 4, y + 4);
            tme_buf_number(&b, o.value_format, v);
            tme_buf_puts(&b, "</text>\n");
        }
    }
    return finish(&b, fn);
}
