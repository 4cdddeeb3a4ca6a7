/*
 * The catalog: GET /api/products, GET /api/products/:id and PUT
 * /api/products/:id, cache-aside (cache/cache.h) in front of SQLite.
 * A read looks its key up (a hit in this worker is answered without
 * allocating), reads SQLite on the thread pool on a miss and fills the
 * cache; a change is committed, then invalidated everywhere, then answered.
 */
#ifndef COHORT_APP_CATALOG_H
#define COHORT_APP_CATALOG_H

#include "app/shop_int.h"

#define CATALOG_PRODUCT_TTL_MS (3600 * 1000LL)

void catalog_products_handle(struct http_exchange *x);
void catalog_product_handle(struct http_exchange *x);
void catalog_update_handle(struct http_exchange *x);

/* For other kinds of request that need a product (q->id): the read of
 * their ops, the lookup of q->key, and what their read_done calls first:
 * 0 when q->json holds the product and the cache was filled, else q was
 * answered (404, 503) and freed. */
json_t *catalog_read_product(struct db_conn *c, struct shop_req *q);
void catalog_lookup(struct shop_req *q);
int catalog_loaded(struct shop_req *q);

#endif
