/*
 * Counters in shared memory: one slot per worker process, written only by
 * that worker, read by the master and by any worker that reports them. The
 * segment is created by the master before workers start and handed to each
 * worker as a file descriptor. No lock: every field is a naturally aligned
 * 64-bit word written with relaxed atomic stores by its single writer.
 *
 * When a worker exits the master folds its slot into `retired`, so totals
 * never go backwards.
 */
#ifndef COHORT_METRICS_H
#define COHORT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAGIC 0x63686f72u

struct metrics_slot {
    uint64_t pid;          /* 0 when the slot is free */
    uint64_t started_ms;   /* wall clock */
    /* counters: only ever grow; folded into `retired` when a worker exits */
    uint64_t requests;
    uint64_t status[6];    /* by class: [1] 1xx .. [5] 5xx, [0] other */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t conns_total;
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t redis_commands;
    uint64_t redis_errors;
    uint64_t redis_reconnects;
    /* gauges: the worker's state now */
    uint64_t conns_open;
    uint64_t inflight;
    uint64_t rss;
    uint64_t redis_up;     /* 1 while the worker's Redis connection is up */
};

struct metrics_shm {
    uint32_t magic;
    uint32_t nslots;
    uint64_t pad[7];
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
/* Adds a slot's counters into `into` (the retired totals) and clears it. */
void metrics_fold(struct metrics_slot *into, struct metrics_slot *slot);
/* Sums every slot and the retired totals. */
void metrics_sum(const struct metrics_shm *m, struct metrics_slot *total);

#endif
