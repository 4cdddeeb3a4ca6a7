/*
 * What a module gives the config engine (core/config.c and its parts):
 * tables of keys, and the route handlers it provides with their rules.
 * Core names no handler: routes[].handler takes the registered names, and a
 * route's handler-specific rules are the registered handler's.
 *
 * Registration happens once, at start, before any config is loaded (the
 * list of modules is src/modules.c); the engine keeps the pointers, so the
 * tables and structs given must live as long as the process.
 */
#ifndef COHORT_CONFIG_MODULE_H
#define COHORT_CONFIG_MODULE_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

/* How a key is written (and checked, and printed). */
enum cfg_type {
    CFG_T_INT,
    CFG_T_DURATION,
    CFG_T_SIZE,
    CFG_T_ENUM,
    CFG_T_STRING,
    CFG_T_ROUTES,
    CFG_T_BOOL,
    CFG_T_UPSTREAMS,
    CFG_T_SERVERS,
    CFG_T_ADDRS,
    CFG_T_LISTENERS
};
/* What sits at the key's offset. */
enum cfg_store { CFG_S_INT, CFG_S_I64, CFG_S_STR, CFG_S_ROUTES, CFG_S_UPSTREAMS, CFG_S_SERVERS, CFG_S_LISTENERS };

#define CFG_RELOAD 1u   /* may change on reload without a restart */
#define CFG_REQUIRED 2u /* element keys only: every element must set it */
#define CFG_PATH 4u     /* a file or folder: made absolute as it is loaded */
#define CFG_UNIX_PATH 8u /* an address: the PATH of "unix:PATH" is made absolute as it is loaded */

/* Element keys are named by their place: "routes[].path",
 * "upstreams.<name>.algorithm", "upstreams.<name>.servers[].weight". */
#define CFG_ROUTE_PREFIX "routes[]."
#define CFG_GROUP_PREFIX "upstreams.<name>."
#define CFG_SERVER_PREFIX "upstreams.<name>.servers[]."
#define CFG_LISTEN_PREFIX "listen[]."

struct cfg_key {
    const char *name;     /* "server.port"; route keys are "routes[].path" */
    enum cfg_type type;
    enum cfg_store store; /* what sits at `off` */
    size_t off;           /* in struct cfg, or in the element (struct cfg_route, ...) */
    int64_t min, max;     /* CFG_T_INT: the value; CFG_T_DURATION: ms; CFG_T_SIZE: bytes */
    const char *const *values;                              /* CFG_T_ENUM, NULL-ended */
    const char *(*check)(const char *in, const char **out); /* CFG_T_STRING: NULL or why not */
    const char *def;      /* default, written as in an override; NULL: none */
    unsigned flags;
    const char *env;      /* environment variable, or NULL */
    const char *bounds;   /* docs text where min..max does not say it */
    const char *desc;
};

/*
 * Adds n keys after the ones already known; docs/config.md lists them in
 * that order. 0, -EEXIST for a name already taken, -ENOSPC when full.
 */
int cfg_keys_register(const struct cfg_key *keys, size_t n);

/*
 * A route handler. Its name is one value of routes[].handler (in the order
 * handlers register). `key` is a route key that routes of this handler
 * must set and no other route may ("root" for files served, "upstream" for
 * forwarding); `does` says why, for the message ("serves files").
 */
struct cfg_handler {
    const char *name;
    const char *key;  /* NULL: none */
    const char *does;
    /* Both checks are made for a handler with a `key` only, and name it:
     * NULL, or why the value of r's `key` cannot stand ("names no upstream
     * group"; buf may hold the text). Once every source is in: */
    const char *(*check)(const struct cfg *c, const struct cfg_route *r, char *buf, size_t len);
    /* For serve and check-config only (cfg_sources.check_fs): the same for
     * what the file system must hold. */
    const char *(*check_fs)(const struct cfg *c, const struct cfg_route *r, char *buf, size_t len);
};

/* 0, -EEXIST for a name already taken, -ENOSPC when full, -EINVAL for no
 * name or a `key` that is not a registered, optional string route key. */
int cfg_handler_register(const struct cfg_handler *h);

/* The registered handler of that name, or NULL. */
const struct cfg_handler *cfg_handler_find(const char *name);

/* Checks modules' keys may share: an upstream group's name. */
const char *cfg_check_group_name(const char *in, const char **out);

#endif
