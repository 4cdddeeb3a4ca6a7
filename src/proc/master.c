/*
 * The master. Signal watchers only set the course; all work happens in the
 * loop's callbacks.
 *
 * A slot is a place for one serving worker (ids 0..workers-1). A slot's
 * `cur` process serves; during a reload or a recycle a `repl` process
 * starts beside it, and once it reports ready it becomes `cur` and the old
 * one drains. Every live process, whatever its state, is on `m->procs`.
 *
 * Process states: STARTING (spawned, not yet ready), READY (serving),
 * DRAINING (told to stop; finishing what it has).
 *
 * A generation is a config the master hands to workers: 1 at start, one
 * more per successful reload. Every worker runs a generation; one started
 * for any reason other than a reload (first start, crash, recycle,
 * rollback) runs the generation in force.
 *
 * A listening socket listens only while a worker can take what it queues:
 * a reuseport slot's socket while that slot has a live worker, the shared
 * socket while any worker is live, the master's acceptor while any worker
 * is ready. Otherwise the master takes the queued connections (handing
 * them to a serving worker over IPC) and stops listening on it, so the
 * kernel sends new connections to the live workers' sockets or refuses
 * them; a worker that starts listens on its socket again. During an
 * upgrade the two masters' workers share the sockets: neither master stops
 * one from listening until the upgrade has ended (the new master decides
 * from its takeover on, the old one again if the upgrade failed).
 */
#include "proc/master.h"

#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/summary.h"
#include "core/identity.h"
#include "core/msg.h"
#include "proc/control.h"
#include "proc/hooks.h"
#include "proc/ipc.h"
#include "proc/notify.h"
#include "proc/upgrade.h"
#include "proc/worker.h"

#ifndef COHORT_VERSION
#define COHORT_VERSION "0.0.0"
#endif

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
#define MAX_PROCS_PER_SLOT 2 /* a serving worker and its replacement */
#define MAX_EXITS 16         /* exits kept for `cohort status` */
#define ROLLBACK_TRIES 3     /* attempts to replace one worker back */
#define SELF_EXE "/proc/self/exe" /* the master's own binary, whatever is on disk now */

enum pstate { P_STARTING, P_READY, P_DRAINING };

struct master;
struct wslot;

struct wproc {
    uv_process_t proc;
    uv_pipe_t ipc;
    uv_timer_t ready_timer; /* ready_timeout */
    struct ipc_reader reader;
    struct master *m;
    struct wslot *slot;
    struct wproc *next;     /* m->procs */
    enum pstate state;
    int handles;            /* open libuv handles; freed at 0 */
    int mslot;              /* counters slot */
    int pid;
    int gen;                /* config generation it runs */
    int timed_out;          /* killed for not being ready within ready_timeout */
    int exited;             /* its exit is being handled: only IPC_FAILED is read */
    uint64_t started;       /* loop ms */
    char version[32];
    char error[200];        /* why it could not start, as it said (IPC_FAILED) */
};

/* An exit of a worker process, for `cohort status`: every exit but a clean
 * one after a drain, on a row of its own. */
struct exit_rec {
    int id, pid, gen;
    const char *role;       /* "serving", "starting", "replacement", "draining" */
    char how[96];
    char error[200];
    uint64_t at;            /* loop ms */
};

struct wslot {
    int id;
    struct master *m;
    struct wproc *cur, *repl;
    uv_timer_t restart;
    int backoff_ms;
    int restarts;
    uint64_t next_try;      /* loop ms of a pending restart, 0 if none */
    char last_exit[96];     /* how the slot's last serving worker ended */
    char last_error[200];   /* and what it said, when it could not start */
    const char *repl_why;   /* why `repl` was started: "reload", "recycle", "rollback" */
};

struct ctl_client {
    uv_pipe_t pipe;
    struct master *m;
    struct ctl_client *next_waiter;
    char buf[512];
    size_t len;
    int answered;
};

enum rl_phase { RL_FORWARD, RL_ROLLBACK };

struct reload {
    int active, queued;
    struct cfg next;
    int next_fd;            /* config memfd of the new config */
    enum rl_phase phase;    /* replacing with the new config, or back with the old */
    int slot;               /* slot whose replacement the reload waits for; -1: none */
    int replaced;
    int rolled_back;        /* new workers replaced back */
    int tries;              /* failed attempts to replace one back */
    char why[300];          /* why the reload failed */
    uint64_t failed_before; /* 5xx answers when the reload began */
    char kept[1024];        /* non-reloadable keys left as they were */
    struct ctl_client *waiters, *queued_waiters;
};

struct master {
    struct cfg cfg;
    const struct cfg_sources *src;
    const char *exe;
    uv_loop_t *loop;
    int *listen_fds;
    int nlisten;
    int metrics_fd, config_fd;
    struct metrics_shm *shm;
    uint32_t nmslots;
    struct wslot slots[CFG_MAX_WORKERS];
    int nslots;             /* slots in use: cfg.workers */
    struct wproc *procs;
    int nprocs;
    uv_signal_t sigs[6];
    int admin_fd;           /* admin listener (admin.port) for /metrics, /stats, /status; -1: none */
    uv_timer_t kill_timer;
    uv_tcp_t *acceptor;     /* round_robin / least_loaded, while a worker is ready */
    int gen;                /* the generation in force */
    const char *gen_exe;    /* the binary its workers start from */
    struct exit_rec exits[MAX_EXITS];
    int nexits;             /* exits recorded so far; the last MAX_EXITS are kept */
    int rr_next;
    uv_pipe_t ctl;
    char ctl_path[256], pid_path[256];
    int ctl_open;
    struct reload rl;
    int stopping, announced;
    int spawned;            /* the first start's workers are all spawned */
    uint64_t started_ms;
    int exit_code;
    struct master_env env;  /* what the master hooks get (proc/hooks.h) */
    /* `cohort upgrade` (proc/upgrade.h): the old master's side... */
    struct upgrade *up;     /* a new master on its way; NULL: none */
    struct ctl_client *up_waiters;
    int handed_over;        /* a new master took over: its socket and pid file now */
    /* Another master owns the listening sockets' state and the acceptor: a
     * new master until it takes over, an old one from "go" until the
     * upgrade ends. listeners_update() leaves them alone meanwhile. */
    int standby;
    /* ...and the new master's */
    struct upgrade_fds inh;
    int inherited;
    struct upgrade_child *upc;
    uv_timer_t up_timer;    /* its workers' ready_timeout */
};

static void spawn(struct wslot *s, int replacement, int next);
static void reload_step(struct master *m);
static void reload_finish(struct master *m, int ok, const char *msg);
static void begin_stop(struct master *m, const char *why);
static void reload_begin(struct master *m);
static int replace_slot(struct wslot *s, const char *why, int next);
static void listeners_update(struct master *m);
static void upgrade_begin(struct master *m, struct ctl_client *c);

static int master_routes_connections(const struct cfg *c)
{
    return c->schedule == CFG_SCHED_ROUND_ROBIN || c->schedule == CFG_SCHED_LEAST_LOADED;
}

static const char *schedule_name(enum cfg_schedule s)
{
    static const char *const names[] = {"reuseport", "shared", "round_robin", "least_loaded"};
    return names[s];
}

/* --- listeners --------------------------------------------------------- */

static int bind_one(const struct cfg *cfg, int reuseport, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int fam = strchr(cfg->host, ':') ? AF_INET6 : AF_INET;
    int r = fam == AF_INET6 ? uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&ss)
                            : uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&ss);
    int fd = r < 0 ? -1 : socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        (fam == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (struct sockaddr *)&ss,
             fam == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) < 0 ||
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

/* The admin listener (observability endpoints, app/stats.c): one socket,
 * bound once, inherited by every worker at WORKER_FD_ADMIN. */
static int bind_admin(struct master *m, char *err, size_t errlen)
{
    if (!m->cfg.admin.port)
        return 0;
    struct cfg c = m->cfg; /* bind_one reads host, port and backlog */
    c.host = m->cfg.admin.host;
    c.port = m->cfg.admin.port;
    m->admin_fd = bind_one(&c, 0, err, errlen);
    return m->admin_fd < 0 ? m->admin_fd : 0;
}

