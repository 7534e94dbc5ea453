/*
 * trimodal train: the trainer behind `trimodal train --config run.json`.
 *
 * A run config (JSON, ../docs/training.md) names a model, data, an output
 * folder and a list of stages (a curriculum). Each stage has its data
 * overrides, its length in steps or epochs, its weighted objectives
 * (classification, contrastive, caption, masked) with optional weight
 * schedules, the tensors it freezes and its optimizer. A stage starts from
 * the weights the previous one ended with, with a fresh optimizer.
 *
 *   tm_run_config *cfg;
 *   tm_run_config_load(&cfg, "run.json");
 *   tm_train_options o = tm_train_default_options();
 *   o.resume = 1;                       // continue from out/checkpoints
 *   tm_trainer *t;
 *   tm_trainer_new(&t, cfg, &o);
 *   tm_status s = tm_trainer_run(t);    // to the end, an early stop or an error
 *   tm_train_result r = tm_trainer_result(t);
 *   tm_trainer_free(t); tm_run_config_free(cfg);
 *
 * A step: fill a batch from the data source at the run's data position;
 * apply the stage's modality mask and modality dropout to the present
 * mask; set the loss weights of the step; forward; check the loss;
 * backward (f16 stages: with the loss scale); average the gradients over
 * the processes of a data-parallel run (tm_dist_*, below; each process
 * holds batch_size / world rows of the global batch); zero the frozen
 * tensors' gradients; f16: unscale them, and on overflow skip the rest of
 * the step and lower the scale; clip; check the gradient norm; optimizer
 * step with the stage's learning rate schedule.
 *
 * Everything random is a pure function of the run seed and a position
 * (step, epoch, example), never of process history: the batch order is a
 * function of (seed, stage, epoch), the graph's dropout counter is set to
 * a function of (seed, global step) before each forward pass, modality
 * dropout draws from (seed, stage, epoch, example). So a run resumed from a
 * checkpoint continues with exactly the losses the uninterrupted run had
 * (bitwise, for the same thread count).
 *
 * Output folder: metrics.jsonl (a JSON line per logged step and per
 * validation), run.json (the run config as the trainer understood it),
 * checkpoints/step-NNNNNN/ (a model folder plus optimizer.safetensors and
 * trainer.json), checkpoints/latest and checkpoints/best (pointer files
 * naming a checkpoint), final/ (the model at the end) and best/ (a copy of
 * the best checkpoint's model).
 *
 * The library never prints: progress, validation results and events go to
 * the hooks of tm_train_options, errors to tm_last_error().
 *
 * Thread-safety: a trainer is used by one thread; kernels use the
 * library's thread pool. Run configs are plain data.
 */
#ifndef TRIMODAL_TRAIN_H
#define TRIMODAL_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/core.h"
#include "trimodal/data.h"
#include "trimodal/model.h"
#include "trimodal/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ----------------------------------------------------------- objectives */

typedef enum {
    TM_LOSS_CLASSIFICATION = 0, /* cross-entropy of the classifier */
    TM_LOSS_CONTRASTIVE,        /* symmetric InfoNCE over the present modality pairs */
    TM_LOSS_CAPTION,            /* captioning language-model loss */
    TM_LOSS_MASKED,             /* masked-token loss */
    TM_LOSS_COUNT
} tm_loss_kind;

/* "classification", "contrastive", "caption", "masked"; NULL if out of range. */
const char *tm_loss_name(tm_loss_kind k);

typedef enum {
    TM_WEIGHT_CONSTANT = 0, /* weight */
    TM_WEIGHT_LINEAR,       /* weight * (from + (to - from) * min(t / steps, 1)) */
    TM_WEIGHT_COSINE,       /* weight * (to + (from - to) * (1 + cos(pi min(t / steps, 1))) / 2) */
    TM_WEIGHT_KIND_COUNT
} tm_weight_kind;

/* One objective of a stage. A loss that a stage does not name has weight
 * 0 (it gets no gradient). */
