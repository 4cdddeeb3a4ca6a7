/* Finding the primary through Sentinel (redis/sentinel.c) and the Redis
 * connection's guards around it (redis/redis.c): the ROLE check, READONLY,
 * following +switch-master, and WAIT. Against real redis-servers of their
 * own (free ports, own folders, stopped by pid), a real redis-sentinel, and
 * a fake Sentinel in a thread whose answers the test chooses. */
#include <criterion/criterion.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "redis/redis.h"
#include "redis/sentinel.h"
#include "testnet.h"

static char dir[64];

static redisContext *sync_to(int port)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* A command on a fresh blocking connection; the reply as an integer, or
 * the length of a string reply, or -1. Prints nothing. */
static long long sync_cmd(int port, const char *fmt, const char *arg)
{
    redisContext *c = sync_to(port);
    cr_assert_not_null(c, "cannot reach 127.0.0.1:%d", port);
    redisReply *r = redisCommand(c, fmt, arg);
    long long v = !r ? -1 : r->type == REDIS_REPLY_INTEGER ? r->integer : r->type == REDIS_REPLY_STRING ? (long long)r->len : -1;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return v;
}

/* --- real servers ------------------------------------------------------- */

struct server {
    pid_t pid;
    int port;
};

static void spawn(struct server *s, const char *bin, char *const argv[])
{
    s->pid = fork();
    cr_assert_neq(s->pid, -1);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with the test, even when it fails */
        execvp(bin, argv);
        _exit(127);
    }
    for (int i = 0; i < 250; i++) {
        redisContext *c = sync_to(s->port);
        if (c) {
            redisFree(c);
            return;
        }
        usleep(20000);
    }
    cr_assert_fail("%s did not start on %d (scripts/deps.sh test installs it)", bin, s->port);
}

static void start_redis(struct server *s, int replica_of)
{
    char port[16], sub[128], of[16];
    s->port = free_port();
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(sub, sizeof sub, "%s/%d", dir, s->port);
    mkdir(sub, 0700);
    snprintf(of, sizeof of, "%d", replica_of);
    char *argv[] = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", sub, "--save", "",
                    "--appendonly", "no", "--logfile", "/dev/null", "--repl-diskless-sync-delay", "0",
                    replica_of ? "--replicaof" : NULL, "127.0.0.1", of, NULL};
    spawn(s, "redis-server", argv);
}

static void start_sentinel(struct server *s, int primary)
{
    char path[128], port[16];
    s->port = free_port();
    snprintf(path, sizeof path, "%s/sentinel-%d.conf", dir, s->port);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "port %d\nbind 127.0.0.1\ndir %s\nlogfile /dev/null\nsentinel monitor mymaster 127.0.0.1 %d 1\n",
            s->port, dir, primary);
    fclose(f);
    snprintf(port, sizeof port, "%d", s->port);
    char *argv[] = {"redis-sentinel", path, NULL};
    spawn(s, "redis-sentinel", argv);
}

static void stop(struct server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

/* Waits until the primary at port counts its replica online (after the
 * replica's first acknowledgement: before it, WAIT does not count it). */
static void wait_synced(int port)
{
    for (int i = 0; i < 250; i++) {
        redisContext *c = sync_to(port);
        redisReply *r = c ? redisCommand(c, "INFO replication") : NULL;
        int up = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "state=online");
        if (r)
            freeReplyObject(r);
        if (c)
            redisFree(c);
        if (up)
            return;
        usleep(20000);
    }
    cr_assert_fail("the replica on %d never synced", port);
}

/* --- a fake Sentinel ---------------------------------------------------- */

