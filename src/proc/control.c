/*
 * Control channel, client side, and the path convention both sides share.
 * The server side lives in the master, on its loop.
 */
#include "proc/control.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "net/listen.h"

/* The default files' stem, after the first listener: "cohort-PORT" for
 * TCP; for a Unix socket "cohort-NAME-HASH", NAME the file's name without
 * ".sock" (at most 40 bytes) and HASH a hash of its whole path. */
static void default_stem(const struct cfg *cfg, char *buf, size_t len)
{
    struct listen_addr a[CFG_MAX_LISTENERS];
    if (listen_list(cfg, a) < 1 || a[0].family != AF_UNIX) {
        snprintf(buf, len, "cohort-%d", listen_list(cfg, a) < 1 ? cfg->port : a[0].port);
        return;
    }
    const char *path = a[0].name + 5, *base = strrchr(path, '/') + 1;
    size_t n = strlen(base);
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = path; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    if (n > 5 && strcmp(base + n - 5, ".sock") == 0)
        n -= 5;
    snprintf(buf, len, "cohort-%.*s-%08x", (int)(n > 40 ? 40 : n), base, h);
}

void control_paths(const struct cfg *cfg, char *sock, size_t socklen, char *pid, size_t pidlen)
{
    char stem[64];
    const char *dir = getenv("XDG_RUNTIME_DIR");
    if (!dir || !*dir)
        dir = "/tmp";
    default_stem(cfg, stem, sizeof(stem));
    if (cfg->control_socket)
        snprintf(sock, socklen, "%s", cfg->control_socket);
    else
        snprintf(sock, socklen, "%s/%s.sock", dir, stem);
    if (cfg->pid_file)
        snprintf(pid, pidlen, "%s", cfg->pid_file);
    else
        snprintf(pid, pidlen, "%s/%s.pid", dir, stem);
}

int control_listen(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    mode_t old = umask(0077);
    int r = bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 16) < 0 ? -errno : 0;
    umask(old);
    if (r < 0 || chmod(path, 0600) < 0) {
        r = r < 0 ? r : -errno;
        close(fd);
        return r;
    }
    return fd;
}

static int connect_unix(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* Reads until EOF or timeout into a growing buffer. */
static int read_all(int fd, char **out, int timeout_ms)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (buf) {
        int r = poll(&p, 1, timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb)
                break;
            buf = nb;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
                len--;
            buf[len] = '\0';
            *out = buf;
            return n == 0 ? 0 : -errno;
        }
        len += (size_t)n;
    }
    free(buf);
    return -ETIMEDOUT;
}

int control_request(const char *path, const char *request, char **reply, int timeout_ms)
{
    int fd = connect_unix(path);
    if (fd < 0)
        return fd;
    size_t n = strlen(request);
    int r = 0;
    if (write(fd, request, n) != (ssize_t)n || write(fd, "\n", 1) != 1)
        r = -errno;
    if (r == 0)
        r = read_all(fd, reply, timeout_ms);
    close(fd);
    return r;
}

/* "3d 4h", "5m 3s", "12s" */
static void fmt_uptime(double s, char *buf, size_t len)
{
    long t = (long)s;
    if (t >= 86400)
        snprintf(buf, len, "%ldd %ldh", t / 86400, t % 86400 / 3600);
    else if (t >= 3600)
        snprintf(buf, len, "%ldh %ldm", t / 3600, t % 3600 / 60);
    else if (t >= 60)
        snprintf(buf, len, "%ldm %lds", t / 60, t % 60);
    else
        snprintf(buf, len, "%lds", t);
}

static void fmt_bytes(json_int_t b, char *buf, size_t len)
{
    if (b >= 1024 * 1024)
        snprintf(buf, len, "%.1f MiB", (double)b / (1024.0 * 1024.0));
    else
        snprintf(buf, len, "%lld KiB", (long long)(b / 1024));
}

