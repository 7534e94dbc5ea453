/* The FashionTri builder (include/trimodal/datasets.h, docs/datasets.md):
 * plans every example from (seed, example, purpose), renders each distinct
 * utterance once (fashiontri_tts.c), writes the media (fashiontri_media.c),
 * then the manifest and dataset.json.
 *
 * Determinism: every draw is tm_rng_uniform_at(seed, stream, k) with the
 * stream made of a purpose and the example's global number g (training
 * image i is g = i, test image i is g = 60000 + i) and k naming the draw, so
 * the plan does not depend on threads or on the limits (example g gets the
 * same hints whether 300 or 60000 are built). Media are written by tasks on
 * the thread pool, each task owning its files; the manifest is written
 * afterwards in example order. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sndfile.h>
#include <stb/stb_image_write.h>

#include "fashiontri_internal.h"
#include "trimodal/datasets.h"
#include "trimodal/io.h"
#include "trimodal/vision.h"

/* ------------------------------------------------------------- recipe */

#define N_TRAIN 60000
#define N_TEST 10000
#define VAL_FRACTION (1.0 / 12.0) /* 5000 of 60000, 500 per class */
#define P_TEXT_MISSING 0.2
#define P_AUDIO_MISSING 0.2
#define P_SPECIFIC 0.4
#define P_DEGRADED 0.3
#define P_ERASE 0.5 /* of degraded images; the others get Gaussian noise */
#define ERASE_AREA_MIN 0.3
#define ERASE_AREA_MAX 0.5
#define ERASE_ASPECT_MAX 2.0 /* height / width log-uniform in [1/2, 2] */
#define NOISE_STD_MIN 0.1
#define NOISE_STD_MAX 0.3
#define PITCH_CENTS 300.0
#define TEMPO_MIN 0.8
#define TEMPO_MAX 1.25
#define SNR_MIN (-5.0)
#define SNR_MAX FT_SNR_MAX_DB

/* RNG streams: purpose << 40 | g. */
enum { PURPOSE_DRAWS = 1, PURPOSE_IMAGE_NOISE, PURPOSE_AUDIO_NOISE, PURPOSE_VAL };
/* Draw k of an example. */
enum {
    K_DEGRADE = 0,
    K_DEGRADE_KIND,
    K_ERASE_AREA,
    K_ERASE_ASPECT,
    K_ERASE_X,
    K_ERASE_Y,
    K_NOISE_STD,
    K_TEXT = 8,   /* missing, kind, group, term, template: 8..12 */
    K_AUDIO = 16, /* the same: 16..20 */
    K_ENGINE = 21,
    K_VOICE,
    K_PITCH,
    K_TEMPO,
    K_NOISE,
    K_SNR
};

static const char *split_names[3] = {"train", "val", "test"};
static const char *degradation_names[3] = {"none", "erase", "noise"};

typedef struct {
    int8_t present;
    int8_t ambiguous;
    int16_t group; /* ambiguous: index into terms.groups */
    int16_t term;
    int16_t tmpl;
} hint;

typedef struct {
    int32_t src;      /* index in its Fashion-MNIST file */
    uint8_t src_test; /* 1: from the test file */
    uint8_t split;    /* 0 train, 1 val, 2 test */
    uint8_t label;
    uint8_t degradation;
    uint8_t box[4]; /* erase: x, y, w, h */
    double noise_std;
    hint text, audio;
    int16_t voice;
    uint8_t noise;
    double pitch_cents, tempo, snr_db; /* rounded as the manifest shows them */
    int32_t utt;                       /* index of the utterance, -1 without audio */
    /* results */
    double seconds;
    int64_t image_bytes, audio_bytes;
} example;

static uint64_t global_index(const example *e)
{
    return (uint64_t)e->src + (e->src_test ? N_TRAIN : 0);
}

static float draw(uint64_t seed, uint64_t g, int k)
{
    return tm_rng_uniform_at(seed, ((uint64_t)PURPOSE_DRAWS << 40) | g, (uint64_t)k);
}

static int pick(float u, int n) /* uniform index in [0, n) */
{
    int i = (int)(u * (float)n);
    return i < n ? i : n - 1;
}

static double round_to(double x, double step)
{
    return round(x / step) * step;
}

/* -------------------------------------------------------------- state */

typedef struct {
    pthread_mutex_t mu;
    tm_status status;
    char msg[1024];
} err_slot;

static void err_set(err_slot *e, tm_status s)
{
    pthread_mutex_lock(&e->mu);
    if (e->status == TM_OK) {
        e->status = s;
        snprintf(e->msg, sizeof e->msg, "%s", tm_last_error());
    }
    pthread_mutex_unlock(&e->mu);
}

static int err_any(err_slot *e)
{
    pthread_mutex_lock(&e->mu);
    int any = e->status != TM_OK;
    pthread_mutex_unlock(&e->mu);
    return any;
}

typedef struct {
    tm_fashiontri_params p;
    char out[3072], cache[3200], tmp[3300]; /* params hold at most 3000 bytes */
    ft_terms terms;
    char *packages;       /* JSON object text */
    uint8_t *src_data[4]; /* train images, train labels, test images, test labels */
    size_t src_len[4];
    tm_idx *idx[4];
    int64_t src_bytes[4];
    example *ex;
    int64_t n_ex;
    ft_utterance *utt;
    int64_t n_utt, cap_utt;
    int64_t *slots; /* open-addressing table of utterance indices, -1 empty */
    int64_t n_slots;
    cJSON *recipe;
    char recipe_hash[17];
    int resume;
    err_slot err;
} build;

