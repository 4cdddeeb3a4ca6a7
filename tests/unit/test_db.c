/* The SQLite store: folders, WAL, migrations and seed (also with several
 * processes opening a new file at once), the catalog, cart UPSERTs that
 * never lose an increment, counters, and work on the thread pool. */
#include <criterion/criterion.h>
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/db.h"

static char dir[64];
static char path[128];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/cohort-test-db-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/a/b/shop.db", dir);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(db, .init = setup, .fini = teardown);

static struct db *open_ok(void)
{
    char err[256] = "";
    struct db *db = NULL;
    int rc = db_open(path, &db, err, sizeof err);
    cr_assert_eq(rc, 0, "db_open: %d %s", rc, err);
    return db;
}

Test(db, creates_folders_migrates_and_seeds)
{
    struct db *db = open_ok();
    int rc = 0, version = 0;
    struct db_conn *c = db_acquire(db, &rc);
    cr_assert_not_null(c);
    cr_assert_eq(db_schema_version(c, &version), 0);
    cr_assert_eq(version, DB_SCHEMA_VERSION);
    struct db_product p;
    cr_assert_eq(db_product_get(c, 1, &p), 0);
    cr_assert_str_eq(p.name, "\xe5\x95\x86\xe5\x93\x81" "1", "商品1, UTF-8");
    cr_assert_eq(p.price, 100);
    cr_assert_eq(p.stock, 5);
    cr_assert_eq(db_product_get(c, 2, &p), 0);
    cr_assert_str_eq(p.name, "商品2");
    cr_assert_eq(p.price, 200);
    cr_assert_eq(db_product_get(c, DB_SEED_PRODUCTS + 1, &p), -ENOENT);
    int64_t n = 0;
    cr_assert_eq(db_product_count(c, &n), 0);
    cr_assert_eq(n, DB_SEED_PRODUCTS);
    db_release(db, c);
    db_close(db);

    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", path);
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    sqlite3_stmt *s;
    cr_assert_eq(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(s), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(s, 0), "wal", "the file stays in WAL mode");
    sqlite3_finalize(s);
    sqlite3_close(h);
}

Test(db, reopening_does_not_seed_twice)
{
    db_close(open_ok());
    struct db *db = open_ok();
    int rc;
    struct db_conn *c = db_acquire(db, &rc);
    int64_t n = 0;
    cr_assert_eq(db_product_count(c, &n), 0);
    cr_assert_eq(n, DB_SEED_PRODUCTS);
    db_release(db, c);
    db_close(db);
}

Test(db, newer_schema_is_refused)
{
    db_close(open_ok());
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    char err[256] = "";
    struct db *db = NULL;
    cr_assert_lt(db_open(path, &db, err, sizeof err), 0);
    cr_assert_null(db);
    cr_assert_not_null(strstr(err, "schema version 99 is newer than this binary's"), "%s", err);
}

Test(db, unopenable_path_names_the_file)
{
    char err[256] = "", bad[160];
    struct db *db = NULL;
    snprintf(bad, sizeof bad, "%s/file", dir);
    FILE *f = fopen(bad, "w");
    fclose(f);
    snprintf(bad, sizeof bad, "%s/file/shop.db", dir); /* a folder that is a file */
    cr_assert_lt(db_open(bad, &db, err, sizeof err), 0);
    cr_assert_not_null(strstr(err, bad), "%s", err);
}

/* Eight processes open a file that does not exist yet, at once. */
Test(db, concurrent_first_open_migrates_once)
{
    enum { N = 8 };
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        cr_assert_neq(pids[i], -1);
        if (pids[i] == 0) {
            struct db *db = NULL;
            char err[256];
            int rc = db_open(path, &db, err, sizeof err);
            if (rc)
                fprintf(stderr, "child %d: %s\n", i, err);
            db_close(db);
            _exit(rc ? 1 : 0);
        }
    }
    for (int i = 0; i < N; i++) {
        int st;
        cr_assert_eq(waitpid(pids[i], &st, 0), pids[i]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "opener %d failed", i);
    }
    struct db *db = open_ok();
    int rc;
    struct db_conn *c = db_acquire(db, &rc);
    int64_t n = 0;
    cr_assert_eq(db_product_count(c, &n), 0);
    cr_assert_eq(n, DB_SEED_PRODUCTS, "seeded exactly once");
    db_release(db, c);
    db_close(db);
}

