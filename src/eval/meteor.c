/*
 * METEOR as NLTK 3.8's meteor_score computes it (exact and stem stages),
 * and the Porter stemmer it needs.
 *
 * The stemmer follows Porter (1980), "An algorithm for suffix stripping",
 * as NLTK's PorterStemmer(mode=ORIGINAL_ALGORITHM) does: words of any
 * length are stemmed, step 2 has ABLI -> ABLE (not BLI -> BLE) and no LOGI
 * rule, step 1c turns Y into I whenever the stem has a vowel. Within a
 * step, the longest matching suffix is chosen; when its condition fails,
 * the step changes nothing (no shorter suffix is tried).
 *
 * The alignment is NLTK's greedy one, not METEOR's minimum-crossing
 * search: hypothesis words from the last, each taking the last still
 * unmatched equal reference word; then the same on stems of the words left.
 */
#include <math.h>
#include <string.h>

#include "eval_internal.h"

/* ------------------------------------------------------------- Porter */

static int cons(const char *w, int i)
{
    switch (w[i]) {
    case 'a': case 'e': case 'i': case 'o': case 'u': return 0;
    case 'y': return i == 0 ? 1 : !cons(w, i - 1);
    default: return 1;
    }
}

/* m in [C](VC)^m[V] of w[0..len) */
static int measure(const char *w, int len)
{
    int i = 0, m = 0;
    while (i < len && cons(w, i)) i++;
    while (i < len) {
        while (i < len && !cons(w, i)) i++;
        if (i >= len) break;
        while (i < len && cons(w, i)) i++;
        m++;
    }
    return m;
}

static int has_vowel(const char *w, int len)
{
    for (int i = 0; i < len; i++)
        if (!cons(w, i)) return 1;
    return 0;
}

static int double_cons(const char *w, int len)
{
    return len >= 2 && w[len - 1] == w[len - 2] && cons(w, len - 1);
}

/* *o: consonant-vowel-consonant, the last not w, x or y */
static int cvc(const char *w, int len)
{
    if (len < 3 || !cons(w, len - 3) || cons(w, len - 2) || !cons(w, len - 1)) return 0;
    char c = w[len - 1];
    return c != 'w' && c != 'x' && c != 'y';
}

static int ends(const char *w, int len, const char *suf)
{
    int n = (int)strlen(suf);
    return n <= len && !memcmp(w + len - n, suf, (size_t)n);
}

enum { C_NONE, C_M0, C_M1, C_ION, C_VOWEL };

typedef struct {
    const char *suf, *rep;
    int cond;
} rule;

static int cond_ok(const char *w, int stem_len, int cond)
{
    switch (cond) {
    case C_M0: return measure(w, stem_len) > 0;
    case C_M1: return measure(w, stem_len) > 1;
    case C_ION:
        return measure(w, stem_len) > 1 && stem_len > 0 &&
               (w[stem_len - 1] == 's' || w[stem_len - 1] == 't');
    case C_VOWEL: return has_vowel(w, stem_len);
    default: return 1;
    }
}

/* The first rule whose suffix matches decides (lists are ordered so that
 * it is the longest); returns 1 when it applied. w has room for the
 * replacement (never longer than the suffix by more than one letter, and
 * the buffer keeps 2 spare bytes). */
static int apply(char *w, int *len, const rule *rules, int n)
{
    for (int r = 0; r < n; r++) {
        if (!ends(w, *len, rules[r].suf)) continue;
        int stem = *len - (int)strlen(rules[r].suf);
        if (!cond_ok(w, stem, rules[r].cond)) return 0;
        int k = (int)strlen(rules[r].rep);
        memcpy(w + stem, rules[r].rep, (size_t)k);
        *len = stem + k;
        return 1;
    }
    return 0;
}

static const rule step1a[] = {{"sses", "ss", C_NONE}, {"ies", "i", C_NONE}, {"ss", "ss", C_NONE},
                              {"s", "", C_NONE}};

