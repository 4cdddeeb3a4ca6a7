#include "app/broadcast.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/msg.h"
#include "http/server.h"

#define KEEP 16

static json_t *received[KEEP];
static int next_slot, me;

static void on_message(void *arg, int from, const void *data, size_t len)
{
    (void)arg;
    json_t *d = json_loadb(data, len, 0, NULL);
    if (!d)
        d = json_stringn((const char *)data, len);
    json_decref(received[next_slot]);
    received[next_slot] = json_pack("{s:i, s:o}", "from", from, "data", d ? d : json_null());
    next_slot = (next_slot + 1) % KEEP;
}

static void reply_json(struct http_exchange *x, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!text) {
        http_error(x, 500, "cannot encode the answer");
        return;
    }
    http_respond(x, status, "application/json", text, strlen(text));
    free(text);
}

static void post_handle(struct http_exchange *x)
{
    json_t *body = json_loadb(x->body ? x->body : "", x->body_len, 0, NULL);
    json_t *data = json_object_get(body, "data");
    if (!data) {
        json_decref(body);
        http_error(x, 400, "body must be a JSON object with a data field");
        return;
    }
    char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    int r = text ? msg_send(BROADCAST_MSG_SEND, text, strlen(text)) : -1;
    free(text);
    json_decref(body);
    if (r < 0) {
        http_error(x, 503, "the master cannot take the message now");
        return;
    }
    reply_json(x, 202, json_pack("{s:b, s:i}", "sent", 1, "from", me));
}

static void get_handle(struct http_exchange *x)
{
    json_t *list = json_array();
    for (int i = 0; i < KEEP; i++) {
        json_t *m = received[(next_slot + i) % KEEP];
        if (m)
            json_array_append(list, m);
    }
    reply_json(x, 200, json_pack("{s:i, s:i, s:o}", "worker", me, "pid", (int)getpid(), "received", list));
}

int broadcast_register(struct router *r, int worker_id)
{
    me = worker_id;
    int rc = msg_register(BROADCAST_MSG_DELIVER, "broadcast", on_message, NULL);
    if (rc < 0)
        return rc;
    rc = router_add(r, HTTP_M(HTTP_POST), "/api/broadcast", post_handle, NULL);
    return rc ? rc : router_add(r, HTTP_M(HTTP_GET), "/api/broadcast", get_handle, NULL);
}

static void relay(void *arg, int from, const void *data, size_t len)
{
    (void)arg;
    if (msg_broadcast(BROADCAST_MSG_DELIVER, from, 0, data, len) < 0)
        log_warn("broadcast from worker %d: cannot relay it", from);
}

int broadcast_master_start(void)
{
    return msg_register(BROADCAST_MSG_SEND, "broadcast", relay, NULL);
}
