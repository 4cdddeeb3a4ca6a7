/*
 * Host names of the config (upstream server addresses), resolved once per
 * load. Resolving a name may mean parsing DNS answers from the network; a
 * process running as root (the master, at start and reload) does not parse
 * them itself: a short-lived child drops to the user nobody (uid and gid
 * 65534 when there is no such user), resolves, and writes back only the
 * numeric address, which the parent accepts only if it parses as one.
 * Numeric addresses are read without any lookup.
 */
#ifndef COHORT_RESOLVE_H
#define COHORT_RESOLVE_H

#include <stddef.h>

/* The first address of `host` (IPv4 or IPv6, as getaddrinfo orders them),
 * written as text into ip (at least INET6_ADDRSTRLEN bytes). Returns 0,
 * -ENOENT when the name does not resolve, or another -errno. */
int resolve_host(const char *host, char *ip, size_t iplen);

#endif
