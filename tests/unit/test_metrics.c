/* Latency buckets, percentiles, folding and snapshots, the summary line. */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/metrics.h"
#include "core/summary.h"

/* The bucket by definition: the first whose bound is >= the value. */
static int bucket_by_search(uint64_t us)
{
    int i = 0;
    while (i < METRICS_BUCKETS - 1 && us > metrics_bucket_bound(i))
        i++;
    return i;
}

Test(histogram, bounds_are_log_spaced)
{
    cr_assert_eq(metrics_bucket_bound(0), 8);
    cr_assert_eq(metrics_bucket_bound(1), 12);
    cr_assert_eq(metrics_bucket_bound(2), 16);
    cr_assert_eq(metrics_bucket_bound(3), 24);
    cr_assert_eq(metrics_bucket_bound(METRICS_BUCKETS - 2), 1ull << 24);
    cr_assert_eq(metrics_bucket_bound(METRICS_BUCKETS - 1), UINT64_MAX);
    for (int i = 1; i < METRICS_BUCKETS - 1; i++) {
        double r = (double)metrics_bucket_bound(i) / (double)metrics_bucket_bound(i - 1);
        cr_assert(r >= 1.33 && r <= 1.5, "ratio %f at %d", r, i);
    }
}

Test(histogram, bucket_matches_the_definition)
{
    for (uint64_t us = 0; us < 70000; us++)
        cr_assert_eq(metrics_bucket(us), bucket_by_search(us), "us=%llu", (unsigned long long)us);
    for (int i = 0; i < METRICS_BUCKETS - 1; i++) {
        uint64_t b = metrics_bucket_bound(i);
        cr_assert_eq(metrics_bucket(b), i, "a bound is in its own bucket");
        cr_assert_eq(metrics_bucket(b + 1), i + 1);
    }
    cr_assert_eq(metrics_bucket(UINT64_MAX), METRICS_BUCKETS - 1);
    cr_assert_eq(metrics_bucket((1ull << 24) + 1), METRICS_BUCKETS - 1);
}

Test(histogram, percentile_interpolates_within_a_bucket)
{
    uint64_t h[METRICS_BUCKETS] = {0};
    cr_assert_eq(metrics_percentile(h, 0.5), 0);
    /* 100 values in (16, 24] */
    h[3] = 100;
    cr_assert_float_eq(metrics_percentile(h, 0.5), 20.0, 1e-9);
    cr_assert_float_eq(metrics_percentile(h, 1.0), 24.0, 1e-9);
    cr_assert_float_eq(metrics_percentile(h, 0.01), 16.08, 1e-9);
    /* 99 fast, 1 slow: p50 in the fast bucket, p99 at its top, p999 in the slow one */
    memset(h, 0, sizeof(h));
    h[0] = 99;
    h[14] = 1; /* (768, 1024] */
    cr_assert_leq(metrics_percentile(h, 0.5), 8.0);
    cr_assert_float_eq(metrics_percentile(h, 0.99), 8.0, 1e-9);
    double p999 = metrics_percentile(h, 0.999);
    cr_assert(p999 > 768 && p999 <= 1024, "%f", p999);
    /* the +Inf bucket answers its lower bound */
    memset(h, 0, sizeof(h));
    h[METRICS_BUCKETS - 1] = 5;
    cr_assert_float_eq(metrics_percentile(h, 0.5), (double)(1ull << 24), 1e-9);
}

Test(histogram, percentile_of_recorded_values_is_close)
{
    struct metrics_slot s;
    memset(&s, 0, sizeof(s));
    for (uint64_t v = 1; v <= 10000; v++)
        metrics_request(&s, 1, 200, v);
    double p50 = metrics_percentile(s.latency, 0.5), p99 = metrics_percentile(s.latency, 0.99);
    cr_assert(fabs(p50 - 5000) / 5000 < 0.25, "p50 %f", p50);
    cr_assert(fabs(p99 - 9900) / 9900 < 0.25, "p99 %f", p99);
    cr_assert_eq(s.requests, 10000);
    cr_assert_eq(s.status[2], 10000);
    cr_assert_eq(s.routes[1][2], 10000);
    cr_assert_eq(s.latency_us_sum, 10000ull * 10001 / 2);
}

