/* The data loader: a manifest becomes batches laid out as the model's
 * inputs, made by worker threads ahead of the consumer.
 *
 * The stream of batches is fixed by the config alone. Each epoch has a
 * permutation of the selected rows drawn from (seed, epoch); rank r of
 * world n takes every n-th entry from r; batches are consecutive runs of B
 * examples of that. Planning a batch (under the lock) writes its row
 * indices into a free slot of a ring of `prefetch` slots; workers claim
 * single examples of planned batches, so one batch is made by several
 * workers at once, and every example is a pure function of (config, epoch,
 * row): which worker makes it, and when, changes nothing. The consumer
 * takes slots in sequence order; a slot is reused once the consumer has
 * moved past it. Seeking bumps a generation number, waits for the examples
 * in flight, and plans again from the new position.
 *
 * Decoded media (the resized image in [0, 1] before augmentation and
 * normalisation; the log-mel, or the waveform when waveform augmentation
 * is on) is cached per row up to a byte cap; entries are immutable once
 * inserted and freed with the loader, so workers copy them without a lock. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/data.h"

#define MAX_WORKERS 64

typedef struct {
    float *image; /* (C, H, W) in [0, 1] */
    int src_w, src_h;
} img_entry;

typedef struct {
    float *data; /* log-mel (n_mels, n_frames), or waveform samples */
    int64_t n;
} aud_entry;

enum { SLOT_FREE = 0, SLOT_FILLING, SLOT_READY };

typedef struct {
    tm_batch b;
    int64_t seq;
    int state;
    int64_t claimed, done;
    tm_status err; /* the failure of the lowest failing example */
    int64_t err_j;
    char *err_msg;
} slot;

typedef struct {
    tm_loader *l;
    pthread_t thread;
    float *scratch; /* 2 x C*H*W */
    char *err;      /* message of the last failure (malloc) */
} worker;

struct tm_loader {
    const tm_manifest *m;
    tm_loader_config cfg;
    int64_t B, T, C, H, W, CHW, NM, NF, MF, MW, M;
    unsigned want; /* modalities with a shape */
    int64_t *sel;  /* selected rows */
    int64_t n_sel;
    int64_t esize; /* examples of this rank's epoch */
    tm_logmel *logmel;
    tm_image_params img_params; /* to [0, 1]: mean 0, std 1 */
    tm_audio_load_params audio_load;

    pthread_mutex_t lock;
    pthread_cond_t work_cv, ready_cv, idle_cv;
    int quit;
    uint64_t gen;
    int busy; /* examples being made */
    slot *slots;
    int P;
    int64_t planned, released, consumed; /* sequence numbers */
    int outstanding;                     /* the consumer holds batch consumed - 1 */
    tm_loader_pos plan_pos, pos;
    /* permutation of the plan epoch */
    int64_t *perm;
    int64_t perm_epoch;
    /* failure surfaced to the consumer */
    tm_status failed;
    char *failed_msg;
    /* stats */
    tm_loader_stats st;
    double t0;

    /* cache */
    pthread_mutex_t cache_lock;
    img_entry **img_cache;
    aud_entry **aud_cache;
    size_t cache_used;
    int64_t cache_entries;

    worker *workers;
    int n_workers, started;
};

/* ------------------------------------------------------------- seeds */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

enum { SEED_PERM = 1, SEED_IMAGE, SEED_AUDIO, SEED_SPEC, SEED_TEXT, SEED_DROP };

/* The seed of one kind of draw in one epoch; the row index is the index. */
static uint64_t epoch_seed(uint64_t seed, int64_t epoch, int kind)
{
    return mix64(mix64(seed ^ mix64((uint64_t)epoch * 0x100000001b3ull + (uint64_t)kind)) +
                 (uint64_t)kind);
}

/* Fisher-Yates from (seed, epoch). */
static void permute(int64_t *p, int64_t n, uint64_t seed, int64_t epoch)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = i;
    tm_rng r = tm_rng_new(epoch_seed(seed, epoch, SEED_PERM), (uint64_t)epoch);
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t u = ((uint64_t)tm_rng_u32(&r) << 32) | tm_rng_u32(&r);
        int64_t j = (int64_t)(u % (uint64_t)(i + 1));
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

/* ------------------------------------------------------------- config */

tm_loader_aug tm_loader_aug_default(void)
{
    tm_loader_aug a;
    memset(&a, 0, sizeof a);
    a.image = tm_image_aug_default_params();
    a.audio = tm_audio_aug_default_params();
    a.spec = tm_specaug_default_params();
    return a;
}

tm_loader_config tm_loader_default_config(void)
{
    tm_loader_config c;
    memset(&c, 0, sizeof c);
    c.batch_size = 32;
    c.text_tokens = 32;
    c.image_channels = 1;
    c.image_h = c.image_w = 32;
    c.n_mels = 64;
    c.n_frames = 100;
    c.n_modalities = 3;
    c.modality[0] = TM_MODALITY_TEXT;
    c.modality[1] = TM_MODALITY_IMAGE;
    c.modality[2] = TM_MODALITY_AUDIO;
    c.shuffle = 1;
    c.world = 1;
    c.cache_bytes = (size_t)2 << 30;
    c.max_words = 16;
    c.preprocess = tm_preprocess_default_config();
    c.aug = tm_loader_aug_default();
    return c;
}

static tm_status bad(const char *what)
{
    return tm_fail(TM_ERR_INVALID, "loader: %s", what);
}

