/*
 * Carts in Redis. See cart_redis.h and cart_store.h.
 */
#include "app/cart_redis.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/shop_input.h"
#include "core/log.h"

struct cart_redis {
    struct cart_store base;
    struct cart_redis_opts o;
    int unsynced;                /* cart writes are failing WAIT: logged once */
    struct list_node parked;     /* struct cart_wait, for the first connection */
    uv_timer_t first_up;         /* how long they may wait */
    uint64_t wait_until;         /* loop time */
    int seen_up;                 /* the first connection came (or the wait ended) */
    void (*closed)(void *arg);
    void *closed_arg;
};

/* A change: the command's reply and the WAIT's, in any order. */
struct change {
    struct cart_redis *cs;
    cart_done_fn cb;
    void *arg;
    int rc;
    int64_t qty;
    int outstanding;             /* replies still due (the command, its WAIT) */
    int acked;                   /* replicas that acknowledged it (WAIT) */
    char fp[DB_IDEM_REQUEST_MAX + 1];
};

struct item {
    int64_t id, qty;
};

/* A read: HGETALL's items, then the catalog's names and prices. */
struct read {
    struct cart_redis *cs;
    cart_get_fn cb;
    void *arg;
    int rc;
    struct item *items;
    size_t nitems;
    struct cart_line *lines;
    size_t nlines;
};

static void step(struct change *ch)
{
    struct cart_redis *cs = ch->cs;
    int wanted = cs->o.wait_replicas;
    if (--ch->outstanding > 0)
        return;
    if (!ch->rc && wanted > 0) {
        int synced = ch->acked >= wanted;
        if (!synced && !cs->unsynced)
            log_warn("shop: a cart change reached %d of %d replicas within %lld ms; answering 503 until they "
                     "keep up", ch->acked < 0 ? 0 : ch->acked, wanted, (long long)cs->o.wait_timeout_ms);
        else if (synced && cs->unsynced)
            log_info("shop: cart changes reach the replicas again (%d wanted)", wanted);
        cs->unsynced = !synced;
        ch->rc = synced ? 0 : -EIO;
    }
    ch->cb(ch->arg, ch->rc, ch->qty);
    free(ch);
}

static void synced(void *arg, int acked)
{
    struct change *ch = arg;
    ch->acked = acked;
    step(ch);
}

static int write_cmd(struct cart_redis *cs, struct change *ch, int argc, const char **argv, redis_reply_fn done)
{
    if (redis_command(cs->o.redis, done, ch, argc, argv, NULL) < 0) {
        free(ch);
        return -ENOTCONN;
    }
    ch->outstanding = 1;
    if (cs->o.wait_replicas > 0) {
        ch->outstanding++;
        if (redis_wait(cs->o.redis, synced, ch) < 0) {
            ch->acked = -1;
            ch->outstanding--;
        }
    }
    return 0;
}

static struct change *change_new(struct cart_redis *cs, cart_done_fn cb, void *arg)
{
    struct change *ch = calloc(1, sizeof(*ch));
    if (ch)
        *ch = (struct change){.cs = cs, .cb = cb, .arg = arg};
    return ch;
}

static void added(void *arg, redisReply *r)
{
    struct change *ch = arg;
    ch->rc = r && r->type == REDIS_REPLY_INTEGER ? 0 : -EIO;
    if (!ch->rc)
        ch->qty = r->integer; /* the line's quantity now */
    step(ch);
}

/*
 * An add with an idempotency key, in one script: the first time, HINCRBY and
 * remember "<fingerprint>=<quantity>" under idem:<length of user>:<user>:<key>
 * for a day; again, only the remembered answer. Redis runs a script whole,
 * and replicates and persists its effects together.
 */
static const char ADD_ONCE_LUA[] =
    "local v = redis.call('GET', KEYS[2]) "
    "if v then return v end "
    "local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) "
    "v = ARGV[4] .. '=' .. n "
    "redis.call('SET', KEYS[2], v, 'EX', ARGV[3]) "
    "return v";

