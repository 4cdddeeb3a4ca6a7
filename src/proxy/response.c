/*
 * The proxy's response: its head parsed and forwarded (hop-by-hop fields
 * removed, Via added), its body streamed to the client, pausing the
 * server while the client lags; the attempt's end when it is complete.
 */
#include "proxy/pxy.h"

#include <stdlib.h>

#include "core/log.h"
#include "http/accesslog.h"

/* --- the response ---------------------------------------------------------- */

/* What becomes of a response field on its way to the client. */
static int response_field_dropped(const struct http_header *h, int upgrade)
{
    const char *n = h->name;
    size_t len = h->name_len;
    if (len >= 6 && strncasecmp(n, "proxy-", 6) == 0)
        return 1;
    switch (len) {
    case 2:
        return pxy_eq(n, len, "te");
    case 4:
        return pxy_eq(n, len, "date");
    case 6:
        return pxy_eq(n, len, "server");
    case 7:
        return pxy_eq(n, len, "trailer") || (!upgrade && pxy_eq(n, len, "upgrade"));
    case 10:
        return (!upgrade && pxy_eq(n, len, "connection")) || pxy_eq(n, len, "keep-alive");
    case 12:
        return pxy_eq(n, len, "x-request-id");
    case 14:
        return pxy_eq(n, len, "content-length");
    case 17:
        return pxy_eq(n, len, "transfer-encoding");
    default:
        return 0;
    }
}

/* The response head to the client; 1 when the exchange goes on. */
static int forward_head(struct pxy *p, size_t head_len)
{
    struct http_exchange *x = p->x;
    const struct http_response *res = &p->res;
    struct metrics_upstream_counts *c = pxy_counts(p);
    if (c)
        metrics_add(c->responses, 1);
    if (res->status >= 500 && p->pg->g.cfg->passive.on_5xx)
        pxy_count_failure(p, UP_FAIL_5XX);
    int tunnel = res->status == 101 && p->upgrade && res->upgrade;
    http_begin(x, res->status);
    int has_connection = 0;
    const struct http_header *via = NULL;
    for (size_t i = 0; i < res->nheaders; i++) {
        const struct http_header *h = &res->headers[i];
        if (h->name_len == 10 && pxy_eq(h->name, 10, "connection"))
            has_connection = 1;
    }
    for (size_t i = 0; i < res->nheaders; i++) {
        const struct http_header *h = &res->headers[i];
        if (response_field_dropped(h, tunnel))
            continue;
        if (h->name_len == 3 && pxy_eq(h->name, 3, "via")) {
            via = h;
            continue;
        }
        if (has_connection && !tunnel && request_named_by_connection(res->headers, res->nheaders, h))
            continue;
        http_header_n(x, h->name, h->name_len, h->value, h->value_len);
    }
    if (via) {
        char v[512];
        size_t n = via->value_len < sizeof(v) - 12 ? via->value_len : sizeof(v) - 12;
        memcpy(v, via->value, n);
        memcpy(v + n, ", 1.1 cohort", 12);
        http_header_n(x, "Via", 3, v, n + 12);
    } else {
        http_header_n(x, "Via", 3, "1.1 cohort", 10);
    }
    p->head_sent = 1;
    if (tunnel) {
        tunnel_start(p, head_len);
        return 0;
    }
    p->body = http_response_body(res, x->req.method);
    int64_t length = -1;
    if (p->body == HTTP_BODY_LENGTH)
        length = res->content_length;
    else if (p->body == HTTP_BODY_NONE && x->req.method == HTTP_HEAD)
        length = res->content_length;
    p->body_left = p->body == HTTP_BODY_LENGTH ? (uint64_t)res->content_length : 0;
    memset(&p->dec, 0, sizeof(p->dec));
    p->dec.max_body = UINT64_MAX;
    http_stream_head(x, length);
    return 1;
}

