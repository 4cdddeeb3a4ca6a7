/*
 * The proxy handler: a request's life (its memory, frames, release), the
 * access log's words, attempts on servers and retries, timeouts, and the
 * module (groups, pools, state messages). See proxy.h and pxy.h.
 */
#include "proxy/pxy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "http/accesslog.h"
#include "http/handlers.h"
#include "proxy/proxy_cfg.h"

static void start_attempt(struct pxy *p);
static void on_up_connect(struct up_conn *uc, int status);

/* --- free lists ------------------------------------------------------------ */

char *pxy_buf_get(struct proxy *px)
{
    return freelist_get(&px->free_buf, UP_BUF);
}

static void pxy_buf_put(struct proxy *px, char *b, uint32_t cap)
{
    if (cap == UP_BUF)
        freelist_put(&px->free_buf, b);
    else
        free(b);
}

/* --- the access log's words ------------------------------------------------- */

/* "<server> attempts=N[ skipped=<server>:<why>,...][ full=N]", cut to fit. */
void pxy_describe(struct pxy *p, const char *answered)
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
        p->x->log_peer = p->log;
}

/* --- lifetime ---------------------------------------------------------------- */

static struct pxy *pxy_get(struct proxy *px)
{
    struct pxy *p = freelist_get(&px->free_pxy, sizeof(*p));
    if (!p)
        return NULL;
    memset(p, 0, offsetof(struct pxy, rhdrs));
    p->px = px;
    p->tl = TL_NONE;
    tl_node_init(&p->tn);
    return p;
}

void pxy_put(struct pxy *p)
{
    freelist_put(&p->px->free_pxy, p);
}

/* Ends the current attempt: its server's count, and its connection back
 * to the pool (`reuse`) or closed. */
