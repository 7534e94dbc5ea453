/* Caption decoding: greedy and beam search over the caption head, with a
 * length penalty, on two graphs of the model (the context of the inputs at
 * batch B, the decoder at batch B * beam). The decoder graph runs on the
 * whole caption length at every step: causal attention keeps positions
 * <= t blind to what follows, so the unused tail is harmless. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

struct tm_model_captioner {
    tm_model *m;
    tm_caption_params p;
    int64_t B, K, Tc, V, Tm, C;
    tm_model_graph *ctx_g, *dec_g;
    /* beam state, per example: K rows of ids, scores, alive flags */
    int32_t *ids;  /* (B, K, Tc) */
    double *score; /* (B, K) */
    int *alive;    /* (B, K) */
};

typedef struct {
    double score; /* summed log-probability */
    double norm;  /* score / len^penalty */
    int from;     /* beam it extends */
    int32_t tok;
} cand;

tm_caption_params tm_caption_default_params(void)
{
    tm_caption_params p = {1, 0, 1.0f};
    return p;
}

void tm_model_captioner_free(tm_model_captioner *c)
{
    if (!c) return;
    tm_model_graph_free(c->ctx_g);
    tm_model_graph_free(c->dec_g);
    free(c->ids);
    free(c->score);
    free(c->alive);
    free(c);
}

tm_status tm_model_captioner_new(tm_model_captioner **out, tm_model *m, int64_t batch,
                                 tm_caption_params p)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "captioner_new: NULL out");
    *out = NULL;
    if (!m) return tm_fail(TM_ERR_INVALID, "captioner_new: NULL model");
    const model_cfg *cfg = &m->cfg;
    if (!cfg->caption)
        return tm_fail(TM_ERR_INVALID, "captioner_new: the model has no caption head (add a "
                                       "\"caption\" section to its config)");
    if (p.beam < 1 || p.beam > 64)
        return tm_fail(TM_ERR_INVALID, "captioner_new: beam %d outside 1..64", p.beam);
    if (p.max_tokens < 0 || p.max_tokens > cfg->caption_tokens - 1)
        return tm_fail(TM_ERR_INVALID, "captioner_new: max_tokens %d outside 0..%lld (the "
                                       "config's caption max_tokens - 1)",
                       p.max_tokens, (long long)(cfg->caption_tokens - 1));
    if (!(p.length_penalty >= 0.0f) || isinf(p.length_penalty))
        return tm_fail(TM_ERR_INVALID, "captioner_new: length_penalty must be finite and >= 0");
    if (batch < 1 || batch > (1 << 16))
        return tm_fail(TM_ERR_INVALID, "captioner_new: batch %lld outside 1..65536",
                       (long long)batch);
    tm_model_captioner *c = calloc(1, sizeof *c);
    if (!c) return tm_fail(TM_ERR_NOMEM, "captioner_new: out of memory");
    c->m = m;
    c->p = p;
    if (!c->p.max_tokens) c->p.max_tokens = (int)(cfg->caption_tokens - 1);
    c->B = batch;
    c->K = p.beam;
    c->Tc = cfg->caption_tokens;
    c->V = cfg->caption_vocab;
    c->C = cfg->dim;
    tm_status s = tm_model_graph_new_internal(&c->ctx_g, m, batch, TM_MODEL_MODE_CONTEXT, NULL);
    if (!s) s = tm_model_graph_new_internal(&c->dec_g, m, batch * c->K, TM_MODEL_MODE_DECODE, NULL);
    if (s) {
        tm_model_captioner_free(c);
        return s;
    }
    c->Tm = tm_model_graph_caption_io(c->ctx_g).ctx_tokens;
    c->ids = malloc((size_t)(batch * c->K * c->Tc) * sizeof *c->ids);
    c->score = malloc((size_t)(batch * c->K) * sizeof *c->score);
    c->alive = malloc((size_t)(batch * c->K) * sizeof *c->alive);
    if (!c->ids || !c->score || !c->alive) {
        tm_model_captioner_free(c);
        return tm_fail(TM_ERR_NOMEM, "captioner_new: out of memory");
    }
    *out = c;
    return TM_OK;
}

tm_model_inputs tm_model_captioner_inputs(tm_model_captioner *c)
{
    tm_model_inputs in;
    if (!c) {
        memset(&in, 0, sizeof in);
        return in;
    }
    return tm_model_graph_inputs(c->ctx_g);
}

/* Runs the context graph and copies each example's context to its K rows
 * of the decoder graph. */
