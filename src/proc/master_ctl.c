/*
 * The master's control socket (proc/control.h): `cohort status` (the JSON
 * of the process table), reload, stop and upgrade commands, and the pid
 * file.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "proc/control.h"
#include "proc/master_int.h"

const char *master_schedule_name(enum cfg_schedule s)
{
    static const char *const names[] = {"reuseport", "shared", "round_robin", "least_loaded"};
    return names[s];
}

void master_answer_waiters(struct ctl_client *w, json_t *reply)
{
    while (w) {
        struct ctl_client *next = w->next_waiter;
        master_ctl_answer(w, json_incref(reply));
        w = next;
    }
    json_decref(reply);
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

void master_ctl_answer(struct ctl_client *c, json_t *reply)
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
                     m->cfg.port, "schedule", master_schedule_name(m->cfg.schedule), "env", m->cfg.env ? m->cfg.env : "",
                     "workers", m->nslots, "generation", m->gen,
                     "uptime_s", (double)(uv_now(m->loop) - m->started_ms) / 1000.0,
                     "reloading", m->rl.active, "stopping", m->stopping, "workers", workers, "exits",
                     exits_json(m));
    json_t *listen = json_array();
    for (int i = 0; i < m->nlst; i++)
        json_array_append_new(listen, json_pack("{s:s, s:b}", "address", m->lst[i].a.name, "tls", m->lst[i].a.tls));
    json_object_set_new(json_object_get(j, "master"), "listen", listen);
    master_hooks_status(j);
    return j;
}

static void ctl_command(struct ctl_client *c, const char *cmd)
{
    struct master *m = c->m;
    if (strcmp(cmd, "status") == 0) {
        master_ctl_answer(c, status_json(m));
    } else if (strcmp(cmd, "reload") == 0) {
        struct ctl_client **list = m->rl.active ? &m->rl.queued_waiters : &m->rl.waiters;
        c->next_waiter = *list;
        *list = c;
        if (m->rl.active) {
            m->rl.queued = 1;
            log_info("reload requested during a reload: queued");
        } else {
            master_reload_begin(m);
        }
    } else if (strcmp(cmd, "upgrade") == 0) {
        master_upgrade_begin(m, c);
    } else if (strcmp(cmd, "stop") == 0) {
        master_ctl_answer(c, json_pack("{s:b, s:i, s:s}", "ok", 1, "pid", (int)getpid(), "message", "stopping"));
        if (!m->stopping)
            master_begin_stop(m, "cohort stop");
    } else {
        master_ctl_answer(c, json_pack("{s:b, s:s}", "ok", 0, "message", "unknown command"));
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
int master_claim_control(struct master *m, char *err, size_t errlen)
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
int master_serve_control(struct master *m, int fd)
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

void master_write_pid_file(struct master *m)
{
    FILE *f = fopen(m->pid_path, "w");
    if (f) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    } else {
        log_warn("cannot write pid file %s: %s", m->pid_path, strerror(errno));
    }
}

int master_open_control(struct master *m, char *err, size_t errlen)
{
    int fd = control_listen(m->ctl_path);
    int r = fd < 0 ? fd : master_serve_control(m, fd);
    if (r < 0) {
        snprintf(err, errlen, "cannot open control socket %s: %s", m->ctl_path, uv_strerror(r));
        return r;
    }
    m->ctl_open = 1;
    master_write_pid_file(m);
    return 0;
}
