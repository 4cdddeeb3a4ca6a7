#include "core/summary.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

static struct {
    uv_timer_t timer;
    const struct metrics_shm *shm;
    struct metrics_slot last;
    uint64_t last_ns;
} sum;

/* Appends to buf at *n without overflowing; *n stays within len - 1. */
__attribute__((format(printf, 4, 5))) static void add(char *buf, size_t len, size_t *n, const char *fmt, ...)
{
    if (*n + 1 >= len)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *n, len - *n, fmt, ap);
    va_end(ap);
    if (k > 0)
        *n = *n + (size_t)k < len ? *n + (size_t)k : len - 1;
}

void summary_format(const struct metrics_slot *now, const struct metrics_slot *before, double seconds,
                    const struct metrics_slot *slots, uint32_t nslots, char *msg, size_t msglen,
                    char *fields, size_t fieldslen)
{
    uint64_t dreq = now->requests - before->requests, derr = now->status[5] - before->status[5];
    uint64_t d[METRICS_BUCKETS], count = 0;
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        d[i] = now->latency[i] - before->latency[i];
        count += d[i];
    }
    double avg_ms = count ? (double)(now->latency_us_sum - before->latency_us_sum) / (double)count / 1000.0 : 0;
    double p99_ms = metrics_percentile(d, 0.99) / 1000.0;
    uint64_t rss = 0;
    int workers = 0;
    size_t fn = 0, mn = 0;
    add(fields, fieldslen, &fn,
        "\"requests\":%llu,\"requests_delta\":%llu,\"errors\":%llu,\"errors_delta\":%llu,"
        "\"avg_ms\":%.3f,\"p99_ms\":%.3f,\"workers\":[",
        (unsigned long long)now->requests, (unsigned long long)dreq, (unsigned long long)now->status[5],
        (unsigned long long)derr, avg_ms, p99_ms);
    for (uint32_t i = 0; i < nslots; i++) {
        if (!slots[i].pid)
            continue;
        add(fields, fieldslen, &fn, "%s{\"id\":%llu,\"pid\":%llu,\"rss\":%llu}", workers ? "," : "",
            (unsigned long long)slots[i].worker_id, (unsigned long long)slots[i].pid,
            (unsigned long long)slots[i].rss);
        rss += slots[i].rss;
        workers++;
    }
    add(fields, fieldslen, &fn, "]");
    if (fn + 1 >= fieldslen) /* cut: keep it valid JSON rather than whole */
        snprintf(fields, fieldslen, "\"requests\":%llu,\"errors\":%llu", (unsigned long long)now->requests,
                 (unsigned long long)now->status[5]);
    add(msg, msglen, &mn, "stats: %llu requests (+%llu, %.1f/s), %llu errors (+%llu), avg %.3f ms, p99 %.3f ms, "
        "%d workers, rss", (unsigned long long)now->requests, (unsigned long long)dreq,
        seconds > 0 ? (double)dreq / seconds : 0, (unsigned long long)now->status[5], (unsigned long long)derr,
        avg_ms, p99_ms, workers);
    for (uint32_t i = 0, k = 0; i < nslots; i++)
        if (slots[i].pid)
            add(msg, msglen, &mn, "%s worker %llu %.1f MiB", k++ ? "," : "", (unsigned long long)slots[i].worker_id,
                (double)slots[i].rss / 1048576.0);
    add(msg, msglen, &mn, "; total %.1f MiB", (double)rss / 1048576.0);
}

static void tick(uv_timer_t *t)
{
    (void)t;
    const struct metrics_shm *m = sum.shm;
    uint32_t n = metrics_slots_used(m);
    struct metrics_slot total, *slots = calloc(n ? n : 1, sizeof(*slots));
    if (!slots)
        return;
    metrics_snapshot(m, &total, slots, n);
    for (uint32_t i = 0; i < n; i++)
        metrics_accumulate(&total, &slots[i]);
    uint64_t now = uv_hrtime();
    char msg[1024], fields[3072];
    summary_format(&total, &sum.last, (double)(now - sum.last_ns) / 1e9, slots, n, msg, sizeof(msg),
                   fields, sizeof(fields));
    log_fields(LOG_INFO, fields, "%s", msg);
    sum.last = total;
    sum.last_ns = now;
    free(slots);
}

void summary_start(uv_loop_t *loop, const struct metrics_shm *shm, int64_t interval_ms)
{
    if (interval_ms <= 0 || !shm)
        return;
    memset(&sum.last, 0, sizeof(sum.last));
    sum.shm = shm;
    sum.last_ns = uv_hrtime();
    uv_timer_init(loop, &sum.timer);
    uv_timer_start(&sum.timer, tick, (uint64_t)interval_ms, (uint64_t)interval_ms);
    uv_unref((uv_handle_t *)&sum.timer);
}
