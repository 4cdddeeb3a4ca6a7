/*
 * Unit tests for the master's side of src/proc/checker.c, with scripts in
 * the checker's place (the `exe` it starts): a verdict of the right size is
 * counted, a message of any other size or type gets the checker killed and
 * restarted, a checker that keeps dying is restarted with a growing delay,
 * and no checker starts without a group that has checks.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "proc/checker.h"
#include "proxy/health.h"
#include "proxy/upstream.h"
#include "modules.h"
#include "testloop.h"

/* Route handlers and their keys, registered as main registers them. */
__attribute__((constructor)) static void register_modules(void)
{
    modules_register();
}

static uv_loop_t loop;
static struct up_state_msg msgs[16];
static int nmsgs;
static char script[64];

static void broadcast(void *arg, const void *msg, size_t len)
{
    (void)arg;
    cr_assert_eq(len, sizeof(struct up_state_msg));
    if (nmsgs < 16)
        memcpy(&msgs[nmsgs++], msg, len);
}

/* A checker stand-in: python3 running `body`, with the channel at fd 3. */
static void write_script(const char *body)
{
    snprintf(script, sizeof(script), "/tmp/cohort-test-checker-%d", (int)getpid());
    FILE *f = fopen(script, "w");
    cr_assert_not_null(f);
    fprintf(f, "#!/usr/bin/python3\nimport os, struct, sys, time\n%s\n", body);
    fclose(f);
    chmod(script, 0700);
}

static void load_cfg(struct cfg *cfg, int checks)
{
    char err[256];
    const char *text = checks ? "{\"app\": \"none\", \"upstreams\": {\"app\": {\"servers\": [\"127.0.0.1:1\"],"
                                " \"health\": {\"path\": \"/h\", \"interval\": \"1m\", \"fall\": 1, \"rise\": 1}}},"
                                " \"routes\": [{\"path\": \"/*\", \"handler\": \"proxy\", \"upstream\": \"app\"}]}"
                              : "{\"app\": \"none\", \"upstreams\": {\"app\": {\"servers\": [\"127.0.0.1:1\"]}},"
                                " \"routes\": [{\"path\": \"/*\", \"handler\": \"proxy\", \"upstream\": \"app\"}]}";
    cr_assert_eq(cfg_from_json(text, cfg, err, sizeof(err)), 0, "%s", err);
}

/* The checker's status field `key` (an integer, or a string compared to `want`). */
static json_int_t status_int(struct checker *c, const char *key)
{
    json_t *st = checker_status(c);
    json_int_t v = json_integer_value(json_object_get(st, key));
    json_decref(st);
    return v;
}

static int status_has(struct checker *c, const char *key, const char *part)
{
    json_t *st = checker_status(c);
    const char *v = json_string_value(json_object_get(st, key));
    int r = v && strstr(v, part);
    json_decref(st);
    return r;
}

/* Runs the loop until `done` or max_ms. */
static int run_until(int (*done)(struct checker *), struct checker *c, uint64_t max_ms)
{
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + max_ms;
    while (!done(c) && uv_now(&loop) < end)
        run_for(&loop, 20);
    return done(c);
}

static struct checker *setup(struct cfg *cfg, struct hc **hc, int checks)
{
    uv_loop_init(&loop);
    nmsgs = 0;
    load_cfg(cfg, checks);
    *hc = hc_new_role(HC_STATE, &loop, cfg, NULL, broadcast, NULL);
    cr_assert_not_null(*hc);
    struct checker *c = checker_new(&loop, script, *hc);
    cr_assert_not_null(c);
    cr_assert_eq(checker_config(c, cfg), 0);
    return c;
}

static void teardown(struct checker *c, struct hc *hc, struct cfg *cfg)
{
    checker_free(c);
    hc_close(hc);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "every handle closed");
    cfg_free(cfg);
    unlink(script);
}

static int got_down(struct checker *c)
{
    (void)c;
    return nmsgs > 0;
}

