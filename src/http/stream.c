/*
 * The HTTP engine's streaming: request bodies handed to the handler in
 * pieces as they arrive (with pause and resume), responses written in
 * pieces and flushed at the end of the loop's iteration, the drain
 * callback, and taking the connection over after a 101. See server.h.
 */
#include "http/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* --- streaming ---------------------------------------------------------- */

int http_req_has_body(const struct http_exchange *x)
{
    return conn_has_body(&x->req);
}

void http_body_start(struct http_exchange *x, http_body_fn fn)
{
    struct http_conn *c = x->conn;
    x->on_body = fn;
    x->body_paused = 0;
    if (!c)
        return;
    if (x->req.expect_continue && !x->continue_sent && conn_has_body(&x->req) &&
        c->len == c->start + x->head_len) {
        x->continue_sent = 1;
        CONN_OUT_LIT(c, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    if (!c->in_process)
        server_process(c);
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
        server_process(c);
}

void http_stream_head(struct http_exchange *x, int64_t length)
{
    struct http_conn *c = x->conn;
    if (x->filters) {
        struct http_resp_head h = {.length = length, .in_memory = 1};
        http_filter_head_end(x, &h);
        length = h.length;
    }
    if (!c)
        return;
    int bodiless = x->status < 200 || x->status == 204 || x->status == 304;
    if (length >= 0 && !bodiless) {
        CONN_OUT_LIT(c, "Content-Length: ");
        conn_out_u64(c, (uint64_t)length);
        CONN_OUT_LIT(c, "\r\n");
    } else if (length < 0 && !bodiless && !x->head_only) {
        if (x->req.minor_version >= 1) {
            CONN_OUT_LIT(c, "Transfer-Encoding: chunked\r\n");
            x->chunking = 1;
        } else {
            x->close = 1; /* the end of the connection ends the body */
        }
    }
    response_end_head(x);
}

/* Output written outside server_process() leaves at the end of the iteration. */
static void defer_flush(struct http_conn *c)
{
    if (c->in_process || c->flush_pending || c->closed)
        return;
    c->flush_pending = 1;
    list_append(&c->srv->flushq, &c->flush_link);
}

static size_t stream_write_raw(struct http_exchange *x, const void *data, size_t len)
{
    struct http_conn *c = x->conn;
    if (!c)
        return 0;
    if (len && !x->head_only) {
        if (x->chunking) {
            char hex[20];
            int n = snprintf(hex, sizeof(hex), "%zx\r\n", len);
            conn_out(c, hex, (size_t)n);
            conn_out(c, data, len);
            CONN_OUT_LIT(c, "\r\n");
        } else {
            conn_out(c, data, len);
        }
        defer_flush(c);
    }
    return conn_queued(c);
}

size_t http_stream_write(struct http_exchange *x, const void *data, size_t len)
{
    http_filter_piece(x, &data, &len);
    return stream_write_raw(x, data, len);
}

void http_stream_end(struct http_exchange *x)
{
    if (x->filters) {
        struct http_piece p = {.data = "", .last = 1};
        http_filter_body(x, &p);
        if (p.len)
            stream_write_raw(x, p.data, p.len);
    }
    if (x->conn && x->chunking && !x->head_only)
        CONN_OUT_LIT(x->conn, "0\r\n\r\n");
    server_exchange_done(x);
}

void http_on_drain(struct http_exchange *x, void (*fn)(struct http_exchange *x), size_t mark)
{
    x->on_drain = fn;
    x->drain_mark = mark;
    if (x->conn)
        stream_notify_drain(x->conn);
}

size_t http_out_queued(const struct http_exchange *x)
{
    return x->conn ? conn_queued(x->conn) : 0;
}

void http_abort(struct http_exchange *x)
{
    x->cut = 1;
    x->close = 1;
    x->on_drain = NULL;
    server_exchange_done(x);
}

uv_stream_t *http_upgrade(struct http_exchange *x, const char **rest, size_t *rest_len)
{
    struct http_conn *c = x->conn;
    if (!c)
        return NULL;
    CONN_OUT_LIT(c, "\r\n");
    conn_stop_reading(c);
    conn_flush(c);
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
    server_exchange_done(x);
}

/* A streaming handler waiting for the client to take its output. */
void stream_notify_drain(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    if (c->closed || !x || !x->on_drain || conn_queued(c) > x->drain_mark)
        return;
    void (*fn)(struct http_exchange *) = x->on_drain;
    x->on_drain = NULL;
    fn(x);
}


static void stream_buffer(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    struct http_server *srv = c->srv;
    char *p = c->cap < STREAM_RBUF ? malloc(STREAM_RBUF) : NULL;
    if (!p)
        return; /* the small buffer will do, more slowly */
    size_t n = c->len - c->start;
    memcpy(p, c->buf + c->start, n);
    conn_rbuf_put(srv, c->buf, c->cap);
    c->buf = p;
    c->cap = STREAM_RBUF;
    c->len = (uint32_t)n;
    c->start = 0;
    http_parse_request(c->buf, n, 0, &srv->limits, &x->req);
    router_match(srv->router, x->req.method, x->req.path, x->req.path_len, &x->match);
}

/* A streaming route's handler runs now; its body waits in the buffer. */
void stream_dispatch(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    x->streaming = 1;
    x->body_left = x->req.content_length > 0 ? (uint64_t)x->req.content_length : 0;
    x->dec.max_body = UINT64_MAX;
    if (conn_has_body(&x->req))
        stream_buffer(c);
    conn_set_state(c, ST_BUSY);
    if (x->match.route->chain)
        http_filter_start(x);
    else
        x->match.route->handler(x);
}

/*
 * Hands what arrived of a streaming body to its handler. The piece given
 * counts as the exchange's raw_body during the call, so that an answer
 * from inside the callback moves past it; afterwards it is dropped from
 * the buffer. Returns 1 when the handler was called, 0 when waiting (for
 * input, or for the handler to ask).
 */
int stream_feed_body(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    if (!x->on_body || x->body_paused || x->body_done)
        return 0;
    char *p = c->buf ? c->buf + c->start + x->head_len : NULL;
    size_t avail = p ? c->len - (size_t)(p - c->buf) : 0, n = 0, rest = 0;
    int status = 0;
    if (!conn_has_body(&x->req)) {
        status = 1;
    } else if (!avail) {
        if (!c->peer_eof)
            return 0;
        status = -ECONNRESET;
    } else if (x->req.chunked) {
        n = avail;
        ssize_t r = http_chunked_decode(&x->dec, p, &n);
        if (r == HTTP_ERROR) {
            n = 0;
            status = x->dec.status == 413 ? -EMSGSIZE : -EPROTO;
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

