/*
 * HTML reports: one self-contained file (inline CSS, pictures as data:
 * URIs, no scripts, no external resources), built piece by piece and
 * written atomically. All text is escaped; SVG goes in as a base64 image,
 * so a chart cannot run anything in the page.
 */
#include <math.h>
#include <string.h>

#include <stb/stb_image_write.h>

#include "eval_internal.h"
#include "trimodal/io.h"

struct tm_report {
    char *title;
    tme_buf body;
    int figures;
};

static const char *css =
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "h1{border-bottom:2px solid #444;padding-bottom:.2em}"
    "h2{margin-top:1.6em;border-bottom:1px solid #bbb}"
    "table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .6em}"
    "th{background:#f0f0f0}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "caption{caption-side:top;text-align:left;font-weight:bold;padding:.3em 0}"
    "figure{margin:1em 0}"
    "figcaption{color:#555;font-size:.9em}"
    "img.px{image-rendering:pixelated}"
    "p{line-height:1.45}";

tm_status tm_report_new(tm_report **out, const char *title)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_report_new: out must not be NULL");
    *out = NULL;
    tm_report *r = tm_calloc(1, sizeof *r);
    if (!r) return tm_fail(TM_ERR_NOMEM, "tm_report_new: out of memory");
    const char *t = title ? title : "";
    size_t n = strlen(t);
    r->title = tm_alloc(n + 1);
    if (!r->title) {
        tm_free(r);
        return tm_fail(TM_ERR_NOMEM, "tm_report_new: out of memory");
    }
    memcpy(r->title, t, n + 1);
    *out = r;
    return TM_OK;
}

void tm_report_free(tm_report *r)
{
    if (!r) return;
    tm_free(r->title);
    tme_buf_free(&r->body);
    tm_free(r);
}

static tm_status check(const tm_report *r, const char *fn)
{
    if (!r) return tm_fail(TM_ERR_INVALID, "%s: report must not be NULL", fn);
    if (r->body.failed) return tm_fail(TM_ERR_NOMEM, "%s: an earlier append ran out of memory", fn);
    return TM_OK;
}

static tm_status done(tm_report *r, const char *fn)
{
    return r->body.failed ? tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn) : TM_OK;
}

tm_status tm_report_section(tm_report *r, const char *heading)
{
    tm_status st = check(r, "tm_report_section");
    if (st) return st;
    tme_buf_puts(&r->body, "<h2>");
    tme_buf_escape(&r->body, heading);
    tme_buf_puts(&r->body, "</h2>\n");
    return done(r, "tm_report_section");
}

tm_status tm_report_paragraph(tm_report *r, const char *text)
{
    tm_status st = check(r, "tm_report_paragraph");
    if (st) return st;
    tme_buf_puts(&r->body, "<p>");
    tme_buf_escape(&r->body, text);
    tme_buf_puts(&r->body, "</p>\n");
    return done(r, "tm_report_paragraph");
}

static tm_status check_table(const char *fn, int n_cols, int n_rows)
{
    if (n_cols < 1 || n_rows < 0 || n_cols > 10000 || n_rows > 10000000)
        return tm_fail(TM_ERR_INVALID, "%s: %d rows x %d columns: need 0.. rows and 1..10000 columns",
                       fn, n_rows, n_cols);
    return TM_OK;
}

static void caption(tme_buf *b, const char *cap)
{
    if (!cap || !*cap) return;
    tme_buf_puts(b, "<caption>");
    tme_buf_escape(b, cap);
    tme_buf_puts(b, "</caption>");
}

tm_status tm_report_table(tm_report *r, const char *cap, int n_cols, const char *const *header,
                          int n_rows, const char *const *cells)
{
    static const char *fn = "tm_report_table";
    tm_status st = check(r, fn);
    if (st || (st = check_table(fn, n_cols, n_rows))) return st;
    if (n_rows > 0 && !cells) return tm_fail(TM_ERR_INVALID, "%s: %d rows but cells is NULL", fn, n_rows);
    tme_buf *b = &r->body;
    tme_buf_puts(b, "<table>");
    caption(b, cap);
    if (header) {
        tme_buf_puts(b, "\n<tr>");
        for (int c = 0; c < n_cols; c++) {
            tme_buf_puts(b, "<th>");
            tme_buf_escape(b, header[c]);
            tme_buf_puts(b, "</th>");
        }
        tme_buf_puts(b, "</tr>");
    }
    for (int i = 0; i < n_rows; i++) {
        tme_buf_puts(b, "\n<tr>");
        for (int c = 0; c < n_cols; c++) {
            tme_buf_puts(b, "<td>");
            tme_buf_escape(b, cells[(size_t)i * n_cols + c]);
            tme_buf_puts(b, "</td>");
        }
        tme_buf_puts(b, "</tr>");
    }
    tme_buf_puts(b, "\n</table>\n");
    return done(r, fn);
}

