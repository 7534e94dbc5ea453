/* SVG charts, HTML reports and heat-map pictures: documents are well
 * formed (a small XML checker: balanced tags, quoted attributes, escaped
 * text), hostile labels are escaped, numbers and names appear, NaN makes
 * gaps, the report embeds decodable PNGs and is written atomically; the
 * overlays against hand-computed pixels; errors. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval_test.h"
#include "trimodal/vision.h"

/* ------------------------------------------------ a small XML checker */

static int entity_ok(const char *p)
{
    static const char *ents[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&#"};
    for (int i = 0; i < 5; i++)
        if (!strncmp(p, ents[i], strlen(ents[i]))) return 1;
    return 0;
}

static int is_void(const char *name, size_t n)
{
    static const char *v[] = {"meta", "img", "br", "link", "input", "hr"};
    for (int i = 0; i < 6; i++)
        if (strlen(v[i]) == n && !strncmp(name, v[i], n)) return 1;
    return 0;
}

/* 1 when doc is well formed; html allows void elements and a doctype. */
static int well_formed(const char *doc, int html)
{
    const char *stack[256];
    size_t lens[256];
    int depth = 0, seen_root = 0;
    const char *p = doc;
    while (*p) {
        if (*p == '&') {
            if (!entity_ok(p)) {
                fprintf(stderr, "bare & at offset %ld\n", (long)(p - doc));
                return 0;
            }
            p++;
            continue;
        }
        if (*p != '<') {
            p++;
            continue;
        }
        if (!strncmp(p, "<!DOCTYPE", 9) && html) {
            p = strchr(p, '>');
            if (!p) return 0;
            p++;
            continue;
        }
        if (p[1] == '/') {
            const char *n = p + 2;
            size_t len = strcspn(n, "> \n");
            if (!depth || lens[depth - 1] != len || strncmp(stack[depth - 1], n, len)) {
                fprintf(stderr, "unbalanced </%.*s> at offset %ld\n", (int)len, n, (long)(p - doc));
                return 0;
            }
            depth--;
            p = strchr(n, '>');
            if (!p) return 0;
            p++;
            continue;
        }
        const char *n = p + 1;
        size_t len = strcspn(n, "/> \n");
        if (!len) return 0;
        const char *q = n + len;
        int self_close = 0;
        for (;;) { /* attributes */
            while (*q == ' ' || *q == '\n') q++;
            if (*q == '>') break;
            if (q[0] == '/' && q[1] == '>') {
                self_close = 1;
                q++;
                break;
            }
            size_t an = strcspn(q, "=> ");
            if (!an || q[an] != '=' || q[an + 1] != '"') {
                fprintf(stderr, "bad attribute at offset %ld\n", (long)(q - doc));
                return 0;
            }
            q += an + 2;
            while (*q && *q != '"') {
                if (*q == '<' || (*q == '&' && !entity_ok(q))) {
                    fprintf(stderr, "unescaped attribute text at offset %ld\n", (long)(q - doc));
                    return 0;
                }
                q++;
            }
            if (!*q) return 0;
            q++;
        }
        if (!self_close && !(html && is_void(n, len))) {
            if (depth == 256) return 0;
            if (!depth && seen_root) return 0; /* a second root */
            stack[depth] = n;
            lens[depth++] = len;
            seen_root = 1;
        }
        p = q + 1;
    }
    if (depth) fprintf(stderr, "%d unclosed elements\n", depth);
    return depth == 0 && seen_root;
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what)) n++;
    return n;
}

/* -------------------------------------------------------------- charts */

static const char *HOSTILE = "<script>alert('x')</script> & \"q\" \xff\x01";

