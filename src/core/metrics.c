#include "core/metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

size_t metrics_size(uint32_t nslots)
{
    return sizeof(struct metrics_shm) + (size_t)nslots * sizeof(struct metrics_slot);
}

int metrics_create(uint32_t nslots, struct metrics_shm **out)
{
    int fd = memfd_create("cohort-metrics", MFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t size = metrics_size(nslots);
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) < 0 ||
        (p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
        int err = -errno;
        close(fd);
        return err;
    }
    *out = p;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    (*out)->magic = METRICS_MAGIC;
    (*out)->nslots = nslots;
    (*out)->slot_size = (uint32_t)sizeof(struct metrics_slot);
    (*out)->started_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    return fd;
}

int metrics_map(int fd, struct metrics_shm **out)
{
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < (off_t)sizeof(struct metrics_shm))
        return -EINVAL;
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    struct metrics_shm *m = p;
    if (m->magic != METRICS_MAGIC || m->slot_size != sizeof(struct metrics_slot) ||
        (size_t)size < metrics_size(m->nslots)) {
        munmap(p, (size_t)size);
        return -EINVAL;
    }
    *out = m;
    return 0;
}

/* Word ranges of a slot: counters are folded, counters and gauges summed. */
#define WORD(f) (offsetof(struct metrics_slot, f) / sizeof(uint64_t))
#define COUNT_FIRST WORD(requests)
#define GAUGE_FIRST WORD(conns_open)
#define SLOT_WORDS (sizeof(struct metrics_slot) / sizeof(uint64_t))

_Static_assert(sizeof(struct metrics_slot) % sizeof(uint64_t) == 0, "a slot is whole words");
_Static_assert(WORD(upstream) + sizeof(((struct metrics_slot *)0)->upstream) / (sizeof(uint64_t)) == GAUGE_FIRST,
               "counters end where gauges begin");

void metrics_fold(struct metrics_slot *into, struct metrics_slot *slot)
{
    uint64_t *dst = (uint64_t *)into, *src = (uint64_t *)slot;
    for (size_t i = COUNT_FIRST; i < GAUGE_FIRST; i++)
        metrics_add(dst[i], metrics_get(src[i]));
    for (size_t i = 0; i < SLOT_WORDS; i++)
        metrics_set(src[i], 0);
}

/* Readers copy under the sequence number: odd while a fold runs, and
 * different before and after a copy that a fold overlapped. Making it odd
 * is a compare-and-swap, so that two masters sharing the segment during an
 * upgrade (proc/upgrade.h) never fold at the same time. */
void metrics_retire(struct metrics_shm *m, uint32_t idx)
{
    if (idx >= m->nslots)
        return;
    uint64_t seq;
    for (;;) {
        seq = __atomic_load_n(&m->seq, __ATOMIC_ACQUIRE);
        if (!(seq & 1) && __atomic_compare_exchange_n(&m->seq, &seq, seq + 1, 0, __ATOMIC_ACQ_REL,
                                                      __ATOMIC_RELAXED))
            break;
        usleep(20);
    }
    __atomic_thread_fence(__ATOMIC_RELEASE);
    metrics_fold(&m->retired, &m->slots[idx]);
    __atomic_store_n(&m->seq, seq + 2, __ATOMIC_RELEASE);
}

void metrics_count_restart(struct metrics_shm *m, int worker_id)
{
    if (worker_id >= 0 && worker_id < METRICS_MAX_WORKERS)
        metrics_add(m->restarts[worker_id], 1);
}

static void copy_slot(struct metrics_slot *dst, const struct metrics_slot *src)
{
    const uint64_t *s = (const uint64_t *)src;
    uint64_t *d = (uint64_t *)dst;
    for (size_t i = 0; i < SLOT_WORDS; i++)
        d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
}

uint32_t metrics_slots_used(const struct metrics_shm *m)
{
    uint32_t n = __atomic_load_n(&m->used, __ATOMIC_ACQUIRE);
    return n < m->nslots ? n : m->nslots;
}

void metrics_mark_used(struct metrics_shm *m, uint32_t idx)
{
    uint32_t used = __atomic_load_n(&m->used, __ATOMIC_ACQUIRE);
    while (idx < m->nslots && idx + 1 > used &&
           !__atomic_compare_exchange_n(&m->used, &used, idx + 1, 0, __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
        ;
}

int metrics_claim(struct metrics_shm *m, uint32_t idx, uint64_t owner)
{
    uint64_t free_pid = 0;
    return idx < m->nslots && __atomic_compare_exchange_n(&m->slots[idx].pid, &free_pid, owner, 0,
                                                          __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)
               ? 0
               : -EBUSY;
}

void metrics_snapshot(const struct metrics_shm *m, struct metrics_slot *retired, struct metrics_slot *slots,
                      uint32_t n)
{
    for (;;) {
        uint64_t before = __atomic_load_n(&m->seq, __ATOMIC_ACQUIRE);
        if (!(before & 1)) {
            copy_slot(retired, &m->retired);
            for (uint32_t i = 0; i < n; i++)
                copy_slot(&slots[i], &m->slots[i]);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&m->seq, __ATOMIC_RELAXED) == before)
                return;
        }
        usleep(20); /* a fold takes microseconds */
    }
}

void metrics_accumulate(struct metrics_slot *total, const struct metrics_slot *s)
{
    uint64_t *d = (uint64_t *)total;
    const uint64_t *src = (const uint64_t *)s;
    for (size_t i = COUNT_FIRST; i < SLOT_WORDS; i++)
        d[i] += src[i];
}

int metrics_sum(const struct metrics_shm *m, struct metrics_slot *total)
{
    uint32_t n = metrics_slots_used(m);
    struct metrics_slot *slots = calloc(n ? n : 1, sizeof(*slots));
    memset(total, 0, sizeof(*total));
    if (!slots)
        return -ENOMEM;
    metrics_snapshot(m, total, slots, n);
    for (uint32_t i = 0; i < n; i++)
        metrics_accumulate(total, &slots[i]);
    free(slots);
    return 0;
}

/* --- histogram --------------------------------------------------------- */

uint64_t metrics_bucket_bound(int i)
{
    if (i < 0)
        return 0;
    if (i >= METRICS_BUCKETS - 1)
        return UINT64_MAX;
    /* even: 2^(3 + i/2); odd: 1.5 * 2^(3 + i/2) */
    uint64_t p = 1ull << (3 + i / 2);
    return (i & 1) ? p + p / 2 : p;
}

double metrics_percentile(const uint64_t *buckets, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < METRICS_BUCKETS; i++)
        total += buckets[i];
    if (total == 0)
        return 0;
    if (q <= 0)
        q = 0;
    if (q > 1)
        q = 1;
    double rank = q * (double)total, seen = 0;
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        if (buckets[i] == 0 || seen + (double)buckets[i] < rank) {
            seen += (double)buckets[i];
            continue;
        }
        double lo = i == 0 ? 0 : (double)metrics_bucket_bound(i - 1);
        if (i == METRICS_BUCKETS - 1)
            return lo;
        double hi = (double)metrics_bucket_bound(i);
        return lo + (hi - lo) * ((rank - seen) / (double)buckets[i]);
    }
    return (double)metrics_bucket_bound(METRICS_BUCKETS - 2);
}
