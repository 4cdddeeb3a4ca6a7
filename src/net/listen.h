/*
 * Listeners: the addresses of "listen" (or server.host and server.port),
 * parsed once, and the sockets made of them. A listener is TCP
 * ("host:port", "[ipv6]:port") or a Unix stream socket ("unix:/path"),
 * either one plain or TLS.
 *
 * A Unix socket's file is made with the listener's mode (default 0660)
 * and belongs to the master that bound it: a file left by a process that
 * is gone (nothing accepts on it) is replaced, one a live process accepts
 * on is an error; listen_unlink removes it when the server stops.
 */
#ifndef COHORT_NET_LISTEN_H
#define COHORT_NET_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

#include "core/config.h"

#define LISTEN_MODE_DEFAULT "0660"

struct listen_addr {
    int family;                 /* AF_INET, AF_INET6 or AF_UNIX */
    struct sockaddr_storage ss; /* the address to bind (a sockaddr_un for AF_UNIX) */
    socklen_t sslen;
    int port;                   /* TCP */
    unsigned mode;              /* AF_UNIX: the file's permission bits */
    int tls;
    char name[120];             /* "127.0.0.1:8080", "[::1]:8080", "unix:/run/app.sock" */
};

/* Parses one address; NULL, or why it is not one ("is not ..."). A Unix
 * path must be absolute (the config makes it so) and fit sun_path. */
const char *listen_parse(const char *text, struct listen_addr *a);

/* Parses a mode, octal ("0660", "660", at most 0777); NULL or why not. */
const char *listen_parse_mode(const char *text, unsigned *mode);

/* The listeners of a loaded config, in order, into out (at most
 * CFG_MAX_LISTENERS): those of "listen", or else one plain TCP listener at
 * server.host:server.port. Returns how many, or -EINVAL (a config that did
 * not pass the loader's checks). */
int listen_list(const struct cfg *c, struct listen_addr *out);

/* A listening socket for a (non-blocking, close-on-exec): SO_REUSEPORT
 * with `reuseport` (TCP only), IPV6_V6ONLY for IPv6. A Unix socket's stale
 * file is replaced. Returns the fd, or -errno with the reason in err. */
int listen_bind(const struct listen_addr *a, int backlog, int reuseport, char *err, size_t errlen);

/* Whether fd is a socket bound to a's address. */
int listen_fd_is(int fd, const struct listen_addr *a);

/* Removes a Unix socket's file (nothing for TCP). */
void listen_unlink(const struct listen_addr *a);

#endif
