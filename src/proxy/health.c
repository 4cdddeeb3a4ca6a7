/*
 * Health of upstream servers: the checks (in the checker) and the state (in
 * the master). See health.h.
 *
 * Each server has three timers: `tick` starts a check every interval,
 * `deadline` fails a check that has not answered within the timeout, and
 * `back` ends an ejection or a slow start. A check is one connection
 * (struct check) that lives until its close callback, also when its server
 * went away by a reload in the meantime (check->s is then NULL).
 * A server is freed once its three timers are closed.
 */
#include "proxy/health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "http/parser.h"
#include "proxy/upstream.h"

#define CHECK_BUF 2048

struct hc_group;

struct hc_server {
    struct hc_group *g;     /* valid while the server is in a group */
    struct hc *h;
    char name[UP_NAME_LEN];
    struct sockaddr_storage addr;
    int stats;              /* index in the counters segment; -1: none */
    int weight, backup;
    struct hc_state st;
    struct up_eject ej;
    uint32_t flags;         /* UP_F_* */
    uint64_t since_ms;      /* when it last came back */
    uint64_t ejections;
    uv_timer_t tick, deadline, back;
    int open;               /* timers not yet closed */
    struct check *check;    /* in progress */
};

struct hc_group {
    struct hc *h;
    char name[UP_GROUP_LEN];
    struct cfg_upstream c;  /* the settings; path and status are copies owned here */
    struct hc_server **servers;
    size_t n;
};

struct hc {
    enum hc_role role;
    uv_loop_t *loop;
    struct metrics_shm *shm;
    hc_send_fn send;
    void *arg;
    struct hc_group *groups;
    size_t ngroups;
    uint64_t rng;
    int closing;
    int live;               /* servers not yet freed */
};

struct check {
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_write_t w;
    struct hc_server *s;    /* NULL once abandoned */
    size_t len, req_len;
    char req[384];
    char buf[CHECK_BUF];
};

/* --- the state machine ------------------------------------------------------ */

int hc_record(struct hc_state *s, int ok, int fall, int rise)
{
    if (ok) {
        s->fail_run = 0;
        if (s->ok_run < UINT16_MAX)
            s->ok_run++;
        if (s->down && s->ok_run >= rise) {
            s->down = 0;
            return 1;
        }
        return 0;
    }
    s->ok_run = 0;
    if (s->fail_run < UINT16_MAX)
        s->fail_run++;
    if (!s->down && s->fail_run >= fall) {
        s->down = 1;
        return 1;
    }
    return 0;
}

int hc_status_ok(const char *spec, int status)
{
    const char *p = spec;
    while (p && *p) {
        if (p[1] == 'x') {
            if (status / 100 == p[0] - '0')
                return 1;
            p += 3;
        } else {
            int lo = atoi(p), hi = lo;
            p += 3;
            if (*p == '-') {
                hi = atoi(p + 1);
                p += 4;
            }
            if (status >= lo && status <= hi)
                return 1;
        }
        if (*p == ',')
            p++;
    }
    return 0;
}

/* --- state changes ------------------------------------------------------------ */

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static uint64_t state_of(const struct hc_server *s)
{
    if (s->flags & UP_F_DOWN)
        return METRICS_UP_DOWN;
    if (s->flags & UP_F_EJECTED)
        return METRICS_UP_EJECTED;
    if (s->since_ms && s->g->c.slow_start_ms && mono_ms() < s->since_ms + (uint64_t)s->g->c.slow_start_ms)
        return METRICS_UP_WARMING;
    return METRICS_UP_UP;
}

static void publish(struct hc_server *s)
{
    struct hc *h = s->g->h;
    if (h->shm && s->stats >= 0) {
        struct metrics_upstream_state *u = &h->shm->upstream[s->stats];
        metrics_set(u->state, state_of(s));
        metrics_set(u->up, (uint64_t)!(s->flags & (UP_F_DOWN | UP_F_EJECTED)));
        metrics_set(u->ejections, s->ejections);
    }
}

static void fill_msg(const struct hc_server *s, struct up_state_msg *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->group, sizeof(m->group), "%s", s->g->name);
    snprintf(m->server, sizeof(m->server), "%s", s->name);
    m->flags = s->flags;
    m->since_ms = s->since_ms;
}

