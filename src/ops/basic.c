/* Kernels of the simpler ops: elementwise maths, broadcasting, reductions,
 * row-wise normalisations, cross-entropy, dropout, embeddings and copies.
 *
 * Parallel loops split the *outputs* into chunks whose boundaries depend
 * only on the problem size (never on the thread count), and every sum runs
 * in a fixed order, so results are bitwise the same for any thread count.
 *
 * The hot loops have vectorised versions (basic_avx2.c, built for AVX2 and
 * for AVX-512), chosen once per call from tm_cpu_isa(); the plain C loops
 * here are their reference and the fallback. A vectorised kernel handles a
 * whole range or row the same way wherever it starts, so the choice of
 * kernel depends on the ISA alone, never on how the work was cut. */
#include "basic.h"

#include <math.h>
#include <string.h>

#define CHUNK 16384 /* elements per task of an elementwise loop */

static int64_t nchunks(int64_t n, int64_t chunk) { return n <= 0 ? 0 : (n + chunk - 1) / chunk; }

const tm_basic_simd *tm_basic_simd_for(int isa)
{
    if (isa >= TM_ISA_AVX512) return &tm_basic_simd_avx512;
    if (isa == TM_ISA_AVX2) return &tm_basic_simd_avx2;
    return NULL;
}

static const tm_basic_simd *simd(void) { return tm_basic_simd_for(tm_cpu_isa()); }

/* ------------------------------------------------------------- erf */

/* The plain C twin of basic_avx2.c's verf: the same approximation (see
 * basic.h), evaluated without FMA; the exponential of erfc in double,
 * which spares the exact split of t^2 that the vector code does. */
static float poly(float x, const float *c, int n)
{
    float r = c[n - 1];
    for (int k = n - 2; k >= 0; k--) r = r * x + c[k];
    return r;
}

/* erfc(t) for t > TM_ERF_T0 (NaN stays NaN, +inf gives 0). */
static float erfc_tail(float t)
{
    float u = 1.0f / t;
    if (u < TM_ERFC_UMIN) u = TM_ERFC_UMIN;
    float g = poly(u * TM_ERFC_GS + TM_ERFC_GO, TM_ERFC_G, 11);
    return (float)(exp((double)g - (double)t * t) * u * 0.564189583547756287);
}

static float erf_small(float t) { return t + t * poly(t * t, TM_ERF_Q, 7); }

float tm_erf_approx(float x)
{
    float t = fabsf(x);
    float r = t <= TM_ERF_T0 ? erf_small(t) : 1.0f - erfc_tail(t);
    return copysignf(r, x);
}

float tm_erf1p_approx(float x)
{
    float t = fabsf(x);
    if (t <= TM_ERF_T0) return 1.0f + copysignf(erf_small(t), x);
    float e = erfc_tail(t);
    return x < 0 ? e : 2.0f - e;
}

/* ------------------------------------------------------------ unary */

typedef struct {
    tm_unary op;
    float *y, *dx;
    const float *x, *yin, *dy;
    int64_t n;
    float a, b;
    const tm_basic_simd *v;
} unary_ctx;

static const float SQRT_2_OVER_PI = 0.7978845608028654f;
static const float GELU_C = 0.044715f;

static void unary_fwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    unary_ctx *c = p;
    int64_t lo = t * CHUNK, hi = lo + CHUNK < c->n ? lo + CHUNK : c->n;
    const float *x = c->x;
    float *y = c->y;
    if (c->v && c->v->unary_fwd(c->op, y + lo, x + lo, hi - lo, c->a, c->b)) return;
    switch (c->op) {
    case TM_UNARY_EXP: for (int64_t i = lo; i < hi; i++) y[i] = expf(x[i]); break;
    case TM_UNARY_LOG: for (int64_t i = lo; i < hi; i++) y[i] = logf(x[i]); break;
    case TM_UNARY_SQRT: for (int64_t i = lo; i < hi; i++) y[i] = sqrtf(x[i]); break;
    case TM_UNARY_TANH: for (int64_t i = lo; i < hi; i++) y[i] = tanhf(x[i]); break;
    case TM_UNARY_SIGMOID:
        for (int64_t i = lo; i < hi; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
        break;
    case TM_UNARY_RELU: for (int64_t i = lo; i < hi; i++) y[i] = x[i] > 0 ? x[i] : 0.0f; break;
    case TM_UNARY_GELU:
        for (int64_t i = lo; i < hi; i++)
            y[i] = 0.5f * x[i] * tm_erf1p_approx(x[i] * (float)M_SQRT1_2);
        break;
    case TM_UNARY_GELU_TANH: /* 0.5 v (1 + tanh u) = v / (1 + e^-2u): no cancellation */
        for (int64_t i = lo; i < hi; i++) {
            float v = x[i];
            y[i] = v / (1.0f + expf(-2.0f * SQRT_2_OVER_PI * (v + GELU_C * v * v * v)));
        }
        break;
    case TM_UNARY_SILU: for (int64_t i = lo; i < hi; i++) y[i] = x[i] / (1.0f + expf(-x[i])); break;
    case TM_UNARY_SCALE: for (int64_t i = lo; i < hi; i++) y[i] = c->a * x[i] + c->b; break;
    case TM_UNARY_ERF: for (int64_t i = lo; i < hi; i++) y[i] = tm_erf_approx(x[i]); break;
    }
}

