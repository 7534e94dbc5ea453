/* The HTTP server: libmicrohttpd with a thread per connection. A request's
 * thread reads the body (up to max_body_bytes), parses JSON or multipart,
 * decodes base64 and runs the front-ends, then hands the prepared example
 * to the batcher and waits (up to the request timeout) for its result.
 * Every error is a JSON object {"error": {"code", "message"}}. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "serve/serve_internal.h"

struct tm_server {
    struct MHD_Daemon *d;
    tm_session *s;
    const tm_index *idx;
    tm_server_params p;
    char *api_key;
    char *host;
    batcher bat;
    metrics met;
    pthread_mutex_t lock; /* inflight */
    int inflight;
    atomic_int draining;
    int port;
    int shut;
    int64_t C, M, E;
};

typedef struct {
    int ep;
    int is_post;
    double t0;
    sbuf body;
    int too_large;
    int preparing; /* counted in the batcher's `preparing` */
    int replied;
    char method[8];
} req;

tm_server_params tm_server_default_params(void)
{
    tm_server_params p;
    memset(&p, 0, sizeof p);
    p.host = "127.0.0.1";
    p.port = 8080;
    p.max_batch = 0;
    p.max_wait_ms = 2;
    p.max_queue = 256;
    p.max_body_bytes = (size_t)16 << 20;
    p.timeout_ms = 30000;
    p.max_connections = 512;
    p.connection_timeout_s = 60;
    p.top_k = 5;
    p.search_k = 10;
    p.max_search_k = 1000;
    return p;
}

static void logf_(tm_server *srv, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void logf_(tm_server *srv, const char *fmt, ...)
{
    if (!srv->p.log) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    srv->p.log(srv->p.log_ctx, line);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    tm_server *srv = cls;
    if (!srv->p.log) return;
    char line[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = 0;
    logf_(srv, "http: %s", line);
}

/* ------------------------------------------------------------ replies */

static enum MHD_Result send_body(tm_server *srv, struct MHD_Connection *c, req *r, int code,
                                 char *data, size_t len, const char *type, const char *h1,
                                 const char *v1)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (h1) MHD_add_response_header(resp, h1, v1);
    if (atomic_load(&srv->draining) || (r && r->too_large))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    /* counted before the client can see the answer (and ask /metrics) */
    double dt = r ? tm_time_s() - r->t0 : 0;
    met_request(&srv->met, r ? r->ep : EP_OTHER, code, dt);
    if (r && r->ep != EP_METRICS && r->ep != EP_HEALTHZ)
        logf_(srv, "%s %s %d %.1f ms", r->method,
              r->ep == EP_EMBED      ? "/v1/embed"
              : r->ep == EP_CLASSIFY ? "/v1/classify"
              : r->ep == EP_CAPTION  ? "/v1/caption"
              : r->ep == EP_SEARCH   ? "/v1/search"
                                     : "-",
              code, dt * 1e3);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)code, resp);
    MHD_destroy_response(resp);
    if (r) r->replied = 1;
    return ret;
}

static enum MHD_Result send_json(tm_server *srv, struct MHD_Connection *c, req *r, int code,
                                 sbuf *b)
{
    if (b->failed) {
        sb_free(b);
        static const char oom[] =
            "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
        char *d = malloc(sizeof oom);
        if (!d) return MHD_NO;
        memcpy(d, oom, sizeof oom);
        return send_body(srv, c, r, 500, d, sizeof oom - 1, "application/json", NULL, NULL);
    }
    sb_put(b, "\n", 1);
    char *d = b->data;
    size_t n = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    if (!d) return MHD_NO;
    return send_body(srv, c, r, code, d, n, "application/json", NULL, NULL);
}

static enum MHD_Result send_error_h(tm_server *srv, struct MHD_Connection *c, req *r, int code,
                                    const char *ecode, const char *msg, const char *h1,
                                    const char *v1)
{
    sbuf b = {0};
    sb_puts(&b, "{\"error\":{\"code\":");
    sb_json_str(&b, ecode, strlen(ecode));
    sb_puts(&b, ",\"message\":");
    sb_json_str(&b, msg, strlen(msg));
    sb_puts(&b, "}}\n");
    if (b.failed) {
        sb_free(&b);
        return MHD_NO;
    }
    return send_body(srv, c, r, code, b.data, b.len, "application/json", h1, v1);
}

static enum MHD_Result send_error(tm_server *srv, struct MHD_Connection *c, req *r, int code,
                                  const char *ecode, const char *msg)
{
    return send_error_h(srv, c, r, code, ecode, msg, NULL, NULL);
}

