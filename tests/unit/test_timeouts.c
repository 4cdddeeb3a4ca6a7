/* The shared timeout lists and free lists (core/timeouts.h, core/freelist.h)
 * that the HTTP engine and the proxy sweep and reuse memory with. */
#include <criterion/criterion.h>
#include <stdint.h>

#include "core/freelist.h"
#include "core/timeouts.h"

struct item {
    int id;
    struct tl_node tn;
};

struct sweep {
    struct tl_list *l, *other;
    int seen[8], nseen;
    int mode; /* 0: move to other, 1: back on l with the clock at `now`, 2: leave it */
    uint64_t now;
};

static void on_expire(struct tl_node *n, void *arg)
{
    struct sweep *s = arg;
    struct item *it = list_entry(n, struct item, tn);
    s->seen[s->nseen++] = it->id;
    if (s->mode == 0)
        tl_add(s->other, n, s->now);
    else if (s->mode == 1)
        tl_add(s->l, n, s->now);
}

static int ids(const struct tl_list *l, int *out, int max)
{
    int k = 0;
    for (const struct list_node *p = l->head.next; p != &l->head && k < max; p = p->next)
        out[k++] = list_entry(p, struct item, tn.link)->id;
    return k;
}

Test(timeouts, expires_oldest_first_and_only_the_expired)
{
    struct tl_list l, other;
    tl_list_init(&l, 100);
    tl_list_init(&other, 1000);
    struct item it[4];
    for (int i = 0; i < 4; i++) {
        it[i].id = i;
        tl_node_init(&it[i].tn);
        tl_add(&l, &it[i].tn, (uint64_t)(10 * i)); /* entered at 0, 10, 20, 30 */
    }
    tl_add(&l, &it[0].tn, 25); /* progress: 0 goes to the tail with a new clock */
    struct sweep s = {.l = &l, .other = &other, .mode = 0, .now = 121};
    tl_expire(&l, 121, on_expire, &s); /* 1 (10) and 2 (20) are due; 0 (25) and 3 (30) not */
    cr_assert_eq(s.nseen, 2);
    cr_expect_eq(s.seen[0], 1);
    cr_expect_eq(s.seen[1], 2);
    int left[4], n = ids(&l, left, 4);
    cr_assert_eq(n, 2);
    cr_expect_eq(left[0], 3, "in the order they entered");
    cr_expect_eq(left[1], 0);
    cr_expect_eq(ids(&other, left, 4), 2);
    tl_remove(&it[3].tn);
    tl_remove(&it[3].tn); /* twice is safe */
    cr_expect_eq(ids(&l, left, 4), 1);
}

Test(timeouts, a_node_put_back_with_a_new_clock_stays)
{
    struct tl_list l;
    tl_list_init(&l, 100);
    struct item a = {.id = 7};
    tl_node_init(&a.tn);
    tl_add(&l, &a.tn, 0);
    struct sweep s = {.l = &l, .mode = 1, .now = 150};
    tl_expire(&l, 150, on_expire, &s);
    cr_expect_eq(s.nseen, 1, "called once: its new clock is not due");
    cr_expect_eq(tl_first(&l), &a.tn, "a retry keeps its timeout");
    cr_expect_eq(a.tn.since, 150);
}

Test(timeouts, a_node_left_untouched_is_taken_off)
{
    struct tl_list l;
    tl_list_init(&l, 100);
    struct item a = {.id = 1}, b = {.id = 2};
    tl_node_init(&a.tn);
    tl_node_init(&b.tn);
    tl_add(&l, &a.tn, 0);
    tl_add(&l, &b.tn, 5);
    struct sweep s = {.l = &l, .mode = 2};
    tl_expire(&l, 500, on_expire, &s);
    cr_expect_eq(s.nseen, 2, "the sweep ends and reaches the next node");
    cr_expect_null(tl_first(&l));
}

Test(freelist, keeps_up_to_its_max_then_frees)
{
    struct freelist f = {0};
    void *blocks[FREELIST_MAX + 3];
    for (int i = 0; i < FREELIST_MAX + 3; i++)
        cr_assert_not_null(blocks[i] = freelist_get(&f, 64));
    int kept = 0;
    for (int i = 0; i < FREELIST_MAX + 3; i++)
        kept += freelist_put(&f, blocks[i]);
    cr_expect_eq(kept, FREELIST_MAX);
    cr_expect_eq(f.n, FREELIST_MAX);
    void *again = freelist_get(&f, 64);
    cr_expect_eq(again, blocks[FREELIST_MAX - 1], "the last kept block comes back first");
    cr_expect_eq(freelist_put(&f, again), 1);
    freelist_clear(&f);
    cr_expect_eq(f.n, 0);
}
