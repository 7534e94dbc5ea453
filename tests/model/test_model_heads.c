/*
 * The model features beyond bench-small: a causal rotary text encoder, a
 * CNN vision backbone, AST-style audio patches, bottleneck fusion, the
 * caption decoder (teacher-forced loss; greedy and beam-search decoding
 * against an exhaustive search), the masked-token head, run-time loss
 * weights and attention maps.
 *
 * Gradients of the whole composition are checked against central finite
 * differences of the loss (the ops themselves are checked against PyTorch
 * in their own tests, and the PyTorch twin checks these models exactly).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/model.h"

static const char *HEADS =
    "{\"dim\": 16, \"heads\": 2, \"mlp_dim\": 32,"
    " \"encoders\": ["
    "  {\"modality\": \"text\", \"layers\": 1, \"vocab_size\": 12, \"max_tokens\": 6,"
    "   \"causal\": true, \"positions\": \"rotary\", \"pool\": \"mean\"},"
    "  {\"modality\": \"vision\", \"layers\": 1, \"channels\": 1, \"image_size\": 8,"
    "   \"backbone\": \"cnn\", \"norm_groups\": 2,"
    "   \"stages\": [{\"channels\": 4, \"pool\": 2}, {\"channels\": 8, \"blocks\": 2, \"pool\": 2}]},"
    "  {\"modality\": \"audio\", \"layers\": 1, \"n_mels\": 8, \"n_frames\": 12,"
    "   \"patch_size\": 4, \"patch_stride\": 4, \"positions\": \"sincos2d\"}],"
    " \"fusion\": {\"type\": \"%s\"%s},"
    " \"classifier\": {\"num_classes\": 3}, \"contrastive\": {\"dim\": 8},"
    " \"caption\": {\"layers\": 1, \"max_tokens\": 4, \"vocab_size\": 5, \"bos_id\": 1,"
    "   \"eos_id\": 2, \"pad_id\": 0, \"context\": \"%s\"},"
    " \"masked_token\": {\"mask_id\": 3},"
    " \"loss\": {\"classification\": 1, \"contrastive\": 0.5, \"caption\": 2, \"masked\": 0.7}}";

#define B 4
#define T 6
#define IMG 64
#define MEL 96
#define TC 4

static tm_model *make(const char *fusion, const char *extra, const char *context)
{
    char buf[4096];
    snprintf(buf, sizeof buf, HEADS, fusion, extra, context);
    tm_model *m = NULL;
    CHECK_OK(tm_model_new_from_json(&m, buf, strlen(buf), "heads.json"));
    if (m) CHECK_OK(tm_model_init_weights(m, 11));
    return m;
}

static void fill(tm_model_inputs in, uint64_t seed)
{
    for (int i = 0; i < B * T; i++) in.tokens[i] = 4 + (int32_t)((i * 5 + seed) % 8);
    for (int b = 0; b < B; b++)
        for (int t = T - b % 3; t < T; t++) in.tokens[b * T + t] = 0; /* padding */
    test_fill_uniform(in.image, B * IMG, seed + 1, -1, 1);
    test_fill_uniform(in.mel, B * MEL, seed + 2, -1, 1);
    if (in.labels)
        for (int b = 0; b < B; b++) in.labels[b] = b % 3;
    if (in.caption)
        for (int b = 0; b < B; b++) {
            int32_t *c = in.caption + b * TC;
            c[0] = 1;
            c[1] = 3 + b % 2;
            c[2] = b == 3 ? 0 : 2; /* example 3 has no EOS: a one-token caption, then pad */
            c[3] = 0;
        }
    if (in.mlm_labels) {
        for (int i = 0; i < B * T; i++) in.mlm_labels[i] = -100;
        in.mlm_labels[0 * T + 1] = 7;
        in.tokens[0 * T + 1] = 3;
        in.mlm_labels[2 * T + 0] = 9;
        in.tokens[2 * T + 0] = 3;
    }
    memset(in.present, 1, B * 3);
    in.present[1 * 3 + 2] = 0; /* example 1 lacks audio */
    in.present[2 * 3 + 1] = 0; /* example 2 lacks vision */
}

