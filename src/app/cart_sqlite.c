/*
 * Carts in SQLite. See cart_sqlite.h and cart_store.h.
 */
#include "app/cart_sqlite.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/shop_input.h"
#include "core/log.h"

struct cart_sqlite {
    struct cart_store base;
    uv_loop_t *loop;
    struct db *db;
    struct writeq *wq;
};

/* One change, queued for a batch. */
struct change {
    struct writeq_item it;
    int remove;
    int64_t id, qty;
    cart_done_fn cb;
    void *arg;
    char user[SHOP_USER_MAX + 1];
    char idem[SHOP_IDEM_MAX + 1];
    char fp[DB_IDEM_REQUEST_MAX + 1];
};

/* A read of one cart. */
struct read {
    struct cart_sqlite *cs;
    int rc;
    struct cart_line *lines;
    size_t n;
    cart_get_fn cb;
    void *arg;
    char user[SHOP_USER_MAX + 1];
};

static int change_write(struct db_conn *c, struct writeq_item *it)
{
    struct change *ch = (struct change *)it;
    int replayed;
    if (ch->remove)
        return db_cart_remove(c, ch->user, ch->id);
    if (ch->idem[0])
        return db_cart_add_once(c, ch->user, ch->idem, ch->fp, ch->id, ch->qty, (int64_t)time(NULL), &ch->qty,
                                &replayed);
    return db_cart_add(c, ch->user, ch->id, ch->qty, &ch->qty);
}

static void change_done(struct writeq_item *it, int rc)
{
    struct change *ch = (struct change *)it;
    ch->cb(ch->arg, rc, ch->qty);
    free(ch);
}

static int push(struct cart_sqlite *cs, int remove, const char *user, int64_t id, int64_t qty, const char *idem,
                const char *fp, cart_done_fn cb, void *arg)
{
    struct change *ch = calloc(1, sizeof(*ch));
    if (!ch)
        return -ENOMEM;
    *ch = (struct change){.it = {.write = change_write, .done = change_done}, .remove = remove, .id = id,
                          .qty = qty, .cb = cb, .arg = arg};
    snprintf(ch->user, sizeof ch->user, "%s", user);
    snprintf(ch->idem, sizeof ch->idem, "%s", idem ? idem : "");
    snprintf(ch->fp, sizeof ch->fp, "%s", fp ? fp : "");
    writeq_push(cs->wq, &ch->it);
    return 0;
}

static int sq_add(struct cart_store *base, const char *user, int64_t id, int64_t qty, const char *idem,
                  const char *fp, cart_done_fn cb, void *arg)
{
    return push((struct cart_sqlite *)base, 0, user, id, qty, idem, fp, cb, arg);
}

static int sq_remove(struct cart_store *base, const char *user, int64_t id, cart_done_fn cb, void *arg)
{
    return push((struct cart_sqlite *)base, 1, user, id, 0, NULL, NULL, cb, arg);
}

static void add_line(void *arg, const struct db_cart_line *l)
{
    struct read *r = arg;
    struct cart_line *v = r->rc ? NULL : realloc(r->lines, (r->n + 1) * sizeof(*v));
    if (!v) {
        r->rc = -ENOMEM;
        return;
    }
    r->lines = v;
    v = &v[r->n++];
    *v = (struct cart_line){.product_id = l->product_id, .price = l->price, .quantity = l->quantity};
    snprintf(v->name, sizeof v->name, "%s", l->name);
}

static void read_work(struct db_conn *c, void *arg)
{
    struct read *r = arg;
    int rc = db_cart_get(c, r->user, add_line, r);
    if (!r->rc)
        r->rc = rc;
    if (r->rc && r->rc != -ENOENT)
        log_error("shop: SQLite read failed: %s", db_errmsg(c));
}

static void read_done(void *arg, int status)
{
    struct read *r = arg;
    r->cb(r->arg, status ? status : r->rc, r->lines, r->n);
    free(r->lines);
    free(r);
}

static int sq_get(struct cart_store *base, const char *user, cart_get_fn cb, void *arg)
{
    struct cart_sqlite *cs = (struct cart_sqlite *)base;
    struct read *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    *r = (struct read){.cs = cs, .cb = cb, .arg = arg};
    snprintf(r->user, sizeof r->user, "%s", user);
    if (db_submit(cs->db, cs->loop, read_work, read_done, r) < 0) {
        free(r);
        return -ENOMEM;
    }
    return 0;
}

static void sq_close(struct cart_store *base, void (*done)(void *arg), void *arg)
{
    free(base);
    if (done)
        done(arg);
}

static const struct cart_store_ops sqlite_ops = {
    .add = sq_add, .remove = sq_remove, .get = sq_get, .close = sq_close,
};

struct cart_store *cart_sqlite_new(uv_loop_t *loop, struct db *db, struct writeq *wq)
{
    struct cart_sqlite *cs = calloc(1, sizeof(*cs));
    if (!cs)
        return NULL;
    *cs = (struct cart_sqlite){.base = {.ops = &sqlite_ops, .checks_products = 1}, .loop = loop, .db = db, .wq = wq};
    return &cs->base;
}
