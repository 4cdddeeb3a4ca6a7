/*
 * Health of upstream servers, kept by the master for every worker.
 *
 * Active checks run once, in the master: every `health.interval` each
 * server of a group with a `health.path` gets `GET path` on a new
 * connection, which must answer within `health.timeout` with a status of
 * `health.status`. `fall` failures in a row mark it down, `rise` successes
 * in a row bring it back (hc_record is that state machine, pure).
 *
 * Passive ejection is seen by workers and decided here: a worker that saw
 * `passive.failures` failures in a row reports it (IPC_UPSTREAM_REPORT);
 * the master ejects the server for ejection_time x the times it was
 * ejected (capped), unless max_ejected_percent of the group is out already
 * (up_eject in upstream.h), and brings it back when the time is up.
 *
 * Every change of a server's state goes to every worker at once
 * (IPC_UPSTREAM_STATE, struct up_state_msg), and to the counters segment
 * for /stats; a worker that starts gets the state of every server first.
 * A server that comes back is marked with the time, so workers ramp its
 * weight up over `slow_start`.
 */
#ifndef COHORT_PROXY_HEALTH_H
#define COHORT_PROXY_HEALTH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "core/metrics.h"

/* --- the state machine of active checks (pure) ---------------------------- */

struct hc_state {
    uint8_t down;      /* 1 once fall failures came in a row */
    uint16_t ok_run;   /* passed checks in a row */
    uint16_t fail_run; /* failed checks in a row */
};

/* Records one check; returns 1 when the server's state flipped. */
int hc_record(struct hc_state *s, int ok, int fall, int rise);

/* 1 when `status` is one of `spec` ("2xx", "200,204", "200-399"). */
int hc_status_ok(const char *spec, int status);

/* --- the master's checker --------------------------------------------------- */

struct hc;

/* How the master hands a state message to workers. */
typedef void (*hc_send_fn)(void *arg, const void *msg, size_t len);

/*
 * Starts checking the config's upstream groups on the master's loop;
 * `broadcast` sends a message to every worker. `shm` (may be NULL) gets
 * the servers' names and states. NULL when memory runs out.
 */
struct hc *hc_new(uv_loop_t *loop, const struct cfg *cfg, struct metrics_shm *shm, hc_send_fn broadcast, void *arg);

/* A reload: the groups of `cfg` replace the current ones; a server found
 * again (same group, same address) keeps its state. */
int hc_reload(struct hc *h, const struct cfg *cfg);

/* A worker's report (the payload of IPC_UPSTREAM_REPORT). */
void hc_report(struct hc *h, const void *payload, size_t len);

/* Sends the state of every server that is not simply up to one worker. */
void hc_snapshot(struct hc *h, hc_send_fn send, void *arg);

/* Stops every check; the checker is freed once its handles closed.
 * hc_close(NULL) is a no-op. */
void hc_close(struct hc *h);

#endif
