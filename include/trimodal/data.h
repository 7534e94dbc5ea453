/*
 * trimodal data: what a model's preprocess.json says about its inputs, and
 * the joint augmentations that act on several modalities of one example at
 * once (modality dropout, aligned masking).
 *
 * Thread-safety: every function is reentrant; structs are plain data.
 */
#ifndef TRIMODAL_DATA_H
#define TRIMODAL_DATA_H

#include "trimodal/audio.h"
#include "trimodal/core.h"
#include "trimodal/text.h"
#include "trimodal/vision.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------- preprocess.json */

/* Everything a model's front-ends need, as stored in preprocess.json:
 *   {"text":  {"max_length": 32, "add_bos": false, "add_eos": false,
 *              "pad_to_max_length": true, "max_text_bytes": 1048576},
 *    "image": {"mode": "shorter", "size": 32, "height": 32, "width": 32,
 *              "filter": "bilinear", "antialias": true, "channels": 1,
 *              "mean": [0.5], "std": [0.5], "patch": 0},
 *    "audio": {"sample_rate": 16000, "n_fft": 400, "win_length": 400,
 *              "hop": 160, "window": "hann", "center": true,
 *              "pad_mode": "reflect", "power": 2.0, "n_mels": 64,
 *              "f_min": 0, "f_max": 8000, "mel_scale": "slaney",
 *              "mel_norm": "slaney", "log": "log10", "log_floor": 1e-10,
 *              "top_db": 8, "whisper_norm": true, "frames": 100,
 *              "resampler": "sinc_best"}}
 * Every key is optional (missing keys keep the defaults, which are
 * bench-small's front-ends); unknown keys, wrong types and bad values are
 * errors naming the key. docs/preprocess.md documents every field. */
typedef struct {
    tm_tokenizer_encode_params text;
    tm_image_params image;
    tm_audio_params audio;
} tm_preprocess_config;

/* bench-small's front-ends: text max_length 32 padded; image 1x32x32,
 * mean 0.5, std 0.5; audio 64 mel bins x 100 frames at 16 kHz (Whisper's
 * recipe). */
tm_preprocess_config tm_preprocess_default_config(void);

/* Parses JSON text (len bytes). TM_ERR_FORMAT for bad JSON, TM_ERR_INVALID
 * for an unknown key, a wrong type or a bad value (the message names it),
 * TM_ERR_LIMIT for a document over 1 MiB. *out is unchanged on failure. */
tm_status tm_preprocess_config_parse(tm_preprocess_config *out, const char *json, size_t len);
/* Reads and parses a file (TM_ERR_IO if it cannot be read). */
tm_status tm_preprocess_config_load(tm_preprocess_config *out, const char *path);
/* The config as JSON text (every field written); free with tm_free(). */
tm_status tm_preprocess_config_to_json(const tm_preprocess_config *c, char **out);
/* Writes the JSON atomically. */
tm_status tm_preprocess_config_save(const tm_preprocess_config *c, const char *path);

/* ---------------------------------------------------- modality dropout */

typedef enum {
    TM_MODALITY_TEXT = 1,
    TM_MODALITY_IMAGE = 2,
    TM_MODALITY_AUDIO = 4,
} tm_modality_bit;

/* Drops each present modality (bits of `present`) with probability p[i]
 * (i: 0 text, 1 image, 2 audio), never all of them: when every draw says
 * drop, the modality with the highest draw is kept. A pure function of
 * (seed, index). Returns the modalities that remain; the model masks the
 * dropped ones (they are never fed as zeros that attention could see). */
unsigned tm_modality_dropout(unsigned present, const float p[3], uint64_t seed,
                             uint64_t index);

/* ----------------------------------------------------- aligned masking */

/* Where one word of an example's text lies in its other modalities. */
typedef struct {
    int64_t text_begin, text_end; /* byte range of the word in the text */
    double audio_begin, audio_end; /* seconds in the audio; begin < 0: not spoken */
    tm_image_box box;              /* image region; width or height 0: none */
} tm_word_alignment;

