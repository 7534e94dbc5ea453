/* The BPE tokenizer: the reference vectors of scripts/gen_text_vectors.py
 * (trained, GPT-2, CLIP and HF vocabularies), training that reproduces the
 * reference's vocabulary, save/load, decode(encode(s)) == s on random byte
 * strings, special tokens, padding, truncation and masks, and every
 * loader error. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"
#include "trimodal/text.h"

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[len] = 0;
    if (n) *n = (size_t)len;
    return buf;
}

static size_t unhex(const char *h, unsigned char *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (unsigned char)v;
    }
    return n;
}

/* test_data_path() returns a static buffer: copy one path before the next */
static tm_status load_pair(const char *name, tm_bpe_style style, tm_tokenizer **t)
{
    char v[1024], m[1024], rel[64];
    snprintf(rel, sizeof rel, "text/%s_vocab.json", name);
    snprintf(v, sizeof v, "%s", test_data_path(rel));
    snprintf(rel, sizeof rel, "text/%s_merges.txt", name);
    snprintf(m, sizeof m, "%s", test_data_path(rel));
    return tm_tokenizer_load_vocab_merges(t, v, m, style);
}

static tm_tokenizer *load_set(const cJSON *load)
{
    tm_tokenizer *tok = NULL;
    const cJSON *json = cJSON_GetObjectItem(load, "json");
    tm_status s;
    if (json) {
        s = tm_tokenizer_load_json(&tok, test_data_path(json->valuestring));
    } else {
        char vocab[1024];
        snprintf(vocab, sizeof vocab, "%s", test_data_path(cJSON_GetObjectItem(load, "vocab")->valuestring));
        const char *merges = test_data_path(cJSON_GetObjectItem(load, "merges")->valuestring);
        const char *style = cJSON_GetObjectItem(load, "style")->valuestring;
        s = tm_tokenizer_load_vocab_merges(&tok, vocab, merges,
                                           !strcmp(style, "clip") ? TM_BPE_CLIP : TM_BPE_GPT2);
    }
    CHECK_OK(s);
    return tok;
}

/* Encodes, compares with the expected ids, and checks the round trip. */
static int check_case(tm_tokenizer *tok, const unsigned char *in, size_t n, const cJSON *ids,
                      int parse_special, int roundtrip, const char *set, int idx)
{
    tm_tokenizer_encode_params p = tm_tokenizer_encode_default_params();
    p.parse_special = parse_special;
    tm_text_encoding *e = NULL;
    CHECK_OK(tm_tokenizer_encode(tok, in, n, &p, &e));
    if (!e) return 0;
    int ok = e->length == cJSON_GetArraySize(ids) && e->n_tokens == e->length && e->n_truncated == 0;
    int k = 0;
    for (const cJSON *v = ids ? ids->child : NULL; ok && v; v = v->next, k++)
        ok = e->ids[k] == v->valueint && e->attention_mask[k] == 1;
    test_checks++;
    if (!ok) {
        test_failures++;
        fprintf(stderr, "%s case %d: ids differ (got %d ids:", set, idx, e->length);
        for (int i = 0; i < e->length && i < 40; i++) fprintf(stderr, " %d", e->ids[i]);
        fprintf(stderr, "; want");
        int c = 0;
        for (const cJSON *v = ids->child; v && c < 40; v = v->next, c++) fprintf(stderr, " %d", v->valueint);
        fprintf(stderr, ")\n");
    }
    if (roundtrip) {
        char *text = NULL;
        size_t len = 0;
        CHECK_OK(tm_tokenizer_decode(tok, e->ids, e->length, 0, &text, &len));
        CHECK(text && len == n && !memcmp(text, in, n));
        tm_free(text);
    }
    tm_text_encoding_free(e);
    return ok;
}