Test(metrics, request_classes_and_route_slots)
{
    struct metrics_slot s;
    memset(&s, 0, sizeof(s));
    metrics_request(&s, METRICS_ROUTE_NONE, 404, 5);
    metrics_request(&s, 2, 503, 5);
    metrics_request(&s, 1000, 99, 5); /* past the slots: "other"; odd status: class 0 */
    cr_assert_eq(s.routes[METRICS_ROUTE_NONE][4], 1);
    cr_assert_eq(s.routes[2][5], 1);
    cr_assert_eq(s.routes[METRICS_ROUTE_OTHER][0], 1);
    cr_assert_eq(s.status[0] + s.status[4] + s.status[5], 3);
}

Test(metrics, fold_keeps_totals_and_clears_the_slot)
{
    struct metrics_shm *m;
    int fd = metrics_create(4, &m);
    cr_assert_geq(fd, 0);
    struct metrics_shm *again;
    cr_assert_eq(metrics_map(fd, &again), 0, "a created segment maps");
    metrics_mark_used(m, 2); /* as the master does when it hands out slots */
    m->slots[1].pid = 42;
    m->slots[1].worker_id = 1;
    m->slots[1].conns_open = 3; /* a gauge: not folded */
    m->slots[1].rss = 1000;
    metrics_request(&m->slots[1], 1, 200, 100);
    metrics_request(&m->slots[2], 1, 500, 100);
    m->slots[1].upstream[3].requests = 7;
    struct metrics_slot before;
    cr_assert_eq(metrics_sum(m, &before), 0);
    cr_assert_eq(before.requests, 2);
    cr_assert_eq(before.conns_open, 3);
    uint64_t seq = m->seq;
    metrics_retire(m, 1);
    cr_assert_eq(m->seq, seq + 2, "the sequence number moved by two (odd while folding)");
    struct metrics_slot after;
    metrics_sum(m, &after);
    cr_assert_eq(after.requests, 2, "counters never go backwards");
    cr_assert_eq(after.status[2], 1);
    cr_assert_eq(after.routes[1][2], 1);
    cr_assert_eq(after.latency_us_sum, 200);
    cr_assert_eq(after.upstream[3].requests, 7);
    cr_assert_eq(after.conns_open, 0, "gauges of a gone worker are gone");
    cr_assert_eq(m->retired.rss, 0);
    cr_assert_eq(m->slots[1].pid, 0);
    cr_assert_eq(m->slots[1].requests, 0);
    metrics_count_restart(m, 1);
    metrics_count_restart(m, 99); /* out of range: ignored */
    cr_assert_eq(m->restarts[1], 1);
    munmap(again, metrics_size(4));
    munmap(m, metrics_size(4));
    close(fd);
}

Test(metrics, map_rejects_a_foreign_segment)
{
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    char zeros[sizeof(struct metrics_shm)] = {0};
    fwrite(zeros, 1, sizeof(zeros), f);
    fflush(f);
    struct metrics_shm *m;
    cr_assert_eq(metrics_map(fileno(f), &m), -EINVAL);
    fclose(f);
}

