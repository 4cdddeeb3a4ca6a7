/*
 * LRU with TTL: a chained hash table (power-of-two buckets, doubled when
 * the entries outnumber them) plus one recency list, most recent at the
 * tail. Each entry is one allocation holding its key and value.
 */
#include "cache/lru.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/list.h"

struct entry {
    struct entry *next;     /* hash chain */
    struct list_node lru;   /* in c->recency, oldest at the head */
    uint64_t hash;
    uint64_t expires_ms;
    uint32_t klen, vlen;
    char data[];            /* key, then value, then a NUL */
};

struct cache_lru {
    struct entry **buckets;
    size_t nbuckets;        /* a power of two */
    size_t count, bytes, max_bytes;
    uint64_t evictions;
    struct list_node recency;
};

_Static_assert(sizeof(struct entry) <= CACHE_LRU_OVERHEAD, "entry overhead is accounted as CACHE_LRU_OVERHEAD");

/* FNV-1a, 64 bits: keys are short and chosen by our code, not by clients
 * alone (a prefix is always ours), so a keyed hash buys nothing here. */
static uint64_t hash_of(const char *k, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static size_t cost(size_t klen, size_t vlen)
{
    return CACHE_LRU_OVERHEAD + klen + vlen;
}

struct cache_lru *cache_lru_new(size_t max_bytes)
{
    struct cache_lru *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->nbuckets = 64;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (!c->buckets) {
        free(c);
        return NULL;
    }
    c->max_bytes = max_bytes;
    list_init(&c->recency);
    return c;
}

void cache_lru_free(struct cache_lru *c)
{
    if (!c)
        return;
    cache_lru_clear(c);
    free(c->buckets);
    free(c);
}

/* The link that points at the entry for key (or at the NULL ending its
 * chain), so callers can unlink without a second walk. */
static struct entry **find(struct cache_lru *c, const char *key, size_t klen, uint64_t h)
{
    struct entry **pp = &c->buckets[h & (c->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next) {
        struct entry *e = *pp;
        if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0)
            break;
    }
    return pp;
}

static void drop(struct cache_lru *c, struct entry **pp)
{
    struct entry *e = *pp;
    *pp = e->next;
    list_unlink(&e->lru);
    c->count--;
    c->bytes -= cost(e->klen, e->vlen);
    free(e);
}

/* Doubling keeps chains short; failing to grow only makes them longer. */
static void grow(struct cache_lru *c)
{
    size_t n = c->nbuckets * 2;
    struct entry **b = calloc(n, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct entry *e = c->buckets[i];
        while (e) {
            struct entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
}

const char *cache_lru_get(struct cache_lru *c, const char *key, size_t klen, uint64_t now_ms, size_t *len)
{
    struct entry **pp = find(c, key, klen, hash_of(key, klen));
    struct entry *e = *pp;
    if (!e)
        return NULL;
    if (e->expires_ms <= now_ms) {
        drop(c, pp);
        return NULL;
    }
    list_unlink(&e->lru);
    list_append(&c->recency, &e->lru);
    if (len)
        *len = e->vlen;
    return e->data + e->klen;
}

/* Evicts from the least recently used end until `need` more bytes fit. */
static void make_room(struct cache_lru *c, size_t need)
{
    while (c->bytes + need > c->max_bytes && !list_empty(&c->recency)) {
        struct entry *old = list_entry(c->recency.next, struct entry, lru);
        drop(c, find(c, old->data, old->klen, old->hash));
        c->evictions++;
    }
}

int cache_lru_set(struct cache_lru *c, const char *key, size_t klen, const void *val, size_t vlen,
                  uint64_t expires_ms)
{
    size_t need = cost(klen, vlen);
    if (need > c->max_bytes || klen > UINT32_MAX || vlen > UINT32_MAX)
        return -E2BIG;
    uint64_t h = hash_of(key, klen);
    struct entry **pp = find(c, key, klen, h);
    if (*pp)
        drop(c, pp);
    struct entry *e = malloc(sizeof(*e) + klen + vlen + 1);
    if (!e)
        return -ENOMEM;
    make_room(c, need);
    e->hash = h;
    e->expires_ms = expires_ms;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    memcpy(e->data, key, klen);
    if (vlen)
        memcpy(e->data + klen, val, vlen);
    e->data[klen + vlen] = '\0';
    if (c->count >= c->nbuckets)
        grow(c);
    struct entry **head = &c->buckets[h & (c->nbuckets - 1)];
    e->next = *head;
    *head = e;
    list_append(&c->recency, &e->lru);
    c->count++;
    c->bytes += need;
    return 0;
}

int cache_lru_del(struct cache_lru *c, const char *key, size_t klen)
{
    struct entry **pp = find(c, key, klen, hash_of(key, klen));
    if (!*pp)
        return -ENOENT;
    drop(c, pp);
    return 0;
}

void cache_lru_clear(struct cache_lru *c)
{
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct entry *e = c->buckets[i];
        while (e) {
            struct entry *next = e->next;
            free(e);
            e = next;
        }
        c->buckets[i] = NULL;
    }
    list_init(&c->recency);
    c->count = 0;
    c->bytes = 0;
}

size_t cache_lru_count(const struct cache_lru *c)
{
    return c->count;
}

size_t cache_lru_bytes(const struct cache_lru *c)
{
    return c->bytes;
}

uint64_t cache_lru_evictions(const struct cache_lru *c)
{
    return c->evictions;
}
