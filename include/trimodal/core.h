/*
 * trimodal core: status codes and error messages, dtypes and conversions,
 * tensors with strided views, memory arenas, the thread pool and the
 * counter-based random number generator.
 *
 * Thread-safety: every function here may be called from any thread. The
 * last error message is per thread. A tm_tensor or tm_arena must not be
 * mutated from two threads at once.
 */
#ifndef TRIMODAL_CORE_H
#define TRIMODAL_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status */

typedef enum {
    TM_OK = 0,
    TM_ERR_INVALID,   /* a bad argument: wrong shape, dtype, index, option */
    TM_ERR_NOMEM,     /* an allocation failed or a size overflowed */
    TM_ERR_IO,        /* the operating system refused a read or write */
    TM_ERR_FORMAT,    /* a file or buffer is corrupt or not what it claims */
    TM_ERR_LIMIT,     /* an input is larger than a configured limit */
    TM_ERR_UNSUPPORTED, /* valid, but not implemented for this case */
    TM_ERR_INTERNAL,  /* a broken invariant: a bug in trimodal */
    TM_STATUS_COUNT
} tm_status;

/* The message of the last failure on this thread ("" if none). Valid until
 * the next trimodal call on this thread that fails. */
const char *tm_last_error(void);

/* A short fixed name for a status ("ok", "invalid argument", ...). */
const char *tm_status_name(tm_status s);

/* Records a message for tm_last_error() and returns s; printf-style. Used by
 * every layer of the library; applications may use it too. */
