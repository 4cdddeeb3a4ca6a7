/*
 * The shop's handlers. See shop.h and docs/shop.md.
 *
 * A request that cannot be answered at once gets a struct req that holds
 * everything it needs, copied out of the exchange before anything
 * asynchronous starts: after an abort the request's bytes may be gone, and
 * the engine lets us answer the zombie exchange later (which frees it).
 * Every req, every Redis command of the counter flush and every write batch
 * counts in s->busy, so shop_stop waits for all of them before it closes
 * the cache and the store.
 *
 * Where each thing runs:
 * - cache hits are answered on the loop without allocating;
 * - SQLite runs on libuv's thread pool (db_submit): reads, the PUT, and --
 *   without Redis -- cart writes and counters, which go through one queue
 *   per worker and leave in batches, one transaction (one fsync) per batch;
 * - Redis commands go out on the worker's one connection, pipelined.
 */
#include "app/shop.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/shop_input.h"
#include "cache/cache.h"
#include "redis/redis.h"
#include "core/list.h"
#include "core/log.h"
#include "http/server.h"
#include "store/db.h"

#define JSON_TYPE "application/json; charset=utf-8"
#define PRODUCT_TTL_MS (3600 * 1000LL)
#define LIST_TTL_MS (300 * 1000LL)
#define LISTS_INDEX "products:lists"
#define FLUSH_MS 1000
#define BATCH_MAX 256
#define RESPONSE_KEY_MAX 2048
#define CART_STORE_DOWN "cart store unavailable"

enum req_kind { R_PRODUCT, R_LIST, R_UPDATE, R_ADD, R_REMOVE, R_CART, R_READY, R_COUNTERS, R_TAKEOVER };
enum stop_state { RUNNING, FLUSHING, SAVING, CLOSING, STOPPED };

/* A route as the router holds it after shop_start: the router's entry
 * points here; `shadow` is the route as it was added, handler and data. */
struct wrapped {
    struct route shadow;
    struct shop *shop;
    int64_t ttl_ms;                      /* response cache; 0: none */
    uint64_t counts[HTTP_METHOD_COUNT];  /* requests not yet flushed */
};

struct shop {
    uv_loop_t *loop;
    const struct cfg *cfg;
    struct metrics_slot *slot;
    struct db *db;
    struct cache *cache;
    struct redis *redis;   /* carts and counters; NULL: SQLite */
    struct wrapped *wrapped;
    size_t nwrapped;
    uv_timer_t flush;            /* counters; then the deferred close */
    int started;
    int takeover;                /* counts left in SQLite: 0 to move, 1 moving, 2 moved */
    struct list_node writes;     /* struct req waiting for a batch */
    size_t nwrites;
    int writing;
    int busy;
    int unsynced;                /* cart writes are failing WAIT: logged once */
    struct list_node parked;     /* struct req waiting for the first Redis connection */
    uv_timer_t first_up;         /* how long they may wait */
    uint64_t wait_until;         /* cart requests wait for Redis until then (loop time) */
    int redis_seen_up;           /* the first connection came (or the wait ended) */
    enum stop_state stop;
    int closes_left;
    void (*stopped)(void *arg);
    void *stopped_arg;
};

struct counter_entry {
    struct wrapped *w;           /* NULL: counts moved out of SQLite */
    int method;
    uint64_t n;
    char name[320];
};

struct cart_item {
    int64_t id, qty;
};

struct req {
    struct list_node link;       /* in s->writes */
    struct shop *s;
    struct http_exchange *x;
    enum req_kind kind;
    int rc;
    int64_t id, qty, limit, offset;
    char user[SHOP_USER_MAX + 1];
    char key[64];
    struct cache_ticket t;
    struct db_product p;
    struct db_product_patch patch;
    char name[DB_NAME_MAX + 1];
    char *json;                  /* built off the loop */
    size_t json_len;
    struct cart_item *items;     /* a Redis cart */
    size_t nitems;
    struct counter_entry *counters;
    size_t ncounters;
    int outstanding;             /* a Redis cart write: replies still due (the command, its WAIT) */
    int acked;                   /* replicas that acknowledged it (WAIT) */
    char idem[SHOP_IDEM_MAX + 1]; /* an add's Idempotency-Key, or "" */
};

/* A response-cache lookup and, on a miss, the capture of the answer. */
struct capture {
    struct shop *s;
    struct wrapped *w;
    struct http_exchange *x;
    struct cache_ticket t;
    int aborted, nocache;
    char *head;                  /* "name\nvalue\n" per header */
    size_t head_len, nheaders;
    size_t klen;
    char key[];
};

static void check_stop(struct shop *s);
static void read_source(struct req *q);
static void enqueue_write(struct req *q);

/* --- answers ----------------------------------------------------------- */

static void reply(struct http_exchange *x, int status, const char *body, size_t len)
{
    http_respond(x, status, JSON_TYPE, body, len);
}

/* {"error": msg, "field": field}; field may be NULL. */
static void reply_error(struct http_exchange *x, int status, const char *msg, const char *field)
{
    json_t *o = field ? json_pack("{s:s,s:s}", "error", msg, "field", field) : json_pack("{s:s}", "error", msg);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (body)
        reply(x, status, body, strlen(body));
    else
        http_error(x, status, msg);
    free(body);
    json_decref(o);
}

static void reply_errorf(struct http_exchange *x, int status, const char *fmt, long long v)
{
    char msg[160];
    snprintf(msg, sizeof msg, fmt, v);
    reply_error(x, status, msg, NULL);
}

/* Steals j. */
static char *dump(json_t *j, size_t *len)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    *len = s ? strlen(s) : 0;
    return s;
}

static json_t *product_json(const struct db_product *p)
{
    return json_pack("{s:I,s:s,s:I,s:I}", "id", (json_int_t)p->id, "name", p->name, "price", (json_int_t)p->price,
                     "stock", (json_int_t)p->stock);
}

/* The named route parameter, or the first one (a config route may name
 * its parameter otherwise). */
static const struct route_param *param(const struct http_exchange *x, const char *name)
{
    const struct route_param *p = route_param_get(&x->match, name);
    return p ? p : x->match.nparams ? &x->match.params[0] : NULL;
}

static int param_id(const struct http_exchange *x, const char *name, int64_t *id)
{
    const struct route_param *p = param(x, name);
    return p ? shop_parse_id(p->value, p->value_len, id) : -EINVAL;
}

static int user_of(struct http_exchange *x, char *out)
{
    char err[128];
    const char *field = NULL;
    size_t n = 0;
    const char *v = http_req_header(x, "User-Id", &n);
    if (shop_parse_user(v, n, out, err, sizeof err, &field) == 0)
        return 0;
    reply_error(x, 400, err, field);
    return -EINVAL;
}

