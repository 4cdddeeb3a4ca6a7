/*
 * The HTTP engine on libuv: the request cycle (read, parse, route, read
 * the body, run the handler, go on with the next pipelined request),
 * timeouts and the server's life. See server.h for the contract and
 * engine.h for the engine's parts.
 */
#include "http/engine.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/metrics.h"
#include "http/accesslog.h"

/* --- the request cycle ------------------------------------------------- */

enum stop { STOP_INPUT, STOP_BUSY, STOP_OUTPUT, STOP_CLOSING };

/* The access log's fields of an exchange. */
void server_log(struct http_exchange *x, int status, uint64_t duration_us)
{
    char client[64];
    struct accesslog_fields f = {.status = status, .duration_us = duration_us, .bytes_out = x->bytes_out,
                                 .client = client};
    f.id = http_request_id(x, &f.id_len);
    if (x->head_len) { /* the head parsed: its fields are there */
        f.method = x->req.method_str;
        f.method_len = x->req.method_len;
        f.path = x->req.target;
        f.path_len = x->req.target_len;
        f.user_agent = http_req_header(x, "User-Agent", &f.user_agent_len);
        f.bytes_in = (uint64_t)x->head_len + x->raw_body;
    }
    if (x->match.route) {
        f.route = x->match.route->name;
        f.route_len = strlen(f.route);
    }
    f.client_len = http_peer_addr(x, client, sizeof(client));
    if (!f.client_len)
        f.client = NULL;
    if (x->log_peer) {
        f.upstream = x->log_peer;
        f.upstream_len = strlen(x->log_peer);
    }
    accesslog_write(&f);
}

void server_exchange_done(struct http_exchange *x)
{
    struct http_server *srv = x->srv;
    struct http_conn *c = x->conn;
    if (x->done)
        return;
    x->done = 1;
    if (x->filters)
        http_filter_end(x, !x->zombie && !x->cut && !x->tunnel);
    /* counters and the access log: observability (app/stats.c, http/accesslog.c) */
    uint64_t us = x->start_ns ? (uv_hrtime() - x->start_ns) / 1000 : 0;
    metrics_request(srv->slot, x->match.route ? x->match.route->index + 1u : METRICS_ROUTE_NONE, x->status, us);
    if (accesslog_enabled && !x->zombie)
        server_log(x, x->status, us);
    if (x->status == 500)
        srv->internal_errors++;
    metrics_add(srv->slot->inflight, (uint64_t)-1);
    if (x->zombie || !c) {
        conn_exchange_put(srv, x);
        return;
    }
    if (x->tunnel) {
        c->x = NULL;
        conn_exchange_put(srv, x);
        conn_close(c);
        return;
    }
    if (x->streaming && !x->body_done && conn_has_body(&x->req))
        x->close = 1; /* the rest of the body is still on its way */
    c->start += x->head_len + x->raw_body;
    c->seen = 0;
    if (x->close)
        c->closing = 1;
    c->x = NULL;
    conn_exchange_put(srv, x);
    if (!c->in_process)
        server_process(c);
}

