/*
 * Config tests for Redis behind Sentinel and durable cart writes:
 * redis.sentinels as an array or as one comma-separated string (the
 * environment), each address's form with its positioned message, the
 * defaults, the rule that ties redis.wait_timeout to redis.command_timeout,
 * and the round trip through cfg_to_json / cfg_from_json that workers rely
 * on. Messages are written out in full, as in test_config.c.
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
    strcpy(dir, "/tmp/cohort-rcfg-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/test.json", dir);
    unsetenv("COHORT_ENV");
    unsetenv("REDIS_URL");
    unsetenv("REDIS_SENTINELS");
}

static void teardown(void)
{
    unlink(file);
    rmdir(dir);
}

TestSuite(rcfg, .init = setup, .fini = teardown);

static int load_text(const char *text, struct cfg *c, int environ)
{
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    struct cfg_sources s = {.file = file, .use_environ = environ};
    return cfg_load(&s, c, err, sizeof err);
}

static void expect_error(const char *text, const char *rest)
{
    struct cfg c;
    char want[600];
    cr_assert_eq(load_text(text, &c, 0), -EINVAL, "%s", text);
    snprintf(want, sizeof want, "%s%s", file, rest);
    cr_assert_str_eq(err, want, "\n got: %s\nwant: %s", err, want);
}

Test(rcfg, defaults)
{
    struct cfg c;
    cr_assert_eq(load_text("{}", &c, 0), 0, "%s", err);
    cr_assert_null(c.redis.sentinels);
    cr_assert_str_eq(c.redis.master_name, "mymaster");
    cr_assert_eq(c.redis.wait_replicas, 0);
    cr_assert_eq(c.redis.wait_timeout_ms, 500);
    cfg_free(&c);
}

Test(rcfg, sentinels_as_an_array_kept_in_order)
{
    struct cfg c;
    cr_assert_eq(load_text("{\"redis\": {\"sentinels\": [\"10.0.0.7:26379\", \" sentinel-b.internal:26380 \", "
                           "\"[::1]:26381\"], \"master_name\": \"shop\", \"wait_replicas\": 1, "
                           "\"wait_timeout\": \"250ms\"}}",
                           &c, 0),
                 0, "%s", err);
    /* names stay names: they are resolved at every connection */
    cr_assert_str_eq(c.redis.sentinels, "10.0.0.7:26379,sentinel-b.internal:26380,[::1]:26381");
    cr_assert_str_eq(c.redis.master_name, "shop");
    cr_assert_eq(c.redis.wait_replicas, 1);
    cr_assert_eq(c.redis.wait_timeout_ms, 250);

    /* what workers receive: the same values, the list as an array */
    char *json = cfg_to_json(&c);
    cr_assert_not_null(strstr(json, "\"sentinels\": [\n      \"10.0.0.7:26379\",\n      "
                                    "\"sentinel-b.internal:26380\",\n      \"[::1]:26381\"\n    ]"),
                       "%s", json);
    struct cfg back;
    cr_assert_eq(cfg_from_json(json, &back, err, sizeof err), 0, "%s", err);
    cr_assert(cfg_equal(&c, &back));
    free(json);
    cfg_free(&back);
    cfg_free(&c);
}

Test(rcfg, sentinels_from_the_environment)
{
    struct cfg c;
    setenv("REDIS_SENTINELS", "10.0.0.7:26379, 10.0.0.8:26379", 1);
    cr_assert_eq(load_text("{}", &c, 1), 0, "%s", err);
    cr_assert_str_eq(c.redis.sentinels, "10.0.0.7:26379,10.0.0.8:26379");
    cfg_free(&c);
    setenv("REDIS_SENTINELS", "10.0.0.7:26379,,x:1", 1);
    cr_assert_eq(load_text("{}", &c, 1), -EINVAL);
    cr_assert_str_eq(err, "environment REDIS_SENTINELS: redis.sentinels[1]: \"\" is not host:port (use e.g. "
                          "\"10.0.0.5:26379\" or \"[::1]:26379\")");
}

Test(rcfg, an_empty_list_is_no_sentinel)
{
    struct cfg c;
    cr_assert_eq(load_text("{\"redis\": {\"sentinels\": []}}", &c, 0), 0, "%s", err);
    cr_assert_null(c.redis.sentinels);
    cfg_free(&c);
}

Test(rcfg, bad_sentinels)
{
    expect_error("{\"redis\": {\"sentinels\": [\"10.0.0.7\"]}}",
                 ":1:26: redis.sentinels[0]: \"10.0.0.7\" is not host:port (use e.g. \"10.0.0.5:26379\" or "
                 "\"[::1]:26379\")");
    expect_error("{\"redis\": {\"sentinels\": [\"a:1\", \"b:70000\"]}}",
                 ":1:33: redis.sentinels[1]: \"b:70000\" has a port that is not 1..65535");
    expect_error("{\"redis\": {\"sentinels\": [\"::1:26379\"]}}",
                 ":1:26: redis.sentinels[0]: \"::1:26379\" is not host:port (an IPv6 address is written in "
                 "brackets: \"[::1]:26379\")");
    expect_error("{\"redis\": {\"sentinels\": [26379]}}",
                 ":1:26: redis.sentinels[0]: 26379 is not a \"host:port\" string");
    expect_error("{\"redis\": {\"sentinels\": {\"a\": 1}}}",
                 ":1:25: redis.sentinels: {\"a\":1} is not an array of \"host:port\" strings");
    expect_error("{\"redis\": {\"master_name\": \"my master\"}}",
                 ":1:27: redis.master_name: \"my master\" must be printable, without spaces");
}

Test(rcfg, the_wait_must_end_before_the_command_timeout)
{
    expect_error("{\"redis\": {\"wait_replicas\": 1, \"wait_timeout\": \"1s\"}}",
                 ":1:48: redis.wait_timeout: 1s is not shorter than redis.command_timeout (1s): a WAIT that "
                 "long would count as an outage (shorten it, or lengthen redis.command_timeout)");
    struct cfg c;
    /* without a wait, the timeout is not used */
    cr_assert_eq(load_text("{\"redis\": {\"wait_timeout\": \"5s\"}}", &c, 0), 0, "%s", err);
    cfg_free(&c);
    cr_assert_eq(load_text("{\"redis\": {\"wait_replicas\": 2, \"wait_timeout\": \"5s\", "
                           "\"command_timeout\": \"6s\"}}",
                           &c, 0),
                 0, "%s", err);
    cfg_free(&c);
    expect_error("{\"redis\": {\"wait_replicas\": 101}}",
                 ":1:29: redis.wait_replicas: 101 is out of range 0..100");
}
