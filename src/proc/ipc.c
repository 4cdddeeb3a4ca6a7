#include "proc/ipc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void ipc_reader_init(struct ipc_reader *r, ipc_msg_fn fn, void *arg)
{
    memset(r, 0, sizeof(*r));
    r->on_msg = fn;
    r->arg = arg;
}

void ipc_reader_free(struct ipc_reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = 0;
}

int ipc_reader_feed(struct ipc_reader *r, const char *data, size_t len)
{
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < r->len + len)
            cap *= 2;
        char *p = realloc(r->buf, cap);
        if (!p)
            return -ENOMEM;
        r->buf = p;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    size_t off = 0;
    while (r->len - off >= sizeof(struct ipc_header)) {
        struct ipc_header h;
        memcpy(&h, r->buf + off, sizeof(h));
        if (h.len > IPC_MAX_PAYLOAD)
            return -EPROTO;
        if (r->len - off < sizeof(h) + h.len)
            break;
        r->on_msg(r->arg, &h, r->buf + off + sizeof(h));
        off += sizeof(h) + h.len;
    }
    memmove(r->buf, r->buf + off, r->len - off);
    r->len -= off;
    return 0;
}

void ipc_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char buf[65536];
    (void)h;
    (void)hint;
    *b = uv_buf_init(buf, sizeof(buf));
}

struct ipc_write {
    uv_write_t req;
    char data[];
};

static void sent_cb(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

int ipc_send(uv_stream_t *s, uint16_t type, uint16_t worker, const void *payload, uint32_t len)
{
    if (len > IPC_MAX_PAYLOAD)
        return -EMSGSIZE;
    if (uv_stream_get_write_queue_size(s) > IPC_MAX_QUEUED)
        return -ENOBUFS;
    struct ipc_write *w = malloc(sizeof(*w) + sizeof(struct ipc_header) + len);
    if (!w)
        return -ENOMEM;
    struct ipc_header h = {.type = type, .worker = worker, .len = len};
    memcpy(w->data, &h, sizeof(h));
    if (len)
        memcpy(w->data + sizeof(h), payload, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)(sizeof(h) + len));
    int r = uv_write(&w->req, s, &b, 1, sent_cb);
    if (r < 0)
        free(w);
    return r;
}

int ipc_send_handle(uv_pipe_t *p, uv_stream_t *handle, struct ipc_conn_msg *msg, uint32_t listener,
                    uv_write_cb cb, uv_write_t *req)
{
    if (uv_stream_get_write_queue_size((uv_stream_t *)p) > IPC_MAX_QUEUED)
        return -ENOBUFS;
    msg->h = (struct ipc_header){.type = IPC_CONN, .len = sizeof(msg->c)};
    msg->c.listener = listener;
    uv_buf_t b = uv_buf_init((char *)msg, sizeof(*msg));
    return uv_write2(req, (uv_stream_t *)p, &b, 1, handle, cb);
}