static struct {
    int port, lfd, stop;
    pthread_t th;
    pthread_mutex_t mu;
    int answer_port; /* 0: answers nil */
    int asked;
    int subs[16], nsubs;
} fake = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void put(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* One command of buf (RESP multibulk) into argv; bytes used, 0 when incomplete. */
static size_t parse_cmd(const char *buf, size_t len, char argv[4][64], int *argc)
{
    const char *p = buf, *end = buf + len, *nl;
    if (len < 4 || *p != '*' || !(nl = memchr(p, '\n', (size_t)(end - p))))
        return 0;
    int n = atoi(p + 1);
    p = nl + 1;
    *argc = 0;
    for (int i = 0; i < n; i++) {
        if (p >= end || *p != '$' || !(nl = memchr(p, '\n', (size_t)(end - p))))
            return 0;
        size_t l = (size_t)atoi(p + 1);
        p = nl + 1;
        if ((size_t)(end - p) < l + 2)
            return 0;
        if (i < 4) {
            size_t c = l < 63 ? l : 63;
            memcpy(argv[i], p, c);
            argv[i][c] = '\0';
            (*argc)++;
        }
        p += l + 2;
    }
    return (size_t)(p - buf);
}

static void answer(int fd, char argv[4][64], int argc)
{
    char out[256];
    pthread_mutex_lock(&fake.mu);
    if (argc >= 1 && strcasecmp(argv[0], "PING") == 0) {
        put(fd, "+PONG\r\n");
    } else if (argc >= 1 && strcasecmp(argv[0], "SENTINEL") == 0) {
        fake.asked++;
        if (!fake.answer_port) {
            put(fd, "*-1\r\n");
        } else {
            char port[16];
            snprintf(port, sizeof port, "%d", fake.answer_port);
            snprintf(out, sizeof out, "*2\r\n$9\r\n127.0.0.1\r\n$%zu\r\n%s\r\n", strlen(port), port);
            put(fd, out);
        }
    } else if (argc >= 2 && strcasecmp(argv[0], "SUBSCRIBE") == 0) {
        snprintf(out, sizeof out, "*3\r\n$9\r\nsubscribe\r\n$%zu\r\n%s\r\n:1\r\n", strlen(argv[1]), argv[1]);
        put(fd, out);
        if (fake.nsubs < 16)
            fake.subs[fake.nsubs++] = fd;
    } else {
        put(fd, "-ERR unknown command\r\n");
    }
    pthread_mutex_unlock(&fake.mu);
}

static void *fake_run(void *unused)
{
    struct pollfd pf[32];
    char bufs[32][1024];
    size_t lens[32] = {0};
    int n = 1;
    (void)unused;
    pf[0] = (struct pollfd){.fd = fake.lfd, .events = POLLIN};
    while (!fake.stop) {
        if (poll(pf, (nfds_t)n, 50) <= 0)
            continue;
        if ((pf[0].revents & POLLIN) && n < 32) {
            int fd = accept(fake.lfd, NULL, NULL);
            if (fd >= 0) {
                pf[n] = (struct pollfd){.fd = fd, .events = POLLIN};
                lens[n++] = 0;
            }
        }
        for (int i = 1; i < n; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(pf[i].fd, bufs[i] + lens[i], sizeof bufs[i] - lens[i]);
            if (r <= 0) {
                pthread_mutex_lock(&fake.mu);
                for (int k = 0; k < fake.nsubs; k++)
                    if (fake.subs[k] == pf[i].fd)
                        fake.subs[k] = fake.subs[--fake.nsubs];
                pthread_mutex_unlock(&fake.mu);
                close(pf[i].fd);
                pf[i] = pf[n - 1];
                memcpy(bufs[i], bufs[n - 1], lens[n - 1]);
                lens[i] = lens[n - 1];
                n--;
                i--;
                continue;
            }
            lens[i] += (size_t)r;
            char argv[4][64];
            int argc;
            size_t used;
            while ((used = parse_cmd(bufs[i], lens[i], argv, &argc)) > 0) {
                answer(pf[i].fd, argv, argc);
                memmove(bufs[i], bufs[i] + used, lens[i] - used);
                lens[i] -= used;
            }
        }
    }
    for (int i = 0; i < n; i++)
        close(pf[i].fd);
    return NULL;
}

static void fake_start(int answer_port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int one = 1;
    fake.lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fake.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    cr_assert_eq(bind(fake.lfd, (struct sockaddr *)&a, sizeof a), 0);
    listen(fake.lfd, 16);
    getsockname(fake.lfd, (struct sockaddr *)&a, &len);
    fake.port = ntohs(a.sin_port);
    fake.answer_port = answer_port;
    pthread_create(&fake.th, NULL, fake_run, NULL);
}

static void fake_answer(int port)
{
    pthread_mutex_lock(&fake.mu);
    fake.answer_port = port;
    pthread_mutex_unlock(&fake.mu);
}

static void fake_publish_switch(int from, int to)
{
    char msg[128], out[256];
    snprintf(msg, sizeof msg, "mymaster 127.0.0.1 %d 127.0.0.1 %d", from, to);
    snprintf(out, sizeof out, "*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n$%zu\r\n%s\r\n", strlen(msg), msg);
    pthread_mutex_lock(&fake.mu);
    for (int i = 0; i < fake.nsubs; i++)
        put(fake.subs[i], out);
    pthread_mutex_unlock(&fake.mu);
}

static int fake_subscribers(void)
{
    pthread_mutex_lock(&fake.mu);
    int n = fake.nsubs;
    pthread_mutex_unlock(&fake.mu);
    return n;
}

static int fake_asked(void)
{
    pthread_mutex_lock(&fake.mu);
    int n = fake.asked;
    pthread_mutex_unlock(&fake.mu);
    return n;
}

static void fake_stop(void)
{
    if (!fake.th)
        return;
    fake.stop = 1;
    pthread_join(fake.th, NULL);
    fake.th = 0;
}

/* --- the client side ---------------------------------------------------- */

struct probe {
    uv_loop_t loop;
    struct sentinel *sentinel;
    struct redis *r;
    int ups, downs, replies, errors, nulls;
    int acked[64], nacked;
    int wait_timeout_ms;    /* 0: 300 */
    int command_timeout_ms; /* 0: 1000 */
};

static void on_state(void *arg, int up)
{
    struct probe *p = arg;
    if (up)
        p->ups++;
    else
        p->downs++;
}

static void on_switch(void *arg, const char *host, int port)
{
    struct probe *p = arg;
    redis_retarget(p->r, host, port);
}

static void on_reply(void *arg, redisReply *reply)
{
    struct probe *p = arg;
    if (!reply)
        p->nulls++;
    else if (reply->type == REDIS_REPLY_ERROR)
        p->errors++;
    else
        p->replies++;
}

static void on_acked(void *arg, int acked)
{
    struct probe *p = arg;
    if (p->nacked < 64)
        p->acked[p->nacked++] = acked;
}

static int run_until(struct probe *p, int (*cond)(struct probe *), int ms)
{
    uv_update_time(&p->loop);
    uint64_t end = uv_now(&p->loop) + (uint64_t)ms;
    while (!cond(p) && uv_now(&p->loop) < end) {
        uv_run(&p->loop, UV_RUN_NOWAIT);
        usleep(1000);
        uv_update_time(&p->loop);
    }
    return cond(p);
}

static int is_up(struct probe *p) { return redis_up(p->r); }
static int never(struct probe *p) { (void)p; return 0; }
static int got_reply(struct probe *p) { return p->replies > 0; }
static int got_error(struct probe *p) { return p->errors > 0; }
static int two_ups(struct probe *p) { return p->ups >= 2 && redis_up(p->r); }
static int acked_any(struct probe *p) { return p->nacked > 0; }
static int fake_asked_twice(struct probe *p) { (void)p; return fake_asked() >= 2; }
static int fake_has_subscriber(struct probe *p) { (void)p; return fake_subscribers() >= 1; }

/* A connection; with `sentinels` set it finds the primary through them. */
static void open_probe(struct probe *p, const char *sentinels, int direct_port, int wait_replicas)
{
    char err[256], url[64];
    uv_loop_init(&p->loop);
    if (sentinels) {
        struct sentinel_opts so = {.addrs = sentinels, .master_name = "mymaster", .timeout_ms = 300,
                                   .on_switch = on_switch, .arg = p};
        p->sentinel = sentinel_new(&p->loop, &so, err, sizeof err);
        cr_assert_not_null(p->sentinel, "%s", err);
    }
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", direct_port);
    struct redis_opts o = {.url = sentinels ? NULL : url, .primary = p->sentinel ? sentinel_primary(p->sentinel) : NULL,
                           .command_timeout_ms = p->command_timeout_ms ? p->command_timeout_ms : 1000,
                           .wait_replicas = wait_replicas, .wait_timeout_ms = p->wait_timeout_ms ? p->wait_timeout_ms : 300,
                           .on_state = on_state,
                           .arg = p};
    p->r = redis_new(&p->loop, &o, err, sizeof err);
    cr_assert_not_null(p->r, "%s", err);
}

/* open_probe through the fake Sentinel alone. */
static void open_probe_via_fake(struct probe *p)
{
    char list[32];
    snprintf(list, sizeof list, "127.0.0.1:%d", fake.port);
    open_probe(p, list, 0, 0);
}

static void closed(void *arg)
{
    (*(int *)arg)++;
}

static void close_probe(struct probe *p)
{
    int done = 0;
    redis_close(p->r, closed, &done);
    if (p->sentinel)
        sentinel_close(p->sentinel, closed, &done);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    cr_assert_eq(done, p->sentinel ? 2 : 1, "a close never finished");
    cr_assert_eq(uv_loop_close(&p->loop), 0, "a handle was left open");
}

static void set_key(struct probe *p, const char *key)
{
    const char *argv[] = {"SET", key, "1"};
    cr_assert_eq(redis_command(p->r, on_reply, p, 3, argv, NULL), 0);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/cohort-test-sentinel-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static struct server a, b, s1;

static void teardown(void)
{
    char cmd[128];
    fake_stop();
    stop(&s1);
    stop(&b);
    stop(&a);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    system(cmd);
}

TestSuite(sentinel, .init = setup, .fini = teardown, .timeout = 30);

Test(sentinel, a_real_sentinel_names_the_primary_and_a_dead_one_is_skipped)
{
    struct probe p = {0};
    char list[128];
    start_redis(&a, 0);
    start_sentinel(&s1, a.port);
    snprintf(list, sizeof list, "127.0.0.1:%d,127.0.0.1:%d", free_port(), s1.port);
    open_probe(&p, list, 0, 0);
    cr_assert(run_until(&p, is_up, 5000), "never reached the primary");
    set_key(&p, "via-sentinel");
    cr_assert(run_until(&p, got_reply, 2000));
    cr_assert_eq(sync_cmd(a.port, "EXISTS %s", "via-sentinel"), 1, "the write went to the primary");
    close_probe(&p);
}

Test(sentinel, a_replica_named_as_primary_is_never_used)
{
    struct probe p = {0};
    start_redis(&a, 0);
    start_redis(&b, a.port);
    wait_synced(a.port);
    fake_start(b.port); /* a stale answer: the replica */
    open_probe_via_fake(&p);
    run_until(&p, fake_asked_twice, 5000);
    cr_assert_eq(p.ups, 0, "came up on a replica");
    cr_assert_geq(fake_asked(), 2, "asked again after the ROLE check: %d", fake_asked());
    fake_answer(a.port);
    cr_assert(run_until(&p, is_up, 5000), "never reached the primary once named");
    set_key(&p, "on-primary");
    cr_assert(run_until(&p, got_reply, 2000));
    cr_assert_eq(sync_cmd(a.port, "EXISTS %s", "on-primary"), 1);
    close_probe(&p);
}

Test(sentinel, switch_master_moves_the_connection)
{
    struct probe p = {0};
    start_redis(&a, 0);
    start_redis(&b, 0);
    fake_start(a.port);
    open_probe_via_fake(&p);
    cr_assert(run_until(&p, is_up, 5000));
    run_until(&p, fake_has_subscriber, 10000);
    cr_assert_eq(fake_subscribers(), 1, "nobody listens on +switch-master");
    fake_answer(b.port);
    fake_publish_switch(a.port, b.port);
    cr_assert(run_until(&p, two_ups, 3000), "did not follow the switch (ups %d)", p.ups);
    cr_assert_eq(p.downs, 1);
    set_key(&p, "after-switch");
    cr_assert(run_until(&p, got_reply, 2000));
    cr_assert_eq(sync_cmd(b.port, "EXISTS %s", "after-switch"), 1, "the write went to the new primary");
    cr_assert_eq(sync_cmd(a.port, "EXISTS %s", "after-switch"), 0);
    close_probe(&p);
}

static int on_b_port;
static int wrote_on_b(struct probe *p)
{
    (void)p;
    return sync_cmd(on_b_port, "EXISTS %s", "probe-key") == 1;
}

/* The Sentinel the subscription listens to stalls (SIGSTOP: the connection
 * stays, nothing comes back, as from a host cut off) while the others
 * announce a failover: the worker follows through another Sentinel. */
Test(sentinel, the_subscription_leaves_a_stalled_sentinel)
{
    struct probe p = {0};
    char list[64];
    start_redis(&a, 0);
    start_redis(&b, 0);
    start_sentinel(&s1, a.port); /* first in the list: both connections start there */
    fake_start(a.port);
    snprintf(list, sizeof list, "127.0.0.1:%d,127.0.0.1:%d", s1.port, fake.port);
    open_probe(&p, list, 0, 0); /* Sentinel timeout 300 ms */
    cr_assert(run_until(&p, is_up, 5000), "never reached the primary");
    run_until(&p, never, 300);
    cr_assert_eq(fake_subscribers(), 0, "the subscription is not on the first Sentinel");
    cr_assert_eq(fake_asked(), 0, "the first Sentinel was not asked");

    kill(s1.pid, SIGSTOP);
    uv_update_time(&p.loop);
    uint64_t t0 = uv_now(&p.loop);
    /* the failover happens now; only the live Sentinel can tell */
    fake_answer(b.port);
    fake_publish_switch(a.port, b.port);
    int followed = run_until(&p, two_ups, 4000);
    uint64_t took = uv_now(&p.loop) - t0;
    kill(s1.pid, SIGCONT);
    cr_assert(followed, "did not follow the failover while the first Sentinel stalled (ups %d, subscribers at the "
                        "live one %d)", p.ups, fake_subscribers());
    /* the stall noticed within 1.5 timeouts and a tick, then a round trip or two */
    cr_assert_leq(took, 1500, "followed %llu ms after the failover", (unsigned long long)took);
    cr_assert_geq(fake_subscribers(), 1, "the subscription did not move to the live Sentinel");
    set_key(&p, "probe-key");
    on_b_port = b.port;
    cr_assert(run_until(&p, wrote_on_b, 2000), "the write did not go to the new primary");
    close_probe(&p);
}

Test(sentinel, readonly_drops_the_connection_and_asks_again)
{
    struct probe p = {0};
    char of[32];
    start_redis(&a, 0);
    start_redis(&b, 0);
    fake_start(a.port);
    open_probe_via_fake(&p);
    cr_assert(run_until(&p, is_up, 5000));
    /* a demoted primary, no announcement: only the write tells */
    snprintf(of, sizeof of, "%d", b.port);
    cr_assert_neq(sync_cmd(a.port, "REPLICAOF 127.0.0.1 %s", of), -2);
    fake_answer(b.port);
    set_key(&p, "k");
    cr_assert(run_until(&p, got_error, 2000), "the replica did not refuse the write");
    cr_assert(run_until(&p, two_ups, 3000), "did not move to the primary the Sentinels name");
    set_key(&p, "k2");
    cr_assert(run_until(&p, got_reply, 2000));
    cr_assert_eq(sync_cmd(b.port, "EXISTS %s", "k2"), 1);
    close_probe(&p);
}

Test(sentinel, no_sentinel_answers_then_one_does)
{
    struct probe p = {0};
    start_redis(&a, 0);
    fake_start(0); /* knows no primary by that name */
    open_probe_via_fake(&p);
    run_until(&p, fake_asked_twice, 5000);
    cr_assert_eq(p.ups, 0);
    cr_assert_geq(fake_asked(), 2, "asked again with the backoff: %d", fake_asked());
    fake_answer(a.port);
    cr_assert(run_until(&p, is_up, 5000));
    close_probe(&p);
}

Test(wait, one_wait_covers_a_burst_and_counts_replicas)
{
    /* a loaded (or paused) machine can take a while to carry the acknowledgements;
     * the WAIT still runs longer than a command may */
    struct probe p = {.wait_timeout_ms = 4000, .command_timeout_ms = 2000};
    char key[32];
    start_redis(&a, 0);
    start_redis(&b, a.port);
    wait_synced(a.port);
    open_probe(&p, NULL, a.port, 1);
    cr_assert(run_until(&p, is_up, 5000));
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "k%d", i);
        set_key(&p, key);
        cr_assert_eq(redis_wait(p.r, on_acked, &p), 0);
    }
    for (int i = 0; i < 1000 && p.nacked < 50; i++)
        run_until(&p, never, 5);
    cr_assert_eq(p.nacked, 50);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(p.acked[i], 1, "write %d: %d replicas", i, p.acked[i]);
    redisContext *c = sync_to(a.port);
    redisReply *r = redisCommand(c, "INFO commandstats");
    const char *w = strstr(r->str, "cmdstat_wait:calls=");
    cr_assert_not_null(w);
    cr_assert_leq(atoi(w + 19), 2, "50 waiters shared WAITs: %d sent", atoi(w + 19));
    freeReplyObject(r);
    redisFree(c);

    stop(&b); /* no replica: the WAIT times out, and says so */
    p.nacked = 0;
    set_key(&p, "alone");
    uv_update_time(&p.loop);
    uint64_t t0 = uv_now(&p.loop);
    cr_assert_eq(redis_wait(p.r, on_acked, &p), 0);
    cr_assert(run_until(&p, acked_any, 15000));
    cr_assert_eq(p.acked[0], 0);
    cr_assert_geq(uv_now(&p.loop) - t0, 3990, "answered before the timeout");
    /* the WAIT ran longer than command_timeout_ms, on purpose: no drop */
    cr_assert_eq(p.downs, 0, "the connection was dropped while WAIT ran");
    cr_assert(redis_up(p.r));
    close_probe(&p);
}

Test(wait, a_lost_connection_fails_the_waiters)
{
    /* no replica: a WAIT that could time out before the stop would answer 0, not -EIO */
    struct probe p = {.wait_timeout_ms = 10000};
    start_redis(&a, 0);
    open_probe(&p, NULL, a.port, 1);
    cr_assert(run_until(&p, is_up, 5000));
    for (int i = 0; i < 3; i++) {
        set_key(&p, "x");
        cr_assert_eq(redis_wait(p.r, on_acked, &p), 0); /* 1 in flight, 2 for the next */
    }
    run_until(&p, never, 50);
    stop(&a);
    cr_assert(run_until(&p, acked_any, 3000));
    run_until(&p, never, 50);
    cr_assert_eq(p.nacked, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(p.acked[i], -EIO);
    cr_assert_eq(redis_wait(p.r, on_acked, &p), -ENOTCONN);
    close_probe(&p);
}
