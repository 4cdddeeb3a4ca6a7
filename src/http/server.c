/*
 * The HTTP engine on libuv. See server.h for the contract.
 *
 * A connection is in one state at a time, and in the timeout list of that
 * state; every list holds connections in the order they entered it, all
 * with the same timeout, so a once-a-second sweep only looks at the heads:
 *
 *   HEAD   waiting for (the rest of) a request head  timeouts.header, 408
 *   BODY   reading a request body                    timeouts.body, 408
 *   BUSY   a handler is working                      none
 *   IDLE   keep-alive, nothing buffered              timeouts.keepalive
 *   SEND   the client does not read our output       timeouts.send
 *   LINGER closing: our side shut, draining input    2 s
 *
 * Output is double-buffered: `out` collects responses (pipelined ones
 * together) while `inflight` is being written; one write carries what is
 * ready. Reading continues into free space of the read buffer while a
 * handler works or output drains, and stops when it is full.
 *
 * Streaming routes: the handler runs in BUSY as soon as the head is in;
 * body bytes stay in the read buffer (grown to STREAM_RBUF) until it asks
 * for them, and are handed to it from run_requests, so that every call
 * into the handler happens from process() and the connection's state is
 * settled after it. Pieces of a streamed response written outside
 * process() are flushed by a check handle at the end of the loop's
 * iteration, together.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/list.h"
#include "core/metrics.h"
#include "http/accesslog.h"
#include "http/reqid.h"

#define RBUF_SIZE 8192
#define OBUF_SIZE 8192
#define POOL_MAX 64
#define LINGER_MS 2000
#define DRAIN_IDLE_GRACE_MS 1000
#define OUT_HIGH_WATER (256 * 1024)
#define STREAM_RBUF (64 * 1024)

enum conn_state { ST_HEAD, ST_BODY, ST_BUSY, ST_IDLE, ST_SEND, ST_LINGER, ST_COUNT };

struct obuf {
    uv_write_t req;
    struct http_conn *conn;
    size_t len, cap, sent;
    char data[];
};

struct file_send {
    uv_poll_t poll;
    struct http_conn *conn;
    int fd, sock;
    uint64_t offset, left;
    unsigned polling : 1;
};

struct http_conn {
    uv_tcp_t tcp;
    struct http_server *srv;
    struct list_node link;   /* in srv->lists[state] */
    uint64_t since;          /* when it entered that list (loop ms) */
    char *buf;
    uint32_t cap, len;       /* read buffer */
    uint32_t start;          /* first byte of the current request */
    uint32_t seen;           /* bytes of the head already found incomplete */
    struct http_exchange *x;
    struct obuf *out, *inflight;
    struct file_send *file;
    uint8_t state;
    uint8_t peer_family;     /* 0: not looked up; AF_INET, AF_INET6; 0xff: unknown */
    uint8_t peer[16];        /* the client's address, for the access log */
    unsigned reading : 1;
    unsigned closing : 1;    /* close once the output is written */
    unsigned closed : 1;     /* handle closing */
    unsigned in_process : 1;
    unsigned got_bytes : 1;  /* any byte of the current head arrived */
    unsigned tunnel : 1;     /* taken over by a handler (http_upgrade) */
    unsigned peer_eof : 1;   /* the client half-closed mid-body */
    unsigned flush_pending : 1;
    struct list_node flush_link; /* in srv->flushq */
};

struct http_server {
    uv_loop_t *loop;
    const struct cfg *cfg;
    struct router *router;
    struct metrics_slot *slot;
    struct metrics_slot local_slot;
    struct http_limits limits;
    uv_tcp_t listener;
    uv_timer_t sweep;
    uv_check_t flusher;      /* writes streamed pieces at the end of an iteration */
    struct list_node flushq;
    uint64_t max_body;       /* limits.max_body; the parser's own is unlimited */
    struct list_node lists[ST_COUNT];
    size_t nconns;
    uint64_t internal_errors; /* 500 answers: faults of this worker's own */
    /* pools of free buffers and exchanges */
    char *rfree[POOL_MAX];
    struct obuf *ofree[POOL_MAX];
    struct http_exchange *xfree[POOL_MAX];
    int nrfree, nofree, nxfree;
    size_t xsize;
    int released;            /* something was freed since the last trim */
    /* Date header, refreshed at most once a second */
    char date[40];
    time_t date_sec;
    /* drain */
    unsigned listening : 1;
    unsigned draining : 1;
    unsigned closing : 1;
    http_drained_fn drained;
    void *drained_arg;
    int open_handles;
};

static void process(struct http_conn *c);
static void flush(struct http_conn *c);
static void stream_dispatch(struct http_conn *c);
static void notify_drain(struct http_conn *c);
static size_t queued(const struct http_conn *c);
static int has_body(const struct http_request *req);
static void flusher_cb(uv_check_t *h);
static void exchange_done(struct http_exchange *x);
static void stop_reading(struct http_conn *c);
static void conn_close(struct http_conn *c);
static void start_file(struct http_conn *c);

/* --- small helpers ---------------------------------------------------- */

static uint64_t now_ms(const struct http_server *srv)
{
    return uv_now(srv->loop);
}

static void set_state(struct http_conn *c, enum conn_state st)
{
    list_unlink(&c->link);
    c->state = (uint8_t)st;
    c->since = now_ms(c->srv);
    list_append(&c->srv->lists[st], &c->link);
}

/* The Date string is formatted once per second of wall-clock time; time()
 * is a vDSO read, far cheaper than formatting. */
