/*
 * Output: the effective config as JSON (check-config prints it; the master
 * hands it to workers) and the key reference of docs/config.md.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "core/config_impl.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- output ----------------------------------------------------------- */

static json_t *routes_value(const struct cfg *c);
static json_t *upstreams_value(const struct cfg *c);
static json_t *servers_value(const struct cfg_upstream *g);
static json_t *listeners_value(const struct cfg *c);

static int64_t nvalues(const struct cfg_key *k)
{
    int64_t n = 0;
    while (k->values[n])
        n++;
    return n;
}

/* Sets *out to NULL, with 0, for a string that is not set. */
int cfg_key_value(const struct cfg_key *k, const void *base, json_t **out)
{
    char buf[32];
    int64_t n = k->store == CFG_S_INT || k->store == CFG_S_I64 ? cfg_load_num(k, base) : 0;
    const char *s = k->store == CFG_S_STR ? *cfg_str_field(k, base) : NULL;

    if (k->store == CFG_S_STR && !s) {
        *out = NULL;
        return 0;
    }
    if (k->type == CFG_T_ENUM && k->store == CFG_S_INT)
        s = n >= 0 && n < nvalues(k) ? k->values[n] : "?";
    switch (k->type) {
    case CFG_T_INT:
        *out = json_integer(n);
        break;
    case CFG_T_DURATION:
        *out = json_string(cfg_fmt_duration(n, buf, sizeof buf));
        break;
    case CFG_T_SIZE:
        cfg_fmt_size(n, buf, sizeof buf);
        *out = isdigit((unsigned char)buf[strlen(buf) - 1]) ? json_integer(n) : json_string(buf);
        break;
    case CFG_T_ENUM:
    case CFG_T_STRING:
        *out = json_string(s);
        break;
    case CFG_T_ROUTES:
        *out = routes_value(base);
        break;
    case CFG_T_BOOL:
        *out = json_boolean(n);
        break;
    case CFG_T_UPSTREAMS:
        *out = upstreams_value(base);
        break;
    case CFG_T_SERVERS:
        *out = servers_value(base);
        break;
    case CFG_T_ADDRS:
        *out = cfg_addrs_value(s);
        break;
    case CFG_T_LISTENERS:
        *out = listeners_value(base);
        break;
    }
    return *out ? 0 : -ENOMEM;
}

static int put_key(json_t *root, const struct cfg_key *k, const char *name, const void *base);