static void added_once(void *arg, redisReply *r)
{
    struct change *ch = arg;
    size_t n = strlen(ch->fp);
    if (!r || r->type != REDIS_REPLY_STRING) {
        ch->rc = -EIO;
    } else if (r->len <= n || memcmp(r->str, ch->fp, n) != 0 || r->str[n] != '=') {
        ch->rc = -EEXIST;
    } else {
        ch->rc = 0;
        ch->qty = strtoll(r->str + n + 1, NULL, 10);
    }
    step(ch);
}

static int rd_add(struct cart_store *base, const char *user, int64_t id, int64_t qty, const char *idem,
                  const char *fp, cart_done_fn cb, void *arg)
{
    struct cart_redis *cs = (struct cart_redis *)base;
    char key[16 + SHOP_USER_MAX], sid[24], sqty[24];
    struct change *ch = change_new(cs, cb, arg);
    if (!ch)
        return -ENOMEM;
    snprintf(key, sizeof key, "cart:%s", user);
    snprintf(sid, sizeof sid, "%lld", (long long)id);
    snprintf(sqty, sizeof sqty, "%lld", (long long)qty);
    if (idem && idem[0]) {
        char ikey[32 + SHOP_USER_MAX + SHOP_IDEM_MAX], ttl[24];
        /* the user's length first: a User-Id may hold ':' too */
        snprintf(ikey, sizeof ikey, "idem:%zu:%s:%s", strlen(user), user, idem);
        snprintf(ttl, sizeof ttl, "%d", DB_IDEM_TTL_S);
        snprintf(ch->fp, sizeof ch->fp, "%s", fp ? fp : "");
        const char *argv[] = {"EVAL", ADD_ONCE_LUA, "2", key, ikey, sid, sqty, ttl, ch->fp};
        return write_cmd(cs, ch, 9, argv, added_once);
    }
    const char *argv[] = {"HINCRBY", key, sid, sqty};
    return write_cmd(cs, ch, 4, argv, added);
}

static void removed(void *arg, redisReply *r)
{
    struct change *ch = arg;
    ch->rc = !r || r->type != REDIS_REPLY_INTEGER ? -EIO : r->integer > 0 ? 0 : -ENOENT;
    step(ch);
}

static int rd_remove(struct cart_store *base, const char *user, int64_t id, cart_done_fn cb, void *arg)
{
    struct cart_redis *cs = (struct cart_redis *)base;
    char key[16 + SHOP_USER_MAX], sid[24];
    struct change *ch = change_new(cs, cb, arg);
    if (!ch)
        return -ENOMEM;
    snprintf(key, sizeof key, "cart:%s", user);
    snprintf(sid, sizeof sid, "%lld", (long long)id);
    const char *argv[] = {"HDEL", key, sid};
    return write_cmd(cs, ch, 3, argv, removed);
}

static void read_free(struct read *r)
{
    free(r->items);
    free(r->lines);
    free(r);
}

/* On the pool: names and prices; a product no longer sold is left out. */
static void complete_work(struct db_conn *c, void *arg)
{
    struct read *r = arg;
    r->lines = calloc(r->nitems + 1, sizeof(*r->lines));
    if (!r->lines) {
        r->rc = -ENOMEM;
        return;
    }
    for (size_t i = 0; i < r->nitems && !r->rc; i++) {
        struct db_product p;
        int rc = db_product_get(c, r->items[i].id, &p);
        if (rc == 0) {
            struct cart_line *l = &r->lines[r->nlines++];
            *l = (struct cart_line){.product_id = r->items[i].id, .price = p.price, .quantity = r->items[i].qty};
            memcpy(l->name, p.name, sizeof l->name);
        } else if (rc != -ENOENT) {
            r->rc = rc;
        }
    }
    if (r->rc && r->rc != -ENOENT)
        log_error("shop: SQLite read failed: %s", db_errmsg(c));
}

static void complete_done(void *arg, int status)
{
    struct read *r = arg;
    r->cb(r->arg, status ? status : r->rc, r->lines, r->nlines);
    read_free(r);
}

