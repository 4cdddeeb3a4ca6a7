/*
 * The control channel: the master listens on a Unix socket (mode 0600) and
 * answers one JSON request per connection, one JSON line back:
 *   {"cmd": "status"}  -> {"ok": true, "master": {...}, "workers": [...]}
 *   {"cmd": "reload"}  -> answered when the reload has ended
 *   {"cmd": "stop"}    -> answered at once; the master then stops
 *   {"cmd": "upgrade"} -> answered by the old master once a new master
 *                         (its "pid") took over, or failed to
 * The `cohort status | reload | upgrade | stop` commands are the client side.
 */
#ifndef COHORT_CONTROL_H
#define COHORT_CONTROL_H

#include <stddef.h>

#include "core/config.h"

/* Exit codes of the client commands. */
#define CTL_EXIT_OK 0
#define CTL_EXIT_FAILED 1
#define CTL_EXIT_NOT_RUNNING 3

/* The control socket's and pid file's paths for a config: the configured
 * ones, or $XDG_RUNTIME_DIR (else /tmp)/cohort-<port>.{sock,pid}. */
void control_paths(const struct cfg *cfg, char *sock, size_t socklen, char *pid, size_t pidlen);

/* Server: a Unix socket bound at path (mode 0600) and listening,
 * non-blocking and close-on-exec; its fd or -errno. Bound here rather than
 * by libuv, which would remove the path when the handle closes: an old
 * master closes its handle while the new one goes on listening. */
int control_listen(const char *path);

/*
 * Client: sends `request` (one JSON object) to the master at `path` and
 * returns its answer (a malloc'ed string, without the newline) in *reply.
 * Returns 0, -ECONNREFUSED / -ENOENT when no master listens there, or
 * another -errno. Waits at most timeout_ms for the answer.
 */
int control_request(const char *path, const char *request, char **reply, int timeout_ms);

/* Runs a client command ("status", "reload", "upgrade", "stop") and prints its
 * outcome; returns the process exit code. */
int control_command(const char *cmd, const struct cfg *cfg, int json);

#endif
