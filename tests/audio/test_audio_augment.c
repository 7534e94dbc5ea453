/* Audio augmentations: exact formulas (gain, noise scaling, shift,
 * convolution against a direct sum, SpecAugment spans from the RNG draws),
 * invariants (achieved SNR, lengths, frequencies after time stretch and
 * pitch shift, impulse-response energy), reproducibility from (seed,
 * index), parameter checks. */
#include "audio_test.h"

static int verbose = 1;

static float *sine(int64_t n, int rate, double hz, double amp)
{
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(amp * sin(2 * M_PI * hz * i / rate));
    return x;
}

/* The strongest frequency of x (Hz), from one Hann-windowed frame of 8192
 * taken from the middle, with parabolic interpolation between bins. */
static double peak_hz(const float *x, int64_t n, int rate)
{
    tm_audio_params p = tm_audio_default_params();
    p.sample_rate = rate;
    p.n_fft = 8192;
    p.hop = 8192;
    p.center = 0;
    p.log = TM_LOG_NONE;
    p.top_db = 0;
    p.whisper_norm = 0;
    p.target_frames = 0;
    tm_logmel *lm = NULL;
    if (tm_logmel_new(&lm, p) != TM_OK || n < 8192) return -1;
    float *s = malloc(sizeof(float) * 4097);
    tm_logmel_spectrogram(lm, x + (n - 8192) / 2, 8192, s);
    int best = 1;
    for (int k = 1; k < 4096; k++)
        if (s[k] > s[best]) best = k;
    double a = log(s[best - 1] + 1e-30), b = log(s[best] + 1e-30), c = log(s[best + 1] + 1e-30);
    double off = 0.5 * (a - c) / (a - 2 * b + c);
    free(s);
    tm_logmel_free(lm);
    return (best + off) * rate / 8192.0;
}

static double rms(const float *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s / (double)n);
}

static void test_gain_shift(void)
{
    float x[5] = {1, -2, 0.5f, 0, 3};
    CHECK_OK(tm_audio_gain(x, 5, 6.0f));
    float g = (float)pow(10.0, 6.0 / 20.0);
    CHECK(x[0] == g && x[1] == -2 * g && x[4] == 3 * g);
    CHECK_STATUS(tm_audio_gain(x, 5, NAN), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_gain(NULL, 5, 1), TM_ERR_INVALID);
    CHECK_OK(tm_audio_gain(NULL, 0, 1));

    float y[6] = {1, 2, 3, 4, 5, 6};
    CHECK_OK(tm_audio_shift(y, 6, 2, 0));
    CHECK(y[0] == 0 && y[1] == 0 && y[2] == 1 && y[5] == 4);
    float z[6] = {1, 2, 3, 4, 5, 6};
    CHECK_OK(tm_audio_shift(z, 6, -2, 0));
    CHECK(z[0] == 3 && z[3] == 6 && z[4] == 0 && z[5] == 0);
    float w[6] = {1, 2, 3, 4, 5, 6};
    CHECK_OK(tm_audio_shift(w, 6, 2, 1));
    CHECK(w[0] == 5 && w[1] == 6 && w[2] == 1 && w[5] == 4);
    CHECK_OK(tm_audio_shift(w, 6, -8, 1)); /* back by 2 (mod 6) */
    CHECK(w[0] == 1 && w[5] == 6);
    CHECK_OK(tm_audio_shift(w, 6, 100, 0));
    CHECK(w[0] == 0 && w[5] == 0);
}