/* Tells every worker, and the counters segment. */
static void changed(struct hc_server *s)
{
    struct up_state_msg m;
    fill_msg(s, &m);
    publish(s);
    s->g->h->send(s->g->h->arg, &m, sizeof(m));
}

static void back_cb(uv_timer_t *t);

/* The server left (down or ejected) or came back: `since` starts its slow start. */
static void came_back(struct hc_server *s)
{
    if (s->flags & (UP_F_DOWN | UP_F_EJECTED))
        return;
    s->since_ms = mono_ms();
    if (s->g->c.slow_start_ms) /* to show the end of the ramp in /stats */
        uv_timer_start(&s->back, back_cb, (uint64_t)s->g->c.slow_start_ms, 0);
}

static void back_cb(uv_timer_t *t)
{
    struct hc_server *s = t->data;
    if (s->flags & UP_F_EJECTED && s->ej.until_ms) {
        uint64_t now = mono_ms();
        s->flags &= ~UP_F_EJECTED;
        s->ej.until_ms = 0;
        s->ej.last_end_ms = now;
        log_info("upstream %s: server %s is back after its ejection", s->g->name, s->name);
        came_back(s);
        changed(s);
        return;
    }
    publish(s); /* the slow start ended */
}

/* --- active checks ------------------------------------------------------------- */

static void check_closed(uv_handle_t *h)
{
    free(h->data);
}

/* A verdict counts toward fall or rise; a flip goes to the workers. */
static void verdict(struct hc_server *s, int ok, const char *why)
{
    struct hc_group *g = s->g;
    if (!hc_record(&s->st, ok, g->c.health.fall, g->c.health.rise))
        return;
    if (s->st.down) {
        s->flags |= UP_F_DOWN;
        log_warn("upstream %s: server %s is down: %d checks failed in a row, the last: %s", g->name, s->name,
                 s->st.fail_run, why);
    } else {
        s->flags &= ~UP_F_DOWN;
        log_info("upstream %s: server %s is up: %d checks passed in a row", g->name, s->name, s->st.ok_run);
        came_back(s);
    }
    changed(s);
}

/* The checker's side: the verdict goes to the master as it is. */
static void send_verdict(struct hc_server *s, int ok, const char *why)
{
    struct hc_result_msg m;
    memset(&m, 0, sizeof(m));
    snprintf(m.group, sizeof(m.group), "%s", s->g->name);
    snprintf(m.server, sizeof(m.server), "%s", s->name);
    m.ok = (uint32_t)(ok != 0);
    snprintf(m.why, sizeof(m.why), "%s", ok ? "" : why);
    s->h->send(s->h->arg, &m, sizeof(m));
}

static void check_result(struct hc_server *s, int ok, const char *why)
{
    struct check *c = s->check;
    uv_timer_stop(&s->deadline);
    if (c) {
        s->check = NULL;
        c->s = NULL;
        uv_close((uv_handle_t *)&c->tcp, check_closed);
    }
    if (s->h->role == HC_PROBE)
        send_verdict(s, ok, why);
    else
        verdict(s, ok, why);
}

static void check_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct check *c = st->data;
    (void)b;
    if (!c->s)
        return;
    if (n < 0) {
        check_result(c->s, 0, n == UV_EOF ? "closed before answering" : uv_strerror((int)n));
        return;
    }
    c->len += (size_t)n;
    struct http_header fields[64];
    struct http_response res = {.headers = fields, .headers_cap = 64};
    struct http_limits lim = {.max_head = CHECK_BUF - 1, .max_headers = 64};
    ssize_t r = http_parse_response(c->buf, c->len, 0, &lim, &res);
    if (r == HTTP_INCOMPLETE && c->len < CHECK_BUF)
        return;
    if (r < 0) {
        check_result(c->s, 0, r == HTTP_ERROR ? res.error : "response head too large");
        return;
    }
    if (res.status < 200) { /* 1xx: the final answer follows */
        memmove(c->buf, c->buf + r, c->len - (size_t)r);
        c->len -= (size_t)r;
        return;
    }
    char why[48];
    snprintf(why, sizeof(why), "status %d", res.status);
    check_result(c->s, hc_status_ok(c->s->g->c.health.status, res.status), why);
}

static void check_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct check *c = h->data;
    (void)hint;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(CHECK_BUF - c->len));
}

static void check_written(uv_write_t *w, int status)
{
    struct check *c = w->data;
    if (c->s && status < 0)
        check_result(c->s, 0, uv_strerror(status));
}

