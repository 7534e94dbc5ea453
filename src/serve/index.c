/* The search index: every item of a manifest embedded per modality,
 * stored as a safetensors file. Four types (docs/search.md): exact (f32
 * rows, the engine's GEMM), exact-int8 (int8 rows with a scale each) and,
 * through FAISS (faiss_shim.h), ivf and hnsw. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "serve/faiss_shim.h"
#include "serve/serve_internal.h"
#include "trimodal/io.h"
#include "trimodal/ops.h"

#define SLOTS 3 /* text, vision, audio */
#define ITEM_TEXT_MAX 200
#define SEARCH_BLOCK 16384

static const unsigned slot_bit[SLOTS] = {TM_MODALITY_TEXT, TM_MODALITY_IMAGE, TM_MODALITY_AUDIO};
static const char *const slot_name[SLOTS] = {"text", "vision", "audio"};

struct tm_index {
    int64_t count, dim;
    int64_t rows[SLOTS];
    float *emb[SLOTS];    /* (rows, dim); owned when st is NULL */
    int32_t *item[SLOTS]; /* (rows) */
    char **field[4];      /* id, text, image, audio per item (NULL when absent) */
    char model[256];
    char fingerprint[17];
    tm_safetensors *st; /* a loaded index maps its file */
    tm_index_type type;
    int nlist, nprobe, hnsw_m, ef_search, ef_construction; /* ivf, hnsw settings */
    int8_t *q8[SLOTS];    /* exact-int8: (rows, dim); owned when st is NULL */
    float *scale[SLOTS];  /* exact-int8: (rows), row r is q8[r] * scale[r] */
    tm_faiss *fx[SLOTS];  /* ivf, hnsw: FAISS's index of emb rows */
};

static const char *const type_name[TM_INDEX_TYPE_COUNT] = {"exact", "exact-int8", "ivf", "hnsw"};

#define DEFAULT_HNSW_M 32
#define DEFAULT_EF_SEARCH 64
#define DEFAULT_EF_CONSTRUCTION 40

static const char *const field_key[4] = {"id", "text", "image", "audio"};

static tm_status index_finish(tm_index *idx, const tm_index_build_params *p);

static int slot_of(unsigned bit)
{
    for (int k = 0; k < SLOTS; k++)
        if (slot_bit[k] == bit) return k;
    return -1;
}

tm_index_build_params tm_index_build_default_params(void)
{
    tm_index_build_params p;
    memset(&p, 0, sizeof p);
    return p;
}

void tm_index_free(tm_index *idx)
{
    if (!idx) return;
    if (!idx->st)
        for (int k = 0; k < SLOTS; k++) {
            free(idx->emb[k]);
            free(idx->item[k]);
            free(idx->q8[k]);
            free(idx->scale[k]);
        }
    for (int k = 0; k < SLOTS; k++)
        tm_faiss_free(idx->fx[k]);
    for (int f = 0; f < 4; f++) {
        if (idx->field[f])
            for (int64_t i = 0; i < idx->count; i++)
                free(idx->field[f][i]);
        free(idx->field[f]);
    }
    tm_safetensors_close(idx->st);
    free(idx);
}

static tm_index *index_alloc(int64_t count)
{
    tm_index *idx = calloc(1, sizeof *idx);
    if (!idx) return NULL;
    idx->count = count;
    for (int f = 0; f < 4; f++)
        if (!(idx->field[f] = calloc((size_t)(count ? count : 1), sizeof(char *)))) {
            tm_index_free(idx);
            return NULL;
        }
    return idx;
}

/* ------------------------------------------------------------- building */

typedef struct {
    tm_session *s;
    const tm_manifest *m;
    const int64_t *rows;
    tm_example **ex;
    tm_status *status;
    char (*msg)[512];
} prep_ctx;

static void prep_task(void *vc, int64_t i, int64_t n)
{
    (void)n;
    prep_ctx *c = vc;
    const tm_manifest_row *r = tm_manifest_row_at(c->m, c->rows[i]);
    char *img = NULL, *aud = NULL;
    size_t ni = 0, na = 0;
    tm_status st = TM_OK;
    const char *what = "";
    size_t max_media = (size_t)tm_limit_get(TM_LIMIT_INDEX_MEDIA_BYTES);
    if (r->image_path) {
        what = r->image;
        st = tm_read_file(r->image_path, max_media, &img, &ni);
    }
    if (!st && r->audio_path) {
        what = r->audio;
        st = tm_read_file(r->audio_path, max_media, &aud, &na);
    }
    if (st == TM_ERR_LIMIT)
        tm_fail(st, "%s (limit %s)", tm_last_error(), tm_limit_hint(TM_LIMIT_INDEX_MEDIA_BYTES));
    if (!st) {
        what = NULL;
        tm_session_input in = {r->text, r->text_len, img, ni, aud, na};
        st = tm_session_prepare(c->s, &in, &c->ex[i]);
    }
    if (st) {
        if (what)
            snprintf(c->msg[i], sizeof c->msg[i], "%s:%lld: '%s': %s", tm_manifest_path(c->m),
                     (long long)r->line, what, tm_last_error());
        else
            snprintf(c->msg[i], sizeof c->msg[i], "%s:%lld: %s", tm_manifest_path(c->m),
                     (long long)r->line, tm_last_error());
    }
    c->status[i] = st;
    tm_free(img);
    tm_free(aud);
}

static char *dup_cut(const char *s, size_t max)
{
    if (!s) return NULL;
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--; /* keep UTF-8 whole */
    }
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

