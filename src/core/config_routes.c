/*
 * Elements of the config: routes (with the rules of their registered
 * handlers) and upstream groups with their servers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "core/config_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- routes ----------------------------------------------------------- */

void cfg_free_routes(struct cfg_route *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        for (size_t k = 0; k < cfg_key_count(); k++)
            if (cfg_is_route_key(cfg_key_at(k)) && cfg_key_at(k)->store == CFG_S_STR)
                free(*cfg_str_field(cfg_key_at(k), &r[i]));
    free(r);
}

static const struct cfg_key *find_route_key(const char *name)
{
    for (size_t i = 0; i < cfg_key_count(); i++) {
        const struct cfg_key *k = cfg_key_at(i);
        if (cfg_is_route_key(k) && strcmp(k->name + strlen(ROUTE_PREFIX), name) == 0)
            return k;
    }
    return NULL;
}

char *cfg_join(const char *prefix, const char *name)
{
    char *p;
    if (asprintf(&p, "%s%s%s", prefix, *prefix ? "." : "", name) < 0)
        return NULL;
    return p;
}

/* A route key of handler h on a route of another handler; or none of it on
 * a route of h. */
static int check_owned_key(const struct ctx *x, const char *path, const struct cfg_route *r,
                           const struct cfg_handler *h)
{
    const struct cfg_key *k = find_route_key(h->key);
    bool mine = strcmp(r->handler, h->name) == 0, set = *cfg_str_field(k, r) != NULL;
    if (mine && !set)
        return cfg_report(x, path, false, "%s is required when handler is \"%s\"", h->key, h->name);
    if (mine || !set)
        return 0;
    char *p = cfg_join(path, h->key);
    int rc = p ? cfg_report(x, p, false, "not allowed when handler is \"%s\" (only \"%s\" %s)", r->handler,
                            h->name, h->does)
               : cfg_no_memory(x);
    free(p);
    return rc;
}

