/*
 * A worker's application: its modules (shop, proxy, stats), the config
 * routes built through the handlers they register with their chains of
 * filters, and the built-in routes.
 */
#include "app/app.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app_cfg.h"
#include "app/broadcast.h"
#include "app/shop.h"
#include "app/stats.h"
#include "app/testroutes.h"
#include "core/msg.h"
#include "cache/response.h"
#include "filters/counters.h"
#include "http/accesslog.h"
#include "http/handlers.h"
#include "http/server.h"
#include "http/static.h"
#include "proxy/health.h"
#include "proxy/proxy.h"

struct app {
    struct app_env env;
    struct http_handlers *handlers; /* by name, for config routes */
    struct static_routes *statics;  /* the folders static routes serve */
    struct stats *stats;       /* /metrics, /stats, /status, loop lag */
    struct shop *shop;         /* the shop API, counters, response cache; NULL with app "none" */
    struct proxy *proxy;       /* the load balancer's routes (docs/proxy.md); NULL without upstreams */
    struct router *stats_router; /* app "none" without an admin listener: stats routes go nowhere */
    struct rcount *counts;     /* the counters filter (with the shop, which stores the counts) */
    struct rcache *responses;  /* the response cache filter (routes with cache.ttl) */
    struct http_chain **chains; /* the routes' filters, this generation's */
    size_t nchains;
    void (*stopped)(void *arg);
    void *stopped_arg;
};

static void upstream_state(void *arg, int from, const void *msg, size_t len)
{
    (void)from;
    proxy_on_state(arg, msg, len);
}

static int upstream_report(const void *msg, size_t len)
{
    return msg_send(HC_MSG_REPORT, msg, len);
}

static int keep_chain(struct app *a, struct http_chain *c)
{
    struct http_chain **cs = c ? realloc(a->chains, (a->nchains + 1) * sizeof(*cs)) : NULL;
    if (!cs) {
        http_chain_free(c);
        return -ENOMEM;
    }
    a->chains = cs;
    a->chains[a->nchains++] = c;
    return 0;
}

/* A config route's filters, in order: the request counters (with the
 * shop), then the response cache (cache.ttl). NULL in *out: none. */
static int route_chain(struct app *a, const struct cfg_route *rt, const struct http_chain **out)
{
    struct http_filter f[2];
    size_t n = 0;
    *out = NULL;
    if (a->counts)
        f[n++] = rcount_filter(a->counts);
    if (rt->cache_ttl_ms > 0) {
        if (!a->responses && !(a->responses = rcache_new()))
            return -ENOMEM;
        if (rcache_filter(a->responses, rt->cache_ttl_ms, &f[n]) < 0)
            return -ENOMEM;
        n++;
    }
    if (!n)
        return 0;
    struct http_chain *c = http_chain_new(f, n);
    if (!c && rt->cache_ttl_ms > 0)
        free(f[n - 1].conf);
    if (keep_chain(a, c) < 0)
        return -ENOMEM;
    *out = c;
    return 0;
}

static int add_route(struct app *a, struct router *r, const struct cfg_route *rt, char *err, size_t errlen)
{
    const struct http_chain *chain;
    int rc = route_chain(a, rt, &chain);
    if (rc < 0) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    return http_handlers_route(a->handlers, r, rt, chain, err, errlen);
}

/* Every module that provides route handlers adds them by name. */
static int add_handlers(struct app *a)
{
    if (!(a->handlers = http_handlers_new()) || !(a->statics = static_routes_new(a->handlers)) ||
        app_handlers_add(a->handlers) < 0)
        return -ENOMEM;
    if (a->shop && shop_handlers(a->shop, a->handlers) < 0)
        return -ENOMEM;
    if (a->proxy && proxy_handlers(a->proxy, a->handlers) < 0)
        return -ENOMEM;
    return 0;
}

/* With the shop (which stores the counts) every route counts its requests:
 * the routes added without filters of their own get the counters alone. */
static int count_all(struct app *a, struct router *r)
{
    if (!(a->counts = rcount_new()))
        return -ENOMEM;
    struct http_filter f = rcount_filter(a->counts);
    if (keep_chain(a, http_chain_new(&f, 1)) < 0)
        return -ENOMEM;
    router_default_chain(r, a->chains[a->nchains - 1]);
    return 0;
}

