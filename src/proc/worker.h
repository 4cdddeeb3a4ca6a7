/*
 * A worker process: started by the master (fork and exec of the cohort
 * binary with the hidden command "__worker"), it receives its listening
 * socket, IPC channel, counters segment and effective config as inherited
 * file descriptors, runs one libuv loop serving HTTP, and exits when told
 * to stop or when the master goes away.
 */
#ifndef COHORT_WORKER_H
#define COHORT_WORKER_H

/* Descriptor numbers a worker finds open at start. */
#define WORKER_FD_LISTEN 3
#define WORKER_FD_IPC 4
#define WORKER_FD_METRICS 5
#define WORKER_FD_CONFIG 6
#define WORKER_FD_ADMIN 7 /* the admin listener, open only when admin.port is set */
#define WORKER_FD_LISTEN_MORE 8 /* listeners 1.. of "listen" (0 is at WORKER_FD_LISTEN) */

/* The descriptor of listener i (schedules where workers accept). */
static inline int worker_listen_fd(int i)
{
    return i == 0 ? WORKER_FD_LISTEN : WORKER_FD_LISTEN_MORE + i - 1;
}

#include <stddef.h>

/* This worker's id, or -1 outside a worker. */
int worker_id(void);

/* Runs worker `id` writing counters to metrics slot `slot`; returns the
 * process exit code. */
int worker_main(int id, int slot);

#endif
