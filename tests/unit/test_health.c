/*
 * Unit tests for src/proxy/health.c: the fall/rise state machine, status
 * specs, and the master's checker on a real loop against a tiny server in
 * the test (answers 200 or 503, or nothing at all), with reports of
 * passive failures from "workers" and the messages it broadcasts; the
 * split between the checker process (HC_PROBE: checks, verdicts out) and
 * the master (HC_STATE: verdicts in, no connection of its own).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "proxy/health.h"
#include "proxy/upstream.h"
#include "testloop.h"

Test(health, fall_and_rise)
{
    struct hc_state s = {0};
    cr_assert_eq(hc_record(&s, 0, 3, 2), 0);
    cr_assert_eq(hc_record(&s, 0, 3, 2), 0);
    cr_assert_eq(hc_record(&s, 1, 3, 2), 0, "a pass in between starts the count again");
    cr_assert_eq(hc_record(&s, 0, 3, 2), 0);
    cr_assert_eq(hc_record(&s, 0, 3, 2), 0);
    cr_assert_eq(hc_record(&s, 0, 3, 2), 1, "the third failure in a row: down");
    cr_assert_eq(s.down, 1);
    cr_assert_eq(hc_record(&s, 0, 3, 2), 0, "down stays down");
    cr_assert_eq(hc_record(&s, 1, 3, 2), 0);
    cr_assert_eq(hc_record(&s, 0, 3, 2), 0);
    cr_assert_eq(hc_record(&s, 1, 3, 2), 0);
    cr_assert_eq(hc_record(&s, 1, 3, 2), 1, "two passes in a row: up");
    cr_assert_eq(s.down, 0);
    cr_assert_eq(hc_record(&s, 1, 3, 2), 0);
    /* fall 1, rise 1 */
    struct hc_state t = {0};
    cr_assert_eq(hc_record(&t, 0, 1, 1), 1);
    cr_assert_eq(hc_record(&t, 1, 1, 1), 1);
}

Test(health, status_specs)
{
    cr_assert(hc_status_ok("2xx", 200));
    cr_assert(hc_status_ok("2xx", 299));
    cr_assert(!hc_status_ok("2xx", 301));
    cr_assert(!hc_status_ok("2xx", 503));
    cr_assert(hc_status_ok("200,204", 204));
    cr_assert(!hc_status_ok("200,204", 201));
    cr_assert(hc_status_ok("200-399", 302));
    cr_assert(!hc_status_ok("200-399", 400));
    cr_assert(hc_status_ok("2xx,301,500-503", 502));
    cr_assert(hc_status_ok("2xx,301,500-503", 301));
    cr_assert(!hc_status_ok("2xx,301,500-503", 504));
}

/* --- the checker on a loop --------------------------------------------------- */

static uv_loop_t loop;
static uv_tcp_t listener;
static int answer = 200;        /* 0: accept and say nothing */
static int port;
static struct up_state_msg msgs[64];
static int nmsgs;

static void broadcast(void *arg, const void *msg, size_t len)
{
    (void)arg;
    cr_assert_eq(len, sizeof(struct up_state_msg));
    if (nmsgs < 64)
        memcpy(&msgs[nmsgs++], msg, len);
}

struct client {
    uv_tcp_t tcp;
    uv_write_t w;
    char buf[1024];
};

static void client_closed(uv_handle_t *h)
{
    free(h->data);
}

static void client_written(uv_write_t *w, int status)
{
    (void)status;
    struct client *c = w->data;
    uv_close((uv_handle_t *)&c->tcp, client_closed);
}

static void client_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct client *c = h->data;
    (void)hint;
    *b = uv_buf_init(c->buf, sizeof(c->buf));
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct client *c = s->data;
    (void)b;
    if (n < 0) {
        uv_close((uv_handle_t *)&c->tcp, client_closed);
        return;
    }
    if (n == 0 || !answer || !memmem(c->buf, (size_t)n, "\r\n\r\n", 4))
        return;
    cr_assert(memmem(c->buf, (size_t)n, "GET /health HTTP/1.1\r\n", 22) == c->buf);
    static char resp[128];
    int len = snprintf(resp, sizeof(resp), "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", answer);
    uv_buf_t out = uv_buf_init(resp, (unsigned)len);
    uv_read_stop(s);
    c->w.data = c;
    uv_write(&c->w, s, &out, 1, client_written);
}

