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

/* ------------------------------------------------------- "augment" */

#define MDATA "\"manifest\": \"d/m.jsonl\""
/* a run config whose data is MDATA plus the text AUG ("augment": ...) */
static char *aug_config(const char *aug)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "{" MODEL ", \"data\": {" MDATA ", \"augment\": %s}, \"stages\": ["
             STAGE "]}", aug);
    return buf;
}

static void bad_aug(const char *aug, const char *needle)
{
    bad(aug_config(aug), needle);
}

static void test_augment_errors(void)
{
    bad_aug("3", "\"data.augment\" must be an object");
    bad_aug("[]", "\"data.augment\" must be an object");
    bad_aug("{\"colour\": {}}", "unknown key \"data.augment.colour\" (allowed here: image, audio, text)");
    bad_aug("{\"image\": 1}", "\"data.augment.image\" must be an object");
    bad_aug("{\"image\": {\"blur\": true}}", "unknown key \"data.augment.image.blur\"");
    bad_aug("{\"image\": {\"flip\": 1.5}}", "\"data.augment.image.flip\" is 1.5; it must be in [0, 1]");
    bad_aug("{\"image\": {\"flip\": \"yes\"}}",
            "\"data.augment.image.flip\" must be true, false or a probability in [0, 1]");
    bad_aug("{\"image\": {\"flip\": {}}}", "\"data.augment.image.flip\" must be true, false");
    bad_aug("{\"image\": {\"crop\": 0.5}}", "\"data.augment.image.crop\" must be true, false or an object");
    bad_aug("{\"image\": {\"crop\": {\"scale\": [0.9, 0.5]}}}",
            "\"data.augment.image.crop.scale\" is [0.9, 0.5]; the low end must not exceed");
    bad_aug("{\"image\": {\"crop\": {\"scale\": [0, 1]}}}",
            "\"data.augment.image.crop.scale[0]\" is 0; it must be in (0, 1]");
    bad_aug("{\"image\": {\"crop\": {\"scale\": [0.5, 1.5]}}}", "\"data.augment.image.crop.scale[1]\" is 1.5");
    bad_aug("{\"image\": {\"crop\": {\"scale\": [0.5]}}}",
            "\"data.augment.image.crop.scale\" must be an array of two numbers");
    bad_aug("{\"image\": {\"crop\": {\"ratio\": [1, \"x\"]}}}",
            "\"data.augment.image.crop.ratio\" must be an array of two numbers");
    bad_aug("{\"image\": {\"crop\": {\"size\": 3}}}", "unknown key \"data.augment.image.crop.size\"");
    bad_aug("{\"image\": {\"rotate\": 200}}", "\"data.augment.image.rotate\" is 200; it must be in (0, 180]");
    bad_aug("{\"image\": {\"rotate\": 0}}", "\"data.augment.image.rotate\" is 0");
    bad_aug("{\"image\": {\"rotate\": {\"degrees\": 5, \"fill\": 2}}}", "\"data.augment.image.rotate.fill\" is 2");
    bad_aug("{\"image\": {\"jitter\": {\"hue\": 0.6}}}", "\"data.augment.image.jitter.hue\" is 0.6");
    bad_aug("{\"image\": {\"jitter\": {\"brightness\": -1}}}", "\"data.augment.image.jitter.brightness\"");
    bad_aug("{\"image\": {\"jitter\": {}}}", "\"data.augment.image.jitter\" changes nothing");
    bad_aug("{\"image\": {\"erase\": {\"p\": -0.1}}}", "\"data.augment.image.erase.p\" is -0.1");
    bad_aug("{\"image\": {\"erase\": {\"scale\": [1, 1]}}}", "\"data.augment.image.erase.scale\" must allow");
    bad_aug("{\"image\": {\"erase\": {\"value\": 1, \"noise\": true}}}", "not both");
    bad_aug("{\"image\": {\"erase\": {\"noise\": 1}}}", "\"data.augment.image.erase.noise\" must be true or false");
    bad_aug("{\"audio\": {\"reverb\": true}}",
            "unknown key \"data.augment.audio.reverb\" (allowed here: specaug, wave)");
    bad_aug("{\"audio\": {\"wave\": true}}", "\"data.augment.audio.wave\" must be an object naming");
    bad_aug("{\"audio\": {\"wave\": {}}}", "\"data.augment.audio.wave\" names no step");
    bad_aug("{\"audio\": {\"wave\": {\"echo\": true}}}", "unknown key \"data.augment.audio.wave.echo\"");
    bad_aug("{\"audio\": {\"wave\": {\"stretch\": {\"rate\": [0.1, 2]}}}}",
            "\"data.augment.audio.wave.stretch.rate[0]\" is 0.1; it must be in [0.25, 4]");
    bad_aug("{\"audio\": {\"wave\": {\"pitch\": {\"semitones\": [2, -2]}}}}",
            "\"data.augment.audio.wave.pitch.semitones\" is [2, -2]");
    bad_aug("{\"audio\": {\"wave\": {\"gain\": {\"p\": 0}}}}",
            "\"data.augment.audio.wave.gain.p\" is 0; it must be in (0, 1]");
    bad_aug("{\"audio\": {\"wave\": {\"gain\": 0.5}}}",
            "\"data.augment.audio.wave.gain\" must be true, false or an object");
    bad_aug("{\"audio\": {\"wave\": {\"shift\": {\"wrap\": 1}}}}",
            "\"data.augment.audio.wave.shift.wrap\" must be true or false");
    bad_aug("{\"audio\": {\"wave\": {\"reverb\": {\"wet\": 1.5}}}}",
            "\"data.augment.audio.wave.reverb.wet\" is 1.5");
    bad_aug("{\"audio\": {\"wave\": {\"noise\": {\"db\": [1, 2]}}}}",
            "unknown key \"data.augment.audio.wave.noise.db\" (allowed here: p, snr_db)");
    bad_aug("{\"audio\": {\"specaug\": {\"n_freq_masks\": 17}}}",
            "\"data.augment.audio.specaug.n_freq_masks\" is 17; it must be in [0, 16]");
    bad_aug("{\"audio\": {\"specaug\": {\"time_param\": 2.5}}}",
            "\"data.augment.audio.specaug.time_param\" must be an integer");
    bad_aug("{\"audio\": {\"specaug\": {\"time_max_frac\": 0}}}",
            "\"data.augment.audio.specaug.time_max_frac\" is 0");
    bad_aug("{\"audio\": {\"specaug\": {\"fill_mean\": true, \"fill_value\": -3}}}",
            "\"fill_value\" needs \"fill_mean\": false");
    bad_aug("{\"text\": {\"delete\": 2}}", "\"data.augment.text.delete\" is 2; it must be in [0, 1]");
    bad_aug("{\"text\": {\"delete\": \"some\"}}", "\"data.augment.text.delete\" must be true, false");
    bad_aug("{\"text\": {\"synonyms\": 0.1}}", "unknown key \"data.augment.text.synonyms\"");
    /* a stage's override is named by its path */
    bad("{" MODEL ", \"data\": {" MDATA "}, \"stages\": [{\"name\": \"a\", \"steps\": 2, "
        "\"objectives\": {\"contrastive\": 1}, \"data\": {\"augment\": {\"image\": {\"flip\": -1}}}}]}",
        "\"stages[0].data.augment.image.flip\" is -1");
    /* nothing to augment in synthetic data; validation is never augmented */
    bad("{" MODEL ", \"data\": {\"synthetic\": {}, \"augment\": {\"image\": {\"flip\": true}}}, "
        "\"stages\": [" STAGE "]}", "\"stages[0]\": \"data.augment\" needs manifest data");
    bad("{" MODEL ", \"data\": {" MDATA ", \"val_split\": \"train\", \"augment\": {}}, "
        "\"stages\": [" STAGE "]}", "would augment validation");
}

