/*
 * Configuration loader. Loading runs in passes over one struct cfg:
 * built-in defaults, then the JSON files merged into one tree and validated
 * as a whole, then environment variables, then "key=value" overrides; then
 * the checks that need every source. Comparing two configs for a reload.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "core/config_impl.h"

#include <ctype.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- unknown keys ----------------------------------------------------- */

/* Optimal string alignment distance; names longer than 63 get none. */
static size_t distance(const char *a, size_t n, const char *b, size_t m)
{
    size_t row[3][64], *pp = row[0], *prev = row[1], *cur = row[2];

    if (n > 63 || m > 63)
        return SIZE_MAX;
    for (size_t j = 0; j <= m; j++)
        prev[j] = j;
    for (size_t i = 1; i <= n; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t cost = a[i - 1] != b[j - 1], d = prev[j - 1] + cost;
            d = prev[j] + 1 < d ? prev[j] + 1 : d;
            d = cur[j - 1] + 1 < d ? cur[j - 1] + 1 : d;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && pp[j - 2] + 1 < d)
                d = pp[j - 2] + 1;
            cur[j] = d;
        }
        size_t *t = pp;
        pp = prev, prev = cur, cur = t;
    }
    return prev[m];
}

static const char *last_segment(const char *s, size_t n)
{
    const char *p = s + n;
    while (p > s && p[-1] != '.')
        p--;
    return p;
}

/* How far a candidate is; the right last segment ("port") counts as one. */
size_t cfg_score(const char *name, const char *cand, size_t clen)
{
    const char *tail = last_segment(cand, clen), *ntail = last_segment(name, strlen(name));
    size_t tlen = clen - (size_t)(tail - cand);

    if (strlen(ntail) == tlen && strncmp(ntail, tail, tlen) == 0)
        return 1;
    return distance(name, strlen(name), cand, clen);
}

/*
 * The nearest key (or section) to a misspelt name, when it is close enough
 * to be a typo. Returns its length and sets *best; 0 when nothing is close.
 */
static size_t suggest(const char *name, bool in_route, const char **best)
{
    size_t best_d = 1 + strlen(name) / 5 + 1, best_len = 0;

    for (size_t i = 0; i < cfg_key_count(); i++) {
        if (in_route ? !cfg_is_route_key(cfg_key_at(i)) : !cfg_is_top_key(cfg_key_at(i)))
            continue;
        const char *c = cfg_key_at(i)->name + (in_route ? strlen(ROUTE_PREFIX) : 0);
        const char *dot = strchr(c, '.');
        for (int pass = 0; pass < 2; pass++) {
            size_t clen = pass == 0 ? strlen(c) : dot ? (size_t)(dot - c) : 0;
            size_t d = clen ? cfg_score(name, c, clen) : SIZE_MAX;
            if (d < best_d)
                best_d = d, *best = c, best_len = clen;
        }
    }
    return best_len;
}

/* `elem` is the route element ("routes[0]") when the key sits in one. */
int cfg_unknown_key(const struct ctx *x, const char *path, const char *elem)
{
    const char *name = elem ? path + strlen(elem) + 1 : path, *best = NULL;
    /* "routes[].path" names no top-level key, however close its last part */
    size_t len = strchr(name, '[') ? 0 : suggest(name, elem != NULL, &best);

    if (!len)
        return cfg_report(x, path, true, "unknown key");
    return cfg_report(x, path, true, "unknown key (did you mean %s%s%.*s?)", elem ? elem : "",
                  elem ? "." : "", (int)len, best);
}

/* --- walking a JSON tree ---------------------------------------------- */

static const struct cfg_key *find_key(const char *path)
{
    for (size_t i = 0; i < cfg_key_count(); i++)
        if (cfg_is_top_key(cfg_key_at(i)) && strcmp(cfg_key_at(i)->name, path) == 0)
            return cfg_key_at(i);
    return NULL;
}

/* "server" is a section: a dotted prefix of top-level keys. */
static bool is_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < cfg_key_count(); i++) {
        const struct cfg_key *k = cfg_key_at(i);
        if (cfg_is_top_key(k) && strncmp(k->name, path, n) == 0 && k->name[n] == '.')
            return true;
    }
    return false;
}

static int walk(struct ctx *x, json_t *obj, const char *prefix, struct cfg *c);

