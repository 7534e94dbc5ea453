/*
 * IDX files (the MNIST format, http://yann.lecun.com/exdb/mnist/): a magic
 * of two zero bytes, a type byte and a dimension count, then the
 * dimensions as big-endian u32, then the data. The file is mapped, not
 * read, so a 47 MB training set costs no copy; the header is checked
 * against the file's size before anything is handed out. A file encrypted
 * at rest (docs/security.md) cannot be mapped: it is decrypted into memory
 * through tm_read_file() instead, and wiped when closed.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trimodal/io.h"
#include "vision_internal.h"

struct tm_idx {
    const uint8_t *base; /* the whole file */
    size_t size;
    void *map;   /* non-NULL when we mapped it */
    char *plain; /* non-NULL when we decrypted it into memory */
    int ndim;
    int64_t count;
    int height, width;
    const uint8_t *data;
};

/* Zeroes decrypted bytes before they are freed (a volatile store the
 * compiler cannot drop). */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--) *v++ = 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static const char *type_name(uint8_t t)
{
    switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return NULL;
    }
}

/* Validates the header of d[0..n) and fills idx's shape fields. */
static tm_status parse(tm_idx *idx, const uint8_t *d, size_t n, tm_image_limits limits,
                       const char *name)
{
    if (n >= 2 && d[0] == 0x1f && d[1] == 0x8b)
        return tm_fail(TM_ERR_UNSUPPORTED,
                       "%s: gzip-compressed IDX file; decompress it first (gunzip)", name);
    if (n < 4) return tm_fail(TM_ERR_FORMAT, "%s: truncated IDX header (%zu bytes)", name, n);
    if (d[0] != 0 || d[1] != 0)
        return tm_fail(TM_ERR_FORMAT, "%s: not an IDX file (magic %02X %02X %02X %02X)", name, d[0],
                       d[1], d[2], d[3]);
    const char *tn = type_name(d[2]);
    if (!tn)
        return tm_fail(TM_ERR_FORMAT, "%s: not an IDX file (unknown type code 0x%02X)", name, d[2]);
    if (d[2] != 0x08)
        return tm_fail(TM_ERR_UNSUPPORTED,
                       "%s: IDX of %s elements is not supported (only unsigned bytes, 0x08)", name,
                       tn);
    int ndim = d[3];
    if (ndim != 1 && ndim != 3)
        return tm_fail(TM_ERR_UNSUPPORTED,
                       "%s: IDX with %d dimensions is not supported (3 for images, 1 for labels)",
                       name, ndim);
    size_t header = 4 + 4 * (size_t)ndim;
    if (n < header)
        return tm_fail(TM_ERR_FORMAT, "%s: truncated IDX header (%zu of %zu bytes)", name, n,
                       header);
    uint32_t dims[3] = {0, 1, 1};
    for (int i = 0; i < ndim; i++)
        dims[i] = be32(d + 4 + 4 * i);
    if (ndim == 3) {
        if (dims[1] == 0 || dims[2] == 0)
            return tm_fail(TM_ERR_FORMAT, "%s: IDX images of zero size (%u x %u)", name, dims[1],
                           dims[2]);
        size_t max_pixels = limits.max_pixels ? limits.max_pixels : TM_IMAGE_DEFAULT_MAX_PIXELS;
        uint64_t px = (uint64_t)dims[1] * dims[2];
        if (px > max_pixels || dims[1] > INT32_MAX || dims[2] > INT32_MAX)
            return tm_fail(TM_ERR_LIMIT,
                           "%s: IDX images of %u x %u pixels are over the limit of %zu", name,
                           dims[1], dims[2], max_pixels);
    }
    /* u32 * u32 * u32 can overflow 64 bits: check each product */
    size_t want = dims[0];
    if (!tm_mul_size(want, dims[1], &want) || !tm_mul_size(want, dims[2], &want))
        return tm_fail(TM_ERR_FORMAT, "%s: IDX header sizes %u x %u x %u overflow", name, dims[0],
                       dims[1], dims[2]);
    size_t have = n - header;
    if (want != have) {
        if (ndim == 3)
            return tm_fail(TM_ERR_FORMAT,
                           "%s: IDX header says %u images of %u x %u = %zu bytes of data, but "
                           "the file has %zu (%s)",
                           name, dims[0], dims[1], dims[2], want, have,
                           want > have ? "truncated or a lying header" : "extra bytes at the end");
        return tm_fail(TM_ERR_FORMAT,
                       "%s: IDX header says %u labels, but the file has %zu bytes of data (%s)",
                       name, dims[0], have,
                       want > have ? "truncated or a lying header" : "extra bytes at the end");
    }
    idx->base = d;
    idx->size = n;
    idx->ndim = ndim;
    idx->count = dims[0];
    idx->height = ndim == 3 ? (int)dims[1] : 0;
    idx->width = ndim == 3 ? (int)dims[2] : 0;
    idx->data = d + header;
    return TM_OK;
}