static void refresh_date(struct http_server *srv)
{
    time_t t = time(NULL);
    if (t == srv->date_sec)
        return;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(srv->date, sizeof(srv->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    srv->date_sec = t;
}

const char *http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* --- pools ------------------------------------------------------------- */

static char *rbuf_get(struct http_server *srv)
{
    return srv->nrfree ? srv->rfree[--srv->nrfree] : malloc(RBUF_SIZE);
}

static void rbuf_put(struct http_server *srv, char *b, uint32_t cap)
{
    if (cap == RBUF_SIZE && srv->nrfree < POOL_MAX) {
        srv->rfree[srv->nrfree++] = b;
    } else {
        free(b);
        srv->released = 1;
    }
}

static struct obuf *obuf_get(struct http_server *srv, struct http_conn *c)
{
    struct obuf *o = srv->nofree ? srv->ofree[--srv->nofree] : malloc(sizeof(*o) + OBUF_SIZE);
    if (!o)
        return NULL;
    o->conn = c;
    o->len = o->sent = 0;
    o->cap = OBUF_SIZE;
    return o;
}

static void obuf_put(struct http_server *srv, struct obuf *o)
{
    if (o->cap == OBUF_SIZE && srv->nofree < POOL_MAX) {
        srv->ofree[srv->nofree++] = o;
    } else {
        free(o);
        srv->released = 1;
    }
}

static struct http_exchange *exchange_get(struct http_server *srv)
{
    struct http_exchange *x = srv->nxfree ? srv->xfree[--srv->nxfree] : malloc(srv->xsize);
    if (x) {
        memset(x, 0, sizeof(*x));
        x->req.headers = x->headers;
        x->req.headers_cap = (size_t)srv->cfg->limits.max_headers;
    }
    return x;
}

static void exchange_put(struct http_server *srv, struct http_exchange *x)
{
    free(x->body_store);
    if (srv->nxfree < POOL_MAX) {
        srv->xfree[srv->nxfree++] = x;
    } else {
        free(x);
        srv->released = 1;
    }
}

/* Output space: makes room for n more bytes in c->out; NULL when memory
 * runs out (the connection is then closed by the caller's flush). */
static char *out_reserve(struct http_conn *c, size_t n)
{
    struct http_server *srv = c->srv;
    if (!c->out && !(c->out = obuf_get(srv, c)))
        return NULL;
    struct obuf *o = c->out;
    if (o->len + n > o->cap) {
        size_t cap = o->cap * 2;
        while (cap < o->len + n)
            cap *= 2;
        struct obuf *bigger = realloc(o, sizeof(*o) + cap);
        if (!bigger)
            return NULL;
        bigger->cap = cap;
        c->out = o = bigger;
    }
    return o->data + o->len;
}

static void out_append(struct http_conn *c, const void *p, size_t n)
{
    if (n == 0)
        return;
    char *dst = out_reserve(c, n);
    if (!dst) {
        c->closing = 1;
        return;
    }
    memcpy(dst, p, n);
    c->out->len += n;
    if (c->x)
        c->x->bytes_out += n;
}

#define OUT_LIT(c, s) out_append((c), (s), sizeof(s) - 1)

static void out_str(struct http_conn *c, const char *s)
{
    out_append(c, s, strlen(s));
}

static void out_u64(struct http_conn *c, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_append(c, tmp + sizeof(tmp) - n, (size_t)n);
}

/* --- responses --------------------------------------------------------- */

void http_begin(struct http_exchange *x, int status)
{
    struct http_conn *c = x->conn;
    x->status = status;
    x->started = 1;
    if (!c)
        return;
    struct http_server *srv = c->srv;
    refresh_date(srv);
    if (srv->draining || !x->req.keep_alive || srv->cfg->timeouts.keepalive_ms == 0)
        x->close = 1;
    OUT_LIT(c, "HTTP/1.1 ");
    out_u64(c, (uint64_t)status);
    OUT_LIT(c, " ");
    out_str(c, http_status_text(status));
    OUT_LIT(c, "\r\nServer: cohort\r\nDate: ");
    out_append(c, srv->date, 29);
    size_t idlen;
    const char *id = http_request_id(x, &idlen);
    OUT_LIT(c, "\r\nX-Request-Id: ");
    out_append(c, id, idlen);
    OUT_LIT(c, "\r\n");
}

/* "name: value\r\n" in one piece of the output buffer. */
static void header_out(struct http_exchange *x, const char *name, size_t name_len, const char *value,
                       size_t value_len)
{
    struct http_conn *c = x->conn;
    if (!c)
        return;
    char *dst = out_reserve(c, name_len + value_len + 4);
    if (!dst) {
        c->closing = 1;
        return;
    }
    memcpy(dst, name, name_len);
    dst[name_len] = ':';
    dst[name_len + 1] = ' ';
    memcpy(dst + name_len + 2, value, value_len);
    dst[name_len + 2 + value_len] = '\r';
    dst[name_len + 3 + value_len] = '\n';
    c->out->len += name_len + value_len + 4;
    x->bytes_out += name_len + value_len + 4;
}

void http_header(struct http_exchange *x, const char *name, const char *value, size_t value_len)
{
    if (x->tap)
        x->tap(x, HTTP_TAP_HEADER, name, value, value_len);
    header_out(x, name, strlen(name), value, value_len);
}

void http_header_n(struct http_exchange *x, const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (x->tap) {
        char n[256];
        snprintf(n, sizeof(n), "%.*s", (int)name_len, name);
        x->tap(x, HTTP_TAP_HEADER, n, value, value_len);
    }
    header_out(x, name, name_len, value, value_len);
}

/* Connection handling fields and the blank line that ends the head. */
static void end_head(struct http_exchange *x)
{
    struct http_conn *c = x->conn;
    if (x->close)
        OUT_LIT(c, "Connection: close\r\n\r\n");
    else if (x->req.minor_version == 0)
        OUT_LIT(c, "Connection: keep-alive\r\n\r\n");
    else
        OUT_LIT(c, "\r\n");
}

void http_finish(struct http_exchange *x, const char *content_type, const void *body, size_t len)
{
    struct http_conn *c = x->conn;
    if (x->tap)
        x->tap(x, HTTP_TAP_BODY, content_type, body, len);
    if (c) {
        if (content_type) {
            OUT_LIT(c, "Content-Type: ");
            out_str(c, content_type);
            OUT_LIT(c, "\r\n");
        }
        /* 1xx, 204 and 304 carry no Content-Length of a body */
        if (x->status != 204 && x->status != 304) {
            OUT_LIT(c, "Content-Length: ");
            out_u64(c, len);
            OUT_LIT(c, "\r\n");
        }
        end_head(x);
        if (!x->head_only && x->status != 204 && x->status != 304)
            out_append(c, body, len);
    }
    exchange_done(x);
}

void http_respond(struct http_exchange *x, int status, const char *content_type, const void *body, size_t len)
{
    http_begin(x, status);
    http_finish(x, content_type, body, len);
}

/* Escapes a message into a JSON string body: {"error": "..."}. */
static size_t json_error_body(const char *msg, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "{\"error\": \"");
    for (const unsigned char *p = (const unsigned char *)msg; *p && n + 8 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)*p;
        } else if (*p < 0x20) {
            n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", *p);
        } else {
            buf[n++] = (char)*p;
        }
    }
    n += (size_t)snprintf(buf + n, cap - n, "\"}\n");
    return n < cap ? n : cap - 1;
}

