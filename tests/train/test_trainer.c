/* The trainer end to end on a tiny tri-modal model and synthetic data:
 * learning happens; frozen tensors stay bitwise unchanged; a stage starts
 * from the previous stage's weights (a curriculum A+B equals A, then B
 * alone from A's final model, bitwise); a resumed run logs exactly the
 * uninterrupted run's lines; checkpoints hold what they claim; NaN stops
 * with the last good state saved; keep-K pruning; early stopping; damaged
 * checkpoints are skipped; config mismatches and model mismatches are
 * refused with clear messages. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/model.h"
#include "trimodal/train.h"

#define TINY_MODEL                                                                          \
    "{\"name\": \"tt\", \"dim\": 16, \"heads\": 2, \"mlp_dim\": 32, \"dropout\": 0.1,"      \
    " \"encoders\": [{\"modality\": \"text\", \"layers\": 1, \"vocab_size\": 48, "          \
    "\"max_tokens\": 6}, {\"modality\": \"vision\", \"layers\": 1, \"channels\": 1, "       \
    "\"image_size\": 8, \"patch_size\": 4}, {\"modality\": \"audio\", \"layers\": 1, "      \
    "\"n_mels\": 6, \"n_frames\": 8, \"stem\": [{\"kernel\": 3, \"padding\": 1}]}],"        \
    " \"fusion\": {\"type\": \"early\", \"layers\": 1}, \"classifier\": {\"num_classes\": 4}," \
    " \"contrastive\": {\"dim\": 8}}"

static char root[256];

static char *mkout(const char *name)
{
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, 512, "%s/%s", root, name);
    return b;
}


/* A run config: the tiny model, synthetic data, and the given stages and
 * extra top-level keys. */
static char *config(const char *out, const char *extra, const char *stages)
{
    size_t n = strlen(TINY_MODEL) + strlen(extra) + strlen(stages) + 1024;
    char *j = malloc(n);
    snprintf(j, n,
             "{\"model\": " TINY_MODEL ", \"out\": \"%s\", \"seed\": 3, \"batch_size\": 8,"
             " \"data\": {\"synthetic\": {\"examples\": 64, \"val_examples\": 20, \"noise\": 0.3}}"
             "%s%s, \"stages\": [%s]}",
             out, *extra ? ", " : "", extra, stages);
    return j;
}

typedef struct {
    int warnings, early, stages;
    char last_warning[1024];
} events;

static void on_event(void *user, tm_train_event kind, const char *msg)
{
    events *e = user;
    if (kind == TM_TRAIN_EVENT_WARNING) {
        e->warnings++;
        snprintf(e->last_warning, sizeof e->last_warning, "%s", msg);
    }
    if (kind == TM_TRAIN_EVENT_EARLY_STOP) e->early++;
    if (kind == TM_TRAIN_EVENT_STAGE) e->stages++;
}

/* Parses and runs; returns the run's status (the trainer's creation
 * status when that fails). *res gets the result. */
static tm_status train(const char *json, int resume, int force, int64_t max_steps,
                       tm_train_result *res, events *ev)
{
    tm_run_config *c = NULL;
    tm_status s = tm_run_config_parse(&c, json, strlen(json), "test");
    if (s) {
        fprintf(stderr, "config: %s\n", tm_last_error());
        return s;
    }
    tm_train_options o = tm_train_default_options();
    o.resume = resume;
    o.force = force;
    o.max_steps = max_steps;
    o.hooks.on_event = on_event;
    events dummy;
    memset(&dummy, 0, sizeof dummy);
    o.hooks.user = ev ? ev : &dummy;
    tm_trainer *t = NULL;
    s = tm_trainer_new(&t, c, &o);
    if (!s) {
        s = tm_trainer_run(t);
        if (res) *res = tm_trainer_result(t);
    }
    /* keep the message across the frees */
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", tm_last_error());
    tm_trainer_free(t);
    tm_run_config_free(c);
    if (s) tm_fail(s, "%s", msg);
    return s;
}

/* The metrics log without its time-dependent fields, and only the lines of
 * `type` ("train", "val" or NULL for every line). */
