/*
 * The primary's address from Redis Sentinel. See sentinel.h.
 *
 * Both connections are redis ones (redis/redis.c), so they get its
 * resolving, backoff and command timeout: `q` carries the questions to the
 * Sentinel at index `cur`, `sub` listens on +switch-master at `sub_cur`.
 * Moving to the next Sentinel closes a connection and opens another; a
 * connection is never closed from inside one of its own callbacks (the
 * answer's callback defers it to `kick`, a zero timer).
 *
 * One timer, `tick`, watches the deadlines: an ask waiting for `q` to come
 * up for longer than the timeout moves on; a subscriber down for twice the
 * timeout moves on.
 *
 * A Sentinel found unreachable by one connection is left by both: the
 * subscriber that lost its Sentinel (a late probe, redis/redis.c) moves to
 * the next one at once, and takes an idle `q` on the same Sentinel with
 * it; `q` leaving a Sentinel that did not answer takes the subscriber
 * along. So the subscription never stays on a Sentinel this worker found
 * dead, and a +switch-master published by the others is heard.
 */
#include "redis/sentinel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define SWITCH_CHANNEL "+switch-master"
#define TICK_MIN_MS 20
#define TICK_MAX_MS 250

struct sentinel {
    uv_loop_t *loop;
    char **addrs;               /* "host:port", as configured */
    size_t n;
    char *master;
    int64_t timeout_ms;
    void (*on_switch)(void *arg, const char *host, int port);
    void *arg;

    struct list_node asks;      /* struct redis_primary_ask */
    struct redis *q;      /* to addrs[cur]; NULL until needed */
    size_t cur, tried;          /* tried: Sentinels left behind in this round */
    int querying;               /* a question is in flight on q */
    uint64_t wait_since;        /* asks wait for q to come up since then; 0: not waiting */
    const char *leave_why;      /* deferred to kick: leave q for the next Sentinel */
    int warned;                 /* a failure was logged since the last answer */

    struct redis *sub;    /* to addrs[sub_cur] */
    size_t sub_cur;
    uint64_t sub_down_since;
    int sub_lost;               /* deferred to kick: the subscriber lost its Sentinel */
    struct redis_primary_ask self_ask;
    int self_asking;

    struct redis_primary primary; /* sentinel_primary */
    uv_timer_t tick, kick;
    int closing, retiring, handles;
    void (*done)(void *arg);
    void *done_arg;
};

static void pump(struct sentinel *s);
static void on_kick(uv_timer_t *t);
static void move_sub(struct sentinel *s);

static void kick_soon(struct sentinel *s)
{
    if (!s->closing)
        uv_timer_start(&s->kick, on_kick, 0, 0);
}

/* --- answers ----------------------------------------------------------- */

/* Hands one outcome to every ask waiting; asks made by the callbacks wait
 * for the next round. */
static void deliver(struct sentinel *s, int status, const char *host, int port)
{
    struct list_node now;
    list_take_all(&now, &s->asks);
    while (!list_empty(&now)) {
        struct redis_primary_ask *a = list_entry(now.next, struct redis_primary_ask, link);
        list_unlink(&a->link);
        a->cb(a->arg, status, host, port);
    }
    if (!list_empty(&s->asks))
        kick_soon(s);
}

static void retired(void *arg);

static void retire(struct sentinel *s, struct redis *r)
{
    if (!r)
        return;
    s->retiring++;
    redis_close(r, retired, s);
}

/* The Sentinel at cur could not answer: the next one is asked, or, when
 * every one was, the asks fail and the next ask starts a new round. */
static void leave(struct sentinel *s, const char *why)
{
    if (!s->warned)
        log_warn("redis sentinel: %s %s; asking the next Sentinel", s->addrs[s->cur], why);
    int unreachable = strcmp(why, "did not answer") == 0 || strcmp(why, "cannot be reached") == 0;
    if (unreachable && s->sub && s->sub_cur == s->cur && s->n > 1)
        move_sub(s);
    retire(s, s->q);
    s->q = NULL;
    s->querying = 0;
    s->wait_since = 0;
    s->cur = (s->cur + 1) % s->n;
    if (++s->tried < s->n) {
        kick_soon(s);
        return;
    }
    if (!s->warned)
        log_error("redis sentinel: no Sentinel of %zu named the primary \"%s\"; trying again", s->n, s->master);
    s->warned = 1;
    s->tried = 0;
    deliver(s, -EHOSTUNREACH, NULL, 0);
}

static int parse_port(const redisReply *r)
{
    char *end;
    long p = r->type == REDIS_REPLY_STRING ? strtol(r->str, &end, 10) : 0;
    return p >= 1 && p <= 65535 && r->len && *end == '\0' ? (int)p : 0;
}

