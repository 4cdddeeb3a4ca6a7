/*
 * HTTP/1.x message parser (RFC 9110, RFC 9112).
 *
 * Pure: bytes in, a view out. No I/O, no allocation, no global state. Every
 * pointer in a parsed request or response points into the caller's buffer
 * and stays valid as long as those bytes do not move.
 *
 * Incremental by re-parsing: the caller passes everything it has of the
 * head; the answer is the head's length, HTTP_INCOMPLETE, or HTTP_ERROR with
 * the status to answer. A head split at any byte boundary parses exactly as
 * when whole: a prefix of a valid head is always INCOMPLETE, and a prefix of
 * an invalid one is INCOMPLETE or fails with the same status. `last_len`
 * (what was already seen and found incomplete) lets a slowly arriving head
 * be checked for its end without re-reading everything.
 *
 * Bodies are decoded by http_chunked_decode() (in place) or counted from
 * Content-Length by the caller.
 *
 * Responses (http_parse_response) follow the same contract; a proxy uses
 * them to read what an upstream server answers.
 */
#ifndef COHORT_HTTP_PARSER_H
#define COHORT_HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP_INCOMPLETE (-2)
#define HTTP_ERROR (-1)

enum http_method {
    HTTP_OTHER = 0, /* a valid token we do not implement */
    HTTP_GET,
    HTTP_HEAD,
    HTTP_POST,
    HTTP_PUT,
    HTTP_DELETE,
    HTTP_PATCH,
    HTTP_OPTIONS,
    HTTP_CONNECT,
    HTTP_TRACE,
    HTTP_METHOD_COUNT
};

enum http_target_form {
    HTTP_FORM_ORIGIN,   /* /path?query */
    HTTP_FORM_ABSOLUTE, /* http://host/path?query */
    HTTP_FORM_AUTHORITY,/* host:port (CONNECT only) */
    HTTP_FORM_ASTERISK  /* * (OPTIONS only) */
};

struct http_header {
    const char *name;
    const char *value; /* leading and trailing whitespace removed */
    uint32_t name_len;
    uint32_t value_len;
};

struct http_limits {
    size_t max_uri;         /* longer request-target: 414 */
    size_t max_head;        /* longer head: 431 */
    size_t max_headers;     /* more fields: 431; at most the array's size */
    uint64_t max_body;      /* larger Content-Length: 413 */
};

struct http_request {
    /* request line */
    enum http_method method;
    enum http_target_form form;
    const char *method_str;
    const char *target;     /* as sent */
    const char *path;       /* path part of target (origin or absolute form) */
    const char *query;      /* after '?', NULL if none */
    const char *authority;  /* absolute/authority form: the host[:port] */
    uint32_t method_len, target_len, path_len, query_len, authority_len;
    int minor_version;      /* HTTP/1.<minor>: 0 or 1 (other minors act as 1) */

    /* fields: the caller provides the array and its capacity */
    struct http_header *headers;
    size_t nheaders;
    size_t headers_cap;

    /* framing and connection semantics, derived from the fields */
    const char *host;       /* Host field value, NULL if absent */
    uint32_t host_len;
    int64_t content_length; /* -1 when absent */
    unsigned chunked : 1;
    unsigned keep_alive : 1;
    unsigned expect_continue : 1;
    unsigned upgrade : 1;   /* Connection: upgrade with an Upgrade field */

    /* on HTTP_ERROR */
    int status;             /* 400, 413, 414, 417, 431, 501, 505 */
    const char *reason;     /* a short sentence for the JSON error body */
};

/*
 * Parses a request head from buf[0..len). `req->headers` and
 * `req->headers_cap` must be set by the caller. Returns the head's length
 * (> 0), HTTP_INCOMPLETE, or HTTP_ERROR with req->status and req->reason set.
 */
ssize_t http_parse_request(const char *buf, size_t len, size_t last_len,
                           const struct http_limits *lim, struct http_request *req);

