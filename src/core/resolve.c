/*
 * Resolving config host names, out of root's hands. See resolve.h.
 */
#include "core/resolve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY_ID 65534

static int numeric(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* The lookup itself, in whatever process calls it. */
static int lookup(const char *host, char *ip, size_t iplen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0 || !ai)
        return -ENOENT;
    int v6 = ai->ai_family == AF_INET6;
    const void *a = v6 ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                       : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
    const char *r = inet_ntop(ai->ai_family, a, ip, (socklen_t)iplen);
    freeaddrinfo(ai);
    return r ? 0 : -ENOENT;
}

/* In the child: no root, no supplementary groups, then the lookup; the
 * address (or nothing) goes to `fd`. Never returns. */
static void child(int fd, const char *host, uid_t uid, gid_t gid)
{
    char ip[INET6_ADDRSTRLEN];
    if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0 || setuid(0) == 0)
        _exit(2);
    if (lookup(host, ip, sizeof(ip)) < 0)
        _exit(1);
    size_t len = strlen(ip), off = 0;
    while (off < len) {
        ssize_t n = write(fd, ip + off, len - off);
        if (n <= 0)
            _exit(2);
        off += (size_t)n;
    }
    _exit(0);
}

/* Reads what the child wrote and waits for it. */
static int from_child(int fd, pid_t pid, char *ip, size_t iplen)
{
    char buf[INET6_ADDRSTRLEN + 1];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (len += (size_t)n) == sizeof(buf) - 1)
            break;
    }
    buf[len] = '\0';
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 2)
        return -EPERM;
    if (WEXITSTATUS(status) != 0 || !numeric(buf) || strlen(buf) >= iplen)
        return -ENOENT;
    memcpy(ip, buf, strlen(buf) + 1);
    return 0;
}

int resolve_host(const char *host, char *ip, size_t iplen)
{
    if (numeric(host) || geteuid() != 0)
        return lookup(host, ip, iplen);
    const struct passwd *pw = getpwnam("nobody");
    uid_t uid = pw ? pw->pw_uid : NOBODY_ID;
    gid_t gid = pw ? pw->pw_gid : NOBODY_ID;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return -e;
    }
    if (pid == 0) {
        close(fds[0]);
        child(fds[1], host, uid, gid);
    }
    close(fds[1]);
    int r = from_child(fds[0], pid, ip, iplen);
    close(fds[0]);
    return r;
}
