#include "core/logbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int open_target(struct logbuf *b)
{
    if (!b->path)
        return 0;
    int fd = open(b->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    b->fd = fd;
    b->owned = 1;
    struct stat st;
    b->chunked = fstat(fd, &st) == 0 && !S_ISREG(st.st_mode);
    return 0;
}

int logbuf_open(struct logbuf *b, const char *spec, size_t cap)
{
    memset(b, 0, sizeof(*b));
    b->fd = -1;
    if (!spec || !*spec || strcmp(spec, "off") == 0)
        return 0;
    if (cap < 2 * LOGBUF_LINE_MAX)
        cap = 2 * LOGBUF_LINE_MAX;
    b->buf = malloc(cap);
    if (!b->buf)
        return -ENOMEM;
    b->cap = cap;
    int r = 0;
    if (strcmp(spec, "stderr") == 0 || strcmp(spec, "stdout") == 0) {
        struct stat st;
        b->fd = spec[3] == 'e' ? STDERR_FILENO : STDOUT_FILENO;
        b->chunked = !(fstat(b->fd, &st) == 0 && S_ISREG(st.st_mode));
    } else if (!(b->path = strdup(spec))) {
        r = -ENOMEM;
    } else {
        r = open_target(b);
    }
    if (r < 0)
        logbuf_close(b);
    return r;
}

int logbuf_write_lines(int fd, int chunked, const char *buf, size_t len)
{
    size_t off = 0;
    while (off < len) {
        size_t n = len - off;
        if (chunked && n > PIPE_BUF) {
            /* the last line end within PIPE_BUF bytes */
            n = PIPE_BUF;
            while (n > 0 && buf[off + n - 1] != '\n')
                n--;
            if (n == 0)
                n = PIPE_BUF; /* no line end: cannot happen for bounded lines */
        }
        ssize_t w = write(fd, buf + off, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        off += (size_t)w;
    }
    return 0;
}

int logbuf_flush(struct logbuf *b)
{
    if (b->fd < 0 || b->len == 0)
        return 0;
    int r = logbuf_write_lines(b->fd, b->chunked, b->buf, b->len);
    if (r < 0)
        b->dropped += b->len;
    b->len = 0;
    return r;
}

char *logbuf_reserve(struct logbuf *b)
{
    if (b->fd < 0)
        return NULL;
    if (b->cap - b->len < LOGBUF_LINE_MAX)
        logbuf_flush(b);
    return b->buf + b->len;
}

int logbuf_reopen(struct logbuf *b)
{
    logbuf_flush(b);
    if (!b->path)
        return 0;
    int old = b->fd;
    int r = open_target(b);
    if (r < 0)
        return r; /* keep writing to the old file */
    if (old >= 0)
        close(old);
    return 0;
}

void logbuf_close(struct logbuf *b)
{
    logbuf_flush(b);
    if (b->owned && b->fd >= 0)
        close(b->fd);
    free(b->buf);
    free(b->path);
    memset(b, 0, sizeof(*b));
    b->fd = -1;
}
