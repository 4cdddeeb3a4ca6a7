/*
 * Unit tests for the response head parser of src/http/parser.c (what the
 * proxy reads from upstream servers): valid and invalid heads, each parsed
 * whole, at every split point with and without last_len, and placed right
 * before an unreadable page so that a read past the input crashes; body
 * framing for every status and method that changes it.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http/parser.h"

#define NFIELDS 64

static const struct http_limits lim = {.max_uri = 8192, .max_head = 16384, .max_headers = 50, .max_body = 0};
static const struct http_limits small = {.max_uri = 8192, .max_head = 64, .max_headers = 2, .max_body = 0};

static struct http_header fields[NFIELDS];

static ssize_t parse(const char *buf, size_t len, size_t last, const struct http_limits *l, struct http_response *res)
{
    memset(res, 0, sizeof(*res));
    res->headers = fields;
    res->headers_cap = NFIELDS;
    return http_parse_response(buf, len, last, l ? l : &lim, res);
}

#define GUARD_AREA (64 * 1024)
static char *guard_base;

/* Copies the input so that its last byte sits before a PROT_NONE page. */
static char *guard_place(const char *src, size_t n)
{
    if (!guard_base) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        char *m = mmap(NULL, GUARD_AREA + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        cr_assert(m != MAP_FAILED);
        cr_assert(mprotect(m + GUARD_AREA, page, PROT_NONE) == 0);
        guard_base = m;
    }
    cr_assert(n <= GUARD_AREA);
    char *dst = guard_base + GUARD_AREA - n;
    memmove(dst, src, n);
    return dst;
}

struct valid {
    const char *name, *head, *after;
    int status, minor;
    const char *reason;
    int64_t content_length;
    int chunked, keep_alive, upgrade;
    size_t nfields;
    enum http_body_kind get_body; /* framing for a GET */
};

