/* Cart rules (app/carts.c) and the cart store contract (app/cart_store.h),
 * checked the same way against an in-memory fake, the SQLite store
 * (through the write queue, on the thread pool) and the Redis store
 * (against a real redis-server of its own on a free port). */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app/cart_redis.h"
#include "app/cart_sqlite.h"
#include "app/carts.h"
#include "app/shop_input.h"
#include "app/writeq.h"
#include "testnet.h"

/* --- the fake: products 1 and 2 as the SQLite seed has them ------------- */

#define FAKE_MAX 16

struct fake_line {
    char user[SHOP_USER_MAX + 1];
    int64_t id, qty;
};

struct fake_key {
    char user[SHOP_USER_MAX + 1], key[SHOP_IDEM_MAX + 1], fp[DB_IDEM_REQUEST_MAX + 1];
    int64_t qty;
};

struct fake {
    struct cart_store base;
    struct fake_line lines[FAKE_MAX];
    size_t nlines;
    struct fake_key keys[FAKE_MAX];
    size_t nkeys;
};

static const struct cart_line catalog[] = {{1, 100, 0, "商品1"}, {2, 200, 0, "商品2"}};

static const struct cart_line *fake_product(int64_t id)
{
    for (size_t i = 0; i < sizeof catalog / sizeof catalog[0]; i++)
        if (catalog[i].product_id == id)
            return &catalog[i];
    return NULL;
}

static struct fake_line *fake_find(struct fake *f, const char *user, int64_t id)
{
    for (size_t i = 0; i < f->nlines; i++)
        if (f->lines[i].id == id && strcmp(f->lines[i].user, user) == 0)
            return &f->lines[i];
    return NULL;
}

static int fake_add(struct cart_store *cs, const char *user, int64_t id, int64_t qty, const char *idem,
                    const char *fp, cart_done_fn cb, void *arg)
{
    struct fake *f = (struct fake *)cs;
    struct fake_key *k = NULL;
    for (size_t i = 0; idem && idem[0] && i < f->nkeys; i++)
        if (strcmp(f->keys[i].user, user) == 0 && strcmp(f->keys[i].key, idem) == 0)
            k = &f->keys[i];
    if (k) {
        int same = strcmp(k->fp, fp) == 0;
        cb(arg, same ? 0 : -EEXIST, same ? k->qty : 0);
        return 0;
    }
    if (!fake_product(id)) {
        cb(arg, -ENOENT, 0);
        return 0;
    }
    struct fake_line *l = fake_find(f, user, id);
    if (!l) {
        cr_assert_lt(f->nlines, FAKE_MAX);
        l = &f->lines[f->nlines++];
        *l = (struct fake_line){.id = id};
        snprintf(l->user, sizeof l->user, "%s", user);
    }
    l->qty += qty;
    if (idem && idem[0]) {
        cr_assert_lt(f->nkeys, FAKE_MAX);
        k = &f->keys[f->nkeys++];
        *k = (struct fake_key){.qty = l->qty};
        snprintf(k->user, sizeof k->user, "%s", user);
        snprintf(k->key, sizeof k->key, "%s", idem);
        snprintf(k->fp, sizeof k->fp, "%s", fp);
    }
    cb(arg, 0, l->qty);
    return 0;
}

static int fake_remove(struct cart_store *cs, const char *user, int64_t id, cart_done_fn cb, void *arg)
{
    struct fake *f = (struct fake *)cs;
    struct fake_line *l = fake_find(f, user, id);
    if (l)
        *l = f->lines[--f->nlines];
    cb(arg, l ? 0 : -ENOENT, 0);
    return 0;
}

static int fake_get(struct cart_store *cs, const char *user, cart_get_fn cb, void *arg)
{
    struct fake *f = (struct fake *)cs;
    struct cart_line out[FAKE_MAX];
    size_t n = 0;
    for (size_t c = 0; c < sizeof catalog / sizeof catalog[0]; c++) { /* product order */
        struct fake_line *l = fake_find(f, user, catalog[c].product_id);
        if (l) {
            out[n] = catalog[c];
            out[n++].quantity = l->qty;
        }
    }
    cb(arg, 0, out, n);
    return 0;
}

static void fake_close(struct cart_store *cs, void (*done)(void *arg), void *arg)
{
    free(cs);
    if (done)
        done(arg);
}

static const struct cart_store_ops fake_ops = {
    .add = fake_add, .remove = fake_remove, .get = fake_get, .close = fake_close,
};

/* --- running a store's calls to their answer ------------------------------ */

static uv_loop_t loop;
static struct cart_store *store;