static void test_vectors(void)
{
    char *buf = read_all(test_data_path("text/vectors.json"), NULL);
    CHECK(buf != NULL);
    if (!buf) return;
    cJSON *root = cJSON_Parse(buf);
    free(buf);
    CHECK(root != NULL);
    int sets = 0, cases = 0;
    unsigned char *in = malloc(1 << 16);
    for (const cJSON *set = cJSON_GetObjectItem(root, "sets")->child; set; set = set->next) {
        const char *name = cJSON_GetObjectItem(set, "name")->valuestring;
        tm_tokenizer *tok = load_set(cJSON_GetObjectItem(set, "load"));
        if (!tok) continue;
        int parse = cJSON_IsTrue(cJSON_GetObjectItem(set, "parse_special"));
        int rt = !strncmp(name, "trained", 7) || !strncmp(name, "gpt2", 4);
        int i = 0;
        for (const cJSON *c = cJSON_GetObjectItem(set, "cases")->child; c; c = c->next, i++) {
            size_t n = unhex(cJSON_GetObjectItem(c, "hex")->valuestring, in);
            check_case(tok, in, n, cJSON_GetObjectItem(c, "ids"), parse, rt, name, i);
            cases++;
        }
        sets++;
        tm_tokenizer_free(tok);
    }
    free(in);
    CHECK(sets == 7 && cases > 400);
    cJSON_Delete(root);
}

static int same_tokenizer(const tm_tokenizer *a, const tm_tokenizer *b)
{
    char *ja = NULL, *jb = NULL;
    size_t na = 0, nb = 0;
    if (tm_tokenizer_to_json(a, &ja, &na) || tm_tokenizer_to_json(b, &jb, &nb)) return 0;
    int same = na == nb && !memcmp(ja, jb, na);
    tm_free(ja);
    tm_free(jb);
    return same;
}

static int progress_calls;
static void on_progress(void *ctx, const char *stage, int64_t done, int64_t total)
{
    (void)ctx, (void)stage, (void)done, (void)total;
    progress_calls++;
}

/* Training in C gives the reference's vocabulary and merges exactly. */
static void test_training(void)
{
    char corpus_path[1024];
    snprintf(corpus_path, sizeof corpus_path, "%s", test_data_path("text/corpus.txt"));
    const char *corpus = corpus_path;
    tm_tokenizer_train_params p = tm_tokenizer_train_default_params();
    p.vocab_size = 400;
    p.progress = on_progress;
    tm_tokenizer *t = NULL, *ref = NULL, *mem = NULL;
    CHECK_OK(tm_tokenizer_train_files(&t, &corpus, 1, &p));
    CHECK(progress_calls > 0);
    CHECK_OK(tm_tokenizer_load_json(&ref, test_data_path("text/trained_tokenizer.json")));
    if (!t || !ref) goto done;
    CHECK(tm_tokenizer_vocab_size(t) == 400);
    CHECK(tm_tokenizer_vocab_size(t) == tm_tokenizer_vocab_size(ref));
    CHECK(tm_tokenizer_merge_count(t) == tm_tokenizer_merge_count(ref));
    int same = 1;
    for (int32_t id = 0; id < tm_tokenizer_vocab_size(ref); id++) {
        const char *x = tm_tokenizer_token(t, id), *y = tm_tokenizer_token(ref, id);
        if (!x || !y || strcmp(x, y)) {
            if (same) fprintf(stderr, "token %d: '%s' vs reference '%s'\n", id, x ? x : "-", y ? y : "-");
            same = 0;
        }
    }
    CHECK(same);
    CHECK(same_tokenizer(t, ref));
    CHECK(tm_tokenizer_special_id(t, TM_SPECIAL_PAD) == 0);
    CHECK(tm_tokenizer_special_id(t, TM_SPECIAL_UNK) == 5);
    CHECK(tm_tokenizer_special_id(ref, TM_SPECIAL_MASK) == 4);
    /* the same text from memory: the same tokenizer */
    size_t n;
    char *text = read_all(corpus, &n);
    const char *texts[1] = {text};
    p.progress = NULL;
    CHECK_OK(tm_tokenizer_train_memory(&mem, texts, &n, 1, &p));
    CHECK(mem && same_tokenizer(t, mem));
    free(text);
    /* save and load back */
    char path[256]; /* ctest runs the 1- and 2-thread variants at once: one file each */
    snprintf(path, sizeof path, "/tmp/tm_test_tokenizer_%ld.json", (long)getpid());
    CHECK_OK(tm_tokenizer_save(t, path));
    tm_tokenizer *back = NULL;
    CHECK_OK(tm_tokenizer_load(&back, path));
    CHECK(back && same_tokenizer(t, back));
    tm_tokenizer_free(back);
    remove(path);
    /* bad parameters */
    tm_tokenizer *bad = NULL;
    p.vocab_size = 100;
    CHECK_STATUS(tm_tokenizer_train_files(&bad, &corpus, 1, &p), TM_ERR_INVALID);
    p = tm_tokenizer_train_default_params();
    p.special_tokens[TM_SPECIAL_CLS] = "a";
    CHECK_STATUS(tm_tokenizer_train_files(&bad, &corpus, 1, &p), TM_ERR_INVALID);
    p = tm_tokenizer_train_default_params();
    const char *missing = "no/such/file.txt";
    CHECK_STATUS(tm_tokenizer_train_files(&bad, &missing, 1, &p), TM_ERR_IO);
    CHECK(strstr(tm_last_error(), "no/such/file.txt") != NULL);
    CHECK(bad == NULL);
done:
    tm_tokenizer_free(t);
    tm_tokenizer_free(ref);
    tm_tokenizer_free(mem);
}