static tm_status check_config(const tm_loader_config *c, const tm_manifest *m)
{
    char msg[320];
    if (c->batch_size < 1 || c->batch_size > (1 << 20))
        return bad("batch_size must be in 1..1048576");
    if (c->text_tokens < 0 || c->text_tokens > (1 << 20) || c->image_channels < 0 ||
        c->image_h < 0 || c->image_w < 0 || c->n_mels < 0 || c->n_frames < 0 ||
        c->image_h > 65536 || c->image_w > 65536 || c->n_mels > 4096 || c->n_frames > (1 << 24))
        return bad("a shape is negative or too large");
    int img = c->image_channels || c->image_h || c->image_w;
    if (img && (c->image_channels <= 0 || c->image_h <= 0 || c->image_w <= 0))
        return bad("image_channels, image_h and image_w must all be > 0 (or all 0: no image)");
    if ((c->n_mels > 0) != (c->n_frames > 0))
        return bad("n_mels and n_frames must both be > 0 (or both 0: no audio)");
    if (c->text_tokens > 0 && !c->tokenizer)
        return bad("text_tokens > 0 needs a tokenizer (tm_loader_config.tokenizer)");
    const tm_preprocess_config *p = &c->preprocess;
    if (img) {
        if (c->image_channels != 1 && c->image_channels != 3)
            return bad("image_channels must be 1 or 3");
        if (p->image.channels != c->image_channels || p->image.height != c->image_h ||
            p->image.width != c->image_w) {
            snprintf(msg, sizeof msg,
                     "preprocess image is %d x %d x %d (channels x height x width) but the model "
                     "takes %lld x %lld x %lld; fix preprocess.json's image section",
                     p->image.channels, p->image.height, p->image.width,
                     (long long)c->image_channels, (long long)c->image_h, (long long)c->image_w);
            return bad(msg);
        }
        if (p->image.patch)
            return bad("preprocess image.patch must be 0: the loader gives (C, H, W) images");
    }
    if (c->n_mels > 0) {
        if (p->audio.n_mels != c->n_mels) {
            snprintf(msg, sizeof msg,
                     "preprocess audio.n_mels is %d but the model takes %lld mel bins",
                     p->audio.n_mels, (long long)c->n_mels);
            return bad(msg);
        }
        if (p->audio.target_frames && p->audio.target_frames != c->n_frames) {
            snprintf(msg, sizeof msg,
                     "preprocess audio.frames is %d but the model takes %lld frames",
                     p->audio.target_frames, (long long)c->n_frames);
            return bad(msg);
        }
    }
    if (c->text_tokens > 0 && p->text.max_length && p->text.max_length != c->text_tokens) {
        snprintf(msg, sizeof msg,
                 "preprocess text.max_length is %d but the model takes %lld tokens",
                 p->text.max_length, (long long)c->text_tokens);
        return bad(msg);
    }
    if (c->n_modalities < 1 || c->n_modalities > 4) return bad("n_modalities must be 1..4");
    for (int i = 0; i < c->n_modalities; i++) {
        unsigned b = c->modality[i];
        int ok = (b == TM_MODALITY_TEXT && c->text_tokens > 0) || (b == TM_MODALITY_IMAGE && img) ||
                 (b == TM_MODALITY_AUDIO && c->n_mels > 0);
        for (int j = 0; j < i; j++)
            if (c->modality[j] == b) ok = 0;
        if (!ok) {
            snprintf(msg, sizeof msg,
                     "modality[%d] (bit %u) is not text, image or audio with a shape, or is "
                     "listed twice",
                     i, b);
            return bad(msg);
        }
    }
    if (c->world < 1 || c->rank < 0 || c->rank >= c->world)
        return bad("need world >= 1 and 0 <= rank < world");
    if (c->workers < 0 || c->workers > MAX_WORKERS) return bad("workers must be 0..64");
    if (c->prefetch < 0 || c->prefetch > 1024) return bad("prefetch must be 0..1024");
    if (c->max_words < 0) return bad("max_words must be 0 or more");
    if (c->max_words > tm_limit_get(TM_LIMIT_MANIFEST_WORDS))
        return tm_fail(TM_ERR_LIMIT, "loader: max_words %d is over the limit of %lld (limit %s)",
                       c->max_words, (long long)tm_limit_get(TM_LIMIT_MANIFEST_WORDS),
                       tm_limit_hint(TM_LIMIT_MANIFEST_WORDS));
    if (c->n_rows < 0 || (c->n_rows > 0 && !c->rows)) return bad("bad rows / n_rows");
    for (int64_t i = 0; i < c->n_rows; i++)
        if (c->rows[i] < 0 || c->rows[i] >= tm_manifest_count(m)) {
            snprintf(msg, sizeof msg, "rows[%lld] = %lld is not a row of the manifest (0..%lld)",
                     (long long)i, (long long)c->rows[i], (long long)tm_manifest_count(m) - 1);
            return bad(msg);
        }
    for (int i = 0; i < 3; i++)
        if (!(c->aug.modality_dropout[i] >= 0 && c->aug.modality_dropout[i] <= 1))
            return bad("aug.modality_dropout values must be in [0, 1]");
    if (!(c->aug.text_delete_prob >= 0 && c->aug.text_delete_prob <= 1) ||
        !(c->aug.synonym_prob >= 0 && c->aug.synonym_prob <= 1))
        return bad("aug.text_delete_prob and aug.synonym_prob must be in [0, 1]");
    return TM_OK;
}

/* -------------------------------------------------------------- cache */

static const img_entry *img_lookup(tm_loader *l, int64_t row)
{
    if (!l->img_cache) return NULL;
    pthread_mutex_lock(&l->cache_lock);
    const img_entry *e = l->img_cache[row];
    pthread_mutex_unlock(&l->cache_lock);
    return e;
}

static const aud_entry *aud_lookup(tm_loader *l, int64_t row)
{
    if (!l->aud_cache) return NULL;
    pthread_mutex_lock(&l->cache_lock);
    const aud_entry *e = l->aud_cache[row];
    pthread_mutex_unlock(&l->cache_lock);
    return e;
}

/* Takes ownership of e when it is inserted (returns 1), else the caller
 * frees it. */
