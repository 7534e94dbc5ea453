/* io: encryption at rest (src/io/crypto.c). Vectors encrypted by PyNaCl
 * (scripts/gen_io_crypto_vectors.py) decrypt to the known pattern; round
 * trips of buffers, files and folders; wrong key, truncation at many
 * points, every byte flipped in a small file, bytes appended; transparent
 * reading through tm_read_file and tm_safetensors_open; key files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"

static unsigned char pat(size_t i)
{
    return (unsigned char)((i * 31 + (i >> 8)) & 255);
}

static void ref_key(tm_key *k)
{
    for (int i = 0; i < TM_KEY_BYTES; i++) k->bytes[i] = (unsigned char)i;
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)len + 1);
    *n = fread(p, 1, (size_t)len, f);
    fclose(f);
    return p;
}

static void spit(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static int is_pattern(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] != pat(i)) return 0;
    return 1;
}

/* Decrypting the reference files made by PyNaCl. */
static void test_reference(void)
{
    tm_key key;
    ref_key(&key);
    const char *names[] = {"io/enc_small.bin", "io/enc_2chunks.bin"};
    size_t sizes[] = {1000, 131072};
    for (int k = 0; k < 2; k++) {
        size_t n;
        char *c = slurp(test_data_path(names[k]), &n);
        CHECK(c != NULL);
        if (!c) continue;
        CHECK(tm_is_encrypted(c, n));
        char *p;
        size_t pn;
        CHECK_OK(tm_decrypt_buffer(&key, names[k], c, n, SIZE_MAX, &p, &pn));
        CHECK(pn == sizes[k] && is_pattern(p, pn) && p[pn] == 0);
        tm_free(p);
        /* the limit on the plain size */
        CHECK_STATUS(tm_decrypt_buffer(&key, names[k], c, n, sizes[k] - 1, &p, &pn), TM_ERR_LIMIT);
        /* a wrong key is reported as such */
        tm_key bad = key;
        bad.bytes[5] ^= 1;
        CHECK_STATUS(tm_decrypt_buffer(&bad, names[k], c, n, SIZE_MAX, &p, &pn), TM_ERR_FORMAT);
        CHECK(p == NULL && strstr(tm_last_error(), "wrong key") != NULL);
        free(c);
    }
}

/* Round trips at chunk boundaries, and every way of damaging a file. */
static void test_buffers(void)
{
    tm_key key;
    ref_key(&key);
    size_t sizes[] = {0, 1, 65535, 65536, 65537, 200000};
    for (int k = 0; k < 6; k++) {
        size_t n = sizes[k];
        char *plain = malloc(n + 1);
        for (size_t i = 0; i < n; i++) plain[i] = (char)pat(i);
        char *c, *p;
        size_t cn, pn;
        CHECK_OK(tm_encrypt_buffer(&key, plain, n, &c, &cn));
        CHECK(cn >= n + TM_CRYPT_HEADER_BYTES + 17);
        CHECK_OK(tm_decrypt_buffer(&key, "buf", c, cn, SIZE_MAX, &p, &pn));
        CHECK(pn == n && memcmp(p, plain, n) == 0);
        tm_free(p);
        /* two encryptions of the same data differ (random stream header) */
        char *c2;
        size_t cn2;
        CHECK_OK(tm_encrypt_buffer(&key, plain, n, &c2, &cn2));
        CHECK(cn2 == cn && memcmp(c, c2, cn) != 0);
        tm_free(c2);
        /* truncation at many points: header, chunk boundaries, inside tags */
        size_t cuts[] = {0, 5, 8, 31, 47, 48, 49, 64, cn / 2, cn - 17, cn - 1,
                         48 + 65536 + 17, 48 + 65536 + 16, 48 + 65536 + 18};
        for (int j = 0; j < 14; j++) {
            if (cuts[j] >= cn) continue;
            p = (char *)1;
            tm_status s = tm_decrypt_buffer(&key, "cut", c, cuts[j], SIZE_MAX, &p, &pn);
            CHECK(s != TM_OK && p == NULL);
            if (cuts[j] >= 6 && s != TM_ERR_FORMAT)
                fprintf(stderr, "cut at %zu of %zu: status %d: %s\n", cuts[j], cn, s,
                        tm_last_error());
            if (cuts[j] >= 6) CHECK(s == TM_ERR_FORMAT);
        }
        /* bytes appended after the final chunk */
        char *longer = malloc(cn + 40);
        memcpy(longer, c, cn);
        memset(longer + cn, 0, 40);
        CHECK_STATUS(tm_decrypt_buffer(&key, "long", longer, cn + 40, SIZE_MAX, &p, &pn),
                     TM_ERR_FORMAT);
        free(longer);
        /* a flipped byte: every byte of small files, a spread for big ones */
        size_t step = cn < 2000 ? 1 : cn / 97;
        int bad = 0;
        for (size_t at = 6; at < cn; at += step) {
            c[at] ^= 0x20;
            p = NULL;
            if (tm_decrypt_buffer(&key, "flip", c, cn, SIZE_MAX, &p, &pn) == TM_OK) bad++;
            tm_free(p);
            c[at] ^= 0x20;
        }
        CHECK(bad == 0);
        tm_free(c);
        free(plain);
    }
    /* not encrypted at all */
    char *p;
    size_t pn;
    CHECK_STATUS(tm_decrypt_buffer(&key, "plain", "hello world, not encrypted", 26, 100, &p, &pn),
                 TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "not encrypted") != NULL);
}

