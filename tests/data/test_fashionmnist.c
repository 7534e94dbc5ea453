/* data: the plain Fashion-MNIST export (src/data/fashionmnist.c).
 *
 * The reference is the gzip program: the labels and pixels it decodes from
 * the Debian package's IDX files must be exactly what the manifest and the
 * PNGs hold. Then the up-to-date no-op, a changed recipe rewriting the
 * folder, the refusal of another dataset's folder, and bad parameters.
 * Without Fashion-MNIST the build part is skipped with a notice
 * (scripts/deps.sh installs dataset-fashion-mnist). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"
#include "trimodal/datasets.h"
#include "trimodal/io.h"
#include "trimodal/vision.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

static char tmp_root[256];

static uint8_t *gunzip_file(const char *name, size_t *n)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "gzip -dc %s/%s.gz", FMNIST, name);
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    size_t cap = 64 << 20;
    uint8_t *buf = malloc(cap);
    *n = buf ? fread(buf, 1, cap, p) : 0;
    pclose(p);
    return buf;
}

/* Every manifest line against the IDX bytes; returns the line count. */
static int64_t check_split(const char *dir, const char *split, const char *images,
                           const char *labels, int64_t limit)
{
    size_t ni = 0, nl = 0;
    uint8_t *px = gunzip_file(images, &ni), *lb = gunzip_file(labels, &nl);
    CHECK(px && lb && ni > 16 && nl > 8);
    char path[512];
    snprintf(path, sizeof path, "%s/manifest.jsonl", dir);
    char *text = NULL;
    size_t n = 0;
    CHECK_OK(tm_read_file(path, (size_t)64 << 20, &text, &n));
    int64_t count = 0;
    for (char *line = text; text && line < text + n;) {
        char *end = memchr(line, '\n', (size_t)(text + n - line));
        if (!end) break;
        cJSON *o = cJSON_ParseWithLength(line, (size_t)(end - line));
        line = end + 1;
        CHECK(o != NULL);
        if (!o) continue;
        const cJSON *sp = cJSON_GetObjectItem(o, "split");
        if (!cJSON_IsString(sp) || strcmp(sp->valuestring, split)) {
            cJSON_Delete(o);
            continue;
        }
        char id[32];
        snprintf(id, sizeof id, "%s-%06lld", split, (long long)count);
        CHECK(!strcmp(cJSON_GetObjectItem(o, "id")->valuestring, id));
        CHECK(cJSON_GetObjectItem(o, "label")->valueint == lb[8 + count]);
        CHECK(!cJSON_HasObjectItem(o, "text") && !cJSON_HasObjectItem(o, "audio"));
        if (count % 37 == 0) { /* a sample of the pictures, pixel for pixel */
            snprintf(path, sizeof path, "%s/%s", dir,
                     cJSON_GetObjectItem(o, "image")->valuestring);
            tm_image *img = NULL;
            tm_image_decode_params dp = tm_image_decode_default_params();
            dp.channels = 0; /* as stored: gray */
            CHECK_OK(tm_image_load(&img, path, dp));
            CHECK(img && img->width == 28 && img->height == 28 && img->channels == 1);
            if (img) CHECK(!memcmp(img->data, px + 16 + (size_t)count * 784, 784));
            tm_image_free(img);
        }
        cJSON_Delete(o);
        count++;
    }
    CHECK(count == limit);
    tm_free(text);
    free(px);
    free(lb);
    return count;
}

