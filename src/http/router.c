/*
 * Router. Routes live in one array kept in priority order: exact routes,
 * then parameterised ones, then prefixes sorted longest first, so a match
 * is the first route that fits both path and method. The table is small
 * (tens of routes), and a linear scan with a length check before memcmp
 * costs less than hashing the path.
 */
#include "http/router.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { KIND_EXACT, KIND_PARAM, KIND_PREFIX };

struct router {
    struct route *routes;
    size_t n, cap;
    const struct http_chain *chain; /* for routes added without one */
};

struct router *router_new(void)
{
    return calloc(1, sizeof(struct router));
}

void router_free(struct router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->routes[i].pattern);
    free(r->routes);
    free(r);
}

/* Checks a pattern and says which kind it is; -EINVAL when malformed. */
static int classify(const char *p, size_t n, uint8_t *nparams)
{
    if (n == 0 || p[0] != '/')
        return -EINVAL;
    if (n >= 2 && p[n - 1] == '*') {
        if (p[n - 2] != '/' || memchr(p, ':', n) || memchr(p, '*', n - 1))
            return -EINVAL;
        return KIND_PREFIX;
    }
    if (memchr(p, '*', n))
        return -EINVAL;
    uint8_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != ':')
            continue;
        /* a parameter fills a whole segment and has a name */
        if (p[i - 1] != '/' || i + 1 == n || p[i + 1] == '/' || ++count > ROUTER_MAX_PARAMS)
            return -EINVAL;
    }
    *nparams = count;
    return count ? KIND_PARAM : KIND_EXACT;
}

/* Position of a new route of this kind: after its peers, and for prefixes
 * before any shorter prefix. */
static size_t insert_at(const struct router *r, const struct route *nr)
{
    size_t i = 0;
    while (i < r->n && r->routes[i].kind <= nr->kind) {
        if (nr->kind == KIND_PREFIX && r->routes[i].kind == KIND_PREFIX &&
            r->routes[i].pattern_len < nr->pattern_len)
            break;
        i++;
    }
    return i;
}

int router_add(struct router *r, uint32_t methods, const char *pattern, http_handler_fn fn, void *data)
{
    return router_add_flags(r, methods, pattern, fn, data, 0);
}

int router_add_flags(struct router *r, uint32_t methods, const char *pattern, http_handler_fn fn, void *data,
                     unsigned flags)
{
    return router_add_chain(r, methods, pattern, fn, data, flags, r->chain);
}

void router_default_chain(struct router *r, const struct http_chain *chain)
{
    r->chain = chain;
}

int router_add_chain(struct router *r, uint32_t methods, const char *pattern, http_handler_fn fn, void *data,
                     unsigned flags, const struct http_chain *chain)
{
    size_t n = strlen(pattern);
    uint8_t nparams = 0;
    int kind = classify(pattern, n, &nparams);
    if (kind < 0)
        return kind;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct route *routes = realloc(r->routes, cap * sizeof(*routes));
        if (!routes)
            return -ENOMEM;
        r->routes = routes;
        r->cap = cap;
    }
    if (methods & HTTP_M(HTTP_GET))
        methods |= HTTP_M(HTTP_HEAD);
    struct route nr = {.pattern = strdup(pattern), .pattern_len = n, .methods = methods,
                       .handler = fn, .data = data, .chain = chain, .index = (uint16_t)r->n, .kind = (uint8_t)kind,
                       .nparams = nparams, .flags = (uint8_t)flags};
    if (!nr.pattern)
        return -ENOMEM;
    nr.name = nr.pattern;
    size_t at = insert_at(r, &nr);
    memmove(&r->routes[at + 1], &r->routes[at], (r->n - at) * sizeof(*r->routes));
    r->routes[at] = nr;
    r->n++;
    return 0;
}

const struct route *router_at(const struct router *r, size_t index)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->routes[i].index == index)
            return &r->routes[i];
    return NULL;
}

/* Matches a parameterised pattern segment by segment, filling params. */
static int match_param(const struct route *rt, const char *path, size_t len, struct route_match *m)
{
    const char *p = rt->pattern, *pend = p + rt->pattern_len;
    size_t q = 0, np = 0;
    while (p < pend) {
        if (*p != ':') {
            if (q >= len || path[q] != *p)
                return 0;
            p++, q++;
            continue;
        }
        const char *name = ++p;
        while (p < pend && *p != '/')
            p++;
        size_t start = q;
        while (q < len && path[q] != '/')
            q++;
        if (q == start)
            return 0;
        m->params[np++] = (struct route_param){name, path + start, (size_t)(p - name), q - start};
    }
    if (q != len)
        return 0;
    m->nparams = np;
    return 1;
}

static int path_matches(const struct route *rt, const char *path, size_t len, struct route_match *m)
{
    switch (rt->kind) {
    case KIND_EXACT:
        return rt->pattern_len == len && memcmp(rt->pattern, path, len) == 0;
    case KIND_PARAM:
        return match_param(rt, path, len, m);
    default: /* prefix: the pattern without its '*' */
        return len >= rt->pattern_len - 1 && memcmp(rt->pattern, path, rt->pattern_len - 1) == 0;
    }
}

void router_match(const struct router *r, enum http_method method, const char *path, size_t path_len,
                  struct route_match *m)
{
    m->route = NULL;
    m->allow = 0;
    m->nparams = 0;
    if (method == HTTP_OTHER) {
        m->status = 501;
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        const struct route *rt = &r->routes[i];
        if (!path_matches(rt, path, path_len, m))
            continue;
        if (rt->methods & HTTP_M(method)) {
            m->route = rt;
            m->status = 0;
            return;
        }
        m->allow |= rt->methods;
    }
    m->nparams = 0;
    m->status = m->allow ? 405 : 404;
}

size_t router_allow_string(uint32_t mask, char *buf, size_t len)
{
    size_t n = 0;
    if (len)
        buf[0] = '\0';
    for (int mth = HTTP_GET; mth < HTTP_METHOD_COUNT; mth++) {
        if (!(mask & HTTP_M(mth)))
            continue;
        const char *name = http_method_name((enum http_method)mth);
        size_t need = strlen(name) + (n ? 2 : 0);
        if (n + need + 1 > len)
            break;
        if (n) {
            memcpy(buf + n, ", ", 2);
            n += 2;
        }
        memcpy(buf + n, name, strlen(name));
        n += strlen(name);
        buf[n] = '\0';
    }
    return n;
}

const struct route_param *route_param_get(const struct route_match *m, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < m->nparams; i++)
        if (m->params[i].name_len == n && memcmp(m->params[i].name, name, n) == 0)
            return &m->params[i];
    return NULL;
}
