/*
 * Input checks of the shop. See shop_input.h.
 */
#include "app/shop_input.h"

#include "cache/response.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

__attribute__((format(printf, 5, 6))) static int bad(char *err, size_t errlen, const char **field, const char *name,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    if (field)
        *field = name;
    return -EINVAL;
}

/* Decimal digits only, no sign, no spaces; within [min, max]. */
static int parse_int(const char *s, size_t n, int64_t min, int64_t max, int64_t *out)
{
    int64_t v = 0;
    if (n == 0 || n > 19)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        if (v > (INT64_MAX - 9) / 10)
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int shop_parse_id(const char *s, size_t n, int64_t *out)
{
    return parse_int(s, n, 1, SHOP_ID_MAX, out);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes (and '+' as space, as forms and queries write it) into
 * out; -EINVAL for a bad escape or when it does not fit. */
static int url_decode(const char *s, size_t n, char *out, size_t cap, size_t *len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++, o++) {
        if (o + 1 >= cap)
            return -EINVAL;
        if (s[i] == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1, lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -EINVAL;
            out[o] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o] = s[i] == '+' ? ' ' : s[i];
        }
    }
    out[o] = '\0';
    *len = o;
    return 0;
}

/* Calls each(name, value) for every name=value pair, decoded; stops at the
 * first nonzero return. A pair that does not decode is passed with decoded
 * = 0 and an empty value (and an empty name when the name is the bad part). */
static int each_pair(const char *q, size_t n, int (*each)(void *arg, const char *name, const char *val, size_t vlen,
                                                         int decoded),
                     void *arg)
{
    const char *end = q + n;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q)), *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        char name[64] = "", val[64] = "";
        size_t nl = 0, vl = 0;
        int ok = url_decode(q, (size_t)((eq ? eq : pe) - q), name, sizeof name, &nl) == 0;
        if (!ok)
            name[0] = '\0';
        ok = ok && url_decode(eq ? eq + 1 : pe, eq ? (size_t)(pe - eq - 1) : 0, val, sizeof val, &vl) == 0;
        if (nl > 0 || !ok) {
            int rc = each(arg, name, ok ? val : "", ok ? vl : 0, ok);
            if (rc)
                return rc;
        }
        q = pe + 1;
    }
    return 0;
}

struct paging {
    const char *limit, *offset; /* decoded copies */
    char lbuf[64], obuf[64];
    size_t llen, olen;
};

static int paging_pair(void *arg, const char *name, const char *val, size_t vlen, int decoded)
{
    struct paging *p = arg;
    if (!decoded) /* a broken value makes the number bad */
        val = "!", vlen = 1;
    if (strcmp(name, "limit") == 0 && !p->limit) {
        memcpy(p->lbuf, val, vlen + 1);
        p->limit = p->lbuf, p->llen = vlen;
    } else if (strcmp(name, "offset") == 0 && !p->offset) {
        memcpy(p->obuf, val, vlen + 1);
        p->offset = p->obuf, p->olen = vlen;
    }
    return 0;
}

int shop_parse_paging(const char *query, size_t len, int64_t *limit, int64_t *offset, char *err, size_t errlen,
                      const char **field)
{
    struct paging p = {0};
    *limit = SHOP_LIMIT_DEFAULT;
    *offset = 0;
    if (query)
        each_pair(query, len, paging_pair, &p);
    if (p.limit && parse_int(p.limit, p.llen, 1, SHOP_LIMIT_MAX, limit))
        return bad(err, errlen, field, "limit", "limit must be an integer from 1 to %d", SHOP_LIMIT_MAX);
    if (p.offset && parse_int(p.offset, p.olen, 0, SHOP_OFFSET_MAX, offset))
        return bad(err, errlen, field, "offset", "offset must be an integer from 0 to %lld", SHOP_OFFSET_MAX);
    return 0;
}

/* --- POST /api/cart/add ------------------------------------------------ */