/* reuseport: one socket per slot, kept by the master across restarts and
 * reloads of that slot's worker (while it has no live worker it does not
 * listen: listeners_update()); otherwise one socket. */
static int bind_listeners(struct master *m, int want, char *err, size_t errlen)
{
    int reuse = m->cfg.schedule == CFG_SCHED_REUSEPORT;
    if (!reuse)
        want = 1;
    if (want <= m->nlisten)
        return 0;
    int *fds = realloc(m->listen_fds, (size_t)want * sizeof(int));
    if (!fds)
        return -ENOMEM;
    m->listen_fds = fds;
    for (; m->nlisten < want; m->nlisten++) {
        int fd = bind_one(&m->cfg, reuse, err, errlen);
        if (fd < 0)
            return fd;
        m->listen_fds[m->nlisten] = fd;
    }
    return 0;
}

static void acceptor_closed(uv_handle_t *h)
{
    free(h);
}

static void acceptor_stop(struct master *m)
{
    if (m->acceptor) {
        uv_close((uv_handle_t *)m->acceptor, acceptor_closed);
        m->acceptor = NULL;
    }
}

static void close_listeners(struct master *m)
{
    for (int i = 0; i < m->nlisten; i++)
        if (m->listen_fds[i] >= 0) {
            close(m->listen_fds[i]);
            m->listen_fds[i] = -1;
        }
    acceptor_stop(m);
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

/* --- the process table ------------------------------------------------- */

static int alloc_mslot(struct master *m)
{
    for (uint32_t i = 0; i < m->nmslots; i++) {
        int used = 0;
        for (struct wproc *p = m->procs; p && !used; p = p->next)
            used = p->mslot == (int)i;
        /* a claim, not a look: during an upgrade two masters share the slots */
        if (!used && metrics_claim(m->shm, i, (uint64_t)getpid()) == 0)
            return (int)i;
    }
    return -1;
}

static void unlink_proc(struct master *m, struct wproc *p)
{
    for (struct wproc **pp = &m->procs; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            m->nprocs--;
            return;
        }
}

static void wproc_closed(uv_handle_t *h)
{
    struct wproc *p = h->data;
    if (--p->handles == 0) {
        ipc_reader_free(&p->reader);
        free(p);
    }
}

static void close_proc_handles(struct wproc *p)
{
    if (!uv_is_closing((uv_handle_t *)&p->proc))
        uv_close((uv_handle_t *)&p->proc, wproc_closed);
    if (!uv_is_closing((uv_handle_t *)&p->ipc))
        uv_close((uv_handle_t *)&p->ipc, wproc_closed);
    if (!uv_is_closing((uv_handle_t *)&p->ready_timer))
        uv_close((uv_handle_t *)&p->ready_timer, wproc_closed);
}

static void drain_proc(struct wproc *p)
{
    if (p->state == P_DRAINING)
        return;
    p->state = P_DRAINING;
    uv_timer_stop(&p->ready_timer);
    /* the channel first; a signal if the channel is stuck */
    if (ipc_send((uv_stream_t *)&p->ipc, IPC_STOP, (uint16_t)p->slot->id, NULL, 0) < 0)
        uv_process_kill(&p->proc, SIGTERM);
}

static void maybe_finish(struct master *m)
{
    if (m->stopping && m->nprocs == 0) {
        log_info("all workers stopped; exiting");
        uv_stop(m->loop);
    }
}

static void restart_cb(uv_timer_t *t)
{
    struct wslot *s = t->data;
    s->next_try = 0;
    if (!s->m->stopping && !s->cur && s->id < s->m->nslots)
        spawn(s, 0, 0);
}

static void describe_exit(char *buf, size_t len, int64_t status, int sig)
{
    if (sig)
        snprintf(buf, len, "killed by signal %d (%s)", sig, strsignal(sig));
    else
        snprintf(buf, len, "exited with status %lld", (long long)status);
}

/* The serving worker of a slot died: start another, at once or after a
 * doubling delay when it died young (a crash loop never spins the CPU). */
static void replace_dead(struct wslot *s, uint64_t up, int pid, const char *how)
{
    struct master *m = s->m;
    s->restarts++;
    metrics_count_restart(m->shm, s->id); /* /metrics, /stats and the dashboard show it */
    if (s->id >= m->nslots)
        return;
    if (up >= (uint64_t)m->cfg.min_uptime_ms) {
        s->backoff_ms = 0;
        log_warn("worker %d (pid %d) %s after %.1f s; restarting", s->id, pid, how, up / 1000.0);
        spawn(s, 0, 0);
        return;
    }
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (s->backoff_ms > BACKOFF_MAX_MS)
        s->backoff_ms = BACKOFF_MAX_MS;
    log_warn("worker %d (pid %d) %s %.1f s after start (crash loop?); restarting in %d ms%s%s", s->id, pid, how,
             up / 1000.0, s->backoff_ms, s->last_error[0] ? ": " : "", s->last_error);
    s->next_try = uv_now(m->loop) + (uint64_t)s->backoff_ms;
    uv_timer_start(&s->restart, restart_cb, (uint64_t)s->backoff_ms, 0);
}

static void replacement_failed(struct wslot *s, struct wproc *p, const char *how);

static void record_exit(struct master *m, struct wproc *p, const char *role, const char *how)
{
    struct exit_rec *e = &m->exits[m->nexits++ % MAX_EXITS];
    e->id = p->slot->id;
    e->pid = p->pid;
    e->gen = p->gen;
    e->role = role;
    e->at = uv_now(m->loop);
    snprintf(e->how, sizeof(e->how), "%s", how);
    snprintf(e->error, sizeof(e->error), "%s", p->error);
}

/* Whatever the worker wrote before it exited (a start failure's reason
 * may still be unread when the exit is seen). */
static void read_last_words(struct wproc *p)
{
    char buf[4096];
    int fd;
    ssize_t n;
    p->exited = 1;
    if (uv_fileno((uv_handle_t *)&p->ipc, &fd) < 0)
        return;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        if (ipc_reader_feed(&p->reader, buf, (size_t)n) < 0)
            break;
}

/* A worker of the first start did not get ready: the server cannot start.
 * The master stops what runs and exits 1 with the worker's own reason. */
static void start_failed(struct master *m, struct wslot *s, struct wproc *p, const char *how)
{
    char why[500];
    snprintf(why, sizeof(why), "worker %d (pid %d) could not start: %s%s%s%s", s->id, p->pid,
             p->error[0] ? p->error : how, p->error[0] ? " (" : "", p->error[0] ? how : "",
             p->error[0] ? ")" : "");
    log_error("%s; exiting", why);
    upgrade_child_fail(m->upc, why); /* a new master: the old one goes on serving */
    m->exit_code = 1;
    begin_stop(m, "the first start failed");
}

static const char *exit_role(const struct wslot *s, const struct wproc *p)
{
    if (p->state == P_DRAINING)
        return "draining";
    if (s->repl == p)
        return "replacement";
    return p->state == P_READY ? "serving" : "starting";
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
    struct wproc *p = proc->data;
    struct wslot *s = p->slot;
    struct master *m = p->m;
    char how[160];
    read_last_words(p);
    describe_exit(how, sizeof(how), status, sig);
    if (p->timed_out)
        snprintf(how + strlen(how), sizeof(how) - strlen(how), ", not ready within ready_timeout");
    uint64_t up = uv_now(m->loop) - p->started;
    int clean = status == 0 && sig == 0;
    metrics_retire(m->shm, (uint32_t)p->mslot); /* readers never see a half-done fold */
    unlink_proc(m, p);
    close_proc_handles(p);
    if (!(clean && (p->state == P_DRAINING || m->stopping)))
        record_exit(m, p, exit_role(s, p), how);
    if (p->state == P_DRAINING || m->stopping) {
        log_info("worker %d (pid %d) %s%s", s->id, p->pid, p->state == P_DRAINING ? "drained and " : "", how);
        if (s->cur == p)
            s->cur = NULL;
        if (s->repl == p)
            s->repl = NULL;
        listeners_update(m);
        maybe_finish(m);
        return;
    }
    if (s->repl == p) {
        s->repl = NULL;
        replacement_failed(s, p, p->timed_out ? "ready_timeout" : p->error[0] ? p->error : how);
    } else if (s->cur == p) {
        s->cur = NULL;
        snprintf(s->last_exit, sizeof(s->last_exit), "%s", how);
        snprintf(s->last_error, sizeof(s->last_error), "%s", p->error);
        if (!m->announced && p->state == P_STARTING) {
            start_failed(m, s, p, how);
            return;
        }
        if (s->repl) /* its replacement was already starting: let it take over */
            log_warn("worker %d (pid %d) %s while being replaced", s->id, p->pid, how);
        else
            replace_dead(s, up, p->pid, how);
    }
    listeners_update(m);
}

/* --- readiness, replacement and reload --------------------------------- */

static int all_ready(struct master *m)
{
    for (int i = 0; i < m->nslots; i++)
        if (!m->slots[i].cur || m->slots[i].cur->state != P_READY)
            return 0;
    return 1;
}

static void announce(struct master *m)
{
    if (m->announced || !all_ready(m))
        return;
    m->announced = 1;
    const char *h6 = strchr(m->cfg.host, ':') ? "[" : "";
    log_info("serving http://%s%s%s:%d/ with %d workers (schedule %s)", h6, m->cfg.host, *h6 ? "]" : "",
             m->cfg.port, m->nslots, schedule_name(m->cfg.schedule));
    notify_send("READY=1");
    if (m->upc)
        upgrade_child_ready(m->upc);
}

/* A replacement reported ready: it takes the slot, the old one drains. */
static void replacement_ready(struct wslot *s)
{
    struct master *m = s->m;
    struct wproc *old = s->cur, *p = s->repl;
    s->repl = NULL;
    s->cur = p;
    log_info("worker %d (pid %d) replaced by pid %d (%s): generation %d", s->id, old ? old->pid : 0, p->pid,
             s->repl_why, p->gen);
    if (old)
        drain_proc(old);
    if (m->rl.active && m->rl.slot == s->id) {
        m->rl.slot = -1;
        if (m->rl.phase == RL_FORWARD)
            m->rl.replaced++;
        else
            m->rl.rolled_back++;
    }
    if (m->rl.active)
        reload_step(m);
}

static void rollback_begin(struct master *m);

/* A replacement exited or was killed before it was ready; the slot's
 * serving worker (if any) goes on. A reload that waited for it turns back. */
static void replacement_failed(struct wslot *s, struct wproc *p, const char *why)
{
    struct master *m = s->m;
    struct reload *rl = &m->rl;
    log_error("worker %d: the new worker (pid %d, %s) did not become ready (%s); %s", s->id, p->pid,
              s->repl_why, why, s->cur ? "the old one keeps serving" : "restarting the slot");
    if (!s->cur && !m->stopping)
        replace_dead(s, 0, 0, why);
    if (!rl->active)
        return;
    if (rl->slot == s->id) {
        rl->slot = -1;
        if (rl->phase == RL_FORWARD) {
            snprintf(rl->why, sizeof(rl->why), "worker %d's replacement did not become ready (%s)", s->id, why);
            rollback_begin(m);
            return;
        }
        rl->tries++;
    }
    reload_step(m);
}

static void ready_timeout_cb(uv_timer_t *t)
{
    struct wproc *p = t->data;
    if (p->state != P_STARTING)
        return;
    log_error("worker %d (pid %d) not ready within ready_timeout (%lld ms): killing it", p->slot->id, p->pid,
              (long long)p->m->cfg.ready_timeout_ms);
    p->timed_out = 1;
    uv_process_kill(&p->proc, SIGKILL);
}

static void on_worker_ready(struct wproc *p, const char *payload, uint32_t len)
{
    struct wslot *s = p->slot;
    if (p->state != P_STARTING || p->timed_out)
        return;
    p->state = P_READY;
    uv_timer_stop(&p->ready_timer);
    snprintf(p->version, sizeof(p->version), "%.*s", (int)(len < 31 ? len : 31), payload);
    log_debug("worker %d (pid %d) ready", s->id, p->pid);
    if (s->repl == p)
        replacement_ready(s);
    announce(p->m);
    listeners_update(p->m);
}

/* Starts a replacement beside a slot's worker (reload, recycle or
 * rollback): with the reload's new config when `next`, else with the
 * generation in force. */
static int replace_slot(struct wslot *s, const char *why, int next)
{
    struct master *m = s->m;
    if (s->repl || m->stopping)
        return -EBUSY;
    s->repl_why = why;
    spawn(s, 1, next);
    return s->repl ? 0 : -EAGAIN;
}

/* A module's message to the workers (core/msg.h): to every serving one but
 * worker `except`, or with MSG_TO_ALL to every process on the list. */
static int broadcast_to_workers(void *ctx, uint16_t type, int except, unsigned flags, const void *payload, size_t len)
{
    struct master *m = ctx;
    for (struct wproc *p = m->procs; p; p = p->next) {
        if (!(flags & MSG_TO_ALL) && (p->state != P_READY || p->slot->id == except))
            continue;
        uint16_t id = (uint16_t)(except >= 0 ? except : p->slot->id);
        if (ipc_send((uv_stream_t *)&p->ipc, type, id, payload, (uint32_t)len) < 0)
            log_warn("worker %d (pid %d) is not reading its channel: message dropped", p->slot->id, p->pid);
    }
    return 0;
}

/* To the one worker just started (master_hooks_worker_start). */
static int send_to_worker(void *ctx, uint16_t type, const void *payload, size_t len)
{
    struct wproc *p = ctx;
    int r = ipc_send((uv_stream_t *)&p->ipc, type, (uint16_t)p->slot->id, payload, (uint32_t)len);
    if (r < 0)
        log_warn("worker %d (pid %d) is not reading its channel: message dropped", p->slot->id, p->pid);
    return r;
}

/* The process protocol's types here; a module's through its handler. */
static void on_worker_msg(void *arg, const struct ipc_header *h, const char *payload)
{
    struct wproc *p = arg;
    struct wslot *s = p->slot;
    if (h->type == IPC_FAILED) {
        snprintf(p->error, sizeof(p->error), "%.*s", (int)h->len, payload);
        return;
    }
    if (p->exited)
        return;
    switch (h->type) {
    case IPC_READY:
        on_worker_ready(p, payload, h->len);
        break;
    case IPC_RECYCLE:
        if (s->cur != p || p->state != P_READY)
            break;
        log_warn("worker %d (pid %d) asks to be replaced: %.*s", s->id, p->pid, (int)h->len, payload);
        if (replace_slot(s, "recycle", 0) < 0)
            log_warn("worker %d: a replacement is already on its way", s->id);
        break;
    default:
        msg_dispatch(h->type, s->id, payload, h->len);
        break;
    }
}

static void ipc_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct wproc *p = st->data;
    if (n > 0 && ipc_reader_feed(&p->reader, b->base, (size_t)n) == 0)
        return;
    if (n != 0) /* the worker closed its end or spoke nonsense */
        uv_read_stop(st);
}

