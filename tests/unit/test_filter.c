/*
 * Unit tests for the route filter chain (src/http/filter.c) on a real
 * engine: the order of the hooks on the way in and out, a filter that
 * answers (later filters and the handler do not run; earlier filters see
 * the answer), a filter that holds a request and passes it on later, and
 * a filter that rewrites the status, the fields and the body, whole and
 * streamed.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "core/config.h"
#include "http/filter.h"
#include "http/router.h"
#include "http/server.h"
#include "modules.h"
#include "testnet.h"

static char trace[2048];

static void note(const char *fmt, const char *who, const char *what)
{
    size_t n = strlen(trace);
    snprintf(trace + n, sizeof trace - n, fmt, who, what);
}

/* --- a filter that writes down every hook --- */

static int rec_request(struct http_exchange *x, void *conf, void *state)
{
    (void)x;
    (void)state;
    note("%s.%s ", conf, "req");
    return HTTP_FILTER_NEXT;
}

static void rec_status(struct http_exchange *x, void *conf, void *state, int *status)
{
    (void)x;
    (void)state;
    char s[16];
    snprintf(s, sizeof s, "status%d", *status);
    note("%s.%s ", conf, s);
}

static int rec_header(struct http_exchange *x, void *conf, void *state, const char *n, size_t nl, const char *v,
                      size_t vl)
{
    (void)x;
    (void)state;
    (void)v;
    (void)vl;
    char s[64];
    snprintf(s, sizeof s, "hdr:%.*s", (int)nl, n);
    note("%s.%s ", conf, s);
    return 0;
}

static void rec_head_end(struct http_exchange *x, void *conf, void *state, struct http_resp_head *h)
{
    (void)x;
    (void)state;
    (void)h;
    note("%s.%s ", conf, "head");
}

static void rec_body(struct http_exchange *x, void *conf, void *state, struct http_piece *p)
{
    (void)x;
    (void)state;
    char s[64];
    snprintf(s, sizeof s, "body:%.*s%s", (int)p->len, (const char *)p->data, p->last ? "$" : "");
    note("%s.%s ", conf, s);
}

static void rec_end(struct http_exchange *x, void *conf, void *state, int complete)
{
    (void)x;
    (void)state;
    note("%s.%s ", conf, complete ? "end" : "cut");
}

static const struct http_filter_ops rec_ops = {.name = "rec", .request = rec_request, .status = rec_status,
                                               .header = rec_header, .head_end = rec_head_end, .body = rec_body,
                                               .end = rec_end};

/* --- a filter that answers --- */

static int deny_request(struct http_exchange *x, void *conf, void *state)
{
    (void)state;
    note("%s.%s ", conf, "deny");
    http_error(x, 403, "no");
    return HTTP_FILTER_HOLD;
}

static const struct http_filter_ops deny_ops = {.name = "deny", .request = deny_request, .status = rec_status,
                                                .end = rec_end};

/* --- a filter that holds the request for a while --- */

struct hold_state {
    uv_timer_t *t;
};

