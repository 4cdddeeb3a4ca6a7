/*
 * Finding the Redis primary through Redis Sentinel, one per worker, shared
 * by the worker's Redis connections (redis/redis.c), as Sentinel's client
 * guidelines describe:
 *
 * - Asking: `SENTINEL get-master-addr-by-name <name>` on a connection kept
 *   to one Sentinel. A Sentinel that is not reachable within the timeout,
 *   answers an error or knows no primary by that name is left for the next
 *   one in the list; the one that answered is asked first next time. Asks
 *   made while one is under way share its answer. When no Sentinel of the
 *   list answered, every ask fails: the caller retries with its backoff.
 * - Following: a subscriber connection to one Sentinel listens on
 *   `+switch-master`; a switch of our primary is handed to on_switch (the
 *   caller drops its connections to the old address). The subscriber moves
 *   to the next Sentinel when it cannot come up, at once when it loses a
 *   Sentinel it was subscribed to (a late probe: redis/redis.h), and when
 *   the asking connection finds its Sentinel unreachable; each time it
 *   comes up it asks once and hands the answer to on_switch too, so a
 *   switch it missed while moving is followed as well.
 *
 * An answer may be stale during a failover: the caller checks that the
 * server is the primary (ROLE), and asks again whenever its connection is
 * lost or refused.
 *
 * Ownership: sentinel_new() returns the object; sentinel_close()
 * frees it once its connections and timers closed, then calls done. The
 * storage of an ask (struct redis_primary_ask) is the caller's and must
 * stay valid until its callback ran or the ask was cancelled. Callbacks
 * never run from within the call that started the ask.
 */
#ifndef COHORT_REDIS_SENTINEL_H
#define COHORT_REDIS_SENTINEL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "redis/redis.h"

struct sentinel;

struct sentinel_opts {
    const char *addrs;        /* "host:port,[ipv6]:port,...", tried in this order */
    const char *master_name;  /* as in `sentinel monitor <name> ...` */
    int64_t timeout_ms;       /* to reach a Sentinel and have its answer */
    void (*on_switch)(void *arg, const char *host, int port);
    void *arg;
};

/* Starts the subscriber at once. NULL with a message in err for a bad
 * address or when out of memory. */
struct sentinel *sentinel_new(uv_loop_t *loop, const struct sentinel_opts *o, char *err, size_t errlen);

/* Asks for the primary's address; cb(arg, ...) runs later, exactly once,
 * unless the ask is cancelled first: status 0 with host (valid during the
 * call) and port, -EHOSTUNREACH when no Sentinel answered, -ECANCELED when
 * closing. Not after sentinel_close. */
void sentinel_ask(struct sentinel *s, struct redis_primary_ask *a, redis_primary_fn cb, void *arg);

/* Forgets an ask still under way (a no-op for one already answered). */
void sentinel_cancel(struct redis_primary_ask *a);

/* The Sentinels as a primary source for redis_opts.primary; valid as long
 * as s. */
const struct redis_primary *sentinel_primary(struct sentinel *s);

/* Closes the connections; asks still under way get -ECANCELED. */
void sentinel_close(struct sentinel *s, void (*done)(void *arg), void *arg);

#endif
