/*
 * Command line. Exit codes: 0 success, 1 runtime failure, 2 bad usage,
 * 78 bad configuration.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "modules.h"
#include "proc/checker.h"
#include "proc/control.h"
#include "proc/master.h"
#include "proc/upgrade.h"
#include "proc/worker.h"

#ifndef COHORT_VERSION
#define COHORT_VERSION "0.0.0"
#endif

#define EXIT_USAGE 2

static const char usage_main[] =
    "usage: cohort <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve          run the application server (a master and its workers) in the foreground\n"
    "  balance        run the load balancer: proxy every path to --upstream servers\n"
    "  check-config   validate the configuration and print the effective config\n"
    "  status         show the running master's workers (like pm2 ls); --json for scripts\n"
    "  reload         re-read the config and replace workers one at a time, without\n"
    "                 dropping a request; waits and reports the outcome\n"
    "  upgrade        replace the master too: start a new one from the binary on disk,\n"
    "                 hand it the sockets, let the old workers drain (also: SIGUSR2)\n"
    "  stop           stop the running master gracefully and wait until it is gone\n"
    "\n"
    "options:\n"
    "  -h, --help     show this help (also: cohort <command> --help)\n"
    "  -V, --version  print the version\n";

static const char usage_serve[] =
    "usage: cohort %s [options]\n"
    "\n"
    "%s\n"
    "\n"
    "options:\n"
    "  -c, --config FILE    read only FILE, instead of config/default.json merged\n"
    "                       with config/<env>.json\n"
    "  -e, --env NAME       environment choosing config/<NAME>.json\n"
    "                       (default: $COHORT_ENV, else development)\n"
    "  -H, --host ADDR      listen address (server.host; env HOST)\n"
    "  -p, --port N         listen port (server.port; env PORT)\n"
    "  -w, --workers N      worker processes, 0 = available CPUs (env WORKERS)\n"
    "  -s, --schedule MODE  how connections reach workers: reuseport, shared,\n"
    "                       round_robin or least_loaded\n"
    "  --keys               print the table of every config key and exit\n"
    "  -h, --help           show this help\n"
    "\n"
    "Flags win over environment variables, which win over config files.\n"
    "Signals: TERM, INT or QUIT stop gracefully; a second one stops at once;\n"
    "HUP reloads (as `cohort reload`); USR2 upgrades the master (as `cohort upgrade`).\n";

static int bad_usage(const char *fmt, const char *arg, const char *text, const char *cmd)
{
    fprintf(stderr, "cohort: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n");
    fprintf(stderr, text, cmd, "");
    return EXIT_USAGE;
}

struct opts {
    struct cfg_sources src;
    const char *overrides[8];
    char bufs[4][300];
    int n;
};

static void add_override(struct opts *o, const char *key, const char *value)
{
    snprintf(o->bufs[o->n], sizeof(o->bufs[o->n]), "%s=%s", key, value);
    o->overrides[o->n] = o->bufs[o->n];
    o->n++;
}

/* Parses the options of serve and check-config; returns -1 to go on, or an
 * exit code. */
static int parse_opts(int argc, char **argv, const char *cmd, const char *what, struct opts *o)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'}, {"env", required_argument, NULL, 'e'},
        {"host", required_argument, NULL, 'H'},   {"port", required_argument, NULL, 'p'},
        {"workers", required_argument, NULL, 'w'}, {"schedule", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},         {"keys", no_argument, NULL, 'K'},
        {NULL, 0, NULL, 0}};
    static const char *const keys[] = {['H'] = "server.host", ['p'] = "server.port", ['w'] = "workers",
                                       ['s'] = "schedule"};
    memset(o, 0, sizeof(*o));
    o->src.use_environ = 1;
    o->src.check_fs = strcmp(cmd, "serve") == 0 || strcmp(cmd, "check-config") == 0;
    o->src.overrides = o->overrides;
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":c:e:H:p:w:s:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': o->src.file = optarg; break;
        case 'e': o->src.env = optarg; break;
        case 'H': case 'p': case 'w': case 's': add_override(o, keys[ch], optarg); break;
        case 'h': printf(usage_serve, cmd, what); return 0;
        case 'K': cfg_describe(stdout); return 0;
        case ':': return bad_usage("option %s needs a value", argv[optind - 1], usage_serve, cmd);
        default: return bad_usage("unknown option %s", argv[optind - 1], usage_serve, cmd);
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument %s", argv[optind], usage_serve, cmd);
    return -1;
}

/* Options, then the config they point at: -1 to go on with *cfg loaded, or
 * an exit code (help printed, bad usage, bad config). */