static int cache_insert(tm_loader *l, int64_t row, void *e, size_t bytes, int is_image)
{
    int done = 0;
    pthread_mutex_lock(&l->cache_lock);
    if (l->cache_used + bytes <= l->cfg.cache_bytes) {
        void **slotp = is_image ? (void **)&l->img_cache[row] : (void **)&l->aud_cache[row];
        if (!*slotp) {
            *slotp = e;
            l->cache_used += bytes;
            l->cache_entries++;
            done = 1;
        }
    }
    pthread_mutex_unlock(&l->cache_lock);
    return done;
}

/* ----------------------------------------------------------- examples */

typedef struct {
    double decode_s;
    int64_t hits, misses, bad;
} ex_stats;

/* Records a failure of row r's `what` in w->err. */
static tm_status row_fail(worker *w, const tm_manifest_row *r, const char *what, const char *file,
                          tm_status s)
{
    tm_loader *l = w->l;
    const char *why = tm_last_error();
    size_t n = strlen(tm_manifest_path(l->m)) + strlen(what) + (file ? strlen(file) : 0) +
               strlen(why) + 64;
    free(w->err);
    w->err = malloc(n);
    if (w->err)
        snprintf(w->err, n, "%s:%lld: %s%s%s%s: %s", tm_manifest_path(l->m), (long long)r->line,
                 what, file ? " \"" : "", file ? file : "", file ? "\"" : "", why);
    return s ? s : TM_ERR_INTERNAL;
}

/* The resized image of row r in [0, 1]: from the cache or decoded (and
 * offered to the cache). *owned is set when the caller must free it. */
static tm_status get_image(worker *w, int64_t row, const tm_manifest_row *r, const img_entry **out,
                           img_entry **owned, ex_stats *es)
{
    tm_loader *l = w->l;
    *owned = NULL;
    const img_entry *e = img_lookup(l, row);
    if (e) {
        es->hits++;
        *out = e;
        return TM_OK;
    }
    es->misses++;
    double t = tm_time_s();
    tm_image_decode_params dp = tm_image_decode_default_params();
    dp.channels = (int)l->C;
    tm_image *img = NULL;
    tm_status s = tm_image_load(&img, r->image_path, dp);
    img_entry *ne = NULL;
    if (!s) {
        ne = calloc(1, sizeof *ne);
        float *px = ne ? malloc((size_t)l->CHW * sizeof *px) : NULL;
        if (!px) {
            free(ne);
            ne = NULL;
            s = tm_fail(TM_ERR_NOMEM, "out of memory");
        } else {
            ne->image = px;
            ne->src_w = img->width;
            ne->src_h = img->height;
            s = tm_image_preprocess(px, (size_t)l->CHW, img, l->img_params);
        }
    }
    tm_image_free(img);
    es->decode_s += tm_time_s() - t;
    if (s) {
        if (ne) free(ne->image);
        free(ne);
        return s;
    }
    if (!cache_insert(l, row, ne, (size_t)l->CHW * sizeof(float) + sizeof *ne, 1)) *owned = ne;
    *out = ne;
    return TM_OK;
}

static tm_status get_audio(worker *w, int64_t row, const tm_manifest_row *r, const aud_entry **out,
                           aud_entry **owned, ex_stats *es)
{
    tm_loader *l = w->l;
    *owned = NULL;
    const aud_entry *e = aud_lookup(l, row);
    if (e) {
        es->hits++;
        *out = e;
        return TM_OK;
    }
    es->misses++;
    double t = tm_time_s();
    tm_audio *a = NULL;
    tm_status s = tm_audio_load_file(&a, r->audio_path, l->audio_load);
    aud_entry *ne = NULL;
    if (!s) {
        ne = calloc(1, sizeof *ne);
        int64_t n = l->cfg.aug.audio_wave && l->cfg.augment ? a->n_samples : l->MF;
        float *d = ne ? malloc((size_t)(n ? n : 1) * sizeof *d) : NULL;
        if (!d) {
            free(ne);
            ne = NULL;
            s = tm_fail(TM_ERR_NOMEM, "out of memory");
        } else {
            ne->data = d;
            ne->n = n;
            if (l->cfg.aug.audio_wave && l->cfg.augment)
                memcpy(d, a->samples, (size_t)n * sizeof *d);
            else
                s = tm_logmel_compute(l->logmel, a->samples, a->n_samples, d);
        }
    }
    tm_audio_free(a);
    es->decode_s += tm_time_s() - t;
    if (s) {
        if (ne) free(ne->data);
        free(ne);
        return s;
    }
    if (!cache_insert(l, row, ne, (size_t)ne->n * sizeof(float) + sizeof *ne, 0)) *owned = ne;
    *out = ne;
    return TM_OK;
}

static void free_img(img_entry *e)
{
    if (e) free(e->image);
    free(e);
}
static void free_aud(aud_entry *e)
{
    if (e) free(e->data);
    free(e);
}

/* Where the region [x0, y0, x1, y1] of the source image lands in the
 * resized (and cropped) model input, as tm_image_preprocess places it. */
static int half_round_even(int v) /* round(v / 2), ties to even */
{
    int q = v / 2;
    if (v % 2 && q % 2) q += v > 0 ? 1 : -1;
    return q;
}

static void map_region(const tm_loader *l, const img_entry *e, const float in[4], float out[4])
{
    const tm_image_params *p = &l->cfg.preprocess.image;
    double sx, sy, ox = 0, oy = 0;
    if (p->mode == TM_RESIZE_EXACT) {
        sx = (double)l->W / e->src_w;
        sy = (double)l->H / e->src_h;
    } else {
        int nh = e->src_h, nw = e->src_w;
        if (p->size > 0 && tm_image_resize_shorter_size(&nh, &nw, e->src_h, e->src_w, p->size))
            nh = e->src_h, nw = e->src_w;
        sx = (double)nw / e->src_w;
        sy = (double)nh / e->src_h;
        int pl = (int)l->W > nw ? ((int)l->W - nw) / 2 : 0;
        int pr = (int)l->W > nw ? ((int)l->W - nw + 1) / 2 : 0;
        int pt = (int)l->H > nh ? ((int)l->H - nh) / 2 : 0;
        int pb = (int)l->H > nh ? ((int)l->H - nh + 1) / 2 : 0;
        oy = half_round_even(nh + pt + pb - (int)l->H) - pt;
        ox = half_round_even(nw + pl + pr - (int)l->W) - pl;
    }
    out[0] = (float)(in[0] * sx - ox);
    out[1] = (float)(in[1] * sy - oy);
    out[2] = (float)(in[2] * sx - ox);
    out[3] = (float)(in[3] * sy - oy);
}

