/*
 * Static files under a route prefix: GET and HEAD of /prefix/<path> serve
 * <root>/<path> with sendfile, Content-Type by extension, ETag and
 * Last-Modified (304 on If-None-Match / If-Modified-Since), and a single
 * byte range (206, 416). A path that is malformed, escapes the root (by
 * "..", by encoded "%2e%2e" or "%2f", or by a symlink whose target lies
 * outside the root), or names something that is not a regular file answers
 * 404. A directory serves its index.html when there is one.
 *
 * Opening and stat'ing files happens on the loop: they are bounded local
 * calls on the page cache; the body is sent with sendfile(2) as the socket
 * drains.
 */
#ifndef COHORT_HTTP_STATIC_H
#define COHORT_HTTP_STATIC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

struct http_exchange;

struct static_dir;

/* `prefix` is the route pattern without its '*', e.g. "/static/". The root
 * is resolved to an absolute, symlink-free path now; returns NULL (errno
 * set) when it is not a directory. */
struct static_dir *static_dir_new(const char *prefix, const char *root);
void static_dir_free(struct static_dir *d);

/* The route handler; the route's data is the struct static_dir. */
void static_handle(struct http_exchange *x);

/* The static handler of a generation's config routes (STATIC_HANDLER),
 * added to h: it keeps the folders its routes serve until freed. */
struct http_handlers;
struct static_routes;
struct static_routes *static_routes_new(struct http_handlers *h);
void static_routes_free(struct static_routes *s);

/*
 * Pure helper, exposed for tests: decodes a request path's percent
 * escapes and resolves "." and ".." segments, writing a relative path
 * (no leading '/') into out. Returns its length, or -EINVAL when the path
 * is malformed, contains NUL or an encoded '/', or climbs above the top.
 * Also refused: any other control byte and '\' (raw or encoded), with
 * -EINVAL, and a path whose output (or a step on the way to it) does not
 * fit in outlen with its NUL, with -ENAMETOOLONG. "" is the top; a trailing '/' (or a last segment of "."
 * or "..") is kept as a trailing '/'; empty segments collapse.
 */
int static_clean_path(const char *path, size_t len, char *out, size_t outlen);

/* Content-Type for a file name by its extension. */
const char *static_mime_type(const char *name);

/*
 * Opens the file a cleaned path names, without leaving the root: returns a
 * descriptor of a regular file (the caller closes it) with its stat in *st,
 * or a negative errno; every refusal (escape, not a regular file, missing)
 * is -ENOENT or the open's own error. When the path names a directory,
 * "index.html" is appended to `clean` (capacity `cap`) and that file is
 * opened instead, so `clean` names what was opened.
 */
int static_open(const struct static_dir *d, char *clean, size_t cap, struct stat *st);

/* What a Range field asks of a representation of a given size. */
enum static_range {
    STATIC_RANGE_NONE,          /* absent, multiple, invalid: send it whole */
    STATIC_RANGE_OK,            /* one satisfiable range: first..last */
    STATIC_RANGE_UNSATISFIABLE  /* 416 */
};

/* Pure, exposed for tests: parses a Range field value (not NUL-terminated). */
enum static_range static_parse_range(const char *v, size_t len, uint64_t size, uint64_t *first,
                                     uint64_t *last);

/* Pure, exposed for tests: 1 when an If-None-Match value (a list of entity
 * tags, or "*") matches `etag` by weak comparison, else 0. */
int static_etag_match(const char *v, size_t len, const char *etag);

/* Pure, exposed for tests: parses an HTTP-date in any of its three forms
 * (IMF-fixdate, RFC 850, asctime). Returns 0, or -EINVAL. */
int static_parse_date(const char *v, size_t len, time_t *out);

/* Writes the IMF-fixdate of t (29 characters and a NUL) into out. */
void static_format_date(time_t t, char out[30]);

/* Test hook: 0 makes static_open behave as on a kernel without openat2(2),
 * so the realpath fallback is exercised; 1 (the default) uses it when the
 * kernel has it. */
void static_use_openat2(int on);

#endif
