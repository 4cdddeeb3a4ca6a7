/*
 * Where a value came from: jansson does not keep positions, so each file
 * is scanned a second time for the line and column of every key path; an
 * error looks its path up in the last file that holds it, which is the file
 * its effective value came from. Messages, reading and merging files.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "core/config_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- error messages --------------------------------------------------- */

#define SHOW_FLAGS (JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(12))

/* A JSON value as JSON, cut short (at a character boundary) to fit buf. */
const char *cfg_show(const json_t *v, char *buf)
{
    size_t n = json_dumpb(v, buf, SHOWN - 1, SHOW_FLAGS);
    if (n < SHOWN - 1) {
        buf[n] = '\0';
        return buf;
    }
    char *full = json_dumps(v, SHOW_FLAGS);
    size_t cut = SHOWN - 4;
    if (!full)
        return "(value)";
    while (cut > 0 && ((unsigned char)full[cut] & 0xC0) == 0x80)
        cut--;
    memcpy(buf, full, cut);
    memcpy(buf + cut, "...", 4);
    free(full);
    return buf;
}

static void vput(const struct ctx *x, size_t *used, const char *fmt, va_list ap)
{
    if (*used + 1 >= x->errlen)
        return;
    int n = vsnprintf(x->err + *used, x->errlen - *used, fmt, ap);
    if (n > 0)
        *used = *used + (size_t)n < x->errlen ? *used + (size_t)n : x->errlen - 1;
}

__attribute__((format(printf, 3, 4))) static void put(const struct ctx *x, size_t *used,
                                                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vput(x, used, fmt, ap);
    va_end(ap);
}

/* Messages are one line even when a value or file name holds a newline. */
static void one_line(const struct ctx *x)
{
    for (char *p = x->err; *p; p++)
        if ((unsigned char)*p < ' ' || *p == 0x7f)
            *p = '?';
}

/* The last file holding `path` is the one its effective value came from. */
const struct pos *cfg_find_pos(const struct ctx *x, const char *path, const char **file)
{
    *file = x->nfiles ? x->files[x->nfiles - 1].name : NULL;
    for (size_t f = x->nfiles; f-- > 0;) {
        for (size_t i = 0; i < x->files[f].npos; i++) {
            if (strcmp(x->files[f].pos[i].path, path) == 0) {
                *file = x->files[f].name;
                return &x->files[f].pos[i];
            }
        }
    }
    return NULL;
}

/* Writes "WHERE: PATH: MESSAGE" and returns -EINVAL. */
__attribute__((format(printf, 4, 5))) int cfg_report(const struct ctx *x, const char *path,
                                                         bool at_key, const char *fmt, ...)
{
    size_t used = 0;
    const char *file;
    va_list ap;

    if (!x->err || !x->errlen)
        return -EINVAL;
    x->err[0] = '\0';
    const struct pos *p = x->label ? NULL : cfg_find_pos(x, path, &file);
    if (x->label)
        put(x, &used, "%s: ", x->label);
    else if (p)
        put(x, &used, "%s:%d:%d: ", file, at_key ? p->kline : p->vline, at_key ? p->kcol : p->vcol);
    else if (file)
        put(x, &used, "%s: ", file);
    if (*path)
        put(x, &used, "%s: ", path);
    va_start(ap, fmt);
    vput(x, &used, fmt, ap);
    va_end(ap);
    one_line(x);
    return -EINVAL;
}

/* A message that names no key: file errors, out of memory. */
__attribute__((format(printf, 3, 4))) int cfg_fail(const struct ctx *x, int rc, const char *fmt,
                                                       ...)
{
    size_t used = 0;
    va_list ap;

    if (!x->err || !x->errlen)
        return rc;
    x->err[0] = '\0';
    va_start(ap, fmt);
    vput(x, &used, fmt, ap);
    va_end(ap);
    one_line(x);
    return rc;
}

int cfg_no_memory(const struct ctx *x)
{
    return cfg_fail(x, -ENOMEM, "out of memory");
}

int cfg_bad_type(const struct ctx *x, const char *path, const json_t *v, const char *what)
{
    char buf[SHOWN];
    return cfg_report(x, path, false, "%s is not %s", cfg_show(v, buf), what);
}

/* --- position scanner ------------------------------------------------- */

