/*
 * /metrics, /stats, /status and the event-loop lag probe. See stats.h.
 */
#include "app/stats.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "http/router.h"
#include "http/server.h"

#define LAG_TICK_MS 100

static const char *const class_names[METRICS_CLASSES] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};

struct stats {
    struct app_env env;
    uv_timer_t lag_timer;
    uint64_t lag_expect_ns;   /* when the next tick is due */
    uint64_t lag_window_ns;   /* start of the current one-second window */
    uint64_t lag_max_ns, lag_sum_ns, lag_ticks;
    struct router *admin_router;
    struct http_server *admin;
    void (*done)(void *arg);
    void *done_arg;
    int pending;              /* handles and engines still closing */
};

static uint64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* --- the view ------------------------------------------------------------ */

int stats_view_load(struct stats_view *v, const struct metrics_shm *m, const struct router *r)
{
    memset(v, 0, sizeof(*v));
    v->shm = m;
    v->nslots = metrics_slots_used(m);
    v->slots = calloc(v->nslots ? v->nslots : 1, sizeof(*v->slots));
    if (!v->slots)
        return -ENOMEM;
    metrics_snapshot(m, &v->retired, v->slots, v->nslots);
    v->route_names[METRICS_ROUTE_NONE] = "none";
    v->route_names[METRICS_ROUTE_OTHER] = "other";
    for (size_t i = 0; r && i + 1 < METRICS_ROUTE_OTHER; i++) {
        const struct route *rt = router_at(r, i);
        if (!rt)
            break;
        v->route_names[i + 1] = rt->name;
    }
    v->now_ms = wall_ms();
    return 0;
}

void stats_view_free(struct stats_view *v)
{
    free(v->slots);
    v->slots = NULL;
}

void stats_view_total(const struct stats_view *v, struct metrics_slot *total)
{
    *total = v->retired;
    for (uint32_t i = 0; i < v->nslots; i++)
        metrics_accumulate(total, &v->slots[i]);
}

static uint64_t restarts_total(const struct metrics_shm *m)
{
    uint64_t n = 0;
    for (int i = 0; i < METRICS_MAX_WORKERS; i++)
        n += metrics_get(m->restarts[i]);
    return n;
}

static uint64_t restarts_of(const struct metrics_shm *m, uint64_t id)
{
    return id < METRICS_MAX_WORKERS ? metrics_get(m->restarts[id]) : 0;
}

static uint64_t hist_count(const struct metrics_slot *s)
{
    uint64_t n = 0;
    for (int i = 0; i < METRICS_BUCKETS; i++)
        n += s->latency[i];
    return n;
}

/* --- Prometheus text ----------------------------------------------------- */

/* Label values escape backslash, double quote and newline. */
static void label_value(struct sbuf *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            sbuf_printf(o, "\\%c", *s);
        else if (*s == '\n')
            sbuf_puts(o, "\\n");
        else
            sbuf_put(o, s, 1);
    }
}

