/*
 * HTTP/1.x request parser and chunked decoder. See parser.h for the
 * contract. The head parser is one forward scan; every check fires at the
 * position of the byte that breaks the rule, and the scan never looks past
 * limits.max_head, so a prefix of a head fails (or waits) exactly as the
 * whole head would.
 */
#include "http/parser.h"

#include <string.h>

/* Byte classes as 256-bit sets (RFC 9110 tchar, field-vchar and the bytes a
 * request-target may hold: visible ASCII and obs-text). */
static const uint32_t tchar_set[8] = {0x00000000, 0x03ff6cfa, 0xc7fffffe, 0x57ffffff, 0, 0, 0, 0};
static const uint32_t value_set[8] = {0x00000200, 0xffffffff, 0xffffffff, 0x7fffffff,
                                      0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff};
static const uint32_t target_set[8] = {0x00000000, 0xfffffffe, 0xffffffff, 0x7fffffff,
                                       0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff};
static const uint32_t host_set[8] = {0x00000000, 0x2bff7ff2, 0x87fffffe, 0x47fffffe, 0, 0, 0, 0};

#define IN_SET(set, c) (((set)[(uint8_t)(c) >> 5] >> ((uint8_t)(c) & 31)) & 1u)

#define MAX_METHOD_LEN 32

static ssize_t fail(struct http_request *req, int status, const char *reason)
{
    req->status = status;
    req->reason = reason;
    return HTTP_ERROR;
}

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* Case-insensitive compare of s[0..n) with a lower-case literal of length n. */
static int eq_lower(const char *s, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != lit[i])
            return 0;
    return 1;
}

static const char *const method_names[HTTP_METHOD_COUNT] = {
    [HTTP_GET] = "GET",         [HTTP_HEAD] = "HEAD",       [HTTP_POST] = "POST",
    [HTTP_PUT] = "PUT",         [HTTP_DELETE] = "DELETE",   [HTTP_PATCH] = "PATCH",
    [HTTP_OPTIONS] = "OPTIONS", [HTTP_CONNECT] = "CONNECT", [HTTP_TRACE] = "TRACE",
};

const char *http_method_name(enum http_method m)
{
    return (m > HTTP_OTHER && m < HTTP_METHOD_COUNT) ? method_names[m] : NULL;
}

/* Methods are case-sensitive (RFC 9110 9.1). */
static enum http_method method_of(const char *s, size_t n)
{
    for (int m = HTTP_GET; m < HTTP_METHOD_COUNT; m++)
        if (strlen(method_names[m]) == n && memcmp(method_names[m], s, n) == 0)
            return (enum http_method)m;
    return HTTP_OTHER;
}

/*
 * The scan state. `end` is the last byte the scan may look at: the input's
 * end, or limits.max_head when the input is longer. Reaching it means
 * "wait for more" unless the input was cut there, which is a 431.
 */
struct scan {
    const char *p, *end, *buf;
    int truncated;
    struct http_request *req;
    const struct http_limits *lim;
};

static ssize_t more(struct scan *s)
{
    if (s->truncated)
        return fail(s->req, 431, "request header too large");
    return HTTP_INCOMPLETE;
}

/* Consumes a line ending: CRLF or a lone LF. 1 when consumed, 0 when the
 * input ends first, -1 (400 set) when a CR is not followed by LF. */
static int line_end(struct scan *s)
{
    if (*s->p == '\n') {
        s->p++;
        return 1;
    }
    if (*s->p != '\r')
        return -1;
    if (s->p + 1 >= s->end)
        return 0;
    if (s->p[1] != '\n')
        return -1;
    s->p += 2;
    return 1;
}

static ssize_t parse_method(struct scan *s)
{
    struct http_request *req = s->req;
    const char *start = s->p;
    while (s->p < s->end && IN_SET(tchar_set, *s->p)) {
        if (s->p - start >= MAX_METHOD_LEN)
            return fail(req, 501, "method not implemented");
        s->p++;
    }
    if (s->p == s->end)
        return more(s);
    if (s->p == start || *s->p != ' ')
        return fail(req, 400, "malformed request line");
    req->method_str = start;
    req->method_len = (uint32_t)(s->p - start);
    req->method = method_of(start, req->method_len);
    s->p++;
    return 0;
}

