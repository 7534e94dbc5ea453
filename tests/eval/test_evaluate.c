/* tm_evaluate against an independent recomputation: the test feeds the
 * same rows (through its own loader at another batch size) to the model's
 * graphs with its own present masks and computes accuracy per modality
 * subset, per group, occlusion and instance Recall@1 by hand; then the
 * bad-input errors (each naming the manifest line). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval_test.h"
#include "trimodal/data.h"
#include "trimodal/model.h"
#include "trimodal/text.h"

static const char *config =
    "{\"architecture\": \"trimodal\", \"name\": \"ev\", \"dim\": 16, \"heads\": 2, "
    "\"mlp_dim\": 32, \"encoders\": ["
    "{\"modality\": \"text\", \"layers\": 1, \"vocab_size\": 320, \"max_tokens\": 8, "
    "\"pad_id\": 0, \"positions\": \"learned\", \"pool\": \"first\"},"
    "{\"modality\": \"vision\", \"layers\": 1, \"channels\": 1, \"image_size\": 8, "
    "\"patch_size\": 4, \"cls_token\": true, \"positions\": \"learned\", \"pool\": \"first\"}],"
    "\"fusion\": {\"type\": \"early\", \"layers\": 1, \"cls_token\": true, "
    "\"type_embedding\": true},"
    "\"classifier\": {\"num_classes\": 3}, \"contrastive\": {\"dim\": 8},"
    "\"loss\": {\"classification\": 1, \"contrastive\": 1}}";

static const char *pre_json =
    "{\"text\": {\"max_length\": 8}, \"image\": {\"size\": 8, \"height\": 8, \"width\": 8, "
    "\"channels\": 1, \"mean\": [0.5], \"std\": [0.5]}}";

#define N 14
static const char *names[3] = {"cat", "dog", "owl"};
static const char *words[5] = {"red", "blue", "big", "small", "old"};

static char dir[64];

static void write_pgm(int i)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%d.pgm", dir, i);
    FILE *f = fopen(p, "wb");
    if (!f) return;
    fprintf(f, "P5\n8 8\n255\n");
    for (int k = 0; k < 64; k++) fputc((k * (i + 3) + i * 17) & 255, f);
    fclose(f);
}

/* The manifest text: row 4 has no image; labels cycle; voice alternates. */
static char *manifest_text(const char *bad_row)
{
    size_t cap = 8192;
    char *m = malloc(cap);
    size_t len = 0;
    for (int i = 0; i < N; i++) {
        char img[32];
        if (i == 4)
            snprintf(img, sizeof img, "null");
        else
            snprintf(img, sizeof img, "\"%d.pgm\"", i);
        len += (size_t)snprintf(m + len, cap - len,
                                "{\"id\": \"r%d\", \"text\": \"a %s %s\", \"image\": %s, "
                                "\"label\": \"%s\", \"split\": \"test\", \"voice\": \"v%d\"}\n",
                                i, words[i % 5], names[i % 3], img, names[i % 3], i % 2);
    }
    if (bad_row) len += (size_t)snprintf(m + len, cap - len, "%s\n", bad_row);
    return m;
}

static tm_manifest *parse(const char *bad_row)
{
    char *t = manifest_text(bad_row);
    tm_manifest *m = NULL;
    tm_status st = tm_manifest_parse(&m, t, strlen(t), "eval.jsonl", dir, NULL);
    if (st) fprintf(stderr, "manifest: %s\n", tm_last_error());
    free(t);
    return m;
}

static int argmax(const float *z, int c)
{
    int b = 0;
    for (int i = 1; i < c; i++)
        if (z[i] > z[b]) b = i;
    return b;
}

static double prob(const float *z, int c, int k)
{
    double mx = z[0], s = 0;
    for (int i = 1; i < c; i++) mx = z[i] > mx ? z[i] : mx;
    for (int i = 0; i < c; i++) s += exp((double)z[i] - mx);
    return exp((double)z[k] - mx) / s;
}