static int walk_member(struct ctx *x, const char *path, const char *name, json_t *v, struct cfg *c)
{
    /* A literal "server.port" key must not pass for the nested one. */
    bool plain = *name && !strpbrk(name, ".[]");
    const struct cfg_key *k = plain ? find_key(path) : NULL;

    if (k)
        return cfg_set_key(x, k, path, v, c);
    if (plain && is_section(path))
        return json_is_object(v) ? walk(x, v, path, c) : cfg_bad_type(x, path, v, "an object");
    if (*name && find_key(path)) {
        const char *dot = strchr(name, '.');
        return cfg_report(x, path, true, "unknown key (write it nested, as \"%.*s\": {\"%s\": ...})",
                      (int)(dot - name), name, dot + 1);
    }
    return cfg_unknown_key(x, path, NULL);
}

static int walk(struct ctx *x, json_t *obj, const char *prefix, struct cfg *c)
{
    const char *name;
    json_t *v;

    json_object_foreach(obj, name, v) {
        char *path = cfg_join(prefix, name);
        int rc = path ? walk_member(x, path, name, v, c) : cfg_no_memory(x);
        free(path);
        if (rc)
            return rc;
    }
    return 0;
}

/* --- values given as text: defaults, environment, command line --------- */

json_t *cfg_text_value(const struct ctx *x, const struct cfg_key *k, const char *text, int *rc)
{
    json_error_t e;
    char *end;
    json_t *v;

    *rc = 0;
    if (k->type == CFG_T_BOOL && (strcmp(text, "true") == 0 || strcmp(text, "false") == 0))
        return json_boolean(text[0] == 't');
    if (k->type == CFG_T_ROUTES || k->type == CFG_T_UPSTREAMS || k->type == CFG_T_LISTENERS) {
        if (!(v = json_loads(text, JSON_REJECT_DUPLICATES, &e)))
            *rc = cfg_report(x, k->name, false, "invalid JSON at column %d: %s", e.column, e.text);
        return v;
    }
    errno = 0;
    long long n = k->type == CFG_T_INT ? strtoll(text, &end, 10) : 0;
    /* Only a plain decimal integer is one: "3.0", " 3" and "+3" stay strings. */
    if (k->type == CFG_T_INT && (isdigit((unsigned char)*text) || *text == '-') && end != text && !*end &&
        !errno)
        v = json_integer(n);
    else
        v = json_string(text);
    if (!v)
        *rc = cfg_no_memory(x);
    return v;
}

static int set_text(struct ctx *x, const struct cfg_key *k, const char *text, struct cfg *c)
{
    int rc;
    json_t *v = cfg_text_value(x, k, text, &rc);

    if (rc)
        return rc;
    x->raw = k->type == CFG_T_ROUTES || k->type == CFG_T_UPSTREAMS || k->type == CFG_T_LISTENERS ? NULL : text;
    rc = cfg_set_key(x, k, k->name, v, c);
    x->raw = NULL;
    json_decref(v);
    return rc;
}

static int set_defaults(struct ctx *x, struct cfg *c)
{
    int rc = 0;
    x->label = "built-in default";
    for (size_t i = 0; i < cfg_key_count() && !rc; i++)
        if (cfg_is_top_key(cfg_key_at(i)) && cfg_key_at(i)->def)
            rc = set_text(x, cfg_key_at(i), cfg_key_at(i)->def, c);
    x->label = NULL;
    return rc;
}

/* An empty variable counts as unset, as shells and compose files leave them. */
static int apply_environ(struct ctx *x, struct cfg *c)
{
    char label[64];
    int rc = 0;

    for (size_t i = 0; i < cfg_key_count() && !rc; i++) {
        const struct cfg_key *k = cfg_key_at(i);
        const char *s = k->env ? getenv(k->env) : NULL;
        if (!s || !*s)
            continue;
        snprintf(label, sizeof label, "environment %s", k->env);
        x->label = label;
        rc = set_text(x, k, s, c);
    }
    x->label = NULL;
    return rc;
}

static int section_given(const struct ctx *x, const char *name)
{
    char list[256] = "";
    size_t used = 0, n = strlen(name);

    for (size_t i = 0; i < cfg_key_count() && used < sizeof list; i++) {
        const struct cfg_key *k = cfg_key_at(i);
        if (cfg_is_top_key(k) && strncmp(k->name, name, n) == 0 && k->name[n] == '.')
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", k->name);
    }
    return cfg_report(x, name, false, "a section, not a key; set one of %s", list);
}

