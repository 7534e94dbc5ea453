/* Every limit that protects memory, checked at its boundary (issue 9,
 * docs/limits.md): exactly the limit passes, one more fails with
 * TM_ERR_LIMIT and a message that names the limit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve/serve_internal.h"
#include "testutil.h"
#include "trimodal/audio.h"
#include "trimodal/data.h"
#include "trimodal/graph.h"
#include "trimodal/model.h"
#include "trimodal/io.h"
#include "trimodal/serve.h"
#include "trimodal/text.h"
#include "trimodal/train.h"
#include "trimodal/vision.h"

/* The last error mentions `word` (the limit's name or the word "limit"). */
static void check_message(const char *what, const char *word)
{
    test_checks++;
    if (!strstr(tm_last_error(), word)) {
        test_failures++;
        fprintf(stderr, "%s: message \"%s\" does not mention \"%s\"\n", what, tm_last_error(),
                word);
    }
}

static char *slurp(const char *rel, size_t *n)
{
    char *d = NULL;
    if (tm_read_file(test_data_path(rel), (size_t)1 << 24, &d, n)) {
        fprintf(stderr, "cannot read %s: %s\n", rel, tm_last_error());
        exit(1);
    }
    return d;
}

/* ------------------------------------------------------------- images */

static void test_image(void)
{
    size_t n;
    char *png = slurp("serve/image_a.png", &n);
    tm_image *img = NULL;
    tm_image_decode_params p = tm_image_decode_default_params();
    CHECK_OK(tm_image_decode(&img, png, n, p));
    size_t px = img ? (size_t)img->width * (size_t)img->height : 0;
    tm_image_free(img);
    img = NULL;

    p.limits.max_pixels = px;
    CHECK_OK(tm_image_decode(&img, png, n, p));
    tm_image_free(img);
    img = NULL;
    p.limits.max_pixels = px - 1;
    CHECK_STATUS(tm_image_decode(&img, png, n, p), TM_ERR_LIMIT);
    check_message("image max_pixels", "limit");
    CHECK(img == NULL);

    p = tm_image_decode_default_params();
    p.limits.max_bytes = n;
    CHECK_OK(tm_image_decode(&img, png, n, p));
    tm_image_free(img);
    img = NULL;
    p.limits.max_bytes = n - 1;
    CHECK_STATUS(tm_image_decode(&img, png, n, p), TM_ERR_LIMIT);
    check_message("image max_bytes", "limit");
    tm_image_limits d = tm_image_default_limits();
    CHECK(d.max_pixels == TM_IMAGE_DEFAULT_MAX_PIXELS && d.max_bytes == TM_IMAGE_DEFAULT_MAX_BYTES);
    tm_free(png);
}

/* -------------------------------------------------------------- audio */

static void test_audio(void)
{
    size_t n;
    char *wav = slurp("audio/pcm24_stereo_44k.wav", &n);
    tm_audio_load_params p = tm_audio_load_default_params();
    p.sample_rate = 0;
    tm_audio *a = NULL;
    CHECK_OK(tm_audio_load_memory(&a, wav, n, p));
    int64_t frames = a ? a->n_samples : 0;
    int rate = a ? a->sample_rate : 1;
    const int ch = a ? a->source_channels : 2;
    CHECK(ch == 2);
    tm_audio_free(a);
    a = NULL;

    p.max_seconds = (double)frames / rate;
    CHECK_OK(tm_audio_load_memory(&a, wav, n, p));
    tm_audio_free(a);
    a = NULL;
    p.max_seconds = (double)(frames - 1) / rate;
    CHECK_STATUS(tm_audio_load_memory(&a, wav, n, p), TM_ERR_LIMIT);
    check_message("audio max_seconds", "max_seconds");
    CHECK(a == NULL);

    p = tm_audio_load_default_params();
    p.sample_rate = 0;
    p.max_samples = frames * ch;
    CHECK_OK(tm_audio_load_memory(&a, wav, n, p));
    tm_audio_free(a);
    a = NULL;
    p.max_samples = frames * ch - 1;
    CHECK_STATUS(tm_audio_load_memory(&a, wav, n, p), TM_ERR_LIMIT);
    check_message("audio max_samples", "max_samples");

    p = tm_audio_load_default_params();
    p.sample_rate = 0;
    p.max_channels = ch;
    CHECK_OK(tm_audio_load_memory(&a, wav, n, p));
    tm_audio_free(a);
    a = NULL;
    p.max_channels = ch - 1;
    CHECK_STATUS(tm_audio_load_memory(&a, wav, n, p), TM_ERR_LIMIT);
    check_message("audio max_channels", "limit");
    tm_free(wav);
}

/* --------------------------------------------------------------- text */