typedef struct {
    int enabled;           /* named in the stage's objectives */
    double weight;         /* >= 0 */
    tm_weight_kind schedule;
    double from, to;       /* the schedule's factors at t = 0 and t >= steps (0 and 1) */
    int64_t steps;         /* ramp length; 0 = the stage's length */
    float label_smoothing; /* classification only, in [0, 1) */
} tm_objective;

/* The weight of an objective at step t (0-based, within its stage) of a
 * stage of stage_steps steps: 0 when not enabled; the formulas above with
 * steps = stage_steps when o->steps is 0. Computed in double. */
double tm_objective_weight_at(const tm_objective *o, int64_t t, int64_t stage_steps);

/* ----------------------------------------------------------- the config */

#define TM_TRAIN_MAX_STAGES 32
#define TM_TRAIN_MAX_NAMES 64 /* freeze prefixes, no_decay patterns */

/* Which data a stage reads. Every field may be overridden by a stage's
 * "data" object (the rest is inherited from the run's "data"). Strings are
 * owned by the config. */
typedef struct {
    char *manifest;    /* a dataset manifest (JSONL), or NULL */
    char *tokenizer;   /* tokenizer.json for the text (NULL: the model folder's) */
    char *preprocess;  /* preprocess.json (NULL: the model folder's, else defaults) */
    char *train_split; /* "train" */
    char *val_split;   /* "val"; NULL or "" = no validation data */
    int workers;       /* loader threads; 0 = the loader's default */
    /* The modalities fed to the model, by name ("text", "vision",
     * "audio"); n_modalities -1 = every modality of the model. Others are
     * marked absent in the present mask. */
    int n_modalities;
    char *modalities[TM_MODEL_MAX_MODALITIES];
    /* Probability of dropping each present modality of an example (text,
     * vision, audio), never all of them (tm_modality_dropout). */
    float modality_dropout[3];
    /* The built-in synthetic source (for tests and demos): examples of
     * num_classes classes, each modality a class prototype plus noise. */
    int synthetic;            /* 1 when "synthetic" is given */
    int64_t synth_examples;   /* training examples (256) */
    int64_t synth_val;        /* validation examples (64) */
    double synth_noise;       /* noise std relative to the prototypes (0.5) */
    double synth_missing;     /* probability that an example lacks a modality (0) */
    uint64_t synth_seed;      /* the dataset (not the run) seed (1) */
    int64_t synth_nan_after;  /* > 0: training examples at stream position
                                 epoch * examples + index >= this carry a NaN
                                 (tests of the divergence stop); 0 = off */
    /* "augment" (docs/training.md, "Augmentations"): the loader's seeded
     * augmentations of the training split; validation is never augmented.
     * augment 1 when an "augment" object is in force (a stage's replaces the
     * run's whole object; null turns it off). aug holds the switches and
     * parameters; its modality_dropout and synonyms stay 0 / NULL (the
     * trainer applies modality_dropout above). Only manifest data is
     * augmented: a custom opener (tm_train_open_fn) may use these too. */
    int augment;
    tm_loader_aug aug;
} tm_train_data;

/* The model's modalities (bit i: mi->modality[i]) that data does not feed:
 * 0 when it does not name its modalities. A stage's graphs leave their
 * encoders out and its loader does not decode their media. */
unsigned tm_train_data_unfed(const tm_train_data *data, const tm_model_info *mi);

