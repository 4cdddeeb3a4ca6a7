/*
 * The HTTP engine's responses: the status line and the fields every
 * answer carries (Server, Date, X-Request-Id), fields, whole bodies,
 * chunked bodies and files; the request's id and fields. See server.h.
 */
#include "http/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "http/reqid.h"

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

/* --- responses --------------------------------------------------------- */

void http_begin(struct http_exchange *x, int status)
{
    struct http_conn *c = x->conn;
    if (x->filters)
        http_filter_status(x, &status);
    x->status = status;
    x->started = 1;
    if (!c)
        return;
    struct http_server *srv = c->srv;
    refresh_date(srv);
    if (srv->draining || !x->req.keep_alive || srv->cfg->timeouts.keepalive_ms == 0)
        x->close = 1;
    CONN_OUT_LIT(c, "HTTP/1.1 ");
    conn_out_u64(c, (uint64_t)status);
    CONN_OUT_LIT(c, " ");
    conn_out_str(c, http_status_text(status));
    CONN_OUT_LIT(c, "\r\nServer: cohort\r\nDate: ");
    conn_out(c, srv->date, 29);
    size_t idlen;
    const char *id = http_request_id(x, &idlen);
    CONN_OUT_LIT(c, "\r\nX-Request-Id: ");
    conn_out(c, id, idlen);
    CONN_OUT_LIT(c, "\r\n");
}

/* "name: value\r\n" in one piece of the output buffer. */
static void header_out(struct http_exchange *x, const char *name, size_t name_len, const char *value,
                       size_t value_len)
{
    struct http_conn *c = x->conn;
    if (!c)
        return;
    char *dst = conn_out_reserve(c, name_len + value_len + 4);
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
    http_header_n(x, name, strlen(name), value, value_len);
}

void http_header_n(struct http_exchange *x, const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (x->filters && http_filter_drop_header(x, name, name_len, value, value_len))
        return;
    header_out(x, name, name_len, value, value_len);
}

void http_filter_header(struct http_exchange *x, const char *name, const char *value, size_t value_len)
{
    header_out(x, name, strlen(name), value, value_len);
}

/* Connection handling fields and the blank line that ends the head. */
void response_end_head(struct http_exchange *x)
{
    struct http_conn *c = x->conn;
    if (x->close)
        CONN_OUT_LIT(c, "Connection: close\r\n\r\n");
    else if (x->req.minor_version == 0)
        CONN_OUT_LIT(c, "Connection: keep-alive\r\n\r\n");
    else
        CONN_OUT_LIT(c, "\r\n");
}

static void finish_raw(struct http_exchange *x, const char *content_type, const void *body, size_t len)
{
    struct http_conn *c = x->conn;
    if (c) {
        if (content_type) {
            CONN_OUT_LIT(c, "Content-Type: ");
            conn_out_str(c, content_type);
            CONN_OUT_LIT(c, "\r\n");
        }
        /* 1xx, 204 and 304 carry no Content-Length of a body */
        if (x->status != 204 && x->status != 304) {
            CONN_OUT_LIT(c, "Content-Length: ");
            conn_out_u64(c, len);
            CONN_OUT_LIT(c, "\r\n");
        }
        response_end_head(x);
        if (!x->head_only && x->status != 204 && x->status != 304)
            conn_out(c, body, len);
    }
    server_exchange_done(x);
}

/* A whole body is one piece; its Content-Length is written after the body
 * hooks, which may change it. A body not in memory (a file) passes no
 * body hook. */
static void finish_filtered(struct http_exchange *x, const char *content_type, const void *body, size_t len)
{
    struct http_resp_head h = {.content_type = content_type, .length = (int64_t)len,
                               .in_memory = body != NULL || len == 0};
    http_filter_head_end(x, &h);
    struct http_piece p = {.data = body, .len = len, .last = 1};
    if (h.in_memory)
        http_filter_body(x, &p);
    finish_raw(x, h.content_type, p.data, p.len);
}

void http_finish(struct http_exchange *x, const char *content_type, const void *body, size_t len)
{
    if (x->filters)
        finish_filtered(x, content_type, body, len);
    else
        finish_raw(x, content_type, body, len);
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
    if (x->filters) {
        struct http_resp_head h = {.content_type = content_type, .length = -1, .in_memory = 1};
        http_filter_head_end(x, &h);
        content_type = h.content_type;
    }
    x->chunking = 1;
    if (!c)
        return;
    if (content_type) {
        CONN_OUT_LIT(c, "Content-Type: ");
        conn_out_str(c, content_type);
        CONN_OUT_LIT(c, "\r\n");
    }
    CONN_OUT_LIT(c, "Transfer-Encoding: chunked\r\n");
    response_end_head(x);
    conn_flush(c);
}

static void chunk_raw(struct http_exchange *x, const void *data, size_t len)
{
    struct http_conn *c = x->conn;
    if (!c || len == 0 || x->head_only)
        return;
    char hex[20];
    int n = snprintf(hex, sizeof(hex), "%zx\r\n", len);
    conn_out(c, hex, (size_t)n);
    conn_out(c, data, len);
    CONN_OUT_LIT(c, "\r\n");
    if (!c->in_process)
        conn_flush(c);
}

void http_chunk(struct http_exchange *x, const void *data, size_t len)
{
    http_filter_piece(x, &data, &len);
    chunk_raw(x, data, len);
}

void http_end_chunks(struct http_exchange *x)
{
    if (x->filters) {
        struct http_piece p = {.data = "", .last = 1};
        http_filter_body(x, &p);
        chunk_raw(x, p.data, p.len);
    }
    if (x->conn && !x->head_only)
        CONN_OUT_LIT(x->conn, "0\r\n\r\n");
    server_exchange_done(x);
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

const char *http_req_header(const struct http_exchange *x, const char *name, size_t *len)
{
    int i = http_find_header(&x->req, name, strlen(name), 0);
    if (i < 0)
        return NULL;
    if (len)
        *len = x->req.headers[i].value_len;
    return x->req.headers[i].value;
}

/* --- request ids ------------------------------------------------------ */

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
