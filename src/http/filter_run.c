/*
 * Route filters at work on an exchange: the chain's run, on the way in
 * and out, called by the engine (server.c, response.c, stream.c). See
 * filter.h.
 */
#include "http/filter.h"

#include <stdlib.h>

#include "http/server.h"

/* The run and every filter's state in one allocation. */
static struct http_filter_run *run_new(const struct http_chain *c)
{
    size_t head = http_filter_rounded(sizeof(struct http_filter_run) + c->n * sizeof(void *));
    struct http_filter_run *r = calloc(1, head + c->state_size);
    if (!r)
        return NULL;
    r->chain = c;
    char *p = (char *)r + head;
    for (size_t i = 0; i < c->n; i++) {
        size_t sz = http_filter_rounded(c->f[i].ops->state_size);
        r->state[i] = sz ? p : NULL;
        p += sz;
    }
    return r;
}

void http_filter_next(struct http_exchange *x)
{
    struct http_filter_run *r = x->filters;
    const struct http_chain *c = r->chain;
    r->passed = r->entered; /* a held request: its filter passes it on now */
    while (r->entered < c->n) {
        size_t i = r->entered++;
        const struct http_filter *f = &c->f[i];
        if (f->ops->request && f->ops->request(x, f->conf, r->state[i]) != HTTP_FILTER_NEXT)
            return;
        r->passed = (uint16_t)(i + 1);
    }
    x->match.route->handler(x);
}

void *http_filter_state(struct http_exchange *x, const struct http_filter_ops *ops)
{
    struct http_filter_run *r = x->filters;
    for (size_t i = 0; r && i < r->chain->n; i++)
        if (r->chain->f[i].ops == ops)
            return r->state[i];
    return NULL;
}

void http_filter_start(struct http_exchange *x)
{
    const struct http_chain *c = x->match.route->chain;
    if (!(x->filters = run_new(c))) {
        http_error(x, 503, "out of memory");
        return;
    }
    http_filter_next(x);
}

void http_filter_status(struct http_exchange *x, int *status)
{
    struct http_filter_run *r = x->filters;
    if (!r->chain->has_status)
        return;
    for (size_t i = r->passed; i-- > 0;) {
        const struct http_filter *f = &r->chain->f[i];
        if (f->ops->status)
            f->ops->status(x, f->conf, r->state[i], status);
    }
}

int http_filter_drop_header(struct http_exchange *x, const char *name, size_t name_len, const char *value,
                            size_t value_len)
{
    struct http_filter_run *r = x->filters;
    if (!r->chain->has_header)
        return 0;
    for (size_t i = r->passed; i-- > 0;) {
        const struct http_filter *f = &r->chain->f[i];
        if (f->ops->header && f->ops->header(x, f->conf, r->state[i], name, name_len, value, value_len))
            return 1;
    }
    return 0;
}

void http_filter_head_end(struct http_exchange *x, struct http_resp_head *h)
{
    struct http_filter_run *r = x->filters;
    if (!r->chain->has_head_end)
        return;
    for (size_t i = r->passed; i-- > 0;) {
        const struct http_filter *f = &r->chain->f[i];
        if (f->ops->head_end)
            f->ops->head_end(x, f->conf, r->state[i], h);
    }
}

void http_filter_body(struct http_exchange *x, struct http_piece *p)
{
    struct http_filter_run *r = x->filters;
    if (!r->chain->has_body)
        return;
    for (size_t i = r->passed; i-- > 0;) {
        const struct http_filter *f = &r->chain->f[i];
        if (f->ops->body)
            f->ops->body(x, f->conf, r->state[i], p);
    }
}

void http_filter_piece(struct http_exchange *x, const void **data, size_t *len)
{
    if (!x->filters)
        return;
    struct http_piece p = {.data = *data, .len = *len};
    http_filter_body(x, &p);
    *data = p.data;
    *len = p.len;
}

void http_filter_end(struct http_exchange *x, int complete)
{
    struct http_filter_run *r = x->filters;
    x->filters = NULL;
    for (size_t i = r->entered; i-- > 0;) {
        const struct http_filter *f = &r->chain->f[i];
        if (f->ops->end)
            f->ops->end(x, f->conf, r->state[i], complete);
    }
    free(r);
}
