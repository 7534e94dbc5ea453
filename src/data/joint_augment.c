/* Augmentations that act on several modalities of one example together:
 * modality dropout, and aligned masking of words in text, audio and image.
 * Every draw is a pure function of (seed, index, ...) through the
 * counter-based RNG, so a data loader with any number of workers makes the
 * same choices. */
#include <math.h>
#include <string.h>

#include "trimodal/data.h"

/* RNG streams of this file, kept apart from the front-ends' own. */
#define STREAM_MODALITY_DROPOUT 0x6d6f64616c697479ull
#define STREAM_ALIGNED_MASK 0x616c69676e6d736bull

unsigned tm_modality_dropout(unsigned present, const float p[3], uint64_t seed, uint64_t index)
{
    unsigned kept = 0, any = 0;
    int best = -1;
    float best_u = -1.0f;
    for (int m = 0; m < 3; m++) {
        unsigned bit = 1u << m;
        if (!(present & bit)) continue;
        any |= bit;
        float u = tm_rng_uniform_at(seed, STREAM_MODALITY_DROPOUT, index * 3 + (uint64_t)m);
        if (u >= p[m]) kept |= bit;
        /* the fallback when every present modality is dropped: the one
         * whose draw came closest to being kept */
        if (u > best_u) {
            best_u = u;
            best = m;
        }
    }
    if (!kept && any) kept = 1u << best;
    return kept;
}

tm_aligned_mask_params tm_aligned_mask_default_params(void)
{
    tm_aligned_mask_params p = {0.15f, "<mask>", 1, 1, 0};
    return p;
}

static tm_status check_words(const tm_word_alignment *w, int n, size_t len)
{
    int64_t prev_end = 0;
    for (int i = 0; i < n; i++) {
        if (w[i].text_begin < prev_end || w[i].text_end <= w[i].text_begin ||
            (uint64_t)w[i].text_end > len)
            return tm_fail(TM_ERR_INVALID,
                           "aligned_mask: word %d spans bytes [%lld, %lld), which is not inside "
                           "the %zu-byte text after the previous word",
                           i, (long long)w[i].text_begin, (long long)w[i].text_end, len);
        if (w[i].audio_begin >= 0 && !(w[i].audio_end >= w[i].audio_begin))
            return tm_fail(TM_ERR_INVALID, "aligned_mask: word %d ends before it starts in the audio",
                           i);
        if (w[i].box.width < 0 || w[i].box.height < 0)
            return tm_fail(TM_ERR_INVALID, "aligned_mask: word %d has a negative image box", i);
        prev_end = w[i].text_end;
    }
    return TM_OK;
}

static void silence(tm_audio *a, double begin, double end)
{
    if (begin < 0) return;
    double sr = a->sample_rate;
    int64_t b = (int64_t)floor(begin * sr), e = (int64_t)ceil(end * sr);
    if (b < 0) b = 0;
    if (e > a->n_samples) e = a->n_samples;
    if (e > b) memset(a->samples + b, 0, (size_t)(e - b) * sizeof(float));
}

static void erase(tm_image *img, tm_image_box box, uint8_t fill)
{
    int top = box.top < 0 ? 0 : box.top, left = box.left < 0 ? 0 : box.left;
    int bottom = box.top + box.height, right = box.left + box.width;
    if (bottom > img->height) bottom = img->height;
    if (right > img->width) right = img->width;
    for (int y = top; y < bottom; y++)
        if (right > left)
            memset(img->data + ((size_t)y * img->width + left) * img->channels, fill,
                   (size_t)(right - left) * img->channels);
}

tm_status tm_aligned_mask(char **text_out, size_t *len_out, uint8_t *masked, const char *text,
                          size_t len, const tm_word_alignment *words, int n_words,
                          tm_audio *audio, tm_image *image, tm_aligned_mask_params params,
                          uint64_t seed, uint64_t index)
{
    *text_out = NULL;
    *len_out = 0;
    if (!text && len) return tm_fail(TM_ERR_INVALID, "aligned_mask: NULL text");
    if (n_words < 0 || (n_words && !words))
        return tm_fail(TM_ERR_INVALID, "aligned_mask: bad word list");
    if (!(params.word_prob >= 0.0f && params.word_prob <= 1.0f))
        return tm_fail(TM_ERR_INVALID, "aligned_mask: word_prob must be in [0, 1]");
    const char *mask = params.mask_text ? params.mask_text : "";
    size_t mlen = strlen(mask);
    tm_status s = check_words(words, n_words, len);
    if (s) return s;

    /* the new text is at most len + n_words * mask length */
    size_t cap, extra;
    if (!tm_mul_size((size_t)n_words, mlen, &extra) || !tm_add_size(len, extra, &cap) ||
        !tm_add_size(cap, 1, &cap))
        return tm_fail(TM_ERR_LIMIT, "aligned_mask: the masked text would be too large");
    char *out = tm_alloc(cap);
    if (!out) return TM_ERR_NOMEM;
    size_t at = 0, from = 0;
    for (int i = 0; i < n_words; i++) {
        float u = tm_rng_uniform_at(seed, STREAM_ALIGNED_MASK, index * 4096 + (uint64_t)i);
        int m = u < params.word_prob;
        if (masked) masked[i] = (uint8_t)m;
        if (!m) continue;
        size_t b = (size_t)words[i].text_begin, e = (size_t)words[i].text_end;
        memcpy(out + at, text + from, b - from);
        at += b - from;
        memcpy(out + at, mask, mlen);
        at += mlen;
        from = e;
        if (audio && params.silence_audio) silence(audio, words[i].audio_begin, words[i].audio_end);
        if (image && params.erase_image && words[i].box.width > 0 && words[i].box.height > 0)
            erase(image, words[i].box, params.image_fill);
    }
    if (len > from) memcpy(out + at, text + from, len - from);
    at += len - from;
    out[at] = '\0';
    *text_out = out;
    *len_out = at;
    return TM_OK;
}
