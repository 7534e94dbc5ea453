/* dtypes, conversions between them, and dense tensors with strided views. */
#include "trimodal/core.h"

#include <math.h>
#include <string.h>

size_t tm_dtype_size(tm_dtype t)
{
    switch (t) {
    case TM_F32: return 4;
    case TM_BF16: return 2;
    case TM_F16: return 2;
    case TM_I32: return 4;
    case TM_I8: return 1;
    default: return 0;
    }
}

const char *tm_dtype_name(tm_dtype t)
{
    static const char *names[TM_DTYPE_COUNT] = {"f32", "bf16", "f16", "i32", "i8"};
    return (unsigned)t < TM_DTYPE_COUNT ? names[t] : "invalid";
}

/* ------------------------------------------------------- conversions */

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

tm_bf16 tm_f32_to_bf16(float x)
{
    uint32_t u = f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (tm_bf16)((u >> 16) | 0x40); /* quiet NaN */
    /* round to nearest, ties to even: add 0x7fff plus the lowest kept bit */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (tm_bf16)(u >> 16);
}

float tm_bf16_to_f32(tm_bf16 x) { return bits_f32((uint32_t)x << 16); }

tm_f16 tm_f32_to_f16(float x)
{
    uint32_t u = f32_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (tm_f16)(sign | 0x7e00u); /* NaN */
    if (absu >= 0x477ff000u) return (tm_f16)(sign | 0x7c00u); /* rounds to inf */
    if (absu < 0x38800000u) {
        /* subnormal or zero in f16: value = m * 2^-24 with m < 1024 */
        if (absu < 0x33000000u) return (tm_f16)sign; /* below half the smallest */
        uint32_t e = absu >> 23;
        uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
        int shift = (int)(126 - e); /* value = mant * 2^(e-150) = (mant >> shift) * 2^-24 */
        uint32_t m = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (m & 1u))) m++;
        return (tm_f16)(sign | m);
    }
    /* normal: rebias exponent 127 -> 15 and round 13 mantissa bits */
    uint32_t v = absu - (112u << 23);
    uint32_t m = v >> 13;
    uint32_t rem = v & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (m & 1u))) m++;
    return (tm_f16)(sign | m);
}

float tm_f16_to_f32(tm_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0) {
        float v = (float)m * (1.0f / 16777216.0f); /* m * 2^-24 */
        return sign ? -v : v;
    }
    if (e == 31) return bits_f32(sign | 0x7f800000u | (m << 13));
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* ------------------------------------------------------------ tensors */

int64_t tm_tensor_numel(const tm_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int tm_tensor_is_contiguous(const tm_tensor *t)
{
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != expect) return 0;
        expect *= t->shape[i];
    }
    return 1;
}

static void set_contiguous_strides(tm_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

/* Validates ndim and shape and computes the byte size with overflow checks. */
static tm_status check_shape(tm_dtype dtype, int ndim, const int64_t *shape, size_t *bytes)
{
    if ((unsigned)dtype >= TM_DTYPE_COUNT)
        return tm_fail(TM_ERR_INVALID, "tensor: invalid dtype %d", (int)dtype);
    if (ndim < 0 || ndim > TM_MAX_DIMS)
        return tm_fail(TM_ERR_INVALID, "tensor: %d dimensions; 0 to %d are supported", ndim,
                       TM_MAX_DIMS);
    size_t n = tm_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return tm_fail(TM_ERR_INVALID, "tensor: dimension %d has negative size %lld", i,
                           (long long)shape[i]);
        if (!tm_mul_size(n, (size_t)shape[i], &n))
            return tm_fail(TM_ERR_NOMEM, "tensor: size overflows");
    }
    *bytes = n;
    return TM_OK;
}