struct res {
    int done, rc;
    int64_t qty;
    struct cart_line lines[FAKE_MAX];
    size_t n;
};

static void on_done(void *arg, int rc, int64_t qty)
{
    struct res *r = arg;
    r->done = 1;
    r->rc = rc;
    r->qty = qty;
}

static void on_get(void *arg, int rc, const struct cart_line *lines, size_t n)
{
    struct res *r = arg;
    r->done = 1;
    r->rc = rc;
    r->n = n < FAKE_MAX ? n : FAKE_MAX;
    if (lines && r->n)
        memcpy(r->lines, lines, r->n * sizeof(*lines));
}

static void settle(struct res *r)
{
    uint64_t t0 = uv_now(&loop);
    while (!r->done && uv_now(&loop) - t0 < 5000) {
        uv_run(&loop, UV_RUN_NOWAIT);
        uv_update_time(&loop);
        if (!r->done)
            usleep(1000);
    }
    cr_assert(r->done, "the store never answered");
}

/* An add as the handler makes it: the fingerprint of (id, qty). */
static struct res add(const char *user, int64_t id, int64_t qty, const char *idem)
{
    struct res r = {0};
    char fp[DB_IDEM_REQUEST_MAX + 1];
    carts_fingerprint(id, qty, fp, sizeof fp);
    cr_assert_eq(store->ops->add(store, user, id, qty, idem, fp, on_done, &r), 0);
    settle(&r);
    return r;
}

static struct res rm(const char *user, int64_t id)
{
    struct res r = {0};
    cr_assert_eq(store->ops->remove(store, user, id, on_done, &r), 0);
    settle(&r);
    return r;
}

static struct res get(const char *user)
{
    struct res r = {0};
    cr_assert_eq(store->ops->get(store, user, on_get, &r), 0);
    settle(&r);
    return r;
}

static void expect_answer(enum carts_op op, const struct res *r, int64_t id, int status, const char *text)
{
    struct carts_answer a;
    carts_answer(op, r->rc, id, r->qty, &a);
    cr_assert_eq(a.status, status, "status %d, wanted %d (rc %d)", a.status, status, r->rc);
    cr_assert_str_eq(status == 200 ? a.body : a.msg, text);
}

/* --- the contract, the same for every store ------------------------------- */

static void quantities_add_up(void)
{
    struct res r = add("ann", 1, 2, "");
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(r.qty, 2);
    r = add("ann", 1, 3, NULL);
    expect_answer(CARTS_ADD, &r, 1, 200, "{\"success\":true,\"productId\":1,\"quantity\":5}");
    r = add("bob", 1, 1, "");
    cr_assert_eq(r.qty, 1, "another user's cart is another cart");
}

static void a_key_makes_an_add_happen_once(void)
{
    struct res r = add("ann", 2, 1, "k-1");
    expect_answer(CARTS_ADD, &r, 2, 200, "{\"success\":true,\"productId\":2,\"quantity\":1}");
    r = add("ann", 2, 1, "k-1"); /* the same add again: the first answer, nothing added */
    expect_answer(CARTS_ADD, &r, 2, 200, "{\"success\":true,\"productId\":2,\"quantity\":1}");
    r = get("ann");
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.lines[0].quantity, 1, "a replayed add added again");
    r = add("ann", 2, 4, "k-1"); /* another add under the same key */
    expect_answer(CARTS_ADD, &r, 2, 422, "Idempotency-Key was used for a different add");
    struct carts_answer a;
    carts_answer(CARTS_ADD, r.rc, 2, 0, &a);
    cr_assert_str_eq(a.field, "Idempotency-Key");
    r = add("bob", 2, 4, "k-1"); /* keys are per user */
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(r.qty, 4);
    r = add("ann", 2, 1, "k-2"); /* a new key is a new add */
    cr_assert_eq(r.qty, 2);
}

static void remove_and_list(void)
{
    add("ann", 2, 3, "");
    add("ann", 1, 2, "");
    struct res r = get("ann");
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.lines[0].product_id, 1, "lines in product order");
    cr_assert_eq(r.lines[1].product_id, 2);
    cr_assert_str_eq(r.lines[0].name, "商品1");
    cr_assert_eq(r.lines[1].price, 200);
    json_t *j = carts_json(r.lines, r.n);
    cr_assert_not_null(j);
    cr_assert_eq(json_integer_value(json_object_get(j, "total")), 2 * 100 + 3 * 200);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(json_object_get(j, "items"), 1), "lineTotal")),
                 600);
    json_decref(j);
    r = rm("ann", 1);
    expect_answer(CARTS_REMOVE, &r, 1, 200, "{\"success\":true,\"productId\":1}");
    r = rm("ann", 1);
    expect_answer(CARTS_REMOVE, &r, 1, 404, "product 1 is not in the cart");
    r = get("ann");
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.lines[0].product_id, 2);
    r = get("nobody");
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(r.n, 0);
}

