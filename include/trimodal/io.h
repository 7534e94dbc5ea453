/*
 * trimodal io: safetensors files (read through mmap, written atomically) and
 * atomic file writing.
 *
 * The safetensors format: 8 bytes holding N, the header's length, as a
 * little-endian u64; N bytes of UTF-8 JSON (the header), starting with '{'
 * and possibly padded at the end with spaces; then the data section. The
 * header maps each tensor name to {"dtype": "F32", "shape": [2, 3],
 * "data_offsets": [begin, end]} (byte offsets into the data section,
 * row-major, little-endian) and may hold "__metadata__", an object of
 * string values.
 *
 * What the reader accepts. Every check below failing gives TM_ERR_FORMAT
 * with a message naming the file and the problem; the reader never reads
 * outside the buffer, whatever the bytes.
 *  - the file is at least 8 bytes; N fits in the file; the header is valid
 *    UTF-8 without NUL bytes, starts with '{', is one JSON object, and
 *    anything after it is JSON whitespace;
 *  - N is at most TM_SAFETENSORS_MAX_HEADER (100 MiB), else TM_ERR_LIMIT;
 *  - no name appears twice (the same for __metadata__ keys);
 *  - each entry is an object with "dtype" (a string), "shape" (an array of
 *    non-negative integers, at most TM_MAX_DIMS of them, else
 *    TM_ERR_UNSUPPORTED) and "data_offsets" (two integers, begin <= end);
 *    other keys are ignored. Numbers must be integral, non-negative and
 *    below 2^53 (so 1.5, -1 and 1e300 are rejected; 1e2 reads as 100, since
 *    the JSON parser does not keep the spelling);
 *  - the dtype is one the format defines (F64 F32 F16 BF16 I64 I32 I16 I8
 *    U64 U32 U16 U8 BOOL F8_E4M3 F8_E5M2 F8_E8M0 F6_E2M3 F6_E3M2 F4 C64);
 *    only F32 BF16 F16 I32 I8 can be read as tensors, but files holding
 *    others (an I64 position_ids buffer, say) open, and tm_safetensors_info()
 *    describes those tensors;
 *  - end - begin equals the product of the shape times the dtype's size
 *    (overflow-checked); empty tensors (a 0 in the shape) are allowed;
 *  - the ranges lie inside the data section, do not overlap and, as the
 *    format's specification requires (it forbids polyglot files), cover it
 *    with no gap between tensors and no bytes after the last one.
 *
 * Thread-safety: an open tm_safetensors is read-only; any of its functions
 * may be called from many threads at once. A writer is used by one thread.
 */
#ifndef TRIMODAL_IO_H
#define TRIMODAL_IO_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest header the reader and writer accept, in bytes (as the
 * reference implementation). */
#define TM_SAFETENSORS_MAX_HEADER ((size_t)100 << 20)

/* ------------------------------------------------------------- reading */

typedef struct tm_safetensors tm_safetensors; /* an opened file, read-only */

/* Opens and validates a safetensors file, mapping it into memory read-only.
 * Nothing but the header is read until tensors are used. The file must not
 * be truncated while open (the mapping would fault); replacing it by
 * rename, as tm_safetensors_write() does, is safe.
 * Fails with TM_ERR_IO when the file cannot be opened or mapped,
 * TM_ERR_FORMAT / TM_ERR_LIMIT / TM_ERR_UNSUPPORTED as listed above,
 * TM_ERR_NOMEM. *out is NULL on failure. */
tm_status tm_safetensors_open(tm_safetensors **out, const char *path);

/* The same over a buffer in memory, without copying it: the caller keeps
 * data alive and unchanged until tm_safetensors_close(). Messages name the
 * file "<memory>". */
tm_status tm_safetensors_open_memory(tm_safetensors **out, const void *data, size_t size);

/* Unmaps the file and frees everything, including the copies made by
 * tm_safetensors_get(); tensors obtained from st become invalid. NULL is
 * harmless. */
void tm_safetensors_close(tm_safetensors *st);