/* Starts a worker for slot s: its serving worker, or a replacement beside
 * it; with the reload's new config when `next`, else the generation in
 * force. */
static void spawn(struct wslot *s, int replacement, int next)
{
    struct master *m = s->m;
    struct wproc *p = calloc(1, sizeof(*p));
    int mslot = p ? alloc_mslot(m) : -1;
    if (!p || mslot < 0) {
        free(p);
        log_error("worker %d: no room to start one (memory or counter slots)", s->id);
        if (!replacement)
            uv_timer_start(&s->restart, restart_cb, 1000, 0);
        return;
    }
    p->m = m;
    p->slot = s;
    p->mslot = mslot;
    uv_pipe_init(m->loop, &p->ipc, 1);
    uv_timer_init(m->loop, &p->ready_timer);
    p->ipc.data = p;
    p->proc.data = p;
    p->ready_timer.data = p;
    p->gen = next ? m->gen + 1 : m->gen;
    const char *exe = next ? m->exe : m->gen_exe;
    int64_t ready_ms = next ? m->rl.next.ready_timeout_ms : m->cfg.ready_timeout_ms;
    ipc_reader_init(&p->reader, on_worker_msg, p);
    char id[16], ms[16];
    snprintf(id, sizeof(id), "%d", s->id);
    snprintf(ms, sizeof(ms), "%d", mslot);
    char *args[] = {(char *)exe, "__worker", id, ms, NULL};
    int cfg_fd = next ? m->rl.next_fd : m->config_fd;
    uv_stdio_container_t io[8] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->ipc},
        {.flags = UV_INHERIT_FD, .data.fd = m->metrics_fd},
        {.flags = UV_INHERIT_FD, .data.fd = cfg_fd},
        {.flags = UV_IGNORE}, /* WORKER_FD_ADMIN, when admin.port is set */
    };
    if (m->admin_fd >= 0) {
        io[7].flags = UV_INHERIT_FD;
        io[7].data.fd = m->admin_fd;
    }
    if (!master_routes_connections(&m->cfg)) {
        io[3].flags = UV_INHERIT_FD;
        io[3].data.fd = m->listen_fds[m->nlisten == 1 ? 0 : s->id];
    }
    /* A process group of its own (set here and by the worker, as shells
     * do, so there is no window): a terminal's Ctrl-C reaches the master
     * only, which then stops the workers in order. Not a session of its
     * own: with sched_autogroup each session is a scheduling group, and a
     * worker alone in one is scheduled against everything else on the
     * machine as a whole (docs/benchmarks.md, "load balancer"). */
    uv_process_options_t opt = {.exit_cb = on_exit_cb, .file = exe, .args = args, .stdio_count = 8,
                                .stdio = io};
    opt.flags |= (unsigned)identity_resolve(&m->cfg, &opt.uid, &opt.gid);
    int r = uv_spawn(m->loop, &p->proc, &opt);
    p->handles = 3;
    if (r < 0) {
        log_error("worker %d: cannot start %s: %s", s->id, exe, uv_strerror(r));
        metrics_set(m->shm->slots[mslot].pid, 0);
        close_proc_handles(p);
        if (!replacement && !m->announced) {
            m->exit_code = 1;
            begin_stop(m, "the first start failed");
        } else if (!replacement) {
            replace_dead(s, 0, 0, "could not be started");
        }
        return;
    }
    setpgid(p->proc.pid, p->proc.pid); /* EACCES once it exec'd and set it itself */
    /* the counters slot belongs to this process from now on */
    metrics_mark_used(m->shm, (uint32_t)mslot);
    metrics_set(m->shm->slots[mslot].pid, (uint64_t)p->proc.pid);
    p->pid = p->proc.pid;
    p->started = uv_now(m->loop);
    p->state = P_STARTING;
    p->next = m->procs;
    m->procs = p;
    m->nprocs++;
    if (replacement)
        s->repl = p;
    else
        s->cur = p;
    uv_read_start((uv_stream_t *)&p->ipc, ipc_alloc_cb, ipc_read);
    uv_timer_start(&p->ready_timer, ready_timeout_cb, (uint64_t)ready_ms, 0);
    master_hooks_worker_start(send_to_worker, p);
    log_info("worker %d started (pid %d)%s: generation %d%s%s", s->id, p->pid,
             replacement ? " as a replacement" : "", p->gen, exe == m->exe ? "" : ", from ", exe == m->exe ? "" : exe);
    listeners_update(m);
}

