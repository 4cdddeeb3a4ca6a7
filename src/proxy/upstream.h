/*
 * Upstream groups and load balancing: which server of a group takes the
 * next request. Pure: no sockets, no clock of its own, no I/O; the caller
 * passes the time and the key, so every algorithm is unit-tested alone.
 *
 * A group is built from its config (struct cfg_upstream) and lives as long
 * as the worker's config. Each worker has its own: the counters used by
 * least_conn and p2c (requests in flight) and the round robin's position
 * are per worker, as in nginx without a shared zone. The servers' state
 * (down by health checks, ejected, when they came back) comes from the
 * master, the same for every worker (proxy/health.h).
 *
 * Algorithms (docs/proxy.md):
 *   round_robin  smooth weighted round robin (nginx's): a server of weight
 *                w gets w of every sum-of-weights picks, interleaved
 *   least_conn   fewest requests in flight relative to weight; ties go to
 *                smooth weighted round robin among the tied
 *   random       weighted random
 *   p2c          two weighted random picks, the one with fewer requests in
 *                flight (relative to weight) wins
 *   hash         consistent hash ring of the key (client address, a header
 *                or a cookie): adding or removing one of N servers moves
 *                about 1/N of the keys; a key whose server is unusable goes
 *                to the next server on the ring. No key: round robin.
 * Backup servers take requests only when no other server can.
 * A server that came back less than slow_start ago counts with a share of
 * its weight that grows linearly (not for hash, whose ring is fixed).
 */
#ifndef COHORT_PROXY_UPSTREAM_H
#define COHORT_PROXY_UPSTREAM_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"
#include "http/parser.h"

#define UP_NAME_LEN 64
#define UP_GROUP_LEN 48
#define UP_MAX_TRIES 11 /* retries (at most 10) + 1 */

/* State flags, set by the master. */
#define UP_F_DOWN 1u    /* active health checks failed */
#define UP_F_EJECTED 2u /* passive ejection: too many failures in a row */

struct up_server {
    char name[UP_NAME_LEN];       /* "ip:port", as in the config */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int weight;
    int max_conns;                /* per worker; 0 = no limit */
    int backup;
    /* the master's view, the same in every worker */
    uint32_t flags;               /* UP_F_* */
    uint64_t since_ms;            /* monotonic ms it last came back; 0: never left */
    /* this worker's view */
    int64_t current;              /* smooth weighted round robin */
    uint32_t inflight;            /* requests in flight to it */
    uint32_t fails;               /* consecutive failures not yet reported */
    int stats;                    /* index in the counters segment, -1: none */
    void *pool;                   /* keep-alive connections (proxy/pool.h) */
};

struct up_point {
    uint32_t hash;
    uint32_t server;
};

struct up_group {
    char name[UP_GROUP_LEN];
    const struct cfg_upstream *cfg; /* owned by the worker's config */
    struct up_server *servers;
    size_t n;
    uint64_t rng;                   /* xorshift64* state */
    struct up_point *ring;          /* hash: sorted by hash */
    size_t nring;
    /* per worker: requests and retries in flight (retry budget) */
    uint32_t inflight, retrying;
};

/* What a pick needs to know about the request. */
struct up_pick {
    uint64_t now_ms;              /* monotonic */
    const char *key;              /* hash key; NULL (or empty): none */
    size_t key_len;
    const int *tried;             /* servers already tried for this request */
    int ntried;
    int full;                     /* out: servers passed over at max_conns */
};

/*
 * Builds a group from its config: parses the addresses and builds the hash
 * ring. Returns 0, -EINVAL for an address that is not numeric ip:port (the
 * config loader resolves names), or -ENOMEM. up_group_free(NULL) is a no-op
 * on the group's own storage.
 */
int up_group_init(struct up_group *g, const struct cfg_upstream *cfg);
void up_group_free(struct up_group *g);

/* Seeds the group's random source (random, p2c); tests use fixed seeds. */
void up_group_seed(struct up_group *g, uint64_t seed);

