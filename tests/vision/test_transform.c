/* Transforms on float CHW images against torchvision 0.14 (vectors from
 * scripts/gen_vision_vectors.py), the preprocessing pipeline, patchify,
 * and argument checks. Prints the largest error of each family. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/vision.h"

static tm_safetensors *refs;
static tm_tensor X; /* (3, 19, 26) = to_tensor(rgb.png) */

typedef struct {
    const char *family;
    double max_err;
} family_err;

static family_err fams[16];
static int n_fams;

static void note(const char *family, double err)
{
    for (int i = 0; i < n_fams; i++)
        if (strcmp(fams[i].family, family) == 0) {
            if (err > fams[i].max_err) fams[i].max_err = err;
            return;
        }
    if (n_fams < 16) fams[n_fams].family = family, fams[n_fams++].max_err = err;
}

/* Compares n floats with reference `name` (its shape must hold n). */
static void compare(const char *family, const char *name, const float *got, int64_t n, double atol)
{
    tm_tensor t;
    tm_status s = tm_safetensors_get(refs, name, &t);
    CHECK_OK(s);
    if (s) return;
    CHECK(tm_tensor_numel(&t) == n);
    if (tm_tensor_numel(&t) != n) {
        fprintf(stderr, "%s: %lld elements, want %lld\n", name, (long long)n,
                (long long)tm_tensor_numel(&t));
        return;
    }
    const float *w = t.data;
    double err = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - w[i]);
        if (d > err || isnan(d)) err = isnan(d) ? INFINITY : d;
    }
    note(family, err);
    if (!check_close(name, got, w, n, atol, 0)) fprintf(stderr, "  (in %s)\n", name);
}

static const float *ref(const char *name, tm_tensor *t)
{
    CHECK_OK(tm_safetensors_get(refs, name, t));
    return t->data;
}

static void test_to_float(void)
{
    tm_image *img = NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s", test_data_path("vision/img/rgb.png"));
    CHECK_OK(tm_image_load(&img, path, tm_image_decode_default_params()));
    if (!img) return;
    float *x = malloc(sizeof(float) * 3 * 19 * 26);
    CHECK_OK(tm_image_to_float(x, img));
    compare("to_tensor", "x", x, 3 * 19 * 26, 0.0);
    free(x);
    tm_image_free(img);
}

