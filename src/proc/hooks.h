/*
 * What a module does in the master: prepare before the first worker starts
 * (create and migrate a store, start a helper process), follow the config
 * through reloads, hand a new worker the state it must start with, pass
 * signals on, stop, and add a member to `cohort status`. The master calls
 * every registered hook at those points and names no module itself; the
 * hooks are registered once, at start, from src/modules.c.
 *
 * Every function may be NULL. A hook logs its own errors.
 */
#ifndef COHORT_HOOKS_H
#define COHORT_HOOKS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"
#include "core/metrics.h"

/* What the master hands its hooks; lives as long as the master. */
struct master_env {
    uv_loop_t *loop;
    const struct cfg *cfg;     /* the config of the first start */
    struct metrics_shm *shm;   /* the counters segment */
    const char *exe;           /* the binary helper processes start from */
};

/* Sends one message to one worker (the one being started). */
typedef int (*master_send_fn)(void *ctx, uint16_t type, const void *payload, size_t len);

struct master_hook {
    const char *name;        /* also its member in `cohort status` */
    /* Before the first worker starts; < 0 stops the start (exit code 1). */
    int (*prepare)(const struct master_env *env);
    /* The config the workers are to serve changes: a reload begins with
     * `cfg`, or a failed reload goes back to it. */
    void (*config)(const struct cfg *cfg);
    /* A worker was just started: what it must know before its first request. */
    void (*worker_start)(master_send_fn send, void *ctx);
    /* A signal the master passes on (SIGUSR1: reopen logs). */
    void (*signal)(int sig);
    /* The server stops (gracefully). */
    void (*stop)(void);
    /* Its member of `cohort status` (a new reference), or NULL for none. */
    json_t *(*status)(void);
    /* The master exits: close what is left. */
    void (*free)(void);
};

/* Registers a hook (kept by pointer). 0, -EEXIST for a name already
 * registered, -ENOSPC past MASTER_HOOKS_MAX. */
#define MASTER_HOOKS_MAX 16
int master_hook_add(const struct master_hook *h);

/* The master's calls, in registration order (free and stop in reverse). */
int master_hooks_prepare(const struct master_env *env);
void master_hooks_config(const struct cfg *cfg);
void master_hooks_worker_start(master_send_fn send, void *ctx);
void master_hooks_signal(int sig);
void master_hooks_stop(void);
void master_hooks_status(json_t *obj); /* sets each hook's member of obj */
void master_hooks_free(void);

#endif