/* Clips a region to the W x H image; 0 when nothing is left. */
static int clip_region(float r[4], float W, float H)
{
    r[0] = fmaxf(r[0], 0), r[1] = fmaxf(r[1], 0);
    r[2] = fminf(r[2], W), r[3] = fminf(r[3], H);
    return r[2] > r[0] && r[3] > r[1];
}

/* The image augmentations of one example into dst (C, H, W); region (or
 * NULL) follows the geometric ones. */
static tm_status augment_image(worker *w, float *dst, const float *src, float *region, int64_t row,
                               int64_t epoch)
{
    tm_loader *l = w->l;
    const tm_loader_aug *a = &l->cfg.aug;
    int C = (int)l->C, H = (int)l->H, W = (int)l->W;
    uint64_t seed = epoch_seed(l->cfg.seed, epoch, SEED_IMAGE);
    uint64_t idx = (uint64_t)row;
    float *tmp = w->scratch;
    size_t bytes = (size_t)l->CHW * sizeof(float);
    memcpy(dst, src, bytes);
    tm_status s = TM_OK;
    if (a->image_crop) {
        tm_image_box box;
        s = tm_image_random_resized_crop(tmp, &box, dst, C, H, W, H, W, a->image, seed, idx);
        if (s) return s;
        memcpy(dst, tmp, bytes);
        if (region) {
            float fx = (float)W / box.width, fy = (float)H / box.height;
            region[0] = (region[0] - box.left) * fx, region[2] = (region[2] - box.left) * fx;
            region[1] = (region[1] - box.top) * fy, region[3] = (region[3] - box.top) * fy;
        }
    }
    if (a->image_flip) {
        int flipped = 0;
        s = tm_image_random_hflip(tmp, &flipped, dst, C, H, W, a->image, seed, idx);
        if (s) return s;
        memcpy(dst, tmp, bytes);
        if (region && flipped) {
            float x0 = region[0];
            region[0] = (float)W - region[2];
            region[2] = (float)W - x0;
        }
    }
    if (a->image_rotate) {
        float angle = 0;
        s = tm_image_random_rotate(tmp, &angle, dst, C, H, W, a->image, seed, idx);
        if (s) return s;
        memcpy(dst, tmp, bytes);
        if (region) {
            /* the output at centred (u, v) samples the input at R(angle)(u, v),
             * so input points move by R(-angle); the box of the corners */
            double t = angle * 3.14159265358979323846 / 180.0, c = cos(t), sn = sin(t);
            float nx0 = INFINITY, ny0 = INFINITY, nx1 = -INFINITY, ny1 = -INFINITY;
            for (int k = 0; k < 4; k++) {
                double u = region[k & 1 ? 2 : 0] - W / 2.0, v = region[k & 2 ? 3 : 1] - H / 2.0;
                float x = (float)(c * u + sn * v + W / 2.0), y = (float)(-sn * u + c * v + H / 2.0);
                nx0 = fminf(nx0, x), nx1 = fmaxf(nx1, x), ny0 = fminf(ny0, y), ny1 = fmaxf(ny1, y);
            }
            region[0] = nx0, region[1] = ny0, region[2] = nx1, region[3] = ny1;
        }
    }
    if (a->image_jitter) {
        s = tm_image_color_jitter(dst, NULL, dst, C, H, W, a->image, seed, idx);
        if (s) return s;
    }
    return TM_OK;
}

/* Fills example j of slot sl from manifest row `row`. Returns a failure
 * with w->err set. */
