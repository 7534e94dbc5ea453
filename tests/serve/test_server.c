/* The HTTP server on a loopback port, in process (so the sanitizers see
 * it): every endpoint against the PyTorch references of tests/data/serve/,
 * JSON and multipart bodies, then malformed JSON, bad base64, corrupt
 * media, oversize and truncated bodies, garbage, wrong methods and paths,
 * API keys, a full queue (503), timeouts (504), concurrent clients and a
 * graceful shutdown that finishes the requests in flight. After each bad
 * request the server must still answer. */
#define _GNU_SOURCE
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "http_client.h"
#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/serve.h"

#define NCASES 8
#define C 4
#define E 8

static char data_dir[1024], model_dir[1100];
static tm_safetensors *vec;
static tm_session *sess;
static tm_index *idx;

typedef struct {
    const char *text, *image, *audio; /* file names */
    char *img, *aud;                  /* bytes */
    size_t img_len, aud_len;
    char *json; /* {"text":..,"image":b64,"audio":b64} */
} tcase;
static tcase cases[NCASES];

static const float *vf(const char *what, int k)
{
    char name[64];
    snprintf(name, sizeof name, "%s.%d", what, k);
    tm_tensor t;
    if (tm_safetensors_get(vec, name, &t)) {
        fprintf(stderr, "missing %s\n", name);
        exit(1);
    }
    return t.data;
}

static char *read_all(const char *path, size_t *n)
{
    char *d = NULL;
    size_t len = 0;
    if (tm_read_file(path, (size_t)1 << 30, &d, &len)) {
        fprintf(stderr, "%s\n", tm_last_error());
        exit(1);
    }
    if (n) *n = len;
    return d;
}

static void load_cases(void)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/cases.json", data_dir);
    char *text = read_all(path, NULL);
    cJSON *root = cJSON_Parse(text);
    tm_free(text);
    int k = 0;
    for (cJSON *it = root ? root->child : NULL; it && k < NCASES; it = it->next, k++) {
        cJSON *t = cJSON_GetObjectItem(it, "text"), *im = cJSON_GetObjectItem(it, "image"),
              *au = cJSON_GetObjectItem(it, "audio");
        cJSON *req = cJSON_CreateObject();
        if (t) {
            cases[k].text = strdup(t->valuestring);
            cJSON_AddStringToObject(req, "text", t->valuestring);
        }
        if (im) {
            cases[k].image = strdup(im->valuestring);
            snprintf(path, sizeof path, "%s/%s", data_dir, im->valuestring);
            cases[k].img = read_all(path, &cases[k].img_len);
            char *b = hc_base64(cases[k].img, cases[k].img_len);
            cJSON_AddStringToObject(req, "image", b);
            free(b);
        }
        if (au) {
            cases[k].audio = strdup(au->valuestring);
            snprintf(path, sizeof path, "%s/%s", data_dir, au->valuestring);
            cases[k].aud = read_all(path, &cases[k].aud_len);
            char *b = hc_base64(cases[k].aud, cases[k].aud_len);
            cJSON_AddStringToObject(req, "audio", b);
            free(b);
        }
        cases[k].json = cJSON_PrintUnformatted(req);
        cJSON_Delete(req);
    }
    cJSON_Delete(root);
}

/* one request on a fresh connection */
static hc_response call(int port, const char *method, const char *path, const char *headers,
                        const char *body, size_t len)
{
    hc_response r;
    memset(&r, 0, sizeof r);
    int fd = hc_connect(port);
    if (fd < 0) return r;
    hc_request(fd, method, path, headers, body, len, &r, 20);
    close(fd);
    return r;
}

static hc_response post_json(int port, const char *path, const char *json)
{
    return call(port, "POST", path, "Content-Type: application/json\r\n", json, strlen(json));
}

/* the status, and for errors the error code, as expected */
static void expect(hc_response *r, int status, const char *code, const char *what)
{
    test_checks++;
    int ok = r->status == status;
    cJSON *j = r->body ? cJSON_Parse(r->body) : NULL;
    if (ok && code) {
        cJSON *e = cJSON_GetObjectItem(j, "error");
        cJSON *c = cJSON_GetObjectItem(e, "code"), *m = cJSON_GetObjectItem(e, "message");
        ok = cJSON_IsString(c) && !strcmp(c->valuestring, code) && cJSON_IsString(m) &&
             strlen(m->valuestring) > 5;
    }
    if (ok && status != 200 && !j) ok = 0; /* every error is JSON */
    if (!ok) {
        test_failures++;
        fprintf(stderr, "FAIL %s: status %d (want %d %s): %.300s\n", what, r->status, status,
                code ? code : "", r->body ? r->body : "(no body)");
    }
    cJSON_Delete(j);
}

