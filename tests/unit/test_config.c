/*
 * Config loader tests. Each test runs in its own process (Criterion), gets a
 * fresh temporary directory and an environment without COHORT_ENV, PORT,
 * HOST and WORKERS. Expected messages are written out in full, line and
 * column included: they are the interface an operator reads.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "modules.h"

/* Route handlers and their keys, registered as main registers them. */
__attribute__((constructor)) static void register_modules(void)
{
    modules_register();
}

static char dir[64];
static char err[512];

static void setup(void)
{
    strcpy(dir, "/tmp/cohort-config-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char *real = realpath(dir, NULL); /* paths in a loaded config have no symlinks in their base */
    cr_assert_not_null(real);
    snprintf(dir, sizeof dir, "%s", real);
    free(real);
    unsetenv("COHORT_ENV");
    unsetenv("PORT");
    unsetenv("HOST");
    unsetenv("WORKERS");
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(config, .init = setup, .fini = teardown);

static const char *path_in(const char *name)
{
    static char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *name, const char *text)
{
    FILE *f = fopen(path_in(name), "w");
    cr_assert_not_null(f);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

static int load_dir(const char *env, const char *const *ov, int use_environ, struct cfg *c)
{
    struct cfg_sources s = {.config_dir = dir, .env = env, .overrides = ov, .use_environ = use_environ};
    return cfg_load(&s, c, err, sizeof err);
}

/* Loads `text` as the one -c file. */
static int load_text(const char *text, struct cfg *c)
{
    write_file("test.json", text);
    struct cfg_sources s = {.file = path_in("test.json")};
    return cfg_load(&s, c, err, sizeof err);
}

static void ok_text(const char *text, struct cfg *c)
{
    int rc = load_text(text, c);
    cr_assert_eq(rc, 0, "%s: rc %d: %s", text, rc, err);
}

/* The message for `text` must be the file's name followed by `rest`. */
static void expect_error(const char *text, const char *rest)
{
    struct cfg c;
    char want[600];
    int rc = load_text(text, &c);

    snprintf(want, sizeof want, "%s%s", path_in("test.json"), rest);
    cr_assert_eq(rc, -EINVAL, "%s: rc %d", text, rc);
    cr_assert_str_eq(err, want, "\n got: %s\nwant: %s", err, want);
}

static void expect_override_error(const char *ov, const char *want)
{
    const char *ovs[] = {ov, NULL};
    struct cfg c;
    int rc = load_dir("development", ovs, 0, &c);

    cr_assert_eq(rc, -EINVAL, "%s: rc %d", ov, rc);
    cr_assert_str_eq(err, want, "\n got: %s\nwant: %s", err, want);
}

static void expect_env_error(const char *var, const char *value, const char *want)
{
    struct cfg c;
    setenv(var, value, 1);
    int rc = load_dir("development", NULL, 1, &c);
    cr_assert_eq(rc, -EINVAL, "%s=%s: rc %d", var, value, rc);
    cr_assert_str_eq(err, want, "\n got: %s\nwant: %s", err, want);
}

static int expected_workers(void)
{
    cpu_set_t set;
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    return CPU_COUNT(&set) < CFG_MAX_WORKERS ? CPU_COUNT(&set) : CFG_MAX_WORKERS;
}

/* --- sources ---------------------------------------------------------- */

Test(config, defaults_without_files)
{
    struct cfg c;
    cr_assert_eq(load_dir(NULL, NULL, 0, &c), 0, "%s", err);
    cr_assert_str_eq(c.env, "development");
    cr_assert_str_eq(c.host, "127.0.0.1");
    cr_assert_eq(c.port, 3000);
    cr_assert_eq(c.backlog, 511);
    cr_assert_eq(c.workers, expected_workers());
    cr_assert_eq(c.schedule, CFG_SCHED_REUSEPORT);
    cr_assert_eq(c.min_uptime_ms, 1000);
    cr_assert_eq(c.shutdown_timeout_ms, 10000);
    cr_assert_eq(c.limits.max_body, 1024 * 1024);
    cr_assert_eq(c.limits.max_uri, 8 * 1024);
    cr_assert_eq(c.limits.max_header_size, 16 * 1024);
    cr_assert_eq(c.limits.max_headers, 100);
    cr_assert_eq(c.timeouts.header_ms, 10000);
    cr_assert_eq(c.timeouts.keepalive_ms, 5000);
    cr_assert_eq(c.timeouts.body_ms, 10000);
    cr_assert_eq(c.timeouts.send_ms, 30000);
    cr_assert_eq(c.nroutes, 0);
    cr_assert_null(c.routes);
    cfg_free(&c);
}

Test(config, env_file_merges_deep_and_replaces_arrays)
{
    struct cfg c;
    write_file("default.json", "{\"server\": {\"host\": \"0.0.0.0\", \"port\": 4000},\n"
                               " \"limits\": {\"max_body\": \"2M\", \"max_uri\": \"4K\"},\n"
                               " \"routes\": [{\"path\": \"/a\", \"handler\": \"hello\"},\n"
                               "            {\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"pub\"}]}\n");
    write_file("staging.json", "{\"server\": {\"port\": 5000}, \"limits\": {\"max_uri\": \"2K\"},\n"
                               " \"routes\": [{\"path\": \"/health\", \"handler\": \"health\"}]}\n");
    cr_assert_eq(load_dir("staging", NULL, 0, &c), 0, "%s", err);
    cr_assert_str_eq(c.env, "staging");
    cr_assert_str_eq(c.host, "0.0.0.0", "kept from default.json");
    cr_assert_eq(c.port, 5000);
    cr_assert_eq(c.limits.max_body, 2 * 1024 * 1024, "kept from default.json");
    cr_assert_eq(c.limits.max_uri, 2048);
    cr_assert_eq(c.nroutes, 1, "the array is replaced, not merged");
    cr_assert_str_eq(c.routes[0].path, "/health");
    cr_assert_str_eq(c.routes[0].handler, "health");
    cr_assert_null(c.routes[0].root);
    cfg_free(&c);
}

Test(config, env_chosen_by_cohort_env)
{
    struct cfg c;
    write_file("default.json", "{\"server\": {\"port\": 4000}}");
    write_file("qa.json", "{\"server\": {\"port\": 4100}}");
    setenv("COHORT_ENV", "qa", 1);
    cr_assert_eq(load_dir(NULL, NULL, 0, &c), 0, "%s", err);
    cr_assert_str_eq(c.env, "qa");
    cr_assert_eq(c.port, 4100);
    cfg_free(&c);
}

Test(config, bad_env_name)
{
    struct cfg c;
    cr_assert_eq(load_dir("../etc", NULL, 0, &c), -EINVAL);
    cr_assert_str_eq(err, "environment name: \"../etc\" is not an environment name "
                          "(use letters, digits, \"-\" and \"_\")");
    setenv("COHORT_ENV", "a/b", 1);
    cr_assert_eq(load_dir(NULL, NULL, 0, &c), -EINVAL);
    cr_assert_str_eq(err, "environment COHORT_ENV: \"a/b\" is not an environment name "
                          "(use letters, digits, \"-\" and \"_\")");
}

Test(config, missing_env_file_is_fine)
{
    struct cfg c;
    write_file("default.json", "{\"workers\": 3}");
    cr_assert_eq(load_dir("nosuchenv", NULL, 0, &c), 0, "%s", err);
    cr_assert_eq(c.workers, 3);
    cfg_free(&c);
}

Test(config, unreadable_env_file_is_an_error)
{
    struct cfg c;
    char want[256];
    cr_assert_eq(mkdir(path_in("production.json"), 0700), 0);
    cr_assert_eq(load_dir("production", NULL, 0, &c), -EINVAL);
    snprintf(want, sizeof want, "%s: cannot read: Is a directory", path_in("production.json"));
    cr_assert_str_eq(err, want);
}

Test(config, file_alone_ignores_config_dir)
{
    struct cfg c;
    write_file("default.json", "{\"server\": {\"port\": 4000}, \"workers\": 5}");
    write_file("development.json", "{\"server\": {\"port\": 4001}}");
    write_file("only.json", "{\"server\": {\"port\": 4002}}");
    struct cfg_sources s = {.file = path_in("only.json"), .config_dir = dir};
    cr_assert_eq(cfg_load(&s, &c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.port, 4002);
    cr_assert_eq(c.workers, expected_workers(), "default.json must not be read");
    cfg_free(&c);
}

Test(config, missing_file)
{
    struct cfg c;
    char want[256];
    struct cfg_sources s = {.file = path_in("nope.json")};
    cr_assert_eq(cfg_load(&s, &c, err, sizeof err), -ENOENT);
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory", path_in("nope.json"));
    cr_assert_str_eq(err, want);
}

Test(config, error_points_at_the_file_the_value_came_from)
{
    struct cfg c;
    char want[300];
    write_file("default.json", "{\n  \"server\": {\"port\": 4000},\n  \"limits\": {\"max_body\": \"3T\"}\n}\n");
    cr_assert_eq(load_dir("staging", NULL, 0, &c), -EINVAL);
    snprintf(want, sizeof want,
             "%s:3:26: limits.max_body: \"3T\" is not a size (use bytes or \"100B\", \"16K\", \"1M\", \"1G\")",
             path_in("default.json"));
    cr_assert_str_eq(err, want, "\n got: %s\nwant: %s", err, want);

    write_file("default.json", "{\"server\": {\"port\": \"x\"}}");
    write_file("staging.json", "{\n\"server\": {\"port\": 0}}");
    cr_assert_eq(load_dir("staging", NULL, 0, &c), -EINVAL);
    snprintf(want, sizeof want, "%s:2:20: server.port: 0 is out of range 1..65535", path_in("staging.json"));
    cr_assert_str_eq(err, want, "\n got: %s\nwant: %s", err, want);
}

Test(config, only_effective_values_are_checked)
{
    struct cfg c;
    write_file("default.json", "{\"workers\": \"x\"}");
    write_file("staging.json", "{\"workers\": 2}");
    cr_assert_eq(load_dir("staging", NULL, 0, &c), 0, "%s", err);
    cr_assert_eq(c.workers, 2);
    cfg_free(&c);
}

Test(config, project_config_files_load)
{
    static const char *const envs[] = {"development", "production"};
    struct cfg c;

    char *public = realpath("public", NULL);
    cr_assert_not_null(public, "tests run from the repository root");
    for (size_t i = 0; i < 2; i++) {
        struct cfg_sources s = {.config_dir = "config", .env = envs[i], .check_fs = 1};
        cr_assert_eq(cfg_load(&s, &c, err, sizeof err), 0, "%s: %s", envs[i], err);
        cr_assert_eq(c.nroutes, 1);
        cr_assert_str_eq(c.routes[0].path, "/static/*");
        cr_assert_str_eq(c.routes[0].root, public, "\"../public\" from config/ is the repository's public/");
        cfg_free(&c);
    }
    free(public);
    struct cfg_sources one = {.file = "config/default.json"};
    cr_assert_eq(cfg_load(&one, &c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.port, 3000);
    cfg_free(&c);
}

/* --- JSON errors ------------------------------------------------------ */

Test(config, syntax_error_has_line_and_column)
{
    expect_error("{\n  \"server\": {\"port\": x}\n}\n", ":2:22: invalid token near 'x'");
    expect_error("{\"workers\": 1,}", ":1:15: string or '}' expected near '}'");
}

Test(config, top_level_must_be_an_object)
{
    expect_error("[1, 2]", ":1:1: the top level must be an object, not [1,2]");
    expect_error("\n  [{\"a\": 1}]", ":2:3: the top level must be an object, not [{\"a\":1}]");
    expect_error("\n  \"text\"", ":2:8: '[' or '{' expected near '\"text\"'");
}

Test(config, duplicate_key)
{
    expect_error("{\"workers\": 1,\n \"workers\": 2}", ":2:10: duplicate object key near '\"workers\"'");
}

/* --- unknown keys ----------------------------------------------------- */

Test(config, unknown_key_suggestions)
{
    expect_error("{\"workrs\": 2}", ":1:2: workrs: unknown key (did you mean workers?)");
    expect_error("{\"server\": {\"prot\": 1}}", ":1:13: server.prot: unknown key (did you mean server.port?)");
    expect_error("{\"limits\": {\"max_bdy\": 1}}",
                 ":1:13: limits.max_bdy: unknown key (did you mean limits.max_body?)");
    expect_error("{\"sever\": {}}", ":1:2: sever: unknown key (did you mean server?)");
    expect_error("{\"port\": 3000}", ":1:2: port: unknown key (did you mean server.port?)");
    expect_error("{\"colour\": \"red\"}", ":1:2: colour: unknown key");
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"hello\", \"roots\": 1}]}",
                 ":1:47: routes[0].roots: unknown key (did you mean routes[0].root?)");
}

Test(config, dotted_key_must_be_nested)
{
    expect_error("{\"server.port\": 1}",
                 ":1:2: server.port: unknown key (write it nested, as \"server\": {\"port\": ...})");
}

Test(config, positions_count_characters_and_decode_escapes)
{
    expect_error("{\"routes\": [{\"path\": \"/\xc3\xa9\", \"handler\": \"hello\", \"rooot\": 1}]}",
                 ":1:48: routes[0].rooot: unknown key (did you mean routes[0].root?)");
    expect_error("{\"\\u0073erver\": {\"prot\": 1}}",
                 ":1:18: server.prot: unknown key (did you mean server.port?)");
}

/* --- values ----------------------------------------------------------- */

Test(config, wrong_types)
{
    expect_error("{\"server\": {\"port\": \"abc\"}}", ":1:21: server.port: \"abc\" is not an integer");
    expect_error("{\"server\": {\"port\": 3.0}}", ":1:21: server.port: 3.0 is not an integer");
    expect_error("{\"server\": {\"port\": true}}", ":1:21: server.port: true is not an integer");
    expect_error("{\"server\": {\"port\": {\"a\": 1}}}", ":1:21: server.port: {\"a\":1} is not an integer");
    expect_error("{\"server\": {\"host\": null}}", ":1:21: server.host: null is not a string");
    expect_error("{\"server\": 5}", ":1:12: server: 5 is not an object");
    expect_error("{\"routes\": {}}", ":1:12: routes: {} is not an array of routes");
    expect_error("{\"routes\": [1]}", ":1:13: routes[0]: 1 is not a route object");
}

Test(config, long_values_are_cut_short)
{
    expect_error("{\"server\": {\"port\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}",
                 ":1:21: server.port: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa... "
                 "is not an integer");
}

Test(config, out_of_range)
{
    expect_error("{\n  \"server\": {\n    \"port\": 70000\n  }\n}\n",
                 ":3:13: server.port: 70000 is out of range 1..65535");
    expect_error("{\"server\": {\"port\": 0}}", ":1:21: server.port: 0 is out of range 1..65535");
    expect_error("{\"server\": {\"backlog\": -1}}", ":1:24: server.backlog: -1 is out of range 1..65535");
    expect_error("{\"workers\": 65}", ":1:13: workers: 65 is out of range 0..64");
    expect_error("{\"limits\": {\"max_headers\": 10001}}",
                 ":1:28: limits.max_headers: 10001 is out of range 1..10000");
}

/* The worker checks its limits once a second (src/proc/worker.c), so a
 * shorter interval or window could not be honoured: refused, not accepted. */
Test(config, limit_checks_are_not_shorter_than_a_second)
{
    struct cfg c;
    expect_error("{\"memory_check_interval\": \"999ms\"}",
                 ":1:27: memory_check_interval: \"999ms\" is out of range 1s..1h");
    expect_error("{\"memory_check_interval\": 0.2}", ":1:27: memory_check_interval: 0.2 is out of range 1s..1h");
    expect_error("{\"error_window\": \"500ms\"}", ":1:18: error_window: \"500ms\" is out of range 1s..1h");
    expect_error("{\"error_window\": 0}", ":1:18: error_window: 0 is out of range 1s..1h");
    expect_override_error("error_window=0.999", "command line: error_window: 0.999 is out of range 1s..1h");
    ok_text("{\"memory_check_interval\": \"1s\", \"error_window\": 1}", &c);
    cr_assert_eq(c.memory_check_interval_ms, 1000);
    cr_assert_eq(c.error_window_ms, 1000);
    cfg_free(&c);
}

Test(config, bad_enum)
{
    expect_error("{\"schedule\": \"fast\"}", ":1:14: schedule: \"fast\" is not one of reuseport, shared, round_robin, least_loaded");
    expect_error("{\"schedule\": 1}", ":1:14: schedule: 1 is not one of reuseport, shared, round_robin, least_loaded");
}

Test(config, host)
{
    struct cfg c;
    ok_text("{\"server\": {\"host\": \"::1\"}}", &c);
    cr_assert_str_eq(c.host, "::1");
    cfg_free(&c);
    ok_text("{\"server\": {\"host\": \"localhost\"}}", &c);
    cr_assert_str_eq(c.host, "127.0.0.1");
    cfg_free(&c);
    expect_error("{\"server\": {\"host\": \"example.com\"}}",
                 ":1:21: server.host: \"example.com\" is not an IPv4 or IPv6 address "
                 "(use e.g. \"0.0.0.0\", \"::\" or \"localhost\")");
}

Test(config, durations_in_files)
{
    static const struct {
        const char *json;
        int64_t ms;
    } cases[] = {{"0.25", 250},     {"1", 1000},         {"0.001", 1},        {"\"250ms\"", 250},
                 {"\"10s\"", 10000}, {"\"2m\"", 120000}, {"\"1h\"", 3600000}, {"\"1.5s\"", 1500},
                 {"\"3\"", 3000},   {"3600", 3600000}, {"0.0019", 2}};
    char text[128];
    struct cfg c;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, "{\"timeouts\": {\"send\": %s}}", cases[i].json);
        ok_text(text, &c);
        cr_assert_eq(c.timeouts.send_ms, cases[i].ms, "%s gave %lld", cases[i].json,
                     (long long)c.timeouts.send_ms);
        cfg_free(&c);
    }
    ok_text("{\"timeouts\": {\"keepalive\": 0}}", &c);
    cr_assert_eq(c.timeouts.keepalive_ms, 0);
    cfg_free(&c);
}

Test(config, bad_durations_in_files)
{
    expect_error("{\"timeouts\": {\"header\": \"10x\"}}",
                 ":1:25: timeouts.header: \"10x\" is not a duration "
                 "(use seconds or \"250ms\", \"10s\", \"2m\", \"1h\")");
    expect_error("{\"timeouts\": {\"header\": [1]}}",
                 ":1:25: timeouts.header: [1] is not a duration "
                 "(use seconds or \"250ms\", \"10s\", \"2m\", \"1h\")");
    expect_error("{\"timeouts\": {\"header\": \"2h\"}}", ":1:25: timeouts.header: \"2h\" is out of range 1ms..1h");
    expect_error("{\"timeouts\": {\"header\": 0}}", ":1:25: timeouts.header: 0 is out of range 1ms..1h");
    expect_error("{\"timeouts\": {\"header\": 0.0001}}", ":1:25: timeouts.header: 0.0001 is out of range 1ms..1h");
    expect_error("{\"min_uptime\": -1}", ":1:16: min_uptime: -1 is out of range 0s..1h");
    expect_error("{\"min_uptime\": 1e300}", ":1:16: min_uptime: 1e300 is out of range 0s..1h");
}

Test(config, sizes_in_files)
{
    struct cfg c;
    ok_text("{\"limits\": {\"max_body\": 1000, \"max_uri\": \"100B\", \"max_header_size\": \"2k\"}}", &c);
    cr_assert_eq(c.limits.max_body, 1000);
    cr_assert_eq(c.limits.max_uri, 100);
    cr_assert_eq(c.limits.max_header_size, 2048);
    cfg_free(&c);
    ok_text("{\"limits\": {\"max_body\": \"1g\"}}", &c);
    cr_assert_eq(c.limits.max_body, 1024LL * 1024 * 1024);
    cfg_free(&c);
}

Test(config, bad_sizes_in_files)
{
    expect_error("{\"limits\": {\"max_body\": \"1T\"}}",
                 ":1:25: limits.max_body: \"1T\" is not a size (use bytes or \"100B\", \"16K\", \"1M\", \"1G\")");
    expect_error("{\"limits\": {\"max_body\": 1.5}}",
                 ":1:25: limits.max_body: 1.5 is not a size (use bytes or \"100B\", \"16K\", \"1M\", \"1G\")");
    expect_error("{\"limits\": {\"max_body\": \"2G\"}}", ":1:25: limits.max_body: \"2G\" is out of range 0..1G");
    expect_error("{\"limits\": {\"max_uri\": 63}}", ":1:24: limits.max_uri: 63 is out of range 64..1M");
    expect_error("{\"limits\": {\"max_header_size\": \"512B\"}}",
                 ":1:32: limits.max_header_size: \"512B\" is out of range 1K..1M");
}

Test(config, parse_duration)
{
    static const struct {
        const char *s;
        int64_t ms;
    } good[] = {{"250ms", 250}, {"10s", 10000}, {"2m", 120000}, {"1h", 3600000}, {"10", 10000},
                {"1.5", 1500},  {"0.5s", 500},  {"1.5m", 90000}, {"0", 0},       {"-5s", -5000},
                {"0.0004s", 0}, {"0.0005s", 1}};
    static const char *const bad[] = {"", "s", "10x", "1 s", " 1s", "1s ", "1.s", ".5s", "-",
                                      "1e3", "10S", "0x10", "+1s", "1ms2"};
    int64_t ms;

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        cr_assert_eq(cfg_parse_duration(good[i].s, &ms), 0, "%s", good[i].s);
        cr_assert_eq(ms, good[i].ms, "%s gave %lld", good[i].s, (long long)ms);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(cfg_parse_duration(bad[i], &ms), -EINVAL, "\"%s\" parsed", bad[i]);
    cr_assert_eq(cfg_parse_duration(NULL, &ms), -EINVAL);
    cr_assert_eq(cfg_parse_duration("99999999999999999999h", &ms), -ERANGE);
    cr_assert_eq(cfg_parse_duration("9999999999999999h", &ms), -ERANGE);
}

Test(config, parse_size)
{
    static const struct {
        const char *s;
        int64_t n;
    } good[] = {{"100B", 100},         {"16K", 16384}, {"16k", 16384},           {"1M", 1048576},
                {"1m", 1048576},       {"1G", 1073741824}, {"1g", 1073741824}, {"1024", 1024},
                {"0", 0}};
    static const char *const bad[] = {"", "1.5M", "1T", "KB", "1KB", "M", "1 K", "K1", "1b"};
    int64_t n;

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        cr_assert_eq(cfg_parse_size(good[i].s, &n), 0, "%s", good[i].s);
        cr_assert_eq(n, good[i].n, "%s gave %lld", good[i].s, (long long)n);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(cfg_parse_size(bad[i], &n), -EINVAL, "\"%s\" parsed", bad[i]);
    cr_assert_eq(cfg_parse_size("99999999999G", &n), -ERANGE);
}

/* --- routes ----------------------------------------------------------- */

Test(config, routes_load)
{
    struct cfg c;
    ok_text("{\"routes\": [{\"path\": \"/static/*\", \"handler\": \"static\", \"root\": \"public\"},\n"
            "            {\"path\": \"/api/products/:id\", \"handler\": \"hello\"},\n"
            "            {\"path\": \"/health\", \"handler\": \"health\"}]}",
            &c);
    cr_assert_eq(c.nroutes, 3);
    cr_assert_str_eq(c.routes[0].root, path_in("public"), "relative to the file's folder");
    cr_assert_str_eq(c.routes[1].path, "/api/products/:id");
    cr_assert_str_eq(c.routes[1].handler, "hello");
    cr_assert_null(c.routes[1].root);
    cr_assert_str_eq(c.routes[2].handler, "health");
    cfg_free(&c);
}

Test(config, route_errors)
{
    expect_error("{\"routes\": [{\"handler\": \"hello\"}]}", ":1:13: routes[0]: path is required");
    expect_error("{\"routes\": [{\"path\": \"/\"}]}", ":1:13: routes[0]: handler is required");
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"hello\"}, {\"path\": \"/s/*\", \"handler\": \"static\"}]}",
                 ":1:48: routes[1]: root is required when handler is \"static\"");
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"hello\", \"root\": \"x\"}]}",
                 ":1:55: routes[0].root: not allowed when handler is \"hello\" (only \"static\" serves files)");
    expect_error("{\"routes\": [{\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"\"}]}",
                 ":1:59: routes[0].root: \"\" must not be empty");
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"php\"}]}",
                 ":1:38: routes[0].handler: \"php\" is not one of static, hello, health, products, product, "
                 "product_update, cart_add, cart, cart_remove, ready, proxy");
    expect_error("{\"routes\": [{\"path\": 1, \"handler\": \"hello\"}]}", ":1:22: routes[0].path: 1 is not a string");
}