tm_status tm_fail(tm_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clears this thread's error message. */
void tm_clear_error(void);

/* Internal invariants abort through a hook that an application may replace
 * (for example to log before dying). The hook must not return. */
typedef void (*tm_abort_hook)(const char *file, int line, const char *expr);
void tm_set_abort_hook(tm_abort_hook hook);
void tm_assert_fail(const char *file, int line, const char *expr);
#define TM_ASSERT(x) ((x) ? (void)0 : tm_assert_fail(__FILE__, __LINE__, #x))

/* ---------------------------------------------------------------- dtypes */

typedef enum {
    TM_F32 = 0,
    TM_BF16,
    TM_F16,
    TM_I32,
    TM_I8,
    TM_DTYPE_COUNT
} tm_dtype;

size_t tm_dtype_size(tm_dtype t);      /* bytes per element; 0 if invalid */
const char *tm_dtype_name(tm_dtype t); /* "f32", "bf16", ... */

typedef uint16_t tm_bf16;
typedef uint16_t tm_f16;

/* Conversions. f32 -> bf16 rounds to nearest, ties to even; NaN stays NaN.
 * f32 -> f16 rounds to nearest even, overflow gives inf, handles subnormals. */
tm_bf16 tm_f32_to_bf16(float x);
float tm_bf16_to_f32(tm_bf16 x);
tm_f16 tm_f32_to_f16(float x);
float tm_f16_to_f32(tm_f16 x);

/* --------------------------------------------------------------- tensors */

#define TM_MAX_DIMS 5

/* Dense n-d array. shape and stride are in elements; stride[i] may be any
 * value >= 0 for views (0 broadcasts). A tensor either owns its data (freed
 * by tm_tensor_free) or views memory owned by someone else. */
typedef struct tm_tensor {
    tm_dtype dtype;
    int ndim;
    int64_t shape[TM_MAX_DIMS];
    int64_t stride[TM_MAX_DIMS];
    void *data;
    int owns_data;
} tm_tensor;

/* Number of elements; 0 if any dimension is 0. */
int64_t tm_tensor_numel(const tm_tensor *t);
/* 1 when the strides are those of a row-major array of the shape. */
int tm_tensor_is_contiguous(const tm_tensor *t);

/* A contiguous tensor of zeros. Fails on ndim outside 0..5, negative sizes
 * or a byte size that overflows. */
tm_status tm_tensor_new(tm_tensor **out, tm_dtype dtype, int ndim, const int64_t *shape);
/* A view of data that the caller keeps alive, row-major contiguous. */
tm_status tm_tensor_wrap(tm_tensor **out, void *data, tm_dtype dtype, int ndim,
                         const int64_t *shape);
void tm_tensor_free(tm_tensor *t); /* NULL is harmless */

/* Views share data with src and never own it. */
tm_status tm_tensor_view_reshape(tm_tensor *out, const tm_tensor *src, int ndim,
                                 const int64_t *shape); /* src must be contiguous */
tm_status tm_tensor_view_permute(tm_tensor *out, const tm_tensor *src, const int *perm);
tm_status tm_tensor_view_slice(tm_tensor *out, const tm_tensor *src, int axis,
                               int64_t start, int64_t stop, int64_t step);

/* Copies src into dst element by element (any strides, same shape),
 * converting dtype. Integer <-> float conversions round and saturate. */
tm_status tm_tensor_copy(tm_tensor *dst, const tm_tensor *src);
/* Element at a multi-index, as double (handy in tests and tools). */
double tm_tensor_get(const tm_tensor *t, const int64_t *index);

/* --------------------------------------------------------------- arenas */

/* A bump allocator over blocks; everything is freed at once. Alignment of
 * every allocation is 64 bytes. */
typedef struct tm_arena tm_arena;
tm_arena *tm_arena_new(size_t block_bytes);
void *tm_arena_alloc(tm_arena *a, size_t bytes); /* NULL + message on failure */
void tm_arena_reset(tm_arena *a);                 /* keeps the first block */
size_t tm_arena_used(const tm_arena *a);
void tm_arena_free(tm_arena *a);

/* 64-byte aligned allocation through the library's allocator. */
void *tm_alloc(size_t bytes);
void *tm_calloc(size_t n, size_t size);
void tm_free(void *p);
/* Overflow-checked size arithmetic: 0 and *out unchanged on overflow. */
int tm_mul_size(size_t a, size_t b, size_t *out);
int tm_add_size(size_t a, size_t b, size_t *out);

/* Fault injection for tests: the n-th allocation from now on (1-based) and
 * every later one fail; 0 turns it off. Returns the count of allocations
 * made since the last call. Process-wide, for test binaries only. */
long tm_alloc_fail_after(long n);

/* ---------------------------------------------------------- thread pool */

/* The library runs parallel kernels on one process-wide pool. Its size
 * comes from tm_set_num_threads(), else the TRIMODAL_THREADS environment
 * variable, else the number of online CPUs. Kernels split work so that the
 * result does not depend on the number of threads. */
tm_status tm_set_num_threads(int n); /* 1..256 */
int tm_get_num_threads(void);
/* on = 1: the calling thread runs every tm_parallel_for / tm_parallel_range
 * serially, never taking the pool (for threads of their own, such as data
 * loader workers, so they do not hold the pool the trainer's kernels
 * need); 0 restores the default. Per thread. */
void tm_thread_set_serial(int on);

/* Calls fn(ctx, i, n) for task i of n tasks (i = 0..n-1) and returns when
 * all have finished. Tasks run on the pool's threads and the caller's.
 * Nested calls from inside a task run serially on the calling thread. */
typedef void (*tm_task_fn)(void *ctx, int64_t i, int64_t n);
void tm_parallel_for(int64_t n, tm_task_fn fn, void *ctx);

/* Calls fn(ctx, begin, end) on contiguous ranges covering [0, items): in
 * parallel (about four ranges per thread) when `work`, a rough count of the
 * values the loop touches, is at least 16384, else as one call. Where the
 * cuts fall depends on the thread count, so each item's result must not
 * depend on the range it lands in (items write disjoint outputs). */
typedef void (*tm_range_fn)(void *ctx, int64_t begin, int64_t end);
void tm_parallel_range(int64_t items, int64_t work, tm_range_fn fn, void *ctx);

/* The [begin, end) range of chunk i when splitting total items into n
 * nearly equal chunks. */
void tm_split_range(int64_t total, int64_t i, int64_t n, int64_t *begin, int64_t *end);

/* ---------------------------------------------------------------- RNG */

/* Counter-based (Philox 4x32-10): the value at (seed, stream, counter) is a
 * pure function, so parallel kernels draw the same numbers whatever the
 * thread count. */
typedef struct {
    uint64_t seed;
    uint64_t stream;
    uint64_t counter; /* next 128-bit block */
} tm_rng;

tm_rng tm_rng_new(uint64_t seed, uint64_t stream);
/* Four 32-bit words of block `counter` of (seed, stream). */
void tm_philox(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4]);
uint32_t tm_rng_u32(tm_rng *r);
float tm_rng_uniform(tm_rng *r);            /* [0, 1) */
float tm_rng_normal(tm_rng *r);             /* mean 0, std 1 (Box-Muller) */
/* Uniform in [0,1) for element `index` of draw (seed, stream): stateless. */
float tm_rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t index);
float tm_rng_normal_at(uint64_t seed, uint64_t stream, uint64_t index);
/* Fills n floats: uniform in [lo, hi) or normal(mean, std), in parallel. */
void tm_rng_fill_uniform(tm_rng *r, float *x, int64_t n, float lo, float hi);
void tm_rng_fill_normal(tm_rng *r, float *x, int64_t n, float mean, float std);

/* ------------------------------------------------------------- limits
 *
 * Caps that protect memory and that have no parameter struct of their own
 * (docs/limits.md lists every limit). Each has a default (the #define named
 * beside it), a range it may be set within and a name. The table is
 * process-wide: at first use it is read from the environment variable
 * TRIMODAL_LIMITS, a comma-separated list of name=value
 * ("tokenizer_file_bytes=1048576,manifest_words=512"; values are integers,
 * optionally followed by k, m or g for KiB, MiB, GiB). Readers look limits
 * up at each call, so a change takes effect at the next read. Thread-safe.
 * Some limits can only be lowered (their maximum is their default) because
 * buffers are sized by the default. */