static void unary_bwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    unary_ctx *c = p;
    int64_t lo = t * CHUNK, hi = lo + CHUNK < c->n ? lo + CHUNK : c->n;
    const float *x = c->x, *y = c->yin, *dy = c->dy;
    float *dx = c->dx;
    if (c->v && c->v->unary_bwd(c->op, dx + lo, dy + lo, x ? x + lo : NULL, y ? y + lo : NULL,
                                hi - lo, c->a))
        return;
    switch (c->op) {
    case TM_UNARY_EXP: for (int64_t i = lo; i < hi; i++) dx[i] += dy[i] * y[i]; break;
    case TM_UNARY_LOG: for (int64_t i = lo; i < hi; i++) dx[i] += dy[i] / x[i]; break;
    case TM_UNARY_SQRT: for (int64_t i = lo; i < hi; i++) dx[i] += dy[i] * 0.5f / y[i]; break;
    case TM_UNARY_TANH: for (int64_t i = lo; i < hi; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]); break;
    case TM_UNARY_SIGMOID:
        for (int64_t i = lo; i < hi; i++) dx[i] += dy[i] * y[i] * (1.0f - y[i]);
        break;
    case TM_UNARY_RELU: for (int64_t i = lo; i < hi; i++) dx[i] += x[i] > 0 ? dy[i] : 0.0f; break;
    case TM_UNARY_GELU:
        for (int64_t i = lo; i < hi; i++) {
            float v = x[i];
            float cdf = 0.5f * tm_erf1p_approx(v * (float)M_SQRT1_2);
            float pdf = (float)(0.3989422804014327 * exp(-0.5 * (double)v * v));
            dx[i] += dy[i] * (cdf + v * pdf);
        }
        break;
    case TM_UNARY_GELU_TANH:
        /* s = sigmoid(2u) = 0.5 (1 + tanh u), 1 - s = e s with e = e^-2u
         * (capped so that e s stays 1 where s underflows):
         * d/dv = s + 2 v s (1 - s) du/dv */
        for (int64_t i = lo; i < hi; i++) {
            float v = x[i];
            float e = expf(fminf(-2.0f * SQRT_2_OVER_PI * (v + GELU_C * v * v * v), 88.0f));
            float s = 1.0f / (1.0f + e);
            float du = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_C * v * v);
            dx[i] += dy[i] * (s + 2.0f * v * s * (e * s) * du);
        }
        break;
    case TM_UNARY_SILU:
        for (int64_t i = lo; i < hi; i++) {
            float s = 1.0f / (1.0f + expf(-x[i]));
            dx[i] += dy[i] * s * (1.0f + x[i] * (1.0f - s));
        }
        break;
    case TM_UNARY_SCALE: for (int64_t i = lo; i < hi; i++) dx[i] += c->a * dy[i]; break;
    case TM_UNARY_ERF:
        for (int64_t i = lo; i < hi; i++)
            dx[i] += dy[i] * (float)(1.12837916709551257 * exp(-(double)x[i] * x[i]));
        break;
    }
}

void tm_unary_forward(tm_unary op, float *y, const float *x, int64_t n, float a, float b)
{
    unary_ctx c = {.op = op, .y = y, .x = x, .n = n, .a = a, .b = b, .v = simd()};
    tm_parallel_for(nchunks(n, CHUNK), unary_fwd_task, &c);
}

void tm_unary_backward(tm_unary op, float *dx, const float *dy, const float *x,
                       const float *y, int64_t n, float a)
{
    unary_ctx c = {.op = op, .dx = dx, .dy = dy, .x = x, .yin = y, .n = n, .a = a, .v = simd()};
    tm_parallel_for(nchunks(n, CHUNK), unary_bwd_task, &c);
}

/* ------------------------------------------------------------ binary */

int tm_bcast_init(tm_bcast *bc, int nda, const int64_t *sha, int ndb, const int64_t *shb)
{
    int nd = nda > ndb ? nda : ndb;
    int64_t stra = 1, strb = 1;
    memset(bc, 0, sizeof *bc);
    bc->ndim = nd;
    for (int i = nd - 1; i >= 0; i--) {
        int ia = i - (nd - nda), ib = i - (nd - ndb);
        int64_t da = ia >= 0 ? sha[ia] : 1, db = ib >= 0 ? shb[ib] : 1;
        if (da != db && da != 1 && db != 1) return 0;
        bc->shape[i] = da > db ? da : db;
        if (da == 1 && db == 0) bc->shape[i] = 0;
        if (db == 1 && da == 0) bc->shape[i] = 0;
        bc->sa[i] = da == 1 ? 0 : stra;
        bc->sb[i] = db == 1 ? 0 : strb;
        stra *= da;
        strb *= db;
    }
    return 1;
}

static inline float binop(tm_binary op, float a, float b)
{
    switch (op) {
    case TM_BINARY_ADD: return a + b;
    case TM_BINARY_SUB: return a - b;
    case TM_BINARY_MUL: return a * b;
    default: return a / b;
    }
}

/* The same layout with fewer dims: drops dims of size 1 and merges each
 * dim into the next inner one when both operands step through them as one
 * (a[i][j] at i*S*sa + j*sa, likewise b, where S is the inner size). Same
 * elements in the same row-major order; longer rows for the kernels. */
static void bcast_collapse(tm_bcast *out, const tm_bcast *in)
{
    memset(out, 0, sizeof *out);
    int nd = 0; /* dims of out so far, innermost first, reversed below */
    int64_t shape[TM_MAX_DIMS], sa[TM_MAX_DIMS], sb[TM_MAX_DIMS];
    for (int d = in->ndim - 1; d >= 0; d--) {
        if (in->shape[d] == 1) continue;
        if (nd > 0 && in->sa[d] == sa[nd - 1] * shape[nd - 1] &&
            in->sb[d] == sb[nd - 1] * shape[nd - 1]) {
            shape[nd - 1] *= in->shape[d];
            continue;
        }
        shape[nd] = in->shape[d];
        sa[nd] = in->sa[d];
        sb[nd] = in->sb[d];
        nd++;
    }
    if (nd == 0) { /* a single element */
        out->ndim = 1;
        out->shape[0] = 1;
        return;
    }
    out->ndim = nd;
    for (int i = 0; i < nd; i++) {
        out->shape[i] = shape[nd - 1 - i];
        out->sa[i] = sa[nd - 1 - i];
        out->sb[i] = sb[nd - 1 - i];
    }
}