/* A numeric route key at 0 is unset (cache.ttl) and left out. */
static json_t *route_value(const struct cfg_route *r)
{
    json_t *o = json_object();

    for (size_t i = 0; o && i < cfg_key_count(); i++) {
        const struct cfg_key *k = cfg_key_at(i);
        if (!cfg_is_route_key(k) || (k->store == CFG_S_I64 && cfg_load_num(k, r) == 0))
            continue;
        if (put_key(o, k, k->name + strlen(ROUTE_PREFIX), r)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *routes_value(const struct cfg *c)
{
    json_t *a = json_array();

    for (size_t i = 0; a && i < c->nroutes; i++) {
        if (json_array_append_new(a, route_value(&c->routes[i]))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* Every key of an element, nested by its dots. */
static json_t *elem_value(const char *prefix, const void *base)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < cfg_key_count(); i++) {
        const struct cfg_key *k = cfg_key_at(i);
        if (cfg_in_elem(k, prefix) && put_key(o, k, k->name + strlen(prefix), base)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

static json_t *servers_value(const struct cfg_upstream *g)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < g->nservers; i++) {
        if (json_array_append_new(a, elem_value(SERVER_PREFIX, &g->servers[i]))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *listeners_value(const struct cfg *c)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < c->nlisteners; i++) {
        if (json_array_append_new(a, elem_value(LISTEN_PREFIX, &c->listeners[i]))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *upstreams_value(const struct cfg *c)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < c->nupstreams; i++) {
        if (json_object_set_new(o, c->upstreams[i].name, elem_value(GROUP_PREFIX, &c->upstreams[i]))) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* Puts a key at its place in the tree: "server.port" under "server". */
static int put_key(json_t *root, const struct cfg_key *k, const char *name, const void *base)
{
    const char *dot;
    json_t *obj = root, *v;

    while ((dot = strchr(name, '.'))) {
        size_t n = (size_t)(dot - name);
        json_t *sub = json_object_getn(obj, name, n);
        if (!sub && json_object_setn_new(obj, name, n, sub = json_object()))
            return -ENOMEM;
        obj = sub;
        name = dot + 1;
    }
    if (cfg_key_value(k, base, &v))
        return -ENOMEM;
    return v && json_object_set_new(obj, name, v) ? -ENOMEM : 0;
}

char *cfg_to_json(const struct cfg *c)
{
    json_t *root = json_object();
    int rc = root ? 0 : -ENOMEM;
    char *s = NULL;

    if (!rc && c->env)
        rc = json_object_set_new(root, "env", json_string(c->env)) ? -ENOMEM : 0;
    for (size_t i = 0; i < cfg_key_count() && !rc; i++)
        if (cfg_is_top_key(cfg_key_at(i)))
            rc = put_key(root, cfg_key_at(i), cfg_key_at(i)->name, c);
    if (!rc)
        s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
}

/* The effective config in a memfd named name; the reader preads it. */
int cfg_to_memfd(const struct cfg *c, const char *name)
{
    char *json = cfg_to_json(c);
    int fd = json ? memfd_create(name, MFD_CLOEXEC) : -1;
    size_t len = json ? strlen(json) : 0, off = 0;
    while (fd >= 0 && off < len) {
        ssize_t n = write(fd, json + off, len - off);
        if (n <= 0) {
            close(fd);
            fd = -1;
            break;
        }
        off += (size_t)n;
    }
    free(json);
    return fd;
}

/* The whole text of a config memfd (as cfg_to_memfd wrote it), read with
 * pread; NULL when it cannot be read whole. Caller frees. */
char *cfg_read_memfd(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return NULL;
    size_t len = (size_t)st.st_size, off = 0;
    char *buf = malloc(len + 1);
    while (buf && off < len) {
        ssize_t n = pread(fd, buf + off, len - off, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return NULL;
        }
        off += (size_t)n;
    }
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* --- reference -------------------------------------------------------- */

static const char *const type_names[] = {
    [CFG_T_INT] = "integer", [CFG_T_DURATION] = "duration", [CFG_T_SIZE] = "size",
    [CFG_T_ENUM] = "enum",   [CFG_T_STRING] = "string",     [CFG_T_ROUTES] = "array",
    [CFG_T_BOOL] = "boolean", [CFG_T_UPSTREAMS] = "object",  [CFG_T_SERVERS] = "array",
    [CFG_T_ADDRS] = "array", [CFG_T_LISTENERS] = "array",
};

static const char *describe_bounds(const struct cfg_key *k, char *buf, size_t len)
{
    char lo[32], hi[32];
    size_t used = 0;

    if (k->bounds)
        return k->bounds;
    if (k->type != CFG_T_ENUM) {
        snprintf(buf, len, "%s..%s", cfg_fmt_num(k, k->min, lo, sizeof lo), cfg_fmt_num(k, k->max, hi, sizeof hi));
        return buf;
    }
    buf[0] = '\0';
    for (size_t i = 0; k->values[i] && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%s", i ? ", " : "", k->values[i]);
    return buf;
}

void cfg_describe(FILE *out)
{
    char def[64], bounds[128], env[64];

    fputs("| Key | Type | Default | Bounds | Reloadable | Env | Description |\n", out);
    fputs("|-----|------|---------|--------|------------|-----|-------------|\n", out);
    for (size_t i = 0; i < cfg_key_count(); i++) {
        const struct cfg_key *k = cfg_key_at(i);
        snprintf(def, sizeof def, k->def ? "`%s`" : "%s",
                 k->def ? k->def : (k->flags & CFG_REQUIRED) ? "required" : "none");
        snprintf(env, sizeof env, k->env ? "`%s`" : "%s", k->env ? k->env : "");
        const char *type = (k->flags & CFG_PATH) ? "path" : type_names[k->type];
        fprintf(out, "| `%s` | %s | %s | %s | %s | %s | %s |\n", k->name, type, def,
                describe_bounds(k, bounds, sizeof bounds), (k->flags & CFG_RELOAD) ? "yes" : "no", env,
                k->desc);
    }
}
