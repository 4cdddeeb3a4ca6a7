/* Prometheus and JSON rendering of the counters segment. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "app/stats.h"
#include "http/router.h"

static void h(struct http_exchange *x) { (void)x; }

static struct metrics_shm *m;
static int fd;
static struct router *r;
static struct stats_view v;
static struct sbuf out;

static void setup(void)
{
    fd = metrics_create(4, &m);
    cr_assert_geq(fd, 0);
    r = router_new();
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/static/*", h, NULL), 0); // index 0
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/", h, NULL), 0);         /* index 1 */
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/q\"x\\y", h, NULL), 0);  /* index 2 */
    cr_assert_eq(router_add(r, HTTP_M(HTTP_POST), "/", h, NULL), 0);       /* index 3: "/" again */
    metrics_mark_used(m, 2); /* as the master does when it hands out slots */
    m->slots[0].pid = 100, m->slots[0].worker_id = 0, m->slots[0].rss = 4096;
    m->slots[0].loop_lag_max_us = 2500;
    m->slots[2].pid = 101, m->slots[2].worker_id = 1, m->slots[2].conns_open = 2;
    metrics_request(&m->slots[0], 2, 200, 10);  /* route "/" */
    metrics_request(&m->slots[0], 2, 200, 30);
    metrics_request(&m->slots[2], 2, 503, 2000);
    metrics_request(&m->slots[2], 1, 200, 5);   // the prefix route
    metrics_request(&m->slots[2], 0, 404, 5);   /* none */
    metrics_request(&m->retired, 3, 200, 5);    /* a gone worker's, with odd route */
    metrics_request(&m->slots[0], 4, 201, 0);   /* POST "/": the same label as GET "/" */
    m->restarts[1] = 2;
    sbuf_init(&out);
    cr_assert_eq(stats_view_load(&v, m, r), 0);
}

static void teardown(void)
{
    stats_view_free(&v);
    sbuf_free(&out);
    router_free(r);
    munmap(m, metrics_size(4));
    close(fd);
}

TestSuite(stats, .init = setup, .fini = teardown);

Test(stats, route_index_is_add_order)
{
    cr_assert_str_eq(router_at(r, 0)->name, "/static/*");
    cr_assert_str_eq(router_at(r, 1)->name, "/");
    cr_assert_null(router_at(r, 4));
    struct route_match rm;
    router_match(r, HTTP_GET, "/", 1, &rm);
    cr_assert_eq(rm.route->index, 1);
}

static int valid_name(const char *s, size_t n)
{
    if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return 0;
    return 1;
}

/* Structure: HELP then TYPE before a family's samples; each sample's name
 * is its family's (or _bucket/_sum/_count of a histogram); valid names; a
 * value that parses; no series twice. */
static void check_exposition(const char *text)
{
    char family[128] = "", type[32] = "";
    char *copy = strdup(text), *save = NULL;
    char *seen[1024];
    int nseen = 0;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            char *sp = strchr(line + 7, ' ');
            cr_assert_not_null(sp, "%s", line);
            cr_assert(valid_name(line + 7, (size_t)(sp - line - 7)), "%s", line);
            snprintf(family, sizeof(family), "%.*s", (int)(sp - line - 7), line + 7);
            type[0] = '\0';
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            cr_assert_eq(strncmp(line + 7, family, strlen(family)), 0, "TYPE after its HELP: %s", line);
            snprintf(type, sizeof(type), "%s", line + 8 + strlen(family));
            cr_assert(!strcmp(type, "counter") || !strcmp(type, "gauge") || !strcmp(type, "histogram"), "%s", line);
            continue;
        }
        cr_assert_neq(line[0], '#', "unknown comment %s", line);
        cr_assert(type[0], "sample before TYPE: %s", line);
        size_t n = strcspn(line, "{ ");
        cr_assert(valid_name(line, n), "%s", line);
        int ok = n == strlen(family) && !strncmp(line, family, n);
        if (!strcmp(type, "histogram"))
            ok = !strncmp(line, family, strlen(family)) &&
                 (!strncmp(line + strlen(family), "_bucket{", 8) || !strncmp(line + strlen(family), "_sum ", 5) ||
                  !strncmp(line + strlen(family), "_count ", 7));
        if (!strcmp(type, "counter") && ok)
            ok = n > 6 && !strncmp(line + n - 6, "_total", 6);
        cr_assert(ok, "sample %s outside its family %s (%s)", line, family, type);
        char *val = strrchr(line, ' ');
        char *end;
        strtod(val + 1, &end);
        cr_assert(*end == '\0' && end > val + 1, "value of %s", line);
        for (int i = 0; i < nseen; i++)
            cr_assert_neq(strncmp(seen[i], line, (size_t)(val - line) + 1), 0, "series twice: %s", line);
        if (nseen < 1024)
            seen[nseen++] = line;
    }
    free(copy);
}

Test(stats, prometheus_has_valid_structure)
{
    stats_render_prometheus(&out, &v);
    cr_assert_not(out.oom);
    check_exposition(out.data);
}