static const char *source_names[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

tm_fashiontri_params tm_fashiontri_default_params(void)
{
    tm_fashiontri_params p;
    memset(&p, 0, sizeof p);
    p.seed = 1;
    p.progress_interval_s = 1.0;
    return p;
}

/* ------------------------------------------------------------ sources */

/* Finds NAME or NAME.gz in the source folder. */
static tm_status source_path(char *out, size_t size, const char *dir, const char *name)
{
    struct stat sb;
    snprintf(out, size, "%s/%s.gz", dir, name);
    if (stat(out, &sb) == 0) return TM_OK;
    snprintf(out, size, "%s/%s", dir, name);
    if (stat(out, &sb) == 0) return TM_OK;
    return tm_fail(TM_ERR_IO,
                   "%s/%s(.gz): missing; FashionTri reads Fashion-MNIST from the Debian "
                   "package dataset-fashion-mnist (apt-get install -y "
                   "dataset-fashion-mnist) or from --fashion-mnist DIR",
                   dir, name);
}

static const char *source_dir(const build *b)
{
    return b->p.source_dir ? b->p.source_dir : "/usr/share/datasets/fashion-mnist";
}

/* Sizes of the four files (for the recipe), without reading them. */
static tm_status source_sizes(build *b)
{
    for (int i = 0; i < 4; i++) {
        char path[4096];
        struct stat sb;
        tm_status s = source_path(path, sizeof path, source_dir(b), source_names[i]);
        if (s != TM_OK) return s;
        if (stat(path, &sb) != 0) return tm_fail(TM_ERR_IO, "%s: %s", path, strerror(errno));
        b->src_bytes[i] = (int64_t)sb.st_size;
    }
    return TM_OK;
}

/* Reads file i (gzipped or not) and opens it as IDX. */
static tm_status load_source(build *b, int i)
{
    if (b->idx[i]) return TM_OK;
    char path[4096];
    tm_status s = source_path(path, sizeof path, source_dir(b), source_names[i]);
    if (s != TM_OK) return s;
    char *raw = NULL;
    size_t n = 0;
    s = tm_read_file(path, (size_t)128 << 20, &raw, &n);
    if (s != TM_OK) return s;
    s = ft_gunzip(&b->src_data[i], &b->src_len[i], (const uint8_t *)raw, n, (size_t)128 << 20,
                  path);
    tm_free(raw);
    if (s != TM_OK) return s;
    tm_image_limits lim = tm_image_default_limits();
    s = tm_idx_open_memory(&b->idx[i], b->src_data[i], b->src_len[i], lim);
    if (s != TM_OK) return tm_fail(s, "%s: %s", path, tm_last_error());
    int images = i % 2 == 0;
    int64_t want = i < 2 ? N_TRAIN : N_TEST;
    if (tm_idx_ndim(b->idx[i]) != (images ? 3 : 1) || tm_idx_count(b->idx[i]) != want ||
        (images &&
         (tm_idx_height(b->idx[i]) != FT_IMAGE_SIDE || tm_idx_width(b->idx[i]) != FT_IMAGE_SIDE)))
        return tm_fail(TM_ERR_FORMAT,
                       "%s: expected %lld %s, found %lld items of %d x %d; is it "
                       "Fashion-MNIST?",
                       path, (long long)want, images ? "28 x 28 images" : "labels",
                       (long long)tm_idx_count(b->idx[i]), tm_idx_height(b->idx[i]),
                       tm_idx_width(b->idx[i]));
    if (!images) {
        const uint8_t *l = tm_idx_data(b->idx[i]);
        for (int64_t k = 0; k < want; k++)
            if (l[k] >= FT_CLASSES)
                return tm_fail(TM_ERR_FORMAT, "%s: label %d of item %lld is not a class 0..9", path,
                               l[k], (long long)k);
    }
    return TM_OK;
}

/* --------------------------------------------------------------- plan */

static const ft_term *hint_term(const build *b, const example *e, const hint *h)
{
    if (h->ambiguous) return &b->terms.groups[h->group].terms[h->term];
    return &b->terms.specific[e->label][h->term];
}

static void draw_hint(const build *b, const example *e, hint *h, int k0)
{
    uint64_t seed = b->p.seed, g = global_index(e);
    memset(h, 0, sizeof *h);
    h->present = draw(seed, g, k0) >= (k0 == K_TEXT ? P_TEXT_MISSING : P_AUDIO_MISSING);
    if (!h->present) return;
    h->ambiguous = draw(seed, g, k0 + 1) >= P_SPECIFIC;
    if (h->ambiguous) {
        /* uniform over the groups that fit the class, then over its terms */
        int fit[64], m = 0;
        for (int i = 0; i < b->terms.n_groups && m < 64; i++)
            if ((b->terms.groups[i].classes >> e->label) & 1) fit[m++] = i;
        h->group = (int16_t)fit[pick(draw(seed, g, k0 + 2), m)];
        h->term = (int16_t)pick(draw(seed, g, k0 + 3), b->terms.groups[h->group].n_terms);
    } else {
        h->group = -1;
        h->term = (int16_t)pick(draw(seed, g, k0 + 3), b->terms.n_specific[e->label]);
    }
    h->tmpl = (int16_t)pick(draw(seed, g, k0 + 4), b->terms.n_templates);
}

static void plan_example(const build *b, example *e)
{
    uint64_t seed = b->p.seed, g = global_index(e);
    e->degradation = 0;
    if (draw(seed, g, K_DEGRADE) < P_DEGRADED) {
        if (draw(seed, g, K_DEGRADE_KIND) < P_ERASE) {
            const double side = FT_IMAGE_SIDE;
            double area =
                ERASE_AREA_MIN + (ERASE_AREA_MAX - ERASE_AREA_MIN) * draw(seed, g, K_ERASE_AREA);
            double aspect =
                exp(log(ERASE_ASPECT_MAX) * (2.0 * draw(seed, g, K_ERASE_ASPECT) - 1.0));
            int h = (int)lround(sqrt(area * side * side * aspect));
            int w = (int)lround(sqrt(area * side * side / aspect));
            h = h < 1 ? 1 : h > FT_IMAGE_SIDE ? FT_IMAGE_SIDE : h;
            w = w < 1 ? 1 : w > FT_IMAGE_SIDE ? FT_IMAGE_SIDE : w;
            e->box[0] = (uint8_t)pick(draw(seed, g, K_ERASE_X), FT_IMAGE_SIDE - w + 1);
            e->box[1] = (uint8_t)pick(draw(seed, g, K_ERASE_Y), FT_IMAGE_SIDE - h + 1);
            e->box[2] = (uint8_t)w;
            e->box[3] = (uint8_t)h;
            e->degradation = 1;
        } else {
            e->noise_std = round_to(NOISE_STD_MIN + (NOISE_STD_MAX - NOISE_STD_MIN) *
                                                        draw(seed, g, K_NOISE_STD),
                                    0.001);
            e->degradation = 2;
        }
    }
    draw_hint(b, e, &e->text, K_TEXT);
    draw_hint(b, e, &e->audio, K_AUDIO);
    e->utt = -1;
    if (!e->audio.present) return;
    /* an engine (uniform over those with voices for this split), then a voice of it */
    int test = e->split == 2, engines[FT_ENGINE_COUNT], ne = 0;
    for (int en = 0; en < FT_ENGINE_COUNT; en++) {
        int any = 0;
        for (int v = 0; v < ft_n_voices; v++)
            any |= ft_voices[v].engine == (ft_engine)en && ft_voices[v].test == test;
        if (any) engines[ne++] = en;
    }
    int en = engines[pick(draw(seed, g, K_ENGINE), ne)], nv = 0;
    for (int v = 0; v < ft_n_voices; v++)
        nv += ft_voices[v].engine == (ft_engine)en && ft_voices[v].test == test;
    int want = pick(draw(seed, g, K_VOICE), nv);
    for (int v = 0; v < ft_n_voices; v++)
        if (ft_voices[v].engine == (ft_engine)en && ft_voices[v].test == test && want-- == 0)
            e->voice = (int16_t)v;
    e->pitch_cents = round_to(PITCH_CENTS * (2.0 * draw(seed, g, K_PITCH) - 1.0), 0.1);
    e->tempo = round_to(
        exp(log(TEMPO_MIN) + (log(TEMPO_MAX) - log(TEMPO_MIN)) * draw(seed, g, K_TEMPO)), 0.001);
    e->noise = (uint8_t)pick(draw(seed, g, K_NOISE), FT_NOISE_COUNT);
    e->snr_db = round_to(SNR_MIN + (SNR_MAX - SNR_MIN) * draw(seed, g, K_SNR), 0.01);
}

typedef struct {
    uint64_t key;
    int32_t idx;
} keyed;

static int cmp_keyed(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->idx - y->idx;
}

/* The validation split: per class, the examples of the training file with
 * the smallest keys, round(count * VAL_FRACTION) of them. */
static tm_status carve_val(build *b, int64_t n_train)
{
    keyed *k = tm_alloc(sizeof(keyed) * (size_t)(n_train > 0 ? n_train : 1));
    if (!k) return tm_fail(TM_ERR_NOMEM, "out of memory");
    for (int c = 0; c < FT_CLASSES; c++) {
        int64_t m = 0;
        for (int64_t i = 0; i < n_train; i++) {
            if (b->ex[i].label != c) continue;
            uint32_t w[4];
            tm_philox(b->p.seed, (uint64_t)PURPOSE_VAL << 40, (uint64_t)i, w);
            k[m].key = (uint64_t)w[0] << 32 | w[1];
            k[m].idx = (int32_t)i;
            m++;
        }
        qsort(k, (size_t)m, sizeof *k, cmp_keyed);
        int64_t nv = (int64_t)llround((double)m * VAL_FRACTION);
        for (int64_t j = 0; j < nv; j++)
            b->ex[k[j].idx].split = 1;
    }
    tm_free(k);
    return TM_OK;
}

static tm_status add_utterance(build *b, example *e)
{
    char text[512];
    tm_status s =
        ft_sentence(text, sizeof text, &b->terms, e->audio.tmpl, hint_term(b, e, &e->audio));
    if (s != TM_OK) return s;
    const ft_voice *v = &ft_voices[e->voice];
    uint64_t key = ft_fnv1a(FT_FNV_OFFSET, "fashiontri-cache-1", 19);
    key = ft_fnv1a(key, b->packages, strlen(b->packages) + 1);
    key = ft_fnv1a(key, v->id, strlen(v->id) + 1);
    key = ft_fnv1a(key, text, strlen(text));
    int64_t slot = (int64_t)(key % (uint64_t)b->n_slots);
    while (b->slots[slot] >= 0) {
        ft_utterance *u = &b->utt[b->slots[slot]];
        if (u->key == key && u->voice == e->voice && !strcmp(u->text, text)) {
            e->utt = (int32_t)b->slots[slot];
            return TM_OK;
        }
        slot = (slot + 1) % b->n_slots;
    }
    if (b->n_utt == b->cap_utt) return tm_fail(TM_ERR_INTERNAL, "utterance table full");
    ft_utterance *u = &b->utt[b->n_utt];
    memset(u, 0, sizeof *u);
    u->voice = e->voice;
    u->key = key;
    size_t tl = strlen(text) + 1, pl = strlen(b->cache) + 32;
    u->text = tm_alloc(tl);
    u->path = tm_alloc(pl);
    if (!u->text || !u->path) {
        tm_free(u->text);
        tm_free(u->path);
        return tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    memcpy(u->text, text, tl);
    snprintf(u->path, pl, "%s/%02x/%016llx.flac", b->cache, (unsigned)(key >> 56),
             (unsigned long long)key);
    b->slots[slot] = b->n_utt;
    e->utt = (int32_t)b->n_utt++;
    return TM_OK;
}

static tm_status plan(build *b)
{
    int64_t nt = b->p.limit_train ? b->p.limit_train : N_TRAIN;
    int64_t ns = b->p.limit_test ? b->p.limit_test : N_TEST;
    b->n_ex = nt + ns;
    b->ex = tm_calloc((size_t)b->n_ex, sizeof *b->ex);
    if (!b->ex) return tm_fail(TM_ERR_NOMEM, "out of memory");
    const uint8_t *ltrain = tm_idx_data(b->idx[1]), *ltest = tm_idx_data(b->idx[3]);
    for (int64_t i = 0; i < b->n_ex; i++) {
        example *e = &b->ex[i];
        e->src_test = i >= nt;
        e->src = (int32_t)(e->src_test ? i - nt : i);
        e->label = e->src_test ? ltest[e->src] : ltrain[e->src];
        e->split = e->src_test ? 2 : 0;
    }
    tm_status s = carve_val(b, nt);
    if (s != TM_OK) return s;
    for (int64_t i = 0; i < b->n_ex; i++)
        plan_example(b, &b->ex[i]);
    /* distinct utterances, in order of first use */
    b->cap_utt = b->n_ex;
    b->n_slots = 2 * b->n_ex + 1;
    b->utt = tm_calloc((size_t)b->cap_utt, sizeof *b->utt);
    b->slots = tm_alloc(sizeof(int64_t) * (size_t)b->n_slots);
    if (!b->utt || !b->slots) return tm_fail(TM_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < b->n_slots; i++)
        b->slots[i] = -1;
    for (int64_t i = 0; i < b->n_ex; i++)
        if (b->ex[i].audio.present && (s = add_utterance(b, &b->ex[i])) != TM_OK) return s;
    return TM_OK;
}

static void media_path(char *out, size_t size, const build *b, const example *e, int audio)
{
    snprintf(out, size, "%s/%s/%s/%03d/%06d.%s", b->out, audio ? "audio" : "images",
             e->src_test ? "test" : "train", e->src / 1000, e->src, audio ? "flac" : "png");
}

/* ---------------------------------------------------------- recipe */

static cJSON *string_array(const char *const *s, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(s[i]));
    return a;
}

static cJSON *range(double lo, double hi)
{
    double v[2] = {lo, hi};
    return cJSON_CreateDoubleArray(v, 2);
}

static tm_status make_recipe(build *b)
{
    cJSON *r = cJSON_CreateObject();
    if (!r) return tm_fail(TM_ERR_NOMEM, "out of memory");
    b->recipe = r;
    cJSON_AddNumberToObject(r, "builder_version", FT_BUILDER_VERSION);
    cJSON_AddNumberToObject(r, "seed", (double)b->p.seed);
    char seedstr[32];
    snprintf(seedstr, sizeof seedstr, "%llu", (unsigned long long)b->p.seed);
    cJSON_AddStringToObject(r, "seed_exact", seedstr);
    cJSON_AddNumberToObject(r, "limit_train", (double)b->p.limit_train);
    cJSON_AddNumberToObject(r, "limit_test", (double)b->p.limit_test);
    cJSON *src = cJSON_AddObjectToObject(r, "source");
    cJSON_AddStringToObject(src, "dataset",
                            "Fashion-MNIST (Zalando Research), its own train/test split");
    cJSON *files = cJSON_AddObjectToObject(src, "file_bytes");
    for (int i = 0; i < 4; i++)
        cJSON_AddNumberToObject(files, source_names[i], (double)b->src_bytes[i]);
    cJSON *val = cJSON_AddObjectToObject(r, "val");
    cJSON_AddNumberToObject(val, "fraction_of_train", VAL_FRACTION);
    cJSON_AddStringToObject(val, "how",
                            "per class, round(n * fraction) training images with the "
                            "smallest Philox keys of (seed, image)");
    cJSON *img = cJSON_AddObjectToObject(r, "image");
    cJSON_AddNumberToObject(img, "p_degraded", P_DEGRADED);
    cJSON_AddNumberToObject(img, "p_erase_given_degraded", P_ERASE);
    cJSON_AddItemToObject(img, "erase_area", range(ERASE_AREA_MIN, ERASE_AREA_MAX));
    cJSON_AddItemToObject(img, "erase_aspect_h_over_w_log_uniform",
                          range(1.0 / ERASE_ASPECT_MAX, ERASE_ASPECT_MAX));
    cJSON_AddNumberToObject(img, "erase_fill", 0);
    cJSON_AddItemToObject(img, "noise_std", range(NOISE_STD_MIN, NOISE_STD_MAX));
    cJSON_AddStringToObject(img, "format", "PNG, 28 x 28, 8-bit gray");
    cJSON *text = cJSON_AddObjectToObject(r, "text");
    cJSON_AddNumberToObject(text, "p_missing", P_TEXT_MISSING);
    cJSON_AddNumberToObject(text, "p_specific", P_SPECIFIC);
    cJSON_AddNumberToObject(text, "p_ambiguous", 1.0 - P_SPECIFIC);
    cJSON_AddStringToObject(
        text, "ambiguous_choice",
        "uniform over the groups that fit the class, then over the group's terms");
    cJSON_AddStringToObject(text, "template_choice", "uniform");
    cJSON *au = cJSON_AddObjectToObject(r, "audio");
    cJSON_AddNumberToObject(au, "p_missing", P_AUDIO_MISSING);
    cJSON_AddNumberToObject(au, "p_specific", P_SPECIFIC);
    cJSON_AddStringToObject(au, "independent_of_text", "yes: separate draws");
    cJSON_AddStringToObject(
        au, "voice_choice",
        "uniform over engines, then over the engine's voices allowed in the split");
    cJSON_AddItemToObject(au, "pitch_cents_uniform", range(-PITCH_CENTS, PITCH_CENTS));
    cJSON_AddItemToObject(au, "tempo_log_uniform", range(TEMPO_MIN, TEMPO_MAX));
    const char *noises[FT_NOISE_COUNT];
    for (int i = 0; i < FT_NOISE_COUNT; i++)
        noises[i] = ft_noise_name((ft_noise)i);
    cJSON_AddItemToObject(au, "noise_uniform", string_array(noises, FT_NOISE_COUNT));
    cJSON_AddItemToObject(au, "snr_db_uniform", range(SNR_MIN, SNR_MAX));
    cJSON_AddNumberToObject(au, "speech_level_dbfs_rms", FT_SPEECH_DBFS);
    cJSON_AddStringToObject(
        au, "rendering",
        "each distinct (voice, sentence) rendered once: engine output resampled "
        "to 16 kHz (libsamplerate best), silence trimmed (frames within 40 dB "
        "of the loudest, plus 40 ms), cached as FLAC");
    cJSON_AddStringToObject(
        au, "effects",
        "per example: phase-vocoder stretch by tempo / pitch factor, resampling "
        "by the pitch factor, level, coloured noise at the SNR over the whole "
        "clip, scaled to a 0.99 peak if it would clip");
    cJSON_AddStringToObject(au, "format", "FLAC, 16 kHz, mono, 16-bit");
    cJSON_AddStringToObject(au, "pcm_step",
                            "samples rounded to multiples of the largest power of two whose "
                            "rounding noise stays 30 dB under the added noise (cache: under the "
                            "weakest noise, SNR 20 dB); FLAC stores the zero low bits for free");
    cJSON_AddNumberToObject(au, "quantisation_margin_db", FT_QUANT_MARGIN_DB);
    cJSON *voices = cJSON_AddObjectToObject(r, "voices");
    for (int t = 0; t < 2; t++) {
        cJSON *arr = cJSON_AddArrayToObject(voices, t ? "test" : "train_and_val");
        for (int v = 0; v < ft_n_voices; v++) {
            if (ft_voices[v].test != t) continue;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "voice", ft_voices[v].id);
            cJSON_AddStringToObject(o, "engine", ft_engine_name(ft_voices[v].engine));
            cJSON_AddStringToObject(o, "speaker", ft_voices[v].speaker);
            cJSON_AddStringToObject(o, "package", ft_voices[v].package);
            cJSON_AddItemToArray(arr, o);
        }
    }
    cJSON *terms = cJSON_AddObjectToObject(r, "terms");
    char h[32];
    snprintf(h, sizeof h, "%016llx", (unsigned long long)b->terms.file_hash);
    cJSON_AddStringToObject(terms, "file_fnv1a64", h);
    cJSON_AddStringToObject(terms, "source",
                            "configs/fashion-tri/terms.json, from WordNet 3.0 by "
                            "scripts/fashiontri_terms.sh");
    cJSON *tp = cJSON_AddArrayToObject(terms, "templates");
    for (int i = 0; i < b->terms.n_templates; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "singular", b->terms.templates[i][FT_SINGULAR]);
        cJSON_AddStringToObject(o, "plural", b->terms.templates[i][FT_PLURAL]);
        cJSON_AddStringToObject(o, "mass", b->terms.templates[i][FT_MASS]);
        cJSON_AddItemToArray(tp, o);
    }
    cJSON *groups = cJSON_AddArrayToObject(terms, "ambiguous_groups");
    for (int g = 0; g < b->terms.n_groups; g++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "group", b->terms.groups[g].name);
        cJSON *cl = cJSON_AddArrayToObject(o, "classes");
        for (int c = 0; c < FT_CLASSES; c++)
            if ((b->terms.groups[g].classes >> c) & 1)
                cJSON_AddItemToArray(cl, cJSON_CreateNumber(c));
        cJSON_AddItemToArray(groups, o);
    }
    cJSON *pk = cJSON_Parse(b->packages);
    if (!pk) return tm_fail(TM_ERR_INTERNAL, "package versions are not JSON");
    cJSON_AddItemToObject(r, "packages", pk);
    char *text_r = cJSON_PrintUnformatted(r);
    if (!text_r) return tm_fail(TM_ERR_NOMEM, "out of memory");
    uint64_t hh = ft_fnv1a(FT_FNV_OFFSET, text_r, strlen(text_r));
    free(text_r);
    snprintf(b->recipe_hash, sizeof b->recipe_hash, "%016llx", (unsigned long long)hh);
    return TM_OK;
}