tm_status tm_report_table_numbers(tm_report *r, const char *cap, int n_cols,
                                  const char *const *col_headers, int n_rows,
                                  const char *row_label_header, const char *const *row_labels,
                                  const double *values, const char *format)
{
    static const char *fn = "tm_report_table_numbers";
    tm_status st = check(r, fn);
    if (st || (st = check_table(fn, n_cols, n_rows))) return st;
    if (n_rows > 0 && !values) return tm_fail(TM_ERR_INVALID, "%s: %d rows but values is NULL", fn, n_rows);
    const char *fmt = format ? format : "%.4g";
    if (!tme_check_format(fmt))
        return tm_fail(TM_ERR_INVALID,
                       "%s: format \"%s\" must hold exactly one %%f, %%e or %%g conversion", fn, fmt);
    tme_buf *b = &r->body;
    tme_buf_puts(b, "<table>");
    caption(b, cap);
    if (col_headers) {
        tme_buf_puts(b, "\n<tr>");
        if (row_labels) {
            tme_buf_puts(b, "<th>");
            tme_buf_escape(b, row_label_header);
            tme_buf_puts(b, "</th>");
        }
        for (int c = 0; c < n_cols; c++) {
            tme_buf_puts(b, "<th>");
            tme_buf_escape(b, col_headers[c]);
            tme_buf_puts(b, "</th>");
        }
        tme_buf_puts(b, "</tr>");
    }
    for (int i = 0; i < n_rows; i++) {
        tme_buf_puts(b, "\n<tr>");
        if (row_labels) {
            tme_buf_puts(b, "<th>");
            tme_buf_escape(b, row_labels[i]);
            tme_buf_puts(b, "</th>");
        }
        for (int c = 0; c < n_cols; c++) {
            double v = values[(size_t)i * n_cols + c];
            tme_buf_puts(b, "<td class=\"num\">");
            if (isnan(v)) tme_buf_puts(b, "&#8211;");
            else tme_buf_number(b, fmt, v);
            tme_buf_puts(b, "</td>");
        }
        tme_buf_puts(b, "</tr>");
    }
    tme_buf_puts(b, "\n</table>\n");
    return done(r, fn);
}

static void figure_open(tme_buf *b)
{
    tme_buf_puts(b, "<figure>");
}

static void figure_close(tme_buf *b, const char *cap)
{
    if (cap && *cap) {
        tme_buf_puts(b, "<figcaption>");
        tme_buf_escape(b, cap);
        tme_buf_puts(b, "</figcaption>");
    }
    tme_buf_puts(b, "</figure>\n");
}

tm_status tm_report_svg(tm_report *r, const char *cap, const char *svg)
{
    static const char *fn = "tm_report_svg";
    tm_status st = check(r, fn);
    if (st) return st;
    if (!svg || !strstr(svg, "<svg"))
        return tm_fail(TM_ERR_INVALID, "%s: the text is not an SVG document (no <svg element)", fn);
    tme_buf *b = &r->body;
    figure_open(b);
    tme_buf_puts(b, "<img alt=\"");
    tme_buf_escape(b, cap ? cap : "chart");
    tme_buf_puts(b, "\" src=\"data:image/svg+xml;base64,");
    tme_buf_base64(b, svg, strlen(svg));
    tme_buf_puts(b, "\">");
    figure_close(b, cap);
    r->figures++;
    return done(r, fn);
}

typedef struct {
    uint8_t *data;
    size_t size, cap;
    int failed;
} png_sink;

