/*
 * Cache-aside over Redis and a per-worker LRU. See cache.h.
 */
#include "cache/cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/lru.h"
#include "redis/redis.h"
#include "redis/sentinel.h"
#include "core/log.h"
#include "core/metrics.h"

#define EPOCH_FILE_SIZE 4096

/* Stores a value only if no invalidation bumped the generation since the
 * lookup; records the key in an index set that lives as long as its
 * longest-lived member. KEYS: generation, key[, index]. ARGV: generation
 * seen, value, ttl in ms. */
static const char fill_script[] =
    "if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end\n"
    "redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])\n"
    "if KEYS[3] then\n"
    "  redis.call('SADD', KEYS[3], KEYS[2])\n"
    "  if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end\n"
    "end\n"
    "return 1\n";

/* KEYS: generation, ARGV[1] plain keys, then index sets. ARGV: count of
 * plain keys, channel. Atomic: no reader sees half of it. */
static const char invalidate_script[] =
    "redis.call('INCR', KEYS[1])\n"
    "local n = tonumber(ARGV[1])\n"
    "for i = 2, n + 1 do redis.call('DEL', KEYS[i]) end\n"
    "for i = n + 2, #KEYS do\n"
    "  for _, k in ipairs(redis.call('SMEMBERS', KEYS[i])) do redis.call('DEL', k) end\n"
    "  redis.call('DEL', KEYS[i])\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[2], 'invalidate')\n"
    "return 1\n";

struct strs {
    char **v;
    size_t n;
};

struct cache {
    uv_loop_t *loop;
    struct cache_lru *lru;
    struct redis *cmd, *sub;
    struct sentinel *sentinel; /* NULL: redis_url names the server */
    uint64_t *epoch;          /* shared: bumped by any worker of the machine */
    uint64_t epoch_seen;
    uint64_t local_gen;
    int sub_up;
    struct metrics_slot *slot;
    void (*on_redis_up)(void *arg);
    void *arg;
    struct strs owed_keys, owed_idx; /* invalidations Redis has not had yet */
    int closes_left;
    void (*done)(void *arg);
    void *done_arg;
};

struct get_req {
    struct cache *c;
    cache_get_fn cb;
    void *arg;
    struct cache_ticket t;
    size_t klen;
    char key[];
};

struct inv_req {
    struct cache *c;
    void (*done)(void *arg, int status);
    void *arg;
    struct strs keys, idx; /* owed again if Redis fails */
};

/* --- small helpers ------------------------------------------------------ */

static void strs_free(struct strs *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static int strs_add(struct strs *s, const char *str)
{
    char **v = realloc(s->v, (s->n + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    s->v = v;
    if (!(v[s->n] = strdup(str)))
        return -ENOMEM;
    s->n++;
    return 0;
}

/* Moves every string of src to the end of dst. */
static void strs_take(struct strs *dst, struct strs *src)
{
    for (size_t i = 0; i < src->n; i++)
        strs_add(dst, src->v[i]);
    strs_free(src);
}

static void count(struct cache *c, int hit)
{
    if (!c->slot)
        return;
    if (hit)
        metrics_add(c->slot->cache_hits, 1);
    else
        metrics_add(c->slot->cache_misses, 1);
}

/* The near cache serves only while invalidations can reach it. */
static int local_usable(const struct cache *c)
{
    return c->lru && (!c->cmd || c->sub_up);
}

static void reset_local(struct cache *c)
{
    c->local_gen++;
    if (c->lru)
        cache_lru_clear(c->lru);
}

/* Reads the machine's counter; drops the LRU when another worker (or this
 * one) invalidated since the last look. */
static uint64_t sync_epoch(struct cache *c)
{
    if (!c->epoch)
        return 0;
    uint64_t e = __atomic_load_n(c->epoch, __ATOMIC_ACQUIRE);
    if (e != c->epoch_seen) {
        c->epoch_seen = e;
        if (c->lru)
            cache_lru_clear(c->lru);
    }
    return e;
}

static int fresh(struct cache *c, const struct cache_ticket *t)
{
    return t->epoch == sync_epoch(c) && t->local_gen == c->local_gen;
}

static void store_local(struct cache *c, const struct cache_ticket *t, const char *key, size_t klen, const char *val,
                        size_t vlen, int64_t ttl_ms)
{
    if (ttl_ms > 0 && local_usable(c) && fresh(c, t))
        cache_lru_set(c->lru, key, klen, val, vlen, uv_now(c->loop) + (uint64_t)ttl_ms);
}

static int map_epoch(const char *path, uint64_t **out, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || fstat(fd, &st) < 0 || (st.st_size < EPOCH_FILE_SIZE && ftruncate(fd, EPOCH_FILE_SIZE) < 0)) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -errno;
    }
    void *p = mmap(NULL, EPOCH_FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "%s: cannot map: %s", path, strerror(e));
        return -e;
    }
    *out = p;
    return 0;
}

