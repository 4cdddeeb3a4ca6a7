/*
 * `cohort upgrade` in the master (proc/upgrade.h): the old master's side
 * (start the new one, pause, hand over, resume when it fails) and the new
 * master's (wait for its workers, take over).
 */

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "proc/master_int.h"
#include "proc/notify.h"

/* --- upgrade: the old master (proc/upgrade.h) ------------------------------ */

static void upgrade_pause(void *arg)
{
    struct master *m = arg;
    m->standby = 1; /* the new master accepts from now on */
    master_acceptor_stop(m);
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
    if (master_serve_control(m, ctl_fd) < 0)
        log_error("cannot answer on the control socket %s again", m->ctl_path);
    master_listeners_update(m); /* accepts again once a worker is ready */
}

static void upgrade_finish(void *arg, int ok, const char *text, int pid)
{
    struct master *m = arg;
    json_t *reply = json_pack("{s:b, s:s, s:i}", "ok", ok, "message", text, "pid", ok ? pid : (int)getpid());
    if (ok)
        json_object_set_new(reply, "old_pid", json_integer((json_int_t)getpid()));
    log_msg(ok ? LOG_INFO : LOG_ERROR, "%s", text);
    master_answer_waiters(m->up_waiters, reply);
    m->up_waiters = NULL;
    if (!ok) {
        upgrade_free(m->up);
        m->up = NULL;
        master_listeners_update(m); /* what the upgrade held back: sockets no worker of this master takes */
        return;
    }
    m->handed_over = 1;
    m->ctl_open = 0; /* the socket's path and the pid file are the new master's */
    master_begin_stop(m, "upgraded");
}

/* `cohort upgrade` (c) or SIGUSR2 (c NULL): starts a new master from the
 * binary on disk with this one's sockets and counters. */
void master_upgrade_begin(struct master *m, struct ctl_client *c)
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
            master_ctl_answer(c, json_pack("{s:b, s:s}", "ok", 0, "message", busy));
        return;
    }
    if (c) { /* answered when this upgrade, or the one under way, ends */
        c->next_waiter = m->up_waiters;
        m->up_waiters = c;
    }
    if (m->up)
        return;
    static struct upgrade_fds fds;
    fds = (struct upgrade_fds){.admin = m->admin_fd, .control = ctl, .metrics = m->metrics_fd, .channel = -1};
    for (int i = 0; i < m->nlst; i++)
        for (int k = 0; k < m->lst[i].nfds && fds.nlisten < UPGRADE_MAX_LISTEN; k++)
            fds.listen[fds.nlisten++] = m->lst[i].fds[k];
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
    if (master_serve_control(m, m->inh.control) < 0)
        log_error("cannot answer on the control socket %s", m->ctl_path);
    m->inh.control = -1;
    m->ctl_open = 1;
    master_write_pid_file(m);
    /* the old master has stopped accepting: this one accepts (once a worker
     * is ready) and makes the sockets follow its own workers from now on */
    m->standby = 0;
    master_listeners_update(m);
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
            master_begin_stop(m, "the old master gave up on this upgrade");
        return;
    }
    take_over(m, ev == UPGRADE_GO ? "it handed over" : "it is gone");
}

void master_upgrade_ready_timeout(uv_timer_t *t)
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
    master_begin_stop(m, "upgrade failed");
}

void master_upgrade_init_child(struct master *m)
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
