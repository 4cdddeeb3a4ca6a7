/*
 * The HTTP engine's private declarations, shared by its files:
 *
 *   conn.c      connections: accept, read, write, send files, close; the
 *               engine's free lists and the output buffer
 *   response.c  responses: status line, fields, whole bodies, chunks
 *   stream.c    streaming: bodies in pieces both ways, drain, 101 tunnels
 *   server.c    the request cycle (read, parse, route, handler, next
 *               pipelined request), timeouts, the server's life
 *
 * A connection is in one state at a time, and in the timeout list of that
 * state (core/timeouts.h); every list holds connections in the order they
 * entered it, all with the same timeout, so a once-a-second sweep only
 * looks at the heads:
 *
 *   HEAD   waiting for (the rest of) a request head  timeouts.header, 408
 *   BODY   reading a request body                    timeouts.body, 408
 *   BUSY   a handler is working                      none
 *   IDLE   keep-alive, nothing buffered              timeouts.keepalive
 *   SEND   the client does not read our output       timeouts.send
 *   LINGER closing: our side shut, draining input    2 s
 *
 * Output is double-buffered: `out` collects responses (pipelined ones
 * together) while `inflight` is being written; one write carries what is
 * ready. Reading continues into free space of the read buffer while a
 * handler works or output drains, and stops when it is full.
 *
 * Streaming routes: the handler runs in BUSY as soon as the head is in;
 * body bytes stay in the read buffer (grown to STREAM_RBUF) until it asks
 * for them, and are handed to it from the request cycle, so that every
 * call into the handler happens from server_process() and the
 * connection's state is settled after it. Pieces of a streamed response
 * written outside server_process() are flushed by a check handle at the
 * end of the loop's iteration, together.
 */
#ifndef COHORT_HTTP_ENGINE_H
#define COHORT_HTTP_ENGINE_H

#include <string.h>
#include <time.h>

#include "core/freelist.h"
#include "core/metrics.h"
#include "core/timeouts.h"
#include "http/filter.h"
#include "http/server.h"

#define RBUF_SIZE 8192
#define OBUF_SIZE 8192
#define LINGER_MS 2000
#define DRAIN_IDLE_GRACE_MS 1000
#define OUT_HIGH_WATER (256 * 1024)
#define STREAM_RBUF (64 * 1024)

enum conn_state { ST_HEAD, ST_BODY, ST_BUSY, ST_IDLE, ST_SEND, ST_LINGER, ST_COUNT };

struct obuf {
    uv_write_t req;
    struct http_conn *conn;
    size_t len, cap, sent;
    char data[];
};

struct file_send {
    uv_poll_t poll;
    struct http_conn *conn;
    int fd, sock;
    uint64_t offset, left;
    unsigned polling : 1;
};

struct http_conn {
    union {                  /* the client's stream: TCP, or a Unix socket (lflags) */
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    };
    struct http_server *srv;
    struct tl_node tn;       /* in srv->lists[state] */
    char *buf;
    uint32_t cap, len;       /* read buffer */
    uint32_t start;          /* first byte of the current request */
    uint32_t seen;           /* bytes of the head already found incomplete */
    struct http_exchange *x;
    struct obuf *out, *inflight;
    struct file_send *file;
    uint8_t state;
    uint8_t lflags;          /* its listener's HTTP_LISTEN_* flags */
    uint8_t peer_family;     /* 0: not looked up; AF_INET, AF_INET6, AF_UNIX; 0xff: unknown */
    uint8_t peer[16];        /* the client's address, for the access log */
    unsigned reading : 1;
    unsigned closing : 1;    /* close once the output is written */
    unsigned closed : 1;     /* handle closing */
    unsigned in_process : 1;
    unsigned got_bytes : 1;  /* any byte of the current head arrived */
    unsigned tunnel : 1;     /* taken over by a handler (http_upgrade) */
    unsigned peer_eof : 1;   /* the client half-closed mid-body */
    unsigned flush_pending : 1;
    struct list_node flush_link; /* in srv->flushq */
};

/* A listening socket of the server; conn_on_connection finds it as the
 * handle's data. */
struct http_listener {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    };
    struct http_server *srv;
    unsigned flags;          /* HTTP_LISTEN_* */
};