Test(checker, a_verdict_is_counted)
{
    write_script("rec = b'app'.ljust(48, b'\\0') + b'127.0.0.1:1'.ljust(64, b'\\0') + struct.pack('I', 0)"
                 " + b'scripted'.ljust(68, b'\\0')\n"
                 "os.write(3, struct.pack('HHI', 9, 0, len(rec)) + rec)\ntime.sleep(30)");
    struct cfg cfg;
    struct hc *hc;
    struct checker *c = setup(&cfg, &hc, 1);
    cr_assert(status_has(c, "state", "running"));
    cr_assert_gt(status_int(c, "pid"), 0);
    cr_assert(run_until(got_down, c, 10000), "no state message");
    cr_assert_str_eq(msgs[0].server, "127.0.0.1:1");
    cr_assert_eq(msgs[0].flags, UP_F_DOWN, "fall 1: one failed verdict marks it down");
    cr_assert_eq(status_int(c, "restarts"), 0);
    teardown(c, hc, &cfg);
}

static int killed_and_back(struct checker *c)
{
    return status_int(c, "restarts") >= 1 && status_has(c, "last_exit", "signal 9");
}

Test(checker, anything_but_a_verdict_gets_it_killed_and_restarted)
{
    /* type 9 with a 5-byte payload, then a verdict that must not count */
    write_script("os.write(3, struct.pack('HHI', 9, 0, 5) + b'hello')\n"
                 "rec = b'app'.ljust(48, b'\\0') + b'127.0.0.1:1'.ljust(64, b'\\0') + bytes(72)\n"
                 "os.write(3, struct.pack('HHI', 9, 0, len(rec)) + rec)\ntime.sleep(30)");
    struct cfg cfg;
    struct hc *hc;
    struct checker *c = setup(&cfg, &hc, 1);
    cr_assert(run_until(killed_and_back, c, 10000), "not killed: restarts %lld",
              (long long)status_int(c, "restarts"));
    run_for(&loop, 200);
    cr_assert_eq(nmsgs, 0, "a verdict after a bad message was counted");
    teardown(c, hc, &cfg);
}

static int backing_off(struct checker *c)
{
    return status_int(c, "restarts") >= 3 && status_has(c, "state", "crash_loop");
}

Test(checker, one_that_keeps_dying_waits_longer_each_time)
{
    write_script("sys.exit(3)");
    struct cfg cfg;
    struct hc *hc;
    struct checker *c = setup(&cfg, &hc, 1);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    cr_assert(run_until(backing_off, c, 15000), "restarts %lld", (long long)status_int(c, "restarts"));
    /* 100 + 200 ms of backoff at least before the third exit */
    cr_assert_geq(uv_now(&loop) - t0, 300);
    cr_assert(status_has(c, "last_exit", "exited with status 3"));
    json_t *st = checker_status(c);
    cr_assert_gt(json_real_value(json_object_get(st, "next_try_s")), 0.0);
    json_decref(st);
    teardown(c, hc, &cfg);
}

Test(checker, none_without_checks_and_gone_when_they_go)
{
    write_script("time.sleep(30)");
    struct cfg cfg, with;
    struct hc *hc;
    struct checker *c = setup(&cfg, &hc, 0);
    json_t *st = checker_status(c);
    cr_assert(json_is_null(st), "a checker without checks");
    json_decref(st);
    load_cfg(&with, 1);
    cr_assert_eq(checker_config(c, &with), 0);
    json_int_t pid = status_int(c, "pid");
    cr_assert_gt(pid, 0);
    cr_assert_eq(checker_config(c, &with), 0);
    cr_assert_eq(status_int(c, "pid"), pid, "the same checked groups keep the same checker");
    cr_assert_eq(checker_config(c, &cfg), 0);
    st = checker_status(c);
    cr_assert(json_is_null(st));
    json_decref(st);
    run_for(&loop, 300);
    cr_assert(kill((pid_t)pid, 0) < 0, "the checker is still there");
    cfg_free(&with);
    teardown(c, hc, &cfg);
}