static int accepted; /* connections the tiny server took */

static void on_conn(uv_stream_t *server, int status)
{
    cr_assert_eq(status, 0);
    accepted++;
    struct client *c = calloc(1, sizeof(*c));
    uv_tcp_init(&loop, &c->tcp);
    c->tcp.data = c;
    cr_assert_eq(uv_accept(server, (uv_stream_t *)&c->tcp), 0);
    uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read);
}

static struct cfg cfg;
static struct cfg_upstream group;
static struct cfg_upstream_server servers[2];
static char addr0[32];

static void setup_cfg(void)
{
    struct sockaddr_in a;
    uv_loop_init(&loop);
    uv_tcp_init(&loop, &listener);
    uv_ip4_addr("127.0.0.1", 0, &a);
    cr_assert_eq(uv_tcp_bind(&listener, (struct sockaddr *)&a, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&listener, 64, on_conn), 0);
    int len = sizeof(a);
    uv_tcp_getsockname(&listener, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    snprintf(addr0, sizeof(addr0), "127.0.0.1:%d", port);
    servers[0] = (struct cfg_upstream_server){.address = addr0, .weight = 1};
    servers[1] = (struct cfg_upstream_server){.address = "127.0.0.1:1", .weight = 2};
    group = (struct cfg_upstream){.name = "app", .servers = servers, .nservers = 2};
    group.health.path = "/health";
    group.health.status = "2xx";
    group.health.interval_ms = 100;
    group.health.timeout_ms = 80;
    group.health.fall = 2;
    group.health.rise = 2;
    group.passive.failures = 3;
    group.passive.ejection_time_ms = 200;
    group.passive.max_ejection_time_ms = 1000;
    group.passive.max_ejected_percent = 50;
    cfg.upstreams = &group;
    cfg.nupstreams = 1;
    nmsgs = 0;
}

static int last_flags(const char *server)
{
    for (int i = nmsgs - 1; i >= 0; i--)
        if (strcmp(msgs[i].server, server) == 0)
            return (int)msgs[i].flags;
    return -1;
}

static uint64_t now_ms(void)
{
    uv_update_time(&loop);
    return uv_now(&loop);
}

/* Runs the loop in 10 ms slices until the server's last state is `want`
 * or max_ms pass (a paused machine costs a slice, not the whole wait). */
static int await_flags(const char *server, int want, uint64_t max_ms)
{
    uint64_t end = now_ms() + max_ms;
    while (last_flags(server) != want && uv_now(&loop) < end)
        run_for(&loop, 10);
    return last_flags(server);
}

Test(health, checks_mark_down_and_up)
{
    setup_cfg();
    /* two checks that each take over 250 ms, in a row, would be a failure */
    group.health.interval_ms = 300;
    group.health.timeout_ms = 250;
    struct metrics_shm *shm = calloc(1, sizeof(*shm));
    struct hc *h = hc_new(&loop, &cfg, shm, broadcast, NULL);
    cr_assert_not_null(h);
    cr_assert_str_eq(shm->upstream[0].name, addr0);
    cr_assert_str_eq(shm->upstream[1].name, "127.0.0.1:1");
    cr_assert_str_eq(shm->upstream[1].group, "app");
    cr_assert_eq(shm->upstream[1].weight, 2);
    /* port 1 refuses: down after two checks; ours answers 200 */
    cr_assert_eq(await_flags("127.0.0.1:1", UP_F_DOWN, 5000), UP_F_DOWN, "%d messages", nmsgs);
    cr_assert_eq(last_flags(addr0), -1, "an up server that stays up says nothing");
    cr_assert_eq(shm->upstream[1].up, 0);
    cr_assert_eq(shm->upstream[1].state, METRICS_UP_DOWN);
    cr_assert_eq(shm->upstream[0].up, 1);
    answer = 503;
    cr_assert_eq(await_flags(addr0, UP_F_DOWN, 5000), UP_F_DOWN, "503 fails the check");
    answer = 0; /* accepts, says nothing: timeouts */
    run_for(&loop, 3 * group.health.interval_ms);
    cr_assert_eq(last_flags(addr0), UP_F_DOWN);
    answer = 200;
    int before = nmsgs;
    cr_assert_eq(await_flags(addr0, 0, 5000), 0, "back up after two passes");
    cr_assert(nmsgs > before);
    int i;
    for (i = nmsgs - 1; i >= 0 && strcmp(msgs[i].server, addr0); i--)
        ;
    cr_assert_neq(msgs[i].since_ms, 0, "the time it came back, for slow start");
    cr_assert_eq(shm->upstream[0].up, 1);
    /* a new worker gets the state of the servers that are not simply up */
    nmsgs = 0;
    hc_snapshot(h, broadcast, NULL);
    cr_assert_eq(last_flags("127.0.0.1:1"), UP_F_DOWN);
    hc_close(h);
    uv_close((uv_handle_t *)&listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "every handle closed");
    free(shm);
}

static void report(struct hc *h, const char *server)
{
    struct up_report_msg m = {.failures = 3, .why = UP_FAIL_REFUSED};
    snprintf(m.group, sizeof(m.group), "app");
    snprintf(m.server, sizeof(m.server), "%s", server);
    hc_report(h, &m, sizeof(m));
}

Test(health, reports_eject_for_a_while_within_the_percent)
{
    setup_cfg();
    group.health.path = NULL; /* passive only */
    struct metrics_shm *shm = calloc(1, sizeof(*shm));
    struct hc *h = hc_new(&loop, &cfg, shm, broadcast, NULL);
    cr_assert_not_null(h);
    uint64_t t_first = now_ms();
    report(h, addr0);
    cr_assert_eq(last_flags(addr0), UP_F_EJECTED);
    cr_assert_eq(shm->upstream[0].state, METRICS_UP_EJECTED);
    cr_assert_eq(shm->upstream[0].ejections, 1);
    report(h, "127.0.0.1:1");
    cr_assert_eq(last_flags("127.0.0.1:1"), -1, "50%% of 2: the second stays in");
    report(h, "10.9.9.9:1"); /* unknown servers are ignored */
    cr_assert_eq(await_flags(addr0, 0, 5000), 0, "back after ejection_time");
    cr_assert_geq(now_ms() - t_first, 200, "back before ejection_time");
    uint64_t t0 = now_ms();
    report(h, addr0);
    cr_assert_eq(last_flags(addr0), UP_F_EJECTED);
    cr_assert_eq(await_flags(addr0, 0, 5000), 0);
    cr_assert_geq(now_ms() - t0, 400, "twice as long the second time: back after %llu ms",
                  (unsigned long long)(now_ms() - t0));
    cr_assert_eq(shm->upstream[0].ejections, 2);
    /* a reload keeps the state of servers found again */
    report(h, addr0);
    servers[1].address = "127.0.0.1:2";
    cr_assert_eq(hc_reload(h, &cfg), 0);
    cr_assert_eq(shm->upstream[0].state, METRICS_UP_EJECTED);
    cr_assert_str_eq(shm->upstream[1].name, "127.0.0.1:2");
    cr_assert_eq(shm->upstream[0].ejections, 3);
    hc_close(h);
    uv_close((uv_handle_t *)&listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "every handle closed");
    free(shm);
}

/* --- the checker process and the master, apart ------------------------------ */

static struct hc_result_msg verdicts[64];
static int nverdicts;

static void collect_verdict(void *arg, const void *msg, size_t len)
{
    (void)arg;
    cr_assert_eq(len, sizeof(struct hc_result_msg));
    if (nverdicts < 64)
        memcpy(&verdicts[nverdicts++], msg, len);
}

/* The last verdict on a server: 1 passed, 0 failed, -1 none yet. */
static int last_verdict(const char *server, char *why, size_t whylen)
{
    for (int i = nverdicts - 1; i >= 0; i--)
        if (strcmp(verdicts[i].server, server) == 0) {
            snprintf(why, whylen, "%s", verdicts[i].why);
            return (int)verdicts[i].ok;
        }
    return -1;
}

static int await_verdict(const char *server, int want, const char *why_part, uint64_t max_ms)
{
    char why[80] = "";
    uint64_t end = now_ms() + max_ms;
    nverdicts = 0;
    while (!(last_verdict(server, why, sizeof(why)) == want && strstr(why, why_part)) && uv_now(&loop) < end)
        run_for(&loop, 10);
    return last_verdict(server, why, sizeof(why)) == want && strstr(why, why_part);
}

Test(health, the_checker_sends_each_verdict_and_keeps_no_state)
{
    setup_cfg();
    answer = 200;
    struct hc *h = hc_new_role(HC_PROBE, &loop, &cfg, NULL, collect_verdict, NULL);
    cr_assert_not_null(h);
    cr_assert(await_verdict("127.0.0.1:1", 0, "connection refused", 5000), "a refused connect fails");
    cr_assert(await_verdict(addr0, 1, "", 5000), "a 200 passes");
    cr_assert_str_eq(verdicts[nverdicts - 1].group, "app");
    answer = 503;
    cr_assert(await_verdict(addr0, 0, "status 503", 5000), "a 503 fails");
    /* every check gives a verdict, not only a flip: three failures in a row */
    nverdicts = 0;
    run_for(&loop, 4 * group.health.interval_ms);
    int fails = 0;
    for (int i = 0; i < nverdicts; i++)
        fails += strcmp(verdicts[i].server, addr0) == 0 && verdicts[i].ok == 0;
    cr_assert_geq(fails, 2, "%d failed verdicts", fails);
    cr_assert_eq(nmsgs, 0, "no state message leaves the checker");
    hc_close(h);
    answer = 200;
    uv_close((uv_handle_t *)&listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "every handle closed");
}

static void verdict_for(struct hc *h, const char *grp, const char *server, uint32_t ok, const char *why)
{
    struct hc_result_msg m;
    memset(&m, 0, sizeof(m));
    snprintf(m.group, sizeof(m.group), "%s", grp);
    snprintf(m.server, sizeof(m.server), "%s", server);
    m.ok = ok;
    snprintf(m.why, sizeof(m.why), "%s", why);
    hc_result(h, &m, sizeof(m));
}

Test(health, the_master_counts_verdicts_and_connects_nowhere)
{
    setup_cfg();
    struct metrics_shm *shm = calloc(1, sizeof(*shm));
    struct hc *h = hc_new_role(HC_STATE, &loop, &cfg, shm, broadcast, NULL);
    cr_assert_not_null(h);
    accepted = 0;
    run_for(&loop, 4 * group.health.interval_ms);
    cr_assert_eq(accepted, 0, "the master opened %d check connections", accepted);
    cr_assert_eq(nmsgs, 0);

    /* what is not a verdict on a known server of a checked group changes nothing */
    struct hc_result_msg m;
    memset(&m, 'A', sizeof(m)); /* no string ends */
    for (int i = 0; i < 3; i++)
        hc_result(h, &m, sizeof(m));
    char big[sizeof(m) + 8] = {0};
    hc_result(h, big, sizeof(big));
    hc_result(h, big, sizeof(m) - 1);
    verdict_for(h, "app", "10.9.9.9:1", 0, "unknown");
    verdict_for(h, "other", addr0, 0, "unknown group");
    cr_assert_eq(nmsgs, 0, "%d messages", nmsgs);

    /* fall 2: two failures down (whatever bytes the reason holds), rise 2: two passes up */
    verdict_for(h, "app", addr0, 0, "status \x01\x7f\xff 503");
    cr_assert_eq(nmsgs, 0);
    verdict_for(h, "app", addr0, 7, ""); /* only 1 passes */
    cr_assert_eq(last_flags(addr0), UP_F_DOWN);
    cr_assert_eq(shm->upstream[0].state, METRICS_UP_DOWN);
    verdict_for(h, "app", addr0, 1, "");
    cr_assert_eq(last_flags(addr0), UP_F_DOWN);
    verdict_for(h, "app", addr0, 1, "");
    cr_assert_eq(last_flags(addr0), 0);
    cr_assert_eq(shm->upstream[0].up, 1);

    /* a group whose checks were turned off takes no verdict */
    nmsgs = 0;
    group.health.path = NULL;
    cr_assert_eq(hc_reload(h, &cfg), 0);
    verdict_for(h, "app", addr0, 0, "late");
    verdict_for(h, "app", addr0, 0, "late");
    cr_assert_eq(nmsgs, 0);
    hc_close(h);
    uv_close((uv_handle_t *)&listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0, "every handle closed");
    free(shm);
}
