/* JSON escaping of untrusted bytes and the bounded access log line. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/jsonw.h"
#include "core/logbuf.h"
#include "http/accesslog.h"
#include "http/reqid.h"

static char out[8192];

static const char *esc(const char *s, size_t n, size_t cap, size_t *consumed)
{
    size_t w = jw_escape(out, cap, s, n, consumed);
    out[w] = '\0';
    return out;
}

Test(jsonw, plain_ascii_passes)
{
    cr_assert_str_eq(esc("/api/products?x=1", 17, 100, NULL), "/api/products?x=1");
}

Test(jsonw, quotes_backslashes_and_controls_are_escaped)
{
    const char in[] = "a\"b\\c\nd\re\tf\x01g\x7fh";
    cr_assert_str_eq(esc(in, sizeof(in) - 1, 100, NULL), "a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u007fh");
}

Test(jsonw, nul_byte_is_escaped)
{
    cr_assert_str_eq(esc("a\0b", 3, 100, NULL), "a\\u0000b");
}

Test(jsonw, valid_utf8_passes_invalid_becomes_replacement)
{
    const char good[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
    cr_assert_str_eq(esc(good, sizeof(good) - 1, 100, NULL), good);
    /* lone continuation, overlong, surrogate, truncated sequence, 0xff */
    const char bad[] = "\x80|\xc0\xaf|\xed\xa0\x80|\xe2\x82|\xff";
    cr_assert_str_eq(esc(bad, sizeof(bad) - 1, 100, NULL),
                     "\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|\\ufffd\\ufffd|\\ufffd");
}

Test(jsonw, bound_never_splits_an_escape_or_a_character)
{
    size_t used;
    /* "ab" fits, the escape of the quote (2 bytes) does not in 3 */
    cr_assert_str_eq(esc("ab\"cd", 5, 3, &used), "ab");
    cr_assert_eq(used, 2);
    /* a 3-byte character does not fit in 2 */
    cr_assert_str_eq(esc("\xe2\x82\xac", 3, 2, &used), "");
    cr_assert_eq(used, 0);
    /* \u0001 needs 6 */
    cr_assert_str_eq(esc("x\x01", 2, 6, &used), "x");
    cr_assert_eq(used, 1);
    /* every cap from 0 to the full length gives a prefix that is valid */
    const char in[] = "a\"\xc3\xa9\x01\xff\\z";
    size_t full = jw_escape(out, sizeof(out), in, sizeof(in) - 1, NULL);
    for (size_t cap = 0; cap <= full; cap++) {
        size_t w = jw_escape(out, cap, in, sizeof(in) - 1, &used);
        cr_assert_leq(w, cap);
        char again[64];
        size_t w2 = jw_escape(again, sizeof(again), in, used, NULL);
        cr_assert_eq(w, w2, "cap %zu: a cut output must be the escape of a prefix", cap);
        cr_assert_eq(memcmp(out, again, w), 0);
    }
}

Test(jsonw, sbuf_builds_strings_and_numbers)
{
    struct sbuf b;
    sbuf_init(&b);
    sbuf_puts(&b, "[");
    sbuf_json_str(&b, "x\"y", 3);
    sbuf_puts(&b, ",");
    sbuf_json_num(&b, 42);
    sbuf_puts(&b, ",");
    sbuf_json_num(&b, 0.125);
    sbuf_printf(&b, ",%d]", 7);
    cr_assert_str_eq(b.data, "[\"x\\\"y\",42,0.125,7]");
    sbuf_free(&b);
}

/* --- the access log line ----------------------------------------------- */

static struct accesslog_fields sample(void)
{
    struct accesslog_fields f = {0};
    f.id = "abc-1", f.id_len = 5;
    f.method = "GET", f.method_len = 3;
    f.path = "/p?q=1", f.path_len = 6;
    f.route = "/p", f.route_len = 2;
    f.client = "127.0.0.1", f.client_len = 9;
    f.user_agent = "ua", f.user_agent_len = 2;
    f.status = 200, f.worker = 3, f.bytes_in = 10, f.bytes_out = 20, f.duration_us = 30;
    f.time.tv_sec = 1795536486, f.time.tv_nsec = 288000000;
    return f;
}