Test(config, route_path_errors)
{
    expect_error("{\"routes\": [{\"path\": \"static/*\", \"handler\": \"hello\"}]}",
                 ":1:22: routes[0].path: \"static/*\" must start with \"/\"");
    expect_error("{\"routes\": [{\"path\": \"/a*\", \"handler\": \"hello\"}]}",
                 ":1:22: routes[0].path: \"/a*\" may hold \"*\" only at the end, as \"/*\"");
    expect_error("{\"routes\": [{\"path\": \"/*/a\", \"handler\": \"hello\"}]}",
                 ":1:22: routes[0].path: \"/*/a\" may hold \"*\" only at the end, as \"/*\"");
    expect_error("{\"routes\": [{\"path\": \"/:id/*\", \"handler\": \"hello\"}]}",
                 ":1:22: routes[0].path: \"/:id/*\" cannot mix a \"/*\" prefix with :name segments");
    expect_error("{\"routes\": [{\"path\": \"/a:id\", \"handler\": \"hello\"}]}",
                 ":1:22: routes[0].path: \"/a:id\" has a \":\" that is not a whole :name segment");
    expect_error("{\"routes\": [{\"path\": \"/a b\", \"handler\": \"hello\"}]}",
                 ":1:22: routes[0].path: \"/a b\" must not hold spaces, control characters, \"?\" or \"#\"");
    expect_error("{\"routes\": [{\"path\": \"/:a/:b/:c/:d/:e\", \"handler\": \"hello\"}]}",
                 ":1:22: routes[0].path: \"/:a/:b/:c/:d/:e\" has more than 4 :name segments");
}

