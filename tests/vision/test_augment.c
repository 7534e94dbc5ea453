/* Augmentations: the deterministic parts against torchvision (hflip,
 * rotate, adjust_*), and the random ones' invariants: shapes, ranges,
 * reproducibility from (seed, index), flip twice = identity, zero-angle
 * rotation = identity, erased boxes within bounds. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/vision.h"

#define C 3
#define H 19
#define W 26
#define N (C * H * W)

static tm_safetensors *refs;
static const float *X;
static double max_err_rotate, max_err_color;

static void compare(const char *name, const float *got, int64_t n, double atol, double *worst)
{
    tm_tensor t;
    tm_status s = tm_safetensors_get(refs, name, &t);
    CHECK_OK(s);
    if (s) return;
    CHECK(tm_tensor_numel(&t) == n);
    if (tm_tensor_numel(&t) != n) return;
    const float *w = t.data;
    for (int64_t i = 0; i < n && worst; i++) {
        double d = fabs((double)got[i] - w[i]);
        if (d > *worst) *worst = d;
    }
    check_close(name, got, w, n, atol, 0);
}

static int same(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

static void test_deterministic(void)
{
    float *out = malloc(sizeof(float) * N), *back = malloc(sizeof(float) * N);
    CHECK_OK(tm_image_hflip(out, X, C, H, W));
    compare("hflip", out, N, 0.0, NULL);
    CHECK_OK(tm_image_hflip(back, out, C, H, W));
    CHECK(same(back, X, N));
    CHECK_OK(tm_image_hflip(back, back, C, H, W)); /* in place */
    CHECK(same(back, out, N));

    static const float angles[] = {10.0f, -7.5f, 33.0f, 90.0f, 0.0f};
    static const char *names[] = {"10", "m7p5", "33", "90", "0"};
    const float fill[3] = {0.2f, 0.5f, 0.8f};
    char name[64];
    for (int i = 0; i < 5; i++) {
        CHECK_OK(tm_image_rotate(out, X, C, H, W, angles[i], NULL));
        snprintf(name, sizeof name, "rotate_%s_nofill", names[i]);
        compare(name, out, N, 2e-5, &max_err_rotate);
        CHECK_OK(tm_image_rotate(out, X, C, H, W, angles[i], fill));
        snprintf(name, sizeof name, "rotate_%s_fill", names[i]);
        compare(name, out, N, 2e-5, &max_err_rotate);
    }
    /* zero angle is the identity, with or without fill */
    CHECK_OK(tm_image_rotate(out, X, C, H, W, 0.0f, fill));
    CHECK(same(out, X, N));
    CHECK_OK(tm_image_rotate(out, X, C, H, W, 360.0f, NULL));
    CHECK(same(out, X, N));
    /* four quarter turns of a square image are the identity */
    float sq[2 * 9 * 9], a[2 * 9 * 9], b[2 * 9 * 9];
    test_fill_uniform(sq, 2 * 81, 3, 0, 1);
    CHECK_OK(tm_image_rotate(a, sq, 2, 9, 9, 90, NULL));
    CHECK_OK(tm_image_rotate(b, a, 2, 9, 9, 90, NULL));
    CHECK_OK(tm_image_rotate(a, b, 2, 9, 9, 90, NULL));
    CHECK_OK(tm_image_rotate(b, a, 2, 9, 9, 90, NULL));
    CHECK(same(b, sq, 2 * 81));
    CHECK_STATUS(tm_image_rotate(out, out, C, H, W, 5, NULL), TM_ERR_INVALID);

    tm_tensor tg;
    CHECK_OK(tm_safetensors_get(refs, "xg", &tg));
    const float *xg = tg.data;
    float g[15 * 21];
    static const float bf[] = {0.6f, 1.3f}, cf[] = {0.5f, 1.4f}, sf[] = {0.3f, 1.7f};
    static const float hf[] = {-0.2f, 0.35f, 0.5f};
    for (int i = 0; i < 2; i++) {
        CHECK_OK(tm_image_adjust_brightness(out, X, C, H, W, bf[i]));
        snprintf(name, sizeof name, "brightness_%g", bf[i]);
        compare(name, out, N, 1e-6, &max_err_color);
        CHECK_OK(tm_image_adjust_brightness(g, xg, 1, 15, 21, bf[i]));
        snprintf(name, sizeof name, "gray_brightness_%g", bf[i]);
        compare(name, g, 15 * 21, 1e-6, &max_err_color);
        CHECK_OK(tm_image_adjust_contrast(out, X, C, H, W, cf[i]));
        snprintf(name, sizeof name, "contrast_%g", cf[i]);
        compare(name, out, N, 1e-6, &max_err_color);
        CHECK_OK(tm_image_adjust_contrast(g, xg, 1, 15, 21, cf[i]));
        snprintf(name, sizeof name, "gray_contrast_%g", cf[i]);
        compare(name, g, 15 * 21, 1e-6, &max_err_color);
        CHECK_OK(tm_image_adjust_saturation(out, X, C, H, W, sf[i]));
        snprintf(name, sizeof name, "saturation_%g", sf[i]);
        compare(name, out, N, 1e-6, &max_err_color);
    }
    for (int i = 0; i < 3; i++) {
        CHECK_OK(tm_image_adjust_hue(out, X, C, H, W, hf[i]));
        snprintf(name, sizeof name, "hue_%g", hf[i]);
        compare(name, out, N, 1e-5, &max_err_color);
    }
    /* in place gives the same */
    memcpy(back, X, sizeof(float) * N);
    CHECK_OK(tm_image_adjust_hue(back, back, C, H, W, 0.35f));
    CHECK_OK(tm_image_adjust_hue(out, X, C, H, W, 0.35f));
    CHECK(same(back, out, N));
    CHECK_STATUS(tm_image_adjust_hue(out, X, C, H, W, 0.6f), TM_ERR_INVALID);
    CHECK_STATUS(tm_image_adjust_brightness(out, X, C, H, W, -1.0f), TM_ERR_INVALID);
    CHECK_STATUS(tm_image_adjust_contrast(out, X, 2, H, W, 1.0f), TM_ERR_INVALID);
    free(out);
    free(back);
}

