/*
 * SQLite store. See db.h for the contract.
 *
 * Connections: a pool guarded by a mutex. A work item takes one (opening a
 * new one when none is free), runs, and gives it back; so there are at
 * most as many connections as threads that ever ran work at once (libuv's
 * pool: 4 by default) plus one for synchronous use. Connections are opened
 * in SQLite's multi-thread mode (no per-connection mutex): the pool makes
 * sure a connection has one user at a time.
 *
 * Durability: synchronous=FULL, so a commit is on disk (the WAL is synced)
 * before db_commit returns; callers that batch writes into one transaction
 * pay one sync for the batch.
 */
#include "store/db.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum stmt_id {
    S_PRODUCT_GET,
    S_PRODUCT_LIST,
    S_PRODUCT_COUNT,
    S_PRODUCT_UPDATE,
    S_CART_ADD,
    S_CART_REMOVE,
    S_CART_GET,
    S_COUNTER_ADD,
    S_COUNTER_GET,
    S_COUNTER_ALL,
    S_COUNTER_CLEAR,
    S_IDEM_GET,
    S_IDEM_PUT,
    S_IDEM_PRUNE,
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_COUNT
};

static const char *const stmt_sql[S_COUNT] = {
    [S_PRODUCT_GET] = "SELECT id, name, price, stock FROM products WHERE id = ?1",
    [S_PRODUCT_LIST] = "SELECT id, name, price, stock FROM products ORDER BY id LIMIT ?1 OFFSET ?2",
    [S_PRODUCT_COUNT] = "SELECT count(*) FROM products",
    [S_PRODUCT_UPDATE] = "UPDATE products SET name = coalesce(?2, name), price = coalesce(?3, price), "
                         "stock = coalesce(?4, stock) WHERE id = ?1 RETURNING id, name, price, stock",
    /* The SELECT makes an unknown product insert nothing (and return no
     * row); "WHERE" is what lets SQLite parse ON CONFLICT after a SELECT. */
    [S_CART_ADD] = "INSERT INTO cart_items (user, product_id, quantity) SELECT ?1, id, ?3 FROM products "
                   "WHERE id = ?2 ON CONFLICT (user, product_id) DO UPDATE SET quantity = quantity + "
                   "excluded.quantity RETURNING quantity",
    [S_CART_REMOVE] = "DELETE FROM cart_items WHERE user = ?1 AND product_id = ?2",
    [S_CART_GET] = "SELECT c.product_id, p.name, p.price, c.quantity FROM cart_items c JOIN products p "
                   "ON p.id = c.product_id WHERE c.user = ?1 ORDER BY c.product_id",
    [S_COUNTER_ADD] = "INSERT INTO request_counters (name, count) VALUES (?1, ?2) "
                      "ON CONFLICT (name) DO UPDATE SET count = count + excluded.count",
    [S_COUNTER_GET] = "SELECT count FROM request_counters WHERE name = ?1",
    [S_COUNTER_ALL] = "SELECT name, count FROM request_counters ORDER BY name",
    [S_COUNTER_CLEAR] = "DELETE FROM request_counters",
    [S_IDEM_GET] = "SELECT request, quantity FROM idempotency_keys WHERE user = ?1 AND key = ?2 AND created > ?3",
    [S_IDEM_PUT] = "INSERT OR REPLACE INTO idempotency_keys (user, key, request, quantity, created) "
                   "VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_IDEM_PRUNE] = "DELETE FROM idempotency_keys WHERE created <= ?1",
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
};

/*
 * Migrations: migrations[v] takes a file from version v to v + 1. Never
 * edit one that has shipped; add the next. The demo catalog is a migration
 * too, so it is written exactly once, with the schema it belongs to.
 */
