/* Private pieces of the FashionTri builder (include/trimodal/datasets.h),
 * shared by src/data/fashiontri*.c and its test. */
#ifndef TM_FASHIONTRI_INTERNAL_H
#define TM_FASHIONTRI_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/audio.h"
#include "trimodal/core.h"

#define FT_CLASSES 10
#define FT_IMAGE_SIDE 28
#define FT_SAMPLE_RATE 16000
/* Bumped whenever what the builder writes for a given recipe changes. */
#define FT_BUILDER_VERSION 1

/* FNV-1a, 64 bits: file names of cached utterances and recipe hashes
 * (collisions among ~10^4 keys: about 10^-11). */
#define FT_FNV_OFFSET 0xcbf29ce484222325ull
static inline uint64_t ft_fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ------------------------------------------------------------- terms */

typedef enum { FT_SINGULAR = 0, FT_PLURAL, FT_MASS, FT_NUMBER_COUNT } ft_number;

typedef struct {
    char *text; /* "tennis shoes" */
    char *np;   /* the noun phrase: "tennis shoes", "a T-shirt" */
    ft_number number;
} ft_term;

typedef struct {
    char *name;       /* "footwear/shoe" */
    unsigned classes; /* bit c: fits class c */
    ft_term *terms;
    int n_terms;
} ft_group;

#define FT_MAX_TEMPLATES 16

typedef struct {
    char *class_names[FT_CLASSES];
    ft_term *specific[FT_CLASSES];
    int n_specific[FT_CLASSES];
    ft_group *groups;
    int n_groups;
    char *templates[FT_MAX_TEMPLATES][FT_NUMBER_COUNT]; /* "This is {np}." */
    int n_templates;
    uint64_t file_hash; /* FNV-1a of the file's bytes */
} ft_terms;

/* Reads and checks a terms file (configs/fashion-tri/terms.json's format):
 * TM_ERR_IO, TM_ERR_FORMAT (bad JSON), TM_ERR_INVALID naming the bad entry. */
tm_status ft_terms_load(ft_terms *t, const char *path);
tm_status ft_terms_parse(ft_terms *t, const char *json, size_t len, const char *name);
void ft_terms_free(ft_terms *t);

/* The sentence of template k around term: "{np}" replaced by the noun
 * phrase, "{NP}" by the same with a capital first letter. TM_ERR_LIMIT when
 * it does not fit in size bytes. */
tm_status ft_sentence(char *out, size_t size, const ft_terms *t, int k, const ft_term *term);

/* ------------------------------------------------------------- voices */

typedef enum { FT_ESPEAK = 0, FT_FLITE, FT_FESTIVAL, FT_ENGINE_COUNT } ft_engine;

typedef struct {
    ft_engine engine;
    const char *name;    /* what the engine calls it: "en-us+f3", "slt", "kal_diphone" */
    const char *id;      /* "espeak-ng:en-us+f3" */
    const char *speaker; /* who it sounds like, for speaker-disjoint splits */
    int test;            /* 1: test split only; 0: train and val only */
    const char *package; /* the Debian package that provides it */
} ft_voice;

extern const ft_voice ft_voices[];
extern const int ft_n_voices;
const char *ft_engine_name(ft_engine e); /* "espeak-ng", "flite", "festival" */

/* Child processes: argv[0] searched in PATH, no shell, stdin from
 * /dev/null. stdout goes to *out (NUL-terminated, tm_free it; at most 1 MiB)
 * when out is not NULL, else nowhere. Killed after timeout_s. Fails with
 * TM_ERR_UNSUPPORTED when the program is not installed, TM_ERR_INTERNAL
 * when it fails, times out or is killed, the message holding the end of its
 * standard error. */
tm_status ft_run(char *const argv[], double timeout_s, char **out);

/* The Debian package versions that describe a build, as a JSON object
 * text ("unknown" where dpkg-query cannot tell). tm_free it. */
tm_status ft_package_versions(char **json);

