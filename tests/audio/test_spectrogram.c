/* STFT, spectrograms, mel filterbanks, log-mel and the Whisper recipe
 * against torchaudio's numbers (tests/data/audio/spectrogram.safetensors,
 * from scripts/gen_audio_vectors.py); parameter checks; the PNG picture;
 * tm_audio_preprocess; the same bits at 1 and 2 threads.
 *
 * Tolerance: rtol 1e-4 above an absolute floor of 1e-6 x the largest
 * |value| of the reference (spectrograms, mel, filterbanks) or 1e-5 (log
 * values, which are O(1) to O(100)): a float32 FFT's rounding noise is about
 * 1e-7 of a frame's energy, so bins far below the peak differ in relative
 * terms between any two FFT libraries. */
#include <stb/stb_image.h>
#include <unistd.h>

#include "audio/audio_internal.h"
#include "audio_test.h"

#define RTOL 1e-4
#define FLOOR_REL 1e-6
#define LOG_ATOL 1e-5

static int verbose = 1;
static tm_safetensors *vec;

static tm_window window_of(const char *s)
{
    return !strcmp(s, "hamming") ? TM_WINDOW_HAMMING : !strcmp(s, "rect") ? TM_WINDOW_RECT
                                                                          : TM_WINDOW_HANN;
}

/* Params with no mel/log stage effects, from a case's JSON. */
static tm_audio_params base_params(const cJSON *m)
{
    tm_audio_params p = tm_audio_default_params();
    p.n_fft = (int)meta_num(m, "n_fft");
    p.win_length = (int)meta_num(m, "win_length");
    p.hop = (int)meta_num(m, "hop");
    double c = meta_num(m, "center");
    p.center = isnan(c) ? 1 : (int)c;
    p.pad_mode = !strcmp(meta_str(m, "pad_mode"), "constant") ? TM_STFT_PAD_CONSTANT : TM_STFT_PAD_REFLECT;
    p.power = (float)meta_num(m, "power");
    p.window = window_of(meta_str(m, "window"));
    p.log = TM_LOG_NONE;
    p.top_db = 0;
    p.whisper_norm = 0;
    p.target_frames = 0;
    return p;
}

static void test_filterbanks(void)
{
    const char *names[] = {"fb_htk",       "fb_slaney_slaney", "fb_slaney", "fb_htk_slaney",
                           "fb_whisper80", "fb_range",         "fb_22k",    "fb_empty"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        cJSON *m = vec_meta(vec, names[i]);
        int64_t n, rows, cols;
        const float *want = vec_get(vec, names[i], &n, &rows, &cols);
        if (!m || !want) continue;
        int n_freqs = (int)meta_num(m, "n_freqs"), n_mels = (int)meta_num(m, "n_mels");
        CHECK(rows == n_freqs && cols == n_mels);
        float *fb = malloc(sizeof(float) * (size_t)n);
        tm_mel_norm norm = !strcmp(meta_str(m, "norm"), "slaney") ? TM_MEL_NORM_SLANEY
                                                                  : TM_MEL_NORM_NONE;
        tm_mel_scale scale = !strcmp(meta_str(m, "mel_scale"), "slaney") ? TM_MEL_SLANEY
                                                                        : TM_MEL_HTK;
        CHECK_OK(tm_mel_filterbank(fb, n_freqs, (float)meta_num(m, "f_min"),
                                   (float)meta_num(m, "f_max"), n_mels,
                                   (int)meta_num(m, "sample_rate"), norm, scale));
        compare(names[i], fb, want, n, FLOOR_REL * max_abs(want, n), RTOL, verbose);
        free(fb);
        cJSON_Delete(m);
    }
    /* Hz <-> mel round trips and known points. */
    CHECK_NEAR(tm_hz_to_mel(1000.0, TM_MEL_SLANEY), 15.0, 1e-12, 0);
    CHECK_NEAR(tm_hz_to_mel(700.0, TM_MEL_HTK), 2595.0 * log10(2.0), 1e-9, 0);
    for (double f = 0; f <= 24000; f += 997) {
        CHECK_NEAR(tm_mel_to_hz(tm_hz_to_mel(f, TM_MEL_HTK), TM_MEL_HTK), f, 1e-6, 1e-12);
        CHECK_NEAR(tm_mel_to_hz(tm_hz_to_mel(f, TM_MEL_SLANEY), TM_MEL_SLANEY), f, 1e-6, 1e-12);
    }
    float fb[4];
    CHECK_STATUS(tm_mel_filterbank(fb, 2, 100, 50, 2, 16000, TM_MEL_NORM_NONE, TM_MEL_HTK),
                 TM_ERR_INVALID);
    CHECK_STATUS(tm_mel_filterbank(NULL, 2, 0, 50, 2, 16000, TM_MEL_NORM_NONE, TM_MEL_HTK),
                 TM_ERR_INVALID);
}

