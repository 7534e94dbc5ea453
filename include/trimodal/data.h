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

#ifdef __cplusplus
}
#endif
#endif