typedef enum {
    TM_LIMIT_AUDIO_MIN_RATE,        /* audio_min_rate: Hz; TM_AUDIO_MIN_RATE */
    TM_LIMIT_AUDIO_MAX_RATE,        /* audio_max_rate: Hz; TM_AUDIO_MAX_RATE */
    TM_LIMIT_TOKENIZER_FILE_BYTES,  /* tokenizer_file_bytes; TM_TOKENIZER_MAX_FILE_BYTES */
    TM_LIMIT_TOKENIZER_JSON_DEPTH,  /* tokenizer_json_depth; TM_TOKENIZER_MAX_JSON_DEPTH */
    TM_LIMIT_TOKENIZER_VOCAB,       /* tokenizer_vocab; TM_TOKENIZER_MAX_VOCAB */
    TM_LIMIT_TOKENIZER_TOKEN_BYTES, /* tokenizer_token_bytes; TM_TOKENIZER_MAX_TOKEN_BYTES */
    TM_LIMIT_MANIFEST_WORDS,        /* manifest_words; TM_MANIFEST_MAX_WORDS */
    TM_LIMIT_DATASET_JSON_BYTES,    /* dataset_json_bytes; TM_DATASET_MAX_BYTES */
    TM_LIMIT_DATASET_CLASSES,       /* dataset_classes; TM_DATASET_MAX_CLASSES */
    TM_LIMIT_MODEL_CONFIG_BYTES,    /* model_config_bytes: config.json; 16 MiB */
    TM_LIMIT_LABELS_JSON_BYTES,     /* labels_json_bytes: a model's labels.json; 16 MiB */
    TM_LIMIT_TENSOR_ELEMENTS,       /* tensor_elements: of one graph node; 2^40 */
    TM_LIMIT_PREPROCESS_JSON_BYTES, /* preprocess_json_bytes: preprocess.json; 1 MiB */
    TM_LIMIT_RUN_CONFIG_BYTES,      /* run_config_bytes: a training run config; 4 MiB */
    TM_LIMIT_MULTIPART_PARTS,       /* multipart_parts: per served request; 16 (at most 1024) */
    TM_LIMIT_CASCADE_JSON_BYTES,    /* cascade_json_bytes: a serving cascade file; 1 MiB */
    TM_LIMIT_INDEX_MEDIA_BYTES,     /* index_media_bytes: one image/audio file indexed; 256 MiB */
    TM_LIMIT_JSON_DEPTH,            /* json_depth: nesting of configs, manifests, requests,
                                       labels, cascades, safetensors headers; 1000 (cJSON's
                                       own limit, so also the maximum) */
    TM_LIMIT_COUNT
} tm_limit;

/* The current value (the default until set). */
int64_t tm_limit_get(tm_limit l);
/* Sets a limit; TM_ERR_INVALID naming the limit and its range when v is
 * outside it, or l is not a limit. */
tm_status tm_limit_set(tm_limit l, int64_t v);
/* The default, and the range a value may take (min or max may be NULL). */
int64_t tm_limit_default(tm_limit l);
void tm_limit_range(tm_limit l, int64_t *min, int64_t *max);
/* The name ("tokenizer_file_bytes"), NULL when l is not a limit. */
const char *tm_limit_name(tm_limit l);
/* For messages: "tokenizer_file_bytes; change it with
 * TRIMODAL_LIMITS=tokenizer_file_bytes=N or trimodal --limits
 * tokenizer_file_bytes=N". "" when l is not a limit. */
const char *tm_limit_hint(tm_limit l);
/* The limit called name, or -1 (TM_ERR_INVALID recorded, listing the
 * names) when there is none. */
int tm_limit_from_name(const char *name);
/* Applies a "name=value,name=value" list; source names it in messages
 * ("TRIMODAL_LIMITS", "--limit"). On error nothing of the list is applied;
 * TM_ERR_INVALID names the bad item. */
tm_status tm_limits_parse(const char *spec, const char *source);
/* Reads TRIMODAL_LIMITS (once per process; later calls return the first
 * result). tm_limit_get() calls it; a bad TRIMODAL_LIMITS then leaves the
 * defaults in place, so programs should call this at start-up and stop on
 * an error, as the trimodal command does. */
tm_status tm_limits_init(void);
/* Every limit back to its default (for tests). */
void tm_limits_reset(void);
/* TM_OK when the JSON text's objects and arrays nest at most json_depth
 * deep (brackets inside strings do not count; malformed text is left to
 * the parser); else TM_ERR_LIMIT naming `what`, the depth and the limit.
 * Called before parsing outside JSON. */
tm_status tm_json_check_depth(const char *text, size_t len, const char *what);

/* --------------------------------------------------------------- misc */

/* CPU features detected at run time. */
typedef enum { TM_ISA_SCALAR = 0, TM_ISA_AVX2 = 1, TM_ISA_AVX512 = 2 } tm_isa;
tm_isa tm_cpu_isa(void);
int tm_cpu_has_avx512bf16(void);
/* Forces a lower ISA (for tests that compare kernels); -1 restores
 * detection. The TRIMODAL_ISA environment variable (scalar, avx2, avx512)
 * does the same at start-up. */
void tm_force_isa(int isa);
const char *tm_isa_name(tm_isa isa);

/* Monotonic time in seconds. */
double tm_time_s(void);

const char *tm_version(void);

#ifdef __cplusplus
}
#endif
#endif
