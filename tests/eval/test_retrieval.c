/* Retrieval metrics against scripts/gen_eval_vectors.py (scikit-learn on
 * tie-free cases, a numpy ranking with the documented tie rules on the
 * others): paired and class-level relevance, several captions per image,
 * both directions, ties, collapsed scores, queries without a match; the
 * transposed layout; thread-count independence; errors; allocation
 * failures; a timing of a large matrix. */
#include "eval_test.h"

/* Exact figures are sums of a few dozen doubles: the C code and numpy
 * agree to rounding. */
#define TOL 1e-12

static tm_ties ties_of(const char *s)
{
    if (!strcmp(s, "optimistic")) return TM_TIES_OPTIMISTIC;
    if (!strcmp(s, "by_index")) return TM_TIES_BY_INDEX;
    return TM_TIES_PESSIMISTIC;
}

static void check_case(const cJSON *c)
{
    const char *name = jstr(c, "name");
    int nq = (int)jnum(c, "nq"), nc = (int)jnum(c, "nc"), n_sim, n_k;
    float *sim = jfloats(jget(c, "sim"), &n_sim);
    CHECK(n_sim == nq * nc);
    const cJSON *jq = jget(c, "query_ids"), *jc = jget(c, "candidate_ids");
    int64_t *qid = cJSON_IsNull(jq) ? NULL : jint64s(jq, NULL);
    int64_t *cid = cJSON_IsNull(jc) ? NULL : jint64s(jc, NULL);
    int64_t *ks = jint64s(jget(c, "k"), &n_k);
    const cJSON *e = jget(c, "expect");

    tm_retrieval_params p = tm_retrieval_default_params();
    p.n_k = n_k;
    for (int j = 0; j < n_k; j++) p.k[j] = ks[j];
    p.ties = ties_of(jstr(c, "ties"));
    tm_retrieval_result r;
    int64_t *first = calloc((size_t)nq, sizeof *first);
    CHECK_OK(tm_retrieval_eval(sim, nq, nc, qid, cid, &p, &r, first));

    char what[128];
    CHECK(r.n_queries == nq);
    CHECK(r.n_valid == (int64_t)jnum(e, "n_valid"));
    CHECK(r.n_no_relevant == (int64_t)jnum(e, "n_no_relevant"));
    double *want;
    want = jdoubles(jget(e, "recall_at_k"), NULL);
    snprintf(what, sizeof what, "%s recall_at_k", name);
    check_doubles(what, r.recall_at_k, want, n_k, TOL, TOL);
    free(want);
    want = jdoubles(jget(e, "relevant_recall_at_k"), NULL);
    snprintf(what, sizeof what, "%s relevant_recall_at_k", name);
    check_doubles(what, r.relevant_recall_at_k, want, n_k, TOL, TOL);
    free(want);
    want = jdoubles(jget(e, "precision_at_k"), NULL);
    snprintf(what, sizeof what, "%s precision_at_k", name);
    check_doubles(what, r.precision_at_k, want, n_k, TOL, TOL);
    free(want);
    double got4[4] = {r.mrr, r.map, r.median_rank, r.mean_rank};
    double want4[4] = {jnum(e, "mrr"), jnum(e, "map"), jnum(e, "median_rank"), jnum(e, "mean_rank")};
    snprintf(what, sizeof what, "%s mrr/map/median/mean rank", name);
    check_doubles(what, got4, want4, 4, TOL, TOL);
    int64_t *wf = jint64s(jget(e, "first_rank"), NULL);
    int same = 1;
    for (int q = 0; q < nq; q++) same &= first[q] == wf[q];
    if (!same) fprintf(stderr, "%s: first ranks differ\n", name);
    CHECK(same);

    /* the same queries from the transposed layout */
    float *t = malloc((size_t)nq * nc * sizeof *t);
    for (int q = 0; q < nq; q++)
        for (int k = 0; k < nc; k++) t[k * nq + q] = sim[q * nc + k];
    tm_retrieval_params pt = p;
    pt.transposed = 1;
    tm_retrieval_result rt;
    CHECK_OK(tm_retrieval_eval(t, nq, nc, qid, cid, &pt, &rt, NULL));
    CHECK(!memcmp(&r, &rt, sizeof r));
    free(t);
    free(wf);
    free(first);
    free(sim);
    free(qid);
    free(cid);
    free(ks);
}

