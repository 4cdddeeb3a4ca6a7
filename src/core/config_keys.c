/*
 * The key table: every key of the config with its type, bounds, default,
 * whether a reload may change it, and its environment variable. Defaults,
 * validation, the environment, cfg_to_json, cfg_describe, equality and the
 * reload check all walk it, together with the tables modules register
 * (core/config_module.h), and the route handlers modules register.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "core/config_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the key table ---------------------------------------------------- */

#define TOP(f) offsetof(struct cfg, f)
#define ROUTE(f) offsetof(struct cfg_route, f)
/* Keys of an upstream group and of one of its servers (see "upstreams"). */
#define GROUP(f) offsetof(struct cfg_upstream, f)
#define SERVER(f) offsetof(struct cfg_upstream_server, f)

/* The schedule is stored through an int pointer like the other enums. */
_Static_assert(sizeof(enum cfg_schedule) == sizeof(int), "enum cfg_schedule must be int-sized");

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL}; /* enum log_level order */
static const char *const schedules[] = {"reuseport", "shared", "round_robin", "least_loaded",
                                          NULL}; /* enum cfg_schedule order */
/* Values of routes[].handler: the registered handlers' names, in order. */
#define MAX_HANDLERS 32
static const char *handler_names[MAX_HANDLERS + 1];
static const struct cfg_handler *handlers[MAX_HANDLERS];
static size_t nhandlers;
static const char *const algorithms[] = {"round_robin", "least_conn", "random", "p2c", "hash",
                                         NULL}; /* enum cfg_lb order */
const char *const cfg_hash_ons[] = {"client", "header", "cookie", NULL}; /* enum cfg_hash_on order */
static const char *const apps[] = {"shop", "none", NULL};                   /* enum cfg_app order */

