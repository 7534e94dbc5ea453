/*
 * Classification metrics: accuracy, top-k, per-class and averaged
 * precision / recall / F1 (scikit-learn's conventions), the confusion
 * matrix, expected calibration error and NLL.
 *
 * Each example's prediction, confidence, top-k hit and log-probability are
 * computed in parallel into per-example slots; everything else is a serial
 * pass in example order, so results do not depend on the thread count.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "eval_internal.h"

typedef struct {
    int32_t pred;
    int8_t in_top_k;
    int8_t bad; /* 1: non-finite score, 2: probability outside [0, 1] */
    int32_t bad_class;
    double conf; /* highest probability */
    double p_label;
} example_out;

typedef struct {
    const float *scores;
    int C;
    const int32_t *labels;
    const tm_classify_params *p;
    example_out *ex;
} ctx_t;

static void example_range(void *vctx, int64_t begin, int64_t end)
{
    const ctx_t *c = vctx;
    const int C = c->C;
    for (int64_t i = begin; i < end; i++) {
        const float *s = c->scores + i * C;
        example_out *e = &c->ex[i];
        memset(e, 0, sizeof *e);
        int32_t y = c->labels[i];
        if (y == c->p->ignore_index) continue;
        int best = 0;
        for (int j = 0; j < C; j++) {
            if (!isfinite(s[j])) {
                e->bad = 1;
                e->bad_class = j;
                break;
            }
            if (c->p->scores == TM_SCORES_PROBS && (s[j] < 0.0f || s[j] > 1.0f)) {
                e->bad = 2;
                e->bad_class = j;
                break;
            }
            if (s[j] > s[best]) best = j;
        }
        if (e->bad) continue;
        e->pred = best;
        if (y < 0 || y >= C) continue; /* reported by the caller */
        /* classes ranking before the label: higher score, or equal score
         * and a lower index */
        int before = 0;
        for (int j = 0; j < C; j++)
            if (s[j] > s[y] || (s[j] == s[y] && j < y)) before++;
        e->in_top_k = before < c->p->top_k;
        if (c->p->scores == TM_SCORES_LOGITS) {
            double mx = s[best], sum = 0;
            for (int j = 0; j < C; j++) sum += exp((double)s[j] - mx);
            e->conf = 1.0 / sum;
            e->p_label = exp((double)s[y] - mx) / sum;
        } else {
            e->conf = s[best];
            e->p_label = s[y];
        }
    }
}

tm_classify_params tm_classify_default_params(void)
{
    tm_classify_params p;
    memset(&p, 0, sizeof p);
    p.scores = TM_SCORES_LOGITS;
    p.top_k = 5;
    p.ece_bins = 15;
    p.ignore_index = -100;
    p.zero_division = 0.0;
    return p;
}

void tm_classify_result_free(tm_classify_result *r)
{
    if (!r) return;
    tm_free(r->confusion);
    tm_free(r->support);
    tm_free(r->predicted);
    tm_free(r->precision);
    tm_free(r->recall);
    tm_free(r->f1);
    tm_free(r->bin_count);
    tm_free(r->bin_confidence);
    tm_free(r->bin_accuracy);
    memset(r, 0, sizeof *r);
}

static tm_status check_params(const char *fn, const tm_classify_params *p, int64_t n, int C)
{
    if (n <= 0) return tm_fail(TM_ERR_INVALID, "%s: n = %lld examples, must be > 0", fn, (long long)n);
    if (C < 2 || C > (1 << 24))
        return tm_fail(TM_ERR_INVALID, "%s: n_classes = %d, must be 2..%d", fn, C, 1 << 24);
    if (p->scores != TM_SCORES_LOGITS && p->scores != TM_SCORES_PROBS)
        return tm_fail(TM_ERR_INVALID, "%s: unknown score kind %d", fn, (int)p->scores);
    if (p->top_k < 1) return tm_fail(TM_ERR_INVALID, "%s: top_k = %d, must be >= 1", fn, p->top_k);
    if (p->ece_bins < 1 || p->ece_bins > 100000)
        return tm_fail(TM_ERR_INVALID, "%s: ece_bins = %d, must be 1..100000", fn, p->ece_bins);
    if (p->zero_division != 0.0 && p->zero_division != 1.0)
        return tm_fail(TM_ERR_INVALID, "%s: zero_division = %g, must be 0 or 1", fn,
                       p->zero_division);
    size_t cc;
    if (!tm_mul_size((size_t)C, (size_t)C, &cc) || !tm_mul_size(cc, sizeof(int64_t), &cc))
        return tm_fail(TM_ERR_NOMEM, "%s: confusion matrix of %d classes too large", fn, C);
    return TM_OK;
}