static void test_text(void)
{
    size_t n;
    char *json = slurp("serve/model/tokenizer.json", &n);
    tm_tokenizer *t = NULL;
    CHECK_OK(tm_tokenizer_load_json_memory(&t, json, n));
    tm_free(json);
    if (!t) return;
    const char *text = "a red sneaker";
    size_t len = strlen(text);
    tm_tokenizer_encode_params p = tm_tokenizer_encode_default_params();
    CHECK(p.max_text_bytes == TM_TOKENIZER_DEFAULT_MAX_TEXT);
    tm_text_encoding *e = NULL;
    p.max_text_bytes = len;
    CHECK_OK(tm_tokenizer_encode(t, text, len, &p, &e));
    tm_text_encoding_free(e);
    e = NULL;
    p.max_text_bytes = len - 1;
    CHECK_STATUS(tm_tokenizer_encode(t, text, len, &p, &e), TM_ERR_LIMIT);
    check_message("text max_text_bytes", "max_text_bytes");
    CHECK(e == NULL);
    tm_tokenizer_free(t);

    /* JSON depth of tokenizer files: TM_TOKENIZER_MAX_JSON_DEPTH levels
     * (the outer object is level 1) load, one more does not */
    for (int extra = 0; extra < 2; extra++) {
        int depth = TM_TOKENIZER_MAX_JSON_DEPTH + extra;
        char doc[1024];
        size_t k = (size_t)snprintf(doc, sizeof doc,
                                    "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},"
                                    "\"merges\":[]},\"x\":");
        for (int i = 0; i < depth - 1; i++) doc[k++] = '[';
        for (int i = 0; i < depth - 1; i++) doc[k++] = ']';
        doc[k++] = '}';
        tm_tokenizer *d = NULL;
        tm_status st = tm_tokenizer_load_json_memory(&d, doc, k);
        if (extra) {
            CHECK(st == TM_ERR_LIMIT);
            check_message("tokenizer JSON depth", "deeper than");
        } else {
            CHECK(st != TM_ERR_LIMIT);
        }
        tm_tokenizer_free(d);
    }
}

/* ---------------------------------------------------------- manifests */

static void test_manifest(void)
{
    /* one line of exactly L bytes (newline not counted) */
    const size_t L = 200;
    char line[256];
    int k = snprintf(line, sizeof line, "{\"id\": \"a\", \"text\": \"");
    while ((size_t)k < L - 2) line[k++] = 'x';
    line[k++] = '"';
    line[k++] = '}';
    line[k++] = '\n';
    tm_manifest_params p = tm_manifest_default_params();
    CHECK(p.max_line_bytes == TM_MANIFEST_DEFAULT_MAX_LINE && p.max_rows == TM_MANIFEST_DEFAULT_MAX_ROWS &&
          p.max_bytes == TM_MANIFEST_DEFAULT_MAX_BYTES);
    p.dataset_json = "";
    tm_manifest *m = NULL;
    p.max_line_bytes = L;
    CHECK_OK(tm_manifest_parse(&m, line, (size_t)k, "m.jsonl", NULL, &p));
    tm_manifest_free(m);
    m = NULL;
    p.max_line_bytes = L - 1;
    CHECK_STATUS(tm_manifest_parse(&m, line, (size_t)k, "m.jsonl", NULL, &p), TM_ERR_LIMIT);
    check_message("manifest max_line_bytes", "max_line_bytes");
    CHECK(m == NULL);

    const char *rows = "{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3}\n";
    p = tm_manifest_default_params();
    p.dataset_json = "";
    p.max_rows = 3;
    CHECK_OK(tm_manifest_parse(&m, rows, strlen(rows), "m.jsonl", NULL, &p));
    tm_manifest_free(m);
    m = NULL;
    p.max_rows = 2;
    CHECK_STATUS(tm_manifest_parse(&m, rows, strlen(rows), "m.jsonl", NULL, &p), TM_ERR_LIMIT);
    check_message("manifest max_rows", "max_rows");

    p = tm_manifest_default_params();
    p.dataset_json = "";
    p.max_bytes = strlen(rows);
    CHECK_OK(tm_manifest_parse(&m, rows, strlen(rows), "m.jsonl", NULL, &p));
    tm_manifest_free(m);
    m = NULL;
    p.max_bytes = strlen(rows) - 1;
    CHECK_STATUS(tm_manifest_parse(&m, rows, strlen(rows), "m.jsonl", NULL, &p), TM_ERR_LIMIT);
    check_message("manifest max_bytes", "max_bytes");
}

/* ------------------------------------------------------- config sizes */

/* "{}" padded with spaces to n bytes. */
static char *padded_object(size_t n)
{
    char *s = malloc(n);
    memset(s, ' ', n);
    s[0] = '{';
    s[n - 1] = '}';
    return s;
}

static void test_config_sizes(void)
{
    const size_t pre = (size_t)1 << 20, run = (size_t)4 << 20;
    char *s = padded_object(pre + 1);
    tm_preprocess_config c = tm_preprocess_default_config();
    s[pre - 1] = '}';
    CHECK_OK(tm_preprocess_config_parse(&c, s, pre));
    s[pre - 1] = ' ';
    CHECK_STATUS(tm_preprocess_config_parse(&c, s, pre + 1), TM_ERR_LIMIT);
    check_message("preprocess.json size", "preprocess_json_bytes");
    free(s);

    /* a run config needs some keys: check only that the size check comes
     * first and that exactly the limit gets past it */
    s = padded_object(run + 1);
    tm_run_config *rc = NULL;
    s[run - 1] = '}';
    tm_status st = tm_run_config_parse(&rc, s, run, "run.json");
    CHECK(st != TM_ERR_LIMIT);
    tm_run_config_free(rc);
    rc = NULL;
    s[run - 1] = ' ';
    CHECK_STATUS(tm_run_config_parse(&rc, s, run + 1, "run.json"), TM_ERR_LIMIT);
    check_message("run config size", "run_config_bytes");
    CHECK(rc == NULL);
    free(s);
}

