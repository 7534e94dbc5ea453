/*
 * BLEU (Papineni et al. 2002) as NLTK 3.8's corpus_bleu computes it, with
 * its smoothing methods 0-3 (Chen and Cherry 2014), and CIDEr-D (Vedantam
 * et al. 2015) as the COCO caption evaluation computes it.
 *
 * NLTK quirks kept on purpose, so that numbers compare: a hypothesis with
 * fewer than n words adds 1 to the n-gram denominator; method0 replaces a
 * zero precision by the smallest normal double (BLEU becomes ~1e-77, not
 * 0); the score is 0 whenever no unigram matches; method2 leaves the
 * unigram precision alone.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "eval_internal.h"

/* Token ids of every hypothesis and reference, in one buffer. */
typedef struct {
    tme_vocab *vocab;
    int32_t *ids;
    int64_t cap, len;
    int64_t *hyp_off;   /* (n + 1) into ids */
    int64_t *ref_start; /* (n + 1) into ref_off */
    int64_t *ref_off;   /* (total refs + 1) into ids */
} corpus;

static void corpus_free(corpus *c)
{
    tme_vocab_free(c->vocab);
    tm_free(c->ids);
    tm_free(c->hyp_off);
    tm_free(c->ref_start);
    tm_free(c->ref_off);
    memset(c, 0, sizeof *c);
}

/* Appends the tokens of text at the end of c->ids. */
static tm_status add_text(corpus *c, const char *text, const tm_text_norm *norm)
{
    int32_t *tmp = NULL;
    int64_t cap = 0, n = 0;
    tm_status st = tme_tokenize_ids(c->vocab, text, norm, &tmp, &cap, &n);
    if (!st && n) {
        if (c->len + n > c->cap) {
            int64_t nc = c->cap ? c->cap : 1024;
            while (nc < c->len + n) nc *= 2;
            int32_t *p = tm_alloc((size_t)nc * sizeof *p);
            if (!p) {
                st = tm_fail(TM_ERR_NOMEM, "out of memory for tokens");
            } else {
                if (c->len) memcpy(p, c->ids, (size_t)c->len * sizeof *p);
                tm_free(c->ids);
                c->ids = p;
                c->cap = nc;
            }
        }
        if (!st) {
            memcpy(c->ids + c->len, tmp, (size_t)n * sizeof *tmp);
            c->len += n;
        }
    }
    tm_free(tmp);
    return st;
}

static tm_status corpus_build(corpus *c, const char *fn, const tm_caption_sample *s, int64_t n,
                              const tm_text_norm *norm)
{
    memset(c, 0, sizeof *c);
    tm_status st = tme_check_samples(fn, s, n);
    if (st) return st;
    if (norm && (norm->punct < TM_PUNCT_REMOVE || norm->punct > TM_PUNCT_KEEP))
        return tm_fail(TM_ERR_INVALID, "%s: unknown punctuation mode %d", fn, (int)norm->punct);
    int64_t total_refs = 0;
    for (int64_t i = 0; i < n; i++) total_refs += s[i].n_references;
    c->vocab = tme_vocab_new();
    c->hyp_off = tm_alloc((size_t)(n + 1) * sizeof(int64_t));
    c->ref_start = tm_alloc((size_t)(n + 1) * sizeof(int64_t));
    c->ref_off = tm_alloc((size_t)(total_refs + 1) * sizeof(int64_t));
    if (!c->vocab || !c->hyp_off || !c->ref_start || !c->ref_off) {
        corpus_free(c);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    }
    int64_t r = 0;
    for (int64_t i = 0; i < n && !st; i++) {
        c->hyp_off[i] = c->len;
        st = add_text(c, s[i].hypothesis, norm);
        c->ref_start[i] = r;
        for (int j = 0; j < s[i].n_references && !st; j++) {
            c->ref_off[r++] = c->len;
            st = add_text(c, s[i].references[j], norm);
        }
    }
    if (st) {
        corpus_free(c);
        return st;
    }
    /* Layout: hypothesis 0, its references, hypothesis 1, ...; the
     * sentinels below close the last spans (see hyp_span, ref_span). */
    c->hyp_off[n] = c->len;
    c->ref_start[n] = r;
    c->ref_off[r] = c->len;
    return TM_OK;
}

/* [begin, end) of hypothesis i and of reference r */
static void hyp_span(const corpus *c, int64_t i, int64_t *b, int64_t *e)
{
    *b = c->hyp_off[i];
    *e = c->ref_off[c->ref_start[i]];
}