/*
 * Runs over text jansson has already accepted and records where each key
 * path starts. Columns count characters, not bytes, as jansson's do. It
 * still never reads past the end, should it be handed something odd.
 */
struct scan {
    const char *p, *end;
    int line, col;
    struct pos *v;
    size_t n, cap;
    int fail;
};

static void adv(struct scan *s)
{
    unsigned char b = (unsigned char)*s->p++;
    if (b == '\n')
        s->line++, s->col = 1;
    else if ((b & 0xC0) != 0x80)
        s->col++;
}

static bool at(const struct scan *s, char c)
{
    return s->p < s->end && *s->p == c;
}

static void skip_ws(struct scan *s)
{
    while (at(s, ' ') || at(s, '\t') || at(s, '\r') || at(s, '\n'))
        adv(s);
}

static void skip_string(struct scan *s)
{
    adv(s);
    while (s->p < s->end && *s->p != '"') {
        if (*s->p == '\\' && s->p + 1 < s->end)
            adv(s);
        adv(s);
    }
    if (s->p < s->end)
        adv(s);
}

static void skip_scalar(struct scan *s)
{
    while (s->p < s->end && !strchr(",]} \t\r\n", *s->p))
        adv(s);
}

/* Takes ownership of path. */
static void push(struct scan *s, char *path, int kline, int kcol)
{
    if (path && s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        struct pos *nv = realloc(s->v, cap * sizeof *nv);
        if (nv)
            s->v = nv, s->cap = cap;
    }
    if (!path || s->n == s->cap) {
        s->fail = -ENOMEM;
        free(path);
        return;
    }
    s->v[s->n++] = (struct pos){path, kline, kcol, s->line, s->col};
}

/* jansson decodes the key token, escapes and all. */
static char *decode_key(const char *tok, size_t len)
{
    json_t *j = json_loadb(tok, len, JSON_DECODE_ANY, NULL);
    char *k = json_is_string(j) ? strdup(json_string_value(j)) : NULL;
    json_decref(j);
    return k;
}

static void scan_value(struct scan *s, char *path, int kline, int kcol);

static void scan_object(struct scan *s, const char *path)
{
    adv(s);
    skip_ws(s);
    while (!s->fail && at(s, '"')) {
        int kline = s->line, kcol = s->col;
        const char *tok = s->p;
        skip_string(s);
        char *key = decode_key(tok, (size_t)(s->p - tok));
        char *child = key ? cfg_join(path, key) : NULL;
        free(key);
        skip_ws(s);
        if (at(s, ':'))
            adv(s);
        skip_ws(s);
        scan_value(s, child, kline, kcol);
        skip_ws(s);
        if (at(s, ','))
            adv(s), skip_ws(s);
    }
    if (at(s, '}'))
        adv(s);
}

static void scan_array(struct scan *s, const char *path)
{
    adv(s);
    skip_ws(s);
    for (size_t i = 0; !s->fail && s->p < s->end && !at(s, ']'); i++) {
        const char *before = s->p;
        char *child;
        if (asprintf(&child, "%s[%zu]", path, i) < 0)
            child = NULL;
        scan_value(s, child, s->line, s->col);
        skip_ws(s);
        if (at(s, ','))
            adv(s), skip_ws(s);
        if (s->p == before)
            s->fail = -EINVAL; /* no progress: not JSON after all */
    }
    if (at(s, ']'))
        adv(s);
}

static void scan_value(struct scan *s, char *path, int kline, int kcol)
{
    size_t self = s->n;
    push(s, path, kline, kcol);
    if (s->fail || s->p >= s->end)
        return;
    /* The path string stays put when s->v grows; only the array moves. */
    const char *p = s->v[self].path;
    if (*s->p == '{')
        scan_object(s, p);
    else if (*s->p == '[')
        scan_array(s, p);
    else if (*s->p == '"')
        skip_string(s);
    else
        skip_scalar(s);
}

static void free_pos(struct pos *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].path);
    free(v);
}

static int scan_positions(const char *buf, size_t len, struct origin *o)
{
    struct scan s = {.p = buf, .end = buf + len, .line = 1, .col = 1};
    skip_ws(&s);
    scan_value(&s, strdup(""), s.line, s.col);
    if (s.fail == -ENOMEM) {
        free_pos(s.v, s.n);
        return -ENOMEM;
    }
    o->pos = s.v;
    o->npos = s.n;
    return 0;
}

