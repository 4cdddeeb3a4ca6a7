/*
 * A bounded in-process cache: keys and values are bytes, every entry has an
 * expiry time, and the least recently used entries leave first when the
 * byte bound is reached. One per worker, used from its loop thread only (no
 * locking). Pure: no I/O, no clock of its own -- the caller passes the time,
 * so tests drive it.
 *
 * Accounting: an entry costs its key, its value and a fixed overhead
 * (CACHE_LRU_OVERHEAD bytes); the sum never exceeds the bound given to
 * cache_lru_new(). A value larger than the whole bound is not stored.
 *
 * Ownership: the cache copies keys and values. A pointer returned by
 * cache_lru_get() stays valid until the next call that changes the cache
 * (set, del, clear, or a get that finds an expired entry).
 */
#ifndef COHORT_CACHE_LRU_H
#define COHORT_CACHE_LRU_H

#include <stddef.h>
#include <stdint.h>

#define CACHE_LRU_OVERHEAD 64

struct cache_lru;

/* A cache holding at most max_bytes; NULL when out of memory. */
struct cache_lru *cache_lru_new(size_t max_bytes);
void cache_lru_free(struct cache_lru *c);

/*
 * The value of a key that has not expired at `now_ms` (*len set), and marks
 * it recently used; NULL when absent or expired (an expired entry is
 * dropped).
 */
const char *cache_lru_get(struct cache_lru *c, const char *key, size_t klen, uint64_t now_ms, size_t *len);

/*
 * Stores a copy of the value until `expires_ms`, replacing any old value and
 * evicting least recently used entries as needed. Returns 0, -E2BIG when the
 * entry alone exceeds the bound, or -ENOMEM.
 */
int cache_lru_set(struct cache_lru *c, const char *key, size_t klen, const void *val, size_t vlen,
                  uint64_t expires_ms);

/* Removes a key; 0, or -ENOENT when it was not there. */
int cache_lru_del(struct cache_lru *c, const char *key, size_t klen);

/* Removes every entry. */
void cache_lru_clear(struct cache_lru *c);

size_t cache_lru_count(const struct cache_lru *c);
size_t cache_lru_bytes(const struct cache_lru *c);
/* Entries dropped to make room (not expiry, not del). */
uint64_t cache_lru_evictions(const struct cache_lru *c);

#endif
