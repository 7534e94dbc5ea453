/*
 * trimodal audio: the audio front-end. Decoding (WAV, FLAC, Ogg Vorbis and
 * Opus through libsndfile, from a file or from memory), mono downmix,
 * resampling (libsamplerate), the STFT (FFTW3, single precision), power
 * and magnitude spectrograms, mel filterbanks, log-mel with a floor and a
 * dynamic-range clamp, the Whisper normalisation, a PNG picture of a
 * log-mel, and the audio augmentations (gain, noise at a target SNR, time
 * shift, time stretch and pitch shift, reverberation, SpecAugment masks).
 *
 * The numbers follow torchaudio 0.13, so a model trained on torchaudio's
 * features sees the same input here:
 *  - tm_logmel_spectrogram(): torchaudio.transforms.Spectrogram (normalized
 *    False, onesided) with torch.hann_window(win_length, periodic=True);
 *  - tm_mel_filterbank(): torchaudio.functional.melscale_fbanks;
 *  - tm_logmel_mel(): torchaudio.transforms.MelSpectrogram;
 *  - TM_LOG_DB: torchaudio.transforms.AmplitudeToDB (ref 1), top_db over
 *    the whole (n_mels, frames) output;
 *  - TM_LOG_LOG10 + top_db 8 + whisper_norm: Whisper's log_mel_spectrogram.
 * docs/audio.md gives the formulas, the tolerances measured against
 * torchaudio and every limit.
 *
 * Thread-safety: every function may be called from any thread. A tm_logmel
 * is immutable once made: one may serve many threads at once. A tm_audio
 * must not be modified from two threads at once. The spectrogram functions
 * run on the library's thread pool and give bit-identical results for any
 * thread count; the augmentations are serial (data loaders run one example
 * per worker) and depend only on (seed, example index).
 */
#ifndef TRIMODAL_AUDIO_H
#define TRIMODAL_AUDIO_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------- limits */

/* Sample rates outside [TM_AUDIO_MIN_RATE, TM_AUDIO_MAX_RATE] Hz are
 * refused everywhere (a rate of 0 or below in a file: TM_ERR_FORMAT;
 * otherwise TM_ERR_UNSUPPORTED). */
#define TM_AUDIO_MIN_RATE 1000
#define TM_AUDIO_MAX_RATE 768000
/* The most channels any file may have, whatever max_channels says. */
#define TM_AUDIO_MAX_CHANNELS 1024

/* ------------------------------------------------------------- audio */

/* Mono audio: n_samples floats at sample_rate, nominally in [-1, 1]. The
 * source_* fields describe the file it was decoded from (or repeat
 * n_samples / sample_rate, with channels 1 and format "raw", for audio
 * made in memory). */
typedef struct tm_audio {
    float *samples; /* (n_samples,) owned, freed by tm_audio_free */
    int64_t n_samples;
    int sample_rate;
    int source_rate;
    int source_channels;
    int64_t source_frames;     /* per channel, before resampling */
    const char *source_format; /* static: "wav/pcm16", "flac/pcm24", "ogg/vorbis", ... */
} tm_audio;

/* Frees the samples and the struct. NULL is harmless. */
void tm_audio_free(tm_audio *a);

/* n_samples zeros at sample_rate (n_samples >= 0; the rate in the limits
 * above). TM_ERR_INVALID, TM_ERR_UNSUPPORTED for the rate, TM_ERR_NOMEM. */
tm_status tm_audio_new(tm_audio **out, int64_t n_samples, int sample_rate);

/* A copy of n_samples floats (which may be NULL when n_samples is 0). */
tm_status tm_audio_from_samples(tm_audio **out, const float *samples, int64_t n_samples,
                                int sample_rate);