static const char *const migrations[DB_SCHEMA_VERSION] = {
    /* 1: schema */
    "CREATE TABLE products ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  price INTEGER NOT NULL CHECK (price >= 0),"
    "  stock INTEGER NOT NULL DEFAULT 0 CHECK (stock >= 0));"
    "CREATE TABLE cart_items ("
    "  user TEXT NOT NULL,"
    "  product_id INTEGER NOT NULL,"
    "  quantity INTEGER NOT NULL,"
    "  PRIMARY KEY (user, product_id)) WITHOUT ROWID;"
    "CREATE TABLE request_counters ("
    "  name TEXT PRIMARY KEY,"
    "  count INTEGER NOT NULL) WITHOUT ROWID;",
    /* 2: demo catalog: the seed's two products, then enough that paging
     * matters, with deterministic prices (in the smallest currency unit) */
    "INSERT INTO products (id, name, price, stock) VALUES (1, '商品1', 100, 5), (2, '商品2', 200, 10);"
    "WITH RECURSIVE n(i) AS (SELECT 3 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)"
    "  INSERT INTO products (id, name, price, stock)"
    "  SELECT i, '商品' || i, 100 + (i * 37) % 900, i % 50 FROM n;",
    /* 3: cart adds made once per Idempotency-Key (db_cart_add_once) */
    "CREATE TABLE idempotency_keys ("
    "  user TEXT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  request TEXT NOT NULL,"
    "  quantity INTEGER NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  PRIMARY KEY (user, key)) WITHOUT ROWID;"
    "CREATE INDEX idempotency_keys_created ON idempotency_keys (created);",
};

struct db_conn {
    sqlite3 *h;
    sqlite3_stmt *st[S_COUNT];
    struct db_conn *next_free;
};

struct db {
    char *path;
    pthread_mutex_t lock;
    struct db_conn *free_list;
    int ready;        /* the file exists, in WAL mode, migrated */
};

static int prepare_file(struct db *db, struct db_conn **first, char *err, size_t errlen);

/* --- errors ------------------------------------------------------------ */

static int xlate(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
        return -EACCES;
    default:
        return -EIO;
    }
}

const char *db_errmsg(struct db_conn *c)
{
    return c && c->h ? sqlite3_errmsg(c->h) : "no connection";
}

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EIO;
}

/* --- connections ------------------------------------------------------- */

static int exec(sqlite3 *h, const char *sql)
{
    return xlate(sqlite3_exec(h, sql, NULL, NULL, NULL));
}

static void conn_free(struct db_conn *c)
{
    if (!c)
        return;
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close(c->h);
    free(c);
}

/*
 * Waiting for another process's write lock. SQLite's own busy_timeout
 * sleeps up to 100 ms at a time, far longer than the lock is held (one
 * batch commit: about a millisecond), which made waiting writers lose whole
 * tens of milliseconds. Short sleeps, up to DB_BUSY_TIMEOUT_MS in all.
 */
#define BUSY_SLEEP_US 200

static int busy_wait(void *arg, int calls)
{
    (void)arg;
    if ((int64_t)calls * BUSY_SLEEP_US >= (int64_t)DB_BUSY_TIMEOUT_MS * 1000)
        return 0;
    usleep(BUSY_SLEEP_US);
    return 1;
}

/* Opens a connection with the per-connection settings (the journal mode is
 * the file's, set once by db_open). */
static int conn_open(const char *path, struct db_conn **out)
{
    struct db_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int rc = sqlite3_open_v2(path, &c->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_handler(c->h, busy_wait, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(c->h, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        *out = c; /* the caller reads the message, then frees */
        return xlate(rc) ? xlate(rc) : -EIO;
    }
    *out = c;
    return 0;
}

static sqlite3_stmt *stmt(struct db_conn *c, enum stmt_id id)
{
    if (!c->st[id] && sqlite3_prepare_v3(c->h, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->st[id], NULL) !=
                          SQLITE_OK)
        return NULL;
    return c->st[id];
}

struct db_conn *db_acquire(struct db *db, int *rc)
{
    pthread_mutex_lock(&db->lock);
    struct db_conn *c = db->free_list;
    if (c) {
        db->free_list = c->next_free;
    } else if (!db->ready) {
        /* an attached store opens (and migrates) its file on first use,
         * here on the thread pool, never on the loop */
        char err[256];
        *rc = prepare_file(db, &c, err, sizeof(err));
        db->ready = *rc == 0;
        if (*rc)
            conn_free(c), c = NULL;
        pthread_mutex_unlock(&db->lock);
        return c;
    }
    pthread_mutex_unlock(&db->lock);
    if (c)
        return c;
    *rc = conn_open(db->path, &c);
    if (*rc) {
        conn_free(c);
        return NULL;
    }
    return c;
}

void db_release(struct db *db, struct db_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&db->lock);
    c->next_free = db->free_list;
    db->free_list = c;
    pthread_mutex_unlock(&db->lock);
}

/* --- opening: folders, WAL, migrations --------------------------------- */

/* mkdir -p of the folders above `path`. */
static int make_parents(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
            int rc = -errno;
            free(p);
            return rc;
        }
        *s = '/';
    }
    free(p);
    return 0;
}

