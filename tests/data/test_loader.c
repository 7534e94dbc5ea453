/* data: the loader. Batches against the front-ends run by hand (tokens,
 * image tensor, log-mel), padding, masks and present flags, determinism for
 * any number of workers, sharding, resuming, the cache, bad media, and the
 * alignment fields mapped into model coordinates. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/data.h"

static char tmpdir[256];
static tm_tokenizer *tok;

#define T 8
#define IMG 16
#define NM 32
#define NF 40
#define N_ROWS 23

static const char *tpath(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static void write_text(const char *name, const char *text)
{
    FILE *f = fopen(tpath(name), "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void write_wav(const char *name, int rate, int n, int seed)
{
    FILE *f = fopen(tpath(name), "wb");
    if (!f) return;
    uint32_t data = (uint32_t)n * 2, riff = 36 + data, fmt = 16, br = (uint32_t)rate * 2,
             r = (uint32_t)rate;
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
    for (int i = 0; i < n; i++) {
        int16_t v = (int16_t)(6000 * ((i / (10 + seed % 7)) % 2 ? 1 : -1) + 37 * (i % 50) - 900);
        fwrite(&v, 2, 1, f);
    }
    fclose(f);
}

static void write_png(const char *name, int w, int h, int seed)
{
    tm_image *img;
    if (tm_image_new(&img, w, h, 3)) return;
    for (int i = 0; i < w * h * 3; i++)
        img->data[i] = (uint8_t)(i * 7 + seed * 31 + (i / 5) % 3);
    CHECK_OK(tm_image_save_png(img, tpath(name)));
    tm_image_free(img);
}

static const char *texts[] = {
    "a red sneaker", "blue boots for the winter and the long rainy autumn", "a hat",
    "green sandals with straps", "one two three four five six seven eight nine"};

/* The fixture: 20 train rows, 3 test rows; some rows lack a modality or a
 * label; row 11 has a region, every audio has word timings. */
static void make_dataset(void)
{
    char line[1024], all[64 * 1024];
    size_t at = 0;
    for (int i = 0; i < N_ROWS; i++) {
        char img[32], wav[32];
        snprintf(img, sizeof img, "img/%d.png", i);
        snprintf(wav, sizeof wav, "wav/%d.wav", i);
        if (i == 11)
            write_png(img, 40, 20, i);
        else
            write_png(img, 16 + i, 10 + i % 5, i);
        write_wav(wav, 8000, 2400 + 100 * i, i);
        int n = snprintf(line, sizeof line, "{\"id\": \"ex%d\"", i);
        if (i != 7)
            n += snprintf(line + n, sizeof line - n, ", \"text\": \"%s %d\"", texts[i % 5], i);
        if (i != 3) n += snprintf(line + n, sizeof line - n, ", \"image\": \"%s\"", img);
        if (i != 5)
            n +=
                snprintf(line + n, sizeof line - n,
                         ", \"audio\": \"%s\", \"words\": [{\"w\": \"a\", \"start\": 0.1, \"end\": "
                         "0.25}, {\"w\": \"b\", \"start\": 0.35, \"end\": 0.5}]",
                         wav);
        if (i != 9) n += snprintf(line + n, sizeof line - n, ", \"label\": %d", i % 4);
        if (i == 11) n += snprintf(line + n, sizeof line - n, ", \"region\": [12, 5, 30, 15]");
        n += snprintf(line + n, sizeof line - n, ", \"split\": \"%s\"}\n",
                      i < 20 ? "train" : "test");
        memcpy(all + at, line, (size_t)n);
        at += (size_t)n;
    }
    all[at] = '\0';
    write_text("m.jsonl", all);
}

static tm_loader_config base_config(void)
{
    tm_loader_config c = tm_loader_default_config();
    c.batch_size = 4;
    c.text_tokens = T;
    c.pad_id = 3;
    c.image_channels = 1;
    c.image_h = c.image_w = IMG;
    c.n_mels = NM;
    c.n_frames = NF;
    c.tokenizer = tok;
    c.preprocess.text.max_length = T;
    c.preprocess.image.size = IMG;
    c.preprocess.image.height = c.preprocess.image.width = IMG;
    c.preprocess.audio.n_mels = NM;
    c.preprocess.audio.target_frames = NF;
    c.split = "train";
    c.shuffle = 0;
    c.workers = 2;
    return c;
}