static void test_random_resized_crop(void)
{
    tm_image_aug_params p = tm_image_aug_default_params();
    float *a = malloc(sizeof(float) * C * 16 * 12), *b = malloc(sizeof(float) * C * 16 * 12);
    int fallback = 0, distinct = 0, bad = 0;
    tm_image_box prev = {-1, -1, -1, -1};
    for (uint64_t i = 0; i < 2000; i++) {
        tm_image_box box;
        CHECK_OK(tm_image_random_resized_crop(NULL, &box, X, C, H, W, 16, 12, p, 42, i));
        if (box.top < 0 || box.left < 0 || box.height < 1 || box.width < 1 ||
            box.top + box.height > H || box.left + box.width > W)
            bad++;
        double frac = (double)box.height * box.width / (H * W);
        double ratio = (double)box.width / box.height;
        /* rounding each side moves the area and aspect a little */
        if (frac > 1.0 || frac < 0.02 || ratio < 0.5 || ratio > 2.0) bad++;
        if (box.height == H && box.width == W) fallback++;
        if (memcmp(&box, &prev, sizeof box)) distinct++;
        prev = box;
    }
    CHECK(bad == 0);
    CHECK(distinct > 1500);
    CHECK(fallback < 400);
    /* reproducible, and the same box as the draw-only call */
    tm_image_box b1, b2, b3;
    CHECK_OK(tm_image_random_resized_crop(a, &b1, X, C, H, W, 16, 12, p, 7, 99));
    CHECK_OK(tm_image_random_resized_crop(b, &b2, X, C, H, W, 16, 12, p, 7, 99));
    CHECK_OK(tm_image_random_resized_crop(NULL, &b3, X, C, H, W, 16, 12, p, 7, 99));
    CHECK(same(a, b, C * 16 * 12) && !memcmp(&b1, &b2, sizeof b1) && !memcmp(&b1, &b3, sizeof b1));
    float *c = malloc(sizeof(float) * C * 16 * 12);
    CHECK_OK(tm_image_resized_crop(c, X, C, H, W, b1, 16, 12, TM_FILTER_BILINEAR, 1));
    CHECK(same(a, c, C * 16 * 12));
    /* boxes that can never fit force the centred fallback */
    p.crop_scale[0] = 0.9f;
    p.crop_ratio[0] = 5.0f, p.crop_ratio[1] = 6.0f;
    CHECK_OK(tm_image_random_resized_crop(a, &b1, X, C, H, W, 16, 12, p, 7, 1));
    CHECK(b1.width == W && b1.height == 5 && b1.top == 7 && b1.left == 0);
    p.crop_scale[0] = 2.0f, p.crop_scale[1] = 1.0f;
    CHECK_STATUS(tm_image_random_resized_crop(a, &b1, X, C, H, W, 16, 12, p, 7, 1), TM_ERR_INVALID);
    free(a);
    free(b);
    free(c);
}