/* The converters of libsamplerate. */
typedef enum {
    TM_RESAMPLE_SINC_BEST = 0, /* SRC_SINC_BEST_QUALITY: 97 dB SNR, 97% bandwidth */
    TM_RESAMPLE_SINC_MEDIUM,   /* SRC_SINC_MEDIUM_QUALITY: 97 dB SNR, 90% bandwidth */
    TM_RESAMPLE_SINC_FASTEST,  /* SRC_SINC_FASTEST: 97 dB SNR, 80% bandwidth */
    TM_RESAMPLE_ZERO_ORDER_HOLD,
    TM_RESAMPLE_LINEAR,
    TM_RESAMPLE_COUNT
} tm_resampler;

/* The default converter (TM_RESAMPLE_SINC_MEDIUM; docs/audio.md has the
 * measurements behind the choice). */
#define TM_RESAMPLE_DEFAULT TM_RESAMPLE_SINC_MEDIUM

/* Resamples in to sample_rate. The output has ceil(n * sample_rate /
 * in->sample_rate) samples (as torchaudio.functional.resample), aligned in
 * time with the input (sample i of the output is at time i / sample_rate).
 * When the rates are equal the output is a copy. TM_ERR_INVALID (NULL,
 * converter), TM_ERR_UNSUPPORTED (a rate outside the limits, or a ratio
 * outside libsamplerate's [1/256, 256]), TM_ERR_LIMIT (an input over 2^40
 * samples), TM_ERR_NOMEM. */
tm_status tm_audio_resample(tm_audio **out, const tm_audio *in, int sample_rate,
                            tm_resampler converter);

/* ------------------------------------------------------------- decoding */

/* What tm_audio_load_* accept and produce, from tm_audio_load_default_params(). */
typedef struct {
    int sample_rate;        /* resample to this rate; 0 keeps the file's rate. 16000 */
    tm_resampler resampler; /* TM_RESAMPLE_DEFAULT */
    double max_seconds;     /* longest file accepted (frames / rate); 3600 */
    int64_t max_samples;    /* most samples (frames x channels) decoded; 2^28 */
    int max_channels;       /* most channels accepted; 64 (at most TM_AUDIO_MAX_CHANNELS) */
} tm_audio_load_params;

tm_audio_load_params tm_audio_load_default_params(void);

/* Decodes an audio file into mono at params.sample_rate: WAV (RIFF, RF64;
 * PCM 8/16/24/32-bit, float, double, u-law, A-law), FLAC and Ogg (Vorbis,
 * Opus). Integer samples are scaled by 1/2^(bits-1) (as torchaudio.load);
 * channels are averaged (mono downmix); then resampled when the rate
 * differs. The kind is recognised from the first bytes, not the name.
 * Fails with
 *  - TM_ERR_IO: the file cannot be opened or read;
 *  - TM_ERR_UNSUPPORTED: not one of the formats above (MP3, AIFF, text,
 *    an Ogg stream of another codec, ...), an encoding not listed, a
 *    sample rate outside the limits;
 *  - TM_ERR_FORMAT: a corrupt or truncated file (a WAV data chunk longer
 *    than the file, Ogg header packets cut short or in a page that fails
 *    its checksum, a FLAC stream that ends before its declared length, a
 *    decoder error), a rate or channel count of 0, a NaN or infinite
 *    sample;
 *  - TM_ERR_INVALID: a file with no samples (zero-length audio), bad
 *    params;
 *  - TM_ERR_LIMIT: longer than max_seconds, more than max_samples, more
 *    channels than max_channels;
 *  - TM_ERR_NOMEM.
 * Messages name the file. *out is NULL on failure. */
tm_status tm_audio_load_file(tm_audio **out, const char *path, tm_audio_load_params params);

/* The same over bytes in memory (libsndfile's virtual I/O; the bytes are
 * not copied and only read during the call). Messages name "<memory>". */
tm_status tm_audio_load_memory(tm_audio **out, const void *data, size_t size,
                               tm_audio_load_params params);

/* --------------------------------------------------------- spectrograms */

