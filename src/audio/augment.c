/* Audio augmentations: gain, noise at a target SNR, time shift,
 * reverberation (FFT convolution), the seeded pipeline over them, and
 * SpecAugment masks on a log-mel. Every random choice is a pure function
 * of (seed, example index) through the counter-based RNG. */
#include <math.h>
#include <string.h>

#include "audio/audio_internal.h"

/* The RNG stream of step `step` of example `index` (16 per example). */
#define STREAM(index, step) ((uint64_t)(index) * 16u + (uint64_t)(step))
enum {
    STEP_STRETCH = 0,
    STEP_PITCH,
    STEP_SHIFT,
    STEP_REVERB,
    STEP_GAIN,
    STEP_NOISE,
    STEP_NOISE_SAMPLES,
    STEP_IR_SAMPLES,
    STEP_SPECAUG = 15
};

static tm_status check_buf(const float *x, int64_t n, const char *what)
{
    if (n < 0 || (n > 0 && !x)) return tm_fail(TM_ERR_INVALID, "%s: no samples", what);
    return TM_OK;
}

tm_status tm_audio_gain(float *x, int64_t n, float db)
{
    tm_status st = check_buf(x, n, "tm_audio_gain");
    if (st != TM_OK) return st;
    if (!isfinite(db) || fabsf(db) > 200)
        return tm_fail(TM_ERR_INVALID, "tm_audio_gain: %g dB", (double)db);
    float g = (float)pow(10.0, db / 20.0);
    for (int64_t i = 0; i < n; i++) x[i] *= g;
    return TM_OK;
}

static double energy(const float *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* x += s * z with s chosen for the SNR; z (n) is the unscaled noise. */
static void mix_scaled(float *x, int64_t n, const float *z, double ps, double pz, float snr_db,
                       double *achieved)
{
    double s = sqrt(ps / (pz * pow(10.0, snr_db / 10.0)));
    double pn = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = (float)(s * z[i]);
        pn += (double)v * v;
        x[i] += v;
    }
    if (achieved) *achieved = pn > 0 ? 10.0 * log10(ps / pn) : INFINITY;
}

tm_status tm_audio_add_noise(float *x, int64_t n, float snr_db, uint64_t seed, uint64_t stream,
                             double *achieved_db)
{
    tm_status st = check_buf(x, n, "tm_audio_add_noise");
    if (st != TM_OK) return st;
    if (!isfinite(snr_db) || fabsf(snr_db) > 200)
        return tm_fail(TM_ERR_INVALID, "tm_audio_add_noise: SNR %g dB", (double)snr_db);
    double ps = energy(x, n);
    if (achieved_db) *achieved_db = INFINITY;
    if (n == 0 || ps == 0) return TM_OK;
    float *z = tm_alloc(sizeof(float) * (size_t)n);
    if (!z) return tm_fail(TM_ERR_NOMEM, "tm_audio_add_noise: out of memory");
    for (int64_t i = 0; i < n; i++) z[i] = tm_rng_normal_at(seed, stream, (uint64_t)i);
    double pz = energy(z, n);
    if (pz > 0) mix_scaled(x, n, z, ps, pz, snr_db, achieved_db);
    tm_free(z);
    return TM_OK;
}

