/* Messages by registered type (core/msg.h), through the IPC framing
 * (proc/ipc.h), and the master's hooks (proc/hooks.h). */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "core/msg.h"
#include "proc/hooks.h"
#include "proc/ipc.h"

struct seen {
    int calls, from;
    char data[64];
    size_t len;
};

static void record(void *arg, int from, const void *payload, size_t len)
{
    struct seen *s = arg;
    s->calls++;
    s->from = from;
    s->len = len < sizeof(s->data) ? len : sizeof(s->data);
    memcpy(s->data, payload, s->len);
}

static void setup(void)
{
    msg_reset();
}

TestSuite(msg, .init = setup);

Test(msg, a_registered_type_reaches_its_handler)
{
    struct seen a = {0}, b = {0};
    cr_assert_eq(msg_register(7, "seven", record, &a), 0);
    cr_assert_eq(msg_register(8, "eight", record, &b), 0);
    cr_assert_eq(msg_dispatch(8, 3, "hello", 5), 0);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.from, 3);
    cr_assert_eq(b.len, 5);
    cr_assert_eq(memcmp(b.data, "hello", 5), 0);
    cr_assert_eq(a.calls, 0, "the other type's handler is not called");
    cr_assert_eq(msg_unknown(), 0);
}

Test(msg, an_unknown_type_is_counted_and_dropped)
{
    struct seen a = {0};
    cr_assert_eq(msg_register(7, "seven", record, &a), 0);
    cr_assert_eq(msg_dispatch(9, 0, "x", 1), -ENOENT);
    cr_assert_eq(msg_dispatch(200, 0, "x", 1), -ENOENT);
    cr_assert_eq(msg_unknown(), 2);
    cr_assert_eq(a.calls, 0);
}

Test(msg, a_second_registration_of_a_type_is_refused)
{
    struct seen a = {0}, b = {0};
    cr_assert_eq(msg_register(11, "first", record, &a), 0);
    cr_assert_eq(msg_register(11, "second", record, &b), -EEXIST);
    msg_dispatch(11, 1, "y", 1);
    cr_assert_eq(a.calls, 1, "the first handler keeps the type");
    cr_assert_eq(b.calls, 0);
    msg_unregister(11);
    cr_assert_eq(msg_register(11, "second", record, &b), 0, "free again once unregistered");
}

Test(msg, the_process_protocols_types_are_not_registrable)
{
    struct seen a = {0};
    cr_assert_eq(msg_register(0, "zero", record, &a), -EINVAL);
    cr_assert_eq(msg_register(IPC_READY, "ready", record, &a), -EINVAL);
    cr_assert_eq(msg_register(IPC_STOP, "stop", record, &a), -EINVAL);
    cr_assert_eq(msg_register(IPC_RECYCLE, "recycle", record, &a), -EINVAL);
    cr_assert_eq(msg_register(IPC_CONN, "conn", record, &a), -EINVAL);
    cr_assert_eq(msg_register(IPC_FAILED, "failed", record, &a), -EINVAL);
    cr_assert_eq(msg_register(MSG_TYPE_MAX + 1, "big", record, &a), -EINVAL);
    cr_assert_eq(msg_register(MSG_TYPE_MAX, "max", record, &a), 0);
}

/* What a worker's or the master's channel reader does with a module's type. */
static void to_dispatch(void *arg, const struct ipc_header *h, const char *payload)
{
    (void)arg;
    msg_dispatch(h->type, h->worker, payload, h->len);
}

static size_t frame(char *buf, uint16_t type, uint16_t worker, const char *payload)
{
    struct ipc_header h = {.type = type, .worker = worker, .len = (uint32_t)strlen(payload)};
    memcpy(buf, &h, sizeof(h));
    memcpy(buf + sizeof(h), payload, h.len);
    return sizeof(h) + h.len;
}

