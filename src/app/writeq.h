/*
 * The write queue: SQLite writes of a worker (cart changes without Redis,
 * request counters) wait in one queue and leave in batches of at most
 * WRITEQ_BATCH_MAX, one transaction (one commit, one fsync) per batch, one
 * batch at a time on libuv's thread pool.
 *
 * An item's write runs inside the batch's transaction, on the pool; its
 * return value -ENOENT or -EEXIST is an answer for that item, any other
 * error rolls the whole batch back and every item gets it. done then runs
 * on the loop, once per item, in queue order.
 *
 * Ownership: the items are the caller's and must stay valid until done ran.
 * writeq_new() returns the queue; writeq_free() frees it once no batch is in
 * flight (the owner waits for that through its busy count).
 */
#ifndef COHORT_APP_WRITEQ_H
#define COHORT_APP_WRITEQ_H

#include <stddef.h>
#include <uv.h>

#include "core/list.h"
#include "store/db.h"

#define WRITEQ_BATCH_MAX 256

struct writeq;
struct writeq_item;

struct writeq_item {
    struct list_node link;
    int (*write)(struct db_conn *c, struct writeq_item *it); /* on the pool */
    void (*done)(struct writeq_item *it, int rc);            /* on the loop */
};

/* busy: counts a batch in flight (may be NULL); settled(arg) runs after
 * each batch's items were answered (may be NULL). */
struct writeq *writeq_new(uv_loop_t *loop, struct db *db, int *busy, void (*settled)(void *arg), void *arg);

/* Queues it; a batch leaves at once when none is in flight. */
void writeq_push(struct writeq *w, struct writeq_item *it);

void writeq_free(struct writeq *w);

#endif
