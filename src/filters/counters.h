/*
 * Request counters, a route filter: one count per route and method, kept
 * in the worker's memory (request:<METHOD>:<route template>). The filter
 * only counts; whoever stores the counts takes them (rcount_take) and may
 * give back what it could not store (rcount_put). The shop does, every
 * second, to Redis or SQLite (app/counters.c); without the shop no counts
 * are stored, so the filter is not put on routes (a route's requests are
 * still counted per status in the shared metrics, /metrics).
 */
#ifndef COHORT_FILTERS_COUNTERS_H
#define COHORT_FILTERS_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

#include "http/filter.h"
#include "http/parser.h"

struct rcount;

struct rcount *rcount_new(void);
void rcount_free(struct rcount *t);

/* The filter (the same for every route; conf is t). */
struct http_filter rcount_filter(struct rcount *t);

/* Routes seen so far (by struct route.index); their template, NULL for
 * one never counted. */
size_t rcount_routes(const struct rcount *t);
const char *rcount_name(const struct rcount *t, size_t route);

/* The count of a route and method, set to 0. */
uint64_t rcount_take(struct rcount *t, size_t route, int method);
/* Adds counts back (a store that failed). */
void rcount_put(struct rcount *t, size_t route, int method, uint64_t n);
/* Every count not yet taken. */
uint64_t rcount_pending(const struct rcount *t);

#endif
