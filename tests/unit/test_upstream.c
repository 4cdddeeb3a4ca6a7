/*
 * Unit tests for src/proxy/upstream.c: every algorithm's distribution by
 * weight over 10,000 picks (each server's share within 2 percentage points
 * of its weight's share), nginx's smooth round robin order, least_conn and
 * p2c steering by requests in flight, the consistent-hash ring (stable,
 * balanced, and moving at most 1.2/N of 10,000 keys when one of N servers
 * is added or removed), backups, max_conns, servers already tried, slow
 * start, retry safety, the retry budget and passive ejection.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "proxy/upstream.h"

#define PICKS 10000
#define MAXS 16

static struct cfg_upstream cfg;
static struct cfg_upstream_server cs[MAXS];
static char names[MAXS][32];

/* A group of n servers 10.0.0.1:80, 10.0.0.2:80, ... with these weights. */
static void make(struct up_group *g, enum cfg_lb alg, size_t n, const int *weights)
{
    memset(&cfg, 0, sizeof(cfg));
    memset(cs, 0, sizeof(cs));
    cfg.name = "test";
    cfg.algorithm = (int)alg;
    cfg.servers = cs;
    cfg.nservers = n;
    cfg.passive.ejection_time_ms = 1000;
    cfg.passive.max_ejection_time_ms = 5000;
    cfg.passive.max_ejected_percent = 50;
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "10.0.0.%zu:80", i + 1);
        cs[i].address = names[i];
        cs[i].weight = weights ? weights[i] : 1;
    }
    cr_assert_eq(up_group_init(g, &cfg), 0);
    up_group_seed(g, 12345);
}

static int pick(struct up_group *g, const char *key)
{
    struct up_pick p = {.now_ms = 1000000, .key = key, .key_len = key ? strlen(key) : 0};
    return up_pick(g, &p);
}

static void expect_shares(const char *what, const int *counts, const int *weights, size_t n, int total)
{
    int wsum = 0;
    for (size_t i = 0; i < n; i++)
        wsum += weights[i];
    for (size_t i = 0; i < n; i++) {
        double share = (double)counts[i] / total, want = (double)weights[i] / wsum;
        cr_expect(share > want - 0.02 && share < want + 0.02, "%s: server %zu has %.4f of the picks, its weight %.4f",
                  what, i, share, want);
    }
}

static const int weights[] = {1, 2, 3, 4, 10};
#define NW (sizeof(weights) / sizeof(weights[0]))

/* Requests that end at once: every pick sees nothing in flight. */
static void distribution(enum cfg_lb alg, const char *what)
{
    struct up_group g;
    int counts[MAXS] = {0};
    make(&g, alg, NW, weights);
    for (int i = 0; i < PICKS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "client-%d", i);
        int s = pick(&g, alg == CFG_LB_HASH ? key : NULL);
        cr_assert(s >= 0 && s < (int)NW);
        counts[s]++;
    }
    expect_shares(what, counts, weights, NW, PICKS);
    up_group_free(&g);
}

Test(upstream, distribution_round_robin) { distribution(CFG_LB_ROUND_ROBIN, "round_robin"); }
Test(upstream, distribution_least_conn) { distribution(CFG_LB_LEAST_CONN, "least_conn"); }
Test(upstream, distribution_random) { distribution(CFG_LB_RANDOM, "random"); }
Test(upstream, distribution_p2c) { distribution(CFG_LB_P2C, "p2c"); }
Test(upstream, distribution_hash) { distribution(CFG_LB_HASH, "hash"); }

/* Requests that stay in flight for a while: least_conn and p2c still share
 * by weight when servers are equally fast. */
static void distribution_under_load(enum cfg_lb alg, const char *what)
{
    struct up_group g;
    int counts[MAXS] = {0}, ring[64];
    make(&g, alg, NW, weights);
    for (int i = 0; i < 64; i++) { /* 64 requests in flight */
        ring[i] = pick(&g, NULL);
        g.servers[ring[i]].inflight++;
    }
    for (int i = 0; i < PICKS; i++) {
        g.servers[ring[i % 64]].inflight--; /* the oldest finishes */
        int s = pick(&g, NULL);
        cr_assert(s >= 0);
        g.servers[s].inflight++;
        ring[i % 64] = s;
        counts[s]++;
    }
    expect_shares(what, counts, weights, NW, PICKS);
    up_group_free(&g);
}

