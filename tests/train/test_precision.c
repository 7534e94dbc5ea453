/* Mixed precision in the trainer ("dtype" of a run config): bf16 and f16
 * runs of the tiny model on synthetic data track the f32 run of the same
 * seed (and differ from it, so the precision is really applied); f16 with
 * an absurd initial loss scale skips the overflowing steps, backs the
 * scale off by exactly the configured factor, then trains, and the
 * logged scales follow the scaler's rules recomputed here independently;
 * a NaN loss under f16 still stops the run (it is not taken for an
 * overflow); per-stage dtypes; config errors. Kill and resume under f16 is
 * tests/train/test_precision.sh (it needs the CLI's SIGKILL hook). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/train.h"

#define TINY_MODEL                                                                          \
    "{\"name\": \"tp\", \"dim\": 16, \"heads\": 2, \"mlp_dim\": 32, \"dropout\": 0.1,"      \
    " \"encoders\": [{\"modality\": \"text\", \"layers\": 1, \"vocab_size\": 48, "          \
    "\"max_tokens\": 6}, {\"modality\": \"vision\", \"layers\": 1, \"channels\": 1, "       \
    "\"image_size\": 8, \"patch_size\": 4}, {\"modality\": \"audio\", \"layers\": 1, "      \
    "\"n_mels\": 6, \"n_frames\": 8, \"stem\": [{\"kernel\": 3, \"padding\": 1}]}],"        \
    " \"fusion\": {\"type\": \"early\", \"layers\": 1}, \"classifier\": {\"num_classes\": 4}," \
    " \"contrastive\": {\"dim\": 8}}"

#define MAX_STEPS 128

static char root[256];


/* What the on_step hook saw. */
typedef struct {
    int n;
    float loss[MAX_STEPS], scale[MAX_STEPS], grad_norm[MAX_STEPS];
    int skipped[MAX_STEPS];
    int64_t skipped_steps[MAX_STEPS];
    tm_dtype precision[MAX_STEPS];
} trace;

static void on_step(void *user, const tm_train_progress *p)
{
    trace *tr = user;
    if (tr->n >= MAX_STEPS) return;
    tr->loss[tr->n] = p->total;
    tr->scale[tr->n] = p->loss_scale;
    tr->grad_norm[tr->n] = p->grad_norm;
    tr->skipped[tr->n] = p->skipped;
    tr->skipped_steps[tr->n] = p->skipped_steps;
    tr->precision[tr->n] = p->precision;
    tr->n++;
}

/* A run of the tiny model: `top` extra top-level keys, `stages` the
 * stages; returns the run's status, fills *tr and *res. */
static tm_status run(const char *name, const char *top, const char *stages, trace *tr,
                     tm_train_result *res)
{
    char out[512], *j = malloc(8192);
    snprintf(out, sizeof out, "%s/%s", root, name);
    snprintf(j, 8192,
             "{\"model\": " TINY_MODEL ", \"out\": \"%s\", \"seed\": 5, \"batch_size\": 16,"
             " \"checkpoint\": {\"every\": 1000}, \"validation\": {\"every\": 1000},"
             " \"data\": {\"synthetic\": {\"examples\": 128, \"val_examples\": 32,"
             " \"noise\": 0.3}}%s%s, \"stages\": [%s]}",
             out, *top ? ", " : "", top, stages);
    memset(tr, 0, sizeof *tr);
    memset(res, 0, sizeof *res);
    tm_run_config *c = NULL;
    tm_status s = tm_run_config_parse(&c, j, strlen(j), name);
    free(j);
    if (s) return s;
    tm_train_options o = tm_train_default_options();
    o.hooks.on_step = on_step;
    o.hooks.user = tr;
    tm_trainer *t = NULL;
    s = tm_trainer_new(&t, c, &o);
    if (!s) {
        s = tm_trainer_run(t);
        *res = tm_trainer_result(t);
    }
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", tm_last_error());
    tm_trainer_free(t);
    tm_run_config_free(c);
    if (s) tm_fail(s, "%s", msg);
    return s;
}

#define STAGE60 \
    "{\"name\": \"s\", \"steps\": 60, \"objectives\": {\"classification\": 1, " \
    "\"contrastive\": 0.5}, \"optimizer\": {\"lr\": 0.003}}"

static double mean_range(const float *x, int a, int b)
{
    double s = 0;
    for (int i = a; i < b; i++) s += x[i];
    return s / (b - a);
}