/* ------------------------------------------------------------- files */

static void test_read_file(void)
{
    char path[] = "/tmp/tm_limits_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK(write(fd, "0123456789", 10) == 10);
    close(fd);
    char *d = NULL;
    size_t n = 0;
    CHECK_OK(tm_read_file(path, 10, &d, &n));
    CHECK(n == 10);
    tm_free(d);
    d = NULL;
    CHECK_STATUS(tm_read_file(path, 9, &d, &n), TM_ERR_LIMIT);
    check_message("tm_read_file max_bytes", "limit");
    CHECK(d == NULL);
    unlink(path);
}

/* safetensors: the header length is checked against
 * TM_SAFETENSORS_MAX_HEADER before anything is read or allocated. */
static void test_safetensors(void)
{
    unsigned char buf[64] = {0};
    uint64_t over = (uint64_t)TM_SAFETENSORS_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(over >> (8 * i));
    char path[] = "/tmp/tm_limits_st_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK(write(fd, buf, sizeof buf) == (ssize_t)sizeof buf);
    /* long enough (sparse) that the header would fit: the limit decides */
    CHECK(ftruncate(fd, (off_t)(8 + over)) == 0);
    close(fd);
    tm_safetensors *st = NULL;
    CHECK_STATUS(tm_safetensors_open(&st, path), TM_ERR_LIMIT);
    check_message("safetensors header", "limit");
    CHECK(st == NULL);
    unlink(path);
}

/* ------------------------------------------------------------ serving */

static void test_session(void)
{
    size_t ni, na;
    char *png = slurp("serve/image_a.png", &ni);
    char *wav = slurp("serve/sound_a.wav", &na);
    tm_image *img = NULL;
    CHECK_OK(tm_image_decode(&img, png, ni, tm_image_decode_default_params()));
    size_t px = img ? (size_t)img->width * (size_t)img->height : 0;
    tm_image_free(img);
    tm_audio *a = NULL;
    tm_audio_load_params lp = tm_audio_load_default_params();
    lp.sample_rate = 0;
    CHECK_OK(tm_audio_load_memory(&a, wav, na, lp));
    double secs = a ? (double)a->n_samples / a->sample_rate : 0;
    tm_audio_free(a);

    tm_session_params sp = tm_session_default_params();
    CHECK(sp.max_image_pixels == TM_SESSION_DEFAULT_MAX_PIXELS &&
          sp.max_audio_seconds == TM_SESSION_DEFAULT_MAX_AUDIO_SECONDS);
    for (int over = 0; over < 2; over++) {
        sp.max_image_pixels = px - (size_t)over;
        sp.max_audio_seconds = over ? secs * 0.999 : secs;
        tm_session *s = NULL;
        CHECK_OK(tm_session_open(&s, test_data_path("serve/model"), &sp));
        if (!s) continue;
        tm_example *ex = NULL;
        tm_session_input in = {NULL, 0, png, ni, NULL, 0};
        tm_status st = tm_session_prepare(s, &in, &ex);
        tm_example_free(ex);
        ex = NULL;
        if (over) {
            CHECK(st == TM_ERR_LIMIT);
            check_message("session max_image_pixels", "limit");
        } else {
            CHECK_OK(st);
        }
        tm_session_input ia = {NULL, 0, NULL, 0, wav, na};
        st = tm_session_prepare(s, &ia, &ex);
        tm_example_free(ex);
        if (over) {
            CHECK(st == TM_ERR_LIMIT);
            check_message("session max_audio_seconds", "max_seconds");
        } else {
            CHECK_OK(st);
        }
        tm_session_free(s);
    }
    tm_free(png);
    tm_free(wav);
}

/* multipart/form-data: at most MP_MAX_PARTS parts. */
static void test_multipart(void)
{
    for (int extra = 0; extra < 2; extra++) {
        int count = MP_MAX_PARTS + extra;
        size_t cap = 64 * (size_t)count + 16, k = 0;
        char *body = malloc(cap);
        for (int i = 0; i < count; i++)
            k += (size_t)snprintf(body + k, cap - k,
                                  "--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nx\r\n",
                                  i);
        k += (size_t)snprintf(body + k, cap - k, "--b--\r\n");
        mp_part parts[MP_MAX_PARTS];
        int n = 0;
        tm_status st = mp_parse(body, k, "b", parts, MP_MAX_PARTS, &n);
        if (extra) {
            CHECK(st == TM_ERR_FORMAT);
            check_message("multipart parts", "more than");
        } else {
            CHECK_OK(st);
            CHECK(n == MP_MAX_PARTS);
        }
        free(body);
    }
}

