/*
 * The write queue. See writeq.h.
 */
#include "app/writeq.h"

#include <errno.h>
#include <stdlib.h>

#include "core/log.h"

struct writeq {
    uv_loop_t *loop;
    struct db *db;
    int *busy;
    void (*settled)(void *arg);
    void *arg;
    struct list_node items; /* struct writeq_item waiting for a batch */
    size_t n;
    int writing;
};

struct batch {
    struct writeq *w;
    int rc;
    size_t n;
    int rcs[WRITEQ_BATCH_MAX];
    struct writeq_item *items[];
};

struct writeq *writeq_new(uv_loop_t *loop, struct db *db, int *busy, void (*settled)(void *arg), void *arg)
{
    struct writeq *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    *w = (struct writeq){.loop = loop, .db = db, .busy = busy, .settled = settled, .arg = arg};
    list_init(&w->items);
    return w;
}

void writeq_free(struct writeq *w)
{
    free(w);
}

/* One transaction for the whole batch. "No such product" and "that key
 * was another add" are answers, not failures; any other error rolls
 * everything back. */
static void batch_work(struct db_conn *c, void *arg)
{
    struct batch *b = arg;
    b->rc = db_begin(c);
    for (size_t i = 0; i < b->n && !b->rc; i++) {
        int rc = b->rcs[i] = b->items[i]->write(c, b->items[i]);
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

static void kick(struct writeq *w);

static void batch_done(void *arg, int status)
{
    struct batch *b = arg;
    struct writeq *w = b->w;
    for (size_t i = 0; i < b->n; i++) {
        int rc = status ? status : b->rc ? b->rc : b->rcs[i];
        b->items[i]->done(b->items[i], rc);
    }
    free(b);
    w->writing = 0;
    if (w->busy)
        (*w->busy)--;
    kick(w);
    if (w->settled)
        w->settled(w->arg);
}

static void kick(struct writeq *w)
{
    if (w->writing || list_empty(&w->items))
        return;
    size_t n = w->n < WRITEQ_BATCH_MAX ? w->n : WRITEQ_BATCH_MAX;
    struct batch *b = malloc(sizeof(*b) + n * sizeof(b->items[0]));
    if (!b)
        return; /* the next write or flush kicks again */
    b->w = w;
    b->rc = 0;
    b->n = n;
    for (size_t i = 0; i < n; i++) {
        struct writeq_item *it = list_entry(w->items.next, struct writeq_item, link);
        list_unlink(&it->link);
        b->items[i] = it;
        b->rcs[i] = 0;
    }
    w->n -= n;
    w->writing = 1;
    if (w->busy)
        (*w->busy)++;
    if (db_submit(w->db, w->loop, batch_work, batch_done, b) < 0)
        batch_done(b, -ENOMEM);
}

void writeq_push(struct writeq *w, struct writeq_item *it)
{
    list_init(&it->link);
    list_append(&w->items, &it->link);
    w->n++;
    kick(w);
}