typedef struct {
    float word_prob;       /* probability of masking each word; 0.15 */
    const char *mask_text; /* what replaces a masked word; "<mask>" (make it
                              the tokenizer's mask token, encoded with
                              parse_special) */
    int silence_audio;     /* zero the masked words' audio spans; 1 */
    int erase_image;       /* fill the masked words' image regions; 1 */
    uint8_t image_fill;    /* the fill value (all channels); 0 */
} tm_aligned_mask_params;

tm_aligned_mask_params tm_aligned_mask_default_params(void);

/* Masks words of an example consistently in every modality: each word is
 * masked with probability word_prob (a pure function of (seed, index,
 * word)); a masked word's bytes in the text become mask_text, its audio
 * span [audio_begin, audio_end) in `audio` becomes silence, and its image
 * box in `image` becomes image_fill. audio and image may be NULL (that
 * modality is left alone; its alignments are ignored). Words must be in
 * text order and not overlap, and lie inside the text; boxes are clipped to
 * the image; spans to the audio.
 *   *text_out: the new text (NUL-terminated, length *len_out), tm_free() it
 *   masked:    n_words flags (may be NULL), 1 where the word was masked
 * TM_ERR_INVALID for bad alignments (the message names the word). */
tm_status tm_aligned_mask(char **text_out, size_t *len_out, uint8_t *masked, const char *text,
                          size_t len, const tm_word_alignment *words, int n_words,
                          tm_audio *audio, tm_image *image, tm_aligned_mask_params params,
                          uint64_t seed, uint64_t index);

/* ---------------------------------------------------------- modalities */

/* The bit of a modality by name: "text"; "image" or "vision"; "audio".
 * 0 for any other name. tm_model_info's modality names map through this
 * to the loader's present columns. */
unsigned tm_modality_from_name(const char *name);

/* ------------------------------------------------------------ manifests */

/* A dataset manifest is JSON Lines: one example a line, a JSON object:
 *   {"id": "ex1", "text": "a red sneaker", "image": "img/1.png",
 *    "audio": "wav/1.wav", "label": "sneaker", "split": "train",
 *    "transcript": "a red sneaker",
 *    "words": [{"w": "red", "start": 0.31, "end": 0.52}, ...],
 *    "region": [4, 2, 20, 26], "voice": "f1"}
 * Fields:
 *   id      string or integer, required, unique in the file;
 *   text    string (any UTF-8), missing or null: no text;
 *   image, audio  a path relative to the manifest's folder (or absolute),
 *           missing or null: no such modality;
 *   label   a class index (integer >= 0, below the class count when
 *           dataset.json lists classes) or a class name (looked up in
 *           dataset.json's "classes"; without dataset.json, the distinct
 *           names are numbered in sorted byte order); missing or null: no
 *           label (TM_LABEL_NONE); one file may not mix names and numbers
 *           without dataset.json;
 *   split   string; missing: the row is in no split. Any name is accepted;
 *           names that are neither in dataset.json's "splits" nor one of
 *           train, val, validation, test, dev are counted as unknown;
 *   transcript  string: what the audio says;
 *   words   the word timings of the audio: an array (at most
 *           TM_MANIFEST_MAX_WORDS) of {"w": string, "start": s, "end": s}
 *           in seconds, 0 <= start <= end, starts not decreasing; needs
 *           "audio";
 *   region  [x0, y0, x1, y1]: the image region the example is about, in
 *           pixels of the image file, 0 <= x0 < x1, 0 <= y0 < y1; needs
 *           "image" (tm_manifest_check_media checks it against the size);
 *   any other key is kept as text (strings as they are, other values as
 *   compact JSON) for tm_manifest_field (bias audits group by these).
 * Empty lines are skipped; a UTF-8 byte order mark and a CR before the
 * newline are ignored. Every problem is reported as "FILE:LINE: what is
 * wrong, and how to fix it". */

#define TM_LABEL_NONE (-100)
/* The longest manifest line read (a longer line is a problem). */
#define TM_MANIFEST_DEFAULT_MAX_LINE ((size_t)1 << 20)
/* The largest manifest file read. */
#define TM_MANIFEST_DEFAULT_MAX_BYTES ((size_t)4 << 30)
/* The most rows. */
#define TM_MANIFEST_DEFAULT_MAX_ROWS ((int64_t)1 << 27)
/* The most words in one row's "words". */
#define TM_MANIFEST_MAX_WORDS 4096
/* The largest dataset.json read, and the most classes it may list. */
#define TM_DATASET_MAX_BYTES ((size_t)16 << 20)
#define TM_DATASET_MAX_CLASSES 1000000