static void test_vectors(void)
{
    cJSON *j = load_json("eval/retrieval.json");
    CHECK(j != NULL);
    if (!j) return;
    int cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, jget(j, "cases"))
    {
        check_case(c);
        cases++;
    }
    CHECK(cases >= 12);
    cJSON_Delete(j);
}

/* A larger class-level problem: bitwise the same at 1 and 2 threads, and
 * the transposed layout with a column count that is not a multiple of the
 * gather group. */
static void test_threads(void)
{
    const int nq = 301, nc = 517;
    float *sim = malloc((size_t)nq * nc * sizeof *sim);
    test_fill_uniform(sim, (int64_t)nq * nc, 7, -1, 1);
    for (int i = 0; i < nq * nc; i += 3) sim[i] = 0.25f; /* ties */
    int64_t *qid = malloc(nq * sizeof *qid), *cid = malloc(nc * sizeof *cid);
    for (int q = 0; q < nq; q++) qid[q] = q % 13;
    for (int k = 0; k < nc; k++) cid[k] = (k * 7) % 11;
    tm_retrieval_result a, b, c;
    int64_t *fa = malloc(nq * sizeof *fa), *fb = malloc(nq * sizeof *fb);
    int saved = tm_get_num_threads();
    tm_set_num_threads(1);
    CHECK_OK(tm_retrieval_eval(sim, nq, nc, qid, cid, NULL, &a, fa));
    tm_set_num_threads(2);
    CHECK_OK(tm_retrieval_eval(sim, nq, nc, qid, cid, NULL, &b, fb));
    tm_set_num_threads(saved);
    CHECK(!memcmp(&a, &b, sizeof a));
    CHECK(!memcmp(fa, fb, nq * sizeof *fa));
    CHECK(a.n_no_relevant == 301 - 301 / 13 * 11 - (301 % 13 > 11 ? 11 : 301 % 13));
    float *t = malloc((size_t)nq * nc * sizeof *t);
    for (int q = 0; q < nq; q++)
        for (int k = 0; k < nc; k++) t[k * nq + q] = sim[q * nc + k];
    tm_retrieval_params p = tm_retrieval_default_params();
    p.transposed = 1;
    CHECK_OK(tm_retrieval_eval(t, nq, nc, qid, cid, &p, &c, NULL));
    CHECK(!memcmp(&a, &c, sizeof a));
    free(t);
    free(sim);
    free(qid);
    free(cid);
    free(fa);
    free(fb);
}

