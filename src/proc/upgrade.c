/*
 * The master's replacement: the new process, the descriptors it inherits
 * and the handshake channel (see upgrade.h for the protocol).
 */
#include "proc/upgrade.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "proc/notify.h"

extern char **environ;

#define MAX_ARGS 64
#define FIRST_FD 3 /* child descriptors from here on: channel, control, metrics, admin, listeners */

static char *kept_argv[MAX_ARGS + 1];

void upgrade_keep_argv(int argc, char **argv)
{
    int n = argc < MAX_ARGS ? argc : MAX_ARGS;
    for (int i = 0; i < n; i++)
        kept_argv[i] = argv[i];
    kept_argv[n] = NULL;
}

/* Lines of the channel; a line past the buffer is cut. */
struct linebuf {
    char buf[640];
    size_t len;
};

typedef void (*line_fn)(void *arg, const char *line);

static void lines_feed(struct linebuf *lb, const char *data, size_t n, line_fn fn, void *arg)
{
    for (size_t i = 0; i < n; i++) {
        if (data[i] != '\n') {
            if (lb->len < sizeof(lb->buf) - 1)
                lb->buf[lb->len++] = data[i];
            continue;
        }
        lb->buf[lb->len] = '\0';
        lb->len = 0;
        fn(arg, lb->buf);
    }
}

static void send_line(int fd, const char *word, const char *text)
{
    char line[640];
    int n = snprintf(line, sizeof(line), "%s%s%s\n", word, text ? " " : "", text ? text : "");
    if (n < 0)
        return;
    if (n >= (int)sizeof(line)) {
        n = (int)sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    /* a few bytes into an idle socket pair: they fit at once */
    if (send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_warn("upgrade channel: %s", strerror(errno));
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char buf[1024];
    (void)h;
    (void)hint;
    *b = uv_buf_init(buf, sizeof(buf));
}

/* --- the old master ------------------------------------------------------ */

enum ustate { U_STARTING, U_GO, U_DONE, U_FAILED };

struct upgrade {
    uv_process_t proc;
    uv_pipe_t chan;
    uv_timer_t timer;
    int handles;  /* open libuv handles; u is freed at 0 once released */
    int released, exited;
    enum ustate state;
    struct upgrade_host host;
    int spare;    /* a copy of the control socket, for resume(); -1: none */
    int pid;
    struct linebuf in;
    char why[520]; /* the new master's own reason, from "fail" */
};

static void u_closed(uv_handle_t *h)
{
    struct upgrade *u = h->data;
    if (--u->handles == 0 && u->released)
        free(u);
}

static void u_close(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, u_closed);
}

static void u_fail(struct upgrade *u, const char *msg)
{
    char text[900];
    if (u->state == U_DONE || u->state == U_FAILED)
        return;
    int paused = u->state == U_GO;
    u->state = U_FAILED;
    uv_timer_stop(&u->timer);
    if (!u->exited)
        uv_process_kill(&u->proc, SIGTERM);
    u_close((uv_handle_t *)&u->chan);
    if (paused)
        u->host.resume(u->host.arg, u->spare);
    else
        close(u->spare);
    u->spare = -1;
    snprintf(text, sizeof(text), "upgrade failed; master pid %d goes on serving: %s", (int)getpid(), msg);
    u->host.finish(u->host.arg, 0, text, u->pid);
}

/* "ready": the old master steps aside and says "go". */
static void u_ready(struct upgrade *u)
{
    uv_os_fd_t fd;
    log_info("upgrade: the new master (pid %d) is ready; handing over", u->pid);
    u->state = U_GO;
    u->host.pause(u->host.arg);
    if (uv_fileno((uv_handle_t *)&u->chan, &fd) == 0)
        send_line(fd, "go", NULL);
}

/* "done": the new master serves; systemd follows it. */
static void u_done(struct upgrade *u)
{
    char text[200];
    u->state = U_DONE;
    uv_timer_stop(&u->timer);
    close(u->spare);
    u->spare = -1;
    snprintf(text, sizeof(text), "MAINPID=%d", u->pid);
    notify_send(text);
    snprintf(text, sizeof(text), "upgraded: master pid %d took over from pid %d, whose workers now drain", u->pid,
             (int)getpid());
    u->host.finish(u->host.arg, 1, text, u->pid);
}

static void u_line(void *arg, const char *line)
{
    struct upgrade *u = arg;
    if (strcmp(line, "ready") == 0 && u->state == U_STARTING)
        u_ready(u);
    else if (strcmp(line, "done") == 0 && u->state == U_GO)
        u_done(u);
    else if (strncmp(line, "fail ", 5) == 0) {
        snprintf(u->why, sizeof(u->why), "%s", line + 5);
        u_fail(u, u->why);
    }
}

static void u_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct upgrade *u = st->data;
    if (n > 0) {
        lines_feed(&u->in, b->base, (size_t)n, u_line, u);
        return;
    }
    if (n == 0)
        return;
    uv_read_stop(st);
    /* without a reason of its own, the new master's exit status is the
     * reason: its exit callback (or the deadline) reports the failure */
    if (u->state != U_DONE && u->why[0])
        u_fail(u, u->why);
}