Test(accesslog, line_has_every_field_in_order)
{
    struct accesslog_fields f = sample();
    size_t n = accesslog_format(out, &f);
    out[n] = '\0';
    cr_assert_str_eq(out, "{\"time\":\"2026-11-24T16:08:06.288Z\",\"id\":\"abc-1\",\"method\":\"GET\","
                          "\"path\":\"/p?q=1\",\"route\":\"/p\",\"status\":200,\"bytes_in\":10,\"bytes_out\":20,"
                          "\"duration_us\":30,\"worker\":3,\"client\":\"127.0.0.1\",\"user_agent\":\"ua\","
                          "\"upstream\":null}\n");
}

Test(accesslog, missing_fields_are_null)
{
    struct accesslog_fields f = sample();
    f.route = NULL, f.user_agent = NULL, f.client = NULL, f.path = NULL, f.method = NULL;
    size_t n = accesslog_format(out, &f);
    out[n] = '\0';
    cr_assert(strstr(out, "\"route\":null,"));
    cr_assert(strstr(out, "\"user_agent\":null,"));
    cr_assert(strstr(out, "\"client\":null,"));
    cr_assert(strstr(out, "\"path\":null,"));
}

Test(accesslog, worst_case_line_is_bounded_and_one_line)
{
    static char huge[100000];
    memset(huge, '\x01', sizeof(huge)); /* each byte escapes to 6 */
    struct accesslog_fields f = sample();
    f.path = huge, f.path_len = sizeof(huge);
    f.user_agent = huge, f.user_agent_len = sizeof(huge);
    f.route = huge, f.route_len = sizeof(huge);
    f.method = huge, f.method_len = sizeof(huge);
    f.id = huge, f.id_len = sizeof(huge);
    f.client = huge, f.client_len = sizeof(huge);
    f.upstream = huge, f.upstream_len = sizeof(huge);
    f.bytes_in = f.bytes_out = f.duration_us = UINT64_MAX;
    f.status = 999, f.worker = 63;
    size_t n = accesslog_format(out, &f);
    cr_assert_leq(n, LOGBUF_LINE_MAX);
    cr_assert_eq(out[n - 1], '\n');
    cr_assert_null(memchr(out, '\n', n - 1));
    cr_assert_eq(out[n - 2], '}');
}

Test(reqid, validation)
{
    cr_assert(reqid_valid("abc-123", 7));
    cr_assert(reqid_valid("f47ac10b-58cc-4372-a567-0e02b2c3d479", 36));
    cr_assert(reqid_valid("Root=1-5759e988:x/y+z@w.v_u", 27));
    cr_assert_not(reqid_valid("", 0));
    cr_assert_not(reqid_valid("a b", 3));
    cr_assert_not(reqid_valid("a\"b", 3));
    cr_assert_not(reqid_valid("a\nb", 3));
    cr_assert_not(reqid_valid("a\0b", 3));
    char long_id[REQID_MAX + 1];
    memset(long_id, 'a', sizeof(long_id));
    cr_assert(reqid_valid(long_id, REQID_MAX));
    cr_assert_not(reqid_valid(long_id, REQID_MAX + 1));
}

Test(reqid, generated_ids_are_valid_distinct_and_count_up)
{
    char a[REQID_GEN_LEN + 1] = {0}, b[REQID_GEN_LEN + 1] = {0};
    reqid_init(5);
    reqid_next(a);
    for (int i = 0; i < 4095; i++)
        reqid_next(b);
    reqid_next(b);
    cr_assert(reqid_valid(a, REQID_GEN_LEN));
    cr_assert_str_neq(a, b);
    cr_assert_eq(memcmp(a, b, 12), 0, "same prefix and worker: %s %s", a, b);
    cr_assert_eq(strncmp(a + 9, "05-", 3), 0, "%s", a);
    cr_assert_str_eq(a + 12, "0000000001");
    cr_assert_str_eq(b + 12, "0000001001", "4097 in hex: %s", b);
}