/* --- requests ---------------------------------------------------------- */

static struct req *req_new(struct shop *s, struct http_exchange *x, enum req_kind kind)
{
    struct req *q = calloc(1, sizeof(*q));
    if (!q) {
        if (x)
            reply_error(x, 500, "out of memory", NULL);
        return NULL;
    }
    q->s = s;
    q->x = x;
    q->kind = kind;
    list_init(&q->link);
    s->busy++;
    return q;
}

static void req_free(struct req *q)
{
    struct shop *s = q->s;
    free(q->json);
    free(q->items);
    free(q->counters);
    free(q);
    s->busy--;
    check_stop(s);
}

/* Answers with the JSON built for q (200), then frees q. */
static void reply_json_and_free(struct req *q)
{
    if (q->json)
        reply(q->x, 200, q->json, q->json_len);
    else
        reply_error(q->x, 500, "out of memory", NULL);
    req_free(q);
}

/* --- counters: request:<METHOD>:<route template> ------------------------ */

static uint64_t pending_counts(const struct shop *s)
{
    uint64_t n = 0;
    for (size_t i = 0; i < s->nwrapped; i++)
        for (int m = 0; m < HTTP_METHOD_COUNT; m++)
            n += s->wrapped[i].counts[m];
    return n;
}

static void counter_name(const struct wrapped *w, int m, char *buf, size_t len)
{
    snprintf(buf, len, "request:%s:%s", http_method_name((enum http_method)m), w->shadow.pattern);
}

struct incr {
    struct shop *s;
    struct wrapped *w;           /* NULL: counts moved out of SQLite (name) */
    int method;
    uint64_t n;
    char name[320];
};

static void give_back(struct shop *s, const char *name, uint64_t n);

static void incr_done(void *arg, redisReply *reply)
{
    struct incr *c = arg;
    struct shop *s = c->s;
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        ; /* counted */
    else if (c->w)
        c->w->counts[c->method] += c->n; /* kept for the next flush */
    else
        give_back(s, c->name, c->n);
    free(c);
    s->busy--;
    check_stop(s);
}

/* One INCRBY per counter, all in this loop iteration: one write. */
static void flush_redis(struct shop *s)
{
    char name[320], n[24];
    for (size_t i = 0; i < s->nwrapped && redis_up(s->redis); i++) {
        struct wrapped *w = &s->wrapped[i];
        for (int m = 1; m < HTTP_METHOD_COUNT; m++) {
            struct incr *c = w->counts[m] ? malloc(sizeof(*c)) : NULL;
            if (!c)
                continue;
            *c = (struct incr){.s = s, .w = w, .method = m, .n = w->counts[m]};
            counter_name(w, m, name, sizeof name);
            snprintf(n, sizeof n, "%llu", (unsigned long long)c->n);
            const char *argv[] = {"INCRBY", name, n};
            if (redis_command(s->redis, incr_done, c, 3, argv, NULL) < 0) {
                free(c);
                return;
            }
            w->counts[m] = 0;
            s->busy++;
        }
    }
}

/* Moves the pending counts into one write request for SQLite. */
static void flush_sqlite(struct shop *s)
{
    size_t n = 0, k = 0;
    for (size_t i = 0; i < s->nwrapped; i++)
        for (int m = 1; m < HTTP_METHOD_COUNT; m++)
            n += s->wrapped[i].counts[m] != 0;
    struct req *q = n ? req_new(s, NULL, R_COUNTERS) : NULL;
    if (!q)
        return;
    if (!(q->counters = calloc(n, sizeof(*q->counters)))) {
        req_free(q);
        return;
    }
    for (size_t i = 0; i < s->nwrapped; i++) {
        struct wrapped *w = &s->wrapped[i];
        for (int m = 1; m < HTTP_METHOD_COUNT; m++) {
            if (!w->counts[m])
                continue;
            struct counter_entry *e = &q->counters[k++];
            *e = (struct counter_entry){.w = w, .method = m, .n = w->counts[m]};
            counter_name(w, m, e->name, sizeof e->name);
            w->counts[m] = 0;
        }
    }
    q->ncounters = k;
    enqueue_write(q);
}

static void counters_done(struct req *q)
{
    for (size_t i = 0; q->rc && i < q->ncounters; i++) {
        struct counter_entry *e = &q->counters[i];
        if (e->w)
            e->w->counts[e->method] += e->n;
        else
            log_error("shop: lost %llu counts of %s (neither Redis nor SQLite took them)", (unsigned long long)e->n,
                      e->name);
    }
    if (q->rc)
        log_warn("shop: request counters not written to SQLite (%s); kept for the next flush", strerror(-q->rc));
    req_free(q);
}

/* Counts Redis took from SQLite and then failed to count go back. */
static void give_back(struct shop *s, const char *name, uint64_t n)
{
    struct req *q = req_new(s, NULL, R_COUNTERS);
    if (q && !(q->counters = calloc(1, sizeof(*q->counters)))) {
        req_free(q);
        q = NULL;
    }
    if (!q) {
        log_error("shop: lost %llu counts of %s", (unsigned long long)n, name);
        return;
    }
    q->counters[0].n = n;
    snprintf(q->counters[0].name, sizeof q->counters[0].name, "%s", name);
    q->ncounters = 1;
    enqueue_write(q);
}

/*
 * Counts that a stop with Redis down left in SQLite (and any an embedded
 * run left there) move to Redis once, when it is up: taken out of SQLite
 * in one transaction (so every worker takes different rows), then one
 * INCRBY each; a failed one goes back to SQLite.
 */
static void take_row(void *arg, const char *name, int64_t n)
{
    struct req *q = arg;
    struct counter_entry *e = realloc(q->counters, (q->ncounters + 1) * sizeof(*e));
    if (!e) {
        q->rc = -ENOMEM;
        return;
    }
    q->counters = e;
    e = &q->counters[q->ncounters++];
    *e = (struct counter_entry){.n = (uint64_t)n};
    snprintf(e->name, sizeof e->name, "%s", name);
}

static void takeover_work(struct db_conn *c, void *arg)
{
    struct req *q = arg;
    q->rc = db_begin(c);
    if (!q->rc)
        q->rc = db_counters_take(c, take_row, q);
    if (!q->rc)
        q->rc = db_commit(c);
    if (q->rc)
        db_rollback(c);
}