static void alive(int port)
{
    hc_response r = call(port, "GET", "/healthz", NULL, NULL, 0);
    expect(&r, 200, NULL, "healthz after a bad request");
    hc_response_free(&r);
}

static int json_floats(const cJSON *arr, float *out, int n)
{
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != n) return 0;
    int i = 0;
    for (const cJSON *it = arr->child; it; it = it->next)
        out[i++] = (float)it->valuedouble;
    return 1;
}

/* ------------------------------------------------------------- endpoints */

static void test_endpoints(int port)
{
    hc_response r = call(port, "GET", "/healthz", NULL, NULL, 0);
    expect(&r, 200, NULL, "healthz");
    CHECK(r.body && strstr(r.body, "\"status\":\"ok\"") && strstr(r.body, "/v1/search"));
    hc_response_free(&r);
    for (int k = 0; k < NCASES; k++) {
        char what[64];
        r = post_json(port, "/v1/classify", cases[k].json);
        snprintf(what, sizeof what, "classify case %d", k);
        expect(&r, 200, NULL, what);
        cJSON *j = cJSON_Parse(r.body ? r.body : "");
        float p[C];
        CHECK(json_floats(cJSON_GetObjectItem(j, "probs"), p, C));
        check_close(what, p, vf("probs", k), C, 2e-5, 1e-4);
        int best = 0;
        for (int c = 1; c < C; c++)
            best = vf("probs", k)[c] > vf("probs", k)[best] ? c : best;
        static const char *const names[C] = {"sneaker", "boot", "sandal", "shirt"};
        cJSON *lb = cJSON_GetObjectItem(j, "label");
        CHECK(cJSON_IsString(lb) && !strcmp(lb->valuestring, names[best]));
        CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "top")) == C);
        cJSON_Delete(j);
        hc_response_free(&r);

        r = post_json(port, "/v1/embed", cases[k].json);
        snprintf(what, sizeof what, "embed case %d", k);
        expect(&r, 200, NULL, what);
        j = cJSON_Parse(r.body ? r.body : "");
        cJSON *em = cJSON_GetObjectItem(j, "embeddings");
        static const char *const mods[3] = {"text", "image", "audio"};
        const char *given[3] = {cases[k].text, cases[k].image, cases[k].audio};
        for (int m = 0; m < 3; m++) {
            cJSON *v = cJSON_GetObjectItem(em, mods[m]);
            CHECK((v != NULL) == (given[m] != NULL));
            float e[E];
            if (v && json_floats(v, e, E))
                check_close(what, e, vf("emb", k) + m * E, E, 2e-5, 1e-4);
        }
        cJSON_Delete(j);
        hc_response_free(&r);

        r = post_json(port, "/v1/caption", cases[k].json);
        snprintf(what, sizeof what, "caption case %d", k);
        expect(&r, 200, NULL, what);
        j = cJSON_Parse(r.body ? r.body : "");
        cJSON *ids = cJSON_GetObjectItem(j, "ids");
        int len = ((const int32_t *)vf("caption_len", k))[0], same = cJSON_GetArraySize(ids) == len;
        int i = 0;
        for (cJSON *it = ids ? ids->child : NULL; same && it; it = it->next, i++)
            same = it->valueint == ((const int32_t *)vf("caption", k))[i];
        CHECK(same);
        CHECK(cJSON_IsString(cJSON_GetObjectItem(j, "caption")));
        cJSON_Delete(j);
        hc_response_free(&r);
    }
    /* top_k */
    r = post_json(port, "/v1/classify", "{\"text\": \"a boot\", \"top_k\": 2}");
    expect(&r, 200, NULL, "classify top_k");
    cJSON *j = cJSON_Parse(r.body ? r.body : "");
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "top")) == 2);
    cJSON_Delete(j);
    hc_response_free(&r);
    /* search: the same hits as the index itself, for a text query */
    r = post_json(port, "/v1/search", "{\"text\": \"red boot\", \"k\": 3}");
    expect(&r, 200, NULL, "search");
    j = cJSON_Parse(r.body ? r.body : "");
    tm_example *ex = NULL;
    float emb[3 * E];
    tm_search_hit hits[3];
    int n = 0;
    tm_session_prepare(sess, &(tm_session_input){.text = "red boot", .text_len = 8}, &ex);
    tm_session_embed(sess, &ex, 1, emb);
    tm_example_free(ex);
    CHECK_OK(tm_index_search(idx, emb, TM_MODALITY_IMAGE | TM_MODALITY_AUDIO, 3, hits, &n));
    cJSON *res = cJSON_GetObjectItem(j, "results");
    CHECK(n == 3 && cJSON_GetArraySize(res) == 3);
    int i = 0;
    for (cJSON *it = res ? res->child : NULL; it && i < n; it = it->next, i++) {
        cJSON *id = cJSON_GetObjectItem(it, "id"), *sc = cJSON_GetObjectItem(it, "score"),
              *md = cJSON_GetObjectItem(it, "modality");
        CHECK(cJSON_IsString(id) &&
              !strcmp(id->valuestring, tm_index_item(idx, hits[i].item, "id")));
        CHECK(cJSON_IsNumber(sc) && fabs(sc->valuedouble - hits[i].score) < 1e-6);
        CHECK(cJSON_IsString(md) && strcmp(md->valuestring, "text"));
    }
    cJSON_Delete(j);
    hc_response_free(&r);
    /* an image query restricted to audio rows */
    char *b = hc_base64(cases[2].img, cases[2].img_len);
    char *q = malloc(strlen(b) + 100);
    sprintf(q, "{\"image\": \"%s\", \"modality\": \"audio\", \"k\": 2}", b);
    r = post_json(port, "/v1/search", q);
    expect(&r, 200, NULL, "search image->audio");
    CHECK(r.body && strstr(r.body, "\"modality\":\"audio\"") &&
          !strstr(r.body, "\"modality\":\"image\""));
    hc_response_free(&r);
    free(q);
    free(b);
    r = call(port, "GET", "/metrics", NULL, NULL, 0);
    expect(&r, 200, NULL, "metrics");
    CHECK(r.body &&
          strstr(r.body, "trimodal_requests_total{endpoint=\"/v1/classify\",code=\"200\"} 9\n"));
    if (r.body && !strstr(r.body, "code=\"200\"} 9\n")) fprintf(stderr, "%.600s\n", r.body);
    CHECK(r.body && strstr(r.body, "trimodal_batch_size_bucket{kind=\"classify\",le=\"1\"}"));
    CHECK(r.body && strstr(r.body, "trimodal_queue_depth 0"));
    CHECK(r.body && strstr(r.body, "# TYPE trimodal_request_duration_seconds histogram"));
    char ct[128];
    CHECK(hc_header(&r, "Content-Type", ct, sizeof ct) && strstr(ct, "text/plain"));
    hc_response_free(&r);
}