/* bf16 and f16 against f32, the same seed (same batches, same dropout).
 * The tolerance: bf16 keeps 8 significant bits, so each GEMM operand moves
 * by up to 2^-9 relative; the first step's loss (no update yet) is the
 * forward pass alone and agrees to within 1% relative. After that the
 * trajectories drift apart like two runs on different hardware; what must
 * hold is that they train the same: the mean loss over the last 20 steps
 * within 2% of f32's (f32 falls by 20% and more here, so a run that did not
 * train, or trained on garbage gradients, fails), and every step's loss
 * within 0.05 of f32's (measured: 0.007 for bf16, 0.004 for f16, at both
 * thread counts). f16 (10 significant bits, loss-scaled) is
 * held to the same bounds. Both must also differ from f32 somewhere: a
 * bitwise-equal log would mean the precision was never applied. */
static void test_tracks_f32(void)
{
    static trace f32, bf16, f16;
    tm_train_result r32, rb, rh;
    CHECK_OK(run("f32", "", STAGE60, &f32, &r32));
    CHECK_OK(run("bf16", "\"dtype\": \"bf16\"", STAGE60, &bf16, &rb));
    CHECK_OK(run("f16", "\"dtype\": \"f16\"", STAGE60, &f16, &rh));
    CHECK(f32.n == 60 && bf16.n == 60 && f16.n == 60);
    if (f32.n != 60 || bf16.n != 60 || f16.n != 60) return;
    const trace *low[2] = {&bf16, &f16};
    const char *name[2] = {"bf16", "f16"};
    double first32 = mean_range(f32.loss, 0, 5), last32 = mean_range(f32.loss, 40, 60);
    /* the f32 run learns, so "within 10%" is a meaningful bound */
    CHECK(last32 < 0.8 * first32);
    for (int k = 0; k < 2; k++) {
        const trace *t = low[k];
        double maxd = 0;
        int differs = 0;
        for (int i = 0; i < 60; i++) {
            double d = fabs((double)t->loss[i] - (double)f32.loss[i]);
            if (d > maxd) maxd = d;
            differs |= t->loss[i] != f32.loss[i];
        }
        double last = mean_range(t->loss, 40, 60);
        double rel0 = fabs((double)t->loss[0] - f32.loss[0]) / f32.loss[0];
        printf("%s vs f32: step 1 rel %.2e, max |d loss| %.4f, last-20 mean %.4f vs %.4f "
               "(%.2f%%)\n", name[k], rel0, maxd, last, last32, 100 * (last - last32) / last32);
        CHECK(rel0 < 0.01);
        CHECK(maxd < 0.05);
        CHECK(fabs(last - last32) < 0.02 * last32);
        CHECK(differs);
        CHECK(t->precision[0] == (k ? TM_F16 : TM_BF16));
    }
    /* bf16 needs no scaler; the default f16 scale (2^16) fits this model */
    CHECK(bf16.scale[0] == 1.0f && rb.skipped_steps == 0 && rb.loss_scale == 1.0f);
    CHECK(f16.scale[0] == 65536.0f);
    CHECK(rh.skipped_steps < 3);
}

/* f16 with a loss scale of 2^40: the first steps' gradients overflow (they
 * are skipped, the weights untouched, the scale halved each time) until
 * the scale fits; then the model trains. The scale of every step is
 * recomputed here from the skip flags by the scaler's rules. */
static void test_absurd_scale(void)
{
    static trace tr;
    tm_train_result r;
    CHECK_OK(run("huge", "\"dtype\": \"f16\", \"loss_scale\": {\"init\": 1099511627776, "
                 "\"growth_interval\": 8}", STAGE60, &tr, &r));
    CHECK(tr.n == 60);
    if (tr.n != 60) return;
    CHECK(tr.scale[0] == ldexpf(1.0f, 40));
    CHECK(tr.skipped[0] && tr.skipped[1]); /* 2^40, 2^39: surely overflow */
    CHECK(isnan(tr.grad_norm[0]));         /* a skipped step has no norm */
    int first_good = -1;
    for (int i = 0; i < 60 && first_good < 0; i++)
        if (!tr.skipped[i]) first_good = i;
    printf("f16 at 2^40: %lld steps skipped, first step taken %d at scale 2^%d, final scale "
           "%g\n", (long long)r.skipped_steps, first_good + 1,
           first_good >= 0 ? (int)log2f(tr.scale[first_good]) : 0, (double)r.loss_scale);
    CHECK(first_good >= 2 && first_good < 40);
    /* the rules: back off by 0.5 on a skip; double after 8 good steps */
    float scale = ldexpf(1.0f, 40);
    int good = 0, skipped = 0, rules = 1;
    for (int i = 0; i < 60; i++) {
        rules &= tr.scale[i] == scale;
        if (tr.skipped[i]) {
            scale *= 0.5f;
            good = 0;
            skipped++;
        } else if (++good == 8) {
            scale *= 2.0f;
            good = 0;
        }
        rules &= tr.skipped_steps[i] == skipped;
    }
    CHECK(rules);
    CHECK(r.skipped_steps == skipped && r.loss_scale == scale);
    /* and it trained after the skips: the loss fell */
    CHECK(mean_range(tr.loss, 45, 60) < 0.85 * mean_range(tr.loss, first_good, first_good + 5));
    /* the log says so too */
    char p[600], *txt = NULL;
    size_t n = 0;
    snprintf(p, sizeof p, "%s/huge/metrics.jsonl", root);
    CHECK_OK(tm_read_file(p, 1 << 24, &txt, &n));
    CHECK(txt && strstr(txt, "\"skipped\":true") && strstr(txt, "\"loss_scale\":1099511627776"));
    CHECK(txt && strstr(txt, "\"dtype\":\"f16\""));
    tm_free(txt);
}