/* One example made by hand with the front-ends, as the loader should. */
static void check_example(const tm_manifest *m, const tm_loader_config *c, const tm_batch *b,
                          int64_t j)
{
    const tm_manifest_row *r = tm_manifest_row_at(m, b->rows[j]);
    CHECK(!strcmp(b->ids[j], r->id));
    CHECK(b->labels[j] == r->label);
    const uint8_t *pr = b->present + j * 3;
    CHECK(pr[0] == (r->text != NULL) && pr[1] == (r->image != NULL) && pr[2] == (r->audio != NULL));
    /* tokens: the text's ids cut to T, then pad_id */
    const int32_t *ids = b->tokens + j * T;
    if (r->text) {
        tm_tokenizer_encode_params ep = tm_tokenizer_encode_default_params();
        ep.max_length = T;
        tm_text_encoding *e;
        CHECK_OK(tm_tokenizer_encode(tok, r->text, r->text_len, &ep, &e));
        CHECK(b->n_tokens[j] == e->length);
        for (int k = 0; k < T; k++)
            CHECK(ids[k] == (k < e->length ? e->ids[k] : c->pad_id));
        tm_text_encoding_free(e);
    } else {
        CHECK(b->n_tokens[j] == 0);
        for (int k = 0; k < T; k++)
            CHECK(ids[k] == c->pad_id);
    }
    /* image */
    float ref[IMG * IMG];
    if (r->image) {
        tm_image_decode_params dp = tm_image_decode_default_params();
        dp.channels = 1;
        tm_image *img;
        CHECK_OK(tm_image_load(&img, r->image_path, dp));
        CHECK_OK(tm_image_preprocess(ref, IMG * IMG, img, c->preprocess.image));
        tm_image_free(img);
        check_close("image", b->image + j * IMG * IMG, ref, IMG * IMG, 0, 0);
    } else {
        memset(ref, 0, sizeof ref);
        check_close("missing image", b->image + j * IMG * IMG, ref, IMG * IMG, 0, 0);
    }
    /* log-mel */
    if (r->audio) {
        tm_audio_load_params lp = tm_audio_load_default_params();
        lp.sample_rate = 16000;
        lp.resampler = c->preprocess.audio.resampler;
        tm_audio *a;
        CHECK_OK(tm_audio_load_file(&a, r->audio_path, lp));
        tm_tensor *t = NULL;
        CHECK_OK(tm_audio_preprocess(&t, a, c->preprocess.audio));
        if (t) {
            CHECK(t->shape[0] == NM && t->shape[1] == NF);
            check_close("mel", b->mel + j * NM * NF, t->data, NM * NF, 0, 0);
        }
        tm_tensor_free(t);
        tm_audio_free(a);
        /* words at 0.1-0.25 s and 0.35-0.5 s: 100 frames a second */
        CHECK(b->n_words[j] == 2);
        const int32_t *wf = b->word_frames + j * c->max_words * 2;
        CHECK(wf[0] == 10 && wf[1] == 25 && wf[2] == 35 && wf[3] == 40 && wf[4] == -1);
    } else {
        CHECK(b->n_words[j] == 0);
        float z = 0;
        for (int k = 0; k < NM * NF; k++)
            z += b->mel[j * NM * NF + k] != 0;
        CHECK(z == 0);
    }
    /* region: 40 x 20 -> 32 x 16 -> center crop 16 at left 8: [12,5,30,15] -> [1.6,4,16,12] */
    if (r->has_region) {
        CHECK_NEAR(b->region[j * 4 + 0], 1.6, 1e-5, 0);
        CHECK_NEAR(b->region[j * 4 + 1], 4, 1e-5, 0);
        CHECK_NEAR(b->region[j * 4 + 2], 16, 1e-5, 0);
        CHECK_NEAR(b->region[j * 4 + 3], 12, 1e-5, 0);
    } else {
        CHECK(b->region[j * 4] == -1 && b->region[j * 4 + 3] == -1);
    }
}

