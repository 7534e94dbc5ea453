/* trimodal data build fashion-mnist: Fashion-MNIST as it is, one PNG per
 * image and a manifest, so that a model trained on FashionTri can be
 * measured on the plain images (no hints, no degradation).
 *
 * Layout (the same as FashionTri's images):
 *   images/SPLIT/NNN/IIIIII.png   28 x 28 gray, NNN = IIIIII / 1000
 *   manifest.jsonl                {"id","split","label","class","image"}
 *   dataset.json                  name, classes, splits, source sizes
 * Media first (whole files, synced once), then the manifest and
 * dataset.json atomically: a folder with a dataset.json is complete. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "fashiontri_internal.h"
#include "trimodal/datasets.h"
#include "trimodal/eval.h"
#include "trimodal/io.h"
#include "trimodal/vision.h"

#define FM_MAX_FILE ((size_t)128 << 20)

static const char *const fm_classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                           "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                           "Bag",         "Ankle boot"};

tm_fashionmnist_params tm_fashionmnist_default_params(void)
{
    tm_fashionmnist_params p;
    memset(&p, 0, sizeof p);
    p.test = 1;
    return p;
}

/* NAME.gz or NAME in dir; its size in *bytes. */
static tm_status find_source(char *out, size_t size, const char *dir, const char *name,
                             int64_t *bytes)
{
    struct stat sb;
    snprintf(out, size, "%s/%s.gz", dir, name);
    if (stat(out, &sb) != 0) {
        snprintf(out, size, "%s/%s", dir, name);
        if (stat(out, &sb) != 0)
            return tm_fail(TM_ERR_IO,
                           "%s/%s(.gz): missing; install the Debian package "
                           "dataset-fashion-mnist (apt-get install -y dataset-fashion-mnist) "
                           "or pass --fashion-mnist DIR",
                           dir, name);
    }
    *bytes = (int64_t)sb.st_size;
    return TM_OK;
}

/* Reads an IDX file (gzipped or not); the decompressed bytes stay in *raw
 * (the IDX view points into them). */
static tm_status open_idx(const char *path, uint8_t **raw, size_t *raw_len, tm_idx **idx)
{
    char *file = NULL;
    size_t n = 0;
    tm_status s = tm_read_file(path, FM_MAX_FILE, &file, &n);
    if (s != TM_OK) return s;
    s = ft_gunzip(raw, raw_len, (const uint8_t *)file, n, FM_MAX_FILE, path);
    tm_free(file);
    if (s != TM_OK) return s;
    s = tm_idx_open_memory(idx, *raw, *raw_len, tm_image_default_limits());
    if (s != TM_OK) return tm_fail(s, "%s: %s", path, tm_last_error());
    return TM_OK;
}

typedef struct {
    const char *split; /* "train" or "test" */
    const char *images, *labels;
    int64_t want;
} fm_split;

