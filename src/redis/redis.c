/*
 * A Redis connection that stays up. See redis.h for the contract.
 *
 * States, one at a time:
 *
 *   WAITING     the retry timer runs (backoff after a failure)
 *   ASKING      the primary source is asked (the Sentinels: redis/sentinel.c)
 *   RESOLVING   uv_getaddrinfo is in flight
 *   CONNECTING  hiredis connects (the retry timer is the connect deadline)
 *   HANDSHAKE   connected; AUTH/SELECT/PING or SUBSCRIBE sent (same deadline)
 *   UP          commands accepted; the tick timer watches the oldest one
 *   DROPPING    we freed the context; its disconnect callback is due
 *   CLOSING     redis_close(): waiting for replies, then handles
 *
 * hiredis rules followed here: a context is freed by hiredis itself after
 * a failed connect or a lost connection (we only forget the pointer); we
 * free it ourselves (redisAsyncFree) only to drop it, which runs every
 * pending callback with a NULL reply first -- so the state is changed
 * before, and a callback that issues a new command is refused.
 *
 * WAIT: `waiters` holds the callers of redis_wait that the WAIT in
 * flight (at most one, `wait_out`) does not cover; its reply sends the
 * next one for them, with a timeout that ends wait_timeout after the
 * oldest of them came (so no caller waits much longer than wait_timeout
 * for the replicas). A WAIT covers the writes of its own connection only,
 * so when the connection goes, so do they (-EIO).
 *
 * Deadlines: each command sent records its own, its send time plus the
 * command timeout; a WAIT adds its own timeout, and so does a command sent
 * while a WAIT is out (the server answers it only after the WAIT). When
 * the WAIT's reply comes, the commands sent behind it get back their
 * plain deadline. Deadlines therefore rise along the pending list, and the
 * tick looks at the oldest command only. Nothing of it outlives the
 * connection: a new one starts with an empty list.
 *
 * A subscriber has no commands to time: while up it sends SUBSCRIBE again
 * every half command timeout (the server confirms a channel already
 * subscribed), and a confirmation later than the command timeout drops
 * the connection like a late reply. A peer that vanished without a reset
 * (a host cut off) is noticed so, not only by TCP keepalive.
 */
#include "redis/redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"

#include <hiredis/adapters/libuv.h>

#define BACKOFF_STEP_MS 100
#define BACKOFF_MAX_MS 3000
#define TICK_MAX_MS 100

enum state { ST_WAITING, ST_ASKING, ST_RESOLVING, ST_CONNECTING, ST_HANDSHAKE, ST_UP, ST_DROPPING, ST_CLOSING };

struct pending {
    struct list_node link;
    struct redis *r;
    redis_reply_fn cb;
    void *arg;
    uint64_t sent_ms;
    uint64_t deadline_ms; /* no reply by then: the connection is dropped */
    uint64_t block_ms;    /* a WAIT: how long the server may hold it on purpose */
};

struct waiter {
    struct list_node link;
    redis_wait_fn cb;
    void *arg;
    uint64_t since_ms;    /* when redis_wait was called */
};

struct redis {
    uv_loop_t *loop;
    redisAsyncContext *ac;
    struct redis_url url;
    char *channel;
    char *name;
    int64_t timeout_ms;
    void (*on_message)(void *arg, const char *msg, size_t len);
    void (*on_state)(void *arg, int up);
    void *arg;
    struct metrics_slot *slot;
    const struct redis_primary *primary; /* NULL: the URL names the server */
    struct redis_primary_ask ask;
    int asking;              /* ask is under way */
    int hurry;               /* the next attempt starts without the backoff */
    int wait_replicas;
    int64_t wait_timeout_ms;
    struct list_node waiters; /* struct waiter, for the next WAIT */
    int wait_out;             /* a WAIT is in flight */
    uint64_t wait_until;      /* while wait_out: the server may hold replies back until then */
    char hint_host[256];      /* retarget: the next attempt goes there, unasked */
    int hint_port;            /* 0: none */
    int probe_out;            /* subscriber: a SUBSCRIBE sent again, not yet confirmed */
    uint64_t probe_ms;        /* when it was sent, or the last confirmation came */

