/*
 * Values of one key: the checks of string keys (hosts, addresses, paths,
 * statuses), durations and sizes parsed and formatted, relative paths made
 * absolute, and setting a key in a struct from a JSON value.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "core/config_impl.h"
#include "core/resolve.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- string checks ---------------------------------------------------- */

const char *cfg_check_user(const char *in, const char **out)
{
    *out = in;
    return getpwnam(in) ? NULL : "is not a user on this system";
}

const char *cfg_check_group(const char *in, const char **out)
{
    *out = in;
    return getgrnam(in) ? NULL : "is not a group on this system";
}

/* The form only; redis/redis.c parses it. An empty URL means no Redis. */
const char *cfg_check_redis_url(const char *in, const char **out)
{
    *out = in;
    if (!*in)
        return NULL;
    if (strncmp(in, "redis://", 8) != 0)
        return "is not a redis:// URL (use e.g. \"redis://127.0.0.1:6379\")";
    const char *host = strrchr(in + 8, '@');
    host = host ? host + 1 : in + 8;
    return *host && *host != '/' && *host != ':' ? NULL : "names no host";
}

const char *cfg_check_token(const char *in, const char **out)
{
    *out = in;
    if (!*in)
        return "must not be empty";
    for (const char *p = in; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return "must be printable, without spaces";
    return NULL;
}

/* An upstream group's name: it appears in paths and in IPC messages. */
const char *cfg_check_group_name(const char *in, const char **out)
{
    size_t n = strlen(in);
    *out = in;
    if (n == 0 || n > 47)
        return "must be 1 to 47 characters long";
    if (strspn(in, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != n)
        return "may hold only letters, digits, \"-\" and \"_\"";
    return NULL;
}

/*
 * "host:port" or "[ip6]:port". The host is resolved here, once per load
 * (start and reload; core/resolve.h: never by root itself), and the address
 * is stored as the numeric one, so workers (which load the effective config
 * again) never resolve.
 */
const char *cfg_check_address(const char *in, const char **out)
{
    static __thread char norm[80];
    char host[256];
    const char *colon = strrchr(in, ':');
    size_t hlen = colon ? (size_t)(colon - in) : 0;
    if (!colon || hlen == 0 || hlen >= sizeof host || !colon[1])
        return "is not host:port (use e.g. \"10.0.0.5:3000\" or \"[::1]:3000\")";
    memcpy(host, in, hlen);
    host[hlen] = '\0';
    if (host[0] == '[') {
        if (hlen < 3 || host[hlen - 1] != ']')
            return "is not host:port (an IPv6 address is written in brackets: \"[::1]:3000\")";
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    } else if (strchr(host, ':')) {
        return "is not host:port (an IPv6 address is written in brackets: \"[::1]:3000\")";
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (*end || errno || port < 1 || port > 65535 || !isdigit((unsigned char)colon[1]))
        return "has a port that is not 1..65535";
    char ip[INET6_ADDRSTRLEN];
    if (resolve_host(host, ip, sizeof ip) < 0) /* as root: in a child running as nobody */
        return "names a host that does not resolve";
    snprintf(norm, sizeof norm, strchr(ip, ':') ? "[%s]:%ld" : "%s:%ld", ip, port);
    *out = norm;
    return NULL;
}

/* "2xx", "200", "200-399", or a comma list of those. */
const char *cfg_check_status(const char *in, const char **out)
{
    const char *p = in;
    *out = in;
    for (;;) {
        int lo = 0, hi;
        if (p[0] >= '1' && p[0] <= '5' && p[1] == 'x' && p[2] == 'x') {
            p += 3;
        } else {
            for (int i = 0; i < 3; i++, p++)
                if (!isdigit((unsigned char)*p))
                    return "is not a list of statuses (use e.g. \"2xx\", \"200,204\" or \"200-399\")";
            lo = atoi(p - 3);
            if (*p == '-') {
                hi = atoi(++p);
                for (int i = 0; i < 3; i++, p++)
                    if (!isdigit((unsigned char)*p))
                        return "is not a list of statuses (use e.g. \"2xx\", \"200,204\" or \"200-399\")";
                if (hi < lo)
                    return "has a range that ends before it starts";
            }
            if (lo < 100)
                return "has a status below 100";
        }
        if (!*p)
            return NULL;
        if (*p++ != ',')
            return "is not a list of statuses (use e.g. \"2xx\", \"200,204\" or \"200-399\")";
    }
}

const char *cfg_check_health_path(const char *in, const char **out)
{
    *out = in;
    if (in[0] != '/')
        return "must start with \"/\"";
    for (const char *p = in; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '#')
            return "must not hold spaces, control characters or \"#\"";
    return NULL;
}

/* A header or cookie name: an HTTP token. */
const char *cfg_check_field_name(const char *in, const char **out)
{
    *out = in;
    if (!*in)
        return "must not be empty";
    for (const char *p = in; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return "is not a header or cookie name";
    return NULL;
}

const char *cfg_check_file_path(const char *in, const char **out)
{
    *out = in;
    if (in[0] == '\0')
        return "must not be empty";
    return strlen(in) >= 108 ? "is too long for a Unix socket path (107 bytes at most)" : NULL;
}

const char *cfg_check_host(const char *in, const char **out)
{
    unsigned char addr[16];

    /* The listener binds literals only, so the one name we accept is
     * resolved here rather than through the resolver at bind time. */
    if (strcmp(in, "localhost") == 0) {
        *out = "127.0.0.1";
        return NULL;
    }
    if (inet_pton(AF_INET, in, addr) == 1 || inet_pton(AF_INET6, in, addr) == 1)
        return NULL;
    return "is not an IPv4 or IPv6 address (use e.g. \"0.0.0.0\", \"::\" or \"localhost\")";
}

/*
 * Mirrors the pattern rules of http/router.c (core may not include it), so
 * a config that loads never fails later in router_add: "*" only after the
 * last slash, ":name" fills a whole segment, at most 4 of them, and no ":"
 * in a prefix route.
 */
const char *cfg_check_path(const char *p, const char **out)
{
    size_t n = strlen(p), params = 0;
    bool prefix = n >= 2 && p[n - 1] == '*';

    (void)out;
    if (p[0] != '/')
        return "must start with \"/\"";
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f || p[i] == '?' || p[i] == '#')
            return "must not hold spaces, control characters, \"?\" or \"#\"";
    if (memchr(p, '*', n - prefix) || (prefix && p[n - 2] != '/'))
        return "may hold \"*\" only at the end, as \"/*\"";
    for (size_t i = 1; i < n; i++) {
        if (p[i] != ':')
            continue;
        if (prefix)
            return "cannot mix a \"/*\" prefix with :name segments";
        if (p[i - 1] != '/' || i + 1 == n || p[i + 1] == '/')
            return "has a \":\" that is not a whole :name segment";
        if (++params > 4)
            return "has more than 4 :name segments";
    }
    return NULL;
}

/* "off", "stderr" or a path: anything printable and not empty. */
const char *cfg_check_log_target(const char *in, const char **out)
{
    (void)out;
    if (!*in)
        return "must not be empty (use \"off\", \"stderr\" or a file path)";
    for (const char *p = in; *p; p++)
        if ((unsigned char)*p < ' ' || *p == 0x7f)
            return "must not hold control characters";
    return NULL;
}

const char *cfg_check_root(const char *in, const char **out)
{
    (void)out;
    return *in ? NULL : "must not be empty";
}

/* --- formatting durations and sizes ----------------------------------- */

struct unit {
    const char *name;
    int64_t mult;
};

/* Parsing accepts every entry; formatting uses the first that divides. */
static const struct unit duration_units[] = {
    {"h", HOUR}, {"m", 60 * SEC}, {"s", SEC}, {"ms", MS}, {"", SEC}, {NULL, 0}};
static const struct unit size_units[] = {{"G", GIB}, {"M", MIB}, {"K", KIB}, {"B", 1}, {"g", GIB},
                                         {"m", MIB}, {"k", KIB}, {"", 1},   {NULL, 0}};

const char *cfg_fmt_duration(int64_t ms, char *buf, size_t len)
{
    const struct unit *u = duration_units;
    while (ms != 0 && ms % u->mult != 0)
        u++;
    snprintf(buf, len, "%lld%s", (long long)(ms == 0 ? 0 : ms / u->mult), ms == 0 ? "s" : u->name);
    return buf;
}

/* Whole kibi-, mebi- or gibibytes get a suffix; anything else is bytes. */
const char *cfg_fmt_size(int64_t n, char *buf, size_t len)
{
    const struct unit *u = size_units;
    while (u->mult > 1 && (n == 0 || n % u->mult != 0))
        u++;
    snprintf(buf, len, "%lld%s", (long long)(n / u->mult), u->mult > 1 ? u->name : "");
    return buf;
}

const char *cfg_fmt_num(const struct cfg_key *k, int64_t n, char *buf, size_t len)
{
    if (k->type == CFG_T_DURATION)
        return cfg_fmt_duration(n, buf, len);
    if (k->type == CFG_T_SIZE)
        return cfg_fmt_size(n, buf, len);
    snprintf(buf, len, "%lld", (long long)n);
    return buf;
}

static int out_of_range(const struct ctx *x, const struct cfg_key *k, const char *path, const json_t *v)
{
    char buf[SHOWN], lo[32], hi[32];
    return cfg_report(x, path, false, "%s is out of range %s..%s", x->raw ? x->raw : cfg_show(v, buf),
                  cfg_fmt_num(k, k->min, lo, sizeof lo), cfg_fmt_num(k, k->max, hi, sizeof hi));
}

/* --- parsing durations and sizes -------------------------------------- */

/*
 * Reads "[-]digits[.digits]" into an integer part and a fraction num/den.
 * Fraction digits past the ninth are read but do not count: they are far
 * below a millisecond.
 */
static int parse_decimal(const char **s, bool fraction, int64_t *ip, int64_t *num, int64_t *den)
{
    const char *p = *s;
    *ip = 0, *num = 0, *den = 1;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    for (; isdigit((unsigned char)*p); p++) {
        if (*ip > (INT64_MAX - 9) / 10)
            return -ERANGE;
        *ip = *ip * 10 + (*p - '0');
    }
    if (fraction && *p == '.') {
        if (!isdigit((unsigned char)*++p))
            return -EINVAL;
        for (; isdigit((unsigned char)*p); p++) {
            if (*den < 1000000000)
                *num = *num * 10 + (*p - '0'), *den *= 10;
        }
    }
    *s = p;
    return 0;
}

static int parse_amount(const char *s, const struct unit *units, bool fraction, int64_t *out)
{
    int64_t ip, num, den;
    bool neg;
    int rc;

    if (!s)
        return -EINVAL;
    neg = *s == '-';
    s += neg;
    if ((rc = parse_decimal(&s, fraction, &ip, &num, &den)) != 0)
        return rc;
    while (units->name && strcmp(units->name, s) != 0)
        units++;
    if (!units->name)
        return -EINVAL;
    if (ip > INT64_MAX / units->mult - 1)
        return -ERANGE;
    /* num < 1e9 and mult <= 1 hour in ms, so the product fits. */
    int64_t v = ip * units->mult + (num * units->mult + den / 2) / den;
    *out = neg ? -v : v;
    return 0;
}

int cfg_parse_duration(const char *s, int64_t *ms)
{
    return parse_amount(s, duration_units, true, ms);
}

int cfg_parse_size(const char *s, int64_t *bytes)
{
    return parse_amount(s, size_units, false, bytes);
}

/* --- setting one key from a JSON value -------------------------------- */

#define DURATION_HINT "a duration (use seconds or \"250ms\", \"10s\", \"2m\", \"1h\")"
#define SIZE_HINT "a size (use bytes or \"100B\", \"16K\", \"1M\", \"1G\")"

static int store_str(const struct ctx *x, const struct cfg_key *k, void *base, const char *s)
{
    char **f = cfg_str_field(k, base), *copy = strdup(s);
    if (!copy)
        return cfg_no_memory(x);
    free(*f);
    *f = copy;
    return 0;
}

static int set_int(struct ctx *x, const struct cfg_key *k, const char *path, json_t *v, void *base)
{
    if (!json_is_integer(v))
        return cfg_bad_type(x, path, v, "an integer");
    json_int_t n = json_integer_value(v);
    if (n < k->min || n > k->max)
        return out_of_range(x, k, path, v);
    cfg_store_num(k, base, n);
    return 0;
}

/* A JSON number is seconds (durations) or bytes (sizes); a string has a unit. */
static int amount_of(struct ctx *x, const struct cfg_key *k, const char *path, json_t *v, int64_t *n)
{
    bool dur = k->type == CFG_T_DURATION;
    int rc;

    if (json_is_string(v)) {
        rc = dur ? cfg_parse_duration(json_string_value(v), n) : cfg_parse_size(json_string_value(v), n);
        if (rc == -ERANGE)
            return out_of_range(x, k, path, v);
        return rc ? cfg_bad_type(x, path, v, dur ? DURATION_HINT : SIZE_HINT) : 0;
    }
    if (!dur) {
        if (!json_is_integer(v))
            return cfg_bad_type(x, path, v, SIZE_HINT);
        *n = json_integer_value(v);
        return 0;
    }
    if (!json_is_number(v))
        return cfg_bad_type(x, path, v, DURATION_HINT);
    double ms = json_number_value(v) * 1000.0;
    if (!(ms >= -9e15 && ms <= 9e15))
        return out_of_range(x, k, path, v);
    *n = llround(ms);
    return 0;
}

static int set_amount(struct ctx *x, const struct cfg_key *k, const char *path, json_t *v, void *base)
{
    int64_t n;
    int rc = amount_of(x, k, path, v, &n);
    if (rc)
        return rc;
    if (n < k->min || n > k->max)
        return out_of_range(x, k, path, v);
    cfg_store_num(k, base, n);
    return 0;
}

static int set_enum(struct ctx *x, const struct cfg_key *k, const char *path, json_t *v, void *base)
{
    const char *s = json_string_value(v); /* NULL unless a string */
    char list[128] = "", buf[SHOWN];
    size_t used = 0;

    for (size_t i = 0; s && k->values[i]; i++) {
        if (strcmp(s, k->values[i]) != 0)
            continue;
        if (k->store == CFG_S_STR)
            return store_str(x, k, base, s);
        cfg_store_num(k, base, (int64_t)i);
        return 0;
    }
    for (size_t i = 0; k->values[i] && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", k->values[i]);
    return cfg_report(x, path, false, "%s is not one of %s", cfg_show(v, buf), list);
}

/* --- paths ------------------------------------------------------------ */

/* The words of the log keys that name no file. */
static bool names_no_file(const struct cfg_key *k, const char *s)
{
    if (k->check != cfg_check_log_target)
        return false;
    return strcmp(s, "stderr") == 0 ||
           (k->off == offsetof(struct cfg, log.access) && (strcmp(s, "off") == 0 || strcmp(s, "stdout") == 0));
}

/*
 * The folder relative paths of this source are resolved against: the
 * folder of the file the value came from (symlinks resolved), or the
 * working directory for defaults, the environment and the command line.
 */
static char *base_dir(const struct ctx *x, const char *path)
{
    const char *file = NULL;
    if (x->label || !x->nfiles)
        return getcwd(NULL, 0);
    cfg_find_pos(x, path, &file);
    char *copy = strdup(file), *slash = copy ? strrchr(copy, '/') : NULL;
    if (!copy)
        return NULL;
    if (slash)
        slash[slash == copy] = '\0'; /* "/x.json" keeps its "/" */
    char *dir = realpath(slash ? copy : ".", NULL);
    free(copy);
    return dir;
}

/*
 * base + "/" + rel. Leading "./" and "../" segments of rel are folded into
 * base, which has no symlinks, so "../public" from /srv/app/config is
 * /srv/app/public; later segments are kept as written.
 */
static char *join_path(const char *base, const char *rel)
{
    size_t n = strlen(base);
    char *out;
    for (;;) {
        if (rel[0] == '.' && (rel[1] == '/' || !rel[1])) {
            rel += 1;
        } else if (rel[0] == '.' && rel[1] == '.' && (rel[2] == '/' || !rel[2])) {
            rel += 2;
            while (n > 1 && base[n - 1] != '/')
                n--;
            n -= n > 1; /* the slash before the dropped segment, unless it is the root */
        } else {
            break;
        }
        while (*rel == '/')
            rel++;
    }
    bool root = n == 1 && base[0] == '/';
    if (asprintf(&out, "%.*s%s%s", (int)n, base, *rel && !root ? "/" : "", rel) < 0)
        return NULL;
    return out;
}

/* *out: the absolute path for a relative one, else NULL (keep it as given). */
static int resolve_path(const struct ctx *x, const struct cfg_key *k, const char *path, const char *s, char **out)
{
    const char *scheme = "";
    *out = NULL;
    if (k->flags & CFG_UNIX_PATH) {
        if (strncmp(s, "unix:", 5) != 0)
            return 0; /* not a path */
        scheme = "unix:";
        s += 5;
    }
    if (!x->resolve || !*s || s[0] == '/' || names_no_file(k, s))
        return 0;
    char *base = base_dir(x, path);
    if (!base)
        return cfg_fail(x, -EINVAL, "%s: cannot find the folder %s is relative to: %s", path, s, strerror(errno));
    char *abs = join_path(base, s);
    free(base);
    if (abs && *scheme && asprintf(out, "%s%s", scheme, abs) < 0)
        *out = NULL;
    else if (abs && !*scheme)
        *out = abs, abs = NULL;
    free(abs);
    return *out ? 0 : cfg_no_memory(x);
}

static int add_note(struct ctx *x, const char *path, const char *given)
{
    struct note *n = realloc(x->notes, (x->nnotes + 1) * sizeof *n);
    if (!n)
        return cfg_no_memory(x);
    x->notes = n;
    n = &x->notes[x->nnotes];
    *n = (struct note){strdup(path), x->label ? strdup(x->label) : NULL, strdup(given)};
    if (!n->path || !n->given || (x->label && !n->label)) {
        free(n->path), free(n->label), free(n->given);
        return cfg_no_memory(x);
    }
    x->nnotes++;
    return 0;
}

const struct note *cfg_find_note(const struct ctx *x, const char *path)
{
    for (size_t i = x->nnotes; i-- > 0;)
        if (strcmp(x->notes[i].path, path) == 0)
            return &x->notes[i];
    return NULL;
}

void cfg_free_notes(struct ctx *x)
{
    for (size_t i = 0; i < x->nnotes; i++)
        free(x->notes[i].path), free(x->notes[i].label), free(x->notes[i].given);
    free(x->notes);
    x->notes = NULL;
    x->nnotes = 0;
}

static int set_string(struct ctx *x, const struct cfg_key *k, const char *path, json_t *v, void *base)
{
    char buf[SHOWN], *abs = NULL;

    if (!json_is_string(v))
        return cfg_bad_type(x, path, v, "a string");
    const char *given = json_string_value(v);
    int rc = k->flags & (CFG_PATH | CFG_UNIX_PATH) ? resolve_path(x, k, path, given, &abs) : 0;
    if (rc)
        return rc;
    const char *s = abs ? abs : given, *norm = s;
    const char *why = k->check ? k->check(s, &norm) : NULL;
    if (why && abs)
        rc = cfg_report(x, path, false, "%s (%s) %s", cfg_show(v, buf), abs, why);
    else if (why)
        rc = cfg_report(x, path, false, "%s %s", cfg_show(v, buf), why);
    else if (!(rc = store_str(x, k, base, norm)) && (k->flags & (CFG_PATH | CFG_UNIX_PATH)))
        rc = add_note(x, path, given);
    free(abs);
    return rc;
}

static int set_bool(struct ctx *x, const struct cfg_key *k, const char *path, json_t *v, void *base)
{
    if (!json_is_boolean(v))
        return cfg_bad_type(x, path, v, "true or false");
    cfg_store_num(k, base, json_is_true(v));
    return 0;
}

static int set_addrs(struct ctx *x, const struct cfg_key *k, const char *path, json_t *v, void *base);

int cfg_set_key(struct ctx *x, const struct cfg_key *k, const char *path, json_t *v, void *base)
{
    switch (k->type) {
    case CFG_T_BOOL:
        return set_bool(x, k, path, v, base);
    case CFG_T_UPSTREAMS:
        return cfg_set_upstreams(x, path, v, base);
    case CFG_T_SERVERS:
        return cfg_set_servers(x, path, v, base);
    case CFG_T_INT:
        return set_int(x, k, path, v, base);
    case CFG_T_DURATION:
    case CFG_T_SIZE:
        return set_amount(x, k, path, v, base);
    case CFG_T_ENUM:
        return set_enum(x, k, path, v, base);
    case CFG_T_STRING:
        return set_string(x, k, path, v, base);
    case CFG_T_ROUTES:
        return cfg_set_routes(x, path, v, base);
    case CFG_T_ADDRS:
        return set_addrs(x, k, path, v, base);
    case CFG_T_LISTENERS:
        return cfg_set_listeners(x, path, v, base);
    }
    return -EINVAL;
}

/* --- lists of addresses (redis.sentinels) ----------------------------- */

/*
 * The form of one "host:port" or "[ipv6]:port". Unlike upstream servers, a
 * host name is kept as it is: redis/redis.c resolves it at every connection,
 * so a Sentinel that moves to another address is still found.
 */
static const char *addr_form(const char *s, size_t n)
{
    const char *colon = n ? memrchr(s, ':', n) : NULL;
    size_t hlen = colon ? (size_t)(colon - s) : 0, plen = colon ? n - hlen - 1 : 0;
    if (!colon || hlen == 0 || plen == 0 || plen > 5)
        return "is not host:port (use e.g. \"10.0.0.5:26379\" or \"[::1]:26379\")";
    bool v6 = s[0] == '[';
    if (v6 ? hlen < 3 || s[hlen - 1] != ']' || memchr(s + 1, ']', hlen - 2) : memchr(s, ':', hlen) != NULL)
        return "is not host:port (an IPv6 address is written in brackets: \"[::1]:26379\")";
    for (size_t i = 0; i < hlen; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f || s[i] == ',' || s[i] == '/' || s[i] == '@')
            return "has a host that is not a name or an address";
    long port = 0;
    for (size_t i = 0; i < plen; i++) {
        if (!isdigit((unsigned char)colon[1 + i]))
            return "has a port that is not 1..65535";
        port = port * 10 + (colon[1 + i] - '0');
    }
    return port >= 1 && port <= 65535 ? NULL : "has a port that is not 1..65535";
}

/* Adds one element (trimmed) to the comma-joined list in buf. */
static int add_addr(const struct ctx *x, const char *path, size_t i, const char *s, size_t n, char **buf,
                    size_t *len)
{
    char p[64];
    while (n && isspace((unsigned char)*s))
        s++, n--;
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    const char *why = addr_form(s, n);
    if (why) {
        snprintf(p, sizeof p, "%s[%zu]", path, i);
        return cfg_report(x, p, false, "\"%.*s\" %s", (int)(n < SHOWN ? n : SHOWN), s, why);
    }
    char *b = realloc(*buf, *len + n + 2);
    if (!b)
        return cfg_no_memory(x);
    if (*len)
        b[(*len)++] = ',';
    memcpy(b + *len, s, n);
    *len += n;
    b[*len] = '\0';
    *buf = b;
    return 0;
}

/*
 * An array of "host:port" strings, or one string of them separated by
 * commas (the environment, the command line). Stored comma-joined, in
 * order; an empty list stores nothing.
 */
static int set_addrs(struct ctx *x, const struct cfg_key *k, const char *path, json_t *v, void *base)
{
    char *list = NULL, **f = cfg_str_field(k, base);
    size_t len = 0, n = 0;
    int rc = 0;
    if (json_is_string(v)) {
        const char *s = json_string_value(v), *end;
        for (; *s && !rc; s = *end ? end + 1 : end, n++) {
            end = strchr(s, ',');
            end = end ? end : s + strlen(s);
            rc = add_addr(x, path, n, s, (size_t)(end - s), &list, &len);
        }
    } else if (json_is_array(v)) {
        json_t *e;
        json_array_foreach(v, n, e) {
            if (!json_is_string(e)) {
                char p[64];
                snprintf(p, sizeof p, "%s[%zu]", path, n);
                rc = cfg_bad_type(x, p, e, "a \"host:port\" string");
            } else {
                rc = add_addr(x, path, n, json_string_value(e), strlen(json_string_value(e)), &list, &len);
            }
            if (rc)
                break;
        }
    } else {
        return cfg_bad_type(x, path, v, "an array of \"host:port\" strings");
    }
    if (rc) {
        free(list);
        return rc;
    }
    free(*f);
    *f = list;
    return 0;
}

/* The stored list as a JSON array. */
json_t *cfg_addrs_value(const char *s)
{
    json_t *a = json_array();
    while (a && s && *s) {
        const char *end = strchr(s, ',');
        end = end ? end : s + strlen(s);
        if (json_array_append_new(a, json_stringn(s, (size_t)(end - s)))) {
            json_decref(a);
            return NULL;
        }
        s = *end ? end + 1 : end;
    }
    return a;
}
