/*
 * A free list: up to FREELIST_MAX blocks of one kind kept for reuse
 * instead of going back to malloc, so that a steady load allocates
 * nothing per request. The caller decides which blocks are worth keeping
 * (those of the usual size) and passes the size of a new one.
 */
#ifndef COHORT_FREELIST_H
#define COHORT_FREELIST_H

#include <stddef.h>
#include <stdlib.h>

#define FREELIST_MAX 64

struct freelist {
    void *item[FREELIST_MAX];
    int n;
};

/* A kept block, or a new one of `size` bytes; NULL when memory runs out. */
static inline void *freelist_get(struct freelist *f, size_t size)
{
    return f->n ? f->item[--f->n] : malloc(size);
}

/* Keeps p for reuse, or frees it when the list is full. Returns 1 when
 * kept, 0 when freed (memory went back: a caller may trim). */
static inline int freelist_put(struct freelist *f, void *p)
{
    if (f->n < FREELIST_MAX) {
        f->item[f->n++] = p;
        return 1;
    }
    free(p);
    return 0;
}

/* Frees every kept block. */
static inline void freelist_clear(struct freelist *f)
{
    while (f->n)
        free(f->item[--f->n]);
}

#endif
