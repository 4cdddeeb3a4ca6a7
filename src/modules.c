/*
 * The registration list. The order is the order of routes[].handler's
 * values and of docs/config.md's rows.
 */
#include "modules.h"

#include "app/app_cfg.h"
#include "app/broadcast.h"
#include "app/shop_prepare.h"
#include "http/static_cfg.h"
#include "net/listen_cfg.h"
#include "proc/health_hook.h"
#include "proc/hooks.h"
#include "proxy/proxy_cfg.h"

#include <stddef.h>

static int store_prepare(const struct master_env *env)
{
    return shop_prepare_store(env->cfg);
}

static int broadcast_prepare(const struct master_env *env)
{
    (void)env;
    return broadcast_master_start();
}

static const struct master_hook store_hook = {.name = "store", .prepare = store_prepare};
static const struct master_hook broadcast_hook = {.name = "broadcast", .prepare = broadcast_prepare};

/* The master's hooks, called in this order (stop and free in reverse). */
static int master_hooks_register(void)
{
    int rc = master_hook_add(&store_hook);
    if (!rc)
        rc = master_hook_add(&broadcast_hook);
    return rc ? rc : master_hook_add(&health_hook);
}

static int (*const registrations[])(void) = {
    listen_cfg_register,   /* "listen", listen[].* */
    static_cfg_register,   /* routes[].root, "static" */
    app_cfg_register,      /* "hello", "health" */
    app_cfg_register_shop, /* the shop's endpoints */
    proxy_cfg_register,    /* routes[].upstream, "proxy" */
    master_hooks_register, /* the shop's store, the broadcast relay, health checks */
};

int modules_register(void)
{
    static int done, rc;
    for (size_t i = 0; !done && i < sizeof registrations / sizeof registrations[0] && !rc; i++)
        rc = registrations[i]();
    done = 1;
    return rc;
}