static ssize_t parse_target(struct scan *s)
{
    struct http_request *req = s->req;
    const char *start = s->p;
    while (s->p < s->end && IN_SET(target_set, *s->p))
        s->p++;
    if ((size_t)(s->p - start) > s->lim->max_uri)
        return fail(req, 414, "request target too long");
    if (s->p == s->end)
        return more(s);
    if (*s->p != ' ' || s->p == start)
        return fail(req, 400, "invalid character in request target");
    req->target = start;
    req->target_len = (uint32_t)(s->p - start);
    s->p++;
    return 0;
}

/* "HTTP/" DIGIT "." DIGIT and the line's end; 505 for a major other than 1. */
static ssize_t parse_version(struct scan *s)
{
    static const char proto[] = "HTTP/";
    struct http_request *req = s->req;
    for (size_t i = 0; i < 5; i++, s->p++) {
        if (s->p == s->end)
            return more(s);
        if (*s->p != proto[i])
            return fail(req, 400, "malformed HTTP version");
    }
    for (int i = 0; i < 3; i++, s->p++) {
        if (s->p == s->end)
            return more(s);
        char c = *s->p;
        if (i == 1 ? c != '.' : (c < '0' || c > '9'))
            return fail(req, 400, "malformed HTTP version");
        if (i == 0 && c != '1')
            return fail(req, 505, "HTTP version not supported");
        if (i == 2)
            req->minor_version = c - '0';
    }
    if (s->p == s->end)
        return more(s);
    int r = line_end(s);
    if (r < 0)
        return fail(req, 400, "malformed HTTP version");
    return r == 0 ? more(s) : 0;
}

/*
 * One header field line. Returns 1 when a field was stored, 0 at the empty
 * line that ends the head, or an HTTP_* code.
 */
static ssize_t parse_field(struct scan *s)
{
    struct http_request *req = s->req;
    if (s->p == s->end)
        return more(s);
    if (*s->p == '\r' || *s->p == '\n') {
        int r = line_end(s);
        if (r < 0)
            return fail(req, 400, "bare CR in header");
        return r == 0 ? more(s) : 0;
    }
    if (*s->p == ' ' || *s->p == '\t')
        return fail(req, 400, "obsolete line folding in header");
    if (req->nheaders >= s->lim->max_headers || req->nheaders >= req->headers_cap)
        return fail(req, 431, "too many header fields");
    const char *name = s->p;
    while (s->p < s->end && IN_SET(tchar_set, *s->p))
        s->p++;
    if (s->p == s->end)
        return more(s);
    if (*s->p != ':' || s->p == name)
        return fail(req, 400, "malformed header field name");
    const char *name_end = s->p++;
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t'))
        s->p++;
    const char *value = s->p;
    while (s->p < s->end && IN_SET(value_set, *s->p))
        s->p++;
    if (s->p == s->end)
        return more(s);
    const char *value_end = s->p;
    int r = line_end(s);
    if (r < 0)
        return fail(req, 400, *value_end == '\r' ? "bare CR in header" : "invalid character in header value");
    if (r == 0)
        return more(s);
    while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
        value_end--;
    struct http_header *h = &req->headers[req->nheaders++];
    h->name = name;
    h->name_len = (uint32_t)(name_end - name);
    h->value = value;
    h->value_len = (uint32_t)(value_end - value);
    return 1;
}

int http_valid_host(const char *s, size_t len)
{
    size_t i = 0;
    if (len > 0 && s[0] == '[') {
        for (i = 1; i < len && s[i] != ']'; i++) {
            char c = s[i];
            if (!((c >= '0' && c <= '9') || (lower((unsigned char)c) >= 'a' && lower((unsigned char)c) <= 'f') ||
                  c == ':' || c == '.'))
                return 0;
        }
        if (i == len || i == 1)
            return 0;
        i++;
    } else {
        while (i < len && s[i] != ':' && IN_SET(host_set, s[i]))
            i++;
    }
    if (i == len)
        return 1;
    if (s[i] != ':')
        return 0;
    size_t digits = 0;
    for (i++; i < len; i++, digits++)
        if (s[i] < '0' || s[i] > '9' || digits == 5)
            return 0;
    return 1;
}