static void print_worker(json_t *w)
{
    char up[32], rss[32], state[64];
    const char *st = json_string_value(json_object_get(w, "state"));
    fmt_uptime(json_number_value(json_object_get(w, "uptime_s")), up, sizeof(up));
    fmt_bytes(json_integer_value(json_object_get(w, "rss")), rss, sizeof(rss));
    if (st && strcmp(st, "crash_loop") == 0)
        snprintf(state, sizeof(state), "crash loop, next try in %.0f s",
                 json_number_value(json_object_get(w, "next_try_s")));
    else
        snprintf(state, sizeof(state), "%s", st ? st : "?");
    json_int_t pid = json_integer_value(json_object_get(w, "pid"));
    const char *last = json_string_value(json_object_get(w, "last_exit"));
    char pidtxt[16];
    snprintf(pidtxt, sizeof(pidtxt), pid ? "%lld" : "-", (long long)pid);
    printf("%-3lld %-8s %-4lld %-32s %-8s %-8lld %-28s %-10s %-6lld %lld\n",
           (long long)json_integer_value(json_object_get(w, "id")), pidtxt,
           (long long)json_integer_value(json_object_get(w, "generation")), state, pid ? up : "-",
           (long long)json_integer_value(json_object_get(w, "restarts")), last && *last ? last : "-",
           pid ? rss : "-", (long long)json_integer_value(json_object_get(w, "connections")),
           (long long)json_integer_value(json_object_get(w, "requests")));
}

/* The health checker's line, when some upstream group has checks. */
static void print_checker(json_t *c)
{
    char up[32], state[64];
    if (!json_is_object(c))
        return;
    const char *st = json_string_value(json_object_get(c, "state"));
    const char *last = json_string_value(json_object_get(c, "last_exit"));
    json_int_t pid = json_integer_value(json_object_get(c, "pid"));
    fmt_uptime(json_number_value(json_object_get(c, "uptime_s")), up, sizeof(up));
    if (st && strcmp(st, "crash_loop") == 0)
        snprintf(state, sizeof(state), "crash loop, next try in %.0f s",
                 json_number_value(json_object_get(c, "next_try_s")));
    else
        snprintf(state, sizeof(state), "%s", st ? st : "?");
    printf("health checker  pid %lld  user %s  %s  up %s  restarts %lld  last exit %s\n", (long long)pid,
           json_string_value(json_object_get(c, "user")), state, pid ? up : "-",
           (long long)json_integer_value(json_object_get(c, "restarts")), last && *last ? last : "-");
}

/* Every exit on a row of its own: the process that exited, its role. */
static void print_exits(json_t *exits)
{
    size_t i;
    json_t *e;
    if (!json_array_size(exits))
        return;
    printf("\nrecent exits (newest first)\n%-3s %-8s %-4s %-12s %-8s %s\n", "id", "pid", "gen", "role", "ago",
           "exit");
    json_array_foreach(exits, i, e) {
        char ago[32];
        const char *err = json_string_value(json_object_get(e, "error"));
        fmt_uptime(json_number_value(json_object_get(e, "ago_s")), ago, sizeof(ago));
        printf("%-3lld %-8lld %-4lld %-12s %-8s %s%s%s\n", (long long)json_integer_value(json_object_get(e, "id")),
               (long long)json_integer_value(json_object_get(e, "pid")),
               (long long)json_integer_value(json_object_get(e, "generation")),
               json_string_value(json_object_get(e, "role")), ago, json_string_value(json_object_get(e, "exit")),
               err && *err ? ": " : "", err ? err : "");
    }
}