static char *multipart(const char *boundary, int k, size_t *len, int cut)
{
    size_t cap = 4096 + cases[k].img_len + cases[k].aud_len;
    char *b = malloc(cap);
    size_t n = 0;
    if (cases[k].text)
        n += (size_t)sprintf(b + n,
                             "--%s\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\n%s\r\n",
                             boundary, cases[k].text);
    if (cases[k].image) {
        n += (size_t)sprintf(b + n,
                             "--%s\r\nContent-Disposition: form-data; name=\"image\"; "
                             "filename=\"x.png\"\r\nContent-Type: image/png\r\n\r\n",
                             boundary);
        memcpy(b + n, cases[k].img, cases[k].img_len);
        n += cases[k].img_len;
        n += (size_t)sprintf(b + n, "\r\n");
    }
    if (cases[k].audio) {
        n += (size_t)sprintf(b + n,
                             "--%s\r\nContent-Disposition: form-data; name=\"audio\"; "
                             "filename=\"x.wav\"\r\n\r\n",
                             boundary);
        memcpy(b + n, cases[k].aud, cases[k].aud_len);
        n += cases[k].aud_len;
        n += (size_t)sprintf(b + n, "\r\n");
    }
    n += (size_t)sprintf(b + n, "--%s--\r\n", boundary);
    *len = cut ? n - (size_t)cut : n;
    return b;
}

static void test_multipart(int port)
{
    const char *hdr = "Content-Type: multipart/form-data; boundary=----tmBoundary42\r\n";
    for (int k = 0; k < NCASES; k++) {
        size_t n;
        char *b = multipart("----tmBoundary42", k, &n, 0);
        hc_response r = call(port, "POST", "/v1/classify", hdr, b, n);
        char what[64];
        snprintf(what, sizeof what, "multipart classify case %d", k);
        expect(&r, 200, NULL, what);
        cJSON *j = cJSON_Parse(r.body ? r.body : "");
        float p[C];
        CHECK(json_floats(cJSON_GetObjectItem(j, "probs"), p, C));
        check_close(what, p, vf("probs", k), C, 2e-5, 1e-4);
        cJSON_Delete(j);
        hc_response_free(&r);
        /* truncated: every cut point of the tail */
        for (int cut = 3; cut < 40; cut += 7) { /* cut 1 or 2 leaves a valid close */
            free(b);
            b = multipart("----tmBoundary42", k, &n, cut);
            r = call(port, "POST", "/v1/embed", hdr, b, n);
            CHECK(r.status == 400);
            if (r.status != 400)
                fprintf(stderr, "case %d cut %d: %d %.200s\n", k, cut, r.status,
                        r.body ? r.body : "");
            hc_response_free(&r);
        }
        free(b);
    }
    /* a quoted boundary; a part without a name; an unknown field */
    const char *noname = "--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B--\r\n";
    hc_response r =
        call(port, "POST", "/v1/classify", "Content-Type: multipart/form-data; boundary=\"B\"\r\n",
             noname, strlen(noname));
    expect(&r, 400, "invalid_multipart", "multipart part without a name");
    hc_response_free(&r);
    const char *unknown =
        "--B\r\nContent-Disposition: form-data; name=\"picture\"\r\n\r\nx\r\n--B--\r\n";
    r = call(port, "POST", "/v1/classify", "Content-Type: multipart/form-data; boundary=B\r\n",
             unknown, strlen(unknown));
    expect(&r, 400, "invalid_request", "multipart unknown field");
    hc_response_free(&r);
    r = call(port, "POST", "/v1/classify", "Content-Type: multipart/form-data\r\n", "x", 1);
    expect(&r, 400, "invalid_multipart", "multipart without boundary");
    hc_response_free(&r);
    const char *top =
        "--B\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nboot\r\n"
        "--B\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\nzero\r\n--B--\r\n";
    r = call(port, "POST", "/v1/classify", "Content-Type: multipart/form-data; boundary=B\r\n", top,
             strlen(top));
    expect(&r, 400, "invalid_request", "multipart bad top_k");
    hc_response_free(&r);
    alive(port);
}

