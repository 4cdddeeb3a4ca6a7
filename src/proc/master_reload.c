/*
 * A worker's readiness, its replacement (reload, recycle) and the reload:
 * a new generation replaces the workers one at a time, and when a new
 * worker fails the workers already replaced are replaced back (rollback).
 */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "proc/master_int.h"
#include "proc/notify.h"

static void rollback_begin(struct master *m);
static void reload_step(struct master *m);

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
    char where[CFG_MAX_LISTENERS * 130];
    size_t n = 0;
    for (int i = 0; i < m->nlst && n < sizeof(where); i++) {
        const struct listen_addr *a = &m->lst[i].a;
        int un = a->family == AF_UNIX;
        n += (size_t)snprintf(where + n, sizeof(where) - n, "%s%s%s%s", i ? ", " : "",
                              un ? (a->tls ? "https+" : "http+") : (a->tls ? "https://" : "http://"), a->name,
                              un ? "" : "/");
    }
    log_info("serving %s with %d workers (schedule %s)", where, m->nslots, master_schedule_name(m->cfg.schedule));
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
        master_drain_proc(old);
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

/* A replacement exited or was killed before it was ready; the slot's
 * serving worker (if any) goes on. A reload that waited for it turns back. */
void master_replacement_failed(struct wslot *s, struct wproc *p, const char *why)
{
    struct master *m = s->m;
    struct reload *rl = &m->rl;
    log_error("worker %d: the new worker (pid %d, %s) did not become ready (%s); %s", s->id, p->pid,
              s->repl_why, why, s->cur ? "the old one keeps serving" : "restarting the slot");
    if (!s->cur && !m->stopping)
        master_replace_dead(s, 0, 0, why);
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

void master_ready_timeout_cb(uv_timer_t *t)
{
    struct wproc *p = t->data;
    if (p->state != P_STARTING)
        return;
    log_error("worker %d (pid %d) not ready within ready_timeout (%lld ms): killing it", p->slot->id, p->pid,
              (long long)p->m->cfg.ready_timeout_ms);
    p->timed_out = 1;
    uv_process_kill(&p->proc, SIGKILL);
}

void master_on_worker_ready(struct wproc *p, const char *payload, uint32_t len)
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
    master_listeners_update(p->m);
}

/* Starts a replacement beside a slot's worker (reload, recycle or
 * rollback): with the reload's new config when `next`, else with the
 * generation in force. */
int master_replace_slot(struct wslot *s, const char *why, int next)
{
    struct master *m = s->m;
    if (s->repl || m->stopping)
        return -EBUSY;
    s->repl_why = why;
    master_spawn(s, 1, next);
    return s->repl ? 0 : -EAGAIN;
}

static uint64_t failed_requests(const struct master *m)
{
    struct metrics_slot total;
    metrics_sum(m->shm, &total);
    return total.status[5];
}

void master_reload_finish(struct master *m, int ok, const char *msg)
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
    master_answer_waiters(rl->waiters, json_pack("{s:b, s:s, s:i, s:i, s:i, s:I}", "ok", ok, "message", text, "replaced",
                                          rl->replaced, "rolled_back", rl->rolled_back, "generation", m->gen,
                                          "failed_requests", (json_int_t)failed));
    rl->waiters = NULL;
    if (rl->queued && !m->stopping) {
        rl->queued = 0;
        rl->waiters = rl->queued_waiters;
        rl->queued_waiters = NULL;
        log_info("starting the reload that was queued");
        master_reload_begin(m);
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
    master_answer_waiters(m->rl.waiters, json_pack("{s:b, s:s}", "ok", 0, "message", msg));
    m->rl.waiters = NULL;
}

/* Re-reads the config and starts replacing workers one at a time. */
void master_reload_begin(struct master *m)
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
    rl->next_fd = keep_fixed_keys(m, &rl->next) < 0 ? -1 : cfg_to_memfd(&rl->next, "cohort-config");
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
            master_drain_proc(s->cur);
        if (s->repl) {
            master_drain_proc(s->repl);
            s->repl = NULL;
        }
    }
    m->nslots = n;
    /* sockets of slots that are gone: once their draining workers close
     * theirs too, the kernel stops queueing connections on them */
    master_trim_listeners(m);
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
        if (master_bind_listeners(m, i + 1, err, sizeof(err)) < 0 || master_replace_slot(&m->slots[i], "reload", 1) < 0) {
            snprintf(rl->why, sizeof(rl->why), "cannot start a new worker %d", i);
            rollback_begin(m);
            return;
        }
        rl->slot = i;
        return; /* replacement_ready() or master_replacement_failed() comes back here */
    }
    if (i >= 0) {
        if (rl->tries >= ROLLBACK_TRIES || master_replace_slot(&m->slots[i], "rollback", 0) < 0) {
            char msg[700];
            snprintf(msg, sizeof(msg), "reload failed: %s; rolling back failed too: worker %d still runs "
                     "generation %d", rl->why, i, m->gen + 1);
            master_reload_finish(m, 0, msg);
            return;
        }
        rl->slot = i;
        return;
    }
    if (wait)
        return;
    if (back) {
        master_reload_finish(m, 0, NULL);
        return;
    }
    shrink_slots(m, rl->next.workers);
    master_reload_finish(m, 1, NULL);
}