tm_status tm_index_build(tm_index **out, tm_session *s, const tm_manifest *m,
                         const tm_index_build_params *params, int64_t *skipped)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "index_build: NULL out");
    *out = NULL;
    if (skipped) *skipped = 0;
    if (!s || !m) return tm_fail(TM_ERR_INVALID, "index_build: NULL session or manifest");
    if (!tm_session_can_embed(s))
        return tm_fail(TM_ERR_INVALID,
                       "index_build: the model '%s' has no contrastive heads, "
                       "so it cannot embed items for search",
                       tm_session_name(s));
    tm_index_build_params p = params ? *params : tm_index_build_default_params();
    int64_t *rows = NULL, n = 0;
    tm_status st = tm_manifest_split_rows(m, p.split, &rows, &n);
    if (st) return st;
    if (n == 0) {
        tm_free(rows);
        return p.split
                   ? tm_fail(TM_ERR_INVALID, "index_build: %s has no rows in split '%s'",
                             tm_manifest_path(m), p.split)
                   : tm_fail(TM_ERR_INVALID, "index_build: %s has no rows", tm_manifest_path(m));
    }
    tm_model_info info = tm_session_info(s);
    int64_t E = info.embed_dim, M = info.n_modalities;
    int B = tm_session_get_params(s).max_batch;
    tm_index *idx = index_alloc(n);
    tm_example **ex = calloc((size_t)B, sizeof *ex);
    tm_example **ok = calloc((size_t)B, sizeof *ok);
    tm_status *sts = calloc((size_t)B, sizeof *sts);
    char(*msg)[512] = calloc((size_t)B, sizeof *msg);
    float *emb = malloc((size_t)B * (size_t)(M * E) * sizeof *emb);
    int col[SLOTS];
    for (int k = 0; k < SLOTS; k++)
        col[k] = tm_session_column(s, slot_bit[k]);
    if (!idx || !ex || !ok || !sts || !msg || !emb) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    for (int k = 0; !st && k < SLOTS; k++)
        if (col[k] >= 0 && (!(idx->emb[k] = malloc((size_t)n * (size_t)E * sizeof(float))) ||
                            !(idx->item[k] = malloc((size_t)n * sizeof(int32_t)))))
            st = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (!st) {
        idx->dim = E;
        snprintf(idx->model, sizeof idx->model, "%s", tm_session_name(s));
        snprintf(idx->fingerprint, sizeof idx->fingerprint, "%s", tm_session_fingerprint(s));
    }
    int64_t kept = 0, bad = 0;
    for (int64_t at = 0; !st && at < n; at += B) {
        int nb = (int)(n - at < B ? n - at : B);
        prep_ctx c = {s, m, rows + at, ex, sts, msg};
        memset(ex, 0, (size_t)B * sizeof *ex);
        tm_parallel_for(nb, prep_task, &c);
        int nok = 0;
        for (int i = 0; i < nb; i++) {
            if (sts[i] == TM_OK) {
                ok[nok++] = ex[i];
                continue;
            }
            if (p.skip_bad) {
                bad++;
                continue;
            }
            if (!st)
                st = tm_fail(sts[i], "%s (use skip_bad / --skip-bad to leave such rows out)",
                             msg[i]);
        }
        if (!st && nok) st = tm_session_embed(s, ok, nok, emb);
        for (int i = 0, j = 0; !st && i < nb; i++) {
            if (sts[i] != TM_OK) continue;
            const tm_manifest_row *r = tm_manifest_row_at(m, rows[at + i]);
            int64_t item = kept++;
            for (int k = 0; k < SLOTS; k++) {
                if (col[k] < 0 || !(tm_example_present(ex[i]) & slot_bit[k])) continue;
                int64_t rr = idx->rows[k]++;
                memcpy(idx->emb[k] + rr * E, emb + ((int64_t)j * M + col[k]) * E,
                       (size_t)E * sizeof(float));
                idx->item[k][rr] = (int32_t)item;
            }
            const char *fv[4] = {r->id, r->text, r->image, r->audio};
            for (int f = 0; f < 4; f++)
                if (fv[f] && !(idx->field[f][item] =
                                   dup_cut(fv[f], f == 1 ? ITEM_TEXT_MAX : (size_t)1 << 20)))
                    st = tm_fail(TM_ERR_NOMEM, "out of memory");
            j++;
        }
        for (int i = 0; i < nb; i++)
            tm_example_free(ex[i]);
        if (!st && p.progress) p.progress(p.progress_ctx, at + nb, n);
    }
    tm_free(rows);
    free(ex);
    free(ok);
    free(sts);
    free(msg);
    free(emb);
    if (!st && kept == 0) st = tm_fail(TM_ERR_INVALID, "index_build: every row was left out");
    if (st) {
        tm_index_free(idx);
        return st;
    }
    /* items after the last kept one were never filled: shrink the count */
    for (int64_t i = kept; i < idx->count; i++)
        for (int f = 0; f < 4; f++)
            free(idx->field[f][i]), idx->field[f][i] = NULL;
    idx->count = kept;
    if ((st = index_finish(idx, &p))) {
        tm_index_free(idx);
        return st;
    }
    if (skipped) *skipped = bad;
    *out = idx;
    return TM_OK;
}

/* ----------------------------------------------------------- index types */

const char *tm_index_type_name(tm_index_type t)
{
    return (unsigned)t < TM_INDEX_TYPE_COUNT ? type_name[t] : "unknown";
}

tm_status tm_index_type_from_name(const char *name, tm_index_type *out)
{
    for (int t = 0; name && t < TM_INDEX_TYPE_COUNT; t++)
        if (!strcmp(name, type_name[t])) {
            if (out) *out = (tm_index_type)t;
            return TM_OK;
        }
    return tm_fail(TM_ERR_INVALID,
                   "unknown index type '%s': use exact, exact-int8, ivf or hnsw",
                   name ? name : "(null)");
}

int tm_index_type_available(tm_index_type t)
{
#ifdef TM_HAVE_FAISS
    return (unsigned)t < TM_INDEX_TYPE_COUNT;
#else
    return t == TM_INDEX_EXACT || t == TM_INDEX_EXACT_INT8;
#endif
}

static tm_status faiss_status(int code, const char *what, const char *msg)
{
    tm_status st = code == TM_FAISS_NOMEM     ? TM_ERR_NOMEM
                   : code == TM_FAISS_FORMAT  ? TM_ERR_FORMAT
                   : code == TM_FAISS_ABSENT  ? TM_ERR_UNSUPPORTED
                                              : TM_ERR_INVALID;
    return tm_fail(st, "%s: %s", what, msg);
}