/* ------------------------------------------------------------ bad input */

static void test_bad_requests(int port)
{
    static const struct {
        const char *path, *body;
        int status;
        const char *code;
    } bad[] = {
        {"/v1/classify", "{\"text\": ", 400, "invalid_json"},
        {"/v1/classify", "", 400, "invalid_json"},
        {"/v1/classify", "[1, 2]", 400, "invalid_request"},
        {"/v1/classify", "\"text\"", 400, "invalid_request"},
        {"/v1/classify", "{}", 400, "invalid_input"},
        {"/v1/classify", "{\"text\": 5}", 400, "invalid_request"},
        {"/v1/classify", "{\"image\": 5}", 400, "invalid_request"},
        {"/v1/classify", "{\"imgae\": \"AAAA\"}", 400, "invalid_request"},
        {"/v1/classify", "{\"image\": \"@@@@\"}", 400, "invalid_base64"},
        {"/v1/classify", "{\"image\": \"A\"}", 400, "invalid_base64"},
        {"/v1/classify", "{\"image\": \"\"}", 400, "invalid_base64"},
        {"/v1/classify", "{\"audio\": \"data:audio/wav,AAAA\"}", 400, "invalid_base64"},
        {"/v1/classify", "{\"image\": \"R0lGODlhAQABAIAAAP///wAAACwAAAAAAQABAAACAkQBADs\"}", 200,
         NULL},
        {"/v1/classify", "{\"image\": \"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAA\"}", 400,
         "invalid_media"},
        {"/v1/classify", "{\"image\": \"aGVsbG8gd29ybGQ=\"}", 400, "unsupported_input"},
        {"/v1/classify",
         "{\"audio\": \"UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQAAAAA=\"}", 400,
         "invalid_input"},
        {"/v1/classify", "{\"audio\": \"UklGRiQAAABXQVZF\"}", 400, NULL},
        {"/v1/classify", "{\"text\": \"\"}", 400, "invalid_input"},
        {"/v1/classify", "{\"text\": \"a\", \"top_k\": 0}", 400, "invalid_request"},
        {"/v1/classify", "{\"text\": \"a\", \"top_k\": 1.5}", 400, "invalid_request"},
        {"/v1/search", "{\"text\": \"a\", \"k\": 100000}", 400, "invalid_request"},
        {"/v1/search", "{\"text\": \"a\", \"modality\": \"smell\"}", 400, "invalid_request"},
        {"/v1/search",
         "{\"text\": \"a\", \"image\": \"R0lGODlhAQABAIAAAP///wAAACwAAAAAAQABAAACAkQBADs\"}", 400,
         "invalid_input"},
        {"/v1/search", "{}", 400, "invalid_input"},
        {"/v1/embed", "{\"text\": \"a\", \"text\": \"b\"}", 200, NULL},
        {"/v1/embed", NULL, 413,
         "too_large"}, /* deep nesting (over json_depth, 1000), made below */
    };
    char deep[2100] = "{\"a\":";
    for (int i = 0; i < 1000; i++)
        strcat(deep, "[");
    for (int i = 0; i < 1000; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        hc_response r = post_json(port, bad[i].path, bad[i].body ? bad[i].body : deep);
        char what[160];
        snprintf(what, sizeof what, "bad request %zu (%.60s)", i, bad[i].body ? bad[i].body : deep);
        expect(&r, bad[i].status, bad[i].code, what);
        hc_response_free(&r);
    }
    alive(port);
    /* methods, paths, content types */
    hc_response r = call(port, "GET", "/v1/classify", NULL, NULL, 0);
    expect(&r, 405, "method_not_allowed", "GET /v1/classify");
    char allow[64];
    CHECK(hc_header(&r, "Allow", allow, sizeof allow) && !strcmp(allow, "POST"));
    hc_response_free(&r);
    r = call(port, "POST", "/healthz", NULL, "x", 1);
    expect(&r, 405, "method_not_allowed", "POST /healthz");
    hc_response_free(&r);
    r = call(port, "DELETE", "/metrics", NULL, NULL, 0);
    expect(&r, 405, "method_not_allowed", "DELETE /metrics");
    hc_response_free(&r);
    r = call(port, "GET", "/v2/classify", NULL, NULL, 0);
    expect(&r, 404, "not_found", "unknown path");
    hc_response_free(&r);
    r = call(port, "POST", "/v1/classify", "Content-Type: image/png\r\n", "x", 1);
    expect(&r, 415, "unsupported_media_type", "content type");
    hc_response_free(&r);
    /* over the body limit (1 MiB here): declared, then sent without a length */
    size_t big = (size_t)3 << 20;
    char *huge = malloc(big);
    memset(huge, 'a', big);
    int fd = hc_connect(port);
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "POST /v1/classify HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      big);
    hc_send(fd, head, (size_t)hn);
    hc_read_response(fd, &r, 20); /* answered before the body is sent */
    expect(&r, 413, "too_large", "declared body over the limit");
    CHECK(r.closed);
    hc_response_free(&r);
    close(fd);
    r = call(port, "POST", "/v1/classify", "Content-Type: application/json\r\n", huge,
             (1 << 20) + 10);
    expect(&r, 413, "too_large", "body just over the limit");
    hc_response_free(&r);
    fd = hc_connect(port);
    const char *chunked = "POST /v1/classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                          "Content-Type: application/json\r\n\r\n";
    hc_send(fd, chunked, strlen(chunked));
    for (int i = 0; i < 5; i++) {
        char hdr[32];
        int hn = sprintf(hdr, "%x\r\n", 300000);
        hc_send(fd, hdr, (size_t)hn);
        hc_send(fd, huge, 300000);
        hc_send(fd, "\r\n", 2);
    }
    hc_send(fd, "0\r\n\r\n", 5);
    hc_read_response(fd, &r, 20);
    expect(&r, 413, "too_large", "chunked body over the limit");
    hc_response_free(&r);
    close(fd);
    free(huge);
    alive(port);
    /* a body cut short (the client goes away), garbage instead of HTTP */
    fd = hc_connect(port);
    const char *part =
        "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"text\":";
    hc_send(fd, part, strlen(part));
    close(fd);
    fd = hc_connect(port);
    char junk[2048];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)((i * 131 + 7) % 251);
    hc_send(fd, junk, sizeof junk);
    hc_read_response(fd, &r, 5);
    CHECK(r.status == 0 || r.status == 400);
    hc_response_free(&r);
    close(fd);
    alive(port);
    /* random bodies on every endpoint: always an answer, never a 5xx */
    static const char *const paths[] = {"/v1/embed", "/v1/classify", "/v1/caption", "/v1/search"};
    static const char *const types[] = {"Content-Type: application/json\r\n",
                                        "Content-Type: multipart/form-data; boundary=zz\r\n", NULL};
    uint64_t st = 12345;
    for (int i = 0; i < 60; i++) {
        char body[512];
        size_t n = 0;
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        size_t len = (st >> 33) % sizeof body;
        const char *seed = i % 3 == 0
                               ? "--zz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n"
                           : i % 3 == 1 ? "{\"image\": \"iVBORw0KGgo"
                                        : "";
        n = strlen(seed) < len ? strlen(seed) : len;
        memcpy(body, seed, n);
        for (; n < len; n++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            body[n] = (char)(st >> 56);
        }
        r = call(port, "POST", paths[i % 4], types[i % 3], body, len);
        CHECK(r.status >= 400 && r.status < 500);
        if (r.status >= 500 || !r.status)
            fprintf(stderr, "fuzz %d: %d %s\n", i, r.status, r.body ? r.body : "");
        hc_response_free(&r);
    }
    alive(port);
}