/* The config survives its canonical form, and builds the same table. */
static void test_config(void)
{
    tm_model *m = make("bottleneck", ", \"layers\": 1, \"tokens\": 2", "fusion");
    if (!m) return;
    char *js = tm_model_config_json(m);
    tm_model *m2 = NULL;
    CHECK_OK(tm_model_new_from_json(&m2, js, strlen(js), "canonical"));
    if (m2) {
        CHECK(tm_model_tensor_count(m) == tm_model_tensor_count(m2));
        for (int i = 0; i < tm_model_tensor_count(m); i++) {
            tm_model_tensor a, b;
            tm_model_tensor_at(m, i, &a);
            tm_model_tensor_at(m2, i, &b);
            CHECK(!strcmp(a.name, b.name) && a.numel == b.numel && a.offset == b.offset);
        }
    }
    static const char *names[] = {"vision.cnn.0.0.conv.weight", "vision.cnn.1.1.norm.bias",
                                  "vision.cnn.proj.weight", "audio.patch.weight",
                                  "fusion.bottleneck", "fusion.audio.layers.0.attn.qkv.weight",
                                  "caption.layers.0.xattn.qkv.weight", "caption.head.bias",
                                  "mlm.head.weight", "caption.pos_emb", "audio.pos_emb"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        int k = tm_model_find_tensor(m, names[i]);
        if (k < 0) fprintf(stderr, "missing tensor %s\n", names[i]);
        CHECK(k >= 0);
    }
    tm_model_tensor t;
    tm_model_tensor_at(m, tm_model_find_tensor(m, "audio.pos_emb"), &t);
    CHECK(t.frozen && t.shape[0] == 6 && t.shape[1] == 16); /* 2 x 3 patches */
    tm_model_tensor_at(m, tm_model_find_tensor(m, "vision.cnn.1.1.conv.weight"), &t);
    CHECK(t.ndim == 4 && t.shape[0] == 8 && t.shape[1] == 8 && t.shape[2] == 3);
    tm_model_info info = tm_model_get_info(m);
    CHECK(info.caption_tokens == TC && info.caption_vocab == 5 && info.mask_id == 3);
    CHECK(!strcmp(info.fusion, "bottleneck") && !strcmp(info.caption_context, "fusion"));
    free(js);
    tm_model_free(m2);
    tm_model_free(m);

    /* messages for the new keys */
    static const struct {
        const char *fusion, *extra, *context, *want;
    } bad[] = {
        {"cross", ", \"layers\": 1, \"tokens\": 2", "fusion", "\"fusion.tokens\" belongs to bottleneck fusion"},
        {"early", ", \"layers\": 1, \"tokens\": 2", "fusion", "\"fusion.tokens\" belongs to bottleneck fusion"},
        {"early", ", \"layers\": 1", "speech", "\"caption.context\" must be one of"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char buf[4096];
        snprintf(buf, sizeof buf, HEADS, bad[i].fusion, bad[i].extra, bad[i].context);
        tm_model *x = NULL;
        CHECK_STATUS(tm_model_new_from_json(&x, buf, strlen(buf), "heads.json"), TM_ERR_INVALID);
        if (!strstr(tm_last_error(), bad[i].want))
            fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, tm_last_error(), bad[i].want);
        CHECK(strstr(tm_last_error(), bad[i].want) != NULL);
        tm_model_free(x);
    }
}

/* Central differences of the total loss against the backward pass, on the
 * largest-gradient entries of each tensor. */
