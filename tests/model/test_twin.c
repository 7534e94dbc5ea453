/*
 * The model against its PyTorch twin (scripts/bench_small_twin.py).
 *
 * tests/data/model/tiny/ is a model folder written by the twin (config.json
 * and model.safetensors with random weights of tests/data/model/tiny.json,
 * a small model of bench-small's family: every layer kind, two heads, two
 * blocks per stack), and vectors_<case>.safetensors hold inputs, the
 * outputs and every parameter's gradient computed by PyTorch in float64.
 * Cases: "full" (every modality present) and "missing" (examples 1..3
 * each lack one modality).
 *
 * For each case this program loads the folder, runs a training graph
 * forward and backward, and compares: logits and embeddings within 1e-4
 * relative (abs floor 1e-5), the losses within 1e-5 relative, and each
 * parameter's gradient within 1e-3 relative with an abs floor of 1e-4 of
 * that tensor's largest gradient, plus 1e-8 (entries near zero carry only
 * rounding).
 * The classification and embedding graphs must give the same outputs as
 * the training graph, bit for bit. Everything runs at 1 thread, then at 2,
 * which must agree bit for bit.
 *
 * The same for small late-fusion (gated, sum, concat) and cross-attention
 * fusion models (tests/data/model/{late,late_sum,late_concat,cross}), and
 * for the model features that came after them:
 *   bottleneck/     bottleneck fusion, a CNN vision backbone (GroupNorm,
 *                   max-pool), AST-style audio patches with sin-cos 2-D
 *                   positions and a CLS token, classifier and contrastive
 *   early_caption/  a causal text encoder with rotary positions, early
 *                   fusion, a caption decoder over the fused tokens (rotary),
 *                   a masked-token head, loss weights 0.5 / 0.7 / 0.3
 *   asr/            late fusion and a caption decoder over the audio
 *                   encoder (speech recognition), learned positions
 * These run at batch 5-6: their "missing" case also has an example with no
 * modality at all, and a caption row of padding only. Their loss vector is
 * (total, classification, contrastive, caption, masked) (the older cases
 * stop after contrastive; NaN = no label for that part, in both). The
 * caption and masked-token logits are checked like the class logits, and
 * the captioner's summed log-probability of the given captions
 * (tm_model_captioner_score: its own context and decoder graphs) against
 * the twin's within 1e-4 relative (-inf where the context is missing);
 * greedy decoding (tm_model_captioner_run, beam 1) must give the twin's
 * ids and lengths (the caption head's EOS bias was nudged so they stop at
 * varied lengths) and its score within 1e-4 relative.
 *
 * TM_TWIN_DIR=path runs the same on another exported folder (for example
 * bench-small: scripts/bench_small_twin.py export configs/bench-small.json
 * /tmp/bs).
 */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/model.h"

static double worst_logit_rel, worst_grad_rel, worst_grad_abs_over_max, worst_loss_rel;
static double worst_score_rel;
static int greedy_checked, greedy_skipped, have_scores;

/* Max relative error over entries above the floor, for the report. */
static void track(const float *got, const float *want, int64_t n, double floor, double *worst)
{
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        double r = d / (fabs((double)want[i]) + floor);
        if (r > *worst) *worst = r;
    }
}

static const float *get_f32(tm_safetensors *st, const char *name, int64_t want_numel)
{
    tm_tensor t;
    if (tm_safetensors_get(st, name, &t) != TM_OK) {
        fprintf(stderr, "vectors: no tensor %s: %s\n", name, tm_last_error());
        test_checks++, test_failures++;
        return NULL;
    }
    if (t.dtype != TM_F32 || (want_numel >= 0 && tm_tensor_numel(&t) != want_numel)) {
        fprintf(stderr, "vectors: %s has the wrong dtype or size\n", name);
        test_checks++, test_failures++;
        return NULL;
    }
    return t.data;
}

typedef struct {
    float *vals;
    size_t n;
} snapshot;

static void snap_add(snapshot *s, const float *x, size_t n)
{
    float *p = realloc(s->vals, (s->n + n) * sizeof(float) + 1);
    if (!p) return;
    s->vals = p;
    memcpy(p + s->n, x, n * sizeof(float));
    s->n += n;
}

/* An output of the training graph against the twin's tensor `name`:
 * within 1e-4 relative with an abs floor of 1e-5, as the class logits. */
