/* libFuzzer harness for the server's request bodies: the JSON and
 * multipart/form-data parsing of src/serve/server.c (its static
 * parse_json / parse_multipart, reached by compiling that file into this
 * harness) and the base64 and multipart readers of src/serve/util.c. The
 * first byte picks a mode:
 *   mode % 3 == 0: the rest is a JSON request body
 *   mode % 3 == 1: the rest is "Content-Type value\n" then a multipart body
 *   mode % 3 == 2: the rest is base64 text
 * A body either parses (inputs that point inside it or into buffers of the
 * size claimed) or gives a 4xx code with an error code and a message. */
#include "serve/server.c"

#include <stdint.h>

#define REQUIRE(x)                                                                       \
    do {                                                                                 \
        if (!(x)) __builtin_trap();                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_inputs(const inputs *in, int code, const char *ecode, const char *msg)
{
    if (code) {
        REQUIRE(code >= 400 && code < 500 && ecode && ecode[0] && msg[0]);
        return;
    }
    /* touch every byte the request claims: ASan finds a wrong length */
    volatile unsigned sum = 0;
    for (size_t i = 0; in->text && i < in->text_len; i++) sum += (unsigned char)in->text[i];
    const unsigned char *img = in->image ? in->image : in->image_ref;
    const unsigned char *aud = in->audio ? in->audio : in->audio_ref;
    for (size_t i = 0; img && i < in->image_len; i++) sum += img[i];
    for (size_t i = 0; aud && i < in->audio_len; i++) sum += aud[i];
    (void)sum;
    REQUIRE(in->top_k >= 0 && in->k >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int mode = data[0] % 3;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    static tm_server srv;
    srv.p = tm_server_default_params();
    char msg[768] = "";
    const char *ecode = NULL;
    inputs in;
    memset(&in, 0, sizeof in);
    if (mode == 0) {
        cJSON *root = cJSON_ParseWithLength(len ? body : "", len);
        if (root) {
            int code = parse_json(&srv, root, &in, &ecode, msg, sizeof msg);
            check_inputs(&in, code, ecode, msg);
            cJSON_Delete(root);
        }
    } else if (mode == 1) {
        const char *nl = memchr(body, '\n', len);
        size_t hl = nl ? (size_t)(nl - body) : len;
        if (hl > 200) return 0;
        char ct[256];
        memcpy(ct, body, hl);
        ct[hl] = 0;
        char boundary[80];
        if (!mp_boundary(ct, boundary, sizeof boundary)) return 0;
        REQUIRE(strlen(boundary) >= 1 && strlen(boundary) <= 70);
        const char *b = nl ? nl + 1 : body + len;
        size_t bn = nl ? len - hl - 1 : 0;
        int code = parse_multipart(&srv, b, bn, boundary, &in, &ecode, msg, sizeof msg);
        check_inputs(&in, code, ecode, msg);
        if (!code) {
            /* parts point inside the body */
            if (in.text) REQUIRE(in.text >= b && in.text + in.text_len <= b + bn);
            if (in.image_ref)
                REQUIRE((const char *)in.image_ref >= b &&
                        (const char *)in.image_ref + in.image_len <= b + bn);
        }
    } else {
        unsigned char *out = NULL;
        size_t n = 0;
        tm_status st = b64_decode(body, len, &out, &n);
        if (st) {
            REQUIRE(out == NULL && tm_last_error()[0]);
        } else {
            REQUIRE(out != NULL && n <= len / 4 * 3 + 3);
            volatile unsigned sum = 0;
            for (size_t i = 0; i < n; i++) sum += out[i];
            (void)sum;
        }
        free(out);
    }
    inputs_free(&in);
    return 0;
}
