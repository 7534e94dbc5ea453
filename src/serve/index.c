/* The search index: every item of a manifest embedded per modality,
 * stored as a safetensors file, searched exactly with the engine's GEMM. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "serve/serve_internal.h"
#include "trimodal/io.h"
#include "trimodal/ops.h"

#define SLOTS 3 /* text, vision, audio */
#define ITEM_TEXT_MAX 200
#define MEDIA_MAX_BYTES ((size_t)256 << 20)
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
};

static const char *const field_key[4] = {"id", "text", "image", "audio"};

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
        }
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
    if (r->image_path) {
        what = r->image;
        st = tm_read_file(r->image_path, MEDIA_MAX_BYTES, &img, &ni);
    }
    if (!st && r->audio_path) {
        what = r->audio;
        st = tm_read_file(r->audio_path, MEDIA_MAX_BYTES, &aud, &na);
    }
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
    if (skipped) *skipped = bad;
    *out = idx;
    return TM_OK;
}

/* ------------------------------------------------------------ the file */

tm_status tm_index_save(const tm_index *idx, const char *path)
{
    if (!idx || !path) return tm_fail(TM_ERR_INVALID, "index_save: NULL index or path");
    tm_tensor t[2 * SLOTS];
    tm_named_tensor nt[2 * SLOTS];
    char names[2 * SLOTS][32];
    int n = 0;
    for (int k = 0; k < SLOTS; k++) {
        if (!idx->rows[k]) continue;
        tm_tensor *e = &t[n], *it = &t[n + 1];
        memset(e, 0, sizeof *e);
        memset(it, 0, sizeof *it);
        e->dtype = TM_F32;
        e->ndim = 2;
        e->shape[0] = idx->rows[k];
        e->shape[1] = idx->dim;
        e->stride[0] = idx->dim;
        e->stride[1] = 1;
        e->data = idx->emb[k];
        it->dtype = TM_I32;
        it->ndim = 1;
        it->shape[0] = idx->rows[k];
        it->stride[0] = 1;
        it->data = idx->item[k];
        snprintf(names[n], sizeof names[n], "emb.%s", slot_name[k]);
        snprintf(names[n + 1], sizeof names[n + 1], "item.%s", slot_name[k]);
        nt[n] = (tm_named_tensor){names[n], e};
        nt[n + 1] = (tm_named_tensor){names[n + 1], it};
        n += 2;
    }
    cJSON *items = cJSON_CreateArray();
    tm_status st = items ? TM_OK : tm_fail(TM_ERR_NOMEM, "out of memory");
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
    const char *keys[] = {"format", "version", "model",      "fingerprint",
                          "dim",    "count",   "modalities", "items"};
    const char *vals[] = {"trimodal-index", "1", idx->model, idx->fingerprint, dim, count, mods,
                          items_text};
    if (!st) st = tm_safetensors_write(path, nt, n, keys, vals, 8);
    free(items_text);
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
    tm_index *idx = NULL;
    if (!st && !(idx = index_alloc(count))) st = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (st) {
        tm_safetensors_close(st_file);
        return st;
    }
    idx->st = st_file;
    idx->dim = dim;
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
    /* tensors: only emb.<m> and item.<m> pairs */
    int nt = tm_safetensors_count(st_file), seen = 0;
    for (int k = 0; !st && k < SLOTS; k++) {
        char en[32], in[32];
        snprintf(en, sizeof en, "emb.%s", slot_name[k]);
        snprintf(in, sizeof in, "item.%s", slot_name[k]);
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
        if (e.dtype != TM_F32 || e.ndim != 2 || e.shape[1] != dim) {
            st = tm_fail(TM_ERR_FORMAT, "%s: %s must be F32 of shape (rows, %lld)", path, en,
                         (long long)dim);
            break;
        }
        if (it.dtype != TM_I32 || it.ndim != 1 || it.shape[0] != e.shape[0]) {
            st = tm_fail(TM_ERR_FORMAT, "%s: %s must be I32 of shape (%lld)", path, in,
                         (long long)e.shape[0]);
            break;
        }
        idx->rows[k] = e.shape[0];
        idx->emb[k] = e.data;
        idx->item[k] = it.data;
        for (int64_t r = 0; !st && r < idx->rows[k]; r++)
            if (idx->item[k][r] < 0 || idx->item[k][r] >= count)
                st = tm_fail(TM_ERR_FORMAT, "%s: %s[%lld] = %d is not an item (count %lld)", path,
                             in, (long long)r, idx->item[k][r], (long long)count);
        int64_t nv = idx->rows[k] * dim;
        for (int64_t v = 0; !st && v < nv; v++)
            if (!isfinite(idx->emb[k][v]))
                st = tm_fail(TM_ERR_FORMAT, "%s: %s holds a value that is not finite", path, en);
    }
    if (!st && seen != nt)
        st = tm_fail(TM_ERR_FORMAT,
                     "%s: unexpected tensors (an index holds only emb.<modality> "
                     "and item.<modality>)",
                     path);
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
    int multi = 0;
    for (int s = 0, c = 0; s < SLOTS; s++)
        if ((targets & have & slot_bit[s]) && ++c > 1) multi = 1;
    float *scores = malloc(SEARCH_BLOCK * sizeof *scores);
    float *best = multi ? malloc((size_t)(idx->count ? idx->count : 1) * sizeof *best) : NULL;
    unsigned char *best_mod = multi ? calloc((size_t)(idx->count ? idx->count : 1), 1) : NULL;
    if (!scores || (multi && (!best || !best_mod))) {
        free(scores);
        free(best);
        free(best_mod);
        return tm_fail(TM_ERR_NOMEM, "index_search: out of memory");
    }
    for (int64_t i = 0; multi && i < idx->count; i++)
        best[i] = -INFINITY;
    int n = 0;
    for (int s = 0; s < SLOTS; s++) {
        if (!(targets & slot_bit[s]) || !idx->rows[s]) continue;
        for (int64_t r0 = 0; r0 < idx->rows[s]; r0 += SEARCH_BLOCK) {
            int64_t nr = idx->rows[s] - r0 < SEARCH_BLOCK ? idx->rows[s] - r0 : SEARCH_BLOCK;
            /* scores (1, nr) = query (1, dim) . emb[r0 : r0 + nr]^T */
            tm_sgemm(0, 1, 1, nr, idx->dim, 1.0f, query, idx->dim, idx->emb[s] + r0 * idx->dim,
                     idx->dim, 0.0f, scores, nr);
            for (int64_t r = 0; r < nr; r++) {
                int32_t it = idx->item[s][r0 + r];
                if (multi) {
                    if (scores[r] > best[it]) best[it] = scores[r], best_mod[it] = (unsigned char)s;
                } else {
                    offer(hits, &n, k, (tm_search_hit){it, slot_bit[s], scores[r]});
                }
            }
        }
    }
    for (int64_t i = 0; multi && i < idx->count; i++)
        if (best[i] > -INFINITY)
            offer(hits, &n, k, (tm_search_hit){i, slot_bit[best_mod[i]], best[i]});
    qsort(hits, (size_t)n, sizeof *hits, by_rank);
    *n_hits = n;
    free(scores);
    free(best);
    free(best_mod);
    return TM_OK;
}