tm_status tm_audio_mix_noise(float *x, int64_t n, const float *noise, int64_t n_noise,
                             int64_t offset, float snr_db, double *achieved_db)
{
    tm_status st = check_buf(x, n, "tm_audio_mix_noise");
    if (st != TM_OK) return st;
    if (!noise || n_noise < 1)
        return tm_fail(TM_ERR_INVALID, "tm_audio_mix_noise: no noise samples");
    if (!isfinite(snr_db) || fabsf(snr_db) > 200)
        return tm_fail(TM_ERR_INVALID, "tm_audio_mix_noise: SNR %g dB", (double)snr_db);
    if (offset < 0) return tm_fail(TM_ERR_INVALID, "tm_audio_mix_noise: negative offset");
    double ps = energy(x, n);
    if (achieved_db) *achieved_db = INFINITY;
    if (n == 0) return TM_OK;
    float *z = tm_alloc(sizeof(float) * (size_t)n);
    if (!z) return tm_fail(TM_ERR_NOMEM, "tm_audio_mix_noise: out of memory");
    int64_t j = offset % n_noise;
    for (int64_t i = 0; i < n; i++) {
        z[i] = noise[j];
        if (++j == n_noise) j = 0;
    }
    double pz = energy(z, n);
    if (pz == 0 || !isfinite(pz)) {
        tm_free(z);
        return tm_fail(TM_ERR_INVALID, "tm_audio_mix_noise: the noise is silent (or not finite)");
    }
    if (ps > 0) mix_scaled(x, n, z, ps, pz, snr_db, achieved_db);
    tm_free(z);
    return TM_OK;
}

static void reverse(float *x, int64_t n)
{
    for (int64_t i = 0, j = n - 1; i < j; i++, j--) {
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
}

tm_status tm_audio_shift(float *x, int64_t n, int64_t shift, int wrap)
{
    tm_status st = check_buf(x, n, "tm_audio_shift");
    if (st != TM_OK) return st;
    if (n == 0 || shift == 0) return TM_OK;
    if (wrap) {
        int64_t s = shift % n;
        if (s < 0) s += n;
        if (s == 0) return TM_OK;
        /* A rotation right by s: three reversals, in place. */
        reverse(x, n);
        reverse(x, s);
        reverse(x + s, n - s);
        return TM_OK;
    }
    if (shift >= n || shift <= -n) {
        memset(x, 0, sizeof(float) * (size_t)n);
    } else if (shift > 0) {
        memmove(x + shift, x, sizeof(float) * (size_t)(n - shift));
        memset(x, 0, sizeof(float) * (size_t)shift);
    } else {
        int64_t s = -shift;
        memmove(x, x + s, sizeof(float) * (size_t)(n - s));
        memset(x + n - s, 0, sizeof(float) * (size_t)s);
    }
    return TM_OK;
}

static int64_t next_pow2(int64_t v)
{
    int64_t p = 1;
    while (p < v) p <<= 1;
    return p;
}

/* Overlap-add: the impulse response's transform is made once; each block
 * of L = N - m + 1 input samples is transformed, multiplied, transformed
 * back and added at its place. N is the smaller of the next power of two
 * >= 4 m (a block's cost per sample then stays near that of one FFT) and
 * the one holding the whole result (short inputs: one block). */
tm_status tm_audio_convolve(float *out, const float *x, int64_t n, const float *ir, int64_t n_ir,
                            float wet)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_audio_convolve: out is NULL");
    tm_status st = check_buf(x, n, "tm_audio_convolve");
    if (st != TM_OK) return st;
    if (!ir || n_ir < 1) return tm_fail(TM_ERR_INVALID, "tm_audio_convolve: no impulse response");
    if (!(wet >= 0 && wet <= 1))
        return tm_fail(TM_ERR_INVALID, "tm_audio_convolve: wet %g outside [0, 1]", (double)wet);
    if (n == 0) return TM_OK;
    if (n > ((int64_t)1 << 34) || n_ir > ((int64_t)1 << 26))
        return tm_fail(TM_ERR_LIMIT, "tm_audio_convolve: input or impulse response too long");
    int64_t m = n_ir < n ? n_ir : n; /* later taps never reach the output */
    int64_t nn = next_pow2(4 * m), whole = next_pow2(n + m - 1);
    if (whole < nn) nn = whole;
    if (nn < 16) nn = 16;
    int N = (int)nn, nf = N / 2 + 1;
    int64_t L = nn - m + 1;
    float *y = tm_calloc((size_t)n, sizeof(float));
    float *buf = fftwf_malloc(sizeof(float) * (size_t)N);
    fftwf_complex *H = fftwf_malloc(sizeof(fftwf_complex) * (size_t)nf);
    fftwf_complex *X = fftwf_malloc(sizeof(fftwf_complex) * (size_t)nf);
    fftwf_plan fwd = tm_audio_plan_r2c(N), inv = tm_audio_plan_c2r(N);
    if (!y || !buf || !H || !X) {
        st = tm_fail(TM_ERR_NOMEM, "tm_audio_convolve: out of memory");
    } else if (!fwd || !inv) {
        st = tm_fail(TM_ERR_INTERNAL, "tm_audio_convolve: FFTW cannot plan %d", N);
    } else {
        memset(buf, 0, sizeof(float) * (size_t)N);
        memcpy(buf, ir, sizeof(float) * (size_t)m);
        fftwf_execute_dft_r2c(fwd, buf, H);
        float scale = 1.0f / (float)N;
        for (int64_t b = 0; b < n; b += L) {
            int64_t len = n - b < L ? n - b : L;
            memset(buf, 0, sizeof(float) * (size_t)N);
            memcpy(buf, x + b, sizeof(float) * (size_t)len);
            fftwf_execute_dft_r2c(fwd, buf, X);
            for (int k = 0; k < nf; k++) {
                float re = X[k][0] * H[k][0] - X[k][1] * H[k][1];
                float im = X[k][0] * H[k][1] + X[k][1] * H[k][0];
                X[k][0] = re * scale;
                X[k][1] = im * scale;
            }
            fftwf_execute_dft_c2r(inv, X, buf);
            int64_t end = b + len + m - 1;
            if (end > n) end = n;
            for (int64_t i = b; i < end; i++) y[i] += buf[i - b];
        }
        float dry = 1.0f - wet;
        for (int64_t i = 0; i < n; i++) out[i] = dry * x[i] + wet * y[i];
    }
    tm_audio_plan_free(fwd);
    tm_audio_plan_free(inv);
    tm_free(y);
    fftwf_free(buf);
    fftwf_free(H);
    fftwf_free(X);
    return st;
}