static void sink(void *ctx, void *data, int size)
{
    png_sink *s = ctx;
    if (s->failed || size <= 0) return;
    size_t need;
    if (!tm_add_size(s->size, (size_t)size, &need)) {
        s->failed = 1;
        return;
    }
    if (need > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < need)
            if (!tm_mul_size(cap, 2, &cap)) {
                s->failed = 1;
                return;
            }
        uint8_t *p = tm_alloc(cap);
        if (!p) {
            s->failed = 1;
            return;
        }
        if (s->size) memcpy(p, s->data, s->size);
        tm_free(s->data);
        s->data = p;
        s->cap = cap;
    }
    memcpy(s->data + s->size, data, (size_t)size);
    s->size = need;
}

tm_status tm_png_encode(const uint8_t *pixels, int width, int height, int channels,
                        uint8_t **png, size_t *png_size)
{
    static const char *fn = "tm_png_encode";
    if (!pixels || !png || !png_size)
        return tm_fail(TM_ERR_INVALID, "%s: pixels, png and png_size must not be NULL", fn);
    if (width < 1 || height < 1 || width > (1 << 15) || height > (1 << 15))
        return tm_fail(TM_ERR_INVALID, "%s: picture %d x %d, each side must be 1..32768", fn, width,
                       height);
    if (channels < 1 || channels > 4)
        return tm_fail(TM_ERR_INVALID, "%s: %d channels, must be 1..4", fn, channels);
    png_sink s = {NULL, 0, 0, 0};
    int ok = stbi_write_png_to_func(sink, &s, width, height, channels, pixels, width * channels);
    if (!ok || s.failed) {
        tm_free(s.data);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory encoding a %d x %d PNG", fn, width, height);
    }
    *png = s.data;
    *png_size = s.size;
    return TM_OK;
}

tm_status tm_report_image(tm_report *r, const char *cap, const uint8_t *pixels, int width,
                          int height, int channels, int scale)
{
    static const char *fn = "tm_report_image";
    tm_status st = check(r, fn);
    if (st) return st;
    if (channels != 1 && channels != 3 && channels != 4)
        return tm_fail(TM_ERR_INVALID, "%s: %d channels, must be 1, 3 or 4", fn, channels);
    if (scale < 1 || scale > 64)
        return tm_fail(TM_ERR_INVALID, "%s: scale = %d, must be 1..64", fn, scale);
    uint8_t *png;
    size_t n;
    if ((st = tm_png_encode(pixels, width, height, channels, &png, &n))) return st;
    tme_buf *b = &r->body;
    figure_open(b);
    tme_buf_printf(b, "<img%s width=\"%d\" height=\"%d\" alt=\"", scale > 1 ? " class=\"px\"" : "",
                   width * scale, height * scale);
    tme_buf_escape(b, cap ? cap : "picture");
    tme_buf_puts(b, "\" src=\"data:image/png;base64,");
    tme_buf_base64(b, png, n);
    tme_buf_puts(b, "\">");
    figure_close(b, cap);
    tm_free(png);
    r->figures++;
    return done(r, fn);
}

char *tm_report_html(const tm_report *r)
{
    if (check(r, "tm_report_html")) return NULL;
    tme_buf b = {0};
    tme_buf_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                     "<meta name=\"generator\" content=\"trimodal ");
    tme_buf_escape(&b, tm_version());
    tme_buf_puts(&b, "\">\n<title>");
    tme_buf_escape(&b, r->title);
    tme_buf_puts(&b, "</title>\n<style>");
    tme_buf_puts(&b, css);
    tme_buf_puts(&b, "</style>\n</head>\n<body>\n<h1>");
    tme_buf_escape(&b, r->title);
    tme_buf_puts(&b, "</h1>\n");
    if (r->body.len) tme_buf_put(&b, r->body.data, r->body.len);
    tme_buf_puts(&b, "</body>\n</html>\n");
    char *s = tme_buf_take(&b);
    if (!s) {
        tme_buf_free(&b);
        tm_fail(TM_ERR_NOMEM, "tm_report_html: out of memory");
    }
    return s;
}

tm_status tm_report_write(const tm_report *r, const char *path)
{
    tm_status st = check(r, "tm_report_write");
    if (st) return st;
    if (!path || !*path) return tm_fail(TM_ERR_INVALID, "tm_report_write: empty path");
    char *html = tm_report_html(r);
    if (!html) return TM_ERR_NOMEM;
    st = tm_write_file_atomic(path, html, strlen(html));
    tm_free(html);
    return st;
}