/* Checks programs and voices: TM_ERR_UNSUPPORTED listing the missing ones. */
tm_status ft_check_engines(void);

/* One distinct utterance: a sentence in a voice. */
typedef struct {
    int voice; /* index into ft_voices */
    char *text;
    uint64_t key;   /* hash of (cache version, engine versions, voice, text) */
    char *path;     /* its file in the cache */
    double seconds; /* its length after trimming (set by rendering) */
} ft_utterance;

/* Renders utterances u[idx[0..n-1]] (all of one engine for festival, any
 * for the others) into their cache files: engine output into tmp_dir,
 * resampled to 16 kHz, silence trimmed, peak-normalised, stored as FLAC
 * (temporary name, then renamed). */
tm_status ft_render(ft_utterance *u, const int *idx, int n, const char *tmp_dir);

/* -------------------------------------------------------------- media */

/* Decompresses a gzip file image (one member; CRC and length checked) into a
 * new buffer; a buffer that is not gzip is copied as it is. At most
 * max_out bytes out (TM_ERR_LIMIT). name is for messages. */
tm_status ft_gunzip(uint8_t **out, size_t *out_len, const uint8_t *in, size_t len, size_t max_out,
                    const char *name);

typedef enum { FT_NOISE_WHITE = 0, FT_NOISE_PINK, FT_NOISE_BROWN, FT_NOISE_COUNT } ft_noise;
const char *ft_noise_name(ft_noise k);

/* n samples of noise of the given colour at 16 kHz, roughly unit power,
 * from normal draws tm_rng_normal_at(seed, stream, i): white as drawn; pink
 * (power density falling 3 dB per octave between 20 Hz and 8 kHz) through a
 * cascade of pole-zero filters; brown (6 dB per octave above 20 Hz) through
 * a leaky integrator. */
tm_status ft_make_noise(float *out, int64_t n, ft_noise kind, uint64_t seed, uint64_t stream);

/* What happens to one spoken hint after rendering. */
typedef struct {
    float pitch_cents; /* shift, cents */
    float tempo;       /* > 1 faster */
    ft_noise noise;
    float snr_db;
    uint64_t seed, stream; /* of the noise */
} ft_clip_params;

/* Loads the cached utterance, changes tempo and pitch (one phase-vocoder
 * stretch by tempo / pitch factor, then resampling by the pitch factor),
 * sets the speech level to FT_SPEECH_DBFS (RMS), adds the noise at the SNR,
 * scales down if a sample would clip, and writes 16-bit FLAC to path
 * (temporary file, then rename) with the coarsest PCM step whose rounding
 * error stays FT_QUANT_MARGIN_DB under the added noise (ft_pcm_step).
 * *seconds, *bytes and *step describe the file. */
#define FT_SPEECH_DBFS (-26.0)
#define FT_SNR_MAX_DB 20.0 /* the highest SNR of the recipe */
#define FT_QUANT_MARGIN_DB 30.0
tm_status ft_make_clip(const char *cached, const char *path, ft_clip_params p, double *seconds,
                       int64_t *bytes, int *step);

/* The largest power of two q (1..4096) whose rounding noise, q / sqrt(12)
 * in 16-bit units, is at least margin_db under noise_rms (full scale 1). */
int ft_pcm_step(double noise_rms, double margin_db);
/* The step of a clip with noise at snr_db (ft_pcm_step of the noise's RMS). */
int ft_clip_step(double snr_db);

/* Writes mono float samples as 16 kHz 16-bit FLAC, each sample rounded to a
 * multiple of step (a power of two: FLAC stores the zero low bits for free)
 * (temporary file, then rename; no fsync: the builder syncs the file system
 * once at the end). */
tm_status ft_write_flac(const char *path, const float *x, int64_t n, int step, int64_t *bytes);

/* The same for any bytes. */
tm_status ft_write_file(const char *path, const void *data, size_t size);

/* mkdir -p (mode 0777 less the umask). */
tm_status ft_mkdirs(const char *path);

#endif