/* Checks the type's settings and fills in the defaults for `rows` rows
 * (the largest modality). */
static tm_status resolve_params(tm_index *idx, const tm_index_build_params *p, int64_t rows)
{
    if ((unsigned)p->type >= TM_INDEX_TYPE_COUNT)
        return tm_fail(TM_ERR_INVALID, "index: unknown index type %d", (int)p->type);
    if (!tm_index_type_available(p->type)) {
        char err[512];
        tm_faiss *none = NULL;
        int code = tm_faiss_build(&none, &(tm_faiss_build_params){0}, 0, 0, NULL, err, sizeof err);
        return faiss_status(code ? code : TM_FAISS_ABSENT, "index", err);
    }
    if (p->nlist < 0 || p->nlist > (1 << 22))
        return tm_fail(TM_ERR_INVALID, "index: nlist must be 1..4194304 (0: sqrt(rows)), got %d",
                       p->nlist);
    if (p->nprobe < 0 || p->nprobe > (1 << 22))
        return tm_fail(TM_ERR_INVALID, "index: nprobe must be 1..nlist (0: default), got %d",
                       p->nprobe);
    if (p->hnsw_m && (p->hnsw_m < 2 || p->hnsw_m > 256))
        return tm_fail(TM_ERR_INVALID, "index: the HNSW M must be 2..256 (0: 32), got %d",
                       p->hnsw_m);
    if (p->ef_search < 0 || p->ef_search > 65536)
        return tm_fail(TM_ERR_INVALID, "index: ef_search must be 1..65536 (0: 64), got %d",
                       p->ef_search);
    if (p->ef_construction < 0 || p->ef_construction > 65536)
        return tm_fail(TM_ERR_INVALID,
                       "index: the HNSW ef_construction must be 1..65536 (0: 40), got %d",
                       p->ef_construction);
    idx->type = p->type;
    idx->nlist = idx->nprobe = idx->hnsw_m = idx->ef_search = idx->ef_construction = 0;
    if (p->type == TM_INDEX_IVF) {
        int64_t nl = p->nlist ? p->nlist : (int64_t)(sqrt((double)rows) + 0.5);
        idx->nlist = (int)(nl < 1 ? 1 : nl > rows ? rows : nl);
        int np = p->nprobe ? p->nprobe : (idx->nlist / 8 > 8 ? idx->nlist / 8 : 8);
        idx->nprobe = np > idx->nlist ? idx->nlist : np;
    } else if (p->type == TM_INDEX_HNSW) {
        idx->hnsw_m = p->hnsw_m ? p->hnsw_m : DEFAULT_HNSW_M;
        idx->ef_search = p->ef_search ? p->ef_search : DEFAULT_EF_SEARCH;
        idx->ef_construction = p->ef_construction ? p->ef_construction : DEFAULT_EF_CONSTRUCTION;
    }
    return TM_OK;
}

/* Row r of x as int8 with one scale: q = round(x / s), s = max |x| / 127. */
static void quantize_rows(int8_t *q, float *scale, const float *x, int64_t rows, int64_t dim)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *v = x + r * dim;
        float m = 0.0f;
        for (int64_t d = 0; d < dim; d++)
            m = fabsf(v[d]) > m ? fabsf(v[d]) : m;
        float s = m > 0.0f ? m / 127.0f : 1.0f, inv = 1.0f / s;
        for (int64_t d = 0; d < dim; d++) {
            float t = nearbyintf(v[d] * inv);
            q[r * dim + d] = (int8_t)(t > 127.0f ? 127.0f : t < -127.0f ? -127.0f : t);
        }
        scale[r] = s;
    }
}

/* Turns a freshly built exact index (owned f32 rows) into the type of p:
 * quantises the rows or hands them to FAISS, then frees them. */
static tm_status index_finish(tm_index *idx, const tm_index_build_params *p)
{
    int64_t most = 0;
    for (int k = 0; k < SLOTS; k++)
        most = idx->rows[k] > most ? idx->rows[k] : most;
    tm_status st = resolve_params(idx, p, most ? most : 1);
    for (int k = 0; !st && k < SLOTS; k++) {
        int64_t n = idx->rows[k], dim = idx->dim;
        if (!n || idx->type == TM_INDEX_EXACT) continue;
        if (idx->type == TM_INDEX_EXACT_INT8) {
            idx->q8[k] = malloc((size_t)(n * dim));
            idx->scale[k] = malloc((size_t)n * sizeof(float));
            if (!idx->q8[k] || !idx->scale[k]) {
                st = tm_fail(TM_ERR_NOMEM, "index: out of memory for %lld int8 rows",
                             (long long)n);
                break;
            }
            quantize_rows(idx->q8[k], idx->scale[k], idx->emb[k], n, dim);
        } else {
            tm_faiss_build_params fp = {0};
            fp.kind = idx->type == TM_INDEX_IVF ? TM_FAISS_IVF : TM_FAISS_HNSW;
            fp.nlist = idx->nlist < n ? idx->nlist : (int)n;
            fp.hnsw_m = idx->hnsw_m;
            fp.ef_construction = idx->ef_construction;
            fp.threads = tm_get_num_threads();
            char err[512];
            int code = tm_faiss_build(&idx->fx[k], &fp, dim, n, idx->emb[k], err, sizeof err);
            if (!code && idx->type == TM_INDEX_HNSW)
                code = tm_faiss_set_ef_search(idx->fx[k], idx->ef_search, err, sizeof err);
            if (code) {
                st = faiss_status(code, "index build", err);
                break;
            }
        }
        free(idx->emb[k]);
        idx->emb[k] = NULL;
    }
    return st;
}