static void takeover_done(void *arg, int status)
{
    struct req *q = arg;
    struct shop *s = q->s;
    char n[24];
    s->takeover = status || q->rc ? 0 : 2; /* a failure tries again at the next flush */
    for (size_t i = 0; s->takeover == 2 && i < q->ncounters; i++) {
        struct counter_entry *e = &q->counters[i];
        struct incr *c = malloc(sizeof(*c));
        if (c) {
            *c = (struct incr){.s = s, .n = e->n};
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
    if (s->takeover == 2 && q->ncounters)
        log_info("shop: moved %zu request counters left in SQLite to Redis", q->ncounters);
    req_free(q);
}

static void on_flush(uv_timer_t *t)
{
    struct shop *s = t->data;
    if (!s->redis) {
        flush_sqlite(s);
        return;
    }
    flush_redis(s);
    if (s->takeover == 0 && s->stop == RUNNING && redis_up(s->redis)) {
        struct req *q = req_new(s, NULL, R_TAKEOVER);
        if (q && db_submit(s->db, s->loop, takeover_work, takeover_done, q) == 0)
            s->takeover = 1;
        else if (q)
            req_free(q);
    }
}

/* --- the write queue (SQLite without Redis) ----------------------------- */

struct batch {
    struct shop *s;
    int rc;
    size_t n;
    struct req *ops[];
};

/* What an Idempotency-Key stands for: the same key with another add is an
 * error, not a replay. */
static void add_fingerprint(const struct req *q, char *out, size_t len)
{
    snprintf(out, len, "%lld:%lld", (long long)q->id, (long long)q->qty);
}

static int run_write(struct db_conn *c, struct req *q)
{
    switch (q->kind) {
    case R_ADD:
        if (q->idem[0]) {
            char request[DB_IDEM_REQUEST_MAX + 1];
            int replayed;
            add_fingerprint(q, request, sizeof request);
            return q->rc = db_cart_add_once(c, q->user, q->idem, request, q->id, q->qty, (int64_t)time(NULL),
                                             &q->qty, &replayed);
        }
        return q->rc = db_cart_add(c, q->user, q->id, q->qty, &q->qty);
    case R_REMOVE:
        return q->rc = db_cart_remove(c, q->user, q->id);
    case R_COUNTERS:
        for (size_t i = 0; i < q->ncounters && !q->rc; i++)
            q->rc = db_counter_add(c, q->counters[i].name, (int64_t)q->counters[i].n);
        return q->rc;
    default:
        return q->rc = -EINVAL;
    }
}

/* One transaction for the whole batch. "No such product" and "that key
 * was another add" are answers, not failures; any other error rolls
 * everything back. */
static void batch_work(struct db_conn *c, void *arg)
{
    struct batch *b = arg;
    b->rc = db_begin(c);
    for (size_t i = 0; i < b->n && !b->rc; i++) {
        int rc = run_write(c, b->ops[i]);
        if (rc && rc != -ENOENT && rc != -EEXIST) {
            log_error("shop: SQLite write failed: %s", db_errmsg(c));
            b->rc = rc;
        }
    }
    if (!b->rc && (b->rc = db_commit(c)) != 0)
        log_error("shop: SQLite commit failed: %s", db_errmsg(c));
    if (b->rc)
        db_rollback(c);
}

static void write_answered(struct req *q)
{
    struct http_exchange *x = q->x;
    char body[160];
    if (q->kind == R_COUNTERS) {
        counters_done(q);
        return;
    }
    if (q->rc == -ENOENT && q->kind == R_ADD) {
        reply_errorf(x, 404, "product %lld not found", (long long)q->id);
    } else if (q->rc == -EEXIST) {
        reply_error(x, 422, "Idempotency-Key was used for a different add", "Idempotency-Key");
    } else if (q->rc == -ENOENT) {
        reply_errorf(x, 404, "product %lld is not in the cart", (long long)q->id);
    } else if (q->rc) {
        reply_error(x, 503, CART_STORE_DOWN, NULL);
    } else if (q->kind == R_ADD) {
        int n = snprintf(body, sizeof body, "{\"success\":true,\"productId\":%lld,\"quantity\":%lld}",
                         (long long)q->id, (long long)q->qty);
        reply(x, 200, body, (size_t)n);
    } else {
        int n = snprintf(body, sizeof body, "{\"success\":true,\"productId\":%lld}", (long long)q->id);
        reply(x, 200, body, (size_t)n);
    }
    req_free(q);
}

static void kick(struct shop *s);

static void batch_done(void *arg, int status)
{
    struct batch *b = arg;
    struct shop *s = b->s;
    for (size_t i = 0; i < b->n; i++) {
        struct req *q = b->ops[i];
        if (status || b->rc)
            q->rc = status ? status : b->rc;
        write_answered(q);
    }
    free(b);
    s->writing = 0;
    s->busy--;
    kick(s);
    check_stop(s);
}

static void kick(struct shop *s)
{
    if (s->writing || list_empty(&s->writes))
        return;
    size_t n = s->nwrites < BATCH_MAX ? s->nwrites : BATCH_MAX;
    struct batch *b = malloc(sizeof(*b) + n * sizeof(b->ops[0]));
    if (!b)
        return; /* the next write or flush kicks again */
    *b = (struct batch){.s = s, .n = n};
    for (size_t i = 0; i < n; i++) {
        struct req *q = list_entry(s->writes.next, struct req, link);
        list_unlink(&q->link);
        b->ops[i] = q;
    }
    s->nwrites -= n;
    s->writing = 1;
    s->busy++;
    if (db_submit(s->db, s->loop, batch_work, batch_done, b) < 0)
        batch_done(b, -ENOMEM);
}

static void enqueue_write(struct req *q)
{
    struct shop *s = q->s;
    list_append(&s->writes, &q->link);
    s->nwrites++;
    kick(s);
}

/* --- reading the catalog (cache-aside) ---------------------------------- */

static int64_t ttl_of(const struct req *q)
{
    return q->kind == R_LIST ? LIST_TTL_MS : PRODUCT_TTL_MS;
}

static json_t *list_json(struct db_conn *c, struct req *q)
{
    struct db_product *ps = malloc((size_t)q->limit * sizeof(*ps));
    json_t *a = ps ? json_array() : NULL;
    size_t n = 0;
    q->rc = a ? db_product_list(c, q->limit, q->offset, ps, &n) : -ENOMEM;
    for (size_t i = 0; !q->rc && i < n; i++)
        if (json_array_append_new(a, product_json(&ps[i])))
            q->rc = -ENOMEM;
    free(ps);
    if (q->rc) {
        json_decref(a);
        return NULL;
    }
    return a;
}

struct cart_json {
    json_t *items;
    int64_t total;
};

static void add_line(void *arg, const struct db_cart_line *l)
{
    struct cart_json *cj = arg;
    json_array_append_new(cj->items, json_pack("{s:I,s:s,s:I,s:I,s:I}", "productId", (json_int_t)l->product_id,
                                               "name", l->name, "price", (json_int_t)l->price, "quantity",
                                               (json_int_t)l->quantity, "lineTotal",
                                               (json_int_t)(l->price * l->quantity)));
    cj->total += l->price * l->quantity;
}

/* The cart: SQLite's join, or Redis's lines completed from the catalog. */
static json_t *cart_json(struct db_conn *c, struct req *q)
{
    struct cart_json cj = {.items = json_array()};
    if (!cj.items) {
        q->rc = -ENOMEM;
        return NULL;
    }
    if (!q->s->redis)
        q->rc = db_cart_get(c, q->user, add_line, &cj);
    for (size_t i = 0; q->s->redis && i < q->nitems && !q->rc; i++) {
        struct db_product p;
        int rc = db_product_get(c, q->items[i].id, &p);
        if (rc == 0)
            add_line(&cj, &(struct db_cart_line){q->items[i].id, p.price, q->items[i].qty, p.name});
        else if (rc != -ENOENT) /* a product no longer sold is left out */
            q->rc = rc;
    }
    if (q->rc) {
        json_decref(cj.items);
        return NULL;
    }
    return json_pack("{s:o,s:I}", "items", cj.items, "total", (json_int_t)cj.total);
}

/* Runs on the thread pool: the query, and the JSON of the answer. */
static void source_work(struct db_conn *c, void *arg)
{
    struct req *q = arg;
    json_t *j = NULL;
    int version;
    switch (q->kind) {
    case R_PRODUCT:
    case R_ADD:
        if ((q->rc = db_product_get(c, q->id, &q->p)) == 0)
            j = product_json(&q->p);
        break;
    case R_LIST:
        j = list_json(c, q);
        break;
    case R_UPDATE:
        if ((q->rc = db_product_update(c, q->id, &q->patch, &q->p)) == 0)
            j = product_json(&q->p);
        break;
    case R_CART:
        j = cart_json(c, q);
        break;
    case R_READY:
        q->rc = db_schema_version(c, &version);
        break;
    default:
        q->rc = -EINVAL;
    }
    if (q->rc && q->rc != -ENOENT)
        log_error("shop: SQLite read failed: %s", db_errmsg(c));
    if (j && !(q->json = dump(j, &q->json_len)) && !q->rc)
        q->rc = -ENOMEM;
}

static void redis_add(struct req *q);
static void update_done(struct req *q);
static void ready_done(struct req *q);

static void source_done(void *arg, int status)
{
    struct req *q = arg;
    if (status)
        q->rc = status;
    switch (q->kind) {
    case R_UPDATE:
        update_done(q);
        return;
    case R_READY:
        ready_done(q);
        return;
    case R_CART:
        if (q->rc)
            reply_error(q->x, 503, CART_STORE_DOWN, NULL);
        else
            reply(q->x, 200, q->json, q->json_len);
        req_free(q);
        return;
    default:
        break;
    }
    if (q->rc == -ENOENT) {
        reply_errorf(q->x, 404, "product %lld not found", (long long)q->id);
        req_free(q);
        return;
    }
    if (q->rc) {
        reply_error(q->x, 503, "catalog unavailable", NULL);
        req_free(q);
        return;
    }
    cache_fill(q->s->cache, &q->t, q->key, strlen(q->key), q->json, q->json_len, ttl_of(q),
               q->kind == R_LIST ? LISTS_INDEX : NULL);
    if (q->kind == R_ADD)
        redis_add(q);
    else
        reply_json_and_free(q);
}

static void read_source(struct req *q)
{
    if (db_submit(q->s->db, q->s->loop, source_work, source_done, q) < 0) {
        reply_error(q->x, 503, "catalog unavailable", NULL);
        req_free(q);
    }
}

/* A cached value for q's key: answer, or go on (a cart add). */
static void found(struct req *q, const char *val, size_t len)
{
    if (q->kind == R_ADD) {
        redis_add(q);
        return;
    }
    reply(q->x, 200, val, len);
    req_free(q);
}

static void looked_up(void *arg, const char *val, size_t len, const struct cache_ticket *t)
{
    struct req *q = arg;
    q->t = *t;
    if (val)
        found(q, val, len);
    else
        read_source(q);
}

static void lookup(struct req *q)
{
    const char *val;
    size_t len;
    int rc = cache_get(q->s->cache, q->key, strlen(q->key), ttl_of(q), &q->t, &val, &len, looked_up, q);
    if (rc == 0)
        found(q, val, len);
    else if (rc != -EINPROGRESS)
        read_source(q);
}

/* The fast path: a hit in this worker answers without allocating. */
static void cached_read(struct shop *s, struct http_exchange *x, enum req_kind kind, const char *key, int64_t id,
                        int64_t limit, int64_t offset)
{
    struct cache_ticket t;
    const char *val;
    size_t len;
    if (cache_get(s->cache, key, strlen(key), kind == R_LIST ? LIST_TTL_MS : PRODUCT_TTL_MS, &t, &val, &len, NULL,
                  NULL) == 0) {
        reply(x, 200, val, len);
        return;
    }
    struct req *q = req_new(s, x, kind);
    if (!q)
        return;
    q->id = id;
    q->limit = limit;
    q->offset = offset;
    snprintf(q->key, sizeof q->key, "%s", key);
    lookup(q);
}

static void products_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    int64_t limit, offset;
    char err[128], key[64];
    const char *field = NULL;
    if (shop_parse_paging(x->req.query, x->req.query_len, &limit, &offset, err, sizeof err, &field) < 0) {
        reply_error(x, 400, err, field);
        return;
    }
    snprintf(key, sizeof key, "products:list:%lld:%lld", (long long)limit, (long long)offset);
    cached_read(s, x, R_LIST, key, 0, limit, offset);
}

static void product_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    int64_t id;
    char key[64];
    if (param_id(x, "id", &id) < 0) {
        reply_error(x, 400, "id must be a positive integer", "id");
        return;
    }
    snprintf(key, sizeof key, "product:%lld", (long long)id);
    cached_read(s, x, R_PRODUCT, key, id, 0, 0);
}

