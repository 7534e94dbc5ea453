/* Image decoding (every format against PIL's pixels), colour conversions,
 * limits, bad input, IDX files, PNG writing. Vectors come from
 * scripts/gen_vision_vectors.py. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/vision.h"

static tm_safetensors *refs;

static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static const char *img_path(const char *name)
{
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s", test_data_path("vision/img/"));
    strncat(buf, name, sizeof buf - strlen(buf) - 1);
    return buf;
}

/* Decodes img/name with `channels` and compares with the reference tensor
 * (0..255 floats) within max_abs (0 for lossless formats). Returns the
 * largest difference seen. */
static int compare_decode(const char *file, int channels, tm_alpha_mode alpha, const char *ref,
                          int max_abs, tm_image_format want_fmt)
{
    tm_image_decode_params p = tm_image_decode_default_params();
    p.channels = channels;
    p.alpha = alpha;
    tm_image *img = NULL;
    tm_status s = tm_image_load(&img, img_path(file), p);
    CHECK_OK(s);
    if (s) return -1;
    CHECK(img->format == want_fmt);
    tm_tensor t;
    CHECK_OK(tm_safetensors_get(refs, ref, &t));
    int rc = t.ndim == 3 ? (int)t.shape[2] : 1;
    CHECK(t.shape[0] == img->height && t.shape[1] == img->width);
    CHECK(rc == img->channels);
    int worst = 0;
    if (t.shape[0] == img->height && t.shape[1] == img->width && rc == img->channels) {
        const float *r = t.data;
        size_t n = (size_t)img->width * img->height * img->channels;
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)img->data[i] - (int)r[i]);
            if (d > worst) worst = d;
        }
    }
    if (worst > max_abs)
        fprintf(stderr, "decode %s as %s: max abs diff %d > %d\n", file, ref, worst, max_abs);
    CHECK(worst <= max_abs);
    tm_image_free(img);
    return worst;
}

static void test_formats(void)
{
    const int D = TM_ALPHA_DROP;
    compare_decode("rgb.png", 3, D, "rgb", 0, TM_IMAGE_FORMAT_PNG);
    compare_decode("rgb.png", 1, D, "gray_from_rgb", 0, TM_IMAGE_FORMAT_PNG);
    compare_decode("rgba.png", 3, D, "rgba_drop", 0, TM_IMAGE_FORMAT_PNG);
    compare_decode("gray.png", 1, D, "gray", 0, TM_IMAGE_FORMAT_PNG);
    compare_decode("gray.png", 0, D, "gray", 0, TM_IMAGE_FORMAT_PNG);
    compare_decode("pal.png", 3, D, "pal", 0, TM_IMAGE_FORMAT_PNG);
    compare_decode("interlaced.png", 3, D, "interlaced", 0, TM_IMAGE_FORMAT_PNG);
    compare_decode("gray16.png", 1, D, "gray16_top8", 0, TM_IMAGE_FORMAT_PNG);
    compare_decode("rgb.bmp", 3, D, "bmp_rgb", 0, TM_IMAGE_FORMAT_BMP);
    compare_decode("gray.bmp", 1, D, "bmp_gray", 0, TM_IMAGE_FORMAT_BMP);
    compare_decode("rgb.ppm", 3, D, "ppm", 0, TM_IMAGE_FORMAT_PNM);
    compare_decode("rgb.ppm", 0, D, "ppm", 0, TM_IMAGE_FORMAT_PNM);
    compare_decode("gray.pgm", 1, D, "pgm", 0, TM_IMAGE_FORMAT_PNM);
    compare_decode("gray1000.pgm", 1, D, "pgm1000", 0, TM_IMAGE_FORMAT_PNM);
    compare_decode("rgb.gif", 3, D, "gif", 0, TM_IMAGE_FORMAT_GIF);
    compare_decode("anim.gif", 3, D, "gif_anim_first", 0, TM_IMAGE_FORMAT_GIF);
    /* JPEG: stb's IDCT and chroma upsampling differ from libjpeg-turbo's
     * (PIL) by a few levels; the bounds are the measured maxima plus a
     * margin (docs/vision.md) */
    int q90 = compare_decode("rgb_q90.jpg", 3, D, "jpeg_q90", 4, TM_IMAGE_FORMAT_JPEG);
    int q444 = compare_decode("rgb_444.jpg", 3, D, "jpeg_444", 3, TM_IMAGE_FORMAT_JPEG);
    int prog = compare_decode("rgb_prog.jpg", 3, D, "jpeg_prog", 4, TM_IMAGE_FORMAT_JPEG);
    int gj = compare_decode("gray.jpg", 1, D, "jpeg_gray", 2, TM_IMAGE_FORMAT_JPEG);
    printf("jpeg vs PIL max abs diff: 4:2:0 q90 %d, 4:4:4 q95 %d, progressive %d, gray %d\n", q90,
           q444, prog, gj);

    /* gray files keep 1 channel with channels = 0, colour ones 3 */
    tm_image *img = NULL;
    tm_image_decode_params p = tm_image_decode_default_params();
    p.channels = 0;
    CHECK_OK(tm_image_load(&img, img_path("rgba.png"), p));
    CHECK(img && img->channels == 3 && img->file_channels == 4);
    tm_image_free(img);
    CHECK_OK(tm_image_load(&img, img_path("la.png"), p));
    CHECK(img && img->channels == 1 && img->file_channels == 2);
    tm_image_free(img);
}

