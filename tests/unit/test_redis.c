/* The Redis connection: URL parsing, and against a real redis-server of
 * its own (free port, own folder, stopped by pid): commands, a hung Redis
 * caught by the command timeout (also after thousands of WAITs), WAIT's
 * cost bounded by wait_timeout, reconnecting after a restart. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "redis/redis.h"
#include "testnet.h"

Test(redis_url, forms)
{
    struct redis_url u;
    cr_assert_eq(redis_parse_url("redis://127.0.0.1:6390", &u), 0);
    cr_assert_str_eq(u.host, "127.0.0.1");
    cr_assert_eq(u.port, 6390);
    cr_assert_str_eq(u.password, "");
    cr_assert_eq(u.db, 0);
    cr_assert_eq(redis_parse_url("redis://cache.internal", &u), 0);
    cr_assert_str_eq(u.host, "cache.internal");
    cr_assert_eq(u.port, 6379);
    cr_assert_eq(redis_parse_url("redis://:pw@h:1/3", &u), 0);
    cr_assert_str_eq(u.password, "pw");
    cr_assert_str_eq(u.host, "h");
    cr_assert_eq(u.port, 1);
    cr_assert_eq(u.db, 3);
    cr_assert_eq(redis_parse_url("redis://user:p%40ss@h", &u), 0);
    cr_assert_str_eq(u.password, "p%40ss");
    cr_assert_eq(redis_parse_url("redis://[::1]:7000", &u), 0);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 7000);
    const char *bad[] = {"http://h", "redis://", "redis://:6379", "redis://h:0", "redis://h:70000", "redis://h:x",
                         "redis://h/x", "redis://[::1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(redis_parse_url(bad[i], &u), -EINVAL, "%s", bad[i]);
}

/* --- against a real server ---------------------------------------------- */

static pid_t redis_pid;
static int redis_port;
static char dir[64];

static int can_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)redis_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void start_redis(void)
{
    redis_pid = spawn_redis_server(redis_port, dir);
    cr_assert_neq(redis_pid, -1);
    for (int i = 0; i < 200 && !can_connect(); i++)
        usleep(20000);
    cr_assert(can_connect(), "redis-server did not start (is it installed? scripts/deps.sh test)");
}

static void stop_redis(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/cohort-test-redis-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    redis_port = free_port();
    start_redis();
}

static void teardown(void)
{
    char cmd[128];
    stop_redis();
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    system(cmd);
}

struct probe {
    uv_loop_t *loop;
    struct redis *r;
    int replies, nulls, ups, downs;
    long long last;
    uv_timer_t timer;
    int step;
    int acks, eios;        /* redis_wait answers: a count, or -EIO */
    uint64_t acked_at[4];  /* loop time of the first answers */
};

static void on_state(void *arg, int up)
{
    struct probe *p = arg;
    if (up)
        p->ups++;
    else
        p->downs++;
}

static void on_reply(void *arg, redisReply *reply)
{
    struct probe *p = arg;
    if (!reply) {
        p->nulls++;
        return;
    }
    p->replies++;
    p->last = reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;
}

/* Runs the loop until cond holds or ms pass. */
static int run_until(struct probe *p, int (*cond)(struct probe *), int ms)
{
    uint64_t end = uv_now(p->loop) + (uint64_t)ms;
    while (!cond(p) && uv_now(p->loop) < end) {
        uv_run(p->loop, UV_RUN_NOWAIT);
        usleep(1000);
        uv_update_time(p->loop);
    }
    return cond(p);
}

static int is_up(struct probe *p) { return redis_up(p->r); }
static int is_down(struct probe *p) { return !redis_up(p->r); }
static int got_null(struct probe *p) { return p->nulls > 0; }
static int got_reply(struct probe *p) { return p->replies > 0; }

static void closed(void *arg)
{
    *(int *)arg = 1;
}