/* --- environment and overrides ---------------------------------------- */

Test(config, environment_variables)
{
    struct cfg c;
    write_file("default.json", "{\"server\": {\"port\": 4000}}");
    setenv("PORT", "3001", 1);
    setenv("HOST", "::1", 1);
    setenv("WORKERS", "3", 1);
    cr_assert_eq(load_dir(NULL, NULL, 1, &c), 0, "%s", err);
    cr_assert_eq(c.port, 3001);
    cr_assert_str_eq(c.host, "::1");
    cr_assert_eq(c.workers, 3);
    cfg_free(&c);

    setenv("PORT", "abc", 1);
    cr_assert_eq(load_dir(NULL, NULL, 0, &c), 0, "use_environ=0 must ignore PORT: %s", err);
    cr_assert_eq(c.port, 4000);
    cfg_free(&c);

    setenv("PORT", "", 1);
    cr_assert_eq(load_dir(NULL, NULL, 1, &c), 0, "an empty PORT counts as unset: %s", err);
    cr_assert_eq(c.port, 4000);
    cfg_free(&c);
}

Test(config, environment_errors)
{
    expect_env_error("PORT", "abc", "environment PORT: server.port: \"abc\" is not an integer");
    expect_env_error("PORT", "3.0", "environment PORT: server.port: \"3.0\" is not an integer");
    expect_env_error("PORT", " 3001", "environment PORT: server.port: \" 3001\" is not an integer");
    expect_env_error("PORT", "70000", "environment PORT: server.port: 70000 is out of range 1..65535");
    expect_env_error("PORT", "99999999999999999999",
                     "environment PORT: server.port: \"99999999999999999999\" is not an integer");
    unsetenv("PORT");
    expect_env_error("WORKERS", "99", "environment WORKERS: workers: 99 is out of range 0..64");
    unsetenv("WORKERS");
    expect_env_error("HOST", "nowhere",
                     "environment HOST: server.host: \"nowhere\" is not an IPv4 or IPv6 address "
                     "(use e.g. \"0.0.0.0\", \"::\" or \"localhost\")");
}

