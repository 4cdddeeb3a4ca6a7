/*
 * A bad store.path stops the start with a clear message, and workers only
 * open the file when a request needs it (an idle worker never loads
 * SQLite). Files the master creates go to the workers' user.
 */
#include "app/shop_prepare.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/identity.h"
#include "core/log.h"
#include "store/db.h"

int shop_prepare_store(const struct cfg *c)
{
    char err[512];
    struct db *db;
    if (c->app != CFG_APP_SHOP)
        return 0;
    if (db_open(c->store.path, &db, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return -1;
    }
    db_close(db);
    uv_uid_t uid;
    uv_gid_t gid;
    if (identity_resolve(c, &uid, &gid)) {
        char path[4096];
        snprintf(path, sizeof(path), "%s", c->store.path);
        const char *dir = dirname(path); /* the folder SQLite writes its journal in */
        if (chown(c->store.path, uid, gid) < 0 || (strcmp(dir, ".") != 0 && chown(dir, uid, gid) < 0))
            log_warn("cannot hand %s to user %s: %s", c->store.path, c->user ? c->user : "?", strerror(errno));
    }
    return 0;
}
