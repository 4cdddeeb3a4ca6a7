/*
 * The proxy handler. See proxy.h.
 *
 * A proxied request (struct pxy) goes through states:
 *
 *   CONNECT  connecting to the picked server            timeouts.connect
 *   SEND     request head sent, its body streaming      timeouts.idle
 *   WAIT     request sent, no response byte yet         timeouts.first_byte
 *   BODY     response arriving (head, then body)        timeouts.idle
 *   TUNNEL   after 101: bytes both ways                 timeouts.idle
 *
 * and sits in the group's list for that timeout; every list holds requests
 * in the order they entered it with one timeout, so a sweep every 100 ms
 * looks only at the heads (as the engine's own lists do).
 *
 * Calls into the engine can call back into us (a client that goes away
 * while we hand it bytes): `depth` counts our frames on the stack, and a
 * request whose client went away meanwhile is torn down when the
 * outermost frame returns (pxy_leave).
 */
#include "proxy/proxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"
#include "http/accesslog.h"
#include "http/server.h"
#include "proxy/pool.h"
#include "proxy/upstream.h"

#define UP_BUF (16 * 1024)       /* response read buffer */
#define UP_HEAD_MAX (64 * 1024)  /* a response head may grow it to this */
#define RESP_FIELDS 128
#define HIGH_MARK (256 * 1024)   /* queued bytes above which the source pauses */
#define LOW_MARK (64 * 1024)     /* and below which it resumes */
#define SWEEP_MS 100
#define FREE_MAX 64
#define TUNNEL_BUF (16 * 1024)

enum pstate { PS_NEW, PS_CONNECT, PS_SEND, PS_WAIT, PS_BODY, PS_TUNNEL, PS_DONE };
enum { TL_CONNECT, TL_WAIT, TL_IDLE, TL_COUNT, TL_NONE = TL_COUNT };

struct proxy;

struct pgroup {
    struct up_group g;
    struct proxy *px;
    struct list_node lists[TL_COUNT];
    uint64_t timeout[TL_COUNT];
};

struct proxy {
    uv_loop_t *loop;
    const struct cfg *cfg;
    struct metrics_slot *slot;
    proxy_report_fn report;
    struct pgroup *groups;
    size_t ngroups;
    struct up_pool *pools;     /* one per server, all groups */
    size_t npools;
    uv_timer_t sweep;
    struct pxy *free_pxy[FREE_MAX];
    char *free_buf[FREE_MAX];
    int nfree_pxy, nfree_buf;
    char *scratch;             /* request heads are built here */
    size_t scratch_cap;
    int stopping;
    void (*stopped)(void *arg);
    void *stopped_arg;
};

struct pxy {
    struct proxy *px;
    struct pgroup *pg;
    struct http_exchange *x;   /* NULL once the client went away */
    struct up_conn *uc;        /* the current attempt's connection */
    struct up_server *s;       /* the current attempt's server */
    int tried[UP_MAX_TRIES];
    uint8_t why[UP_MAX_TRIES];
    int ntried, full;
    uint8_t state, tl;
    struct list_node tlink;
    uint64_t since;            /* loop ms it entered its timeout list */
    uint64_t t_attempt;        /* ns: the current attempt's start */
    const char *key;
    size_t key_len;
    char keybuf[64];
    int depth;
    unsigned sent_any : 1;     /* a byte of the request reached this attempt's socket */
    unsigned body_consumed : 1;/* a byte of the client's body was taken: no retry */
    unsigned req_done : 1;     /* the whole request was sent */
    unsigned retrying : 1;     /* counted in the group's retries in flight */
    unsigned head_sent : 1;    /* the response head went to the client */
    unsigned chunked_req : 1;  /* the body goes upstream chunked */
    unsigned upgrade : 1;      /* Connection: Upgrade was asked for */
    unsigned dead : 1;         /* the client went away while we were busy */
    unsigned head_parsed : 1;
    unsigned released : 1;     /* only its memory is left (client writes pending) */
    int cw;                    /* tunnel: writes to the client not yet called back */
    /* the response */
    struct http_response res;
    enum http_body_kind body;
    uint64_t body_left;
    struct http_chunked dec;
    size_t seen;               /* bytes of the head found incomplete */
    /* tunnel */
    uv_stream_t *client;
    char *tbuf;
    char log[128];
    struct http_header rhdrs[RESP_FIELDS];
};