static void family(struct sbuf *o, const char *name, const char *type, const char *help)
{
    sbuf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u64(struct sbuf *o, const char *name, uint64_t v)
{
    sbuf_printf(o, "%s %llu\n", name, (unsigned long long)v);
}

/* Seconds from µs as a decimal without exponent: 0.000012, 16.777216. */
static void seconds(struct sbuf *o, uint64_t us)
{
    char buf[40];
    int n = snprintf(buf, sizeof(buf), "%llu.%06llu", (unsigned long long)(us / 1000000),
                     (unsigned long long)(us % 1000000));
    while (n > 1 && buf[n - 1] == '0')
        n--;
    if (buf[n - 1] == '.')
        n--;
    sbuf_put(o, buf, (size_t)n);
}

static void worker_labels(struct sbuf *o, const struct metrics_slot *s)
{
    sbuf_printf(o, "{worker=\"%llu\",pid=\"%llu\"}", (unsigned long long)s->worker_id, (unsigned long long)s->pid);
}

/* One gauge (or counter) per live worker; `field` is a word offset. */
static void per_worker(struct sbuf *o, const struct stats_view *v, const char *name, const char *type,
                       const char *help, size_t off, double scale)
{
    family(o, name, type, help);
    for (uint32_t i = 0; i < v->nslots; i++) {
        const struct metrics_slot *s = &v->slots[i];
        if (!s->pid)
            continue;
        uint64_t val = *(const uint64_t *)(const void *)((const char *)s + off);
        sbuf_puts(o, name);
        worker_labels(o, s);
        if (scale == 1)
            sbuf_printf(o, " %llu\n", (unsigned long long)val);
        else
            sbuf_printf(o, " %.6f\n", (double)val * scale);
    }
}

static const char *route_label(const struct stats_view *v, int r)
{
    return v->route_names[r] ? v->route_names[r] : "unknown";
}

/*
 * Counts by class of the route slots labelled like slot r (one pattern
 * may be added once per method); 0 when an earlier slot has that label,
 * which then carries them.
 */
static int route_counts(const struct stats_view *v, const struct metrics_slot *t, int r, uint64_t *counts)
{
    const char *name = route_label(v, r);
    for (int k = 0; k < r; k++)
        if (strcmp(route_label(v, k), name) == 0)
            return 0;
    memset(counts, 0, METRICS_CLASSES * sizeof(*counts));
    for (int k = r; k < METRICS_ROUTES; k++)
        if (strcmp(route_label(v, k), name) == 0)
            for (int c = 0; c < METRICS_CLASSES; c++)
                counts[c] += t->routes[k][c];
    return 1;
}

static void render_requests(struct sbuf *o, const struct stats_view *v, const struct metrics_slot *t)
{
    family(o, "cohort_http_requests_total", "counter", "HTTP requests answered, by route pattern and status class.");
    for (int r = 0; r < METRICS_ROUTES; r++) {
        uint64_t counts[METRICS_CLASSES];
        if (!route_counts(v, t, r, counts))
            continue;
        for (int c = 0; c < METRICS_CLASSES; c++) {
            if (!counts[c])
                continue;
            sbuf_puts(o, "cohort_http_requests_total{route=\"");
            label_value(o, route_label(v, r));
            sbuf_printf(o, "\",code=\"%s\"} %llu\n", class_names[c], (unsigned long long)counts[c]);
        }
    }
}

static void render_histogram(struct sbuf *o, const struct metrics_slot *t)
{
    const char *name = "cohort_http_request_duration_seconds";
    family(o, name, "histogram", "Time from a complete request head to the complete response.");
    uint64_t cum = 0;
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        cum += t->latency[i];
        sbuf_printf(o, "%s_bucket{le=\"", name);
        if (i == METRICS_BUCKETS - 1)
            sbuf_puts(o, "+Inf");
        else
            seconds(o, metrics_bucket_bound(i));
        sbuf_printf(o, "\"} %llu\n", (unsigned long long)cum);
    }
    sbuf_printf(o, "%s_sum ", name);
    seconds(o, t->latency_us_sum);
    sbuf_printf(o, "\n%s_count %llu\n", name, (unsigned long long)cum);
}