    enum state state;
    int up_before_drop;      /* ST_DROPPING: whether it was up */
    int attempt;             /* failed attempts since it was last up */
    int ever_up;
    int outage_logged;
    uv_timer_t retry;        /* backoff, and the connect deadline */
    uv_timer_t tick;         /* command timeouts */
    uv_getaddrinfo_t gai;
    int resolving;
    char addr[256];          /* a numeric address */
    struct list_node pending;
    size_t npending;
    int handles;             /* open timers, while closing */
    int finishing;
    void (*closed)(void *arg);
    void *closed_arg;
};

static void start_attempt(struct redis *r);
static void drop(struct redis *r);

/* --- URL --------------------------------------------------------------- */

static int parse_port(const char *s, size_t n, int *out)
{
    int v = 0;
    if (n == 0 || n > 5)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -EINVAL;
    *out = v;
    return 0;
}

int redis_parse_url(const char *url, struct redis_url *out)
{
    memset(out, 0, sizeof(*out));
    out->port = 6379;
    if (strncmp(url, "redis://", 8) != 0)
        return -EINVAL;
    const char *p = url + 8, *at = strrchr(p, '@'), *end;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        if ((size_t)(at - pw) >= sizeof(out->password))
            return -EINVAL;
        memcpy(out->password, pw, (size_t)(at - pw));
        p = at + 1;
    }
    const char *slash = strchr(p, '/');
    end = slash ? slash : p + strlen(p);
    const char *host = p, *hend;
    if (*p == '[') {
        host = p + 1;
        hend = memchr(host, ']', (size_t)(end - host));
        if (!hend)
            return -EINVAL;
        p = hend + 1;
    } else {
        hend = memchr(p, ':', (size_t)(end - p));
        hend = hend ? hend : end;
        p = hend;
    }
    if (hend == host || (size_t)(hend - host) >= sizeof(out->host))
        return -EINVAL;
    memcpy(out->host, host, (size_t)(hend - host));
    if (p < end && (*p != ':' || parse_port(p + 1, (size_t)(end - p - 1), &out->port)))
        return -EINVAL;
    if (slash && slash[1]) {
        char *e;
        long db = strtol(slash + 1, &e, 10);
        if (*e || db < 0 || db > 1000000)
            return -EINVAL;
        out->db = (int)db;
    }
    return 0;
}

/* --- commands ---------------------------------------------------------- */

static void count(struct redis *r, int what)
{
    if (!r->slot)
        return;
    if (what == 0)
        metrics_add(r->slot->redis_commands, 1);
    else if (what == 1)
        metrics_add(r->slot->redis_errors, 1);
    else
        metrics_add(r->slot->redis_reconnects, 1);
}

/* A WAIT was answered: replies are in order, so every command still
 * pending was sent behind it, and the server no longer holds them back. */
static void unblock(struct redis *r)
{
    for (struct list_node *n = r->pending.next; n != &r->pending; n = n->next) {
        struct pending *q = list_entry(n, struct pending, link);
        if (q->block_ms)
            break; /* a later WAIT: it and what follows keep theirs */
        uint64_t plain = q->sent_ms + (uint64_t)r->timeout_ms;
        if (q->deadline_ms > plain)
            q->deadline_ms = plain;
    }
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct pending *p = privdata;
    struct redis *r = p->r;
    redisReply *rep = reply;
    (void)ac;
    list_unlink(&p->link);
    r->npending--;
    if (p->block_ms)
        unblock(r);
    if (!rep || rep->type == REDIS_REPLY_ERROR)
        count(r, 1);
    int readonly = rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "READONLY", 8) == 0;
    p->cb(p->arg, rep);
    free(p);
    if (readonly && r->state == ST_UP) {
        log_warn("%s: %s:%d is a replica now (READONLY); dropping the connection to find the primary", r->name,
                 r->url.host, r->url.port);
        drop(r);
    }
}

/* Sends on whatever context there is, whatever the state (handshakes).
 * `block_ms`: how long the server may take on purpose (a WAIT, sent only
 * when none is out); a command sent while a WAIT is out may be held until
 * that WAIT ends, then gets the command timeout. */