struct app *app_new(const struct app_env *env, char *err, size_t errlen)
{
    const struct cfg *cfg = env->cfg;
    struct router *r = env->router;
    struct app *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->env = *env;
    if (accesslog_open(env->loop, cfg, env->worker_id, err, errlen) < 0) {
        app_free(a);
        return NULL;
    }
    if (cfg->app == CFG_APP_SHOP && !(a->shop = shop_new(env, err, errlen))) {
        app_free(a);
        return NULL;
    }
    if (cfg->nupstreams && !(a->proxy = proxy_new(env->loop, cfg, env->slot, upstream_report, err, errlen))) {
        app_free(a);
        return NULL;
    }
    if (a->proxy && msg_register(HC_MSG_STATE, "upstream state", upstream_state, a->proxy) < 0) {
        snprintf(err, errlen, "cannot register the upstream state message");
        app_free(a);
        return NULL;
    }
    if (add_handlers(a) < 0) {
        snprintf(err, errlen, "out of memory");
        app_free(a);
        return NULL;
    }
    if (a->shop && count_all(a, r) < 0) {
        snprintf(err, errlen, "out of memory");
        app_free(a);
        return NULL;
    }
    /* config routes first: among exact routes the first added wins */
    for (size_t i = 0; i < cfg->nroutes; i++) {
        if (add_route(a, r, &cfg->routes[i], err, errlen) < 0) {
            app_free(a);
            return NULL;
        }
    }
    if (a->shop && (router_add(r, HTTP_M(HTTP_GET), "/", app_hello_handle, NULL) < 0 ||
                    router_add(r, HTTP_M(HTTP_GET), "/health", app_health_handle, NULL) < 0 ||
                    broadcast_register(r, env->worker_id) < 0 || testroutes_register(r, env->loop) < 0 ||
                    shop_routes(a->shop, r) < 0)) {
        snprintf(err, errlen, "cannot add built-in routes");
        app_free(a);
        return NULL;
    }
    /* app "none" serves the config's routes only: /metrics, /stats and
     * /status live on the admin listener, or nowhere */
    struct app_env senv = *env;
    if (!a->shop && !env->admin_fd && !(senv.router = a->stats_router = router_new())) {
        app_free(a);
        return NULL;
    }
    if (!(a->stats = stats_new(&senv, err, errlen))) {
        app_free(a);
        return NULL;
    }
    /* the stores of the filters: the shop's, or the response cache's own */
    if (a->shop && shop_start(a->shop, a->counts, a->responses, err, errlen) < 0) {
        app_free(a);
        return NULL;
    }
    if (!a->shop && a->responses && rcache_open_local(a->responses, env->loop, cfg) < 0) {
        snprintf(err, errlen, "out of memory");
        app_free(a);
        return NULL;
    }
    return a;
}

/* The access log is flushed last: requests answered while stopping are in it. */
static void proxy_stopped(void *arg)
{
    struct app *a = arg;
    accesslog_close();
    a->stopped(a->stopped_arg);
}

static void stats_stopped(void *arg)
{
    struct app *a = arg;
    if (a->proxy)
        proxy_stop(a->proxy, proxy_stopped, a);
    else
        proxy_stopped(a);
}

static void responses_stopped(void *arg)
{
    struct app *a = arg;
    stats_stop(a->stats, stats_stopped, a);
}

/* The shop first: its counters are flushed before stats stop. */
static void shop_stopped(void *arg)
{
    struct app *a = arg;
    rcache_stop(a->responses, responses_stopped, a);
}

void app_stop(struct app *a, void (*done)(void *arg), void *arg)
{
    a->stopped = done;
    a->stopped_arg = arg;
    if (a->shop)
        shop_stop(a->shop, shop_stopped, a);
    else
        shop_stopped(a);
}

void app_free(struct app *a)
{
    if (!a)
        return;
    if (a->proxy)
        msg_unregister(HC_MSG_STATE);
    static_routes_free(a->statics);
    http_handlers_free(a->handlers);
    stats_free(a->stats);
    router_free(a->stats_router);
    shop_free(a->shop);
    proxy_free(a->proxy);
    rcache_free(a->responses);
    rcount_free(a->counts);
    for (size_t i = 0; i < a->nchains; i++)
        http_chain_free(a->chains[i]);
    free(a->chains);
    accesslog_close(); /* no-op after app_stop */
    free(a);
}