static uint64_t rng_state = 0x1234567;
static uint32_t next_u32(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng_state >> 33);
}

/* decode(encode(s)) == s for random byte strings of several kinds. */
static void test_roundtrip(tm_tokenizer *tok, const char *name)
{
    unsigned char buf[512];
    static const char *pieces[] = {" ", "  ", "\n", "\t", "the", " cat", "'s", "é", "日本", "🎉",
                                   "\xff", "\x80", "\xe2\x82", "\x00", "123", "!?", "\r\n", "\xc2\xa0"};
    int bad = 0;
    for (int it = 0; it < 600; it++) {
        size_t n = 0;
        int kind = it % 3;
        size_t want = next_u32() % 200;
        while (n < want) {
            if (kind == 0) buf[n++] = (unsigned char)next_u32();
            else if (kind == 1) buf[n++] = (unsigned char)(" \n\ta.\x80\xc3\xa9"[next_u32() % 9]);
            else {
                const char *p = pieces[next_u32() % (sizeof pieces / sizeof *pieces)];
                size_t l = p[0] ? strlen(p) : 1;
                if (n + l > sizeof buf) break;
                memcpy(buf + n, p, l);
                n += l;
            }
        }
        tm_text_encoding *e = NULL;
        if (tm_tokenizer_encode(tok, buf, n, NULL, &e) != TM_OK) {
            bad++;
            continue;
        }
        char *out = NULL;
        size_t len = 0;
        if (tm_tokenizer_decode(tok, e->ids, e->length, 0, &out, &len) != TM_OK || len != n ||
            memcmp(out, buf, n))
            bad++;
        tm_free(out);
        tm_text_encoding_free(e);
    }
    test_checks++;
    if (bad) {
        test_failures++;
        fprintf(stderr, "%s: %d random strings did not round-trip\n", name, bad);
    }
}