static const rule step2[] = {
    {"ational", "ate", C_M0}, {"tional", "tion", C_M0}, {"enci", "ence", C_M0},
    {"anci", "ance", C_M0},   {"izer", "ize", C_M0},    {"abli", "able", C_M0},
    {"alli", "al", C_M0},     {"entli", "ent", C_M0},   {"eli", "e", C_M0},
    {"ousli", "ous", C_M0},   {"ization", "ize", C_M0}, {"ation", "ate", C_M0},
    {"ator", "ate", C_M0},    {"alism", "al", C_M0},    {"iveness", "ive", C_M0},
    {"fulness", "ful", C_M0}, {"ousness", "ous", C_M0}, {"aliti", "al", C_M0},
    {"iviti", "ive", C_M0},   {"biliti", "ble", C_M0}};

static const rule step3[] = {{"icate", "ic", C_M0}, {"ative", "", C_M0}, {"alize", "al", C_M0},
                             {"iciti", "ic", C_M0}, {"ical", "ic", C_M0}, {"ful", "", C_M0},
                             {"ness", "", C_M0}};

static const rule step4[] = {
    {"al", "", C_M1},   {"ance", "", C_M1}, {"ence", "", C_M1}, {"er", "", C_M1},
    {"ic", "", C_M1},   {"able", "", C_M1}, {"ible", "", C_M1}, {"ant", "", C_M1},
    {"ement", "", C_M1}, {"ment", "", C_M1}, {"ent", "", C_M1}, {"ion", "", C_ION},
    {"ou", "", C_M1},   {"ism", "", C_M1},  {"ate", "", C_M1},  {"iti", "", C_M1},
    {"ous", "", C_M1},  {"ive", "", C_M1},  {"ize", "", C_M1}};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Stems w[0..*len) in place; w has at least *len + 2 bytes. */
static void porter(char *w, int *len)
{
    apply(w, len, step1a, COUNT(step1a));

    /* step 1b */
    if (ends(w, *len, "eed")) {
        if (measure(w, *len - 3) > 0) *len -= 1;
    } else {
        int stem = -1;
        if (ends(w, *len, "ed") && has_vowel(w, *len - 2)) stem = *len - 2;
        else if (ends(w, *len, "ing") && has_vowel(w, *len - 3)) stem = *len - 3;
        if (stem >= 0) {
            *len = stem;
            if (ends(w, *len, "at") || ends(w, *len, "bl") || ends(w, *len, "iz")) {
                w[(*len)++] = 'e';
            } else if (double_cons(w, *len)) {
                char c = w[*len - 1];
                if (c != 'l' && c != 's' && c != 'z') (*len)--;
            } else if (measure(w, *len) == 1 && cvc(w, *len)) {
                w[(*len)++] = 'e';
            }
        }
    }

    /* step 1c */
    if (ends(w, *len, "y") && has_vowel(w, *len - 1)) w[*len - 1] = 'i';

    apply(w, len, step2, COUNT(step2));
    apply(w, len, step3, COUNT(step3));
    apply(w, len, step4, COUNT(step4));

    /* step 5a */
    if (ends(w, *len, "e")) {
        int m = measure(w, *len - 1);
        if (m > 1 || (m == 1 && !cvc(w, *len - 1))) (*len)--;
    }
    /* step 5b */
    if (ends(w, *len, "ll") && measure(w, *len - 1) > 1) (*len)--;
}

static int is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

tm_status tm_porter_stem(const char *word, char *out, size_t out_size)
{
    if (!word || !out) return tm_fail(TM_ERR_INVALID, "tm_porter_stem: word and out must not be NULL");
    size_t n = strlen(word);
    if (out_size < n + 1)
        return tm_fail(TM_ERR_INVALID, "tm_porter_stem: out has %zu bytes, %zu needed", out_size,
                       n + 1);
    if (n > 4096 || !is_ascii(word)) {
        memcpy(out, word, n + 1);
        return TM_OK;
    }
    char w[4096 + 2];
    memcpy(w, word, n);
    int len = (int)n;
    porter(w, &len);
    memcpy(out, w, (size_t)len);
    out[len] = 0;
    return TM_OK;
}