static uint64_t failed_requests(const struct master *m)
{
    struct metrics_slot total;
    metrics_sum(m->shm, &total);
    return total.status[5];
}

static void ctl_answer(struct ctl_client *c, json_t *reply);

static void answer_waiters(struct ctl_client *w, json_t *reply)
{
    while (w) {
        struct ctl_client *next = w->next_waiter;
        ctl_answer(w, json_incref(reply));
        w = next;
    }
    json_decref(reply);
}

static void reload_finish(struct master *m, int ok, const char *msg)
{
    struct reload *rl = &m->rl;
    uint64_t failed = failed_requests(m) - rl->failed_before;
    if (ok) {
        /* the new config is the master's now, started from the binary on disk */
        cfg_free(&m->cfg);
        m->cfg = rl->next;
        memset(&rl->next, 0, sizeof(rl->next));
        close(m->config_fd);
        m->config_fd = rl->next_fd;
        m->gen++;
        m->gen_exe = m->exe;
    } else {
        cfg_free(&rl->next);
        close(rl->next_fd);
        master_hooks_config(&m->cfg); /* back to what is still served */
    }
    rl->next_fd = -1;
    rl->active = 0;
    rl->slot = -1;
    char text[1200];
    if (ok)
        snprintf(text, sizeof(text), "reloaded: %d worker(s) replaced, %llu request(s) failed meanwhile%s%s",
                 rl->replaced, (unsigned long long)failed, rl->kept[0] ? "; " : "", rl->kept);
    else if (msg)
        snprintf(text, sizeof(text), "%s", msg);
    else
        snprintf(text, sizeof(text), "reload failed and rolled back: %s; %d worker(s) replaced and %d replaced back: "
                 "every worker serves the old config (generation %d), started from the master's own binary",
                 rl->why, rl->replaced, rl->rolled_back, m->gen);
    log_msg(ok ? LOG_INFO : LOG_ERROR, "%s", text);
    notify_send("READY=1");
    answer_waiters(rl->waiters, json_pack("{s:b, s:s, s:i, s:i, s:i, s:I}", "ok", ok, "message", text, "replaced",
                                          rl->replaced, "rolled_back", rl->rolled_back, "generation", m->gen,
                                          "failed_requests", (json_int_t)failed));
    rl->waiters = NULL;
    if (rl->queued && !m->stopping) {
        rl->queued = 0;
        rl->waiters = rl->queued_waiters;
        rl->queued_waiters = NULL;
        log_info("starting the reload that was queued");
        reload_begin(m);
    }
}

/* Keys that need a restart keep their current values; says which changed. */
static int keep_fixed_keys(struct master *m, struct cfg *next)
{
    return cfg_keep_fixed(&m->cfg, next, m->rl.kept, sizeof(m->rl.kept)) < 0 ? -ENOMEM : 0;
}

static void fail_before_start(struct master *m, const char *msg)
{
    log_error("%s", msg);
    answer_waiters(m->rl.waiters, json_pack("{s:b, s:s}", "ok", 0, "message", msg));
    m->rl.waiters = NULL;
}

/* Re-reads the config and starts replacing workers one at a time. */
static void reload_begin(struct master *m)
{
    struct reload *rl = &m->rl;
    char err[600], msg[700];
    if (m->stopping || m->up) {
        fail_before_start(m, m->up ? "not reloading: an upgrade is under way" : "not reloading: the server is stopping");
        return;
    }
    memset(&rl->next, 0, sizeof(rl->next));
    if (cfg_load(m->src, &rl->next, err, sizeof(err)) < 0) {
        snprintf(msg, sizeof(msg), "reload refused, still serving the old config: %s", err);
        fail_before_start(m, msg);
        return;
    }
    rl->next_fd = keep_fixed_keys(m, &rl->next) < 0 ? -1 : config_memfd(&rl->next);
    if (rl->next_fd < 0) {
        cfg_free(&rl->next);
        fail_before_start(m, "reload refused: cannot hand the new config to workers");
        return;
    }
    master_hooks_config(&rl->next);
    rl->active = 1;
    rl->phase = RL_FORWARD;
    rl->slot = -1;
    rl->replaced = rl->rolled_back = rl->tries = 0;
    rl->why[0] = '\0';
    rl->failed_before = failed_requests(m);
    if (rl->next.workers > m->nslots)
        m->nslots = rl->next.workers;
    notify_send("RELOADING=1");
    log_info("reloading to generation %d: replacing %d worker(s) one at a time%s%s", m->gen + 1, rl->next.workers,
             rl->kept[0] ? "; " : "", rl->kept);
    reload_step(m);
}