static void ref_span(const corpus *c, int64_t i, int64_t r, int64_t *b, int64_t *e)
{
    *b = c->ref_off[r];
    *e = r + 1 < c->ref_start[i + 1] ? c->ref_off[r + 1] : c->hyp_off[i + 1];
}

/* ----------------------------------------------------------------- BLEU */

tm_bleu_params tm_bleu_default_params(void)
{
    tm_bleu_params p;
    memset(&p, 0, sizeof p);
    p.max_n = 4;
    p.smoothing = TM_BLEU_SMOOTH_NONE;
    p.epsilon = 0.1;
    return p;
}

static tm_status check_bleu(const char *fn, const tm_bleu_params *p, double *w)
{
    if (p->max_n < 1 || p->max_n > TM_BLEU_MAX_N)
        return tm_fail(TM_ERR_INVALID, "%s: max_n = %d, must be 1..%d", fn, p->max_n,
                       TM_BLEU_MAX_N);
    if (p->smoothing < TM_BLEU_SMOOTH_NONE || p->smoothing > TM_BLEU_SMOOTH_NIST)
        return tm_fail(TM_ERR_INVALID, "%s: unknown smoothing %d", fn, (int)p->smoothing);
    if (p->smoothing == TM_BLEU_SMOOTH_EPSILON && !(p->epsilon > 0 && isfinite(p->epsilon)))
        return tm_fail(TM_ERR_INVALID, "%s: epsilon = %g, must be > 0", fn, p->epsilon);
    int any = 0;
    for (int k = 0; k < TM_BLEU_MAX_N; k++) {
        if (!isfinite(p->weights[k]) || p->weights[k] < 0)
            return tm_fail(TM_ERR_INVALID, "%s: weights[%d] = %g, must be finite and >= 0", fn, k,
                           p->weights[k]);
        if (p->weights[k] != 0 && k >= p->max_n)
            return tm_fail(TM_ERR_INVALID, "%s: weights[%d] is set but max_n is %d", fn, k,
                           p->max_n);
        any |= p->weights[k] != 0;
    }
    for (int k = 0; k < p->max_n; k++) w[k] = any ? p->weights[k] : 1.0 / p->max_n;
    return TM_OK;
}

/* Adds sample i's clipped matches and totals for n = 1..max_n, its length
 * and its closest reference length. */
static tm_status bleu_counts(const corpus *c, int64_t i, int max_n, tme_ng_map *m,
                             int64_t *matches, int64_t *totals, int64_t *hyp_len,
                             int64_t *ref_len)
{
    int64_t hb, he;
    hyp_span(c, i, &hb, &he);
    const int32_t *h = c->ids + hb;
    int64_t lh = he - hb;
    int64_t best = -1;
    for (int64_t r = c->ref_start[i]; r < c->ref_start[i + 1]; r++) {
        int64_t rb, re;
        ref_span(c, i, r, &rb, &re);
        int64_t lr = re - rb;
        int64_t d = lr > lh ? lr - lh : lh - lr, bd = best > lh ? best - lh : lh - best;
        if (best < 0 || d < bd || (d == bd && lr < best)) best = lr;
    }
    *hyp_len += lh;
    *ref_len += best;
    for (int n = 1; n <= max_n; n++) {
        tme_ng_clear(m);
        int64_t count = lh >= n ? lh - n + 1 : 0;
        for (int64_t p = 0; p < count; p++) {
            tme_ng_entry *e = tme_ng_get(m, h + p, n, 1);
            if (!e) return tm_fail(TM_ERR_NOMEM, "BLEU: out of memory");
            e->a++;
        }
        for (int64_t r = c->ref_start[i]; r < c->ref_start[i + 1] && count; r++) {
            int64_t rb, re;
            ref_span(c, i, r, &rb, &re);
            for (size_t k = 0; k < m->count; k++) m->e[k].c = 0;
            for (int64_t p = rb; p + n <= re; p++) {
                tme_ng_entry *e = tme_ng_get(m, c->ids + p, n, 0);
                if (e) e->c++;
            }
            for (size_t k = 0; k < m->count; k++)
                if (m->e[k].c > m->e[k].b) m->e[k].b = m->e[k].c;
        }
        int64_t num = 0;
        for (size_t k = 0; k < m->count; k++) num += m->e[k].a < m->e[k].b ? m->e[k].a : m->e[k].b;
        matches[n - 1] += num;
        totals[n - 1] += count > 1 ? count : 1;
    }
    return TM_OK;
}