static tm_status make_example(worker *w, slot *sl, int64_t j, int64_t row, int64_t epoch,
                              ex_stats *es)
{
    tm_loader *l = w->l;
    const tm_loader_config *c = &l->cfg;
    const tm_manifest_row *r = tm_manifest_row_at(l->m, row);
    tm_batch *b = &sl->b;
    unsigned present = r->present & l->want;
    tm_status s;
    b->rows[j] = row;
    b->ids[j] = r->id;
    b->labels[j] = r->label;
    int aug = c->augment;

    /* text */
    if (l->T > 0) {
        int32_t *ids = b->tokens + j * l->T;
        int32_t len = 0;
        if (present & TM_MODALITY_TEXT) {
            const char *txt = r->text;
            size_t n = r->text_len;
            char *t1 = NULL, *t2 = NULL;
            uint64_t seed = epoch_seed(c->seed, epoch, SEED_TEXT);
            s = TM_OK;
            if (aug && c->aug.text_delete_prob > 0) {
                s = tm_text_delete_words(txt, n, c->aug.text_delete_prob, seed, (uint64_t)row, &t1,
                                         &n);
                if (!s) txt = t1;
            }
            if (!s && aug && c->aug.synonyms && c->aug.synonym_prob > 0) {
                s = tm_text_replace_synonyms(c->aug.synonyms, txt, n, c->aug.synonym_prob, seed + 1,
                                             (uint64_t)row, &t2, &n, NULL);
                if (!s) txt = t2;
            }
            tm_tokenizer_encode_params ep = c->preprocess.text;
            ep.max_length = (int32_t)l->T;
            ep.pad_to_max_length = 0;
            if (!s)
                s = tm_tokenizer_encode_into(c->tokenizer, txt, n, &ep, ids, NULL, (int32_t)l->T,
                                             &len);
            tm_free(t1);
            tm_free(t2);
            if (s) {
                row_fail(w, r, "text", NULL, s);
                if (!c->skip_bad) return s;
                es->bad++;
                present &= ~(unsigned)TM_MODALITY_TEXT;
                len = 0;
            }
        }
        /* an empty text is no text: the model never attends to nothing */
        if (!len) present &= ~(unsigned)TM_MODALITY_TEXT;
        for (int64_t k = len; k < l->T; k++)
            ids[k] = c->pad_id;
        b->n_tokens[j] = len;
    }

    /* image */
    float *reg = b->region + j * 4;
    reg[0] = reg[1] = reg[2] = reg[3] = -1;
    if (l->CHW > 0) {
        float *dst = b->image + j * l->CHW;
        if (present & TM_MODALITY_IMAGE) {
            const img_entry *e;
            img_entry *owned;
            s = get_image(w, row, r, &e, &owned, es);
            if (!s) {
                float rg[4];
                int has = r->has_region;
                if (has) map_region(l, e, r->region, rg);
                if (aug && (c->aug.image_crop || c->aug.image_flip || c->aug.image_rotate ||
                            c->aug.image_jitter))
                    s = augment_image(w, dst, e->image, has ? rg : NULL, row, epoch);
                else
                    memcpy(dst, e->image, (size_t)l->CHW * sizeof *dst);
                if (!s)
                    s = tm_image_normalize(dst, dst, (int)l->C, (int)l->H, (int)l->W,
                                           c->preprocess.image.mean, c->preprocess.image.std);
                if (!s && aug && c->aug.image_erase)
                    s = tm_image_random_erase(
                        dst, NULL, dst, (int)l->C, (int)l->H, (int)l->W, c->aug.image,
                        epoch_seed(c->seed, epoch, SEED_IMAGE) + 1, (uint64_t)row);
                if (!s && has && clip_region(rg, (float)l->W, (float)l->H))
                    memcpy(reg, rg, sizeof rg);
            }
            free_img(owned);
            if (s) {
                row_fail(w, r, "image", r->image, s);
                if (!c->skip_bad) return s;
                es->bad++;
                present &= ~(unsigned)TM_MODALITY_IMAGE;
                reg[0] = reg[1] = reg[2] = reg[3] = -1;
            }
        }
        if (!(present & TM_MODALITY_IMAGE)) memset(dst, 0, (size_t)l->CHW * sizeof *dst);
    }

    /* audio */
    int32_t *wf = b->word_frames + j * l->MW * 2;
    for (int64_t k = 0; k < l->MW * 2; k++)
        wf[k] = -1;
    b->n_words[j] = 0;
    if (l->MF > 0) {
        float *dst = b->mel + j * l->MF;
        if (present & TM_MODALITY_AUDIO) {
            const aud_entry *e;
            aud_entry *owned;
            double rate = 1.0, shift_s = 0.0;
            s = get_audio(w, row, r, &e, &owned, es);
            if (!s && aug && c->aug.audio_wave) {
                tm_audio *in = NULL, *outa = NULL;
                tm_audio_aug_record rec;
                s = tm_audio_from_samples(&in, e->data, e->n, c->preprocess.audio.sample_rate);
                if (!s)
                    s = tm_audio_augment(&outa, in, c->aug.audio,
                                         epoch_seed(c->seed, epoch, SEED_AUDIO), (uint64_t)row,
                                         &rec);
                double t = tm_time_s();
                if (!s) s = tm_logmel_compute(l->logmel, outa->samples, outa->n_samples, dst);
                es->decode_s += tm_time_s() - t;
                if (!s && rec.stretched) rate = rec.stretch_rate;
                if (!s && rec.shifted)
                    shift_s = (double)rec.shift / c->preprocess.audio.sample_rate;
                tm_audio_free(in);
                tm_audio_free(outa);
            } else if (!s) {
                memcpy(dst, e->data, (size_t)l->MF * sizeof *dst);
            }
            if (!s && aug && c->aug.specaug)
                s = tm_specaug(dst, (int)l->NM, l->NF, c->aug.spec,
                               epoch_seed(c->seed, epoch, SEED_SPEC), (uint64_t)row, NULL);
            free_aud(owned);
            if (s) {
                row_fail(w, r, "audio", r->audio, s);
                if (!c->skip_bad) return s;
                es->bad++;
                present &= ~(unsigned)TM_MODALITY_AUDIO;
            } else {
                /* word timings in frames of the (augmented) log-mel */
                double fps = (double)c->preprocess.audio.sample_rate / c->preprocess.audio.hop;
                int nw = r->n_words < l->MW ? r->n_words : (int)l->MW;
                for (int k = 0; k < nw; k++) {
                    double t0 = r->words[k].start / rate + shift_s;
                    double t1 = r->words[k].end / rate + shift_s;
                    double f0 = floor(t0 * fps), f1 = ceil(t1 * fps);
                    if (f1 <= f0) f1 = f0 + 1;
                    f0 = fmin(fmax(f0, 0), (double)l->NF);
                    f1 = fmin(fmax(f1, 0), (double)l->NF);
                    wf[2 * k] = (int32_t)f0;
                    wf[2 * k + 1] = (int32_t)f1;
                }
                b->n_words[j] = nw;
            }
        }
        if (!(present & TM_MODALITY_AUDIO)) memset(dst, 0, (size_t)l->MF * sizeof *dst);
    }

    if (aug) {
        const float *p = c->aug.modality_dropout;
        if (p[0] > 0 || p[1] > 0 || p[2] > 0)
            present = tm_modality_dropout(present, p, epoch_seed(c->seed, epoch, SEED_DROP),
                                          (uint64_t)row);
    }
    if (!present) b->labels[j] = TM_LABEL_NONE;
    for (int k = 0; k < l->M; k++)
        b->present[j * l->M + k] = (present & c->modality[k]) != 0;
    return TM_OK;
}