/* A library failure as an HTTP error. */
static enum MHD_Result send_status(tm_server *srv, struct MHD_Connection *c, req *r, tm_status st,
                                   const char *msg)
{
    switch (st) {
    case TM_ERR_FORMAT: return send_error(srv, c, r, 400, "invalid_media", msg);
    case TM_ERR_UNSUPPORTED: return send_error(srv, c, r, 400, "unsupported_input", msg);
    case TM_ERR_LIMIT: return send_error(srv, c, r, 413, "too_large", msg);
    case TM_ERR_INVALID: return send_error(srv, c, r, 400, "invalid_input", msg);
    case TM_ERR_NOMEM: return send_error(srv, c, r, 503, "out_of_memory", msg);
    default: return send_error(srv, c, r, 500, "internal", msg);
    }
}

/* ------------------------------------------------------------ parsing */

typedef struct {
    const char *text;
    size_t text_len;
    unsigned char *image, *audio; /* malloc'ed (base64) or NULL */
    size_t image_len, audio_len;
    const unsigned char *image_ref, *audio_ref; /* pointing into the body (multipart) */
    int top_k, k;                               /* 0: not given */
    unsigned modality;                          /* search targets; 0: not given */
    int all_modalities;                         /* "modality": "all" */
} inputs;

static void inputs_free(inputs *in)
{
    free(in->image);
    free(in->audio);
}

static int parse_int_text(const char *s, size_t n, int lo, int hi, int *out)
{
    if (!n || n > 12) return 0;
    char buf[16];
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    long v = strtol(buf, &end, 10);
    if (*end || v < lo || v > hi) return 0;
    *out = (int)v;
    return 1;
}

static int parse_modality(const char *s, size_t n, inputs *in)
{
    char buf[16];
    if (n >= sizeof buf) return 0;
    memcpy(buf, s, n);
    buf[n] = 0;
    if (!strcmp(buf, "all")) {
        in->all_modalities = 1;
        return 1;
    }
    in->modality = tm_modality_from_name(buf);
    return in->modality != 0;
}

/* Appended to a search "k" over the server's max_search_k. */
#define K_LIMIT_HINT                                                                              \
    " (the limit max_search_k; raise it with trimodal serve --max-search-k K or "                 \
    "tm_server_params.max_search_k)"

/* Reads the options and inputs of a JSON body; on failure writes the error
 * code and message and returns the HTTP status. */
static int parse_json(tm_server *srv, cJSON *root, inputs *in, const char **ecode, char *msg,
                      size_t msg_size)
{
    *ecode = "invalid_request";
    if (!cJSON_IsObject(root)) {
        snprintf(msg, msg_size, "the body must be a JSON object like {\"text\": \"...\"}");
        return 400;
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        const char *k = it->string;
        if (!strcmp(k, "text")) {
            if (!cJSON_IsString(it)) {
                snprintf(msg, msg_size, "\"text\" must be a string");
                return 400;
            }
            in->text = it->valuestring;
            in->text_len = strlen(it->valuestring);
        } else if (!strcmp(k, "image") || !strcmp(k, "audio")) {
            if (!cJSON_IsString(it)) {
                snprintf(msg, msg_size, "\"%s\" must be a base64 string of the file's bytes", k);
                return 400;
            }
            if (k[0] == 'i' ? in->image != NULL : in->audio != NULL) {
                /* a repeated key would overwrite (and leak) the first */
                snprintf(msg, msg_size, "\"%s\" given twice", k);
                return 400;
            }
            unsigned char *d;
            size_t n;
            tm_status st = b64_decode(it->valuestring, strlen(it->valuestring), &d, &n);
            if (st) {
                *ecode = "invalid_base64";
                snprintf(msg, msg_size, "\"%s\": %s", k, tm_last_error());
                return 400;
            }
            if (k[0] == 'i')
                in->image = d, in->image_len = n;
            else
                in->audio = d, in->audio_len = n;
        } else if (!strcmp(k, "top_k") || !strcmp(k, "k")) {
            int hi = k[0] == 't' ? 1000000 : srv->p.max_search_k;
            double v = it->valuedouble;
            if (!cJSON_IsNumber(it) || v != floor(v) || v < 1 || v > hi) {
                snprintf(msg, msg_size, "\"%s\" must be an integer in 1..%d%s", k, hi,
                         k[0] == 't' ? "" : K_LIMIT_HINT);
                return 400;
            }
            if (k[0] == 't')
                in->top_k = (int)v;
            else
                in->k = (int)v;
        } else if (!strcmp(k, "modality")) {
            if (!cJSON_IsString(it) ||
                !parse_modality(it->valuestring, strlen(it->valuestring), in)) {
                snprintf(msg, msg_size,
                         "\"modality\" must be \"text\", \"image\", \"audio\" or "
                         "\"all\"");
                return 400;
            }
        } else {
            snprintf(msg, msg_size,
                     "unknown field \"%.64s\" (expected text, image, audio, top_k, "
                     "k, modality)",
                     k);
            return 400;
        }
    }
    return 0;
}

