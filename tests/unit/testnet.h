/* Helpers for unit tests that start servers of their own. */
#ifndef COHORT_TESTS_TESTNET_H
#define COHORT_TESTS_TESTNET_H

#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

/* A TCP port on 127.0.0.1 that was free a moment ago. */
static inline int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &n);
    close(fd);
    return ntohs(a.sin_port);
}

/* Starts a redis-server on 127.0.0.1:port that keeps its files in dir and
 * persists nothing; its pid, or -1 when fork failed. */
static inline pid_t spawn_redis_server(int port, const char *dir)
{
    char sport[16];
    snprintf(sport, sizeof sport, "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        execlp("redis-server", "redis-server", "--port", sport, "--bind", "127.0.0.1", "--dir", dir, "--save", "",
               "--appendonly", "no", "--logfile", "/dev/null", (char *)NULL);
        _exit(127);
    }
    return pid;
}

#endif