/* A padding row of a short batch. */
static void pad_example(tm_loader *l, tm_batch *b, int64_t j)
{
    for (int64_t k = 0; k < l->T; k++)
        b->tokens[j * l->T + k] = l->cfg.pad_id;
    if (l->T) b->n_tokens[j] = 0;
    if (l->CHW) memset(b->image + j * l->CHW, 0, (size_t)l->CHW * sizeof(float));
    if (l->MF) memset(b->mel + j * l->MF, 0, (size_t)l->MF * sizeof(float));
    b->labels[j] = TM_LABEL_NONE;
    memset(b->present + j * l->M, 0, (size_t)l->M);
    b->rows[j] = -1;
    b->ids[j] = NULL;
    for (int k = 0; k < 4; k++)
        b->region[j * 4 + k] = -1;
    b->n_words[j] = 0;
    for (int64_t k = 0; k < l->MW * 2; k++)
        b->word_frames[j * l->MW * 2 + k] = -1;
}

/* ------------------------------------------------------------ planning */

/* Moves a position past an exhausted epoch. */
static tm_loader_pos normalize(const tm_loader *l, tm_loader_pos p)
{
    if (p.index >= l->esize || (l->cfg.drop_last && p.index + l->B > l->esize)) {
        p.epoch++;
        p.index = 0;
    }
    return p;
}