typedef struct {
    char *name;
    tm_train_data data;    /* the run's data with the stage's overrides applied */
    int64_t steps;         /* > 0, or 0 when epochs is given */
    int64_t epochs;        /* > 0, or 0 when steps is given */
    tm_objective objectives[TM_LOSS_COUNT];
    int n_freeze;
    char *freeze[TM_TRAIN_MAX_NAMES];   /* tensor-name prefixes: "text.", "vision.layers.0." */
    tm_optim_params optim;
    tm_lr_schedule lr;     /* total_steps is the stage's length (set when it starts) */
    float clip_grad_norm;  /* 0 = no clipping */
    int n_no_decay;
    char *no_decay[TM_TRAIN_MAX_NAMES]; /* substrings of names exempt from weight decay */
    /* The stage's "dtype" (the run's when the stage names none): the
     * precision of its GEMMs (tm_model_graph_opts.precision) in training
     * and validation: TM_F32, TM_BF16 or TM_F16 (f16 with dynamic loss
     * scaling, see tm_run_config.loss_scale). */
    tm_dtype precision;
} tm_train_stage;

typedef struct {
    char *origin;          /* the file it came from (for messages) or "<memory>" */
    char *model;           /* a model config file or a model folder; NULL when inline */
    char *model_json;      /* an inline model config (JSON text), or NULL */
    uint64_t init_seed;    /* fresh weights' seed (model from a config) */
    char *out;             /* output folder */
    uint64_t seed;
    int64_t batch_size;
    int threads;           /* 0 = the library's default */
    char *dtype;           /* "f32" (default), "bf16" or "f16": every stage's
                              precision unless the stage gives its own */
    int64_t log_every;     /* a metrics line every N steps (1) */
    int64_t ckpt_every;    /* steps between checkpoints; 0 = only at stage ends */
    int64_t ckpt_keep;     /* step checkpoints kept (the best is kept as well) */
    int64_t val_every;     /* steps between validations; 0 = only at stage ends */
    int64_t val_batch_size;
    int64_t val_max_batches; /* 0 = the whole validation split */
    char *val_metric;      /* "loss", "accuracy", "recall_at_1", or a loss name */
    int val_maximize;      /* mode "max" */
    int64_t patience;      /* validations without improvement that end a stage; 0 = off */
    double min_delta;      /* an improvement must exceed this */
    tm_train_data data;
    int n_stages;
    tm_train_stage stages[TM_TRAIN_MAX_STAGES];
    /* "checkpoint_blocks": true: gradient checkpointing per transformer
     * block (same gradients, less activation memory, about a third more
     * compute); the log's "graph" line reports the arena sizes. */
    int checkpoint_blocks;
    /* "allreduce_bucket_mb": the size of the gradient all-reduce buckets
     * of a data-parallel run (4 MiB). */
    double allreduce_bucket_mb;
    /* "loss_scale": the dynamic loss scaler of f16 stages ({"init",
     * "growth_factor", "backoff_factor", "growth_interval", "min", "max"};
     * tm_loss_scaler_default_params() for what is not given). One scaler
     * lives through the whole run (its state is in every checkpoint). */
    tm_loss_scaler_params loss_scale;
} tm_run_config;

/* Parses a run config. Strict: unknown keys, wrong types and bad values
 * fail with TM_ERR_INVALID and a message naming the origin and the key
 * path ("run.json: \"stages[1].optimizer.lr\" must be a number >= 0");
 * malformed JSON with TM_ERR_FORMAT; over 4 MiB with TM_ERR_LIMIT.
 * tm_run_config_parse leaves paths as written (relative to the working
 * directory). tm_run_config_load resolves the relative input paths
 * ("model", and "manifest", "tokenizer", "preprocess" of "data" and of
 * every stage's "data") against the folder of the config file; "out"
 * stays relative to the working directory. */
tm_status tm_run_config_parse(tm_run_config **out, const char *json, size_t len,
                              const char *origin);
tm_status tm_run_config_load(tm_run_config **out, const char *path);
void tm_run_config_free(tm_run_config *c); /* NULL is harmless */

/* The config as canonical JSON (every key, defaults filled in); tm_free()
 * it. NULL on allocation failure. */
char *tm_run_config_to_json(const tm_run_config *c);

/* A 64-bit hash of everything that changes the numbers a run produces
 * (not "out", "threads" or "log_every"); a checkpoint records it so that
 * resuming with another config is refused. */