tm_status tm_idx_open_memory(tm_idx **out, const void *data, size_t size, tm_image_limits limits)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_idx_open_memory: out is NULL");
    *out = NULL;
    if (!data && size) return tm_fail(TM_ERR_INVALID, "tm_idx_open_memory: data is NULL");
    tm_idx *idx = tm_calloc(1, sizeof *idx);
    if (!idx) return tm_fail(TM_ERR_NOMEM, "<memory>: out of memory");
    tm_status s = parse(idx, data, size, limits, "<memory>");
    if (s) {
        tm_free(idx);
        return s;
    }
    *out = idx;
    return TM_OK;
}

tm_status tm_idx_open(tm_idx **out, const char *path, tm_image_limits limits)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_idx_open: out is NULL");
    *out = NULL;
    if (!path || !*path) return tm_fail(TM_ERR_INVALID, "tm_idx_open: empty path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tm_fail(TM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        close(fd);
        return tm_fail(TM_ERR_IO, "%s: not a readable regular file%s%s", path, e ? ": " : "",
                       e ? strerror(e) : "");
    }
    size_t size = (size_t)sb.st_size;
    if (size == 0) {
        close(fd);
        return tm_fail(TM_ERR_FORMAT, "%s: empty file, not an IDX file", path);
    }
    if (tm_file_is_encrypted(path)) {
        /* the plain content is smaller than the encrypted file */
        close(fd);
        char *plain = NULL;
        size_t plen = 0;
        tm_status s = tm_read_file(path, size, &plain, &plen);
        if (s) return s;
        tm_idx *idx = tm_calloc(1, sizeof *idx);
        if (!idx) {
            wipe(plain, plen);
            tm_free(plain);
            return tm_fail(TM_ERR_NOMEM, "%s: out of memory", path);
        }
        s = parse(idx, (const uint8_t *)plain, plen, limits, path);
        if (s) {
            wipe(plain, plen);
            tm_free(plain);
            tm_free(idx);
            return s;
        }
        idx->plain = plain;
        *out = idx;
        return TM_OK;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return tm_fail(TM_ERR_IO, "%s: cannot map: %s", path, strerror(e));
    tm_idx *idx = tm_calloc(1, sizeof *idx);
    if (!idx) {
        munmap(map, size);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", path);
    }
    tm_status s = parse(idx, map, size, limits, path);
    if (s) {
        munmap(map, size);
        tm_free(idx);
        return s;
    }
    idx->map = map;
    *out = idx;
    return TM_OK;
}

void tm_idx_close(tm_idx *idx)
{
    if (!idx) return;
    if (idx->map) munmap(idx->map, idx->size);
    if (idx->plain) {
        wipe(idx->plain, idx->size);
        tm_free(idx->plain);
    }
    tm_free(idx);
}

int64_t tm_idx_count(const tm_idx *idx)
{
    return idx ? idx->count : 0;
}
int tm_idx_ndim(const tm_idx *idx)
{
    return idx ? idx->ndim : 0;
}
int tm_idx_height(const tm_idx *idx)
{
    return idx ? idx->height : 0;
}
int tm_idx_width(const tm_idx *idx)
{
    return idx ? idx->width : 0;
}
const uint8_t *tm_idx_data(const tm_idx *idx)
{
    return idx ? idx->data : NULL;
}

tm_status tm_idx_image(tm_image **out, const tm_idx *idx, int64_t i)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_idx_image: out is NULL");
    *out = NULL;
    if (!idx) return tm_fail(TM_ERR_INVALID, "tm_idx_image: idx is NULL");
    if (idx->ndim != 3) return tm_fail(TM_ERR_INVALID, "tm_idx_image: a label file has no images");
    if (i < 0 || i >= idx->count)
        return tm_fail(TM_ERR_INVALID, "tm_idx_image: index %lld out of range 0..%lld",
                       (long long)i, (long long)idx->count - 1);
    tm_status s = tm_image_new(out, idx->width, idx->height, 1);
    if (s) return s;
    size_t px = (size_t)idx->width * (size_t)idx->height;
    memcpy((*out)->data, idx->data + (size_t)i * px, px);
    return TM_OK;
}

tm_status tm_idx_label(int *label, const tm_idx *idx, int64_t i)
{
    if (!label) return tm_fail(TM_ERR_INVALID, "tm_idx_label: label is NULL");
    if (!idx) return tm_fail(TM_ERR_INVALID, "tm_idx_label: idx is NULL");
    if (idx->ndim != 1) return tm_fail(TM_ERR_INVALID, "tm_idx_label: an image file has no labels");
    if (i < 0 || i >= idx->count)
        return tm_fail(TM_ERR_INVALID, "tm_idx_label: index %lld out of range 0..%lld",
                       (long long)i, (long long)idx->count - 1);
    *label = idx->data[i];
    return TM_OK;
}