static void test_gradients(const char *fusion, const char *extra, const char *context)
{
    tm_model *m = make(fusion, extra, context);
    if (!m) return;
    tm_model_graph *g = NULL;
    CHECK_OK(tm_model_graph_new(&g, m, B, TM_MODEL_TRAIN));
    if (!g) {
        tm_model_free(m);
        return;
    }
    tm_model_inputs in = tm_model_graph_inputs(g);
    CHECK(in.caption && in.mlm_labels);
    fill(in, 3);
    CHECK_OK(tm_model_graph_forward(g));
    CHECK_OK(tm_model_graph_backward(g));
    tm_model_loss l = tm_model_graph_loss(g);
    CHECK(isfinite(l.classification) && isfinite(l.contrastive) && isfinite(l.caption) &&
          isfinite(l.masked));
    CHECK_NEAR(l.total, l.classification + 0.5 * l.contrastive + 2 * l.caption + 0.7 * l.masked,
               1e-5, 1e-5);
    size_t n;
    float *p = tm_model_params(m, &n);
    const float *gr = tm_model_grads(m, NULL);
    float *grad = malloc(n * sizeof *grad);
    memcpy(grad, gr, n * sizeof *grad);
    int checked = 0, bad = 0;
    for (int i = 0; i < tm_model_tensor_count(m); i++) {
        tm_model_tensor t;
        tm_model_tensor_at(m, i, &t);
        if (t.frozen) continue;
        /* the entry with the largest gradient */
        size_t best = t.offset;
        for (size_t k = t.offset; k < t.offset + t.numel; k++)
            if (fabsf(grad[k]) > fabsf(grad[best])) best = k;
        if (fabsf(grad[best]) < 1e-3f) continue;
        float keep = p[best], h = 1e-2f;
        p[best] = keep + h;
        tm_model_graph_forward(g);
        double up = tm_model_graph_loss(g).total;
        p[best] = keep - h;
        tm_model_graph_forward(g);
        double down = tm_model_graph_loss(g).total;
        p[best] = keep;
        double fd = (up - down) / (2 * h);
        checked++;
        if (!(fabs(fd - grad[best]) <= 2e-3 + 0.05 * fabs(fd))) {
            bad++;
            fprintf(stderr, "%s/%s: d loss / d %s = %g by backward, %g by differences\n", fusion,
                    context, t.name, (double)grad[best], fd);
        }
    }
    CHECK(checked > 30);
    CHECK(bad == 0);
    free(grad);

    /* loss weights: the caption loss's weight 0 removes its gradient */
    CHECK_OK(tm_model_graph_set_loss_weight(g, "caption", 0.0f));
    CHECK_OK(tm_model_graph_forward(g));
    CHECK_OK(tm_model_graph_backward(g));
    int k = tm_model_find_tensor(m, "caption.head.weight");
    tm_model_tensor t;
    tm_model_tensor_at(m, k, &t);
    float mx = 0;
    for (size_t j = t.offset; j < t.offset + t.numel; j++) mx = fmaxf(mx, fabsf(gr[j]));
    CHECK(mx == 0.0f);
    l = tm_model_graph_loss(g);
    CHECK_NEAR(l.total, l.classification + 0.5 * l.contrastive + 0.7 * l.masked, 1e-5, 1e-5);
    CHECK(isfinite(l.caption)); /* still reported */
    CHECK_STATUS(tm_model_graph_set_loss_weight(g, "style", 1.0f), TM_ERR_INVALID);
    CHECK_STATUS(tm_model_graph_set_loss_weight(g, "masked", -1.0f), TM_ERR_INVALID);
    /* no masked labels in the batch: that loss is absent, the rest finite */
    for (int j = 0; j < B * T; j++) in.mlm_labels[j] = -100;
    CHECK_OK(tm_model_graph_forward(g));
    l = tm_model_graph_loss(g);
    CHECK(isnan(l.masked) && isfinite(l.total));
    tm_model_graph_free(g);
    tm_model_free(m);
}

/* An example's outputs never depend on another example or on the data of
 * its own missing modalities. */
static void test_independence(const char *fusion, const char *extra)
{
    tm_model *m = make(fusion, extra, "fusion");
    if (!m) return;
    tm_model_graph *g = NULL;
    CHECK_OK(tm_model_graph_new(&g, m, B, TM_MODEL_TRAIN));
    if (!g) {
        tm_model_free(m);
        return;
    }
    tm_model_inputs in = tm_model_graph_inputs(g);
    fill(in, 5);
    CHECK_OK(tm_model_graph_forward(g));
    float base[B * 3], cap[B * (TC - 1) * 5];
    memcpy(base, tm_model_graph_logits(g), sizeof base);
    memcpy(cap, tm_model_graph_caption_logits(g), sizeof cap);
    test_fill_uniform(in.mel + 1 * MEL, MEL, 41, -4, 4);    /* example 1's missing audio */
    test_fill_uniform(in.image + 2 * IMG, IMG, 42, -4, 4);  /* example 2's missing image */
    test_fill_uniform(in.image + 0 * IMG, IMG, 43, -4, 4);  /* example 0's real image */
    CHECK_OK(tm_model_graph_forward(g));
    const float *now = tm_model_graph_logits(g), *cnow = tm_model_graph_caption_logits(g);
    CHECK(memcmp(base, now, 3 * 4) != 0);
    CHECK(!memcmp(base + 3, now + 3, (B - 1) * 3 * 4));
    int per = (TC - 1) * 5;
    CHECK(memcmp(cap, cnow, per * 4) != 0);
    CHECK(!memcmp(cap + per, cnow + per, (size_t)(B - 1) * per * 4));
    tm_model_graph_free(g);
    tm_model_free(m);
}