static void test_specials(tm_tokenizer *tok)
{
    int32_t pad = tm_tokenizer_special_id(tok, TM_SPECIAL_PAD), bos = tm_tokenizer_special_id(tok, TM_SPECIAL_BOS),
            eos = tm_tokenizer_special_id(tok, TM_SPECIAL_EOS);
    CHECK(pad == 0 && bos == 1 && eos == 2);
    CHECK(tm_tokenizer_is_special(tok, bos) && !tm_tokenizer_is_special(tok, 100));
    CHECK(!strcmp(tm_special_role_name(TM_SPECIAL_MASK), "mask"));
    const char *text = "The quick dog walked to the river.";
    tm_tokenizer_encode_params p = tm_tokenizer_encode_default_params();
    tm_text_encoding *plain = NULL, *e = NULL;
    CHECK_OK(tm_tokenizer_encode(tok, text, strlen(text), &p, &plain));
    if (!plain) return;
    int32_t n = plain->length;
    CHECK(n > 5);
    /* bos + eos */
    p.add_bos = p.add_eos = 1;
    CHECK_OK(tm_tokenizer_encode(tok, text, strlen(text), &p, &e));
    CHECK(e && e->length == n + 2 && e->ids[0] == bos && e->ids[n + 1] == eos && e->n_tokens == n + 2);
    CHECK(e && !memcmp(e->ids + 1, plain->ids, (size_t)n * 4));
    char *out = NULL;
    size_t len;
    CHECK_OK(tm_tokenizer_decode(tok, e->ids, e->length, 1, &out, &len));
    CHECK(out && len == strlen(text) && !strcmp(out, text));
    tm_free(out);
    CHECK_OK(tm_tokenizer_decode(tok, e->ids, e->length, 0, &out, &len));
    CHECK(out && !strncmp(out, "<s>The", 6) && strstr(out, ".</s>"));
    tm_free(out);
    tm_text_encoding_free(e);
    /* padding */
    p.max_length = n + 6;
    p.pad_to_max_length = 1;
    CHECK_OK(tm_tokenizer_encode(tok, text, strlen(text), &p, &e));
    CHECK(e && e->length == n + 6 && e->n_tokens == n + 2 && e->n_truncated == 0);
    for (int i = 0; e && i < e->length; i++) {
        CHECK(e->attention_mask[i] == (i < n + 2));
        if (i >= n + 2) CHECK(e->ids[i] == pad);
    }
    tm_text_encoding_free(e);
    /* truncation keeps bos and eos */
    p.max_length = 5;
    CHECK_OK(tm_tokenizer_encode(tok, text, strlen(text), &p, &e));
    CHECK(e && e->length == 5 && e->ids[0] == bos && e->ids[4] == eos && e->n_truncated == n - 3);
    CHECK(e && !memcmp(e->ids + 1, plain->ids, 3 * 4));
    tm_text_encoding_free(e);
    /* encode_into a row */
    int32_t ids[16], mask[16], got = 0;
    p.max_length = 16;
    CHECK_OK(tm_tokenizer_encode_into(tok, "hi", 2, &p, ids, mask, 16, &got));
    CHECK(got == 16 && ids[0] == bos && mask[0] == 1 && mask[15] == 0 && ids[15] == pad);
    CHECK_STATUS(tm_tokenizer_encode_into(tok, "hi", 2, &p, ids, mask, 8, &got), TM_ERR_INVALID);
    /* bad parameters */
    p.max_length = 1;
    CHECK_STATUS(tm_tokenizer_encode(tok, text, 3, &p, &e), TM_ERR_INVALID);
    CHECK(e == NULL);
    p = tm_tokenizer_encode_default_params();
    p.pad_to_max_length = 1;
    CHECK_STATUS(tm_tokenizer_encode(tok, text, 3, &p, &e), TM_ERR_INVALID);
    p = tm_tokenizer_encode_default_params();
    p.max_text_bytes = 10;
    CHECK_STATUS(tm_tokenizer_encode(tok, text, strlen(text), &p, &e), TM_ERR_LIMIT);
    CHECK(strstr(tm_last_error(), "max_text_bytes") != NULL);
    CHECK_STATUS(tm_tokenizer_encode(tok, NULL, 3, NULL, &e), TM_ERR_INVALID);
    CHECK_OK(tm_tokenizer_encode(tok, NULL, 0, NULL, &e));
    CHECK(e && e->length == 0);
    tm_text_encoding_free(e);
    int32_t badid = 999999;
    CHECK_STATUS(tm_tokenizer_decode(tok, &badid, 1, 0, &out, &len), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "position 0") != NULL);
    /* special strings in text: ordinary text unless parse_special */
    const char *sp = "a<mask>b";
    p = tm_tokenizer_encode_default_params();
    CHECK_OK(tm_tokenizer_encode(tok, sp, strlen(sp), &p, &e));
    int has_mask = 0;
    for (int i = 0; e && i < e->length; i++) has_mask |= e->ids[i] == 4;
    CHECK(e && !has_mask);
    tm_text_encoding_free(e);
    p.parse_special = 1;
    CHECK_OK(tm_tokenizer_encode(tok, sp, strlen(sp), &p, &e));
    CHECK(e && e->length == 3 && e->ids[1] == 4);
    tm_text_encoding_free(e);
    tm_text_encoding_free(plain);
    /* queries */
    CHECK(tm_tokenizer_token_id(tok, "<mask>") == 4);
    CHECK(tm_tokenizer_token(tok, -1) == NULL && tm_tokenizer_token(tok, 1 << 20) == NULL);
    size_t bl = 0;
    int32_t sp_id = tm_tokenizer_token_id(tok, "\xc4\xa0"); /* the space byte's token */
    const char *b = tm_tokenizer_token_bytes(tok, sp_id, &bl);
    CHECK(b && bl == 1 && b[0] == ' ');
    CHECK(tm_tokenizer_style(tok) == TM_BPE_GPT2);
}

