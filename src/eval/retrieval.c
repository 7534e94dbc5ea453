/*
 * Retrieval metrics from a similarity matrix.
 *
 * Why no full sort: every metric needs only the positions of the relevant
 * candidates in the ranking. A query's relevant scores are sorted (usually
 * a handful); each irrelevant candidate then finds, by binary search, the
 * first relevant candidate it outranks under the tie rule, and a prefix
 * sum of those counts gives how many irrelevant candidates precede each
 * relevant one. That is O(n_candidates * log(relevant)) per query instead
 * of a sort of the whole row (with shortcuts for scores outside the
 * relevant ones' range, and plain counting when there is one relevant
 * candidate), and the row is read twice, in order.
 *
 * Queries are independent: they are split over the thread pool and their
 * per-query results stored, then summed in query order, so the figures are
 * bitwise the same for any thread count. A transposed matrix is gathered
 * many query columns at a time, in tiles of 16 rows, into a buffer.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "eval_internal.h"

/* A transposed matrix is gathered into a buffer of at most this many
 * bytes per task: as many query columns as fit, so each row of the matrix
 * is visited rarely (each visit costs a TLB and cache miss). */
#define GATHER_BYTES ((size_t)8 << 20)
#define GATHER_MAX 512

typedef struct {
    int64_t m;     /* relevant candidates */
    int64_t first; /* rank of the best relevant one, 0 if none */
    int64_t bad;   /* first non-finite candidate, -1 if none */
    double ap;
    int64_t hits[TM_RETRIEVAL_MAX_K]; /* relevant within the top k */
} query_result;

typedef struct {
    const float *sim;
    int64_t nq, nc;
    const int64_t *qid, *cid;
    const tm_retrieval_params *p;
    query_result *res;
    int64_t group; /* query columns per gather (transposed) */
    atomic_int nomem;
} ctx_t;

typedef struct {
    float *rs;    /* (nc) relevant scores in rank order */
    int64_t *ri;  /* (nc) their candidate indices */
    int64_t *cnt; /* (nc + 1) irrelevant candidates before relevant i, binned */
    int64_t *tmp; /* (nc) sort scratch */
    int64_t *order; /* (nc) relevant candidates in candidate order */
} scratch_t;

/* Index of the first non-finite value of row[0..n), or -1. The bit test
 * runs without branches over blocks. */
static int64_t first_bad(const float *row, int64_t n)
{
    const uint32_t *u = (const uint32_t *)(const void *)row;
    for (int64_t k0 = 0; k0 < n; k0 += 256) {
        int64_t k1 = n - k0 < 256 ? n : k0 + 256;
        uint32_t any = 0;
        for (int64_t k = k0; k < k1; k++) any |= (u[k] & 0x7f800000u) == 0x7f800000u;
        if (any)
            for (int64_t k = k0; k < k1; k++)
                if ((u[k] & 0x7f800000u) == 0x7f800000u) return k;
    }
    return -1;
}

/* Candidates scoring above r (ge: at least r), over row[0..n). Eight
 * independent counters so the loop pipelines. */
static int64_t count_above(const float *row, int64_t n, float r, int ge)
{
    int64_t c[8] = {0, 0, 0, 0, 0, 0, 0, 0}, k = 0;
    if (ge) {
        for (; k + 8 <= n; k += 8)
            for (int j = 0; j < 8; j++) c[j] += row[k + j] >= r;
        for (; k < n; k++) c[0] += row[k] >= r;
    } else {
        for (; k + 8 <= n; k += 8)
            for (int j = 0; j < 8; j++) c[j] += row[k + j] > r;
        for (; k < n; k++) c[0] += row[k] > r;
    }
    return c[0] + c[1] + c[2] + c[3] + c[4] + c[5] + c[6] + c[7];
}

/* Number of leading entries of rs[0..m) (descending) above s; ge counts
 * those >= s. Branch-free binary search. */
static inline int64_t prefix_above(const float *rs, int64_t m, float s, int ge)
{
    const float *base = rs;
    int64_t n = m;
    if (ge) {
        while (n > 1) {
            int64_t half = n / 2;
            base = base[half - 1] >= s ? base + half : base;
            n -= half;
        }
        return (base - rs) + (*base >= s);
    }
    while (n > 1) {
        int64_t half = n / 2;
        base = base[half - 1] > s ? base + half : base;
        n -= half;
    }
    return (base - rs) + (*base > s);
}

/* Rank order of relevant candidates: score descending, index ascending. */
static inline int ranks_before(float sa, int64_t ia, float sb, int64_t ib)
{
    return sa > sb || (sa == sb && ia < ib);
}