static void on_answer(void *arg, redisReply *rep)
{
    struct sentinel *s = arg;
    s->querying = 0;
    if (s->closing)
        return;
    int port = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
                       rep->element[0]->type == REDIS_REPLY_STRING && rep->element[0]->len > 0
                   ? parse_port(rep->element[1])
                   : 0;
    if (port) {
        if (s->warned)
            log_info("redis sentinel: %s names %s:%d as the primary", s->addrs[s->cur], rep->element[0]->str, port);
        s->warned = 0;
        s->tried = 0;
        deliver(s, 0, rep->element[0]->str, port);
        return;
    }
    /* closing q from inside its own reply is left to the next iteration */
    s->leave_why = !rep                             ? "did not answer"
                   : rep->type == REDIS_REPLY_ERROR ? "answered an error"
                   : rep->type == REDIS_REPLY_NIL   ? "knows no primary by that name"
                                                    : "answered something else than an address";
    kick_soon(s);
}

/* --- asking ------------------------------------------------------------ */

static void on_q_state(void *arg, int up)
{
    struct sentinel *s = arg;
    if (up) {
        s->wait_since = 0;
        pump(s);
    }
}

static int open_q(struct sentinel *s)
{
    char url[300], err[256];
    snprintf(url, sizeof url, "redis://%s", s->addrs[s->cur]);
    struct redis_opts o = {.url = url, .command_timeout_ms = s->timeout_ms, .on_state = on_q_state,
                           .arg = s, .name = "redis sentinel"};
    s->q = redis_new(s->loop, &o, err, sizeof err);
    if (!s->q)
        log_error("redis sentinel: %s", err);
    return s->q ? 0 : -ENOMEM;
}

/* Sends the question when there are asks and q is up; opens q if needed. */
static void pump(struct sentinel *s)
{
    if (s->closing || s->querying || list_empty(&s->asks))
        return;
    if (!s->q && open_q(s) < 0) {
        deliver(s, -ENOMEM, NULL, 0);
        return;
    }
    if (!redis_up(s->q)) {
        if (!s->wait_since)
            s->wait_since = uv_now(s->loop);
        return; /* on_q_state, or the tick's deadline */
    }
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name", s->master};
    if (redis_command(s->q, on_answer, s, 3, argv, NULL) == 0)
        s->querying = 1;
    else
        leave(s, "refused the question");
}

/* The subscriber lost its Sentinel: an idle q there goes too (one
 * asking finds out by its own timeout), then the subscriber moves. */
static void sub_lost(struct sentinel *s)
{
    if (s->q && s->cur == s->sub_cur && !s->querying) {
        retire(s, s->q);
        s->q = NULL;
        s->wait_since = 0;
        s->cur = (s->cur + 1) % s->n;
    }
    move_sub(s);
}

static void on_kick(uv_timer_t *t)
{
    struct sentinel *s = t->data;
    const char *why = s->leave_why;
    s->leave_why = NULL;
    if (why)
        leave(s, why);
    if (s->sub_lost) {
        s->sub_lost = 0;
        sub_lost(s);
    }
    pump(s);
}

void sentinel_ask(struct sentinel *s, struct redis_primary_ask *a, redis_primary_fn cb, void *arg)
{
    a->cb = cb;
    a->arg = arg;
    list_init(&a->link);
    list_append(&s->asks, &a->link);
    kick_soon(s);
}

void sentinel_cancel(struct redis_primary_ask *a)
{
    list_unlink(&a->link);
}

static void primary_ask(void *impl, struct redis_primary_ask *a, redis_primary_fn cb, void *arg)
{
    sentinel_ask(impl, a, cb, arg);
}

const struct redis_primary *sentinel_primary(struct sentinel *s)
{
    return &s->primary;
}

/* --- following --------------------------------------------------------- */

/* "<name> <old-ip> <old-port> <new-ip> <new-port>" */
static void on_switch_msg(void *arg, const char *msg, size_t len)
{
    struct sentinel *s = arg;
    char buf[512], *save = NULL, *f[5];
    int n = 0;
    if (len >= sizeof buf)
        return;
    memcpy(buf, msg, len);
    buf[len] = '\0';
    for (char *tok = strtok_r(buf, " ", &save); tok && n < 5; tok = strtok_r(NULL, " ", &save))
        f[n++] = tok;
    if (n < 5 || strcmp(f[0], s->master) != 0)
        return;
    int port = atoi(f[4]);
    if (port < 1 || port > 65535)
        return;
    log_info("redis sentinel: the primary \"%s\" moved from %s:%s to %s:%d", s->master, f[1], f[2], f[3], port);
    if (s->on_switch)
        s->on_switch(s->arg, f[3], port);
}

static void on_self_answer(void *arg, int status, const char *host, int port)
{
    struct sentinel *s = arg;
    s->self_asking = 0;
    if (status == 0 && s->on_switch)
        s->on_switch(s->arg, host, port);
}

