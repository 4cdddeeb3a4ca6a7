/*
 * Replacing the master in place (`cohort upgrade`, SIGUSR2). The running
 * ("old") master starts a new one from the binary on disk with the same
 * command line, handing it the listening sockets, the admin listener, the
 * control socket and the counters' memfd as inherited descriptors, listed
 * with their roles in COHORT_INHERIT (the new master reads and clears it).
 * A socket pair between the two carries a line protocol:
 *
 *   new -> old  "ready"        every new worker is ready
 *   old -> new  "go"           the old master stopped accepting (acceptor,
 *                              control socket): the new one takes over
 *   new -> old  "done"         the new master wrote the pid file, listens
 *                              on the control socket and accepts
 *   new -> old  "fail REASON"  the new master gives up and exits
 *
 * After "done" the old master drains its workers and exits; before it, a
 * failure of any kind (a "fail", the new master's exit, a silent channel
 * past the deadline) leaves the old master serving as before.
 *
 * This module holds the process and the channel on both sides and the
 * checks of what was inherited; the master (proc/master.c) decides what
 * each step means for its workers and sockets.
 */
#ifndef COHORT_UPGRADE_H
#define COHORT_UPGRADE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"

#define UPGRADE_ENV "COHORT_INHERIT"

/* The most listening sockets handed over: one per listener and worker. */
#define UPGRADE_MAX_LISTEN (CFG_MAX_WORKERS * CFG_MAX_LISTENERS)

/* Descriptors handed from the old master to the new one; -1: none. */
struct upgrade_fds {
    int listen[UPGRADE_MAX_LISTEN]; /* every listener's sockets, in order */
    int nlisten;
    int admin;
    int control;
    int metrics;
    int channel; /* the new master's end of the socket pair */
};

/* main() keeps its argument vector here (pointers copied, strings not) so
 * that a new master runs with the same command line. */
void upgrade_keep_argv(int argc, char **argv);

/* --- the old master -------------------------------------------------- */

/* What an upgrade asks of the old master, step by step. */
struct upgrade_host {
    void *arg;
    /* The new master is ready: stop accepting (round_robin, least_loaded)
     * and close the control socket's handle (the upgrade keeps a copy). */
    void (*pause)(void *arg);
    /* The upgrade failed after pause: answer on ctl_fd (yours now) and
     * accept again. */
    void (*resume)(void *arg, int ctl_fd);
    /* Called once, last: ok when the new master `pid` took over (drain the
     * workers and exit, leaving the control socket's path and the pid file
     * alone), else go on serving and upgrade_free(). `text` says which, for
     * the log and the clients waiting. */
    void (*finish)(void *arg, int ok, const char *text, int pid);
};

struct upgrade;

/*
 * Starts `exe` with the kept command line and `fds` (the caller keeps its
 * own copies open) and sees the handshake through. A new master that has
 * not taken over within timeout_ms is stopped and the upgrade fails. On
 * success, systemd (NOTIFY_SOCKET) is told the new MAINPID. Returns NULL
 * with a reason in err (nothing was started).
 */
struct upgrade *upgrade_start(uv_loop_t *loop, const char *exe, const struct upgrade_fds *fds,
                              uint64_t timeout_ms, const struct upgrade_host *host, char *err, size_t errlen);
/* Gives up on an upgrade that has not finished (finish() hears `why`). */
void upgrade_abort(struct upgrade *u, const char *why);
int upgrade_pid(const struct upgrade *u);
/* Frees u once its handles are closed; a new master that did not take over
 * is stopped first. upgrade_free(NULL) is a no-op. */
void upgrade_free(struct upgrade *u);

/* --- the new master -------------------------------------------------- */

/*
 * Reads COHORT_INHERIT, clears it and marks every listed descriptor
 * close-on-exec (workers get theirs explicitly). Returns 1 with *fds
 * filled when this process is a new master, 0 when not, -EINVAL when the
 * variable is malformed.
 */
int upgrade_inherited(struct upgrade_fds *fds);

/*
 * Whether the inherited admin listener and control socket fit cfg (the
 * listeners are matched by the master, master_adopt_sockets): 0, or
 * -EINVAL with the key that changed in err.
 */
int upgrade_fits(const struct upgrade_fds *fds, const struct cfg *cfg, const char *ctl_path, char *err,
                 size_t errlen);

/* The message of a listener that changed (see upgrade_fits). */
int upgrade_changed(char *err, size_t errlen, const char *key);

struct metrics_shm;

/* The old master's counters segment, so that totals carry over: its fd,
 * with *shm mapped and *nslots its capacity. A segment of another layout
 * (another build) cannot be shared: a new one is made and counting starts
 * from zero (logged). -errno when neither works. */
int upgrade_adopt_metrics(int fd, struct metrics_shm **shm, uint32_t *nslots);

/* Before any loop runs (a config that does not load): tells the old master
 * why, when this process is a new master. */
void upgrade_fail_early(const char *msg);

enum upgrade_child_event {
    UPGRADE_GO,      /* take over, then upgrade_child_done() */
    UPGRADE_ORPHAN,  /* the old master died before "go": take over too */
    UPGRADE_CANCEL,  /* the old master gave up on us: stop */
};

typedef void (*upgrade_child_fn)(void *arg, enum upgrade_child_event ev);

struct upgrade_child;

/* The new master's end of the channel (fds->channel), on the loop. */
struct upgrade_child *upgrade_child_new(uv_loop_t *loop, int fd, upgrade_child_fn fn, void *arg);
void upgrade_child_ready(struct upgrade_child *c);
/* "fail REASON"; the caller then stops. */
void upgrade_child_fail(struct upgrade_child *c, const char *why);
/* "done"; the channel is closed and c freed. */
void upgrade_child_done(struct upgrade_child *c);
/* Closes the channel and frees c (NULL: no-op). */
void upgrade_child_free(struct upgrade_child *c);

#endif