static size_t skip_ows(const char *v, size_t n, size_t i)
{
    while (i < n && (v[i] == ' ' || v[i] == '\t'))
        i++;
    return i;
}

/*
 * Content-Length: 1*DIGIT, or a list of identical values (RFC 9110 8.6);
 * every element must be a number, so "1," and ",1" are malformed (-1). A
 * numeral too large for int64 is a valid length, just too large (-2: 413),
 * and is never cut down to one that would frame the body differently.
 */
static int parse_content_length(const char *v, size_t n, int64_t *out)
{
    int64_t value = -1;
    size_t i = 0;
    for (;;) {
        int64_t x = 0;
        size_t start = i;
        for (; i < n && v[i] >= '0' && v[i] <= '9'; i++) {
            if (x > (INT64_MAX - 9) / 10)
                return -2;
            x = x * 10 + (v[i] - '0');
        }
        if (i == start || (value >= 0 && x != value))
            return -1;
        value = x;
        i = skip_ows(v, n, i);
        if (i == n)
            break;
        if (v[i] != ',')
            return -1;
        i = skip_ows(v, n, i + 1);
    }
    if (*out >= 0 && *out != value)
        return -1;
    *out = value;
    return 0;
}

/*
 * Walks a comma-separated list of tokens, calling `fn` for each non-empty
 * element (RFC 9110 5.6.1: empty elements are ignored). Stops at the first
 * non-zero answer of `fn` and returns it.
 */
typedef int (*token_fn)(const char *t, size_t n, struct http_request *req, void *arg);

static int each_token(const char *v, size_t n, token_fn fn, struct http_request *req, void *arg)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t stop = i;
        while (stop > start && (v[stop - 1] == ' ' || v[stop - 1] == '\t'))
            stop--;
        if (stop > start) {
            int r = fn(v + start, stop - start, req, arg);
            if (r)
                return r;
        }
    }
    return 0;
}

/* Transfer-Encoding: chunked must come last and once; any other coding is
 * one we do not implement. `arg` counts codings after chunked. */
static int te_token(const char *t, size_t n, struct http_request *req, void *arg)
{
    int *unknown = arg;
    if (req->chunked)
        return 400;
    if (n == 7 && eq_lower(t, "chunked", 7))
        req->chunked = 1;
    else
        *unknown = 1;
    return 0;
}

/* Connection options; `arg` points at the close/keep-alive flags. */
static int conn_token(const char *t, size_t n, struct http_request *req, void *arg)
{
    int *flags = arg;
    if (n == 5 && eq_lower(t, "close", 5))
        flags[0] = 1;
    else if (n == 10 && eq_lower(t, "keep-alive", 10))
        flags[1] = 1;
    else if (n == 7 && eq_lower(t, "upgrade", 7))
        req->upgrade = 1;
    return 0;
}

struct semantics {
    int hosts;
    int has_te, unknown_coding;
    int conn_flags[2]; /* close, keep-alive */
    int has_upgrade_field;
};

/* Applies one field's meaning for framing and connection handling. */
static ssize_t field_semantics(struct http_request *req, const struct http_header *h, struct semantics *sem)
{
    const char *n = h->name;
    switch (h->name_len) {
    case 4:
        if (!eq_lower(n, "host", 4))
            break;
        if (++sem->hosts > 1)
            return fail(req, 400, "repeated Host header");
        if (!http_valid_host(h->value, h->value_len))
            return fail(req, 400, "invalid Host header");
        req->host = h->value;
        req->host_len = h->value_len;
        break;
    case 6:
        if (eq_lower(n, "expect", 6) && req->minor_version >= 1) {
            if (h->value_len == 12 && eq_lower(h->value, "100-continue", 12))
                req->expect_continue = 1;
            else
                return fail(req, 417, "unsupported expectation");
        }
        break;
    case 7:
        if (eq_lower(n, "upgrade", 7))
            sem->has_upgrade_field = 1;
        break;
    case 10:
        if (eq_lower(n, "connection", 10))
            each_token(h->value, h->value_len, conn_token, req, sem->conn_flags);
        break;
    case 14:
        if (!eq_lower(n, "content-length", 14))
            break;
        switch (parse_content_length(h->value, h->value_len, &req->content_length)) {
        case -1:
            return fail(req, 400, "invalid or conflicting Content-Length");
        case -2:
            return fail(req, 413, "request body too large");
        }
        break;
    case 17:
        if (!eq_lower(n, "transfer-encoding", 17))
            break;
        sem->has_te = 1;
        if (each_token(h->value, h->value_len, te_token, req, &sem->unknown_coding))
            return fail(req, 400, "chunked must be the final transfer coding");
        break;
    }
    return 0;
}