/* One row of a binary op in plain C: out[i] = a[i*sa] op b[i*sb]. */
static void binary_row_c(tm_binary op, float *o, const float *a, int64_t sa, const float *b,
                         int64_t sb, int64_t n)
{
#define ROW(EXPR)                                                                                  \
    for (int64_t i = 0; i < n; i++) {                                                              \
        float x = a[i * sa], y = b[i * sb];                                                        \
        o[i] = EXPR;                                                                               \
    }                                                                                              \
    break
    switch (op) {
    case TM_BINARY_ADD: ROW(x + y);
    case TM_BINARY_SUB: ROW(x - y);
    case TM_BINARY_MUL: ROW(x * y);
    case TM_BINARY_DIV: ROW(x / y);
    }
#undef ROW
}

typedef struct {
    tm_binary op;
    float *out;
    const float *a, *b;
    tm_bcast bc;         /* collapsed */
    int64_t n, inner;    /* out has n elements, rows of `inner` (the last dim) */
    const tm_basic_simd *v;
} binary_ctx;

/* Offsets of row r (the index over every dim but the last) in a and b. */
static void row_offsets(const tm_bcast *bc, int64_t r, int64_t *oa, int64_t *ob)
{
    int64_t a = 0, b = 0;
    for (int d = bc->ndim - 2; d >= 0; d--) {
        int64_t i = r % bc->shape[d];
        r /= bc->shape[d];
        a += i * bc->sa[d];
        b += i * bc->sb[d];
    }
    *oa = a;
    *ob = b;
}

/* Task t: elements [t*CHUNK, (t+1)*CHUNK) of out in row-major order, as
 * pieces of rows. Elementwise, so where the pieces fall changes nothing. */
static void binary_fwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    binary_ctx *c = p;
    const tm_bcast *bc = &c->bc;
    int last = bc->ndim - 1;
    int64_t sa = bc->sa[last], sb = bc->sb[last], n = c->inner;
    int64_t lo = t * CHUNK, hi = lo + CHUNK < c->n ? lo + CHUNK : c->n;
    for (int64_t r = lo / n; r * n < hi; r++) {
        int64_t i0 = lo > r * n ? lo - r * n : 0, i1 = hi - r * n < n ? hi - r * n : n;
        int64_t oa, ob;
        row_offsets(bc, r, &oa, &ob);
        const float *a = c->a + oa + i0 * sa, *b = c->b + ob + i0 * sb;
        float *o = c->out + r * n + i0;
        if (c->v)
            c->v->binary_row(c->op, o, a, sa, b, sb, i1 - i0);
        else
            binary_row_c(c->op, o, a, sa, b, sb, i1 - i0);
    }
}

static int64_t bcast_numel(const tm_bcast *bc)
{
    int64_t n = 1;
    for (int i = 0; i < bc->ndim; i++) n *= bc->shape[i];
    return n;
}

void tm_binary_forward(tm_binary op, float *out, const float *a, const float *b,
                       const tm_bcast *bc)
{
    if (bc->ndim == 0) {
        out[0] = binop(op, a[0], b[0]);
        return;
    }
    int64_t n = bcast_numel(bc);
    if (n == 0) return;
    binary_ctx c = {.op = op, .out = out, .a = a, .b = b, .n = n, .v = simd()};
    bcast_collapse(&c.bc, bc);
    c.inner = c.bc.shape[c.bc.ndim - 1];
    tm_parallel_for(nchunks(n, CHUNK), binary_fwd_task, &c);
}

/* Gradient of one operand. When it is not broadcast (same element count as
 * out), each element gets one contribution: parallel over chunks of
 * elements. A broadcast operand that varies along the last axis (a bias)
 * is summed over rows by tasks that each own a range of columns; any other
 * broadcast operand sums its contributions in out's row-major order on one
 * thread. Every element's sum runs in row order either way. */
typedef struct {
    tm_binary op;
    int which; /* 0: a, 1: b */
    float *d;
    const float *dout, *a, *b;
    tm_bcast bc; /* collapsed */
    int64_t n, rows, inner;
    int bias_like; /* d is (inner), the same for every row, and op adds or subtracts */
    const tm_basic_simd *v;
} binary_bwd_ctx;

/* Columns [i0, i1) of task t of nt when `total` columns are dealt out in
 * whole cache lines (16 floats): tasks never write the same line, and the
 * vector kernels get whole vectors but at the very end. */
static void column_range(int64_t total, int64_t t, int64_t nt, int64_t *i0, int64_t *i1)
{
    tm_split_range((total + 15) / 16, t, nt, i0, i1);
    *i0 *= 16;
    *i1 = *i1 * 16 < total ? *i1 * 16 : total;
}

/* Column tasks for a sum over rows: about 32-64 columns each, at most 16. */
static int64_t column_tasks(int64_t C)
{
    int64_t lines = (C + 15) / 16;
    return lines < 2 ? 1 : (lines / 2 < 16 ? lines / 2 : 16);
}

static inline float dgrad(tm_binary op, int which, float g, float a, float b)
{
    switch (op) {
    case TM_BINARY_ADD: return g;
    case TM_BINARY_SUB: return which ? -g : g;
    case TM_BINARY_MUL: return which ? g * a : g * b;
    default: return which ? -g * a / (b * b) : g / b;
    }
}

