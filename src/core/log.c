#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/jsonw.h"
#include "core/logbuf.h"

static char role[32] = "cohort";
static enum log_level min_level = LOG_INFO;
static int log_fd = STDERR_FILENO;
static int log_chunked = 1;
static char *log_path;

void log_set_role(const char *r)
{
    snprintf(role, sizeof(role), "%s", r);
}

void log_set_level(enum log_level level)
{
    min_level = level;
}

static int open_path(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
}

int log_configure(const char *target, enum log_level level, char *err, size_t errlen)
{
    min_level = level;
    if (!target || strcmp(target, "stderr") == 0) {
        if (log_fd != STDERR_FILENO)
            close(log_fd);
        log_fd = STDERR_FILENO;
        log_chunked = 1;
        free(log_path);
        log_path = NULL;
        return 0;
    }
    char *path = strdup(target);
    int fd = path ? open_path(path) : -ENOMEM;
    if (fd < 0) {
        snprintf(err, errlen, "log.error: cannot open %s: %s", target, strerror(-fd));
        free(path);
        return fd;
    }
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    free(log_path);
    log_path = path;
    log_fd = fd;
    log_chunked = 0;
    return 0;
}

int log_reopen(void)
{
    if (!log_path)
        return 0;
    int fd = open_path(log_path);
    if (fd < 0)
        return fd;
    close(log_fd);
    log_fd = fd;
    return 0;
}

void log_format_time(char *buf, const struct timespec *ts)
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[20]; /* "2026-11-24T14:40:39" */
    if (ts->tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&ts->tv_sec, &tm);
        strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = ts->tv_sec;
    }
    memcpy(buf, cached, 19);
    unsigned ms = (unsigned)(ts->tv_nsec / 1000000);
    buf[19] = '.';
    buf[20] = (char)('0' + ms / 100);
    buf[21] = (char)('0' + ms / 10 % 10);
    buf[22] = (char)('0' + ms % 10);
    buf[23] = 'Z';
}

static void vlog(enum log_level level, const char *fields, const char *fmt, va_list ap)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (level < min_level)
        return;
    char msg[2048], line[LOGBUF_LINE_MAX];
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t mlen = m < 0 ? 0 : (size_t)m < sizeof(msg) ? (size_t)m : sizeof(msg) - 1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char when[LOG_TIME_LEN];
    log_format_time(when, &ts);
    int n = snprintf(line, sizeof(line), "{\"time\":\"%.*s\",\"level\":\"%s\",\"role\":\"%s\",\"pid\":%d,\"msg\":\"",
                     LOG_TIME_LEN, when, names[level], role, (int)getpid());
    size_t len = (size_t)n;
    size_t flen = fields && *fields ? strlen(fields) + 1 : 0;
    if (len + flen + 256 > sizeof(line))
        flen = 0; /* fields too long to keep whole: drop them rather than cut JSON */
    len += jw_escape(line + len, sizeof(line) - len - flen - 3, msg, mlen, NULL);
    line[len++] = '"';
    if (flen) {
        line[len++] = ',';
        memcpy(line + len, fields, flen - 1);
        len += flen - 1;
    }
    line[len++] = '}';
    line[len++] = '\n';
    logbuf_write_lines(log_fd, log_chunked, line, len);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, fmt, ap);
    va_end(ap);
}

void log_fields(enum log_level level, const char *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fields, fmt, ap);
    va_end(ap);
}
