/* Time stretch and pitch shift: a phase vocoder between an STFT and an
 * inverse STFT, with libsamplerate for the pitch shift's change of rate.
 *
 * The method is torchaudio's (functional.phase_vocoder, functional.
 * pitch_shift; librosa's time_stretch and pitch_shift are the same): output
 * frame i sits at the fractional input position i * rate; its magnitude
 * interpolates linearly between the two input frames around it, and its
 * phase advances by each bin's measured instantaneous frequency (the phase
 * difference of those two frames, unwrapped around the bin's expected
 * advance), so sinusoids keep their frequency while the frames are
 * resampled in time. The phase is accumulated in double: over thousands of
 * frames a float sum drifts. */
#include <math.h>
#include <string.h>

#include "audio/audio_internal.h"

#define VOC_N_FFT 512
#define VOC_HOP 128

tm_status tm_audio_stft_complex(float **spec_out, int64_t *frames_out, const float *x, int64_t n,
                                int n_fft, int hop)
{
    *spec_out = NULL;
    *frames_out = 0;
    if (n < 1) return tm_fail(TM_ERR_INVALID, "stft: no samples");
    int nf = n_fft / 2 + 1, pad = n_fft / 2;
    int64_t frames = 1 + n / hop;
    size_t count, bytes;
    if (!tm_mul_size((size_t)frames, (size_t)nf * 2, &count) ||
        !tm_mul_size(count, sizeof(float), &bytes))
        return tm_fail(TM_ERR_NOMEM, "stft: size overflow");
    float *spec = tm_alloc(bytes);
    float *w = tm_alloc(sizeof(float) * (size_t)n_fft);
    float *buf = fftwf_malloc(sizeof(float) * (size_t)n_fft);
    fftwf_complex *c = fftwf_malloc(sizeof(fftwf_complex) * (size_t)nf);
    fftwf_plan plan = tm_audio_plan_r2c(n_fft);
    tm_status st = TM_OK;
    if (!spec || !w || !buf || !c) {
        st = tm_fail(TM_ERR_NOMEM, "stft: out of memory");
    } else if (!plan) {
        st = tm_fail(TM_ERR_INTERNAL, "stft: FFTW cannot plan %d", n_fft);
    } else {
        tm_audio_window(w, n_fft, n_fft, TM_WINDOW_HANN);
        for (int64_t t = 0; t < frames; t++) {
            int64_t base = t * hop - pad;
            for (int j = 0; j < n_fft; j++) {
                int64_t i = base + j;
                float v = x[i >= 0 && i < n ? i : tm_audio_reflect(i, n)];
                buf[j] = v * w[j];
            }
            fftwf_execute_dft_r2c(plan, buf, c);
            memcpy(spec + (size_t)t * nf * 2, c, sizeof(float) * 2 * (size_t)nf);
        }
    }
    tm_audio_plan_free(plan);
    tm_free(w);
    fftwf_free(buf);
    fftwf_free(c);
    if (st != TM_OK) {
        tm_free(spec);
        return st;
    }
    *spec_out = spec;
    *frames_out = frames;
    return TM_OK;
}

tm_status tm_audio_istft(float *y, int64_t length, const float *spec, int64_t frames, int n_fft,
                         int hop)
{
    int nf = n_fft / 2 + 1, pad = n_fft / 2;
    int64_t total = n_fft + (int64_t)hop * (frames - 1);
    size_t bytes;
    if (frames < 1 || !tm_mul_size((size_t)total, sizeof(double), &bytes))
        return tm_fail(TM_ERR_INVALID, "istft: bad size");
    double *ola = tm_calloc((size_t)total, sizeof(double));
    double *env = tm_calloc((size_t)total, sizeof(double));
    float *w = tm_alloc(sizeof(float) * (size_t)n_fft);
    float *buf = fftwf_malloc(sizeof(float) * (size_t)n_fft);
    fftwf_complex *c = fftwf_malloc(sizeof(fftwf_complex) * (size_t)nf);
    fftwf_plan plan = tm_audio_plan_c2r(n_fft);
    tm_status st = TM_OK;
    if (!ola || !env || !w || !buf || !c) {
        st = tm_fail(TM_ERR_NOMEM, "istft: out of memory");
    } else if (!plan) {
        st = tm_fail(TM_ERR_INTERNAL, "istft: FFTW cannot plan %d", n_fft);
    } else {
        tm_audio_window(w, n_fft, n_fft, TM_WINDOW_HANN);
        for (int64_t t = 0; t < frames; t++) {
            memcpy(c, spec + (size_t)t * nf * 2, sizeof(float) * 2 * (size_t)nf);
            /* A real signal's DC and Nyquist bins are real; c2r ignores
             * their imaginary parts, as torch.istft's irfft does. */
            fftwf_execute_dft_c2r(plan, c, buf);
            int64_t base = t * hop;
            for (int j = 0; j < n_fft; j++) {
                ola[base + j] += (double)buf[j] / n_fft * w[j];
                env[base + j] += (double)w[j] * w[j];
            }
        }
        for (int64_t i = 0; i < length; i++) {
            int64_t k = i + pad;
            y[i] = k < total && env[k] > 1e-11 ? (float)(ola[k] / env[k]) : 0.0f;
        }
    }
    tm_audio_plan_free(plan);
    tm_free(ola);
    tm_free(env);
    tm_free(w);
    fftwf_free(buf);
    fftwf_free(c);
    return st;
}