static const struct cfg_key keys[] = {
    {.name = "server.host", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(host), .check = cfg_check_host,
     .def = "127.0.0.1", .env = "HOST", .bounds = "IPv4 or IPv6 literal, or localhost",
     .desc = "Address to listen on; localhost means 127.0.0.1."},
    {.name = "server.port", .type = CFG_T_INT, .store = CFG_S_INT, .off = TOP(port), .min = 1, .max = 65535,
     .def = "3000", .env = "PORT", .desc = "TCP port to listen on."},
    {.name = "server.backlog", .type = CFG_T_INT, .store = CFG_S_INT, .off = TOP(backlog), .min = 1,
     .max = 65535, .def = "511", .desc = "Queue length of connections not yet accepted."},
    {.name = "workers", .type = CFG_T_INT, .store = CFG_S_INT, .off = TOP(workers), .min = 0,
     .max = CFG_MAX_WORKERS, .def = "0", .flags = CFG_RELOAD, .env = "WORKERS",
     .desc = "Worker processes; 0 means one per available CPU (at most 64)."},
    {.name = "schedule", .type = CFG_T_ENUM, .store = CFG_S_INT, .off = TOP(schedule), .values = schedules,
     .def = "reuseport",
     .desc = "How connections reach workers: a SO_REUSEPORT socket each, one shared socket, or the "
             "master accepting and handing each to the next worker (round_robin) or to the one with "
             "the fewest requests in flight (least_loaded)."},
    {.name = "min_uptime", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = TOP(min_uptime_ms), .min = 0,
     .max = HOUR, .def = "1s", .flags = CFG_RELOAD,
     .desc = "A worker that exits sooner than this after starting counts as crashing."},
    {.name = "shutdown_timeout", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = TOP(shutdown_timeout_ms),
     .min = 0, .max = HOUR, .def = "10s", .flags = CFG_RELOAD,
     .desc = "How long a graceful stop waits for requests in flight."},
    {.name = "ready_timeout", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = TOP(ready_timeout_ms),
     .min = 100 * MS, .max = HOUR, .def = "10s", .flags = CFG_RELOAD,
     .desc = "A worker started by a reload or recycle must report ready within this, or the reload stops."},
    {.name = "max_memory", .type = CFG_T_SIZE, .store = CFG_S_I64, .off = TOP(max_memory), .min = 0,
     .max = 1024 * GIB, .def = "512M", .flags = CFG_RELOAD, .env = "MAX_MEMORY",
     .desc = "RSS above which a worker is replaced (new one first, then the old drains); 0 turns it off."},
    {.name = "memory_check_interval", .type = CFG_T_DURATION, .store = CFG_S_I64,
     .off = TOP(memory_check_interval_ms), .min = SEC, .max = HOUR, .def = "5s", .flags = CFG_RELOAD,
     .desc = "How often each worker compares its RSS with max_memory; the worker checks its limits once a "
             "second, so this is rounded up to whole seconds."},
    {.name = "max_requests", .type = CFG_T_INT, .store = CFG_S_I64, .off = TOP(max_requests), .min = 0,
     .max = INT64_MAX / 2, .def = "0", .flags = CFG_RELOAD,
     .desc = "Requests after which a worker is replaced; 0 means never."},
    {.name = "max_errors", .type = CFG_T_INT, .store = CFG_S_INT, .off = TOP(max_errors), .min = 0, .max = 1000000,
     .def = "10", .flags = CFG_RELOAD,
     .desc = "Internal errors (500 answers) within error_window after which a worker is replaced; 0 turns it off."},
    {.name = "error_window", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = TOP(error_window_ms), .min = SEC,
     .max = HOUR, .def = "60s", .flags = CFG_RELOAD,
     .desc = "The window max_errors counts in; 500s are counted by the worker's once-a-second check, so "
             "their times are known to the second."},
    {.name = "max_connections", .type = CFG_T_INT, .store = CFG_S_INT, .off = TOP(max_connections), .min = 0,
     .max = 10000000, .def = "0", .flags = CFG_RELOAD,
     .desc = "Open connections per worker above which round_robin and least_loaded skip it; 0 means no limit."},
    {.name = "user", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(user), .check = cfg_check_user,
     .bounds = "an existing user", .desc = "Workers run as this user (the master binds first, as root)."},
    {.name = "group", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(group), .check = cfg_check_group,
     .bounds = "an existing group", .desc = "Workers run with this group; default: the user's own."},
    {.name = "control.socket", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(control_socket),
     .check = cfg_check_file_path, .flags = CFG_PATH, .bounds = "a file path",
     .desc = "Unix socket `cohort status`, `reload` and `stop` talk to; default "
             "$XDG_RUNTIME_DIR (or /tmp)/cohort-<port>.sock."},
    {.name = "control.pid_file", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(pid_file),
     .check = cfg_check_file_path, .flags = CFG_PATH, .bounds = "a file path",
     .desc = "Where the master writes its pid; default $XDG_RUNTIME_DIR (or /tmp)/cohort-<port>.pid."},
    {.name = "limits.max_body", .type = CFG_T_SIZE, .store = CFG_S_I64, .off = TOP(limits.max_body), .min = 0,
     .max = GIB, .def = "1M", .flags = CFG_RELOAD, .desc = "Largest request body."},
    {.name = "limits.max_uri", .type = CFG_T_SIZE, .store = CFG_S_I64, .off = TOP(limits.max_uri), .min = 64,
     .max = MIB, .def = "8K", .flags = CFG_RELOAD, .desc = "Longest request target."},
    {.name = "limits.max_header_size", .type = CFG_T_SIZE, .store = CFG_S_I64,
     .off = TOP(limits.max_header_size), .min = KIB, .max = MIB, .def = "16K", .flags = CFG_RELOAD,
     .desc = "Largest request head: request line and header fields together."},
    {.name = "limits.max_headers", .type = CFG_T_INT, .store = CFG_S_INT, .off = TOP(limits.max_headers),
     .min = 1, .max = 10000, .def = "100", .flags = CFG_RELOAD,
     .desc = "Most header fields in one request."},
    {.name = "timeouts.header", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = TOP(timeouts.header_ms),
     .min = MS, .max = HOUR, .def = "10s", .flags = CFG_RELOAD,
     .desc = "The whole request head must arrive within this."},
    {.name = "timeouts.keepalive", .type = CFG_T_DURATION, .store = CFG_S_I64,
     .off = TOP(timeouts.keepalive_ms), .min = 0, .max = HOUR, .def = "5s", .flags = CFG_RELOAD,
     .desc = "How long an idle connection waits for its next request; 0 turns keep-alive off."},
    {.name = "timeouts.body", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = TOP(timeouts.body_ms),
     .min = MS, .max = HOUR, .def = "10s", .flags = CFG_RELOAD,
     .desc = "Longest pause while reading a request body."},
    {.name = "timeouts.send", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = TOP(timeouts.send_ms),
     .min = MS, .max = HOUR, .def = "30s", .flags = CFG_RELOAD,
     .desc = "Longest pause while the client does not read the response."},
    {.name = "log.access", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(log.access), .check = cfg_check_log_target,
     .def = "off", .flags = CFG_RELOAD | CFG_PATH, .env = "LOG_ACCESS", .bounds = "off, stderr, or a file path",
     .desc = "Access log: one JSON line per request, buffered per worker; a file is appended to and reopened on SIGUSR1."},
    {.name = "log.error", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(log.error), .check = cfg_check_log_target,
     .def = "stderr", .flags = CFG_PATH, .bounds = "stderr, or a file path",
     .desc = "Error log: JSON lines of every process; a file is appended to and reopened on SIGUSR1."},
    {.name = "log.level", .type = CFG_T_ENUM, .store = CFG_S_INT, .off = TOP(log.level), .values = log_levels,
     .def = "info", .flags = CFG_RELOAD, .desc = "Least severe level written to the error log."},
    {.name = "log.stats_interval", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = TOP(log.stats_interval_ms),
     .min = 0, .max = 24 * HOUR, .def = "60s",
     .desc = "How often the master logs a summary of the cluster (requests, errors, latency, RSS); 0s: never."},
    {.name = "admin.host", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(admin.host), .check = cfg_check_host,
     .def = "127.0.0.1", .bounds = "IPv4 or IPv6 literal, or localhost",
     .desc = "Address of the admin listener."},
    {.name = "admin.port", .type = CFG_T_INT, .store = CFG_S_INT, .off = TOP(admin.port), .min = 0, .max = 65535,
     .def = "0",
     .desc = "A separate listener for /metrics, /stats and /status (which then leave the main one); 0: none."},
    {.name = "store.path", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(store.path), .check = cfg_check_root,
     .def = "data/shop.db", .flags = CFG_RELOAD | CFG_PATH, .bounds = "a file path",
     .desc = "SQLite catalog (and carts and counters without Redis); folders created as needed."},
    {.name = "redis.url", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(redis.url), .check = cfg_check_redis_url,
     .flags = CFG_RELOAD, .env = "REDIS_URL", .bounds = "redis://[:password@]host[:port][/db], or empty",
     .desc = "Redis for the cache, carts and request counters; none (and no redis.sentinels): SQLite and a "
             "per-worker cache."},
    {.name = "redis.command_timeout", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = TOP(redis.command_timeout_ms),
     .min = MS, .max = 60 * SEC, .def = "1s", .flags = CFG_RELOAD,
     .desc = "A Redis reply later than this counts as an outage: the connection is dropped and made again."},
    {.name = "redis.sentinels", .type = CFG_T_ADDRS, .store = CFG_S_STR, .off = TOP(redis.sentinels), .flags = CFG_RELOAD,
     .env = "REDIS_SENTINELS", .bounds = "array of \"host:port\" (or one comma-separated string)",
     .desc = "Redis Sentinels to ask for the primary (docs/scaling.md); then redis.url gives only the "
             "password and database."},
    {.name = "redis.master_name", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(redis.master_name),
     .check = cfg_check_token, .def = "mymaster", .flags = CFG_RELOAD, .bounds = "printable, no spaces",
     .desc = "The name the Sentinels monitor the primary under."},
    {.name = "redis.wait_replicas", .type = CFG_T_INT, .store = CFG_S_INT, .off = TOP(redis.wait_replicas), .min = 0,
     .max = 100, .def = "0", .flags = CFG_RELOAD,
     .desc = "A cart change is answered only once this many replicas have it (WAIT), else 503; 0: no wait."},
    {.name = "redis.wait_timeout", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = TOP(redis.wait_timeout_ms),
     .min = MS, .max = 60 * SEC, .def = "500ms", .flags = CFG_RELOAD,
     .desc = "How long a cart change waits for the replicas; shorter than redis.command_timeout."},
    {.name = "cache.local_size", .type = CFG_T_SIZE, .store = CFG_S_I64, .off = TOP(cache.local_size), .min = 0,
     .max = GIB, .def = "16M", .flags = CFG_RELOAD,
     .desc = "Bytes of each worker's in-process cache: the cache without Redis, a near cache in front of it "
             "with Redis; 0 turns it off."},
    {.name = "admin_token", .type = CFG_T_STRING, .store = CFG_S_STR, .off = TOP(admin_token), .check = cfg_check_token,
     .flags = CFG_RELOAD, .bounds = "printable, no spaces",
     .desc = "When set, PUT /api/products/:id needs `Authorization: Bearer <token>`."},
    {.name = "app", .type = CFG_T_ENUM, .store = CFG_S_INT, .off = TOP(app), .values = apps, .def = "shop",
     .flags = CFG_RELOAD,
     .desc = "Built-in routes beside the config's: shop adds /, /health, the shop API (docs/shop.md) and "
             "/api/broadcast; none serves the config's routes only (what `cohort balance` uses)."},
    {.name = "upstreams", .type = CFG_T_UPSTREAMS, .store = CFG_S_UPSTREAMS, .def = "{}", .flags = CFG_RELOAD,
     .bounds = "object of groups by name", .desc = "Upstream groups that proxy routes forward to (docs/proxy.md)."},
    {.name = GROUP_PREFIX "servers", .type = CFG_T_SERVERS, .store = CFG_S_SERVERS, .off = GROUP(servers),
     .flags = CFG_RELOAD | CFG_REQUIRED, .bounds = "array of server objects, or of \"host:port\" strings",
     .desc = "The group's servers."},
    {.name = SERVER_PREFIX "address", .type = CFG_T_STRING, .store = CFG_S_STR, .off = SERVER(address),
     .check = cfg_check_address, .flags = CFG_RELOAD | CFG_REQUIRED, .bounds = "host:port or [IPv6]:port",
     .desc = "Where the server listens; a host name is resolved when the config is loaded (start, reload)."},
    {.name = SERVER_PREFIX "weight", .type = CFG_T_INT, .store = CFG_S_INT, .off = SERVER(weight), .min = 1,
     .max = 1000, .def = "1", .flags = CFG_RELOAD, .desc = "Share of the requests, relative to the others."},
    {.name = SERVER_PREFIX "max_conns", .type = CFG_T_INT, .store = CFG_S_INT, .off = SERVER(max_conns), .min = 0,
     .max = 1000000, .def = "0", .flags = CFG_RELOAD,
     .desc = "Requests in flight to it per worker above which it is skipped; 0: no limit."},
    {.name = SERVER_PREFIX "backup", .type = CFG_T_BOOL, .store = CFG_S_INT, .off = SERVER(backup), .def = "false",
     .flags = CFG_RELOAD, .bounds = "true or false",
     .desc = "Used only when no other server of the group can take the request."},
    {.name = GROUP_PREFIX "algorithm", .type = CFG_T_ENUM, .store = CFG_S_INT, .off = GROUP(algorithm),
     .values = algorithms, .def = "round_robin", .flags = CFG_RELOAD,
     .desc = "How a server is picked: smooth weighted round robin, fewest requests in flight, weighted "
             "random, the better of two random picks (p2c), or a consistent hash (hash.on)."},
    {.name = GROUP_PREFIX "hash.on", .type = CFG_T_ENUM, .store = CFG_S_INT, .off = GROUP(hash_on), .values = cfg_hash_ons,
     .def = "client", .flags = CFG_RELOAD,
     .desc = "What the hash algorithm hashes: the client's address, a request header or a cookie (hash.name)."},
    {.name = GROUP_PREFIX "hash.name", .type = CFG_T_STRING, .store = CFG_S_STR, .off = GROUP(hash_name),
     .check = cfg_check_field_name, .flags = CFG_RELOAD, .bounds = "a header or cookie name",
     .desc = "The header or cookie hashed; required when hash.on is header or cookie."},
    {.name = GROUP_PREFIX "health.path", .type = CFG_T_STRING, .store = CFG_S_STR, .off = GROUP(health.path),
     .check = cfg_check_health_path, .flags = CFG_RELOAD, .bounds = "starts with `/`",
     .desc = "Active health checks: the master sends GET path to every server each interval; none: no checks."},
    {.name = GROUP_PREFIX "health.interval", .type = CFG_T_DURATION, .store = CFG_S_I64,
     .off = GROUP(health.interval_ms), .min = 100 * MS, .max = HOUR, .def = "5s", .flags = CFG_RELOAD,
     .desc = "Time between two checks of a server."},
    {.name = GROUP_PREFIX "health.timeout", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = GROUP(health.timeout_ms),
     .min = 10 * MS, .max = HOUR, .def = "3s", .flags = CFG_RELOAD,
     .desc = "A check not answered within this fails."},
    {.name = GROUP_PREFIX "health.fall", .type = CFG_T_INT, .store = CFG_S_INT, .off = GROUP(health.fall), .min = 1,
     .max = 100, .def = "3", .flags = CFG_RELOAD, .desc = "Consecutive failed checks that mark a server down."},
    {.name = GROUP_PREFIX "health.rise", .type = CFG_T_INT, .store = CFG_S_INT, .off = GROUP(health.rise), .min = 1,
     .max = 100, .def = "2", .flags = CFG_RELOAD, .desc = "Consecutive passed checks that bring it back."},
    {.name = GROUP_PREFIX "health.status", .type = CFG_T_STRING, .store = CFG_S_STR, .off = GROUP(health.status),
     .check = cfg_check_status, .def = "2xx", .flags = CFG_RELOAD, .bounds = "codes, ranges or classes: 200,204 200-399 2xx",
     .desc = "Statuses that pass a check."},
    {.name = GROUP_PREFIX "passive.failures", .type = CFG_T_INT, .store = CFG_S_INT, .off = GROUP(passive.failures),
     .min = 0, .max = 1000, .def = "5", .flags = CFG_RELOAD,
     .desc = "Consecutive connect errors, resets and timeouts (seen by one worker) that eject a server; 0: never."},
    {.name = GROUP_PREFIX "passive.on_5xx", .type = CFG_T_BOOL, .store = CFG_S_INT, .off = GROUP(passive.on_5xx),
     .def = "false", .flags = CFG_RELOAD, .bounds = "true or false",
     .desc = "5xx answers count as failures too."},
    {.name = GROUP_PREFIX "passive.ejection_time", .type = CFG_T_DURATION, .store = CFG_S_I64,
     .off = GROUP(passive.ejection_time_ms), .min = 100 * MS, .max = HOUR, .def = "30s", .flags = CFG_RELOAD,
     .desc = "An ejected server is out for this times the number of times it was ejected."},
    {.name = GROUP_PREFIX "passive.max_ejection_time", .type = CFG_T_DURATION, .store = CFG_S_I64,
     .off = GROUP(passive.max_ejection_time_ms), .min = 100 * MS, .max = 24 * HOUR, .def = "300s",
     .flags = CFG_RELOAD, .desc = "Longest ejection; a server fine for this long starts counting again from one."},
    {.name = GROUP_PREFIX "passive.max_ejected_percent", .type = CFG_T_INT, .store = CFG_S_INT,
     .off = GROUP(passive.max_ejected_percent), .min = 0, .max = 100, .def = "50", .flags = CFG_RELOAD,
     .desc = "Never more than this share of the group's servers is ejected at once."},
    {.name = GROUP_PREFIX "slow_start", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = GROUP(slow_start_ms), .min = 0,
     .max = HOUR, .def = "0s", .flags = CFG_RELOAD,
     .desc = "A server that comes back gets its weight ramped up over this long; 0s: at once."},
    {.name = GROUP_PREFIX "retries", .type = CFG_T_INT, .store = CFG_S_INT, .off = GROUP(retries), .min = 0, .max = 10,
     .def = "2", .flags = CFG_RELOAD,
     .desc = "Further attempts on other servers for a request that failed before any response byte, when safe."},
    {.name = GROUP_PREFIX "retry_on_timeout", .type = CFG_T_BOOL, .store = CFG_S_INT, .off = GROUP(retry_on_timeout),
     .def = "false", .flags = CFG_RELOAD, .bounds = "true or false",
     .desc = "A request with no response byte within timeouts.first_byte is retried too, when its method is "
             "idempotent and its body was not consumed (the first server may have handled it)."},
    {.name = GROUP_PREFIX "retry_budget.percent", .type = CFG_T_INT, .store = CFG_S_INT,
     .off = GROUP(retry_budget.percent), .min = 0, .max = 100, .def = "20", .flags = CFG_RELOAD,
     .desc = "Retries in flight at most this share of the requests in flight (per worker)."},
    {.name = GROUP_PREFIX "retry_budget.min", .type = CFG_T_INT, .store = CFG_S_INT, .off = GROUP(retry_budget.min),
     .min = 0, .max = 100000, .def = "3", .flags = CFG_RELOAD,
     .desc = "Retries in flight always allowed, whatever the share."},
    {.name = GROUP_PREFIX "timeouts.connect", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = GROUP(timeouts.connect_ms),
     .min = MS, .max = HOUR, .def = "3s", .flags = CFG_RELOAD, .desc = "Connecting to a server (a retry may follow)."},
    {.name = GROUP_PREFIX "timeouts.first_byte", .type = CFG_T_DURATION, .store = CFG_S_I64,
     .off = GROUP(timeouts.first_byte_ms), .min = MS, .max = HOUR, .def = "60s", .flags = CFG_RELOAD,
     .desc = "From the request sent to the response's first byte; then 504."},
    {.name = GROUP_PREFIX "timeouts.idle", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = GROUP(timeouts.idle_ms),
     .min = MS, .max = 24 * HOUR, .def = "60s", .flags = CFG_RELOAD,
     .desc = "Longest pause of a body (either way) or a WebSocket tunnel."},
    {.name = GROUP_PREFIX "keepalive.size", .type = CFG_T_INT, .store = CFG_S_INT, .off = GROUP(keepalive.size), .min = 0,
     .max = 100000, .def = "64", .flags = CFG_RELOAD,
     .desc = "Idle keep-alive connections kept per worker per server; 0: a connection per request."},
    {.name = GROUP_PREFIX "keepalive.idle_timeout", .type = CFG_T_DURATION, .store = CFG_S_I64,
     .off = GROUP(keepalive.idle_ms), .min = MS, .max = HOUR, .def = "4s", .flags = CFG_RELOAD,
     .desc = "An idle pooled connection is closed after this; keep it below the servers' own keep-alive timeout."},
    {.name = "routes", .type = CFG_T_ROUTES, .store = CFG_S_ROUTES, .def = "[]", .flags = CFG_RELOAD,
     .bounds = "array of route objects", .desc = "Routes served by built-in handlers."},
    {.name = ROUTE_PREFIX "path", .type = CFG_T_STRING, .store = CFG_S_STR, .off = ROUTE(path),
     .check = cfg_check_path, .flags = CFG_RELOAD | CFG_REQUIRED,
     .bounds = "starts with `/`; may end in `/*`; may hold `:name` segments",
     .desc = "Path the route matches: exact, a prefix ending in `/*`, or with `:name` parameters."},
    {.name = ROUTE_PREFIX "handler", .type = CFG_T_ENUM, .store = CFG_S_STR, .off = ROUTE(handler),
     .values = handler_names, .flags = CFG_RELOAD | CFG_REQUIRED,
     .desc = "What answers: one of the handlers the modules register; a handler may need a route key of its "
             "own, which no other handler takes."},
    {.name = ROUTE_PREFIX "cache.ttl", .type = CFG_T_DURATION, .store = CFG_S_I64, .off = ROUTE(cache_ttl_ms),
     .min = 0, .max = 24 * HOUR, .flags = CFG_RELOAD,
     .desc = "Response cache: GET answers (200, no Set-Cookie, no `Cache-Control: no-store`) are kept this "
             "long, keyed by method, path and query; written `\"cache\": {\"ttl\": 60}`."},
};

