/* The shop's input checks: ids, paging, cart adds (JSON and forms),
 * product patches, User-Id, cacheable headers, bearer tokens. */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "app/shop_input.h"

static char err[256];
static const char *field;

static int add(const char *ctype, const char *body, int64_t *pid, int64_t *qty)
{
    err[0] = '\0';
    field = NULL;
    return shop_parse_cart_add(ctype, ctype ? strlen(ctype) : 0, body, body ? strlen(body) : 0, pid, qty, err,
                               sizeof err, &field);
}

static void add_fails(const char *ctype, const char *body, const char *want_field, const char *want_err)
{
    int64_t pid = 0, qty = 0;
    cr_assert_eq(add(ctype, body, &pid, &qty), -EINVAL, "%s was accepted", body);
    cr_assert_str_eq(field, want_field, "%s: field", body);
    cr_assert_not_null(strstr(err, want_err), "%s: message %s lacks %s", body, err, want_err);
}

Test(shop_input, ids)
{
    int64_t id = 0;
    cr_assert_eq(shop_parse_id("1", 1, &id), 0);
    cr_assert_eq(id, 1);
    cr_assert_eq(shop_parse_id("9007199254740991", 16, &id), 0);
    cr_assert_eq(id, SHOP_ID_MAX);
    const char *bad[] = {"0", "", "-1", "+1", "1.5", "abc", " 1", "1 ", "9007199254740992", "99999999999999999999",
                         "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(shop_parse_id(bad[i], strlen(bad[i]), &id), -EINVAL, "%s", bad[i]);
}

static int paging(const char *q, int64_t *limit, int64_t *offset)
{
    field = NULL;
    return shop_parse_paging(q, q ? strlen(q) : 0, limit, offset, err, sizeof err, &field);
}

Test(shop_input, paging)
{
    int64_t l, o;
    cr_assert_eq(paging(NULL, &l, &o), 0);
    cr_assert(l == 50 && o == 0);
    cr_assert_eq(paging("limit=2", &l, &o), 0);
    cr_assert(l == 2 && o == 0);
    cr_assert_eq(paging("offset=10&limit=500&x=y", &l, &o), 0);
    cr_assert(l == 500 && o == 10);
    cr_assert_eq(paging("limit=%33", &l, &o), 0, "values are percent-decoded");
    cr_assert_eq(l, 3);
    cr_assert_eq(paging("&&limit=4&", &l, &o), 0);
    cr_assert_eq(l, 4);
    const char *bad_limit[] = {"limit=0", "limit=501", "limit=abc", "limit=", "limit=-1", "limit=1.0", "limit=%zz"};
    for (size_t i = 0; i < sizeof bad_limit / sizeof *bad_limit; i++) {
        cr_assert_eq(paging(bad_limit[i], &l, &o), -EINVAL, "%s", bad_limit[i]);
        cr_assert_str_eq(field, "limit", "%s", bad_limit[i]);
        cr_assert_not_null(strstr(err, "limit must be an integer from 1 to 500"), "%s", err);
    }
    cr_assert_eq(paging("offset=-5", &l, &o), -EINVAL);
    cr_assert_str_eq(field, "offset");
    cr_assert_eq(paging("offset=1000000001", &l, &o), -EINVAL);
}

Test(shop_input, cart_add_json)
{
    int64_t pid = 0, qty = 0;
    cr_assert_eq(add("application/json", "{\"productId\": 1, \"quantity\": 2}", &pid, &qty), 0, "%s", err);
    cr_assert(pid == 1 && qty == 2);
    cr_assert_eq(add(NULL, "{\"quantity\": 1000, \"productId\": 7, \"note\": \"x\"}", &pid, &qty), 0,
                 "no Content-Type is read as JSON; other members are ignored");
    cr_assert(pid == 7 && qty == 1000);
    add_fails("application/json", "{\"productId\": 1", "body", "body is not valid JSON");
    add_fails("application/json", "", "body", "body is empty");
    add_fails("application/json", "[1, 2]", "body", "body must be a JSON object");
    add_fails("application/json", "\"x\"", "body", "body must be a JSON object");
    add_fails("application/json", "{\"quantity\": 2}", "productId", "productId is required");
    add_fails("application/json", "{\"productId\": 1}", "quantity", "quantity is required");
    add_fails("application/json", "{\"productId\": \"1\", \"quantity\": 2}", "productId", "productId must be an integer");
    add_fails("application/json", "{\"productId\": 0, \"quantity\": 2}", "productId", "productId must be an integer");
    add_fails("application/json", "{\"productId\": 1.5, \"quantity\": 2}", "productId", "productId must be an integer");
    add_fails("application/json", "{\"productId\": 1, \"quantity\": 0}", "quantity", "from 1 to 1000");
    add_fails("application/json", "{\"productId\": 1, \"quantity\": 1001}", "quantity", "from 1 to 1000");
    add_fails("application/json", "{\"productId\": 1, \"quantity\": -3}", "quantity", "from 1 to 1000");
    add_fails("application/json", "{\"productId\": 1, \"quantity\": null}", "quantity", "quantity must be");
    add_fails("application/json", "{\"productId\": 1, \"quantity\": true}", "quantity", "quantity must be");
}

Test(shop_input, cart_add_form)
{
    int64_t pid = 0, qty = 0;
    const char *form = "application/x-www-form-urlencoded";
    cr_assert_eq(add(form, "productId=3&quantity=4", &pid, &qty), 0, "%s", err);
    cr_assert(pid == 3 && qty == 4);
    cr_assert_eq(add("Application/X-WWW-Form-Urlencoded; charset=utf-8", "quantity=%31&productId=2", &pid, &qty), 0);
    cr_assert(pid == 2 && qty == 1);
    add_fails(form, "quantity=4", "productId", "productId is required");
    add_fails(form, "productId=3", "quantity", "quantity is required");
    add_fails(form, "productId=x&quantity=4", "productId", "productId must be an integer");
    add_fails(form, "productId=3&quantity=5000", "quantity", "from 1 to 1000");
    add_fails(form, "productId=3&quantity=%G1", "body", "not a valid form");
    add_fails(form, "", "productId", "productId is required");
}

static int patch(const char *body, struct db_product_patch *p, char *name)
{
    field = NULL;
    return shop_parse_product_patch(body, strlen(body), p, name, err, sizeof err, &field);
}

Test(shop_input, product_patch)
{
    struct db_product_patch p;
    char name[DB_NAME_MAX + 1];
    cr_assert_eq(patch("{\"price\": 150}", &p, name), 0, "%s", err);
    cr_assert(p.has_price && !p.has_name && !p.has_stock && p.price == 150);
    cr_assert_eq(patch("{\"name\": \"新商品\", \"stock\": 0}", &p, name), 0, "%s", err);
    cr_assert(p.has_name && p.has_stock && !p.has_price && p.stock == 0);
    cr_assert_str_eq(p.name, "新商品");
    cr_assert_eq(patch("{}", &p, name), -EINVAL);
    cr_assert_str_eq(field, "body");
    cr_assert_eq(patch("[]", &p, name), -EINVAL);
    cr_assert_eq(patch("{\"price\": -1}", &p, name), -EINVAL);
    cr_assert_str_eq(field, "price");
    cr_assert_eq(patch("{\"price\": \"100\"}", &p, name), -EINVAL);
    cr_assert_eq(patch("{\"stock\": 1.5}", &p, name), -EINVAL);
    cr_assert_str_eq(field, "stock");
    cr_assert_eq(patch("{\"name\": \"   \"}", &p, name), -EINVAL);
    cr_assert_str_eq(field, "name");
    cr_assert_eq(patch("{\"name\": \"a\\u0000b\"}", &p, name), -EINVAL, "no NUL inside a name");
    cr_assert_eq(patch("{\"colour\": \"red\"}", &p, name), -EINVAL);
    cr_assert_str_eq(field, "colour");
    char big[400];
    memset(big, 0, sizeof big);
    strcpy(big, "{\"name\": \"");
    memset(big + strlen(big), 'x', 201);
    strcat(big, "\"}");
    cr_assert_eq(patch(big, &p, name), -EINVAL, "201 bytes is too long");
    cr_assert_eq(patch("not json", &p, name), -EINVAL);
    cr_assert_str_eq(field, "body");
}

Test(shop_input, user_id)
{
    char out[SHOP_USER_MAX + 1];
    cr_assert_eq(shop_parse_user(NULL, 0, out, err, sizeof err, &field), 0);
    cr_assert_str_eq(out, "anonymous");
    cr_assert_eq(shop_parse_user("u-42", 4, out, err, sizeof err, &field), 0);
    cr_assert_str_eq(out, "u-42");
    cr_assert_eq(shop_parse_user("a b", 3, out, err, sizeof err, &field), -EINVAL);
    cr_assert_str_eq(field, "User-Id");
    cr_assert_eq(shop_parse_user("", 0, out, err, sizeof err, &field), -EINVAL);
    char long_id[SHOP_USER_MAX + 2];
    memset(long_id, 'u', sizeof long_id);
    cr_assert_eq(shop_parse_user(long_id, SHOP_USER_MAX, out, err, sizeof err, &field), 0);
    cr_assert_eq(shop_parse_user(long_id, SHOP_USER_MAX + 1, out, err, sizeof err, &field), -EINVAL);
}

Test(shop_input, idempotency_key)
{
    char out[SHOP_IDEM_MAX + 1], longer[SHOP_IDEM_MAX + 3];
    cr_assert_eq(shop_parse_idem_key("a1-B_2.c:3", 10, out, err, sizeof err, &field), 0);
    cr_assert_str_eq(out, "a1-B_2.c:3");
    cr_assert_eq(shop_parse_idem_key("\"k7\"", 4, out, err, sizeof err, &field), 0);
    cr_assert_str_eq(out, "k7", "a structured-field string loses its quotes");
    const char *bad_keys[] = {"", "\"\"", "a b", "k/1", "\"k", "k\x80", "k\""};
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
        field = NULL;
        cr_assert_eq(shop_parse_idem_key(bad_keys[i], strlen(bad_keys[i]), out, err, sizeof err, &field), -EINVAL,
                     "%s was accepted", bad_keys[i]);
        cr_assert_str_eq(field, "Idempotency-Key");
    }
    memset(longer, 'k', sizeof longer);
    cr_assert_eq(shop_parse_idem_key(longer, SHOP_IDEM_MAX, out, err, sizeof err, &field), 0);
    cr_assert_eq(strlen(out), SHOP_IDEM_MAX);
    cr_assert_eq(shop_parse_idem_key(longer, SHOP_IDEM_MAX + 1, out, err, sizeof err, &field), -EINVAL);
    longer[0] = longer[SHOP_IDEM_MAX + 1] = '"';
    cr_assert_eq(shop_parse_idem_key(longer, SHOP_IDEM_MAX + 2, out, err, sizeof err, &field), 0,
                 "64 characters in quotes");
}