static void render_upstreams(struct sbuf *o, const struct stats_view *v)
{
    struct metrics_upstream_counts sum[METRICS_UPSTREAMS];
    int any = 0;
    memset(sum, 0, sizeof(sum));
    for (int u = 0; u < METRICS_UPSTREAMS; u++) {
        if (!v->shm->upstream[u].name[0])
            continue;
        any = 1;
        sum[u] = v->retired.upstream[u];
        for (uint32_t i = 0; i < v->nslots; i++) {
            sum[u].requests += v->slots[i].upstream[u].requests;
            sum[u].failures += v->slots[i].upstream[u].failures;
            sum[u].latency_us_sum += v->slots[i].upstream[u].latency_us_sum;
            sum[u].responses += v->slots[i].upstream[u].responses;
        }
    }
    if (!any)
        return;
    static const struct {
        const char *name, *type, *help;
    } fams[] = {
        {"cohort_upstream_requests_total", "counter", "Requests sent to an upstream server."},
        {"cohort_upstream_failures_total", "counter", "Requests to an upstream server that failed."},
        {"cohort_upstream_responses_total", "counter", "Responses received from an upstream server."},
        {"cohort_upstream_response_seconds_total", "counter", "Time spent waiting for upstream responses."},
        {"cohort_upstream_up", "gauge", "1 while the health checks find the upstream server up."},
        {"cohort_upstream_in_flight", "gauge", "Requests in flight to an upstream server."},
        {"cohort_upstream_ejections_total", "counter", "Times an upstream server was ejected for failing."},
    };
    uint64_t inflight[METRICS_UPSTREAMS] = {0};
    for (int u = 0; u < METRICS_UPSTREAMS; u++)
        for (uint32_t i = 0; i < v->nslots; i++)
            inflight[u] += v->slots[i].upstream_inflight[u];
    for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
        family(o, fams[f].name, fams[f].type, fams[f].help);
        for (int u = 0; u < METRICS_UPSTREAMS; u++) {
            char name[METRICS_NAME_LEN + 1];
            if (!v->shm->upstream[u].name[0])
                continue;
            memcpy(name, v->shm->upstream[u].name, METRICS_NAME_LEN);
            name[METRICS_NAME_LEN] = '\0';
            sbuf_printf(o, "%s{upstream=\"", fams[f].name);
            label_value(o, name);
            sbuf_puts(o, "\"} ");
            switch (f) {
            case 0: sbuf_printf(o, "%llu\n", (unsigned long long)sum[u].requests); break;
            case 1: sbuf_printf(o, "%llu\n", (unsigned long long)sum[u].failures); break;
            case 2: sbuf_printf(o, "%llu\n", (unsigned long long)sum[u].responses); break;
            case 3: seconds(o, sum[u].latency_us_sum); sbuf_puts(o, "\n"); break;
            case 5: sbuf_printf(o, "%llu\n", (unsigned long long)inflight[u]); break;
            case 6: sbuf_printf(o, "%llu\n", (unsigned long long)metrics_get(v->shm->upstream[u].ejections)); break;
            default: sbuf_printf(o, "%llu\n", (unsigned long long)metrics_get(v->shm->upstream[u].up)); break;
            }
        }
    }
}

#define OFF(f) offsetof(struct metrics_slot, f)

void stats_render_prometheus(struct sbuf *o, const struct stats_view *v)
{
    struct metrics_slot t;
    stats_view_total(v, &t);
    render_requests(o, v, &t);
    render_histogram(o, &t);
    family(o, "cohort_http_received_bytes_total", "counter", "Bytes read from clients.");
    sample_u64(o, "cohort_http_received_bytes_total", t.bytes_in);
    family(o, "cohort_http_sent_bytes_total", "counter", "Bytes written to clients.");
    sample_u64(o, "cohort_http_sent_bytes_total", t.bytes_out);
    family(o, "cohort_http_connections_accepted_total", "counter", "Connections accepted.");
    sample_u64(o, "cohort_http_connections_accepted_total", t.conns_total);
    family(o, "cohort_http_connections_open", "gauge", "Connections open now.");
    sample_u64(o, "cohort_http_connections_open", t.conns_open);
    family(o, "cohort_http_requests_in_flight", "gauge", "Requests being answered now.");
    sample_u64(o, "cohort_http_requests_in_flight", t.inflight);
    family(o, "cohort_cache_hits_total", "counter", "Catalog cache hits.");
    sample_u64(o, "cohort_cache_hits_total", t.cache_hits);
    family(o, "cohort_cache_misses_total", "counter", "Catalog cache misses.");
    sample_u64(o, "cohort_cache_misses_total", t.cache_misses);
    family(o, "cohort_redis_commands_total", "counter", "Redis commands sent.");
    sample_u64(o, "cohort_redis_commands_total", t.redis_commands);
    family(o, "cohort_redis_errors_total", "counter", "Redis commands that failed.");
    sample_u64(o, "cohort_redis_errors_total", t.redis_errors);
    family(o, "cohort_redis_reconnects_total", "counter", "Redis reconnections.");
    sample_u64(o, "cohort_redis_reconnects_total", t.redis_reconnects);
    family(o, "cohort_worker_restarts_total", "counter", "Times the master restarted the worker with this id.");
    for (int i = 0; i < METRICS_MAX_WORKERS; i++) {
        uint64_t n = metrics_get(v->shm->restarts[i]);
        int live = 0;
        for (uint32_t k = 0; k < v->nslots && !live; k++)
            live = v->slots[k].pid && v->slots[k].worker_id == (uint64_t)i;
        if (n || live)
            sbuf_printf(o, "cohort_worker_restarts_total{worker=\"%d\"} %llu\n", i, (unsigned long long)n);
    }
    per_worker(o, v, "cohort_worker_requests_total", "counter", "Requests answered by this worker process.",
               OFF(requests), 1);
    per_worker(o, v, "cohort_worker_connections_open", "gauge", "Connections open in the worker.", OFF(conns_open), 1);
    per_worker(o, v, "cohort_worker_resident_memory_bytes", "gauge", "Resident set size of the worker.", OFF(rss), 1);
    per_worker(o, v, "cohort_worker_event_loop_lag_max_seconds", "gauge",
               "Longest event-loop delay in the last whole second.", OFF(loop_lag_max_us), 1e-6);
    per_worker(o, v, "cohort_worker_event_loop_lag_avg_seconds", "gauge",
               "Average event-loop delay in the last whole second.", OFF(loop_lag_avg_us), 1e-6);
    per_worker(o, v, "cohort_worker_start_time_seconds", "gauge", "When the worker started (Unix time).",
               OFF(started_ms), 1e-3);
    per_worker(o, v, "cohort_worker_redis_up", "gauge", "1 while the worker's Redis connection is up.", OFF(redis_up), 1);
    render_upstreams(o, v);
    family(o, "cohort_start_time_seconds", "gauge", "When the master started (Unix time).");
    sbuf_printf(o, "cohort_start_time_seconds %.3f\n", (double)v->shm->started_ms / 1000.0);
}