Test(config, overrides)
{
    static const char *const ov[] = {
        "server.port=4001", "timeouts.header=250ms", "limits.max_body=2M", "schedule=shared",
        "min_uptime=0.5", "routes=[{\"path\": \"/h\", \"handler\": \"health\"}]", NULL};
    struct cfg c;

    write_file("default.json", "{\"server\": {\"port\": 4000}}");
    setenv("PORT", "3001", 1);
    cr_assert_eq(load_dir(NULL, ov, 1, &c), 0, "%s", err);
    cr_assert_eq(c.port, 4001, "the command line wins over the environment");
    cr_assert_eq(c.timeouts.header_ms, 250);
    cr_assert_eq(c.limits.max_body, 2 * 1024 * 1024);
    cr_assert_eq(c.schedule, CFG_SCHED_SHARED);
    cr_assert_eq(c.min_uptime_ms, 500);
    cr_assert_eq(c.nroutes, 1);
    cr_assert_str_eq(c.routes[0].path, "/h");
    cfg_free(&c);
}

Test(config, override_errors)
{
    expect_override_error("server.port=70000", "command line: server.port: 70000 is out of range 1..65535");
    expect_override_error("server.port=abc", "command line: server.port: \"abc\" is not an integer");
    expect_override_error("server.prot=1", "command line: server.prot: unknown key (did you mean server.port?)");
    expect_override_error("server.port", "command line: \"server.port\" is not of the form key=value");
    expect_override_error("=3", "command line: \"=3\" is not of the form key=value");
    expect_override_error("server=1", "command line: server: a section, not a key; "
                                      "set one of server.host, server.port, server.backlog");
    expect_override_error("schedule=fast", "command line: schedule: \"fast\" is not one of reuseport, shared, round_robin, least_loaded");
    expect_override_error("timeouts.header=2h", "command line: timeouts.header: 2h is out of range 1ms..1h");
    expect_override_error("limits.max_body=lots",
                          "command line: limits.max_body: \"lots\" is not a size "
                          "(use bytes or \"100B\", \"16K\", \"1M\", \"1G\")");
    expect_override_error("routes=[{\"path\": \"x\", \"handler\": \"hello\"}]",
                          "command line: routes[0].path: \"x\" must start with \"/\"");
    expect_override_error("routes=[", "command line: routes: invalid JSON at column 1: ']' expected near end of file");
    expect_override_error("routes[].path=/x", "command line: routes[].path: unknown key");
}

