/* Log-mel of one hour of 16 kHz audio with the default front-end (Whisper's
 * recipe at bench-small's 64 mel bins: n_fft 400, hop 160, Hann, reflect
 * padding, Slaney mel, log10, clamp to max - 8, (x + 4) / 4), without
 * target_frames, so 360,001 frames. The goal is under 5 s on one core. The
 * PyTorch side is scripts/bench_logmel_torch.py (torchaudio's
 * MelSpectrogram and the same log steps on the same signal);
 * run_logmel.sh runs both and prints the ratio.
 *
 * The signal is x[i] = 0.5 sin(0.1234567 i) + 0.25 sin(1.7654321 i) + 0.05
 * sin(0.0007 i^2 mod 2 pi), computed in double and rounded to float, which
 * the Python script computes the same way.
 *
 * With --resample, also times each libsamplerate converter on 60 s of
 * 44.1 kHz tones to 16 kHz and measures the SNR against the ideal signal
 * (the figures behind the default converter, docs/audio.md).
 *
 * Usage: bench_logmel [--threads 1,2] [--seconds S] [--reps N] [--resample]
 * Output: one JSON object per line on stdout, progress on stderr. "ms" is
 * the median repetition, "best_ms" the fastest. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/audio.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static void fill_signal(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double d = (double)i;
        double chirp = fmod(0.0007 * d * d, 2 * M_PI);
        x[i] = (float)(0.5 * sin(0.1234567 * d) + 0.25 * sin(1.7654321 * d) + 0.05 * sin(chirp));
    }
}

static void tones(float *x, int64_t n, int sr)
{
    const double f[3] = {440.0, 1250.0, 3000.0};
    for (int64_t i = 0; i < n; i++) {
        double t = (double)i / sr, v = 0;
        for (int k = 0; k < 3; k++) v += 0.4 / (k + 1) * sin(2 * M_PI * f[k] * t);
        x[i] = (float)v;
    }
}

static void bench_resample(int reps)
{
    const char *names[3] = {"sinc_best", "sinc_medium", "sinc_fastest"};
    const int sr = 44100;
    const int64_t n = (int64_t)sr * 60;
    tm_audio *in = NULL;
    if (tm_audio_new(&in, n, sr) != TM_OK) exit(1);
    tones(in->samples, n, sr);
    for (int c = 0; c < 3; c++) {
        double *t = malloc(sizeof(double) * (size_t)reps);
        tm_audio *out = NULL;
        for (int r = 0; r < reps; r++) {
            tm_audio_free(out);
            out = NULL;
            double t0 = tm_time_s();
            if (tm_audio_resample(&out, in, 16000, (tm_resampler)c) != TM_OK) {
                fprintf(stderr, "bench_logmel: %s\n", tm_last_error());
                exit(1);
            }
            t[r] = (tm_time_s() - t0) * 1e3;
        }
        float *ideal = malloc(sizeof(float) * (size_t)out->n_samples);
        tones(ideal, out->n_samples, 16000);
        double se = 0, sn = 0;
        for (int64_t i = 800; i < out->n_samples - 800; i++) {
            double d = (double)out->samples[i] - ideal[i];
            se += (double)ideal[i] * ideal[i];
            sn += d * d;
        }
        double ms = median(t, reps);
        printf("{\"bench\": \"resample\", \"converter\": \"%s\", \"from_hz\": %d, \"to_hz\": "
               "16000, \"audio_s\": 60, \"ms\": %.1f, \"x_realtime\": %.0f, \"snr_db\": %.1f}\n",
               names[c], sr, ms, 60e3 / ms, 10 * log10(se / sn));
        fflush(stdout);
        free(ideal);
        free(t);
        tm_audio_free(out);
    }
    tm_audio_free(in);
}

int main(int argc, char **argv)
{
    const char *threads = "1";
    double seconds = 3600;
    int reps = 3, resample = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = argv[++i];
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--resample")) {
            resample = 1;
        } else {
            fprintf(stderr, "usage: %s [--threads 1,2] [--seconds S] [--reps N] [--resample]\n",
                    argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 100) reps = 3;
    if (!(seconds >= 1 && seconds <= 4 * 3600)) seconds = 3600;

    tm_audio_params p = tm_audio_default_params();
    p.target_frames = 0;
    tm_logmel *lm = NULL;
    if (tm_logmel_new(&lm, p) != TM_OK) {
        fprintf(stderr, "bench_logmel: %s\n", tm_last_error());
        return 1;
    }
    int64_t n = (int64_t)(seconds * p.sample_rate);
    int64_t frames = tm_logmel_num_frames(lm, n);
    float *x = tm_alloc(sizeof(float) * (size_t)n);
    float *out = tm_alloc(sizeof(float) * (size_t)frames * (size_t)p.n_mels);
    if (!x || !out) {
        fprintf(stderr, "bench_logmel: out of memory\n");
        return 1;
    }
    fill_signal(x, n);
    double *t = malloc(sizeof(double) * (size_t)reps);
    char list[64];
    snprintf(list, sizeof list, "%s", threads);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int nt = atoi(tok);
        if (tm_set_num_threads(nt) != TM_OK) continue;
        fprintf(stderr, "bench_logmel: %.0f s of audio, %d thread(s), %d reps\n", seconds, nt,
                reps);
        for (int r = 0; r < reps; r++) {
            double t0 = tm_time_s();
            if (tm_logmel_compute(lm, x, n, out) != TM_OK) {
                fprintf(stderr, "bench_logmel: %s\n", tm_last_error());
                return 1;
            }
            t[r] = (tm_time_s() - t0) * 1e3;
        }
        double best = t[0];
        for (int r = 1; r < reps; r++)
            if (t[r] < best) best = t[r];
        double ms = median(t, reps);
        double sum = 0;
        for (int64_t i = 0; i < frames * p.n_mels; i += 9973) sum += out[i];
        printf("{\"bench\": \"logmel\", \"threads\": %d, \"audio_s\": %.0f, \"sample_rate\": %d, "
               "\"n_fft\": %d, \"hop\": %d, \"n_mels\": %d, \"frames\": %lld, \"ms\": %.1f, "
               "\"best_ms\": %.1f, \"x_realtime\": %.0f, \"checksum\": %.6g}\n",
               nt, seconds, p.sample_rate, p.n_fft, p.hop, p.n_mels, (long long)frames, ms, best,
               seconds * 1e3 / ms, sum);
        fflush(stdout);
    }
    free(t);
    tm_free(x);
    tm_free(out);
    tm_logmel_free(lm);
    if (resample) bench_resample(reps);
    return 0;
}
