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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "core/identity.h"
#include "core/log.h"
#include "core/msg.h"
#include "core/summary.h"
#include "proc/master_int.h"
#include "proc/notify.h"
#include "proc/worker.h"

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("cannot raise the open files limit: %s", strerror(errno));
    }
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

void master_drain_proc(struct wproc *p)
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
        master_spawn(s, 0, 0);
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
void master_replace_dead(struct wslot *s, uint64_t up, int pid, const char *how)
{
    struct master *m = s->m;
    s->restarts++;
    metrics_count_restart(m->shm, s->id); /* /metrics, /stats and the dashboard show it */
    if (s->id >= m->nslots)
        return;
    if (up >= (uint64_t)m->cfg.min_uptime_ms) {
        s->backoff_ms = 0;
        log_warn("worker %d (pid %d) %s after %.1f s; restarting", s->id, pid, how, up / 1000.0);
        master_spawn(s, 0, 0);
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
    master_begin_stop(m, "the first start failed");
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
        master_listeners_update(m);
        maybe_finish(m);
        return;
    }
    if (s->repl == p) {
        s->repl = NULL;
        master_replacement_failed(s, p, p->timed_out ? "ready_timeout" : p->error[0] ? p->error : how);
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
            master_replace_dead(s, up, p->pid, how);
    }
    master_listeners_update(m);
}

/* Worker `except` of a broadcast: the process whose message is being
 * handled when it is that worker's (its slot may have a second process). */
static int is_except(const struct master *m, const struct wproc *p, int except)
{
    if (except < 0)
        return 0;
    if (m->dispatching && m->dispatching->slot->id == except)
        return p == m->dispatching;
    return p->slot->id == except;
}

/* A module's message to the workers (core/msg.h): to every serving one but
 * worker `except`, or with MSG_TO_ALL to every process on the list. */
static int broadcast_to_workers(void *ctx, uint16_t type, int except, unsigned flags, const void *payload, size_t len)
{
    struct master *m = ctx;
    for (struct wproc *p = m->procs; p; p = p->next) {
        if (!(flags & MSG_TO_ALL) && (p->state != P_READY || is_except(m, p, except)))
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
        master_on_worker_ready(p, payload, h->len);
        break;
    case IPC_RECYCLE:
        if (s->cur != p || p->state != P_READY)
            break;
        log_warn("worker %d (pid %d) asks to be replaced: %.*s", s->id, p->pid, (int)h->len, payload);
        if (master_replace_slot(s, "recycle", 0) < 0)
            log_warn("worker %d: a replacement is already on its way", s->id);
        break;
    default:
        p->m->dispatching = p;
        msg_dispatch(h->type, s->id, payload, h->len);
        p->m->dispatching = NULL;
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
void master_spawn(struct wslot *s, int replacement, int next)
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
    uv_stdio_container_t io[WORKER_FD_LISTEN_MORE + CFG_MAX_LISTENERS] = {
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
    int nio = 8;
    for (int i = 0; i < m->nlst && !master_routes_connections(&m->cfg); i++) {
        int at = worker_listen_fd(i);
        io[at] = (uv_stdio_container_t){.flags = UV_INHERIT_FD, .data.fd = master_listen_fd(m, i, s->id)};
        nio = at + 1 > nio ? at + 1 : nio;
    }
    /* A process group of its own (set here and by the worker, as shells
     * do, so there is no window): a terminal's Ctrl-C reaches the master
     * only, which then stops the workers in order. Not a session of its
     * own: with sched_autogroup each session is a scheduling group, and a
     * worker alone in one is scheduled against everything else on the
     * machine as a whole (docs/benchmarks.md, "load balancer"). */
    uv_process_options_t opt = {.exit_cb = on_exit_cb, .file = exe, .args = args, .stdio_count = nio,
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
            master_begin_stop(m, "the first start failed");
        } else if (!replacement) {
            master_replace_dead(s, 0, 0, "could not be started");
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
    uv_timer_start(&p->ready_timer, master_ready_timeout_cb, (uint64_t)ready_ms, 0);
    master_hooks_worker_start(send_to_worker, p);
    log_info("worker %d started (pid %d)%s: generation %d%s%s", s->id, p->pid,
             replacement ? " as a replacement" : "", p->gen, exe == m->exe ? "" : ", from ", exe == m->exe ? "" : exe);
    master_listeners_update(m);
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

void master_begin_stop(struct master *m, const char *why)
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
    master_close_listeners(m);
    if (m->ctl_open) /* not after an upgrade: the files are the new master's */
        master_unlink_listeners(m);
    for (int i = 0; i < CFG_MAX_WORKERS; i++) {
        uv_timer_stop(&m->slots[i].restart);
        m->slots[i].next_try = 0;
    }
    if (m->rl.active)
        master_reload_finish(m, 0, "reload stopped: the server is stopping");
    for (struct wproc *p = m->procs; p; p = p->next)
        master_drain_proc(p);
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
        master_upgrade_begin(m, NULL);
        return;
    }
    if (signum == SIGHUP) {
        if (m->rl.active) {
            m->rl.queued = 1;
            log_info("SIGHUP during a reload: queued");
        } else {
            log_info("SIGHUP: reloading");
            master_reload_begin(m);
        }
        return;
    }
    if (!m->stopping) {
        master_begin_stop(m, strsignal(signum));
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

/* Everything before the first worker starts; 0 or an exit code. */
static int prepare(struct master *m)
{
    char err[512];
    raise_nofile();
    if (log_configure(m->cfg.log.error, (enum log_level)m->cfg.log.level, err, sizeof(err)) < 0 ||
        (m->inherited ? master_adopt_sockets(m, err, sizeof(err)) < 0
                      : master_claim_control(m, err, sizeof(err)) < 0 ||
                            master_bind_listeners(m, m->cfg.workers, err, sizeof(err)) < 0 ||
                            master_bind_admin(m, err, sizeof(err)) < 0 || master_open_control(m, err, sizeof(err)) < 0)) {
        log_error("%s", err);
        upgrade_child_fail(m->upc, err);
        return 1;
    }
    m->nmslots = CFG_MAX_WORKERS * MAX_PROCS_PER_SLOT + 8;
    m->metrics_fd = m->inherited ? upgrade_adopt_metrics(m->inh.metrics, &m->shm, &m->nmslots)
                                 : metrics_create(m->nmslots, &m->shm);
    m->config_fd = cfg_to_memfd(&m->cfg, "cohort-config");
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
    master_close_listeners(m);
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
    for (int i = 0; i < m->nlst; i++)
        free(m->lst[i].fds);
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
    master_upgrade_init_child(&m);
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
            master_spawn(&m.slots[i], 0, 0);
        m.spawned = 1;
        master_listeners_update(&m);
        if (m.inherited && !m.stopping)
            uv_timer_start(&m.up_timer, master_upgrade_ready_timeout, (uint64_t)m.cfg.ready_timeout_ms, 0);
        uv_run(m.loop, UV_RUN_DEFAULT);
        r = m.exit_code;
    }
    cleanup(&m);
    return r;
}