Test(upstream, distribution_least_conn_in_flight) { distribution_under_load(CFG_LB_LEAST_CONN, "least_conn"); }
Test(upstream, distribution_round_robin_in_flight) { distribution_under_load(CFG_LB_ROUND_ROBIN, "round_robin"); }

Test(upstream, smooth_round_robin_is_nginx_order)
{
    static const int w[] = {5, 1, 1};
    static const int want[] = {0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0}; /* a a b a c a a, twice */
    struct up_group g;
    make(&g, CFG_LB_ROUND_ROBIN, 3, w);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_assert_eq(pick(&g, NULL), want[i], "pick %zu", i);
    up_group_free(&g);
}

Test(upstream, least_conn_takes_the_least_loaded)
{
    struct up_group g;
    make(&g, CFG_LB_LEAST_CONN, 3, NULL);
    g.servers[0].inflight = 5;
    g.servers[1].inflight = 1;
    g.servers[2].inflight = 3;
    for (int i = 0; i < 10; i++)
        cr_assert_eq(pick(&g, NULL), 1);
    up_group_free(&g);
    /* relative to weight: 4 in flight at weight 4 beats 2 at weight 1 */
    static const int w[] = {1, 4};
    make(&g, CFG_LB_LEAST_CONN, 2, w);
    g.servers[0].inflight = 2;
    g.servers[1].inflight = 4;
    cr_assert_eq(pick(&g, NULL), 1);
    up_group_free(&g);
}

Test(upstream, p2c_never_takes_the_most_loaded_of_two)
{
    struct up_group g;
    make(&g, CFG_LB_P2C, 2, NULL);
    g.servers[0].inflight = 10;
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(pick(&g, NULL), 1);
    up_group_free(&g);
    /* of many, the heaviest is picked only when drawn twice: never with two draws of distinct servers */
    make(&g, CFG_LB_P2C, 4, NULL);
    g.servers[2].inflight = 100;
    for (int i = 0; i < 1000; i++)
        cr_assert_neq(pick(&g, NULL), 2);
    up_group_free(&g);
}

/* Keys that map to a different server between two groups. */
static int moved(struct up_group *a, struct up_group *b, int n_keys)
{
    int m = 0;
    for (int i = 0; i < n_keys; i++) {
        char key[32];
        snprintf(key, sizeof(key), "user-%d", i);
        int sa = pick(a, key), sb = pick(b, key);
        if (strcmp(a->servers[sa].name, b->servers[sb].name) != 0)
            m++;
    }
    return m;
}

Test(upstream, hash_moves_at_most_1_2_over_n_keys)
{
    for (size_t n = 3; n <= 12; n += 3) {
        struct up_group small, big;
        make(&big, CFG_LB_HASH, n + 1, NULL);
        static struct cfg_upstream cfg2;
        cfg2 = cfg;
        cfg2.nservers = n;           /* the same servers but the last */
        cr_assert_eq(up_group_init(&small, &cfg2), 0);
        int m = moved(&small, &big, PICKS);
        /* adding one to n: about 1/(n+1) of the keys go to the new one */
        cr_expect(m <= 1.2 * PICKS / (double)(n + 1), "adding one to %zu servers moved %d of %d keys", n, m, PICKS);
        cr_expect(m > 0.5 * PICKS / (double)(n + 1), "the new server got only %d keys", m);
        /* removing one of n + 1: only its keys move */
        cr_expect(m <= 1.2 * PICKS / (double)(n + 1), "removing one of %zu servers moved %d", n + 1, m);
        up_group_free(&small);
        up_group_free(&big);
    }
    /* removing one from the middle of 10: only that server's keys move */
    struct up_group all, less;
    make(&all, CFG_LB_HASH, 10, NULL);
    static struct cfg_upstream cfg3;
    static struct cfg_upstream_server cs3[10];
    cfg3 = cfg;
    for (int i = 0, k = 0; i < 10; i++)
        if (i != 4)
            cs3[k++] = cs[i];
    cfg3.servers = cs3;
    cfg3.nservers = 9;
    cr_assert_eq(up_group_init(&less, &cfg3), 0);
    int m = 0, owned = 0;
    for (int i = 0; i < PICKS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "user-%d", i);
        int sa = pick(&all, key), sb = pick(&less, key);
        owned += sa == 4;
        if (strcmp(all.servers[sa].name, less.servers[sb].name) != 0) {
            m++;
            cr_assert_eq(sa, 4, "key %s moved from a server that stayed", key);
        }
    }
    cr_expect_eq(m, owned);
    cr_expect(m <= 1.2 * PICKS / 10.0, "removing one of 10 moved %d keys", m);
    up_group_free(&all);
    up_group_free(&less);
}