static void test_flip_rotate(void)
{
    tm_image_aug_params p = tm_image_aug_default_params();
    float *out = malloc(sizeof(float) * N), *ref = malloc(sizeof(float) * N);
    int flips = 0;
    for (uint64_t i = 0; i < 4000; i++) {
        int f = -1;
        CHECK_OK(tm_image_random_hflip(NULL, &f, X, C, H, W, p, 1, i));
        flips += f;
    }
    CHECK(flips > 1800 && flips < 2200);
    int f;
    CHECK_OK(tm_image_random_hflip(out, &f, X, C, H, W, p, 1, 3));
    tm_image_hflip(ref, X, C, H, W);
    CHECK(same(out, f ? ref : X, N));
    p.flip_p = 0;
    CHECK_OK(tm_image_random_hflip(out, &f, X, C, H, W, p, 1, 3));
    CHECK(f == 0 && same(out, X, N));
    p.flip_p = 1;
    CHECK_OK(tm_image_random_hflip(out, &f, X, C, H, W, p, 1, 3));
    CHECK(f == 1 && same(out, ref, N));
    p.flip_p = 1.5f;
    CHECK_STATUS(tm_image_random_hflip(out, &f, X, C, H, W, p, 1, 3), TM_ERR_INVALID);

    p = tm_image_aug_default_params();
    float lo = 1e9f, hi = -1e9f;
    for (uint64_t i = 0; i < 1000; i++) {
        float a;
        CHECK_OK(tm_image_random_rotate(NULL, &a, X, C, H, W, p, 5, i));
        if (a < lo) lo = a;
        if (a > hi) hi = a;
    }
    CHECK(lo >= -10.0f && hi <= 10.0f && lo < -9.0f && hi > 9.0f);
    float a1, a2;
    CHECK_OK(tm_image_random_rotate(out, &a1, X, C, H, W, p, 5, 17));
    float fill[3] = {0, 0, 0};
    CHECK_OK(tm_image_rotate(ref, X, C, H, W, a1, fill));
    CHECK(same(out, ref, N));
    CHECK_OK(tm_image_random_rotate(ref, &a2, X, C, H, W, p, 5, 17));
    CHECK(a1 == a2 && same(out, ref, N));
    p.rotate_degrees = 0;
    CHECK_OK(tm_image_random_rotate(out, &a1, X, C, H, W, p, 5, 17));
    CHECK(a1 == 0.0f && same(out, X, N));
    free(out);
    free(ref);
}