/* --- Redis: invalidations --------------------------------------------- */

static void owe(struct cache *c, struct strs *keys, struct strs *idx)
{
    strs_take(&c->owed_keys, keys);
    strs_take(&c->owed_idx, idx);
}

static void invalidated(void *arg, redisReply *rep)
{
    struct inv_req *q = arg;
    int ok = rep && rep->type != REDIS_REPLY_ERROR;
    if (!ok) {
        log_warn("cache: Redis did not take an invalidation (%s); sending it again when it is back",
                 rep ? rep->str : "no reply");
        owe(q->c, &q->keys, &q->idx);
    }
    if (q->done)
        q->done(q->arg, ok ? 0 : -EIO);
    strs_free(&q->keys);
    strs_free(&q->idx);
    free(q);
}

/* Sends one invalidation script for q's keys; owes them on failure. */
static int send_invalidation(struct cache *c, struct inv_req *q)
{
    size_t n = 1 + q->keys.n + q->idx.n, argc = 3 + n + 2, a = 0;
    const char **argv = malloc(argc * sizeof(*argv));
    char nkeys[24], nplain[24];
    int rc = -ENOMEM;
    if (argv) {
        snprintf(nkeys, sizeof nkeys, "%zu", n);
        snprintf(nplain, sizeof nplain, "%zu", q->keys.n);
        argv[a++] = "EVAL";
        argv[a++] = invalidate_script;
        argv[a++] = nkeys;
        argv[a++] = CACHE_GENERATION_KEY;
        for (size_t i = 0; i < q->keys.n; i++)
            argv[a++] = q->keys.v[i];
        for (size_t i = 0; i < q->idx.n; i++)
            argv[a++] = q->idx.v[i];
        argv[a++] = nplain;
        argv[a++] = CACHE_CHANNEL;
        rc = redis_command(c->cmd, invalidated, q, (int)argc, argv, NULL);
        free(argv);
    }
    if (rc < 0) {
        owe(c, &q->keys, &q->idx);
        free(q);
    }
    return rc;
}

/* The command connection is (back) up: what is owed goes first. */
static void on_cmd_state(void *arg, int up)
{
    struct cache *c = arg;
    if (up && c->on_redis_up)
        c->on_redis_up(c->arg);
    if (!up || (!c->owed_keys.n && !c->owed_idx.n))
        return;
    struct inv_req *q = calloc(1, sizeof(*q));
    if (!q)
        return;
    q->c = c;
    q->keys = c->owed_keys;
    q->idx = c->owed_idx;
    c->owed_keys = (struct strs){0};
    c->owed_idx = (struct strs){0};
    log_info("cache: sending %zu owed invalidations to Redis", q->keys.n + q->idx.n);
    send_invalidation(c, q);
}

static void on_sub_state(void *arg, int up)
{
    struct cache *c = arg;
    c->sub_up = up;
    reset_local(c); /* messages may have been missed either way */
}

static void on_sub_message(void *arg, const char *msg, size_t len)
{
    (void)msg;
    (void)len;
    reset_local(arg);
}

/* The Sentinels announced a failover: both connections follow. */
static void on_primary_moved(void *arg, const char *host, int port)
{
    struct cache *c = arg;
    if (c->cmd)
        redis_retarget(c->cmd, host, port);
    if (c->sub)
        redis_retarget(c->sub, host, port);
}

/* --- the interface ------------------------------------------------------ */

