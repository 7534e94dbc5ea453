/* STFT, power spectrogram, mel filterbank, log-mel and the Whisper
 * normalisation; tm_audio_preprocess.
 *
 * A tm_logmel holds what does not depend on the audio: the window
 * (zero-padded centred to n_fft), the filterbank and one FFTW plan. The
 * frames are cut into fixed chunks of FRAME_CHUNK frames, one task each on
 * the thread pool; a frame's numbers never depend on another's, so the
 * output is bit-identical for any thread count. The only reduction (the
 * maximum for top_db) is exact in any order. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "audio/audio_internal.h"

#define FRAME_CHUNK 64

struct tm_logmel {
    tm_audio_params p;
    int n_fft, win_length, hop, n_freqs, pad;
    int win_lo, win_hi; /* the window's nonzero span in the frame */
    float *window;      /* (n_fft,) */
    float *fb;          /* (n_freqs, n_mels), torchaudio's layout */
    float *fbt;         /* (n_mels, n_freqs), the same transposed */
    int *mel_lo, *mel_hi; /* (n_mels,) nonzero span of each filter in fbt */
    fftwf_plan plan;
};

/* ------------------------------------------------------------ params */

tm_audio_params tm_audio_default_params(void)
{
    tm_audio_params p;
    memset(&p, 0, sizeof p);
    p.sample_rate = 16000;
    p.n_fft = 400;
    p.win_length = 0;
    p.hop = 160;
    p.window = TM_WINDOW_HANN;
    p.center = 1;
    p.pad_mode = TM_STFT_PAD_REFLECT;
    p.power = 2.0f;
    p.n_mels = 64;
    p.f_min = 0.0f;
    p.f_max = 0.0f;
    p.mel_scale = TM_MEL_SLANEY;
    p.mel_norm = TM_MEL_NORM_SLANEY;
    p.log = TM_LOG_LOG10;
    p.log_floor = 1e-10f;
    p.top_db = 8.0f;
    p.whisper_norm = 1;
    p.target_frames = 100;
    p.resampler = TM_RESAMPLE_DEFAULT;
    return p;
}

tm_audio_params tm_audio_whisper_params(int n_mels)
{
    tm_audio_params p = tm_audio_default_params();
    p.n_mels = n_mels;
    p.target_frames = 3000;
    return p;
}

static float effective_f_max(const tm_audio_params *p)
{
    return p->f_max > 0 ? p->f_max : (float)(p->sample_rate / 2);
}