/* ------------------------------------------------------ output folder */

#define MARKER ".fashiontri-build"

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* What the output folder holds: 0 nothing (or empty), 1 this recipe complete,
 * 2 this recipe interrupted. Anything else is refused. */
static tm_status inspect_out(build *b, int *state)
{
    *state = 0;
    char p[4200];
    snprintf(p, sizeof p, "%s/dataset.json", b->out);
    char *buf = NULL;
    size_t n = 0;
    if (file_exists(p)) {
        tm_status s = tm_read_file(p, (size_t)16 << 20, &buf, &n);
        if (s != TM_OK) return s;
        cJSON *d = cJSON_ParseWithLength(buf, n);
        tm_free(buf);
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(d, "recipe_hash");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(d, "name");
        int fashiontri = cJSON_IsString(name) && !strcmp(name->valuestring, "fashion-tri");
        int same = cJSON_IsString(h) && !strcmp(h->valuestring, b->recipe_hash);
        char old[64] = "";
        if (cJSON_IsString(h)) snprintf(old, sizeof old, "%s", h->valuestring);
        cJSON_Delete(d);
        if (!fashiontri)
            return tm_fail(TM_ERR_INVALID,
                           "%s holds a dataset.json that is not FashionTri's; choose "
                           "another --out",
                           b->out);
        if (!same)
            return tm_fail(TM_ERR_INVALID,
                           "%s holds a FashionTri build of another recipe (%s, this "
                           "one is %s: the seed, limits, terms or package versions "
                           "differ); remove it or choose another --out",
                           b->out, old, b->recipe_hash);
        *state = 1;
        return TM_OK;
    }
    snprintf(p, sizeof p, "%s/" MARKER, b->out);
    if (file_exists(p)) {
        tm_status s = tm_read_file(p, 4096, &buf, &n);
        if (s != TM_OK) return s;
        int same = n >= 16 && !strncmp(buf, b->recipe_hash, 16);
        tm_free(buf);
        if (!same)
            return tm_fail(TM_ERR_INVALID,
                           "%s holds an unfinished FashionTri build of another "
                           "recipe; remove it or choose another --out",
                           b->out);
        *state = 2;
        return TM_OK;
    }
    /* an empty or missing folder is fine; anything else may be someone's files */
    struct stat sb;
    if (stat(b->out, &sb) != 0) return TM_OK;
    if (!S_ISDIR(sb.st_mode))
        return tm_fail(TM_ERR_INVALID, "%s exists and is not a folder", b->out);
    DIR *d = opendir(b->out);
    if (!d) return tm_fail(TM_ERR_IO, "%s: %s", b->out, strerror(errno));
    struct dirent *de;
    int other = 0;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, ".tts-cache"))
            other = 1;
    closedir(d);
    if (other)
        return tm_fail(TM_ERR_INVALID,
                       "%s is not empty and holds no FashionTri build; choose an "
                       "empty or new folder for --out",
                       b->out);
    return TM_OK;
}

