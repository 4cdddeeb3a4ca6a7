/*
 * The health checker: a child process of the master that runs the active
 * upstream health checks, so that the master, which stays root to start
 * workers as `user`, never parses what an upstream sends.
 *
 * The master starts it from the same binary as workers, with the hidden
 * command "__checker", only while some upstream group has active checks
 * (health.path), as `user` and `group` when they are set. It finds its
 * channel to the master and the effective config (a memfd, as workers get
 * it) as inherited descriptors, runs the checks (proxy/health.h, HC_PROBE)
 * and sends each verdict as one fixed-size record (HC_MSG_RESULT). The
 * master counts the verdicts (HC_STATE), keeps every server's state and the
 * passive ejections, and relays changes to the workers.
 *
 * The master restarts a checker that exits (at once when it ran longer than
 * min_uptime, with doubling backoff up to 30 s when it dies sooner), kills
 * one that sends anything but verdicts (and restarts it the same way),
 * replaces it on reload when the checked groups change, and stops it when
 * no group has checks any more or the server stops.
 */
#ifndef COHORT_CHECKER_H
#define COHORT_CHECKER_H

#include <jansson.h>
#include <uv.h>

#include "core/config.h"
#include "proxy/health.h"

/* Descriptor numbers the checker finds open at start. */
#define CHECKER_FD_IPC 3
#define CHECKER_FD_CONFIG 4

/* --- in the master -------------------------------------------------------- */

struct checker;

/* A checker that starts nothing until checker_config; its verdicts go to
 * `hc` (an HC_STATE). `exe` must outlive it. NULL when memory runs out. */
struct checker *checker_new(uv_loop_t *loop, const char *exe, struct hc *hc);

/* The config in force (start, reload, a reload rolled back): starts the
 * checker when a group has checks, replaces it when the checked groups
 * changed, stops it when none has. 0 or -errno. */
int checker_config(struct checker *c, const struct cfg *cfg);

/* Passes a signal on (SIGUSR1: reopen the error log). */
void checker_signal(struct checker *c, int sig);

/* Its row for `cohort status`: pid, user, state, restarts...; JSON null
 * when no group has checks. */
json_t *checker_status(const struct checker *c);

/* The server stops: the checker is stopped and not restarted. */
void checker_stop(struct checker *c);

/* Stops it and closes every handle (the loop frees the rest). NULL: no-op. */
void checker_free(struct checker *c);

/* --- in the checker process ------------------------------------------------- */

/* Runs the checker (`cohort __checker`); returns the process exit code. */
int checker_main(void);

#endif