static void unknown_products_are_refused(void)
{
    cr_assert(store->checks_products);
    struct res r = add("ann", 5000, 1, "");
    expect_answer(CARTS_ADD, &r, 5000, 404, "product 5000 not found");
    r = add("ann", 5000, 1, "k-9");
    cr_assert_eq(r.rc, -ENOENT);
    r = add("ann", 1, 1, "k-9"); /* the key was not kept for the refused add */
    cr_assert_eq(r.rc, 0);
}

/* --- the stores ------------------------------------------------------------ */

static char dir[64];
static struct db *db;
static struct writeq *wq;
static struct redis *redis;
static pid_t redis_pid;

static void setup(void)
{
    uv_loop_init(&loop);
}

static void closed(void *arg)
{
    *(int *)arg = 1;
}

static void teardown(void)
{
    char cmd[128];
    int done = 0;
    if (store)
        store->ops->close(store, closed, &done);
    store = NULL;
    if (redis)
        redis_close(redis, NULL, NULL);
    redis = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    writeq_free(wq);
    wq = NULL;
    db_close(db);
    db = NULL;
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
    if (dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        cr_assert_eq(system(cmd), 0);
        dir[0] = '\0';
    }
}

static void use_fake(void)
{
    struct fake *f = calloc(1, sizeof(*f));
    cr_assert_not_null(f);
    f->base = (struct cart_store){.ops = &fake_ops, .checks_products = 1};
    store = &f->base;
}

static void open_db(void)
{
    char path[128], err[256] = "";
    snprintf(dir, sizeof dir, "/tmp/cohort-test-carts-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/shop.db", dir);
    cr_assert_eq(db_open(path, &db, err, sizeof err), 0, "%s", err);
}

static void use_sqlite(void)
{
    open_db();
    cr_assert_not_null(wq = writeq_new(&loop, db, NULL, NULL, NULL));
    cr_assert_not_null(store = cart_sqlite_new(&loop, db, wq));
}

static void spawn_redis(int port)
{
    redis_pid = spawn_redis_server(port, dir);
    cr_assert_neq(redis_pid, -1);
}

/* The owner's part: tell the store when the connection came up. */
static void on_redis_state(void *arg, int up)
{
    (void)arg;
    if (up && store)
        cart_redis_up(store);
}

/* A Redis store on a connection to port (nothing may listen there yet). */
static void open_redis_store(int port, int64_t wait_ms)
{
    char url[64], err[256] = "";
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    struct redis_opts o = {.url = url, .command_timeout_ms = 1000, .on_state = on_redis_state};
    cr_assert_not_null(redis = redis_new(&loop, &o, err, sizeof err), "%s", err);
    struct cart_redis_opts co = {.loop = &loop, .redis = redis, .db = db, .command_timeout_ms = wait_ms};
    cr_assert_not_null(store = cart_redis_new(&co));
}

static void use_redis(void)
{
    int port = free_port();
    open_db();
    spawn_redis(port);
    open_redis_store(port, 1000);
    uint64_t t0 = uv_now(&loop);
    while (!redis_up(redis) && uv_now(&loop) - t0 < 5000) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(2000);
        uv_update_time(&loop);
    }
    cr_assert(redis_up(redis), "redis-server did not come up (is it installed? scripts/deps.sh test)");
}

struct waited {
    int done, rc;
    uint64_t at;
};

static void on_waited(void *arg, int rc)
{
    struct waited *w = arg;
    w->done = 1;
    w->rc = rc;
    w->at = uv_now(&loop);
}

static void run_until_waited(struct waited *w, uint64_t limit_ms)
{
    uint64_t t0 = uv_now(&loop);
    while (!w->done && uv_now(&loop) - t0 < limit_ms) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(2000);
        uv_update_time(&loop);
    }
    cr_assert(w->done, "a parked caller was never resumed");
}

TestSuite(carts, .init = setup, .fini = teardown, .timeout = 30);

Test(carts, fake_quantities_add_up) { use_fake(); quantities_add_up(); }
Test(carts, fake_a_key_makes_an_add_happen_once) { use_fake(); a_key_makes_an_add_happen_once(); }
Test(carts, fake_remove_and_list) { use_fake(); remove_and_list(); }
Test(carts, fake_unknown_products_are_refused) { use_fake(); unknown_products_are_refused(); }