/* Required keys, and the keys that belong to one handler. */
static int check_route(const struct ctx *x, const char *path, const struct cfg_route *r)
{
    for (size_t i = 0; i < cfg_key_count(); i++) {
        const struct cfg_key *k = cfg_key_at(i);
        if (cfg_is_route_key(k) && (k->flags & CFG_REQUIRED) && !*cfg_str_field(k, r))
            return cfg_report(x, path, false, "%s is required", k->name + strlen(ROUTE_PREFIX));
    }
    for (size_t i = 0; i < cfg_handler_count(); i++) {
        const struct cfg_handler *h = cfg_handler_at(i);
        int rc = h->key ? check_owned_key(x, path, r, h) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

/* "cache" is a section of route keys: "cache.ttl" is written nested. */
static bool is_route_section(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < cfg_key_count(); i++) {
        const char *k = cfg_key_at(i)->name + strlen(ROUTE_PREFIX);
        if (cfg_is_route_key(cfg_key_at(i)) && strncmp(k, name, n) == 0 && k[n] == '.')
            return true;
    }
    return false;
}

/* A member named "cache.ttl" literally: keys are written nested. */
static int dotted_member(const struct ctx *x, const char *elem, const char *p, const char *rel)
{
    const char *dot = strrchr(rel, '.');
    if (find_route_key(rel))
        return cfg_report(x, p, true, "unknown key (write it nested, as \"%.*s\": {\"%s\": ...})",
                      (int)(dot - rel), rel, dot + 1);
    return cfg_unknown_key(x, p, elem);
}

/* One member of a route (`rel` is its name within the route, "cache.ttl"
 * for a nested one); `elem` is "routes[3]", `p` the member's whole path.
 * A literal dotted member name never reaches here: it must be nested. */
static int set_route_member(struct ctx *x, const char *elem, const char *p, const char *rel, json_t *val,
                            struct cfg_route *r)
{
    const struct cfg_key *k = find_route_key(rel);
    const char *name;
    json_t *sub;
    int rc = 0;

    if (k)
        return cfg_set_key(x, k, p, val, r);
    if (!is_route_section(rel))
        return cfg_unknown_key(x, p, elem);
    if (!json_is_object(val))
        return cfg_bad_type(x, p, val, "an object");
    json_object_foreach(val, name, sub) {
        char *cp = cfg_join(p, name), *crel = cp ? cfg_join(rel, name) : NULL;
        rc = !crel ? cfg_no_memory(x) : strchr(name, '.') ? dotted_member(x, elem, cp, crel)
                                                    : set_route_member(x, elem, cp, crel, sub, r);
        free(cp);
        free(crel);
        if (rc)
            return rc;
    }
    return 0;
}

static int set_route(struct ctx *x, size_t i, json_t *v, struct cfg_route *r)
{
    char path[48];
    const char *name;
    json_t *val;

    snprintf(path, sizeof path, "routes[%zu]", i);
    if (!json_is_object(v))
        return cfg_bad_type(x, path, v, "a route object");
    json_object_foreach(v, name, val) {
        char *p = cfg_join(path, name);
        int rc = !p ? cfg_no_memory(x) : strchr(name, '.') ? dotted_member(x, path, p, name)
                                                         : set_route_member(x, path, p, name, val, r);
        free(p);
        if (rc)
            return rc;
    }
    return check_route(x, path, r);
}

/* The new routes replace the old ones only when every element is valid. */
int cfg_set_routes(struct ctx *x, const char *path, json_t *v, struct cfg *c)
{
    if (!json_is_array(v))
        return cfg_bad_type(x, path, v, "an array of routes");
    size_t n = json_array_size(v);
    struct cfg_route *r = n ? calloc(n, sizeof *r) : NULL;
    int rc = 0;

    if (n && !r)
        return cfg_no_memory(x);
    for (size_t i = 0; i < n && !rc; i++)
        rc = set_route(x, i, json_array_get(v, i), &r[i]);
    if (rc) {
        cfg_free_routes(r, n);
        return rc;
    }
    cfg_free_routes(c->routes, c->nroutes);
    c->routes = r;
    c->nroutes = n;
    return 0;
}

/* --- upstream groups -------------------------------------------------- */

/*
 * "upstreams" is an object of groups by name; a group holds its keys
 * (GROUP_PREFIX) and "servers", an array of server objects (SERVER_PREFIX)
 * or of "host:port" strings. Both are elements like a route, but with
 * defaults of their own, so they have their own walk: the keys of an
 * element kind are those whose name continues its prefix with no "[".
 */
bool cfg_in_elem(const struct cfg_key *k, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(k->name, prefix, n) == 0 && !strchr(k->name + n, '[');
}

static const struct cfg_key *find_elem_key(const char *prefix, const char *rel)
{
    for (size_t i = 0; i < cfg_key_count(); i++)
        if (cfg_in_elem(cfg_key_at(i), prefix) && strcmp(cfg_key_at(i)->name + strlen(prefix), rel) == 0)
            return cfg_key_at(i);
    return NULL;
}

static bool is_elem_section(const char *prefix, const char *rel)
{
    size_t n = strlen(rel), pl = strlen(prefix);
    for (size_t i = 0; i < cfg_key_count(); i++) {
        const struct cfg_key *k = cfg_key_at(i);
        if (cfg_in_elem(k, prefix) && strncmp(k->name + pl, rel, n) == 0 && k->name[pl + n] == '.')
            return true;
    }
    return false;
}

/* An unknown member of an element, with the nearest of its keys. */
static int unknown_member(const struct ctx *x, const char *prefix, const char *path, const char *rel)
{
    size_t best_d = 1 + strlen(rel) / 5 + 1, best_len = 0, pl = strlen(prefix);
    const char *best = NULL;
    for (size_t i = 0; i < cfg_key_count(); i++) {
        if (!cfg_in_elem(cfg_key_at(i), prefix))
            continue;
        const char *c = cfg_key_at(i)->name + pl, *dot = strchr(c, '.');
        for (int pass = 0; pass < 2; pass++) {
            size_t clen = pass == 0 ? strlen(c) : dot ? (size_t)(dot - c) : 0;
            size_t d = clen ? cfg_score(rel, c, clen) : SIZE_MAX;
            if (d < best_d)
                best_d = d, best = c, best_len = clen;
        }
    }
    if (!best_len)
        return cfg_report(x, path, true, "unknown key");
    return cfg_report(x, path, true, "unknown key (did you mean %.*s?)", (int)best_len, best);
}

static void free_servers(struct cfg_upstream_server *s, size_t n);

static void free_elem(const char *prefix, void *base)
{
    for (size_t i = 0; i < cfg_key_count(); i++) {
        if (!cfg_in_elem(cfg_key_at(i), prefix))
            continue;
        if (cfg_key_at(i)->store == CFG_S_STR)
            free(*cfg_str_field(cfg_key_at(i), base));
        else if (cfg_key_at(i)->store == CFG_S_SERVERS)
            free_servers(((struct cfg_upstream *)base)->servers, ((struct cfg_upstream *)base)->nservers);
    }
}

static void free_servers(struct cfg_upstream_server *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        free_elem(SERVER_PREFIX, &s[i]);
    free(s);
}

void cfg_free_upstreams(struct cfg_upstream *g, size_t n)
{
    for (size_t i = 0; g && i < n; i++) {
        free(g[i].name);
        free_elem(GROUP_PREFIX, &g[i]);
    }
    free(g);
}

static int elem_defaults(struct ctx *x, const char *prefix, void *base)
{
    const char *label = x->label;
    int rc = 0;
    x->label = "built-in default";
    for (size_t i = 0; i < cfg_key_count() && !rc; i++) {
        const struct cfg_key *k = cfg_key_at(i);
        if (!cfg_in_elem(k, prefix) || !k->def)
            continue;
        json_t *v = cfg_text_value(x, k, k->def, &rc);
        if (!rc)
            rc = cfg_set_key(x, k, k->name, v, base);
        json_decref(v);
    }
    x->label = label;
    return rc;
}

static int nested_dotted(const struct ctx *x, const char *p, const char *name)
{
    const char *dot = strchr(name, '.');
    return cfg_report(x, p, true, "unknown key (write it nested, as \"%.*s\": {\"%s\": ...})", (int)(dot - name),
                  name, dot + 1);
}

/* One member of an element; `rel` is its name within it ("hash.on"). */
static int set_elem_member(struct ctx *x, const char *prefix, const char *p, const char *rel, json_t *val,
                           void *base)
{
    const struct cfg_key *k = find_elem_key(prefix, rel);
    const char *name;
    json_t *sub;
    int rc = 0;

    if (k)
        return cfg_set_key(x, k, p, val, base);
    if (!is_elem_section(prefix, rel))
        return unknown_member(x, prefix, p, rel);
    if (!json_is_object(val))
        return cfg_bad_type(x, p, val, "an object");
    json_object_foreach(val, name, sub) {
        char *cp = cfg_join(p, name), *crel = cp ? cfg_join(rel, name) : NULL;
        rc = !crel ? cfg_no_memory(x) : strchr(name, '.') ? nested_dotted(x, cp, name)
                                                    : set_elem_member(x, prefix, cp, crel, sub, base);
        free(cp);
        free(crel);
        if (rc)
            return rc;
    }
    return 0;
}

/* An element from its object: defaults, members, required keys. */
static int set_elem(struct ctx *x, const char *prefix, const char *path, json_t *v, void *base, const char *what)
{
    const char *name;
    json_t *val;
    int rc;

    if (!json_is_object(v))
        return cfg_bad_type(x, path, v, what);
    if ((rc = elem_defaults(x, prefix, base)))
        return rc;
    json_object_foreach(v, name, val) {
        char *p = cfg_join(path, name);
        rc = !p ? cfg_no_memory(x) : strchr(name, '.') ? nested_dotted(x, p, name)
                                                   : set_elem_member(x, prefix, p, name, val, base);
        free(p);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < cfg_key_count(); i++) {
        const struct cfg_key *k = cfg_key_at(i);
        if (!cfg_in_elem(k, prefix) || !(k->flags & CFG_REQUIRED))
            continue;
        if (k->store == CFG_S_STR ? !*cfg_str_field(k, base) : ((struct cfg_upstream *)base)->nservers == 0)
            return cfg_report(x, path, false, "%s is required", k->name + strlen(prefix));
    }
    return 0;
}

static int set_server(struct ctx *x, const char *path, json_t *v, struct cfg_upstream_server *s)
{
    if (!json_is_string(v))
        return set_elem(x, SERVER_PREFIX, path, v, s, "a server object or a \"host:port\" string");
    int rc = elem_defaults(x, SERVER_PREFIX, s);
    return rc ? rc : cfg_set_key(x, find_elem_key(SERVER_PREFIX, "address"), path, v, s);
}

int cfg_set_servers(struct ctx *x, const char *path, json_t *v, struct cfg_upstream *g)
{
    size_t n = json_array_size(v);
    char ep[160];
    int rc = 0;

    if (!json_is_array(v) || n == 0 || n > 1000)
        return cfg_bad_type(x, path, v, "an array of 1 to 1000 servers");
    struct cfg_upstream_server *s = calloc(n, sizeof *s);
    if (!s)
        return cfg_no_memory(x);
    for (size_t i = 0; i < n && !rc; i++) {
        snprintf(ep, sizeof ep, "%s[%zu]", path, i);
        rc = set_server(x, ep, json_array_get(v, i), &s[i]);
        for (size_t j = 0; j < i && !rc; j++)
            if (strcmp(s[j].address, s[i].address) == 0)
                rc = cfg_report(x, ep, false, "%s is listed twice (as servers[%zu] too)", s[i].address, j);
    }
    if (rc) {
        free_servers(s, n);
        return rc;
    }
    free_servers(g->servers, g->nservers);
    g->servers = s;
    g->nservers = n;
    return 0;
}

/* The rules that tie keys of an upstream group together. */
static int check_upstream_group(const struct ctx *x, const char *path, const struct cfg_upstream *g)
{
    size_t primaries = 0;
    for (size_t i = 0; i < g->nservers; i++)
        primaries += !g->servers[i].backup;
    if (!primaries)
        return cfg_report(x, path, false, "needs a server that is not a backup");
    if (g->hash_on != CFG_HASH_CLIENT && !g->hash_name)
        return cfg_report(x, path, false, "hash.name is required when hash.on is \"%s\"", cfg_hash_ons[g->hash_on]);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct cfg_upstream *)a)->name, ((const struct cfg_upstream *)b)->name);
}

