/*
 * The shop: its routes, and the life of one shop per worker. See shop.h
 * and docs/shop.md. The work is split by resource:
 *
 *   catalog.c     products: list, get, update (cache-aside)
 *   carts.c       carts' rules and handlers, over a cart store
 *                 (cart_store.h: cart_sqlite.c, cart_redis.c)
 *   writeq.c      SQLite writes in batches (carts without Redis, counters)
 *   ready.c       /health/ready
 *   counters.c    the store of the request counters (filters/counters.h)
 *   shop_req.c    what a request holds, and the answers (shop_int.h)
 *
 * Where each thing runs:
 * - cache hits are answered on the loop without allocating;
 * - SQLite runs on libuv's thread pool (db_submit): reads, the PUT, and --
 *   without Redis -- cart writes and counters, which go through one queue
 *   per worker and leave in batches, one transaction (one fsync) per batch;
 * - Redis commands go out on the worker's one connection, pipelined.
 */
#include "app/shop.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/cart_redis.h"
#include "app/cart_sqlite.h"
#include "app/carts.h"
#include "app/catalog.h"
#include "app/counters.h"
#include "app/ready.h"
#include "app/shop_int.h"
#include "core/log.h"
#include "http/handlers.h"

#define FLUSH_MS 1000

static void on_flush(uv_timer_t *t)
{
    counters_flush(t->data);
}

/* A write batch was answered. */
static void settled(void *arg)
{
    shop_check_stop(arg);
}

/* The response cache's last lookup in flight ended. */
static void shop_idle(void *arg)
{
    shop_check_stop(arg);
}

static void on_redis_up(void *arg)
{
    struct shop *s = arg;
    if (s->carts && s->redis)
        cart_redis_up(s->carts);
}

/* --- routes ------------------------------------------------------------ */

static const struct {
    const char *name;
    enum http_method method;
    http_handler_fn fn;
    const char *path; /* built-in route */
} handlers[] = {
    {"products", HTTP_GET, catalog_products_handle, "/api/products"},
    {"product", HTTP_GET, catalog_product_handle, "/api/products/:id"},
    {"product_update", HTTP_PUT, catalog_update_handle, "/api/products/:id"},
    {"cart_add", HTTP_POST, carts_add_handle, "/api/cart/add"},
    {"cart", HTTP_GET, carts_get_handle, "/api/cart"},
    {"cart_remove", HTTP_DELETE, carts_remove_handle, "/api/cart/:productId"},
    {"ready", HTTP_GET, ready_handle, "/health/ready"},
};

#define NHANDLERS (sizeof handlers / sizeof handlers[0])

size_t shop_handler_count(void)
{
    return NHANDLERS;
}

const char *shop_handler_name(size_t i)
{
    return i < NHANDLERS ? handlers[i].name : NULL;
}

static int shop_build(void *self, const struct cfg_route *rt, struct http_route_spec *out, char *err, size_t errlen)
{
    for (size_t i = 0; i < NHANDLERS; i++) {
        if (strcmp(handlers[i].name, rt->handler) == 0) {
            *out = (struct http_route_spec){.methods = HTTP_M(handlers[i].method), .fn = handlers[i].fn,
                                            .data = self};
            return 0;
        }
    }
    snprintf(err, errlen, "route %s: cannot add handler %s", rt->path, rt->handler);
    return -ENOENT;
}

int shop_handlers(struct shop *s, struct http_handlers *h)
{
    int rc = 0;
    for (size_t i = 0; i < NHANDLERS && !rc; i++)
        rc = http_handlers_add(h, handlers[i].name, shop_build, s);
    return rc;
}