static int parse_parts(tm_server *srv, const mp_part *parts, int n, inputs *in,
                       const char **ecode, char *msg, size_t msg_size)
{
    unsigned seen = 0;
    *ecode = "invalid_request";
    for (int i = 0; i < n; i++) {
        const mp_part *p = &parts[i];
        static const char *const names[] = {"text", "image", "audio", "top_k", "k", "modality"};
        int f = -1;
        for (int j = 0; j < 6; j++)
            if (p->name_len == strlen(names[j]) && !memcmp(p->name, names[j], p->name_len)) f = j;
        if (f < 0) {
            snprintf(msg, msg_size,
                     "unknown form field \"%.*s\" (expected text, image, audio, "
                     "top_k, k, modality)",
                     (int)(p->name_len > 64 ? 64 : p->name_len), p->name);
            return 400;
        }
        if (seen & (1u << f)) {
            snprintf(msg, msg_size, "form field \"%s\" given twice", names[f]);
            return 400;
        }
        seen |= 1u << f;
        if (f == 0) {
            in->text = p->data;
            in->text_len = p->len;
        } else if (f == 1) {
            in->image_ref = (const unsigned char *)p->data;
            in->image_len = p->len;
        } else if (f == 2) {
            in->audio_ref = (const unsigned char *)p->data;
            in->audio_len = p->len;
        } else if (f == 3 || f == 4) {
            int hi = f == 3 ? 1000000 : srv->p.max_search_k, v;
            if (!parse_int_text(p->data, p->len, 1, hi, &v)) {
                snprintf(msg, msg_size, "\"%s\" must be an integer in 1..%d%s", names[f], hi,
                         f == 3 ? "" : K_LIMIT_HINT);
                return 400;
            }
            if (f == 3)
                in->top_k = v;
            else
                in->k = v;
        } else if (!parse_modality(p->data, p->len, in)) {
            snprintf(msg, msg_size,
                     "\"modality\" must be \"text\", \"image\", \"audio\" or \"all\"");
            return 400;
        }
    }
    return 0;
}

/* At most the table's multipart_parts parts (default MP_MAX_PARTS); the
 * parts point into body. */
static int parse_multipart(tm_server *srv, const char *body, size_t len, const char *boundary,
                           inputs *in, const char **ecode, char *msg, size_t msg_size)
{
    int max = (int)tm_limit_get(TM_LIMIT_MULTIPART_PARTS), n = 0;
    mp_part *parts = malloc(((size_t)max + 1) * sizeof *parts);
    if (!parts) {
        *ecode = "out_of_memory";
        snprintf(msg, msg_size, "out of memory");
        return 503;
    }
    int code = 0;
    *ecode = "invalid_multipart";
    if (mp_parse(body, len, boundary, parts, max + 1, &n)) {
        snprintf(msg, msg_size, "%s", tm_last_error());
        code = 400;
    } else if (n > max) {
        *ecode = "too_large";
        snprintf(msg, msg_size, "multipart: more than %d parts (limit %s)", max,
                 tm_limit_hint(TM_LIMIT_MULTIPART_PARTS));
        code = 413;
    } else {
        code = parse_parts(srv, parts, n, in, ecode, msg, msg_size);
    }
    free(parts);
    return code;
}

/* --------------------------------------------------------- endpoints */

static void json_embedding(sbuf *b, const float *v, int64_t n)
{
    sb_put(b, "[", 1);
    for (int64_t i = 0; i < n; i++) {
        if (i) sb_put(b, ",", 1);
        sb_json_float(b, v[i]);
    }
    sb_put(b, "]", 1);
}

static void json_model(tm_server *srv, sbuf *b)
{
    const char *nm = tm_session_name(srv->s);
    sb_puts(b, "{\"model\":");
    sb_json_str(b, nm, strlen(nm));
}

static const char *mod_name(unsigned bit)
{
    return bit == TM_MODALITY_TEXT ? "text" : bit == TM_MODALITY_IMAGE ? "image" : "audio";
}

static enum MHD_Result answer_embed(tm_server *srv, struct MHD_Connection *c, req *r, job *j)
{
    sbuf b = {0};
    json_model(srv, &b);
    sb_printf(&b, ",\"dim\":%lld,\"embeddings\":{", (long long)srv->E);
    int first = 1;
    for (int64_t m = 0; m < srv->M; m++) {
        unsigned bit = tm_modality_from_name(tm_session_info(srv->s).modality[m]);
        if (!(tm_example_present(j->ex) & bit)) continue;
        sb_printf(&b, "%s\"%s\":", first ? "" : ",", mod_name(bit));
        json_embedding(&b, j->out + m * srv->E, srv->E);
        first = 0;
    }
    sb_puts(&b, "}}");
    return send_json(srv, c, r, 200, &b);
}

