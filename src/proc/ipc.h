/*
 * Messages between the master and its workers over one socketpair per
 * worker (a libuv pipe). Each message is a fixed 8-byte header (type,
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

enum ipc_type {
    IPC_READY = 1,   /* worker -> master: listening and serving */
    IPC_STOP = 2,    /* master -> worker: drain and exit */
};

struct ipc_header {
    uint16_t type;
    uint16_t worker;
    uint32_t len;
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

/* Queues a message on a stream; the bytes are copied. Returns 0 or -errno. */
int ipc_send(uv_stream_t *s, enum ipc_type type, uint16_t worker, const void *payload, uint32_t len);

#endif