static void start_attempt(struct pxy *p);
static void attempt_failed(struct pxy *p, enum up_fail why);
static void release(struct pxy *p);
static void tunnel_up_read(struct pxy *p, ssize_t n);
static void tunnel_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b);
static void tunnel_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static const struct up_conn_ops conn_ops;

/* --- small helpers --------------------------------------------------------- */

static uint64_t now_ms(const struct proxy *px)
{
    return uv_now(px->loop);
}


static void set_list(struct pxy *p, int tl)
{
    list_unlink(&p->tlink);
    p->tl = (uint8_t)tl;
    if (tl == TL_NONE)
        return;
    p->since = now_ms(p->px);
    list_append(&p->pg->lists[tl], &p->tlink);
}

/* Progress: the idle clock starts again. */
static void touch(struct pxy *p)
{
    if (p->tl == TL_IDLE)
        set_list(p, TL_IDLE);
}

static char *buf_get(struct proxy *px)
{
    return px->nfree_buf ? px->free_buf[--px->nfree_buf] : malloc(UP_BUF);
}

static void buf_put(struct proxy *px, char *b, uint32_t cap)
{
    if (cap == UP_BUF && px->nfree_buf < FREE_MAX)
        px->free_buf[px->nfree_buf++] = b;
    else
        free(b);
}

static struct metrics_upstream_counts *counts(const struct pxy *p)
{
    int i = p->s ? p->s->stats : -1;
    return i >= 0 ? &p->px->slot->upstream[i] : NULL;
}

static int eq(const char *a, size_t an, const char *lit)
{
    size_t n = strlen(lit);
    return an == n && strncasecmp(a, lit, n) == 0;
}

/* --- the access log's words ------------------------------------------------- */

/* "<server> attempts=N[ skipped=<server>:<why>,...][ full=N]", cut to fit. */
static void describe(struct pxy *p, const char *answered)
{
    size_t n = (size_t)snprintf(p->log, sizeof(p->log), "%s attempts=%d", answered, p->ntried);
    int first = 1;
    for (int i = 0; i < p->ntried && n < sizeof(p->log); i++) {
        if (!p->why[i])
            continue;
        const char *name = p->pg->g.servers[p->tried[i]].name;
        const char *why = up_fail_name((enum up_fail)p->why[i]);
        if (n + strlen(name) + strlen(why) + 12 >= sizeof(p->log)) {
            n += (size_t)snprintf(p->log + n, sizeof(p->log) - n, ",...");
            break;
        }
        n += (size_t)snprintf(p->log + n, sizeof(p->log) - n, "%s%s:%s", first ? " skipped=" : ",", name, why);
        first = 0;
    }
    if (p->full && n < sizeof(p->log))
        snprintf(p->log + n, sizeof(p->log) - n, " full=%d", p->full);
    if (p->x)
        p->x->upstream = p->log;
}

/* --- lifetime ---------------------------------------------------------------- */

static struct pxy *pxy_get(struct proxy *px)
{
    struct pxy *p = px->nfree_pxy ? px->free_pxy[--px->nfree_pxy] : malloc(sizeof(*p));
    if (!p)
        return NULL;
    memset(p, 0, offsetof(struct pxy, rhdrs));
    p->px = px;
    p->tl = TL_NONE;
    list_init(&p->tlink);
    return p;
}

static void pxy_put(struct pxy *p)
{
    struct proxy *px = p->px;
    if (px->nfree_pxy < FREE_MAX)
        px->free_pxy[px->nfree_pxy++] = p;
    else
        free(p);
}

/* Ends the current attempt: its server's count, and its connection back
 * to the pool (`reuse`) or closed. */
static void detach(struct pxy *p, int reuse)
{
    struct up_conn *uc = p->uc;
    if (p->s) {
        p->s->inflight--;
        if (p->s->stats >= 0)
            metrics_add(p->px->slot->upstream_inflight[p->s->stats], (uint64_t)-1);
    }
    if (uc) {
        p->uc = NULL;
        if (uc->buf)
            buf_put(p->px, uc->buf, uc->cap);
        uc->buf = NULL;
        uc->cap = uc->len = 0;
        if (reuse && !p->px->stopping)
            pool_give(uc);
        else
            pool_close_conn(uc);
    }
}

