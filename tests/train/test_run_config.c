/* Run configs: every kind of bad input gives TM_ERR_INVALID (or FORMAT /
 * LIMIT) with the key path in the message; defaults; stage data overrides;
 * the canonical JSON parses back to the same config (same hash); the hash
 * ignores out/threads/log_every/checkpoint and sees everything else; the
 * objective weight schedules against scripts/gen_train_vectors.py. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/train.h"

#define MODEL "\"model\": \"m.json\", \"out\": \"/tmp/x\", \"batch_size\": 4"
#define DATA "\"data\": {\"synthetic\": {}}"
#define STAGE "{\"name\": \"a\", \"steps\": 10, \"objectives\": {\"classification\": 1}}"

static tm_run_config *parse(const char *json, tm_status want, const char *needle)
{
    tm_run_config *c = NULL;
    tm_status s = tm_run_config_parse(&c, json, strlen(json), "t.json");
    test_checks++;
    if (s != want) {
        test_failures++;
        fprintf(stderr, "FAIL: %s\n  got %s (%s), want %s\n", json, tm_status_name(s),
                tm_last_error(), tm_status_name(want));
    } else if (needle && !strstr(tm_last_error(), needle)) {
        test_failures++;
        fprintf(stderr, "FAIL: %s\n  message '%s' lacks '%s'\n", json, tm_last_error(), needle);
    }
    if (s) CHECK(c == NULL);
    return c;
}

static void bad(const char *json, const char *needle)
{
    tm_run_config *c = parse(json, TM_ERR_INVALID, needle);
    tm_run_config_free(c);
}

static void test_errors(void)
{
    parse("{", TM_ERR_FORMAT, "malformed JSON");
    parse("{} x", TM_ERR_FORMAT, "after the JSON");
    bad("[]", "top level");
    bad("{" DATA ", \"stages\": [" STAGE "]}", "\"model\" is required");
    bad("{" MODEL ", " DATA ", \"stages\": [" STAGE "], \"colour\": 1}", "unknown key \"colour\"");
    bad("{" MODEL ", " DATA ", \"stages\": [" STAGE "], \"seed\": 1.5}", "\"seed\" must be an integer");
    bad("{" MODEL ", " DATA ", \"stages\": [" STAGE "], \"seed\": -1}", "\"seed\"");
    bad("{\"model\": 3, \"out\": \"o\", \"batch_size\": 4, " DATA ", \"stages\": [" STAGE "]}",
        "\"model\" must be a path");
    bad("{\"model\": \"m\", \"batch_size\": 4, " DATA ", \"stages\": [" STAGE "]}", "\"out\" is required");
    bad("{\"model\": \"m\", \"out\": \"o\", " DATA ", \"stages\": [" STAGE "]}", "\"batch_size\" is required");
    bad("{\"model\": \"m\", \"out\": \"o\", \"batch_size\": 0, " DATA ", \"stages\": [" STAGE "]}",
        "\"batch_size\" is 0");
    bad("{" MODEL ", \"batch_size\": 0, " DATA ", \"stages\": [" STAGE "]}",
        "\"batch_size\" appears twice");
    bad("{" MODEL ", \"dtype\": \"f8\", " DATA ", \"stages\": [" STAGE "]}",
        "must be one of f32, bf16, f16");
    bad("{" MODEL ", \"stages\": [" STAGE "]}", "\"data\" is required");
    bad("{" MODEL ", \"data\": {\"manifst\": \"x\"}, \"stages\": [" STAGE "]}",
        "unknown key \"data.manifst\"");
    bad("{" MODEL ", \"data\": {\"synthetic\": {\"examples\": 0}}, \"stages\": [" STAGE "]}",
        "\"data.synthetic.examples\"");
    bad("{" MODEL ", \"data\": {\"synthetic\": {\"noise\": \"x\"}}, \"stages\": [" STAGE "]}",
        "\"data.synthetic.noise\" must be a number");
    bad("{" MODEL ", \"data\": {\"synthetic\": {}, \"modalities\": []}, \"stages\": [" STAGE "]}",
        "\"data.modalities\" is empty");
    bad("{" MODEL ", \"data\": {\"synthetic\": {}, \"modalities\": [\"text\", \"text\"]}, "
        "\"stages\": [" STAGE "]}", "repeats");
    bad("{" MODEL ", \"data\": {\"synthetic\": {}, \"modality_dropout\": {\"smell\": 0.1}}, "
        "\"stages\": [" STAGE "]}", "unknown key \"data.modality_dropout.smell\"");
    bad("{" MODEL ", \"data\": {\"synthetic\": {}, \"modality_dropout\": {\"text\": 1}}, "
        "\"stages\": [" STAGE "]}", "\"data.modality_dropout.text\"");
    bad("{" MODEL ", \"data\": {}, \"stages\": [" STAGE "]}", "has no data");
    bad("{" MODEL ", " DATA "}", "\"stages\" is required");
    bad("{" MODEL ", " DATA ", \"stages\": []}", "\"stages\" is required");
    bad("{" MODEL ", " DATA ", \"stages\": [3]}", "\"stages[0]\" must be an object");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"steps\": 3, \"objectives\": {\"contrastive\": 1}}]}",
        "\"stages[0].name\" is required");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a b\", \"steps\": 3, \"objectives\": "
        "{\"contrastive\": 1}}]}", "\"stages[0].name\"");
    bad("{" MODEL ", " DATA ", \"stages\": [" STAGE ", " STAGE "]}", "repeats");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"objectives\": {\"contrastive\": 1}}]}",
        "exactly one of \"steps\" and \"epochs\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"epochs\": 1, "
        "\"objectives\": {\"contrastive\": 1}}]}", "exactly one");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2}]}",
        "\"stages[0].objectives\" is required");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"ctc\": 1}}]}", "unknown key \"stages[0].objectives.ctc\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": -1}}]}", "\"stages[0].objectives.contrastive\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": {\"schedule\": \"exp\"}}}]}",
        "\"stages[0].objectives.contrastive.schedule\" is \"exp\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": {\"from\": 0.5}}}]}", "need \"schedule\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": {\"label_smoothing\": 0.1}}}]}", "only the classification");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": {\"weight\": 1, \"speed\": 2}}}]}",
        "unknown key \"stages[0].objectives.contrastive.speed\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"freeze\": \"text.\"}]}", "\"stages[0].freeze\" must be an array");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"freeze\": [\"\"]}]}", "\"stages[0].freeze[0]\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"type\": \"lamb\"}}]}",
        "\"stages[0].optimizer.type\" is \"lamb\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"lr\": -1}}]}", "\"stages[0].optimizer.lr\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"betas\": [0.9]}}]}", "\"stages[0].optimizer.betas\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"betas\": [0.9, 1.0]}}]}", "[0, 1)");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"type\": \"sgd\", \"betas\": [0.9, 0.9]}}]}",
        "only adamw");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"momentum\": 0.9}}]}", "sgd settings");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"type\": \"sgd\", \"nesterov\": true}}]}",
        "nesterov");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"schedule\": \"cosine\", \"lr\": 0.1, "
        "\"min_lr\": 0.5}}]}", "must not exceed");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"min_lr\": 0.0}}]}", "needs \"schedule\": \"cosine\"");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"warmup\": 5}}]}", "longer than the stage");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"optimizer\": {\"clip_grad_norm\": \"1\"}}]}",
        "\"stages[0].optimizer.clip_grad_norm\" must be a number");
    bad("{" MODEL ", " DATA ", \"stages\": [" STAGE "], \"validation\": {\"metric\": \"f1\"}}",
        "\"validation.metric\" is \"f1\"");
    bad("{" MODEL ", " DATA ", \"stages\": [" STAGE "], \"validation\": {\"mode\": \"up\"}}",
        "\"validation.mode\"");
    bad("{" MODEL ", " DATA ", \"stages\": [" STAGE "], \"validation\": {\"every\": 1, \"often\": 2}}",
        "unknown key \"validation.often\"");
    bad("{" MODEL ", " DATA ", \"stages\": [" STAGE "], \"checkpoint\": {\"keep\": 0}}",
        "\"checkpoint.keep\"");
    bad("{" MODEL ", " DATA ", \"stages\": [" STAGE "], \"checkpoint\": 5}",
        "\"checkpoint\" must be an object");
    bad("{" MODEL ", " DATA ", \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": "
        "{\"contrastive\": 1}, \"data\": {\"workers\": -1}}]}", "\"stages[0].data.workers\"");

    /* too long */
    size_t big = ((size_t)4 << 20) + 16;
    char *txt = malloc(big + 1);
    memset(txt, ' ', big);
    txt[0] = '{';
    txt[big - 1] = '}';
    txt[big] = 0;
    tm_run_config *c = NULL;
    CHECK_STATUS(tm_run_config_parse(&c, txt, big, "big.json"), TM_ERR_LIMIT);
    free(txt);
    CHECK_STATUS(tm_run_config_load(&c, "/nonexistent/run.json"), TM_ERR_IO);
}