/* A NaN in the data under f16 is a NaN loss: the run stops (it is not
 * mistaken for an overflow and skipped), with the last good state saved. */
static void test_nan_stops(void)
{
    static trace tr;
    tm_train_result r;
    char out[512], j[4096];
    snprintf(out, sizeof out, "%s/nan", root);
    snprintf(j, sizeof j,
             "{\"model\": " TINY_MODEL ", \"out\": \"%s\", \"batch_size\": 8, \"dtype\": \"f16\","
             " \"checkpoint\": {\"every\": 100},"
             " \"data\": {\"synthetic\": {\"examples\": 64, \"nan_after\": 40}},"
             " \"stages\": [{\"name\": \"s\", \"steps\": 10, \"objectives\": "
             "{\"classification\": 1}}]}", out);
    tm_run_config *c = NULL;
    CHECK_OK(tm_run_config_parse(&c, j, strlen(j), "nan"));
    tm_train_options o = tm_train_default_options();
    o.hooks.on_step = on_step;
    o.hooks.user = &tr;
    memset(&tr, 0, sizeof tr);
    tm_trainer *t = NULL;
    CHECK_OK(tm_trainer_new(&t, c, &o));
    if (t) {
        CHECK(tm_trainer_run(t) == TM_ERR_INVALID);
        const char *msg = tm_last_error();
        CHECK(strstr(msg, "step 6") && strstr(msg, "NaN") && strstr(msg, "loss"));
        CHECK(strstr(msg, "step-000005") != NULL);
        r = tm_trainer_result(t);
        CHECK(r.diverged && r.steps == 5 && r.skipped_steps == 0);
    }
    CHECK(tr.n == 5);
    tm_trainer_free(t);
    tm_run_config_free(c);
    /* the saved state records the scaler */
    char p[700], *txt = NULL;
    size_t n = 0;
    snprintf(p, sizeof p, "%s/checkpoints/step-000005/trainer.json", out);
    CHECK_OK(tm_read_file(p, 1 << 20, &txt, &n));
    CHECK(txt && strstr(txt, "\"loss_scaler\"") && strstr(txt, "\"scale\":\t65536"));
    tm_free(txt);
}

/* A curriculum with an f32 stage then a bf16 stage: each stage's graphs
 * use its own dtype, and the f32 stage logs exactly what an f32-only run
 * logs. */
static void test_stage_dtype(void)
{
    static trace a, b;
    tm_train_result ra, rb;
    const char *two =
        "{\"name\": \"one\", \"steps\": 6, \"objectives\": {\"classification\": 1}},"
        "{\"name\": \"two\", \"steps\": 6, \"dtype\": \"bf16\", \"objectives\": "
        "{\"classification\": 1}}";
    CHECK_OK(run("stages", "", two, &a, &ra));
    CHECK(a.n == 12 && a.precision[0] == TM_F32 && a.precision[11] == TM_BF16);
    CHECK_OK(run("stages32", "",
                 "{\"name\": \"one\", \"steps\": 6, \"objectives\": {\"classification\": 1}}", &b,
                 &rb));
    CHECK(b.n == 6 && !memcmp(a.loss, b.loss, 6 * sizeof(float)));
    /* a run-wide bf16 with an f32 stage */
    CHECK_OK(run("stages16", "\"dtype\": \"bf16\"",
                 "{\"name\": \"one\", \"steps\": 2, \"dtype\": \"f32\", \"objectives\": "
                 "{\"classification\": 1}}, {\"name\": \"two\", \"steps\": 2, \"objectives\": "
                 "{\"classification\": 1}}", &b, &rb));
    CHECK(b.n == 4 && b.precision[0] == TM_F32 && b.precision[3] == TM_BF16);
}

