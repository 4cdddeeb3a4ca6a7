/*
 * Carts in Redis (cart_store.h): HINCRBY cart:<user> <productId> <qty>,
 * HDEL, HGETALL completed with names and prices from the catalog on the
 * thread pool. It does not check products: its caller looks them up.
 *
 * A change is answered from Redis's replies only, so success is never
 * given for a change Redis did not make. With wait_replicas, a WAIT follows
 * the command on the same connection (redis_wait) and the change counts
 * only when that many replicas acknowledged it (else -EIO): after a
 * failover the promoted replica has every change answered 200.
 *
 * The worker's first Redis connection is made while it already serves:
 * until it came up, or command_timeout_ms after the store was made,
 * cart_store_ready parks a caller rather than failing it; after that an
 * outage is -ENOTCONN at once. The owner calls cart_redis_up when the
 * connection came up.
 */
#ifndef COHORT_APP_CART_REDIS_H
#define COHORT_APP_CART_REDIS_H

#include <stdint.h>
#include <uv.h>

#include "app/cart_store.h"
#include "redis/redis.h"

struct cart_redis_opts {
    uv_loop_t *loop;
    struct redis *redis;      /* must outlive the store */
    struct db *db;            /* the catalog, for get */
    int wait_replicas;
    int64_t wait_timeout_ms;  /* for the log line */
    int64_t command_timeout_ms; /* how long callers may wait for the first connection */
};

struct cart_store *cart_redis_new(const struct cart_redis_opts *o);

/* The connection came up (again): parked callers go on. */
void cart_redis_up(struct cart_store *cs);

#endif
