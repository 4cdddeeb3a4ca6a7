/*
 * Upstream connections and their keep-alive pool. See pool.h.
 */
#include "proxy/pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct wreq {
    uv_write_t req;
    struct up_conn *uc;
    size_t len;
    char data[];
};

void pool_init(struct up_pool *p, uv_loop_t *loop, size_t max, uint64_t idle_ms)
{
    memset(p, 0, sizeof(*p));
    p->loop = loop;
    p->max = max;
    p->idle_ms = idle_ms;
    list_init(&p->idle);
}

static void conn_closed(uv_handle_t *h)
{
    struct up_conn *uc = h->data;
    uc->pool->open--;
    free(uc);
}

void pool_close_conn(struct up_conn *uc)
{
    if (uc->closing)
        return;
    uc->closing = 1;
    if (uc->in_pool)
        uc->pool->nidle--;
    uc->in_pool = 0;
    list_unlink(&uc->link);
    uc->owner = NULL;
    uc->ops = NULL;
    uc->buf = NULL;
    uv_close((uv_handle_t *)&uc->tcp, conn_closed);
}

/* An idle connection only reads to notice the server closing it. */
static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char scratch[64];
    struct up_conn *uc = h->data;
    (void)hint;
    if (uc->owner && uc->buf && uc->len < uc->cap)
        *b = uv_buf_init(uc->buf + uc->len, uc->cap - uc->len);
    else if (uc->owner)
        *b = uv_buf_init(NULL, 0); /* UV_ENOBUFS: the owner has no room */
    else
        *b = uv_buf_init(scratch, sizeof(scratch));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct up_conn *uc = s->data;
    (void)b;
    if (n == 0)
        return;
    if (!uc->owner) { /* idle: a close, or bytes it should not send */
        pool_close_conn(uc);
        return;
    }
    if (n == UV_ENOBUFS) {
        pool_read_pause(uc);
        return;
    }
    if (n > 0)
        uc->len += (uint32_t)n;
    uc->ops->on_read(uc, n);
}

static void start_reading(struct up_conn *uc)
{
    if (!uc->reading && !uc->closing && uv_read_start((uv_stream_t *)&uc->tcp, alloc_cb, read_cb) == 0)
        uc->reading = 1;
}

void pool_read_pause(struct up_conn *uc)
{
    if (uc->reading) {
        uv_read_stop((uv_stream_t *)&uc->tcp);
        uc->reading = 0;
    }
}

void pool_read_resume(struct up_conn *uc)
{
    start_reading(uc);
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct up_conn *uc = req->data;
    if (uc->closing)
        return;
    if (status == 0) {
        uc->connected = 1;
        start_reading(uc);
    }
    uc->ops->on_connect(uc, status);
}

struct up_conn *pool_connect(struct up_pool *p, const struct sockaddr *addr, void *owner,
                             const struct up_conn_ops *ops, int *err)
{
    struct up_conn *uc = calloc(1, sizeof(*uc));
    if (!uc) {
        *err = UV_ENOMEM;
        return NULL;
    }
    uc->pool = p;
    uc->owner = owner;
    uc->ops = ops;
    list_init(&uc->link);
    uv_tcp_init(p->loop, &uc->tcp);
    uc->tcp.data = uc;
    uc->creq.data = uc;
    p->open++;
    p->opened++;
    uv_tcp_nodelay(&uc->tcp, 1);
    int r = uv_tcp_connect(&uc->creq, &uc->tcp, addr, connect_cb);
    if (r < 0) {
        *err = r;
        uc->owner = NULL;
        uc->closing = 1;
        uv_close((uv_handle_t *)&uc->tcp, conn_closed);
        return NULL;
    }
    return uc;
}

struct up_conn *pool_take(struct up_pool *p, void *owner, const struct up_conn_ops *ops)
{
    if (list_empty(&p->idle))
        return NULL;
    struct up_conn *uc = list_entry(p->idle.prev, struct up_conn, link);
    list_unlink(&uc->link);
    uc->in_pool = 0;
    p->nidle--;
    p->reused++;
    uc->owner = owner;
    uc->ops = ops;
    uc->len = 0;
    start_reading(uc);
    return uc;
}

void pool_give(struct up_conn *uc)
{
    struct up_pool *p = uc->pool;
    list_unlink(&uc->link);
    uc->owner = NULL;
    uc->ops = NULL;
    uc->buf = NULL;
    uc->cap = uc->len = 0;
    uc->want_drain = 0;
    if (p->max == 0 || uc->closing || !uc->connected) {
        uc->owner = NULL;
        pool_close_conn(uc);
        return;
    }
    if (p->nidle >= p->max) /* full: the oldest goes */
        pool_close_conn(list_entry(p->idle.next, struct up_conn, link));
    uc->since = uv_now(p->loop);
    list_append(&p->idle, &uc->link);
    uc->in_pool = 1;
    p->nidle++;
    start_reading(uc);
}

static void write_cb(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct up_conn *uc = w->uc;
    uc->queued -= w->len;
    free(w);
    if (uc->closing || !uc->owner)
        return;
    if (status < 0) {
        /* the read side sees the reset too; make sure the owner hears */
        uc->ops->on_read(uc, status);
        return;
    }
    if (uc->want_drain && uc->queued <= uc->drain_mark) {
        uc->want_drain = 0;
        if (uc->ops->on_drain)
            uc->ops->on_drain(uc);
    }
}

int pool_write(struct up_conn *uc, const uv_buf_t *bufs, unsigned nbufs)
{
    size_t total = 0, done = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    int r = uv_try_write((uv_stream_t *)&uc->tcp, bufs, nbufs);
    if (r >= 0)
        done = (size_t)r;
    else if (r != UV_EAGAIN)
        return r;
    if (done == total)
        return 0;
    struct wreq *w = malloc(sizeof(*w) + total - done);
    if (!w)
        return UV_ENOMEM;
    size_t skip = done, at = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t n = bufs[i].len;
        if (skip >= n) {
            skip -= n;
            continue;
        }
        memcpy(w->data + at, bufs[i].base + skip, n - skip);
        at += n - skip;
        skip = 0;
    }
    w->uc = uc;
    w->len = at;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)at);
    r = uv_write(&w->req, (uv_stream_t *)&uc->tcp, &b, 1, write_cb);
    if (r < 0) {
        free(w);
        return r;
    }
    uc->queued += at;
    return 0;
}

void pool_expire(struct up_pool *p, uint64_t now_ms)
{
    while (!list_empty(&p->idle)) {
        struct up_conn *uc = list_entry(p->idle.next, struct up_conn, link);
        if (now_ms - uc->since < p->idle_ms)
            break;
        pool_close_conn(uc);
    }
}

void pool_close_idle(struct up_pool *p)
{
    while (!list_empty(&p->idle))
        pool_close_conn(list_entry(p->idle.next, struct up_conn, link));
}
