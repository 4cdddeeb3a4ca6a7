/*
 * Configuration loader. The key table below is the one place a key is
 * declared; defaults, validation, environment variables, cfg_to_json,
 * cfg_describe, equality and the reload check all walk it.
 *
 * Loading runs in passes over one struct cfg: built-in defaults, then the
 * JSON files merged into one tree and validated as a whole, then environment
 * variables, then "key=value" overrides. jansson does not keep positions, so
 * each file is scanned a second time for the line and column of every key
 * path; an error looks its path up in the last file that holds it, which is
 * the file its effective value came from.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "core/config.h"
#include "core/resolve.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <netdb.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* --- the key table ---------------------------------------------------- */

enum type { T_INT, T_DURATION, T_SIZE, T_ENUM, T_STRING, T_ROUTES, T_BOOL, T_UPSTREAMS, T_SERVERS, T_ADDRS };
enum store { S_INT, S_I64, S_STR, S_ROUTES, S_UPSTREAMS, S_SERVERS };

#define F_RELOAD 1u   /* may change on reload without a restart */
#define F_REQUIRED 2u /* route keys only: every route must set it */
#define F_PATH 4u     /* a file or folder: made absolute as it is loaded (resolve_path) */

struct key {
    const char *name; /* "server.port"; route keys are "routes[].path" */
    enum type type;
    enum store store; /* what sits at `off` */
    size_t off;       /* in struct cfg, or in struct cfg_route for route keys */
    int64_t min, max; /* T_INT: the value; T_DURATION: ms; T_SIZE: bytes */
    const char *const *values;                   /* T_ENUM, NULL-ended */
    const char *(*check)(const char *in, const char **out); /* T_STRING */
    const char *def;  /* default, written as in an override; NULL: none */
    unsigned flags;
    const char *env;    /* environment variable, or NULL */
    const char *bounds; /* docs text where min..max does not say it */
    const char *desc;
};

#define MS 1LL
#define SEC 1000LL
#define HOUR (3600 * SEC)
#define KIB 1024LL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define TOP(f) offsetof(struct cfg, f)
#define ROUTE(f) offsetof(struct cfg_route, f)
#define ROUTE_PREFIX "routes[]."
/* Keys of an upstream group and of one of its servers (see "upstreams"). */
#define GROUP(f) offsetof(struct cfg_upstream, f)
#define SERVER(f) offsetof(struct cfg_upstream_server, f)
#define GROUP_PREFIX "upstreams.<name>."
#define SERVER_PREFIX "upstreams.<name>.servers[]."

/* The schedule is stored through an int pointer like the other enums. */
_Static_assert(sizeof(enum cfg_schedule) == sizeof(int), "enum cfg_schedule must be int-sized");

static const char *check_host(const char *in, const char **out);
static const char *check_path(const char *in, const char **out);
static const char *check_root(const char *in, const char **out);
static const char *check_user(const char *in, const char **out);
static const char *check_group(const char *in, const char **out);
static const char *check_file_path(const char *in, const char **out);

static const char *check_log_target(const char *in, const char **out);
static const char *check_redis_url(const char *in, const char **out);
static const char *check_token(const char *in, const char **out);
static const char *check_group_name(const char *in, const char **out);
static const char *check_address(const char *in, const char **out);
static const char *check_status(const char *in, const char **out);
static const char *check_health_path(const char *in, const char **out);
static const char *check_field_name(const char *in, const char **out);
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL}; /* enum log_level order */
static const char *const schedules[] = {"reuseport", "shared", "round_robin", "least_loaded",
                                          NULL}; /* enum cfg_schedule order */
static const char *const handlers[] = {"static", "hello", "health",
                                        /* the shop's (src/app/shop.c) */
                                        "products", "product", "product_update", "cart_add", "cart",
                                        "cart_remove", "ready",
                                        /* the load balancer's (src/proxy/proxy.c) */
                                        "proxy", NULL};
static const char *const algorithms[] = {"round_robin", "least_conn", "random", "p2c", "hash",
                                         NULL}; /* enum cfg_lb order */
static const char *const hash_ons[] = {"client", "header", "cookie", NULL}; /* enum cfg_hash_on order */
static const char *const apps[] = {"shop", "none", NULL};                   /* enum cfg_app order */

