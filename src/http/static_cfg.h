/*
 * The static handler's place in the config: its route key `root` and the
 * rules for it (core/config_module.h).
 */
#ifndef COHORT_STATIC_CFG_H
#define COHORT_STATIC_CFG_H

/* Registers routes[].root and the handler "static"; 0 or -errno. */
/* routes[].handler for files served. */
#define STATIC_HANDLER "static"

int static_cfg_register(void);

#endif