static void test_spectrograms(void)
{
    const char *names[] = {"spec_a", "spec_b", "spec_c", "spec_d", "spec_e", "spec_f"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        cJSON *m = vec_meta(vec, names[i]);
        int64_t n, rows, cols, ns;
        const float *want = vec_get(vec, names[i], &n, &rows, &cols);
        const float *x = vec_get(vec, meta_str(m, "signal"), &ns, NULL, NULL);
        if (!m || !want || !x) continue;
        tm_logmel *lm = NULL;
        CHECK_OK(tm_logmel_new(&lm, base_params(m)));
        if (!lm) continue;
        CHECK(tm_logmel_num_freqs(lm) == rows);
        CHECK(tm_logmel_num_frames(lm, ns) == cols);
        float *got = malloc(sizeof(float) * (size_t)n);
        CHECK_OK(tm_logmel_spectrogram(lm, x, ns, got));
        compare(names[i], got, want, n, FLOOR_REL * max_abs(want, n), RTOL, verbose);
        free(got);
        tm_logmel_free(lm);
        cJSON_Delete(m);
    }
}

static tm_audio_params mel_params(const cJSON *m)
{
    tm_audio_params p = base_params(m);
    p.window = TM_WINDOW_HANN;
    p.pad_mode = TM_STFT_PAD_REFLECT;
    p.center = 1;
    p.n_mels = (int)meta_num(m, "n_mels");
    p.f_min = (float)meta_num(m, "f_min");
    p.f_max = (float)meta_num(m, "f_max");
    p.mel_norm = !strcmp(meta_str(m, "norm"), "slaney") ? TM_MEL_NORM_SLANEY : TM_MEL_NORM_NONE;
    p.mel_scale = !strcmp(meta_str(m, "mel_scale"), "slaney") ? TM_MEL_SLANEY : TM_MEL_HTK;
    const char *log = meta_str(m, "log");
    p.log = !strcmp(log, "db") ? TM_LOG_DB : !strcmp(log, "ln") ? TM_LOG_LN : TM_LOG_NONE;
    p.log_floor = (float)meta_num(m, "log_floor");
    p.top_db = (float)meta_num(m, "top_db");
    return p;
}

static void test_mels(void)
{
    const char *names[] = {"mel_a", "mel_b", "db_a", "db_b", "ln_c"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        cJSON *m = vec_meta(vec, names[i]);
        int64_t n, rows, cols, ns;
        const float *want = vec_get(vec, names[i], &n, &rows, &cols);
        const float *x = vec_get(vec, meta_str(m, "signal"), &ns, NULL, NULL);
        if (!m || !want || !x) continue;
        tm_audio_params p = mel_params(m);
        tm_logmel *lm = NULL;
        CHECK_OK(tm_logmel_new(&lm, p));
        if (!lm) continue;
        CHECK(rows == p.n_mels && tm_logmel_num_frames(lm, ns) == cols);
        float *got = malloc(sizeof(float) * (size_t)n);
        CHECK_OK(tm_logmel_compute(lm, x, ns, got));
        double atol = p.log == TM_LOG_NONE ? FLOOR_REL * max_abs(want, n) : LOG_ATOL;
        compare(names[i], got, want, n, atol, RTOL, verbose);
        if (p.log == TM_LOG_NONE) {
            /* tm_logmel_mel is the same stage. */
            float *mel = malloc(sizeof(float) * (size_t)n);
            CHECK_OK(tm_logmel_mel(lm, x, ns, mel));
            CHECK(memcmp(mel, got, sizeof(float) * (size_t)n) == 0);
            free(mel);
        }
        free(got);
        tm_logmel_free(lm);
        cJSON_Delete(m);
    }
}