/* -------------------------------------------------------------- METEOR */

tm_meteor_params tm_meteor_default_params(void)
{
    tm_meteor_params p;
    memset(&p, 0, sizeof p);
    p.alpha = 0.9;
    p.beta = 3.0;
    p.gamma = 0.5;
    p.stem = 1;
    return p;
}

typedef struct {
    tme_vocab *vocab;
    int32_t *stem_of; /* (stem_cap) stem id of a word id, -1 unknown */
    int64_t stem_cap;
} stems;

static tm_status stem_id(stems *s, int32_t id, int32_t *out)
{
    if (id >= s->stem_cap) {
        int64_t cap = s->stem_cap ? s->stem_cap : 256;
        while (cap <= id) cap *= 2;
        int32_t *p = tm_alloc((size_t)cap * sizeof *p);
        if (!p) return tm_fail(TM_ERR_NOMEM, "METEOR: out of memory");
        if (s->stem_cap) memcpy(p, s->stem_of, (size_t)s->stem_cap * sizeof *p);
        for (int64_t i = s->stem_cap; i < cap; i++) p[i] = -1;
        tm_free(s->stem_of);
        s->stem_of = p;
        s->stem_cap = cap;
    }
    if (s->stem_of[id] < 0) {
        const char *word = tme_vocab_word(s->vocab, id);
        size_t n = strlen(word);
        char *buf = tm_alloc(n + 1);
        if (!buf) return tm_fail(TM_ERR_NOMEM, "METEOR: out of memory");
        tm_porter_stem(word, buf, n + 1);
        int32_t sid = tme_vocab_intern(s->vocab, buf, strlen(buf));
        tm_free(buf);
        if (sid < 0) return tm_fail(TM_ERR_NOMEM, "METEOR: out of memory");
        s->stem_of[id] = sid;
    }
    *out = s->stem_of[id];
    return TM_OK;
}

typedef struct {
    int32_t pos, id;
} item;

typedef struct {
    int32_t h, r;
} match;

/* NLTK's _match_enums: hypothesis items from the last; each takes the last
 * equal reference item; matched items leave both lists. */
static void match_stage(item *h, int32_t *nh, item *r, int32_t *nr, match *m, int32_t *nm)
{
    for (int32_t i = *nh - 1; i >= 0; i--) {
        for (int32_t j = *nr - 1; j >= 0; j--) {
            if (h[i].id != r[j].id) continue;
            m[(*nm)++] = (match){h[i].pos, r[j].pos};
            memmove(h + i, h + i + 1, (size_t)(*nh - i - 1) * sizeof *h);
            memmove(r + j, r + j + 1, (size_t)(*nr - j - 1) * sizeof *r);
            (*nh)--;
            (*nr)--;
            break;
        }
    }
}

static tm_status single_meteor(const tm_meteor_params *p, stems *st, const int32_t *hyp,
                               int32_t lh, const int32_t *ref, int32_t lr, item *hb, item *rb,
                               match *mb, double *score)
{
    *score = 0;
    if (lh == 0 || lr == 0) return TM_OK;
    int32_t nh = lh, nr = lr, nm = 0;
    for (int32_t i = 0; i < lh; i++) hb[i] = (item){i, hyp[i]};
    for (int32_t j = 0; j < lr; j++) rb[j] = (item){j, ref[j]};
    match_stage(hb, &nh, rb, &nr, mb, &nm);
    if (p->stem && nh && nr) {
        tm_status s;
        for (int32_t i = 0; i < nh; i++)
            if ((s = stem_id(st, hb[i].id, &hb[i].id))) return s;
        for (int32_t j = 0; j < nr; j++)
            if ((s = stem_id(st, rb[j].id, &rb[j].id))) return s;
        match_stage(hb, &nh, rb, &nr, mb, &nm);
    }
    if (nm == 0) return TM_OK;
    /* sort by hypothesis position (insertion sort: nm is a sentence) */
    for (int32_t i = 1; i < nm; i++) {
        match t = mb[i];
        int32_t j = i;
        while (j > 0 && mb[j - 1].h > t.h) {
            mb[j] = mb[j - 1];
            j--;
        }
        mb[j] = t;
    }
    int32_t chunks = 1;
    for (int32_t i = 0; i + 1 < nm; i++)
        if (!(mb[i + 1].h == mb[i].h + 1 && mb[i + 1].r == mb[i].r + 1)) chunks++;
    double prec = (double)nm / lh, rec = (double)nm / lr;
    double fmean = prec * rec / (p->alpha * prec + (1 - p->alpha) * rec);
    double frag = (double)chunks / nm;
    double pen = p->gamma * pow(frag, p->beta);
    *score = (1 - pen) * fmean;
    return TM_OK;
}