/* ------------------------------------------------------- parallel work */

static void report(const build *b, const char *stage, int64_t done, int64_t total, double t0,
                   double *last, int force)
{
    if (!b->p.progress) return;
    double now = tm_time_s();
    if (!force && now - *last < b->p.progress_interval_s) return;
    *last = now;
    tm_fashiontri_progress pr = {stage, done, total, now - t0};
    b->p.progress(b->p.progress_ctx, &pr);
}

typedef struct {
    build *b;
    int *idx;   /* utterance indices, grouped into tasks */
    int *start; /* task t renders idx[start[t] .. start[t + 1]) */
    int64_t first;
} render_ctx;

static void render_task(void *vctx, int64_t i, int64_t n)
{
    (void)n;
    render_ctx *c = vctx;
    if (err_any(&c->b->err)) return;
    int64_t t = c->first + i;
    tm_status s =
        ft_render(c->b->utt, c->idx + c->start[t], c->start[t + 1] - c->start[t], c->b->tmp);
    if (s != TM_OK) err_set(&c->b->err, s);
}

#define FESTIVAL_BATCH 40

/* Renders the utterances that are not in the cache. */
static tm_status render_all(build *b, int64_t *rendered)
{
    *rendered = 0;
    int *idx = tm_alloc(sizeof(int) * (size_t)(b->n_utt + 1));
    int *start = tm_alloc(sizeof(int) * (size_t)(b->n_utt + 2));
    if (!idx || !start) {
        tm_free(idx);
        tm_free(start);
        return tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    /* festival first (batches of one voice, the longest tasks), then one
     * task per utterance of the other engines */
    int n = 0, nt = 0;
    for (int v = 0; v < ft_n_voices; v++) {
        if (ft_voices[v].engine != FT_FESTIVAL) continue;
        int in_batch = 0;
        for (int64_t u = 0; u < b->n_utt; u++) {
            if (b->utt[u].voice != v || file_exists(b->utt[u].path)) continue;
            if (in_batch == 0) start[nt++] = n;
            idx[n++] = (int)u;
            if (++in_batch == FESTIVAL_BATCH) in_batch = 0;
        }
    }
    for (int64_t u = 0; u < b->n_utt; u++) {
        if (ft_voices[b->utt[u].voice].engine == FT_FESTIVAL || file_exists(b->utt[u].path))
            continue;
        start[nt++] = n;
        idx[n++] = (int)u;
    }
    start[nt] = n;
    *rendered = n;
    tm_status s = TM_OK;
    if (n > 0) {
        char sub[4300];
        for (int k = 0; k < 256 && s == TM_OK; k++) {
            snprintf(sub, sizeof sub, "%s/%02x", b->cache, k);
            s = ft_mkdirs(sub);
        }
        if (s == TM_OK) s = ft_mkdirs(b->tmp);
    }
    render_ctx c = {b, idx, start, 0};
    double t0 = tm_time_s(), last = t0;
    int done = 0;
    int batch = 4 * tm_get_num_threads();
    for (int64_t t = 0; t < nt && s == TM_OK;) {
        int64_t m = nt - t < batch ? nt - t : batch;
        c.first = t;
        tm_parallel_for(m, render_task, &c);
        t += m;
        done = start[t];
        if (b->err.status != TM_OK)
            s = tm_fail(b->err.status, "%s", b->err.msg);
        else
            report(b, "render", done, n, t0, &last, t == nt);
    }
    if (n > 0) rmdir(b->tmp);
    tm_free(idx);
    tm_free(start);
    return s;
}

typedef struct {
    uint8_t *data;
    size_t len, cap;
    int failed;
} mem_buf;

static void mem_write(void *ctx, void *data, int size)
{
    mem_buf *m = ctx;
    if (m->failed || size <= 0) return;
    if (m->len + (size_t)size > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 2048;
        while (cap < m->len + (size_t)size)
            cap *= 2;
        uint8_t *p = tm_alloc(cap);
        if (!p) {
            m->failed = 1;
            return;
        }
        if (m->len) memcpy(p, m->data, m->len);
        tm_free(m->data);
        m->data = p;
        m->cap = cap;
    }
    memcpy(m->data + m->len, data, (size_t)size);
    m->len += (size_t)size;
}

static tm_status write_image(build *b, example *e, const char *path)
{
    const int side = FT_IMAGE_SIDE, np = FT_IMAGE_SIDE * FT_IMAGE_SIDE;
    const uint8_t *src = tm_idx_data(b->idx[e->src_test ? 2 : 0]) + (size_t)e->src * (size_t)np;
    uint8_t px[FT_IMAGE_SIDE * FT_IMAGE_SIDE];
    memcpy(px, src, (size_t)np);
    if (e->degradation == 1) {
        for (int y = e->box[1]; y < e->box[1] + e->box[3]; y++)
            for (int x = e->box[0]; x < e->box[0] + e->box[2]; x++)
                px[y * side + x] = 0;
    } else if (e->degradation == 2) {
        uint64_t stream = ((uint64_t)PURPOSE_IMAGE_NOISE << 40) | global_index(e);
        for (int i = 0; i < np; i++) {
            double v =
                px[i] / 255.0 + e->noise_std * tm_rng_normal_at(b->p.seed, stream, (uint64_t)i);
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            px[i] = (uint8_t)lrint(v * 255.0);
        }
    }
    mem_buf m = {NULL, 0, 0, 0};
    int ok = stbi_write_png_to_func(mem_write, &m, side, side, 1, px, side);
    tm_status s;
    if (!ok || m.failed)
        s = tm_fail(TM_ERR_NOMEM, "%s: out of memory encoding PNG", path);
    else
        s = ft_write_file(path, m.data, m.len);
    e->image_bytes = (int64_t)m.len;
    tm_free(m.data);
    return s;
}

/* An audio file already there (a resumed build): its length and size. */
static int existing_clip(const char *path, double *seconds, int64_t *bytes)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return 0;
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *f = sf_open(path, SFM_READ, &info);
    if (!f) return 0;
    sf_close(f);
    if (info.samplerate != FT_SAMPLE_RATE || info.frames < 1) return 0;
    *seconds = (double)info.frames / FT_SAMPLE_RATE;
    *bytes = (int64_t)sb.st_size;
    return 1;
}

