/*
 * libFuzzer target for the HTTP/1.x request parser and the chunked decoder.
 *
 * Each input is parsed as a request head under realistic limits and under
 * small ones, and the promises of parser.h are checked: the result lies
 * within the input, every slice points into the head, a split at a
 * data-derived point (with and without last_len) parses identically, and an
 * error carries one of the statuses the contract names. The bytes after the
 * head (or the whole input) then go through the chunked decoder, whole and
 * in two pieces the way a connection feeds them, and both must agree.
 * A broken promise is a trap, so libFuzzer keeps the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                 \
    do {                            \
        if (!(cond))                \
            __builtin_trap();       \
    } while (0)

#define MAX_FIELDS 100

/* A slice is inside the head: [p, p + n) within [buf, buf + len). */
static int inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p >= buf && p <= buf + len && n <= (size_t)(buf + len - p);
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t';
}

static void check_header(const struct http_header *h, const char *buf, size_t head)
{
    CHECK(h->name_len > 0 && inside(h->name, h->name_len, buf, head));
    CHECK(inside(h->value, h->value_len, buf, head));
    CHECK(memchr(h->name, ':', h->name_len) == NULL);
    if (h->value_len > 0)
        CHECK(!is_ws(h->value[0]) && !is_ws(h->value[h->value_len - 1]));
    for (size_t i = 0; i < h->value_len; i++) {
        unsigned char c = (unsigned char)h->value[i];
        CHECK(c != '\r' && c != '\n' && c != 0 && c != 0x7f);
    }
}

/* Everything a successful parse promises about its view of the head. */
static void check_success(const struct http_request *req, const char *buf, size_t head,
                          const struct http_limits *lim)
{
    CHECK(inside(req->method_str, req->method_len, buf, head) && req->method_len > 0);
    CHECK(inside(req->target, req->target_len, buf, head) && req->target_len > 0);
    CHECK(req->target_len <= lim->max_uri);
    if (req->path)
        CHECK(req->path_len > 0 && inside(req->path, req->path_len, buf, head) && req->path[0] == '/');
    if (req->query)
        CHECK(inside(req->query, req->query_len, buf, head) && req->query[-1] == '?');
    if (req->authority)
        CHECK(inside(req->authority, req->authority_len, buf, head));
    if (req->host)
        CHECK(inside(req->host, req->host_len, buf, head));
    if (req->form == HTTP_FORM_ORIGIN)
        CHECK(req->path == req->target && req->authority == NULL);
    if (req->form == HTTP_FORM_ASTERISK)
        CHECK(req->method == HTTP_OPTIONS && req->target_len == 1);
    if (req->form == HTTP_FORM_AUTHORITY)
        CHECK(req->method == HTTP_CONNECT);
    if (req->method != HTTP_OTHER)
        CHECK(strlen(http_method_name(req->method)) == req->method_len &&
              memcmp(http_method_name(req->method), req->method_str, req->method_len) == 0);
    CHECK(req->minor_version >= 0 && req->minor_version <= 9);
    CHECK(req->nheaders <= lim->max_headers && req->nheaders <= req->headers_cap);
    for (size_t i = 0; i < req->nheaders; i++)
        check_header(&req->headers[i], buf, head);
    CHECK(req->content_length >= -1 && (req->content_length < 0 || (uint64_t)req->content_length <= lim->max_body));
    CHECK(!(req->chunked && req->content_length >= 0));
    if (req->minor_version >= 1)
        CHECK(req->host != NULL);
    CHECK(head <= lim->max_head);
    CHECK(buf[head - 1] == '\n');
}

static void check_error(const struct http_request *req)
{
    int s = req->status;
    CHECK(s == 400 || s == 413 || s == 414 || s == 417 || s == 431 || s == 501 || s == 505);
    CHECK(req->reason != NULL && req->reason[0] != '\0');
}

static void same_request(const struct http_request *a, const struct http_request *b)
{
    CHECK(a->method == b->method && a->form == b->form);
    CHECK(a->method_str == b->method_str && a->method_len == b->method_len);
    CHECK(a->target == b->target && a->target_len == b->target_len);
    CHECK(a->path == b->path && a->path_len == b->path_len);
    CHECK(a->query == b->query && a->query_len == b->query_len);
    CHECK(a->authority == b->authority && a->authority_len == b->authority_len);
    CHECK(a->minor_version == b->minor_version && a->nheaders == b->nheaders);
    CHECK(memcmp(a->headers, b->headers, a->nheaders * sizeof(a->headers[0])) == 0);
    CHECK(a->host == b->host && a->host_len == b->host_len);
    CHECK(a->content_length == b->content_length && a->chunked == b->chunked);
    CHECK(a->keep_alive == b->keep_alive && a->expect_continue == b->expect_continue);
    CHECK(a->upgrade == b->upgrade);
}

static void request_init(struct http_request *req, struct http_header *h, size_t cap)
{
    memset(req, 0, sizeof(*req));
    req->headers = h;
    req->headers_cap = cap;
}

/*
 * Parses buf[0..len) whole, then as a prefix of `k` bytes followed by the
 * whole again with last_len = k. Returns the head's length or 0.
 */