static const struct key keys[] = {
    {.name = "server.host", .type = T_STRING, .store = S_STR, .off = TOP(host), .check = check_host,
     .def = "127.0.0.1", .env = "HOST", .bounds = "IPv4 or IPv6 literal, or localhost",
     .desc = "Address to listen on; localhost means 127.0.0.1."},
    {.name = "server.port", .type = T_INT, .store = S_INT, .off = TOP(port), .min = 1, .max = 65535,
     .def = "3000", .env = "PORT", .desc = "TCP port to listen on."},
    {.name = "server.backlog", .type = T_INT, .store = S_INT, .off = TOP(backlog), .min = 1,
     .max = 65535, .def = "511", .desc = "Queue length of connections not yet accepted."},
    {.name = "workers", .type = T_INT, .store = S_INT, .off = TOP(workers), .min = 0,
     .max = CFG_MAX_WORKERS, .def = "0", .flags = F_RELOAD, .env = "WORKERS",
     .desc = "Worker processes; 0 means one per available CPU (at most 64)."},
    {.name = "schedule", .type = T_ENUM, .store = S_INT, .off = TOP(schedule), .values = schedules,
     .def = "reuseport",
     .desc = "How connections reach workers: a SO_REUSEPORT socket each, one shared socket, or the "
             "master accepting and handing each to the next worker (round_robin) or to the one with "
             "the fewest requests in flight (least_loaded)."},
    {.name = "min_uptime", .type = T_DURATION, .store = S_I64, .off = TOP(min_uptime_ms), .min = 0,
     .max = HOUR, .def = "1s", .flags = F_RELOAD,
     .desc = "A worker that exits sooner than this after starting counts as crashing."},
    {.name = "shutdown_timeout", .type = T_DURATION, .store = S_I64, .off = TOP(shutdown_timeout_ms),
     .min = 0, .max = HOUR, .def = "10s", .flags = F_RELOAD,
     .desc = "How long a graceful stop waits for requests in flight."},
    {.name = "ready_timeout", .type = T_DURATION, .store = S_I64, .off = TOP(ready_timeout_ms),
     .min = 100 * MS, .max = HOUR, .def = "10s", .flags = F_RELOAD,
     .desc = "A worker started by a reload or recycle must report ready within this, or the reload stops."},
    {.name = "max_memory", .type = T_SIZE, .store = S_I64, .off = TOP(max_memory), .min = 0,
     .max = 1024 * GIB, .def = "512M", .flags = F_RELOAD, .env = "MAX_MEMORY",
     .desc = "RSS above which a worker is replaced (new one first, then the old drains); 0 turns it off."},
    {.name = "memory_check_interval", .type = T_DURATION, .store = S_I64,
     .off = TOP(memory_check_interval_ms), .min = SEC, .max = HOUR, .def = "5s", .flags = F_RELOAD,
     .desc = "How often each worker compares its RSS with max_memory; the worker checks its limits once a "
             "second, so this is rounded up to whole seconds."},
    {.name = "max_requests", .type = T_INT, .store = S_I64, .off = TOP(max_requests), .min = 0,
     .max = INT64_MAX / 2, .def = "0", .flags = F_RELOAD,
     .desc = "Requests after which a worker is replaced; 0 means never."},
    {.name = "max_errors", .type = T_INT, .store = S_INT, .off = TOP(max_errors), .min = 0, .max = 1000000,
     .def = "10", .flags = F_RELOAD,
     .desc = "Internal errors (500 answers) within error_window after which a worker is replaced; 0 turns it off."},
    {.name = "error_window", .type = T_DURATION, .store = S_I64, .off = TOP(error_window_ms), .min = SEC,
     .max = HOUR, .def = "60s", .flags = F_RELOAD,
     .desc = "The window max_errors counts in; 500s are counted by the worker's once-a-second check, so "
             "their times are known to the second."},
    {.name = "max_connections", .type = T_INT, .store = S_INT, .off = TOP(max_connections), .min = 0,
     .max = 10000000, .def = "0", .flags = F_RELOAD,
     .desc = "Open connections per worker above which round_robin and least_loaded skip it; 0 means no limit."},
    {.name = "user", .type = T_STRING, .store = S_STR, .off = TOP(user), .check = check_user,
     .bounds = "an existing user", .desc = "Workers run as this user (the master binds first, as root)."},
    {.name = "group", .type = T_STRING, .store = S_STR, .off = TOP(group), .check = check_group,
     .bounds = "an existing group", .desc = "Workers run with this group; default: the user's own."},
    {.name = "control.socket", .type = T_STRING, .store = S_STR, .off = TOP(control_socket),
     .check = check_file_path, .flags = F_PATH, .bounds = "a file path",
     .desc = "Unix socket `cohort status`, `reload` and `stop` talk to; default "
             "$XDG_RUNTIME_DIR (or /tmp)/cohort-<port>.sock."},
    {.name = "control.pid_file", .type = T_STRING, .store = S_STR, .off = TOP(pid_file),
     .check = check_file_path, .flags = F_PATH, .bounds = "a file path",
     .desc = "Where the master writes its pid; default $XDG_RUNTIME_DIR (or /tmp)/cohort-<port>.pid."},
    {.name = "limits.max_body", .type = T_SIZE, .store = S_I64, .off = TOP(limits.max_body), .min = 0,
     .max = GIB, .def = "1M", .flags = F_RELOAD, .desc = "Largest request body."},
    {.name = "limits.max_uri", .type = T_SIZE, .store = S_I64, .off = TOP(limits.max_uri), .min = 64,
     .max = MIB, .def = "8K", .flags = F_RELOAD, .desc = "Longest request target."},
    {.name = "limits.max_header_size", .type = T_SIZE, .store = S_I64,
     .off = TOP(limits.max_header_size), .min = KIB, .max = MIB, .def = "16K", .flags = F_RELOAD,
     .desc = "Largest request head: request line and header fields together."},
    {.name = "limits.max_headers", .type = T_INT, .store = S_INT, .off = TOP(limits.max_headers),
     .min = 1, .max = 10000, .def = "100", .flags = F_RELOAD,
     .desc = "Most header fields in one request."},
    {.name = "timeouts.header", .type = T_DURATION, .store = S_I64, .off = TOP(timeouts.header_ms),
     .min = MS, .max = HOUR, .def = "10s", .flags = F_RELOAD,
     .desc = "The whole request head must arrive within this."},
    {.name = "timeouts.keepalive", .type = T_DURATION, .store = S_I64,
     .off = TOP(timeouts.keepalive_ms), .min = 0, .max = HOUR, .def = "5s", .flags = F_RELOAD,
     .desc = "How long an idle connection waits for its next request; 0 turns keep-alive off."},
    {.name = "timeouts.body", .type = T_DURATION, .store = S_I64, .off = TOP(timeouts.body_ms),
     .min = MS, .max = HOUR, .def = "10s", .flags = F_RELOAD,
     .desc = "Longest pause while reading a request body."},
    {.name = "timeouts.send", .type = T_DURATION, .store = S_I64, .off = TOP(timeouts.send_ms),
     .min = MS, .max = HOUR, .def = "30s", .flags = F_RELOAD,
     .desc = "Longest pause while the client does not read the response."},
    {.name = "log.access", .type = T_STRING, .store = S_STR, .off = TOP(log.access), .check = check_log_target,
     .def = "off", .flags = F_RELOAD | F_PATH, .env = "LOG_ACCESS", .bounds = "off, stderr, or a file path",
     .desc = "Access log: one JSON line per request, buffered per worker; a file is appended to and reopened on SIGUSR1."},
    {.name = "log.error", .type = T_STRING, .store = S_STR, .off = TOP(log.error), .check = check_log_target,
     .def = "stderr", .flags = F_PATH, .bounds = "stderr, or a file path",
     .desc = "Error log: JSON lines of every process; a file is appended to and reopened on SIGUSR1."},
    {.name = "log.level", .type = T_ENUM, .store = S_INT, .off = TOP(log.level), .values = log_levels,
     .def = "info", .flags = F_RELOAD, .desc = "Least severe level written to the error log."},
    {.name = "log.stats_interval", .type = T_DURATION, .store = S_I64, .off = TOP(log.stats_interval_ms),
     .min = 0, .max = 24 * HOUR, .def = "60s",
     .desc = "How often the master logs a summary of the cluster (requests, errors, latency, RSS); 0s: never."},
    {.name = "admin.host", .type = T_STRING, .store = S_STR, .off = TOP(admin.host), .check = check_host,
     .def = "127.0.0.1", .bounds = "IPv4 or IPv6 literal, or localhost",
     .desc = "Address of the admin listener."},
    {.name = "admin.port", .type = T_INT, .store = S_INT, .off = TOP(admin.port), .min = 0, .max = 65535,
     .def = "0",
     .desc = "A separate listener for /metrics, /stats and /status (which then leave the main one); 0: none."},
    {.name = "store.path", .type = T_STRING, .store = S_STR, .off = TOP(store.path), .check = check_root,
     .def = "data/shop.db", .flags = F_RELOAD | F_PATH, .bounds = "a file path",
     .desc = "SQLite catalog (and carts and counters without Redis); folders created as needed."},
    {.name = "redis.url", .type = T_STRING, .store = S_STR, .off = TOP(redis.url), .check = check_redis_url,
     .flags = F_RELOAD, .env = "REDIS_URL", .bounds = "redis://[:password@]host[:port][/db], or empty",
     .desc = "Redis for the cache, carts and request counters; none (and no redis.sentinels): SQLite and a "
             "per-worker cache."},
    {.name = "redis.command_timeout", .type = T_DURATION, .store = S_I64, .off = TOP(redis.command_timeout_ms),
     .min = MS, .max = 60 * SEC, .def = "1s", .flags = F_RELOAD,
     .desc = "A Redis reply later than this counts as an outage: the connection is dropped and made again."},
    {.name = "redis.sentinels", .type = T_ADDRS, .store = S_STR, .off = TOP(redis.sentinels), .flags = F_RELOAD,
     .env = "REDIS_SENTINELS", .bounds = "array of \"host:port\" (or one comma-separated string)",
     .desc = "Redis Sentinels to ask for the primary (docs/scaling.md); then redis.url gives only the "
             "password and database."},
    {.name = "redis.master_name", .type = T_STRING, .store = S_STR, .off = TOP(redis.master_name),
     .check = check_token, .def = "mymaster", .flags = F_RELOAD, .bounds = "printable, no spaces",
     .desc = "The name the Sentinels monitor the primary under."},
    {.name = "redis.wait_replicas", .type = T_INT, .store = S_INT, .off = TOP(redis.wait_replicas), .min = 0,
     .max = 100, .def = "0", .flags = F_RELOAD,
     .desc = "A cart change is answered only once this many replicas have it (WAIT), else 503; 0: no wait."},
    {.name = "redis.wait_timeout", .type = T_DURATION, .store = S_I64, .off = TOP(redis.wait_timeout_ms),
     .min = MS, .max = 60 * SEC, .def = "500ms", .flags = F_RELOAD,
     .desc = "How long a cart change waits for the replicas; shorter than redis.command_timeout."},
    {.name = "cache.local_size", .type = T_SIZE, .store = S_I64, .off = TOP(cache.local_size), .min = 0,
     .max = GIB, .def = "16M", .flags = F_RELOAD,
     .desc = "Bytes of each worker's in-process cache: the cache without Redis, a near cache in front of it "
             "with Redis; 0 turns it off."},
    {.name = "admin_token", .type = T_STRING, .store = S_STR, .off = TOP(admin_token), .check = check_token,
     .flags = F_RELOAD, .bounds = "printable, no spaces",
     .desc = "When set, PUT /api/products/:id needs `Authorization: Bearer <token>`."},
    {.name = "app", .type = T_ENUM, .store = S_INT, .off = TOP(app), .values = apps, .def = "shop",
     .flags = F_RELOAD,
     .desc = "Built-in routes beside the config's: shop adds /, /health, the shop API (docs/shop.md) and "
             "/api/broadcast; none serves the config's routes only (what `cohort balance` uses)."},
    {.name = "upstreams", .type = T_UPSTREAMS, .store = S_UPSTREAMS, .def = "{}", .flags = F_RELOAD,
     .bounds = "object of groups by name", .desc = "Upstream groups that proxy routes forward to (docs/proxy.md)."},
    {.name = GROUP_PREFIX "servers", .type = T_SERVERS, .store = S_SERVERS, .off = GROUP(servers),
     .flags = F_RELOAD | F_REQUIRED, .bounds = "array of server objects, or of \"host:port\" strings",
     .desc = "The group's servers."},
    {.name = SERVER_PREFIX "address", .type = T_STRING, .store = S_STR, .off = SERVER(address),
     .check = check_address, .flags = F_RELOAD | F_REQUIRED, .bounds = "host:port or [IPv6]:port",
     .desc = "Where the server listens; a host name is resolved when the config is loaded (start, reload)."},
    {.name = SERVER_PREFIX "weight", .type = T_INT, .store = S_INT, .off = SERVER(weight), .min = 1,
     .max = 1000, .def = "1", .flags = F_RELOAD, .desc = "Share of the requests, relative to the others."},
    {.name = SERVER_PREFIX "max_conns", .type = T_INT, .store = S_INT, .off = SERVER(max_conns), .min = 0,
     .max = 1000000, .def = "0", .flags = F_RELOAD,
     .desc = "Requests in flight to it per worker above which it is skipped; 0: no limit."},
    {.name = SERVER_PREFIX "backup", .type = T_BOOL, .store = S_INT, .off = SERVER(backup), .def = "false",
     .flags = F_RELOAD, .bounds = "true or false",
     .desc = "Used only when no other server of the group can take the request."},
    {.name = GROUP_PREFIX "algorithm", .type = T_ENUM, .store = S_INT, .off = GROUP(algorithm),
     .values = algorithms, .def = "round_robin", .flags = F_RELOAD,
     .desc = "How a server is picked: smooth weighted round robin, fewest requests in flight, weighted "
             "random, the better of two random picks (p2c), or a consistent hash (hash.on)."},
    {.name = GROUP_PREFIX "hash.on", .type = T_ENUM, .store = S_INT, .off = GROUP(hash_on), .values = hash_ons,
     .def = "client", .flags = F_RELOAD,
     .desc = "What the hash algorithm hashes: the client's address, a request header or a cookie (hash.name)."},
    {.name = GROUP_PREFIX "hash.name", .type = T_STRING, .store = S_STR, .off = GROUP(hash_name),
     .check = check_field_name, .flags = F_RELOAD, .bounds = "a header or cookie name",
     .desc = "The header or cookie hashed; required when hash.on is header or cookie."},
    {.name = GROUP_PREFIX "health.path", .type = T_STRING, .store = S_STR, .off = GROUP(health.path),
     .check = check_health_path, .flags = F_RELOAD, .bounds = "starts with `/`",
     .desc = "Active health checks: the master sends GET path to every server each interval; none: no checks."},
    {.name = GROUP_PREFIX "health.interval", .type = T_DURATION, .store = S_I64,
     .off = GROUP(health.interval_ms), .min = 100 * MS, .max = HOUR, .def = "5s", .flags = F_RELOAD,
     .desc = "Time between two checks of a server."},
    {.name = GROUP_PREFIX "health.timeout", .type = T_DURATION, .store = S_I64, .off = GROUP(health.timeout_ms),
     .min = 10 * MS, .max = HOUR, .def = "3s", .flags = F_RELOAD,
     .desc = "A check not answered within this fails."},
    {.name = GROUP_PREFIX "health.fall", .type = T_INT, .store = S_INT, .off = GROUP(health.fall), .min = 1,
     .max = 100, .def = "3", .flags = F_RELOAD, .desc = "Consecutive failed checks that mark a server down."},
    {.name = GROUP_PREFIX "health.rise", .type = T_INT, .store = S_INT, .off = GROUP(health.rise), .min = 1,
     .max = 100, .def = "2", .flags = F_RELOAD, .desc = "Consecutive passed checks that bring it back."},
    {.name = GROUP_PREFIX "health.status", .type = T_STRING, .store = S_STR, .off = GROUP(health.status),
     .check = check_status, .def = "2xx", .flags = F_RELOAD, .bounds = "codes, ranges or classes: 200,204 200-399 2xx",
     .desc = "Statuses that pass a check."},
    {.name = GROUP_PREFIX "passive.failures", .type = T_INT, .store = S_INT, .off = GROUP(passive.failures),
     .min = 0, .max = 1000, .def = "5", .flags = F_RELOAD,
     .desc = "Consecutive connect errors, resets and timeouts (seen by one worker) that eject a server; 0: never."},
    {.name = GROUP_PREFIX "passive.on_5xx", .type = T_BOOL, .store = S_INT, .off = GROUP(passive.on_5xx),
     .def = "false", .flags = F_RELOAD, .bounds = "true or false",
     .desc = "5xx answers count as failures too."},
    {.name = GROUP_PREFIX "passive.ejection_time", .type = T_DURATION, .store = S_I64,
     .off = GROUP(passive.ejection_time_ms), .min = 100 * MS, .max = HOUR, .def = "30s", .flags = F_RELOAD,
     .desc = "An ejected server is out for this times the number of times it was ejected."},
    {.name = GROUP_PREFIX "passive.max_ejection_time", .type = T_DURATION, .store = S_I64,
     .off = GROUP(passive.max_ejection_time_ms), .min = 100 * MS, .max = 24 * HOUR, .def = "300s",
     .flags = F_RELOAD, .desc = "Longest ejection; a server fine for this long starts counting again from one."},
    {.name = GROUP_PREFIX "passive.max_ejected_percent", .type = T_INT, .store = S_INT,
     .off = GROUP(passive.max_ejected_percent), .min = 0, .max = 100, .def = "50", .flags = F_RELOAD,
     .desc = "Never more than this share of the group's servers is ejected at once."},
    {.name = GROUP_PREFIX "slow_start", .type = T_DURATION, .store = S_I64, .off = GROUP(slow_start_ms), .min = 0,
     .max = HOUR, .def = "0s", .flags = F_RELOAD,
     .desc = "A server that comes back gets its weight ramped up over this long; 0s: at once."},
    {.name = GROUP_PREFIX "retries", .type = T_INT, .store = S_INT, .off = GROUP(retries), .min = 0, .max = 10,
     .def = "2", .flags = F_RELOAD,
     .desc = "Further attempts on other servers for a request that failed before any response byte, when safe."},
    {.name = GROUP_PREFIX "retry_on_timeout", .type = T_BOOL, .store = S_INT, .off = GROUP(retry_on_timeout),
     .def = "false", .flags = F_RELOAD, .bounds = "true or false",
     .desc = "A request with no response byte within timeouts.first_byte is retried too, when its method is "
             "idempotent and its body was not consumed (the first server may have handled it)."},
    {.name = GROUP_PREFIX "retry_budget.percent", .type = T_INT, .store = S_INT,
     .off = GROUP(retry_budget.percent), .min = 0, .max = 100, .def = "20", .flags = F_RELOAD,
     .desc = "Retries in flight at most this share of the requests in flight (per worker)."},
    {.name = GROUP_PREFIX "retry_budget.min", .type = T_INT, .store = S_INT, .off = GROUP(retry_budget.min),
     .min = 0, .max = 100000, .def = "3", .flags = F_RELOAD,
     .desc = "Retries in flight always allowed, whatever the share."},
    {.name = GROUP_PREFIX "timeouts.connect", .type = T_DURATION, .store = S_I64, .off = GROUP(timeouts.connect_ms),
     .min = MS, .max = HOUR, .def = "3s", .flags = F_RELOAD, .desc = "Connecting to a server (a retry may follow)."},
    {.name = GROUP_PREFIX "timeouts.first_byte", .type = T_DURATION, .store = S_I64,
     .off = GROUP(timeouts.first_byte_ms), .min = MS, .max = HOUR, .def = "60s", .flags = F_RELOAD,
     .desc = "From the request sent to the response's first byte; then 504."},
    {.name = GROUP_PREFIX "timeouts.idle", .type = T_DURATION, .store = S_I64, .off = GROUP(timeouts.idle_ms),
     .min = MS, .max = 24 * HOUR, .def = "60s", .flags = F_RELOAD,
     .desc = "Longest pause of a body (either way) or a WebSocket tunnel."},
    {.name = GROUP_PREFIX "keepalive.size", .type = T_INT, .store = S_INT, .off = GROUP(keepalive.size), .min = 0,
     .max = 100000, .def = "64", .flags = F_RELOAD,
     .desc = "Idle keep-alive connections kept per worker per server; 0: a connection per request."},
    {.name = GROUP_PREFIX "keepalive.idle_timeout", .type = T_DURATION, .store = S_I64,
     .off = GROUP(keepalive.idle_ms), .min = MS, .max = HOUR, .def = "4s", .flags = F_RELOAD,
     .desc = "An idle pooled connection is closed after this; keep it below the servers' own keep-alive timeout."},
    {.name = "routes", .type = T_ROUTES, .store = S_ROUTES, .def = "[]", .flags = F_RELOAD,
     .bounds = "array of route objects", .desc = "Routes served by built-in handlers."},
    {.name = ROUTE_PREFIX "path", .type = T_STRING, .store = S_STR, .off = ROUTE(path),
     .check = check_path, .flags = F_RELOAD | F_REQUIRED,
     .bounds = "starts with `/`; may end in `/*`; may hold `:name` segments",
     .desc = "Path the route matches: exact, a prefix ending in `/*`, or with `:name` parameters."},
    {.name = ROUTE_PREFIX "handler", .type = T_ENUM, .store = S_STR, .off = ROUTE(handler),
     .values = handlers, .flags = F_RELOAD | F_REQUIRED,
     .desc = "What answers: files from root, a hello page, the health check, or a shop endpoint "
             "(docs/shop.md)."},
    {.name = ROUTE_PREFIX "root", .type = T_STRING, .store = S_STR, .off = ROUTE(root),
     .check = check_root, .flags = F_RELOAD | F_PATH,
     .bounds = "required for static, not allowed otherwise; an existing folder",
     .desc = "Folder the static handler serves; `serve` and `check-config` refuse one that is missing or "
             "not readable."},
    {.name = ROUTE_PREFIX "cache.ttl", .type = T_DURATION, .store = S_I64, .off = ROUTE(cache_ttl_ms),
     .min = 0, .max = 24 * HOUR, .flags = F_RELOAD,
     .desc = "Response cache: GET answers (200, no Set-Cookie, no `Cache-Control: no-store`) are kept this "
             "long, keyed by method, path and query; written `\"cache\": {\"ttl\": 60}`."},
    {.name = ROUTE_PREFIX "upstream", .type = T_STRING, .store = S_STR, .off = ROUTE(upstream),
     .check = check_group_name, .flags = F_RELOAD, .bounds = "a group of upstreams; proxy only",
     .desc = "The upstream group a proxy route forwards to."},
};