/* ------------------------------------------------------------ concurrency */

typedef struct {
    int port, id, n, ok, batch_seen;
} client_arg;

static void *client(void *v)
{
    client_arg *a = v;
    int fd = hc_connect(a->port);
    for (int i = 0; i < a->n; i++) {
        int k = (a->id + i) % NCASES;
        hc_response r;
        if (fd < 0 || hc_request(fd, "POST", "/v1/classify", "Content-Type: application/json\r\n",
                                 cases[k].json, strlen(cases[k].json), &r, 30)) {
            hc_response_free(&r);
            break;
        }
        cJSON *j = cJSON_Parse(r.body);
        float p[C];
        if (r.status == 200 && json_floats(cJSON_GetObjectItem(j, "probs"), p, C)) {
            int good = 1;
            for (int c = 0; c < C; c++)
                good &= fabsf(p[c] - vf("probs", k)[c]) < 5e-5f;
            a->ok += good;
        }
        cJSON_Delete(j);
        if (r.closed) {
            close(fd);
            fd = hc_connect(a->port);
        }
        hc_response_free(&r);
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static double metric(int port, const char *name)
{
    hc_response r = call(port, "GET", "/metrics", NULL, NULL, 0);
    char key[256];
    snprintf(key, sizeof key, "\n%s", name); /* at a line's start, not in its # HELP */
    const char *p = r.body ? strstr(r.body, key) : NULL;
    double v = p ? atof(p + strlen(key)) : -1;
    hc_response_free(&r);
    return v;
}

/* Polls /metrics until the metric reaches want (at most 20 s): the tests
 * wait for states, not for fixed times, so a loaded machine only slows them. */
static void wait_metric(int port, const char *name, double want)
{
    double t0 = hc_now(), v = -1;
    while ((v = metric(port, name)) < want && hc_now() - t0 < 20)
        usleep(10000);
    if (v < want) fprintf(stderr, "waited in vain for %s >= %g (%g)\n", name, want, v);
    CHECK(v >= want);
}

static void test_concurrency(int port)
{
    enum { N = 16, PER = 6 };
    pthread_t th[N];
    client_arg a[N];
    double batches0 = metric(port, "trimodal_batch_size_count{kind=\"classify\"} ");
    for (int i = 0; i < N; i++) {
        a[i] = (client_arg){port, i, PER, 0, 0};
        pthread_create(&th[i], NULL, client, &a[i]);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += a[i].ok;
    }
    CHECK(ok == N * PER);
    double batches = metric(port, "trimodal_batch_size_count{kind=\"classify\"} ") - batches0;
    /* concurrent requests were batched: fewer forward passes than requests */
    CHECK(batches > 0 && batches < N * PER);
    printf("concurrency: %d requests in %.0f batches\n", N * PER, batches);
}

/* ---------------------------------------------------- keys, limits, stop */

static tm_server *start(tm_server_params p)
{
    tm_server *srv = NULL;
    p.host = "127.0.0.1";
    p.port = 0;
    CHECK_OK(tm_server_start(&srv, sess, idx, &p));
    if (!srv) exit(1);
    return srv;
}

static void test_auth(void)
{
    tm_server_params p = tm_server_default_params();
    p.api_key = "s3cret-key";
    tm_server *srv = start(p);
    int port = tm_server_port(srv);
    const char *j = "Content-Type: application/json\r\n";
    hc_response r = call(port, "POST", "/v1/classify", j, "{\"text\":\"boot\"}", 15);
    expect(&r, 401, "unauthorized", "no key");
    char h[64];
    CHECK(hc_header(&r, "WWW-Authenticate", h, sizeof h) && !strcmp(h, "Bearer"));
    hc_response_free(&r);
    r = call(port, "POST", "/v1/classify",
             "Content-Type: application/json\r\nAuthorization: Bearer s3cret-ke\r\n",
             "{\"text\":\"boot\"}", 15);
    expect(&r, 401, "unauthorized", "a key one character short");
    hc_response_free(&r);
    r = call(port, "POST", "/v1/classify",
             "Content-Type: application/json\r\nX-API-Key: s3cret-key0\r\n", "{\"text\":\"boot\"}",
             15);
    expect(&r, 401, "unauthorized", "a longer key");
    hc_response_free(&r);
    r = call(port, "POST", "/v1/classify",
             "Content-Type: application/json\r\nAuthorization: Basic czNjcmV0LWtleQ==\r\n",
             "{\"text\":\"boot\"}", 15);
    expect(&r, 401, "unauthorized", "basic auth");
    hc_response_free(&r);
    r = call(port, "POST", "/v1/classify",
             "Content-Type: application/json\r\nAuthorization: Bearer s3cret-key\r\n",
             "{\"text\":\"boot\"}", 15);
    expect(&r, 200, NULL, "bearer key");
    hc_response_free(&r);
    r = call(port, "POST", "/v1/embed", "X-API-Key: s3cret-key\r\n", "{\"text\":\"boot\"}", 15);
    expect(&r, 200, NULL, "x-api-key");
    hc_response_free(&r);
    r = call(port, "GET", "/healthz", NULL, NULL, 0);
    expect(&r, 200, NULL, "healthz needs no key");
    hc_response_free(&r);
    CHECK(tm_server_shutdown(srv, 5) == 0);
    tm_server_free(srv);
}

typedef struct {
    int port, k, status;
    char code[32];
} one_arg;

static void *one_request(void *v)
{
    one_arg *a = v;
    hc_response r = post_json(a->port, "/v1/classify", cases[a->k].json);
    a->status = r.status;
    cJSON *j = cJSON_Parse(r.body ? r.body : "");
    cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code");
    snprintf(a->code, sizeof a->code, "%s", cJSON_IsString(c) ? c->valuestring : "");
    cJSON_Delete(j);
    hc_response_free(&r);
    return NULL;
}

/* A request whose body arrives slowly: it holds the batcher (which waits
 * while a request is on its way, up to max_wait) and stays in flight. */
static int slow_start(int port, const char *json)
{
    int fd = hc_connect(port);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n",
                     strlen(json));
    hc_send(fd, head, (size_t)n);
    hc_send(fd, json, 5);
    return fd;
}

static void test_queue_and_timeout(void)
{
    /* a queue of 2 while the batcher waits for the slow request: 2 of 6
     * concurrent requests are queued, 4 get 503, and so does the slow one
     * when it finally arrives; then the batcher runs the 2 */
    tm_server_params p = tm_server_default_params();
    p.max_queue = 2;
    p.max_wait_ms = 8000; /* the queued jobs wait for the slow request */
    tm_server *srv = start(p);
    int port = tm_server_port(srv);
    int slow = slow_start(port, cases[1].json);
    wait_metric(port, "trimodal_inflight_requests ", 2); /* the slow one and this probe */
    enum { N = 6 };
    pthread_t th[N];
    one_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (one_arg){port, i % NCASES, 0, ""};
        pthread_create(&th[i], NULL, one_request, &a[i]);
    }
    wait_metric(port, "trimodal_requests_total{endpoint=\"/v1/classify\",code=\"503\"} ", 4);
    wait_metric(port, "trimodal_queue_depth ", 2);
    hc_send(slow, cases[1].json + 5, strlen(cases[1].json) - 5);
    hc_response r;
    hc_read_response(slow, &r, 20);
    expect(&r, 503, "overloaded", "the slow request finds the queue full");
    char ra[16];
    CHECK(hc_header(&r, "Retry-After", ra, sizeof ra) && !strcmp(ra, "1"));
    hc_response_free(&r);
    close(slow);
    int ok = 0, full = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        ok += a[i].status == 200;
        full += a[i].status == 503 && !strcmp(a[i].code, "overloaded");
    }
    CHECK(ok == 2 && full == N - 2);
    if (ok != 2) fprintf(stderr, "queue: %d answered, %d refused\n", ok, full);
    r = call(port, "GET", "/metrics", NULL, NULL, 0);
    CHECK(r.body &&
          strstr(r.body, "trimodal_requests_total{endpoint=\"/v1/classify\",code=\"503\"} 5"));
    hc_response_free(&r);
    tm_server_shutdown(srv, 5);
    tm_server_free(srv);

    /* a timeout shorter than the batcher's wait: 504, and the server goes on */
    p = tm_server_default_params();
    p.timeout_ms = 200;
    p.max_wait_ms = 2000;
    srv = start(p);
    port = tm_server_port(srv);
    slow = slow_start(port, cases[0].json);
    wait_metric(port, "trimodal_inflight_requests ", 2);
    r = post_json(port, "/v1/classify", cases[3].json);
    expect(&r, 504, "timeout", "request timeout");
    hc_response_free(&r);
    hc_send(slow, cases[0].json + 5, strlen(cases[0].json) - 5);
    hc_read_response(slow, &r, 20);
    expect(&r, 504, "timeout", "the slow request times out too");
    hc_response_free(&r);
    close(slow);
    r = post_json(port, "/v1/embed", cases[3].json);
    expect(&r, 200, NULL, "after timeouts");
    hc_response_free(&r);
    tm_server_shutdown(srv, 5);
    tm_server_free(srv);
}

