/*
 * The response cache, a route filter (routes[].cache.ttl; in cache/, as
 * it stores through cache/cache.h, which filters/ may not include): a GET
 * or HEAD is looked up under response:GET:<path>?<query>; a hit is replayed with
 * X-Cache: HIT and the rest of the chain and the handler do not run. A
 * GET that misses passes on, and its answer is kept for the route's TTL
 * when it is a complete 200 whose body passed through memory (a whole
 * body, chunks or a stream, up to RCACHE_BODY_MAX bytes: a proxied
 * response is kept, a file sent with sendfile is not), and none of its
 * fields is Set-Cookie or a Cache-Control with no-store or private.
 *
 * One struct rcache per worker generation. Its store is the shop's cache
 * (Redis with a near cache) when the shop gives it one (rcache_attach),
 * or else a cache of its own in the worker (cache.local_size bytes).
 */
#ifndef COHORT_CACHE_RESPONSE_H
#define COHORT_CACHE_RESPONSE_H

#include <stdint.h>
#include <uv.h>

#include "cache/cache.h"
#include "core/config.h"
#include "http/filter.h"

#define RCACHE_BODY_MAX (1u << 20)

struct rcache;

struct rcache *rcache_new(void);

/* The store: `c` (not the filter's; it must outlive lookups in flight:
 * `idle(arg)` runs whenever the last one ends, see rcache_busy). */
void rcache_attach(struct rcache *rc, struct cache *c, void (*idle)(void *arg), void *arg);

/* A store of its own, in this worker only. 0 or -ENOMEM. */
int rcache_open_local(struct rcache *rc, uv_loop_t *loop, const struct cfg *cfg);

/* Lookups in flight (a store with Redis answers later). */
int rcache_busy(const struct rcache *rc);

/* The filter for a route whose responses are kept ttl_ms: 0, -ENOMEM. */
int rcache_filter(struct rcache *rc, int64_t ttl_ms, struct http_filter *out);

/* Closes a store of its own; done(arg) then, or at once. */
void rcache_stop(struct rcache *rc, void (*done)(void *arg), void *arg);
void rcache_free(struct rcache *rc);

/* 1 when a response with this field may be kept. */
int rcache_header_ok(const char *name, size_t name_len, const char *value, size_t value_len);

#endif