tm_status tm_audio_synth_ir(float *ir, int64_t n_ir, int sample_rate, float rt60, uint64_t seed,
                            uint64_t stream)
{
    if (!ir || n_ir < 1) return tm_fail(TM_ERR_INVALID, "tm_audio_synth_ir: no buffer");
    if (sample_rate < 1 || !(rt60 > 0 && rt60 <= 60))
        return tm_fail(TM_ERR_INVALID, "tm_audio_synth_ir: rate %d, rt60 %g s", sample_rate,
                       (double)rt60);
    ir[0] = 1.0f;
    double e = 0;
    for (int64_t i = 1; i < n_ir; i++) {
        double decay = pow(10.0, -3.0 * (double)i / ((double)rt60 * sample_rate));
        double v = tm_rng_normal_at(seed, stream, (uint64_t)i) * decay;
        ir[i] = (float)v;
        e += (double)ir[i] * ir[i];
    }
    if (e > 0) {
        float g = (float)(1.0 / sqrt(e));
        for (int64_t i = 1; i < n_ir; i++) ir[i] *= g;
    }
    return TM_OK;
}

/* ------------------------------------------------------------ pipeline */

tm_audio_aug_params tm_audio_aug_default_params(void)
{
    tm_audio_aug_params p;
    memset(&p, 0, sizeof p);
    p.stretch_min = 0.9f;
    p.stretch_max = 1.1f;
    p.pitch_min = -2.0f;
    p.pitch_max = 2.0f;
    p.shift_max_s = 0.1f;
    p.rt60_min = 0.2f;
    p.rt60_max = 0.6f;
    p.reverb_wet = 0.5f;
    p.gain_min_db = -6.0f;
    p.gain_max_db = 6.0f;
    p.snr_min_db = 10.0f;
    p.snr_max_db = 40.0f;
    p.resampler = TM_RESAMPLE_DEFAULT;
    return p;
}

static int prob_ok(float p) { return p >= 0 && p <= 1; }

