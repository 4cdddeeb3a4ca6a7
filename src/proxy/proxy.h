/*
 * The proxy handler: a route with handler "proxy" forwards every request
 * to a server of its upstream group (upstream.h picks it) and streams the
 * answer back. One per worker, for all of the config's groups.
 *
 * A request's way: pick a server; take an idle keep-alive connection from
 * its pool or connect; send the head (hop-by-hop fields removed,
 * X-Forwarded-For/-Proto/-Host, X-Request-Id and Via added); stream the
 * body as it arrives, pausing the client when the server does not take it;
 * read the response head, forward it, and stream the body back, pausing
 * the server when the client does not read. A failure before any response
 * byte goes to another server when that is safe (up_retry_safe) and the
 * retry budget allows; otherwise the client gets 502 (504 for a timeout).
 * No usable server: 503 {"error": "no healthy upstream"} at once.
 * `Connection: Upgrade` requests that get 101 become a tunnel both ways.
 *
 * The exchange's `upstream` field (the access log's) names the server
 * that answered, the attempts, and the servers skipped and why:
 *   "10.0.0.6:3000 attempts=2 skipped=10.0.0.5:3000:refused"
 *
 * Failures that count (connect errors, resets, timeouts; 5xx with
 * passive.on_5xx) are counted per server; `passive.failures` in a row are
 * reported to the master, which decides on an ejection (health.h).
 */
#ifndef COHORT_PROXY_PROXY_H
#define COHORT_PROXY_PROXY_H

#include <stddef.h>
#include <uv.h>

#include "core/config.h"
#include "core/metrics.h"
#include "http/router.h"

struct proxy;

/* Sends a worker's report (struct up_report_msg) to the master. */
typedef int (*proxy_report_fn)(const void *msg, size_t len);

/* Builds the groups of the config; NULL with a message in err. The config
 * and the slot outlive the proxy. */
struct proxy *proxy_new(uv_loop_t *loop, const struct cfg *cfg, struct metrics_slot *slot, proxy_report_fn report,
                        char *err, size_t errlen);

/* Adds the proxy handler (PROXY_HANDLER) to h: its routes take every
 * method and stream. 0 or -ENOMEM. */
struct http_handlers;
int proxy_handlers(struct proxy *px, struct http_handlers *h);

/* A state message from the master (struct up_state_msg). */
void proxy_on_state(struct proxy *px, const void *msg, size_t len);

/* Once the worker drained: closes the pools and timers, then done(arg). */
void proxy_stop(struct proxy *px, void (*done)(void *arg), void *arg);

/* After proxy_stop finished; proxy_free(NULL) is a no-op. */
void proxy_free(struct proxy *px);

#endif