/*
 * authority-form is uri-host ":" port, both non-empty (RFC 9112 3.2.3).
 * Given a valid host[:port], the port's colon is the last one, after any
 * IPv6 literal.
 */
static int host_and_port(const char *t, size_t n)
{
    if (!http_valid_host(t, n))
        return 0;
    const char *colon = memrchr(t, ':', n), *bracket = memrchr(t, ']', n);
    return colon && colon > t && colon + 1 < t + n && (!bracket || colon > bracket);
}

/* Splits the target into authority, path and query by its form. */
static ssize_t split_target(struct http_request *req)
{
    const char *t = req->target, *end = t + req->target_len;
    if (req->method == HTTP_CONNECT) {
        if (!host_and_port(t, req->target_len))
            return fail(req, 400, "CONNECT needs an authority-form target");
        req->form = HTTP_FORM_AUTHORITY;
        req->authority = t;
        req->authority_len = req->target_len;
        return 0;
    }
    if (req->target_len == 1 && *t == '*') {
        if (req->method != HTTP_OPTIONS)
            return fail(req, 400, "asterisk-form target is only for OPTIONS");
        req->form = HTTP_FORM_ASTERISK;
        return 0;
    }
    const char *path = t;
    if (*t != '/') {
        size_t skip = (req->target_len > 7 && eq_lower(t, "http://", 7)) ? 7
                      : (req->target_len > 8 && eq_lower(t, "https://", 8)) ? 8 : 0;
        if (skip == 0)
            return fail(req, 400, "malformed request target");
        const char *a = t + skip;
        path = a;
        while (path < end && *path != '/' && *path != '?')
            path++;
        if (path == a || !http_valid_host(a, (size_t)(path - a)))
            return fail(req, 400, "malformed request target");
        req->form = HTTP_FORM_ABSOLUTE;
        req->authority = a;
        req->authority_len = (uint32_t)(path - a);
    }
    const char *q = memchr(path, '?', (size_t)(end - path));
    const char *path_end = q ? q : end;
    if (path == path_end) {
        /* An empty path means "/" (RFC 9112 3.2.1); the scheme's "//" ends
         * just before the authority and gives one inside the caller's buffer. */
        req->path = req->authority - 1;
        req->path_len = 1;
    } else {
        req->path = path;
        req->path_len = (uint32_t)(path_end - path);
    }
    if (q) {
        req->query = q + 1;
        req->query_len = (uint32_t)(end - q - 1);
    }
    return 0;
}

