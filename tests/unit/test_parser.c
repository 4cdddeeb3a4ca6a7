/*
 * Unit tests for src/http/parser.c: tables of valid and invalid request
 * heads, each parsed whole, at every split point (with and without
 * last_len), and placed right before an unreadable page so that any read
 * past the input crashes; the chunked decoder fed whole, in two pieces at
 * every split point and byte by byte; Host validation; field lookup.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http/parser.h"

#define NFIELDS 128

struct bytes {
    const char *p;
    size_t n;
};
#define B(s) {(s), sizeof(s) - 1}

static const struct http_limits def_limits = {
    .max_uri = 8192, .max_head = 16384, .max_headers = 100, .max_body = 1 << 20};
static const struct http_limits small_limits = {
    .max_uri = 16, .max_head = 96, .max_headers = 3, .max_body = 10};

/* No body limit: a length too large for int64 must still not pass. */
static const struct http_limits unlimited_body = {
    .max_uri = 8192, .max_head = 16384, .max_headers = 100, .max_body = UINT64_MAX};

static struct http_header fields[NFIELDS];

static void req_init(struct http_request *req)
{
    memset(req, 0, sizeof(*req));
    req->headers = fields;
    req->headers_cap = NFIELDS;
}

static ssize_t parse(const char *buf, size_t len, size_t last_len, const struct http_limits *lim,
                     struct http_request *req)
{
    req_init(req);
    return http_parse_request(buf, len, last_len, lim ? lim : &def_limits, req);
}

/*
 * Guard page: the input is copied so that its last byte sits right before a
 * PROT_NONE page, so reading one byte too far is a SIGSEGV. The area is
 * writable (the chunked decoder works in place).
 */
#define GUARD_AREA (256 * 1024)

static char *guard_base;

static char *guard_place(const void *src, size_t n)
{
    if (!guard_base) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        char *m = mmap(NULL, GUARD_AREA + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        cr_assert(m != MAP_FAILED, "mmap failed");
        cr_assert(mprotect(m + GUARD_AREA, page, PROT_NONE) == 0, "mprotect failed");
        guard_base = m;
    }
    cr_assert(n <= GUARD_AREA, "input of %zu bytes does not fit the guard area", n);
    char *dst = guard_base + GUARD_AREA - n;
    memmove(dst, src, n);
    return dst;
}

/* ---------------------------------------------------------------------- */
/* Valid requests                                                          */

struct want_field {
    const char *name, *value;
};

struct valid_case {
    const char *name;
    struct bytes head;  /* the head: the parse must return its length */
    const char *after;  /* bytes that follow it (body, next request) */
    enum http_method method;
    const char *method_str;
    enum http_target_form form;
    const char *target, *path, *query, *authority, *host; /* NULL: absent */
    int minor;
    int64_t content_length;
    int chunked, keep_alive, expect_continue, upgrade;
    struct want_field fields[6];
};

