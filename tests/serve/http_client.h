/* A small HTTP/1.1 client over loopback for the server's tests and its
 * load test (bench/bench_serve.c): keep-alive connections, requests with
 * Content-Length bodies, responses with Content-Length or read to the end,
 * every wait bounded by a timeout. Static functions only: include it in
 * one .c file (they are static inline). */
#ifndef TM_HTTP_CLIENT_H
#define TM_HTTP_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int status; /* 0 when no response came */
    char *head; /* the status line and headers, NUL-terminated */
    char *body; /* NUL-terminated */
    size_t body_len;
    int closed; /* the server closed the connection after it */
} hc_response;

static inline double hc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A connected socket to 127.0.0.1:port, or -1. */
static inline int hc_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Sends all n bytes; 0 on success. */
static inline int hc_send(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static inline void hc_response_free(hc_response *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Reads one response (until timeout_s). 0 on success. */
static inline int hc_read_response(int fd, hc_response *r, double timeout_s)
{
    memset(r, 0, sizeof *r);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf) return -1;
    double deadline = hc_now() + timeout_s;
    size_t head_end = 0, need = (size_t)-1;
    int eof = 0;
    for (;;) {
        if (!head_end) {
            buf[len] = 0;
            char *e = strstr(buf, "\r\n\r\n");
            if (e) {
                head_end = (size_t)(e - buf) + 4;
                const char *cl = strcasestr(buf, "\r\ncontent-length:");
                if (cl && cl < e) need = head_end + strtoull(cl + 17, NULL, 10);
            }
        }
        if (head_end && len >= need) break;
        if (eof) break;
        double left = deadline - hc_now();
        if (left <= 0) break;
        struct pollfd p = {fd, POLLIN, 0};
        int pr = poll(&p, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) break;
        if (len == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) break;
            buf = nb;
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            eof = 1;
            continue;
        }
        len += (size_t)n;
    }
    buf[len] = 0;
    if (!head_end || (need != (size_t)-1 && len < need)) {
        free(buf);
        r->closed = eof;
        return -1;
    }
    if (need == (size_t)-1) need = len; /* no length: the body ran to the end */
    r->head = malloc(head_end + 1);
    r->body_len = need - head_end;
    r->body = malloc(r->body_len + 1);
    if (!r->head || !r->body) {
        free(buf);
        hc_response_free(r);
        return -1;
    }
    memcpy(r->head, buf, head_end);
    r->head[head_end] = 0;
    memcpy(r->body, buf + head_end, r->body_len);
    r->body[r->body_len] = 0;
    free(buf);
    sscanf(r->head, "HTTP/1.%*d %d", &r->status);
    const char *conn = strcasestr(r->head, "\r\nconnection:");
    r->closed = eof || (conn && !strncasecmp(conn + 13 + strspn(conn + 13, " "), "close", 5));
    return 0;
}

/* One request on fd: method, path, extra header lines (each ending in
 * \r\n; may be NULL) and a body (may be NULL). 0 when a response came. */
static inline int hc_request(int fd, const char *method, const char *path, const char *headers,
                             const void *body, size_t len, hc_response *r, double timeout_s)
{
    char head[2048];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: %zu\r\n\r\n", method,
                     path, headers ? headers : "", len);
    if (n < 0 || (size_t)n >= sizeof head) return -1;
    if (hc_send(fd, head, (size_t)n)) {
        memset(r, 0, sizeof *r);
        return -1;
    }
    /* a server may answer early (401, 413) and close: read even if this fails */
    int sent = len ? hc_send(fd, body, len) : 0;
    int rc = hc_read_response(fd, r, timeout_s);
    return rc ? rc : (sent && !r->status ? -1 : 0);
}

/* A header's value in a response head (copied into out), 0 if absent. */
static inline int hc_header(const hc_response *r, const char *name, char *out, size_t n)
{
    char key[128];
    snprintf(key, sizeof key, "\r\n%s:", name);
    const char *h = r->head ? strcasestr(r->head, key) : NULL;
    if (!h) return 0;
    h += strlen(key);
    while (*h == ' ')
        h++;
    size_t k = strcspn(h, "\r\n");
    if (k >= n) k = n - 1;
    memcpy(out, h, k);
    out[k] = 0;
    return 1;
}

/* Standard base64 of n bytes (malloc'ed, NUL-terminated). */
static inline char *hc_base64(const void *data, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *o++ = tab[v >> 18 & 63];
        *o++ = tab[v >> 12 & 63];
        *o++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *o = 0;
    return out;
}

#endif