/* --- PUT /api/products/:id --------------------------------------------- */

static int authorized(struct shop *s, struct http_exchange *x)
{
    size_t n = 0;
    const char *h;
    if (!s->cfg->admin_token)
        return 1;
    h = http_req_header(x, "Authorization", &n);
    if (shop_bearer_ok(h, n, s->cfg->admin_token))
        return 1;
    static const char body[] = "{\"error\":\"unauthorized: send Authorization: Bearer <admin_token>\"}";
    http_begin(x, 401);
    http_header(x, "WWW-Authenticate", "Bearer", 6);
    http_finish(x, JSON_TYPE, body, sizeof(body) - 1);
    return 0;
}

static void invalidated(void *arg, int status)
{
    struct req *q = arg;
    if (status)
        log_warn("shop: product %lld changed; Redis gets the invalidation when it is back", (long long)q->id);
    reply_json_and_free(q);
}

/* The change is committed: make every worker and machine see it, then
 * answer. When Redis cannot be told now, the cache module owes it. */
static void update_done(struct req *q)
{
    char key[64];
    if (q->rc == -ENOENT) {
        reply_errorf(q->x, 404, "product %lld not found", (long long)q->id);
        req_free(q);
        return;
    }
    if (q->rc) {
        reply_error(q->x, 503, "catalog unavailable", NULL);
        req_free(q);
        return;
    }
    snprintf(key, sizeof key, "product:%lld", (long long)q->id);
    const char *keys[] = {key}, *idx[] = {LISTS_INDEX};
    int rc = cache_invalidate(q->s->cache, keys, 1, idx, 1, invalidated, q);
    if (rc != -EINPROGRESS)
        invalidated(q, rc);
}

