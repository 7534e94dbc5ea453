/* Magnitude pruning (src/model/prune.c) checked by brute force on the small
 * model of tests/data/serve: every linear weight loses exactly
 * floor(S * n) entries and each zeroed |w| is at most every kept |w|; ties
 * go by position; other tensors are untouched; per-head pruning zeroes the
 * head of lowest norm (recomputed here in double) in each attention, and
 * that head then contributes nothing to the outputs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/model.h"

static char model_dir[1100];

static int ends_with(const char *s, const char *x)
{
    size_t n = strlen(s), k = strlen(x);
    return n >= k && !strcmp(s + n - k, x);
}

static int is_linear(const tm_model_tensor *t)
{
    return !t->frozen && t->ndim == 2 && ends_with(t->name, ".weight");
}

static float *snapshot(tm_model *m, size_t *n)
{
    float *p = tm_model_params(m, n);
    float *c = malloc(*n * sizeof *c);
    memcpy(c, p, *n * sizeof *c);
    return c;
}

static void test_unstructured(void)
{
    tm_model *m = NULL;
    CHECK_OK(tm_model_load(&m, model_dir));
    if (!m) return;
    size_t np;
    float *before = snapshot(m, &np);
    const double S = 0.3;
    tm_prune_params p = tm_prune_default_params();
    CHECK(p.sparsity == 0.5 && p.mode == TM_PRUNE_UNSTRUCTURED);
    p.sparsity = S;
    tm_prune_report r;
    CHECK_OK(tm_model_prune(m, &p, &r));
    const float *after = tm_model_params(m, NULL);
    int64_t tensors = 0, total = 0, zeros = 0, bad_count = 0, bad_order = 0, bad_other = 0;
    for (int i = 0; i < tm_model_tensor_count(m); i++) {
        tm_model_tensor t;
        CHECK_OK(tm_model_tensor_at(m, i, &t));
        const float *a = before + t.offset, *b = after + t.offset;
        if (!is_linear(&t)) {
            bad_other += memcmp(a, b, t.numel * sizeof(float)) != 0;
            continue;
        }
        tensors++;
        total += (int64_t)t.numel;
        size_t k = (size_t)floor(S * (double)t.numel), cut = 0, z = 0;
        float max_cut = 0, min_kept = INFINITY;
        for (size_t j = 0; j < t.numel; j++) {
            z += b[j] == 0.0f;
            if (b[j] != a[j]) {
                cut++;
                bad_other += b[j] != 0.0f; /* a changed entry must be zero */
                max_cut = fabsf(a[j]) > max_cut ? fabsf(a[j]) : max_cut;
            } else if (a[j] != 0.0f) {
                min_kept = fabsf(a[j]) < min_kept ? fabsf(a[j]) : min_kept;
            }
        }
        zeros += (int64_t)z;
        bad_count += cut != k; /* fresh weights hold no exact zeros */
        bad_order += cut && max_cut > min_kept;
    }
    CHECK(tensors > 10);
    CHECK(bad_count == 0);
    CHECK(bad_order == 0);
    CHECK(bad_other == 0);
    CHECK(r.tensors == tensors && r.weights_total == total && r.weights_zero == zeros);
    CHECK_NEAR((double)r.weights_zero / (double)r.weights_total, S, 0.01, 0);
    CHECK(r.heads_pruned == 0 && r.attentions == 0);

    /* ties: equal magnitudes go by position */
    int h = tm_model_find_tensor(m, "fusion.head.weight");
    CHECK(h >= 0);
    tm_model_tensor t;
    CHECK_OK(tm_model_tensor_at(m, h, &t));
    float *w = tm_model_params(m, NULL) + t.offset;
    for (size_t j = 0; j < t.numel; j++)
        w[j] = (j % 2) ? -1.0f : 1.0f; /* all |w| = 1 */
    w[5] = 0.5f;
    p.sparsity = 0.5;
    CHECK_OK(tm_model_prune(m, &p, NULL));
    size_t k = t.numel / 2;
    int ok = w[5] == 0.0f;
    /* w[5] and then the first k - 1 others, in order */
    size_t zeroed = 0;
    for (size_t j = 0; j < t.numel; j++) {
        int want_zero = j == 5 || j < (k > 5 ? k : k - 1);
        ok &= (w[j] == 0.0f) == want_zero;
        zeroed += w[j] == 0.0f;
    }
    CHECK(ok && zeroed == k);

    /* sparsity 0 changes nothing */
    float *again = snapshot(m, &np);
    p.sparsity = 0;
    CHECK_OK(tm_model_prune(m, &p, NULL));
    CHECK(memcmp(again, tm_model_params(m, NULL), np * sizeof(float)) == 0);
    free(again);

    /* bad parameters */
    p.sparsity = 1.0;
    CHECK_STATUS(tm_model_prune(m, &p, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "[0, 1)") != NULL);
    p.sparsity = -0.1;
    CHECK_STATUS(tm_model_prune(m, &p, NULL), TM_ERR_INVALID);
    p.sparsity = NAN;
    CHECK_STATUS(tm_model_prune(m, &p, NULL), TM_ERR_INVALID);
    p.sparsity = 0.5;
    p.mode = (tm_prune_mode)7;
    CHECK_STATUS(tm_model_prune(m, &p, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_model_prune(NULL, NULL, NULL), TM_ERR_INVALID);
    free(before);
    tm_model_free(m);
}