/* --- JSON ---------------------------------------------------------------- */

static void jkey_u64(struct sbuf *o, const char *key, uint64_t v, int comma)
{
    sbuf_printf(o, "%s\"%s\":%llu", comma ? "," : "", key, (unsigned long long)v);
}

static void jkey_num(struct sbuf *o, const char *key, double v, int comma)
{
    sbuf_printf(o, "%s\"%s\":", comma ? "," : "", key);
    sbuf_json_num(o, v);
}

static void json_status(struct sbuf *o, const uint64_t *st)
{
    sbuf_puts(o, "{");
    for (int c = 1; c <= METRICS_CLASSES; c++)
        jkey_u64(o, class_names[c % METRICS_CLASSES], st[c % METRICS_CLASSES], c > 1);
    sbuf_puts(o, "}");
}

static void json_totals(struct sbuf *o, const struct stats_view *v, const struct metrics_slot *t)
{
    uint64_t n = hist_count(t);
    sbuf_puts(o, ",\"totals\":{");
    jkey_u64(o, "requests", t->requests, 0);
    sbuf_puts(o, ",\"status\":");
    json_status(o, t->status);
    jkey_u64(o, "bytesIn", t->bytes_in, 1);
    jkey_u64(o, "bytesOut", t->bytes_out, 1);
    jkey_u64(o, "connectionsTotal", t->conns_total, 1);
    jkey_u64(o, "connectionsOpen", t->conns_open, 1);
    jkey_u64(o, "inflight", t->inflight, 1);
    jkey_u64(o, "restarts", restarts_total(v->shm), 1);
    sbuf_puts(o, ",\"latency\":{");
    jkey_num(o, "avgMs", n ? (double)t->latency_us_sum / (double)n / 1000.0 : 0, 0);
    jkey_num(o, "p50Ms", metrics_percentile(t->latency, 0.50) / 1000.0, 1);
    jkey_num(o, "p90Ms", metrics_percentile(t->latency, 0.90) / 1000.0, 1);
    jkey_num(o, "p99Ms", metrics_percentile(t->latency, 0.99) / 1000.0, 1);
    jkey_u64(o, "sumUs", t->latency_us_sum, 1);
    jkey_u64(o, "count", n, 1);
    sbuf_puts(o, "},\"cache\":{");
    jkey_u64(o, "hits", t->cache_hits, 0);
    jkey_u64(o, "misses", t->cache_misses, 1);
    if (t->cache_hits + t->cache_misses)
        jkey_num(o, "hitRate", (double)t->cache_hits / (double)(t->cache_hits + t->cache_misses), 1);
    else
        sbuf_puts(o, ",\"hitRate\":null");
    sbuf_puts(o, "},\"redis\":{");
    jkey_u64(o, "commands", t->redis_commands, 0);
    jkey_u64(o, "errors", t->redis_errors, 1);
    jkey_u64(o, "reconnects", t->redis_reconnects, 1);
    jkey_u64(o, "workersUp", t->redis_up, 1);
    sbuf_puts(o, "}}");
}