static void hold_go(uv_timer_t *t)
{
    note("%s.%s ", "W", "go");
    http_filter_next(t->data);
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static int hold_request(struct http_exchange *x, void *conf, void *state)
{
    struct hold_state *st = state;
    note("%s.%s ", conf, "hold");
    cr_assert((st->t = malloc(sizeof(*st->t))));
    uv_timer_init(uv_default_loop(), st->t);
    st->t->data = x;
    uv_timer_start(st->t, hold_go, 20, 0);
    return HTTP_FILTER_HOLD;
}

static void hold_end(struct http_exchange *x, void *conf, void *state, int complete)
{
    struct hold_state *st = state;
    (void)x;
    (void)complete;
    note("%s.%s ", conf, "end");
    uv_close((uv_handle_t *)st->t, timer_closed);
}

static const struct http_filter_ops hold_ops = {.name = "hold", .state_size = sizeof(struct hold_state),
                                                .request = hold_request, .status = rec_status,
                                                .end = hold_end};

/* --- a filter that rewrites the response: 200 becomes 203, X-Drop goes,
 * X-Added comes, the body is upper-cased with "!" after its last piece --- */

struct upper_state {
    char buf[256];
};

static void up_status(struct http_exchange *x, void *conf, void *state, int *status)
{
    (void)x;
    (void)conf;
    (void)state;
    if (*status == 200)
        *status = 203;
}

static int up_header(struct http_exchange *x, void *conf, void *state, const char *n, size_t nl, const char *v,
                     size_t vl)
{
    (void)x;
    (void)conf;
    (void)state;
    (void)v;
    (void)vl;
    return nl == 6 && memcmp(n, "X-Drop", 6) == 0;
}

static void up_head_end(struct http_exchange *x, void *conf, void *state, struct http_resp_head *h)
{
    (void)conf;
    (void)state;
    h->length = -1;
    h->content_type = "text/x-upper";
    http_filter_header(x, "X-Added", "1", 1);
}

static void up_body(struct http_exchange *x, void *conf, void *state, struct http_piece *p)
{
    struct upper_state *st = state;
    (void)x;
    (void)conf;
    size_t n = 0;
    for (size_t i = 0; i < p->len && n + 2 < sizeof st->buf; i++)
        st->buf[n++] = (char)toupper(((const unsigned char *)p->data)[i]);
    if (p->last)
        st->buf[n++] = '!';
    p->data = st->buf;
    p->len = n;
}

static const struct http_filter_ops upper_ops = {.name = "upper", .state_size = sizeof(struct upper_state),
                                                 .status = up_status, .header = up_header,
                                                 .head_end = up_head_end, .body = up_body};

/* --- handlers --- */

static void whole_handle(struct http_exchange *x)
{
    note("%s%s ", "H", "");
    http_begin(x, 200);
    http_header(x, "X-Drop", "1", 1);
    http_header(x, "X-Keep", "1", 1);
    http_finish(x, "text/plain", "hello", 5);
}

static void stream_handle(struct http_exchange *x)
{
    note("%s%s ", "H", "");
    http_begin(x, 200);
    http_header(x, "X-Drop", "1", 1);
    http_stream_head(x, 6);
    http_stream_write(x, "abc", 3);
    http_stream_write(x, "def", 3);
    http_stream_end(x);
}

static void chunks_handle(struct http_exchange *x)
{
    note("%s%s ", "H", "");
    http_begin(x, 200);
    http_begin_chunks(x, "text/plain");
    http_chunk(x, "ab", 2);
    http_chunk(x, "cd", 2);
    http_end_chunks(x);
}

/* --- the engine and a client --- */

static struct cfg cfg;
static struct router *router;
static struct http_server *srv;
static int port;
static struct http_chain *chains[16];
static size_t nchains;

static const struct http_chain *chain(const struct http_filter *f, size_t n)
{
    struct http_chain *c = http_chain_new(f, n);
    cr_assert(c);
    chains[nchains++] = c;
    return c;
}

static void setup(void)
{
    char err[256];
    modules_register();
    cr_assert_eq(cfg_from_json("{}", &cfg, err, sizeof err), 0, "%s", err);
    router = router_new();
    struct http_filter a = {&rec_ops, "A"}, b = {&rec_ops, "B"}, d = {&deny_ops, "D"}, w = {&hold_ops, "W"},
                       u = {&upper_ops, NULL};
    struct http_filter ab[] = {a, b}, adb[] = {a, d, b}, awb[] = {a, w, b}, aw[] = {a, w}, au[] = {a, u};
    cr_assert_eq(router_add_chain(router, HTTP_M(HTTP_GET), "/ab", whole_handle, NULL, 0, chain(ab, 2)), 0);
    cr_assert_eq(router_add_chain(router, HTTP_M(HTTP_GET), "/deny", whole_handle, NULL, 0, chain(adb, 3)), 0);
    cr_assert_eq(router_add_chain(router, HTTP_M(HTTP_GET), "/hold", whole_handle, NULL, 0, chain(awb, 3)), 0);
    cr_assert_eq(router_add_chain(router, HTTP_M(HTTP_GET), "/hold-last", whole_handle, NULL, 0, chain(aw, 2)), 0);
    cr_assert_eq(router_add_chain(router, HTTP_M(HTTP_GET), "/upper", whole_handle, NULL, 0, chain(au, 2)), 0);
    cr_assert_eq(router_add_chain(router, HTTP_M(HTTP_GET), "/upstream", stream_handle, NULL, ROUTE_STREAM,
                                  chain(au, 2)), 0);
    cr_assert_eq(router_add_chain(router, HTTP_M(HTTP_GET), "/upchunks", chunks_handle, NULL, 0, chain(au, 2)), 0);
    cr_assert_eq(router_add(router, HTTP_M(HTTP_GET), "/plain", whole_handle, NULL), 0);
    srv = http_server_new(uv_default_loop(), &cfg, router, NULL);
    cr_assert(srv);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(listen(fd, 16), 0);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    port = ntohs(sa.sin_port);
    cr_assert_eq(http_server_listen_fd(srv, fd, 0), 0);
}

static void drained(struct http_server *s, void *arg)
{
    (void)s;
    *(int *)arg = 1;
}

/* Connections go first (a drain), then the server. */
static void teardown(void)
{
    int done = 0;
    http_server_drain(srv, drained, &done);
    time_t until = time(NULL) + 10;
    while (!done && time(NULL) < until)
        uv_run(uv_default_loop(), UV_RUN_ONCE);
    cr_assert(done, "the connections did not close");
    http_server_close(srv);
    for (int i = 0; i < 100 && uv_run(uv_default_loop(), UV_RUN_NOWAIT); i++)
        ;
    router_free(router);
    for (size_t i = 0; i < nchains; i++)
        http_chain_free(chains[i]);
    cfg_free(&cfg);
}

/* Sends a GET and returns the whole response (the connection closes). */
static const char *get(const char *path)
{
    static char resp[4096];
    size_t got = 0;
    trace[0] = '\0';
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    time_t until = time(NULL) + 10;
    for (;;) {
        uv_run(uv_default_loop(), UV_RUN_NOWAIT);
        ssize_t r = read(fd, resp + got, sizeof resp - 1 - got);
        if (r == 0)
            break;
        if (r > 0)
            got += (size_t)r;
        else if (errno != EAGAIN)
            break;
        cr_assert(time(NULL) < until, "no answer for %s: %.*s", path, (int)got, resp);
        usleep(1000);
    }
    for (int i = 0; i < 10; i++) /* the end hooks run as the exchange ends */
        uv_run(uv_default_loop(), UV_RUN_NOWAIT);
    close(fd);
    resp[got] = '\0';
    return resp;
}

TestSuite(filter, .init = setup, .fini = teardown);

Test(filter, in_in_order_out_in_reverse)
{
    const char *r = get("/ab");
    cr_assert(strstr(r, "HTTP/1.1 200 OK\r\n"), "%s", r);
    cr_assert_str_eq(trace, "A.req B.req H B.status200 A.status200 B.hdr:X-Drop A.hdr:X-Drop B.hdr:X-Keep "
                            "A.hdr:X-Keep B.head A.head B.body:hello$ A.body:hello$ B.end A.end ");
}

Test(filter, an_answer_stops_the_chain_and_earlier_filters_see_it)
{
    const char *r = get("/deny");
    cr_assert(strstr(r, "HTTP/1.1 403 Forbidden\r\n"), "%s", r);
    /* neither B nor the handler ran; D does not see its own answer; A does */
    cr_assert_str_eq(trace, "A.req D.deny A.status403 A.head A.body:{\"error\": \"no\"}\n$ D.end A.end ",
                     "%s", trace);
}

Test(filter, a_held_request_goes_on_later)
{
    const char *r = get("/hold");
    cr_assert(strstr(r, "HTTP/1.1 200 OK\r\n"), "%s", r);
    /* the filter that held it sees the answer it passed on */
    cr_assert(strncmp(trace, "A.req W.hold W.go B.req H B.status200 W.status200 A.status200 ", 62) == 0, "%s",
              trace);
    cr_assert(strstr(trace, "B.end W.end A.end "), "%s", trace);
}

Test(filter, the_last_filter_held_it_and_sees_the_answer)
{
    const char *r = get("/hold-last");
    cr_assert(strstr(r, "HTTP/1.1 200 OK\r\n"), "%s", r);
    cr_assert(strncmp(trace, "A.req W.hold W.go H W.status200 A.status200 ", 44) == 0, "%s", trace);
}

Test(filter, a_whole_body_rewritten)
{
    const char *r = get("/upper");
    cr_assert(strstr(r, "HTTP/1.1 203 "), "%s", r);
    cr_assert(!strstr(r, "X-Drop"), "%s", r);
    cr_assert(strstr(r, "X-Keep: 1\r\n") && strstr(r, "X-Added: 1\r\n"), "%s", r);
    cr_assert(strstr(r, "Content-Type: text/x-upper\r\n"), "%s", r);
    cr_assert(strstr(r, "Content-Length: 6\r\n") && strstr(r, "\r\n\r\nHELLO!"), "%s", r);
    /* A sees what the rewriting filter made of the response */
    cr_assert(strstr(trace, "A.status203 A.hdr:X-Keep A.head A.body:HELLO!$ "), "%s", trace);
}

Test(filter, a_streamed_body_rewritten_goes_chunked)
{
    const char *r = get("/upstream");
    cr_assert(strstr(r, "HTTP/1.1 203 "), "%s", r);
    cr_assert(strstr(r, "Transfer-Encoding: chunked\r\n"), "%s", r);
    cr_assert(!strstr(r, "Content-Length"), "%s", r);
    cr_assert(strstr(r, "\r\n\r\n3\r\nABC\r\n3\r\nDEF\r\n1\r\n!\r\n0\r\n\r\n"), "%s", r);
}

Test(filter, chunks_rewritten)
{
    const char *r = get("/upchunks");
    cr_assert(strstr(r, "\r\n\r\n2\r\nAB\r\n2\r\nCD\r\n1\r\n!\r\n0\r\n\r\n"), "%s", r);
}

Test(filter, a_route_without_filters)
{
    const char *r = get("/plain");
    cr_assert(strstr(r, "HTTP/1.1 200 OK\r\n") && strstr(r, "X-Drop: 1\r\n") && strstr(r, "\r\n\r\nhello"), "%s",
              r);
    cr_assert_str_eq(trace, "H ");
}