static void test_alpha_and_convert(void)
{
    tm_tensor rgba, la;
    CHECK_OK(tm_safetensors_get(refs, "rgba", &rgba));
    CHECK_OK(tm_safetensors_get(refs, "la", &la));
    tm_image_decode_params p = tm_image_decode_default_params();
    p.alpha = TM_ALPHA_COMPOSITE;
    p.background[0] = 10, p.background[1] = 200, p.background[2] = 90;
    tm_image *img = NULL;
    CHECK_OK(tm_image_load(&img, img_path("rgba.png"), p));
    int bad = 0;
    const float *r = rgba.data;
    for (int i = 0; img && i < img->width * img->height; i++) {
        unsigned a = (unsigned)r[4 * i + 3];
        for (int k = 0; k < 3; k++) {
            unsigned want = ((unsigned)r[4 * i + k] * a + p.background[k] * (255 - a) + 127) / 255;
            if (img->data[3 * i + k] != want) bad++;
        }
    }
    CHECK(bad == 0);
    tm_image_free(img);

    /* gray + alpha composited over white, kept gray */
    p = tm_image_decode_default_params();
    p.alpha = TM_ALPHA_COMPOSITE;
    p.channels = 1;
    CHECK_OK(tm_image_load(&img, img_path("la.png"), p));
    bad = 0;
    r = la.data;
    for (int i = 0; img && i < img->width * img->height; i++) {
        unsigned v = (unsigned)r[2 * i], a = (unsigned)r[2 * i + 1];
        unsigned want = (v * a + 255 * (255 - a) + 127) / 255;
        if (img->data[i] != want) bad++;
    }
    CHECK(bad == 0);
    tm_image_free(img);

    /* convert: 3 -> 1 -> 3 keeps gray values, 1 -> 3 replicates */
    tm_image *rgb = NULL, *g = NULL, *g3 = NULL;
    CHECK_OK(tm_image_load(&rgb, img_path("rgb.png"), tm_image_decode_default_params()));
    CHECK_OK(tm_image_convert(&g, rgb, 1));
    CHECK_OK(tm_image_convert(&g3, g, 3));
    tm_tensor gref;
    CHECK_OK(tm_safetensors_get(refs, "gray_from_rgb", &gref));
    bad = 0;
    for (int i = 0; g && g3 && i < g->width * g->height; i++) {
        if (g->data[i] != (uint8_t)((const float *)gref.data)[i]) bad++;
        if (g3->data[3 * i] != g->data[i] || g3->data[3 * i + 2] != g->data[i]) bad++;
    }
    CHECK(bad == 0);
    tm_image *x = NULL;
    CHECK_STATUS(tm_image_convert(&x, rgb, 2), TM_ERR_INVALID);
    CHECK(x == NULL);
    tm_image_free(rgb);
    tm_image_free(g);
    tm_image_free(g3);
}

/* A file's bytes with a patch applied. */
typedef struct {
    unsigned char *d;
    size_t n;
} blob;