tm_status tm_audio_params_check(const tm_audio_params *p)
{
    if (!p) return tm_fail(TM_ERR_INVALID, "audio params: NULL");
    if (p->sample_rate < TM_AUDIO_MIN_RATE || p->sample_rate > TM_AUDIO_MAX_RATE)
        return tm_fail(TM_ERR_INVALID, "audio params: sample_rate %d outside [%d, %d]",
                       p->sample_rate, TM_AUDIO_MIN_RATE, TM_AUDIO_MAX_RATE);
    if (p->n_fft < 2 || p->n_fft > 65536)
        return tm_fail(TM_ERR_INVALID, "audio params: n_fft %d outside [2, 65536]", p->n_fft);
    if (p->win_length < 0 || p->win_length > p->n_fft)
        return tm_fail(TM_ERR_INVALID, "audio params: win_length %d outside [0, n_fft %d]",
                       p->win_length, p->n_fft);
    if (p->hop < 1 || p->hop > (1 << 20))
        return tm_fail(TM_ERR_INVALID, "audio params: hop %d outside [1, 2^20]", p->hop);
    if ((unsigned)p->window >= TM_WINDOW_COUNT)
        return tm_fail(TM_ERR_INVALID, "audio params: unknown window %d", (int)p->window);
    if (p->center != 0 && p->center != 1)
        return tm_fail(TM_ERR_INVALID, "audio params: center must be 0 or 1");
    if ((unsigned)p->pad_mode >= TM_STFT_PAD_COUNT)
        return tm_fail(TM_ERR_INVALID, "audio params: unknown pad_mode %d", (int)p->pad_mode);
    if (!(p->power > 0 && p->power <= 16))
        return tm_fail(TM_ERR_INVALID, "audio params: power %g outside (0, 16]", (double)p->power);
    if (p->n_mels < 1 || p->n_mels > 4096)
        return tm_fail(TM_ERR_INVALID, "audio params: n_mels %d outside [1, 4096]", p->n_mels);
    if (!(p->f_min >= 0 && isfinite(p->f_min)))
        return tm_fail(TM_ERR_INVALID, "audio params: f_min %g must be finite and >= 0",
                       (double)p->f_min);
    if (!(p->f_max >= 0 && isfinite(p->f_max)))
        return tm_fail(TM_ERR_INVALID, "audio params: f_max %g must be finite and >= 0 (0: sample_rate / 2)",
                       (double)p->f_max);
    if (!(effective_f_max(p) > p->f_min))
        return tm_fail(TM_ERR_INVALID, "audio params: f_max %g must be above f_min %g",
                       (double)effective_f_max(p), (double)p->f_min);
    if ((unsigned)p->mel_scale >= TM_MEL_SCALE_COUNT)
        return tm_fail(TM_ERR_INVALID, "audio params: unknown mel_scale %d", (int)p->mel_scale);
    if ((unsigned)p->mel_norm >= TM_MEL_NORM_COUNT)
        return tm_fail(TM_ERR_INVALID, "audio params: unknown mel_norm %d", (int)p->mel_norm);
    if ((unsigned)p->log >= TM_LOG_COUNT)
        return tm_fail(TM_ERR_INVALID, "audio params: unknown log %d", (int)p->log);
    if (p->log != TM_LOG_NONE && !(p->log_floor > 0 && isfinite(p->log_floor)))
        return tm_fail(TM_ERR_INVALID, "audio params: log_floor %g must be finite and > 0",
                       (double)p->log_floor);
    if (!(p->top_db >= 0 && isfinite(p->top_db)))
        return tm_fail(TM_ERR_INVALID, "audio params: top_db %g must be finite and >= 0",
                       (double)p->top_db);
    if (p->top_db > 0 && p->log == TM_LOG_NONE)
        return tm_fail(TM_ERR_INVALID, "audio params: top_db needs a log (log is none)");
    if (p->whisper_norm != 0 && p->whisper_norm != 1)
        return tm_fail(TM_ERR_INVALID, "audio params: whisper_norm must be 0 or 1");
    if (p->target_frames < 0 || p->target_frames > (1 << 24))
        return tm_fail(TM_ERR_INVALID, "audio params: target_frames %d outside [0, 2^24]",
                       p->target_frames);
    if ((unsigned)p->resampler >= TM_RESAMPLE_COUNT)
        return tm_fail(TM_ERR_INVALID, "audio params: unknown resampler %d", (int)p->resampler);
    return TM_OK;
}

/* ------------------------------------------------------------ window */

void tm_audio_window(float *w, int n_fft, int win_length, tm_window kind)
{
    int lo = (n_fft - win_length) / 2;
    for (int i = 0; i < n_fft; i++) w[i] = 0.0f;
    for (int i = 0; i < win_length; i++) {
        double c = cos(2.0 * M_PI * i / win_length);
        double v = kind == TM_WINDOW_HANN ? 0.5 - 0.5 * c
                   : kind == TM_WINDOW_HAMMING ? 0.54 - 0.46 * c
                                               : 1.0;
        w[lo + i] = (float)v;
    }
}

/* -------------------------------------------------------- mel scale */

#define SLANEY_F_SP (200.0 / 3.0)
#define SLANEY_MIN_LOG_HZ 1000.0
#define SLANEY_MIN_LOG_MEL 15.0

static double slaney_logstep(void) { return log(6.4) / 27.0; }

