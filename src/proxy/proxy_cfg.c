/*
 * The proxy handler's config: a route of handler "proxy" names the
 * upstream group it forwards to, and the group must exist once every
 * source is in (routes and upstreams may come from different ones).
 */
#include "proxy/proxy_cfg.h"
#include "core/config_module.h"

#include <stddef.h>
#include <stdio.h>

static const struct cfg_key keys[] = {
    {.name = CFG_ROUTE_PREFIX "upstream", .type = CFG_T_STRING, .store = CFG_S_STR,
     .off = offsetof(struct cfg_route, upstream), .check = cfg_check_group_name, .flags = CFG_RELOAD,
     .bounds = "a group of upstreams; proxy only", .desc = "The upstream group a proxy route forwards to."},
};

static const char *group_missing(const struct cfg *c, const struct cfg_route *r, char *buf, size_t len)
{
    char list[200] = "";
    size_t used = 0;
    if (cfg_find_upstream(c, r->upstream))
        return NULL;
    for (size_t i = 0; i < c->nupstreams && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", c->upstreams[i].name);
    snprintf(buf, len, "names no upstream group (%s%s)",
             c->nupstreams ? "defined: " : "none is defined in \"upstreams\"", list);
    return buf;
}

static const struct cfg_handler handler = {
    .name = PROXY_HANDLER, .key = "upstream", .does = "forwards", .check = group_missing};

int proxy_cfg_register(void)
{
    int rc = cfg_keys_register(keys, sizeof keys / sizeof keys[0]);
    return rc ? rc : cfg_handler_register(&handler);
}