/* Plans the next batch into its slot. Called with the lock held. */
static void plan_batch(tm_loader *l)
{
    tm_loader_pos p = normalize(l, l->plan_pos);
    slot *sl = &l->slots[l->planned % l->P];
    int64_t size = l->esize - p.index < l->B ? l->esize - p.index : l->B;
    if (l->cfg.shuffle && l->perm_epoch != p.epoch) {
        permute(l->perm, l->n_sel, l->cfg.seed, p.epoch);
        l->perm_epoch = p.epoch;
    }
    for (int64_t j = 0; j < size; j++) {
        int64_t k = l->cfg.rank + (p.index + j) * l->cfg.world;
        sl->b.rows[j] = l->sel[l->cfg.shuffle ? l->perm[k] : k];
    }
    for (int64_t j = size; j < l->B; j++)
        pad_example(l, &sl->b, j);
    sl->b.size = size;
    sl->b.epoch = p.epoch;
    sl->b.index = p.index;
    sl->seq = l->planned;
    sl->state = SLOT_FILLING;
    sl->claimed = sl->done = 0;
    sl->err = TM_OK;
    sl->err_j = -1;
    free(sl->err_msg);
    sl->err_msg = NULL;
    l->planned++;
    p.index += size;
    l->plan_pos = p;
    pthread_cond_broadcast(&l->work_cv); /* idle workers can help with it */
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    tm_loader *l = w->l;
    tm_thread_set_serial(1); /* never hold the pool the trainer's kernels need */
    pthread_mutex_lock(&l->lock);
    while (!l->quit) {
        /* an unclaimed example of the oldest batch being filled */
        slot *sl = NULL;
        for (int64_t q = l->released; q < l->planned; q++) {
            slot *c = &l->slots[q % l->P];
            if (c->state == SLOT_FILLING && c->claimed < c->b.size) {
                sl = c;
                break;
            }
        }
        if (!sl) {
            if (l->planned - l->released < l->P) {
                plan_batch(l);
                continue;
            }
            pthread_cond_wait(&l->work_cv, &l->lock);
            continue;
        }
        int64_t j = sl->claimed++;
        int64_t row = sl->b.rows[j], epoch = sl->b.epoch;
        uint64_t gen = l->gen;
        l->busy++;
        pthread_mutex_unlock(&l->lock);

        ex_stats es = {0, 0, 0, 0};
        double t = tm_time_s();
        tm_status s = make_example(w, sl, j, row, epoch, &es);
        t = tm_time_s() - t;

        pthread_mutex_lock(&l->lock);
        l->busy--;
        if (gen == l->gen) {
            l->st.work_s += t;
            l->st.decode_s += es.decode_s;
            l->st.cache_hits += es.hits;
            l->st.cache_misses += es.misses;
            l->st.bad_media += es.bad;
            if (s && (sl->err_j < 0 || j < sl->err_j)) {
                sl->err = s;
                sl->err_j = j;
                free(sl->err_msg);
                sl->err_msg = w->err ? strdup(w->err) : NULL;
            }
            if (++sl->done == sl->b.size) {
                sl->state = SLOT_READY;
                pthread_cond_broadcast(&l->ready_cv);
            }
        }
        if (!l->busy) pthread_cond_broadcast(&l->idle_cv);
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

/* ------------------------------------------------------------ lifetime */

static tm_status alloc_batch(tm_loader *l, tm_batch *b)
{
    int64_t B = l->B;
    b->capacity = B;
    b->labels = calloc((size_t)B, sizeof *b->labels);
    b->present = calloc((size_t)(B * l->M), 1);
    b->rows = calloc((size_t)B, sizeof *b->rows);
    b->ids = calloc((size_t)B, sizeof *b->ids);
    b->region = calloc((size_t)B * 4, sizeof *b->region);
    b->n_words = calloc((size_t)B, sizeof *b->n_words);
    b->word_frames = calloc((size_t)(B * (l->MW ? l->MW : 1) * 2), sizeof *b->word_frames);
    int ok =
        b->labels && b->present && b->rows && b->ids && b->region && b->n_words && b->word_frames;
    if (l->T) {
        b->tokens = calloc((size_t)(B * l->T), sizeof *b->tokens);
        b->n_tokens = calloc((size_t)B, sizeof *b->n_tokens);
        ok = ok && b->tokens && b->n_tokens;
    }
    if (l->CHW) {
        size_t n;
        ok = ok && tm_mul_size((size_t)B, (size_t)l->CHW * sizeof(float), &n) &&
             (b->image = malloc(n)) != NULL;
    }
    if (l->MF) {
        size_t n;
        ok = ok && tm_mul_size((size_t)B, (size_t)l->MF * sizeof(float), &n) &&
             (b->mel = malloc(n)) != NULL;
    }
    return ok ? TM_OK : tm_fail(TM_ERR_NOMEM, "loader: out of memory for batch buffers");
}

static void free_batch(tm_batch *b)
{
    free(b->tokens);
    free(b->n_tokens);
    free(b->image);
    free(b->mel);
    free(b->labels);
    free(b->present);
    free(b->rows);
    free(b->ids);
    free(b->region);
    free(b->n_words);
    free(b->word_frames);
}

tm_status tm_loader_new(tm_loader **out, const tm_manifest *m, const tm_loader_config *cfg)
{
    *out = NULL;
    if (!m || !cfg) return bad("NULL manifest or config");
    tm_status s = check_config(cfg, m);
    if (s) return s;
    tm_loader *l = calloc(1, sizeof *l);
    if (!l) return tm_fail(TM_ERR_NOMEM, "loader: out of memory");
    l->m = m;
    l->cfg = *cfg;
    l->cfg.rows = NULL;
    l->B = cfg->batch_size;
    l->T = cfg->text_tokens;
    l->C = cfg->image_channels, l->H = cfg->image_h, l->W = cfg->image_w;
    l->CHW = l->C * l->H * l->W;
    l->NM = cfg->n_mels, l->NF = cfg->n_frames, l->MF = l->NM * l->NF;
    l->MW = cfg->max_words;
    l->M = cfg->n_modalities;
    l->want = (l->T ? TM_MODALITY_TEXT : 0) | (l->CHW ? TM_MODALITY_IMAGE : 0) |
              (l->MF ? TM_MODALITY_AUDIO : 0);
    l->want &= ~cfg->skip_modalities;
    l->perm_epoch = -1;
    pthread_mutex_init(&l->lock, NULL);
    pthread_mutex_init(&l->cache_lock, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->ready_cv, NULL);
    pthread_cond_init(&l->idle_cv, NULL);

    /* rows */
    if (cfg->n_rows > 0) {
        l->sel = tm_alloc((size_t)cfg->n_rows * sizeof *l->sel);
        if (!l->sel)
            s = tm_fail(TM_ERR_NOMEM, "loader: out of memory");
        else {
            memcpy(l->sel, cfg->rows, (size_t)cfg->n_rows * sizeof *l->sel);
            l->n_sel = cfg->n_rows;
        }
    } else {
        s = tm_manifest_split_rows(m, cfg->split, &l->sel, &l->n_sel);
        if (!s && !l->n_sel)
            s = tm_fail(TM_ERR_INVALID, "loader: %s has no rows%s%s%s", tm_manifest_path(m),
                        cfg->split ? " in split \"" : "", cfg->split ? cfg->split : "",
                        cfg->split ? "\"" : "");
    }
    if (!s) {
        l->esize = l->n_sel / cfg->world;
        if (!l->esize)
            s = tm_fail(TM_ERR_INVALID, "loader: %lld rows cannot give each of %d ranks an example",
                        (long long)l->n_sel, cfg->world);
        else if (cfg->drop_last && l->esize < l->B)
            s = tm_fail(TM_ERR_INVALID,
                        "loader: with drop_last, an epoch of %lld examples per rank has no full "
                        "batch of %lld",
                        (long long)l->esize, (long long)l->B);
    }
    if (!s && cfg->shuffle) {
        l->perm = malloc((size_t)l->n_sel * sizeof *l->perm);
        if (!l->perm) s = tm_fail(TM_ERR_NOMEM, "loader: out of memory");
    }
    /* front-ends */
    if (!s && l->MF) {
        tm_audio_params ap = cfg->preprocess.audio;
        ap.target_frames = (int)l->NF;
        s = tm_logmel_new(&l->logmel, ap);
        l->audio_load = tm_audio_load_default_params();
        l->audio_load.sample_rate = ap.sample_rate;
        l->audio_load.resampler = ap.resampler;
    }
    if (!s && l->CHW) {
        l->img_params = cfg->preprocess.image;
        for (int k = 0; k < 3; k++)
            l->img_params.mean[k] = 0, l->img_params.std[k] = 1;
        int nd;
        int64_t shape[3];
        s = tm_image_preprocess_shape(&nd, shape, cfg->preprocess.image);
    }
    /* cache */
    if (!s && cfg->cache_bytes) {
        int64_t n = tm_manifest_count(m);
        if (l->CHW && !(l->img_cache = calloc((size_t)n, sizeof *l->img_cache)))
            s = tm_fail(TM_ERR_NOMEM, "loader: out of memory");
        if (!s && l->MF && !(l->aud_cache = calloc((size_t)n, sizeof *l->aud_cache)))
            s = tm_fail(TM_ERR_NOMEM, "loader: out of memory");
    }
    /* slots and workers */
    int nw = cfg->workers ? cfg->workers : tm_get_num_threads();
    if (nw < 2 && !cfg->workers) nw = 2;
    if (nw > MAX_WORKERS) nw = MAX_WORKERS;
    l->P = cfg->prefetch ? cfg->prefetch : 2 * nw;
    if (l->P < 1) l->P = 1;
    if (!s) {
        l->slots = calloc((size_t)l->P, sizeof *l->slots);
        if (!l->slots) s = tm_fail(TM_ERR_NOMEM, "loader: out of memory");
        for (int i = 0; !s && i < l->P; i++)
            s = alloc_batch(l, &l->slots[i].b);
    }
    if (!s) {
        l->workers = calloc((size_t)nw, sizeof *l->workers);
        if (!l->workers) s = tm_fail(TM_ERR_NOMEM, "loader: out of memory");
        for (int i = 0; !s && i < nw; i++) {
            l->workers[i].l = l;
            if (l->CHW && !(l->workers[i].scratch = malloc((size_t)l->CHW * sizeof(float))))
                s = tm_fail(TM_ERR_NOMEM, "loader: out of memory");
        }
        l->n_workers = nw;
    }
    l->t0 = tm_time_s();
    for (int i = 0; !s && i < nw; i++) {
        if (pthread_create(&l->workers[i].thread, NULL, worker_main, &l->workers[i]))
            s = tm_fail(TM_ERR_INTERNAL, "loader: cannot start worker thread %d", i);
        else
            l->started++;
    }
    if (s) {
        tm_loader_free(l);
        return s;
    }
    *out = l;
    return TM_OK;
}

void tm_loader_free(tm_loader *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->lock);
    l->quit = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->lock);
    for (int i = 0; i < l->started; i++)
        pthread_join(l->workers[i].thread, NULL);
    if (l->workers)
        for (int i = 0; i < l->n_workers; i++) {
            free(l->workers[i].scratch);
            free(l->workers[i].err);
        }
    free(l->workers);
    if (l->slots)
        for (int i = 0; i < l->P; i++) {
            free_batch(&l->slots[i].b);
            free(l->slots[i].err_msg);
        }
    free(l->slots);
    int64_t n = tm_manifest_count(l->m);
    if (l->img_cache)
        for (int64_t i = 0; i < n; i++)
            free_img(l->img_cache[i]);
    if (l->aud_cache)
        for (int64_t i = 0; i < n; i++)
            free_aud(l->aud_cache[i]);
    free(l->img_cache);
    free(l->aud_cache);
    tm_logmel_free(l->logmel);
    tm_free(l->sel);
    free(l->perm);
    free(l->failed_msg);
    pthread_mutex_destroy(&l->lock);
    pthread_mutex_destroy(&l->cache_lock);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->ready_cv);
    pthread_cond_destroy(&l->idle_cv);
    free(l);
}