static size_t parse_and_split(const char *buf, size_t len, size_t k, const struct http_limits *lim,
                              size_t cap)
{
    static struct http_header h1[MAX_FIELDS], h2[MAX_FIELDS];
    struct http_request whole, part;
    request_init(&whole, h1, cap);
    request_init(&part, h2, cap);
    ssize_t r = http_parse_request(buf, len, 0, lim, &whole);
    CHECK(r == HTTP_INCOMPLETE || r == HTTP_ERROR || (r > 0 && (size_t)r <= len));
    if (r > 0)
        check_success(&whole, buf, (size_t)r, lim);
    if (r == HTTP_ERROR)
        check_error(&whole);
    if (k > len)
        k = len;

    ssize_t rp = http_parse_request(buf, k, 0, lim, &part);
    if (r == HTTP_INCOMPLETE || (r > 0 && k < (size_t)r))
        CHECK(rp == HTTP_INCOMPLETE);
    else if (r > 0)
        CHECK(rp == r);
    else
        CHECK(rp == HTTP_INCOMPLETE || (rp == HTTP_ERROR && part.status == whole.status));
    if (rp > 0)
        same_request(&whole, &part);

    /* The slow-arrival path: the prefix was seen and found incomplete. */
    if (rp == HTTP_INCOMPLETE && k > 0) {
        ssize_t rl = http_parse_request(buf, len, k, lim, &part);
        if (r > 0) {
            CHECK(rl == r);
            same_request(&whole, &part);
        } else if (r == HTTP_ERROR) {
            CHECK(rl == HTTP_INCOMPLETE || (rl == HTTP_ERROR && part.status == whole.status));
        } else {
            CHECK(rl == HTTP_INCOMPLETE);
        }
    }
    return r > 0 ? (size_t)r : 0;
}

/* Decodes a private copy of in[0..n) whole; returns the result, the output in out. */
static ssize_t decode_whole(const char *in, size_t n, uint64_t max_body, char *out, size_t *out_len,
                            int *status)
{
    struct http_chunked dec = {0};
    dec.max_body = max_body;
    memcpy(out, in, n);
    *out_len = n;
    ssize_t r = http_chunked_decode(&dec, out, out_len);
    *status = dec.status;
    if (r != HTTP_ERROR) {
        CHECK(*out_len <= n && dec.total == *out_len && dec.total <= max_body);
        CHECK(r == HTTP_INCOMPLETE || (r >= 0 && *out_len + (size_t)r <= n));
    }
    return r;
}

/*
 * Decodes in[0..n) in two pieces split at k, as a connection would: the
 * decoded bytes stay at the front, the next raw bytes are appended after
 * them and only the raw part is passed again. Must agree with one call.
 */
static void check_chunked(const char *in, size_t n, size_t k, uint64_t max_body)
{
    if (n == 0)
        return;
    char *whole = malloc(n), *buf = malloc(n);
    CHECK(whole && buf);
    size_t whole_len;
    int whole_status;
    ssize_t rw = decode_whole(in, n, max_body, whole, &whole_len, &whole_status);
    if (rw == HTTP_ERROR)
        CHECK(whole_status == 400 || whole_status == 413);

    struct http_chunked dec = {0};
    dec.max_body = max_body;
    k = k % (n + 1);
    memcpy(buf, in, k);
    size_t first = k;
    ssize_t r = http_chunked_decode(&dec, buf, &first);
    size_t got = 0, rest = 0;
    if (r == HTTP_INCOMPLETE) {
        CHECK(first <= k);
        memcpy(buf + first, in + k, n - k);
        size_t second = n - k;
        r = http_chunked_decode(&dec, buf + first, &second);
        if (r != HTTP_ERROR) {
            CHECK(first + second <= n);
            got = first + second;
            rest = r >= 0 ? (size_t)r : 0;
        }
    } else if (r >= 0) {
        got = first;
        rest = (size_t)r + (n - k);
        memcpy(buf + first + r, in + k, n - k);
    }
    CHECK(r == rw || (r >= 0 && rw >= 0));
    if (r == HTTP_ERROR)
        CHECK(dec.status == whole_status);
    if (r != HTTP_ERROR) {
        CHECK(got == whole_len && memcmp(buf, whole, got) == 0 && dec.total == got);
        if (r >= 0) {
            CHECK(rest == (size_t)rw && memcmp(buf + got, whole + whole_len, rest) == 0);
            CHECK(memcmp(buf + got, in + n - rest, rest) == 0);
        }
    }
    free(whole);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct http_limits real = {8192, 16384, MAX_FIELDS, 1 << 20};
    static const struct http_limits small = {16, 64, 4, 10};
    if (size == 0)
        return 0;
    /* An exact-size copy, so ASan sees any read past the end. */
    char *buf = malloc(size);
    CHECK(buf);
    memcpy(buf, data, size);
    size_t k = (size_t)data[0] * 131 % (size + 1);
    size_t head = parse_and_split(buf, size, k, &real, MAX_FIELDS);
    parse_and_split(buf, size, size - k, &small, 3);
    parse_and_split(buf, size, k / 2, &small, MAX_FIELDS);

    const char *body = head ? buf + head : buf;
    size_t n = head ? size - head : size;
    size_t split = size > 1 ? (size_t)data[size - 1] * 17 : 0;
    check_chunked(body, n, split, 1 << 20);
    check_chunked(body, n, split / 3, 16);
    free(buf);
    return 0;
}
