/*
 * Unit tests for src/http/static.c: path cleaning on a table of normal,
 * dot-segment, percent-encoded and hostile paths; content types; Range,
 * If-None-Match and HTTP-date parsing; and static_open on a temporary tree
 * with symlinks that stay inside the root and ones that leave it, run both
 * with openat2(2) and through the realpath fallback.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http/static.h"

/* --- static_clean_path ------------------------------------------------- */

struct clean_case {
    const char *in;
    const char *out; /* NULL: refused */
};

static const struct clean_case clean_cases[] = {
    {"", ""},
    {"/", ""},
    {"index.html", "index.html"},
    {"a/b.txt", "a/b.txt"},
    {"./a", "a"},
    {"a/./b", "a/b"},
    {"a/../b", "b"},
    {"a/b/../../c", "c"},
    {"a/b/..", "a/"},
    {"a/.", "a/"},
    {"a/..", ""},
    {"a/b/", "a/b/"},
    {"a//b", "a/b"},
    {"//a///b//", "a/b/"},
    {"%41", "A"},
    {"%7e%7E", "~~"},
    {"a%20b+c", "a b+c"},
    {"a/%2e/b", "a/b"},
    {"a/%2E%2e/b", "b"},
    {"...", "..."},
    {"..a/a..", "..a/a.."},
    {"..", NULL},
    {"../x", NULL},
    {"a/../..", NULL},
    {"a/../../b", NULL},
    {"%2e%2e/x", NULL},
    {"%2e%2e", NULL},
    {".%2e/x", NULL},
    {"..%2f", NULL},
    {"..%2fetc", NULL},
    {"%2F", NULL},
    {"a%2fb", NULL},
    {"a%2Fb", NULL},
    {"a%5cb", NULL},
    {"..%5c..%5cwin.ini", NULL},
    {"a\\b", NULL},
    {"%00", NULL},
    {"a%00.html", NULL},
    {"a%0a", NULL},
    {"a%7f", NULL},
    {"%", NULL},
    {"%4", NULL},
    {"a%4/b", NULL},
    {"%zz", NULL},
    {"%g1", NULL},
};

Test(clean_path, table)
{
    for (size_t i = 0; i < sizeof(clean_cases) / sizeof(clean_cases[0]); i++) {
        const struct clean_case *c = &clean_cases[i];
        char out[256];
        memset(out, 'X', sizeof(out));
        int n = static_clean_path(c->in, strlen(c->in), out, sizeof(out));
        if (!c->out) {
            cr_expect_eq(n, -EINVAL, "\"%s\": expected refusal, got %d \"%.*s\"", c->in, n, n > 0 ? n : 0, out);
            continue;
        }
        cr_expect_eq(n, (int)strlen(c->out), "\"%s\": length %d, expected %zu", c->in, n, strlen(c->out));
        if (n >= 0)
            cr_expect_str_eq(out, c->out, "\"%s\"", c->in);
    }
}

Test(clean_path, reads_only_len_bytes)
{
    char out[32];
    int n = static_clean_path("abc/../../etc", 3, out, sizeof(out));
    cr_assert_eq(n, 3);
    cr_expect_str_eq(out, "abc");
    /* an escape cut off by len is no escape; a '%' cut off is malformed */
    cr_expect_eq(static_clean_path("a%41", 3, out, sizeof(out)), -EINVAL);
}

Test(clean_path, output_too_long)
{
    char out[8];
    cr_expect_eq(static_clean_path("abcdefg", 7, out, 8), 7, "7 bytes and the NUL fit in 8");
    cr_expect_str_eq(out, "abcdefg");
    cr_expect_eq(static_clean_path("abcdefgh", 8, out, 8), -ENAMETOOLONG);
    cr_expect_eq(static_clean_path("abc/defg", 8, out, 8), -ENAMETOOLONG);
    cr_expect_eq(static_clean_path("abcdefg/", 8, out, 8), -ENAMETOOLONG, "no room for the trailing slash");
    cr_expect_eq(static_clean_path("a", 1, out, 0), -ENAMETOOLONG);
    cr_expect_eq(static_clean_path("", 0, out, 1), 0);

    char big[PATH_MAX * 2];
    memset(big, 'a', sizeof(big));
    char path_out[PATH_MAX];
    cr_expect_eq(static_clean_path(big, sizeof(big), path_out, sizeof(path_out)), -ENAMETOOLONG);
}

/* --- static_mime_type -------------------------------------------------- */