typedef enum {
    TM_WINDOW_HANN = 0, /* 0.5 - 0.5 cos(2 pi n / N), periodic (torch.hann_window) */
    TM_WINDOW_HAMMING,  /* 0.54 - 0.46 cos(2 pi n / N), periodic */
    TM_WINDOW_RECT,     /* ones */
    TM_WINDOW_COUNT
} tm_window;

typedef enum {
    TM_STFT_PAD_REFLECT = 0, /* x[-k] = x[k] (no edge repeat), as torch.stft */
    TM_STFT_PAD_CONSTANT,    /* zeros */
    TM_STFT_PAD_COUNT
} tm_stft_pad;

typedef enum { TM_MEL_HTK = 0, TM_MEL_SLANEY, TM_MEL_SCALE_COUNT } tm_mel_scale;
typedef enum { TM_MEL_NORM_NONE = 0, TM_MEL_NORM_SLANEY, TM_MEL_NORM_COUNT } tm_mel_norm;

typedef enum {
    TM_LOG_NONE = 0, /* the mel spectrogram itself */
    TM_LOG_LN,       /* ln(max(x, log_floor)) */
    TM_LOG_LOG10,    /* log10(max(x, log_floor)) */
    TM_LOG_DB,       /* (20 / power) log10(max(x, log_floor)): 10 for power, 20 for magnitude */
    TM_LOG_COUNT
} tm_log_kind;

/* How audio becomes a (n_mels, frames) log-mel, from
 * tm_audio_default_params(). New fields are added at the end. */
typedef struct {
    int sample_rate;       /* the model's rate, Hz; 16000 */
    int n_fft;             /* FFT size, 2..65536; 400 */
    int win_length;        /* 1..n_fft, 0 means n_fft; the window is zero-padded centred */
    int hop;               /* >= 1; 160 */
    tm_window window;      /* TM_WINDOW_HANN */
    int center;            /* pad n_fft / 2 on both sides first; 1 */
    tm_stft_pad pad_mode;  /* used when center; TM_STFT_PAD_REFLECT */
    float power;           /* |X|^power: 2 power, 1 magnitude, any > 0; 2 */
    int n_mels;            /* 1..4096; 64 (bench-small) */
    float f_min;           /* Hz, >= 0; 0 */
    float f_max;           /* Hz, > f_min; 0 means float(sample_rate / 2) (integer division) */
    tm_mel_scale mel_scale; /* TM_MEL_SLANEY (Whisper's) */
    tm_mel_norm mel_norm;   /* TM_MEL_NORM_SLANEY (Whisper's) */
    tm_log_kind log;        /* TM_LOG_LOG10 */
    float log_floor;        /* > 0: the amin of the log; 1e-10 */
    float top_db;           /* > 0: clamp to max - top_db, in the log's units (dB for
                               TM_LOG_DB, decades for LOG10, nepers for LN); 0 off; 8 */
    int whisper_norm;       /* 1: finally x = (x + 4) / 4, Whisper's scaling; 1 */
    int target_frames;      /* > 0: pad or trim to exactly this many frames; 0: all; 100 */
    tm_resampler resampler; /* used by tm_audio_preprocess when rates differ */
} tm_audio_params;

/* The defaults listed above: Whisper's recipe (n_fft 400, hop 160, Slaney
 * mel scale and norm, log10 floored at 1e-10, clamp to max - 8, (x + 4) / 4)
 * with bench-small's 64 mel bins and 100 frames at 16 kHz. */
tm_audio_params tm_audio_default_params(void);

/* Whisper's exact front-end for n_mels (80 or 128): the defaults above with
 * n_mels and target_frames 3000 (30 s). */
tm_audio_params tm_audio_whisper_params(int n_mels);

/* Checks every field; TM_ERR_INVALID naming the first bad one. */
tm_status tm_audio_params_check(const tm_audio_params *p);

/* The mel scale: HTK 2595 log10(1 + f / 700); Slaney linear below 1 kHz
 * (f / (200 / 3)), logarithmic above (15 + ln(f / 1000) / (ln 6.4 / 27)). */
