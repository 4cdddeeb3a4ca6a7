/*
 * The HTTP engine's connections: accepting them, reading into their
 * buffer, writing their output (at once when the socket takes it, else
 * with libuv), sending files with sendfile(2), lingering and closing; and
 * the engine's free lists of buffers and exchanges. See engine.h.
 */
#include "http/engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/metrics.h"
#include "http/accesslog.h"

static void conn_start_file(struct http_conn *c);
static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

/* --- free lists -------------------------------------------------------- */

static char *conn_rbuf_get(struct http_server *srv)
{
    return freelist_get(&srv->rfree, RBUF_SIZE);
}

void conn_rbuf_put(struct http_server *srv, char *b, uint32_t cap)
{
    if (cap != RBUF_SIZE) {
        free(b);
        srv->released = 1;
    } else if (!freelist_put(&srv->rfree, b)) {
        srv->released = 1;
    }
}

static struct obuf *conn_obuf_get(struct http_server *srv, struct http_conn *c)
{
    struct obuf *o = freelist_get(&srv->ofree, sizeof(*o) + OBUF_SIZE);
    if (!o)
        return NULL;
    o->conn = c;
    o->len = o->sent = 0;
    o->cap = OBUF_SIZE;
    return o;
}

static void conn_obuf_put(struct http_server *srv, struct obuf *o)
{
    if (o->cap != OBUF_SIZE) {
        free(o);
        srv->released = 1;
    } else if (!freelist_put(&srv->ofree, o)) {
        srv->released = 1;
    }
}

struct http_exchange *conn_exchange_get(struct http_server *srv)
{
    struct http_exchange *x = freelist_get(&srv->xfree, srv->xsize);
    if (x) {
        memset(x, 0, sizeof(*x));
        x->req.headers = x->headers;
        x->req.headers_cap = (size_t)srv->cfg->limits.max_headers;
    }
    return x;
}

void conn_exchange_put(struct http_server *srv, struct http_exchange *x)
{
    free(x->body_store);
    if (!freelist_put(&srv->xfree, x))
        srv->released = 1;
}

void conn_free_lists(struct http_server *srv)
{
    freelist_clear(&srv->rfree);
    freelist_clear(&srv->ofree);
    freelist_clear(&srv->xfree);
}

/* --- output ------------------------------------------------------------- */

char *conn_out_reserve(struct http_conn *c, size_t n)
{
    struct http_server *srv = c->srv;
    if (!c->out && !(c->out = conn_obuf_get(srv, c)))
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

void conn_out_str(struct http_conn *c, const char *s)
{
    conn_out(c, s, strlen(s));
}

void conn_out_u64(struct http_conn *c, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    conn_out(c, tmp + sizeof(tmp) - n, (size_t)n);
}

void conn_release_buffer(struct http_conn *c)
{
    if (c->buf && c->len == c->start && !c->x) {
        conn_rbuf_put(c->srv, c->buf, c->cap);
        c->buf = NULL;
        c->cap = c->len = c->start = c->seen = 0;
    }
}

void conn_start_reading(struct http_conn *c)
{
    if (c->reading || c->closed || c->tunnel || c->peer_eof)
        return;
    if (c->buf && c->len == c->cap)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
        c->reading = 1;
}

void conn_stop_reading(struct http_conn *c)
{
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

/* --- reading ----------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct http_conn *c = h->data;
    (void)hint;
    if (!c->buf) {
        c->buf = conn_rbuf_get(c->srv);
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
            conn_stop_reading(c);
            return;
        }
        if (nread == UV_EOF && c->x && c->state == ST_BUSY && !c->closing) {
            /* a half-closed client still gets the answer it waits for */
            conn_stop_reading(c);
            c->x->close = 1;
            if (c->x->streaming && !c->x->body_done) {
                c->peer_eof = 1; /* the body's handler hears of it */
                server_process(c);
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
        conn_set_state(c, ST_HEAD);
    else if (c->state == ST_BODY)
        conn_set_state(c, ST_BODY); /* the stall timer counts from the last byte */
    server_process(c);
    if (!c->closed && c->buf && c->len == c->cap)
        conn_stop_reading(c);
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
    conn_set_state(c, ST_LINGER);
    c->len = c->start;
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, shutdown_cb) < 0) {
        free(req);
        conn_close(c);
        return;
    }
    conn_start_reading(c);
}

static void write_cb(uv_write_t *req, int status)
{
    struct obuf *o = req->data;
    struct http_conn *c = o->conn;
    struct http_server *srv = c->srv;
    if (status == 0)
        metrics_add(srv->slot->bytes_out, o->len - o->sent);
    c->inflight = NULL;
    conn_obuf_put(srv, o);
    if (c->closed || c->tunnel) /* a tunnel's owner sees errors itself */
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->state == ST_SEND)
        conn_set_state(c, ST_IDLE); /* settle() picks the right one */
    server_process(c);
    stream_notify_drain(c);
}


void conn_flush(struct http_conn *c)
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
                conn_obuf_put(c->srv, o);
                conn_close(c);
            }
            return;
        }
    }
    if (o) {
        c->out = NULL;
        conn_obuf_put(c->srv, o);
    }
    if (c->file) {
        conn_start_file(c);
        return;
    }
    if (c->closing && !c->x && c->state != ST_LINGER)
        begin_linger(c);
    else if (c->x && c->x->on_drain)
        stream_notify_drain(c);
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
        server_process(c);
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
    conn_start_file(f->conn);
}

