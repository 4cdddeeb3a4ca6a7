/*
 * Config tests for upstream groups and proxy routes: defaults of a group
 * and a server, string and object servers, host names resolved to numeric
 * addresses, every rule that ties keys together, the round trip through
 * cfg_to_json / cfg_from_json that workers rely on, equality and reload.
 * Messages are written out in full, as in test_config.c.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "modules.h"

/* Route handlers and their keys, registered as main registers them. */
__attribute__((constructor)) static void register_modules(void)
{
    modules_register();
}

static char dir[64], file[96], err[512];

static void setup(void)
{
    strcpy(dir, "/tmp/cohort-upcfg-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/test.json", dir);
    unsetenv("COHORT_ENV");
    unsetenv("PORT");
    unsetenv("HOST");
    unsetenv("WORKERS");
}

static void teardown(void)
{
    unlink(file);
    rmdir(dir);
}

TestSuite(upcfg, .init = setup, .fini = teardown);

static int load_text(const char *text, struct cfg *c)
{
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    struct cfg_sources s = {.file = file};
    return cfg_load(&s, c, err, sizeof err);
}

static void expect_error(const char *text, const char *rest)
{
    struct cfg c;
    char want[600];
    cr_assert_eq(load_text(text, &c), -EINVAL, "%s", text);
    snprintf(want, sizeof want, "%s%s", file, rest);
    cr_assert_str_eq(err, want, "\n got: %s\nwant: %s", err, want);
}

Test(upcfg, group_defaults_and_servers)
{
    struct cfg c;
    cr_assert_eq(load_text("{\"upstreams\": {\"app\": {\"servers\": [\"localhost:3001\", "
                           "{\"address\": \"[::1]:3002\", \"weight\": 5, \"max_conns\": 9, \"backup\": true}]}},"
                           " \"routes\": [{\"path\": \"/*\", \"handler\": \"proxy\", \"upstream\": \"app\"}]}",
                           &c),
                 0, "%s", err);
    cr_assert_eq(c.nupstreams, 1);
    const struct cfg_upstream *g = cfg_find_upstream(&c, "app");
    cr_assert_not_null(g);
    cr_assert_null(cfg_find_upstream(&c, "other"));
    cr_assert_eq(g->nservers, 2);
    cr_assert_str_eq(g->servers[0].address, "127.0.0.1:3001", "a host name is resolved");
    cr_assert_eq(g->servers[0].weight, 1);
    cr_assert_eq(g->servers[0].backup, 0);
    cr_assert_str_eq(g->servers[1].address, "[::1]:3002");
    cr_assert_eq(g->servers[1].weight, 5);
    cr_assert_eq(g->servers[1].max_conns, 9);
    cr_assert_eq(g->servers[1].backup, 1);
    cr_assert_eq(g->algorithm, CFG_LB_ROUND_ROBIN);
    cr_assert_null(g->health.path);
    cr_assert_eq(g->health.interval_ms, 5000);
    cr_assert_eq(g->health.timeout_ms, 3000);
    cr_assert_eq(g->health.fall, 3);
    cr_assert_eq(g->health.rise, 2);
    cr_assert_str_eq(g->health.status, "2xx");
    cr_assert_eq(g->passive.failures, 5);
    cr_assert_eq(g->passive.on_5xx, 0);
    cr_assert_eq(g->passive.ejection_time_ms, 30000);
    cr_assert_eq(g->passive.max_ejection_time_ms, 300000);
    cr_assert_eq(g->passive.max_ejected_percent, 50);
    cr_assert_eq(g->retries, 2);
    cr_assert_eq(g->retry_budget.percent, 20);
    cr_assert_eq(g->retry_budget.min, 3);
    cr_assert_eq(g->timeouts.connect_ms, 3000);
    cr_assert_eq(g->keepalive.size, 64);
    cr_assert_eq(g->keepalive.idle_ms, 4000);
    cr_assert_str_eq(c.routes[0].upstream, "app");
    cr_assert_eq(c.app, CFG_APP_SHOP);
    cfg_free(&c);
}