static const char *FULL =
    "{\"model\": {\"dim\": 16, \"heads\": 2, \"encoders\": []}, \"init_seed\": 9,\n"
    " \"out\": \"runs/x\", \"seed\": 7, \"batch_size\": 8, \"threads\": 2, \"log_every\": 3,\n"
    " \"checkpoint\": {\"every\": 50, \"keep\": 2},\n"
    " \"validation\": {\"every\": 20, \"metric\": \"accuracy\", \"patience\": 3,\n"
    "                  \"min_delta\": 0.001},\n"
    " \"data\": {\"synthetic\": {\"examples\": 100, \"noise\": 0.25}, \"val_split\": \"dev\"},\n"
    " \"stages\": [\n"
    "  {\"name\": \"pre\", \"steps\": 30, \"objectives\": {\"classification\": 0.5},\n"
    "   \"data\": {\"modalities\": [\"text\"], \"synthetic\": {\"missing\": 0.2}},\n"
    "   \"freeze\": [\"vision.\", \"audio.\"],\n"
    "   \"optimizer\": {\"type\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9, \"nesterov\": true,\n"
    "                 \"schedule\": \"step\", \"step_size\": 10, \"gamma\": 0.5}},\n"
    "  {\"name\": \"align\", \"epochs\": 2,\n"
    "   \"objectives\": {\"contrastive\": {\"weight\": 2, \"schedule\": \"cosine\", \"from\": 1,\n"
    "                   \"to\": 0.1, \"steps\": 40}, \"classification\": {\"weight\": 1,\n"
    "                   \"label_smoothing\": 0.1}},\n"
    "   \"optimizer\": {\"lr\": 0.003, \"betas\": [0.8, 0.99], \"eps\": 1e-6, \"warmup\": 5,\n"
    "                 \"schedule\": \"cosine\", \"min_lr\": 0.0001, \"clip_grad_norm\": 1.5,\n"
    "                 \"no_decay\": [\"bias\", \"ln\"]}}\n"
    " ]}\n";