static int send_argv_blocking(struct redis *r, redis_reply_fn cb, void *arg, int argc,
                              const char **argv, const size_t *argvlen, uint64_t block_ms)
{
    struct pending *p = malloc(sizeof(*p));
    if (!p)
        return -ENOMEM;
    uint64_t now = uv_now(r->loop);
    uint64_t start = r->wait_out && r->wait_until > now ? r->wait_until : now;
    *p = (struct pending){.r = r, .cb = cb, .arg = arg, .sent_ms = now, .block_ms = block_ms,
                          .deadline_ms = start + block_ms + (uint64_t)r->timeout_ms};
    if (redisAsyncCommandArgv(r->ac, on_reply, p, argc, argv, argvlen) != REDIS_OK) {
        free(p);
        return -ENOTCONN;
    }
    if (block_ms)
        r->wait_until = now + block_ms;
    list_append(&r->pending, &p->link);
    r->npending++;
    count(r, 0);
    return 0;
}

static int send_argv(struct redis *r, redis_reply_fn cb, void *arg, int argc, const char **argv,
                     const size_t *argvlen)
{
    return send_argv_blocking(r, cb, arg, argc, argv, argvlen, 0);
}

int redis_command(struct redis *r, redis_reply_fn cb, void *arg, int argc, const char **argv,
                  const size_t *argvlen)
{
    if (r->state != ST_UP || !r->ac || r->channel)
        return -ENOTCONN;
    return send_argv(r, cb, arg, argc, argv, argvlen);
}

int redis_up(const struct redis *r)
{
    return r->state == ST_UP;
}

size_t redis_pending(const struct redis *r)
{
    return r->npending;
}

/* --- WAIT -------------------------------------------------------------- */

/* Hands `acked` to every waiter of the list (emptied first: a callback may
 * wait again). */
static void answer_waiters(struct list_node *head, int acked)
{
    struct list_node now;
    list_take_all(&now, head);
    while (!list_empty(&now)) {
        struct waiter *w = list_entry(now.next, struct waiter, link);
        list_unlink(&w->link);
        w->cb(w->arg, acked);
        free(w);
    }
}

/* The waiters one WAIT covers. */
struct wait_batch {
    struct redis *r;
    struct list_node waiters;
};

static int send_wait(struct redis *r);

/* The WAIT's reply: its waiters learn how many replicas acknowledged; the
 * waiters that came meanwhile get the next WAIT, or -EIO when the
 * connection is gone (a new one would not cover their writes). */
static void wait_done(void *arg, redisReply *reply)
{
    struct wait_batch *b = arg;
    struct redis *r = b->r;
    int acked = reply && reply->type == REDIS_REPLY_INTEGER ? (int)reply->integer : -EIO;
    r->wait_out = 0;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        log_warn("%s: WAIT failed: %s", r->name, reply->str);
    answer_waiters(&b->waiters, acked);
    free(b);
    if (list_empty(&r->waiters))
        return;
    if (r->state != ST_UP || send_wait(r) < 0)
        answer_waiters(&r->waiters, -EIO);
}

/* The timeout of the next WAIT: what is left of wait_timeout for the
 * oldest waiter (the first queued), at least 1 ms (0 would wait forever). */
static uint64_t wait_left(struct redis *r)
{
    const struct waiter *w = list_entry(r->waiters.next, struct waiter, link);
    uint64_t now = uv_now(r->loop), end = w->since_ms + (uint64_t)r->wait_timeout_ms;
    return end > now ? end - now : 1;
}