/* Number of tensors (not counting __metadata__). */
int tm_safetensors_count(const tm_safetensors *st);

/* Name of tensor i (0 <= i < count) in header order; NULL if i is out of
 * range. Valid while st is open. */
const char *tm_safetensors_name(const tm_safetensors *st, int i);

/* Index of the tensor called name, or -1 (binary search). */
int tm_safetensors_find(const tm_safetensors *st, const char *name);

/* What the header says about tensor i, whatever its dtype. */
typedef struct {
    const char *name;
    const char *dtype_name; /* as in the file: "F32", "I64", ... */
    int supported;          /* 1 when tm_safetensors_get() can read it */
    tm_dtype dtype;         /* meaningful when supported */
    int ndim;
    int64_t shape[TM_MAX_DIMS];
    size_t offset; /* of its first byte from the start of the file */
    size_t nbytes;
} tm_safetensors_entry;

/* Fills *out for tensor i. TM_ERR_INVALID if i is out of range. */
tm_status tm_safetensors_info(const tm_safetensors *st, int i, tm_safetensors_entry *out);

/* A view of the tensor called name: contiguous row-major, owns_data = 0,
 * valid while st is open; its data is read-only (the mapping is PROT_READ).
 * Zero-copy, pointing into the file, when the data is aligned to its
 * element size; otherwise (a header whose length is not a multiple of 8,
 * or a misaligned buffer given to open_memory) the first call copies it
 * into memory owned by st and later calls return the same copy. Fails with
 * TM_ERR_INVALID when there is no such tensor, TM_ERR_UNSUPPORTED naming
 * the dtype for dtypes other than F32 BF16 F16 I32 I8, TM_ERR_NOMEM. */
tm_status tm_safetensors_get(const tm_safetensors *st, const char *name, tm_tensor *out);

/* The same by index (0 <= i < count). */
tm_status tm_safetensors_get_at(const tm_safetensors *st, int i, tm_tensor *out);

/* The string value of key in __metadata__, or NULL when absent. */
const char *tm_safetensors_metadata(const tm_safetensors *st, const char *key);

/* Number of __metadata__ entries, and the key of entry i in header order
 * (NULL if out of range), for listing them all. */
int tm_safetensors_metadata_count(const tm_safetensors *st);
const char *tm_safetensors_metadata_key(const tm_safetensors *st, int i);

/* ------------------------------------------------------------- writing */

typedef struct {
    const char *name;
    const tm_tensor *tensor;
} tm_named_tensor;

/* Writes tensors (in the given order, both in the header and in the data)
 * and the metadata pairs meta_keys[i] = meta_values[i] to path, atomically:
 * path holds either its old content or the complete new file, never a part.
 * Tensors may have any strides; they are written contiguous, through a
 * bounded buffer, so memory use does not grow with the file. The data
 * section starts at a multiple of 8 bytes (the header is padded with
 * spaces, as the reference writer does) and holds the tensors by
 * decreasing element size (a stable order: tensors of one size stay in the
 * given order), so every tensor is aligned to its element size and loads
 * without a copy. Names must be non-empty, unique, valid UTF-8 and not
 * "__metadata__"; metadata keys unique, keys and values valid UTF-8.
 * Fails with TM_ERR_INVALID for bad arguments, TM_ERR_IO, TM_ERR_LIMIT for
 * a header over TM_SAFETENSORS_MAX_HEADER, TM_ERR_NOMEM; on failure path
 * is untouched and no temporary file is left. n may be 0, and meta_keys
 * and meta_values may be NULL when n_meta is 0. */
tm_status tm_safetensors_write(const char *path, const tm_named_tensor *tensors, int n,
                               const char *const *meta_keys, const char *const *meta_values,
                               int n_meta);