static void test_whisper(void)
{
    const char *names[] = {"whisper_pad", "whisper_trim", "whisper_default"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        cJSON *m = vec_meta(vec, names[i]);
        int64_t n, rows, cols, ns;
        const float *want = vec_get(vec, names[i], &n, &rows, &cols);
        const float *x = vec_get(vec, meta_str(m, "signal"), &ns, NULL, NULL);
        if (!m || !want || !x) continue;
        tm_audio_params p = tm_audio_whisper_params((int)meta_num(m, "n_mels"));
        p.target_frames = (int)meta_num(m, "target_frames");
        if (!strcmp(names[i], "whisper_default")) p = tm_audio_default_params();
        tm_logmel *lm = NULL;
        CHECK_OK(tm_logmel_new(&lm, p));
        if (!lm) continue;
        CHECK(rows == p.n_mels && tm_logmel_num_frames(lm, ns) == cols);
        float *got = malloc(sizeof(float) * (size_t)n);
        CHECK_OK(tm_logmel_compute(lm, x, ns, got));
        compare(names[i], got, want, n, LOG_ATOL, RTOL, verbose);
        /* tm_audio_preprocess gives the same numbers. */
        tm_audio *a = NULL;
        tm_tensor *t = NULL;
        CHECK_OK(tm_audio_from_samples(&a, x, ns, 16000));
        CHECK_OK(tm_audio_preprocess(&t, a, p));
        if (t) {
            CHECK(t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols);
            CHECK(memcmp(t->data, got, sizeof(float) * (size_t)n) == 0);
        }
        tm_tensor_free(t);
        tm_audio_free(a);
        free(got);
        tm_logmel_free(lm);
        cJSON_Delete(m);
    }
}

/* A direct DFT in double of the reflect-padded, windowed frames: checks the
 * framing where torch cannot (signals shorter than the padding, where the
 * reflection repeats) and the FFT's accuracy independently of torch. */
static void test_direct_dft(void)
{
    const int n_fft = 16, hop = 4, nf = n_fft / 2 + 1;
    for (int pm = 0; pm < 2; pm++) {
        for (int n = 1; n <= 21; n += 4) {
            float x[32];
            test_fill_uniform(x, n, 77 + n, -1, 1);
            tm_audio_params p = tm_audio_default_params();
            p.n_fft = n_fft;
            p.win_length = 12;
            p.hop = hop;
            p.pad_mode = pm ? TM_STFT_PAD_CONSTANT : TM_STFT_PAD_REFLECT;
            p.log = TM_LOG_NONE;
            p.top_db = 0;
            p.whisper_norm = 0;
            p.target_frames = 0;
            p.n_mels = 4;
            tm_logmel *lm = NULL;
            CHECK_OK(tm_logmel_new(&lm, p));
            int64_t frames = tm_logmel_num_frames(lm, n);
            CHECK(frames == 1 + n / hop);
            float got[9 * 8], want[9 * 8];
            CHECK_OK(tm_logmel_spectrogram(lm, x, n, got));
            for (int64_t t = 0; t < frames; t++) {
                double fr[16];
                for (int j = 0; j < n_fft; j++) {
                    int64_t i = t * hop + j - n_fft / 2;
                    double v;
                    if (i >= 0 && i < n) v = x[i];
                    else if (pm) v = 0;
                    else {
                        /* mirror until inside */
                        while (i < 0 || i >= n) {
                            if (n == 1) { i = 0; break; }
                            if (i < 0) i = -i;
                            if (i >= n) i = 2 * (n - 1) - i;
                        }
                        v = x[i];
                    }
                    int k = j - 2; /* window of 12 centred in 16 */
                    double w = k >= 0 && k < 12 ? 0.5 - 0.5 * cos(2 * M_PI * k / 12) : 0;
                    fr[j] = v * w;
                }
                for (int k = 0; k < nf; k++) {
                    double re = 0, im = 0;
                    for (int j = 0; j < n_fft; j++) {
                        re += fr[j] * cos(2 * M_PI * k * j / n_fft);
                        im -= fr[j] * sin(2 * M_PI * k * j / n_fft);
                    }
                    want[k * frames + t] = (float)(re * re + im * im);
                }
            }
            char what[64];
            snprintf(what, sizeof what, "direct dft n=%d pad=%d", n, pm);
            compare(what, got, want, nf * frames, 1e-6, 1e-4, 0);
            tm_logmel_free(lm);
        }
    }
}

