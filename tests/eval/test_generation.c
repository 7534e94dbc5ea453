/* Generation metrics against scripts/gen_eval_vectors.py: BLEU (NLTK
 * corpus_bleu / sentence_bleu, smoothing methods 0-3, three weightings),
 * METEOR (NLTK meteor_score with the original Porter stemmer, with and
 * without the stem stage, two parameter sets), CIDEr-D (a numpy version of
 * the paper's formula; also without clipping and penalty, and bigrams),
 * WER and CER (a Python dynamic programme with the documented path), the
 * Porter stems of 1600 words (NLTK), the tokeniser's three punctuation
 * modes; errors and allocation failures. */
#include "eval_test.h"

/* BLEU and METEOR are a few logs and divisions of small integers: agree
 * to rounding. CIDEr sums many products of logs. */
#define TOL 1e-12

typedef struct {
    tm_caption_sample *s;
    int n;
} corpus;

static corpus read_samples(const cJSON *arr, const char *hkey, const char *rkey)
{
    corpus c;
    c.n = cJSON_GetArraySize(arr);
    c.s = calloc((size_t)c.n, sizeof *c.s);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        c.s[i].hypothesis = jstr(e, hkey);
        const cJSON *refs = jget(e, rkey);
        int nr = cJSON_GetArraySize(refs);
        const char **r = calloc((size_t)nr, sizeof *r);
        int k = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, refs) r[k++] = x->valuestring;
        c.s[i].references = r;
        c.s[i].n_references = nr;
        i++;
    }
    return c;
}

static void free_corpus(corpus *c)
{
    for (int i = 0; i < c->n; i++) free((void *)c->s[i].references);
    free(c->s);
}

static const tm_text_norm WORDS = {1, TM_PUNCT_KEEP}; /* the vectors are token lists */

static void test_bleu(const cJSON *j, const corpus *c)
{
    const cJSON *b;
    int cases = 0;
    double *sent = malloc(c->n * sizeof *sent);
    cJSON_ArrayForEach(b, jget(j, "bleu"))
    {
        int nw;
        double *w = jdoubles(jget(b, "weights"), &nw);
        tm_bleu_params p = tm_bleu_default_params();
        p.max_n = nw;
        int uniform = 1;
        for (int k = 0; k < nw; k++) uniform &= fabs(w[k] - 1.0 / nw) < 1e-15;
        if (!uniform) /* uniform weights left at 0 exercise the default */
            for (int k = 0; k < nw; k++) p.weights[k] = w[k];
        p.smoothing = (tm_bleu_smoothing)(int)jnum(b, "smoothing");
        p.norm = WORDS;
        tm_bleu_result r;
        char what[96];
        snprintf(what, sizeof what, "BLEU %s method%d corpus", jstr(b, "name"), (int)p.smoothing);
        CHECK_OK(tm_bleu(c->s, c->n, &p, &r));
        double want = jnum(b, "corpus");
        check_doubles(what, &r.bleu, &want, 1, 1e-300, TOL);
        double *ws = jdoubles(jget(b, "sentences"), NULL);
        CHECK_OK(tm_bleu_sentences(c->s, c->n, &p, sent));
        snprintf(what, sizeof what, "BLEU %s method%d sentences", jstr(b, "name"), (int)p.smoothing);
        check_doubles(what, sent, ws, c->n, 1e-300, TOL);
        /* sentence BLEU is corpus BLEU of one sample */
        for (int i = 0; i < c->n; i += 5) {
            tm_bleu_result one;
            CHECK_OK(tm_bleu(&c->s[i], 1, &p, &one));
            CHECK(one.bleu == sent[i]);
        }
        free(ws);
        free(w);
        cases++;
    }
    free(sent);
    CHECK(cases == 12);
}