/* Attention maps: causal text, masked keys exactly 0, rows sum to 1. */
static void test_attention_maps(void)
{
    tm_model *m = make("early", ", \"layers\": 1", "fusion");
    if (!m) return;
    tm_model_graph *g = NULL;
    tm_model_graph_opts o = tm_model_graph_default_opts();
    o.attention_maps = 1;
    CHECK_OK(tm_model_graph_new_opts(&g, m, B, TM_MODEL_CLASSIFY, &o));
    if (!g) {
        tm_model_free(m);
        return;
    }
    tm_model_inputs in = tm_model_graph_inputs(g);
    fill(in, 7);
    CHECK_OK(tm_model_graph_forward(g));
    int64_t s[4];
    const float *p = tm_model_graph_attention(g, "text", 0, s);
    CHECK(p && s[0] == B && s[1] == 2 && s[2] == T && s[3] == T);
    int ok = 1;
    for (int b = 0; p && b < B; b++)
        for (int h = 0; h < 2; h++)
            for (int q = 0; q < T; q++) {
                const float *row = p + ((b * 2 + h) * T + q) * T;
                double sum = 0;
                int any = 0;
                for (int k = 0; k < T; k++) {
                    int masked = k > q || in.tokens[b * T + k] == 0;
                    if (masked && row[k] != 0.0f) ok = 0;
                    any |= !masked;
                    sum += row[k];
                }
                if (any && fabs(sum - 1) > 1e-5) ok = 0;
                if (!any && sum != 0) ok = 0;
            }
    CHECK(ok);
    /* early fusion's last block: the CLS query over [CLS, text, vision, audio] */
    p = tm_model_graph_attention(g, "fusion", 0, s);
    int64_t Tf = 1 + T + 5 + 6;
    CHECK(p && s[2] == 1 && s[3] == Tf);
    ok = 1;
    for (int b = 0; p && b < B; b++)
        for (int h = 0; h < 2; h++) {
            const float *row = p + (b * 2 + h) * Tf;
            for (int k = 0; k < Tf; k++) {
                int mod = k == 0 ? -1 : k <= T ? 0 : k <= T + 5 ? 1 : 2;
                int masked = mod >= 0 && (!in.present[b * 3 + mod] ||
                                          (mod == 0 && in.tokens[b * T + k - 1] == 0));
                if (masked && row[k] != 0.0f) ok = 0;
                if (!masked && !(row[k] > 0.0f)) ok = 0;
            }
        }
    CHECK(ok);
    CHECK(tm_model_graph_attention(g, "vision", 0, s) && s[2] == 5 && s[3] == 5);
    CHECK(tm_model_graph_attention(g, "fusion", 1, s) == NULL);
    CHECK(tm_model_graph_attention(g, "sonar", 0, s) == NULL);
    tm_model_graph_free(g);
    /* a graph without maps says so */
    CHECK_OK(tm_model_graph_new(&g, m, 1, TM_MODEL_CLASSIFY));
    CHECK(tm_model_graph_attention(g, "text", 0, s) == NULL);
    CHECK(strstr(tm_last_error(), "attention_maps") != NULL);
    tm_model_graph_free(g);
    tm_model_free(m);
}

/* Writes one example's inputs (example `ex` of fill(seed)) into row r. */
static void copy_example(tm_model_inputs dst, int r, uint64_t seed, int ex)
{
    static int32_t tok[B * T], cap[B * TC], mlm[B * T], lab[B];
    static float img[B * IMG], mel[B * MEL];
    static uint8_t pres[B * 3];
    tm_model_inputs src = {tok, img, mel, lab, pres, cap, mlm};
    fill(src, seed);
    memcpy(dst.tokens + r * T, tok + ex * T, T * 4);
    memcpy(dst.image + r * IMG, img + ex * IMG, IMG * 4);
    memcpy(dst.mel + r * MEL, mel + ex * MEL, MEL * 4);
    memcpy(dst.present + r * 3, pres + ex * 3, 3);
}