static int json_int_field(json_t *obj, const char *name, int64_t min, int64_t max, int64_t *out, char *err,
                          size_t errlen, const char **field)
{
    json_t *v = json_object_get(obj, name);
    if (!v)
        return bad(err, errlen, field, name, "%s is required", name);
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return bad(err, errlen, field, name, "%s must be an integer from %lld to %lld", name, (long long)min,
                   (long long)max);
    *out = json_integer_value(v);
    return 0;
}

static int cart_json(const char *body, size_t len, int64_t *pid, int64_t *qty, char *err, size_t errlen,
                     const char **field)
{
    json_error_t e;
    json_t *j = json_loadb(body, len, JSON_DECODE_ANY, &e);
    int rc;
    if (!j)
        return bad(err, errlen, field, "body", "body is not valid JSON: %s (at character %d)", e.text, e.position);
    if (!json_is_object(j))
        rc = bad(err, errlen, field, "body", "body must be a JSON object with productId and quantity");
    else if ((rc = json_int_field(j, "productId", 1, SHOP_ID_MAX, pid, err, errlen, field)) == 0)
        rc = json_int_field(j, "quantity", 1, SHOP_QTY_MAX, qty, err, errlen, field);
    json_decref(j);
    return rc;
}

struct form {
    int has_pid, has_qty, pid_ok, qty_ok, broken;
    int64_t pid, qty;
};

static int form_pair(void *arg, const char *name, const char *val, size_t vlen, int decoded)
{
    struct form *f = arg;
    if (!decoded) {
        f->broken = 1;
        return 1;
    }
    if (strcmp(name, "productId") == 0 && !f->has_pid) {
        f->has_pid = 1;
        f->pid_ok = parse_int(val, vlen, 1, SHOP_ID_MAX, &f->pid) == 0;
    } else if (strcmp(name, "quantity") == 0 && !f->has_qty) {
        f->has_qty = 1;
        f->qty_ok = parse_int(val, vlen, 1, SHOP_QTY_MAX, &f->qty) == 0;
    }
    return 0;
}

static int cart_form(const char *body, size_t len, int64_t *pid, int64_t *qty, char *err, size_t errlen,
                     const char **field)
{
    struct form f = {0};
    each_pair(body, len, form_pair, &f);
    if (f.broken)
        return bad(err, errlen, field, "body", "body is not a valid form (a bad %%-escape, or a field too long)");
    if (!f.has_pid)
        return bad(err, errlen, field, "productId", "productId is required");
    if (!f.pid_ok)
        return bad(err, errlen, field, "productId", "productId must be an integer from 1 to %lld", SHOP_ID_MAX);
    if (!f.has_qty)
        return bad(err, errlen, field, "quantity", "quantity is required");
    if (!f.qty_ok)
        return bad(err, errlen, field, "quantity", "quantity must be an integer from 1 to %d", SHOP_QTY_MAX);
    *pid = f.pid;
    *qty = f.qty;
    return 0;
}

static int is_form(const char *ctype, size_t n)
{
    static const char form[] = "application/x-www-form-urlencoded";
    size_t fl = sizeof(form) - 1;
    return ctype && n >= fl && strncasecmp(ctype, form, fl) == 0 && (n == fl || ctype[fl] == ';' || ctype[fl] == ' ');
}

int shop_parse_cart_add(const char *ctype, size_t ctlen, const char *body, size_t len, int64_t *product_id,
                        int64_t *quantity, char *err, size_t errlen, const char **field)
{
    if (is_form(ctype, ctlen))
        return cart_form(body ? body : "", body ? len : 0, product_id, quantity, err, errlen, field);
    if (!body || len == 0)
        return bad(err, errlen, field, "body", "body is empty: send {\"productId\": 1, \"quantity\": 1}");
    return cart_json(body, len, product_id, quantity, err, errlen, field);
}

/* --- PUT /api/products/:id --------------------------------------------- */