tm_status tm_tensor_new(tm_tensor **out, tm_dtype dtype, int ndim, const int64_t *shape)
{
    *out = NULL;
    size_t bytes;
    tm_status s = check_shape(dtype, ndim, shape, &bytes);
    if (s) return s;
    tm_tensor *t = tm_calloc(1, sizeof *t);
    if (!t) return TM_ERR_NOMEM;
    t->data = tm_calloc(1, bytes ? bytes : 1);
    if (!t->data) {
        tm_free(t);
        return TM_ERR_NOMEM;
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    set_contiguous_strides(t);
    t->owns_data = 1;
    *out = t;
    return TM_OK;
}

tm_status tm_tensor_wrap(tm_tensor **out, void *data, tm_dtype dtype, int ndim,
                         const int64_t *shape)
{
    *out = NULL;
    size_t bytes;
    tm_status s = check_shape(dtype, ndim, shape, &bytes);
    if (s) return s;
    if (!data && bytes) return tm_fail(TM_ERR_INVALID, "tensor_wrap: NULL data");
    tm_tensor *t = tm_calloc(1, sizeof *t);
    if (!t) return TM_ERR_NOMEM;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    set_contiguous_strides(t);
    t->data = data;
    t->owns_data = 0;
    *out = t;
    return TM_OK;
}

void tm_tensor_free(tm_tensor *t)
{
    if (!t) return;
    if (t->owns_data) tm_free(t->data);
    tm_free(t);
}

tm_status tm_tensor_view_reshape(tm_tensor *out, const tm_tensor *src, int ndim,
                                 const int64_t *shape)
{
    size_t bytes;
    tm_status s = check_shape(src->dtype, ndim, shape, &bytes);
    if (s) return s;
    if (!tm_tensor_is_contiguous(src))
        return tm_fail(TM_ERR_INVALID, "reshape: the source view is not contiguous; copy it first");
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if (n != tm_tensor_numel(src))
        return tm_fail(TM_ERR_INVALID, "reshape: %lld elements cannot become %lld",
                       (long long)tm_tensor_numel(src), (long long)n);
    tm_tensor t = *src;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    set_contiguous_strides(&t);
    t.owns_data = 0;
    *out = t;
    return TM_OK;
}

tm_status tm_tensor_view_permute(tm_tensor *out, const tm_tensor *src, const int *perm)
{
    int seen[TM_MAX_DIMS] = {0};
    tm_tensor t = *src;
    for (int i = 0; i < src->ndim; i++) {
        int p = perm[i];
        if (p < 0 || p >= src->ndim || seen[p])
            return tm_fail(TM_ERR_INVALID, "permute: entry %d (%d) is not a permutation of 0..%d",
                           i, p, src->ndim - 1);
        seen[p] = 1;
        t.shape[i] = src->shape[p];
        t.stride[i] = src->stride[p];
    }
    t.owns_data = 0;
    *out = t;
    return TM_OK;
}

tm_status tm_tensor_view_slice(tm_tensor *out, const tm_tensor *src, int axis, int64_t start,
                               int64_t stop, int64_t step)
{
    if (axis < 0) axis += src->ndim;
    if (axis < 0 || axis >= src->ndim)
        return tm_fail(TM_ERR_INVALID, "slice: axis out of range for a %d-d tensor", src->ndim);
    int64_t n = src->shape[axis];
    if (step < 1) return tm_fail(TM_ERR_INVALID, "slice: step must be >= 1, got %lld",
                                 (long long)step);
    if (start < 0 || start > n || stop < start || stop > n)
        return tm_fail(TM_ERR_INVALID, "slice: [%lld, %lld) is outside 0..%lld",
                       (long long)start, (long long)stop, (long long)n);
    tm_tensor t = *src;
    t.shape[axis] = (stop - start + step - 1) / step;
    t.stride[axis] = src->stride[axis] * step;
    t.data = (char *)src->data + (size_t)(start * src->stride[axis]) * tm_dtype_size(src->dtype);
    t.owns_data = 0;
    *out = t;
    return TM_OK;
}

static double load_elem(const void *p, tm_dtype t)
{
    switch (t) {
    case TM_F32: return *(const float *)p;
    case TM_BF16: return tm_bf16_to_f32(*(const tm_bf16 *)p);
    case TM_F16: return tm_f16_to_f32(*(const tm_f16 *)p);
    case TM_I32: return *(const int32_t *)p;
    case TM_I8: return *(const int8_t *)p;
    default: return 0;
    }
}

static double round_sat(double v, double lo, double hi)
{
    if (isnan(v)) return 0;
    v = nearbyint(v);
    return v < lo ? lo : v > hi ? hi : v;
}

static void store_elem(void *p, tm_dtype t, double v)
{
    switch (t) {
    case TM_F32: *(float *)p = (float)v; break;
    case TM_BF16: *(tm_bf16 *)p = tm_f32_to_bf16((float)v); break;
    case TM_F16: *(tm_f16 *)p = tm_f32_to_f16((float)v); break;
    case TM_I32: *(int32_t *)p = (int32_t)round_sat(v, INT32_MIN, INT32_MAX); break;
    case TM_I8: *(int8_t *)p = (int8_t)round_sat(v, -128, 127); break;
    default: break;
    }
}

static const void *elem_ptr(const tm_tensor *t, const int64_t *idx)
{
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) off += idx[i] * t->stride[i];
    return (const char *)t->data + off * (int64_t)tm_dtype_size(t->dtype);
}

tm_status tm_tensor_copy(tm_tensor *dst, const tm_tensor *src)
{
    if (dst->ndim != src->ndim)
        return tm_fail(TM_ERR_INVALID, "copy: %d-d into %d-d", src->ndim, dst->ndim);
    for (int i = 0; i < src->ndim; i++)
        if (dst->shape[i] != src->shape[i])
            return tm_fail(TM_ERR_INVALID, "copy: shapes differ at dimension %d (%lld vs %lld)",
                           i, (long long)src->shape[i], (long long)dst->shape[i]);
    int64_t n = tm_tensor_numel(src);
    if (n == 0) return TM_OK;
    if (dst->dtype == src->dtype && tm_tensor_is_contiguous(dst) && tm_tensor_is_contiguous(src)) {
        memmove(dst->data, src->data, (size_t)n * tm_dtype_size(src->dtype));
        return TM_OK;
    }
    int64_t idx[TM_MAX_DIMS] = {0};
    for (int64_t k = 0; k < n; k++) {
        store_elem((void *)elem_ptr(dst, idx), dst->dtype, load_elem(elem_ptr(src, idx), src->dtype));
        for (int i = src->ndim - 1; i >= 0; i--) {
            if (++idx[i] < src->shape[i]) break;
            idx[i] = 0;
        }
    }
    return TM_OK;
}

double tm_tensor_get(const tm_tensor *t, const int64_t *index)
{
    return load_elem(elem_ptr(t, index), t->dtype);
}
