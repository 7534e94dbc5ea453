/* The search results a request may ask (tm_server_params.max_search_k,
 * `trimodal serve --max-search-k`) at the boundary (docs/limits.md):
 * exactly the limit is answered, one more gets 400 naming the range and the
 * setting. Also the parts of a multipart request (the table's
 * multipart_parts): exactly the limit is answered, one more gets 413; and
 * the nesting of a JSON body (json_depth) likewise. */
#define _GNU_SOURCE /* strcasestr in http_client.h */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/http_client.h"
#include "testutil.h"
#include "trimodal/serve.h"

static hc_response search(int port, int k)
{
    char body[128];
    int n = snprintf(body, sizeof body, "{\"text\": \"a red sneaker\", \"k\": %d}", k);
    hc_response r;
    memset(&r, 0, sizeof r);
    int fd = hc_connect(port);
    if (fd < 0) return r;
    hc_request(fd, "POST", "/v1/search", "Content-Type: application/json\r\n", body, (size_t)n, &r,
               20);
    close(fd);
    return r;
}

/* A multipart/form-data search with the first n of the fields text, k,
 * modality. */
static hc_response search_form(int port, int n)
{
    static const char *const fields[3][2] = {
        {"text", "a red sneaker"}, {"k", "2"}, {"modality", "text"}};
    char body[1024];
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(body + len, sizeof body - len,
                                "--bnd\r\nContent-Disposition: form-data; "
                                "name=\"%s\"\r\n\r\n%s\r\n",
                                fields[i][0], fields[i][1]);
    len += (size_t)snprintf(body + len, sizeof body - len, "--bnd--\r\n");
    hc_response r;
    memset(&r, 0, sizeof r);
    int fd = hc_connect(port);
    if (fd < 0) return r;
    hc_request(fd, "POST", "/v1/search", "Content-Type: multipart/form-data; boundary=bnd\r\n",
               body, len, &r, 20);
    close(fd);
    return r;
}

/* A response of status want whose body holds each of the words (NULL ends). */
static void expect(const char *what, hc_response *r, int want, const char *w1, const char *w2)
{
    int ok = r->status == want && (!w1 || (r->body && strstr(r->body, w1))) &&
             (!w2 || (r->body && strstr(r->body, w2)));
    CHECK(ok);
    if (!ok)
        fprintf(stderr, "%s: want %d with '%s' '%s', got %d %s\n", what, want, w1 ? w1 : "",
                w2 ? w2 : "", r->status, r->body ? r->body : "");
    hc_response_free(r);
}

int main(void)
{
    char model_dir[1100];
    snprintf(model_dir, sizeof model_dir, "%s", test_data_path("serve/model"));
    tm_session *sess = NULL;
    CHECK_OK(tm_session_open(&sess, model_dir, NULL));
    if (!sess) return test_finish("limits_search");
    const char *rows = "{\"id\": \"a\", \"text\": \"a red sneaker\"}\n"
                       "{\"id\": \"b\", \"text\": \"a blue boot\"}\n"
                       "{\"id\": \"c\", \"text\": \"a green sandal\"}\n"
                       "{\"id\": \"d\", \"text\": \"a white shirt\"}\n";
    tm_manifest_params mp = tm_manifest_default_params();
    mp.dataset_json = "";
    tm_manifest *m = NULL;
    CHECK_OK(tm_manifest_parse(&m, rows, strlen(rows), "m.jsonl", NULL, &mp));
    tm_index *idx = NULL;
    tm_index_build_params ip = tm_index_build_default_params();
    if (m) CHECK_OK(tm_index_build(&idx, sess, m, &ip, NULL));
    tm_manifest_free(m);

    tm_server_params p = tm_server_default_params();
    CHECK(p.max_search_k == 1000);
    p.max_search_k = 3;
    p.host = "127.0.0.1";
    p.port = 0;
    tm_server *srv = NULL;
    if (idx) CHECK_OK(tm_server_start(&srv, sess, idx, &p));
    if (srv) {
        int port = tm_server_port(srv);
        hc_response r = search(port, 3);
        CHECK(r.status == 200);
        if (r.status != 200) fprintf(stderr, "k = the limit: %d %s\n", r.status, r.body);
        hc_response_free(&r);
        r = search(port, 4);
        CHECK(r.status == 400);
        CHECK(r.body && strstr(r.body, "1..3"));
        CHECK(r.body && strstr(r.body, "max_search_k") && strstr(r.body, "--max-search-k"));
        if (r.status != 400 || !r.body || !strstr(r.body, "1..3"))
            fprintf(stderr, "k = the limit + 1: %d %s\n", r.status, r.body);
        hc_response_free(&r);

        /* multipart parts: the table's multipart_parts (default 16) */
        CHECK(tm_limit_get(TM_LIMIT_MULTIPART_PARTS) == 16);
        r = search_form(port, 3);
        expect("3 parts, default limit", &r, 200, NULL, NULL);
        CHECK_OK(tm_limit_set(TM_LIMIT_MULTIPART_PARTS, 3));
        r = search_form(port, 3);
        expect("3 parts, limit 3", &r, 200, NULL, NULL);
        CHECK_OK(tm_limit_set(TM_LIMIT_MULTIPART_PARTS, 2));
        r = search_form(port, 2);
        expect("2 parts, limit 2", &r, 200, NULL, NULL);
        r = search_form(port, 3);
        expect("3 parts, limit 2", &r, 413, "multipart_parts", "TRIMODAL_LIMITS=multipart_parts=N");
        tm_limits_reset();
        /* JSON nesting (json_depth): a body as deep as the limit is answered,
         * one level deeper gets 413 naming the limit */
        CHECK_OK(tm_limit_set(TM_LIMIT_JSON_DEPTH, 1));
        r = search(port, 2);
        expect("depth 1, limit 1", &r, 200, NULL, NULL);
        {
            const char *deep = "{\"text\": \"a red sneaker\", \"k\": 2, \"x\": [1]}";
            int fd = hc_connect(port);
            memset(&r, 0, sizeof r);
            if (fd >= 0) {
                hc_request(fd, "POST", "/v1/search", "Content-Type: application/json\r\n", deep,
                           strlen(deep), &r, 20);
                close(fd);
            }
            expect("depth 2, limit 1", &r, 413, "json_depth", "TRIMODAL_LIMITS=json_depth=N");
        }
        tm_limits_reset();
        tm_server_shutdown(srv, 5);
        tm_server_free(srv);
    }
    tm_index_free(idx);
    tm_session_free(sess);
    return test_finish("limits_search");
}
