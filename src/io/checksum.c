/*
 * Checksums of folders: dir/checksums.json lists the size and BLAKE2b-256
 * of the plain content of every regular file in a folder (checkpoints,
 * best models), written last and atomically; verification recomputes them.
 * The manifest format is described in include/trimodal/io.h.
 *
 * The manifest is read as hostile input: names must be plain file names
 * (no '/', not "." or ".."), digests 64 hex digits, sizes integers.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "io_internal.h"

#include "trimodal/io.h"

#define MANIFEST_MAX_BYTES ((size_t)16 << 20)
#define MAX_FILES 4096

void tm_hash_hex(const void *data, size_t size, char hex[2 * TM_HASH_BYTES + 1])
{
    unsigned char d[TM_HASH_BYTES];
    crypto_generichash(d, sizeof d, data, (unsigned long long)size, NULL, 0);
    sodium_bin2hex(hex, 2 * TM_HASH_BYTES + 1, d, sizeof d);
}

/* Size and digest of the plain content of path: streamed for plain files,
 * decrypted in memory (through tm_read_file) for encrypted ones. */
static tm_status hash_file(const char *path, uint64_t *size, char hex[2 * TM_HASH_BYTES + 1])
{
    if (tm_file_is_encrypted(path)) {
        char *data;
        size_t n;
        tm_status s = tm_read_file(path, SIZE_MAX - 1, &data, &n);
        if (s) return s;
        tm_hash_hex(data, n, hex);
        *size = n;
        sodium_memzero(data, n);
        tm_free(data);
        return TM_OK;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return tm_fail(TM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tm_fail(TM_ERR_IO, "%s: not a regular file", path);
    }
    size_t cap = (size_t)1 << 20;
    unsigned char *buf = tm_alloc(cap);
    if (!buf) {
        close(fd);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", path);
    }
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, TM_HASH_BYTES);
    uint64_t total = 0;
    tm_status s = TM_OK;
    for (;;) {
        ssize_t r = read(fd, buf, cap);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r < 0) {
            s = tm_fail(TM_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (r == 0) break;
        crypto_generichash_update(&hs, buf, (unsigned long long)r);
        total += (uint64_t)r;
    }
    close(fd);
    tm_free(buf);
    if (s) return s;
    unsigned char d[TM_HASH_BYTES];
    crypto_generichash_final(&hs, d, sizeof d);
    sodium_bin2hex(hex, 2 * TM_HASH_BYTES + 1, d, sizeof d);
    *size = total;
    return TM_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

tm_status tm_dir_checksums_write(const char *dir)
{
    if (!dir || !*dir) return tm_fail(TM_ERR_INVALID, "tm_dir_checksums_write: empty folder");
    if (sodium_init() < 0) return tm_fail(TM_ERR_INTERNAL, "libsodium failed to initialise");
    DIR *d = opendir(dir);
    if (!d) return tm_fail(TM_ERR_IO, "%s: cannot open the folder: %s", dir, strerror(errno));
    char **names = tm_calloc(MAX_FILES, sizeof *names);
    int n = 0;
    tm_status s = names ? TM_OK : tm_fail(TM_ERR_NOMEM, "out of memory");
    struct dirent *e;
    while (!s && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, TM_CHECKSUMS_FILE) ||
            strstr(e->d_name, ".tmp."))
            continue;
        char *p = tm_io_path_join(dir, e->d_name);
        struct stat sb;
        if (!p) {
            s = tm_fail(TM_ERR_NOMEM, "out of memory");
        } else if (lstat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
            if (n == MAX_FILES)
                s = tm_fail(TM_ERR_LIMIT, "%s: more than %d files to checksum", dir, MAX_FILES);
            else if (!(names[n] = tm_alloc(strlen(e->d_name) + 1)))
                s = tm_fail(TM_ERR_NOMEM, "out of memory");
            else
                strcpy(names[n++], e->d_name);
        }
        tm_free(p);
    }
    closedir(d);
    cJSON *root = s ? NULL : cJSON_CreateObject();
    cJSON *files = NULL;
    if (!s && root) {
        cJSON_AddStringToObject(root, "format", "trimodal-checksums");
        cJSON_AddNumberToObject(root, "version", 1);
        cJSON_AddStringToObject(root, "algorithm", "blake2b-256");
        files = cJSON_AddObjectToObject(root, "files");
    }
    if (!s && (!root || !files)) s = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (!s) qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n && !s; i++) {
        char *p = tm_io_path_join(dir, names[i]);
        char hex[2 * TM_HASH_BYTES + 1];
        uint64_t size = 0;
        s = p ? hash_file(p, &size, hex) : tm_fail(TM_ERR_NOMEM, "out of memory");
        tm_free(p);
        cJSON *o = s ? NULL : cJSON_AddObjectToObject(files, names[i]);
        if (!s && (!o || !cJSON_AddNumberToObject(o, "size", (double)size) ||
                   !cJSON_AddStringToObject(o, "blake2b", hex)))
            s = tm_fail(TM_ERR_NOMEM, "out of memory");
    }
    char *text = s ? NULL : cJSON_Print(root);
    if (!s && !text) s = tm_fail(TM_ERR_NOMEM, "out of memory");
    char *mp = s ? NULL : tm_io_path_join(dir, TM_CHECKSUMS_FILE);
    if (!s && !mp) s = tm_fail(TM_ERR_NOMEM, "out of memory");
    if (!s) s = tm_write_file_atomic(mp, text, strlen(text));
    tm_free(mp);
    if (text) cJSON_free(text);
    cJSON_Delete(root);
    for (int i = 0; i < n; i++) tm_free(names[i]);
    tm_free(names);
    return s;
}