static int patch_member(const char *key, json_t *v, struct db_product_patch *p, char *name_buf, char *err,
                        size_t errlen, const char **field)
{
    if (strcmp(key, "name") == 0) {
        const char *s = json_string_value(v);
        size_t n = s ? json_string_length(v) : 0, blank = 0;
        while (blank < n && isspace((unsigned char)s[blank]))
            blank++;
        if (!s || n == 0 || n > DB_NAME_MAX || blank == n || strlen(s) != n)
            return bad(err, errlen, field, "name", "name must be a non-blank string of at most %d bytes",
                       DB_NAME_MAX);
        memcpy(name_buf, s, n + 1);
        p->has_name = 1;
        p->name = name_buf;
        return 0;
    }
    const char *known = strcmp(key, "price") == 0 ? "price" : strcmp(key, "stock") == 0 ? "stock" : NULL;
    int64_t max = known && known[0] == 'p' ? SHOP_PRICE_MAX : SHOP_STOCK_MAX;
    if (!known) { /* the key dies with the JSON: name it from name_buf */
        snprintf(name_buf, DB_NAME_MAX + 1, "%s", key);
        return bad(err, errlen, field, name_buf, "%s is not a product field (name, price, stock)", key);
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return bad(err, errlen, field, known, "%s must be an integer from 0 to %lld", known, (long long)max);
    if (key[0] == 'p')
        p->has_price = 1, p->price = json_integer_value(v);
    else
        p->has_stock = 1, p->stock = json_integer_value(v);
    return 0;
}

int shop_parse_product_patch(const char *body, size_t len, struct db_product_patch *p, char *name_buf, char *err,
                             size_t errlen, const char **field)
{
    json_error_t e;
    const char *key;
    json_t *v, *j = body && len ? json_loadb(body, len, JSON_DECODE_ANY, &e) : NULL;
    int rc = 0;

    *p = (struct db_product_patch){0};
    if (!j)
        return bad(err, errlen, field, "body", "body is not valid JSON%s%s", body && len ? ": " : "",
                   body && len ? e.text : " (it is empty)");
    if (!json_is_object(j))
        rc = bad(err, errlen, field, "body", "body must be a JSON object with name, price or stock");
    json_object_foreach(j, key, v) {
        if (rc || (rc = patch_member(key, v, p, name_buf, err, errlen, field)))
            break;
    }
    if (!rc && !p->has_name && !p->has_price && !p->has_stock)
        rc = bad(err, errlen, field, "body", "body sets nothing: give name, price or stock");
    json_decref(j);
    return rc;
}

/* --- headers ----------------------------------------------------------- */

int shop_parse_user(const char *v, size_t n, char *out, char *err, size_t errlen, const char **field)
{
    if (!v) {
        strcpy(out, "anonymous");
        return 0;
    }
    if (n == 0 || n > SHOP_USER_MAX)
        return bad(err, errlen, field, "User-Id", "User-Id must be 1 to %d visible ASCII characters", SHOP_USER_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] <= ' ' || (unsigned char)v[i] >= 0x7f)
            return bad(err, errlen, field, "User-Id", "User-Id must be 1 to %d visible ASCII characters",
                       SHOP_USER_MAX);
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

int shop_parse_idem_key(const char *v, size_t n, char *out, char *err, size_t errlen, const char **field)
{
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    int ok = n >= 1 && n <= SHOP_IDEM_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)v[i]) || v[i] == '-' || v[i] == '_' || v[i] == '.' || v[i] == ':';
    if (!ok)
        return bad(err, errlen, field, "Idempotency-Key",
                   "Idempotency-Key must be 1 to %d of the characters A-Z a-z 0-9 - _ . :", SHOP_IDEM_MAX);
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

int shop_header_cacheable(const char *name, const char *value, size_t vlen)
{
    return rcache_header_ok(name, strlen(name), value, vlen);
}

int shop_bearer_ok(const char *h, size_t n, const char *token)
{
    size_t tl = strlen(token);
    unsigned char diff = 0;
    if (!h || n < 7 || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7, n -= 7;
    while (n > 0 && *h == ' ')
        h++, n--;
    /* the time depends on the length of what the client sent, not on how
     * much of the token it got right */
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(h[i] ^ (i < tl ? token[i] : 0));
    return diff == 0 && n == tl;
}
