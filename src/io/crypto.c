/*
 * Encryption at rest: files encrypted with libsodium's
 * crypto_secretstream_xchacha20poly1305 under a 32-byte key, and the
 * process key used to read them transparently. The format is described in
 * include/trimodal/io.h.
 *
 * Layout of the 48-byte header: "TMENC\0", version (1), chunk_log2, the
 * 24-byte secretstream header, then a 16-byte key check: BLAKE2b-128 keyed
 * with the key over the 32 bytes before it. The key check lets a wrong key
 * be reported as such (rather than as damage), and reveals nothing of the
 * key. The first 8 bytes are authenticated with every chunk, so a changed
 * version or chunk size cannot go unnoticed.
 *
 * Nothing decrypted is handed out before its chunk's tag is verified, and
 * a buffer or file is only returned or committed once the FINAL chunk has
 * been seen with no bytes after it: a truncated or tampered file never
 * yields partial plain text.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "io_internal.h"

#include "trimodal/io.h"

#define VERSION 1
#define CHUNK_LOG2 16 /* 64 KiB plain chunks */
#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define PREFIX_BYTES 8
#define CHECK_BYTES 16
#define HEADER_BYTES TM_CRYPT_HEADER_BYTES

_Static_assert(crypto_secretstream_xchacha20poly1305_HEADERBYTES == 24, "stream header size");
_Static_assert(crypto_secretstream_xchacha20poly1305_KEYBYTES == TM_KEY_BYTES, "key size");
_Static_assert(HEADER_BYTES == PREFIX_BYTES + 24 + CHECK_BYTES, "header layout");

static tm_status sodium_ready(void)
{
    if (sodium_init() < 0) return tm_fail(TM_ERR_INTERNAL, "libsodium failed to initialise");
    return TM_OK;
}