/* The slots a reload added, and their sockets, go away. */
static void shrink_slots(struct master *m, int n)
{
    for (int i = n; i < m->nslots; i++) {
        struct wslot *s = &m->slots[i];
        uv_timer_stop(&s->restart);
        s->next_try = 0;
        if (s->cur)
            drain_proc(s->cur);
        if (s->repl) {
            drain_proc(s->repl);
            s->repl = NULL;
        }
    }
    m->nslots = n;
    /* sockets of slots that are gone: once their draining workers close
     * theirs too, the kernel stops queueing connections on them */
    for (; m->cfg.schedule == CFG_SCHED_REUSEPORT && m->nlisten > m->nslots; m->nlisten--)
        close(m->listen_fds[m->nlisten - 1]);
}

/* A replacement of the new generation failed: every worker already
 * replaced is replaced back with the generation in force, started from the
 * master's own binary (the binary on disk may be what failed). */
static void rollback_begin(struct master *m)
{
    struct reload *rl = &m->rl;
    rl->phase = RL_ROLLBACK;
    rl->tries = 0;
    m->gen_exe = SELF_EXE;
    log_error("reload failed: %s; replacing the %d new worker(s) back with generation %d", rl->why, rl->replaced,
              m->gen);
    shrink_slots(m, m->cfg.workers);
    reload_step(m);
}

/* The next slot whose worker is not of generation `gen`, or -1; *wait is
 * set when a replacement is on its way somewhere (its end comes back
 * here). Slots waiting to restart start with the generation in force. */
static int next_slot_to_replace(struct master *m, int n, int gen, int *wait)
{
    for (int i = 0; i < n; i++) {
        struct wslot *s = &m->slots[i];
        if (s->repl)
            *wait = 1;
        else if (s->cur ? s->cur->gen != gen : !s->next_try)
            return i;
    }
    return -1;
}

/* Replaces the next slot (forward: with the new config; rolling back:
 * with the old), or ends the reload when every slot is done. */
static void reload_step(struct master *m)
{
    struct reload *rl = &m->rl;
    char err[256];
    int wait = 0;
    if (!rl->active || rl->slot >= 0 || m->stopping)
        return;
    int back = rl->phase == RL_ROLLBACK;
    int i = back ? next_slot_to_replace(m, m->nslots, m->gen, &wait)
                 : next_slot_to_replace(m, rl->next.workers, m->gen + 1, &wait);
    if (i >= 0 && !back) {
        if (bind_listeners(m, i + 1, err, sizeof(err)) < 0 || replace_slot(&m->slots[i], "reload", 1) < 0) {
            snprintf(rl->why, sizeof(rl->why), "cannot start a new worker %d", i);
            rollback_begin(m);
            return;
        }
        rl->slot = i;
        return; /* replacement_ready() or replacement_failed() comes back here */
    }
    if (i >= 0) {
        if (rl->tries >= ROLLBACK_TRIES || replace_slot(&m->slots[i], "rollback", 0) < 0) {
            char msg[700];
            snprintf(msg, sizeof(msg), "reload failed: %s; rolling back failed too: worker %d still runs "
                     "generation %d", rl->why, i, m->gen + 1);
            reload_finish(m, 0, msg);
            return;
        }
        rl->slot = i;
        return;
    }
    if (wait)
        return;
    if (back) {
        reload_finish(m, 0, NULL);
        return;
    }
    shrink_slots(m, rl->next.workers);
    reload_finish(m, 1, NULL);
}

/* --- handing connections over: round_robin, least_loaded, and the queue of
 * a socket that stops listening --------------------------------------------- */

struct handoff {
    uv_tcp_t tcp;
    uv_write_t req;
};

static void handoff_closed(uv_handle_t *h)
{
    free(h->data);
}

static void handoff_sent(uv_write_t *req, int status)
{
    struct handoff *h = req->data;
    (void)status;
    uv_close((uv_handle_t *)&h->tcp, handoff_closed);
}

/* Next serving worker in turn (round_robin), or the one with the fewest
 * requests in flight, ties taken in turn (least_loaded); a worker at
 * max_connections is skipped while another can take the connection. */
static struct wproc *pick_worker(struct master *m)
{
    struct wproc *best = NULL;
    uint64_t best_load = UINT64_MAX;
    int least = m->cfg.schedule == CFG_SCHED_LEAST_LOADED;
    for (int k = 0; k < m->nslots; k++) {
        int i = (m->rr_next + k) % m->nslots;
        struct wproc *p = m->slots[i].cur;
        if (!p || p->state != P_READY)
            continue;
        const struct metrics_slot *ms = &m->shm->slots[p->mslot];
        if (m->cfg.max_connections && metrics_get(ms->conns_open) >= (uint64_t)m->cfg.max_connections)
            continue;
        uint64_t load = least ? metrics_get(ms->inflight) : 0;
        if (load < best_load) {
            best = p;
            best_load = load;
            if (!least || load == 0)
                break;
        }
    }
    if (best)
        m->rr_next = (best->slot->id + 1) % m->nslots;
    return best;
}

/* Passes an accepted connection to a serving worker; closes it when there
 * is none. */
static void hand_over(struct master *m, struct handoff *h)
{
    struct wproc *p = pick_worker(m);
    if (!p || ipc_send_handle(&p->ipc, (uv_stream_t *)&h->tcp, handoff_sent, &h->req) < 0)
        uv_close((uv_handle_t *)&h->tcp, handoff_closed);
}

static struct handoff *handoff_new(struct master *m)
{
    struct handoff *h = malloc(sizeof(*h));
    if (h) {
        uv_tcp_init(m->loop, &h->tcp);
        h->tcp.data = h;
        h->req.data = h;
    }
    return h;
}

static void on_accept(uv_stream_t *server, int status)
{
    struct master *m = server->data;
    struct handoff *h = status < 0 ? NULL : handoff_new(m);
    if (!h)
        return;
    if (uv_accept(server, (uv_stream_t *)&h->tcp) < 0) {
        uv_close((uv_handle_t *)&h->tcp, handoff_closed);
        return;
    }
    hand_over(m, h);
}

static int acceptor_start(struct master *m)
{
    uv_tcp_t *a = malloc(sizeof(*a));
    int fd = a ? dup(m->listen_fds[0]) : -1;
    if (fd < 0) {
        free(a);
        return -ENOMEM;
    }
    uv_tcp_init(m->loop, a);
    a->data = m;
    m->acceptor = a;
    int r = uv_tcp_open(a, fd);
    if (r < 0)
        close(fd);
    if (r == 0)
        r = uv_listen((uv_stream_t *)a, m->cfg.backlog, on_accept); /* listens again if it had stopped */
    if (r < 0) {
        log_error("cannot accept on the listening socket: %s", uv_strerror(r));
        acceptor_stop(m);
    }
    return r;
}

/* Listening socket i has no worker to take its connections: the ones
 * queued on it go to a serving worker (or are closed when there is none),
 * and it stops listening (the kernel sends new connections to the other
 * sockets of a reuseport group, or refuses them), until a worker listens
 * on it again. */
