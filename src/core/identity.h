/*
 * The user and group processes started by the master run as (cfg.user,
 * cfg.group): workers, the health checker, and the owner of files the
 * master creates for them.
 */
#ifndef COHORT_IDENTITY_H
#define COHORT_IDENTITY_H

#include <uv.h>

#include "core/config.h"

/* The uid and gid cfg.user / cfg.group name, for uv_spawn: returns the
 * UV_PROCESS_SET* flags, 0 when neither is set (the processes keep the
 * master's). */
int identity_resolve(const struct cfg *c, uv_uid_t *uid, uv_gid_t *gid);

#endif