static struct redis *connect_waiting(struct probe *p, uv_loop_t *loop, int64_t timeout_ms, int replicas,
                                     int64_t wait_ms)
{
    char url[64], err[128];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", redis_port);
    struct redis_opts o = {.url = url, .command_timeout_ms = timeout_ms, .on_state = on_state, .arg = p,
                           .wait_replicas = replicas, .wait_timeout_ms = wait_ms};
    p->loop = loop;
    p->r = redis_new(loop, &o, err, sizeof err);
    cr_assert_not_null(p->r, "%s", err);
    cr_assert(run_until(p, is_up, 3000), "never connected");
    return p->r;
}

static struct redis *connect_probe(struct probe *p, uv_loop_t *loop, int64_t timeout_ms)
{
    return connect_waiting(p, loop, timeout_ms, 0, 0);
}

static void on_acked(void *arg, int acked)
{
    struct probe *p = arg;
    int n = p->acks + p->eios;
    if (n < 4)
        p->acked_at[n] = uv_now(p->loop);
    if (acked < 0)
        p->eios++;
    else
        p->acks++;
}

static void incr(struct probe *p)
{
    const char *argv[] = {"INCRBY", "k", "5"};
    cr_assert_eq(redis_command(p->r, on_reply, p, 3, argv, NULL), 0);
}

static void close_probe(struct probe *p)
{
    int done = 0;
    redis_close(p->r, closed, &done);
    uv_run(p->loop, UV_RUN_DEFAULT);
    cr_assert(done, "close never finished");
    cr_assert_eq(uv_loop_close(p->loop), 0, "a handle was left open");
}

TestSuite(redis, .init = setup, .fini = teardown, .timeout = 30);

Test(redis, commands_and_a_clean_close)
{
    uv_loop_t loop;
    struct probe p = {0};
    uv_loop_init(&loop);
    connect_probe(&p, &loop, 10000); /* a paused machine must not look like a hung Redis */
    for (int i = 0; i < 100; i++)
        incr(&p); /* pipelined: all leave in this iteration */
    cr_assert_eq(redis_pending(p.r), 100);
    close_probe(&p); /* replies still due arrive before the close */
    cr_assert_eq(p.replies, 100);
    cr_assert_eq(p.last, 500);
    cr_assert_eq(p.nulls, 0);
}

Test(redis, hung_server_hits_the_command_timeout_then_recovers)
{
    uv_loop_t loop;
    struct probe p = {0};
    uv_loop_init(&loop);
    connect_probe(&p, &loop, 200);
    kill(redis_pid, SIGSTOP);
    incr(&p);
    cr_assert(run_until(&p, got_null, 2000), "no failure after the command timeout");
    cr_assert_eq(p.replies, 0);
    cr_assert_eq(p.downs, 1);
    const char *argv[] = {"PING"};
    cr_assert_eq(redis_command(p.r, on_reply, &p, 1, argv, NULL), -ENOTCONN, "refused while down");
    kill(redis_pid, SIGCONT);
    /* the 200 ms timeout holds for the next command too: on a paused machine
     * it can fail once more, and is sent again once the connection is back */
    for (int i = 0; i < 10 && p.replies == 0; i++) {
        cr_assert(run_until(&p, is_up, 5000), "did not reconnect");
        incr(&p);
        run_until(&p, got_reply, 2000);
    }
    cr_assert_gt(p.replies, 0, "no reply once Redis answers again");
    close_probe(&p);
}

/* A listener on Redis's port that takes each connection and closes it
 * at once: every reconnect attempt is seen, and each fails (no PONG). */
#define MAX_ATTEMPTS 16
static int fake_fd = -1;
static uint64_t attempt_ms[MAX_ATTEMPTS];
static int attempts;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void listen_fake(void)
{
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)redis_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    fake_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    cr_assert_geq(fake_fd, 0);
    setsockopt(fake_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    cr_assert_eq(bind(fake_fd, (struct sockaddr *)&a, sizeof a), 0, "bind: %s", strerror(errno));
    cr_assert_eq(listen(fake_fd, 16), 0);
}