static void json_histogram(struct sbuf *o, const struct metrics_slot *t)
{
    sbuf_puts(o, ",\"histogram\":{\"boundsUs\":[");
    for (int i = 0; i < METRICS_BUCKETS - 1; i++)
        sbuf_printf(o, "%s%llu", i ? "," : "", (unsigned long long)metrics_bucket_bound(i));
    sbuf_puts(o, "],\"counts\":[");
    for (int i = 0; i < METRICS_BUCKETS; i++)
        sbuf_printf(o, "%s%llu", i ? "," : "", (unsigned long long)t->latency[i]);
    sbuf_puts(o, "]}");
}

static void json_routes(struct sbuf *o, const struct stats_view *v, const struct metrics_slot *t)
{
    int first = 1;
    sbuf_puts(o, ",\"routes\":[");
    for (int r = 0; r < METRICS_ROUTES; r++) {
        uint64_t counts[METRICS_CLASSES], n = 0;
        if (!route_counts(v, t, r, counts))
            continue;
        for (int c = 0; c < METRICS_CLASSES; c++)
            n += counts[c];
        if (!n && !(v->route_names[r] && r != METRICS_ROUTE_NONE && r != METRICS_ROUTE_OTHER))
            continue;
        const char *name = route_label(v, r);
        sbuf_puts(o, first ? "{\"route\":" : ",{\"route\":");
        first = 0;
        sbuf_json_str(o, name, strlen(name));
        jkey_u64(o, "requests", n, 1);
        sbuf_puts(o, ",\"status\":");
        json_status(o, counts);
        sbuf_puts(o, "}");
    }
    sbuf_puts(o, "]");
}

static void json_workers(struct sbuf *o, const struct stats_view *v)
{
    int first = 1;
    sbuf_puts(o, ",\"workers\":[");
    for (uint32_t i = 0; i < v->nslots; i++) {
        const struct metrics_slot *s = &v->slots[i];
        if (!s->pid)
            continue;
        uint64_t n = hist_count(s);
        sbuf_puts(o, first ? "{" : ",{");
        first = 0;
        jkey_u64(o, "id", s->worker_id, 0);
        jkey_u64(o, "pid", s->pid, 1);
        jkey_u64(o, "startedAt", s->started_ms, 1);
        jkey_num(o, "uptime", v->now_ms > s->started_ms ? (double)(v->now_ms - s->started_ms) / 1000.0 : 0, 1);
        jkey_u64(o, "restarts", restarts_of(v->shm, s->worker_id), 1);
        jkey_u64(o, "rss", s->rss, 1);
        jkey_u64(o, "connections", s->conns_open, 1);
        jkey_u64(o, "inflight", s->inflight, 1);
        jkey_u64(o, "requests", s->requests, 1);
        jkey_u64(o, "errors", s->status[5], 1);
        jkey_num(o, "avgResponseTime", n ? (double)s->latency_us_sum / (double)n / 1000.0 : 0, 1);
        jkey_num(o, "loopLagMaxMs", (double)s->loop_lag_max_us / 1000.0, 1);
        jkey_num(o, "loopLagAvgMs", (double)s->loop_lag_avg_us / 1000.0, 1);
        sbuf_printf(o, ",\"redisUp\":%s}", s->redis_up ? "true" : "false");
    }
    sbuf_puts(o, "]");
}