Test(mime, by_extension)
{
    static const char *const cases[][2] = {
        {"index.html", "text/html; charset=utf-8"},
        {"A/B.HTML", "text/html; charset=utf-8"},
        {"s.css", "text/css; charset=utf-8"},
        {"app.js", "text/javascript; charset=utf-8"},
        {"mod.mjs", "text/javascript; charset=utf-8"},
        {"d.json", "application/json"},
        {"hello.txt", "text/plain; charset=utf-8"},
        {"i.svg", "image/svg+xml"},
        {"p.png", "image/png"},
        {"j.jpg", "image/jpeg"},
        {"j.JPEG", "image/jpeg"},
        {"g.gif", "image/gif"},
        {"w.webp", "image/webp"},
        {"favicon.ico", "image/x-icon"},
        {"m.wasm", "application/wasm"},
        {"f.xml", "application/xml"},
        {"doc.pdf", "application/pdf"},
        {"f.woff", "font/woff"},
        {"f.woff2", "font/woff2"},
        {"app.js.map", "application/json"},
        {"README", "application/octet-stream"},
        {"a.tar.gz", "application/octet-stream"},
        {"dir.html/file", "application/octet-stream"},
        {"trailing.", "application/octet-stream"},
        {"x.htmlx", "application/octet-stream"},
        {"", "application/octet-stream"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_str_eq(static_mime_type(cases[i][0]), cases[i][1], "%s", cases[i][0]);
}

/* --- Range ------------------------------------------------------------- */

struct range_case {
    const char *v;
    uint64_t size;
    enum static_range want;
    uint64_t first, last;
};

static const struct range_case range_cases[] = {
    {"bytes=0-0", 10, STATIC_RANGE_OK, 0, 0},
    {"bytes=0-9", 10, STATIC_RANGE_OK, 0, 9},
    {"bytes=2-5", 10, STATIC_RANGE_OK, 2, 5},
    {"bytes=2-500", 10, STATIC_RANGE_OK, 2, 9},
    {"bytes=2-", 10, STATIC_RANGE_OK, 2, 9},
    {"bytes=9-", 10, STATIC_RANGE_OK, 9, 9},
    {"bytes=-3", 10, STATIC_RANGE_OK, 7, 9},
    {"bytes=-10", 10, STATIC_RANGE_OK, 0, 9},
    {"bytes=-99", 10, STATIC_RANGE_OK, 0, 9},
    {"Bytes=1-2", 10, STATIC_RANGE_OK, 1, 2},
    {"bytes= 1-2 ", 10, STATIC_RANGE_OK, 1, 2},
    {"bytes=0-99999999999999999999999", 10, STATIC_RANGE_OK, 0, 9},
    {"bytes=10-", 10, STATIC_RANGE_UNSATISFIABLE, 0, 0},
    {"bytes=10-20", 10, STATIC_RANGE_UNSATISFIABLE, 0, 0},
    {"bytes=99999999999999999999999-", 10, STATIC_RANGE_UNSATISFIABLE, 0, 0},
    {"bytes=-0", 10, STATIC_RANGE_UNSATISFIABLE, 0, 0},
    {"bytes=0-", 0, STATIC_RANGE_UNSATISFIABLE, 0, 0},
    {"bytes=-5", 0, STATIC_RANGE_UNSATISFIABLE, 0, 0},
    {"bytes=5-2", 10, STATIC_RANGE_NONE, 0, 0},
    {"bytes=0-1,3-4", 10, STATIC_RANGE_NONE, 0, 0},
    {"bytes=0-1,", 10, STATIC_RANGE_NONE, 0, 0},
    {"bytes=", 10, STATIC_RANGE_NONE, 0, 0},
    {"bytes=-", 10, STATIC_RANGE_NONE, 0, 0},
    {"bytes=1", 10, STATIC_RANGE_NONE, 0, 0},
    {"bytes=a-b", 10, STATIC_RANGE_NONE, 0, 0},
    {"bytes=1-2x", 10, STATIC_RANGE_NONE, 0, 0},
    {"bytes=--1", 10, STATIC_RANGE_NONE, 0, 0},
    {"bytes=+1-2", 10, STATIC_RANGE_NONE, 0, 0},
    {"items=0-1", 10, STATIC_RANGE_NONE, 0, 0},
    {"bytes 0-1", 10, STATIC_RANGE_NONE, 0, 0},
    {"", 10, STATIC_RANGE_NONE, 0, 0},
};

Test(range, table)
{
    for (size_t i = 0; i < sizeof(range_cases) / sizeof(range_cases[0]); i++) {
        const struct range_case *c = &range_cases[i];
        uint64_t first = 12345, last = 12345;
        enum static_range r = static_parse_range(c->v, strlen(c->v), c->size, &first, &last);
        cr_expect_eq(r, c->want, "\"%s\" size %llu: got %d, want %d", c->v, (unsigned long long)c->size,
                     r, c->want);
        if (r == STATIC_RANGE_OK && c->want == STATIC_RANGE_OK) {
            cr_expect_eq(first, c->first, "\"%s\": first %llu", c->v, (unsigned long long)first);
            cr_expect_eq(last, c->last, "\"%s\": last %llu", c->v, (unsigned long long)last);
        }
    }
}

/* --- If-None-Match ----------------------------------------------------- */

Test(etag, weak_comparison_over_a_list)
{
    const char *tag = "\"1f-2a-3b\"";
#define M(s) static_etag_match((s), strlen(s), tag)
    cr_expect_eq(M("\"1f-2a-3b\""), 1);
    cr_expect_eq(M("W/\"1f-2a-3b\""), 1);
    cr_expect_eq(M("\"x\", \"1f-2a-3b\""), 1);
    cr_expect_eq(M("\"x\",W/\"1f-2a-3b\" ,\"y\""), 1);
    cr_expect_eq(M("*"), 1);
    cr_expect_eq(M(""), 0);
    cr_expect_eq(M("\"1f-2a-3\""), 0);
    cr_expect_eq(M("\"1f-2a-3b"), 0);
    cr_expect_eq(M("1f-2a-3b"), 0);
    cr_expect_eq(M("w/\"1f-2a-3b\""), 0);
    cr_expect_eq(M("\"x\", junk, \"1f-2a-3b\""), 0);
#undef M
}

/* --- HTTP-date --------------------------------------------------------- */

Test(date, three_forms_and_format)
{
    const time_t want = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
    static const char *const forms[] = {
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
    };
    for (size_t i = 0; i < 3; i++) {
        time_t t = 0;
        cr_expect_eq(static_parse_date(forms[i], strlen(forms[i]), &t), 0, "%s", forms[i]);
        cr_expect_eq(t, want, "%s: %lld", forms[i], (long long)t);
    }
    time_t t;
    cr_expect_eq(static_parse_date("yesterday", 9, &t), -EINVAL);
    cr_expect_eq(static_parse_date("Sun, 06 Nov 1994 08:49:37 GMT junk", 34, &t), -EINVAL);
    char out[30];
    static_format_date(want, out);
    cr_expect_str_eq(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    static_format_date(0, out);
    cr_expect_str_eq(out, "Thu, 01 Jan 1970 00:00:00 GMT");
}

/* --- static_dir_new and static_open on a real tree ---------------------- */

/*
 * The tree, in a fresh temporary directory T:
 *   T/secret.txt                     outside the root
 *   T/rootx/x.txt                    outside, in a sibling whose name the
 *                                    root's is a prefix of
 *   T/link -> root                   the root reached through a symlink
 *   T/root/a.txt, sub/index.html, empty/, fifo
 *   T/root/in -> a.txt, subin -> sub, abs -> T/root/a.txt (absolute, inside)
 *   T/root/out -> ../secret.txt, absout -> T/secret.txt, up -> ..,
 *          sib -> ../rootx/x.txt
 *   T/root/esc/index.html -> ../../secret.txt
 */
static char tmp[64];

static void put(const char *rel, const char *text)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", tmp, rel);
    FILE *f = fopen(p, "w");
    cr_assert(f, "%s: %s", p, strerror(errno));
    fputs(text, f);
    fclose(f);
}

static void at(char *buf, size_t n, const char *rel)
{
    snprintf(buf, n, "%s/%s", tmp, rel);
}

static void link_to(const char *target, const char *rel)
{
    char p[PATH_MAX];
    at(p, sizeof(p), rel);
    cr_assert_eq(symlink(target, p), 0, "%s: %s", p, strerror(errno));
}

static void tree_setup(void)
{
    char p[PATH_MAX], q[PATH_MAX];
    strcpy(tmp, "/tmp/cohort-static-XXXXXX");
    cr_assert(mkdtemp(tmp));
    const char *dirs[] = {"root", "root/sub", "root/empty", "root/esc", "rootx"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        at(p, sizeof(p), dirs[i]);
        cr_assert_eq(mkdir(p, 0755), 0);
    }
    put("secret.txt", "secret\n");
    put("rootx/x.txt", "sibling\n");
    put("root/a.txt", "hello\n");
    put("root/sub/index.html", "<p>sub</p>\n");
    at(p, sizeof(p), "root/fifo");
    cr_assert_eq(mkfifo(p, 0644), 0);
    link_to("root", "link");
    link_to("a.txt", "root/in");
    link_to("sub", "root/subin");
    at(q, sizeof(q), "root/a.txt");
    link_to(q, "root/abs");
    link_to("../secret.txt", "root/out");
    at(q, sizeof(q), "secret.txt");
    link_to(q, "root/absout");
    link_to("..", "root/up");
    link_to("../rootx/x.txt", "root/sib");
    link_to("../../secret.txt", "root/esc/index.html");
}

static void tree_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
}

TestSuite(open, .init = tree_setup, .fini = tree_teardown);

static struct static_dir *root_dir(void)
{
    char p[PATH_MAX];
    at(p, sizeof(p), "link");
    struct static_dir *d = static_dir_new("/static/", p);
    cr_assert(d, "static_dir_new(%s): %s", p, strerror(errno));
    return d;
}

/* Opens `path` (cleaned first) and returns the file's text, or NULL with
 * the negative errno in *err. `*name` receives what was opened. */
static char *open_text(struct static_dir *d, const char *path, int *err, char *name, size_t cap)
{
    int n = static_clean_path(path, strlen(path), name, cap);
    cr_assert_geq(n, 0, "%s", path);
    struct stat st;
    int fd = static_open(d, name, cap, &st);
    *err = fd < 0 ? fd : 0;
    if (fd < 0)
        return NULL;
    static char buf[256];
    ssize_t r = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    cr_assert_geq(r, 0);
    cr_expect_eq((off_t)r, st.st_size, "%s: stat size", path);
    buf[r] = '\0';
    return buf;
}

static void check_tree(int use_openat2)
{
    static_use_openat2(use_openat2);
    struct static_dir *d = root_dir();
    static const char *const served[][3] = {
        {"a.txt", "hello\n", "a.txt"},
        {"in", "hello\n", "in"},
        {"abs", "hello\n", "abs"},
        {"sub", "<p>sub</p>\n", "sub/index.html"},
        {"sub/", "<p>sub</p>\n", "sub/index.html"},
        {"subin/index.html", "<p>sub</p>\n", "subin/index.html"},
        {"subin", "<p>sub</p>\n", "subin/index.html"},
    };
    char name[PATH_MAX];
    int err;
    for (size_t i = 0; i < sizeof(served) / sizeof(served[0]); i++) {
        const char *path = served[i][0];
        char *text = open_text(d, path, &err, name, sizeof(name));
        cr_expect(text, "openat2=%d %s: error %d", use_openat2, path, err);
        if (text) {
            cr_expect_str_eq(text, served[i][1], "%s", path);
            cr_expect_str_eq(name, served[i][2], "%s", path);
        }
    }
    /* "" is the root, which has no index.html */
    static const char *const refused[] = {"out",   "absout", "up/secret.txt", "up",     "esc",
                                          "esc/",  "empty",  "fifo",          "missing", "a.txt/",
                                          "a.txt/x", "sub/missing", "sib",    ""};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char *text = open_text(d, refused[i], &err, name, sizeof(name));
        cr_expect_null(text, "openat2=%d %s: served \"%s\"", use_openat2, refused[i], text ? text : "");
        cr_expect_lt(err, 0, "%s", refused[i]);
    }
    static_dir_free(d);
}

Test(open, symlinks_inside_served_outside_refused_openat2)
{
    check_tree(1);
}

Test(open, symlinks_inside_served_outside_refused_fallback)
{
    check_tree(0);
}

Test(open, dir_new_needs_a_directory)
{
    char p[PATH_MAX];
    at(p, sizeof(p), "missing");
    errno = 0;
    cr_expect_null(static_dir_new("/s/", p));
    cr_expect_eq(errno, ENOENT);
    at(p, sizeof(p), "secret.txt");
    errno = 0;
    cr_expect_null(static_dir_new("/s/", p));
    cr_expect_eq(errno, ENOTDIR);
    static_dir_free(NULL);
}

Test(open, index_name_too_long_is_refused)
{
    struct static_dir *d = root_dir();
    char name[12] = "sub";
    struct stat st;
    cr_expect_eq(static_open(d, name, sizeof(name), &st), -ENOENT, "no room for sub/index.html");
    static_dir_free(d);
}
