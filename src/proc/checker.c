/*
 * The health checker process and the master's side of it. See checker.h.
 *
 * Master side: `p` is the running checker. A replaced or stopped one is
 * "retired": nothing it sends is read any more, it gets SIGTERM, and its
 * exit is expected. A checker object lives on the master's `procs` list
 * until its two handles (process, channel) are closed.
 */
#include "proc/checker.h"

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/identity.h"
#include "core/log.h"
#include "proc/ipc.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000

struct cproc {
    uv_process_t proc;
    uv_pipe_t ipc;
    struct ipc_reader reader;
    struct checker *c;
    struct cproc *next;     /* c->procs */
    int handles;            /* open libuv handles; freed at 0 */
    int pid;
    int retired;            /* replaced or stopped: its exit is expected */
    int muted;              /* its messages are not read any more */
    uint64_t started;       /* loop ms */
};

struct checker {
    uv_loop_t *loop;
    const char *exe;
    struct hc *hc;
    struct cproc *p;        /* the running checker; NULL when none */
    struct cproc *procs;    /* every checker not yet closed, retired ones too */
    char *key;              /* the checked groups it runs with; NULL: no group has checks */
    int cfg_fd;             /* the effective config it starts with */
    unsigned idflags;       /* UV_PROCESS_SETUID / SETGID */
    uv_uid_t uid;
    uv_gid_t gid;
    char user[64];
    int64_t min_uptime_ms;
    uv_timer_t restart;
    int backoff_ms, restarts;
    uint64_t next_try;      /* loop ms of a pending restart, 0 if none */
    char last_exit[96];
    int stopping;
};

static void start(struct checker *c);

/* --- what it checks ------------------------------------------------------------ */

/* The groups with active checks, as a canonical string: the checker is
 * replaced when this changes. *out is NULL when no group has checks. */
static int checked_groups(const struct cfg *cfg, char **out)
{
    json_t *all = json_object();
    int rc = all ? 0 : -ENOMEM;
    *out = NULL;
    for (size_t i = 0; i < cfg->nupstreams && !rc; i++) {
        const struct cfg_upstream *g = &cfg->upstreams[i];
        if (!g->health.path)
            continue;
        json_t *servers = json_array();
        for (size_t k = 0; servers && k < g->nservers; k++)
            json_array_append_new(servers, json_string(g->servers[k].address));
        json_t *one = json_pack("{s:o*, s:s, s:s?, s:I, s:I, s:i, s:i}", "servers", servers, "path", g->health.path,
                                "status", g->health.status, "interval", (json_int_t)g->health.interval_ms,
                                "timeout", (json_int_t)g->health.timeout_ms, "fall", g->health.fall, "rise",
                                g->health.rise);
        if (!one || json_object_set_new(all, g->name, one) < 0)
            rc = -ENOMEM;
    }
    if (!rc && json_object_size(all) > 0 && !(*out = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS)))
        rc = -ENOMEM;
    json_decref(all);
    return rc;
}

/* --- the process ----------------------------------------------------------------- */