static void test_errors(void)
{
    float sim[6] = {1, 2, 3, 4, 5, 6};
    int64_t q[2] = {0, 1}, c[3] = {5, 6, 7};
    tm_retrieval_result r;
    memset(&r, 0x5a, sizeof r);
    tm_retrieval_result keep = r;
    CHECK_STATUS(tm_retrieval_eval(sim, 0, 3, NULL, NULL, NULL, &r, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_retrieval_eval(sim, 2, -1, NULL, NULL, NULL, &r, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_retrieval_eval(NULL, 2, 3, NULL, NULL, NULL, &r, NULL), TM_ERR_INVALID);
    CHECK_STATUS(tm_retrieval_eval(sim, 2, 3, q, NULL, NULL, &r, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "neither") != NULL);
    /* no query has a match */
    CHECK_STATUS(tm_retrieval_eval(sim, 2, 3, q, c, NULL, &r, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "none of the 2 queries") != NULL);
    tm_retrieval_params p = tm_retrieval_default_params();
    p.k[1] = 0;
    CHECK_STATUS(tm_retrieval_eval(sim, 2, 3, NULL, NULL, &p, &r, NULL), TM_ERR_INVALID);
    p = tm_retrieval_default_params();
    p.n_k = 0;
    CHECK_STATUS(tm_retrieval_eval(sim, 2, 3, NULL, NULL, &p, &r, NULL), TM_ERR_INVALID);
    p.n_k = TM_RETRIEVAL_MAX_K + 1;
    CHECK_STATUS(tm_retrieval_eval(sim, 2, 3, NULL, NULL, &p, &r, NULL), TM_ERR_INVALID);
    p = tm_retrieval_default_params();
    p.ties = (tm_ties)7;
    CHECK_STATUS(tm_retrieval_eval(sim, 2, 3, NULL, NULL, &p, &r, NULL), TM_ERR_INVALID);
    /* a NaN names its place, in either layout */
    sim[4] = NAN;
    CHECK_STATUS(tm_retrieval_eval(sim, 2, 3, NULL, NULL, NULL, &r, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "query 1 and candidate 1") != NULL);
    p = tm_retrieval_default_params();
    p.transposed = 1; /* now (3 candidates, 2 queries): element 4 is candidate 2, query 0 */
    CHECK_STATUS(tm_retrieval_eval(sim, 2, 3, NULL, NULL, &p, &r, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "query 0 and candidate 2") != NULL);
    sim[4] = INFINITY;
    CHECK_STATUS(tm_retrieval_eval(sim, 2, 3, NULL, NULL, NULL, &r, NULL), TM_ERR_INVALID);
    CHECK(!memcmp(&r, &keep, sizeof r)); /* untouched on failure */
    /* a huge size is refused before any allocation */
    CHECK_STATUS(tm_retrieval_eval(sim, INT64_MAX / 2, 4, NULL, NULL, NULL, &r, NULL),
                 TM_ERR_NOMEM);
}

static void test_small_by_hand(void)
{
    /* query 0: candidates scored 0.9 (irrelevant), 0.5 (relevant), 0.5
     * (irrelevant), 0.1 (relevant): pessimistic ranks 3 and 4 */
    float sim[4] = {0.9f, 0.5f, 0.5f, 0.1f};
    int64_t q[1] = {1}, c[4] = {0, 1, 0, 1};
    tm_retrieval_params p = tm_retrieval_default_params();
    p.n_k = 2;
    p.k[0] = 3;
    p.k[1] = 1;
    tm_retrieval_result r;
    int64_t first;
    CHECK_OK(tm_retrieval_eval(sim, 1, 4, q, c, &p, &r, &first));
    CHECK(first == 3);
    CHECK_NEAR(r.map, (1.0 / 3 + 2.0 / 4) / 2, 1e-15, 0);
    CHECK_NEAR(r.recall_at_k[0], 1, 0, 0);
    CHECK_NEAR(r.relevant_recall_at_k[0], 0.5, 0, 0);
    CHECK_NEAR(r.precision_at_k[0], 1.0 / 3, 1e-15, 0);
    CHECK_NEAR(r.recall_at_k[1], 0, 0, 0);
    p.ties = TM_TIES_OPTIMISTIC; /* relevant first among the 0.5s: ranks 2 and 4 */
    CHECK_OK(tm_retrieval_eval(sim, 1, 4, q, c, &p, &r, &first));
    CHECK(first == 2);
    CHECK_NEAR(r.mrr, 0.5, 0, 0);
    p.ties = TM_TIES_BY_INDEX; /* candidate 1 before candidate 2 */
    CHECK_OK(tm_retrieval_eval(sim, 1, 4, q, c, &p, &r, &first));
    CHECK(first == 2);
}

static void test_nomem(void)
{
    float sim[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    tm_retrieval_result r;
    int failures = 0;
    for (long n = 1; n <= 4; n++) {
        tm_alloc_fail_after(n);
        tm_status s = tm_retrieval_eval(sim, 3, 3, NULL, NULL, NULL, &r, NULL);
        tm_alloc_fail_after(0);
        if (s == TM_ERR_NOMEM) failures++;
        else CHECK_OK(s);
    }
    CHECK(failures >= 2);
}

static void test_timing(void)
{
    /* 2000 x 2000, paired: prints the time (the doc quotes 10k x 10k) */
    const int n = 2000;
    float *sim = malloc((size_t)n * n * sizeof *sim);
    test_fill_uniform(sim, (int64_t)n * n, 3, -1, 1);
    for (int i = 0; i < n; i++) sim[(size_t)i * n + i] += 0.5f;
    tm_retrieval_result r;
    double t0 = tm_time_s();
    CHECK_OK(tm_retrieval_eval(sim, n, n, NULL, NULL, NULL, &r, NULL));
    double t1 = tm_time_s();
    tm_retrieval_params p = tm_retrieval_default_params();
    p.transposed = 1;
    CHECK_OK(tm_retrieval_eval(sim, n, n, NULL, NULL, &p, &r, NULL));
    double t2 = tm_time_s();
    printf("retrieval %d x %d at %d threads: %.1f ms, transposed %.1f ms (R@1 %.3f)\n", n, n,
           tm_get_num_threads(), (t1 - t0) * 1e3, (t2 - t1) * 1e3, r.recall_at_k[0]);
    free(sim);
}

int main(void)
{
    test_vectors();
    test_small_by_hand();
    test_threads();
    test_errors();
    test_nomem();
    test_timing();
    return test_finish("test_retrieval");
}