void http_error(struct http_exchange *x, int status, const char *msg)
{
    char body[512];
    size_t n = json_error_body(msg, body, sizeof(body));
    http_begin(x, status);
    if (status == 405 && x->conn) {
        char allow[128];
        size_t an = router_allow_string(x->match.allow, allow, sizeof(allow));
        http_header(x, "Allow", allow, an);
    }
    http_finish(x, "application/json", body, n);
}

void http_begin_chunks(struct http_exchange *x, const char *content_type)
{
    struct http_conn *c = x->conn;
    if (x->tap)
        x->tap(x, HTTP_TAP_BODY, content_type, NULL, 0);
    x->chunking = 1;
    if (!c)
        return;
    if (content_type) {
        OUT_LIT(c, "Content-Type: ");
        out_str(c, content_type);
        OUT_LIT(c, "\r\n");
    }
    OUT_LIT(c, "Transfer-Encoding: chunked\r\n");
    end_head(x);
    flush(c);
}

void http_chunk(struct http_exchange *x, const void *data, size_t len)
{
    struct http_conn *c = x->conn;
    if (!c || len == 0 || x->head_only)
        return;
    char hex[20];
    int n = snprintf(hex, sizeof(hex), "%zx\r\n", len);
    out_append(c, hex, (size_t)n);
    out_append(c, data, len);
    OUT_LIT(c, "\r\n");
    if (!c->in_process)
        flush(c);
}

void http_end_chunks(struct http_exchange *x)
{
    if (x->conn && !x->head_only)
        OUT_LIT(x->conn, "0\r\n\r\n");
    exchange_done(x);
}

void http_finish_file(struct http_exchange *x, const char *content_type, int fd, uint64_t offset, uint64_t len)
{
    struct http_conn *c = x->conn;
    if (!c || x->head_only || len == 0) {
        close(fd);
        http_finish(x, content_type, NULL, len);
        return;
    }
    struct file_send *f = calloc(1, sizeof(*f));
    if (!f) {
        close(fd);
        c->closing = 1;
        http_finish(x, content_type, NULL, 0);
        return;
    }
    f->conn = c;
    f->fd = fd;
    f->sock = -1;
    f->offset = offset;
    f->left = len;
    c->file = f;
    /* the head says `len`; the bytes follow from the file */
    x->head_only = 1;
    http_finish(x, content_type, NULL, len);
}

/* --- streaming ---------------------------------------------------------- */

int http_req_has_body(const struct http_exchange *x)
{
    return has_body(&x->req);
}

