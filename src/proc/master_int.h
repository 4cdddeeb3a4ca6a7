/*
 * The master's parts share this; nothing outside src/proc/master*.c
 * includes it. The master's design (slots, process states, generations,
 * when a socket listens) is told at the top of master.c.
 */
#ifndef COHORT_MASTER_INT_H
#define COHORT_MASTER_INT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "core/metrics.h"
#include "net/listen.h"
#include "proc/hooks.h"
#include "proc/ipc.h"
#include "proc/upgrade.h"

#ifndef COHORT_VERSION
#define COHORT_VERSION "0.0.0"
#endif

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
#define MAX_PROCS_PER_SLOT 2 /* a serving worker and its replacement */
#define MAX_EXITS 16         /* exits kept for `cohort status` */
#define ROLLBACK_TRIES 3     /* attempts to replace one worker back */
#define SELF_EXE "/proc/self/exe" /* the master's own binary, whatever is on disk now */

enum pstate { P_STARTING, P_READY, P_DRAINING };

struct master;
struct wslot;

struct wproc {
    uv_process_t proc;
    uv_pipe_t ipc;
    uv_timer_t ready_timer; /* ready_timeout */
    struct ipc_reader reader;
    struct master *m;
    struct wslot *slot;
    struct wproc *next;     /* m->procs */
    enum pstate state;
    int handles;            /* open libuv handles; freed at 0 */
    int mslot;              /* counters slot */
    int pid;
    int gen;                /* config generation it runs */
    int timed_out;          /* killed for not being ready within ready_timeout */
    int exited;             /* its exit is being handled: only IPC_FAILED is read */
    uint64_t started;       /* loop ms */
    char version[32];
    char error[200];        /* why it could not start, as it said (IPC_FAILED) */
};

/* An exit of a worker process, for `cohort status`: every exit but a clean
 * one after a drain, on a row of its own. */
struct exit_rec {
    int id, pid, gen;
    const char *role;       /* "serving", "starting", "replacement", "draining" */
    char how[160];
    char error[200];
    uint64_t at;            /* loop ms */
};

struct wslot {
    int id;
    struct master *m;
    struct wproc *cur, *repl;
    uv_timer_t restart;
    int backoff_ms;
    int restarts;
    uint64_t next_try;      /* loop ms of a pending restart, 0 if none */
    char last_exit[160];    /* how the slot's last serving worker ended */
    char last_error[200];   /* and what it said, when it could not start */
    const char *repl_why;   /* why `repl` was started: "reload", "recycle", "rollback" */
};

struct ctl_client {
    uv_pipe_t pipe;
    struct master *m;
    struct ctl_client *next_waiter;
    char buf[512];
    size_t len;
    int answered;
};

enum rl_phase { RL_FORWARD, RL_ROLLBACK };

struct reload {
    int active, queued;
    struct cfg next;
    int next_fd;            /* config memfd of the new config */
    enum rl_phase phase;    /* replacing with the new config, or back with the old */
    int slot;               /* slot whose replacement the reload waits for; -1: none */
    int replaced;
    int rolled_back;        /* new workers replaced back */
    int tries;              /* failed attempts to replace one back */
    char why[300];          /* why the reload failed */
    uint64_t failed_before; /* 5xx answers when the reload began */
    char kept[1024];        /* non-reloadable keys left as they were */
    struct ctl_client *waiters, *queued_waiters;
};

struct acceptor;

/* A listener of the master: its address, its sockets (with reuseport, one
 * per slot for TCP; otherwise one), and for round_robin and least_loaded
 * the acceptor on it while a worker is ready. */
struct mlistener {
    struct listen_addr a;
    int *fds;
    int nfds;
    struct acceptor *acceptor;
};

