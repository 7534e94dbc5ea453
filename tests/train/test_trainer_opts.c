/* The trainer's graph options: label smoothing from the run config reaches
 * the classification loss (checked against the identity
 * CE_e = (1 - e) CE_0 + e U, with U the mean of -log p over the classes,
 * from three runs), validation runs a deterministic graph (its loss equals
 * a no-dropout graph's on the final weights, with dropout 0.3 in the
 * model), gradient checkpointing per block gives the same losses with a
 * smaller arena (logged), and relative paths in a run config file resolve
 * against its folder. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/model.h"
#include "trimodal/train.h"

#define MODEL(drop)                                                                          \
    "{\"name\": \"tt\", \"dim\": 16, \"heads\": 2, \"mlp_dim\": 32, \"dropout\": " drop ","  \
    " \"encoders\": [{\"modality\": \"text\", \"layers\": 2, \"vocab_size\": 48, "           \
    "\"max_tokens\": 6}, {\"modality\": \"vision\", \"layers\": 2, \"channels\": 1, "        \
    "\"image_size\": 8, \"patch_size\": 4}],"                                                \
    " \"fusion\": {\"type\": \"early\", \"layers\": 2}, \"classifier\": {\"num_classes\": 4}}"

static char root[256];

typedef struct {
    float first_cls;
    int steps;
} steps_seen;

static void on_step(void *user, const tm_train_progress *p)
{
    steps_seen *s = user;
    if (s->steps++ == 0) s->first_cls = p->loss[TM_LOSS_CLASSIFICATION];
}

static tm_status run(const char *json, steps_seen *seen, tm_train_result *res)
{
    tm_run_config *c = NULL;
    tm_status s = tm_run_config_parse(&c, json, strlen(json), "test");
    if (s) return s;
    tm_train_options o = tm_train_default_options();
    o.force = 1;
    o.hooks.user = seen;
    o.hooks.on_step = on_step;
    tm_trainer *t = NULL;
    s = tm_trainer_new(&t, c, &o);
    if (!s) s = tm_trainer_run(t);
    if (!s && res) *res = tm_trainer_result(t);
    tm_trainer_free(t);
    tm_run_config_free(c);
    return s;
}

static char *cfg(const char *model, const char *out, double ls, int ckpt_blocks, int steps)
{
    char *j = malloc(4096);
    snprintf(j, 4096,
             "{\"model\": %s, \"out\": \"%s/%s\", \"seed\": 5, \"batch_size\": 8,"
             " \"checkpoint_blocks\": %s,"
             " \"validation\": {\"batch_size\": 20},"
             " \"data\": {\"synthetic\": {\"examples\": 32, \"val_examples\": 20}},"
             " \"stages\": [{\"name\": \"s\", \"steps\": %d, \"objectives\": "
             "{\"classification\": {\"weight\": 1, \"label_smoothing\": %g}},"
             " \"optimizer\": {\"lr\": 0.01}}]}",
             model, root, out, ckpt_blocks ? "true" : "false", steps, ls);
    return j;
}

static void test_label_smoothing(void)
{
    float ce[3];
    const double eps[3] = {0, 0.3, 0.6};
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "ls%d", i);
        char *j = cfg(MODEL("0"), name, eps[i], 0, 1);
        steps_seen seen = {NAN, 0};
        CHECK_STATUS(run(j, &seen, NULL), TM_OK);
        ce[i] = seen.first_cls;
        free(j);
    }
    /* U from the 0.6 run; the 0.3 run must lie on the line */
    double u = (ce[2] - 0.4 * ce[0]) / 0.6;
    double want = 0.7 * ce[0] + 0.3 * u;
    CHECK(fabs(ce[2] - ce[0]) > 1e-4); /* smoothing changed the loss */
    CHECK(fabs(ce[1] - want) <= 1e-5 * fabs(want));
    if (!(fabs(ce[1] - want) <= 1e-5 * fabs(want)))
        fprintf(stderr, "label smoothing: %.8g %.8g %.8g, want %.8g\n", ce[0], ce[1], ce[2], want);
}