/* The request is over for us (answered, failed, or its client gone). With
 * our frames still on the stack it only marks the request: the outermost
 * one releases it (pxy_leave). */
static void release(struct pxy *p)
{
    struct pgroup *pg = p->pg;
    if (p->depth > 0) {
        p->dead = 1;
        return;
    }
    if (p->state == PS_DONE)
        return;
    if (p->uc || p->s)
        detach(p, 0);
    p->s = NULL;
    set_list(p, TL_NONE);
    pg->g.inflight--;
    if (p->retrying)
        pg->g.retrying--;
    if (p->tbuf)
        free(p->tbuf);
    p->tbuf = NULL;
    if (p->x) {
        p->x->on_abort = NULL;
        p->x->handler_data = NULL;
    }
    p->state = PS_DONE;
    if (p->cw > 0) /* a tunnel's writes to the client still point here */
        p->released = 1;
    else
        pxy_put(p);
}

static void pxy_enter(struct pxy *p)
{
    p->depth++;
}

/* Leaves a frame; 1 when the request was torn down (do not touch it). */
static int pxy_leave(struct pxy *p)
{
    if (--p->depth > 0 || !p->dead)
        return p->dead;
    release(p);
    return 1;
}

/* The engine: the client went away. */
static void on_client_abort(struct http_exchange *x)
{
    struct pxy *p = x->handler_data;
    if (!p)
        return;
    p->x = NULL;
    p->client = NULL;
    release(p);
}

/* --- answers ------------------------------------------------------------------ */

/* An answer of our own (no server's): 5xx with a JSON error. */
static void answer_error(struct pxy *p, int status, const char *msg)
{
    struct http_exchange *x = p->x;
    describe(p, "-");
    if (x) {
        x->on_abort = NULL;
        x->handler_data = NULL;
        p->x = NULL;
        http_error(x, status, msg);
    }
    release(p);
}

static void count_failure(struct pxy *p, enum up_fail why)
{
    struct up_server *s = p->s;
    struct metrics_upstream_counts *c = counts(p);
    if (c)
        metrics_add(c->failures, 1);
    const struct cfg_upstream *cfg = p->pg->g.cfg;
    if (!s || !cfg->passive.failures || !up_fail_counts(why, cfg->passive.on_5xx))
        return;
    if (++s->fails < (uint32_t)cfg->passive.failures)
        return;
    struct up_report_msg m;
    memset(&m, 0, sizeof(m));
    snprintf(m.group, sizeof(m.group), "%s", p->pg->g.name);
    snprintf(m.server, sizeof(m.server), "%s", s->name);
    m.failures = s->fails;
    m.why = (uint32_t)why;
    s->fails = 0;
    if (p->px->report)
        p->px->report(&m, sizeof(m));
}

/* The response is complete: the connection may serve again. */
static void finish(struct pxy *p)
{
    struct up_conn *uc = p->uc;
    struct metrics_upstream_counts *c = counts(p);
    if (c)
        metrics_add(c->latency_us_sum, (uv_hrtime() - p->t_attempt) / 1000);
    if (p->s && !(p->res.status >= 500 && p->pg->g.cfg->passive.on_5xx))
        p->s->fails = 0; /* a success ends a run of failures */
    int reuse = uc && p->res.keep_alive && p->req_done && p->body != HTTP_BODY_CLOSE && uc->len == 0 &&
                !p->upgrade;
    if (accesslog_enabled)
        describe(p, p->s ? p->s->name : "-");
    detach(p, reuse);
    p->s = NULL;
    struct http_exchange *x = p->x;
    if (x) {
        x->on_abort = NULL;
        x->handler_data = NULL;
        p->x = NULL;
        http_stream_end(x);
    }
    release(p);
}

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
        return eq(n, len, "te") ? F_DROP : F_COPY;
    case 3:
        return eq(n, len, "via") ? F_VIA : F_COPY;
    case 4:
        return eq(n, len, "host") ? F_HOST : F_COPY;
    case 6:
        return eq(n, len, "expect") ? F_DROP : F_COPY;
    case 7:
        return eq(n, len, "trailer") ? F_DROP : eq(n, len, "upgrade") && !upgrade ? F_DROP : F_COPY;
    case 10:
        return eq(n, len, "connection") || eq(n, len, "keep-alive") ? F_DROP : F_COPY;
    case 12:
        return eq(n, len, "x-request-id") ? F_DROP : F_COPY;
    case 14:
        return eq(n, len, "content-length") ? F_DROP : F_COPY;
    case 15:
        return eq(n, len, "x-forwarded-for") ? F_XFF : F_COPY;
    case 16:
        return eq(n, len, "x-forwarded-host") ? F_DROP : F_COPY;
    case 17:
        return eq(n, len, "x-forwarded-proto") || eq(n, len, "transfer-encoding") ? F_DROP : F_COPY;
    default:
        return F_COPY;
    }
}

