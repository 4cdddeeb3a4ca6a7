/*
 * Route filters: chains. Their run on an exchange is filter_run.c. See
 * filter.h.
 */
#include "http/filter.h"

#include <stdlib.h>

#define STATE_ALIGN 16

size_t http_filter_rounded(size_t n)
{
    return (n + STATE_ALIGN - 1) & ~(size_t)(STATE_ALIGN - 1);
}

struct http_chain *http_chain_new(const struct http_filter *f, size_t n)
{
    struct http_chain *c = calloc(1, sizeof(*c) + n * sizeof(c->f[0]));
    if (!c)
        return NULL;
    c->n = n;
    for (size_t i = 0; i < n; i++) {
        const struct http_filter_ops *o = f[i].ops;
        c->f[i] = f[i];
        c->state_size += http_filter_rounded(o->state_size);
        c->has_status |= o->status != NULL;
        c->has_header |= o->header != NULL;
        c->has_head_end |= o->head_end != NULL;
        c->has_body |= o->body != NULL;
    }
    return c;
}

void http_chain_free(struct http_chain *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        if (c->f[i].ops->conf_free)
            c->f[i].ops->conf_free(c->f[i].conf);
    free(c);
}