typedef struct {
    build *b;
    int64_t first;
} example_ctx;

static void example_task(void *vctx, int64_t i, int64_t n)
{
    (void)n;
    example_ctx *c = vctx;
    build *b = c->b;
    if (err_any(&b->err)) return;
    example *e = &b->ex[c->first + i];
    char path[4300];
    struct stat sb;
    media_path(path, sizeof path, b, e, 0);
    tm_status s = TM_OK;
    /* an empty file (left by a crash before the media were synced) is
     * written again */
    if (b->resume && stat(path, &sb) == 0 && sb.st_size > 0)
        e->image_bytes = (int64_t)sb.st_size;
    else
        s = write_image(b, e, path);
    if (s == TM_OK && e->audio.present) {
        media_path(path, sizeof path, b, e, 1);
        if (!(b->resume && existing_clip(path, &e->seconds, &e->audio_bytes))) {
            ft_clip_params cp = {(float)e->pitch_cents,
                                 (float)e->tempo,
                                 (ft_noise)e->noise,
                                 (float)e->snr_db,
                                 b->p.seed,
                                 ((uint64_t)PURPOSE_AUDIO_NOISE << 40) | global_index(e)};
            s = ft_make_clip(b->utt[e->utt].path, path, cp, &e->seconds, &e->audio_bytes, NULL);
        }
    }
    if (s != TM_OK) err_set(&b->err, s);
}