static void compare_out(const char *cas, const char *name, const float *got, tm_safetensors *st,
                        int64_t n, int check, snapshot *snap)
{
    char what[256];
    snprintf(what, sizeof what, "%s %s", cas, name);
    const float *want = get_f32(st, name, n);
    if (!got) {
        fprintf(stderr, "%s: the graph has no such output\n", what);
        test_checks++, test_failures++;
        return;
    }
    if (!want) return;
    if (check) check_close(what, got, want, n, 1e-5, 1e-4);
    track(got, want, n, 1e-5, &worst_logit_rel);
    snap_add(snap, got, (size_t)n);
}

/* tm_model_captioner_score (the captioner's own context and decoder
 * graphs) against the twin's summed log-probability of each caption:
 * within 1e-4 relative (abs floor 1e-4); -inf where the context is
 * missing. */
static void check_score(tm_model *m, tm_safetensors *st, int64_t B, int check, snapshot *snap);
static void check_greedy(tm_model *m, tm_safetensors *st, int64_t B, int check, snapshot *snap);

/* Fills the inputs of a graph from the vectors file. */
static int fill_inputs(tm_model_graph *mg, const tm_model *m, tm_safetensors *st, int64_t B)
{
    tm_model_info info = tm_model_get_info(m);
    tm_model_inputs in = tm_model_graph_inputs(mg);
    tm_tensor t;
    if (in.tokens) {
        if (tm_safetensors_get(st, "tokens", &t) || t.dtype != TM_I32) return 0;
        memcpy(in.tokens, t.data, (size_t)(B * info.text_tokens) * 4);
    }
    if (in.image) {
        const float *x = get_f32(st, "image", B * info.image_channels * info.image_h * info.image_w);
        if (!x) return 0;
        memcpy(in.image, x, (size_t)(B * info.image_channels * info.image_h * info.image_w) * 4);
    }
    if (in.mel) {
        const float *x = get_f32(st, "mel", B * info.n_mels * info.n_frames);
        if (!x) return 0;
        memcpy(in.mel, x, (size_t)(B * info.n_mels * info.n_frames) * 4);
    }
    if (in.labels) {
        if (tm_safetensors_get(st, "labels", &t) || t.dtype != TM_I32) return 0;
        memcpy(in.labels, t.data, (size_t)B * 4);
    }
    if (in.caption) {
        if (tm_safetensors_get(st, "caption", &t) || t.dtype != TM_I32 ||
            tm_tensor_numel(&t) != B * info.caption_tokens)
            return 0;
        memcpy(in.caption, t.data, (size_t)(B * info.caption_tokens) * 4);
    }
    if (in.mlm_labels) {
        if (tm_safetensors_get(st, "mlm_labels", &t) || t.dtype != TM_I32 ||
            tm_tensor_numel(&t) != B * info.text_tokens)
            return 0;
        memcpy(in.mlm_labels, t.data, (size_t)(B * info.text_tokens) * 4);
    }
    if (tm_safetensors_get(st, "present", &t) || t.dtype != TM_I32) return 0;
    const int32_t *p = t.data;
    for (int64_t i = 0; i < B * info.n_modalities; i++) in.present[i] = (uint8_t)(p[i] != 0);
    return 1;
}