int shop_routes(struct shop *s, struct router *r)
{
    if (!s)
        return 0;
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
        int rc = router_add(r, HTTP_M(handlers[i].method), handlers[i].path, handlers[i].fn, s);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* --- life cycle -------------------------------------------------------- */

struct shop *shop_new(const struct app_env *env, char *err, size_t errlen)
{
    struct shop *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = env->loop;
    s->cfg = env->cfg;
    s->slot = env->slot;
    /* the master already created and migrated the file (master.c); a
     * worker opens it on its first query */
    if (db_attach(env->cfg->store.path, &s->db) < 0 ||
        !(s->writes = writeq_new(s->loop, s->db, &s->busy, settled, s))) {
        snprintf(err, errlen, "out of memory");
        db_close(s->db);
        free(s);
        return NULL;
    }
    return s;
}

int shop_start(struct shop *s, struct rcount *counts, struct rcache *responses, char *err, size_t errlen)
{
    char epoch[4096];
    if (!s)
        return 0;
    snprintf(epoch, sizeof epoch, "%s-epoch", s->cfg->store.path);
    struct cache_opts o = {.loop = s->loop, .redis_url = s->cfg->redis.url,
                           .sentinels = s->cfg->redis.sentinels, .master_name = s->cfg->redis.master_name,
                           .wait_replicas = s->cfg->redis.wait_replicas,
                           .wait_timeout_ms = s->cfg->redis.wait_timeout_ms,
                           .command_timeout_ms = s->cfg->redis.command_timeout_ms,
                           .on_redis_up = on_redis_up, .arg = s,
                           .local_size = (size_t)s->cfg->cache.local_size, .epoch_path = epoch, .slot = s->slot};
    s->counts = counts;
    if (!(s->cache = cache_new(&o, err, errlen)))
        return -EINVAL;
    if ((s->responses = responses))
        rcache_attach(responses, s->cache, shop_idle, s);
    s->redis = cache_conn(s->cache);
    if (s->redis) {
        struct cart_redis_opts co = {.loop = s->loop, .redis = s->redis, .db = s->db,
                                     .wait_replicas = s->cfg->redis.wait_replicas,
                                     .wait_timeout_ms = s->cfg->redis.wait_timeout_ms,
                                     .command_timeout_ms = s->cfg->redis.command_timeout_ms};
        s->carts = cart_redis_new(&co);
    } else {
        s->carts = cart_sqlite_new(s->loop, s->db, s->writes);
    }
    if (!s->carts) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    uv_timer_init(s->loop, &s->flush);
    s->flush.data = s;
    uv_timer_start(&s->flush, on_flush, FLUSH_MS, FLUSH_MS);
    s->started = 1;
    return 0;
}

static void closed_part(struct shop *s)
{
    if (--s->closes_left > 0)
        return;
    db_close(s->db);
    s->db = NULL;
    s->stop = SHOP_STOPPED;
    if (s->stopped)
        s->stopped(s->stopped_arg);
}

static void timer_closed(uv_handle_t *h)
{
    closed_part(h->data);
}

static void part_closed(void *arg)
{
    closed_part(arg);
}

/* From a fresh loop iteration: we may have been called from deep inside a
 * Redis callback, which is no place to close its connection. */
static void close_now(uv_timer_t *t)
{
    struct shop *s = t->data;
    s->closes_left = 3;
    uv_close((uv_handle_t *)&s->flush, timer_closed);
    s->carts->ops->close(s->carts, part_closed, s);
    s->carts = NULL;
    cache_close(s->cache, part_closed, s);
}

/* Runs whenever work ends while stopping: once nothing is in flight, the
 * counters Redis could not take go to SQLite, then everything closes. */
void shop_check_stop(struct shop *s)
{
    if (s->stop == SHOP_RUNNING || s->stop >= SHOP_CLOSING || s->busy > 0 || rcache_busy(s->responses))
        return;
    uint64_t left = counters_pending(s);
    if (left && s->stop == SHOP_FLUSHING) {
        log_warn("shop: Redis did not take %llu request counts; keeping them in SQLite (request_counters)",
                 (unsigned long long)left);
        s->stop = SHOP_SAVING;
        counters_save(s);
        return;
    }
    if (left)
        log_error("shop: %llu request counts could not be saved", (unsigned long long)left);
    s->stop = SHOP_CLOSING;
    uv_timer_start(&s->flush, close_now, 0, 0);
}

void shop_stop(struct shop *s, void (*done)(void *arg), void *arg)
{
    if (!s) {
        done(arg);
        return;
    }
    s->stopped = done;
    s->stopped_arg = arg;
    if (!s->started) {
        s->stop = SHOP_STOPPED;
        done(arg);
        return;
    }
    s->stop = SHOP_FLUSHING;
    s->carts->stopping = 1;
    uv_timer_stop(&s->flush);
    counters_flush(s);
    shop_check_stop(s);
}

void shop_free(struct shop *s)
{
    if (!s)
        return;
    if (s->started && s->stop != SHOP_STOPPED)
        return; /* handles are still open: freeing now would corrupt the loop */
    if (s->carts)
        s->carts->ops->close(s->carts, NULL, NULL);
    writeq_free(s->writes);
    db_close(s->db);
    free(s);
}