tm_status tm_index_from_vectors(tm_index **out, const float *vectors, int64_t n, int64_t dim,
                                unsigned modality, const tm_index_build_params *params)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "index_from_vectors: NULL out");
    *out = NULL;
    int k = slot_of(modality);
    if (!vectors || n < 1 || n > INT32_MAX || dim < 1 || dim > (1 << 20) || k < 0)
        return tm_fail(TM_ERR_INVALID,
                       "index_from_vectors: give 1..2^31-1 vectors of 1..2^20 values and one "
                       "modality bit");
    for (int64_t v = 0; v < n * dim; v++)
        if (!isfinite(vectors[v]))
            return tm_fail(TM_ERR_INVALID, "index_from_vectors: vector %lld is not finite",
                           (long long)(v / dim));
    tm_index_build_params p = params ? *params : tm_index_build_default_params();
    tm_index *idx = index_alloc(n);
    tm_status st = idx ? TM_OK : tm_fail(TM_ERR_NOMEM, "out of memory");
    if (!st && (!(idx->emb[k] = malloc((size_t)(n * dim) * sizeof(float))) ||
                !(idx->item[k] = malloc((size_t)n * sizeof(int32_t)))))
        st = tm_fail(TM_ERR_NOMEM, "index_from_vectors: out of memory for %lld rows",
                     (long long)n);
    for (int64_t i = 0; !st && i < n; i++) {
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long)i);
        idx->item[k][i] = (int32_t)i;
        if (!(idx->field[0][i] = strdup(id))) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    if (!st) {
        memcpy(idx->emb[k], vectors, (size_t)(n * dim) * sizeof(float));
        idx->rows[k] = n;
        idx->dim = dim;
        snprintf(idx->model, sizeof idx->model, "vectors");
        snprintf(idx->fingerprint, sizeof idx->fingerprint, "0000000000000000");
        st = index_finish(idx, &p);
    }
    if (st) {
        tm_index_free(idx);
        return st;
    }
    *out = idx;
    return TM_OK;
}

tm_index_build_params tm_index_params(const tm_index *idx)
{
    tm_index_build_params p = tm_index_build_default_params();
    if (!idx) return p;
    p.type = idx->type;
    p.nlist = idx->nlist;
    p.nprobe = idx->nprobe;
    p.hnsw_m = idx->hnsw_m;
    p.ef_search = idx->ef_search;
    p.ef_construction = idx->ef_construction;
    return p;
}

tm_status tm_index_set_search(tm_index *idx, int nprobe, int ef_search)
{
    if (!idx) return tm_fail(TM_ERR_INVALID, "index_set_search: NULL index");
    if (nprobe < 0 || (idx->type == TM_INDEX_IVF && nprobe > idx->nlist))
        return tm_fail(TM_ERR_INVALID, "nprobe must be 1..%d (the index's nlist), got %d",
                       idx->type == TM_INDEX_IVF ? idx->nlist : 0, nprobe);
    if (ef_search < 0 || ef_search > 65536)
        return tm_fail(TM_ERR_INVALID, "ef_search must be 1..65536, got %d", ef_search);
    if (idx->type == TM_INDEX_IVF && nprobe) idx->nprobe = nprobe;
    if (idx->type == TM_INDEX_HNSW && ef_search) {
        /* FAISS 1.7.3 searches with the graph's own efSearch (faiss_shim.h) */
        for (int k = 0; k < SLOTS; k++) {
            char err[512];
            if (idx->fx[k] && tm_faiss_set_ef_search(idx->fx[k], ef_search, err, sizeof err))
                return faiss_status(TM_FAISS_INVALID, "index_set_search", err);
        }
        idx->ef_search = ef_search;
    }
    return TM_OK;
}

/* ------------------------------------------------------------ the file */

