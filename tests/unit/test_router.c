/* Router: priorities, parameters, prefixes, 404/405/501 and Allow. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "http/router.h"

static void h_a(struct http_exchange *x) { (void)x; }
static void h_b(struct http_exchange *x) { (void)x; }
static void h_c(struct http_exchange *x) { (void)x; }
static void h_d(struct http_exchange *x) { (void)x; }

static struct router *r;

static void setup(void)
{
    r = router_new();
    cr_assert_not_null(r);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/static/*", h_c, "static"), 0);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/", h_a, "root"), 0);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET) | HTTP_M(HTTP_PUT), "/api/products/:id", h_b, "product"), 0);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_POST), "/static/upload", h_d, "upload"), 0);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/static/deep/*", h_d, "deep"), 0);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_DELETE), "/a/:x/b/:y", h_d, "two"), 0);
}

static void teardown(void)
{
    router_free(r);
}

static struct route_match match(enum http_method m, const char *path)
{
    struct route_match rm;
    router_match(r, m, path, strlen(path), &rm);
    return rm;
}

TestSuite(router, .init = setup, .fini = teardown);

Test(router, exact_and_head_follows_get)
{
    struct route_match m = match(HTTP_GET, "/");
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.route->handler, h_a);
    m = match(HTTP_HEAD, "/");
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.route->handler, h_a);
}

Test(router, parameter_captured)
{
    struct route_match m = match(HTTP_PUT, "/api/products/42");
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.route->handler, h_b);
    const struct route_param *p = route_param_get(&m, "id");
    cr_assert_not_null(p);
    cr_assert_eq(p->value_len, 2);
    cr_assert_eq(memcmp(p->value, "42", 2), 0);
    cr_assert_null(route_param_get(&m, "nope"));
}

Test(router, two_parameters)
{
    struct route_match m = match(HTTP_DELETE, "/a/1/b/xyz");
    cr_assert_eq(m.status, 0);
    cr_assert_eq(m.nparams, 2);
    cr_assert_eq(memcmp(route_param_get(&m, "y")->value, "xyz", 3), 0);
}

Test(router, parameter_needs_a_whole_segment)
{
    cr_assert_eq(match(HTTP_GET, "/api/products/").status, 404);
    cr_assert_eq(match(HTTP_GET, "/api/products/1/2").status, 404);
    cr_assert_eq(match(HTTP_GET, "/api/products").status, 404);
}

Test(router, longest_prefix_wins)
{
    struct route_match m = match(HTTP_GET, "/static/deep/x.css");
    cr_assert_eq(m.status, 0);
    cr_assert_str_eq(m.route->data, "deep");
    m = match(HTTP_GET, "/static/x.css");
    cr_assert_str_eq(m.route->data, "static");
    m = match(HTTP_GET, "/static/");
    cr_assert_str_eq(m.route->data, "static");
    cr_assert_eq(match(HTTP_GET, "/static").status, 404);
    cr_assert_eq(match(HTTP_GET, "/staticx/a").status, 404);
}

Test(router, method_falls_through_to_a_route_that_takes_it)
{
    struct route_match m = match(HTTP_GET, "/static/upload");
    cr_assert_eq(m.status, 0);
    cr_assert_str_eq(m.route->data, "static");
    m = match(HTTP_POST, "/static/upload");
    cr_assert_str_eq(m.route->data, "upload");
}

Test(router, not_allowed_lists_methods)
{
    struct route_match m = match(HTTP_POST, "/api/products/7");
    cr_assert_eq(m.status, 405);
    cr_assert_null(m.route);
    char allow[64];
    router_allow_string(m.allow, allow, sizeof(allow));
    cr_assert_str_eq(allow, "GET, HEAD, PUT");
}

Test(router, unknown_path_and_unknown_method)
{
    cr_assert_eq(match(HTTP_GET, "/missing").status, 404);
    cr_assert_eq(match(HTTP_OTHER, "/").status, 501);
}

Test(router, bad_patterns_rejected)
{
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "nope", h_a, NULL), -EINVAL);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/a*", h_a, NULL), -EINVAL);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/a/*/b", h_a, NULL), -EINVAL);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/a:x", h_a, NULL), -EINVAL);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/a/:", h_a, NULL), -EINVAL);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "/:a/:b/:c/:d/:e", h_a, NULL), -EINVAL);
    cr_assert_eq(router_add(r, HTTP_M(HTTP_GET), "", h_a, NULL), -EINVAL);
}

Test(router, allow_string_truncates_safely)
{
    char small[8];
    size_t n = router_allow_string(HTTP_M(HTTP_GET) | HTTP_M(HTTP_DELETE), small, sizeof(small));
    cr_assert_eq(n, 3);
    cr_assert_str_eq(small, "GET");
}
