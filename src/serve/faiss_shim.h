/* The C side of FAISS (src/serve/faiss_shim.cpp): the approximate index
 * types of the search index (IVF-Flat and HNSW-Flat, both inner product)
 * behind plain C calls that never throw. Debian's libfaiss-dev ships the C
 * API's headers without their implementation, so this one C++ file reaches
 * FAISS's C++ API instead.
 *
 * Every function returns TM_FAISS_OK or an error code and writes a message
 * (without a trailing newline) into err[errn]; the caller turns it into a
 * tm_status. Built without FAISS (TM_HAVE_FAISS undefined), the functions
 * below are inline stubs that answer TM_FAISS_ABSENT. A tm_faiss is
 * read-only after building or loading: tm_faiss_search may run from many
 * threads at once (its search settings travel with each call). */
#ifndef TRIMODAL_SERVE_FAISS_SHIM_H
#define TRIMODAL_SERVE_FAISS_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    TM_FAISS_OK = 0,
    TM_FAISS_ABSENT,  /* built without FAISS */
    TM_FAISS_INVALID, /* bad arguments */
    TM_FAISS_FORMAT,  /* a serialised index that does not read or check */
    TM_FAISS_NOMEM
};

enum { TM_FAISS_IVF = 1, TM_FAISS_HNSW = 2 };

typedef struct tm_faiss tm_faiss;

typedef struct {
    int kind;            /* TM_FAISS_IVF or TM_FAISS_HNSW */
    int nlist;           /* IVF: lists (1..n) */
    int hnsw_m;          /* HNSW: links per node (2..256) */
    int ef_construction; /* HNSW: candidate list while building */
    int threads;         /* OpenMP threads for building; 0: FAISS's default */
} tm_faiss_build_params;

#ifdef TM_HAVE_FAISS

/* Builds an index of n vectors x (n, dim), row i labelled i. */
int tm_faiss_build(tm_faiss **out, const tm_faiss_build_params *p, int64_t dim, int64_t n,
                   const float *x, char *err, size_t errn);
/* The k best rows (inner product) of one query (dim): labels[k] (-1 when
 * fewer) and scores[k], best first. nprobe (IVF) is this call's setting.
 * ef_search (HNSW) must be the value last given to tm_faiss_set_ef_search:
 * FAISS 1.7.3's HNSW search reads the graph's own efSearch and lets the
 * per-call SearchParametersHNSW only lower it (measured: a per-call 512
 * searched as 16), so the shim keeps the two equal and the call's value is
 * only checked. */
int tm_faiss_search(const tm_faiss *f, const float *query, int k, int nprobe, int ef_search,
                    int64_t *labels, float *scores, char *err, size_t errn);
/* FAISS's own serialisation into *buf (malloc'ed, *len bytes). */
int tm_faiss_serialize(const tm_faiss *f, unsigned char **buf, size_t *len, char *err,
                       size_t errn);
/* Reads a serialised index, checking that it is of `kind` with dim, n rows
 * and inner product, and that its lists or graph only name rows 0..n-1. */
int tm_faiss_deserialize(tm_faiss **out, int kind, int64_t dim, int64_t n, const void *buf,
                         size_t len, char *err, size_t errn);
/* Sets an HNSW index's ef_search (1..65536) for the searches that follow;
 * not thread-safe: call it before sharing f. IVF indexes ignore it. */
int tm_faiss_set_ef_search(tm_faiss *f, int ef_search, char *err, size_t errn);
/* The settings the index was built with (IVF lists, HNSW links and
 * efConstruction; 0 for another kind). */
int tm_faiss_nlist(const tm_faiss *f);
int tm_faiss_hnsw_m(const tm_faiss *f);
int tm_faiss_hnsw_ef_construction(const tm_faiss *f);
void tm_faiss_free(tm_faiss *f); /* NULL is harmless */

#else /* built without FAISS: every entry point says so */

#define TM_FAISS_ABSENT_MSG                                                                     \
    "this trimodal was built without FAISS, which the ivf and hnsw index types need; "       \
    "install libfaiss-dev (scripts/deps.sh) and rebuild, or use --type exact or exact-int8"

static inline int tm_faiss_absent_(char *err, size_t errn)
{
    snprintf(err, errn, "%s", TM_FAISS_ABSENT_MSG);
    return TM_FAISS_ABSENT;
}
static inline int tm_faiss_build(tm_faiss **out, const tm_faiss_build_params *p, int64_t dim,
                                 int64_t n, const float *x, char *err, size_t errn)
{
    (void)p, (void)dim, (void)n, (void)x;
    *out = NULL;
    return tm_faiss_absent_(err, errn);
}
static inline int tm_faiss_search(const tm_faiss *f, const float *query, int k, int nprobe,
                                  int ef_search, int64_t *labels, float *scores, char *err,
                                  size_t errn)
{
    (void)f, (void)query, (void)k, (void)nprobe, (void)ef_search, (void)labels, (void)scores;
    return tm_faiss_absent_(err, errn);
}
static inline int tm_faiss_serialize(const tm_faiss *f, unsigned char **buf, size_t *len,
                                     char *err, size_t errn)
{
    (void)f;
    *buf = NULL;
    *len = 0;
    return tm_faiss_absent_(err, errn);
}
static inline int tm_faiss_deserialize(tm_faiss **out, int kind, int64_t dim, int64_t n,
                                       const void *buf, size_t len, char *err, size_t errn)
{
    (void)kind, (void)dim, (void)n, (void)buf, (void)len;
    *out = NULL;
    return tm_faiss_absent_(err, errn);
}
static inline int tm_faiss_nlist(const tm_faiss *f)
{
    (void)f;
    return 0;
}
static inline int tm_faiss_hnsw_m(const tm_faiss *f)
{
    (void)f;
    return 0;
}
static inline int tm_faiss_set_ef_search(tm_faiss *f, int ef_search, char *err, size_t errn)
{
    (void)f, (void)ef_search;
    return tm_faiss_absent_(err, errn);
}
static inline int tm_faiss_hnsw_ef_construction(const tm_faiss *f)
{
    (void)f;
    return 0;
}
static inline void tm_faiss_free(tm_faiss *f)
{
    (void)f;
}

#endif

#ifdef __cplusplus
}
#endif

#endif