static int apply_override(struct ctx *x, const char *o, struct cfg *c)
{
    const char *eq = strchr(o, '=');

    if (!eq || eq == o)
        return cfg_report(x, "", false, "\"%s\" is not of the form key=value", o);
    char *name = strndup(o, (size_t)(eq - o));
    if (!name)
        return cfg_no_memory(x);
    const struct cfg_key *k = find_key(name);
    int rc = k ? set_text(x, k, eq + 1, c) : is_section(name) ? section_given(x, name)
                                                               : cfg_unknown_key(x, name, NULL);
    free(name);
    return rc;
}

static int apply_overrides(struct ctx *x, const char *const *ov, struct cfg *c)
{
    int rc = 0;
    x->label = "command line";
    for (; ov && *ov && !rc; ov++)
        rc = apply_override(x, *ov, c);
    x->label = NULL;
    return rc;
}

/* Keys that must agree with each other, once every source is in. */
static int check_redis(const struct ctx *x, const struct cfg *c)
{
    char a[32], b[32];
    if (c->redis.wait_replicas > 0 && c->redis.wait_timeout_ms >= c->redis.command_timeout_ms)
        return cfg_report(x, "redis.wait_timeout", false,
                      "%s is not shorter than redis.command_timeout (%s): a WAIT that long would count as an "
                      "outage (shorten it, or lengthen redis.command_timeout)",
                      cfg_fmt_duration(c->redis.wait_timeout_ms, a, sizeof a),
                      cfg_fmt_duration(c->redis.command_timeout_ms, b, sizeof b));
    return 0;
}

/* --- loading ---------------------------------------------------------- */

static int available_cpus(void)
{
    cpu_set_t set;
    long n;

    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 && n < INT32_MAX ? (int)n : 1;
}

/* Capped, so that cfg_to_json's output still validates on a big machine. */
static void resolve_workers(struct cfg *c)
{
    if (c->workers == 0) {
        int n = available_cpus();
        c->workers = n < CFG_MAX_WORKERS ? n : CFG_MAX_WORKERS;
    }
}

/* The name becomes part of a file name, so it is kept to a safe alphabet. */
static int resolve_env(const struct ctx *x, const struct cfg_sources *src, char **out)
{
    const char *e = src->env, *label = "environment name";

    if (!e || !*e)
        e = getenv("COHORT_ENV"), label = "environment COHORT_ENV";
    if (!e || !*e)
        e = "development";
    if (strspn(e, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != strlen(e))
        return cfg_fail(x, -EINVAL, "%s: \"%s\" is not an environment name (use letters, digits, \"-\" and \"_\")",
                    label, e);
    *out = strdup(e);
    return *out ? 0 : cfg_no_memory(x);
}

int cfg_load(const struct cfg_sources *src, struct cfg *out, char *err, size_t errlen)
{
    static const struct cfg_sources none;
    struct ctx x = {.err = err, .errlen = errlen, .resolve = true};
    struct cfg c = {0};
    json_t *tree = NULL;
    int rc;

    if (!src)
        src = &none;
    if (err && errlen)
        err[0] = '\0';
    memset(out, 0, sizeof *out);
    rc = resolve_env(&x, src, &c.env);
    if (!rc)
        rc = set_defaults(&x, &c);
    if (!rc)
        rc = cfg_read_sources(&x, src, c.env, &tree);
    if (!rc)
        rc = walk(&x, tree, "", &c);
    if (!rc && src->use_environ)
        rc = apply_environ(&x, &c);
    if (!rc)
        rc = apply_overrides(&x, src->overrides, &c);
    if (!rc)
        rc = cfg_check_routes(&x, &c, false);
    if (!rc)
        rc = check_redis(&x, &c);
    if (!rc && src->check_fs)
        rc = cfg_check_routes(&x, &c, true);
    json_decref(tree);
    cfg_ctx_free(&x);
    if (rc) {
        cfg_free(&c);
        return rc;
    }
    resolve_workers(&c);
    *out = c;
    return 0;
}

/* cfg_to_json adds "env", which is not a key a file may set. */
static int take_env(const struct ctx *x, json_t *tree, struct cfg *c)
{
    json_t *v = json_object_get(tree, "env");

    if (!v)
        return 0;
    if (!json_is_string(v))
        return cfg_bad_type(x, "env", v, "a string");
    if (!(c->env = strdup(json_string_value(v))))
        return cfg_no_memory(x);
    json_object_del(tree, "env");
    return 0;
}

int cfg_from_json(const char *text, struct cfg *out, char *err, size_t errlen)
{
    static const char name[] = "<effective>";
    struct ctx x = {.err = err, .errlen = errlen};
    struct cfg c = {0};
    json_t *tree = NULL;
    int rc;

    if (err && errlen)
        err[0] = '\0';
    memset(out, 0, sizeof *out);
    rc = text ? set_defaults(&x, &c) : cfg_fail(&x, -EINVAL, "%s: no text", name);
    if (!rc)
        rc = cfg_parse_text(&x, name, text, strlen(text), &tree);
    if (!rc)
        rc = take_env(&x, tree, &c);
    if (!rc)
        rc = walk(&x, tree, "", &c);
    if (!rc)
        rc = cfg_check_routes(&x, &c, false);
    if (!rc)
        rc = check_redis(&x, &c);
    json_decref(tree);
    cfg_ctx_free(&x);
    if (rc) {
        cfg_free(&c);
        return rc;
    }
    resolve_workers(&c);
    *out = c;
    return 0;
}

void cfg_free(struct cfg *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < cfg_key_count(); i++)
        if (cfg_is_top_key(cfg_key_at(i)) && cfg_key_at(i)->store == CFG_S_STR)
            free(*cfg_str_field(cfg_key_at(i), c));
    cfg_free_routes(c->routes, c->nroutes);
    cfg_free_upstreams(c->upstreams, c->nupstreams);
    cfg_free_listeners(c->listeners, c->nlisteners);
    free(c->env);
    memset(c, 0, sizeof *c);
}

