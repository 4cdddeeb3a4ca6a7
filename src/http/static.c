/*
 * Static files. How a request path becomes a file without leaving the root:
 *
 * 1. static_clean_path() decodes percent escapes segment by segment and
 *    resolves "." and ".."; a decoded '/' or '\', a control byte, or a ".."
 *    above the top refuses the path. The result is relative and has no dot
 *    segments.
 * 2. static_open() opens it relative to a descriptor of the root with
 *    openat2(2) and RESOLVE_BENEATH: the kernel follows symlinks that stay
 *    inside and refuses (EXDEV) any that leave, with no race against a
 *    tree changing underneath. RESOLVE_BENEATH also refuses absolute
 *    symlinks, even ones that point back inside; those, and kernels without
 *    openat2, take the fallback: realpath(3) of root/path, a prefix check
 *    against the root's real path, and an open of that symlink-free path
 *    that refuses any symlink met on the way (so a component swapped for a
 *    symlink between the two calls fails instead of escaping).
 * 3. Only regular files are served; O_NONBLOCK keeps a FIFO from blocking
 *    the loop in open(2) before fstat() sees what it is.
 */
#include "http/static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "http/handlers.h"
#include "http/server.h"
#include "http/static_cfg.h"

struct static_dir {
    char *prefix;
    size_t prefix_len;
    char *root;        /* absolute, symlink-free */
    size_t root_len;
    int root_fd;       /* O_PATH descriptor of root */
};

#define OPEN_FLAGS (O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)

/* Cleared for good on ENOSYS or EPERM: a kernel before 5.6, or a seccomp
 * filter that does not know the call. A worker decides this once. */
static int openat2_ok = 1;

void static_use_openat2(int on)
{
    openat2_ok = on;
}

