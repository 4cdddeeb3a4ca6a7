/*
 * Messages between a process and its master, by registered type. The
 * channel and the wire format are the process layer's (proc/ipc.h); this
 * is the table that says which module takes a message of a given type, so
 * that a module sends and receives without naming the process layer.
 *
 * The types in MSG_TYPES_PROC are the process protocol's own (ready, stop,
 * recycle, a connection, a start failure: proc/ipc.h), handled by the
 * process layer itself; a module takes other numbers up to MSG_TYPE_MAX, in
 * its own header, and registers a handler for the
 * ones it receives in the process that receives them (a worker, in its app;
 * the master, in a master hook: proc/hooks.h). Each process has its own
 * table. A type registered twice is refused, so two modules that picked one
 * number find out at start.
 */
#ifndef COHORT_MSG_H
#define COHORT_MSG_H

#include <stddef.h>
#include <stdint.h>

#define MSG_TYPES_PROC ((1u << 1) | (1u << 2) | (1u << 3) | (1u << 4) | (1u << 10)) /* proc/ipc.h */
#define MSG_TYPE_MAX 31 /* highest registrable type */

/* A message of a registered type: `from` is the worker id it came from (in
 * the master) or the master's id field (in a worker); payload is valid only
 * during the call. */
typedef void (*msg_fn)(void *arg, int from, const void *payload, size_t len);

/* Registers the handler of `type`; `name` (kept) names it in logs. 0,
 * -EINVAL for 0, a type of MSG_TYPES_PROC or above MSG_TYPE_MAX, or no fn,
 * -EEXIST when the type already has a handler. */
int msg_register(uint16_t type, const char *name, msg_fn fn, void *arg);

/* Removes the handler of `type` (a module that stops); no-op when none. */
void msg_unregister(uint16_t type);

/* Hands a received message to its type's handler: 0, or -ENOENT when no
 * handler has the type (the message is counted and logged, then dropped). */
int msg_dispatch(uint16_t type, int from, const void *payload, size_t len);

/* Messages dropped for want of a handler, since start. */
uint64_t msg_unknown(void);

/* msg_broadcast's flags: to every worker process, starting and draining
 * ones too (state every worker must hold); without it, to the serving ones. */
#define MSG_TO_ALL 1u

/* How this process sends: set by the process layer (a worker sends to its
 * master; the master sends to its workers but worker `except`, -1 for none,
 * with `except` in the message's id field when it is given). Each returns 0
 * or -errno; a broadcast that some worker did not take is logged by the
 * transport and still 0. */
struct msg_transport {
    int (*send)(void *ctx, uint16_t type, const void *payload, size_t len);
    int (*broadcast)(void *ctx, uint16_t type, int except, unsigned flags, const void *payload, size_t len);
    void *ctx;
};
void msg_set_transport(const struct msg_transport *t); /* NULL: none (sends fail with -ESHUTDOWN) */

/* Sends through the transport: 0 or -errno (-ESHUTDOWN without one,
 * -EMSGSIZE over 64 KiB, -ENOBUFS when the channel is full). */
int msg_send(uint16_t type, const void *payload, size_t len);
int msg_broadcast(uint16_t type, int except, unsigned flags, const void *payload, size_t len);

/* Forgets every handler and the transport (tests; a fresh process). */
void msg_reset(void);

#endif