static void u_exit(uv_process_t *p, int64_t status, int sig)
{
    struct upgrade *u = p->data;
    char msg[700];
    u->exited = 1;
    if (sig)
        snprintf(msg, sizeof(msg), "the new master (pid %d) was killed by signal %d (%s)%s%s", u->pid, sig,
                 strsignal(sig), u->why[0] ? ": " : "", u->why);
    else
        snprintf(msg, sizeof(msg), "the new master (pid %d) exited with status %lld%s%s", u->pid,
                 (long long)status, u->why[0] ? ": " : "", u->why);
    if (u->state != U_DONE && u->state != U_FAILED)
        u_fail(u, msg);
    u_close((uv_handle_t *)p);
}

static void u_timeout(uv_timer_t *t)
{
    struct upgrade *u = t->data;
    u_fail(u, u->state == U_STARTING ? "the new master did not report ready in time (ready_timeout)"
                                     : "the new master did not take over in time");
}

/* COHORT_INHERIT's value for the child's descriptor numbers. */
static void inherit_spec(const struct upgrade_fds *fds, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s=channel:%d,control:%d,metrics:%d", UPGRADE_ENV, FIRST_FD, FIRST_FD + 1,
                     FIRST_FD + 2);
    if (fds->admin >= 0)
        n += snprintf(buf + n, len - (size_t)n, ",admin:%d", FIRST_FD + 3);
    for (int i = 0; i < fds->nlisten && (size_t)n < len; i++)
        n += snprintf(buf + n, len - (size_t)n, ",listen:%d", FIRST_FD + 4 + i);
}

/* The environment, without an inherited COHORT_INHERIT, plus ours. */
static char **child_env(char *spec)
{
    size_t n = 0, k = 0, plen = strlen(UPGRADE_ENV);
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof(*env));
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], UPGRADE_ENV, plen) != 0 || environ[i][plen] != '=')
            env[k++] = environ[i];
    env[k] = spec;
    return env;
}

static int spawn_master(struct upgrade *u, uv_loop_t *loop, const char *exe, const struct upgrade_fds *fds,
                        int child_end)
{
    static char spec[64 + 16 * UPGRADE_MAX_LISTEN];
    static uv_stdio_container_t io[FIRST_FD + 4 + UPGRADE_MAX_LISTEN];
    int n = FIRST_FD + 4 + fds->nlisten;
    for (int i = 0; i < n; i++)
        io[i] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = i};
    io[FIRST_FD].data.fd = child_end;
    io[FIRST_FD + 1].data.fd = fds->control;
    io[FIRST_FD + 2].data.fd = fds->metrics;
    if (fds->admin >= 0)
        io[FIRST_FD + 3].data.fd = fds->admin;
    else
        io[FIRST_FD + 3].flags = UV_IGNORE;
    for (int i = 0; i < fds->nlisten; i++)
        io[FIRST_FD + 4 + i].data.fd = fds->listen[i];
    inherit_spec(fds, spec, sizeof(spec));
    char **env = child_env(spec);
    if (!env || !kept_argv[0]) {
        free(env);
        return -ENOMEM;
    }
    char *argv0 = kept_argv[0];
    kept_argv[0] = (char *)exe;
    uv_process_options_t opt = {.exit_cb = u_exit, .file = exe, .args = kept_argv, .env = env,
                                .stdio_count = n, .stdio = io};
    int r = uv_spawn(loop, &u->proc, &opt);
    kept_argv[0] = argv0;
    free(env);
    return r;
}