static const fm_split fm_splits[2] = {
    {"train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000},
    {"test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000},
};

/* The recipe: the splits and the sizes of the source files. */
static cJSON *recipe_json(const tm_fashionmnist_params *p, const int64_t bytes[2][2])
{
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    if (p->limit > 0) cJSON_AddNumberToObject(r, "limit", (double)p->limit);
    cJSON *sp = cJSON_AddArrayToObject(r, "splits");
    cJSON *src = cJSON_AddObjectToObject(r, "file_bytes");
    if (!sp || !src) {
        cJSON_Delete(r);
        return NULL;
    }
    for (int k = 0; k < 2; k++) {
        if (!(k == 0 ? p->train : p->test)) continue;
        cJSON_AddItemToArray(sp, cJSON_CreateString(fm_splits[k].split));
        cJSON_AddNumberToObject(src, fm_splits[k].images, (double)bytes[k][0]);
        cJSON_AddNumberToObject(src, fm_splits[k].labels, (double)bytes[k][1]);
    }
    return r;
}

/* 1 when out/dataset.json holds this recipe and the manifest exists. */
static int up_to_date(const char *out, const cJSON *recipe)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.jsonl", out);
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    snprintf(path, sizeof path, "%s/dataset.json", out);
    char *text = NULL;
    size_t n = 0;
    if (tm_read_file(path, (size_t)1 << 20, &text, &n) != TM_OK) {
        tm_clear_error();
        return 0;
    }
    cJSON *d = cJSON_ParseWithLength(text, n);
    tm_free(text);
    int same = d && cJSON_IsString(cJSON_GetObjectItem(d, "name")) &&
               !strcmp(cJSON_GetObjectItem(d, "name")->valuestring, "fashion-mnist") &&
               cJSON_Compare(cJSON_GetObjectItem(d, "recipe"), recipe, 1);
    cJSON_Delete(d);
    return same;
}

/* dataset.json exists but is not ours: refuse to write over another dataset. */
static tm_status check_folder(const char *out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/dataset.json", out);
    char *text = NULL;
    size_t n = 0;
    if (tm_read_file(path, (size_t)1 << 20, &text, &n) != TM_OK) {
        tm_clear_error();
        return TM_OK; /* none (or unreadable): nothing to protect */
    }
    cJSON *d = cJSON_ParseWithLength(text, n);
    tm_free(text);
    const cJSON *name = d ? cJSON_GetObjectItem(d, "name") : NULL;
    int ours = cJSON_IsString(name) && !strcmp(name->valuestring, "fashion-mnist");
    cJSON_Delete(d);
    if (!ours)
        return tm_fail(TM_ERR_INVALID,
                       "%s holds another dataset (its dataset.json is not Fashion-MNIST's); "
                       "choose an empty folder for --out",
                       out);
    return TM_OK;
}

static tm_status write_split(const tm_fashionmnist_params *p, int k, const tm_idx *im,
                             const tm_idx *lb, cJSON *lines_out, int64_t *written)
{
    const fm_split *sp = &fm_splits[k];
    int64_t n = tm_idx_count(im);
    if (tm_idx_ndim(im) != 3 || tm_idx_height(im) != 28 || tm_idx_width(im) != 28 ||
        n != sp->want || tm_idx_ndim(lb) != 1 || tm_idx_count(lb) != n)
        return tm_fail(TM_ERR_FORMAT,
                       "Fashion-MNIST %s files: want %lld images of 28 x 28 and as many labels, "
                       "found %lld images of %d x %d and %lld labels",
                       sp->split, (long long)sp->want, (long long)n, tm_idx_height(im),
                       tm_idx_width(im), (long long)tm_idx_count(lb));
    const uint8_t *labels = tm_idx_data(lb);
    const uint8_t *pixels = tm_idx_data(im);
    if (p->limit > 0 && p->limit < n) n = p->limit;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] > 9)
            return tm_fail(TM_ERR_FORMAT, "Fashion-MNIST %s label %lld is %d (want 0..9)",
                           sp->split, (long long)i, labels[i]);
        char rel[128], path[4096], dir[4096];
        snprintf(rel, sizeof rel, "images/%s/%03lld/%06lld.png", sp->split,
                 (long long)(i / 1000), (long long)i);
        snprintf(path, sizeof path, "%s/%s", p->out_dir, rel);
        if (i % 1000 == 0) {
            snprintf(dir, sizeof dir, "%s/images/%s/%03lld", p->out_dir, sp->split,
                     (long long)(i / 1000));
            tm_status s = ft_mkdirs(dir);
            if (s != TM_OK) return s;
        }
        struct stat sb;
        if (stat(path, &sb) != 0 || sb.st_size == 0) { /* a resumed build keeps what exists */
            uint8_t *png = NULL;
            size_t png_size = 0;
            tm_status s = tm_png_encode(pixels + (size_t)i * 784, 28, 28, 1, &png, &png_size);
            if (s != TM_OK) return s;
            s = ft_write_file(path, png, png_size);
            tm_free(png);
            if (s != TM_OK) return s;
        }
        cJSON *o = cJSON_CreateObject();
        char id[32];
        snprintf(id, sizeof id, "%s-%06lld", sp->split, (long long)i);
        if (!o || !cJSON_AddStringToObject(o, "id", id) ||
            !cJSON_AddStringToObject(o, "split", sp->split) ||
            !cJSON_AddNumberToObject(o, "label", labels[i]) ||
            !cJSON_AddStringToObject(o, "class", fm_classes[labels[i]]) ||
            !cJSON_AddStringToObject(o, "image", rel)) {
            cJSON_Delete(o);
            return tm_fail(TM_ERR_NOMEM, "out of memory building the manifest");
        }
        cJSON_AddItemToArray(lines_out, o);
        (*written)++;
        if (p->progress && (i + 1) % 1000 == 0) p->progress(p->progress_ctx, sp->split, i + 1, n);
    }
    return TM_OK;
}

/* The manifest text: one compact JSON object a line. */
static tm_status manifest_text(const cJSON *lines, char **out, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = tm_alloc(cap);
    if (!buf) return tm_fail(TM_ERR_NOMEM, "out of memory building the manifest");
    const cJSON *o;
    cJSON_ArrayForEach(o, lines)
    {
        char *line = cJSON_PrintUnformatted(o);
        if (!line) {
            tm_free(buf);
            return tm_fail(TM_ERR_NOMEM, "out of memory building the manifest");
        }
        size_t m = strlen(line);
        if (n + m + 2 > cap) {
            size_t nc = cap * 2 + m;
            char *nb = tm_alloc(nc);
            if (!nb) {
                cJSON_free(line);
                tm_free(buf);
                return tm_fail(TM_ERR_NOMEM, "out of memory building the manifest");
            }
            memcpy(nb, buf, n);
            tm_free(buf);
            buf = nb;
            cap = nc;
        }
        memcpy(buf + n, line, m);
        n += m;
        buf[n++] = '\n';
        cJSON_free(line);
    }
    *out = buf;
    *len = n;
    return TM_OK;
}