static void bleu_finish(const tm_bleu_params *p, const double *w, tm_bleu_result *r)
{
    r->brevity_penalty = r->hyp_len > r->ref_len ? 1.0
                         : r->hyp_len == 0       ? 0.0
                                                 : exp(1.0 - (double)r->ref_len / (double)r->hyp_len);
    int zeros = 0;
    for (int k = 0; k < p->max_n; k++) {
        double m = (double)r->matches[k], t = (double)r->totals[k];
        double v = m / t;
        switch (p->smoothing) {
        case TM_BLEU_SMOOTH_NONE:
            if (m == 0) v = DBL_MIN;
            break;
        case TM_BLEU_SMOOTH_EPSILON:
            if (m == 0) v = p->epsilon / t;
            break;
        case TM_BLEU_SMOOTH_ADD1:
            if (k > 0) v = (m + 1) / (t + 1);
            break;
        case TM_BLEU_SMOOTH_NIST:
            if (m == 0) v = 1.0 / (ldexp(1.0, ++zeros) * t);
            break;
        }
        r->precisions[k] = v;
    }
    if (r->matches[0] == 0) {
        r->bleu = 0;
        return;
    }
    double s = 0;
    for (int k = 0; k < p->max_n; k++)
        if (r->precisions[k] > 0) s += w[k] * log(r->precisions[k]);
    r->bleu = r->brevity_penalty * exp(s);
}

tm_status tm_bleu(const tm_caption_sample *samples, int64_t n, const tm_bleu_params *params,
                  tm_bleu_result *out)
{
    static const char *fn = "tm_bleu";
    tm_bleu_params p = params ? *params : tm_bleu_default_params();
    double w[TM_BLEU_MAX_N];
    tm_status st = check_bleu(fn, &p, w);
    if (st) return st;
    if (!out) return tm_fail(TM_ERR_INVALID, "%s: out must not be NULL", fn);
    corpus c;
    if ((st = corpus_build(&c, fn, samples, n, &p.norm))) return st;
    tm_bleu_result r;
    memset(&r, 0, sizeof r);
    r.max_n = p.max_n;
    tme_ng_map m;
    tme_ng_init(&m);
    for (int64_t i = 0; i < n && !st; i++)
        st = bleu_counts(&c, i, p.max_n, &m, r.matches, r.totals, &r.hyp_len, &r.ref_len);
    tme_ng_free(&m);
    corpus_free(&c);
    if (st) return st;
    bleu_finish(&p, w, &r);
    *out = r;
    return TM_OK;
}

tm_status tm_bleu_sentences(const tm_caption_sample *samples, int64_t n,
                            const tm_bleu_params *params, double *scores)
{
    static const char *fn = "tm_bleu_sentences";
    tm_bleu_params p = params ? *params : tm_bleu_default_params();
    double w[TM_BLEU_MAX_N];
    tm_status st = check_bleu(fn, &p, w);
    if (st) return st;
    if (!scores) return tm_fail(TM_ERR_INVALID, "%s: scores must not be NULL", fn);
    corpus c;
    if ((st = corpus_build(&c, fn, samples, n, &p.norm))) return st;
    tme_ng_map m;
    tme_ng_init(&m);
    for (int64_t i = 0; i < n && !st; i++) {
        tm_bleu_result r;
        memset(&r, 0, sizeof r);
        r.max_n = p.max_n;
        st = bleu_counts(&c, i, p.max_n, &m, r.matches, r.totals, &r.hyp_len, &r.ref_len);
        if (!st) {
            bleu_finish(&p, w, &r);
            scores[i] = r.bleu;
        }
    }
    tme_ng_free(&m);
    corpus_free(&c);
    return st;
}

/* -------------------------------------------------------------- CIDEr-D */

tm_cider_params tm_cider_default_params(void)
{
    tm_cider_params p;
    memset(&p, 0, sizeof p);
    p.max_n = 4;
    p.sigma = 6.0;
    p.clip = 1;
    p.scale = 10.0;
    return p;
}

/* Fills m with the n-grams (orders 1..max_n) of ids[0..len) with a = count,
 * x = tf-idf weight, and norms[n-1] = |g_n|. */