static void print_status(json_t *root)
{
    json_t *m = json_object_get(root, "master");
    char up[32];
    fmt_uptime(json_number_value(json_object_get(m, "uptime_s")), up, sizeof(up));
    char where[512] = "";
    size_t n = 0, i;
    json_t *l;
    json_array_foreach(json_object_get(m, "listen"), i, l)
        if (n < sizeof(where))
            n += (size_t)snprintf(where + n, sizeof(where) - n, "%s%s%s", i ? ", " : "",
                                  json_string_value(json_object_get(l, "address")),
                                  json_is_true(json_object_get(l, "tls")) ? " (tls)" : "");
    if (!n)
        snprintf(where, sizeof(where), "%s:%lld", json_string_value(json_object_get(m, "host")),
                 (long long)json_integer_value(json_object_get(m, "port")));
    printf("cohort %s  master pid %lld  up %s  %s  schedule %s  env %s%s\n",
           json_string_value(json_object_get(m, "version")),
           (long long)json_integer_value(json_object_get(m, "pid")), up, where,
           json_string_value(json_object_get(m, "schedule")), json_string_value(json_object_get(m, "env")),
           json_is_true(json_object_get(m, "reloading")) ? "  (reloading)" : "");
    print_checker(json_object_get(root, "checker"));
    printf("%-3s %-8s %-4s %-32s %-8s %-8s %-28s %-10s %-6s %s\n", "id", "pid", "gen", "state", "uptime",
           "restarts", "last exit", "rss", "conns", "requests");
    json_t *w;
    json_array_foreach(json_object_get(root, "workers"), i, w)
        print_worker(w);
    print_exits(json_object_get(root, "exits"));
}

/* Waits for a pid to disappear; 1 when it did within timeout_ms. */
static int wait_gone(pid_t pid, long timeout_ms)
{
    for (long waited = 0; waited < timeout_ms; waited += 50) {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return 1;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static int report(const char *cmd, json_t *root, int json, const struct cfg *cfg)
{
    int ok = json_is_true(json_object_get(root, "ok"));
    const char *msg = json_string_value(json_object_get(root, "message"));
    if (json) {
        char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", s ? s : "{}");
        free(s);
    } else if (strcmp(cmd, "status") == 0 && ok) {
        print_status(root);
    } else if (msg) {
        fprintf(ok ? stdout : stderr, "%s\n", msg);
    }
    if (ok && strcmp(cmd, "stop") == 0) {
        pid_t pid = (pid_t)json_integer_value(json_object_get(root, "pid"));
        if (!wait_gone(pid, cfg->shutdown_timeout_ms + 5000)) {
            fprintf(stderr, "cohort: master %d did not exit in time\n", (int)pid);
            return CTL_EXIT_FAILED;
        }
        if (!json)
            printf("stopped\n");
    }
    return ok ? CTL_EXIT_OK : CTL_EXIT_FAILED;
}

int control_command(const char *cmd, const struct cfg *cfg, int json)
{
    char sock[256], pidf[256], req[64], *reply = NULL;
    control_paths(cfg, sock, sizeof(sock), pidf, sizeof(pidf));
    snprintf(req, sizeof(req), "{\"cmd\": \"%s\"}", cmd);
    /* a reload may take a while: each worker gets ready_timeout, twice
     * when a failed reload replaces them back */
    int timeout = (int)(cfg->ready_timeout_ms * (2 * cfg->workers + 2) + 30000);
    int r = control_request(sock, req, &reply, timeout);
    if (r == -ECONNREFUSED || r == -ENOENT) {
        fprintf(stderr, "cohort: no master is running on %s\n", sock);
        return CTL_EXIT_NOT_RUNNING;
    }
    if (r < 0) {
        fprintf(stderr, "cohort: %s: %s\n", sock, strerror(-r));
        free(reply);
        return CTL_EXIT_FAILED;
    }
    json_error_t err;
    json_t *root = json_loads(reply, 0, &err);
    free(reply);
    if (!json_is_object(root)) {
        fprintf(stderr, "cohort: the master's answer is not JSON: %s\n", err.text);
        json_decref(root);
        return CTL_EXIT_FAILED;
    }
    r = report(cmd, root, json, cfg);
    json_decref(root);
    return r;
}