static void test_contents(const tm_manifest *m)
{
    tm_loader_config c = base_config();
    c.batch_size = 6;
    tm_loader *l;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (!l) return;
    CHECK(tm_loader_epoch_size(l) == 20 && tm_loader_epoch_batches(l) == 4);
    const tm_batch *b;
    int64_t expect_row = 0;
    for (int k = 0; k < 4; k++) {
        CHECK_OK(tm_loader_next(l, &b));
        if (!b) break;
        CHECK(b->epoch == 0 && b->index == k * 6 && b->capacity == 6);
        CHECK(b->size == (k < 3 ? 6 : 2));
        for (int64_t j = 0; j < b->size; j++) {
            CHECK(b->rows[j] == expect_row++); /* file order without shuffle */
            check_example(m, &c, b, j);
        }
        /* padding rows of the short batch */
        for (int64_t j = b->size; j < 6; j++) {
            CHECK(b->rows[j] == -1 && b->ids[j] == NULL && b->labels[j] == TM_LABEL_NONE);
            CHECK(b->present[j * 3] == 0 && b->present[j * 3 + 1] == 0 &&
                  b->present[j * 3 + 2] == 0);
            CHECK(b->tokens[j * T] == c.pad_id && b->n_tokens[j] == 0);
        }
        tm_loader_pos p = tm_loader_position(l);
        CHECK(p.epoch == 0 && p.index == (k < 3 ? 6 * (k + 1) : 20));
    }
    CHECK_OK(tm_loader_next(l, &b));
    CHECK(b == NULL); /* the end of epoch 0 */
    tm_loader_pos p = tm_loader_position(l);
    CHECK(p.epoch == 1 && p.index == 0);
    CHECK_OK(tm_loader_next(l, &b));
    CHECK(b && b->epoch == 1 && b->index == 0 && b->rows[0] == 0);
    tm_loader_stats st = tm_loader_get_stats(l);
    CHECK(st.batches == 5 && st.examples == 26);
    CHECK(st.decode_s > 0 && st.work_s >= st.decode_s && st.examples_per_s > 0);
    tm_loader_free(l);

    /* the test split, and a list of rows with repeats */
    c.split = "test";
    CHECK_OK(tm_loader_new(&l, m, &c));
    CHECK(l && tm_loader_epoch_size(l) == 3);
    tm_loader_free(l);
    const int64_t rows[3] = {22, 22, 4};
    c.rows = rows;
    c.n_rows = 3;
    c.batch_size = 3;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (l) {
        CHECK_OK(tm_loader_next(l, &b));
        CHECK(b && b->rows[0] == 22 && b->rows[1] == 22 && b->rows[2] == 4);
        if (b) check_example(m, &c, b, 2);
    }
    tm_loader_free(l);

    /* only some inputs, in another column order: text off, audio first */
    c = base_config();
    c.text_tokens = 0;
    c.tokenizer = NULL;
    c.n_modalities = 2;
    c.modality[0] = TM_MODALITY_AUDIO;
    c.modality[1] = TM_MODALITY_IMAGE;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (l) {
        CHECK_OK(tm_loader_next(l, &b));
        CHECK_OK(tm_loader_next(l, &b)); /* rows 4..7: 5 lacks audio */
        CHECK(b && b->tokens == NULL && b->n_tokens == NULL && b->image && b->mel);
        if (b) {
            CHECK(b->present[0] == 1 && b->present[1] == 1);
            CHECK(b->present[2] == 0 && b->present[3] == 1);
        }
    }
    tm_loader_free(l);
}

/* Every batch of `epochs` epochs, as bytes, to compare runs. */
typedef struct {
    unsigned char *data;
    size_t size, cap;
} blob;