/* Everything decided once the whole head is there (RFC 9112 6.1, 6.3, 9.3). */
static ssize_t head_semantics(struct http_request *req, const struct http_limits *lim)
{
    struct semantics sem = {0};
    ssize_t r = split_target(req);
    if (r)
        return r;
    for (size_t i = 0; i < req->nheaders; i++)
        if ((r = field_semantics(req, &req->headers[i], &sem)))
            return r;
    if (req->minor_version >= 1 && sem.hosts == 0)
        return fail(req, 400, "missing Host header");
    if (sem.has_te && req->minor_version == 0)
        return fail(req, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (sem.has_te && req->content_length >= 0)
        return fail(req, 400, "both Content-Length and Transfer-Encoding");
    if (sem.unknown_coding)
        return fail(req, 501, "transfer coding not implemented");
    if (sem.has_te && !req->chunked)
        return fail(req, 400, "chunked must be the final transfer coding");
    if (req->content_length >= 0 && (uint64_t)req->content_length > lim->max_body)
        return fail(req, 413, "request body too large");
    if (req->minor_version >= 1)
        req->keep_alive = !sem.conn_flags[0];
    else
        req->keep_alive = sem.conn_flags[1] && !sem.conn_flags[0];
    req->upgrade = req->upgrade && sem.has_upgrade_field;
    return 0;
}

/* A head already seen incomplete is complete only if the new bytes hold the
 * blank line; look for it from just before them. */
static int has_head_end(const char *buf, size_t len, size_t last_len)
{
    size_t i = last_len > 3 ? last_len - 3 : 0;
    for (; i < len; i++) {
        const char *nl = memchr(buf + i, '\n', len - i);
        if (!nl)
            return 0;
        i = (size_t)(nl - buf);
        if (i + 1 < len && buf[i + 1] == '\n')
            return 1;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return 1;
    }
    return 0;
}

static void reset_request(struct http_request *req)
{
    struct http_header *h = req->headers;
    size_t cap = req->headers_cap;
    memset(req, 0, sizeof(*req));
    req->headers = h;
    req->headers_cap = cap;
    req->content_length = -1;
}

ssize_t http_parse_request(const char *buf, size_t len, size_t last_len,
                           const struct http_limits *lim, struct http_request *req)
{
    if (last_len && last_len <= len && len <= lim->max_head && !has_head_end(buf, len, last_len))
        return HTTP_INCOMPLETE;
    reset_request(req);
    struct scan s = {.p = buf, .buf = buf, .req = req, .lim = lim};
    s.truncated = len > lim->max_head;
    s.end = buf + (s.truncated ? lim->max_head : len);
    /* RFC 9112 2.2: ignore empty lines before the request line. */
    for (int i = 0; i < 4 && s.p < s.end && (*s.p == '\r' || *s.p == '\n'); i++)
        if (line_end(&s) <= 0)
            return s.p + 1 >= s.end ? more(&s) : fail(req, 400, "malformed request line");
    ssize_t r;
    if ((r = parse_method(&s)) || (r = parse_target(&s)) || (r = parse_version(&s)))
        return r;
    while ((r = parse_field(&s)) == 1)
        ;
    if (r != 0)
        return r;
    if ((r = head_semantics(req, lim)))
        return r;
    return s.p - buf;
}

int http_find_header(const struct http_request *req, const char *name, size_t name_len, size_t from)
{
    for (size_t i = from; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        if (h->name_len == name_len && strncasecmp(h->name, name, name_len) == 0)
            return (int)i;
    }
    return -1;
}

/*
 * The chunked decoder is a byte-driven state machine (RFC 9112 7.1):
 * chunk-size [ext] CRLF data CRLF ... 0 [ext] CRLF *(trailer CRLF) CRLF.
 */
enum {
    CH_SIZE_FIRST, /* first hex digit of a size line */
    CH_SIZE,       /* more hex digits */
    CH_SIZE_WS,    /* whitespace after the size: only ';' or the end follow */
    CH_EXT,        /* extensions, up to the line's end */
    CH_SIZE_LF,    /* CR seen after the size line */
    CH_DATA,
    CH_DATA_CR,    /* data done, CRLF expected */
    CH_DATA_LF,
    CH_TRAILER,    /* at the start of a trailer line or the final CRLF */
    CH_TNAME,
    CH_TVALUE,
    CH_TVALUE_LF,
    CH_END_LF,     /* CR of the last line seen */
    CH_DONE
};

#define CH_MAX_LINE 4096
#define CH_MAX_TRAILERS 100

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

static ssize_t ch_fail(struct http_chunked *d, int status)
{
    d->status = status;
    return HTTP_ERROR;
}

/* The size line is over: either data follows or, for size 0, trailers. */
static ssize_t ch_size_done(struct http_chunked *d)
{
    if (d->total + d->remaining > d->max_body)
        return ch_fail(d, 413);
    d->state = d->remaining ? CH_DATA : CH_TRAILER;
    d->line_len = 0; /* the first trailer line gets a budget of its own */
    return 0;
}

/* Advances the machine by one control byte (anything but chunk data). */
static ssize_t ch_byte(struct http_chunked *d, int c)
{
    if (++d->line_len > CH_MAX_LINE)
        return ch_fail(d, 400);
    switch (d->state) {
    case CH_SIZE_FIRST:
    case CH_SIZE:
        if (hexval(c) >= 0) {
            if (++d->hex_digits > 15)
                return ch_fail(d, 400);
            d->remaining = d->remaining * 16 + (uint64_t)hexval(c);
            d->state = CH_SIZE;
            return 0;
        }
        if (d->state == CH_SIZE_FIRST)
            return ch_fail(d, 400);
        __attribute__((fallthrough));
    case CH_SIZE_WS: /* chunk-ext = *( BWS ";" ... ) (RFC 9112 7.1.1) */
        if (c == ';' || c == ' ' || c == '\t') {
            d->state = c == ';' ? CH_EXT : CH_SIZE_WS;
            return 0;
        }
        __attribute__((fallthrough)); /* the size line ends here */
    case CH_EXT:
        if (c == '\r') {
            d->state = CH_SIZE_LF;
            return 0;
        }
        if (c == '\n')
            return ch_size_done(d);
        if (d->state == CH_EXT && IN_SET(value_set, c))
            return 0;
        return ch_fail(d, 400);
    case CH_SIZE_LF:
        return c == '\n' ? ch_size_done(d) : ch_fail(d, 400);
    case CH_DATA_CR:
        if (c == '\r') {
            d->state = CH_DATA_LF;
            return 0;
        }
        __attribute__((fallthrough)); /* a lone LF ends the data too */
    case CH_DATA_LF:
        if (c != '\n')
            return ch_fail(d, 400);
        d->state = CH_SIZE_FIRST;
        d->line_len = 0;
        d->hex_digits = 0;
        return 0;
    case CH_TRAILER:
        if (c == '\r') {
            d->state = CH_END_LF;
            return 0;
        }
        if (c == '\n') {
            d->state = CH_DONE;
            return 0;
        }
        if (!IN_SET(tchar_set, c) || ++d->trailers > CH_MAX_TRAILERS)
            return ch_fail(d, 400);
        d->state = CH_TNAME;
        return 0;
    case CH_TNAME:
        if (c == ':')
            d->state = CH_TVALUE;
        else if (!IN_SET(tchar_set, c))
            return ch_fail(d, 400);
        return 0;
    case CH_TVALUE:
        if (c == '\r') {
            d->state = CH_TVALUE_LF;
            return 0;
        }
        if (c != '\n')
            return IN_SET(value_set, c) ? 0 : ch_fail(d, 400);
        __attribute__((fallthrough)); /* a lone LF ends the field */
    case CH_TVALUE_LF:
        if (c != '\n')
            return ch_fail(d, 400);
        d->state = CH_TRAILER;
        d->line_len = 0;
        return 0;
    case CH_END_LF:
        if (c != '\n')
            return ch_fail(d, 400);
        d->state = CH_DONE;
        return 0;
    }
    return ch_fail(d, 400);
}

ssize_t http_chunked_decode(struct http_chunked *d, char *buf, size_t *len)
{
    size_t src = 0, dst = 0, n = *len;
    if (d->state == CH_DONE)
        return ch_fail(d, 400);
    while (src < n) {
        if (d->state == CH_DATA) {
            size_t take = n - src;
            if (take > d->remaining)
                take = (size_t)d->remaining;
            if (dst != src)
                memmove(buf + dst, buf + src, take);
            src += take;
            dst += take;
            d->remaining -= take;
            d->total += take;
            if (d->remaining == 0) {
                d->state = CH_DATA_CR;
                d->line_len = 0;
            }
            continue;
        }
        if (ch_byte(d, (unsigned char)buf[src++]) < 0)
            return HTTP_ERROR;
        if (d->state == CH_DONE) {
            size_t rest = n - src;
            if (rest && dst != src)
                memmove(buf + dst, buf + src, rest);
            *len = dst;
            return (ssize_t)rest;
        }
    }
    *len = dst;
    return HTTP_INCOMPLETE;
}

/* --- responses ---------------------------------------------------------- */

/*
 * The response head parser: the same forward scan as the request's, with
 * its own status line and a stricter view of Transfer-Encoding (a proxy
 * must frame what it forwards, so only "chunked" alone is accepted).
 */
static ssize_t rfail(struct http_response *res, const char *why)
{
    res->error = why;
    return HTTP_ERROR;
}

static ssize_t rmore(const struct scan *s, struct http_response *res)
{
    return s->truncated ? rfail(res, "response head too large") : HTTP_INCOMPLETE;
}

/* "HTTP/1." DIGIT SP 3DIGIT [SP reason-phrase] line end. A missing SP
 * before an empty reason is accepted, as RFC 9112 4 asks of recipients. */
static ssize_t parse_status_line(struct scan *s, struct http_response *res)
{
    static const char proto[] = "HTTP/1.";
    for (size_t i = 0; i < 7; i++, s->p++) {
        if (s->p == s->end)
            return rmore(s, res);
        if (*s->p != proto[i])
            return rfail(res, i < 5 ? "not an HTTP response" : "unsupported HTTP version");
    }
    if (s->p == s->end)
        return rmore(s, res);
    if (*s->p < '0' || *s->p > '9')
        return rfail(res, "malformed HTTP version");
    res->minor_version = *s->p++ - '0';
    if (s->p == s->end)
        return rmore(s, res);
    if (*s->p++ != ' ')
        return rfail(res, "malformed status line");
    int code = 0;
    for (int i = 0; i < 3; i++, s->p++) {
        if (s->p == s->end)
            return rmore(s, res);
        if (*s->p < '0' || *s->p > '9')
            return rfail(res, "malformed status code");
        code = code * 10 + (*s->p - '0');
    }
    if (code < 100)
        return rfail(res, "status code out of range");
    res->status = code;
    if (s->p == s->end)
        return rmore(s, res);
    res->reason = s->p;
    if (*s->p == ' ') {
        res->reason = ++s->p;
        while (s->p < s->end && IN_SET(value_set, *s->p))
            s->p++;
        if (s->p == s->end)
            return rmore(s, res);
    }
    res->reason_len = (uint32_t)(s->p - res->reason);
    int r = line_end(s);
    if (r < 0)
        return rfail(res, "malformed status line");
    return r == 0 ? rmore(s, res) : 0;
}

/* One field line: 1 stored, 0 at the blank line, or an HTTP_* code. */
static ssize_t parse_rfield(struct scan *s, struct http_response *res)
{
    if (s->p == s->end)
        return rmore(s, res);
    if (*s->p == '\r' || *s->p == '\n') {
        int r = line_end(s);
        if (r < 0)
            return rfail(res, "bare CR in header");
        return r == 0 ? rmore(s, res) : 0;
    }
    if (*s->p == ' ' || *s->p == '\t')
        return rfail(res, "obsolete line folding in header");
    if (res->nheaders >= s->lim->max_headers || res->nheaders >= res->headers_cap)
        return rfail(res, "too many header fields");
    const char *name = s->p;
    while (s->p < s->end && IN_SET(tchar_set, *s->p))
        s->p++;
    if (s->p == s->end)
        return rmore(s, res);
    if (*s->p != ':' || s->p == name)
        return rfail(res, "malformed header field name");
    const char *name_end = s->p++;
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t'))
        s->p++;
    const char *value = s->p;
    while (s->p < s->end && IN_SET(value_set, *s->p))
        s->p++;
    if (s->p == s->end)
        return rmore(s, res);
    const char *value_end = s->p;
    int r = line_end(s);
    if (r < 0)
        return rfail(res, *value_end == '\r' ? "bare CR in header" : "invalid character in header value");
    if (r == 0)
        return rmore(s, res);
    while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t'))
        value_end--;
    struct http_header *h = &res->headers[res->nheaders++];
    h->name = name;
    h->name_len = (uint32_t)(name_end - name);
    h->value = value;
    h->value_len = (uint32_t)(value_end - value);
    return 1;
}

/* Calls fn for each non-empty element of a comma-separated list. */
static void each_element(const char *v, size_t n, void (*fn)(const char *t, size_t len, void *arg), void *arg)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t stop = i;
        while (stop > start && (v[stop - 1] == ' ' || v[stop - 1] == '\t'))
            stop--;
        if (stop > start)
            fn(v + start, stop - start, arg);
    }
}

