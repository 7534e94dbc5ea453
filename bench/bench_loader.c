/* Loader throughput on a synthetic dataset made in a temporary folder:
 * `rows` examples of a 28 x 28 RGB PNG, a 1.5 s 16 kHz WAV and a short
 * text, read into bench-small's inputs (32 tokens, 1 x 32 x 32 images,
 * 64 x 100 log-mels) in batches of 64, for each worker count: the first
 * epoch (every file decoded) and the second (served by the cache), and
 * optionally with augmentations on (which also runs on cached epochs).
 *
 * Usage: bench_loader [--rows N] [--workers 1,2] [--batch B] [--augment]
 *                     [--keep DIR]
 * Output: one JSON object per line on stdout, progress on stderr:
 *   {"bench":"loader","rows","batch","workers","augment","epoch":0|1,
 *    "examples_per_s","wait_s","decode_s","work_s","cache_hits",
 *    "cache_misses","cache_mb"}
 * examples_per_s is measured by a consumer that does nothing else, so it is
 * the most the loader can feed a trainer. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trimodal/data.h"
#include "trimodal/io.h"

static int write_wav(const char *path, int rate, int n, int seed)
{
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    uint32_t data = (uint32_t)n * 2, riff = 36 + data, fmt = 16, br = (uint32_t)rate * 2;
    uint32_t r = (uint32_t)rate;
    uint16_t pcm = 1, ch = 1, align = 2, bits = 16;
    fwrite("RIFF", 1, 4, f);
    fwrite(&riff, 4, 1, f);
    fwrite("WAVEfmt ", 1, 8, f);
    fwrite(&fmt, 4, 1, f);
    fwrite(&pcm, 2, 1, f);
    fwrite(&ch, 2, 1, f);
    fwrite(&r, 4, 1, f);
    fwrite(&br, 4, 1, f);
    fwrite(&align, 2, 1, f);
    fwrite(&bits, 2, 1, f);
    fwrite("data", 1, 4, f);
    fwrite(&data, 4, 1, f);
    int16_t *s = malloc((size_t)n * sizeof *s);
    if (!s) {
        fclose(f);
        return 0;
    }
    double hz = 200 + 37 * (seed % 40);
    for (int i = 0; i < n; i++)
        s[i] = (int16_t)(8000 * sin(2 * 3.14159265358979 * hz * i / rate));
    fwrite(s, 2, (size_t)n, f);
    free(s);
    return fclose(f) == 0;
}

static const char *words[] = {"red",    "blue",   "sneaker", "boot",  "leather", "canvas",
                              "a",      "the",    "with",    "laces", "high",    "low",
                              "summer", "winter", "sandal",  "bag"};

static int make_dataset(const char *dir, int rows, char ***texts_out)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/img", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/wav", dir);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/manifest.jsonl", dir);
    FILE *m = fopen(path, "w");
    if (!m) return 0;
    char **texts = calloc((size_t)rows, sizeof *texts);
    /* one PNG written through the library, its bytes copied to every row
     * (the atomic writer's fsync per file would make set-up slow) */
    tm_image *img;
    if (tm_image_new(&img, 28, 28, 3)) return 0;
    for (int k = 0; k < 28 * 28 * 3; k++)
        img->data[k] = (uint8_t)(k * 13 + (k / 84) * 7);
    snprintf(path, sizeof path, "%s/img/first.png", dir);
    char *png;
    size_t png_size;
    if (tm_image_save_png(img, path) || tm_read_file(path, 1 << 20, &png, &png_size)) return 0;
    tm_image_free(img);
    for (int i = 0; i < rows; i++) {
        snprintf(path, sizeof path, "%s/img/%d.png", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(png, 1, png_size, f) != png_size || fclose(f)) return 0;
        snprintf(path, sizeof path, "%s/wav/%d.wav", dir, i);
        if (!write_wav(path, 16000, 24000, i)) return 0;
        char text[128];
        snprintf(text, sizeof text, "%s %s %s %s %s", words[i % 16], words[(i / 3) % 16],
                 words[(i / 7) % 16], words[(i / 11) % 16], words[(i / 2) % 16]);
        texts[i] = strdup(text);
        fprintf(m,
                "{\"id\": %d, \"text\": \"%s\", \"image\": \"img/%d.png\", \"audio\": "
                "\"wav/%d.wav\", \"label\": %d, \"split\": \"train\"}\n",
                i, text, i, i, i % 10);
    }
    tm_free(png);
    *texts_out = texts;
    return fclose(m) == 0;
}

