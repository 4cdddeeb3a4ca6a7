/*
 * libFuzzer target for the HTTP/1.x response head parser (what the proxy
 * reads from upstream servers) and the body framing it leads to.
 *
 * Each input is parsed as a response head under realistic and small limits,
 * and the promises of parser.h are checked: the result lies within the
 * input, every slice points into the head, a split at a data-derived point
 * (with and without last_len) parses identically or fails with the same
 * error, framing is consistent with the fields (chunked excludes a length;
 * 1xx, 204, 304 and HEAD have no body). The bytes after the head then go
 * through the chunked decoder as the proxy feeds them (in pieces, with no
 * body limit) and must agree with one whole call.
 * A broken promise is a trap, so libFuzzer keeps the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)           \
    do {                      \
        if (!(cond))          \
            __builtin_trap(); \
    } while (0)

#define MAX_FIELDS 100

static int inside(const char *p, size_t n, const char *buf, size_t len)
{
    return p >= buf && p <= buf + len && n <= (size_t)(buf + len - p);
}

static void check_success(const struct http_response *res, const char *buf, size_t head,
                          const struct http_limits *lim)
{
    CHECK(head <= lim->max_head && buf[head - 1] == '\n');
    CHECK(res->status >= 100 && res->status <= 999);
    CHECK(res->minor_version >= 0 && res->minor_version <= 9);
    CHECK(inside(res->reason, res->reason_len, buf, head));
    for (size_t i = 0; i < res->reason_len; i++)
        CHECK(res->reason[i] != '\r' && res->reason[i] != '\n' && res->reason[i] != 0);
    CHECK(res->nheaders <= lim->max_headers && res->nheaders <= res->headers_cap);
    for (size_t i = 0; i < res->nheaders; i++) {
        const struct http_header *h = &res->headers[i];
        CHECK(h->name_len > 0 && inside(h->name, h->name_len, buf, head));
        CHECK(inside(h->value, h->value_len, buf, head));
        CHECK(memchr(h->name, ':', h->name_len) == NULL);
        for (size_t k = 0; k < h->value_len; k++)
            CHECK(h->value[k] != '\r' && h->value[k] != '\n' && h->value[k] != 0);
    }
    CHECK(res->content_length >= -1);
    CHECK(!(res->chunked && res->content_length >= 0));
    CHECK(res->chunked == res->has_te);
    enum http_body_kind get = http_response_body(res, HTTP_GET);
    CHECK(http_response_body(res, HTTP_HEAD) == HTTP_BODY_NONE);
    if (res->status < 200 || res->status == 204 || res->status == 304)
        CHECK(get == HTTP_BODY_NONE);
    else if (res->chunked)
        CHECK(get == HTTP_BODY_CHUNKED);
    else if (res->content_length >= 0)
        CHECK(get == HTTP_BODY_LENGTH);
    else
        CHECK(get == HTTP_BODY_CLOSE);
}

static void same_response(const struct http_response *a, const struct http_response *b)
{
    CHECK(a->status == b->status && a->minor_version == b->minor_version);
    CHECK(a->reason == b->reason && a->reason_len == b->reason_len);
    CHECK(a->nheaders == b->nheaders);
    CHECK(memcmp(a->headers, b->headers, a->nheaders * sizeof(a->headers[0])) == 0);
    CHECK(a->content_length == b->content_length && a->chunked == b->chunked);
    CHECK(a->keep_alive == b->keep_alive && a->upgrade == b->upgrade && a->has_te == b->has_te);
}

static void init(struct http_response *res, struct http_header *h, size_t cap)
{
    memset(res, 0, sizeof(*res));
    res->headers = h;
    res->headers_cap = cap;
}

static size_t parse_and_split(const char *buf, size_t len, size_t k, const struct http_limits *lim, size_t cap)
{
    static struct http_header h1[MAX_FIELDS], h2[MAX_FIELDS];
    struct http_response whole, part;
    init(&whole, h1, cap);
    init(&part, h2, cap);
    ssize_t r = http_parse_response(buf, len, 0, lim, &whole);
    CHECK(r == HTTP_INCOMPLETE || r == HTTP_ERROR || (r > 0 && (size_t)r <= len));
    if (r > 0)
        check_success(&whole, buf, (size_t)r, lim);
    if (r == HTTP_ERROR)
        CHECK(whole.error && whole.error[0]);
    if (k > len)
        k = len;
    ssize_t rp = http_parse_response(buf, k, 0, lim, &part);
    if (r == HTTP_INCOMPLETE || (r > 0 && k < (size_t)r))
        CHECK(rp == HTTP_INCOMPLETE);
    else if (r > 0)
        CHECK(rp == r);
    else
        CHECK(rp == HTTP_INCOMPLETE || (rp == HTTP_ERROR && strcmp(part.error, whole.error) == 0));
    if (rp > 0)
        same_response(&whole, &part);
    if (rp == HTTP_INCOMPLETE && k > 0) {
        ssize_t rl = http_parse_response(buf, len, k, lim, &part);
        if (r > 0) {
            CHECK(rl == r);
            same_response(&whole, &part);
        } else if (r == HTTP_ERROR) {
            CHECK(rl == HTTP_INCOMPLETE || (rl == HTTP_ERROR && strcmp(part.error, whole.error) == 0));
        } else {
            CHECK(rl == HTTP_INCOMPLETE);
        }
    }
    return r > 0 ? (size_t)r : 0;
}

/* The proxy's way with a chunked body: pieces of at most `step` raw bytes
 * appended after what is still undecoded; compared with one whole call. */