static void run_case(const char *dir, const char *cas, int check, snapshot *snap)
{
    char path[4096], what[256];
    tm_model *m = NULL;
    tm_safetensors *st = NULL;
    tm_model_graph *mg = NULL, *mc = NULL, *me = NULL;
    snprintf(path, sizeof path, "%s/vectors_%s.safetensors", dir, cas);
    CHECK_OK(tm_model_load(&m, dir));
    CHECK_OK(tm_safetensors_open(&st, path));
    if (!m || !st) goto done;
    tm_tensor tt;
    CHECK_OK(tm_safetensors_get(st, "present", &tt));
    int64_t B = tt.shape[0];
    tm_model_info info = tm_model_get_info(m);

    CHECK_OK(tm_model_graph_new(&mg, m, B, TM_MODEL_TRAIN));
    if (!mg || !fill_inputs(mg, m, st, B)) {
        CHECK(0);
        goto done;
    }
    CHECK_OK(tm_model_graph_forward(mg));
    CHECK_OK(tm_model_graph_backward(mg));

    /* outputs */
    if (info.num_classes) {
        const float *want = get_f32(st, "logits", B * info.num_classes);
        const float *got = tm_model_graph_logits(mg);
        snprintf(what, sizeof what, "%s logits", cas);
        if (want && got) {
            if (check) check_close(what, got, want, B * info.num_classes, 1e-5, 1e-4);
            track(got, want, B * info.num_classes, 1e-5, &worst_logit_rel);
            snap_add(snap, got, (size_t)(B * info.num_classes));
        }
    }
    for (int i = 0; info.embed_dim && i < info.n_modalities; i++) {
        snprintf(what, sizeof what, "emb.%s", info.modality[i]);
        const float *want = get_f32(st, what, B * info.embed_dim);
        const float *got = tm_model_graph_embeddings(mg, i);
        if (want && got) {
            if (check) check_close(what, got, want, B * info.embed_dim, 1e-5, 1e-4);
            track(got, want, B * info.embed_dim, 1e-5, &worst_logit_rel);
            snap_add(snap, got, (size_t)(B * info.embed_dim));
        }
    }
    if (info.caption_tokens) {
        int64_t n = B * (info.caption_tokens - 1) * info.caption_vocab;
        compare_out(cas, "caption_logits", tm_model_graph_caption_logits(mg), st, n, check, snap);
    }
    if (info.mask_id >= 0) {
        int64_t n = B * info.text_tokens * info.vocab_size;
        compare_out(cas, "mlm_logits", tm_model_graph_mlm_logits(mg), st, n, check, snap);
    }
    /* the losses: (total, classification, contrastive[, caption, masked]);
     * NaN = the batch has no label for that part, and so must trimodal's */
    tm_tensor lt;
    int64_t n_loss = tm_safetensors_get(st, "loss", &lt) == TM_OK ? tm_tensor_numel(&lt) : 0;
    CHECK(n_loss == 3 || n_loss == 5);
    const float *wl = n_loss == 3 || n_loss == 5 ? get_f32(st, "loss", n_loss) : NULL;
    tm_model_loss l = tm_model_graph_loss(mg);
    if (wl && check) {
        const float got[5] = {l.total, l.classification, l.contrastive, l.caption, l.masked};
        static const char *const part[5] = {"total", "classification", "contrastive", "caption",
                                            "masked"};
        for (int k = 0; k < n_loss; k++) {
            test_checks++;
            int ok;
            if (isnan(wl[k])) ok = k > 0 && isnan(got[k]);
            else ok = fabs((double)got[k] - wl[k]) <= 1e-5 * fabs((double)wl[k]) + 1e-7;
            if (!ok) {
                test_failures++;
                fprintf(stderr, "%s loss.%s = %.9g, want %.9g (1e-5 relative)\n", cas, part[k],
                        (double)got[k], (double)wl[k]);
            }
            if (!isnan(wl[k]) && fabs((double)wl[k]) > 0)
                worst_loss_rel = fmax(worst_loss_rel, fabs((double)got[k] - wl[k]) / fabs((double)wl[k]));
        }
    }
    snap_add(snap, &l.total, 1);

    /* every trainable parameter's gradient */
    const float *grads = tm_model_grads(m, NULL);
    int n_t = tm_model_tensor_count(m), n_checked = 0;
    for (int k = 0; k < n_t; k++) {
        tm_model_tensor e;
        tm_model_tensor_at(m, k, &e);
        if (e.frozen) continue;
        snprintf(what, sizeof what, "grad.%s", e.name);
        const float *want = get_f32(st, what, (int64_t)e.numel);
        if (!want) continue;
        double mx = 0;
        for (size_t i = 0; i < e.numel; i++) mx = fmax(mx, fabs(want[i]));
        /* 1e-8: a gradient that is exactly 0 in theory (the gate bias, under a
         * shift-invariant softmax) is rounding noise here */
        double floor = 1e-4 * mx + 1e-8;
        snprintf(what, sizeof what, "%s grad.%s", cas, e.name);
        if (check) check_close(what, grads + e.offset, want, (int64_t)e.numel, floor, 1e-3);
        if (mx > 1e-10) track(grads + e.offset, want, (int64_t)e.numel, floor, &worst_grad_rel);
        for (size_t i = 0; mx > 1e-10 && i < e.numel; i++) {
            double d = fabs((double)grads[e.offset + i] - want[i]) / mx;
            if (d > worst_grad_abs_over_max) worst_grad_abs_over_max = d;
        }
        snap_add(snap, grads + e.offset, e.numel);
        n_checked++;
    }
    CHECK(n_checked > 0);

    /* the inference graphs agree with the training graph bit for bit */
    if (info.num_classes) {
        CHECK_OK(tm_model_graph_new(&mc, m, B, TM_MODEL_CLASSIFY));
        if (mc && fill_inputs(mc, m, st, B) && tm_model_graph_forward(mc) == TM_OK)
            CHECK(!memcmp(tm_model_graph_logits(mc), tm_model_graph_logits(mg),
                          (size_t)(B * info.num_classes) * 4));
        else
            CHECK(0);
    }
    if (info.embed_dim) {
        CHECK_OK(tm_model_graph_new(&me, m, B, TM_MODEL_EMBED));
        if (me && fill_inputs(me, m, st, B) && tm_model_graph_forward(me) == TM_OK) {
            for (int i = 0; i < info.n_modalities; i++)
                CHECK(!memcmp(tm_model_graph_embeddings(me, i), tm_model_graph_embeddings(mg, i),
                              (size_t)(B * info.embed_dim) * 4));
        } else {
            CHECK(0);
        }
    }
    if (info.caption_tokens) {
        check_score(m, st, B, check, snap);
        check_greedy(m, st, B, check, snap);
    }
done:
    tm_model_graph_free(mg);
    tm_model_graph_free(mc);
    tm_model_graph_free(me);
    tm_safetensors_close(st);
    tm_model_free(m);
}