static void test_lines(void)
{
    double x[6] = {0, 100, 200, 300, 400, 500};
    double loss[6] = {2.5, 1.2, NAN, 0.6, 0.41, 0.3};
    double lr[6] = {1e-4, 3e-4, 3e-4, 2e-4, 1e-4, 5e-5};
    tm_plot_series s[2] = {{"train <loss>", x, loss, 6}, {HOSTILE, x, lr, 6}};
    tm_plot_opts o = {"Loss & LR", "step", "value", 0, 0, 0, 0, NULL};
    char *svg = tm_plot_lines_svg(s, 2, &o);
    CHECK(svg != NULL);
    if (!svg) return;
    CHECK(!strncmp(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"", 39));
    CHECK(well_formed(svg, 0));
    CHECK(strstr(svg, "Loss &amp; LR") != NULL);
    CHECK(strstr(svg, "train &lt;loss&gt;") != NULL);
    CHECK(strstr(svg, "<script") == NULL);
    CHECK(strstr(svg, "&lt;script&gt;alert(&#39;x&#39;)") != NULL);
    CHECK(strstr(svg, "\xEF\xBF\xBD") != NULL); /* bad bytes replaced */
    /* the NaN splits the loss into two pieces: one polyline of 2 points,
     * one of 3; the lr series is one polyline */
    CHECK(count(svg, "<polyline") == 3);
    /* nice ticks: 0, 100, ..., 500 on x and 0, 0.5, ... 2.5 on y */
    CHECK(strstr(svg, ">500</text>") != NULL);
    CHECK(strstr(svg, ">2.5</text>") != NULL);
    CHECK(strstr(svg, ">step</text>") != NULL);
    tm_free(svg);
    /* log axis: decades, and y <= 0 skipped */
    double y2[4] = {1, 0.01, 0, 1e-5};
    tm_plot_series s2 = {"loss", NULL, y2, 4};
    o.log_y = 1;
    svg = tm_plot_lines_svg(&s2, 1, &o);
    CHECK(svg && well_formed(svg, 0));
    CHECK(svg && strstr(svg, ">1e-5</text>") && strstr(svg, ">0.01</text>") && strstr(svg, ">1</text>"));
    CHECK(svg && count(svg, "<polyline") == 1 && count(svg, "<circle") == 1);
    tm_free(svg);
    /* empty and all-NaN series still draw axes */
    double nan1[1] = {NAN};
    tm_plot_series s3[2] = {{"none", NULL, NULL, 0}, {"nan", NULL, nan1, 1}};
    svg = tm_plot_lines_svg(s3, 2, NULL);
    CHECK(svg && well_formed(svg, 0) && count(svg, "<polyline") == 0);
    tm_free(svg);
    /* errors */
    CHECK(tm_plot_lines_svg(s, 0, NULL) == NULL);
    o.value_format = "%s";
    CHECK(tm_plot_lines_svg(s, 2, &o) == NULL);
    CHECK(strstr(tm_last_error(), "value_format") != NULL);
    o.value_format = "%.3f%n";
    CHECK(tm_plot_lines_svg(s, 2, &o) == NULL);
    o.value_format = NULL;
    o.width = 50;
    CHECK(tm_plot_lines_svg(s, 2, &o) == NULL);
    tm_plot_series bad = {"b", NULL, NULL, 3};
    CHECK(tm_plot_lines_svg(&bad, 1, NULL) == NULL);
}

static void test_bars(void)
{
    const char *groups[3] = {"text", "image+audio", "all <3>"};
    const char *series[2] = {"accuracy", "F1"};
    double v[6] = {0.81, 0.79, 0.64, NAN, 0.9, -0.05};
    tm_plot_opts o = {"Ablation", NULL, "score", 0, 0, 0, 1, "%.2f"};
    char *svg = tm_plot_bars_svg(groups, 3, series, 2, v, &o);
    CHECK(svg && well_formed(svg, 0));
    if (!svg) return;
    CHECK(count(svg, "<rect") == 1 + 5 + 2); /* background, 5 bars, 2 legend keys */
    CHECK(strstr(svg, ">0.81</text>") && strstr(svg, ">-0.05</text>"));
    CHECK(strstr(svg, "all &lt;3&gt;") != NULL);
    tm_free(svg);
    CHECK(tm_plot_bars_svg(groups, 3, NULL, 2, v, NULL) == NULL);
    svg = tm_plot_bars_svg(NULL, 6, NULL, 1, v, NULL);
    CHECK(svg && well_formed(svg, 0));
    tm_free(svg);
}