static void blob_add(blob *b, const void *p, size_t n)
{
    if (b->size + n > b->cap) {
        b->cap = (b->size + n) * 2;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->size, p, n);
    b->size += n;
}

static void add_batch(blob *o, const tm_batch *b, const tm_loader_config *c)
{
    int64_t B = b->capacity;
    blob_add(o, &b->size, sizeof b->size);
    blob_add(o, &b->epoch, sizeof b->epoch);
    blob_add(o, &b->index, sizeof b->index);
    blob_add(o, b->rows, (size_t)B * sizeof *b->rows);
    blob_add(o, b->labels, (size_t)B * sizeof *b->labels);
    blob_add(o, b->present, (size_t)(B * c->n_modalities));
    if (b->tokens) blob_add(o, b->tokens, (size_t)(B * c->text_tokens) * 4);
    if (b->image)
        blob_add(o, b->image, (size_t)(B * c->image_channels * c->image_h * c->image_w) * 4);
    if (b->mel) blob_add(o, b->mel, (size_t)(B * c->n_mels * c->n_frames) * 4);
    blob_add(o, b->region, (size_t)B * 16);
    blob_add(o, b->word_frames, (size_t)(B * c->max_words * 2) * 4);
}

/* Reads n calls of tm_loader_next (an end of epoch counts as one, marked). */
static blob run(tm_loader *l, const tm_loader_config *c, int n)
{
    blob o = {0};
    for (int i = 0; i < n; i++) {
        const tm_batch *b;
        tm_status s = tm_loader_next(l, &b);
        CHECK_OK(s);
        if (s) break;
        if (!b)
            blob_add(&o, "END!", 4);
        else
            add_batch(&o, b, c);
    }
    return o;
}

static int blob_eq(const blob *a, const blob *b)
{
    return a->size == b->size && a->size > 0 && !memcmp(a->data, b->data, a->size);
}

static tm_loader_config aug_config(void)
{
    tm_loader_config c = base_config();
    c.shuffle = 1;
    c.seed = 1234;
    c.batch_size = 3;
    c.augment = 1;
    c.aug.image_crop = c.aug.image_flip = c.aug.image_rotate = c.aug.image_jitter = 1;
    c.aug.image_erase = 1;
    c.aug.specaug = 1;
    c.aug.audio_wave = 1;
    c.aug.audio.p_gain = 0.5f;
    c.aug.audio.p_shift = 0.5f;
    c.aug.audio.p_noise = 0.5f;
    c.aug.text_delete_prob = 0.3f;
    c.aug.modality_dropout[0] = c.aug.modality_dropout[1] = c.aug.modality_dropout[2] = 0.2f;
    return c;
}

static void test_determinism(const tm_manifest *m)
{
    tm_loader_config c = aug_config();
    blob ref = {0};
    const int workers[3] = {1, 2, 4}, prefetch[3] = {1, 3, 2};
    for (int k = 0; k < 3; k++) {
        c.workers = workers[k];
        c.prefetch = prefetch[k];
        tm_loader *l;
        CHECK_OK(tm_loader_new(&l, m, &c));
        if (!l) return;
        blob o = run(l, &c, 16); /* 2 epochs of 7 batches (20 / 3) and their ends */
        if (k == 0)
            ref = o;
        else {
            CHECK(blob_eq(&o, &ref));
            free(o.data);
        }
        tm_loader_free(l);
    }
    /* without augmentation, or with another seed, the batches differ */
    c.augment = 0;
    tm_loader *l;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (l) {
        blob o = run(l, &c, 16);
        CHECK(o.size == ref.size && memcmp(o.data, ref.data, o.size) != 0);
        free(o.data);
        tm_loader_free(l);
    }
    free(ref.data);

    /* augmentations change the image and the log-mel; text dropout p = 1
     * never leaves an example with another modality holding text */
    c = aug_config();
    c.aug.modality_dropout[0] = 1;
    c.aug.modality_dropout[1] = c.aug.modality_dropout[2] = 0;
    c.shuffle = 0;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (l) {
        const tm_batch *b;
        CHECK_OK(tm_loader_next(l, &b));
        if (b) {
            for (int j = 0; j < 3; j++)
                CHECK(b->present[j * 3] == 0);
            /* row 0 has every modality: its image is not the plain one */
            float ref0[IMG * IMG];
            tm_image_decode_params dp = tm_image_decode_default_params();
            dp.channels = 1;
            tm_image *img;
            CHECK_OK(tm_image_load(&img, tm_manifest_row_at(m, 0)->image_path, dp));
            CHECK_OK(tm_image_preprocess(ref0, IMG * IMG, img, c.preprocess.image));
            tm_image_free(img);
            CHECK(memcmp(ref0, b->image, sizeof ref0) != 0);
        }
        tm_loader_free(l);
    }
}

