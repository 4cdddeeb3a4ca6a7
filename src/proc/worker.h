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

#include <stddef.h>

/* Application messages between workers (the seed's process.send): a
 * handler sends bytes to the master, which passes them to every other
 * worker. Delivery is best effort: a worker that does not read its channel
 * loses messages rather than slowing the master. */
typedef void (*worker_msg_fn)(const char *data, size_t len, int from_worker, void *arg);

/* Sends to the master for the other workers; 0 or -errno (-ENOBUFS when
 * the channel is full, -EMSGSIZE over 64 KiB, -ESHUTDOWN while stopping). */
int worker_send_app(const void *data, size_t len);
/* Sets the callback for messages from other workers. */
void worker_on_app(worker_msg_fn fn, void *arg);
/* The load balancer's messages (proxy/health.h): a worker reports
 * failures of an upstream server; the master sends every server's state. */
typedef void (*worker_upstream_fn)(void *arg, const void *msg, size_t len);
int worker_send_upstream(const void *msg, size_t len);
void worker_on_upstream(worker_upstream_fn fn, void *arg);

/* This worker's id, or -1 outside a worker. */
int worker_id(void);

/* Runs worker `id` writing counters to metrics slot `slot`; returns the
 * process exit code. */
int worker_main(int id, int slot);

#endif
