/*
 * The master. Signal handlers (libuv signal watchers) only set the course;
 * all work happens in the loop's callbacks. Each worker slot keeps its
 * restart history; a process's handles (uv_process_t and its IPC pipe) live
 * in a struct wproc freed when both are closed.
 */
#include "proc/master.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "core/log.h"
#include "core/metrics.h"
#include "proc/ipc.h"
#include "proc/worker.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000

struct master;

struct wproc {
    uv_process_t proc;
    uv_pipe_t ipc;
    struct ipc_reader reader;
    struct wslot *slot;
    int handles;       /* open handles; freed at 0 */
    int mslot;         /* metrics slot index */
    uint64_t started;  /* loop ms */
    int ready;
};

struct wslot {
    int id;
    struct master *m;
    struct wproc *cur;
    uv_timer_t restart;
    int backoff_ms;
    int restarts;
};

struct master {
    const struct cfg *cfg;
    const char *exe;
    uv_loop_t *loop;
    int *listen_fds;
    int nlisten;
    int metrics_fd, config_fd;
    struct metrics_shm *shm;
    uint32_t nmslots;
    struct wslot *slots;
    int nworkers, running, announced;
    uv_signal_t sigs[4];
    uv_timer_t kill_timer;
    int stopping;
    int exit_code;
};

static void spawn(struct wslot *s);

/* --- listeners --------------------------------------------------------- */

static int bind_one(const struct cfg *cfg, int reuseport, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int fam = strchr(cfg->host, ':') ? AF_INET6 : AF_INET;
    int r = fam == AF_INET6 ? uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&ss)
                            : uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&ss);
    int fd = r < 0 ? -1 : socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        (fam == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (struct sockaddr *)&ss, fam == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) < 0 ||
        listen(fd, cfg->backlog) < 0) {
        int e = r < 0 ? -r : errno;
        snprintf(err, errlen, "cannot listen on %s%s%s:%d: %s", fam == AF_INET6 ? "[" : "", cfg->host,
                 fam == AF_INET6 ? "]" : "", cfg->port, strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    return fd;
}

/* reuseport: a socket per worker, kept by the master across restarts so
 * connections queued on it survive its worker; shared: one socket. */
static int bind_listeners(struct master *m, char *err, size_t errlen)
{
    int reuse = m->cfg->schedule == CFG_SCHED_REUSEPORT;
    m->nlisten = reuse ? m->nworkers : 1;
    m->listen_fds = calloc((size_t)m->nlisten, sizeof(int));
    if (!m->listen_fds)
        return -ENOMEM;
    for (int i = 0; i < m->nlisten; i++) {
        int fd = bind_one(m->cfg, reuse, err, errlen);
        if (fd < 0)
            return fd;
        m->listen_fds[i] = fd;
    }
    return 0;
}

static void close_listeners(struct master *m)
{
    for (int i = 0; i < m->nlisten; i++)
        if (m->listen_fds[i] >= 0) {
            close(m->listen_fds[i]);
            m->listen_fds[i] = -1;
        }
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("cannot raise the open files limit: %s", strerror(errno));
    }
}

/* The effective config for workers, in a memfd they read with pread. */
static int config_memfd(const struct cfg *cfg)
{
    char *json = cfg_to_json(cfg);
    int fd = json ? memfd_create("cohort-config", MFD_CLOEXEC) : -1;
    size_t len = json ? strlen(json) : 0, off = 0;
    while (fd >= 0 && off < len) {
        ssize_t n = write(fd, json + off, len - off);
        if (n <= 0) {
            close(fd);
            fd = -1;
            break;
        }
        off += (size_t)n;
    }
    free(json);
    return fd;
}

/* --- worker processes -------------------------------------------------- */

static int alloc_mslot(struct master *m)
{
    for (uint32_t i = 0; i < m->nmslots; i++) {
        int used = 0;
        for (int k = 0; k < m->nworkers; k++)
            if (m->slots[k].cur && m->slots[k].cur->mslot == (int)i)
                used = 1;
        if (!used && metrics_get(m->shm->slots[i].pid) == 0)
            return (int)i;
    }
    return -1;
}

static void wproc_closed(uv_handle_t *h)
{
    struct wproc *p = h->data;
    if (--p->handles == 0) {
        ipc_reader_free(&p->reader);
        free(p);
    }
}

static void maybe_finish(struct master *m)
{
    if (m->stopping && m->running == 0) {
        log_info("all workers stopped; exiting");
        uv_stop(m->loop);
    }
}

static void restart_cb(uv_timer_t *t)
{
    struct wslot *s = t->data;
    if (!s->m->stopping)
        spawn(s);
}