static int load_config(int argc, char **argv, const char *cmd, const char *what, struct opts *o, struct cfg *cfg)
{
    char err[1024];
    int r = parse_opts(argc, argv, cmd, what, o);
    if (r >= 0)
        return r;
    if (cfg_load(&o->src, cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "cohort: %s\n", err);
        upgrade_fail_early(err); /* a new master tells the old one why */
        return CFG_EXIT_CODE;
    }
    return -1;
}

/* The binary workers are started from: the path this one was run from,
 * so that a rebuilt binary at the same path is what new workers run. */
static int self_path(char *buf, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0)
        return -errno;
    buf[n] = '\0';
    /* a replaced binary shows as "path (deleted)"; its path is still right */
    char *del = strstr(buf, " (deleted)");
    if (del && del[10] == '\0')
        *del = '\0';
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    struct opts o;
    struct cfg cfg;
    int r = load_config(argc, argv, "serve", "Runs the server in the foreground: a master that binds the port and keeps\none worker process per CPU (or `workers`) serving HTTP.", &o, &cfg);
    if (r >= 0)
        return r;
    char exe[PATH_MAX];
    if (self_path(exe, sizeof(exe)) < 0) {
        fprintf(stderr, "cohort: cannot find my own binary: %s\n", strerror(errno));
        cfg_free(&cfg);
        return 1;
    }
    return master_run(&cfg, &o.src, exe);
}

/* status, reload, upgrade, stop: the master is found through the control socket the
 * same config (files, environment, flags) names. */
static int cmd_control(int argc, char **argv, const char *cmd)
{
    struct opts o;
    struct cfg cfg;
    int json = 0;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
            memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof(*argv));
            argc--;
            break;
        }
    int r = load_config(argc, argv, cmd, "Talks to the running master over its control socket (control.socket).\n"
                       "status prints the workers (--json: as JSON); reload replaces them with the\n"
                       "config on disk, started from the binary on disk; upgrade replaces the master\n"
                       "too (a new pid, the same sockets and counters); stop stops gracefully.\n"
                       "Exit: 0 done, 1 failed, 3 no master running.", &o, &cfg);
    if (r >= 0)
        return r;
    r = control_command(cmd, &cfg, json);
    cfg_free(&cfg);
    return r;
}

static int cmd_check_config(int argc, char **argv)
{
    struct opts o;
    struct cfg cfg;
    int r = load_config(argc, argv, "check-config", "Validates the configuration as `serve` would load it and prints the\neffective config as JSON; exits 78 when it is invalid.", &o, &cfg);
    if (r >= 0)
        return r;
    char *json = cfg_to_json(&cfg);
    if (json)
        printf("%s\n", json);
    free(json);
    cfg_free(&cfg);
    return json ? 0 : 1;
}

/* --- cohort balance ------------------------------------------------------- */

static const char usage_balance[] =
    "usage: cohort balance --upstream HOST:PORT[,weight=N][,max_conns=N][,backup] ... [options]\n"
    "\n"
    "Runs the load balancer in the foreground: a master and its workers that\n"
    "proxy every path to the upstream servers (one group, \"balance\"); its\n"
    "/stats, /metrics and /status are on the admin listener (--admin-port).\n"
    "\n"
    "options:\n"
    "  -u, --upstream SPEC     a server: HOST:PORT, then ,weight=N ,max_conns=N ,backup\n"
    "  -a, --algorithm NAME    round_robin (default), least_conn, random, p2c, hash\n"
    "      --hash KEY          what hash hashes: client (default), header:NAME, cookie:NAME\n"
    "      --health-path PATH  active health checks: GET PATH on every server\n"
    "      --health-interval D time between checks (default 5s)\n"
    "      --retries N         further attempts on other servers (default 2)\n"
    "      --admin-port N      listener for /stats, /metrics and /status (on --host)\n"
    "  -p, --port N            listen port (default 8080; env PORT)\n"
    "  -H, --host ADDR         listen address (default 127.0.0.1; env HOST)\n"
    "  -l, --listen ADDR       listen on HOST:PORT, [IPV6]:PORT or unix:PATH instead of\n"
    "                          --host and --port; repeat it for more listeners\n"
    "  -w, --workers N         worker processes, 0 = available CPUs (env WORKERS)\n"
    "  -s, --schedule MODE     reuseport, shared, round_robin or least_loaded\n"
    "  -c, --config FILE       a config file under the flags (upstreams, timeouts, logs...)\n"
    "  -h, --help              show this help\n"
    "\n"
    "The same group in a config file: \"upstreams\" and a route with handler \"proxy\"\n"
    "(docs/proxy.md). Signals and `cohort status | reload | stop -p PORT` as for serve.\n";