/* One WAIT for every waiter queued. */
static int send_wait(struct redis *r)
{
    char n[16], ms[24];
    struct wait_batch *b = malloc(sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->r = r;
    uint64_t block = wait_left(r);
    snprintf(n, sizeof n, "%d", r->wait_replicas);
    snprintf(ms, sizeof ms, "%llu", (unsigned long long)block);
    const char *argv[] = {"WAIT", n, ms};
    int rc = send_argv_blocking(r, wait_done, b, 3, argv, NULL, block);
    if (rc < 0) {
        free(b);
        return rc;
    }
    list_take_all(&b->waiters, &r->waiters);
    r->wait_out = 1;
    return 0;
}

int redis_wait(struct redis *r, redis_wait_fn cb, void *arg)
{
    if (r->state != ST_UP || !r->ac || r->channel)
        return -ENOTCONN;
    struct waiter *w = malloc(sizeof(*w));
    if (!w)
        return -ENOMEM;
    *w = (struct waiter){.cb = cb, .arg = arg, .since_ms = uv_now(r->loop)};
    list_append(&r->waiters, &w->link);
    if (r->wait_out)
        return 0; /* the next WAIT, when this one is answered */
    int rc = send_wait(r);
    if (rc < 0) {
        list_unlink(&w->link);
        free(w);
    }
    return rc;
}

/* --- up and down ------------------------------------------------------- */

static void set_gauge(struct redis *r, int up)
{
    if (r->slot && !r->channel)
        metrics_set(r->slot->redis_up, (uint64_t)up);
}

static void on_subscription(redisAsyncContext *ac, void *reply, void *privdata);

static void subscribe(struct redis *r)
{
    const char *argv[] = {"SUBSCRIBE", r->channel};
    redisAsyncCommandArgv(r->ac, on_subscription, r, 2, argv, NULL);
}

/* A subscriber's tick: SUBSCRIBE again every half timeout; 1 when the
 * last one was not confirmed within the timeout. */
static int probe_late(struct redis *r, uint64_t now)
{
    if (r->probe_out)
        return now - r->probe_ms >= (uint64_t)r->timeout_ms;
    if (now - r->probe_ms >= (uint64_t)r->timeout_ms / 2) {
        r->probe_out = 1;
        r->probe_ms = now;
        subscribe(r);
    }
    return 0;
}

static void on_tick(uv_timer_t *t)
{
    struct redis *r = t->data;
    uint64_t now = uv_now(r->loop);
    if (!r->ac)
        return;
    if (r->channel) {
        if (r->state != ST_UP || !probe_late(r, now))
            return;
    } else {
        if (list_empty(&r->pending))
            return;
        struct pending *p = list_entry(r->pending.next, struct pending, link);
        if (now < p->deadline_ms)
            return;
    }
    log_warn("%s: no reply from %s:%d within %lld ms; dropping the connection", r->name, r->url.host,
             r->url.port, (long long)r->timeout_ms);
    drop(r);
}

static void became_up(struct redis *r)
{
    r->state = ST_UP;
    uv_timer_stop(&r->retry);
    uint64_t tick = (uint64_t)r->timeout_ms / 2;
    tick = tick < 1 ? 1 : tick > TICK_MAX_MS ? TICK_MAX_MS : tick;
    r->probe_out = 0;
    r->probe_ms = uv_now(r->loop);
    uv_timer_start(&r->tick, on_tick, tick, tick);
    if (r->ever_up)
        count(r, 2);
    if (r->outage_logged)
        log_info("%s: connected to %s:%d again", r->name, r->url.host, r->url.port);
    else if (!r->ever_up)
        log_debug("%s: connected to %s:%d", r->name, r->url.host, r->url.port);
    r->ever_up = 1;
    r->outage_logged = 0;
    r->attempt = 0;
    set_gauge(r, 1);
    if (r->on_state)
        r->on_state(r->arg, 1);
}

static void on_retry(uv_timer_t *t)
{
    struct redis *r = t->data;
    if (r->state == ST_WAITING)
        start_attempt(r);
    else if (r->state == ST_CONNECTING || r->state == ST_HANDSHAKE)
        drop(r); /* the connect deadline passed */
}

/* The connection is gone (or never came): forget the context, tell once,
 * and try again after the backoff. */
static void lost(struct redis *r, int was_up, const char *why)
{
    r->ac = NULL;
    uv_timer_stop(&r->tick);
    r->state = ST_WAITING;
    answer_waiters(&r->waiters, -EIO); /* none while a WAIT is out: its reply took them */
    if (!r->outage_logged) {
        if (was_up)
            log_warn("%s: lost the connection to %s:%d (%s); retrying", r->name, r->url.host, r->url.port, why);
        else if (!r->url.host[0])
            log_warn("%s: cannot find the primary (%s); retrying", r->name, why);
        else
            log_warn("%s: cannot connect to %s:%d (%s); retrying", r->name, r->url.host, r->url.port, why);
        r->outage_logged = 1;
    }
    if (was_up) {
        set_gauge(r, 0);
        if (r->on_state)
            r->on_state(r->arg, 0);
    }
    if (r->state != ST_WAITING) /* on_state closed us */
        return;
    r->attempt++;
    uint64_t delay = r->hurry ? 0 : (uint64_t)r->attempt * BACKOFF_STEP_MS;
    r->hurry = 0;
    uv_timer_start(&r->retry, on_retry, delay < BACKOFF_MAX_MS ? delay : BACKOFF_MAX_MS, 0);
}

static void finish_close(struct redis *r);

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis *r = ac->data;
    int was_up = r->state == ST_UP || (r->state == ST_DROPPING && r->up_before_drop);
    (void)status;
    if (r->state == ST_CLOSING) {
        r->ac = NULL;
        finish_close(r);
        return;
    }
    lost(r, was_up, ac->errstr && *ac->errstr ? ac->errstr : r->state == ST_DROPPING ? "dropped by us" : "closed");
}

