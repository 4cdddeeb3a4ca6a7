/*
 * The application's route handlers, registered by name: hello and health
 * here, the shop's from its own table (app/shop.c). Each name is given to
 * the config engine once, at start (core/config_module.h), and to a
 * generation's handlers when its routes are built (http/handlers.h).
 */
#include "app/app_cfg.h"

#include <errno.h>
#include <stdlib.h>

#include "app/shop.h"
#include "core/config_module.h"
#include "http/server.h"

void app_hello_handle(struct http_exchange *x)
{
    static const char body[] = "Hello World\n";
    http_respond(x, 200, "text/plain", body, sizeof(body) - 1);
}

void app_health_handle(struct http_exchange *x)
{
    static const char body[] = "{\"status\":\"ok\"}";
    http_respond(x, 200, "application/json", body, sizeof(body) - 1);
}

struct app_handler {
    struct cfg_handler cfg;
    http_handler_fn fn;
};

static const struct app_handler app_handlers[] = {{{.name = "hello"}, app_hello_handle},
                                                  {{.name = "health"}, app_health_handle}};

#define NAPP (sizeof app_handlers / sizeof app_handlers[0])

int app_cfg_register(void)
{
    int rc = 0;
    for (size_t i = 0; i < NAPP && !rc; i++)
        rc = cfg_handler_register(&app_handlers[i].cfg);
    return rc;
}

int app_cfg_register_shop(void)
{
    static struct cfg_handler *hs;
    size_t n = shop_handler_count();
    int rc = 0;
    if (!hs && !(hs = calloc(n, sizeof(*hs))))
        return -ENOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        hs[i] = (struct cfg_handler){.name = shop_handler_name(i)};
        rc = cfg_handler_register(&hs[i]);
    }
    return rc;
}

static int app_build(void *self, const struct cfg_route *rt, struct http_route_spec *out, char *err,
                     size_t errlen)
{
    const struct app_handler *a = self;
    (void)rt;
    (void)err;
    (void)errlen;
    *out = (struct http_route_spec){.methods = HTTP_M(HTTP_GET), .fn = a->fn};
    return 0;
}

int app_handlers_add(struct http_handlers *h)
{
    int rc = 0;
    for (size_t i = 0; i < NAPP && !rc; i++)
        rc = http_handlers_add(h, app_handlers[i].cfg.name, app_build, (void *)&app_handlers[i]);
    return rc;
}

