/*
 * Intrusive doubly linked list with a sentinel head. The element embeds a
 * struct list_node; list_entry() gets back to the element. Every operation
 * is O(1); an unlinked node points to itself so unlinking twice is safe.
 */
#ifndef COHORT_LIST_H
#define COHORT_LIST_H

#include <stddef.h>

struct list_node {
    struct list_node *prev, *next;
};

#define list_entry(node, type, member) ((type *)((char *)(node) - offsetof(type, member)))

static inline void list_init(struct list_node *n)
{
    n->prev = n->next = n;
}

static inline int list_empty(const struct list_node *head)
{
    return head->next == head;
}

static inline void list_unlink(struct list_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* Appends at the tail: lists ordered by time stay ordered. */
static inline void list_append(struct list_node *head, struct list_node *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

/* Moves every node of src, in order, to dst (initialised here); src is left
 * empty. For handing a list to callbacks that may add to src again. */
static inline void list_take_all(struct list_node *dst, struct list_node *src)
{
    list_init(dst);
    if (list_empty(src))
        return;
    dst->next = src->next;
    dst->prev = src->prev;
    dst->next->prev = dst->prev->next = dst;
    list_init(src);
}

#endif