/* "HOST:PORT[,weight=N][,max_conns=N][,backup]" as a server object. */
static json_t *server_spec(const char *spec, char *err, size_t errlen)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", spec);
    char *save = NULL, *tok = strtok_r(buf, ",", &save);
    json_t *o = json_object();
    if (!tok || !o) {
        snprintf(err, errlen, "--upstream %s: expected HOST:PORT[,weight=N][,max_conns=N][,backup]", spec);
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "address", json_string(tok));
    while ((tok = strtok_r(NULL, ",", &save))) {
        char *end = NULL;
        if (strcmp(tok, "backup") == 0) {
            json_object_set_new(o, "backup", json_true());
            continue;
        }
        const char *key = strncmp(tok, "weight=", 7) == 0 ? "weight" : strncmp(tok, "max_conns=", 10) == 0 ? "max_conns" : NULL;
        long v = key ? strtol(strchr(tok, '=') + 1, &end, 10) : 0;
        if (!key || !end || *end || end == strchr(tok, '=') + 1) {
            snprintf(err, errlen, "--upstream %s: \"%s\" is not weight=N, max_conns=N or backup", spec, tok);
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, key, json_integer(v));
    }
    return o;
}

struct balance_opts {
    json_t *servers, *group;
    json_t *listen; /* --listen: "listen"'s listener objects */
    const char *file;
    const char *ov[16];
    int n;
};

/* One override per key (a repeated flag: the last one wins), so the keys
 * this file sets, fewer than 15, always fit. */
static void balance_override(struct balance_opts *b, const char *key, const char *value)
{
    char *s = NULL;
    size_t klen = strlen(key);
    if (asprintf(&s, "%s=%s", key, value) < 0)
        return;
    for (int i = 0; i < b->n; i++)
        if (strncmp(b->ov[i], key, klen) == 0 && b->ov[i][klen] == '=') {
            free((char *)b->ov[i]);
            b->ov[i] = s;
            return;
        }
    if (b->n < 15)
        b->ov[b->n++] = s; /* kept for the master's life: a reload reads them again */
    else
        free(s);
}

/* --hash client | header:NAME | cookie:NAME */
static int hash_spec(json_t *group, const char *spec)
{
    const char *colon = strchr(spec, ':');
    json_t *h = json_object();
    json_object_set_new(group, "hash", h);
    if (strcmp(spec, "client") == 0) {
        json_object_set_new(h, "on", json_string("client"));
        return 0;
    }
    if (!colon || !colon[1] || (strncmp(spec, "header:", 7) != 0 && strncmp(spec, "cookie:", 7) != 0))
        return -1;
    json_object_set_new(h, "on", json_stringn(spec, (size_t)(colon - spec)));
    json_object_set_new(h, "name", json_string(colon + 1));
    return 0;
}

static json_t *health_of(json_t *group)
{
    if (!json_object_get(group, "health"))
        json_object_set_new(group, "health", json_object());
    return json_object_get(group, "health");
}

