/*
 * The proxy's request: the head sent upstream (hop-by-hop fields removed,
 * X-Forwarded-*, X-Request-Id and Via added) and the client's body
 * streamed after it, pausing the client while the server lags.
 */
#include "proxy/pxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* --- the request ----------------------------------------------------------- */

enum field { F_COPY, F_DROP, F_XFF, F_VIA, F_HOST };

/* What becomes of a request field upstream (RFC 9110 7.6.1: hop-by-hop
 * fields go; the ones we write ourselves are replaced). */
static enum field request_field(const struct http_header *h, int upgrade)
{
    const char *n = h->name;
    size_t len = h->name_len;
    if (len >= 6 && strncasecmp(n, "proxy-", 6) == 0)
        return F_DROP;
    switch (len) {
    case 2:
        return pxy_eq(n, len, "te") ? F_DROP : F_COPY;
    case 3:
        return pxy_eq(n, len, "via") ? F_VIA : F_COPY;
    case 4:
        return pxy_eq(n, len, "host") ? F_HOST : F_COPY;
    case 6:
        return pxy_eq(n, len, "expect") ? F_DROP : F_COPY;
    case 7:
        return pxy_eq(n, len, "trailer") ? F_DROP : pxy_eq(n, len, "upgrade") && !upgrade ? F_DROP : F_COPY;
    case 10:
        return pxy_eq(n, len, "connection") || pxy_eq(n, len, "keep-alive") ? F_DROP : F_COPY;
    case 12:
        return pxy_eq(n, len, "x-request-id") ? F_DROP : F_COPY;
    case 14:
        return pxy_eq(n, len, "content-length") ? F_DROP : F_COPY;
    case 15:
        return pxy_eq(n, len, "x-forwarded-for") ? F_XFF : F_COPY;
    case 16:
        return pxy_eq(n, len, "x-forwarded-host") ? F_DROP : F_COPY;
    case 17:
        return pxy_eq(n, len, "x-forwarded-proto") || pxy_eq(n, len, "transfer-encoding") ? F_DROP : F_COPY;
    default:
        return F_COPY;
    }
}

/* Fields named by Connection are hop-by-hop too. */
int request_named_by_connection(const struct http_header *hs, size_t nh, const struct http_header *h)
{
    for (size_t i = 0; i < nh; i++) {
        if (!pxy_eq(hs[i].name, hs[i].name_len, "connection"))
            continue;
        const char *v = hs[i].value, *end = v + hs[i].value_len;
        while (v < end) {
            while (v < end && (*v == ' ' || *v == ',' || *v == '\t'))
                v++;
            const char *t = v;
            while (v < end && *v != ',' && *v != ' ' && *v != '\t')
                v++;
            if (v > t && (size_t)(v - t) == h->name_len && strncasecmp(t, h->name, h->name_len) == 0)
                return 1;
        }
    }
    return 0;
}

struct out {
    char *p;
    size_t len, cap;
    int oom;
};

static void put(struct out *o, const void *s, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n)
            cap *= 2;
        char *np = realloc(o->p, cap);
        if (!np) {
            o->oom = 1;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

#define PUT(o, lit) put((o), (lit), sizeof(lit) - 1)

static void put_field(struct out *o, const char *name, size_t nl, const char *value, size_t vl)
{
    put(o, name, nl);
    PUT(o, ": ");
    put(o, value, vl);
    PUT(o, "\r\n");
}

/* The head sent upstream. */
static void build_head(struct pxy *p, struct out *o)
{
    struct http_exchange *x = p->x;
    const struct http_request *req = &x->req;
    int has_connection = 0;
    put(o, req->method_str, req->method_len);
    PUT(o, " ");
    if (req->form == HTTP_FORM_ABSOLUTE) /* origin-form upstream */
        put(o, req->path, req->path_len + (req->query ? req->query_len + 1 : 0));
    else
        put(o, req->target, req->target_len);
    PUT(o, " HTTP/1.1\r\n");
    const char *xff[8];
    size_t xffl[8], nxff = 0;
    const struct http_header *via = NULL;
    for (size_t i = 0; i < req->nheaders && !has_connection; i++)
        has_connection = pxy_eq(req->headers[i].name, req->headers[i].name_len, "connection");
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        enum field f = request_field(h, p->upgrade);
        if (f == F_DROP)
            continue;
        if (f == F_XFF) {
            if (nxff < 8)
                xff[nxff] = h->value, xffl[nxff++] = h->value_len;
            continue;
        }
        if (f == F_VIA) {
            via = h;
            continue;
        }
        if (has_connection && request_named_by_connection(req->headers, req->nheaders, h) &&
            !(p->upgrade && pxy_eq(h->name, h->name_len, "upgrade")))
            continue;
        put_field(o, h->name, h->name_len, h->value, h->value_len);
    }
    if (!req->host)
        put_field(o, "Host", 4, p->s->name, strlen(p->s->name));
    char addr[64];
    size_t al = http_peer_addr(x, addr, sizeof(addr));
    PUT(o, "X-Forwarded-For: ");
    for (size_t i = 0; i < nxff; i++) {
        put(o, xff[i], xffl[i]);
        PUT(o, ", ");
    }
    put(o, al ? addr : "unknown", al ? al : 7);
    PUT(o, "\r\nX-Forwarded-Proto: http\r\n");
    if (req->host)
        put_field(o, "X-Forwarded-Host", 16, req->host, req->host_len);
    size_t idl;
    const char *id = http_request_id(x, &idl);
    put_field(o, "X-Request-Id", 12, id, idl);
    PUT(o, "Via: ");
    if (via) {
        put(o, via->value, via->value_len);
        PUT(o, ", ");
    }
    PUT(o, "1.1 cohort\r\n");
    if (req->chunked) {
        PUT(o, "Transfer-Encoding: chunked\r\n");
    } else if (req->content_length > 0) {
        char n[32];
        put_field(o, "Content-Length", 14, n, (size_t)snprintf(n, sizeof(n), "%lld", (long long)req->content_length));
    }
    if (p->upgrade)
        PUT(o, "Connection: Upgrade\r\n");
    else if (p->s->pool && ((struct up_pool *)p->s->pool)->max == 0)
        PUT(o, "Connection: close\r\n");
    PUT(o, "\r\n");
}