/* --- reading files ---------------------------------------------------- */

void cfg_ctx_free(struct ctx *x)
{
    cfg_free_notes(x);
    for (size_t i = 0; i < x->nfiles; i++) {
        free(x->files[i].name);
        free_pos(x->files[i].pos, x->files[i].npos);
    }
    x->nfiles = 0;
}

static int read_all(const char *name, char **buf, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    int fd = open(name, O_RDONLY | O_CLOEXEC), rc = 0;

    if (fd < 0 || !b) {
        rc = fd < 0 ? -errno : -ENOMEM;
        goto out;
    }
    for (ssize_t got; (got = read(fd, b + n, cap - n)) != 0;) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0 && (rc = -errno))
            goto out;
        n += (size_t)got;
        char *nb = n == cap ? realloc(b, cap *= 2) : b;
        if (!nb && (rc = -ENOMEM))
            goto out;
        b = nb;
    }
    *buf = b, *len = n, b = NULL;
out:
    if (fd >= 0)
        close(fd);
    free(b);
    return rc;
}

/* Parses one JSON text whose top level must be an object, and keeps its
 * positions for later messages. */
int cfg_parse_text(struct ctx *x, const char *name, const char *buf, size_t len, json_t **out)
{
    json_error_t e;
    char shown[SHOWN];
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
    struct origin *o = &x->files[x->nfiles];

    if (!j)
        return cfg_fail(x, -EINVAL, "%s:%d:%d: %s", name, e.line, e.column, e.text);
    if (!(o->name = strdup(name)) || scan_positions(buf, len, o)) {
        free(o->name);
        json_decref(j);
        return cfg_no_memory(x);
    }
    x->nfiles++;
    if (!json_is_object(j)) {
        const struct pos *p = o->npos ? &o->pos[0] : NULL;
        cfg_fail(x, -EINVAL, "%s:%d:%d: the top level must be an object, not %s", name, p ? p->vline : 1,
             p ? p->vcol : 1, cfg_show(j, shown));
        json_decref(j);
        return -EINVAL;
    }
    *out = j;
    return 0;
}

/* *out stays NULL for a missing file that is allowed to be missing. */
static int load_file(struct ctx *x, const char *name, bool required, json_t **out)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = read_all(name, &buf, &len);

    *out = NULL;
    if (rc == -ENOENT && !required)
        return 0;
    if (rc)
        return cfg_fail(x, rc == -ENOENT || rc == -ENOMEM ? rc : -EINVAL, "%s: cannot read: %s", name,
                    strerror(-rc));
    rc = cfg_parse_text(x, name, buf, len, out);
    free(buf);
    return rc;
}

/* Objects merge key by key; anything else, arrays too, replaces. */
static int merge(json_t *dst, json_t *src)
{
    const char *name;
    json_t *v;

    json_object_foreach(src, name, v) {
        json_t *d = json_object_get(dst, name);
        int rc = json_is_object(d) && json_is_object(v) ? merge(d, v) : json_object_set(dst, name, v);
        if (rc)
            return -ENOMEM;
    }
    return 0;
}

static int read_dir(struct ctx *x, const char *dir, const char *env, json_t **tree)
{
    char *base = NULL, *over = NULL;
    json_t *t2 = NULL;
    int rc;

    if (asprintf(&base, "%s/default.json", dir) < 0)
        return cfg_no_memory(x);
    if (asprintf(&over, "%s/%s.json", dir, env) < 0) {
        free(base);
        return cfg_no_memory(x);
    }
    rc = load_file(x, base, false, tree);
    if (!rc)
        rc = load_file(x, over, false, &t2);
    if (!rc && t2 && *tree && merge(*tree, t2))
        rc = cfg_no_memory(x);
    else if (!rc && t2 && !*tree)
        *tree = json_incref(t2);
    json_decref(t2);
    free(base);
    free(over);
    return rc;
}

int cfg_read_sources(struct ctx *x, const struct cfg_sources *src, const char *env, json_t **tree)
{
    int rc = src->file       ? load_file(x, src->file, true, tree)
             : src->no_files ? 0
                             : read_dir(x, src->config_dir ? src->config_dir : "config", env, tree);
    if (!rc && !*tree && !(*tree = json_object()))
        rc = cfg_no_memory(x);
    return rc;
}