tm_status tm_index_save(const tm_index *idx, const char *path)
{
    if (!idx || !path) return tm_fail(TM_ERR_INVALID, "index_save: NULL index or path");
    tm_tensor t[3 * SLOTS];
    tm_named_tensor nt[3 * SLOTS];
    char names[3 * SLOTS][32];
    unsigned char *blob[SLOTS] = {NULL};
    int n = 0;
    tm_status st = TM_OK;
    for (int k = 0; !st && k < SLOTS; k++) {
        if (!idx->rows[k]) continue;
        int64_t rows = idx->rows[k];
        tm_tensor *e = &t[n];
        memset(e, 0, sizeof *e);
        if (idx->type == TM_INDEX_EXACT || idx->type == TM_INDEX_EXACT_INT8) {
            int q = idx->type == TM_INDEX_EXACT_INT8;
            e->dtype = q ? TM_I8 : TM_F32;
            e->ndim = 2;
            e->shape[0] = rows;
            e->shape[1] = idx->dim;
            e->stride[0] = idx->dim;
            e->stride[1] = 1;
            e->data = q ? (void *)idx->q8[k] : (void *)idx->emb[k];
            snprintf(names[n], sizeof names[n], "%s.%s", q ? "emb8" : "emb", slot_name[k]);
            nt[n] = (tm_named_tensor){names[n], e};
            n++;
            if (q) {
                tm_tensor *sc = &t[n];
                memset(sc, 0, sizeof *sc);
                sc->dtype = TM_F32;
                sc->ndim = 1;
                sc->shape[0] = rows;
                sc->stride[0] = 1;
                sc->data = idx->scale[k];
                snprintf(names[n], sizeof names[n], "scale.%s", slot_name[k]);
                nt[n] = (tm_named_tensor){names[n], sc};
                n++;
            }
        } else {
            size_t len = 0;
            char err[512];
            int code = tm_faiss_serialize(idx->fx[k], &blob[k], &len, err, sizeof err);
            if (code) {
                st = faiss_status(code, "index_save", err);
                break;
            }
            e->dtype = TM_I8;
            e->ndim = 1;
            e->shape[0] = (int64_t)len;
            e->stride[0] = 1;
            e->data = blob[k];
            snprintf(names[n], sizeof names[n], "faiss.%s", slot_name[k]);
            nt[n] = (tm_named_tensor){names[n], e};
            n++;
        }
        tm_tensor *it = &t[n];
        memset(it, 0, sizeof *it);
        it->dtype = TM_I32;
        it->ndim = 1;
        it->shape[0] = rows;
        it->stride[0] = 1;
        it->data = idx->item[k];
        snprintf(names[n], sizeof names[n], "item.%s", slot_name[k]);
        nt[n] = (tm_named_tensor){names[n], it};
        n++;
    }
    cJSON *items = st ? NULL : cJSON_CreateArray();
    if (!st && !items) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; !st && i < idx->count; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(items, o)) {
            cJSON_Delete(o);
            st = tm_fail(TM_ERR_NOMEM, "out of memory");
            break;
        }
        for (int f = 0; f < 4; f++)
            if (idx->field[f][i] && !cJSON_AddStringToObject(o, field_key[f], idx->field[f][i]))
                st = tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    char *items_text = st ? NULL : cJSON_PrintUnformatted(items);
    cJSON_Delete(items);
    if (!st && !items_text) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    char dim[32], count[32], mods[64] = "";
    snprintf(dim, sizeof dim, "%lld", (long long)idx->dim);
    snprintf(count, sizeof count, "%lld", (long long)idx->count);
    for (int k = 0; k < SLOTS; k++)
        if (idx->rows[k]) {
            if (mods[0]) strcat(mods, ",");
            strcat(mods, slot_name[k]);
        }
    char nlist[16], nprobe[16], hnsw_m[16], ef[16], efc[16];
    snprintf(nlist, sizeof nlist, "%d", idx->nlist);
    snprintf(nprobe, sizeof nprobe, "%d", idx->nprobe);
    snprintf(hnsw_m, sizeof hnsw_m, "%d", idx->hnsw_m);
    snprintf(ef, sizeof ef, "%d", idx->ef_search);
    snprintf(efc, sizeof efc, "%d", idx->ef_construction);
    const char *keys[] = {"format", "version", "model",  "fingerprint", "dim",
                          "count",  "modalities", "items", "type", "nlist",
                          "nprobe", "hnsw_m",  "ef_search", "ef_construction"};
    const char *vals[] = {"trimodal-index", "1",    idx->model,  idx->fingerprint,
                          dim,              count,  mods,        items_text,
                          tm_index_type_name(idx->type), nlist, nprobe, hnsw_m, ef, efc};
    if (!st) st = tm_safetensors_write(path, nt, n, keys, vals, 14);
    free(items_text);
    for (int k = 0; k < SLOTS; k++)
        free(blob[k]);
    return st;
}

static int parse_count(const char *s, int64_t max, int64_t *out)
{
    if (!s || !*s) return 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end || v < 0 || v > max) return 0;
    *out = v;
    return 1;
}