static void test_params(void)
{
    tm_audio_params d = tm_audio_default_params();
    CHECK_OK(tm_audio_params_check(&d));
    CHECK(d.sample_rate == 16000 && d.n_mels == 64 && d.target_frames == 100);
    tm_audio_params w = tm_audio_whisper_params(80);
    CHECK(w.n_mels == 80 && w.target_frames == 3000 && w.n_fft == 400 && w.hop == 160);
#define BAD(field, value)                                                                  \
    do {                                                                                   \
        tm_audio_params p_ = tm_audio_default_params();                                    \
        p_.field = value;                                                                  \
        tm_logmel *lm_ = NULL;                                                             \
        CHECK_STATUS(tm_logmel_new(&lm_, p_), TM_ERR_INVALID);                             \
        CHECK(lm_ == NULL && strstr(tm_last_error(), #field) != NULL);                     \
    } while (0)
    BAD(sample_rate, 0);
    BAD(sample_rate, 800000);
    BAD(n_fft, 1);
    BAD(n_fft, 70000);
    BAD(win_length, 401);
    BAD(win_length, -1);
    BAD(hop, 0);
    BAD(window, (tm_window)7);
    BAD(center, 2);
    BAD(pad_mode, (tm_stft_pad)5);
    BAD(power, 0.0f);
    BAD(power, NAN);
    BAD(n_mels, 0);
    BAD(n_mels, 5000);
    BAD(f_min, -1.0f);
    BAD(f_min, 9000.0f);
    BAD(f_max, INFINITY);
    BAD(mel_scale, (tm_mel_scale)3);
    BAD(mel_norm, (tm_mel_norm)3);
    BAD(log, (tm_log_kind)9);
    BAD(log_floor, 0.0f);
    BAD(top_db, -1.0f);
    BAD(whisper_norm, 3);
    BAD(target_frames, -1);
    BAD(resampler, (tm_resampler)99);
#undef BAD
    tm_audio_params p = tm_audio_default_params();
    p.log = TM_LOG_NONE; /* top_db 8 without a log */
    CHECK_STATUS(tm_audio_params_check(&p), TM_ERR_INVALID);
    tm_logmel_free(NULL);

    /* Too short for a frame without target_frames. */
    p = tm_audio_default_params();
    p.target_frames = 0;
    p.center = 0;
    tm_logmel *lm = NULL;
    CHECK_OK(tm_logmel_new(&lm, p));
    float x[399] = {0}, out[64 * 2];
    CHECK(tm_logmel_num_frames(lm, 399) == 0);
    CHECK(tm_logmel_num_frames(lm, 400) == 1);
    CHECK(tm_logmel_num_frames(lm, 560) == 2);
    CHECK_STATUS(tm_logmel_compute(lm, x, 399, out), TM_ERR_INVALID);
    CHECK_STATUS(tm_logmel_compute(lm, NULL, 10, out), TM_ERR_INVALID);
    CHECK_STATUS(tm_logmel_compute(lm, x, 10, NULL), TM_ERR_INVALID);
    tm_logmel_free(lm);
    p.center = 1;
    CHECK_OK(tm_logmel_new(&lm, p));
    CHECK(tm_logmel_num_frames(lm, 0) == 0 && tm_logmel_num_frames(lm, 1) == 1);
    CHECK(tm_logmel_num_frames(lm, 16000) == 101);
    CHECK_STATUS(tm_logmel_compute(lm, x, 0, out), TM_ERR_INVALID);
    CHECK_OK(tm_logmel_compute(lm, x, 1, out)); /* one frame of a reflected sample */
    tm_logmel_free(lm);
    /* With target frames even zero samples give the fixed shape (silence). */
    p = tm_audio_default_params();
    CHECK_OK(tm_logmel_new(&lm, p));
    float *sil = malloc(sizeof(float) * 64 * 100);
    CHECK_OK(tm_logmel_compute(lm, NULL, 0, sil));
    /* log10(1e-10) = -10 everywhere; the clamp keeps it; (x + 4) / 4. */
    int all = 1;
    for (int i = 0; i < 64 * 100; i++) all &= sil[i] == (-10.0f + 4.0f) / 4.0f;
    CHECK(all);
    free(sil);
    tm_logmel_free(lm);
}

static void test_windows(void)
{
    float w[10];
    tm_audio_window(w, 10, 6, TM_WINDOW_HANN);
    CHECK(w[0] == 0 && w[1] == 0 && w[8] == 0 && w[9] == 0);
    for (int i = 0; i < 6; i++) CHECK_NEAR(w[2 + i], 0.5 - 0.5 * cos(2 * M_PI * i / 6), 1e-7, 0);
    tm_audio_window(w, 10, 10, TM_WINDOW_HAMMING);
    for (int i = 0; i < 10; i++) CHECK_NEAR(w[i], 0.54 - 0.46 * cos(2 * M_PI * i / 10), 1e-7, 0);
    tm_audio_window(w, 9, 4, TM_WINDOW_RECT); /* (9 - 4) / 2 = 2 zeros on the left */
    CHECK(w[1] == 0 && w[2] == 1 && w[5] == 1 && w[6] == 0);
}

/* Pictures: size, orientation, colours. */
static void test_png(void)
{
    char path[256];
    snprintf(path, sizeof path, "/tmp/tm_test_logmel_%d.png", (int)getpid());
    float mel[3 * 4];
    for (int m = 0; m < 3; m++)
        for (int t = 0; t < 4; t++) mel[m * 4 + t] = (float)m; /* bin 0 lowest */
    mel[2 * 4 + 3] = NAN;
    CHECK_OK(tm_logmel_write_png(path, mel, 3, 4, 2));
    int w = 0, h = 0, c = 0;
    unsigned char *img = stbi_load(path, &w, &h, &c, 3);
    CHECK(img != NULL && w == 8 && h == 6);
    if (img) {
        /* Bottom rows: mel bin 0 = the minimum = viridis' dark purple. */
        unsigned char *bottom = img + (size_t)(h - 1) * w * 3;
        CHECK(bottom[0] == 68 && bottom[1] == 1 && bottom[2] == 84);
        /* Top rows: bin 2 = maximum = yellow; the NaN (frame 3) black. */
        CHECK(img[0] == 253 && img[1] == 231 && img[2] == 37);
        unsigned char *nan_px = img + (size_t)(3 * 2) * 3;
        CHECK(nan_px[0] == 0 && nan_px[1] == 0 && nan_px[2] == 0);
        /* Every 2x2 block is one colour. */
        CHECK(memcmp(img, img + 3, 3) == 0 && memcmp(img, img + (size_t)w * 3, 3) == 0);
        stbi_image_free(img);
    }
    unlink(path);
    CHECK_STATUS(tm_logmel_write_png(path, mel, 3, 4, 0), TM_ERR_INVALID);
    CHECK_STATUS(tm_logmel_write_png(path, mel, 0, 4, 1), TM_ERR_INVALID);
    CHECK_STATUS(tm_logmel_write_png(path, mel, 3, 20000, 1), TM_ERR_LIMIT);
    CHECK_STATUS(tm_logmel_write_png("/nonexistent-dir/x.png", mel, 3, 4, 1), TM_ERR_IO);
}

/* Resampling inside preprocess, and the default shape. */
static void test_preprocess(void)
{
    tm_audio *a = NULL;
    CHECK_OK(tm_audio_new(&a, 8000, 8000));
    for (int i = 0; i < 8000; i++) a->samples[i] = 0.5f * (float)sin(2 * M_PI * 440 * i / 8000.0);
    tm_tensor *t = NULL;
    CHECK_OK(tm_audio_preprocess(&t, a, tm_audio_default_params()));
    CHECK(t && t->ndim == 2 && t->shape[0] == 64 && t->shape[1] == 100);
    if (t) {
        /* 440 Hz lands in a low mel bin: the frame's peak row is low. */
        const float *d = t->data;
        int best = 0;
        for (int m = 1; m < 64; m++)
            if (d[m * 100 + 50] > d[best * 100 + 50]) best = m;
        CHECK(best > 2 && best < 20);
    }
    tm_tensor_free(t);
    tm_audio_params p = tm_audio_default_params();
    p.target_frames = 0;
    a->n_samples = 0;
    CHECK_STATUS(tm_audio_preprocess(&t, a, p), TM_ERR_INVALID);
    CHECK(t == NULL);
    tm_audio_free(a);
}

/* The same bits at 1 and 2 threads, on a signal long enough for many tasks. */
static void test_threads(void)
{
    int64_t n = 16000 * 3;
    float *x = malloc(sizeof(float) * (size_t)n);
    test_fill_uniform(x, n, 5, -1, 1);
    tm_audio_params p = tm_audio_default_params();
    p.target_frames = 0;
    tm_logmel *lm = NULL;
    CHECK_OK(tm_logmel_new(&lm, p));
    int64_t frames = tm_logmel_num_frames(lm, n), count = frames * p.n_mels;
    float *a = malloc(sizeof(float) * (size_t)count), *b = malloc(sizeof(float) * (size_t)count);
    int saved = tm_get_num_threads();
    tm_set_num_threads(1);
    CHECK_OK(tm_logmel_compute(lm, x, n, a));
    tm_set_num_threads(2);
    CHECK_OK(tm_logmel_compute(lm, x, n, b));
    tm_set_num_threads(saved);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)count) == 0);
    free(a);
    free(b);
    free(x);
    tm_logmel_free(lm);
}

int main(void)
{
    verbose = getenv("TM_QUIET") == NULL;
    CHECK_OK(tm_safetensors_open(&vec, test_data_path("audio/spectrogram.safetensors")));
    if (!vec) return test_finish("audio_spectrogram");
    test_filterbanks();
    test_spectrograms();
    test_mels();
    test_whisper();
    test_direct_dft();
    test_params();
    test_windows();
    test_png();
    test_preprocess();
    test_threads();
    tm_safetensors_close(vec);
    return test_finish("audio_spectrogram");
}