double tm_hz_to_mel(double hz, tm_mel_scale scale)
{
    if (scale == TM_MEL_HTK) return 2595.0 * log10(1.0 + hz / 700.0);
    double mel = hz / SLANEY_F_SP;
    if (hz >= SLANEY_MIN_LOG_HZ)
        mel = SLANEY_MIN_LOG_HZ / SLANEY_F_SP + log(hz / SLANEY_MIN_LOG_HZ) / slaney_logstep();
    return mel;
}

double tm_mel_to_hz(double mel, tm_mel_scale scale)
{
    if (scale == TM_MEL_HTK) return 700.0 * (pow(10.0, mel / 2595.0) - 1.0);
    if (mel >= SLANEY_MIN_LOG_MEL)
        return SLANEY_MIN_LOG_HZ * exp(slaney_logstep() * (mel - SLANEY_MIN_LOG_MEL));
    return SLANEY_F_SP * mel;
}

/* A float product that the compiler may not fuse into a following add
 * (an FMA would round differently from torch's separate operations). */
static float mul_nofma(float a, float b)
{
    volatile float r = a * b;
    return r;
}

/* torch.linspace(start, end, steps) in float32, value i, exactly as torch
 * 1.13's CPU kernel makes it (found by comparing bit patterns): pairs of
 * 8-lane vectors while 16 values remain, each lane k of a vector starting
 * at j being base + k * step, with base = fma(step, j, start) in the first
 * half and fma(-step, steps - 1 - j, end) in the second; the last values
 * one by one with the fma formula. The mel points depend on it: an ulp
 * there moves the filter weights near a triangle's ends. */
static float linspace_f32(float start, float end, int64_t steps, int64_t i)
{
    if (steps == 1) return start;
    float step = (end - start) / (float)(steps - 1);
    int64_t half = steps / 2, nvec = steps - steps % 16;
    int64_t j = i < nvec ? i - i % 8 : i;
    float base = j < half ? fmaf(step, (float)j, start) : fmaf(-step, (float)(steps - j - 1), end);
    return i < nvec ? base + mul_nofma((float)(i - j), step) : base;
}

/* torchaudio's _mel_to_hz on a float32 tensor, operation by operation. */
static float mel_to_hz_f32(float mel, tm_mel_scale scale)
{
    if (scale == TM_MEL_HTK) return 700.0f * (powf(10.0f, mel / 2595.0f) - 1.0f);
    float f = 0.0f + (float)SLANEY_F_SP * mel;
    float min_log_mel = (float)((SLANEY_MIN_LOG_HZ - 0.0) / SLANEY_F_SP);
    if (mel >= min_log_mel)
        f = (float)SLANEY_MIN_LOG_HZ * expf((float)slaney_logstep() * (mel - min_log_mel));
    return f;
}

