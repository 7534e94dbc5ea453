/*
 * The trainer: stages, steps, validation, early stopping, divergence
 * checks, checkpoints and resuming.
 *
 * Determinism. Every random choice is a pure function of the run seed and
 * a position, keyed by the stage's name (so a stage draws the same
 * numbers whether it runs inside a longer curriculum or alone from the
 * previous stage's weights):
 *   batch order        source opened with mix(seed, stage key, 0), epoch e
 *   dropout masks      graph RNG counter = mix(seed, stage key, 1 + stage step)
 *   modality dropout   tm_modality_dropout(mix(seed, stage key, 2 + epoch), example)
 *   validation dropout graph RNG counter = mix(seed, 0, batch) (fixed)
 * The checkpoint holds the stage, the step in it and the data position, so
 * a resumed run recomputes exactly the same sequence.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trimodal/data.h"
#include "trimodal/graph.h"
#include "trimodal/io.h"
#include "trimodal/ops.h"
#include "trimodal/train.h"
#include "train_internal.h"

struct tm_trainer {
    const tm_run_config *cfg;
    tm_train_options opt;
    char *out;
    uint64_t hash;
    tm_model *m;
    tm_model_info info;
    size_t n_train; /* trainable floats: the optimizer's range */
    int has_loss[TM_LOSS_COUNT];
    tm_model_graph *g, *vg;
    float g_smoothing, vg_smoothing; /* the label smoothing each graph was built with */
    tm_dtype g_prec, vg_prec;        /* and its GEMM precision */
    unsigned g_skip, vg_skip;        /* and the encoders it leaves out */
    unsigned g_skip_losses;          /* the training graph's objectives left out */
    /* f16 stages: the dynamic loss scaler, one for the whole run (its state
     * travels in the checkpoints); has_f16: some stage is f16 */
    tm_loss_scaler scaler;
    int has_f16;
    size_t arena_bytes, arena_plain; /* the training graph's arena; without checkpointing */
    int rank, world;                 /* data parallelism (tm_dist_*) */
    int64_t local_batch;             /* batch_size / world: this rank's rows of a step */
    int64_t stage_steps[TM_TRAIN_MAX_STAGES];
    int64_t total_steps;

    ckpt_state st;   /* the position; what a checkpoint records */
    int resumed_mid_stage; /* load the optimizer state when the stage starts */
    char resume_dir[4096];

    /* the current stage */
    tm_optim *optim;
    tm_train_source src, vsrc;
    int src_open, vsrc_open;
    int64_t src_size;
    tm_lr_schedule lr;
    size_t (*frozen)[2]; /* [begin, end) ranges of frozen tensors */
    int n_frozen;
    uint8_t present_mask[TM_MODEL_MAX_MODALITIES]; /* the stage's modalities */
    int mod_bit[TM_MODEL_MAX_MODALITIES];          /* tm_modality_bit per column, 0 = none */

    model_extras extras;
    FILE *metrics;
    tm_train_result res;
    double t0;
    int64_t steps_here;
    int64_t last_eval_step, last_ckpt_step;
};

tm_train_options tm_train_default_options(void)
{
    tm_train_options o;
    memset(&o, 0, sizeof o);
    return o;
}

static void event(tm_trainer *t, tm_train_event kind, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void event(tm_trainer *t, tm_train_event kind, const char *fmt, ...)
{
    if (!t->opt.hooks.on_event) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    t->opt.hooks.on_event(t->opt.hooks.user, kind, msg);
}

/* A copy of the last error message, to quote it in a new one (tm_fail
 * formats into the buffer tm_last_error() returns). */
static const char *err_copy(void)
{
    static _Thread_local char buf[2048];
    snprintf(buf, sizeof buf, "%s", tm_last_error());
    return buf;
}

static uint64_t stage_key(const tm_train_stage *s)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *q = (const unsigned char *)s->name; *q; q++) {
        h ^= *q;
        h *= 1099511628211ull;
    }
    return h;
}

/* mkdir -p */
static tm_status mkdir_p(const char *path)
{
    size_t n = strlen(path);
    char *p = tm_alloc(n + 1);
    if (!p) return tm_fail(TM_ERR_NOMEM, "out of memory");
    memcpy(p, path, n + 1);
    tm_status s = TM_OK;
    for (size_t i = 1; i <= n && !s; i++) {
        if (p[i] != '/' && p[i] != 0) continue;
        char c = p[i];
        p[i] = 0;
        if (p[i - 1] != '/') s = tm_train_mkdir(p);
        p[i] = c;
    }
    tm_free(p);
    return s;
}

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* -------------------------------------------------------- checking */

static int model_modality(const tm_model_info *mi, const char *name)
{
    for (int i = 0; i < mi->n_modalities; i++)
        if (mi->modality[i] && !strcmp(mi->modality[i], name)) return i;
    return -1;
}

static tm_status check_against_model(tm_trainer *t)
{
    const tm_run_config *c = t->cfg;
    const tm_model_info *mi = &t->info;
    const char *why[TM_LOSS_COUNT] = {
        "a classifier (\"classifier\": {\"num_classes\": N})",
        "contrastive heads (\"contrastive\": {\"dim\": E}) and two modalities",
        "a caption decoder (\"caption\")", "a masked-token head (\"masked_token\")"};
    for (int i = 0; i < c->n_stages; i++) {
        const tm_train_stage *st = &c->stages[i];
        double wsum = 0;
        for (int k = 0; k < TM_LOSS_COUNT; k++) {
            const tm_objective *o = &st->objectives[k];
            if (!o->enabled) continue;
            wsum += o->weight * (o->schedule == TM_WEIGHT_CONSTANT ? 1 : fmax(o->from, o->to));
            if (!t->has_loss[k])
                return tm_fail(TM_ERR_INVALID,
                               "run config %s: \"stages[%d].objectives.%s\": the model has no %s "
                               "loss; it needs %s",
                               c->origin, i, tm_loss_name(k), tm_loss_name(k), why[k]);
        }
        if (!(wsum > 0))
            return tm_fail(TM_ERR_INVALID,
                           "run config %s: \"stages[%d].objectives\": every weight is 0, so "
                           "nothing would be trained",
                           c->origin, i);
        const tm_train_data *d = &st->data;
        for (int k = 0; k < d->n_modalities; k++)
            if (model_modality(mi, d->modalities[k]) < 0)
                return tm_fail(TM_ERR_INVALID,
                               "run config %s: \"stages[%d].data.modalities\" names \"%s\", but "
                               "the model has no %s encoder",
                               c->origin, i, d->modalities[k], d->modalities[k]);
        for (int k = 0; k < st->n_freeze; k++) {
            int hit = 0;
            for (int j = 0; j < tm_model_tensor_count(t->m) && !hit; j++) {
                tm_model_tensor tt;
                if (tm_model_tensor_at(t->m, j, &tt)) continue;
                hit = !strncmp(tt.name, st->freeze[k], strlen(st->freeze[k]));
            }
            if (!hit)
                return tm_fail(TM_ERR_INVALID,
                               "run config %s: \"stages[%d].freeze[%d]\" \"%s\" matches no tensor "
                               "of the model (names look like \"text.layers.0.attn.qkv.weight\"; "
                               "`trimodal inspect` lists them)",
                               c->origin, i, k, st->freeze[k]);
        }
    }
    const char *mt = c->val_metric;
    int ok = 1;
    if (!strcmp(mt, "accuracy")) ok = mi->num_classes > 0;
    else if (!strcmp(mt, "recall_at_1")) ok = mi->embed_dim > 0 && mi->n_modalities > 1;
    else
        for (int k = 0; k < TM_LOSS_COUNT; k++)
            if (!strcmp(mt, tm_loss_name(k))) ok = t->has_loss[k];
    if (!ok)
        return tm_fail(TM_ERR_INVALID,
                       "run config %s: \"validation.metric\" \"%s\" does not apply to this model "
                       "(it has no such head)",
                       c->origin, mt);
    return TM_OK;
}

/* ---------------------------------------------------------- creating */

static tm_status load_initial_model(tm_trainer *t)
{
    const tm_run_config *c = t->cfg;
    tm_status s;
    if (c->model_json) {
        s = tm_model_new_from_json(&t->m, c->model_json, strlen(c->model_json), c->origin);
        if (!s) s = tm_model_init_weights(t->m, c->init_seed);
    } else if (is_dir(c->model)) {
        s = tm_model_load(&t->m, c->model);
    } else {
        s = tm_model_new_from_config(&t->m, c->model);
        if (!s) s = tm_model_init_weights(t->m, c->init_seed);
    }
    return s;
}