struct static_dir *static_dir_new(const char *prefix, const char *root)
{
    struct static_dir *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->root_fd = -1;
    d->prefix = strdup(prefix);
    d->root = realpath(root, NULL);
    if (!d->prefix || !d->root)
        goto fail;
    d->prefix_len = strlen(d->prefix);
    d->root_len = strlen(d->root);
    d->root_fd = open(d->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (d->root_fd < 0)
        goto fail;
    return d;
fail:;
    int err = errno;
    static_dir_free(d);
    errno = err;
    return NULL;
}

void static_dir_free(struct static_dir *d)
{
    if (!d)
        return;
    if (d->root_fd >= 0)
        close(d->root_fd);
    free(d->prefix);
    free(d->root);
    free(d);
}

/* --- paths ------------------------------------------------------------- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/*
 * Decodes one raw segment p[0..n) into out at *o. Refuses what must not
 * reach a file name: a bad escape, a decoded separator ('/' would split a
 * segment after the dot segments were judged; '\' is one on other systems
 * and on shares), and control bytes including NUL.
 */
static int decode_segment(const char *p, size_t n, char *out, size_t outlen, size_t *o)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '%') {
            int hi = i + 2 < n ? hex_value(p[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value(p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -EINVAL;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '/' || c == '\\' || c < 0x20 || c == 0x7f)
            return -EINVAL;
        if (*o + 1 >= outlen)
            return -ENAMETOOLONG;
        out[(*o)++] = (char)c;
    }
    return 0;
}

/* Drops the last segment of out[0..n) with the separator before it. */
static size_t pop_segment(const char *out, size_t n)
{
    while (n > 0 && out[n - 1] != '/')
        n--;
    return n > 0 ? n - 1 : 0;
}

int static_clean_path(const char *path, size_t len, char *out, size_t outlen)
{
    size_t o = 0, i = 0;
    int dir = 0; /* the last segment says "directory": empty, "." or ".." */
    if (outlen == 0)
        return -ENAMETOOLONG;
    while (i <= len) {
        size_t end = i;
        while (end < len && path[end] != '/')
            end++;
        size_t start = o;
        if (o > 0) {
            if (o + 1 >= outlen)
                return -ENAMETOOLONG;
            out[o++] = '/';
        }
        size_t seg = o;
        int r = decode_segment(path + i, end - i, out, outlen, &o);
        if (r < 0)
            return r;
        size_t n = o - seg;
        dir = n == 0 || (n == 1 && out[seg] == '.') || (n == 2 && out[seg] == '.' && out[seg + 1] == '.');
        if (n == 2 && dir) {
            if (start == 0)
                return -EINVAL;
            o = pop_segment(out, start);
        } else if (dir) {
            o = start;
        }
        i = end + 1;
    }
    if (dir && o > 0) {
        if (o + 1 >= outlen)
            return -ENAMETOOLONG;
        out[o++] = '/';
    }
    out[o] = '\0';
    return (int)o;
}

/* --- content types ----------------------------------------------------- */

/* Text types carry their charset so a browser does not guess; JSON,
 * SVG and XML declare their encoding themselves. */
static const struct {
    const char *ext, *type;
} mime_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"txt", "text/plain; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"ico", "image/x-icon"},
    {"wasm", "application/wasm"},
    {"pdf", "application/pdf"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
};

const char *static_mime_type(const char *name)
{
    const char *base = strrchr(name, '/');
    const char *dot = strrchr(base ? base : name, '.');
    if (dot) {
        for (size_t i = 0; i < sizeof(mime_types) / sizeof(mime_types[0]); i++)
            if (strcasecmp(dot + 1, mime_types[i].ext) == 0)
                return mime_types[i].type;
    }
    return "application/octet-stream";
}

/* --- validators -------------------------------------------------------- */

static void put_digits(char *p, int v, int n)
{
    for (int i = n - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
}

/* Written by hand rather than with strftime, whose day and month names
 * follow the locale. Years outside 0..9999 (a bogus mtime) are clamped. */
void static_format_date(time_t t, char out[30])
{
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        memset(&tm, 0, sizeof(tm));
    int year = tm.tm_year + 1900;
    memcpy(out, "Xxx, 00 Xxx 0000 00:00:00 GMT", 30);
    memcpy(out, days + 3 * tm.tm_wday, 3);
    put_digits(out + 5, tm.tm_mday, 2);
    memcpy(out + 8, months + 3 * tm.tm_mon, 3);
    put_digits(out + 12, year < 0 ? 0 : year > 9999 ? 9999 : year, 4);
    put_digits(out + 17, tm.tm_hour, 2);
    put_digits(out + 20, tm.tm_min, 2);
    put_digits(out + 23, tm.tm_sec, 2);
}

/* strptime's names follow the locale too; workers never set one, so they
 * are the C locale's English names that HTTP uses. */
int static_parse_date(const char *v, size_t len, time_t *out)
{
    static const char *const forms[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate */
        "%A, %d-%b-%y %H:%M:%S GMT", /* RFC 850 */
        "%a %b %d %H:%M:%S %Y",      /* asctime */
    };
    char buf[64];
    if (len >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, v, len);
    buf[len] = '\0';
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(buf, forms[i], &tm);
        if (end && *end == '\0') {
            *out = timegm(&tm);
            return 0;
        }
    }
    return -EINVAL;
}

/* Weak comparison (RFC 9110 8.8.3.2): "W/" is ignored on both sides, and
 * ours never has it. A malformed member ends the list without a match. */
int static_etag_match(const char *v, size_t len, const char *etag)
{
    size_t tag_len = strlen(etag), i = 0;
    for (;;) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        if (i == len)
            return 0;
        if (v[i] == '*')
            return 1;
        if (len - i >= 2 && v[i] == 'W' && v[i + 1] == '/')
            i += 2;
        if (i == len || v[i] != '"')
            return 0;
        size_t start = i++;
        while (i < len && v[i] != '"')
            i++;
        if (i == len)
            return 0;
        i++;
        if (i - start == tag_len && memcmp(v + start, etag, tag_len) == 0)
            return 1;
    }
}

/* --- ranges ------------------------------------------------------------ */