#define NKEYS (sizeof keys / sizeof keys[0])
#define MAX_MODULE_KEYS 128

/* Keys modules registered, after the table above. */
static const struct cfg_key *module_keys[MAX_MODULE_KEYS];
static size_t nmodule_keys;

size_t cfg_key_count(void)
{
    return NKEYS + nmodule_keys;
}

const struct cfg_key *cfg_key_at(size_t i)
{
    return i < NKEYS ? &keys[i] : module_keys[i - NKEYS];
}

static const struct cfg_key *key_named(const char *name)
{
    for (size_t i = 0; i < cfg_key_count(); i++)
        if (strcmp(cfg_key_at(i)->name, name) == 0)
            return cfg_key_at(i);
    return NULL;
}

int cfg_keys_register(const struct cfg_key *k, size_t n)
{
    if (nmodule_keys + n > MAX_MODULE_KEYS)
        return -ENOSPC;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(k[i].name, k[j].name) == 0)
                return -EEXIST;
    for (size_t i = 0; i < n; i++)
        if (key_named(k[i].name))
            return -EEXIST;
    for (size_t i = 0; i < n; i++)
        module_keys[nmodule_keys++] = &k[i];
    return 0;
}

/* --- route handlers ------------------------------------------------------ */

int cfg_handler_register(const struct cfg_handler *h)
{
    if (!h->name || !*h->name)
        return -EINVAL;
    if (h->key) {
        char name[64];
        snprintf(name, sizeof name, "%s%s", ROUTE_PREFIX, h->key);
        const struct cfg_key *k = key_named(name);
        if (!k || k->store != CFG_S_STR || (k->flags & CFG_REQUIRED))
            return -EINVAL;
    }
    if (cfg_handler_find(h->name))
        return -EEXIST;
    if (nhandlers == MAX_HANDLERS)
        return -ENOSPC;
    handlers[nhandlers] = h;
    handler_names[nhandlers++] = h->name;
    return 0;
}