#define NKEYS (sizeof keys / sizeof keys[0])

size_t cfg_key_count(void)
{
    return NKEYS;
}

static bool is_route_key(const struct key *k)
{
    return strncmp(k->name, ROUTE_PREFIX, strlen(ROUTE_PREFIX)) == 0;
}

/* A key of an element (a route, an upstream group, a server), not of struct cfg. */
static bool is_top_key(const struct key *k)
{
    return !is_route_key(k) && strncmp(k->name, GROUP_PREFIX, strlen(GROUP_PREFIX)) != 0;
}

static int64_t load_num(const struct key *k, const void *base)
{
    const char *p = (const char *)base + k->off;
    return k->store == S_INT ? *(const int *)(const void *)p : *(const int64_t *)(const void *)p;
}

static void store_num(const struct key *k, void *base, int64_t n)
{
    char *p = (char *)base + k->off;
    if (k->store == S_INT)
        *(int *)(void *)p = (int)n;
    else
        *(int64_t *)(void *)p = n;
}

static char **str_field(const struct key *k, const void *base)
{
    return (char **)(void *)((char *)(uintptr_t)base + k->off);
}

/* --- string checks ---------------------------------------------------- */

static const char *check_user(const char *in, const char **out)
{
    *out = in;
    return getpwnam(in) ? NULL : "is not a user on this system";
}

static const char *check_group(const char *in, const char **out)
{
    *out = in;
    return getgrnam(in) ? NULL : "is not a group on this system";
}