static void test_color_jitter(void)
{
    tm_image_aug_params p = tm_image_aug_default_params();
    p.hue = 0.1f;
    float *out = malloc(sizeof(float) * N), *ref = malloc(sizeof(float) * N);
    int bad = 0, orders_seen = 0;
    unsigned char seen[256] = {0};
    for (uint64_t i = 0; i < 300; i++) {
        tm_color_jitter j;
        CHECK_OK(tm_image_color_jitter(i < 20 ? out : NULL, &j, X, C, H, W, p, 9, i));
        if (j.brightness < 0.6f || j.brightness > 1.4f || j.contrast < 0.6f || j.contrast > 1.4f ||
            j.saturation < 0.6f || j.saturation > 1.4f || fabsf(j.hue) > 0.1f)
            bad++;
        int used = 0, code = 0;
        for (int k = 0; k < 4; k++)
            used |= 1 << j.order[k], code = code * 4 + j.order[k];
        if (used != 15) bad++;
        if (!seen[code]) seen[code] = 1, orders_seen++;
        if (i < 20)
            for (int k = 0; k < N; k++)
                if (!(out[k] >= 0.0f && out[k] <= 1.0f)) bad++;
    }
    CHECK(bad == 0);
    CHECK(orders_seen == 24); /* all permutations */
    /* the same as applying the drawn adjustments by hand */
    tm_color_jitter j;
    CHECK_OK(tm_image_color_jitter(out, &j, X, C, H, W, p, 9, 4));
    memcpy(ref, X, sizeof(float) * N);
    for (int k = 0; k < 4; k++) {
        if (j.order[k] == 0) tm_image_adjust_brightness(ref, ref, C, H, W, j.brightness);
        if (j.order[k] == 1) tm_image_adjust_contrast(ref, ref, C, H, W, j.contrast);
        if (j.order[k] == 2) tm_image_adjust_saturation(ref, ref, C, H, W, j.saturation);
        if (j.order[k] == 3) tm_image_adjust_hue(ref, ref, C, H, W, j.hue);
    }
    CHECK(same(out, ref, N));
    /* in place, and reproducible */
    memcpy(ref, X, sizeof(float) * N);
    CHECK_OK(tm_image_color_jitter(ref, NULL, ref, C, H, W, p, 9, 4));
    CHECK(same(out, ref, N));
    /* all off: a copy; gray images work */
    p.brightness = p.contrast = p.saturation = p.hue = 0;
    CHECK_OK(tm_image_color_jitter(out, &j, X, C, H, W, p, 9, 4));
    CHECK(same(out, X, N) && j.brightness == 1.0f && j.hue == 0.0f);
    p = tm_image_aug_default_params();
    CHECK_OK(tm_image_color_jitter(out, &j, X, 1, H, W, p, 9, 4));
    p.hue = 0.7f;
    CHECK_STATUS(tm_image_color_jitter(out, &j, X, C, H, W, p, 9, 4), TM_ERR_INVALID);
    free(out);
    free(ref);
}

