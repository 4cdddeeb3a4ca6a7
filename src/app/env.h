/*
 * What a worker hands its application and the parts the application starts
 * (the shop, stats): a header of its own, so those parts do not include
 * app/app.h, which includes theirs.
 */
#ifndef COHORT_APP_ENV_H
#define COHORT_APP_ENV_H

#include <uv.h>

#include "core/config.h"
#include "core/metrics.h"
#include "http/router.h"

/* What a worker hands its application. Everything outlives the app. */
struct app_env {
    const struct cfg *cfg;
    struct router *router;
    uv_loop_t *loop;
    struct metrics_shm *shm;   /* the whole counters segment (read by stats) */
    struct metrics_slot *slot; /* this worker's slot (written by it) */
    int worker_id;
    int admin_fd;              /* > 0: the admin listener's socket (app/stats.c); 0: none */
};

#endif
