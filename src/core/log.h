/*
 * Process log: one line per event on stderr (the error log), with time,
 * level and the process role, e.g.
 *   2026-11-24T14:40:39.123Z info master[1234]: worker 0 (pid 1240) ready
 * Lines are written with one write(2) each, so lines of several processes
 * sharing stderr never interleave within a line.
 */
#ifndef COHORT_LOG_H
#define COHORT_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the role printed on every line ("master", "worker 0"). */
void log_set_role(const char *role);
void log_set_level(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
