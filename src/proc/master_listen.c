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

/* The admin listener's socket (the listeners' are net/listen.c's). */
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

/* A listener with one socket per slot: TCP under reuseport. A Unix
 * socket cannot share its path between sockets: it is one, shared. */
static int per_slot(const struct master *m, const struct mlistener *l)
{
    return m->cfg.schedule == CFG_SCHED_REUSEPORT && l->a.family != AF_UNIX;
}

/* The listeners of the config (once). */
static int init_listeners(struct master *m, char *err, size_t errlen)
{
    struct listen_addr a[CFG_MAX_LISTENERS];
    if (m->nlst)
        return 0;
    int n = listen_list(&m->cfg, a);
    if (n < 0) {
        snprintf(err, errlen, "the config's listeners cannot be read");
        return n;
    }
    for (int i = 0; i < n; i++)
        m->lst[i].a = a[i];
    m->nlst = n;
    return 0;
}

static int add_fd(struct mlistener *l, int fd)
{
    int *fds = realloc(l->fds, (size_t)(l->nfds + 1) * sizeof(int));
    if (!fds)
        return -ENOMEM;
    l->fds = fds;
    l->fds[l->nfds++] = fd;
    return 0;
}

static int bind_listener(struct master *m, struct mlistener *l, int want, char *err, size_t errlen)
{
    int reuse = per_slot(m, l);
    if (!reuse)
        want = 1;
    while (l->nfds < want) {
        int fd = listen_bind(&l->a, m->cfg.backlog, reuse, err, errlen);
        if (fd < 0)
            return fd;
        if (add_fd(l, fd) < 0) {
            close(fd);
            return -ENOMEM;
        }
    }
    return 0;
}

/* reuseport: one socket per slot and TCP listener, kept by the master
 * across restarts and reloads of that slot's worker (while it has no live
 * worker it does not listen: master_listeners_update()); otherwise one
 * socket per listener. */
int master_bind_listeners(struct master *m, int want, char *err, size_t errlen)
{
    int r = init_listeners(m, err, errlen);
    for (int i = 0; i < m->nlst && r == 0; i++)
        r = bind_listener(m, &m->lst[i], want, err, errlen);
    return r;
}

int master_listen_fd(const struct master *m, int l, int id)
{
    const struct mlistener *ml = &m->lst[l];
    return ml->fds[ml->nfds == 1 ? 0 : id];
}

void master_trim_listeners(struct master *m)
{
    for (int i = 0; i < m->nlst; i++) {
        struct mlistener *l = &m->lst[i];
        for (; per_slot(m, l) && l->nfds > m->nslots && l->nfds > 1; l->nfds--)
            close(l->fds[l->nfds - 1]);
    }
}

void master_unlink_listeners(struct master *m)
{
    for (int i = 0; i < m->nlst; i++)
        listen_unlink(&m->lst[i].a);
}

/* --- handing connections over: round_robin, least_loaded, and the queue of
 * a socket that stops listening --------------------------------------------- */

struct handoff {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    };
    uv_write_t req;
    uint32_t listener;
    struct ipc_conn_msg msg;
};

struct acceptor {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    };
    struct master *m;
    int listener;
};

static void acceptor_closed(uv_handle_t *h)
{
    free(h->data);
}

static void acceptor_stop(struct mlistener *l)
{
    if (l->acceptor) {
        uv_close((uv_handle_t *)&l->acceptor->tcp, acceptor_closed);
        l->acceptor = NULL;
    }
}

void master_acceptor_stop(struct master *m)
{
    for (int i = 0; i < m->nlst; i++)
        acceptor_stop(&m->lst[i]);
}

void master_close_listeners(struct master *m)
{
    for (int i = 0; i < m->nlst; i++) {
        struct mlistener *l = &m->lst[i];
        for (int k = 0; k < l->nfds; k++)
            if (l->fds[k] >= 0) {
                close(l->fds[k]);
                l->fds[k] = -1;
            }
    }
    master_acceptor_stop(m);
}

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

/* Passes an accepted connection to a serving worker, saying which
 * listener it came from; closes it when there is none. */
static void hand_over(struct master *m, struct handoff *h)
{
    struct wproc *p = pick_worker(m);
    if (!p || ipc_send_handle(&p->ipc, (uv_stream_t *)&h->tcp, &h->msg, h->listener, handoff_sent, &h->req) < 0)
        uv_close((uv_handle_t *)&h->tcp, handoff_closed);
}

static struct handoff *handoff_new(struct master *m, int listener)
{
    struct handoff *h = malloc(sizeof(*h));
    if (h) {
        if (m->lst[listener].a.family == AF_UNIX)
            uv_pipe_init(m->loop, &h->pipe, 0);
        else
            uv_tcp_init(m->loop, &h->tcp);
        h->tcp.data = h;
        h->req.data = h;
        h->listener = (uint32_t)listener;
    }
    return h;
}

static void on_accept(uv_stream_t *server, int status)
{
    struct acceptor *a = server->data;
    struct handoff *h = status < 0 ? NULL : handoff_new(a->m, a->listener);
    if (!h)
        return;
    if (uv_accept(server, (uv_stream_t *)&h->tcp) < 0) {
        uv_close((uv_handle_t *)&h->tcp, handoff_closed);
        return;
    }
    hand_over(a->m, h);
}