static void stop_listening(struct master *m, int i)
{
    int fd = m->listen_fds[i], cfd, n = 0;
    struct sockaddr sa = {.sa_family = AF_UNSPEC};
    while (n < 65536 && (cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        struct handoff *h = handoff_new(m);
        n++;
        if (!h || uv_tcp_open(&h->tcp, cfd) < 0) {
            close(cfd);
            if (h)
                uv_close((uv_handle_t *)&h->tcp, handoff_closed);
            continue;
        }
        hand_over(m, h);
    }
    if (connect(fd, &sa, sizeof(sa)) < 0)
        log_warn("cannot stop listening on socket %d: %s", i, strerror(errno));
    log_info("%s%d: no live worker: not listening until one starts (%d queued connection(s) handed over)",
             m->nlisten > 1 ? "socket of worker " : "listening socket ", m->nlisten > 1 ? i : 0, n);
}

static int proc_live(const struct wproc *p)
{
    return p && p->state != P_DRAINING;
}

static int slot_live(const struct wslot *s)
{
    return proc_live(s->cur) || proc_live(s->repl);
}

/* Whether the socket listens now: the kernel's word, since other
 * processes (workers, the other master during an upgrade) listen on it too. */
static int socket_listens(int fd)
{
    int on = 0;
    socklen_t len = sizeof(on);
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

/* Socket i is left to no worker: it stops listening, unless another
 * master's workers may use it (an upgrade under way: their listening state
 * is worked out again when it ends). */
static void unlisten_idle(struct master *m, int i)
{
    if (!m->up && !m->handed_over && socket_listens(m->listen_fds[i]))
        stop_listening(m, i);
}

/* Makes the listening sockets follow the workers (see the top of the file).
 * Only the master in charge does: not one on standby (see struct master). */
static void listeners_update(struct master *m)
{
    int live = 0, ready = 0;
    if (m->stopping || !m->spawned || m->standby)
        return;
    for (int i = 0; i < m->nslots; i++) {
        live |= slot_live(&m->slots[i]);
        ready |= m->slots[i].cur && m->slots[i].cur->state == P_READY;
    }
    if (m->cfg.schedule == CFG_SCHED_REUSEPORT && m->nlisten > 1) {
        for (int i = 0; i < m->nlisten; i++) {
            if (!(i < m->nslots && slot_live(&m->slots[i])))
                unlisten_idle(m, i); /* a live worker listens on it as it starts */
        }
        return;
    }
    if (master_routes_connections(&m->cfg)) {
        if (!ready)
            acceptor_stop(m);
        live = ready;
    }
    if (!live)
        unlisten_idle(m, 0);
    if (ready && master_routes_connections(&m->cfg) && !m->acceptor)
        acceptor_start(m);
}

/* --- the control socket ---------------------------------------------------- */

static void ctl_closed(uv_handle_t *h)
{
    free(h->data);
}

static void ctl_written(uv_write_t *req, int status)
{
    struct ctl_client *c = req->data;
    (void)status;
    free(req);
    uv_close((uv_handle_t *)&c->pipe, ctl_closed);
}

static void ctl_answer(struct ctl_client *c, json_t *reply)
{
    char *text = reply ? json_dumps(reply, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(reply);
    c->answered = 1;
    size_t n = text ? strlen(text) : 0;
    struct {
        uv_write_t req;
        char data[];
    } *w = malloc(sizeof(*w) + n + 2);
    if (!w) {
        free(text);
        uv_close((uv_handle_t *)&c->pipe, ctl_closed);
        return;
    }
    memcpy(w->data, text ? text : "", n);
    w->data[n] = '\n';
    free(text);
    w->req.data = c;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)(n + 1));
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, ctl_written) < 0) {
        free(w);
        uv_close((uv_handle_t *)&c->pipe, ctl_closed);
    }
}

static const char *state_name(const struct wproc *p)
{
    return p->state == P_STARTING ? "starting" : p->state == P_READY ? "ready" : "draining";
}

static json_t *proc_row(struct master *m, const struct wslot *s, const struct wproc *p)
{
    uint64_t now = uv_now(m->loop);
    json_t *row = json_pack("{s:i, s:i, s:s, s:f, s:i, s:s}", "id", s->id, "pid", p ? p->pid : 0, "state",
                            p ? state_name(p) : (s->next_try ? "crash_loop" : "stopped"), "uptime_s",
                            p ? (double)(now - p->started) / 1000.0 : 0.0, "restarts", s->restarts,
                            "last_exit", p && p != s->cur ? "" : s->last_exit);
    json_object_set_new(row, "generation", json_integer(p ? p->gen : m->gen));
    if (p) {
        const struct metrics_slot *ms = &m->shm->slots[p->mslot];
        json_object_set_new(row, "rss", json_integer((json_int_t)metrics_get(ms->rss)));
        json_object_set_new(row, "connections", json_integer((json_int_t)metrics_get(ms->conns_open)));
        json_object_set_new(row, "requests", json_integer((json_int_t)metrics_get(ms->requests)));
        json_object_set_new(row, "inflight", json_integer((json_int_t)metrics_get(ms->inflight)));
        json_object_set_new(row, "version", json_string(p->version));
    } else if (s->next_try) {
        json_object_set_new(row, "next_try_s",
                            json_real(s->next_try > now ? (double)(s->next_try - now) / 1000.0 : 0.0));
        json_object_set_new(row, "last_error", json_string(s->last_error));
    }
    return row;
}

/* The last exits, newest first: each on a row of its own. */
static json_t *exits_json(struct master *m)
{
    json_t *a = json_array();
    uint64_t now = uv_now(m->loop);
    for (int k = 1; k <= MAX_EXITS && k <= m->nexits; k++) {
        const struct exit_rec *e = &m->exits[(m->nexits - k) % MAX_EXITS];
        json_array_append_new(a, json_pack("{s:i, s:i, s:i, s:s, s:s, s:s, s:f}", "id", e->id, "pid", e->pid,
                                           "generation", e->gen, "role", e->role, "exit", e->how, "error",
                                           e->error, "ago_s", (double)(now - e->at) / 1000.0));
    }
    return a;
}

static json_t *status_json(struct master *m)
{
    json_t *workers = json_array();
    for (int i = 0; i < m->nslots; i++) {
        struct wslot *s = &m->slots[i];
        json_array_append_new(workers, proc_row(m, s, s->cur));
        if (s->repl)
            json_array_append_new(workers, proc_row(m, s, s->repl));
    }
    for (struct wproc *p = m->procs; p; p = p->next)
        if (p->state == P_DRAINING)
            json_array_append_new(workers, proc_row(m, p->slot, p));
    json_t *j = json_pack("{s:b, s:{s:i, s:s, s:s, s:i, s:s, s:s, s:i, s:i, s:f, s:b, s:b}, s:o, s:o}", "ok", 1,
                     "master", "pid", (int)getpid(), "version", COHORT_VERSION, "host", m->cfg.host, "port",
                     m->cfg.port, "schedule", schedule_name(m->cfg.schedule), "env", m->cfg.env ? m->cfg.env : "",
                     "workers", m->nslots, "generation", m->gen,
                     "uptime_s", (double)(uv_now(m->loop) - m->started_ms) / 1000.0,
                     "reloading", m->rl.active, "stopping", m->stopping, "workers", workers, "exits",
                     exits_json(m));
    master_hooks_status(j);
    return j;
}

static void ctl_command(struct ctl_client *c, const char *cmd)
{
    struct master *m = c->m;
    if (strcmp(cmd, "status") == 0) {
        ctl_answer(c, status_json(m));
    } else if (strcmp(cmd, "reload") == 0) {
        struct ctl_client **list = m->rl.active ? &m->rl.queued_waiters : &m->rl.waiters;
        c->next_waiter = *list;
        *list = c;
        if (m->rl.active) {
            m->rl.queued = 1;
            log_info("reload requested during a reload: queued");
        } else {
            reload_begin(m);
        }
    } else if (strcmp(cmd, "upgrade") == 0) {
        upgrade_begin(m, c);
    } else if (strcmp(cmd, "stop") == 0) {
        ctl_answer(c, json_pack("{s:b, s:i, s:s}", "ok", 1, "pid", (int)getpid(), "message", "stopping"));
        if (!m->stopping)
            begin_stop(m, "cohort stop");
    } else {
        ctl_answer(c, json_pack("{s:b, s:s}", "ok", 0, "message", "unknown command"));
    }
}

static void ctl_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct ctl_client *c = h->data;
    (void)hint;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void ctl_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct ctl_client *c = st->data;
    (void)b;
    if (n <= 0) {
        uv_read_stop(st);
        /* a waiting reload client is answered (and closed) later */
        if (n < 0 && !c->answered && !c->next_waiter && c->m->rl.waiters != c && c->m->rl.queued_waiters != c)
            uv_close((uv_handle_t *)st, ctl_closed);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (!strchr(c->buf, '\n') && c->len < sizeof(c->buf) - 1)
        return;
    uv_read_stop(st);
    json_error_t e;
    json_t *req = json_loads(c->buf, JSON_DISABLE_EOF_CHECK, &e);
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    ctl_command(c, cmd ? cmd : "");
    json_decref(req);
}

static void on_ctl_conn(uv_stream_t *server, int status)
{
    struct master *m = server->data;
    struct ctl_client *c = status < 0 ? NULL : calloc(1, sizeof(*c));
    if (!c)
        return;
    c->m = m;
    uv_pipe_init(m->loop, &c->pipe, 0);
    c->pipe.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
        uv_close((uv_handle_t *)&c->pipe, ctl_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, ctl_alloc, ctl_read);
}