struct upgrade *upgrade_start(uv_loop_t *loop, const char *exe, const struct upgrade_fds *fds,
                              uint64_t timeout_ms, const struct upgrade_host *host, char *err, size_t errlen)
{
    int sv[2] = {-1, -1};
    struct upgrade *u = calloc(1, sizeof(*u));
    if (!u || (u->spare = fcntl(fds->control, F_DUPFD_CLOEXEC, 0)) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(err, errlen, "cannot start a new master: %s", strerror(u ? errno : ENOMEM));
        if (u && u->spare >= 0)
            close(u->spare);
        free(u);
        return NULL;
    }
    u->host = *host;
    u->proc.data = u->chan.data = u->timer.data = u;
    int r = spawn_master(u, loop, exe, fds, sv[1]);
    close(sv[1]);
    if (r < 0) {
        snprintf(err, errlen, "cannot start a new master from %s: %s", exe, uv_strerror(r));
        close(sv[0]);
        close(u->spare);
        free(u);
        return NULL;
    }
    u->pid = u->proc.pid;
    u->handles = 3;
    uv_pipe_init(loop, &u->chan, 0);
    uv_timer_init(loop, &u->timer);
    if (uv_pipe_open(&u->chan, sv[0]) < 0 || uv_read_start((uv_stream_t *)&u->chan, alloc_cb, u_read) < 0)
        close(sv[0]); /* the child's exit or the deadline ends it */
    uv_timer_start(&u->timer, u_timeout, timeout_ms, 0);
    return u;
}

void upgrade_abort(struct upgrade *u, const char *why)
{
    u_fail(u, why);
}

int upgrade_pid(const struct upgrade *u)
{
    return u->pid;
}

void upgrade_free(struct upgrade *u)
{
    if (!u)
        return;
    u->released = 1;
    if (u->state != U_DONE && u->state != U_FAILED) {
        u->state = U_FAILED;
        if (!u->exited)
            uv_process_kill(&u->proc, SIGTERM);
    }
    if (u->spare >= 0)
        close(u->spare);
    u->spare = -1;
    uv_timer_stop(&u->timer);
    u_close((uv_handle_t *)&u->chan);
    u_close((uv_handle_t *)&u->timer);
    /* a child that is still stopping is reaped by its exit callback; one
     * that took over is left to run */
    if (u->exited || u->state == U_DONE)
        u_close((uv_handle_t *)&u->proc);
}

/* --- the new master ------------------------------------------------------ */

static int parse_fd(const char *s, char **end)
{
    long v = strtol(s, end, 10);
    return *end == s || v < 0 || v > 65535 ? -1 : (int)v;
}

/* One "role:fd" item; 0 or -EINVAL. */
static int take_item(struct upgrade_fds *fds, const char *item, char **end)
{
    static const char *const roles[] = {"channel", "control", "metrics", "admin", "listen"};
    const char *colon = strchr(item, ':');
    int fd = colon ? parse_fd(colon + 1, end) : -1, role = -1;
    for (int i = 0; i < 5 && colon; i++)
        if ((size_t)(colon - item) == strlen(roles[i]) && strncmp(item, roles[i], strlen(roles[i])) == 0)
            role = i;
    if (fd < 0 || role < 0 || (role == 4 && fds->nlisten >= UPGRADE_MAX_LISTEN))
        return -EINVAL;
    int *slot[] = {&fds->channel, &fds->control, &fds->metrics, &fds->admin, &fds->listen[fds->nlisten]};
    *slot[role] = fd;
    if (role == 4)
        fds->nlisten++;
    return fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 ? -EINVAL : 0;
}

int upgrade_inherited(struct upgrade_fds *fds)
{
    const char *spec = getenv(UPGRADE_ENV);
    memset(fds, 0, sizeof(*fds));
    fds->admin = fds->control = fds->metrics = fds->channel = -1;
    if (!spec)
        return 0;
    static char copy[64 + 16 * UPGRADE_MAX_LISTEN];
    snprintf(copy, sizeof(copy), "%s", spec);
    unsetenv(UPGRADE_ENV); /* workers and later upgrades never see it */
    char *p = copy, *end = NULL;
    while (*p) {
        if (take_item(fds, p, &end) < 0 || (*end != ',' && *end != '\0'))
            return -EINVAL;
        p = *end ? end + 1 : end;
    }
    return fds->channel >= 0 && fds->control >= 0 && fds->metrics >= 0 && fds->nlisten > 0 ? 1 : -EINVAL;
}

static int sock_port(int fd, struct sockaddr_storage *ss)
{
    socklen_t len = sizeof(*ss);
    if (getsockname(fd, (struct sockaddr *)ss, &len) < 0)
        return -1;
    return ss->ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)ss)->sin6_port)
                                     : ntohs(((struct sockaddr_in *)ss)->sin_port);
}

/* Whether fd is bound to host:port. */
static int same_address(int fd, const char *host, int port)
{
    struct sockaddr_storage ss, want;
    if (sock_port(fd, &ss) != port)
        return 0;
    if (ss.ss_family == AF_INET6)
        return uv_ip6_addr(host, port, (struct sockaddr_in6 *)&want) == 0 &&
               memcmp(&((struct sockaddr_in6 *)&ss)->sin6_addr, &((struct sockaddr_in6 *)&want)->sin6_addr,
                      sizeof(struct in6_addr)) == 0;
    return uv_ip4_addr(host, port, (struct sockaddr_in *)&want) == 0 &&
           ((struct sockaddr_in *)&ss)->sin_addr.s_addr == ((struct sockaddr_in *)&want)->sin_addr.s_addr;
}