static void check_connected(uv_connect_t *req, int status)
{
    struct check *c = req->data;
    if (!c->s)
        return;
    if (status < 0) {
        check_result(c->s, 0, uv_strerror(status));
        return;
    }
    uv_buf_t b = uv_buf_init(c->req, (unsigned)c->req_len);
    c->w.data = c;
    if (uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, check_written) < 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, check_alloc, check_read) < 0)
        check_result(c->s, 0, "cannot send the check");
}

static void deadline_cb(uv_timer_t *t)
{
    struct hc_server *s = t->data;
    char why[64];
    snprintf(why, sizeof(why), "no answer within %lld ms", (long long)s->g->c.health.timeout_ms);
    check_result(s, 0, why);
}

static void start_check(struct hc_server *s)
{
    struct hc_group *g = s->g;
    struct check *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->s = s;
    c->req_len = (size_t)snprintf(c->req, sizeof(c->req),
                                  "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cohort-health-check\r\n"
                                  "Accept: */*\r\nConnection: close\r\n\r\n",
                                  g->c.health.path, s->name);
    if (c->req_len >= sizeof(c->req) || uv_tcp_init(g->h->loop, &c->tcp) < 0) {
        free(c);
        return;
    }
    c->tcp.data = c;
    c->conn.data = c;
    s->check = c;
    uv_timer_start(&s->deadline, deadline_cb, (uint64_t)g->c.health.timeout_ms, 0);
    int r = uv_tcp_connect(&c->conn, &c->tcp, (const struct sockaddr *)&s->addr, check_connected);
    if (r < 0)
        check_result(s, 0, uv_strerror(r));
}

static void tick_cb(uv_timer_t *t)
{
    struct hc_server *s = t->data;
    if (s->check) /* still running after a whole interval: that is a failure too */
        check_result(s, 0, "no answer within the interval");
    start_check(s);
}

/* --- building and tearing down ---------------------------------------------- */

static void server_closed(uv_handle_t *h)
{
    struct hc_server *s = h->data;
    if (--s->open > 0)
        return;
    struct hc *hc = s->h;
    free(s);
    if (--hc->live == 0 && hc->closing)
        free(hc);
}

static void server_close(struct hc_server *s)
{
    if (s->check) {
        s->check->s = NULL;
        uv_close((uv_handle_t *)&s->check->tcp, check_closed);
        s->check = NULL;
    }
    uv_close((uv_handle_t *)&s->tick, server_closed);
    uv_close((uv_handle_t *)&s->deadline, server_closed);
    uv_close((uv_handle_t *)&s->back, server_closed);
}

static struct hc_server *server_new(struct hc *h, struct hc_group *g, const struct cfg_upstream_server *cs)
{
    struct hc_server *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->g = g;
    s->h = h;
    s->stats = -1;
    s->weight = cs->weight;
    s->backup = cs->backup;
    snprintf(s->name, sizeof(s->name), "%s", cs->address);
    /* the address is numeric (the config loader resolved it) */
    struct sockaddr_in *a4 = (struct sockaddr_in *)&s->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&s->addr;
    if (cs->address[0] == '[') {
        char host[64];
        const char *end = strchr(cs->address, ']');
        snprintf(host, sizeof(host), "%.*s", end ? (int)(end - cs->address - 1) : 0, cs->address + 1);
        uv_ip6_addr(host, end ? atoi(end + 2) : 0, a6);
    } else {
        char host[64];
        const char *colon = strrchr(cs->address, ':');
        snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - cs->address) : 0, cs->address);
        uv_ip4_addr(host, colon ? atoi(colon + 1) : 0, a4);
    }
    uv_timer_init(h->loop, &s->tick);
    uv_timer_init(h->loop, &s->deadline);
    uv_timer_init(h->loop, &s->back);
    s->tick.data = s->deadline.data = s->back.data = s;
    s->open = 3;
    h->live++;
    /* timers never keep the master's loop alive on their own */
    uv_unref((uv_handle_t *)&s->tick);
    uv_unref((uv_handle_t *)&s->deadline);
    uv_unref((uv_handle_t *)&s->back);
    return s;
}

static void group_free(struct hc_group *g)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->servers[i])
            server_close(g->servers[i]);
    free(g->servers);
    free(g->c.health.path);
    free(g->c.health.status);
}

