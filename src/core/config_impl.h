/*
 * The parts of the config engine share this; nothing outside src/core/config*.c
 * includes it. A module registers through core/config_module.h instead.
 */
#ifndef COHORT_CONFIG_IMPL_H
#define COHORT_CONFIG_IMPL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/config_module.h"

#define MS 1LL
#define SEC 1000LL
#define HOUR (3600 * SEC)
#define KIB 1024LL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define ROUTE_PREFIX CFG_ROUTE_PREFIX
#define GROUP_PREFIX CFG_GROUP_PREFIX
#define SERVER_PREFIX CFG_SERVER_PREFIX
#define LISTEN_PREFIX CFG_LISTEN_PREFIX

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
 * source is in (cfg_check_routes); the last note of a path is the one in force. */
struct note {
    char *path;  /* "routes[0].root" */
    char *label; /* the source when not a file; NULL: the file cfg_find_pos names */
    char *given; /* the value as written, before resolve_path */
};

/* One load: where values come from, and where a message goes. */
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

#define SHOWN 72 /* bytes of a value a message shows at most */

/* The i-th key of every registered table, i < cfg_key_count(). */
const struct cfg_key *cfg_key_at(size_t i);

/* config_keys.c: the key table */
bool cfg_is_route_key(const struct cfg_key *k);
bool cfg_is_top_key(const struct cfg_key *k);
int64_t cfg_load_num(const struct cfg_key *k, const void *base);
void cfg_store_num(const struct cfg_key *k, void *base, int64_t n);
char **cfg_str_field(const struct cfg_key *k, const void *base);
extern const char *const cfg_hash_ons[];
size_t cfg_handler_count(void);
const struct cfg_handler *cfg_handler_at(size_t i);

/* config_values.c: values of one key */
const char *cfg_check_user(const char *in, const char **out);
const char *cfg_check_group(const char *in, const char **out);
const char *cfg_check_redis_url(const char *in, const char **out);
const char *cfg_check_token(const char *in, const char **out);
const char *cfg_check_address(const char *in, const char **out);
const char *cfg_check_status(const char *in, const char **out);
const char *cfg_check_health_path(const char *in, const char **out);
const char *cfg_check_field_name(const char *in, const char **out);
const char *cfg_check_file_path(const char *in, const char **out);
const char *cfg_check_host(const char *in, const char **out);
const char *cfg_check_path(const char *p, const char **out);
const char *cfg_check_log_target(const char *in, const char **out);
const char *cfg_check_root(const char *in, const char **out);
const char *cfg_fmt_duration(int64_t ms, char *buf, size_t len);
const char *cfg_fmt_size(int64_t n, char *buf, size_t len);
const char *cfg_fmt_num(const struct cfg_key *k, int64_t n, char *buf, size_t len);
const struct note *cfg_find_note(const struct ctx *x, const char *path);
void cfg_free_notes(struct ctx *x);
int cfg_set_key(struct ctx *x, const struct cfg_key *k, const char *path, json_t *v, void *base);
json_t *cfg_addrs_value(const char *s);

/* config_scan.c: positions, messages, files */
const char *cfg_show(const json_t *v, char *buf);
const struct pos *cfg_find_pos(const struct ctx *x, const char *path, const char **file);
__attribute__((format(printf, 4, 5))) int cfg_report(const struct ctx *x, const char *path, bool at_key, const char *fmt, ...);
__attribute__((format(printf, 3, 4))) int cfg_fail(const struct ctx *x, int rc, const char *fmt, ...);
int cfg_no_memory(const struct ctx *x);
int cfg_bad_type(const struct ctx *x, const char *path, const json_t *v, const char *what);
void cfg_ctx_free(struct ctx *x);
int cfg_parse_text(struct ctx *x, const char *name, const char *buf, size_t len, json_t **out);
int cfg_read_sources(struct ctx *x, const struct cfg_sources *src, const char *env, json_t **tree);

/* config_routes.c: routes and upstream groups */
void cfg_free_routes(struct cfg_route *r, size_t n);
char *cfg_join(const char *prefix, const char *name);
int cfg_set_routes(struct ctx *x, const char *path, json_t *v, struct cfg *c);
bool cfg_in_elem(const struct cfg_key *k, const char *prefix);
void cfg_free_upstreams(struct cfg_upstream *g, size_t n);
int cfg_set_servers(struct ctx *x, const char *path, json_t *v, struct cfg_upstream *g);
int cfg_set_upstreams(struct ctx *x, const char *path, json_t *v, struct cfg *c);
void cfg_free_listeners(struct cfg_listener *l, size_t n);
int cfg_set_listeners(struct ctx *x, const char *path, json_t *v, struct cfg *c);
int cfg_check_routes(struct ctx *x, const struct cfg *c, bool fs);

/* config.c: loading */
size_t cfg_score(const char *name, const char *cand, size_t clen);
int cfg_unknown_key(const struct ctx *x, const char *path, const char *elem);
json_t *cfg_text_value(const struct ctx *x, const struct cfg_key *k, const char *text, int *rc);

/* config_out.c: output */
int cfg_key_value(const struct cfg_key *k, const void *base, json_t **out);

#endif