/* --- workers, output, lifetime ----------------------------------------- */

Test(config, workers_zero_means_available_cpus)
{
    struct cfg c;
    ok_text("{\"workers\": 0}", &c);
    cr_assert_geq(c.workers, 1);
    cr_assert_leq(c.workers, CFG_MAX_WORKERS);
    cr_assert_eq(c.workers, expected_workers());
    cfg_free(&c);
    ok_text("{\"workers\": 7}", &c);
    cr_assert_eq(c.workers, 7);
    cfg_free(&c);
}

static void assert_same(const struct cfg *a, const struct cfg *b)
{
    cr_assert_str_eq(a->env, b->env);
    cr_assert_str_eq(a->host, b->host);
    cr_assert_eq(a->port, b->port);
    cr_assert_eq(a->backlog, b->backlog);
    cr_assert_eq(a->workers, b->workers);
    cr_assert_eq(a->schedule, b->schedule);
    cr_assert_eq(a->min_uptime_ms, b->min_uptime_ms);
    cr_assert_eq(a->shutdown_timeout_ms, b->shutdown_timeout_ms);
    cr_assert_eq(memcmp(&a->limits, &b->limits, sizeof a->limits), 0);
    cr_assert_eq(memcmp(&a->timeouts, &b->timeouts, sizeof a->timeouts), 0);
    cr_assert_eq(a->nroutes, b->nroutes);
    for (size_t i = 0; i < a->nroutes; i++) {
        cr_assert_str_eq(a->routes[i].path, b->routes[i].path);
        cr_assert_str_eq(a->routes[i].handler, b->routes[i].handler);
        cr_assert((!a->routes[i].root && !b->routes[i].root) ||
                  (a->routes[i].root && b->routes[i].root && !strcmp(a->routes[i].root, b->routes[i].root)));
    }
    cr_assert(cfg_equal(a, b));
}