Test(msg, framed_messages_reach_their_handlers_across_reads)
{
    struct seen a = {0}, b = {0};
    cr_assert_eq(msg_register(5, "five", record, &a), 0);
    cr_assert_eq(msg_register(6, "six", record, &b), 0);
    char bytes[256];
    size_t n = frame(bytes, 5, 2, "one");
    n += frame(bytes + n, 6, 4, "two!");
    n += frame(bytes + n, 12, 1, "nobody");
    struct ipc_reader r;
    ipc_reader_init(&r, to_dispatch, NULL);
    cr_assert_eq(ipc_reader_feed(&r, bytes, 10), 0); /* a header and a piece */
    cr_assert_eq(a.calls, 0);
    cr_assert_eq(ipc_reader_feed(&r, bytes + 10, n - 10), 0);
    ipc_reader_free(&r);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(a.from, 2);
    cr_assert_eq(memcmp(a.data, "one", 3), 0);
    cr_assert_eq(b.calls, 1);
    cr_assert_eq(b.from, 4);
    cr_assert_eq(b.len, 4);
    cr_assert_eq(msg_unknown(), 1);
}

static int sent_type, sent_except;
static unsigned sent_flags;
static size_t sent_len;

static int fake_send(void *ctx, uint16_t type, const void *payload, size_t len)
{
    (void)payload;
    *(int *)ctx += 1;
    sent_type = type;
    sent_len = len;
    return 0;
}

static int fake_broadcast(void *ctx, uint16_t type, int except, unsigned flags, const void *payload, size_t len)
{
    (void)payload;
    *(int *)ctx += 100;
    sent_type = type;
    sent_except = except;
    sent_flags = flags;
    sent_len = len;
    return 0;
}

Test(msg, sends_go_through_the_transport_the_process_set)
{
    cr_assert_eq(msg_send(5, "x", 1), -ESHUTDOWN);
    cr_assert_eq(msg_broadcast(6, 1, 0, "x", 1), -ESHUTDOWN);
    int count = 0;
    struct msg_transport t = {.send = fake_send, .broadcast = fake_broadcast, .ctx = &count};
    msg_set_transport(&t);
    cr_assert_eq(msg_send(5, "abc", 3), 0);
    cr_assert_eq(count, 1);
    cr_assert_eq(sent_type, 5);
    cr_assert_eq(sent_len, 3);
    cr_assert_eq(msg_broadcast(7, 2, MSG_TO_ALL, "ab", 2), 0);
    cr_assert_eq(count, 101);
    cr_assert_eq(sent_type, 7);
    cr_assert_eq(sent_except, 2);
    cr_assert_eq(sent_flags, MSG_TO_ALL);
    static char big[65537];
    cr_assert_eq(msg_send(5, big, sizeof(big)), -EMSGSIZE);
    msg_set_transport(NULL);
    cr_assert_eq(msg_send(5, "x", 1), -ESHUTDOWN);
}

/* --- master hooks ---------------------------------------------------------- */

static char trail[64];

static int prep_a(const struct master_env *env)
{
    (void)env;
    strcat(trail, "a");
    return 0;
}

static int prep_b(const struct master_env *env)
{
    (void)env;
    strcat(trail, "b");
    return -1;
}

static void stop_a(void)
{
    strcat(trail, "A");
}

static void stop_b(void)
{
    strcat(trail, "B");
}

static json_t *status_b(void)
{
    return json_string("fine");
}

Test(hooks, called_in_order_and_names_are_unique)
{
    static const struct master_hook a = {.name = "a", .prepare = prep_a, .stop = stop_a};
    static const struct master_hook a2 = {.name = "a", .prepare = prep_a};
    static const struct master_hook b = {.name = "b", .prepare = prep_b, .stop = stop_b, .status = status_b};
    cr_assert_eq(master_hook_add(&a), 0);
    cr_assert_eq(master_hook_add(&a2), -EEXIST);
    cr_assert_eq(master_hook_add(&b), 0);
    struct master_env env = {0};
    cr_assert_eq(master_hooks_prepare(&env), -1, "a failing prepare stops the start");
    master_hooks_stop();
    cr_assert_str_eq(trail, "abBA");
    json_t *st = json_object();
    master_hooks_status(st);
    cr_assert_null(json_object_get(st, "a"), "a hook without status adds no member");
    cr_assert_str_eq(json_string_value(json_object_get(st, "b")), "fine");
    json_decref(st);
}