struct rsem {
    int te_tokens, te_chunked; /* codings listed; how many were "chunked" */
    int close, keep_alive, upgrade_token, upgrade_field;
};

static void rte_token(const char *t, size_t n, void *arg)
{
    struct rsem *sem = arg;
    sem->te_tokens++;
    if (n == 7 && eq_lower(t, "chunked", 7))
        sem->te_chunked++;
}

static void rconn_token(const char *t, size_t n, void *arg)
{
    struct rsem *sem = arg;
    if (n == 5 && eq_lower(t, "close", 5))
        sem->close = 1;
    else if (n == 10 && eq_lower(t, "keep-alive", 10))
        sem->keep_alive = 1;
    else if (n == 7 && eq_lower(t, "upgrade", 7))
        sem->upgrade_token = 1;
}

/* Framing and connection handling from the fields (RFC 9112 6.1, 6.3, 9.3). */
static ssize_t response_semantics(struct http_response *res)
{
    struct rsem sem = {0};
    for (size_t i = 0; i < res->nheaders; i++) {
        const struct http_header *h = &res->headers[i];
        if (h->name_len == 14 && eq_lower(h->name, "content-length", 14)) {
            if (parse_content_length(h->value, h->value_len, &res->content_length) < 0)
                return rfail(res, "invalid or conflicting Content-Length");
        } else if (h->name_len == 17 && eq_lower(h->name, "transfer-encoding", 17)) {
            res->has_te = 1;
            each_element(h->value, h->value_len, rte_token, &sem);
        } else if (h->name_len == 10 && eq_lower(h->name, "connection", 10)) {
            each_element(h->value, h->value_len, rconn_token, &sem);
        } else if (h->name_len == 7 && eq_lower(h->name, "upgrade", 7)) {
            sem.upgrade_field = 1;
        }
    }
    if (res->has_te) {
        /* a coding other than chunked could not be forwarded as it is */
        if (sem.te_tokens != 1 || sem.te_chunked != 1)
            return rfail(res, "unsupported transfer coding");
        res->chunked = 1;
        if (res->content_length >= 0)
            sem.close = 1; /* both: Transfer-Encoding wins, the connection ends */
        res->content_length = -1;
    }
    res->keep_alive = res->minor_version >= 1 ? !sem.close : sem.keep_alive && !sem.close;
    res->upgrade = sem.upgrade_token && sem.upgrade_field;
    return 0;
}

