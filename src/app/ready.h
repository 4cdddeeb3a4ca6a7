/*
 * GET /health/ready: 200 {"status":"ready",...} when SQLite answers (a
 * query on the thread pool) and Redis, when configured, is up; else 503
 * with what is down.
 */
#ifndef COHORT_APP_READY_H
#define COHORT_APP_READY_H

#include "http/server.h"

void ready_handle(struct http_exchange *x);

#endif