void http_body_start(struct http_exchange *x, http_body_fn fn)
{
    struct http_conn *c = x->conn;
    x->on_body = fn;
    x->body_paused = 0;
    if (!c)
        return;
    if (x->req.expect_continue && !x->continue_sent && has_body(&x->req) &&
        c->len == c->start + x->head_len) {
        x->continue_sent = 1;
        OUT_LIT(c, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    if (!c->in_process)
        process(c);
}

void http_body_pause(struct http_exchange *x)
{
    x->body_paused = 1;
}

void http_body_resume(struct http_exchange *x)
{
    struct http_conn *c = x->conn;
    x->body_paused = 0;
    if (c && !c->in_process)
        process(c);
}

void http_stream_head(struct http_exchange *x, int64_t length)
{
    struct http_conn *c = x->conn;
    if (x->tap)
        x->tap(x, HTTP_TAP_BODY, NULL, NULL, 0); /* not one the response cache keeps */
    if (!c)
        return;
    int bodiless = x->status < 200 || x->status == 204 || x->status == 304;
    if (length >= 0 && !bodiless) {
        OUT_LIT(c, "Content-Length: ");
        out_u64(c, (uint64_t)length);
        OUT_LIT(c, "\r\n");
    } else if (length < 0 && !bodiless && !x->head_only) {
        if (x->req.minor_version >= 1) {
            OUT_LIT(c, "Transfer-Encoding: chunked\r\n");
            x->chunking = 1;
        } else {
            x->close = 1; /* the end of the connection ends the body */
        }
    }
    end_head(x);
}

/* Output written outside process() leaves at the end of the iteration. */
static void defer_flush(struct http_conn *c)
{
    if (c->in_process || c->flush_pending || c->closed)
        return;
    c->flush_pending = 1;
    list_append(&c->srv->flushq, &c->flush_link);
}

size_t http_stream_write(struct http_exchange *x, const void *data, size_t len)
{
    struct http_conn *c = x->conn;
    if (!c)
        return 0;
    if (len && !x->head_only) {
        if (x->chunking) {
            char hex[20];
            int n = snprintf(hex, sizeof(hex), "%zx\r\n", len);
            out_append(c, hex, (size_t)n);
            out_append(c, data, len);
            OUT_LIT(c, "\r\n");
        } else {
            out_append(c, data, len);
        }
        defer_flush(c);
    }
    return queued(c);
}

void http_stream_end(struct http_exchange *x)
{
    if (x->conn && x->chunking && !x->head_only)
        OUT_LIT(x->conn, "0\r\n\r\n");
    exchange_done(x);
}

void http_on_drain(struct http_exchange *x, void (*fn)(struct http_exchange *x), size_t mark)
{
    x->on_drain = fn;
    x->drain_mark = mark;
    if (x->conn)
        notify_drain(x->conn);
}

size_t http_out_queued(const struct http_exchange *x)
{
    return x->conn ? queued(x->conn) : 0;
}

void http_abort(struct http_exchange *x)
{
    x->close = 1;
    x->on_drain = NULL;
    exchange_done(x);
}

uv_stream_t *http_upgrade(struct http_exchange *x, const char **rest, size_t *rest_len)
{
    struct http_conn *c = x->conn;
    if (!c)
        return NULL;
    OUT_LIT(c, "\r\n");
    stop_reading(c);
    flush(c);
    if (c->closed)
        return NULL;
    c->tunnel = 1;
    x->tunnel = 1;
    char *p = c->buf + c->start + x->head_len;
    *rest = p;
    *rest_len = c->len - (size_t)(p - c->buf);
    return (uv_stream_t *)&c->tcp;
}

void http_upgrade_end(struct http_exchange *x)
{
    x->close = 1;
    exchange_done(x);
}

const char *http_req_header(const struct http_exchange *x, const char *name, size_t *len)
{
    int i = http_find_header(&x->req, name, strlen(name), 0);
    if (i < 0)
        return NULL;
    if (len)
        *len = x->req.headers[i].value_len;
    return x->req.headers[i].value;
}

/* --- request ids and addresses ---------------------------------------- */

const char *http_request_id(struct http_exchange *x, size_t *len)
{
    if (!x->request_id_len) {
        size_t n = 0;
        const char *v = x->head_len ? http_req_header(x, "X-Request-Id", &n) : NULL;
        if (v && reqid_valid(v, n)) {
            memcpy(x->request_id, v, n);
            x->request_id_len = (uint8_t)n;
        } else {
            reqid_next(x->request_id);
            x->request_id_len = REQID_GEN_LEN;
        }
        x->request_id[x->request_id_len] = '\0';
    }
    *len = x->request_id_len;
    return x->request_id;
}

size_t http_peer_addr(struct http_exchange *x, char *buf, size_t len)
{
    struct http_conn *c = x->conn;
    if (!c || len < INET6_ADDRSTRLEN)
        return 0;
    if (!c->peer_family) {
        struct sockaddr_storage ss;
        int n = sizeof(ss);
        c->peer_family = 0xff;
        if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &n) == 0) {
            if (ss.ss_family == AF_INET) {
                memcpy(c->peer, &((struct sockaddr_in *)&ss)->sin_addr, 4);
                c->peer_family = AF_INET;
            } else if (ss.ss_family == AF_INET6) {
                memcpy(c->peer, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
                c->peer_family = AF_INET6;
            }
        }
    }
    if (c->peer_family == 0xff || !inet_ntop(c->peer_family, c->peer, buf, (socklen_t)len))
        return 0;
    return strlen(buf);
}

/* --- the request cycle ------------------------------------------------- */

enum stop { STOP_INPUT, STOP_BUSY, STOP_OUTPUT, STOP_CLOSING };

static void exchange_done(struct http_exchange *x)
{
    struct http_server *srv = x->srv;
    struct http_conn *c = x->conn;
    if (x->done)
        return;
    x->done = 1;
    /* counters and the access log: observability (app/stats.c, http/accesslog.c) */
    uint64_t us = x->start_ns ? (uv_hrtime() - x->start_ns) / 1000 : 0;
    metrics_request(srv->slot, x->match.route ? x->match.route->index + 1u : METRICS_ROUTE_NONE, x->status, us);
    if (accesslog_enabled && !x->zombie)
        accesslog_write(x, x->status, us);
    if (x->status == 500)
        srv->internal_errors++;
    metrics_add(srv->slot->inflight, (uint64_t)-1);
    if (x->zombie || !c) {
        exchange_put(srv, x);
        return;
    }
    if (x->tunnel) {
        c->x = NULL;
        exchange_put(srv, x);
        conn_close(c);
        return;
    }
    if (x->streaming && !x->body_done && has_body(&x->req))
        x->close = 1; /* the rest of the body is still on its way */
    c->start += x->head_len + x->raw_body;
    c->seen = 0;
    if (x->close)
        c->closing = 1;
    c->x = NULL;
    exchange_put(srv, x);
    if (!c->in_process)
        process(c);
}

static void dispatch(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    set_state(c, ST_BUSY);
    switch (x->match.status) {
    case 0:
        x->match.route->handler(x);
        return;
    case 404:
        http_error(x, 404, "not found");
        return;
    case 405:
        http_error(x, 405, "method not allowed");
        return;
    default:
        http_error(x, 501, "method not implemented");
        return;
    }
}

/* Moves the body bytes held in the read buffer into body_store, so the
 * buffer has room again. Returns 0, or -ENOMEM. */
static int spill_body(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    char *base = c->buf + c->start + x->head_len;
    size_t need = x->body_len + x->raw_body;
    if (need > x->body_cap) {
        size_t cap = x->req.chunked ? (x->body_cap ? x->body_cap * 2 : 65536) : (size_t)x->req.content_length;
        if (cap < need)
            cap = need;
        char *p = realloc(x->body_store, cap);
        if (!p)
            return -ENOMEM;
        x->body_store = p;
        x->body_cap = cap;
    }
    memcpy(x->body_store + x->body_len, base, x->raw_body);
    x->body_len += x->raw_body;
    size_t rest = c->len - (c->start + x->head_len + x->raw_body);
    memmove(base, base + x->raw_body, rest);
    c->len = (uint32_t)(base - c->buf + rest);
    x->raw_body = 0;
    return 0;
}

/* Takes what arrived of the body. 1 when complete, 0 when more is needed,
 * -1 when an error was answered. */
static int read_body(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    char *base = c->buf + c->start + x->head_len;
    char *p = base + x->raw_body;
    size_t avail = c->len - (size_t)(p - c->buf);
    int complete;
    if (x->req.chunked) {
        size_t n = avail;
        ssize_t r = http_chunked_decode(&x->dec, p, &n);
        if (r == HTTP_ERROR) {
            x->close = 1;
            http_error(x, x->dec.status, x->dec.status == 413 ? "request body too large" : "malformed chunked body");
            return -1;
        }
        complete = r >= 0;
        x->raw_body += (uint32_t)n;
        c->len = (uint32_t)(p + n - c->buf) + (complete ? (uint32_t)r : 0);
    } else {
        size_t take = avail < x->body_left ? avail : (size_t)x->body_left;
        x->raw_body += (uint32_t)take;
        x->body_left -= take;
        complete = x->body_left == 0;
    }
    if (complete) {
        if (x->body_store && spill_body(c) < 0) {
            conn_close(c);
            return -1;
        }
        x->body = x->body_store ? x->body_store : base;
        if (!x->body_store)
            x->body_len = x->raw_body;
        return 1;
    }
    if (c->len == c->cap && spill_body(c) < 0) {
        x->close = 1;
        http_error(x, 503, "out of memory");
        return -1;
    }
    return 0;
}

/* Grows or compacts the read buffer of a head that does not fit yet. */
static int make_room(struct http_conn *c)
{
    if (c->len < c->cap)
        return 0;
    if (c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->len - c->start);
        c->len -= c->start;
        c->start = 0;
        return 0;
    }
    size_t want = c->srv->limits.max_head + 1;
    if (c->cap >= want)
        return -ENOBUFS;
    size_t cap = (size_t)c->cap * 2 < want ? (size_t)c->cap * 2 : want;
    char *p = realloc(c->buf, cap);
    if (!p)
        return -ENOMEM;
    if (c->cap == RBUF_SIZE)
        c->srv->released = 1;
    c->buf = p;
    c->cap = (uint32_t)cap;
    return 0;
}