Test(upstream, hash_is_sticky_and_skips_unusable_servers)
{
    struct up_group g;
    make(&g, CFG_LB_HASH, 4, NULL);
    int s = pick(&g, "session-abc");
    for (int i = 0; i < 100; i++)
        cr_assert_eq(pick(&g, "session-abc"), s);
    g.servers[s].flags = UP_F_DOWN;
    int other = pick(&g, "session-abc");
    cr_assert(other >= 0 && other != s);
    cr_assert_eq(pick(&g, "session-abc"), other, "the detour is stable too");
    g.servers[s].flags = 0;
    cr_assert_eq(pick(&g, "session-abc"), s, "and the key comes home");
    /* no key: round robin over all of them */
    int seen[4] = {0};
    for (int i = 0; i < 8; i++)
        seen[pick(&g, NULL)]++;
    for (int i = 0; i < 4; i++)
        cr_expect_eq(seen[i], 2);
    up_group_free(&g);
}

Test(upstream, unusable_servers_backups_and_max_conns)
{
    struct up_group g;
    make(&g, CFG_LB_ROUND_ROBIN, 3, NULL);
    cs[2].backup = 1;
    up_group_free(&g);
    cr_assert_eq(up_group_init(&g, &cfg), 0);
    for (int i = 0; i < 20; i++)
        cr_assert_neq(pick(&g, NULL), 2, "a backup waits while primaries can serve");
    g.servers[0].flags = UP_F_DOWN;
    for (int i = 0; i < 10; i++)
        cr_assert_eq(pick(&g, NULL), 1);
    g.servers[1].flags = UP_F_EJECTED;
    cr_assert_eq(pick(&g, NULL), 2, "the backup steps in");
    g.servers[2].flags = UP_F_DOWN;
    cr_assert_eq(pick(&g, NULL), -ENOENT);
    /* max_conns: a full server is passed over; all full is -EBUSY */
    for (int i = 0; i < 3; i++)
        g.servers[i].flags = 0;
    g.servers[0].max_conns = 1;
    g.servers[0].inflight = 1;
    for (int i = 0; i < 10; i++)
        cr_assert_eq(pick(&g, NULL), 1);
    g.servers[1].max_conns = 2;
    g.servers[1].inflight = 2;
    cr_assert_eq(pick(&g, NULL), 2, "both primaries full: the backup");
    g.servers[2].max_conns = 1;
    g.servers[2].inflight = 1;
    struct up_pick p = {.now_ms = 1};
    cr_assert_eq(up_pick(&g, &p), -EBUSY);
    cr_assert_eq(p.full, 3);
    up_group_free(&g);
}

Test(upstream, tried_servers_are_skipped)
{
    struct up_group g;
    make(&g, CFG_LB_HASH, 3, NULL);
    int first = pick(&g, "k");
    int tried[2] = {first, -1};
    struct up_pick p = {.now_ms = 1, .key = "k", .key_len = 1, .tried = tried, .ntried = 1};
    int second = up_pick(&g, &p);
    cr_assert(second >= 0 && second != first);
    tried[1] = second;
    p.ntried = 2;
    int third = up_pick(&g, &p);
    cr_assert(third >= 0 && third != first && third != second);
    int all[3] = {0, 1, 2};
    p.tried = all;
    p.ntried = 3;
    cr_assert_eq(up_pick(&g, &p), -ENOENT);
    up_group_free(&g);
}