/* The form only; cache/redis.c parses it. An empty URL means no Redis. */
static const char *check_redis_url(const char *in, const char **out)
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

static const char *check_token(const char *in, const char **out)
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
static const char *check_group_name(const char *in, const char **out)
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
static const char *check_address(const char *in, const char **out)
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
static const char *check_status(const char *in, const char **out)
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

static const char *check_health_path(const char *in, const char **out)
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
static const char *check_field_name(const char *in, const char **out)
{
    *out = in;
    if (!*in)
        return "must not be empty";
    for (const char *p = in; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return "is not a header or cookie name";
    return NULL;
}

static const char *check_file_path(const char *in, const char **out)
{
    *out = in;
    if (in[0] == '\0')
        return "must not be empty";
    return strlen(in) >= 108 ? "is too long for a Unix socket path (107 bytes at most)" : NULL;
}

static const char *check_host(const char *in, const char **out)
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
static const char *check_path(const char *p, const char **out)
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
static const char *check_log_target(const char *in, const char **out)
{
    (void)out;
    if (!*in)
        return "must not be empty (use \"off\", \"stderr\" or a file path)";
    for (const char *p = in; *p; p++)
        if ((unsigned char)*p < ' ' || *p == 0x7f)
            return "must not hold control characters";
    return NULL;
}

static const char *check_root(const char *in, const char **out)
{
    (void)out;
    return *in ? NULL : "must not be empty";
}

/* --- error messages --------------------------------------------------- */

/* Where positions are looked up: the files the merged tree came from. */
struct pos {
    char *path;       /* "server.port", "routes[0].path"; "" is the top level */
    int kline, kcol;  /* the key (the value itself for array elements) */
    int vline, vcol;
};

struct origin {
    char *name;
    struct pos *pos;
    size_t npos;
};

/* Where a path-valued key got its value, for checks made once every
 * source is in (check_roots); the last note of a path is the one in force. */
struct note {
    char *path;  /* "routes[0].root" */
    char *label; /* the source when not a file; NULL: the file find_pos names */
    char *given; /* the value as written, before resolve_path */
};

struct ctx {
    struct origin files[2]; /* default.json and <env>.json, or one file */
    size_t nfiles;
    const char *label; /* the source when not a file: "command line" */
    const char *raw;   /* the value as text, when it came as text */
    char *err;
    size_t errlen;
    bool resolve;      /* make relative paths absolute (cfg_load; cfg_from_json has them so) */
    struct note *notes;
    size_t nnotes;
};

#define SHOWN 72
#define SHOW_FLAGS (JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(12))

/* A JSON value as JSON, cut short (at a character boundary) to fit buf. */
static const char *show(const json_t *v, char *buf)
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
static const struct pos *find_pos(const struct ctx *x, const char *path, const char **file)
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
__attribute__((format(printf, 4, 5))) static int report(const struct ctx *x, const char *path,
                                                         bool at_key, const char *fmt, ...)
{
    size_t used = 0;
    const char *file;
    va_list ap;

    if (!x->err || !x->errlen)
        return -EINVAL;
    x->err[0] = '\0';
    const struct pos *p = x->label ? NULL : find_pos(x, path, &file);
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
__attribute__((format(printf, 3, 4))) static int fail(const struct ctx *x, int rc, const char *fmt,
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

static int no_memory(const struct ctx *x)
{
    return fail(x, -ENOMEM, "out of memory");
}

static int bad_type(const struct ctx *x, const char *path, const json_t *v, const char *what)
{
    char buf[SHOWN];
    return report(x, path, false, "%s is not %s", show(v, buf), what);
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

static const char *fmt_duration(int64_t ms, char *buf, size_t len)
{
    const struct unit *u = duration_units;
    while (ms != 0 && ms % u->mult != 0)
        u++;
    snprintf(buf, len, "%lld%s", (long long)(ms == 0 ? 0 : ms / u->mult), ms == 0 ? "s" : u->name);
    return buf;
}

/* Whole kibi-, mebi- or gibibytes get a suffix; anything else is bytes. */
static const char *fmt_size(int64_t n, char *buf, size_t len)
{
    const struct unit *u = size_units;
    while (u->mult > 1 && (n == 0 || n % u->mult != 0))
        u++;
    snprintf(buf, len, "%lld%s", (long long)(n / u->mult), u->mult > 1 ? u->name : "");
    return buf;
}

static const char *fmt_num(const struct key *k, int64_t n, char *buf, size_t len)
{
    if (k->type == T_DURATION)
        return fmt_duration(n, buf, len);
    if (k->type == T_SIZE)
        return fmt_size(n, buf, len);
    snprintf(buf, len, "%lld", (long long)n);
    return buf;
}

static int out_of_range(const struct ctx *x, const struct key *k, const char *path, const json_t *v)
{
    char buf[SHOWN], lo[32], hi[32];
    return report(x, path, false, "%s is out of range %s..%s", x->raw ? x->raw : show(v, buf),
                  fmt_num(k, k->min, lo, sizeof lo), fmt_num(k, k->max, hi, sizeof hi));
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

static int set_key(struct ctx *x, const struct key *k, const char *path, json_t *v, void *base);

static int store_str(const struct ctx *x, const struct key *k, void *base, const char *s)
{
    char **f = str_field(k, base), *copy = strdup(s);
    if (!copy)
        return no_memory(x);
    free(*f);
    *f = copy;
    return 0;
}

static int set_int(struct ctx *x, const struct key *k, const char *path, json_t *v, void *base)
{
    if (!json_is_integer(v))
        return bad_type(x, path, v, "an integer");
    json_int_t n = json_integer_value(v);
    if (n < k->min || n > k->max)
        return out_of_range(x, k, path, v);
    store_num(k, base, n);
    return 0;
}

/* A JSON number is seconds (durations) or bytes (sizes); a string has a unit. */
static int amount_of(struct ctx *x, const struct key *k, const char *path, json_t *v, int64_t *n)
{
    bool dur = k->type == T_DURATION;
    int rc;

    if (json_is_string(v)) {
        rc = dur ? cfg_parse_duration(json_string_value(v), n) : cfg_parse_size(json_string_value(v), n);
        if (rc == -ERANGE)
            return out_of_range(x, k, path, v);
        return rc ? bad_type(x, path, v, dur ? DURATION_HINT : SIZE_HINT) : 0;
    }
    if (!dur) {
        if (!json_is_integer(v))
            return bad_type(x, path, v, SIZE_HINT);
        *n = json_integer_value(v);
        return 0;
    }
    if (!json_is_number(v))
        return bad_type(x, path, v, DURATION_HINT);
    double ms = json_number_value(v) * 1000.0;
    if (!(ms >= -9e15 && ms <= 9e15))
        return out_of_range(x, k, path, v);
    *n = llround(ms);
    return 0;
}

static int set_amount(struct ctx *x, const struct key *k, const char *path, json_t *v, void *base)
{
    int64_t n;
    int rc = amount_of(x, k, path, v, &n);
    if (rc)
        return rc;
    if (n < k->min || n > k->max)
        return out_of_range(x, k, path, v);
    store_num(k, base, n);
    return 0;
}

static int set_enum(struct ctx *x, const struct key *k, const char *path, json_t *v, void *base)
{
    const char *s = json_string_value(v); /* NULL unless a string */
    char list[128] = "", buf[SHOWN];
    size_t used = 0;

    for (size_t i = 0; s && k->values[i]; i++) {
        if (strcmp(s, k->values[i]) != 0)
            continue;
        if (k->store == S_STR)
            return store_str(x, k, base, s);
        store_num(k, base, (int64_t)i);
        return 0;
    }
    for (size_t i = 0; k->values[i] && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", k->values[i]);
    return report(x, path, false, "%s is not one of %s", show(v, buf), list);
}

/* --- paths ------------------------------------------------------------ */

/* The words of the log keys that name no file. */
static bool names_no_file(const struct key *k, const char *s)
{
    if (k->check != check_log_target)
        return false;
    return strcmp(s, "stderr") == 0 ||
           (k->off == TOP(log.access) && (strcmp(s, "off") == 0 || strcmp(s, "stdout") == 0));
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
    find_pos(x, path, &file);
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
static int resolve_path(const struct ctx *x, const struct key *k, const char *path, const char *s, char **out)
{
    *out = NULL;
    if (!x->resolve || !*s || s[0] == '/' || names_no_file(k, s))
        return 0;
    char *base = base_dir(x, path);
    if (!base)
        return fail(x, -EINVAL, "%s: cannot find the folder %s is relative to: %s", path, s, strerror(errno));
    *out = join_path(base, s);
    free(base);
    return *out ? 0 : no_memory(x);
}

static int add_note(struct ctx *x, const char *path, const char *given)
{
    struct note *n = realloc(x->notes, (x->nnotes + 1) * sizeof *n);
    if (!n)
        return no_memory(x);
    x->notes = n;
    n = &x->notes[x->nnotes];
    *n = (struct note){strdup(path), x->label ? strdup(x->label) : NULL, strdup(given)};
    if (!n->path || !n->given || (x->label && !n->label)) {
        free(n->path), free(n->label), free(n->given);
        return no_memory(x);
    }
    x->nnotes++;
    return 0;
}

static const struct note *find_note(const struct ctx *x, const char *path)
{
    for (size_t i = x->nnotes; i-- > 0;)
        if (strcmp(x->notes[i].path, path) == 0)
            return &x->notes[i];
    return NULL;
}

static void free_notes(struct ctx *x)
{
    for (size_t i = 0; i < x->nnotes; i++)
        free(x->notes[i].path), free(x->notes[i].label), free(x->notes[i].given);
    free(x->notes);
    x->notes = NULL;
    x->nnotes = 0;
}

static int set_string(struct ctx *x, const struct key *k, const char *path, json_t *v, void *base)
{
    char buf[SHOWN], *abs = NULL;

    if (!json_is_string(v))
        return bad_type(x, path, v, "a string");
    const char *given = json_string_value(v);
    int rc = k->flags & F_PATH ? resolve_path(x, k, path, given, &abs) : 0;
    if (rc)
        return rc;
    const char *s = abs ? abs : given, *norm = s;
    const char *why = k->check ? k->check(s, &norm) : NULL;
    if (why && abs)
        rc = report(x, path, false, "%s (%s) %s", show(v, buf), abs, why);
    else if (why)
        rc = report(x, path, false, "%s %s", show(v, buf), why);
    else if (!(rc = store_str(x, k, base, norm)) && (k->flags & F_PATH))
        rc = add_note(x, path, given);
    free(abs);
    return rc;
}

/* --- routes ----------------------------------------------------------- */

static void free_routes(struct cfg_route *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        for (size_t k = 0; k < NKEYS; k++)
            if (is_route_key(&keys[k]) && keys[k].store == S_STR)
                free(*str_field(&keys[k], &r[i]));
    free(r);
}

static const struct key *find_route_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (is_route_key(&keys[i]) && strcmp(keys[i].name + strlen(ROUTE_PREFIX), name) == 0)
            return &keys[i];
    return NULL;
}

static char *join(const char *prefix, const char *name)
{
    char *p;
    if (asprintf(&p, "%s%s%s", prefix, *prefix ? "." : "", name) < 0)
        return NULL;
    return p;
}

static int unknown_key(const struct ctx *x, const char *path, const char *elem);

/* Required keys, and the one rule that ties two keys of a route together. */
static int check_route(const struct ctx *x, const char *path, const struct cfg_route *r)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (is_route_key(&keys[i]) && (keys[i].flags & F_REQUIRED) && !*str_field(&keys[i], r))
            return report(x, path, false, "%s is required", keys[i].name + strlen(ROUTE_PREFIX));
    bool is_proxy = strcmp(r->handler, "proxy") == 0;
    if (is_proxy != (r->upstream != NULL)) {
        char *p = join(path, "upstream");
        int rc = !p ? no_memory(x)
                 : is_proxy ? report(x, path, false, "upstream is required when handler is \"proxy\"")
                            : report(x, p, false, "not allowed when handler is \"%s\" (only \"proxy\" forwards)",
                                     r->handler);
        free(p);
        return rc;
    }
    bool is_static = strcmp(r->handler, "static") == 0;
    if (is_static && !r->root)
        return report(x, path, false, "root is required when handler is \"static\"");
    if (!is_static && r->root) {
        char *p = join(path, "root");
        int rc = p ? report(x, p, false,
                            "not allowed when handler is \"%s\" (only \"static\" serves files)",
                            r->handler)
                   : no_memory(x);
        free(p);
        return rc;
    }
    return 0;
}

/* "cache" is a section of route keys: "cache.ttl" is written nested. */
static bool is_route_section(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < NKEYS; i++) {
        const char *k = keys[i].name + strlen(ROUTE_PREFIX);
        if (is_route_key(&keys[i]) && strncmp(k, name, n) == 0 && k[n] == '.')
            return true;
    }
    return false;
}

/* A member named "cache.ttl" literally: keys are written nested. */
static int dotted_member(const struct ctx *x, const char *elem, const char *p, const char *rel)
{
    const char *dot = strrchr(rel, '.');
    if (find_route_key(rel))
        return report(x, p, true, "unknown key (write it nested, as \"%.*s\": {\"%s\": ...})",
                      (int)(dot - rel), rel, dot + 1);
    return unknown_key(x, p, elem);
}

/* One member of a route (`rel` is its name within the route, "cache.ttl"
 * for a nested one); `elem` is "routes[3]", `p` the member's whole path.
 * A literal dotted member name never reaches here: it must be nested. */
static int set_route_member(struct ctx *x, const char *elem, const char *p, const char *rel, json_t *val,
                            struct cfg_route *r)
{
    const struct key *k = find_route_key(rel);
    const char *name;
    json_t *sub;
    int rc = 0;

    if (k)
        return set_key(x, k, p, val, r);
    if (!is_route_section(rel))
        return unknown_key(x, p, elem);
    if (!json_is_object(val))
        return bad_type(x, p, val, "an object");
    json_object_foreach(val, name, sub) {
        char *cp = join(p, name), *crel = cp ? join(rel, name) : NULL;
        rc = !crel ? no_memory(x) : strchr(name, '.') ? dotted_member(x, elem, cp, crel)
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
        return bad_type(x, path, v, "a route object");
    json_object_foreach(v, name, val) {
        char *p = join(path, name);
        int rc = !p ? no_memory(x) : strchr(name, '.') ? dotted_member(x, path, p, name)
                                                         : set_route_member(x, path, p, name, val, r);
        free(p);
        if (rc)
            return rc;
    }
    return check_route(x, path, r);
}

/* The new routes replace the old ones only when every element is valid. */
static int set_routes(struct ctx *x, const char *path, json_t *v, struct cfg *c)
{
    if (!json_is_array(v))
        return bad_type(x, path, v, "an array of routes");
    size_t n = json_array_size(v);
    struct cfg_route *r = n ? calloc(n, sizeof *r) : NULL;
    int rc = 0;

    if (n && !r)
        return no_memory(x);
    for (size_t i = 0; i < n && !rc; i++)
        rc = set_route(x, i, json_array_get(v, i), &r[i]);
    if (rc) {
        free_routes(r, n);
        return rc;
    }
    free_routes(c->routes, c->nroutes);
    c->routes = r;
    c->nroutes = n;
    return 0;
}

static int set_bool(struct ctx *x, const struct key *k, const char *path, json_t *v, void *base)
{
    if (!json_is_boolean(v))
        return bad_type(x, path, v, "true or false");
    store_num(k, base, json_is_true(v));
    return 0;
}

static int set_upstreams(struct ctx *x, const char *path, json_t *v, struct cfg *c);
static int set_servers(struct ctx *x, const char *path, json_t *v, struct cfg_upstream *g);
static int set_addrs(struct ctx *x, const struct key *k, const char *path, json_t *v, void *base);

static int set_key(struct ctx *x, const struct key *k, const char *path, json_t *v, void *base)
{
    switch (k->type) {
    case T_BOOL:
        return set_bool(x, k, path, v, base);
    case T_UPSTREAMS:
        return set_upstreams(x, path, v, base);
    case T_SERVERS:
        return set_servers(x, path, v, base);
    case T_INT:
        return set_int(x, k, path, v, base);
    case T_DURATION:
    case T_SIZE:
        return set_amount(x, k, path, v, base);
    case T_ENUM:
        return set_enum(x, k, path, v, base);
    case T_STRING:
        return set_string(x, k, path, v, base);
    case T_ROUTES:
        return set_routes(x, path, v, base);
    case T_ADDRS:
        return set_addrs(x, k, path, v, base);
    }
    return -EINVAL;
}

/* --- lists of addresses (redis.sentinels) ----------------------------- */

/*
 * The form of one "host:port" or "[ipv6]:port". Unlike upstream servers, a
 * host name is kept as it is: cache/redis.c resolves it at every connection,
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
        return report(x, p, false, "\"%.*s\" %s", (int)(n < SHOWN ? n : SHOWN), s, why);
    }
    char *b = realloc(*buf, *len + n + 2);
    if (!b)
        return no_memory(x);
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
static int set_addrs(struct ctx *x, const struct key *k, const char *path, json_t *v, void *base)
{
    char *list = NULL, **f = str_field(k, base);
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
                rc = bad_type(x, p, e, "a \"host:port\" string");
            } else {
                rc = add_addr(x, path, n, json_string_value(e), strlen(json_string_value(e)), &list, &len);
            }
            if (rc)
                break;
        }
    } else {
        return bad_type(x, path, v, "an array of \"host:port\" strings");
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
static json_t *addrs_value(const char *s)
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

/* Keys that must agree with each other, once every source is in. */
static int check_redis(const struct ctx *x, const struct cfg *c)
{
    char a[32], b[32];
    if (c->redis.wait_replicas > 0 && c->redis.wait_timeout_ms >= c->redis.command_timeout_ms)
        return report(x, "redis.wait_timeout", false,
                      "%s is not shorter than redis.command_timeout (%s): a WAIT that long would count as an "
                      "outage (shorten it, or lengthen redis.command_timeout)",
                      fmt_duration(c->redis.wait_timeout_ms, a, sizeof a),
                      fmt_duration(c->redis.command_timeout_ms, b, sizeof b));
    return 0;
}

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
static size_t score(const char *name, const char *cand, size_t clen)
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

    for (size_t i = 0; i < NKEYS; i++) {
        if (in_route ? !is_route_key(&keys[i]) : !is_top_key(&keys[i]))
            continue;
        const char *c = keys[i].name + (in_route ? strlen(ROUTE_PREFIX) : 0);
        const char *dot = strchr(c, '.');
        for (int pass = 0; pass < 2; pass++) {
            size_t clen = pass == 0 ? strlen(c) : dot ? (size_t)(dot - c) : 0;
            size_t d = clen ? score(name, c, clen) : SIZE_MAX;
            if (d < best_d)
                best_d = d, *best = c, best_len = clen;
        }
    }
    return best_len;
}

/* `elem` is the route element ("routes[0]") when the key sits in one. */
static int unknown_key(const struct ctx *x, const char *path, const char *elem)
{
    const char *name = elem ? path + strlen(elem) + 1 : path, *best = NULL;
    /* "routes[].path" names no top-level key, however close its last part */
    size_t len = strchr(name, '[') ? 0 : suggest(name, elem != NULL, &best);

    if (!len)
        return report(x, path, true, "unknown key");
    return report(x, path, true, "unknown key (did you mean %s%s%.*s?)", elem ? elem : "",
                  elem ? "." : "", (int)len, best);
}

/* --- upstream groups -------------------------------------------------- */

/*
 * "upstreams" is an object of groups by name; a group holds its keys
 * (GROUP_PREFIX) and "servers", an array of server objects (SERVER_PREFIX)
 * or of "host:port" strings. Both are elements like a route, but with
 * defaults of their own, so they have their own walk: the keys of an
 * element kind are those whose name continues its prefix with no "[".
 */
static bool in_elem(const struct key *k, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(k->name, prefix, n) == 0 && !strchr(k->name + n, '[');
}

static const struct key *find_elem_key(const char *prefix, const char *rel)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (in_elem(&keys[i], prefix) && strcmp(keys[i].name + strlen(prefix), rel) == 0)
            return &keys[i];
    return NULL;
}

static bool is_elem_section(const char *prefix, const char *rel)
{
    size_t n = strlen(rel), pl = strlen(prefix);
    for (size_t i = 0; i < NKEYS; i++)
        if (in_elem(&keys[i], prefix) && strncmp(keys[i].name + pl, rel, n) == 0 && keys[i].name[pl + n] == '.')
            return true;
    return false;
}

/* An unknown member of an element, with the nearest of its keys. */
static int unknown_member(const struct ctx *x, const char *prefix, const char *path, const char *rel)
{
    size_t best_d = 1 + strlen(rel) / 5 + 1, best_len = 0, pl = strlen(prefix);
    const char *best = NULL;
    for (size_t i = 0; i < NKEYS; i++) {
        if (!in_elem(&keys[i], prefix))
            continue;
        const char *c = keys[i].name + pl, *dot = strchr(c, '.');
        for (int pass = 0; pass < 2; pass++) {
            size_t clen = pass == 0 ? strlen(c) : dot ? (size_t)(dot - c) : 0;
            size_t d = clen ? score(rel, c, clen) : SIZE_MAX;
            if (d < best_d)
                best_d = d, best = c, best_len = clen;
        }
    }
    if (!best_len)
        return report(x, path, true, "unknown key");
    return report(x, path, true, "unknown key (did you mean %.*s?)", (int)best_len, best);
}

static void free_servers(struct cfg_upstream_server *s, size_t n);

static void free_elem(const char *prefix, void *base)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (!in_elem(&keys[i], prefix))
            continue;
        if (keys[i].store == S_STR)
            free(*str_field(&keys[i], base));
        else if (keys[i].store == S_SERVERS)
            free_servers(((struct cfg_upstream *)base)->servers, ((struct cfg_upstream *)base)->nservers);
    }
}

static void free_servers(struct cfg_upstream_server *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        free_elem(SERVER_PREFIX, &s[i]);
    free(s);
}

static void free_upstreams(struct cfg_upstream *g, size_t n)
{
    for (size_t i = 0; g && i < n; i++) {
        free(g[i].name);
        free_elem(GROUP_PREFIX, &g[i]);
    }
    free(g);
}

static json_t *text_value(const struct ctx *x, const struct key *k, const char *text, int *rc);

static int elem_defaults(struct ctx *x, const char *prefix, void *base)
{
    const char *label = x->label;
    int rc = 0;
    x->label = "built-in default";
    for (size_t i = 0; i < NKEYS && !rc; i++) {
        if (!in_elem(&keys[i], prefix) || !keys[i].def)
            continue;
        json_t *v = text_value(x, &keys[i], keys[i].def, &rc);
        if (!rc)
            rc = set_key(x, &keys[i], keys[i].name, v, base);
        json_decref(v);
    }
    x->label = label;
    return rc;
}

static int nested_dotted(const struct ctx *x, const char *p, const char *name)
{
    const char *dot = strchr(name, '.');
    return report(x, p, true, "unknown key (write it nested, as \"%.*s\": {\"%s\": ...})", (int)(dot - name),
                  name, dot + 1);
}

/* One member of an element; `rel` is its name within it ("hash.on"). */
static int set_elem_member(struct ctx *x, const char *prefix, const char *p, const char *rel, json_t *val,
                           void *base)
{
    const struct key *k = find_elem_key(prefix, rel);
    const char *name;
    json_t *sub;
    int rc = 0;

    if (k)
        return set_key(x, k, p, val, base);
    if (!is_elem_section(prefix, rel))
        return unknown_member(x, prefix, p, rel);
    if (!json_is_object(val))
        return bad_type(x, p, val, "an object");
    json_object_foreach(val, name, sub) {
        char *cp = join(p, name), *crel = cp ? join(rel, name) : NULL;
        rc = !crel ? no_memory(x) : strchr(name, '.') ? nested_dotted(x, cp, name)
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
        return bad_type(x, path, v, what);
    if ((rc = elem_defaults(x, prefix, base)))
        return rc;
    json_object_foreach(v, name, val) {
        char *p = join(path, name);
        rc = !p ? no_memory(x) : strchr(name, '.') ? nested_dotted(x, p, name)
                                                   : set_elem_member(x, prefix, p, name, val, base);
        free(p);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (!in_elem(k, prefix) || !(k->flags & F_REQUIRED))
            continue;
        if (k->store == S_STR ? !*str_field(k, base) : ((struct cfg_upstream *)base)->nservers == 0)
            return report(x, path, false, "%s is required", k->name + strlen(prefix));
    }
    return 0;
}

static int set_server(struct ctx *x, const char *path, json_t *v, struct cfg_upstream_server *s)
{
    if (!json_is_string(v))
        return set_elem(x, SERVER_PREFIX, path, v, s, "a server object or a \"host:port\" string");
    int rc = elem_defaults(x, SERVER_PREFIX, s);
    return rc ? rc : set_key(x, find_elem_key(SERVER_PREFIX, "address"), path, v, s);
}

static int set_servers(struct ctx *x, const char *path, json_t *v, struct cfg_upstream *g)
{
    size_t n = json_array_size(v);
    char ep[160];
    int rc = 0;

    if (!json_is_array(v) || n == 0 || n > 1000)
        return bad_type(x, path, v, "an array of 1 to 1000 servers");
    struct cfg_upstream_server *s = calloc(n, sizeof *s);
    if (!s)
        return no_memory(x);
    for (size_t i = 0; i < n && !rc; i++) {
        snprintf(ep, sizeof ep, "%s[%zu]", path, i);
        rc = set_server(x, ep, json_array_get(v, i), &s[i]);
        for (size_t j = 0; j < i && !rc; j++)
            if (strcmp(s[j].address, s[i].address) == 0)
                rc = report(x, ep, false, "%s is listed twice (as servers[%zu] too)", s[i].address, j);
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
        return report(x, path, false, "needs a server that is not a backup");
    if (g->hash_on != CFG_HASH_CLIENT && !g->hash_name)
        return report(x, path, false, "hash.name is required when hash.on is \"%s\"", hash_ons[g->hash_on]);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct cfg_upstream *)a)->name, ((const struct cfg_upstream *)b)->name);
}