tm_status tm_fashionmnist_build(const tm_fashionmnist_params *params,
                                tm_fashionmnist_summary *summary)
{
    if (!params || !params->out_dir || !*params->out_dir)
        return tm_fail(TM_ERR_INVALID, "fashion-mnist: out_dir is required");
    if (params->limit < 0)
        return tm_fail(TM_ERR_INVALID, "fashion-mnist: limit %lld is negative",
                       (long long)params->limit);
    if (!params->train && !params->test)
        return tm_fail(TM_ERR_INVALID, "fashion-mnist: choose at least one split (train, test)");
    const tm_fashionmnist_params *p = params;
    const char *src = p->source_dir ? p->source_dir : "/usr/share/datasets/fashion-mnist";
    tm_fashionmnist_summary sum;
    memset(&sum, 0, sizeof sum);

    char paths[2][2][4096];
    int64_t bytes[2][2] = {{0, 0}, {0, 0}};
    for (int k = 0; k < 2; k++) {
        if (!(k == 0 ? p->train : p->test)) continue;
        tm_status s = find_source(paths[k][0], sizeof paths[k][0], src, fm_splits[k].images,
                                  &bytes[k][0]);
        if (s == TM_OK)
            s = find_source(paths[k][1], sizeof paths[k][1], src, fm_splits[k].labels,
                            &bytes[k][1]);
        if (s != TM_OK) return s;
    }
    cJSON *recipe = recipe_json(p, bytes);
    if (!recipe) return tm_fail(TM_ERR_NOMEM, "out of memory");
    tm_status s = ft_mkdirs(p->out_dir);
    if (s == TM_OK) s = check_folder(p->out_dir);
    if (s != TM_OK) {
        cJSON_Delete(recipe);
        return s;
    }
    if (up_to_date(p->out_dir, recipe)) {
        cJSON_Delete(recipe);
        sum.up_to_date = 1;
        if (summary) *summary = sum;
        return TM_OK;
    }

    cJSON *lines = cJSON_CreateArray();
    cJSON *doc = cJSON_CreateObject();
    cJSON *splits = doc ? cJSON_AddObjectToObject(doc, "splits") : NULL;
    if (!lines || !doc || !splits) {
        s = tm_fail(TM_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < 2 && s == TM_OK; k++) {
        if (!(k == 0 ? p->train : p->test)) continue;
        uint8_t *raw[2] = {NULL, NULL};
        size_t raw_len[2] = {0, 0};
        tm_idx *idx[2] = {NULL, NULL};
        s = open_idx(paths[k][0], &raw[0], &raw_len[0], &idx[0]);
        if (s == TM_OK) s = open_idx(paths[k][1], &raw[1], &raw_len[1], &idx[1]);
        int64_t w = 0;
        if (s == TM_OK) s = write_split(p, k, idx[0], idx[1], lines, &w);
        for (int j = 0; j < 2; j++) {
            tm_idx_close(idx[j]);
            tm_free(raw[j]);
        }
        if (s == TM_OK) {
            cJSON_AddNumberToObject(splits, fm_splits[k].split, (double)w);
            if (k == 0) sum.n_train = w;
            else sum.n_test = w;
        }
    }
    if (s != TM_OK) goto out;
    sync(); /* the media, durably, before the files that name them */

    char *text = NULL;
    size_t len = 0;
    char path[4096];
    if ((s = manifest_text(lines, &text, &len)) != TM_OK) goto out;
    snprintf(path, sizeof path, "%s/manifest.jsonl", p->out_dir);
    s = tm_write_file_atomic(path, text, len);
    tm_free(text);
    if (s != TM_OK) goto out;

    cJSON_AddStringToObject(doc, "name", "fashion-mnist");
    cJSON_AddStringToObject(doc, "description",
                            "Fashion-MNIST (Zalando Research) as it is: one 28 x 28 gray PNG per "
                            "image, its own train/test split; no hints and no degradation "
                            "(docs/datasets.md)");
    cJSON_AddStringToObject(doc, "manifest", "manifest.jsonl");
    cJSON *cls = cJSON_CreateStringArray(fm_classes, 10);
    if (cls) cJSON_AddItemToObject(doc, "classes", cls);
    cJSON_AddStringToObject(doc, "source", src);
    cJSON_AddItemToObject(doc, "recipe", recipe);
    recipe = NULL;
    text = cJSON_Print(doc);
    if (!text) {
        s = tm_fail(TM_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(path, sizeof path, "%s/dataset.json", p->out_dir);
    s = tm_write_file_atomic(path, text, strlen(text));
    cJSON_free(text);
out:
    cJSON_Delete(recipe);
    cJSON_Delete(lines);
    cJSON_Delete(doc);
    if (s == TM_OK && summary) *summary = sum;
    return s;
}
