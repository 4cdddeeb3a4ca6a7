/*
 * Connections to one upstream server, and the keep-alive pool of those not
 * in use. One pool per server per worker, bounded (keepalive.size) and
 * with an idle timeout (keepalive.idle_timeout).
 *
 * A connection reads all the time, from connect to close, so an idle one
 * that the server closes (or writes to, which it must not) is noticed and
 * closed at once rather than handed out. While in use, reads go to its
 * owner's callback, into the buffer the owner gave it (buf/cap/len).
 *
 * Ownership: the pool owns its connections; an owner borrows one between
 * pool_take / pool_connect and pool_give / pool_close_conn. A connection
 * is freed in its close callback, after the callbacks of its pending
 * writes (which may still look at it, never at its former owner).
 */
#ifndef COHORT_PROXY_POOL_H
#define COHORT_PROXY_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/list.h"

struct up_pool;
struct up_conn;

/* The owner's callbacks: connect (status 0 or a libuv error), read (n > 0
 * bytes were added at buf + len - n; n < 0 a libuv error or UV_EOF), and
 * drained (pending writes fell to zero bytes). */
struct up_conn_ops {
    void (*on_connect)(struct up_conn *uc, int status);
    void (*on_read)(struct up_conn *uc, ssize_t n);
    void (*on_drain)(struct up_conn *uc);
};

struct up_conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct up_pool *pool;
    struct list_node link;    /* idle: in the pool; in use: the owner's */
    uint64_t since;           /* loop ms it entered its list */
    void *owner;              /* NULL while idle */
    const struct up_conn_ops *ops;
    char *buf;                /* the owner's read buffer */
    uint32_t cap, len;
    size_t queued;            /* bytes in pending writes */
    size_t drain_mark;        /* on_drain when queued falls to it */
    uint32_t uses;            /* requests it carried */
    unsigned connected : 1;
    unsigned reading : 1;
    unsigned closing : 1;
    unsigned want_drain : 1;
    unsigned in_pool : 1;
};

struct up_pool {
    uv_loop_t *loop;
    struct list_node idle;    /* oldest first */
    size_t nidle, max;
    uint64_t idle_ms;
    size_t open;              /* connections open (idle or not) */
    uint64_t reused, opened;  /* for the numbers in docs */
};

void pool_init(struct up_pool *p, uv_loop_t *loop, size_t max, uint64_t idle_ms);

/* The most recently used idle connection, or NULL. */
struct up_conn *pool_take(struct up_pool *p, void *owner, const struct up_conn_ops *ops);

/* A new connection to `addr`; ops->on_connect tells how it went. NULL
 * (with *err set) when it cannot even start. */
struct up_conn *pool_connect(struct up_pool *p, const struct sockaddr *addr, void *owner,
                             const struct up_conn_ops *ops, int *err);

/* Back to the pool when it may carry another request (the owner checked),
 * or closed when the pool is full. The owner's buffer is not kept. */
void pool_give(struct up_conn *uc);

/* Closes a connection (in use or idle). */
void pool_close_conn(struct up_conn *uc);

/* Queues bytes on the connection: what the socket takes at once is
 * written, the rest copied into a pending write. 0 or a libuv error. */
int pool_write(struct up_conn *uc, const uv_buf_t *bufs, unsigned nbufs);

/* Reading on and off (the owner's backpressure). */
void pool_read_pause(struct up_conn *uc);
void pool_read_resume(struct up_conn *uc);

/* Closes idle connections older than the idle timeout. */
void pool_expire(struct up_pool *p, uint64_t now_ms);

/* Closes every idle connection (the owner closes those in use). */
void pool_close_idle(struct up_pool *p);

#endif
