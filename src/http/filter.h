/*
 * Route filters. A route is a handler plus an ordered chain of filters
 * (struct http_chain, attached with router_add_chain). Filters are built
 * from the config once per generation; a route without filters has no
 * chain and costs the engine one pointer test per request and per
 * response call.
 *
 * On the way in, filters run in chain order, then the handler. A filter's
 * request hook returns HTTP_FILTER_NEXT to pass the request on, or
 * HTTP_FILTER_HOLD when it keeps it: it answered (a cached response, a
 * 429, a 403), or it will later -- either answer then, or call
 * http_filter_next(x) to pass it on. The hooks of later filters and the
 * handler do not run for a request a filter answers.
 *
 * On the way out, the response hooks of the filters that passed the
 * request on run in reverse chain order (the last one nearest the
 * handler sees the response first). The filter that answered does not see
 * its own answer; the filters before it do. The answer a handler gives is
 * seen by every filter.
 *
 * Response hooks (all optional):
 *   status    before the status line is written: may rewrite *status.
 *   header    each field the handler writes: returns 1 to drop it (then a
 *             filter may write its own with http_filter_header).
 *   head_end  before the head ends: the content type, the body's length
 *             (-1: unknown, sent chunked or until close) and whether the
 *             body passes through memory. A filter that changes the body's
 *             length sets h->length to -1 (the engine then sends chunked)
 *             and may add fields with http_filter_header.
 *   body      each piece of the body in memory, last with p->last set
 *             (possibly empty): may replace p->data/p->len with its own
 *             bytes (valid until its next call) when it set length -1. A
 *             body sent from a file (sendfile) passes through no hook.
 *   end       once, when the exchange ends: complete is 1 when the whole
 *             response was produced, 0 when it was cut short (an abort,
 *             the client gone, a taken-over connection). Every filter
 *             whose request hook ran gets it, to let go of its state.
 *
 * Per-request state: each filter gets `state_size` zeroed bytes of its
 * own for the exchange (NULL when 0), given to every hook; the chain
 * allocates them when the first filter runs and frees them after `end`.
 */
#ifndef COHORT_HTTP_FILTER_H
#define COHORT_HTTP_FILTER_H

#include <stddef.h>
#include <stdint.h>

struct http_exchange;

enum { HTTP_FILTER_NEXT = 0, HTTP_FILTER_HOLD = 1 };

/* What a response's head says of its body, for head_end hooks. */
struct http_resp_head {
    const char *content_type; /* NULL: none */
    int64_t length;           /* bytes; -1 unknown (chunked, or until close) */
    unsigned in_memory : 1;   /* 0: sent from a file, no body hook runs */
};

struct http_piece {
    const void *data;
    size_t len;
    int last;
};

struct http_filter_ops {
    const char *name;
    size_t state_size;
    int (*request)(struct http_exchange *x, void *conf, void *state);
    void (*status)(struct http_exchange *x, void *conf, void *state, int *status);
    int (*header)(struct http_exchange *x, void *conf, void *state, const char *name, size_t name_len,
                  const char *value, size_t value_len);
    void (*head_end)(struct http_exchange *x, void *conf, void *state, struct http_resp_head *h);
    void (*body)(struct http_exchange *x, void *conf, void *state, struct http_piece *p);
    void (*end)(struct http_exchange *x, void *conf, void *state, int complete);
    void (*conf_free)(void *conf); /* NULL: the conf is not the chain's */
};

struct http_filter {
    const struct http_filter_ops *ops;
    void *conf;
};

struct http_chain {
    size_t n;
    size_t state_size;        /* every filter's state, each rounded to 16 */
    unsigned has_status : 1, has_header : 1, has_head_end : 1, has_body : 1;
    struct http_filter f[];
};

/* A chain of n filters (copied; each conf becomes the chain's when its
 * ops have conf_free). NULL on allocation failure. */
struct http_chain *http_chain_new(const struct http_filter *f, size_t n);
void http_chain_free(struct http_chain *c);

/* Passes a held request on to the next filter, or the handler. */
void http_filter_next(struct http_exchange *x);

/* The state of the exchange's first filter with these ops (for callbacks
 * that get only the exchange, such as on_abort); NULL: none. */
void *http_filter_state(struct http_exchange *x, const struct http_filter_ops *ops);

/* Writes a response field from a filter's hook; no filter sees it. */
void http_filter_header(struct http_exchange *x, const char *name, const char *value, size_t value_len);

/* --- for the engine (http/server.c, response.c, stream.c) --- */

/* The per-exchange run of a chain. */
struct http_filter_run {
    const struct http_chain *chain;
    uint16_t entered; /* filters whose request hook ran */
    uint16_t passed;  /* filters that passed the request on */
    unsigned ended : 1;
    void *state[];
};

/* A filter's state size, rounded up to keep every state aligned. */
size_t http_filter_rounded(size_t n);

/* Starts the route's chain (x->match.route->chain). */
void http_filter_start(struct http_exchange *x);
void http_filter_status(struct http_exchange *x, int *status);
int http_filter_drop_header(struct http_exchange *x, const char *name, size_t name_len, const char *value,
                            size_t value_len);
void http_filter_head_end(struct http_exchange *x, struct http_resp_head *h);
void http_filter_body(struct http_exchange *x, struct http_piece *p);
/* A piece of the body (not the last) through x's chain, if it has one: data
 * and len become what the filters made of it. */
void http_filter_piece(struct http_exchange *x, const void **data, size_t *len);
void http_filter_end(struct http_exchange *x, int complete);

#endif