/* Few relevant candidates: insertion sort of the pairs (rs[i], ri[i]). */
static void sort_pairs(float *rs, int64_t *ri, int64_t m)
{
    for (int64_t i = 1; i < m; i++) {
        float s = rs[i];
        int64_t x = ri[i], j = i;
        while (j > 0 && ranks_before(s, x, rs[j - 1], ri[j - 1])) {
            rs[j] = rs[j - 1];
            ri[j] = ri[j - 1];
            j--;
        }
        rs[j] = s;
        ri[j] = x;
    }
}

/* Many: a bottom-up merge sort of the candidate indices ri by their
 * scores in row (tmp: m entries of scratch). */
static void sort_indices(const float *row, int64_t *ri, int64_t m, int64_t *tmp)
{
    for (int64_t w = 1; w < m; w *= 2) {
        for (int64_t lo = 0; lo < m; lo += 2 * w) {
            int64_t mid = lo + w < m ? lo + w : m, hi = lo + 2 * w < m ? lo + 2 * w : m;
            int64_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi)
                tmp[o++] = ranks_before(row[ri[j]], ri[j], row[ri[i]], ri[i]) ? ri[j++] : ri[i++];
            while (i < mid) tmp[o++] = ri[i++];
            while (j < hi) tmp[o++] = ri[j++];
        }
        memcpy(ri, tmp, (size_t)m * sizeof *ri);
    }
}

/* One query over its row (contiguous, nc floats). */
static void eval_query(const ctx_t *c, int64_t q, const float *row, scratch_t *sc,
                       query_result *out)
{
    const int64_t nc = c->nc;
    const tm_ties ties = c->p->ties;
    memset(out, 0, sizeof *out);
    out->bad = first_bad(row, nc);
    if (out->bad >= 0) return;
    float *rs = sc->rs;
    int64_t *ri = sc->ri, *cnt = sc->cnt;
    int64_t m = 0;
    if (!c->qid) {
        if (q < nc) {
            rs[0] = row[q];
            ri[0] = q;
            m = 1;
        }
    } else {
        const int64_t id = c->qid[q];
        if (id >= 0)
            for (int64_t k = 0; k < nc; k++)
                if (c->cid[k] == id) ri[m++] = k;
        /* candidate order, kept for skipping them below */
        memcpy(sc->order, ri, (size_t)m * sizeof *ri);
        if (m > 32) {
            sort_indices(row, ri, m, sc->tmp);
            for (int64_t i = 0; i < m; i++) rs[i] = row[ri[i]];
        } else {
            for (int64_t i = 0; i < m; i++) rs[i] = row[ri[i]];
            sort_pairs(rs, ri, m);
        }
    }
    out->m = m;
    if (m == 0) return;

    /* cnt[i]: irrelevant candidates whose first outranked relevant one is
     * i (m: they outrank none) */
    memset(cnt, 0, (size_t)(m + 1) * sizeof *cnt);
    if (m == 1) {
        /* one relevant candidate r at index j: count what ranks before it */
        float r = rs[0];
        int64_t j = ri[0];
        int64_t above;
        if (ties == TM_TIES_PESSIMISTIC) above = count_above(row, nc, r, 1) - 1;
        else if (ties == TM_TIES_OPTIMISTIC) above = count_above(row, nc, r, 0);
        else above = count_above(row, nc, r, 0) + count_above(row, j, r, 1) - count_above(row, j, r, 0);
        cnt[0] = above;
    } else {
        const float lo = rs[m - 1], hi = rs[0];
        int64_t next = 0; /* next relevant candidate, in candidate order */
        const int64_t *order = sc->order;
        for (int64_t k = 0; k < nc; k++) {
            if (next < m && order[next] == k) {
                next++;
                continue;
            }
            float s = row[k];
            int64_t i;
            if (s < lo) i = m;       /* below every relevant one */
            else if (s > hi) i = 0;  /* above every relevant one */
            else if (ties == TM_TIES_BY_INDEX) {
                /* past those scoring more, then past equal ones of lower index */
                i = prefix_above(rs, m, s, 0);
                while (i < m && rs[i] == s && ri[i] < k) i++;
            } else {
                /* pessimistic: it outranks relevant ones with score <= s,
                 * so skips those > s; optimistic: skips those >= s */
                i = prefix_above(rs, m, s, ties == TM_TIES_OPTIMISTIC);
            }
            cnt[i]++;
        }
    }
    /* position of relevant i: i + 1 + irrelevant candidates before it */
    int64_t above = 0;
    double ap = 0;
    const int n_k = c->p->n_k;
    for (int64_t i = 0; i < m; i++) {
        above += cnt[i];
        int64_t pos = i + 1 + above;
        if (i == 0) out->first = pos;
        ap += (double)(i + 1) / (double)pos;
        for (int j = 0; j < n_k; j++)
            if (pos <= c->p->k[j]) out->hits[j]++;
    }
    out->ap = ap / (double)m;
}