static void update_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    char err[160];
    const char *field = NULL;
    int64_t id;
    if (!authorized(s, x))
        return;
    if (param_id(x, "id", &id) < 0) {
        reply_error(x, 400, "id must be a positive integer", "id");
        return;
    }
    struct req *q = req_new(s, x, R_UPDATE);
    if (!q)
        return;
    q->id = id;
    if (shop_parse_product_patch(x->body, x->body_len, &q->patch, q->name, err, sizeof err, &field) < 0) {
        reply_error(x, 400, err, field);
        req_free(q);
        return;
    }
    if (cache_has_redis(s->cache) && !cache_conn_up(s->cache)) {
        /* the change could not be made visible to other machines */
        reply_error(x, 503, "cache unavailable: Redis is down, try again", NULL);
        req_free(q);
        return;
    }
    read_source(q);
}

/* --- carts ------------------------------------------------------------- */

static void cart_go(struct req *q);

/*
 * A cart write in Redis is answered from Redis's replies only, so a 200 is
 * never given for a change Redis did not make. With redis.wait_replicas, a
 * WAIT follows the command on the same connection (redis_wait) and
 * the change counts only when that many replicas acknowledged it: after a
 * failover the promoted replica has every change answered 200. Either
 * reply may come first when the connection is lost; the answer waits for
 * both.
 */
static void cart_step(struct req *q)
{
    struct shop *s = q->s;
    int wanted = s->cfg->redis.wait_replicas;
    if (--q->outstanding > 0)
        return;
    if (!q->rc && wanted > 0) {
        int synced = q->acked >= wanted;
        if (!synced && !s->unsynced)
            log_warn("shop: a cart change reached %d of %d replicas within %lld ms; answering 503 until they "
                     "keep up", q->acked < 0 ? 0 : q->acked, wanted, (long long)s->cfg->redis.wait_timeout_ms);
        else if (synced && s->unsynced)
            log_info("shop: cart changes reach the replicas again (%d wanted)", wanted);
        s->unsynced = !synced;
        q->rc = synced ? 0 : -EIO;
    }
    write_answered(q);
}

static void synced(void *arg, int acked)
{
    struct req *q = arg;
    q->acked = acked;
    cart_step(q);
}

static void redis_write(struct req *q, int argc, const char **argv, redis_reply_fn done)
{
    struct shop *s = q->s;
    if (redis_command(s->redis, done, q, argc, argv, NULL) < 0) {
        reply_error(q->x, 503, CART_STORE_DOWN, NULL);
        req_free(q);
        return;
    }
    q->outstanding = 1;
    if (s->cfg->redis.wait_replicas > 0) {
        q->outstanding++;
        if (redis_wait(s->redis, synced, q) < 0) {
            q->acked = -1;
            q->outstanding--;
        }
    }
}

static void added(void *arg, redisReply *r)
{
    struct req *q = arg;
    q->rc = r && r->type == REDIS_REPLY_INTEGER ? 0 : -EIO;
    if (!q->rc)
        q->qty = r->integer; /* the line's quantity now */
    cart_step(q);
}

/*
 * An add with an Idempotency-Key, in one script: the first time, HINCRBY and
 * remember "<fingerprint>=<quantity>" under idem:<length of user>:<user>:<key>
 * for a day; again, only the remembered answer. Redis runs a script whole,
 * and replicates and persists its effects together.
 */
static const char ADD_ONCE_LUA[] =
    "local v = redis.call('GET', KEYS[2]) "
    "if v then return v end "
    "local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) "
    "v = ARGV[4] .. '=' .. n "
    "redis.call('SET', KEYS[2], v, 'EX', ARGV[3]) "
    "return v";

static void added_once(void *arg, redisReply *r)
{
    struct req *q = arg;
    char fp[DB_IDEM_REQUEST_MAX + 1];
    size_t n;
    add_fingerprint(q, fp, sizeof fp);
    n = strlen(fp);
    if (!r || r->type != REDIS_REPLY_STRING) {
        q->rc = -EIO;
    } else if (r->len <= n || memcmp(r->str, fp, n) != 0 || r->str[n] != '=') {
        q->rc = -EEXIST;
    } else {
        q->rc = 0;
        q->qty = strtoll(r->str + n + 1, NULL, 10);
    }
    cart_step(q);
}

/* HINCRBY cart:<user> <productId> <qty>, or the script above. */
static void redis_add(struct req *q)
{
    char key[16 + SHOP_USER_MAX], id[24], qty[24];
    snprintf(key, sizeof key, "cart:%s", q->user);
    snprintf(id, sizeof id, "%lld", (long long)q->id);
    snprintf(qty, sizeof qty, "%lld", (long long)q->qty);
    if (q->idem[0]) {
        char ikey[32 + SHOP_USER_MAX + SHOP_IDEM_MAX], ttl[24], fp[DB_IDEM_REQUEST_MAX + 1];
        /* the user's length first: a User-Id may hold ':' too */
        snprintf(ikey, sizeof ikey, "idem:%zu:%s:%s", strlen(q->user), q->user, q->idem);
        snprintf(ttl, sizeof ttl, "%d", DB_IDEM_TTL_S);
        add_fingerprint(q, fp, sizeof fp);
        const char *argv[] = {"EVAL", ADD_ONCE_LUA, "2", key, ikey, id, qty, ttl, fp};
        redis_write(q, 9, argv, added_once);
        return;
    }
    const char *argv[] = {"HINCRBY", key, id, qty};
    redis_write(q, 4, argv, added);
}