static int has_body(const struct http_request *req)
{
    return req->chunked || req->content_length > 0;
}

/* A streaming body gets a bigger read buffer, with the head at its start;
 * the view of the head is taken again in it. */
static void stream_buffer(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    struct http_server *srv = c->srv;
    char *p = c->cap < STREAM_RBUF ? malloc(STREAM_RBUF) : NULL;
    if (!p)
        return; /* the small buffer will do, more slowly */
    size_t n = c->len - c->start;
    memcpy(p, c->buf + c->start, n);
    rbuf_put(srv, c->buf, c->cap);
    c->buf = p;
    c->cap = STREAM_RBUF;
    c->len = (uint32_t)n;
    c->start = 0;
    http_parse_request(c->buf, n, 0, &srv->limits, &x->req);
    router_match(srv->router, x->req.method, x->req.path, x->req.path_len, &x->match);
}

/* A streaming route's handler runs now; its body waits in the buffer. */
static void stream_dispatch(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    x->streaming = 1;
    x->body_left = x->req.content_length > 0 ? (uint64_t)x->req.content_length : 0;
    x->dec.max_body = UINT64_MAX;
    if (has_body(&x->req))
        stream_buffer(c);
    set_state(c, ST_BUSY);
    x->match.route->handler(x);
}

/*
 * Hands what arrived of a streaming body to its handler. The piece given
 * counts as the exchange's raw_body during the call, so that an answer
 * from inside the callback moves past it; afterwards it is dropped from
 * the buffer. Returns 1 when the handler was called, 0 when waiting (for
 * input, or for the handler to ask).
 */
static int feed_body(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    if (!x->on_body || x->body_paused || x->body_done)
        return 0;
    char *p = c->buf ? c->buf + c->start + x->head_len : NULL;
    size_t avail = p ? c->len - (size_t)(p - c->buf) : 0, n = 0, rest = 0;
    int status = 0;
    if (!has_body(&x->req)) {
        status = 1;
    } else if (!avail) {
        if (!c->peer_eof)
            return 0;
        status = -499;
    } else if (x->req.chunked) {
        n = avail;
        ssize_t r = http_chunked_decode(&x->dec, p, &n);
        if (r == HTTP_ERROR) {
            n = 0;
            status = -(x->dec.status ? x->dec.status : 400);
        } else if (r >= 0) {
            rest = (size_t)r;
            status = 1;
        }
    } else {
        n = avail < x->body_left ? avail : (size_t)x->body_left;
        x->body_left -= n;
        rest = avail - n;
        status = x->body_left == 0;
    }
    x->body_in += avail - rest;
    if (status) {
        x->body_done = 1;
        if (status < 0)
            x->close = 1;
    }
    if (p) {
        c->len = (uint32_t)(p - c->buf + n + rest);
        x->raw_body = (uint32_t)n;
    }
    x->on_body(x, p, n, status);
    if (c->x == x && p) {
        memmove(p, p + n, rest);
        c->len -= (uint32_t)n;
        x->raw_body = 0;
    }
    return 1;
}

/* Parses the next request head. Returns the loop's next step: -1 to stop
 * for input, 1 to go on. */
