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

struct http_exchange;

struct static_dir;

/* `prefix` is the route pattern without its '*', e.g. "/static/". The root
 * is resolved to an absolute, symlink-free path now; returns NULL (errno
 * set) when it is not a directory. */
struct static_dir *static_dir_new(const char *prefix, const char *root);
void static_dir_free(struct static_dir *d);

/* The route handler; the route's data is the struct static_dir. */
void static_handle(struct http_exchange *x);

/*
 * Pure helper, exposed for tests: decodes a request path's percent
 * escapes and resolves "." and ".." segments, writing a relative path
 * (no leading '/') into out. Returns its length, or -1 when the path is
 * malformed, contains NUL or an encoded '/', or climbs above the top.
 */
int static_clean_path(const char *path, size_t len, char *out, size_t outlen);

/* Content-Type for a file name by its extension. */
const char *static_mime_type(const char *name);

#endif