static void cproc_closed(uv_handle_t *h)
{
    struct cproc *p = h->data;
    if (--p->handles > 0)
        return;
    for (struct cproc **pp = p->c ? &p->c->procs : NULL; pp && *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    ipc_reader_free(&p->reader);
    free(p);
}

static void cproc_close(struct cproc *p)
{
    p->muted = 1;
    if (!uv_is_closing((uv_handle_t *)&p->proc))
        uv_close((uv_handle_t *)&p->proc, cproc_closed);
    if (!uv_is_closing((uv_handle_t *)&p->ipc))
        uv_close((uv_handle_t *)&p->ipc, cproc_closed);
}

/* Nothing more is read from it; its exit will be expected. */
static void retire(struct cproc *p)
{
    struct checker *c = p->c;
    p->retired = p->muted = 1;
    uv_read_stop((uv_stream_t *)&p->ipc);
    uv_process_kill(&p->proc, SIGTERM);
    if (c->p == p)
        c->p = NULL;
}

/* It said something that is not a verdict: it is not trusted any more. */
static void misbehaved(struct cproc *p, const char *what)
{
    if (p->muted)
        return;
    log_error("health checker (pid %d) %s: killing it", p->pid, what);
    p->muted = 1;
    uv_read_stop((uv_stream_t *)&p->ipc);
    uv_process_kill(&p->proc, SIGKILL);
}

static void restart_cb(uv_timer_t *t)
{
    struct checker *c = t->data;
    c->next_try = 0;
    if (!c->stopping && c->key && !c->p)
        start(c);
}

/* A checker died on its own (pid 0: it could not be started): another
 * one, at once or after a doubling delay. */
static void died(struct checker *c, const char *how, int pid, uint64_t up)
{
    snprintf(c->last_exit, sizeof(c->last_exit), "%s", how);
    c->restarts++;
    if (!c->key)
        return;
    if (pid > 0 && up >= (uint64_t)c->min_uptime_ms) {
        c->backoff_ms = 0;
        log_warn("health checker (pid %d) %s after %.1f s; restarting", pid, how, up / 1000.0);
        start(c);
        return;
    }
    c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (c->backoff_ms > BACKOFF_MAX_MS)
        c->backoff_ms = BACKOFF_MAX_MS;
    log_warn("health checker (pid %d) %s %.1f s after start; restarting in %d ms", pid, how, up / 1000.0,
             c->backoff_ms);
    c->next_try = uv_now(c->loop) + (uint64_t)c->backoff_ms;
    uv_timer_start(&c->restart, restart_cb, (uint64_t)c->backoff_ms, 0);
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int sig)
{
    struct cproc *p = proc->data;
    struct checker *c = p->c;
    char how[96];
    if (sig)
        snprintf(how, sizeof(how), "killed by signal %d (%s)", sig, strsignal(sig));
    else
        snprintf(how, sizeof(how), "exited with status %lld", (long long)status);
    uint64_t up = uv_now(c->loop) - p->started;
    int expected = p->retired || c->stopping;
    if (c->p == p)
        c->p = NULL;
    cproc_close(p);
    if (expected)
        log_info("health checker (pid %d) %s", p->pid, how);
    else
        died(c, how, p->pid, up);
}

static void on_msg(void *arg, const struct ipc_header *h, const char *payload)
{
    struct cproc *p = arg;
    if (p->muted)
        return;
    if (h->type != HC_MSG_RESULT || h->len != sizeof(struct hc_result_msg)) {
        char what[96];
        snprintf(what, sizeof(what), "sent a message that is not a verdict (type %u, %u bytes)", (unsigned)h->type,
                 (unsigned)h->len);
        misbehaved(p, what);
        return;
    }
    hc_result(p->c->hc, payload, h->len);
}

static void ipc_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct cproc *p = st->data;
    if (n > 0 && !p->muted && ipc_reader_feed(&p->reader, b->base, (size_t)n) < 0)
        misbehaved(p, "broke the message framing");
    else if (n < 0) /* it closed its end: its exit follows */
        uv_read_stop(st);
}

static void start(struct checker *c)
{
    struct cproc *p = calloc(1, sizeof(*p));
    if (!p) {
        died(c, "could not be started: out of memory", 0, 0);
        return;
    }
    p->c = c;
    uv_pipe_init(c->loop, &p->ipc, 0);
    p->ipc.data = p->proc.data = p;
    ipc_reader_init(&p->reader, on_msg, p);
    p->handles = 2;
    p->next = c->procs;
    c->procs = p;
    char *args[] = {(char *)c->exe, "__checker", NULL};
    uv_stdio_container_t io[5] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = 1},
        {.flags = UV_INHERIT_FD, .data.fd = 2},
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->ipc},
        {.flags = UV_INHERIT_FD, .data.fd = c->cfg_fd},
    };
    uv_process_options_t opt = {.exit_cb = on_exit_cb, .file = c->exe, .args = args, .stdio_count = 5,
                                .stdio = io, .flags = c->idflags, .uid = c->uid, .gid = c->gid};
    int r = uv_spawn(c->loop, &p->proc, &opt);
    if (r < 0) {
        char how[96];
        snprintf(how, sizeof(how), "could not be started: %s", uv_strerror(r));
        p->muted = 1;
        cproc_close(p);
        log_error("health checker: cannot start %s: %s", c->exe, uv_strerror(r));
        died(c, how, 0, 0);
        return;
    }
    setpgid(p->proc.pid, p->proc.pid); /* as workers: a terminal's Ctrl-C reaches the master only */
    p->pid = p->proc.pid;
    p->started = uv_now(c->loop);
    c->p = p;
    uv_read_start((uv_stream_t *)&p->ipc, ipc_alloc_cb, ipc_read);
    log_info("health checker started (pid %d) as user %s", p->pid, c->user);
}