static void test_erase(void)
{
    tm_image_aug_params p = tm_image_aug_default_params();
    float *out = malloc(sizeof(float) * N), *again = malloc(sizeof(float) * N);
    int erased = 0, bad = 0;
    for (uint64_t i = 0; i < 2000; i++) {
        tm_image_box b;
        CHECK_OK(tm_image_random_erase(i < 50 ? out : NULL, &b, X, C, H, W, p, 11, i));
        if (b.height == 0) {
            if (b.width || b.top || b.left) bad++;
            if (i < 50 && !same(out, X, N)) bad++;
            continue;
        }
        erased++;
        /* strictly smaller than the image, inside it, area within the
         * scale range up to the rounding of each side */
        if (b.top < 0 || b.left < 0 || b.height >= H || b.width >= W || b.top + b.height > H ||
            b.left + b.width > W)
            bad++;
        double area = (double)b.height * b.width;
        double hi = sqrt(0.33 * H * W), lo = sqrt(0.02 * H * W);
        if (sqrt(area) > hi + 1.5 || sqrt(area) < lo - 1.5) bad++;
        if (i < 50)
            for (int c = 0; c < C; c++)
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++) {
                        int k = (c * H + y) * W + x;
                        int inside = y >= b.top && y < b.top + b.height && x >= b.left &&
                                     x < b.left + b.width;
                        if (inside ? out[k] != 0.0f : out[k] != X[k]) bad++;
                    }
    }
    CHECK(bad == 0);
    CHECK(erased > 850 && erased < 1150);
    /* noise: reproducible, varied, in place */
    p.erase_p = 1;
    p.erase_noise = 1;
    tm_image_box b1, b2;
    CHECK_OK(tm_image_random_erase(out, &b1, X, C, H, W, p, 11, 5));
    memcpy(again, X, sizeof(float) * N);
    CHECK_OK(tm_image_random_erase(again, &b2, again, C, H, W, p, 11, 5));
    CHECK(same(out, again, N) && !memcmp(&b1, &b2, sizeof b1));
    CHECK(b1.height > 0);
    if (b1.height > 0) {
        float v0 = out[b1.top * W + b1.left];
        int varied = 0;
        for (int y = 0; y < b1.height; y++)
            for (int x = 0; x < b1.width; x++)
                varied += out[(b1.top + y) * W + b1.left + x] != v0;
        CHECK(varied > 0);
    }
    p.erase_p = 0;
    CHECK_OK(tm_image_random_erase(out, &b1, X, C, H, W, p, 11, 5));
    CHECK(b1.height == 0 && same(out, X, N));
    p.erase_ratio[0] = -1;
    CHECK_STATUS(tm_image_random_erase(out, &b1, X, C, H, W, p, 11, 5), TM_ERR_INVALID);

    /* fill_box clips to the image */
    memcpy(out, X, sizeof(float) * N);
    tm_image_box big = {-3, 20, 5, 100};
    const float v[3] = {7, 8, 9};
    CHECK_OK(tm_image_fill_box(out, C, H, W, big, v));
    CHECK(out[0 * W + 20] == 7 && out[(2 * H + 1) * W + 25] == 9 &&
          out[2 * W + 20] == X[2 * W + 20]);
    CHECK(out[19] == X[19]);
    free(out);
    free(again);
}

/* The draws of one augmentation do not depend on the others, nor on the
 * order of calls. */
static void test_independence(void)
{
    tm_image_aug_params p = tm_image_aug_default_params();
    tm_image_box b1, b2;
    CHECK_OK(tm_image_random_resized_crop(NULL, &b1, X, C, H, W, 8, 8, p, 3, 77));
    float a;
    int f;
    tm_color_jitter j;
    CHECK_OK(tm_image_random_rotate(NULL, &a, X, C, H, W, p, 3, 77));
    CHECK_OK(tm_image_random_hflip(NULL, &f, X, C, H, W, p, 3, 77));
    CHECK_OK(tm_image_color_jitter(NULL, &j, X, C, H, W, p, 3, 77));
    CHECK_OK(tm_image_random_resized_crop(NULL, &b2, X, C, H, W, 8, 8, p, 3, 77));
    CHECK(!memcmp(&b1, &b2, sizeof b1));
    /* another seed gives other boxes */
    int differ = 0;
    for (uint64_t i = 0; i < 20; i++) {
        CHECK_OK(tm_image_random_resized_crop(NULL, &b1, X, C, H, W, 8, 8, p, 3, i));
        CHECK_OK(tm_image_random_resized_crop(NULL, &b2, X, C, H, W, 8, 8, p, 4, i));
        differ += memcmp(&b1, &b2, sizeof b1) != 0;
    }
    CHECK(differ > 15);
}

int main(void)
{
    tm_status s = tm_safetensors_open(&refs, test_data_path("vision/transform.safetensors"));
    CHECK_OK(s);
    if (s) return test_finish("test_augment");
    tm_tensor t;
    CHECK_OK(tm_safetensors_get(refs, "x", &t));
    X = t.data;
    test_deterministic();
    test_random_resized_crop();
    test_flip_rotate();
    test_color_jitter();
    test_erase();
    test_independence();
    printf("max abs error vs torchvision: rotate %.3g, adjust_* %.3g\n", max_err_rotate,
           max_err_color);
    tm_safetensors_close(refs);
    return test_finish("test_augment");
}