/* Takes the attempts that arrived; true once MAX_ATTEMPTS did. */
static int take_attempts(struct probe *p)
{
    int c;
    (void)p;
    while ((c = accept(fake_fd, NULL, NULL)) >= 0) {
        if (attempts < MAX_ATTEMPTS)
            attempt_ms[attempts++] = mono_ms();
        close(c);
    }
    return attempts >= MAX_ATTEMPTS;
}

Test(redis, restart_reconnects_with_backoff)
{
    uv_loop_t loop;
    struct probe p = {0};
    uv_loop_init(&loop);
    connect_probe(&p, &loop, 10000);
    stop_redis();
    listen_fake();
    cr_assert(run_until(&p, is_down, 5000), "a killed Redis is noticed");
    /* attempt n waits min(n x 100 ms, 3 s) after the failure before it:
     * 100 ms, 200, 300... so 6 attempts take 2.1 s; a tight loop would
     * make hundreds */
    run_until(&p, take_attempts, 2500);
    cr_assert_eq(p.ups, 1, "up while Redis is away");
    cr_assert_geq(attempts, 4, "only %d reconnect attempts in 2.5 s", attempts);
    cr_assert_leq(attempts, 8, "%d reconnect attempts in 2.5 s: no backoff", attempts);
    /* the i-th gap seen follows a failure numbered i + 1 or later (the first
     * attempts may have been refused before the listener was up); a timer
     * never fires early, and the failure comes after the accept */
    for (int i = 1; i < attempts; i++) {
        uint64_t gap = attempt_ms[i] - attempt_ms[i - 1], floor = (uint64_t)(i + 1) * 100;
        cr_assert_geq(gap + 2, floor, "attempt %d came %llu ms after the one before, not %llu or more", i,
                      (unsigned long long)gap, (unsigned long long)floor);
    }
    close(fake_fd);
    fake_fd = -1;
    start_redis();
    cr_assert(run_until(&p, is_up, 5000), "did not reconnect");
    cr_assert_eq(p.ups, 2);
    incr(&p);
    cr_assert(run_until(&p, got_reply, 2000));
    cr_assert_eq(p.last, 5, "a new, empty Redis");
    close_probe(&p);
}

Test(redis, close_while_down)
{
    uv_loop_t loop;
    struct probe p = {0};
    uv_loop_init(&loop);
    connect_probe(&p, &loop, 10000);
    stop_redis();
    cr_assert(run_until(&p, is_down, 5000));
    close_probe(&p);
}

/* --- deadlines ----------------------------------------------------------- */

static int want_acks;
static int all_acked(struct probe *p) { return p->acks >= want_acks; }
static int add_failed(struct probe *p) { return p->nulls > 0 && p->eios > 0; }

/* An add as the shop makes it: a write, then a WAIT for it. */
static void add(struct probe *p)
{
    incr(p);
    cr_assert_eq(redis_wait(p->r, on_acked, p), 0);
}

/* n adds, two at a time (the second's WAIT goes out when the first's is
 * answered): n WAITs, each answered long before its timeout. */
static void serve_adds(struct probe *p, int n)
{
    for (int i = 0; i < n; i += 2) {
        add(p);
        add(p);
        want_acks = p->acks + 2;
        /* blocking iterations (the tick bounds each): thousands of round trips in a few seconds */
        uint64_t end = uv_now(p->loop) + 5000;
        while (!all_acked(p) && uv_now(p->loop) < end)
            uv_run(p->loop, UV_RUN_ONCE);
        cr_assert(all_acked(p), "adds not answered: %d", p->acks);
    }
    cr_assert_eq(p->nulls + p->eios, 0);
}

/* The server stalls (SIGSTOP: no reset, no reply); what was sent after it
 * fails within `limit_ms`. */
