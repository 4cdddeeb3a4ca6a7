/*
 * The proxy handler's place in the config: its route key `upstream` and
 * the rule that it names a group of "upstreams" (core/config_module.h).
 */
#ifndef COHORT_PROXY_CFG_H
#define COHORT_PROXY_CFG_H

/* Registers routes[].upstream and the handler "proxy"; 0 or -errno. */
/* routes[].handler for forwarding. */
#define PROXY_HANDLER "proxy"

int proxy_cfg_register(void);

#endif