/* The encoders a stage does not feed (its data names its modalities):
 * the stage's graphs leave them out. */
unsigned tm_train_data_unfed(const tm_train_data *d, const tm_model_info *mi)
{
    unsigned skip = 0;
    for (int i = 0; d && mi && i < mi->n_modalities && d->n_modalities >= 0; i++) {
        int fed = 0;
        for (int k = 0; k < d->n_modalities; k++) fed |= !strcmp(d->modalities[k], mi->modality[i]);
        if (!fed) skip |= 1u << i;
    }
    return skip;
}

static unsigned stage_skip(const tm_trainer *t, int si)
{
    return tm_train_data_unfed(&t->cfg->stages[si].data, &t->info);
}

/* The losses a stage does not train (besides classification): its
 * training graph leaves them out (validation still reports them all). */
static unsigned stage_skip_losses(const tm_trainer *t, int si)
{
    const tm_train_stage *st = &t->cfg->stages[si];
    unsigned skip = 0;
    for (int k = TM_LOSS_CONTRASTIVE; k < TM_LOSS_COUNT; k++)
        if (t->has_loss[k] && !st->objectives[k].enabled) skip |= 1u << k;
    return skip;
}

/* The training graph for stage si's options (label smoothing, block
 * checkpointing), rebuilt when they change; with checkpointing on, the
 * arena of the same graph without it is measured once for the log. */
static tm_status ensure_train_graph(tm_trainer *t, int si)
{
    float ls = t->cfg->stages[si].objectives[TM_LOSS_CLASSIFICATION].label_smoothing;
    tm_dtype prec = t->cfg->stages[si].precision;
    unsigned skip = stage_skip(t, si);
    if (t->g && t->g_smoothing == ls && t->g_prec == prec && t->g_skip == skip &&
        t->g_skip_losses == stage_skip_losses(t, si))
        return TM_OK;
    tm_model_graph_free(t->g);
    t->g = NULL;
    tm_model_graph_opts o = tm_model_graph_default_opts();
    o.label_smoothing = ls;
    o.precision = (int)prec;
    o.skip_encoders = skip;
    o.skip_losses = stage_skip_losses(t, si);
    if (t->cfg->checkpoint_blocks && !t->arena_plain) {
        /* measured first and freed, so that the two never coexist */
        tm_model_graph *plain = NULL;
        if (!tm_model_graph_new_opts(&plain, t->m, t->local_batch, TM_MODEL_TRAIN, &o))
            t->arena_plain = tm_graph_arena_bytes(tm_model_graph_graph(plain));
        tm_model_graph_free(plain);
    }
    o.checkpoint_blocks = t->cfg->checkpoint_blocks;
    if (t->world > 1) { /* the contrastive loss sees the whole global batch */
        o.world = t->world;
        o.rank = t->rank;
        o.gather = tm_dist_allgather;
    }
    tm_status s = tm_model_graph_new_opts(&t->g, t->m, t->local_batch, TM_MODEL_TRAIN, &o);
    if (s) return s;
    t->g_smoothing = ls;
    t->g_prec = prec;
    t->g_skip = skip;
    t->g_skip_losses = o.skip_losses;
    t->arena_bytes = tm_graph_arena_bytes(tm_model_graph_graph(t->g));
    if (!t->cfg->checkpoint_blocks) t->arena_plain = t->arena_bytes;
    return TM_OK;
}

/* The validation graph: deterministic (no dropout), the stage's smoothing. */
static tm_status ensure_val_graph(tm_trainer *t, int si)
{
    float ls = t->cfg->stages[si].objectives[TM_LOSS_CLASSIFICATION].label_smoothing;
    tm_dtype prec = t->cfg->stages[si].precision;
    unsigned skip = stage_skip(t, si);
    if (t->vg && t->vg_smoothing == ls && t->vg_prec == prec && t->vg_skip == skip) return TM_OK;
    tm_model_graph_free(t->vg);
    t->vg = NULL;
    tm_model_graph_opts o = tm_model_graph_default_opts();
    o.label_smoothing = ls;
    o.deterministic = 1;
    o.precision = (int)prec;
    o.skip_encoders = skip;
    tm_status s = tm_model_graph_new_opts(&t->vg, t->m, t->cfg->val_batch_size, TM_MODEL_TRAIN, &o);
    if (!s) {
        t->vg_smoothing = ls;
        t->vg_prec = prec;
        t->vg_skip = skip;
    }
    return s;
}

static void warn_cb(void *user, const char *msg)
{
    event((tm_trainer *)user, TM_TRAIN_EVENT_WARNING, "%s", msg);
}

static tm_status open_metrics(tm_trainer *t, int resume, int64_t keep_bytes)
{
    if (t->rank != 0) { /* only rank 0 logs */
        t->metrics = fopen("/dev/null", "w");
        return t->metrics ? TM_OK : tm_fail(TM_ERR_IO, "cannot open /dev/null: %s",
                                            strerror(errno));
    }
    char *p = tm_train_path(t->out, "metrics.jsonl");
    if (!p) return tm_fail(TM_ERR_NOMEM, "out of memory");
    tm_status s = TM_OK;
    if (resume) {
        /* Drop what the interrupted run logged after its checkpoint, so the
         * log continues exactly where the state does. */
        struct stat sb;
        if (stat(p, &sb) == 0 && sb.st_size > keep_bytes) {
            if (truncate(p, (off_t)keep_bytes) != 0)
                s = tm_fail(TM_ERR_IO, "cannot truncate %s: %s", p, strerror(errno));
        } else if (stat(p, &sb) == 0 && sb.st_size < keep_bytes) {
            event(t, TM_TRAIN_EVENT_WARNING,
                  "%s is shorter than at the checkpoint (%lld < %lld bytes); earlier lines were "
                  "lost", p, (long long)sb.st_size, (long long)keep_bytes);
        }
    }
    if (!s) {
        t->metrics = fopen(p, resume ? "a" : "w");
        if (!t->metrics) s = tm_fail(TM_ERR_IO, "cannot open %s: %s", p, strerror(errno));
    }
    tm_free(p);
    return s;
}