typedef struct {
    tm_server *srv;
    int left;
} stop_arg;

static void *stopper(void *v)
{
    stop_arg *a = v;
    a->left = tm_server_shutdown(a->srv, 10);
    return NULL;
}

static void test_shutdown(void)
{
    tm_server_params p = tm_server_default_params();
    p.max_wait_ms = 8000;
    tm_server *srv = start(p);
    int port = tm_server_port(srv);
    int idle = hc_connect(port); /* a keep-alive connection, used during the drain */
    hc_response r;
    hc_request(idle, "GET", "/healthz", NULL, NULL, 0, &r, 5);
    expect(&r, 200, NULL, "healthz before shutdown");
    hc_response_free(&r);
    int slow = slow_start(port, cases[5].json);
    wait_metric(port, "trimodal_inflight_requests ", 2); /* the slow one and this probe */
    enum { N = 4 };
    pthread_t th[N];
    one_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i] = (one_arg){port, i, 0, ""};
        pthread_create(&th[i], NULL, one_request, &a[i]);
    }
    wait_metric(port, "trimodal_queue_depth ", N); /* queued; the batcher waits for the slow one */
    stop_arg sa = {srv, -1};
    pthread_t st;
    pthread_create(&st, NULL, stopper, &sa);
    usleep(100000);
    /* no new connections; a new request on an open one gets 503 */
    int fresh = hc_connect(port);
    if (fresh >= 0) {
        hc_request(fresh, "GET", "/healthz", NULL, NULL, 0, &r, 2);
        CHECK(r.status == 0 || r.status == 503);
        hc_response_free(&r);
        close(fresh);
    }
    hc_request(idle, "POST", "/v1/classify", "Content-Type: application/json\r\n", cases[0].json,
               strlen(cases[0].json), &r, 5);
    expect(&r, 503, "shutting_down", "a request during the drain");
    CHECK(r.closed);
    hc_response_free(&r);
    close(idle);
    /* the requests in flight all finish */
    hc_send(slow, cases[5].json + 5, strlen(cases[5].json) - 5);
    hc_read_response(slow, &r, 20);
    expect(&r, 200, NULL, "slow request finished during the drain");
    hc_response_free(&r);
    close(slow);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECK(a[i].status == 200);
    }
    pthread_join(st, NULL);
    CHECK(sa.left == 0);
    CHECK(hc_connect(port) < 0);
    tm_server_free(srv);
}