static void test_shards(const tm_manifest *m)
{
    tm_loader_config c = base_config();
    c.shuffle = 1;
    c.seed = 7;
    c.image_channels = c.image_h = c.image_w = 0; /* rows only: quick */
    c.n_mels = c.n_frames = 0;
    c.n_modalities = 1;
    c.batch_size = 4;
    for (int world = 3; world <= 4; world++) {
        int seen[2][N_ROWS];
        memset(seen, 0, sizeof seen);
        for (int rank = 0; rank < world; rank++) {
            c.rank = rank;
            c.world = world;
            tm_loader *l;
            CHECK_OK(tm_loader_new(&l, m, &c));
            if (!l) return;
            CHECK(tm_loader_epoch_size(l) == 20 / world);
            for (int e = 0; e < 2; e++) {
                int64_t got = 0;
                const tm_batch *b;
                while (tm_loader_next(l, &b) == TM_OK && b) {
                    CHECK(b->epoch == e);
                    for (int64_t j = 0; j < b->size; j++) {
                        seen[e][b->rows[j]]++;
                        CHECK(b->rows[j] < 20); /* train rows only */
                    }
                    got += b->size;
                }
                CHECK(got == 20 / world);
            }
            tm_loader_free(l);
        }
        /* disjoint; complete when world divides the rows */
        for (int e = 0; e < 2; e++) {
            int total = 0;
            for (int r = 0; r < N_ROWS; r++) {
                CHECK(seen[e][r] <= 1);
                total += seen[e][r];
            }
            CHECK(total == 20 / world * world);
        }
        /* each epoch is a new permutation */
        if (world == 3) CHECK(memcmp(seen[0], seen[1], sizeof seen[0]) != 0);
    }
    /* drop_last: 20 rows in batches of 6 -> 3 batches */
    c.rank = 0;
    c.world = 1;
    c.batch_size = 6;
    c.drop_last = 1;
    tm_loader *l;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (l) {
        CHECK(tm_loader_epoch_batches(l) == 3);
        const tm_batch *b;
        int n = 0;
        while (tm_loader_next(l, &b) == TM_OK && b) {
            CHECK(b->size == 6);
            n++;
        }
        CHECK(n == 3);
        tm_loader_free(l);
    }
}

static void test_resume(const tm_manifest *m)
{
    tm_loader_config c = aug_config();
    c.workers = 2;
    tm_loader *l;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (!l) return;
    /* the whole stream, and the position before each call */
    tm_loader_pos pos[24];
    blob calls[24];
    for (int i = 0; i < 24; i++) {
        pos[i] = tm_loader_position(l);
        calls[i] = run(l, &c, 1);
    }
    tm_loader_free(l);
    /* a fresh loader sought to each position continues identically */
    const int cuts[4] = {1, 6, 7, 9};
    for (int k = 0; k < 4; k++) {
        int at = cuts[k];
        CHECK_OK(tm_loader_new(&l, m, &c));
        if (!l) break;
        CHECK_OK(tm_loader_seek(l, pos[at]));
        for (int i = at; i < at + 8 && i < 24; i++) {
            blob o = run(l, &c, 1);
            CHECK(blob_eq(&o, &calls[i]));
            free(o.data);
        }
        /* seeking back on a running loader */
        CHECK_OK(tm_loader_seek(l, pos[2]));
        blob o = run(l, &c, 1);
        CHECK(blob_eq(&o, &calls[2]));
        free(o.data);
        tm_loader_free(l);
    }
    /* a position mid-batch: the batch starts there */
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (l) {
        tm_loader_pos p = {1, 2};
        CHECK_OK(tm_loader_seek(l, p));
        const tm_batch *b;
        CHECK_OK(tm_loader_next(l, &b));
        CHECK(b && b->epoch == 1 && b->index == 2 && b->size == 3);
        p.index = 21;
        CHECK_STATUS(tm_loader_seek(l, p), TM_ERR_INVALID);
        p.index = -1;
        CHECK_STATUS(tm_loader_seek(l, p), TM_ERR_INVALID);
        tm_loader_free(l);
    }
    for (int i = 0; i < 24; i++)
        free(calls[i].data);
}

