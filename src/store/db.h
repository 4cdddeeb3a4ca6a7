/*
 * The shop's SQLite store: the catalog (the source of truth for products),
 * and -- when there is no Redis -- carts and request counters.
 *
 * One file (store.path) shared by every worker of the machine, in WAL mode:
 * readers never wait for the writer, and writers of several processes queue
 * on SQLite's lock (BEGIN IMMEDIATE, busy_timeout) instead of failing. The
 * schema and the demo catalog are built into the binary as versioned
 * migrations (PRAGMA user_version), applied on open inside one write
 * transaction, so several processes opening a new file at once migrate it
 * exactly once.
 *
 * Threads: a struct db_conn is one SQLite connection with its prepared
 * statements. It is used by one thread at a time: db_submit() runs work on
 * libuv's thread pool with a connection taken from the store's pool, so
 * SQLite never blocks an event loop. The query functions block; call them
 * only from such work (or from tests and startup).
 *
 * Errors: functions return 0 or a negative errno: -ENOENT (no such row),
 * -EBUSY (the lock stayed taken past busy_timeout), -EIO (anything else;
 * db_errmsg() says what).
 *
 * Ownership: db_open() returns a store the caller frees with db_close()
 * once no work is in flight; connections belong to the store.
 */
#ifndef COHORT_STORE_DB_H
#define COHORT_STORE_DB_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define DB_NAME_MAX 200          /* bytes of a product name */
#define DB_BUSY_TIMEOUT_MS 10000 /* how long a writer waits for the lock */
#define DB_SCHEMA_VERSION 3      /* migrations built into this binary */
#define DB_SEED_PRODUCTS 1000

struct db;
struct db_conn;

struct db_product {
    int64_t id, price, stock;
    char name[DB_NAME_MAX + 1]; /* UTF-8, NUL-terminated */
};

/* A partial change: only the fields whose has_ flag is set. */
struct db_product_patch {
    unsigned has_name : 1, has_price : 1, has_stock : 1;
    const char *name;
    int64_t price, stock;
};

struct db_cart_line {
    int64_t product_id, price, quantity;
    const char *name; /* valid during the callback */
};

/*
 * Opens the store at `path` (relative to the working directory), creating
 * missing folders and the file, switching to WAL and applying the
 * migrations. Blocks: call it at startup. Returns 0, or a negative errno
 * with a message naming the file in err.
 */
int db_open(const char *path, struct db **out, char *err, size_t errlen);

/*
 * Like db_open, but touches nothing yet: the file is opened, switched to
 * WAL and migrated by the first db_acquire() (on the thread pool). A worker
 * that serves no shop request never loads SQLite's pages. Returns 0 or
 * -ENOMEM.
 */
int db_attach(const char *path, struct db **out);

/* Closes every pooled connection and frees the store. No work may be in
 * flight. db_close(NULL) is a no-op. */
void db_close(struct db *db);

/* The schema version of the file (for tests and /health/ready). */
int db_schema_version(struct db_conn *c, int *version);

/* --- running work off the loop ---------------------------------------- */

typedef void (*db_work_fn)(struct db_conn *c, void *arg);
/* status: 0 when work ran; -ECANCELED, or the errno of failing to open a
 * connection, when it did not. */
typedef void (*db_done_fn)(void *arg, int status);

/* Runs work(conn, arg) on the loop's thread pool, then done(arg, status) on
 * the loop. Returns 0, or -ENOMEM (then neither runs). */
int db_submit(struct db *db, uv_loop_t *loop, db_work_fn work, db_done_fn done, void *arg);

/* A connection for synchronous use (tests, startup); give it back with
 * db_release. NULL with *rc set on failure. */
struct db_conn *db_acquire(struct db *db, int *rc);
void db_release(struct db *db, struct db_conn *c);

/* The last SQLite error message of the connection. */
const char *db_errmsg(struct db_conn *c);

/* --- the catalog ------------------------------------------------------ */

int db_product_get(struct db_conn *c, int64_t id, struct db_product *out);
/* Up to `limit` products from `offset` in id order into out[]; *n is how
 * many. */
int db_product_list(struct db_conn *c, int64_t limit, int64_t offset, struct db_product *out, size_t *n);
int db_product_count(struct db_conn *c, int64_t *n);
/* Applies a patch in its own write transaction; *out is the product after
 * it. -ENOENT for an unknown id. */
int db_product_update(struct db_conn *c, int64_t id, const struct db_product_patch *p, struct db_product *out);

/* --- write transactions: carts and counters ----------------------------
 * Group several writes into one transaction (one commit, one fsync):
 * db_begin (BEGIN IMMEDIATE: waits for the write lock), the writes,
 * db_commit; on any error db_rollback. */
int db_begin(struct db_conn *c);
int db_commit(struct db_conn *c);
void db_rollback(struct db_conn *c);

/* Adds qty to the user's line for a product (an UPSERT); *quantity is the
 * line's new quantity. -ENOENT when the product does not exist. */
int db_cart_add(struct db_conn *c, const char *user, int64_t product_id, int64_t qty, int64_t *quantity);
/* db_cart_add, once per (user, key) for DB_IDEM_TTL_S seconds: `request`
 * describes the add (at most DB_IDEM_REQUEST_MAX bytes); the same key with
 * the same request again changes nothing and gives the quantity the first
 * one left (*replayed = 1); with another request it is -EEXIST. A key is
 * kept only for an add that was made (not after -ENOENT). Call it inside a
 * write transaction. */
#define DB_IDEM_TTL_S 86400
#define DB_IDEM_REQUEST_MAX 64
int db_cart_add_once(struct db_conn *c, const char *user, const char *key, const char *request, int64_t product_id,
                     int64_t qty, int64_t now_s, int64_t *quantity, int *replayed);
/* Removes a line; -ENOENT when there was none. */
int db_cart_remove(struct db_conn *c, const char *user, int64_t product_id);
/* Calls each() for every line of the user's cart in product order, joined
 * with the catalog (lines of products no longer there are skipped). */
int db_cart_get(struct db_conn *c, const char *user, void (*each)(void *arg, const struct db_cart_line *l),
                void *arg);

/* request_counters: name -> count; adds n (an UPSERT). */
int db_counter_add(struct db_conn *c, const char *name, int64_t n);
/* 0 with *n = 0 for a name never counted. */
int db_counter_get(struct db_conn *c, const char *name, int64_t *n);
/* Hands every counter row to each() and deletes them all: inside a write
 * transaction, so each row goes to exactly one taker. */
int db_counters_take(struct db_conn *c, void (*each)(void *arg, const char *name, int64_t n), void *arg);

#endif