static void test_full(void)
{
    tm_run_config *c = parse(FULL, TM_OK, NULL);
    if (!c) return;
    CHECK(c->model == NULL && c->model_json && strstr(c->model_json, "\"dim\":16"));
    CHECK(c->init_seed == 9 && c->seed == 7 && c->batch_size == 8 && c->threads == 2);
    CHECK(c->log_every == 3 && c->ckpt_every == 50 && c->ckpt_keep == 2);
    CHECK(c->val_every == 20 && c->val_batch_size == 8 && !strcmp(c->val_metric, "accuracy"));
    CHECK(c->val_maximize == 1 && c->patience == 3 && c->min_delta == 0.001);
    CHECK(c->n_stages == 2);
    const tm_train_stage *a = &c->stages[0], *b = &c->stages[1];
    CHECK(!strcmp(a->name, "pre") && a->steps == 30 && a->epochs == 0);
    CHECK(a->objectives[TM_LOSS_CLASSIFICATION].enabled &&
          a->objectives[TM_LOSS_CLASSIFICATION].weight == 0.5);
    CHECK(!a->objectives[TM_LOSS_CONTRASTIVE].enabled);
    /* the stage's data: the run's, with its overrides */
    CHECK(a->data.synthetic && a->data.synth_examples == 100 && a->data.synth_noise == 0.25);
    CHECK(a->data.synth_missing == 0.2 && c->data.synth_missing == 0);
    CHECK(a->data.n_modalities == 1 && !strcmp(a->data.modalities[0], "text"));
    CHECK(b->data.n_modalities == -1 && !strcmp(b->data.val_split, "dev"));
    CHECK(!strcmp(a->data.train_split, "train"));
    CHECK(a->n_freeze == 2 && !strcmp(a->freeze[1], "audio."));
    CHECK(a->optim.kind == TM_OPTIM_SGD && a->optim.lr == 0.1f && a->optim.momentum == 0.9f &&
          a->optim.nesterov == 1 && a->optim.weight_decay == 0.0f);
    CHECK(a->lr.kind == TM_LR_STEP && a->lr.step_size == 10 && a->lr.gamma == 0.5f);
    CHECK(b->epochs == 2 && b->steps == 0);
    const tm_objective *o = &b->objectives[TM_LOSS_CONTRASTIVE];
    CHECK(o->schedule == TM_WEIGHT_COSINE && o->weight == 2 && o->from == 1 && o->to == 0.1 &&
          o->steps == 40);
    CHECK(b->objectives[TM_LOSS_CLASSIFICATION].label_smoothing == 0.1f);
    CHECK(b->optim.kind == TM_OPTIM_ADAMW && b->optim.beta1 == 0.8 && b->optim.beta2 == 0.99);
    CHECK(b->optim.eps == 1e-6f && b->optim.weight_decay == 0.01f);
    CHECK(b->lr.kind == TM_LR_COSINE && b->lr.warmup_steps == 5 && b->lr.min_lr == 0.0001f);
    CHECK(b->clip_grad_norm == 1.5f && b->n_no_decay == 2);

    /* canonical JSON parses back to the same config */
    char *j = tm_run_config_to_json(c);
    CHECK(j != NULL);
    tm_run_config *c2 = j ? parse(j, TM_OK, NULL) : NULL;
    if (c2) {
        CHECK(tm_run_config_hash(c) == tm_run_config_hash(c2));
        char *j2 = tm_run_config_to_json(c2);
        CHECK(j2 && !strcmp(j, j2));
        tm_free(j2);
    }
    tm_run_config_free(c2);
    tm_free(j);

    /* the hash: out, threads, log_every and checkpoint settings do not
     * change the numbers; the rest does */
    uint64_t h = tm_run_config_hash(c);
    c->threads = 1;
    c->log_every = 100;
    c->ckpt_keep = 9;
    CHECK(tm_run_config_hash(c) == h);
    c->seed = 8;
    CHECK(tm_run_config_hash(c) != h);
    c->seed = 7;
    c->stages[1].optim.lr = 0.004f;
    CHECK(tm_run_config_hash(c) != h);
    c->stages[1].optim.lr = 0.003f;
    c->stages[0].data.synth_noise = 0.3;
    CHECK(tm_run_config_hash(c) != h);
    c->stages[0].data.synth_noise = 0.25;
    CHECK(tm_run_config_hash(c) == h);
    tm_run_config_free(c);
}

