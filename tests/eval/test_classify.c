/* Classification metrics against scikit-learn (accuracy, precision /
 * recall / F1 macro, weighted and per class with zero_division 0 and 1,
 * confusion matrix) and numpy (top-k with the documented tie rule, ECE
 * bins, NLL) from scripts/gen_eval_vectors.py; the predictions-only entry
 * point; errors; allocation failures. */
#include "eval_test.h"

#define TOL 1e-12

static void check_result(const char *name, const tm_classify_result *r, const cJSON *e, int C,
                         int with_scores)
{
    char what[160];
    CHECK(r->n == (int64_t)jnum(e, "n"));
    CHECK(r->n_ignored == (int64_t)jnum(e, "n_ignored"));
    CHECK(r->n_present == (int)jnum(e, "n_present"));
    double got[7] = {r->accuracy, r->precision_macro, r->recall_macro, r->f1_macro,
                     r->precision_weighted, r->recall_weighted, r->f1_weighted};
    double want[7] = {jnum(e, "accuracy"), jnum(e, "precision_macro"), jnum(e, "recall_macro"),
                      jnum(e, "f1_macro"), jnum(e, "precision_weighted"),
                      jnum(e, "recall_weighted"), jnum(e, "f1_weighted")};
    snprintf(what, sizeof what, "%s accuracy/P/R/F1 macro/weighted", name);
    check_doubles(what, got, want, 7, TOL, TOL);
    const char *keys[3] = {"precision", "recall", "f1"};
    const double *arrs[3] = {r->precision, r->recall, r->f1};
    for (int k = 0; k < 3; k++) {
        double *w = jdoubles(jget(e, keys[k]), NULL);
        snprintf(what, sizeof what, "%s per-class %s", name, keys[k]);
        check_doubles(what, arrs[k], w, C, TOL, TOL);
        free(w);
    }
    int64_t *sup = jint64s(jget(e, "support"), NULL);
    int64_t *cm = jint64s(jget(e, "confusion"), NULL);
    CHECK(!memcmp(sup, r->support, C * sizeof *sup));
    CHECK(!memcmp(cm, r->confusion, (size_t)C * C * sizeof *cm));
    free(sup);
    free(cm);
    if (!with_scores) {
        CHECK(isnan(r->top_k_accuracy) && isnan(r->ece) && isnan(r->nll));
        CHECK(r->bin_count == NULL);
        return;
    }
    double got3[3] = {r->top_k_accuracy, r->ece, r->nll};
    double want3[3] = {jnum(e, "top_k_accuracy"), jnum(e, "ece"), jnum(e, "nll")};
    snprintf(what, sizeof what, "%s top-k/ECE/NLL", name);
    check_doubles(what, got3, want3, 3, 1e-12, 1e-9);
    int nb;
    int64_t *bc = jint64s(jget(e, "bin_count"), &nb);
    CHECK(nb == r->ece_bins);
    CHECK(!memcmp(bc, r->bin_count, nb * sizeof *bc));
    double *bconf = jdoubles(jget(e, "bin_confidence"), NULL);
    double *bacc = jdoubles(jget(e, "bin_accuracy"), NULL);
    snprintf(what, sizeof what, "%s bin confidence", name);
    check_doubles(what, r->bin_confidence, bconf, nb, 1e-12, 1e-9);
    snprintf(what, sizeof what, "%s bin accuracy", name);
    check_doubles(what, r->bin_accuracy, bacc, nb, TOL, TOL);
    free(bc);
    free(bconf);
    free(bacc);
}

static void check_case(const cJSON *c)
{
    const char *name = jstr(c, "name");
    int n = (int)jnum(c, "n"), C = (int)jnum(c, "C"), ns;
    float *scores = jfloats(jget(c, "scores"), &ns);
    int32_t *labels = jint32s(jget(c, "labels"), NULL);
    CHECK(ns == n * C);
    tm_classify_params p = tm_classify_default_params();
    p.scores = !strcmp(jstr(c, "kind"), "probs") ? TM_SCORES_PROBS : TM_SCORES_LOGITS;
    p.top_k = (int)jnum(c, "top_k");
    p.ece_bins = (int)jnum(c, "bins");
    p.zero_division = jnum(c, "zero_division");
    tm_classify_result r;
    CHECK_OK(tm_classify_eval(scores, n, C, labels, &p, &r));
    check_result(name, &r, jget(c, "expect"), C, 1);
    tm_classify_result_free(&r);
    CHECK(r.confusion == NULL && r.n == 0);

    /* the same from the predictions alone (argmax, first index on ties) */
    int32_t *pred = malloc(n * sizeof *pred);
    for (int i = 0; i < n; i++) {
        int b = 0;
        for (int k = 1; k < C; k++)
            if (scores[i * C + k] > scores[i * C + b]) b = k;
        pred[i] = b;
    }
    CHECK_OK(tm_classify_eval_predictions(pred, labels, n, C, &p, &r));
    check_result(name, &r, jget(c, "expect"), C, 0);
    tm_classify_result_free(&r);
    free(pred);
    free(scores);
    free(labels);
}