tm_status tm_trainer_new(tm_trainer **out, const tm_run_config *cfg, const tm_train_options *o)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "trainer_new: out is NULL");
    *out = NULL;
    if (!cfg || cfg->n_stages < 1) return tm_fail(TM_ERR_INVALID, "trainer_new: no run config");
    tm_trainer *t = tm_calloc(1, sizeof *t);
    if (!t) return tm_fail(TM_ERR_NOMEM, "trainer: out of memory");
    t->cfg = cfg;
    t->opt = o ? *o : tm_train_default_options();
    const char *od = t->opt.out ? t->opt.out : cfg->out;
    size_t n = strlen(od);
    while (n > 1 && od[n - 1] == '/') n--;
    t->out = tm_alloc(n + 1);
    tm_status s = TM_OK;
    char *ckpt = NULL, *runjson = NULL, *cfgtxt = NULL;
    if (!t->out) {
        s = tm_fail(TM_ERR_NOMEM, "trainer: out of memory");
        goto fail;
    }
    memcpy(t->out, od, n);
    t->out[n] = 0;
    t->opt.out = NULL;
    t->extras.tokenizer = t->opt.tokenizer_file;
    t->extras.preprocess = t->opt.preprocess_file;
    t->extras.dataset = t->opt.dataset_file;
    t->hash = tm_run_config_hash(cfg);
    t->st.pub.best_metric = NAN;
    t->st.pub.stage_best = NAN;
    t->st.pub.best_step = -1;
    t->st.pub.seed = cfg->seed;
    t->st.pub.config_hash = t->hash;
    t->res.best_metric = NAN;
    t->res.best_step = -1;
    t->last_eval_step = t->last_ckpt_step = -1;
    t->rank = tm_dist_rank();
    t->world = tm_dist_world();
    if (cfg->batch_size % t->world) {
        s = tm_fail(TM_ERR_INVALID,
                    "run config %s: \"batch_size\" %" PRId64 " (the global batch) does not "
                    "split evenly over %d processes; make it a multiple of %d",
                    cfg->origin, cfg->batch_size, t->world, t->world);
        goto fail;
    }
    t->local_batch = cfg->batch_size / t->world;
    if ((s = mkdir_p(t->out))) goto fail;

    if (t->opt.resume && (s = tm_train_checkpoint_latest(t->out, &ckpt, warn_cb, t))) goto fail;
    if (ckpt) {
        if ((s = tm_train_ckpt_read_state(ckpt, &t->st))) goto fail;
        if (t->st.pub.config_hash != t->hash && !t->opt.force) {
            s = tm_fail(TM_ERR_INVALID,
                        "%s was written by a different run config (hash %016" PRIx64
                        ", this one %016" PRIx64 "); resume with the config it was made with, "
                        "or pass --force to continue anyway",
                        ckpt, t->st.pub.config_hash, t->hash);
            goto fail;
        }
        if (t->st.pub.stage > cfg->n_stages ||
            (t->st.pub.stage < cfg->n_stages &&
             strcmp(t->st.stage_name, cfg->stages[t->st.pub.stage].name))) {
            s = tm_fail(TM_ERR_INVALID, "%s is at stage %d '%s', which this run config does not "
                        "have at that place", ckpt, t->st.pub.stage, t->st.stage_name);
            goto fail;
        }
        t->st.pub.config_hash = t->hash;
        if ((s = tm_model_load(&t->m, ckpt))) goto fail;
        t->resumed_mid_stage = t->st.pub.stage_step > 0;
        snprintf(t->resume_dir, sizeof t->resume_dir, "%s", ckpt);
        event(t, TM_TRAIN_EVENT_RESUME, "resuming from %s (step %" PRId64 ", stage '%s')", ckpt,
              t->st.pub.step, t->st.stage_name);
    } else {
        if (t->opt.resume)
            event(t, TM_TRAIN_EVENT_INFO, "no checkpoint in %s/checkpoints: starting afresh",
                  t->out);
        char *any = NULL;
        s = tm_train_checkpoint_latest(t->out, &any, NULL, NULL);
        if (!s && any && !t->opt.force)
            s = tm_fail(TM_ERR_INVALID,
                        "%s already holds checkpoints of a run (%s): pass --resume to continue "
                        "it, --force to start over (its checkpoints are deleted), or choose "
                        "another \"out\"",
                        t->out, any);
        /* starting over: old checkpoints must not be resumed later (rank 0
         * deletes them; the others wait at the barrier below) */
        if (t->rank != 0) {
            tm_free(any);
            any = NULL;
        }
        while (!s && any) {
            s = tm_train_rmdir_files(any);
            tm_free(any);
            any = NULL;
            if (!s) s = tm_train_checkpoint_latest(t->out, &any, NULL, NULL);
        }
        tm_free(any);
        if (!s) s = tm_dist_barrier();
        if (s) goto fail;
        if ((s = load_initial_model(t))) goto fail;
    }
    {   /* every rank starts from rank 0's weights */
        size_t np = 0;
        float *pw = tm_model_params(t->m, &np);
        if ((s = tm_dist_broadcast(pw, np))) goto fail;
    }
    t->info = tm_model_get_info(t->m);
    t->n_train = tm_model_trainable_count(t->m);
    t->has_loss[TM_LOSS_CLASSIFICATION] = t->info.num_classes > 0;
    t->has_loss[TM_LOSS_CONTRASTIVE] = t->info.embed_dim > 0 && t->info.n_modalities > 1;
    t->has_loss[TM_LOSS_CAPTION] = t->info.caption_tokens > 0;
    t->has_loss[TM_LOSS_MASKED] = t->info.mask_id >= 0;
    if ((s = check_against_model(t))) goto fail;
    for (int i = 0; i < cfg->n_stages; i++) t->has_f16 |= cfg->stages[i].precision == TM_F16;
    if (t->has_f16 && (s = tm_loss_scaler_init(&t->scaler, cfg->loss_scale))) goto fail;
    if (ckpt && t->st.has_scaler) { /* continue the scaler exactly where it was */
        t->scaler.scale = t->st.scale;
        t->scaler.good_steps = t->st.good_steps;
        t->scaler.skipped = t->st.skipped;
        t->scaler.steps = t->st.scaler_steps;
    }
    t->res.loss_scale = t->has_f16 ? t->scaler.scale : 1.0f;
    t->res.skipped_steps = t->has_f16 ? t->scaler.skipped : 0;
    if ((s = ensure_train_graph(t, t->st.pub.stage < cfg->n_stages ? t->st.pub.stage : 0)))
        goto fail;

    /* the config as understood, beside the results */
    runjson = tm_train_path(t->out, "run.json");
    cfgtxt = tm_run_config_to_json(cfg);
    if (!runjson || !cfgtxt) {
        s = tm_fail(TM_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (t->rank == 0 && (s = tm_write_file_atomic(runjson, cfgtxt, strlen(cfgtxt)))) goto fail;
    if ((s = open_metrics(t, ckpt != NULL, t->st.pub.metrics_bytes))) goto fail;
    tm_free(ckpt);
    tm_free(runjson);
    tm_free(cfgtxt);
    t->res.steps = t->st.pub.step;
    *out = t;
    return TM_OK;
fail:
    tm_free(ckpt);
    tm_free(runjson);
    tm_free(cfgtxt);
    {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", tm_last_error());
        tm_trainer_free(t);
        tm_fail(s, "%s", msg);
    }
    return s;
}

static void close_sources(tm_trainer *t)
{
    if (t->src_open && t->src.close) t->src.close(t->src.ctx);
    if (t->vsrc_open && t->vsrc.close) t->vsrc.close(t->vsrc.ctx);
    t->src_open = t->vsrc_open = 0;
}

void tm_trainer_free(tm_trainer *t)
{
    if (!t) return;
    close_sources(t);
    if (t->metrics) fclose(t->metrics);
    tm_optim_free(t->optim);
    tm_free(t->frozen);
    tm_model_graph_free(t->g);
    tm_model_graph_free(t->vg);
    tm_model_free(t->m);
    tm_free(t->out);
    tm_free(t);
}

tm_train_result tm_trainer_result(const tm_trainer *t)
{
    tm_train_result r;
    if (!t) {
        memset(&r, 0, sizeof r);
        return r;
    }
    return t->res;
}

tm_model *tm_trainer_model(tm_trainer *t) { return t ? t->m : NULL; }
const char *tm_trainer_out_dir(const tm_trainer *t) { return t ? t->out : NULL; }

/* ------------------------------------------------------------ sources */

static tm_status open_source(tm_trainer *t, const tm_train_data *d, const char *split,
                             uint64_t seed, tm_train_source *out)
{
    memset(out, 0, sizeof *out);
    tm_status s;
    if (t->opt.open) s = t->opt.open(t->opt.open_user, d, split, seed, t->m, out);
    else if (d->synthetic) s = tm_train_synthetic_open(d, split, seed, t->m, out);
    else s = tm_fail(TM_ERR_UNSUPPORTED, "data: no opener for manifest %s (this program reads "
                     "only \"synthetic\" data)", d->manifest ? d->manifest : "(none)");
    if (s) return s;
    if (!out->size || !out->fill || out->size(out->ctx) < 1) {
        if (out->close) out->close(out->ctx);
        memset(out, 0, sizeof *out);
        return tm_fail(TM_ERR_INVALID, "data: split '%s' is empty", split);
    }
    return TM_OK;
}

static int has_val(const tm_train_data *d)
{
    if (!d->val_split || !d->val_split[0]) return 0;
    if (d->synthetic && !d->manifest && d->synth_val < 1) return 0;
    return 1;
}

/* The planned length of every stage (epochs need the data's size). */
static tm_status plan_stages(tm_trainer *t)
{
    const tm_run_config *c = t->cfg;
    t->total_steps = 0;
    for (int i = 0; i < c->n_stages; i++) {
        const tm_train_stage *st = &c->stages[i];
        int64_t steps = st->steps;
        if (!steps) {
            tm_train_source src;
            tm_status s = open_source(t, &st->data, st->data.train_split,
                                      tm_train_mix(c->seed, stage_key(st), 0), &src);
            if (s) return s;
            int64_t n = src.size(src.ctx);
            if (src.close) src.close(src.ctx);
            int64_t per = n / c->batch_size;
            if (per < 1)
                return tm_fail(TM_ERR_INVALID,
                               "stage '%s': its data has %" PRId64 " examples, fewer than the "
                               "batch size %" PRId64 "; lower \"batch_size\"",
                               st->name, n, c->batch_size);
            steps = per * st->epochs;
        }
        if (st->lr.warmup_steps > steps)
            return tm_fail(TM_ERR_INVALID, "stage '%s': warmup (%" PRId64 ") is longer than the "
                           "stage (%" PRId64 " steps)", st->name, st->lr.warmup_steps, steps);
        t->stage_steps[i] = steps;
        t->total_steps += steps;
    }
    t->res.total_steps = t->total_steps;
    return TM_OK;
}

/* Opens the stage's sources and optimizer, and sets its masks. */
static tm_status begin_stage(tm_trainer *t, int si)
{
    const tm_run_config *c = t->cfg;
    const tm_train_stage *st = &c->stages[si];
    uint64_t key = stage_key(st);
    close_sources(t);
    tm_status s = open_source(t, &st->data, st->data.train_split, tm_train_mix(c->seed, key, 0),
                              &t->src);
    if (s) return s;
    t->src_open = 1;
    t->src_size = t->src.size(t->src.ctx);
    if (t->src_size < c->batch_size)
        return tm_fail(TM_ERR_INVALID, "stage '%s': its data has %" PRId64 " examples, fewer "
                       "than the batch size %" PRId64 "; lower \"batch_size\"", st->name,
                       t->src_size, c->batch_size);
    if (has_val(&st->data)) {
        if ((s = open_source(t, &st->data, st->data.val_split, tm_train_mix(c->seed, key, 0),
                             &t->vsrc)))
            return s;
        t->vsrc_open = 1;
    }

    if ((s = ensure_train_graph(t, si))) return s;
    tm_optim_free(t->optim);
    t->optim = NULL;
    if ((s = tm_optim_new(&t->optim, st->optim, t->n_train))) return s;
    t->lr = st->lr;
    t->lr.base_lr = st->optim.lr;
    t->lr.total_steps = t->stage_steps[si];
    if ((s = tm_lr_schedule_check(&t->lr)))
        return tm_fail(s, "stage '%s': %s", st->name, err_copy());

    /* frozen ranges and decay exemptions */
    tm_free(t->frozen);
    t->frozen = NULL;
    t->n_frozen = 0;
    int nt = tm_model_tensor_count(t->m);
    t->frozen = tm_alloc((size_t)(nt ? nt : 1) * sizeof *t->frozen);
    if (!t->frozen) return tm_fail(TM_ERR_NOMEM, "out of memory");
    for (int j = 0; j < nt; j++) {
        tm_model_tensor tt;
        if ((s = tm_model_tensor_at(t->m, j, &tt))) return s;
        if (tt.frozen || tt.offset + tt.numel > t->n_train) continue;
        for (int k = 0; k < st->n_freeze; k++)
            if (!strncmp(tt.name, st->freeze[k], strlen(st->freeze[k]))) {
                t->frozen[t->n_frozen][0] = tt.offset;
                t->frozen[t->n_frozen][1] = tt.offset + tt.numel;
                t->n_frozen++;
                if ((s = tm_optim_set_update_range(t->optim, tt.offset, tt.offset + tt.numel, 0)))
                    return s;
                break;
            }
        for (int k = 0; k < st->n_no_decay; k++)
            if (strstr(tt.name, st->no_decay[k])) {
                if ((s = tm_optim_set_decay_range(t->optim, tt.offset, tt.offset + tt.numel, 0)))
                    return s;
                break;
            }
    }

    /* modalities fed in this stage, and each column's modality-dropout bit */
    for (int i = 0; i < t->info.n_modalities; i++) {
        const char *name = t->info.modality[i];
        int on = st->data.n_modalities < 0;
        for (int k = 0; k < st->data.n_modalities; k++) on |= !strcmp(st->data.modalities[k], name);
        t->present_mask[i] = (uint8_t)on;
        t->mod_bit[i] = !strcmp(name, "text")     ? TM_MODALITY_TEXT
                        : !strcmp(name, "vision") ? TM_MODALITY_IMAGE
                        : !strcmp(name, "audio")  ? TM_MODALITY_AUDIO
                                                  : 0;
    }

    if (t->resumed_mid_stage) {
        t->resumed_mid_stage = 0;
        char *p = tm_train_path(t->resume_dir, TM_CKPT_OPTIM);
        if (!p) return tm_fail(TM_ERR_NOMEM, "out of memory");
        s = tm_optim_load(t->optim, p);
        tm_free(p);
        /* (f16: the steps skipped on overflow took no optimizer step) */
        int64_t taken = t->st.pub.stage_step - t->st.stage_skipped;
        if (!s && tm_optim_step_count(t->optim) != taken)
            s = tm_fail(TM_ERR_FORMAT, "%s: the optimizer took %" PRId64 " steps, the trainer "
                        "state says %" PRId64, t->resume_dir, tm_optim_step_count(t->optim),
                        taken);
        if (s && !t->opt.force) return s;
        if (s) { /* --force with changed optimizer settings: start them afresh */
            event(t, TM_TRAIN_EVENT_WARNING, "%s; continuing with a fresh optimizer (--force)",
                  tm_last_error());
            tm_optim_reset(t->optim);
        }
    }
    return TM_OK;
}

/* ------------------------------------------------------------- a batch */

/* Fills the graph's inputs with `count` examples at (epoch, index) of src,
 * the objectives' extra inputs neutral unless the stage trains them, and
 * the stage's modality mask (and modality dropout when train is set). */
static tm_status fill_batch(tm_trainer *t, tm_model_graph *g, tm_train_source *src, int si,
                            int64_t epoch, int64_t index, int64_t count, int train)
{
    const tm_train_stage *st = &t->cfg->stages[si];
    const tm_model_info *mi = &t->info;
    int64_t B = tm_model_graph_batch(g);
    int M = mi->n_modalities;
    tm_model_inputs in = tm_model_graph_inputs(g);
    if (in.labels)
        for (int64_t b = 0; b < B; b++) in.labels[b] = -100;
    if (in.caption)
        for (int64_t i = 0; i < B * mi->caption_tokens; i++) in.caption[i] = mi->caption_pad;
    if (in.mlm_labels)
        for (int64_t i = 0; i < B * mi->text_tokens; i++) in.mlm_labels[i] = -100;
    tm_model_inputs give = in;
    if (!st->objectives[TM_LOSS_CAPTION].enabled) give.caption = NULL;
    if (!st->objectives[TM_LOSS_MASKED].enabled) give.mlm_labels = NULL;
    tm_status s = src->fill(src->ctx, epoch, index, count, &give, B);
    if (s)
        return tm_fail(s, "data (stage '%s', epoch %" PRId64 ", examples %" PRId64 "..%" PRId64
                       "): %s", st->name, epoch, index, index + count - 1, err_copy());
    uint64_t mseed = tm_train_mix(t->cfg->seed, stage_key(st), 2 + (uint64_t)epoch);
    const float *pd = st->data.modality_dropout;
    int dropout = train && (pd[0] > 0 || pd[1] > 0 || pd[2] > 0);
    for (int64_t b = 0; b < B; b++) {
        uint8_t *p = in.present + b * M;
        if (b >= count) { /* padding rows of a last validation batch: nothing scored */
            memset(p, 0, (size_t)M);
            continue;
        }
        for (int i = 0; i < M; i++) p[i] = p[i] && t->present_mask[i];
        if (!dropout) continue;
        unsigned bits = 0;
        for (int i = 0; i < M; i++)
            if (p[i]) bits |= (unsigned)t->mod_bit[i];
        unsigned kept = tm_modality_dropout(bits, pd, mseed, (uint64_t)(index + b));
        for (int i = 0; i < M; i++)
            if (p[i] && t->mod_bit[i] && !(kept & (unsigned)t->mod_bit[i])) p[i] = 0;
    }
    return TM_OK;
}

static float loss_part(const tm_model_loss *l, int k)
{
    switch (k) {
    case TM_LOSS_CLASSIFICATION: return l->classification;
    case TM_LOSS_CONTRASTIVE: return l->contrastive;
    case TM_LOSS_CAPTION: return l->caption;
    default: return l->masked;
    }
}

static tm_status set_weights(tm_trainer *t, tm_model_graph *g, int si, int64_t stage_step,
                             float *w_out)
{
    const tm_train_stage *st = &t->cfg->stages[si];
    for (int k = 0; k < TM_LOSS_COUNT; k++) {
        float w = (float)tm_objective_weight_at(&st->objectives[k], stage_step, t->stage_steps[si]);
        if (w_out) w_out[k] = w;
        if (!t->has_loss[k]) continue;
        tm_status s = tm_model_graph_set_loss_weight(g, tm_loss_name(k), w);
        if (s) return s;
    }
    return TM_OK;
}

/* --------------------------------------------------------- the log */

static void json_num(FILE *f, const char *key, double v)
{
    if (isfinite(v)) fprintf(f, ",\"%s\":%.9g", key, v);
    else fprintf(f, ",\"%s\":null", key);
}

static void json_escaped(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void log_head(tm_trainer *t, const char *type, int si)
{
    fprintf(t->metrics, "{\"type\":\"%s\",\"step\":%" PRId64 ",\"stage\":", type, t->st.pub.step);
    json_escaped(t->metrics, si < t->cfg->n_stages ? t->cfg->stages[si].name : "");
    fprintf(t->metrics, ",\"stage_index\":%d", si);
}

static tm_status log_end(tm_trainer *t)
{
    fputs("}\n", t->metrics);
    if (fflush(t->metrics) != 0 || ferror(t->metrics))
        return tm_fail(TM_ERR_IO, "cannot write %s/metrics.jsonl: %s", t->out, strerror(errno));
    return TM_OK;
}

static tm_status log_step(tm_trainer *t, const tm_train_progress *p)
{
    log_head(t, "train", p->stage);
    fprintf(t->metrics, ",\"epoch\":%" PRId64, p->epoch);
    json_num(t->metrics, "lr", p->lr);
    json_num(t->metrics, "loss", p->total);
    for (int k = 0; k < TM_LOSS_COUNT; k++)
        if (t->has_loss[k] && t->cfg->stages[p->stage].objectives[k].enabled)
            json_num(t->metrics, tm_loss_name(k), p->loss[k]);
    for (int k = 0; k < TM_LOSS_COUNT; k++)
        if (t->has_loss[k] && t->cfg->stages[p->stage].objectives[k].enabled) {
            char key[40];
            snprintf(key, sizeof key, "w_%s", tm_loss_name(k));
            json_num(t->metrics, key, p->weight[k]);
        }
    json_num(t->metrics, "grad_norm", p->grad_norm);
    if (t->cfg->stages[p->stage].precision == TM_F16) {
        /* the scale this step's backward used; skipped: its gradients
         * overflowed, no optimizer step (the next step's scale is lower) */
        fprintf(t->metrics, ",\"loss_scale\":%.17g", (double)p->loss_scale); /* exact */
        fprintf(t->metrics, ",\"skipped\":%s,\"skipped_steps\":%" PRId64,
                p->skipped ? "true" : "false", p->skipped_steps);
    }
    /* time-dependent fields last (tests compare the rest of the line) */
    json_num(t->metrics, "samples_per_s", p->samples_per_s);
    json_num(t->metrics, "time_s", p->elapsed_s);
    json_num(t->metrics, "data_wait_s", p->data_wait_s);
    return log_end(t);
}

/* ---------------------------------------------------------- validation */

static tm_status validate(tm_trainer *t, int si, tm_train_eval *ev)
{
    const tm_run_config *c = t->cfg;
    const tm_model_info *mi = &t->info;
    memset(ev, 0, sizeof *ev);
    ev->step = t->st.pub.step;
    ev->stage = si;
    ev->stage_name = c->stages[si].name;
    tm_status s;
    if ((s = ensure_val_graph(t, si))) return s;
    /* the weights of the stage's current step, for the weighted total */
    int64_t stage_step = t->st.pub.stage_step > 0 ? t->st.pub.stage_step - 1 : 0;
    if ((s = set_weights(t, t->vg, si, stage_step, NULL))) return s;
    int64_t VB = c->val_batch_size, n = t->vsrc.size(t->vsrc.ctx);
    int64_t batches = (n + VB - 1) / VB;
    if (c->val_max_batches > 0 && batches > c->val_max_batches) batches = c->val_max_batches;
    double sum[TM_LOSS_COUNT] = {0}, wsum[TM_LOSS_COUNT] = {0}, tot = 0, totw = 0;
    int64_t correct = 0, labelled = 0, hits = 0, queries = 0;
    int M = mi->n_modalities;
    float *sim = NULL; /* (VB, VB) similarities for Recall@1 */
    size_t sim_bytes = 0;
    if (mi->embed_dim > 0 && M > 1 &&
        (!tm_mul_size((size_t)VB * (size_t)VB, sizeof *sim, &sim_bytes) ||
         !(sim = tm_alloc(sim_bytes))))
        return tm_fail(TM_ERR_NOMEM, "validation: out of memory for %" PRId64 "^2 similarities "
                       "(lower validation.batch_size)", VB);
    /* data parallelism: rank r validates batches r, r + world, ...; the
     * sums are reduced over the ranks below */
    for (int64_t b = t->rank; b < batches; b += t->world) {
        int64_t index = b * VB, count = n - index < VB ? n - index : VB;
        if ((s = fill_batch(t, t->vg, &t->vsrc, si, 0, index, count, 0))) break;
        tm_graph_set_rng_counter(tm_model_graph_graph(t->vg), tm_train_mix(c->seed, 0, (uint64_t)b));
        if ((s = tm_model_graph_forward(t->vg))) {
            s = tm_fail(s, "validation (stage '%s', examples %" PRId64 "..%" PRId64 "): %s",
                        c->stages[si].name, index, index + count - 1, err_copy());
            break;
        }
        tm_model_loss l = tm_model_graph_loss(t->vg);
        for (int k = 0; k < TM_LOSS_COUNT; k++) {
            float v = loss_part(&l, k);
            if (t->has_loss[k] && isfinite(v)) {
                sum[k] += (double)v * (double)count;
                wsum[k] += (double)count;
            }
        }
        if (isfinite(l.total)) {
            tot += (double)l.total * (double)count;
            totw += (double)count;
        }
        tm_model_inputs in = tm_model_graph_inputs(t->vg);
        const float *logits = tm_model_graph_logits(t->vg);
        if (logits && in.labels) {
            int64_t C = mi->num_classes;
            for (int64_t r = 0; r < count; r++) {
                if (in.labels[r] < 0) continue;
                int64_t best = 0;
                for (int64_t k = 1; k < C; k++)
                    if (logits[r * C + k] > logits[r * C + best]) best = k;
                correct += best == in.labels[r];
                labelled++;
            }
        }
        /* Recall@1 within the batch, both directions of each modality pair:
         * the similarities S = E_i E_j^T of the examples that have both */
        for (int i = 0; sim && i < M; i++)
            for (int j = i + 1; j < M; j++) {
                const float *ei = tm_model_graph_embeddings(t->vg, i);
                const float *ej = tm_model_graph_embeddings(t->vg, j);
                if (!ei || !ej) continue;
                int64_t E = mi->embed_dim;
                tm_sgemm(0, 1, count, count, E, 1.0f, ei, E, ej, E, 0.0f, sim, count);
                for (int dir = 0; dir < 2; dir++)
                    for (int64_t r = 0; r < count; r++) {
                        if (!in.present[r * M + i] || !in.present[r * M + j]) continue;
                        int64_t arg = -1;
                        float bestv = -INFINITY;
                        for (int64_t q = 0; q < count; q++) {
                            if (!in.present[q * M + i] || !in.present[q * M + j]) continue;
                            float d = dir ? sim[q * count + r] : sim[r * count + q];
                            if (arg < 0 || d > bestv) {
                                bestv = d;
                                arg = q;
                            }
                        }
                        hits += arg == r;
                        queries++;
                    }
            }
        ev->examples += count;
    }
    tm_free(sim);
    if (t->world > 1) { /* every rank joins the reduction, failed or not */
        double red[2 * TM_LOSS_COUNT + 8];
        int q = 0;
        for (int k = 0; k < TM_LOSS_COUNT; k++) {
            red[q++] = sum[k];
            red[q++] = wsum[k];
        }
        red[q++] = tot;
        red[q++] = totw;
        red[q++] = (double)correct;
        red[q++] = (double)labelled;
        red[q++] = (double)hits;
        red[q++] = (double)queries;
        red[q++] = (double)ev->examples;
        red[q++] = s ? 1 : 0;
        tm_status rs = tm_dist_allreduce_sum_f64(red, (size_t)q);
        if (rs && !s) s = rs;
        q = 0;
        for (int k = 0; k < TM_LOSS_COUNT; k++) {
            sum[k] = red[q++];
            wsum[k] = red[q++];
        }
        tot = red[q++];
        totw = red[q++];
        correct = (int64_t)red[q++];
        labelled = (int64_t)red[q++];
        hits = (int64_t)red[q++];
        queries = (int64_t)red[q++];
        ev->examples = (int64_t)red[q++];
        if (red[q] > 0 && !s)
            s = tm_fail(TM_ERR_INVALID, "validation failed on another process (see its error)");
    }
    if (s) return s;
    for (int k = 0; k < TM_LOSS_COUNT; k++) ev->loss[k] = wsum[k] > 0 ? sum[k] / wsum[k] : NAN;
    ev->total = totw > 0 ? tot / totw : NAN;
    ev->accuracy = labelled ? (double)correct / (double)labelled : NAN;
    ev->recall_at_1 = queries ? (double)hits / (double)queries : NAN;
    const char *mt = c->val_metric;
    if (!strcmp(mt, "loss")) ev->metric = ev->total;
    else if (!strcmp(mt, "accuracy")) ev->metric = ev->accuracy;
    else if (!strcmp(mt, "recall_at_1")) ev->metric = ev->recall_at_1;
    else
        for (int k = 0; k < TM_LOSS_COUNT; k++)
            if (!strcmp(mt, tm_loss_name(k))) ev->metric = ev->loss[k];
    return TM_OK;
}

/* better than ref by more than min_delta (any finite value beats NaN) */
static int better(const tm_run_config *c, double v, double ref)
{
    if (!isfinite(v)) return 0;
    if (!isfinite(ref)) return 1;
    return c->val_maximize ? v > ref + c->min_delta : v < ref - c->min_delta;
}

/* Validates, logs, updates the bests; *stop when the stage should end. */
static tm_status run_validation(tm_trainer *t, int si, int *stop)
{
    *stop = 0;
    if (!t->vsrc_open) return TM_OK;
    tm_train_eval ev;
    tm_status s = validate(t, si, &ev);
    if (s) return s;
    const tm_run_config *c = t->cfg;
    tm_train_checkpoint *p = &t->st.pub;
    if (better(c, ev.metric, p->stage_best)) {
        p->stage_best = ev.metric;
        p->bad_evals = 0;
    } else {
        p->bad_evals++;
    }
    ev.bad_evals = p->bad_evals;
    if (better(c, ev.metric, p->best_metric)) {
        p->best_metric = ev.metric;
        p->best_step = p->step;
        ev.improved = 1;
        if (t->rank == 0 &&
            (s = tm_train_save_best(t->out, t->m, &t->extras, p->step, c->val_metric, ev.metric)))
            return s;
    }
    t->res.best_metric = p->best_metric;
    t->res.best_step = p->best_step;
    t->res.has_eval = 1;
    t->res.last_eval = ev;
    t->res.last_eval.stage_name = NULL;
    log_head(t, "val", si);
    fprintf(t->metrics, ",\"examples\":%" PRId64, ev.examples);
    json_num(t->metrics, "loss", ev.total);
    for (int k = 0; k < TM_LOSS_COUNT; k++)
        if (t->has_loss[k]) json_num(t->metrics, tm_loss_name(k), ev.loss[k]);
    if (t->info.num_classes > 0) json_num(t->metrics, "accuracy", ev.accuracy);
    if (t->has_loss[TM_LOSS_CONTRASTIVE]) json_num(t->metrics, "recall_at_1", ev.recall_at_1);
    fprintf(t->metrics, ",\"metric\":\"%s\"", c->val_metric);
    json_num(t->metrics, "value", ev.metric);
    fprintf(t->metrics, ",\"best\":%s", ev.improved ? "true" : "false");
    if ((s = log_end(t))) return s;
    if (t->opt.hooks.on_eval) t->opt.hooks.on_eval(t->opt.hooks.user, &ev);
    t->last_eval_step = p->step;
    /* (at the stage's last step there is nothing left to stop) */
    if (c->patience > 0 && p->bad_evals >= c->patience && p->stage_step < t->stage_steps[si]) {
        *stop = 1;
        t->res.stopped_early = 1;
        event(t, TM_TRAIN_EVENT_EARLY_STOP,
              "stage '%s' stops early at step %" PRId64 ": %s has not improved on %.6g for %"
              PRId64 " validations", c->stages[si].name, p->step, c->val_metric, p->stage_best,
              p->bad_evals);
    }
    return TM_OK;
}

/* ---------------------------------------------------------- checkpoint */

static tm_status checkpoint(tm_trainer *t, int si)
{
    if (t->rank != 0) { /* only rank 0 writes; the barrier keeps the ranks in step */
        t->last_ckpt_step = t->st.pub.step;
        return tm_dist_barrier();
    }
    if (fflush(t->metrics) != 0 || fsync(fileno(t->metrics)) != 0)
        return tm_fail(TM_ERR_IO, "cannot write %s/metrics.jsonl: %s", t->out, strerror(errno));
    long pos = ftell(t->metrics);
    if (pos < 0) return tm_fail(TM_ERR_IO, "metrics.jsonl: %s", strerror(errno));
    t->st.pub.metrics_bytes = pos;
    snprintf(t->st.stage_name, sizeof t->st.stage_name, "%s",
             si < t->cfg->n_stages ? t->cfg->stages[si].name : "");
    t->st.has_scaler = t->has_f16;
    t->st.scale = t->scaler.scale;
    t->st.good_steps = t->scaler.good_steps;
    t->st.skipped = t->scaler.skipped;
    t->st.scaler_steps = t->scaler.steps;
    char name[32];
    tm_status s = tm_train_ckpt_write(t->out, t->m, t->optim, &t->st, t->cfg->ckpt_keep,
                                      &t->extras, &t->opt.hooks, name);
    tm_status bs = tm_dist_barrier();
    if (s) return s;
    if (bs) return bs;
    t->res.checkpoints++;
    t->last_ckpt_step = t->st.pub.step;
    event(t, TM_TRAIN_EVENT_CHECKPOINT, "checkpoint %s/checkpoints/%s", t->out, name);
    return TM_OK;
}

/* -------------------------------------------------------------- a step */

/* Divergence: writes the current (last good) state and fails. */
static tm_status diverged(tm_trainer *t, int si, const char *what)
{
    const tm_train_stage *st = &t->cfg->stages[si];
    int64_t bad_step = t->st.pub.step + 1;
    t->res.diverged = 1;
    log_head(t, "diverged", si);
    fprintf(t->metrics, ",\"at_step\":%" PRId64 ",\"reason\":", bad_step);
    json_escaped(t->metrics, what);
    log_end(t);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", what);
    tm_status s = checkpoint(t, si);
    if (s) return tm_fail(TM_ERR_INVALID, "step %" PRId64 " (stage '%s'): %s; and the last good "
                          "state could not be saved: %s", bad_step, st->name, msg, err_copy());
    return tm_fail(TM_ERR_INVALID,
                   "step %" PRId64 " (stage '%s'): %s. The weights before this step are saved in "
                   "%s/checkpoints/step-%06" PRId64 "; lower the learning rate, add "
                   "\"clip_grad_norm\", or check the data",
                   bad_step, st->name, msg, t->out, t->st.pub.step);
}

/* Data parallelism. Each rank's graph computes means over its own rows,
 * so a part k with n_k scored items here (labelled examples, caption
 * tokens, masked tokens) of N_k in the global batch is weighted
 * w_k * n_k * world / N_k on this rank: the average of the ranks'
 * gradients is then the gradient of the global mean, and each part's
 * global value is sum(n_k * mean_k) / N_k. The contrastive loss is the
 * exception: every rank computes the InfoNCE loss of the whole global
 * batch (its graph gathers every rank's embeddings) and takes the gradient
 * of its own rows, so the ranks' gradients add up to the global one and
 * the average needs the weight w * world; it counts one per rank, so its
 * reported value is that same loss. */
static void local_counts(tm_trainer *t, double *n)
{
    const tm_model_info *mi = &t->info;
    tm_model_inputs in = tm_model_graph_inputs(t->g);
    int64_t B = t->local_batch;
    for (int k = 0; k < TM_LOSS_COUNT; k++) n[k] = 1;
    n[TM_LOSS_CLASSIFICATION] = 0;
    if (in.labels)
        for (int64_t b = 0; b < B; b++) n[TM_LOSS_CLASSIFICATION] += in.labels[b] >= 0;
    if (in.caption) {
        int64_t T = mi->caption_tokens;
        n[TM_LOSS_CAPTION] = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 1; i < T; i++)
                n[TM_LOSS_CAPTION] += in.caption[b * T + i] != mi->caption_pad;
    }
    if (in.mlm_labels) {
        n[TM_LOSS_MASKED] = 0;
        for (int64_t i = 0; i < B * mi->text_tokens; i++) n[TM_LOSS_MASKED] += in.mlm_labels[i] >= 0;
    }
}

/* Sets this rank's loss weights; n_out: the local counts, N_out: global. */
static tm_status dist_weights(tm_trainer *t, const float *w, double *n, double *N)
{
    local_counts(t, n);
    for (int k = 0; k < TM_LOSS_COUNT; k++) N[k] = n[k];
    tm_status s = tm_dist_allreduce_sum_f64(N, TM_LOSS_COUNT);
    if (s) return s;
    for (int k = 0; k < TM_LOSS_COUNT; k++) {
        if (!t->has_loss[k]) continue;
        float wk = k == TM_LOSS_CONTRASTIVE ? w[k] * (float)t->world
                   : N[k] > 0                ? (float)((double)w[k] * n[k] * t->world / N[k])
                                             : w[k];
        if ((s = tm_model_graph_set_loss_weight(t->g, tm_loss_name(k), wk))) return s;
    }
    return TM_OK;
}

/* The global loss parts from each rank's means: count-weighted; infinite
 * when infinite on some rank that scores it, NaN when NaN there or scored
 * nowhere. The total is recomputed from the parts with the step's weights,
 * so every rank takes the same divergence decision. */
static tm_status reduce_loss(tm_trainer *t, tm_model_loss *l, const float *w, const double *n,
                             const double *N)
{
    float *part[TM_LOSS_COUNT] = {&l->classification, &l->contrastive, &l->caption, &l->masked};
    double buf[3 * TM_LOSS_COUNT + 1];
    for (int k = 0; k < TM_LOSS_COUNT; k++) {
        float v = *part[k];
        int scored = n[k] > 0;
        buf[3 * k] = scored && isfinite(v) ? (double)v * n[k] : 0;
        buf[3 * k + 1] = scored && isinf(v) ? 1 : 0;
        buf[3 * k + 2] = scored && isnan(v) ? 1 : 0;
    }
    buf[3 * TM_LOSS_COUNT] = isnan(l->total) ? 1 : 0;
    tm_status s = tm_dist_allreduce_sum_f64(buf, 3 * TM_LOSS_COUNT + 1);
    if (s) return s;
    double total = 0;
    for (int k = 0; k < TM_LOSS_COUNT; k++) {
        float v = N[k] > 0 ? (float)(buf[3 * k] / N[k]) : NAN;
        if (buf[3 * k + 1] > 0) v = INFINITY;
        if (buf[3 * k + 2] > 0) v = NAN;
        *part[k] = t->has_loss[k] ? v : NAN;
        if (t->has_loss[k] && w[k] > 0 && N[k] > 0) total += (double)w[k] * (double)v;
        else if (t->has_loss[k] && w[k] > 0 && buf[3 * k + 2] > 0) total = NAN;
    }
    l->total = buf[3 * TM_LOSS_COUNT] > 0 ? NAN : (float)total;
    return TM_OK;
}

static tm_status train_step(tm_trainer *t, int si, tm_train_progress *pr)
{
    const tm_run_config *c = t->cfg;
    const tm_train_stage *st = &c->stages[si];
    tm_train_checkpoint *p = &t->st.pub;
    int64_t B = c->batch_size, LB = t->local_batch;
    /* this rank's rows of the global batch */
    double w0 = tm_time_s();
    tm_status s = fill_batch(t, t->g, &t->src, si, p->epoch, p->index + t->rank * LB, LB, 1);
    t->res.data_wait_s += tm_time_s() - w0;
    if (s) return s;
    memset(pr, 0, sizeof *pr);
    if ((s = set_weights(t, t->g, si, p->stage_step, pr->weight))) return s;
    double n_here[TM_LOSS_COUNT], n_all[TM_LOSS_COUNT];
    if (t->world > 1 && (s = dist_weights(t, pr->weight, n_here, n_all))) return s;
    tm_graph_set_rng_counter(tm_model_graph_graph(t->g),
                             tm_train_mix(c->seed, stage_key(st), 1 + (uint64_t)p->stage_step));
    if ((s = tm_model_graph_forward(t->g)))
        return tm_fail(s, "step %" PRId64 " (stage '%s', epoch %" PRId64 ", examples %" PRId64
                       "..%" PRId64 "): %s", p->step + 1, st->name, p->epoch, p->index,
                       p->index + B - 1, err_copy());
    tm_model_loss l = tm_model_graph_loss(t->g);
    if (t->world > 1 && (s = reduce_loss(t, &l, pr->weight, n_here, n_all))) return s;
    pr->total = l.total;
    for (int k = 0; k < TM_LOSS_COUNT; k++) pr->loss[k] = t->has_loss[k] ? loss_part(&l, k) : NAN;
    /* A part the batch has no labels for is NaN (absent) and left out of
     * the total; divergence shows in the total. The message names the
     * weighted parts, the non-finite ones first. */
    char what[512] = "";
    if (!isfinite(l.total)) {
        char parts[384] = "";
        size_t k0 = 0;
        int nbad = 0, bad = -1;
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < TM_LOSS_COUNT; k++) {
                if (!t->has_loss[k] || !(pr->weight[k] > 0)) continue;
                int fin = isfinite(pr->loss[k]) != 0;
                if (fin != pass) continue;
                if (!fin) {
                    nbad++;
                    bad = k;
                }
                if (k0 < sizeof parts)
                    k0 += (size_t)snprintf(parts + k0, sizeof parts - k0, "%s%s %.4g",
                                           k0 ? ", " : "", tm_loss_name(k), (double)pr->loss[k]);
            }
        const char *kind = isnan(l.total) ? "NaN" : "infinite";
        if (nbad == 1 && isinf(pr->loss[bad]) == isinf(l.total))
            snprintf(what, sizeof what, "the %s loss is %s (parts: %s)", tm_loss_name(bad), kind,
                     parts);
        else
            snprintf(what, sizeof what, "the loss is %s (parts: %s)", kind, parts);
    }
    if (what[0]) return diverged(t, si, what);

    /* f16: backward seeds d loss = scale, so that small gradients survive
     * the f16 rounding of the GEMM operands; divided out below */
    int f16 = st->precision == TM_F16;
    float scale = f16 ? tm_loss_scaler_scale(&t->scaler) : 1.0f;
    if ((s = tm_graph_set_loss_scale(tm_model_graph_graph(t->g), scale))) return s;
    if ((s = tm_model_graph_backward(t->g))) return s;
    float *params = tm_model_params(t->m, NULL), *grads = tm_model_grads(t->m, NULL);
    /* Data parallelism: the gradients of every rank are averaged here,
     * before the frozen ranges are cleared and the norm taken, so every
     * rank takes the same optimizer step. */
    if (t->world > 1) {
        double mb = c->allreduce_bucket_mb > 0 ? c->allreduce_bucket_mb : 4;
        size_t bucket = (size_t)(mb * 1048576.0 / sizeof(float));
        if ((s = tm_dist_allreduce_mean(grads, t->n_train, bucket ? bucket : 1))) return s;
    }
    for (int i = 0; i < t->n_frozen; i++)
        memset(grads + t->frozen[i][0], 0, (t->frozen[i][1] - t->frozen[i][0]) * sizeof(float));
    pr->loss_scale = scale;
    pr->precision = st->precision;
    int skip = 0;
    if (f16) {
        /* The loss was finite, so gradients that are not finite after
         * unscaling overflowed f16 under this scale: skip the step and back
         * the scale off (a real NaN shows in the loss, checked above). At
         * the scaler's minimum there is nothing left to lower: that is a
         * divergence. Every rank holds the same averaged gradients, so all
         * take the same decision. */
        int finite = 0;
        if ((s = tm_loss_scaler_unscale(&t->scaler, grads, t->n_train, &finite))) return s;
        if (!finite && scale <= t->scaler.p.min_scale) {
            snprintf(what, sizeof what, "the gradients are not finite even at the smallest loss "
                     "scale %g (loss %g); f16 cannot represent this model's activations: use "
                     "\"dtype\": \"bf16\"", (double)scale, (double)l.total);
            return diverged(t, si, what);
        }
        skip = !tm_loss_scaler_update(&t->scaler, finite);
    }
    float norm = 0;
    if (skip) {
        norm = NAN; /* logged as null: there is no update to measure */
    } else if (st->clip_grad_norm > 0) {
        if ((s = tm_clip_grad_norm(grads, t->n_train, st->clip_grad_norm, &norm))) return s;
    } else {
        double dn;
        if ((s = tm_grad_norm(grads, t->n_train, &dn))) return s;
        norm = (float)dn;
    }
    pr->grad_norm = norm;
    if (!skip && !isfinite(norm)) {
        snprintf(what, sizeof what, "the gradient norm is %s (loss %g)",
                 isnan(norm) ? "NaN" : "infinite", (double)l.total);
        return diverged(t, si, what);
    }
    float lr = tm_lr_at(&t->lr, p->stage_step);
    pr->lr = lr;
    if (!skip && (s = tm_optim_step(t->optim, params, grads, lr))) return s;
    /* a skipped step still consumes its batch and its place in the
     * schedules, as PyTorch's GradScaler does */
    pr->skipped = skip;
    t->st.stage_skipped += skip;
    pr->skipped_steps = t->has_f16 ? t->scaler.skipped : 0;
    t->res.skipped_steps = pr->skipped_steps;
    t->res.loss_scale = t->has_f16 ? t->scaler.scale : 1.0f;

    pr->epoch = p->epoch; /* the epoch of this step's batch */
    p->index += B;
    if (p->index + B > t->src_size) {
        p->epoch++;
        p->index = 0;
    }
    p->stage_step++;
    p->step++;
    t->steps_here++;
    double el = tm_time_s() - t->t0;
    pr->step = p->step;
    pr->total_steps = t->total_steps;
    pr->stage = si;
    pr->n_stages = c->n_stages;
    pr->stage_name = st->name;
    pr->stage_step = p->stage_step;
    pr->stage_steps = t->stage_steps[si];
    pr->elapsed_s = el;
    pr->samples_per_s = el > 0 ? (double)(t->steps_here * B) / el : 0;
    pr->data_wait_s = t->res.data_wait_s;
    pr->eta_s = t->steps_here ? el / (double)t->steps_here * (double)(t->total_steps - p->step) : 0;
    t->res.steps = p->step;
    t->res.last_total = l.total;
    for (int k = 0; k < TM_LOSS_COUNT; k++) t->res.last_loss[k] = pr->loss[k];
    return TM_OK;
}