Test(summary, line_reports_deltas_latency_and_rss)
{
    struct metrics_slot before, now, slots[3];
    memset(&before, 0, sizeof(before));
    memset(slots, 0, sizeof(slots));
    metrics_request(&before, 1, 200, 100);
    now = before;
    for (int i = 0; i < 9; i++)
        metrics_request(&now, 1, 200, 1000);
    metrics_request(&now, 1, 500, 1000);
    slots[0].pid = 11, slots[0].worker_id = 0, slots[0].rss = 2 * 1048576;
    slots[2].pid = 12, slots[2].worker_id = 1, slots[2].rss = 3 * 1048576;
    char msg[512], fields[512];
    summary_format(&now, &before, 2.0, slots, 3, msg, sizeof(msg), fields, sizeof(fields));
    cr_assert(strstr(msg, "stats: 11 requests (+10, 5.0/s), 1 errors (+1), avg 1.000 ms"), "%s", msg);
    cr_assert(strstr(msg, "worker 0 2.0 MiB, worker 1 3.0 MiB; total 5.0 MiB"), "%s", msg);
    cr_assert(strstr(fields, "\"requests\":11,\"requests_delta\":10,\"errors\":1,\"errors_delta\":1"), "%s", fields);
    cr_assert(strstr(fields, "\"workers\":[{\"id\":0,\"pid\":11,\"rss\":2097152},{\"id\":1,\"pid\":12,\"rss\":3145728}]"),
              "%s", fields);
    /* too small for the fields: still valid, shorter */
    char tiny[60];
    summary_format(&now, &before, 2.0, slots, 3, msg, sizeof(msg), tiny, sizeof(tiny));
    cr_assert_str_eq(tiny, "\"requests\":11,\"errors\":1");
}

/* Readers look only at slots handed out so far: untouched pages of the
 * segment stay untouched (an idle worker's RSS), and a count that was never
 * marked used is not summed. */
Test(metrics, readers_stop_at_the_slots_handed_out)
{
    struct metrics_shm *m;
    int fd = metrics_create(8, &m);
    cr_assert_geq(fd, 0);
    cr_assert_eq(metrics_slots_used(m), 0);
    m->slots[5].requests = 9; /* not handed out: invisible */
    metrics_mark_used(m, 1);
    m->slots[1].requests = 4;
    cr_assert_eq(metrics_slots_used(m), 2);
    metrics_mark_used(m, 0); /* lower: no change */
    cr_assert_eq(metrics_slots_used(m), 2);
    struct metrics_slot total;
    cr_assert_eq(metrics_sum(m, &total), 0);
    cr_assert_eq(total.requests, 4);
    metrics_mark_used(m, 100); /* beyond the capacity: ignored */
    cr_assert_eq(metrics_slots_used(m), 2);
    munmap(m, metrics_size(8));
    close(fd);
}

Test(metrics, a_slot_is_claimed_once_until_it_is_folded)
{
    struct metrics_shm *m;
    int fd = metrics_create(4, &m);
    cr_assert_geq(fd, 0);
    cr_assert_eq(metrics_claim(m, 2, 100), 0);
    cr_assert_eq(m->slots[2].pid, 100);
    cr_assert_eq(metrics_claim(m, 2, 200), -EBUSY, "a second master does not take a claimed slot");
    cr_assert_eq(metrics_claim(m, 4, 200), -EBUSY, "beyond the capacity");
    metrics_retire(m, 2);
    cr_assert_eq(metrics_claim(m, 2, 200), 0, "free again once folded");
    munmap(m, metrics_size(4));
    close(fd);
}

/* Two masters share the segment during an upgrade: their folds into the
 * retired totals never overlap, so none is lost. */
Test(metrics, folds_from_two_processes_lose_nothing)
{
    enum { ROUNDS = 20000 };
    struct metrics_shm *m;
    int fd = metrics_create(4, &m);
    cr_assert_geq(fd, 0);
    pid_t kid = fork();
    cr_assert_geq(kid, 0);
    int idx = kid == 0 ? 1 : 2;
    for (int i = 0; i < ROUNDS; i++) {
        metrics_add(m->slots[idx].requests, 1);
        metrics_add(m->slots[idx].bytes_in, 3);
        metrics_retire(m, (uint32_t)idx);
    }
    if (kid == 0)
        _exit(0);
    int status;
    cr_assert_eq(waitpid(kid, &status, 0), kid);
    cr_assert_eq(m->retired.requests, 2 * ROUNDS);
    cr_assert_eq(m->retired.bytes_in, 6 * ROUNDS);
    cr_assert_eq(m->seq % 2, 0);
    munmap(m, metrics_size(4));
    close(fd);
}
