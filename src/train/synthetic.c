/*
 * The built-in synthetic data source: random but learnable tri-modal
 * examples, a pure function of (dataset seed, split, example), for tests
 * and demos that must not depend on files.
 *
 * Each example has a latent z in [0, Z), Z = 8 * classes; its label is
 * z % classes, and every modality carries z: the image and the log-mel
 * are z's prototype (N(0, 1) per element, a function of z) plus N(0,
 * noise) noise, and most tokens come from z's band of the vocabulary. So
 * the classifier can learn the label from any modality and the contrastive
 * heads can learn to match modalities of one latent. For a caption head the
 * target caption is a function of z; for a masked-token head 15% of the
 * real tokens (new ones each epoch) become the mask id, with their labels.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/train.h"

#define SYNTH_MAX_EXAMPLES ((int64_t)1 << 26) /* the shuffle keeps a permutation */
#define VAL_OFFSET ((uint64_t)1 << 40)        /* validation example ids */

enum {
    S_LATENT = 1,
    S_LEN,
    S_TOK,
    S_IMG,
    S_MEL,
    S_MISS,
    S_MISS_KEEP,
    S_MLM = 1 << 19,       /* + epoch: masked positions change every epoch */
    S_PROTO_IMG = 1 << 20, /* + z */
    S_PROTO_MEL = 1 << 21, /* + z */
};

typedef struct {
    tm_model_info info;
    int64_t n;            /* examples in the split */
    uint64_t data_seed;   /* the dataset */
    uint64_t offset;      /* example ids of this split start here */
    uint64_t shuffle_seed;
    int shuffle;          /* training split */
    double noise, missing;
    int64_t nan_after;    /* 0 = off */
    int64_t classes, latents;
    int64_t *perm;        /* (n) the order of perm_epoch, or NULL */
    int64_t perm_epoch;
} synth;

static int64_t synth_size(void *ctx) { return ((synth *)ctx)->n; }

static void synth_close(void *ctx)
{
    synth *s = ctx;
    if (!s) return;
    tm_free(s->perm);
    tm_free(s);
}

/* Fisher-Yates from (shuffle seed, epoch); uniform enough for n << 2^32. */
static void make_perm(synth *s, int64_t epoch)
{
    for (int64_t i = 0; i < s->n; i++) s->perm[i] = i;
    tm_rng r = tm_rng_new(s->shuffle_seed, (uint64_t)epoch);
    for (int64_t i = s->n - 1; i > 0; i--) {
        uint64_t x = ((uint64_t)tm_rng_u32(&r) << 32) | tm_rng_u32(&r);
        int64_t j = (int64_t)(x % (uint64_t)(i + 1));
        int64_t t = s->perm[i];
        s->perm[i] = s->perm[j];
        s->perm[j] = t;
    }
    s->perm_epoch = epoch;
}

/* A caption of latent z: [bos, tokens..., eos, pad...], its tokens a
 * function of z alone (so it can be learnt from any modality). */
static void fill_caption(const tm_model_info *mi, int64_t z, int32_t *cap)
{
    int64_t T = mi->caption_tokens, V = mi->caption_vocab;
    int64_t len = 1 + z % (T - 2 > 1 ? T - 2 : 1); /* 1 .. T-2 words */
    int64_t k = 0;
    cap[k++] = mi->caption_bos;
    for (int64_t i = 0; i < len && k < T - 1; i++) {
        int32_t id = (int32_t)((z * 31 + i * 17 + 3) % V);
        for (int tries = 0; tries < 4 && (id == mi->caption_bos || id == mi->caption_eos ||
                                          id == mi->caption_pad);
             tries++)
            id = (int32_t)((id + 1) % V);
        cap[k++] = id;
    }
    cap[k++] = mi->caption_eos;
    while (k < T) cap[k++] = mi->caption_pad;
}

