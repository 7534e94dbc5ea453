// The one C++ file of trimodal: FAISS's C++ API behind the plain C calls of
// faiss_shim.h. Nothing here throws past the C boundary: every entry point
// catches FAISS's exceptions and std::bad_alloc and turns them into an
// error code and a message.
#include "serve/faiss_shim.h"

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

struct tm_faiss {
    int kind;
    faiss::Index *index; // an IndexIVFFlat or an IndexHNSWFlat
};

namespace {

// Reads a serialised index from memory, never past its end (a short read
// makes FAISS throw).
struct MemReader : faiss::IOReader {
    const unsigned char *p;
    size_t left;
    MemReader(const void *buf, size_t len) : p(static_cast<const unsigned char *>(buf)), left(len)
    {
        name = "index";
    }
    size_t operator()(void *ptr, size_t size, size_t nitems) override
    {
        if (size == 0 || nitems == 0) return 0;
        size_t fit = left / size;
        size_t n = nitems < fit ? nitems : fit;
        std::memcpy(ptr, p, n * size);
        p += n * size;
        left -= n * size;
        return n;
    }
};

// FAISS's OpenMP thread count for one call, put back afterwards.
struct Threads {
    int saved;
    explicit Threads(int n) : saved(omp_get_max_threads())
    {
        if (n > 0) omp_set_num_threads(n);
    }
    ~Threads() { omp_set_num_threads(saved); }
};

int fail(char *err, size_t errn, int code, const char *what, const char *detail)
{
    std::snprintf(err, errn, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
    return code;
}

// The shape checks a loaded IVF-Flat must pass before any search touches it.
const char *check_ivf(const faiss::IndexIVFFlat *ivf, int64_t dim, int64_t n)
{
    if (!ivf->quantizer || !ivf->invlists) return "IVF index without its quantizer or lists";
    if (ivf->quantizer->d != dim || ivf->quantizer->ntotal != (faiss::Index::idx_t)ivf->nlist)
        return "IVF quantizer of another size than its lists";
    if (ivf->nlist < 1 || ivf->invlists->nlist != ivf->nlist)
        return "IVF lists of another count than the index says";
    if (ivf->code_size != (size_t)dim * sizeof(float) ||
        ivf->invlists->code_size != ivf->code_size)
        return "IVF codes are not flat float vectors";
    if (!dynamic_cast<const faiss::ArrayInvertedLists *>(ivf->invlists))
        return "IVF lists of an unexpected kind";
    size_t total = 0;
    for (size_t l = 0; l < ivf->nlist; l++) {
        size_t sz = ivf->invlists->list_size(l);
        const faiss::Index::idx_t *ids = ivf->invlists->get_ids(l);
        total += sz;
        for (size_t j = 0; j < sz; j++)
            if (ids[j] < 0 || ids[j] >= n) return "IVF list names a row that does not exist";
    }
    if (total != (size_t)n) return "IVF lists hold another number of rows than the index";
    return nullptr;
}

// The same for HNSW: every offset, level and neighbour in range.
const char *check_hnsw(const faiss::IndexHNSWFlat *h, int64_t dim, int64_t n)
{
    const faiss::HNSW &g = h->hnsw;
    if (!h->storage || h->storage->d != dim || h->storage->ntotal != n)
        return "HNSW storage of another size than the index";
    if (!dynamic_cast<const faiss::IndexFlat *>(h->storage)) return "HNSW storage is not flat";
    if ((int64_t)g.levels.size() != n || (int64_t)g.offsets.size() != n + 1)
        return "HNSW graph of another size than the index";
    size_t nl = g.cum_nneighbor_per_level.size();
    if (nl < 2 || g.cum_nneighbor_per_level[0] != 0) return "HNSW level table is malformed";
    for (size_t l = 1; l < nl; l++)
        if (g.cum_nneighbor_per_level[l] < g.cum_nneighbor_per_level[l - 1])
            return "HNSW level table is malformed";
    if (g.offsets[0] != 0) return "HNSW offsets are malformed";
    for (int64_t i = 0; i < n; i++) {
        int lv = g.levels[i];
        if (lv < 1 || (size_t)lv >= nl) return "HNSW node level out of range";
        if (g.offsets[i + 1] < g.offsets[i] ||
            g.offsets[i + 1] - g.offsets[i] != (size_t)g.cum_nneighbor_per_level[lv])
            return "HNSW offsets are malformed";
    }
    if (g.offsets[n] != g.neighbors.size()) return "HNSW neighbour table of the wrong size";
    if (g.efConstruction < 1 || g.efConstruction > 65536) return "HNSW efConstruction out of range";
    for (faiss::HNSW::storage_idx_t v : g.neighbors)
        if (v < -1 || v >= n) return "HNSW neighbour out of range";
    if (n > 0) {
        if (g.entry_point < 0 || g.entry_point >= n) return "HNSW entry point out of range";
        if (g.max_level != g.levels[g.entry_point] - 1) return "HNSW top level is inconsistent";
    }
    return nullptr;
}

} // namespace

extern "C" {

int tm_faiss_build(tm_faiss **out, const tm_faiss_build_params *p, int64_t dim, int64_t n,
                   const float *x, char *err, size_t errn)
{
    *out = nullptr;
    if (!p || !x || dim < 1 || n < 1)
        return fail(err, errn, TM_FAISS_INVALID, "faiss build: no vectors", nullptr);
    if (n > INT32_MAX) return fail(err, errn, TM_FAISS_INVALID, "faiss build: too many rows", nullptr);
    try {
        Threads th(p->threads);
        std::unique_ptr<faiss::Index> index;
        if (p->kind == TM_FAISS_IVF) {
            if (p->nlist < 1 || p->nlist > n)
                return fail(err, errn, TM_FAISS_INVALID, "faiss build: nlist must be 1..rows",
                            nullptr);
            auto *q = new faiss::IndexFlatIP(dim);
            auto *ivf = new faiss::IndexIVFFlat(q, dim, (size_t)p->nlist,
                                                faiss::METRIC_INNER_PRODUCT);
            index.reset(ivf);
            ivf->own_fields = true;
            // k-means on at most 64 points a list (FAISS samples them), and
            // no "please provide at least ..." warning on stderr: the
            // caller keeps nlist <= rows.
            ivf->cp.min_points_per_centroid = 1;
            ivf->cp.max_points_per_centroid = 64;
            ivf->cp.verbose = false;
            ivf->verbose = false;
            ivf->train(n, x);
            ivf->add(n, x);
        } else if (p->kind == TM_FAISS_HNSW) {
            if (p->hnsw_m < 2 || p->hnsw_m > 256)
                return fail(err, errn, TM_FAISS_INVALID, "faiss build: HNSW M must be 2..256",
                            nullptr);
            if (p->ef_construction < 0 || p->ef_construction > 65536)
                return fail(err, errn, TM_FAISS_INVALID,
                            "faiss build: HNSW efConstruction must be 1..65536", nullptr);
            auto *h = new faiss::IndexHNSWFlat(dim, p->hnsw_m, faiss::METRIC_INNER_PRODUCT);
            index.reset(h);
            h->hnsw.efConstruction = p->ef_construction > 0 ? p->ef_construction : 40;
            h->verbose = false;
            h->add(n, x);
        } else {
            return fail(err, errn, TM_FAISS_INVALID, "faiss build: unknown index kind", nullptr);
        }
        auto *f = static_cast<tm_faiss *>(std::malloc(sizeof(tm_faiss)));
        if (!f) return fail(err, errn, TM_FAISS_NOMEM, "out of memory", nullptr);
        f->kind = p->kind;
        f->index = index.release();
        *out = f;
        return TM_FAISS_OK;
    } catch (const std::bad_alloc &) {
        return fail(err, errn, TM_FAISS_NOMEM, "faiss build: out of memory", nullptr);
    } catch (const std::exception &e) {
        return fail(err, errn, TM_FAISS_INVALID, "faiss build", e.what());
    }
}

int tm_faiss_search(const tm_faiss *f, const float *query, int k, int nprobe, int ef_search,
                    int64_t *labels, float *scores, char *err, size_t errn)
{
    if (!f || !query || k < 1 || !labels || !scores)
        return fail(err, errn, TM_FAISS_INVALID, "faiss search: bad arguments", nullptr);
    try {
        // One query is too little work to share: without this, FAISS's
        // HNSW opens an OpenMP team per query, and on a loaded machine its
        // threads' barrier costs more than the search (55 ms instead of
        // 0.3 ms measured). The setting is this thread's own.
        Threads th(1);
        std::vector<faiss::Index::idx_t> I((size_t)k);
        if (f->kind == TM_FAISS_IVF) {
            faiss::SearchParametersIVF sp;
            sp.nprobe = (size_t)(nprobe > 0 ? nprobe : 1);
            f->index->search(1, query, k, scores, I.data(), &sp);
        } else {
            // FAISS 1.7.3 searches with max(hnsw.efSearch, k) candidates
            // whatever SearchParametersHNSW says (a per-call efSearch can
            // only lower it): the graph's own efSearch is the setting, set
            // by tm_faiss_set_ef_search before the index is shared. The
            // parameters carry the same value for FAISS versions that
            // honour them.
            auto *h = dynamic_cast<const faiss::IndexHNSW *>(f->index);
            if (!h)
                return fail(err, errn, TM_FAISS_INVALID, "faiss search: not an HNSW index",
                            nullptr);
            if (ef_search != h->hnsw.efSearch) {
                std::snprintf(err, errn,
                              "faiss search: ef_search %d was not set on the index (it holds "
                              "%d; call tm_faiss_set_ef_search first)",
                              ef_search, h->hnsw.efSearch);
                return TM_FAISS_INVALID;
            }
            faiss::SearchParametersHNSW sp;
            sp.efSearch = h->hnsw.efSearch;
            f->index->search(1, query, k, scores, I.data(), &sp);
        }
        for (int i = 0; i < k; i++)
            labels[i] = (int64_t)I[(size_t)i];
        return TM_FAISS_OK;
    } catch (const std::bad_alloc &) {
        return fail(err, errn, TM_FAISS_NOMEM, "faiss search: out of memory", nullptr);
    } catch (const std::exception &e) {
        return fail(err, errn, TM_FAISS_INVALID, "faiss search", e.what());
    }
}

int tm_faiss_serialize(const tm_faiss *f, unsigned char **buf, size_t *len, char *err,
                       size_t errn)
{
    *buf = nullptr;
    *len = 0;
    if (!f) return fail(err, errn, TM_FAISS_INVALID, "faiss save: NULL index", nullptr);
    try {
        faiss::VectorIOWriter w;
        faiss::write_index(f->index, &w);
        unsigned char *b = static_cast<unsigned char *>(std::malloc(w.data.size() ? w.data.size() : 1));
        if (!b) return fail(err, errn, TM_FAISS_NOMEM, "out of memory", nullptr);
        std::memcpy(b, w.data.data(), w.data.size());
        *buf = b;
        *len = w.data.size();
        return TM_FAISS_OK;
    } catch (const std::bad_alloc &) {
        return fail(err, errn, TM_FAISS_NOMEM, "faiss save: out of memory", nullptr);
    } catch (const std::exception &e) {
        return fail(err, errn, TM_FAISS_INVALID, "faiss save", e.what());
    }
}

int tm_faiss_deserialize(tm_faiss **out, int kind, int64_t dim, int64_t n, const void *buf,
                         size_t len, char *err, size_t errn)
{
    *out = nullptr;
    if (!buf || len == 0) return fail(err, errn, TM_FAISS_FORMAT, "empty FAISS index", nullptr);
    try {
        MemReader r(buf, len);
        std::unique_ptr<faiss::Index> index(faiss::read_index(&r));
        if (!index) return fail(err, errn, TM_FAISS_FORMAT, "FAISS read no index", nullptr);
        if (r.left != 0)
            return fail(err, errn, TM_FAISS_FORMAT, "bytes after the FAISS index", nullptr);
        if (index->d != dim || index->ntotal != n)
            return fail(err, errn, TM_FAISS_FORMAT,
                        "the FAISS index has another size than the index file says", nullptr);
        if (index->metric_type != faiss::METRIC_INNER_PRODUCT)
            return fail(err, errn, TM_FAISS_FORMAT, "the FAISS index does not use inner product",
                        nullptr);
        const char *bad = nullptr;
        if (kind == TM_FAISS_IVF) {
            auto *ivf = dynamic_cast<faiss::IndexIVFFlat *>(index.get());
            bad = ivf ? check_ivf(ivf, dim, n) : "not an IVF-Flat index";
        } else if (kind == TM_FAISS_HNSW) {
            auto *h = dynamic_cast<faiss::IndexHNSWFlat *>(index.get());
            bad = h ? check_hnsw(h, dim, n) : "not an HNSW-Flat index";
        } else {
            bad = "unknown index kind";
        }
        if (bad) return fail(err, errn, TM_FAISS_FORMAT, bad, nullptr);
        auto *f = static_cast<tm_faiss *>(std::malloc(sizeof(tm_faiss)));
        if (!f) return fail(err, errn, TM_FAISS_NOMEM, "out of memory", nullptr);
        f->kind = kind;
        f->index = index.release();
        *out = f;
        return TM_FAISS_OK;
    } catch (const std::bad_alloc &) {
        return fail(err, errn, TM_FAISS_FORMAT, "the FAISS index asks for more memory than there is",
                    nullptr);
    } catch (const std::exception &e) {
        return fail(err, errn, TM_FAISS_FORMAT, "the FAISS index does not read", e.what());
    }
}

int tm_faiss_nlist(const tm_faiss *f)
{
    auto *ivf = f ? dynamic_cast<const faiss::IndexIVF *>(f->index) : nullptr;
    return ivf ? (int)ivf->nlist : 0;
}

int tm_faiss_hnsw_m(const tm_faiss *f)
{
    auto *h = f ? dynamic_cast<const faiss::IndexHNSW *>(f->index) : nullptr;
    return h ? h->hnsw.nb_neighbors(1) : 0;
}

int tm_faiss_set_ef_search(tm_faiss *f, int ef_search, char *err, size_t errn)
{
    if (!f || ef_search < 1 || ef_search > 65536)
        return fail(err, errn, TM_FAISS_INVALID, "faiss: ef_search must be 1..65536", nullptr);
    auto *h = dynamic_cast<faiss::IndexHNSW *>(f->index);
    if (h) h->hnsw.efSearch = ef_search;
    return TM_FAISS_OK;
}

int tm_faiss_hnsw_ef_construction(const tm_faiss *f)
{
    auto *h = f ? dynamic_cast<const faiss::IndexHNSW *>(f->index) : nullptr;
    return h ? h->hnsw.efConstruction : 0;
}

void tm_faiss_free(tm_faiss *f)
{
    if (!f) return;
    delete f->index;
    std::free(f);
}

} // extern "C"