tm_status tm_index_load(tm_index **out, const char *path)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "index_load: NULL out");
    *out = NULL;
    if (!path) return tm_fail(TM_ERR_INVALID, "index_load: NULL path");
    tm_safetensors *st_file = NULL;
    tm_status st = tm_safetensors_open(&st_file, path);
    if (st) return st;
    const char *fmt = tm_safetensors_metadata(st_file, "format");
    const char *ver = tm_safetensors_metadata(st_file, "version");
    int64_t dim = 0, count = 0;
    if (!fmt || strcmp(fmt, "trimodal-index"))
        st = tm_fail(TM_ERR_FORMAT,
                     "%s: not a trimodal index (no format \"trimodal-index\" in "
                     "its metadata); build one with trimodal search build",
                     path);
    else if (!ver || strcmp(ver, "1"))
        st = tm_fail(TM_ERR_FORMAT, "%s: index version %s, this trimodal reads version 1", path,
                     ver ? ver : "(none)");
    else if (!parse_count(tm_safetensors_metadata(st_file, "dim"), 1 << 20, &dim) || dim < 1)
        st = tm_fail(TM_ERR_FORMAT, "%s: bad \"dim\" in the metadata", path);
    else if (!parse_count(tm_safetensors_metadata(st_file, "count"), INT32_MAX, &count))
        st = tm_fail(TM_ERR_FORMAT, "%s: bad \"count\" in the metadata", path);
    /* the type (files from before types were exact) and its settings */
    tm_index_type type = TM_INDEX_EXACT;
    int64_t set[4] = {0}; /* nlist, nprobe, hnsw_m, ef_search */
    static const char *const set_key[4] = {"nlist", "nprobe", "hnsw_m", "ef_search"};
    const char *type_text = tm_safetensors_metadata(st_file, "type");
    if (!st && type_text && tm_index_type_from_name(type_text, &type))
        st = tm_fail(TM_ERR_FORMAT,
                     "%s: unknown index type '%.40s' (this trimodal reads exact, exact-int8, "
                     "ivf and hnsw)",
                     path, type_text);
    if (!st && !tm_index_type_available(type)) {
        char err[512];
        tm_faiss *none = NULL;
        int code = tm_faiss_deserialize(&none, 0, 0, 0, NULL, 0, err, sizeof err);
        st = faiss_status(code ? code : TM_FAISS_ABSENT, path, err);
    }
    for (int i = 0; !st && type_text && i < 4; i++)
        if (!parse_count(tm_safetensors_metadata(st_file, set_key[i]), 1 << 22, &set[i]))
            st = tm_fail(TM_ERR_FORMAT, "%s: bad \"%s\" in the metadata", path, set_key[i]);
    if (!st && type == TM_INDEX_IVF && (set[0] < 1 || set[1] < 1 || set[1] > set[0]))
        st = tm_fail(TM_ERR_FORMAT, "%s: an ivf index needs 1 <= nprobe <= nlist", path);
    if (!st && type == TM_INDEX_HNSW && (set[2] < 2 || set[2] > 256 || set[3] < 1 || set[3] > 65536))
        st = tm_fail(TM_ERR_FORMAT, "%s: an hnsw index needs hnsw_m 2..256, ef_search 1..65536",
                     path);
    /* ef_construction: hnsw files from before it was a setting lack it
     * (they were built with 40) */
    int64_t efc = 0;
    const char *efc_text = tm_safetensors_metadata(st_file, "ef_construction");
    if (!st && efc_text && !parse_count(efc_text, 1 << 22, &efc))
        st = tm_fail(TM_ERR_FORMAT, "%s: bad \"ef_construction\" in the metadata", path);
    if (!st && type == TM_INDEX_HNSW && !efc_text) efc = DEFAULT_EF_CONSTRUCTION;
    if (!st && type == TM_INDEX_HNSW && (efc < 1 || efc > 65536))
        st = tm_fail(TM_ERR_FORMAT, "%s: an hnsw index needs ef_construction 1..65536, got %lld",
                     path, (long long)efc);
    if (!st && (type == TM_INDEX_IVF || type == TM_INDEX_HNSW)) {
        if (!tm_safetensors_checksum(st_file))
            /* FAISS trusts its own bytes: read them only from a file whose
             * checksum says they are the ones trimodal wrote */
            st = tm_fail(TM_ERR_FORMAT,
                         "%s: an %s index without its checksum (\"__checksum__\"); rebuild it "
                         "with trimodal search build",
                         path, type_name[type]);
    }
    tm_index *idx = NULL;
    if (!st && !(idx = index_alloc(count))) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (st) {
        tm_safetensors_close(st_file);
        return st;
    }
    idx->st = st_file;
    idx->dim = dim;
    idx->type = type;
    idx->nlist = (int)set[0];
    idx->nprobe = (int)set[1];
    idx->hnsw_m = (int)set[2];
    idx->ef_search = (int)set[3];
    idx->ef_construction = type == TM_INDEX_HNSW ? (int)efc : 0;
    const char *model = tm_safetensors_metadata(st_file, "model");
    const char *fp = tm_safetensors_metadata(st_file, "fingerprint");
    snprintf(idx->model, sizeof idx->model, "%s", model ? model : "");
    snprintf(idx->fingerprint, sizeof idx->fingerprint, "%s", fp ? fp : "");
    /* items */
    const char *items_text = tm_safetensors_metadata(st_file, "items");
    cJSON *items = items_text ? cJSON_Parse(items_text) : NULL;
    if (!cJSON_IsArray(items) || cJSON_GetArraySize(items) != count)
        st = tm_fail(TM_ERR_FORMAT, "%s: \"items\" must be a JSON array of %lld items", path,
                     (long long)count);
    int64_t i = 0;
    for (const cJSON *it = items ? items->child : NULL; !st && it; it = it->next, i++) {
        if (!cJSON_IsObject(it)) {
            st = tm_fail(TM_ERR_FORMAT, "%s: item %lld is not an object", path, (long long)i);
            break;
        }
        for (int f = 0; !st && f < 4; f++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, field_key[f]);
            if (!v) {
                if (f == 0)
                    st = tm_fail(TM_ERR_FORMAT, "%s: item %lld has no id", path, (long long)i);
                continue;
            }
            if (!cJSON_IsString(v))
                st = tm_fail(TM_ERR_FORMAT, "%s: item %lld: \"%s\" is not a string", path,
                             (long long)i, field_key[f]);
            else if (!(idx->field[f][i] = strdup(v->valuestring)))
                st = tm_fail(TM_ERR_NOMEM, "out of memory");
        }
    }
    cJSON_Delete(items);
    /* tensors: per modality item.<m> and, by type, emb.<m> (exact),
     * emb8.<m> and scale.<m> (exact-int8) or faiss.<m> (ivf, hnsw) */
    const char *vec_name = type == TM_INDEX_EXACT        ? "emb"
                           : type == TM_INDEX_EXACT_INT8 ? "emb8"
                                                         : "faiss";
    int nt = tm_safetensors_count(st_file), seen = 0;
    for (int k = 0; !st && k < SLOTS; k++) {
        char en[32], in[32], sn[32];
        snprintf(en, sizeof en, "%s.%s", vec_name, slot_name[k]);
        snprintf(in, sizeof in, "item.%s", slot_name[k]);
        snprintf(sn, sizeof sn, "scale.%s", slot_name[k]);
        int ie = tm_safetensors_find(st_file, en), ii = tm_safetensors_find(st_file, in);
        if (ie < 0 && ii < 0) continue;
        if (ie < 0 || ii < 0) {
            st = tm_fail(TM_ERR_FORMAT, "%s: %s without %s", path, ie < 0 ? in : en,
                         ie < 0 ? en : in);
            break;
        }
        seen += 2;
        tm_tensor e, it;
        if ((st = tm_safetensors_get(st_file, en, &e)) ||
            (st = tm_safetensors_get(st_file, in, &it)))
            break;
        if (it.dtype != TM_I32 || it.ndim != 1 || it.shape[0] < 1) {
            st = tm_fail(TM_ERR_FORMAT, "%s: %s must be I32 of shape (rows)", path, in);
            break;
        }
        int64_t rows = it.shape[0];
        if (type == TM_INDEX_EXACT &&
            (e.dtype != TM_F32 || e.ndim != 2 || e.shape[1] != dim || e.shape[0] != rows)) {
            st = tm_fail(TM_ERR_FORMAT, "%s: %s must be F32 of shape (%lld, %lld)", path, en,
                         (long long)rows, (long long)dim);
            break;
        }
        if (type == TM_INDEX_EXACT_INT8) {
            tm_tensor sc;
            if (e.dtype != TM_I8 || e.ndim != 2 || e.shape[1] != dim || e.shape[0] != rows) {
                st = tm_fail(TM_ERR_FORMAT, "%s: %s must be I8 of shape (%lld, %lld)", path, en,
                             (long long)rows, (long long)dim);
                break;
            }
            if (tm_safetensors_find(st_file, sn) < 0) {
                st = tm_fail(TM_ERR_FORMAT, "%s: %s without %s", path, en, sn);
                break;
            }
            seen++;
            if ((st = tm_safetensors_get(st_file, sn, &sc))) break;
            if (sc.dtype != TM_F32 || sc.ndim != 1 || sc.shape[0] != rows) {
                st = tm_fail(TM_ERR_FORMAT, "%s: %s must be F32 of shape (%lld)", path, sn,
                             (long long)rows);
                break;
            }
            idx->q8[k] = e.data;
            idx->scale[k] = sc.data;
            for (int64_t r = 0; !st && r < rows; r++)
                if (!isfinite(idx->scale[k][r]) || idx->scale[k][r] < 0.0f)
                    st = tm_fail(TM_ERR_FORMAT, "%s: %s holds a bad scale", path, sn);
        }
        if (type == TM_INDEX_IVF || type == TM_INDEX_HNSW) {
            if (e.dtype != TM_I8 || e.ndim != 1 || e.shape[0] < 1) {
                st = tm_fail(TM_ERR_FORMAT, "%s: %s must be I8 bytes", path, en);
                break;
            }
            char err[512];
            int code = tm_faiss_deserialize(&idx->fx[k],
                                            type == TM_INDEX_IVF ? TM_FAISS_IVF : TM_FAISS_HNSW,
                                            dim, rows, e.data, (size_t)e.shape[0], err, sizeof err);
            if (!code && type == TM_INDEX_HNSW)
                code = tm_faiss_set_ef_search(idx->fx[k], idx->ef_search, err, sizeof err);
            if (code) {
                st = tm_fail(code == TM_FAISS_NOMEM ? TM_ERR_NOMEM : TM_ERR_FORMAT,
                             "%s: %s: %s (rebuild the index with trimodal search build)", path,
                             en, err);
                break;
            }
            if (type == TM_INDEX_HNSW &&
                tm_faiss_hnsw_ef_construction(idx->fx[k]) != idx->ef_construction) {
                st = tm_fail(TM_ERR_FORMAT,
                             "%s: %s was built with ef_construction %d but the metadata says %d "
                             "(rebuild the index with trimodal search build)",
                             path, en, tm_faiss_hnsw_ef_construction(idx->fx[k]),
                             idx->ef_construction);
                break;
            }
        }
        idx->rows[k] = rows;
        idx->item[k] = it.data;
        if (type == TM_INDEX_EXACT) idx->emb[k] = e.data;
        for (int64_t r = 0; !st && r < rows; r++)
            if (idx->item[k][r] < 0 || idx->item[k][r] >= count)
                st = tm_fail(TM_ERR_FORMAT, "%s: %s[%lld] = %d is not an item (count %lld)", path,
                             in, (long long)r, idx->item[k][r], (long long)count);
        int64_t nv = type == TM_INDEX_EXACT ? rows * dim : 0;
        for (int64_t v = 0; !st && v < nv; v++)
            if (!isfinite(idx->emb[k][v]))
                st = tm_fail(TM_ERR_FORMAT, "%s: %s holds a value that is not finite", path, en);
    }
    if (!st && seen != nt)
        st = tm_fail(TM_ERR_FORMAT,
                     "%s: unexpected tensors (a%s %s index holds only %s.<modality>%s "
                     "and item.<modality>)",
                     path, type == TM_INDEX_EXACT_INT8 ? "n" : "", type_name[type], vec_name,
                     type == TM_INDEX_EXACT_INT8 ? ", scale.<modality>" : "");
    if (st) {
        tm_index_free(idx);
        return st;
    }
    *out = idx;
    return TM_OK;
}