/* Beam search with a beam wider than every hypothesis is exhaustive: it
 * must find the best of all captions scored one by one. */
static void test_decoding(void)
{
    tm_model *m = make("late", "", "audio");
    if (!m) return;
    /* sharpen the decoder a little so scores differ clearly */
    int k = tm_model_find_tensor(m, "caption.head.weight");
    tm_model_tensor t;
    tm_model_tensor_at(m, k, &t);
    float *p = tm_model_params(m, NULL);
    for (size_t j = 0; j < t.numel; j++) p[t.offset + j] *= 8;

    /* every caption of at most 3 generated tokens from {2 (EOS), 3, 4} */
    int32_t all[40][TC];
    int n = 0;
    for (int len = 1; len <= 3; len++) {
        int combos = 1 << (len - 1);
        for (int c = 0; c < combos; c++) {
            all[n][0] = 1;
            for (int i = 0; i < len - 1; i++) all[n][1 + i] = 3 + ((c >> i) & 1);
            all[n][len] = 2;
            for (int i = len + 1; i < TC; i++) all[n][i] = 0;
            n++;
        }
    }
    for (int c = 0; c < 8; c++) { /* three tokens and no EOS */
        all[n][0] = 1;
        for (int i = 0; i < 3; i++) all[n][1 + i] = 3 + ((c >> i) & 1);
        n++;
    }
    CHECK(n == 15);
    tm_model_captioner *sc = NULL;
    CHECK_OK(tm_model_captioner_new(&sc, m, 1, tm_caption_default_params()));
    float score[40];
    for (int i = 0; sc && i < n; i++) {
        copy_example(tm_model_captioner_inputs(sc), 0, 9, 0);
        CHECK_OK(tm_model_captioner_score(sc, all[i], &score[i]));
    }
    for (int pen = 0; pen <= 1; pen++) {
        tm_caption_params cp = {27, 0, (float)pen};
        tm_model_captioner *bs = NULL;
        CHECK_OK(tm_model_captioner_new(&bs, m, 2, cp));
        if (!bs) continue;
        copy_example(tm_model_captioner_inputs(bs), 0, 9, 0);
        copy_example(tm_model_captioner_inputs(bs), 1, 9, 1); /* example 1 lacks audio */
        int32_t out[2 * 3], len[2];
        float got[2];
        CHECK_OK(tm_model_captioner_run(bs, out, len, got));
        int best = 0;
        double bestn = -INFINITY;
        for (int i = 0; i < n; i++) {
            int L = 0;
            while (L < 3 && all[i][1 + L] != 0) L++; /* generated tokens, EOS counted */
            double norm = score[i] / pow(L, pen);
            if (norm > bestn) bestn = norm, best = i;
        }
        int L = 0;
        while (L < 3 && all[best][1 + L] != 0 && all[best][1 + L] != 2) L++;
        CHECK(len[0] == L);
        CHECK(!memcmp(out, all[best] + 1, (size_t)L * 4));
        CHECK_NEAR(got[0], bestn, 1e-4, 1e-4);
        CHECK(len[1] == 0 && isinf(got[1]) && got[1] < 0);
        tm_model_captioner_free(bs);
    }
    /* greedy: its caption's score is what scoring that caption gives */
    tm_model_captioner *gr = NULL;
    tm_caption_params gp = {1, 0, 0.0f};
    CHECK_OK(tm_model_captioner_new(&gr, m, 1, gp));
    if (gr && sc) {
        copy_example(tm_model_captioner_inputs(gr), 0, 9, 0);
        int32_t out[3], len;
        float got;
        CHECK_OK(tm_model_captioner_run(gr, out, &len, &got));
        int32_t row[TC] = {1, 0, 0, 0};
        for (int i = 0; i < len; i++) row[1 + i] = out[i];
        if (len < 3) row[1 + len] = 2;
        float want;
        CHECK_OK(tm_model_captioner_score(sc, row, &want));
        CHECK_NEAR(got, want, 1e-4, 1e-4);
    }
    tm_model_captioner_free(gr);
    tm_model_captioner_free(sc);
    /* bad parameters */
    tm_model_captioner *x = NULL;
    tm_caption_params badp = {0, 0, 1.0f};
    CHECK_STATUS(tm_model_captioner_new(&x, m, 1, badp), TM_ERR_INVALID);
    badp.beam = 2;
    badp.max_tokens = 9;
    CHECK_STATUS(tm_model_captioner_new(&x, m, 1, badp), TM_ERR_INVALID);
    tm_model_free(m);
}

