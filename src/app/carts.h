/*
 * Carts: POST /api/cart/add, GET /api/cart, DELETE /api/cart/:productId,
 * with the rules that do not depend on where carts live; the store
 * (app/cart_store.h: SQLite or Redis) keeps the lines.
 *
 * The rules: an add names a product that exists (404 otherwise) and adds
 * its quantity to the line; an Idempotency-Key makes an add happen once
 * (the same add again answers what the first one left; another add under
 * the same key is 422); removing a line that is not there is 404; a store
 * that cannot answer is 503. A cart lists its lines in product order with
 * lineTotal = price x quantity and their total.
 */
#ifndef COHORT_APP_CARTS_H
#define COHORT_APP_CARTS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "app/cart_store.h"
#include "http/server.h"

#define CARTS_STORE_DOWN "cart store unavailable"

enum carts_op { CARTS_ADD, CARTS_REMOVE };

/* The answer to a change: status, and the body (200) or the error's
 * message and field (field may be NULL). */
struct carts_answer {
    int status;
    char body[160];
    char msg[160];
    const char *field;
};

void carts_add_handle(struct http_exchange *x);
void carts_get_handle(struct http_exchange *x);
void carts_remove_handle(struct http_exchange *x);

/* What an Idempotency-Key stands for: the same key with another add is an
 * error, not a replay. At most DB_IDEM_REQUEST_MAX bytes. */
void carts_fingerprint(int64_t id, int64_t qty, char *out, size_t len);

/* The answer to a change the store answered with rc (and qty). */
void carts_answer(enum carts_op op, int rc, int64_t id, int64_t qty, struct carts_answer *a);

/* {"items": [...], "total": n}; NULL when out of memory. */
json_t *carts_json(const struct cart_line *lines, size_t n);

#endif