tm_status tm_meteor(const tm_caption_sample *samples, int64_t n, const tm_meteor_params *params,
                    double *mean, double *per_sample)
{
    static const char *fn = "tm_meteor";
    tm_meteor_params p = params ? *params : tm_meteor_default_params();
    tm_status s = tme_check_samples(fn, samples, n);
    if (s) return s;
    if (!mean) return tm_fail(TM_ERR_INVALID, "%s: mean must not be NULL", fn);
    if (!(p.alpha > 0 && p.alpha <= 1) || !(p.beta >= 0 && p.beta < 1e6) ||
        !(p.gamma >= 0 && p.gamma <= 1))
        return tm_fail(TM_ERR_INVALID,
                       "%s: alpha = %g, beta = %g, gamma = %g: need 0 < alpha <= 1, beta >= 0, "
                       "0 <= gamma <= 1",
                       fn, p.alpha, p.beta, p.gamma);
    if (p.norm.punct < TM_PUNCT_REMOVE || p.norm.punct > TM_PUNCT_KEEP)
        return tm_fail(TM_ERR_INVALID, "%s: unknown punctuation mode %d", fn, (int)p.norm.punct);
    stems st = {tme_vocab_new(), NULL, 0};
    int32_t *h = NULL, *r = NULL;
    int64_t hcap = 0, rcap = 0, lh = 0, lr = 0;
    item *hb = NULL, *rb = NULL;
    match *mb = NULL;
    int64_t bcap = 0;
    double sum = 0;
    if (!st.vocab) {
        s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
        goto done;
    }
    for (int64_t i = 0; i < n && !s; i++) {
        if ((s = tme_tokenize_ids(st.vocab, samples[i].hypothesis, &p.norm, &h, &hcap, &lh)))
            break;
        double best = 0;
        for (int j = 0; j < samples[i].n_references; j++) {
            if ((s = tme_tokenize_ids(st.vocab, samples[i].references[j], &p.norm, &r, &rcap, &lr)))
                break;
            if (lh > INT32_MAX / 2 || lr > INT32_MAX / 2) {
                s = tm_fail(TM_ERR_LIMIT, "%s: sample %lld is too long", fn, (long long)i);
                break;
            }
            int64_t need = lh > lr ? lh : lr;
            if (need > bcap) {
                tm_free(hb);
                tm_free(rb);
                tm_free(mb);
                hb = tm_alloc((size_t)need * sizeof *hb);
                rb = tm_alloc((size_t)need * sizeof *rb);
                mb = tm_alloc((size_t)need * sizeof *mb);
                bcap = need;
                if (!hb || !rb || !mb) {
                    bcap = 0;
                    s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
                    break;
                }
            }
            double sc;
            if ((s = single_meteor(&p, &st, h, (int32_t)lh, r, (int32_t)lr, hb, rb, mb, &sc)))
                break;
            if (sc > best) best = sc;
        }
        if (s) break;
        if (per_sample) per_sample[i] = best;
        sum += best;
    }
    if (!s) *mean = sum / (double)n;
done:
    tme_vocab_free(st.vocab);
    tm_free(st.stem_of);
    tm_free(h);
    tm_free(r);
    tm_free(hb);
    tm_free(rb);
    tm_free(mb);
    return s;
}