static uint64_t stall_until(struct probe *p, int (*failed)(struct probe *), uint64_t t0)
{
    int ok = run_until(p, failed, 5000);
    uint64_t took = uv_now(p->loop) - t0;
    kill(redis_pid, SIGCONT);
    cr_assert(ok, "a stalled server held it %llu ms", (unsigned long long)took);
    return took;
}

Test(redis, deadlines_hold_after_thousands_of_waits_and_on_a_new_connection)
{
    /* no replica: WAIT 0 is answered at once, each well before its timeout;
     * a command timeout of 1 s, so that a loaded machine's pause during the
     * thousands of adds does not fail them (with the deadline pushed by every
     * WAIT, 3000 WAITs would hold the stalled add 25 minutes) */
    const int64_t cmd_ms = 1000, wait_ms = 500;
    const uint64_t limit = (uint64_t)(cmd_ms + wait_ms) + 100 /* a tick */ + 400 /* a loaded machine */;
    uv_loop_t loop;
    struct probe p = {0};
    uv_loop_init(&loop);
    connect_waiting(&p, &loop, cmd_ms, 0, wait_ms);
    serve_adds(&p, 3000);
    cr_assert_eq(p.downs, 0);

    /* the next add fails within the command timeout, its WAIT within
     * wait_timeout more, however many WAITs came before */
    kill(redis_pid, SIGSTOP);
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    add(&p);
    uint64_t took = stall_until(&p, add_failed, t0);
    cr_assert_leq(took, limit, "an add held %llu ms (command timeout %lld, wait %lld)", (unsigned long long)took,
                  (long long)cmd_ms, (long long)wait_ms);
    cr_assert_eq(p.downs, 1);

    /* a new connection owes nothing to the old one's WAITs */
    cr_assert(run_until(&p, is_up, 5000), "did not reconnect");
    p.nulls = p.eios = 0;
    serve_adds(&p, 200);
    kill(redis_pid, SIGSTOP);
    uv_update_time(&loop);
    t0 = uv_now(&loop);
    incr(&p);
    took = stall_until(&p, got_null, t0);
    cr_assert_leq(took, limit, "a command on the new connection held %llu ms", (unsigned long long)took);
    close_probe(&p);
}

static int two_answers(struct probe *p) { return p->acks + p->eios >= 2; }
static int never(struct probe *p) { (void)p; return 0; }

Test(redis, a_wait_that_came_while_another_was_out_costs_wait_timeout_not_two)
{
    /* WAIT 1 and no replica: each WAIT runs to its timeout */
    const int64_t wait_ms = 1000;
    uv_loop_t loop;
    struct probe p = {0};
    uv_loop_init(&loop);
    connect_waiting(&p, &loop, 5000, 1, wait_ms);
    uv_update_time(&loop);
    uint64_t t_a = uv_now(&loop);
    add(&p); /* its WAIT goes out at once */
    run_until(&p, never, 500);
    uint64_t t_b = uv_now(&loop);
    add(&p); /* waits for the next WAIT */
    cr_assert(run_until(&p, two_answers, 5000), "the waits were not answered");
    cr_assert_eq(p.acks, 2, "WAIT failed instead of counting 0 replicas");
    uint64_t a = p.acked_at[0] - t_a, b = p.acked_at[1] - t_b;
    cr_assert_geq(a, (uint64_t)wait_ms - 10, "the first WAIT ended early: %llu ms", (unsigned long long)a);
    /* the second WAIT gets what is left of the second caller's wait_timeout */
    cr_assert_geq(b, (uint64_t)wait_ms - 10, "the second caller waited only %llu ms", (unsigned long long)b);
    cr_assert_leq(b, (uint64_t)wait_ms + 300, "the second caller waited %llu ms, wait_timeout %lld",
                  (unsigned long long)b, (long long)wait_ms);
    cr_assert_eq(p.downs, 0);
    close_probe(&p);
}