static void expect_bad(const char *top, const char *stage_extra, const char *needle)
{
    char j[4096];
    snprintf(j, sizeof j,
             "{\"model\": \"m.json\", \"out\": \"o\", \"batch_size\": 4, \"data\": "
             "{\"synthetic\": {}}%s%s, \"stages\": [{\"name\": \"a\", \"steps\": 3, "
             "\"objectives\": {\"classification\": 1}%s}]}",
             *top ? ", " : "", top, stage_extra);
    tm_run_config *c = NULL;
    tm_status s = tm_run_config_parse(&c, j, strlen(j), "run.json");
    CHECK(s == TM_ERR_INVALID);
    if (s != TM_ERR_INVALID || !strstr(tm_last_error(), needle))
        fprintf(stderr, "  expected '%s' in: %s\n", needle, tm_last_error());
    CHECK(strstr(tm_last_error(), needle) != NULL);
    tm_run_config_free(c);
}

static void test_config(void)
{
    expect_bad("\"dtype\": \"f8\"", "", "\"dtype\" is \"f8\"; it must be one of f32, bf16, f16");
    expect_bad("", ", \"dtype\": 16", "\"stages[0].dtype\" must be a string");
    expect_bad("\"loss_scale\": {\"init\": 0}", "", "\"loss_scale.init\"");
    expect_bad("\"loss_scale\": {\"growth_factor\": 1}", "", "\"loss_scale.growth_factor\"");
    expect_bad("\"loss_scale\": {\"backoff_factor\": 1}", "", "loss_scale.backoff_factor");
    expect_bad("\"loss_scale\": {\"scale\": 2}", "", "loss_scale");
    expect_bad("\"loss_scale\": {\"init\": 8, \"min\": 16}", "", "init_scale");
    expect_bad("\"loss_scale\": 5", "", "\"loss_scale\" must be an object");

    /* defaults, stage inheritance, the canonical JSON, and the hash: an
     * f32 config hashes as it did before mixed precision existed (its
     * stages carry no dtype in the hash), a bf16 one differently */
    const char *base = "{\"model\": \"m.json\", \"out\": \"o\", \"batch_size\": 4, \"data\": "
                       "{\"synthetic\": {}}, %s\"stages\": [{\"name\": \"a\", \"steps\": 3, "
                       "\"objectives\": {\"classification\": 1}}, {\"name\": \"b\", \"steps\": "
                       "3, \"dtype\": \"f16\", \"objectives\": {\"classification\": 1}}]}";
    char j[2048];
    tm_run_config *c = NULL, *d = NULL;
    snprintf(j, sizeof j, base, "\"loss_scale\": {\"init\": 1e12}, ");
    CHECK_OK(tm_run_config_parse(&c, j, strlen(j), "a"));
    snprintf(j, sizeof j, base, "\"dtype\": \"bf16\", ");
    CHECK_OK(tm_run_config_parse(&d, j, strlen(j), "b"));
    if (c && d) {
        CHECK(c->stages[0].precision == TM_F32 && c->stages[1].precision == TM_F16);
        CHECK(d->stages[0].precision == TM_BF16 && d->stages[1].precision == TM_F16);
        CHECK(!strcmp(c->dtype, "f32") && !strcmp(d->dtype, "bf16"));
        /* an init above the default maximum widens it */
        CHECK(c->loss_scale.init_scale == 1e12f && c->loss_scale.max_scale == 1e12f);
        CHECK(d->loss_scale.init_scale == 65536.0f && d->loss_scale.growth_interval == 2000);
        CHECK(tm_run_config_hash(c) != tm_run_config_hash(d));
        char *txt = tm_run_config_to_json(d);
        CHECK(txt && strstr(txt, "\"dtype\":\t\"bf16\"") && strstr(txt, "\"loss_scale\""));
        /* the canonical JSON parses back to the same hash */
        tm_run_config *e = NULL;
        CHECK_OK(tm_run_config_parse(&e, txt, strlen(txt), "canon"));
        CHECK(e && tm_run_config_hash(e) == tm_run_config_hash(d));
        tm_run_config_free(e);
        tm_free(txt);
    }
    tm_run_config_free(c);
    tm_run_config_free(d);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/tm_precision_XXXXXX");
    if (!mkdtemp(root)) return 1;
    test_config();
    test_tracks_f32();
    test_absurd_scale();
    test_nan_stops();
    test_stage_dtype();
    test_rm_tree(root);
    return test_finish("train_precision");
}