/* ------------------------------------------- the table of limits (core.h) */

/* A file under /tmp holding n bytes; the path is written to path. */
static void temp_file(char *path, size_t cap, const char *name, const void *data, size_t n)
{
    snprintf(path, cap, "/tmp/tm_limits_%d_%s", (int)getpid(), name);
    CHECK_OK(tm_write_file_atomic(path, data, n));
}

/* Sets limit l to `at` (must pass) and to `at - 1` (must fail with want,
 * naming the limit and how to set it); run() does the call. */
#define BOUNDARY(l, at, want, call)                                                      \
    do {                                                                                 \
        CHECK_OK(tm_limit_set((l), (at)));                                               \
        CHECK_OK(call);                                                                  \
        CHECK_OK(tm_limit_set((l), (at) - 1));                                           \
        CHECK_STATUS(call, want);                                                        \
        check_message(tm_limit_name(l), tm_limit_name(l));                               \
        check_message(tm_limit_name(l), "TRIMODAL_LIMITS=");                             \
        tm_limits_reset();                                                               \
    } while (0)

static void test_table_api(void)
{
    /* the defaults are the headers' constants */
    CHECK(tm_limit_get(TM_LIMIT_AUDIO_MIN_RATE) == TM_AUDIO_MIN_RATE);
    CHECK(tm_limit_get(TM_LIMIT_AUDIO_MAX_RATE) == TM_AUDIO_MAX_RATE);
    CHECK(tm_limit_get(TM_LIMIT_TOKENIZER_FILE_BYTES) == (int64_t)TM_TOKENIZER_MAX_FILE_BYTES);
    CHECK(tm_limit_get(TM_LIMIT_TOKENIZER_JSON_DEPTH) == TM_TOKENIZER_MAX_JSON_DEPTH);
    CHECK(tm_limit_get(TM_LIMIT_TOKENIZER_VOCAB) == TM_TOKENIZER_MAX_VOCAB);
    CHECK(tm_limit_get(TM_LIMIT_TOKENIZER_TOKEN_BYTES) == TM_TOKENIZER_MAX_TOKEN_BYTES);
    CHECK(tm_limit_get(TM_LIMIT_MANIFEST_WORDS) == TM_MANIFEST_MAX_WORDS);
    CHECK(tm_limit_get(TM_LIMIT_DATASET_JSON_BYTES) == (int64_t)TM_DATASET_MAX_BYTES);
    CHECK(tm_limit_get(TM_LIMIT_DATASET_CLASSES) == TM_DATASET_MAX_CLASSES);
    CHECK(tm_limit_get(TM_LIMIT_MODEL_CONFIG_BYTES) == (int64_t)16 << 20);
    CHECK(tm_limit_get(TM_LIMIT_LABELS_JSON_BYTES) == (int64_t)16 << 20);
    CHECK(tm_limit_get(TM_LIMIT_TENSOR_ELEMENTS) == (int64_t)1 << 40);
    for (int i = 0; i < TM_LIMIT_COUNT; i++) {
        CHECK(tm_limit_from_name(tm_limit_name((tm_limit)i)) == i);
        CHECK(tm_limit_get((tm_limit)i) == tm_limit_default((tm_limit)i));
        int64_t lo, hi;
        tm_limit_range((tm_limit)i, &lo, &hi);
        CHECK(lo <= tm_limit_default((tm_limit)i) && tm_limit_default((tm_limit)i) <= hi);
        CHECK_OK(tm_limit_set((tm_limit)i, hi));
        CHECK_STATUS(tm_limit_set((tm_limit)i, hi + 1), TM_ERR_INVALID);
        check_message("set over the range", tm_limit_name((tm_limit)i));
        CHECK_OK(tm_limit_set((tm_limit)i, lo));
        CHECK_STATUS(tm_limit_set((tm_limit)i, lo - 1), TM_ERR_INVALID);
    }
    tm_limits_reset();
    CHECK(tm_limit_from_name("no_such_limit") == -1);
    check_message("unknown name", "tokenizer_file_bytes"); /* lists the names */
    CHECK(tm_limit_name(TM_LIMIT_COUNT) == NULL);
    CHECK_STATUS(tm_limit_set(TM_LIMIT_COUNT, 1), TM_ERR_INVALID);

    /* lists: suffixes, spaces, and nothing applied when one item is bad */
    CHECK_OK(tm_limits_parse(" tokenizer_file_bytes=2k , manifest_words=7,", "test"));
    CHECK(tm_limit_get(TM_LIMIT_TOKENIZER_FILE_BYTES) == 2048);
    CHECK(tm_limit_get(TM_LIMIT_MANIFEST_WORDS) == 7);
    CHECK_OK(tm_limits_parse("dataset_json_bytes=3m,model_config_bytes=1g", "test"));
    CHECK(tm_limit_get(TM_LIMIT_DATASET_JSON_BYTES) == (int64_t)3 << 20);
    CHECK(tm_limit_get(TM_LIMIT_MODEL_CONFIG_BYTES) == (int64_t)1 << 30);
    const char *bad[] = {"manifest_words=9,nope=1", "manifest_words=9,tokenizer_vocab=x",
                         "manifest_words=9,tokenizer_vocab", "manifest_words=9,tokenizer_vocab=-1",
                         "manifest_words=9,tokenizer_vocab=99999999999999999999",
                         "manifest_words=9,tokenizer_vocab=1t"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_STATUS(tm_limits_parse(bad[i], "--limits"), TM_ERR_INVALID);
        check_message(bad[i], "--limits");
        CHECK(tm_limit_get(TM_LIMIT_MANIFEST_WORDS) == 7);
    }
    tm_limits_reset();
    CHECK(tm_limit_get(TM_LIMIT_MANIFEST_WORDS) == TM_MANIFEST_MAX_WORDS);
    CHECK_OK(tm_limits_init()); /* TRIMODAL_LIMITS is unset in ctest */
}