/* The final validation loss equals a deterministic graph's on final/. */
static void test_deterministic_validation(void)
{
    char *j = cfg(MODEL("0.3"), "det", 0, 0, 3);
    tm_train_result res;
    CHECK_STATUS(run(j, &(steps_seen){NAN, 0}, &res), TM_OK);
    CHECK(res.has_eval);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/det/final", root);
    tm_model *m = NULL;
    tm_run_config *c = NULL;
    CHECK_STATUS(tm_run_config_parse(&c, j, strlen(j), "test"), TM_OK);
    CHECK_STATUS(tm_model_load(&m, dir), TM_OK);
    tm_train_source src;
    memset(&src, 0, sizeof src);
    if (m && c && !tm_train_synthetic_open(&c->stages[0].data, "val", 123, m, &src)) {
        double loss[2];
        for (int det = 1; det >= 0; det--) {
            tm_model_graph_opts o = tm_model_graph_default_opts();
            o.deterministic = det;
            tm_model_graph *g = NULL;
            CHECK_STATUS(tm_model_graph_new_opts(&g, m, 20, TM_MODEL_TRAIN, &o), TM_OK);
            if (!g) break;
            tm_model_inputs in = tm_model_graph_inputs(g);
            CHECK_STATUS(src.fill(src.ctx, 0, 0, 20, &in, 20), TM_OK);
            tm_graph_set_rng_counter(tm_model_graph_graph(g), 77);
            CHECK_STATUS(tm_model_graph_forward(g), TM_OK);
            loss[det] = tm_model_graph_loss(g).classification;
            tm_model_graph_free(g);
        }
        double v = res.last_eval.loss[TM_LOSS_CLASSIFICATION];
        CHECK(fabs(v - loss[1]) <= 1e-5 * fabs(loss[1]));
        CHECK(fabs(loss[0] - loss[1]) > 1e-5 * fabs(loss[1])); /* dropout would show */
        if (!(fabs(v - loss[1]) <= 1e-5 * fabs(loss[1])))
            fprintf(stderr, "validation %.8g, deterministic graph %.8g, with dropout %.8g\n", v,
                    loss[1], loss[0]);
        if (src.close) src.close(src.ctx);
    } else {
        CHECK(0);
    }
    tm_model_free(m);
    tm_run_config_free(c);
    free(j);
}

