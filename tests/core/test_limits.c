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
    check_message("preprocess.json size", "at most");
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
    check_message("run config size", "at most");
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
    return test_finish("limits");
}
