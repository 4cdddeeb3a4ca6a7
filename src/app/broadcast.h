/*
 * The seed's inter-process message example as a route:
 *   POST /api/broadcast   {"data": ...}: this worker tells the master, which
 *                          tells every other worker (202 when sent)
 *   GET  /api/broadcast   what this worker received: {"worker", "pid",
 *                          "received": [{"from", "data"}, ...]} (the last 16)
 */
#ifndef COHORT_BROADCAST_H
#define COHORT_BROADCAST_H

#include "http/router.h"

/* Its messages (core/msg.h): a worker sends BROADCAST_MSG_SEND to the
 * master, which relays it to every other serving worker as
 * BROADCAST_MSG_DELIVER, the sender's id in the id field. Best effort: a
 * worker that does not read its channel loses messages rather than
 * slowing the master. */
#define BROADCAST_MSG_SEND 5
#define BROADCAST_MSG_DELIVER 6

/* In a worker: the routes, and the handler of BROADCAST_MSG_DELIVER. */
int broadcast_register(struct router *r, int worker_id);

/* In the master (a master hook, src/modules.c): the relay. 0 or -errno. */
int broadcast_master_start(void);

#endif