/* --- the master's interface ----------------------------------------------------- */

struct checker *checker_new(uv_loop_t *loop, const char *exe, struct hc *hc)
{
    struct checker *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = loop;
    c->exe = exe;
    c->hc = hc;
    c->cfg_fd = -1;
    uv_timer_init(loop, &c->restart);
    c->restart.data = c;
    uv_unref((uv_handle_t *)&c->restart);
    return c;
}

static void set_identity(struct checker *c, const struct cfg *cfg)
{
    c->idflags = (unsigned)identity_resolve(cfg, &c->uid, &c->gid);
    const struct passwd *pw = cfg->user ? NULL : getpwuid(getuid());
    snprintf(c->user, sizeof(c->user), "%s", cfg->user ? cfg->user : pw ? pw->pw_name : "?");
}

int checker_config(struct checker *c, const struct cfg *cfg)
{
    char *key;
    if (c->stopping)
        return 0;
    int rc = checked_groups(cfg, &key);
    int fd = rc == 0 && key ? cfg_to_memfd(cfg, "cohort-checker-config") : -1;
    if (rc < 0 || (key && fd < 0)) {
        free(key);
        return rc < 0 ? rc : -errno;
    }
    if (c->cfg_fd >= 0)
        close(c->cfg_fd);
    c->cfg_fd = fd; /* later restarts start with the config in force */
    set_identity(c, cfg);
    c->min_uptime_ms = cfg->min_uptime_ms;
    if (key && c->key && strcmp(key, c->key) == 0) {
        free(key);
        return 0;
    }
    if (c->p) {
        log_info("health checker (pid %d): %s", c->p->pid, key ? "the checked groups changed; replacing it"
                                                                 : "no group has checks any more; stopping it");
        retire(c->p);
    }
    free(c->key);
    c->key = key;
    uv_timer_stop(&c->restart);
    c->next_try = 0;
    c->backoff_ms = 0;
    if (key)
        start(c);
    return 0;
}

void checker_signal(struct checker *c, int sig)
{
    if (c && c->p)
        uv_process_kill(&c->p->proc, sig);
}

json_t *checker_status(const struct checker *c)
{
    if (!c || !c->key)
        return json_null();
    uint64_t now = uv_now(c->loop);
    const struct cproc *p = c->p;
    json_t *row = json_pack("{s:i, s:s, s:s, s:f, s:i, s:s}", "pid", p ? p->pid : 0, "user", c->user, "state",
                            p ? "running" : c->next_try ? "crash_loop" : "stopped", "uptime_s",
                            p ? (double)(now - p->started) / 1000.0 : 0.0, "restarts", c->restarts, "last_exit",
                            c->last_exit);
    if (!p && c->next_try)
        json_object_set_new(row, "next_try_s",
                            json_real(c->next_try > now ? (double)(c->next_try - now) / 1000.0 : 0.0));
    return row;
}

void checker_stop(struct checker *c)
{
    if (!c)
        return;
    c->stopping = 1;
    uv_timer_stop(&c->restart);
    c->next_try = 0;
    if (c->p)
        retire(c->p);
}

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void checker_free(struct checker *c)
{
    if (!c)
        return;
    checker_stop(c);
    for (struct cproc *p = c->procs; p; p = p->next) {
        p->c = NULL;
        cproc_close(p);
    }
    c->procs = NULL;
    if (c->cfg_fd >= 0)
        close(c->cfg_fd);
    free(c->key);
    uv_close((uv_handle_t *)&c->restart, timer_closed);
}

/* --- the checker process ----------------------------------------------------- */

