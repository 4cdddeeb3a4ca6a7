/*
 * Configuration: one table of every key (name, type, bounds, default,
 * reloadable), loaded from JSON files, the environment and the command line.
 *
 * Sources, later ones win:
 *   1. the built-in defaults of the key table;
 *   2. config/default.json merged with config/<env>.json (env from
 *      COHORT_ENV, default "development"; a missing file is not an error),
 *      or instead the one file given with -c;
 *   3. environment variables: PORT, HOST, WORKERS (and those later keys
 *      declare);
 *   4. command-line flags, given as "key=value" overrides by main.c.
 *
 * A relative path (keys of type "path" in cfg_describe) is made absolute as
 * it is loaded: against the folder of the file that set it, or against the
 * working directory for defaults, the environment and the command line. The
 * loaded struct cfg, and so cfg_to_json, holds absolute paths only.
 *
 * Every error names where the value came from and what is wrong:
 *   config/production.json:12:5: server.port: 70000 is out of range 1..65535
 *   environment PORT: server.port: "abc" is not an integer
 * An unknown key suggests the nearest known one. A loader error is returned
 * as -EINVAL with the message in the caller's buffer; main exits 78.
 *
 * Modules add keys and route handlers (core/config_module.h) before any
 * config is loaded; routes[].handler takes the registered names only.
 *
 * Ownership: cfg_load() fills a struct cfg that owns all its strings and its
 * routes; cfg_free() releases them. Nothing in it points into a file buffer.
 */
#ifndef COHORT_CONFIG_H
#define COHORT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CFG_EXIT_CODE 78 /* EX_CONFIG */
#define CFG_MAX_WORKERS 64
#define CFG_MAX_LISTENERS 16 /* entries of "listen" */
#define CFG_MAX_LISTENERS_TEXT "16"

enum cfg_schedule { CFG_SCHED_REUSEPORT, CFG_SCHED_SHARED, CFG_SCHED_ROUND_ROBIN, CFG_SCHED_LEAST_LOADED };

/* A route declared in the config file ("routes": [ ... ]). */
struct cfg_route {
    char *path;    /* "/health", "/api/products/:id", or a prefix ending in a star */
    char *handler; /* a registered handler's name (core/config_module.h) */
    char *root;    /* routes[].root (http/static_cfg.c): the folder served; NULL if unset */
    int64_t cache_ttl_ms; /* cache.ttl: response cache lifetime; 0 = not cached */
    char *upstream; /* routes[].upstream (proxy/proxy_cfg.c): a group's name; NULL if unset */
};

/* Load balancing (src/proxy/upstream.h): "algorithm" of an upstream group. */
enum cfg_lb { CFG_LB_ROUND_ROBIN, CFG_LB_LEAST_CONN, CFG_LB_RANDOM, CFG_LB_P2C, CFG_LB_HASH };
/* What the hash algorithm hashes: "hash.on". */
enum cfg_hash_on { CFG_HASH_CLIENT, CFG_HASH_HEADER, CFG_HASH_COOKIE };
/* "app": the built-in application beside the config's routes. */
enum cfg_app { CFG_APP_SHOP, CFG_APP_NONE };

/* One server of an upstream group ("servers": [ ... ]). */
struct cfg_upstream_server {
    char *address; /* "ip:port" or "[ip6]:port": a host name is resolved when the config loads */
    int weight;
    int max_conns; /* per worker; 0 = no limit */
    int backup;    /* only used when no other server can take the request */
};

/* An upstream group ("upstreams": {"NAME": { ... }}); docs/proxy.md. */
struct cfg_upstream {
    char *name;
    struct cfg_upstream_server *servers;
    size_t nservers;
    int algorithm;   /* enum cfg_lb */
    int hash_on;     /* enum cfg_hash_on */
    char *hash_name; /* header or cookie name; NULL for the client address */
    struct {
        char *path;  /* NULL: no active checks */
        int64_t interval_ms, timeout_ms;
        int fall, rise;
        char *status; /* "2xx", "200", "200-399", lists with commas */
    } health;
    struct {
        int failures; /* consecutive failures that eject a server; 0 = never */
        int on_5xx;   /* 5xx answers count as failures */
        int64_t ejection_time_ms, max_ejection_time_ms;
        int max_ejected_percent;
    } passive;
    int64_t slow_start_ms;
    int retries;
    int retry_on_timeout; /* an idempotent request with no first byte in time is retried too */
    struct {
        int percent, min;
    } retry_budget;
    struct {
        int64_t connect_ms, first_byte_ms, idle_ms;
    } timeouts;
    struct {
        int size; /* idle connections kept per worker per server */
        int64_t idle_ms;
    } keepalive;
};

/* A listener ("listen": [ ... ]); net/listen.h makes sockets of it. */
struct cfg_listener {
    char *address; /* "host:port", "[ipv6]:port" or "unix:/absolute/path" */
    int tls;       /* listen[].tls */
    char *mode;    /* listen[].mode: a Unix socket's permission bits, in octal */
};

struct cfg {
    char *env;         /* environment name the files were chosen by */
    char *host;        /* server.host: listen address, IPv4 or IPv6 literal */
    int port;          /* server.port */
    int workers;       /* 0 in the file means "available CPUs"; resolved here */
    enum cfg_schedule schedule;
    int64_t min_uptime_ms;
    int64_t shutdown_timeout_ms;
    int backlog;

