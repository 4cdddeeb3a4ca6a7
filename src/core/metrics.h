/*
 * Counters in shared memory: one slot per worker process, written only by
 * that worker, read by the master and by any worker that reports them. The
 * segment is created by the master before workers start and handed to each
 * worker as a file descriptor. No lock on the hot path: every field is a
 * naturally aligned 64-bit word written with relaxed atomic stores by its
 * single writer.
 *
 * A slot holds identity words (pid, start time, worker id), then counters
 * (only ever grow), then gauges (the worker's state now). When a worker
 * exits the master folds the counters of its slot into `retired` and clears
 * the slot (metrics_retire), so totals never go backwards. The fold is
 * guarded by a sequence number in the header: a reader that copies the
 * segment with metrics_snapshot() never sees a fold half done, so a sum is
 * never counted twice nor missing a slot.
 *
 * The header also holds what the master owns: restarts by worker id and the
 * state of upstream servers (names and health; written by the balancer).
 */
#ifndef COHORT_METRICS_H
#define COHORT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAGIC 0x63686f72u

/* Route slots: [0] no route matched (404, 405, 501, malformed requests),
 * [1 + route index] for the first routes in the router's add order, and
 * the last slot for any route past those. */
#define METRICS_ROUTES 32
#define METRICS_ROUTE_NONE 0
#define METRICS_ROUTE_OTHER (METRICS_ROUTES - 1)
#define METRICS_CLASSES 6      /* [1] 1xx .. [5] 5xx, [0] other */
#define METRICS_BUCKETS 44     /* latency: 43 finite bounds and +Inf */
#define METRICS_UPSTREAMS 64    /* upstream servers, all groups together (src/proxy) */
#define METRICS_MAX_WORKERS 64 /* worker ids, as config's workers bound */
#define METRICS_NAME_LEN 64

/* Per worker, per upstream server (the same index as the header's). */
struct metrics_upstream_counts {
    uint64_t requests;
    uint64_t failures;       /* connect errors, timeouts, bad responses */
    uint64_t latency_us_sum; /* of the requests that got a response */
    uint64_t responses;
};

struct metrics_slot {
    /* identity, set by the worker when it starts */
    uint64_t pid;          /* 0 when the slot is free */
    uint64_t started_ms;   /* wall clock */
    uint64_t worker_id;
    /* counters: only ever grow; folded into `retired` when a worker exits */
    uint64_t requests;
    uint64_t status[METRICS_CLASSES];
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t conns_total;
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t redis_commands;
    uint64_t redis_errors;
    uint64_t redis_reconnects;
    uint64_t latency_us_sum;
    uint64_t latency[METRICS_BUCKETS];
    uint64_t routes[METRICS_ROUTES][METRICS_CLASSES];
    struct metrics_upstream_counts upstream[METRICS_UPSTREAMS];
    /* gauges: the worker's state now */
    uint64_t conns_open;
    uint64_t inflight;
    uint64_t rss;
    uint64_t redis_up;        /* 1 while the worker's Redis connection is up */
    uint64_t loop_lag_max_us; /* event-loop lag over the last whole second */
    uint64_t loop_lag_avg_us;
    uint64_t upstream_inflight[METRICS_UPSTREAMS]; /* requests in flight to each upstream server */
};

/* Written by the master (health checks); workers read. */
struct metrics_upstream_state {
    char name[METRICS_NAME_LEN]; /* "host:port"; empty: unused */
    uint64_t up;                 /* 1 healthy, 0 down */
    /* the balancer's view (src/proxy/health.c) */
    char group[METRICS_NAME_LEN];  /* the upstream group */
    uint64_t state;              /* METRICS_UP_*: up, down (checks), ejected, warming (slow start) */
    uint64_t ejections;          /* times ejected since the master started */
    uint64_t weight;
    uint64_t backup;             /* 1 for a backup server */
};

enum { METRICS_UP_UP, METRICS_UP_DOWN, METRICS_UP_EJECTED, METRICS_UP_WARMING };