static tm_status alloc_result(const char *fn, tm_classify_result *r, int C, int bins)
{
    memset(r, 0, sizeof *r);
    r->n_classes = C;
    r->confusion = tm_calloc((size_t)C * (size_t)C, sizeof(int64_t));
    r->support = tm_calloc((size_t)C, sizeof(int64_t));
    r->predicted = tm_calloc((size_t)C, sizeof(int64_t));
    r->precision = tm_calloc((size_t)C, sizeof(double));
    r->recall = tm_calloc((size_t)C, sizeof(double));
    r->f1 = tm_calloc((size_t)C, sizeof(double));
    int ok = r->confusion && r->support && r->predicted && r->precision && r->recall && r->f1;
    if (bins > 0) {
        r->ece_bins = bins;
        r->bin_count = tm_calloc((size_t)bins, sizeof(int64_t));
        r->bin_confidence = tm_calloc((size_t)bins, sizeof(double));
        r->bin_accuracy = tm_calloc((size_t)bins, sizeof(double));
        ok = ok && r->bin_count && r->bin_confidence && r->bin_accuracy;
    }
    if (!ok) {
        tm_classify_result_free(r);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    }
    return TM_OK;
}

/* Everything derived from the confusion matrix (already filled, with n). */
static void finish_from_confusion(tm_classify_result *r, double zero_division)
{
    const int C = r->n_classes;
    int64_t correct = 0;
    for (int t = 0; t < C; t++) {
        for (int q = 0; q < C; q++) {
            int64_t v = r->confusion[(size_t)t * C + q];
            r->support[t] += v;
            r->predicted[q] += v;
        }
        correct += r->confusion[(size_t)t * C + t];
    }
    r->accuracy = (double)correct / (double)r->n;
    double sp = 0, sr = 0, sf = 0, wp = 0, wr = 0, wf = 0;
    int present = 0;
    for (int k = 0; k < C; k++) {
        int64_t tp = r->confusion[(size_t)k * C + k];
        int64_t npred = r->predicted[k], ntrue = r->support[k];
        double prec = npred ? (double)tp / (double)npred : zero_division;
        double rec = ntrue ? (double)tp / (double)ntrue : zero_division;
        /* 2 tp / (2 tp + fp + fn): equal to 2 P R / (P + R) where both are
         * defined, and 0 for a class predicted but never true or the other
         * way round, whatever zero_division (scikit-learn does the same) */
        int64_t den = 2 * tp + (npred - tp) + (ntrue - tp);
        double f = den ? 2.0 * (double)tp / (double)den : zero_division;
        r->precision[k] = prec;
        r->recall[k] = rec;
        r->f1[k] = f;
        if (npred || ntrue) {
            present++;
            sp += prec;
            sr += rec;
            sf += f;
        }
        wp += prec * (double)ntrue;
        wr += rec * (double)ntrue;
        wf += f * (double)ntrue;
    }
    r->n_present = present;
    r->precision_macro = sp / present;
    r->recall_macro = sr / present;
    r->f1_macro = sf / present;
    r->precision_weighted = wp / (double)r->n;
    r->recall_weighted = wr / (double)r->n;
    r->f1_weighted = wf / (double)r->n;
}