static blob load_blob(const char *file)
{
    blob b;
    b.d = read_all(img_path(file), &b.n);
    CHECK(b.d != NULL);
    return b;
}

static tm_status decode_bytes(const void *d, size_t n, tm_image_decode_params p)
{
    tm_image *img = (tm_image *)1;
    tm_status s = tm_image_decode(&img, d, n, p);
    if (s) CHECK(img == NULL && tm_last_error()[0] != 0);
    tm_image_free(img);
    return s;
}

static int error_mentions(const char *word)
{
    if (strstr(tm_last_error(), word)) return 1;
    fprintf(stderr, "message \"%s\" lacks \"%s\"\n", tm_last_error(), word);
    return 0;
}

/* A string literal and its length without the final NUL. */
#define LIT(s) s, sizeof(s) - 1

static void be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static void test_bad_input(void)
{
    tm_image_decode_params p = tm_image_decode_default_params();
    const char *files[] = {"rgb.png",  "interlaced.png", "rgb_q90.jpg", "rgb_prog.jpg", "rgb.bmp",
                           "gray.bmp", "rgb.gif",        "rgb.ppm",     "gray.pgm"};
    /* every truncation of every format is an error, never a half picture */
    for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
        blob b = load_blob(files[f]);
        if (!b.d) continue;
        int ok_count = 0, wrong = 0;
        for (size_t len = 0; len < b.n; len += (len < 64 ? 1 : 7)) {
            tm_status s = decode_bytes(b.d, len, p);
            if (s == TM_OK)
                ok_count++;
            else if (s != TM_ERR_FORMAT)
                wrong++;
        }
        if (ok_count || wrong)
            fprintf(stderr, "%s: %d truncations decoded, %d gave another status\n", files[f],
                    ok_count, wrong);
        CHECK(ok_count == 0 && wrong == 0);
        CHECK_OK(decode_bytes(b.d, b.n, p));
        free(b.d);
    }
    /* messages name the problem */
    blob j = load_blob("rgb_q90.jpg");
    if (j.d) {
        CHECK_STATUS(decode_bytes(j.d, j.n - 20, p), TM_ERR_FORMAT);
        CHECK(error_mentions("truncated JPEG"));
        free(j.d);
    }
    blob bm = load_blob("rgb.bmp");
    if (bm.d) {
        CHECK_STATUS(decode_bytes(bm.d, bm.n - 1, p), TM_ERR_FORMAT);
        CHECK(error_mentions("truncated BMP"));
        free(bm.d);
    }

    /* empty, unsupported, foreign formats */
    CHECK_STATUS(decode_bytes(LIT(""), p), TM_ERR_FORMAT);
    CHECK(error_mentions("empty"));
    CHECK_STATUS(decode_bytes(LIT("II*\0\x08\0\0\0"), p), TM_ERR_UNSUPPORTED);
    CHECK(error_mentions("TIFF"));
    CHECK_STATUS(decode_bytes(LIT("RIFF\0\0\0\0WEBPVP8 "), p), TM_ERR_UNSUPPORTED);
    CHECK(error_mentions("WebP"));
    CHECK_STATUS(decode_bytes(LIT("P2\n2 2\n255\n0 0 0 0\n"), p), TM_ERR_UNSUPPORTED);
    CHECK(error_mentions("P1-P4"));
    CHECK_STATUS(decode_bytes(LIT("hello, world"), p), TM_ERR_UNSUPPORTED);
    CHECK(error_mentions("unrecognised"));
    /* a TGA-like header: stb would guess TGA, we do not */
    static const unsigned char tga[18 + 12] = {0, 0, 2, 0, 0, 0, 0, 0,  0,
                                               0, 0, 0, 2, 0, 2, 0, 24, 0};
    CHECK_STATUS(decode_bytes(tga, sizeof tga, p), TM_ERR_UNSUPPORTED);

    /* PNM: zero size, absurd size, bad maxval, truncated raster */
    CHECK_STATUS(decode_bytes(LIT("P5 0 4 255\n"), p), TM_ERR_FORMAT);
    CHECK(error_mentions("zero"));
    CHECK_STATUS(decode_bytes(LIT("P6 100000 100000 255\n"), p), TM_ERR_LIMIT);
    CHECK_STATUS(decode_bytes(LIT("P5 99999999999999999999 2 255\n"), p), TM_ERR_LIMIT);
    CHECK_STATUS(decode_bytes(LIT("P5 2 2 0\n1234"), p), TM_ERR_FORMAT);
    CHECK_STATUS(decode_bytes(LIT("P5 2 2 255\n123"), p), TM_ERR_FORMAT);
    CHECK(error_mentions("truncated PNM"));
    CHECK_OK(decode_bytes(LIT("P5 2 2 255\n1234"), p));
    CHECK_OK(decode_bytes(LIT("P5\n#c\n2 #x\n 2 255\n1234"), p));

    /* PNG: absurd and zero dimensions in IHDR (stb checks no CRC) */
    blob png = load_blob("rgb.png");
    if (png.d) {
        be32(png.d + 16, 100000);
        be32(png.d + 20, 100000);
        CHECK_STATUS(decode_bytes(png.d, png.n, p), TM_ERR_LIMIT);
        CHECK(error_mentions("over the limit"));
        be32(png.d + 16, 0);
        CHECK_STATUS(decode_bytes(png.d, png.n, p), TM_ERR_FORMAT);
        /* a header that promises more pixels than the data holds */
        be32(png.d + 16, 26);
        be32(png.d + 20, 400);
        CHECK_STATUS(decode_bytes(png.d, png.n, p), TM_ERR_FORMAT);
        be32(png.d + 20, 19);
        /* corrupt compressed data */
        for (size_t i = 45; i < 80 && i < png.n; i++)
            png.d[i] ^= 0x5A;
        CHECK_STATUS(decode_bytes(png.d, png.n, p), TM_ERR_FORMAT);
        free(png.d);
    }
    /* a 1 x 1 PNG whose data inflates to 1 MiB is refused before stb
     * grows a buffer for it */
    blob bomb = load_blob("bomb.png");
    if (bomb.d) {
        CHECK_STATUS(decode_bytes(bomb.d, bomb.n, p), TM_ERR_FORMAT);
        CHECK(error_mentions("inflates to more than"));
        free(bomb.d);
    }
    /* GIF: a 65535 x 65535 screen */
    blob gif = load_blob("rgb.gif");
    if (gif.d) {
        gif.d[6] = gif.d[7] = gif.d[8] = gif.d[9] = 0xFF;
        CHECK_STATUS(decode_bytes(gif.d, gif.n, p), TM_ERR_LIMIT);
        gif.d[6] = gif.d[7] = 0;
        CHECK_STATUS(decode_bytes(gif.d, gif.n, p), TM_ERR_FORMAT);
        free(gif.d);
    }
    /* BMP: RLE compression is refused as unsupported */
    blob rle = load_blob("gray.bmp");
    if (rle.d) {
        rle.d[30] = 1;
        CHECK_STATUS(decode_bytes(rle.d, rle.n, p), TM_ERR_UNSUPPORTED);
        CHECK(error_mentions("RLE"));
        free(rle.d);
    }
    /* BMP: a height of -2^31 and a huge width */
    blob bmp = load_blob("rgb.bmp");
    if (bmp.d) {
        bmp.d[22] = bmp.d[23] = bmp.d[24] = 0, bmp.d[25] = 0x80;
        tm_status s = decode_bytes(bmp.d, bmp.n, p);
        CHECK(s == TM_ERR_LIMIT || s == TM_ERR_FORMAT);
        free(bmp.d);
    }

    /* limits: bytes and pixels, from memory and from a file */
    blob rgb = load_blob("rgb.png");
    if (rgb.d) {
        tm_image_decode_params small = p;
        small.limits.max_bytes = rgb.n - 1;
        CHECK_STATUS(decode_bytes(rgb.d, rgb.n, small), TM_ERR_LIMIT);
        tm_image *img = NULL;
        CHECK_STATUS(tm_image_load(&img, img_path("rgb.png"), small), TM_ERR_LIMIT);
        CHECK(error_mentions("rgb.png"));
        small = p;
        small.limits.max_pixels = 19 * 26 - 1;
        CHECK_STATUS(decode_bytes(rgb.d, rgb.n, small), TM_ERR_LIMIT);
        small.limits.max_pixels = 19 * 26;
        CHECK_OK(decode_bytes(rgb.d, rgb.n, small));
        tm_image_decode_params bad = p;
        bad.channels = 2;
        CHECK_STATUS(decode_bytes(rgb.d, rgb.n, bad), TM_ERR_INVALID);
        free(rgb.d);
    }
    tm_image *img = NULL;
    CHECK_STATUS(tm_image_load(&img, img_path("no-such-file.png"), p), TM_ERR_IO);
    CHECK(error_mentions("no-such-file.png"));
    CHECK_STATUS(tm_image_load(&img, test_data_path("vision"), p), TM_ERR_IO);

    /* probe reads the header only */
    blob g = load_blob("rgb.gif");
    if (g.d) {
        tm_image_format f;
        int w = 0, h = 0, c = 0;
        CHECK_OK(tm_image_probe(g.d, g.n, &f, &w, &h, &c));
        CHECK(f == TM_IMAGE_FORMAT_GIF && w == 26 && h == 19 && c >= 3);
        CHECK(strcmp(tm_image_format_name(f), "gif") == 0);
        free(g.d);
    }
}