/* Groups are kept sorted by name: every process that loads the same JSON
 * gets them in the same order, whatever order the object iterates in. */
static int set_upstreams(struct ctx *x, const char *path, json_t *v, struct cfg *c)
{
    const char *name, *norm;
    json_t *gv;
    size_t i = 0, n = json_object_size(v);
    int rc = 0;

    if (!json_is_object(v))
        return bad_type(x, path, v, "an object of upstream groups by name");
    struct cfg_upstream *g = n ? calloc(n, sizeof *g) : NULL;
    if (n && !g)
        return no_memory(x);
    json_object_foreach(v, name, gv) {
        char *gp = join(path, name);
        const char *why = check_group_name(name, &norm);
        if (!gp)
            rc = no_memory(x);
        else if (why)
            rc = report(x, gp, true, "\"%s\" is not a group name: it %s", name, why);
        else if (!(g[i].name = strdup(name)))
            rc = no_memory(x);
        else if (!(rc = set_elem(x, GROUP_PREFIX, gp, gv, &g[i], "an upstream group object")))
            rc = check_upstream_group(x, gp, &g[i]);
        free(gp);
        i++;
        if (rc)
            break;
    }
    if (rc) {
        free_upstreams(g, n);
        return rc;
    }
    if (n)
        qsort(g, n, sizeof *g, by_name);
    free_upstreams(c->upstreams, c->nupstreams);
    c->upstreams = g;
    c->nupstreams = n;
    return 0;
}

