/*
 * The modules of cohort, registered with the layers below them: each
 * module's config keys and route handlers (core/config_module.h) and its
 * master hooks (proc/hooks.h). Adding a module is one line in modules.c.
 */
#ifndef COHORT_MODULES_H
#define COHORT_MODULES_H

/* Registers every module, once; later calls return the first one's result.
 * Call before any config is loaded. 0 or -errno. */
int modules_register(void);

#endif