static void test_augment_parse(void)
{
    /* absent: off, with the front-ends' defaults in place */
    tm_run_config *c = parse("{" MODEL ", \"data\": {" MDATA "}, \"stages\": [" STAGE "]}",
                             TM_OK, NULL);
    tm_image_aug_params di = tm_image_aug_default_params();
    tm_specaug_params ds = tm_specaug_default_params();
    if (c) {
        const tm_train_data *d = &c->stages[0].data;
        CHECK(c->data.augment == 0 && d->augment == 0);
        CHECK(!d->aug.image_crop && !d->aug.image_flip && !d->aug.specaug &&
              d->aug.text_delete_prob == 0);
        CHECK(!memcmp(&d->aug.image, &di, sizeof di) && !memcmp(&d->aug.spec, &ds, sizeof ds));
        char *j = tm_run_config_to_json(c);
        CHECK(j && !strstr(j, "augment")); /* older configs keep their text and hash */
        tm_free(j);
    }
    tm_run_config_free(c);

    /* true: each front-end's defaults */
    c = parse(aug_config("{\"image\": {\"crop\": true, \"flip\": true, \"rotate\": true, "
                         "\"jitter\": true, \"erase\": true}, \"audio\": {\"specaug\": true}, "
                         "\"text\": {\"delete\": true}}"),
              TM_OK, NULL);
    if (c) {
        const tm_loader_aug *a = &c->stages[0].data.aug;
        CHECK(c->stages[0].data.augment == 1);
        CHECK(a->image_crop && a->image_flip && a->image_rotate && a->image_jitter &&
              a->image_erase && a->specaug && !a->audio_wave);
        CHECK(!memcmp(&a->image, &di, sizeof di) && !memcmp(&a->spec, &ds, sizeof ds));
        CHECK(a->text_delete_prob == 0.1f && a->synonyms == NULL && a->synonym_prob == 0);
        CHECK(a->modality_dropout[0] == 0 && a->modality_dropout[1] == 0 &&
              a->modality_dropout[2] == 0);
    }
    tm_run_config_free(c);

    /* values; false and absent keys are off */
    c = parse(aug_config("{\"image\": {\"crop\": {\"scale\": [0.8, 1.0], \"ratio\": [0.9, 1.1]}, "
                         "\"flip\": 0.25, \"rotate\": 12, \"jitter\": {\"brightness\": 0.2, "
                         "\"contrast\": 0.3}, \"erase\": {\"p\": 0.4, \"scale\": [0.02, 0.2], "
                         "\"value\": -1}}, \"audio\": {\"specaug\": {\"n_freq_masks\": 1, "
                         "\"freq_param\": 4, \"time_param\": 3, \"fill_value\": -2}}, "
                         "\"text\": {\"delete\": 0.15}}"),
              TM_OK, NULL);
    if (c) {
        const tm_loader_aug *a = &c->stages[0].data.aug;
        const tm_image_aug_params *q = &a->image;
        CHECK(a->image_crop && q->crop_scale[0] == 0.8f && q->crop_scale[1] == 1.0f &&
              q->crop_ratio[0] == 0.9f && q->crop_ratio[1] == 1.1f);
        CHECK(a->image_flip && q->flip_p == 0.25f);
        CHECK(a->image_rotate && q->rotate_degrees == 12.0f && q->rotate_fill == 0);
        /* jitter's object form: the adjustments not named are off */
        CHECK(a->image_jitter && q->brightness == 0.2f && q->contrast == 0.3f &&
              q->saturation == 0 && q->hue == 0);
        CHECK(a->image_erase && q->erase_p == 0.4f && q->erase_scale[0] == 0.02f &&
              q->erase_scale[1] == 0.2f && q->erase_ratio[0] == di.erase_ratio[0] &&
              q->erase_ratio[1] == di.erase_ratio[1] && q->erase_value == -1.0f &&
              !q->erase_noise);
        CHECK(a->specaug && a->spec.n_freq_masks == 1 && a->spec.freq_param == 4 &&
              a->spec.n_time_masks == ds.n_time_masks && a->spec.time_param == 3 &&
              a->spec.time_max_frac == 1.0f && a->spec.fill_mean == 0 &&
              a->spec.fill_value == -2.0f);
        CHECK(a->text_delete_prob == 0.15f && !a->audio_wave);
    }
    tm_run_config_free(c);
    /* waveform steps: true is p 0.5 with the default amounts */
    c = parse(aug_config("{\"audio\": {\"wave\": {\"gain\": true, \"noise\": {\"p\": 0.3, "
                         "\"snr_db\": [5, 20]}, \"shift\": {\"max_s\": 0.05, \"wrap\": true}, "
                         "\"reverb\": {\"rt60\": [0.3, 0.5], \"wet\": 0.2}, \"stretch\": false}}}"),
              TM_OK, NULL);
    if (c) {
        const tm_loader_aug *a = &c->stages[0].data.aug;
        const tm_audio_aug_params *w = &a->audio;
        tm_audio_aug_params dw = tm_audio_aug_default_params();
        CHECK(a->audio_wave && !a->specaug && !a->image_crop);
        CHECK(w->p_gain == 0.5f && w->gain_min_db == dw.gain_min_db &&
              w->gain_max_db == dw.gain_max_db);
        CHECK(w->p_noise == 0.3f && w->snr_min_db == 5.0f && w->snr_max_db == 20.0f);
        CHECK(w->p_shift == 0.5f && w->shift_max_s == 0.05f && w->shift_wrap == 1);
        CHECK(w->p_reverb == 0.5f && w->rt60_min == 0.3f && w->rt60_max == 0.5f &&
              w->reverb_wet == 0.2f);
        CHECK(w->p_stretch == 0 && w->p_pitch == 0 && w->ir == NULL && w->noise == NULL &&
              w->resampler == dw.resampler);
    }
    tm_run_config_free(c);
    c = parse(aug_config("{\"image\": {\"flip\": false, \"rotate\": {\"degrees\": 30, "
                         "\"fill\": 0.5}}, \"text\": {}}"), TM_OK, NULL);
    if (c) {
        const tm_loader_aug *a = &c->stages[0].data.aug;
        CHECK(c->stages[0].data.augment == 1 && !a->image_flip && !a->image_crop);
        CHECK(a->image_rotate && a->image.rotate_degrees == 30.0f && a->image.rotate_fill == 0.5f);
        CHECK(a->text_delete_prob == 0 && !a->specaug);
    }
    tm_run_config_free(c);
    /* "augment": null in the run's data: off */
    c = parse(aug_config("null"), TM_OK, NULL);
    if (c) CHECK(c->data.augment == 0 && c->stages[0].data.augment == 0);
    tm_run_config_free(c);
}

