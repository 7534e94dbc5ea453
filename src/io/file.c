/*
 * Atomic file writing: a temporary file beside the target, written,
 * fsync'ed, renamed over the target, then the directory fsync'ed.
 *
 * Why each step: rename() within one directory is atomic, so readers see
 * the old file or the new one; fsync before rename makes sure the new
 * name never points at data still in the page cache (after a crash the
 * file could otherwise be empty); fsync of the directory makes the rename
 * itself durable. The temporary file lives in the same directory because
 * rename cannot cross file systems.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "io_internal.h"
#include "trimodal/io.h"

struct tm_atomic_file {
    int fd;
    tm_status failed; /* sticky: a failed write spoils the file */
    char *path;       /* the final name */
    char *tmp;        /* the temporary name */
};

static char *dup_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = tm_alloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static void free_file(tm_atomic_file *f)
{
    tm_free(f->path);
    tm_free(f->tmp);
    tm_free(f);
}

tm_status tm_atomic_file_open(tm_atomic_file **out, const char *path)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "tm_atomic_file_open: out is NULL");
    *out = NULL;
    if (!path || !*path) return tm_fail(TM_ERR_INVALID, "tm_atomic_file_open: empty path");
    size_t n = strlen(path);
    if (path[n - 1] == '/') return tm_fail(TM_ERR_INVALID, "%s: is a directory name", path);

    tm_atomic_file *f = tm_calloc(1, sizeof *f);
    size_t tmp_size;
    if (!f || !tm_add_size(n, 64, &tmp_size)) {
        tm_free(f);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", path);
    }
    f->fd = -1;
    f->path = dup_string(path);
    f->tmp = tm_alloc(tmp_size);
    if (!f->path || !f->tmp) {
        free_file(f);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", path);
    }
    /* A name no other writer picks: pid, time and attempt. O_EXCL settles
     * any collision, and the mode 0666 lets the umask decide permissions,
     * as a plain fopen() would (mkstemp would force 0600). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long seed = (unsigned long long)ts.tv_sec * 1000000007ull
                              ^ (unsigned long long)ts.tv_nsec ^ ((unsigned long long)(uintptr_t)f << 7);
    for (int attempt = 0; attempt < 100; attempt++) {
        snprintf(f->tmp, tmp_size, "%s.tmp.%ld.%llx", path, (long)getpid(),
                 (seed + (unsigned long long)attempt * 0x9E3779B97F4A7C15ull) & 0xffffffffffull);
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f->fd >= 0 || errno != EEXIST) break;
    }
    if (f->fd < 0) {
        int e = errno;
        free_file(f);
        return tm_fail(TM_ERR_IO, "%s: cannot create a temporary file beside it: %s", path,
                       strerror(e));
    }
    *out = f;
    return TM_OK;
}

tm_status tm_atomic_file_write(tm_atomic_file *f, const void *data, size_t size)
{
    if (!f) return tm_fail(TM_ERR_INVALID, "tm_atomic_file_write: file is NULL");
    if (f->failed) return tm_fail(f->failed, "%s: an earlier write failed", f->path);
    if (size && !data) return tm_fail(TM_ERR_INVALID, "tm_atomic_file_write: data is NULL");
    const char *p = data;
    while (size > 0) {
        /* Linux writes at most about 2 GiB per call. */
        size_t chunk = size < ((size_t)1 << 30) ? size : ((size_t)1 << 30);
        ssize_t k = write(f->fd, p, chunk);
        if (k < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            f->failed = TM_ERR_IO;
            return tm_fail(TM_ERR_IO, "%s: write failed: %s", f->tmp, strerror(e));
        }
        if (k == 0) {
            f->failed = TM_ERR_IO;
            return tm_fail(TM_ERR_IO, "%s: write wrote nothing", f->tmp);
        }
        p += k;
        size -= (size_t)k;
    }
    return TM_OK;
}

tm_status tm_atomic_file_patch(tm_atomic_file *f, uint64_t offset, const void *data, size_t size)
{
    if (!f) return tm_fail(TM_ERR_INVALID, "tm_atomic_file_patch: file is NULL");
    if (f->failed) return tm_fail(f->failed, "%s: an earlier write failed", f->path);
    const char *p = data;
    while (size > 0) {
        ssize_t k = pwrite(f->fd, p, size, (off_t)offset);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = errno;
            f->failed = TM_ERR_IO;
            return tm_fail(TM_ERR_IO, "%s: write failed: %s", f->tmp, k < 0 ? strerror(e) : "no progress");
        }
        p += k;
        size -= (size_t)k;
        offset += (uint64_t)k;
    }
    return TM_OK;
}

/* fsync of the directory holding path, so that a rename into it is on
 * disk. Some file systems refuse fsync on a directory (EINVAL): the rename
 * is then as durable as they can make it, and that is not an error. */