/* Reads decimal digits from p up to end, saturating at UINT64_MAX; returns
 * the position after them, or NULL (and *out untouched) when there is
 * none. */
static const char *parse_u64(const char *p, const char *end, uint64_t *out)
{
    const char *start = p;
    uint64_t v = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    if (p == start)
        return NULL;
    *out = v;
    return p;
}

/*
 * One byte-range-spec (RFC 9110 14.1.2): "a-b", "a-" or "-n". A list of
 * several is answered whole, which the RFC allows, and so is anything
 * malformed or with b < a (an invalid spec may be ignored).
 */
enum static_range static_parse_range(const char *v, size_t len, uint64_t size, uint64_t *first,
                                     uint64_t *last)
{
    const char *end = v + len;
    if (len < 6 || strncasecmp(v, "bytes=", 6) != 0 || memchr(v, ',', len))
        return STATIC_RANGE_NONE;
    const char *p = v + 6;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    uint64_t a = 0, b = UINT64_MAX;
    int suffix = p < end && *p == '-';
    if (!suffix && !(p = parse_u64(p, end, &a)))
        return STATIC_RANGE_NONE;
    if (p == end || *p++ != '-')
        return STATIC_RANGE_NONE;
    const char *q = parse_u64(p, end, &b);
    if (q)
        p = q;
    else if (suffix)
        return STATIC_RANGE_NONE;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    if (p != end || b < a)
        return STATIC_RANGE_NONE;
    if (suffix) {
        if (b == 0 || size == 0)
            return STATIC_RANGE_UNSATISFIABLE;
        a = b < size ? size - b : 0;
        b = UINT64_MAX;
    }
    if (a >= size)
        return STATIC_RANGE_UNSATISFIABLE;
    *first = a;
    *last = b < size - 1 ? b : size - 1;
    return STATIC_RANGE_OK;
}

/* --- opening ----------------------------------------------------------- */

/* openat2(2) relative to the root; -ENOSYS once the kernel said it has
 * none. glibc 2.36 has no wrapper. */
static int open_how(const struct static_dir *d, const char *rel, uint64_t resolve)
{
    if (!openat2_ok)
        return -ENOSYS;
    struct open_how how = {.flags = OPEN_FLAGS, .resolve = resolve};
    long fd = syscall(SYS_openat2, d->root_fd, rel, &how, sizeof(how));
    if (fd >= 0)
        return (int)fd;
    if (errno == ENOSYS || errno == EPERM) {
        openat2_ok = 0;
        return -ENOSYS;
    }
    return -errno;
}

/* The path below the root that an absolute real path names, or NULL when
 * it lies outside. */
static const char *inside_root(const struct static_dir *d, const char *real)
{
    if (d->root_len == 1) /* the root is "/" */
        return real[1] ? real + 1 : ".";
    if (strncmp(real, d->root, d->root_len) != 0)
        return NULL;
    if (real[d->root_len] == '\0')
        return ".";
    return real[d->root_len] == '/' ? real + d->root_len + 1 : NULL;
}

/* The fallback of step 2 (see the top of the file). Without openat2 a
 * component swapped for a symlink between realpath() and openat() is only
 * caught at the last one (O_NOFOLLOW); that needs write access to the tree. */