tm_status tm_index_check(const tm_index *idx, tm_session *s)
{
    if (!idx || !s) return tm_fail(TM_ERR_INVALID, "index_check: NULL index or session");
    int64_t E = tm_session_info(s).embed_dim;
    if (E != idx->dim)
        return tm_fail(TM_ERR_INVALID,
                       "the index holds %lld-dimensional embeddings but the "
                       "model '%s' gives %lld; rebuild the index with this model "
                       "(trimodal search build)",
                       (long long)idx->dim, tm_session_name(s), (long long)E);
    const char *fp = tm_session_fingerprint(s);
    if (strcmp(fp, idx->fingerprint))
        return tm_fail(TM_ERR_INVALID,
                       "the index was built with another model ('%s', "
                       "fingerprint %s) than '%s' (fingerprint %s); rebuild it "
                       "with this model (trimodal search build)",
                       idx->model, idx->fingerprint, tm_session_name(s), fp);
    return TM_OK;
}

int64_t tm_index_count(const tm_index *idx)
{
    return idx ? idx->count : 0;
}
int64_t tm_index_dim(const tm_index *idx)
{
    return idx ? idx->dim : 0;
}
const char *tm_index_model(const tm_index *idx)
{
    return idx ? idx->model : "";
}
const char *tm_index_fingerprint(const tm_index *idx)
{
    return idx ? idx->fingerprint : "";
}

unsigned tm_index_modalities(const tm_index *idx)
{
    unsigned b = 0;
    for (int k = 0; idx && k < SLOTS; k++)
        if (idx->rows[k]) b |= slot_bit[k];
    return b;
}

int64_t tm_index_rows(const tm_index *idx, unsigned modality)
{
    int k = slot_of(modality);
    return idx && k >= 0 ? idx->rows[k] : 0;
}

const char *tm_index_item(const tm_index *idx, int64_t i, const char *key)
{
    if (!idx || !key || i < 0 || i >= idx->count) return NULL;
    for (int f = 0; f < 4; f++)
        if (!strcmp(key, field_key[f])) return idx->field[f][i];
    return NULL;
}

/* ------------------------------------------------------------- search */

/* a worse than b: lower score, or the same score and a later item */
static int worse(const tm_search_hit *a, const tm_search_hit *b)
{
    return a->score < b->score || (a->score == b->score && a->item > b->item);
}

static void sift_down(tm_search_hit *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && worse(&h[l], &h[w])) w = l;
        if (r < n && worse(&h[r], &h[w])) w = r;
        if (w == i) return;
        tm_search_hit t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* Offers a candidate to a min-heap (root = the worst kept) of at most k. */