/* Drop-path: random in training graphs (each forward draws new masks),
 * the identity in inference graphs. */
static void test_drop_path(void)
{
    char buf[4096], dp[4200];
    snprintf(buf, sizeof buf, HEADS, "early", ", \"layers\": 2", "fusion");
    snprintf(dp, sizeof dp, "{\"drop_path\": 0.5, %s", buf + 1);
    tm_model *a = NULL, *b = NULL;
    CHECK_OK(tm_model_new_from_json(&a, buf, strlen(buf), "heads.json"));
    CHECK_OK(tm_model_new_from_json(&b, dp, strlen(dp), "heads-dp.json"));
    if (!a || !b) goto done;
    tm_model_init_weights(a, 4);
    tm_model_init_weights(b, 4);
    tm_model_graph *ga = NULL, *gb = NULL, *tb = NULL;
    CHECK_OK(tm_model_graph_new(&ga, a, B, TM_MODEL_CLASSIFY));
    CHECK_OK(tm_model_graph_new(&gb, b, B, TM_MODEL_CLASSIFY));
    CHECK_OK(tm_model_graph_new(&tb, b, B, TM_MODEL_TRAIN));
    if (ga && gb && tb) {
        fill(tm_model_graph_inputs(ga), 2);
        fill(tm_model_graph_inputs(gb), 2);
        fill(tm_model_graph_inputs(tb), 2);
        CHECK_OK(tm_model_graph_forward(ga));
        CHECK_OK(tm_model_graph_forward(gb));
        CHECK(!memcmp(tm_model_graph_logits(ga), tm_model_graph_logits(gb), B * 3 * 4));
        CHECK_OK(tm_model_graph_forward(tb));
        float l1 = tm_model_graph_loss(tb).total;
        CHECK_OK(tm_model_graph_forward(tb));
        float l2 = tm_model_graph_loss(tb).total;
        CHECK(isfinite(l1) && isfinite(l2) && l1 != l2);
        CHECK(memcmp(tm_model_graph_logits(tb), tm_model_graph_logits(gb), B * 3 * 4) != 0);
    }
    tm_model_graph_free(ga);
    tm_model_graph_free(gb);
    tm_model_graph_free(tb);
done:
    tm_model_free(a);
    tm_model_free(b);
}

/* Graph options: checkpointed blocks give the plain gradients; a
 * deterministic training graph has no random layers; label smoothing. */
static void test_options(void)
{
    char buf[4096], dp[4200];
    snprintf(buf, sizeof buf, HEADS, "early", ", \"layers\": 2", "fusion");
    snprintf(dp, sizeof dp, "{\"drop_path\": 0.3, \"dropout\": 0.1, %s", buf + 1);
    tm_model *m = NULL;
    CHECK_OK(tm_model_new_from_json(&m, dp, strlen(dp), "heads-dp.json"));
    if (!m) return;
    tm_model_init_weights(m, 8);
    size_t n;
    tm_model_params(m, &n);
    tm_model_graph_opts o = tm_model_graph_default_opts();
    o.deterministic = 1;
    tm_model_graph *a = NULL, *b = NULL;
    CHECK_OK(tm_model_graph_new_opts(&a, m, B, TM_MODEL_TRAIN, &o));
    o.checkpoint_blocks = 1;
    CHECK_OK(tm_model_graph_new_opts(&b, m, B, TM_MODEL_TRAIN, &o));
    float *ga = malloc(n * 4);
    if (a && b && ga) {
        fill(tm_model_graph_inputs(a), 6);
        fill(tm_model_graph_inputs(b), 6);
        CHECK_OK(tm_model_graph_forward(a));
        float l1 = tm_model_graph_loss(a).total;
        CHECK_OK(tm_model_graph_backward(a));
        memcpy(ga, tm_model_grads(m, NULL), n * 4);
        CHECK_OK(tm_model_graph_forward(a));
        CHECK(tm_model_graph_loss(a).total == l1); /* no random layers */
        CHECK_OK(tm_model_graph_forward(b));
        CHECK(tm_model_graph_loss(b).total == l1);
        CHECK_OK(tm_model_graph_backward(b));
        check_close("checkpointed gradients", tm_model_grads(m, NULL), ga, (int64_t)n, 1e-7, 1e-5);
        CHECK(tm_graph_arena_bytes(tm_model_graph_graph(b)) <
              tm_graph_arena_bytes(tm_model_graph_graph(a)));
    }
    free(ga);
    tm_model_graph_free(a);
    tm_model_graph_free(b);
    o = tm_model_graph_default_opts();
    o.label_smoothing = 1.5f;
    CHECK_STATUS(tm_model_graph_new_opts(&a, m, B, TM_MODEL_TRAIN, &o), TM_ERR_INVALID);
    tm_model_free(m);
}

