/* Readers that used to bypass decryption (issue 9, docs/security.md): an
 * IDX file (memory-mapped when plain) and tokenizer training corpora
 * (streamed when plain) give the same results encrypted as plain, and fail
 * with a clear message without a key or with a wrong one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/text.h"
#include "trimodal/vision.h"

static char dir[] = "/tmp/tm_crypt_readers_XXXXXX";

static void write_file(const char *path, const void *data, size_t n)
{
    CHECK_OK(tm_write_file_atomic(path, data, n));
}

/* Writes data encrypted under key to path. */
static void write_encrypted(const tm_key *key, const char *path, const void *data, size_t n)
{
    char *enc = NULL;
    size_t en = 0;
    CHECK_OK(tm_encrypt_buffer(key, data, n, &enc, &en));
    if (enc) write_file(path, enc, en);
    tm_free(enc);
}

static void message_has(const char *what, const char *word)
{
    test_checks++;
    if (!strstr(tm_last_error(), word)) {
        test_failures++;
        fprintf(stderr, "%s: message \"%s\" lacks \"%s\"\n", what, tm_last_error(), word);
    }
}

static void test_idx(const tm_key *key, const tm_key *wrong)
{
    /* 2 images of 3 x 4 bytes */
    unsigned char idx[4 + 12 + 24] = {0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4};
    for (int i = 0; i < 24; i++) idx[16 + i] = (unsigned char)(i * 11 + 3);
    char plain[256], enc[256];
    snprintf(plain, sizeof plain, "%s/images.idx", dir);
    snprintf(enc, sizeof enc, "%s/images.idx.enc", dir);
    write_file(plain, idx, sizeof idx);
    write_encrypted(key, enc, idx, sizeof idx);

    tm_idx *a = NULL, *b = NULL;
    tm_image_limits lim = tm_image_default_limits();
    tm_crypto_set_key(NULL);
    CHECK_OK(tm_idx_open(&a, plain, lim));
    if (getenv("TRIMODAL_KEY_FILE") == NULL && getenv("TRIMODAL_KEY") == NULL) {
        CHECK_STATUS(tm_idx_open(&b, enc, lim), TM_ERR_INVALID);
        message_has("idx without a key", "TRIMODAL_KEY_FILE");
        CHECK(b == NULL);
    }
    tm_crypto_set_key(wrong);
    CHECK_STATUS(tm_idx_open(&b, enc, lim), TM_ERR_FORMAT);
    message_has("idx with a wrong key", "wrong key");
    CHECK(b == NULL);
    tm_crypto_set_key(key);
    CHECK_OK(tm_idx_open(&b, enc, lim));
    if (a && b) {
        CHECK(tm_idx_count(b) == 2 && tm_idx_height(b) == 3 && tm_idx_width(b) == 4);
        CHECK(tm_idx_count(a) == tm_idx_count(b));
        CHECK(memcmp(tm_idx_data(a), tm_idx_data(b), 24) == 0);
        CHECK(memcmp(tm_idx_data(b), idx + 16, 24) == 0);
        tm_image *img = NULL;
        CHECK_OK(tm_idx_image(&img, b, 1));
        tm_image_free(img);
    }
    tm_idx_close(a);
    tm_idx_close(b);
    /* a damaged header inside an encrypted file: the parser's error */
    idx[3] = 9;
    write_encrypted(key, enc, idx, sizeof idx);
    b = NULL;
    CHECK(tm_idx_open(&b, enc, lim) != TM_OK);
    CHECK(b == NULL);
    tm_crypto_set_key(NULL);
}

static void test_bpe_train(const tm_key *key, const tm_key *wrong)
{
    /* a corpus of a few thousand lines (one block: blocks are 4 MiB) */
    size_t cap = 1 << 18, n = 0;
    char *text = malloc(cap);
    const char *w[] = {"red", "blue", "green", "boot", "shoe", "hat", "dress", "scarf"};
    for (int i = 0; n + 64 < cap && i < 6000; i++)
        n += (size_t)snprintf(text + n, cap - n, "a %s %s on the mat %d\n", w[i % 8],
                              w[(i / 8) % 8], i % 97);
    char plain[256], enc[256];
    snprintf(plain, sizeof plain, "%s/corpus.txt", dir);
    snprintf(enc, sizeof enc, "%s/corpus.enc", dir);
    write_file(plain, text, n);
    write_encrypted(key, enc, text, n);
    free(text);

    tm_tokenizer_train_params p = tm_tokenizer_train_default_params();
    p.vocab_size = 400;
    tm_tokenizer *a = NULL, *b = NULL;
    const char *pp[] = {plain}, *pe[] = {enc};
    CHECK_OK(tm_tokenizer_train_files(&a, pp, 1, &p));
    tm_crypto_set_key(wrong);
    CHECK(tm_tokenizer_train_files(&b, pe, 1, &p) != TM_OK);
    message_has("corpus with a wrong key", "wrong key");
    CHECK(b == NULL);
    tm_crypto_set_key(key);
    CHECK_OK(tm_tokenizer_train_files(&b, pe, 1, &p));
    tm_crypto_set_key(NULL);
    if (a && b) {
        char pa[256], pb[256];
        snprintf(pa, sizeof pa, "%s/a.json", dir);
        snprintf(pb, sizeof pb, "%s/b.json", dir);
        CHECK_OK(tm_tokenizer_save(a, pa));
        CHECK_OK(tm_tokenizer_save(b, pb));
        char *da = NULL, *db = NULL;
        size_t na = 0, nb = 0;
        CHECK_OK(tm_read_file(pa, 1 << 24, &da, &na));
        CHECK_OK(tm_read_file(pb, 1 << 24, &db, &nb));
        CHECK(da && db && na == nb && memcmp(da, db, na) == 0);
        CHECK(na > 1000);
        tm_free(da);
        tm_free(db);
    }
    tm_tokenizer_free(a);
    tm_tokenizer_free(b);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    tm_key key, wrong;
    CHECK_OK(tm_key_from_hex(&key, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"));
    CHECK_OK(tm_key_from_hex(&wrong, "ff112233445566778899aabbccddeeff00112233445566778899aabbccddee00"));
    test_idx(&key, &wrong);
    test_bpe_train(&key, &wrong);
    test_rm_tree(dir);
    return test_finish("crypt_readers");
}