tm_status tm_mel_filterbank(float *fb, int n_freqs, float f_min, float f_max, int n_mels,
                            int sample_rate, tm_mel_norm norm, tm_mel_scale scale)
{
    if (!fb) return tm_fail(TM_ERR_INVALID, "mel filterbank: fb is NULL");
    if (n_freqs < 1 || n_freqs > 65536 || n_mels < 1 || n_mels > 4096)
        return tm_fail(TM_ERR_INVALID, "mel filterbank: n_freqs %d or n_mels %d out of range",
                       n_freqs, n_mels);
    if (sample_rate < 1 || sample_rate > TM_AUDIO_MAX_RATE)
        return tm_fail(TM_ERR_INVALID, "mel filterbank: sample_rate %d", sample_rate);
    if (!(f_min >= 0 && isfinite(f_min) && isfinite(f_max) && f_max > f_min))
        return tm_fail(TM_ERR_INVALID, "mel filterbank: need 0 <= f_min < f_max (%g, %g)",
                       (double)f_min, (double)f_max);
    if ((unsigned)norm >= TM_MEL_NORM_COUNT || (unsigned)scale >= TM_MEL_SCALE_COUNT)
        return tm_fail(TM_ERR_INVALID, "mel filterbank: unknown norm or scale");
    size_t np = (size_t)n_mels + 2;
    float *f_pts = tm_alloc(sizeof(float) * np);
    if (!f_pts) return tm_fail(TM_ERR_NOMEM, "mel filterbank: out of memory");
    /* m_min and m_max in double (torchaudio uses Python floats), the points
     * in float32 (torchaudio's tensors). */
    float m_min = (float)tm_hz_to_mel((double)f_min, scale);
    float m_max = (float)tm_hz_to_mel((double)f_max, scale);
    for (size_t j = 0; j < np; j++)
        f_pts[j] = mel_to_hz_f32(linspace_f32(m_min, m_max, (int64_t)np, (int64_t)j), scale);
    float nyq = (float)(sample_rate / 2);
    for (int k = 0; k < n_freqs; k++) {
        float f = linspace_f32(0.0f, nyq, n_freqs, k);
        for (int m = 0; m < n_mels; m++) {
            float down = (-(f_pts[m] - f)) / (f_pts[m + 1] - f_pts[m]);
            float up = (f_pts[m + 2] - f) / (f_pts[m + 2] - f_pts[m + 1]);
            float v = down < up ? down : up;
            if (!(v > 0.0f)) v = 0.0f;
            if (norm == TM_MEL_NORM_SLANEY) v *= 2.0f / (f_pts[m + 2] - f_pts[m]);
            fb[(size_t)k * n_mels + m] = v;
        }
    }
    tm_free(f_pts);
    return TM_OK;
}

/* ------------------------------------------------------------ tm_logmel */

void tm_logmel_free(tm_logmel *lm)
{
    if (!lm) return;
    tm_audio_plan_free(lm->plan);
    tm_free(lm->window);
    tm_free(lm->fb);
    tm_free(lm->fbt);
    tm_free(lm->mel_lo);
    tm_free(lm->mel_hi);
    tm_free(lm);
}

tm_status tm_logmel_new(tm_logmel **out, tm_audio_params p)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_logmel_new: out is NULL");
    *out = NULL;
    tm_status st = tm_audio_params_check(&p);
    if (st != TM_OK) return st;
    tm_logmel *lm = tm_calloc(1, sizeof *lm);
    if (!lm) return tm_fail(TM_ERR_NOMEM, "tm_logmel_new: out of memory");
    lm->p = p;
    lm->n_fft = p.n_fft;
    lm->win_length = p.win_length ? p.win_length : p.n_fft;
    lm->hop = p.hop;
    lm->n_freqs = p.n_fft / 2 + 1;
    lm->pad = p.center ? p.n_fft / 2 : 0;
    lm->win_lo = (p.n_fft - lm->win_length) / 2;
    lm->win_hi = lm->win_lo + lm->win_length;
    size_t nf = (size_t)lm->n_freqs, nm = (size_t)p.n_mels;
    lm->window = tm_alloc(sizeof(float) * (size_t)p.n_fft);
    lm->fb = tm_alloc(sizeof(float) * nf * nm);
    lm->fbt = tm_alloc(sizeof(float) * nf * nm);
    lm->mel_lo = tm_alloc(sizeof(int) * nm);
    lm->mel_hi = tm_alloc(sizeof(int) * nm);
    if (!lm->window || !lm->fb || !lm->fbt || !lm->mel_lo || !lm->mel_hi) {
        tm_logmel_free(lm);
        return tm_fail(TM_ERR_NOMEM, "tm_logmel_new: out of memory");
    }
    tm_audio_window(lm->window, p.n_fft, lm->win_length, p.window);
    st = tm_mel_filterbank(lm->fb, lm->n_freqs, p.f_min, effective_f_max(&p), p.n_mels,
                           p.sample_rate, p.mel_norm, p.mel_scale);
    if (st != TM_OK) {
        tm_logmel_free(lm);
        return st;
    }
    for (size_t m = 0; m < nm; m++) {
        int lo = lm->n_freqs, hi = 0;
        for (size_t k = 0; k < nf; k++) {
            float v = lm->fb[k * nm + m];
            lm->fbt[m * nf + k] = v;
            if (v != 0.0f) {
                if ((int)k < lo) lo = (int)k;
                hi = (int)k + 1;
            }
        }
        lm->mel_lo[m] = lo < hi ? lo : 0;
        lm->mel_hi[m] = lo < hi ? hi : 0;
    }
    lm->plan = tm_audio_plan_r2c(p.n_fft);
    if (!lm->plan) {
        tm_logmel_free(lm);
        return tm_fail(TM_ERR_INTERNAL, "tm_logmel_new: FFTW cannot plan a transform of %d",
                       p.n_fft);
    }
    *out = lm;
    return TM_OK;
}