static enum MHD_Result answer_classify(tm_server *srv, struct MHD_Connection *c, req *r, job *j,
                                       int top_k)
{
    int64_t C = srv->C;
    int *order = malloc((size_t)C * sizeof *order);
    if (!order) return send_error(srv, c, r, 503, "out_of_memory", "out of memory");
    for (int64_t i = 0; i < C; i++)
        order[i] = (int)i;
    /* top-k by a partial selection sort (k is small) */
    int k = top_k < C ? top_k : (int)C;
    for (int a = 0; a < k; a++) {
        int best = a;
        for (int64_t bb = a + 1; bb < C; bb++)
            if (j->out[order[bb]] > j->out[order[best]]) best = (int)bb;
        int t = order[a];
        order[a] = order[best];
        order[best] = t;
    }
    sbuf b = {0};
    json_model(srv, &b);
    const char *lb = tm_session_class_name(srv->s, order[0]);
    sb_printf(&b, ",\"class\":%d,\"label\":", order[0]);
    if (lb)
        sb_json_str(&b, lb, strlen(lb));
    else
        sb_puts(&b, "null");
    sb_puts(&b, ",\"probs\":");
    json_embedding(&b, j->out, C);
    sb_puts(&b, ",\"top\":[");
    for (int a = 0; a < k; a++) {
        const char *nm = tm_session_class_name(srv->s, order[a]);
        sb_printf(&b, "%s{\"class\":%d,\"label\":", a ? "," : "", order[a]);
        if (nm)
            sb_json_str(&b, nm, strlen(nm));
        else
            sb_puts(&b, "null");
        sb_puts(&b, ",\"prob\":");
        sb_json_float(&b, j->out[order[a]]);
        sb_puts(&b, "}");
    }
    sb_puts(&b, "]");
    if (srv->p.cascade && j->stage >= 0) {
        const char *sn = tm_cascade_stage_name(srv->p.cascade, j->stage);
        sb_puts(&b, ",\"stage\":");
        sb_json_str(&b, sn ? sn : "full", strlen(sn ? sn : "full"));
    }
    sb_puts(&b, "}");
    free(order);
    return send_json(srv, c, r, 200, &b);
}

static enum MHD_Result answer_caption(tm_server *srv, struct MHD_Connection *c, req *r, job *j)
{
    sbuf b = {0};
    json_model(srv, &b);
    sb_puts(&b, ",\"caption\":");
    if (j->caption.text)
        sb_json_str(&b, j->caption.text, j->caption.text_len);
    else
        sb_puts(&b, "null");
    sb_puts(&b, ",\"ids\":[");
    for (int32_t i = 0; i < j->caption.n_ids; i++)
        sb_printf(&b, "%s%d", i ? "," : "", j->caption.ids[i]);
    sb_puts(&b, "],\"score\":");
    sb_json_float(&b, j->caption.score);
    sb_puts(&b, "}");
    return send_json(srv, c, r, 200, &b);
}

static enum MHD_Result answer_search(tm_server *srv, struct MHD_Connection *c, req *r, job *j,
                                     const inputs *in, unsigned qbit)
{
    int col = tm_session_column(srv->s, qbit);
    const float *q = j->out + (int64_t)col * srv->E;
    unsigned have = tm_index_modalities(srv->idx), targets;
    if (in->all_modalities)
        targets = have;
    else if (in->modality)
        targets = in->modality;
    else
        targets = (have & ~qbit) ? (have & ~qbit) : have;
    if (!(targets & have)) {
        char msg[160];
        snprintf(msg, sizeof msg, "the index holds no %s rows", mod_name(in->modality));
        return send_error(srv, c, r, 400, "invalid_input", msg);
    }
    int k = in->k ? in->k : srv->p.search_k;
    tm_search_hit *hits = malloc((size_t)k * sizeof *hits);
    int n = 0;
    if (!hits) return send_error(srv, c, r, 503, "out_of_memory", "out of memory");
    tm_status st = tm_index_search(srv->idx, q, targets, k, hits, &n);
    if (st) {
        free(hits);
        return send_status(srv, c, r, st, tm_last_error());
    }
    sbuf b = {0};
    json_model(srv, &b);
    sb_printf(&b, ",\"query_modality\":\"%s\",\"results\":[", mod_name(qbit));
    for (int i = 0; i < n; i++) {
        sb_printf(&b, "%s{\"rank\":%d,\"id\":", i ? "," : "", i + 1);
        const char *id = tm_index_item(srv->idx, hits[i].item, "id");
        sb_json_str(&b, id ? id : "", id ? strlen(id) : 0);
        sb_printf(&b, ",\"modality\":\"%s\",\"score\":", mod_name(hits[i].modality));
        sb_json_float(&b, hits[i].score);
        static const char *const keys[] = {"text", "image", "audio"};
        for (int f = 0; f < 3; f++) {
            const char *v = tm_index_item(srv->idx, hits[i].item, keys[f]);
            if (!v) continue;
            sb_printf(&b, ",\"%s\":", keys[f]);
            sb_json_str(&b, v, strlen(v));
        }
        sb_puts(&b, "}");
    }
    sb_puts(&b, "]}");
    free(hits);
    return send_json(srv, c, r, 200, &b);
}

