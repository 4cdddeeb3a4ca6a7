/*
 * The master process: binds the listeners, starts the workers, restarts
 * any that exits (at once when it ran longer than min_uptime, with doubling
 * backoff when it crashes sooner), replaces them one at a time on reload
 * (HUP or `cohort reload`) or when one asks to be recycled, accepts and
 * hands over connections for round_robin and least_loaded, answers the
 * control socket, and stops them all gracefully on TERM, INT or QUIT. It
 * does no request work.
 */
#ifndef COHORT_MASTER_H
#define COHORT_MASTER_H

#include <uv.h>

#include "core/config.h"

/*
 * Runs in the foreground until stopped; returns the process exit code.
 * Takes over *cfg (leaves it zeroed). `src` says where a reload re-reads the
 * config from and must outlive the call; `exe` is the path of the binary
 * workers are started from (a reload starts the binary now at that path).
 */
int master_run(struct cfg *cfg, const struct cfg_sources *src, const char *exe);

#endif
