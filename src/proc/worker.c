/*
 * Worker process. Signals only set the loop's course: the first TERM, INT or
 * QUIT (or the master's channel closing) starts a graceful drain, a second
 * one exits at once.
 */
#include "proc/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "app/app.h"
#include "app/testroutes.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/msg.h"
#include "http/router.h"
#include "http/server.h"
#include "net/listen.h"
#include "proc/ipc.h"

#ifndef COHORT_VERSION
#define COHORT_VERSION "0.0.0"
#endif

struct worker {
    int id;
    uv_loop_t *loop;
    struct cfg cfg;
    struct metrics_shm *shm;
    struct metrics_slot *slot;
    struct router *router;
    struct app *app;
    struct http_server *srv;
    unsigned lflags[CFG_MAX_LISTENERS]; /* HTTP_LISTEN_* of each listener */
    int nlisteners;
    uv_pipe_t ipc;
    struct ipc_reader reader;
    uv_signal_t sigs[3];
    uv_timer_t rss_timer;
    uv_timer_t check_timer;
    uint64_t last_memory_check;
    uint64_t errors_seen;
    uint64_t *error_times;     /* ring of the last max_errors 500s (loop ms) */
    int error_head, error_count;
    int recycle_asked;
    int stopping;
};

static struct worker *self;
static char start_error[200]; /* why this worker could not start */

/* Logs why the worker cannot start and keeps it for the master. */
static void __attribute__((format(printf, 1, 2))) fail_start(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(start_error, sizeof(start_error), fmt, ap);
    va_end(ap);
    log_error("%s", start_error);
}

/* Tells the master why, on the channel (written directly: the loop may not
 * run yet), and returns the exit code. */
static int report_start_failure(int id)
{
    if (!start_error[0])
        snprintf(start_error, sizeof(start_error), "out of memory");
    struct ipc_header h = {.type = IPC_FAILED, .worker = (uint16_t)id, .len = (uint32_t)strlen(start_error)};
    struct iovec iov[2] = {{&h, sizeof(h)}, {start_error, h.len}};
    if (writev(WORKER_FD_IPC, iov, 2) < 0)
        log_warn("cannot tell the master why: %s", strerror(errno));
    return 1;
}