static long json_long(const char *txt, const char *key)
{
    const char *p = strstr(txt, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static void test_checkpoint_blocks(void)
{
    float first[2];
    for (int cb = 0; cb < 2; cb++) {
        char name[32];
        snprintf(name, sizeof name, "cb%d", cb);
        char *j = cfg(MODEL("0.1"), name, 0, cb, 3);
        steps_seen seen = {NAN, 0};
        tm_train_result res;
        CHECK_STATUS(run(j, &seen, &res), TM_OK);
        first[cb] = res.last_loss[TM_LOSS_CLASSIFICATION];
        free(j);
        char p[512];
        snprintf(p, sizeof p, "%s/%s/metrics.jsonl", root, name);
        char *txt = NULL;
        size_t n = 0;
        CHECK_STATUS(tm_read_file(p, 1 << 20, &txt, &n), TM_OK);
        if (!txt) continue;
        long a = json_long(txt, "\"arena_bytes\":");
        CHECK(a > 0);
        if (cb) {
            long b = json_long(txt, "\"arena_bytes_without_checkpointing\":");
            CHECK(b > a);
            printf("checkpoint_blocks: arena %ld bytes, %ld without (%.0f%% less)\n", a, b,
                   100.0 * (1.0 - (double)a / (double)b));
        }
        tm_free(txt);
    }
    CHECK(first[0] == first[1]); /* the same gradients, so the same losses */
}

/* Relative "model" and data paths resolve against the config's folder. */
static void test_relative_paths(void)
{
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/cfgdir", root);
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(p, sizeof p, "%s/run.json", dir);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f) return;
    fprintf(f, "{\"model\": \"models/m.json\", \"out\": \"o\", \"batch_size\": 4,"
               " \"data\": {\"manifest\": \"data/x.jsonl\", \"tokenizer\": \"/abs/tok.json\"},"
               " \"stages\": [{\"name\": \"a\", \"steps\": 1, \"objectives\": "
               "{\"classification\": 1}, \"data\": {\"preprocess\": \"pre.json\"}}]}");
    fclose(f);
    tm_run_config *c = NULL;
    CHECK_STATUS(tm_run_config_load(&c, p), TM_OK);
    if (!c) return;
    char want[700];
    snprintf(want, sizeof want, "%s/models/m.json", dir);
    CHECK(!strcmp(c->model, want));
    snprintf(want, sizeof want, "%s/data/x.jsonl", dir);
    CHECK(!strcmp(c->data.manifest, want));
    CHECK(!strcmp(c->stages[0].data.manifest, want));
    CHECK(!strcmp(c->data.tokenizer, "/abs/tok.json"));
    snprintf(want, sizeof want, "%s/pre.json", dir);
    CHECK(!strcmp(c->stages[0].data.preprocess, want));
    CHECK(!strcmp(c->out, "o")); /* "out" stays relative to the working directory */
    tm_run_config_free(c);
    /* parsing text leaves paths alone */
    const char *txt = "{\"model\": \"m.json\", \"out\": \"o\", \"batch_size\": 4, \"data\": "
                      "{\"synthetic\": {}}, \"stages\": [{\"name\": \"a\", \"steps\": 1, "
                      "\"objectives\": {\"classification\": 1}}]}";
    CHECK_STATUS(tm_run_config_parse(&c, txt, strlen(txt), "x/y.json"), TM_OK);
    if (c) CHECK(!strcmp(c->model, "m.json"));
    tm_run_config_free(c);
    /* bad values of the new keys */
    const char *bad = "{\"model\": \"m.json\", \"out\": \"o\", \"batch_size\": 4, \"data\": "
                      "{\"synthetic\": {}}, \"checkpoint_blocks\": 1, \"stages\": [{\"name\": "
                      "\"a\", \"steps\": 1, \"objectives\": {\"classification\": 1}}]}";
    CHECK_STATUS(tm_run_config_parse(&c, bad, strlen(bad), "t"), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "\"checkpoint_blocks\" must be true or false") != NULL);
}

/* The modalities a stage's data does not feed: bit i of the model's
 * order; none when the data does not name its modalities. */
static void test_unfed(void)
{
    tm_model_info mi;
    memset(&mi, 0, sizeof mi);
    mi.n_modalities = 3;
    mi.modality[0] = "text";
    mi.modality[1] = "vision";
    mi.modality[2] = "audio";
    tm_train_data d;
    memset(&d, 0, sizeof d);
    d.n_modalities = -1;
    CHECK(tm_train_data_unfed(&d, &mi) == 0);
    char vision[] = "vision", audio[] = "audio";
    d.n_modalities = 1;
    d.modalities[0] = vision;
    CHECK(tm_train_data_unfed(&d, &mi) == (1u | 4u));
    d.n_modalities = 2;
    d.modalities[1] = audio;
    CHECK(tm_train_data_unfed(&d, &mi) == 1u);
    CHECK(tm_train_data_unfed(NULL, &mi) == 0);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/tm_train_opts_XXXXXX");
    if (!mkdtemp(root)) return 1;
    test_label_smoothing();
    test_deterministic_validation();
    test_checkpoint_blocks();
    test_relative_paths();
    test_unfed();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return test_finish("train_trainer_opts");
}