int main(int argc, char **argv)
{
    int rows = 2000, batch = 64, augment = 0;
    const char *workers = "1,2", *keep = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--workers") && i + 1 < argc)
            workers = argv[++i];
        else if (!strcmp(argv[i], "--keep") && i + 1 < argc)
            keep = argv[++i];
        else if (!strcmp(argv[i], "--augment"))
            augment = 1;
        else {
            fprintf(stderr,
                    "usage: bench_loader [--rows N] [--workers 1,2] [--batch B] [--augment] "
                    "[--keep DIR]\n");
            return 2;
        }
    }
    if (rows < 1 || batch < 1) return 2;
    char dir[512];
    if (keep)
        snprintf(dir, sizeof dir, "%s", keep);
    else {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/tm_bench_loader_XXXXXX", base && base[0] ? base : "/tmp");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    mkdir(dir, 0755);
    fprintf(stderr, "bench_loader: writing %d examples into %s\n", rows, dir);
    double t = tm_time_s();
    char **texts = NULL;
    if (!make_dataset(dir, rows, &texts)) {
        fprintf(stderr, "bench_loader: cannot write the dataset: %s\n", tm_last_error());
        return 1;
    }
    fprintf(stderr, "bench_loader: written in %.1f s\n", tm_time_s() - t);
    size_t *lens = malloc((size_t)rows * sizeof *lens);
    for (int i = 0; i < rows; i++)
        lens[i] = strlen(texts[i]);
    tm_tokenizer_train_params tp = tm_tokenizer_train_default_params();
    tp.vocab_size = 400;
    tm_tokenizer *tok = NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s/manifest.jsonl", dir);
    tm_manifest *m = NULL;
    if (tm_tokenizer_train_memory(&tok, (const char *const *)texts, lens, rows, &tp) ||
        tm_manifest_load(&m, path, NULL)) {
        fprintf(stderr, "bench_loader: %s\n", tm_last_error());
        return 1;
    }
    int rc = 0;
    for (const char *w = workers; *w;) {
        int nw = atoi(w);
        tm_loader_config c = tm_loader_default_config();
        c.batch_size = batch;
        c.tokenizer = tok;
        c.workers = nw;
        c.seed = 1;
        if (augment) {
            c.augment = 1;
            c.aug.image_crop = c.aug.image_flip = c.aug.image_jitter = 1;
            c.aug.specaug = 1;
            c.aug.text_delete_prob = 0.1f;
            c.aug.modality_dropout[0] = c.aug.modality_dropout[1] = c.aug.modality_dropout[2] =
                0.1f;
        }
        tm_loader *l;
        if (tm_loader_new(&l, m, &c)) {
            fprintf(stderr, "bench_loader: %s\n", tm_last_error());
            rc = 1;
            break;
        }
        tm_loader_stats prev;
        memset(&prev, 0, sizeof prev);
        double t0 = tm_time_s();
        for (int epoch = 0; epoch < 2; epoch++) {
            const tm_batch *b;
            int64_t n = 0;
            tm_status s;
            while ((s = tm_loader_next(l, &b)) == TM_OK && b)
                n += b->size;
            if (s) {
                fprintf(stderr, "bench_loader: %s\n", tm_last_error());
                rc = 1;
                break;
            }
            double t1 = tm_time_s();
            tm_loader_stats st = tm_loader_get_stats(l);
            printf("{\"bench\":\"loader\",\"rows\":%d,\"batch\":%d,\"workers\":%d,\"augment\":%s,"
                   "\"epoch\":%d,\"examples_per_s\":%.1f,\"wait_s\":%.3f,\"decode_s\":%.3f,"
                   "\"work_s\":%.3f,\"cache_hits\":%lld,\"cache_misses\":%lld,\"cache_mb\":%.1f}\n",
                   rows, batch, nw, augment ? "true" : "false", epoch, n / (t1 - t0),
                   st.wait_s - prev.wait_s, st.decode_s - prev.decode_s, st.work_s - prev.work_s,
                   (long long)(st.cache_hits - prev.cache_hits),
                   (long long)(st.cache_misses - prev.cache_misses), st.cache_bytes / 1048576.0);
            fflush(stdout);
            prev = st;
            t0 = t1;
        }
        tm_loader_free(l);
        w = strchr(w, ',');
        if (!w) break;
        w++;
    }
    tm_manifest_free(m);
    tm_tokenizer_free(tok);
    for (int i = 0; i < rows; i++)
        free(texts[i]);
    free(texts);
    free(lens);
    if (!keep) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "bench_loader: could not remove %s\n", dir);
    }
    return rc;
}