static uint64_t read_rss(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void update_rss(uv_timer_t *t)
{
    struct worker *w = t->data;
    metrics_set(w->slot->rss, read_rss());
}

/* Asks the master for a replacement, once: it starts a new worker and
 * tells this one to drain when the new one is ready. */
static void ask_recycle(struct worker *w, const char *why)
{
    if (w->recycle_asked || w->stopping)
        return;
    w->recycle_asked = 1;
    log_warn("asking to be replaced: %s", why);
    ipc_send((uv_stream_t *)&w->ipc, IPC_RECYCLE, (uint16_t)w->id, why, (uint32_t)strlen(why));
}

/* Notes new internal errors; 1 when max_errors fell within error_window. */
static int too_many_errors(struct worker *w, uint64_t now)
{
    int max = w->cfg.max_errors;
    uint64_t total = http_server_internal_errors(w->srv);
    if (max <= 0 || !w->error_times)
        return 0;
    for (; w->errors_seen < total; w->errors_seen++) {
        w->error_times[w->error_head] = now;
        w->error_head = (w->error_head + 1) % max;
        if (w->error_count < max)
            w->error_count++;
    }
    if (w->error_count < max)
        return 0;
    uint64_t oldest = w->error_times[w->error_head];
    return now - oldest <= (uint64_t)w->cfg.error_window_ms;
}

/* Once a second: the limits that make a worker ask to be replaced. */
static void check_limits(uv_timer_t *t)
{
    struct worker *w = t->data;
    const struct cfg *c = &w->cfg;
    uint64_t now = uv_now(w->loop);
    char why[160];
    if (c->max_memory > 0 && now - w->last_memory_check >= (uint64_t)c->memory_check_interval_ms) {
        w->last_memory_check = now;
        uint64_t rss = read_rss();
        if (rss > (uint64_t)c->max_memory) {
            snprintf(why, sizeof(why), "memory: RSS %llu bytes is above max_memory %lld",
                     (unsigned long long)rss, (long long)c->max_memory);
            ask_recycle(w, why);
        }
    }
    uint64_t served = metrics_get(w->slot->requests);
    if (c->max_requests > 0 && served >= (uint64_t)c->max_requests) {
        snprintf(why, sizeof(why), "max_requests: served %llu requests", (unsigned long long)served);
        ask_recycle(w, why);
    }
    if (too_many_errors(w, now)) {
        snprintf(why, sizeof(why), "max_errors: %d internal errors within %lld ms", c->max_errors,
                 (long long)c->error_window_ms);
        ask_recycle(w, why);
    }
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void app_stopped(void *arg)
{
    struct worker *w = arg;
    log_debug("drained, exiting");
    http_server_close(w->srv);
    for (int i = 0; i < 3; i++)
        close_handle((uv_handle_t *)&w->sigs[i]);
    close_handle((uv_handle_t *)&w->rss_timer);
    close_handle((uv_handle_t *)&w->check_timer);
    close_handle((uv_handle_t *)&w->ipc);
}

static void drained(struct http_server *srv, void *arg)
{
    struct worker *w = arg;
    (void)srv;
    app_stop(w->app, app_stopped, w);
}

static void begin_stop(struct worker *w, const char *why)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    log_debug("stopping (%s): %zu connections open", why, http_server_conns(w->srv));
    http_server_drain(w->srv, drained, w);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct worker *w = s->data;
    if (w->stopping) {
        log_warn("second %s during stop: exiting now", strsignal(signum));
        _exit(1);
    }
    begin_stop(w, strsignal(signum));
}

/* A connection the master handed over with this message: its handle is
 * the next one pending on the channel (they travel in order). */
static void adopt_conn(struct worker *w, const char *payload, uint32_t len)
{
    struct ipc_conn c = {0};
    if (len >= sizeof(c))
        memcpy(&c, payload, sizeof(c));
    if (uv_pipe_pending_count(&w->ipc) > 0)
        http_server_adopt(w->srv, (uv_stream_t *)&w->ipc,
                          c.listener < (uint32_t)w->nlisteners ? w->lflags[c.listener] : 0);
}

/* The process protocol's types here; a module's through its handler. */
static void on_ipc_msg(void *arg, const struct ipc_header *h, const char *payload)
{
    struct worker *w = arg;
    if (h->type == IPC_CONN)
        adopt_conn(w, payload, h->len);
    else if (h->type == IPC_STOP)
        begin_stop(w, "asked by the master");
    else
        msg_dispatch(h->type, h->worker, payload, h->len);
}

/* A module's message to the master (core/msg.h); none once stopping. */
static int send_to_master(void *ctx, uint16_t type, const void *payload, size_t len)
{
    struct worker *w = ctx;
    if (w->stopping)
        return -ESHUTDOWN;
    return ipc_send((uv_stream_t *)&w->ipc, type, (uint16_t)w->id, payload, (uint32_t)len);
}

int worker_id(void)
{
    return self ? self->id : -1;
}

static void ipc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct worker *w = s->data;
    if (n > 0 && ipc_reader_feed(&w->reader, b->base, (size_t)n) == 0)
        return;
    if (n < 0 || n > 0) {
        /* the master is gone (or spoke nonsense): finish and leave */
        uv_read_stop(s);
        begin_stop(w, "master channel closed");
    }
}

static int setup_ipc(struct worker *w)
{
    int r = uv_pipe_init(w->loop, &w->ipc, 1);
    if (r == 0)
        r = uv_pipe_open(&w->ipc, WORKER_FD_IPC);
    if (r < 0)
        return r;
    w->ipc.data = w;
    ipc_reader_init(&w->reader, on_ipc_msg, w);
    static struct msg_transport t = {.send = send_to_master};
    t.ctx = w;
    msg_set_transport(&t);
    return uv_read_start((uv_stream_t *)&w->ipc, ipc_alloc_cb, ipc_read);
}

static void setup_signals(struct worker *w)
{
    static const int signums[3] = {SIGTERM, SIGINT, SIGQUIT};
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN); /* until the app's log module watches it (reopen) */
    signal(SIGTTOU, SIG_IGN); /* a background group writing to a `stty tostop` terminal */
    for (int i = 0; i < 3; i++) {
        uv_signal_init(w->loop, &w->sigs[i]);
        w->sigs[i].data = w;
        uv_signal_start(&w->sigs[i], on_signal, signums[i]);
        uv_unref((uv_handle_t *)&w->sigs[i]);
    }
}

