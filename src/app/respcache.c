/*
 * The response cache. See respcache.h.
 */
#include "app/respcache.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESPONSE_KEY_MAX 2048

/* A response-cache lookup and, on a miss, the capture of the answer. */
struct capture {
    struct shop *s;
    struct shop_wrapped *w;
    struct http_exchange *x;
    struct cache_ticket t;
    int aborted, nocache;
    char *head;                  /* "name\nvalue\n" per header */
    size_t head_len, nheaders;
    size_t klen;
    char key[];
};

/* Stored as "<status>\n<content type>\n<headers>\n" then name\nvalue\n per
 * header, then the body. */
static int replay(struct http_exchange *x, const char *v, size_t len)
{
    const char *end = v + len, *ct, *nl;
    char *e;
    long status = strtol(v, &e, 10), nh;
    if (e >= end || *e != '\n' || status < 200 || status > 299)
        return -EINVAL;
    ct = e + 1;
    if (!(nl = memchr(ct, '\n', (size_t)(end - ct))))
        return -EINVAL;
    nh = strtol(nl + 1, &e, 10);
    if (e >= end || *e != '\n' || nh < 0)
        return -EINVAL;
    const char *p = e + 1, *hs = p;
    for (long i = 0; i < 2 * nh; i++) { /* check first: answer nothing half */
        const char *q = memchr(p, '\n', (size_t)(end - p));
        if (!q)
            return -EINVAL;
        p = q + 1;
    }
    char ctype[256];
    snprintf(ctype, sizeof ctype, "%.*s", (int)(nl - ct), ct);
    http_begin(x, (int)status);
    for (long i = 0; i < nh; i++) {
        const char *name_end = memchr(hs, '\n', (size_t)(end - hs)), *val = name_end + 1;
        const char *val_end = memchr(val, '\n', (size_t)(end - val));
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(name_end - hs), hs);
        http_header(x, name, val, (size_t)(val_end - val));
        hs = val_end + 1;
    }
    http_header(x, "X-Cache", "HIT", 3);
    http_finish(x, ctype[0] ? ctype : NULL, p, (size_t)(end - p));
    return 0;
}

static void capture_free(struct capture *c)
{
    struct shop *s = c->s;
    free(c->head);
    free(c);
    s->busy--;
    shop_check_stop(s);
}

static void keep_response(struct capture *c, const char *ctype, const void *body, size_t len)
{
    char prefix[320];
    int n = snprintf(prefix, sizeof prefix, "%d\n%s\n%zu\n", c->x->status, ctype ? ctype : "", c->nheaders);
    if (n < 0 || (size_t)n >= sizeof prefix || strchr(ctype ? ctype : "", '\n'))
        return;
    size_t total = (size_t)n + c->head_len + len;
    char *blob = malloc(total);
    if (!blob)
        return;
    memcpy(blob, prefix, (size_t)n);
    if (c->head_len)
        memcpy(blob + n, c->head, c->head_len);
    memcpy(blob + n + c->head_len, body, len);
    cache_fill(c->s->cache, &c->t, c->key, c->klen, blob, total, c->w->ttl_ms, NULL);
    free(blob);
}

/* Watches the handler's answer (server.h: tap). */
static void tap(struct http_exchange *x, enum http_tap_event ev, const char *name, const void *data, size_t len)
{
    struct capture *c = x->tap_data;
    if (ev == HTTP_TAP_HEADER) {
        size_t nl = strlen(name);
        char *h = c->nocache ? NULL : realloc(c->head, c->head_len + nl + len + 2);
        if (!h || !shop_header_cacheable(name, data, len) || memchr(data, '\n', len) || strchr(name, '\n')) {
            c->nocache = 1;
            if (h)
                c->head = h;
            return;
        }
        c->head = h;
        memcpy(h + c->head_len, name, nl);
        h[c->head_len + nl] = '\n';
        memcpy(h + c->head_len + nl + 1, data, len);
        h[c->head_len + nl + 1 + len] = '\n';
        c->head_len += nl + len + 2;
        c->nheaders++;
        return;
    }
    /* the body (NULL: not in memory, so not kept) ends the capture */
    x->tap = NULL;
    x->tap_data = NULL;
    if (!c->nocache && data && x->status == 200)
        keep_response(c, name, data, len);
    capture_free(c);
}

static void capture_aborted(struct http_exchange *x)
{
    struct capture *c = x->tap_data;
    c->aborted = 1;
}

/* A miss: the route's own handler answers, and the tap keeps the answer. */
static void run_captured(struct capture *c)
{
    struct http_exchange *x = c->x;
    x->on_abort = NULL;
    if (c->aborted) { /* the request's bytes may be gone: do not run it */
        x->tap = NULL;
        http_error(x, 503, "client went away");
        capture_free(c);
        return;
    }
    x->tap = tap;
    x->tap_data = c;
    c->w->shadow.handler(x);
}

static void response_looked_up(void *arg, const char *val, size_t len, const struct cache_ticket *t)
{
    struct capture *c = arg;
    c->t = *t;
    if (val && !c->aborted && replay(c->x, val, len) == 0) {
        c->x->on_abort = NULL;
        capture_free(c);
        return;
    }
    run_captured(c);
}

void respcache_handle(struct shop_wrapped *w, struct http_exchange *x)
{
    struct shop *s = w->shop;
    char key[RESPONSE_KEY_MAX];
    const struct http_request *r = &x->req;
    int n = snprintf(key, sizeof key, "response:GET:%.*s%s%.*s", (int)r->path_len, r->path, r->query ? "?" : "",
                     r->query ? (int)r->query_len : 0, r->query ? r->query : "");
    struct cache_ticket t;
    const char *val;
    size_t len;
    if (n < 0 || n >= (int)sizeof key) { /* too long to keep */
        w->shadow.handler(x);
        return;
    }
    if (cache_get(s->cache, key, (size_t)n, 0, &t, &val, &len, NULL, NULL) == 0 && replay(x, val, len) == 0)
        return;
    struct capture *c = calloc(1, sizeof(*c) + (size_t)n + 1);
    if (!c) {
        w->shadow.handler(x);
        return;
    }
    *c = (struct capture){.s = s, .w = w, .x = x, .klen = (size_t)n};
    memcpy(c->key, key, (size_t)n + 1);
    s->busy++;
    x->tap_data = c;
    x->on_abort = capture_aborted;
    int rc = cache_get(s->cache, key, (size_t)n, 0, &c->t, &val, &len, response_looked_up, c);
    if (rc == 0)
        response_looked_up(c, val, len, &c->t);
    else if (rc != -EINPROGRESS)
        run_captured(c);
}