static enum MHD_Result handle_post(tm_server *srv, struct MHD_Connection *c, req *r)
{
    char msg[768];
    const char *ecode = NULL;
    inputs in;
    memset(&in, 0, sizeof in);
    int code = 0;
    cJSON *root = NULL;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    char boundary[80];
    if (ct && !strncasecmp(ct, "multipart/", 10)) {
        if (!mp_boundary(ct, boundary, sizeof boundary)) {
            code = 400;
            ecode = "invalid_multipart";
            snprintf(msg, sizeof msg,
                     "Content-Type multipart/form-data needs a boundary= of "
                     "1 to 70 characters");
        } else {
            code = parse_multipart(srv, r->body.data ? r->body.data : "", r->body.len, boundary,
                                   &in, &ecode, msg, sizeof msg);
        }
    } else if (!ct || !strncasecmp(ct, "application/json", 16) ||
               !strncasecmp(ct, "text/plain", 10)) {
        if (tm_json_check_depth(r->body.data, r->body.len, "the body")) {
            code = 413;
            ecode = "too_large";
            snprintf(msg, sizeof msg, "%s", tm_last_error());
        } else if (!(root = cJSON_ParseWithLength(r->body.data ? r->body.data : "", r->body.len))) {
            code = 400;
            ecode = "invalid_json";
            snprintf(msg, sizeof msg, "the body is not valid JSON%s",
                     r->body.len ? "" : " (it is empty)");
        } else {
            code = parse_json(srv, root, &in, &ecode, msg, sizeof msg);
        }
    } else {
        code = 415;
        ecode = "unsupported_media_type";
        snprintf(msg, sizeof msg,
                 "Content-Type '%.100s' is not supported: send application/json "
                 "or multipart/form-data",
                 ct);
    }
    int kind = r->ep == EP_CLASSIFY  ? KIND_CLASSIFY
               : r->ep == EP_CAPTION ? KIND_CAPTION
                                     : KIND_EMBED;
    unsigned qbit = 0;
    if (!code && r->ep == EP_SEARCH) {
        int given = (in.text != NULL) + (in.image || in.image_ref) + (in.audio || in.audio_ref);
        if (given != 1) {
            code = 400;
            ecode = "invalid_input";
            snprintf(msg, sizeof msg,
                     "a search query is exactly one of text, image or audio "
                     "(%d given)",
                     given);
        } else {
            qbit = in.text                      ? TM_MODALITY_TEXT
                   : (in.image || in.image_ref) ? TM_MODALITY_IMAGE
                                                : TM_MODALITY_AUDIO;
        }
    }
    tm_example *ex = NULL;
    if (!code) {
        tm_session_input si = {in.text,
                               in.text_len,
                               in.image ? (const void *)in.image : (const void *)in.image_ref,
                               in.image_len,
                               in.audio ? (const void *)in.audio : (const void *)in.audio_ref,
                               in.audio_len};
        tm_status st = tm_session_prepare(srv->s, &si, &ex);
        if (st) {
            snprintf(msg, sizeof msg, "%s", tm_last_error());
            inputs_free(&in);
            cJSON_Delete(root);
            bat_preparing(&srv->bat, -1);
            r->preparing = 0;
            return send_status(srv, c, r, st, msg);
        }
    }
    inputs_free(&in);
    in.image = in.audio = NULL;
    in.text = NULL;
    cJSON_Delete(root);
    /* the body is no longer needed: free it before waiting */
    sb_free(&r->body);
    if (code) {
        bat_preparing(&srv->bat, -1);
        r->preparing = 0;
        return send_error(srv, c, r, code, ecode, msg);
    }
    job *j = job_new(kind, ex);
    if (!j) {
        tm_example_free(ex);
        bat_preparing(&srv->bat, -1);
        r->preparing = 0;
        return send_error(srv, c, r, 503, "out_of_memory", "out of memory");
    }
    r->preparing = 0; /* bat_run takes the count back */
    int rc = bat_run(&srv->bat, j, r->t0 + srv->p.timeout_ms / 1000.0);
    if (rc == 1) {
        job_free(j);
        return send_error_h(srv, c, r, 503, "overloaded",
                            "the server's queue is full; retry after a second",
                            MHD_HTTP_HEADER_RETRY_AFTER, "1");
    }
    if (rc == 3) {
        job_free(j);
        return send_error_h(srv, c, r, 503, "shutting_down", "the server is shutting down",
                            MHD_HTTP_HEADER_RETRY_AFTER, "1");
    }
    if (rc == 2) {
        snprintf(msg, sizeof msg, "no answer within the request timeout (%.0f ms)",
                 srv->p.timeout_ms);
        return send_error(srv, c, r, 504, "timeout", msg);
    }
    enum MHD_Result ret;
    if (j->status == TM_ERR_LIMIT)
        ret = send_error_h(srv, c, r, 503, "shutting_down", j->message, MHD_HTTP_HEADER_RETRY_AFTER,
                           "1");
    else if (j->status)
        ret = send_status(srv, c, r, j->status, j->message);
    else if (r->ep == EP_EMBED)
        ret = answer_embed(srv, c, r, j);
    else if (r->ep == EP_CLASSIFY)
        ret = answer_classify(srv, c, r, j, in.top_k ? in.top_k : srv->p.top_k);
    else if (r->ep == EP_CAPTION)
        ret = answer_caption(srv, c, r, j);
    else
        ret = answer_search(srv, c, r, j, &in, qbit);
    job_free(j);
    return ret;
}

