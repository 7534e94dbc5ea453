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

/* ------------------------------------------------------- checksums
 *
 * Files trimodal writes can be checked for silent damage (a flipped bit on
 * disk, a torn copy) with BLAKE2b-256 (libsodium's crypto_generichash,
 * 32-byte digests, written as 64 lowercase hex digits).
 *
 * safetensors files written by tm_safetensors_write() carry their own
 * checksum in the header's __metadata__: "__checksum__":
 * "blake2b-256:<64 hex>", the digest of the whole file (length prefix,
 * header and data) as it is with those 64 hex digits replaced by '0'. The
 * file stays a plain safetensors file for other readers. tm_safetensors_open()
 * verifies the checksum when there is one (TM_ERR_FORMAT "... is corrupt"
 * naming the file otherwise) and skips the check for files without one
 * (written by other tools). The key is hidden from the metadata listing;
 * tm_safetensors_checksum() returns it.
 *
 * Folders (checkpoints, best models) hold TM_CHECKSUMS_FILE, a small JSON
 * manifest written last and atomically: {"format": "trimodal-checksums",
 * "version": 1, "algorithm": "blake2b-256", "files": {"name": {"size": N,
 * "blake2b": "<hex>"}, ...}} over the plain (decrypted) content of every
 * regular file in the folder. */

#define TM_CHECKSUMS_FILE "checksums.json"
#define TM_HASH_BYTES 32 /* BLAKE2b-256 */

/* The safetensors file's "__checksum__" metadata ("blake2b-256:<hex>"), or
 * NULL when it has none. */
const char *tm_safetensors_checksum(const tm_safetensors *st);

/* BLAKE2b-256 of a buffer, as 64 hex digits and a NUL (hex has 65 bytes). */
void tm_hash_hex(const void *data, size_t size, char hex[2 * TM_HASH_BYTES + 1]);

/* Writes dir/checksums.json for every regular file directly in dir (not
 * the manifest itself, nor temporary files named *.tmp.*), atomically.
 * Call it after the folder's last file is written. Encrypted files are
 * hashed as their plain content (the key must be configured). */
tm_status tm_dir_checksums_write(const char *dir);

/* Verifies dir against dir/checksums.json: every file listed must exist
 * with its size and digest; a mismatch fails with TM_ERR_FORMAT "dir/name
 * is corrupt (its BLAKE2b checksum does not match checksums.json)". A
 * folder without a manifest passes (*checked = 0); else *checked = 1
 * (checked may be NULL). With TM_VERIFY_SKIP_SAFETENSORS, files named
 * *.safetensors are only checked to exist (tm_safetensors_open() checks
 * their embedded checksum when they are loaded), so a folder is not hashed
 * twice. */
#define TM_VERIFY_SKIP_SAFETENSORS 1
tm_status tm_dir_checksums_verify(const char *dir, int flags, int *checked);

/* --------------------------------------------------- encryption at rest
 *
 * Files are encrypted with libsodium's crypto_secretstream_xchacha20poly1305
 * (XChaCha20 with Poly1305 tags, authenticated chunk by chunk) under a
 * 32-byte key. An encrypted file is:
 *     "TMENC\0"   6 bytes, the magic
 *     version     1 byte (1)
 *     chunk_log2  1 byte: plain chunks are 2^chunk_log2 bytes (12..24)
 *     header      24 bytes: the secretstream header (random per file)
 *     key check   16 bytes: BLAKE2b-128 keyed with the key over the 32
 *                 bytes before it, so a wrong key is told from damage
 *     chunks      each chunk_size + 17 bytes (the last one shorter), the
 *                 last tagged FINAL; the 8 bytes before the header are
 *                 authenticated with every chunk.
 * A wrong key, a flipped byte, a truncated file or bytes after the final
 * chunk all fail with TM_ERR_FORMAT and a message saying which; nothing
 * of a file that fails is ever returned.
 *
 * Transparent reading. tm_read_file() and tm_safetensors_open() recognise
 * the magic and decrypt in memory with the process key, so every reader
 * built on them (configs, tokenizers, preprocess files, manifests, media,
 * checkpoints, model weights) reads encrypted files as is. The process key
 * is the one given to tm_crypto_set_key(), else the first found of: the
 * file named by the environment variable TRIMODAL_KEY_FILE, the hex in
 * TRIMODAL_KEY. With none, reading an encrypted file fails with
 * TM_ERR_INVALID "X is encrypted; set TRIMODAL_KEY_FILE ...".
 *
 * Key files hold the 32 raw bytes, or 64 hex digits (surrounding
 * whitespace allowed). Keys never come from command-line arguments. */