static void test_build(void)
{
    struct stat sb;
    if (stat(FMNIST "/t10k-images-idx3-ubyte.gz", &sb) != 0) {
        printf("SKIP fashion-mnist build: %s missing (apt-get install -y dataset-fashion-mnist)\n",
               FMNIST);
        return;
    }
    char dir[300];
    snprintf(dir, sizeof dir, "%s/fm", tmp_root);
    tm_fashionmnist_params p = tm_fashionmnist_default_params();
    CHECK(p.test == 1 && p.train == 0 && p.limit == 0);
    p.out_dir = dir;
    p.limit = 150;
    tm_fashionmnist_summary s;
    CHECK_OK(tm_fashionmnist_build(&p, &s));
    CHECK(!s.up_to_date && s.n_test == 150 && s.n_train == 0);
    check_split(dir, "test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 150);

    /* dataset.json */
    char path[400];
    snprintf(path, sizeof path, "%s/dataset.json", dir);
    char *text = NULL;
    size_t n = 0;
    CHECK_OK(tm_read_file(path, 1 << 20, &text, &n));
    cJSON *d = text ? cJSON_ParseWithLength(text, n) : NULL;
    CHECK(d && !strcmp(cJSON_GetObjectItem(d, "name")->valuestring, "fashion-mnist"));
    CHECK(d && cJSON_GetArraySize(cJSON_GetObjectItem(d, "classes")) == 10);
    CHECK(d && cJSON_GetObjectItem(cJSON_GetObjectItem(d, "splits"), "test")->valueint == 150);
    cJSON_Delete(d);
    tm_free(text);

    /* the same recipe again: nothing to do */
    CHECK_OK(tm_fashionmnist_build(&p, &s));
    CHECK(s.up_to_date);

    /* another recipe (both splits) rewrites the manifest */
    p.train = 1;
    p.limit = 40;
    CHECK_OK(tm_fashionmnist_build(&p, &s));
    CHECK(!s.up_to_date && s.n_train == 40 && s.n_test == 40);
    check_split(dir, "train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 40);
    check_split(dir, "test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 40);

    /* a folder holding another dataset is refused, and left alone */
    char other[300];
    snprintf(other, sizeof other, "%s/other", tmp_root);
    mkdir(other, 0777);
    snprintf(path, sizeof path, "%s/dataset.json", other);
    CHECK_OK(tm_write_file_atomic(path, "{\"name\":\"fashion-tri\"}", 22));
    p.out_dir = other;
    CHECK_STATUS(tm_fashionmnist_build(&p, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "another dataset") != NULL);
    snprintf(path, sizeof path, "%s/manifest.jsonl", other);
    CHECK(stat(path, &sb) != 0);
}

static void test_bad_params(void)
{
    tm_fashionmnist_params p = tm_fashionmnist_default_params();
    CHECK_STATUS(tm_fashionmnist_build(&p, NULL), TM_ERR_INVALID); /* no out_dir */
    CHECK_STATUS(tm_fashionmnist_build(NULL, NULL), TM_ERR_INVALID);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/bad", tmp_root);
    p.out_dir = dir;
    p.limit = -1;
    CHECK_STATUS(tm_fashionmnist_build(&p, NULL), TM_ERR_INVALID);
    p.limit = 0;
    p.test = 0;
    CHECK_STATUS(tm_fashionmnist_build(&p, NULL), TM_ERR_INVALID); /* no split */
    p.test = 1;
    p.source_dir = "/nonexistent/fashion-mnist";
    CHECK_STATUS(tm_fashionmnist_build(&p, NULL), TM_ERR_IO);
    CHECK(strstr(tm_last_error(), "dataset-fashion-mnist") != NULL);

    /* a corrupt source: the label file holds a label of 200 */
    char src[300], f[400];
    snprintf(src, sizeof src, "%s/src", tmp_root);
    mkdir(src, 0777);
    uint8_t hdr_i[16] = {0, 0, 8, 3, 0, 0, 0x27, 0x10, 0, 0, 0, 28, 0, 0, 0, 28};
    uint8_t *img = calloc(16 + (size_t)10000 * 784, 1);
    uint8_t *lab = calloc(8 + 10000, 1);
    if (!img || !lab) {
        free(img);
        free(lab);
        CHECK(0);
        return;
    }
    memcpy(img, hdr_i, 16);
    uint8_t hdr_l[8] = {0, 0, 8, 1, 0, 0, 0x27, 0x10};
    memcpy(lab, hdr_l, 8);
    lab[8 + 5] = 200;
    snprintf(f, sizeof f, "%s/t10k-images-idx3-ubyte", src);
    CHECK_OK(tm_write_file_atomic(f, img, 16 + (size_t)10000 * 784));
    snprintf(f, sizeof f, "%s/t10k-labels-idx1-ubyte", src);
    CHECK_OK(tm_write_file_atomic(f, lab, 8 + 10000));
    p.source_dir = src;
    p.limit = 10;
    CHECK_STATUS(tm_fashionmnist_build(&p, NULL), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "label 5 is 200") != NULL);
    /* a truncated image file */
    snprintf(f, sizeof f, "%s/t10k-images-idx3-ubyte", src);
    CHECK_OK(tm_write_file_atomic(f, img, 16 + 784));
    CHECK(tm_fashionmnist_build(&p, NULL) != TM_OK);
    snprintf(f, sizeof f, "%s/manifest.jsonl", dir);
    struct stat sb;
    CHECK(stat(f, &sb) != 0); /* nothing named without its media */
    free(img);
    free(lab);
}

int main(void)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/tm-fashionmnist-XXXXXX");
    if (!mkdtemp(tmp_root)) return 1;
    test_build();
    test_bad_params();
    if (test_failures == 0)
        test_rm_tree(tmp_root);
    else
        fprintf(stderr, "files kept in %s\n", tmp_root);
    return test_finish("data_fashionmnist");
}