static void test_idx(void)
{
    tm_image_limits lim = tm_image_default_limits();
    tm_idx *im = NULL, *lb = NULL;
    CHECK_OK(tm_idx_open(&im, test_data_path("vision/idx/images-idx3-ubyte"), lim));
    CHECK_OK(tm_idx_open(&lb, test_data_path("vision/idx/labels-idx1-ubyte"), lim));
    if (im && lb) {
        CHECK(tm_idx_count(im) == 5 && tm_idx_ndim(im) == 3);
        CHECK(tm_idx_height(im) == 7 && tm_idx_width(im) == 6);
        CHECK(tm_idx_count(lb) == 5 && tm_idx_ndim(lb) == 1 && tm_idx_height(lb) == 0);
        static const int want[5] = {3, 1, 4, 1, 5};
        for (int i = 0; i < 5; i++) {
            int l = -1;
            CHECK_OK(tm_idx_label(&l, lb, i));
            CHECK(l == want[i]);
            tm_image *img = NULL;
            CHECK_OK(tm_idx_image(&img, im, i));
            CHECK(img && img->width == 6 && img->height == 7 && img->channels == 1);
            CHECK(img && memcmp(img->data, tm_idx_data(im) + i * 42, 42) == 0);
            tm_image_free(img);
        }
        int l;
        tm_image *img = NULL;
        CHECK_STATUS(tm_idx_label(&l, lb, 5), TM_ERR_INVALID);
        CHECK_STATUS(tm_idx_label(&l, lb, -1), TM_ERR_INVALID);
        CHECK_STATUS(tm_idx_label(&l, im, 0), TM_ERR_INVALID);
        CHECK_STATUS(tm_idx_image(&img, im, 5), TM_ERR_INVALID);
        CHECK_STATUS(tm_idx_image(&img, lb, 0), TM_ERR_INVALID);
        CHECK(img == NULL);
    }
    tm_idx_close(im);
    tm_idx_close(lb);
    tm_idx_close(NULL);

    /* headers that lie, in memory */
    unsigned char buf[16 + 2 * 3 * 4];
    memset(buf, 7, sizeof buf);
    buf[0] = buf[1] = 0, buf[2] = 0x08, buf[3] = 3;
    be32(buf + 4, 2), be32(buf + 8, 3), be32(buf + 12, 4);
    tm_idx *x = NULL;
    CHECK_OK(tm_idx_open_memory(&x, buf, sizeof buf, lim));
    CHECK(tm_idx_count(x) == 2);
    tm_idx_close(x);
    be32(buf + 4, 3); /* promises a third image */
    CHECK_STATUS(tm_idx_open_memory(&x, buf, sizeof buf, lim), TM_ERR_FORMAT);
    CHECK(x == NULL && error_mentions("truncated or a lying header"));
    be32(buf + 4, 1); /* one image and extra bytes */
    CHECK_STATUS(tm_idx_open_memory(&x, buf, sizeof buf, lim), TM_ERR_FORMAT);
    CHECK(error_mentions("extra bytes"));
    /* (2^32 - 1) x (2^31 - 1)^2 bytes overflows 64 bits */
    be32(buf + 4, 0xFFFFFFFFu), be32(buf + 8, 0x7FFFFFFFu), be32(buf + 12, 0x7FFFFFFFu);
    tm_image_limits big = {SIZE_MAX, 0};
    CHECK_STATUS(tm_idx_open_memory(&x, buf, sizeof buf, big), TM_ERR_FORMAT);
    CHECK(error_mentions("overflow"));
    CHECK_STATUS(tm_idx_open_memory(&x, buf, sizeof buf, lim), TM_ERR_LIMIT);
    be32(buf + 4, 2), be32(buf + 8, 0), be32(buf + 12, 4);
    CHECK_STATUS(tm_idx_open_memory(&x, buf, sizeof buf, lim), TM_ERR_FORMAT);
    CHECK(error_mentions("zero size"));
    be32(buf + 8, 3);
    CHECK_STATUS(tm_idx_open_memory(&x, buf, 10, lim), TM_ERR_FORMAT);
    CHECK(error_mentions("truncated IDX header"));
    buf[2] = 0x0D;
    CHECK_STATUS(tm_idx_open_memory(&x, buf, sizeof buf, lim), TM_ERR_UNSUPPORTED);
    CHECK(error_mentions("float32"));
    buf[2] = 0x08, buf[3] = 2;
    CHECK_STATUS(tm_idx_open_memory(&x, buf, sizeof buf, lim), TM_ERR_UNSUPPORTED);
    buf[3] = 3, buf[0] = 0x1f, buf[1] = 0x8b;
    CHECK_STATUS(tm_idx_open_memory(&x, buf, sizeof buf, lim), TM_ERR_UNSUPPORTED);
    CHECK(error_mentions("gzip"));
    buf[0] = 'P', buf[1] = 'K';
    CHECK_STATUS(tm_idx_open_memory(&x, buf, sizeof buf, lim), TM_ERR_FORMAT);
    CHECK_STATUS(tm_idx_open_memory(&x, buf, 0, lim), TM_ERR_FORMAT);
    /* an empty label file is valid */
    unsigned char empty[8] = {0, 0, 8, 1, 0, 0, 0, 0};
    CHECK_OK(tm_idx_open_memory(&x, empty, sizeof empty, lim));
    CHECK(tm_idx_count(x) == 0);
    tm_idx_close(x);
    CHECK_STATUS(tm_idx_open(&x, "/nonexistent/idx", lim), TM_ERR_IO);
    /* a real image file that is not IDX */
    CHECK_STATUS(tm_idx_open(&x, img_path("rgb.png"), lim), TM_ERR_FORMAT);
    /* and the decoder points IDX users to the IDX reader */
    blob b;
    b.d = read_all(test_data_path("vision/idx/images-idx3-ubyte"), &b.n);
    if (b.d) {
        CHECK_STATUS(decode_bytes(b.d, b.n, tm_image_decode_default_params()), TM_ERR_UNSUPPORTED);
        CHECK(error_mentions("tm_idx_open"));
        free(b.d);
    }
}