static char *log_text(const char *out, const char *type)
{
    char p[600];
    snprintf(p, sizeof p, "%s/metrics.jsonl", out);
    char *txt = NULL;
    size_t n = 0;
    if (tm_read_file(p, 1 << 24, &txt, &n)) return NULL;
    char *res = calloc(n + 1, 1);
    size_t k = 0;
    for (char *line = txt; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char want[64] = "";
        if (type) snprintf(want, sizeof want, "\"type\":\"%s\"", type);
        if (!type || strstr(line, want)) {
            char *cut = strstr(line, ",\"samples_per_s\"");
            size_t len = cut ? (size_t)(cut - line) : strlen(line);
            memcpy(res + k, line, len);
            k += len;
            res[k++] = '\n';
        }
        line = nl ? nl + 1 : NULL;
    }
    tm_free(txt);
    return res;
}

/* The lines of a log with their step and stage fields removed (for
 * comparing a stage run inside a curriculum with the same stage alone). */
static void strip_positions(char *s)
{
    const char *keys[] = {"\"step\":", "\"stage_index\":"};
    for (int k = 0; k < 2; k++)
        for (char *p = strstr(s, keys[k]); p; p = strstr(p, keys[k])) {
            char *e = strchr(p, ',');
            if (!e) break;
            memmove(p, e + 1, strlen(e + 1) + 1);
        }
}

