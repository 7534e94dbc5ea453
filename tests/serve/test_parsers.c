/* The serve layer's parsers on their own (src/serve/util.c, metrics.c):
 * multipart/form-data (valid bodies, every prefix of one, every single-byte
 * corruption, random bytes), Content-Type boundaries, base64 (against a
 * reference encoder), JSON string escaping of arbitrary bytes, and the
 * Prometheus text's line grammar. Under the sanitizers this is where an
 * out-of-bounds read would show. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "serve/serve_internal.h"
#include "testutil.h"

static const char form[] =
    "preamble to ignore\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=\"text\"\r\n"
    "\r\n"
    "a red sneaker\r\n"
    "--XyZ\r\n"
    "content-disposition: form-data; name=\"image\"; filename=\"shoe;1.png\"\r\n"
    "Content-Type: image/png\r\n"
    "\r\n"
    "\x89PNG\r\n--XyZnot-a-boundary\r\n\x00\x01\r\n"
    "--XyZ\r\n"
    "Content-Disposition: form-data; name=top_k\r\n"
    "\r\n"
    "3\r\n"
    "--XyZ--\r\n"
    "epilogue";

static int part_is(const mp_part *p, const char *name, const char *data, size_t len)
{
    return p->name_len == strlen(name) && !memcmp(p->name, name, p->name_len) && p->len == len &&
           !memcmp(p->data, data, len);
}

static void test_multipart(void)
{
    mp_part parts[MP_MAX_PARTS];
    int n = 0;
    size_t len = sizeof form - 1;
    CHECK_OK(mp_parse(form, len, "XyZ", parts, MP_MAX_PARTS, &n));
    CHECK(n == 3);
    if (n == 3) {
        CHECK(part_is(&parts[0], "text", "a red sneaker", 13));
        CHECK(part_is(&parts[1], "image", "\x89PNG\r\n--XyZnot-a-boundary\r\n\x00\x01", 29));
        CHECK(parts[1].filename_len == 10 && !memcmp(parts[1].filename, "shoe;1.png", 10));
        CHECK(part_is(&parts[2], "top_k", "3", 1));
    }
    /* every prefix that cuts the closing delimiter or earlier fails; none crashes */
    const char *close = memmem(form, len, "--XyZ--", 7); /* the form holds a NUL */
    size_t close_at = (size_t)(close - form);
    for (size_t cut = 0; cut < len; cut++) {
        char *copy = malloc(cut ? cut : 1); /* exact size: ASan sees any overread */
        memcpy(copy, form, cut);
        tm_status st = mp_parse(copy, cut, "XyZ", parts, MP_MAX_PARTS, &n);
        if (cut < close_at + 7) CHECK(st == TM_ERR_FORMAT);
        free(copy);
    }
    /* every byte changed in turn: OK or FORMAT, never anything else */
    for (size_t i = 0; i < len; i++) {
        char *copy = malloc(len);
        memcpy(copy, form, len);
        copy[i] = (char)(copy[i] ^ 0x5A);
        tm_status st = mp_parse(copy, len, "XyZ", parts, MP_MAX_PARTS, &n);
        CHECK(st == TM_OK || st == TM_ERR_FORMAT);
        free(copy);
    }
    /* random bytes, some seeded with delimiters */
    uint64_t s = 99;
    for (int it = 0; it < 2000; it++) {
        size_t n2 = 0;
        char buf[256];
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        size_t blen = (s >> 33) % sizeof buf;
        while (n2 < blen) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            if ((s >> 60) < 3 && n2 + 7 < blen) {
                memcpy(buf + n2, (s >> 58) & 1 ? "\r\n--XyZ" : "\r\n\r\n--", 7);
                n2 += 7;
            } else {
                buf[n2++] = (char)(s >> 40);
            }
        }
        char *copy = malloc(blen ? blen : 1);
        memcpy(copy, buf, blen);
        tm_status st = mp_parse(copy, blen, "XyZ", parts, MP_MAX_PARTS, &n);
        CHECK(st == TM_OK || st == TM_ERR_FORMAT);
        for (int k = 0; st == TM_OK && k < n; k++)
            CHECK(parts[k].data >= copy && parts[k].data + parts[k].len <= copy + blen);
        free(copy);
    }
    /* more parts than allowed; a part without a name */
    char many[4096];
    size_t m = 0;
    for (int i = 0; i < MP_MAX_PARTS + 1; i++)
        m += (size_t)sprintf(many + m,
                             "--B\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nx\r\n", i);
    m += (size_t)sprintf(many + m, "--B--\r\n");
    CHECK_STATUS(mp_parse(many, m, "B", parts, MP_MAX_PARTS, &n), TM_ERR_FORMAT);
    const char *noname = "--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n--B--";
    CHECK_STATUS(mp_parse(noname, strlen(noname), "B", parts, MP_MAX_PARTS, &n), TM_ERR_FORMAT);
    const char *empty = "--B\r\nContent-Disposition: form-data; name=\"e\"\r\n\r\n\r\n--B--";
    CHECK_OK(mp_parse(empty, strlen(empty), "B", parts, MP_MAX_PARTS, &n));
    CHECK(n == 1 && parts[0].len == 0);

    char b[80];
    CHECK(mp_boundary("multipart/form-data; boundary=abc", b, sizeof b) && !strcmp(b, "abc"));
    CHECK(mp_boundary("Multipart/Form-Data;charset=x; BOUNDARY=\"a b;c\"", b, sizeof b) &&
          !strcmp(b, "a b;c"));
    CHECK(!mp_boundary("multipart/form-data", b, sizeof b));
    CHECK(!mp_boundary("multipart/form-data; boundary=", b, sizeof b));
    CHECK(!mp_boundary("multipart/form-data; boundary=\"abc", b, sizeof b));
    CHECK(!mp_boundary("application/json; boundary=abc", b, sizeof b));
    char longb[120] = "multipart/form-data; boundary=";
    memset(longb + strlen(longb), 'x', 71);
    CHECK(!mp_boundary(longb, b, sizeof b));
}