static tm_status load_tokenizer_file(const char *path)
{
    tm_tokenizer *t = NULL;
    tm_status s = tm_tokenizer_load_json(&t, path);
    tm_tokenizer_free(t);
    return s;
}

static tm_status load_tokenizer_memory(const char *data, size_t n)
{
    tm_tokenizer *t = NULL;
    tm_status s = tm_tokenizer_load_json_memory(&t, data, n);
    tm_tokenizer_free(t);
    return s;
}

static void test_table_text(void)
{
    size_t n;
    char *json = slurp("serve/model/tokenizer.json", &n);
    char path[256];
    temp_file(path, sizeof path, "tokenizer.json", json, n);
    /* the file's size: tm_read_file's cap, and the parser's for memory */
    BOUNDARY(TM_LIMIT_TOKENIZER_FILE_BYTES, (int64_t)n, TM_ERR_LIMIT, load_tokenizer_file(path));
    BOUNDARY(TM_LIMIT_TOKENIZER_FILE_BYTES, (int64_t)n, TM_ERR_LIMIT,
             load_tokenizer_memory(json, n));
    unlink(path);

    /* the vocabulary: its size; the longest token (6 bytes: "<mask>") */
    tm_tokenizer *t = NULL;
    CHECK_OK(tm_tokenizer_load_json_memory(&t, json, n));
    int64_t v = t ? tm_tokenizer_vocab_size(t) : 0;
    tm_tokenizer_free(t);
    CHECK(v > 256);
    BOUNDARY(TM_LIMIT_TOKENIZER_VOCAB, v, TM_ERR_LIMIT, load_tokenizer_memory(json, n));
    BOUNDARY(TM_LIMIT_TOKENIZER_TOKEN_BYTES, 6, TM_ERR_LIMIT, load_tokenizer_memory(json, n));
    tm_free(json);

    /* nesting, at a lowered limit: the document has 4 levels; it gets past
     * the check at 4 (then fails for another reason), not at 3 */
    char doc[256];
    size_t k = (size_t)snprintf(doc, sizeof doc,
                                "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},"
                                "\"merges\":[]},\"x\":[[[]]]}");
    CHECK_OK(tm_limit_set(TM_LIMIT_TOKENIZER_JSON_DEPTH, 4));
    CHECK(load_tokenizer_memory(doc, k) != TM_ERR_LIMIT);
    CHECK_OK(tm_limit_set(TM_LIMIT_TOKENIZER_JSON_DEPTH, 3));
    CHECK_STATUS(load_tokenizer_memory(doc, k), TM_ERR_LIMIT);
    check_message("tokenizer_json_depth", "tokenizer_json_depth");
    tm_limits_reset();
}

static tm_status load_wav(const char *wav, size_t n)
{
    tm_audio_load_params p = tm_audio_load_default_params();
    p.sample_rate = 0;
    tm_audio *a = NULL;
    tm_status s = tm_audio_load_memory(&a, wav, n, p);
    tm_audio_free(a);
    return s;
}

static void test_table_audio(void)
{
    size_t n;
    char *wav = slurp("audio/pcm24_stereo_44k.wav", &n); /* 44100 Hz */
    BOUNDARY(TM_LIMIT_AUDIO_MAX_RATE, 44100, TM_ERR_UNSUPPORTED, load_wav(wav, n));
    /* the lowest rate: 44100 passes, 44101 does not */
    CHECK_OK(tm_limit_set(TM_LIMIT_AUDIO_MIN_RATE, 44100));
    CHECK_OK(load_wav(wav, n));
    CHECK_OK(tm_limit_set(TM_LIMIT_AUDIO_MIN_RATE, 44101));
    CHECK_STATUS(load_wav(wav, n), TM_ERR_UNSUPPORTED);
    check_message("audio_min_rate", "audio_min_rate");
    tm_limits_reset();
    tm_free(wav);
}

static tm_status parse_manifest(const char *text, const char *dataset_json)
{
    tm_manifest_params p = tm_manifest_default_params();
    p.dataset_json = dataset_json;
    tm_manifest *m = NULL;
    tm_status s = tm_manifest_parse(&m, text, strlen(text), "m.jsonl", NULL, &p);
    tm_manifest_free(m);
    return s;
}