/* Row r, columns i0..i1-1 of the last axis. */
static void binary_bwd_piece(const binary_bwd_ctx *c, int64_t r, int64_t i0, int64_t i1)
{
    const tm_bcast *bc = &c->bc;
    int last = bc->ndim - 1;
    int64_t sa = bc->sa[last], sb = bc->sb[last], n = c->inner;
    int64_t sd = c->which ? sb : sa;
    int64_t oa, ob;
    row_offsets(bc, r, &oa, &ob);
    const float *a = c->a + oa, *b = c->b + ob, *g = c->dout + r * n;
    float *d = c->d + (c->which ? ob : oa);
    if (c->v && sd == 1) {
        c->v->binary_bwd_row(c->op, c->which, d + i0, g + i0, a + i0 * sa, sa, b + i0 * sb, sb,
                             i1 - i0);
        return;
    }
    for (int64_t i = i0; i < i1; i++)
        d[i * sd] += dgrad(c->op, c->which, g[i], a[i * sa], b[i * sb]);
}

/* A broadcast operand: columns [i0, i1) summed over every row in order. */
static void binary_bwd_cols_task(void *p, int64_t t, int64_t nt)
{
    binary_bwd_ctx *c = p;
    int64_t i0, i1;
    column_range(c->inner, t, nt, &i0, &i1);
    if (c->v && c->bias_like) {
        float sign = c->which && c->op == TM_BINARY_SUB ? -1.0f : 1.0f;
        c->v->column_sum(c->d + i0, c->dout + i0, c->rows, c->inner, i1 - i0, sign);
        return;
    }
    for (int64_t r = 0; r < c->rows; r++) binary_bwd_piece(c, r, i0, i1);
}

/* A full operand: elements [t*CHUNK, (t+1)*CHUNK) of out. */
static void binary_bwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    binary_bwd_ctx *c = p;
    int64_t n = c->inner, lo = t * CHUNK, hi = lo + CHUNK < c->n ? lo + CHUNK : c->n;
    for (int64_t r = lo / n; r * n < hi; r++)
        binary_bwd_piece(c, r, lo > r * n ? lo - r * n : 0, hi - r * n < n ? hi - r * n : n);
}

void tm_binary_backward(tm_binary op, float *da, float *db, const float *dout, const float *a,
                        const float *b, const tm_bcast *bc, int64_t na, int64_t nb)
{
    if (bc->ndim == 0) {
        if (da) da[0] += dgrad(op, 0, dout[0], a[0], b[0]);
        if (db) db[0] += dgrad(op, 1, dout[0], a[0], b[0]);
        return;
    }
    int64_t n = bcast_numel(bc);
    if (n == 0) return;
    tm_bcast cb;
    bcast_collapse(&cb, bc);
    int64_t inner = cb.shape[cb.ndim - 1], rows = n / inner;
    for (int which = 0; which < 2; which++) {
        float *d = which ? db : da;
        if (!d) continue;
        const int64_t *sd = which ? cb.sb : cb.sa;
        binary_bwd_ctx c = {.op = op, .which = which, .d = d, .dout = dout, .a = a, .b = b,
                            .bc = cb, .n = n, .rows = rows, .inner = inner, .v = simd()};
        c.bias_like = cb.ndim == 2 && sd[0] == 0 && sd[1] == 1 &&
                      (op == TM_BINARY_ADD || op == TM_BINARY_SUB);
        if ((which ? nb : na) == n) {
            tm_parallel_for(nchunks(n, CHUNK), binary_bwd_task, &c);
        } else if (sd[cb.ndim - 1] != 0 && inner >= 64 && n >= CHUNK) {
            tm_parallel_for(column_tasks(inner), binary_bwd_cols_task, &c);
        } else {
            binary_bwd_cols_task(&c, 0, 1);
        }
    }
}

/* -------------------------------------------------------- reductions */

/* Strides of out (x's shape with reduced axes of size 1) over x's axes:
 * 0 along reduced axes. */
static void reduce_strides(int ndim, const int64_t *shape, const int *reduce, int64_t *os)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        os[i] = reduce[i] ? 0 : s;
        if (!reduce[i]) s *= shape[i];
    }
}

void tm_reduce_sum_forward(float *out, double *work, const float *x, int ndim,
                           const int64_t *shape, const int *reduce, double scale)
{
    int64_t os[TM_MAX_DIMS], nout = 1, n = 1;
    reduce_strides(ndim, shape, reduce, os);
    for (int i = 0; i < ndim; i++) {
        n *= shape[i];
        if (!reduce[i]) nout *= shape[i];
    }
    memset(work, 0, (size_t)nout * sizeof *work);
    int64_t idx[TM_MAX_DIMS] = {0}, off = 0;
    for (int64_t k = 0; k < n; k++) {
        work[off] += x[k];
        for (int i = ndim - 1; i >= 0; i--) {
            off += os[i];
            if (++idx[i] < shape[i]) break;
            off -= os[i] * shape[i];
            idx[i] = 0;
        }
    }
    for (int64_t i = 0; i < nout; i++) out[i] = (float)(work[i] * scale);
}

typedef struct {
    float *dx;
    const float *dout;
    int ndim;
    const int64_t *shape;
    int64_t os[TM_MAX_DIMS];
    int64_t n;
    float scale;
} reduce_bwd_ctx;

static void reduce_bwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    reduce_bwd_ctx *c = p;
    int64_t lo = t * CHUNK, hi = lo + CHUNK < c->n ? lo + CHUNK : c->n;
    int64_t idx[TM_MAX_DIMS], r = lo, off = 0;
    for (int i = c->ndim - 1; i >= 0; i--) {
        idx[i] = r % c->shape[i];
        r /= c->shape[i];
        off += idx[i] * c->os[i];
    }
    for (int64_t k = lo; k < hi; k++) {
        c->dx[k] += c->dout[off] * c->scale;
        for (int i = c->ndim - 1; i >= 0; i--) {
            off += c->os[i];
            if (++idx[i] < c->shape[i]) break;
            off -= c->os[i] * c->shape[i];
            idx[i] = 0;
        }
    }
}