static struct hc_server *find_old(struct hc *h, const char *group, const char *name)
{
    for (size_t i = 0; i < h->ngroups; i++) {
        struct hc_group *g = &h->groups[i];
        if (strcmp(g->name, group) != 0)
            continue;
        for (size_t k = 0; k < g->n; k++)
            if (g->servers[k] && strcmp(g->servers[k]->name, name) == 0)
                return g->servers[k];
    }
    return NULL;
}

static int group_init(struct hc *h, struct hc_group *g, const struct cfg_upstream *cu)
{
    g->h = h;
    snprintf(g->name, sizeof(g->name), "%s", cu->name);
    g->c = *cu;
    g->c.servers = NULL;
    g->c.name = g->name;
    g->c.hash_name = NULL;
    g->c.health.path = cu->health.path ? strdup(cu->health.path) : NULL;
    g->c.health.status = strdup(cu->health.status ? cu->health.status : "2xx");
    g->servers = calloc(cu->nservers, sizeof(*g->servers));
    if (!g->servers || !g->c.health.status || (cu->health.path && !g->c.health.path))
        return -ENOMEM;
    for (size_t i = 0; i < cu->nservers; i++, g->n++)
        if (!(g->servers[i] = server_new(h, g, &cu->servers[i])))
            return -ENOMEM;
    return 0;
}

/* A server found again keeps what the master knew of it. */
static void adopt_state(struct hc_server *s, const struct hc_server *old)
{
    s->st = old->st;
    s->ej = old->ej;
    s->flags = old->flags;
    s->since_ms = old->since_ms;
    s->ejections = old->ejections;
    if (!s->g->c.health.path) { /* checks turned off: what they found no longer holds */
        s->flags &= ~UP_F_DOWN;
        s->st = (struct hc_state){0};
    }
    uint64_t now = mono_ms();
    if ((s->flags & UP_F_EJECTED) && s->ej.until_ms > now)
        uv_timer_start(&s->back, back_cb, s->ej.until_ms - now, 0);
    else if (s->flags & UP_F_EJECTED)
        uv_timer_start(&s->back, back_cb, 0, 0);
}

/* Names the servers in the counters segment, in config order. */
static void assign_stats(struct hc *h)
{
    int idx = 0;
    if (!h->shm)
        return;
    for (size_t i = 0; i < h->ngroups; i++) {
        struct hc_group *g = &h->groups[i];
        for (size_t k = 0; k < g->n; k++, idx++) {
            struct hc_server *s = g->servers[k];
            if (idx >= METRICS_UPSTREAMS)
                continue;
            struct metrics_upstream_state *u = &h->shm->upstream[idx];
            s->stats = idx;
            memset(u->name, 0, sizeof(u->name));
            memset(u->group, 0, sizeof(u->group));
            snprintf(u->name, sizeof(u->name), "%s", s->name);
            snprintf(u->group, sizeof(u->group), "%s", g->name);
            metrics_set(u->weight, (uint64_t)s->weight);
            metrics_set(u->backup, (uint64_t)s->backup);
            publish(s);
        }
    }
    for (; idx < METRICS_UPSTREAMS; idx++)
        memset(&h->shm->upstream[idx], 0, sizeof(h->shm->upstream[idx]));
}

/* Checks start spread over the first interval (at most a second in);
 * HC_STATE runs none. */
static void start_ticks(struct hc *h)
{
    if (h->role == HC_STATE)
        return;
    for (size_t i = 0; i < h->ngroups; i++) {
        struct hc_group *g = &h->groups[i];
        if (!g->c.health.path)
            continue;
        uint64_t spread = (uint64_t)g->c.health.interval_ms < 1000 ? (uint64_t)g->c.health.interval_ms : 1000;
        for (size_t k = 0; k < g->n; k++) {
            h->rng = h->rng * 6364136223846793005ull + 1442695040888963407ull;
            uv_timer_start(&g->servers[k]->tick, tick_cb, (h->rng >> 33) % (spread + 1),
                           (uint64_t)g->c.health.interval_ms);
        }
    }
}