/* --- comparing -------------------------------------------------------- */

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool key_equal(const struct cfg_key *k, const void *a, const void *b);

static bool routes_equal(const struct cfg *a, const struct cfg *b)
{
    if (a->nroutes != b->nroutes)
        return false;
    for (size_t r = 0; r < a->nroutes; r++)
        for (size_t i = 0; i < cfg_key_count(); i++)
            if (cfg_is_route_key(cfg_key_at(i)) && !key_equal(cfg_key_at(i), &a->routes[r], &b->routes[r]))
                return false;
    return true;
}

static bool elem_equal(const char *prefix, const void *a, const void *b)
{
    for (size_t i = 0; i < cfg_key_count(); i++)
        if (cfg_in_elem(cfg_key_at(i), prefix) && !key_equal(cfg_key_at(i), a, b))
            return false;
    return true;
}

static bool servers_equal(const struct cfg_upstream *a, const struct cfg_upstream *b)
{
    if (a->nservers != b->nservers)
        return false;
    for (size_t i = 0; i < a->nservers; i++)
        if (!elem_equal(SERVER_PREFIX, &a->servers[i], &b->servers[i]))
            return false;
    return true;
}

static bool listeners_equal(const struct cfg *a, const struct cfg *b)
{
    if (a->nlisteners != b->nlisteners)
        return false;
    for (size_t i = 0; i < a->nlisteners; i++)
        if (!elem_equal(LISTEN_PREFIX, &a->listeners[i], &b->listeners[i]))
            return false;
    return true;
}

static bool upstreams_equal(const struct cfg *a, const struct cfg *b)
{
    if (a->nupstreams != b->nupstreams)
        return false;
    for (size_t i = 0; i < a->nupstreams; i++)
        if (strcmp(a->upstreams[i].name, b->upstreams[i].name) != 0 ||
            !elem_equal(GROUP_PREFIX, &a->upstreams[i], &b->upstreams[i]))
            return false;
    return true;
}

static bool key_equal(const struct cfg_key *k, const void *a, const void *b)
{
    switch (k->store) {
    case CFG_S_UPSTREAMS:
        return upstreams_equal(a, b);
    case CFG_S_SERVERS:
        return servers_equal(a, b);
    case CFG_S_LISTENERS:
        return listeners_equal(a, b);
    case CFG_S_INT:
    case CFG_S_I64:
        return cfg_load_num(k, a) == cfg_load_num(k, b);
    case CFG_S_STR:
        return str_eq(*cfg_str_field(k, a), *cfg_str_field(k, b));
    case CFG_S_ROUTES:
        return routes_equal(a, b);
    }
    return false;
}