void tm_reduce_sum_backward(float *dx, const float *dout, int ndim, const int64_t *shape,
                            const int *reduce, float scale)
{
    reduce_bwd_ctx c = {.dx = dx, .dout = dout, .ndim = ndim, .shape = shape, .scale = scale};
    reduce_strides(ndim, shape, reduce, c.os);
    c.n = 1;
    for (int i = 0; i < ndim; i++) c.n *= shape[i];
    if (ndim == 0) {
        dx[0] += dout[0] * scale;
        return;
    }
    tm_parallel_for(nchunks(c.n, CHUNK), reduce_bwd_task, &c);
}

/* ------------------------------------------------------ row kernels */

typedef struct {
    float *y, *dx, *a1, *a2, *dw, *db;
    const float *x, *dy, *w, *b, *s1, *s2;
    const int32_t *ids;
    int64_t rows, C;
    float eps;
    int flag;
    const tm_basic_simd *v;
} row_ctx;

#define ROWS_PER_TASK(C) ((C) >= 4096 ? 1 : 4096 / (C) + 1)

static int64_t row_tasks(int64_t rows, int64_t C) { return nchunks(rows, ROWS_PER_TASK(C)); }

static void row_range(const row_ctx *c, int64_t t, int64_t *lo, int64_t *hi)
{
    int64_t per = ROWS_PER_TASK(c->C);
    *lo = t * per;
    *hi = *lo + per < c->rows ? *lo + per : c->rows;
}

static void softmax_fwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    row_ctx *c = p;
    int64_t lo, hi, C = c->C;
    row_range(c, t, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = c->x + r * C;
        float *y = c->y + r * C;
        if (c->v) {
            c->v->softmax_row(y, x, C, c->flag);
            continue;
        }
        float m = -INFINITY;
        for (int64_t i = 0; i < C; i++) m = x[i] > m ? x[i] : m;
        double s = 0;
        for (int64_t i = 0; i < C; i++) s += expf(x[i] - m);
        if (c->flag) {
            float lse = m + (float)log(s);
            for (int64_t i = 0; i < C; i++) y[i] = x[i] - lse;
        } else {
            float inv = (float)(1.0 / s);
            for (int64_t i = 0; i < C; i++) y[i] = expf(x[i] - m) * inv;
        }
    }
}

static void softmax_bwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    row_ctx *c = p;
    int64_t lo, hi, C = c->C;
    row_range(c, t, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *y = c->s1 + r * C, *dy = c->dy + r * C;
        float *dx = c->dx + r * C;
        if (c->v) {
            c->v->softmax_bwd_row(dx, dy, y, C, c->flag);
            continue;
        }
        double s = 0;
        if (c->flag) {
            for (int64_t i = 0; i < C; i++) s += dy[i];
            for (int64_t i = 0; i < C; i++) dx[i] += dy[i] - expf(y[i]) * (float)s;
        } else {
            for (int64_t i = 0; i < C; i++) s += (double)dy[i] * y[i];
            for (int64_t i = 0; i < C; i++) dx[i] += y[i] * (dy[i] - (float)s);
        }
    }
}

void tm_softmax_forward(float *y, const float *x, int64_t rows, int64_t C, int log)
{
    row_ctx c = {.y = y, .x = x, .rows = rows, .C = C, .flag = log, .v = simd()};
    tm_parallel_for(row_tasks(rows, C), softmax_fwd_task, &c);
}

void tm_softmax_backward(float *dx, const float *dy, const float *y, int64_t rows, int64_t C,
                         int log)
{
    row_ctx c = {.dx = dx, .dy = dy, .s1 = y, .rows = rows, .C = C, .flag = log, .v = simd()};
    tm_parallel_for(row_tasks(rows, C), softmax_bwd_task, &c);
}

static void layernorm_fwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    row_ctx *c = p;
    int64_t lo, hi, C = c->C;
    row_range(c, t, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = c->x + r * C;
        float *y = c->y + r * C;
        if (c->v) {
            float m, rs;
            c->v->layernorm_row(y, &m, &rs, x, c->w, c->b, C, c->eps);
            if (c->a1) c->a1[r] = m;
            if (c->a2) c->a2[r] = rs;
            continue;
        }
        double s = 0, v = 0;
        for (int64_t i = 0; i < C; i++) s += x[i];
        float m = (float)(s / C);
        for (int64_t i = 0; i < C; i++) v += (double)(x[i] - m) * (x[i] - m);
        float rs = (float)(1.0 / sqrt(v / C + c->eps));
        if (c->a1) c->a1[r] = m;
        if (c->a2) c->a2[r] = rs;
        for (int64_t i = 0; i < C; i++) {
            float n = (x[i] - m) * rs;
            if (c->w) n *= c->w[i];
            if (c->b) n += c->b[i];
            y[i] = n;
        }
    }
}

void tm_layernorm_forward(float *y, float *mean, float *rstd, const float *x,
                          const float *weight, const float *bias, int64_t rows, int64_t C,
                          float eps)
{
    row_ctx c = {.y = y, .a1 = mean, .a2 = rstd, .x = x, .w = weight, .b = bias,
                 .rows = rows, .C = C, .eps = eps, .v = simd()};
    tm_parallel_for(row_tasks(rows, C), layernorm_fwd_task, &c);
}