static void cart_add_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    char user[SHOP_USER_MAX + 1], err[192];
    const char *field = NULL, *ctype;
    int64_t id, qty;
    size_t ctlen = 0;
    if (user_of(x, user) < 0)
        return;
    ctype = http_req_header(x, "Content-Type", &ctlen);
    if (shop_parse_cart_add(ctype, ctlen, x->body, x->body_len, &id, &qty, err, sizeof err, &field) < 0) {
        reply_error(x, 400, err, field);
        return;
    }
    size_t ilen = 0;
    const char *iv = http_req_header(x, "Idempotency-Key", &ilen);
    char idem[SHOP_IDEM_MAX + 1] = "";
    if (iv && shop_parse_idem_key(iv, ilen, idem, err, sizeof err, &field) < 0) {
        reply_error(x, 400, err, field);
        return;
    }
    struct req *q = req_new(s, x, R_ADD);
    if (!q)
        return;
    memcpy(q->user, user, sizeof user);
    memcpy(q->idem, idem, sizeof idem);
    q->id = id;
    q->qty = qty;
    if (!s->redis) {
        enqueue_write(q);
        return;
    }
    cart_go(q);
}

static int by_id(const void *a, const void *b)
{
    const struct cart_item *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* HGETALL's pairs, then names and prices from the catalog (pool). */
static void got_cart(void *arg, redisReply *r)
{
    struct req *q = arg;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        reply_error(q->x, 503, CART_STORE_DOWN, NULL);
        req_free(q);
        return;
    }
    q->items = calloc(r->elements / 2 + 1, sizeof(*q->items));
    for (size_t i = 0; q->items && i + 1 < r->elements; i += 2) {
        struct cart_item it;
        redisReply *f = r->element[i], *v = r->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || shop_parse_id(f->str, f->len, &it.id))
            continue;
        it.qty = strtoll(v->str, NULL, 10);
        q->items[q->nitems++] = it;
    }
    qsort(q->items, q->nitems, sizeof(*q->items), by_id);
    read_source(q);
}

static void cart_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    char user[SHOP_USER_MAX + 1];
    struct req *q;
    if (user_of(x, user) < 0)
        return;
    if (!(q = req_new(s, x, R_CART)))
        return;
    memcpy(q->user, user, sizeof user);
    if (!s->redis) {
        read_source(q);
        return;
    }
    cart_go(q);
}

static void removed(void *arg, redisReply *r)
{
    struct req *q = arg;
    q->rc = !r || r->type != REDIS_REPLY_INTEGER ? -EIO : r->integer > 0 ? 0 : -ENOENT;
    cart_step(q);
}

static void cart_remove_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    char user[SHOP_USER_MAX + 1];
    int64_t pid;
    if (user_of(x, user) < 0)
        return;
    if (param_id(x, "productId", &pid) < 0) {
        reply_error(x, 400, "productId must be a positive integer", "productId");
        return;
    }
    struct req *q = req_new(s, x, R_REMOVE);
    if (!q)
        return;
    memcpy(q->user, user, sizeof user);
    q->id = pid;
    if (!s->redis) {
        enqueue_write(q);
        return;
    }
    cart_go(q);
}

/*
 * A worker's first Redis connection is made while it already serves (a
 * reload's new worker takes connections at once, and asking the Sentinels
 * adds a round trip): a cart request that comes before it is up waits for
 * it, until redis.command_timeout after the worker started, rather than
 * failing. Once the connection came, or that time passed, an outage is
 * answered 503 at once.
 */
static void resume_parked(struct shop *s)
{
    s->redis_seen_up = 1;
    uv_timer_stop(&s->first_up);
    while (!list_empty(&s->parked)) {
        struct req *q = list_entry(s->parked.next, struct req, link);
        list_unlink(&q->link);
        cart_go(q);
    }
}

static void on_first_up_deadline(uv_timer_t *t)
{
    resume_parked(t->data);
}

static void on_redis_up(void *arg)
{
    struct shop *s = arg;
    if (!s->redis_seen_up)
        resume_parked(s);
}

/* A cart request in Redis mode, once its input is checked. */
static void cart_go(struct req *q)
{
    struct shop *s = q->s;
    char key[16 + SHOP_USER_MAX], id[24];
    if (!redis_up(s->redis)) {
        uint64_t now = uv_now(s->loop);
        if (!s->redis_seen_up && now < s->wait_until && s->stop == RUNNING) {
            if (list_empty(&s->parked))
                uv_timer_start(&s->first_up, on_first_up_deadline, s->wait_until - now, 0);
            list_append(&s->parked, &q->link);
            return;
        }
        reply_error(q->x, 503, CART_STORE_DOWN, NULL);
        req_free(q);
        return;
    }
    snprintf(key, sizeof key, "cart:%s", q->user);
    snprintf(id, sizeof id, "%lld", (long long)q->id);
    if (q->kind == R_ADD) {
        snprintf(q->key, sizeof q->key, "product:%lld", (long long)q->id);
        lookup(q); /* the product must exist: a cache hit, or the catalog */
    } else if (q->kind == R_REMOVE) {
        const char *argv[] = {"HDEL", key, id};
        redis_write(q, 3, argv, removed);
    } else {
        const char *argv[] = {"HGETALL", key};
        if (redis_command(s->redis, got_cart, q, 2, argv, NULL) < 0) {
            reply_error(q->x, 503, CART_STORE_DOWN, NULL);
            req_free(q);
        }
    }
}

/* --- readiness --------------------------------------------------------- */

static void ready_done(struct req *q)
{
    struct shop *s = q->s;
    int db_up = q->rc == 0, has_redis = s->redis != NULL, redis_ok = has_redis && redis_up(s->redis);
    int ok = db_up && (!has_redis || redis_ok);
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"%s\",\"checks\":{\"sqlite\":\"%s\",\"redis\":\"%s\"}}",
                     ok ? "ready" : "unavailable", db_up ? "up" : "down",
                     !has_redis ? "not configured" : redis_ok ? "up" : "down");
    reply(q->x, ok ? 200 : 503, body, (size_t)n);
    req_free(q);
}

static void ready_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    struct req *q = req_new(s, x, R_READY);
    if (q)
        read_source(q);
}

/* --- the response cache ------------------------------------------------ */

/* Stored as "<status>\n<content type>\n<headers>\n" then name\nvalue\n per
 * header, then the body. */