struct cache *cache_new(const struct cache_opts *o, char *err, size_t errlen)
{
    struct cache *c = calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->loop = o->loop;
    c->slot = o->slot;
    c->on_redis_up = o->on_redis_up;
    c->arg = o->arg;
    if (o->local_size > 0 && !(c->lru = cache_lru_new(o->local_size))) {
        snprintf(err, errlen, "out of memory");
        free(c);
        return NULL;
    }
    if (o->epoch_path && map_epoch(o->epoch_path, &c->epoch, err, errlen) < 0) {
        cache_lru_free(c->lru);
        free(c);
        return NULL;
    }
    c->epoch_seen = c->epoch ? __atomic_load_n(c->epoch, __ATOMIC_ACQUIRE) : 0;
    int sentinels = o->sentinels && *o->sentinels;
    if ((!o->redis_url || !*o->redis_url) && !sentinels)
        return c;
    if (sentinels) {
        struct sentinel_opts so = {.addrs = o->sentinels, .master_name = o->master_name,
                                   .timeout_ms = o->command_timeout_ms, .on_switch = on_primary_moved,
                                   .arg = c};
        if (!(c->sentinel = sentinel_new(o->loop, &so, err, errlen))) {
            cache_close(c, NULL, NULL);
            return NULL;
        }
    }
    struct redis_opts ro = {.url = o->redis_url, .primary = c->sentinel ? sentinel_primary(c->sentinel) : NULL,
                            .wait_replicas = o->wait_replicas, .wait_timeout_ms = o->wait_timeout_ms,
                            .command_timeout_ms = o->command_timeout_ms, .on_state = on_cmd_state, .arg = c,
                            .slot = o->slot, .name = "redis"};
    c->cmd = redis_new(o->loop, &ro, err, errlen);
    if (c->cmd && c->lru) {
        ro = (struct redis_opts){.url = o->redis_url, .primary = c->sentinel ? sentinel_primary(c->sentinel) : NULL,
                                 .command_timeout_ms = o->command_timeout_ms, .channel = CACHE_CHANNEL,
                                 .on_message = on_sub_message, .on_state = on_sub_state, .arg = c,
                                 .name = "redis subscriber"};
        c->sub = redis_new(o->loop, &ro, err, errlen);
    }
    if (!c->cmd || (c->lru && !c->sub)) {
        /* only a bad URL or no memory get here, before any I/O */
        cache_close(c, NULL, NULL);
        return NULL;
    }
    return c;
}

static void finish(struct cache *c)
{
    void (*done)(void *) = c->done;
    void *arg = c->done_arg;
    cache_lru_free(c->lru);
    if (c->epoch)
        munmap(c->epoch, EPOCH_FILE_SIZE);
    strs_free(&c->owed_keys);
    strs_free(&c->owed_idx);
    free(c);
    if (done)
        done(arg);
}

static void one_closed(void *arg)
{
    struct cache *c = arg;
    if (--c->closes_left == 0)
        finish(c);
}

void cache_close(struct cache *c, void (*done)(void *arg), void *arg)
{
    c->done = done;
    c->done_arg = arg;
    if (c->owed_keys.n || c->owed_idx.n)
        log_warn("cache: stopping with %zu invalidations Redis never got", c->owed_keys.n + c->owed_idx.n);
    c->closes_left = 1 + !!c->cmd + !!c->sub + !!c->sentinel;
    if (c->cmd)
        redis_close(c->cmd, one_closed, c);
    if (c->sub)
        redis_close(c->sub, one_closed, c);
    /* after the connections: closing them cancelled their asks */
    if (c->sentinel)
        sentinel_close(c->sentinel, one_closed, c);
    one_closed(c);
}

struct redis *cache_conn(struct cache *c)
{
    return c->cmd;
}

int cache_has_redis(const struct cache *c)
{
    return c->cmd != NULL;
}

int cache_conn_up(const struct cache *c)
{
    return c->cmd && redis_up(c->cmd);
}