/* A graph that leaves encoders out (opts.skip_encoders) computes the loss
 * and gradients of the full graph on the same batch with those modalities
 * missing, has no inputs for them, and refuses to skip every encoder. */
static void test_skip(const char *fusion, const char *extra, const char *context, unsigned skip)
{
    tm_model *m = make(fusion, extra, context);
    if (!m) return;
    size_t n;
    tm_model_params(m, &n);
    tm_model_graph_opts o = tm_model_graph_default_opts();
    tm_model_graph *full = NULL, *part = NULL;
    CHECK_OK(tm_model_graph_new_opts(&full, m, B, TM_MODEL_TRAIN, &o));
    o.skip_encoders = skip;
    CHECK_OK(tm_model_graph_new_opts(&part, m, B, TM_MODEL_TRAIN, &o));
    float *gf = malloc(n * sizeof *gf);
    int32_t tok[B * T];
    float img[B * IMG], mel[B * MEL];
    if (full && part && gf) {
        tm_model_inputs a = tm_model_graph_inputs(full), b = tm_model_graph_inputs(part);
        CHECK((b.tokens == NULL) == !!(skip & 1) && (b.image == NULL) == !!(skip & 2) &&
              (b.mel == NULL) == !!(skip & 4));
        fill(a, 9);
        for (int r = 0; r < B; r++)
            for (int i = 0; i < 3; i++)
                if (skip >> i & 1) a.present[r * 3 + i] = 0;
        /* the same batch; the skipped inputs go to scratch buffers */
        if (!b.tokens) b.tokens = tok;
        if (!b.image) b.image = img;
        if (!b.mel) b.mel = mel;
        fill(b, 9);
        CHECK_OK(tm_model_graph_forward(full));
        CHECK_OK(tm_model_graph_backward(full));
        memcpy(gf, tm_model_grads(m, NULL), n * sizeof *gf);
        CHECK_OK(tm_model_graph_forward(part));
        CHECK_OK(tm_model_graph_backward(part));
        tm_model_loss lf = tm_model_graph_loss(full), lp = tm_model_graph_loss(part);
        CHECK_NEAR(lp.total, lf.total, 1e-6, 1e-5);
        CHECK_NEAR(lp.classification, lf.classification, 1e-6, 1e-5);
        CHECK(isnan(lf.contrastive) == isnan(lp.contrastive));
        if (!isnan(lf.contrastive)) CHECK_NEAR(lp.contrastive, lf.contrastive, 1e-6, 1e-5);
        if (!isnan(lf.caption)) CHECK_NEAR(lp.caption, lf.caption, 1e-6, 1e-5);
        char what[96];
        snprintf(what, sizeof what, "skip 0x%x gradients (%s)", skip, fusion);
        check_close(what, tm_model_grads(m, NULL), gf, (int64_t)n, 1e-6, 1e-4);
        /* the present mask of a skipped modality is cleared */
        for (int i = 0; i < 3; i++)
            if (skip >> i & 1) CHECK(tm_model_graph_inputs(part).present[i] == 0);
    }
    free(gf);
    tm_model_graph_free(full);
    tm_model_graph_free(part);
    o.skip_encoders = 7;
    CHECK_STATUS(tm_model_graph_new_opts(&part, m, B, TM_MODEL_TRAIN, &o), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "leaves no encoder") != NULL);
    o.skip_encoders = 8;
    CHECK_STATUS(tm_model_graph_new_opts(&part, m, B, TM_MODEL_TRAIN, &o), TM_ERR_INVALID);
    tm_model_free(m);
}