static void test_set_special(void)
{
    tm_tokenizer *t = NULL;
    CHECK_OK(load_pair("gpt2", TM_BPE_AUTO, &t));
    if (!t) return;
    int32_t eot = tm_tokenizer_token_id(t, "<|endoftext|>");
    CHECK(tm_tokenizer_special_id(t, TM_SPECIAL_EOS) == eot && tm_tokenizer_special_id(t, TM_SPECIAL_BOS) == eot);
    CHECK(tm_tokenizer_special_id(t, TM_SPECIAL_PAD) == -1);
    int32_t n = tm_tokenizer_vocab_size(t);
    CHECK_OK(tm_tokenizer_set_special(t, TM_SPECIAL_PAD, "<|pad|>"));
    CHECK(tm_tokenizer_special_id(t, TM_SPECIAL_PAD) == n && tm_tokenizer_vocab_size(t) == n + 1);
    CHECK_OK(tm_tokenizer_set_special(t, TM_SPECIAL_MASK, "<|endoftext|>"));
    CHECK(tm_tokenizer_special_id(t, TM_SPECIAL_MASK) == eot);
    CHECK_STATUS(tm_tokenizer_set_special(t, TM_SPECIAL_CLS, "\xff"), TM_ERR_INVALID);
    CHECK_OK(tm_tokenizer_set_special(t, TM_SPECIAL_MASK, NULL));
    CHECK(tm_tokenizer_special_id(t, TM_SPECIAL_MASK) == -1);
    tm_tokenizer_encode_params p = tm_tokenizer_encode_default_params();
    p.max_length = 8;
    p.pad_to_max_length = 1;
    p.parse_special = 1;
    tm_text_encoding *e = NULL;
    CHECK_OK(tm_tokenizer_encode(t, "x<|pad|>", 8, &p, &e));
    CHECK(e && e->length == 8 && e->ids[1] == n && e->ids[7] == n && e->n_tokens == 2);
    char *out = NULL;
    size_t len = 0;
    CHECK_OK(tm_tokenizer_decode(t, e->ids, 2, 0, &out, &len));
    CHECK(out && len == 8 && !memcmp(out, "x<|pad|>", 8));
    tm_free(out);
    tm_text_encoding_free(e);
    /* saved and loaded: the roles and the added token survive */
    char *json = NULL;
    size_t jn;
    CHECK_OK(tm_tokenizer_to_json(t, &json, &jn));
    tm_tokenizer *back = NULL;
    CHECK_OK(tm_tokenizer_load_json_memory(&back, json, jn));
    CHECK(back && tm_tokenizer_special_id(back, TM_SPECIAL_PAD) == n);
    CHECK(back && same_tokenizer(t, back));
    tm_free(json);
    tm_tokenizer_free(back);
    tm_tokenizer_free(t);
}