static tm_status run_context(tm_model_captioner *c)
{
    tm_status s = tm_model_graph_forward(c->ctx_g);
    if (s) return s;
    tm_model_caption_io src = tm_model_graph_caption_io(c->ctx_g);
    tm_model_caption_io dst = tm_model_graph_caption_io(c->dec_g);
    size_t nc = (size_t)(c->Tm * c->C), nb = (size_t)c->Tm;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t k = 0; k < c->K; k++) {
            int64_t r = b * c->K + k;
            memcpy(dst.ctx + (size_t)r * nc, src.ctx + (size_t)b * nc, nc * sizeof(float));
            memcpy(dst.ctx_bias + (size_t)r * nb, src.ctx_bias + (size_t)b * nb, nb * sizeof(float));
        }
    return TM_OK;
}

/* log-softmax of one row of V logits into out (double). */
static void log_softmax_row(const float *x, int64_t V, double *out)
{
    double mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
    for (int64_t v = 0; v < V; v++) sum += exp((double)x[v] - mx);
    double lse = mx + log(sum);
    for (int64_t v = 0; v < V; v++) out[v] = (double)x[v] - lse;
}

/* An example with no context (its modality missing) decodes nothing. */
static int has_context(const tm_model_captioner *c, int64_t b)
{
    const model_cfg *cfg = &c->m->cfg;
    const uint8_t *pres = tm_model_graph_inputs(c->ctx_g).present;
    if (cfg->caption_context >= 0) return pres[b * cfg->n_enc + cfg->caption_context] != 0;
    for (int j = 0; j < cfg->n_enc; j++)
        if (pres[b * cfg->n_enc + j]) return 1;
    return 0;
}

static int cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    if (x->from != y->from) return x->from - y->from;
    return x->tok - y->tok;
}

tm_status tm_model_captioner_run(tm_model_captioner *c, int32_t *out, int32_t *lengths,
                                 float *scores)
{
    if (!c || !out || !lengths) return tm_fail(TM_ERR_INVALID, "captioner_run: NULL argument");
    const model_cfg *cfg = &c->m->cfg;
    int64_t B = c->B, K = c->K, Tc = c->Tc, V = c->V;
    int maxg = c->p.max_tokens;
    double alpha = c->p.length_penalty;
    tm_status s = run_context(c);
    if (s) return s;
    tm_model_caption_io dec = tm_model_graph_caption_io(c->dec_g);

    /* finished hypotheses per example: K at most */
    int32_t *fin_ids = malloc((size_t)(B * K * Tc) * sizeof *fin_ids);
    double *fin_norm = malloc((size_t)(B * K) * sizeof *fin_norm);
    int *fin_len = malloc((size_t)(B * K) * sizeof *fin_len), *n_fin = calloc((size_t)B, sizeof *n_fin);
    double *lp = malloc((size_t)V * sizeof *lp);
    cand *cands = malloc((size_t)(K * V) * sizeof *cands);
    int32_t *next = malloc((size_t)(K * Tc) * sizeof *next);
    if (!fin_ids || !fin_norm || !fin_len || !n_fin || !lp || !cands || !next) {
        s = tm_fail(TM_ERR_NOMEM, "captioner_run: out of memory");
        goto done;
    }
    for (int64_t r = 0; r < B * K; r++) {
        for (int64_t t = 0; t < Tc; t++) c->ids[r * Tc + t] = cfg->caption_pad;
        c->ids[r * Tc] = cfg->caption_bos;
        c->score[r] = r % K ? -INFINITY : 0.0; /* one live beam to start: no duplicates */
        c->alive[r] = r % K == 0 && has_context(c, r / K);
    }
    for (int t = 0; t < maxg; t++) {
        int any = 0;
        for (int64_t r = 0; r < B * K; r++) any |= c->alive[r];
        if (!any) break;
        memcpy(dec.ids, c->ids, (size_t)(B * K * Tc) * sizeof *dec.ids);
        if ((s = tm_model_graph_forward(c->dec_g))) goto done;
        for (int64_t b = 0; b < B; b++) {
            int n = 0;
            for (int64_t k = 0; k < K; k++) {
                int64_t r = b * K + k;
                if (!c->alive[r]) continue;
                log_softmax_row(dec.logits + ((size_t)r * (size_t)Tc + (size_t)t) * (size_t)V, V, lp);
                for (int64_t v = 0; v < V; v++) {
                    /* never generate padding or a second BOS */
                    if (v == cfg->caption_pad || v == cfg->caption_bos) continue;
                    cands[n].score = c->score[r] + lp[v];
                    cands[n].from = (int)k;
                    cands[n].tok = (int32_t)v;
                    n++;
                }
            }
            if (!n) continue;
            qsort(cands, (size_t)n, sizeof *cands, cand_desc);
            int kept = 0;
            for (int i = 0; i < n && kept < K && n_fin[b] < K; i++) {
                const int32_t *src = c->ids + (b * K + cands[i].from) * Tc;
                if (cands[i].tok == cfg->caption_eos) {
                    int64_t f = b * K + n_fin[b]++;
                    memcpy(fin_ids + f * Tc, src, (size_t)Tc * sizeof *src);
                    fin_ids[f * Tc + t + 1] = cands[i].tok;
                    fin_len[f] = t + 1; /* EOS counts */
                    fin_norm[f] = cands[i].score / pow((double)(t + 1), alpha);
                    continue;
                }
                memcpy(next + kept * Tc, src, (size_t)Tc * sizeof *src);
                next[kept * Tc + t + 1] = cands[i].tok;
                c->score[b * K + kept] = cands[i].score;
                kept++;
            }
            if (n_fin[b] >= K) kept = 0; /* enough finished: this example is done */
            memcpy(c->ids + b * K * Tc, next, (size_t)(kept * Tc) * sizeof *next);
            for (int64_t k = 0; k < K; k++) c->alive[b * K + k] = k < kept;
        }
    }
    for (int64_t b = 0; b < B; b++) {
        /* unfinished beams compete with the finished hypotheses */
        double best = -INFINITY;
        const int32_t *bid = NULL;
        int blen = 0, gen = 0;
        for (int f = 0; f < n_fin[b]; f++)
            if (fin_norm[b * K + f] > best) {
                best = fin_norm[b * K + f];
                bid = fin_ids + (b * K + f) * Tc;
                blen = fin_len[b * K + f];
                gen = blen - 1;
            }
        for (int64_t k = 0; k < K; k++) {
            int64_t r = b * K + k;
            if (!c->alive[r]) continue;
            int len = 0;
            while (len < maxg && c->ids[r * Tc + 1 + len] != cfg->caption_pad) len++;
            double norm = len ? c->score[r] / pow((double)len, alpha) : -INFINITY;
            if (norm > best) {
                best = norm;
                bid = c->ids + r * Tc;
                blen = len;
                gen = len;
            }
        }
        for (int t = 0; t < maxg; t++) out[b * maxg + t] = cfg->caption_pad;
        lengths[b] = bid ? gen : 0;
        for (int t = 0; bid && t < gen; t++) out[b * maxg + t] = bid[1 + t];
        if (scores) scores[b] = bid ? (float)best : -INFINITY;
        (void)blen;
    }
done:
    free(fin_ids);
    free(fin_norm);
    free(fin_len);
    free(n_fin);
    free(lp);
    free(cands);
    free(next);
    return s;
}