static void test_meteor(const cJSON *j, const corpus *c)
{
    const cJSON *m;
    int cases = 0;
    double *got = malloc(c->n * sizeof *got);
    cJSON_ArrayForEach(m, jget(j, "meteor"))
    {
        tm_meteor_params p = tm_meteor_default_params();
        p.alpha = jnum(m, "alpha");
        p.beta = jnum(m, "beta");
        p.gamma = jnum(m, "gamma");
        p.stem = (int)jnum(m, "stem");
        p.norm = WORDS;
        int n;
        double *want = jdoubles(jget(m, "scores"), &n);
        double mean, wmean = 0;
        CHECK_OK(tm_meteor(c->s, c->n, &p, &mean, got));
        char what[96];
        snprintf(what, sizeof what, "METEOR %s stem=%d", jstr(m, "name"), p.stem);
        check_doubles(what, got, want, n, TOL, TOL);
        for (int i = 0; i < n; i++) wmean += want[i];
        CHECK_NEAR(mean, wmean / n, 1e-12, 0);
        free(want);
        cases++;
    }
    CHECK(cases == 4);
    free(got);
}

static void test_cider(const cJSON *j, const corpus *c)
{
    const cJSON *m;
    int cases = 0;
    double *got = malloc(c->n * sizeof *got);
    cJSON_ArrayForEach(m, jget(j, "cider"))
    {
        tm_cider_params p = tm_cider_default_params();
        p.max_n = (int)jnum(m, "max_n");
        p.sigma = jnum(m, "sigma");
        p.clip = (int)jnum(m, "clip");
        p.scale = jnum(m, "scale");
        p.norm = WORDS;
        int n;
        double *want = jdoubles(jget(m, "scores"), &n);
        double mean, wmean = 0;
        CHECK_OK(tm_cider(c->s, c->n, &p, &mean, got));
        char what[96];
        snprintf(what, sizeof what, "CIDEr %s", jstr(m, "name"));
        check_doubles(what, got, want, n, 1e-12, 1e-10);
        for (int i = 0; i < n; i++) wmean += want[i];
        CHECK_NEAR(mean, wmean / n, 1e-12, 1e-10);
        free(want);
        cases++;
    }
    CHECK(cases == 3);
    free(got);
}

static int tokens_equal(const char *text, const tm_text_norm *norm, const cJSON *want)
{
    char *toks;
    int64_t n;
    if (tm_text_tokenize(text, norm, &toks, &n)) return 0;
    int ok = n == cJSON_GetArraySize(want);
    const char *t = toks;
    const cJSON *w;
    cJSON_ArrayForEach(w, want)
    {
        if (!ok) break;
        ok = !strcmp(t, w->valuestring);
        t += strlen(t) + 1;
    }
    if (!ok) fprintf(stderr, "tokens of \"%s\" differ\n", text);
    tm_free(toks);
    return ok;
}

static void test_tokenizer_and_raw(const cJSON *j)
{
    corpus raw = read_samples(jget(j, "raw"), "hyp", "refs");
    /* default tokenisation: lowercase, punctuation removed */
    tm_bleu_params bp = tm_bleu_default_params();
    bp.smoothing = TM_BLEU_SMOOTH_EPSILON;
    tm_bleu_result br;
    CHECK_OK(tm_bleu(raw.s, raw.n, &bp, &br));
    CHECK_NEAR(br.bleu, jnum(j, "raw_bleu_method1"), 0, TOL);
    double scores[8], mean;
    CHECK_OK(tm_meteor(raw.s, raw.n, NULL, &mean, scores));
    double *wm = jdoubles(jget(j, "raw_meteor"), NULL);
    check_doubles("METEOR raw text", scores, wm, raw.n, TOL, TOL);
    free(wm);
    tm_text_norm split = {0, TM_PUNCT_SPLIT}, keep = {1, TM_PUNCT_KEEP};
    const cJSON *st = jget(j, "raw_split_tokens"), *kt = jget(j, "raw_keep_tokens");
    for (int i = 0; i < raw.n; i++) {
        CHECK(tokens_equal(raw.s[i].hypothesis, &split, cJSON_GetArrayItem(st, i)));
        CHECK(tokens_equal(raw.s[i].hypothesis, &keep, cJSON_GetArrayItem(kt, i)));
    }
    free_corpus(&raw);
    char *toks;
    int64_t n;
    CHECK_OK(tm_text_tokenize("  ,;  ", NULL, &toks, &n));
    CHECK(n == 0 && toks == NULL);
    CHECK_OK(tm_text_tokenize("Caf\xc3\xa9 AU-lait", NULL, &toks, &n));
    CHECK(n == 3 && !strcmp(toks, "caf\xc3\xa9") && !strcmp(toks + 6, "au"));
    tm_free(toks);
}

