/*
 * The route handlers of one worker generation, by name: each module that
 * provides handlers adds them (its own names, from its own table) when its
 * instance is made, and config routes are built from here, whatever
 * their handler. The config's side of a handler (its name among
 * routes[].handler's values, its route key and checks) is registered with
 * the config engine (core/config_module.h) by the same module.
 */
#ifndef COHORT_HTTP_HANDLERS_H
#define COHORT_HTTP_HANDLERS_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "http/router.h"

/* What a route of a handler is: router_add_chain's arguments. */
struct http_route_spec {
    uint32_t methods;
    http_handler_fn fn;
    void *data;
    unsigned flags;
};

/* Fills *out for config route rt: 0, or a negative errno with a message
 * in err. `self` is what the module gave http_handlers_add. */
typedef int (*http_route_build_fn)(void *self, const struct cfg_route *rt, struct http_route_spec *out, char *err,
                                   size_t errlen);

struct http_handlers;

struct http_handlers *http_handlers_new(void);
void http_handlers_free(struct http_handlers *h);

/* 0, -ENOMEM, -EEXIST for a name already added. The name is not copied. */
int http_handlers_add(struct http_handlers *h, const char *name, http_route_build_fn build, void *self);

/* Adds config route rt with its handler and chain (NULL: no filters).
 * -ENOENT with a message when no module here provides the handler. */
int http_handlers_route(const struct http_handlers *h, struct router *r, const struct cfg_route *rt,
                        const struct http_chain *chain, char *err, size_t errlen);

#endif