static int unix_path_is(int fd, const char *path)
{
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);
    memset(&sun, 0, sizeof(sun));
    return getsockname(fd, (struct sockaddr *)&sun, &len) == 0 && sun.sun_family == AF_UNIX &&
           strncmp(sun.sun_path, path, sizeof(sun.sun_path)) == 0;
}

int upgrade_changed(char *err, size_t errlen, const char *key)
{
    snprintf(err, errlen, "%s differs from the running master's; the listening sockets are handed over as "
             "they are, so this change needs a restart, not an upgrade", key);
    return -EINVAL;
}

int upgrade_fits(const struct upgrade_fds *fds, const struct cfg *cfg, const char *ctl_path, char *err,
                 size_t errlen)
{
    if ((fds->admin >= 0) != (cfg->admin.port != 0) ||
        (fds->admin >= 0 && !same_address(fds->admin, cfg->admin.host, cfg->admin.port)))
        return upgrade_changed(err, errlen, "admin.host or admin.port");
    if (!unix_path_is(fds->control, ctl_path))
        return upgrade_changed(err, errlen, "control.socket");
    return 0;
}

int upgrade_adopt_metrics(int fd, struct metrics_shm **shm, uint32_t *nslots)
{
    int r = metrics_map(fd, shm);
    if (r == 0) {
        *nslots = (*shm)->nslots;
        return fd;
    }
    log_warn("the old master's counters have another layout (%s): counting starts from zero", strerror(-r));
    close(fd);
    return metrics_create(*nslots, shm);
}

void upgrade_fail_early(const char *msg)
{
    const char *spec = getenv(UPGRADE_ENV);
    const char *ch = spec ? strstr(spec, "channel:") : NULL;
    char *end = NULL;
    int fd = ch ? parse_fd(ch + 8, &end) : -1;
    if (fd >= 0)
        send_line(fd, "fail", msg);
}

struct upgrade_child {
    uv_pipe_t chan;
    struct linebuf in;
    upgrade_child_fn fn;
    void *arg;
    int parent;
    int went, failed;
};

static void c_closed(uv_handle_t *h)
{
    free(h->data);
}

static void c_line(void *arg, const char *line)
{
    struct upgrade_child *c = arg;
    if (strcmp(line, "go") == 0 && !c->went) {
        c->went = 1;
        c->fn(c->arg, UPGRADE_GO);
    }
}

static void c_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct upgrade_child *c = st->data;
    if (n > 0) {
        lines_feed(&c->in, b->base, (size_t)n, c_line, c);
        return;
    }
    if (n == 0)
        return;
    uv_read_stop(st);
    if (!c->went) {
        c->went = 1;
        /* a parent that is gone never says "go"; one that is alive closed
         * the channel because it gave up on this process */
        c->fn(c->arg, getppid() != c->parent ? UPGRADE_ORPHAN : UPGRADE_CANCEL);
    }
}

struct upgrade_child *upgrade_child_new(uv_loop_t *loop, int fd, upgrade_child_fn fn, void *arg)
{
    struct upgrade_child *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->fn = fn;
    c->arg = arg;
    c->parent = (int)getppid();
    uv_pipe_init(loop, &c->chan, 0);
    c->chan.data = c;
    if (uv_pipe_open(&c->chan, fd) < 0 || uv_read_start((uv_stream_t *)&c->chan, alloc_cb, c_read) < 0) {
        uv_close((uv_handle_t *)&c->chan, c_closed);
        return NULL;
    }
    return c;
}

static void c_send(struct upgrade_child *c, const char *word, const char *text)
{
    uv_os_fd_t fd;
    if (c && uv_fileno((uv_handle_t *)&c->chan, &fd) == 0)
        send_line(fd, word, text);
}

void upgrade_child_ready(struct upgrade_child *c)
{
    c_send(c, "ready", NULL);
}

void upgrade_child_fail(struct upgrade_child *c, const char *why)
{
    if (c && !c->failed) {
        c->failed = 1; /* the first reason is the one */
        c_send(c, "fail", why);
    }
}

void upgrade_child_done(struct upgrade_child *c)
{
    c_send(c, "done", NULL);
    upgrade_child_free(c);
}

void upgrade_child_free(struct upgrade_child *c)
{
    if (c && !uv_is_closing((uv_handle_t *)&c->chan))
        uv_close((uv_handle_t *)&c->chan, c_closed);
}