tm_status tm_classify_eval(const float *scores, int64_t n, int n_classes, const int32_t *labels,
                           const tm_classify_params *params, tm_classify_result *out)
{
    static const char *fn = "tm_classify_eval";
    if (out) memset(out, 0, sizeof *out);
    tm_classify_params p = params ? *params : tm_classify_default_params();
    if (!scores || !labels || !out)
        return tm_fail(TM_ERR_INVALID, "%s: scores, labels and out must not be NULL", fn);
    tm_status st = check_params(fn, &p, n, n_classes);
    if (st) return st;
    size_t bytes;
    if (!tm_mul_size((size_t)n, sizeof(example_out), &bytes))
        return tm_fail(TM_ERR_NOMEM, "%s: %lld examples too many", fn, (long long)n);
    example_out *ex = tm_alloc(bytes);
    if (!ex) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    ctx_t c = {scores, n_classes, labels, &p, ex};
    tm_parallel_range(n, n * (int64_t)n_classes, example_range, &c);

    tm_classify_result r;
    if ((st = alloc_result(fn, &r, n_classes, p.ece_bins))) {
        tm_free(ex);
        return st;
    }
    r.top_k = p.top_k;
    const int C = n_classes;
    int64_t topk = 0;
    double nll = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t y = labels[i];
        if (y == p.ignore_index) {
            r.n_ignored++;
            continue;
        }
        if (y < 0 || y >= C) {
            st = tm_fail(TM_ERR_INVALID,
                         "%s: label %d of example %lld is outside 0..%d (and not the ignore "
                         "index %d)",
                         fn, (int)y, (long long)i, C - 1, (int)p.ignore_index);
            goto fail;
        }
        const example_out *e = &ex[i];
        if (e->bad == 1) {
            st = tm_fail(TM_ERR_INVALID, "%s: score of example %lld, class %d is %g; must be finite",
                         fn, (long long)i, (int)e->bad_class,
                         (double)scores[i * C + e->bad_class]);
            goto fail;
        }
        if (e->bad == 2) {
            st = tm_fail(TM_ERR_INVALID,
                         "%s: probability of example %lld, class %d is %g, outside [0, 1] "
                         "(pass TM_SCORES_LOGITS for unnormalised scores)",
                         fn, (long long)i, (int)e->bad_class,
                         (double)scores[i * C + e->bad_class]);
            goto fail;
        }
        r.n++;
        r.confusion[(size_t)y * C + e->pred]++;
        topk += e->in_top_k;
        nll += -log(e->p_label > 1e-15 ? e->p_label : 1e-15);
        /* bin b holds (b/B, (b+1)/B]; ceil(conf B) - 1, with 0 in bin 0 */
        int b = (int)ceil(e->conf * p.ece_bins) - 1;
        if (b < 0) b = 0;
        if (b >= p.ece_bins) b = p.ece_bins - 1;
        r.bin_count[b]++;
        r.bin_confidence[b] += e->conf;
        r.bin_accuracy[b] += e->pred == y ? 1.0 : 0.0;
    }
    if (r.n == 0) {
        st = tm_fail(TM_ERR_INVALID, "%s: all %lld labels are the ignore index %d; nothing to score",
                     fn, (long long)n, (int)p.ignore_index);
        goto fail;
    }
    r.top_k_accuracy = (double)topk / (double)r.n;
    r.nll = nll / (double)r.n;
    double ece = 0;
    for (int b = 0; b < p.ece_bins; b++) {
        if (!r.bin_count[b]) {
            r.bin_confidence[b] = NAN;
            r.bin_accuracy[b] = NAN;
            continue;
        }
        double cnt = (double)r.bin_count[b];
        r.bin_confidence[b] /= cnt;
        r.bin_accuracy[b] /= cnt;
        ece += cnt / (double)r.n * fabs(r.bin_accuracy[b] - r.bin_confidence[b]);
    }
    r.ece = ece;
    finish_from_confusion(&r, p.zero_division);
    tm_free(ex);
    *out = r;
    return TM_OK;
fail:
    tm_free(ex);
    tm_classify_result_free(&r);
    return st;
}

tm_status tm_classify_eval_predictions(const int32_t *predictions, const int32_t *labels,
                                       int64_t n, int n_classes,
                                       const tm_classify_params *params,
                                       tm_classify_result *out)
{
    static const char *fn = "tm_classify_eval_predictions";
    if (out) memset(out, 0, sizeof *out);
    tm_classify_params p = params ? *params : tm_classify_default_params();
    if (!predictions || !labels || !out)
        return tm_fail(TM_ERR_INVALID, "%s: predictions, labels and out must not be NULL", fn);
    tm_status st = check_params(fn, &p, n, n_classes);
    if (st) return st;
    tm_classify_result r;
    if ((st = alloc_result(fn, &r, n_classes, 0))) return st;
    const int C = n_classes;
    for (int64_t i = 0; i < n; i++) {
        int32_t y = labels[i], q = predictions[i];
        if (y == p.ignore_index) {
            r.n_ignored++;
            continue;
        }
        if (y < 0 || y >= C || q < 0 || q >= C) {
            tm_classify_result_free(&r);
            return tm_fail(TM_ERR_INVALID,
                           "%s: example %lld has label %d and prediction %d; both must be in "
                           "0..%d",
                           fn, (long long)i, (int)y, (int)q, C - 1);
        }
        r.n++;
        r.confusion[(size_t)y * C + q]++;
    }
    if (r.n == 0) {
        tm_classify_result_free(&r);
        return tm_fail(TM_ERR_INVALID, "%s: all %lld labels are the ignore index %d", fn,
                       (long long)n, (int)p.ignore_index);
    }
    r.top_k = p.top_k;
    r.top_k_accuracy = NAN;
    r.ece = NAN;
    r.nll = NAN;
    finish_from_confusion(&r, p.zero_division);
    *out = r;
    return TM_OK;
}