tm_audio_params tm_logmel_params(const tm_logmel *lm)
{
    return lm ? lm->p : tm_audio_default_params();
}

int tm_logmel_num_freqs(const tm_logmel *lm) { return lm ? lm->n_freqs : 0; }
const float *tm_logmel_filterbank(const tm_logmel *lm) { return lm ? lm->fb : NULL; }

/* Frames of a signal of n samples, without target_frames. */
static int64_t frames_of(const tm_logmel *lm, int64_t n)
{
    int64_t len = n + 2 * (int64_t)lm->pad;
    if (n <= 0 || len < lm->n_fft) return 0;
    return 1 + (len - lm->n_fft) / lm->hop;
}

/* The length the audio is padded or trimmed to for target_frames. */
static int64_t target_length(const tm_logmel *lm)
{
    int64_t t = lm->p.target_frames;
    return lm->p.center ? t * lm->hop : (t - 1) * lm->hop + lm->n_fft;
}

int64_t tm_logmel_num_frames(const tm_logmel *lm, int64_t n)
{
    if (!lm || n < 0) return 0;
    if (lm->p.target_frames > 0) return lm->p.target_frames;
    return frames_of(lm, n);
}

/* ------------------------------------------------------------ the engine */

enum { STAGE_SPEC, STAGE_MEL, STAGE_LOG };

typedef struct {
    const tm_logmel *lm;
    const float *x;
    int64_t n;
    int64_t frames; /* computed and written */
    int stage;
    float *out;
    float *task_max; /* (tasks,) for top_db */
    atomic_int failed;
} run_ctx;

/* Windowed frame t of the (virtually) padded signal into buf[win_lo, win_hi). */
static void load_frame(const tm_logmel *lm, const float *x, int64_t n, int64_t t, float *buf)
{
    const float *w = lm->window;
    int64_t base = t * lm->hop - lm->pad;
    int lo = lm->win_lo, hi = lm->win_hi;
    if (base + lo >= 0 && base + hi <= n) {
        const float *s = x + base;
        for (int j = lo; j < hi; j++) buf[j] = s[j] * w[j];
        return;
    }
    int reflect = lm->p.pad_mode == TM_STFT_PAD_REFLECT;
    for (int j = lo; j < hi; j++) {
        int64_t i = base + j;
        float v;
        if (i >= 0 && i < n) v = x[i];
        else if (reflect) v = x[tm_audio_reflect(i, n)];
        else v = 0.0f;
        buf[j] = v * w[j];
    }
}

static float apply_log(const tm_audio_params *p, float v)
{
    float f = v > p->log_floor ? v : p->log_floor;
    switch (p->log) {
    case TM_LOG_LN: return logf(f);
    case TM_LOG_LOG10: return log10f(f);
    case TM_LOG_DB: return (20.0f / p->power) * log10f(f);
    default: return v;
    }
}