static void layernorm_bwd_dx_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    row_ctx *c = p;
    int64_t lo, hi, C = c->C;
    row_range(c, t, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = c->x + r * C, *dy = c->dy + r * C;
        float *dx = c->dx + r * C;
        float m = c->s1[r], rs = c->s2[r];
        if (c->v) {
            c->v->layernorm_bwd_row(dx, dy, x, c->w, m, rs, C);
            continue;
        }
        double sg = 0, sgn = 0;
        for (int64_t i = 0; i < C; i++) {
            float g = dy[i] * (c->w ? c->w[i] : 1.0f);
            sg += g;
            sgn += (double)g * (x[i] - m) * rs;
        }
        float mg = (float)(sg / C), mgn = (float)(sgn / C);
        for (int64_t i = 0; i < C; i++) {
            float g = dy[i] * (c->w ? c->w[i] : 1.0f);
            float n = (x[i] - m) * rs;
            dx[i] += rs * (g - mg - n * mgn);
        }
    }
}

/* dweight and dbias: each task owns a range of columns and sums over rows
 * in order, so the result is independent of the thread count. */
static void layernorm_bwd_dw_task(void *p, int64_t t, int64_t nt)
{
    row_ctx *c = p;
    int64_t lo, hi, C = c->C;
    column_range(C, t, nt, &lo, &hi);
    if (c->v) {
        c->v->norm_param_grad(c->dw ? c->dw + lo : NULL, c->db ? c->db + lo : NULL, c->dy + lo,
                              c->x + lo, c->flag ? NULL : c->s1, c->s2, c->rows, C, hi - lo);
        return;
    }
    for (int64_t r = 0; r < c->rows; r++) {
        const float *x = c->x + r * C, *dy = c->dy + r * C;
        float m = c->flag ? 0.0f : c->s1[r], rs = c->s2[r];
        for (int64_t i = lo; i < hi; i++) {
            if (c->dw) c->dw[i] += dy[i] * (x[i] - m) * rs;
            if (c->db) c->db[i] += dy[i];
        }
    }
}

void tm_layernorm_backward(float *dx, float *dweight, float *dbias, const float *dy,
                           const float *x, const float *weight, const float *mean,
                           const float *rstd, int64_t rows, int64_t C)
{
    row_ctx c = {.dx = dx, .dw = dweight, .db = dbias, .dy = dy, .x = x, .w = weight,
                 .s1 = mean, .s2 = rstd, .rows = rows, .C = C, .v = simd()};
    if (dx) tm_parallel_for(row_tasks(rows, C), layernorm_bwd_dx_task, &c);
    if (dweight || dbias) tm_parallel_for(column_tasks(C), layernorm_bwd_dw_task, &c);
}

static void rmsnorm_fwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    row_ctx *c = p;
    int64_t lo, hi, C = c->C;
    row_range(c, t, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = c->x + r * C;
        float *y = c->y + r * C;
        double s = 0;
        for (int64_t i = 0; i < C; i++) s += (double)x[i] * x[i];
        float rs = (float)(1.0 / sqrt(s / C + c->eps));
        if (c->a2) c->a2[r] = rs;
        for (int64_t i = 0; i < C; i++) y[i] = x[i] * rs * (c->w ? c->w[i] : 1.0f);
    }
}

void tm_rmsnorm_forward(float *y, float *rstd, const float *x, const float *weight,
                        int64_t rows, int64_t C, float eps)
{
    row_ctx c = {.y = y, .a2 = rstd, .x = x, .w = weight, .rows = rows, .C = C, .eps = eps};
    tm_parallel_for(row_tasks(rows, C), rmsnorm_fwd_task, &c);
}

static void rmsnorm_bwd_dx_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    row_ctx *c = p;
    int64_t lo, hi, C = c->C;
    row_range(c, t, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = c->x + r * C, *dy = c->dy + r * C;
        float *dx = c->dx + r * C;
        float rs = c->s2[r];
        double s = 0;
        for (int64_t i = 0; i < C; i++) s += (double)dy[i] * (c->w ? c->w[i] : 1.0f) * x[i];
        float k = (float)(s / C) * rs * rs * rs;
        for (int64_t i = 0; i < C; i++) dx[i] += dy[i] * (c->w ? c->w[i] : 1.0f) * rs - x[i] * k;
    }
}

void tm_rmsnorm_backward(float *dx, float *dweight, const float *dy, const float *x,
                         const float *weight, const float *rstd, int64_t rows, int64_t C)
{
    row_ctx c = {.dx = dx, .dw = dweight, .dy = dy, .x = x, .w = weight, .s2 = rstd,
                 .rows = rows, .C = C, .flag = 1, .v = simd()};
    if (dx) tm_parallel_for(row_tasks(rows, C), rmsnorm_bwd_dx_task, &c);
    if (dweight) tm_parallel_for(column_tasks(C), layernorm_bwd_dw_task, &c);
}

static void l2_fwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    row_ctx *c = p;
    int64_t lo, hi, C = c->C;
    row_range(c, t, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *x = c->x + r * C;
        float *y = c->y + r * C;
        double s = 0;
        for (int64_t i = 0; i < C; i++) s += (double)x[i] * x[i];
        float n = (float)sqrt(s);
        if (n < c->eps) n = c->eps;
        c->a1[r] = n;
        for (int64_t i = 0; i < C; i++) y[i] = x[i] / n;
    }
}

static void l2_bwd_task(void *p, int64_t t, int64_t nt)
{
    (void)nt;
    row_ctx *c = p;
    int64_t lo, hi, C = c->C;
    row_range(c, t, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *y = c->s1 + r * C, *dy = c->dy + r * C;
        float *dx = c->dx + r * C;
        float n = c->s2[r];
        if (n <= c->eps) { /* clamped: y = x / eps is linear in x */
            for (int64_t i = 0; i < C; i++) dx[i] += dy[i] / n;
            continue;
        }
        double s = 0;
        for (int64_t i = 0; i < C; i++) s += (double)y[i] * dy[i];
        for (int64_t i = 0; i < C; i++) dx[i] += (dy[i] - y[i] * (float)s) / n;
    }
}

