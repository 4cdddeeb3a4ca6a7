/*
 * The seam between the config engine and the modules (core/config_module.h):
 * routes[].handler takes only registered names, a handler's own route key
 * is required on its routes and refused on others', its check runs once
 * every source is in, and a registered key is loaded, printed and
 * described like the engine's own. These tests register their own handlers
 * and keys, not the modules' (each test runs in a process of its own).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/config_module.h"

static char err[512];

/* A route key of its own for the handler "fwd", kept where the proxy's
 * routes[].upstream would be (the proxy module is not registered here). */
static const struct cfg_key target_key[] = {
    {.name = CFG_ROUTE_PREFIX "target", .type = CFG_T_STRING, .store = CFG_S_STR,
     .off = offsetof(struct cfg_route, upstream), .flags = CFG_RELOAD, .bounds = "a name",
     .desc = "Where fwd sends requests."},
};

static const char *target_known(const struct cfg *c, const struct cfg_route *r, char *buf, size_t len)
{
    (void)c;
    if (strcmp(r->upstream, "ok") == 0)
        return NULL;
    snprintf(buf, len, "is not a target fwd knows (%zu routes)", c->nroutes);
    return buf;
}

static const struct cfg_handler handlers[] = {
    {.name = "alpha"},
    {.name = "fwd", .key = "target", .does = "forwards", .check = target_known},
};

static void register_test_module(void)
{
    cr_assert_eq(cfg_keys_register(target_key, 1), 0);
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++)
        cr_assert_eq(cfg_handler_register(&handlers[i]), 0);
}

static void expect_error(const char *text, const char *want)
{
    struct cfg c;
    cr_assert_eq(cfg_from_json(text, &c, err, sizeof err), -EINVAL, "%s", text);
    cr_assert_str_eq(err, want);
    cfg_free(&c);
}

Test(cfgmod, handler_names_are_the_registered_ones)
{
    register_test_module();
    /* core knows no handler of its own */
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"static\"}]}",
                 "<effective>:1:38: routes[0].handler: \"static\" is not one of alpha, fwd");
    struct cfg c;
    cr_assert_eq(cfg_from_json("{\"routes\": [{\"path\": \"/\", \"handler\": \"alpha\"}]}", &c, err, sizeof err), 0,
                 "%s", err);
    cr_assert_str_eq(c.routes[0].handler, "alpha");
    cr_assert_eq(cfg_handler_find("alpha"), &handlers[0]);
    cr_assert_null(cfg_handler_find("static"));
    cfg_free(&c);
}

Test(cfgmod, a_handlers_key_is_required_on_its_routes_and_refused_on_others)
{
    register_test_module();
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"fwd\"}]}",
                 "<effective>:1:13: routes[0]: target is required when handler is \"fwd\"");
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"alpha\", \"target\": \"ok\"}]}",
                 "<effective>:1:57: routes[0].target: not allowed when handler is \"alpha\" (only \"fwd\" forwards)");
}

Test(cfgmod, a_handlers_check_runs_with_every_source_in)
{
    register_test_module();
    expect_error("{\"routes\": [{\"path\": \"/\", \"handler\": \"alpha\"},\n"
                 "  {\"path\": \"/f\", \"handler\": \"fwd\", \"target\": \"nowhere\"}]}",
                 "<effective>:2:46: routes[1].target: \"nowhere\" is not a target fwd knows (2 routes)");
    struct cfg c;
    cr_assert_eq(cfg_from_json("{\"routes\": [{\"path\": \"/f\", \"handler\": \"fwd\", \"target\": \"ok\"}]}", &c, err,
                               sizeof err),
                 0, "%s", err);
    cr_assert_str_eq(c.routes[0].upstream, "ok");
    cfg_free(&c);
}

Test(cfgmod, a_registered_key_is_printed_compared_and_described)
{
    size_t before = cfg_key_count();
    register_test_module();
    cr_assert_eq(cfg_key_count(), before + 1);
    struct cfg a, b;
    cr_assert_eq(cfg_from_json("{\"routes\": [{\"path\": \"/f\", \"handler\": \"fwd\", \"target\": \"ok\"}]}", &a, err,
                               sizeof err),
                 0, "%s", err);
    char *json = cfg_to_json(&a);
    cr_assert_not_null(json);
    cr_assert_not_null(strstr(json, "\"target\": \"ok\""), "%s", json);
    cr_assert_eq(cfg_from_json(json, &b, err, sizeof err), 0, "%s", err);
    cr_assert(cfg_equal(&a, &b));
    free(json);
    cfg_free(&b);
    cfg_free(&a);

    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    cr_assert_not_null(f);
    cfg_describe(f);
    fclose(f);
    cr_assert_not_null(strstr(doc, "| `routes[].target` | string | none | a name | yes |  | Where fwd sends requests. |\n"),
                       "%s", doc);
    cr_assert_not_null(strstr(doc, "| alpha, fwd |"), "%s", doc);
    free(doc);
}

Test(cfgmod, registrations_that_cannot_stand_are_refused)
{
    register_test_module();
    cr_assert_eq(cfg_keys_register(target_key, 1), -EEXIST);
    cr_assert_eq(cfg_handler_register(&handlers[0]), -EEXIST);
    static const struct cfg_handler no_key = {.name = "nokey", .key = "missing", .does = "x"};
    cr_assert_eq(cfg_handler_register(&no_key), -EINVAL);
    static const struct cfg_handler path_key = {.name = "pathkey", .key = "path", .does = "x"};
    cr_assert_eq(cfg_handler_register(&path_key), -EINVAL, "routes[].path is required on every route");
    static const struct cfg_key twice[] = {{.name = "x.a", .type = CFG_T_INT}, {.name = "x.a", .type = CFG_T_INT}};
    cr_assert_eq(cfg_keys_register(twice, 2), -EEXIST);
    cr_assert_null(cfg_handler_find("nokey"));
}
