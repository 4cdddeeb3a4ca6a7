/*
 * Request ids. A client's (or a balancer's) X-Request-Id is kept when it is
 * a sane token: 1 to REQID_MAX bytes of letters, digits and . _ : - @ + / =.
 * Otherwise the worker makes one: a random per-process prefix, the worker
 * id and a counter, e.g. "9f2c41d0-01-000000002a" -- unique across workers
 * and restarts without coordination, and costing a copy, not a syscall.
 */
#ifndef COHORT_REQID_H
#define COHORT_REQID_H

#include <stddef.h>

#define REQID_MAX 64
#define REQID_GEN_LEN 22

/* 1 when v[0..len) may be used as a request id as it is. */
int reqid_valid(const char *v, size_t len);

/* Seeds this process's prefix (from getrandom) and sets the worker id.
 * Optional: the first reqid_next seeds with worker id 0. */
void reqid_init(int worker_id);

/* Writes the next generated id (REQID_GEN_LEN bytes, no NUL) to out. */
void reqid_next(char *out);

#endif