void tm_l2norm_forward(float *y, float *norm, const float *x, int64_t rows, int64_t C,
                       float eps)
{
    row_ctx c = {.y = y, .a1 = norm, .x = x, .rows = rows, .C = C, .eps = eps};
    tm_parallel_for(row_tasks(rows, C), l2_fwd_task, &c);
}

void tm_l2norm_backward(float *dx, const float *dy, const float *y, const float *norm,
                        int64_t rows, int64_t C, float eps)
{
    row_ctx c = {.dx = dx, .dy = dy, .s1 = y, .s2 = norm, .rows = rows, .C = C, .eps = eps};
    tm_parallel_for(row_tasks(rows, C), l2_bwd_task, &c);
}

/* ---------------------------------------------------- cross-entropy */

/* loss_i = (1-eps) * (lse - x[y]) + eps * (lse - mean_c x[c]) */
tm_status tm_cross_entropy_forward(float *loss, const float *logits, const int32_t *labels,
                                   int64_t N, int64_t C, float smoothing, int ignore_index)
{
    double total = 0;
    int64_t count = 0;
    for (int64_t r = 0; r < N; r++) {
        int32_t y = labels[r];
        if (y == ignore_index) continue;
        if (y < 0 || y >= C)
            return tm_fail(TM_ERR_INVALID,
                           "cross_entropy: label %d of row %lld is outside 0..%lld", y,
                           (long long)r, (long long)C - 1);
        const float *x = logits + r * C;
        float m = -INFINITY;
        double s = 0, sx = 0;
        for (int64_t i = 0; i < C; i++) m = x[i] > m ? x[i] : m;
        for (int64_t i = 0; i < C; i++) {
            s += exp((double)x[i] - m);
            sx += x[i];
        }
        double lse = m + log(s);
        total += (1.0 - smoothing) * (lse - x[y]) + smoothing * (lse - sx / C);
        count++;
    }
    /* PyTorch gives NaN when every label is ignored (0/0); so do we. */
    *loss = count ? (float)(total / count) : NAN;
    return TM_OK;
}

void tm_cross_entropy_backward(float *dlogits, float dloss, const float *logits,
                               const int32_t *labels, int64_t N, int64_t C, float smoothing,
                               int ignore_index)
{
    int64_t count = 0;
    for (int64_t r = 0; r < N; r++) count += labels[r] != ignore_index;
    if (!count) return;
    float g = dloss / (float)count;
    for (int64_t r = 0; r < N; r++) {
        int32_t y = labels[r];
        if (y == ignore_index) continue;
        const float *x = logits + r * C;
        float *d = dlogits + r * C;
        float m = -INFINITY;
        double s = 0;
        for (int64_t i = 0; i < C; i++) m = x[i] > m ? x[i] : m;
        for (int64_t i = 0; i < C; i++) s += exp((double)x[i] - m);
        for (int64_t i = 0; i < C; i++) {
            float p = (float)(exp((double)x[i] - m) / s);
            float target = smoothing / (float)C + (i == y ? 1.0f - smoothing : 0.0f);
            d[i] += g * (p - target);
        }
    }
}

/* ----------------------------------------------------------- dropout */

typedef struct {
    float *y;
    const float *x;
    int64_t n;
    float p;
    uint64_t seed, stream;
    int accumulate;
    uint64_t off; /* draws of elements off + i */
} dropout_ctx;

/* Element i keeps x[i] when tm_rng_uniform_at(seed, stream, i) >= p. That
 * draw is word i & 3 of the Philox block i >> 2, turned into [0, 1) as
 * below (the same arithmetic as src/core/rng.c), so each block is drawn
 * once for its four elements: the very mask, a quarter of the Philox work. */
static void dropout_task(void *q, int64_t t, int64_t nt)
{
    (void)nt;
    dropout_ctx *c = q;
    int64_t lo = t * CHUNK, hi = lo + CHUNK < c->n ? lo + CHUNK : c->n;
    float keep = 1.0f / (1.0f - c->p);
    _Static_assert(CHUNK % 4 == 0, "a task starts on a Philox block");
    if (tm_cpu_isa() >= TM_ISA_AVX2 && c->off % 4 == 0)
        lo = tm_dropout_range_avx2(c->y, c->x, lo, hi, c->p, keep, c->seed, c->stream,
                                   c->accumulate, c->off);
    for (int64_t i0 = lo; i0 < hi; i0 += 4) {
        uint32_t r[8];
        /* draws off + i0 .. off + i0 + 3: one block, or the ends of two */
        uint64_t g0 = (uint64_t)i0 + c->off, sh = g0 & 3;
        tm_philox(c->seed, c->stream, g0 >> 2, r);
        if (sh) tm_philox(c->seed, c->stream, (g0 >> 2) + 1, r + 4);
        int64_t e = i0 + 4 < hi ? i0 + 4 : hi;
        for (int64_t i = i0; i < e; i++) {
            float u = (float)(r[i - i0 + (int64_t)sh] >> 8) * (1.0f / 16777216.0f);
            float v = u >= c->p ? c->x[i] * keep : 0.0f;
            if (c->accumulate)
                c->y[i] += v;
            else
                c->y[i] = v;
        }
    }
}

void tm_dropout_forward_at(float *y, const float *x, int64_t n, float p, uint64_t seed,
                           uint64_t stream, uint64_t off)
{
    dropout_ctx c = {y, x, n, p, seed, stream, 0, off};
    tm_parallel_for(nchunks(n, CHUNK), dropout_task, &c);
}

