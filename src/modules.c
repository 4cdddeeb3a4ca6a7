/*
 * The registration list. The order is the order of routes[].handler's
 * values and of docs/config.md's rows.
 */
#include "modules.h"

#include "app/app_cfg.h"
#include "http/static_cfg.h"
#include "proxy/proxy_cfg.h"

#include <stddef.h>

static int (*const registrations[])(void) = {
    static_cfg_register,   /* routes[].root, "static" */
    app_cfg_register,      /* "hello", "health" */
    app_cfg_register_shop, /* the shop's endpoints */
    proxy_cfg_register,    /* routes[].upstream, "proxy" */
};

int modules_register(void)
{
    static int done, rc;
    for (size_t i = 0; !done && i < sizeof registrations / sizeof registrations[0] && !rc; i++)
        rc = registrations[i]();
    done = 1;
    return rc;
}