static int range_ok(float lo, float hi, float min, float max)
{
    return lo >= min && hi <= max && lo <= hi;
}

static tm_status check_aug(const tm_audio_aug_params *p)
{
    if (!prob_ok(p->p_stretch) || !prob_ok(p->p_pitch) || !prob_ok(p->p_shift) ||
        !prob_ok(p->p_reverb) || !prob_ok(p->p_gain) || !prob_ok(p->p_noise))
        return tm_fail(TM_ERR_INVALID, "audio augment: probabilities must be in [0, 1]");
    if (p->p_stretch > 0 && !range_ok(p->stretch_min, p->stretch_max, 0.25f, 4.0f))
        return tm_fail(TM_ERR_INVALID, "audio augment: stretch range must lie in [0.25, 4]");
    if (p->p_pitch > 0 && !range_ok(p->pitch_min, p->pitch_max, -24.0f, 24.0f))
        return tm_fail(TM_ERR_INVALID, "audio augment: pitch range must lie in [-24, 24]");
    if (p->p_shift > 0 && !(p->shift_max_s >= 0 && p->shift_max_s <= 3600))
        return tm_fail(TM_ERR_INVALID, "audio augment: shift_max_s must be in [0, 3600]");
    if (p->p_reverb > 0) {
        if (!(p->reverb_wet >= 0 && p->reverb_wet <= 1))
            return tm_fail(TM_ERR_INVALID, "audio augment: reverb_wet must be in [0, 1]");
        if (p->ir ? p->n_ir < 1 : !range_ok(p->rt60_min, p->rt60_max, 1e-3f, 10.0f))
            return tm_fail(TM_ERR_INVALID,
                           "audio augment: need an impulse response or rt60 in [0.001, 10] s");
    }
    if (p->p_gain > 0 && !range_ok(p->gain_min_db, p->gain_max_db, -100.0f, 100.0f))
        return tm_fail(TM_ERR_INVALID, "audio augment: gain range must lie in [-100, 100] dB");
    if (p->p_noise > 0) {
        if (!range_ok(p->snr_min_db, p->snr_max_db, -100.0f, 200.0f))
            return tm_fail(TM_ERR_INVALID, "audio augment: SNR range must lie in [-100, 200] dB");
        if (p->noise && p->n_noise < 1)
            return tm_fail(TM_ERR_INVALID, "audio augment: noise given with n_noise < 1");
    }
    if ((unsigned)p->resampler >= TM_RESAMPLE_COUNT)
        return tm_fail(TM_ERR_INVALID, "audio augment: unknown resampler");
    return TM_OK;
}

static float draw(uint64_t seed, uint64_t index, int step, uint64_t k)
{
    return tm_rng_uniform_at(seed, STREAM(index, step), k);
}

static float between(float lo, float hi, float u) { return lo + (hi - lo) * u; }

/* Replaces *a by b (freeing a). */
static void swap_audio(tm_audio **a, tm_audio *b)
{
    tm_audio_free(*a);
    *a = b;
}