/* Sends from the file while the socket takes it; waits for writability on
 * a duplicate of the socket's descriptor (libuv owns the original). A round
 * sends at most 1 MiB so one fast client does not starve the others. */
static void conn_start_file(struct http_conn *c)
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
        conn_set_state(c, ST_SEND);
}

/* --- connections ------------------------------------------------------- */

static void conn_closed_cb(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    struct http_server *srv = c->srv;
    if (c->buf)
        conn_rbuf_put(srv, c->buf, c->cap);
    if (c->out)
        conn_obuf_put(srv, c->out);
    free(c);
    srv->nconns--;
    srv->released = 1;
    metrics_add(srv->slot->conns_open, (uint64_t)-1);
    server_check_drained(srv);
}

void conn_close(struct http_conn *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    tl_remove(&c->tn);
    list_unlink(&c->flush_link);
    c->flush_pending = 0;
    c->tcp.data = c; /* a tunnel's owner may have borrowed it */
    if (c->x && c->state == ST_BODY) {
        /* no handler has seen it yet: nobody else holds the exchange */
        metrics_add(c->srv->slot->inflight, (uint64_t)-1);
        conn_exchange_put(c->srv, c->x);
        c->x = NULL;
    }
    if (c->x) {
        struct http_exchange *x = c->x;
        c->x = NULL;
        if (accesslog_enabled) /* now, while the request's bytes are there */
            server_log(x, 499, x->start_ns ? (uv_hrtime() - x->start_ns) / 1000 : 0);
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

/* Sets up a connection: uv_accept from `server` (a listener, or the IPC
 * pipe the master hands connections over in round_robin and least_loaded),
 * or, with fd >= 0, uv_tcp_open / uv_pipe_open of a descriptor accepted
 * here. `flags` are its listener's (HTTP_LISTEN_*). */
static void conn_start(struct http_server *srv, uv_stream_t *server, int fd, unsigned flags)
{
    struct http_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        if (fd >= 0)
            close(fd);
        return;
    }
    int unix_sock = (flags & HTTP_LISTEN_UNIX) != 0;
    if (unix_sock)
        uv_pipe_init(srv->loop, &c->pipe, 0);
    else
        uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    c->srv = srv;
    c->lflags = (uint8_t)flags;
    tl_node_init(&c->tn);
    list_init(&c->flush_link);
    srv->nconns++;
    metrics_add(srv->slot->conns_open, 1);
    metrics_add(srv->slot->conns_total, 1);
    int r = fd < 0 ? uv_accept(server, (uv_stream_t *)&c->tcp)
                   : unix_sock ? uv_pipe_open(&c->pipe, fd) : uv_tcp_open(&c->tcp, fd);
    if (r < 0) {
        if (fd >= 0)
            close(fd);
        c->closed = 1;
        uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
        return;
    }
    if (!unix_sock)
        uv_tcp_nodelay(&c->tcp, 1);
    conn_set_state(c, ST_HEAD);
    conn_start_reading(c);
}

/* Connections the kernel already queued on a listener would be reset if
 * this were the socket's last descriptor: take them before closing it. */
void conn_accept_queued(struct http_listener *l)
{
    int fd;
    if (uv_fileno((uv_handle_t *)&l->tcp, &fd) < 0)
        return;
    for (int i = 0; i < 65536; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            break;
        conn_start(l->srv, NULL, cfd, l->flags);
    }
}

void conn_on_connection(uv_stream_t *server, int status)
{
    struct http_listener *l = server->data;
    /* status < 0: EMFILE and the like; libuv already shed the connection */
    if (status == 0)
        conn_start(l->srv, server, -1, l->flags);
}

void http_server_adopt(struct http_server *srv, uv_stream_t *from, unsigned flags)
{
    /* the handle's own kind wins over what the message said */
    if (uv_pipe_pending_type((uv_pipe_t *)from) == UV_NAMED_PIPE)
        flags |= HTTP_LISTEN_UNIX;
    else
        flags &= ~HTTP_LISTEN_UNIX;
    conn_start(srv, from, -1, flags);
}

/* The peer's address into c->peer (TCP), or AF_UNIX. */
static void peer_lookup(struct http_conn *c)
{
    struct sockaddr_storage ss;
    int n = sizeof(ss);
    c->peer_family = 0xff;
    if (c->lflags & HTTP_LISTEN_UNIX) {
        c->peer_family = AF_UNIX;
        return;
    }
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &n) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        memcpy(c->peer, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        c->peer_family = AF_INET;
    } else if (ss.ss_family == AF_INET6) {
        memcpy(c->peer, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        c->peer_family = AF_INET6;
    }
}

size_t http_peer_addr(struct http_exchange *x, char *buf, size_t len)
{
    struct http_conn *c = x->conn;
    if (!c || len < INET6_ADDRSTRLEN)
        return 0;
    if (!c->peer_family)
        peer_lookup(c);
    if (c->peer_family == AF_UNIX) {
        memcpy(buf, "unix:", 6);
        return 5;
    }
    if (c->peer_family == 0xff || !inet_ntop(c->peer_family, c->peer, buf, (socklen_t)len))
        return 0;
    return strlen(buf);
}