const struct cfg_upstream *cfg_find_upstream(const struct cfg *c, const char *name)
{
    for (size_t i = 0; name && i < c->nupstreams; i++)
        if (strcmp(c->upstreams[i].name, name) == 0)
            return &c->upstreams[i];
    return NULL;
}

/* Every proxy route names a group that exists: checked once all sources
 * are in, since routes and upstreams may come from different ones. */
static int check_upstream_refs(const struct ctx *x, const struct cfg *c)
{
    char path[48], list[200] = "";
    size_t used = 0;
    for (size_t i = 0; i < c->nupstreams && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", c->upstreams[i].name);
    for (size_t i = 0; i < c->nroutes; i++) {
        const char *u = c->routes[i].upstream;
        if (!u || cfg_find_upstream(c, u))
            continue;
        snprintf(path, sizeof path, "routes[%zu].upstream", i);
        return report(x, path, false, "\"%s\" names no upstream group (%s%s)", u,
                      c->nupstreams ? "defined: " : "none is defined in \"upstreams\"", list);
    }
    return 0;
}

/* --- walking a JSON tree ---------------------------------------------- */

static const struct key *find_key(const char *path)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (is_top_key(&keys[i]) && strcmp(keys[i].name, path) == 0)
            return &keys[i];
    return NULL;
}