/* Keys: hex, raw, bad files, generated files, the environment. */
static void test_keys(const char *dir)
{
    char path[256];
    tm_key a, b;
    snprintf(path, sizeof path, "%s/key.hex", dir);
    CHECK_OK(tm_key_generate_file(path));
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600 && sb.st_size == 65);
    CHECK_STATUS(tm_key_generate_file(path), TM_ERR_IO); /* never overwritten */
    CHECK_OK(tm_key_load_file(&a, path));
    size_t n;
    char *hex = slurp(path, &n);
    hex[64] = 0;
    CHECK_OK(tm_key_from_hex(&b, hex));
    CHECK(memcmp(a.bytes, b.bytes, TM_KEY_BYTES) == 0);
    /* the same key as 32 raw bytes */
    snprintf(path, sizeof path, "%s/key.raw", dir);
    spit(path, a.bytes, TM_KEY_BYTES);
    CHECK_OK(tm_key_load_file(&b, path));
    CHECK(memcmp(a.bytes, b.bytes, TM_KEY_BYTES) == 0);
    /* the environment: TRIMODAL_KEY_FILE wins over TRIMODAL_KEY */
    int found = 0;
    unsetenv("TRIMODAL_KEY_FILE");
    unsetenv("TRIMODAL_KEY");
    CHECK_OK(tm_key_from_env(&b, &found));
    CHECK(found == 0);
    setenv("TRIMODAL_KEY", hex, 1);
    CHECK_OK(tm_key_from_env(&b, &found));
    CHECK(found == 1 && memcmp(a.bytes, b.bytes, TM_KEY_BYTES) == 0);
    setenv("TRIMODAL_KEY", "abc", 1);
    CHECK_STATUS(tm_key_from_env(&b, &found), TM_ERR_FORMAT);
    setenv("TRIMODAL_KEY_FILE", path, 1);
    CHECK_OK(tm_key_from_env(&b, &found));
    CHECK(found == 1 && memcmp(a.bytes, b.bytes, TM_KEY_BYTES) == 0);
    unsetenv("TRIMODAL_KEY");
    unsetenv("TRIMODAL_KEY_FILE");
    free(hex);
    /* bad key files */
    snprintf(path, sizeof path, "%s/key.bad", dir);
    spit(path, "0123", 4);
    CHECK_STATUS(tm_key_load_file(&b, path), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "key.bad") != NULL);
    char big[300];
    memset(big, 'a', sizeof big);
    spit(path, big, sizeof big);
    CHECK_STATUS(tm_key_load_file(&b, path), TM_ERR_FORMAT);
    memset(big, 'g', 64); /* 64 characters, not hex */
    spit(path, big, 64);
    CHECK_STATUS(tm_key_load_file(&b, path), TM_ERR_FORMAT);
    snprintf(path, sizeof path, "%s/missing.key", dir);
    CHECK_STATUS(tm_key_load_file(&b, path), TM_ERR_IO);
}