static void json_upstreams(struct sbuf *o, const struct stats_view *v)
{
    int first = 1;
    sbuf_puts(o, ",\"upstreams\":[");
    for (int u = 0; u < METRICS_UPSTREAMS; u++) {
        const struct metrics_upstream_state *st = &v->shm->upstream[u];
        if (!st->name[0])
            continue;
        struct metrics_upstream_counts c = v->retired.upstream[u];
        uint64_t inflight = 0;
        for (uint32_t i = 0; i < v->nslots; i++) {
            c.requests += v->slots[i].upstream[u].requests;
            c.failures += v->slots[i].upstream[u].failures;
            c.latency_us_sum += v->slots[i].upstream[u].latency_us_sum;
            c.responses += v->slots[i].upstream[u].responses;
            inflight += v->slots[i].upstream_inflight[u];
        }
        sbuf_puts(o, first ? "{\"name\":" : ",{\"name\":");
        first = 0;
        sbuf_json_str(o, st->name, strnlen(st->name, METRICS_NAME_LEN));
        sbuf_printf(o, ",\"up\":%s", metrics_get(st->up) ? "true" : "false");
        /* the balancer's (src/proxy/health.c): group, state, weight, in flight, ejections */
        static const char *const states[] = {"up", "down", "ejected", "warming"};
        uint64_t state = metrics_get(st->state);
        sbuf_puts(o, ",\"group\":");
        sbuf_json_str(o, st->group, strnlen(st->group, METRICS_NAME_LEN));
        sbuf_printf(o, ",\"state\":\"%s\"", state < 4 ? states[state] : "up");
        jkey_u64(o, "weight", metrics_get(st->weight), 1);
        sbuf_printf(o, ",\"backup\":%s", metrics_get(st->backup) ? "true" : "false");
        jkey_u64(o, "inflight", inflight, 1);
        jkey_u64(o, "responses", c.responses, 1);
        jkey_u64(o, "ejections", metrics_get(st->ejections), 1);
        jkey_u64(o, "requests", c.requests, 1);
        jkey_u64(o, "failures", c.failures, 1);
        jkey_num(o, "avgMs", c.responses ? (double)c.latency_us_sum / (double)c.responses / 1000.0 : 0, 1);
        sbuf_puts(o, "}");
    }
    sbuf_puts(o, "]");
}

void stats_render_json(struct sbuf *o, const struct stats_view *v)
{
    struct metrics_slot t;
    stats_view_total(v, &t);
    uint64_t n = hist_count(&t);
    sbuf_puts(o, "{");
    jkey_u64(o, "requestCount", t.requests, 0);
    jkey_u64(o, "errorCount", t.status[5], 1);
    jkey_num(o, "avgResponseTime", n ? (double)t.latency_us_sum / (double)n / 1000.0 : 0, 1);
    jkey_u64(o, "time", v->now_ms, 1);
    jkey_u64(o, "startedAt", v->shm->started_ms, 1);
    jkey_num(o, "uptime", v->now_ms > v->shm->started_ms ? (double)(v->now_ms - v->shm->started_ms) / 1000.0 : 0, 1);
    json_totals(o, v, &t);
    json_histogram(o, &t);
    json_routes(o, v, &t);
    json_workers(o, v);
    json_upstreams(o, v);
    sbuf_puts(o, "}\n");
}

/* --- handlers ------------------------------------------------------------ */

static void render_handle(struct http_exchange *x, int prometheus)
{
    struct stats *s = x->match.route->data;
    struct stats_view v;
    struct sbuf out;
    sbuf_init(&out);
    if (stats_view_load(&v, s->env.shm, s->env.router) < 0) {
        http_error(x, 503, "out of memory");
        return;
    }
    if (prometheus)
        stats_render_prometheus(&out, &v);
    else
        stats_render_json(&out, &v);
    stats_view_free(&v);
    if (out.oom) {
        sbuf_free(&out);
        http_error(x, 503, "out of memory");
        return;
    }
    http_begin(x, 200);
    static const char nocache[] = "no-store";
    http_header(x, "Cache-Control", nocache, sizeof(nocache) - 1);
    http_finish(x, prometheus ? "text/plain; version=0.0.4; charset=utf-8" : "application/json", out.data, out.len);
    sbuf_free(&out);
}

static void metrics_handle(struct http_exchange *x)
{
    render_handle(x, 1);
}

static void stats_handle(struct http_exchange *x)
{
    render_handle(x, 0);
}

static void status_handle(struct http_exchange *x)
{
    http_respond(x, 200, "text/html; charset=utf-8", dashboard_html, dashboard_html_len);
}

#ifdef COHORT_TEST_ROUTES
/* Test builds only: blocks the event loop, so a test can see the lag. */
static void block_handle(struct http_exchange *x)
{
    long ms = 100;
    if (x->req.query) {
        const char *p = memmem(x->req.query, x->req.query_len, "ms=", 3);
        if (p)
            ms = strtol(p + 3, NULL, 10);
    }
    if (ms < 0 || ms > 5000)
        ms = 5000;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    static const char body[] = "{\"blocked\":true}";
    http_respond(x, 200, "application/json", body, sizeof(body) - 1);
}
#endif

