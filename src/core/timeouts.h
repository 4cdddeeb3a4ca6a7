/*
 * Timeout lists: an intrusive list of waiting things, all with the same
 * timeout, in the order they entered it. A thing (re)entering a list goes
 * to its tail with the time it entered, so the list stays ordered by
 * deadline and a periodic sweep looks only at its head. One repeating
 * timer per owner sweeps all of the owner's lists (the HTTP engine's
 * connection states, the proxy's request states). Every operation is
 * O(1); a sweep costs one look per expired node plus one.
 */
#ifndef COHORT_TIMEOUTS_H
#define COHORT_TIMEOUTS_H

#include <stdint.h>
#include <uv.h>

#include "core/list.h"

struct tl_node {
    struct list_node link;
    uint64_t since; /* loop ms when it entered its list */
};

struct tl_list {
    struct list_node head;
    uint64_t timeout_ms;
};

static inline void tl_list_init(struct tl_list *l, uint64_t timeout_ms)
{
    list_init(&l->head);
    l->timeout_ms = timeout_ms;
}

static inline void tl_node_init(struct tl_node *n)
{
    list_init(&n->link);
}

/* Moves n to the tail of l (from any list, or none); its clock starts at
 * `now`. Also how progress restarts a clock: add to the same list. */
static inline void tl_add(struct tl_list *l, struct tl_node *n, uint64_t now)
{
    list_unlink(&n->link);
    n->since = now;
    list_append(&l->head, &n->link);
}

/* Takes n off its list (safe when it is on none). */
static inline void tl_remove(struct tl_node *n)
{
    list_unlink(&n->link);
}

/* The oldest node of l, NULL when it is empty. */
static inline struct tl_node *tl_first(const struct tl_list *l)
{
    return list_empty(&l->head) ? NULL : (struct tl_node *)l->head.next;
}

/*
 * Calls fn(node, arg) for each node of l whose timeout passed at `now`,
 * oldest first. fn moves the node to another list, off it, or to the tail
 * of this one with a new clock (a retry); one it left untouched at the
 * head is taken off, so a sweep always ends.
 */
static inline void tl_expire(struct tl_list *l, uint64_t now, void (*fn)(struct tl_node *n, void *arg), void *arg)
{
    struct tl_node *n;
    while ((n = tl_first(l)) && now - n->since >= l->timeout_ms) {
        uint64_t since = n->since;
        fn(n, arg);
        if (tl_first(l) == n && n->since == since)
            tl_remove(n);
    }
}

/* Starts the owner's sweep: a repeating timer every `every_ms`, with
 * t->data = owner, that never keeps the loop alive. */
static inline void tl_timer_start(uv_loop_t *loop, uv_timer_t *t, void *owner, uv_timer_cb sweep, uint64_t first_ms,
                                  uint64_t every_ms)
{
    uv_timer_init(loop, t);
    t->data = owner;
    uv_timer_start(t, sweep, first_ms, every_ms);
    uv_unref((uv_handle_t *)t);
}

#endif
