/* The server's request limits at their boundary (docs/limits.md): a body
 * of exactly max_body_bytes is read, one byte more gets 413; and the
 * request-body regressions the fuzzer found (tests that feed the inputs
 * over HTTP, so the ASan build also checks that nothing leaks). */
#define _GNU_SOURCE /* strcasestr in http_client.h */
#include <stdlib.h>
#include <string.h>

#include "serve/http_client.h"
#include "testutil.h"
#include "trimodal/serve.h"

static hc_response post(int port, const char *body, size_t len)
{
    hc_response r;
    memset(&r, 0, sizeof r);
    int fd = hc_connect(port);
    if (fd < 0) return r;
    hc_request(fd, "POST", "/v1/classify", "Content-Type: application/json\r\n", body, len, &r,
               20);
    close(fd);
    return r;
}

static void test_body_limit(int port, size_t limit)
{
    char *body = malloc(limit + 1);
    const char *json = "{\"text\": \"a red sneaker\"}";
    size_t k = strlen(json);
    memcpy(body, json, k);
    memset(body + k, ' ', limit + 1 - k); /* JSON whitespace after the object */
    hc_response r = post(port, body, limit);
    CHECK(r.status == 200);
    if (r.status != 200) fprintf(stderr, "exactly the limit: %d %s\n", r.status, r.body);
    hc_response_free(&r);
    r = post(port, body, limit + 1);
    CHECK(r.status == 413);
    CHECK(r.body && strstr(r.body, "too_large"));
    hc_response_free(&r);
    free(body);
}

/* Fuzzer finding: a JSON body naming "image" (or "audio") twice leaked the
 * first decoded buffer. It is now refused like a repeated form field. */
static void test_duplicate_media(int port)
{
    const char *bodies[] = {"{\"image\": \"AAAA\", \"image\": \"AAAA\"}",
                            "{\"audio\": \"AAAA\", \"text\": \"a\", \"audio\": \"AAAA\"}"};
    for (int i = 0; i < 2; i++) {
        hc_response r = post(port, bodies[i], strlen(bodies[i]));
        CHECK(r.status == 400);
        CHECK(r.body && strstr(r.body, "twice"));
        hc_response_free(&r);
    }
}

int main(void)
{
    char model_dir[1100];
    snprintf(model_dir, sizeof model_dir, "%s", test_data_path("serve/model"));
    tm_session *sess = NULL;
    CHECK_OK(tm_session_open(&sess, model_dir, NULL));
    if (!sess) return test_finish("serve_limits");
    tm_server_params p = tm_server_default_params();
    CHECK(p.max_body_bytes == (size_t)16 << 20);
    p.max_body_bytes = 4096;
    p.host = "127.0.0.1";
    p.port = 0;
    tm_server *srv = NULL;
    CHECK_OK(tm_server_start(&srv, sess, NULL, &p));
    if (srv) {
        int port = tm_server_port(srv);
        test_body_limit(port, p.max_body_bytes);
        test_duplicate_media(port);
        tm_server_shutdown(srv, 5);
        tm_server_free(srv);
    }
    tm_session_free(sess);
    return test_finish("serve_limits");
}