/* What to say about how a worker ended. */
static void describe_exit(char *buf, size_t len, int64_t status, int sig)
{
    if (sig)
        snprintf(buf, len, "killed by signal %d (%s)", sig, strsignal(sig));
    else
        snprintf(buf, len, "exited with status %lld", (long long)status);
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
    struct wproc *p = proc->data;
    struct wslot *s = p->slot;
    struct master *m = s->m;
    char how[96];
    describe_exit(how, sizeof(how), status, sig);
    uint64_t up = uv_now(m->loop) - p->started;
    metrics_fold(&m->shm->retired, &m->shm->slots[p->mslot]);
    if (s->cur == p)
        s->cur = NULL;
    m->running--;
    uv_close((uv_handle_t *)&p->proc, wproc_closed);
    if (!uv_is_closing((uv_handle_t *)&p->ipc))
        uv_close((uv_handle_t *)&p->ipc, wproc_closed);
    if (m->stopping) {
        log_info("worker %d (pid %d) %s", s->id, proc->pid, how);
        maybe_finish(m);
        return;
    }
    s->restarts++;
    if (up >= (uint64_t)m->cfg->min_uptime_ms) {
        s->backoff_ms = 0;
        log_warn("worker %d (pid %d) %s after %.1f s; restarting", s->id, proc->pid, how, up / 1000.0);
        spawn(s);
        return;
    }
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (s->backoff_ms > BACKOFF_MAX_MS)
        s->backoff_ms = BACKOFF_MAX_MS;
    log_warn("worker %d (pid %d) %s %.1f s after start (crash loop?); restarting in %d ms", s->id, proc->pid,
             how, up / 1000.0, s->backoff_ms);
    uv_timer_start(&s->restart, restart_cb, (uint64_t)s->backoff_ms, 0);
}

static void on_worker_msg(void *arg, const struct ipc_header *h, const char *payload)
{
    struct wproc *p = arg;
    struct master *m = p->slot->m;
    (void)payload;
    if (h->type != IPC_READY || p->ready)
        return;
    p->ready = 1;
    log_debug("worker %d (pid %d) ready", p->slot->id, p->proc.pid);
    int all = 1;
    for (int i = 0; i < m->nworkers; i++)
        if (!m->slots[i].cur || !m->slots[i].cur->ready)
            all = 0;
    if (all && m->announced == 1) {
        m->announced = 2;
        const char *h6 = strchr(m->cfg->host, ':') ? "[" : "";
        log_info("serving http://%s%s%s:%d/ with %d workers (schedule %s)", h6, m->cfg->host, *h6 ? "]" : "",
                 m->cfg->port, m->nworkers, m->cfg->schedule == CFG_SCHED_REUSEPORT ? "reuseport" : "shared");
    }
}

static void ipc_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char buf[4096];
    (void)h;
    (void)hint;
    *b = uv_buf_init(buf, sizeof(buf));
}

static void ipc_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct wproc *p = st->data;
    if (n > 0 && ipc_reader_feed(&p->reader, b->base, (size_t)n) == 0)
        return;
    if (n != 0) /* the worker closed its end or spoke nonsense */
        uv_read_stop(st);
}

static void spawn(struct wslot *s)
{
    struct master *m = s->m;
    struct wproc *p = calloc(1, sizeof(*p));
    int mslot = alloc_mslot(m);
    if (!p || mslot < 0) {
        free(p);
        log_error("worker %d: no room to start (memory or counter slots); retrying", s->id);
        uv_timer_start(&s->restart, restart_cb, 1000, 0);
        return;
    }
    p->slot = s;
    p->mslot = mslot;
    uv_pipe_init(m->loop, &p->ipc, 1);
    p->ipc.data = p;
    p->proc.data = p;
    ipc_reader_init(&p->reader, on_worker_msg, p);
    char id[16], ms[16];
    snprintf(id, sizeof(id), "%d", s->id);
    snprintf(ms, sizeof(ms), "%d", mslot);
    char *args[] = {(char *)m->exe, "__worker", id, ms, NULL};
    uv_stdio_container_t io[7] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
        {.flags = UV_INHERIT_FD, .data.fd = m->listen_fds[m->nlisten == 1 ? 0 : s->id]},
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->ipc},
        {.flags = UV_INHERIT_FD, .data.fd = m->metrics_fd},
        {.flags = UV_INHERIT_FD, .data.fd = m->config_fd},
    };
    /* detached: a terminal's Ctrl-C reaches the master only, which then
     * stops the workers in order */
    uv_process_options_t opt = {.exit_cb = on_exit_cb, .file = m->exe, .args = args,
                                .stdio_count = 7, .stdio = io, .flags = UV_PROCESS_DETACHED};
    int r = uv_spawn(m->loop, &p->proc, &opt);
    p->handles = 2;
    if (r < 0) {
        log_error("worker %d: cannot start %s: %s", s->id, m->exe, uv_strerror(r));
        uv_close((uv_handle_t *)&p->proc, wproc_closed);
        uv_close((uv_handle_t *)&p->ipc, wproc_closed);
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
        uv_timer_start(&s->restart, restart_cb, (uint64_t)(s->backoff_ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms), 0);
        return;
    }
    p->started = uv_now(m->loop);
    s->cur = p;
    m->running++;
    uv_read_start((uv_stream_t *)&p->ipc, ipc_alloc, ipc_read);
    log_info("worker %d started (pid %d)", s->id, p->proc.pid);
}

