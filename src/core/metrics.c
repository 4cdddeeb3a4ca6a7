#include "core/metrics.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
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
    if (ftruncate(fd, (off_t)metrics_size(nslots)) < 0 || metrics_map(fd, out) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    (*out)->magic = METRICS_MAGIC;
    (*out)->nslots = nslots;
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
    *out = p;
    return 0;
}

/* The counting fields of a slot, in order; pid and started_ms are not summed. */
#define COUNT_FIRST offsetof(struct metrics_slot, requests)
#define COUNT_LAST offsetof(struct metrics_slot, redis_reconnects)

void metrics_fold(struct metrics_slot *into, struct metrics_slot *slot)
{
    uint64_t *dst = (uint64_t *)into, *src = (uint64_t *)slot;
    for (size_t off = COUNT_FIRST; off <= COUNT_LAST; off += sizeof(uint64_t)) {
        size_t i = off / sizeof(uint64_t);
        metrics_add(dst[i], metrics_get(src[i]));
    }
    memset(slot, 0, sizeof(*slot));
}

void metrics_sum(const struct metrics_shm *m, struct metrics_slot *total)
{
    memset(total, 0, sizeof(*total));
    for (uint32_t s = 0; s <= m->nslots; s++) {
        const uint64_t *src = (const uint64_t *)(s == 0 ? &m->retired : &m->slots[s - 1]);
        uint64_t *dst = (uint64_t *)total;
        for (size_t i = 0; i < sizeof(*total) / sizeof(uint64_t); i++)
            dst[i] += __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    }
}
