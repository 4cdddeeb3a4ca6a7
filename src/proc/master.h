/*
 * The master process: binds the listeners, starts the workers, restarts
 * any that exits (at once when it ran longer than min_uptime, with doubling
 * backoff when it crashes sooner), and stops them all gracefully on TERM,
 * INT or QUIT. It does no request work.
 */
#ifndef COHORT_MASTER_H
#define COHORT_MASTER_H

#include "core/config.h"

/* Runs in the foreground until stopped; returns the process exit code.
 * `exe` is the path of the binary to start workers from. */
int master_run(const struct cfg *cfg, const char *exe);

#endif