uint64_t tm_run_config_hash(const tm_run_config *c);

/* -------------------------------------------------------- data sources */

/* Where a run reads examples from. The trainer owns the data position
 * (epoch, index): fill must be a pure function of (epoch, index, count)
 * for the seed the source was opened with, which is what makes a resumed
 * run exact. A source shuffles per epoch as it likes, deterministically. */
typedef struct {
    void *ctx;
    /* Examples in one epoch of this split (>= 1). */
    int64_t (*size)(void *ctx);
    /* Writes examples index .. index + count - 1 of epoch's order into rows
     * 0 .. count - 1 of in (buffers of a graph of `batch` >= count rows):
     * tokens, image, mel, labels (when not NULL) and present (n_modalities
     * columns, 1 = present). index + count <= size. */
    tm_status (*fill)(void *ctx, int64_t epoch, int64_t index, int64_t count,
                      const tm_model_inputs *in, int64_t batch);
    void (*close)(void *ctx); /* may be NULL */
} tm_train_source;

/* Opens split `split` (data->train_split or data->val_split) of data for
 * model m, shuffling with seed. TM_ERR_UNSUPPORTED when the opener cannot
 * read this kind of data. */
typedef tm_status (*tm_train_open_fn)(void *user, const tm_train_data *data, const char *split,
                                      uint64_t seed, const tm_model *m, tm_train_source *out);

/* The built-in synthetic source of data->synthetic (any split name;
 * val_split gives the validation examples). Examples are pure functions of
 * (synth_seed, split, example): class c = a hash of the example; tokens
 * drawn from a class-dependent range of the vocabulary with noise; image
 * and log-mel a class prototype plus N(0, noise) noise; labels c;
 * captions (for a caption head) a function of the latent; masked tokens
 * (for a masked-token head) 15% of the real tokens, drawn per epoch. The
 * order of an epoch is a permutation drawn from (seed, epoch). */
tm_status tm_train_synthetic_open(const tm_train_data *data, const char *split, uint64_t seed,
                                  const tm_model *m, tm_train_source *out);

/* ------------------------------------------------------- hooks, options */

/* What a step did, for progress bars and logs. */
typedef struct {
    int64_t step, total_steps;  /* global steps done (after this one), planned */
    int stage, n_stages;
    const char *stage_name;
    int64_t stage_step, stage_steps; /* within the stage, done and planned */
    int64_t epoch;                   /* the stage data epoch of this step's batch (0-based) */
    float lr;
    float total;                     /* the weighted loss */
    float loss[TM_LOSS_COUNT];       /* each part, NaN when absent */
    float weight[TM_LOSS_COUNT];     /* this step's weights */
    float grad_norm;                 /* before clipping */
    double samples_per_s;            /* over the steps of this process */
    double elapsed_s, eta_s;
    double data_wait_s;              /* of elapsed_s: waiting for training batches */
    /* f16 stages (dynamic loss scaling): the scale this step's backward
     * used, whether its gradients overflowed so that the optimizer step was
     * skipped (and the scale lowered), and the steps skipped so far in the
     * run. 1, 0, 0 in f32 and bf16 stages. */
    float loss_scale;
    int skipped;
    int64_t skipped_steps;
    tm_dtype precision;              /* the stage's "dtype" */
} tm_train_progress;

/* A validation pass. Metrics are NaN when they do not apply. */
typedef struct {
    int64_t step;
    int stage;
    const char *stage_name;
    int64_t examples;
    double total;                /* weighted with the stage's current weights */
    double loss[TM_LOSS_COUNT];
    double accuracy;             /* classification, over labelled examples */
    double recall_at_1;          /* contrastive, within each batch, mean over pairs */
    double metric;               /* the watched one */
    int improved;                /* a new best of the run */
    int64_t bad_evals;           /* validations in this stage without improvement */
} tm_train_eval;

