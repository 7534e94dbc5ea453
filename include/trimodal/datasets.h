/*
 * trimodal datasets: builders of the datasets that trimodal ships recipes
 * for. Each writes a dataset folder in the manifest format of the data
 * layer (docs/ARCHITECTURE.md): manifest.jsonl (one example a line, media
 * paths relative to it), the media, and dataset.json (classes, recipe,
 * provenance, counts).
 *
 * FashionTri (docs/datasets.md): every Fashion-MNIST image paired with a
 * written hint and a spoken hint about the same garment. Hint words come
 * from WordNet (configs/fashion-tri/terms.json); spoken hints are rendered
 * by the Debian text-to-speech engines espeak-ng, flite and festival, run
 * as child processes, then pitch-shifted, time-stretched and mixed with
 * coloured noise. Every random choice is a pure function of (seed, example,
 * purpose), so the result does not depend on the thread count.
 *
 * Thread-safety: a build uses the library's thread pool (its size is
 * tm_set_num_threads() or TRIMODAL_THREADS); run one build at a time per
 * output folder. The progress callback is called on the thread that called
 * tm_fashiontri_build().
 */
#ifndef TRIMODAL_DATASETS_H
#define TRIMODAL_DATASETS_H

#include <stdint.h>

#include "trimodal/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a build is doing, for progress reports. */
typedef struct {
    const char *stage; /* "render" (text-to-speech) or "examples" (media) */
    int64_t done;      /* items of this stage finished */
    int64_t total;     /* items of this stage */
    double elapsed_s;  /* since the stage began */
} tm_fashiontri_progress;

typedef void (*tm_fashiontri_progress_fn)(void *ctx, const tm_fashiontri_progress *p);

/* The build's settings, from tm_fashiontri_default_params(). New fields are
 * added at the end. */
typedef struct {
    const char *out_dir;                /* the dataset folder (created); required */
    const char *source_dir;             /* Fashion-MNIST's four IDX files, gzipped or not;
                                           NULL: /usr/share/datasets/fashion-mnist */
    const char *terms_path;             /* the hint vocabulary; NULL:
                                           configs/fashion-tri/terms.json (relative to the
                                           working directory) */
    const char *cache_dir;              /* rendered utterances; NULL: out_dir/.tts-cache */
    uint64_t seed;                      /* 1 */
    int64_t limit_train;                /* use the first N training images; 0: all 60000 */
    int64_t limit_test;                 /* use the first N test images; 0: all 10000 */
    tm_fashiontri_progress_fn progress; /* NULL: none */
    void *progress_ctx;
    double progress_interval_s; /* least time between two reports; 1.0 */
} tm_fashiontri_params;

tm_fashiontri_params tm_fashiontri_default_params(void);

/* What a build made. */
typedef struct {
    int up_to_date; /* 1: out_dir already held this recipe; nothing was done */
    int resumed;    /* 1: an interrupted build of this recipe was completed */
    int64_t n_train, n_val, n_test;
    int64_t texts;        /* examples with a written hint */
    int64_t clips;        /* examples with a spoken hint */
    int64_t utterances;   /* distinct (voice, sentence) pairs the clips come from */
    int64_t rendered;     /* of those, rendered now (the others came from the cache) */
    double audio_seconds; /* total length of the clips */
    int64_t media_bytes;  /* images and clips on disk */
    double seconds;       /* wall time of the build */
    uint64_t recipe_hash; /* identifies the recipe (also in dataset.json) */
} tm_fashiontri_summary;

/* Checks that everything a build needs is installed: the Fashion-MNIST
 * files, the programs espeak-ng, flite, festival and dpkg-query (optional),
 * and every voice of the recipe. TM_ERR_UNSUPPORTED listing what is missing
 * and the Debian packages that provide it (scripts/deps.sh installs them),
 * TM_ERR_IO when the Fashion-MNIST files are missing. */
tm_status tm_fashiontri_check(const tm_fashiontri_params *params);

/* Builds the dataset into params->out_dir:
 *   manifest.jsonl         one example a line (docs/datasets.md lists the fields)
 *   dataset.json           classes, splits, recipe, package versions, counts
 *   images/SPLIT/NNN/IIIIII.png    28 x 28 gray
 *   audio/SPLIT/NNN/IIIIII.flac    16 kHz mono 16-bit
 * When out_dir already holds a complete build of the same recipe (seed,
 * limits, terms, voices, package versions), nothing is done and
 * summary->up_to_date is 1. A folder holding another recipe, or files that
 * are not a FashionTri build, is refused (TM_ERR_INVALID) rather than
 * overwritten. An interrupted build of the same recipe is resumed. Media
 * files are written whole (temporary file and rename), synced once at the
 * end, and manifest.jsonl and dataset.json are written atomically last, so
 * a folder with a dataset.json is complete.
 * Fails with TM_ERR_INVALID (bad params, a bad terms file, a folder in the
 * way), TM_ERR_UNSUPPORTED (see tm_fashiontri_check), TM_ERR_IO, TM_ERR_FORMAT
 * (corrupt Fashion-MNIST files), TM_ERR_NOMEM, TM_ERR_INTERNAL (a
 * text-to-speech engine failed or timed out; the message holds the end of
 * its output). summary may be NULL. */
tm_status tm_fashiontri_build(const tm_fashiontri_params *params, tm_fashiontri_summary *summary);

/* ===================================================== Fashion-MNIST */

/* Fashion-MNIST as it is (no hints, no degradation), for measuring a model
 * trained on FashionTri on the plain images: `trimodal data build
 * fashion-mnist`. Progress: split name, images done, images of the split. */
typedef void (*tm_fashionmnist_progress_fn)(void *ctx, const char *split, int64_t done,
                                             int64_t total);

/* From tm_fashionmnist_default_params(). New fields are added at the end. */
typedef struct {
    const char *out_dir;    /* the dataset folder (created); required */
    const char *source_dir; /* the four IDX files, gzipped or not; NULL:
                               /usr/share/datasets/fashion-mnist */
    int train, test;        /* the splits to write; default test only */
    tm_fashionmnist_progress_fn progress; /* NULL: none */
    void *progress_ctx;
    int64_t limit; /* only the first N images of each split; 0: all */
} tm_fashionmnist_params;

tm_fashionmnist_params tm_fashionmnist_default_params(void);

typedef struct {
    int up_to_date; /* 1: out_dir already held these splits; nothing was done */
    int64_t n_train, n_test;
} tm_fashionmnist_summary;

/* Writes into params->out_dir:
 *   manifest.jsonl               {"id","split","label","class","image"} a line
 *   dataset.json                 name "fashion-mnist", classes, splits, recipe
 *   images/SPLIT/NNN/IIIIII.png  28 x 28 gray, exactly the IDX pixels
 * Media first (synced), then manifest.jsonl and dataset.json atomically. A
 * folder that already holds the same splits from the same files is left as
 * it is (summary->up_to_date); a folder holding another dataset is refused
 * (TM_ERR_INVALID). TM_ERR_IO (missing files), TM_ERR_FORMAT (corrupt IDX),
 * TM_ERR_NOMEM. summary may be NULL. */
tm_status tm_fashionmnist_build(const tm_fashionmnist_params *params,
                                tm_fashionmnist_summary *summary);

#ifdef __cplusplus
}
#endif
#endif