static void fill_example(const synth *s, uint64_t e, int64_t epoch, int64_t row,
                         const tm_model_inputs *in)
{
    const tm_model_info *mi = &s->info;
    uint32_t w[4];
    tm_philox(s->data_seed, S_LATENT, e, w);
    int64_t z = (int64_t)(w[0] % (uint32_t)s->latents);
    if (in->labels) in->labels[row] = (int32_t)(z % s->classes);
    if (in->tokens) {
        int64_t T = mi->text_tokens, V = mi->vocab_size;
        tm_philox(s->data_seed, S_LEN, e, w);
        int64_t len = T / 2 + (int64_t)(w[0] % (uint32_t)(T - T / 2 + 1));
        if (len < 1) len = 1;
        if (len > T) len = T;
        int64_t usable = V - 1; /* ids 1 .. V-1 */
        int64_t band = usable / s->latents;
        for (int64_t t = 0; t < T; t++) {
            int32_t id = mi->pad_id;
            if (t < len && usable > 0) {
                tm_philox(s->data_seed, S_TOK, e * (uint64_t)T + (uint64_t)t, w);
                int64_t v;
                if (band >= 1 && w[0] % 4 != 0) /* 3 in 4 from z's band */
                    v = 1 + z * band + (int64_t)(w[1] % (uint32_t)band);
                else if (band < 1 && w[0] % 4 != 0)
                    v = 1 + z % usable;
                else
                    v = 1 + (int64_t)(w[1] % (uint32_t)usable);
                id = (int32_t)v;
                if (id == mi->pad_id) id = id + 1 < V ? id + 1 : 1;
            }
            in->tokens[row * T + t] = id;
        }
        /* masked-token targets: 15% of the real tokens, new each epoch */
        if (in->mlm_labels && mi->mask_id >= 0)
            for (int64_t t = 0; t < T; t++) {
                int32_t *tok = &in->tokens[row * T + t];
                in->mlm_labels[row * T + t] = -100;
                if (t >= len) continue;
                tm_philox(s->data_seed, S_MLM + (uint64_t)epoch, e * (uint64_t)T + (uint64_t)t, w);
                if (w[0] % 100 < 15) {
                    in->mlm_labels[row * T + t] = *tok;
                    *tok = mi->mask_id;
                }
            }
    }
    if (in->caption && mi->caption_tokens > 2 && mi->caption_vocab > 3)
        fill_caption(mi, z, in->caption + row * mi->caption_tokens);
    if (in->image) {
        int64_t n = mi->image_channels * mi->image_h * mi->image_w;
        float *x = in->image + row * n;
        for (int64_t i = 0; i < n; i++)
            x[i] = tm_rng_normal_at(s->data_seed, S_PROTO_IMG + (uint64_t)z, (uint64_t)i) +
                   (float)s->noise * tm_rng_normal_at(s->data_seed, S_IMG, e * (uint64_t)n + (uint64_t)i);
    }
    if (in->mel) {
        int64_t n = mi->n_mels * mi->n_frames;
        float *x = in->mel + row * n;
        for (int64_t i = 0; i < n; i++)
            x[i] = tm_rng_normal_at(s->data_seed, S_PROTO_MEL + (uint64_t)z, (uint64_t)i) +
                   (float)s->noise * tm_rng_normal_at(s->data_seed, S_MEL, e * (uint64_t)n + (uint64_t)i);
    }
    if (in->present) {
        int M = mi->n_modalities, kept = 0;
        uint8_t *p = in->present + row * M;
        for (int m = 0; m < M; m++) {
            p[m] = !(s->missing > 0 &&
                     tm_rng_uniform_at(s->data_seed, S_MISS, e * (uint64_t)M + (uint64_t)m) <
                         (float)s->missing);
            kept += p[m];
        }
        if (!kept && M) { /* never all missing: keep one at random */
            tm_philox(s->data_seed, S_MISS_KEEP, e, w);
            p[w[0] % (uint32_t)M] = 1;
        }
    }
}

static tm_status synth_fill(void *ctx, int64_t epoch, int64_t index, int64_t count,
                            const tm_model_inputs *in, int64_t batch)
{
    synth *s = ctx;
    if (epoch < 0 || index < 0 || count < 0 || count > batch || index > s->n - count)
        return tm_fail(TM_ERR_INVALID,
                       "synthetic data: examples [%lld, %lld) of epoch %lld outside 0..%lld or "
                       "more than the batch %lld",
                       (long long)index, (long long)(index + count), (long long)epoch,
                       (long long)s->n, (long long)batch);
    if (s->shuffle && (!s->perm || s->perm_epoch != epoch)) {
        if (!s->perm) {
            s->perm = tm_alloc((size_t)s->n * sizeof *s->perm);
            if (!s->perm) return tm_fail(TM_ERR_NOMEM, "synthetic data: out of memory");
        }
        make_perm(s, epoch);
    }
    for (int64_t r = 0; r < count; r++) {
        int64_t k = s->shuffle ? s->perm[index + r] : index + r;
        fill_example(s, s->offset + (uint64_t)k, epoch, r, in);
        if (s->nan_after > 0 && epoch * s->n + index + r >= s->nan_after) {
            const tm_model_info *mi = &s->info;
            if (in->image) in->image[r * mi->image_channels * mi->image_h * mi->image_w] = NAN;
            else if (in->mel) in->mel[r * mi->n_mels * mi->n_frames] = NAN;
        }
    }
    return TM_OK;
}

tm_status tm_train_synthetic_open(const tm_train_data *data, const char *split, uint64_t seed,
                                  const tm_model *m, tm_train_source *out)
{
    if (!data || !m || !out || !split)
        return tm_fail(TM_ERR_INVALID, "synthetic data: NULL argument");
    memset(out, 0, sizeof *out);
    if (!data->synthetic)
        return tm_fail(TM_ERR_UNSUPPORTED, "synthetic data: the data has no \"synthetic\" object");
    int val = data->val_split && !strcmp(split, data->val_split) &&
              !(data->train_split && !strcmp(split, data->train_split));
    int64_t n = val ? data->synth_val : data->synth_examples;
    if (n < 1)
        return tm_fail(TM_ERR_INVALID, "synthetic data: split '%s' has no examples (set "
                       "\"synthetic.%s\")", split, val ? "val_examples" : "examples");
    if (n > SYNTH_MAX_EXAMPLES)
        return tm_fail(TM_ERR_LIMIT, "synthetic data: %lld examples; at most %lld", (long long)n,
                       (long long)SYNTH_MAX_EXAMPLES);
    synth *s = tm_calloc(1, sizeof *s);
    if (!s) return tm_fail(TM_ERR_NOMEM, "synthetic data: out of memory");
    s->info = tm_model_get_info(m);
    s->n = n;
    s->data_seed = data->synth_seed;
    s->offset = val ? VAL_OFFSET : 0;
    s->shuffle_seed = seed;
    s->shuffle = !val;
    s->noise = data->synth_noise;
    s->missing = data->synth_missing;
    s->nan_after = val ? 0 : data->synth_nan_after;
    s->classes = s->info.num_classes > 0 ? s->info.num_classes : 4;
    s->latents = 8 * s->classes;
    s->perm_epoch = -1;
    out->ctx = s;
    out->size = synth_size;
    out->fill = synth_fill;
    out->close = synth_close;
    return TM_OK;
}