static void test_edit_rates(const cJSON *j)
{
    const cJSON *pairs = jget(j, "wer_pairs");
    int n = cJSON_GetArraySize(pairs);
    const char **h = calloc(n, sizeof *h), **r = calloc(n, sizeof *r);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(pairs, i);
        h[i] = jstr(e, "hyp");
        r[i] = jstr(e, "ref");
    }
    const char *names[2] = {"wer", "cer"};
    for (int k = 0; k < 2; k++) {
        tm_edit_result res;
        CHECK_OK(k ? tm_cer(h, r, n, NULL, &res) : tm_wer(h, r, n, NULL, &res));
        const cJSON *e = jget(j, names[k]);
        int64_t got[6] = {res.hits, res.substitutions, res.deletions, res.insertions,
                          res.ref_len, res.hyp_len};
        int64_t want[6] = {(int64_t)jnum(e, "hits"), (int64_t)jnum(e, "substitutions"),
                           (int64_t)jnum(e, "deletions"), (int64_t)jnum(e, "insertions"),
                           (int64_t)jnum(e, "ref_len"), (int64_t)jnum(e, "hyp_len")};
        for (int q = 0; q < 6; q++)
            if (got[q] != want[q]) fprintf(stderr, "%s count %d: got %lld want %lld\n", names[k], q,
                                           (long long)got[q], (long long)want[q]);
        CHECK(!memcmp(got, want, sizeof got));
        CHECK_NEAR(res.rate, jnum(e, "rate"), 0, TOL);
    }
    /* by hand: one substitution, one deletion, one insertion */
    const char *hh[1] = {"a x c d e"}, *rr[1] = {"a b c d"};
    tm_edit_result res;
    CHECK_OK(tm_wer(hh, rr, 1, NULL, &res));
    CHECK(res.substitutions == 1 && res.deletions == 0 && res.insertions == 1 && res.hits == 3);
    CHECK_NEAR(res.rate, 0.5, 0, 0);
    /* errors: no reference word at all */
    const char *e1[1] = {"words"}, *e2[1] = {" ... "};
    CHECK_STATUS(tm_wer(e1, e2, 1, NULL, &res), TM_ERR_INVALID);
    CHECK_STATUS(tm_cer(e1, e2, 1, NULL, &res), TM_ERR_INVALID);
    CHECK_STATUS(tm_wer(e1, NULL, 1, NULL, &res), TM_ERR_INVALID);
    CHECK_STATUS(tm_wer(e1, e2, 0, NULL, &res), TM_ERR_INVALID);
    /* invalid UTF-8 counts byte by byte in CER */
    const char *b1[1] = {"ab\xff"}, *b2[1] = {"ab\xfe"};
    CHECK_OK(tm_cer(b1, b2, 1, NULL, &res));
    CHECK(res.ref_len == 3 && res.substitutions == 1);
    free(h);
    free(r);
}