static void dispatch(struct http_conn *c)
{
    struct http_exchange *x = c->x;
    conn_set_state(c, ST_BUSY);
    switch (x->match.status) {
    case 0:
        if (x->match.route->chain)
            http_filter_start(x);
        else
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

/* Parses the next request head. Returns the loop's next step: -1 to stop
 * for input, 1 to go on. */
static int parse_next(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    struct http_exchange *x = conn_exchange_get(srv);
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
        conn_exchange_put(srv, x);
        c->seen = (uint32_t)avail;
        if (c->state != ST_HEAD)
            conn_set_state(c, ST_HEAD);
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
        conn_set_state(c, ST_BUSY);
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
        conn_set_state(c, ST_BUSY);
        http_error(x, 413, "request body too large");
        return 1;
    }
    if (!conn_has_body(&x->req)) {
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
        CONN_OUT_LIT(c, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    conn_set_state(c, ST_BODY);
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
                if (stream_feed_body(c))
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


static void settle(struct http_conn *c)
{
    if (c->closed || c->state == ST_LINGER)
        return;
    if (!c->x && !c->file) {
        if (c->inflight) {
            if (c->state != ST_SEND)
                conn_set_state(c, ST_SEND);
        } else if (c->len == c->start) {
            conn_release_buffer(c);
            if (c->state != ST_IDLE)
                conn_set_state(c, ST_IDLE);
            c->got_bytes = 0;
        }
    }
    conn_start_reading(c);
}

void server_process(struct http_conn *c)
{
    if (c->in_process || c->closed)
        return;
    c->in_process = 1;
    for (;;) {
        enum stop why = run_requests(c);
        conn_flush(c);
        if (c->closed)
            return;
        if (why != STOP_OUTPUT || c->file || (c->out && c->out->len > OUT_HIGH_WATER))
            break;
    }
    c->in_process = 0;
    settle(c);
}

/* --- timeouts ---------------------------------------------------------- */

static void time_out(struct http_conn *c)
{
    if (c->state == ST_HEAD && c->got_bytes) {
        struct http_exchange *x = conn_exchange_get(c->srv);
        if (x) {
            x->conn = c;
            x->srv = c->srv;
            c->x = x;
            metrics_add(c->srv->slot->inflight, 1);
            x->close = 1;
            conn_stop_reading(c);
            c->len = c->start;
            conn_set_state(c, ST_BUSY);
            http_error(x, 408, "request head not received in time");
            return;
        }
    } else if (c->state == ST_BODY && c->x) {
        c->x->close = 1;
        conn_stop_reading(c);
        conn_set_state(c, ST_BUSY);
        http_error(c->x, 408, "request body not received in time");
        return;
    }
    conn_close(c);
}

/* A connection whose state's time is up; time_out moves or closes it. */
static void expire(struct tl_node *n, void *arg)
{
    struct http_conn *c = list_entry(n, struct http_conn, tn);
    uint8_t st = c->state;
    (void)arg;
    time_out(c);
    if (!c->closed && c->state == st)
        conn_close(c);
}

static void sweep_cb(uv_timer_t *t)
{
    struct http_server *srv = t->data;
    uint64_t now = uv_now(srv->loop);
    uint64_t idle = (uint64_t)srv->cfg->timeouts.keepalive_ms;
    if (srv->draining && idle > DRAIN_IDLE_GRACE_MS)
        idle = DRAIN_IDLE_GRACE_MS;
    srv->lists[ST_IDLE].timeout_ms = idle;
    static const uint8_t swept[] = {ST_HEAD, ST_BODY, ST_IDLE, ST_SEND, ST_LINGER};
    for (size_t i = 0; i < sizeof(swept); i++)
        tl_expire(&srv->lists[swept[i]], now, expire, NULL);
    if (srv->draining) {
        /* connections that never sent a byte are idle too */
        struct list_node *head = &srv->lists[ST_HEAD].head;
        for (struct list_node *n = head->next, *next; n != head; n = next) {
            next = n->next;
            struct http_conn *c = list_entry(n, struct http_conn, tn.link);
            if (!c->got_bytes && now - c->tn.since >= idle)
                conn_close(c);
        }
    }
    if (srv->released) {
        /* give memory of finished bursts back to the system */
        srv->released = 0;
        malloc_trim(0);
    }
}

void server_check_drained(struct http_server *srv)
{
    if (srv->draining && srv->nconns == 0 && srv->drained) {
        http_drained_fn fn = srv->drained;
        srv->drained = NULL;
        fn(srv, srv->drained_arg);
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
        conn_flush(c);
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
    const __typeof__(cfg->timeouts) *to = &cfg->timeouts;
    tl_list_init(&srv->lists[ST_HEAD], (uint64_t)to->header_ms);
    tl_list_init(&srv->lists[ST_BODY], (uint64_t)to->body_ms);
    tl_list_init(&srv->lists[ST_BUSY], UINT64_MAX); /* never swept */
    tl_list_init(&srv->lists[ST_IDLE], (uint64_t)to->keepalive_ms);
    tl_list_init(&srv->lists[ST_SEND], (uint64_t)to->send_ms);
    tl_list_init(&srv->lists[ST_LINGER], LINGER_MS);
    tl_timer_start(loop, &srv->sweep, srv, sweep_cb, 1000, 1000);
    srv->open_handles = 1;
    list_init(&srv->flushq);
    uv_check_init(loop, &srv->flusher);
    srv->flusher.data = srv;
    srv->open_handles++;
    uv_check_start(&srv->flusher, flusher_cb);
    uv_unref((uv_handle_t *)&srv->flusher);
    return srv;
}

/* One of the server's handles closed; the last one frees it. */
static void server_release(struct http_server *srv)
{
    if (--srv->open_handles > 0 || !srv->closing)
        return;
    conn_free_lists(srv);
    free(srv->listeners);
    free(srv);
}

static void server_handle_closed(uv_handle_t *h)
{
    server_release(h->data);
}

static void listener_closed(uv_handle_t *h)
{
    struct http_listener *l = h->data;
    struct http_server *srv = l->srv;
    free(l);
    server_release(srv);
}

int http_server_listen_fd(struct http_server *srv, int fd, unsigned flags)
{
    struct http_listener **ls = realloc(srv->listeners, (size_t)(srv->nlisteners + 1) * sizeof(*ls));
    if (!ls)
        return UV_ENOMEM;
    srv->listeners = ls;
    struct http_listener *l = calloc(1, sizeof(*l));
    if (!l)
        return UV_ENOMEM;
    l->srv = srv;
    l->flags = flags;
    int unix_sock = (flags & HTTP_LISTEN_UNIX) != 0;
    int r = unix_sock ? uv_pipe_init(srv->loop, &l->pipe, 0) : uv_tcp_init(srv->loop, &l->tcp);
    if (r < 0) {
        free(l);
        return r;
    }
    l->tcp.data = l;
    srv->open_handles++;
    ls[srv->nlisteners++] = l;
    if ((r = unix_sock ? uv_pipe_open(&l->pipe, fd) : uv_tcp_open(&l->tcp, fd)) < 0 ||
        (r = uv_listen((uv_stream_t *)&l->tcp, srv->cfg->backlog, conn_on_connection)) < 0)
        return r;
    return 0;
}

/* Closes every listener; with `take`, after taking what they queued. */
static void close_listeners(struct http_server *srv, int take)
{
    for (int i = 0; i < srv->nlisteners; i++) {
        if (take)
            conn_accept_queued(srv->listeners[i]);
        uv_close((uv_handle_t *)&srv->listeners[i]->tcp, listener_closed);
    }
    srv->nlisteners = 0;
}

void http_server_drain(struct http_server *srv, http_drained_fn done, void *arg)
{
    srv->drained = done;
    srv->drained_arg = arg;
    if (!srv->draining) {
        srv->draining = 1;
        close_listeners(srv, 1);
        uv_timer_start(&srv->sweep, sweep_cb, 0, 100);
    }
    server_check_drained(srv);
}

void http_server_close(struct http_server *srv)
{
    srv->closing = 1;
    for (int st = 0; st < ST_COUNT; st++)
        for (struct tl_node *n; (n = tl_first(&srv->lists[st]));)
            conn_close(list_entry(n, struct http_conn, tn));
    close_listeners(srv, 0);
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