/* ----------------------------------------------------------------- keys */

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* 64 hex digits with optional whitespace around them; 0 on success. */
static int parse_hex_key(tm_key *key, const char *s, size_t n)
{
    size_t a = 0, b = n;
    while (a < b && is_space((unsigned char)s[a])) a++;
    while (b > a && is_space((unsigned char)s[b - 1])) b--;
    if (b - a != 2 * TM_KEY_BYTES) return -1;
    for (int i = 0; i < TM_KEY_BYTES; i++) {
        int hi = hexval((unsigned char)s[a + 2 * i]), lo = hexval((unsigned char)s[a + 2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        key->bytes[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

tm_status tm_key_from_hex(tm_key *key, const char *hex)
{
    if (!key || !hex) return tm_fail(TM_ERR_INVALID, "tm_key_from_hex: NULL argument");
    if (parse_hex_key(key, hex, strlen(hex)) != 0) {
        sodium_memzero(key, sizeof *key);
        return tm_fail(TM_ERR_FORMAT, "the key is not 64 hex digits (32 bytes); make one with "
                                      "'trimodal encrypt --gen-key FILE'");
    }
    return TM_OK;
}

tm_status tm_key_load_file(tm_key *key, const char *path)
{
    if (!key || !path) return tm_fail(TM_ERR_INVALID, "tm_key_load_file: NULL argument");
    /* read directly, not through tm_read_file: a key file is never encrypted */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return tm_fail(TM_ERR_IO, "key file %s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tm_fail(TM_ERR_IO, "key file %s: not a regular file", path);
    }
    unsigned char buf[256];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            sodium_memzero(buf, sizeof buf);
            return tm_fail(TM_ERR_IO, "key file %s: read failed: %s", path, strerror(e));
        }
        if (r == 0 || (n += (size_t)r) == sizeof buf) break;
    }
    close(fd);
    tm_status s = TM_OK;
    if (n == TM_KEY_BYTES && parse_hex_key(key, (const char *)buf, n) != 0) {
        memcpy(key->bytes, buf, TM_KEY_BYTES); /* 32 raw bytes */
    } else if (n == sizeof buf || parse_hex_key(key, (const char *)buf, n) != 0) {
        sodium_memzero(key, sizeof *key);
        s = tm_fail(TM_ERR_FORMAT,
                    "key file %s: holds %zu%s bytes, neither 32 raw bytes nor 64 hex digits; make "
                    "one with 'trimodal encrypt --gen-key FILE'",
                    path, n, n == sizeof buf ? "+" : "");
    }
    sodium_memzero(buf, sizeof buf);
    return s;
}

tm_status tm_key_from_env(tm_key *key, int *found)
{
    if (!key || !found) return tm_fail(TM_ERR_INVALID, "tm_key_from_env: NULL argument");
    *found = 0;
    const char *file = getenv("TRIMODAL_KEY_FILE");
    if (file && *file) {
        *found = 1;
        tm_status s = tm_key_load_file(key, file);
        if (s) return tm_fail(s, "TRIMODAL_KEY_FILE: %s", tm_last_error());
        return TM_OK;
    }
    const char *hex = getenv("TRIMODAL_KEY");
    if (hex && *hex) {
        *found = 1;
        if (parse_hex_key(key, hex, strlen(hex)) != 0) {
            sodium_memzero(key, sizeof *key);
            return tm_fail(TM_ERR_FORMAT, "TRIMODAL_KEY is not 64 hex digits (a 32-byte key)");
        }
    }
    return TM_OK;
}

tm_status tm_key_generate_file(const char *path)
{
    if (!path || !*path) return tm_fail(TM_ERR_INVALID, "tm_key_generate_file: empty path");
    tm_status s = sodium_ready();
    if (s) return s;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return tm_fail(TM_ERR_IO, "key file %s: cannot create it: %s%s", path, strerror(errno),
                       errno == EEXIST ? " (a key file is never overwritten; remove it first "
                                         "if you mean to)"
                                       : "");
    /* the umask may have removed bits but never adds any: force 0600 */
    fchmod(fd, 0600);
    tm_key key;
    crypto_secretstream_xchacha20poly1305_keygen(key.bytes);
    char hex[2 * TM_KEY_BYTES + 2];
    sodium_bin2hex(hex, sizeof hex, key.bytes, TM_KEY_BYTES);
    hex[2 * TM_KEY_BYTES] = '\n';
    size_t left = 2 * TM_KEY_BYTES + 1;
    const char *p = hex;
    while (left > 0) {
        ssize_t k = write(fd, p, left);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            s = tm_fail(TM_ERR_IO, "key file %s: write failed: %s", path, strerror(errno));
            break;
        }
        p += k;
        left -= (size_t)k;
    }
    if (!s && fsync(fd) != 0)
        s = tm_fail(TM_ERR_IO, "key file %s: fsync failed: %s", path, strerror(errno));
    close(fd);
    sodium_memzero(&key, sizeof key);
    sodium_memzero(hex, sizeof hex);
    if (s) unlink(path);
    return s;
}

static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;
static tm_key process_key;
static int process_key_set;

void tm_crypto_set_key(const tm_key *key)
{
    pthread_mutex_lock(&key_lock);
    if (key) {
        process_key = *key;
        process_key_set = 1;
    } else {
        sodium_memzero(&process_key, sizeof process_key);
        process_key_set = 0;
    }
    pthread_mutex_unlock(&key_lock);
}

tm_status tm_crypto_process_key(tm_key *key, const char *label)
{
    if (!key) return tm_fail(TM_ERR_INVALID, "tm_crypto_process_key: key is NULL");
    if (!label) label = "the file";
    pthread_mutex_lock(&key_lock);
    int set = process_key_set;
    if (set) *key = process_key;
    pthread_mutex_unlock(&key_lock);
    if (set) return TM_OK;
    int found = 0;
    tm_status s = tm_key_from_env(key, &found);
    if (s) return tm_fail(s, "%s is encrypted, and the key is unusable: %s", label, tm_last_error());
    if (!found)
        return tm_fail(TM_ERR_INVALID,
                       "%s is encrypted; set TRIMODAL_KEY_FILE to the key file it was encrypted "
                       "with (or TRIMODAL_KEY to the key in hex)",
                       label);
    return TM_OK;
}

/* --------------------------------------------------------------- format */

int tm_is_encrypted(const void *data, size_t size)
{
    return data && size >= 6 && memcmp(data, TM_CRYPT_MAGIC, 6) == 0;
}

int tm_file_is_encrypted(const char *path)
{
    if (!path) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return 0;
    unsigned char b[6];
    ssize_t r = read(fd, b, sizeof b);
    close(fd);
    return r == (ssize_t)sizeof b && tm_is_encrypted(b, sizeof b);
}

static void key_check(const tm_key *key, const unsigned char *head32, unsigned char out[CHECK_BYTES])
{
    crypto_generichash(out, CHECK_BYTES, head32, PREFIX_BYTES + 24, key->bytes, TM_KEY_BYTES);
}

/* Starts a stream: fills the 48-byte header. */
static tm_status enc_start(const tm_key *key, crypto_secretstream_xchacha20poly1305_state *st,
                           unsigned char head[HEADER_BYTES])
{
    tm_status s = sodium_ready();
    if (s) return s;
    memcpy(head, TM_CRYPT_MAGIC, 6);
    head[6] = VERSION;
    head[7] = CHUNK_LOG2;
    crypto_secretstream_xchacha20poly1305_init_push(st, head + PREFIX_BYTES, key->bytes);
    key_check(key, head, head + PREFIX_BYTES + 24);
    return TM_OK;
}

/* Checks a header and starts decrypting; *chunk gets the plain chunk size. */
static tm_status dec_start(const tm_key *key, const char *label, const unsigned char *head,
                           size_t have, crypto_secretstream_xchacha20poly1305_state *st,
                           size_t *chunk)
{
    tm_status s = sodium_ready();
    if (s) return s;
    if (have < 6 || memcmp(head, TM_CRYPT_MAGIC, 6) != 0)
        return tm_fail(TM_ERR_INVALID, "%s: is not encrypted (no trimodal encryption header)",
                       label);
    if (have < HEADER_BYTES)
        return tm_fail(TM_ERR_FORMAT, "%s: encrypted file is truncated (%zu bytes, the header "
                                      "alone is %d)",
                       label, have, HEADER_BYTES);
    if (head[6] != VERSION)
        return tm_fail(TM_ERR_UNSUPPORTED,
                       "%s: encryption format version %d; this trimodal reads version %d", label,
                       head[6], VERSION);
    if (head[7] < 12 || head[7] > 24)
        return tm_fail(TM_ERR_FORMAT, "%s: encrypted file has a bad chunk size (2^%d); it is "
                                      "damaged",
                       label, head[7]);
    unsigned char chk[CHECK_BYTES];
    key_check(key, head, chk);
    if (sodium_memcmp(chk, head + PREFIX_BYTES + 24, CHECK_BYTES) != 0)
        return tm_fail(TM_ERR_FORMAT,
                       "%s: wrong key: the file was encrypted with a different key (or its "
                       "header is damaged)",
                       label);
    if (crypto_secretstream_xchacha20poly1305_init_pull(st, head + PREFIX_BYTES, key->bytes) != 0)
        return tm_fail(TM_ERR_FORMAT, "%s: encrypted file has a bad stream header", label);
    *chunk = (size_t)1 << head[7];
    return TM_OK;
}

/* Plain size of an encrypted buffer of size bytes (header included), or
 * an error when no sequence of chunks can have that size. */
static tm_status plain_size(const char *label, size_t size, size_t chunk, size_t *out)
{
    size_t body = size - HEADER_BYTES, full = chunk + ABYTES, rest = body % full;
    size_t nchunks = body / full + (rest != 0);
    if (body == 0 || (rest != 0 && rest < ABYTES))
        return tm_fail(TM_ERR_FORMAT, "%s: encrypted file is truncated (it ends inside a chunk)",
                       label);
    *out = body - nchunks * ABYTES;
    return TM_OK;
}

tm_status tm_encrypt_buffer(const tm_key *key, const void *data, size_t size, char **out,
                            size_t *out_size)
{
    if (!out || !out_size) return tm_fail(TM_ERR_INVALID, "tm_encrypt_buffer: NULL argument");
    *out = NULL;
    *out_size = 0;
    if (!key || (size && !data)) return tm_fail(TM_ERR_INVALID, "tm_encrypt_buffer: NULL argument");
    size_t chunk = (size_t)1 << CHUNK_LOG2;
    size_t nchunks = size / chunk + (size % chunk != 0);
    if (nchunks == 0) nchunks = 1;
    size_t total = size + HEADER_BYTES + nchunks * ABYTES;
    if (total < size) return tm_fail(TM_ERR_NOMEM, "tm_encrypt_buffer: size overflows");
    unsigned char *buf = tm_alloc(total + 1);
    if (!buf) return tm_fail(TM_ERR_NOMEM, "out of memory for %zu encrypted bytes", total);
    crypto_secretstream_xchacha20poly1305_state st;
    tm_status s = enc_start(key, &st, buf);
    if (s) {
        tm_free(buf);
        return s;
    }
    const unsigned char *in = data;
    size_t at = HEADER_BYTES, left = size;
    for (size_t c = 0; c < nchunks; c++) {
        size_t k = left < chunk ? left : chunk;
        unsigned char tag = c + 1 == nchunks ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0;
        unsigned long long clen = 0;
        crypto_secretstream_xchacha20poly1305_push(&st, buf + at, &clen, in, k, buf, PREFIX_BYTES,
                                                   tag);
        at += (size_t)clen;
        in += k;
        left -= k;
    }
    sodium_memzero(&st, sizeof st);
    buf[at] = 0;
    *out = (char *)buf;
    *out_size = at;
    return TM_OK;
}

tm_status tm_decrypt_buffer(const tm_key *key, const char *label, const void *data, size_t size,
                            size_t max_bytes, char **out, size_t *out_size)
{
    if (!out || !out_size) return tm_fail(TM_ERR_INVALID, "tm_decrypt_buffer: NULL argument");
    *out = NULL;
    *out_size = 0;
    if (!key || (size && !data)) return tm_fail(TM_ERR_INVALID, "tm_decrypt_buffer: NULL argument");
    if (!label) label = "<memory>";
    const unsigned char *in = data;
    crypto_secretstream_xchacha20poly1305_state st;
    size_t chunk = 0, plain = 0;
    tm_status s = dec_start(key, label, in, size, &st, &chunk);
    if (!s) s = plain_size(label, size, chunk, &plain);
    if (s) return s;
    if (plain > max_bytes)
        return tm_fail(TM_ERR_LIMIT, "%s: %zu decrypted bytes is over the limit of %zu bytes",
                       label, plain, max_bytes);
    unsigned char *buf = tm_alloc(plain + 1);
    if (!buf) return tm_fail(TM_ERR_NOMEM, "%s: out of memory for %zu bytes", label, plain);
    size_t at = HEADER_BYTES, got = 0, idx = 0;
    int final = 0;
    while (!s && at < size) {
        if (final) {
            s = tm_fail(TM_ERR_FORMAT, "%s: encrypted file has bytes after its final chunk; it "
                                       "is damaged",
                        label);
            break;
        }
        size_t k = size - at < chunk + ABYTES ? size - at : chunk + ABYTES;
        unsigned long long mlen = 0;
        unsigned char tag = 0;
        if (crypto_secretstream_xchacha20poly1305_pull(&st, buf + got, &mlen, &tag, in + at, k, in,
                                                       PREFIX_BYTES) != 0) {
            s = tm_fail(TM_ERR_FORMAT,
                        "%s: encrypted chunk %zu fails authentication: the file is damaged or "
                        "was tampered with",
                        label, idx);
            break;
        }
        final = tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL;
        got += (size_t)mlen;
        at += k;
        idx++;
    }
    if (!s && !final)
        s = tm_fail(TM_ERR_FORMAT, "%s: encrypted file is truncated (its final chunk is missing)",
                    label);
    sodium_memzero(&st, sizeof st);
    if (s) {
        sodium_memzero(buf, plain);
        tm_free(buf);
        return s;
    }
    buf[got] = 0;
    *out = (char *)buf;
    *out_size = got;
    return TM_OK;
}

/* ---------------------------------------------------------------- files */

static tm_status read_full(int fd, const char *path, unsigned char *buf, size_t want, size_t *got)
{
    *got = 0;
    while (*got < want) {
        ssize_t r = read(fd, buf + *got, want - *got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return tm_fail(TM_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        if (r == 0) break;
        *got += (size_t)r;
    }
    return TM_OK;
}

static tm_status open_regular(const char *path, int *fd_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return tm_fail(TM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return tm_fail(TM_ERR_IO, "%s: not a regular file", path);
    }
    *fd_out = fd;
    return TM_OK;
}

tm_status tm_encrypt_file(const tm_key *key, const char *src, const char *dst)
{
    if (!key || !src || !dst) return tm_fail(TM_ERR_INVALID, "tm_encrypt_file: NULL argument");
    int fd;
    tm_status s = open_regular(src, &fd);
    if (s) return s;
    size_t chunk = (size_t)1 << CHUNK_LOG2;
    unsigned char *mem = tm_alloc(3 * chunk + ABYTES);
    if (!mem) {
        close(fd);
        return tm_fail(TM_ERR_NOMEM, "%s: out of memory", src);
    }
    unsigned char *cur = mem, *next = mem + chunk, *out = mem + 2 * chunk;
    unsigned char head[HEADER_BYTES];
    crypto_secretstream_xchacha20poly1305_state st;
    tm_atomic_file *f = NULL;
    size_t n = 0, m = 0;
    s = read_full(fd, src, cur, chunk, &n);
    if (!s && tm_is_encrypted(cur, n)) s = tm_fail(TM_ERR_INVALID, "%s: is encrypted already", src);
    if (!s) s = tm_atomic_file_open(&f, dst);
    if (!s) s = enc_start(key, &st, head);
    if (!s) s = tm_atomic_file_write(f, head, HEADER_BYTES);
    /* one chunk read ahead, so that the last one is known and tagged FINAL */
    while (!s) {
        if (n == chunk) s = read_full(fd, src, next, chunk, &m);
        else m = 0;
        if (s) break;
        int last = m == 0;
        unsigned long long clen = 0;
        crypto_secretstream_xchacha20poly1305_push(
            &st, out, &clen, cur, n, head, PREFIX_BYTES,
            last ? crypto_secretstream_xchacha20poly1305_TAG_FINAL : 0);
        s = tm_atomic_file_write(f, out, (size_t)clen);
        if (last) break;
        unsigned char *t = cur;
        cur = next;
        next = t;
        n = m;
    }
    close(fd);
    sodium_memzero(&st, sizeof st);
    sodium_memzero(mem, 3 * chunk + ABYTES);
    tm_free(mem);
    if (s) {
        tm_atomic_file_abort(f);
        return s;
    }
    return tm_atomic_file_commit(f);
}

tm_status tm_decrypt_file(const tm_key *key, const char *src, const char *dst)
{
    if (!key || !src || !dst) return tm_fail(TM_ERR_INVALID, "tm_decrypt_file: NULL argument");
    int fd;
    tm_status s = open_regular(src, &fd);
    if (s) return s;
    unsigned char head[HEADER_BYTES];
    size_t n = 0, chunk = 0;
    crypto_secretstream_xchacha20poly1305_state st;
    s = read_full(fd, src, head, HEADER_BYTES, &n);
    if (!s) s = dec_start(key, src, head, n, &st, &chunk);
    if (s) {
        close(fd);
        return s;
    }
    unsigned char *mem = tm_alloc(2 * chunk + ABYTES);
    tm_atomic_file *f = NULL;
    if (!mem) s = tm_fail(TM_ERR_NOMEM, "%s: out of memory", src);
    if (!s) s = tm_atomic_file_open(&f, dst);
    unsigned char *in = mem, *out = mem + chunk + ABYTES;
    int final = 0;
    size_t idx = 0;
    while (!s) {
        s = read_full(fd, src, in, chunk + ABYTES, &n);
        if (s) break;
        if (n == 0) break;
        if (final) {
            s = tm_fail(TM_ERR_FORMAT, "%s: encrypted file has bytes after its final chunk; it "
                                       "is damaged",
                        src);
            break;
        }
        unsigned long long mlen = 0;
        unsigned char tag = 0;
        if (crypto_secretstream_xchacha20poly1305_pull(&st, out, &mlen, &tag, in, n, head,
                                                       PREFIX_BYTES) != 0) {
            s = tm_fail(TM_ERR_FORMAT,
                        "%s: encrypted chunk %zu fails authentication: the file is damaged, "
                        "truncated or was tampered with",
                        src, idx);
            break;
        }
        final = tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL;
        s = tm_atomic_file_write(f, out, (size_t)mlen);
        idx++;
    }
    if (!s && !final)
        s = tm_fail(TM_ERR_FORMAT, "%s: encrypted file is truncated (its final chunk is missing)",
                    src);
    close(fd);
    sodium_memzero(&st, sizeof st);
    if (mem) {
        sodium_memzero(mem, 2 * chunk + ABYTES);
        tm_free(mem);
    }
    if (s) {
        tm_atomic_file_abort(f); /* dst untouched: no partial plain text */
        return s;
    }
    return tm_atomic_file_commit(f);
}

/* --------------------------------------------------------------- folders */

#define MAX_DEPTH 16


static tm_status copy_plain(const char *src, const char *dst)
{
    int fd;
    tm_status s = open_regular(src, &fd);
    if (s) return s;
    tm_atomic_file *f;
    s = tm_atomic_file_open(&f, dst);
    unsigned char buf[65536];
    while (!s) {
        size_t n;
        s = read_full(fd, src, buf, sizeof buf, &n);
        if (s || n == 0) break;
        s = tm_atomic_file_write(f, buf, n);
    }
    close(fd);
    if (s) {
        tm_atomic_file_abort(f);
        return s;
    }
    return tm_atomic_file_commit(f);
}

static tm_status walk(const tm_key *key, const char *src, const char *dst, int encrypt, int depth,
                      int *count)
{
    if (depth > MAX_DEPTH)
        return tm_fail(TM_ERR_LIMIT, "%s: folders nested more than %d deep", src, MAX_DEPTH);
    int same = strcmp(src, dst) == 0;
    if (!same && mkdir(dst, 0777) != 0 && errno != EEXIST)
        return tm_fail(TM_ERR_IO, "%s: cannot create the folder: %s", dst, strerror(errno));
    DIR *d = opendir(src);
    if (!d) return tm_fail(TM_ERR_IO, "%s: cannot open the folder: %s", src, strerror(errno));
    tm_status s = TM_OK;
    struct dirent *e;
    while (!s && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (strstr(e->d_name, ".tmp.")) continue; /* a temporary file of another writer */
        char *sp = tm_io_path_join(src, e->d_name), *dp = tm_io_path_join(dst, e->d_name);
        struct stat sb;
        if (!sp || !dp) {
            s = tm_fail(TM_ERR_NOMEM, "out of memory");
        } else if (lstat(sp, &sb) != 0) {
            s = tm_fail(TM_ERR_IO, "%s: cannot stat: %s", sp, strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            s = walk(key, sp, dp, encrypt, depth + 1, count);
        } else if (S_ISREG(sb.st_mode)) {
            int enc = tm_file_is_encrypted(sp);
            if (enc == encrypt) {
                if (!same) s = copy_plain(sp, dp); /* already as wanted */
            } else {
                s = encrypt ? tm_encrypt_file(key, sp, dp) : tm_decrypt_file(key, sp, dp);
                if (!s) (*count)++;
            }
        } /* links, sockets and devices are left alone */
        tm_free(sp);
        tm_free(dp);
    }
    closedir(d);
    return s;
}

static tm_status convert_dir(const tm_key *key, const char *src, const char *dst, int encrypt,
                             int *n_files)
{
    int count = 0;
    if (n_files) *n_files = 0;
    if (!key || !src || !dst) return tm_fail(TM_ERR_INVALID, "tm_encrypt_dir: NULL argument");
    struct stat sb;
    if (stat(src, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return tm_fail(TM_ERR_IO, "%s: not a folder", src);
    tm_status s = walk(key, src, dst, encrypt, 0, &count);
    if (n_files) *n_files = count;
    return s;
}

tm_status tm_encrypt_dir(const tm_key *key, const char *src, const char *dst, int *n_files)
{
    return convert_dir(key, src, dst, 1, n_files);
}

tm_status tm_decrypt_dir(const tm_key *key, const char *src, const char *dst, int *n_files)
{
    return convert_dir(key, src, dst, 0, n_files);
}