static void eval_range(void *vctx, int64_t begin, int64_t end)
{
    ctx_t *c = vctx;
    const int64_t nc = c->nc;
    const int tr = c->p->transposed;
    const int64_t group = c->group;
    size_t n_f, n_i, n_cnt, n_buf = 0, bytes;
    if (!tm_mul_size((size_t)nc, sizeof(float), &n_f) ||
        !tm_mul_size((size_t)nc, sizeof(int64_t), &n_i) ||
        !tm_mul_size((size_t)nc + 1, sizeof(int64_t), &n_cnt) ||
        (tr && !tm_mul_size(n_f, (size_t)group, &n_buf)) || !tm_add_size(n_f, 3 * n_i, &bytes) ||
        !tm_add_size(bytes, n_cnt, &bytes) || !tm_add_size(bytes, n_buf, &bytes) ||
        !tm_add_size(bytes, 64, &bytes)) {
        atomic_store(&c->nomem, 1);
        return;
    }
    char *mem = tm_alloc(bytes);
    if (!mem) {
        atomic_store(&c->nomem, 1);
        return;
    }
    scratch_t sc;
    sc.ri = (int64_t *)mem;
    sc.tmp = (int64_t *)(mem + n_i);
    sc.order = (int64_t *)(mem + 2 * n_i);
    sc.cnt = (int64_t *)(mem + 3 * n_i);
    sc.rs = (float *)(mem + 3 * n_i + n_cnt);
    float *buf = (float *)(mem + 3 * n_i + n_cnt + ((n_f + 63) & ~(size_t)63));
    if (!tr) {
        for (int64_t q = begin; q < end; q++) eval_query(c, q, c->sim + q * nc, &sc, &c->res[q]);
    } else {
        for (int64_t q0 = begin; q0 < end; q0 += group) {
            int64_t g = end - q0 < group ? end - q0 : group;
            /* 16 rows at a time: reads g contiguous floats of each row,
             * writes 16 contiguous floats of each buffered query */
            for (int64_t k0 = 0; k0 < nc; k0 += 16) {
                int64_t kn = nc - k0 < 16 ? nc - k0 : 16;
                for (int64_t j = 0; j < g; j++) {
                    float *dst = buf + j * nc + k0;
                    const float *src = c->sim + k0 * c->nq + q0 + j;
                    for (int64_t kk = 0; kk < kn; kk++) dst[kk] = src[kk * c->nq];
                }
            }
            for (int64_t j = 0; j < g; j++)
                eval_query(c, q0 + j, buf + j * nc, &sc, &c->res[q0 + j]);
        }
    }
    tm_free(mem);
}