/* --- event-loop lag ------------------------------------------------------ */

/* Fires every LAG_TICK_MS; how late it runs is how long the loop was busy
 * elsewhere. The slot gets the max and average of each whole second. */
static void lag_tick(uv_timer_t *t)
{
    struct stats *s = t->data;
    uint64_t now = uv_hrtime();
    uint64_t late = now > s->lag_expect_ns ? now - s->lag_expect_ns : 0;
    s->lag_expect_ns = now + (uint64_t)LAG_TICK_MS * 1000000;
    if (late > s->lag_max_ns)
        s->lag_max_ns = late;
    s->lag_sum_ns += late;
    s->lag_ticks++;
    if (now - s->lag_window_ns >= 1000000000ull) {
        metrics_set(s->env.slot->loop_lag_max_us, s->lag_max_ns / 1000);
        metrics_set(s->env.slot->loop_lag_avg_us, s->lag_sum_ns / s->lag_ticks / 1000);
        s->lag_window_ns = now;
        s->lag_max_ns = s->lag_sum_ns = s->lag_ticks = 0;
    }
}

/* --- life ---------------------------------------------------------------- */

static int add_routes(struct stats *s, struct router *r)
{
    int rc = router_add(r, HTTP_M(HTTP_GET), "/metrics", metrics_handle, s);
    if (!rc)
        rc = router_add(r, HTTP_M(HTTP_GET), "/stats", stats_handle, s);
    if (!rc)
        rc = router_add(r, HTTP_M(HTTP_GET), "/status", status_handle, s);
#ifdef COHORT_TEST_ROUTES
    if (!rc)
        rc = router_add(r, HTTP_M(HTTP_GET), "/__test/block", block_handle, s);
#endif
    return rc;
}

static int start_admin(struct stats *s, char *err, size_t errlen)
{
    s->admin_router = router_new();
    if (!s->admin_router || add_routes(s, s->admin_router) < 0)
        return -ENOMEM;
    s->admin = http_server_new(s->env.loop, s->env.cfg, s->admin_router, NULL);
    if (!s->admin)
        return -ENOMEM;
    int r = http_server_listen_fd(s->admin, s->env.admin_fd, 0);
    if (r < 0)
        snprintf(err, errlen, "admin listener: %s", uv_strerror(r));
    return r;
}

struct stats *stats_new(const struct app_env *env, char *err, size_t errlen)
{
    struct stats *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->env = *env;
    int r = env->admin_fd > 0 ? start_admin(s, err, errlen) : add_routes(s, env->router);
    if (r < 0) {
        if (!*err)
            snprintf(err, errlen, "cannot add the /metrics, /stats and /status routes");
        if (s->admin)
            http_server_close(s->admin);
        router_free(s->admin_router);
        free(s);
        return NULL;
    }
    metrics_set(env->slot->worker_id, (uint64_t)env->worker_id);
    uv_timer_init(env->loop, &s->lag_timer);
    s->lag_timer.data = s;
    s->lag_window_ns = uv_hrtime();
    s->lag_expect_ns = s->lag_window_ns + (uint64_t)LAG_TICK_MS * 1000000;
    uv_timer_start(&s->lag_timer, lag_tick, LAG_TICK_MS, LAG_TICK_MS);
    uv_unref((uv_handle_t *)&s->lag_timer);
    return s;
}

static void part_done(struct stats *s)
{
    if (--s->pending == 0 && s->done)
        s->done(s->done_arg);
}

static void lag_closed(uv_handle_t *h)
{
    part_done(h->data);
}

static void admin_drained(struct http_server *srv, void *arg)
{
    struct stats *s = arg;
    http_server_close(srv);
    s->admin = NULL;
    part_done(s);
}

void stats_stop(struct stats *s, void (*done)(void *arg), void *arg)
{
    s->done = done;
    s->done_arg = arg;
    s->pending = 1 + (s->admin != NULL);
    uv_close((uv_handle_t *)&s->lag_timer, lag_closed);
    if (s->admin)
        http_server_drain(s->admin, admin_drained, s);
}

void stats_free(struct stats *s)
{
    if (!s)
        return;
    router_free(s->admin_router);
    free(s);
}
