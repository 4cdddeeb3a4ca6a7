/*
 * A buffered sink of whole lines for one process: the access log. Lines are
 * formatted straight into the buffer (logbuf_reserve / logbuf_commit) and
 * leave in batches, so a request costs no system call and no allocation.
 *
 * A batch is one write(2) of whole lines to a file opened with O_APPEND, so
 * the lines of several processes appending to one file never interleave
 * within a line. When the target is a pipe, a socket or a terminal (stderr
 * in development), a batch is cut at line ends into writes of at most
 * PIPE_BUF bytes, which the kernel keeps whole; a line is never longer than
 * LOGBUF_LINE_MAX, which is PIPE_BUF.
 *
 * Ownership: the struct is the caller's; logbuf_close frees what it holds.
 * Not thread-safe: one writer (the worker's loop).
 */
#ifndef COHORT_LOGBUF_H
#define COHORT_LOGBUF_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define LOGBUF_LINE_MAX PIPE_BUF /* 4096 on Linux: a longest line, newline included */

struct logbuf {
    int fd;          /* -1: off */
    int owned;       /* we opened it (from path): close on reopen */
    int chunked;     /* pipe, socket or tty: writes of at most PIPE_BUF */
    char *path;      /* NULL for stderr/stdout */
    char *buf;
    size_t len, cap;
    uint64_t dropped; /* bytes lost to write errors */
};

/*
 * Opens a sink: "off", "stderr", "stdout", or a file path (created 0644,
 * appended to). `cap` is the buffer size (at least 2 lines). Returns 0 or
 * -errno; on failure the sink is off.
 */
int logbuf_open(struct logbuf *b, const char *spec, size_t cap);

/* True when lines go somewhere. */
static inline int logbuf_on(const struct logbuf *b)
{
    return b->fd >= 0;
}

/* Room for a line of up to LOGBUF_LINE_MAX bytes: flushes first when the
 * buffer cannot hold one more. Never NULL while the sink is on. */
char *logbuf_reserve(struct logbuf *b);
/* Ends the line written at the reserved place: n bytes, newline included. */
static inline void logbuf_commit(struct logbuf *b, size_t n)
{
    b->len += n;
}

/* Writes out what is buffered; 0 or -errno (the batch is dropped then). */
int logbuf_flush(struct logbuf *b);
/* Flushes, then opens the path again (after a rotation moved the file). */
int logbuf_reopen(struct logbuf *b);
/* Flushes and releases everything; the sink is off afterwards. */
void logbuf_close(struct logbuf *b);

/* Writes whole lines of buf[0..len) to fd as described above. */
int logbuf_write_lines(int fd, int chunked, const char *buf, size_t len);

#endif
