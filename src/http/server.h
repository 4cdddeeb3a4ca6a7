/*
 * The HTTP engine of one worker: accepts connections on libuv, reads,
 * parses, routes, runs handlers and writes responses.
 *
 * A request's way: bytes are read into the connection's buffer; the parser
 * gives a view into it; the router picks a handler; the body (if any) is
 * read whole, up to limits.max_body, before the handler runs; the handler
 * answers now or later through the http_* response calls below. Responses
 * of pipelined requests are written in order, together, in one write when
 * they are ready together.
 *
 * Streaming routes (ROUTE_STREAM, http/router.h) differ: the handler runs
 * as soon as the head is in, reads the body as it arrives with
 * http_body_start (pausing when it cannot take more), and may write the
 * response in pieces (http_stream_*), told when the client has taken the
 * output (http_on_drain). A handler may also take the connection over
 * after a 101 answer (http_upgrade). This is what the proxy is built on.
 *
 * Ownership and lifetime:
 * - struct http_exchange is one request and its response. It belongs to the
 *   engine. A handler may keep the pointer until it calls http_finish() /
 *   http_respond() / http_error() (or http_end_chunks()); after that it must
 *   not touch it. If the client goes away first, the engine calls the
 *   exchange's on_abort callback (when set) and the handler must then drop
 *   the pointer without answering.
 * - Everything in x->req and x->body points into the connection's buffer
 *   and is valid until the handler answers.
 * - Buffers belong to active connections only: an idle keep-alive
 *   connection holds no read buffer, no exchange and no output buffer.
 */
#ifndef COHORT_HTTP_SERVER_H
#define COHORT_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "http/parser.h"
#include "http/router.h"

struct http_server;
struct http_conn;
struct metrics_slot;

struct http_exchange {
    struct http_request req;
    struct route_match match;
    struct http_conn *conn;
    struct http_server *srv;
    char *body;              /* whole request body (decoded), NUL-terminated */
    size_t body_len;
    uint64_t start_ns;       /* when the head was complete */
    void *handler_data;      /* free for the handler */
    void (*on_abort)(struct http_exchange *x);
    struct http_filter_run *filters; /* the route's filters at work (http/filter.h); NULL: none */
    int status;              /* status of the response being written */
    uint64_t bytes_out;      /* response bytes (head and body) written for it */
    const char *log_peer;    /* whom the handler asked ("host:port"): the access log's upstream */
    char request_id[64 + 1]; /* see http_request_id(); NUL-terminated */
    uint8_t request_id_len;  /* 0 until first asked for */
    unsigned head_only : 1;  /* HEAD: write no body */
    unsigned started : 1;    /* status line written */
    unsigned chunking : 1;   /* response uses chunked coding */
    unsigned close : 1;      /* connection closes after this response */
    unsigned cut : 1;        /* the response was cut short (http_abort) */

    /* engine-private */
    unsigned done : 1;       /* answered */
    unsigned zombie : 1;     /* the connection went away before the answer */
    unsigned continue_sent : 1;
    uint32_t head_len;
    uint32_t raw_body;       /* body bytes (as sent) consumed from the buffer */
    uint64_t body_left;      /* Content-Length bytes still to come */
    char *body_store;        /* body that did not fit the read buffer */
    size_t body_cap;
    struct http_chunked dec;
    /* streaming (ROUTE_STREAM) */
    void (*on_body)(struct http_exchange *x, const char *data, size_t len, int status);
    void (*on_drain)(struct http_exchange *x);
    size_t drain_mark;
    uint64_t body_in;        /* body bytes (as sent) read so far */
    unsigned streaming : 1;  /* a streaming route's exchange */
    unsigned body_paused : 1;
    unsigned body_done : 1;  /* the whole body was handed over (or failed) */
    unsigned tunnel : 1;     /* the connection was taken over (http_upgrade) */
    struct http_header headers[]; /* limits.max_headers entries */
};

/* Called once when a drain finished (no connection left). */
typedef void (*http_drained_fn)(struct http_server *srv, void *arg);

struct http_server_stats {
    uint64_t conns_open;
    uint64_t requests;
};

/*
 * Creates the engine on a loop for a config. The router is the caller's and
 * must outlive the server. `slot` (may be NULL) receives the counters.
 * Returns NULL on allocation failure.
 */
struct http_server *http_server_new(uv_loop_t *loop, const struct cfg *cfg, struct router *router,
                                    struct metrics_slot *slot);

/* What a listener is: its connections carry these (http_conn.lflags). */
#define HTTP_LISTEN_TLS 1u  /* connections speak TLS */
#define HTTP_LISTEN_UNIX 2u /* a Unix domain socket: no TCP options, the peer is "unix:" */

/* Starts accepting on an already bound and listening socket fd (TCP, or a
 * Unix socket with HTTP_LISTEN_UNIX); the server owns the fd from then
 * on. A server may listen on several. */
int http_server_listen_fd(struct http_server *srv, int fd, unsigned flags);

/* Accepts a connection waiting on `from` (an IPC pipe with a pending
 * handle, TCP or Unix); it is served like one from a listener with
 * `flags`, also while draining. */
void http_server_adopt(struct http_server *srv, uv_stream_t *from, unsigned flags);

/*
 * Graceful stop: stops accepting, closes idle connections, lets requests in
 * flight finish and answers each with Connection: close. `done` runs once
 * no connection is left.
 */
void http_server_drain(struct http_server *srv, http_drained_fn done, void *arg);

/* Closes every handle; the server is freed in the last close callback. */
void http_server_close(struct http_server *srv);

/* How many 500 answers this server gave (a worker's own faults; 502-504
 * name someone else's). */
uint64_t http_server_internal_errors(const struct http_server *srv);