void tm_dropout_backward_at(float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                            uint64_t stream, uint64_t off)
{
    dropout_ctx c = {dx, dy, n, p, seed, stream, 1, off};
    tm_parallel_for(nchunks(n, CHUNK), dropout_task, &c);
}

void tm_dropout_forward(float *y, const float *x, int64_t n, float p, uint64_t seed,
                        uint64_t stream)
{
    tm_dropout_forward_at(y, x, n, p, seed, stream, 0);
}

void tm_dropout_backward(float *dx, const float *dy, int64_t n, float p, uint64_t seed,
                         uint64_t stream)
{
    tm_dropout_backward_at(dx, dy, n, p, seed, stream, 0);
}

/* --------------------------------------------------------- embedding */

tm_status tm_embedding_forward(float *out, const float *table, const int32_t *ids, int64_t n,
                               int64_t V, int64_t C)
{
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return tm_fail(TM_ERR_INVALID, "embedding: id %d at position %lld is outside 0..%lld",
                           ids[i], (long long)i, (long long)V - 1);
    for (int64_t i = 0; i < n; i++)
        memcpy(out + i * C, table + (int64_t)ids[i] * C, (size_t)C * sizeof *out);
    return TM_OK;
}

typedef struct {
    float *dtable;
    const float *dout;
    const int32_t *ids;
    int64_t n, C;
    const tm_basic_simd *v;
} emb_ctx;

/* d[i] += s[i] for i < n (vectorised when v is not NULL; exact either way). */
static void add_into(const tm_basic_simd *v, float *d, const float *s, int64_t n)
{
    if (v)
        v->binary_row(TM_BINARY_ADD, d, d, 1, s, 1, n);
    else
        for (int64_t i = 0; i < n; i++) d[i] += s[i];
}

static void emb_bwd_task(void *p, int64_t t, int64_t nt)
{
    emb_ctx *c = p;
    int64_t lo, hi;
    column_range(c->C, t, nt, &lo, &hi);
    for (int64_t i = 0; i < c->n; i++) {
        float *d = c->dtable + (int64_t)c->ids[i] * c->C;
        const float *g = c->dout + i * c->C;
        add_into(c->v, d + lo, g + lo, hi - lo);
    }
}

void tm_embedding_backward(float *dtable, const float *dout, const int32_t *ids, int64_t n,
                           int64_t C)
{
    emb_ctx c = {dtable, dout, ids, n, C, simd()};
    tm_parallel_for(column_tasks(C), emb_bwd_task, &c);
}

/* ------------------------------------------------------------ copies */

void tm_block_copy(float *dst, int64_t dst_outer_stride, int64_t dst_step, int64_t dst_off,
                   const float *src, int64_t src_outer_stride, int64_t src_step,
                   int64_t src_off, int64_t outer, int64_t count, int64_t inner,
                   int accumulate)
{
    const tm_basic_simd *v = accumulate ? simd() : NULL;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t j = 0; j < count; j++) {
            float *d = dst + o * dst_outer_stride + (j * dst_step + dst_off) * inner;
            const float *s = src + o * src_outer_stride + (j * src_step + src_off) * inner;
            if (accumulate)
                add_into(v, d, s, inner);
            else
                memcpy(d, s, (size_t)inner * sizeof *d);
        }
    }
}

typedef struct {
    float *out;
    const float *x;
    int ndim;
    int64_t oshape[TM_MAX_DIMS], xs[TM_MAX_DIMS]; /* x's strides in out's order */
    int64_t rows, inner;
    int accumulate;
    const tm_basic_simd *v;
} perm_ctx;

static void permute_task(void *p, int64_t t, int64_t nt)
{
    perm_ctx *c = p;
    int64_t lo, hi;
    tm_split_range(c->rows, t, nt, &lo, &hi);
    int last = c->ndim - 1;
    for (int64_t r = lo; r < hi; r++) {
        int64_t rr = r, off = 0;
        for (int d = last - 1; d >= 0; d--) {
            off += (rr % c->oshape[d]) * c->xs[d];
            rr /= c->oshape[d];
        }
        float *o = c->out + r * c->inner;
        const float *x = c->x + off;
        int64_t s = c->xs[last];
        if (s == 1 && c->accumulate)
            add_into(c->v, o, x, c->inner);
        else if (s == 1)
            memcpy(o, x, (size_t)c->inner * sizeof *o);
        else if (c->accumulate)
            for (int64_t i = 0; i < c->inner; i++) o[i] += x[i * s];
        else
            for (int64_t i = 0; i < c->inner; i++) o[i] = x[i * s];
    }
}

void tm_permute_copy(float *out, const float *x, int ndim, const int64_t *xshape,
                     const int *perm, int accumulate)
{
    perm_ctx c = {.out = out, .x = x, .ndim = ndim, .accumulate = accumulate, .v = simd()};
    int64_t xstride[TM_MAX_DIMS], s = 1, n = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        xstride[i] = s;
        s *= xshape[i];
    }
    for (int i = 0; i < ndim; i++) {
        c.oshape[i] = xshape[perm[i]];
        c.xs[i] = xstride[perm[i]];
        n *= c.oshape[i];
    }
    if (ndim == 0 || n == 0) {
        if (ndim == 0) out[0] = accumulate ? out[0] + x[0] : x[0];
        return;
    }
    c.inner = c.oshape[ndim - 1];
    c.rows = n / c.inner;
    int64_t tasks = nchunks(n, CHUNK);
    if (tasks > c.rows) tasks = c.rows;
    tm_parallel_for(tasks, permute_task, &c);
}