Test(upstream, slow_start_ramps_the_weight)
{
    struct up_group g;
    make(&g, CFG_LB_ROUND_ROBIN, 2, NULL);
    cfg.slow_start_ms = 10000;
    g.servers[1].since_ms = 1000000 - 2500; /* back for a quarter of the ramp */
    int64_t w = up_weight(&g, &g.servers[1], 1000000);
    cr_assert_eq(w, 250, "a quarter of the weight: %lld", (long long)w);
    cr_assert_eq(up_weight(&g, &g.servers[0], 1000000), 1000);
    cr_assert_eq(up_weight(&g, &g.servers[1], 1000000 + 7500), 1000, "ramp over");
    cr_assert_eq(up_weight(&g, &g.servers[1], 1000000 - 2500), 1, "never zero while usable");
    int counts[2] = {0};
    for (int i = 0; i < PICKS; i++)
        counts[pick(&g, NULL)]++;
    static const int w2[] = {4, 1};
    expect_shares("slow start", counts, w2, 2, PICKS);
    g.servers[1].flags = UP_F_EJECTED;
    cr_assert_eq(up_weight(&g, &g.servers[1], 1000000), 0);
    up_group_free(&g);
}

Test(upstream, find_and_addresses)
{
    struct up_group g;
    make(&g, CFG_LB_ROUND_ROBIN, 2, NULL);
    cr_assert_eq(up_find(&g, "10.0.0.2:80"), 1);
    cr_assert_eq(up_find(&g, "10.0.0.9:80"), -1);
    const struct sockaddr_in *a = (const struct sockaddr_in *)&g.servers[1].addr;
    cr_assert_eq(a->sin_family, AF_INET);
    cr_assert_eq(ntohs(a->sin_port), 80);
    up_group_free(&g);
    cs[0].address = "[::1]:8080";
    cfg.nservers = 1;
    cr_assert_eq(up_group_init(&g, &cfg), 0);
    cr_assert_eq(g.servers[0].addr.ss_family, AF_INET6);
    up_group_free(&g);
    cs[0].address = "localhost:80"; /* the config loader resolves names first */
    cr_assert_eq(up_group_init(&g, &cfg), -EINVAL);
}

Test(upstream, retry_safety)
{
    /* nothing sent: any method */
    cr_assert(up_retry_safe(UP_FAIL_REFUSED, HTTP_POST, 0, 0));
    cr_assert(up_retry_safe(UP_FAIL_CONNECT_TIMEOUT, HTTP_PATCH, 0, 0));
    cr_assert(up_retry_safe(UP_FAIL_RESET, HTTP_POST, 0, 0));
    /* sent: idempotent methods only, and only with the body still to send */
    cr_assert(up_retry_safe(UP_FAIL_RESET, HTTP_GET, 1, 0));
    cr_assert(up_retry_safe(UP_FAIL_RESET, HTTP_HEAD, 1, 0));
    cr_assert(up_retry_safe(UP_FAIL_RESET, HTTP_PUT, 1, 0));
    cr_assert(up_retry_safe(UP_FAIL_RESET, HTTP_DELETE, 1, 0));
    cr_assert(up_retry_safe(UP_FAIL_RESET, HTTP_OPTIONS, 1, 0));
    cr_assert(!up_retry_safe(UP_FAIL_RESET, HTTP_POST, 1, 0));
    cr_assert(!up_retry_safe(UP_FAIL_RESET, HTTP_PATCH, 1, 0));
    cr_assert(!up_retry_safe(UP_FAIL_RESET, HTTP_OTHER, 1, 0));
    cr_assert(!up_retry_safe(UP_FAIL_RESET, HTTP_PUT, 1, 1), "the body is gone");
    /* after the request was answered in part, or timed out: never */
    cr_assert(!up_retry_safe(UP_FAIL_TIMEOUT, HTTP_GET, 1, 0));
    cr_assert(!up_retry_safe(UP_FAIL_BAD_RESPONSE, HTTP_GET, 1, 0));
    cr_assert(!up_retry_safe(UP_FAIL_IDLE, HTTP_GET, 1, 0));
    cr_assert(!up_retry_safe(UP_FAIL_5XX, HTTP_GET, 1, 0));
    /* a timeout, with the group's retry_on_timeout */
    cr_assert(up_retry_safe_after_timeout(HTTP_GET, 0));
    cr_assert(up_retry_safe_after_timeout(HTTP_PUT, 0));
    cr_assert(!up_retry_safe_after_timeout(HTTP_PUT, 1), "the body is gone");
    cr_assert(!up_retry_safe_after_timeout(HTTP_POST, 0));
    cr_assert(!up_retry_safe_after_timeout(HTTP_PATCH, 0));
}