static int replay(struct http_exchange *x, const char *v, size_t len)
{
    const char *end = v + len, *ct, *nl;
    char *e;
    long status = strtol(v, &e, 10), nh;
    if (e >= end || *e != '\n' || status < 200 || status > 299)
        return -EINVAL;
    ct = e + 1;
    if (!(nl = memchr(ct, '\n', (size_t)(end - ct))))
        return -EINVAL;
    nh = strtol(nl + 1, &e, 10);
    if (e >= end || *e != '\n' || nh < 0)
        return -EINVAL;
    const char *p = e + 1, *hs = p;
    for (long i = 0; i < 2 * nh; i++) { /* check first: answer nothing half */
        const char *q = memchr(p, '\n', (size_t)(end - p));
        if (!q)
            return -EINVAL;
        p = q + 1;
    }
    char ctype[256];
    snprintf(ctype, sizeof ctype, "%.*s", (int)(nl - ct), ct);
    http_begin(x, (int)status);
    for (long i = 0; i < nh; i++) {
        const char *name_end = memchr(hs, '\n', (size_t)(end - hs)), *val = name_end + 1;
        const char *val_end = memchr(val, '\n', (size_t)(end - val));
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(name_end - hs), hs);
        http_header(x, name, val, (size_t)(val_end - val));
        hs = val_end + 1;
    }
    http_header(x, "X-Cache", "HIT", 3);
    http_finish(x, ctype[0] ? ctype : NULL, p, (size_t)(end - p));
    return 0;
}

static void capture_free(struct capture *c)
{
    struct shop *s = c->s;
    free(c->head);
    free(c);
    s->busy--;
    check_stop(s);
}

static void keep_response(struct capture *c, const char *ctype, const void *body, size_t len)
{
    char prefix[320];
    int n = snprintf(prefix, sizeof prefix, "%d\n%s\n%zu\n", c->x->status, ctype ? ctype : "", c->nheaders);
    if (n < 0 || (size_t)n >= sizeof prefix || strchr(ctype ? ctype : "", '\n'))
        return;
    size_t total = (size_t)n + c->head_len + len;
    char *blob = malloc(total);
    if (!blob)
        return;
    memcpy(blob, prefix, (size_t)n);
    if (c->head_len)
        memcpy(blob + n, c->head, c->head_len);
    memcpy(blob + n + c->head_len, body, len);
    cache_fill(c->s->cache, &c->t, c->key, c->klen, blob, total, c->w->ttl_ms, NULL);
    free(blob);
}

/* Watches the handler's answer (server.h: tap). */
static void tap(struct http_exchange *x, enum http_tap_event ev, const char *name, const void *data, size_t len)
{
    struct capture *c = x->tap_data;
    if (ev == HTTP_TAP_HEADER) {
        size_t nl = strlen(name);
        char *h = c->nocache ? NULL : realloc(c->head, c->head_len + nl + len + 2);
        if (!h || !shop_header_cacheable(name, data, len) || memchr(data, '\n', len) || strchr(name, '\n')) {
            c->nocache = 1;
            if (h)
                c->head = h;
            return;
        }
        c->head = h;
        memcpy(h + c->head_len, name, nl);
        h[c->head_len + nl] = '\n';
        memcpy(h + c->head_len + nl + 1, data, len);
        h[c->head_len + nl + 1 + len] = '\n';
        c->head_len += nl + len + 2;
        c->nheaders++;
        return;
    }
    /* the body (NULL: not in memory, so not kept) ends the capture */
    x->tap = NULL;
    x->tap_data = NULL;
    if (!c->nocache && data && x->status == 200)
        keep_response(c, name, data, len);
    capture_free(c);
}

static void capture_aborted(struct http_exchange *x)
{
    struct capture *c = x->tap_data;
    c->aborted = 1;
}

/* A miss: the route's own handler answers, and the tap keeps the answer. */
static void run_captured(struct capture *c)
{
    struct http_exchange *x = c->x;
    x->on_abort = NULL;
    if (c->aborted) { /* the request's bytes may be gone: do not run it */
        x->tap = NULL;
        http_error(x, 503, "client went away");
        capture_free(c);
        return;
    }
    x->tap = tap;
    x->tap_data = c;
    c->w->shadow.handler(x);
}

static void response_looked_up(void *arg, const char *val, size_t len, const struct cache_ticket *t)
{
    struct capture *c = arg;
    c->t = *t;
    if (val && !c->aborted && replay(c->x, val, len) == 0) {
        c->x->on_abort = NULL;
        capture_free(c);
        return;
    }
    run_captured(c);
}

static void response_cache(struct wrapped *w, struct http_exchange *x)
{
    struct shop *s = w->shop;
    char key[RESPONSE_KEY_MAX];
    const struct http_request *r = &x->req;
    int n = snprintf(key, sizeof key, "response:GET:%.*s%s%.*s", (int)r->path_len, r->path, r->query ? "?" : "",
                     r->query ? (int)r->query_len : 0, r->query ? r->query : "");
    struct cache_ticket t;
    const char *val;
    size_t len;
    if (n < 0 || n >= (int)sizeof key) { /* too long to keep */
        w->shadow.handler(x);
        return;
    }
    if (cache_get(s->cache, key, (size_t)n, 0, &t, &val, &len, NULL, NULL) == 0 && replay(x, val, len) == 0)
        return;
    struct capture *c = calloc(1, sizeof(*c) + (size_t)n + 1);
    if (!c) {
        w->shadow.handler(x);
        return;
    }
    *c = (struct capture){.s = s, .w = w, .x = x, .klen = (size_t)n};
    memcpy(c->key, key, (size_t)n + 1);
    s->busy++;
    x->tap_data = c;
    x->on_abort = capture_aborted;
    int rc = cache_get(s->cache, key, (size_t)n, 0, &c->t, &val, &len, response_looked_up, c);
    if (rc == 0)
        response_looked_up(c, val, len, &c->t);
    else if (rc != -EINPROGRESS)
        run_captured(c);
}

/* Every request of a route passes here first. */
static void wrapped_handle(struct http_exchange *x)
{
    struct wrapped *w = x->match.route->data;
    enum http_method m = x->req.method;
    if ((unsigned)m < HTTP_METHOD_COUNT)
        w->counts[m]++;
    x->match.route = &w->shadow; /* the handler sees its own route and data */
    if (w->ttl_ms > 0 && (m == HTTP_GET || m == HTTP_HEAD))
        response_cache(w, x);
    else
        w->shadow.handler(x);
}

/* --- routes ------------------------------------------------------------ */