/* --- stopping ---------------------------------------------------------- */

static void kill_all(struct master *m, int sig)
{
    for (int i = 0; i < m->nworkers; i++)
        if (m->slots[i].cur)
            uv_process_kill(&m->slots[i].cur->proc, sig);
}

static void kill_timer_cb(uv_timer_t *t)
{
    struct master *m = t->data;
    log_warn("shutdown_timeout reached: killing %d worker(s) still draining", m->running);
    kill_all(m, SIGKILL);
}

static void begin_stop(struct master *m, int signum)
{
    m->stopping = 1;
    log_info("%s: stopping gracefully (up to %lld ms)", strsignal(signum), (long long)m->cfg->shutdown_timeout_ms);
    /* workers keep their own descriptors; closing ours lets the sockets
     * go away as soon as every worker has stopped accepting */
    close_listeners(m);
    for (int i = 0; i < m->nworkers; i++)
        uv_timer_stop(&m->slots[i].restart);
    kill_all(m, SIGTERM);
    uv_timer_start(&m->kill_timer, kill_timer_cb, (uint64_t)m->cfg->shutdown_timeout_ms, 0);
    maybe_finish(m);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct master *m = sig->data;
    if (signum == SIGHUP) {
        log_warn("SIGHUP: reload is not available in this version; ignoring");
        return;
    }
    if (!m->stopping) {
        begin_stop(m, signum);
        return;
    }
    log_warn("second %s during stop: killing workers and exiting now", strsignal(signum));
    kill_all(m, SIGKILL);
    m->exit_code = 1;
    uv_stop(m->loop);
}

static void setup_signals(struct master *m)
{
    static const int signums[4] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP};
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < 4; i++) {
        uv_signal_init(m->loop, &m->sigs[i]);
        m->sigs[i].data = m;
        uv_signal_start(&m->sigs[i], on_signal, signums[i]);
    }
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, h->type == UV_PROCESS || h->type == UV_NAMED_PIPE ? wproc_closed : NULL);
}

int master_run(const struct cfg *cfg, const char *exe)
{
    static struct master m;
    char err[512];
    log_set_role("master");
    m.cfg = cfg;
    m.exe = exe;
    m.loop = uv_default_loop();
    m.nworkers = cfg->workers;
    raise_nofile();
    if (bind_listeners(&m, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 1;
    }
    m.nmslots = (uint32_t)m.nworkers * 2 + 2;
    m.metrics_fd = metrics_create(m.nmslots, &m.shm);
    m.config_fd = config_memfd(cfg);
    m.slots = calloc((size_t)m.nworkers, sizeof(*m.slots));
    if (m.metrics_fd < 0 || m.config_fd < 0 || !m.slots) {
        log_error("cannot set up shared state: %s", strerror(errno));
        return 1;
    }
    setup_signals(&m);
    uv_timer_init(m.loop, &m.kill_timer);
    m.kill_timer.data = &m;
    uv_unref((uv_handle_t *)&m.kill_timer);
    m.announced = 1;
    for (int i = 0; i < m.nworkers; i++) {
        m.slots[i] = (struct wslot){.id = i, .m = &m};
        uv_timer_init(m.loop, &m.slots[i].restart);
        m.slots[i].restart.data = &m.slots[i];
        spawn(&m.slots[i]);
    }
    uv_run(m.loop, UV_RUN_DEFAULT);
    close_listeners(&m);
    uv_walk(m.loop, close_walk, NULL);
    uv_run(m.loop, UV_RUN_DEFAULT);
    uv_loop_close(m.loop);
    free(m.slots);
    free(m.listen_fds);
    munmap(m.shm, metrics_size(m.nmslots));
    close(m.metrics_fd);
    close(m.config_fd);
    return m.exit_code;
}