bool cfg_equal(const struct cfg *a, const struct cfg *b)
{
    if (!str_eq(a->env, b->env))
        return false;
    for (size_t i = 0; i < cfg_key_count(); i++)
        if (cfg_is_top_key(cfg_key_at(i)) && !key_equal(cfg_key_at(i), a, b))
            return false;
    return true;
}

int cfg_check_reload(const struct cfg *cur, const struct cfg *next, char *err, size_t errlen)
{
    struct ctx x = {.err = err, .errlen = errlen};
    json_t *va = NULL, *vb = NULL;
    char sa[SHOWN], sb[SHOWN];

    for (size_t i = 0; i < cfg_key_count(); i++) {
        const struct cfg_key *k = cfg_key_at(i);
        if (!cfg_is_top_key(k) || (k->flags & CFG_RELOAD) || key_equal(k, cur, next))
            continue;
        if (cfg_key_value(k, cur, &va) || cfg_key_value(k, next, &vb)) {
            json_decref(va);
            return cfg_no_memory(&x);
        }
        cfg_report(&x, k->name, false, "changed from %s to %s, which needs a restart",
               va ? cfg_show(va, sa) : "(unset)", vb ? cfg_show(vb, sb) : "(unset)");
        json_decref(va);
        json_decref(vb);
        return -EINVAL;
    }
    return 0;
}

/* Copies one scalar key's value from `from` into `to`; 0, or -ENOMEM. */
static int copy_key(const struct cfg_key *k, const void *from, void *to);

/* The running listeners into the next config (kept on reload). */
static int copy_listeners(const struct cfg *from, struct cfg *to)
{
    size_t n = from->nlisteners;
    struct cfg_listener *l = n ? calloc(n, sizeof(*l)) : NULL;
    int rc = n && !l ? -ENOMEM : 0;
    for (size_t i = 0; i < n && !rc; i++)
        for (size_t j = 0; j < cfg_key_count() && !rc; j++)
            if (cfg_in_elem(cfg_key_at(j), LISTEN_PREFIX))
                rc = copy_key(cfg_key_at(j), &from->listeners[i], &l[i]);
    if (rc) {
        cfg_free_listeners(l, n);
        return rc;
    }
    cfg_free_listeners(to->listeners, to->nlisteners);
    to->listeners = l;
    to->nlisteners = n;
    return 0;
}

static int copy_key(const struct cfg_key *k, const void *from, void *to)
{
    if (k->store == CFG_S_LISTENERS)
        return copy_listeners(from, to);
    if (k->store == CFG_S_INT || k->store == CFG_S_I64) {
        cfg_store_num(k, to, cfg_load_num(k, from));
        return 0;
    }
    if (k->store != CFG_S_STR)
        return 0;
    char **dst = cfg_str_field(k, to), *src = *cfg_str_field(k, from);
    char *dup = src ? strdup(src) : NULL;
    if (src && !dup)
        return -ENOMEM;
    free(*dst);
    *dst = dup;
    return 0;
}

int cfg_keep_fixed(const struct cfg *cur, struct cfg *next, char *msg, size_t len)
{
    char sa[SHOWN], sb[SHOWN];
    size_t used = 0;
    int changed = 0;
    if (len)
        msg[0] = '\0';
    for (size_t i = 0; i < cfg_key_count(); i++) {
        const struct cfg_key *k = cfg_key_at(i);
        json_t *va = NULL, *vb = NULL;
        if (!cfg_is_top_key(k) || (k->flags & CFG_RELOAD) || key_equal(k, cur, next))
            continue;
        if (cfg_key_value(k, cur, &va) == 0 && cfg_key_value(k, next, &vb) == 0 && used < len) {
            int n = snprintf(msg + used, len - used, "%s%s: left as it was (%s; the new %s needs a restart)",
                             changed ? "; " : "", k->name, va ? cfg_show(va, sa) : "(unset)",
                             vb ? cfg_show(vb, sb) : "(unset)");
            used += n > 0 ? (size_t)n : 0;
        }
        json_decref(va);
        json_decref(vb);
        if (copy_key(k, cur, next) < 0)
            return -ENOMEM;
        changed++;
    }
    return changed;
}