/* "server" is a section: a dotted prefix of top-level keys. */
static bool is_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < NKEYS; i++)
        if (is_top_key(&keys[i]) && strncmp(keys[i].name, path, n) == 0 && keys[i].name[n] == '.')
            return true;
    return false;
}

static int walk(struct ctx *x, json_t *obj, const char *prefix, struct cfg *c);

static int walk_member(struct ctx *x, const char *path, const char *name, json_t *v, struct cfg *c)
{
    /* A literal "server.port" key must not pass for the nested one. */
    bool plain = *name && !strpbrk(name, ".[]");
    const struct key *k = plain ? find_key(path) : NULL;

    if (k)
        return set_key(x, k, path, v, c);
    if (plain && is_section(path))
        return json_is_object(v) ? walk(x, v, path, c) : bad_type(x, path, v, "an object");
    if (*name && find_key(path)) {
        const char *dot = strchr(name, '.');
        return report(x, path, true, "unknown key (write it nested, as \"%.*s\": {\"%s\": ...})",
                      (int)(dot - name), name, dot + 1);
    }
    return unknown_key(x, path, NULL);
}

static int walk(struct ctx *x, json_t *obj, const char *prefix, struct cfg *c)
{
    const char *name;
    json_t *v;

    json_object_foreach(obj, name, v) {
        char *path = join(prefix, name);
        int rc = path ? walk_member(x, path, name, v, c) : no_memory(x);
        free(path);
        if (rc)
            return rc;
    }
    return 0;
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
        char *child = key ? join(path, key) : NULL;
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

static void free_notes(struct ctx *x);

static void ctx_free(struct ctx *x)
{
    free_notes(x);
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
static int parse_text(struct ctx *x, const char *name, const char *buf, size_t len, json_t **out)
{
    json_error_t e;
    char shown[SHOWN];
    json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
    struct origin *o = &x->files[x->nfiles];

    if (!j)
        return fail(x, -EINVAL, "%s:%d:%d: %s", name, e.line, e.column, e.text);
    if (!(o->name = strdup(name)) || scan_positions(buf, len, o)) {
        free(o->name);
        json_decref(j);
        return no_memory(x);
    }
    x->nfiles++;
    if (!json_is_object(j)) {
        const struct pos *p = o->npos ? &o->pos[0] : NULL;
        fail(x, -EINVAL, "%s:%d:%d: the top level must be an object, not %s", name, p ? p->vline : 1,
             p ? p->vcol : 1, show(j, shown));
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
        return fail(x, rc == -ENOENT || rc == -ENOMEM ? rc : -EINVAL, "%s: cannot read: %s", name,
                    strerror(-rc));
    rc = parse_text(x, name, buf, len, out);
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
        return no_memory(x);
    if (asprintf(&over, "%s/%s.json", dir, env) < 0) {
        free(base);
        return no_memory(x);
    }
    rc = load_file(x, base, false, tree);
    if (!rc)
        rc = load_file(x, over, false, &t2);
    if (!rc && t2 && *tree && merge(*tree, t2))
        rc = no_memory(x);
    else if (!rc && t2 && !*tree)
        *tree = json_incref(t2);
    json_decref(t2);
    free(base);
    free(over);
    return rc;
}

static int read_sources(struct ctx *x, const struct cfg_sources *src, const char *env, json_t **tree)
{
    int rc = src->file       ? load_file(x, src->file, true, tree)
             : src->no_files ? 0
                             : read_dir(x, src->config_dir ? src->config_dir : "config", env, tree);
    if (!rc && !*tree && !(*tree = json_object()))
        rc = no_memory(x);
    return rc;
}

/* --- values given as text: defaults, environment, command line --------- */

static json_t *text_value(const struct ctx *x, const struct key *k, const char *text, int *rc)
{
    json_error_t e;
    char *end;
    json_t *v;

    *rc = 0;
    if (k->type == T_BOOL && (strcmp(text, "true") == 0 || strcmp(text, "false") == 0))
        return json_boolean(text[0] == 't');
    if (k->type == T_ROUTES || k->type == T_UPSTREAMS) {
        if (!(v = json_loads(text, JSON_REJECT_DUPLICATES, &e)))
            *rc = report(x, k->name, false, "invalid JSON at column %d: %s", e.column, e.text);
        return v;
    }
    errno = 0;
    long long n = k->type == T_INT ? strtoll(text, &end, 10) : 0;
    /* Only a plain decimal integer is one: "3.0", " 3" and "+3" stay strings. */
    if (k->type == T_INT && (isdigit((unsigned char)*text) || *text == '-') && end != text && !*end &&
        !errno)
        v = json_integer(n);
    else
        v = json_string(text);
    if (!v)
        *rc = no_memory(x);
    return v;
}

static int set_text(struct ctx *x, const struct key *k, const char *text, struct cfg *c)
{
    int rc;
    json_t *v = text_value(x, k, text, &rc);

    if (rc)
        return rc;
    x->raw = k->type == T_ROUTES || k->type == T_UPSTREAMS ? NULL : text;
    rc = set_key(x, k, k->name, v, c);
    x->raw = NULL;
    json_decref(v);
    return rc;
}

static int set_defaults(struct ctx *x, struct cfg *c)
{
    int rc = 0;
    x->label = "built-in default";
    for (size_t i = 0; i < NKEYS && !rc; i++)
        if (is_top_key(&keys[i]) && keys[i].def)
            rc = set_text(x, &keys[i], keys[i].def, c);
    x->label = NULL;
    return rc;
}

/* An empty variable counts as unset, as shells and compose files leave them. */
static int apply_environ(struct ctx *x, struct cfg *c)
{
    char label[64];
    int rc = 0;

    for (size_t i = 0; i < NKEYS && !rc; i++) {
        const char *s = keys[i].env ? getenv(keys[i].env) : NULL;
        if (!s || !*s)
            continue;
        snprintf(label, sizeof label, "environment %s", keys[i].env);
        x->label = label;
        rc = set_text(x, &keys[i], s, c);
    }
    x->label = NULL;
    return rc;
}

static int section_given(const struct ctx *x, const char *name)
{
    char list[256] = "";
    size_t used = 0, n = strlen(name);

    for (size_t i = 0; i < NKEYS && used < sizeof list; i++)
        if (is_top_key(&keys[i]) && strncmp(keys[i].name, name, n) == 0 && keys[i].name[n] == '.')
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "",
                                     keys[i].name);
    return report(x, name, false, "a section, not a key; set one of %s", list);
}

static int apply_override(struct ctx *x, const char *o, struct cfg *c)
{
    const char *eq = strchr(o, '=');

    if (!eq || eq == o)
        return report(x, "", false, "\"%s\" is not of the form key=value", o);
    char *name = strndup(o, (size_t)(eq - o));
    if (!name)
        return no_memory(x);
    const struct key *k = find_key(name);
    int rc = k ? set_text(x, k, eq + 1, c) : is_section(name) ? section_given(x, name)
                                                               : unknown_key(x, name, NULL);
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

/* --- static roots ----------------------------------------------------- */

/*
 * 0 when `user` may list and enter dir, else -errno: a child takes the
 * identity the master gives workers (uv_spawn: no supplementary groups,
 * the group, then the user) and asks. Only async-signal-safe calls after
 * fork, as a reload runs this in the master, which has threads.
 */
static int access_as(const char *dir, const char *user, const char *group)
{
    struct passwd *pw = getpwnam(user);
    struct group *gr = group ? getgrnam(group) : NULL;
    if (!pw)
        return -ENOENT;
    uid_t uid = pw->pw_uid;
    gid_t gid = gr ? gr->gr_gid : pw->pw_gid;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0)
        _exit(setgroups(0, NULL) || setgid(gid) || setuid(uid) || access(dir, R_OK | X_OK) ? errno : 0);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -errno;
    return WIFEXITED(st) ? -WEXITSTATUS(st) : -EIO;
}

/* Why the static handler could not serve dir, or NULL. */
static const char *root_problem(const struct cfg *c, const char *dir, char *buf, size_t len)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        return errno == ENOENT ? "does not exist" : strerror(errno);
    if (!S_ISDIR(st.st_mode))
        return "is not a folder";
    bool as_user = c->user && geteuid() == 0;
    int rc = as_user ? access_as(dir, c->user, c->group) : access(dir, R_OK | X_OK) < 0 ? -errno : 0;
    if (!rc)
        return NULL;
    if (as_user)
        snprintf(buf, len, "is not readable by user %s (the workers' user): %s", c->user, strerror(-rc));
    else
        snprintf(buf, len, "is not readable: %s", strerror(-rc));
    return buf;
}

/* Every static root is a folder the workers can read: a worker that
 * cannot open its root never starts, so such a config is refused here. */
static int check_roots(struct ctx *x, const struct cfg *c)
{
    char path[48], why[200], shown[SHOWN];
    for (size_t i = 0; i < c->nroutes; i++) {
        const char *root = c->routes[i].root, *problem = root ? root_problem(c, root, why, sizeof why) : NULL;
        if (!problem)
            continue;
        snprintf(path, sizeof path, "routes[%zu].root", i);
        const struct note *n = find_note(x, path);
        json_t *v = json_string(n ? n->given : root);
        const char *given = v ? show(v, shown) : root;
        x->label = n ? n->label : NULL;
        if (n && strcmp(n->given, root) != 0)
            report(x, path, false, "%s (%s) %s", given, root, problem);
        else
            report(x, path, false, "%s %s", given, problem);
        x->label = NULL;
        json_decref(v);
        return -EINVAL;
    }
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
        return fail(x, -EINVAL, "%s: \"%s\" is not an environment name (use letters, digits, \"-\" and \"_\")",
                    label, e);
    *out = strdup(e);
    return *out ? 0 : no_memory(x);
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
        rc = read_sources(&x, src, c.env, &tree);
    if (!rc)
        rc = walk(&x, tree, "", &c);
    if (!rc && src->use_environ)
        rc = apply_environ(&x, &c);
    if (!rc)
        rc = apply_overrides(&x, src->overrides, &c);
    if (!rc)
        rc = check_upstream_refs(&x, &c);
    if (!rc)
        rc = check_redis(&x, &c);
    if (!rc && src->check_fs)
        rc = check_roots(&x, &c);
    json_decref(tree);
    ctx_free(&x);
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
        return bad_type(x, "env", v, "a string");
    if (!(c->env = strdup(json_string_value(v))))
        return no_memory(x);
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
    rc = text ? set_defaults(&x, &c) : fail(&x, -EINVAL, "%s: no text", name);
    if (!rc)
        rc = parse_text(&x, name, text, strlen(text), &tree);
    if (!rc)
        rc = take_env(&x, tree, &c);
    if (!rc)
        rc = walk(&x, tree, "", &c);
    if (!rc)
        rc = check_upstream_refs(&x, &c);
    if (!rc)
        rc = check_redis(&x, &c);
    json_decref(tree);
    ctx_free(&x);
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
    for (size_t i = 0; i < NKEYS; i++)
        if (is_top_key(&keys[i]) && keys[i].store == S_STR)
            free(*str_field(&keys[i], c));
    free_routes(c->routes, c->nroutes);
    free_upstreams(c->upstreams, c->nupstreams);
    free(c->env);
    memset(c, 0, sizeof *c);
}

/* --- output ----------------------------------------------------------- */

static json_t *routes_value(const struct cfg *c);
static json_t *upstreams_value(const struct cfg *c);
static json_t *servers_value(const struct cfg_upstream *g);

static int64_t nvalues(const struct key *k)
{
    int64_t n = 0;
    while (k->values[n])
        n++;
    return n;
}

/* Sets *out to NULL, with 0, for a string that is not set. */
static int key_value(const struct key *k, const void *base, json_t **out)
{
    char buf[32];
    int64_t n = k->store == S_INT || k->store == S_I64 ? load_num(k, base) : 0;
    const char *s = k->store == S_STR ? *str_field(k, base) : NULL;

    if (k->store == S_STR && !s) {
        *out = NULL;
        return 0;
    }
    if (k->type == T_ENUM && k->store == S_INT)
        s = n >= 0 && n < nvalues(k) ? k->values[n] : "?";
    switch (k->type) {
    case T_INT:
        *out = json_integer(n);
        break;
    case T_DURATION:
        *out = json_string(fmt_duration(n, buf, sizeof buf));
        break;
    case T_SIZE:
        fmt_size(n, buf, sizeof buf);
        *out = isdigit((unsigned char)buf[strlen(buf) - 1]) ? json_integer(n) : json_string(buf);
        break;
    case T_ENUM:
    case T_STRING:
        *out = json_string(s);
        break;
    case T_ROUTES:
        *out = routes_value(base);
        break;
    case T_BOOL:
        *out = json_boolean(n);
        break;
    case T_UPSTREAMS:
        *out = upstreams_value(base);
        break;
    case T_SERVERS:
        *out = servers_value(base);
        break;
    case T_ADDRS:
        *out = addrs_value(s);
        break;
    }
    return *out ? 0 : -ENOMEM;
}

static int put_key(json_t *root, const struct key *k, const char *name, const void *base);

/* A numeric route key at 0 is unset (cache.ttl) and left out. */
static json_t *route_value(const struct cfg_route *r)
{
    json_t *o = json_object();

    for (size_t i = 0; o && i < NKEYS; i++) {
        if (!is_route_key(&keys[i]) || (keys[i].store == S_I64 && load_num(&keys[i], r) == 0))
            continue;
        if (put_key(o, &keys[i], keys[i].name + strlen(ROUTE_PREFIX), r)) {
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
    for (size_t i = 0; o && i < NKEYS; i++) {
        if (in_elem(&keys[i], prefix) && put_key(o, &keys[i], keys[i].name + strlen(prefix), base)) {
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
static int put_key(json_t *root, const struct key *k, const char *name, const void *base)
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
    if (key_value(k, base, &v))
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
    for (size_t i = 0; i < NKEYS && !rc; i++)
        if (is_top_key(&keys[i]))
            rc = put_key(root, &keys[i], keys[i].name, c);
    if (!rc)
        s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
}

/* --- comparing -------------------------------------------------------- */

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static bool key_equal(const struct key *k, const void *a, const void *b);

static bool routes_equal(const struct cfg *a, const struct cfg *b)
{
    if (a->nroutes != b->nroutes)
        return false;
    for (size_t r = 0; r < a->nroutes; r++)
        for (size_t i = 0; i < NKEYS; i++)
            if (is_route_key(&keys[i]) && !key_equal(&keys[i], &a->routes[r], &b->routes[r]))
                return false;
    return true;
}

static bool elem_equal(const char *prefix, const void *a, const void *b)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (in_elem(&keys[i], prefix) && !key_equal(&keys[i], a, b))
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

static bool key_equal(const struct key *k, const void *a, const void *b)
{
    switch (k->store) {
    case S_UPSTREAMS:
        return upstreams_equal(a, b);
    case S_SERVERS:
        return servers_equal(a, b);
    case S_INT:
    case S_I64:
        return load_num(k, a) == load_num(k, b);
    case S_STR:
        return str_eq(*str_field(k, a), *str_field(k, b));
    case S_ROUTES:
        return routes_equal(a, b);
    }
    return false;
}

bool cfg_equal(const struct cfg *a, const struct cfg *b)
{
    if (!str_eq(a->env, b->env))
        return false;
    for (size_t i = 0; i < NKEYS; i++)
        if (is_top_key(&keys[i]) && !key_equal(&keys[i], a, b))
            return false;
    return true;
}

int cfg_check_reload(const struct cfg *cur, const struct cfg *next, char *err, size_t errlen)
{
    struct ctx x = {.err = err, .errlen = errlen};
    json_t *va = NULL, *vb = NULL;
    char sa[SHOWN], sb[SHOWN];

    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        if (!is_top_key(k) || (k->flags & F_RELOAD) || key_equal(k, cur, next))
            continue;
        if (key_value(k, cur, &va) || key_value(k, next, &vb)) {
            json_decref(va);
            return no_memory(&x);
        }
        report(&x, k->name, false, "changed from %s to %s, which needs a restart",
               va ? show(va, sa) : "(unset)", vb ? show(vb, sb) : "(unset)");
        json_decref(va);
        json_decref(vb);
        return -EINVAL;
    }
    return 0;
}

/* Copies one scalar key's value from `from` into `to`; 0, or -ENOMEM. */
static int copy_key(const struct key *k, const struct cfg *from, struct cfg *to)
{
    if (k->store == S_INT || k->store == S_I64) {
        store_num(k, to, load_num(k, from));
        return 0;
    }
    if (k->store != S_STR)
        return 0;
    char **dst = str_field(k, to), *src = *str_field(k, from);
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
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        json_t *va = NULL, *vb = NULL;
        if (!is_top_key(k) || (k->flags & F_RELOAD) || key_equal(k, cur, next))
            continue;
        if (key_value(k, cur, &va) == 0 && key_value(k, next, &vb) == 0 && used < len) {
            int n = snprintf(msg + used, len - used, "%s%s: left as it was (%s; the new %s needs a restart)",
                             changed ? "; " : "", k->name, va ? show(va, sa) : "(unset)",
                             vb ? show(vb, sb) : "(unset)");
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

/* --- reference -------------------------------------------------------- */

static const char *const type_names[] = {
    [T_INT] = "integer", [T_DURATION] = "duration", [T_SIZE] = "size",
    [T_ENUM] = "enum",   [T_STRING] = "string",     [T_ROUTES] = "array",
    [T_BOOL] = "boolean", [T_UPSTREAMS] = "object",  [T_SERVERS] = "array",
    [T_ADDRS] = "array",
};

static const char *describe_bounds(const struct key *k, char *buf, size_t len)
{
    char lo[32], hi[32];
    size_t used = 0;

    if (k->bounds)
        return k->bounds;
    if (k->type != T_ENUM) {
        snprintf(buf, len, "%s..%s", fmt_num(k, k->min, lo, sizeof lo), fmt_num(k, k->max, hi, sizeof hi));
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
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        snprintf(def, sizeof def, k->def ? "`%s`" : "%s",
                 k->def ? k->def : (k->flags & F_REQUIRED) ? "required" : "none");
        snprintf(env, sizeof env, k->env ? "`%s`" : "%s", k->env ? k->env : "");
        const char *type = (k->flags & F_PATH) ? "path" : type_names[k->type];
        fprintf(out, "| `%s` | %s | %s | %s | %s | %s | %s |\n", k->name, type, def,
                describe_bounds(k, bounds, sizeof bounds), (k->flags & F_RELOAD) ? "yes" : "no", env,
                k->desc);
    }
}
