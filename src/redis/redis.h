/*
 * One Redis connection of a worker, kept up on the worker's libuv loop
 * (hiredis async through its libuv adapter). Many requests share it: every
 * command is written at once and replies come back in order, so commands
 * issued in the same loop iteration leave in one write (pipelining).
 *
 * Keeping it up: the host is resolved with uv_getaddrinfo (the loop never
 * waits for DNS), the connection is made, and the connection counts as up
 * only once Redis answered a handshake (AUTH and SELECT when the URL asks,
 * then PING; or SUBSCRIBE for a subscriber). When it fails, it is made
 * again after min(attempt x 100 ms, 3 s). A command without a reply within
 * the command timeout counts as an outage too: the connection is dropped
 * (every pending command fails) and made again, so a hung or unreachable
 * Redis cannot hold requests longer than the timeout (a WAIT, and a
 * command sent while one is out, the WAIT's timeout more), whatever the
 * connection served before. Transitions are logged once each way ("down"
 * once per outage, not per request).
 *
 * A subscriber connection (opts.channel set) carries no commands: it
 * subscribes to the channel and hands every message to on_message. While
 * up it subscribes again every half command timeout; a confirmation later
 * than the timeout drops it like a late reply.
 *
 * With a primary source (opts.primary: struct redis_primary, which
 * redis/sentinel.h implements) the address comes from the Sentinels at
 * every attempt, not from the URL (which then gives only
 * the password and database), and the handshake checks with ROLE that the
 * server is the primary: a replica is dropped and the Sentinels are asked
 * again, after the backoff. Whatever the mode, a READONLY error (the server
 * became a replica under us) drops the connection the same way, so no
 * write goes to a replica twice.
 *
 * Durable writes: redis_wait() sends `WAIT <replicas> <timeout>`
 * after the commands sent so far; at most one WAIT is in flight per
 * connection, and the callers that come while one is out share the next,
 * whose timeout is what is left of wait_timeout for the oldest of them:
 * a missing replica costs each caller about wait_timeout.
 *
 * Ownership: redis_new() returns the connection; redis_close()
 * stops it and frees it once its last handle closed, then calls done. A
 * reply passed to a callback belongs to hiredis and is valid only during
 * the callback.
 */
#ifndef COHORT_REDIS_REDIS_H
#define COHORT_REDIS_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/list.h"

struct redis;
struct metrics_slot;

/* reply NULL: no reply (the connection was lost, the command timed out, or
 * the connection is closing). An error reply (REDIS_REPLY_ERROR) is passed
 * as it is. Called exactly once per accepted command, never from within
 * redis_command(). */
typedef void (*redis_reply_fn)(void *arg, redisReply *reply);

/* status 0: host (a string valid during the call) and port name the
 * primary; a negative errno: no answer (the attempt fails and is retried
 * after the backoff). */
typedef void (*redis_primary_fn)(void *arg, int status, const char *host, int port);

/* One question to a primary source; the storage is the asker's and stays
 * valid until cb ran or the ask was cancelled. */
struct redis_primary_ask {
    struct list_node link;
    redis_primary_fn cb;
    void *arg;
};

/* Where a connection learns the primary's address at each attempt (the
 * Sentinels: redis/sentinel.h). ask: cb runs later, exactly once, unless
 * cancel comes first; cancel: a no-op for an ask already answered. */
struct redis_primary {
    void (*ask)(void *impl, struct redis_primary_ask *a, redis_primary_fn cb, void *arg);
    void (*cancel)(struct redis_primary_ask *a);
    void *impl;
};

struct redis_opts {
    const char *url;            /* redis://[:password@]host[:port][/db]; may be NULL with a primary source */
    const struct redis_primary *primary; /* NULL: the URL's host; else ask it (it must outlive r) */
    int wait_replicas;          /* redis_wait: replicas to wait for */
    int64_t wait_timeout_ms;    /* and for how long */
    int64_t command_timeout_ms;
    const char *channel;        /* subscriber: the channel; NULL: commands */
    void (*on_message)(void *arg, const char *msg, size_t len);
    void (*on_state)(void *arg, int up); /* after each transition */
    void *arg;                  /* for on_message and on_state */
    struct metrics_slot *slot;  /* redis_* counters; NULL: none */
    const char *name;           /* in log lines: "redis", "redis subscriber" */
};

struct redis_url {
    char host[256];
    int port;
    char password[256]; /* "" when none */
    int db;
};

/* Parses redis://[[user]:password@]host[:port][/db] ("[::1]" for IPv6);
 * 0 or -EINVAL. */
int redis_parse_url(const char *url, struct redis_url *out);

/* Starts connecting at once. NULL with a message in err for a bad URL or
 * when out of memory. */
struct redis *redis_new(uv_loop_t *loop, const struct redis_opts *o, char *err, size_t errlen);

/* 1 while connected and past the handshake. */
int redis_up(const struct redis *r);

/* Queues a command (argv form: binary-safe). Returns 0 when accepted (cb
 * runs later, exactly once), -ENOTCONN when the connection is not up and
 * -ENOMEM: then cb never runs. */
int redis_command(struct redis *r, redis_reply_fn cb, void *arg, int argc, const char **argv,
                  const size_t *argvlen);

/* Called with the number of replicas that acknowledged every write sent
 * before the WAIT, or -EIO when the WAIT got no reply (connection lost). */
typedef void (*redis_wait_fn)(void *arg, int acked);

/* Waits for opts.wait_replicas replicas to have every write this
 * connection sent so far (WAIT). 0 when accepted (cb runs later, exactly
 * once), -ENOTCONN or -ENOMEM (cb never runs). */
int redis_wait(struct redis *r, redis_wait_fn cb, void *arg);

/* The Sentinels announced the primary at host:port: a connection to
 * another address is dropped and made again at once, to that address
 * without asking the Sentinels (the ROLE check still applies); one waiting
 * for its next attempt, or for a Sentinel's answer, makes it now. A no-op
 * without a primary source. */
void redis_retarget(struct redis *r, const char *host, int port);

/* Commands sent and not yet answered. */
size_t redis_pending(const struct redis *r);

/* Stops: commands in flight get their replies (or fail at the command
 * timeout), no new ones are accepted, then the connection closes, r is
 * freed and done(arg) runs. */
void redis_close(struct redis *r, void (*done)(void *arg), void *arg);

#endif