static void test_cache(const tm_manifest *m)
{
    tm_loader_config c = base_config();
    c.shuffle = 1;
    c.batch_size = 5;
    c.workers = 1;
    c.prefetch = 1; /* no batch is made before the last one is released */
    tm_loader *l;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (!l) return;
    /* train rows: 19 images (row 3 has none) and 19 audios (row 5) */
    const tm_batch *b;
    while (tm_loader_next(l, &b) == TM_OK && b) {
    }
    tm_loader_stats s0 = tm_loader_get_stats(l);
    /* every media file decoded once (workers may already be in epoch 1) */
    CHECK(s0.cache_misses == 38);
    CHECK(s0.cache_entries == 38 && s0.cache_bytes > 38 * IMG * IMG * 4);
    double decode0 = s0.decode_s;
    while (tm_loader_next(l, &b) == TM_OK && b) {
    }
    tm_loader_stats s1 = tm_loader_get_stats(l);
    CHECK(s1.cache_misses == 38 && s1.cache_hits >= 38);
    CHECK(s1.decode_s == decode0); /* nothing decoded again */
    tm_loader_free(l);

    /* no cache: always decoded; a small cap: some of each */
    c.cache_bytes = 0;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (l) {
        for (int i = 0; i < 10; i++)
            tm_loader_next(l, &b);
        tm_loader_stats s = tm_loader_get_stats(l);
        CHECK(s.cache_hits == 0 && s.cache_misses >= 76 && s.cache_entries == 0);
        tm_loader_free(l);
    }
    c.cache_bytes = 20000;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (l) {
        for (int i = 0; i < 10; i++)
            tm_loader_next(l, &b);
        tm_loader_stats s = tm_loader_get_stats(l);
        CHECK(s.cache_hits > 0 && s.cache_hits < 38 && s.cache_bytes <= 20000);
        tm_loader_free(l);
    }
}

/* skip_modalities: audio neither read nor decoded (half the cache misses
 * of test_cache), reported missing, its mel all zeros; text and images
 * as without it. */
static void test_skip(const tm_manifest *m)
{
    tm_loader_config c = base_config();
    c.shuffle = 0;
    c.batch_size = 5;
    c.workers = 1;
    c.prefetch = 1;
    tm_loader *all = NULL, *some = NULL;
    CHECK_OK(tm_loader_new(&all, m, &c));
    c.skip_modalities = TM_MODALITY_AUDIO;
    CHECK_OK(tm_loader_new(&some, m, &c));
    if (all && some) {
        const tm_batch *a, *b;
        int64_t M = c.n_modalities, n_img = (int64_t)c.image_channels * c.image_h * c.image_w;
        int batches = 0, audio_seen = 0;
        while (tm_loader_next(all, &a) == TM_OK && a && tm_loader_next(some, &b) == TM_OK && b) {
            batches++;
            CHECK(a->size == b->size);
            CHECK(!memcmp(a->tokens, b->tokens, (size_t)(a->size * c.text_tokens) * 4));
            CHECK(!memcmp(a->image, b->image, (size_t)(a->size * n_img) * 4));
            for (int64_t r = 0; r < a->size; r++)
                for (int64_t k = 0; k < M; k++) {
                    int audio = c.modality[k] == TM_MODALITY_AUDIO;
                    audio_seen += audio && a->present[r * M + k];
                    CHECK(b->present[r * M + k] == (audio ? 0 : a->present[r * M + k]));
                }
            float mx = 0;
            for (int64_t i = 0; i < b->size * c.n_mels * c.n_frames; i++) mx = fmaxf(mx, fabsf(b->mel[i]));
            CHECK(mx == 0.0f);
        }
        CHECK(batches > 0 && audio_seen > 0);
        tm_loader_stats sa = tm_loader_get_stats(all), sb = tm_loader_get_stats(some);
        CHECK(sa.cache_misses == 38 && sb.cache_misses == 19);
    }
    tm_loader_free(all);
    tm_loader_free(some);
}