/* The stretched STFT: ceil(frames / rate) frames. */
static tm_status phase_vocoder(float **out, int64_t *out_frames, const float *spec,
                               int64_t frames, int nf, int hop, int n_fft, double rate)
{
    int64_t n_out = (int64_t)ceil((double)frames / rate);
    while (n_out > 0 && (double)(n_out - 1) * rate >= (double)frames) n_out--;
    while ((double)n_out * rate < (double)frames) n_out++;
    size_t count, bytes;
    if (!tm_mul_size((size_t)n_out, (size_t)nf * 2, &count) ||
        !tm_mul_size(count, sizeof(float), &bytes))
        return tm_fail(TM_ERR_NOMEM, "phase vocoder: size overflow");
    float *o = tm_alloc(bytes);
    double *acc = tm_alloc(sizeof(double) * (size_t)nf);
    if (!o || !acc) {
        tm_free(o);
        tm_free(acc);
        return tm_fail(TM_ERR_NOMEM, "phase vocoder: out of memory");
    }
    for (int k = 0; k < nf; k++)
        acc[k] = atan2((double)spec[2 * k + 1], (double)spec[2 * k]);
    for (int64_t i = 0; i < n_out; i++) {
        double ts = (double)i * rate;
        int64_t i0 = (int64_t)floor(ts);
        double a = ts - (double)i0;
        const float *s0 = i0 < frames ? spec + (size_t)i0 * nf * 2 : NULL;
        const float *s1 = i0 + 1 < frames ? spec + (size_t)(i0 + 1) * nf * 2 : NULL;
        float *d = o + (size_t)i * nf * 2;
        for (int k = 0; k < nf; k++) {
            double re0 = s0 ? s0[2 * k] : 0, im0 = s0 ? s0[2 * k + 1] : 0;
            double re1 = s1 ? s1[2 * k] : 0, im1 = s1 ? s1[2 * k + 1] : 0;
            double mag = a * hypot(re1, im1) + (1 - a) * hypot(re0, im0);
            d[2 * k] = (float)(mag * cos(acc[k]));
            d[2 * k + 1] = (float)(mag * sin(acc[k]));
            /* Advance for the next output frame. */
            double adv = 2.0 * M_PI * hop * k / n_fft;
            double dphi = atan2(im1, re1) - atan2(im0, re0) - adv;
            dphi -= 2.0 * M_PI * nearbyint(dphi / (2.0 * M_PI));
            acc[k] += dphi + adv;
        }
    }
    tm_free(acc);
    *out = o;
    *out_frames = n_out;
    return TM_OK;
}

/* x (n samples) stretched by rate into a new buffer of `length` samples. */
static tm_status stretch(float **out, const float *x, int64_t n, double rate, int64_t length)
{
    *out = NULL;
    float *spec = NULL, *vspec = NULL;
    int64_t frames = 0, vframes = 0;
    tm_status st = tm_audio_stft_complex(&spec, &frames, x, n, VOC_N_FFT, VOC_HOP);
    if (st != TM_OK) return st;
    st = phase_vocoder(&vspec, &vframes, spec, frames, VOC_N_FFT / 2 + 1, VOC_HOP, VOC_N_FFT,
                       rate);
    tm_free(spec);
    if (st != TM_OK) return st;
    float *y = tm_alloc(sizeof(float) * (size_t)(length > 0 ? length : 1));
    if (!y) {
        tm_free(vspec);
        return tm_fail(TM_ERR_NOMEM, "time stretch: out of memory");
    }
    st = tm_audio_istft(y, length, vspec, vframes, VOC_N_FFT, VOC_HOP);
    tm_free(vspec);
    if (st != TM_OK) {
        tm_free(y);
        return st;
    }
    *out = y;
    return TM_OK;
}