Test(stats, prometheus_requests_by_route_and_class)
{
    stats_render_prometheus(&out, &v);
    const char *t = out.data;
    cr_assert(strstr(t, "\ncohort_http_requests_total{route=\"/\",code=\"2xx\"} 3\n"), "%s", t);
    cr_assert(strstr(t, "\ncohort_http_requests_total{route=\"/\",code=\"5xx\"} 1\n"));
    cr_assert(strstr(t, "\ncohort_http_requests_total{route=\"/static/*\",code=\"2xx\"} 1\n"));
    cr_assert(strstr(t, "\ncohort_http_requests_total{route=\"none\",code=\"4xx\"} 1\n"));
    cr_assert(strstr(t, "\ncohort_http_requests_total{route=\"/q\\\"x\\\\y\",code=\"2xx\"} 1\n"), "label escaping");
    cr_assert_null(strstr(t, "code=\"3xx\""), "zero series are left out");
}

Test(stats, prometheus_histogram_is_cumulative_and_counts_match)
{
    stats_render_prometheus(&out, &v);
    const char *t = out.data;
    cr_assert(strstr(t, "\ncohort_http_request_duration_seconds_bucket{le=\"0.000008\"} 4\n"), "%s", t);
    cr_assert(strstr(t, "\ncohort_http_request_duration_seconds_bucket{le=\"0.000012\"} 5\n"));
    cr_assert(strstr(t, "\ncohort_http_request_duration_seconds_bucket{le=\"0.000032\"} 6\n"));
    cr_assert(strstr(t, "\ncohort_http_request_duration_seconds_bucket{le=\"0.002048\"} 7\n"));
    cr_assert(strstr(t, "\ncohort_http_request_duration_seconds_bucket{le=\"16.777216\"} 7\n"));
    cr_assert(strstr(t, "\ncohort_http_request_duration_seconds_bucket{le=\"+Inf\"} 7\n"));
    cr_assert(strstr(t, "\ncohort_http_request_duration_seconds_count 7\n"));
    cr_assert(strstr(t, "\ncohort_http_request_duration_seconds_sum 0.002055\n"));
    /* ascending le, non-decreasing counts */
    double last_le = -1, last_count = -1;
    for (const char *p = strstr(t, "_bucket{le=\""); p; p = strstr(p + 1, "_bucket{le=\"")) {
        double le = strncmp(p + 12, "+Inf", 4) ? strtod(p + 12, NULL) : 1e300;
        double c = strtod(strstr(p, "} ") + 2, NULL);
        cr_assert_gt(le, last_le);
        cr_assert_geq(c, last_count);
        last_le = le, last_count = c;
    }
}

Test(stats, prometheus_per_worker_gauges_and_restarts)
{
    stats_render_prometheus(&out, &v);
    const char *t = out.data;
    cr_assert(strstr(t, "\ncohort_worker_resident_memory_bytes{worker=\"0\",pid=\"100\"} 4096\n"), "%s", t);
    cr_assert(strstr(t, "\ncohort_worker_connections_open{worker=\"1\",pid=\"101\"} 2\n"));
    cr_assert(strstr(t, "\ncohort_worker_event_loop_lag_max_seconds{worker=\"0\",pid=\"100\"} 0.002500\n"));
    cr_assert(strstr(t, "\ncohort_worker_restarts_total{worker=\"1\"} 2\n"));
    cr_assert(strstr(t, "\ncohort_worker_restarts_total{worker=\"0\"} 0\n"));
    cr_assert(strstr(t, "\ncohort_http_connections_open 2\n"));
    cr_assert_null(strstr(t, "cohort_upstream_"), "no upstream series without upstreams");
}

Test(stats, prometheus_upstreams_when_named)
{
    strcpy(m->upstream[0].name, "10.0.0.5:3000");
    m->upstream[0].up = 1;
    m->slots[0].upstream[0].requests = 5;
    m->retired.upstream[0].requests = 1;
    m->slots[0].upstream[0].failures = 1;
    stats_view_free(&v);
    cr_assert_eq(stats_view_load(&v, m, r), 0);
    stats_render_prometheus(&out, &v);
    check_exposition(out.data);
    cr_assert(strstr(out.data, "\ncohort_upstream_requests_total{upstream=\"10.0.0.5:3000\"} 6\n"), "%s", out.data);
    cr_assert(strstr(out.data, "\ncohort_upstream_up{upstream=\"10.0.0.5:3000\"} 1\n"));
}

Test(stats, json_has_the_seed_fields_totals_and_workers)
{
    stats_render_json(&out, &v);
    json_error_t e;
    json_t *j = json_loads(out.data, 0, &e);
    cr_assert_not_null(j, "%s: %s", e.text, out.data);
    cr_assert_eq(json_integer_value(json_object_get(j, "requestCount")), 7);
    cr_assert_eq(json_integer_value(json_object_get(j, "errorCount")), 1);
    cr_assert_float_eq(json_number_value(json_object_get(j, "avgResponseTime")), 2055.0 / 7 / 1000, 1e-6);
    json_t *t = json_object_get(j, "totals");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(t, "status"), "2xx")), 5);
    cr_assert(json_is_null(json_object_get(json_object_get(t, "cache"), "hitRate")));
    json_t *w = json_object_get(j, "workers");
    cr_assert_eq(json_array_size(w), 2);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(w, 0), "pid")), 100);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(w, 1), "restarts")), 2);
    cr_assert_float_eq(json_number_value(json_object_get(json_array_get(w, 0), "loopLagMaxMs")), 2.5, 1e-9);
    json_t *hist = json_object_get(j, "histogram");
    cr_assert_eq(json_array_size(json_object_get(hist, "counts")), METRICS_BUCKETS);
    cr_assert_eq(json_array_size(json_object_get(hist, "boundsUs")), METRICS_BUCKETS - 1);
    cr_assert_eq(json_array_size(json_object_get(j, "upstreams")), 0);
    json_decref(j);
}