static tm_status make_examples(build *b)
{
    /* the shard folders */
    int last[2][2] = {{-1, -1}, {-1, -1}};
    char dir[4300];
    for (int64_t i = 0; i < b->n_ex; i++) {
        example *e = &b->ex[i];
        for (int a = 0; a < 2; a++) {
            if (last[a][e->src_test] == e->src / 1000) continue;
            last[a][e->src_test] = e->src / 1000;
            snprintf(dir, sizeof dir, "%s/%s/%s/%03d", b->out, a ? "audio" : "images",
                     e->src_test ? "test" : "train", e->src / 1000);
            tm_status s = ft_mkdirs(dir);
            if (s != TM_OK) return s;
        }
    }
    example_ctx c = {b, 0};
    double t0 = tm_time_s(), last_t = t0;
    const int64_t batch = 256;
    for (int64_t i = 0; i < b->n_ex;) {
        int64_t m = b->n_ex - i < batch ? b->n_ex - i : batch;
        c.first = i;
        tm_parallel_for(m, example_task, &c);
        i += m;
        if (b->err.status != TM_OK) return tm_fail(b->err.status, "%s", b->err.msg);
        report(b, "examples", i, b->n_ex, t0, &last_t, i == b->n_ex);
    }
    return TM_OK;
}

/* ------------------------------------------------------------ manifest */