/* Class logits of fixed inputs (every modality present). */
static void forward(tm_model *m, float *logits, int64_t C)
{
    tm_model_graph *g = NULL;
    CHECK_OK(tm_model_graph_new(&g, m, 2, TM_MODEL_CLASSIFY));
    if (!g) return;
    tm_model_info in = tm_model_get_info(m);
    tm_model_inputs x = tm_model_graph_inputs(g);
    for (int64_t i = 0; i < 2 * in.text_tokens; i++)
        x.tokens[i] = (int32_t)(3 + (i * 7) % (in.vocab_size - 3));
    test_fill_uniform(x.image, 2 * in.image_channels * in.image_h * in.image_w, 11, -1, 1);
    test_fill_uniform(x.mel, 2 * in.n_mels * in.n_frames, 12, -2, 2);
    CHECK_OK(tm_model_graph_forward(g));
    memcpy(logits, tm_model_graph_logits(g), (size_t)(2 * C) * sizeof(float));
    tm_model_graph_free(g);
}

static void test_heads(void)
{
    tm_model *m = NULL;
    CHECK_OK(tm_model_load(&m, model_dir));
    if (!m) return;
    tm_model_info info = tm_model_get_info(m);
    const int64_t D = info.dim, H = 2, dh = D / H, C = info.num_classes;
    size_t np;
    float *before = snapshot(m, &np);
    float l0[64], l1[64], l2[64];
    forward(m, l0, C);
    tm_prune_params p = {.sparsity = 0.5, .mode = TM_PRUNE_HEADS};
    tm_prune_report r;
    CHECK_OK(tm_model_prune(m, &p, &r));
    float *after = tm_model_params(m, NULL);
    int attn = 0, bad = 0;
    for (int i = 0; i < tm_model_tensor_count(m); i++) {
        tm_model_tensor q, o, qb;
        CHECK_OK(tm_model_tensor_at(m, i, &q));
        if (!ends_with(q.name, "attn.qkv.weight")) continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s.out.weight", (int)(strlen(q.name) - 11), q.name);
        CHECK_OK(tm_model_tensor_at(m, tm_model_find_tensor(m, name), &o));
        snprintf(name, sizeof name, "%.*s.qkv.bias", (int)(strlen(q.name) - 11), q.name);
        CHECK_OK(tm_model_tensor_at(m, tm_model_find_tensor(m, name), &qb));
        attn++;
        double norm[2] = {0, 0};
        for (int64_t h = 0; h < H; h++) {
            for (int64_t r3 = 0; r3 < 3 * D; r3++) {
                if ((r3 % D) / dh != h) continue;
                for (int64_t c = 0; c < D; c++)
                    norm[h] += pow(before[q.offset + (size_t)(r3 * D + c)], 2);
                norm[h] += pow(before[qb.offset + (size_t)r3], 2);
            }
            for (int64_t r2 = 0; r2 < D; r2++)
                for (int64_t c = h * dh; c < (h + 1) * dh; c++)
                    norm[h] += pow(before[o.offset + (size_t)(r2 * D + c)], 2);
        }
        int64_t gone = norm[1] < norm[0] ? 1 : 0;
        for (int64_t r3 = 0; r3 < 3 * D; r3++) {
            int in_gone = (r3 % D) / dh == gone;
            for (int64_t c = 0; c < D; c++) {
                size_t j = q.offset + (size_t)(r3 * D + c);
                bad += in_gone ? after[j] != 0.0f : after[j] != before[j];
            }
            size_t j = qb.offset + (size_t)r3;
            bad += in_gone ? after[j] != 0.0f : after[j] != before[j];
        }
        for (int64_t r2 = 0; r2 < D; r2++)
            for (int64_t c = 0; c < D; c++) {
                size_t j = o.offset + (size_t)(r2 * D + c);
                bad += c / dh == gone ? after[j] != 0.0f : after[j] != before[j];
            }
        /* give the pruned head's queries and keys random values again: its
         * values and output columns are zero, so nothing may change */
        for (int64_t r3 = 0; r3 < 2 * D; r3++)
            if ((r3 % D) / dh == gone)
                test_fill_uniform(after + q.offset + (size_t)(r3 * D), D, 100 + (uint64_t)r3,
                                  -1, 1);
    }
    CHECK(attn >= 4);
    CHECK(bad == 0);
    CHECK(r.attentions == attn && r.heads_total == 2 * attn && r.heads_pruned == attn);
    CHECK(r.weights_zero > 0 && r.weights_zero < r.weights_total);
    forward(m, l2, C);
    /* pruning changed the outputs; the pruned heads' q and k do not matter */
    double diff = 0;
    for (int64_t i = 0; i < 2 * C; i++)
        diff += fabs(l0[i] - l2[i]);
    CHECK(diff > 1e-4);
    memcpy(l1, l2, sizeof l1);
    tm_model_free(m);
    /* the same pruning from the file again, without the random q and k */
    CHECK_OK(tm_model_load(&m, model_dir));
    CHECK_OK(tm_model_prune(m, &p, NULL));
    forward(m, l2, C);
    check_close("pruned heads contribute nothing", l1, l2, 2 * C, 1e-5, 1e-4);
    /* sparsity 0.9 of 2 heads: at most all but one */
    p.sparsity = 0.9;
    CHECK_OK(tm_model_prune(m, &p, &r));
    CHECK(r.heads_pruned == r.attentions);
    free(before);
    tm_model_free(m);
}

int main(void)
{
    const char *src = getenv("TM_SOURCE_DIR");
    snprintf(model_dir, sizeof model_dir, "%s/tests/data/serve/model", src && *src ? src : ".");
    test_unstructured();
    test_heads();
    return test_finish("model_prune");
}
