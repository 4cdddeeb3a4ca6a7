/*
 * What the shop's parts share (shop.c and the files it is split into:
 * shop_req.c, catalog.c, carts.c, ready.c, counters.c); not
 * for use outside src/app/shop*.
 *
 * A request that cannot be answered at once gets a struct shop_req that
 * holds everything it needs, copied out of the exchange before anything
 * asynchronous starts: after an abort the request's bytes may be gone, and
 * the engine lets us answer the zombie exchange later (which frees it).
 * Each kind of request brings its own functions (struct shop_req_ops).
 * Every req, every Redis command of the counter flush and every write batch
 * counts in s->busy, so shop_stop waits for all of them before it closes
 * the cache and the store.
 */
#ifndef COHORT_APP_SHOP_INT_H
#define COHORT_APP_SHOP_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "app/cart_store.h"
#include "app/shop_input.h"
#include "app/writeq.h"
#include "cache/cache.h"
#include "core/config.h"
#include "core/metrics.h"
#include "cache/response.h"
#include "filters/counters.h"
#include "http/router.h"
#include "http/server.h"
#include "redis/redis.h"
#include "store/db.h"

#define SHOP_JSON_TYPE "application/json; charset=utf-8"

enum shop_stop_state { SHOP_RUNNING, SHOP_FLUSHING, SHOP_SAVING, SHOP_CLOSING, SHOP_STOPPED };

struct shop {
    uv_loop_t *loop;
    const struct cfg *cfg;
    struct metrics_slot *slot;
    struct db *db;
    struct cache *cache;
    struct redis *redis;         /* counters; NULL: SQLite */
    struct cart_store *carts;
    struct writeq *writes;
    struct rcount *counts;       /* the counters filter's counts, flushed here */
    struct rcache *responses;    /* the response cache filter, on this cache */
    uv_timer_t flush;            /* counters; then the deferred close */
    int started;
    int takeover;                /* counts left in SQLite: 0 to move, 1 moving, 2 moved */
    int busy;
    enum shop_stop_state stop;
    int closes_left;
    void (*stopped)(void *arg);
    void *stopped_arg;
};

struct shop_req;

/* What one kind of request does. */
struct shop_req_ops {
    int64_t ttl_ms;              /* the catalog cache: how long its value is kept */
    const char *index;           /* and the index set it is recorded in; NULL: none */
    /* On the thread pool (shop_read_source): the query and the answer's
     * JSON (NULL: none), q->rc set on failure. */
    json_t *(*read)(struct db_conn *c, struct shop_req *q);
    /* Back on the loop: answer, or go on. */
    void (*read_done)(struct shop_req *q);
    /* The catalog cache had q->key (catalog_lookup). */
    void (*hit)(struct shop_req *q, const char *val, size_t len);
};

struct shop_req {
    struct shop *s;
    struct http_exchange *x;
    const struct shop_req_ops *ops;
    int rc;
    int64_t id, qty, limit, offset;
    char user[SHOP_USER_MAX + 1];
    char key[64];
    struct cache_ticket t;
    struct db_product p;
    struct db_product_patch patch;
    char name[DB_NAME_MAX + 1];
    char *json;                  /* built off the loop */
    size_t json_len;
    char idem[SHOP_IDEM_MAX + 1]; /* an add's Idempotency-Key, or "" */
    struct cart_wait wait;       /* for the cart store to come up */
};

/* shop_req.c: requests and answers */
struct shop_req *shop_req_new(struct shop *s, struct http_exchange *x, const struct shop_req_ops *ops);
void shop_req_free(struct shop_req *q);
void shop_reply(struct http_exchange *x, int status, const char *body, size_t len);
void shop_reply_error(struct http_exchange *x, int status, const char *msg, const char *field);
void shop_reply_errorf(struct http_exchange *x, int status, const char *fmt, long long v);
void shop_reply_json_and_free(struct shop_req *q);
int shop_param_id(const struct http_exchange *x, const char *name, int64_t *id);
int shop_user_of(struct http_exchange *x, char *out);
json_t *shop_product_json(const struct db_product *p);
void shop_read_source(struct shop_req *q);

/* shop.c */
void shop_check_stop(struct shop *s);

#endif