static void test_defaults(void)
{
    tm_run_config *c = parse("{" MODEL ", " DATA ", \"stages\": [" STAGE "]}", TM_OK, NULL);
    if (!c) return;
    CHECK(!strcmp(c->model, "m.json") && !c->model_json && !strcmp(c->out, "/tmp/x"));
    CHECK(c->seed == 0 && c->init_seed == 0 && !strcmp(c->dtype, "f32") && c->log_every == 1);
    CHECK(c->ckpt_every == 1000 && c->ckpt_keep == 3 && c->val_every == 0);
    CHECK(!strcmp(c->val_metric, "loss") && c->val_maximize == 0 && c->patience == 0);
    CHECK(c->val_batch_size == 4);
    const tm_train_stage *a = &c->stages[0];
    CHECK(a->data.synth_examples == 256 && a->data.synth_val == 64 && a->data.synth_noise == 0.5);
    CHECK(!strcmp(a->data.train_split, "train") && !strcmp(a->data.val_split, "val"));
    CHECK(a->optim.kind == TM_OPTIM_ADAMW && a->optim.lr == 1e-3f);
    CHECK(a->lr.kind == TM_LR_CONSTANT && a->clip_grad_norm == 0);
    CHECK(a->objectives[TM_LOSS_CLASSIFICATION].schedule == TM_WEIGHT_CONSTANT);
    tm_run_config_free(c);
    tm_run_config_free(NULL);
    /* null val_split: no validation data */
    c = parse("{" MODEL ", \"data\": {\"synthetic\": {}, \"val_split\": null}, \"stages\": [" STAGE
              "]}", TM_OK, NULL);
    if (c) CHECK(c->stages[0].data.val_split == NULL);
    tm_run_config_free(c);
}

/* weights.txt: kind weight from to steps stage_steps t expected */
static void test_weights(void)
{
    FILE *f = fopen(test_data_path("train/weights.txt"), "r");
    CHECK(f != NULL);
    if (!f) return;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char kind[16];
        double w, a, b, want;
        long long steps, stage_steps, t;
        if (sscanf(line, "%15s %lf %lf %lf %lld %lld %lld %lf", kind, &w, &a, &b, &steps,
                   &stage_steps, &t, &want) != 8) {
            CHECK(0);
            continue;
        }
        tm_objective o;
        memset(&o, 0, sizeof o);
        o.enabled = 1;
        o.weight = w;
        o.from = a;
        o.to = b;
        o.steps = steps;
        o.schedule = !strcmp(kind, "constant") ? TM_WEIGHT_CONSTANT
                     : !strcmp(kind, "linear") ? TM_WEIGHT_LINEAR
                                               : TM_WEIGHT_COSINE;
        CHECK_NEAR(tm_objective_weight_at(&o, t, stage_steps), want, 1e-15, 1e-13);
        o.enabled = 0;
        CHECK(tm_objective_weight_at(&o, t, stage_steps) == 0.0);
        n++;
    }
    fclose(f);
    CHECK(n > 40);
    CHECK(!strcmp(tm_loss_name(TM_LOSS_MASKED), "masked") && tm_loss_name(TM_LOSS_COUNT) == NULL);
}

int main(void)
{
    test_errors();
    test_full();
    test_defaults();
    test_weights();
    return test_finish("train_run_config");
}
