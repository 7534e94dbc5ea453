/* Resampling with libsamplerate. */
#include <math.h>
#include <samplerate.h>
#include <string.h>

#include "audio/audio_internal.h"

static int src_type(tm_resampler r)
{
    switch (r) {
    case TM_RESAMPLE_SINC_BEST: return SRC_SINC_BEST_QUALITY;
    case TM_RESAMPLE_SINC_MEDIUM: return SRC_SINC_MEDIUM_QUALITY;
    case TM_RESAMPLE_SINC_FASTEST: return SRC_SINC_FASTEST;
    case TM_RESAMPLE_ZERO_ORDER_HOLD: return SRC_ZERO_ORDER_HOLD;
    case TM_RESAMPLE_LINEAR: return SRC_LINEAR;
    default: return -1;
    }
}

/* libsamplerate's sinc converters compensate their own delay, so output
 * sample i lands at time i / rate_out; the tail is flushed by
 * end_of_input. The input goes through in blocks so that `long` counts
 * never overflow and the converter's state stays small. */
tm_status tm_audio_resample_buf(float **out, int64_t n_out, const float *x, int64_t n,
                                double ratio, tm_resampler converter)
{
    *out = NULL;
    int type = src_type(converter);
    if (type < 0) return tm_fail(TM_ERR_INVALID, "resample: unknown converter %d", (int)converter);
    if (!(ratio >= 1.0 / 256 && ratio <= 256))
        return tm_fail(TM_ERR_UNSUPPORTED, "resample: ratio %g outside libsamplerate's [1/256, 256]",
                       ratio);
    size_t bytes;
    if (n_out < 0 || !tm_mul_size((size_t)n_out + 1, sizeof(float), &bytes))
        return tm_fail(TM_ERR_NOMEM, "resample: %lld output samples overflow", (long long)n_out);
    float *y = tm_alloc(bytes);
    if (!y) return tm_fail(TM_ERR_NOMEM, "resample: out of memory for %lld samples",
                           (long long)n_out);
    int err = 0;
    SRC_STATE *state = src_new(type, 1, &err);
    if (!state) {
        tm_free(y);
        return tm_fail(TM_ERR_NOMEM, "resample: libsamplerate: %s", src_strerror(err));
    }
    /* Scratch for output beyond n_out (the converter may make a few more). */
    float spill[4096];
    int64_t in_pos = 0, made = 0;
    int idle = 0;
    const int64_t block = 1 << 16;
    for (;;) {
        int64_t in_len = n - in_pos < block ? n - in_pos : block;
        SRC_DATA d;
        memset(&d, 0, sizeof d);
        d.data_in = x ? x + in_pos : NULL;
        d.input_frames = (long)in_len;
        d.end_of_input = in_pos + in_len >= n;
        d.src_ratio = ratio;
        if (made < n_out) {
            d.data_out = y + made;
            int64_t room = n_out - made;
            d.output_frames = (long)(room < ((int64_t)1 << 30) ? room : ((int64_t)1 << 30));
        } else {
            d.data_out = spill;
            d.output_frames = (long)(sizeof spill / sizeof spill[0]);
        }
        err = src_process(state, &d);
        if (err) {
            src_delete(state);
            tm_free(y);
            return tm_fail(TM_ERR_INTERNAL, "resample: libsamplerate: %s", src_strerror(err));
        }
        in_pos += d.input_frames_used;
        if (d.data_out != spill) made += d.output_frames_gen;
        if (d.end_of_input && d.input_frames_used == d.input_frames && d.output_frames_gen == 0)
            break;
        /* A converter that neither reads nor writes is stuck: stop. */
        idle = d.input_frames_used == 0 && d.output_frames_gen == 0 ? idle + 1 : 0;
        if (idle > 4) break;
    }
    src_delete(state);
    if (made < n_out) memset(y + made, 0, sizeof(float) * (size_t)(n_out - made));
    *out = y;
    return TM_OK;
}

tm_status tm_audio_resample(tm_audio **out, const tm_audio *in, int sample_rate,
                            tm_resampler converter)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_audio_resample: out is NULL");
    *out = NULL;
    if (!in || (in->n_samples > 0 && !in->samples) || in->n_samples < 0)
        return tm_fail(TM_ERR_INVALID, "tm_audio_resample: no input audio");
    if ((unsigned)converter >= TM_RESAMPLE_COUNT)
        return tm_fail(TM_ERR_INVALID, "tm_audio_resample: unknown converter %d", (int)converter);
    if (in->sample_rate < TM_AUDIO_MIN_RATE || in->sample_rate > TM_AUDIO_MAX_RATE ||
        sample_rate < TM_AUDIO_MIN_RATE || sample_rate > TM_AUDIO_MAX_RATE)
        return tm_fail(TM_ERR_UNSUPPORTED, "tm_audio_resample: %d Hz -> %d Hz: rates must be in "
                                           "[%d, %d]",
                       in->sample_rate, sample_rate, TM_AUDIO_MIN_RATE, TM_AUDIO_MAX_RATE);
    int64_t n = in->n_samples;
    if (n > ((int64_t)1 << 40))
        return tm_fail(TM_ERR_LIMIT, "tm_audio_resample: %lld samples, more than 2^40",
                       (long long)n);
    if (sample_rate == in->sample_rate) {
        tm_status st = tm_audio_from_samples(out, in->samples, n, sample_rate);
        if (st == TM_OK) {
            (*out)->source_rate = in->source_rate;
            (*out)->source_channels = in->source_channels;
            (*out)->source_frames = in->source_frames;
            (*out)->source_format = in->source_format;
        }
        return st;
    }
    /* ceil(n * to / from): n < 2^40 and to < 2^20, so no overflow. */
    int64_t n_out = (n * sample_rate + in->sample_rate - 1) / in->sample_rate;
    double ratio = (double)sample_rate / in->sample_rate;
    if (!(ratio >= 1.0 / 256 && ratio <= 256))
        return tm_fail(TM_ERR_UNSUPPORTED,
                       "tm_audio_resample: %d Hz -> %d Hz is a ratio outside libsamplerate's "
                       "[1/256, 256]",
                       in->sample_rate, sample_rate);
    float *y = NULL;
    tm_status st = tm_audio_resample_buf(&y, n_out, in->samples, n, ratio, converter);
    if (st != TM_OK) return st;
    tm_audio *a = tm_calloc(1, sizeof *a);
    if (!a) {
        tm_free(y);
        return tm_fail(TM_ERR_NOMEM, "tm_audio_resample: out of memory");
    }
    a->samples = y;
    a->n_samples = n_out;
    a->sample_rate = sample_rate;
    a->source_rate = in->source_rate;
    a->source_channels = in->source_channels;
    a->source_frames = in->source_frames;
    a->source_format = in->source_format;
    *out = a;
    return TM_OK;
}