static void test_png_writing(void)
{
    char dir[] = "/tmp/tm_vision_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/out.png", dir);
    /* a (3, 2, 3) float image, unit scaling, upscaled 4x */
    float x[18];
    for (int i = 0; i < 18; i++)
        x[i] = (float)i / 17.0f;
    x[0] = -1.0f, x[1] = 2.0f;
    CHECK_OK(tm_image_write_png(path, x, 3, 2, 3, TM_PNG_SCALE_UNIT, 4));
    tm_image *img = NULL;
    CHECK_OK(tm_image_load(&img, path, tm_image_decode_default_params()));
    if (img) {
        CHECK(img->width == 12 && img->height == 8 && img->channels == 3);
        int bad = 0;
        for (int y = 0; y < 8; y++)
            for (int xx = 0; xx < 12; xx++)
                for (int c = 0; c < 3; c++) {
                    float v = x[(c * 2 + y / 4) * 3 + xx / 4];
                    v = v < 0 ? 0 : v > 1 ? 1 : v;
                    int want = (int)(v * 255.0f + 0.5f);
                    if (abs(img->data[(y * 12 + xx) * 3 + c] - want) > 0) bad++;
                }
        CHECK(bad == 0);
    }
    tm_image_free(img);
    /* min-max: gray, the extremes map to 0 and 255 */
    float g[4] = {-3.0f, 1.0f, 5.0f, 0.0f};
    CHECK_OK(tm_image_write_png(path, g, 1, 2, 2, TM_PNG_SCALE_MINMAX, 1));
    tm_image_decode_params p = tm_image_decode_default_params();
    p.channels = 0;
    CHECK_OK(tm_image_load(&img, path, p));
    if (img) {
        CHECK(img->channels == 1 && img->data[0] == 0 && img->data[2] == 255);
        CHECK(img->data[1] == 128 && img->data[3] == 96);
    }
    tm_image_free(img);
    float k[4] = {2, 2, 2, 2};
    CHECK_OK(tm_image_write_png(path, k, 1, 2, 2, TM_PNG_SCALE_MINMAX, 1));
    CHECK_STATUS(tm_image_write_png(path, x, 2, 3, 3, TM_PNG_SCALE_UNIT, 1), TM_ERR_INVALID);
    CHECK_STATUS(tm_image_write_png(path, x, 1, 2, 2, TM_PNG_SCALE_UNIT, 0), TM_ERR_INVALID);
    CHECK_STATUS(tm_image_write_png(path, x, 1, 2, 2, TM_PNG_SCALE_UNIT, 1 << 20), TM_ERR_LIMIT);
    char bad_path[300];
    snprintf(bad_path, sizeof bad_path, "%s/missing/dir/out.png", dir);
    CHECK_STATUS(tm_image_write_png(bad_path, x, 1, 2, 2, TM_PNG_SCALE_UNIT, 1), TM_ERR_IO);

    /* u8 save and reload is lossless */
    tm_image *rgb = NULL, *back = NULL;
    CHECK_OK(tm_image_load(&rgb, img_path("rgba.png"), p));
    if (rgb) {
        CHECK_OK(tm_image_save_png(rgb, path));
        CHECK_OK(tm_image_load(&back, path, p));
        CHECK(back && back->width == rgb->width && back->channels == rgb->channels &&
              memcmp(back->data, rgb->data, (size_t)rgb->width * rgb->height * 3) == 0);
    }
    tm_image_free(rgb);
    tm_image_free(back);
    unlink(path);
    rmdir(dir);
}