static int parse_next(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    struct http_exchange *x = exchange_get(srv);
    if (!x) {
        conn_close(c);
        return -1;
    }
    x->conn = c;
    x->srv = srv;
    const char *head = c->buf + c->start;
    size_t avail = c->len - c->start;
    ssize_t r = http_parse_request(head, avail, c->seen, &srv->limits, &x->req);
    if (r == HTTP_INCOMPLETE) {
        exchange_put(srv, x);
        c->seen = (uint32_t)avail;
        if (c->state != ST_HEAD)
            set_state(c, ST_HEAD);
        c->got_bytes = 1;
        if (make_room(c) < 0)
            conn_close(c);
        return -1;
    }
    c->x = x;
    metrics_add(srv->slot->inflight, 1);
    x->start_ns = uv_hrtime();
    if (r == HTTP_ERROR) {
        x->close = 1;
        set_state(c, ST_BUSY);
        http_error(x, x->req.status, x->req.reason);
        return 1;
    }
    x->head_len = (uint32_t)r;
    x->head_only = x->req.method == HTTP_HEAD;
    router_match(srv->router, x->req.method, x->req.path, x->req.path_len, &x->match);
    if (x->match.status == 0 && (x->match.route->flags & ROUTE_STREAM)) {
        stream_dispatch(c);
        return 1;
    }
    if (x->req.content_length > 0 && (uint64_t)x->req.content_length > srv->max_body) {
        x->close = 1;
        set_state(c, ST_BUSY);
        http_error(x, 413, "request body too large");
        return 1;
    }
    if (!has_body(&x->req)) {
        dispatch(c);
        return 1;
    }
    x->body_left = x->req.content_length > 0 ? (uint64_t)x->req.content_length : 0;
    x->dec.max_body = srv->max_body;
    if (x->req.expect_continue && avail == (size_t)r) {
        if (x->match.status) {
            /* answering before the body: the rest of the stream is unknown */
            x->close = 1;
            dispatch(c);
            return 1;
        }
        OUT_LIT(c, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    set_state(c, ST_BODY);
    return 1;
}

/* Runs requests from the buffer until one waits for input, a handler,
 * output space, or the connection closes. */
static enum stop run_requests(struct http_conn *c)
{
    for (;;) {
        if (c->closed || c->closing)
            return STOP_CLOSING;
        if (c->x) {
            if (c->x->streaming) {
                if (feed_body(c))
                    continue;
                return STOP_BUSY;
            }
            if (c->state != ST_BODY)
                return STOP_BUSY;
            int r = read_body(c);
            if (r == 0)
                return STOP_INPUT;
            if (r > 0)
                dispatch(c);
            continue;
        }
        if (c->file || (c->out && c->out->len > OUT_HIGH_WATER))
            return STOP_OUTPUT;
        if (c->len == c->start)
            return STOP_INPUT;
        if (parse_next(c) < 0)
            return STOP_INPUT;
    }
}

static void release_buffer(struct http_conn *c)
{
    if (c->buf && c->len == c->start && !c->x) {
        rbuf_put(c->srv, c->buf, c->cap);
        c->buf = NULL;
        c->cap = c->len = c->start = c->seen = 0;
    }
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static void start_reading(struct http_conn *c)
{
    if (c->reading || c->closed || c->tunnel || c->peer_eof)
        return;
    if (c->buf && c->len == c->cap)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
        c->reading = 1;
}

static void stop_reading(struct http_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* Settles the connection's state after a round of work. */
static void settle(struct http_conn *c)
{
    if (c->closed || c->state == ST_LINGER)
        return;
    if (!c->x && !c->file) {
        if (c->inflight) {
            if (c->state != ST_SEND)
                set_state(c, ST_SEND);
        } else if (c->len == c->start) {
            release_buffer(c);
            if (c->state != ST_IDLE)
                set_state(c, ST_IDLE);
            c->got_bytes = 0;
        }
    }
    start_reading(c);
}

static void process(struct http_conn *c)
{
    if (c->in_process || c->closed)
        return;
    c->in_process = 1;
    for (;;) {
        enum stop why = run_requests(c);
        flush(c);
        if (c->closed)
            return;
        if (why != STOP_OUTPUT || c->file || (c->out && c->out->len > OUT_HIGH_WATER))
            break;
    }
    c->in_process = 0;
    settle(c);
}

/* --- reading ----------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct http_conn *c = h->data;
    (void)hint;
    if (!c->buf) {
        c->buf = rbuf_get(c->srv);
        c->cap = c->buf ? RBUF_SIZE : 0;
        c->len = c->start = c->seen = 0;
    }
    b->base = c->buf ? c->buf + c->len : NULL;
    b->len = c->buf ? c->cap - c->len : 0;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct http_conn *c = s->data;
    (void)b;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_ENOBUFS) {
            stop_reading(c);
            return;
        }
        if (nread == UV_EOF && c->x && c->state == ST_BUSY && !c->closing) {
            /* a half-closed client still gets the answer it waits for */
            stop_reading(c);
            c->x->close = 1;
            if (c->x->streaming && !c->x->body_done) {
                c->peer_eof = 1; /* the body's handler hears of it */
                process(c);
            }
            return;
        }
        conn_close(c);
        return;
    }
    metrics_add(c->srv->slot->bytes_in, (uint64_t)nread);
    if (c->state == ST_LINGER) {
        c->len = c->start; /* discard */
        return;
    }
    c->len += (uint32_t)nread;
    if (c->state == ST_IDLE)
        set_state(c, ST_HEAD);
    else if (c->state == ST_BODY)
        set_state(c, ST_BODY); /* the stall timer counts from the last byte */
    process(c);
    if (!c->closed && c->buf && c->len == c->cap)
        stop_reading(c);
}

/* --- writing ----------------------------------------------------------- */

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

/* Our side is done: send FIN, keep reading (and discarding) for a while so
 * that unread input does not turn the close into a reset that could destroy
 * the response in the client's buffers. */
static void begin_linger(struct http_conn *c)
{
    set_state(c, ST_LINGER);
    c->len = c->start;
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, shutdown_cb) < 0) {
        free(req);
        conn_close(c);
        return;
    }
    start_reading(c);
}

static void write_cb(uv_write_t *req, int status)
{
    struct obuf *o = req->data;
    struct http_conn *c = o->conn;
    struct http_server *srv = c->srv;
    if (status == 0)
        metrics_add(srv->slot->bytes_out, o->len - o->sent);
    c->inflight = NULL;
    obuf_put(srv, o);
    if (c->closed || c->tunnel) /* a tunnel's owner sees errors itself */
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->state == ST_SEND)
        set_state(c, ST_IDLE); /* settle() picks the right one */
    process(c);
    notify_drain(c);
}

static size_t queued(const struct http_conn *c)
{
    return (c->out ? c->out->len - c->out->sent : 0) + (c->inflight ? c->inflight->len - c->inflight->sent : 0);
}

/* A streaming handler waiting for the client to take its output. */
static void notify_drain(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    if (c->closed || !x || !x->on_drain || queued(c) > x->drain_mark)
        return;
    void (*fn)(struct http_exchange *) = x->on_drain;
    x->on_drain = NULL;
    fn(x);
}

static void flush(struct http_conn *c)
{
    if (c->closed || c->inflight || (c->file && c->file->polling))
        return;
    struct obuf *o = c->out;
    if (o && o->len > o->sent) {
        uv_buf_t b = uv_buf_init(o->data + o->sent, (unsigned)(o->len - o->sent));
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r == UV_EAGAIN)
            r = 0;
        if (r < 0) {
            conn_close(c);
            return;
        }
        metrics_add(c->srv->slot->bytes_out, (uint64_t)r);
        o->sent += (size_t)r;
        if (o->sent < o->len) {
            c->inflight = o;
            c->out = NULL;
            o->req.data = o;
            b = uv_buf_init(o->data + o->sent, (unsigned)(o->len - o->sent));
            if (uv_write(&o->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) < 0) {
                c->inflight = NULL;
                obuf_put(c->srv, o);
                conn_close(c);
            }
            return;
        }
    }
    if (o) {
        c->out = NULL;
        obuf_put(c->srv, o);
    }
    if (c->file) {
        start_file(c);
        return;
    }
    if (c->closing && !c->x && c->state != ST_LINGER)
        begin_linger(c);
    else if (c->x && c->x->on_drain)
        notify_drain(c);
}