struct metrics_shm {
    uint32_t magic;
    uint32_t nslots;     /* capacity: slots the segment has room for */
    uint64_t seq;        /* odd while the master folds a slot */
    uint64_t started_ms; /* when the master created the segment */
    uint32_t used;       /* slots ever handed out (the master hands out the
                          * lowest free one): readers look at no more, so
                          * untouched slots never cost a page of RSS */
    uint32_t slot_size;  /* sizeof(struct metrics_slot) of the creator: a
                          * worker from another build refuses a foreign layout */
    uint64_t restarts[METRICS_MAX_WORKERS]; /* by worker id */
    struct metrics_upstream_state upstream[METRICS_UPSTREAMS];
    struct metrics_slot retired;
    struct metrics_slot slots[];
};

/* Single-writer counter update: no read-modify-write lock is needed. */
#define metrics_add(field, n) \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define metrics_set(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define metrics_get(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* Creates a segment for nslots worker slots; returns its fd or -errno. */
int metrics_create(uint32_t nslots, struct metrics_shm **out);
/* Maps a segment received from the master; returns 0 or -errno. */
int metrics_map(int fd, struct metrics_shm **out);
size_t metrics_size(uint32_t nslots);

/* Adds a slot's counters into `into` and clears the slot. No guard: the
 * caller makes sure nobody reads (see metrics_retire). */
void metrics_fold(struct metrics_slot *into, struct metrics_slot *slot);
/* The master, when the worker of slot `idx` has exited: folds it into the
 * retired totals under the segment's sequence number. */
void metrics_retire(struct metrics_shm *m, uint32_t idx);
/* The master, when it restarts the worker with this id. */
void metrics_count_restart(struct metrics_shm *m, int worker_id);

/*
 * Copies the retired totals and every slot, consistently with respect to
 * folds (retries while one runs). `slots` has room for m->nslots entries.
 */
void metrics_snapshot(const struct metrics_shm *m, struct metrics_slot *retired, struct metrics_slot *slots,
                      uint32_t n);
/* How many slots readers look at (see `used`); read once, then pass it on. */
uint32_t metrics_slots_used(const struct metrics_shm *m);
/* The master, when it hands out slot idx. */
void metrics_mark_used(struct metrics_shm *m, uint32_t idx);
/* Takes slot idx for `owner` (a pid) when its pid word is 0: 0, or -EBUSY.
 * Atomic, so two masters sharing the segment never take the same slot. */
int metrics_claim(struct metrics_shm *m, uint32_t idx, uint64_t owner);
/* Adds the counters and gauges of `s` into `total` (identity words are
 * left alone). */
void metrics_accumulate(struct metrics_slot *total, const struct metrics_slot *s);
/* Snapshot and sum: retired totals plus every slot. 0 or -ENOMEM. */
int metrics_sum(const struct metrics_shm *m, struct metrics_slot *total);

/* --- latency histogram --------------------------------------------------
 * Log-spaced buckets, two per octave: upper bounds 8, 12, 16, 24, 32, 48,
 * ... 2^24 µs (16.8 s), then +Inf. A value lands in the first bucket whose
 * bound is >= the value ("le"). */

/* Upper bound of bucket i in µs; UINT64_MAX for the last (+Inf). */
uint64_t metrics_bucket_bound(int i);

/* Bucket of a duration in µs: a few instructions, no loop. */
static inline int metrics_bucket(uint64_t us)
{
    if (us <= 8)
        return 0;
    uint64_t u = us - 1;
    int msb = 63 - __builtin_clzll(u);
    int i = 2 * (msb - 3) + 1 + (int)((u >> (msb - 1)) & 1);
    return i < METRICS_BUCKETS - 1 ? i : METRICS_BUCKETS - 1;
}

/*
 * The q-quantile (0 < q <= 1) of a histogram in µs, interpolating linearly
 * within the bucket it falls in (the +Inf bucket answers its lower bound).
 * 0 when the histogram is empty.
 */
double metrics_percentile(const uint64_t *buckets, double q);

/* Records one finished request: counts, status class, route, latency. */
static inline void metrics_request(struct metrics_slot *s, unsigned route, int status, uint64_t us)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 0;
    if (route >= METRICS_ROUTES)
        route = METRICS_ROUTE_OTHER;
    metrics_add(s->requests, 1);
    metrics_add(s->status[cls], 1);
    metrics_add(s->routes[route][cls], 1);
    metrics_add(s->latency[metrics_bucket(us)], 1);
    metrics_add(s->latency_us_sum, us);
}

#endif