static int acceptor_start(struct master *m, int i)
{
    struct mlistener *l = &m->lst[i];
    struct acceptor *a = malloc(sizeof(*a));
    int fd = a ? dup(l->fds[0]) : -1;
    if (fd < 0) {
        free(a);
        return -ENOMEM;
    }
    int unix_sock = l->a.family == AF_UNIX;
    if (unix_sock)
        uv_pipe_init(m->loop, &a->pipe, 0);
    else
        uv_tcp_init(m->loop, &a->tcp);
    a->tcp.data = a;
    a->m = m;
    a->listener = i;
    l->acceptor = a;
    int r = unix_sock ? uv_pipe_open(&a->pipe, fd) : uv_tcp_open(&a->tcp, fd);
    if (r < 0)
        close(fd);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&a->tcp, m->cfg.backlog, on_accept); /* listens again if it had stopped */
    if (r < 0) {
        log_error("cannot accept on %s: %s", l->a.name, uv_strerror(r));
        acceptor_stop(l);
    }
    return r;
}

/* Socket k of listener i has no worker to take its connections: the ones
 * queued on it go to a serving worker (or are closed when there is none),
 * and it stops listening (the kernel sends new connections to the other
 * sockets of a reuseport group, or refuses them), until a worker listens
 * on it again. */
static void stop_listening(struct master *m, int i, int k)
{
    struct mlistener *l = &m->lst[i];
    int fd = l->fds[k], cfd, n = 0, unix_sock = l->a.family == AF_UNIX;
    struct sockaddr sa = {.sa_family = AF_UNSPEC};
    while (n < 65536 && (cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        struct handoff *h = handoff_new(m, i);
        n++;
        if (!h || (unix_sock ? uv_pipe_open(&h->pipe, cfd) : uv_tcp_open(&h->tcp, cfd)) < 0) {
            close(cfd);
            if (h)
                uv_close((uv_handle_t *)&h->tcp, handoff_closed);
            continue;
        }
        hand_over(m, h);
    }
    if (connect(fd, &sa, sizeof(sa)) < 0)
        log_warn("cannot stop listening on %s (socket %d): %s", l->a.name, k, strerror(errno));
    log_info("%s%s %d: no live worker: not listening until one starts (%d queued connection(s) handed over)",
             l->a.name, l->nfds > 1 ? ": socket of worker" : ": listening socket", l->nfds > 1 ? k : 0, n);
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

/* Socket k of listener i is left to no worker: it stops listening, unless
 * another master's workers may use it (an upgrade under way: their
 * listening state is worked out again when it ends). */
static void unlisten_idle(struct master *m, int i, int k)
{
    if (!m->up && !m->handed_over && socket_listens(m->lst[i].fds[k]))
        stop_listening(m, i, k);
}

/* Makes the listening sockets follow the workers (see the top of the file).
 * Only the master in charge does: not one on standby (see struct master). */
void master_listeners_update(struct master *m)
{
    int live = 0, ready = 0, routes = master_routes_connections(&m->cfg);
    if (m->stopping || !m->spawned || m->standby)
        return;
    for (int i = 0; i < m->nslots; i++) {
        live |= slot_live(&m->slots[i]);
        ready |= m->slots[i].cur && m->slots[i].cur->state == P_READY;
    }
    if (routes) {
        if (!ready)
            master_acceptor_stop(m);
        live = ready;
    }
    for (int i = 0; i < m->nlst; i++) {
        struct mlistener *l = &m->lst[i];
        if (per_slot(m, l) && l->nfds > 1) {
            for (int k = 0; k < l->nfds; k++)
                if (!(k < m->nslots && slot_live(&m->slots[k])))
                    unlisten_idle(m, i, k); /* a live worker listens on it as it starts */
            continue;
        }
        if (!live)
            unlisten_idle(m, i, 0);
        if (ready && routes && !l->acceptor)
            acceptor_start(m, i);
    }
}

/* The sockets the old master handed over, matched to this config's
 * listeners by their addresses, and more with reuseport when this config
 * has more workers. Listeners must be the old master's ones. */
static int adopt_listeners(struct master *m, char *err, size_t errlen)
{
    const struct upgrade_fds *in = &m->inh;
    for (int k = 0; k < in->nlisten; k++) {
        int i = 0, reuse = 0;
        socklen_t len = sizeof(reuse);
        while (i < m->nlst && !listen_fd_is(in->listen[k], &m->lst[i].a))
            i++;
        if (i == m->nlst)
            return upgrade_changed(err, errlen, "listen (or server.host, server.port)");
        if (getsockopt(in->listen[k], SOL_SOCKET, SO_REUSEPORT, &reuse, &len) < 0 ||
            !reuse != !per_slot(m, &m->lst[i]))
            return upgrade_changed(err, errlen, "schedule (reuseport or not)");
        if (add_fd(&m->lst[i], in->listen[k]) < 0)
            return -ENOMEM;
    }
    for (int i = 0; i < m->nlst; i++)
        if (m->lst[i].nfds == 0)
            return upgrade_changed(err, errlen, "listen (or server.host, server.port)");
    master_trim_listeners(m);
    return 0;
}

int master_adopt_sockets(struct master *m, char *err, size_t errlen)
{
    control_paths(&m->cfg, m->ctl_path, sizeof(m->ctl_path), m->pid_path, sizeof(m->pid_path));
    int r = upgrade_fits(&m->inh, &m->cfg, m->ctl_path, err, errlen);
    if (r == 0)
        r = init_listeners(m, err, errlen);
    if (r == 0)
        r = adopt_listeners(m, err, errlen);
    m->admin_fd = m->inh.admin;
    return r < 0 ? r : master_bind_listeners(m, m->cfg.workers, err, errlen);
}