static void test_clip(void)
{
    tm_tokenizer *t = NULL;
    CHECK_STATUS(tm_tokenizer_load(&t, test_data_path("text/clip_vocab.json")), TM_ERR_FORMAT);
    CHECK_OK(load_pair("clip", TM_BPE_AUTO, &t));
    if (!t) return;
    CHECK(tm_tokenizer_style(t) == TM_BPE_CLIP);
    int32_t sot = tm_tokenizer_token_id(t, "<|startoftext|>"), eot = tm_tokenizer_token_id(t, "<|endoftext|>");
    CHECK(tm_tokenizer_special_id(t, TM_SPECIAL_BOS) == sot && tm_tokenizer_special_id(t, TM_SPECIAL_EOS) == eot);
    CHECK(tm_tokenizer_special_id(t, TM_SPECIAL_PAD) == eot);
    tm_tokenizer_encode_params p = tm_tokenizer_encode_default_params();
    p.add_bos = p.add_eos = 1;
    p.max_length = 40;
    p.pad_to_max_length = 1;
    tm_text_encoding *e = NULL;
    const char *text = "  A   Quick\tDOG,  walked! ";
    CHECK_OK(tm_tokenizer_encode(t, text, strlen(text), &p, &e));
    CHECK(e && e->ids[0] == sot && e->length == 40 && e->ids[39] == eot);
    char *out = NULL;
    size_t len = 0;
    if (e) CHECK_OK(tm_tokenizer_decode(t, e->ids, e->length, 1, &out, &len));
    CHECK(out && !strcmp(out, "a quick dog , walked !"));
    tm_free(out);
    tm_text_encoding_free(e);
    /* saved as HF tokenizer.json (Split + ByteLevel, Lowercase, </w>) and loaded back */
    char *json = NULL;
    size_t jn;
    CHECK_OK(tm_tokenizer_to_json(t, &json, &jn));
    tm_tokenizer *back = NULL;
    CHECK_OK(tm_tokenizer_load_json_memory(&back, json, jn));
    CHECK(back && same_tokenizer(t, back) && tm_tokenizer_style(back) == TM_BPE_CLIP);
    if (back) {
        tm_text_encoding *a = NULL, *b = NULL;
        CHECK_OK(tm_tokenizer_encode(t, text, strlen(text), NULL, &a));
        CHECK_OK(tm_tokenizer_encode(back, text, strlen(text), NULL, &b));
        CHECK(a && b && a->length == b->length && !memcmp(a->ids, b->ids, (size_t)a->length * 4));
        tm_text_encoding_free(a);
        tm_text_encoding_free(b);
    }
    tm_free(json);
    tm_tokenizer_free(back);
    tm_tokenizer_free(t);
}

static tm_status load_str(const char *json, tm_tokenizer **t)
{
    *t = NULL;
    return tm_tokenizer_load_json_memory(t, json, strlen(json));
}

#define MODEL_BODY "\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\","
#define MODEL_HEAD "{" MODEL_BODY

