/*
 * What the shop accepts from a client, checked before anything else runs.
 * Pure: no I/O, no state; every function says what is wrong in a sentence
 * that names the field (err), and which field it was (*field), so a 400
 * answer can carry both.
 */
#ifndef COHORT_APP_SHOP_INPUT_H
#define COHORT_APP_SHOP_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

#define SHOP_LIMIT_DEFAULT 50
#define SHOP_LIMIT_MAX 500
#define SHOP_OFFSET_MAX 1000000000LL
#define SHOP_QTY_MAX 1000
#define SHOP_ID_MAX 9007199254740991LL /* 2^53 - 1: exact in every JSON reader */
#define SHOP_PRICE_MAX 1000000000000LL /* smallest currency units */
#define SHOP_STOCK_MAX 1000000000LL
#define SHOP_USER_MAX 128
#define SHOP_IDEM_MAX 64

/* A positive integer id (1..SHOP_ID_MAX) in decimal; 0 or -EINVAL. */
int shop_parse_id(const char *s, size_t n, int64_t *out);

/* limit and offset from a query string (NULL: none): limit 1..500 (default
 * 50), offset 0..1e9 (default 0); other parameters are ignored. */
int shop_parse_paging(const char *query, size_t len, int64_t *limit, int64_t *offset, char *err, size_t errlen,
                      const char **field);

/*
 * The body of POST /api/cart/add: a JSON object, or a form
 * (application/x-www-form-urlencoded), with productId (1..2^53-1) and
 * quantity (1..1000), both required. `ctype` is the Content-Type value
 * (NULL: absent, read as JSON).
 */
int shop_parse_cart_add(const char *ctype, size_t ctlen, const char *body, size_t len, int64_t *product_id,
                        int64_t *quantity, char *err, size_t errlen, const char **field);

/*
 * The body of PUT /api/products/:id: a JSON object setting at least one of
 * name (1..200 bytes, not blank), price (0..1e12) and stock (0..1e9); no
 * other member. The name is copied into name_buf (DB_NAME_MAX + 1 bytes),
 * which p->name then points to; on an unknown member *field points into
 * name_buf instead.
 */
int shop_parse_product_patch(const char *body, size_t len, struct db_product_patch *p, char *name_buf, char *err,
                             size_t errlen, const char **field);

/* The User-Id header (NULL: absent, which is "anonymous"): 1..128 visible
 * ASCII characters. Copies it, NUL-terminated, into out (SHOP_USER_MAX + 1
 * bytes). */
int shop_parse_user(const char *v, size_t n, char *out, char *err, size_t errlen, const char **field);

/* The Idempotency-Key header of a cart add: 1..64 of A-Z a-z 0-9 - _ . :,
 * bare or in double quotes (a structured-field string). Copies it,
 * NUL-terminated, into out (SHOP_IDEM_MAX + 1 bytes). */
int shop_parse_idem_key(const char *v, size_t n, char *out, char *err, size_t errlen, const char **field);

/* Whether a response header lets the response be cached: not Set-Cookie,
 * not Cache-Control with no-store or private. 1 or 0. */
int shop_header_cacheable(const char *name, const char *value, size_t vlen);

/* Checks "Authorization: Bearer <token>" against the token in constant
 * time. 1 when it matches. */
int shop_bearer_ok(const char *header, size_t n, const char *token);

#endif