static tm_status tfidf(const int32_t *ids, int64_t len, int max_n, tme_ng_map *df, double log_n,
                       tme_ng_map *m, double *norms)
{
    tme_ng_clear(m);
    for (int n = 1; n <= max_n; n++) {
        for (int64_t p = 0; p + n <= len; p++) {
            tme_ng_entry *e = tme_ng_get(m, ids + p, n, 1);
            if (!e) return tm_fail(TM_ERR_NOMEM, "CIDEr: out of memory");
            e->a++;
        }
        norms[n - 1] = 0;
    }
    for (size_t k = 0; k < m->count; k++) {
        tme_ng_entry *e = &m->e[k];
        tme_ng_entry *d = tme_ng_get(df, e->ids, e->n, 0);
        double dfv = d && d->a > 1 ? (double)d->a : 1.0;
        e->x = (double)e->a * (log_n - log(dfv));
        norms[e->n - 1] += e->x * e->x;
    }
    for (int n = 0; n < max_n; n++) norms[n] = sqrt(norms[n]);
    return TM_OK;
}

tm_status tm_cider(const tm_caption_sample *samples, int64_t n, const tm_cider_params *params,
                   double *mean, double *per_sample)
{
    static const char *fn = "tm_cider";
    tm_cider_params p = params ? *params : tm_cider_default_params();
    if (p.max_n < 1 || p.max_n > TME_MAX_N)
        return tm_fail(TM_ERR_INVALID, "%s: max_n = %d, must be 1..%d", fn, p.max_n, TME_MAX_N);
    if (!(p.sigma >= 0) || !isfinite(p.sigma) || !isfinite(p.scale))
        return tm_fail(TM_ERR_INVALID, "%s: sigma = %g and scale = %g must be finite, sigma >= 0",
                       fn, p.sigma, p.scale);
    if (!mean) return tm_fail(TM_ERR_INVALID, "%s: mean must not be NULL", fn);
    corpus c;
    tm_status st = corpus_build(&c, fn, samples, n, &p.norm);
    if (st) return st;
    tme_ng_map df, seen, hm, rm;
    tme_ng_init(&df);
    tme_ng_init(&seen);
    tme_ng_init(&hm);
    tme_ng_init(&rm);
    /* document frequency: samples whose references contain the n-gram */
    for (int64_t i = 0; i < n && !st; i++) {
        tme_ng_clear(&seen);
        for (int64_t r = c.ref_start[i]; r < c.ref_start[i + 1] && !st; r++) {
            int64_t rb, re;
            ref_span(&c, i, r, &rb, &re);
            for (int k = 1; k <= p.max_n && !st; k++)
                for (int64_t q = rb; q + k <= re; q++) {
                    tme_ng_entry *e = tme_ng_get(&seen, c.ids + q, k, 1);
                    if (!e) {
                        st = tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
                        break;
                    }
                }
        }
        for (size_t k = 0; k < seen.count && !st; k++) {
            tme_ng_entry *e = tme_ng_get(&df, seen.e[k].ids, seen.e[k].n, 1);
            if (!e) st = tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
            else e->a++;
        }
    }
    double log_n = log((double)n), sum = 0;
    double hn[TME_MAX_N], rn[TME_MAX_N];
    for (int64_t i = 0; i < n && !st; i++) {
        int64_t hb, he;
        hyp_span(&c, i, &hb, &he);
        if ((st = tfidf(c.ids + hb, he - hb, p.max_n, &df, log_n, &hm, hn))) break;
        double total = 0;
        int nref = 0;
        for (int64_t r = c.ref_start[i]; r < c.ref_start[i + 1]; r++, nref++) {
            int64_t rb, re;
            ref_span(&c, i, r, &rb, &re);
            if ((st = tfidf(c.ids + rb, re - rb, p.max_n, &df, log_n, &rm, rn))) break;
            double delta = (double)((he - hb) - (re - rb));
            double pen = p.sigma > 0 ? exp(-(delta * delta) / (2.0 * p.sigma * p.sigma)) : 1.0;
            double val[TME_MAX_N] = {0};
            for (size_t k = 0; k < hm.count; k++) {
                const tme_ng_entry *e = &hm.e[k];
                const tme_ng_entry *f = tme_ng_get(&rm, e->ids, e->n, 0);
                if (!f) continue;
                double g = p.clip && f->x < e->x ? f->x : e->x;
                val[e->n - 1] += g * f->x;
            }
            for (int k = 0; k < p.max_n; k++) {
                if (hn[k] != 0 && rn[k] != 0) val[k] /= hn[k] * rn[k];
                total += val[k] * pen;
            }
        }
        if (st) break;
        double score = p.scale * total / (double)p.max_n / (double)nref;
        if (per_sample) per_sample[i] = score;
        sum += score;
    }
    tme_ng_free(&df);
    tme_ng_free(&seen);
    tme_ng_free(&hm);
    tme_ng_free(&rm);
    corpus_free(&c);
    if (st) return st;
    *mean = sum / (double)n;
    return TM_OK;
}
