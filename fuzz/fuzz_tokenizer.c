/* libFuzzer harness for the tokenizer readers and the encoder. The first
 * byte picks a mode; the rest is split at the first 0xFF 0x00 pair (or
 * used whole):
 *   mode % 3 == 0: tokenizer.json from memory, then encode/decode the tail
 *   mode % 3 == 1: vocab.json + merges.txt (head = vocab, tail = merges)
 *   mode % 3 == 2: encode the whole input with a fixed small vocabulary
 * Whatever loads must encode any bytes, decode them back to the same bytes
 * (byte-level, no prefix space, no lowercasing), and free cleanly; what
 * fails must say why. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "trimodal/text.h"

#define REQUIRE(x)                                                                       \
    do {                                                                                 \
        if (!(x)) __builtin_trap();                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A byte-level vocabulary is built in code: the 256 byte characters first. */
static tm_tokenizer *small_tokenizer(void)
{
    static char json[16384];
    size_t k = 0;
    const char *head = "{\"added_tokens\":[{\"id\":262,\"content\":\"<|eot|>\",\"special\":true},"
                       "{\"id\":263,\"content\":\"[X]\",\"special\":false}],"
                       "\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\","
                       "\"merges\":[\"Ġ t\",\"h e\",\"Ġt he\",\"a a\",\"aa aa\",\"Ã ©\"],\"vocab\":{";
    k += (size_t)snprintf(json + k, sizeof json - k, "%s", head);
    for (int b = 0; b < 256; b++) {
        unsigned cp = b <= 0x20 ? 256u + b : (b >= 0x7F && b <= 0xA0) ? b + 162u : b == 0xAD ? 323u : (unsigned)b;
        char u[8];
        int n = cp < 0x80 ? (u[0] = (char)cp, 1) : (u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 63)), 2);
        u[n] = 0;
        if (cp == '"' || cp == '\\') k += (size_t)snprintf(json + k, sizeof json - k, "\"\\%s\":%d,", u, b);
        else k += (size_t)snprintf(json + k, sizeof json - k, "\"%s\":%d,", u, b);
    }
    k += (size_t)snprintf(json + k, sizeof json - k,
                          "\"Ġt\":256,\"he\":257,\"Ġthe\":258,\"aa\":259,\"aaaa\":260,\"Ã©\":261}}}");
    tm_tokenizer *t = NULL;
    if (tm_tokenizer_load_json_memory(&t, json, k) != TM_OK) __builtin_trap();
    return t;
}

static void roundtrip(const tm_tokenizer *t, const uint8_t *s, size_t n, int exact)
{
    tm_tokenizer_encode_params p = tm_tokenizer_encode_default_params();
    p.parse_special = n & 1;
    tm_text_encoding *e = NULL;
    tm_status st = tm_tokenizer_encode(t, s, n, &p, &e);
    if (st != TM_OK) {
        REQUIRE(e == NULL && tm_last_error()[0]);
        return;
    }
    for (int32_t i = 0; i < e->length; i++) REQUIRE(e->ids[i] >= 0 && e->ids[i] < tm_tokenizer_vocab_size(t));
    char *out = NULL;
    size_t len = 0;
    REQUIRE(tm_tokenizer_decode(t, e->ids, e->length, 0, &out, &len) == TM_OK);
    if (exact) REQUIRE(len == n && memcmp(out, s, n) == 0);
    tm_free(out);
    /* truncation and padding keep their promises */
    p.max_length = 7;
    p.add_bos = tm_tokenizer_special_id(t, TM_SPECIAL_BOS) >= 0;
    p.pad_to_max_length = tm_tokenizer_special_id(t, TM_SPECIAL_PAD) >= 0;
    tm_text_encoding *e2 = NULL;
    if (tm_tokenizer_encode(t, s, n, &p, &e2) == TM_OK) {
        REQUIRE(e2->length <= 7 && e2->n_tokens <= e2->length);
        if (p.pad_to_max_length) REQUIRE(e2->length == 7);
    }
    tm_text_encoding_free(e2);
    tm_text_encoding_free(e);
}

static int exact_roundtrip(const tm_tokenizer *t)
{
    /* exact only for byte-level without prefix space, lowercasing or white
     * space collapsing, with a token for every byte: what an arbitrary file
     * need not give, so probe with every byte */
    uint8_t probe[256 + 4] = {0xC3, 0xA9, 0xE2, 0x82};
    for (int b = 0; b < 256; b++) probe[4 + b] = (uint8_t)b;
    tm_text_encoding *e = NULL;
    if (tm_tokenizer_style(t) != TM_BPE_GPT2) return 0;
    if (tm_tokenizer_encode(t, probe, sizeof probe, NULL, &e) != TM_OK) return 0;
    char *out = NULL;
    size_t len = 0;
    int ok = tm_tokenizer_decode(t, e->ids, e->length, 0, &out, &len) == TM_OK && len == sizeof probe &&
             !memcmp(out, probe, len);
    tm_free(out);
    tm_text_encoding_free(e);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int mode = data[0] % 3;
    data++, size--;
    size_t cut = size;
    for (size_t i = 0; i + 1 < size; i++)
        if (data[i] == 0xFF && data[i + 1] == 0x00) {
            cut = i;
            break;
        }
    const uint8_t *tail = cut < size ? data + cut + 2 : data + size;
    size_t tail_n = cut < size ? size - cut - 2 : 0;
    tm_tokenizer *t = NULL;
    tm_status st;
    if (mode == 0) {
        st = tm_tokenizer_load_json_memory(&t, data, cut);
    } else if (mode == 1) {
        st = tm_tokenizer_load_vocab_merges_memory(&t, data, cut, tail, tail_n, TM_BPE_AUTO);
    } else {
        static tm_tokenizer *fixed;
        if (!fixed) fixed = small_tokenizer();
        roundtrip(fixed, data, size, 1);
        return 0;
    }
    if (st != TM_OK) {
        REQUIRE(t == NULL && tm_last_error()[0]);
        return 0;
    }
    /* what loads saves and loads back to the same JSON */
    char *json = NULL;
    size_t jn = 0;
    REQUIRE(tm_tokenizer_to_json(t, &json, &jn) == TM_OK);
    tm_tokenizer *back = NULL;
    if (tm_tokenizer_load_json_memory(&back, json, jn) == TM_OK) {
        char *json2 = NULL;
        size_t jn2 = 0;
        REQUIRE(tm_tokenizer_to_json(back, &json2, &jn2) == TM_OK);
        REQUIRE(jn2 == jn && !memcmp(json, json2, jn));
        tm_free(json2);
    }
    tm_tokenizer_free(back);
    tm_free(json);
    roundtrip(t, tail, tail_n, exact_roundtrip(t));
    roundtrip(t, data, cut, exact_roundtrip(t));
    tm_tokenizer_free(t);
    return 0;
}