static void run_task(void *arg, int64_t task, int64_t n_tasks)
{
    (void)n_tasks;
    run_ctx *c = arg;
    const tm_logmel *lm = c->lm;
    const tm_audio_params *p = &lm->p;
    int64_t t0 = task * FRAME_CHUNK, t1 = t0 + FRAME_CHUNK;
    if (t1 > c->frames) t1 = c->frames;
    int nf = lm->n_freqs, nm = p->n_mels;
    float *buf = fftwf_malloc(sizeof(float) * (size_t)lm->n_fft);
    fftwf_complex *spec = fftwf_malloc(sizeof(fftwf_complex) * (size_t)nf);
    float *pw = fftwf_malloc(sizeof(float) * (size_t)nf);
    if (!buf || !spec || !pw) {
        atomic_store(&c->failed, 1);
        goto done;
    }
    memset(buf, 0, sizeof(float) * (size_t)lm->n_fft);
    float mx = -INFINITY;
    for (int64_t t = t0; t < t1; t++) {
        load_frame(lm, c->x, c->n, t, buf);
        fftwf_execute_dft_r2c(lm->plan, buf, spec);
        if (p->power == 2.0f) {
            for (int k = 0; k < nf; k++) pw[k] = spec[k][0] * spec[k][0] + spec[k][1] * spec[k][1];
        } else if (p->power == 1.0f) {
            for (int k = 0; k < nf; k++) pw[k] = hypotf(spec[k][0], spec[k][1]);
        } else {
            for (int k = 0; k < nf; k++) pw[k] = powf(hypotf(spec[k][0], spec[k][1]), p->power);
        }
        if (c->stage == STAGE_SPEC) {
            for (int k = 0; k < nf; k++) c->out[(size_t)k * c->frames + t] = pw[k];
            continue;
        }
        for (int m = 0; m < nm; m++) {
            const float *row = lm->fbt + (size_t)m * nf;
            float s = 0.0f;
            for (int k = lm->mel_lo[m]; k < lm->mel_hi[m]; k++) s += row[k] * pw[k];
            if (c->stage == STAGE_LOG) {
                s = apply_log(p, s);
                if (s > mx) mx = s;
            }
            c->out[(size_t)m * c->frames + t] = s;
        }
    }
    if (c->task_max) c->task_max[task] = mx;
done:
    fftwf_free(buf);
    fftwf_free(spec);
    fftwf_free(pw);
}

typedef struct {
    float *out;
    int64_t count;
    float lo;
    int clamp, whisper;
} post_ctx;

static void post_task(void *arg, int64_t task, int64_t n_tasks)
{
    post_ctx *c = arg;
    int64_t b, e;
    tm_split_range(c->count, task, n_tasks, &b, &e);
    for (int64_t i = b; i < e; i++) {
        float v = c->out[i];
        if (c->clamp && v < c->lo) v = c->lo;
        if (c->whisper) v = (v + 4.0f) / 4.0f;
        c->out[i] = v;
    }
}