/* Groups are kept sorted by name: every process that loads the same JSON
 * gets them in the same order, whatever order the object iterates in. */
int cfg_set_upstreams(struct ctx *x, const char *path, json_t *v, struct cfg *c)
{
    const char *name, *norm;
    json_t *gv;
    size_t i = 0, n = json_object_size(v);
    int rc = 0;

    if (!json_is_object(v))
        return cfg_bad_type(x, path, v, "an object of upstream groups by name");
    struct cfg_upstream *g = n ? calloc(n, sizeof *g) : NULL;
    if (n && !g)
        return cfg_no_memory(x);
    json_object_foreach(v, name, gv) {
        char *gp = cfg_join(path, name);
        const char *why = cfg_check_group_name(name, &norm);
        if (!gp)
            rc = cfg_no_memory(x);
        else if (why)
            rc = cfg_report(x, gp, true, "\"%s\" is not a group name: it %s", name, why);
        else if (!(g[i].name = strdup(name)))
            rc = cfg_no_memory(x);
        else if (!(rc = set_elem(x, GROUP_PREFIX, gp, gv, &g[i], "an upstream group object")))
            rc = check_upstream_group(x, gp, &g[i]);
        free(gp);
        i++;
        if (rc)
            break;
    }
    if (rc) {
        cfg_free_upstreams(g, n);
        return rc;
    }
    if (n)
        qsort(g, n, sizeof *g, by_name);
    cfg_free_upstreams(c->upstreams, c->nupstreams);
    c->upstreams = g;
    c->nupstreams = n;
    return 0;
}

