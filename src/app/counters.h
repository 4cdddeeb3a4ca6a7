/*
 * Request counters: request:<METHOD>:<route template>, counted per route
 * in memory by the counters filter (filters/counters.h) and flushed every second: one INCRBY
 * per counter to Redis, or one write of the SQLite queue without Redis.
 * Counts Redis failed to take are kept for the next flush; at a stop with
 * Redis down they go to SQLite, and move to Redis once it is up again.
 */
#ifndef COHORT_APP_COUNTERS_H
#define COHORT_APP_COUNTERS_H

#include <stdint.h>

#include "app/shop_int.h"

/* The flush (the shop's timer, and shop_stop). */
void counters_flush(struct shop *s);

/* Moves the pending counts into one write for SQLite. */
void counters_save(struct shop *s);

/* Counts not yet flushed. */
uint64_t counters_pending(const struct shop *s);

#endif