static void on_sub_state(void *arg, int up)
{
    struct sentinel *s = arg;
    s->sub_down_since = up ? 0 : uv_now(s->loop);
    if (!up && s->n > 1 && !s->closing) {
        log_warn("redis sentinel: lost the subscription at %s; listening through the next Sentinel",
                 s->addrs[s->sub_cur]);
        s->sub_lost = 1; /* not from inside the subscriber's own callback */
        kick_soon(s);
    }
    if (up && !s->self_asking && !s->closing) {
        s->self_asking = 1;
        sentinel_ask(s, &s->self_ask, on_self_answer, s);
    }
}

static int open_sub(struct sentinel *s)
{
    char url[300], err[256];
    snprintf(url, sizeof url, "redis://%s", s->addrs[s->sub_cur]);
    struct redis_opts o = {.url = url, .command_timeout_ms = s->timeout_ms, .channel = SWITCH_CHANNEL,
                           .on_message = on_switch_msg, .on_state = on_sub_state, .arg = s,
                           .name = "redis sentinel subscriber"};
    s->sub = redis_new(s->loop, &o, err, sizeof err);
    s->sub_down_since = uv_now(s->loop);
    if (!s->sub)
        log_error("redis sentinel: %s", err);
    return s->sub ? 0 : -ENOMEM;
}

/* The subscriber to the next Sentinel. */
static void move_sub(struct sentinel *s)
{
    retire(s, s->sub);
    s->sub = NULL;
    s->sub_lost = 0;
    s->sub_cur = (s->sub_cur + 1) % s->n;
    open_sub(s);
}

static void on_tick(uv_timer_t *t)
{
    struct sentinel *s = t->data;
    uint64_t now = uv_now(s->loop), limit = (uint64_t)s->timeout_ms;
    if (s->q && s->wait_since && !s->querying && !list_empty(&s->asks) && now - s->wait_since >= limit)
        leave(s, "cannot be reached");
    if (s->sub_down_since && s->n > 1 && now - s->sub_down_since >= 2 * limit)
        move_sub(s);
}

/* --- life -------------------------------------------------------------- */

static void free_all(struct sentinel *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->addrs[i]);
    free(s->addrs);
    free(s->master);
    free(s);
}

/* Splits "a,b,c" into s->addrs. */
static int split_addrs(struct sentinel *s, const char *list)
{
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char **v = realloc(s->addrs, (s->n + 1) * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->addrs = v;
        if (!(v[s->n] = strndup(p, len)))
            return -ENOMEM;
        s->n++;
        p = end ? end + 1 : NULL;
    }
    return s->n ? 0 : -EINVAL;
}

struct sentinel *sentinel_new(uv_loop_t *loop, const struct sentinel_opts *o, char *err,
                              size_t errlen)
{
    struct sentinel *s = calloc(1, sizeof(*s));
    int rc = s ? split_addrs(s, o->addrs) : -ENOMEM;
    if (!rc && !(s->master = strdup(o->master_name ? o->master_name : "mymaster")))
        rc = -ENOMEM;
    if (rc) {
        snprintf(err, errlen, rc == -EINVAL ? "redis.sentinels: no Sentinel given" : "out of memory");
        if (s)
            free_all(s);
        return NULL;
    }
    s->loop = loop;
    s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 1000;
    s->on_switch = o->on_switch;
    s->arg = o->arg;
    s->primary = (struct redis_primary){.ask = primary_ask, .cancel = sentinel_cancel, .impl = s};
    list_init(&s->asks);
    uv_timer_init(loop, &s->tick);
    uv_timer_init(loop, &s->kick);
    s->tick.data = s->kick.data = s;
    s->handles = 2;
    uint64_t every = (uint64_t)s->timeout_ms / 4;
    every = every < TICK_MIN_MS ? TICK_MIN_MS : every > TICK_MAX_MS ? TICK_MAX_MS : every;
    uv_timer_start(&s->tick, on_tick, every, every);
    if (open_sub(s) < 0) {
        snprintf(err, errlen, "redis.sentinels: \"%s\" is not host:port", s->addrs[s->sub_cur]);
        sentinel_close(s, NULL, NULL);
        return NULL;
    }
    return s;
}

static void maybe_finish(struct sentinel *s)
{
    if (s->retiring || s->handles)
        return;
    void (*done)(void *) = s->done;
    void *arg = s->done_arg;
    free_all(s);
    if (done)
        done(arg);
}

static void retired(void *arg)
{
    struct sentinel *s = arg;
    s->retiring--;
    if (s->closing)
        maybe_finish(s);
}

static void timer_closed(uv_handle_t *h)
{
    struct sentinel *s = h->data;
    s->handles--;
    maybe_finish(s);
}

void sentinel_close(struct sentinel *s, void (*done)(void *arg), void *arg)
{
    s->closing = 1;
    s->done = done;
    s->done_arg = arg;
    deliver(s, -ECANCELED, NULL, 0);
    retire(s, s->q);
    retire(s, s->sub);
    s->q = s->sub = NULL;
    uv_close((uv_handle_t *)&s->tick, timer_closed);
    uv_close((uv_handle_t *)&s->kick, timer_closed);
}