static int user_version(sqlite3 *h, int *v)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &s, NULL);
    if (rc != SQLITE_OK)
        return xlate(rc);
    rc = sqlite3_step(s);
    *v = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? 0 : xlate(rc);
}

int db_schema_version(struct db_conn *c, int *version)
{
    return user_version(c->h, version);
}

/*
 * Applies what is missing in one BEGIN IMMEDIATE transaction: a second
 * process opening the file at the same time waits for the lock, then finds
 * the version already current.
 */
static int migrate(sqlite3 *h, const char *path, char *err, size_t errlen)
{
    char sql[64];
    int v = 0, rc = exec(h, "BEGIN IMMEDIATE");
    if (!rc)
        rc = user_version(h, &v);
    if (!rc && v > DB_SCHEMA_VERSION) {
        exec(h, "ROLLBACK");
        return fail(err, errlen, "%s: schema version %d is newer than this binary's %d", path, v,
                    DB_SCHEMA_VERSION);
    }
    for (; !rc && v < DB_SCHEMA_VERSION; v++)
        rc = exec(h, migrations[v]);
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", DB_SCHEMA_VERSION);
    if (!rc)
        rc = exec(h, sql);
    if (!rc)
        rc = exec(h, "COMMIT");
    if (rc) {
        fail(err, errlen, "%s: migrating to schema version %d: %s", path, v + 1, sqlite3_errmsg(h));
        exec(h, "ROLLBACK");
    }
    return rc;
}

/* Switching to WAL takes the file's exclusive lock for a moment; a
 * concurrent opener may see SQLITE_BUSY beyond the busy handler, so retry. */
static int use_wal(sqlite3 *h)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        sqlite3_stmt *s;
        int rc = sqlite3_prepare_v2(h, "PRAGMA journal_mode = WAL", -1, &s, NULL);
        if (rc != SQLITE_OK)
            return xlate(rc);
        rc = sqlite3_step(s);
        int wal = rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(s, 0), "wal") == 0;
        sqlite3_finalize(s);
        if (wal)
            return 0;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED && rc != SQLITE_ROW)
            return xlate(rc);
        sqlite3_sleep(20);
    }
    return -EBUSY;
}

/* Creates the folders and the file, switches to WAL and migrates; leaves
 * the connection it used in *first (also on failure, for its message). */
static int prepare_file(struct db *db, struct db_conn **first, char *err, size_t errlen)
{
    int rc;
    const char *path = db->path;
    *first = NULL;
    if ((rc = make_parents(path)) < 0)
        fail(err, errlen, "%s: cannot create its folder: %s", path, strerror(-rc));
    else if ((rc = conn_open(path, first)) < 0)
        fail(err, errlen, "%s: cannot open: %s", path, db_errmsg(*first));
    else if ((rc = use_wal((*first)->h)) < 0)
        fail(err, errlen, "%s: cannot switch to WAL: %s", path, db_errmsg(*first));
    else
        rc = migrate((*first)->h, path, err, errlen);
    return rc;
}

int db_attach(const char *path, struct db **out)
{
    struct db *db = calloc(1, sizeof(*db));
    *out = NULL;
    if (!db || !(db->path = strdup(path))) {
        free(db);
        return -ENOMEM;
    }
    pthread_mutex_init(&db->lock, NULL);
    *out = db;
    return 0;
}

int db_open(const char *path, struct db **out, char *err, size_t errlen)
{
    struct db_conn *c = NULL;
    struct db *db;
    int rc = db_attach(path, &db);
    if (rc) {
        fail(err, errlen, "%s: out of memory", path);
        return rc;
    }
    rc = prepare_file(db, &c, err, errlen);
    if (rc) {
        conn_free(c);
        db_close(db);
        return rc;
    }
    db->ready = 1;
    db_release(db, c);
    *out = db;
    return 0;
}

void db_close(struct db *db)
{
    if (!db)
        return;
    while (db->free_list) {
        struct db_conn *c = db->free_list;
        db->free_list = c->next_free;
        conn_free(c);
    }
    pthread_mutex_destroy(&db->lock);
    free(db->path);
    free(db);
}

/* --- thread pool ------------------------------------------------------- */

struct job {
    uv_work_t req;
    struct db *db;
    db_work_fn work;
    db_done_fn done;
    void *arg;
    int status;
};