Test(carts, sqlite_quantities_add_up) { use_sqlite(); quantities_add_up(); }
Test(carts, sqlite_a_key_makes_an_add_happen_once) { use_sqlite(); a_key_makes_an_add_happen_once(); }
Test(carts, sqlite_remove_and_list) { use_sqlite(); remove_and_list(); }
Test(carts, sqlite_unknown_products_are_refused) { use_sqlite(); unknown_products_are_refused(); }

Test(carts, redis_quantities_add_up) { use_redis(); quantities_add_up(); }
Test(carts, redis_a_key_makes_an_add_happen_once) { use_redis(); a_key_makes_an_add_happen_once(); }
Test(carts, redis_remove_and_list) { use_redis(); remove_and_list(); }

/* The Redis store leaves products to its caller (the catalog lookup). */
Test(carts, redis_does_not_check_products)
{
    use_redis();
    cr_assert(!store->checks_products);
}

/* --- the rules that need no store ------------------------------------------ */

Test(carts, a_store_that_cannot_answer_is_503)
{
    struct carts_answer a;
    carts_answer(CARTS_ADD, -EIO, 1, 0, &a);
    cr_assert_eq(a.status, 503);
    cr_assert_str_eq(a.msg, CARTS_STORE_DOWN);
    carts_answer(CARTS_REMOVE, -ENOTCONN, 1, 0, &a);
    cr_assert_eq(a.status, 503);
}

Test(carts, quantities_are_1_to_1000)
{
    char err[192];
    const char *field = NULL;
    int64_t id, qty;
    const char *ok = "{\"productId\":1,\"quantity\":1000}";
    cr_assert_eq(shop_parse_cart_add(NULL, 0, ok, strlen(ok), &id, &qty, err, sizeof err, &field), 0, "%s", err);
    cr_assert_eq(qty, SHOP_QTY_MAX);
    const char *bad[] = {"{\"productId\":1,\"quantity\":1001}", "{\"productId\":1,\"quantity\":0}",
                         "{\"productId\":1,\"quantity\":-2}", "{\"productId\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        field = NULL;
        cr_assert_lt(shop_parse_cart_add(NULL, 0, bad[i], strlen(bad[i]), &id, &qty, err, sizeof err, &field), 0,
                     "%s was taken", bad[i]);
        cr_assert_str_eq(field, "quantity");
    }
}

Test(carts, the_fingerprint_tells_adds_apart)
{
    char a[DB_IDEM_REQUEST_MAX + 1], b[DB_IDEM_REQUEST_MAX + 1], c[DB_IDEM_REQUEST_MAX + 1];
    carts_fingerprint(2, 1, a, sizeof a);
    carts_fingerprint(2, 4, b, sizeof b);
    carts_fingerprint(2, 1, c, sizeof c);
    cr_assert_str_neq(a, b);
    cr_assert_str_eq(a, c);
}

/* Before the first connection a caller waits (up to the store's wait);
 * after that wait an outage is an answer at once. */
Test(carts, redis_waits_for_the_first_connection_then_fails_at_once)
{
    open_db();
    open_redis_store(free_port(), 300); /* nothing listens there */
    struct waited w = {0};
    struct cart_wait cw = {.fn = on_waited, .arg = &w};
    uint64_t t0 = uv_now(&loop);
    cr_assert_eq(cart_store_ready(store, &cw), -EINPROGRESS, "the first caller did not wait");
    run_until_waited(&w, 5000);
    cr_assert_eq(w.rc, -ENOTCONN);
    cr_assert_geq(w.at - t0, 290, "resumed after %llu ms, before the wait was over", (unsigned long long)(w.at - t0));
    cr_assert_eq(cart_store_ready(store, &cw), -ENOTCONN, "a caller after the wait waited again");
}

Test(carts, redis_a_waiting_caller_goes_on_when_the_connection_comes)
{
    int port = free_port();
    open_db();
    open_redis_store(port, 10000);
    struct waited w = {0};
    struct cart_wait cw = {.fn = on_waited, .arg = &w};
    cr_assert_eq(cart_store_ready(store, &cw), -EINPROGRESS);
    spawn_redis(port);
    run_until_waited(&w, 8000);
    cr_assert_eq(w.rc, 0);
    cr_assert(redis_up(redis));
    struct res r = add("ann", 1, 2, "");
    cr_assert_eq(r.rc, 0);
    cr_assert_eq(r.qty, 2);
}