static cJSON *find_subset(cJSON *abl, const char *name)
{
    cJSON *e;
    cJSON_ArrayForEach(e, abl)
    {
        cJSON *m = cJSON_GetObjectItem(e, "modalities");
        if (m && !strcmp(m->valuestring, name)) return e;
    }
    return NULL;
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/tm_evaluate_XXXXXX");
    if (!mkdtemp(dir)) return 1;
    for (int i = 0; i < N; i++) write_pgm(i);

    tm_model *model = NULL;
    CHECK_OK(tm_model_new_from_json(&model, config, strlen(config), "test"));
    CHECK_OK(tm_model_init_weights(model, 11));
    tm_tokenizer_train_params tp = tm_tokenizer_train_default_params();
    tp.vocab_size = 300;
    const char *corpus[5] = {"a red cat", "a blue dog", "a big owl", "a small cat", "an old dog"};
    size_t lens[5];
    for (int i = 0; i < 5; i++) lens[i] = strlen(corpus[i]);
    tm_tokenizer *tok = NULL;
    CHECK_OK(tm_tokenizer_train_memory(&tok, corpus, lens, 5, &tp));
    tm_preprocess_config pre;
    CHECK_OK(tm_preprocess_config_parse(&pre, pre_json, strlen(pre_json)));
    tm_manifest *man = parse(NULL);
    if (!model || !tok || !man) return test_finish("test_evaluate");

    tm_evaluate_options o = tm_evaluate_default_options();
    o.split = "test";
    o.n_group_by = 1;
    o.group_by[0] = "voice";
    o.n_examples = 3;
    o.class_names = names;
    o.n_class_names = 3;
    tm_evaluation *ev = NULL;
    CHECK_OK(tm_evaluate(&ev, model, tok, &pre, man, &o));
    cJSON *j = ev ? cJSON_Parse(tm_evaluation_json(ev)) : NULL;
    CHECK(j != NULL);

    /* ---- the reference: own loader (batch 5), own graphs, one mask per pass */
    tm_model_info info = tm_model_get_info(model);
    tm_loader_config lc = tm_loader_default_config();
    lc.batch_size = 5;
    lc.text_tokens = info.text_tokens;
    lc.image_channels = 1;
    lc.image_h = lc.image_w = 8;
    lc.n_mels = lc.n_frames = 0;
    lc.n_modalities = 2;
    lc.modality[0] = TM_MODALITY_TEXT;
    lc.modality[1] = TM_MODALITY_IMAGE;
    lc.split = "test";
    lc.shuffle = 0;
    lc.tokenizer = tok;
    lc.preprocess = pre;
    tm_loader *ld = NULL;
    CHECK_OK(tm_loader_new(&ld, man, &lc));
    tm_model_graph *gc = NULL, *ge = NULL;
    CHECK_OK(tm_model_graph_new(&gc, model, 5, TM_MODEL_CLASSIFY));
    CHECK_OK(tm_model_graph_new(&ge, model, 5, TM_MODEL_EMBED));
    static float z[4][N][3], emb[2][N][8];
    static uint8_t pres[N][2];
    int32_t lab[N];
    int pos = 0;
    const unsigned masks[4] = {3, 1, 2, 3}; /* as given, text, vision, (all) */
    for (;;) {
        const tm_batch *b = NULL;
        if (tm_loader_next(ld, &b) || !b) break;
        for (int k = 0; k < 3; k++) {
            tm_model_inputs in = tm_model_graph_inputs(gc);
            memcpy(in.tokens, b->tokens, sizeof(int32_t) * 5 * 8);
            memcpy(in.image, b->image, sizeof(float) * 5 * 64);
            for (int i = 0; i < 5; i++)
                for (int m = 0; m < 2; m++)
                    in.present[i * 2 + m] = b->present[i * 2 + m] && (masks[k] >> m & 1);
            CHECK_OK(tm_model_graph_forward(gc));
            for (int i = 0; i < b->size; i++)
                memcpy(z[k][pos + i], tm_model_graph_logits(gc) + i * 3, sizeof(float) * 3);
        }
        tm_model_inputs in = tm_model_graph_inputs(ge);
        memcpy(in.tokens, b->tokens, sizeof(int32_t) * 5 * 8);
        memcpy(in.image, b->image, sizeof(float) * 5 * 64);
        memcpy(in.present, b->present, 10);
        CHECK_OK(tm_model_graph_forward(ge));
        for (int i = 0; i < b->size; i++) {
            for (int m = 0; m < 2; m++) {
                memcpy(emb[m][pos + i], tm_model_graph_embeddings(ge, m) + i * 8,
                       sizeof(float) * 8);
                pres[pos + i][m] = b->present[i * 2 + m];
            }
            lab[pos + i] = b->labels[i];
        }
        pos += (int)b->size;
    }
    CHECK(pos == N);
    /* accuracy as given, text only, vision only (rows with an image), all (same rows) */
    double acc[3] = {0, 0, 0};
    int cnt[3] = {0, 0, 0}, grp_hit[2] = {0, 0}, grp_n[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 3; k++) {
            if (k == 2 && !pres[i][1]) continue;
            acc[k] += argmax(z[k][i], 3) == lab[i];
            cnt[k]++;
        }
        grp_n[i % 2]++;
        grp_hit[i % 2] += argmax(z[0][i], 3) == lab[i];
    }
    double all_acc = 0;
    int all_n = 0;
    for (int i = 0; i < N; i++)
        if (pres[i][1]) all_acc += argmax(z[0][i], 3) == lab[i], all_n++;
    cJSON *cls = cJSON_GetObjectItem(j, "classification");
    CHECK_NEAR(jnum(cls, "accuracy"), acc[0] / cnt[0], 1e-12, 0);
    CHECK(jnum(cls, "n") == N);
    cJSON *abl = cJSON_GetObjectItem(j, "ablation");
    CHECK(cJSON_GetArraySize(abl) == 3);
    cJSON *e = find_subset(abl, "text");
    CHECK(e && jnum(e, "n") == N);
    if (e) CHECK_NEAR(jnum(e, "accuracy"), acc[1] / cnt[1], 1e-12, 0);
    e = find_subset(abl, "vision");
    CHECK(e && jnum(e, "n") == N - 1);
    if (e) CHECK_NEAR(jnum(e, "accuracy"), acc[2] / cnt[2], 1e-12, 0);
    e = find_subset(abl, "text+vision");
    CHECK(e && jnum(e, "n") == all_n);
    if (e) CHECK_NEAR(jnum(e, "accuracy"), all_acc / all_n, 1e-12, 0);

    /* One row a batch: the row without an image then has the same modalities
     * in the full set and in "text", whose logits eval reuses instead of
     * running the model again; every figure must stay the same. */
    {
        tm_evaluate_options o1 = o;
        o1.batch_size = 1;
        o1.n_examples = 0;
        tm_evaluation *ev1 = NULL;
        CHECK_OK(tm_evaluate(&ev1, model, tok, &pre, man, &o1));
        cJSON *j1 = ev1 ? cJSON_Parse(tm_evaluation_json(ev1)) : NULL;
        cJSON *abl1 = j1 ? cJSON_GetObjectItem(j1, "ablation") : NULL;
        CHECK(cJSON_GetArraySize(abl1) == 3);
        static const char *const sub[3] = {"text", "vision", "text+vision"};
        for (int k = 0; k < 3; k++) {
            cJSON *a = find_subset(abl, sub[k]), *b1 = abl1 ? find_subset(abl1, sub[k]) : NULL;
            CHECK(a && b1);
            if (a && b1) {
                CHECK(jnum(a, "n") == jnum(b1, "n"));
                CHECK_NEAR(jnum(b1, "accuracy"), jnum(a, "accuracy"), 1e-12, 0);
            }
        }
        CHECK_NEAR(jnum(cJSON_GetObjectItem(j1, "classification"), "accuracy"),
                   acc[0] / cnt[0], 1e-12, 0);
        cJSON_Delete(j1);
        tm_evaluation_free(ev1);
    }

    /* bias audit by voice */
    cJSON *bias = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "bias"), 0);
    cJSON *groups = cJSON_GetObjectItem(bias, "groups");
    CHECK(cJSON_GetArraySize(groups) == 2);
    double ga[2] = {(double)grp_hit[0] / grp_n[0], (double)grp_hit[1] / grp_n[1]};
    for (int g = 0; g < 2; g++) {
        cJSON *gi = cJSON_GetArrayItem(groups, g);
        CHECK(gi && !strcmp(cJSON_GetObjectItem(gi, "group")->valuestring, g ? "v1" : "v0"));
        CHECK_NEAR(jnum(gi, "accuracy"), ga[g], 1e-12, 0);
    }
    CHECK_NEAR(jnum(bias, "accuracy_gap"), fabs(ga[0] - ga[1]), 1e-12, 0);

    /* instance Recall@1 text -> vision on rows with both */
    int idx[N], n2 = 0, hit = 0;
    for (int i = 0; i < N; i++)
        if (pres[i][0] && pres[i][1]) idx[n2++] = i;
    for (int q = 0; q < n2; q++) {
        double best = -1e30;
        int bi = -1;
        for (int c = 0; c < n2; c++) {
            double d = 0;
            for (int t = 0; t < 8; t++) d += (double)emb[0][idx[q]][t] * emb[1][idx[c]][t];
            if (d > best || (d == best && c != q)) best = d, bi = c; /* pessimistic ties */
        }
        hit += bi == q;
    }
    cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "retrieval"), 0);
    CHECK(r0 && !strcmp(cJSON_GetObjectItem(r0, "level")->valuestring, "instance"));
    CHECK(jnum(r0, "n") == n2);
    CHECK_NEAR(jnum(r0, "recall_at_1"), (double)hit / n2, 1e-6, 0);

    /* occlusion of example 0: p(pred | both) - p(pred | text only) for vision */
    cJSON *ex0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "examples"), 0);
    int pred = argmax(z[0][0], 3);
    CHECK(ex0 && !strcmp(cJSON_GetObjectItem(ex0, "predicted")->valuestring, names[pred]));
    CHECK_NEAR(jnum(cJSON_GetObjectItem(ex0, "occlusion"), "vision"),
               prob(z[0][0], 3, pred) - prob(z[1][0], 3, pred), 1e-6, 0);
    CHECK_NEAR(jnum(cJSON_GetObjectItem(ex0, "occlusion"), "text"),
               prob(z[0][0], 3, pred) - prob(z[2][0], 3, pred), 1e-6, 0);
    cJSON *gx = cJSON_GetObjectItem(cJSON_GetObjectItem(ex0, "gradient_x_input"), "vision");
    CHECK(cJSON_IsNumber(gx));
    /* the report renders, with pictures */
    char rp[128];
    snprintf(rp, sizeof rp, "%s/report.html", dir);
    CHECK_OK(tm_evaluation_write_report(ev, rp));
    char *html = NULL;
    size_t hl = 0;
    CHECK_OK(tm_read_file(rp, (size_t)64 << 20, &html, &hl));
    int imgs = 0;
    for (const char *p = html; p && (p = strstr(p, "<img")); p++) imgs++;
    CHECK(imgs >= 5); /* confusion, calibration, ablation, retrieval, attention */
    tm_free(html);
    remove(rp);
    CHECK(strstr(tm_evaluation_text(ev), "modality ablation") != NULL);
    cJSON_Delete(j);
    tm_evaluation_free(ev);
    tm_model_graph_free(gc);
    tm_model_graph_free(ge);
    tm_loader_free(ld);

    /* ---- captions: a caption head over vision with "transcript" fields (speech
     * recognition style scoring): WER and BLEU vs the captioner run here */
    {
        static const char *cap_cfg =
            "{\"architecture\": \"trimodal\", \"name\": \"evc\", \"dim\": 16, \"heads\": 2, "
            "\"mlp_dim\": 32, \"encoders\": ["
            "{\"modality\": \"text\", \"layers\": 1, \"vocab_size\": 320, \"max_tokens\": 8},"
            "{\"modality\": \"vision\", \"layers\": 1, \"channels\": 1, \"image_size\": 8, "
            "\"patch_size\": 4, \"cls_token\": true, \"pool\": \"first\"}],"
            "\"fusion\": {\"type\": \"late\", \"combine\": \"concat\"},"
            "\"caption\": {\"layers\": 1, \"max_tokens\": 6, \"vocab_size\": 256, "
            "\"bos_id\": 1, \"eos_id\": 2, \"pad_id\": 0, \"context\": \"vision\"},"
            "\"loss\": {\"caption\": 1}}";
        tm_model *cm = NULL;
        CHECK_OK(tm_model_new_from_json(&cm, cap_cfg, strlen(cap_cfg), "cap"));
        CHECK_OK(tm_model_init_weights(cm, 4));
        char *t = manifest_text(NULL);
        /* every row gets a transcript */
        size_t tl = strlen(t), cap2 = tl * 2;
        char *t2 = malloc(cap2), *w = t2;
        for (const char *p = t; *p; p++) {
            if (!strncmp(p, "\"split\"", 7)) w += sprintf(w, "\"transcript\": \"a red cat\", ");
            *w++ = *p;
        }
        *w = 0;
        tm_manifest *mc = NULL;
        CHECK_OK(tm_manifest_parse(&mc, t2, strlen(t2), "cap.jsonl", dir, NULL));
        tm_evaluate_options oc = tm_evaluate_default_options();
        tm_evaluation *ec = NULL;
        if (cm && mc) CHECK_OK(tm_evaluate(&ec, cm, tok, &pre, mc, &oc));
        cJSON *jc = ec ? cJSON_Parse(tm_evaluation_json(ec)) : NULL;
        cJSON *cj = cJSON_GetObjectItem(jc, "captions");
        CHECK(cj != NULL);
        /* reference: the captioner on each row with an image, one at a time */
        tm_model_captioner *c1 = NULL;
        CHECK_OK(tm_model_captioner_new(&c1, cm, 1, tm_caption_default_params()));
        tm_loader_config l1 = lc;
        l1.batch_size = 1;
        l1.split = NULL;
        tm_loader *ld1 = NULL;
        CHECK_OK(tm_loader_new(&ld1, mc, &l1));
        const char *hyps[N], *refs[N];
        char *hb[N];
        int nh = 0;
        for (;;) {
            const tm_batch *b = NULL;
            if (!ld1 || tm_loader_next(ld1, &b) || !b) break;
            if (!b->present[1]) continue; /* no image: no caption context */
            tm_model_inputs in = tm_model_captioner_inputs(c1);
            memcpy(in.tokens, b->tokens, sizeof(int32_t) * 8);
            memcpy(in.image, b->image, sizeof(float) * 64);
            in.present[0] = b->present[0];
            in.present[1] = 1;
            int32_t ids[5], len = 0;
            CHECK_OK(tm_model_captioner_run(c1, ids, &len, NULL));
            size_t hl;
            CHECK_OK(tm_tokenizer_decode(tok, ids, len, 1, &hb[nh], &hl));
            hyps[nh] = hb[nh];
            refs[nh] = "a red cat";
            nh++;
        }
        tm_edit_result wr;
        CHECK_OK(tm_wer(hyps, refs, nh, NULL, &wr));
        CHECK(jnum(cj, "n") == nh && nh == N - 1);
        CHECK_NEAR(jnum(cj, "wer"), wr.rate, 1e-12, 0);
        for (int i = 0; i < nh; i++) tm_free(hb[i]);
        cJSON_Delete(jc);
        tm_evaluation_free(ec);
        tm_loader_free(ld1);
        tm_model_captioner_free(c1);
        tm_manifest_free(mc);
        tm_model_free(cm);
        free(t);
        free(t2);
    }

    /* ---- bad input: each error names the line */
    struct {
        const char *row, *split, *group, *want;
    } bad[] = {
        {"{\"id\": \"z\", \"text\": \"a cat\", \"label\": \"zebra\", \"split\": \"test\"}",
         "test", NULL, "eval.jsonl:15: row 'z' has label 'zebra'"},
        {"{\"id\": \"u\", \"text\": \"a cat\", \"split\": \"test\"}", "test", NULL,
         "eval.jsonl:15: row 'u' has no \"label\""},
        {NULL, "nope", NULL, "no rows in split 'nope'"},
        {NULL, "test", "accent", "no row of"},
    };
    for (size_t t = 0; t < sizeof bad / sizeof bad[0]; t++) {
        tm_manifest *m2 = parse(bad[t].row);
        CHECK(m2 != NULL);
        if (!m2) continue;
        tm_evaluate_options o2 = o;
        o2.split = bad[t].split;
        o2.n_examples = 0;
        o2.n_group_by = bad[t].group ? 1 : 0;
        o2.group_by[0] = bad[t].group;
        tm_evaluation *e2 = NULL;
        CHECK_STATUS(tm_evaluate(&e2, model, tok, &pre, m2, &o2), TM_ERR_INVALID);
        CHECK(e2 == NULL);
        if (!strstr(tm_last_error(), bad[t].want)) {
            fprintf(stderr, "case %zu: message '%s' lacks '%s'\n", t, tm_last_error(),
                    bad[t].want);
            CHECK(0);
        }
        tm_manifest_free(m2);
    }
    /* a row without any modality the model reads (audio only) */
    char wav[128];
    snprintf(wav, sizeof wav, "%s/a.wav", dir);
    FILE *f = fopen(wav, "wb");
    if (f) fclose(f);
    tm_manifest *m3 = parse("{\"id\": \"s\", \"audio\": \"a.wav\", \"label\": \"cat\", "
                            "\"split\": \"test\"}");
    if (m3) {
        tm_evaluation *e3 = NULL;
        o.n_examples = 0;
        CHECK_STATUS(tm_evaluate(&e3, model, tok, &pre, m3, &o), TM_ERR_INVALID);
        CHECK(strstr(tm_last_error(), "eval.jsonl:15: row 's' has none of the modalities") !=
              NULL);
        tm_manifest_free(m3);
    }
    remove(wav);
    for (int i = 0; i < N; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%d.pgm", dir, i);
        remove(p);
    }
    rmdir(dir);
    tm_manifest_free(man);
    tm_tokenizer_free(tok);
    tm_model_free(model);
    return test_finish("test_evaluate");
}
