/* The per-worker LRU cache: hits, TTL expiry, the byte bound, recency. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cache/lru.h"

static int set(struct cache_lru *c, const char *k, const char *v, uint64_t exp)
{
    return cache_lru_set(c, k, strlen(k), v, strlen(v), exp);
}

static const char *get(struct cache_lru *c, const char *k, uint64_t now)
{
    size_t n = 0;
    const char *v = cache_lru_get(c, k, strlen(k), now, &n);
    cr_assert(!v || strlen(v) == n, "values are NUL-terminated at their length");
    return v;
}

Test(lru, set_get_replace_del)
{
    struct cache_lru *c = cache_lru_new(1 << 20);
    cr_assert_null(get(c, "product:1", 0));
    cr_assert_eq(set(c, "product:1", "{\"id\":1}", 1000), 0);
    cr_assert_str_eq(get(c, "product:1", 10), "{\"id\":1}");
    cr_assert_eq(set(c, "product:1", "{\"id\":1,\"x\":2}", 1000), 0);
    cr_assert_str_eq(get(c, "product:1", 10), "{\"id\":1,\"x\":2}");
    cr_assert_eq(cache_lru_count(c), 1);
    cr_assert_eq(cache_lru_bytes(c), CACHE_LRU_OVERHEAD + 9 + 14);
    cr_assert_eq(cache_lru_del(c, "product:1", 9), 0);
    cr_assert_eq(cache_lru_del(c, "product:1", 9), -ENOENT);
    cr_assert_null(get(c, "product:1", 10));
    cr_assert_eq(cache_lru_bytes(c), 0);
    cache_lru_free(c);
}

Test(lru, binary_keys_and_empty_values)
{
    struct cache_lru *c = cache_lru_new(1 << 20);
    cr_assert_eq(cache_lru_set(c, "a\0b", 3, "", 0, 100), 0);
    cr_assert_eq(cache_lru_set(c, "a\0c", 3, "x", 1, 100), 0);
    size_t n = 9;
    const char *v = cache_lru_get(c, "a\0b", 3, 0, &n);
    cr_assert_not_null(v);
    cr_assert_eq(n, 0);
    cr_assert_str_eq(cache_lru_get(c, "a\0c", 3, 0, &n), "x");
    cr_assert_null(cache_lru_get(c, "a", 1, 0, &n));
    cache_lru_free(c);
}

Test(lru, ttl_expires_at_the_deadline)
{
    struct cache_lru *c = cache_lru_new(1 << 20);
    cr_assert_eq(set(c, "k", "v", 500), 0);
    cr_assert_str_eq(get(c, "k", 499), "v");
    cr_assert_null(get(c, "k", 500), "an entry is gone at its expiry time");
    cr_assert_eq(cache_lru_count(c), 0, "an expired entry found by get is dropped");
    cache_lru_free(c);
}

Test(lru, byte_bound_evicts_least_recently_used)
{
    /* room for exactly three entries of 2-byte keys and 10-byte values */
    size_t one = CACHE_LRU_OVERHEAD + 2 + 10;
    struct cache_lru *c = cache_lru_new(3 * one);
    cr_assert_eq(set(c, "k1", "0123456789", 1000), 0);
    cr_assert_eq(set(c, "k2", "0123456789", 1000), 0);
    cr_assert_eq(set(c, "k3", "0123456789", 1000), 0);
    cr_assert_not_null(get(c, "k1", 0)); /* k1 is now the most recent; k2 the oldest */
    cr_assert_eq(set(c, "k4", "0123456789", 1000), 0);
    cr_assert_null(get(c, "k2", 0), "the least recently used entry left");
    cr_assert_not_null(get(c, "k1", 0));
    cr_assert_not_null(get(c, "k3", 0));
    cr_assert_not_null(get(c, "k4", 0));
    cr_assert_eq(cache_lru_count(c), 3);
    cr_assert_leq(cache_lru_bytes(c), 3 * one);
    cr_assert_eq(cache_lru_evictions(c), 1);
    cache_lru_free(c);
}

Test(lru, entry_bigger_than_the_bound_is_refused)
{
    struct cache_lru *c = cache_lru_new(CACHE_LRU_OVERHEAD + 8);
    cr_assert_eq(set(c, "k", "1234567", 100), 0);
    cr_assert_eq(set(c, "k2", "12345678", 100), -E2BIG);
    cr_assert_str_eq(get(c, "k", 0), "1234567", "a refused entry evicts nothing");
    struct cache_lru *none = cache_lru_new(0);
    cr_assert_eq(set(none, "k", "v", 100), -E2BIG);
    cache_lru_free(none);
    cache_lru_free(c);
}

Test(lru, many_keys_grow_the_table_and_stay_bounded)
{
    struct cache_lru *c = cache_lru_new(200 * (CACHE_LRU_OVERHEAD + 16));
    char k[32], v[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof k, "key:%06d", i);
        snprintf(v, sizeof v, "v%05d", i);
        cr_assert_eq(set(c, k, v, 1000), 0);
        cr_assert_leq(cache_lru_bytes(c), 200 * (CACHE_LRU_OVERHEAD + 16));
    }
    cr_assert_eq(cache_lru_count(c), 200, "16-byte entries: exactly 200 fit");
    for (int i = 9800; i < 10000; i++) {
        snprintf(k, sizeof k, "key:%06d", i);
        snprintf(v, sizeof v, "v%05d", i);
        cr_assert_str_eq(get(c, k, 0), v);
    }
    cr_assert_null(get(c, "key:009799", 0));
    cache_lru_clear(c);
    cr_assert_eq(cache_lru_count(c), 0);
    cr_assert_eq(cache_lru_bytes(c), 0);
    cr_assert_eq(set(c, "again", "x", 10), 0);
    cr_assert_str_eq(get(c, "again", 0), "x");
    cache_lru_free(c);
}
