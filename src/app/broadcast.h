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

int broadcast_register(struct router *r, int worker_id);

#endif