static void on_client_body(struct http_exchange *x, const char *data, size_t len, int status);

/* The connection is ready: the head goes, then the body as it comes. */
void request_send(struct pxy *p)
{
    struct proxy *px = p->px;
    struct out o = {.p = px->scratch, .cap = px->scratch_cap};
    p->uc->buf = pxy_buf_get(px);
    p->uc->cap = p->uc->buf ? UP_BUF : 0;
    p->uc->len = 0;
    p->uc->uses++;
    build_head(p, &o);
    px->scratch = o.p;
    px->scratch_cap = o.cap;
    if (o.oom || !p->uc->buf) {
        pxy_answer_error(p, 503, "out of memory");
        return;
    }
    uv_buf_t b = uv_buf_init(o.p, (unsigned)o.len);
    int r = pool_write(p->uc, &b, 1);
    if (r < 0) {
        pxy_attempt_failed(p, UP_FAIL_RESET);
        return;
    }
    p->sent_any = 1;
    if (!http_req_has_body(p->x)) {
        p->req_done = 1;
        p->state = PS_WAIT;
        pxy_set_list(p, TL_WAIT);
        return;
    }
    p->chunked_req = p->x->req.chunked;
    p->state = PS_SEND;
    pxy_set_list(p, TL_IDLE);
    pxy_enter(p);
    http_body_start(p->x, on_client_body);
    pxy_leave(p);
}

/* The client's body, piece by piece, to the server. */
static void on_client_body(struct http_exchange *x, const char *data, size_t len, int status)
{
    struct pxy *p = x->handler_data;
    if (!p || !p->uc || p->req_done)
        return;
    if (status < 0) {
        if (p->head_sent) {
            p->x = NULL;
            x->on_abort = NULL;
            x->handler_data = NULL;
            pxy_describe(p, p->s->name);
            http_abort(x);
            pxy_release(p);
        } else {
            pxy_answer_error(p, status == -EMSGSIZE ? 413 : 400,
                         status == -EMSGSIZE ? "request body too large" : "malformed request body");
        }
        return;
    }
    char hex[24];
    uv_buf_t b[4];
    unsigned nb = 0;
    if (len && p->chunked_req) {
        b[nb++] = uv_buf_init(hex, (unsigned)snprintf(hex, sizeof(hex), "%zx\r\n", len));
        b[nb++] = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
        b[nb++] = uv_buf_init("\r\n", 2);
    } else if (len) {
        b[nb++] = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
    }
    if (status == 1 && p->chunked_req)
        b[nb++] = uv_buf_init("0\r\n\r\n", 5);
    if (len)
        p->body_consumed = 1;
    if (nb && pool_write(p->uc, b, nb) < 0) {
        pxy_attempt_failed(p, UP_FAIL_RESET);
        return;
    }
    pxy_touch(p);
    if (status == 1) {
        p->req_done = 1;
        if (p->state == PS_SEND) {
            p->state = PS_WAIT;
            pxy_set_list(p, TL_WAIT);
        }
        return;
    }
    if (p->uc->queued > HIGH_MARK) {
        http_body_pause(x);
        p->uc->want_drain = 1;
        p->uc->drain_mark = LOW_MARK;
    }
}

/* The server took what was queued: the client's body flows again. */
void request_on_up_drain(struct up_conn *uc)
{
    struct pxy *p = uc->owner;
    if (p->state == PS_TUNNEL) {
        tunnel_resume_client(p);
        return;
    }
    if (!p->x || p->req_done)
        return;
    pxy_touch(p);
    pxy_enter(p);
    http_body_resume(p->x);
    pxy_leave(p);
}

