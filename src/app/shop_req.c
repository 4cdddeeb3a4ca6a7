/*
 * The shop's requests and answers: a struct shop_req's life, the JSON
 * answers, the inputs every handler reads, and the thread-pool read that
 * each kind of request fills in (shop_int.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/shop_int.h"
#include "core/log.h"

struct shop_req *shop_req_new(struct shop *s, struct http_exchange *x, const struct shop_req_ops *ops)
{
    struct shop_req *q = calloc(1, sizeof(*q));
    if (!q) {
        if (x)
            shop_reply_error(x, 500, "out of memory", NULL);
        return NULL;
    }
    q->s = s;
    q->x = x;
    q->ops = ops;
    s->busy++;
    return q;
}

void shop_req_free(struct shop_req *q)
{
    struct shop *s = q->s;
    free(q->json);
    free(q);
    s->busy--;
    shop_check_stop(s);
}

void shop_reply(struct http_exchange *x, int status, const char *body, size_t len)
{
    http_respond(x, status, SHOP_JSON_TYPE, body, len);
}

/* {"error": msg, "field": field}; field may be NULL. */
void shop_reply_error(struct http_exchange *x, int status, const char *msg, const char *field)
{
    json_t *o = field ? json_pack("{s:s,s:s}", "error", msg, "field", field) : json_pack("{s:s}", "error", msg);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (body)
        shop_reply(x, status, body, strlen(body));
    else
        http_error(x, status, msg);
    free(body);
    json_decref(o);
}

void shop_reply_errorf(struct http_exchange *x, int status, const char *fmt, long long v)
{
    char msg[160];
    snprintf(msg, sizeof msg, fmt, v);
    shop_reply_error(x, status, msg, NULL);
}

/* Answers with the JSON built for q (200), then frees q. */
void shop_reply_json_and_free(struct shop_req *q)
{
    if (q->json)
        shop_reply(q->x, 200, q->json, q->json_len);
    else
        shop_reply_error(q->x, 500, "out of memory", NULL);
    shop_req_free(q);
}

json_t *shop_product_json(const struct db_product *p)
{
    return json_pack("{s:I,s:s,s:I,s:I}", "id", (json_int_t)p->id, "name", p->name, "price", (json_int_t)p->price,
                     "stock", (json_int_t)p->stock);
}

/* The named route parameter, or the first one (a config route may name
 * its parameter otherwise). */
static const struct route_param *param(const struct http_exchange *x, const char *name)
{
    const struct route_param *p = route_param_get(&x->match, name);
    return p ? p : x->match.nparams ? &x->match.params[0] : NULL;
}

int shop_param_id(const struct http_exchange *x, const char *name, int64_t *id)
{
    const struct route_param *p = param(x, name);
    return p ? shop_parse_id(p->value, p->value_len, id) : -EINVAL;
}

int shop_user_of(struct http_exchange *x, char *out)
{
    char err[128];
    const char *field = NULL;
    size_t n = 0;
    const char *v = http_req_header(x, "User-Id", &n);
    if (shop_parse_user(v, n, out, err, sizeof err, &field) == 0)
        return 0;
    shop_reply_error(x, 400, err, field);
    return -EINVAL;
}

/* Steals j. */
static char *dump(json_t *j, size_t *len)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    *len = s ? strlen(s) : 0;
    return s;
}

/* Runs on the thread pool: the query, and the JSON of the answer. */
static void source_work(struct db_conn *c, void *arg)
{
    struct shop_req *q = arg;
    json_t *j = q->ops->read(c, q);
    if (q->rc && q->rc != -ENOENT)
        log_error("shop: SQLite read failed: %s", db_errmsg(c));
    if (j && !(q->json = dump(j, &q->json_len)) && !q->rc)
        q->rc = -ENOMEM;
}

static void source_done(void *arg, int status)
{
    struct shop_req *q = arg;
    if (status)
        q->rc = status;
    q->ops->read_done(q);
}

void shop_read_source(struct shop_req *q)
{
    if (db_submit(q->s->db, q->s->loop, source_work, source_done, q) < 0) {
        shop_reply_error(q->x, 503, "catalog unavailable", NULL);
        shop_req_free(q);
    }
}