double tm_hz_to_mel(double hz, tm_mel_scale scale);
double tm_mel_to_hz(double mel, tm_mel_scale scale);

/* A triangular mel filterbank as torchaudio.functional.melscale_fbanks
 * (n_freqs, f_min, f_max, n_mels, sample_rate, norm, mel_scale): fb is
 * (n_freqs, n_mels), row k for the frequency k * (sample_rate / 2) /
 * (n_freqs - 1) (integer sample_rate / 2, as torchaudio). Computed in f32
 * with torchaudio's operations in its order, so the values agree to a few
 * ulps. TM_ERR_INVALID on bad sizes or frequencies. */
tm_status tm_mel_filterbank(float *fb, int n_freqs, float f_min, float f_max, int n_mels,
                            int sample_rate, tm_mel_norm norm, tm_mel_scale scale);

/* A log-mel front-end made once from params: the window, the filterbank
 * and the FFTW plan. Immutable, shareable between threads. */
typedef struct tm_logmel tm_logmel;

/* TM_ERR_INVALID on bad params (tm_audio_params_check), TM_ERR_NOMEM, or
 * TM_ERR_INTERNAL if FFTW cannot plan. FFTW's planner is not thread-safe:
 * trimodal plans under a process-wide lock and keeps one plan per
 * transform size for the life of the process, so making a tm_logmel again
 * is cheap; an application that calls FFTW's planner itself from other
 * threads at the same time must serialise with care. */
tm_status tm_logmel_new(tm_logmel **out, tm_audio_params params);
void tm_logmel_free(tm_logmel *lm); /* NULL is harmless */

/* The params lm was made from (the defaults when lm is NULL). */
tm_audio_params tm_logmel_params(const tm_logmel *lm);

/* Rows of a spectrogram: n_fft / 2 + 1 (0 when lm is NULL). */
int tm_logmel_num_freqs(const tm_logmel *lm);

/* The filterbank, (n_freqs, n_mels), owned by lm and valid until
 * tm_logmel_free (NULL when lm is NULL). Models that store their own
 * filterbank (Whisper's) can compare it with this one. */
const float *tm_logmel_filterbank(const tm_logmel *lm);

/* Frames for n_samples of audio: target_frames when set; else
 * 1 + n / hop with center (1 + (n + 2 (n_fft / 2) - n_fft) / hop when n_fft
 * is odd), 1 + (n - n_fft) / hop without (0 when n < n_fft). */
int64_t tm_logmel_num_frames(const tm_logmel *lm, int64_t n_samples);

/* With target_frames T > 0, the audio is first zero-padded or trimmed to
 * T * hop samples (center) or (T - 1) * hop + n_fft (not center), and the
 * first T frames are kept: for Whisper (T = 3000) this is pad_or_trim to
 * 30 s followed by dropping the STFT's last frame. */

/* |STFT|^power, (n_freqs, frames) row-major, frames =
 * tm_logmel_num_frames(lm, n). TM_ERR_INVALID when there are no frames (a
 * signal shorter than n_fft without center, or n == 0 without target
 * frames) or a NULL buffer. */
tm_status tm_logmel_spectrogram(const tm_logmel *lm, const float *x, int64_t n, float *out);

/* The mel spectrogram before the log: (n_mels, frames) = fb^T spectrogram. */
tm_status tm_logmel_mel(const tm_logmel *lm, const float *x, int64_t n, float *out);

/* The whole pipeline: mel, then the log, the top_db clamp (over the whole
 * output) and the Whisper scaling as params say; (n_mels, frames). */
tm_status tm_logmel_compute(const tm_logmel *lm, const float *x, int64_t n, float *out);

/* From decoded audio to what the model sees: resamples to params.sample_rate
 * when the rates differ (with params.resampler), then tm_logmel_compute
 * into a new contiguous f32 tensor of shape (n_mels, frames). Makes its
 * own tm_logmel; keep one with tm_logmel_new when calling this in a loop. */