static int by_id(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* HGETALL's pairs, then names and prices from the catalog (pool). */
static void got_cart(void *arg, redisReply *rep)
{
    struct read *r = arg;
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        r->cb(r->arg, -EIO, NULL, 0);
        read_free(r);
        return;
    }
    r->items = calloc(rep->elements / 2 + 1, sizeof(*r->items));
    for (size_t i = 0; r->items && i + 1 < rep->elements; i += 2) {
        struct item it;
        redisReply *f = rep->element[i], *v = rep->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || shop_parse_id(f->str, f->len, &it.id))
            continue;
        it.qty = strtoll(v->str, NULL, 10);
        r->items[r->nitems++] = it;
    }
    if (r->nitems)
        qsort(r->items, r->nitems, sizeof(*r->items), by_id);
    if (db_submit(r->cs->o.db, r->cs->o.loop, complete_work, complete_done, r) < 0)
        complete_done(r, -ENOMEM);
}

static int rd_get(struct cart_store *base, const char *user, cart_get_fn cb, void *arg)
{
    struct cart_redis *cs = (struct cart_redis *)base;
    char key[16 + SHOP_USER_MAX];
    struct read *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    *r = (struct read){.cs = cs, .cb = cb, .arg = arg};
    snprintf(key, sizeof key, "cart:%s", user);
    const char *argv[] = {"HGETALL", key};
    if (redis_command(cs->o.redis, got_cart, r, 2, argv, NULL) < 0) {
        free(r);
        return -ENOTCONN;
    }
    return 0;
}

static void resume_parked(struct cart_redis *cs)
{
    cs->seen_up = 1;
    uv_timer_stop(&cs->first_up);
    while (!list_empty(&cs->parked)) {
        struct cart_wait *w = list_entry(cs->parked.next, struct cart_wait, link);
        list_unlink(&w->link);
        w->fn(w->arg, redis_up(cs->o.redis) ? 0 : -ENOTCONN);
    }
}

static void on_first_up_deadline(uv_timer_t *t)
{
    resume_parked(t->data);
}

void cart_redis_up(struct cart_store *base)
{
    struct cart_redis *cs = (struct cart_redis *)base;
    if (!cs->seen_up)
        resume_parked(cs);
}

static int rd_ready(struct cart_store *base, struct cart_wait *w)
{
    struct cart_redis *cs = (struct cart_redis *)base;
    if (redis_up(cs->o.redis))
        return 0;
    uint64_t now = uv_now(cs->o.loop);
    if (cs->seen_up || now >= cs->wait_until || base->stopping)
        return -ENOTCONN;
    if (list_empty(&cs->parked))
        uv_timer_start(&cs->first_up, on_first_up_deadline, cs->wait_until - now, 0);
    list_init(&w->link);
    list_append(&cs->parked, &w->link);
    return -EINPROGRESS;
}

static void timer_closed(uv_handle_t *h)
{
    struct cart_redis *cs = h->data;
    void (*done)(void *) = cs->closed;
    void *arg = cs->closed_arg;
    free(cs);
    if (done)
        done(arg);
}

static void rd_close(struct cart_store *base, void (*done)(void *arg), void *arg)
{
    struct cart_redis *cs = (struct cart_redis *)base;
    cs->closed = done;
    cs->closed_arg = arg;
    uv_close((uv_handle_t *)&cs->first_up, timer_closed);
}

static const struct cart_store_ops redis_ops = {
    .add = rd_add, .remove = rd_remove, .get = rd_get, .ready = rd_ready, .close = rd_close,
};

struct cart_store *cart_redis_new(const struct cart_redis_opts *o)
{
    struct cart_redis *cs = calloc(1, sizeof(*cs));
    if (!cs)
        return NULL;
    cs->base.ops = &redis_ops;
    cs->o = *o;
    list_init(&cs->parked);
    uv_timer_init(o->loop, &cs->first_up);
    cs->first_up.data = cs;
    cs->wait_until = uv_now(o->loop) + (uint64_t)o->command_timeout_ms;
    return &cs->base;
}