static tm_status check_in(const tm_audio *in, const char *what)
{
    if (!in || in->n_samples < 1 || !in->samples)
        return tm_fail(TM_ERR_INVALID, "%s: no input audio", what);
    if (in->n_samples > ((int64_t)1 << 32))
        return tm_fail(TM_ERR_LIMIT, "%s: %lld samples, more than 2^32", what,
                       (long long)in->n_samples);
    return TM_OK;
}

static tm_status wrap(tm_audio **out, const tm_audio *in, float *y, int64_t n)
{
    tm_audio *a = tm_calloc(1, sizeof *a);
    if (!a) {
        tm_free(y);
        return tm_fail(TM_ERR_NOMEM, "audio: out of memory");
    }
    a->samples = y;
    a->n_samples = n;
    a->sample_rate = in->sample_rate;
    a->source_rate = in->source_rate;
    a->source_channels = in->source_channels;
    a->source_frames = in->source_frames;
    a->source_format = in->source_format;
    *out = a;
    return TM_OK;
}

tm_status tm_audio_time_stretch(tm_audio **out, const tm_audio *in, float rate)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_audio_time_stretch: out is NULL");
    *out = NULL;
    tm_status st = check_in(in, "tm_audio_time_stretch");
    if (st != TM_OK) return st;
    if (!(rate >= 0.25f && rate <= 4.0f))
        return tm_fail(TM_ERR_INVALID, "tm_audio_time_stretch: rate %g outside [0.25, 4]",
                       (double)rate);
    int64_t len = (int64_t)llround((double)in->n_samples / rate);
    if (len < 1) len = 1;
    float *y = NULL;
    if (rate == 1.0f) {
        y = tm_alloc(sizeof(float) * (size_t)in->n_samples);
        if (!y) return tm_fail(TM_ERR_NOMEM, "tm_audio_time_stretch: out of memory");
        memcpy(y, in->samples, sizeof(float) * (size_t)in->n_samples);
    } else {
        st = stretch(&y, in->samples, in->n_samples, rate, len);
        if (st != TM_OK) return st;
    }
    return wrap(out, in, y, len);
}

tm_status tm_audio_pitch_shift(tm_audio **out, const tm_audio *in, float semitones,
                               tm_resampler converter)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_audio_pitch_shift: out is NULL");
    *out = NULL;
    tm_status st = check_in(in, "tm_audio_pitch_shift");
    if (st != TM_OK) return st;
    if (!(semitones >= -24.0f && semitones <= 24.0f))
        return tm_fail(TM_ERR_INVALID, "tm_audio_pitch_shift: %g semitones outside [-24, 24]",
                       (double)semitones);
    if ((unsigned)converter >= TM_RESAMPLE_COUNT)
        return tm_fail(TM_ERR_INVALID, "tm_audio_pitch_shift: unknown converter %d",
                       (int)converter);
    int64_t n = in->n_samples;
    float *y = NULL;
    if (semitones == 0.0f) {
        y = tm_alloc(sizeof(float) * (size_t)n);
        if (!y) return tm_fail(TM_ERR_NOMEM, "tm_audio_pitch_shift: out of memory");
        memcpy(y, in->samples, sizeof(float) * (size_t)n);
        return wrap(out, in, y, n);
    }
    double rate = pow(2.0, -(double)semitones / 12.0);
    int64_t len = (int64_t)llround((double)n / rate);
    if (len < 1) len = 1;
    float *s = NULL;
    st = stretch(&s, in->samples, n, rate, len);
    if (st != TM_OK) return st;
    /* Playing the stretched signal `rate` times as long at 1 / rate the
     * speed: every frequency times 1 / rate = 2^(semitones / 12). */
    st = tm_audio_resample_buf(&y, n, s, len, rate, converter);
    tm_free(s);
    if (st != TM_OK) return st;
    return wrap(out, in, y, n);
}