/* --- listeners --------------------------------------------------------- */

void cfg_free_listeners(struct cfg_listener *l, size_t n)
{
    for (size_t i = 0; l && i < n; i++)
        free_elem(LISTEN_PREFIX, &l[i]);
    free(l);
}

/* "listen": an array of listener objects, each address at most once. */
int cfg_set_listeners(struct ctx *x, const char *path, json_t *v, struct cfg *c)
{
    size_t n = json_array_size(v);
    char ep[64];
    int rc = 0;

    if (!json_is_array(v) || n > CFG_MAX_LISTENERS)
        return cfg_bad_type(x, path, v, "an array of at most " CFG_MAX_LISTENERS_TEXT " listeners");
    struct cfg_listener *l = n ? calloc(n, sizeof *l) : NULL;
    if (n && !l)
        return cfg_no_memory(x);
    for (size_t i = 0; i < n && !rc; i++) {
        snprintf(ep, sizeof ep, "%s[%zu]", path, i);
        rc = set_elem(x, LISTEN_PREFIX, ep, json_array_get(v, i), &l[i], "a listener object");
        for (size_t j = 0; j < i && !rc; j++)
            if (strcmp(l[j].address, l[i].address) == 0)
                rc = cfg_report(x, ep, false, "%s is listed twice (as listen[%zu] too)", l[i].address, j);
    }
    if (rc) {
        cfg_free_listeners(l, n);
        return rc;
    }
    cfg_free_listeners(c->listeners, c->nlisteners);
    c->listeners = l;
    c->nlisteners = n;
    return 0;
}