static void test_heatmap(void)
{
    double cm[6] = {50, 3, 1, 4, 40, NAN};
    const char *rows[2] = {"cat", "dog & co"};
    tm_plot_opts o = {"Confusion", "predicted", "true", 0, 480, 360, 1, "%.0f"};
    char *svg = tm_plot_heatmap_svg(cm, 2, 3, rows, NULL, &o);
    CHECK(svg && well_formed(svg, 0));
    if (!svg) return;
    CHECK(strstr(svg, "dog &amp; co") != NULL);
    CHECK(strstr(svg, ">50</text>") && strstr(svg, ">40</text>"));
    CHECK(strstr(svg, "fill=\"#fde725\"") != NULL); /* the maximum: viridis' top */
    CHECK(strstr(svg, "fill=\"#440154\"") != NULL); /* the minimum */
    CHECK(strstr(svg, "fill=\"#c8c8c8\"") != NULL); /* NaN cell grey */
    CHECK(strstr(svg, "linearGradient") != NULL);
    tm_free(svg);
    CHECK(tm_plot_heatmap_svg(cm, 0, 3, NULL, NULL, NULL) == NULL);
}

/* -------------------------------------------------------------- report */

static size_t unbase64(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    unsigned v = 0;
    int bits = 0;
    for (; *s && *s != '"'; s++) {
        const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *k = strchr(tab, *s);
        if (*s == '=') break;
        if (!k) return 0;
        v = v << 6 | (unsigned)(k - tab);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap) return 0;
            out[n++] = (uint8_t)(v >> bits);
        }
    }
    return n;
}

