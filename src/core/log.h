/*
 * Process log (the error log): one JSON object per line, written at once
 * with one write(2) of at most PIPE_BUF bytes, so lines of several processes
 * sharing a file or stderr never interleave within a line:
 *
 *   {"time":"2026-11-24T14:40:39.123Z","level":"info","role":"master",
 *    "pid":1234,"msg":"worker 0 (pid 1240) ready"}
 *
 * log_fields adds preformatted fields after "msg". Messages are escaped and
 * a line is cut (at a character boundary) to stay within the bound.
 *
 * The target is stderr until log_configure names a file ("log.error"); the
 * file is opened with O_APPEND and opened again by log_reopen (SIGUSR1).
 */
#ifndef COHORT_LOG_H
#define COHORT_LOG_H

#include <stddef.h>
#include <time.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the role printed on every line ("master", "worker 0"). */
void log_set_role(const char *r);
void log_set_level(enum log_level level);

/*
 * Sends lines to `target`: "stderr" or a file path. Returns 0 or -errno
 * (with a message in err); on failure the target is unchanged.
 */
int log_configure(const char *target, enum log_level level, char *err, size_t errlen);
/* Opens the file again (after a rotation moved it); 0 or -errno. */
int log_reopen(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* `fields`: JSON members without braces ("\"requests\":12,\"p99_ms\":1.5"),
 * trusted (built by our code), or NULL. */
void log_fields(enum log_level level, const char *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Writes an RFC 3339 UTC time with milliseconds, "2026-11-24T14:40:39.123Z"
 * (24 bytes, no NUL), into buf. The date part is formatted once a second
 * per calling thread.
 */
#define LOG_TIME_LEN 24
void log_format_time(char *buf, const struct timespec *ts);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
