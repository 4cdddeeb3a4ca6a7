/*
 * The response cache filter. See cache.h.
 */
#include "cache/response.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/server.h"

#define KEY_MAX 2048

struct rcache {
    struct cache *cache;
    struct cache *own;        /* the store of its own, or NULL */
    int busy;
    void (*idle)(void *arg);
    void *idle_arg;
};

struct rcache_conf {
    struct rcache *rc;
    int64_t ttl_ms;
};

/* Per exchange: the lookup, then the capture of the answer. */
struct rstate {
    struct rcache_conf *conf;
    struct http_exchange *x;
    struct cache_ticket t;
    char *key;
    size_t klen;
    char *head;                  /* "name\nvalue\n" per field */
    size_t head_len, nheaders;
    char *body;
    size_t body_len;
    char ctype[256];
    unsigned waiting : 1, aborted : 1, capture : 1, nocache : 1, headed : 1;
};

struct rcache *rcache_new(void)
{
    return calloc(1, sizeof(struct rcache));
}

void rcache_attach(struct rcache *rc, struct cache *c, void (*idle)(void *arg), void *arg)
{
    rc->cache = c;
    rc->idle = idle;
    rc->idle_arg = arg;
}

int rcache_open_local(struct rcache *rc, uv_loop_t *loop, const struct cfg *cfg)
{
    char err[256];
    struct cache_opts o = {.loop = loop, .local_size = (size_t)cfg->cache.local_size};
    if (!(rc->own = cache_new(&o, err, sizeof err)))
        return -ENOMEM;
    rc->cache = rc->own;
    return 0;
}

int rcache_busy(const struct rcache *rc)
{
    return rc ? rc->busy : 0;
}

void rcache_stop(struct rcache *rc, void (*done)(void *arg), void *arg)
{
    struct cache *c = rc ? rc->own : NULL;
    if (!c) {
        done(arg);
        return;
    }
    rc->own = rc->cache = NULL;
    cache_close(c, done, arg);
}

void rcache_free(struct rcache *rc)
{
    if (!rc)
        return;
    if (rc->own)
        cache_close(rc->own, NULL, NULL);
    free(rc);
}

/* Whether a comma-separated list holds a token, case-insensitively. */
static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '	' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',' && v[i] != '=' && v[i] != ' ' && v[i] != '	')
            i++;
        if (i - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return 1;
        while (i < n && v[i] != ',')
            i++;
    }
    return 0;
}

int rcache_header_ok(const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (name_len == 10 && strncasecmp(name, "Set-Cookie", 10) == 0)
        return 0;
    if (name_len == 13 && strncasecmp(name, "Cache-Control", 13) == 0)
        return !has_token(value, value_len, "no-store") && !has_token(value, value_len, "private");
    return 1;
}

/* --- the hit --------------------------------------------------------- */

/* Stored as "<status>\n<content type>\n<fields>\n", name\nvalue\n per
 * field, then the body. Checked whole before anything is answered. */
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
    for (long i = 0; i < 2 * nh; i++) {
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
        http_header_n(x, hs, (size_t)(name_end - hs), val, (size_t)(val_end - val));
        hs = val_end + 1;
    }
    http_header(x, "X-Cache", "HIT", 3);
    http_finish(x, ctype[0] ? ctype : NULL, p, (size_t)(end - p));
    return 0;
}

/* --- the request ----------------------------------------------------- */

static void unbusy(struct rcache *rc)
{
    if (--rc->busy == 0 && rc->idle)
        rc->idle(rc->idle_arg);
}

static const struct http_filter_ops rcache_ops;

static void aborted(struct http_exchange *x)
{
    struct rstate *st = http_filter_state(x, &rcache_ops);
    if (st)
        st->aborted = 1;
}

static void looked_up(void *arg, const char *val, size_t len, const struct cache_ticket *t)
{
    struct rstate *st = arg;
    struct http_exchange *x = st->x;
    struct rcache *rc = st->conf->rc;
    st->t = *t;
    st->waiting = 0;
    x->on_abort = NULL;
    if (st->aborted) /* the request's bytes may be gone: do not run it */
        http_error(x, 503, "client went away");
    else if (!(val && replay(x, val, len) == 0))
        http_filter_next(x);
    unbusy(rc);
}

static int on_request(struct http_exchange *x, void *conf, void *state)
{
    struct rcache_conf *cf = conf;
    struct rstate *st = state;
    const struct http_request *r = &x->req;
    struct cache *c = cf->rc->cache;
    char key[KEY_MAX];
    const char *val;
    size_t len;
    if (!c || (r->method != HTTP_GET && r->method != HTTP_HEAD))
        return HTTP_FILTER_NEXT;
    int n = snprintf(key, sizeof key, "response:GET:%.*s%s%.*s", (int)r->path_len, r->path, r->query ? "?" : "",
                     r->query ? (int)r->query_len : 0, r->query ? r->query : "");
    if (n < 0 || n >= (int)sizeof key) /* too long to keep */
        return HTTP_FILTER_NEXT;
    if (cache_get(c, key, (size_t)n, 0, &st->t, &val, &len, NULL, NULL) == 0 && replay(x, val, len) == 0)
        return HTTP_FILTER_HOLD;
    *st = (struct rstate){.conf = cf, .x = x, .klen = (size_t)n, .capture = r->method == HTTP_GET};
    if (st->capture && !(st->key = strndup(key, (size_t)n)))
        st->capture = 0;
    int rc = cache_get(c, key, (size_t)n, 0, &st->t, &val, &len, looked_up, st);
    if (rc == -EINPROGRESS) {
        st->waiting = 1;
        cf->rc->busy++;
        x->on_abort = aborted;
        return HTTP_FILTER_HOLD;
    }
    if (rc == 0 && replay(x, val, len) == 0)
        return HTTP_FILTER_HOLD;
    return HTTP_FILTER_NEXT;
}