typedef struct {
    size_t max_line_bytes; /* TM_MANIFEST_DEFAULT_MAX_LINE */
    size_t max_bytes;      /* TM_MANIFEST_DEFAULT_MAX_BYTES */
    int64_t max_rows;      /* TM_MANIFEST_DEFAULT_MAX_ROWS */
    /* 0: loading fails at the first problem. 1: bad rows are left out,
     * every problem is counted (the first max_problems kept with their
     * messages) and loading succeeds; what `trimodal data check` uses. A
     * missing or unreadable file, or a bad dataset.json, fails either way. */
    int keep_going;        /* 0 */
    int max_problems;      /* messages kept with keep_going: 100 */
    /* dataset.json: NULL reads the one in the manifest's folder when there
     * is one; "" reads none; else this path (which must exist). */
    const char *dataset_json; /* NULL */
} tm_manifest_params;

tm_manifest_params tm_manifest_default_params(void);

/* One entry of "words". */
typedef struct {
    const char *w;
    double start, end; /* seconds in the audio */
    /* the word's byte range in the row's text (else its transcript),
     * found left to right, case-insensitively for ASCII; -1 when absent */
    int64_t text_begin, text_end;
} tm_manifest_word;

/* One row; every pointer is valid while the manifest lives. */
typedef struct {
    int64_t line;           /* 1-based line in the file */
    const char *id;         /* an integer id as decimal text */
    const char *text;       /* NULL when missing */
    size_t text_len;
    const char *image;      /* as written; NULL when missing */
    const char *audio;
    const char *image_path; /* resolved against the manifest's folder */
    const char *audio_path;
    int32_t label;          /* class index, or TM_LABEL_NONE */
    const char *split;      /* NULL when missing */
    const char *transcript; /* NULL when missing */
    const tm_manifest_word *words;
    int n_words;
    int has_region;
    float region[4];        /* x0, y0, x1, y1 in image pixels */
    unsigned present;       /* TM_MODALITY_* bits of the modalities given */
} tm_manifest_row;

typedef struct tm_manifest tm_manifest;

/* Reads and validates a manifest (and the dataset.json beside it, see
 * tm_manifest_params). params NULL means the defaults. Fails with TM_ERR_IO
 * (cannot read; a FIFO or folder is refused at once), TM_ERR_LIMIT (file
 * over max_bytes or more rows than max_rows), TM_ERR_FORMAT (a line that is
 * not a JSON object, a bad dataset.json), TM_ERR_INVALID (a field of the
 * wrong type or value, a missing or duplicate id, a label out of range,
 * bad words or region), TM_ERR_NOMEM; the message names the file and line.
 * With keep_going only the file-level failures remain. *out is NULL on
 * failure. */
tm_status tm_manifest_load(tm_manifest **out, const char *path, const tm_manifest_params *params);

/* The same from len bytes in memory; `name` is used in messages and `dir`
 * resolves relative media paths (NULL: "."); dataset.json is only read when
 * params->dataset_json names a path. */
tm_status tm_manifest_parse(tm_manifest **out, const char *data, size_t len, const char *name,
                            const char *dir, const tm_manifest_params *params);

void tm_manifest_free(tm_manifest *m); /* NULL is harmless */

int64_t tm_manifest_count(const tm_manifest *m);
/* Row i (0 <= i < count), NULL when out of range. */
const tm_manifest_row *tm_manifest_row_at(const tm_manifest *m, int64_t i);
/* The row whose id is `id`, or -1. */
int64_t tm_manifest_find(const tm_manifest *m, const char *id);

/* The value of field `key` of row i as text, NULL when the row lacks it:
 * any extra field, and also "id", "text", "image", "audio", "split",
 * "transcript" and "label" (the class name when known, else the number). */
const char *tm_manifest_field(const tm_manifest *m, int64_t i, const char *key);
/* The extra keys seen in the file (not the fields listed above), in order
 * of first appearance. */
int tm_manifest_field_count(const tm_manifest *m);
const char *tm_manifest_field_name(const tm_manifest *m, int i);

