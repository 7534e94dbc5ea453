/* trimodal train: runs a training run config (docs/training.md) through the
 * library's trainer, shows progress on stderr (a bar on a terminal, plain
 * lines otherwise), and at the end writes SVG plots of the metrics log and
 * prints a summary table. Exit status: 0 finished (also after an early
 * stop or --max-steps), 1 bad config, data or a diverged run, 2 bad usage. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "trimodal/data.h"
#include "trimodal/eval.h"
#include "trimodal/io.h"
#include "trimodal/model.h"
#include "trimodal/text.h"
#include "trimodal/train.h"

static const char *train_help =
    "usage: trimodal train --config RUN.json [--resume] [--force] [--out DIR]\n"
    "                      [--threads N] [--max-steps N] [--progress bar|lines|none]\n"
    "                      [--no-plots] [--json]\n"
    "\n"
    "Trains a model as the run config describes (docs/training.md): the model (a\n"
    "config, a model folder, or an inline config), the data, and a list of stages,\n"
    "each with its data, length (steps or epochs), weighted objectives\n"
    "(classification, contrastive, caption, masked), frozen tensors and optimizer.\n"
    "\n"
    "options:\n"
    "  --config FILE     the run config (required)\n"
    "  --resume          continue from the latest valid checkpoint in OUT/checkpoints\n"
    "                    (a damaged one is skipped with a warning); the losses are\n"
    "                    exactly those of an uninterrupted run. Starts afresh when\n"
    "                    there is no checkpoint.\n"
    "  --force           resume even when the run config changed since the checkpoint;\n"
    "                    without --resume: start over in an OUT that holds checkpoints\n"
    "                    (they are deleted)\n"
    "  --out DIR         the output folder (overrides \"out\")\n"
    "  --threads N       threads (overrides \"threads\"; default TRIMODAL_THREADS or all CPUs)\n"
    "  --max-steps N     stop after global step N with a checkpoint (continue with --resume)\n"
    "  --progress MODE   bar: one updating line; lines: a plain line every 5% or 30 s;\n"
    "                    none. Default: bar on a terminal, lines otherwise (on stderr)\n"
    "  --no-plots        do not write OUT/plots/*.svg\n"
    "  --json            the summary as one JSON object on stdout\n"
    "\n"
    "Writes into OUT: metrics.jsonl (a JSON line per logged step and per validation),\n"
    "run.json (the config as understood), checkpoints/step-NNNNNN/ (model folder,\n"
    "optimizer state, trainer state; the last \"checkpoint.keep\" are kept) with\n"
    "checkpoints/latest naming the newest, best/ (the model with the best validation\n"
    "metric), final/ (the model at the end) and plots/ (loss.svg, lr.svg,\n"
    "validation.svg, validation_metrics.svg). A NaN or infinite loss stops the run\n"
    "with exit status 1, naming the step and the loss, after saving the weights from\n"
    "before that step as a checkpoint.\n"
    "\n"
    "Precision: \"dtype\": \"f32\" (default), \"bf16\" or \"f16\" in RUN.json (for the run, or\n"
    "per stage) multiplies the matmuls, linears and convs in that type with f32\n"
    "master weights; f16 uses dynamic loss scaling (\"loss_scale\": {\"init\",\n"
    "\"growth_factor\", \"backoff_factor\", \"growth_interval\", \"min\", \"max\"}): a step\n"
    "whose gradients overflow is skipped and the scale lowered (the progress line\n"
    "shows the scale and the skipped steps; metrics.jsonl has \"loss_scale\",\n"
    "\"skipped\"). A NaN loss still stops the run.\n"
    "\n"
    "Data parallelism: `mpirun -np N trimodal train --config RUN.json` (a build with\n"
    "MPI) splits each global batch (\"batch_size\", a multiple of N) over N processes,\n"
    "averages the gradients (\"allreduce_bucket_mb\" per bucket) and gives the losses\n"
    "of one process with the same batch; only rank 0 logs and writes. The contrastive\n"
    "loss then uses each process's local negatives (docs/training.md).\n"
    "\n"
    "Data: \"data\": {\"manifest\": FILE, \"train_split\", \"val_split\", \"tokenizer\",\n"
    "\"preprocess\"} reads a dataset through the loader; \"data\": {\"synthetic\": {...}}\n"
    "makes random but learnable examples in memory (for tests and demos). From a\n"
    "manifest, a \"caption\" objective reads each row's \"transcript\" and a \"masked\"\n"
    "objective masks 15% of the text's tokens BERT-style (docs/training.md).\n"
    "Relative input paths in RUN.json are relative to its folder; \"out\" to the\n"
    "working directory.\n"
    "\n"
    "Exit status: 0 finished (also after an early stop or --max-steps), 1 failure,\n"
    "2 bad usage.\n";

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static long env_long(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? strtol(v, NULL, 10) : 0;
}

/* ------------------------------------------------------------ progress */