/* ------------------------------------------------------------ consumer */

tm_status tm_loader_next(tm_loader *l, const tm_batch **out)
{
    *out = NULL;
    if (!l) return bad("NULL loader");
    pthread_mutex_lock(&l->lock);
    if (l->outstanding) {
        l->outstanding = 0;
        l->released++;
        pthread_cond_broadcast(&l->work_cv);
    }
    if (l->failed) {
        tm_status s = tm_fail(l->failed, "%s", l->failed_msg ? l->failed_msg : "loader failed");
        pthread_mutex_unlock(&l->lock);
        return s;
    }
    tm_loader_pos p = normalize(l, l->pos);
    if (p.epoch != l->pos.epoch) {
        /* the end of an epoch, said once */
        l->pos = p;
        pthread_mutex_unlock(&l->lock);
        return TM_OK;
    }
    slot *sl = &l->slots[l->consumed % l->P];
    double t = tm_time_s();
    while (!(sl->seq == l->consumed && sl->state == SLOT_READY)) {
        pthread_cond_broadcast(&l->work_cv);
        pthread_cond_wait(&l->ready_cv, &l->lock);
    }
    l->st.wait_s += tm_time_s() - t;
    if (sl->err) {
        l->failed = sl->err;
        free(l->failed_msg);
        l->failed_msg = sl->err_msg ? strdup(sl->err_msg) : NULL;
        tm_status s = tm_fail(l->failed, "%s", l->failed_msg ? l->failed_msg : "loader failed");
        pthread_mutex_unlock(&l->lock);
        return s;
    }
    l->consumed++;
    l->outstanding = 1;
    l->pos.epoch = sl->b.epoch;
    l->pos.index = sl->b.index + sl->b.size;
    l->st.batches++;
    l->st.examples += sl->b.size;
    *out = &sl->b;
    pthread_mutex_unlock(&l->lock);
    return TM_OK;
}

tm_loader_pos tm_loader_position(const tm_loader *l)
{
    tm_loader_pos p = {0, 0};
    if (!l) return p;
    pthread_mutex_lock((pthread_mutex_t *)&l->lock);
    p = l->pos;
    pthread_mutex_unlock((pthread_mutex_t *)&l->lock);
    return p;
}

tm_status tm_loader_seek(tm_loader *l, tm_loader_pos pos)
{
    if (!l) return bad("NULL loader");
    if (pos.epoch < 0 || pos.index < 0 || pos.index > l->esize)
        return tm_fail(TM_ERR_INVALID,
                       "loader: position (epoch %lld, index %lld) is outside 0..%lld examples of "
                       "an epoch",
                       (long long)pos.epoch, (long long)pos.index, (long long)l->esize);
    pthread_mutex_lock(&l->lock);
    l->gen++;
    while (l->busy)
        pthread_cond_wait(&l->idle_cv, &l->lock);
    for (int i = 0; i < l->P; i++) {
        l->slots[i].state = SLOT_FREE;
        l->slots[i].seq = -1;
    }
    l->planned = l->released = l->consumed = 0;
    l->outstanding = 0;
    l->pos = l->plan_pos = pos;
    l->failed = TM_OK;
    free(l->failed_msg);
    l->failed_msg = NULL;
    tm_loader_stats z;
    memset(&z, 0, sizeof z);
    l->st = z;
    l->t0 = tm_time_s();
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->lock);
    return TM_OK;
}

int64_t tm_loader_epoch_size(const tm_loader *l)
{
    return l ? l->esize : 0;
}

int64_t tm_loader_epoch_batches(const tm_loader *l)
{
    if (!l) return 0;
    return l->cfg.drop_last ? l->esize / l->B : (l->esize + l->B - 1) / l->B;
}

tm_loader_stats tm_loader_get_stats(const tm_loader *l)
{
    tm_loader_stats s;
    memset(&s, 0, sizeof s);
    if (!l) return s;
    pthread_mutex_lock((pthread_mutex_t *)&l->lock);
    s = l->st;
    s.elapsed_s = tm_time_s() - l->t0;
    s.examples_per_s = s.elapsed_s > 0 ? s.examples / s.elapsed_s : 0;
    pthread_mutex_unlock((pthread_mutex_t *)&l->lock);
    pthread_mutex_lock((pthread_mutex_t *)&l->cache_lock);
    s.cache_entries = l->cache_entries;
    s.cache_bytes = l->cache_used;
    pthread_mutex_unlock((pthread_mutex_t *)&l->cache_lock);
    return s;
}