static enum MHD_Result handle_get(tm_server *srv, struct MHD_Connection *c, req *r)
{
    if (r->ep == EP_METRICS) {
        sbuf b = {0};
        pthread_mutex_lock(&srv->lock);
        int inflight = srv->inflight;
        pthread_mutex_unlock(&srv->lock);
        met_render(&srv->met, &b, tm_session_name(srv->s), bat_depth(&srv->bat), srv->p.max_queue,
                   inflight, atomic_load(&srv->draining));
        if (b.failed || !b.data) {
            sb_free(&b);
            return send_error(srv, c, r, 503, "out_of_memory", "out of memory");
        }
        return send_body(srv, c, r, 200, b.data, b.len, "text/plain; version=0.0.4; charset=utf-8",
                         NULL, NULL);
    }
    sbuf b = {0};
    sb_puts(&b, "{\"status\":\"ok\",\"model\":");
    const char *nm = tm_session_name(srv->s);
    sb_json_str(&b, nm, strlen(nm));
    sb_printf(&b, ",\"queue_depth\":%d,\"endpoints\":[", bat_depth(&srv->bat));
    int first = 1;
    if (tm_session_can_embed(srv->s)) sb_puts(&b, "\"/v1/embed\""), first = 0;
    if (tm_session_can_classify(srv->s))
        sb_printf(&b, "%s\"/v1/classify\"", first ? "" : ","), first = 0;
    if (tm_session_can_caption(srv->s))
        sb_printf(&b, "%s\"/v1/caption\"", first ? "" : ","), first = 0;
    if (srv->idx) sb_printf(&b, "%s\"/v1/search\"", first ? "" : ",");
    sb_puts(&b, "]}");
    return send_json(srv, c, r, 200, &b);
}

/* ------------------------------------------------------- the handler */

static int route(const char *url)
{
    static const char *const paths[] = {"/v1/embed",  "/v1/classify", "/v1/caption",
                                        "/v1/search", "/healthz",     "/metrics"};
    for (int i = 0; i < 6; i++)
        if (!strcmp(url, paths[i])) return i;
    return EP_OTHER;
}

