/*
 * Messages between the master and its workers over one socketpair per
 * worker (a libuv pipe), and between the master and its health checker
 * (proc/checker.h). Each message is a fixed 8-byte header (type,
 * worker id, payload length) and a payload of at most IPC_MAX_PAYLOAD bytes.
 *
 * struct ipc_reader reassembles messages from a byte stream; it owns its
 * buffer and calls `on_msg` for every whole message, with a payload pointer
 * valid only during the call.
 */
#ifndef COHORT_IPC_H
#define COHORT_IPC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define IPC_MAX_PAYLOAD 65536

/* The process protocol's own types (core/msg.h's MSG_TYPES_PROC), read
 * by the worker and the master themselves. Every other type is a module's
 * (its number in the module's header, e.g. proxy/health.h) and reaches the
 * handler the module registered (msg_register, core/msg.h). */
enum ipc_type {
    IPC_READY = 1,     /* worker -> master: serving; payload: its version */
    IPC_STOP = 2,      /* master -> worker (and checker): drain and exit */
    IPC_RECYCLE = 3,   /* worker -> master: replace me; payload: why */
    IPC_CONN = 4,      /* master -> worker: carries an accepted connection; payload: struct ipc_conn */
    IPC_FAILED = 10,   /* worker -> master: it could not start; payload: why (then it exits) */
};

/* A master never queues more than this many bytes for one worker: messages
 * to a worker that does not read are dropped, never waited for. */
#define IPC_MAX_QUEUED (1 << 20)

struct ipc_header {
    uint16_t type;
    uint16_t worker;
    uint32_t len;
};

/* IPC_CONN's payload: which listener ("listen"'s index) the connection
 * came from. A worker takes one pending handle per IPC_CONN. */
struct ipc_conn {
    uint32_t listener;
};

/* An IPC_CONN message whole; it must live until the write's callback. */
struct ipc_conn_msg {
    struct ipc_header h;
    struct ipc_conn c;
};

typedef void (*ipc_msg_fn)(void *arg, const struct ipc_header *h, const char *payload);

struct ipc_reader {
    char *buf;
    size_t len, cap;
    ipc_msg_fn on_msg;
    void *arg;
};

void ipc_reader_init(struct ipc_reader *r, ipc_msg_fn fn, void *arg);
void ipc_reader_free(struct ipc_reader *r);
/* Feeds bytes; returns 0, or -EPROTO for a malformed stream. */
int ipc_reader_feed(struct ipc_reader *r, const char *data, size_t len);

/* The read buffer callback for IPC pipes: one static buffer per process
 * (each process has one loop, and ipc_reader_feed copies what it keeps). */
void ipc_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b);

/* Queues a message on a stream; the bytes are copied. Returns 0, -ENOBUFS
 * when more than IPC_MAX_QUEUED bytes already wait, or another -errno. */
int ipc_send(uv_stream_t *s, uint16_t type, uint16_t worker, const void *payload, uint32_t len);

/* Sends a connection handle (TCP or Unix) along with an IPC_CONN message
 * for listener `listener`, written into msg. */
int ipc_send_handle(uv_pipe_t *p, uv_stream_t *handle, struct ipc_conn_msg *msg, uint32_t listener,
                    uv_write_cb cb, uv_write_t *req);

#endif
