/*
 * Carts in SQLite (cart_store.h): changes go through the worker's write
 * queue (batched transactions), reads run on the thread pool. It checks
 * products itself (the cart table refers to the catalog).
 */
#ifndef COHORT_APP_CART_SQLITE_H
#define COHORT_APP_CART_SQLITE_H

#include <uv.h>

#include "app/cart_store.h"
#include "app/writeq.h"

/* NULL when out of memory. db and wq must outlive the store. */
struct cart_store *cart_sqlite_new(uv_loop_t *loop, struct db *db, struct writeq *wq);

#endif