static void got(void *arg, redisReply *rep)
{
    struct get_req *g = arg;
    struct cache *c = g->c;
    const char *val = NULL;
    size_t len = 0;
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
        redisReply *v = rep->element[0], *gen = rep->element[1];
        if (gen->type == REDIS_REPLY_STRING && gen->len < sizeof(g->t.gen))
            memcpy(g->t.gen, gen->str, gen->len + 1);
        if (v->type == REDIS_REPLY_STRING) {
            val = v->str;
            len = v->len;
            store_local(c, &g->t, g->key, g->klen, val, len, g->t.near_ttl_ms);
        } else {
            g->t.remote = 1;
        }
    }
    count(c, val != NULL);
    g->cb(g->arg, val, len, &g->t);
    free(g);
}

int cache_get(struct cache *c, const char *key, size_t klen, int64_t near_ttl_ms, struct cache_ticket *t,
              const char **val, size_t *len, cache_get_fn cb, void *arg)
{
    *t = (struct cache_ticket){.epoch = sync_epoch(c), .local_gen = c->local_gen, .gen = "0",
                               .near_ttl_ms = near_ttl_ms};
    if (local_usable(c) && (!c->cmd || near_ttl_ms > 0)) {
        const char *v = cache_lru_get(c->lru, key, klen, uv_now(c->loop), len);
        if (v) {
            *val = v;
            count(c, 1);
            return 0;
        }
    }
    if (!cb)
        return -ENOENT; /* a peek at this worker's cache only: not counted as a miss */
    struct get_req *g = c->cmd && redis_up(c->cmd) ? malloc(sizeof(*g) + klen + 1) : NULL;
    if (g) {
        *g = (struct get_req){.c = c, .cb = cb, .arg = arg, .t = *t, .klen = klen};
        memcpy(g->key, key, klen);
        g->key[klen] = '\0';
        const char *argv[] = {"MGET", g->key, CACHE_GENERATION_KEY};
        size_t lens[] = {4, klen, sizeof(CACHE_GENERATION_KEY) - 1};
        if (redis_command(c->cmd, got, g, 3, argv, lens) == 0)
            return -EINPROGRESS;
        free(g);
    }
    count(c, 0);
    return -ENOENT;
}

static void filled(void *arg, redisReply *rep)
{
    (void)arg;
    (void)rep; /* a failed fill is a later miss, nothing more */
}

void cache_fill(struct cache *c, const struct cache_ticket *t, const char *key, size_t klen, const void *val,
                size_t vlen, int64_t ttl_ms, const char *index)
{
    char ttl[24];
    int64_t local_ttl = !c->cmd ? ttl_ms : t->near_ttl_ms < ttl_ms ? t->near_ttl_ms : ttl_ms;
    store_local(c, t, key, klen, val, vlen, local_ttl);
    if (!t->remote || !c->cmd || ttl_ms <= 0)
        return;
    snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
    const char *argv[] = {"EVAL", fill_script, index ? "3" : "2", CACHE_GENERATION_KEY, key, index ? index : "",
                          t->gen, val, ttl};
    size_t lens[] = {4, sizeof(fill_script) - 1, 1, sizeof(CACHE_GENERATION_KEY) - 1, klen,
                     index ? strlen(index) : 0, strlen(t->gen), vlen, strlen(ttl)};
    if (!index) { /* no third key: drop it from argv */
        memmove(&argv[5], &argv[6], 3 * sizeof(*argv));
        memmove(&lens[5], &lens[6], 3 * sizeof(*lens));
    }
    redis_command(c->cmd, filled, NULL, index ? 9 : 8, argv, lens);
}

int cache_invalidate(struct cache *c, const char *const *keys, size_t nkeys, const char *const *indexes,
                     size_t nindexes, void (*done)(void *arg, int status), void *arg)
{
    if (c->epoch)
        __atomic_add_fetch(c->epoch, 1, __ATOMIC_ACQ_REL);
    sync_epoch(c);
    if (!c->cmd)
        return 0;
    struct inv_req *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    *q = (struct inv_req){.c = c, .done = done, .arg = arg};
    for (size_t i = 0; i < nkeys; i++)
        strs_add(&q->keys, keys[i]);
    for (size_t i = 0; i < nindexes; i++)
        strs_add(&q->idx, indexes[i]);
    if (!redis_up(c->cmd)) {
        owe(c, &q->keys, &q->idx);
        free(q);
        return -ENOTCONN;
    }
    return send_invalidation(c, q) < 0 ? -ENOTCONN : -EINPROGRESS;
}