static char *ref_b64(const unsigned char *p, size_t n, int pad)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(n / 3 * 4 + 8), *o = out;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        if (i + 1 < n)
            *o++ = tab[v >> 6 & 63];
        else if (pad)
            *o++ = '=';
        if (i + 2 < n)
            *o++ = tab[v & 63];
        else if (pad)
            *o++ = '=';
    }
    *o = 0;
    return out;
}

static void test_base64(void)
{
    unsigned char data[300];
    for (int i = 0; i < 300; i++)
        data[i] = (unsigned char)(i * 73 + 5);
    for (size_t n = 1; n < 300; n += 13)
        for (int pad = 0; pad < 2; pad++) {
            char *e = ref_b64(data, n, pad);
            unsigned char *d = NULL;
            size_t dn = 0;
            CHECK_OK(b64_decode(e, strlen(e), &d, &dn));
            CHECK(dn == n && d && !memcmp(d, data, n));
            free(d);
            free(e);
        }
    unsigned char *d = NULL;
    size_t dn = 0;
    const char *url = "data:image/png;base64,aGVs bG8=\n";
    CHECK_OK(b64_decode(url, strlen(url), &d, &dn));
    CHECK(dn == 5 && !memcmp(d, "hello", 5));
    free(d);
    static const char *const bad[] = {"",
                                      "A",
                                      "aGVsbG8=x",
                                      "aGVs*G8=",
                                      "====",
                                      "data:,aGVsbG8=",
                                      "data:text/plain,hello",
                                      "aGVsbG8==="};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        d = (unsigned char *)1;
        CHECK_STATUS(b64_decode(bad[i], strlen(bad[i]), &d, &dn), TM_ERR_FORMAT);
        CHECK(d == NULL);
    }
}

static void test_json_strings(void)
{
    /* every byte value, invalid UTF-8 included: the result must parse as JSON */
    char bytes[512];
    for (int i = 0; i < 512; i++)
        bytes[i] = (char)(i < 256 ? i : 255 - (i - 256) / 2);
    sbuf b = {0};
    sb_json_str(&b, bytes, sizeof bytes);
    cJSON *j = cJSON_ParseWithLength(b.data, b.len);
    CHECK(cJSON_IsString(j));
    cJSON_Delete(j);
    sb_free(&b);
    const char *u = "caf\xc3\xa9 \xe2\x98\x95 \xed\xa0\x80 \"q\" \\ \x01";
    sb_json_str(&b, u, strlen(u));
    CHECK(b.data &&
          !strcmp(b.data,
                  "\"caf\xc3\xa9 \xe2\x98\x95 \\ufffd\\ufffd\\ufffd \\\"q\\\" \\\\ \\u0001\""));
    sb_free(&b);
    sb_json_float(&b, 0.1f);
    sb_puts(&b, " ");
    sb_json_float(&b, 1.0 / 0.0);
    CHECK(b.data && !strcmp(b.data, "0.100000001 null"));
    sb_free(&b);
    for (int i = 0; i < 1000; i++)
        sb_printf(&b, "%0300d", i);
    CHECK(!b.failed && b.len == 300000);
    sb_free(&b);
}

static void test_metrics(void)
{
    metrics m;
    met_init(&m);
    met_request(&m, EP_CLASSIFY, 200, 0.003);
    met_request(&m, EP_CLASSIFY, 418, 0.5);
    met_request(&m, EP_OTHER, 404, 100);
    met_batch(&m, KIND_EMBED, 5, 0.02);
    sbuf b = {0};
    met_render(&m, &b, "name \"with\" quotes\\", 3, 256, 2, 0);
    CHECK(b.data &&
          strstr(b.data, "trimodal_requests_total{endpoint=\"/v1/classify\",code=\"other\"} 1"));
    CHECK(b.data && strstr(b.data, "trimodal_batch_size_bucket{kind=\"embed\",le=\"4\"} 0\n"));
    CHECK(b.data && strstr(b.data, "trimodal_batch_size_bucket{kind=\"embed\",le=\"8\"} 1\n"));
    CHECK(b.data &&
          strstr(b.data,
                 "trimodal_request_duration_seconds_bucket{endpoint=\"other\",le=\"+Inf\"} 1"));
    CHECK(b.data &&
          strstr(b.data, "trimodal_model_info{model=\"name \\\"with\\\" quotes\\\\\"} 1"));
    CHECK(b.data && strstr(b.data, "trimodal_queue_depth 3\n"));
    /* every line: a comment, or NAME[{k="v",...}] VALUE */
    int good = 1;
    for (char *line = b.data; line && *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) {
            good = 0;
            break;
        }
        *nl = 0;
        if (line[0] != '#') {
            char *sp = strrchr(line, ' ');
            char *end;
            if (!sp || (strtod(sp + 1, &end), *end)) good = 0;
            for (char *c = line; c < sp && good; c++)
                if (*c == '{') {
                    char *close = strstr(c, "} ");
                    if (!close) good = 0;
                    break;
                }
        }
        line = nl + 1;
    }
    CHECK(good);
    sb_free(&b);
    met_destroy(&m);
}

int main(void)
{
    test_multipart();
    test_base64();
    test_json_strings();
    test_metrics();
    return test_finish("serve_parsers");
}