/* The file's path ("<memory>" name for parsed ones) and media folder. */
const char *tm_manifest_path(const tm_manifest *m);
const char *tm_manifest_dir(const tm_manifest *m);

/* Classes: from dataset.json when it lists them, else 1 + the largest
 * label (or the number of names). Name of class i, NULL when unnamed. */
int32_t tm_manifest_num_classes(const tm_manifest *m);
const char *tm_manifest_class_name(const tm_manifest *m, int32_t i);

/* The splits seen, in order of first appearance, and the rows of each. */
int tm_manifest_split_count(const tm_manifest *m);
const char *tm_manifest_split_name(const tm_manifest *m, int i);
int64_t tm_manifest_split_size(const tm_manifest *m, const char *split);
/* 1 when split is listed in dataset.json's "splits" or is a standard name
 * (train, val, validation, test, dev). */
int tm_manifest_split_known(const tm_manifest *m, const char *split);
/* The rows of split (NULL: every row), in file order: *rows (tm_free() it,
 * NULL when *n is 0) and *n. */
tm_status tm_manifest_split_rows(const tm_manifest *m, const char *split, int64_t **rows,
                                 int64_t *n);

/* dataset.json, when one was read. Its format (docs/data.md):
 *   {"name": "fashion-tri", "version": "1", "description": "...",
 *    "classes": ["sneaker", "boot", ...],
 *    "splits": {"train": 1600, "val": 200, "test": 200},
 *    "manifest": "manifest.jsonl", "modalities": ["text", "image", "audio"],
 *    "recipe": {...}, "provenance": {...}, "license": "..."}
 * "name" (a string) is required; "classes" (unique non-empty strings),
 * "splits" (name -> expected row count, an integer >= 0; `data check`
 * compares), "version", "description", "license", "manifest" (strings) and
 * "modalities" (names) are checked when present; other keys ("recipe",
 * "provenance", ...) are free-form. */
const char *tm_manifest_dataset_path(const tm_manifest *m); /* NULL when none */
const char *tm_manifest_dataset_name(const tm_manifest *m); /* NULL when none */
/* Expected rows of split from dataset.json's "splits", -1 when not given. */
int64_t tm_manifest_split_expected(const tm_manifest *m, const char *split);
/* A top-level dataset.json value as compact JSON (strings unquoted), NULL
 * when absent. */
const char *tm_manifest_dataset_value(const tm_manifest *m, const char *key);

/* Problems found with keep_going: the count of all, and the message of
 * the i-th kept one (i < min(count, max_problems)) with its line. */
int64_t tm_manifest_problem_count(const tm_manifest *m);
const char *tm_manifest_problem(const tm_manifest *m, int64_t i, int64_t *line);

/* ---------------------------------------------------------- media checks */

typedef struct {
    int decode;  /* 0: each file exists and is a regular file; 1: decode it too */
    int threads; /* worker threads; 0: tm_get_num_threads() */
    tm_image_decode_params image; /* channels 0 (as stored), default limits */
    tm_audio_load_params audio;   /* sample_rate 0 (as stored), default limits */
} tm_media_check_params;

tm_media_check_params tm_media_check_default_params(void);

/* What the check found for one row. Statuses are TM_OK or the failure;
 * has_* is 0 when the row has no such modality (its status is TM_OK). */
typedef struct {
    int has_image, has_audio;
    tm_status image_status, audio_status;
    /* with decode: */
    int width, height, channels; /* as stored (channels 1..4) */
    const char *image_format;    /* "png", ... */
    double seconds;              /* audio duration */
    int sample_rate, audio_channels;
    const char *audio_format;    /* "wav/pcm16", ... */
    /* the first problem, "FILE:LINE: image 'x.png': ...", NULL when fine;
     * with decode it includes a region outside the image and words that
     * end after the audio (by more than 0.05 s) */
    const char *error;
} tm_media_info;

typedef struct tm_media_report tm_media_report;

/* Checks the media of every row of m, in parallel. Per-row failures are
 * recorded, not returned: the call fails only for bad params or
 * TM_ERR_NOMEM. */
tm_status tm_manifest_check_media(tm_media_report **out, const tm_manifest *m,
                                  const tm_media_check_params *params);