static int count_lines(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

/* A loss value of a train line, as a double. */
static double first_value(const char *log, const char *key, int last)
{
    double v = NAN;
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    for (const char *p = strstr(log, k); p; p = strstr(p + 1, k)) {
        v = atof(p + strlen(k));
        if (!last) break;
    }
    return v;
}

/* ---------------------------------------------------------------- tests */

#define STAGE(name, steps, extra)                                                         \
    "{\"name\": \"" name "\", \"steps\": " #steps ", \"objectives\": {\"classification\": 1," \
    " \"contrastive\": 0.5}" extra "}"

static void test_learns(void)
{
    char *out = mkout("learn");
    char *j = config(out, "\"validation\": {\"every\": 20, \"metric\": \"accuracy\"}",
                     STAGE("all", 80, ", \"optimizer\": {\"lr\": 0.003}"));
    tm_train_result r;
    CHECK_OK(train(j, 0, 0, 0, &r, NULL));
    char *log = log_text(out, "train");
    CHECK(log != NULL);
    if (log) {
        double first = first_value(log, "loss", 0), last = first_value(log, "loss", 1);
        CHECK(last < 0.7 * first);
        CHECK(count_lines(log, "\"type\":\"train\"") == 80);
        CHECK(strstr(log, "\"classification\":") && strstr(log, "\"contrastive\":"));
        CHECK(strstr(log, "\"w_contrastive\":0.5"));
        if (!(last < 0.7 * first)) fprintf(stderr, "loss %g -> %g\n", first, last);
    }
    CHECK(r.steps == 80 && r.total_steps == 80 && r.stages_done == 1 && !r.diverged);
    CHECK(r.has_eval && r.last_eval.accuracy > 0.6);
    CHECK(r.best_step >= 20 && isfinite(r.best_metric));
    if (!(r.last_eval.accuracy > 0.6)) fprintf(stderr, "accuracy %g\n", r.last_eval.accuracy);
    /* the model folders */
    tm_model *m = NULL;
    char p[600];
    snprintf(p, sizeof p, "%s/final", out);
    CHECK_OK(tm_model_load(&m, p));
    tm_model_free(m);
    snprintf(p, sizeof p, "%s/best", out);
    CHECK_OK(tm_model_load(&m, p));
    tm_model_free(m);
    snprintf(p, sizeof p, "%s/run.json", out);
    tm_run_config *c = NULL;
    CHECK_OK(tm_run_config_load(&c, p)); /* the canonical config is a valid config */
    tm_run_config_free(c);
    free(log);
    free(j);
}

static void test_freeze(void)
{
    char *out = mkout("freeze");
    char *j = config(out, "", STAGE("f", 5, ", \"freeze\": [\"text.\", \"vision.layers.0.\"],"
                                          " \"optimizer\": {\"lr\": 0.01, \"weight_decay\": 0.1}"));
    tm_run_config *c = NULL;
    CHECK_OK(tm_run_config_parse(&c, j, strlen(j), "freeze"));
    tm_trainer *t = NULL;
    CHECK_OK(tm_trainer_new(&t, c, NULL));
    if (t) {
        tm_model *m = tm_trainer_model(t);
        size_t n;
        float *p = tm_model_params(m, &n);
        float *before = malloc(n * sizeof *before);
        memcpy(before, p, n * sizeof *before);
        CHECK_OK(tm_trainer_run(t));
        int frozen_ok = 1, moved = 0, n_frozen = 0;
        for (int i = 0; i < tm_model_tensor_count(m); i++) {
            tm_model_tensor tt;
            tm_model_tensor_at(m, i, &tt);
            int frozen = !strncmp(tt.name, "text.", 5) || !strncmp(tt.name, "vision.layers.0.", 16);
            int same = !memcmp(before + tt.offset, p + tt.offset, tt.numel * sizeof(float));
            if (frozen) {
                frozen_ok &= same;
                n_frozen++;
            } else if (!tt.frozen && !same) {
                moved++;
            }
        }
        CHECK(frozen_ok);
        CHECK(n_frozen > 5);
        CHECK(moved > 10);
        free(before);
    }
    tm_trainer_free(t);
    tm_run_config_free(c);
    free(j);
}

static void test_stages(void)
{
    /* A then B in one run */
    char *o1 = mkout("ab");
    char *j1 = config(o1, "\"validation\": {\"every\": 3}",
                      STAGE("A", 6, ", \"freeze\": [\"audio.\"]") ","
                      "{\"name\": \"B\", \"steps\": 5, \"objectives\": {\"contrastive\": "
                      "{\"weight\": 1, \"schedule\": \"linear\", \"steps\": 4}}, \"data\": "
                      "{\"modalities\": [\"text\", \"vision\"]}, \"optimizer\": {\"type\": "
                      "\"sgd\", \"lr\": 0.05, \"momentum\": 0.9}}");
    tm_train_result r;
    events ev;
    memset(&ev, 0, sizeof ev);
    CHECK_OK(train(j1, 0, 0, 0, &r, &ev));
    CHECK(r.steps == 11 && r.stages_done == 2 && ev.stages == 2);
    /* A alone, then B alone from A's final model */
    char *o2 = mkout("a");
    char *j2 = config(o2, "\"validation\": {\"every\": 3}", STAGE("A", 6, ", \"freeze\": [\"audio.\"]"));
    CHECK_OK(train(j2, 0, 0, 0, NULL, NULL));
    char *o3 = mkout("b");
    char model[600];
    snprintf(model, sizeof model, "%s/final", o2);
    char *j3 = malloc(4096);
    snprintf(j3, 4096,
             "{\"model\": \"%s\", \"out\": \"%s\", \"seed\": 3, \"batch_size\": 8,"
             " \"validation\": {\"every\": 3},"
             " \"data\": {\"synthetic\": {\"examples\": 64, \"val_examples\": 20, \"noise\": 0.3}},"
             " \"stages\": [{\"name\": \"B\", \"steps\": 5, \"objectives\": {\"contrastive\": "
             "{\"weight\": 1, \"schedule\": \"linear\", \"steps\": 4}}, \"data\": "
             "{\"modalities\": [\"text\", \"vision\"]}, \"optimizer\": {\"type\": "
             "\"sgd\", \"lr\": 0.05, \"momentum\": 0.9}}]}",
             model, o3);
    CHECK_OK(train(j3, 0, 0, 0, NULL, NULL));
    char *l1 = log_text(o1, NULL), *l3 = log_text(o3, NULL);
    CHECK(l1 && l3);
    if (l1 && l3) {
        /* B's lines of the curriculum, from its stage line on */
        char *b1 = strstr(l1, "{\"type\":\"stage\",\"step\":6,\"stage\":\"B\"");
        CHECK(b1 != NULL);
        char *end1 = b1 ? strstr(b1, "{\"type\":\"end\"") : NULL;
        char *end3 = strstr(l3, "{\"type\":\"end\"");
        if (b1 && end1 && end3) {
            *end1 = 0;
            *end3 = 0;
            strip_positions(b1);
            strip_positions(l3);
            CHECK(!strcmp(b1, l3));
            if (strcmp(b1, l3)) fprintf(stderr, "curriculum B:\n%s\nB alone:\n%s\n", b1, l3);
            CHECK(count_lines(l3, "\"type\":\"train\"") == 5);
            CHECK(strstr(l3, "\"w_contrastive\":0.25")); /* linear ramp: 1/4 at t = 1 */
            CHECK(!strstr(l3, "\"w_classification\"")); /* not an objective of B */
        }
    }
    free(l1);
    free(l3);
    free(j1);
    free(j2);
    free(j3);
}

static int exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void test_resume(void)
{
    const char *stages = STAGE("s", 20, ", \"optimizer\": {\"lr\": 0.002, \"schedule\": "
                                        "\"cosine\", \"warmup\": 3}");
    const char *extra = "\"checkpoint\": {\"every\": 5, \"keep\": 10}, \"validation\": "
                        "{\"every\": 4}";
    char *o1 = mkout("full"), *o2 = mkout("part");
    char *j1 = config(o1, extra, stages), *j2 = config(o2, extra, stages);
    CHECK_OK(train(j1, 0, 0, 0, NULL, NULL));
    tm_train_result r;
    CHECK_OK(train(j2, 0, 0, 8, &r, NULL));
    CHECK(r.interrupted && r.steps == 8);

    /* what the interruption's checkpoint holds */
    char p[700];
    snprintf(p, sizeof p, "%s/checkpoints/step-000008", o2);
    tm_train_checkpoint ck;
    CHECK_OK(tm_train_checkpoint_read(p, &ck));
    CHECK(ck.step == 8 && ck.stage == 0 && ck.stage_step == 8 && ck.seed == 3);
    CHECK(ck.epoch == 1 && ck.index == 0); /* 64 examples, batch 8: 8 steps an epoch */
    CHECK(isfinite(ck.best_metric) && ck.best_step == 8);
    tm_model *m = NULL;
    CHECK_OK(tm_model_load(&m, p));
    tm_model_free(m);
    char *latest = NULL;
    CHECK_OK(tm_train_checkpoint_latest(o2, &latest, NULL, NULL));
    CHECK(latest && strstr(latest, "step-000008"));
    tm_free(latest);

    /* drop the newest: the resume restarts from step 5 and must drop the
     * log lines of steps 6..8 */
    snprintf(p, sizeof p, "%s/checkpoints/step-000008", o2);
    test_rm_tree(p);
    CHECK_OK(train(j2, 1, 0, 0, &r, NULL));
    CHECK(r.steps == 20 && !r.interrupted);
    char *l1 = log_text(o1, NULL), *l2 = log_text(o2, NULL);
    CHECK(l1 && l2 && !strcmp(l1, l2));
    if (l1 && l2 && strcmp(l1, l2)) fprintf(stderr, "full:\n%s\nresumed:\n%s\n", l1, l2);
    free(l1);
    free(l2);

    /* resuming a finished run does nothing more */
    CHECK_OK(train(j2, 1, 0, 0, &r, NULL));
    l1 = log_text(o1, NULL);
    l2 = log_text(o2, NULL);
    CHECK(l1 && l2 && !strcmp(l1, l2));
    free(l1);
    free(l2);

    /* another config is refused, unless forced */
    char *j3 = config(o2, extra, STAGE("s", 20, ", \"optimizer\": {\"lr\": 0.004}"));
    CHECK_STATUS(train(j3, 1, 0, 0, NULL, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "different run config") != NULL);
    CHECK_OK(train(j3, 1, 1, 0, NULL, NULL)); /* --force: accepted (the run is complete) */
    /* a fresh start where checkpoints are is refused too */
    CHECK_STATUS(train(j2, 0, 0, 0, NULL, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "--resume") != NULL);
    free(j1);
    free(j2);
    free(j3);
}

static void warn_count(void *user, const char *msg)
{
    events *e = user;
    e->warnings++;
    snprintf(e->last_warning, sizeof e->last_warning, "%s", msg);
}

static void test_damaged(void)
{
    char *out = mkout("damaged");
    char *j = config(out, "\"checkpoint\": {\"every\": 2, \"keep\": 5}", STAGE("s", 6, ""));
    CHECK_OK(train(j, 0, 0, 4, NULL, NULL));
    char p[700];
    snprintf(p, sizeof p, "%s/checkpoints/step-000004/model.safetensors", out);
    CHECK_OK(tm_write_file_atomic(p, "garbage!garbage!", 16));
    events ev;
    memset(&ev, 0, sizeof ev);
    char *latest = NULL;
    CHECK_OK(tm_train_checkpoint_latest(out, &latest, warn_count, &ev));
    CHECK(latest && strstr(latest, "step-000002"));
    CHECK(ev.warnings == 1 && strstr(ev.last_warning, "step-000004"));
    tm_free(latest);
    /* an incomplete trainer.json (an interrupted write) is skipped too */
    snprintf(p, sizeof p, "%s/checkpoints/step-000002/trainer.json", out);
    CHECK_OK(tm_write_file_atomic(p, "{\"format\":", 10));
    CHECK_OK(tm_train_checkpoint_latest(out, &latest, warn_count, &ev));
    CHECK(latest == NULL && ev.warnings == 3);
    /* resume: nothing valid, so it starts afresh and reaches the end */
    memset(&ev, 0, sizeof ev);
    tm_train_result r;
    CHECK_OK(train(j, 1, 0, 0, &r, &ev));
    CHECK(r.steps == 6 && ev.warnings == 2);
    free(j);
}

static void test_nan(void)
{
    char *out = mkout("nan");
    /* examples from stream position 40 on carry a NaN: step 6 (batch 8) */
    char *j = malloc(4096);
    snprintf(j, 4096,
             "{\"model\": " TINY_MODEL ", \"out\": \"%s\", \"batch_size\": 8,"
             " \"checkpoint\": {\"every\": 100},"
             " \"data\": {\"synthetic\": {\"examples\": 64, \"nan_after\": 40}},"
             " \"stages\": [" STAGE("s", 10, "") "]}", out);
    tm_run_config *c = NULL;
    CHECK_OK(tm_run_config_parse(&c, j, strlen(j), "nan"));
    tm_trainer *t = NULL;
    CHECK_OK(tm_trainer_new(&t, c, NULL));
    if (t) {
        tm_status s = tm_trainer_run(t);
        CHECK(s == TM_ERR_INVALID);
        const char *msg = tm_last_error();
        CHECK(strstr(msg, "step 6") && strstr(msg, "NaN") && strstr(msg, "stage 's'"));
        CHECK(strstr(msg, "step-000005") != NULL);
        tm_train_result r = tm_trainer_result(t);
        CHECK(r.diverged && r.steps == 5);
        /* the checkpoint holds the weights from before the bad step */
        char p[700];
        snprintf(p, sizeof p, "%s/checkpoints/step-000005", out);
        tm_model *m = NULL;
        CHECK_OK(tm_model_load(&m, p));
        if (m) {
            size_t n1, n2;
            float *a = tm_model_params(m, &n1), *b = tm_model_params(tm_trainer_model(t), &n2);
            CHECK(n1 == n2 && !memcmp(a, b, n1 * sizeof(float)));
            int finite = 1;
            for (size_t i = 0; i < n1; i++) finite &= isfinite(a[i]) != 0;
            CHECK(finite);
        }
        tm_model_free(m);
        char *log = log_text(out, "diverged");
        CHECK(log && strstr(log, "\"at_step\":6"));
        free(log);
    }
    tm_trainer_free(t);
    tm_run_config_free(c);
    free(j);
}

static int count_ckpts(const char *out)
{
    char p[700];
    snprintf(p, sizeof p, "%s/checkpoints", out);
    DIR *d = opendir(p);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) n += !strncmp(e->d_name, "step-", 5);
    if (d) closedir(d);
    return n;
}