/* Files and folders; transparent reading through the common readers. */
static void test_files(const char *dir)
{
    tm_key key, other;
    ref_key(&key);
    ref_key(&other);
    other.bytes[0] = 99;
    char src[256], enc[256], dec[256];
    snprintf(src, sizeof src, "%s/plain.txt", dir);
    snprintf(enc, sizeof enc, "%s/plain.txt.enc", dir);
    snprintf(dec, sizeof dec, "%s/plain.txt.dec", dir);
    size_t n = 150001;
    char *plain = malloc(n);
    for (size_t i = 0; i < n; i++) plain[i] = (char)pat(i);
    CHECK_OK(tm_write_file_atomic(src, plain, n));
    CHECK_OK(tm_encrypt_file(&key, src, enc));
    CHECK(tm_file_is_encrypted(enc) && !tm_file_is_encrypted(src));
    CHECK_STATUS(tm_encrypt_file(&key, enc, dec), TM_ERR_INVALID); /* twice: refused */
    CHECK_STATUS(tm_decrypt_file(&key, src, dec), TM_ERR_INVALID);
    CHECK_OK(tm_decrypt_file(&key, enc, dec));
    size_t m;
    char *back = slurp(dec, &m);
    CHECK(m == n && memcmp(back, plain, n) == 0);
    free(back);
    /* the streamed file and the buffer decrypt agree */
    char *c = slurp(enc, &m), *p;
    size_t pn;
    CHECK_OK(tm_decrypt_buffer(&key, "enc", c, m, SIZE_MAX, &p, &pn));
    CHECK(pn == n && memcmp(p, plain, n) == 0);
    tm_free(p);
    /* a wrong key or a damaged file leaves dst untouched */
    unlink(dec);
    CHECK_STATUS(tm_decrypt_file(&other, enc, dec), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "wrong key") != NULL);
    struct stat sb;
    CHECK(stat(dec, &sb) != 0);
    char cut[256];
    snprintf(cut, sizeof cut, "%s/cut.enc", dir);
    spit(cut, c, m - 100);
    CHECK_STATUS(tm_decrypt_file(&key, cut, dec), TM_ERR_FORMAT);
    CHECK(stat(dec, &sb) != 0);
    spit(cut, c, 48 + 65536 + 17); /* ends on a chunk boundary */
    CHECK_STATUS(tm_decrypt_file(&key, cut, dec), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "truncated") != NULL && stat(dec, &sb) != 0);
    c[1000] ^= 1;
    spit(cut, c, m);
    CHECK_STATUS(tm_decrypt_file(&key, cut, dec), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "cut.enc") != NULL && stat(dec, &sb) != 0);
    free(c);

    /* transparent reading: no key, then the env, then the process key */
    char *d;
    unsetenv("TRIMODAL_KEY_FILE");
    unsetenv("TRIMODAL_KEY");
    tm_crypto_set_key(NULL);
    CHECK_STATUS(tm_read_file(enc, n + 10, &d, &m), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "TRIMODAL_KEY_FILE") != NULL &&
          strstr(tm_last_error(), "plain.txt.enc") != NULL);
    setenv("TRIMODAL_KEY", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 1);
    CHECK_OK(tm_read_file(enc, n + 10, &d, &m));
    CHECK(m == n && memcmp(d, plain, n) == 0 && d[n] == 0);
    tm_free(d);
    CHECK_STATUS(tm_read_file(enc, n - 1, &d, &m), TM_ERR_LIMIT);
    tm_crypto_set_key(&other); /* wins over the environment */
    CHECK_STATUS(tm_read_file(enc, n + 10, &d, &m), TM_ERR_FORMAT);
    tm_crypto_set_key(NULL);
    unsetenv("TRIMODAL_KEY");

    /* safetensors: written, encrypted in place, opened transparently */
    char st_path[256];
    snprintf(st_path, sizeof st_path, "%s/w.safetensors", dir);
    float v[300];
    for (int i = 0; i < 300; i++) v[i] = (float)i * 0.5f - 7.0f;
    tm_tensor t = {0};
    t.dtype = TM_F32;
    t.ndim = 2;
    t.shape[0] = 3;
    t.shape[1] = 100;
    t.stride[0] = 100;
    t.stride[1] = 1;
    t.data = v;
    tm_named_tensor nt = {"w", &t};
    CHECK_OK(tm_safetensors_write(st_path, &nt, 1, NULL, NULL, 0));
    CHECK_OK(tm_encrypt_file(&key, st_path, st_path));
    CHECK(tm_file_is_encrypted(st_path));
    tm_safetensors *st = NULL;
    CHECK_STATUS(tm_safetensors_open(&st, st_path), TM_ERR_INVALID);
    CHECK(st == NULL && strstr(tm_last_error(), "TRIMODAL_KEY_FILE") != NULL);
    tm_crypto_set_key(&key);
    CHECK_OK(tm_safetensors_open(&st, st_path));
    tm_tensor got;
    CHECK_OK(tm_safetensors_get(st, "w", &got));
    CHECK(got.shape[0] == 3 && got.shape[1] == 100 && memcmp(got.data, v, sizeof v) == 0);
    CHECK(tm_safetensors_checksum(st) != NULL);
    tm_safetensors_close(st);
    tm_crypto_set_key(&other);
    CHECK_STATUS(tm_safetensors_open(&st, st_path), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "wrong key") != NULL);
    tm_crypto_set_key(NULL);

    /* folders, recursively, out of place then in place */
    char fdir[256], sub[300], fout[256], fback[256], q[400];
    snprintf(fdir, sizeof fdir, "%s/folder", dir);
    snprintf(sub, sizeof sub, "%s/sub", fdir);
    snprintf(fout, sizeof fout, "%s/folder.enc", dir);
    snprintf(fback, sizeof fback, "%s/folder.dec", dir);
    CHECK(mkdir(fdir, 0700) == 0 && mkdir(sub, 0700) == 0);
    snprintf(q, sizeof q, "%s/a.json", fdir);
    CHECK_OK(tm_write_file_atomic(q, "{\"a\": 1}", 8));
    snprintf(q, sizeof q, "%s/b.bin", sub);
    CHECK_OK(tm_write_file_atomic(q, plain, 70000));
    int count = -1;
    CHECK_OK(tm_encrypt_dir(&key, fdir, fout, &count));
    CHECK(count == 2);
    snprintf(q, sizeof q, "%s/sub/b.bin", fout);
    CHECK(tm_file_is_encrypted(q));
    CHECK_OK(tm_encrypt_dir(&key, fout, fout, &count)); /* already: nothing to do */
    CHECK(count == 0);
    CHECK_OK(tm_decrypt_dir(&key, fout, fback, &count));
    CHECK(count == 2);
    snprintf(q, sizeof q, "%s/sub/b.bin", fback);
    back = slurp(q, &m);
    CHECK(m == 70000 && memcmp(back, plain, m) == 0);
    free(back);
    CHECK_STATUS(tm_decrypt_dir(&other, fout, fback, &count), TM_ERR_FORMAT);
    CHECK_OK(tm_encrypt_dir(&key, fdir, fdir, &count)); /* in place */
    CHECK(count == 2);
    snprintf(q, sizeof q, "%s/a.json", fdir);
    CHECK(tm_file_is_encrypted(q));
    tm_crypto_set_key(&key);
    CHECK_OK(tm_read_file(q, 100, &d, &m));
    CHECK(m == 8 && memcmp(d, "{\"a\": 1}", 8) == 0);
    tm_free(d);
    tm_crypto_set_key(NULL);
    free(plain);
}

int main(void)
{
    char dir[] = "/tmp/tm_crypto_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    test_reference();
    test_buffers();
    test_keys(dir);
    test_files(dir);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_finish("crypto");
}