/* Flags to config overrides: -1 to go on, or an exit code. */
static int balance_parse(int argc, char **argv, struct balance_opts *b)
{
    static const struct option longopts[] = {
        {"upstream", required_argument, NULL, 'u'},   {"algorithm", required_argument, NULL, 'a'},
        {"hash", required_argument, NULL, 'K'},       {"health-path", required_argument, NULL, 'P'},
        {"health-interval", required_argument, NULL, 'I'}, {"retries", required_argument, NULL, 'R'},
        {"admin-port", required_argument, NULL, 'A'}, {"port", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},       {"workers", required_argument, NULL, 'w'},
        {"schedule", required_argument, NULL, 's'},   {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},     {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    char err[600];
    int ch, port = 0;
    b->servers = json_array();
    b->group = json_object();
    b->listen = json_array();
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":u:a:p:H:w:s:c:l:h", longopts, NULL)) != -1) {
        json_t *srv;
        switch (ch) {
        case 'u':
            if (!(srv = server_spec(optarg, err, sizeof(err))))
                return bad_usage("%s", err, usage_balance, "balance");
            json_array_append_new(b->servers, srv);
            break;
        case 'a': json_object_set_new(b->group, "algorithm", json_string(optarg)); break;
        case 'K':
            json_object_set_new(b->group, "algorithm", json_string("hash"));
            if (hash_spec(b->group, optarg) < 0)
                return bad_usage("--hash %s: expected client, header:NAME or cookie:NAME", optarg, usage_balance, "balance");
            break;
        case 'P': json_object_set_new(health_of(b->group), "path", json_string(optarg)); break;
        case 'I': json_object_set_new(health_of(b->group), "interval", json_string(optarg)); break;
        case 'R': json_object_set_new(b->group, "retries", json_integer(atoi(optarg))); break;
        case 'A': balance_override(b, "admin.port", optarg); break;
        case 'p': balance_override(b, "server.port", optarg); port = 1; break;
        case 'H': balance_override(b, "server.host", optarg); break;
        case 'w': balance_override(b, "workers", optarg); break;
        case 's': balance_override(b, "schedule", optarg); break;
        case 'c': b->file = optarg; break;
        case 'l': json_array_append_new(b->listen, json_pack("{s:s}", "address", optarg)); break;
        case 'h': fputs(usage_balance, stdout); return 0;
        case ':': return bad_usage("option %s needs a value", argv[optind - 1], usage_balance, "balance");
        default: return bad_usage("unknown option %s", argv[optind - 1], usage_balance, "balance");
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument %s", argv[optind], usage_balance, "balance");
    if (!json_array_size(b->servers) && !b->file)
        return bad_usage("%s", "at least one --upstream HOST:PORT is needed", usage_balance, "balance");
    if (!port && !b->file && !getenv("PORT"))
        balance_override(b, "server.port", "8080");
    if (json_array_size(b->listen)) {
        char *text = json_dumps(b->listen, JSON_COMPACT);
        balance_override(b, "listen", text ? text : "[]");
        free(text);
    }
    if (json_array_size(b->servers)) {
        json_object_set(b->group, "servers", b->servers);
        json_t *ups = json_pack("{s:O}", "balance", b->group);
        char *text = json_dumps(ups, JSON_COMPACT);
        json_decref(ups);
        balance_override(b, "upstreams", text ? text : "{}");
        free(text);
        balance_override(b, "routes", "[{\"path\": \"/*\", \"handler\": \"proxy\", \"upstream\": \"balance\"}]");
        balance_override(b, "app", "none");
    }
    json_decref(b->servers);
    json_decref(b->group);
    json_decref(b->listen);
    return -1;
}

static int cmd_balance(int argc, char **argv)
{
    static struct balance_opts b;
    static struct cfg_sources src;
    struct cfg cfg;
    char err[1024], exe[PATH_MAX];
    int r = balance_parse(argc, argv, &b);
    if (r >= 0)
        return r;
    b.ov[b.n] = NULL;
    src.file = b.file;
    src.no_files = !b.file; /* config/ is the application server's, not ours */
    src.use_environ = 1;
    src.check_fs = 1;
    src.overrides = b.ov;
    if (cfg_load(&src, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "cohort: %s\n", err);
        upgrade_fail_early(err);
        return CFG_EXIT_CODE;
    }
    if (!cfg.nupstreams) {
        fprintf(stderr, "cohort: %s names no upstream group: give --upstream HOST:PORT\n", b.file);
        cfg_free(&cfg);
        return CFG_EXIT_CODE;
    }
    if (self_path(exe, sizeof(exe)) < 0) {
        fprintf(stderr, "cohort: cannot find my own binary: %s\n", strerror(errno));
        cfg_free(&cfg);
        return 1;
    }
    return master_run(&cfg, &src, exe);
}

/* Hidden: the master starts each worker as `cohort __worker ID SLOT`. */
static int cmd_worker(int argc, char **argv)
{
    if (argc != 4)
        return EXIT_USAGE;
    return worker_main(atoi(argv[2]), atoi(argv[3]));
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return bad_usage("%s", "a command is needed", usage_main, "");
    upgrade_keep_argv(argc, argv); /* before getopt reorders it */
    int rc = modules_register(); /* before any config is loaded: every command loads one */
    if (rc < 0) {
        fprintf(stderr, "cohort: registering the modules: %s\n", strerror(-rc));
        return 70; /* EX_SOFTWARE */
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_main, stdout);
        return 0;
    }
    if (strcmp(cmd, "-V") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("cohort %s\n", COHORT_VERSION);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "balance") == 0)
        return cmd_balance(argc - 1, argv + 1);
    if (strcmp(cmd, "check-config") == 0)
        return cmd_check_config(argc - 1, argv + 1);
    if (strcmp(cmd, "status") == 0 || strcmp(cmd, "reload") == 0 || strcmp(cmd, "upgrade") == 0 ||
        strcmp(cmd, "stop") == 0)
        return cmd_control(argc - 1, argv + 1, cmd);
    if (strcmp(cmd, "__worker") == 0)
        return cmd_worker(argc, argv);
    if (strcmp(cmd, "__checker") == 0) /* hidden: the master's health checker (proc/checker.h) */
        return argc == 2 ? checker_main() : EXIT_USAGE;
    if (cmd[0] == '-')
        return bad_usage("unknown option %s", cmd, usage_main, "");
    return bad_usage("unknown command %s", cmd, usage_main, "");
}