int hc_reload(struct hc *h, const struct cfg *cfg)
{
    struct hc_group *groups = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*groups));
    if (!groups)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < cfg->nupstreams && !rc; i++)
        rc = group_init(h, &groups[i], &cfg->upstreams[i]);
    if (rc) {
        for (size_t i = 0; i < cfg->nupstreams; i++)
            group_free(&groups[i]);
        free(groups);
        return rc;
    }
    for (size_t i = 0; i < cfg->nupstreams; i++)
        for (size_t k = 0; k < groups[i].n; k++) {
            const struct hc_server *old = find_old(h, groups[i].name, groups[i].servers[k]->name);
            if (old)
                adopt_state(groups[i].servers[k], old);
        }
    for (size_t i = 0; i < h->ngroups; i++)
        group_free(&h->groups[i]);
    free(h->groups);
    h->groups = groups;
    h->ngroups = cfg->nupstreams;
    assign_stats(h);
    start_ticks(h);
    return 0;
}

struct hc *hc_new_role(enum hc_role role, uv_loop_t *loop, const struct cfg *cfg, struct metrics_shm *shm,
                       hc_send_fn send, void *arg)
{
    struct hc *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->role = role;
    h->loop = loop;
    h->shm = role == HC_PROBE ? NULL : shm;
    h->send = send;
    h->arg = arg;
    h->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)h;
    if (hc_reload(h, cfg) < 0) {
        hc_close(h);
        return NULL;
    }
    return h;
}

struct hc *hc_new(uv_loop_t *loop, const struct cfg *cfg, struct metrics_shm *shm, hc_send_fn broadcast, void *arg)
{
    return hc_new_role(HC_ALL, loop, cfg, shm, broadcast, arg);
}

void hc_close(struct hc *h)
{
    if (!h || h->closing)
        return;
    h->closing = 1;
    for (size_t i = 0; i < h->ngroups; i++)
        group_free(&h->groups[i]);
    free(h->groups);
    h->groups = NULL;
    h->ngroups = 0;
    if (h->live == 0)
        free(h);
}

/* --- the checker's verdicts, workers' reports and new workers --------------- */

void hc_result(struct hc *h, const void *payload, size_t len)
{
    struct hc_result_msg m;
    if (len != sizeof(m) || h->closing || h->role != HC_STATE)
        return;
    memcpy(&m, payload, sizeof(m));
    m.group[sizeof(m.group) - 1] = m.server[sizeof(m.server) - 1] = m.why[sizeof(m.why) - 1] = '\0';
    for (char *p = m.why; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            *p = '?';
    struct hc_server *s = find_old(h, m.group, m.server);
    if (s && s->g->c.health.path)
        verdict(s, m.ok == 1, m.why[0] ? m.why : "no reason given");
}

static size_t ejected_in(const struct hc_group *g)
{
    size_t n = 0;
    for (size_t i = 0; i < g->n; i++)
        n += (g->servers[i]->flags & UP_F_EJECTED) != 0;
    return n;
}

void hc_report(struct hc *h, const void *payload, size_t len)
{
    struct up_report_msg m;
    if (len != sizeof(m) || h->closing || h->role == HC_PROBE)
        return;
    memcpy(&m, payload, sizeof(m));
    m.group[sizeof(m.group) - 1] = m.server[sizeof(m.server) - 1] = '\0';
    struct hc_server *s = find_old(h, m.group, m.server);
    if (!s || !s->g->c.passive.failures || (s->flags & UP_F_EJECTED))
        return;
    uint64_t now = mono_ms();
    uint64_t ms = up_eject(&s->ej, ejected_in(s->g), s->g->n, &s->g->c, now);
    if (!ms) {
        log_warn("upstream %s: server %s failed %u times in a row (%s) but stays: max_ejected_percent is %d%%",
                 s->g->name, s->name, m.failures, up_fail_name((enum up_fail)m.why), s->g->c.passive.max_ejected_percent);
        return;
    }
    s->flags |= UP_F_EJECTED;
    s->ejections++;
    log_warn("upstream %s: server %s ejected for %llu ms after %u failures in a row (the last: %s); ejection %u",
             s->g->name, s->name, (unsigned long long)ms, m.failures, up_fail_name((enum up_fail)m.why), s->ej.times);
    uv_timer_start(&s->back, back_cb, ms, 0);
    changed(s);
}

void hc_snapshot(struct hc *h, hc_send_fn send, void *arg)
{
    for (size_t i = 0; i < h->ngroups; i++)
        for (size_t k = 0; k < h->groups[i].n; k++) {
            const struct hc_server *s = h->groups[i].servers[k];
            if (!s->flags && !s->since_ms)
                continue;
            struct up_state_msg m;
            fill_msg(s, &m);
            send(arg, &m, sizeof(m));
        }
}