tm_status tm_audio_augment(tm_audio **out, const tm_audio *in, tm_audio_aug_params p,
                           uint64_t seed, uint64_t index, tm_audio_aug_record *rec)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_audio_augment: out is NULL");
    *out = NULL;
    if (!in || in->n_samples < 1 || !in->samples)
        return tm_fail(TM_ERR_INVALID, "tm_audio_augment: no input audio");
    tm_status st = check_aug(&p);
    if (st != TM_OK) return st;
    tm_audio_aug_record r;
    memset(&r, 0, sizeof r);
    r.stretch_rate = 1.0f;
    r.achieved_snr_db = INFINITY;
    tm_audio *a = NULL;
    st = tm_audio_from_samples(&a, in->samples, in->n_samples, in->sample_rate);
    if (st != TM_OK) return st;
    a->source_rate = in->source_rate;
    a->source_channels = in->source_channels;
    a->source_frames = in->source_frames;
    a->source_format = in->source_format;
    int rate = a->sample_rate;

    if (draw(seed, index, STEP_STRETCH, 0) < p.p_stretch) {
        r.stretched = 1;
        r.stretch_rate = between(p.stretch_min, p.stretch_max, draw(seed, index, STEP_STRETCH, 1));
        tm_audio *b = NULL;
        st = tm_audio_time_stretch(&b, a, r.stretch_rate);
        if (st != TM_OK) goto fail;
        swap_audio(&a, b);
    }
    if (draw(seed, index, STEP_PITCH, 0) < p.p_pitch) {
        r.pitched = 1;
        r.pitch_semitones = between(p.pitch_min, p.pitch_max, draw(seed, index, STEP_PITCH, 1));
        tm_audio *b = NULL;
        st = tm_audio_pitch_shift(&b, a, r.pitch_semitones, p.resampler);
        if (st != TM_OK) goto fail;
        swap_audio(&a, b);
    }
    if (draw(seed, index, STEP_SHIFT, 0) < p.p_shift) {
        r.shifted = 1;
        float u = draw(seed, index, STEP_SHIFT, 1);
        r.shift = (int64_t)llround((2.0 * u - 1.0) * p.shift_max_s * rate);
        st = tm_audio_shift(a->samples, a->n_samples, r.shift, p.shift_wrap);
        if (st != TM_OK) goto fail;
    }
    if (draw(seed, index, STEP_REVERB, 0) < p.p_reverb) {
        r.reverbed = 1;
        if (p.ir) {
            st = tm_audio_convolve(a->samples, a->samples, a->n_samples, p.ir, p.n_ir,
                                   p.reverb_wet);
        } else {
            r.rt60 = between(p.rt60_min, p.rt60_max, draw(seed, index, STEP_REVERB, 1));
            int64_t n_ir = (int64_t)ceil((double)r.rt60 * rate);
            if (n_ir < 1) n_ir = 1;
            float *ir = tm_alloc(sizeof(float) * (size_t)n_ir);
            if (!ir) {
                st = tm_fail(TM_ERR_NOMEM, "tm_audio_augment: out of memory");
                goto fail;
            }
            st = tm_audio_synth_ir(ir, n_ir, rate, r.rt60, seed, STREAM(index, STEP_IR_SAMPLES));
            if (st == TM_OK)
                st = tm_audio_convolve(a->samples, a->samples, a->n_samples, ir, n_ir,
                                       p.reverb_wet);
            tm_free(ir);
        }
        if (st != TM_OK) goto fail;
    }
    if (draw(seed, index, STEP_GAIN, 0) < p.p_gain) {
        r.gained = 1;
        r.gain_db = between(p.gain_min_db, p.gain_max_db, draw(seed, index, STEP_GAIN, 1));
        st = tm_audio_gain(a->samples, a->n_samples, r.gain_db);
        if (st != TM_OK) goto fail;
    }
    if (draw(seed, index, STEP_NOISE, 0) < p.p_noise) {
        r.noised = 1;
        r.snr_db = between(p.snr_min_db, p.snr_max_db, draw(seed, index, STEP_NOISE, 1));
        if (p.noise) {
            int64_t off = (int64_t)(draw(seed, index, STEP_NOISE, 2) * (double)p.n_noise);
            if (off >= p.n_noise) off = p.n_noise - 1;
            st = tm_audio_mix_noise(a->samples, a->n_samples, p.noise, p.n_noise, off, r.snr_db,
                                    &r.achieved_snr_db);
        } else {
            st = tm_audio_add_noise(a->samples, a->n_samples, r.snr_db, seed,
                                    STREAM(index, STEP_NOISE_SAMPLES), &r.achieved_snr_db);
        }
        if (st != TM_OK) goto fail;
    }
    if (rec) *rec = r;
    *out = a;
    return TM_OK;
fail:
    tm_audio_free(a);
    return st;
}

/* ---------------------------------------------------------- SpecAugment */