/* A captioner's inputs (tokens, image, mel, present) from the vectors. */
static int fill_captioner(tm_model_captioner *cap, const tm_model *m, tm_safetensors *st, int64_t B)
{
    tm_model_info info = tm_model_get_info(m);
    tm_model_inputs in = tm_model_captioner_inputs(cap);
    tm_tensor tt, pt;
    const float *x;
    if (in.tokens) {
        if (tm_safetensors_get(st, "tokens", &tt) || tt.dtype != TM_I32) return 0;
        memcpy(in.tokens, tt.data, (size_t)(B * info.text_tokens) * 4);
    }
    if (in.image) {
        if (!(x = get_f32(st, "image", B * info.image_channels * info.image_h * info.image_w)))
            return 0;
        memcpy(in.image, x, (size_t)(B * info.image_channels * info.image_h * info.image_w) * 4);
    }
    if (in.mel) {
        if (!(x = get_f32(st, "mel", B * info.n_mels * info.n_frames))) return 0;
        memcpy(in.mel, x, (size_t)(B * info.n_mels * info.n_frames) * 4);
    }
    if (tm_safetensors_get(st, "present", &pt) || pt.dtype != TM_I32) return 0;
    const int32_t *p = pt.data;
    for (int64_t i = 0; i < B * info.n_modalities; i++) in.present[i] = (uint8_t)(p[i] != 0);
    return 1;
}

/* Greedy decoding (tm_model_captioner_run, beam 1) against the twin's:
 * the same ids and lengths, the score within 1e-4 relative; an example
 * whose path passed a near tie (two candidates within 2e-4 in
 * log-probability, ~20x trimodal's rounding here) is skipped. */
static void check_greedy(tm_model *m, tm_safetensors *st, int64_t B, int check, snapshot *snap)
{
    tm_model_info info = tm_model_get_info(m);
    int64_t G = info.caption_tokens - 1;
    tm_model_captioner *cap = NULL;
    tm_tensor it, lt;
    const float *want_score = get_f32(st, "caption_greedy_score", B);
    const float *margin = get_f32(st, "caption_greedy_margin", B);
    CHECK_OK(tm_model_captioner_new(&cap, m, B, tm_caption_default_params()));
    if (!cap || !want_score || !margin || tm_safetensors_get(st, "caption_greedy", &it) ||
        tm_safetensors_get(st, "caption_greedy_len", &lt) || tm_tensor_numel(&it) != B * G ||
        !fill_captioner(cap, m, st, B)) {
        CHECK(0);
        tm_model_captioner_free(cap);
        return;
    }
    const int32_t *want_ids = it.data, *want_len = lt.data;
    int32_t *ids = calloc((size_t)(B * G), sizeof *ids), *len = calloc((size_t)B, sizeof *len);
    float *score = calloc((size_t)B, sizeof *score);
    if (ids && len && score && tm_model_captioner_run(cap, ids, len, score) == TM_OK) {
        for (int64_t b = 0; check && b < B; b++) {
            if (margin[b] < 2e-4f) {
                greedy_skipped++;
                continue;
            }
            greedy_checked++;
            test_checks++;
            int ok = len[b] == want_len[b] && !memcmp(ids + b * G, want_ids + b * G, (size_t)G * 4);
            if (isinf(want_score[b])) ok = ok && isinf(score[b]) && score[b] < 0;
            else ok = ok && fabs((double)score[b] - want_score[b]) <= 1e-4 * fabs((double)want_score[b]);
            if (!ok) {
                test_failures++;
                fprintf(stderr, "greedy caption of example %lld: %d tokens, score %.9g; want %d "
                                "tokens, score %.9g\n",
                        (long long)b, (int)len[b], (double)score[b], (int)want_len[b],
                        (double)want_score[b]);
            }
        }
        snap_add(snap, score, (size_t)B);
    } else {
        CHECK(0);
        fprintf(stderr, "captioner_run: %s\n", tm_last_error());
    }
    free(ids);
    free(len);
    free(score);
    tm_model_captioner_free(cap);
}

