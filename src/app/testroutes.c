#include "app/testroutes.h"

#ifndef COHORT_TEST_ROUTES

int testroutes_register(struct router *r, uv_loop_t *loop)
{
    (void)r;
    (void)loop;
    return 0;
}

void testroutes_hold_ready(void)
{
}

#else

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/server.h"

static uv_loop_t *test_loop;
static size_t leaked_mb;

/* Reads an unsigned query parameter "name=N"; `def` when absent. */
static long query_num(const struct http_exchange *x, const char *name, long def)
{
    const char *q = x->req.query;
    size_t n = strlen(name), len = x->req.query_len;
    for (size_t i = 0; q && i + n < len; i++)
        if ((i == 0 || q[i - 1] == '&') && strncmp(q + i, name, n) == 0 && q[i + n] == '=')
            return strtol(q + i + n + 1, NULL, 10);
    return def;
}

/* The "leaked" blocks stay reachable from this list, so the sanitizer build
 * (LeakSanitizer at exit) does not report what the route does on purpose. */
static void **leaked;

static void leak_handle(struct http_exchange *x)
{
    long mb = query_num(x, "mb", 1);
    for (long i = 0; i < mb && i < 4096; i++) {
        void **p = malloc(1 << 20);
        if (!p)
            break;
        memset(p, 0x5a, 1 << 20);
        *p = leaked;
        leaked = p;
        leaked_mb++;
    }
    char body[64];
    int n = snprintf(body, sizeof(body), "{\"leaked_mb\": %zu}", leaked_mb);
    http_respond(x, 200, "application/json", body, (size_t)n);
}

static void fail_handle(struct http_exchange *x)
{
    http_error(x, 500, "internal test fault");
}

struct sleeper {
    uv_timer_t timer;
    struct http_exchange *x;
};

static void sleeper_closed(uv_handle_t *h)
{
    free(h->data);
}

static void sleep_done(uv_timer_t *t)
{
    struct sleeper *s = t->data;
    http_respond(s->x, 200, "application/json", "{\"slept\": true}", 15);
    uv_close((uv_handle_t *)&s->timer, sleeper_closed);
}

static void sleep_handle(struct http_exchange *x)
{
    struct sleeper *s = malloc(sizeof(*s));
    if (!s) {
        http_error(x, 503, "out of memory");
        return;
    }
    s->x = x;
    uv_timer_init(test_loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, sleep_done, (uint64_t)query_num(x, "ms", 100), 0);
}

int testroutes_register(struct router *r, uv_loop_t *loop)
{
    int rc = 0;
    test_loop = loop;
    /* a worker that takes this many seconds to start (ready_timeout tests) */
    if (getenv("COHORT_TEST_HOLD_START"))
        sleep((unsigned)atoi(getenv("COHORT_TEST_HOLD_START")));
    rc |= router_add(r, HTTP_M(HTTP_GET), "/__test/leak", leak_handle, NULL);
    rc |= router_add(r, HTTP_M(HTTP_GET), "/__test/fail", fail_handle, NULL);
    rc |= router_add(r, HTTP_M(HTTP_GET), "/__test/sleep", sleep_handle, NULL);
    return rc;
}

void testroutes_hold_ready(void)
{
    const char *path = getenv("COHORT_TEST_HOLD_READY_FILE");
    char mark[512];
    if (!path || access(path, F_OK) != 0)
        return;
    /* PATH.PID says to the test that this worker listens and holds */
    snprintf(mark, sizeof(mark), "%s.%d", path, (int)getpid());
    FILE *f = fopen(mark, "w");
    if (f)
        fclose(f);
    for (int i = 0; i < 3000 && access(path, F_OK) == 0; i++)
        usleep(20000);
}

#endif
