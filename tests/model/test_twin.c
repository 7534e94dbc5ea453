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
 * relative (abs floor 1e-5), the losses within 1e-4 relative, and each
 * parameter's gradient within 1e-3 relative with an abs floor of 1e-4 of
 * that tensor's largest gradient, plus 1e-8 (entries near zero carry only
 * rounding).
 * The classification and embedding graphs must give the same outputs as
 * the training graph, bit for bit. Everything runs at 1 thread, then at 2,
 * which must agree bit for bit.
 *
 * The same for small late-fusion (gated, sum, concat) and cross-attention
 * fusion models (tests/data/model/{late,late_sum,late_concat,cross}).
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

static double worst_logit_rel, worst_grad_rel, worst_grad_abs_over_max;

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
    const float *wl = get_f32(st, "loss", 3);
    tm_model_loss l = tm_model_graph_loss(mg);
    if (wl && check) {
        CHECK_NEAR(l.total, wl[0], 1e-6, 1e-4);
        if (!isnan(wl[1])) CHECK_NEAR(l.classification, wl[1], 1e-6, 1e-4);
        if (!isnan(wl[2])) CHECK_NEAR(l.contrastive, wl[2], 1e-6, 1e-4);
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
done:
    tm_model_graph_free(mg);
    tm_model_graph_free(mc);
    tm_model_graph_free(me);
    tm_safetensors_close(st);
    tm_model_free(m);
}

static void run_dir(const char *dir)
{
    const char *cases[] = {"full", "missing"};
    worst_logit_rel = worst_grad_rel = worst_grad_abs_over_max = 0;
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
    printf("twin %s: max rel error of logits/embeddings %.3g, of gradients %.3g "
           "(abs error / tensor max %.3g)\n",
           dir, worst_logit_rel, worst_grad_rel, worst_grad_abs_over_max);
}

int main(void)
{
    const char *env = getenv("TM_TWIN_DIR");
    if (env && *env) {
        run_dir(env);
    } else {
        /* early fusion (bench-small's family), late fusion (gated with a
         * hidden layer, mean, concat; sin-cos 2-D positions, attention
         * and masked-mean pooling) and cross-attention fusion */
        const char *dirs[] = {"model/tiny", "model/late", "model/late_sum", "model/late_concat",
                              "model/cross"};
        for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s", test_data_path(dirs[i]));
            run_dir(dir);
        }
    }
    return test_finish("model_twin");
}
