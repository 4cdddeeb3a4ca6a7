/*
 * JSON text for logs and reports: escaping untrusted bytes into a string,
 * bounded, and a growable text buffer for reports built off the hot path.
 *
 * jw_escape never writes past its bound and never splits an escape or a
 * UTF-8 sequence, so a cut string is still valid JSON. Valid UTF-8 passes
 * through; each byte that is not part of valid UTF-8 becomes \ufffd; control
 * characters, quote and backslash are escaped.
 */
#ifndef COHORT_JSONW_H
#define COHORT_JSONW_H

#include <stdarg.h>
#include <stddef.h>

/*
 * Escapes src[0..len) as the inside of a JSON string into dst, writing at
 * most `cap` bytes (no NUL). Returns the bytes written; *consumed (may be
 * NULL) is how much of src went in (less than len when it was cut).
 */
size_t jw_escape(char *dst, size_t cap, const char *src, size_t len, size_t *consumed);

/* Growable buffer; the caller owns `data` (free with sbuf_free). On
 * allocation failure `oom` is set and further appends are dropped. */
struct sbuf {
    char *data;
    size_t len, cap;
    int oom;
};

void sbuf_init(struct sbuf *b);
void sbuf_free(struct sbuf *b);
void sbuf_put(struct sbuf *b, const void *p, size_t n);
void sbuf_puts(struct sbuf *b, const char *s);
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string, quotes included, escaped as by jw_escape. */
void sbuf_json_str(struct sbuf *b, const char *s, size_t n);
/* A JSON number for a double: finite, shortest round-trip-ish ("%.6g"). */
void sbuf_json_num(struct sbuf *b, double v);

#endif