static void test_resize(void)
{
    static const int sizes[][2] = {{9, 13}, {40, 31}, {30, 7}, {4, 5}, {19, 40}};
    static const char *fnames[] = {"bilinear", "bicubic", "nearest"};
    const float *x = X.data;
    float *out = malloc(sizeof(float) * 3 * 60 * 60);
    char name[96];
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (int f = 0; f < 3; f++)
            for (int aa = 0; aa < (f == 2 ? 1 : 2); aa++) {
                int oh = sizes[si][0], ow = sizes[si][1];
                CHECK_OK(tm_image_resize(out, x, 3, 19, 26, oh, ow, (tm_resize_filter)f, aa));
                snprintf(name, sizeof name, "resize_%s_aa%d_%dx%d", fnames[f], aa, oh, ow);
                compare(f == 2 ? "resize nearest"
                        : aa   ? "resize antialias"
                               : "resize plain",
                        name, out, 3 * oh * ow, 5e-6);
            }
    tm_tensor g;
    const float *xg = ref("xg", &g);
    for (int f = 0; f < 2; f++) {
        CHECK_OK(tm_image_resize(out, xg, 1, 15, 21, 3, 2, (tm_resize_filter)f, 1));
        snprintf(name, sizeof name, "resize_gray_%s_aa1_3x2", fnames[f]);
        compare("resize antialias", name, out, 6, 5e-6);
    }
    /* shorter side, torchvision's rounding of the longer one */
    static const int shorter[] = {12, 40};
    for (int i = 0; i < 2; i++) {
        int oh = 0, ow = 0;
        CHECK_OK(tm_image_resize_shorter_size(&oh, &ow, 19, 26, shorter[i]));
        snprintf(name, sizeof name, "resize_shorter_%d", shorter[i]);
        tm_tensor t;
        ref(name, &t);
        CHECK(t.shape[1] == oh && t.shape[2] == ow);
        CHECK_OK(tm_image_resize(out, x, 3, 19, 26, oh, ow, TM_FILTER_BILINEAR, 1));
        compare("resize antialias", name, out, 3 * oh * ow, 5e-6);
    }
    int oh, ow;
    CHECK_OK(tm_image_resize_shorter_size(&oh, &ow, 100, 30, 7));
    CHECK(ow == 7 && oh == 23);
    CHECK_STATUS(tm_image_resize_shorter_size(&oh, &ow, 1, 100000, 30000), TM_ERR_INVALID);

    /* a constant image stays constant (weights sum to 1), identity at the
     * same size, extreme ratios */
    float *big = malloc(sizeof(float) * 2 * 50 * 60);
    for (int i = 0; i < 2 * 50 * 60; i++)
        big[i] = 0.375f;
    for (int f = 0; f < 3; f++)
        for (int aa = 0; aa < 2; aa++) {
            CHECK_OK(tm_image_resize(out, big, 2, 50, 60, 7, 1, (tm_resize_filter)f, aa));
            int bad = 0;
            for (int i = 0; i < 14; i++)
                bad += fabsf(out[i] - 0.375f) > 1e-6f;
            CHECK(bad == 0);
            CHECK_OK(tm_image_resize(big, out, 2, 7, 1, 40, 40, (tm_resize_filter)f, aa));
            bad = 0;
            for (int i = 0; i < 2 * 40 * 40; i++)
                bad += fabsf(big[i] - 0.375f) > 1e-6f;
            CHECK(bad == 0);
            for (int i = 0; i < 2 * 50 * 60; i++)
                big[i] = 0.375f;
        }
    CHECK_OK(tm_image_resize(out, x, 3, 19, 26, 19, 26, TM_FILTER_BICUBIC, 1));
    CHECK(memcmp(out, x, sizeof(float) * 3 * 19 * 26) == 0);
    CHECK_STATUS(tm_image_resize(out, x, 3, 19, 26, 0, 5, TM_FILTER_BILINEAR, 1), TM_ERR_INVALID);
    CHECK_STATUS(tm_image_resize(out, x, 3, 19, 26, 5, 5, (tm_resize_filter)7, 1), TM_ERR_INVALID);
    CHECK_STATUS(tm_image_resize(NULL, x, 3, 19, 26, 5, 5, TM_FILTER_BILINEAR, 1), TM_ERR_INVALID);
    free(big);
    free(out);
}