/* Fields named by Connection are hop-by-hop too. */
static int named_by_connection(const struct http_header *hs, size_t nh, const struct http_header *h)
{
    for (size_t i = 0; i < nh; i++) {
        if (!eq(hs[i].name, hs[i].name_len, "connection"))
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
        has_connection = eq(req->headers[i].name, req->headers[i].name_len, "connection");
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
        if (has_connection && named_by_connection(req->headers, req->nheaders, h) &&
            !(p->upgrade && eq(h->name, h->name_len, "upgrade")))
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
static void send_request(struct pxy *p)
{
    struct proxy *px = p->px;
    struct out o = {.p = px->scratch, .cap = px->scratch_cap};
    p->uc->buf = buf_get(px);
    p->uc->cap = p->uc->buf ? UP_BUF : 0;
    p->uc->len = 0;
    p->uc->uses++;
    build_head(p, &o);
    px->scratch = o.p;
    px->scratch_cap = o.cap;
    if (o.oom || !p->uc->buf) {
        answer_error(p, 503, "out of memory");
        return;
    }
    uv_buf_t b = uv_buf_init(o.p, (unsigned)o.len);
    int r = pool_write(p->uc, &b, 1);
    if (r < 0) {
        attempt_failed(p, UP_FAIL_RESET);
        return;
    }
    p->sent_any = 1;
    if (!http_req_has_body(p->x)) {
        p->req_done = 1;
        p->state = PS_WAIT;
        set_list(p, TL_WAIT);
        return;
    }
    p->chunked_req = p->x->req.chunked;
    p->state = PS_SEND;
    set_list(p, TL_IDLE);
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
            describe(p, p->s->name);
            http_abort(x);
            release(p);
        } else {
            answer_error(p, status == -EMSGSIZE ? 413 : 400,
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
        attempt_failed(p, UP_FAIL_RESET);
        return;
    }
    touch(p);
    if (status == 1) {
        p->req_done = 1;
        if (p->state == PS_SEND) {
            p->state = PS_WAIT;
            set_list(p, TL_WAIT);
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
static void on_up_drain(struct up_conn *uc)
{
    struct pxy *p = uc->owner;
    if (p->state == PS_TUNNEL) {
        if (p->client)
            uv_read_start(p->client, tunnel_alloc, tunnel_client_read);
        return;
    }
    if (!p->x || p->req_done)
        return;
    touch(p);
    pxy_enter(p);
    http_body_resume(p->x);
    pxy_leave(p);
}

/* --- attempts ------------------------------------------------------------ */

static void on_up_connect(struct up_conn *uc, int status)
{
    struct pxy *p = uc->owner;
    if (status < 0) {
        attempt_failed(p, UP_FAIL_REFUSED);
        return;
    }
    if (!p->x) {
        release(p);
        return;
    }
    send_request(p);
}

static void start_attempt(struct pxy *p)
{
    struct pgroup *pg = p->pg;
    /* the loop's clock (CLOCK_MONOTONIC, as the master's since_ms) is fine for slow start */
    struct up_pick pick = {.now_ms = now_ms(p->px), .key = p->key, .key_len = p->key_len, .tried = p->tried,
                           .ntried = p->ntried};
    int i = up_pick(&pg->g, &pick);
    p->full += pick.full;
    if (i < 0) {
        if (p->ntried == 0)
            answer_error(p, 503, i == -EBUSY ? "upstream servers are all at max_conns" : "no healthy upstream");
        else if (p->why[p->ntried - 1] == UP_FAIL_TIMEOUT) /* retry_on_timeout, and no server left */
            answer_error(p, 504, "upstream timed out");
        else
            answer_error(p, 502, "upstream failed");
        return;
    }
    struct up_server *s = &pg->g.servers[i];
    p->tried[p->ntried] = i;
    p->why[p->ntried] = 0;
    p->ntried++;
    p->s = s;
    p->sent_any = 0;
    p->head_parsed = 0;
    p->seen = 0;
    s->inflight++;
    struct metrics_upstream_counts *c = counts(p);
    if (c) {
        metrics_add(c->requests, 1);
        metrics_add(p->px->slot->upstream_inflight[s->stats], 1);
    }
    p->t_attempt = uv_hrtime();
    if (accesslog_enabled) /* in case the client leaves before the end */
        describe(p, s->name);
    p->uc = pool_take(s->pool, p, &conn_ops);
    if (p->uc) {
        send_request(p);
        return;
    }
    int err = 0;
    p->uc = pool_connect(s->pool, (const struct sockaddr *)&s->addr, p, &conn_ops, &err);
    if (!p->uc) {
        attempt_failed(p, UP_FAIL_REFUSED);
        return;
    }
    p->state = PS_CONNECT;
    set_list(p, TL_CONNECT);
}

static void attempt_failed(struct pxy *p, enum up_fail why)
{
    const struct cfg_upstream *cfg = p->pg->g.cfg;
    p->why[p->ntried - 1] = (uint8_t)why;
    count_failure(p, why);
    detach(p, 0);
    p->s = NULL;
    set_list(p, TL_NONE);
    struct http_exchange *x = p->x;
    if (!x) {
        release(p);
        return;
    }
    if (p->head_sent) { /* the client has part of an answer: cut it */
        describe(p, p->pg->g.servers[p->tried[p->ntried - 1]].name);
        p->x = NULL;
        x->on_abort = NULL;
        x->handler_data = NULL;
        http_abort(x);
        release(p);
        return;
    }
    if (http_req_has_body(x) && !p->req_done)
        http_body_pause(x);
    /* The budget counts retries of requests a server saw: one whose
     * connection failed (nothing sent) only moves to another server. */
    struct up_group *g = &p->pg->g;
    int budgeted = p->sent_any;
    int safe = up_retry_safe(why, x->req.method, p->sent_any, p->body_consumed) ||
               (why == UP_FAIL_TIMEOUT && cfg->retry_on_timeout &&
                up_retry_safe_after_timeout(x->req.method, p->body_consumed));
    if (p->ntried <= cfg->retries && safe &&
        (!budgeted || p->retrying ||
         up_budget_allows(g->retrying, g->inflight, cfg->retry_budget.percent, cfg->retry_budget.min))) {
        if (budgeted && !p->retrying) {
            p->retrying = 1;
            g->retrying++;
        }
        p->req_done = 0;
        start_attempt(p);
        return;
    }
    if (why == UP_FAIL_TIMEOUT || why == UP_FAIL_IDLE)
        answer_error(p, 504, "upstream timed out");
    else if (why == UP_FAIL_BAD_RESPONSE)
        answer_error(p, 502, "bad response from upstream");
    else
        answer_error(p, 502, "upstream failed");
}

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
        return eq(n, len, "te");
    case 4:
        return eq(n, len, "date");
    case 6:
        return eq(n, len, "server");
    case 7:
        return eq(n, len, "trailer") || (!upgrade && eq(n, len, "upgrade"));
    case 10:
        return (!upgrade && eq(n, len, "connection")) || eq(n, len, "keep-alive");
    case 12:
        return eq(n, len, "x-request-id");
    case 14:
        return eq(n, len, "content-length");
    case 17:
        return eq(n, len, "transfer-encoding");
    default:
        return 0;
    }
}

static void start_tunnel(struct pxy *p, size_t head_len);

/* The response head to the client; 1 when the exchange goes on. */
static int forward_head(struct pxy *p, size_t head_len)
{
    struct http_exchange *x = p->x;
    const struct http_response *res = &p->res;
    struct metrics_upstream_counts *c = counts(p);
    if (c)
        metrics_add(c->responses, 1);
    if (res->status >= 500 && p->pg->g.cfg->passive.on_5xx)
        count_failure(p, UP_FAIL_5XX);
    int tunnel = res->status == 101 && p->upgrade && res->upgrade;
    http_begin(x, res->status);
    int has_connection = 0;
    const struct http_header *via = NULL;
    for (size_t i = 0; i < res->nheaders; i++) {
        const struct http_header *h = &res->headers[i];
        if (h->name_len == 10 && eq(h->name, 10, "connection"))
            has_connection = 1;
    }
    for (size_t i = 0; i < res->nheaders; i++) {
        const struct http_header *h = &res->headers[i];
        if (response_field_dropped(h, tunnel))
            continue;
        if (h->name_len == 3 && eq(h->name, 3, "via")) {
            via = h;
            continue;
        }
        if (has_connection && !tunnel && named_by_connection(res->headers, res->nheaders, h))
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
        start_tunnel(p, head_len);
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
                    attempt_failed(p, UP_FAIL_BAD_RESPONSE);
                    return 0;
                }
                uc->buf = nb;
                uc->cap = (uint32_t)cap;
            }
            return 0;
        }
        if (r == HTTP_ERROR) {
            log_warn("upstream %s: server %s sent a bad response: %s", p->pg->g.name, p->s->name, p->res.error);
            attempt_failed(p, UP_FAIL_BAD_RESPONSE);
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

static void on_client_drain(struct http_exchange *x)
{
    struct pxy *p = x->handler_data;
    if (p && p->uc) {
        touch(p);
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
            attempt_failed(p, UP_FAIL_BAD_RESPONSE);
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
        finish(p);
        return;
    }
    if (queued > HIGH_MARK) {
        pool_read_pause(uc);
        http_on_drain(p->x, on_client_drain, LOW_MARK);
    }
}

static void on_up_read(struct up_conn *uc, ssize_t n)
{
    struct pxy *p = uc->owner;
    if (p->state == PS_TUNNEL) {
        tunnel_up_read(p, n);
        return;
    }
    if (!p->x) {
        release(p);
        return;
    }
    if (n < 0) {
        if (p->head_parsed && p->body == HTTP_BODY_CLOSE && n == UV_EOF) {
            finish(p);
            return;
        }
        if (!p->head_parsed && uc->len == 0 && p->state != PS_BODY)
            attempt_failed(p, UP_FAIL_RESET);
        else
            attempt_failed(p, UP_FAIL_BAD_RESPONSE);
        return;
    }
    if (p->state != PS_BODY) { /* the first byte: from now on, the idle clock */
        p->state = PS_BODY;
        set_list(p, TL_IDLE);
    } else {
        touch(p);
    }
    if (!p->head_parsed && !parse_head(p))
        return;
    forward_body(p);
}

static const struct up_conn_ops conn_ops = {
    .on_connect = on_up_connect,
    .on_read = on_up_read,
    .on_drain = on_up_drain,
};

/* --- tunnels (after 101) -------------------------------------------------- */

struct cwrite {
    uv_write_t req;
    struct pxy *p;
};

static void tunnel_end(struct pxy *p)
{
    struct http_exchange *x = p->x;
    if (accesslog_enabled)
        describe(p, p->s ? p->s->name : "-");
    p->client = NULL;
    if (x) {
        p->x = NULL;
        x->on_abort = NULL;
        x->handler_data = NULL;
        http_upgrade_end(x);
    }
    release(p);
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
static void tunnel_up_read(struct pxy *p, ssize_t n)
{
    struct up_conn *uc = p->uc;
    if (n < 0 || !p->client) {
        tunnel_end(p);
        return;
    }
    touch(p);
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
    touch(p);
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

static void start_tunnel(struct pxy *p, size_t head_len)
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
    set_list(p, TL_IDLE);
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

/* --- the handler ------------------------------------------------------------ */

/* The hash key: the client's address, a header, or a cookie's value. */
static void hash_key(struct pxy *p)
{
    const struct cfg_upstream *cfg = p->pg->g.cfg;
    struct http_exchange *x = p->x;
    if (cfg->algorithm != CFG_LB_HASH)
        return;
    if (cfg->hash_on == CFG_HASH_CLIENT) {
        p->key_len = http_peer_addr(x, p->keybuf, sizeof(p->keybuf));
        p->key = p->keybuf;
        return;
    }
    if (cfg->hash_on == CFG_HASH_HEADER) {
        p->key = http_req_header(x, cfg->hash_name, &p->key_len);
        return;
    }
    size_t nl = strlen(cfg->hash_name);
    for (int i = http_find_header(&x->req, "Cookie", 6, 0); i >= 0;
         i = http_find_header(&x->req, "Cookie", 6, (size_t)i + 1)) {
        const char *v = x->req.headers[i].value, *end = v + x->req.headers[i].value_len;
        while (v < end) {
            while (v < end && (*v == ' ' || *v == ';'))
                v++;
            const char *eqs = memchr(v, '=', (size_t)(end - v));
            const char *semi = memchr(v, ';', (size_t)(end - v));
            if (!semi)
                semi = end;
            if (eqs && eqs < semi && (size_t)(eqs - v) == nl && memcmp(v, cfg->hash_name, nl) == 0) {
                p->key = eqs + 1;
                p->key_len = (size_t)(semi - eqs - 1);
                return;
            }
            v = semi;
        }
    }
}

static void proxy_handle(struct http_exchange *x)
{
    struct pgroup *pg = x->match.route->data;
    struct proxy *px = pg->px;
    struct pxy *p = pxy_get(px);
    if (!p) {
        http_error(x, 503, "out of memory");
        return;
    }
    p->pg = pg;
    p->x = x;
    p->upgrade = x->req.upgrade;
    x->handler_data = p;
    x->on_abort = on_client_abort;
    pg->g.inflight++;
    hash_key(p);
    start_attempt(p);
}

/* --- timeouts ---------------------------------------------------------------- */

static void timed_out(struct pxy *p, int tl)
{
    if (p->state == PS_TUNNEL) {
        tunnel_end(p);
        return;
    }
    attempt_failed(p, tl == TL_CONNECT ? UP_FAIL_CONNECT_TIMEOUT : tl == TL_WAIT ? UP_FAIL_TIMEOUT : UP_FAIL_IDLE);
}

static void sweep_cb(uv_timer_t *t)
{
    struct proxy *px = t->data;
    uint64_t now = now_ms(px);
    for (size_t i = 0; i < px->ngroups; i++) {
        struct pgroup *pg = &px->groups[i];
        for (int tl = 0; tl < TL_COUNT; tl++) {
            struct list_node *head = &pg->lists[tl];
            while (!list_empty(head)) {
                struct pxy *p = list_entry(head->next, struct pxy, tlink);
                if (now - p->since < pg->timeout[tl])
                    break;
                set_list(p, TL_NONE);
                timed_out(p, tl);
            }
        }
    }
    for (size_t i = 0; i < px->npools; i++)
        pool_expire(&px->pools[i], now);
}

/* --- the module ----------------------------------------------------------- */

static int group_setup(struct proxy *px, struct pgroup *pg, const struct cfg_upstream *cu, size_t *pool_at,
                       int *stats_index, char *err, size_t errlen)
{
    pg->px = px;
    int r = up_group_init(&pg->g, cu);
    if (r < 0) {
        snprintf(err, errlen, "upstream %s: %s", cu->name, r == -EINVAL ? "a server address is not numeric" : "out of memory");
        return r;
    }
    up_group_seed(&pg->g, uv_hrtime() ^ ((uint64_t)getpid() << 32));
    for (int tl = 0; tl < TL_COUNT; tl++)
        list_init(&pg->lists[tl]);
    pg->timeout[TL_CONNECT] = (uint64_t)cu->timeouts.connect_ms;
    pg->timeout[TL_WAIT] = (uint64_t)cu->timeouts.first_byte_ms;
    pg->timeout[TL_IDLE] = (uint64_t)cu->timeouts.idle_ms;
    for (size_t k = 0; k < pg->g.n; k++) {
        struct up_pool *pool = &px->pools[(*pool_at)++];
        pool_init(pool, px->loop, (size_t)cu->keepalive.size, (uint64_t)cu->keepalive.idle_ms);
        pg->g.servers[k].pool = pool;
        pg->g.servers[k].stats = *stats_index < METRICS_UPSTREAMS ? *stats_index : -1;
        (*stats_index)++;
    }
    return 0;
}

struct proxy *proxy_new(uv_loop_t *loop, const struct cfg *cfg, struct metrics_slot *slot, proxy_report_fn report,
                        char *err, size_t errlen)
{
    struct proxy *px = calloc(1, sizeof(*px));
    size_t nservers = 0;
    if (!px)
        return NULL;
    px->loop = loop;
    px->cfg = cfg;
    px->slot = slot;
    px->report = report;
    for (size_t i = 0; i < cfg->nupstreams; i++)
        nservers += cfg->upstreams[i].nservers;
    px->groups = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*px->groups));
    px->pools = calloc(nservers ? nservers : 1, sizeof(*px->pools));
    if (!px->groups || !px->pools) {
        snprintf(err, errlen, "out of memory");
        proxy_free(px);
        return NULL;
    }
    int stats_index = 0; /* the master names the counters in the same order (health.c) */
    for (size_t i = 0; i < cfg->nupstreams; i++, px->ngroups++) {
        if (group_setup(px, &px->groups[i], &cfg->upstreams[i], &px->npools, &stats_index, err, errlen) < 0) {
            proxy_free(px);
            return NULL;
        }
    }
    uv_timer_init(loop, &px->sweep);
    px->sweep.data = px;
    uv_timer_start(&px->sweep, sweep_cb, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&px->sweep);
    return px;
}

int proxy_route(struct proxy *px, struct router *r, const struct cfg_route *rt)
{
    for (size_t i = 0; i < px->ngroups; i++)
        if (strcmp(px->groups[i].g.name, rt->upstream) == 0)
            return router_add_flags(r, HTTP_M_ANY, rt->path, proxy_handle, &px->groups[i], ROUTE_STREAM);
    return -ENOENT;
}

void proxy_on_state(struct proxy *px, const void *msg, size_t len)
{
    struct up_state_msg m;
    if (!px || len != sizeof(m))
        return;
    memcpy(&m, msg, sizeof(m));
    m.group[sizeof(m.group) - 1] = m.server[sizeof(m.server) - 1] = '\0';
    for (size_t i = 0; i < px->ngroups; i++) {
        struct up_group *g = &px->groups[i].g;
        if (strcmp(g->name, m.group) != 0)
            continue;
        int k = up_find(g, m.server);
        if (k < 0)
            return;
        struct up_server *s = &g->servers[k];
        s->flags = m.flags;
        s->since_ms = m.since_ms;
        s->fails = 0;
        if (m.flags) /* its idle connections are of no use now */
            pool_close_idle(s->pool);
        return;
    }
}

static void sweep_closed(uv_handle_t *h)
{
    struct proxy *px = h->data;
    if (px->stopped)
        px->stopped(px->stopped_arg);
}

void proxy_stop(struct proxy *px, void (*done)(void *arg), void *arg)
{
    px->stopping = 1;
    px->stopped = done;
    px->stopped_arg = arg;
    for (size_t i = 0; i < px->npools; i++)
        pool_close_idle(&px->pools[i]);
    uv_close((uv_handle_t *)&px->sweep, sweep_closed);
}

void proxy_free(struct proxy *px)
{
    if (!px)
        return;
    for (size_t i = 0; i < px->ngroups; i++)
        up_group_free(&px->groups[i].g);
    for (int i = 0; i < px->nfree_pxy; i++)
        free(px->free_pxy[i]);
    for (int i = 0; i < px->nfree_buf; i++)
        free(px->free_buf[i]);
    free(px->groups);
    free(px->pools);
    free(px->scratch);
    free(px);
}