static int authorized(tm_server *srv, struct MHD_Connection *c)
{
    const char *key = srv->api_key;
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-API-Key");
    if (!given) {
        const char *auth =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        if (auth && !strncasecmp(auth, "Bearer ", 7)) {
            given = auth + 7;
            while (*given == ' ')
                given++;
        }
    }
    if (!given) return 0;
    /* constant time in the key's length */
    size_t kn = strlen(key), gn = strlen(given);
    unsigned diff = kn != gn;
    for (size_t i = 0; i < kn; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)(i < gn ? given[i] : 0);
    return diff == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    tm_server *srv = cls;
    req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->t0 = tm_time_s();
        r->ep = route(url);
        snprintf(r->method, sizeof r->method, "%s", method);
        pthread_mutex_lock(&srv->lock);
        srv->inflight++;
        pthread_mutex_unlock(&srv->lock);
        int v1 = r->ep <= EP_SEARCH;
        r->is_post = !strcmp(method, "POST");
        int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
        char msg[256];
        if (atomic_load(&srv->draining))
            return send_error_h(srv, c, r, 503, "shutting_down", "the server is shutting down",
                                MHD_HTTP_HEADER_RETRY_AFTER, "1");
        if (r->ep == EP_OTHER) {
            snprintf(msg, sizeof msg,
                     "no such endpoint '%.100s' (see GET /healthz for the "
                     "endpoints this server offers)",
                     url);
            return send_error(srv, c, r, 404, "not_found", msg);
        }
        if (v1 ? !r->is_post : !is_get) {
            snprintf(msg, sizeof msg, "%.100s needs %s, not %.16s", url, v1 ? "POST" : "GET",
                     method);
            return send_error_h(srv, c, r, 405, "method_not_allowed", msg, MHD_HTTP_HEADER_ALLOW,
                                v1 ? "POST" : "GET, HEAD");
        }
        if (v1 && srv->api_key && !authorized(srv, c))
            return send_error_h(srv, c, r, 401, "unauthorized",
                                "a valid API key is needed: send 'Authorization: Bearer KEY' or "
                                "'X-API-Key: KEY'",
                                MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || *end || n / 2 > srv->p.max_body_bytes) {
                r->too_large = 1;
                snprintf(msg, sizeof msg, "the body (%.24s bytes) is over the limit of %zu bytes",
                         cl, srv->p.max_body_bytes);
                return send_error(srv, c, r, 413, "too_large", msg);
            }
            /* up to twice the limit, the body is read and dropped before the
             * 413, so that clients which send it all before reading see it */
            if (n > srv->p.max_body_bytes) r->too_large = 1;
        }
        if (v1) {
            const char *what = r->ep == EP_CLASSIFY && !tm_session_can_classify(srv->s)
                                   ? "the model has no classifier (config \"classifier\")"
                               : r->ep == EP_EMBED && !tm_session_can_embed(srv->s)
                                   ? "the model has no contrastive heads (config \"contrastive\")"
                               : r->ep == EP_CAPTION && !tm_session_can_caption(srv->s)
                                   ? "the model has no caption decoder (config \"caption\")"
                               : r->ep == EP_SEARCH && !srv->idx
                                   ? "the server has no search index (start it with --index)"
                                   : NULL;
            if (what) {
                snprintf(msg, sizeof msg, "%s is not available: %s", url, what);
                return send_error(srv, c, r, 404, "not_available", msg);
            }
            bat_preparing(&srv->bat, 1);
            r->preparing = 1;
        }
        return MHD_YES;
    }
    if (r->replied) { /* answered early: drop whatever else arrives */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->too_large) {
            size_t total;
            if (!tm_add_size(r->body.len, *upload_size, &total) || total > srv->p.max_body_bytes) {
                r->too_large = 1;
                sb_free(&r->body);
            } else {
                sb_put(&r->body, upload, *upload_size);
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->too_large) {
        if (r->preparing) bat_preparing(&srv->bat, -1), r->preparing = 0;
        char msg[128];
        snprintf(msg, sizeof msg, "the body is over the limit of %zu bytes", srv->p.max_body_bytes);
        return send_error(srv, c, r, 413, "too_large", msg);
    }
    if (r->body.failed) {
        if (r->preparing) bat_preparing(&srv->bat, -1), r->preparing = 0;
        return send_error(srv, c, r, 503, "out_of_memory", "out of memory reading the body");
    }
    if (r->is_post) return handle_post(srv, c, r);
    return handle_get(srv, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)c;
    (void)toe;
    tm_server *srv = cls;
    req *r = *con_cls;
    if (!r) return;
    if (r->preparing) bat_preparing(&srv->bat, -1);
    sb_free(&r->body);
    free(r);
    *con_cls = NULL;
    pthread_mutex_lock(&srv->lock);
    srv->inflight--;
    pthread_mutex_unlock(&srv->lock);
}

/* ----------------------------------------------------------- lifetime */