Test(upstream, retry_budget)
{
    cr_assert(up_budget_allows(0, 0, 20, 3));
    cr_assert(up_budget_allows(2, 1, 20, 3), "under the minimum, always");
    cr_assert(!up_budget_allows(3, 10, 20, 3), "3 of 10 is 30%%");
    cr_assert(up_budget_allows(3, 20, 20, 3), "3 of 20 is 15%%");
    cr_assert(!up_budget_allows(20, 100, 20, 3));
    cr_assert(up_budget_allows(19, 100, 20, 3));
    cr_assert(up_budget_allows(0, 100, 20, 0));
    cr_assert(!up_budget_allows(0, 0, 0, 0));
}

Test(upstream, fail_names_and_counting)
{
    cr_assert_str_eq(up_fail_name(UP_FAIL_REFUSED), "refused");
    cr_assert_str_eq(up_fail_name(UP_FAIL_TIMEOUT), "timeout");
    cr_assert(up_fail_counts(UP_FAIL_RESET, 0));
    cr_assert(!up_fail_counts(UP_FAIL_5XX, 0));
    cr_assert(up_fail_counts(UP_FAIL_5XX, 1));
    cr_assert(!up_fail_counts(UP_FAIL_NONE, 1));
}

Test(upstream, ejection_grows_caps_and_respects_the_percent)
{
    struct up_group g;
    make(&g, CFG_LB_ROUND_ROBIN, 4, NULL);
    struct up_eject e = {0};
    uint64_t now = 100000;
    cr_assert_eq(up_eject(&e, 0, 4, &cfg, now), 1000);
    cr_assert_eq(up_eject(&e, 1, 4, &cfg, now + 10), 0, "already out");
    e.until_ms = 0, e.last_end_ms = now + 1000;
    cr_assert_eq(up_eject(&e, 0, 4, &cfg, now + 2000), 2000, "twice as long the second time");
    e.until_ms = 0, e.last_end_ms = now + 4000;
    cr_assert_eq(up_eject(&e, 0, 4, &cfg, now + 5000), 3000);
    for (int i = 0; i < 5; i++) {
        e.until_ms = 0, e.last_end_ms = now + 10000;
        uint64_t len = up_eject(&e, 0, 4, &cfg, now + 11000);
        cr_assert(len <= 5000, "capped at max_ejection_time: %llu", (unsigned long long)len);
    }
    e.until_ms = 0, e.last_end_ms = now + 20000;
    cr_assert_eq(up_eject(&e, 0, 4, &cfg, now + 20000 + 5000), 1000, "a quiet max_ejection_time starts over");
    /* 50% of 4: two may be out, not three */
    struct up_eject f = {0};
    cr_assert_eq(up_eject(&f, 2, 4, &cfg, now), 0);
    cr_assert_eq(up_eject(&f, 1, 4, &cfg, now), 1000);
    /* one server alone is never ejected at 50% */
    struct up_eject h = {0};
    cr_assert_eq(up_eject(&h, 0, 1, &cfg, now), 0);
    up_group_free(&g);
}