/* Row i's result (the manifest's row numbering), NULL when out of range. */
const tm_media_info *tm_media_report_row(const tm_media_report *r, int64_t i);
/* Rows with an error. */
int64_t tm_media_report_failures(const tm_media_report *r);
void tm_media_report_free(tm_media_report *r); /* NULL is harmless */

/* -------------------------------------------------------------- loader */

/* Augmentations the loader applies, each drawn from (seed, epoch, row) so
 * that batches are the same for any number of workers. Flags turn each on. */
typedef struct {
    /* image, in this order, on the resized image in [0, 1] (the cached
     * tensor), before normalisation; erasing after it */
    int image_crop;   /* random resized crop back to H x W */
    int image_flip;
    int image_rotate;
    int image_jitter; /* colour jitter */
    int image_erase;
    tm_image_aug_params image; /* tm_image_aug_default_params() */
    /* audio: wave runs tm_audio_augment on the decoded waveform (the cache
     * then holds waveforms, and the log-mel is computed each time);
     * specaug masks the log-mel */
    int audio_wave;
    tm_audio_aug_params audio; /* tm_audio_aug_default_params(): all off */
    int specaug;
    tm_specaug_params spec; /* tm_specaug_default_params() */
    /* text, on the raw text before tokenising */
    float text_delete_prob;     /* tm_text_delete_words; 0 */
    const tm_synonyms *synonyms; /* NULL: no replacement */
    float synonym_prob;          /* 0 */
    /* modality dropout (text, image, audio): tm_modality_dropout clears
     * present flags; the data stays in the batch */
    float modality_dropout[3]; /* 0 */
} tm_loader_aug;

/* Everything off, each front-end's default parameters in place. */
tm_loader_aug tm_loader_aug_default(void);

/* How a loader reads a manifest. The shapes are the model's
 * (tm_model_info); a zero shape leaves that input out (NULL in batches). */
typedef struct {
    int64_t batch_size;      /* 32 */
    /* shapes */
    int64_t text_tokens;     /* T: tokens per example (needs tokenizer); 0: no text */
    int32_t pad_id;          /* fills tokens after the text; 0 */
    int64_t image_channels, image_h, image_w; /* 0: no image */
    int64_t n_mels, n_frames;                 /* 0: no audio */
    /* the present mask's columns: TM_MODALITY_* bits in the model's order;
     * default text, image, audio */
    int n_modalities;
    unsigned modality[4];
    /* TM_MODALITY_* bits neither read nor decoded: reported missing in
     * every example (a training stage that feeds only some modalities); 0 */
    unsigned skip_modalities;
    /* which rows */
    const char *split;       /* rows of this split; NULL: every row */
    const int64_t *rows;     /* or these row indices (copied; repeats
                                allowed); overrides split when n_rows > 0 */
    int64_t n_rows;
    /* order */
    int shuffle;             /* a new permutation each epoch; 1 */
    uint64_t seed;           /* shuffling and augmentation; 0 */
    int drop_last;           /* leave out a last short batch of an epoch; 0 */
    int rank, world;         /* data-parallel sharding: 0, 1 */
    /* machinery */
    int workers;             /* threads; 0: max(2, tm_get_num_threads()) */
    int prefetch;            /* batches made ahead; 0: 2 x workers */
    size_t cache_bytes;      /* decoded-media cache cap; 2 GiB; 0: no cache */
    int skip_bad;            /* 0: a bad media file fails tm_loader_next;
                                1: that modality is marked missing and
                                counted (stats.bad_media) */
    int max_words;           /* word spans per example in batches; 16 */
    /* front-ends */
    const tm_tokenizer *tokenizer; /* kept by the caller while the loader lives */
    tm_preprocess_config preprocess; /* tm_preprocess_default_config() */
    int augment;             /* apply `aug`; 0 */
    tm_loader_aug aug;
} tm_loader_config;

/* The defaults above, with bench-small's shapes: 32 tokens, 1 x 32 x 32
 * images, 64 x 100 log-mels. */
tm_loader_config tm_loader_default_config(void);