static const struct {
    const char *name;
    enum http_method method;
    http_handler_fn fn;
    const char *path; /* built-in route */
} handlers[] = {
    {"products", HTTP_GET, products_handle, "/api/products"},
    {"product", HTTP_GET, product_handle, "/api/products/:id"},
    {"product_update", HTTP_PUT, update_handle, "/api/products/:id"},
    {"cart_add", HTTP_POST, cart_add_handle, "/api/cart/add"},
    {"cart", HTTP_GET, cart_handle, "/api/cart"},
    {"cart_remove", HTTP_DELETE, cart_remove_handle, "/api/cart/:productId"},
    {"ready", HTTP_GET, ready_handle, "/health/ready"},
};

int shop_route(struct shop *s, struct router *r, const char *path, const char *handler)
{
    if (!s)
        return -ENOENT;
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++)
        if (strcmp(handlers[i].name, handler) == 0)
            return router_add(r, HTTP_M(handlers[i].method), path, handlers[i].fn, s);
    return -ENOENT;
}

int shop_routes(struct shop *s, struct router *r)
{
    if (!s)
        return 0;
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
        int rc = router_add(r, HTTP_M(handlers[i].method), handlers[i].path, handlers[i].fn, s);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* --- life cycle -------------------------------------------------------- */

struct shop *shop_new(const struct app_env *env, char *err, size_t errlen)
{
    struct shop *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = env->loop;
    s->cfg = env->cfg;
    s->slot = env->slot;
    list_init(&s->writes);
    /* the master already created and migrated the file (master.c); a
     * worker opens it on its first query */
    if (db_attach(env->cfg->store.path, &s->db) < 0) {
        snprintf(err, errlen, "out of memory");
        free(s);
        return NULL;
    }
    return s;
}

/* The config route a router entry came from: config routes are added
 * first, in order, so entry i is config route i when the paths agree. */
static int64_t ttl_for(const struct cfg *cfg, const struct route *rt)
{
    size_t i = rt->index;
    return i < cfg->nroutes && strcmp(cfg->routes[i].path, rt->pattern) == 0 ? cfg->routes[i].cache_ttl_ms : 0;
}

/*
 * Puts wrapped_handle in front of every route: the router's entry gets the
 * wrapper, and keeps the original in w->shadow. The router hands out its
 * entries as const; this is the one place that edits them, once, before
 * any request, and only handler and data.
 */
static int wrap_routes(struct shop *s, struct router *r)
{
    size_t n = 0;
    while (router_at(r, n))
        n++;
    if (n && !(s->wrapped = calloc(n, sizeof(*s->wrapped))))
        return -ENOMEM;
    s->nwrapped = n;
    for (size_t i = 0; i < n; i++) {
        struct route *rt = (struct route *)(uintptr_t)router_at(r, i);
        struct wrapped *w = &s->wrapped[i];
        w->shadow = *rt;
        w->shop = s;
        w->ttl_ms = ttl_for(s->cfg, rt);
        rt->handler = wrapped_handle;
        rt->data = w;
    }
    return 0;
}

int shop_start(struct shop *s, struct router *r, char *err, size_t errlen)
{
    char epoch[4096];
    if (!s)
        return 0;
    snprintf(epoch, sizeof epoch, "%s-epoch", s->cfg->store.path);
    struct cache_opts o = {.loop = s->loop, .redis_url = s->cfg->redis.url,
                           .sentinels = s->cfg->redis.sentinels, .master_name = s->cfg->redis.master_name,
                           .wait_replicas = s->cfg->redis.wait_replicas,
                           .wait_timeout_ms = s->cfg->redis.wait_timeout_ms,
                           .command_timeout_ms = s->cfg->redis.command_timeout_ms,
                           .on_redis_up = on_redis_up, .arg = s,
                           .local_size = (size_t)s->cfg->cache.local_size, .epoch_path = epoch, .slot = s->slot};
    if (wrap_routes(s, r) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (!(s->cache = cache_new(&o, err, errlen)))
        return -EINVAL;
    s->redis = cache_conn(s->cache);
    list_init(&s->parked);
    uv_timer_init(s->loop, &s->first_up);
    s->first_up.data = s;
    s->wait_until = uv_now(s->loop) + (uint64_t)s->cfg->redis.command_timeout_ms;
    uv_timer_init(s->loop, &s->flush);
    s->flush.data = s;
    uv_timer_start(&s->flush, on_flush, FLUSH_MS, FLUSH_MS);
    s->started = 1;
    return 0;
}

static void closed_part(struct shop *s)
{
    if (--s->closes_left > 0)
        return;
    db_close(s->db);
    s->db = NULL;
    s->stop = STOPPED;
    if (s->stopped)
        s->stopped(s->stopped_arg);
}

static void timer_closed(uv_handle_t *h)
{
    closed_part(h->data);
}

static void cache_closed(void *arg)
{
    closed_part(arg);
}

/* From a fresh loop iteration: we may have been called from deep inside a
 * Redis callback, which is no place to close its connection. */
static void close_now(uv_timer_t *t)
{
    struct shop *s = t->data;
    s->closes_left = 3;
    uv_close((uv_handle_t *)&s->first_up, timer_closed);
    uv_close((uv_handle_t *)&s->flush, timer_closed);
    cache_close(s->cache, cache_closed, s);
}

/* Runs whenever work ends while stopping: once nothing is in flight, the
 * counters Redis could not take go to SQLite, then everything closes. */
static void check_stop(struct shop *s)
{
    if (s->stop == RUNNING || s->stop >= CLOSING || s->busy > 0)
        return;
    uint64_t left = pending_counts(s);
    if (left && s->stop == FLUSHING) {
        log_warn("shop: Redis did not take %llu request counts; keeping them in SQLite (request_counters)",
                 (unsigned long long)left);
        s->stop = SAVING;
        flush_sqlite(s);
        return;
    }
    if (left)
        log_error("shop: %llu request counts could not be saved", (unsigned long long)left);
    s->stop = CLOSING;
    uv_timer_start(&s->flush, close_now, 0, 0);
}

void shop_stop(struct shop *s, void (*done)(void *arg), void *arg)
{
    if (!s) {
        done(arg);
        return;
    }
    s->stopped = done;
    s->stopped_arg = arg;
    if (!s->started) {
        s->stop = STOPPED;
        done(arg);
        return;
    }
    s->stop = FLUSHING;
    uv_timer_stop(&s->flush);
    on_flush(&s->flush);
    check_stop(s);
}

void shop_free(struct shop *s)
{
    if (!s)
        return;
    if (s->started && s->stop != STOPPED)
        return; /* handles are still open: freeing now would corrupt the loop */
    db_close(s->db);
    free(s->wrapped);
    free(s);
}