static void test_bad_media(void)
{
    write_text("img/bad.png", "\x89PNG\r\n\x1a\n this is not really a png");
    write_text("bad.jsonl",
               "{\"id\":\"g\",\"text\":\"fine\",\"image\":\"img/0.png\",\"label\":1}\n"
               "{\"id\":\"h\",\"text\":\"broken\",\"image\":\"img/bad.png\",\"label\":2}\n"
               "{\"id\":\"i\",\"text\":\"gone\",\"image\":\"img/none.png\",\"label\":0}\n");
    tm_manifest *m;
    CHECK_OK(tm_manifest_load(&m, tpath("bad.jsonl"), NULL));
    if (!m) return;
    tm_loader_config c = base_config();
    c.split = NULL;
    c.n_mels = c.n_frames = 0;
    c.n_modalities = 2;
    c.batch_size = 1;
    tm_loader *l;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (l) {
        const tm_batch *b;
        CHECK_OK(tm_loader_next(l, &b));
        CHECK(b && b->present[1] == 1);
        tm_status s = tm_loader_next(l, &b);
        CHECK(s != TM_OK && b == NULL);
        CHECK(strstr(tm_last_error(), "bad.jsonl:2: image \"img/bad.png\"") != NULL);
        /* the same error again, until a seek */
        CHECK(tm_loader_next(l, &b) == s);
        tm_loader_pos p = {0, 2};
        CHECK_OK(tm_loader_seek(l, p));
        CHECK_STATUS(tm_loader_next(l, &b), TM_ERR_IO);
        CHECK(strstr(tm_last_error(), "bad.jsonl:3: image \"img/none.png\"") != NULL);
        tm_loader_free(l);
    }
    /* skip_bad: the image is marked missing, the text stays */
    c.skip_bad = 1;
    c.batch_size = 3;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (l) {
        const tm_batch *b;
        CHECK_OK(tm_loader_next(l, &b));
        if (b) {
            CHECK(b->size == 3);
            CHECK(b->present[0] == 1 && b->present[1] == 1);
            CHECK(b->present[2] == 1 && b->present[3] == 0 && b->labels[1] == 2);
            CHECK(b->present[4] == 1 && b->present[5] == 0 && b->labels[2] == 0);
            CHECK(b->image[IMG * IMG] == 0 && b->image[2 * IMG * IMG + 5] == 0);
        }
        CHECK(tm_loader_get_stats(l).bad_media >= 2); /* and prefetched epochs */
        tm_loader_free(l);
    }
    tm_manifest_free(m);
}

