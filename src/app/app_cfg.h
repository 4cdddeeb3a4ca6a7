/*
 * The application's route handlers by name: hello and health, and the
 * shop's (names from app/shop.c's table).
 */
#ifndef COHORT_APP_CFG_H
#define COHORT_APP_CFG_H

#include "http/handlers.h"

/* Registers the handlers "hello" and "health" with the config engine; 0 or -errno. */
int app_cfg_register(void);

/* Registers the shop's handlers with the config engine; 0 or -errno. */
int app_cfg_register_shop(void);

/* Adds hello and health to a generation's handlers; 0 or -ENOMEM. */
int app_handlers_add(struct http_handlers *h);

/* The handlers themselves, for built-in routes ("/", "/health" of the shop). */
void app_hello_handle(struct http_exchange *x);
void app_health_handle(struct http_exchange *x);

#endif