static tm_status run(const tm_logmel *lm, const float *x, int64_t n, float *out, int stage,
                     const char *what)
{
    if (!lm || !out) return tm_fail(TM_ERR_INVALID, "%s: NULL argument", what);
    if (n < 0 || (n > 0 && !x)) return tm_fail(TM_ERR_INVALID, "%s: no samples", what);
    const tm_audio_params *p = &lm->p;
    float *padded = NULL;
    int64_t frames;
    if (p->target_frames > 0) {
        /* Pad with zeros or trim to the length whose STFT has at least
         * target_frames frames, then keep the first target_frames. */
        int64_t len = target_length(lm);
        if (len != n) {
            size_t bytes;
            if (!tm_mul_size((size_t)len, sizeof(float), &bytes) || !(padded = tm_alloc(bytes)))
                return tm_fail(TM_ERR_NOMEM, "%s: out of memory for %lld samples", what,
                               (long long)len);
            int64_t keep = n < len ? n : len;
            if (keep > 0) memcpy(padded, x, sizeof(float) * (size_t)keep);
            memset(padded + keep, 0, sizeof(float) * (size_t)(len - keep));
            x = padded;
            n = len;
        }
        frames = p->target_frames;
        TM_ASSERT(frames_of(lm, n) >= frames);
    } else {
        frames = frames_of(lm, n);
        if (frames == 0)
            return tm_fail(TM_ERR_INVALID,
                           "%s: %lld samples make no frame (n_fft %d, center %d): the audio is "
                           "too short",
                           what, (long long)n, lm->n_fft, p->center);
    }
    int64_t tasks = (frames + FRAME_CHUNK - 1) / FRAME_CHUNK;
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.lm = lm;
    c.x = x;
    c.n = n;
    c.frames = frames;
    c.stage = stage;
    c.out = out;
    atomic_init(&c.failed, 0);
    int need_max = stage == STAGE_LOG && p->top_db > 0;
    if (need_max && !(c.task_max = tm_alloc(sizeof(float) * (size_t)tasks))) {
        tm_free(padded);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", what);
    }
    tm_parallel_for(tasks, run_task, &c);
    tm_free(padded);
    if (atomic_load(&c.failed)) {
        tm_free(c.task_max);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory for FFT buffers", what);
    }
    if (stage == STAGE_LOG && (need_max || p->whisper_norm)) {
        post_ctx pc = {out, frames * p->n_mels, 0.0f, need_max, p->whisper_norm};
        if (need_max) {
            float mx = -INFINITY;
            for (int64_t i = 0; i < tasks; i++)
                if (c.task_max[i] > mx) mx = c.task_max[i];
            pc.lo = mx - p->top_db;
        }
        int64_t ptasks = pc.count / 65536 + 1;
        tm_parallel_for(ptasks, post_task, &pc);
    }
    tm_free(c.task_max);
    return TM_OK;
}

tm_status tm_logmel_spectrogram(const tm_logmel *lm, const float *x, int64_t n, float *out)
{
    return run(lm, x, n, out, STAGE_SPEC, "tm_logmel_spectrogram");
}

tm_status tm_logmel_mel(const tm_logmel *lm, const float *x, int64_t n, float *out)
{
    return run(lm, x, n, out, STAGE_MEL, "tm_logmel_mel");
}

tm_status tm_logmel_compute(const tm_logmel *lm, const float *x, int64_t n, float *out)
{
    return run(lm, x, n, out, STAGE_LOG, "tm_logmel_compute");
}

tm_status tm_audio_preprocess(tm_tensor **out, const tm_audio *audio, tm_audio_params params)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_audio_preprocess: out is NULL");
    *out = NULL;
    if (!audio || audio->n_samples < 0 || (audio->n_samples > 0 && !audio->samples))
        return tm_fail(TM_ERR_INVALID, "tm_audio_preprocess: no audio");
    tm_logmel *lm = NULL;
    tm_status st = tm_logmel_new(&lm, params);
    if (st != TM_OK) return st;
    tm_audio *res = NULL;
    const tm_audio *a = audio;
    if (audio->sample_rate != params.sample_rate) {
        st = tm_audio_resample(&res, audio, params.sample_rate, params.resampler);
        if (st != TM_OK) {
            tm_logmel_free(lm);
            return st;
        }
        a = res;
    }
    int64_t frames = tm_logmel_num_frames(lm, a->n_samples);
    if (frames == 0) {
        st = tm_fail(TM_ERR_INVALID,
                     "tm_audio_preprocess: %lld samples make no frame (n_fft %d); set "
                     "target_frames or pass longer audio",
                     (long long)a->n_samples, params.n_fft);
    } else {
        int64_t shape[2] = {params.n_mels, frames};
        st = tm_tensor_new(out, TM_F32, 2, shape);
        if (st == TM_OK) {
            st = tm_logmel_compute(lm, a->samples, a->n_samples, (float *)(*out)->data);
            if (st != TM_OK) {
                tm_tensor_free(*out);
                *out = NULL;
            }
        }
    }
    tm_audio_free(res);
    tm_logmel_free(lm);
    return st;
}