static void test_region_flip(const tm_manifest *m)
{
    /* flip always: the region mirrors, [1.6, 4, 16, 12] -> [0, 4, 14.4, 12] */
    tm_loader_config c = base_config();
    const int64_t row = 11;
    c.rows = &row;
    c.n_rows = 1;
    c.batch_size = 1;
    c.augment = 1;
    c.aug.image_flip = 1;
    c.aug.image.flip_p = 1;
    tm_loader *l;
    CHECK_OK(tm_loader_new(&l, m, &c));
    if (!l) return;
    const tm_batch *b;
    CHECK_OK(tm_loader_next(l, &b));
    if (b) {
        CHECK_NEAR(b->region[0], 0, 1e-5, 0);
        CHECK_NEAR(b->region[1], 4, 1e-5, 0);
        CHECK_NEAR(b->region[2], 14.4, 1e-5, 0);
        CHECK_NEAR(b->region[3], 12, 1e-5, 0);
        /* and the image is the mirror of the plain one */
        float ref[IMG * IMG], flip[IMG * IMG];
        tm_image_decode_params dp = tm_image_decode_default_params();
        dp.channels = 1;
        tm_image *img;
        CHECK_OK(tm_image_load(&img, tm_manifest_row_at(m, row)->image_path, dp));
        CHECK_OK(tm_image_preprocess(ref, IMG * IMG, img, c.preprocess.image));
        tm_image_free(img);
        CHECK_OK(tm_image_hflip(flip, ref, 1, IMG, IMG));
        check_close("flipped", b->image, flip, IMG * IMG, 1e-6, 1e-6);
    }
    tm_loader_free(l);
}

static void test_config_errors(const tm_manifest *m)
{
    tm_loader *l = NULL;
    tm_loader_config c = base_config();
    c.preprocess.image.height = 20;
    CHECK_STATUS(tm_loader_new(&l, m, &c), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "preprocess image is 1 x 20 x 16") != NULL);
    c = base_config();
    c.preprocess.audio.n_mels = 64;
    CHECK_STATUS(tm_loader_new(&l, m, &c), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "audio.n_mels is 64") != NULL);
    c = base_config();
    c.tokenizer = NULL;
    CHECK_STATUS(tm_loader_new(&l, m, &c), TM_ERR_INVALID);
    c = base_config();
    c.split = "nope";
    CHECK_STATUS(tm_loader_new(&l, m, &c), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "no rows in split \"nope\"") != NULL);
    c = base_config();
    c.rank = 2;
    c.world = 2;
    CHECK_STATUS(tm_loader_new(&l, m, &c), TM_ERR_INVALID);
    c = base_config();
    c.split = "test";
    c.world = 4;
    CHECK_STATUS(tm_loader_new(&l, m, &c), TM_ERR_INVALID);
    c = base_config();
    c.drop_last = 1;
    c.batch_size = 21;
    CHECK_STATUS(tm_loader_new(&l, m, &c), TM_ERR_INVALID);
    c = base_config();
    c.n_modalities = 2;
    c.modality[1] = TM_MODALITY_TEXT;
    CHECK_STATUS(tm_loader_new(&l, m, &c), TM_ERR_INVALID);
    c = base_config();
    const int64_t bad_row = 99;
    c.rows = &bad_row;
    c.n_rows = 1;
    CHECK_STATUS(tm_loader_new(&l, m, &c), TM_ERR_INVALID);
    c = base_config();
    c.batch_size = 0;
    CHECK_STATUS(tm_loader_new(&l, m, &c), TM_ERR_INVALID);
    CHECK(l == NULL);
    CHECK(tm_modality_from_name("vision") == TM_MODALITY_IMAGE);
    CHECK(tm_modality_from_name("audio") == TM_MODALITY_AUDIO);
    CHECK(tm_modality_from_name("smell") == 0);
    tm_loader_free(NULL);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/tm_loader_XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    char sub[300];
    snprintf(sub, sizeof sub, "%s/img", tmpdir);
    mkdir(sub, 0700);
    snprintf(sub, sizeof sub, "%s/wav", tmpdir);
    mkdir(sub, 0700);
    CHECK_OK(tm_tokenizer_load(&tok, test_data_path("text/trained_tokenizer.json")));
    make_dataset();
    tm_manifest *m = NULL;
    CHECK_OK(tm_manifest_load(&m, tpath("m.jsonl"), NULL));
    if (m && tok) {
        test_contents(m);
        test_determinism(m);
        test_shards(m);
        test_skip(m);
        test_resume(m);
        test_cache(m);
        test_bad_media();
        test_region_flip(m);
        test_config_errors(m);
    }
    tm_manifest_free(m);
    tm_tokenizer_free(tok);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish("data_loader");
}