static void build_index(void)
{
    char man[1200];
    snprintf(man, sizeof man, "/tmp/tm_server_manifest_%d.jsonl", (int)getpid());
    FILE *f = fopen(man, "w");
    for (int k = 0; k < NCASES; k++) {
        fprintf(f, "{\"id\": \"case%d\"", k);
        if (cases[k].text) fprintf(f, ", \"text\": \"%s\"", k == 5 ? "cafe sandal" : cases[k].text);
        if (cases[k].image) fprintf(f, ", \"image\": \"%s/%s\"", data_dir, cases[k].image);
        if (cases[k].audio) fprintf(f, ", \"audio\": \"%s/%s\"", data_dir, cases[k].audio);
        fprintf(f, "}\n");
    }
    fclose(f);
    tm_manifest *m = NULL;
    CHECK_OK(tm_manifest_load(&m, man, NULL));
    CHECK_OK(tm_index_build(&idx, sess, m, NULL, NULL));
    tm_manifest_free(m);
    unlink(man);
    if (!idx) exit(1);
}

int main(void)
{
    const char *src = getenv("TM_SOURCE_DIR");
    snprintf(data_dir, sizeof data_dir, "%s/tests/data/serve", src && *src ? src : ".");
    snprintf(model_dir, sizeof model_dir, "%s/model", data_dir);
    char vp[1200];
    snprintf(vp, sizeof vp, "%s/vectors.safetensors", data_dir);
    if (tm_safetensors_open(&vec, vp)) {
        fprintf(stderr, "%s\n", tm_last_error());
        return 1;
    }
    load_cases();
    CHECK_OK(tm_session_open(&sess, model_dir, NULL));
    if (!sess) return test_finish("serve_server");
    build_index();

    tm_server_params p = tm_server_default_params();
    p.max_body_bytes = (size_t)1 << 20;
    p.max_wait_ms = 5;
    tm_server *srv = start(p);
    int port = tm_server_port(srv);
    CHECK(port > 0);
    /* a second server on the same port cannot start */
    tm_server *dup = NULL;
    tm_server_params q = p;
    q.host = "127.0.0.1";
    q.port = port;
    CHECK_STATUS(tm_server_start(&dup, sess, idx, &q), TM_ERR_IO);
    q.port = 0;
    q.host = "not-an-address";
    CHECK_STATUS(tm_server_start(&dup, sess, idx, &q), TM_ERR_INVALID);

    test_endpoints(port);
    test_multipart(port);
    test_bad_requests(port);
    test_concurrency(port);
    CHECK(tm_server_shutdown(srv, 5) == 0);
    char *met = tm_server_metrics(srv);
    CHECK(met && strstr(met, "trimodal_draining 1"));
    tm_free(met);
    tm_server_free(srv);

    test_auth();
    test_queue_and_timeout();
    test_shutdown();

    tm_index_free(idx);
    tm_session_free(sess);
    tm_safetensors_close(vec);
    for (int k = 0; k < NCASES; k++) {
        free((char *)cases[k].text);
        free((char *)cases[k].image);
        free((char *)cases[k].audio);
        tm_free(cases[k].img);
        tm_free(cases[k].aud);
        free(cases[k].json);
    }
    return test_finish("serve_server");
}