struct http_server {
    uv_loop_t *loop;
    const struct cfg *cfg;
    struct router *router;
    struct metrics_slot *slot;
    struct metrics_slot local_slot;
    struct http_limits limits;
    struct http_listener **listeners;
    int nlisteners;          /* open ones: closed when draining */
    uv_timer_t sweep;
    uv_check_t flusher;      /* writes streamed pieces at the end of an iteration */
    struct list_node flushq;
    uint64_t max_body;       /* limits.max_body; the parser's own is unlimited */
    struct tl_list lists[ST_COUNT];
    size_t nconns;
    uint64_t internal_errors; /* 500 answers: faults of this worker's own */
    /* free buffers and exchanges */
    struct freelist rfree, ofree, xfree;
    size_t xsize;
    int released;            /* something was freed since the last trim */
    /* Date header, refreshed at most once a second */
    char date[40];
    time_t date_sec;
    /* drain */
    unsigned draining : 1;
    unsigned closing : 1;
    http_drained_fn drained;
    void *drained_arg;
    int open_handles;
};

/* --- small helpers, on every request's way ------------------------------- */

static inline void conn_set_state(struct http_conn *c, enum conn_state st)
{
    c->state = (uint8_t)st;
    tl_add(&c->srv->lists[st], &c->tn, uv_now(c->srv->loop));
}

static inline int conn_has_body(const struct http_request *req)
{
    return req->chunked || req->content_length > 0;
}

/* Output bytes queued for the client, not yet written. */
static inline size_t conn_queued(const struct http_conn *c)
{
    return (c->out ? c->out->len - c->out->sent : 0) + (c->inflight ? c->inflight->len - c->inflight->sent : 0);
}

/* Output space: makes room for n more bytes in c->out; NULL when memory
 * runs out (the connection is then closed by the caller's flush). */
char *conn_out_reserve(struct http_conn *c, size_t n);

/* Appends to the connection's output and counts it for the exchange. */
static inline void conn_out(struct http_conn *c, const void *p, size_t n)
{
    if (n == 0)
        return;
    char *dst = c->out && c->out->len + n <= c->out->cap ? c->out->data + c->out->len : conn_out_reserve(c, n);
    if (!dst) {
        c->closing = 1;
        return;
    }
    memcpy(dst, p, n);
    c->out->len += n;
    if (c->x)
        c->x->bytes_out += n;
}

#define CONN_OUT_LIT(c, s) conn_out((c), (s), sizeof(s) - 1)

void conn_out_str(struct http_conn *c, const char *s);
void conn_out_u64(struct http_conn *c, uint64_t v);

/* --- conn.c ----------------------------------------------------------------- */

void conn_rbuf_put(struct http_server *srv, char *b, uint32_t cap);
struct http_exchange *conn_exchange_get(struct http_server *srv);
void conn_exchange_put(struct http_server *srv, struct http_exchange *x);
void conn_start_reading(struct http_conn *c);
void conn_stop_reading(struct http_conn *c);
/* Drops the read buffer of a connection with nothing in it. */
void conn_release_buffer(struct http_conn *c);
/* Writes what is queued (at once if the socket takes it), then a file
 * being sent; closes or lingers a connection that is done. */
void conn_flush(struct http_conn *c);
void conn_close(struct http_conn *c);
void conn_on_connection(uv_stream_t *server, int status);
void conn_accept_queued(struct http_listener *l);
void conn_free_lists(struct http_server *srv);

/* --- response.c ------------------------------------------------------------- */

/* Connection handling fields and the blank line that ends the head. */
void response_end_head(struct http_exchange *x);

/* --- stream.c --------------------------------------------------------------- */

/* A streaming route's handler runs now; its body waits in the buffer. */
void stream_dispatch(struct http_conn *c);
/* Hands what arrived of a streaming body to its handler: 1 when the
 * handler was called, 0 when waiting. */
int stream_feed_body(struct http_conn *c);
/* Tells a streaming handler waiting for the client to take its output. */
void stream_notify_drain(struct http_conn *c);

/* --- server.c --------------------------------------------------------------- */

/* Runs what the connection's buffer holds, writes, settles its state. */
void server_process(struct http_conn *c);
/* The exchange was answered (or given up): counters, access log, next. */
void server_exchange_done(struct http_exchange *x);
/* An access log line for x, while its request's bytes are there. */
void server_log(struct http_exchange *x, int status, uint64_t duration_us);
void server_check_drained(struct http_server *srv);

#endif
