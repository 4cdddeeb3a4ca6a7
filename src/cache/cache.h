/*
 * The shop's cache, cache-aside: callers look a key up, on a miss read the
 * source (SQLite) and fill the cache; a change invalidates. One per worker.
 *
 * Backends:
 * - Without Redis: a per-worker LRU with TTL and a byte bound (cache/lru).
 * - With Redis: Redis is the cache every worker and machine shares, and the
 *   LRU becomes a near cache in front of it for keys the caller allows
 *   (near_ttl_ms > 0), used only while the worker's subscriber connection
 *   is up, so an invalidation published by any machine reaches it.
 *
 * Invalidation, seen by every worker at its next read:
 * - this machine: a counter in a small file shared by every worker
 *   (epoch_path, mapped MAP_SHARED) is bumped before cache_invalidate()
 *   returns; a worker that finds it changed drops its whole LRU before it
 *   answers anything from it;
 * - Redis: one script bumps a generation key, deletes the keys and every
 *   member of the named index sets (e.g. all product lists), and publishes
 *   on the invalidation channel; other machines' workers drop their near
 *   caches when the message arrives.
 * A fill carries the ticket of its lookup: when an invalidation happened in
 * between (epoch, subscriber messages, or Redis's generation), the value
 * read from the source may be stale and is not stored.
 *
 * A cache failure is a miss, never an error: callers then read the source.
 */
#ifndef COHORT_CACHE_CACHE_H
#define COHORT_CACHE_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct cache;
struct redis;
struct metrics_slot;

#define CACHE_CHANNEL "cohort:invalidate"
#define CACHE_GENERATION_KEY "cache:generation"

struct cache_opts {
    uv_loop_t *loop;
    const char *redis_url;      /* NULL or "": no Redis (unless sentinels) */
    const char *sentinels;      /* "host:port,...": the primary from Sentinel (redis/sentinel.h) */
    const char *master_name;
    int wait_replicas;          /* for redis_wait on the command connection */
    int64_t wait_timeout_ms;
    int64_t command_timeout_ms;
    size_t local_size;          /* bytes of the LRU; 0: none */
    const char *epoch_path;     /* shared invalidation counter (created) */
    struct metrics_slot *slot;  /* cache_* and redis_* counters; may be NULL */
    void (*on_redis_up)(void *arg); /* the command connection came up (again); may be NULL */
    void *arg;
};

/* What a lookup saw; handed back to cache_fill. */
struct cache_ticket {
    uint64_t epoch;     /* the machine's invalidation counter */
    uint64_t local_gen; /* this worker's count of near-cache resets */
    char gen[24];       /* Redis's generation key, as text */
    int64_t near_ttl_ms; /* as asked for by cache_get */
    unsigned remote : 1; /* Redis answered "miss": fill it */
};

/* Later answer of a lookup: hit with the value (valid during the call), or
 * miss (val NULL). */
typedef void (*cache_get_fn)(void *arg, const char *val, size_t len, const struct cache_ticket *t);

struct cache *cache_new(const struct cache_opts *o, char *err, size_t errlen);

/* Closes the Redis connections (letting replies in flight arrive), frees
 * everything, then calls done(arg). */
void cache_close(struct cache *c, void (*done)(void *arg), void *arg);

/* The Redis command connection (carts, counters); NULL without Redis. */
struct redis *cache_conn(struct cache *c);

/*
 * Looks a key up. Returns 0 for a hit found at once (*val, *len valid until
 * the next cache call), -ENOENT for a miss known at once (no Redis, or it
 * is down), or -EINPROGRESS when Redis was asked: cb(arg, ...) runs later,
 * exactly once. *t is filled in every case (for the miss path's cache_fill).
 * With cb NULL only this worker's cache is looked at (a cheap first try
 * that needs no allocation); its miss is not counted.
 * near_ttl_ms: how long a value fetched from Redis may be kept in this
 * worker (0: never; only for keys that cache_invalidate covers).
 */
int cache_get(struct cache *c, const char *key, size_t klen, int64_t near_ttl_ms, struct cache_ticket *t,
              const char **val, size_t *len, cache_get_fn cb, void *arg);

/*
 * Stores a value read from the source after a miss, for ttl_ms, unless the
 * ticket shows an invalidation since. `index` (or NULL) names a set that
 * records the key, so cache_invalidate can drop it with its siblings.
 * Fire and forget.
 */
void cache_fill(struct cache *c, const struct cache_ticket *t, const char *key, size_t klen, const void *val,
                size_t vlen, int64_t ttl_ms, const char *index);

/*
 * Invalidates keys and every key recorded in the index sets, as described
 * above. Returns 0 when done (no Redis), -EINPROGRESS when Redis was asked
 * (done(arg, status) runs later: 0, or -EIO when Redis failed), -ENOTCONN
 * when Redis is down, or -ENOMEM. Redis's part that could not be done is kept and sent
 * first thing when the connection is back.
 */
int cache_invalidate(struct cache *c, const char *const *keys, size_t nkeys, const char *const *indexes,
                     size_t nindexes, void (*done)(void *arg, int status), void *arg);

/* Whether Redis is configured, and whether it is up now. */
int cache_has_redis(const struct cache *c);
int cache_conn_up(const struct cache *c);

#endif
