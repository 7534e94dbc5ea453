/* io: checksums. safetensors files carry "__checksum__" (BLAKE2b-256 of
 * the file with the digits as '0'), checked on open; the reference file
 * made by hashlib (scripts/gen_io_crypto_vectors.py) opens and is what
 * trimodal's writer writes, byte for byte; a flipped byte anywhere is
 * caught. Folders: checksums.json written and verified, damage named. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"

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

static tm_tensor make(tm_dtype dt, int n0, int n1, void *data)
{
    tm_tensor t = {0};
    t.dtype = dt;
    t.ndim = n1 ? 2 : 1;
    t.shape[0] = n0;
    t.stride[0] = n1 ? n1 : 1;
    if (n1) {
        t.shape[1] = n1;
        t.stride[1] = 1;
    }
    t.data = data;
    return t;
}

static void test_reference(const char *dir)
{
    const char *ref = test_data_path("io/checksum.safetensors");
    tm_safetensors *st = NULL;
    CHECK_OK(tm_safetensors_open(&st, ref));
    if (!st) return;
    const char *ck = tm_safetensors_checksum(st);
    CHECK(ck && !strncmp(ck, "blake2b-256:cb79652c2d33c172", 28));
    /* hidden from the metadata listing */
    CHECK(tm_safetensors_metadata_count(st) == 1);
    CHECK(!strcmp(tm_safetensors_metadata_key(st, 0), "format"));
    tm_tensor a;
    CHECK_OK(tm_safetensors_get(st, "a", &a));
    CHECK(((const float *)a.data)[2] == 3.25f);
    tm_safetensors_close(st);

    /* trimodal's writer writes the same bytes */
    float av[6] = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 7.0f};
    int32_t bv[4] = {1, -2, 3, 2147483647};
    tm_tensor ta = make(TM_F32, 2, 3, av), tb = make(TM_I32, 4, 0, bv);
    tm_named_tensor nt[2] = {{"a", &ta}, {"b", &tb}};
    const char *k[] = {"format"}, *v[] = {"pt"};
    char path[256];
    snprintf(path, sizeof path, "%s/same.safetensors", dir);
    CHECK_OK(tm_safetensors_write(path, nt, 2, k, v, 1));
    size_t n1, n2;
    char *x = slurp(ref, &n1), *y = slurp(path, &n2);
    CHECK(x && y && n1 == n2 && memcmp(x, y, n1) == 0);
    free(y);
    /* the reserved key is refused */
    const char *rk[] = {"__checksum__"};
    CHECK_STATUS(tm_safetensors_write(path, nt, 2, rk, v, 1), TM_ERR_INVALID);

    /* every byte flipped: never opens */
    char bad[256];
    snprintf(bad, sizeof bad, "%s/flip.safetensors", dir);
    int opened = 0, named = 0;
    for (size_t i = 0; i < n1; i++) {
        for (int bit = 0; bit < 8; bit += 5) {
            x[i] ^= (char)(1 << bit);
            spit(bad, x, n1);
            tm_safetensors *s2 = NULL;
            if (tm_safetensors_open(&s2, bad) == TM_OK) opened++;
            else if (strstr(tm_last_error(), "flip.safetensors")) named++;
            tm_safetensors_close(s2);
            x[i] ^= (char)(1 << bit);
        }
    }
    CHECK(opened == 0);
    CHECK(named == (int)(2 * n1));
    /* in the data: reported as corruption */
    x[n1 - 3] ^= 4;
    spit(bad, x, n1);
    CHECK_STATUS(tm_safetensors_open(&st, bad), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "corrupt") && strstr(tm_last_error(), "flip.safetensors"));
    /* in memory too */
    CHECK_STATUS(tm_safetensors_open_memory(&st, x, n1), TM_ERR_FORMAT);
    free(x);

    /* a file without a checksum (another tool's) still loads */
    CHECK_OK(tm_safetensors_open(&st, test_data_path("io/py_basic.safetensors")));
    CHECK(tm_safetensors_checksum(st) == NULL);
    tm_safetensors_close(st);
}

/* A larger file: a flip anywhere in 1 MB of data is caught. */
static void test_large(const char *dir)
{
    int n = 1 << 18;
    float *w = malloc((size_t)n * sizeof *w);
    test_fill_uniform(w, n, 7, -1, 1);
    tm_tensor t = make(TM_F32, 512, 512, w);
    tm_named_tensor nt = {"w", &t};
    char path[256];
    snprintf(path, sizeof path, "%s/big.safetensors", dir);
    CHECK_OK(tm_safetensors_write(path, &nt, 1, NULL, NULL, 0));
    size_t len;
    char *x = slurp(path, &len);
    size_t spots[] = {len / 3, len / 2, len - 1, 200};
    for (int i = 0; i < 4; i++) {
        x[spots[i]] ^= 0x10;
        spit(path, x, len);
        tm_safetensors *st = NULL;
        CHECK(tm_safetensors_open(&st, path) != TM_OK);
        x[spots[i]] ^= 0x10;
    }
    spit(path, x, len);
    tm_safetensors *st = NULL;
    CHECK_OK(tm_safetensors_open(&st, path));
    tm_safetensors_close(st);
    free(x);
    free(w);
}

