/* Shared inside the audio layer: FFTW plans made under one lock, the
 * resampler on raw buffers, and the STFT / inverse STFT the phase vocoder
 * uses. Nothing here is public. */
#ifndef TM_AUDIO_INTERNAL_H
#define TM_AUDIO_INTERNAL_H

#include <fftw3.h>

#include "trimodal/audio.h"

/* FFTW's planner (and plan destruction) is not thread-safe, while executing
 * a plan with the new-array functions is: every plan of the library comes
 * from these, under one process-wide lock, and is kept for reuse (one per
 * size and direction, up to a bound; fft.c). Plans use FFTW_ESTIMATE so
 * that the algorithm, and so every rounding, is the same in every process
 * (FFTW_MEASURE could pick another plan next run). Buffers given to the
 * execute functions must come from fftwf_malloc (the alignment the plan was
 * made for). NULL when FFTW cannot plan. tm_audio_plan_free releases a plan
 * (destroying it only when it is not kept). */
fftwf_plan tm_audio_plan_r2c(int n);
fftwf_plan tm_audio_plan_c2r(int n);
void tm_audio_plan_free(fftwf_plan plan); /* NULL is harmless */

/* Resamples x (n samples) by ratio = output rate / input rate into a new
 * tm_alloc'd buffer of exactly n_out samples (zero-padded if libsamplerate
 * made fewer). The caller checks the ratio against [1/256, 256]. */
tm_status tm_audio_resample_buf(float **out, int64_t n_out, const float *x, int64_t n,
                                double ratio, tm_resampler converter);

/* The window of length win_length (periodic), zero-padded centred into
 * n_fft values, as torch.stft does. */
void tm_audio_window(float *w, int n_fft, int win_length, tm_window kind);

/* A complex STFT with torch.stft's framing (center, reflect padding, one
 * window of n_fft, hop): spec is (frames, n_fft / 2 + 1) interleaved
 * (re, im), frame-major. *frames = 1 + n / hop. */
tm_status tm_audio_stft_complex(float **spec, int64_t *frames, const float *x, int64_t n,
                                int n_fft, int hop);

/* torch.istft with center=True: overlap-add of the inverse transforms times
 * the window, divided by the summed squared window, trimmed by n_fft / 2 and
 * cut or zero-padded to length. */
tm_status tm_audio_istft(float *y, int64_t length, const float *spec, int64_t frames, int n_fft,
                         int hop);

/* Reflect index (x[-k] = x[k], x[n - 1 + k] = x[n - 1 - k]), repeated for
 * indices further than one length away; n >= 1. */
static inline int64_t tm_audio_reflect(int64_t i, int64_t n)
{
    if (n == 1) return 0;
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

#endif