Test(config, to_json_round_trip)
{
    struct cfg a, b;
    write_file("default.json",
               "{\"server\": {\"host\": \"::1\", \"port\": 8080, \"backlog\": 100}, \"workers\": 3,\n"
               " \"schedule\": \"shared\", \"min_uptime\": 90, \"shutdown_timeout\": \"2m\",\n"
               " \"limits\": {\"max_body\": 1000, \"max_uri\": \"4K\", \"max_header_size\": \"1M\", \"max_headers\": 7},\n"
               " \"timeouts\": {\"header\": \"250ms\", \"keepalive\": 0, \"body\": 1.5, \"send\": \"1h\"},\n"
               " \"routes\": [{\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"pub\"},\n"
               "            {\"path\": \"/\", \"handler\": \"hello\"}]}");
    cr_assert_eq(load_dir("prod", NULL, 0, &a), 0, "%s", err);
    char *json = cfg_to_json(&a);
    cr_assert_not_null(json);
    cr_assert_eq(cfg_from_json(json, &b, err, sizeof err), 0, "%s\n%s", err, json);
    assert_same(&a, &b);

    /* The text itself: units, bytes, nesting, order, and no "root": null. */
    static const char *const want[] = {
        "\"env\": \"prod\"", "\"server\": {\n    \"host\": \"::1\",\n    \"port\": 8080",
        "\"workers\": 3",    "\"schedule\": \"shared\"", "\"min_uptime\": \"90s\"",
        "\"shutdown_timeout\": \"2m\"", "\"max_body\": 1000", "\"max_uri\": \"4K\"",
        "\"max_header_size\": \"1M\"", "\"header\": \"250ms\"", "\"keepalive\": \"0s\"",
        "\"body\": \"1500ms\"", "\"send\": \"1h\"", "\"routes\": ["};
    const char *at = json;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *p = strstr(at, want[i]);
        cr_assert_not_null(p, "missing or out of order: %s\n%s", want[i], json);
        at = p;
    }
    char root[160];
    snprintf(root, sizeof root, "\"root\": \"%s\"", path_in("pub"));
    cr_assert_eq(strstr(json, root), strstr(json, "\"root\""), "only the static route has a root, absolute:\n%s", json);
    cr_assert_null(strstr(strstr(json, "\"root\"") + 1, "\"root\""), "%s", json);
    free(json);
    cfg_free(&a);
    cfg_free(&b);
}