void pxy_detach(struct pxy *p, int reuse)
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
            pxy_buf_put(p->px, uc->buf, uc->cap);
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
void pxy_release(struct pxy *p)
{
    struct pgroup *pg = p->pg;
    if (p->depth > 0) {
        p->dead = 1;
        return;
    }
    if (p->state == PS_DONE)
        return;
    if (p->uc || p->s)
        pxy_detach(p, 0);
    p->s = NULL;
    pxy_set_list(p, TL_NONE);
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

void pxy_enter(struct pxy *p)
{
    p->depth++;
}

/* Leaves a frame; 1 when the request was torn down (do not touch it). */
int pxy_leave(struct pxy *p)
{
    if (--p->depth > 0 || !p->dead)
        return p->dead;
    pxy_release(p);
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
    pxy_release(p);
}

/* --- answers ------------------------------------------------------------------ */

/* An answer of our own (no server's): 5xx with a JSON error. */
void pxy_answer_error(struct pxy *p, int status, const char *msg)
{
    struct http_exchange *x = p->x;
    pxy_describe(p, "-");
    if (x) {
        x->on_abort = NULL;
        x->handler_data = NULL;
        p->x = NULL;
        http_error(x, status, msg);
    }
    pxy_release(p);
}

void pxy_count_failure(struct pxy *p, enum up_fail why)
{
    struct up_server *s = p->s;
    struct metrics_upstream_counts *c = pxy_counts(p);
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

static const struct up_conn_ops conn_ops = {
    .on_connect = on_up_connect,
    .on_read = response_on_up_read,
    .on_drain = request_on_up_drain,
};


/* --- attempts ------------------------------------------------------------ */

static void on_up_connect(struct up_conn *uc, int status)
{
    struct pxy *p = uc->owner;
    if (status < 0) {
        pxy_attempt_failed(p, UP_FAIL_REFUSED);
        return;
    }
    if (!p->x) {
        pxy_release(p);
        return;
    }
    request_send(p);
}

static void start_attempt(struct pxy *p)
{
    struct pgroup *pg = p->pg;
    /* the loop's clock (CLOCK_MONOTONIC, as the master's since_ms) is fine for slow start */
    struct up_pick pick = {.now_ms = uv_now(p->px->loop), .key = p->key, .key_len = p->key_len, .tried = p->tried,
                           .ntried = p->ntried};
    int i = up_pick(&pg->g, &pick);
    p->full += pick.full;
    if (i < 0) {
        if (p->ntried == 0)
            pxy_answer_error(p, 503, i == -EBUSY ? "upstream servers are all at max_conns" : "no healthy upstream");
        else if (p->why[p->ntried - 1] == UP_FAIL_TIMEOUT) /* retry_on_timeout, and no server left */
            pxy_answer_error(p, 504, "upstream timed out");
        else
            pxy_answer_error(p, 502, "upstream failed");
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
    struct metrics_upstream_counts *c = pxy_counts(p);
    if (c) {
        metrics_add(c->requests, 1);
        metrics_add(p->px->slot->upstream_inflight[s->stats], 1);
    }
    p->t_attempt = uv_hrtime();
    if (accesslog_enabled) /* in case the client leaves before the end */
        pxy_describe(p, s->name);
    p->uc = pool_take(s->pool, p, &conn_ops);
    if (p->uc) {
        request_send(p);
        return;
    }
    int err = 0;
    p->uc = pool_connect(s->pool, (const struct sockaddr *)&s->addr, p, &conn_ops, &err);
    if (!p->uc) {
        pxy_attempt_failed(p, UP_FAIL_REFUSED);
        return;
    }
    p->state = PS_CONNECT;
    pxy_set_list(p, TL_CONNECT);
}

void pxy_attempt_failed(struct pxy *p, enum up_fail why)
{
    const struct cfg_upstream *cfg = p->pg->g.cfg;
    p->why[p->ntried - 1] = (uint8_t)why;
    pxy_count_failure(p, why);
    pxy_detach(p, 0);
    p->s = NULL;
    pxy_set_list(p, TL_NONE);
    struct http_exchange *x = p->x;
    if (!x) {
        pxy_release(p);
        return;
    }
    if (p->head_sent) { /* the client has part of an answer: cut it */
        pxy_describe(p, p->pg->g.servers[p->tried[p->ntried - 1]].name);
        p->x = NULL;
        x->on_abort = NULL;
        x->handler_data = NULL;
        http_abort(x);
        pxy_release(p);
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
        pxy_answer_error(p, 504, "upstream timed out");
    else if (why == UP_FAIL_BAD_RESPONSE)
        pxy_answer_error(p, 502, "bad response from upstream");
    else
        pxy_answer_error(p, 502, "upstream failed");
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
    pxy_attempt_failed(p, tl == TL_CONNECT ? UP_FAIL_CONNECT_TIMEOUT : tl == TL_WAIT ? UP_FAIL_TIMEOUT : UP_FAIL_IDLE);
}

/* A request whose state's time is up. */
static void expire(struct tl_node *n, void *arg)
{
    struct pxy *p = list_entry(n, struct pxy, tn);
    int tl = p->tl;
    (void)arg;
    pxy_set_list(p, TL_NONE);
    timed_out(p, tl);
}

static void sweep_cb(uv_timer_t *t)
{
    struct proxy *px = t->data;
    uint64_t now = uv_now(px->loop);
    for (size_t i = 0; i < px->ngroups; i++)
        for (int tl = 0; tl < TL_COUNT; tl++)
            tl_expire(&px->groups[i].lists[tl], now, expire, NULL);
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
        tl_list_init(&pg->lists[tl], 0);
    pg->lists[TL_CONNECT].timeout_ms = (uint64_t)cu->timeouts.connect_ms;
    pg->lists[TL_WAIT].timeout_ms = (uint64_t)cu->timeouts.first_byte_ms;
    pg->lists[TL_IDLE].timeout_ms = (uint64_t)cu->timeouts.idle_ms;
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
    tl_timer_start(loop, &px->sweep, px, sweep_cb, SWEEP_MS, SWEEP_MS);
    return px;
}

static int proxy_build(void *self, const struct cfg_route *rt, struct http_route_spec *out, char *err, size_t errlen)
{
    struct proxy *px = self;
    for (size_t i = 0; i < px->ngroups; i++) {
        if (strcmp(px->groups[i].g.name, rt->upstream) == 0) {
            *out = (struct http_route_spec){.methods = HTTP_M_ANY, .fn = proxy_handle, .data = &px->groups[i],
                                            .flags = ROUTE_STREAM};
            return 0;
        }
    }
    snprintf(err, errlen, "route %s: no upstream group %s", rt->path, rt->upstream);
    return -ENOENT;
}

int proxy_handlers(struct proxy *px, struct http_handlers *h)
{
    return http_handlers_add(h, PROXY_HANDLER, proxy_build, px);
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
    freelist_clear(&px->free_pxy);
    freelist_clear(&px->free_buf);
    free(px->groups);
    free(px->pools);
    free(px->scratch);
    free(px);
}