static int plain_name(const char *s)
{
    if (!*s || !strcmp(s, ".") || !strcmp(s, "..") || strchr(s, '/')) return 0;
    return strlen(s) < 256;
}

static int ends_with(const char *s, const char *tail)
{
    size_t a = strlen(s), b = strlen(tail);
    return a >= b && !strcmp(s + a - b, tail);
}

tm_status tm_dir_checksums_verify(const char *dir, int flags, int *checked)
{
    if (checked) *checked = 0;
    if (!dir || !*dir) return tm_fail(TM_ERR_INVALID, "tm_dir_checksums_verify: empty folder");
    if (sodium_init() < 0) return tm_fail(TM_ERR_INTERNAL, "libsodium failed to initialise");
    char *mp = tm_io_path_join(dir, TM_CHECKSUMS_FILE);
    if (!mp) return tm_fail(TM_ERR_NOMEM, "out of memory");
    struct stat sb;
    if (stat(mp, &sb) != 0 && errno == ENOENT) {
        tm_free(mp);
        return TM_OK; /* written by an older trimodal or another tool */
    }
    char *text = NULL;
    size_t n = 0;
    tm_status s = tm_read_file(mp, MANIFEST_MAX_BYTES, &text, &n);
    cJSON *root = s ? NULL : cJSON_ParseWithLength(text, n);
    tm_free(text);
    const cJSON *files = root ? cJSON_GetObjectItemCaseSensitive(root, "files") : NULL;
    const cJSON *alg = root ? cJSON_GetObjectItemCaseSensitive(root, "algorithm") : NULL;
    if (!s && (!root || !cJSON_IsObject(files) || !cJSON_IsString(alg)))
        s = tm_fail(TM_ERR_FORMAT, "%s: is not a checksum manifest (it is damaged; rewrite it "
                                   "or remove it to skip the check)",
                    mp);
    if (!s && strcmp(alg->valuestring, "blake2b-256") != 0)
        s = tm_fail(TM_ERR_UNSUPPORTED, "%s: algorithm \"%.40s\" is not blake2b-256", mp,
                    alg->valuestring);
    const cJSON *f = NULL;
    if (!s) f = files->child;
    for (; f && !s; f = f->next) {
        const cJSON *sz = cJSON_GetObjectItemCaseSensitive(f, "size");
        const cJSON *hx = cJSON_GetObjectItemCaseSensitive(f, "blake2b");
        if (!f->string || !plain_name(f->string) || !cJSON_IsNumber(sz) || sz->valuedouble < 0 ||
            !cJSON_IsString(hx) || strlen(hx->valuestring) != 2 * TM_HASH_BYTES) {
            s = tm_fail(TM_ERR_FORMAT, "%s: a bad entry \"%.100s\" (the manifest is damaged)", mp,
                        f->string ? f->string : "");
            break;
        }
        char *p = tm_io_path_join(dir, f->string);
        if (!p) {
            s = tm_fail(TM_ERR_NOMEM, "out of memory");
            break;
        }
        if (stat(p, &sb) != 0) {
            s = tm_fail(TM_ERR_FORMAT, "%s: is missing (listed in %s); the folder is incomplete",
                        p, TM_CHECKSUMS_FILE);
        } else if ((flags & TM_VERIFY_SKIP_SAFETENSORS) && ends_with(f->string, ".safetensors")) {
            /* checked by its own embedded checksum when opened */
        } else {
            char hex[2 * TM_HASH_BYTES + 1];
            uint64_t size = 0;
            s = hash_file(p, &size, hex);
            if (!s && ((double)size != sz->valuedouble || strcmp(hex, hx->valuestring) != 0))
                s = tm_fail(TM_ERR_FORMAT,
                            "%s: is corrupt (its %s does not match %s: a damaged or changed "
                            "copy; restore the folder from a good copy)",
                            p, (double)size != sz->valuedouble ? "size" : "BLAKE2b checksum",
                            TM_CHECKSUMS_FILE);
        }
        tm_free(p);
    }
    cJSON_Delete(root);
    tm_free(mp);
    if (!s && checked) *checked = 1;
    return s;
}