tm_status tm_audio_preprocess(tm_tensor **out, const tm_audio *audio, tm_audio_params params);

/* Writes a log-mel (n_mels, frames), row m being mel bin m, as an RGB PNG:
 * low frequencies at the bottom, time left to right, each value one
 * scale x scale block (scale 1..64), coloured by viridis from the minimum
 * (dark blue) to the maximum (yellow) of the finite values; NaN and
 * infinities are black. TM_ERR_INVALID (sizes, scale), TM_ERR_LIMIT (a
 * picture over 16384 pixels a side), TM_ERR_IO, TM_ERR_NOMEM. */
tm_status tm_logmel_write_png(const char *path, const float *mel, int n_mels, int64_t frames,
                              int scale);

/* ------------------------------------------------------- augmentations */

/* The building blocks, deterministic given their arguments. Buffers are
 * (n,) mono samples. */

/* x *= 10^(db / 20). */
tm_status tm_audio_gain(float *x, int64_t n, float db);

/* Adds white Gaussian noise scaled so that 10 log10(sum x^2 / sum noise^2)
 * is snr_db exactly (up to rounding): noise[i] = s * N(seed, stream, i)
 * with tm_rng_normal_at. *achieved_db (may be NULL) gets the SNR measured
 * afterwards, in double. A silent x (sum x^2 == 0) is left unchanged and
 * the SNR reported is +inf. */
tm_status tm_audio_add_noise(float *x, int64_t n, float snr_db, uint64_t seed, uint64_t stream,
                             double *achieved_db);

/* The same with a given noise recording, read from noise[offset] onwards
 * and looped; n_noise > 0 and its power must not be 0 (TM_ERR_INVALID). */
tm_status tm_audio_mix_noise(float *x, int64_t n, const float *noise, int64_t n_noise,
                             int64_t offset, float snr_db, double *achieved_db);

/* Shifts by `shift` samples in place: y[i] = x[i - shift]; positive delays.
 * Samples shifted in are 0, or, with wrap, those shifted out (a roll). */
tm_status tm_audio_shift(float *x, int64_t n, int64_t shift, int wrap);

/* Linear convolution with an impulse response, truncated to the input's
 * length: y[i] = sum_k ir[k] x[i - k], then y = (1 - wet) x + wet y.
 * FFT overlap-add with FFTW (blocks of a power of two at least 4 n_ir);
 * out may equal x. */
tm_status tm_audio_convolve(float *out, const float *x, int64_t n, const float *ir, int64_t n_ir,
                            float wet);

/* A synthetic room impulse response of n_ir samples: ir[0] = 1 (the direct
 * sound), then Gaussian noise under an exponential decay of 60 dB over
 * rt60 seconds, ir[i] = g N(seed, stream, i) 10^(-3 i / (rt60 rate)), with
 * g so that the tail holds as much energy as the direct sound. */
tm_status tm_audio_synth_ir(float *ir, int64_t n_ir, int sample_rate, float rt60,
                            uint64_t seed, uint64_t stream);

/* Time stretch by a phase vocoder (torchaudio.functional.phase_vocoder's
 * algorithm on an STFT with n_fft 512, hop 128, Hann window, then the
 * inverse STFT): rate > 1 is faster. The output has round(n / rate)
 * samples at in's rate; rate in [0.25, 4]. The pitch stays. */
tm_status tm_audio_time_stretch(tm_audio **out, const tm_audio *in, float rate);

/* Pitch shift by semitones in [-24, 24], keeping the length: time stretch
 * by 2^(-semitones / 12), then resample by the same factor with
 * libsamplerate (as torchaudio.functional.pitch_shift and librosa). */
tm_status tm_audio_pitch_shift(tm_audio **out, const tm_audio *in, float semitones,
                               tm_resampler converter);