const struct cfg_upstream *cfg_find_upstream(const struct cfg *c, const char *name)
{
    for (size_t i = 0; name && i < c->nupstreams; i++)
        if (strcmp(c->upstreams[i].name, name) == 0)
            return &c->upstreams[i];
    return NULL;
}

/* --- the handlers' own checks ------------------------------------------ */

/* "VALUE WHY" at routes[i].KEY, the value as it was given (and as it was
 * resolved, for a path), from the source it came from. */
static int route_problem(struct ctx *x, size_t i, const char *key, const char *value, const char *why)
{
    char path[80], shown[SHOWN];
    snprintf(path, sizeof path, "routes[%zu].%s", i, key);
    const struct note *n = cfg_find_note(x, path);
    json_t *v = json_string(n ? n->given : value);
    const char *given = v ? cfg_show(v, shown) : value;
    x->label = n ? n->label : NULL;
    if (n && strcmp(n->given, value) != 0)
        cfg_report(x, path, false, "%s (%s) %s", given, value, why);
    else
        cfg_report(x, path, false, "%s %s", given, why);
    x->label = NULL;
    json_decref(v);
    return -EINVAL;
}

/*
 * Every route passes its handler's check once every source is in (a route
 * and what it refers to may come from different sources); with fs, the
 * handler's check of the file system instead.
 */
int cfg_check_routes(struct ctx *x, const struct cfg *c, bool fs)
{
    char why[256];
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct cfg_route *r = &c->routes[i];
        const struct cfg_handler *h = cfg_handler_find(r->handler);
        const char *(*check)(const struct cfg *, const struct cfg_route *, char *, size_t) =
            !h || !h->key ? NULL : fs ? h->check_fs : h->check;
        const char *problem = check ? check(c, r, why, sizeof why) : NULL;
        if (problem)
            return route_problem(x, i, h->key, *cfg_str_field(find_route_key(h->key), r), problem);
    }
    return 0;
}