static void test_crop_pad(void)
{
    static const int sizes[][2] = {{10, 10}, {11, 8}, {25, 30}, {19, 26}, {20, 9}, {4, 26}, {2, 3}};
    const float *x = X.data;
    float *out = malloc(sizeof(float) * 3 * 30 * 31);
    char name[64];
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int oh = sizes[i][0], ow = sizes[i][1];
        CHECK_OK(tm_image_center_crop(out, x, 3, 19, 26, oh, ow));
        snprintf(name, sizeof name, "center_crop_%dx%d", oh, ow);
        compare("crop and pad", name, out, 3 * oh * ow, 0.0);
    }
    static const char *modes[] = {"constant", "edge", "reflect", "symmetric"};
    for (int m = 0; m < 4; m++) {
        CHECK_OK(tm_image_pad(out, x, 3, 19, 26, 3, 1, 2, 4, (tm_image_pad_mode)m, 0.25f));
        snprintf(name, sizeof name, "pad_%s", modes[m]);
        compare("crop and pad", name, out, 3 * 24 * 31, 0.0);
    }
    /* wide mirror pads continue the pattern: 1-D check on a 3-pixel row */
    float row[3] = {1, 2, 3}, pr[3 + 14];
    CHECK_OK(tm_image_pad(pr, row, 1, 1, 3, 7, 0, 7, 0, TM_IMAGE_PAD_REFLECT, 0));
    static const float want_r[17] = {2, 3, 2, 1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3, 2, 1, 2};
    CHECK(memcmp(pr, want_r, sizeof want_r) == 0);
    CHECK_OK(tm_image_pad(pr, row, 1, 1, 3, 7, 0, 7, 0, TM_IMAGE_PAD_SYMMETRIC, 0));
    static const float want_s[17] = {1, 1, 2, 3, 3, 2, 1, 1, 2, 3, 3, 2, 1, 1, 2, 3, 3};
    CHECK(memcmp(pr, want_s, sizeof want_s) == 0);
    float one = 5, po[9];
    CHECK_OK(tm_image_pad(po, &one, 1, 1, 1, 4, 0, 4, 0, TM_IMAGE_PAD_REFLECT, 0));
    CHECK(po[0] == 5 && po[8] == 5);
    CHECK_STATUS(tm_image_pad(out, x, 3, 19, 26, -1, 0, 0, 0, TM_IMAGE_PAD_EDGE, 0), TM_ERR_INVALID);

    tm_image_box b = {2, 3, 12, 17};
    CHECK_OK(tm_image_crop(out, x, 3, 19, 26, b));
    CHECK(out[0] == x[2 * 26 + 3] && out[12 * 17] == x[19 * 26 + 2 * 26 + 3]);
    b.top = 8;
    CHECK_STATUS(tm_image_crop(out, x, 3, 19, 26, b), TM_ERR_INVALID);
    b.top = 2;
    CHECK_OK(tm_image_resized_crop(out, x, 3, 19, 26, b, 8, 8, TM_FILTER_BILINEAR, 1));
    compare("resize antialias", "resized_crop_bilinear", out, 3 * 8 * 8, 5e-6);
    CHECK_OK(tm_image_resized_crop(out, x, 3, 19, 26, b, 30, 24, TM_FILTER_BICUBIC, 1));
    compare("resize antialias", "resized_crop_bicubic", out, 3 * 30 * 24, 5e-6);
    free(out);
}

static void test_normalize_patchify(void)
{
    const float *x = X.data;
    float *out = malloc(sizeof(float) * 3 * 19 * 26);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    CHECK_OK(tm_image_normalize(out, x, 3, 19, 26, mean, std));
    compare("normalize", "normalize", out, 3 * 19 * 26, 0.0);
    CHECK_OK(tm_image_normalize(out, out, 3, 19, 26, mean, mean)); /* in place */
    const float zero[3] = {0.5f, 0, 1};
    CHECK_STATUS(tm_image_normalize(out, x, 3, 19, 26, mean, zero), TM_ERR_INVALID);

    tm_tensor tp, t1;
    const float *xp = ref("xp", &tp), *x1 = ref("x1", &t1);
    float *pt = malloc(sizeof(float) * 3 * 16 * 24);
    CHECK_OK(tm_image_patchify(pt, xp, 3, 16, 24, 4));
    compare("patchify", "patchify_4", pt, 3 * 16 * 24, 0.0);
    CHECK_OK(tm_image_patchify(pt, xp, 3, 16, 24, 8));
    compare("patchify", "patchify_8", pt, 3 * 16 * 24, 0.0);
    CHECK_OK(tm_image_patchify(pt, x1, 1, 32, 32, 4));
    compare("patchify", "patchify_bench", pt, 32 * 32, 0.0);
    CHECK_STATUS(tm_image_patchify(pt, xp, 3, 16, 24, 5), TM_ERR_INVALID);
    CHECK_STATUS(tm_image_patchify(pt, xp, 3, 16, 24, 0), TM_ERR_INVALID);
    free(pt);
    free(out);
}