static const struct valid valid_cases[] = {
    {"200 with length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "hello", 200, 1, "OK", 5, 0, 1, 0, 1,
     HTTP_BODY_LENGTH},
    {"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "0\r\n\r\n", 200, 1, "OK", -1, 1, 1, 0, 1,
     HTTP_BODY_CHUNKED},
    {"chunked wins over length, closes", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: Chunked\r\n\r\n",
     "", 200, 1, "OK", -1, 1, 0, 0, 2, HTTP_BODY_CHUNKED},
    {"close-delimited", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", "abc", 200, 1, "OK", -1, 0, 0, 0, 1,
     HTTP_BODY_CLOSE},
    {"1.1 without framing keeps alive but reads to close", "HTTP/1.1 200 OK\r\n\r\n", "", 200, 1, "OK", -1, 0, 1, 0,
     0, HTTP_BODY_CLOSE},
    {"1.0 default close", "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "", 200, 0, "OK", 0, 0, 0, 0, 1,
     HTTP_BODY_LENGTH},
    {"1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", "", 200, 0, "OK", 0,
     0, 1, 0, 2, HTTP_BODY_LENGTH},
    {"no reason, no space", "HTTP/1.1 204\r\n\r\n", "", 204, 1, "", -1, 0, 1, 0, 0, HTTP_BODY_NONE},
    {"empty reason", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", "", 404, 1, "", 0, 0, 1, 0, 1, HTTP_BODY_LENGTH},
    {"reason with spaces and obs-text", "HTTP/1.1 500 Internal  Error \xe9\r\nContent-Length: 1\r\n\r\n", "x", 500, 1,
     "Internal  Error \xe9", 1, 0, 1, 0, 1, HTTP_BODY_LENGTH},
    {"304 with a length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", "", 304, 1, "Not Modified", 99,
     0, 1, 0, 1, HTTP_BODY_NONE},
    {"100 continue", "HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n", 100, 1, "Continue", -1, 0, 1, 0, 0,
     HTTP_BODY_NONE},
    {"103 early hints", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", "", 103, 1, "Early Hints",
     -1, 0, 1, 0, 1, HTTP_BODY_NONE},
    {"101 upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "\x81",
     101, 1, "Switching Protocols", -1, 0, 1, 1, 2, HTTP_BODY_NONE},
    {"LF only", "HTTP/1.1 200 OK\nContent-Length: 2\n\n", "hi", 200, 1, "OK", 2, 0, 1, 0, 1, HTTP_BODY_LENGTH},
    {"equal lengths listed", "HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\ncontent-length: 4\r\n\r\n", "abcd", 200, 1,
     "OK", 4, 0, 1, 0, 2, HTTP_BODY_LENGTH},
    {"Connection close among tokens", "HTTP/1.1 200 OK\r\nConnection: foo, CLOSE\r\nContent-Length: 0\r\n\r\n", "",
     200, 1, "OK", 0, 0, 0, 0, 2, HTTP_BODY_LENGTH},
    {"status 999", "HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n", "", 999, 1, "Odd", 0, 0, 1, 0, 1,
     HTTP_BODY_LENGTH},
};

static void check_valid(const struct valid *c, const char *buf, ssize_t r, const struct http_response *res)
{
    size_t head = strlen(c->head);
    cr_assert_eq(r, (ssize_t)head, "%s: returned %zd (%s), want %zu", c->name, r, res->error ? res->error : "",
                 head);
    cr_expect_eq(res->status, c->status, "%s: status %d", c->name, res->status);
    cr_expect_eq(res->minor_version, c->minor, "%s", c->name);
    cr_expect(res->reason_len == strlen(c->reason) && memcmp(res->reason, c->reason, res->reason_len) == 0,
              "%s: reason \"%.*s\"", c->name, (int)res->reason_len, res->reason);
    cr_expect(res->reason >= buf && res->reason + res->reason_len <= buf + head, "%s: reason outside", c->name);
    cr_expect_eq(res->content_length, c->content_length, "%s: length %lld", c->name, (long long)res->content_length);
    cr_expect_eq(res->chunked, (unsigned)c->chunked, "%s: chunked", c->name);
    cr_expect_eq(res->keep_alive, (unsigned)c->keep_alive, "%s: keep_alive", c->name);
    cr_expect_eq(res->upgrade, (unsigned)c->upgrade, "%s: upgrade", c->name);
    cr_expect_eq(res->nheaders, c->nfields, "%s: %zu fields", c->name, res->nheaders);
    for (size_t i = 0; i < res->nheaders; i++)
        cr_expect(res->headers[i].name >= buf && res->headers[i].value + res->headers[i].value_len <= buf + head);
    cr_expect_eq(http_response_body(res, HTTP_GET), c->get_body, "%s: framing %d", c->name,
                 http_response_body(res, HTTP_GET));
    cr_expect_eq(http_response_body(res, HTTP_HEAD), HTTP_BODY_NONE, "%s: HEAD has no body", c->name);
}

Test(response, valid_whole_split_and_guarded)
{
    for (size_t i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
        const struct valid *c = &valid_cases[i];
        size_t head = strlen(c->head), after = strlen(c->after);
        char whole[512];
        memcpy(whole, c->head, head);
        memcpy(whole + head, c->after, after);
        struct http_response res;
        /* exactly the head, right before the guard page */
        char *g = guard_place(c->head, head);
        check_valid(c, g, parse(g, head, 0, NULL, &res), &res);
        /* with what follows it */
        g = guard_place(whole, head + after);
        check_valid(c, g, parse(g, head + after, 0, NULL, &res), &res);
        /* every prefix is incomplete; then the rest arrives (last_len) */
        for (size_t k = 0; k < head; k++) {
            g = guard_place(c->head, k);
            cr_assert_eq(parse(g, k, 0, NULL, &res), HTTP_INCOMPLETE, "%s: prefix %zu", c->name, k);
            g = guard_place(c->head, head);
            check_valid(c, g, parse(g, head, k, NULL, &res), &res);
        }
    }
}

struct invalid {
    const char *name, *head, *why;
};

static const struct invalid invalid_cases[] = {
    {"not HTTP", "HTTX/1.1 200 OK\r\n\r\n", "not an HTTP response"},
    {"HTTP/2", "HTTP/2.0 200 OK\r\n\r\n", "unsupported HTTP version"},
    {"HTTP/0.9", "HTTP/0.9 200 OK\r\n\r\n", "unsupported HTTP version"},
    {"letter minor", "HTTP/1.x 200 OK\r\n\r\n", "malformed HTTP version"},
    {"two spaces", "HTTP/1.1  200 OK\r\n\r\n", "malformed status code"},
    {"short code", "HTTP/1.1 20 OK\r\n\r\n", "malformed status code"},
    {"code below 100", "HTTP/1.1 099 Low\r\n\r\n", "status code out of range"},
    {"four digits", "HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"},
    {"control in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", "malformed status line"},
    {"bare CR in status line", "HTTP/1.1 200 OK\rX\r\n\r\n", "malformed status line"},
    {"obs-fold", "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", "obsolete line folding in header"},
    {"space before colon", "HTTP/1.1 200 OK\r\nA : b\r\n\r\n", "malformed header field name"},
    {"empty name", "HTTP/1.1 200 OK\r\n: b\r\n\r\n", "malformed header field name"},
    {"NUL in value", "HTTP/1.1 200 OK\r\nA: b\x00\r\n\r\n", "invalid character in header value"},
    {"bare CR in value", "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", "bare CR in header"},
    {"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
     "invalid or conflicting Content-Length"},
    {"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid or conflicting Content-Length"},
    {"huge length", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
     "invalid or conflicting Content-Length"},
    {"gzip coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported transfer coding"},
    {"gzip then chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported transfer coding"},
    {"chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
     "unsupported transfer coding"},
    {"empty coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n", "unsupported transfer coding"},
};

Test(response, invalid_fail_at_every_prefix_the_same_way)
{
    for (size_t i = 0; i < sizeof(invalid_cases) / sizeof(invalid_cases[0]); i++) {
        const struct invalid *c = &invalid_cases[i];
        size_t n = strlen(c->head);
        if (strstr(c->name, "NUL"))
            n = strlen(c->head) + 1 + strlen(c->head + strlen(c->head) + 1);
        struct http_response res;
        char *g = guard_place(c->head, n);
        cr_assert_eq(parse(g, n, 0, NULL, &res), HTTP_ERROR, "%s: not an error", c->name);
        cr_expect_str_eq(res.error, c->why, "%s", c->name);
        for (size_t k = 0; k < n; k++) {
            g = guard_place(c->head, k);
            ssize_t r = parse(g, k, 0, NULL, &res);
            cr_assert(r == HTTP_INCOMPLETE || (r == HTTP_ERROR && strcmp(res.error, c->why) == 0),
                      "%s: prefix %zu gave %zd", c->name, k, r);
        }
    }
}

Test(response, limits)
{
    struct http_response res;
    const char *big = "HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    cr_assert_eq(parse(big, strlen(big), 0, &small, &res), HTTP_ERROR);
    cr_expect_str_eq(res.error, "response head too large");
    /* a prefix that fits the limit is only incomplete */
    cr_assert_eq(parse(big, 40, 0, &small, &res), HTTP_INCOMPLETE);
    const char *many = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    cr_assert_eq(parse(many, strlen(many), 0, &small, &res), HTTP_ERROR);
    cr_expect_str_eq(res.error, "too many header fields");
    res.headers_cap = 1; /* the caller's array is the other bound */
    memset(&res, 0, sizeof(res));
    res.headers = fields;
    res.headers_cap = 1;
    cr_assert_eq(http_parse_response(many, strlen(many), 0, &lim, &res), HTTP_ERROR);
}

Test(response, framing_by_status_and_method)
{
    static const struct {
        const char *head;
        enum http_method m;
        enum http_body_kind want;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", HTTP_HEAD, HTTP_BODY_NONE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_HEAD, HTTP_BODY_NONE},
        {"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n", HTTP_GET, HTTP_BODY_NONE},
        {"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_POST, HTTP_BODY_NONE},
        {"HTTP/1.1 199 Hm\r\n\r\n", HTTP_GET, HTTP_BODY_NONE},
        {"HTTP/1.1 205 Reset\r\nContent-Length: 0\r\n\r\n", HTTP_POST, HTTP_BODY_LENGTH},
        {"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n", HTTP_DELETE, HTTP_BODY_CLOSE},
        {"HTTP/1.0 200 OK\r\n\r\n", HTTP_GET, HTTP_BODY_CLOSE},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct http_response res;
        cr_assert_gt(parse(cases[i].head, strlen(cases[i].head), 0, NULL, &res), 0, "%s", cases[i].head);
        cr_expect_eq(http_response_body(&res, cases[i].m), cases[i].want, "%s", cases[i].head);
    }
}

Test(response, find_header)
{
    const char *h = "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX: y\r\nset-cookie: b=2\r\n\r\n";
    struct http_response res;
    cr_assert_gt(parse(h, strlen(h), 0, NULL, &res), 0);
    int i = http_find_response_header(&res, "Set-Cookie", 10, 0);
    cr_assert_eq(i, 0);
    i = http_find_response_header(&res, "Set-Cookie", 10, (size_t)i + 1);
    cr_assert_eq(i, 2);
    cr_assert_eq(http_find_response_header(&res, "Set-Cookie", 10, 3), -1);
    cr_assert_eq(http_find_response_header(&res, "Nope", 4, 0), -1);
}

/* A body read after its head, through the chunked decoder, as the proxy does. */
Test(response, chunked_body_after_head)
{
    char buf[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\nNEXT";
    struct http_response res;
    ssize_t head = parse(buf, strlen(buf), 0, NULL, &res);
    cr_assert_gt(head, 0);
    struct http_chunked dec = {.max_body = UINT64_MAX};
    size_t n = strlen(buf) - (size_t)head;
    ssize_t rest = http_chunked_decode(&dec, buf + head, &n);
    cr_assert_eq(rest, 4);
    cr_assert_eq(n, 11);
    cr_assert(memcmp(buf + head, "hello world", 11) == 0);
    cr_assert(memcmp(buf + head + n, "NEXT", 4) == 0);
}