static void test_report(void)
{
    tm_report *r;
    CHECK_OK(tm_report_new(&r, "Eval <run 1> & co"));
    CHECK_OK(tm_report_section(r, "Retrieval"));
    CHECK_OK(tm_report_paragraph(r, HOSTILE));
    const char *hdr[3] = {"metric", "text->image", "image->text"};
    const char *cells[6] = {"R@1", "0.52", "0.61", "<b>R@5</b>", NULL, "0.9"};
    CHECK_OK(tm_report_table(r, "Recall", 3, hdr, 2, cells));
    const char *cols[2] = {"acc", "f1"}, *rows[2] = {"text", "all"};
    double vals[4] = {0.123456, NAN, 1e-9, 42};
    CHECK_OK(tm_report_table_numbers(r, "Scores", 2, cols, 2, "subset", rows, vals, "%.3f"));
    double y[3] = {3, 2, 1};
    tm_plot_series s = {"loss", NULL, y, 3};
    char *svg = tm_plot_lines_svg(&s, 1, NULL);
    CHECK_OK(tm_report_svg(r, "Loss", svg));
    tm_free(svg);
    uint8_t px[4 * 3 * 3];
    for (int i = 0; i < 36; i++) px[i] = (uint8_t)(i * 7);
    CHECK_OK(tm_report_image(r, "Attention", px, 4, 3, 3, 8));
    char *html = tm_report_html(r);
    CHECK(html != NULL);
    if (html) {
        CHECK(!strncmp(html, "<!DOCTYPE html>", 15));
        CHECK(well_formed(html, 1));
        CHECK(strstr(html, "<title>Eval &lt;run 1&gt; &amp; co</title>") != NULL);
        CHECK(strstr(html, "<script") == NULL);
        CHECK(strstr(html, "&lt;b&gt;R@5&lt;/b&gt;") != NULL);
        CHECK(strstr(html, "<td class=\"num\">0.123</td>") != NULL);
        CHECK(strstr(html, "<td class=\"num\">&#8211;</td>") != NULL); /* NaN */
        CHECK(strstr(html, "<td class=\"num\">42.000</td>") != NULL);
        CHECK(strstr(html, "text-&gt;image") != NULL);
        CHECK(strstr(html, "src=\"http") == NULL && strstr(html, "href=") == NULL);
        CHECK(strstr(html, "width=\"32\" height=\"24\"") != NULL);
        /* the PNG decodes back to the same pixels */
        const char *b64 = strstr(html, "data:image/png;base64,");
        CHECK(b64 != NULL);
        if (b64) {
            uint8_t png[4096];
            size_t n = unbase64(b64 + 22, png, sizeof png);
            tm_image *img = NULL;
            CHECK(n > 8 && !memcmp(png, "\x89PNG", 4));
            CHECK_OK(tm_image_decode(&img, png, n, tm_image_decode_default_params()));
            CHECK(img && img->width == 4 && img->height == 3 && img->channels == 3 &&
                  !memcmp(img->data, px, 36));
            tm_image_free(img);
        }
        /* the SVG decodes back to a document with the chart */
        const char *sv = strstr(html, "data:image/svg+xml;base64,");
        CHECK(sv != NULL);
        if (sv) {
            char *doc = calloc(1, 1 << 16);
            size_t n = unbase64(sv + 26, (uint8_t *)doc, (1 << 16) - 1);
            CHECK(n > 100 && strstr(doc, "<polyline") && well_formed(doc, 0));
            free(doc);
        }
    }
    /* atomic write: the file appears whole, replacing the old one */
    char dir[] = "/tmp/tm_eval_report_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], bad[300];
    snprintf(path, sizeof path, "%s/report.html", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("old", f);
        fclose(f);
    }
    CHECK_OK(tm_report_write(r, path));
    char *back;
    size_t size;
    CHECK_OK(tm_read_file(path, 1 << 24, &back, &size));
    CHECK(html && size == strlen(html) && !memcmp(back, html, size));
    tm_free(back);
    snprintf(bad, sizeof bad, "%s/missing/report.html", dir);
    CHECK_STATUS(tm_report_write(r, bad), TM_ERR_IO);
    struct stat stt;
    CHECK(stat(bad, &stt) != 0);
    unlink(path);
    rmdir(dir);
    tm_free(html);
    /* errors */
    CHECK_STATUS(tm_report_svg(r, NULL, "not svg"), TM_ERR_INVALID);
    CHECK_STATUS(tm_report_image(r, NULL, px, 4, 3, 2, 1), TM_ERR_INVALID);
    CHECK_STATUS(tm_report_image(r, NULL, px, 0, 3, 3, 1), TM_ERR_INVALID);
    CHECK_STATUS(tm_report_table(r, NULL, 0, NULL, 0, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_report_table_numbers(r, NULL, 2, NULL, 1, NULL, NULL, vals, "%d"), TM_ERR_INVALID);
    CHECK_STATUS(tm_report_section(NULL, "x"), TM_ERR_INVALID);
    CHECK_STATUS(tm_report_write(r, ""), TM_ERR_INVALID);
    tm_report_free(r);
    tm_report_free(NULL);
    /* allocation failures leave a usable error, never a crash */
    for (long n = 1; n <= 8; n++) {
        tm_report *q = NULL;
        tm_alloc_fail_after(n);
        tm_status st = tm_report_new(&q, "t");
        if (!st) st = tm_report_paragraph(q, "some text that needs a buffer");
        if (!st) st = tm_report_image(q, "p", px, 4, 3, 3, 1);
        char *h = q && !st ? tm_report_html(q) : NULL;
        tm_alloc_fail_after(0);
        CHECK(st == TM_OK || st == TM_ERR_NOMEM);
        tm_free(h);
        tm_report_free(q);
    }
}

/* ------------------------------------------------------------- overlays */

static void test_colormaps(void)
{
    uint8_t c[3];
    tm_colormap_rgb(TM_CMAP_VIRIDIS, 0, c);
    CHECK(c[0] == 68 && c[1] == 1 && c[2] == 84);
    tm_colormap_rgb(TM_CMAP_VIRIDIS, 7, c); /* clamped */
    CHECK(c[0] == 253 && c[1] == 231 && c[2] == 37);
    tm_colormap_rgb(TM_CMAP_INFERNO, 0.5, c);
    CHECK(c[0] == 188 && c[1] == 55 && c[2] == 84);
    tm_colormap_rgb(TM_CMAP_GRAY, 0.5, c);
    CHECK(c[0] == 128 && c[1] == 128 && c[2] == 128);
    tm_colormap_rgb(TM_CMAP_JET, 0.5, c);
    CHECK(c[0] == 128 && c[1] == 255 && c[2] == 128);
    tm_colormap_rgb(TM_CMAP_JET, NAN, c);
    CHECK(c[0] == 128 && c[1] == 128 && c[2] == 128);
}

static void test_overlay(void)
{
    /* a 2 x 2 grid over a 4 x 4 grey picture */
    uint8_t img[4 * 4], out[4 * 4 * 3];
    memset(img, 100, sizeof img);
    float grid[4] = {0, 1, 2, 3};
    tm_heatmap_opts o = tm_heatmap_default_opts();
    o.alpha = 1;
    o.upsample = TM_UPSAMPLE_NEAREST;
    o.cmap = TM_CMAP_GRAY;
    CHECK_OK(tm_heatmap_overlay(out, img, 4, 4, 1, grid, 2, 2, &o));
    /* nearest: pixel (y, x) takes cell (y / 2, x / 2); values 0..3 -> 0..255 */
    CHECK(out[0] == 0 && out[(0 * 4 + 3) * 3] == 85 && out[(3 * 4 + 0) * 3] == 170 &&
          out[(3 * 4 + 3) * 3 + 2] == 255);
    o.upsample = TM_UPSAMPLE_BILINEAR;
    CHECK_OK(tm_heatmap_overlay(out, img, 4, 4, 1, grid, 2, 2, &o));
    /* bilinear, centres aligned: pixel x = 1 sits at source 0.25, so
     * value 0.25 on row 0 (edges clamp) */
    CHECK(out[(0 * 4 + 1) * 3] == (uint8_t)lround(0.25 / 3 * 255));
    CHECK(out[(1 * 4 + 1) * 3] == (uint8_t)lround((0.25 + 0.25 * 2) / 3 * 255));
    CHECK(out[0] == 0);
    /* alpha 0 leaves the picture; a NaN cell too */
    o.alpha = 0;
    CHECK_OK(tm_heatmap_overlay(out, img, 4, 4, 1, grid, 2, 2, &o));
    CHECK(out[5 * 3 + 1] == 100);
    o.alpha = 0.5f;
    grid[0] = NAN;
    o.upsample = TM_UPSAMPLE_NEAREST;
    CHECK_OK(tm_heatmap_overlay(out, img, 4, 4, 1, grid, 2, 2, &o));
    CHECK(out[0] == 100 && out[(1 * 4 + 1) * 3] == 100);
    /* fixed range */
    grid[0] = 0;
    o.vmin = 0;
    o.vmax = 6;
    o.alpha = 1;
    CHECK_OK(tm_heatmap_overlay(out, img, 4, 4, 1, grid, 2, 2, &o));
    CHECK(out[(3 * 4 + 3) * 3] == 128);
    /* errors */
    CHECK_STATUS(tm_heatmap_overlay(out, img, 4, 4, 2, grid, 2, 2, &o), TM_ERR_INVALID);
    o.alpha = 2;
    CHECK_STATUS(tm_heatmap_overlay(out, img, 4, 4, 1, grid, 2, 2, &o), TM_ERR_INVALID);
    CHECK_STATUS(tm_heatmap_overlay(out, img, 4, 4, 1, grid, 0, 2, NULL), TM_ERR_INVALID);
}

static void test_spectrogram(void)
{
    enum { M = 3, F = 4, S = 2 };
    float mel[M * F], w[2] = {0, 1};
    for (int m = 0; m < M; m++)
        for (int f = 0; f < F; f++) mel[m * F + f] = (float)m; /* low band darkest */
    uint8_t out[(M + S) * F * 3];
    tm_heatmap_opts o = tm_heatmap_default_opts();
    o.cmap = TM_CMAP_GRAY;
    o.upsample = TM_UPSAMPLE_NEAREST;
    o.alpha = 0;
    CHECK_OK(tm_spectrogram_heatstrip(out, mel, M, F, w, 2, S, &o));
    /* strip: frames 0, 1 take weight 0 (black), 2, 3 weight 1 (white) */
    CHECK(out[0] == 0 && out[3 * 3] == 255 && out[(1 * F + 3) * 3] == 255);
    /* bottom row = mel band 0 (darkest), top spectrogram row = band 2 */
    CHECK(out[((S + M - 1) * F + 0) * 3] == 0);
    CHECK(out[((S + 0) * F + 0) * 3] == 255);
    CHECK(out[((S + 1) * F + 2) * 3] == 128);
    o.alpha = 1; /* full tint: the spectrogram shows the weights */
    CHECK_OK(tm_spectrogram_heatstrip(out, mel, M, F, w, 2, S, &o));
    CHECK(out[((S + 1) * F + 3) * 3] == 255 && out[((S + 1) * F + 0) * 3] == 0);
    CHECK_STATUS(tm_spectrogram_heatstrip(out, mel, M, F, w, 2, 0, &o), TM_ERR_INVALID);
    CHECK_STATUS(tm_spectrogram_heatstrip(out, mel, M, F, w, 0, S, &o), TM_ERR_INVALID);
}

int main(void)
{
    test_lines();
    test_bars();
    test_heatmap();
    test_report();
    test_colormaps();
    test_overlay();
    test_spectrogram();
    return test_finish("test_report");
}