static void offer(tm_search_hit *h, int *n, int k, tm_search_hit c)
{
    if (*n < k) {
        int i = (*n)++;
        h[i] = c;
        while (i > 0 && worse(&h[i], &h[(i - 1) / 2])) {
            tm_search_hit t = h[i];
            h[i] = h[(i - 1) / 2];
            h[(i - 1) / 2] = t;
            i = (i - 1) / 2;
        }
    } else if (worse(&h[0], &c)) {
        h[0] = c;
        sift_down(h, *n, 0);
    }
}

static int by_rank(const void *a, const void *b)
{
    const tm_search_hit *x = a, *y = b;
    return worse(x, y) ? 1 : worse(y, x) ? -1 : 0;
}

static int by_item(const void *a, const void *b)
{
    const tm_search_hit *x = a, *y = b;
    if (x->item != y->item) return x->item < y->item ? -1 : 1;
    return by_rank(a, b);
}

/* The k best rows of slot s into the heap h (*n of them), exactly. */
static void slot_exact(const tm_index *idx, int s, const float *query, int k, float *scores,
                       tm_search_hit *h, int *n)
{
    int64_t dim = idx->dim;
    for (int64_t r0 = 0; r0 < idx->rows[s]; r0 += SEARCH_BLOCK) {
        int64_t nr = idx->rows[s] - r0 < SEARCH_BLOCK ? idx->rows[s] - r0 : SEARCH_BLOCK;
        if (idx->type == TM_INDEX_EXACT) {
            /* scores (1, nr) = query (1, dim) . emb[r0 : r0 + nr]^T */
            tm_sgemm(0, 1, 1, nr, dim, 1.0f, query, dim, idx->emb[s] + r0 * dim, dim, 0.0f,
                     scores, nr);
        } else {
            /* int8 rows: scale[r] * (q8[r] . query), summed in f32 */
            for (int64_t r = 0; r < nr; r++) {
                const int8_t *q = idx->q8[s] + (r0 + r) * dim;
                float acc[8] = {0};
                int64_t d = 0;
                for (; d + 8 <= dim; d += 8)
                    for (int j = 0; j < 8; j++)
                        acc[j] += (float)q[d + j] * query[d + j];
                float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
                            ((acc[2] + acc[6]) + (acc[3] + acc[7]));
                for (; d < dim; d++)
                    sum += (float)q[d] * query[d];
                scores[r] = sum * idx->scale[s][r0 + r];
            }
        }
        for (int64_t r = 0; r < nr; r++)
            offer(h, n, k, (tm_search_hit){idx->item[s][r0 + r], slot_bit[s], scores[r]});
    }
}

tm_status tm_index_search(const tm_index *idx, const float *query, unsigned targets, int k,
                          tm_search_hit *hits, int *n_hits)
{
    if (n_hits) *n_hits = 0;
    if (!idx || !query || !hits || !n_hits)
        return tm_fail(TM_ERR_INVALID, "index_search: NULL argument");
    if (k < 1) return tm_fail(TM_ERR_INVALID, "index_search: k must be at least 1, got %d", k);
    unsigned have = tm_index_modalities(idx);
    if (!targets) targets = have;
    if (targets & ~(unsigned)(TM_MODALITY_TEXT | TM_MODALITY_IMAGE | TM_MODALITY_AUDIO))
        return tm_fail(TM_ERR_INVALID, "index_search: unknown modality bits 0x%x", targets);
    if (!(targets & have))
        return tm_fail(TM_ERR_INVALID, "index_search: the index holds no rows of the modality "
                                       "asked for");
    for (int64_t d = 0; d < idx->dim; d++)
        if (!isfinite(query[d]))
            return tm_fail(TM_ERR_INVALID, "index_search: the query is not finite");
    /* Each modality's k best rows (an item has at most one row in each),
     * then the best row of each item among them, then the k best items. */
    int kk = (int64_t)k < idx->count ? k : (int)(idx->count ? idx->count : 1);
    int exact = idx->type == TM_INDEX_EXACT || idx->type == TM_INDEX_EXACT_INT8;
    tm_search_hit *cand = malloc((size_t)SLOTS * (size_t)kk * sizeof *cand);
    float *scores = malloc((exact ? SEARCH_BLOCK : (size_t)kk) * sizeof *scores);
    int64_t *labels = exact ? NULL : malloc((size_t)kk * sizeof *labels);
    if (!cand || !scores || (!exact && !labels)) {
        free(cand);
        free(scores);
        free(labels);
        return tm_fail(TM_ERR_NOMEM, "index_search: out of memory");
    }
    tm_status st = TM_OK;
    int nc = 0;
    for (int s = 0; !st && s < SLOTS; s++) {
        if (!(targets & slot_bit[s]) || !idx->rows[s]) continue;
        int n = 0;
        if (exact) {
            slot_exact(idx, s, query, kk, scores, cand + nc, &n);
        } else {
            int ks = (int64_t)kk < idx->rows[s] ? kk : (int)idx->rows[s];
            char err[512];
            int code = tm_faiss_search(idx->fx[s], query, ks, idx->nprobe, idx->ef_search, labels,
                                       scores, err, sizeof err);
            if (code) {
                st = faiss_status(code, "index_search", err);
                break;
            }
            for (int i = 0; i < ks; i++)
                if (labels[i] >= 0 && labels[i] < idx->rows[s] && isfinite(scores[i]))
                    cand[nc + n++] = (tm_search_hit){idx->item[s][labels[i]], slot_bit[s],
                                                     scores[i]};
        }
        nc += n;
    }
    int n = 0;
    if (!st) {
        qsort(cand, (size_t)nc, sizeof *cand, by_item);
        for (int i = 0; i < nc; i++)
            if (i == 0 || cand[i].item != cand[i - 1].item) offer(hits, &n, k, cand[i]);
        qsort(hits, (size_t)n, sizeof *hits, by_rank);
    }
    *n_hits = n;
    free(cand);
    free(scores);
    free(labels);
    return st;
}