typedef enum {
    TM_TRAIN_EVENT_INFO = 0,
    TM_TRAIN_EVENT_WARNING,    /* e.g. a damaged checkpoint skipped on resume */
    TM_TRAIN_EVENT_STAGE,      /* a stage starts */
    TM_TRAIN_EVENT_CHECKPOINT, /* a checkpoint was written */
    TM_TRAIN_EVENT_EARLY_STOP, /* a stage ended early */
    TM_TRAIN_EVENT_RESUME,     /* resuming from a checkpoint */
} tm_train_event;

typedef struct {
    void *user;
    void (*on_step)(void *user, const tm_train_progress *p);
    void (*on_eval)(void *user, const tm_train_eval *e);
    void (*on_event)(void *user, tm_train_event kind, const char *message);
    /* Called while a checkpoint is written, after each file (name: a file
     * name of the checkpoint, in the temporary folder dir); for tests that
     * simulate a crash in the middle of a write. */
    void (*on_checkpoint_file)(void *user, const char *dir, const char *name);
} tm_train_hooks;

typedef struct {
    int resume;            /* continue from the latest valid checkpoint (none: start) */
    int force;             /* resume even when the run config's hash changed */
    const char *out;       /* overrides the config's "out" (NULL: keep it) */
    int64_t max_steps;     /* stop (cleanly, with a checkpoint) after this global
                              step; 0 = run to the end */
    tm_train_open_fn open; /* NULL: the synthetic source only */
    void *open_user;
    /* Copied as tokenizer.json and preprocess.json into every model folder
     * the trainer writes (checkpoints, best, final), so that each is a
     * complete model folder; NULL: none. */
    const char *tokenizer_file;
    const char *preprocess_file;
    /* Copied as dataset.json into every model folder (its "classes" name
     * the classifier's outputs); NULL: none. */
    const char *dataset_file;
    tm_train_hooks hooks;
} tm_train_options;

tm_train_options tm_train_default_options(void);

/* ----------------------------------------------------------- the trainer */

typedef struct tm_trainer tm_trainer;

typedef struct {
    int64_t steps;         /* global steps done */
    int64_t total_steps;   /* planned */
    int stages_done;
    int stopped_early;     /* some stage ended by early stopping */
    int diverged;          /* stopped on a NaN or infinite loss or gradient */
    int interrupted;       /* stopped by max_steps */
    int has_eval;
    tm_train_eval last_eval;
    double best_metric;    /* NaN without validation */
    int64_t best_step;     /* -1 without validation */
    float last_loss[TM_LOSS_COUNT], last_total;
    double elapsed_s;      /* this process's training time */
    double samples_per_s;
    double data_wait_s;    /* of elapsed_s: waiting for training batches (the
                              loader's fill; compute-bound when near 0) */
    int64_t checkpoints;   /* written by this process */
    int64_t skipped_steps; /* f16: optimizer steps skipped on gradient overflow */
    float loss_scale;      /* f16: the loss scale at the end (1 without f16) */
} tm_train_result;

/* Prepares a run: checks the config against the model (objectives the
 * model lacks, freeze prefixes that match nothing, batch sizes), creates
 * the output folder, loads the model (from the config, or from the latest
 * valid checkpoint when resuming; a damaged or incomplete checkpoint is
 * skipped with a warning event) and opens nothing else yet. Resuming from
 * a checkpoint of a different config fails with TM_ERR_INVALID unless
 * force is set. */
tm_status tm_trainer_new(tm_trainer **out, const tm_run_config *cfg, const tm_train_options *o);
/* cfg, and the strings and callbacks of o, must outlive the trainer; o
 * (may be NULL: the defaults) is copied. */

/* Trains to the end of the last stage (TM_OK), or to max_steps (TM_OK,
 * result.interrupted), or until a NaN or infinite loss or gradient norm:
 * then the last good state (the weights before the bad step) is written
 * as a checkpoint and the call fails with TM_ERR_INVALID naming the step,
 * the stage and the loss part. In an f16 stage, gradients that overflow
 * under the loss scale are not a divergence (the step is skipped, the
 * scale lowered) unless the scale is already at its minimum. Other
 * failures (I/O, data) return their status; the last checkpoint written
 * stays valid. */
