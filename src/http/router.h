/*
 * Router: maps a method and a path to a handler. Pure: no sockets, no I/O.
 *
 * Patterns:
 *   /health              exact
 *   /api/products/:id    parameterised; a ":name" segment matches one
 *                        non-empty path segment
 *   /static/ *           (no space) prefix; matches /static/ and below
 * Priority: exact, then parameterised (in the order added), then the
 * longest prefix. A route that matches the path but not the method is
 * skipped in favour of a later route that matches both; when none does the
 * answer is 405 with the methods that would have matched (Allow). HEAD is
 * served wherever GET is. A method we do not implement is 501.
 *
 * Ownership: the router copies patterns; `data` stays the caller's.
 */
#ifndef COHORT_HTTP_ROUTER_H
#define COHORT_HTTP_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "http/parser.h"

#define ROUTER_MAX_PARAMS 4

struct http_exchange;
struct http_chain;
typedef void (*http_handler_fn)(struct http_exchange *x);

/* Bit for one method in a route's method mask. */
#define HTTP_M(m) (1u << (m))
#define HTTP_M_ANY 0xffffffffu

struct route {
    char *pattern;
    size_t pattern_len;
    uint32_t methods;       /* HTTP_M() bits; HEAD is added where GET is */
    http_handler_fn handler;
    void *data;
    const struct http_chain *chain; /* filters (http/filter.h); NULL: none */
    const char *name;       /* label for counters: the pattern */
    uint16_t index;         /* add order: 0 for the first route added (counter slots) */
    uint8_t kind;           /* exact, param, prefix */
    uint8_t nparams;
    uint8_t flags;          /* ROUTE_* */
};

/* The handler runs as soon as the head is in and reads the body itself as
 * it arrives (http_body_start in http/server.h); limits.max_body does not
 * apply. The proxy's routes are such. */
#define ROUTE_STREAM 1u

struct route_param {
    const char *name, *value;
    size_t name_len, value_len;
};

struct route_match {
    const struct route *route;         /* NULL unless status is 0 */
    int status;                        /* 0, 404, 405 or 501 */
    uint32_t allow;                    /* for 405: methods allowed on the path */
    size_t nparams;
    struct route_param params[ROUTER_MAX_PARAMS];
};

struct router;

struct router *router_new(void);
void router_free(struct router *r);

/* Returns 0, -EINVAL for a malformed pattern, -ENOMEM. */
int router_add(struct router *r, uint32_t methods, const char *pattern, http_handler_fn fn, void *data);
/* The same with ROUTE_* flags. */
int router_add_flags(struct router *r, uint32_t methods, const char *pattern, http_handler_fn fn, void *data,
                     unsigned flags);

/* The same with a chain of filters in front of the handler (NULL: none;
 * the caller's, and must outlive the router). */
int router_add_chain(struct router *r, uint32_t methods, const char *pattern, http_handler_fn fn, void *data,
                     unsigned flags, const struct http_chain *chain);

/* The chain given to routes added after this call without one of their
 * own (router_add, router_add_flags). */
void router_default_chain(struct router *r, const struct http_chain *chain);

/* Fills *m for the request's method and path; never fails. */
void router_match(const struct router *r, enum http_method method, const char *path, size_t path_len,
                  struct route_match *m);

/* The route added index-th (struct route.index), NULL past the last. */
const struct route *router_at(const struct router *r, size_t index);

/* Writes "GET, HEAD, POST" for a mask into buf; returns the length. */
size_t router_allow_string(uint32_t mask, char *buf, size_t len);

/* Looks up a parameter of a match by name; NULL if absent. */
const struct route_param *route_param_get(const struct route_match *m, const char *name);

#endif