/* Open connections right now. */
size_t http_server_conns(const struct http_server *srv);

/* --- responses ------------------------------------------------------- */

/* Whole response in one call: status, Content-Type, body. */
void http_respond(struct http_exchange *x, int status, const char *content_type, const void *body,
                  size_t len);

/* Error response: {"error": msg} with the status; `msg` is escaped. */
void http_error(struct http_exchange *x, int status, const char *msg);

/* Piecewise: http_begin, any number of http_header, then http_finish (a body
 * of known length) or http_begin_chunks / http_chunk / http_end_chunks. */
void http_begin(struct http_exchange *x, int status);
void http_header(struct http_exchange *x, const char *name, const char *value, size_t value_len);
/* The same with a name that is a slice (a proxy forwarding fields). */
void http_header_n(struct http_exchange *x, const char *name, size_t name_len, const char *value, size_t value_len);
void http_finish(struct http_exchange *x, const char *content_type, const void *body, size_t len);
void http_begin_chunks(struct http_exchange *x, const char *content_type);
void http_chunk(struct http_exchange *x, const void *data, size_t len);
void http_end_chunks(struct http_exchange *x);

/*
 * Hands the rest of the response to the caller's file: after http_begin
 * and headers, writes Content-Length and the head, then sends `len` bytes
 * of `fd` from `offset` with sendfile(2) as the socket drains. The engine
 * closes fd when done.
 */
void http_finish_file(struct http_exchange *x, const char *content_type, int fd, uint64_t offset,
                      uint64_t len);

/* --- streaming (routes added with ROUTE_STREAM) ------------------------- */

/*
 * Starts handing the request body to `fn`, decoded (Content-Length or
 * chunked), in pieces as it arrives: `data` is valid only during the call.
 * `status` is 0 while more follows, 1 with the last piece (possibly
 * empty), or a negative errno when the body cannot be read: -EPROTO
 * malformed chunked coding, -EMSGSIZE a chunked body over a limit of the
 * decoder, -ECONNRESET the client went away mid-body. After a negative
 * status the handler answers (http_error: 400 for -EPROTO and
 * -ECONNRESET, 413 for -EMSGSIZE) or, once its response started, calls
 * http_abort. A request without a body gets one call with status 1.
 * Sends "100 Continue" first when the client asked for it. The callback
 * may call http_body_pause, and may answer the request (which then closes
 * the connection if the body was not all read).
 */
typedef void (*http_body_fn)(struct http_exchange *x, const char *data, size_t len, int status);
void http_body_start(struct http_exchange *x, http_body_fn fn);

/* Stops handing out body pieces (and, once the read buffer is full,
 * reading from the client) until http_body_resume. */
void http_body_pause(struct http_exchange *x);
void http_body_resume(struct http_exchange *x);

/* 1 when the request has a body (Content-Length > 0 or chunked). */
int http_req_has_body(const struct http_exchange *x);

/*
 * Ends the head begun with http_begin and headers (which must hold
 * Content-Type if wanted) for a body written in pieces: `length` >= 0
 * writes Content-Length; -1 writes chunked coding (for an HTTP/1.0 client:
 * no framing, and the connection closes after the body). Then
 * http_stream_write any number of times and http_stream_end.
 * Writes go out at the end of the loop's iteration (or sooner when the
 * engine flushes), so pieces written together leave in one write.
 * http_stream_write returns the bytes queued for the client and not yet
 * written: above a mark of its choosing the caller stops producing and
 * asks to be told (http_on_drain).
 */
void http_stream_head(struct http_exchange *x, int64_t length);
size_t http_stream_write(struct http_exchange *x, const void *data, size_t len);
void http_stream_end(struct http_exchange *x);

/* Calls fn once, when the output queued for the client falls to `mark`
 * bytes or below (at once if it already has). */
void http_on_drain(struct http_exchange *x, void (*fn)(struct http_exchange *x), size_t mark);

/* Bytes of output queued for the client, not yet written. */
size_t http_out_queued(const struct http_exchange *x);

/* The response cannot be completed (its source failed midway): ends the
 * exchange and closes the connection once what was queued is written, so
 * that the client sees the response cut short. */
void http_abort(struct http_exchange *x);

/*
 * Takes the connection over (WebSocket and other Upgrade protocols): after
 * http_begin(x, 101) and its headers, ends the head, queues it, and
 * returns the client's stream; `rest` is what the client sent after the
 * request head (already part of the new protocol). From then on the
 * engine neither reads, writes nor times out the connection: the caller
 * uses libuv directly (its writes queue after the head), may set
 * stream->data, and ends with http_upgrade_end, which closes it. If the
 * connection is closed under it (a server shutdown), on_abort is called
 * first, as for any exchange. NULL when the client is gone already.
 */
uv_stream_t *http_upgrade(struct http_exchange *x, const char **rest, size_t *rest_len);
void http_upgrade_end(struct http_exchange *x);

/*
 * The request's id: its X-Request-Id when that is a sane token (see
 * http/reqid.h), otherwise one generated for it; the same on every call.
 * Echoed as X-Request-Id in the response, written in the access log; a
 * proxy passes it upstream. Valid while the exchange is.
 */
const char *http_request_id(struct http_exchange *x, size_t *len);

/* The client's address as text ("192.0.2.7", "2001:db8::7"; "unix:" for
 * a client of a Unix socket, whose peer has no address): its length, 0
 * when unknown. Looked up once per connection. */
size_t http_peer_addr(struct http_exchange *x, char *buf, size_t len);

/* Header value of the request, NULL if absent. */
const char *http_req_header(const struct http_exchange *x, const char *name, size_t *len);

/* The status line's reason phrase for a code. */
const char *http_status_text(int status);

#endif