tm_status tm_trainer_run(tm_trainer *t);

tm_train_result tm_trainer_result(const tm_trainer *t);
tm_model *tm_trainer_model(tm_trainer *t);
const char *tm_trainer_out_dir(const tm_trainer *t);
void tm_trainer_free(tm_trainer *t); /* NULL is harmless */

/* ---------------------------------------------------------- checkpoints */

/* What trainer.json of a checkpoint records. */
typedef struct {
    int64_t step;         /* global steps done */
    int stage;            /* the stage to continue (== n_stages: all done) */
    int64_t stage_step;   /* steps done in it */
    int64_t epoch, index; /* its data position */
    uint64_t seed, config_hash;
    double best_metric;   /* NaN when none */
    int64_t best_step;    /* -1 when none */
    double stage_best;    /* the stage's best (early stopping), NaN when none */
    int64_t bad_evals;
    int64_t metrics_bytes; /* length of metrics.jsonl at the checkpoint */
} tm_train_checkpoint;

/* Reads and checks checkpoint folder dir: trainer.json complete and
 * consistent, config.json, model.safetensors and optimizer.safetensors
 * present. TM_ERR_FORMAT naming what is wrong. */
tm_status tm_train_checkpoint_read(const char *dir, tm_train_checkpoint *out);

/* The latest valid checkpoint of an output folder: the one checkpoints/latest
 * names when valid, else the valid one with the highest step. *path_out
 * (tm_free it) is NULL and TM_OK returned when there is none. Each
 * damaged one skipped is reported through warn (may be NULL). */
tm_status tm_train_checkpoint_latest(const char *out_dir, char **path_out,
                                     void (*warn)(void *user, const char *message), void *user);

/* ---------------------------------------------------- data parallelism */

/* The process group of a data-parallel run (src/train/dist.c). Built with
 * MPI (CMake option TM_MPI, on when MPI is found) it wraps
 * MPI_COMM_WORLD; without MPI, or when the program was not started by
 * mpirun, it is a group of one process and every call below is a cheap
 * no-op. tm_dist_init is called once by the program (not the library's
 * other functions) before any other tm_dist call; tm_dist_finalize at its
 * end. Thread-safety: call these from the training thread only. */
tm_status tm_dist_init(int *argc, char ***argv);
void tm_dist_finalize(void);
int tm_dist_rank(void);       /* 0 .. world - 1 (0 without MPI) */
int tm_dist_world(void);      /* processes (1 without MPI) */
int tm_dist_available(void);  /* 1 when the library was built with MPI */

/* Averages (sum / world) n floats of buf across the ranks in place, in
 * buckets of bucket_floats floats (0 = 1 Mi floats) with MPI_Iallreduce,
 * several buckets in flight at once. Every rank gets bitwise the same
 * result. */
tm_status tm_dist_allreduce_mean(float *buf, size_t n, size_t bucket_floats);
/* Sums n doubles across the ranks in place (logging, validation). */
tm_status tm_dist_allreduce_sum_f64(double *buf, size_t n);
/* Copies n floats of rank 0's buf to every rank (initial weights). */
tm_status tm_dist_broadcast(float *buf, size_t n);
/* Every rank's `bytes` bytes, in rank order, into all (world * bytes);
 * a tm_allgather_fn (ctx unused), e.g. for tm_model_graph_opts.gather. */
tm_status tm_dist_allgather(void *ctx, const void *mine, void *all, size_t bytes);
tm_status tm_dist_barrier(void);
/* Ends every process of the group with exit code `code` (MPI_Abort); a
 * program calls it when one rank fails so that the others do not wait
 * forever. Without MPI (or with one process) it returns and does nothing. */
void tm_dist_abort(int code);

#ifdef __cplusplus
}
#endif
#endif
