/*
 * Readiness. See ready.h.
 */
#include "app/ready.h"

#include <stdio.h>

#include "app/shop_int.h"

static json_t *read_version(struct db_conn *c, struct shop_req *q)
{
    int version;
    q->rc = db_schema_version(c, &version);
    return NULL;
}

static void ready_done(struct shop_req *q)
{
    struct shop *s = q->s;
    int db_up = q->rc == 0, has_redis = s->redis != NULL, redis_ok = has_redis && redis_up(s->redis);
    int ok = db_up && (!has_redis || redis_ok);
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"%s\",\"checks\":{\"sqlite\":\"%s\",\"redis\":\"%s\"}}",
                     ok ? "ready" : "unavailable", db_up ? "up" : "down",
                     !has_redis ? "not configured" : redis_ok ? "up" : "down");
    shop_reply(q->x, ok ? 200 : 503, body, (size_t)n);
    shop_req_free(q);
}

static const struct shop_req_ops ready_ops = {.read = read_version, .read_done = ready_done};

void ready_handle(struct http_exchange *x)
{
    struct shop *s = x->match.route->data;
    struct shop_req *q = shop_req_new(s, x, &ready_ops);
    if (q)
        shop_read_source(q);
}