static void test_keep(void)
{
    char *out = mkout("keep");
    char *j = config(out, "\"checkpoint\": {\"every\": 2, \"keep\": 2}", STAGE("s", 12, ""));
    tm_train_result r;
    CHECK_OK(train(j, 0, 0, 0, &r, NULL));
    CHECK(count_ckpts(out) == 2);
    char p[700];
    snprintf(p, sizeof p, "%s/checkpoints/step-000012", out);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/checkpoints/step-000010", out);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/checkpoints/latest", out);
    char *txt = NULL;
    size_t n;
    CHECK_OK(tm_read_file(p, 100, &txt, &n));
    CHECK(txt && !strcmp(txt, "step-000012\n"));
    tm_free(txt);
    CHECK(r.checkpoints == 6);
    free(j);
}

static void test_early_stop(void)
{
    char *out = mkout("early");
    /* lr 0: the validation loss never improves after the first */
    char *j = config(out, "\"validation\": {\"every\": 2, \"patience\": 2}",
                     STAGE("a", 20, ", \"optimizer\": {\"lr\": 0}") ","
                     STAGE("b", 4, ""));
    tm_train_result r;
    events ev;
    memset(&ev, 0, sizeof ev);
    CHECK_OK(train(j, 0, 0, 0, &r, &ev));
    CHECK(r.stopped_early && ev.early == 1);
    CHECK(r.steps == 10); /* a: validations at 2, 4, 6 -> stop; then b's 4 */
    CHECK(r.stages_done == 2);
    char *log = log_text(out, "val");
    CHECK(log && count_lines(log, "\"stage\":\"a\"") == 3);
    free(log);
    free(j);
}