static void test_errors(void)
{
    tm_tokenizer *t = NULL;
    CHECK_STATUS(load_str("not json at all", &t), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "not valid JSON") && strstr(tm_last_error(), "<memory>"));
    CHECK_STATUS(load_str("{\"model\":{}} trailing", &t), TM_ERR_FORMAT);
    CHECK_STATUS(load_str("[1,2,3]", &t), TM_ERR_FORMAT);
    CHECK_STATUS(load_str("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{}}}", &t), TM_ERR_UNSUPPORTED);
    CHECK(strstr(tm_last_error(), "WordPiece") != NULL);
    CHECK_STATUS(load_str("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", &t), TM_ERR_UNSUPPORTED);
    CHECK(strstr(tm_last_error(), "Unigram") != NULL);
    CHECK_STATUS(load_str("{\"model\":{\"vocab\":{}}}", &t), TM_ERR_UNSUPPORTED);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a c\"]}}", &t),
                 TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "'c'") && strstr(tm_last_error(), "not in the vocabulary"));
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}", &t), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "gives 'ab'") != NULL);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", &t), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "duplicate id 0") != NULL);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}}", &t), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "duplicate token") != NULL);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{\"a\":-1},\"merges\":[]}}", &t), TM_ERR_FORMAT);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{\"a\":1.5},\"merges\":[]}}", &t), TM_ERR_FORMAT);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{\"a\":\"x\"},\"merges\":[]}}", &t), TM_ERR_FORMAT);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{\"a\":1e12},\"merges\":[]}}", &t), TM_ERR_LIMIT);
    CHECK(strstr(tm_last_error(), "limit") != NULL);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":[],\"merges\":[]}}", &t), TM_ERR_FORMAT);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{\"a\":0},\"merges\":[\"a\"]}}", &t), TM_ERR_FORMAT);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{\"a\":0},\"merges\":[3]}}", &t), TM_ERR_FORMAT);
    CHECK_STATUS(load_str(MODEL_HEAD "\"vocab\":{},\"merges\":[]}}", &t), TM_ERR_FORMAT);
    CHECK_STATUS(load_str("{\"added_tokens\":[{\"id\":5,\"content\":\"a\"}]," MODEL_BODY
                          "\"vocab\":{\"a\":0},\"merges\":[]}}", &t), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "added token 'a'") != NULL);
    CHECK_STATUS(load_str(MODEL_HEAD "\"byte_fallback\":true,\"vocab\":{\"a\":0},\"merges\":[]}}", &t),
                 TM_ERR_UNSUPPORTED);
    CHECK_STATUS(load_str(MODEL_HEAD "\"dropout\":0.1,\"vocab\":{\"a\":0},\"merges\":[]}}", &t),
                 TM_ERR_UNSUPPORTED);
    CHECK_STATUS(load_str("{\"pre_tokenizer\":{\"type\":\"Metaspace\"},\"model\":{\"type\":\"BPE\","
                          "\"vocab\":{\"a\":0},\"merges\":[]}}", &t), TM_ERR_UNSUPPORTED);
    CHECK(strstr(tm_last_error(), "Metaspace") != NULL);
    CHECK_STATUS(load_str("{\"normalizer\":{\"type\":\"NFKC\"}," MODEL_BODY
                          "\"vocab\":{\"a\":0},\"merges\":[]}}", &t), TM_ERR_UNSUPPORTED);
    CHECK_STATUS(load_str("{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                          "\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\",\"invert\":false},"
                          "{\"type\":\"ByteLevel\",\"use_regex\":false}]},\"model\":{\"type\":\"BPE\","
                          "\"vocab\":{\"a\":0},\"merges\":[]}}", &t), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "regex") != NULL);
    /* deep nesting and its limit */
    char deep[400];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    deep[200] = 0;
    CHECK_STATUS(load_str(deep, &t), TM_ERR_LIMIT);
    CHECK(strstr(tm_last_error(), "nested") != NULL);
    CHECK(t == NULL);
    /* a token over the size limit */
    size_t big = TM_TOKENIZER_MAX_TOKEN_BYTES + 100;
    char *js = malloc(big + 200);
    int k = sprintf(js, MODEL_HEAD "\"vocab\":{\"");
    memset(js + k, 'x', big);
    sprintf(js + k + big, "\":0},\"merges\":[]}}");
    CHECK_STATUS(load_str(js, &t), TM_ERR_LIMIT);
    free(js);
    /* files */
    CHECK_STATUS(tm_tokenizer_load_json(&t, "no/such/tokenizer.json"), TM_ERR_IO);
    CHECK(strstr(tm_last_error(), "no/such/tokenizer.json") != NULL);
    CHECK_STATUS(tm_tokenizer_load(&t, "no/such/dir"), TM_ERR_IO);
    /* merges.txt */
    const char *vocab = "{\"a\":0,\"b\":1,\"ab\":2}";
    const char *bad_merges[] = {"#version: 0.2\na b c\n", "a\n", "a  b\n", "a x\n", "b a\n", " a\n",
                                "a \xff\n"};
    for (size_t i = 0; i < sizeof bad_merges / sizeof *bad_merges; i++) {
        CHECK_STATUS(tm_tokenizer_load_vocab_merges_memory(&t, vocab, strlen(vocab), bad_merges[i],
                                                           strlen(bad_merges[i]), TM_BPE_GPT2),
                     TM_ERR_FORMAT);
        CHECK(strstr(tm_last_error(), "line") != NULL);
    }
    CHECK_OK(tm_tokenizer_load_vocab_merges_memory(&t, vocab, strlen(vocab), "#version: 0.2\r\na b\r\n\n",
                                                   21, TM_BPE_GPT2));
    CHECK(t && tm_tokenizer_merge_count(t) == 1);
    if (t) {
        /* no byte tokens for most bytes and no unk: those bytes are dropped (as HF does) */
        tm_text_encoding *e = NULL;
        CHECK_OK(tm_tokenizer_encode(t, "abzab", 5, NULL, &e));
        CHECK(e && e->length == 2 && e->ids[0] == 2 && e->ids[1] == 2);
        tm_text_encoding_free(e);
    }
    tm_tokenizer_free(t);
    CHECK_STATUS(tm_tokenizer_load_vocab_merges_memory(&t, "{\"a\":", 5, "", 0, TM_BPE_GPT2), TM_ERR_FORMAT);
    CHECK_STATUS(tm_tokenizer_load_vocab_merges_memory(&t, vocab, strlen(vocab), "", 0, (tm_bpe_style)7),
                 TM_ERR_INVALID);
    tm_tokenizer_free(NULL);
    tm_text_encoding_free(NULL);
}