static void job_work(uv_work_t *req)
{
    struct job *j = req->data;
    struct db_conn *c = db_acquire(j->db, &j->status);
    if (!c)
        return;
    j->status = 0;
    j->work(c, j->arg);
    db_release(j->db, c);
}

static void job_after(uv_work_t *req, int status)
{
    struct job *j = req->data;
    j->done(j->arg, status == UV_ECANCELED ? -ECANCELED : j->status);
    free(j);
}

int db_submit(struct db *db, uv_loop_t *loop, db_work_fn work, db_done_fn done, void *arg)
{
    struct job *j = malloc(sizeof(*j));
    if (!j)
        return -ENOMEM;
    *j = (struct job){.db = db, .work = work, .done = done, .arg = arg};
    j->req.data = j;
    int rc = uv_queue_work(loop, &j->req, job_work, job_after);
    if (rc < 0)
        free(j);
    return rc;
}

/* --- queries ----------------------------------------------------------- */

/* Steps a statement that returns at most one row, then resets it; the row
 * is read by `row` while it is current. */
static int one_row(sqlite3_stmt *s, void (*row)(sqlite3_stmt *s, void *arg), void *arg)
{
    int rc = sqlite3_step(s), found = rc == SQLITE_ROW;
    if (found)
        row(s, arg);
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE)
        return xlate(rc) ? xlate(rc) : -EIO;
    return found ? 0 : -ENOENT;
}

static void read_product(sqlite3_stmt *s, void *arg)
{
    struct db_product *p = arg;
    const unsigned char *name = sqlite3_column_text(s, 1);
    p->id = sqlite3_column_int64(s, 0);
    snprintf(p->name, sizeof(p->name), "%s", name ? (const char *)name : "");
    p->price = sqlite3_column_int64(s, 2);
    p->stock = sqlite3_column_int64(s, 3);
}

int db_product_get(struct db_conn *c, int64_t id, struct db_product *out)
{
    sqlite3_stmt *s = stmt(c, S_PRODUCT_GET);
    if (!s)
        return -EIO;
    sqlite3_bind_int64(s, 1, id);
    return one_row(s, read_product, out);
}

int db_product_list(struct db_conn *c, int64_t limit, int64_t offset, struct db_product *out, size_t *n)
{
    sqlite3_stmt *s = stmt(c, S_PRODUCT_LIST);
    int rc;
    *n = 0;
    if (!s)
        return -EIO;
    sqlite3_bind_int64(s, 1, limit);
    sqlite3_bind_int64(s, 2, offset);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW && (int64_t)*n < limit)
        read_product(s, &out[(*n)++]);
    sqlite3_reset(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : xlate(rc);
}

static void read_int(sqlite3_stmt *s, void *arg)
{
    *(int64_t *)arg = sqlite3_column_int64(s, 0);
}

int db_product_count(struct db_conn *c, int64_t *n)
{
    sqlite3_stmt *s = stmt(c, S_PRODUCT_COUNT);
    return s ? one_row(s, read_int, n) : -EIO;
}

/* Runs a statement that returns no rows (or whose rows do not matter). */
static int run(sqlite3_stmt *s)
{
    int64_t ignored;
    int rc = s ? one_row(s, read_int, &ignored) : -EIO;
    return rc == -ENOENT ? 0 : rc;
}

int db_begin(struct db_conn *c)
{
    return run(stmt(c, S_BEGIN));
}

int db_commit(struct db_conn *c)
{
    return run(stmt(c, S_COMMIT));
}

/* SQLite may have rolled back by itself (after SQLITE_FULL, say). */
void db_rollback(struct db_conn *c)
{
    if (sqlite3_get_autocommit(c->h) == 0)
        run(stmt(c, S_ROLLBACK));
}

int db_product_update(struct db_conn *c, int64_t id, const struct db_product_patch *p, struct db_product *out)
{
    sqlite3_stmt *s = stmt(c, S_PRODUCT_UPDATE);
    if (!s)
        return -EIO;
    int rc = db_begin(c);
    if (rc)
        return rc;
    sqlite3_bind_int64(s, 1, id);
    if (p->has_name)
        sqlite3_bind_text(s, 2, p->name, -1, SQLITE_TRANSIENT);
    if (p->has_price)
        sqlite3_bind_int64(s, 3, p->price);
    if (p->has_stock)
        sqlite3_bind_int64(s, 4, p->stock);
    rc = one_row(s, read_product, out);
    if (!rc)
        rc = db_commit(c);
    if (rc)
        db_rollback(c);
    return rc;
}

