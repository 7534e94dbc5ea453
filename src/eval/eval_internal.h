/* Shared by src/eval/: a growing string buffer (SVG, HTML), XML escaping,
 * base64, the symmetric eigen-solver and token interning for the text
 * metrics. Never exposed by include/. */
#ifndef TM_EVAL_INTERNAL_H
#define TM_EVAL_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "trimodal/eval.h"

/* ------------------------------------------------------- string buffer */

/* Appends never fail loudly: the first failed allocation sets `failed`,
 * later appends do nothing, and the owner checks once at the end. */
typedef struct {
    char *data; /* NUL-terminated when len > 0 */
    size_t len, cap;
    int failed;
} tme_buf;

void tme_buf_put(tme_buf *b, const char *s, size_t n);
void tme_buf_puts(tme_buf *b, const char *s);
void tme_buf_printf(tme_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* s with & < > " ' escaped for XML / HTML text and attributes. Invalid
 * UTF-8 bytes and control characters other than tab and newline become
 * U+FFFD, so the output is always well-formed. NULL appends nothing. */
void tme_buf_escape(tme_buf *b, const char *s);
void tme_buf_base64(tme_buf *b, const void *data, size_t n);
/* A double printed with a printf format known to be safe (see
 * tme_check_format). */
void tme_buf_number(tme_buf *b, const char *fmt, double v);
/* Hands the string over (never NULL unless failed) and resets b. */
char *tme_buf_take(tme_buf *b);
void tme_buf_free(tme_buf *b);

/* 1 when fmt holds exactly one %[flags][width][.precision](f|e|g|F|E|G)
 * conversion and otherwise only literal text ("%%" allowed), so it can be
 * passed to snprintf with one double. */
int tme_check_format(const char *fmt);

/* ------------------------------------------------------- linear algebra */

/* Eigenvalues (ascending) of the symmetric matrix a (n, n), row-major,
 * and, when vecs is not NULL, its eigenvectors as the ROWS of vecs (n, n):
 * a = vecs^T diag(w) vecs. a is destroyed. Householder tridiagonalisation
 * and implicit QL with Wilkinson shifts; parallel where the work allows.
 * TM_ERR_INTERNAL if QL fails to converge, TM_ERR_NOMEM. */
tm_status tme_sym_eig(double *a, int64_t n, double *w, double *vecs);

/* Dot products in double (AVX2+FMA when the CPU has it): a . b, and
 * out[j] = a . b[j * ldb ...] for j = 0..3. */
double tme_dot(const double *a, const double *b, int64_t n);
void tme_dot4(const double *a, const double *b, int64_t ldb, int64_t n, double *out);

/* c (n, m) = a (n, k) * b (m, k)^T: row dot products, parallel over rows. */
void tme_dgemm_nt(double *c, const double *a, const double *b, int64_t n, int64_t m, int64_t k);

/* ------------------------------------------------------------- text */

/* Tokens of a text interned into ids: tokens with the same bytes get the
 * same id across every call on one vocabulary. */
typedef struct tme_vocab tme_vocab;
tme_vocab *tme_vocab_new(void);
void tme_vocab_free(tme_vocab *v);
/* Tokenises text under norm and appends the ids to *ids (grown with
 * realloc-like tm_alloc; *cap its capacity); *n gets the count. */
tm_status tme_tokenize_ids(tme_vocab *v, const char *text, const tm_text_norm *norm,
                           int32_t **ids, int64_t *cap, int64_t *n);
/* The id of a token, added when new; -1 on allocation failure. */
int32_t tme_vocab_intern(tme_vocab *v, const char *tok, size_t len);
/* The bytes of token id (NUL-terminated), valid while v lives. */
const char *tme_vocab_word(const tme_vocab *v, int32_t id);

/* Splits text into tokens: calls fn(ctx, token, len) for each (token
 * points into a scratch copy); stops at the first status fn returns that
 * is not TM_OK and returns it. */
typedef tm_status (*tme_token_fn)(void *ctx, const char *tok, size_t len);
tm_status tme_tokenize(const char *text, const tm_text_norm *norm, tme_token_fn fn, void *ctx);

/* A map from n-grams of token ids (n <= TME_MAX_N) to two counters and a
 * value; entries stay in insertion order in e[0..count). */
#define TME_MAX_N 8
typedef struct {
    uint64_t h;
    int32_t n;
    int32_t ids[TME_MAX_N];
    int64_t a, b, c;
    double x;
} tme_ng_entry;

typedef struct {
    int32_t *slots; /* entry index + 1, 0 empty */
    size_t n_slots;
    tme_ng_entry *e;
    size_t count, cap;
} tme_ng_map;

void tme_ng_init(tme_ng_map *m);
void tme_ng_free(tme_ng_map *m);
void tme_ng_clear(tme_ng_map *m); /* keeps the memory */
/* The entry of ids[0..n), created zeroed when absent and create is set;
 * NULL when absent (create 0) or on allocation failure (create 1).
 * Pointers are invalidated by the next creating call. */
tme_ng_entry *tme_ng_get(tme_ng_map *m, const int32_t *ids, int n, int create);

/* Validates an array of samples (non-NULL texts, n_references >= 1). */
tm_status tme_check_samples(const char *fn, const tm_caption_sample *s, int64_t n);

#endif