struct master {
    struct cfg cfg;
    const struct cfg_sources *src;
    const char *exe;
    uv_loop_t *loop;
    struct mlistener lst[CFG_MAX_LISTENERS];
    int nlst;
    int metrics_fd, config_fd;
    struct metrics_shm *shm;
    uint32_t nmslots;
    struct wslot slots[CFG_MAX_WORKERS];
    int nslots;             /* slots in use: cfg.workers */
    struct wproc *procs;
    int nprocs;
    uv_signal_t sigs[6];
    int admin_fd;           /* admin listener (admin.port) for /metrics, /stats, /status; -1: none */
    uv_timer_t kill_timer;
    int gen;                /* the generation in force */
    const char *gen_exe;    /* the binary its workers start from */
    struct exit_rec exits[MAX_EXITS];
    int nexits;             /* exits recorded so far; the last MAX_EXITS are kept */
    int rr_next;
    uv_pipe_t ctl;
    char ctl_path[256], pid_path[256];
    int ctl_open;
    struct reload rl;
    int stopping, announced;
    int spawned;            /* the first start's workers are all spawned */
    uint64_t started_ms;
    int exit_code;
    struct master_env env;  /* what the master hooks get (proc/hooks.h) */
    struct wproc *dispatching; /* whose module message is being handled (msg_dispatch) */
    /* `cohort upgrade` (proc/upgrade.h): the old master's side... */
    struct upgrade *up;     /* a new master on its way; NULL: none */
    struct ctl_client *up_waiters;
    int handed_over;        /* a new master took over: its socket and pid file now */
    /* Another master owns the listening sockets' state and the acceptor: a
     * new master until it takes over, an old one from "go" until the
     * upgrade ends. master_listeners_update() leaves them alone meanwhile. */
    int standby;
    /* ...and the new master's */
    struct upgrade_fds inh;
    int inherited;
    struct upgrade_child *upc;
    uv_timer_t up_timer;    /* its workers' ready_timeout */
};

/* --- master.c: the process table: spawn, exits, restarts with backoff, the workers' messages, signals, stop, start */
void master_drain_proc(struct wproc *p);
void master_replace_dead(struct wslot *s, uint64_t up, int pid, const char *how);
void master_spawn(struct wslot *s, int replacement, int next);
void master_begin_stop(struct master *m, const char *why);

/* --- master_listen.c: listeners and the acceptor */
int master_routes_connections(const struct cfg *c);
int master_bind_admin(struct master *m, char *err, size_t errlen);
int master_bind_listeners(struct master *m, int want, char *err, size_t errlen);
void master_acceptor_stop(struct master *m);
void master_close_listeners(struct master *m);
void master_listeners_update(struct master *m);
int master_adopt_sockets(struct master *m, char *err, size_t errlen);
/* The descriptor listener l gives slot id's worker. */
int master_listen_fd(const struct master *m, int l, int id);
/* Closes reuseport sockets of slots past the workers in force. */
void master_trim_listeners(struct master *m);
/* Removes the Unix socket files (the server stops for good). */
void master_unlink_listeners(struct master *m);

/* --- master_reload.c: readiness, replacement, reload and rollback */
void master_replacement_failed(struct wslot *s, struct wproc *p, const char *why);
void master_ready_timeout_cb(uv_timer_t *t);
void master_on_worker_ready(struct wproc *p, const char *payload, uint32_t len);
int master_replace_slot(struct wslot *s, const char *why, int next);
void master_reload_finish(struct master *m, int ok, const char *msg);
void master_reload_begin(struct master *m);

/* --- master_ctl.c: the control socket: status and commands */
const char *master_schedule_name(enum cfg_schedule s);
void master_answer_waiters(struct ctl_client *w, json_t *reply);
void master_ctl_answer(struct ctl_client *c, json_t *reply);
int master_claim_control(struct master *m, char *err, size_t errlen);
int master_serve_control(struct master *m, int fd);
void master_write_pid_file(struct master *m);
int master_open_control(struct master *m, char *err, size_t errlen);

/* --- master_upgrade.c: `cohort upgrade`, both masters' sides */
void master_upgrade_begin(struct master *m, struct ctl_client *c);
void master_upgrade_ready_timeout(uv_timer_t *t);
void master_upgrade_init_child(struct master *m);

#endif