static tm_status write_manifest(build *b)
{
    char path[4200], rel[64], text[512];
    snprintf(path, sizeof path, "%s/manifest.jsonl", b->out);
    tm_atomic_file *f = NULL;
    tm_status s = tm_atomic_file_open(&f, path);
    if (s != TM_OK) return s;
    for (int64_t i = 0; i < b->n_ex && s == TM_OK; i++) {
        example *e = &b->ex[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) {
            s = tm_fail(TM_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(rel, sizeof rel, "%s-%06d", e->src_test ? "test" : "train", e->src);
        cJSON_AddStringToObject(o, "id", rel);
        cJSON_AddStringToObject(o, "split", split_names[e->split]);
        cJSON_AddNumberToObject(o, "label", e->label);
        cJSON_AddStringToObject(o, "class", b->terms.class_names[e->label]);
        snprintf(rel, sizeof rel, "images/%s/%03d/%06d.png", e->src_test ? "test" : "train",
                 e->src / 1000, e->src);
        cJSON_AddStringToObject(o, "image", rel);
        if (e->text.present) {
            ft_sentence(text, sizeof text, &b->terms, e->text.tmpl, hint_term(b, e, &e->text));
            cJSON_AddStringToObject(o, "text", text);
        }
        if (e->audio.present) {
            snprintf(rel, sizeof rel, "audio/%s/%03d/%06d.flac", e->src_test ? "test" : "train",
                     e->src / 1000, e->src);
            cJSON_AddStringToObject(o, "audio", rel);
            cJSON_AddStringToObject(o, "transcript", b->utt[e->utt].text);
            cJSON_AddStringToObject(o, "voice", ft_voices[e->voice].id);
            cJSON_AddStringToObject(o, "engine", ft_engine_name(ft_voices[e->voice].engine));
            cJSON_AddStringToObject(o, "speaker", ft_voices[e->voice].speaker);
            cJSON_AddNumberToObject(o, "pitch_cents", e->pitch_cents);
            cJSON_AddNumberToObject(o, "tempo", e->tempo);
            cJSON_AddStringToObject(o, "noise", ft_noise_name((ft_noise)e->noise));
            cJSON_AddNumberToObject(o, "snr_db", e->snr_db);
            cJSON_AddNumberToObject(o, "audio_seconds", round_to(e->seconds, 0.001));
            cJSON_AddNumberToObject(o, "audio_pcm_step", ft_clip_step(e->snr_db));
        }
        cJSON_AddStringToObject(o, "image_degradation", degradation_names[e->degradation]);
        if (e->degradation == 1) {
            int box[4] = {e->box[0], e->box[1], e->box[2], e->box[3]};
            cJSON_AddItemToObject(o, "image_erase_box_xywh", cJSON_CreateIntArray(box, 4));
        } else if (e->degradation == 2) {
            cJSON_AddNumberToObject(o, "image_noise_std", round_to(e->noise_std, 0.001));
        }
        if (e->text.present) {
            cJSON_AddStringToObject(o, "text_term_kind",
                                    e->text.ambiguous ? "ambiguous" : "specific");
            cJSON_AddStringToObject(o, "text_term", hint_term(b, e, &e->text)->text);
        }
        if (e->audio.present) {
            cJSON_AddStringToObject(o, "audio_term_kind",
                                    e->audio.ambiguous ? "ambiguous" : "specific");
            cJSON_AddStringToObject(o, "audio_term", hint_term(b, e, &e->audio)->text);
        }
        char *line = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!line) {
            s = tm_fail(TM_ERR_NOMEM, "out of memory");
            break;
        }
        s = tm_atomic_file_write(f, line, strlen(line));
        if (s == TM_OK) s = tm_atomic_file_write(f, "\n", 1);
        free(line);
    }
    if (s != TM_OK) {
        tm_atomic_file_abort(f);
        return s;
    }
    return tm_atomic_file_commit(f);
}

/* Counts of one split (or all: split -1). */
static cJSON *split_counts(const build *b, int split)
{
    int64_t n = 0, cls[FT_CLASSES] = {0}, texts = 0, clips = 0, tspec = 0, aspec = 0;
    int64_t degr[3] = {0}, noise[FT_NOISE_COUNT] = {0}, engines[FT_ENGINE_COUNT] = {0};
    int64_t *voices = calloc((size_t)ft_n_voices, sizeof *voices);
    double seconds = 0;
    int64_t ib = 0, ab = 0;
    for (int64_t i = 0; i < b->n_ex; i++) {
        const example *e = &b->ex[i];
        if (split >= 0 && e->split != split) continue;
        n++;
        cls[e->label]++;
        degr[e->degradation]++;
        ib += e->image_bytes;
        if (e->text.present) {
            texts++;
            tspec += !e->text.ambiguous;
        }
        if (e->audio.present) {
            clips++;
            aspec += !e->audio.ambiguous;
            noise[e->noise]++;
            engines[ft_voices[e->voice].engine]++;
            if (voices) voices[e->voice]++;
            seconds += e->seconds;
            ab += e->audio_bytes;
        }
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "examples", (double)n);
    cJSON *c = cJSON_AddObjectToObject(o, "per_class");
    for (int k = 0; k < FT_CLASSES; k++)
        cJSON_AddNumberToObject(c, b->terms.class_names[k], (double)cls[k]);
    cJSON_AddNumberToObject(o, "text", (double)texts);
    cJSON_AddNumberToObject(o, "text_specific", (double)tspec);
    cJSON_AddNumberToObject(o, "text_ambiguous", (double)(texts - tspec));
    cJSON_AddNumberToObject(o, "audio", (double)clips);
    cJSON_AddNumberToObject(o, "audio_specific", (double)aspec);
    cJSON_AddNumberToObject(o, "audio_ambiguous", (double)(clips - aspec));
    cJSON_AddNumberToObject(o, "audio_seconds", round_to(seconds, 0.01));
    cJSON *d = cJSON_AddObjectToObject(o, "image_degradation");
    for (int k = 0; k < 3; k++)
        cJSON_AddNumberToObject(d, degradation_names[k], (double)degr[k]);
    cJSON *nz = cJSON_AddObjectToObject(o, "noise");
    for (int k = 0; k < FT_NOISE_COUNT; k++)
        cJSON_AddNumberToObject(nz, ft_noise_name((ft_noise)k), (double)noise[k]);
    cJSON *en = cJSON_AddObjectToObject(o, "engines");
    for (int k = 0; k < FT_ENGINE_COUNT; k++)
        cJSON_AddNumberToObject(en, ft_engine_name((ft_engine)k), (double)engines[k]);
    cJSON *vo = cJSON_AddObjectToObject(o, "voices");
    for (int v = 0; voices && v < ft_n_voices; v++)
        if (voices[v]) cJSON_AddNumberToObject(vo, ft_voices[v].id, (double)voices[v]);
    cJSON_AddNumberToObject(o, "image_bytes", (double)ib);
    cJSON_AddNumberToObject(o, "audio_bytes", (double)ab);
    free(voices);
    return o;
}

static tm_status write_dataset_json(build *b, const tm_fashiontri_summary *sum)
{
    cJSON *d = cJSON_CreateObject();
    if (!d) return tm_fail(TM_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(d, "name", "fashion-tri");
    cJSON_AddStringToObject(d, "description",
                            "Fashion-MNIST images, each with a written and a spoken hint about the "
                            "same garment (WordNet terms, Debian text-to-speech voices); see "
                            "docs/datasets.md");
    cJSON_AddStringToObject(d, "version", "1");
    cJSON_AddStringToObject(d, "manifest", "manifest.jsonl");
    const char *mods[3] = {"text", "image", "audio"};
    cJSON_AddItemToObject(d, "modalities", string_array(mods, 3));
    cJSON_AddStringToObject(d, "license",
                            "images: MIT (Fashion-MNIST); hint terms: WordNet 3.0 licence; "
                            "synthetic speech: see provenance");
    cJSON_AddItemToObject(d, "classes",
                          string_array((const char *const *)b->terms.class_names, FT_CLASSES));
    cJSON *sp = cJSON_AddObjectToObject(d, "splits");
    cJSON_AddNumberToObject(sp, "train", (double)sum->n_train);
    cJSON_AddNumberToObject(sp, "val", (double)sum->n_val);
    cJSON_AddNumberToObject(sp, "test", (double)sum->n_test);
    cJSON_AddStringToObject(d, "recipe_hash", b->recipe_hash);
    cJSON_AddItemReferenceToObject(d, "recipe", b->recipe);
    cJSON *pk = cJSON_GetObjectItemCaseSensitive(b->recipe, "packages");
    cJSON_AddItemReferenceToObject(d, "packages", pk);
    cJSON *counts = cJSON_AddObjectToObject(d, "counts");
    for (int s = 0; s < 3; s++)
        cJSON_AddItemToObject(counts, split_names[s], split_counts(b, s));
    cJSON_AddItemToObject(counts, "all", split_counts(b, -1));
    cJSON_AddNumberToObject(counts, "utterances", (double)b->n_utt);
    cJSON *prov = cJSON_AddObjectToObject(d, "provenance");
    cJSON_AddStringToObject(prov, "images",
                            "Fashion-MNIST, Zalando Research (MIT licence), Debian "
                            "package dataset-fashion-mnist");
    cJSON_AddStringToObject(prov, "terms",
                            "WordNet 3.0, Princeton University (WordNet licence), "
                            "configs/fashion-tri/terms.json");
    cJSON_AddStringToObject(prov, "speech",
                            "espeak-ng (GPL-3+), flite (BSD-like), festival and "
                            "its voices (BSD-like); generated audio is synthetic");
    char by[64];
    snprintf(by, sizeof by, "trimodal %s", tm_version());
    cJSON_AddStringToObject(d, "created_by", by);
    /* the only part that varies between two builds of one recipe */
    cJSON *bd = cJSON_AddObjectToObject(d, "build");
    cJSON_AddNumberToObject(bd, "seconds", round_to(sum->seconds, 0.1));
    cJSON_AddNumberToObject(bd, "threads", tm_get_num_threads());
    cJSON_AddNumberToObject(bd, "utterances_rendered", (double)sum->rendered);
    cJSON_AddBoolToObject(bd, "resumed", sum->resumed);
    char *text = cJSON_Print(d);
    cJSON_Delete(d);
    if (!text) return tm_fail(TM_ERR_NOMEM, "out of memory");
    char path[4200];
    snprintf(path, sizeof path, "%s/dataset.json", b->out);
    size_t n = strlen(text);
    text[n] = '\n'; /* cJSON_Print leaves room for its NUL: write it as a newline */
    tm_status s = tm_write_file_atomic(path, text, n + 1);
    free(text);
    return s;
}

/* ------------------------------------------------------------- build */

static void build_free(build *b)
{
    ft_terms_free(&b->terms);
    tm_free(b->packages);
    for (int i = 0; i < 4; i++) {
        tm_idx_close(b->idx[i]);
        tm_free(b->src_data[i]);
    }
    tm_free(b->ex);
    for (int64_t i = 0; i < b->n_utt; i++) {
        tm_free(b->utt[i].text);
        tm_free(b->utt[i].path);
    }
    tm_free(b->utt);
    tm_free(b->slots);
    cJSON_Delete(b->recipe);
    pthread_mutex_destroy(&b->err.mu);
}

static tm_status check_params(const tm_fashiontri_params *p)
{
    if (!p) return tm_fail(TM_ERR_INVALID, "fashion-tri: no params");
    if (!p->out_dir || !*p->out_dir)
        return tm_fail(TM_ERR_INVALID, "fashion-tri: give an output folder (--out DIR)");
    if (strlen(p->out_dir) > 3000 || (p->cache_dir && strlen(p->cache_dir) > 3000) ||
        (p->source_dir && strlen(p->source_dir) > 3000))
        return tm_fail(TM_ERR_INVALID, "fashion-tri: a folder name longer than 3000 bytes");
    if (p->limit_train < 0 || p->limit_train > N_TRAIN)
        return tm_fail(TM_ERR_INVALID, "fashion-tri: --limit-train %lld outside 0..%d (0: all)",
                       (long long)p->limit_train, N_TRAIN);
    if (p->limit_test < 0 || p->limit_test > N_TEST)
        return tm_fail(TM_ERR_INVALID, "fashion-tri: --limit-test %lld outside 0..%d (0: all)",
                       (long long)p->limit_test, N_TEST);
    return TM_OK;
}

tm_status tm_fashiontri_check(const tm_fashiontri_params *params)
{
    tm_fashiontri_params p = params ? *params : tm_fashiontri_default_params();
    char path[4096];
    const char *dir = p.source_dir ? p.source_dir : "/usr/share/datasets/fashion-mnist";
    for (int i = 0; i < 4; i++) {
        tm_status s = source_path(path, sizeof path, dir, source_names[i]);
        if (s != TM_OK) return s;
    }
    return ft_check_engines();
}

/* Every file the manifest names, present? */
static int all_media_present(const build *b)
{
    char path[4300];
    for (int64_t i = 0; i < b->n_ex; i++) {
        media_path(path, sizeof path, b, &b->ex[i], 0);
        if (!file_exists(path)) return 0;
        if (b->ex[i].audio.present) {
            media_path(path, sizeof path, b, &b->ex[i], 1);
            if (!file_exists(path)) return 0;
        }
    }
    snprintf(path, sizeof path, "%s/manifest.jsonl", b->out);
    return file_exists(path);
}

tm_status tm_fashiontri_build(const tm_fashiontri_params *params, tm_fashiontri_summary *summary)
{
    tm_fashiontri_summary sum;
    memset(&sum, 0, sizeof sum);
    if (summary) *summary = sum;
    tm_status s = check_params(params);
    if (s != TM_OK) return s;
    double t0 = tm_time_s();
    build *b = calloc(1, sizeof *b);
    if (!b) return tm_fail(TM_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&b->err.mu, NULL);
    b->p = *params;
    snprintf(b->out, sizeof b->out, "%s", b->p.out_dir);
    size_t ol = strlen(b->out);
    while (ol > 1 && b->out[ol - 1] == '/')
        b->out[--ol] = 0;
    if (b->p.cache_dir)
        snprintf(b->cache, sizeof b->cache, "%s", b->p.cache_dir);
    else
        snprintf(b->cache, sizeof b->cache, "%s/.tts-cache", b->out);
    snprintf(b->tmp, sizeof b->tmp, "%s/tmp-%ld", b->cache, (long)getpid());

    const char *terms_path = b->p.terms_path ? b->p.terms_path : "configs/fashion-tri/terms.json";
    int state = 0;
    if ((s = ft_terms_load(&b->terms, terms_path)) != TM_OK) goto out;
    if ((s = source_sizes(b)) != TM_OK) goto out;
    if ((s = ft_package_versions(&b->packages)) != TM_OK) goto out;
    if ((s = make_recipe(b)) != TM_OK) goto out;
    if ((s = inspect_out(b, &state)) != TM_OK) goto out;
    /* labels are enough to plan (and so to check a finished build) */
    if ((s = load_source(b, 1)) != TM_OK || (s = load_source(b, 3)) != TM_OK) goto out;
    if ((s = plan(b)) != TM_OK) goto out;
    for (int64_t i = 0; i < b->n_ex; i++) {
        example *e = &b->ex[i];
        sum.n_train += e->split == 0;
        sum.n_val += e->split == 1;
        sum.n_test += e->split == 2;
        sum.texts += e->text.present;
        sum.clips += e->audio.present;
    }
    sum.utterances = b->n_utt;
    uint64_t hv = strtoull(b->recipe_hash, NULL, 16);
    sum.recipe_hash = hv;
    if (state == 1 && all_media_present(b)) {
        sum.up_to_date = 1;
        sum.seconds = tm_time_s() - t0;
        goto out;
    }
    if ((s = ft_check_engines()) != TM_OK) goto out;
    if ((s = load_source(b, 0)) != TM_OK || (s = load_source(b, 2)) != TM_OK) goto out;
    if ((s = ft_mkdirs(b->out)) != TM_OK) goto out;
    b->resume = state != 0;
    sum.resumed = b->resume;
    {
        char marker[4200];
        snprintf(marker, sizeof marker, "%s/" MARKER, b->out);
        if (state == 1) { /* a finished build with files missing: finish it again */
            char ds[4200];
            snprintf(ds, sizeof ds, "%s/dataset.json", b->out);
            if ((s = tm_write_file_atomic(marker, b->recipe_hash, 16)) != TM_OK) goto out;
            unlink(ds);
        } else if (state == 0 && (s = tm_write_file_atomic(marker, b->recipe_hash, 16)) != TM_OK) {
            goto out;
        }
    }
    if ((s = render_all(b, &sum.rendered)) != TM_OK) goto out;
    if ((s = make_examples(b)) != TM_OK) goto out;
    /* media first, durably, then the manifest and dataset.json that name them */
    {
        int fd = open(b->out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || syncfs(fd) != 0) sync();
        if (fd >= 0) close(fd);
    }
    for (int64_t i = 0; i < b->n_ex; i++) {
        sum.audio_seconds += b->ex[i].seconds;
        sum.media_bytes += b->ex[i].image_bytes + b->ex[i].audio_bytes;
    }
    sum.seconds = tm_time_s() - t0;
    if ((s = write_manifest(b)) != TM_OK) goto out;
    if ((s = write_dataset_json(b, &sum)) != TM_OK) goto out;
    {
        char marker[4200];
        snprintf(marker, sizeof marker, "%s/" MARKER, b->out);
        unlink(marker);
    }
    sum.seconds = tm_time_s() - t0;
out:
    build_free(b);
    free(b);
    if (s == TM_OK && summary) *summary = sum;
    return s;
}