ssize_t http_parse_response(const char *buf, size_t len, size_t last_len, const struct http_limits *lim,
                            struct http_response *res)
{
    if (last_len && last_len <= len && len <= lim->max_head && !has_head_end(buf, len, last_len))
        return HTTP_INCOMPLETE;
    struct http_header *h = res->headers;
    size_t cap = res->headers_cap;
    memset(res, 0, sizeof(*res));
    res->headers = h;
    res->headers_cap = cap;
    res->content_length = -1;
    struct scan s = {.p = buf, .buf = buf, .lim = lim};
    s.truncated = len > lim->max_head;
    s.end = buf + (s.truncated ? lim->max_head : len);
    ssize_t r = parse_status_line(&s, res);
    if (r)
        return r;
    while ((r = parse_rfield(&s, res)) == 1)
        ;
    if (r != 0)
        return r;
    if ((r = response_semantics(res)))
        return r;
    return s.p - buf;
}

enum http_body_kind http_response_body(const struct http_response *res, enum http_method request_method)
{
    if (res->status < 200 || res->status == 204 || res->status == 304 || request_method == HTTP_HEAD)
        return HTTP_BODY_NONE;
    if (res->chunked)
        return HTTP_BODY_CHUNKED;
    if (res->content_length >= 0)
        return HTTP_BODY_LENGTH;
    return HTTP_BODY_CLOSE;
}

int http_find_response_header(const struct http_response *res, const char *name, size_t name_len, size_t from)
{
    for (size_t i = from; i < res->nheaders; i++) {
        const struct http_header *h = &res->headers[i];
        if (h->name_len == name_len && strncasecmp(h->name, name, name_len) == 0)
            return (int)i;
    }
    return -1;
}
