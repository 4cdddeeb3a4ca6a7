/*
 * Upstream groups and the balancing algorithms. See upstream.h.
 */
#include "proxy/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ring points per unit of weight, and the most a ring holds: enough for
 * every server's share of keys to be within a few percent of its weight's. */
#define RING_POINTS 512
#define RING_MAX (1u << 18)
#define FULL_WEIGHT 1000 /* weights are counted in thousandths */

/* --- hashing and randomness ---------------------------------------------- */

uint64_t up_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    /* splitmix64's finalizer: FNV alone mixes the last bytes poorly */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static uint64_t next_rand(struct up_group *g)
{
    uint64_t x = g->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

void up_group_seed(struct up_group *g, uint64_t seed)
{
    g->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

/* --- building a group ---------------------------------------------------- */

/* "1.2.3.4:80" or "[::1]:80", as the config loader normalised them. */
static int parse_address(const char *a, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon = strrchr(a, ':');
    if (!colon)
        return -EINVAL;
    size_t hl = (size_t)(colon - a);
    int port = atoi(colon + 1);
    if (hl == 0 || hl >= sizeof(host) || port < 1 || port > 65535)
        return -EINVAL;
    memcpy(host, a, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (host[0] == '[' && host[hl - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return -EINVAL;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*s6);
        return 0;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
        return -EINVAL;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof(*s4);
    return 0;
}

static int by_hash(const void *a, const void *b)
{
    const struct up_point *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash ? 1 : (int)x->server - (int)y->server;
}

/*
 * The ring: RING_POINTS points per unit of weight for each server that is
 * not a backup, each at the hash of "name#i". A point depends only on its
 * server's name, so adding or removing a server moves only the keys of its
 * own points. Scaled down together when the ring would pass RING_MAX.
 */
static int build_ring(struct up_group *g)
{
    uint64_t total = 0;
    for (size_t i = 0; i < g->n; i++)
        if (!g->servers[i].backup)
            total += (uint64_t)g->servers[i].weight * RING_POINTS;
    double scale = total > RING_MAX ? (double)RING_MAX / (double)total : 1.0;
    g->ring = malloc((size_t)(total * scale + (double)g->n + 1) * sizeof(*g->ring));
    if (!g->ring)
        return -ENOMEM;
    g->nring = 0;
    for (size_t i = 0; i < g->n; i++) {
        const struct up_server *s = &g->servers[i];
        if (s->backup)
            continue;
        size_t pts = (size_t)((double)s->weight * RING_POINTS * scale);
        if (pts == 0)
            pts = 1;
        for (size_t k = 0; k < pts; k++) {
            char label[UP_NAME_LEN + 24];
            int ln = snprintf(label, sizeof(label), "%s#%zu", s->name, k);
            g->ring[g->nring].hash = (uint32_t)(up_hash(label, (size_t)ln) >> 32);
            g->ring[g->nring].server = (uint32_t)i;
            g->nring++;
        }
    }
    qsort(g->ring, g->nring, sizeof(*g->ring), by_hash);
    return 0;
}

int up_group_init(struct up_group *g, const struct cfg_upstream *cfg)
{
    memset(g, 0, sizeof(*g));
    snprintf(g->name, sizeof(g->name), "%s", cfg->name);
    g->cfg = cfg;
    g->n = cfg->nservers;
    g->servers = calloc(g->n ? g->n : 1, sizeof(*g->servers));
    if (!g->servers)
        return -ENOMEM;
    for (size_t i = 0; i < g->n; i++) {
        struct up_server *s = &g->servers[i];
        const struct cfg_upstream_server *c = &cfg->servers[i];
        snprintf(s->name, sizeof(s->name), "%s", c->address);
        s->weight = c->weight;
        s->max_conns = c->max_conns;
        s->backup = c->backup;
        s->stats = -1;
        if (parse_address(c->address, &s->addr, &s->addrlen) < 0) {
            up_group_free(g);
            return -EINVAL;
        }
    }
    up_group_seed(g, 0);
    if (cfg->algorithm == CFG_LB_HASH && build_ring(g) < 0) {
        up_group_free(g);
        return -ENOMEM;
    }
    return 0;
}

void up_group_free(struct up_group *g)
{
    if (!g)
        return;
    free(g->servers);
    free(g->ring);
    g->servers = NULL;
    g->ring = NULL;
    g->n = g->nring = 0;
}

int up_find(const struct up_group *g, const char *name)
{
    for (size_t i = 0; i < g->n; i++)
        if (strcmp(g->servers[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* --- picking ------------------------------------------------------------- */

int64_t up_weight(const struct up_group *g, const struct up_server *s, uint64_t now_ms)
{
    if (s->flags & (UP_F_DOWN | UP_F_EJECTED))
        return 0;
    int64_t full = (int64_t)s->weight * FULL_WEIGHT;
    uint64_t ramp = g->cfg ? (uint64_t)g->cfg->slow_start_ms : 0;
    if (!ramp || !s->since_ms || now_ms >= s->since_ms + ramp)
        return full;
    uint64_t elapsed = now_ms > s->since_ms ? now_ms - s->since_ms : 0;
    int64_t w = (int64_t)((double)full * (double)elapsed / (double)ramp);
    return w > 0 ? w : 1;
}

static int was_tried(const struct up_pick *p, size_t i)
{
    for (int k = 0; k < p->ntried; k++)
        if (p->tried[k] == (int)i)
            return 1;
    return 0;
}

/*
 * The candidates of one pass (primaries, or backups) with their weights
 * now: w[i] is 0 for a server that cannot take this request. Returns how
 * many can; counts those passed over at max_conns in p->full.
 */
static size_t candidates(struct up_group *g, struct up_pick *p, int backup, int64_t *w)
{
    size_t n = 0;
    for (size_t i = 0; i < g->n; i++) {
        struct up_server *s = &g->servers[i];
        w[i] = 0;
        if (s->backup != backup || was_tried(p, i))
            continue;
        int64_t wi = up_weight(g, s, p->now_ms);
        if (!wi)
            continue;
        if (s->max_conns && s->inflight >= (uint32_t)s->max_conns) {
            p->full++;
            continue;
        }
        w[i] = wi;
        n++;
    }
    return n;
}

/* nginx's smooth weighted round robin over the servers with w[i] > 0. */
static int smooth_rr(struct up_group *g, const int64_t *w)
{
    int64_t total = 0;
    int best = -1;
    for (size_t i = 0; i < g->n; i++) {
        if (!w[i])
            continue;
        struct up_server *s = &g->servers[i];
        s->current += w[i];
        total += w[i];
        if (best < 0 || s->current > g->servers[best].current)
            best = (int)i;
    }
    if (best >= 0)
        g->servers[best].current -= total;
    return best;
}

static int weighted_random(struct up_group *g, const int64_t *w, int skip)
{
    int64_t total = 0;
    for (size_t i = 0; i < g->n; i++)
        if ((int)i != skip)
            total += w[i];
    if (total <= 0)
        return -1;
    int64_t r = (int64_t)(next_rand(g) % (uint64_t)total);
    for (size_t i = 0; i < g->n; i++) {
        if ((int)i == skip || !w[i])
            continue;
        if (r < w[i])
            return (int)i;
        r -= w[i];
    }
    return -1;
}

/* a's load relative to its weight is below b's: inflight_a / w_a < inflight_b / w_b */
static int lighter(const struct up_group *g, int a, int b, const int64_t *w)
{
    return (int64_t)g->servers[a].inflight * w[b] < (int64_t)g->servers[b].inflight * w[a];
}

static int least_conn(struct up_group *g, int64_t *w)
{
    int best = -1;
    for (size_t i = 0; i < g->n; i++)
        if (w[i] && (best < 0 || lighter(g, (int)i, best, w)))
            best = (int)i;
    if (best < 0)
        return -1;
    /* the tied ones share by smooth weighted round robin */
    for (size_t i = 0; i < g->n; i++)
        if (w[i] && (int)i != best && lighter(g, best, (int)i, w))
            w[i] = 0;
    return smooth_rr(g, w);
}

static int p2c(struct up_group *g, const int64_t *w)
{
    int a = weighted_random(g, w, -1);
    if (a < 0)
        return -1;
    int b = weighted_random(g, w, a);
    if (b < 0)
        return a;
    return lighter(g, b, a, w) ? b : a;
}

/* The first point at or after the key's hash whose server can take it. */
static int ring_pick(struct up_group *g, const struct up_pick *p, const int64_t *w)
{
    uint32_t h = (uint32_t)(up_hash(p->key, p->key_len) >> 32);
    size_t lo = 0, hi = g->nring;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (g->ring[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = 0; k < g->nring; k++) {
        const struct up_point *pt = &g->ring[(lo + k) % g->nring];
        if (w[pt->server])
            return (int)pt->server;
    }
    return -1;
}

static int pick_among(struct up_group *g, struct up_pick *p, int64_t *w)
{
    switch (g->cfg ? g->cfg->algorithm : CFG_LB_ROUND_ROBIN) {
    case CFG_LB_LEAST_CONN:
        return least_conn(g, w);
    case CFG_LB_RANDOM:
        return weighted_random(g, w, -1);
    case CFG_LB_P2C:
        return p2c(g, w);
    case CFG_LB_HASH:
        if (p->key && p->key_len && g->nring) {
            int i = ring_pick(g, p, w);
            if (i >= 0)
                return i;
        }
        return smooth_rr(g, w);
    default:
        return smooth_rr(g, w);
    }
}

int up_pick(struct up_group *g, struct up_pick *p)
{
    int64_t stack[64], *w = g->n <= 64 ? stack : malloc(g->n * sizeof(*w));
    int r = -ENOENT;
    if (!w)
        return -ENOMEM;
    p->full = 0;
    for (int backup = 0; backup < 2; backup++) {
        if (!candidates(g, p, backup, w))
            continue;
        r = pick_among(g, p, w);
        break;
    }
    if (r < 0)
        r = p->full ? -EBUSY : -ENOENT;
    if (w != stack)
        free(w);
    return r;
}

/* --- failures, retries, ejection ------------------------------------------ */

const char *up_fail_name(enum up_fail f)
{
    static const char *const names[UP_FAIL_COUNT] = {
        [UP_FAIL_NONE] = "ok",          [UP_FAIL_REFUSED] = "refused",
        [UP_FAIL_CONNECT_TIMEOUT] = "connect_timeout", [UP_FAIL_RESET] = "reset",
        [UP_FAIL_TIMEOUT] = "timeout",  [UP_FAIL_IDLE] = "idle_timeout",
        [UP_FAIL_BAD_RESPONSE] = "bad_response", [UP_FAIL_5XX] = "5xx",
    };
    return (unsigned)f < UP_FAIL_COUNT ? names[f] : "?";
}

int up_fail_counts(enum up_fail f, int on_5xx)
{
    switch (f) {
    case UP_FAIL_REFUSED:
    case UP_FAIL_CONNECT_TIMEOUT:
    case UP_FAIL_RESET:
    case UP_FAIL_TIMEOUT:
    case UP_FAIL_IDLE:
    case UP_FAIL_BAD_RESPONSE:
        return 1;
    case UP_FAIL_5XX:
        return on_5xx;
    default:
        return 0;
    }
}

static int idempotent(enum http_method m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_TRACE || m == HTTP_PUT ||
           m == HTTP_DELETE;
}

int up_retry_safe(enum up_fail f, enum http_method m, int request_sent, int body_consumed)
{
    if (f != UP_FAIL_REFUSED && f != UP_FAIL_CONNECT_TIMEOUT && f != UP_FAIL_RESET)
        return 0;
    if (!request_sent)
        return 1;
    return idempotent(m) && !body_consumed;
}

int up_retry_safe_after_timeout(enum http_method m, int body_consumed)
{
    return idempotent(m) && !body_consumed;
}

int up_budget_allows(uint32_t retrying, uint32_t inflight, int percent, int min)
{
    if (retrying < (uint32_t)min)
        return 1;
    return (uint64_t)retrying * 100 < (uint64_t)inflight * (uint64_t)percent;
}

uint64_t up_eject(struct up_eject *e, size_t ejected, size_t n, const struct cfg_upstream *cfg, uint64_t now_ms)
{
    if (e->until_ms > now_ms)
        return 0;
    if ((ejected + 1) * 100 > n * (size_t)cfg->passive.max_ejected_percent)
        return 0;
    uint64_t max = (uint64_t)cfg->passive.max_ejection_time_ms;
    if (e->last_end_ms && now_ms - e->last_end_ms >= max)
        e->times = 0;
    e->times++;
    uint64_t len = (uint64_t)cfg->passive.ejection_time_ms * e->times;
    if (len > max)
        len = max;
    e->until_ms = now_ms + len;
    return len;
}