struct probe {
    uv_loop_t *loop;
    struct cfg cfg;
    struct hc *hc;
    uv_pipe_t ipc;
    struct ipc_reader reader;
    uv_signal_t sigs[4];
    int quitting;
};

static void send_verdict(void *arg, const void *msg, size_t len)
{
    struct probe *pr = arg;
    int r = ipc_send((uv_stream_t *)&pr->ipc, HC_MSG_RESULT, 0, msg, (uint32_t)len);
    if (r < 0)
        log_warn("a verdict could not be sent to the master: %s", strerror(-r));
}

static void close_one(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Stops the checks and closes everything: the loop then ends. */
static void quit(struct probe *pr, const char *why)
{
    if (pr->quitting)
        return;
    pr->quitting = 1;
    log_debug("stopping: %s", why);
    hc_close(pr->hc);
    pr->hc = NULL;
    uv_walk(pr->loop, close_one, NULL);
}

static void probe_msg(void *arg, const struct ipc_header *h, const char *payload)
{
    (void)payload;
    if (h->type == IPC_STOP)
        quit(arg, "asked by the master");
}

static void probe_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    struct probe *pr = st->data;
    if (n > 0 && ipc_reader_feed(&pr->reader, b->base, (size_t)n) == 0)
        return;
    if (n != 0)
        quit(pr, "the master's channel closed");
}

static void probe_signal(uv_signal_t *s, int signum)
{
    struct probe *pr = s->data;
    if (signum == SIGUSR1) {
        int r = log_reopen();
        if (r < 0)
            log_error("SIGUSR1: cannot reopen the error log %s: %s", pr->cfg.log.error, strerror(-r));
        return;
    }
    quit(pr, strsignal(signum));
}

static int probe_setup(struct probe *pr)
{
    static const int signums[4] = {SIGTERM, SIGINT, SIGQUIT, SIGUSR1};
    char err[512];
    char *text = cfg_read_memfd(CHECKER_FD_CONFIG);
    close(CHECKER_FD_CONFIG);
    if (!text || cfg_from_json(text, &pr->cfg, err, sizeof(err)) < 0) {
        log_error("bad config from master: %s", text ? err : "unreadable");
        free(text);
        return -EINVAL;
    }
    free(text);
    if (log_configure(pr->cfg.log.error, (enum log_level)pr->cfg.log.level, err, sizeof(err)) < 0)
        log_warn("%s; logging to stderr", err);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    for (int i = 0; i < 4; i++) {
        uv_signal_init(pr->loop, &pr->sigs[i]);
        pr->sigs[i].data = pr;
        uv_signal_start(&pr->sigs[i], probe_signal, signums[i]);
        uv_unref((uv_handle_t *)&pr->sigs[i]);
    }
    int r = uv_pipe_init(pr->loop, &pr->ipc, 0);
    if (r == 0)
        r = uv_pipe_open(&pr->ipc, CHECKER_FD_IPC);
    if (r < 0) {
        log_error("cannot open the channel to the master: %s", uv_strerror(r));
        return r;
    }
    pr->ipc.data = pr;
    ipc_reader_init(&pr->reader, probe_msg, pr);
    if ((r = uv_read_start((uv_stream_t *)&pr->ipc, ipc_alloc_cb, probe_read)) < 0)
        return r;
    pr->hc = hc_new_role(HC_PROBE, pr->loop, &pr->cfg, NULL, send_verdict, pr);
    if (!pr->hc) {
        log_error("cannot set up the health checks: out of memory");
        return -ENOMEM;
    }
    return 0;
}

int checker_main(void)
{
    static struct probe pr;
    log_set_role("health checker");
    setpgid(0, 0); /* out of the terminal's foreground group, as workers */
    pr.loop = uv_default_loop();
    int r = probe_setup(&pr);
    if (r == 0)
        uv_run(pr.loop, UV_RUN_DEFAULT);
    quit(&pr, "done");
    uv_run(pr.loop, UV_RUN_DEFAULT); /* close callbacks */
    uv_loop_close(pr.loop);
    ipc_reader_free(&pr.reader);
    cfg_free(&pr.cfg);
    return r == 0 ? 0 : 1;
}
