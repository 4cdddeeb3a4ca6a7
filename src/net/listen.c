/*
 * Listeners: parsing their addresses and binding their sockets (see
 * listen.h).
 */
#include "net/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const char *parse_unix(const char *path, struct listen_addr *a)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)&a->ss;
    size_t n = strlen(path);
    if (path[0] != '/')
        return "is not unix:/absolute/path";
    if (n >= sizeof(sun->sun_path))
        return "has a Unix socket path longer than 107 bytes";
    a->family = AF_UNIX;
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, n + 1);
    a->sslen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    snprintf(a->name, sizeof(a->name), "unix:%s", path);
    return NULL;
}

static int parse_port(const char *s)
{
    long v = 0;
    if (!*s || strlen(s) > 5)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v >= 1 && v <= 65535 ? (int)v : -1;
}

const char *listen_parse(const char *text, struct listen_addr *a)
{
    char host[INET6_ADDRSTRLEN + 2];
    memset(a, 0, sizeof(*a));
    if (strncmp(text, "unix:", 5) == 0)
        return parse_unix(text + 5, a);
    const char *colon = strrchr(text, ':');
    size_t hlen = colon ? (size_t)(colon - text) : 0;
    int v6 = text[0] == '[';
    if (!colon || hlen == 0 || hlen >= sizeof(host))
        return "is not host:port, [ipv6]:port or unix:/path";
    if (v6 ? text[hlen - 1] != ']' || hlen < 3 : memchr(text, ':', hlen) != NULL)
        return "is not host:port (an IPv6 address is written in brackets: \"[::1]:8080\")";
    if ((a->port = parse_port(colon + 1)) < 0)
        return "has a port that is not 1..65535";
    memcpy(host, text + v6, hlen - 2 * (size_t)v6);
    host[hlen - 2 * (size_t)v6] = '\0';
    if (!v6 && strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    struct sockaddr_in *in4 = (struct sockaddr_in *)&a->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
    if (v6 ? inet_pton(AF_INET6, host, &in6->sin6_addr) != 1 : inet_pton(AF_INET, host, &in4->sin_addr) != 1)
        return v6 ? "has an IPv6 address that is not one" : "has a host that is not an IPv4 address or localhost";
    a->family = v6 ? AF_INET6 : AF_INET;
    if (v6) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)a->port);
        a->sslen = sizeof(*in6);
    } else {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)a->port);
        a->sslen = sizeof(*in4);
    }
    snprintf(a->name, sizeof(a->name), "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", a->port);
    return NULL;
}

const char *listen_parse_mode(const char *text, unsigned *mode)
{
    unsigned v = 0;
    size_t n = strlen(text);
    if (n < 3 || n > 4)
        return "is not an octal mode like \"0660\"";
    for (size_t i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '7')
            return "is not an octal mode like \"0660\"";
        v = v * 8 + (unsigned)(text[i] - '0');
    }
    if (v > 0777)
        return "is not a mode of 0000..0777 (no setuid, setgid or sticky bits)";
    *mode = v;
    return NULL;
}

int listen_list(const struct cfg *c, struct listen_addr *out)
{
    char one[INET6_ADDRSTRLEN + 10];
    if (c->nlisteners == 0) {
        const char *h = c->host ? c->host : "127.0.0.1";
        snprintf(one, sizeof(one), strchr(h, ':') ? "[%s]:%d" : "%s:%d", h, c->port);
        return listen_parse(one, &out[0]) ? -EINVAL : 1;
    }
    if (c->nlisteners > CFG_MAX_LISTENERS)
        return -EINVAL;
    for (size_t i = 0; i < c->nlisteners; i++) {
        const struct cfg_listener *l = &c->listeners[i];
        if (!l->address || listen_parse(l->address, &out[i]))
            return -EINVAL;
        out[i].tls = l->tls;
        if (listen_parse_mode(l->mode ? l->mode : LISTEN_MODE_DEFAULT, &out[i].mode))
            return -EINVAL;
    }
    return (int)c->nlisteners;
}

/* A Unix socket file already there: gone if no process accepts on it. */
static int clear_stale(const struct listen_addr *a, char *err, size_t errlen)
{
    const char *path = ((const struct sockaddr_un *)&a->ss)->sun_path;
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "cannot listen on %s: the file exists and is not a socket", a->name);
        return -EEXIST;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int r = connect(fd, (const struct sockaddr *)&a->ss, a->sslen);
    int e = errno;
    close(fd);
    if (r == 0) {
        snprintf(err, errlen, "cannot listen on %s: a live process accepts on it (another server?)", a->name);
        return -EADDRINUSE;
    }
    if (e != ECONNREFUSED)
        return -e;
    return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

static int bind_unix(const struct listen_addr *a, int fd)
{
    /* made unreachable by others first, then given its mode */
    mode_t old = umask(0177);
    int r = bind(fd, (const struct sockaddr *)&a->ss, a->sslen);
    umask(old);
    if (r < 0)
        return -errno;
    if (chmod(((const struct sockaddr_un *)&a->ss)->sun_path, a->mode) < 0) {
        r = -errno;
        listen_unlink(a);
        return r;
    }
    return 0;
}

static int bind_tcp(const struct listen_addr *a, int fd, int reuseport)
{
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        (a->family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (const struct sockaddr *)&a->ss, a->sslen) < 0)
        return -errno;
    return 0;
}

int listen_bind(const struct listen_addr *a, int backlog, int reuseport, char *err, size_t errlen)
{
    err[0] = '\0';
    int r = a->family == AF_UNIX ? clear_stale(a, err, errlen) : 0;
    if (r < 0) {
        if (!err[0])
            snprintf(err, errlen, "cannot listen on %s: %s", a->name, strerror(-r));
        return r;
    }
    int fd = socket(a->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        r = -errno;
    else
        r = a->family == AF_UNIX ? bind_unix(a, fd) : bind_tcp(a, fd, reuseport);
    if (r == 0 && listen(fd, backlog) < 0)
        r = -errno;
    if (r < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", a->name, strerror(-r));
        if (fd >= 0)
            close(fd);
        return r;
    }
    return fd;
}

int listen_fd_is(int fd, const struct listen_addr *a)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 || ss.ss_family != a->family)
        return 0;
    if (a->family == AF_UNIX)
        return strncmp(((struct sockaddr_un *)&ss)->sun_path, ((const struct sockaddr_un *)&a->ss)->sun_path,
                       sizeof(((struct sockaddr_un *)&ss)->sun_path)) == 0;
    if (a->family == AF_INET6) {
        const struct sockaddr_in6 *x = (struct sockaddr_in6 *)&ss, *y = (const struct sockaddr_in6 *)&a->ss;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    const struct sockaddr_in *x = (struct sockaddr_in *)&ss, *y = (const struct sockaddr_in *)&a->ss;
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
}

void listen_unlink(const struct listen_addr *a)
{
    if (a->family == AF_UNIX)
        unlink(((const struct sockaddr_un *)&a->ss)->sun_path);
}
