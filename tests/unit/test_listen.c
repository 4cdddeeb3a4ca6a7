/*
 * Listeners (net/listen.c and the "listen" keys): address parsing, modes,
 * the effective list, the config's checks with their messages, the round
 * trip through cfg_to_json / cfg_from_json that workers rely on, and the
 * stale Unix socket rule of listen_bind.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/config.h"
#include "modules.h"
#include "net/listen.h"

__attribute__((constructor)) static void register_modules(void)
{
    modules_register();
}

static char dir[64], file[96], err[512];

static void setup(void)
{
    strcpy(dir, "/tmp/cohort-listen-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/test.json", dir);
    unsetenv("COHORT_ENV");
    unsetenv("PORT");
    unsetenv("HOST");
    unsetenv("WORKERS");
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(listen, .init = setup, .fini = teardown);

static void parses(const char *text, int family, int port, const char *name)
{
    struct listen_addr a;
    const char *why = listen_parse(text, &a);
    cr_assert_null(why, "%s: %s", text, why);
    cr_assert_eq(a.family, family, "%s", text);
    cr_assert_eq(a.port, port, "%s", text);
    cr_assert_str_eq(a.name, name);
}

static void refused(const char *text, const char *why)
{
    struct listen_addr a;
    const char *got = listen_parse(text, &a);
    cr_assert_not_null(got, "%s was taken", text);
    cr_assert_str_eq(got, why, "%s", text);
}

Test(listen, addresses)
{
    parses("127.0.0.1:8080", AF_INET, 8080, "127.0.0.1:8080");
    parses("0.0.0.0:1", AF_INET, 1, "0.0.0.0:1");
    parses("localhost:65535", AF_INET, 65535, "127.0.0.1:65535");
    parses("[::1]:443", AF_INET6, 443, "[::1]:443");
    parses("[::]:80", AF_INET6, 80, "[::]:80");
    parses("[2001:db8::7]:8443", AF_INET6, 8443, "[2001:db8::7]:8443");
    parses("unix:/run/app.sock", AF_UNIX, 0, "unix:/run/app.sock");

    struct listen_addr a;
    cr_assert_null(listen_parse("[::1]:443", &a));
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a.ss;
    cr_assert_eq(ntohs(in6->sin6_port), 443);
    cr_assert_eq(a.sslen, sizeof(*in6));
    cr_assert_null(listen_parse("unix:/run/app.sock", &a));
    cr_assert_str_eq(((const struct sockaddr_un *)&a.ss)->sun_path, "/run/app.sock");
}

Test(listen, bad_addresses)
{
    refused("8080", "is not host:port, [ipv6]:port or unix:/path");
    refused(":8080", "is not host:port, [ipv6]:port or unix:/path");
    refused("127.0.0.1:", "has a port that is not 1..65535");
    refused("127.0.0.1:0", "has a port that is not 1..65535");
    refused("127.0.0.1:65536", "has a port that is not 1..65535");
    refused("127.0.0.1:80x", "has a port that is not 1..65535");
    refused("::1:80", "is not host:port (an IPv6 address is written in brackets: \"[::1]:8080\")");
    refused("[::1:80", "is not host:port (an IPv6 address is written in brackets: \"[::1]:8080\")");
    refused("[]:80", "is not host:port (an IPv6 address is written in brackets: \"[::1]:8080\")");
    refused("[1.2.3.4]:80", "has an IPv6 address that is not one");
    refused("example.com:80", "has a host that is not an IPv4 address or localhost");
    refused("1.2.3:80", "has a host that is not an IPv4 address or localhost");
    refused("unix:", "is not unix:/absolute/path");
    refused("unix:rel.sock", "is not unix:/absolute/path");
    char longp[200] = "unix:/";
    memset(longp + 6, 'a', 120);
    longp[126] = '\0';
    refused(longp, "has a Unix socket path longer than 107 bytes");
}

Test(listen, modes)
{
    unsigned m = 0;
    cr_assert_null(listen_parse_mode("0660", &m));
    cr_assert_eq(m, 0660);
    cr_assert_null(listen_parse_mode("777", &m));
    cr_assert_eq(m, 0777);
    cr_assert_null(listen_parse_mode("0000", &m));
    cr_assert_eq(m, 0);
    cr_assert_str_eq(listen_parse_mode("0680", &m), "is not an octal mode like \"0660\"");
    cr_assert_str_eq(listen_parse_mode("66", &m), "is not an octal mode like \"0660\"");
    cr_assert_str_eq(listen_parse_mode("", &m), "is not an octal mode like \"0660\"");
    cr_assert_str_eq(listen_parse_mode("4755", &m), "is not a mode of 0000..0777 (no setuid, setgid or sticky bits)");
}

static int load_text(const char *text, struct cfg *c)
{
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    struct cfg_sources s = {.file = file};
    return cfg_load(&s, c, err, sizeof err);
}

static void expect_error(const char *text, const char *rest)
{
    struct cfg c;
    char want[600];
    cr_assert_eq(load_text(text, &c), -EINVAL, "%s", text);
    snprintf(want, sizeof want, "%s%s", file, rest);
    cr_assert_str_eq(err, want, "\n got: %s\nwant: %s", err, want);
}

Test(listen, config_list_and_round_trip)
{
    struct cfg c, back;
    char want[160];
    cr_assert_eq(load_text("{\"server\": {\"port\": 9000},\n \"listen\": [{\"address\": \"127.0.0.1:9001\"},\n"
                           "  {\"address\": \"[::1]:9002\", \"tls\": true},\n"
                           "  {\"address\": \"unix:run/a.sock\", \"mode\": \"0600\"}]}",
                           &c),
                 0, "%s", err);
    cr_assert_eq(c.nlisteners, 3);
    cr_assert_str_eq(c.listeners[0].mode, "0660", "the default mode");
    cr_assert_eq(c.listeners[1].tls, 1);
    snprintf(want, sizeof want, "unix:%s/run/a.sock", dir);
    char *real = realpath(dir, NULL);
    snprintf(want, sizeof want, "unix:%s/run/a.sock", real);
    free(real);
    cr_assert_str_eq(c.listeners[2].address, want, "relative to the config file");

    struct listen_addr a[CFG_MAX_LISTENERS];
    cr_assert_eq(listen_list(&c, a), 3, "listen wins over server.port");
    cr_assert_eq(a[0].port, 9001);
    cr_assert_eq(a[1].tls, 1);
    cr_assert_eq(a[2].family, AF_UNIX);
    cr_assert_eq(a[2].mode, 0600);

    char *text = cfg_to_json(&c);
    cr_assert_not_null(text);
    cr_assert_eq(cfg_from_json(text, &back, err, sizeof err), 0, "%s", err);
    free(text);
    cr_assert(cfg_equal(&c, &back));
    back.listeners[1].tls = 0;
    cr_assert_not(cfg_equal(&c, &back), "a listener's change is a change");
    cfg_free(&back);
    cfg_free(&c);
}

Test(listen, shorthand_without_listen)
{
    struct cfg c;
    struct listen_addr a[CFG_MAX_LISTENERS];
    cr_assert_eq(load_text("{\"server\": {\"host\": \"::1\", \"port\": 9005}}", &c), 0, "%s", err);
    cr_assert_eq(c.nlisteners, 0);
    cr_assert_eq(listen_list(&c, a), 1);
    cr_assert_str_eq(a[0].name, "[::1]:9005");
    cr_assert_eq(a[0].tls, 0);
    cfg_free(&c);
}

Test(listen, config_errors)
{
    expect_error("{\"listen\": [{\"address\": \"127.0.0.1:80\"},\n  {\"address\": \"1.2.3:99\"}]}",
                 ":2:15: listen[1].address: \"1.2.3:99\" has a host that is not an IPv4 address or localhost");
    expect_error("{\"listen\": [{\"adress\": \"127.0.0.1:80\"}]}",
                 ":1:14: listen[0].adress: unknown key (did you mean address?)");
    expect_error("{\"listen\": [{\"tls\": true}]}", ":1:13: listen[0]: address is required");
    expect_error("{\"listen\": [{\"address\": \"unix:/x\", \"mode\": \"999\"}]}",
                 ":1:44: listen[0].mode: \"999\" is not an octal mode like \"0660\"");
    expect_error("{\"listen\": [{\"address\": \"127.0.0.1:80\", \"tls\": \"yes\"}]}",
                 ":1:48: listen[0].tls: \"yes\" is not true or false");
    expect_error("{\"listen\": {\"address\": \"unix:/x\"}}",
                 ":1:12: listen: {\"address\":\"unix:/x\"} is not an array of at most 16 listeners");
    expect_error("{\"listen\": [{\"address\": \"127.0.0.1:80\"}, {\"address\": \"127.0.0.1:80\"}]}",
                 ":1:42: listen[1]: 127.0.0.1:80 is listed twice (as listen[0] too)");
}

/* A socket file nobody accepts on is replaced; a live one is refused. */
Test(listen, stale_and_live_unix_sockets)
{
    char text[160];
    struct listen_addr a;
    snprintf(text, sizeof text, "unix:%s/s.sock", dir);
    cr_assert_null(listen_parse(text, &a));
    a.mode = 0640;
    int fd = listen_bind(&a, 16, 0, err, sizeof err);
    cr_assert_geq(fd, 0, "%s", err);
    struct stat st;
    cr_assert_eq(stat(text + 5, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0640);
    int again = listen_bind(&a, 16, 0, err, sizeof err);
    cr_assert_eq(again, -EADDRINUSE);
    snprintf(text, sizeof text, "cannot listen on unix:%s/s.sock: a live process accepts on it (another server?)", dir);
    cr_assert_str_eq(err, text);
    cr_assert(listen_fd_is(fd, &a));
    close(fd); /* its file stays: stale now */
    fd = listen_bind(&a, 16, 0, err, sizeof err);
    cr_assert_geq(fd, 0, "a stale file is replaced: %s", err);
    close(fd);
    listen_unlink(&a);
    cr_assert_neq(stat(((struct sockaddr_un *)&a.ss)->sun_path, &st), 0, "removed");
    FILE *f = fopen(((struct sockaddr_un *)&a.ss)->sun_path, "w");
    cr_assert_not_null(f);
    fclose(f);
    cr_assert_eq(listen_bind(&a, 16, 0, err, sizeof err), -EEXIST, "a file that is not a socket stays");
}

/* A reload keeps the running listeners and says so. */
Test(listen, reload_keeps_listeners)
{
    struct cfg cur, next;
    char msg[600];
    cr_assert_eq(load_text("{\"listen\": [{\"address\": \"127.0.0.1:9101\"}, {\"address\": \"unix:/tmp/x.sock\"}]}",
                           &cur),
                 0, "%s", err);
    cr_assert_eq(load_text("{\"listen\": [{\"address\": \"127.0.0.1:9102\"}]}", &next), 0, "%s", err);
    cr_assert_gt(cfg_keep_fixed(&cur, &next, msg, sizeof msg), 0);
    cr_assert(strstr(msg, "listen: left as it was"), "%s", msg);
    cr_assert_eq(next.nlisteners, 2);
    cr_assert_str_eq(next.listeners[0].address, "127.0.0.1:9101");
    cr_assert_str_eq(next.listeners[1].address, "unix:/tmp/x.sock");
    cr_assert_str_eq(next.listeners[1].mode, "0660");
    cr_assert(cfg_equal(&cur, &next));
    cfg_free(&cur);
    cfg_free(&next);
}