static void test_model_mismatch(void)
{
    const char *cases[][2] = {
        {STAGE("s", 2, ", \"freeze\": [\"txt.\"]"), "\"stages[0].freeze[0]\" \"txt.\" matches no"},
        {"{\"name\": \"s\", \"steps\": 2, \"objectives\": {\"caption\": 1}}",
         "\"stages[0].objectives.caption\": the model has no caption"},
        {"{\"name\": \"s\", \"steps\": 2, \"objectives\": {\"classification\": 0}}",
         "every weight is 0"},
        {"{\"name\": \"s\", \"steps\": 2, \"objectives\": {\"contrastive\": 1}, \"data\": "
         "{\"modalities\": [\"smell\"]}}", "no smell encoder"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *j = config(mkout("mismatch"), "", cases[i][0]);
        tm_status s = train(j, 0, 0, 0, NULL, NULL);
        CHECK(s == TM_ERR_INVALID || s == TM_ERR_UNSUPPORTED);
        if (!strstr(tm_last_error(), cases[i][1])) {
            CHECK(0);
            fprintf(stderr, "message '%s' lacks '%s'\n", tm_last_error(), cases[i][1]);
        }
        free(j);
    }
    /* batch larger than the data */
    char *j = config(mkout("mismatch2"), "", "{\"name\": \"s\", \"epochs\": 1, \"objectives\": "
                                             "{\"contrastive\": 1}}");
    char *b = strstr(j, "\"batch_size\": 8");
    memcpy(b, "\"batch_size\":99", 15);
    CHECK_STATUS(train(j, 0, 0, 0, NULL, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "fewer than the batch size") != NULL);
    free(j);
}

static void test_missing_modalities(void)
{
    /* examples lacking modalities, modality dropout, epochs */
    char *out = mkout("missing");
    char *j = malloc(4096);
    snprintf(j, 4096,
             "{\"model\": " TINY_MODEL ", \"out\": \"%s\", \"batch_size\": 8,"
             " \"data\": {\"synthetic\": {\"examples\": 40, \"missing\": 0.3},"
             " \"modality_dropout\": {\"text\": 0.2, \"vision\": 0.2, \"audio\": 0.2}},"
             " \"stages\": [{\"name\": \"s\", \"epochs\": 2, \"objectives\": "
             "{\"classification\": 1, \"contrastive\": 1}}]}", out);
    tm_train_result r;
    CHECK_OK(train(j, 0, 0, 0, &r, NULL));
    CHECK(r.steps == 10 && isfinite(r.last_total));
    free(j);
}

/* Every objective at once on a model with all four heads: each loss is
 * logged separately, the weight schedules drive the logged weights, and
 * training lowers each loss. */
static void test_all_objectives(void)
{
    char *out = mkout("all4");
    char *j = malloc(8192);
    snprintf(j, 8192,
             "{\"model\": {\"dim\": 16, \"heads\": 2, \"mlp_dim\": 32,"
             " \"encoders\": [{\"modality\": \"text\", \"layers\": 1, \"vocab_size\": 40,"
             " \"max_tokens\": 6}, {\"modality\": \"vision\", \"layers\": 1, \"channels\": 1,"
             " \"image_size\": 8, \"patch_size\": 4}],"
             " \"fusion\": {\"type\": \"early\", \"layers\": 1}, \"classifier\": {\"num_classes\": 3},"
             " \"contrastive\": {\"dim\": 8},"
             " \"caption\": {\"layers\": 1, \"max_tokens\": 6, \"bos_id\": 1, \"eos_id\": 2},"
             " \"masked_token\": {\"mask_id\": 3}},"
             " \"out\": \"%s\", \"batch_size\": 8, \"seed\": 5,"
             " \"validation\": {\"every\": 30, \"metric\": \"caption\"},"
             " \"data\": {\"synthetic\": {\"examples\": 64, \"val_examples\": 16}},"
             " \"stages\": [{\"name\": \"mt\", \"steps\": 60, \"objectives\": {"
             "\"classification\": 1, \"contrastive\": {\"weight\": 0.5, \"schedule\": \"cosine\","
             " \"from\": 1, \"to\": 0}, \"caption\": {\"weight\": 2, \"schedule\": \"linear\","
             " \"steps\": 10}, \"masked\": 0.5}, \"optimizer\": {\"lr\": 0.005}}]}",
             out);
    tm_train_result r;
    tm_status s = train(j, 0, 0, 0, &r, NULL);
    CHECK_OK(s);
    char *log = s ? NULL : log_text(out, "train");
    if (log) {
        const char *keys[] = {"classification", "contrastive", "caption", "masked"};
        for (int k = 0; k < 4; k++) {
            double a = first_value(log, keys[k], 0), b = first_value(log, keys[k], 1);
            CHECK(isfinite(a) && isfinite(b));
            if (k != 1) CHECK(b < a); /* contrastive's weight decays to 0 */
            if (!(b < a)) fprintf(stderr, "%s: %g -> %g\n", keys[k], a, b);
        }
        /* step 1 is t = 0: caption ramps from 0, contrastive starts at 0.5 */
        CHECK(strstr(log, "\"step\":1,") && strstr(log, "\"w_caption\":0,"));
        CHECK(strstr(log, "\"w_contrastive\":0.5,"));
        CHECK(strstr(log, "\"w_caption\":0.200000003,")); /* t = 1: 2 * 1/10 as a float */
        CHECK(strstr(log, "\"w_masked\":0.5,"));
        CHECK(r.has_eval && isfinite(r.last_eval.loss[TM_LOSS_CAPTION]) &&
              isfinite(r.last_eval.loss[TM_LOSS_MASKED]));
    }
    free(log);
    free(j);
}

/* The validation metrics against an independent computation: the final
 * model's classify and embed graphs (no dropout: the model has none) over
 * the same validation batches, cross-entropy and Recall@1 in double. */
static void test_validation_metrics(void)
{
    char *out = mkout("valmetrics");
    char *j = malloc(4096);
    snprintf(j, 4096,
             "{\"model\": {\"dim\": 16, \"heads\": 2, \"encoders\": [{\"modality\": \"text\","
             " \"layers\": 1, \"vocab_size\": 48, \"max_tokens\": 6}, {\"modality\": \"vision\","
             " \"layers\": 1, \"channels\": 1, \"image_size\": 8, \"patch_size\": 4}],"
             " \"fusion\": {\"type\": \"early\", \"layers\": 1}, \"classifier\": {\"num_classes\": 4},"
             " \"contrastive\": {\"dim\": 8}},"
             " \"out\": \"%s\", \"batch_size\": 8, \"validation\": {\"batch_size\": 8},"
             " \"data\": {\"synthetic\": {\"examples\": 64, \"val_examples\": 20}},"
             " \"stages\": [{\"name\": \"s\", \"steps\": 12, \"objectives\": "
             "{\"classification\": 1, \"contrastive\": 1}, \"optimizer\": {\"lr\": 0.003}}]}",
             out);
    tm_run_config *c = NULL;
    CHECK_OK(tm_run_config_parse(&c, j, strlen(j), "val"));
    tm_train_result r;
    CHECK_OK(train(j, 0, 0, 0, &r, NULL));
    CHECK(r.has_eval && r.last_eval.examples == 20);
    char p[700];
    snprintf(p, sizeof p, "%s/final", out);
    tm_model *m = NULL;
    tm_model_graph *gc = NULL, *ge = NULL;
    tm_train_source src;
    memset(&src, 0, sizeof src);
    if (!c || tm_model_load(&m, p) || tm_model_graph_new(&gc, m, 8, TM_MODEL_CLASSIFY) ||
        tm_model_graph_new(&ge, m, 8, TM_MODEL_EMBED) ||
        tm_train_synthetic_open(&c->stages[0].data, "val", 0, m, &src)) {
        CHECK(0);
        fprintf(stderr, "setup: %s\n", tm_last_error());
        goto done;
    }
    double ce = 0;
    int64_t correct = 0, hits = 0, queries = 0, n = 0;
    for (int64_t b = 0; b < 3; b++) {
        int64_t index = b * 8, count = b < 2 ? 8 : 4;
        int32_t labels[8];
        tm_model_inputs in = tm_model_graph_inputs(gc), ie = tm_model_graph_inputs(ge);
        in.labels = labels;
        CHECK_OK(src.fill(src.ctx, 0, index, count, &in, 8));
        CHECK_OK(src.fill(src.ctx, 0, index, count, &ie, 8));
        CHECK_OK(tm_model_graph_forward(gc));
        CHECK_OK(tm_model_graph_forward(ge));
        const float *lg = tm_model_graph_logits(gc);
        double bce = 0;
        for (int64_t i = 0; i < count; i++) {
            double mx = -INFINITY, se = 0;
            int best = 0;
            for (int k = 0; k < 4; k++) {
                mx = fmax(mx, lg[i * 4 + k]);
                if (lg[i * 4 + k] > lg[i * 4 + best]) best = k;
            }
            for (int k = 0; k < 4; k++) se += exp((double)lg[i * 4 + k] - mx);
            bce += -((double)lg[i * 4 + labels[i]] - mx - log(se));
            correct += best == labels[i];
        }
        ce += bce; /* the batch mean weighted by its examples, as validation does */
        n += count;
        /* Recall@1 from the embed graph's embeddings (B, 8) of each modality */
        const float *E = tm_model_graph_embeddings(ge, 0);
        const float *F = tm_model_graph_embeddings(ge, 1);
        for (int dir = 0; E && F && dir < 2; dir++)
            for (int64_t i = 0; i < count; i++) {
                int64_t arg = 0;
                double bv = -INFINITY;
                for (int64_t q = 0; q < count; q++) {
                    const float *a = dir ? F + i * 8 : E + i * 8, *o = dir ? E + q * 8 : F + q * 8;
                    double d = 0;
                    for (int e = 0; e < 8; e++) d += (double)a[e] * o[e];
                    if (d > bv) {
                        bv = d;
                        arg = q;
                    }
                }
                hits += arg == i;
                queries++;
            }
    }
    CHECK_NEAR(r.last_eval.accuracy, (double)correct / (double)n, 1.0 / (double)n + 1e-12, 0);
    CHECK_NEAR(r.last_eval.loss[TM_LOSS_CLASSIFICATION], ce / (double)n, 1e-5, 1e-4);
    CHECK(queries == 40);
    CHECK_NEAR(r.last_eval.recall_at_1, (double)hits / (double)queries, 1.0 / 40 + 1e-12, 0);
    CHECK(isnan(r.last_eval.loss[TM_LOSS_CAPTION]));
done:
    if (src.close) src.close(src.ctx);
    tm_model_graph_free(gc);
    tm_model_graph_free(ge);
    tm_model_free(m);
    tm_run_config_free(c);
    free(j);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/tm_trainer_XXXXXX");
    if (!mkdtemp(root)) return 1;
    test_learns();
    test_freeze();
    test_stages();
    test_resume();
    test_damaged();
    test_nan();
    test_keep();
    test_early_stop();
    test_model_mismatch();
    test_missing_modalities();
    test_all_objectives();
    test_validation_metrics();
    test_rm_tree(root);
    return test_finish("train_trainer");
}
