/*
 * A worker's logs: the access log (one JSON object per request, buffered,
 * see core/logbuf.h) and the error log's target and level (core/log.h).
 *
 *   {"time":"2026-11-24T14:40:39.123Z","id":"9f2c41d0-01-000000002a",
 *    "method":"GET","path":"/api/products/7?x=1","route":"/api/products/:id",
 *    "status":200,"bytes_in":96,"bytes_out":312,"duration_us":154,
 *    "worker":1,"client":"127.0.0.1","user_agent":"curl/8.5.0","upstream":null}
 *
 * "time" is when the response was complete; "path" is the request target
 * as sent (escaped, cut at ACCESSLOG_PATH_MAX bytes); "route" is the
 * route's pattern, null when none matched; "status" is 499 when the client
 * went away before the answer. A line is at most LOGBUF_LINE_MAX bytes.
 *
 * Lines are flushed every 100 ms, when the buffer is full, and by
 * accesslog_close. SIGUSR1 makes the worker reopen both log files.
 * Process-wide state, one per worker: there is one loop.
 */
#ifndef COHORT_ACCESSLOG_H
#define COHORT_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"

#define ACCESSLOG_PATH_MAX 2048
#define ACCESSLOG_UA_MAX 512
#define ACCESSLOG_FLUSH_MS 100

/* Nonzero while the access log is on: the engine checks it before calling. */
extern int accesslog_enabled;

/*
 * Sets up this worker's logs from the config: the error log's target and
 * level, the access log (off, stderr or a file), the flush timer and the
 * SIGUSR1 watcher (all unreferenced: they never keep the loop alive).
 * Returns 0, or -errno with a message in err.
 */
int accesslog_open(uv_loop_t *loop, const struct cfg *cfg, int worker_id, char *err, size_t errlen);

/* Flushes and closes the access log and its handles. */
void accesslog_close(void);

/* Flushes what is buffered now. */
void accesslog_flush(void);

/* One request's line: what the engine knows of it (NULL strings are
 * written as null). Absent from the engine's view: the time and the
 * worker, which accesslog_write fills in. */
struct accesslog_fields {
    const char *id, *method, *path, *route, *client, *user_agent, *upstream;
    size_t id_len, method_len, path_len, route_len, client_len, user_agent_len, upstream_len;
    int status, worker;
    uint64_t bytes_in, bytes_out, duration_us;
    struct timespec time;
};

/* Writes a line for a finished (or abandoned) request; sets f's time and
 * worker. The strings need to live only during the call. */
void accesslog_write(struct accesslog_fields *f);

/*
 * Formats one line into buf (at least LOGBUF_LINE_MAX bytes) and returns
 * its length, newline included. Pure: the unit tests call it.
 */
size_t accesslog_format(char *buf, const struct accesslog_fields *f);

#endif
