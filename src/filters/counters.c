/*
 * Request counters. See counters.h.
 */
#include "filters/counters.h"

#include <stdlib.h>
#include <string.h>

#include "http/server.h"

struct rcount_route {
    const char *name;
    uint64_t n[HTTP_METHOD_COUNT];
};

struct rcount {
    struct rcount_route *r;
    size_t n;
};

struct rcount *rcount_new(void)
{
    return calloc(1, sizeof(struct rcount));
}

void rcount_free(struct rcount *t)
{
    if (!t)
        return;
    free(t->r);
    free(t);
}

static int grow(struct rcount *t, size_t idx)
{
    size_t n = idx < 16 ? 16 : idx * 2;
    struct rcount_route *r = realloc(t->r, n * sizeof(*r));
    if (!r)
        return -1;
    memset(r + t->n, 0, (n - t->n) * sizeof(*r));
    t->r = r;
    t->n = n;
    return 0;
}

static int on_request(struct http_exchange *x, void *conf, void *state)
{
    struct rcount *t = conf;
    const struct route *rt = x->match.route;
    unsigned m = (unsigned)x->req.method;
    (void)state;
    if (m < HTTP_METHOD_COUNT && (rt->index < t->n || grow(t, rt->index) == 0)) {
        t->r[rt->index].name = rt->name;
        t->r[rt->index].n[m]++;
    }
    return HTTP_FILTER_NEXT;
}

static const struct http_filter_ops rcount_ops = {.name = "counters", .request = on_request};

struct http_filter rcount_filter(struct rcount *t)
{
    return (struct http_filter){.ops = &rcount_ops, .conf = t};
}

size_t rcount_routes(const struct rcount *t)
{
    return t->n;
}

const char *rcount_name(const struct rcount *t, size_t route)
{
    return route < t->n ? t->r[route].name : NULL;
}

uint64_t rcount_take(struct rcount *t, size_t route, int method)
{
    if (route >= t->n || method < 0 || method >= HTTP_METHOD_COUNT)
        return 0;
    uint64_t v = t->r[route].n[method];
    t->r[route].n[method] = 0;
    return v;
}

void rcount_put(struct rcount *t, size_t route, int method, uint64_t n)
{
    if (route < t->n && method >= 0 && method < HTTP_METHOD_COUNT)
        t->r[route].n[method] += n;
}

uint64_t rcount_pending(const struct rcount *t)
{
    uint64_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        for (int m = 0; m < HTTP_METHOD_COUNT; m++)
            n += t->r[i].n[m];
    return n;
}