/* ------------------------------------------------------------- the run */

tm_status tm_trainer_run(tm_trainer *t)
{
    if (!t) return tm_fail(TM_ERR_INVALID, "trainer_run: NULL trainer");
    const tm_run_config *c = t->cfg;
    tm_train_checkpoint *p = &t->st.pub;
    tm_status s = plan_stages(t);
    if (s) return s;
    t->t0 = tm_time_s();
    t->steps_here = 0;
    if (c->checkpoint_blocks && t->arena_plain)
        event(t, TM_TRAIN_EVENT_INFO, "gradient checkpointing per block: graph arena %.1f MiB "
              "(%.1f MiB without; %.0f%% less)", (double)t->arena_bytes / 1048576.0,
              (double)t->arena_plain / 1048576.0,
              100.0 * (1.0 - (double)t->arena_bytes / (double)t->arena_plain));
    if (t->world > 1)
        event(t, TM_TRAIN_EVENT_INFO, "data parallel: %d processes, %" PRId64 " examples each "
              "per step (global batch %" PRId64 ")", t->world, t->local_batch, c->batch_size);
    while (p->stage < c->n_stages) {
        int si = p->stage;
        const tm_train_stage *st = &c->stages[si];
        if ((s = begin_stage(t, si))) return s;
        if (p->stage_step == 0) {
            log_head(t, "stage", si);
            fprintf(t->metrics, ",\"steps\":%" PRId64, t->stage_steps[si]);
            fprintf(t->metrics, ",\"world\":%d,\"local_batch\":%" PRId64, t->world,
                    t->local_batch);
            fprintf(t->metrics, ",\"dtype\":\"%s\"", tm_dtype_name(st->precision));
            if (st->precision == TM_F16)
                fprintf(t->metrics, ",\"loss_scale\":%.17g", (double)t->scaler.scale);
            fprintf(t->metrics, ",\"checkpoint_blocks\":%s,\"arena_bytes\":%zu",
                    c->checkpoint_blocks ? "true" : "false", t->arena_bytes);
            if (c->checkpoint_blocks)
                fprintf(t->metrics, ",\"arena_bytes_without_checkpointing\":%zu",
                        t->arena_plain);
            if ((s = log_end(t))) return s;
        }
        event(t, TM_TRAIN_EVENT_STAGE, "stage %d/%d '%s': %" PRId64 " steps%s", si + 1,
              c->n_stages, st->name, t->stage_steps[si],
              p->stage_step ? " (resumed inside it)" : "");
        int stop = 0;
        while (p->stage_step < t->stage_steps[si] && !stop) {
            if (t->opt.max_steps > 0 && p->step >= t->opt.max_steps) {
                t->res.interrupted = 1;
                if (t->last_ckpt_step != p->step && (s = checkpoint(t, si))) return s;
                t->res.elapsed_s = tm_time_s() - t->t0;
                return TM_OK;
            }
            tm_train_progress pr;
            if ((s = train_step(t, si, &pr))) return s;
            if (p->step % c->log_every == 0 || p->stage_step == t->stage_steps[si])
                if ((s = log_step(t, &pr))) return s;
            if (t->opt.hooks.on_step) t->opt.hooks.on_step(t->opt.hooks.user, &pr);
            if (c->val_every > 0 && p->step % c->val_every == 0 &&
                (s = run_validation(t, si, &stop)))
                return s;
            int ends = stop || p->stage_step == t->stage_steps[si];
            if (!ends && c->ckpt_every > 0 && p->step % c->ckpt_every == 0 &&
                (s = checkpoint(t, si)))
                return s;
        }
        /* the stage's end: a last validation, then a checkpoint that
         * starts the next stage */
        if (t->last_eval_step != p->step && (s = run_validation(t, si, &stop))) return s;
        p->stage++;
        p->stage_step = 0;
        t->st.stage_skipped = 0;
        p->epoch = 0;
        p->index = 0;
        p->stage_best = NAN;
        p->bad_evals = 0;
        t->res.stages_done = p->stage;
        if ((s = checkpoint(t, p->stage))) return s;
    }
    t->res.stages_done = c->n_stages;
    /* the final model beside the checkpoints */
    char *fin = tm_train_path(t->out, "final");
    if (!fin) return tm_fail(TM_ERR_NOMEM, "out of memory");
    s = t->rank == 0 ? tm_train_save_model(t->m, fin, &t->extras) : TM_OK;
    tm_free(fin);
    tm_status bs = tm_dist_barrier();
    if (s) return s;
    if (bs) return bs;
    log_head(t, "end", c->n_stages);
    fprintf(t->metrics, ",\"early_stop\":%s", t->res.stopped_early ? "true" : "false");
    json_num(t->metrics, "best", p->best_metric);
    fprintf(t->metrics, ",\"best_step\":%" PRId64, p->best_step);
    if ((s = log_end(t))) return s;
    t->res.elapsed_s = tm_time_s() - t->t0;
    t->res.samples_per_s =
        t->res.elapsed_s > 0 ? (double)(t->steps_here * c->batch_size) / t->res.elapsed_s : 0;
    return TM_OK;
}
