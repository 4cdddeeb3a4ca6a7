/*
 * The proxy's tunnel after a 101 answer: the client's connection taken
 * over from the engine (http_upgrade) and bytes copied both ways, each
 * side paused while the other lags.
 */
#include "proxy/pxy.h"

#include <stdlib.h>

#include "http/accesslog.h"

/* --- tunnels (after 101) -------------------------------------------------- */

struct cwrite {
    uv_write_t req;
    struct pxy *p;
};

void tunnel_end(struct pxy *p)
{
    struct http_exchange *x = p->x;
    if (accesslog_enabled)
        pxy_describe(p, p->s ? p->s->name : "-");
    p->client = NULL;
    if (x) {
        p->x = NULL;
        x->on_abort = NULL;
        x->handler_data = NULL;
        http_upgrade_end(x);
    }
    pxy_release(p);
}

/* Writes to the client queued; the server resumes when they drain. */
static void client_write_cb(uv_write_t *req, int status)
{
    struct cwrite *w = (struct cwrite *)req;
    struct pxy *p = w->p;
    (void)status;
    free(w);
    if (--p->cw == 0 && p->released) {
        pxy_put(p);
        return;
    }
    if (p->state == PS_TUNNEL && p->client && p->uc && p->client->write_queue_size <= LOW_MARK)
        pool_read_resume(p->uc);
}

/* Upstream bytes to the client; reading pauses while the client lags. */
void tunnel_up_read(struct pxy *p, ssize_t n)
{
    struct up_conn *uc = p->uc;
    if (n < 0 || !p->client) {
        tunnel_end(p);
        return;
    }
    pxy_touch(p);
    uv_buf_t b = uv_buf_init(uc->buf, uc->len);
    int r = uv_try_write(p->client, &b, 1);
    size_t done = r > 0 ? (size_t)r : 0;
    if (r < 0 && r != UV_EAGAIN) {
        tunnel_end(p);
        return;
    }
    if (done < uc->len) {
        struct cwrite *w = malloc(sizeof(*w) + uc->len - done);
        if (!w) {
            tunnel_end(p);
            return;
        }
        char *data = (char *)(w + 1);
        memcpy(data, uc->buf + done, uc->len - done);
        uv_buf_t rb = uv_buf_init(data, uc->len - (unsigned)done);
        w->p = p;
        if (uv_write(&w->req, p->client, &rb, 1, client_write_cb) < 0) {
            free(w);
            tunnel_end(p);
            return;
        }
        p->cw++;
    }
    uc->len = 0;
    if (p->client->write_queue_size > HIGH_MARK)
        pool_read_pause(uc);
}

static void tunnel_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct pxy *p = h->data;
    (void)hint;
    *b = uv_buf_init(p->tbuf, TUNNEL_BUF);
}

/* Client bytes to the server; the client pauses while the server lags. */
static void tunnel_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct pxy *p = s->data;
    (void)b;
    if (n == 0)
        return;
    if (n < 0 || !p->uc) {
        tunnel_end(p);
        return;
    }
    pxy_touch(p);
    uv_buf_t out = uv_buf_init(p->tbuf, (unsigned)n);
    if (pool_write(p->uc, &out, 1) < 0) {
        tunnel_end(p);
        return;
    }
    if (p->uc->queued > HIGH_MARK) {
        uv_read_stop(s);
        p->uc->want_drain = 1;
        p->uc->drain_mark = LOW_MARK;
    }
}

void tunnel_start(struct pxy *p, size_t head_len)
{
    struct up_conn *uc = p->uc;
    const char *rest = NULL;
    size_t rest_len = 0;
    uv_stream_t *client = NULL;
    p->tbuf = malloc(TUNNEL_BUF);
    if (p->tbuf) {
        pxy_enter(p);
        client = http_upgrade(p->x, &rest, &rest_len);
        if (pxy_leave(p))
            return;
    }
    if (!client) {
        tunnel_end(p);
        return;
    }
    p->client = client;
    p->state = PS_TUNNEL;
    pxy_set_list(p, TL_IDLE);
    client->data = p;
    /* what the client sent after its head, and what the server sent after its own */
    uv_buf_t b = uv_buf_init((char *)(uintptr_t)rest, (unsigned)rest_len);
    if (rest_len && pool_write(uc, &b, 1) < 0) {
        tunnel_end(p);
        return;
    }
    memmove(uc->buf, uc->buf + head_len, uc->len - head_len);
    uc->len -= (uint32_t)head_len;
    if (uc->len) {
        tunnel_up_read(p, (ssize_t)uc->len);
        if (p->state != PS_TUNNEL)
            return;
    }
    uv_read_start(client, tunnel_alloc, tunnel_client_read);
}


void tunnel_resume_client(struct pxy *p)
{
    if (p->client)
        uv_read_start(p->client, tunnel_alloc, tunnel_client_read);
}
