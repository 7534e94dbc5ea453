/* The train layer's internal pieces shared by trainer.c (the loop),
 * checkpoint.c (checkpoint folders, pointers, pruning) and validate.c (the
 * validation pass). */
#ifndef TM_TRAIN_INTERNAL_H
#define TM_TRAIN_INTERNAL_H

#include "trimodal/train.h"

/* File names inside a checkpoint folder (besides the model folder's
 * config.json and model.safetensors). */
#define TM_CKPT_OPTIM "optimizer.safetensors"
#define TM_CKPT_STATE "trainer.json"
#define TM_CKPT_FORMAT "trimodal-train-1"

/* What a checkpoint holds beyond the public record. */
typedef struct {
    tm_train_checkpoint pub;
    char stage_name[72];
    /* f16 dynamic loss scaling (trainer.json's "loss_scaler", written when
     * has_scaler): the scaler's state, and the optimizer steps skipped in
     * the current stage (its optimizer took stage_step - stage_skipped). */
    int has_scaler;
    float scale;
    int64_t good_steps, skipped, scaler_steps, stage_skipped;
} ckpt_state;

/* "dir/name" into a new buffer (tm_free it); NULL on allocation failure. */
char *tm_train_path(const char *dir, const char *name);
/* mkdir -p of one level (the parent must exist); EEXIST is fine. */
tm_status tm_train_mkdir(const char *dir);
/* Removes a folder holding only files (a checkpoint). Missing is fine. */
tm_status tm_train_rmdir_files(const char *dir);

/* Files copied into every model folder the trainer writes (NULL: none). */
typedef struct {
    const char *tokenizer, *preprocess, *dataset;
} model_extras;

/* tm_model_save, then copies of the extras as tokenizer.json and
 * preprocess.json (each written atomically). */
tm_status tm_train_save_model(const tm_model *m, const char *dir, const model_extras *x);

/* Writes out/checkpoints/step-NNNNNN (via a temporary folder renamed into
 * place), then points checkpoints/latest at it and prunes to keep folders.
 * name_out (>= 32 bytes) gets the folder's name. */
tm_status tm_train_ckpt_write(const char *out_dir, const tm_model *m, const tm_optim *opt,
                              const ckpt_state *st, int64_t keep, const model_extras *x,
                              const tm_train_hooks *hooks, char *name_out);

/* Saves the model to out/best (replacing the previous best) with best.json. */
tm_status tm_train_save_best(const char *out_dir, const tm_model *m, const model_extras *x,
                             int64_t step, const char *metric, double value);

/* Reads trainer.json of a checkpoint folder (no other checks). */
tm_status tm_train_ckpt_read_state(const char *dir, ckpt_state *out);

/* A counter-based hash of (seed, a, b) for derived seeds and RNG counters. */
uint64_t tm_train_mix(uint64_t seed, uint64_t a, uint64_t b);

#endif