/* Everything from the inherited descriptors: config, counters. */
static int load_inherited(struct worker *w, int slot)
{
    char err[512];
    char *text = cfg_read_memfd(WORKER_FD_CONFIG);
    close(WORKER_FD_CONFIG);
    if (!text || cfg_from_json(text, &w->cfg, err, sizeof(err)) < 0) {
        fail_start("bad config from master: %s", text ? err : "unreadable");
        free(text);
        return -EINVAL;
    }
    free(text);
    int r = metrics_map(WORKER_FD_METRICS, &w->shm);
    close(WORKER_FD_METRICS);
    if (r < 0 || slot < 0 || (uint32_t)slot >= w->shm->nslots) {
        fail_start("cannot map counters: %s", strerror(r < 0 ? -r : EINVAL));
        return -EINVAL;
    }
    w->slot = &w->shm->slots[slot];
    metrics_set(w->slot->pid, (uint64_t)getpid());
    metrics_set(w->slot->started_ms, (uint64_t)time(NULL) * 1000);
    return 0;
}

static int start_serving(struct worker *w)
{
    char err[512];
    w->router = router_new();
    if (!w->router)
        return -ENOMEM;
    struct app_env env = {.cfg = &w->cfg, .router = w->router, .loop = w->loop, .shm = w->shm,
                          .slot = w->slot, .worker_id = w->id,
                          .admin_fd = w->cfg.admin.port ? WORKER_FD_ADMIN : 0};
    w->app = app_new(&env, err, sizeof(err));
    if (!w->app) {
        fail_start("%s", err);
        return -EINVAL;
    }
    w->srv = http_server_new(w->loop, &w->cfg, w->router, w->slot);
    if (!w->srv)
        return -ENOMEM;
    if (w->cfg.schedule == CFG_SCHED_ROUND_ROBIN || w->cfg.schedule == CFG_SCHED_LEAST_LOADED)
        return 0; /* the master accepts and hands connections over IPC */
    for (int i = 0; i < w->nlisteners; i++) {
        int r = http_server_listen_fd(w->srv, worker_listen_fd(i), w->lflags[i]);
        if (r < 0) {
            fail_start("cannot accept on the inherited socket of listener %d: %s", i, uv_strerror(r));
            return r;
        }
    }
    return 0;
}

/* Each listener's kind, for the engine (http/server.h). */
static int listener_flags(struct worker *w)
{
    struct listen_addr a[CFG_MAX_LISTENERS];
    int n = listen_list(&w->cfg, a);
    if (n < 0) {
        fail_start("bad listeners in the config from the master");
        return n;
    }
    for (int i = 0; i < n; i++)
        w->lflags[i] = (a[i].tls ? HTTP_LISTEN_TLS : 0u) | (a[i].family == AF_UNIX ? HTTP_LISTEN_UNIX : 0u);
    w->nlisteners = n;
    return 0;
}

int worker_main(int id, int slot)
{
    static struct worker w;
    char role[32];
    snprintf(role, sizeof(role), "worker %d", id);
    log_set_role(role);
    setpgid(0, 0); /* out of the terminal's foreground group (see master_spawn() in master.c) */
    w.id = id;
    w.loop = uv_default_loop();
    self = &w;
    if (load_inherited(&w, slot) < 0 || listener_flags(&w) < 0)
        return report_start_failure(id);
    if (w.cfg.max_errors > 0)
        w.error_times = calloc((size_t)w.cfg.max_errors, sizeof(uint64_t));
    setup_signals(&w);
    if (start_serving(&w) < 0 || setup_ipc(&w) < 0)
        return report_start_failure(id);
    uv_timer_init(w.loop, &w.rss_timer);
    w.rss_timer.data = &w;
    uv_timer_start(&w.rss_timer, update_rss, 0, 1000);
    uv_unref((uv_handle_t *)&w.rss_timer);
    uv_timer_init(w.loop, &w.check_timer);
    w.check_timer.data = &w;
    w.last_memory_check = uv_now(w.loop);
    uv_timer_start(&w.check_timer, check_limits, 1000, 1000);
    uv_unref((uv_handle_t *)&w.check_timer);
    testroutes_hold_ready(); /* test build only */
    ipc_send((uv_stream_t *)&w.ipc, IPC_READY, (uint16_t)id, COHORT_VERSION, (uint32_t)strlen(COHORT_VERSION));
    uv_run(w.loop, UV_RUN_DEFAULT);
    uv_run(w.loop, UV_RUN_DEFAULT); /* close callbacks */
    uv_loop_close(w.loop);
    ipc_reader_free(&w.reader);
    msg_set_transport(NULL);
    app_free(w.app);
    router_free(w.router);
    cfg_free(&w.cfg);
    free(w.error_times);
    self = NULL;
    return 0;
}