#define TM_KEY_BYTES 32
#define TM_CRYPT_MAGIC "TMENC"      /* followed by a NUL byte */
#define TM_CRYPT_HEADER_BYTES 48    /* magic, version, chunk_log2, stream header, key check */
#define TM_CRYPT_MAX_KEY_FILE 4096

typedef struct {
    unsigned char bytes[TM_KEY_BYTES];
} tm_key;

/* Reads a key file (raw 32 bytes or 64 hex digits). Warns nothing; fails
 * with TM_ERR_FORMAT naming the file when it holds neither. */
tm_status tm_key_load_file(tm_key *key, const char *path);
/* Parses 64 hex digits (whitespace around them allowed). */
tm_status tm_key_from_hex(tm_key *key, const char *hex);
/* The key from TRIMODAL_KEY_FILE or TRIMODAL_KEY; *found = 0 (and TM_OK)
 * when neither is set. */
tm_status tm_key_from_env(tm_key *key, int *found);
/* Makes a new random key and writes it to path as 64 hex digits and a
 * newline, with mode 0600, refusing to replace an existing file. */
tm_status tm_key_generate_file(const char *path);
/* Sets (key != NULL) or clears the process key used by transparent reads;
 * it wins over the environment. Thread-safe. */
void tm_crypto_set_key(const tm_key *key);

/* 1 when the buffer starts like an encrypted file. */
int tm_is_encrypted(const void *data, size_t size);
/* 1 when the file at path starts like an encrypted file, 0 when not or
 * unreadable. */
int tm_file_is_encrypted(const char *path);

/* Encrypts size bytes into a new buffer (tm_free() it). */
tm_status tm_encrypt_buffer(const tm_key *key, const void *data, size_t size, char **out,
                            size_t *out_size);
/* Decrypts an encrypted buffer into a new one (tm_free() it) holding
 * *out_size bytes and a NUL; label names the data in messages. Fails with
 * TM_ERR_LIMIT when the plain content would exceed max_bytes. */
tm_status tm_decrypt_buffer(const tm_key *key, const char *label, const void *data, size_t size,
                            size_t max_bytes, char **out, size_t *out_size);
/* The process key (tm_crypto_set_key(), else the environment) for
 * decrypting label; TM_ERR_INVALID with the "set TRIMODAL_KEY_FILE"
 * message when there is none. */
tm_status tm_crypto_process_key(tm_key *key, const char *label);

/* Encrypts or decrypts the file src into dst (which may equal src),
 * streaming in chunks, written atomically. Encrypting an encrypted file,
 * or decrypting a plain one, fails with TM_ERR_INVALID. */
tm_status tm_encrypt_file(const tm_key *key, const char *src, const char *dst);
tm_status tm_decrypt_file(const tm_key *key, const char *src, const char *dst);

/* The same for every regular file under the folder src (recursively) into
 * dst (created; may equal src for in place). Files already in the wanted
 * state are copied as they are (skipped in place); *n_files counts those
 * converted (n_files may be NULL). */
tm_status tm_encrypt_dir(const tm_key *key, const char *src, const char *dst, int *n_files);
tm_status tm_decrypt_dir(const tm_key *key, const char *src, const char *dst, int *n_files);

#ifdef __cplusplus
}
#endif
#endif