/* Words far longer than usual go through the heap merge: fast, and the
 * same as the short-word loop on every length. */
static void test_long_words(tm_tokenizer *tok)
{
    size_t n = 1 << 20;
    char *s = malloc(n);
    for (size_t i = 0; i < n; i++) s[i] = "ab"[i & 1];
    double t0 = tm_time_s();
    tm_text_encoding *e = NULL;
    CHECK_OK(tm_tokenizer_encode(tok, s, n, NULL, &e));
    double dt = tm_time_s() - t0;
    CHECK(dt < 2.0);
    char *out = NULL;
    size_t len = 0;
    if (e) CHECK_OK(tm_tokenizer_decode(tok, e->ids, e->length, 0, &out, &len));
    CHECK(out && len == n && !memcmp(out, s, n));
    tm_free(out);
    tm_text_encoding_free(e);
    /* every length from 1 to 120 of a mixed word: encoding it alone equals
     * encoding it inside a longer text that cuts it at the same places */
    for (size_t i = 0; i < n; i++) s[i] = "thequickbrowns"[(i * 7) % 14];
    int same = 1;
    for (size_t l = 1; l <= 120; l++) {
        tm_text_encoding *a = NULL;
        if (tm_tokenizer_encode(tok, s, l, NULL, &a) != TM_OK) {
            same = 0;
            break;
        }
        char *o = NULL;
        size_t ol = 0;
        tm_tokenizer_decode(tok, a->ids, a->length, 0, &o, &ol);
        same &= ol == l && !memcmp(o, s, l);
        tm_free(o);
        tm_text_encoding_free(a);
    }
    CHECK(same);
    free(s);
}

typedef struct {
    const tm_tokenizer *tok;
    int32_t *lens;
    int fails;
} par_ctx;

static void par_task(void *ctx, int64_t i, int64_t n)
{
    (void)n;
    par_ctx *c = ctx;
    char text[200];
    int len = snprintf(text, sizeof text, "Example %lld: the quick dog %lld walked to the river %lld times.",
                       (long long)i, (long long)(i * 7), (long long)(i % 13));
    for (int rep = 0; rep < 20; rep++) {
        tm_text_encoding *e = NULL;
        if (tm_tokenizer_encode(c->tok, text, (size_t)len, NULL, &e) != TM_OK) {
            c->fails++;
            return;
        }
        if (rep == 0) c->lens[i] = e->length;
        else if (c->lens[i] != e->length) c->fails++;
        tm_text_encoding_free(e);
    }
}

/* Encoding from the pool's threads at once gives the serial result. */
static void test_threads(const tm_tokenizer *tok)
{
    int32_t serial[64], par[64];
    par_ctx c = {tok, serial, 0};
    for (int64_t i = 0; i < 64; i++) par_task(&c, i, 64);
    c.lens = par;
    tm_parallel_for(64, par_task, &c);
    CHECK(c.fails == 0 && !memcmp(serial, par, sizeof serial));
}

int main(void)
{
    test_vectors();
    test_training();
    tm_tokenizer *tok = NULL;
    CHECK_OK(tm_tokenizer_load_json(&tok, test_data_path("text/trained_tokenizer.json")));
    if (tok) {
        test_roundtrip(tok, "trained");
        test_specials(tok);
        test_long_words(tok);
        test_threads(tok);
    }
    tm_tokenizer_free(tok);
    tok = NULL;
    CHECK_OK(load_pair("gpt2", TM_BPE_GPT2, &tok));
    if (tok) test_roundtrip(tok, "gpt2");
    tm_tokenizer_free(tok);
    test_set_special();
    test_clip();
    test_errors();
    return test_finish("text_tokenizer");
}