static void test_stemmer(void)
{
    cJSON *j = load_json("eval/stemmer.json");
    CHECK(j != NULL);
    if (!j) return;
    const cJSON *words = jget(j, "words"), *stems = jget(j, "stems");
    int n = cJSON_GetArraySize(words), bad = 0;
    CHECK(n > 1000 && n == cJSON_GetArraySize(stems));
    char out[256];
    for (int i = 0; i < n; i++) {
        const char *w = cJSON_GetArrayItem(words, i)->valuestring;
        const char *want = cJSON_GetArrayItem(stems, i)->valuestring;
        if (tm_porter_stem(w, out, sizeof out) || strcmp(out, want)) {
            if (bad++ < 10) fprintf(stderr, "stem(%s) = %s, want %s\n", w, out, want);
        }
    }
    CHECK(bad == 0);
    CHECK_STATUS(tm_porter_stem("running", out, 3), TM_ERR_INVALID);
    CHECK_OK(tm_porter_stem("caf\xc3\xa9s", out, sizeof out)); /* non-ASCII: unchanged */
    CHECK(!strcmp(out, "caf\xc3\xa9s"));
    cJSON_Delete(j);
}

static void test_errors(void)
{
    const char *refs[1] = {"a cat"};
    tm_caption_sample s[1] = {{"a cat", refs, 1}};
    tm_bleu_result r;
    double m;
    CHECK_OK(tm_bleu(s, 1, NULL, &r));
    CHECK_NEAR(r.bleu, 0, 1e-70, 0); /* 2 words: no 3-grams, method0 makes it tiny, not 0 */
    CHECK(r.bleu > 0);
    tm_bleu_params p = tm_bleu_default_params();
    p.max_n = 2;
    CHECK_OK(tm_bleu(s, 1, &p, &r));
    CHECK_NEAR(r.bleu, 1, 0, 1e-15);
    p.max_n = 9;
    CHECK_STATUS(tm_bleu(s, 1, &p, &r), TM_ERR_INVALID);
    p = tm_bleu_default_params();
    p.weights[5] = 1;
    CHECK_STATUS(tm_bleu(s, 1, &p, &r), TM_ERR_INVALID);
    p = tm_bleu_default_params();
    p.weights[0] = -1;
    CHECK_STATUS(tm_bleu(s, 1, &p, &r), TM_ERR_INVALID);
    p = tm_bleu_default_params();
    p.smoothing = TM_BLEU_SMOOTH_EPSILON;
    p.epsilon = 0;
    CHECK_STATUS(tm_bleu(s, 1, &p, &r), TM_ERR_INVALID);
    CHECK_STATUS(tm_bleu(s, 0, NULL, &r), TM_ERR_INVALID);
    s[0].n_references = 0;
    CHECK_STATUS(tm_bleu(s, 1, NULL, &r), TM_ERR_INVALID);
    CHECK_STATUS(tm_meteor(s, 1, NULL, &m, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_cider(s, 1, NULL, &m, NULL), TM_ERR_INVALID);
    s[0].n_references = 1;
    s[0].hypothesis = NULL;
    CHECK_STATUS(tm_bleu(s, 1, NULL, &r), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "sample 0") != NULL);
    s[0].hypothesis = "a cat";
    tm_meteor_params mp = tm_meteor_default_params();
    mp.alpha = 0;
    CHECK_STATUS(tm_meteor(s, 1, &mp, &m, NULL), TM_ERR_INVALID);
    tm_cider_params cp = tm_cider_default_params();
    cp.sigma = -1;
    CHECK_STATUS(tm_cider(s, 1, &cp, &m, NULL), TM_ERR_INVALID);
    /* one sample: idf is log(1) - log(1) = 0 everywhere, so CIDEr is 0 */
    CHECK_OK(tm_cider(s, 1, NULL, &m, NULL));
    CHECK(m == 0);
    CHECK_OK(tm_meteor(s, 1, NULL, &m, NULL));
    CHECK_NEAR(m, 0.5 * 0 + (1 - 0.5 * pow(0.5, 3)) * 1, 1e-15, 0); /* 2 matches, 1 chunk */
}