static void check_chunked(const char *in, size_t n, size_t step)
{
    if (n == 0 || step == 0)
        return;
    char *whole = malloc(n), *buf = malloc(n);
    CHECK(whole && buf);
    memcpy(whole, in, n);
    struct http_chunked dw = {.max_body = UINT64_MAX};
    size_t wl = n;
    ssize_t rw = http_chunked_decode(&dw, whole, &wl);

    struct http_chunked d = {.max_body = UINT64_MAX};
    size_t got = 0, fed = 0;
    ssize_t r = HTTP_INCOMPLETE;
    while (fed < n && r == HTTP_INCOMPLETE) {
        size_t take = n - fed < step ? n - fed : step;
        memcpy(buf + got, in + fed, take);
        size_t l = take;
        r = http_chunked_decode(&d, buf + got, &l);
        fed += take;
        if (r != HTTP_ERROR) {
            CHECK(l <= take);
            got += l;
        }
    }
    if (rw == HTTP_ERROR) {
        CHECK(r == HTTP_ERROR && d.status == dw.status);
    } else {
        CHECK(r != HTTP_ERROR);
        CHECK(got == wl && memcmp(buf, whole, got) == 0 && d.total == got);
        if (rw >= 0)
            CHECK(r >= 0 && (size_t)r + (n - fed) == (size_t)rw);
        else
            CHECK(r == HTTP_INCOMPLETE);
    }
    free(whole);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct http_limits real = {8192, 65536, MAX_FIELDS, 0};
    static const struct http_limits small = {8192, 64, 4, 0};
    if (size == 0)
        return 0;
    char *buf = malloc(size); /* exact size: ASan sees any overread */
    CHECK(buf);
    memcpy(buf, data, size);
    size_t k = (size_t)data[0] * 131 % (size + 1);
    size_t head = parse_and_split(buf, size, k, &real, MAX_FIELDS);
    parse_and_split(buf, size, size - k, &small, 3);
    parse_and_split(buf, size, k / 2, &small, MAX_FIELDS);
    const char *body = head ? buf + head : buf;
    size_t n = head ? size - head : size;
    check_chunked(body, n, 1 + (size_t)data[size - 1] % 64);
    check_chunked(body, n, n);
    free(buf);
    return 0;
}