/* --- the capture of the answer ---------------------------------------- */

static void drop(struct rstate *st)
{
    st->nocache = 1;
    free(st->head);
    free(st->body);
    st->head = st->body = NULL;
}

static void on_status(struct http_exchange *x, void *conf, void *state, int *status)
{
    struct rstate *st = state;
    (void)x;
    (void)conf;
    if (st->capture && *status != 200)
        drop(st);
}

static int on_header(struct http_exchange *x, void *conf, void *state, const char *name, size_t nl, const char *v,
                     size_t vl)
{
    struct rstate *st = state;
    (void)x;
    (void)conf;
    if (!st->capture || st->nocache)
        return 0;
    char *h = realloc(st->head, st->head_len + nl + vl + 2);
    if (!h || !rcache_header_ok(name, nl, v, vl) || memchr(v, '\n', vl) || memchr(name, '\n', nl)) {
        if (h)
            st->head = h;
        drop(st);
        return 0;
    }
    st->head = h;
    memcpy(h + st->head_len, name, nl);
    h[st->head_len + nl] = '\n';
    memcpy(h + st->head_len + nl + 1, v, vl);
    h[st->head_len + nl + 1 + vl] = '\n';
    st->head_len += nl + vl + 2;
    st->nheaders++;
    return 0;
}

static void on_head_end(struct http_exchange *x, void *conf, void *state, struct http_resp_head *h)
{
    struct rstate *st = state;
    (void)x;
    (void)conf;
    if (!st->capture || st->nocache)
        return;
    const char *ct = h->content_type ? h->content_type : "";
    if (!h->in_memory || strlen(ct) >= sizeof st->ctype || strchr(ct, '\n') ||
        (h->length > (int64_t)RCACHE_BODY_MAX)) {
        drop(st);
        return;
    }
    snprintf(st->ctype, sizeof st->ctype, "%s", ct);
    st->headed = 1;
}

static void on_body(struct http_exchange *x, void *conf, void *state, struct http_piece *p)
{
    struct rstate *st = state;
    (void)x;
    (void)conf;
    if (!st->capture || st->nocache || !p->len)
        return;
    char *b = st->body_len + p->len <= RCACHE_BODY_MAX ? realloc(st->body, st->body_len + p->len) : NULL;
    if (!b) {
        drop(st);
        return;
    }
    memcpy(b + st->body_len, p->data, p->len);
    st->body = b;
    st->body_len += p->len;
}

static void keep(struct rstate *st, int status)
{
    char prefix[320];
    int n = snprintf(prefix, sizeof prefix, "%d\n%s\n%zu\n", status, st->ctype, st->nheaders);
    struct cache *c = st->conf->rc->cache;
    if (n < 0 || (size_t)n >= sizeof prefix || !c)
        return;
    size_t total = (size_t)n + st->head_len + st->body_len;
    char *blob = malloc(total);
    if (!blob)
        return;
    memcpy(blob, prefix, (size_t)n);
    if (st->head_len)
        memcpy(blob + n, st->head, st->head_len);
    if (st->body_len)
        memcpy(blob + n + st->head_len, st->body, st->body_len);
    cache_fill(c, &st->t, st->key, st->klen, blob, total, st->conf->ttl_ms, NULL);
    free(blob);
}

static void on_end(struct http_exchange *x, void *conf, void *state, int complete)
{
    struct rstate *st = state;
    (void)conf;
    if (st->capture && !st->nocache && st->headed && complete && x->status == 200)
        keep(st, x->status);
    free(st->head);
    free(st->body);
    free(st->key);
}

static const struct http_filter_ops rcache_ops = {
    .name = "cache",
    .state_size = sizeof(struct rstate),
    .request = on_request,
    .status = on_status,
    .header = on_header,
    .head_end = on_head_end,
    .body = on_body,
    .end = on_end,
    .conf_free = free,
};

int rcache_filter(struct rcache *rc, int64_t ttl_ms, struct http_filter *out)
{
    struct rcache_conf *cf = malloc(sizeof(*cf));
    if (!cf)
        return -ENOMEM;
    *cf = (struct rcache_conf){.rc = rc, .ttl_ms = ttl_ms};
    *out = (struct http_filter){.ops = &rcache_ops, .conf = cf};
    return 0;
}
