/*
 * The static handler's config: a route of handler "static" names the
 * folder it serves in `root` (a path, made absolute as the config loads),
 * and serve and check-config refuse a root the workers could not read.
 */
#include "http/static_cfg.h"
#include "core/config_module.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *check_root(const char *in, const char **out)
{
    (void)out;
    return *in ? NULL : "must not be empty";
}

static const struct cfg_key keys[] = {
    {.name = CFG_ROUTE_PREFIX "root", .type = CFG_T_STRING, .store = CFG_S_STR,
     .off = offsetof(struct cfg_route, root), .check = check_root, .flags = CFG_RELOAD | CFG_PATH,
     .bounds = "required for static, not allowed otherwise; an existing folder",
     .desc = "Folder the static handler serves; `serve` and `check-config` refuse one that is missing or "
             "not readable."},
};

/*
 * 0 when `user` may list and enter dir, else -errno: a child takes the
 * identity the master gives workers (uv_spawn: no supplementary groups,
 * the group, then the user) and asks. Only async-signal-safe calls after
 * fork, as a reload runs this in the master, which has threads.
 */
static int access_as(const char *dir, const char *user, const char *group)
{
    struct passwd *pw = getpwnam(user);
    struct group *gr = group ? getgrnam(group) : NULL;
    if (!pw)
        return -ENOENT;
    uid_t uid = pw->pw_uid;
    gid_t gid = gr ? gr->gr_gid : pw->pw_gid;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0)
        _exit(setgroups(0, NULL) || setgid(gid) || setuid(uid) || access(dir, R_OK | X_OK) ? errno : 0);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -errno;
    return WIFEXITED(st) ? -WEXITSTATUS(st) : -EIO;
}

/* Why the static handler could not serve the route's root, or NULL. */
static const char *root_problem(const struct cfg *c, const struct cfg_route *r, char *buf, size_t len)
{
    const char *dir = r->root;
    struct stat st;
    if (stat(dir, &st) < 0)
        return errno == ENOENT ? "does not exist" : strerror(errno);
    if (!S_ISDIR(st.st_mode))
        return "is not a folder";
    bool as_user = c->user && geteuid() == 0;
    int rc = as_user ? access_as(dir, c->user, c->group) : access(dir, R_OK | X_OK) < 0 ? -errno : 0;
    if (!rc)
        return NULL;
    if (as_user)
        snprintf(buf, len, "is not readable by user %s (the workers' user): %s", c->user, strerror(-rc));
    else
        snprintf(buf, len, "is not readable: %s", strerror(-rc));
    return buf;
}

static const struct cfg_handler handler = {
    .name = STATIC_HANDLER, .key = "root", .does = "serves files", .check_fs = root_problem};

int static_cfg_register(void)
{
    int rc = cfg_keys_register(keys, sizeof keys / sizeof keys[0]);
    return rc ? rc : cfg_handler_register(&handler);
}