/* Refuses to run beside a live master on the same socket; takes over a
 * stale one. */
static int claim_control(struct master *m, char *err, size_t errlen)
{
    char *reply = NULL;
    control_paths(&m->cfg, m->ctl_path, sizeof(m->ctl_path), m->pid_path, sizeof(m->pid_path));
    int r = control_request(m->ctl_path, "{\"cmd\": \"status\"}", &reply, 2000);
    if (r == 0 || r == -ETIMEDOUT) {
        json_t *j = reply ? json_loads(reply, 0, NULL) : NULL;
        json_int_t pid = json_integer_value(json_object_get(json_object_get(j, "master"), "pid"));
        snprintf(err, errlen, "another cohort master (pid %lld) is running with control socket %s; "
                 "stop it first (cohort stop) or set control.socket", (long long)pid, m->ctl_path);
        json_decref(j);
        free(reply);
        return -EADDRINUSE;
    }
    free(reply);
    unlink(m->ctl_path);
    return 0;
}

/* Answers on the listening control socket fd (taken over, even on error). */
static int serve_control(struct master *m, int fd)
{
    uv_pipe_init(m->loop, &m->ctl, 0);
    m->ctl.data = m;
    int r = uv_pipe_open(&m->ctl, fd);
    if (r < 0)
        close(fd);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&m->ctl, 16, on_ctl_conn);
    if (r < 0)
        uv_close((uv_handle_t *)&m->ctl, NULL);
    return r;
}

static void write_pid_file(struct master *m)
{
    FILE *f = fopen(m->pid_path, "w");
    if (f) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    } else {
        log_warn("cannot write pid file %s: %s", m->pid_path, strerror(errno));
    }
}

static int open_control(struct master *m, char *err, size_t errlen)
{
    int fd = control_listen(m->ctl_path);
    int r = fd < 0 ? fd : serve_control(m, fd);
    if (r < 0) {
        snprintf(err, errlen, "cannot open control socket %s: %s", m->ctl_path, uv_strerror(r));
        return r;
    }
    m->ctl_open = 1;
    write_pid_file(m);
    return 0;
}

/* --- stopping ---------------------------------------------------------- */

static void kill_all(struct master *m, int sig)
{
    for (struct wproc *p = m->procs; p; p = p->next)
        uv_process_kill(&p->proc, sig);
}

static void kill_timer_cb(uv_timer_t *t)
{
    struct master *m = t->data;
    log_warn("shutdown_timeout reached: killing %d worker(s) still draining", m->nprocs);
    kill_all(m, SIGKILL);
}

static void begin_stop(struct master *m, const char *why)
{
    m->stopping = 1;
    uv_timer_stop(&m->up_timer);
    upgrade_child_fail(m->upc, why); /* a new master that has not taken over: no-op if it said why */
    master_hooks_stop();
    if (m->up && !m->handed_over)
        upgrade_abort(m->up, "upgrade stopped: the server is stopping");
    if (!m->handed_over) /* systemd follows the new master now */
        notify_send("STOPPING=1");
    log_info("%s: stopping gracefully (up to %lld ms)", why, (long long)m->cfg.shutdown_timeout_ms);
    /* workers keep their own descriptors; closing ours lets the sockets go
     * away as soon as every worker has stopped accepting */
    close_listeners(m);
    for (int i = 0; i < CFG_MAX_WORKERS; i++) {
        uv_timer_stop(&m->slots[i].restart);
        m->slots[i].next_try = 0;
    }
    if (m->rl.active)
        reload_finish(m, 0, "reload stopped: the server is stopping");
    for (struct wproc *p = m->procs; p; p = p->next)
        drain_proc(p);
    uv_timer_start(&m->kill_timer, kill_timer_cb, (uint64_t)m->cfg.shutdown_timeout_ms, 0);
    maybe_finish(m);
}

/*
 * SIGUSR1 (log rotation, after the files were moved away): the master opens
 * its error log again and passes the signal on to every worker, which
 * reopens its access and error logs (http/accesslog.c).
 */
static void reopen_logs(struct master *m)
{
    int r = log_reopen();
    if (r < 0)
        log_error("SIGUSR1: cannot reopen the error log %s: %s", m->cfg.log.error, strerror(-r));
    kill_all(m, SIGUSR1);
    master_hooks_signal(SIGUSR1);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct master *m = sig->data;
    if (signum == SIGUSR1) {
        reopen_logs(m);
        return;
    }
    if (signum == SIGUSR2) {
        log_info("SIGUSR2: upgrading the master");
        upgrade_begin(m, NULL);
        return;
    }
    if (signum == SIGHUP) {
        if (m->rl.active) {
            m->rl.queued = 1;
            log_info("SIGHUP during a reload: queued");
        } else {
            log_info("SIGHUP: reloading");
            reload_begin(m);
        }
        return;
    }
    if (!m->stopping) {
        begin_stop(m, strsignal(signum));
        return;
    }
    log_warn("second %s during stop: killing workers and exiting now", strsignal(signum));
    kill_all(m, SIGKILL);
    m->exit_code = 1;
    uv_stop(m->loop);
}

static void setup_signals(struct master *m)
{
    static const int signums[6] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < 6; i++) {
        uv_signal_init(m->loop, &m->sigs[i]);
        m->sigs[i].data = m;
        uv_signal_start(&m->sigs[i], on_signal, signums[i]);
    }
}

/* At exit, after the processes' own handles were closed by their owners. */
static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* --- upgrade: the old master (proc/upgrade.h) ------------------------------ */

static void upgrade_pause(void *arg)
{
    struct master *m = arg;
    m->standby = 1; /* the new master accepts from now on */
    acceptor_stop(m);
    uv_close((uv_handle_t *)&m->ctl, NULL);
}

static void upgrade_resume(void *arg, int ctl_fd)
{
    struct master *m = arg;
    m->standby = 0;
    if (m->stopping) {
        close(ctl_fd);
        return;
    }
    if (serve_control(m, ctl_fd) < 0)
        log_error("cannot answer on the control socket %s again", m->ctl_path);
    listeners_update(m); /* accepts again once a worker is ready */
}

static void upgrade_finish(void *arg, int ok, const char *text, int pid)
{
    struct master *m = arg;
    json_t *reply = json_pack("{s:b, s:s, s:i}", "ok", ok, "message", text, "pid", ok ? pid : (int)getpid());
    if (ok)
        json_object_set_new(reply, "old_pid", json_integer((json_int_t)getpid()));
    log_msg(ok ? LOG_INFO : LOG_ERROR, "%s", text);
    answer_waiters(m->up_waiters, reply);
    m->up_waiters = NULL;
    if (!ok) {
        upgrade_free(m->up);
        m->up = NULL;
        listeners_update(m); /* what the upgrade held back: sockets no worker of this master takes */
        return;
    }
    m->handed_over = 1;
    m->ctl_open = 0; /* the socket's path and the pid file are the new master's */
    begin_stop(m, "upgraded");
}

/* `cohort upgrade` (c) or SIGUSR2 (c NULL): starts a new master from the
 * binary on disk with this one's sockets and counters. */