/*
 * Drops the connection ourselves (timeout, failed handshake, connect
 * deadline). Pending callbacks run with NULL now (or, inside a hiredis
 * callback, once it returns).
 */
static void drop(struct redis *r)
{
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    int connected = (ac->c.flags & REDIS_CONNECTED) != 0;
    if (r->state != ST_CLOSING) {
        r->up_before_drop = r->state == ST_UP;
        r->state = ST_DROPPING;
    }
    redisAsyncFree(ac);
    if (connected)
        return; /* on_disconnect runs (or ran) */
    if (r->state == ST_CLOSING) {
        r->ac = NULL;
        finish_close(r);
    } else {
        lost(r, 0, "connect timed out");
    }
}

/* --- handshake --------------------------------------------------------- */

static void hs_step(void *arg, redisReply *reply)
{
    struct redis *r = arg;
    if (reply && reply->type == REDIS_REPLY_ERROR && r->state == ST_HANDSHAKE) {
        log_error("%s: %s:%d refused the handshake: %s", r->name, r->url.host, r->url.port, reply->str);
        drop(r);
    }
}

static void hs_ping(void *arg, redisReply *reply)
{
    struct redis *r = arg;
    if (!reply || r->state != ST_HANDSHAKE)
        return;
    if (reply->type == REDIS_REPLY_ERROR) /* e.g. LOADING after a restart */
        drop(r);
    else
        became_up(r);
}

/* With Sentinel: the server must say it is the primary. */
static void hs_role(void *arg, redisReply *reply)
{
    struct redis *r = arg;
    if (!reply || r->state != ST_HANDSHAKE)
        return;
    const char *role = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
                               reply->element[0]->type == REDIS_REPLY_STRING
                           ? reply->element[0]->str
                           : reply->type == REDIS_REPLY_ERROR ? reply->str : "?";
    if (strcmp(role, "master") == 0)
        return;
    log_warn("%s: %s:%d is not the primary (ROLE: %s); asking the Sentinels again", r->name, r->url.host,
             r->url.port, role);
    drop(r);
}

static void on_subscription(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis *r = privdata;
    redisReply *rep = reply;
    (void)ac;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 || rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = rep->element[0]->str;
    if (strcmp(kind, "subscribe") == 0 && r->state == ST_HANDSHAKE) {
        became_up(r);
    } else if (strcmp(kind, "subscribe") == 0 && r->state == ST_UP) {
        r->probe_out = 0; /* the probe's confirmation */
        r->probe_ms = uv_now(r->loop);
    } else if (strcmp(kind, "message") == 0 && r->state == ST_UP && rep->element[2]->type == REDIS_REPLY_STRING &&
               r->on_message) {
        r->on_message(r->arg, rep->element[2]->str, rep->element[2]->len);
    }
}

static void handshake(struct redis *r)
{
    char db[16];
    r->state = ST_HANDSHAKE;
    if (r->url.password[0]) {
        const char *argv[] = {"AUTH", r->url.password};
        send_argv(r, hs_step, r, 2, argv, NULL);
    }
    if (r->url.db) {
        snprintf(db, sizeof db, "%d", r->url.db);
        const char *argv[] = {"SELECT", db};
        send_argv(r, hs_step, r, 2, argv, NULL);
    }
    if (r->primary) {
        const char *argv[] = {"ROLE"};
        send_argv(r, hs_role, r, 1, argv, NULL);
    }
    if (!r->channel) {
        const char *argv[] = {"PING"};
        send_argv(r, hs_ping, r, 1, argv, NULL);
    } else {
        subscribe(r);
    }
}

/* --- connecting -------------------------------------------------------- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis *r = ac->data;
    if (status == REDIS_OK && r->state == ST_CONNECTING) {
        handshake(r);
        return;
    }
    if (status == REDIS_OK)
        return; /* closing or dropping: the disconnect follows */
    /* hiredis frees the context after this callback */
    if (r->state == ST_CLOSING) {
        r->ac = NULL;
        finish_close(r);
    } else {
        lost(r, 0, ac->errstr ? ac->errstr : "connect failed");
    }
}