/* Every allocation failure during a decode is reported, never a crash or
 * a leak (ASan checks the latter). stb's own allocations are not ours to
 * fail. */
static void test_alloc_failures(void)
{
    const char *files[] = {"rgb.ppm", "rgb.png", "rgb_q90.jpg"};
    for (int f = 0; f < 3; f++) {
        blob b = load_blob(files[f]);
        if (!b.d) continue;
        int failures = 0;
        for (long n = 1; n < 10; n++) {
            tm_alloc_fail_after(n);
            tm_image *img = NULL;
            tm_status s = tm_image_decode(&img, b.d, b.n, tm_image_decode_default_params());
            tm_alloc_fail_after(0);
            if (s) {
                failures++;
                CHECK(s == TM_ERR_NOMEM && img == NULL);
            }
            tm_image_free(img);
        }
        CHECK(failures > 0);
        free(b.d);
    }
}

static void test_new_free(void)
{
    tm_image *img = NULL;
    CHECK_OK(tm_image_new(&img, 3, 2, 4));
    CHECK(img && img->data[23] == 0);
    tm_image_free(img);
    tm_image_free(NULL);
    CHECK_STATUS(tm_image_new(&img, 0, 2, 1), TM_ERR_INVALID);
    CHECK_STATUS(tm_image_new(&img, 2, 2, 5), TM_ERR_INVALID);
    CHECK(img == NULL);
    tm_image_limits l = tm_image_default_limits();
    CHECK(l.max_pixels == TM_IMAGE_DEFAULT_MAX_PIXELS && l.max_bytes == TM_IMAGE_DEFAULT_MAX_BYTES);
}

int main(void)
{
    tm_status s = tm_safetensors_open(&refs, test_data_path("vision/decode.safetensors"));
    CHECK_OK(s);
    if (s) return test_finish("test_image");
    test_new_free();
    test_formats();
    test_alpha_and_convert();
    test_bad_input();
    test_idx();
    test_png_writing();
    test_alloc_failures();
    tm_safetensors_close(refs);
    return test_finish("test_image");
}