static void upgrade_begin(struct master *m, struct ctl_client *c)
{
    struct upgrade_host host = {m, upgrade_pause, upgrade_resume, upgrade_finish};
    const char *busy = m->stopping    ? "not upgrading: the server is stopping"
                       : m->rl.active ? "not upgrading: a reload is under way; upgrade when it has ended"
                                      : NULL;
    char err[600];
    uv_os_fd_t ctl = -1;
    if (!busy && !m->up && uv_fileno((uv_handle_t *)&m->ctl, &ctl) < 0)
        busy = "not upgrading: the control socket is not open"; /* a new master that has not taken over */
    if (busy) {
        log_warn("%s", busy);
        if (c)
            ctl_answer(c, json_pack("{s:b, s:s}", "ok", 0, "message", busy));
        return;
    }
    if (c) { /* answered when this upgrade, or the one under way, ends */
        c->next_waiter = m->up_waiters;
        m->up_waiters = c;
    }
    if (m->up)
        return;
    struct upgrade_fds fds = {.nlisten = m->nlisten, .admin = m->admin_fd, .control = ctl,
                              .metrics = m->metrics_fd, .channel = -1};
    memcpy(fds.listen, m->listen_fds, (size_t)m->nlisten * sizeof(int));
    uint64_t deadline = 2 * (uint64_t)m->cfg.ready_timeout_ms + 10000; /* its config, its workers */
    if (!(m->up = upgrade_start(m->loop, m->exe, &fds, deadline, &host, err, sizeof(err)))) {
        char text[700];
        snprintf(text, sizeof(text), "upgrade failed; master pid %d goes on serving: %s", (int)getpid(), err);
        upgrade_finish(m, 0, text, 0);
        return;
    }
    log_info("upgrading: new master pid %d started from %s", upgrade_pid(m->up), m->exe);
}

/* --- upgrade: the new master --------------------------------------------- */

static void take_over(struct master *m, const char *how)
{
    char state[64];
    uv_timer_stop(&m->up_timer);
    if (serve_control(m, m->inh.control) < 0)
        log_error("cannot answer on the control socket %s", m->ctl_path);
    m->inh.control = -1;
    m->ctl_open = 1;
    write_pid_file(m);
    /* the old master has stopped accepting: this one accepts (once a worker
     * is ready) and makes the sockets follow its own workers from now on */
    m->standby = 0;
    listeners_update(m);
    snprintf(state, sizeof(state), "MAINPID=%d", (int)getpid());
    notify_send(state);
    log_info("took over from the old master (%s)", how);
    upgrade_child_done(m->upc);
    m->upc = NULL;
}

static void on_upgrade_child(void *arg, enum upgrade_child_event ev)
{
    struct master *m = arg;
    if (ev == UPGRADE_CANCEL) {
        upgrade_child_free(m->upc);
        m->upc = NULL;
        m->exit_code = 1;
        if (!m->stopping)
            begin_stop(m, "the old master gave up on this upgrade");
        return;
    }
    take_over(m, ev == UPGRADE_GO ? "it handed over" : "it is gone");
}

static void upgrade_ready_timeout(uv_timer_t *t)
{
    struct master *m = t->data;
    char why[300];
    const char *last = "";
    if (m->announced || m->stopping)
        return;
    for (int i = 0; i < m->nslots && !*last; i++)
        last = m->slots[i].last_exit;
    snprintf(why, sizeof(why), "its workers were not ready within ready_timeout (%lld ms)%s%s",
             (long long)m->cfg.ready_timeout_ms, *last ? "; a worker " : "", last);
    log_error("upgrade: %s", why);
    upgrade_child_fail(m->upc, why);
    m->exit_code = 1;
    begin_stop(m, "upgrade failed");
}

static void upgrade_init_child(struct master *m)
{
    uv_timer_init(m->loop, &m->up_timer);
    m->up_timer.data = m;
    int r = upgrade_inherited(&m->inh);
    if (r < 0)
        log_error("%s is malformed; starting as a new master", UPGRADE_ENV);
    m->inherited = r > 0;
    m->standby = m->inherited; /* until it takes over */
    if (m->inherited && !(m->upc = upgrade_child_new(m->loop, m->inh.channel, on_upgrade_child, m)))
        log_error("upgrade: cannot listen to the old master");
}

/* The sockets the old master handed over, and more with reuseport when
 * this config has more workers. */
static int adopt_sockets(struct master *m, char *err, size_t errlen)
{
    control_paths(&m->cfg, m->ctl_path, sizeof(m->ctl_path), m->pid_path, sizeof(m->pid_path));
    int r = upgrade_adopt_listeners(&m->inh, &m->cfg, m->ctl_path, &m->listen_fds, &m->nlisten, err, errlen);
    m->admin_fd = m->inh.admin;
    return r < 0 ? r : bind_listeners(m, m->cfg.workers, err, errlen);
}

/* Everything before the first worker starts; 0 or an exit code. */
static int prepare(struct master *m)
{
    char err[512];
    raise_nofile();
    if (log_configure(m->cfg.log.error, (enum log_level)m->cfg.log.level, err, sizeof(err)) < 0 ||
        (m->inherited ? adopt_sockets(m, err, sizeof(err)) < 0
                      : claim_control(m, err, sizeof(err)) < 0 ||
                            bind_listeners(m, m->cfg.workers, err, sizeof(err)) < 0 ||
                            bind_admin(m, err, sizeof(err)) < 0 || open_control(m, err, sizeof(err)) < 0)) {
        log_error("%s", err);
        upgrade_child_fail(m->upc, err);
        return 1;
    }
    m->nmslots = CFG_MAX_WORKERS * MAX_PROCS_PER_SLOT + 8;
    m->metrics_fd = m->inherited ? upgrade_adopt_metrics(m->inh.metrics, &m->shm, &m->nmslots)
                                 : metrics_create(m->nmslots, &m->shm);
    m->config_fd = config_memfd(&m->cfg);
    if (m->metrics_fd < 0 || m->config_fd < 0) {
        log_error("cannot set up shared state: %s", strerror(errno));
        return 1;
    }
    static struct msg_transport t = {.broadcast = broadcast_to_workers};
    t.ctx = m;
    msg_set_transport(&t);
    m->env = (struct master_env){.loop = m->loop, .cfg = &m->cfg, .shm = m->shm, .exe = m->exe};
    return master_hooks_prepare(&m->env) < 0 ? 1 : 0;
}

static void cleanup(struct master *m)
{
    master_hooks_free();
    upgrade_free(m->up);
    upgrade_child_free(m->upc);
    close_listeners(m);
    for (struct wproc *p = m->procs; p; p = p->next)
        close_proc_handles(p);
    if (m->ctl_open) {
        unlink(m->ctl_path);
        unlink(m->pid_path);
    }
    uv_walk(m->loop, close_walk, NULL);
    uv_run(m->loop, UV_RUN_DEFAULT);
    uv_loop_close(m->loop);
    if (m->shm)
        munmap(m->shm, metrics_size(m->nmslots));
    if (m->metrics_fd >= 0)
        close(m->metrics_fd);
    if (m->config_fd >= 0)
        close(m->config_fd);
    if (m->admin_fd >= 0)
        close(m->admin_fd);
    free(m->listen_fds);
    cfg_free(&m->cfg);
}

int master_run(struct cfg *cfg, const struct cfg_sources *src, const char *exe)
{
    static struct master m;
    log_set_role("master");
    m.cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    m.src = src;
    m.exe = exe;
    m.gen = 1;
    m.gen_exe = exe;
    m.rl.slot = -1;
    m.loop = uv_default_loop();
    m.metrics_fd = m.config_fd = m.rl.next_fd = m.admin_fd = -1;
    upgrade_init_child(&m);
    m.nslots = m.cfg.workers;
    m.started_ms = uv_now(m.loop);
    for (int i = 0; i < CFG_MAX_WORKERS; i++) {
        struct wslot *s = &m.slots[i];
        s->id = i;
        s->m = &m;
        uv_timer_init(m.loop, &s->restart);
        s->restart.data = s;
    }
    uv_timer_init(m.loop, &m.kill_timer);
    m.kill_timer.data = &m;
    uv_unref((uv_handle_t *)&m.kill_timer);
    int r = prepare(&m);
    if (r != 0)
        upgrade_child_fail(m.upc, "the new master could not start; see its log");
    if (r == 0) {
        setup_signals(&m);
        summary_start(m.loop, m.shm, m.cfg.log.stats_interval_ms); /* log.stats_interval */
        for (int i = 0; i < m.nslots && !m.stopping; i++)
            spawn(&m.slots[i], 0, 0);
        m.spawned = 1;
        listeners_update(&m);
        if (m.inherited && !m.stopping)
            uv_timer_start(&m.up_timer, upgrade_ready_timeout, (uint64_t)m.cfg.ready_timeout_ms, 0);
        uv_run(m.loop, UV_RUN_DEFAULT);
        r = m.exit_code;
    }
    cleanup(&m);
    return r;
}