static void test_noise(void)
{
    const int64_t n = 8000;
    float *x = sine(n, 16000, 440, 0.3);
    float *orig = malloc(sizeof(float) * n);
    memcpy(orig, x, sizeof(float) * n);
    const float targets[4] = {-5.0f, 0.0f, 10.0f, 30.0f};
    for (int t = 0; t < 4; t++) {
        memcpy(x, orig, sizeof(float) * n);
        double achieved = 0;
        CHECK_OK(tm_audio_add_noise(x, n, targets[t], 7, 3, &achieved));
        /* Measure again here, from the difference. */
        double ps = 0, pn = 0;
        for (int64_t i = 0; i < n; i++) {
            ps += (double)orig[i] * orig[i];
            double d = (double)x[i] - orig[i];
            pn += d * d;
        }
        double measured = 10 * log10(ps / pn);
        CHECK_NEAR(achieved, targets[t], 1e-3, 0);
        CHECK_NEAR(measured, targets[t], 1e-3, 0);
        if (verbose && t == 2)
            printf("  noise at 10 dB: achieved %.6f dB, measured %.6f dB\n", achieved, measured);
    }
    /* The exact formula: x + s z with z = tm_rng_normal_at(seed, stream, i). */
    memcpy(x, orig, sizeof(float) * n);
    CHECK_OK(tm_audio_add_noise(x, n, 20.0f, 11, 5, NULL));
    double ps = 0, pz = 0;
    for (int64_t i = 0; i < n; i++) {
        double zi = tm_rng_normal_at(11, 5, (uint64_t)i);
        ps += (double)orig[i] * orig[i];
        pz += (double)(float)zi * (float)zi;
    }
    double s = sqrt(ps / (pz * 100.0));
    int exact = 1;
    for (int64_t i = 0; i < n; i++)
        exact &= x[i] == orig[i] + (float)(s * tm_rng_normal_at(11, 5, (uint64_t)i));
    CHECK(exact);
    /* Reproducible; another stream differs. */
    float *x2 = malloc(sizeof(float) * n);
    memcpy(x2, orig, sizeof(float) * n);
    CHECK_OK(tm_audio_add_noise(x2, n, 20.0f, 11, 5, NULL));
    CHECK(memcmp(x, x2, sizeof(float) * n) == 0);
    memcpy(x2, orig, sizeof(float) * n);
    CHECK_OK(tm_audio_add_noise(x2, n, 20.0f, 11, 6, NULL));
    CHECK(memcmp(x, x2, sizeof(float) * n) != 0);
    /* Silence stays silent. */
    float sil[16] = {0};
    double a = 0;
    CHECK_OK(tm_audio_add_noise(sil, 16, 10, 1, 1, &a));
    CHECK(isinf(a) && sil[3] == 0);

    /* A recorded noise, looped from an offset. */
    float noise[100];
    test_fill_uniform(noise, 100, 3, -1, 1);
    memcpy(x, orig, sizeof(float) * n);
    double ach = 0;
    CHECK_OK(tm_audio_mix_noise(x, 300, noise, 100, 37, 6.0f, &ach));
    CHECK_NEAR(ach, 6.0, 1e-3, 0);
    /* The loop: the added noise at i and i + 100 is the same sample. */
    double r1 = (double)x[5] - orig[5], r2 = (double)x[105] - orig[105];
    CHECK_NEAR(r1, r2, 1e-6, 0);
    float zero[4] = {0};
    CHECK_STATUS(tm_audio_mix_noise(x, 10, zero, 4, 0, 6.0f, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_mix_noise(x, 10, NULL, 4, 0, 6.0f, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_add_noise(x, 10, NAN, 1, 1, NULL), TM_ERR_INVALID);
    free(x);
    free(x2);
    free(orig);
}

/* FFT overlap-add against the direct sum in double. */
static void test_convolve(void)
{
    const int64_t ns[3] = {1, 1000, 20000};
    const int64_t nirs[4] = {1, 7, 300, 2500};
    for (int a = 0; a < 3; a++) {
        for (int b = 0; b < 4; b++) {
            int64_t n = ns[a], m = nirs[b];
            float *x = malloc(sizeof(float) * (size_t)n), *ir = malloc(sizeof(float) * (size_t)m);
            float *y = malloc(sizeof(float) * (size_t)n), *want = malloc(sizeof(float) * (size_t)n);
            test_fill_uniform(x, n, 10 + a, -1, 1);
            test_fill_uniform(ir, m, 20 + b, -0.5f, 0.5f);
            for (int64_t i = 0; i < n; i++) {
                double s = 0;
                for (int64_t k = 0; k < m && k <= i; k++) s += (double)ir[k] * x[i - k];
                want[i] = (float)(0.25 * x[i] + 0.75 * s);
            }
            CHECK_OK(tm_audio_convolve(y, x, n, ir, m, 0.75f));
            char what[64];
            snprintf(what, sizeof what, "convolve n=%lld ir=%lld", (long long)n, (long long)m);
            double scale = max_abs(want, n);
            compare(what, y, want, n, 2e-6 * scale * sqrt((double)m), 0, verbose && a == 2);
            /* In place gives the same bits. */
            CHECK_OK(tm_audio_convolve(x, x, n, ir, m, 0.75f));
            CHECK(memcmp(x, y, sizeof(float) * (size_t)n) == 0);
            free(x);
            free(ir);
            free(y);
            free(want);
        }
    }
    float one = 1, x[3] = {1, 2, 3};
    CHECK_STATUS(tm_audio_convolve(x, x, 3, &one, 1, 1.5f), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_convolve(x, x, 3, NULL, 1, 0.5f), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_convolve(NULL, x, 3, &one, 1, 0.5f), TM_ERR_INVALID);

    /* Synthetic impulse responses. */
    const int64_t m = 8000;
    float *ir = malloc(sizeof(float) * m), *ir2 = malloc(sizeof(float) * m);
    CHECK_OK(tm_audio_synth_ir(ir, m, 16000, 0.5f, 9, 4));
    CHECK(ir[0] == 1.0f);
    double tail = 0, early = 0, late = 0;
    for (int64_t i = 1; i < m; i++) {
        tail += (double)ir[i] * ir[i];
        if (i < 800) early += (double)ir[i] * ir[i];
        if (i >= m - 800) late += (double)ir[i] * ir[i];
    }
    CHECK_NEAR(tail, 1.0, 1e-5, 0);
    /* 60 dB per 0.5 s: 0.45 s between the windows' middles is 54 dB. */
    double drop = 10 * log10(early / late);
    CHECK(drop > 48 && drop < 60);
    CHECK_OK(tm_audio_synth_ir(ir2, m, 16000, 0.5f, 9, 4));
    CHECK(memcmp(ir, ir2, sizeof(float) * m) == 0);
    CHECK_STATUS(tm_audio_synth_ir(ir, m, 16000, 0.0f, 9, 4), TM_ERR_INVALID);
    free(ir);
    free(ir2);
}

static void test_stretch_pitch(void)
{
    const int rate = 16000;
    const int64_t n = 16000;
    tm_audio *in = NULL, *out = NULL;
    CHECK_OK(tm_audio_new(&in, n, rate));
    float *s = sine(n, rate, 1000, 0.5);
    memcpy(in->samples, s, sizeof(float) * n);
    free(s);
    const float rates[3] = {1.25f, 0.8f, 1.0f};
    for (int r = 0; r < 3; r++) {
        CHECK_OK(tm_audio_time_stretch(&out, in, rates[r]));
        if (!out) continue;
        CHECK(out->n_samples == llround(n / rates[r]) && out->sample_rate == rate);
        double f = peak_hz(out->samples, out->n_samples, rate);
        double level = rms(out->samples + 2000, out->n_samples - 4000);
        if (verbose)
            printf("  time stretch %.2f: %lld samples, peak %.2f Hz, rms %.4f (in %.4f)\n",
                   (double)rates[r], (long long)out->n_samples, f, level, 0.5 / sqrt(2));
        CHECK(fabs(f - 1000) < 2);
        /* The classic phase vocoder keeps each bin's phase rate but not the
         * phase relations between bins (torchaudio's output is the same):
         * a pure tone may come out up to ~3.5 dB quieter. */
        CHECK(level / (0.5 / sqrt(2)) > 0.65 && level / (0.5 / sqrt(2)) < 1.05);
        tm_audio_free(out);
        out = NULL;
    }
    const float semis[3] = {12.0f, -5.0f, 3.5f};
    for (int k = 0; k < 3; k++) {
        CHECK_OK(tm_audio_pitch_shift(&out, in, semis[k], TM_RESAMPLE_DEFAULT));
        if (!out) continue;
        CHECK(out->n_samples == n);
        double f = peak_hz(out->samples, n, rate), want = 1000 * pow(2, semis[k] / 12);
        double level = rms(out->samples + 2000, n - 4000);
        if (verbose)
            printf("  pitch shift %+.1f: peak %.2f Hz (want %.2f), rms %.4f\n", (double)semis[k], f,
                   want, level);
        CHECK(fabs(f - want) < 3);
        CHECK(level / (0.5 / sqrt(2)) > 0.65 && level / (0.5 / sqrt(2)) < 1.05);
        tm_audio_free(out);
        out = NULL;
    }
    CHECK_STATUS(tm_audio_time_stretch(&out, in, 5.0f), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_time_stretch(&out, in, NAN), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_pitch_shift(&out, in, 30.0f, TM_RESAMPLE_DEFAULT), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_time_stretch(&out, NULL, 1.1f), TM_ERR_INVALID);
    CHECK(out == NULL);
    /* Short inputs still work (reflect padding repeats). */
    in->n_samples = 10;
    CHECK_OK(tm_audio_time_stretch(&out, in, 2.0f));
    CHECK(out && out->n_samples == 5);
    tm_audio_free(out);
    CHECK_OK(tm_audio_pitch_shift(&out, in, 2.0f, TM_RESAMPLE_SINC_FASTEST));
    CHECK(out && out->n_samples == 10);
    tm_audio_free(out);
    tm_audio_free(in);
}

/* The same phase vocoder as torchaudio: stft -> phase_vocoder -> istft.
 * trimodal accumulates the phase in double and torch in float, which
 * drifts apart by ~1e-5 rad per frame; the signal is 31 frames long. */
static void test_vs_torch(void)
{
    tm_safetensors *v = NULL;
    CHECK_OK(tm_safetensors_open(&v, test_data_path("audio/augment.safetensors")));
    if (!v) return;
    int64_t n;
    const float *x = vec_get(v, "stretch_input", &n, NULL, NULL);
    const char *names[3] = {"stretch_0.8", "stretch_1.25", "stretch_2"};
    tm_audio *in = NULL;
    if (x) CHECK_OK(tm_audio_from_samples(&in, x, n, 16000));
    for (int i = 0; i < 3 && in; i++) {
        int64_t m;
        const float *want = vec_get(v, names[i], &m, NULL, NULL);
        cJSON *meta = vec_meta(v, names[i]);
        if (!want || !meta) continue;
        tm_audio *out = NULL;
        CHECK_OK(tm_audio_time_stretch(&out, in, (float)meta_num(meta, "rate")));
        CHECK(out && out->n_samples == m);
        if (out && out->n_samples == m)
            compare(names[i], out->samples, want, m, 1e-4 * max_abs(want, m), 1e-3, verbose);
        tm_audio_free(out);
        cJSON_Delete(meta);
    }
    tm_audio_free(in);
    tm_safetensors_close(v);
}

static void test_pipeline(void)
{
    const int rate = 16000;
    const int64_t n = 8000;
    tm_audio *in = NULL;
    CHECK_OK(tm_audio_new(&in, n, rate));
    test_fill_uniform(in->samples, n, 4, -0.3f, 0.3f);
    tm_audio_aug_params p = tm_audio_aug_default_params();
    tm_audio *a = NULL, *b = NULL;
    tm_audio_aug_record r, r2;
    /* All probabilities 0: a copy. */
    CHECK_OK(tm_audio_augment(&a, in, p, 1, 0, &r));
    CHECK(a && a->n_samples == n && memcmp(a->samples, in->samples, sizeof(float) * n) == 0);
    CHECK(!r.stretched && !r.pitched && !r.shifted && !r.reverbed && !r.gained && !r.noised);
    tm_audio_free(a);
    /* Everything on. */
    p.p_stretch = p.p_pitch = p.p_shift = p.p_reverb = p.p_gain = p.p_noise = 1.0f;
    for (uint64_t index = 0; index < 4; index++) {
        CHECK_OK(tm_audio_augment(&a, in, p, 42, index, &r));
        CHECK_OK(tm_audio_augment(&b, in, p, 42, index, &r2));
        CHECK(a && b && a->n_samples == b->n_samples &&
              memcmp(a->samples, b->samples, sizeof(float) * (size_t)a->n_samples) == 0);
        CHECK(r.stretched && r.pitched && r.shifted && r.reverbed && r.gained && r.noised);
        /* The amounts are the documented draws. */
        uint64_t base = index * 16;
        /* The amounts: min + (max - min) u, u = tm_rng_uniform_at(seed,
         * index * 16 + step, 1), in float. */
#define DRAW(lo, hi, step) ((lo) + ((hi) - (lo)) * tm_rng_uniform_at(42, base + (step), 1))
        CHECK(r.stretch_rate == DRAW(p.stretch_min, p.stretch_max, 0));
        CHECK(r.pitch_semitones == DRAW(p.pitch_min, p.pitch_max, 1));
        CHECK(r.shift == llround((2.0 * tm_rng_uniform_at(42, base + 2, 1) - 1.0) *
                                 p.shift_max_s * rate));
        CHECK(r.rt60 == DRAW(p.rt60_min, p.rt60_max, 3));
        CHECK(r.gain_db == DRAW(p.gain_min_db, p.gain_max_db, 4));
        CHECK(r.snr_db == DRAW(p.snr_min_db, p.snr_max_db, 5));
#undef DRAW
        CHECK(a->n_samples == llround(n / r.stretch_rate));
        CHECK(fabs(r.achieved_snr_db - r.snr_db) < 1e-3);
        if (verbose && index == 0)
            printf("  augment: rate %.3f, %+.2f semitones, shift %lld, rt60 %.2f s, gain %+.2f "
                   "dB, SNR %.2f dB (achieved %.4f)\n",
                   (double)r.stretch_rate, (double)r.pitch_semitones, (long long)r.shift,
                   (double)r.rt60, (double)r.gain_db, (double)r.snr_db, r.achieved_snr_db);
        tm_audio_free(a);
        tm_audio_free(b);
    }
    /* Another index, another result. */
    CHECK_OK(tm_audio_augment(&a, in, p, 42, 0, &r));
    CHECK_OK(tm_audio_augment(&b, in, p, 42, 1, &r2));
    CHECK(r.gain_db != r2.gain_db);
    tm_audio_free(a);
    tm_audio_free(b);
    /* A recorded impulse response and noise. */
    float ir[3] = {1.0f, 0.5f, 0.25f}, noise[50];
    test_fill_uniform(noise, 50, 8, -1, 1);
    p = tm_audio_aug_default_params();
    p.p_reverb = p.p_noise = 1;
    p.ir = ir;
    p.n_ir = 3;
    p.noise = noise;
    p.n_noise = 50;
    CHECK_OK(tm_audio_augment(&a, in, p, 5, 9, &r));
    CHECK(r.reverbed && r.noised && r.rt60 == 0 && fabs(r.achieved_snr_db - r.snr_db) < 1e-3);
    tm_audio_free(a);
    /* Bad params. */
    p = tm_audio_aug_default_params();
    p.p_gain = 1.5f;
    CHECK_STATUS(tm_audio_augment(&a, in, p, 1, 0, NULL), TM_ERR_INVALID);
    p = tm_audio_aug_default_params();
    p.p_stretch = 0.5f;
    p.stretch_min = 0.1f;
    CHECK_STATUS(tm_audio_augment(&a, in, p, 1, 0, NULL), TM_ERR_INVALID);
    p = tm_audio_aug_default_params();
    p.p_noise = 0.5f;
    p.snr_min_db = 50;
    p.snr_max_db = 40;
    CHECK_STATUS(tm_audio_augment(&a, in, p, 1, 0, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_audio_augment(&a, NULL, p, 1, 0, NULL), TM_ERR_INVALID);
    CHECK(a == NULL);
    tm_audio_free(in);
}

static void test_specaug(void)
{
    const int nm = 64, nt = 100;
    float *mel = malloc(sizeof(float) * nm * nt), *orig = malloc(sizeof(float) * nm * nt);
    test_fill_uniform(orig, nm * nt, 12, -1, 2);
    double sum = 0;
    for (int i = 0; i < nm * nt; i++) sum += orig[i];
    float mean = (float)(sum / (nm * nt));
    tm_specaug_params p = tm_specaug_default_params();
    p.n_freq_masks = 3;
    p.n_time_masks = 4;
    p.time_param = 30;
    p.time_max_frac = 0.2f;
    for (uint64_t index = 0; index < 50; index++) {
        memcpy(mel, orig, sizeof(float) * nm * nt);
        tm_specaug_spans s;
        CHECK_OK(tm_specaug(mel, nm, nt, p, 77, index, &s));
        CHECK(s.n_freq == 3 && s.n_time == 4 && s.fill == mean);
        /* Spans from the documented draws. */
        uint64_t stream = index * 16 + 15;
        for (int i = 0; i < 3; i++) {
            int w = (int)(tm_rng_uniform_at(77, stream, 2 * i) * (double)(p.freq_param + 1));
            int st = (int)(tm_rng_uniform_at(77, stream, 2 * i + 1) * (double)(nm - w + 1));
            CHECK(s.freq_start[i] == st && s.freq_end[i] == st + w && st + w <= nm);
        }
        for (int j = 0; j < 4; j++) {
            int w = (int)(tm_rng_uniform_at(77, stream, 64 + 2 * j) * (double)(p.time_param + 1));
            if (w > 20) w = 20; /* 0.2 x 100 frames */
            int st = (int)(tm_rng_uniform_at(77, stream, 64 + 2 * j + 1) * (double)(nt - w + 1));
            CHECK(s.time_start[j] == st && s.time_end[j] == st + w && st + w <= nt);
        }
        /* Masked cells hold the fill, the others their value. */
        int ok = 1;
        for (int m = 0; m < nm; m++) {
            for (int t = 0; t < nt; t++) {
                int masked = 0;
                for (int i = 0; i < 3; i++) masked |= m >= s.freq_start[i] && m < s.freq_end[i];
                for (int j = 0; j < 4; j++) masked |= t >= s.time_start[j] && t < s.time_end[j];
                float v = mel[m * nt + t];
                ok &= masked ? v == mean : v == orig[m * nt + t];
            }
        }
        CHECK(ok);
    }
    /* A fixed fill; reproducible. */
    p.fill_mean = 0;
    p.fill_value = -5.0f;
    float *m2 = malloc(sizeof(float) * nm * nt);
    memcpy(mel, orig, sizeof(float) * nm * nt);
    memcpy(m2, orig, sizeof(float) * nm * nt);
    CHECK_OK(tm_specaug(mel, nm, nt, p, 3, 3, NULL));
    CHECK_OK(tm_specaug(m2, nm, nt, p, 3, 3, NULL));
    CHECK(memcmp(mel, m2, sizeof(float) * nm * nt) == 0);
    /* Errors. */
    p.n_time_masks = TM_SPECAUG_MAX_MASKS + 1;
    CHECK_STATUS(tm_specaug(mel, nm, nt, p, 1, 1, NULL), TM_ERR_INVALID);
    p = tm_specaug_default_params();
    p.time_max_frac = 0;
    CHECK_STATUS(tm_specaug(mel, nm, nt, p, 1, 1, NULL), TM_ERR_INVALID);
    p = tm_specaug_default_params();
    CHECK_STATUS(tm_specaug(NULL, nm, nt, p, 1, 1, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_specaug(mel, 0, nt, p, 1, 1, NULL), TM_ERR_INVALID);
    /* Masks wider than the picture are clipped to it. */
    p.freq_param = 1000;
    p.time_param = 1000;
    tm_specaug_spans s;
    CHECK_OK(tm_specaug(mel, 4, 3, p, 1, 2, &s));
    for (int i = 0; i < s.n_freq; i++) CHECK(s.freq_end[i] <= 4 && s.freq_start[i] >= 0);
    for (int j = 0; j < s.n_time; j++) CHECK(s.time_end[j] <= 3 && s.time_start[j] >= 0);
    free(mel);
    free(m2);
    free(orig);
}

int main(void)
{
    verbose = getenv("TM_QUIET") == NULL;
    test_gain_shift();
    test_noise();
    test_convolve();
    test_stretch_pitch();
    test_vs_torch();
    test_pipeline();
    test_specaug();
    return test_finish("audio_augment");
}