int db_cart_add(struct db_conn *c, const char *user, int64_t product_id, int64_t qty, int64_t *quantity)
{
    sqlite3_stmt *s = stmt(c, S_CART_ADD);
    if (!s)
        return -EIO;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, product_id);
    sqlite3_bind_int64(s, 3, qty);
    return one_row(s, read_int, quantity);
}

struct idem_row {
    char request[DB_IDEM_REQUEST_MAX + 1];
    int64_t quantity;
};

static void read_idem(sqlite3_stmt *s, void *arg)
{
    struct idem_row *r = arg;
    const unsigned char *t = sqlite3_column_text(s, 0);
    snprintf(r->request, sizeof r->request, "%s", t ? (const char *)t : "");
    r->quantity = sqlite3_column_int64(s, 1);
}

int db_cart_add_once(struct db_conn *c, const char *user, const char *key, const char *request, int64_t product_id,
                     int64_t qty, int64_t now_s, int64_t *quantity, int *replayed)
{
    sqlite3_stmt *prune = stmt(c, S_IDEM_PRUNE), *get = stmt(c, S_IDEM_GET), *put = stmt(c, S_IDEM_PUT);
    struct idem_row seen;
    int rc;
    *replayed = 0;
    if (!prune || !get || !put)
        return -EIO;
    /* expired keys go as new ones come (an index seek when there are none) */
    sqlite3_bind_int64(prune, 1, now_s - DB_IDEM_TTL_S);
    if ((rc = run(prune)) != 0)
        return rc;
    sqlite3_bind_text(get, 1, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(get, 2, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(get, 3, now_s - DB_IDEM_TTL_S);
    rc = one_row(get, read_idem, &seen);
    if (rc == 0) {
        if (strcmp(seen.request, request) != 0)
            return -EEXIST;
        *quantity = seen.quantity;
        *replayed = 1;
        return 0;
    }
    if (rc != -ENOENT)
        return rc;
    if ((rc = db_cart_add(c, user, product_id, qty, quantity)) != 0)
        return rc;
    sqlite3_bind_text(put, 1, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(put, 2, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(put, 3, request, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(put, 4, *quantity);
    sqlite3_bind_int64(put, 5, now_s);
    return run(put);
}

int db_cart_remove(struct db_conn *c, const char *user, int64_t product_id)
{
    sqlite3_stmt *s = stmt(c, S_CART_REMOVE);
    if (!s)
        return -EIO;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, product_id);
    int rc = run(s);
    return rc ? rc : sqlite3_changes(c->h) > 0 ? 0 : -ENOENT;
}

int db_cart_get(struct db_conn *c, const char *user, void (*each)(void *arg, const struct db_cart_line *l), void *arg)
{
    sqlite3_stmt *s = stmt(c, S_CART_GET);
    int rc;
    if (!s)
        return -EIO;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *name = sqlite3_column_text(s, 1);
        struct db_cart_line l = {.product_id = sqlite3_column_int64(s, 0),
                                 .name = name ? (const char *)name : "",
                                 .price = sqlite3_column_int64(s, 2),
                                 .quantity = sqlite3_column_int64(s, 3)};
        each(arg, &l);
    }
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE ? 0 : xlate(rc);
}

int db_counter_add(struct db_conn *c, const char *name, int64_t n)
{
    sqlite3_stmt *s = stmt(c, S_COUNTER_ADD);
    if (!s)
        return -EIO;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, n);
    return run(s);
}

int db_counter_get(struct db_conn *c, const char *name, int64_t *n)
{
    sqlite3_stmt *s = stmt(c, S_COUNTER_GET);
    if (!s)
        return -EIO;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT);
    *n = 0;
    int rc = one_row(s, read_int, n);
    return rc == -ENOENT ? 0 : rc;
}

int db_counters_take(struct db_conn *c, void (*each)(void *arg, const char *name, int64_t n), void *arg)
{
    sqlite3_stmt *s = stmt(c, S_COUNTER_ALL);
    int rc;
    if (!s)
        return -EIO;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *name = sqlite3_column_text(s, 0);
        if (name)
            each(arg, (const char *)name, sqlite3_column_int64(s, 1));
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return xlate(rc) ? xlate(rc) : -EIO;
    return run(stmt(c, S_COUNTER_CLEAR));
}
