/* Helpers for unit tests that start servers of their own. */
#ifndef COHORT_TESTS_TESTNET_H
#define COHORT_TESTS_TESTNET_H

#include <netinet/in.h>
#include <sys/socket.h>
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

#endif
