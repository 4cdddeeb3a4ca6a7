/*
 * Observability endpoints of a worker and what they need:
 *   GET /metrics  Prometheus text exposition (format 0.0.4)
 *   GET /stats    the same as JSON (the seed's requestCount, errorCount,
 *                 avgResponseTime, plus totals, routes, workers, upstreams)
 *   GET /status   the dashboard page (app/dashboard.html, in the binary)
 * Every worker answers for the whole cluster: it reads every slot of the
 * shared counters segment (core/metrics.h).
 *
 * The routes go on the main router, or, when admin.port is set, on a
 * router of their own served by a second engine on the admin listener the
 * master bound (not counted in the request counters).
 *
 * It also measures this worker's event-loop lag: a 100 ms timer notes how
 * late it fires; each second the slot gets the max and the average.
 *
 * Test builds (make TEST_ROUTES=1, which `make e2e` uses for its second
 * binary) add GET /__test/block?ms=N, which blocks the loop for N ms.
 */
#ifndef COHORT_STATS_H
#define COHORT_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "app/env.h"
#include "core/jsonw.h"
#include "core/metrics.h"

struct stats;

/* Adds the routes and starts the lag timer (and the admin engine). NULL
 * with a message in err on failure. */
struct stats *stats_new(const struct app_env *env, char *err, size_t errlen);
/* Stops the timer and drains the admin engine; then done(arg). */
void stats_stop(struct stats *s, void (*done)(void *arg), void *arg);
/* After stats_stop finished. NULL is a no-op. */
void stats_free(struct stats *s);

/* --- rendering (pure; the unit tests call these) ------------------------ */

/* A consistent copy of the segment and the labels of the route slots. */
struct stats_view {
    const struct metrics_shm *shm; /* header fields: restarts, upstreams, start */
    struct metrics_slot retired;
    struct metrics_slot *slots;    /* shm->nslots, owned */
    uint32_t nslots;
    const char *route_names[METRICS_ROUTES]; /* NULL: slot unused */
    uint64_t now_ms;               /* wall clock */
};

/* Copies the segment; route names from the router. 0 or -ENOMEM. */
int stats_view_load(struct stats_view *v, const struct metrics_shm *m, const struct router *r);
void stats_view_free(struct stats_view *v);
/* Sum of the retired totals and every slot. */
void stats_view_total(const struct stats_view *v, struct metrics_slot *total);

void stats_render_prometheus(struct sbuf *out, const struct stats_view *v);
void stats_render_json(struct sbuf *out, const struct stats_view *v);

/* The dashboard page (NUL-terminated) and its length. */
extern const char dashboard_html[];
extern const size_t dashboard_html_len;

#endif