static const struct valid_case valid_cases[] = {
    {"simple GET", B("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "example.com", 1, -1, 0, 1, 0, 0,
     {{"Host", "example.com"}}},
    {"path and query", B("GET /a/b?c=d&e=%20 HTTP/1.1\r\nHost: h\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/a/b?c=d&e=%20", "/a/b", "c=d&e=%20", NULL, "h", 1, -1, 0, 1, 0, 0,
     {{"Host", "h"}}},
    {"empty query", B("GET /x? HTTP/1.1\r\nHost: h\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/x?", "/x", "", NULL, "h", 1, -1, 0, 1, 0, 0,
     {{"Host", "h"}}},
    {"absolute form", B("GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ABSOLUTE, "http://example.com/a?b", "/a", "b", "example.com", "example.com",
     1, -1, 0, 1, 0, 0, {{"Host", "example.com"}}},
    {"absolute form, https, port, no path",
     B("GET HTTPS://example.com:8443?q HTTP/1.1\r\nHost: example.com:8443\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ABSOLUTE, "HTTPS://example.com:8443?q", "/", "q", "example.com:8443",
     "example.com:8443", 1, -1, 0, 1, 0, 0, {{"Host", "example.com:8443"}}},
    {"absolute form, no path or query", B("GET http://[::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ABSOLUTE, "http://[::1]:80", "/", NULL, "[::1]:80", "[::1]:80",
     1, -1, 0, 1, 0, 0, {{"Host", "[::1]:80"}}},
    {"asterisk form", B("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), "",
     HTTP_OPTIONS, "OPTIONS", HTTP_FORM_ASTERISK, "*", NULL, NULL, NULL, "h", 1, -1, 0, 1, 0, 0,
     {{"Host", "h"}}},
    {"authority form", B("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), "",
     HTTP_CONNECT, "CONNECT", HTTP_FORM_AUTHORITY, "example.com:443", NULL, NULL, "example.com:443",
     "example.com:443", 1, -1, 0, 1, 0, 0, {{"Host", "example.com:443"}}},
    {"authority form, IPv6", B("CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"), "",
     HTTP_CONNECT, "CONNECT", HTTP_FORM_AUTHORITY, "[::1]:8443", NULL, NULL, "[::1]:8443", "[::1]:8443", 1, -1, 0,
     1, 0, 0, {{"Host", "[::1]:8443"}}},
    {"other methods", B("PROPFIND /d HTTP/1.1\r\nHost: h\r\n\r\n"), "",
     HTTP_OTHER, "PROPFIND", HTTP_FORM_ORIGIN, "/d", "/d", NULL, NULL, "h", 1, -1, 0, 1, 0, 0,
     {{"Host", "h"}}},
    {"HEAD", B("HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n"), "",
     HTTP_HEAD, "HEAD", HTTP_FORM_ORIGIN, "/h", "/h", NULL, NULL, "h", 1, -1, 0, 1, 0, 0, {{"Host", "h"}}},
    {"PATCH", B("PATCH /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"), "",
     HTTP_PATCH, "PATCH", HTTP_FORM_ORIGIN, "/p", "/p", NULL, NULL, "h", 1, 0, 0, 1, 0, 0,
     {{"Host", "h"}, {"Content-Length", "0"}}},
    {"1.0, default close, no Host needed", B("GET /old HTTP/1.0\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/old", "/old", NULL, NULL, NULL, 0, -1, 0, 0, 0, 0, {{0}}},
    {"1.0 + keep-alive", B("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, NULL, 0, -1, 0, 1, 0, 0,
     {{"Connection", "Keep-Alive"}}},
    {"1.0 + keep-alive, close", B("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, NULL, 0, -1, 0, 0, 0, 0,
     {{"Connection", "keep-alive, close"}}},
    {"1.0 ignores Expect", B("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"), "hi",
     HTTP_PUT, "PUT", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, NULL, 0, 2, 0, 0, 0, 0,
     {{"Expect", "100-continue"}, {"Content-Length", "2"}}},
    {"1.1 + close", B("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 0, 0, 0, 0,
     {{"Host", "h"}, {"Connection", "close"}}},
    {"1.1 token list with Close", B("GET / HTTP/1.1\r\nConnection: foo, Close\r\nHost: h\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 0, 0, 0, 0,
     {{"Connection", "foo, Close"}, {"Host", "h"}}},
    {"1.1 close-ish tokens keep alive", B("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed, xclose, ,\r\n\r\n"),
     "", HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 0, 1, 0, 0,
     {{"Host", "h"}, {"Connection", "closed, xclose, ,"}}},
    {"1.1, close in a second Connection field",
     B("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nconnection: CLOSE\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 0, 0, 0, 0,
     {{"Host", "h"}, {"Connection", "keep-alive"}, {"connection", "CLOSE"}}},
    {"minor version 9 acts as 1.1", B("GET / HTTP/1.9\r\nHost: h\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 9, -1, 0, 1, 0, 0, {{"Host", "h"}}},
    {"whitespace trimmed, empty value, obs-text",
     B("GET / HTTP/1.1\r\nHost:h\r\nX-A: \t a b \t \r\nX-Empty:\r\nX-Sp:   \r\nX-Obs: caf\xc3\xa9\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 0, 1, 0, 0,
     {{"Host", "h"}, {"X-A", "a b"}, {"X-Empty", ""}, {"X-Sp", ""}, {"X-Obs", "caf\xc3\xa9"}}},
    {"token characters in a field name", B("GET / HTTP/1.1\r\nHost: h\r\n!#$%&'*+-.^_`|~09az: v\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 0, 1, 0, 0,
     {{"Host", "h"}, {"!#$%&'*+-.^_`|~09az", "v"}}},
    {"LF-only line endings", B("GET /lf HTTP/1.1\nHost: h\nA: b\n\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/lf", "/lf", NULL, NULL, "h", 1, -1, 0, 1, 0, 0,
     {{"Host", "h"}, {"A", "b"}}},
    {"mixed line endings", B("GET / HTTP/1.1\nHost: h\r\nA: b\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 0, 1, 0, 0,
     {{"Host", "h"}, {"A", "b"}}},
    {"empty lines before the request line", B("\r\n\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 0, 1, 0, 0, {{"Host", "h"}}},
    {"Content-Length with body after",
     B("POST /api HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"), "hello",
     HTTP_POST, "POST", HTTP_FORM_ORIGIN, "/api", "/api", NULL, NULL, "h", 1, 5, 0, 1, 0, 0,
     {{"Host", "h"}, {"Content-Length", "5"}}},
    {"Content-Length list of equal values, twice",
     B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007 ,7\r\ncontent-length: 7\r\n\r\n"), "1234567",
     HTTP_POST, "POST", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, 7, 0, 1, 0, 0,
     {{"Host", "h"}, {"Content-Length", "007 ,7"}, {"content-length", "7"}}},
    {"Content-Length at max_body", B("PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048576\r\n\r\n"), "",
     HTTP_PUT, "PUT", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, 1048576, 0, 1, 0, 0,
     {{"Host", "h"}, {"Content-Length", "1048576"}}},
    {"chunked", B("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"), "0\r\n\r\n",
     HTTP_POST, "POST", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 1, 1, 0, 0,
     {{"Host", "h"}, {"Transfer-Encoding", "Chunked"}}},
    {"chunked, empty list elements", B("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked ,\r\n\r\n"),
     "", HTTP_POST, "POST", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 1, 1, 0, 0,
     {{"Host", "h"}, {"Transfer-Encoding", ", chunked ,"}}},
    {"Expect: 100-continue", B("PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"),
     "abc", HTTP_PUT, "PUT", HTTP_FORM_ORIGIN, "/u", "/u", NULL, NULL, "h", 1, 3, 0, 1, 1, 0,
     {{"Host", "h"}, {"Expect", "100-Continue"}, {"Content-Length", "3"}}},
    {"upgrade", B("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"),
     "", HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/ws", "/ws", NULL, NULL, "h", 1, -1, 0, 1, 0, 1,
     {{"Host", "h"}, {"Connection", "keep-alive, Upgrade"}, {"Upgrade", "websocket"}}},
    {"Connection: upgrade without Upgrade", B("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "h", 1, -1, 0, 1, 0, 0,
     {{"Host", "h"}, {"Connection", "upgrade"}}},
    {"empty Host", B("GET / HTTP/1.1\r\nHost:\r\n\r\n"), "",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/", "/", NULL, NULL, "", 1, -1, 0, 1, 0, 0, {{"Host", ""}}},
    {"pipelined: only the first head", B("GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"),
     "GET /2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
     HTTP_GET, "GET", HTTP_FORM_ORIGIN, "/1", "/1", NULL, NULL, "h", 1, -1, 0, 1, 0, 0, {{"Host", "h"}}},
    {"pipelined after a body", B("POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n"),
     "abGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
     HTTP_POST, "POST", HTTP_FORM_ORIGIN, "/1", "/1", NULL, NULL, "h", 1, 2, 0, 1, 0, 0,
     {{"Host", "h"}, {"Content-Length", "2"}}},
};
#define NVALID (sizeof(valid_cases) / sizeof(valid_cases[0]))

static size_t nwant(const struct valid_case *c)
{
    size_t n = 0;
    while (n < 6 && c->fields[n].name)
        n++;
    return n;
}

/* A slice equals `want` (NULL: the pointer is NULL) and lies in buf[0..head). */
static void expect_slice(const char *what, const struct valid_case *c, const char *p, size_t n,
                         const char *want, const char *buf, size_t head)
{
    if (!want) {
        cr_expect_null(p, "%s: %s should be absent", c->name, what);
        return;
    }
    cr_assert_not_null(p, "%s: %s missing", c->name, what);
    cr_expect(n == strlen(want) && memcmp(p, want, n) == 0, "%s: %s is \"%.*s\", want \"%s\"", c->name,
              what, (int)n, p, want);
    cr_expect(p >= buf && p + n <= buf + head, "%s: %s points outside the head", c->name, what);
}

/* Checks one parse of the case placed at `buf` against the table. */
static void check_valid(const struct valid_case *c, const char *buf, ssize_t r, const struct http_request *req)
{
    size_t head = c->head.n;
    cr_assert_eq(r, (ssize_t)head, "%s: returned %zd, want %zu (status %d %s)", c->name, r, head,
                 req->status, req->reason ? req->reason : "");
    cr_expect_eq(req->method, c->method, "%s: method %d", c->name, req->method);
    expect_slice("method", c, req->method_str, req->method_len, c->method_str, buf, head);
    cr_expect_eq(req->form, c->form, "%s: form %d, want %d", c->name, req->form, c->form);
    expect_slice("target", c, req->target, req->target_len, c->target, buf, head);
    expect_slice("path", c, req->path, req->path_len, c->path, buf, head);
    expect_slice("query", c, req->query, req->query_len, c->query, buf, head);
    expect_slice("authority", c, req->authority, req->authority_len, c->authority, buf, head);
    expect_slice("host", c, req->host, req->host_len, c->host, buf, head);
    cr_expect_eq(req->minor_version, c->minor, "%s: minor %d", c->name, req->minor_version);
    cr_expect_eq(req->content_length, c->content_length, "%s: content_length %lld", c->name,
                 (long long)req->content_length);
    cr_expect_eq(req->chunked, (unsigned)c->chunked, "%s: chunked", c->name);
    cr_expect_eq(req->keep_alive, (unsigned)c->keep_alive, "%s: keep_alive", c->name);
    cr_expect_eq(req->expect_continue, (unsigned)c->expect_continue, "%s: expect_continue", c->name);
    cr_expect_eq(req->upgrade, (unsigned)c->upgrade, "%s: upgrade", c->name);
    size_t n = nwant(c);
    cr_assert_eq(req->nheaders, n, "%s: %zu fields, want %zu", c->name, req->nheaders, n);
    for (size_t i = 0; i < n; i++) {
        char what[48];
        snprintf(what, sizeof(what), "field %zu name", i);
        expect_slice(what, c, req->headers[i].name, req->headers[i].name_len, c->fields[i].name, buf, head);
        snprintf(what, sizeof(what), "field %zu value", i);
        expect_slice(what, c, req->headers[i].value, req->headers[i].value_len, c->fields[i].value, buf,
                     head);
    }
}

/* The case's bytes: head then what follows. */
static size_t valid_bytes(const struct valid_case *c, char *out, size_t cap)
{
    size_t n = c->head.n + strlen(c->after);
    cr_assert(n <= cap, "%s: too long", c->name);
    memcpy(out, c->head.p, c->head.n);
    memcpy(out + c->head.n, c->after, strlen(c->after));
    return n;
}

Test(parser_valid, table_whole)
{
    char raw[1024];
    for (size_t i = 0; i < NVALID; i++) {
        const struct valid_case *c = &valid_cases[i];
        size_t n = valid_bytes(c, raw, sizeof(raw));
        struct http_request req;
        check_valid(c, raw, parse(raw, n, 0, NULL, &req), &req);
    }
}

/* Every prefix shorter than the head is INCOMPLETE; every longer one (the
 * head plus part of what follows) gives the same answer as the whole. */
Test(parser_valid, every_split_point)
{
    char raw[1024];
    for (size_t i = 0; i < NVALID; i++) {
        const struct valid_case *c = &valid_cases[i];
        size_t n = valid_bytes(c, raw, sizeof(raw));
        for (size_t k = 0; k <= n; k++) {
            struct http_request req;
            ssize_t r = parse(raw, k, 0, NULL, &req);
            if (k < c->head.n)
                cr_assert_eq(r, HTTP_INCOMPLETE, "%s: prefix of %zu bytes gave %zd (status %d)", c->name, k,
                             r, req.status);
            else
                check_valid(c, raw, r, &req);
        }
    }
}

/* Bytes arriving one at a time, each call told what was already seen. */
Test(parser_valid, incremental_with_last_len)
{
    char raw[1024];
    for (size_t i = 0; i < NVALID; i++) {
        const struct valid_case *c = &valid_cases[i];
        size_t n = valid_bytes(c, raw, sizeof(raw));
        size_t seen = 0;
        for (size_t k = 1; k <= n; k++) {
            struct http_request req;
            ssize_t r = parse(raw, k, seen, NULL, &req);
            if (k < c->head.n) {
                cr_assert_eq(r, HTTP_INCOMPLETE, "%s: %zu bytes after %zu gave %zd", c->name, k, seen, r);
                seen = k;
            } else {
                check_valid(c, raw, r, &req);
            }
        }
        /* Larger steps: every pair (seen, whole). */
        for (size_t k = 1; k < c->head.n; k++) {
            struct http_request req;
            check_valid(c, raw, parse(raw, n, k, NULL, &req), &req);
        }
    }
}

Test(parser_valid, guard_page)
{
    char raw[1024];
    for (size_t i = 0; i < NVALID; i++) {
        const struct valid_case *c = &valid_cases[i];
        size_t n = valid_bytes(c, raw, sizeof(raw));
        size_t seen = 0;
        for (size_t k = 0; k <= n; k++) {
            const char *g = guard_place(raw, k);
            struct http_request req;
            ssize_t r = parse(g, k, 0, NULL, &req);
            ssize_t rl = parse(g, k, seen, NULL, &req);
            if (k < c->head.n) {
                cr_assert_eq(r, HTTP_INCOMPLETE, "%s: guarded prefix %zu gave %zd", c->name, k, r);
                cr_assert_eq(rl, HTTP_INCOMPLETE, "%s: guarded prefix %zu after %zu gave %zd", c->name, k,
                             seen, rl);
                seen = k;
            } else {
                check_valid(c, g, rl, &req);
                check_valid(c, g, parse(g, k, 0, NULL, &req), &req);
            }
        }
    }
}

/* After the first head of a pipeline, the rest parses as the second. */
Test(parser_valid, pipelined_second_request)
{
    static const char first[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    static const char two[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /2?x HTTP/1.0\r\n\r\n";
    const ssize_t n1 = sizeof(first) - 1, n = sizeof(two) - 1;
    struct http_request req;
    cr_assert_eq(parse(two, (size_t)n, 0, NULL, &req), n1);
    ssize_t r = parse(two + n1, (size_t)(n - n1), 0, NULL, &req);
    cr_assert_eq(r, n - n1);
    cr_expect_eq(req.method, HTTP_HEAD);
    cr_expect(req.path_len == 2 && memcmp(req.path, "/2", 2) == 0);
    cr_expect(req.query_len == 1 && req.query[0] == 'x');
    cr_expect_eq(req.keep_alive, 0);
}

/* ---------------------------------------------------------------------- */
/* Invalid requests                                                        */

struct invalid_case {
    const char *name;
    struct bytes raw;
    int status;
    const struct http_limits *lim; /* NULL: def_limits */
};

static const struct invalid_case invalid_cases[] = {
    /* request line */
    {"empty method", B(" / HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"no target", B("GET HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"two spaces", B("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"tab separator", B("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"bad method char", B("G(T / HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"bad method char 2", B("GET/ / HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"missing version", B("GET /\r\nHost: h\r\n\r\n"), 400, NULL},
    {"missing version after space", B("GET / \r\nHost: h\r\n\r\n"), 400, NULL},
    {"lowercase version", B("GET / http/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"version trailing space", B("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), 400, NULL},
    {"version trailing garbage", B("GET / HTTP/1.1x\r\nHost: h\r\n\r\n"), 400, NULL},
    {"version two-digit minor", B("GET / HTTP/1.10\r\nHost: h\r\n\r\n"), 400, NULL},
    {"version no minor", B("GET / HTTP/1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"version letters", B("GET / HTTP/x.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"bare CR in request line", B("GET / HTTP/1.1\rHost: h\r\n\r\n"), 400, NULL},
    {"bare CR in target", B("GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"control 0x01 in target", B("GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"DEL in target", B("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"NUL in target", B("GET /a\0 HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"target not origin form", B("GET a/b HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"absolute form, other scheme", B("GET ftp://h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"absolute form, empty authority", B("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"absolute form, userinfo", B("GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"asterisk with GET", B("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"CONNECT with a path", B("CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"CONNECT without a port", B("CONNECT h HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"CONNECT with an empty port", B("CONNECT h: HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"CONNECT without a host", B("CONNECT :443 HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"CONNECT, IPv6 without a port", B("CONNECT [::1] HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"too many empty lines first", B("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"bare CR before request line", B("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n"), 400, NULL},
    {"HTTP/2.0", B("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505, NULL},
    {"HTTP/0.9", B("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), 505, NULL},
    {"HTTP/3.0", B("GET / HTTP/3.0\r\n\r\n"), 505, NULL},
    /* fields */
    {"missing Host in 1.1", B("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), 400, NULL},
    {"repeated Host", B("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400, NULL},
    {"repeated Host in 1.0", B("GET / HTTP/1.0\r\nhost: a\r\nHOST: b\r\n\r\n"), 400, NULL},
    {"Host with a space", B("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400, NULL},
    {"Host with a path", B("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400, NULL},
    {"Host with a long port", B("GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n"), 400, NULL},
    {"Host, open bracket", B("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"), 400, NULL},
    {"Content-Length and Transfer-Encoding",
     B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), 400, NULL},
    {"Transfer-Encoding and Content-Length",
     B("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"), 400, NULL},
    {"conflicting Content-Length list", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n"), 400, NULL},
    {"conflicting Content-Length fields",
     B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), 400, NULL},
    {"non-numeric Content-Length", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n"), 400, NULL},
    {"signed Content-Length", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n"), 400, NULL},
    {"negative Content-Length", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"), 400, NULL},
    {"empty Content-Length", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n"), 400, NULL},
    {"hex Content-Length", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n"), 400, NULL},
    {"Content-Length list, empty element", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ,1\r\n\r\n"), 400,
     NULL},
    {"Content-Length list, trailing comma", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1,\r\n\r\n"), 400,
     NULL},
    {"Content-Length list, two commas", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1,,1\r\n\r\n"), 400,
     NULL},
    {"obs-fold", B("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"), 400, NULL},
    {"obs-fold with tab", B("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n"), 400, NULL},
    {"whitespace before the first field", B("GET / HTTP/1.1\r\n Host: h\r\n\r\n"), 400, NULL},
    {"space before colon", B("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), 400, NULL},
    {"empty field name", B("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n"), 400, NULL},
    {"no colon", B("GET / HTTP/1.1\r\nHost: h\r\nnocolon\r\n\r\n"), 400, NULL},
    {"bad char in field name", B("GET / HTTP/1.1\r\nHost: h\r\nX(y): v\r\n\r\n"), 400, NULL},
    {"bare CR in field value", B("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"), 400, NULL},
    {"bare CR at the end of a value", B("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\r\n\r\n"), 400, NULL},
    {"bare CR as the last line", B("GET / HTTP/1.1\r\nHost: h\r\n\rX\r\n\r\n"), 400, NULL},
    {"NUL in field value", B("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"), 400, NULL},
    {"control byte in field value", B("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n"), 400, NULL},
    {"DEL in field value", B("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n"), 400, NULL},
    {"chunked not last", B("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 400, NULL},
    {"chunked twice", B("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
     400, NULL},
    {"empty Transfer-Encoding", B("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n"), 400, NULL},
    {"Transfer-Encoding in 1.0", B("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400, NULL},
    {"gzip", B("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"), 501, NULL},
    {"gzip, chunked", B("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501, NULL},
    {"Expect: something else", B("PUT / HTTP/1.1\r\nHost: h\r\nExpect: something-else\r\n\r\n"), 417, NULL},
    /* limits */
    {"Content-Length over max_body", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n"), 413,
     &small_limits},
    {"Content-Length over max_body, default", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n"),
     413, NULL},
    {"Content-Length over int64", B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n"),
     413, NULL},
    {"Content-Length over int64, no body limit",
     B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n"), 413, &unlimited_body},
    {"Content-Length wrapping to 1 in 64 bits",
     B("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551617\r\n\r\n"), 413, NULL},
    {"target over max_uri", B("GET /0123456789abcdef HTTP/1.1\r\nHost: h\r\n\r\n"), 414, &small_limits},
    {"head over max_head",
     B("GET / HTTP/1.1\r\nHost: h\r\nX-Long: 0123456789012345678901234567890123456789012345678901234567890123456789"
       "\r\n\r\n"), 431, &small_limits},
    {"more fields than max_headers", B("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"), 431,
     &small_limits},
    {"long method", B("ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJ / HTTP/1.1\r\nHost: h\r\n\r\n"), 501, NULL},
};
#define NINVALID (sizeof(invalid_cases) / sizeof(invalid_cases[0]))

static const struct http_limits *lim_of(const struct invalid_case *c)
{
    return c->lim ? c->lim : &def_limits;
}

/* A prefix (or the whole, when `whole`) of an invalid head: INCOMPLETE or the same error. */
static void check_invalid(const struct invalid_case *c, const char *what, size_t k, ssize_t r,
                          const struct http_request *req, int whole)
{
    if (whole || r != HTTP_INCOMPLETE) {
        cr_assert_eq(r, HTTP_ERROR, "%s: %s %zu bytes gave %zd, want an error", c->name, what, k, r);
        cr_assert_eq(req->status, c->status, "%s: %s %zu bytes gave %d (%s), want %d", c->name, what, k,
                     req->status, req->reason, c->status);
        cr_expect(req->reason && req->reason[0], "%s: no reason", c->name);
    }
}

Test(parser_invalid, table_whole)
{
    for (size_t i = 0; i < NINVALID; i++) {
        const struct invalid_case *c = &invalid_cases[i];
        struct http_request req;
        check_invalid(c, "whole", c->raw.n, parse(c->raw.p, c->raw.n, 0, lim_of(c), &req), &req, 1);
    }
}

Test(parser_invalid, every_split_point)
{
    for (size_t i = 0; i < NINVALID; i++) {
        const struct invalid_case *c = &invalid_cases[i];
        size_t seen = 0;
        for (size_t k = 0; k < c->raw.n; k++) {
            struct http_request req;
            check_invalid(c, "prefix", k, parse(c->raw.p, k, 0, lim_of(c), &req), &req, 0);
            ssize_t r = parse(c->raw.p, k, seen, lim_of(c), &req);
            check_invalid(c, "prefix after last_len", k, r, &req, 0);
            if (r == HTTP_INCOMPLETE)
                seen = k;
        }
        struct http_request req;
        check_invalid(c, "whole after last_len", c->raw.n, parse(c->raw.p, c->raw.n, seen, lim_of(c), &req),
                      &req, 1);
    }
}

Test(parser_invalid, guard_page)
{
    for (size_t i = 0; i < NINVALID; i++) {
        const struct invalid_case *c = &invalid_cases[i];
        for (size_t k = 0; k <= c->raw.n; k++) {
            const char *g = guard_place(c->raw.p, k);
            struct http_request req;
            check_invalid(c, "guarded", k, parse(g, k, 0, lim_of(c), &req), &req, k == c->raw.n);
            if (k > 0)
                check_invalid(c, "guarded after last_len", k, parse(g, k, k - 1, lim_of(c), &req), &req, 0);
        }
    }
}

/* Builds "GET <target> HTTP/1.1\r\nHost: h\r\n<n fields of `pad` bytes>\r\n". */
static size_t build_head(char *out, size_t cap, size_t target_len, size_t nfields, size_t pad)
{
    size_t n = (size_t)snprintf(out, cap, "GET /");
    for (size_t i = 1; i < target_len; i++)
        out[n++] = 'a';
    n += (size_t)snprintf(out + n, cap - n, " HTTP/1.1\r\nHost: h\r\n");
    for (size_t f = 0; f < nfields; f++) {
        n += (size_t)snprintf(out + n, cap - n, "X-%zu: ", f);
        for (size_t i = 0; i < pad; i++)
            out[n++] = 'v';
        out[n++] = '\r';
        out[n++] = '\n';
    }
    out[n++] = '\r';
    out[n++] = '\n';
    cr_assert(n < cap);
    return n;
}

/* The default limits, at and just past each edge, with every prefix guarded. */
static void limit_case(size_t target_len, size_t nfields, size_t pad, int status)
{
    static char head[64 * 1024];
    size_t n = build_head(head, sizeof(head), target_len, nfields, pad);
    struct invalid_case c = {"default limit", {head, n}, status, NULL};
    struct http_request req;
    for (size_t k = 0; k < n; k += (k < 200 || n - k < 200) ? 1 : 7) {
        const char *g = guard_place(head, k);
        check_invalid(&c, "guarded limit prefix", k, parse(g, k, 0, NULL, &req), &req, 0);
    }
    const char *g = guard_place(head, n);
    ssize_t r = parse(g, n, 0, NULL, &req);
    if (status == 0)
        cr_assert_eq(r, (ssize_t)n, "target %zu, %zu fields of %zu: %zd (status %d)", target_len, nfields, pad, r,
                     req.status);
    else
        check_invalid(&c, "whole", n, r, &req, 1);
}

Test(parser_invalid, default_limits)
{
    limit_case(8192, 0, 0, 0);
    limit_case(8193, 0, 0, 414);
    limit_case(1, 99, 0, 0);     /* Host + 99 = 100 fields */
    limit_case(1, 100, 0, 431);
    /* 34 bytes of head around one field's value. */
    limit_case(1, 1, 16384 - 34, 0);
    limit_case(1, 1, 16384 - 33, 431);
    limit_case(1, 2, 16384, 431);
}

/* A 431 for a head too large is decided at max_head, whatever follows. */
Test(parser_invalid, head_larger_than_max_head_without_end)
{
    static char big[20000];
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    struct http_request req;
    cr_expect_eq(parse(big, 16384, 0, NULL, &req), HTTP_INCOMPLETE);
    cr_expect_eq(parse(big, 16384, 16000, NULL, &req), HTTP_INCOMPLETE);
    cr_assert_eq(parse(big, 16385, 16384, NULL, &req), HTTP_ERROR);
    cr_expect_eq(req.status, 431);
    cr_assert_eq(parse(big, sizeof(big), 0, NULL, &req), HTTP_ERROR);
    cr_expect_eq(req.status, 431);
}

/* A last_len beyond the input (a caller's slip) must not hide a complete head. */
Test(parser_valid, last_len_beyond_input)
{
    static const char raw[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    struct http_request req;
    cr_expect_eq(parse(raw, sizeof(raw) - 1, sizeof(raw) + 10, NULL, &req), (ssize_t)sizeof(raw) - 1);
    cr_expect_eq(parse(raw, sizeof(raw) - 3, sizeof(raw) - 3, NULL, &req), HTTP_INCOMPLETE,
                 "nothing new since last time: still incomplete");
    cr_expect_eq(parse(raw, sizeof(raw) - 3, sizeof(raw), NULL, &req), HTTP_INCOMPLETE);
}

/* A caller's array smaller than max_headers bounds the fields too. */
Test(parser_invalid, headers_cap)
{
    static const char raw[] = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\n\r\n";
    struct http_header two[2], one[1];
    struct http_request req = {.headers = two, .headers_cap = 2};
    cr_expect_eq(http_parse_request(raw, sizeof(raw) - 1, 0, &def_limits, &req), (ssize_t)sizeof(raw) - 1);
    req = (struct http_request){.headers = one, .headers_cap = 1};
    cr_assert_eq(http_parse_request(raw, sizeof(raw) - 1, 0, &def_limits, &req), HTTP_ERROR);
    cr_expect_eq(req.status, 431);
}

/* ---------------------------------------------------------------------- */
/* Chunked decoder                                                         */

#define FIFTY "01234567890123456789012345678901234567890123456789"

struct chunked_case {
    const char *name;
    struct bytes raw;
    struct bytes decoded;
    size_t rest; /* bytes after the body's end */
};

static const struct chunked_case chunked_valid[] = {
    {"one chunk", B("5\r\nhello\r\n0\r\n\r\n"), B("hello"), 0},
    {"empty body", B("0\r\n\r\n"), B(""), 0},
    {"several chunks, hex cases",
     B("1\r\na\r\nA\r\n0123456789\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n"),
     B("a0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdef0123456789abcde"), 0},
    {"leading zeros", B("0003\r\nabc\r\n000\r\n\r\n"), B("abc"), 0},
    {"extensions", B("3;a=b;c\r\nabc\r\n2 ; x=\"q;\\\"\"\r\nde\r\n0;last\r\n\r\n"), B("abcde"), 0},
    {"whitespace after the size", B("3 \t;a\r\nabc\r\n1\t\r\nd\r\n0 \r\n\r\n"), B("abcd"), 0},
    {"trailers", B("3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other:\tv v \r\n\r\n"), B("abc"), 0},
    {"LF only", B("3\nabc\n0\nT: v\n\n"), B("abc"), 0},
    {"CRLF inside data", B("4\r\n\r\n\r\n\r\n0\r\n\r\n"), B("\r\n\r\n"), 0},
    {"binary data", B("3\r\n\0\xff\n\r\n0\r\n\r\n"), B("\0\xff\n"), 0},
    {"next request after", B("2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n"), B("hi"), 18},
    {"next bytes after trailers", B("0\r\nA: b\r\n\r\nXY"), B(""), 2},
    {"max_body exactly", B("32\r\n" FIFTY "\r\n32\r\n" FIFTY "\r\n0\r\n\r\n"), B(FIFTY FIFTY), 0},
};
#define NCHUNKED (sizeof(chunked_valid) / sizeof(chunked_valid[0]))
#define CH_MAX_BODY 100

static void chunked_init(struct http_chunked *d)
{
    memset(d, 0, sizeof(*d));
    d->max_body = CH_MAX_BODY;
}

/* Checks a complete decode: output at the front, the next bytes after it. */
static void check_decoded(const struct chunked_case *c, const char *buf, size_t len, ssize_t r,
                          const struct http_chunked *d, const char *how)
{
    cr_assert_eq(r, (ssize_t)c->rest, "%s (%s): returned %zd (status %d), want %zu", c->name, how, r,
                 d->status, c->rest);
    cr_assert_eq(len, c->decoded.n, "%s (%s): %zu bytes decoded, want %zu", c->name, how, len, c->decoded.n);
    cr_expect(memcmp(buf, c->decoded.p, len) == 0, "%s (%s): wrong data", c->name, how);
    cr_expect(memcmp(buf + len, c->raw.p + c->raw.n - c->rest, c->rest) == 0, "%s (%s): wrong rest", c->name,
              how);
    cr_expect_eq(d->total, c->decoded.n, "%s (%s): total", c->name, how);
}

Test(chunked, valid_whole_guarded)
{
    for (size_t i = 0; i < NCHUNKED; i++) {
        const struct chunked_case *c = &chunked_valid[i];
        char *g = guard_place(c->raw.p, c->raw.n);
        struct http_chunked d;
        chunked_init(&d);
        size_t len = c->raw.n;
        ssize_t r = http_chunked_decode(&d, g, &len);
        check_decoded(c, g, len, r, &d, "whole");
    }
}

/*
 * Two pieces split at every point, as the connection feeds them: the
 * decoded bytes stay at the front, the next raw bytes are appended right
 * after them and only those are passed in. The buffer ends at the guard.
 */
Test(chunked, every_split_point)
{
    for (size_t i = 0; i < NCHUNKED; i++) {
        const struct chunked_case *c = &chunked_valid[i];
        size_t body_end = c->raw.n - c->rest;
        for (size_t k = 0; k <= c->raw.n; k++) {
            char *g = guard_place(c->raw.p, c->raw.n);
            struct http_chunked d;
            chunked_init(&d);
            size_t first = k;
            ssize_t r = http_chunked_decode(&d, g, &first);
            if (k < body_end) {
                cr_assert_eq(r, HTTP_INCOMPLETE, "%s: first %zu bytes gave %zd", c->name, k, r);
                /* The next raw bytes go right behind the decoded ones, and
                 * the lot ends at the guard page. */
                char tmp[512];
                size_t second = c->raw.n - k;
                memcpy(tmp, g, first);
                memcpy(tmp + first, c->raw.p + k, second);
                g = guard_place(tmp, first + second);
                r = http_chunked_decode(&d, g + first, &second);
                check_decoded(c, g, first + second, r, &d, "two pieces");
            } else {
                cr_assert_eq(r, (ssize_t)(k - body_end), "%s: first %zu bytes gave %zd", c->name, k, r);
                cr_assert_eq(first, c->decoded.n);
                cr_expect(memcmp(g, c->decoded.p, first) == 0, "%s: data at split %zu", c->name, k);
            }
        }
    }
}

/* One byte per call, each prefix also placed before the guard page. */
Test(chunked, byte_by_byte)
{
    char out[512];
    for (size_t i = 0; i < NCHUNKED; i++) {
        const struct chunked_case *c = &chunked_valid[i];
        size_t body_end = c->raw.n - c->rest, have = 0;
        struct http_chunked d;
        chunked_init(&d);
        ssize_t r = HTTP_INCOMPLETE;
        for (size_t k = 0; k < body_end; k++) {
            char *g = guard_place(c->raw.p + k, 1);
            size_t one = 1;
            r = http_chunked_decode(&d, g, &one);
            cr_assert(one <= 1);
            if (one)
                out[have++] = g[0];
            if (k + 1 < body_end)
                cr_assert_eq(r, HTTP_INCOMPLETE, "%s: byte %zu gave %zd", c->name, k, r);
        }
        cr_assert_eq(r, 0, "%s: last byte gave %zd", c->name, r);
        cr_assert_eq(have, c->decoded.n, "%s: %zu bytes", c->name, have);
        cr_expect(memcmp(out, c->decoded.p, have) == 0, "%s: data", c->name);
    }
}

/* A finished decoder refuses more input. */
Test(chunked, done_is_final)
{
    char buf[] = "0\r\n\r\n";
    struct http_chunked d;
    chunked_init(&d);
    size_t len = 5;
    cr_assert_eq(http_chunked_decode(&d, buf, &len), 0);
    len = 5;
    cr_expect_eq(http_chunked_decode(&d, buf, &len), HTTP_ERROR);
}

struct chunked_bad {
    const char *name;
    struct bytes raw;
    int status;
};

static const struct chunked_bad chunked_invalid[] = {
    {"bad hex", B("zz\r\nab\r\n0\r\n\r\n"), 400},
    {"hex then junk", B("3x\r\nabc\r\n0\r\n\r\n"), 400},
    {"hex, space, junk", B("3 x\r\nabc\r\n0\r\n\r\n"), 400},
    {"hex, space, hex", B("3 1\r\nabc\r\n0\r\n\r\n"), 400},
    {"empty size line", B("\r\n3\r\nabc\r\n0\r\n\r\n"), 400},
    {"negative size", B("-1\r\nab\r\n0\r\n\r\n"), 400},
    {"0x prefix", B("0x3\r\nabc\r\n0\r\n\r\n"), 400},
    {"missing CRLF after data", B("3\r\nabcd\r\n0\r\n\r\n"), 400},
    {"data then CR then junk", B("3\r\nabc\rX\n0\r\n\r\n"), 400},
    {"data then space", B("3\r\nabc \r\n0\r\n\r\n"), 400},
    {"too many hex digits", B("00000000000000001\r\na\r\n0\r\n\r\n"), 400},
    {"size overflows", B("ffffffffffffffffff\r\n"), 400},
    {"bare CR after size", B("3\rabc\r\n0\r\n\r\n"), 400},
    {"control byte in extension", B("3;a\x01\r\nabc\r\n0\r\n\r\n"), 400},
    {"bad trailer line", B("3\r\nabc\r\n0\r\nno colon\r\n\r\n"), 400},
    {"trailer with space before colon", B("0\r\nX : v\r\n\r\n"), 400},
    {"trailer obs-fold", B("0\r\nX: v\r\n w\r\n\r\n"), 400},
    {"trailer NUL", B("0\r\nX: a\0\r\n\r\n"), 400},
    {"trailer bare CR", B("0\r\nX: a\rb\r\n\r\n"), 400},
    {"bare CR after data", B("1\r\na\rX0\r\n\r\n"), 400},
    {"bare CR at the end", B("0\r\n\rX"), 400},
    {"size over max_body", B("65\r\n"), 413},
    {"total over max_body", B("32\r\n" FIFTY "\r\n33;x\r\n" FIFTY "x\r\n0\r\n\r\n"), 413},
};
#define NCHUNKED_BAD (sizeof(chunked_invalid) / sizeof(chunked_invalid[0]))

/* Whole, and every prefix before the guard: INCOMPLETE or the same error. */
Test(chunked, invalid_every_prefix_guarded)
{
    for (size_t i = 0; i < NCHUNKED_BAD; i++) {
        const struct chunked_bad *c = &chunked_invalid[i];
        for (size_t k = 0; k <= c->raw.n; k++) {
            char *g = guard_place(c->raw.p, k);
            struct http_chunked d;
            chunked_init(&d);
            size_t len = k;
            ssize_t r = http_chunked_decode(&d, g, &len);
            if (k == c->raw.n || r != HTTP_INCOMPLETE) {
                cr_assert_eq(r, HTTP_ERROR, "%s: %zu bytes gave %zd", c->name, k, r);
                cr_assert_eq(d.status, c->status, "%s: %zu bytes gave %d", c->name, k, d.status);
            }
        }
    }
}

/* A long size or trailer line is cut off rather than buffered without end. */
Test(chunked, long_lines)
{
    static char buf[10000];
    struct http_chunked d;
    chunked_init(&d);
    memset(buf, ' ', sizeof(buf));
    memcpy(buf, "1;", 2);
    size_t len = sizeof(buf);
    cr_assert_eq(http_chunked_decode(&d, buf, &len), HTTP_ERROR);
    cr_expect_eq(d.status, 400);

    chunked_init(&d);
    memset(buf, 'v', sizeof(buf));
    memcpy(buf, "0\r\nX: ", 6);
    len = sizeof(buf);
    cr_assert_eq(http_chunked_decode(&d, buf, &len), HTTP_ERROR);
    cr_expect_eq(d.status, 400);
}

/* The line limit is per line: a long last-chunk line and a long trailer,
 * each well under it, pass together. */
Test(chunked, line_limit_is_per_line)
{
    static char buf[8000];
    size_t n = 0;
    n += (size_t)sprintf(buf, "0;");
    memset(buf + n, 'e', 3000);
    n += 3000;
    n += (size_t)sprintf(buf + n, "\r\nX: ");
    memset(buf + n, 'v', 3000);
    n += 3000;
    n += (size_t)sprintf(buf + n, "\r\n\r\n");
    struct http_chunked d;
    chunked_init(&d);
    char *g = guard_place(buf, n);
    size_t len = n;
    cr_expect_eq(http_chunked_decode(&d, g, &len), 0, "status %d", d.status);
    cr_expect_eq(len, 0);
}

/* ---------------------------------------------------------------------- */
/* Host values, field lookup, method names                                 */

Test(host, valid_and_invalid)
{
    static const struct {
        const char *s;
        int ok;
    } cases[] = {
        {"example.com", 1},  {"example.com:80", 1}, {"a", 1},           {"", 1},
        {"127.0.0.1", 1},    {"127.0.0.1:8080", 1}, {"[::1]", 1},       {"[::1]:8080", 1},
        {"[2001:db8::a]", 1}, {"[::ffff:1.2.3.4]:1", 1}, {"a:", 1},     {"xn--bcher-kva.ch", 1},
        {"my_host-1.local", 1}, {"a%20b", 1},       {"a:65535", 1},     {"a:12345", 1},
        {"a:123456", 0},     {"a b", 0},            {"a:b", 0},         {"a:1:2", 0},
        {"[::1", 0},         {"[]", 0},             {"[::1]x", 0},      {"[::g]", 0},
        {"a/b", 0},          {"a@b", 0},            {"a\tb", 0},        {" a", 0},
        {"a?", 0},           {"[::1]:80a", 0},      {"a\x7f", 0},       {"\xc3\xa9", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].s);
        const char *g = guard_place(cases[i].s, n);
        cr_expect_eq(http_valid_host(g, n), cases[i].ok, "\"%s\" should be %s", cases[i].s,
                     cases[i].ok ? "valid" : "invalid");
    }
    cr_expect_eq(http_valid_host("a\0b", 3), 0, "a NUL is not part of a host");
}

Test(find_header, case_insensitive_with_from)
{
    static const char raw[] = "GET / HTTP/1.1\r\nHost: h\r\nX-Tag: 1\r\nAccept: */*\r\nx-tag: 2\r\nX-TAG: 3\r\n\r\n";
    struct http_request req;
    cr_assert_eq(parse(raw, sizeof(raw) - 1, 0, NULL, &req), (ssize_t)sizeof(raw) - 1);
    cr_expect_eq(http_find_header(&req, "host", 4, 0), 0);
    cr_expect_eq(http_find_header(&req, "ACCEPT", 6, 0), 2);
    cr_expect_eq(http_find_header(&req, "x-tag", 5, 0), 1);
    cr_expect_eq(http_find_header(&req, "x-tag", 5, 2), 3);
    cr_expect_eq(http_find_header(&req, "X-Tag", 5, 4), 4);
    cr_expect_eq(http_find_header(&req, "x-tag", 5, 5), -1);
    cr_expect_eq(http_find_header(&req, "x-tag", 5, 99), -1);
    cr_expect_eq(http_find_header(&req, "x-ta", 4, 0), -1);
    cr_expect_eq(http_find_header(&req, "x-tags", 6, 0), -1);
    cr_expect_eq(http_find_header(&req, "Cookie", 6, 0), -1);
}

Test(methods, names)
{
    cr_expect_null(http_method_name(HTTP_OTHER));
    cr_expect_null(http_method_name(HTTP_METHOD_COUNT));
    cr_expect_str_eq(http_method_name(HTTP_GET), "GET");
    cr_expect_str_eq(http_method_name(HTTP_OPTIONS), "OPTIONS");
    cr_expect_str_eq(http_method_name(HTTP_TRACE), "TRACE");
    static const char *const all[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT",
                                      "TRACE"};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        char raw[64];
        int n = snprintf(raw, sizeof(raw), "%s %s HTTP/1.1\r\nHost: h:1\r\n\r\n", all[i],
                         strcmp(all[i], "CONNECT") == 0 ? "h:1" : "/");
        struct http_request req;
        cr_assert_eq(parse(raw, (size_t)n, 0, NULL, &req), n, "%s", all[i]);
        cr_expect_eq(req.method, (enum http_method)(HTTP_GET + (int)i), "%s", all[i]);
        cr_expect_str_eq(http_method_name(req.method), all[i]);
    }
    /* Methods are case-sensitive: "get" is some other, valid token. */
    struct http_request req;
    cr_assert_eq(parse("get / HTTP/1.1\r\nHost: h\r\n\r\n", 27, 0, NULL, &req), 27);
    cr_expect_eq(req.method, HTTP_OTHER);
}
