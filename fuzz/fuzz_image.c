/* libFuzzer harness for the image front-end: decodes the input under
 * small limits and, when it decodes, runs the preprocessing pipeline and
 * a few transforms and augmentations on it, checking what the API promises
 * (sizes within the limits, values finite and in range); also probes the
 * header and feeds the same bytes to the IDX reader. libFuzzer hands the
 * input in a heap block of exactly `size` bytes, so ASan flags any read
 * past it (in our code; Debian's libstb is not instrumented, which is why
 * the decoder checks each format's structure before calling it). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/vision.h"

#define REQUIRE(x)                                                                                 \
    do {                                                                                           \
        if (!(x)) __builtin_trap();                                                                \
    } while (0)

#define MAX_PIXELS (1u << 16)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t hash(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n && i < 64; i++)
        h = (h ^ d[i]) * 1099511628211ull;
    return h ^ n;
}

static void run_pipeline(const tm_image *img, uint64_t h)
{
    tm_image_params p = tm_image_default_params();
    p.channels = (h & 1) ? 3 : 1;
    p.mode = (h & 2) ? TM_RESIZE_EXACT : TM_RESIZE_SHORTER;
    p.filter = (tm_resize_filter)((h >> 2) % 3);
    p.antialias = (int)((h >> 4) & 1);
    p.size = 12;
    p.height = 12, p.width = 8;
    p.patch = (h & 32) ? 4 : 0;
    float out[3 * 12 * 8];
    REQUIRE(tm_image_preprocess(out, sizeof out / sizeof *out, img, p) == TM_OK);
    for (size_t i = 0; i < (size_t)p.channels * 12 * 8; i++)
        REQUIRE(isfinite(out[i]));

    int c = img->channels, H = img->height, W = img->width;
    size_t n = (size_t)c * H * W;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    REQUIRE(x && y);
    REQUIRE(tm_image_to_float(x, img) == TM_OK);
    tm_image_aug_params a = tm_image_aug_default_params();
    a.hue = 0.2f;
    a.erase_noise = (int)((h >> 6) & 1);
    tm_image_box box;
    float crop[3 * 9 * 7];
    REQUIRE(tm_image_random_resized_crop(crop, &box, x, c, H, W, 9, 7, a, h, 1) == TM_OK);
    REQUIRE(box.top >= 0 && box.left >= 0 && box.height >= 1 && box.width >= 1 &&
            box.top + box.height <= H && box.left + box.width <= W);
    REQUIRE(tm_image_color_jitter(y, NULL, x, c, H, W, a, h, 2) == TM_OK);
    for (size_t i = 0; i < n; i++)
        REQUIRE(y[i] >= 0.0f && y[i] <= 1.0f);
    REQUIRE(tm_image_random_rotate(y, NULL, x, c, H, W, a, h, 3) == TM_OK);
    for (size_t i = 0; i < n; i++)
        REQUIRE(y[i] >= -1e-5f && y[i] <= 1.0f + 1e-5f);
    REQUIRE(tm_image_random_erase(y, &box, x, c, H, W, a, h, 4) == TM_OK);
    REQUIRE(box.height == 0 || (box.top + box.height <= H && box.left + box.width <= W));
    free(x);
    free(y);
}

static void run_decode(const uint8_t *data, size_t size, uint64_t h)
{
    tm_image_decode_params p = tm_image_decode_default_params();
    p.limits.max_pixels = MAX_PIXELS;
    p.limits.max_bytes = 1 << 20;
    p.channels = (int)(h % 3) == 2 ? 0 : (int)(h % 3) * 2 + 1; /* 1, 3 or 0 */
    p.alpha = (h & 8) ? TM_ALPHA_COMPOSITE : TM_ALPHA_DROP;
    tm_image *img = (tm_image *)1;
    tm_status s = tm_image_decode(&img, data, size, p);
    if (s != TM_OK) {
        REQUIRE(img == NULL);
        REQUIRE(tm_last_error()[0] != 0);
        REQUIRE(s == TM_ERR_FORMAT || s == TM_ERR_UNSUPPORTED || s == TM_ERR_LIMIT ||
                s == TM_ERR_NOMEM);
        return;
    }
    REQUIRE(img && img->data);
    REQUIRE(img->width > 0 && img->height > 0);
    REQUIRE((size_t)img->width * (size_t)img->height <= MAX_PIXELS);
    REQUIRE(img->channels == 1 || img->channels == 3);
    REQUIRE(p.channels == 0 || img->channels == p.channels);
    tm_image_format f;
    int w, hh, c;
    REQUIRE(tm_image_probe(data, size, &f, &w, &hh, &c) == TM_OK);
    REQUIRE(f == img->format && w == img->width && hh == img->height);
    run_pipeline(img, h >> 8);
    tm_image_free(img);
}

static void run_idx(const uint8_t *data, size_t size)
{
    tm_image_limits lim = {MAX_PIXELS, 0};
    tm_idx *idx = NULL;
    if (tm_idx_open_memory(&idx, data, size, lim) != TM_OK) {
        REQUIRE(idx == NULL && tm_last_error()[0] != 0);
        return;
    }
    int64_t n = tm_idx_count(idx);
    volatile unsigned sink = 0;
    if (tm_idx_ndim(idx) == 3) {
        size_t px = (size_t)tm_idx_height(idx) * (size_t)tm_idx_width(idx);
        REQUIRE(px >= 1 && px <= MAX_PIXELS && (size_t)n * px <= size);
        for (int64_t i = 0; i < n && i < 8; i++) {
            tm_image *img = NULL;
            REQUIRE(tm_idx_image(&img, idx, i) == TM_OK);
            for (size_t k = 0; k < px; k++)
                sink += img->data[k];
            tm_image_free(img);
        }
        tm_image *img = NULL;
        REQUIRE(tm_idx_image(&img, idx, n) == TM_ERR_INVALID);
    } else {
        REQUIRE(tm_idx_ndim(idx) == 1 && (size_t)n <= size);
        for (int64_t i = 0; i < n; i++) {
            int l = -1;
            REQUIRE(tm_idx_label(&l, idx, i) == TM_OK && l >= 0 && l <= 255);
            sink += (unsigned)l;
        }
    }
    (void)sink;
    tm_idx_close(idx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t h = hash(data, size);
    run_decode(data, size, h);
    run_idx(data, size);
    return 0;
}
