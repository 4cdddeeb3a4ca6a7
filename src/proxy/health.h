/*
 * Health of upstream servers, kept by the master for every worker.
 *
 * Active checks: every `health.interval` each server of a group with a
 * `health.path` gets `GET path` on a new connection, which must answer
 * within `health.timeout` with a status of `health.status`. `fall` failures
 * in a row mark it down, `rise` successes in a row bring it back (hc_record
 * is that state machine, pure).
 *
 * Who does what (enum hc_role): the connections and the parsing of the
 * upstreams' answers run in the health checker process (proc/checker.h,
 * HC_PROBE), which runs as `user`, not as root, and sends each check's
 * verdict to the master as a fixed-size record (struct hc_result_msg); the
 * master (HC_STATE) keeps every server's state, counts the verdicts with
 * hc_record and opens no connection. HC_ALL does both in one process (the
 * unit tests).
 *
 * Passive ejection is seen by workers and decided by the master: a worker
 * that saw `passive.failures` failures in a row reports it
 * (HC_MSG_REPORT); the master ejects the server for ejection_time x
 * the times it was ejected (capped), unless max_ejected_percent of the
 * group is out already (up_eject in upstream.h), and brings it back when
 * the time is up. Ejections live in the master: a checker that dies or is
 * replaced loses none of them, nor the fall/rise counts.
 *
 * Every change of a server's state goes to every worker at once
 * (HC_MSG_STATE, struct up_state_msg), and to the counters segment
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
#include "proxy/upstream.h"

/* Message types (core/msg.h). */
#define HC_MSG_STATE 7  /* master -> worker: a server's state (struct up_state_msg) */
#define HC_MSG_REPORT 8 /* worker -> master: failures in a row of a server (struct up_report_msg) */
#define HC_MSG_RESULT 9 /* checker -> master, on the checker's channel: a verdict */

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

/* --- the checker and the state ---------------------------------------------- */

struct hc;

enum hc_role {
    HC_ALL,   /* runs the checks and keeps the state, in one process */
    HC_STATE, /* keeps the state; the checks' verdicts come in through hc_result() */
    HC_PROBE, /* runs the checks only; each verdict goes to `send` as a struct hc_result_msg */
};

/* HC_MSG_RESULT, checker -> master: one check's verdict. The master
 * reads nothing else from the checker, and this only after checking its
 * size, ending its strings and finding the server in its own config. */
struct hc_result_msg {
    char group[UP_GROUP_LEN];
    char server[UP_NAME_LEN];
    uint32_t ok;          /* 1: passed */
    char why[68];         /* a failure's reason, for the log: printable ASCII */
};

/* How a message leaves: to every worker (state), or to the master (verdict). */
typedef void (*hc_send_fn)(void *arg, const void *msg, size_t len);

/*
 * Starts checking the config's upstream groups on `loop` (HC_ALL);
 * `broadcast` sends a state message to every worker. `shm` (may be NULL)
 * gets the servers' names and states. NULL when memory runs out.
 */
struct hc *hc_new(uv_loop_t *loop, const struct cfg *cfg, struct metrics_shm *shm, hc_send_fn broadcast, void *arg);

/* The same in a given role; for HC_PROBE, `send` gets verdicts and `shm`
 * is not used. */
struct hc *hc_new_role(enum hc_role role, uv_loop_t *loop, const struct cfg *cfg, struct metrics_shm *shm,
                       hc_send_fn send, void *arg);

/* A verdict from the checker (the payload of HC_MSG_RESULT), HC_STATE
 * only: a record of the wrong size, an unknown server or a group without
 * checks is ignored. */
void hc_result(struct hc *h, const void *payload, size_t len);

/* A reload: the groups of `cfg` replace the current ones; a server found
 * again (same group, same address) keeps its state. */
int hc_reload(struct hc *h, const struct cfg *cfg);

/* A worker's report (the payload of HC_MSG_REPORT). */
void hc_report(struct hc *h, const void *payload, size_t len);

/* Sends the state of every server that is not simply up to one worker. */
void hc_snapshot(struct hc *h, hc_send_fn send, void *arg);

/* Stops every check; the checker is freed once its handles closed.
 * hc_close(NULL) is a no-op. */
void hc_close(struct hc *h);

#endif