const struct cfg_handler *cfg_handler_find(const char *name)
{
    for (size_t i = 0; name && i < nhandlers; i++)
        if (strcmp(handlers[i]->name, name) == 0)
            return handlers[i];
    return NULL;
}

size_t cfg_handler_count(void)
{
    return nhandlers;
}

const struct cfg_handler *cfg_handler_at(size_t i)
{
    return handlers[i];
}

bool cfg_is_route_key(const struct cfg_key *k)
{
    return strncmp(k->name, ROUTE_PREFIX, strlen(ROUTE_PREFIX)) == 0;
}

/* A key of an element (a route, an upstream group, a server), not of struct cfg. */
bool cfg_is_top_key(const struct cfg_key *k)
{
    return !cfg_is_route_key(k) && strncmp(k->name, GROUP_PREFIX, strlen(GROUP_PREFIX)) != 0 &&
           strncmp(k->name, LISTEN_PREFIX, strlen(LISTEN_PREFIX)) != 0;
}

int64_t cfg_load_num(const struct cfg_key *k, const void *base)
{
    const char *p = (const char *)base + k->off;
    return k->store == CFG_S_INT ? *(const int *)(const void *)p : *(const int64_t *)(const void *)p;
}

void cfg_store_num(const struct cfg_key *k, void *base, int64_t n)
{
    char *p = (char *)base + k->off;
    if (k->store == CFG_S_INT)
        *(int *)(void *)p = (int)n;
    else
        *(int64_t *)(void *)p = n;
}

char **cfg_str_field(const struct cfg_key *k, const void *base)
{
    return (char **)(void *)((char *)(uintptr_t)base + k->off);
}