static tm_status load_manifest(const char *path, const char *dataset_json)
{
    tm_manifest_params p = tm_manifest_default_params();
    p.dataset_json = dataset_json;
    tm_manifest *m = NULL;
    tm_status s = tm_manifest_load(&m, path, &p);
    tm_manifest_free(m);
    return s;
}

static void test_table_data(void)
{
    /* words of one row: 3 */
    const char *row = "{\"id\": \"a\", \"audio\": \"a.wav\", \"words\": [{\"w\": \"a\", \"start\": 0, "
                      "\"end\": 0.1}, {\"w\": \"b\", \"start\": 0.1, \"end\": 0.2}, {\"w\": \"c\", "
                      "\"start\": 0.2, \"end\": 0.3}]}\n";
    BOUNDARY(TM_LIMIT_MANIFEST_WORDS, 3, TM_ERR_LIMIT, parse_manifest(row, ""));

    /* dataset.json: its size, and its classes (3) */
    const char *ds = "{\"name\": \"t\", \"classes\": [\"x\", \"y\", \"z\"]}\n";
    char dpath[256], mpath[256];
    temp_file(dpath, sizeof dpath, "dataset.json", ds, strlen(ds));
    const char *rows = "{\"id\": \"a\", \"text\": \"t\", \"label\": \"z\"}\n";
    temp_file(mpath, sizeof mpath, "m.jsonl", rows, strlen(rows));
    BOUNDARY(TM_LIMIT_DATASET_JSON_BYTES, (int64_t)strlen(ds), TM_ERR_LIMIT,
             load_manifest(mpath, dpath));
    tm_manifest *m = NULL;
    tm_manifest_params p = tm_manifest_default_params();
    p.dataset_json = dpath;
    CHECK_OK(tm_limit_set(TM_LIMIT_DATASET_CLASSES, 3));
    CHECK_OK(tm_manifest_load(&m, mpath, &p));
    tm_manifest_free(m);
    m = NULL;
    CHECK_OK(tm_limit_set(TM_LIMIT_DATASET_CLASSES, 2));
    CHECK(tm_manifest_load(&m, mpath, &p) != TM_OK);
    check_message("dataset_classes", "dataset_classes");
    CHECK(m == NULL);
    tm_limits_reset();
    /* distinct label names without a dataset.json: 2 */
    const char *named = "{\"id\": \"a\", \"label\": \"p\"}\n{\"id\": \"b\", \"label\": \"q\"}\n";
    BOUNDARY(TM_LIMIT_DATASET_CLASSES, 2, TM_ERR_LIMIT, parse_manifest(named, ""));
    unlink(dpath);
    unlink(mpath);
}

/* preprocess.json and run configs: their sizes, in memory and from a file */
static tm_status preprocess_parse(const char *s)
{
    tm_preprocess_config c = tm_preprocess_default_config();
    return tm_preprocess_config_parse(&c, s, strlen(s));
}

static tm_status preprocess_load(const char *path)
{
    tm_preprocess_config c;
    return tm_preprocess_config_load(&c, path);
}

/* TM_ERR_LIMIT as it is, anything else (the padded object lacks keys) as
 * TM_OK: only the size check matters here. */
static tm_status run_config_size(const char *json, const char *path)
{
    tm_run_config *rc = NULL;
    tm_status s = path ? tm_run_config_load(&rc, path)
                       : tm_run_config_parse(&rc, json, strlen(json), "run.json");
    tm_run_config_free(rc);
    return s == TM_ERR_LIMIT ? s : TM_OK;
}

static void test_table_configs(void)
{
    const char *pre = "{\"text\": {}}   ";
    int64_t n = (int64_t)strlen(pre);
    BOUNDARY(TM_LIMIT_PREPROCESS_JSON_BYTES, n, TM_ERR_LIMIT, preprocess_parse(pre));
    char path[256];
    temp_file(path, sizeof path, "preprocess.json", pre, (size_t)n);
    BOUNDARY(TM_LIMIT_PREPROCESS_JSON_BYTES, n, TM_ERR_LIMIT, preprocess_load(path));
    unlink(path);
    CHECK(tm_limit_get(TM_LIMIT_PREPROCESS_JSON_BYTES) == (int64_t)1 << 20);

    const char *run = "{\"model\": \"m\"}";
    n = (int64_t)strlen(run);
    BOUNDARY(TM_LIMIT_RUN_CONFIG_BYTES, n, TM_ERR_LIMIT, run_config_size(run, NULL));
    temp_file(path, sizeof path, "run.json", run, (size_t)n);
    BOUNDARY(TM_LIMIT_RUN_CONFIG_BYTES, n, TM_ERR_LIMIT, run_config_size(NULL, path));
    unlink(path);
    CHECK(tm_limit_get(TM_LIMIT_RUN_CONFIG_BYTES) == (int64_t)4 << 20);
}