static int open_resolved(const struct static_dir *d, const char *rel)
{
    char full[PATH_MAX], real[PATH_MAX];
    int n = snprintf(full, sizeof(full), "%s/%s", d->root, rel);
    if (n < 0 || (size_t)n >= sizeof(full))
        return -ENAMETOOLONG;
    if (!realpath(full, real))
        return -errno;
    const char *inner = inside_root(d, real);
    if (!inner)
        return -ENOENT;
    int fd = open_how(d, inner, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
    if (fd != -ENOSYS)
        return fd;
    fd = openat(d->root_fd, inner, OPEN_FLAGS | O_NOFOLLOW);
    return fd >= 0 ? fd : -errno;
}

/* Opens rel (cleaned, relative) without leaving the root. */
static int open_beneath(const struct static_dir *d, const char *rel)
{
    if (rel[0] == '\0')
        rel = ".";
    int fd = open_how(d, rel, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
    /* EXDEV: an escape or an absolute symlink; EAGAIN: a rename raced a
     * "..". The fallback tells them apart. */
    if (fd == -ENOSYS || fd == -EXDEV || fd == -EAGAIN)
        fd = open_resolved(d, rel);
    return fd;
}

static int append_index(char *clean, size_t cap)
{
    size_t n = strlen(clean);
    int w = snprintf(clean + n, cap - n, "%sindex.html", n > 0 && clean[n - 1] != '/' ? "/" : "");
    return w >= 0 && (size_t)w < cap - n ? 0 : -ENAMETOOLONG;
}

int static_open(const struct static_dir *d, char *clean, size_t cap, struct stat *st)
{
    for (int tries = 0; tries < 2; tries++) {
        int fd = open_beneath(d, clean);
        if (fd < 0)
            return fd;
        if (fstat(fd, st) < 0) {
            int err = errno;
            close(fd);
            return -err;
        }
        if (S_ISREG(st->st_mode))
            return fd;
        close(fd);
        /* a directory stands for its index.html; an index.html that is a
         * directory itself stands for nothing */
        if (!S_ISDIR(st->st_mode) || tries > 0 || append_index(clean, cap) < 0)
            return -ENOENT;
    }
    return -ENOENT;
}

/* --- the handler ------------------------------------------------------- */

/* What the validators and the type of one opened file say. */
struct file_meta {
    char etag[64];
    char modified[30];
    time_t mtime;
    uint64_t size;
    int etag_len;
};

/* A strong tag from inode, size and mtime in ns: a file replaced by a
 * rename (a new inode) changes it even when size and mtime were kept. */
static void meta_init(struct file_meta *m, const struct stat *st)
{
    m->size = (uint64_t)st->st_size;
    m->mtime = st->st_mtim.tv_sec;
    uint64_t ns = (uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec;
    m->etag_len = snprintf(m->etag, sizeof(m->etag), "\"%llx-%llx-%llx\"", (unsigned long long)st->st_ino,
                           (unsigned long long)m->size, (unsigned long long)ns);
    static_format_date(m->mtime, m->modified);
}

/* RFC 9110 13.2.2: If-None-Match (every field line of it) decides when
 * present; If-Modified-Since only without it. */
static int not_modified(const struct http_exchange *x, const struct file_meta *m)
{
    const struct http_request *r = &x->req;
    int i = http_find_header(r, "If-None-Match", 13, 0);
    if (i >= 0) {
        for (; i >= 0; i = http_find_header(r, "If-None-Match", 13, (size_t)i + 1))
            if (static_etag_match(r->headers[i].value, r->headers[i].value_len, m->etag))
                return 1;
        return 0;
    }
    size_t len;
    const char *v = http_req_header(x, "If-Modified-Since", &len);
    time_t since;
    return v && static_parse_date(v, len, &since) == 0 && since >= m->mtime;
}

/* Range applies to GET only (RFC 9110 14.2); with If-Range it is ignored,
 * which is always allowed and spares comparing validators. */
static enum static_range request_range(const struct http_exchange *x, uint64_t size, uint64_t *first,
                                       uint64_t *last)
{
    size_t len;
    const char *v = http_req_header(x, "Range", &len);
    if (!v || x->req.method != HTTP_GET || http_req_header(x, "If-Range", NULL))
        return STATIC_RANGE_NONE;
    return static_parse_range(v, len, size, first, last);
}

static void validator_headers(struct http_exchange *x, const struct file_meta *m)
{
    http_header(x, "ETag", m->etag, (size_t)m->etag_len);
    http_header(x, "Last-Modified", m->modified, 29);
}

/* http_error() writes no extra field, and a 416 needs Content-Range. */
static void send_416(struct http_exchange *x, uint64_t size)
{
    static const char body[] = "{\"error\": \"range not satisfiable\"}\n";
    char cr[40];
    int n = snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
    http_begin(x, 416);
    http_header(x, "Content-Range", cr, (size_t)n);
    http_finish(x, "application/json", body, sizeof(body) - 1);
}

static void send_304(struct http_exchange *x, const struct file_meta *m)
{
    http_begin(x, 304);
    validator_headers(x, m);
    http_finish(x, NULL, NULL, 0);
}

/* Sends an opened file: 304, 416, 206 or 200. Owns fd. */
static void send_file(struct http_exchange *x, int fd, const char *name, const struct stat *st)
{
    struct file_meta m;
    meta_init(&m, st);
    if (not_modified(x, &m)) {
        close(fd);
        send_304(x, &m);
        return;
    }
    uint64_t first = 0, last = 0;
    enum static_range range = request_range(x, m.size, &first, &last);
    if (range == STATIC_RANGE_UNSATISFIABLE) {
        close(fd);
        send_416(x, m.size);
        return;
    }
    http_begin(x, range == STATIC_RANGE_OK ? 206 : 200);
    validator_headers(x, &m);
    http_header(x, "Accept-Ranges", "bytes", 5);
    uint64_t off = 0, len = m.size;
    if (range == STATIC_RANGE_OK) {
        char cr[80];
        int n = snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)first,
                         (unsigned long long)last, (unsigned long long)m.size);
        http_header(x, "Content-Range", cr, (size_t)n);
        off = first;
        len = last - first + 1;
    }
    http_finish_file(x, static_mime_type(name), fd, off, len);
}

void static_handle(struct http_exchange *x)
{
    const struct static_dir *d = x->match.route->data;
    const char *path = x->req.path;
    size_t len = x->req.path_len;
    char clean[PATH_MAX];
    if (len < d->prefix_len || memcmp(path, d->prefix, d->prefix_len) != 0 ||
        static_clean_path(path + d->prefix_len, len - d->prefix_len, clean, sizeof(clean)) < 0) {
        http_error(x, 404, "not found");
        return;
    }
    struct stat st;
    int fd = static_open(d, clean, sizeof(clean), &st);
    if (fd == -EMFILE || fd == -ENFILE || fd == -ENOMEM) {
        http_error(x, 503, "out of file descriptors or memory; try again");
        return;
    }
    if (fd < 0) {
        /* denied, missing or outside the root: all look the same */
        http_error(x, 404, "not found");
        return;
    }
    send_file(x, fd, clean, &st);
}

/* --- config routes -------------------------------------------------------- */

struct static_routes {
    struct static_dir **dirs;
    size_t n;
};

static int static_build(void *self, const struct cfg_route *rt, struct http_route_spec *out, char *err,
                        size_t errlen)
{
    struct static_routes *s = self;
    size_t n = strlen(rt->path);
    if (n < 2 || rt->path[n - 1] != '*') {
        snprintf(err, errlen, "route %s: a static route needs a prefix path ending in /*", rt->path);
        return -EINVAL;
    }
    char *prefix = strndup(rt->path, n - 1);
    struct static_dir *d = prefix ? static_dir_new(prefix, rt->root) : NULL;
    free(prefix);
    if (!d) {
        snprintf(err, errlen, "route %s: root %s: %s", rt->path, rt->root, strerror(errno));
        return -EINVAL;
    }
    struct static_dir **dirs = realloc(s->dirs, (s->n + 1) * sizeof(*dirs));
    if (!dirs) {
        static_dir_free(d);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    s->dirs = dirs;
    s->dirs[s->n++] = d;
    *out = (struct http_route_spec){.methods = HTTP_M(HTTP_GET), .fn = static_handle, .data = d};
    return 0;
}

struct static_routes *static_routes_new(struct http_handlers *h)
{
    struct static_routes *s = calloc(1, sizeof(*s));
    if (s && http_handlers_add(h, STATIC_HANDLER, static_build, s) < 0) {
        free(s);
        return NULL;
    }
    return s;
}

void static_routes_free(struct static_routes *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        static_dir_free(s->dirs[i]);
    free(s->dirs);
    free(s);
}
