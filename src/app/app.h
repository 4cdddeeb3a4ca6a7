/*
 * The application's routes: built-in ones (GET / and GET /health) and the
 * routes declared in the config. Handlers of the shop live here too.
 */
#ifndef COHORT_APP_H
#define COHORT_APP_H

#include <stddef.h>

#include "core/config.h"
#include "http/router.h"

struct app;

/* Builds the routes into `r`. Returns NULL with a message in err when a
 * route cannot be set up (e.g. a static root that is not a directory). */
struct app *app_new(const struct cfg *cfg, struct router *r, char *err, size_t errlen);
void app_free(struct app *a);

#endif
