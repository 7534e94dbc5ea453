/* Pieces shared by the files of src/io (not part of the public API). */
#ifndef TM_IO_INTERNAL_H
#define TM_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "trimodal/io.h"

/* The safetensors metadata key holding a file's checksum, and the prefix
 * of its value (64 hex digits follow). */
#define TM_ST_CHECKSUM_KEY "__checksum__"
#define TM_ST_CHECKSUM_PREFIX "blake2b-256:"

/* "dir/name" in a new tm_alloc'ed string (NULL when out of memory). */
char *tm_io_path_join(const char *dir, const char *name);

/* Overwrites size bytes at offset of the temporary file (already written
 * that far), leaving the end of the file where it was. */
tm_status tm_atomic_file_patch(tm_atomic_file *f, uint64_t offset, const void *data, size_t size);

#endif
