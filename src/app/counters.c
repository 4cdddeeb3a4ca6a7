/*
 * Request counters. See counters.h.
 */
#include "app/counters.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

struct counter_entry {
    long route;                  /* -1: counts moved out of SQLite (name) */
    int method;
    uint64_t n;
    char name[320];
};

/* A write of counters for the SQLite queue, or the takeover's read. */
struct counter_batch {
    struct writeq_item it;
    struct shop *s;
    int rc;
    struct counter_entry *counters;
    size_t ncounters;
};

struct incr {
    struct shop *s;
    long route;                  /* -1: counts moved out of SQLite (name) */
    int method;
    uint64_t n;
    char name[320];
};

static struct counter_batch *batch_new(struct shop *s)
{
    struct counter_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->s = s;
    s->busy++;
    return b;
}

static void batch_free(struct counter_batch *b)
{
    struct shop *s = b->s;
    free(b->counters);
    free(b);
    s->busy--;
    shop_check_stop(s);
}

uint64_t counters_pending(const struct shop *s)
{
    return s->counts ? rcount_pending(s->counts) : 0;
}

static void counter_name(const struct shop *s, size_t route, int m, char *buf, size_t len)
{
    snprintf(buf, len, "request:%s:%s", http_method_name((enum http_method)m), rcount_name(s->counts, route));
}

static void give_back(struct shop *s, const char *name, uint64_t n);

static void incr_done(void *arg, redisReply *reply)
{
    struct incr *c = arg;
    struct shop *s = c->s;
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        ; /* counted */
    else if (c->route >= 0)
        rcount_put(s->counts, (size_t)c->route, c->method, c->n); /* kept for the next flush */
    else
        give_back(s, c->name, c->n);
    free(c);
    s->busy--;
    shop_check_stop(s);
}

/* One INCRBY per counter, all in this loop iteration: one write. */
static void flush_redis(struct shop *s)
{
    char name[320], n[24];
    size_t nroutes = s->counts ? rcount_routes(s->counts) : 0;
    for (size_t i = 0; i < nroutes && redis_up(s->redis); i++) {
        for (int m = 1; m < HTTP_METHOD_COUNT; m++) {
            uint64_t k = rcount_take(s->counts, i, m);
            struct incr *c = k ? malloc(sizeof(*c)) : NULL;
            if (!c) {
                rcount_put(s->counts, i, m, k);
                continue;
            }
            *c = (struct incr){.s = s, .route = (long)i, .method = m, .n = k};
            counter_name(s, i, m, name, sizeof name);
            snprintf(n, sizeof n, "%llu", (unsigned long long)c->n);
            const char *argv[] = {"INCRBY", name, n};
            if (redis_command(s->redis, incr_done, c, 3, argv, NULL) < 0) {
                rcount_put(s->counts, i, m, k);
                free(c);
                return;
            }
            s->busy++;
        }
    }
}

static int batch_write(struct db_conn *c, struct writeq_item *it)
{
    struct counter_batch *b = (struct counter_batch *)it;
    int rc = 0;
    for (size_t i = 0; i < b->ncounters && !rc; i++)
        rc = db_counter_add(c, b->counters[i].name, (int64_t)b->counters[i].n);
    return rc;
}

static void batch_written(struct writeq_item *it, int rc)
{
    struct counter_batch *b = (struct counter_batch *)it;
    struct shop *s = b->s;
    for (size_t i = 0; rc && i < b->ncounters; i++) {
        struct counter_entry *e = &b->counters[i];
        if (e->route >= 0)
            rcount_put(s->counts, (size_t)e->route, e->method, e->n);
        else
            log_error("shop: lost %llu counts of %s (neither Redis nor SQLite took them)", (unsigned long long)e->n,
                      e->name);
    }
    if (rc)
        log_warn("shop: request counters not written to SQLite (%s); kept for the next flush", strerror(-rc));
    batch_free(b);
}

static void batch_push(struct counter_batch *b)
{
    b->it = (struct writeq_item){.write = batch_write, .done = batch_written};
    writeq_push(b->s->writes, &b->it);
}