static int wave_equal(const tm_audio_aug_params *x, const tm_audio_aug_params *y)
{
    return x->p_stretch == y->p_stretch && x->stretch_min == y->stretch_min &&
           x->stretch_max == y->stretch_max && x->p_pitch == y->p_pitch &&
           x->pitch_min == y->pitch_min && x->pitch_max == y->pitch_max &&
           x->p_shift == y->p_shift && x->shift_max_s == y->shift_max_s &&
           x->shift_wrap == y->shift_wrap && x->p_reverb == y->p_reverb &&
           x->rt60_min == y->rt60_min && x->rt60_max == y->rt60_max &&
           x->reverb_wet == y->reverb_wet && x->ir == y->ir && x->n_ir == y->n_ir &&
           x->p_gain == y->p_gain && x->gain_min_db == y->gain_min_db &&
           x->gain_max_db == y->gain_max_db && x->p_noise == y->p_noise &&
           x->snr_min_db == y->snr_min_db && x->snr_max_db == y->snr_max_db &&
           x->noise == y->noise && x->n_noise == y->n_noise && x->resampler == y->resampler;
}

/* field by field (the structs may have padding) */
static int aug_equal(const tm_loader_aug *x, const tm_loader_aug *y)
{
    return x->image_crop == y->image_crop && x->image_flip == y->image_flip &&
           x->image_rotate == y->image_rotate && x->image_jitter == y->image_jitter &&
           x->image_erase == y->image_erase && x->audio_wave == y->audio_wave &&
           x->specaug == y->specaug && x->text_delete_prob == y->text_delete_prob &&
           wave_equal(&x->audio, &y->audio) &&
           x->synonyms == y->synonyms && x->synonym_prob == y->synonym_prob &&
           !memcmp(&x->image, &y->image, sizeof x->image) &&
           !memcmp(&x->spec, &y->spec, sizeof x->spec) &&
           !memcmp(x->modality_dropout, y->modality_dropout, sizeof x->modality_dropout);
}