tm_retrieval_params tm_retrieval_default_params(void)
{
    tm_retrieval_params p;
    memset(&p, 0, sizeof p);
    p.n_k = 3;
    p.k[0] = 1;
    p.k[1] = 5;
    p.k[2] = 10;
    p.ties = TM_TIES_PESSIMISTIC;
    p.transposed = 0;
    return p;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

tm_status tm_retrieval_eval(const float *sim, int64_t n_queries, int64_t n_candidates,
                            const int64_t *query_ids, const int64_t *candidate_ids,
                            const tm_retrieval_params *params, tm_retrieval_result *out,
                            int64_t *first_rank)
{
    static const char *fn = "tm_retrieval_eval";
    tm_retrieval_params p = params ? *params : tm_retrieval_default_params();
    if (!sim || !out) return tm_fail(TM_ERR_INVALID, "%s: sim and out must not be NULL", fn);
    if (n_queries <= 0 || n_candidates <= 0)
        return tm_fail(TM_ERR_INVALID,
                       "%s: %lld queries x %lld candidates: both counts must be > 0", fn,
                       (long long)n_queries, (long long)n_candidates);
    size_t total;
    if (!tm_mul_size((size_t)n_queries, (size_t)n_candidates, &total) ||
        total > (size_t)INT64_MAX / sizeof(float))
        return tm_fail(TM_ERR_NOMEM, "%s: %lld x %lld similarity matrix is too large", fn,
                       (long long)n_queries, (long long)n_candidates);
    if (!query_ids != !candidate_ids)
        return tm_fail(TM_ERR_INVALID,
                       "%s: give both query_ids and candidate_ids, or neither (then query "
                       "i matches candidate i)",
                       fn);
    if (p.n_k < 1 || p.n_k > TM_RETRIEVAL_MAX_K)
        return tm_fail(TM_ERR_INVALID, "%s: n_k = %d, must be 1..%d", fn, p.n_k,
                       TM_RETRIEVAL_MAX_K);
    for (int j = 0; j < p.n_k; j++)
        if (p.k[j] <= 0)
            return tm_fail(TM_ERR_INVALID, "%s: k[%d] = %lld, every cutoff must be > 0", fn, j,
                           (long long)p.k[j]);
    if (p.ties < TM_TIES_PESSIMISTIC || p.ties > TM_TIES_BY_INDEX)
        return tm_fail(TM_ERR_INVALID, "%s: unknown ties mode %d", fn, (int)p.ties);

    query_result *res = tm_calloc((size_t)n_queries, sizeof *res);
    if (!res) return tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    int64_t group = (int64_t)(GATHER_BYTES / ((size_t)n_candidates * sizeof(float)));
    if (group < 16) group = 16;
    if (group > GATHER_MAX) group = GATHER_MAX;
    ctx_t c = {sim, n_queries, n_candidates, query_ids, candidate_ids, &p, res, group, 0};
    tm_parallel_range(n_queries, n_queries * n_candidates, eval_range, &c);
    if (atomic_load(&c.nomem)) {
        tm_free(res);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    }
    for (int64_t q = 0; q < n_queries; q++) {
        if (res[q].bad >= 0) {
            int64_t k = res[q].bad;
            float v = p.transposed ? sim[k * n_queries + q] : sim[q * n_candidates + k];
            tm_free(res);
            return tm_fail(TM_ERR_INVALID,
                           "%s: similarity of query %lld and candidate %lld is %g; scores "
                           "must be finite (check the embeddings for NaN)",
                           fn, (long long)q, (long long)k, (double)v);
        }
    }
    tm_retrieval_result r;
    memset(&r, 0, sizeof r);
    r.n_queries = n_queries;
    r.n_k = p.n_k;
    memcpy(r.k, p.k, sizeof r.k);
    double sum_rr = 0, sum_ap = 0, sum_rank = 0;
    double hit[TM_RETRIEVAL_MAX_K] = {0}, relrec[TM_RETRIEVAL_MAX_K] = {0},
           prec[TM_RETRIEVAL_MAX_K] = {0};
    for (int64_t q = 0; q < n_queries; q++) {
        const query_result *x = &res[q];
        if (x->m == 0) continue;
        r.n_valid++;
        sum_rr += 1.0 / (double)x->first;
        sum_ap += x->ap;
        sum_rank += (double)x->first;
        for (int j = 0; j < p.n_k; j++) {
            hit[j] += x->first <= p.k[j] ? 1.0 : 0.0;
            relrec[j] += (double)x->hits[j] / (double)x->m;
            prec[j] += (double)x->hits[j] / (double)p.k[j];
        }
    }
    r.n_no_relevant = n_queries - r.n_valid;
    if (r.n_valid == 0) {
        tm_free(res);
        return tm_fail(TM_ERR_INVALID,
                       "%s: none of the %lld queries has a relevant candidate; check the ids "
                       "(query i matches candidate c when query_ids[i] == candidate_ids[c])",
                       fn, (long long)n_queries);
    }
    double nv = (double)r.n_valid;
    for (int j = 0; j < p.n_k; j++) {
        r.recall_at_k[j] = hit[j] / nv;
        r.relevant_recall_at_k[j] = relrec[j] / nv;
        r.precision_at_k[j] = prec[j] / nv;
    }
    r.mrr = sum_rr / nv;
    r.map = sum_ap / nv;
    r.mean_rank = sum_rank / nv;
    /* median of the first ranks */
    int64_t *ranks = tm_alloc((size_t)r.n_valid * sizeof *ranks);
    if (!ranks) {
        tm_free(res);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", fn);
    }
    int64_t nr = 0;
    for (int64_t q = 0; q < n_queries; q++)
        if (res[q].m) ranks[nr++] = res[q].first;
    qsort(ranks, (size_t)nr, sizeof *ranks, cmp_i64);
    r.median_rank = nr % 2 ? (double)ranks[nr / 2]
                           : 0.5 * ((double)ranks[nr / 2 - 1] + (double)ranks[nr / 2]);
    tm_free(ranks);
    if (first_rank)
        for (int64_t q = 0; q < n_queries; q++) first_rank[q] = res[q].first;
    tm_free(res);
    *out = r;
    return TM_OK;
}
