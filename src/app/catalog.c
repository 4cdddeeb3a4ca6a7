/*
 * The catalog, cache-aside. See catalog.h.
 */
#include "app/catalog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define LIST_TTL_MS (300 * 1000LL)
#define LISTS_INDEX "products:lists"

/* --- reading (cache-aside) ----------------------------------------------- */

json_t *catalog_read_product(struct db_conn *c, struct shop_req *q)
{
    return (q->rc = db_product_get(c, q->id, &q->p)) == 0 ? shop_product_json(&q->p) : NULL;
}

static json_t *read_list(struct db_conn *c, struct shop_req *q)
{
    struct db_product *ps = malloc((size_t)q->limit * sizeof(*ps));
    json_t *a = ps ? json_array() : NULL;
    size_t n = 0;
    q->rc = a ? db_product_list(c, q->limit, q->offset, ps, &n) : -ENOMEM;
    for (size_t i = 0; !q->rc && i < n; i++)
        if (json_array_append_new(a, shop_product_json(&ps[i])))
            q->rc = -ENOMEM;
    free(ps);
    if (q->rc) {
        json_decref(a);
        return NULL;
    }
    return a;
}

int catalog_loaded(struct shop_req *q)
{
    if (q->rc == -ENOENT) {
        shop_reply_errorf(q->x, 404, "product %lld not found", (long long)q->id);
        shop_req_free(q);
        return -ENOENT;
    }
    if (q->rc) {
        shop_reply_error(q->x, 503, "catalog unavailable", NULL);
        shop_req_free(q);
        return q->rc;
    }
    cache_fill(q->s->cache, &q->t, q->key, strlen(q->key), q->json, q->json_len, q->ops->ttl_ms, q->ops->index);
    return 0;
}

static void read_answered(struct shop_req *q)
{
    if (catalog_loaded(q) == 0)
        shop_reply_json_and_free(q);
}

static void hit_answered(struct shop_req *q, const char *val, size_t len)
{
    shop_reply(q->x, 200, val, len);
    shop_req_free(q);
}

static const struct shop_req_ops product_ops = {
    .ttl_ms = CATALOG_PRODUCT_TTL_MS, .read = catalog_read_product, .read_done = read_answered,
    .hit = hit_answered,
};
static const struct shop_req_ops list_ops = {
    .ttl_ms = LIST_TTL_MS, .index = LISTS_INDEX, .read = read_list, .read_done = read_answered,
    .hit = hit_answered,
};

static void looked_up(void *arg, const char *val, size_t len, const struct cache_ticket *t)
{
    struct shop_req *q = arg;
    q->t = *t;
    if (val)
        q->ops->hit(q, val, len);
    else
        shop_read_source(q);
}

void catalog_lookup(struct shop_req *q)
{
    const char *val;
    size_t len;
    int rc = cache_get(q->s->cache, q->key, strlen(q->key), q->ops->ttl_ms, &q->t, &val, &len, looked_up, q);
    if (rc == 0)
        q->ops->hit(q, val, len);
    else if (rc != -EINPROGRESS)
        shop_read_source(q);
}

/* The fast path: a hit in this worker answers without allocating. */
static void cached_read(struct shop *s, struct http_exchange *x, const struct shop_req_ops *ops, const char *key,
                        int64_t id, int64_t limit, int64_t offset)
{
    struct cache_ticket t;
    const char *val;
    size_t len;
    if (cache_get(s->cache, key, strlen(key), ops->ttl_ms, &t, &val, &len, NULL, NULL) == 0) {
        shop_reply(x, 200, val, len);
        return;
    }
    struct shop_req *q = shop_req_new(s, x, ops);
    if (!q)
        return;
    q->id = id;
    q->limit = limit;
    q->offset = offset;
    snprintf(q->key, sizeof q->key, "%s", key);
    catalog_lookup(q);
}

void catalog_products_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    int64_t limit, offset;
    char err[128], key[64];
    const char *field = NULL;
    if (shop_parse_paging(x->req.query, x->req.query_len, &limit, &offset, err, sizeof err, &field) < 0) {
        shop_reply_error(x, 400, err, field);
        return;
    }
    snprintf(key, sizeof key, "products:list:%lld:%lld", (long long)limit, (long long)offset);
    cached_read(s, x, &list_ops, key, 0, limit, offset);
}

void catalog_product_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    int64_t id;
    char key[64];
    if (shop_param_id(x, "id", &id) < 0) {
        shop_reply_error(x, 400, "id must be a positive integer", "id");
        return;
    }
    snprintf(key, sizeof key, "product:%lld", (long long)id);
    cached_read(s, x, &product_ops, key, id, 0, 0);
}

/* --- PUT /api/products/:id ----------------------------------------------- */

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
    http_finish(x, SHOP_JSON_TYPE, body, sizeof(body) - 1);
    return 0;
}

static json_t *read_update(struct db_conn *c, struct shop_req *q)
{
    return (q->rc = db_product_update(c, q->id, &q->patch, &q->p)) == 0 ? shop_product_json(&q->p) : NULL;
}

static void invalidated(void *arg, int status)
{
    struct shop_req *q = arg;
    if (status)
        log_warn("shop: product %lld changed; Redis gets the invalidation when it is back", (long long)q->id);
    shop_reply_json_and_free(q);
}

/* The change is committed: make every worker and machine see it, then
 * answer. When Redis cannot be told now, the cache module owes it. */
static void update_done(struct shop_req *q)
{
    char key[64];
    if (q->rc == -ENOENT) {
        shop_reply_errorf(q->x, 404, "product %lld not found", (long long)q->id);
        shop_req_free(q);
        return;
    }
    if (q->rc) {
        shop_reply_error(q->x, 503, "catalog unavailable", NULL);
        shop_req_free(q);
        return;
    }
    snprintf(key, sizeof key, "product:%lld", (long long)q->id);
    const char *keys[] = {key}, *idx[] = {LISTS_INDEX};
    int rc = cache_invalidate(q->s->cache, keys, 1, idx, 1, invalidated, q);
    if (rc != -EINPROGRESS)
        invalidated(q, rc);
}

static const struct shop_req_ops update_ops = {.read = read_update, .read_done = update_done};

void catalog_update_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    char err[160];
    const char *field = NULL;
    int64_t id;
    if (!authorized(s, x))
        return;
    if (shop_param_id(x, "id", &id) < 0) {
        shop_reply_error(x, 400, "id must be a positive integer", "id");
        return;
    }
    struct shop_req *q = shop_req_new(s, x, &update_ops);
    if (!q)
        return;
    q->id = id;
    if (shop_parse_product_patch(x->body, x->body_len, &q->patch, q->name, err, sizeof err, &field) < 0) {
        shop_reply_error(x, 400, err, field);
        shop_req_free(q);
        return;
    }
    if (cache_has_redis(s->cache) && !cache_conn_up(s->cache)) {
        /* the change could not be made visible to other machines */
        shop_reply_error(x, 503, "cache unavailable: Redis is down, try again", NULL);
        shop_req_free(q);
        return;
    }
    shop_read_source(q);
}