/* The loader's word spans per example (max_words) against manifest_words. */
static tm_status loader_words(const tm_manifest *m, int max_words)
{
    tm_loader_config c = tm_loader_default_config();
    c.batch_size = 1;
    c.text_tokens = 0; /* images only: no tokenizer needed */
    c.n_modalities = 1;
    c.modality[0] = TM_MODALITY_IMAGE;
    c.workers = 1;
    c.max_words = max_words;
    tm_loader *l = NULL;
    tm_status s = tm_loader_new(&l, m, &c);
    tm_loader_free(l);
    return s;
}

static void test_table_loader(void)
{
    const char *rows = "{\"id\": \"a\", \"text\": \"t\", \"label\": 0}\n";
    tm_manifest_params mp = tm_manifest_default_params();
    mp.dataset_json = "";
    tm_manifest *m = NULL;
    CHECK_OK(tm_manifest_parse(&m, rows, strlen(rows), "m.jsonl", NULL, &mp));
    if (!m) return;
    CHECK_OK(loader_words(m, 4096)); /* the default, TM_MANIFEST_MAX_WORDS */
    CHECK_STATUS(loader_words(m, 4097), TM_ERR_LIMIT);
    check_message("loader max_words", "manifest_words");
    CHECK_OK(tm_limit_set(TM_LIMIT_MANIFEST_WORDS, 8));
    CHECK_OK(loader_words(m, 8));
    CHECK_STATUS(loader_words(m, 9), TM_ERR_LIMIT);
    check_message("loader max_words", "TRIMODAL_LIMITS=manifest_words=N");
    CHECK_OK(tm_limit_set(TM_LIMIT_MANIFEST_WORDS, 5000));
    CHECK_OK(loader_words(m, 5000)); /* raised past the old constant */
    tm_limits_reset();
    tm_manifest_free(m);
}

/* Serving: a cascade file's bytes and the media files an index reads. */
static tm_status cascade_load(tm_session *s, const char *path)
{
    tm_cascade *c = NULL;
    tm_status st = tm_cascade_load(&c, s, path);
    tm_cascade_free(c);
    return st;
}

static tm_status index_build(tm_session *s, const char *manifest_path)
{
    tm_manifest_params mp = tm_manifest_default_params();
    mp.dataset_json = "";
    tm_manifest *m = NULL;
    tm_status st = tm_manifest_load(&m, manifest_path, &mp);
    if (st) return st;
    tm_index *idx = NULL;
    tm_index_build_params ip = tm_index_build_default_params();
    st = tm_index_build(&idx, s, m, &ip, NULL);
    tm_index_free(idx);
    tm_manifest_free(m);
    return st;
}

static void test_table_serve(void)
{
    char dir[1100];
    snprintf(dir, sizeof dir, "%s", test_data_path("serve/model"));
    tm_session *s = NULL;
    CHECK_OK(tm_session_open(&s, dir, NULL));
    if (!s) return;
    const char *cas = "{\"stages\": [{\"modalities\": [\"text\"], \"threshold\": 0}]}";
    char path[256], img[256], man[256];
    temp_file(path, sizeof path, "cascade.json", cas, strlen(cas));
    BOUNDARY(TM_LIMIT_CASCADE_JSON_BYTES, (int64_t)strlen(cas), TM_ERR_LIMIT,
             cascade_load(s, path));
    unlink(path);
    CHECK(tm_limit_get(TM_LIMIT_CASCADE_JSON_BYTES) == (int64_t)1 << 20);

    size_t n;
    char *png = slurp("serve/image_a.png", &n);
    temp_file(img, sizeof img, "image.png", png, n);
    tm_free(png);
    char rows[512];
    const char *base = strrchr(img, '/') + 1;
    snprintf(rows, sizeof rows, "{\"id\": \"a\", \"text\": \"a shoe\", \"image\": \"%s\"}\n",
             base);
    temp_file(man, sizeof man, "index.jsonl", rows, strlen(rows));
    BOUNDARY(TM_LIMIT_INDEX_MEDIA_BYTES, (int64_t)n, TM_ERR_LIMIT, index_build(s, man));
    CHECK(tm_limit_get(TM_LIMIT_INDEX_MEDIA_BYTES) == (int64_t)256 << 20);
    unlink(img);
    unlink(man);
    tm_session_free(s);
}

static tm_status model_from_config(const char *path)
{
    tm_model *m = NULL;
    tm_status s = tm_model_new_from_config(&m, path);
    tm_model_free(m);
    return s;
}

static tm_status session_open(const char *dir)
{
    tm_session *s = NULL;
    tm_status st = tm_session_open(&s, dir, NULL);
    tm_session_free(s);
    return st;
}

static tm_status graph_input(int64_t n)
{
    tm_graph *g = tm_graph_new();
    if (!g) return TM_ERR_NOMEM;
    tm_input(g, "x", TM_F32, 2, (int64_t[]){n / 4, 4});
    tm_status s = tm_graph_status(g);
    tm_graph_free(g);
    return s;
}