/* Random augmentation of one example. Each step runs with its probability
 * p_* and draws its amounts uniformly from its [min, max]. Order: time
 * stretch, pitch shift, time shift, reverberation, gain, noise (last, so
 * the SNR is that of the final signal). Everything depends only on (seed,
 * index): uniforms come from tm_rng_uniform_at(seed, index * 16 + step, k). */
typedef struct {
    float p_stretch, stretch_min, stretch_max;  /* rate; 0.9 .. 1.1 */
    float p_pitch, pitch_min, pitch_max;        /* semitones; -2 .. 2 */
    float p_shift, shift_max_s;                 /* |shift| <= 0.1 s, zeros in */
    int shift_wrap;                             /* roll instead */
    float p_reverb, rt60_min, rt60_max, reverb_wet; /* 0.2 .. 0.6 s, wet 0.5 */
    const float *ir;   /* a recorded impulse response, or NULL for synthetic ones */
    int64_t n_ir;
    float p_gain, gain_min_db, gain_max_db;     /* -6 .. 6 dB */
    float p_noise, snr_min_db, snr_max_db;      /* 10 .. 40 dB */
    const float *noise; /* a noise recording (looped from a random offset), or NULL: white */
    int64_t n_noise;
    tm_resampler resampler; /* for pitch shift */
} tm_audio_aug_params;

/* Every probability 0 (nothing happens) and the ranges above. */
tm_audio_aug_params tm_audio_aug_default_params(void);

/* What tm_audio_augment did (0 / unchanged for steps not applied). */
typedef struct {
    int stretched, pitched, shifted, reverbed, gained, noised;
    float stretch_rate, pitch_semitones, gain_db, snr_db, rt60;
    int64_t shift;      /* samples */
    double achieved_snr_db;
} tm_audio_aug_record;

/* Makes an augmented copy of in (the length changes only with time
 * stretch). rec may be NULL. TM_ERR_INVALID on bad params. */
tm_status tm_audio_augment(tm_audio **out, const tm_audio *in, tm_audio_aug_params params,
                           uint64_t seed, uint64_t index, tm_audio_aug_record *rec);

/* SpecAugment on a log-mel (n_mels, frames), in place. For each of
 * n_freq_masks: width w = floor(u * (freq_param + 1)) clipped to n_mels,
 * start = floor(u' * (n_mels - w + 1)); rows [start, start + w) are set to
 * the fill value. The same across frames for n_time_masks with time_param,
 * the width further capped at floor(time_max_frac * frames). The fill is
 * the mean of the input log-mel when fill_mean, else fill_value. */
typedef struct {
    int n_freq_masks, freq_param; /* 2, 8 */
    int n_time_masks, time_param; /* 2, 10 */
    float time_max_frac;          /* in (0, 1]; 1 */
    int fill_mean;                /* 1 */
    float fill_value;             /* 0 */
} tm_specaug_params;

tm_specaug_params tm_specaug_default_params(void);

#define TM_SPECAUG_MAX_MASKS 16
/* The masked spans, [start, end), in the order drawn; empty ones have
 * start == end. Joint augmentations use the time spans to silence the
 * matching words. */
typedef struct {
    int n_freq, n_time;
    int freq_start[TM_SPECAUG_MAX_MASKS], freq_end[TM_SPECAUG_MAX_MASKS];
    int time_start[TM_SPECAUG_MAX_MASKS], time_end[TM_SPECAUG_MAX_MASKS];
    float fill;
} tm_specaug_spans;

/* Uniforms come from tm_rng_uniform_at(seed, index * 16 + 15, k): frequency
 * mask i uses k = 2i, 2i + 1; time mask j uses k = 64 + 2j, 64 + 2j + 1.
 * TM_ERR_INVALID on bad sizes or more than TM_SPECAUG_MAX_MASKS masks.
 * spans may be NULL. */
tm_status tm_specaug(float *mel, int n_mels, int64_t frames, tm_specaug_params params,
                     uint64_t seed, uint64_t index, tm_specaug_spans *spans);

#ifdef __cplusplus
}
#endif
#endif
