#include "core/msg.h"

#include <errno.h>
#include <string.h>

#include "core/log.h"

struct msg_entry {
    const char *name;
    msg_fn fn;
    void *arg;
};

static struct msg_entry table[MSG_TYPE_MAX + 1];
static struct msg_transport transport;
static int have_transport;
static uint64_t unknown;

int msg_register(uint16_t type, const char *name, msg_fn fn, void *arg)
{
    if (type == 0 || type > MSG_TYPE_MAX || (MSG_TYPES_PROC & (1u << type)) || !fn)
        return -EINVAL;
    if (table[type].fn)
        return -EEXIST;
    table[type] = (struct msg_entry){.name = name ? name : "?", .fn = fn, .arg = arg};
    return 0;
}

void msg_unregister(uint16_t type)
{
    if (type <= MSG_TYPE_MAX)
        memset(&table[type], 0, sizeof(table[type]));
}

int msg_dispatch(uint16_t type, int from, const void *payload, size_t len)
{
    if (type > MSG_TYPE_MAX || !table[type].fn) {
        unknown++;
        log_warn("message of type %u from %d (%zu bytes): no module takes it; dropped", (unsigned)type, from, len);
        return -ENOENT;
    }
    table[type].fn(table[type].arg, from, payload, len);
    return 0;
}

uint64_t msg_unknown(void)
{
    return unknown;
}

void msg_set_transport(const struct msg_transport *t)
{
    have_transport = t != NULL;
    if (t)
        transport = *t;
    else
        memset(&transport, 0, sizeof(transport));
}

int msg_send(uint16_t type, const void *payload, size_t len)
{
    if (!have_transport || !transport.send)
        return -ESHUTDOWN;
    if (len > 65536)
        return -EMSGSIZE;
    return transport.send(transport.ctx, type, payload, len);
}

int msg_broadcast(uint16_t type, int except, unsigned flags, const void *payload, size_t len)
{
    if (!have_transport || !transport.broadcast)
        return -ESHUTDOWN;
    if (len > 65536)
        return -EMSGSIZE;
    return transport.broadcast(transport.ctx, type, except, flags, payload, len);
}

void msg_reset(void)
{
    memset(table, 0, sizeof(table));
    msg_set_transport(NULL);
    unknown = 0;
}