Test(config, round_trip_of_defaults)
{
    struct cfg a, b;
    cr_assert_eq(load_dir(NULL, NULL, 0, &a), 0, "%s", err);
    char *json = cfg_to_json(&a);
    cr_assert_not_null(json);
    cr_assert_eq(cfg_from_json(json, &b, err, sizeof err), 0, "%s", err);
    assert_same(&a, &b);
    free(json);
    cfg_free(&a);
    cfg_free(&b);
}

Test(config, from_json_validates_like_a_file)
{
    struct cfg c;
    cr_assert_eq(cfg_from_json("{\"server\": {\"port\": 0}}", &c, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "<effective>:1:21: server.port: 0 is out of range 1..65535");
    cr_assert_eq(cfg_from_json("{\"env\": 3}", &c, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "<effective>:1:9: env: 3 is not a string");
    cr_assert_eq(cfg_from_json("{\"envv\": 3}", &c, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "<effective>:1:2: envv: unknown key");
    cr_assert_eq(cfg_from_json("[", &c, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "<effective>:1:1: ']' expected near end of file");
}

Test(config, env_is_not_a_file_key)
{
    expect_error("{\"env\": \"production\"}", ":1:2: env: unknown key");
}

Test(config, free_is_safe)
{
    struct cfg z = {0};
    cfg_free(NULL);
    cfg_free(&z);
    cfg_free(&z);
    cr_assert_null(z.host);

    struct cfg c;
    memset(&c, 0xab, sizeof c);
    cr_assert_eq(load_text("{\"workers\": -1}", &c), -EINVAL);
    cr_assert_null(c.host, "a failed load leaves *out zeroed");
    cr_assert_null(c.routes);
    cfg_free(&c);

    ok_text("{\"routes\": [{\"path\": \"/\", \"handler\": \"hello\"}]}", &c);
    cfg_free(&c);
    cr_assert_null(c.routes);
    cr_assert_eq(c.nroutes, 0);
    cfg_free(&c);
}

Test(config, messages_are_truncated_safely)
{
    struct cfg c;
    char small[16];
    struct cfg_sources s = {.file = path_in("test.json")};

    write_file("test.json", "{\"server\": {\"port\": 70000}}");
    memset(small, 'x', sizeof small);
    cr_assert_eq(cfg_load(&s, &c, small, sizeof small), -EINVAL);
    cr_assert_eq(strlen(small), sizeof small - 1);
    cr_assert_eq(strncmp(small, path_in("test.json"), sizeof small - 1), 0);
    cr_assert_eq(cfg_load(&s, &c, NULL, 0), -EINVAL);
}

Test(config, messages_are_one_line)
{
    expect_override_error("a\nb=1", "command line: a?b: unknown key");
}

Test(config, reload_check)
{
    struct cfg cur, next;
    const char *ov1[] = {"server.port=3001", NULL};
    const char *ov2[] = {"workers=5", "timeouts.send=1s", "routes=[{\"path\":\"/\",\"handler\":\"hello\"}]", NULL};

    cr_assert_eq(load_dir(NULL, NULL, 0, &cur), 0, "%s", err);
    cr_assert_eq(load_dir(NULL, ov2, 0, &next), 0, "%s", err);
    cr_assert_not(cfg_equal(&cur, &next));
    cr_assert_eq(cfg_check_reload(&cur, &next, err, sizeof err), 0, "%s", err);
    cfg_free(&next);
    cr_assert_eq(load_dir(NULL, ov1, 0, &next), 0, "%s", err);
    cr_assert_eq(cfg_check_reload(&cur, &next, err, sizeof err), -EINVAL);
    cr_assert_str_eq(err, "server.port: changed from 3000 to 3001, which needs a restart");
    cfg_free(&next);
    cfg_free(&cur);
}

/* --- reference ---------------------------------------------------------- */

static char *describe(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_not_null(f);
    cfg_describe(f);
    cr_assert_eq(fclose(f), 0);
    return text;
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s: %s (tests run from the repository root)", path, strerror(errno));
    char *text = calloc(1, 1 << 20);
    cr_assert_not_null(text);
    size_t n = fread(text, 1, (1 << 20) - 1, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

Test(config, describe_has_a_row_per_key)
{
    char *text = describe();
    size_t rows = 0;

    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), rows++) {
        size_t pipes = 0;
        for (char *p = line; *p; p++)
            pipes += *p == '|';
        cr_assert_eq(pipes, 8, "%s", line);
    }
    cr_assert_eq(rows, 2 + cfg_key_count());
    free(text);
    text = describe();
    cr_assert_not_null(strstr(text, "| `server.port` | integer | `3000` | 1..65535 | no | `PORT` |"), "%s", text);
    cr_assert_not_null(strstr(text, "| `limits.max_uri` | size | `8K` | 64..1M | yes |  |"), "%s", text);
    cr_assert_not_null(strstr(text, "| `routes[].handler` | enum | required | static, hello, health, products,"));
    free(text);
}

/* docs/config.md holds the reference table verbatim: every key, with its
 * default, bounds and the rest of its row. */
Test(config, docs_match_the_table)
{
    char *docs = read_all("docs/config.md");
    char *text = describe();
    char want[1024];

    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char key[128] = "", def[128] = "";
        sscanf(line, "| %127[^|] | %*[^|] | %127[^|] |", key, def);
        snprintf(want, sizeof want, "\n%s\n", line);
        cr_assert_not_null(strstr(docs, want), "docs/config.md lacks %s with default %s; its row must be:\n%s",
                           key, def, line);
    }
    free(text);
    free(docs);
}

/* The "Reloadable" cell of a reference row ("| `k` | type | def | bounds | no | ..."). */
static const char *reload_cell(const char *line, char key[static 128])
{
    const char *p = line;
    for (int cell = 0; cell < 4 && p; cell++) /* past key, type, default and bounds */
        p = strchr(p + 1, '|');
    if (!p || sscanf(line, "| `%127[^`]`", key) != 1)
        return NULL;
    return strncmp(p, "| no |", 6) == 0 ? "no" : strncmp(p, "| yes |", 7) == 0 ? "yes" : NULL;
}

/* docs/operations.md's list of keys a reload leaves as they were is the set
 * of keys the table marks not reloadable (cfg_keep_fixed walks the same). */
Test(config, operations_lists_every_restart_only_key)
{
    char *docs = read_all("docs/operations.md");
    char *text = describe();
    char key[128], want[140];
    const char *start = strstr(docs, "Keys that need a restart (");
    cr_assert_not_null(start, "docs/operations.md lost its list of restart-only keys");
    start += strlen("Keys that need a restart (");
    char *end = strchr(start, ')');
    cr_assert_not_null(end);
    *end = '\0';
    size_t listed = 0, fixed = 0;
    for (const char *p = start; (p = strchr(p, '`')); p++, listed++)
        cr_assert_not_null(p = strchr(p + 1, '`'), "unbalanced backticks in: %s", start);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        const char *cell = reload_cell(line, key);
        if (!cell)
            continue;
        snprintf(want, sizeof want, "`%s`", key);
        if (strcmp(cell, "no") == 0) {
            fixed++;
            cr_assert_not_null(strstr(start, want), "docs/operations.md does not list %s, which needs a restart", key);
        } else {
            cr_assert_null(strstr(start, want), "docs/operations.md lists %s, which is reloadable", key);
        }
    }
    cr_assert_gt(fixed, 0);
    cr_assert_eq(listed, fixed, "docs/operations.md lists %zu keys, the table has %zu restart-only ones:\n%s", listed,
                 fixed, start);
    free(text);
    free(docs);
}