static void test_nomem(const corpus *c)
{
    tm_bleu_result r;
    double m;
    int fails[3] = {0, 0, 0};
    for (long n = 1; n <= 40; n += 3) {
        tm_alloc_fail_after(n);
        tm_status s1 = tm_bleu(c->s, c->n, NULL, &r);
        tm_alloc_fail_after(n);
        tm_status s2 = tm_meteor(c->s, c->n, NULL, &m, NULL);
        tm_alloc_fail_after(n);
        tm_status s3 = tm_cider(c->s, c->n, NULL, &m, NULL);
        tm_alloc_fail_after(0);
        CHECK(s1 == TM_OK || s1 == TM_ERR_NOMEM);
        CHECK(s2 == TM_OK || s2 == TM_ERR_NOMEM);
        CHECK(s3 == TM_OK || s3 == TM_ERR_NOMEM);
        fails[0] += s1 != TM_OK;
        fails[1] += s2 != TM_OK;
        fails[2] += s3 != TM_OK;
    }
    CHECK(fails[0] > 3 && fails[1] > 3 && fails[2] > 3);
}

/* Random bytes (invalid UTF-8, control characters, punctuation runs)
 * through every text metric: no crash, sane ranges (ASan runs this too). */
static void test_random_bytes(void)
{
    enum { N = 24, LEN = 60 };
    static char text[2 * N][LEN + 1];
    const char *refs[N][1], *hyps[N], *rflat[N];
    tm_caption_sample s[N];
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 2 * N; i++) {
        int len = (int)(x % LEN);
        for (int k = 0; k < len; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            unsigned char c = (unsigned char)(x >> 24);
            if (c % 3 == 0) c = (unsigned char)('a' + c % 5); /* some shared words */
            if (c == 0) c = ' ';
            text[i][k] = (char)c;
        }
        text[i][len] = 0;
    }
    for (int i = 0; i < N; i++) {
        hyps[i] = text[i];
        refs[i][0] = text[N + i];
        rflat[i] = text[N + i];
        s[i] = (tm_caption_sample){text[i], refs[i], 1};
    }
    tm_text_norm norms[3] = {{0, TM_PUNCT_REMOVE}, {0, TM_PUNCT_SPLIT}, {1, TM_PUNCT_KEEP}};
    for (int k = 0; k < 3; k++) {
        tm_bleu_params bp = tm_bleu_default_params();
        bp.norm = norms[k];
        bp.smoothing = TM_BLEU_SMOOTH_ADD1;
        tm_bleu_result br;
        CHECK_OK(tm_bleu(s, N, &bp, &br));
        CHECK(br.bleu >= 0 && br.bleu <= 1);
        tm_meteor_params mp = tm_meteor_default_params();
        mp.norm = norms[k];
        double m;
        CHECK_OK(tm_meteor(s, N, &mp, &m, NULL));
        CHECK(m >= 0 && m <= 1);
        tm_cider_params cp = tm_cider_default_params();
        cp.norm = norms[k];
        CHECK_OK(tm_cider(s, N, &cp, &m, NULL));
        CHECK(m >= 0 && m <= 10 * 1.0000001);
        tm_edit_result er;
        tm_status st = tm_wer(hyps, rflat, N, &norms[k], &er);
        CHECK(st == TM_OK || st == TM_ERR_INVALID); /* the references may hold no word */
        if (!st) CHECK(er.hits + er.substitutions + er.deletions == er.ref_len);
        st = tm_cer(hyps, rflat, N, &norms[k], &er);
        CHECK(st == TM_OK || st == TM_ERR_INVALID);
        if (!st) CHECK(er.hits + er.substitutions + er.insertions == er.hyp_len);
    }
}

int main(void)
{
    cJSON *j = load_json("eval/generation.json");
    CHECK(j != NULL);
    if (j) {
        corpus c = read_samples(jget(j, "samples"), "hyp", "refs");
        CHECK(c.n >= 20);
        test_bleu(j, &c);
        test_meteor(j, &c);
        test_cider(j, &c);
        test_tokenizer_and_raw(j);
        test_edit_rates(j);
        test_nomem(&c);
        free_corpus(&c);
        cJSON_Delete(j);
    }
    test_stemmer();
    test_errors();
    test_random_bytes();
    return test_finish("test_generation");
}
