/*
 * Paths in the config: a relative path written in a file is resolved
 * against that file's folder, one from a default, the environment or the
 * command line against the working directory, and the loaded config (and
 * the effective JSON workers get) holds absolute paths. Static roots that
 * are missing, not folders, or not readable by the workers are refused with
 * the position and key of the value, like every other config error.
 *
 * Each test runs in its own process (Criterion), so it may chdir freely.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "modules.h"

/* Route handlers and their keys, registered as main registers them. */
__attribute__((constructor)) static void register_modules(void)
{
    modules_register();
}

static char dir[64];
static char err[512];

static void setup(void)
{
    strcpy(dir, "/tmp/cohort-cpath-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char *real = realpath(dir, NULL);
    cr_assert_not_null(real);
    snprintf(dir, sizeof dir, "%s", real);
    free(real);
    unsetenv("COHORT_ENV");
    unsetenv("LOG_ACCESS");
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(cpaths, .init = setup, .fini = teardown);

/* dir/name, in one of a few rotating buffers. */
static const char *in(const char *name)
{
    static char p[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

static void make_dirs(const char *name)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    for (char *s = p + strlen(dir) + 1; (s = strchr(s, '/')); s++) {
        *s = '\0';
        cr_assert(mkdir(p, 0755) == 0 || errno == EEXIST, "%s: %s", p, strerror(errno));
        *s = '/';
    }
    cr_assert(mkdir(p, 0755) == 0 || errno == EEXIST, "%s: %s", p, strerror(errno));
}

static void write_file(const char *name, const char *text)
{
    FILE *f = fopen(in(name), "w");
    cr_assert_not_null(f, "%s", in(name));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

static int load(const char *file, int check_fs, const char *const *ov, struct cfg *c)
{
    struct cfg_sources s = {.file = file, .check_fs = check_fs, .overrides = ov, .no_files = !file};
    return cfg_load(&s, c, err, sizeof err);
}

/* --- resolving -------------------------------------------------------- */

static const char app_config[] =
    "{\"routes\": [{\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"../public\"},\n"
    "             {\"path\": \"/t/*\", \"handler\": \"static\", \"root\": \"./www/\"}],\n"
    " \"store\": {\"path\": \"data/shop.db\"},\n"
    " \"log\": {\"access\": \"logs/access.log\", \"error\": \"../error.log\"},\n"
    " \"control\": {\"socket\": \"run/ctl.sock\", \"pid_file\": \"/var/run/cohort.pid\"}}\n";

static void assert_app_paths(const struct cfg *c)
{
    cr_assert_str_eq(c->routes[0].root, in("app/public"));
    cr_assert_str_eq(c->routes[1].root, in("app/config/www/"));
    cr_assert_str_eq(c->store.path, in("app/config/data/shop.db"));
    cr_assert_str_eq(c->log.access, in("app/config/logs/access.log"));
    cr_assert_str_eq(c->log.error, in("app/error.log"));
    cr_assert_str_eq(c->control_socket, in("app/config/run/ctl.sock"));
    cr_assert_str_eq(c->pid_file, "/var/run/cohort.pid", "an absolute path stays as written");
}

Test(cpaths, file_paths_are_relative_to_the_files_folder)
{
    struct cfg c;
    make_dirs("app/config");
    make_dirs("elsewhere");
    write_file("app/config/c.json", app_config);

    cr_assert_eq(chdir("/"), 0);
    cr_assert_eq(load(in("app/config/c.json"), 0, NULL, &c), 0, "%s", err);
    assert_app_paths(&c);
    cfg_free(&c);

    /* a file named relative to the working directory: still its own folder */
    cr_assert_eq(chdir(in("elsewhere")), 0);
    cr_assert_eq(load("../app/config/c.json", 0, NULL, &c), 0, "%s", err);
    assert_app_paths(&c);
    cfg_free(&c);
}

Test(cpaths, config_folder_files_resolve_against_their_folder)
{
    struct cfg c;
    make_dirs("app/config");
    make_dirs("app/pub2");
    make_dirs("work");
    write_file("app/config/default.json",
               "{\"routes\": [{\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"../public\"}],\n"
               " \"log\": {\"error\": \"err.log\"}}\n");
    write_file("app/config/staging.json",
               "{\"routes\": [{\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"../pub2\"}]}\n");
    cr_assert_eq(chdir(in("work")), 0);
    struct cfg_sources s = {.config_dir = "../app/config", .env = "staging", .check_fs = 1};
    cr_assert_eq(cfg_load(&s, &c, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.routes[0].root, in("app/pub2"), "the value of staging.json, which wins");
    cr_assert_str_eq(c.log.error, in("app/config/err.log"), "kept from default.json, its folder");
    cr_assert_str_eq(c.store.path, in("work/data/shop.db"), "the built-in default: the working directory");
    cfg_free(&c);
}

Test(cpaths, defaults_environment_and_flags_are_relative_to_the_working_directory)
{
    static const char *const ov[] = {"routes=[{\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"www\"}]",
                                     "log.error=logs/err.log", "control.socket=/run/x.sock", NULL};
    struct cfg c;
    make_dirs("work");
    cr_assert_eq(chdir(in("work")), 0);
    setenv("LOG_ACCESS", "../access.log", 1);
    struct cfg_sources s = {.no_files = 1, .use_environ = 1, .overrides = ov};
    cr_assert_eq(cfg_load(&s, &c, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(c.store.path, in("work/data/shop.db"));
    cr_assert_str_eq(c.log.access, in("access.log"));
    cr_assert_str_eq(c.log.error, in("work/logs/err.log"));
    cr_assert_str_eq(c.routes[0].root, in("work/www"));
    cr_assert_str_eq(c.control_socket, "/run/x.sock");
    cfg_free(&c);
}

Test(cpaths, log_words_are_not_paths)
{
    struct cfg c;
    write_file("a.json", "{\"log\": {\"access\": \"off\", \"error\": \"stderr\"}}");
    write_file("b.json", "{\"log\": {\"access\": \"stderr\"}}");
    write_file("c.json", "{\"log\": {\"access\": \"stdout\"}}");
    cr_assert_eq(chdir("/"), 0);
    cr_assert_eq(load(in("a.json"), 0, NULL, &c), 0, "%s", err);
    cr_assert_str_eq(c.log.access, "off");
    cr_assert_str_eq(c.log.error, "stderr");
    cfg_free(&c);
    cr_assert_eq(load(in("b.json"), 0, NULL, &c), 0, "%s", err);
    cr_assert_str_eq(c.log.access, "stderr");
    cfg_free(&c);
    cr_assert_eq(load(in("c.json"), 0, NULL, &c), 0, "%s", err);
    cr_assert_str_eq(c.log.access, "stdout");
    cfg_free(&c);
}

Test(cpaths, leading_dot_segments_fold_into_the_folder)
{
    struct cfg c;
    make_dirs("a/b");
    write_file("a/b/c.json",
               "{\"routes\": [{\"path\": \"/1/*\", \"handler\": \"static\", \"root\": \".\"},\n"
               "  {\"path\": \"/2/*\", \"handler\": \"static\", \"root\": \"..\"},\n"
               "  {\"path\": \"/3/*\", \"handler\": \"static\", \"root\": \"./.././/x\"},\n"
               "  {\"path\": \"/4/*\", \"handler\": \"static\", \"root\": \"x/../y\"},\n"
               "  {\"path\": \"/5/*\", \"handler\": \"static\", \"root\": "
               "\"../../../../../../../../../../../../../..\"}]}\n");
    cr_assert_eq(load(in("a/b/c.json"), 0, NULL, &c), 0, "%s", err);
    cr_assert_str_eq(c.routes[0].root, in("a/b"));
    cr_assert_str_eq(c.routes[1].root, in("a"));
    cr_assert_str_eq(c.routes[2].root, in("a/x"));
    cr_assert_str_eq(c.routes[3].root, in("a/b/x/../y"), "only leading segments fold; the rest is as written");
    cr_assert_str_eq(c.routes[4].root, "/", "no higher than the root");
    cfg_free(&c);
}

/* A folder reached through a symlink: ".." is the real folder's parent, as
 * the kernel would take it. */
Test(cpaths, symlinked_folder_resolves_as_the_kernel_does)
{
    struct cfg c;
    make_dirs("real/deep/config");
    make_dirs("real/deep/public");
    cr_assert_eq(symlink(in("real/deep/config"), in("link")), 0);
    write_file("real/deep/config/c.json",
               "{\"routes\": [{\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"../public\"}]}");
    cr_assert_eq(load(in("link/c.json"), 1, NULL, &c), 0, "%s", err);
    cr_assert_str_eq(c.routes[0].root, in("real/deep/public"));
    cfg_free(&c);
}

/* Workers get absolute paths and resolve nothing, whatever their cwd. */
Test(cpaths, effective_json_carries_absolute_paths)
{
    struct cfg a, b;
    make_dirs("app/config");
    make_dirs("other");
    write_file("app/config/c.json", app_config);
    cr_assert_eq(chdir(in("app")), 0);
    cr_assert_eq(load("config/c.json", 0, NULL, &a), 0, "%s", err);
    char *json = cfg_to_json(&a);
    cr_assert_not_null(json);
    char want[300];
    snprintf(want, sizeof want, "\"root\": \"%s\"", in("app/public"));
    cr_assert_not_null(strstr(json, want), "%s", json);
    cr_assert_eq(chdir(in("other")), 0);
    cr_assert_eq(cfg_from_json(json, &b, err, sizeof err), 0, "%s", err);
    assert_app_paths(&b);
    cr_assert(cfg_equal(&a, &b));
    free(json);
    cfg_free(&a);
    cfg_free(&b);
}

/* --- static roots ------------------------------------------------------ */

static const char missing_root[] = "{\n"
                                   "  \"routes\": [\n"
                                   "    {\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"../nowhere\"}\n"
                                   "  ]\n"
                                   "}\n";

Test(cpaths, missing_root_is_refused_at_its_position)
{
    struct cfg c;
    char want[400];
    make_dirs("conf");
    write_file("conf/c.json", missing_root);
    cr_assert_eq(load(in("conf/c.json"), 1, NULL, &c), -EINVAL);
    snprintf(want, sizeof want, "%s:3:51: routes[0].root: \"../nowhere\" (%s) does not exist", in("conf/c.json"),
             in("nowhere"));
    cr_assert_str_eq(err, want);
    cr_assert_null(c.routes, "a refused config is not handed out");

    /* status, stop: no filesystem check, they must work while a root is gone */
    cr_assert_eq(load(in("conf/c.json"), 0, NULL, &c), 0, "%s", err);
    cfg_free(&c);

    make_dirs("nowhere");
    cr_assert_eq(load(in("conf/c.json"), 1, NULL, &c), 0, "%s", err);
    cfg_free(&c);
}

Test(cpaths, root_that_is_a_file_is_refused)
{
    struct cfg c;
    char want[400];
    make_dirs("conf");
    write_file("nowhere", "a file\n");
    write_file("conf/c.json", missing_root);
    cr_assert_eq(load(in("conf/c.json"), 1, NULL, &c), -EINVAL);
    snprintf(want, sizeof want, "%s:3:51: routes[0].root: \"../nowhere\" (%s) is not a folder", in("conf/c.json"),
             in("nowhere"));
    cr_assert_str_eq(err, want);
}

/*
 * Readable by whom the workers run as: as root, the configured user (root
 * itself reads everything); otherwise this process.
 */
Test(cpaths, unreadable_root_is_refused)
{
    struct cfg c;
    char want[400];
    const char *why;
    make_dirs("conf");
    make_dirs("www");
    cr_assert_eq(chmod(dir, 0755), 0);
    if (geteuid() == 0) {
        write_file("conf/c.json", "{\"user\": \"nobody\",\n"
                                  " \"routes\": [{\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"../www\"}]}");
        why = "is not readable by user nobody (the workers' user): Permission denied";
        cr_assert_eq(chmod(in("www"), 0700), 0);
    } else {
        write_file("conf/c.json", "{\"routes\": [{\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"../www\"}]}");
        why = "is not readable: Permission denied";
        cr_assert_eq(chmod(in("www"), 0), 0);
    }
    cr_assert_eq(load(in("conf/c.json"), 1, NULL, &c), -EINVAL);
    snprintf(want, sizeof want, "%s:2:59: routes[0].root: \"../www\" (%s) %s", in("conf/c.json"), in("www"), why);
    cr_assert_str_eq(err, want);

    cr_assert_eq(chmod(in("www"), 0755), 0);
    cr_assert_eq(load(in("conf/c.json"), 1, NULL, &c), 0, "%s", err);
    cfg_free(&c);
}

Test(cpaths, root_from_the_command_line_names_its_source)
{
    static const char *const ov[] = {"routes=[{\"path\": \"/s/*\", \"handler\": \"static\", \"root\": \"gone\"}]",
                                     NULL};
    struct cfg c;
    char want[400];
    cr_assert_eq(chdir(dir), 0);
    cr_assert_eq(load(NULL, 1, ov, &c), -EINVAL);
    snprintf(want, sizeof want, "command line: routes[0].root: \"gone\" (%s) does not exist", in("gone"));
    cr_assert_str_eq(err, want);
}

/* Only the effective value is checked: a file's route replaced on the
 * command line does not count. */
Test(cpaths, replaced_root_is_not_checked)
{
    static const char *const ov[] = {"routes=[{\"path\": \"/\", \"handler\": \"hello\"}]", NULL};
    struct cfg c;
    make_dirs("conf");
    write_file("conf/c.json", missing_root);
    cr_assert_eq(load(in("conf/c.json"), 1, ov, &c), 0, "%s", err);
    cr_assert_null(c.routes[0].root);
    cfg_free(&c);
}
