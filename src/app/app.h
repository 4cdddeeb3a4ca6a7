/*
 * The application's routes: built-in ones (GET / and GET /health) and the
 * routes declared in the config. Handlers of the shop live here too.
 */
#ifndef COHORT_APP_H
#define COHORT_APP_H

#include <stddef.h>
#include <uv.h>

#include "app/env.h"

struct app;

/* Builds the routes into env->router and starts what the handlers need on
 * the loop. Returns NULL with a message in err when something cannot be set
 * up (e.g. a static root that is not a directory). */
struct app *app_new(const struct app_env *env, char *err, size_t errlen);

/* Called once the worker has drained its connections: flush what must not
 * be lost, close the app's handles, then call done(arg) (possibly later). */
void app_stop(struct app *a, void (*done)(void *arg), void *arg);

/* Frees the app after app_stop finished and the loop has run dry. */
void app_free(struct app *a);

#endif