static void test_folder(const char *dir)
{
    char d[256], p[400], q[400];
    snprintf(d, sizeof d, "%s/model", dir);
    CHECK(mkdir(d, 0700) == 0);
    int checked = -1;
    CHECK_OK(tm_dir_checksums_verify(d, 0, &checked)); /* no manifest: skipped */
    CHECK(checked == 0);
    snprintf(p, sizeof p, "%s/config.json", d);
    CHECK_OK(tm_write_file_atomic(p, "{\"dim\": 8}\n", 11));
    snprintf(p, sizeof p, "%s/tokenizer.json", d);
    CHECK_OK(tm_write_file_atomic(p, "{}", 2));
    float w[64];
    test_fill_uniform(w, 64, 3, -1, 1);
    tm_tensor t = make(TM_F32, 8, 8, w);
    tm_named_tensor nt = {"w", &t};
    snprintf(q, sizeof q, "%s/model.safetensors", d);
    CHECK_OK(tm_safetensors_write(q, &nt, 1, NULL, NULL, 0));
    CHECK_OK(tm_dir_checksums_write(d));
    CHECK_OK(tm_dir_checksums_verify(d, 0, &checked));
    CHECK(checked == 1);
    /* the manifest: the digest of config.json, as an independent hash */
    char hex[65];
    tm_hash_hex("{\"dim\": 8}\n", 11, hex);
    size_t n;
    snprintf(p, sizeof p, "%s/" TM_CHECKSUMS_FILE, d);
    char *m = slurp(p, &n);
    CHECK(m && strstr(m, hex) && strstr(m, "\"model.safetensors\"") && strstr(m, "blake2b-256"));
    free(m);
    /* BLAKE2b-256("abc"), RFC 7693 parameters, from Python's hashlib */
    tm_hash_hex("abc", 3, hex);
    CHECK(!strcmp(hex, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d5231"
                       "9"));
    /* a changed file is named */
    snprintf(p, sizeof p, "%s/config.json", d);
    CHECK_OK(tm_write_file_atomic(p, "{\"dim\": 9}\n", 11));
    CHECK_STATUS(tm_dir_checksums_verify(d, 0, &checked), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "config.json") && strstr(tm_last_error(), "corrupt"));
    CHECK_OK(tm_write_file_atomic(p, "{\"dim\": 8}\n", 11));
    /* a damaged safetensors data byte: found unless skipped */
    size_t len;
    char *x = slurp(q, &len);
    x[len - 5] ^= 1;
    spit(q, x, len);
    CHECK_STATUS(tm_dir_checksums_verify(d, 0, NULL), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "model.safetensors") != NULL);
    CHECK_OK(tm_dir_checksums_verify(d, TM_VERIFY_SKIP_SAFETENSORS, NULL));
    x[len - 5] ^= 1;
    spit(q, x, len);
    free(x);
    /* a missing file */
    snprintf(p, sizeof p, "%s/tokenizer.json", d);
    unlink(p);
    CHECK_STATUS(tm_dir_checksums_verify(d, 0, NULL), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "tokenizer.json") && strstr(tm_last_error(), "missing"));
    CHECK_OK(tm_write_file_atomic(p, "{}", 2));
    CHECK_OK(tm_dir_checksums_verify(d, 0, NULL));
    /* hostile or damaged manifests */
    snprintf(p, sizeof p, "%s/" TM_CHECKSUMS_FILE, d);
    char *good = slurp(p, &n);
    const char *bad[] = {
        "not json",
        ("{\"algorithm\": \"blake2b-256\", \"files\": {\"../x\": {\"size\": 1, \"blake2b\": "
         "\"0000000000000000000000000000000000000000000000000000000000000000\"}}}"),
        "{\"algorithm\": \"md5\", \"files\": {}}",
        "{\"algorithm\": \"blake2b-256\", \"files\": {\"config.json\": {\"size\": 11}}}",
        "{\"algorithm\": \"blake2b-256\", \"files\": []}",
    };
    for (int i = 0; i < 5; i++) {
        spit(p, bad[i], strlen(bad[i]));
        CHECK(tm_dir_checksums_verify(d, 0, NULL) != TM_OK);
    }
    spit(p, good, n);
    free(good);
    /* encrypted in place: the manifest (of plain content) still holds */
    tm_key key;
    for (int i = 0; i < TM_KEY_BYTES; i++) key.bytes[i] = (unsigned char)(7 * i);
    CHECK_OK(tm_encrypt_dir(&key, d, d, NULL));
    tm_crypto_set_key(&key);
    CHECK_OK(tm_dir_checksums_verify(d, 0, &checked));
    CHECK(checked == 1);
    tm_crypto_set_key(NULL);
    unsetenv("TRIMODAL_KEY_FILE");
    unsetenv("TRIMODAL_KEY");
    CHECK_STATUS(tm_dir_checksums_verify(d, 0, NULL), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "TRIMODAL_KEY_FILE") != NULL);
}

int main(void)
{
    char dir[] = "/tmp/tm_checksum_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    test_reference(dir);
    test_large(dir);
    test_folder(dir);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_finish("checksum");
}