Test(db, list_pages_in_id_order)
{
    struct db *db = open_ok();
    int rc;
    struct db_conn *c = db_acquire(db, &rc);
    struct db_product out[10];
    size_t n = 0;
    cr_assert_eq(db_product_list(c, 3, 0, out, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(out[0].id, 1);
    cr_assert_eq(out[2].id, 3);
    cr_assert_eq(db_product_list(c, 10, DB_SEED_PRODUCTS - 2, out, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(out[1].id, DB_SEED_PRODUCTS);
    cr_assert_eq(db_product_list(c, 10, DB_SEED_PRODUCTS + 5, out, &n), 0);
    cr_assert_eq(n, 0);
    db_release(db, c);
    db_close(db);
}

Test(db, partial_update)
{
    struct db *db = open_ok();
    int rc;
    struct db_conn *c = db_acquire(db, &rc);
    struct db_product p;
    struct db_product_patch patch = {.has_price = 1, .price = 150};
    cr_assert_eq(db_product_update(c, 1, &patch, &p), 0);
    cr_assert_eq(p.price, 150);
    cr_assert_str_eq(p.name, "商品1", "fields not in the patch stay");
    cr_assert_eq(p.stock, 5);
    patch = (struct db_product_patch){.has_name = 1, .name = "新名字", .has_stock = 1, .stock = 0};
    cr_assert_eq(db_product_update(c, 1, &patch, &p), 0);
    cr_assert_eq(db_product_get(c, 1, &p), 0);
    cr_assert_str_eq(p.name, "新名字");
    cr_assert_eq(p.price, 150);
    cr_assert_eq(p.stock, 0);
    cr_assert_eq(db_product_update(c, 99999, &patch, &p), -ENOENT);
    patch = (struct db_product_patch){.has_price = 1, .price = -1};
    cr_assert_lt(db_product_update(c, 1, &patch, &p), 0, "the CHECK constraint holds");
    cr_assert_eq(db_product_get(c, 1, &p), 0);
    cr_assert_eq(p.price, 150, "a failed update changes nothing");
    db_release(db, c);
    db_close(db);
}

struct lines {
    int n;
    int64_t ids[8], qty[8], price[8];
};

static void collect(void *arg, const struct db_cart_line *l)
{
    struct lines *ls = arg;
    ls->ids[ls->n] = l->product_id;
    ls->qty[ls->n] = l->quantity;
    ls->price[ls->n++] = l->price;
}

Test(db, cart_upsert_remove_and_read)
{
    struct db *db = open_ok();
    int rc;
    struct db_conn *c = db_acquire(db, &rc);
    int64_t q = 0;
    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(db_cart_add(c, "alice", 2, 2, &q), 0);
    cr_assert_eq(q, 2);
    cr_assert_eq(db_cart_add(c, "alice", 2, 3, &q), 0);
    cr_assert_eq(q, 5, "an add increments the line");
    cr_assert_eq(db_cart_add(c, "alice", 1, 1, &q), 0);
    cr_assert_eq(q, 1);
    cr_assert_eq(db_cart_add(c, "bob", 2, 7, &q), 0);
    cr_assert_eq(q, 7, "lines are per user");
    cr_assert_eq(db_cart_add(c, "alice", 424242, 1, &q), -ENOENT, "unknown product");
    cr_assert_eq(db_commit(c), 0);

    struct lines ls = {0};
    cr_assert_eq(db_cart_get(c, "alice", collect, &ls), 0);
    cr_assert_eq(ls.n, 2);
    cr_assert_eq(ls.ids[0], 1);
    cr_assert_eq(ls.ids[1], 2);
    cr_assert_eq(ls.qty[1], 5);
    cr_assert_eq(ls.price[1], 200);

    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(db_cart_remove(c, "alice", 2), 0);
    cr_assert_eq(db_cart_remove(c, "alice", 2), -ENOENT);
    cr_assert_eq(db_commit(c), 0);
    ls = (struct lines){0};
    cr_assert_eq(db_cart_get(c, "alice", collect, &ls), 0);
    cr_assert_eq(ls.n, 1);
    ls = (struct lines){0};
    cr_assert_eq(db_cart_get(c, "nobody", collect, &ls), 0);
    cr_assert_eq(ls.n, 0);

    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(db_cart_add(c, "carol", 1, 9, &q), 0);
    db_rollback(c);
    ls = (struct lines){0};
    cr_assert_eq(db_cart_get(c, "carol", collect, &ls), 0);
    cr_assert_eq(ls.n, 0, "a rolled back add leaves nothing");
    db_release(db, c);
    db_close(db);
}

Test(db, cart_add_once_per_key)
{
    struct db *db = open_ok();
    int rc, replayed = -1;
    struct db_conn *c = db_acquire(db, &rc);
    int64_t q = 0, now = 1000000;
    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(db_cart_add_once(c, "alice", "k1", "2:3", 2, 3, now, &q, &replayed), 0);
    cr_assert_eq(q, 3);
    cr_assert_eq(replayed, 0);
    cr_assert_eq(db_cart_add(c, "alice", 2, 1, &q), 0);
    cr_assert_eq(q, 4);
    cr_assert_eq(db_cart_add_once(c, "alice", "k1", "2:3", 2, 3, now + 5, &q, &replayed), 0);
    cr_assert_eq(q, 3, "the replay gives the first answer");
    cr_assert_eq(replayed, 1);
    cr_assert_eq(db_cart_add_once(c, "alice", "k1", "2:4", 2, 4, now + 5, &q, &replayed), -EEXIST,
                 "the key with another add");
    cr_assert_eq(db_cart_add_once(c, "bob", "k1", "2:4", 2, 4, now + 5, &q, &replayed), 0, "keys are per user");
    cr_assert_eq(replayed, 0);
    cr_assert_eq(db_cart_add_once(c, "alice", "k2", "424242:1", 424242, 1, now, &q, &replayed), -ENOENT);
    cr_assert_eq(db_cart_add_once(c, "alice", "k2", "1:1", 1, 1, now, &q, &replayed), 0,
                 "no key kept for an add that was not made");
    cr_assert_eq(replayed, 0);
    cr_assert_eq(db_commit(c), 0);

    struct lines ls = {0};
    cr_assert_eq(db_cart_get(c, "alice", collect, &ls), 0);
    cr_assert_eq(ls.n, 2);
    cr_assert_eq(ls.qty[1], 4, "product 2: 3 once, then 1 without a key");

    /* a day later the key is forgotten (and pruned): the add is made again */
    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(db_cart_add_once(c, "alice", "k1", "2:3", 2, 3, now + DB_IDEM_TTL_S, &q, &replayed), 0);
    cr_assert_eq(replayed, 0);
    cr_assert_eq(q, 7);
    cr_assert_eq(db_commit(c), 0);
    db_release(db, c);
    db_close(db);

    /* every expired key went, whoever's it was; bob's, 5 s younger, stays */
    sqlite3 *h;
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(h, "SELECT user, key, created FROM idempotency_keys ORDER BY user", -1, &st,
                                    NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "alice");
    cr_assert_eq(sqlite3_column_int64(st, 2), now + DB_IDEM_TTL_S);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "bob");
    cr_assert_eq(sqlite3_column_int64(st, 2), now + 5);
    cr_assert_eq(sqlite3_step(st), SQLITE_DONE, "alice's k2 of the first day was pruned");
    sqlite3_finalize(st);
    sqlite3_close(h);
}

/* Four processes add to the same line, one transaction per add: the total
 * is exact (the write lock serialises them; busy_timeout makes them wait). */
Test(db, concurrent_adds_lose_no_increment, .timeout = 60)
{
    enum { N = 4, ADDS = 150 };
    db_close(open_ok());
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        cr_assert_neq(pids[i], -1);
        if (pids[i] == 0) {
            struct db *db = NULL;
            char err[256];
            int rc = db_open(path, &db, err, sizeof err), bad = rc != 0;
            struct db_conn *c = bad ? NULL : db_acquire(db, &rc);
            for (int k = 0; c && k < ADDS && !bad; k++) {
                int64_t q;
                bad = db_begin(c) || db_cart_add(c, "shared", 1, 1, &q) || db_commit(c);
            }
            db_release(db, c);
            db_close(db);
            _exit(bad);
        }
    }
    for (int i = 0; i < N; i++) {
        int st;
        cr_assert_eq(waitpid(pids[i], &st, 0), pids[i]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d failed", i);
    }
    struct db *db = open_ok();
    int rc;
    struct db_conn *c = db_acquire(db, &rc);
    struct lines ls = {0};
    cr_assert_eq(db_cart_get(c, "shared", collect, &ls), 0);
    cr_assert_eq(ls.n, 1);
    cr_assert_eq(ls.qty[0], N * ADDS);
    db_release(db, c);
    db_close(db);
}

Test(db, counters_upsert)
{
    struct db *db = open_ok();
    int rc;
    struct db_conn *c = db_acquire(db, &rc);
    int64_t n = -1;
    cr_assert_eq(db_counter_get(c, "request:GET:/api/products", &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(db_counter_add(c, "request:GET:/api/products", 5), 0);
    cr_assert_eq(db_counter_add(c, "request:GET:/api/products", 7), 0);
    cr_assert_eq(db_counter_add(c, "request:PUT:/api/products/:id", 1), 0);
    cr_assert_eq(db_commit(c), 0);
    cr_assert_eq(db_counter_get(c, "request:GET:/api/products", &n), 0);
    cr_assert_eq(n, 12);
    db_release(db, c);
    db_close(db);
}

static void take(void *arg, const char *name, int64_t n)
{
    int64_t *sum = arg;
    cr_assert(strncmp(name, "request:", 8) == 0);
    *sum += n;
}

Test(db, counters_taken_once)
{
    struct db *db = open_ok();
    int rc;
    struct db_conn *c = db_acquire(db, &rc);
    int64_t sum = 0, n = -1;
    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(db_counter_add(c, "request:GET:/a", 3), 0);
    cr_assert_eq(db_counter_add(c, "request:GET:/b", 4), 0);
    cr_assert_eq(db_commit(c), 0);
    cr_assert_eq(db_begin(c), 0);
    cr_assert_eq(db_counters_take(c, take, &sum), 0);
    cr_assert_eq(db_commit(c), 0);
    cr_assert_eq(sum, 7);
    cr_assert_eq(db_counter_get(c, "request:GET:/a", &n), 0);
    cr_assert_eq(n, 0, "taken rows are gone");
    sum = 0;
    cr_assert_eq(db_counters_take(c, take, &sum), 0);
    cr_assert_eq(sum, 0);
    db_release(db, c);
    db_close(db);
}

struct pool_job {
    int ran, done_status, done;
    int64_t price;
};

static void pool_work(struct db_conn *c, void *arg)
{
    struct pool_job *j = arg;
    struct db_product p;
    if (db_product_get(c, 2, &p) == 0)
        j->price = p.price;
    j->ran = 1;
}

static void pool_done(void *arg, int status)
{
    struct pool_job *j = arg;
    j->done = 1;
    j->done_status = status;
}

Test(db, work_runs_on_the_thread_pool)
{
    struct db *db = open_ok();
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    struct pool_job jobs[16] = {0};
    for (int i = 0; i < 16; i++)
        cr_assert_eq(db_submit(db, &loop, pool_work, pool_done, &jobs[i]), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 16; i++) {
        cr_assert(jobs[i].ran && jobs[i].done);
        cr_assert_eq(jobs[i].done_status, 0);
        cr_assert_eq(jobs[i].price, 200);
    }
    cr_assert_eq(uv_loop_close(&loop), 0);
    db_close(db);
}