/* Stages inherit the run's augmentations, a stage's "augment" replaces the
 * whole object, null turns them off; the canonical JSON keeps all that. */
static void test_augment_stages(void)
{
    static const char *cfg =
        "{" MODEL ", \"data\": {" MDATA ", \"augment\": {\"image\": {\"crop\": {\"scale\": "
        "[0.5, 1]}, \"flip\": 0.5}, \"audio\": {\"specaug\": {\"n_time_masks\": 3}, \"wave\": "
        "{\"stretch\": true, \"pitch\": {\"p\": 0.25, \"semitones\": [-1, 1]}}}}},\n"
        " \"stages\": [{\"name\": \"a\", \"steps\": 2, \"objectives\": {\"classification\": 1}},\n"
        "  {\"name\": \"b\", \"steps\": 2, \"objectives\": {\"classification\": 1}, \"data\": "
        "{\"augment\": {\"image\": {\"erase\": {\"noise\": true}}, \"text\": {\"delete\": 0.2}}}},\n"
        "  {\"name\": \"c\", \"steps\": 2, \"objectives\": {\"classification\": 1}, \"data\": "
        "{\"augment\": null}},\n"
        "  {\"name\": \"d\", \"steps\": 2, \"objectives\": {\"classification\": 1}, \"data\": "
        "{\"workers\": 1}}]}";
    tm_run_config *c = parse(cfg, TM_OK, NULL);
    if (!c) return;
    const tm_loader_aug *a = &c->stages[0].data.aug, *b = &c->stages[1].data.aug;
    CHECK(c->data.augment && c->stages[0].data.augment && c->stages[1].data.augment);
    CHECK(a->audio_wave && a->audio.p_stretch == 0.5f && a->audio.p_pitch == 0.25f &&
          a->audio.pitch_min == -1.0f && a->audio.p_gain == 0 && !b->audio_wave);
    CHECK(a->image_crop && a->image.crop_scale[0] == 0.5f && a->image_flip && a->specaug &&
          a->spec.n_time_masks == 3 && !a->image_erase && a->text_delete_prob == 0);
    /* b replaces the run's object: no crop, flip or SpecAugment */
    CHECK(!b->image_crop && !b->image_flip && !b->specaug && b->image_erase &&
          b->image.erase_noise && b->text_delete_prob == 0.2f);
    CHECK(b->image.crop_scale[0] == tm_image_aug_default_params().crop_scale[0]);
    CHECK(c->stages[2].data.augment == 0 && !c->stages[2].data.aug.image_crop);
    CHECK(c->stages[3].data.augment == 1 && c->stages[3].data.aug.image_flip &&
          c->stages[3].data.workers == 1);

    char *j = tm_run_config_to_json(c);
    CHECK(j && strstr(j, "\"augment\":\tnull"));
    CHECK(j && strstr(j, "\"delete\":\t0.2\n")); /* floats in their shortest form */
    tm_run_config *c2 = j ? parse(j, TM_OK, NULL) : NULL;
    if (c2) {
        CHECK(tm_run_config_hash(c) == tm_run_config_hash(c2));
        char *j2 = tm_run_config_to_json(c2);
        CHECK(j2 && !strcmp(j, j2));
        tm_free(j2);
        for (int i = 0; i < 4; i++) {
            const tm_train_data *x = &c->stages[i].data, *y = &c2->stages[i].data;
            CHECK(x->augment == y->augment && aug_equal(&x->aug, &y->aug));
        }
        CHECK(c2->stages[2].data.augment == 0);
    }
    tm_run_config_free(c2);
    tm_free(j);

    /* the hash sees the augmentations (they change the numbers) */
    uint64_t h = tm_run_config_hash(c);
    c->stages[0].data.aug.image.flip_p = 0.75f;
    CHECK(tm_run_config_hash(c) != h);
    c->stages[0].data.aug.image.flip_p = 0.5f;
    CHECK(tm_run_config_hash(c) == h);
    c->stages[2].data.augment = 1;
    CHECK(tm_run_config_hash(c) != h);
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
    test_augment_errors();
    test_augment_parse();
    test_augment_stages();
    test_weights();
    return test_finish("train_run_config");
}