/* A streaming writer, for data that is produced piece by piece or that
 * never exists as tensors all at once (a flat parameter buffer, a
 * conversion done chunk by chunk). tm_safetensors_writer_open() fixes the
 * header from the names, dtypes and shapes of tensors (their data and
 * strides are not read, data may be NULL) and writes it; the data section
 * is then written in data order (see tm_safetensors_write(): by
 * decreasing element size, else as given; when all tensors share a dtype
 * it is the given order), which _next tells, with _write (raw row-major
 * little-endian bytes, any number at a time, possibly spanning tensors)
 * and _write_tensor (the next whole tensor, from any strides; its dtype and
 * shape must match the declared ones); _finish checks that every byte
 * arrived and commits the file. After any failure the writer is spent:
 * later calls return an error, and _finish or _abort removes the temporary
 * file. Typical use:
 *     for (int i; (i = tm_safetensors_writer_next(w)) >= 0;)
 *         if ((s = tm_safetensors_writer_write_tensor(w, t[i].tensor))) break;
 */
typedef struct tm_safetensors_writer tm_safetensors_writer;

tm_status tm_safetensors_writer_open(tm_safetensors_writer **out, const char *path,
                                     const tm_named_tensor *tensors, int n,
                                     const char *const *meta_keys,
                                     const char *const *meta_values, int n_meta);
/* Index (into the tensors given to _open) of the tensor whose data comes
 * next, -1 when all data has been written (or the writer failed). After a
 * raw _write that ended inside a tensor, the one after it. */
int tm_safetensors_writer_next(const tm_safetensors_writer *w);
tm_status tm_safetensors_writer_write(tm_safetensors_writer *w, const void *data, size_t size);
tm_status tm_safetensors_writer_write_tensor(tm_safetensors_writer *w, const tm_tensor *t);
/* Commits (fsync, rename, fsync of the directory) when every declared byte
 * was written, else fails with TM_ERR_INVALID and leaves path untouched.
 * Frees w either way. */
tm_status tm_safetensors_writer_finish(tm_safetensors_writer *w);
/* Removes the temporary file and frees w; path is untouched. NULL is
 * harmless. */
void tm_safetensors_writer_abort(tm_safetensors_writer *w);

/* ------------------------------------------------------ atomic files */

/* Writes size bytes to path atomically: a temporary file in the same
 * directory, written, fsync'ed, renamed over path, then the directory
 * fsync'ed, so that after a crash path holds the old or the new content.
 * The new file's permissions are 0666 less the umask. On failure path is
 * untouched and the temporary file removed; TM_ERR_IO names the path and
 * the system's reason. */
tm_status tm_write_file_atomic(const char *path, const void *data, size_t size);

/* Reads a whole regular file into a new buffer (tm_free() it) that holds
 * *size bytes followed by a NUL, so text files can be used as strings.
 * Refuses what is not a regular file (a FIFO never blocks the call) with
 * TM_ERR_IO, a file over max_bytes with TM_ERR_LIMIT (checked before
 * reading and while reading), TM_ERR_NOMEM. Messages name the file. */
tm_status tm_read_file(const char *path, size_t max_bytes, char **data, size_t *size);

/* The same in pieces: open, write any number of times, then commit (or
 * abort). Used by the safetensors writer and checkpoints. */
typedef struct tm_atomic_file tm_atomic_file;

/* Creates the temporary file beside path. */
tm_status tm_atomic_file_open(tm_atomic_file **out, const char *path);
/* Appends size bytes (retrying short writes and EINTR). After a failure,
 * commit fails too. */
tm_status tm_atomic_file_write(tm_atomic_file *f, const void *data, size_t size);
/* fsync, close, rename over the final path, fsync the directory; on any
 * failure the temporary file is removed and path untouched, except when
 * only the last step fails: the new file is then in place but the rename
 * may not survive a crash, and the message says so. Frees f either way. */
tm_status tm_atomic_file_commit(tm_atomic_file *f);
/* Closes and removes the temporary file, frees f. NULL is harmless. */
void tm_atomic_file_abort(tm_atomic_file *f);
/* The temporary file's path (for messages and tests). */
const char *tm_atomic_file_temp_path(const tm_atomic_file *f);

#ifdef __cplusplus
}
#endif
#endif