void counters_save(struct shop *s)
{
    size_t n = 0, k = 0, nroutes = s->counts ? rcount_routes(s->counts) : 0;
    for (size_t i = 0; i < nroutes; i++)
        for (int m = 1; m < HTTP_METHOD_COUNT; m++) {
            uint64_t v = rcount_take(s->counts, i, m);
            n += v != 0;
            rcount_put(s->counts, i, m, v);
        }
    struct counter_batch *b = n ? batch_new(s) : NULL;
    if (!b)
        return;
    if (!(b->counters = calloc(n, sizeof(*b->counters)))) {
        batch_free(b);
        return;
    }
    for (size_t i = 0; i < nroutes; i++) {
        for (int m = 1; m < HTTP_METHOD_COUNT && k < n; m++) {
            uint64_t v = rcount_take(s->counts, i, m);
            if (!v)
                continue;
            struct counter_entry *e = &b->counters[k++];
            *e = (struct counter_entry){.route = (long)i, .method = m, .n = v};
            counter_name(s, i, m, e->name, sizeof e->name);
        }
    }
    b->ncounters = k;
    batch_push(b);
}

/* Counts Redis took from SQLite and then failed to count go back. */
static void give_back(struct shop *s, const char *name, uint64_t n)
{
    struct counter_batch *b = batch_new(s);
    if (b && !(b->counters = calloc(1, sizeof(*b->counters)))) {
        batch_free(b);
        b = NULL;
    }
    if (!b) {
        log_error("shop: lost %llu counts of %s", (unsigned long long)n, name);
        return;
    }
    b->counters[0].n = n;
    b->counters[0].route = -1;
    snprintf(b->counters[0].name, sizeof b->counters[0].name, "%s", name);
    b->ncounters = 1;
    batch_push(b);
}

/*
 * Counts that a stop with Redis down left in SQLite (and any an embedded
 * run left there) move to Redis once, when it is up: taken out of SQLite
 * in one transaction (so every worker takes different rows), then one
 * INCRBY each; a failed one goes back to SQLite.
 */
static void take_row(void *arg, const char *name, int64_t n)
{
    struct counter_batch *b = arg;
    struct counter_entry *e = realloc(b->counters, (b->ncounters + 1) * sizeof(*e));
    if (!e) {
        b->rc = -ENOMEM;
        return;
    }
    b->counters = e;
    e = &b->counters[b->ncounters++];
    *e = (struct counter_entry){.route = -1, .n = (uint64_t)n};
    snprintf(e->name, sizeof e->name, "%s", name);
}

static void takeover_work(struct db_conn *c, void *arg)
{
    struct counter_batch *b = arg;
    b->rc = db_begin(c);
    if (!b->rc)
        b->rc = db_counters_take(c, take_row, b);
    if (!b->rc)
        b->rc = db_commit(c);
    if (b->rc)
        db_rollback(c);
}

static void takeover_done(void *arg, int status)
{
    struct counter_batch *b = arg;
    struct shop *s = b->s;
    char n[24];
    s->takeover = status || b->rc ? 0 : 2; /* a failure tries again at the next flush */
    for (size_t i = 0; s->takeover == 2 && i < b->ncounters; i++) {
        struct counter_entry *e = &b->counters[i];
        struct incr *c = malloc(sizeof(*c));
        if (c) {
            *c = (struct incr){.s = s, .route = -1, .n = e->n};
            snprintf(c->name, sizeof c->name, "%s", e->name);
            snprintf(n, sizeof n, "%llu", (unsigned long long)e->n);
            const char *argv[] = {"INCRBY", c->name, n};
            if (redis_command(s->redis, incr_done, c, 3, argv, NULL) == 0) {
                s->busy++;
                continue;
            }
            free(c);
        }
        give_back(s, e->name, e->n);
    }
    if (s->takeover == 2 && b->ncounters)
        log_info("shop: moved %zu request counters left in SQLite to Redis", b->ncounters);
    batch_free(b);
}

void counters_flush(struct shop *s)
{
    if (!s->redis) {
        counters_save(s);
        return;
    }
    flush_redis(s);
    if (s->takeover == 0 && s->stop == SHOP_RUNNING && redis_up(s->redis)) {
        struct counter_batch *b = batch_new(s);
        if (b && db_submit(s->db, s->loop, takeover_work, takeover_done, b) == 0)
            s->takeover = 1;
        else if (b)
            batch_free(b);
    }
}