/*
 * Finds a field by name (case-insensitive). Returns its index or -1.
 * `from` lets a caller walk repeated fields.
 */
int http_find_header(const struct http_request *req, const char *name, size_t name_len,
                     size_t from);

/* "GET" for HTTP_GET, NULL for HTTP_OTHER. */
const char *http_method_name(enum http_method m);

/* 1 when `s` is a valid Host value: reg-name, IPv4 or [IPv6], optional :port. */
int http_valid_host(const char *s, size_t len);

/*
 * Chunked body decoder, in place. The caller zeroes it and sets max_body
 * before the first call. Each call takes the bytes buf[0..*len), moves the decoded data to
 * the front of buf and sets *len to the number of decoded bytes. Returns:
 *   >= 0  the body is complete; the value is the number of bytes after the
 *         body's end (start of the next message) that were left in place at
 *         buf + *len ... buf + *len + value
 *   HTTP_INCOMPLETE  more input needed (all input consumed)
 *   HTTP_ERROR       malformed (400) or larger than max_body (413): status
 *                    in dec->status
 * The total decoded size is in dec->total.
 */
struct http_chunked {
    uint64_t remaining;  /* data bytes left in the current chunk */
    uint64_t total;      /* decoded so far */
    uint64_t max_body;
    uint32_t line_len;   /* bytes of the current size or trailer line */
    uint16_t trailers;   /* trailer fields seen */
    uint8_t state;
    uint8_t hex_digits;
    int status;
};

ssize_t http_chunked_decode(struct http_chunked *dec, char *buf, size_t *len);

/* --- responses (what a proxy reads from an upstream server) ------------ */

/* How a response's body is delimited (RFC 9112 6.3). */
enum http_body_kind {
    HTTP_BODY_NONE,    /* 1xx, 204, 304, or the answer to HEAD */
    HTTP_BODY_LENGTH,  /* Content-Length bytes */
    HTTP_BODY_CHUNKED, /* chunked coding: decode with http_chunked_decode() */
    HTTP_BODY_CLOSE    /* everything until the server closes the connection */
};

struct http_response {
    int minor_version;      /* HTTP/1.<minor> */
    int status;             /* 100..999 */
    const char *reason;     /* reason phrase, may be empty */
    uint32_t reason_len;

    /* fields: the caller provides the array and its capacity */
    struct http_header *headers;
    size_t nheaders;
    size_t headers_cap;

    int64_t content_length; /* -1 when absent (or overridden by Transfer-Encoding) */
    unsigned chunked : 1;   /* Transfer-Encoding with chunked last */
    unsigned has_te : 1;    /* Transfer-Encoding present (chunked or not) */
    unsigned keep_alive : 1;/* the connection may carry another request */
    unsigned upgrade : 1;   /* Connection: upgrade with an Upgrade field */

    const char *error;      /* on HTTP_ERROR: a short sentence, for logs */
};

/*
 * Parses a response head from buf[0..len), with the same incremental
 * contract as http_parse_request(): the head's length, HTTP_INCOMPLETE, or
 * HTTP_ERROR with res->error set (a head longer than lim->max_head, more
 * than lim->max_headers fields, a malformed status line or field, or
 * conflicting Content-Length values). lim->max_uri and max_body are not
 * used. A 1xx head is complete by itself: the final response follows it.
 * A Transfer-Encoding field overrides Content-Length (which is then
 * reported as -1) and makes keep_alive 0, as RFC 9112 6.3 asks of a proxy.
 */
ssize_t http_parse_response(const char *buf, size_t len, size_t last_len, const struct http_limits *lim,
                            struct http_response *res);

/* How the body of a parsed response is framed, given the request's method. */
enum http_body_kind http_response_body(const struct http_response *res, enum http_method request_method);

/* Finds a field of a response by name (case-insensitive): index or -1. */
int http_find_response_header(const struct http_response *res, const char *name, size_t name_len, size_t from);

#endif