static tm_status sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char buf[4096];
    const char *dir = ".";
    if (slash) {
        size_t n = (size_t)(slash - path);
        if (n == 0) n = 1; /* "/file" lives in "/" */
        if (n >= sizeof buf) return TM_OK;
        memcpy(buf, path, n);
        buf[n] = 0;
        dir = buf;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return tm_fail(TM_ERR_IO, "%s: cannot open its directory: %s", path, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r != 0 && e != EINVAL && e != EROFS)
        return tm_fail(TM_ERR_IO, "%s: written, but fsync of its directory failed: %s", path,
                       strerror(e));
    return TM_OK;
}

tm_status tm_atomic_file_commit(tm_atomic_file *f)
{
    if (!f) return tm_fail(TM_ERR_INVALID, "tm_atomic_file_commit: file is NULL");
    tm_status s = TM_OK;
    if (f->failed) {
        s = tm_fail(f->failed, "%s: not written, an earlier write failed", f->path);
    } else if (fsync(f->fd) != 0) {
        s = tm_fail(TM_ERR_IO, "%s: fsync failed: %s", f->tmp, strerror(errno));
    }
    if (close(f->fd) != 0 && s == TM_OK)
        s = tm_fail(TM_ERR_IO, "%s: close failed: %s", f->tmp, strerror(errno));
    f->fd = -1;
    if (s == TM_OK && rename(f->tmp, f->path) != 0)
        s = tm_fail(TM_ERR_IO, "%s: cannot rename %s over it: %s", f->path, f->tmp,
                    strerror(errno));
    if (s != TM_OK) {
        unlink(f->tmp);
    } else {
        s = sync_dir(f->path);
    }
    free_file(f);
    return s;
}

void tm_atomic_file_abort(tm_atomic_file *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    free_file(f);
}

const char *tm_atomic_file_temp_path(const tm_atomic_file *f)
{
    return f ? f->tmp : NULL;
}

tm_status tm_write_file_atomic(const char *path, const void *data, size_t size)
{
    tm_atomic_file *f;
    tm_status s = tm_atomic_file_open(&f, path);
    if (s) return s;
    s = tm_atomic_file_write(f, data, size);
    if (s) {
        tm_atomic_file_abort(f);
        return s;
    }
    return tm_atomic_file_commit(f);
}

tm_status tm_read_file(const char *path, size_t max_bytes, char **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    if (!path || !*path) return tm_fail(TM_ERR_INVALID, "read_file: empty path");
    /* O_NONBLOCK: opening a FIFO would otherwise wait for a writer */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return tm_fail(TM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tm_fail(TM_ERR_IO, "%s: not a regular file", path);
    }
    /* An encrypted file is a little larger than its plain content (the
     * header and a 17-byte tag per chunk of at least 4 KiB): allow that
     * much, and check the limit on the plain content once it is known. */
    size_t limit = max_bytes;
    size_t slack = TM_CRYPT_HEADER_BYTES + 17 * (max_bytes / 4096 + 1);
    if (!tm_add_size(max_bytes, slack, &max_bytes)) max_bytes = SIZE_MAX - 1;
    if ((uint64_t)sb.st_size > (uint64_t)max_bytes) {
        /* over even with the slack: refused without reading */
        close(fd);
        return tm_fail(TM_ERR_LIMIT, "%s: %lld bytes is over the limit of %zu bytes", path,
                       (long long)sb.st_size, limit);
    }
    /* the size may change while reading: read in steps up to max_bytes + 1 */
    size_t cap = (size_t)sb.st_size + 1, len = 0;
    char *buf = tm_alloc(cap + 1);
    if (!buf) {
        close(fd);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory for %zu bytes", path, cap);
    }
    for (;;) {
        if (len == cap) {
            if (cap > max_bytes) break;
            size_t ncap = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            char *nb = tm_alloc(ncap + 1);
            if (!nb) {
                tm_free(buf);
                close(fd);
                return tm_fail(TM_ERR_NOMEM, "%s: out of memory for %zu bytes", path, ncap);
            }
            memcpy(nb, buf, len);
            tm_free(buf);
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r < 0) {
            int e = errno;
            tm_free(buf);
            close(fd);
            return tm_fail(TM_ERR_IO, "%s: read failed: %s", path, strerror(e));
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    close(fd);
    if (len > max_bytes || (len > limit && !tm_is_encrypted(buf, len))) {
        tm_free(buf);
        if (len > (size_t)sb.st_size)
            return tm_fail(TM_ERR_LIMIT, "%s: grew past the limit of %zu bytes while read", path,
                           limit);
        return tm_fail(TM_ERR_LIMIT, "%s: %zu bytes is over the limit of %zu bytes", path, len,
                       limit);
    }
    buf[len] = '\0';
    if (tm_is_encrypted(buf, len)) {
        /* encrypted at rest: decrypt in memory with the process key */
        tm_key key;
        char *plain = NULL;
        size_t n = 0;
        tm_status s = tm_crypto_process_key(&key, path);
        if (!s) s = tm_decrypt_buffer(&key, path, buf, len, limit, &plain, &n);
        sodium_memzero(&key, sizeof key);
        tm_free(buf);
        if (s) return s;
        buf = plain;
        len = n;
    }
    *data = buf;
    *size = len;
    return TM_OK;
}

char *tm_io_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = tm_alloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}