/*
 * hiredis's libuv adapter ignores a poll error: libuv reports POLLERR (a
 * reset, e.g. Redis killed while we were writing) by stopping the handle
 * and passing a negative status, which the adapter drops, so the
 * connection would hang until the command timeout. These replace the
 * adapter's event hooks with the same bookkeeping and a callback that lets
 * hiredis read the error and disconnect at once.
 */
static void poll_cb(uv_poll_t *h, int status, int events)
{
    redisLibuvEvents *p = h->data;
    if (status < 0) {
        if (p->context)
            redisAsyncHandleRead(p->context);
        return;
    }
    redisLibuvPoll(h, status, events);
}

static void set_events(redisLibuvEvents *p, int events)
{
    p->events = events;
    if (p->events)
        uv_poll_start(&p->handle, p->events, poll_cb);
    else
        uv_poll_stop(&p->handle);
}

static void ev_add_read(void *d)
{
    redisLibuvEvents *p = d;
    set_events(p, p->events | UV_READABLE);
}

static void ev_del_read(void *d)
{
    redisLibuvEvents *p = d;
    set_events(p, p->events & ~UV_READABLE);
}

static void ev_add_write(void *d)
{
    redisLibuvEvents *p = d;
    set_events(p, p->events | UV_WRITABLE);
}

static void ev_del_write(void *d)
{
    redisLibuvEvents *p = d;
    set_events(p, p->events & ~UV_WRITABLE);
}

static int attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (redisLibuvAttach(ac, loop) != REDIS_OK)
        return -ENOMEM;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    return 0;
}

static void connect_to(struct redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->addr, r->url.port);
    if (!ac || ac->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        lost(r, 0, why);
        return;
    }
    ac->data = r;
    redisEnableKeepAlive(&ac->c); /* a subscriber has no command timeout to notice a dead peer */
    if (attach(ac, r->loop) < 0) {
        redisAsyncFree(ac);
        lost(r, 0, "cannot watch the socket");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = ST_CONNECTING;
    uv_timer_start(&r->retry, on_retry, (uint64_t)r->timeout_ms, 0);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct redis *r = req->data;
    r->resolving = 0;
    if (r->state == ST_CLOSING) {
        uv_freeaddrinfo(res);
        finish_close(r);
        return;
    }
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        lost(r, 0, uv_strerror(status));
        return;
    }
    const void *a = res->ai_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                                               : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
    inet_ntop(res->ai_family, a, r->addr, sizeof r->addr);
    uv_freeaddrinfo(res);
    connect_to(r);
}

/* Connects to url.host (a literal at once, a name once resolved). */
static void resolve(struct redis *r)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, r->url.host, buf) == 1 || inet_pton(AF_INET6, r->url.host, buf) == 1) {
        snprintf(r->addr, sizeof r->addr, "%s", r->url.host);
        connect_to(r);
        return;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    r->state = ST_RESOLVING;
    r->gai.data = r;
    int rc = uv_getaddrinfo(r->loop, &r->gai, on_resolved, r->url.host, NULL, &hints);
    if (rc < 0)
        lost(r, 0, uv_strerror(rc));
    else
        r->resolving = 1;
}

static void on_primary(void *arg, int status, const char *host, int port)
{
    struct redis *r = arg;
    r->asking = 0;
    if (r->state == ST_CLOSING) {
        finish_close(r);
        return;
    }
    if (status < 0 || strlen(host) >= sizeof r->url.host) {
        lost(r, 0, "no Sentinel named it");
        return;
    }
    if (r->ever_up && (strcmp(r->url.host, host) != 0 || r->url.port != port))
        log_info("%s: the Sentinels name %s:%d as the primary", r->name, host, port);
    snprintf(r->url.host, sizeof r->url.host, "%s", host);
    r->url.port = port;
    resolve(r);
}

static void start_attempt(struct redis *r)
{
    if (!r->primary) {
        resolve(r);
        return;
    }
    if (r->hint_port) { /* announced: no need to ask (ROLE still checks it) */
        snprintf(r->url.host, sizeof r->url.host, "%s", r->hint_host);
        r->url.port = r->hint_port;
        r->hint_port = 0;
        resolve(r);
        return;
    }
    r->state = ST_ASKING;
    r->asking = 1;
    r->primary->ask(r->primary->impl, &r->ask, on_primary, r);
}

