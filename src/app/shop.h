/*
 * The shop API (the seed's e-commerce app, made real): products from the
 * SQLite catalog behind a cache, carts in Redis (HINCRBY) or SQLite
 * (UPSERT), request counters per route template, a response cache for
 * config routes, and readiness. docs/shop.md describes the endpoints, the
 * data and what happens when Redis fails.
 *
 * Life cycle, one shop per worker, on the worker's loop:
 *   shop_new       opens (and migrates) the store; no handles yet
 *   shop_handlers  gives the shop's handlers to config routes
 *   shop_routes    adds the built-in shop routes
 *   shop_start     connects the cache and Redis, starts the flush of the
 *                  counters filter's counts, and gives the response cache
 *                  filter its store (filters/counters.h, cache/response.h)
 *   shop_stop      flushes counters, waits for work in flight, closes
 *   shop_free      frees (after shop_stop finished, or if never started)
 * Each accepts a NULL shop (no shop: "app": "none") and does nothing.
 */
#ifndef COHORT_APP_SHOP_H
#define COHORT_APP_SHOP_H

#include <stddef.h>

#include "app/env.h"
#include "http/router.h"

struct shop;
struct rcount;
struct rcache;

/* NULL with a message in err (e.g. the store cannot be opened). */
struct shop *shop_new(const struct app_env *env, char *err, size_t errlen);

/* The shop's handlers by name ("products", "product", "product_update",
 * "cart_add", "cart", "cart_remove", "ready"): their number, the i-th's
 * name, and adding them all to a generation's handlers (0 or -ENOMEM). */
size_t shop_handler_count(void);
const char *shop_handler_name(size_t i);
struct http_handlers;
int shop_handlers(struct shop *s, struct http_handlers *h);

/* /api/products, /api/products/:id (GET, PUT), /api/cart/add, /api/cart,
 * /api/cart/:productId, /health/ready. */
int shop_routes(struct shop *s, struct router *r);

int shop_start(struct shop *s, struct rcount *counts, struct rcache *responses, char *err, size_t errlen);

/* Flushes what must not be lost, then calls done(arg) once every handle is
 * closed. */
void shop_stop(struct shop *s, void (*done)(void *arg), void *arg);

void shop_free(struct shop *s);

#endif
