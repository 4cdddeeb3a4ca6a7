/*
 * The master's listeners and its acceptor: binding the sockets (one per
 * worker with reuseport, else one shared), the admin listener, which
 * socket listens when (see master.c), and for round_robin and least_loaded
 * the acceptor that hands each connection to a serving worker over IPC.
 */

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "proc/control.h"
#include "proc/master_int.h"

int master_routes_connections(const struct cfg *c)
{
    return c->schedule == CFG_SCHED_ROUND_ROBIN || c->schedule == CFG_SCHED_LEAST_LOADED;
}

/* --- listeners --------------------------------------------------------- */

static int bind_one(const struct cfg *cfg, int reuseport, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    int fam = strchr(cfg->host, ':') ? AF_INET6 : AF_INET;
    int r = fam == AF_INET6 ? uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&ss)
                            : uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&ss);
    int fd = r < 0 ? -1 : socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        (fam == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, (struct sockaddr *)&ss,
             fam == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) < 0 ||
        listen(fd, cfg->backlog) < 0) {
        int e = r < 0 ? -r : errno;
        snprintf(err, errlen, "cannot listen on %s%s%s:%d: %s", fam == AF_INET6 ? "[" : "", cfg->host,
                 fam == AF_INET6 ? "]" : "", cfg->port, strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    return fd;
}

/* The admin listener (observability endpoints, app/stats.c): one socket,
 * bound once, inherited by every worker at WORKER_FD_ADMIN. */
int master_bind_admin(struct master *m, char *err, size_t errlen)
{
    if (!m->cfg.admin.port)
        return 0;
    struct cfg c = m->cfg; /* bind_one reads host, port and backlog */
    c.host = m->cfg.admin.host;
    c.port = m->cfg.admin.port;
    m->admin_fd = bind_one(&c, 0, err, errlen);
    return m->admin_fd < 0 ? m->admin_fd : 0;
}

/* reuseport: one socket per slot, kept by the master across restarts and
 * reloads of that slot's worker (while it has no live worker it does not
 * listen: master_listeners_update()); otherwise one socket. */
int master_bind_listeners(struct master *m, int want, char *err, size_t errlen)
{
    int reuse = m->cfg.schedule == CFG_SCHED_REUSEPORT;
    if (!reuse)
        want = 1;
    if (want <= m->nlisten)
        return 0;
    int *fds = realloc(m->listen_fds, (size_t)want * sizeof(int));
    if (!fds)
        return -ENOMEM;
    m->listen_fds = fds;
    for (; m->nlisten < want; m->nlisten++) {
        int fd = bind_one(&m->cfg, reuse, err, errlen);
        if (fd < 0)
            return fd;
        m->listen_fds[m->nlisten] = fd;
    }
    return 0;
}

static void acceptor_closed(uv_handle_t *h)
{
    free(h);
}

void master_acceptor_stop(struct master *m)
{
    if (m->acceptor) {
        uv_close((uv_handle_t *)m->acceptor, acceptor_closed);
        m->acceptor = NULL;
    }
}

void master_close_listeners(struct master *m)
{
    for (int i = 0; i < m->nlisten; i++)
        if (m->listen_fds[i] >= 0) {
            close(m->listen_fds[i]);
            m->listen_fds[i] = -1;
        }
    master_acceptor_stop(m);
}

/* --- handing connections over: round_robin, least_loaded, and the queue of
 * a socket that stops listening --------------------------------------------- */

struct handoff {
    uv_tcp_t tcp;
    uv_write_t req;
};

static void handoff_closed(uv_handle_t *h)
{
    free(h->data);
}

static void handoff_sent(uv_write_t *req, int status)
{
    struct handoff *h = req->data;
    (void)status;
    uv_close((uv_handle_t *)&h->tcp, handoff_closed);
}

/* Next serving worker in turn (round_robin), or the one with the fewest
 * requests in flight, ties taken in turn (least_loaded); a worker at
 * max_connections is skipped while another can take the connection. */
static struct wproc *pick_worker(struct master *m)
{
    struct wproc *best = NULL;
    uint64_t best_load = UINT64_MAX;
    int least = m->cfg.schedule == CFG_SCHED_LEAST_LOADED;
    for (int k = 0; k < m->nslots; k++) {
        int i = (m->rr_next + k) % m->nslots;
        struct wproc *p = m->slots[i].cur;
        if (!p || p->state != P_READY)
            continue;
        const struct metrics_slot *ms = &m->shm->slots[p->mslot];
        if (m->cfg.max_connections && metrics_get(ms->conns_open) >= (uint64_t)m->cfg.max_connections)
            continue;
        uint64_t load = least ? metrics_get(ms->inflight) : 0;
        if (load < best_load) {
            best = p;
            best_load = load;
            if (!least || load == 0)
                break;
        }
    }
    if (best)
        m->rr_next = (best->slot->id + 1) % m->nslots;
    return best;
}

/* Passes an accepted connection to a serving worker; closes it when there
 * is none. */
static void hand_over(struct master *m, struct handoff *h)
{
    struct wproc *p = pick_worker(m);
    if (!p || ipc_send_handle(&p->ipc, (uv_stream_t *)&h->tcp, handoff_sent, &h->req) < 0)
        uv_close((uv_handle_t *)&h->tcp, handoff_closed);
}

static struct handoff *handoff_new(struct master *m)
{
    struct handoff *h = malloc(sizeof(*h));
    if (h) {
        uv_tcp_init(m->loop, &h->tcp);
        h->tcp.data = h;
        h->req.data = h;
    }
    return h;
}

static void on_accept(uv_stream_t *server, int status)
{
    struct master *m = server->data;
    struct handoff *h = status < 0 ? NULL : handoff_new(m);
    if (!h)
        return;
    if (uv_accept(server, (uv_stream_t *)&h->tcp) < 0) {
        uv_close((uv_handle_t *)&h->tcp, handoff_closed);
        return;
    }
    hand_over(m, h);
}

static int acceptor_start(struct master *m)
{
    uv_tcp_t *a = malloc(sizeof(*a));
    int fd = a ? dup(m->listen_fds[0]) : -1;
    if (fd < 0) {
        free(a);
        return -ENOMEM;
    }
    uv_tcp_init(m->loop, a);
    a->data = m;
    m->acceptor = a;
    int r = uv_tcp_open(a, fd);
    if (r < 0)
        close(fd);
    if (r == 0)
        r = uv_listen((uv_stream_t *)a, m->cfg.backlog, on_accept); /* listens again if it had stopped */
    if (r < 0) {
        log_error("cannot accept on the listening socket: %s", uv_strerror(r));
        master_acceptor_stop(m);
    }
    return r;
}

/* Listening socket i has no worker to take its connections: the ones
 * queued on it go to a serving worker (or are closed when there is none),
 * and it stops listening (the kernel sends new connections to the other
 * sockets of a reuseport group, or refuses them), until a worker listens
 * on it again. */
static void stop_listening(struct master *m, int i)
{
    int fd = m->listen_fds[i], cfd, n = 0;
    struct sockaddr sa = {.sa_family = AF_UNSPEC};
    while (n < 65536 && (cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        struct handoff *h = handoff_new(m);
        n++;
        if (!h || uv_tcp_open(&h->tcp, cfd) < 0) {
            close(cfd);
            if (h)
                uv_close((uv_handle_t *)&h->tcp, handoff_closed);
            continue;
        }
        hand_over(m, h);
    }
    if (connect(fd, &sa, sizeof(sa)) < 0)
        log_warn("cannot stop listening on socket %d: %s", i, strerror(errno));
    log_info("%s%d: no live worker: not listening until one starts (%d queued connection(s) handed over)",
             m->nlisten > 1 ? "socket of worker " : "listening socket ", m->nlisten > 1 ? i : 0, n);
}

static int proc_live(const struct wproc *p)
{
    return p && p->state != P_DRAINING;
}

static int slot_live(const struct wslot *s)
{
    return proc_live(s->cur) || proc_live(s->repl);
}

/* Whether the socket listens now: the kernel's word, since other
 * processes (workers, the other master during an upgrade) listen on it too. */
static int socket_listens(int fd)
{
    int on = 0;
    socklen_t len = sizeof(on);
    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on;
}

/* Socket i is left to no worker: it stops listening, unless another
 * master's workers may use it (an upgrade under way: their listening state
 * is worked out again when it ends). */
static void unlisten_idle(struct master *m, int i)
{
    if (!m->up && !m->handed_over && socket_listens(m->listen_fds[i]))
        stop_listening(m, i);
}

/* Makes the listening sockets follow the workers (see the top of the file).
 * Only the master in charge does: not one on standby (see struct master). */
void master_listeners_update(struct master *m)
{
    int live = 0, ready = 0;
    if (m->stopping || !m->spawned || m->standby)
        return;
    for (int i = 0; i < m->nslots; i++) {
        live |= slot_live(&m->slots[i]);
        ready |= m->slots[i].cur && m->slots[i].cur->state == P_READY;
    }
    if (m->cfg.schedule == CFG_SCHED_REUSEPORT && m->nlisten > 1) {
        for (int i = 0; i < m->nlisten; i++) {
            if (!(i < m->nslots && slot_live(&m->slots[i])))
                unlisten_idle(m, i); /* a live worker listens on it as it starts */
        }
        return;
    }
    if (master_routes_connections(&m->cfg)) {
        if (!ready)
            master_acceptor_stop(m);
        live = ready;
    }
    if (!live)
        unlisten_idle(m, 0);
    if (ready && master_routes_connections(&m->cfg) && !m->acceptor)
        acceptor_start(m);
}

/* The sockets the old master handed over, and more with reuseport when
 * this config has more workers. */
int master_adopt_sockets(struct master *m, char *err, size_t errlen)
{
    control_paths(&m->cfg, m->ctl_path, sizeof(m->ctl_path), m->pid_path, sizeof(m->pid_path));
    int r = upgrade_adopt_listeners(&m->inh, &m->cfg, m->ctl_path, &m->listen_fds, &m->nlisten, err, errlen);
    m->admin_fd = m->inh.admin;
    return r < 0 ? r : master_bind_listeners(m, m->cfg.workers, err, errlen);
}