static void check_score(tm_model *m, tm_safetensors *st, int64_t B, int check, snapshot *snap)
{
    tm_model_captioner *cap = NULL;
    tm_tensor ct;
    const float *want = get_f32(st, "caption_logprob", B);
    CHECK_OK(tm_model_captioner_new(&cap, m, B, tm_caption_default_params()));
    if (!cap || !want || tm_safetensors_get(st, "caption", &ct) || ct.dtype != TM_I32 ||
        !fill_captioner(cap, m, st, B)) {
        CHECK(0);
        tm_model_captioner_free(cap);
        return;
    }
    float got[64];
    CHECK(B <= 64);
    if (B <= 64 && tm_model_captioner_score(cap, ct.data, got) == TM_OK) {
        for (int64_t b = 0; check && b < B; b++) {
            test_checks++;
            have_scores = 1;
            int ok = isinf(want[b]) ? isinf(got[b]) && got[b] < 0
                                    : fabs((double)got[b] - want[b]) <= 1e-4 * fabs((double)want[b]) + 1e-4;
            if (!ok) {
                test_failures++;
                fprintf(stderr, "captioner score of example %lld = %.9g, want %.9g\n",
                        (long long)b, (double)got[b], (double)want[b]);
            }
            if (!isinf(want[b]) && want[b] != 0)
                worst_score_rel = fmax(worst_score_rel, fabs((double)got[b] - want[b]) / fabs((double)want[b]));
        }
        snap_add(snap, got, (size_t)B);
    } else {
        CHECK(0);
        fprintf(stderr, "captioner_score: %s\n", tm_last_error());
    }
    tm_model_captioner_free(cap);
}

static void run_dir(const char *dir)
{
    const char *cases[] = {"full", "missing"};
    worst_logit_rel = worst_grad_rel = worst_grad_abs_over_max = worst_loss_rel = 0;
    worst_score_rel = 0;
    greedy_checked = greedy_skipped = have_scores = 0;
    for (int c = 0; c < 2; c++) {
        snapshot one = {0}, two = {0};
        char probe[4200];
        snprintf(probe, sizeof probe, "%s/vectors_%s.safetensors", dir, cases[c]);
        FILE *f = fopen(probe, "rb");
        if (!f) {
            if (c == 0) CHECK(!"no vectors_full.safetensors");
            continue;
        }
        fclose(f);
        CHECK_OK(tm_set_num_threads(1));
        run_case(dir, cases[c], 1, &one);
        CHECK_OK(tm_set_num_threads(2));
        run_case(dir, cases[c], 0, &two);
        CHECK(one.n == two.n && one.n > 0);
        if (one.n == two.n) CHECK(!memcmp(one.vals, two.vals, one.n * sizeof(float)));
        free(one.vals);
        free(two.vals);
    }
    printf("twin %s: max rel error of logits/embeddings %.3g, of losses %.3g, of gradients "
           "%.3g (abs error / tensor max %.3g)",
           dir, worst_logit_rel, worst_loss_rel, worst_grad_rel, worst_grad_abs_over_max);
    if (have_scores)
        printf(", of caption scores %.3g; greedy captions: %d matched, %d near ties skipped",
               worst_score_rel, greedy_checked, greedy_skipped);
    printf("\n");
}

int main(void)
{
    const char *env = getenv("TM_TWIN_DIR");
    if (env && *env) {
        run_dir(env);
    } else {
        /* early fusion (bench-small's family), late fusion (gated with a
         * hidden layer, mean, concat; sin-cos 2-D positions, attention
         * and masked-mean pooling), cross-attention fusion; bottleneck
         * fusion with CNN and AST-patch encoders; caption decoders and a
         * masked-token head */
        const char *dirs[] = {"model/tiny",       "model/late",          "model/late_sum",
                              "model/late_concat", "model/cross",         "model/bottleneck",
                              "model/early_caption", "model/asr"};
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s", test_data_path(dirs[i]));
            run_dir(dir);
        }
    }
    return test_finish("model_twin");
}