void redis_retarget(struct redis *r, const char *host, int port)
{
    if (!r->primary || strlen(host) >= sizeof r->hint_host || r->state == ST_CLOSING)
        return;
    int same = strcmp(r->url.host, host) == 0 && r->url.port == port;
    if ((r->state == ST_CONNECTING || r->state == ST_HANDSHAKE || r->state == ST_UP) && same)
        return;
    snprintf(r->hint_host, sizeof r->hint_host, "%s", host);
    r->hint_port = port;
    r->hurry = 1;
    if (r->state == ST_WAITING) {
        uv_timer_stop(&r->retry);
        r->hurry = 0;
        start_attempt(r);
    } else if (r->state == ST_ASKING) { /* the Sentinel asked may be the one that is gone */
        r->primary->cancel(&r->ask);
        r->asking = 0;
        start_attempt(r);
    } else if (r->state == ST_CONNECTING || r->state == ST_HANDSHAKE || r->state == ST_UP) {
        log_info("%s: the primary moved from %s:%d to %s:%d; reconnecting", r->name, r->url.host, r->url.port,
                 host, port);
        drop(r);
    }
}

struct redis *redis_new(uv_loop_t *loop, const struct redis_opts *o, char *err, size_t errlen)
{
    struct redis *r = calloc(1, sizeof(*r));
    int has_url = o->url && *o->url;
    if (!r || (has_url ? redis_parse_url(o->url, &r->url) < 0 : !o->primary)) {
        snprintf(err, errlen, r ? "redis.url: \"%s\" is not redis://[:password@]host[:port][/db]" : "out of memory",
                 o->url ? o->url : "");
        free(r);
        return NULL;
    }
    if (o->primary) /* the Sentinels give the address */
        r->url.host[0] = '\0';
    r->loop = loop;
    r->name = strdup(o->name ? o->name : "redis");
    r->channel = o->channel ? strdup(o->channel) : NULL;
    if (!r->name || (o->channel && !r->channel)) {
        free(r->name);
        free(r->channel);
        free(r);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->timeout_ms = o->command_timeout_ms > 0 ? o->command_timeout_ms : 1000;
    r->on_message = o->on_message;
    r->on_state = o->on_state;
    r->arg = o->arg;
    r->slot = o->slot;
    r->primary = o->primary;
    r->wait_replicas = o->wait_replicas > 0 ? o->wait_replicas : 0;
    r->wait_timeout_ms = o->wait_timeout_ms > 0 ? o->wait_timeout_ms : 500;
    list_init(&r->pending);
    list_init(&r->waiters);
    uv_timer_init(loop, &r->retry);
    uv_timer_init(loop, &r->tick);
    r->retry.data = r->tick.data = r;
    set_gauge(r, 0);
    start_attempt(r);
    return r;
}

/* --- closing ----------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h)
{
    struct redis *r = h->data;
    if (--r->handles > 0)
        return;
    void (*done)(void *) = r->closed;
    void *arg = r->closed_arg;
    free(r->name);
    free(r->channel);
    free(r);
    if (done)
        done(arg);
}

static void finish_close(struct redis *r)
{
    if (r->ac || r->resolving || r->asking || r->finishing)
        return;
    r->finishing = 1;
    answer_waiters(&r->waiters, -EIO);
    set_gauge(r, 0);
    r->handles = 2;
    uv_close((uv_handle_t *)&r->retry, on_timer_closed);
    uv_close((uv_handle_t *)&r->tick, on_timer_closed);
}

void redis_close(struct redis *r, void (*done)(void *arg), void *arg)
{
    enum state was = r->state;
    r->closed = done;
    r->closed_arg = arg;
    r->state = ST_CLOSING;
    uv_timer_stop(&r->retry);
    if (r->resolving)
        uv_cancel((uv_req_t *)&r->gai);
    if (r->asking) {
        r->primary->cancel(&r->ask);
        r->asking = 0;
    }
    if (!r->ac) {
        finish_close(r);
        return;
    }
    if (was == ST_DROPPING)
        return; /* hiredis frees the context when its callback returns; on_disconnect finishes */
    if (was != ST_UP) {
        drop(r); /* connecting or in the handshake: nothing worth waiting for */
        return;
    }
    /* replies still due arrive first (the tick drops a Redis that hangs),
     * then hiredis disconnects and on_disconnect finishes */
    redisAsyncDisconnect(r->ac);
}