Test(upcfg, everything_set_and_round_trip)
{
    struct cfg c, back;
    cr_assert_eq(load_text("{\"app\": \"none\", \"upstreams\": {\"zeta\": {\"servers\": [\"127.0.0.1:1\"]},"
                           " \"alpha\": {\"servers\": [\"127.0.0.1:2\", \"127.0.0.1:3\"],"
                           " \"algorithm\": \"hash\", \"hash\": {\"on\": \"cookie\", \"name\": \"sid\"},"
                           " \"health\": {\"path\": \"/health\", \"interval\": \"1s\", \"timeout\": \"200ms\","
                           " \"fall\": 2, \"rise\": 1, \"status\": \"200-299,304\"},"
                           " \"passive\": {\"failures\": 2, \"on_5xx\": true, \"ejection_time\": \"1s\","
                           " \"max_ejection_time\": \"5s\", \"max_ejected_percent\": 100},"
                           " \"slow_start\": \"10s\", \"retries\": 0, \"retry_budget\": {\"percent\": 50, \"min\": 1},"
                           " \"timeouts\": {\"connect\": \"100ms\", \"first_byte\": \"2s\", \"idle\": \"3s\"},"
                           " \"keepalive\": {\"size\": 0, \"idle_timeout\": \"1s\"}}}}",
                           &c),
                 0, "%s", err);
    cr_assert_eq(c.app, CFG_APP_NONE);
    cr_assert_eq(c.nupstreams, 2);
    cr_assert_str_eq(c.upstreams[0].name, "alpha", "groups are sorted by name");
    cr_assert_str_eq(c.upstreams[1].name, "zeta");
    const struct cfg_upstream *g = &c.upstreams[0];
    cr_assert_eq(g->algorithm, CFG_LB_HASH);
    cr_assert_eq(g->hash_on, CFG_HASH_COOKIE);
    cr_assert_str_eq(g->hash_name, "sid");
    cr_assert_str_eq(g->health.path, "/health");
    cr_assert_eq(g->health.timeout_ms, 200);
    cr_assert_eq(g->passive.on_5xx, 1);
    cr_assert_eq(g->slow_start_ms, 10000);
    cr_assert_eq(g->retries, 0);
    cr_assert_eq(g->keepalive.size, 0);
    char *json = cfg_to_json(&c);
    cr_assert_not_null(json);
    cr_assert_eq(cfg_from_json(json, &back, err, sizeof err), 0, "%s\n%s", err, json);
    cr_assert(cfg_equal(&c, &back), "%s", json);
    cr_assert_eq(cfg_check_reload(&c, &back, err, sizeof err), 0);
    back.upstreams[0].servers[1].weight = 7;
    cr_assert(!cfg_equal(&c, &back));
    cr_assert_eq(cfg_check_reload(&c, &back, err, sizeof err), 0, "upstreams reload without a restart");
    free(json);
    cfg_free(&back);
    cfg_free(&c);
}