/* --- files ------------------------------------------------------------- */

static void file_poll_closed(uv_handle_t *h)
{
    struct file_send *f = h->data;
    close(f->sock);
    free(f);
}

static void file_free(struct file_send *f)
{
    close(f->fd);
    if (f->polling || f->sock >= 0) {
        uv_poll_stop(&f->poll);
        uv_close((uv_handle_t *)&f->poll, file_poll_closed);
    } else {
        free(f);
    }
}

static void file_done(struct http_conn *c, int ok)
{
    struct file_send *f = c->file;
    c->file = NULL;
    file_free(f);
    if (!ok) {
        conn_close(c);
        return;
    }
    if (!c->in_process)
        process(c);
}

static void file_poll_cb(uv_poll_t *p, int status, int events)
{
    struct file_send *f = p->data;
    (void)events;
    if (status < 0) {
        file_done(f->conn, 0);
        return;
    }
    uv_poll_stop(p);
    f->polling = 0;
    start_file(f->conn);
}

/* Sends from the file while the socket takes it; waits for writability on
 * a duplicate of the socket's descriptor (libuv owns the original). A round
 * sends at most 1 MiB so one fast client does not starve the others. */
static void start_file(struct http_conn *c)
{
    struct file_send *f = c->file;
    int sock;
    if (uv_fileno((uv_handle_t *)&c->tcp, &sock) < 0) {
        file_done(c, 0);
        return;
    }
    uint64_t round = 0;
    while (f->left > 0 && round < (1u << 20)) {
        off_t off = (off_t)f->offset;
        size_t want = f->left < (1u << 20) ? (size_t)f->left : (1u << 20);
        ssize_t n = sendfile(sock, f->fd, &off, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) { /* error, or the file shrank under us */
            file_done(c, 0);
            return;
        }
        f->offset += (uint64_t)n;
        f->left -= (uint64_t)n;
        round += (uint64_t)n;
        metrics_add(c->srv->slot->bytes_out, (uint64_t)n);
    }
    if (f->left == 0) {
        file_done(c, 1);
        return;
    }
    if (f->sock < 0) {
        f->sock = dup(sock);
        if (f->sock < 0 || uv_poll_init(c->srv->loop, &f->poll, f->sock) < 0) {
            if (f->sock >= 0)
                close(f->sock);
            f->sock = -1;
            file_done(c, 0);
            return;
        }
        f->poll.data = f;
    }
    if (uv_poll_start(&f->poll, UV_WRITABLE, file_poll_cb) < 0) {
        file_done(c, 0);
        return;
    }
    f->polling = 1;
    if (c->state != ST_SEND && !c->x)
        set_state(c, ST_SEND);
}

/* --- connections ------------------------------------------------------- */

static void check_drained(struct http_server *srv)
{
    if (srv->draining && srv->nconns == 0 && srv->drained) {
        http_drained_fn fn = srv->drained;
        srv->drained = NULL;
        fn(srv, srv->drained_arg);
    }
}

static void conn_closed_cb(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    struct http_server *srv = c->srv;
    if (c->buf)
        rbuf_put(srv, c->buf, c->cap);
    if (c->out)
        obuf_put(srv, c->out);
    free(c);
    srv->nconns--;
    srv->released = 1;
    metrics_add(srv->slot->conns_open, (uint64_t)-1);
    check_drained(srv);
}

static void conn_close(struct http_conn *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    list_unlink(&c->link);
    list_unlink(&c->flush_link);
    c->flush_pending = 0;
    c->tcp.data = c; /* a tunnel's owner may have borrowed it */
    if (c->x && c->state == ST_BODY) {
        /* no handler has seen it yet: nobody else holds the exchange */
        metrics_add(c->srv->slot->inflight, (uint64_t)-1);
        exchange_put(c->srv, c->x);
        c->x = NULL;
    }
    if (c->x) {
        struct http_exchange *x = c->x;
        c->x = NULL;
        if (accesslog_enabled) /* now, while the request's bytes are there */
            accesslog_write(x, 499, x->start_ns ? (uv_hrtime() - x->start_ns) / 1000 : 0);
        x->zombie = 1;
        x->conn = NULL;
        if (x->on_abort)
            x->on_abort(x);
    }
    if (c->file) {
        file_free(c->file);
        c->file = NULL;
    }
    uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
}

/* Takes one connection from a listener, or from the IPC pipe the master
 * hands connections over (round_robin and least_loaded). */
/* Sets up a connection: uv_accept from `server` (a listener or an IPC
 * pipe), or, with fd >= 0, uv_tcp_open of a descriptor accepted here. */
static void conn_start(struct http_server *srv, uv_stream_t *server, int fd)
{
    struct http_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        if (fd >= 0)
            close(fd);
        return;
    }
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    c->srv = srv;
    list_init(&c->link);
    list_init(&c->flush_link);
    srv->nconns++;
    metrics_add(srv->slot->conns_open, 1);
    metrics_add(srv->slot->conns_total, 1);
    int r = fd >= 0 ? uv_tcp_open(&c->tcp, fd) : uv_accept(server, (uv_stream_t *)&c->tcp);
    if (r < 0) {
        if (fd >= 0)
            close(fd);
        c->closed = 1;
        uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    set_state(c, ST_HEAD);
    start_reading(c);
}

static void accept_from(struct http_server *srv, uv_stream_t *server)
{
    conn_start(srv, server, -1);
}

/* Connections the kernel already queued on our listener would be reset if
 * this were the socket's last descriptor: take them before closing it. */