    /* operating the cluster: reload, recycling, control */
    int64_t ready_timeout_ms;      /* a new worker must report ready within */
    int64_t max_memory;            /* bytes of RSS per worker; 0 = no limit */
    int64_t memory_check_interval_ms;
    int64_t max_requests;          /* per worker; 0 = no limit */
    int max_errors;                /* internal 500s within error_window; 0 = off */
    int64_t error_window_ms;
    int max_connections;           /* per worker, for round_robin/least_loaded; 0 = no limit */
    char *user;                    /* workers run as this user; NULL = unchanged */
    char *group;                   /* and group; NULL = the user's group */
    char *control_socket;          /* NULL = derived from the port */
    char *pid_file;                /* NULL = derived from the port */

    struct {
        int64_t max_body;        /* bytes */
        int64_t max_uri;         /* bytes */
        int64_t max_header_size; /* bytes of the whole head */
        int max_headers;
    } limits;

    struct {
        int64_t header_ms;    /* whole head must arrive within */
        int64_t keepalive_ms; /* idle between requests */
        int64_t body_ms;      /* longest pause while reading a body */
        int64_t send_ms;      /* longest pause while the client does not read */
    } timeouts;

    struct {
        char *access;              /* log.access: "off", "stderr" or a file path */
        char *error;               /* log.error: "stderr" or a file path */
        int level;                 /* log.level: enum log_level (debug, info, warn, error) */
        int64_t stats_interval_ms; /* master's summary line; 0: none */
    } log;

    struct {
        char *host; /* admin.host */
        int port;   /* admin.port: 0 serves /metrics, /stats, /status on the main listener */
    } admin;

    /* the shop's data (src/store, src/cache, src/app/shop.c) */
    struct {
        char *path;                /* store.path: SQLite catalog; absolute once loaded */
    } store;
    struct {
        char *url;                 /* redis.url; NULL or "": no Redis (SQLite and a local cache) */
        int64_t command_timeout_ms;
        char *sentinels;           /* redis.sentinels: "host:port,host:port", in order; NULL: none */
        char *master_name;         /* the primary's name at the Sentinels */
        int wait_replicas;         /* cart writes wait for this many replicas (WAIT); 0: none */
        int64_t wait_timeout_ms;   /* and for at most this long */
    } redis;
    struct {
        int64_t local_size;        /* cache.local_size: bytes of the per-worker cache; 0: none */
    } cache;
    char *admin_token;             /* NULL: PUT /api/products/:id needs no token */

    int app;                       /* enum cfg_app */

    struct cfg_route *routes;
    size_t nroutes;
    struct cfg_upstream *upstreams;
    size_t nupstreams;
    struct cfg_listener *listeners; /* "listen"; none: one listener at server.host:server.port */
    size_t nlisteners;
};

/* Where the loader reads from. All fields may be NULL/0. */
struct cfg_sources {
    const char *file;       /* -c FILE: used instead of config/ */
    const char *config_dir; /* default "config" */
    const char *env;        /* default getenv("COHORT_ENV") or "development" */
    const char *const *overrides; /* "key=value" strings from flags, NULL-ended */
    int use_environ;        /* read PORT, HOST, WORKERS from the environment */
    int no_files;           /* read no file at all (cohort balance without -c) */
    int check_fs;           /* run the handlers' file-system checks (serve, check-config; not
                               status or stop, which must work while a folder is gone) */
};

/*
 * Loads and validates. On success returns 0 and fills *out (free it with
 * cfg_free). On failure returns -EINVAL (or -ENOENT for a -c file that does
 * not exist) and writes one line, without newline, to err. On failure *out
 * is left zeroed, so cfg_free(out) is harmless either way.
 */
int cfg_load(const struct cfg_sources *src, struct cfg *out, char *err, size_t errlen);

/*
 * Builds a struct cfg from one JSON text that holds a complete effective
 * config, as cfg_to_json() produced it (the master hands it to workers).
 */
int cfg_from_json(const char *text, struct cfg *out, char *err, size_t errlen);

/* The effective config as pretty JSON, every key present. Caller frees. */
char *cfg_to_json(const struct cfg *c);
/* cfg_to_json's text in a memfd (CLOEXEC) named name; the fd, or -1. */
int cfg_to_memfd(const struct cfg *c, const char *name);
/* The whole text of such a memfd; NULL if it cannot be read whole. Caller frees. */
char *cfg_read_memfd(int fd);

void cfg_free(struct cfg *c);

/* Parses "10s", "500ms", "2m", "1h" or a plain number of seconds. */
int cfg_parse_duration(const char *s, int64_t *ms);
/* Parses "512M", "16K", "1G", "100B" or a plain number of bytes. */
int cfg_parse_size(const char *s, int64_t *bytes);
/* Both return -EINVAL for any other form and -ERANGE when it overflows;
 * bounds are the caller's (a "-" is parsed, so a range check can name it). */

/*
 * Prints the key reference as a Markdown table, one row per key (route keys
 * as routes[].path). docs/config.md holds it verbatim; a unit test checks.
 */
void cfg_describe(FILE *out);

/* The upstream group of that name, NULL if none. */
const struct cfg_upstream *cfg_find_upstream(const struct cfg *c, const char *name);

/* True when both hold the same values, env included. */
bool cfg_equal(const struct cfg *a, const struct cfg *b);

/*
 * For a reload: 0 when `next` differs from `cur` only in reloadable keys;
 * otherwise -EINVAL, naming the first key that needs a restart in err.
 */
/*
 * For a reload: every key that needs a restart and differs in `next` gets
 * its value from `cur` back; msg lists them ("server.port: left as it was
 * (3000; the new 3001 needs a restart); ..."). Returns how many, or -ENOMEM.
 */
int cfg_keep_fixed(const struct cfg *cur, struct cfg *next, char *msg, size_t len);

/* How many keys the table declares (route keys included). */
size_t cfg_key_count(void);

int cfg_check_reload(const struct cfg *cur, const struct cfg *next, char *err, size_t errlen);

#endif
