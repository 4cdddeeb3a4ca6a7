/*
 * The master hook of the upstream health checks (proc/health_hook.c):
 * registered from src/modules.c; its `cohort status` member is "checker".
 */
#ifndef COHORT_HEALTH_HOOK_H
#define COHORT_HEALTH_HOOK_H

#include "proc/hooks.h"

extern const struct master_hook health_hook;

#endif