tm_status tm_server_start(tm_server **out, tm_session *s, const tm_index *idx,
                          const tm_server_params *params)
{
    if (!out) return tm_fail(TM_ERR_INVALID, "server: NULL out");
    *out = NULL;
    if (!s) return tm_fail(TM_ERR_INVALID, "server: NULL session");
    tm_server_params p = params ? *params : tm_server_default_params();
    int sb = tm_session_get_params(s).max_batch;
    if (!p.max_batch) p.max_batch = sb;
    if (p.max_batch < 1 || p.max_batch > 1024)
        return tm_fail(TM_ERR_INVALID, "server: max_batch %d outside 1..1024", p.max_batch);
    if (!(p.max_wait_ms >= 0 && p.max_wait_ms <= 10000))
        return tm_fail(TM_ERR_INVALID, "server: max_wait_ms outside 0..10000");
    if (p.max_queue < 1 || p.max_queue > 1000000)
        return tm_fail(TM_ERR_INVALID, "server: max_queue %d outside 1..1000000", p.max_queue);
    if (p.max_body_bytes < 64 || p.max_body_bytes > ((size_t)1 << 32))
        return tm_fail(TM_ERR_INVALID, "server: max_body_bytes outside 64 B..4 GiB");
    if (!(p.timeout_ms >= 1 && p.timeout_ms <= 3.6e6))
        return tm_fail(TM_ERR_INVALID, "server: timeout_ms outside 1..3600000");
    if (p.max_connections < 1 || p.max_connections > 100000)
        return tm_fail(TM_ERR_INVALID, "server: max_connections outside 1..100000");
    if (p.connection_timeout_s < 0) p.connection_timeout_s = 0;
    if (p.port < 0 || p.port > 65535)
        return tm_fail(TM_ERR_INVALID, "server: port %d outside 0..65535", p.port);
    if (p.top_k < 1) p.top_k = 5;
    if (p.max_search_k < 1) p.max_search_k = 1000;
    if (p.search_k < 1 || p.search_k > p.max_search_k)
        p.search_k = p.max_search_k < 10 ? p.max_search_k : 10;
    if (p.api_key && !p.api_key[0]) return tm_fail(TM_ERR_INVALID, "server: the API key is empty");
    if (idx) {
        tm_status st = tm_index_check(idx, s);
        if (st) return st;
    }
    const char *host = p.host && p.host[0] ? p.host : "127.0.0.1";
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    int v6 = 0;
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)p.port);
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        v6 = 1;
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)p.port);
    } else {
        return tm_fail(TM_ERR_INVALID,
                       "server: host '%s' is not a numeric IPv4 or IPv6 address "
                       "(e.g. 127.0.0.1, 0.0.0.0, ::1)",
                       host);
    }
    tm_server *srv = calloc(1, sizeof *srv);
    if (!srv) return tm_fail(TM_ERR_NOMEM, "server: out of memory");
    srv->s = s;
    srv->idx = idx;
    srv->p = p;
    tm_model_info info = tm_session_info(s);
    srv->C = info.num_classes;
    srv->M = info.n_modalities;
    srv->E = info.embed_dim;
    pthread_mutex_init(&srv->lock, NULL);
    met_init(&srv->met);
    if ((p.api_key && !(srv->api_key = strdup(p.api_key))) || !(srv->host = strdup(host))) {
        tm_server_free(srv);
        return tm_fail(TM_ERR_NOMEM, "server: out of memory");
    }
    srv->p.api_key = srv->api_key;
    srv->p.host = srv->host;
    srv->bat.cascade = p.cascade; /* bat_start keeps it */
    tm_status st = bat_start(&srv->bat, s, &srv->met, p.max_batch, p.max_wait_ms, p.max_queue);
    if (st) {
        pthread_mutex_destroy(&srv->lock);
        met_destroy(&srv->met);
        free(srv->api_key);
        free(srv->host);
        free(srv);
        return st;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    errno = 0;
    srv->d = MHD_start_daemon(
        flags, (uint16_t)p.port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER,
        on_mhd_log, srv, MHD_OPTION_SOCK_ADDR, v6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a4,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)p.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)p.connection_timeout_s, MHD_OPTION_END);
    if (!srv->d) {
        int e = errno;
        srv->shut = 1;
        tm_server_free(srv);
        return tm_fail(TM_ERR_IO, "server: cannot listen on %s port %d%s%s", host, p.port,
                       e ? ": " : "", e ? strerror(e) : "");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di ? di->port : p.port;
    *out = srv;
    return TM_OK;
}

int tm_server_port(const tm_server *srv)
{
    return srv ? srv->port : 0;
}

int tm_server_shutdown(tm_server *srv, double drain_s)
{
    if (!srv || srv->shut) return 0;
    atomic_store(&srv->draining, 1);
    MHD_socket fd = MHD_quiesce_daemon(srv->d);
    if (fd != MHD_INVALID_SOCKET) close(fd);
    double deadline = tm_time_s() + (drain_s > 0 ? drain_s : 0);
    int left;
    for (;;) {
        pthread_mutex_lock(&srv->lock);
        left = srv->inflight;
        pthread_mutex_unlock(&srv->lock);
        if (!left || tm_time_s() >= deadline) break;
        usleep(2000);
    }
    bat_stop(&srv->bat, 1);
    MHD_stop_daemon(srv->d);
    srv->d = NULL;
    srv->shut = 1;
    return left;
}

void tm_server_free(tm_server *srv)
{
    if (!srv) return;
    if (!srv->shut) tm_server_shutdown(srv, 0);
    if (srv->d) MHD_stop_daemon(srv->d);
    bat_destroy(&srv->bat);
    met_destroy(&srv->met);
    pthread_mutex_destroy(&srv->lock);
    free(srv->api_key);
    free(srv->host);
    free(srv);
}

char *tm_server_metrics(tm_server *srv)
{
    if (!srv) return NULL;
    sbuf b = {0};
    pthread_mutex_lock(&srv->lock);
    int inflight = srv->inflight;
    pthread_mutex_unlock(&srv->lock);
    met_render(&srv->met, &b, tm_session_name(srv->s), bat_depth(&srv->bat), srv->p.max_queue,
               inflight, atomic_load(&srv->draining));
    if (b.failed || !b.data) {
        sb_free(&b);
        return NULL;
    }
    char *out = tm_alloc(b.len + 1);
    if (out) memcpy(out, b.data, b.len + 1);
    sb_free(&b);
    return out;
}