/* skip_losses: the contrastive and caption losses left out give the loss
 * and gradients of the full graph with their weights 0; they read as
 * absent; only weight 0 is accepted for them; classification cannot be
 * left out. */
static void test_skip_losses(void)
{
    tm_model *m = make("early", ", \"layers\": 1", "audio");
    if (!m) return;
    size_t n;
    tm_model_params(m, &n);
    tm_model_graph_opts o = tm_model_graph_default_opts();
    tm_model_graph *full = NULL, *part = NULL;
    CHECK_OK(tm_model_graph_new_opts(&full, m, B, TM_MODEL_TRAIN, &o));
    o.skip_losses = 2 | 4;
    CHECK_OK(tm_model_graph_new_opts(&part, m, B, TM_MODEL_TRAIN, &o));
    float *gf = malloc(n * sizeof *gf);
    if (full && part && gf) {
        CHECK(tm_graph_arena_bytes(tm_model_graph_graph(part)) <
              tm_graph_arena_bytes(tm_model_graph_graph(full)));
        fill(tm_model_graph_inputs(full), 4);
        fill(tm_model_graph_inputs(part), 4);
        CHECK_OK(tm_model_graph_set_loss_weight(full, "contrastive", 0));
        CHECK_OK(tm_model_graph_set_loss_weight(full, "caption", 0));
        CHECK_OK(tm_model_graph_set_loss_weight(part, "caption", 0));
        CHECK_STATUS(tm_model_graph_set_loss_weight(part, "contrastive", 0.5f), TM_ERR_INVALID);
        CHECK(strstr(tm_last_error(), "without the 'contrastive' loss") != NULL);
        CHECK_OK(tm_model_graph_forward(full));
        CHECK_OK(tm_model_graph_backward(full));
        memcpy(gf, tm_model_grads(m, NULL), n * sizeof *gf);
        CHECK_OK(tm_model_graph_forward(part));
        CHECK_OK(tm_model_graph_backward(part));
        tm_model_loss lf = tm_model_graph_loss(full), lp = tm_model_graph_loss(part);
        CHECK_NEAR(lp.total, lf.total, 1e-6, 1e-5);
        CHECK_NEAR(lp.masked, lf.masked, 1e-6, 1e-5);
        CHECK(isnan(lp.contrastive) && isnan(lp.caption) && isfinite(lf.caption));
        check_close("skip_losses gradients", tm_model_grads(m, NULL), gf, (int64_t)n, 1e-6, 1e-4);
    }
    free(gf);
    tm_model_graph_free(full);
    tm_model_graph_free(part);
    o.skip_losses = 1;
    CHECK_STATUS(tm_model_graph_new_opts(&part, m, B, TM_MODEL_TRAIN, &o), TM_ERR_INVALID);
    tm_model_free(m);
}

int main(void)
{
    test_options();
    test_drop_path();
    test_config();
    test_gradients("early", ", \"layers\": 1", "fusion");
    test_gradients("bottleneck", ", \"layers\": 1, \"tokens\": 2", "fusion");
    test_gradients("cross", ", \"layers\": 1", "audio");
    test_gradients("late", "", "fusion");
    test_independence("bottleneck", ", \"layers\": 1, \"tokens\": 2");
    test_independence("early", ", \"layers\": 1");
    test_independence("cross", ", \"layers\": 1");
    test_attention_maps();
    test_decoding();
    test_skip("early", ", \"layers\": 1", "fusion", 5);   /* vision alone */
    test_skip("early", ", \"layers\": 1", "audio", 2);    /* text and audio */
    test_skip("late", "", "fusion", 3);                     /* audio alone */
    test_skip("cross", ", \"layers\": 1", "audio", 1);    /* vision and audio */
    test_skip("bottleneck", ", \"layers\": 1, \"tokens\": 2", "fusion", 4);
    test_skip_losses();
    return test_finish("model_heads");
}
