/*
 * The application's route handlers, as the config knows them: names only,
 * as none of them takes a route key of its own. app/app.c builds routes of
 * hello and health, app/shop.c those of the shop.
 */
#include "app/app_cfg.h"
#include "core/config_module.h"

#include <stddef.h>

static const struct cfg_handler app_handlers[] = {{.name = "hello"}, {.name = "health"}};

static const struct cfg_handler shop_handlers[] = {
    {.name = "products"}, {.name = "product"}, {.name = "product_update"}, {.name = "cart_add"},
    {.name = "cart"},     {.name = "cart_remove"}, {.name = "ready"},
};

static int add_all(const struct cfg_handler *h, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = cfg_handler_register(&h[i]);
    return rc;
}

int app_cfg_register(void)
{
    return add_all(app_handlers, sizeof app_handlers / sizeof app_handlers[0]);
}

int app_cfg_register_shop(void)
{
    return add_all(shop_handlers, sizeof shop_handlers / sizeof shop_handlers[0]);
}
