/*
 * Carts. See carts.h.
 *
 * Every request waits until the store can take work (the first Redis
 * connection), then runs its own start function; an add to a store that
 * does not check products looks the product up first (the catalog's
 * cache, then SQLite).
 */
#include "app/carts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/catalog.h"
#include "app/shop_int.h"

void carts_fingerprint(int64_t id, int64_t qty, char *out, size_t len)
{
    snprintf(out, len, "%lld:%lld", (long long)id, (long long)qty);
}

void carts_answer(enum carts_op op, int rc, int64_t id, int64_t qty, struct carts_answer *a)
{
    *a = (struct carts_answer){.status = 200};
    if (rc == -ENOENT && op == CARTS_ADD) {
        a->status = 404;
        snprintf(a->msg, sizeof a->msg, "product %lld not found", (long long)id);
    } else if (rc == -EEXIST) {
        a->status = 422;
        snprintf(a->msg, sizeof a->msg, "Idempotency-Key was used for a different add");
        a->field = "Idempotency-Key";
    } else if (rc == -ENOENT) {
        a->status = 404;
        snprintf(a->msg, sizeof a->msg, "product %lld is not in the cart", (long long)id);
    } else if (rc) {
        a->status = 503;
        snprintf(a->msg, sizeof a->msg, CARTS_STORE_DOWN);
    } else if (op == CARTS_ADD) {
        snprintf(a->body, sizeof a->body, "{\"success\":true,\"productId\":%lld,\"quantity\":%lld}", (long long)id,
                 (long long)qty);
    } else {
        snprintf(a->body, sizeof a->body, "{\"success\":true,\"productId\":%lld}", (long long)id);
    }
}

json_t *carts_json(const struct cart_line *lines, size_t n)
{
    json_t *items = json_array();
    int64_t total = 0;
    if (!items)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const struct cart_line *l = &lines[i];
        json_array_append_new(items, json_pack("{s:I,s:s,s:I,s:I,s:I}", "productId", (json_int_t)l->product_id,
                                               "name", l->name, "price", (json_int_t)l->price, "quantity",
                                               (json_int_t)l->quantity, "lineTotal",
                                               (json_int_t)(l->price * l->quantity)));
        total += l->price * l->quantity;
    }
    return json_pack("{s:o,s:I}", "items", items, "total", (json_int_t)total);
}

static void store_down(struct shop_req *q)
{
    shop_reply_error(q->x, 503, CARTS_STORE_DOWN, NULL);
    shop_req_free(q);
}

/* Runs q's start once the store can take work: at once, or when the
 * store stops waiting for its connection (then start checks rc). */
static void go(struct shop_req *q, void (*start)(void *arg, int rc))
{
    q->wait = (struct cart_wait){.fn = start, .arg = q};
    int rc = cart_store_ready(q->s->carts, &q->wait);
    if (rc != -EINPROGRESS)
        start(q, rc);
}

static void changed(struct shop_req *q, enum carts_op op, int rc, int64_t qty)
{
    struct carts_answer a;
    carts_answer(op, rc, q->id, qty, &a);
    if (a.status == 200)
        shop_reply(q->x, 200, a.body, strlen(a.body));
    else
        shop_reply_error(q->x, a.status, a.msg, a.field);
    shop_req_free(q);
}

/* --- add --------------------------------------------------------------- */

static void added(void *arg, int rc, int64_t qty)
{
    changed(arg, CARTS_ADD, rc, qty);
}

static void add_now(struct shop_req *q)
{
    struct cart_store *cs = q->s->carts;
    char fp[DB_IDEM_REQUEST_MAX + 1];
    carts_fingerprint(q->id, q->qty, fp, sizeof fp);
    if (cs->ops->add(cs, q->user, q->id, q->qty, q->idem, fp, added, q) < 0)
        store_down(q);
}

static void product_loaded(struct shop_req *q)
{
    if (catalog_loaded(q) == 0)
        add_now(q);
}

static void product_hit(struct shop_req *q, const char *val, size_t len)
{
    (void)val;
    (void)len;
    add_now(q);
}