enum { PROGRESS_NONE = 0, PROGRESS_LINES, PROGRESS_BAR };

typedef struct {
    int mode;
    int bar_shown;
    double last_print;
    int64_t last_step_printed;
    /* test hooks (environment, see docs/training.md) */
    long kill_at_step, crash_in_ckpt, sleep_ms;
    long ckpt_files;
} ui_state;

static const char *const SHORT[TM_LOSS_COUNT] = {"cls", "con", "cap", "mlm"};

static void fmt_time(double s, char *buf, size_t cap)
{
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, cap, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

static void clear_bar(ui_state *u)
{
    if (u->bar_shown) {
        fputs("\r\033[K", stderr);
        u->bar_shown = 0;
    }
}

static void on_step(void *user, const tm_train_progress *p)
{
    ui_state *u = user;
    if (u->sleep_ms > 0) {
        struct timespec ts = {u->sleep_ms / 1000, (u->sleep_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (u->kill_at_step > 0 && p->step >= u->kill_at_step) raise(SIGKILL); /* a test of --resume */
    if (u->mode == PROGRESS_NONE) return;
    double now = tm_time_s();
    int last = p->step == p->total_steps;
    char losses[256] = "", eta[32];
    size_t k = 0;
    for (int i = 0; i < TM_LOSS_COUNT && k < sizeof losses; i++)
        if (p->weight[i] > 0 && isfinite(p->loss[i]))
            k += (size_t)snprintf(losses + k, sizeof losses - k, " %s %.4f", SHORT[i],
                                  (double)p->loss[i]);
    fmt_time(p->eta_s, eta, sizeof eta);
    if (p->precision == TM_F16) /* the loss scale and the steps skipped on overflow */
        k += (size_t)snprintf(losses + k, k < sizeof losses ? sizeof losses - k : 0,
                              " | scale %g, %" PRId64 " skipped", (double)p->loss_scale,
                              p->skipped_steps);
    if (u->mode == PROGRESS_BAR) {
        if (!last && now - u->last_print < 0.1) return;
        u->last_print = now;
        int width = 20, fill = p->total_steps > 0 ? (int)(width * p->step / p->total_steps) : 0;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
        bar[width] = 0;
        fprintf(stderr, "\r\033[K%s [%s] %" PRId64 "/%" PRId64 " ep %" PRId64 " | loss %.4f%s | "
                "%.0f samples/s | ETA %s", p->stage_name, bar, p->step, p->total_steps, p->epoch,
                (double)p->total, losses, p->samples_per_s, eta);
        fflush(stderr);
        u->bar_shown = 1;
        return;
    }
    int64_t every = p->total_steps / 20 > 0 ? p->total_steps / 20 : 1;
    if (!last && p->step != 1 && p->step - u->last_step_printed < every &&
        now - u->last_print < 30)
        return;
    u->last_print = now;
    u->last_step_printed = p->step;
    fprintf(stderr, "step %" PRId64 "/%" PRId64 " (%s, epoch %" PRId64 "): loss %.4f%s, lr %.3g, "
            "%.0f samples/s, ETA %s\n", p->step, p->total_steps, p->stage_name, p->epoch,
            (double)p->total, losses, (double)p->lr, p->samples_per_s, eta);
}

static void on_eval(void *user, const tm_train_eval *e)
{
    ui_state *u = user;
    if (u->mode == PROGRESS_NONE) return;
    clear_bar(u);
    fprintf(stderr, "validation at step %" PRId64 " (%s, %" PRId64 " examples): loss %.4f",
            e->step, e->stage_name, e->examples, e->total);
    for (int i = 0; i < TM_LOSS_COUNT; i++)
        if (isfinite(e->loss[i])) fprintf(stderr, ", %s %.4f", tm_loss_name(i), e->loss[i]);
    if (isfinite(e->accuracy)) fprintf(stderr, ", accuracy %.4f", e->accuracy);
    if (isfinite(e->recall_at_1)) fprintf(stderr, ", recall@1 %.4f", e->recall_at_1);
    fprintf(stderr, "%s\n", e->improved ? " (best so far)" : "");
}

static void on_event(void *user, tm_train_event kind, const char *msg)
{
    ui_state *u = user;
    if (kind == TM_TRAIN_EVENT_WARNING) {
        clear_bar(u);
        fprintf(stderr, "trimodal train: warning: %s\n", msg);
        return;
    }
    if (u->mode == PROGRESS_NONE) return;
    if (kind == TM_TRAIN_EVENT_CHECKPOINT && u->mode == PROGRESS_BAR) return; /* too chatty */
    clear_bar(u);
    fprintf(stderr, "%s\n", msg);
}

static void on_ckpt_file(void *user, const char *dir, const char *name)
{
    ui_state *u = user;
    (void)dir;
    /* the N-th checkpoint dies after its weights are written: a crash in the
     * middle of a write (tests that the previous checkpoint stays good) */
    if (u->crash_in_ckpt > 0 && !strcmp(name, "model.safetensors") &&
        ++u->ckpt_files == u->crash_in_ckpt)
        raise(SIGKILL);
}

/* -------------------------------------------------- the dataset loader */

typedef struct {
    const tm_run_config *cfg;
    /* one manifest and tokenizer at a time, shared by the splits */
    char *manifest_path;
    tm_manifest *manifest;
    char *tokenizer_path;
    tm_tokenizer *tok;
    char tok_file[4096], pre_file[4096]; /* resolved, for the model folders */
    char dataset_file[4096];             /* the manifest's dataset.json (class names) */
} data_ctx;

typedef struct {
    data_ctx *dc;
    tm_loader_config lc;
    tm_loader *l;
    int64_t size, batch;
    int train;
    char split[128];
    tm_model_info mi; /* caption and masked-token ids */
} loader_src;

static int file_exists(const char *p)
{
    struct stat sb;
    return p && stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int dir_exists(const char *p)
{
    struct stat sb;
    return p && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* The tokenizer and preprocess files of a run: the data's, else the model
 * folder's. */
static void resolve_files(data_ctx *dc, const tm_train_data *d)
{
    const char *model = dc->cfg->model;
    dc->tok_file[0] = dc->pre_file[0] = 0;
    if (d->tokenizer) snprintf(dc->tok_file, sizeof dc->tok_file, "%s", d->tokenizer);
    else if (dir_exists(model)) {
        snprintf(dc->tok_file, sizeof dc->tok_file, "%s/tokenizer.json", model);
        if (!file_exists(dc->tok_file)) dc->tok_file[0] = 0;
    }
    /* dataset.json beside the manifest names the classes: model folders
     * get a copy, so classify, eval and serve show class names */
    dc->dataset_file[0] = 0;
    if (d->manifest) {
        const char *slash = strrchr(d->manifest, '/');
        int n = slash ? (int)(slash - d->manifest) : 1;
        snprintf(dc->dataset_file, sizeof dc->dataset_file, "%.*s/dataset.json", n,
                 slash ? d->manifest : ".");
        if (!file_exists(dc->dataset_file)) dc->dataset_file[0] = 0;
    }
    if (d->preprocess) snprintf(dc->pre_file, sizeof dc->pre_file, "%s", d->preprocess);
    else if (dir_exists(model)) {
        snprintf(dc->pre_file, sizeof dc->pre_file, "%s/preprocess.json", model);
        if (!file_exists(dc->pre_file)) dc->pre_file[0] = 0;
    }
}

/* Captions and masked tokens from manifest rows (docs/training.md, "Captions
 * and masked tokens from a manifest"). */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* a uniform double in [0, 1) from (seed, epoch, row, position, draw) */
static double draw01(uint64_t seed, int64_t epoch, int64_t row, int64_t pos, int k)
{
    uint64_t h = mix64(seed ^ mix64((uint64_t)epoch ^ mix64((uint64_t)row ^
                                     mix64((uint64_t)pos * 4 + (uint64_t)k))));
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

/* Row r's caption: [bos, ids of its transcript..., eos, pad...]; all pad
 * (not scored) when the row has no transcript. */
static tm_status fill_caption(loader_src *s, const tm_manifest_row *row, int32_t *dst)
{
    const tm_model_info *mi = &s->mi;
    int64_t T = mi->caption_tokens;
    for (int64_t i = 0; i < T; i++) dst[i] = mi->caption_pad;
    if (!row || !row->transcript || !row->transcript[0] || T < 3) return TM_OK;
    if (!s->dc->tok)
        return tm_fail(TM_ERR_INVALID, "data: captions need a tokenizer; give \"data.tokenizer\"");
    tm_tokenizer_encode_params p = tm_tokenizer_encode_default_params();
    p.max_length = (int32_t)(T - 2);
    int32_t n = 0;
    tm_status st = tm_tokenizer_encode_into(s->dc->tok, row->transcript, strlen(row->transcript),
                                            &p, dst + 1, NULL, (int32_t)(T - 2), &n);
    if (st) {
        char why[1024];
        snprintf(why, sizeof why, "%s", tm_last_error());
        return tm_fail(st, "%s line %" PRId64 ": the transcript cannot be tokenized: %s",
                       s->dc->manifest_path, row->line, why);
    }
    for (int32_t i = 0; i < n; i++)
        if (dst[1 + i] < 0 || dst[1 + i] >= mi->caption_vocab)
            return tm_fail(TM_ERR_INVALID,
                           "%s line %" PRId64 ": the transcript's token id %d is outside the "
                           "caption vocabulary (%" PRId64 " ids; the model config's "
                           "\"caption.vocab_size\"): give the caption decoder the text "
                           "tokenizer's vocabulary, or a tokenizer whose ids fit",
                           s->dc->manifest_path, row->line, (int)dst[1 + i], mi->caption_vocab);
    dst[0] = mi->caption_bos;
    dst[1 + n] = mi->caption_eos;
    return TM_OK;
}

/* BERT-style masking of row r's tokens: each real, non-special token is
 * chosen with probability 0.15; a chosen one gets its id as the label and
 * becomes mask_id (80%), a random id (10%) or stays (10%). A pure function
 * of (the source's seed, epoch, manifest row). */
static void mask_tokens(loader_src *s, int64_t epoch, int64_t row, int32_t *tok, int32_t ntok,
                        int32_t *labels)
{
    const tm_model_info *mi = &s->mi;
    for (int32_t i = 0; i < ntok && i < mi->text_tokens; i++) {
        int32_t id = tok[i];
        if (id == mi->pad_id || id == mi->mask_id) continue;
        if (s->dc->tok && tm_tokenizer_is_special(s->dc->tok, id)) continue;
        if (draw01(s->lc.seed, epoch, row, i, 0) >= 0.15) continue;
        labels[i] = id;
        double v = draw01(s->lc.seed, epoch, row, i, 1);
        if (v < 0.8) tok[i] = mi->mask_id;
        else if (v < 0.9 && mi->vocab_size > 0)
            tok[i] = (int32_t)(draw01(s->lc.seed, epoch, row, i, 2) * (double)mi->vocab_size);
    }
}

static int64_t loader_size(void *ctx) { return ((loader_src *)ctx)->size; }

static void loader_close(void *ctx)
{
    loader_src *s = ctx;
    if (!s) return;
    tm_loader_free(s->l);
    free(s);
}

static tm_status loader_fill(void *ctx, int64_t epoch, int64_t index, int64_t count,
                             const tm_model_inputs *in, int64_t batch)
{
    loader_src *s = ctx;
    tm_status st;
    if (!s->l || s->batch != batch) {
        tm_loader_free(s->l);
        s->l = NULL;
        s->lc.batch_size = batch;
        s->batch = batch;
        if ((st = tm_loader_new(&s->l, s->dc->manifest, &s->lc))) return st;
    }
    const tm_batch *b = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        tm_loader_pos pos = tm_loader_position(s->l);
        int here = pos.epoch == epoch && pos.index == index;
        /* the first batch of the next epoch follows the end of this one */
        int next_epoch = index == 0 && epoch == pos.epoch + 1;
        if (attempt || (!here && !next_epoch)) {
            tm_loader_pos want = {epoch, index};
            if ((st = tm_loader_seek(s->l, want))) return st;
        }
        if ((st = tm_loader_next(s->l, &b))) return st;
        if (!b && (st = tm_loader_next(s->l, &b))) return st;
        if (b && b->epoch == epoch && b->index == index && b->size >= count) break;
        b = NULL;
    }
    if (!b)
        return tm_fail(TM_ERR_INTERNAL, "loader: no batch at epoch %" PRId64 ", example %" PRId64,
                       epoch, index);
    const tm_loader_config *c = &s->lc;
    int64_t M = c->n_modalities;
    if (in->tokens && b->tokens)
        memcpy(in->tokens, b->tokens, (size_t)(count * c->text_tokens) * sizeof(int32_t));
    if (in->image && b->image)
        memcpy(in->image, b->image,
               (size_t)(count * c->image_channels * c->image_h * c->image_w) * sizeof(float));
    if (in->mel && b->mel)
        memcpy(in->mel, b->mel, (size_t)(count * c->n_mels * c->n_frames) * sizeof(float));
    if (in->labels && b->labels) memcpy(in->labels, b->labels, (size_t)count * sizeof(int32_t));
    if (in->present && b->present) memcpy(in->present, b->present, (size_t)(count * M));
    for (int64_t r = 0; r < count; r++) {
        int64_t row = b->rows ? b->rows[r] : -1;
        const tm_manifest_row *mr = row >= 0 ? tm_manifest_row_at(s->dc->manifest, row) : NULL;
        if (in->caption && s->mi.caption_tokens > 0 &&
            (st = fill_caption(s, mr, in->caption + r * s->mi.caption_tokens)))
            return st;
        if (in->mlm_labels && in->tokens && b->tokens && s->mi.mask_id >= 0 && row >= 0)
            mask_tokens(s, epoch, row, in->tokens + r * c->text_tokens,
                        b->n_tokens ? b->n_tokens[r] : (int32_t)c->text_tokens,
                        in->mlm_labels + r * c->text_tokens);
    }
    return TM_OK;
}

static tm_status open_data(void *user, const tm_train_data *d, const char *split, uint64_t seed,
                           const tm_model *m, tm_train_source *out)
{
    data_ctx *dc = user;
    if (d->synthetic) return tm_train_synthetic_open(d, split, seed, m, out);
    if (!d->manifest) return tm_fail(TM_ERR_INVALID, "data: give \"manifest\" or \"synthetic\"");
    tm_status s;
    if (!dc->manifest_path || strcmp(dc->manifest_path, d->manifest)) {
        tm_manifest_free(dc->manifest);
        dc->manifest = NULL;
        free(dc->manifest_path);
        dc->manifest_path = NULL;
        if ((s = tm_manifest_load(&dc->manifest, d->manifest, NULL))) return s;
        dc->manifest_path = strdup(d->manifest);
        if (!dc->manifest_path) return tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    tm_model_info mi = tm_model_get_info(m);
    resolve_files(dc, d);
    if (mi.text_tokens > 0) {
        if (!dc->tok_file[0])
            return tm_fail(TM_ERR_INVALID, "data: the model reads text; give \"data.tokenizer\" "
                           "(a tokenizer.json) or start from a model folder that has one");
        if (!dc->tokenizer_path || strcmp(dc->tokenizer_path, dc->tok_file)) {
            tm_tokenizer_free(dc->tok);
            dc->tok = NULL;
            free(dc->tokenizer_path);
            dc->tokenizer_path = NULL;
            if ((s = tm_tokenizer_load(&dc->tok, dc->tok_file))) return s;
            dc->tokenizer_path = strdup(dc->tok_file);
            if (!dc->tokenizer_path) return tm_fail(TM_ERR_NOMEM, "out of memory");
        }
    }
    loader_src *ls = calloc(1, sizeof *ls);
    if (!ls) return tm_fail(TM_ERR_NOMEM, "out of memory");
    ls->dc = dc;
    ls->mi = mi;
    snprintf(ls->split, sizeof ls->split, "%s", split);
    ls->train = d->train_split && !strcmp(split, d->train_split);
    tm_loader_config *c = &ls->lc;
    *c = tm_loader_default_config();
    if (dc->pre_file[0] && (s = tm_preprocess_config_load(&c->preprocess, dc->pre_file))) {
        free(ls);
        return s;
    }
    c->text_tokens = mi.text_tokens > 0 ? mi.text_tokens : 0;
    c->pad_id = mi.pad_id;
    c->image_channels = mi.image_channels;
    c->image_h = mi.image_h;
    c->image_w = mi.image_w;
    c->n_mels = mi.n_mels;
    c->n_frames = mi.n_frames;
    c->n_modalities = mi.n_modalities;
    for (int i = 0; i < mi.n_modalities && i < 4; i++)
        c->modality[i] = tm_modality_from_name(mi.modality[i]);
    unsigned unfed = tm_train_data_unfed(d, &mi); /* not decoded either */
    for (int i = 0; i < mi.n_modalities && i < 4; i++)
        if (unfed >> i & 1) c->skip_modalities |= c->modality[i];
    c->split = ls->split;
    c->shuffle = ls->train;
    c->drop_last = ls->train;
    c->seed = seed;
    c->workers = d->workers;
    c->tokenizer = dc->tok;
    /* the stage's "augment", on the training split only (the run config
     * refuses augment with val_split == train_split); modality dropout
     * stays with the trainer */
    if (ls->train && d->augment) {
        c->augment = 1;
        c->aug = d->aug;
        c->aug.modality_dropout[0] = c->aug.modality_dropout[1] = c->aug.modality_dropout[2] = 0;
    }
    ls->size = tm_manifest_split_size(dc->manifest, split);
    if (ls->size < 1) {
        free(ls);
        return tm_fail(TM_ERR_INVALID, "%s has no rows in split '%s'", d->manifest, split);
    }
    out->ctx = ls;
    out->size = loader_size;
    out->fill = loader_fill;
    out->close = loader_close;
    return TM_OK;
}

/* ------------------------------------------------------- log, plots */

#define MAX_SERIES 8

typedef struct {
    const char *name;
    double *x, *y;
    size_t n, cap;
} series;

static int series_push(series *s, double x, double y)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 256;
        double *nx = realloc(s->x, nc * sizeof *nx);
        if (!nx) return 0;
        s->x = nx;
        double *ny = realloc(s->y, nc * sizeof *ny);
        if (!ny) return 0;
        s->y = ny;
        s->cap = nc;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
    return 1;
}

typedef struct {
    series train[1 + TM_LOSS_COUNT]; /* loss, parts */
    series lr;
    series val[1 + TM_LOSS_COUNT];
    series val_acc, val_r1;
    /* last values */
    double last_train[1 + TM_LOSS_COUNT], last_val[1 + TM_LOSS_COUNT], last_acc, last_r1;
    int has_train, has_val;
} metrics_log;

static double num_or_nan(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void read_metrics(const char *out, metrics_log *L)
{
    memset(L, 0, sizeof *L);
    L->train[0].name = L->val[0].name = "loss (weighted total)";
    for (int k = 0; k < TM_LOSS_COUNT; k++) L->train[1 + k].name = L->val[1 + k].name = tm_loss_name(k);
    L->lr.name = "learning rate";
    L->val_acc.name = "accuracy";
    L->val_r1.name = "recall@1";
    for (int k = 0; k <= TM_LOSS_COUNT; k++) L->last_train[k] = L->last_val[k] = NAN;
    L->last_acc = L->last_r1 = NAN;
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    char *text = NULL;
    size_t n = 0;
    if (tm_read_file(path, (size_t)1 << 30, &text, &n)) return;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        cJSON *o = cJSON_Parse(line);
        const cJSON *type = o ? cJSON_GetObjectItemCaseSensitive(o, "type") : NULL;
        double step = o ? num_or_nan(o, "step") : NAN;
        if (cJSON_IsString(type) && !strcmp(type->valuestring, "train")) {
            L->has_train = 1;
            for (int k = 0; k <= TM_LOSS_COUNT; k++) {
                double v = num_or_nan(o, k ? tm_loss_name(k - 1) : "loss");
                if (!isnan(v)) series_push(&L->train[k], step, v);
                L->last_train[k] = v;
            }
            double lr = num_or_nan(o, "lr");
            if (!isnan(lr)) series_push(&L->lr, step, lr);
        } else if (cJSON_IsString(type) && !strcmp(type->valuestring, "val")) {
            L->has_val = 1;
            for (int k = 0; k <= TM_LOSS_COUNT; k++) {
                double v = num_or_nan(o, k ? tm_loss_name(k - 1) : "loss");
                if (!isnan(v)) series_push(&L->val[k], step, v);
                L->last_val[k] = v;
            }
            L->last_acc = num_or_nan(o, "accuracy");
            L->last_r1 = num_or_nan(o, "recall_at_1");
            if (!isnan(L->last_acc)) series_push(&L->val_acc, step, L->last_acc);
            if (!isnan(L->last_r1)) series_push(&L->val_r1, step, L->last_r1);
        }
        cJSON_Delete(o);
        line = nl ? nl + 1 : NULL;
    }
    tm_free(text);
}

static void free_metrics(metrics_log *L)
{
    series *all[] = {&L->lr, &L->val_acc, &L->val_r1};
    for (int k = 0; k <= TM_LOSS_COUNT; k++) {
        free(L->train[k].x);
        free(L->train[k].y);
        free(L->val[k].x);
        free(L->val[k].y);
    }
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        free(all[i]->x);
        free(all[i]->y);
    }
}

/* One chart of the non-empty series; returns 1 when a file was written. */
static int plot(const char *dir, const char *file, const char *title, const char *ylabel,
                series *const *ss, int n, int log_y)
{
    tm_plot_series ps[MAX_SERIES];
    int k = 0;
    for (int i = 0; i < n && k < MAX_SERIES; i++)
        if (ss[i]->n) {
            ps[k].name = ss[i]->name;
            ps[k].x = ss[i]->x;
            ps[k].y = ss[i]->y;
            ps[k].n = ss[i]->n;
            k++;
        }
    if (!k) return 0;
    tm_plot_opts o;
    memset(&o, 0, sizeof o);
    o.title = title;
    o.xlabel = "step";
    o.ylabel = ylabel;
    o.log_y = log_y;
    o.width = 720;
    o.height = 420;
    char *svg = tm_plot_lines_svg(ps, k, &o);
    if (!svg) {
        fprintf(stderr, "trimodal train: warning: plot %s: %s\n", file, tm_last_error());
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    tm_status s = tm_write_file_atomic(path, svg, strlen(svg));
    tm_free(svg);
    if (s) fprintf(stderr, "trimodal train: warning: %s\n", tm_last_error());
    return s == TM_OK;
}

static int write_plots(const char *out, metrics_log *L)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/plots", out);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "trimodal train: warning: cannot create %s: %s\n", dir, strerror(errno));
        return 0;
    }
    series *tr[1 + TM_LOSS_COUNT], *va[1 + TM_LOSS_COUNT], *lr[1] = {&L->lr},
                                                           *vm[2] = {&L->val_acc, &L->val_r1};
    for (int k = 0; k <= TM_LOSS_COUNT; k++) {
        tr[k] = &L->train[k];
        va[k] = &L->val[k];
    }
    int n = 0;
    n += plot(dir, "loss.svg", "training losses", "loss", tr, 1 + TM_LOSS_COUNT, 0);
    n += plot(dir, "lr.svg", "learning rate", "lr", lr, 1, 0);
    n += plot(dir, "validation.svg", "validation losses", "loss", va, 1 + TM_LOSS_COUNT, 0);
    n += plot(dir, "validation_metrics.svg", "validation metrics", "", vm, 2, 0);
    return n;
}

/* ------------------------------------------------------------- summary */

static void print_row(const char *name, double a, double b)
{
    if (isnan(a) && isnan(b)) return;
    printf("  %-16s", name);
    if (isnan(a)) printf(" %14s", "-");
    else printf(" %14.4f", a);
    if (isnan(b)) printf(" %14s\n", "-");
    else printf(" %14.4f\n", b);
}

static void json_num(const char *k, double v, int *first)
{
    printf("%s\"%s\":", *first ? "" : ",", k);
    *first = 0;
    if (isfinite(v)) printf("%.9g", v);
    else printf("null");
}

static void summary(const char *out, const tm_run_config *cfg, const tm_train_result *r,
                    metrics_log *L, const char *status, int plots, int json)
{
    if (json) {
        printf("{\"command\":\"train\",\"out\":");
        cli_json_string(stdout, out);
        printf(",\"status\":\"%s\",\"steps\":%" PRId64 ",\"total_steps\":%" PRId64
               ",\"stages_done\":%d,\"checkpoints\":%" PRId64, status, r->steps, r->total_steps,
               r->stages_done, r->checkpoints);
        printf(",\"elapsed_s\":%.3f,\"samples_per_s\":%.2f,\"data_wait_s\":%.3f,\"train\":{",
               r->elapsed_s, r->samples_per_s, r->data_wait_s);
        int first = 1;
        for (int k = 0; k <= TM_LOSS_COUNT; k++)
            if (!isnan(L->last_train[k]))
                json_num(k ? tm_loss_name(k - 1) : "loss", L->last_train[k], &first);
        printf("},\"val\":{");
        first = 1;
        for (int k = 0; k <= TM_LOSS_COUNT; k++)
            if (!isnan(L->last_val[k]))
                json_num(k ? tm_loss_name(k - 1) : "loss", L->last_val[k], &first);
        if (!isnan(L->last_acc)) json_num("accuracy", L->last_acc, &first);
        if (!isnan(L->last_r1)) json_num("recall_at_1", L->last_r1, &first);
        printf("},\"best\":{\"metric\":\"%s\"", cfg->val_metric);
        first = 0;
        json_num("value", r->best_metric, &first);
        printf(",\"step\":%" PRId64 "},\"plots\":%d", r->best_step, plots);
        if (r->skipped_steps || r->loss_scale != 1.0f)
            printf(",\"loss_scale\":%.9g,\"skipped_steps\":%" PRId64, (double)r->loss_scale,
                   r->skipped_steps);
        printf("}\n");
        return;
    }
    if (!strcmp(status, "early_stop")) status = "finished (early stop)";
    printf("trimodal train: %s after %" PRId64 "/%" PRId64 " steps (%d of %d stages) in %.1f s, "
           "%.0f samples/s\n", status, r->steps, r->total_steps, r->stages_done, cfg->n_stages,
           r->elapsed_s, r->samples_per_s);
    if (r->elapsed_s > 0)
        printf("waiting for data: %.1f s of %.1f s (%.1f%%; the rest is compute, validation and "
               "checkpoints)\n", r->data_wait_s, r->elapsed_s, 100.0 * r->data_wait_s / r->elapsed_s);
    if (L->has_train || L->has_val) {
        printf("\n  %-16s %14s %14s\n", "", "train (last)", "val (last)");
        for (int k = 0; k <= TM_LOSS_COUNT; k++)
            print_row(k ? tm_loss_name(k - 1) : "loss", L->last_train[k], L->last_val[k]);
        print_row("accuracy", NAN, L->last_acc);
        print_row("recall@1", NAN, L->last_r1);
        printf("\n");
    }
    if (r->skipped_steps || r->loss_scale != 1.0f)
        printf("f16 loss scaling: final scale %g, %" PRId64 " steps skipped on overflow\n",
               (double)r->loss_scale, r->skipped_steps);
    if (r->best_step >= 0)
        printf("best %s: %.4f at step %" PRId64 " (model in %s/best)\n", cfg->val_metric,
               r->best_metric, r->best_step, out);
    printf("output: %s (metrics.jsonl, checkpoints/, final/%s)\n", out,
           plots ? ", plots/" : "");
}

/* ------------------------------------------------------------- command */

int cmd_train(int argc, char **argv, int json)
{
    const char *config = NULL, *out = NULL, *progress = NULL;
    int resume = 0, force = 0, no_plots = 0;
    int64_t threads = 0, max_steps = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(train_help, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--resume")) {
            resume = 1;
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "--no-plots")) {
            no_plots = 1;
        } else if (!strcmp(a, "--config") || !strcmp(a, "--out") || !strcmp(a, "--threads") ||
                   !strcmp(a, "--max-steps") || !strcmp(a, "--progress")) {
            if (i + 1 >= argc) return cli_usage("train: %s needs a value", a);
            const char *v = argv[++i];
            int ok = 1;
            if (!strcmp(a, "--config")) config = v;
            else if (!strcmp(a, "--out")) out = v;
            else if (!strcmp(a, "--progress")) {
                progress = v;
                ok = !strcmp(v, "bar") || !strcmp(v, "lines") || !strcmp(v, "none");
            } else if (!strcmp(a, "--threads")) ok = parse_i64(v, 1, 256, &threads);
            else ok = parse_i64(v, 1, INT64_MAX, &max_steps);
            if (!ok) return cli_usage("train: bad value '%s' for %s", v, a);
        } else {
            return cli_usage("train: unknown argument '%s'", a);
        }
    }
    if (!config) return cli_usage("train: %s", "give --config RUN.json");
    if (tm_dist_init(NULL, NULL)) {
        fprintf(stderr, "trimodal train: %s\n", tm_last_error());
        return 1;
    }
    int rank = tm_dist_rank(), world = tm_dist_world();
    if (rank != 0) { /* rank 0 reports for the group */
        progress = "none";
        no_plots = 1;
    }

    tm_run_config *cfg = NULL;
    if (tm_run_config_load(&cfg, config)) {
        fprintf(stderr, "trimodal train: %s\n", tm_last_error());
        tm_dist_abort(1);
        tm_dist_finalize();
        return 1;
    }
    int nt = threads ? (int)threads : cfg->threads;
    if (nt && tm_set_num_threads(nt)) {
        fprintf(stderr, "trimodal train: %s\n", tm_last_error());
        tm_run_config_free(cfg);
        tm_dist_abort(1);
        tm_dist_finalize();
        return 1;
    }

    ui_state u;
    memset(&u, 0, sizeof u);
    u.mode = progress ? (!strcmp(progress, "bar") ? PROGRESS_BAR
                         : !strcmp(progress, "lines") ? PROGRESS_LINES
                                                     : PROGRESS_NONE)
                      : isatty(2) ? PROGRESS_BAR
                                  : PROGRESS_LINES;
    u.kill_at_step = env_long("TM_TRAIN_DEBUG_KILL_AT_STEP");
    u.crash_in_ckpt = env_long("TM_TRAIN_DEBUG_CRASH_IN_CHECKPOINT");
    u.sleep_ms = env_long("TM_TRAIN_DEBUG_STEP_SLEEP_MS");

    data_ctx dc;
    memset(&dc, 0, sizeof dc);
    dc.cfg = cfg;
    resolve_files(&dc, &cfg->data);

    tm_train_options o = tm_train_default_options();
    o.resume = resume;
    o.force = force;
    o.out = out;
    o.max_steps = max_steps;
    o.open = open_data;
    o.open_user = &dc;
    o.tokenizer_file = dc.tok_file[0] ? dc.tok_file : NULL;
    o.preprocess_file = dc.pre_file[0] ? dc.pre_file : NULL;
    o.dataset_file = dc.dataset_file[0] ? dc.dataset_file : NULL;
    o.hooks.user = &u;
    o.hooks.on_step = on_step;
    o.hooks.on_eval = on_eval;
    o.hooks.on_event = on_event;
    o.hooks.on_checkpoint_file = on_ckpt_file;

    int rc = 1;
    tm_trainer *t = NULL;
    if (tm_trainer_new(&t, cfg, &o)) {
        if (world > 1) fprintf(stderr, "trimodal train: rank %d: %s\n", rank, tm_last_error());
        else fprintf(stderr, "trimodal train: %s\n", tm_last_error());
        tm_dist_abort(1);
        goto done;
    }
    tm_status s = tm_trainer_run(t);
    if (s && world > 1) { /* the other ranks may be waiting for this one */
        fprintf(stderr, "trimodal train: rank %d: %s\n", rank, tm_last_error());
        tm_dist_abort(1);
    }
    clear_bar(&u);
    tm_train_result r = tm_trainer_result(t);
    const char *od = tm_trainer_out_dir(t);
    if (s) fprintf(stderr, "trimodal train: %s\n", tm_last_error());
    metrics_log L;
    read_metrics(od, &L);
    int plots = no_plots ? 0 : write_plots(od, &L);
    const char *status = r.diverged      ? "diverged"
                         : s               ? "failed"
                         : r.interrupted   ? "interrupted"
                         : r.stopped_early ? "early_stop"
                                           : "finished";
    if (rank == 0) summary(od, cfg, &r, &L, status, plots, json);
    if (r.interrupted && !json && rank == 0)
        printf("stopped at step %" PRId64 " (--max-steps); continue with --resume\n", r.steps);
    free_metrics(&L);
    rc = s ? 1 : 0;
done:
    tm_trainer_free(t);
    tm_manifest_free(dc.manifest);
    tm_tokenizer_free(dc.tok);
    free(dc.manifest_path);
    free(dc.tokenizer_path);
    tm_run_config_free(cfg);
    tm_dist_finalize();
    return rc;
}
