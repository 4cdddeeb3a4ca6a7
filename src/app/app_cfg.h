/*
 * The application's route handlers in the config (core/config_module.h):
 * hello and health, and the shop's endpoints (docs/shop.md).
 */
#ifndef COHORT_APP_CFG_H
#define COHORT_APP_CFG_H

/* Registers the handlers "hello" and "health"; 0 or -errno. */
int app_cfg_register(void);

/* Registers the shop's handlers; 0 or -errno. */
int app_cfg_register_shop(void);

#endif