Test(upcfg, overrides_replace_the_groups)
{
    struct cfg c;
    const char *ov[] = {"upstreams={\"b\": {\"servers\": [\"127.0.0.1:9\"]}}",
                        "routes=[{\"path\": \"/*\", \"handler\": \"proxy\", \"upstream\": \"b\"}]", "app=none",
                        NULL};
    struct cfg_sources s = {.no_files = 1, .overrides = ov, .config_dir = "/nonexistent-never-read"};
    cr_assert_eq(cfg_load(&s, &c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.nupstreams, 1);
    cr_assert_str_eq(c.upstreams[0].servers[0].address, "127.0.0.1:9");
    cfg_free(&c);
    const char *bad[] = {"upstreams={\"b\": {\"servers\": [\"127.0.0.1:0\"]}}", NULL};
    s.overrides = bad;
    cr_assert_eq(cfg_load(&s, &c, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "command line: upstreams.b.servers[0]: \"127.0.0.1:0\" has a port that is not 1..65535");
}

Test(upcfg, errors)
{
    expect_error("{\"upstreams\": []}", ":1:15: upstreams: [] is not an object of upstream groups by name");
    expect_error("{\"upstreams\": {\"a.b\": {\"servers\": [\"127.0.0.1:1\"]}}}",
                 ":1:16: upstreams.a.b: \"a.b\" is not a group name: it may hold only letters, digits, \"-\" and \"_\"");
    expect_error("{\"upstreams\": {\"a\": {}}}", ":1:21: upstreams.a: servers is required");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": []}}}",
                 ":1:33: upstreams.a.servers: [] is not an array of 1 to 1000 servers");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [{\"weight\": 2}]}}}",
                 ":1:34: upstreams.a.servers[0]: address is required");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"10.0.0.1\"]}}}",
                 ":1:34: upstreams.a.servers[0]: \"10.0.0.1\" is not host:port (use e.g. \"10.0.0.5:3000\" or "
                 "\"[::1]:3000\")");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"::1:80\"]}}}",
                 ":1:34: upstreams.a.servers[0]: \"::1:80\" is not host:port (an IPv6 address is written in "
                 "brackets: \"[::1]:3000\")");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"127.0.0.1:99999\"]}}}",
                 ":1:34: upstreams.a.servers[0]: \"127.0.0.1:99999\" has a port that is not 1..65535");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [{\"address\": \"127.0.0.1:1\", \"weight\": 0}]}}}",
                 ":1:71: upstreams.a.servers[0].weight: 0 is out of range 1..1000");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [{\"address\": \"127.0.0.1:1\", \"backup\": \"yes\"}]}}}",
                 ":1:71: upstreams.a.servers[0].backup: \"yes\" is not true or false");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [{\"address\": \"127.0.0.1:1\", \"backup\": true}]}}}",
                 ":1:21: upstreams.a: needs a server that is not a backup");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"127.0.0.1:1\"], \"algorithm\": \"fastest\"}}}",
                 ":1:63: upstreams.a.algorithm: \"fastest\" is not one of round_robin, least_conn, random, p2c, hash");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"127.0.0.1:1\"], \"helth\": {}}}}",
                 ":1:50: upstreams.a.helth: unknown key (did you mean health?)");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"127.0.0.1:1\"], \"health\": {\"fal\": 2}}}}",
                 ":1:61: upstreams.a.health.fal: unknown key (did you mean health.fall?)");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"127.0.0.1:1\"], \"health.path\": \"/h\"}}}",
                 ":1:50: upstreams.a.health.path: unknown key (write it nested, as \"health\": {\"path\": ...})");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"127.0.0.1:1\"], \"health\": {\"path\": \"health\"}}}}",
                 ":1:69: upstreams.a.health.path: \"health\" must start with \"/\"");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"127.0.0.1:1\"], \"health\": {\"status\": \"399-200\"}}}}",
                 ":1:71: upstreams.a.health.status: \"399-200\" has a range that ends before it starts");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"127.0.0.1:1\"], \"hash\": {\"on\": \"cookie\"}}}}",
                 ":1:21: upstreams.a: hash.name is required when hash.on is \"cookie\"");
    expect_error("{\"upstreams\": {\"a\": {\"servers\": [\"127.0.0.1:1\", \"localhost:1\"]}}}",
                 ":1:49: upstreams.a.servers[1]: 127.0.0.1:1 is listed twice (as servers[0] too)");
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"proxy\"}]}",
                 ":1:13: routes[0]: upstream is required when handler is \"proxy\"");
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"hello\", \"upstream\": \"a\"}]}",
                 ":1:59: routes[0].upstream: not allowed when handler is \"hello\" (only \"proxy\" forwards)");
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"proxy\", \"upstream\": \"a\"}]}",
                 ":1:59: routes[0].upstream: \"a\" names no upstream group (none is defined in \"upstreams\")");
    expect_error("{\"upstreams\": {\"b\": {\"servers\": [\"127.0.0.1:1\"]}, \"c\": {\"servers\": [\"127.0.0.1:1\"]}},"
                 " \"routes\": [{\"path\": \"/\", \"handler\": \"proxy\", \"upstream\": \"a\"}]}",
                 ":1:144: routes[0].upstream: \"a\" names no upstream group (defined: b, c)");
    expect_error("{\"app\": \"api\"}", ":1:9: app: \"api\" is not one of shop, none");
}