/* The product must exist: a cache hit, or the catalog. */
static const struct shop_req_ops add_ops = {
    .ttl_ms = CATALOG_PRODUCT_TTL_MS, .read = catalog_read_product, .read_done = product_loaded,
    .hit = product_hit,
};

static void add_start(void *arg, int rc)
{
    struct shop_req *q = arg;
    if (rc < 0) {
        store_down(q);
        return;
    }
    if (q->s->carts->checks_products) {
        add_now(q);
        return;
    }
    snprintf(q->key, sizeof q->key, "product:%lld", (long long)q->id);
    catalog_lookup(q);
}

void carts_add_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    char user[SHOP_USER_MAX + 1], err[192];
    const char *field = NULL, *ctype;
    int64_t id, qty;
    size_t ctlen = 0;
    if (shop_user_of(x, user) < 0)
        return;
    ctype = http_req_header(x, "Content-Type", &ctlen);
    if (shop_parse_cart_add(ctype, ctlen, x->body, x->body_len, &id, &qty, err, sizeof err, &field) < 0) {
        shop_reply_error(x, 400, err, field);
        return;
    }
    size_t ilen = 0;
    const char *iv = http_req_header(x, "Idempotency-Key", &ilen);
    char idem[SHOP_IDEM_MAX + 1] = "";
    if (iv && shop_parse_idem_key(iv, ilen, idem, err, sizeof err, &field) < 0) {
        shop_reply_error(x, 400, err, field);
        return;
    }
    struct shop_req *q = shop_req_new(s, x, &add_ops);
    if (!q)
        return;
    memcpy(q->user, user, sizeof user);
    memcpy(q->idem, idem, sizeof idem);
    q->id = id;
    q->qty = qty;
    go(q, add_start);
}

/* --- get --------------------------------------------------------------- */

static void got(void *arg, int rc, const struct cart_line *lines, size_t n)
{
    struct shop_req *q = arg;
    char *body = NULL;
    if (rc) {
        store_down(q);
        return;
    }
    json_t *j = carts_json(lines, n);
    if (j)
        body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (body)
        shop_reply(q->x, 200, body, strlen(body));
    else
        shop_reply_error(q->x, 500, "out of memory", NULL);
    free(body);
    shop_req_free(q);
}

static void get_start(void *arg, int rc)
{
    struct shop_req *q = arg;
    if (rc < 0) {
        store_down(q);
        return;
    }
    struct cart_store *cs = q->s->carts;
    if (cs->ops->get(cs, q->user, got, q) < 0)
        store_down(q);
}

static const struct shop_req_ops get_ops = {0};

void carts_get_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    char user[SHOP_USER_MAX + 1];
    struct shop_req *q;
    if (shop_user_of(x, user) < 0)
        return;
    if (!(q = shop_req_new(s, x, &get_ops)))
        return;
    memcpy(q->user, user, sizeof user);
    go(q, get_start);
}

/* --- remove ------------------------------------------------------------ */

static void removed(void *arg, int rc, int64_t qty)
{
    changed(arg, CARTS_REMOVE, rc, qty);
}

static void remove_start(void *arg, int rc)
{
    struct shop_req *q = arg;
    if (rc < 0) {
        store_down(q);
        return;
    }
    struct cart_store *cs = q->s->carts;
    if (cs->ops->remove(cs, q->user, q->id, removed, q) < 0)
        store_down(q);
}

static const struct shop_req_ops remove_ops = {0};

void carts_remove_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    char user[SHOP_USER_MAX + 1];
    int64_t pid;
    if (shop_user_of(x, user) < 0)
        return;
    if (shop_param_id(x, "productId", &pid) < 0) {
        shop_reply_error(x, 400, "productId must be a positive integer", "productId");
        return;
    }
    struct shop_req *q = shop_req_new(s, x, &remove_ops);
    if (!q)
        return;
    memcpy(q->user, user, sizeof user);
    q->id = pid;
    go(q, remove_start);
}