Test(shop_input, cacheable_headers)
{
    cr_assert_eq(shop_header_cacheable("Set-Cookie", "a=b", 3), 0);
    cr_assert_eq(shop_header_cacheable("set-cookie", "a=b", 3), 0);
    cr_assert_eq(shop_header_cacheable("Cache-Control", "no-store", 8), 0);
    cr_assert_eq(shop_header_cacheable("Cache-Control", "max-age=0, No-Store", 19), 0);
    cr_assert_eq(shop_header_cacheable("Cache-Control", "private", 7), 0);
    cr_assert_eq(shop_header_cacheable("Cache-Control", "max-age=60", 10), 1);
    cr_assert_eq(shop_header_cacheable("Cache-Control", "no-stored", 9), 1, "a whole token only");
    cr_assert_eq(shop_header_cacheable("ETag", "\"x\"", 3), 1);
}

Test(shop_input, bearer)
{
    const char *ok = "Bearer s3cret";
    cr_assert_eq(shop_bearer_ok(ok, strlen(ok), "s3cret"), 1);
    cr_assert_eq(shop_bearer_ok("bearer s3cret", 13, "s3cret"), 1, "the scheme is case-insensitive");
    cr_assert_eq(shop_bearer_ok("Bearer s3cre", 12, "s3cret"), 0);
    cr_assert_eq(shop_bearer_ok("Bearer s3cretx", 14, "s3cret"), 0);
    cr_assert_eq(shop_bearer_ok("Basic s3cret", 12, "s3cret"), 0);
    cr_assert_eq(shop_bearer_ok(NULL, 0, "s3cret"), 0);
    cr_assert_eq(shop_bearer_ok("Bearer ", 7, "s3cret"), 0);
}
