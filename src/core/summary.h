/*
 * The master's periodic summary of the cluster (log.stats_interval, the
 * seed's PerformanceMonitor): one info line in the error log with the
 * requests and errors (5xx) so far and since the last line, the average and
 * p99 latency since the last line, and each worker's RSS, e.g.
 *
 *   {"time":...,"level":"info","role":"master","pid":7,
 *    "msg":"stats: 1200 requests (+600, 10.0/s), 3 errors (+1), avg 0.210 ms,
 *           p99 1.870 ms, 2 workers, rss 5.1 MiB",
 *    "requests":1200,"requests_delta":600,"errors":3,"errors_delta":1,
 *    "avg_ms":0.21,"p99_ms":1.87,"workers":[{"id":0,"pid":8,"rss":2670592},...]}
 *
 * Reads the counters segment only; one timer, unreferenced.
 */
#ifndef COHORT_SUMMARY_H
#define COHORT_SUMMARY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/metrics.h"

/* Starts the timer on the loop (nothing when interval_ms is 0). The
 * handle is closed by whoever walks the loop's handles at exit. */
void summary_start(uv_loop_t *loop, const struct metrics_shm *shm, int64_t interval_ms);

/*
 * Formats a summary of `now` against `before` (totals of the previous
 * line; zeroed for the first) over `seconds`: the message into msg and the
 * JSON fields into fields. Pure; the unit tests call it.
 */
void summary_format(const struct metrics_slot *now, const struct metrics_slot *before, double seconds,
                    const struct metrics_slot *slots, uint32_t nslots, char *msg, size_t msglen,
                    char *fields, size_t fieldslen);

#endif
