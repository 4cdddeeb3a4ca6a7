/*
 * Route handlers by name. See handlers.h.
 */
#include "http/handlers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct handler_entry {
    const char *name;
    http_route_build_fn build;
    void *self;
};

struct http_handlers {
    struct handler_entry *e;
    size_t n;
};

struct http_handlers *http_handlers_new(void)
{
    return calloc(1, sizeof(struct http_handlers));
}

void http_handlers_free(struct http_handlers *h)
{
    if (!h)
        return;
    free(h->e);
    free(h);
}

static const struct handler_entry *find(const struct http_handlers *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->e[i].name, name) == 0)
            return &h->e[i];
    return NULL;
}

int http_handlers_add(struct http_handlers *h, const char *name, http_route_build_fn build, void *self)
{
    if (find(h, name))
        return -EEXIST;
    struct handler_entry *e = realloc(h->e, (h->n + 1) * sizeof(*e));
    if (!e)
        return -ENOMEM;
    h->e = e;
    h->e[h->n++] = (struct handler_entry){.name = name, .build = build, .self = self};
    return 0;
}

int http_handlers_route(const struct http_handlers *h, struct router *r, const struct cfg_route *rt,
                        const struct http_chain *chain, char *err, size_t errlen)
{
    const struct handler_entry *e = find(h, rt->handler);
    struct http_route_spec s = {0};
    int rc;
    if (!e) {
        snprintf(err, errlen, "route %s: cannot add handler %s", rt->path, rt->handler);
        return -ENOENT;
    }
    if ((rc = e->build(e->self, rt, &s, err, errlen)) < 0)
        return rc;
    if ((rc = router_add_chain(r, s.methods, rt->path, s.fn, s.data, s.flags, chain)) < 0)
        snprintf(err, errlen, "route %s: cannot add handler %s", rt->path, rt->handler);
    return rc;
}