/* Parses what arrived of the head; 1 when the body may follow. */
static int parse_head(struct pxy *p)
{
    struct up_conn *uc = p->uc;
    for (;;) {
        p->res.headers = p->rhdrs;
        p->res.headers_cap = RESP_FIELDS;
        struct http_limits lim = {.max_head = UP_HEAD_MAX, .max_headers = RESP_FIELDS};
        ssize_t r = http_parse_response(uc->buf, uc->len, p->seen, &lim, &p->res);
        if (r == HTTP_INCOMPLETE) {
            p->seen = uc->len;
            if (uc->len == uc->cap) { /* a big head: more room, up to UP_HEAD_MAX */
                size_t cap = (size_t)uc->cap * 2 > UP_HEAD_MAX + 1 ? UP_HEAD_MAX + 1 : (size_t)uc->cap * 2;
                char *nb = cap > uc->cap ? realloc(uc->buf, cap) : NULL;
                if (!nb) {
                    pxy_attempt_failed(p, UP_FAIL_BAD_RESPONSE);
                    return 0;
                }
                uc->buf = nb;
                uc->cap = (uint32_t)cap;
            }
            return 0;
        }
        if (r == HTTP_ERROR) {
            log_warn("upstream %s: server %s sent a bad response: %s", p->pg->g.name, p->s->name, p->res.error);
            pxy_attempt_failed(p, UP_FAIL_BAD_RESPONSE);
            return 0;
        }
        p->seen = 0;
        if (p->res.status >= 200 || (p->res.status == 101 && p->upgrade && p->res.upgrade)) {
            if (!forward_head(p, (size_t)r))
                return 0;
            memmove(uc->buf, uc->buf + r, uc->len - (size_t)r);
            uc->len -= (uint32_t)r;
            p->head_parsed = 1;
            return 1;
        }
        /* 100 Continue and other interim answers: not forwarded */
        memmove(uc->buf, uc->buf + r, uc->len - (size_t)r);
        uc->len -= (uint32_t)r;
        if (!uc->len)
            return 0;
    }
}

/* The response is complete: the connection may serve again. */
static void response_finish(struct pxy *p)
{
    struct up_conn *uc = p->uc;
    struct metrics_upstream_counts *c = pxy_counts(p);
    if (c)
        metrics_add(c->latency_us_sum, (uv_hrtime() - p->t_attempt) / 1000);
    if (p->s && !(p->res.status >= 500 && p->pg->g.cfg->passive.on_5xx))
        p->s->fails = 0; /* a success ends a run of failures */
    int reuse = uc && p->res.keep_alive && p->req_done && p->body != HTTP_BODY_CLOSE && uc->len == 0 &&
                !p->upgrade;
    if (accesslog_enabled)
        pxy_describe(p, p->s ? p->s->name : "-");
    pxy_detach(p, reuse);
    p->s = NULL;
    struct http_exchange *x = p->x;
    if (x) {
        x->on_abort = NULL;
        x->handler_data = NULL;
        p->x = NULL;
        http_stream_end(x);
    }
    pxy_release(p);
}


static void on_client_drain(struct http_exchange *x)
{
    struct pxy *p = x->handler_data;
    if (p && p->uc) {
        pxy_touch(p);
        pool_read_resume(p->uc);
    }
}

/* Hands the body bytes in the buffer to the client; finishes at its end. */
static void forward_body(struct pxy *p)
{
    struct up_conn *uc = p->uc;
    size_t n = uc->len, take = n, rest = 0;
    int done = 0;
    switch (p->body) {
    case HTTP_BODY_NONE:
        take = 0, rest = n, done = 1;
        break;
    case HTTP_BODY_LENGTH:
        take = n < p->body_left ? n : (size_t)p->body_left;
        p->body_left -= take;
        rest = n - take;
        done = p->body_left == 0;
        break;
    case HTTP_BODY_CHUNKED: {
        ssize_t r = http_chunked_decode(&p->dec, uc->buf, &take);
        if (r == HTTP_ERROR) {
            pxy_attempt_failed(p, UP_FAIL_BAD_RESPONSE);
            return;
        }
        done = r >= 0;
        rest = done ? (size_t)r : 0;
        break;
    }
    case HTTP_BODY_CLOSE:
        break;
    }
    size_t queued = take ? http_stream_write(p->x, uc->buf, take) : 0;
    if (rest)
        memmove(uc->buf, uc->buf + take, rest);
    uc->len = (uint32_t)rest;
    if (done) {
        response_finish(p);
        return;
    }
    if (queued > HIGH_MARK) {
        pool_read_pause(uc);
        http_on_drain(p->x, on_client_drain, LOW_MARK);
    }
}

void response_on_up_read(struct up_conn *uc, ssize_t n)
{
    struct pxy *p = uc->owner;
    if (p->state == PS_TUNNEL) {
        tunnel_up_read(p, n);
        return;
    }
    if (!p->x) {
        pxy_release(p);
        return;
    }
    if (n < 0) {
        if (p->head_parsed && p->body == HTTP_BODY_CLOSE && n == UV_EOF) {
            response_finish(p);
            return;
        }
        if (!p->head_parsed && uc->len == 0 && p->state != PS_BODY)
            pxy_attempt_failed(p, UP_FAIL_RESET);
        else
            pxy_attempt_failed(p, UP_FAIL_BAD_RESPONSE);
        return;
    }
    if (p->state != PS_BODY) { /* the first byte: from now on, the idle clock */
        p->state = PS_BODY;
        pxy_set_list(p, TL_IDLE);
    } else {
        pxy_touch(p);
    }
    if (!p->head_parsed && !parse_head(p))
        return;
    forward_body(p);
}