tm_specaug_params tm_specaug_default_params(void)
{
    tm_specaug_params p;
    memset(&p, 0, sizeof p);
    p.n_freq_masks = 2;
    p.freq_param = 8;
    p.n_time_masks = 2;
    p.time_param = 10;
    p.time_max_frac = 1.0f;
    p.fill_mean = 1;
    p.fill_value = 0.0f;
    return p;
}

/* floor(u * count) for u in [0, 1), never count itself. */
static int pick(float u, int64_t count)
{
    int64_t v = (int64_t)((double)u * (double)count);
    if (v >= count) v = count - 1;
    if (v < 0) v = 0;
    return (int)v;
}

tm_status tm_specaug(float *mel, int n_mels, int64_t frames, tm_specaug_params p, uint64_t seed,
                     uint64_t index, tm_specaug_spans *spans)
{
    if (!mel || n_mels < 1 || frames < 1 || frames > INT32_MAX)
        return tm_fail(TM_ERR_INVALID, "tm_specaug: bad log-mel (%d x %lld)", n_mels,
                       (long long)frames);
    if (p.n_freq_masks < 0 || p.n_freq_masks > TM_SPECAUG_MAX_MASKS || p.n_time_masks < 0 ||
        p.n_time_masks > TM_SPECAUG_MAX_MASKS)
        return tm_fail(TM_ERR_INVALID, "tm_specaug: mask counts must be in [0, %d]",
                       TM_SPECAUG_MAX_MASKS);
    if (p.freq_param < 0 || p.time_param < 0 || !(p.time_max_frac > 0 && p.time_max_frac <= 1))
        return tm_fail(TM_ERR_INVALID, "tm_specaug: negative mask width or time_max_frac "
                                       "outside (0, 1]");
    if (!p.fill_mean && !isfinite(p.fill_value))
        return tm_fail(TM_ERR_INVALID, "tm_specaug: fill_value is not finite");
    tm_specaug_spans s;
    memset(&s, 0, sizeof s);
    size_t count = (size_t)n_mels * (size_t)frames;
    float fill = p.fill_value;
    if (p.fill_mean) {
        double sum = 0;
        for (size_t i = 0; i < count; i++) sum += mel[i];
        fill = (float)(sum / (double)count);
    }
    s.fill = fill;
    uint64_t stream = STREAM(index, STEP_SPECAUG);
    int fw_max = p.freq_param < n_mels ? p.freq_param : n_mels;
    for (int i = 0; i < p.n_freq_masks; i++) {
        int w = pick(tm_rng_uniform_at(seed, stream, 2u * i), (int64_t)p.freq_param + 1);
        if (w > fw_max) w = fw_max;
        int start = pick(tm_rng_uniform_at(seed, stream, 2u * i + 1), (int64_t)n_mels - w + 1);
        for (int m = start; m < start + w; m++)
            for (int64_t t = 0; t < frames; t++) mel[(size_t)m * frames + t] = fill;
        s.freq_start[i] = start;
        s.freq_end[i] = start + w;
    }
    s.n_freq = p.n_freq_masks;
    int64_t cap = (int64_t)floor((double)p.time_max_frac * (double)frames);
    int64_t tw_max = p.time_param < cap ? p.time_param : cap;
    for (int j = 0; j < p.n_time_masks; j++) {
        int w = pick(tm_rng_uniform_at(seed, stream, 64u + 2u * j), (int64_t)p.time_param + 1);
        if (w > tw_max) w = (int)tw_max;
        int start = pick(tm_rng_uniform_at(seed, stream, 64u + 2u * j + 1), frames - w + 1);
        for (int m = 0; m < n_mels; m++)
            for (int t = start; t < start + w; t++) mel[(size_t)m * frames + t] = fill;
        s.time_start[j] = start;
        s.time_end[j] = start + w;
    }
    s.n_time = p.n_time_masks;
    if (spans) *spans = s;
    return TM_OK;
}