static void test_vectors(void)
{
    cJSON *j = load_json("eval/classify.json");
    CHECK(j != NULL);
    if (!j) return;
    int cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, jget(j, "cases"))
    {
        check_case(c);
        cases++;
    }
    CHECK(cases >= 6);
    cJSON_Delete(j);
}

static void test_by_hand(void)
{
    /* 3 classes; example 2 ties classes 0 and 2 (argmax: 0) */
    float s[4 * 3] = {2, 1, 0, /**/ 0, 3, 1, /**/ 1, 0, 1, /**/ 0, 0, 5};
    int32_t y[4] = {0, 1, 2, -100};
    tm_classify_params p = tm_classify_default_params();
    p.top_k = 1;
    tm_classify_result r;
    CHECK_OK(tm_classify_eval(s, 4, 3, y, &p, &r));
    CHECK(r.n == 3 && r.n_ignored == 1);
    CHECK_NEAR(r.accuracy, 2.0 / 3, 1e-15, 0);
    CHECK_NEAR(r.top_k_accuracy, 2.0 / 3, 1e-15, 0); /* top-1 == accuracy, ties included */
    CHECK(r.confusion[2 * 3 + 0] == 1);
    CHECK_NEAR(r.recall[2], 0, 0, 0);
    CHECK_NEAR(r.precision[0], 0.5, 0, 0);
    tm_classify_result_free(&r);
    p.top_k = 2; /* label 2 of example 2: class 0 ranks before it, so it is 2nd */
    CHECK_OK(tm_classify_eval(s, 4, 3, y, &p, &r));
    CHECK_NEAR(r.top_k_accuracy, 1, 0, 0);
    tm_classify_result_free(&r);
    tm_classify_result_free(NULL);
}

static void test_errors(void)
{
    float s[2 * 3] = {0.2f, 0.3f, 0.5f, 0.1f, 0.1f, 0.8f};
    int32_t y[2] = {2, 0};
    tm_classify_result r;
    tm_classify_params p = tm_classify_default_params();
    CHECK_STATUS(tm_classify_eval(s, 0, 3, y, &p, &r), TM_ERR_INVALID);
    CHECK(r.confusion == NULL);
    CHECK_STATUS(tm_classify_eval(s, 2, 1, y, &p, &r), TM_ERR_INVALID);
    CHECK_STATUS(tm_classify_eval(NULL, 2, 3, y, &p, &r), TM_ERR_INVALID);
    y[1] = 3;
    CHECK_STATUS(tm_classify_eval(s, 2, 3, y, &p, &r), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "label 3 of example 1") != NULL);
    y[1] = -100;
    y[0] = -100;
    CHECK_STATUS(tm_classify_eval(s, 2, 3, y, &p, &r), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "ignore index") != NULL);
    y[0] = 2;
    s[1] = NAN;
    CHECK_STATUS(tm_classify_eval(s, 2, 3, y, &p, &r), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "example 0, class 1") != NULL);
    s[1] = 0.3f;
    p.scores = TM_SCORES_PROBS;
    s[5] = 1.5f;
    y[1] = 0;
    CHECK_STATUS(tm_classify_eval(s, 2, 3, y, &p, &r), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "outside [0, 1]") != NULL);
    s[5] = 0.8f;
    CHECK_OK(tm_classify_eval(s, 2, 3, y, &p, &r));
    tm_classify_result_free(&r);
    p.zero_division = 0.5;
    CHECK_STATUS(tm_classify_eval(s, 2, 3, y, &p, &r), TM_ERR_INVALID);
    p = tm_classify_default_params();
    p.top_k = 0;
    CHECK_STATUS(tm_classify_eval(s, 2, 3, y, &p, &r), TM_ERR_INVALID);
    p = tm_classify_default_params();
    p.ece_bins = 0;
    CHECK_STATUS(tm_classify_eval(s, 2, 3, y, &p, &r), TM_ERR_INVALID);
    int32_t pred[2] = {0, 7};
    CHECK_STATUS(tm_classify_eval_predictions(pred, y, 2, 3, NULL, &r), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "prediction 7") != NULL);
}

static void test_nomem(void)
{
    float s[3 * 2] = {1, 0, 0, 1, 1, 0};
    int32_t y[3] = {0, 1, 1};
    int failures = 0;
    for (long n = 1; n <= 12; n++) {
        tm_classify_result r;
        tm_alloc_fail_after(n);
        tm_status st = tm_classify_eval(s, 3, 2, y, NULL, &r);
        tm_alloc_fail_after(0);
        if (st == TM_ERR_NOMEM) {
            failures++;
            CHECK(r.confusion == NULL);
        } else {
            CHECK_OK(st);
            tm_classify_result_free(&r);
        }
    }
    CHECK(failures >= 9);
}

int main(void)
{
    test_vectors();
    test_by_hand();
    test_errors();
    test_nomem();
    return test_finish("test_classify");
}