/*
 * Picks a server: its index, or -ENOENT when no server is usable (all are
 * down, ejected or tried already), or -EBUSY when the only usable ones are
 * at max_conns. Does not count the request in flight: the caller does
 * (s->inflight) while the request runs.
 */
int up_pick(struct up_group *g, struct up_pick *p);

/* A server's weight now, in thousandths (slow start ramps it); 0 when it
 * cannot take requests (down or ejected). */
int64_t up_weight(const struct up_group *g, const struct up_server *s, uint64_t now_ms);

/* The 64-bit hash of the ring and of keys (FNV-1a, then a mixer). */
uint64_t up_hash(const void *p, size_t n);

/* Index of a server by name, -1 if the group has none of that name. */
int up_find(const struct up_group *g, const char *name);

/* --- failures, retries, ejection ------------------------------------------ */

/* Why an attempt failed (the words are in the access log, up_fail_name). */
enum up_fail {
    UP_FAIL_NONE,
    UP_FAIL_REFUSED,       /* connect error */
    UP_FAIL_CONNECT_TIMEOUT,
    UP_FAIL_RESET,         /* reset or closed before any response byte */
    UP_FAIL_TIMEOUT,       /* no first byte within timeouts.first_byte */
    UP_FAIL_IDLE,          /* a body or tunnel stalled for timeouts.idle */
    UP_FAIL_BAD_RESPONSE,  /* not HTTP/1.x, or cut short */
    UP_FAIL_5XX,           /* counted only with passive.on_5xx */
    UP_FAIL_COUNT
};

const char *up_fail_name(enum up_fail f);

/* True for failures that count toward passive ejection. */
int up_fail_counts(enum up_fail f, int on_5xx);

/*
 * Whether a failed attempt may be retried on another server (RFC 9110
 * 9.2.2): only failures before any byte of the response (refused, connect
 * timeout, reset); then any method when no byte of the request was sent,
 * otherwise only idempotent methods whose body (if any) was not consumed.
 */
int up_retry_safe(enum up_fail f, enum http_method m, int request_sent, int body_consumed);

/* With the group's retry_on_timeout: whether a request that got no first
 * byte within timeouts.first_byte may go to another server (idempotent
 * methods whose body, if any, was not consumed), as nginx's
 * `proxy_next_upstream timeout`. A host that drops off the network leaves
 * requests in flight to it that only a timeout ends. */
int up_retry_safe_after_timeout(enum http_method m, int body_consumed);

/* The retry budget (Envoy's): a retry may start while retries in flight
 * stay within `percent` of requests in flight, or below `min`. */
int up_budget_allows(uint32_t retrying, uint32_t inflight, int percent, int min);

/* Passive ejection, decided by the master for every worker. */
struct up_eject {
    uint32_t times;       /* ejections in a row, for the growing duration */
    uint64_t until_ms;    /* ejected until (monotonic ms); 0: not ejected */
    uint64_t last_end_ms; /* when the last ejection ended */
};

/*
 * A worker reported `cfg->passive.failures` failures in a row: ejects the
 * server unless it already is, or unless `ejected` other servers of the
 * `n` are out already and one more would pass max_ejected_percent. Returns
 * the ejection's length in ms (ejection_time x times, capped at
 * max_ejection_time; the count starts again after a quiet
 * max_ejection_time), or 0 when it stays in.
 */
uint64_t up_eject(struct up_eject *e, size_t ejected, size_t n, const struct cfg_upstream *cfg, uint64_t now_ms);

/* --- messages between the master and the workers (core/msg.h) ------------- */

/* HC_MSG_STATE (proxy/health.h), master -> workers: one server's state. */
struct up_state_msg {
    char group[UP_GROUP_LEN];
    char server[UP_NAME_LEN];
    uint32_t flags;       /* UP_F_* */
    uint32_t reserved;
    uint64_t since_ms;    /* monotonic ms it came back: slow start */
};

/* HC_MSG_REPORT (proxy/health.h), worker -> master: failures in a row seen by one worker. */
struct up_report_msg {
    char group[UP_GROUP_LEN];
    char server[UP_NAME_LEN];
    uint32_t failures;
    uint32_t why;         /* enum up_fail of the last one */
};

#endif