tm_status tm_model_captioner_score(tm_model_captioner *c, const int32_t *captions, float *out)
{
    if (!c || !captions || !out) return tm_fail(TM_ERR_INVALID, "captioner_score: NULL argument");
    const model_cfg *cfg = &c->m->cfg;
    int64_t B = c->B, K = c->K, Tc = c->Tc, V = c->V;
    for (int64_t k = 0; k < B * Tc; k++)
        if (captions[k] < 0 || captions[k] >= V)
            return tm_fail(TM_ERR_INVALID, "captioner_score: token %d at %lld is outside the "
                                           "caption vocabulary (%lld)",
                           (int)captions[k], (long long)k, (long long)V);
    tm_status s = run_context(c);
    if (s) return s;
    tm_model_caption_io dec = tm_model_graph_caption_io(c->dec_g);
    for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < K; k++)
            memcpy(dec.ids + (b * K + k) * Tc, captions + b * Tc, (size_t)Tc * sizeof *captions);
    if ((s = tm_model_graph_forward(c->dec_g))) return s;
    double *lp = malloc((size_t)V * sizeof *lp);
    if (!lp) return tm_fail(TM_ERR_NOMEM, "captioner_score: out of memory");
    for (int64_t b = 0; b < B; b++) {
        double sum = 0;
        for (int64_t t = 0; t + 1 < Tc; t++) {
            int32_t y = captions[b * Tc + t + 1];
            if (y == cfg->caption_pad) continue;
            log_softmax_row(dec.logits + ((size_t)(b * K) * (size_t)Tc + (size_t)t) * (size_t)V, V, lp);
            sum += lp[y];
        }
        out[b] = has_context(c, b) ? (float)sum : -INFINITY;
    }
    free(lp);
    return TM_OK;
}
