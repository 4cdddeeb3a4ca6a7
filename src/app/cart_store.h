/*
 * Where carts live: a store interface with two implementations, SQLite
 * (cart_sqlite.c: writes through the write queue, batched) and Redis
 * (cart_redis.c: a hash per user, durable with WAIT). The cart rules
 * (app/carts.c) speak only to this interface.
 *
 * The contract every store keeps (tests/unit/test_carts.c checks it):
 * - add: adds qty to the user's line for a product; the answer is the
 *   line's new quantity. -ENOENT when the product does not exist (a store
 *   without checks_products leaves that check to its caller).
 * - add with an idempotency key: the first add under (user, key) is made
 *   and remembered with its fingerprint (what the add was) for
 *   DB_IDEM_TTL_S; the same key and fingerprint again changes nothing and
 *   answers the quantity the first add left; the same key with another
 *   fingerprint is -EEXIST.
 * - remove: drops the user's line; -ENOENT when there was none.
 * - get: the user's lines in product order, with the catalog's name and
 *   price; lines of products no longer sold are left out.
 * Any other negative errno means the store could not answer.
 *
 * Calls return 0 when accepted (cb runs later, exactly once; a store may
 * run it before the call returns) or a negative errno (cb never runs).
 */
#ifndef COHORT_APP_CART_STORE_H
#define COHORT_APP_CART_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/list.h"
#include "store/db.h"

struct cart_store;

struct cart_line {
    int64_t product_id, price, quantity;
    char name[DB_NAME_MAX + 1];
};

/* rc 0 with qty the line's quantity (an add), or a negative errno. */
typedef void (*cart_done_fn)(void *arg, int rc, int64_t qty);
/* rc 0 with the lines (valid during the call), or a negative errno. */
typedef void (*cart_get_fn)(void *arg, int rc, const struct cart_line *lines, size_t n);

/* A caller waiting for the store to come up (cart_store_ready): fn runs
 * once, with 0 (go on) or a negative errno (the store is down). */
struct cart_wait {
    struct list_node link;
    void (*fn)(void *arg, int rc);
    void *arg;
};

struct cart_store_ops {
    /* idem and fp: "" (or NULL) for a plain add. */
    int (*add)(struct cart_store *cs, const char *user, int64_t id, int64_t qty, const char *idem, const char *fp,
               cart_done_fn cb, void *arg);
    int (*remove)(struct cart_store *cs, const char *user, int64_t id, cart_done_fn cb, void *arg);
    int (*get)(struct cart_store *cs, const char *user, cart_get_fn cb, void *arg);
    /* 0: can take work now; -EINPROGRESS: w->fn runs later (w's storage
     * is the caller's until then); another negative errno: down. NULL:
     * always 0. */
    int (*ready)(struct cart_store *cs, struct cart_wait *w);
    /* Frees the store once its handles closed, then done(arg); nothing
     * may be in flight. */
    void (*close)(struct cart_store *cs, void (*done)(void *arg), void *arg);
};

struct cart_store {
    const struct cart_store_ops *ops;
    unsigned checks_products : 1; /* add answers -ENOENT for an unknown product */
    unsigned stopping : 1;        /* set by the owner: nothing starts waiting any more */
};

static inline int cart_store_ready(struct cart_store *cs, struct cart_wait *w)
{
    return cs->ops->ready ? cs->ops->ready(cs, w) : 0;
}

#endif