static void accept_queued(struct http_server *srv)
{
    int fd;
    if (uv_fileno((uv_handle_t *)&srv->listener, &fd) < 0)
        return;
    for (int i = 0; i < 65536; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            break;
        conn_start(srv, NULL, cfd);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    /* status < 0: EMFILE and the like; libuv already shed the connection */
    if (status == 0)
        accept_from(server->data, server);
}

void http_server_adopt(struct http_server *srv, uv_stream_t *from)
{
    accept_from(srv, from);
}

/* --- timeouts ---------------------------------------------------------- */

static void time_out(struct http_conn *c)
{
    if (c->state == ST_HEAD && c->got_bytes) {
        struct http_exchange *x = exchange_get(c->srv);
        if (x) {
            x->conn = c;
            x->srv = c->srv;
            c->x = x;
            metrics_add(c->srv->slot->inflight, 1);
            x->close = 1;
            stop_reading(c);
            c->len = c->start;
            set_state(c, ST_BUSY);
            http_error(x, 408, "request head not received in time");
            return;
        }
    } else if (c->state == ST_BODY && c->x) {
        c->x->close = 1;
        stop_reading(c);
        set_state(c, ST_BUSY);
        http_error(c->x, 408, "request body not received in time");
        return;
    }
    conn_close(c);
}

static void sweep_list(struct http_server *srv, enum conn_state st, uint64_t timeout, uint64_t now)
{
    struct list_node *head = &srv->lists[st];
    while (!list_empty(head)) {
        struct http_conn *c = list_entry(head->next, struct http_conn, link);
        if (now - c->since < timeout)
            break;
        time_out(c);
        if (!list_empty(head) && head->next == &c->link)
            conn_close(c);
    }
}

static void sweep_cb(uv_timer_t *t)
{
    struct http_server *srv = t->data;
    const struct cfg *cfg = srv->cfg;
    uint64_t now = now_ms(srv);
    uint64_t idle = (uint64_t)cfg->timeouts.keepalive_ms;
    if (srv->draining && idle > DRAIN_IDLE_GRACE_MS)
        idle = DRAIN_IDLE_GRACE_MS;
    sweep_list(srv, ST_HEAD, (uint64_t)cfg->timeouts.header_ms, now);
    sweep_list(srv, ST_BODY, (uint64_t)cfg->timeouts.body_ms, now);
    sweep_list(srv, ST_IDLE, idle, now);
    sweep_list(srv, ST_SEND, (uint64_t)cfg->timeouts.send_ms, now);
    sweep_list(srv, ST_LINGER, LINGER_MS, now);
    if (srv->draining) {
        /* connections that never sent a byte are idle too */
        struct list_node *head = &srv->lists[ST_HEAD];
        for (struct list_node *n = head->next, *next; n != head; n = next) {
            next = n->next;
            struct http_conn *c = list_entry(n, struct http_conn, link);
            if (!c->got_bytes && now - c->since >= idle)
                conn_close(c);
        }
    }
    if (srv->released) {
        /* give memory of finished bursts back to the system */
        srv->released = 0;
        malloc_trim(0);
    }
}

/* --- the server -------------------------------------------------------- */

static void flusher_cb(uv_check_t *h)
{
    struct http_server *srv = h->data;
    while (!list_empty(&srv->flushq)) {
        struct http_conn *c = list_entry(srv->flushq.next, struct http_conn, flush_link);
        list_unlink(&c->flush_link);
        c->flush_pending = 0;
        flush(c);
    }
}

struct http_server *http_server_new(uv_loop_t *loop, const struct cfg *cfg, struct router *router,
                                    struct metrics_slot *slot)
{
    struct http_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return NULL;
    srv->loop = loop;
    srv->cfg = cfg;
    srv->router = router;
    srv->slot = slot ? slot : &srv->local_slot;
    srv->limits.max_uri = (size_t)cfg->limits.max_uri;
    srv->limits.max_head = (size_t)cfg->limits.max_header_size;
    srv->limits.max_headers = (size_t)cfg->limits.max_headers;
    srv->limits.max_body = UINT64_MAX; /* checked after routing: streaming routes have none */
    srv->max_body = (uint64_t)cfg->limits.max_body;
    srv->xsize = sizeof(struct http_exchange) + (size_t)cfg->limits.max_headers * sizeof(struct http_header);
    for (int i = 0; i < ST_COUNT; i++)
        list_init(&srv->lists[i]);
    uv_timer_init(loop, &srv->sweep);
    srv->sweep.data = srv;
    srv->open_handles = 1;
    uv_timer_start(&srv->sweep, sweep_cb, 1000, 1000);
    uv_unref((uv_handle_t *)&srv->sweep);
    list_init(&srv->flushq);
    uv_check_init(loop, &srv->flusher);
    srv->flusher.data = srv;
    srv->open_handles++;
    uv_check_start(&srv->flusher, flusher_cb);
    uv_unref((uv_handle_t *)&srv->flusher);
    return srv;
}

int http_server_listen_fd(struct http_server *srv, int fd)
{
    int r = uv_tcp_init(srv->loop, &srv->listener);
    if (r < 0)
        return r;
    srv->listener.data = srv;
    srv->open_handles++;
    if ((r = uv_tcp_open(&srv->listener, fd)) < 0 ||
        (r = uv_listen((uv_stream_t *)&srv->listener, srv->cfg->backlog, on_connection)) < 0)
        return r;
    srv->listening = 1;
    return 0;
}

static void server_handle_closed(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    if (--srv->open_handles > 0 || !srv->closing)
        return;
    for (int i = 0; i < srv->nrfree; i++)
        free(srv->rfree[i]);
    for (int i = 0; i < srv->nofree; i++)
        free(srv->ofree[i]);
    for (int i = 0; i < srv->nxfree; i++)
        free(srv->xfree[i]);
    free(srv);
}

void http_server_drain(struct http_server *srv, http_drained_fn done, void *arg)
{
    srv->drained = done;
    srv->drained_arg = arg;
    if (!srv->draining) {
        srv->draining = 1;
        if (srv->listening) {
            srv->listening = 0;
            accept_queued(srv);
            uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
        }
        uv_timer_start(&srv->sweep, sweep_cb, 0, 100);
    }
    check_drained(srv);
}

void http_server_close(struct http_server *srv)
{
    srv->closing = 1;
    for (int st = 0; st < ST_COUNT; st++)
        while (!list_empty(&srv->lists[st]))
            conn_close(list_entry(srv->lists[st].next, struct http_conn, link));
    if (srv->listening) {
        srv->listening = 0;
        uv_close((uv_handle_t *)&srv->listener, server_handle_closed);
    }
    uv_close((uv_handle_t *)&srv->sweep, server_handle_closed);
    uv_close((uv_handle_t *)&srv->flusher, server_handle_closed);
}

uint64_t http_server_internal_errors(const struct http_server *srv)
{
    return srv->internal_errors;
}

size_t http_server_conns(const struct http_server *srv)
{
    return srv->nconns;
}