/* One batch, laid out as tm_model_inputs (row-major). B is the loader's
 * batch_size; `size` examples are real (fewer in a last short batch of an
 * epoch), the rows after them are padding: pad tokens, zeros, label
 * TM_LABEL_NONE, nothing present. Valid until the next tm_loader_next,
 * tm_loader_seek or tm_loader_free. */
typedef struct {
    int64_t size, capacity;  /* examples, and B */
    int32_t *tokens;   /* (B, T) the text's ids, then pad_id; NULL without text */
    int32_t *n_tokens; /* (B) ids before the padding */
    float *image;      /* (B, C, H, W) normalised; NULL without image */
    float *mel;        /* (B, n_mels, n_frames); NULL without audio */
    int32_t *labels;   /* (B) TM_LABEL_NONE when none */
    uint8_t *present;  /* (B, n_modalities) 1 = present */
    int64_t *rows;     /* (B) manifest rows (-1 for padding) */
    const char **ids;  /* (B) example ids (NULL for padding) */
    /* alignment, after resizing and augmentation: */
    float *region;     /* (B, 4) x0, y0, x1, y1 in model-input pixels; -1s when none */
    int32_t *n_words;  /* (B) word spans given (at most max_words) */
    int32_t *word_frames; /* (B, max_words, 2) [start, end) mel frames of each
                             word (start = floor(t0 * rate / hop), end =
                             ceil(t1 * rate / hop), clipped to n_frames); -1 after */
    int64_t epoch;     /* the epoch of every example in the batch */
    int64_t index;     /* position of its first example in this rank's epoch */
} tm_batch;

/* A position in the stream of examples: epoch, and the examples of this
 * rank's epoch already returned. */
typedef struct {
    int64_t epoch, index;
} tm_loader_pos;

/* Worker-side figures (work, decode, cache, bad_media) count every example
 * made, including those of batches prefetched but not yet returned. */
typedef struct {
    int64_t batches, examples;    /* returned so far */
    double elapsed_s;             /* since creation or the last seek */
    double examples_per_s;        /* examples / elapsed_s */
    double wait_s;                /* time tm_loader_next waited for workers */
    double work_s;                /* worker time making examples (all workers) */
    double decode_s;              /* of which decoding and preprocessing media */
    int64_t cache_hits, cache_misses; /* media lookups */
    int64_t cache_entries;
    size_t cache_bytes;
    int64_t bad_media;            /* modalities marked missing by skip_bad */
} tm_loader_stats;

typedef struct tm_loader tm_loader;

/* Makes a loader over m (which must outlive it) and starts its workers at
 * epoch 0, index 0. Checks the config: TM_ERR_INVALID naming the field
 * (shapes that disagree with preprocess: image channels/height/width,
 * audio n_mels, text max_length when set; a split with no rows; a rank
 * whose share is empty; a modality listed without a shape; text without a
 * tokenizer), TM_ERR_NOMEM. */
tm_status tm_loader_new(tm_loader **out, const tm_manifest *m, const tm_loader_config *cfg);

/* The next batch. At the end of an epoch *out is NULL once (TM_OK), and
 * the call after that starts the next epoch. A worker's failure (a corrupt
 * or missing media file without skip_bad) is returned here, naming the
 * manifest line and the file; the loader then returns it again until
 * tm_loader_seek. */
tm_status tm_loader_next(tm_loader *l, const tm_batch **out);

/* The position of the next example to be returned (after the last batch of
 * an epoch: index = epoch size). */
tm_loader_pos tm_loader_position(const tm_loader *l);
/* Continues from pos exactly as if the loader had got there by reading
 * (same seed and config): a resumed run sees the batches it would have
 * had. index may be any value in 0..epoch size. Drops prefetched work.
 * TM_ERR_INVALID for a negative or out-of-range position. */
tm_status tm_loader_seek(tm_loader *l, tm_loader_pos pos);

/* Examples of this rank's epoch (floor(rows / world)), and batches in it. */
int64_t tm_loader_epoch_size(const tm_loader *l);
int64_t tm_loader_epoch_batches(const tm_loader *l);

tm_loader_stats tm_loader_get_stats(const tm_loader *l);

/* Stops the workers and frees everything. NULL is harmless. */
void tm_loader_free(tm_loader *l);

#ifdef __cplusplus
}
#endif
#endif