static void test_table_model(void)
{
    size_t n;
    char *cfg = slurp("serve/model/config.json", &n);
    tm_free(cfg);
    char path[1100];
    snprintf(path, sizeof path, "%s", test_data_path("serve/model/config.json"));
    BOUNDARY(TM_LIMIT_MODEL_CONFIG_BYTES, (int64_t)n, TM_ERR_LIMIT, model_from_config(path));

    char *labels = slurp("serve/model/labels.json", &n);
    tm_free(labels);
    char dir[1100];
    snprintf(dir, sizeof dir, "%s", test_data_path("serve/model"));
    BOUNDARY(TM_LIMIT_LABELS_JSON_BYTES, (int64_t)n, TM_ERR_LIMIT, session_open(dir));

    /* a node of exactly the limit (a multiple of 4) builds, one row more does not */
    CHECK_OK(tm_limit_set(TM_LIMIT_TENSOR_ELEMENTS, 4096));
    CHECK_OK(graph_input(4096));
    CHECK_STATUS(graph_input(4100), TM_ERR_LIMIT);
    check_message("tensor_elements", "tensor_elements");
    CHECK_OK(tm_limit_set(TM_LIMIT_TENSOR_ELEMENTS, 4095));
    CHECK_STATUS(graph_input(4096), TM_ERR_LIMIT);
    tm_limits_reset();
    /* the default: 2^40 elements are allowed (nothing is allocated at build) */
    CHECK_OK(graph_input((int64_t)1 << 40));
    CHECK_STATUS(graph_input(((int64_t)1 << 40) + 4), TM_ERR_LIMIT);
}

/* json_depth: the scanner at the boundary (brackets in strings do not
 * count), then each reader that checks it before parsing. Only the limit's
 * error matters to the readers' calls (limit_only). */
static tm_status limit_only(tm_status s) { return s == TM_ERR_LIMIT ? s : TM_OK; }

static tm_status json_model(const char *j)
{
    tm_model *m = NULL;
    tm_status s = tm_model_new_from_json(&m, j, strlen(j), "config.json");
    tm_model_free(m);
    return limit_only(s);
}

static tm_status json_manifest(const char *j)
{
    tm_manifest_params mp = tm_manifest_default_params();
    mp.dataset_json = "";
    tm_manifest *m = NULL;
    tm_status s = tm_manifest_parse(&m, j, strlen(j), "m.jsonl", NULL, &mp);
    tm_manifest_free(m);
    return limit_only(s);
}

static tm_status json_safetensors(const char *header)
{
    size_t hn = strlen(header);
    unsigned char *buf = calloc(1, 8 + hn);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(buf + 8, header, hn);
    tm_safetensors *st = NULL;
    tm_status s = tm_safetensors_open_memory(&st, buf, 8 + hn);
    tm_safetensors_close(st);
    free(buf);
    return limit_only(s);
}

static void test_table_json(void)
{
    CHECK(tm_limit_get(TM_LIMIT_JSON_DEPTH) == 1000);
    const char *flat = "{\"a\": [1, {\"b\": \"[[[{{{\\\"]]]\"}]}"; /* depth 3 */
    BOUNDARY(TM_LIMIT_JSON_DEPTH, 3, TM_ERR_LIMIT, tm_json_check_depth(flat, strlen(flat), "t"));
    char deep[2100];
    for (int i = 0; i < 1000; i++) deep[i] = '[', deep[1000 + i] = ']';
    deep[2000] = 0;
    CHECK_OK(tm_json_check_depth(deep, 2000, "deep")); /* the default, cJSON's own limit */
    CHECK_STATUS(tm_limit_set(TM_LIMIT_JSON_DEPTH, 1001), TM_ERR_INVALID);
    /* the readers */
    const char *cfg = "{\"dim\": 8, \"x\": [[1]]}"; /* depth 3 */
    BOUNDARY(TM_LIMIT_JSON_DEPTH, 3, TM_ERR_LIMIT, json_model(cfg));
    BOUNDARY(TM_LIMIT_JSON_DEPTH, 3, TM_ERR_LIMIT, run_config_size(cfg, NULL));
    BOUNDARY(TM_LIMIT_JSON_DEPTH, 3, TM_ERR_LIMIT, limit_only(preprocess_parse(cfg)));
    const char *rows = "{\"id\": \"a\", \"label\": 0}\n{\"id\": \"b\", \"x\": [[1]]}\n";
    BOUNDARY(TM_LIMIT_JSON_DEPTH, 3, TM_ERR_LIMIT, json_manifest(rows));
    CHECK_OK(tm_limit_set(TM_LIMIT_JSON_DEPTH, 2));
    json_manifest(rows);
    CHECK(strstr(tm_last_error(), "m.jsonl:2") != NULL); /* names the line */
    tm_limits_reset();
    BOUNDARY(TM_LIMIT_JSON_DEPTH, 3, TM_ERR_LIMIT, json_safetensors(cfg));
}

int main(void)
{
    test_image();
    test_audio();
    test_text();
    test_manifest();
    test_config_sizes();
    test_read_file();
    test_safetensors();
    test_session();
    test_multipart();
    test_table_api();
    test_table_text();
    test_table_audio();
    test_table_data();
    test_table_model();
    test_table_configs();
    test_table_loader();
    test_table_serve();
    test_table_json();
    return test_finish("limits");
}