static void test_pipeline(void)
{
    tm_image *img = NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s", test_data_path("vision/img/rgb.png"));
    CHECK_OK(tm_image_load(&img, path, tm_image_decode_default_params()));
    if (!img) return;
    float out[32 * 32 * 3];
    tm_image_params p = tm_image_default_params();
    p.channels = 3;
    p.size = 16, p.height = 16, p.width = 12;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(p.mean, mean, sizeof mean);
    memcpy(p.std, std, sizeof std);
    int nd;
    int64_t shape[3];
    CHECK_OK(tm_image_preprocess_shape(&nd, shape, p));
    CHECK(nd == 3 && shape[0] == 3 && shape[1] == 16 && shape[2] == 12);
    CHECK_OK(tm_image_preprocess(out, sizeof out / sizeof *out, img, p));
    compare("pipeline", "pipeline_shorter", out, 3 * 16 * 12, 2e-5);

    p.mode = TM_RESIZE_EXACT;
    p.height = p.width = 20;
    p.filter = TM_FILTER_BICUBIC;
    CHECK_OK(tm_image_preprocess(out, sizeof out / sizeof *out, img, p));
    compare("pipeline", "pipeline_exact", out, 3 * 20 * 20, 2e-5);

    /* bench-small's input from an RGB file: gray, 32 x 32, patches of 4 */
    p = tm_image_default_params();
    p.patch = 4;
    CHECK_OK(tm_image_preprocess_shape(&nd, shape, p));
    CHECK(nd == 2 && shape[0] == 64 && shape[1] == 16);
    CHECK_OK(tm_image_preprocess(out, sizeof out / sizeof *out, img, p));
    compare("pipeline", "pipeline_bench", out, 32 * 32, 2e-5);

    CHECK_STATUS(tm_image_preprocess(out, 100, img, p), TM_ERR_INVALID);
    p.patch = 5;
    CHECK_STATUS(tm_image_preprocess(out, sizeof out / sizeof *out, img, p), TM_ERR_INVALID);
    p.patch = 0;
    p.std[0] = 0;
    CHECK_STATUS(tm_image_preprocess(out, sizeof out / sizeof *out, img, p), TM_ERR_INVALID);
    p = tm_image_default_params();
    p.channels = 2;
    CHECK_STATUS(tm_image_preprocess_shape(&nd, shape, p), TM_ERR_INVALID);
    /* size 0: crop only (here padding, as torchvision's center_crop) */
    p = tm_image_default_params();
    p.size = 0;
    p.height = 21, p.width = 20;
    p.mean[0] = 0, p.std[0] = 1;
    CHECK_OK(tm_image_preprocess(out, sizeof out / sizeof *out, img, p));
    CHECK(out[0] == 0.0f && out[20 * 21 - 1] == 0.0f);
    /* allocation failures are reported */
    int nomem = 0;
    p = tm_image_default_params();
    for (long k = 1; k < 8; k++) {
        tm_alloc_fail_after(k);
        tm_status s = tm_image_preprocess(out, sizeof out / sizeof *out, img, p);
        tm_alloc_fail_after(0);
        if (s) {
            CHECK(s == TM_ERR_NOMEM);
            nomem++;
        }
    }
    CHECK(nomem > 0);
    tm_image_free(img);
}

int main(void)
{
    tm_status s = tm_safetensors_open(&refs, test_data_path("vision/transform.safetensors"));
    CHECK_OK(s);
    if (s) return test_finish("test_transform");
    CHECK_OK(tm_safetensors_get(refs, "x", &X));
    test_to_float();
    test_resize();
    test_crop_pad();
    test_normalize_patchify();
    test_pipeline();
    for (int i = 0; i < n_fams; i++)
        printf("max abs error vs torchvision, %s: %.3g\n", fams[i].family, fams[i].max_err);
    tm_safetensors_close(refs);
    return test_finish("test_transform");
}
